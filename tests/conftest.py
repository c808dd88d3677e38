"""Test configuration shared by the whole suite.

* 8 simulated CPU devices, so data-parallel code runs on a real mesh.
* Strict rank promotion: implicit broadcasting between arrays of different rank raises.
* The threefry compile-time work-around (bit-identical random numbers) and a 600 s limit,
  instead of 40 s, on XLA:CPU collectives waiting for device threads on a loaded machine (see
  :mod:`tomioka_jax.core._compat`).

Both must be set before JAX creates its backends, hence at import time of the conftest.
"""

import os

# Keep XLA from spawning more threads than the 2-core CI machine has.
os.environ.setdefault("XLA_FLAGS", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_numpy_rank_promotion", "raise")

from tomioka_jax.core import _compat as compat  # noqa: E402

compat.fast_threefry_compilation()
compat.patient_cpu_collectives()
