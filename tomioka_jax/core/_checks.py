"""Argument checks shared by every family: is a value concrete (checkable now) or traced?

Public functions check hyperparameters and data when their values are known (eager calls, or
Python scalars closed over by ``jit``); under tracing the same values are abstract and the
checks are skipped, which each function's docstring says.
"""

from __future__ import annotations

from typing import Any

import jax


def is_concrete(*values: Any) -> bool:
  """True when no value is a JAX tracer, so its contents can be inspected eagerly.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> is_concrete(1.0, jnp.ones(3))
    True
    >>> jax.jit(lambda x: jnp.asarray(is_concrete(x)))(1.0).item()
    False
  """
  return not any(isinstance(v, jax.core.Tracer) for v in values)
