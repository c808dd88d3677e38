"""White-box evasion attacks: PGD (l_inf, l_2) and APGD (Croce & Hein 2020) in a box or a ball.

Every attack maximizes a per-example loss ``L(f(x'), y)`` of the logits ``f = logits_fn`` over
the threat set

  S(x) = {x' : ||x' - x|| <= eps} intersected with [lower, upper],

batched over the leading axis of ``x``. ``eps`` is a scalar or an array that broadcasts against
``x`` (NumPy rules): for ``norm="linf"`` a per-feature box ``|x'_i - x_i| <= eps_i`` (the boxes
certified by :mod:`._nonuniform` are of this kind; put a per-example radius as shape
``(n, 1, ..., 1)``); for ``norm="l2"`` one radius per example (shape ``()`` or ``(n, 1, ...,
1)``). ``lower`` / ``upper`` (the data range, e.g. 0 and 1) also broadcast; ``None`` means
unbounded.

Projections. The l_inf projection onto S(x) is exact: both sets are boxes, so clipping to
``[x - eps, x + eps]`` and then to ``[lower, upper]`` is the Euclidean projection onto their
intersection (when ``x`` lies in the data range). The l_2 step projects onto the ball and then
clips to the data range, as both reference implementations do; clipping coordinatewise towards
an interval that contains ``x_i`` never increases ``|x'_i - x_i|``, so the result stays inside
the ball (it is feasible, though not the exact projection onto the intersection).

PGD (Madry et al. 2018, as in liuchen11/AdversaryLossLandscape ``util/attack.py``):

  x^0 = P_S(x + u),  u ~ U[-a, a]^d            (random start within one step a)
  x^{t+1} = P_S(x^t + a sign(grad L(x^t)))     (l_inf)
  x^{t+1} = P_S(x^t + a grad L(x^t) / ||grad L(x^t)||_2)   (l_2)

returning the last iterate, as the reference does. The step ``a`` defaults to ``eps / 4``: the
reference fixes the ratio of step to radius (``adjust_threshold`` rescales the step with the
radius; CIFAR-10 uses 2/255 at 8/255) so the step follows the radius during an epsilon
schedule. The reference's convention that values >= 1 mean /255 is not copied: numbers are
taken literally.

APGD (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020; fra31/auto-attack ``autopgd_base.py``), for ``N`` steps:

  z^{k+1} = P_S(x^k + eta^k sign(grad L(x^k)))
  x^{k+1} = P_S(x^k + alpha (z^{k+1} - x^k) + (1 - alpha)(x^k - x^{k-1})),

with momentum ``alpha = 0.75`` (1 at the first step) and ``eta^0 = 2 eps``. At the checkpoints
``w_0 = 0``, ``w_{j+1} = w_j + max(p_{j+1} - p_j, p_min) N`` with the reference's integer
rounding (first period ``max(int(0.22 N), 1)``, each next one ``size_decr = max(int(0.03 N),
1)`` shorter, never below ``max(int(0.06 N), 1)``), the step of an example is halved when

  1. the loss increased in at most ``rho`` of the steps since the last checkpoint,
     ``sum_{i=w_{j-1}}^{w_j - 1} 1[L(x^{i+1}) > L(x^i)] <= rho (w_j - w_{j-1})``, or
  2. its step was not halved at the last checkpoint and the best loss has not improved since,

and the iterate restarts from the best point found so far (``x^{w_j} = x_best``, gradient
``grad L(x_best)``). The first step's comparison uses the loss at the starting point (the
reference indexes one row before its loss buffer there). Each restart draws a new random
starting point ``x + eps t / ||t||`` (``t`` uniform in the cube for l_inf, Gaussian for l_2).
The returned point of an example is a misclassified iterate if any restart found one (the first
such restart's, as the reference), and otherwise the highest-loss point over all restarts.

All loops are ``lax.scan`` / ``lax.fori_loop``: jit the caller. ``unroll=True`` unrolls an
attack's steps into straight-line code: on XLA:CPU a convolution inside a loop body runs about
ten times slower than the same convolution outside one (jax-ml/jax#12868; measured here: the
gradient of a 5x5 conv layer 11.8 ms in a scan body vs 1.1 ms at top level), so attacks on CNNs
that run on a CPU should unroll. The number of steps, the norm and the loss are static;
``eps`` and the step size may be traced (PAS changes them during
training). Hyperparameter checks run when the values are concrete; under ``jit`` the checks on
``eps`` and ``step_size`` are skipped, and ``eps = 0`` then simply returns ``x`` (the start of
an epsilon warm-up).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tomioka_jax import core

LogitsFn = Callable[[jax.Array], jax.Array]
LossName = str | Callable[[jax.Array, jax.Array], jax.Array]

NORMS = ("linf", "l2")


# --------------------------------------------------------------------------- losses


def logit_cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
  """Per-example softmax cross-entropy ``-log softmax(z)_y = logsumexp(z) - z_y``."""
  logits = jnp.asarray(logits)
  z_y = jnp.take_along_axis(logits, jnp.asarray(y)[:, None], axis=-1)[:, 0]
  return jax.nn.logsumexp(logits, axis=-1) - z_y


def margin_loss(logits: jax.Array, y: jax.Array) -> jax.Array:
  """Per-example Carlini-Wagner margin ``max_{j != y} z_j - z_y``: positive iff misclassified."""
  logits = jnp.asarray(logits)
  y = jnp.asarray(y)
  z_y = jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]
  others = jnp.where(jax.nn.one_hot(y, logits.shape[-1], dtype=bool), -jnp.inf, logits)
  return jnp.max(others, axis=-1) - z_y


def dlr_loss(logits: jax.Array, y: jax.Array) -> jax.Array:
  """Per-example difference-of-logits-ratio loss of Croce & Hein (2020), at least 3 classes.

  ``DLR = -(z_y - max_{j != y} z_j) / (z_(1) - z_(3) + 1e-12)`` with ``z_(1) >= z_(2) >= ...``
  the sorted logits; invariant to shifts and positive rescalings of the logits.
  """
  logits = jnp.asarray(logits)
  if logits.shape[-1] < 3:
    raise ValueError(f"dlr_loss needs at least 3 classes, got logits of shape {logits.shape}")
  top = jnp.sort(logits, axis=-1)[..., ::-1]
  return margin_loss(logits, y) / (top[..., 0] - top[..., 2] + 1e-12)


_LOSSES = {"ce": logit_cross_entropy, "margin": margin_loss, "dlr": dlr_loss}


def _loss_of(loss: LossName) -> Callable[[jax.Array, jax.Array], jax.Array]:
  if callable(loss):
    return loss
  if loss not in _LOSSES:
    raise ValueError(f"loss must be one of {tuple(_LOSSES)} or a callable (logits, y) -> "
                     f"per-example losses, got loss={loss!r}")
  return _LOSSES[loss]


def robust_accuracy(logits_fn: LogitsFn, x: jax.Array, y: jax.Array,
                    x_adv: jax.Array) -> jax.Array:
  """Fraction of examples classified correctly both at ``x`` and at the attack's ``x_adv``.

  A clean mistake counts as a successful attack (AutoAttack's convention).
  """
  y = jnp.asarray(y)
  clean = jnp.argmax(logits_fn(x), axis=-1) == y
  adv = jnp.argmax(logits_fn(x_adv), axis=-1) == y
  return jnp.mean((clean & adv).astype(jnp.float32))


# --------------------------------------------------------------------------- sets


def _per_example_sum(v: jax.Array) -> jax.Array:
  """Sum over all but the leading axis, kept as shape ``(n, 1, ..., 1)``."""
  return jnp.sum(v, axis=tuple(range(1, v.ndim)), keepdims=True)


def _l2_norm(v: jax.Array) -> jax.Array:
  return jnp.sqrt(_per_example_sum(v * v))


def _clip_range(x: jax.Array, lower: Any, upper: Any) -> jax.Array:
  if lower is not None:
    x = jnp.maximum(x, jnp.broadcast_to(jnp.asarray(lower, x.dtype), x.shape))
  if upper is not None:
    x = jnp.minimum(x, jnp.broadcast_to(jnp.asarray(upper, x.dtype), x.shape))
  return x


def project_perturbation(x_adv: jax.Array, x: jax.Array, *, eps: Any, norm: str = "linf",
            lower: Any = None, upper: Any = None) -> jax.Array:
  """Maps ``x_adv`` into ``{||x' - x|| <= eps} and [lower, upper]`` (see the module docstring).

  l_inf: ``clip(clip(x_adv, x - eps, x + eps), lower, upper)``, the exact projection.
  l_2: ``x + d min(1, eps / ||d||)`` with ``d = x_adv - x`` per example, then clipped to the
  data range (feasible; the reference implementations' map).
  """
  check_norm(norm)
  x = jnp.asarray(x)
  eps = _eps_array(eps, x, norm)
  return _project(x_adv, x, eps, norm, lower, upper)


def _project(x_adv, x, eps, norm, lower, upper):
  if norm == "linf":
    out = jnp.clip(x_adv, x - eps, x + eps)
  else:
    d = x_adv - x
    n = _l2_norm(d)
    out = x + d * jnp.minimum(1.0, eps / jnp.maximum(n, 1e-12))
  return _clip_range(out, lower, upper)


# --------------------------------------------------------------------------- checks


def check_norm(norm: str) -> None:
  if norm not in NORMS:
    raise ValueError(f"norm must be one of {NORMS}, got norm={norm!r}")


def check_positive_int(name: str, steps: Any) -> None:
  if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
    raise ValueError(f"{name} must be a positive integer, got {name}={steps!r}")


def _eps_array(eps: Any, x: jax.Array, norm: str) -> jax.Array:
  """``eps`` as an array of x's dtype, shape-checked against the norm (values checked eagerly)."""
  eps = jnp.asarray(eps, dtype=x.dtype)
  try:
    shape = jnp.broadcast_shapes(eps.shape, x.shape)
  except ValueError:
    shape = None
  if shape != x.shape:
    raise ValueError(f"eps must broadcast against x of shape {x.shape}, got eps of shape "
                     f"{eps.shape}")
  if norm == "l2" and eps.ndim and (eps.ndim != x.ndim or any(d != 1 for d in eps.shape[1:])):
    raise ValueError(f"eps for norm='l2' must be one radius per example (shape () or (n, 1, ..., "
                     f"1)), got eps of shape {eps.shape}")
  if core.is_concrete(eps):
    e = np.asarray(eps)
    if not np.all(np.isfinite(e)) or np.any(e < 0) or not np.any(e > 0):
      raise ValueError(f"eps must be finite, nonnegative and positive somewhere (a positive "
                       f"radius, or a box with some positive widths), got eps={_short(e)}")
  return _broadcast_like(eps, x, norm)


def _broadcast_like(v: jax.Array, x: jax.Array, norm: str) -> jax.Array:
  """``v`` broadcast to x's shape (l_inf) or to ``(n, 1, ..., 1)`` (l_2), explicitly."""
  if norm == "linf":
    return jnp.broadcast_to(v, x.shape)
  v = jnp.broadcast_to(v, jnp.broadcast_shapes(v.shape, (x.shape[0],) + (1,) * (x.ndim - 1)))
  return v.reshape((x.shape[0],) + (1,) * (x.ndim - 1))


def _short(v: np.ndarray) -> str:
  return repr(v.item()) if v.size == 1 else f"array with min {v.min()!r} and max {v.max()!r}"


def _check_common(x, y, norm, steps):
  check_norm(norm)
  check_positive_int("steps", steps)
  x, y = jnp.asarray(x), jnp.asarray(y)
  if x.ndim < 2:
    raise ValueError(f"x must be a batch with a leading example axis (ndim >= 2), got shape "
                     f"{x.shape}")
  if y.shape != x.shape[:1]:
    raise ValueError(f"y must hold one integer label per example, shape {x.shape[:1]}, got "
                     f"shape {y.shape}")
  return x, y


def _input_grad(logits_fn: LogitsFn, loss: Callable, y: jax.Array):
  """``x -> (per-example losses, logits, gradient of their sum)``: example i's gradient."""

  def total(x):
    logits = logits_fn(x)
    losses = loss(logits, y)
    return jnp.sum(losses), (losses, logits)

  def fn(x):
    (_, (losses, logits)), g = jax.value_and_grad(total, has_aux=True)(x)
    return losses, logits, g

  return fn


def _ascent_direction(g: jax.Array, norm: str) -> jax.Array:
  if norm == "linf":
    return jnp.sign(g)
  return g / (_l2_norm(g) + 1e-12)


# --------------------------------------------------------------------------- PGD


def pgd(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, key: jax.Array, *, eps: Any,
        norm: str = "linf", steps: int, step_size: Any = None, random_start: bool = True,
        lower: Any = None, upper: Any = None, loss: LossName = "ce",
        unroll: bool | int = 1) -> jax.Array:
  """Projected gradient ascent on the loss inside the threat set (module docstring).

  Args:
    logits_fn: ``x -> logits`` on a batch (leading example axis), differentiable in ``x``.
    x: clean inputs, shape ``(n, ...)``.
    y: integer labels, shape ``(n,)``.
    key: PRNG key of the random start.
    eps: radius (l_2: per example) or per-feature box half-widths (l_inf), nonnegative.
    norm: ``"linf"`` or ``"l2"``.
    steps: number of gradient steps (>= 1).
    step_size: the step ``a``; default ``eps / 4`` (the reference's step-to-radius ratio, kept
      fixed as ``eps`` changes). Broadcasts like ``eps``.
    random_start: start from ``P_S(x + U[-a, a])`` (the reference: uniform within one step)
      instead of ``x``.
    lower, upper: the data range (``None``: unbounded).
    loss: ``"ce"`` (default), ``"margin"``, ``"dlr"`` or a callable ``(logits, y) ->
      per-example losses`` to maximize.
    unroll: the loop's unrolling (``lax.fori_loop``'s): ``True`` unrolls every step (what CNNs
      on XLA:CPU want, see the module docstring), an integer that many steps per iteration.

  Returns:
    The last iterate ``x^T``, shape of ``x``, inside the threat set.

  Raises:
    ValueError: unknown norm or loss, ``steps < 1``, ``eps`` negative, zero everywhere or of a
      shape that does not broadcast, a negative step size (value checks need concrete values).
  """
  x, y = _check_common(x, y, norm, steps)
  loss_fn = _loss_of(loss)
  eps = _eps_array(eps, x, norm)
  a = eps / 4 if step_size is None else jnp.asarray(step_size, x.dtype)
  if step_size is not None and core.is_concrete(a) and (
      not np.all(np.isfinite(np.asarray(a))) or np.any(np.asarray(a) < 0)):
    raise ValueError(f"step_size must be finite and nonnegative, got "
                     f"step_size={_short(np.asarray(a))}")
  a = _broadcast_like(a, x, norm)
  grad_fn = _input_grad(logits_fn, loss_fn, y)

  x0 = x
  if random_start:
    u = core.flat_uniform(key, x.shape, x.dtype, -1.0, 1.0)
    x0 = _project(x + u * a, x, eps, norm, lower, upper)
  else:
    x0 = _clip_range(x0, lower, upper)

  def body(_, xt):
    _, _, g = grad_fn(xt)
    return _project(xt + a * _ascent_direction(g, norm), x, eps, norm, lower, upper)

  return jax.lax.fori_loop(0, steps, body, x0, unroll=unroll)


# --------------------------------------------------------------------------- APGD


def apgd_checkpoints(steps: int) -> list[int]:
  """The iterations after which APGD checks its step size (0-based: the check after step i).

  Periods start at ``max(int(0.22 N), 1)`` and shrink by ``max(int(0.03 N), 1)`` per check to
  at least ``max(int(0.06 N), 1)`` (fra31/auto-attack's integer rounding of ``p_j``).
  """
  check_positive_int("steps", steps)
  k = max(int(0.22 * steps), 1)
  decr, k_min = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
  out, t = [], 0
  while t + k <= steps:
    t += k
    out.append(t - 1)
    k = max(k - decr, k_min)
  return out


class _APGDState(NamedTuple):
  x_adv: jax.Array        # current iterate
  x_old: jax.Array        # previous iterate (momentum)
  grad: jax.Array         # gradient at x_adv
  loss: jax.Array         # loss at x_adv, (n,)
  x_best: jax.Array       # highest-loss point
  grad_best: jax.Array
  loss_best: jax.Array
  x_best_adv: jax.Array   # a misclassified point if found, else the start
  fooled: jax.Array       # (n,) bool: some iterate was misclassified
  scale: jax.Array        # (n,) step multiplier (halved at checkpoints), step = 2 eps scale
  n_incr: jax.Array       # (n,) loss increases since the last checkpoint
  loss_best_last: jax.Array
  reduced_last: jax.Array  # (n,) bool: step halved at the last checkpoint
  counter: jax.Array      # steps since the last checkpoint
  period: jax.Array       # current checkpoint period k


def _bcast(v: jax.Array, x: jax.Array) -> jax.Array:
  return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def _apgd_start(key, x, eps, norm, lower, upper):
  """APGD's random start ``x + eps t / ||t||`` (uniform cube for l_inf, Gaussian for l_2)."""
  if norm == "linf":
    t = core.flat_uniform(key, x.shape, x.dtype, -1.0, 1.0)
    t = t / (jnp.max(jnp.abs(t), axis=tuple(range(1, x.ndim)), keepdims=True) + 1e-12)
  else:
    t = core.flat_normal(key, x.shape, x.dtype)
    t = t / (_l2_norm(t) + 1e-12)
  return _clip_range(x + eps * t, lower, upper)


def _apgd_run(grad_fn, x, y, x0, eps, norm, steps, rho, momentum, lower, upper, unroll=1):
  """One APGD run from ``x0``; returns (x_best, loss_best, x_best_adv, fooled)."""
  n = x.shape[0]
  loss0, logits0, g0 = grad_fn(x0)
  fooled0 = jnp.argmax(logits0, -1) != y
  period0 = max(int(0.22 * steps), 1)
  decr, period_min = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
  state = _APGDState(
      x_adv=x0, x_old=x0, grad=g0, loss=loss0, x_best=x0, grad_best=g0, loss_best=loss0,
      x_best_adv=x0, fooled=fooled0, scale=jnp.ones((n,), x.dtype),
      n_incr=jnp.zeros((n,), jnp.int32), loss_best_last=loss0,
      reduced_last=jnp.ones((n,), bool), counter=jnp.zeros((), jnp.int32),
      period=jnp.asarray(period0, jnp.int32))

  def step(s: _APGDState, i):
    a = jnp.where(i > 0, momentum, 1.0).astype(x.dtype)
    eta = 2.0 * eps * _bcast(s.scale, x)
    z = _project(s.x_adv + eta * _ascent_direction(s.grad, norm), x, eps, norm, lower, upper)
    x_new = _project(s.x_adv + a * (z - s.x_adv) + (1 - a) * (s.x_adv - s.x_old), x, eps, norm,
                     lower, upper)
    loss, logits, g = grad_fn(x_new)
    wrong = jnp.argmax(logits, -1) != y
    x_best_adv = jnp.where(_bcast(wrong, x), x_new, s.x_best_adv)
    improved = loss > s.loss_best
    x_best = jnp.where(_bcast(improved, x), x_new, s.x_best)
    grad_best = jnp.where(_bcast(improved, x), g, s.grad_best)
    loss_best = jnp.where(improved, loss, s.loss_best)
    n_incr = s.n_incr + (loss > s.loss).astype(jnp.int32)
    counter = s.counter + 1
    check = counter == s.period
    # Condition 1: too few increases; condition 2: not reduced last time and no improvement.
    osc = n_incr.astype(x.dtype) <= s.period.astype(x.dtype) * rho
    stalled = (~s.reduced_last) & (s.loss_best_last >= loss_best)
    reduce = check & (osc | stalled)
    rb = _bcast(reduce, x)
    new = _APGDState(
        x_adv=jnp.where(rb, x_best, x_new), x_old=s.x_adv,
        grad=jnp.where(rb, grad_best, g), loss=loss, x_best=x_best, grad_best=grad_best,
        loss_best=loss_best, x_best_adv=x_best_adv, fooled=s.fooled | wrong,
        scale=jnp.where(reduce, s.scale / 2, s.scale),
        n_incr=jnp.where(check, 0, n_incr),
        loss_best_last=jnp.where(check, loss_best, s.loss_best_last),
        reduced_last=jnp.where(check, osc | stalled, s.reduced_last),
        counter=jnp.where(check, 0, counter),
        period=jnp.where(check, jnp.maximum(s.period - decr, period_min), s.period))
    return new, None

  state, _ = jax.lax.scan(step, state, jnp.arange(steps), unroll=unroll)
  return state.x_best, state.loss_best, state.x_best_adv, state.fooled


def apgd(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, key: jax.Array, *, eps: Any,
         norm: str = "linf", steps: int, restarts: int = 1, rho: float = 0.75,
         momentum: float = 0.75, lower: Any = None, upper: Any = None,
         loss: LossName = "ce", unroll: bool | int = 1) -> jax.Array:
  """Auto-PGD (module docstring) maximizing ``loss``; see :func:`apgd_ce` for the arguments.

  ``loss`` is ``"ce"``, ``"dlr"`` (APGD-DLR), ``"margin"`` or a callable ``(logits, y) ->
  per-example losses``.
  """
  x, y = _check_common(x, y, norm, steps)
  check_positive_int("restarts", restarts)
  if not 0.0 < float(rho) < 1.0:
    raise ValueError(f"rho must lie in (0, 1), got rho={rho!r}")
  if not 0.0 < float(momentum) <= 1.0:
    raise ValueError(f"momentum must lie in (0, 1], got momentum={momentum!r}")
  loss_fn = _loss_of(loss)
  eps = _eps_array(eps, x, norm)
  grad_fn = _input_grad(logits_fn, loss_fn, y)
  n = x.shape[0]

  def restart(carry, k):
    out, best_loss, fooled = carry
    x0 = _apgd_start(k, x, eps, norm, lower, upper)
    x_best, loss_best, x_best_adv, found = _apgd_run(grad_fn, x, y, x0, eps, norm, steps,
                                                      float(rho), float(momentum), lower, upper,
                                                      unroll)
    take_adv = found & ~fooled
    take_best = ~fooled & ~found & (loss_best > best_loss)
    out = jnp.where(_bcast(take_adv, x), x_best_adv,
                    jnp.where(_bcast(take_best, x), x_best, out))
    best_loss = jnp.where(take_best, loss_best, best_loss)
    return (out, best_loss, fooled | found), None

  init = (x, jnp.full((n,), -jnp.inf, x.dtype), jnp.zeros((n,), bool))
  (out, _, _), _ = jax.lax.scan(restart, init, jax.random.split(key, restarts),
                                unroll=unroll is True)
  return out


def apgd_ce(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, key: jax.Array, *, eps: Any,
            norm: str = "linf", steps: int, restarts: int = 1, rho: float = 0.75,
            lower: Any = None, upper: Any = None, unroll: bool | int = 1) -> jax.Array:
  """APGD-CE: Auto-PGD on the cross-entropy (Croce & Hein 2020), step size 2 eps, momentum 0.75.

  Args:
    logits_fn: ``x -> logits`` on a batch, differentiable in ``x``.
    x: clean inputs ``(n, ...)``; y: integer labels ``(n,)``; key: PRNG key of the starts.
    eps: radius (l_2: per example) or per-feature box half-widths (l_inf), nonnegative.
    norm: ``"linf"`` or ``"l2"``.
    steps: iterations per restart (>= 1); the checkpoints are :func:`apgd_checkpoints`.
    restarts: independent random starts (>= 1).
    rho: the fraction of loss increases below which the step is halved (0.75).
    lower, upper: the data range (``None``: unbounded).
    unroll: the step loop's unrolling (``lax.scan``'s), as in :func:`pgd`.

  Returns:
    Per example, a misclassified point found by some restart, else the highest-loss point over
    the restarts; inside the threat set.

  Raises:
    ValueError: as :func:`pgd`, and ``restarts < 1`` or ``rho`` outside (0, 1).
  """
  return apgd(logits_fn, x, y, key, eps=eps, norm=norm, steps=steps, restarts=restarts,
              rho=rho, lower=lower, upper=upper, loss="ce", unroll=unroll)
