"""Tests for tomioka_jax.tensor._subspace: the subspace norm of Zheng and Tomioka (2015)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tomioka_jax.tensor import _admm as admm
from tomioka_jax.tensor import _ops as ops
from tomioka_jax.tensor import _schatten as schatten
from tomioka_jax.tensor import _subspace as subspace

SHAPE = (5, 6, 7)


def _orthonormal(rng, n, h):
  return np.linalg.qr(rng.standard_normal((n, h)))[0]


def _unfold_np(x, k):
  # C-order unfolding, written independently of ops.unfold.
  return np.moveaxis(x, k, 0).reshape(x.shape[k], -1)


def _fold_np(m, k, shape):
  moved = (shape[k],) + tuple(n for j, n in enumerate(shape) if j != k)
  return np.moveaxis(m.reshape(moved), 0, k)


def _noisy_rank_two(rng, shape, sigma):
  us = [_orthonormal(rng, n, 2) for n in shape]
  x = sum(w * functools.reduce(np.multiply.outer, [u[:, i] for u in us])
          for i, w in enumerate((3.0, 5.0)))
  return x, x + sigma * rng.standard_normal(shape)


def _fista_reference(y, factors, lam, num_iters=4000):
  """Accelerated proximal gradient on the primal, with explicit Kronecker bases (NumPy).

  min_M sum_k ||M_k||_* + 1/(2 lam) ||y - sum_k fold_k(M_k V_k^T)||^2, V_k = kron of the
  other modes' factors in increasing mode order (our unfolding's column order).
  """
  shape, n_modes = y.shape, y.ndim
  bases = [functools.reduce(np.kron, [u for j, u in enumerate(factors) if j != k])
           for k in range(n_modes)]
  step = lam / n_modes  # 1 / Lipschitz constant of the smooth part

  def svt(m, tau):
    u, s, vt = np.linalg.svd(m, full_matrices=False)
    return (u * np.maximum(s - tau, 0)) @ vt

  def synth(ms):
    return sum(_fold_np(m @ v.T, k, shape) for k, (m, v) in enumerate(zip(ms, bases)))

  ms = [np.zeros((shape[k], v.shape[1])) for k, v in enumerate(bases)]
  zs, t = list(ms), 1.0
  for _ in range(num_iters):
    resid = y - synth(zs)
    new = [svt(z + step / lam * _unfold_np(resid, k) @ v, step)
           for k, (z, v) in enumerate(zip(zs, bases))]
    t_new = (1 + np.sqrt(1 + 4 * t * t)) / 2
    zs = [m + (t - 1) / t_new * (m - m_old) for m, m_old in zip(new, ms)]
    ms, t = new, t_new
  return synth(ms)


@pytest.mark.parametrize("shape", [(3, 4, 5), (2, 3, 4, 5)])
def test_subspace_basis_matches_unfold_column_order(shape):
  rng = np.random.default_rng(0)
  a = rng.standard_normal(shape)
  factors = [_orthonormal(rng, n, 2) for n in shape]
  for k in range(len(shape)):
    s_k = np.asarray(subspace.subspace_basis(factors, k))
    others = [None if j == k else u for j, u in enumerate(factors)]
    projected = ops.unfold(ops.multi_mode_product(a, others, transpose=True), k)
    np.testing.assert_allclose(_unfold_np(a, k) @ s_k, projected, atol=1e-5)
    # The other Kronecker order is a different matrix: the test can tell them apart.
    wrong = functools.reduce(np.kron, [u for j, u in enumerate(factors) if j != k][::-1])
    assert np.abs(_unfold_np(a, k) @ wrong - projected).max() > 1e-2


def test_agrees_with_numpy_proximal_gradient_reference():
  rng = np.random.default_rng(1)
  _, y = _noisy_rank_two(rng, SHAPE, sigma=0.3)
  factors = [_orthonormal(rng, n, 2) for n in SHAPE]  # deliberately not the data's subspaces
  lam = 0.5
  ref = _fista_reference(y, factors, lam)
  with jax.enable_x64(True):
    res = subspace.subspace_norm_denoising(jnp.asarray(y), lam, factors=factors, tol=1e-9,
                                           max_iter=20000)
    assert bool(res.converged)
    np.testing.assert_allclose(res.X, ref, atol=1e-5)
    np.testing.assert_allclose(res.components.sum(0), res.X, atol=1e-12)


@pytest.mark.parametrize("kwargs", [dict(), dict(adaptive_eta=True),
                                    dict(options=admm.PAPER_ADMM)],
                         ids=["tuned", "balanced", "paper"])
def test_engine_options_reach_the_same_optimum(kwargs):
  # The float32 start (tuned), residual balancing of the two steps (Goldstein et al.) and the
  # paper's plain iteration change the path, not the problem: each certifies its gap in
  # float64, and the gap bounds the distance to the solution of this strongly convex
  # problem, ||X - X*||^2 <= 2 lam (P - D) (P is scaled by 1 / lam).
  rng = np.random.default_rng(3)
  _, y = _noisy_rank_two(rng, SHAPE, sigma=0.3)
  factors = [_orthonormal(rng, n, 2) for n in SHAPE]
  lam = 0.5
  ref = _fista_reference(y, factors, lam)
  with jax.enable_x64(True):
    res = subspace.subspace_norm_denoising(jnp.asarray(y), lam, factors=factors, tol=1e-6,
                                           max_iter=5000, **kwargs)
    assert bool(res.converged) and res.X.dtype == jnp.float64 and float(res.gap) <= 1e-6
    dist2 = float(np.sum((np.asarray(res.X) - ref) ** 2))
    assert dist2 <= 2 * lam * (float(res.primal) - float(res.dual)) + 1e-9


def test_balanced_steps_match_the_iteration_written_out():
  # n iterations of the primal-dual iteration with explicit Kronecker bases S_k (NumPy), eta
  # rebalanced after every 5th: the residuals ||(M_old - M) / eta + L(A_old - A)|| and
  # ||eta K (A_old - A) + L^T(M_old - M)||, L A = (A_(k) S_k)_k; eta x3 when the first is over
  # 3x the second, /3 in the opposite case. The start eta is far off so that it must change.
  rng = np.random.default_rng(4)
  _, y = _noisy_rank_two(rng, SHAPE, sigma=0.3)
  factors = [_orthonormal(rng, n, 2) for n in SHAPE]
  bases = [functools.reduce(np.kron, [u for j, u in enumerate(factors) if j != k])
           for k in range(3)]
  lam, eta, n_iter = 0.5, 50.0, 12

  def svt(m, tau):
    u, sv, vt = np.linalg.svd(m, full_matrices=False)
    return (u * np.maximum(sv - tau, 0)) @ vt

  def lift(ms):
    return sum(_fold_np(m @ v.T, k, SHAPE) for k, (m, v) in enumerate(zip(ms, bases)))

  ms = [np.zeros((n, v.shape[1])) for n, v in zip(SHAPE, bases)]
  a, etas = y.copy(), [eta]
  for it in range(1, n_iter + 1):
    new = [svt(m + eta * _unfold_np(a, k) @ v, eta)
           for k, (m, v) in enumerate(zip(ms, bases))]
    over = 2 * lift(new) - lift(ms)
    a_new = (y + 3 * eta * a - over) / (lam + 3 * eta)
    if it % 5 == 0:
      da, dm = a - a_new, [o - n for o, n in zip(ms, new)]
      r = np.sqrt(sum(np.sum((d / eta + _unfold_np(da, k) @ v) ** 2)
                      for k, (d, v) in enumerate(zip(dm, bases))))
      d = np.linalg.norm(3 * eta * da + lift(dm))
      eta = eta * 3 if r > 3 * d else eta / 3 if d > 3 * r else eta
    ms, a = new, a_new
    etas.append(eta)
  assert len(set(etas)) > 1  # the rule was exercised
  with jax.enable_x64(True):
    opts = admm.ADMMOptions(check_every=1, adaptive_eta=True, float32_start=False)
    res = subspace.subspace_norm_solve(jnp.asarray(y), tuple(jnp.asarray(u) for u in factors),
                                       lam, 50.0, 0.0, max_iter=n_iter, options=opts)
    np.testing.assert_allclose(res.X, lift(ms), atol=1e-10)


def test_optimality_conditions_and_components_in_their_subspaces():
  rng = np.random.default_rng(2)
  _, y = _noisy_rank_two(rng, SHAPE, sigma=0.3)
  lam = 0.3
  with jax.enable_x64(True):
    res = subspace.subspace_norm_denoising(jnp.asarray(y), lam, subspace_dim=2, tol=1e-9,
                                           max_iter=20000)
    assert bool(res.converged)
    np.testing.assert_allclose(res.factors[0], subspace.subspace_factors(y, 2)[0])
    x = np.asarray(res.X)
    resid = (y - x) / lam  # the optimal dual tensor A
    for k in range(3):
      s_k = np.asarray(subspace.subspace_basis(res.factors, k))
      comp = np.asarray(res.components[k])
      # Component k lies in span(S_k) along the other modes: C_(k) = M_k S_k^T.
      m_k = _unfold_np(comp, k) @ s_k
      np.testing.assert_allclose(m_k @ s_k.T, _unfold_np(comp, k), atol=1e-10)
      # KKT: ||A_(k) S_k||_op <= 1 and <A_(k) S_k, M_k> = ||M_k||_*.
      g_k = _unfold_np(resid, k) @ s_k
      assert np.linalg.norm(g_k, 2) <= 1 + 1e-4
      nuc = np.linalg.svd(m_k, compute_uv=False).sum()
      np.testing.assert_allclose(np.vdot(g_k, m_k), nuc, rtol=1e-4, atol=1e-8)


def test_full_subspaces_reduce_to_the_latent_trace_norm():
  # H = n_k: every S_k is square orthogonal, so |||X|||_s is the latent trace norm.
  rng = np.random.default_rng(3)
  _, y = _noisy_rank_two(rng, SHAPE, sigma=0.3)
  lam = 1.0
  with jax.enable_x64(True):
    y = jnp.asarray(y)
    res = subspace.subspace_norm_denoising(y, lam, subspace_dim=SHAPE, tol=1e-9,
                                           max_iter=20000)
    latent = schatten.latent_schatten_denoising(y, lam, tol=1e-10, max_iter=20000)
    assert bool(res.converged) and bool(latent.converged)
    np.testing.assert_allclose(res.X, latent.X, atol=1e-5)


def test_paper_demo_relative_error():
  # test.m of the authors' code: 20 x 30 x 40, orthogonal rank-one components with
  # weights 10 and 20, sigma = 10 / N^(1/4) * 0.1, H = 2, lam = 1: relative error ~0.073.
  shape = (20, 30, 40)
  rng = np.random.default_rng(941)
  us = [_orthonormal(rng, n, 2) for n in shape]
  x = sum(w * functools.reduce(np.multiply.outer, [u[:, i] for u in us])
          for i, w in enumerate((10.0, 20.0)))
  sigma = 10 / np.prod(shape) ** 0.25 * 0.1
  y = (x + sigma * rng.standard_normal(shape)).astype(np.float32)
  res = subspace.subspace_norm_denoising(y, 1.0, subspace_dim=2)
  assert bool(res.converged) and int(res.iterations) < 30
  err = float(np.linalg.norm(np.asarray(res.X) - x) / np.linalg.norm(x))
  assert 0.05 < err < 0.1


def test_bad_inputs_raise():
  y = jnp.ones(SHAPE)
  with pytest.raises(ValueError, match="exactly one of subspace_dim"):
    subspace.subspace_norm_denoising(y, 1.0)
  with pytest.raises(ValueError, match="exactly one of subspace_dim"):
    subspace.subspace_norm_denoising(y, 1.0, 2, factors=[jnp.eye(n) for n in SHAPE])
  with pytest.raises(ValueError, match="subspace_dim must be an integer H"):
    subspace.subspace_norm_denoising(y, 1.0, 6)
  with pytest.raises(ValueError, match="subspace_dim must be an integer H"):
    subspace.subspace_norm_denoising(y, 1.0, (2, 2))
  with pytest.raises(ValueError, match="lam must be > 0"):
    subspace.subspace_norm_denoising(y, 0.0, 2)
  with pytest.raises(ValueError, match="factors must be 3 matrices"):
    subspace.subspace_norm_denoising(y, 1.0, factors=[jnp.eye(5), jnp.eye(6), jnp.eye(6)])
  with pytest.raises(ValueError, match="tol must be > 0"):
    subspace.subspace_norm_denoising(y, 1.0, 2, tol=-1.0)
  with pytest.raises(ValueError, match="relaxation must be None or 1 for the subspace norm"):
    subspace.subspace_norm_denoising(y, 1.0, 2, options=admm.ADMMOptions(relaxation=1.5))
  with pytest.raises(ValueError, match="mode must be in"):
    subspace.subspace_basis([jnp.eye(2)] * 3, 3)
