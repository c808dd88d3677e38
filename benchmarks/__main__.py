"""``python -m benchmarks [NAME ...] [--quick]``: run benchmarks, write results, print a summary.

With no names every registered benchmark runs. Each writes ``benchmarks/results/NAME.json``,
``NAME.md`` and ``NAME.png``. A benchmark that raises is reported in the summary and makes the
exit status non-zero, without stopping the others; a claim that does not hold is a result,
marked NO in the table.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time
import traceback


def _configure_jax() -> None:
  # Benchmarks compare 1 device with 8 simulated CPU devices; on an accelerator host the real
  # devices are used. This must happen before JAX initializes its backends.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import jax  # pylint: disable=g-import-not-at-top
  if os.environ.get("JAX_PLATFORMS", "") in ("", "cpu"):
    jax.config.update("jax_num_cpu_devices", int(os.environ.get("TOMIOKA_CPU_DEVICES", "8")))
  # Bit-identical random numbers, much shorter XLA:CPU compile times (tomioka_jax.core.compat).
  from tomioka_jax.core import compat  # pylint: disable=g-import-not-at-top
  compat.fast_threefry_compilation()


def main(argv: list[str] | None = None) -> int:
  import benchmarks  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
  parser.add_argument("names", nargs="*", metavar="NAME",
                      help=f"benchmarks to run (default: all of {', '.join(benchmarks.registry())})")
  parser.add_argument("--quick", action="store_true",
                      help="small repetitions that run in a minute or two each on a 2-core CPU")
  parser.add_argument("--results-dir", type=pathlib.Path, default=None,
                      help="where to write NAME.json/.md/.png (default: benchmarks/results)")
  args = parser.parse_args(argv)
  names = args.names or list(benchmarks.registry())
  try:
    modules = {name: benchmarks.load(name) for name in names}
  except ValueError as e:
    parser.error(str(e))
  _configure_jax()
  from benchmarks import _harness  # pylint: disable=g-import-not-at-top
  results_dir = args.results_dir or _harness.RESULTS_DIR

  rows, failed, not_holding = [], [], []
  times: dict[str, float] = {}
  start = time.perf_counter()
  for name, module in modules.items():
    print(f"== {name} ({'quick' if args.quick else 'full'}) ==", flush=True)
    t0 = time.perf_counter()
    try:
      result = module.run(quick=args.quick)
      elapsed = time.perf_counter() - t0
      paths = _harness.write_result(result, results_dir, quick=args.quick, elapsed_s=elapsed)
    except Exception:  # pylint: disable=broad-except
      traceback.print_exc()
      failed.append(name)
      rows.append((name, module.PAPER, "benchmark raised an error", "-", "-", False))
      continue
    times[name] = elapsed
    print(f"   wrote {', '.join(str(p) for p in paths.values())} in {elapsed:.1f} s", flush=True)
    for c in result.claims:
      rows.append((name, result.paper, c.claim, c.paper, c.ours, c.holds))
      if c.holds is False:
        not_holding.append(f"{name}: {c.claim}")

  print()
  print(_harness.markdown_table(["benchmark", "paper", "claim", "paper's number", "ours", "holds?"],
                                rows))
  print(f"\n{len(times)} benchmark(s) in {time.perf_counter() - start:.0f} s: " +
        ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))
  if not_holding:
    print(f"\n{len(not_holding)} claim(s) did not hold (see each NAME.md for why): " +
          "; ".join(not_holding))
  if failed:
    print(f"\n{len(failed)} benchmark(s) raised an error: " + ", ".join(failed))
  # The exit status reports errors; a claim that does not hold is a result, shown above.
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
