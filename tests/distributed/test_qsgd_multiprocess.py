"""QSGD's quantized all-reduce across processes: 2 processes x 4 CPU devices over
``jax.distributed`` on localhost (gloo collectives) must equal 1 process x 8 devices."""

import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from tomioka_jax.distributed import quantized_mean

MODES = ("all_gather", "reduce_scatter", "shared_scale")
N_VALUES, NUM_LEVELS, BUCKET = 100, 3, 8

# The same computation, written once and run both in the workers and in this process.
PROGRAM = textwrap.dedent("""
    import jax
    import numpy as np
    from jax.sharding import PartitionSpec as P
    from tomioka_jax.distributed import quantized_mean

    def run_modes(modes, n_values, num_levels, bucket):
      mesh = jax.make_mesh((jax.device_count(),), ("d",),
                           axis_types=(jax.sharding.AxisType.Explicit,))
      sharding = jax.NamedSharding(mesh, P("d"))
      xs = np.asarray(jax.random.normal(jax.random.key(7), (jax.device_count(), n_values)))
      per_process = jax.device_count() // jax.process_count()
      local = xs[jax.process_index() * per_process:(jax.process_index() + 1) * per_process]
      global_xs = jax.make_array_from_process_local_data(sharding, local)
      out = {}
      for mode in modes:
        def body(x, mode=mode):
          r = quantized_mean(jax.random.key(3), x[0], "d", num_levels=num_levels,
                             bucket_size=bucket, mode=mode)
          return r.mean[None]
        f = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=P("d"), out_specs=P("d")))
        result = f(global_xs)
        # Each process returns the rows of its own devices.
        out[mode] = np.stack([np.asarray(s.data)[0] for s in result.addressable_shards])
      return out
""")

WORKER = PROGRAM + textwrap.dedent("""
    import sys
    port, process_id, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    jax.config.update("jax_num_cpu_devices", 4)
    jax.distributed.initialize(coordinator_address="localhost:" + port, num_processes=2,
                               process_id=process_id, initialization_timeout=60)
    assert jax.process_count() == 2 and jax.device_count() == 8, jax.devices()
    out = run_modes(MODES, N_VALUES, NUM_LEVELS, BUCKET)
    np.savez(path, **out)
    jax.distributed.shutdown()
""").replace("MODES, N_VALUES, NUM_LEVELS, BUCKET",
             repr((MODES, N_VALUES, NUM_LEVELS, BUCKET))[1:-1])


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("localhost", 0))
    return sock.getsockname()[1]


def test_two_processes_equal_one_process(tmp_path: pathlib.Path):
  if jax.device_count() != 8:
    pytest.skip("needs the 8 simulated CPU devices of tests/conftest.py")
  port = _free_port()
  env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
  paths = [tmp_path / f"process{i}.npz" for i in range(2)]
  procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(port), str(i), str(p)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True) for i, p in enumerate(paths)]
  try:
    logs = [p.communicate(timeout=240)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]

  namespace = {}
  exec(PROGRAM, namespace)  # pylint: disable=exec-used
  single = namespace["run_modes"](MODES, N_VALUES, NUM_LEVELS, BUCKET)
  multi = [np.load(p) for p in paths]
  for mode in MODES:
    combined = np.concatenate([m[mode] for m in multi])
    assert combined.shape == (8, N_VALUES)
    np.testing.assert_array_equal(combined, single[mode], err_msg=mode)
