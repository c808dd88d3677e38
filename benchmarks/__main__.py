"""``python -m benchmarks [NAME ...] [--quick]``: run benchmarks, write results, print a summary.

With no names every registered benchmark runs. Each writes ``benchmarks/results/NAME.json``,
``NAME.md`` and ``NAME.png``. A benchmark that raises is reported in the summary and makes the
exit status non-zero, without stopping the others; a claim that does not hold is a result,
marked NO in the table.

With ``--jobs N > 1`` (the default on a CPU host with two or more cores) N worker processes
run the benchmarks, each taking the next one as it finishes, longest first (by the elapsed time
of its last result); a worker that dies is replaced and its benchmark reported as failed. Most
benchmarks spend their time compiling, which is single-threaded, so this uses the cores that
one benchmark leaves idle. A timing that decides a claim runs inside
``_harness.exclusive()``: while it runs, the runner pauses every other benchmark process
(SIGSTOP, then SIGCONT), so that no other job distorts it.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
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
  # Bit-identical random numbers, much shorter XLA:CPU compile times (tomioka_jax.core._compat).
  from tomioka_jax.core import _compat as compat  # pylint: disable=g-import-not-at-top
  compat.fast_threefry_compilation()
  compat.patient_cpu_collectives()  # 8 simulated devices on a loaded machine


def _default_jobs() -> int:
  """2 on a CPU-only host with >= 2 cores (compilation is single-threaded), else 1."""
  if os.environ.get("JAX_PLATFORMS", "cpu") not in ("", "cpu"):
    return 1
  try:
    import jax  # pylint: disable=g-import-not-at-top
    on_cpu = jax.default_backend() == "cpu"
  except RuntimeError:
    on_cpu = True
  return min(2, os.cpu_count() or 1) if on_cpu else 1


def _last_elapsed(results_dir: pathlib.Path, name: str, quick: bool) -> float:
  """The elapsed time of the last result in the same mode (scheduling hint; 60 s if none)."""
  try:
    payload = json.loads((results_dir / f"{name}.json").read_text())
    if bool(payload.get("quick")) == quick and payload.get("elapsed_s"):
      return float(payload["elapsed_s"])
  except (OSError, ValueError):
    pass
  return 60.0


def _run_here(name: str, module, quick: bool, results_dir: pathlib.Path) -> dict:
  """Runs one benchmark in this process; a summary that survives JSON (for --jobs)."""
  from benchmarks import _harness  # pylint: disable=g-import-not-at-top
  print(f"== {name} ({'quick' if quick else 'full'}) ==", flush=True)
  compile0, cpu0, t0 = _harness.compile_seconds(), time.process_time(), time.perf_counter()
  try:
    result = module.run(quick=quick)
    elapsed = time.perf_counter() - t0
    cost = {"cpu_s": time.process_time() - cpu0}
    cost.update({f"{k}_s": v - compile0[k] for k, v in _harness.compile_seconds().items()})
    paths = _harness.write_result(result, results_dir, quick=quick, elapsed_s=elapsed, cost=cost)
  except Exception:  # pylint: disable=broad-except
    traceback.print_exc()
    return {"name": name, "paper": module.PAPER, "failed": True}
  print(f"   wrote {', '.join(str(p) for p in paths.values())} in {elapsed:.1f} s "
        f"({cost['cpu_s']:.0f} s CPU, XLA compilation {cost['compile_s']:.0f} s)", flush=True)
  return {"name": name, "paper": result.paper, "failed": False, "elapsed_s": elapsed, "cost": cost,
          "claims": [(c.claim, c.paper, c.ours, c.holds) for c in result.claims]}


class _Exclusivity:
  """Serves ``_harness.exclusive()`` requests: pauses every other child while one times."""

  def __init__(self, control: pathlib.Path):
    self.control = control
    self.holder: int | None = None

  def service(self, running: dict[int, subprocess.Popen]) -> None:
    """Releases a finished holder, then grants the oldest pending request of a live child."""
    if self.holder is not None:
      if (self.control / f"{self.holder}.request").exists() and self.holder in running:
        return
      (self.control / f"{self.holder}.granted").unlink(missing_ok=True)
      for pid in running:
        if pid != self.holder:
          _signal(pid, signal.SIGCONT)
      self.holder = None

    def age(request: pathlib.Path) -> float:
      try:
        return request.stat().st_mtime
      except FileNotFoundError:  # withdrawn meanwhile
        return float("inf")

    for request in sorted(self.control.glob("*.request"), key=age):
      pid = int(request.stem)
      if pid in running:
        for other in running:
          if other != pid:
            _signal(other, signal.SIGSTOP)
        (self.control / f"{pid}.granted").touch()
        self.holder = pid
        return


def _signal(pid: int, sig: int) -> None:
  try:
    os.kill(pid, sig)
  except ProcessLookupError:  # it has just exited
    pass


class _Worker:
  """A ``python -m benchmarks --serve`` process: runs the benchmark names written to its stdin."""

  def __init__(self, cmd: list[str], env: dict, log_path: pathlib.Path):
    self.log = open(log_path, "w+")  # pylint: disable=consider-using-with
    self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=self.log,
                                 stderr=subprocess.STDOUT, env=env, text=True)
    self.name: str | None = None
    self.offset = 0

  def assign(self, name: str) -> None:
    self.log.flush()
    self.offset = self.log.seek(0, os.SEEK_END)
    self.name = name
    self.proc.stdin.write(name + "\n")
    self.proc.stdin.flush()

  def output(self) -> str:
    """What the worker printed since its current benchmark was assigned."""
    self.log.seek(self.offset)
    return self.log.read()


def _run_in_processes(names: list[str], quick: bool, results_dir: pathlib.Path,
                      jobs: int) -> list[dict]:
  """The benchmarks on ``jobs`` worker processes, longest first."""
  from benchmarks import _harness  # pylint: disable=g-import-not-at-top
  pending = sorted(names, key=lambda n: -_last_elapsed(results_dir, n, quick))
  env = dict(os.environ)
  # Workers share an accelerator's memory instead of each preallocating most of it.
  env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 / jobs:.2f}")
  summaries: dict[str, dict] = {}
  with tempfile.TemporaryDirectory() as tmp:
    control = pathlib.Path(tmp) / "control"
    control.mkdir()
    env[_harness.CONTROL_ENV] = str(control)
    exclusivity = _Exclusivity(control)
    cmd = [sys.executable, "-m", "benchmarks", "--serve", "--results-dir", str(results_dir)]
    cmd += ["--quick"] if quick else []
    started = [0]

    def new_worker() -> _Worker:
      started[0] += 1
      return _Worker(cmd, env, pathlib.Path(tmp) / f"worker{started[0]}.log")

    workers = [new_worker() for _ in range(min(jobs, len(names)))]
    while pending or any(w.name for w in workers):
      for i, w in enumerate(workers):
        if w.name is None:
          continue
        summary = control / f"{w.name}.summary.json"
        if summary.exists():
          sys.stdout.write(w.output())
          sys.stdout.flush()
          summaries[w.name] = json.loads(summary.read_text())
          w.name = None
        elif w.proc.poll() is not None:  # died: report, replace
          sys.stdout.write(w.output())
          print(f"== {w.name}: its worker process exited with status {w.proc.returncode} ==",
                flush=True)
          summaries[w.name] = {"name": w.name, "paper": "-", "failed": True}
          w.log.close()
          workers[i] = new_worker()
      # No benchmark starts while another has the machine to itself.
      for w in workers:
        if w.name is None and pending and exclusivity.holder is None:
          w.assign(pending.pop(0))
      exclusivity.service({w.proc.pid: w.proc for w in workers if w.proc.poll() is None})
      time.sleep(0.05)
    for w in workers:
      w.proc.stdin.close()
    for w in workers:
      w.proc.wait()
      w.log.close()
  return [summaries[n] for n in names]


def _serve(quick: bool, results_dir: pathlib.Path) -> int:
  """Worker mode: runs each benchmark name read from stdin; its summary goes to the runner's
  control directory (written whole, then renamed, so the runner never reads half of it)."""
  import benchmarks  # pylint: disable=g-import-not-at-top
  from benchmarks import _harness  # pylint: disable=g-import-not-at-top
  control = pathlib.Path(os.environ[_harness.CONTROL_ENV])
  for line in sys.stdin:
    name = line.strip()
    if not name:
      continue
    try:
      module = benchmarks.load(name)
    except Exception:  # pylint: disable=broad-except
      traceback.print_exc()
      summary = {"name": name, "paper": "-", "failed": True}
    else:
      summary = _run_here(name, module, quick, results_dir)
    partial = control / f"{name}.summary.part"
    partial.write_text(json.dumps(_harness.to_jsonable(summary)))
    os.replace(partial, control / f"{name}.summary.json")
    sys.stdout.flush()
  return 0


def main(argv: list[str] | None = None) -> int:
  import benchmarks  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
  parser.add_argument("names", nargs="*", metavar="NAME",
                      help=f"benchmarks to run (default: all of {', '.join(benchmarks.registry())})")
  parser.add_argument("--quick", action="store_true",
                      help="small repetitions that run in a minute or two each on a 2-core CPU")
  parser.add_argument("--results-dir", type=pathlib.Path, default=None,
                      help="where to write NAME.json/.md/.png (default: benchmarks/results)")
  parser.add_argument("--jobs", type=int, default=None,
                      help="benchmarks run at once, in that many worker processes (default: 2 "
                           "on a CPU host with >= 2 cores, else 1); a timing that decides a "
                           "claim pauses the others")
  parser.add_argument("--serve", action="store_true",
                      help=argparse.SUPPRESS)  # a worker of --jobs: names arrive on stdin
  args = parser.parse_args(argv)
  if args.jobs is not None and args.jobs < 1:
    parser.error(f"--jobs must be >= 1, got {args.jobs}")
  names = args.names or list(benchmarks.registry())
  try:
    for name in names:
      benchmarks.check(name)
  except ValueError as e:
    parser.error(str(e))
  _configure_jax()
  from benchmarks import _harness  # pylint: disable=g-import-not-at-top
  results_dir = args.results_dir or _harness.RESULTS_DIR
  if args.serve:
    return _serve(args.quick, results_dir)

  start = time.perf_counter()
  jobs = args.jobs if args.jobs is not None else _default_jobs()
  if jobs > 1 and len(names) > 1:
    summaries = _run_in_processes(names, args.quick, results_dir, jobs)
  else:
    summaries = [_run_here(name, benchmarks.load(name), args.quick, results_dir)
                 for name in names]

  rows, failed, not_holding = [], [], []
  times: dict[str, float] = {}
  cpu = compile_s = 0.0
  for s in summaries:
    if s["failed"]:
      failed.append(s["name"])
      rows.append((s["name"], s["paper"], "benchmark raised an error", "-", "-", False))
      continue
    times[s["name"]] = s["elapsed_s"]
    cpu += s["cost"]["cpu_s"]
    compile_s += s["cost"]["compile_s"]
    for claim, paper, ours, holds in s["claims"]:
      rows.append((s["name"], s["paper"], claim, paper, ours, holds))
      if holds is False:
        not_holding.append(f"{s['name']}: {claim}")

  print()
  print(_harness.markdown_table(["benchmark", "paper", "claim", "paper's number", "ours", "holds?"],
                                rows))
  print(f"\n{len(times)} benchmark(s) in {time.perf_counter() - start:.0f} s"
        f"{f' ({jobs} at a time)' if jobs > 1 and len(names) > 1 else ''}: " +
        ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) +
        f"; CPU {cpu:.0f} s in the benchmarks, of which XLA compilation {compile_s:.0f} s")
  if not_holding:
    print(f"\n{len(not_holding)} claim(s) did not hold (see each NAME.md for why): " +
          "; ".join(not_holding))
  if failed:
    print(f"\n{len(failed)} benchmark(s) raised an error: " + ", ".join(failed))
  # The exit status reports errors; a claim that does not hold is a result, shown above.
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
