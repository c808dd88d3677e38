"""Test configuration shared by the whole suite.

* 8 simulated CPU devices, so data-parallel code runs on a real mesh.
* Strict rank promotion: implicit broadcasting between arrays of different rank raises.
* A 600 s limit, instead of XLA:CPU's 40 s, on a collective waiting for the threads of its
  simulated devices: on a loaded 2-core machine one of 8 device threads can be scheduled that
  late, and XLA then aborts the whole process. It is XLA's public flag
  ``--xla_cpu_collective_call_terminate_timeout_seconds`` in ``XLA_FLAGS`` (jaxlib >= 0.10;
  an older jaxlib does not know it and would refuse to start, so it is left out there).

Nothing in JAX is patched: the suite runs the JAX our users have. Device count and flags must
be set before JAX creates its backends, hence at import time of the conftest.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import jaxlib  # noqa: E402

_COLLECTIVE_TIMEOUT_FLAG = "--xla_cpu_collective_call_terminate_timeout_seconds"
_XLA_FLAGS = os.environ.get("XLA_FLAGS", "")
if (_COLLECTIVE_TIMEOUT_FLAG not in _XLA_FLAGS
    and tuple(int(p) for p in jaxlib.__version__.split(".")[:2]) >= (0, 10)):
  os.environ["XLA_FLAGS"] = f"{_XLA_FLAGS} {_COLLECTIVE_TIMEOUT_FLAG}=600".strip()

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_numpy_rank_promotion", "raise")
