"""Tests of the benchmark harness: registry, errors, timing helper and result writers."""

import json
import subprocess
import sys
import pathlib

import jax
import jax.numpy as jnp
import pytest

import benchmarks
from benchmarks import _harness

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_registry_lists_benchmark_modules():
  reg = benchmarks.registry()
  assert "mlp_digits" in reg and not any(name.startswith("_") for name in reg)
  module = benchmarks.load("mlp_digits")
  assert callable(module.run) and module.PAPER


def test_unknown_benchmark_name():
  with pytest.raises(ValueError, match="unknown benchmark name='nope'; allowed: .*mlp_digits"):
    benchmarks.load("nope")
  proc = subprocess.run([sys.executable, "-m", "benchmarks", "nope", "--quick"], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2 and "unknown benchmark name='nope'" in proc.stderr


def test_timeit_separates_first_call_and_repeats():
  calls = []

  def f(x):
    calls.append(1)
    return jnp.sin(x)

  t = _harness.timeit(f, jnp.ones(4), repeats=3)
  assert len(calls) == 4 and len(t.runs_s) == 3
  assert t.median_s == sorted(t.runs_s)[1] and t.compile_s >= 0.0
  calls.clear()
  t = _harness.timeit(f, jnp.ones(4), repeats=2, warmup=False)
  assert len(calls) == 2 and t.first_call_s == t.runs_s[0]
  with pytest.raises(ValueError, match="repeats must be >= 1, got 0"):
    _harness.timeit(f, jnp.ones(4), repeats=0)


def test_write_result(tmp_path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots()
  ax.plot([0, 1], [1, 0])
  result = _harness.Result(
      name="toy", paper="Someone 2000", figure=fig, notes="a note",
      claims=[_harness.Claim("x is small", "<= 1", "0.5", True),
              _harness.Claim("speed", "reported", "3 it/s", None)],
      tables=[_harness.markdown_table(["a", "b"], [(1, 0.123456), ("z", False)])],
      data={"curve": jnp.arange(3.0), "inf": float("inf")})
  paths = _harness.write_result(result, tmp_path, quick=True)
  payload = json.loads(paths["json"].read_text())
  assert payload["data"]["curve"] == [0.0, 1.0, 2.0] and payload["data"]["inf"] == "inf"
  assert payload["claims"][0]["holds"] is True and payload["quick"] is True
  md = paths["md"].read_text()
  assert "| x is small | <= 1 | 0.5 | yes |" in md and "| 1 | 0.1235 |" in md
  assert "| z | NO |" in md and "![toy](toy.png)" in md
  assert _harness.markdown_table(["a"], [("||x||",)]).splitlines()[-1] == "| \\|\\|x\\|\\| |"
  assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_jobs_must_be_positive():
  proc = subprocess.run([sys.executable, "-m", "benchmarks", "mlp_digits", "--jobs", "0"],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2 and "--jobs must be >= 1, got 0" in proc.stderr


def test_scheduling_hint_reads_the_last_result_in_the_same_mode(tmp_path):
  from benchmarks import __main__ as cli
  (tmp_path / "a.json").write_text(json.dumps({"quick": True, "elapsed_s": 12.5}))
  assert cli._last_elapsed(tmp_path, "a", quick=True) == 12.5
  assert cli._last_elapsed(tmp_path, "a", quick=False) == 60.0  # other mode: no hint
  assert cli._last_elapsed(tmp_path, "missing", quick=True) == 60.0


def test_compile_and_run_returns_outputs_and_separate_timings():
  import jax
  f = jax.jit(lambda x: (x * 2, x.sum()))
  (y, total), timing = _harness.compile_and_run(f, jnp.arange(4.0))
  assert y.tolist() == [0.0, 2.0, 4.0, 6.0] and float(total) == 6.0
  assert set(timing) == {"compile_s", "compile_cpu_s", "run_s", "run_cpu_s"}
  assert all(v >= 0.0 for v in timing.values())


def test_compile_seconds_count_a_new_compilation_only():
  before = _harness.compile_seconds()
  f = jax.jit(lambda x: jnp.sin(x) * 3.0 + 1.0)
  f(jnp.arange(5.0)).block_until_ready()
  after = _harness.compile_seconds()
  assert set(after) == {"trace", "lower", "compile"}
  assert after["compile"] > before["compile"] and after["lower"] > before["lower"]
  f(jnp.arange(5.0)).block_until_ready()  # cached: nothing more is compiled
  assert _harness.compile_seconds()["compile"] == after["compile"]


def _stopped(pid: int, timeout_s: float = 5.0) -> bool:
  """Whether the process is stopped (state T in /proc), once signals have been delivered."""
  import time  # pylint: disable=import-outside-toplevel
  deadline = time.monotonic() + timeout_s
  while True:
    state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    if state in "tT" or time.monotonic() > deadline:
      return state in "tT"
    time.sleep(0.01)


def _running(pid: int, timeout_s: float = 5.0) -> bool:
  import time  # pylint: disable=import-outside-toplevel
  deadline = time.monotonic() + timeout_s
  while _stopped(pid, timeout_s=0.0) and time.monotonic() < deadline:
    time.sleep(0.01)
  return not _stopped(pid, timeout_s=0.0)


@pytest.mark.skipif(not pathlib.Path("/proc/self/stat").exists(), reason="needs /proc")
def test_runner_pauses_the_other_benchmarks_while_one_is_exclusive(tmp_path):
  from benchmarks import __main__ as runner  # pylint: disable=import-outside-toplevel
  procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
           for _ in range(3)]
  try:
    running = {p.pid: p for p in procs}
    first, second, other = (p.pid for p in procs)
    exclusivity = runner._Exclusivity(tmp_path)  # pylint: disable=protected-access
    for pid in (first, second):  # two requests: served one at a time, oldest first
      (tmp_path / f"{pid}.request").touch()
      __import__("time").sleep(0.02)
    exclusivity.service(running)
    assert exclusivity.holder == first and (tmp_path / f"{first}.granted").exists()
    assert not (tmp_path / f"{second}.granted").exists()
    assert _stopped(second) and _stopped(other) and _running(first)
    exclusivity.service(running)  # still held: nothing changes
    assert exclusivity.holder == first
    (tmp_path / f"{first}.request").unlink()  # released: the next request is served
    exclusivity.service(running)
    assert not (tmp_path / f"{first}.granted").exists()
    assert exclusivity.holder == second and (tmp_path / f"{second}.granted").exists()
    assert _stopped(first) and _stopped(other) and _running(second)
    (tmp_path / f"{second}.request").unlink()
    exclusivity.service(running)
    assert exclusivity.holder is None
    assert all(_running(p.pid) for p in procs)
  finally:
    for p in procs:
      p.kill()
      p.wait()


def test_exclusive_waits_for_the_grant_and_nests(tmp_path, monkeypatch):
  import os  # pylint: disable=import-outside-toplevel
  import threading  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel
  request = tmp_path / f"{os.getpid()}.request"
  seen = []

  def runner():  # plays the parent: grant once the request appears
    while not request.exists():
      time.sleep(0.005)
    seen.append("requested")
    time.sleep(0.05)
    (tmp_path / f"{os.getpid()}.granted").touch()

  monkeypatch.setenv(_harness.CONTROL_ENV, str(tmp_path))
  thread = threading.Thread(target=runner)
  thread.start()
  with _harness.exclusive():
    assert seen == ["requested"] and (tmp_path / f"{os.getpid()}.granted").exists()
    with _harness.exclusive():  # nested: no second request
      pass
    assert request.exists()
  thread.join()
  assert not request.exists()  # released on exit
  monkeypatch.delenv(_harness.CONTROL_ENV)
  with _harness.exclusive():  # outside the runner: a no-op
    pass


def test_worker_reports_each_name_and_survives_a_failure(tmp_path):
  """``--serve`` (the workers of --jobs): one summary per name read from stdin, written whole;
  a benchmark that cannot even load is reported failed and the worker goes on."""
  import os  # pylint: disable=import-outside-toplevel
  env = dict(os.environ, **{_harness.CONTROL_ENV: str(tmp_path)})
  proc = subprocess.run([sys.executable, "-m", "benchmarks", "--serve", "--results-dir",
                         str(tmp_path / "results")], input="nope\n\nnope2\n", cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  for name in ("nope", "nope2"):
    summary = json.loads((tmp_path / f"{name}.summary.json").read_text())
    assert summary == {"name": name, "paper": "-", "failed": True}
  assert not list(tmp_path.glob("*.part"))
  assert "unknown benchmark name='nope2'" in proc.stdout + proc.stderr
