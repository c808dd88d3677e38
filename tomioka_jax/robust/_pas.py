"""Periodic adversarial scheduling (PAS): epsilon and learning-rate schedules, adversarial
training on the core trainers, end-of-cycle snapshot ensembles.

Liu, Salzmann, Lin, Tomioka, Süsstrunk, "On the Loss Landscape of Adversarial Training:
Identifying Challenges and How to Overcome Them", NeurIPS 2020 (arXiv 2006.08403); schedules
as in liuchen11/AdversaryLossLandscape ``util/seq_parser.py``.

Training is split into cycles at checkpoints ``0 = c_0 < c_1 < ... < c_K`` (epochs). In each
cycle the adversarial budget warms up from ``eps_min`` (0):

  cosine:  eps(x) = min(eps_min + (eps_max - eps_min) (1 - cos(pi r)) / 2, eps_target),
  linear:  eps(x) = min(eps_min + slope r, eps_target),   r = (x - c_k) / (c_{k+1} - c_k),

for ``c_k <= x < c_{k+1}``; with ``eps_max = 2 eps_target`` the cosine ramp reaches the target
at mid-cycle (``r = 1/2``) and is clipped there. The learning rate is periodic too
(``cycle_jump``: multiplied by ``power`` at each fraction ``d`` of the current cycle passed;
``cos_cycle_jump``: a cosine from ``up`` to ``low`` every ``cycle_freq`` epochs). The PGD step
is a fixed fraction of the current eps (the reference's ``adjust_threshold``). The models at
the ends of the cycles are kept and ensembled by averaging their softmax outputs
(``run/test_ensemble.py``).

Every schedule is a pure ``jax.numpy`` function of the (fractional) epoch ``x``, usable under
``jit``; :func:`optax_schedule` turns one into an optax schedule of the update count. Where the
reference is undefined (``x`` exactly at the last checkpoint, where its loop finds no interval)
the schedules take the limit from the left (``r = 1``).
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from tomioka_jax import core
from tomioka_jax.robust import _attacks as attacks

Schedule = Callable[[Any], jax.Array]


# --------------------------------------------------------------------------- schedules


def _checkpoints(ckpts: Sequence[float], prepend_zero: bool = True) -> np.ndarray:
  c = np.sort(np.asarray(list(ckpts), np.float64))
  if c.size == 0 or not np.all(np.isfinite(c)):
    raise ValueError(f"ckpts must be a non-empty sequence of finite epochs, got ckpts={ckpts!r}")
  if prepend_zero and c[0] > 0:
    c = np.concatenate([[0.0], c])
  if c.size < 2 or np.any(np.diff(c) <= 0):
    raise ValueError(f"ckpts must hold distinct epochs that make at least one cycle, got "
                     f"ckpts={ckpts!r}")
  return c


def cycle_ratio(x: Any, ckpts: Sequence[float], prepend_zero: bool = True) -> jax.Array:
  """``r = (x - c_k) / (c_{k+1} - c_k)`` for ``c_k <= x < c_{k+1}``; 0 before ``c_0``, 1 from
  ``c_K`` on. ``ckpts`` are sorted and, as in the reference's warm-ups, start at 0."""
  c = jnp.asarray(_checkpoints(ckpts, prepend_zero), jnp.float32)
  x = jnp.asarray(x, jnp.float32)
  k = jnp.clip(jnp.searchsorted(c, x, side="right") - 1, 0, c.shape[0] - 2)
  r = (x - c[k]) / (c[k + 1] - c[k])
  return jnp.clip(r, 0.0, 1.0)


def _clip(v, min_value, max_value):
  return jnp.clip(v, min_value, max_value)


def constant_schedule(x: Any, *, value: float, min_value: float = -np.inf,
             max_value: float = np.inf) -> jax.Array:
  """``y = value`` (clipped)."""
  return _clip(jnp.full(jnp.shape(x), value, jnp.float32), min_value, max_value)


def linear_schedule(x: Any, *, start: float, slope: float, min_value: float = -np.inf,
           max_value: float = np.inf) -> jax.Array:
  """``y = start + slope x`` (clipped): the reference's ``linear``."""
  return _clip(start + slope * jnp.asarray(x, jnp.float32), min_value, max_value)


def cycle_linear(x: Any, *, ckpts: Sequence[float], start: float, slope: float,
                 min_value: float = -np.inf, max_value: float = np.inf) -> jax.Array:
  """``y = start + slope r`` with the cycle ratio ``r`` (clipped): linear warm-up per cycle."""
  return _clip(start + slope * cycle_ratio(x, ckpts), min_value, max_value)


def cycle_cos(x: Any, *, ckpts: Sequence[float], eps_min: float, eps_max: float,
              min_value: float = -np.inf, max_value: float = np.inf) -> jax.Array:
  """``y = eps_min + (eps_max - eps_min)(1 - cos(pi r)) / 2`` (clipped): cosine warm-up.

  With ``max_value`` the target eps and ``eps_max = 2 max_value``, ``y`` reaches the target at
  mid-cycle and stays there to the cycle's end.
  """
  r = cycle_ratio(x, ckpts)
  return _clip(eps_min + 0.5 * (eps_max - eps_min) * (1.0 - jnp.cos(jnp.pi * r)), min_value,
               max_value)


def step_decay(x: Any, *, start: float, drops: Sequence[float], factor: float = 0.1,
               min_value: float = -np.inf, max_value: float = np.inf) -> jax.Array:
  """``y = start factor^{#{d in drops : x >= d}}``: the plain step schedule (x0.1 at 100, 150)."""
  d = jnp.asarray(np.sort(np.asarray(list(drops), np.float32)))
  x = jnp.asarray(x, jnp.float32)
  n = jnp.sum(x[..., None] >= jnp.reshape(d, (1,) * x.ndim + d.shape), axis=-1)
  return _clip(start * jnp.asarray(factor, jnp.float32) ** n, min_value, max_value)


def cycle_jump(x: Any, *, ckpts: Sequence[float], start: float, power: float,
               drop_points: Sequence[float], min_value: float = -np.inf,
               max_value: float = np.inf) -> jax.Array:
  """``y = start power^{#{d in drop_points : r >= d}}`` with ``r`` the ratio in the current cycle.

  The periodic step schedule: restarts at ``start`` at every checkpoint. ``ckpts`` are taken as
  given (the reference does not prepend 0 here); past the last checkpoint ``r = 1``.
  """
  r = cycle_ratio(x, ckpts, prepend_zero=False)
  d = jnp.asarray(np.sort(np.asarray(list(drop_points), np.float32)))
  n = jnp.sum(r[..., None] >= jnp.reshape(d, (1,) * r.ndim + d.shape), axis=-1)
  return _clip(start * jnp.asarray(power, jnp.float32) ** n, min_value, max_value)


def cos_cycle_jump(x: Any, *, low: float, up: float, cycle_freq: float,
                   min_jump_pt: float = 0.0, min_value: float = -np.inf,
                   max_value: float = np.inf) -> jax.Array:
  """``y = (cos(pi (max(x - m, 0) mod T) / T) + 1)(up - low) / 2 + low``: periodic cosine."""
  if not cycle_freq > 0:
    raise ValueError(f"cycle_freq must be positive, got cycle_freq={cycle_freq!r}")
  t = jnp.mod(jnp.maximum(jnp.asarray(x, jnp.float32) - min_jump_pt, 0.0), cycle_freq)
  return _clip((jnp.cos(t / cycle_freq * jnp.pi) + 1.0) * (up - low) / 2.0 + low, min_value,
               max_value)


def optax_schedule(schedule: Schedule, steps_per_epoch: int, *,
                   per_batch: bool = False) -> optax.Schedule:
  """The optax schedule ``count -> schedule(epoch)`` of a function of the epoch.

  ``epoch = count // steps_per_epoch`` (the reference's default, updated per epoch) or, with
  ``per_batch``, the fractional ``count / steps_per_epoch``.
  """
  if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, (int, np.integer)) \
      or steps_per_epoch < 1:
    raise ValueError(f"steps_per_epoch must be a positive integer, got "
                     f"steps_per_epoch={steps_per_epoch!r}")

  def fn(count):
    count = jnp.asarray(count, jnp.float32)
    epoch = count / steps_per_epoch if per_batch else jnp.floor(count / steps_per_epoch)
    return schedule(epoch)

  return fn


def pas_eps_schedule(target: float, *, ckpts: Sequence[float], warmup: str = "cosine",
                     ratio: float = 2.0) -> Schedule:
  """The paper's epsilon schedule: ``warmup`` in {"const", "linear", "cosine"} per cycle.

  ``cosine``: :func:`cycle_cos` from 0 to ``eps_max = ratio target`` clipped at ``target``;
  ``linear``: :func:`cycle_linear` with slope ``ratio target`` clipped at ``target``;
  ``const``: ``target`` throughout (vanilla adversarial training).
  """
  if not target > 0:
    raise ValueError(f"target must be positive, got target={target!r}")
  if not ratio >= 1:
    raise ValueError(f"ratio (eps_max / target) must be at least 1, got ratio={ratio!r}")
  _checkpoints(ckpts)
  if warmup == "const":
    return lambda x: constant_schedule(x, value=target)
  if warmup == "linear":
    return lambda x: cycle_linear(x, ckpts=ckpts, start=0.0, slope=ratio * target,
                                  max_value=target)
  if warmup == "cosine":
    return lambda x: cycle_cos(x, ckpts=ckpts, eps_min=0.0, eps_max=ratio * target,
                               max_value=target)
  raise ValueError(f"warmup must be one of ('const', 'linear', 'cosine'), got warmup={warmup!r}")


# --------------------------------------------------------------------------- training


def make_adversarial_loss(*, norm: str = "linf", steps: int = 10, step_ratio: float = 0.25,
                          random_start: bool = True, lower: Any = 0.0, upper: Any = 1.0,
                          unroll: bool | int = 1) -> Callable:
  """Adversarial training's loss for the core trainers: ``loss_fn(model, batch, rng)``.

  ``batch = {"x", "y", "eps"}`` with ``eps`` one budget per example, shape ``(n,)`` (the PAS
  trainer writes the schedule's current value there). The inner maximization is
  :func:`attacks.pgd` with step ``step_ratio * eps`` (the reference keeps the step-to-budget
  ratio fixed while eps changes; 1/4 is its CIFAR-10 ratio) and a random start within one
  step; the outer loss is the mean cross-entropy at the attack's points (no gradient through
  the attack). At ``eps = 0`` the attack returns the clean batch. ``unroll`` is the attack's
  (:func:`attacks.pgd`): ``True`` for CNNs trained on a CPU.

  Returns:
    ``loss_fn(model, batch, rng) -> (loss, {"accuracy": adversarial accuracy, "eps": mean})``.
  """
  attacks.check_norm(norm)
  attacks.check_positive_int("steps", steps)
  if not step_ratio > 0:
    raise ValueError(f"step_ratio must be positive, got step_ratio={step_ratio!r}")

  def loss_fn(model: nnx.Module, batch: dict, rng: jax.Array):
    x, y = batch["x"], batch["y"]
    eps = jnp.reshape(batch["eps"], (x.shape[0],) + (1,) * (x.ndim - 1)).astype(x.dtype)
    x_adv = attacks.pgd(model, x, y, rng, eps=eps, norm=norm, steps=steps,
                        step_size=step_ratio * eps, random_start=random_start, lower=lower,
                        upper=upper, unroll=unroll)
    x_adv = jax.lax.stop_gradient(x_adv)
    logits = model(x_adv)
    loss = jnp.mean(attacks.logit_cross_entropy(logits, y))
    acc = jnp.mean((jnp.argmax(logits, -1) == y).astype(jnp.float32))
    return loss, {"accuracy": acc, "eps": jnp.mean(batch["eps"])}

  return loss_fn


def make_pas_trainer(graphdef: nnx.GraphDef, loss_fn: Callable,
                     optimizer: optax.GradientTransformation, *, eps_schedule: Schedule,
                     batch_size: int, epochs: int, snapshot_epochs: Sequence[int] = (),
                     evaluate: Callable[[core.TrainState], dict] | None = None) -> Callable:
  """Adversarial training with an epsilon schedule, as one compiled function.

  Epoch ``e`` (from 0) runs one epoch of :func:`core.make_scan_trainer` on the data with
  ``data["eps"] = eps_schedule(e)`` for every example (the reference updates eps per epoch);
  the learning rate follows the optimizer's own (optax) schedule, e.g. :func:`optax_schedule`.
  The parameters after epoch ``e`` are kept when ``e + 1`` is in ``snapshot_epochs`` (the
  reference saves ``model_{e+1}.ckpt``): the end-of-cycle models of PAS.

  Returns:
    ``train(state, data, key) -> (state, metrics, snapshots)``: ``metrics`` per epoch (leading
    axis ``epochs``, with ``eps``), ``snapshots`` the parameters stacked along a leading axis
    in the order of ``snapshot_epochs`` (``None`` when there are none). ``jax.vmap``-able.
  """
  core_check = [int(e) for e in snapshot_epochs]
  if any(e < 1 or e > epochs for e in core_check) or len(set(core_check)) != len(core_check):
    raise ValueError(f"snapshot_epochs must be distinct epochs in [1, {epochs}], got "
                     f"snapshot_epochs={tuple(snapshot_epochs)!r}")
  inner = core.make_scan_trainer(graphdef, loss_fn, optimizer, batch_size=batch_size, epochs=1,
                                 evaluate=evaluate)
  slot = np.full(epochs, -1, np.int32)
  for i, e in enumerate(core_check):
    slot[e - 1] = i
  num_snaps = len(core_check)

  @jax.jit
  def train(state: core.TrainState, data: dict, key: jax.Array):
    n = jax.tree.leaves(data)[0].shape[0]
    snaps0 = (jax.tree.map(lambda p: jnp.zeros((num_snaps,) + p.shape, p.dtype), state.params)
              if num_snaps else None)

    def epoch(carry, inputs):
      state, snaps = carry
      e, k, s = inputs
      eps = jnp.asarray(eps_schedule(e.astype(jnp.float32)), jnp.float32)
      state, metrics = inner(state, {**data, "eps": jnp.full((n,), eps)}, k)
      metrics = {**jax.tree.map(lambda m: m[0], metrics), "eps": eps}
      if num_snaps:
        snaps = jax.tree.map(
            lambda a, p: jnp.where(s >= 0, a.at[jnp.maximum(s, 0)].set(p), a), snaps,
            state.params)
      return (state, snaps), metrics

    xs = (jnp.arange(epochs), jax.random.split(key, epochs), jnp.asarray(slot))
    (state, snaps), metrics = jax.lax.scan(epoch, (state, snaps0), xs)
    return state, metrics, snaps

  return train


def fit_pas(graphdef: nnx.GraphDef, state: core.TrainState, loss_fn: Callable,
            optimizer: optax.GradientTransformation, data: dict, *, eps_schedule: Schedule,
            batch_size: int, epochs: int, snapshot_epochs: Sequence[int] = (), seed: int = 0,
            workdir: str | None = None, checkpoint_every: int | None = None,
            progress: bool = True) -> tuple[core.TrainState, Any, list[dict[str, float]]]:
  """The training of :func:`make_pas_trainer` as a long run stepped from Python (``core.fit``).

  Epoch ``e`` (from 0) visits the examples of ``data`` (host arrays with a leading example
  axis) in the order ``numpy.random.default_rng((seed, e)).permutation(n)``, in
  ``n // batch_size`` batches that carry ``eps = eps_schedule(e)`` for every example (the
  batch key ``"eps"``, as :func:`make_adversarial_loss` reads it); the learning rate follows the
  optimizer's own schedule. Each step is one compiled call of ``core.make_train_step``, so
  nothing runs inside a loop body: use this for CNNs on XLA:CPU (see :mod:`attacks`: a
  convolution in a loop body runs ~10x slower there) and for runs too long for one compiled
  function. With a ``workdir`` the run writes ``metrics.jsonl``, checkpoints every
  ``checkpoint_every`` steps and at each snapshot epoch, keeps the end-of-cycle parameters as
  ``snapshot_<epoch>.npz``, and a second call with the same arguments resumes where the first
  stopped (``core.fit``'s checkpoints).

  Args:
    graphdef, state: from :func:`core.create_train_state` (``state.step`` 0 for a fresh run).
    loss_fn: e.g. :func:`make_adversarial_loss` (with ``unroll=True`` for a CNN on a CPU).
    optimizer: the optax transformation ``state`` was created with.
    data: ``{"x": (n, ...), "y": (n,)}`` (NumPy or JAX arrays; more keys are batched alike).
    eps_schedule: ``eps_schedule(epoch) -> eps`` (e.g. :func:`pas_eps_schedule`).
    batch_size, epochs: as :func:`make_pas_trainer`.
    snapshot_epochs: keep the parameters after these epochs (``e`` = after ``e`` epochs).
    seed: the seed of the epoch permutations.
    workdir, checkpoint_every: as ``core.fit`` (``checkpoint_every`` needs a ``workdir``).
    progress: a progress bar per segment between snapshots.

  Returns:
    ``(state, snapshots, history)``: the final state, the snapshot parameters stacked along a
    leading axis in the order of ``snapshot_epochs`` (``None`` without snapshots), and one dict
    per step (``step``, ``loss``, the loss function's metrics, ``steps_per_s``).

  Raises:
    ValueError: bad ``batch_size``/``epochs``/``snapshot_epochs``, fewer examples than one
      batch, data arrays of different lengths.
  """
  for name, value in (("batch_size", batch_size), ("epochs", epochs)):
    attacks.check_positive_int(name, value)
  snaps_at = [int(e) for e in snapshot_epochs]
  if any(e < 1 or e > epochs for e in snaps_at) or len(set(snaps_at)) != len(snaps_at):
    raise ValueError(f"snapshot_epochs must be distinct epochs in [1, {epochs}], got "
                     f"snapshot_epochs={tuple(snapshot_epochs)!r}")
  lengths = {k: len(v) for k, v in data.items()}
  n = min(lengths.values()) if lengths else 0
  if len(set(lengths.values())) != 1:
    raise ValueError(f"data arrays must share their first dimension, got lengths {lengths}")
  if n < batch_size:
    raise ValueError(f"data holds {n} examples, fewer than one batch (batch_size={batch_size})")
  host = {k: np.asarray(v) for k, v in data.items()}
  steps_per_epoch = n // batch_size
  eps_values = np.asarray([float(eps_schedule(jnp.float32(e))) for e in range(epochs)],
                          np.float32)
  perm: dict[int, np.ndarray] = {}

  def batches(step: int) -> dict:
    e, i = divmod(step, steps_per_epoch)
    if e not in perm:
      perm.clear()
      perm[e] = np.random.default_rng((seed, e)).permutation(n)
    idx = perm[e][i * batch_size:(i + 1) * batch_size]
    batch = {k: v[idx] for k, v in host.items()}
    batch["eps"] = np.full((batch_size,), eps_values[e], np.float32)
    return batch

  train_step = core.make_train_step(graphdef, loss_fn, optimizer)
  folder = None if workdir is None else pathlib.Path(workdir)
  treedef = jax.tree.structure(state.params)
  snapshots, history = {}, []
  for end in sorted(set(snaps_at) | {epochs}):
    path = None if folder is None else folder / f"snapshot_{end}.npz"
    if path is not None and path.exists() and end != epochs:
      with np.load(path) as saved:
        snapshots[end] = jax.tree.unflatten(treedef, [saved[f"a{i}"]
                                                      for i in range(treedef.num_leaves)])
      continue
    result = core.fit(train_step, state, batches, end * steps_per_epoch, workdir=workdir,
                      checkpoint_every=checkpoint_every, progress=progress)
    state = result.state
    history = result.history if folder is not None else history + result.history
    if end in snaps_at:
      snapshots[end] = state.params
      if path is not None:
        np.savez(path, **{f"a{i}": np.asarray(leaf)
                          for i, leaf in enumerate(jax.tree.leaves(state.params))})
  stacked = (jax.tree.map(lambda *p: jnp.stack(p), *[snapshots[e] for e in snaps_at])
             if snaps_at else None)
  return state, stacked, history


def ensemble_logits(graphdef: nnx.GraphDef, snapshots: Any, model_state: Any = None, *,
                    average: str = "softmax") -> Callable[[jax.Array], jax.Array]:
  """The snapshot ensemble as a logits function ``x -> logits`` (usable by the attacks).

  ``snapshots`` are parameters stacked along a leading axis (:func:`make_pas_trainer`'s).
  ``average="softmax"``: ``log((1/M) sum_m softmax(f_m(x)))``, the log of the mean predicted
  distribution (the reference's ensemble; its softmax is the mean of the members'), which an
  attack on the ensemble differentiates as the reference does (``-log`` mean probability of
  the label). ``average="logits"``: the mean of the members' logits.
  """
  if average not in ("softmax", "logits"):
    raise ValueError(f"average must be 'softmax' or 'logits', got average={average!r}")
  if model_state is None:
    model_state = nnx.State({})

  def member(params, x):
    return nnx.merge(graphdef, params, model_state)(x)

  def logits_fn(x):
    z = jax.vmap(member, in_axes=(0, None))(snapshots, x)
    if average == "logits":
      return jnp.mean(z, axis=0)
    m = z.shape[0]
    return jax.nn.logsumexp(jax.nn.log_softmax(z, axis=-1), axis=0) - jnp.log(m)

  return logits_fn
