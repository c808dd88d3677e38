"""The benchmark harness: the interface every benchmark follows, timing, and the result writers.

A benchmark is a module ``benchmarks/NAME.py`` that reads top to bottom as
config -> experiment -> timings -> claims -> report::

  NAME = "tensor_spectral"
  PAPER = "Tomioka, Suzuki 2014, Spectral norm of random tensors (arXiv 1407.1870)"
  CONFIGS = {"smoke": {...}, "quick": {...}, "full": {...}}  # sizes, repeats, seeds: plain data

  def experiment(config) -> dict:        # the computation; runs in a worker process
  def timings(config) -> dict:           # optional: the timings that decide a claim
  def claims(config, exp, times) -> list[Claim]
  def report(config, exp, times) -> Report  # tables, notes, figure, README headline

``config`` is ``CONFIGS[mode]`` with ``config["mode"]`` set to the mode:

* ``smoke``: tiny, seconds; the test suite runs every benchmark at it and checks that each
  claim gets a value (not that it holds);
* ``quick``: the main job, ``python -m benchmarks --quick`` (a minute or two per benchmark on
  a 2-core CPU);
* ``full``: the paper's scale, ``python -m benchmarks NAME``.

``python -m benchmarks`` runs the experiments of several benchmarks at once in worker processes
(``--jobs``), then each benchmark's ``timings`` alone, one after another, on an otherwise idle
machine, then ``claims`` and ``report`` in the main process. ``experiment`` and ``timings``
return plain data (dicts of numbers, lists, NumPy arrays: they are pickled back); ``claims``
and ``report`` only compute from them. Put every timing that a claim judges in ``timings``;
a timing that is only reported may stay in ``experiment``.

A :class:`Claim` has three outcomes: it holds (``holds=True``), it does not hold
(``holds=False``, with its ``reason``), or this mode cannot judge it (``judged=False``, e.g. quick
mode trains too briefly: ``reason`` says so, and the writer shows the last full run's number
beside ours, from the full record that ``results/NAME.json`` keeps). ``holds=None`` is a number
that is reported, not judged against a bound (a speed on another machine class).

:class:`Report` carries the tables, the notes and the README headline. Write the prose as a
module-level template (``NOTES = \"\"\"...{c_fit:.3f}...\"\"\"``) formatted with the numbers, not as
an f-string inside a function.

:func:`write_result` writes ``results/NAME.json`` (machine-readable; the README table is
generated from it by ``python -m benchmarks --readme``), ``results/NAME.md`` (the tables, with
the paper's numbers beside ours) and ``results/NAME.png`` (the paper's figure, redrawn).

"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import pathlib
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

RESULTS_DIR = pathlib.Path(__file__).resolve().parent / "results"  # = benchmarks.RESULTS_DIR
MODES = ("smoke", "quick", "full")


@dataclasses.dataclass(frozen=True)
class Timing:
  """Wall-clock timing of a function: the first call (compile + run) apart from the repeats."""

  first_call_s: float
  median_s: float
  runs_s: tuple[float, ...]

  @property
  def compile_s(self) -> float:
    """Time of the first call beyond a steady-state call: tracing + compilation."""
    return max(self.first_call_s - self.median_s, 0.0)

  def as_dict(self) -> dict[str, Any]:
    return {
        "first_call_s": self.first_call_s,
        "compile_s": self.compile_s,
        "median_s": self.median_s,
        "runs_s": list(self.runs_s),
    }


_COMPILE_EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
    "/jax/core/compile/backend_compile_duration": "compile",
}
_COMPILE_SECONDS = dict.fromkeys(_COMPILE_EVENTS.values(), 0.0)
_COMPILE_LISTENING = []


def compile_seconds() -> dict[str, float]:
  """Seconds this process has spent tracing, lowering and XLA-compiling so far.

  Summed from ``jax.monitoring`` duration events (the listener is installed on the first call,
  so call it once before the work to be accounted). A benchmark's share of compilation is the
  difference of two calls; ``python -m benchmarks`` records it beside the elapsed time.
  """
  if not _COMPILE_LISTENING:
    def listen(event: str, duration: float, **_: Any) -> None:
      if event in _COMPILE_EVENTS:
        _COMPILE_SECONDS[_COMPILE_EVENTS[event]] += duration
    jax.monitoring.register_event_duration_secs_listener(listen)
    _COMPILE_LISTENING.append(listen)
  return dict(_COMPILE_SECONDS)


def block(tree: Any) -> Any:
  """Waits for every array in ``tree``; non-JAX leaves pass through."""
  return jax.tree.map(lambda x: x.block_until_ready() if isinstance(x, jax.Array) else x, tree)


def timeit(fn: Callable[..., Any], *args: Any, repeats: int = 5, warmup: bool = True,
           **kwargs: Any) -> Timing:
  """Times ``fn(*args, **kwargs)``: one first call (compilation), then the median of ``repeats``.

  Every call is followed by ``block_until_ready`` on its outputs, so asynchronous dispatch
  is not mistaken for speed. ``warmup=False`` skips the separate first call (for baselines
  with nothing to compile and a long run time); the first repeat then stands in for it.
  """
  if repeats < 1:
    raise ValueError(f"repeats must be >= 1, got {repeats}")
  first = None
  if warmup:
    t0 = time.perf_counter()
    block(fn(*args, **kwargs))
    first = time.perf_counter() - t0
  runs = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    block(fn(*args, **kwargs))
    runs.append(time.perf_counter() - t0)
  first = runs[0] if first is None else first
  return Timing(first_call_s=first, median_s=statistics.median(runs), runs_s=tuple(runs))


def compile_and_run(jitted: Any, *args: Any, compiler_options: dict[str, Any] | None = None
                    ) -> tuple[Any, dict[str, float]]:
  """Compiles ``jitted`` (a ``jax.jit`` function) for ``args`` ahead of time, then runs it once.

  For one-shot experiments whose single compiled call is the whole run: returns the outputs
  and ``{"compile_s", "compile_cpu_s", "run_s", "run_cpu_s"}`` (wall and process CPU time of
  the compilation and of the run apart).
  """
  t0, c0 = time.perf_counter(), time.process_time()
  compiled = jitted.lower(*args).compile(compiler_options=compiler_options)
  compile_s, compile_cpu_s = time.perf_counter() - t0, time.process_time() - c0
  t0, c0 = time.perf_counter(), time.process_time()
  out = block(compiled(*args))
  return out, {"compile_s": compile_s, "compile_cpu_s": compile_cpu_s,
               "run_s": time.perf_counter() - t0, "run_cpu_s": time.process_time() - c0}


@dataclasses.dataclass
class Claim:
  """One row of the summary table: what the paper claims, its number, ours, and the outcome.

  Attributes:
    claim: the statement, the same text in every mode (a full run's number is found by it).
    paper: the paper's number or bound.
    ours: our number.
    holds: True (holds), False (does not hold: say why in ``reason``), or None (a number that is
      reported, not judged).
    reason: why it does not hold, or why this mode cannot judge it.
    judged: False when this mode cannot judge the claim (quick mode too short); ``holds`` is
      then ignored and the writer fills ``last_full`` from the last full run.
    last_full: our number in the last full run (filled by :func:`write_result`).
  """

  claim: str
  paper: str
  ours: str
  holds: bool | None
  reason: str = ""
  judged: bool = True
  last_full: str = ""

  @property
  def outcome(self) -> str:
    """``yes``, ``NO``, ``-`` (reported) or ``not judged``, with the reason when there is one."""
    if not self.judged:
      word = "not judged"
    else:
      word = {True: "yes", False: "NO", None: "-"}[self.holds]
    return f"{word}: {self.reason}" if self.reason and word != "yes" else word

  @property
  def ours_shown(self) -> str:
    """Ours, and beside it the last full run's number for a claim this mode did not judge."""
    if self.judged:
      return self.ours
    return f"{self.ours} (last full run: {self.last_full or 'none recorded'})"


@dataclasses.dataclass
class Report:
  """What ``report(config, exp, times)`` returns: the prose and pictures of a result.

  Attributes:
    tables: markdown tables (with the paper's numbers beside ours), in order.
    notes: free text for the markdown file, formatted from a module-level template.
    figure: a matplotlib figure redrawing the paper's figure, or None.
    headline: one paragraph for the README's paper table, formatted from a template.
  """

  tables: list[str] = dataclasses.field(default_factory=list)
  notes: str = ""
  figure: Any = None
  headline: str = ""


@dataclasses.dataclass
class Result:
  """What a benchmark run produced (built by :func:`run_benchmark` or the runner).

  Attributes:
    name: the benchmark's name (its module name).
    paper: the paper reproduced, one line.
    claims: the rows for the summary table.
    tables: markdown tables (with the paper's numbers beside ours), in order.
    data: everything machine-readable (timings, curves, configuration); JSON-serialisable
      after :func:`to_jsonable`.
    figure: a matplotlib figure redrawing the paper's figure, or None.
    notes: free text for the markdown file (setup, caveats, what differs from the paper).
    headline: the README paragraph ("": the README keeps the text in ``_readme.py``).
  """

  name: str
  paper: str
  claims: list[Claim]
  tables: list[str] = dataclasses.field(default_factory=list)
  data: dict[str, Any] = dataclasses.field(default_factory=dict)
  figure: Any = None
  notes: str = ""
  headline: str = ""


def config(module: Any, mode: str) -> dict[str, Any]:
  """``module.CONFIGS[mode]`` with ``"mode"`` set; unknown modes raise ``ValueError``."""
  if mode not in MODES:
    raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
  return {**module.CONFIGS[mode], "mode": mode}


def run_timings(module: Any, mode: str) -> dict[str, Any]:
  """The module's ``timings(config)``, or ``{}`` if it has none."""
  timings = getattr(module, "timings", None)
  return {} if timings is None else timings(config(module, mode))


def finish(module: Any, mode: str, exp: dict[str, Any], times: dict[str, Any]) -> Result:
  """Claims and report from the experiment's and the timings' outputs."""
  cfg = config(module, mode)
  rep = module.report(cfg, exp, times)
  return Result(name=module.__name__.rpartition(".")[2], paper=module.PAPER,
                claims=module.claims(cfg, exp, times),
                tables=rep.tables, figure=rep.figure, notes=rep.notes, headline=rep.headline,
                data={"config": cfg, "experiment": exp, "timings": times})


def run_benchmark(module: Any, mode: str) -> Result:
  """Runs every phase of one benchmark in this process (the test suite's smoke runs)."""
  exp = module.experiment(config(module, mode))
  return finish(module, mode, exp, run_timings(module, mode))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A GitHub markdown table; floats are written with 4 significant digits."""

  def cell(v: Any) -> str:
    if isinstance(v, bool) or v is None:
      return {True: "yes", False: "NO", None: "-"}[v]
    if isinstance(v, (float, np.floating)):
      return f"{v:.4g}"
    return str(v).replace("|", "\\|")  # a literal | (norms) must not split the cell

  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
  return "\n".join(lines)


def to_jsonable(obj: Any) -> Any:
  """Converts arrays, NumPy scalars, dataclasses and tuples into plain JSON values."""
  if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
    return to_jsonable(dataclasses.asdict(obj))
  if isinstance(obj, dict):
    return {str(k): to_jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [to_jsonable(v) for v in obj]
  if isinstance(obj, (jax.Array, np.ndarray)):
    return to_jsonable(np.asarray(obj).tolist())
  if isinstance(obj, (np.floating, float)):
    f = float(obj)
    return f if math.isfinite(f) else str(f)
  if isinstance(obj, (np.integer,)):
    return int(obj)
  if isinstance(obj, (np.bool_,)):
    return bool(obj)
  return obj


def claims_table(claims: Sequence[Claim]) -> str:
  return markdown_table(["claim", "paper", "ours", "holds?"],
                        [(c.claim, c.paper, c.ours_shown, c.outcome) for c in claims])


def record_mode(payload: dict[str, Any]) -> str:
  """The mode of a ``NAME.json`` record (records before modes had only ``quick``)."""
  return payload.get("mode") or ("quick" if payload.get("quick") else "full")


def full_record(payload: dict[str, Any] | None) -> dict[str, Any] | None:
  """The last full run in a ``NAME.json`` record: itself if full, else the one it keeps."""
  if not payload:
    return None
  return payload if record_mode(payload) == "full" else payload.get("full_record")


def read_record(results_dir: pathlib.Path, name: str) -> dict[str, Any] | None:
  try:
    return json.loads((results_dir / f"{name}.json").read_text())
  except (OSError, ValueError):
    return None


def write_result(result: Result, results_dir: pathlib.Path = RESULTS_DIR,
                 mode: str = "full", elapsed_s: float | None = None,
                 cost: dict[str, float] | None = None,
                 env: dict[str, Any] | None = None) -> dict[str, pathlib.Path]:
  """Writes ``NAME.json``, ``NAME.md`` and (if there is a figure) ``NAME.png``.

  A run that is not full keeps the previous file's full record (claims, headline, time) as
  ``full_record``, and fills each unjudged claim's ``last_full`` from it. ``elapsed_s`` is the
  benchmark's whole run time; ``cost`` breaks it down (``cpu_s``: process CPU seconds;
  ``trace_s``, ``lower_s``, ``compile_s``: JAX tracing, lowering, XLA compilation). ``env`` is
  the environment the run saw (default: this process's).
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
  results_dir.mkdir(parents=True, exist_ok=True)
  env = environment() if env is None else env
  paths = {"json": results_dir / f"{result.name}.json", "md": results_dir / f"{result.name}.md"}
  full = None if mode == "full" else full_record(read_record(results_dir, result.name))
  if full:
    full = {k: full.get(k) for k in ("date", "elapsed_s", "claims", "headline", "environment")}
    by_claim = {c["claim"]: c["ours"] for c in full.get("claims") or []}
    for c in result.claims:
      if not c.judged:
        c.last_full = by_claim.get(c.claim, "")
  payload = {
      "name": result.name,
      "paper": result.paper,
      "mode": mode,
      "date": datetime.date.today().isoformat(),
      "elapsed_s": elapsed_s,
      "cost": cost,
      "claims": result.claims,
      "headline": result.headline,
      "data": result.data,
      "environment": env,
  }
  if full:
    payload["full_record"] = full
  paths["json"].write_text(json.dumps(to_jsonable(payload), indent=1) + "\n")
  md = [f"# {result.name}", "", f"Paper: {result.paper}", "",
        f"Mode: {mode}; {environment_line(env)}" +
        ("" if elapsed_s is None else f"; ran in {elapsed_s:.0f} s") +
        ("" if not cost else f" ({cost['cpu_s']:.0f} s CPU, of which XLA compilation "
                             f"{cost['compile_s']:.0f} s)"), "",
        "## Claims", "", claims_table(result.claims), ""]
  for table in result.tables:
    md += [table, ""]
  if result.notes:
    md += ["## Notes", "", result.notes.strip(), ""]
  if result.figure is not None:
    paths["png"] = results_dir / f"{result.name}.png"
    result.figure.savefig(paths["png"], dpi=110, bbox_inches="tight")
    md += [f"![{result.name}]({result.name}.png)", ""]
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    plt.close(result.figure)
  paths["md"].write_text("\n".join(md))
  return paths


def environment() -> dict[str, Any]:
  import platform  # pylint: disable=g-import-not-at-top
  return {
      "jax": jax.__version__,
      "backend": jax.default_backend(),
      "devices": jax.device_count(),
      "device_kind": jax.devices()[0].device_kind,
      "python": platform.python_version(),
      "machine": platform.machine(),
      "cpus": os.cpu_count(),
  }


def environment_line(env: dict[str, Any] | None = None) -> str:
  e = environment() if env is None else env
  return (f"jax {e['jax']} on {e['backend']} ({e['device_kind']}, {e['devices']} devices), "
          f"{e['cpus']} CPUs, Python {e['python']}")
