"""A plain NumPy reference for the Constraint and Mixture ADMMs (the speed baseline).

Tomioka, Hayashi, Kashima, "Estimation of low-rank tensors via convex optimization", 2010,
arXiv:1010.0789. The same iterations, defaults (the tuned engine's: a fixed eta, checked
every 5 iterations; Mixture over-relaxed; residual balancing of eta as an option) and stopping
rule (relative duality gap) as :mod:`tomioka_jax.tensor._completion` with ``tensor.ADMMOptions()``, written the way
one would without JAX: a Python loop, ``numpy.linalg.svd`` of each unfolding for thresholding
and norms, ``numpy.linalg.norm(., 2)`` for spectral norms; like the JAX solvers, a check
evaluates the exact gap only once a cheap estimate is within 10 tol. Used by
``benchmarks/tensor_completion.py`` and (fully observed, ``lam > 0``, the paper's plain ADMM)
``benchmarks/tensor_schatten.py``.
"""

from __future__ import annotations

import numpy as np

# As tensor.ADMMOptions(): the gap-estimate gate, and residual balancing of eta when it is on.
_ESTIMATE_FACTOR = 10.0
_BALANCE, _STEP_FACTOR, _ADAPT_ITERATIONS, _ADAPT_EVERY = 3.0, 3.0, 500, 5


def _rebalance(eta, r, s):
  if r > _BALANCE * s:
    return eta * _STEP_FACTOR
  if s > _BALANCE * r:
    return eta / _STEP_FACTOR
  return eta


def _unfold(x, k):
  return np.moveaxis(x, k, 0).reshape(x.shape[k], -1)


def _fold(m, k, shape):
  moved = (shape[k],) + tuple(n for j, n in enumerate(shape) if j != k)
  return np.moveaxis(m.reshape(moved), 0, k)


def _svt(m, tau):
  u, s, vt = np.linalg.svd(m, full_matrices=False)
  s = np.maximum(s - tau, 0)
  return (u * s) @ vt, s


def _nuclear(m):
  return np.linalg.svd(m, compute_uv=False).sum()


def constraint(mask, y, lam=0.0, tol=1e-3, max_iter=2000, eta=None, check_every=5,
               adaptive_eta=False, relaxation=1.0):
  """Overlapped trace norm completion by ADMM; returns (X, iterations, gap)."""
  shape, k = y.shape, y.ndim
  eta = 1 / (10 * np.std(y[mask], ddof=1)) if eta is None else eta
  z = [np.zeros_like(_unfold(y, j)) for j in range(k)]
  a = [np.zeros_like(zj) for zj in z]
  dual_best, gap, it = -np.inf, np.inf, 0
  x = np.zeros_like(y)
  while it < max_iter and gap > tol:
    m = sum(_fold(z[j] - a[j] / eta, j, shape) for j in range(k)) / k
    c = lam * eta * k
    x = np.where(mask, (y + c * m) / (1 + c), m)
    shrunk, z_old, r2 = [], list(z), 0.0
    for j in range(k):
      xj = _unfold(x, j)
      xr = relaxation * xj + (1 - relaxation) * z[j]  # over-relaxation (1: none)
      z[j], s = _svt(xr + a[j] / eta, 1 / eta)
      shrunk.append(s)
      a[j] = a[j] + eta * (xr - z[j])
      r2 += np.sum((xj - z[j]) ** 2)
    it += 1
    if adaptive_eta and it <= _ADAPT_ITERATIONS and it % _ADAPT_EVERY == 0:
      dz = sum(_fold(z[j] - z_old[j], j, shape) for j in range(k))
      free = ~mask if lam == 0 else np.ones_like(mask)
      eta = _rebalance(eta, np.sqrt(r2), eta * np.linalg.norm(dz[free]))
    if it % check_every:  # the certificate below needs only the multipliers a
      continue
    loss = np.sum((x[mask] - y[mask]) ** 2) / (2 * lam) if lam > 0 else 0.0
    a_sum = sum(_fold(a[j], j, shape) for j in range(k))
    off = np.where(mask, 0, a_sum) / k
    s_obs = a_sum[mask]

    def dual(scale):
      return scale * (s_obs @ y[mask]) - lam / 2 * scale ** 2 * (s_obs @ s_obs)

    # As the JAX solver: a decomposition-free dual bound and the primal value at the Z_j
    # first; the exact gap only once that estimate is within _ESTIMATE_FACTOR of tol.
    dual_best = max(dual_best, dual(min(1.0, 1 / (1 + np.linalg.norm(off)))))
    estimate = sum(sj.sum() for sj in shrunk) + loss
    if (estimate - dual_best) / abs(estimate) > _ESTIMATE_FACTOR * tol:
      continue
    primal = sum(_nuclear(_unfold(x, j)) for j in range(k)) + loss
    scale = min(1.0, min(1 / np.linalg.norm(a[j] - _unfold(off, j), 2) for j in range(k)))
    dual_best = max(dual_best, dual(scale))
    gap = (primal - dual_best) / abs(primal)
  return x, it, gap


def mixture(mask, y, lam=0.0, tol=1e-3, max_iter=2000, eta=None, check_every=5,
            adaptive_eta=False, relaxation=1.8):
  """Latent trace norm completion by ADMM on the dual; returns (X, iterations, gap)."""
  shape, k = y.shape, y.ndim
  eta = 10 * np.std(y[mask], ddof=1) if eta is None else eta
  z = [np.zeros_like(_unfold(y, j)) for j in range(k)]
  alpha = np.where(mask, y, 0)
  dual_best, gap, it = -np.inf, np.inf, 0
  z_sum, v_sum, v = np.zeros_like(y), np.zeros_like(y), [np.zeros_like(zj) for zj in z]
  while it < max_iter and gap > tol:
    v_sum_old, v_sum, sv, r2 = v_sum, np.zeros_like(y), [], 0.0
    for j in range(k):
      # Over-relaxation (1: none): relaxation alpha + (1 - relaxation) V (the previous V).
      t = z[j] + eta * (relaxation * _unfold(alpha, j) + (1 - relaxation) * v[j])
      z_j, s = _svt(t, eta)
      r2 += np.sum((z_j - z[j]) ** 2)
      z[j] = z_j
      sv.append(s)
      v[j] = (t - z[j]) / eta
      v_sum += _fold(v[j], j, shape)
    z_sum = sum(_fold(z[j], j, shape) for j in range(k))
    alpha = np.where(mask, (y - z_sum + eta * v_sum) / (lam + eta * k), 0)
    it += 1
    if adaptive_eta and it <= _ADAPT_ITERATIONS and it % _ADAPT_EVERY == 0:
      # The multipliers W_k (z) are unscaled: nothing to rescale.
      eta = _rebalance(eta, np.sqrt(r2) / eta, eta * np.linalg.norm((v_sum - v_sum_old)[mask]))
    if it % check_every:
      continue
    scale = min(1.0, min(1 / np.linalg.norm(_unfold(alpha, j), 2) for j in range(k)))
    a = scale * alpha
    dual_best = max(dual_best, np.vdot(a, y) - lam / 2 * np.vdot(a, a))
    if lam > 0:
      primal = sum(s.sum() for s in sv) + np.sum((z_sum - y)[mask] ** 2) / (2 * lam)
    else:
      # As the JAX solver: the feasible split's value only once the unshifted split's value
      # puts the gap within _ESTIMATE_FACTOR of tol.
      estimate = sum(s.sum() for s in sv)
      if (estimate - dual_best) / abs(estimate) > _ESTIMATE_FACTOR * tol:
        continue
      shift = np.where(mask, (z_sum - y) / k, 0)
      primal = sum(_nuclear(z[j] - _unfold(shift, j)) for j in range(k))
    gap = (primal - dual_best) / abs(primal)
  x = z_sum if lam > 0 else np.where(mask, y, z_sum)
  return x, it, gap
