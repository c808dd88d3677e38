"""``python -m benchmarks [NAME ...] [--quick] [--jobs N]``: run benchmarks, print a summary.

With no names every registered benchmark runs, at the paper's scale (``--quick``: the main
job's small scale; ``--smoke``: seconds, into a temporary directory). It goes in three phases:

1. **experiments**: each benchmark's ``experiment(config)`` in its own worker process, ``--jobs``
   of them at once, longest first (by the elapsed time of its last result);
2. **timings**: each benchmark's ``timings(config)`` (every timing that decides a claim), one
   at a time in a fresh process, on an otherwise idle machine;
3. **report**: ``claims`` and ``report`` here, writing ``results/NAME.json``, ``.md``, ``.png``.

A benchmark that raises (or whose worker dies) is reported in the summary and makes the exit
status non-zero, without stopping the others; a claim that does not hold is a result, marked NO.
``--readme`` rewrites README.md's paper table from the results.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import pathlib
import pickle
import subprocess
import sys
import tempfile
import time
import traceback


def _configure_jax() -> None:
  # Benchmarks compare 1 device with 8 simulated CPU devices; on an accelerator host the real
  # devices are used. This must happen before JAX initializes its backends.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import jax  # pylint: disable=g-import-not-at-top
  if os.environ.get("JAX_PLATFORMS", "") in ("", "cpu"):
    jax.config.update("jax_num_cpu_devices", int(os.environ.get("TOMIOKA_CPU_DEVICES", "8")))
  # Stock JAX; an XLA flag lets 8 simulated devices wait for each other on a loaded machine.
  from benchmarks import _jax_workarounds  # pylint: disable=g-import-not-at-top
  _jax_workarounds.patient_cpu_collectives()


def _worker(name: str, phase: str, mode: str, results_dir: pathlib.Path) -> dict:
  """One phase of one benchmark, in a worker process: its output, time and cost."""
  import benchmarks  # pylint: disable=g-import-not-at-top
  from benchmarks import _harness  # pylint: disable=g-import-not-at-top
  module = benchmarks.load(name)
  print(f"== {name}: {phase} ({mode}) ==", flush=True)
  compile0, cpu0, t0 = _harness.compile_seconds(), time.process_time(), time.perf_counter()
  if phase == "experiment":
    value = module.experiment(_harness.config(module, mode))
  else:  # "timings"
    value = _harness.run_timings(module, mode)
  cost = {"cpu_s": time.process_time() - cpu0}
  cost.update({f"{k}_s": v - compile0[k] for k, v in _harness.compile_seconds().items()})
  out = {"elapsed_s": time.perf_counter() - t0, "cost": cost, "env": _harness.environment()}
  print(f"   {name}: {phase} took {out['elapsed_s']:.1f} s", flush=True)
  return {**out, "value": value}


def _in_process(name: str, phase: str, mode: str, results_dir: pathlib.Path) -> dict | None:
  """Runs :func:`_worker` in a fresh Python process; None if it raised or died."""
  with tempfile.TemporaryDirectory() as tmp:
    out = pathlib.Path(tmp) / "out.pickle"
    cmd = [sys.executable, "-m", "benchmarks", name, "--mode", mode, "--phase", phase,
           "--out", str(out), "--results-dir", str(results_dir)]
    code = subprocess.run(cmd, check=False).returncode
    if code != 0 or not out.exists():
      print(f"== {name}: {phase} failed (worker exit status {code}) ==", flush=True)
      return None
    return pickle.loads(out.read_bytes())


def _summary(result, elapsed_s: float, cost: dict) -> dict:
  return {"name": result.name, "paper": result.paper, "elapsed_s": elapsed_s, "cost": cost,
          "claims": [(c.claim, c.paper, c.ours_shown, c.outcome, c.holds, c.judged)
                     for c in result.claims]}


def _longest_first(names: list[str], mode: str, results_dir: pathlib.Path) -> list[str]:
  from benchmarks import _harness  # pylint: disable=g-import-not-at-top

  def last_elapsed(name: str) -> float:  # of the last result in the same mode; 60 s if none
    record = _harness.read_record(results_dir, name) or {}
    same = _harness.record_mode(record) == mode and record.get("elapsed_s")
    return float(record["elapsed_s"]) if same else 60.0

  return sorted(names, key=lambda n: -last_elapsed(n))


def run(names: list[str], mode: str, jobs: int, results_dir: pathlib.Path) -> list[dict | None]:
  """The three phases for ``names``; each benchmark's summary, or None if it failed."""
  import benchmarks  # pylint: disable=g-import-not-at-top
  from benchmarks import _harness  # pylint: disable=g-import-not-at-top
  modules = {n: benchmarks.load(n) for n in names}
  # 1. Experiments, `jobs` at a time.
  os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 / jobs:.2f}")
  first = _longest_first(names, mode, results_dir)
  with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
    phase1 = dict(zip(first, pool.map(
        lambda n: _in_process(n, "experiment", mode, results_dir), first)))
  # 2. Timings, one at a time.
  phase2 = {n: _in_process(n, "timings", mode, results_dir) for n in names
            if phase1[n] and hasattr(modules[n], "timings")}
  # 3. Claims and reports.
  summaries = []
  for n in names:
    exp, times = phase1[n], phase2.get(n, {"value": {}, "elapsed_s": 0.0, "cost": {}})
    if exp is None or times is None:
      summaries.append(None)
      continue
    try:
      result = _harness.finish(modules[n], mode, exp["value"], times["value"])
      elapsed = exp["elapsed_s"] + times["elapsed_s"]
      cost = {k: v + times["cost"].get(k, 0.0) for k, v in exp["cost"].items()}
      paths = _harness.write_result(result, results_dir, mode, elapsed, cost, exp["env"])
      print(f"== {n}: wrote {', '.join(str(p) for p in paths.values())} ==", flush=True)
      summaries.append(_summary(result, elapsed, cost))
    except Exception:  # pylint: disable=broad-except
      traceback.print_exc()
      summaries.append(None)
  return summaries


def _print_summary(names: list[str], summaries: list[dict | None], seconds: float,
                   jobs: int) -> int:
  import benchmarks  # pylint: disable=g-import-not-at-top
  from benchmarks import _harness  # pylint: disable=g-import-not-at-top
  rows, failed, not_holding, not_judged, times = [], [], [], [], {}
  for name, s in zip(names, summaries):
    if s is None:
      failed.append(name)
      rows.append((name, benchmarks.load(name).PAPER, "benchmark raised an error", "-", "-", "-"))
      continue
    times[name] = s["elapsed_s"]
    for claim, paper, ours, outcome, holds, judged in s["claims"]:
      rows.append((name, s["paper"], claim, paper, ours, outcome))
      if not judged:
        not_judged.append(f"{name}: {claim}")
      elif holds is False:
        not_holding.append(f"{name}: {claim}")
  print()
  print(_harness.markdown_table(["benchmark", "paper", "claim", "paper's number", "ours",
                                 "holds?"], rows))
  cpu = sum(s["cost"]["cpu_s"] for s in summaries if s)
  compile_s = sum(s["cost"]["compile_s"] for s in summaries if s)
  print(f"\n{len(times)} benchmark(s) in {seconds:.0f} s ({jobs} at a time, timings alone): " +
        ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) +
        f"; CPU {cpu:.0f} s in the benchmarks, of which XLA compilation {compile_s:.0f} s")
  if not_judged:
    print(f"\n{len(not_judged)} claim(s) not judged in this mode (see each NAME.md for why and "
          "for the last full run's number): " + "; ".join(not_judged))
  if not_holding:
    print(f"\n{len(not_holding)} claim(s) did not hold (see each NAME.md for why): " +
          "; ".join(not_holding))
  if failed:
    print(f"\n{len(failed)} benchmark(s) raised an error: " + ", ".join(failed))
  # The exit status reports errors; a claim that does not hold is a result, shown above.
  return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
  import benchmarks  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
  parser.add_argument("names", nargs="*", metavar="NAME",
                      help=f"benchmarks to run (default: all of {', '.join(benchmarks.registry())})")
  parser.add_argument("--quick", action="store_true",
                      help="the main job's scale: a minute or two each on a 2-core CPU")
  parser.add_argument("--smoke", action="store_true",
                      help="tiny sizes, seconds each (what the tests run); writes to a temporary "
                           "directory unless --results-dir is given")
  parser.add_argument("--jobs", type=int, default=None,
                      help="experiments run at once (default: 2 on a CPU host with >= 2 cores, "
                           "else 1); timings always run one at a time")
  parser.add_argument("--results-dir", type=pathlib.Path, default=None,
                      help="where to write NAME.json/.md/.png (default: benchmarks/results)")
  parser.add_argument("--readme", action="store_true",
                      help="rewrite README.md's paper table from benchmarks/results and exit")
  parser.add_argument("--mode", help=argparse.SUPPRESS)  # worker: smoke, quick or full
  parser.add_argument("--phase", help=argparse.SUPPRESS)  # worker: experiment or timings
  parser.add_argument("--out", type=pathlib.Path, help=argparse.SUPPRESS)  # worker's pickle
  args = parser.parse_args(argv)
  if args.readme:
    from benchmarks import _readme  # pylint: disable=g-import-not-at-top
    changed = _readme.update()
    print("README.md " + ("updated" if changed else "already matches the results"))
    return 0
  if args.jobs is not None and args.jobs < 1:
    parser.error(f"--jobs must be >= 1, got {args.jobs}")
  if args.quick and args.smoke:
    parser.error("--quick and --smoke exclude each other")
  names = args.names or list(benchmarks.registry())
  try:
    for name in names:
      benchmarks.check(name)
  except ValueError as e:
    parser.error(str(e))
  mode = args.mode or ("smoke" if args.smoke else "quick" if args.quick else "full")
  results_dir = args.results_dir or (pathlib.Path(tempfile.mkdtemp(prefix="benchmarks-"))
                                     if mode == "smoke" else benchmarks.RESULTS_DIR)
  _configure_jax()
  if args.phase:  # a worker process of run()
    args.out.write_bytes(pickle.dumps(_worker(names[0], args.phase, mode, results_dir)))
    return 0

  start = time.perf_counter()
  cpu_host = os.environ.get("JAX_PLATFORMS", "") in ("", "cpu")
  jobs = min(args.jobs or (min(2, os.cpu_count() or 1) if cpu_host else 1), len(names))
  summaries = run(names, mode, jobs, results_dir)
  print(f"\nResults in {results_dir}")
  if results_dir == benchmarks.RESULTS_DIR:
    from benchmarks import _readme  # pylint: disable=g-import-not-at-top
    if _readme.update():
      print("README.md's paper table updated from the results")
  return _print_summary(names, summaries, time.perf_counter() - start, jobs)


if __name__ == "__main__":
  sys.exit(main())
