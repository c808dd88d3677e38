"""Tests of the benchmarks: registry, runner, harness, README table, and a smoke run of each."""

import json
import subprocess
import sys
import pathlib

import jax
import jax.numpy as jnp
import pytest

import benchmarks
from benchmarks import _harness
from benchmarks import _readme

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_registry_lists_benchmark_modules():
  reg = benchmarks.registry()
  assert "mlp_digits" in reg and not any(name.startswith("_") for name in reg)
  module = benchmarks.load("tensor_spectral")
  assert module.PAPER and set(module.CONFIGS) == set(_harness.MODES)


def test_unknown_benchmark_name_and_bad_jobs():
  with pytest.raises(ValueError, match="unknown benchmark name='nope'; allowed: .*mlp_digits"):
    benchmarks.load("nope")
  for args, error in ((["nope", "--quick"], "unknown benchmark name='nope'"),
                      (["mlp_digits", "--jobs", "0"], "--jobs must be >= 1, got 0")):
    proc = subprocess.run([sys.executable, "-m", "benchmarks", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and error in proc.stderr


@pytest.mark.parametrize("name", sorted(benchmarks.registry()))
def test_smoke(name, tmp_path):
  """Every benchmark runs at its smoke config; each claim gets a value (not judged here)."""
  module = benchmarks.load(name)
  result = _harness.run_benchmark(module, "smoke")
  assert result.claims and all(c.claim and c.ours for c in result.claims)
  assert all(c.holds in (True, False, None) for c in result.claims)
  assert result.tables and result.headline
  paths = _harness.write_result(result, tmp_path, mode="smoke")
  payload = json.loads(paths["json"].read_text())
  assert payload["mode"] == "smoke" and len(payload["claims"]) == len(result.claims)


def test_runner_runs_the_phases_in_worker_processes(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "benchmarks", "tensor_spectral", "--smoke",
                         "--results-dir", str(tmp_path)], cwd=ROOT, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  for phase in ("experiment", "timings"):
    assert f"== tensor_spectral: {phase} (smoke) ==" in proc.stdout
  assert "| tensor_spectral |" in proc.stdout and "1 benchmark(s) in" in proc.stdout
  assert json.loads((tmp_path / "tensor_spectral.json").read_text())["mode"] == "smoke"


def test_readme_table_matches_the_results():
  readme = (ROOT / "README.md").read_text()
  assert _readme.render(readme) == readme, "run `python -m benchmarks --readme`"
  assert readme.count("\n| ") == len(_readme.PAPERS) + 1  # the header and one row per paper


def test_claim_outcomes_and_the_full_record(tmp_path):
  full = _harness.Result(name="toy", paper="P", claims=[
      _harness.Claim("gap closes", "> 0", "+0.3", True)], headline="full headline")
  _harness.write_result(full, tmp_path, mode="full")
  quick = _harness.Result(name="toy", paper="P", headline="quick headline", claims=[
      _harness.Claim("gap closes", "> 0", "-1.8", None, reason="80 steps are too few",
                     judged=False),
      _harness.Claim("bound", "<= 1", "2", False, reason="too large")])
  _harness.write_result(quick, tmp_path, mode="quick")
  payload = json.loads((tmp_path / "toy.json").read_text())
  assert payload["full_record"]["headline"] == "full headline"
  not_judged, no = quick.claims
  assert not_judged.outcome == "not judged: 80 steps are too few"
  assert not_judged.ours_shown == "-1.8 (last full run: +0.3)"
  assert no.outcome == "NO: too large" and no.ours_shown == "2"
  md = (tmp_path / "toy.md").read_text()
  assert "| -1.8 (last full run: +0.3) | not judged: 80 steps are too few |" in md
  _harness.write_result(quick, tmp_path, mode="quick")  # the full record is kept across runs
  assert json.loads((tmp_path / "toy.json").read_text())["full_record"]["claims"][0]["ours"] == "+0.3"
  assert _readme.headline("toy", "stored", tmp_path) == "full headline"
  assert _readme.headline("", "stored", tmp_path) == "stored"
  with pytest.raises(ValueError, match="mode must be one of smoke, quick, full, got 'fast'"):
    _harness.write_result(quick, tmp_path, mode="fast")


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
  paths = _harness.write_result(result, tmp_path, mode="quick")
  payload = json.loads(paths["json"].read_text())
  assert payload["data"]["curve"] == [0.0, 1.0, 2.0] and payload["data"]["inf"] == "inf"
  assert payload["claims"][0]["holds"] is True and payload["mode"] == "quick"
  md = paths["md"].read_text()
  assert "| x is small | <= 1 | 0.5 | yes |" in md and "| 1 | 0.1235 |" in md
  assert "| z | NO |" in md and "![toy](toy.png)" in md
  assert _harness.markdown_table(["a"], [("||x||",)]).splitlines()[-1] == "| \\|\\|x\\|\\| |"
  assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_compile_and_run_returns_outputs_and_separate_timings():
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


def test_the_library_imports_without_the_bench_extra():
  """The [bench] and [rl] extras (matplotlib, tensorly, threadpoolctl; gymnax, rlax): no library
  module needs them to import (rl's DQN imports gymnax when it builds an environment)."""
  code = ("import sys, pkgutil, importlib, tomioka_jax\n"
          "for m in ('matplotlib', 'tensorly', 'threadpoolctl', 'gymnax', 'rlax'):\n"
          "  sys.modules[m] = None\n"
          "for info in pkgutil.walk_packages(tomioka_jax.__path__, 'tomioka_jax.'):\n"
          "  importlib.import_module(info.name)\n")
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr


def test_pas_long_run_path_trains_every_lane_and_resumes(tmp_path, monkeypatch):
  """The full config's path (lanes stepped from Python by robust.fit_pas, checkpointed): the
  same outputs as the compiled lanes' shapes, and a rerun resumes from the checkpoints."""
  monkeypatch.setenv("TOMIOKA_JAX_CACHE", str(tmp_path))
  pas = benchmarks.load("pas")
  config = dict(pas.CONFIGS["smoke"], mode="smoke", trainer="fit", lrs=(0.1,), epochs=4,
                hessian_eps=(0.0, 0.1))
  first = pas.experiment(config)
  assert first["acc"].shape == (2, 1, 1, 2, 3) and first["train_loss"].shape == (2, 1, 1, 4)
  assert len(first["hessian_top"]) == 2
  lanes = sorted(p.name for p in (tmp_path / "pas_runs").iterdir() for p in p.iterdir())
  assert lanes == ["pas_lr0.1_seed0_eps0.1", "vanilla_lr0.1_seed0_eps0",
                   "vanilla_lr0.1_seed0_eps0.1"]
  again = pas.experiment(config)
  assert (again["acc"] == first["acc"]).all()


def test_pas_curvature_warmup_is_the_references_linear_ramp():
  """eps * min(1, e / warmup) per epoch: clean first epoch, the target from epoch `warmup` on."""
  from benchmarks import pas  # pylint: disable=g-import-not-at-top
  ramp = pas._warmup_eps(0.2, 2)  # pylint: disable=protected-access
  assert [float(ramp(e)) for e in range(4)] == pytest.approx([0.0, 0.1, 0.2, 0.2])
  const = pas._warmup_eps(0.2, 0)  # pylint: disable=protected-access
  assert [float(const(e)) for e in range(3)] == pytest.approx([0.2, 0.2, 0.2])
