"""The benchmark harness: timing, results, and the writers for ``benchmarks/results``.

Every benchmark module ``benchmarks/NAME.py`` defines

* ``PAPER``: the paper it reproduces (authors, year, arXiv id), one line;
* ``run(quick: bool) -> Result``: runs the experiment side by side with its baseline.

``python -m benchmarks`` calls ``run`` and then :func:`write_result`, which writes
``results/NAME.json`` (machine-readable), ``results/NAME.md`` (the tables, with the paper's
numbers beside ours) and ``results/NAME.png`` (the paper's figure, redrawn).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pathlib
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np

RESULTS_DIR = pathlib.Path(__file__).resolve().parent / "results"
# Set by ``python -m benchmarks --jobs N`` in each benchmark process: the directory through
# which :func:`exclusive` asks the runner to pause the other benchmarks.
CONTROL_ENV = "TOMIOKA_BENCHMARK_CONTROL"
_EXCLUSIVE_DEPTH = [0]


@contextlib.contextmanager
def exclusive(poll_s: float = 0.02) -> Iterator[None]:
  """Runs its body with the machine to this benchmark alone: for timings that decide a claim.

  Under ``python -m benchmarks --jobs N`` several benchmarks share the machine; on entry this
  asks the runner to pause the others (SIGSTOP) and waits until it has, and on exit lets them
  go on (SIGCONT). Requests from several benchmarks are served one at a time. Outside the
  runner, or nested, it does nothing. Keep the body to the timed work (compile before it).
  """
  control = os.environ.get(CONTROL_ENV)
  if not control or _EXCLUSIVE_DEPTH[0]:
    _EXCLUSIVE_DEPTH[0] += 1
    try:
      yield
    finally:
      _EXCLUSIVE_DEPTH[0] -= 1
    return
  request = pathlib.Path(control) / f"{os.getpid()}.request"
  granted = pathlib.Path(control) / f"{os.getpid()}.granted"
  request.touch()
  _EXCLUSIVE_DEPTH[0] += 1
  try:
    while not granted.exists():
      time.sleep(poll_s)
    yield
  finally:
    _EXCLUSIVE_DEPTH[0] -= 1
    request.unlink(missing_ok=True)


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
  """One row of the summary table: what the paper claims, its number, ours, and whether it holds.

  ``holds`` is ``None`` when the claim is reported but not checked (e.g. a timing on a
  different machine class).
  """

  claim: str
  paper: str
  ours: str
  holds: bool | None


@dataclasses.dataclass
class Result:
  """What a benchmark run produced.

  Attributes:
    name: the benchmark's name (its module name).
    paper: the paper reproduced, one line.
    claims: the rows for the summary table.
    tables: markdown tables (with the paper's numbers beside ours), in order.
    data: everything machine-readable (timings, curves, configuration); JSON-serialisable
      after :func:`to_jsonable`.
    figure: a matplotlib figure redrawing the paper's figure, or None.
    notes: free text for the markdown file (setup, caveats, what differs from the paper).
  """

  name: str
  paper: str
  claims: list[Claim]
  tables: list[str] = dataclasses.field(default_factory=list)
  data: dict[str, Any] = dataclasses.field(default_factory=dict)
  figure: Any = None
  notes: str = ""


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
                        [(c.claim, c.paper, c.ours, c.holds) for c in claims])


def write_result(result: Result, results_dir: pathlib.Path = RESULTS_DIR,
                 quick: bool = False, elapsed_s: float | None = None,
                 cost: dict[str, float] | None = None) -> dict[str, pathlib.Path]:
  """Writes ``NAME.json``, ``NAME.md`` and (if there is a figure) ``NAME.png``.

  ``elapsed_s`` is the benchmark's whole run time (compilation included), recorded for
  keeping ``--quick`` within its budget; ``cost`` breaks it down (``cpu_s``: process CPU
  seconds; ``trace_s``, ``lower_s``, ``compile_s``: JAX tracing, lowering, XLA compilation).
  """
  results_dir.mkdir(parents=True, exist_ok=True)
  paths = {"json": results_dir / f"{result.name}.json", "md": results_dir / f"{result.name}.md"}
  payload = {
      "name": result.name,
      "paper": result.paper,
      "quick": quick,
      "elapsed_s": elapsed_s,
      "cost": cost,
      "claims": result.claims,
      "data": result.data,
      "environment": environment(),
  }
  paths["json"].write_text(json.dumps(to_jsonable(payload), indent=1) + "\n")
  md = [f"# {result.name}", "", f"Paper: {result.paper}", "",
        f"Mode: {'--quick' if quick else 'full'}; {environment_line()}" +
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
      "cpus": __import__("os").cpu_count(),
  }


def environment_line() -> str:
  e = environment()
  return (f"jax {e['jax']} on {e['backend']} ({e['device_kind']}, {e['devices']} devices), "
          f"{e['cpus']} CPUs, Python {e['python']}")
