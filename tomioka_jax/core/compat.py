"""Work-arounds for slow paths in the JAX/XLA versions we support.

:func:`fast_threefry_compilation` -- XLA:CPU (jax 0.10) compiles the *partitionable*
threefry hash (JAX's default since 0.5) very slowly when the requested shape has two or more
dimensions: ``jax.random.normal(key, (32, 8, 10))`` takes ~7.7 s of CPU to compile on this
project's 2-core machines, the same 2,560 numbers drawn as a flat vector ~0.4 s (an ML-VAE
train step: 14.4 s -> 4.0 s). With the partitionable scheme, element ``i`` of the output is
the hash of its flat (row-major) index ``i``, so drawing the flat vector and reshaping it gives
**bit-identical** values; the work-around does exactly that and changes only how fast programs
compile. The test suite and ``python -m benchmarks`` turn it on; call it yourself at the top
of a notebook or script.
"""

from __future__ import annotations

import math
import operator

from jax import lax

_STATE: dict = {"original": None}


def fast_threefry_compilation() -> bool:
  """Makes ``jax.random`` draw multi-dimensional threefry bits as a flat vector, reshaped.

  Bit-identical results (see the module docstring), far shorter XLA:CPU compile times for
  programs that draw random arrays of rank >= 2. Idempotent; returns whether the work-around
  is active (False when this JAX version's internals differ, and then nothing is changed).
  """
  if _STATE["original"] is not None:
    return True
  try:
    from jax._src.random import threefry2x32  # pylint: disable=g-import-not-at-top
    original = threefry2x32._threefry_random_bits_partitionable  # pylint: disable=protected-access
  except (ImportError, AttributeError):
    return False

  def flat_random_bits(key, bit_width, shape):
    try:
      shape = tuple(operator.index(d) for d in shape)
    except TypeError:  # symbolic dimensions: leave them to JAX
      return original(key, bit_width, shape)
    if len(shape) <= 1:
      return original(key, bit_width, shape)
    return lax.reshape(original(key, bit_width, (math.prod(shape),)), shape)

  threefry2x32._threefry_random_bits_partitionable = flat_random_bits  # pylint: disable=protected-access
  _STATE["original"] = original
  return True


__all__ = ["fast_threefry_compilation"]
