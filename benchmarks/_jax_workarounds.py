"""XLA settings the benchmark runner needs on a loaded CPU machine; JAX itself is not patched.

:func:`patient_cpu_collectives` -- simulated CPU devices are threads. On a machine loaded
with other work, one of 8 device threads can be scheduled more than 40 s after the others
reach an all-reduce, and XLA:CPU (jaxlib 0.10) then aborts the whole process. XLA's public flag
``--xla_cpu_collective_call_terminate_timeout_seconds`` raises that limit; like every XLA flag
it must be in ``XLA_FLAGS`` before JAX creates its backends. ``tests/conftest.py`` sets the
same flag for the test suite.

The benchmarks run the stock ``jax.random``: the library draws its multi-dimensional random
arrays flat and reshapes them (``tomioka_jax.core.flat_normal``), which is what kept XLA:CPU
compile times short, so no opt-in threefry work-around is needed here.
"""

from __future__ import annotations

import os

_COLLECTIVE_TIMEOUT_FLAG = "--xla_cpu_collective_call_terminate_timeout_seconds"


def patient_cpu_collectives(seconds: int = 600) -> bool:
  """Lets an XLA:CPU collective wait ``seconds`` for its participants instead of 40.

  Call before JAX creates its backends. Returns whether the flag is (now) in ``XLA_FLAGS``;
  jaxlibs older than 0.10, which may not know the flag and would refuse to start, are left
  alone (False).
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
