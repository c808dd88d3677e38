"""Tensor-based regression and classification with trace-norm regularization, by dual ADMM.

"Theoretical and Experimental Analyses of Tensor-Based Regression and Classification",
Kishan Wimalawarne, Ryota Tomioka, Masashi Sugiyama, Neural Computation 28(4), 2016,
arXiv:1509.01770.

Learns a linear model ``y_i ~ <X_i, W> + b`` on tensor inputs ``X_i`` with the squared loss
(regression) or the logistic loss (classification, ``y_i in {-1, +1}``), the weight tensor
regularized by the overlapped, latent or scaled latent trace norm, or, as the paper's
baselines, by the trace norm of one unfolding ("matrix") or the squared Frobenius norm
("frobenius", ridge). As in the paper, the solver works on the dual, whose variable
``alpha`` has one entry per training sample, so it is cheap when the number of samples is
moderate; each solve, including the relative duality gap it stops on, is one
``lax.while_loop`` under one ``jax.jit``.

Primal (``l`` the per-sample loss, ``R`` the norm):

.. math:: \\min_{W, b} \\sum_i \\ell(\\langle X_i, W\\rangle + b, y_i) + \\lambda R(W).

Dual (``alpha_i = -l'(z_i)`` at the optimum: the residual for the squared loss):

.. math:: \\max_\\alpha -\\sum_i \\ell^*(-\\alpha_i, y_i)
   \\quad\\text{s.t.}\\quad R^*(\\textstyle\\sum_i \\alpha_i X_i) \\le \\lambda,
   \\ \\sum_i \\alpha_i = 0.

The dual norm ``R^*`` is ``max_k ||V_(k)||_op / g_k`` for the latent norms, and for the
overlapped norm the infimum of that maximum over splits ``V = sum_k V_k``; the ADMM splits
``sum_i alpha_i X_i`` into per-mode blocks ``V_k`` kept in the spectral-norm balls of radius
``lam g_k``, and its multipliers are the primal weights.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy import linalg as jsp_linalg
from jax.scipy import special
from jax.typing import ArrayLike

from tomioka_jax import core
from tomioka_jax.tensor import _ops as ops
from tomioka_jax.tensor import _prox as prox

REGRESSION_NORMS = ("overlapped", "latent", "scaled_latent", "matrix", "frobenius")
REGRESSION_LOSSES = ("squared", "logistic")


class RegressionResult(NamedTuple):
  """What :func:`fit_regression` returns.

  Attributes:
    W: the weight tensor, shape ``X.shape[1:]``.
    b: the bias, a scalar.
    components: per-mode tensors stacked on a leading axis: the latent split ``W_k``
      (``W = sum_k W_k``) for the latent norms; the per-mode low-rank copies of ``W`` (equal
      to it at the optimum) for "overlapped" and "matrix"; ``W`` itself for "frobenius".
    alpha: the dual variable, one entry per sample (zero on masked-out samples).
    iterations: ADMM iterations run (Newton iterations for "frobenius").
    gap: the last evaluated relative duality gap ``(primal - dual) / primal``.
    primal: the primal objective at ``(W, b)`` (an upper bound for the latent norms, whose
      value is an infimum over splits: it is taken at ``components``).
    dual: the best dual objective found at a feasible dual point (a lower bound).
    converged: whether ``gap <= tol``.
    eta: the ADMM step size used.
    inner_iterations: alpha-step iterations summed over the solve (Newton steps for the
      logistic loss, one linear solve per ADMM iteration for the squared loss).
  """

  W: jax.Array
  b: jax.Array
  components: jax.Array
  alpha: jax.Array
  iterations: jax.Array
  gap: jax.Array
  primal: jax.Array
  dual: jax.Array
  converged: jax.Array
  eta: jax.Array
  inner_iterations: jax.Array


# --------------------------------------------------------------------------- losses


def _entropy(t: jax.Array) -> jax.Array:
  # t log t + (1 - t) log(1 - t), the logistic conjugate on [0, 1] (0 at the ends).
  return special.xlogy(t, t) + special.xlogy(1 - t, 1 - t)


def loss_value(loss: str, z: jax.Array, y: jax.Array, mask: jax.Array) -> jax.Array:
  """``sum_i l(z_i, y_i)`` over the samples in ``mask``."""
  if loss == "squared":
    per = 0.5 * (y - z) ** 2
  else:
    per = jax.nn.softplus(-y * z)
  return jnp.sum(jnp.where(mask, per, 0))


def dual_loss_value(loss: str, alpha: jax.Array, y: jax.Array, mask: jax.Array) -> jax.Array:
  """``-sum_i l^*(-alpha_i, y_i)``, the dual objective's loss part (``alpha`` in its domain)."""
  if loss == "squared":
    per = alpha * y - 0.5 * alpha ** 2
  else:
    per = -_entropy(jnp.clip(y * alpha, 0, 1))
  return jnp.sum(jnp.where(mask, per, 0))


def loss_gradient(loss: str, z: jax.Array, y: jax.Array) -> jax.Array:
  """``l'(z_i, y_i)``, the derivative of the per-sample loss in the prediction."""
  if loss == "squared":
    return z - y
  return -y * jax.nn.sigmoid(-y * z)


# --------------------------------------------------------------------------- the alpha step


class _Problem(NamedTuple):
  """The data as the solver sees it: flattened inputs, masked Gram matrix and its spectrum."""

  xmat: jax.Array  # (m, N), zero rows for masked-out samples
  y: jax.Array  # (m,), zero on masked-out samples
  mask: jax.Array  # (m,) bool
  c: jax.Array  # (m,) the mask as floats: the bias constraint c^T alpha = 0
  gram: jax.Array  # (m, m)
  gram_eig: tuple[jax.Array, jax.Array]  # eigenvalues, eigenvectors (squared loss)


def _make_problem(x: jax.Array, y: jax.Array, mask: jax.Array, loss: str) -> _Problem:
  m = x.shape[0]
  xmat = jnp.where(mask[:, None], x.reshape(m, -1), 0)
  y = jnp.where(mask, y, 0)
  gram = xmat @ xmat.T
  eig = jnp.linalg.eigh(gram) if loss == "squared" else (jnp.zeros((m,), x.dtype), gram)
  return _Problem(xmat, y, mask, mask.astype(x.dtype), gram, eig)


def _newton_tol(dtype) -> float:
  return 1e-13 if dtype == jnp.float64 else 1e-6


def _alpha_step(loss: str, p: _Problem, alpha: jax.Array, kappa: jax.Array, r: jax.Array,
                max_newton: int = 50) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``argmin_alpha phi(alpha) + kappa/2 alpha^T G alpha - r^T alpha`` s.t. ``c^T alpha = 0``.

  ``phi(alpha) = sum_i l^*(-alpha_i, y_i)`` on the active samples and ``alpha_i^2 / 2`` on the
  masked ones (which pins them to zero). Returns ``(alpha, b, newton_iterations)``: ``b``, the
  multiplier of the bias constraint, is the primal bias. The squared loss is a linear
  system solved through the eigen-decomposition of ``G`` (so any ``kappa`` costs ``O(m^2)``);
  the logistic loss takes damped Newton steps on the equality-constrained problem, kept in
  the domain ``0 < y_i alpha_i < 1`` by a fraction-to-boundary rule, from ``alpha``.
  """
  c = p.c
  if loss == "squared":
    evals, q = p.gram_eig

    def solve(v):
      return q @ ((q.T @ v) / (1 + kappa * evals))

    a_rhs, a_c = solve(p.y + r), solve(c)
    b = jnp.vdot(c, a_rhs) / jnp.vdot(c, a_c)
    return a_rhs - b * a_c, b, jnp.asarray(1, jnp.int32)

  dtype = alpha.dtype
  lo = jnp.finfo(dtype).eps ** 2
  active = p.mask

  def objective(a):
    t = p.y * a
    per = jnp.where(active, _entropy(jnp.clip(t, 0, 1)), 0.5 * a ** 2)
    return jnp.sum(per) + 0.5 * kappa * jnp.vdot(a, p.gram @ a) - jnp.vdot(r, a)

  def body(state):
    a, _, it, _ = state
    t = jnp.clip(p.y * a, lo, 1 - lo)
    g = jnp.where(active, p.y * (jnp.log(t) - jnp.log1p(-t)), a) + kappa * (p.gram @ a) - r
    d = jnp.where(active, 1 / (t * (1 - t)), 1)
    chol = jsp_linalg.cho_factor(jnp.diag(d) + kappa * p.gram)
    h_g, h_c = jsp_linalg.cho_solve(chol, g), jsp_linalg.cho_solve(chol, c)
    nu = (jnp.vdot(c, a) - jnp.vdot(c, h_g)) / jnp.vdot(c, h_c)
    delta = -(h_g + nu * h_c)
    dt = p.y * delta
    room = jnp.where(dt < 0, -t / jnp.where(dt < 0, dt, -1),
                     (1 - t) / jnp.where(dt > 0, dt, 1))
    room = jnp.where(active & (dt != 0), room, jnp.inf)
    step = jnp.minimum(1, 0.99 * jnp.min(room))
    f0, slope = objective(a), jnp.vdot(g, delta)

    def too_long(s):
      return (objective(a + s * delta) > f0 + 0.25 * s * slope) & (s > 1e-10)

    step = lax.while_loop(too_long, lambda s: s / 2, step)
    return a + step * delta, nu, it + 1, -slope

  def cond(state):
    _, _, it, decrement = state
    return (it < max_newton) & (decrement > _newton_tol(dtype) * (1 + jnp.abs(objective(state[0]))))

  init = (alpha, jnp.zeros((), dtype), jnp.asarray(0, jnp.int32), jnp.asarray(jnp.inf, dtype))
  a, b, it, _ = lax.while_loop(cond, body, init)
  return a, b, it


def _initial_alpha(loss: str, p: _Problem) -> jax.Array:
  """A dual point with ``c^T alpha = 0`` strictly inside the logistic domain."""
  if loss == "squared":
    return jnp.zeros_like(p.y)
  pos = jnp.sum(p.c * (p.y > 0))
  neg = jnp.sum(p.c * (p.y < 0))
  n = pos + neg
  # y_i alpha_i = neg / n on the positives and pos / n on the negatives: sum_i alpha_i = 0.
  t = jnp.where(p.y > 0, neg / n, pos / n)
  return jnp.where(p.mask, p.y * t, 0)


# --------------------------------------------------------------------------- the ADMM solves


def _tensor(p: _Problem, alpha: jax.Array, shape) -> jax.Array:
  """``sum_i alpha_i X_i`` (``X^T alpha``) as a tensor."""
  return (p.xmat.T @ alpha).reshape(shape)


def _apply(p: _Problem, w: jax.Array) -> jax.Array:
  """``(<X_i, W>)_i``."""
  return p.xmat @ w.reshape(-1)


def _dual_certificate(loss, p, shape, alpha, lam, weights, modes, dual_best, blocks=None):
  """The dual value at ``alpha`` scaled into the feasible set, and the best so far.

  Latent norms (``blocks=None``): ``X^T alpha`` itself must lie in every ball
  ``||(X^T alpha)_(k)||_op <= lam g_k``. Overlapped norm: ``blocks`` split ``X^T alpha``
  approximately over ``modes``; the split is made exact by spreading the residual evenly.
  One common factor ``s <= 1`` then puts every block in its ball. Scaling toward 0 keeps
  ``sum_i alpha_i = 0`` and, for the logistic loss, ``0 <= y_i alpha_i <= 1``.
  """
  u = _tensor(p, alpha, shape)
  active = [weights[i] > 0 for i in range(len(modes))]
  if blocks is None:
    blocks = [u] * len(modes)
  else:
    # Zero-weight blocks (radius-0 balls, as the one-hot weights of the matrix baseline) take
    # no share of the residual and are dropped from the split.
    n_active = sum(a.astype(u.dtype) for a in active)
    shift = (u - sum(jnp.where(a, v, 0) for a, v in zip(active, blocks))) / n_active
    blocks = [v + shift for v in blocks]
  ratios = [jnp.where(active[i], lam * weights[i] / prox.spectral_norm(ops.unfold(v, k)),
                      jnp.inf) for i, (v, k) in enumerate(zip(blocks, modes))]
  scale = jnp.minimum(1, jnp.min(jnp.stack(ratios)))
  return jnp.maximum(dual_best, dual_loss_value(loss, scale * alpha, p.y, p.mask))


def _balanced_eta(eta, it, r_norm, s_norm, adapt_every):
  """Residual balancing (Boyd et al. 2011, Section 3.4.1) of the ADMM step.

  Every ``adapt_every`` iterations, ``eta`` is multiplied by ``sqrt(r / s)`` (clipped to
  ``[1/10, 10]``) when the relative primal residual ``r`` (constraint violation) and the
  relative dual residual ``s`` differ by more than a factor 4. The multipliers are stored
  unscaled, so a new ``eta`` needs no rescaling; the squared loss' alpha step solves through
  the fixed eigen-decomposition of the Gram matrix, so it costs nothing either.
  """
  tiny = jnp.finfo(eta.dtype).tiny
  ratio = r_norm / jnp.maximum(s_norm, tiny)
  factor = jnp.clip(jnp.sqrt(ratio), 0.1, 10.0)
  change = ((it + 1) % adapt_every == 0) & ((ratio > 4) | (ratio < 0.25)) & (adapt_every > 0)
  change = change & jnp.isfinite(factor) & (s_norm > 0)
  return jnp.where(change, eta * factor, eta)


def _norm(*tensors):
  return jnp.sqrt(sum(jnp.vdot(t, t) for t in tensors))


def _latent_solve(loss, p, shape, lam, eta, tol, weights, max_iter, check_every, method,
                  adapt_every):
  """ADMM on the dual for the latent norm ``inf_{W = sum W_k} sum_k g_k ||W_k,(k)||_*``.

  Constraints ``V_k = (X^T alpha)_(k)``, ``||V_k||_op <= lam g_k``; multipliers ``Z_k`` (the
  latent components). One iteration, as the Mixture ADMM of Tomioka et al. (2011) with the
  sampling operator replaced by ``X``:

  * ``Z_k <- prox_{eta lam g_k ||.||_*}(Z_k + eta (X^T alpha)_(k))``; ``V_k`` the clipped rest;
  * ``alpha <- argmin phi(alpha) + eta K/2 ||X^T alpha||^2 - <X^T alpha, eta sum V_k - sum Z_k>``
    subject to ``sum_i alpha_i = 0`` (its multiplier is the bias).
  """
  n_modes = len(shape)
  modes = tuple(range(n_modes))

  def body(state):
    (z, v_old, eta), alpha, b, it, newton, gap, primal, dual_best, _ = state
    u = _tensor(p, alpha, shape)
    z_new, v, sv = [], [], []
    for k in modes:
      t = z[k] + eta * ops.unfold(u, k)
      z_k, sv_k = prox.svt_with_spectrum(t, eta * lam * weights[k], method)
      z_new.append(z_k)
      v.append(ops.fold((t - z_k) / eta, k, shape))
      sv.append(sv_k)
    z_sum = sum(ops.fold(z_k, k, shape) for k, z_k in zip(modes, z_new))
    r = _apply(p, eta * sum(v) - z_sum)
    alpha, b, its = _alpha_step(loss, p, alpha, eta * n_modes, r)

    def certificate(_):
      pr = loss_value(loss, _apply(p, z_sum) + b, p.y, p.mask) + lam * sum(
          weights[k] * jnp.sum(sv[k]) for k in modes)
      d = _dual_certificate(loss, p, shape, alpha, lam, weights, modes, dual_best)
      return (pr - d) / jnp.abs(pr), pr, d

    gap, primal, dual_best = lax.cond((it + 1) % check_every == 0, certificate,
                                      lambda _: (gap, primal, dual_best), None)
    r_norm = _norm(*(u - v_k for v_k in v)) / jnp.maximum(
        jnp.sqrt(n_modes) * _norm(u), _norm(*v))
    s_norm = eta * _norm(*(a - c for a, c in zip(v, v_old))) / _norm(*z_new)
    eta = _balanced_eta(eta, it, r_norm, s_norm, adapt_every)
    return ((tuple(z_new), tuple(v), eta), alpha, b, it + 1, newton + its, gap, primal,
            dual_best, gap <= tol)

  zeros = tuple(jnp.zeros(shape, p.y.dtype) for _ in modes)
  zeros_unf = tuple(ops.unfold(zk, k) for k, zk in zip(modes, zeros))
  (z, _, eta), alpha, b, it, inner, gap, primal, dual, converged = _run(
      loss, p, (zeros_unf, zeros, eta), body, max_iter)
  comps = jnp.stack([ops.fold(z_k, k, shape) for k, z_k in zip(modes, z)])
  return RegressionResult(jnp.sum(comps, 0), b, comps, alpha, it, gap, primal, dual,
                          converged, eta, inner)


def _overlapped_solve(loss, p, shape, lam, eta, tol, weights, modes, max_iter, check_every,
                      method, adapt_every):
  """ADMM on the dual for the overlapped norm ``sum_{k in modes} g_k ||W_(k)||_*``.

  The dual asks for a split ``X^T alpha = sum_k S_k`` with ``S_k = V_k``,
  ``||V_k||_op <= lam g_k``. ADMM over the blocks ``(alpha, S)`` and ``V`` with multipliers
  ``W_k`` for ``S_k = V_k``; minimizing over ``S`` in closed form leaves one ``alpha``
  problem and makes the ``S``-step multiplier ``W_bar`` (the primal weight) common to all k:

  * ``alpha <- argmin phi(alpha) + eta/(2K) ||X^T alpha - sum_k (V_k - W_k / eta)||^2``,
    ``sum_i alpha_i = 0``;  ``W_bar = eta/K (X^T alpha - sum_k (V_k - W_k / eta))``;
  * ``W_k <- prox_{eta lam g_k ||.||_*, mode k}(W_bar + eta V_k)``;
    ``V_k <- V_k + (W_bar - W_k) / eta`` (the projection onto the ball).

  ``W_bar`` satisfies the alpha-step's optimality exactly, so it is the returned ``W``; the
  low-rank copies ``W_k`` agree with it at the optimum. A zero weight ``g_k`` makes block k
  a radius-0 ball (``V_k = 0``), which is how the single-unfolding baseline shares this solve.
  """
  n_blocks = len(modes)

  def body(state):
    (w, v, _, eta), alpha, b, it, newton, gap, primal, dual_best, _ = state
    p_sum = sum(v_k - w_k / eta for v_k, w_k in zip(v, w))
    alpha, b, its = _alpha_step(loss, p, alpha, eta / n_blocks, _apply(p, eta * p_sum / n_blocks))
    u = _tensor(p, alpha, shape)
    w_bar = eta / n_blocks * (u - p_sum)
    w_new, v_new = [], []
    for i, k in enumerate(modes):
      t = w_bar + eta * v[i]
      w_k = ops.fold(prox.singular_value_thresholding(ops.unfold(t, k), eta * lam * weights[i],
                                                      method=method), k, shape)
      w_new.append(w_k)
      v_new.append(v[i] + (w_bar - w_k) / eta)

    def certificate(_):
      nuc = sum(weights[i] * prox.nuclear_norm(ops.unfold(w_bar, k), method=method)
                for i, k in enumerate(modes))
      pr = loss_value(loss, _apply(p, w_bar) + b, p.y, p.mask) + lam * nuc
      d = _dual_certificate(loss, p, shape, alpha, lam, weights, modes, dual_best, v_new)
      return (pr - d) / jnp.abs(pr), pr, d

    gap, primal, dual_best = lax.cond((it + 1) % check_every == 0, certificate,
                                      lambda _: (gap, primal, dual_best), None)
    # S_k - V_k = (W_k,new - W_k) / eta; the dual residual is eta (V_new - V).
    r_norm = _norm(*(a - c for a, c in zip(w_new, w))) / eta / jnp.maximum(
        _norm(*v_new), _norm(u) / jnp.sqrt(n_blocks))
    s_norm = eta * _norm(*(a - c for a, c in zip(v_new, v))) / jnp.maximum(
        _norm(*w_new), jnp.finfo(eta.dtype).tiny)
    eta = _balanced_eta(eta, it, r_norm, s_norm, adapt_every)
    return ((tuple(w_new), tuple(v_new), w_bar, eta), alpha, b, it + 1, newton + its, gap,
            primal, dual_best, gap <= tol)

  zeros = tuple(jnp.zeros(shape, p.y.dtype) for _ in modes)
  (w, _, w_bar, eta), alpha, b, it, inner, gap, primal, dual, converged = _run(
      loss, p, (zeros, zeros, jnp.zeros(shape, p.y.dtype), eta), body, max_iter)
  return RegressionResult(w_bar, b, jnp.stack(w), alpha, it, gap, primal, dual, converged, eta,
                          inner)


def _run(loss, p, blocks, body, max_iter):
  dtype = p.y.dtype
  inf = jnp.asarray(jnp.inf, dtype)
  init = (blocks, _initial_alpha(loss, p), jnp.zeros((), dtype), jnp.asarray(0, jnp.int32),
          jnp.asarray(0, jnp.int32), inf, inf, -inf, jnp.asarray(False))

  def cond(state):
    return (state[3] < max_iter) & ~state[8]

  blocks, alpha, b, it, inner, gap, primal, dual, converged = lax.while_loop(cond, body, init)
  return blocks, alpha, b, it, inner, gap, primal, dual, converged


def _frobenius_solve(loss, p, shape, lam, tol, max_iter):
  """Ridge: ``min loss + lam/2 ||W||_F^2``; dual ``max -phi(alpha) - ||X^T alpha||^2/(2 lam)``.

  One alpha step with ``kappa = 1 / lam`` and ``r = 0`` (closed form for the squared loss, up
  to ``max_iter`` Newton steps for the logistic); ``W = X^T alpha / lam``.
  """
  alpha, b, its = _alpha_step(loss, p, _initial_alpha(loss, p), 1 / lam,
                              jnp.zeros_like(p.y), max_newton=max_iter)
  w = _tensor(p, alpha, shape) / lam
  primal = loss_value(loss, _apply(p, w) + b, p.y, p.mask) + lam / 2 * jnp.vdot(w, w)
  dual = dual_loss_value(loss, alpha, p.y, p.mask) - jnp.vdot(w, w) * lam / 2
  gap = (primal - dual) / jnp.abs(primal)
  return RegressionResult(w, b, w[None], alpha, its, gap, primal, dual, gap <= tol,
                          jnp.zeros((), w.dtype), its)


@functools.partial(jax.jit, static_argnames=("norm", "loss", "modes", "method"))
def regression_solve(x: jax.Array, y: jax.Array, mask: jax.Array, lam: jax.Array, eta: jax.Array,
              tol: jax.Array, weights: jax.Array, max_iter: jax.Array, check_every: jax.Array,
              adapt_every: jax.Array, *, norm: str, loss: str, modes: tuple[int, ...],
              method: str = "auto") -> RegressionResult:
  """The solve behind :func:`fit_regression`, on checked arrays; ``max_iter``/``check_every`` are traced.

  ``norm`` is ``"latent"`` (weights over all modes; scaled latent passes ``1/sqrt(n_k)``),
  ``"overlapped"`` (over ``modes``; one mode is the matrix baseline) or ``"frobenius"``.
  """
  dtype = y.dtype
  shape = x.shape[1:]
  lam, eta, tol = (jnp.asarray(v, dtype) for v in (lam, eta, tol))
  p = _make_problem(x, y, mask, loss)
  if norm == "frobenius":
    return _frobenius_solve(loss, p, shape, lam, tol, max_iter)
  if norm == "latent":
    return _latent_solve(loss, p, shape, lam, eta, tol, weights, max_iter, check_every, method,
                         adapt_every)
  return _overlapped_solve(loss, p, shape, lam, eta, tol, weights, modes, max_iter,
                           check_every, method, adapt_every)


# --------------------------------------------------------------------------- public API



def _check_inputs(x, y, norm, loss, lam, tol, max_iter, eta, mode, sample_mask, check_every):
  if norm not in REGRESSION_NORMS:
    raise ValueError(f"norm must be one of {REGRESSION_NORMS}, got {norm!r}")
  if loss not in REGRESSION_LOSSES:
    raise ValueError(f"loss must be one of {REGRESSION_LOSSES}, got {loss!r}")
  x = jnp.asarray(x)
  y = jnp.asarray(y)
  if x.ndim < 3:
    raise ValueError(f"X must have shape (n_samples, n_1, ..., n_K) with K >= 2 tensor modes, "
                     f"got shape {x.shape}")
  if y.shape != (x.shape[0],):
    raise ValueError(f"y must have shape (n_samples,) = ({x.shape[0]},) to match X, got "
                     f"{y.shape}")
  floats = [a.dtype for a in (x, y) if jnp.issubdtype(a.dtype, jnp.floating)]
  dtype = jnp.result_type(*floats) if floats else jnp.zeros(()).dtype
  x, y = x.astype(dtype), y.astype(dtype)
  if sample_mask is None:
    mask = jnp.ones(y.shape, bool)
  else:
    mask = jnp.asarray(sample_mask)
    if mask.shape != y.shape or mask.dtype != jnp.bool_:
      raise ValueError(f"sample_mask must be a boolean array of shape {y.shape}, got "
                       f"{mask.dtype} {mask.shape}")
  if core.is_concrete(lam) and not float(lam) > 0:
    raise ValueError(f"lam must be > 0, got {lam}")
  if core.is_concrete(tol) and not float(tol) > 0:
    raise ValueError(f"tol must be > 0, got {tol}")
  if core.is_concrete(max_iter) and (int(max_iter) != max_iter or max_iter < 1):
    raise ValueError(f"max_iter must be a positive integer, got {max_iter}")
  if core.is_concrete(check_every) and (int(check_every) != check_every or check_every < 1):
    raise ValueError(f"check_every must be a positive integer, got {check_every}")
  if eta is not None and core.is_concrete(eta) and not float(eta) > 0:
    raise ValueError(f"eta must be > 0 (or None for the default), got {eta}")
  if norm == "matrix":
    if mode is None or int(mode) != mode or not 0 <= mode < x.ndim - 1:
      raise ValueError(f"mode must be an integer in [0, {x.ndim - 1}) for norm='matrix', "
                       f"got {mode}")
  elif mode is not None:
    raise ValueError(f"mode is only used with norm='matrix', got mode={mode} with "
                     f"norm={norm!r}")
  if core.is_concrete(mask) and not bool(np.any(np.asarray(mask))):
    raise ValueError("sample_mask must keep at least one sample, got none")
  if loss == "logistic" and core.is_concrete(y, mask):
    labels = np.asarray(y)[np.asarray(mask)]
    if not np.all(np.abs(labels) == 1):
      raise ValueError(f"y must hold labels in {{-1, +1}} for loss='logistic', got values "
                       f"{np.unique(labels)[:5]}")
    if not (np.any(labels > 0) and np.any(labels < 0)):
      raise ValueError("y must hold both labels -1 and +1 for loss='logistic' (the bias is "
                       "unbounded otherwise)")
  return x, y, mask


def regression_default_eta(x: jax.Array, y: jax.Array, mask: jax.Array, lam: ArrayLike,
                loss: str) -> jax.Array:
  """The default ADMM step ``eta``: the scale of ``W`` over the scale of ``X^T alpha``.

  At the optimum ``||X^T alpha||_op`` is about ``lam`` while the weights scale as
  ``std(y) / rms(X)``; ``eta = 0.1 std(y) / (lam rms(X))`` puts the two terms of the multiplier
  update on comparable scales (the factor 0.1 is where residual balancing settled on the
  simulated problems of the benchmark). The logistic loss uses ``std(y) = 1``.
  """
  n = jnp.maximum(jnp.sum(mask), 1)
  rms_x = jnp.sqrt(jnp.sum(jnp.where(mask[:, None], x.reshape(x.shape[0], -1), 0) ** 2) /
                   (n * np.prod(x.shape[1:])))
  if loss == "squared":
    mean = jnp.sum(jnp.where(mask, y, 0)) / n
    scale = jnp.sqrt(jnp.sum(jnp.where(mask, (y - mean) ** 2, 0)) / n)
    scale = jnp.where(scale > 0, scale, 1)
  else:
    scale = jnp.ones((), y.dtype)
  return 0.1 * scale / (jnp.asarray(lam, y.dtype) * jnp.where(rms_x > 0, rms_x, 1))


def fit_regression(X: ArrayLike, y: ArrayLike, *, norm: str, lam: ArrayLike, loss: str = "squared",
        tol: ArrayLike = 1e-3, max_iter: int = 2000, eta: ArrayLike | None = None,
        mode: int | None = None, sample_mask: ArrayLike | None = None,
        method: str = "auto", check_every: int = 1,
        adapt_every: int = 10) -> RegressionResult:
  """Fits ``y_i ~ <X_i, W> + b`` with a trace-norm regularized weight tensor, by dual ADMM.

  .. math:: \\min_{W, b} \\sum_i \\ell(\\langle X_i, W\\rangle + b, y_i) + \\lambda R(W),

  ``l`` the squared loss ``(y - z)^2 / 2`` or the logistic loss ``log(1 + exp(-y z))``, and
  ``R`` one of (Section 2 of the paper; ``g_k = 1`` unless stated):

  * ``"overlapped"``: ``sum_k ||W_(k)||_*``;
  * ``"latent"``: ``inf_{W = sum_k W_k} sum_k ||W_k,(k)||_*``;
  * ``"scaled_latent"``: the latent norm with ``g_k = 1 / sqrt(n_k)``;
  * ``"matrix"``: ``||W_(mode)||_*``, one unfolding (the paper's matrix baseline);
  * ``"frobenius"``: ``||W||_F^2 / 2`` (ridge / L2-regularized logistic regression).

  The ADMM runs on the dual (one variable per sample; the loss conjugate enters through
  an ``m x m`` system in the Gram matrix ``<X_i, X_j>``: a linear solve for the squared loss,
  damped Newton steps for the logistic) and stops when the relative duality gap
  ``(P - D) / P <= tol``; ``D`` is taken at the dual point scaled into the feasible set.

  Args:
    X: inputs, shape ``(n_samples, n_1, ..., n_K)``, ``K >= 2``.
    y: targets ``(n_samples,)``; labels in ``{-1, +1}`` for the logistic loss.
    norm: the regularizer, one of :data:`REGRESSION_NORMS`.
    lam: the regularization constant, ``> 0``.
    loss: ``"squared"`` or ``"logistic"``.
    tol: relative duality gap at which to stop.
    max_iter: the most ADMM iterations (Newton iterations for ``"frobenius"``).
    eta: the ADMM step; default :func:`default_eta`.
    mode: the unfolding for ``norm="matrix"`` (0-based tensor mode).
    sample_mask: optional boolean ``(n_samples,)``; samples outside it are ignored (lets one
      compiled solve serve several training-set sizes).
    method: singular value thresholding method (:func:`prox.singular_value_thresholding`).
    check_every: evaluate the duality gap every this many iterations.
    adapt_every: rebalance ``eta`` from the ADMM residuals every this many iterations
      (Boyd et al. 2011, Section 3.4.1); 0 keeps ``eta`` fixed.

  Returns:
    A :class:`RegressionResult`.

  Example:
    >>> key_x, key_w = jax.random.split(jax.random.key(0))
    >>> w = ops.tucker_to_tensor(*ops.random_tucker(key_w, (4, 4, 4), (1, 1, 1)))
    >>> x = jax.random.normal(key_x, (80, 4, 4, 4))
    >>> res = fit_regression(x, jnp.einsum("ijkl,jkl->i", x, w), norm="overlapped", lam=0.1)
    >>> bool(res.converged)
    True

  References:
    Wimalawarne, Tomioka, Sugiyama, arXiv:1509.01770, Section 3 (dual ADMM); Tomioka,
    Hayashi, Kashima, arXiv:1010.0789, Section 4 (the completion ADMMs it generalizes).
  """
  x, y, mask = _check_inputs(X, y, norm, loss, lam, tol, max_iter, eta, mode, sample_mask,
                             check_every)
  if core.is_concrete(adapt_every) and (int(adapt_every) != adapt_every or adapt_every < 0):
    raise ValueError(f"adapt_every must be a non-negative integer (0: fixed eta), got "
                     f"{adapt_every}")
  shape = x.shape[1:]
  dtype = y.dtype
  if norm == "scaled_latent":
    weights, solve_norm, modes = prox.scaled_latent_weights(shape, dtype), "latent", ()
  elif norm == "latent":
    weights, solve_norm, modes = jnp.ones((len(shape),), dtype), "latent", ()
  elif norm == "overlapped":
    weights, solve_norm, modes = jnp.ones((len(shape),), dtype), "overlapped", tuple(
        range(len(shape)))
  elif norm == "matrix":
    # One-hot weights: the other blocks are radius-0 balls, so the overlapped solve (and its
    # compilation) serves every mode.
    weights, solve_norm, modes = jnp.zeros((len(shape),), dtype).at[int(mode)].set(1), (
        "overlapped"), tuple(range(len(shape)))
  else:
    weights, solve_norm, modes = jnp.ones((1,), dtype), "frobenius", ()
  eta = regression_default_eta(x, y, mask, lam, loss) if eta is None else eta
  return regression_solve(x, y, mask, lam, eta, tol, weights, jnp.asarray(max_iter, jnp.int32),
                   jnp.asarray(check_every, jnp.int32), jnp.asarray(adapt_every, jnp.int32),
                   norm=solve_norm, loss=loss,
                   modes=modes, method=method)


def predict_regression(result: RegressionResult, X: ArrayLike) -> jax.Array:
  """The decision values ``<X_i, W> + b``; for the logistic loss the labels are their signs.

  Args:
    result: a fitted :class:`RegressionResult`.
    X: inputs, shape ``(n_samples, *result.W.shape)``.

  Returns:
    ``(n_samples,)`` predictions.
  """
  x = jnp.asarray(X)
  if x.shape[1:] != result.W.shape:
    raise ValueError(f"X must have shape (n_samples, {', '.join(map(str, result.W.shape))}) "
                     f"to match the fitted W, got {x.shape}")
  return x.reshape(x.shape[0], -1) @ result.W.reshape(-1) + result.b
