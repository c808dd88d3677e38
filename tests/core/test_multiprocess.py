"""Two processes x 2 CPU devices joined by jax.distributed on localhost equal one process."""

import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.core import multiprocess_problem
from tomioka_jax import core

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.multiprocess
def test_two_processes_equal_one_process(tmp_path):
  address = f"127.0.0.1:{_free_port()}"
  out = tmp_path / "result.npz"
  env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
  env.pop("XLA_FLAGS", None)
  procs = [
      subprocess.Popen([sys.executable, "-m", "tests.core.multiprocess_worker", address, "2",
                        str(i), str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
      for i in range(2)
  ]
  logs = []
  try:
    for p in procs:
      stdout, _ = p.communicate(timeout=240)
      logs.append(stdout)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert all(p.returncode == 0 for p in procs), "\n\n".join(logs)[-4000:]
  multi = np.load(out)

  single = multiprocess_problem.train(core.data_mesh(jax.devices()[:4]), 0, 1)
  for kind in ("jit", "shard_map"):
    np.testing.assert_allclose(multi[f"{kind}_losses"], single[f"{kind}_losses"], rtol=1e-5)
    np.testing.assert_allclose(multi[f"{kind}_params"], single[f"{kind}_params"], rtol=1e-5,
                               atol=1e-6)
  # fit with multi-process checkpoints: same parameters, and a checkpoint at the last step.
  single_fit = multiprocess_problem.fit_with_checkpoints(core.data_mesh(jax.devices()[:4]), 0, 1,
                                                         tmp_path / "single")
  np.testing.assert_allclose(multi["fit_params"], single_fit, rtol=1e-5, atol=1e-6)
  assert (pathlib.Path(str(out) + ".fit") / "checkpoints" / str(
      multiprocess_problem.NUM_STEPS)).is_dir()
  lines = (pathlib.Path(str(out) + ".fit") / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == multiprocess_problem.NUM_STEPS  # written once, by process 0
  # Training did something.
  assert single["jit_losses"][-1] < single["jit_losses"][0]
