"""``jax.random`` draws of any shape made as one flat vector: same numbers, faster compiles.

With JAX's default (partitionable) threefry, element ``i`` of a draw is a function of the key
and of its flat row-major index ``i`` alone, so ``jax.random.normal(key, (n,)).reshape(shape)``
holds exactly the numbers of ``jax.random.normal(key, shape)``. The programs differ: XLA:CPU
(jaxlib 0.10) compiles the hash for a shape of rank >= 2 far more slowly than for a vector
(``normal(key, (32, 8, 10))``: ~6.7 s of CPU against ~0.4 s flat on a 2-core machine;
``(100, 10)``: 2.5 s against 0.4 s). Library code that draws multi-dimensional arrays inside
a program that is compiled often (a train step, a sampler) calls these instead of
``jax.random`` directly. Nothing in JAX is changed: a user who calls ``jax.random.normal``
gets the same numbers, only a slower compile.

Under the older non-partitionable scheme (``jax_threefry_partitionable=False``) the flat
draw and the shaped draw are different numbers with the same distribution.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp


def _flat_shape(shape: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
  shape = tuple(int(d) for d in shape)
  return shape, (math.prod(shape),)


def flat_normal(key: jax.Array, shape: Sequence[int], dtype: Any = float) -> jax.Array:
  """``jax.random.normal(key, shape, dtype)``, drawn as a flat vector and reshaped.

  The same numbers under JAX's default (partitionable) threefry; see the module docstring.

  Example:
    >>> import jax
    >>> from tomioka_jax import core
    >>> key = jax.random.key(0)
    >>> bool((core.flat_normal(key, (4, 3)) == jax.random.normal(key, (4, 3))).all())
    True
  """
  shape, flat = _flat_shape(shape)
  return jax.random.normal(key, flat, dtype).reshape(shape)


def flat_uniform(key: jax.Array, shape: Sequence[int], dtype: Any = float,
                 minval: Any = 0.0, maxval: Any = 1.0) -> jax.Array:
  """``jax.random.uniform(key, shape, dtype, minval, maxval)``, drawn flat and reshaped.

  The same numbers under JAX's default (partitionable) threefry; see the module docstring.
  ``minval`` and ``maxval`` broadcast to ``shape``, as in ``jax.random.uniform``.

  Example:
    >>> import jax
    >>> from tomioka_jax import core
    >>> key = jax.random.key(0)
    >>> bool((core.flat_uniform(key, (2, 5)) == jax.random.uniform(key, (2, 5))).all())
    True
  """
  shape, flat = _flat_shape(shape)
  if jnp.ndim(minval) or jnp.ndim(maxval):
    minval = jnp.broadcast_to(minval, shape).reshape(flat)
    maxval = jnp.broadcast_to(maxval, shape).reshape(flat)
  return jax.random.uniform(key, flat, dtype, minval, maxval).reshape(shape)


__all__ = ["flat_normal", "flat_uniform"]
