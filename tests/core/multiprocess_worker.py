"""One process of the multi-process data-parallel test (run by test_multiprocess.py).

Usage: python multiprocess_worker.py COORDINATOR_ADDRESS NUM_PROCESSES PROCESS_ID OUT_PATH

Joins the run with ``initialize_distributed`` (gloo CPU collectives, 2 CPU devices per
process), trains the shared toy problem with the jit data-parallel step and the shard_map
step, each process feeding only its slice of every global batch, then runs ``fit`` with
checkpoints in OUT_PATH.fit; process 0 writes the loss trajectories and final parameters to
OUT_PATH (.npz).
"""

import sys

import jax

jax.config.update("jax_num_cpu_devices", 2)

from tests.core import multiprocess_problem  # noqa: E402
from tomioka_jax import core  # noqa: E402


def main():
  address, num_processes, process_id, out_path = sys.argv[1:]
  core.initialize_distributed(address, int(num_processes), int(process_id))
  assert jax.process_count() == int(num_processes) and jax.device_count() == 2 * int(
      num_processes), (jax.process_count(), jax.device_count())
  mesh = core.data_mesh()
  results = multiprocess_problem.train(mesh, jax.process_index(), jax.process_count())
  results["fit_params"] = multiprocess_problem.fit_with_checkpoints(
      mesh, jax.process_index(), jax.process_count(), out_path + ".fit")
  if jax.process_index() == 0:
    multiprocess_problem.save(out_path, results)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
