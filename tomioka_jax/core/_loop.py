"""The ``fit`` loop: progress bar, JSON-lines metrics, periodic evaluation, resumable checkpoints.

Resuming is exact. The batch for step ``t`` is a pure function of ``t`` (``batches(t)``, see
:class:`tomioka_jax.data.Batches`), the train state carries its own PRNG key, and checkpoints
hold the whole state, so a run interrupted after its last checkpoint at step ``c`` and started
again replays steps ``c+1, ...`` exactly: on CPU it ends at bitwise the same parameters as a run
that was never interrupted. Metrics lines written after step ``c`` by the interrupted run are
dropped on resume, so ``metrics.jsonl`` never holds a step twice.
"""

from __future__ import annotations

import json
import logging
import pathlib
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from tqdm.auto import tqdm

from tomioka_jax.core._train import TrainState

Batch = Any
StepFn = Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]
EvalStepFn = Callable[[TrainState, Batch], dict[str, jax.Array]]
logger = logging.getLogger(__name__)
# With stderr not a terminal (a log file, a notebook's captured output) the progress bar
# redraws at most this often, so a 1000-step run writes a few lines, not 1000.
NON_TERMINAL_PROGRESS_INTERVAL_S = 30.0


class FitResult(NamedTuple):
  """What :func:`fit` returns.

  Attributes:
    state: the final train state.
    history: one dict per logged step (``step`` and the train metrics, averaged over the
      steps since the previous log line).
    evals: one dict per evaluation (``step`` and the evaluation metrics).
    resumed_from: the step restored from a checkpoint, or ``None`` for a fresh run.
  """

  state: TrainState
  history: list[dict[str, float]]
  evals: list[dict[str, float]]
  resumed_from: int | None


def _to_savable_leaf(x: Any) -> Any:
  if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    return jax.random.key_data(x)
  return x


def _to_savable(state: TrainState) -> dict[str, Any]:
  """A checkpointable pytree: typed PRNG keys become their raw key data."""
  return {f"{i:05d}": _to_savable_leaf(x) for i, x in enumerate(jax.tree.leaves(state))}


def _from_savable(saved: dict[str, Any], like: TrainState) -> TrainState:
  leaves, treedef = jax.tree.flatten(like)
  restored = []
  for i, ref in enumerate(leaves):
    x = saved[f"{i:05d}"]
    if isinstance(ref, jax.Array) and jax.dtypes.issubdtype(ref.dtype, jax.dtypes.prng_key):
      x = jax.random.wrap_key_data(x, impl=jax.random.key_impl(ref))
    restored.append(x)
  return jax.tree.unflatten(treedef, restored)


def _abstract(saved_like: dict[str, Any]) -> dict[str, Any]:
  def spec(x):
    sharding = x.sharding if isinstance(x, jax.Array) else None
    return jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x), sharding=sharding)
  return jax.tree.map(spec, saved_like)


class Checkpointer:
  """Orbax checkpoints of a :class:`TrainState` under ``directory``, keyed by step.

  Checkpoints are written asynchronously; :meth:`close` (or leaving a ``with`` block) waits
  for the last one. The state's pytree structure comes from the live state passed to
  :meth:`restore`, so the files hold only arrays.
  """

  def __init__(self, directory: str | pathlib.Path, *, max_to_keep: int | None = 3):
    self.directory = pathlib.Path(directory).absolute()
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, state: TrainState, *, force: bool = False) -> None:
    step = int(state.step)
    self._manager.save(step, args=ocp.args.StandardSave(_to_savable(state)), force=force)

  def restore(self, like: TrainState, step: int | None = None) -> TrainState:
    """Restores the checkpoint at ``step`` (default: latest) with the shardings of ``like``."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    target = _abstract(_to_savable(like))
    try:
      saved = self._manager.restore(step, args=ocp.args.StandardRestore(target))
    except (ValueError, KeyError, TypeError) as e:
      raise ValueError(
          f"the checkpoint at step {step} in {self.directory} does not fit this train state "
          f"(saved by a different model or optimizer?): {self._mismatch(like, step, e)}. "
          f"Use a fresh workdir, or build the model the checkpoint was saved from.") from e
    return _from_savable(saved, like)

  def _mismatch(self, like: TrainState, step: int, error: Exception) -> str:
    """The first differences between the saved arrays and ``like``'s, by state path."""
    try:
      meta = ocp.StandardCheckpointer().metadata(self.directory / str(step) / "default")
      meta = getattr(meta, "item_metadata", meta)
      saved = {k: (tuple(v.shape), str(v.dtype)) for k, v in dict(meta).items()}
    except Exception:  # pylint: disable=broad-except  # metadata layout is orbax's own
      return str(error).splitlines()[0]
    paths = jax.tree_util.tree_flatten_with_path(like)[0]
    ours = {f"{i:05d}": (jax.tree_util.keystr(path), np.shape(x),
                         str(jnp.result_type(_to_savable_leaf(x))))
            for i, (path, x) in enumerate(paths)}
    diffs = []
    if len(saved) != len(ours):
      diffs.append(f"the checkpoint holds {len(saved)} arrays, the state {len(ours)}")
    for key in sorted(set(saved) & set(ours)):
      name, shape, dtype = ours[key]
      if saved[key] != (tuple(shape), dtype):
        diffs.append(f"state{name}: saved {saved[key][0]} {saved[key][1]}, state "
                     f"{tuple(shape)} {dtype}")
    return "; ".join(diffs[:4]) or str(error).splitlines()[0]

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _read_metrics(path: pathlib.Path, upto_step: int) -> list[dict[str, Any]]:
  if not path.exists():
    return []
  kept = []
  for line in path.read_text().splitlines():
    if line.strip():
      record = json.loads(line)
      if record.get("step", 0) <= upto_step:
        kept.append(record)
  return kept


def _mean_metrics(acc: list[dict[str, jax.Array]]) -> dict[str, float]:
  stacked = jax.device_get(acc)
  return {k: float(np.mean([m[k] for m in stacked])) for k in stacked[0]}


def evaluate(eval_step: EvalStepFn, state: TrainState, batches: Iterable[Batch]) -> dict[
    str, float]:
  """Sums ``eval_step``'s per-batch sums over ``batches`` and divides by their ``count``."""
  totals: dict[str, Any] = {}
  for batch in batches:
    out = eval_step(state, batch)
    totals = out if not totals else jax.tree.map(jnp.add, totals, out)
  if not totals:
    raise ValueError("eval_batches yielded no batch")
  totals = jax.device_get(totals)
  if "count" not in totals:
    raise ValueError(f"eval_step must return a 'count' entry; got keys {sorted(totals)}")
  count = float(totals["count"])
  return {k: float(v) / count for k, v in totals.items() if k != "count"} | {"count": count}


def fit(train_step: StepFn, state: TrainState, batches: Callable[[int], Batch], num_steps: int,
        *, workdir: str | pathlib.Path | None = None, checkpoint_every: int | None = None,
        log_every: int = 1, eval_step: EvalStepFn | None = None,
        eval_batches: Callable[[], Iterable[Batch]] | None = None,
        eval_every: int | None = None, progress: bool = True,
        max_to_keep: int | None = 3) -> FitResult:
  """Trains ``state`` with ``train_step`` until ``state.step == num_steps``.

  Args:
    train_step: ``(state, batch) -> (state, metrics)``, e.g. from ``make_train_step``.
    state: the initial state; if ``workdir`` holds a checkpoint, the latest one replaces it
      (``state`` then only gives the structure and shardings).
    batches: ``batches(step) -> batch`` for the batch of update ``step`` (0-based); a pure
      function of ``step`` is what makes resumption exact.
    num_steps: the total number of updates (including those before a resume).
    workdir: where ``metrics.jsonl``, ``evals.jsonl`` and ``checkpoints/`` go; ``None`` keeps
      everything in memory.
    checkpoint_every: save every this many steps (and at the end); needs ``workdir``.
    log_every: average train metrics over this many steps per history/metrics line.
    eval_step, eval_batches, eval_every: evaluate with ``evaluate(eval_step, state,
      eval_batches())`` every ``eval_every`` steps and at the end.
    progress: show a tqdm progress bar (redrawn at most every
      ``NON_TERMINAL_PROGRESS_INTERVAL_S`` seconds when stderr is not a terminal).
    max_to_keep: checkpoints kept on disk.

  Returns:
    A :class:`FitResult`.

  Raises:
    ValueError: bad arguments, or ``workdir`` holds a checkpoint that does not fit ``state``
      (the message names the workdir and the first differing arrays).

  Resuming logs a warning (logger ``tomioka_jax.core._loop``) naming the step and workdir.
  """
  for name, value in (("num_steps", num_steps), ("log_every", log_every)):
    if not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"{name} must be a positive integer, got {value!r}")
  for name, value in (("checkpoint_every", checkpoint_every), ("eval_every", eval_every)):
    if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
      raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
  if checkpoint_every is not None and workdir is None:
    raise ValueError("checkpoint_every needs a workdir to write checkpoints to, got workdir=None")
  if (eval_step is None) != (eval_batches is None):
    raise ValueError("eval_step and eval_batches must be given together")

  workdir = None if workdir is None else pathlib.Path(workdir)
  checkpointer = None
  resumed_from = None
  history: list[dict[str, Any]] = []
  evals: list[dict[str, Any]] = []
  metrics_file = evals_file = None
  if workdir is not None:
    workdir.mkdir(parents=True, exist_ok=True)
    if checkpoint_every is not None:
      checkpointer = Checkpointer(workdir / "checkpoints", max_to_keep=max_to_keep)
      latest = checkpointer.latest_step()
      if latest is not None:
        # a checkpoint at the given state's own step is a continuation (e.g. robust.fit_pas
        # calling fit segment by segment), not a resume: no warning for it
        continuing = latest == int(state.step)
        state = checkpointer.restore(state, latest)
        resumed_from = latest
        logger.log(logging.INFO if continuing else logging.WARNING,
                   "fit: resuming from the checkpoint at step %d of %d in %s", latest, num_steps,
                   workdir)
    start = int(state.step)
    history = _read_metrics(workdir / "metrics.jsonl", start)
    evals = _read_metrics(workdir / "evals.jsonl", start)
    # With several processes (a shared workdir), process 0 alone writes the metrics files;
    # every process takes part in the checkpoints, as orbax requires.
    if jax.process_index() == 0:
      # Rewrite the files without the lines an interrupted run wrote after its checkpoint.
      for name, records in (("metrics.jsonl", history), ("evals.jsonl", evals)):
        (workdir / name).write_text("".join(json.dumps(r) + "\n" for r in records))
      metrics_file = open(workdir / "metrics.jsonl", "a", encoding="utf-8")
      evals_file = open(workdir / "evals.jsonl", "a", encoding="utf-8")

  def run_eval(state):
    record = {"step": int(state.step), **evaluate(eval_step, state, eval_batches())}
    evals.append(record)
    if evals_file is not None:
      evals_file.write(json.dumps(record) + "\n")
      evals_file.flush()
    return record

  start = int(state.step)
  terminal = sys.stderr.isatty()
  bar = tqdm(total=num_steps, initial=start, disable=not progress or jax.process_index() != 0,
             desc="fit", unit="step", dynamic_ncols=True,
             mininterval=0.1 if terminal else NON_TERMINAL_PROGRESS_INTERVAL_S)
  pending: list[dict[str, jax.Array]] = []
  t_last = time.perf_counter()
  try:
    for step in range(start, num_steps):
      state, metrics = train_step(state, batches(step))
      pending.append(metrics)
      done = step + 1
      if done % log_every == 0 or done == num_steps:
        record = {"step": done, **_mean_metrics(pending)}
        now = time.perf_counter()
        record["steps_per_s"] = len(pending) / max(now - t_last, 1e-12)
        t_last = now
        pending = []
        history.append(record)
        if metrics_file is not None:
          metrics_file.write(json.dumps(record) + "\n")
          metrics_file.flush()
        bar.set_postfix(loss=f"{record.get('loss', float('nan')):.4g}", refresh=False)
      if eval_step is not None and eval_every is not None and done % eval_every == 0 \
          and done != num_steps:
        run_eval(state)
      if checkpointer is not None and (done % checkpoint_every == 0 or done == num_steps):
        checkpointer.save(state)
      bar.update(1)
    if eval_step is not None and (not evals or evals[-1]["step"] != int(state.step)):
      run_eval(state)
  finally:
    bar.close()
    if checkpointer is not None:
      checkpointer.close()
    for f in (metrics_file, evals_file):
      if f is not None:
        f.close()
  return FitResult(state=state, history=history, evals=evals, resumed_from=resumed_from)


__all__ = ["fit", "evaluate", "FitResult", "Checkpointer"]
