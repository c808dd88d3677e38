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

It also changes how the threefry hash itself is lowered on CPU. JAX emits it there as a rolled
loop (5 iterations of 4 rounds) for every call. A rolled loop is an XLA while loop, and a while
loop fuses with nothing: a 2^22-element ``jax.random.uniform`` runs ~4x slower than the
straight-line (unrolled) form that JAX emits on other platforms, and each draw still costs
~0.45 s to compile. The unrolled form is not safe everywhere either. A small hash such as a key
split or ``fold_in``, once unrolled, gets fused into every large consumer and recomputed per
element; two ``normal`` draws from folded keys then take 2 s to compile instead of 0.7 s. So
the work-around unrolls hashes of at least ``UNROLL_MIN_SIZE`` elements (the draws themselves)
and leaves the small ones (key derivation) rolled. Same arithmetic, hence the same bits.

:func:`patient_cpu_collectives` -- XLA:CPU aborts a process whose collective waits more than
40 s for a simulated device's thread, which happens on a heavily loaded machine; it raises the
limit (the test suite and ``python -m benchmarks`` call it).
"""

from __future__ import annotations

import math
import operator
import os

from jax import lax

_STATE: dict = {"original": None, "lowering": None}
UNROLL_MIN_SIZE = 1024


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
  _STATE["lowering"] = _size_dependent_cpu_lowering(threefry2x32)
  return True


def _size_dependent_cpu_lowering(threefry2x32):
  """Registers the CPU lowering of threefry2x32: unrolled when large, rolled when small."""
  try:
    from jax._src.interpreters import mlir  # pylint: disable=g-import-not-at-top
    primitive = threefry2x32.threefry2x32_p
    rolled = threefry2x32._threefry2x32_cpu_lowering_rule  # pylint: disable=protected-access
    unrolled = threefry2x32._threefry2x32_lowering_rule  # pylint: disable=protected-access
  except (ImportError, AttributeError):
    return None

  def lowering(ctx, *args):
    size = math.prod(ctx.avals_out[0].shape)
    return (unrolled if size >= UNROLL_MIN_SIZE else rolled)(ctx, *args)

  def register(rule):
    mlir.register_lowering(primitive, rule, platform="cpu", inline=False)

  register(lowering)
  return {"register": register, "rolled": rolled, "size_dependent": lowering}


_COLLECTIVE_TIMEOUT_FLAG = "--xla_cpu_collective_call_terminate_timeout_seconds"


def patient_cpu_collectives(seconds: int = 600) -> bool:
  """Lets an XLA:CPU collective wait ``seconds`` for its participants instead of 40.

  Simulated CPU devices are threads. On a machine loaded with other work, one of 8 device
  threads can be scheduled more than 40 s after the others reach an all-reduce; XLA (jaxlib
  0.10) then aborts the whole process. Call this before JAX creates its backends (it sets
  ``XLA_FLAGS``); returns whether the flag is (now) set. Older jaxlibs, which may not know
  the flag and would reject it, are left alone.
  """
  try:
    import jaxlib  # pylint: disable=g-import-not-at-top
    version = tuple(int(p) for p in jaxlib.__version__.split(".")[:2])
  except (ImportError, ValueError):
    return False
  if version < (0, 10):
    return False
  flags = os.environ.get("XLA_FLAGS", "")
  if _COLLECTIVE_TIMEOUT_FLAG not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} {_COLLECTIVE_TIMEOUT_FLAG}={int(seconds)}".strip()
  return True


__all__ = ["fast_threefry_compilation", "patient_cpu_collectives"]
