"""Tests for tomioka_jax.tensor._schatten: overlapped and latent Schatten-1 denoising."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tomioka_jax.tensor import _ops as ops
from tomioka_jax.tensor import _prox as prox
from tomioka_jax.tensor import _schatten as schatten

SHAPE = (6, 7, 8)


def _tucker_np(rng, ranks, scale):
  # NumPy (not eager JAX) keeps the test from compiling a dozen tiny ops.
  core = rng.standard_normal(ranks)
  us = [np.linalg.qr(rng.standard_normal((n, r)))[0] for n, r in zip(SHAPE, ranks)]
  x = np.einsum("abc,ia,jb,kc->ijk", core, *us)
  return scale * x / np.sqrt(np.mean(x**2))


def _noisy_low_rank(dtype, ranks=(2, 2, 2), sigma=0.3, seed=0, scale=3.0):
  rng = np.random.default_rng(seed)
  x = _tucker_np(rng, ranks, scale)
  y = x + sigma * rng.standard_normal(SHAPE)
  return jnp.asarray(x, dtype), jnp.asarray(y, dtype)


def _objective(y, x, lam, norm):
  return 0.5 * float(jnp.sum((y - x) ** 2)) + lam * float(norm)


def test_latent_denoising_optimality_and_bcd_agreement():
  with jax.enable_x64(True):
    _, y = _noisy_low_rank(jnp.float64)
    lam = 2.0
    res = schatten.latent_schatten_denoising(y, lam, tol=1e-8, max_iter=5000, check_every=1)
    assert bool(res.converged)
    np.testing.assert_allclose(res.components.sum(0), res.X, atol=1e-10)
    resid = y - res.X
    # KKT of the latent prox: Y - X lies in the lam-ball of the dual norm max_k ||.||_op
    # (Lemma 1), and aligns with every component: <Y - X, W_k> = lam ||W_k,(k)||_*.
    dual = max(float(prox.spectral_norm(ops.unfold(resid, k))) for k in range(3))
    assert dual <= lam * (1 + 1e-4)
    for k in range(3):
      w_k = res.components[k]
      nuc = float(prox.nuclear_norm(ops.unfold(w_k, k), method="svd"))
      np.testing.assert_allclose(float(jnp.vdot(resid, w_k)), lam * nuc, rtol=1e-4,
                                 atol=1e-6)
    # An independent solver: block coordinate descent on the primal (prox.py).
    # It converges slowly (sublinearly), hence the loose tolerance; the KKT checks above
    # are the sharp certificate.
    ref = prox.latent_trace_norm_prox(y, lam, num_iters=1000)
    np.testing.assert_allclose(res.X, ref.x, atol=1e-3 * float(jnp.abs(y).max()))


def test_overlapped_denoising_optimality_and_dual_bcd_agreement():
  with jax.enable_x64(True):
    _, y = _noisy_low_rank(jnp.float64)
    lam = 1.0
    res = schatten.overlapped_schatten_denoising(y, lam, tol=1e-8, max_iter=20000,
                                                 check_every=5)
    assert bool(res.converged)
    resid = y - res.X
    # Fenchel: <Y - X, X> = lam ||X||_overlap and ||Y - X||_dual <= lam.
    norm_x = prox.overlapped_trace_norm(res.X, method="svd")
    np.testing.assert_allclose(float(jnp.vdot(resid, res.X)), lam * float(norm_x), rtol=1e-4)
    assert float(prox.overlapped_trace_norm_dual(resid, num_bisect=30)) <= lam * (1 + 1e-3)
    # Independent solver: block coordinate descent on the dual (prox.py).
    ref = prox.overlapped_trace_norm_prox(y, lam, num_iters=2000)
    np.testing.assert_allclose(res.X, ref, atol=1e-5 * float(jnp.abs(y).max()))
    # And it is a minimum: no better than the BCD point or nearby perturbations.
    f = _objective(y, res.X, lam, norm_x)
    f_ref = _objective(y, ref, lam, prox.overlapped_trace_norm(ref, method="svd"))
    assert f <= f_ref * (1 + 1e-8)
    d = jnp.asarray(np.random.default_rng(3).standard_normal(SHAPE))
    for t in (1e-2, -1e-2):
      x_t = res.X + t * d
      assert f < _objective(y, x_t, lam, prox.overlapped_trace_norm(x_t, method="svd"))


def test_float32_solves_converge_and_shrink_the_noise():
  x, y = _noisy_low_rank(jnp.float32, ranks=(2, 2, 2), sigma=0.3)
  for solve, lam in ((schatten.overlapped_schatten_denoising, 0.5),
                     (schatten.latent_schatten_denoising, 1.0)):
    res = solve(y, lam, tol=1e-3)
    assert res.X.dtype == jnp.float32
    assert bool(res.converged)
    assert float(jnp.linalg.norm(res.X - x)) < 0.8 * float(jnp.linalg.norm(y - x))


def test_latent_prefers_the_low_rank_mode():
  # Rank (6, 7, 1): the latent estimate should put nearly everything into the component
  # of the rank-one mode (the paper's point: latent ~ knowing the mode of smallest rank).
  with jax.enable_x64(True):
    _, y = _noisy_low_rank(jnp.float64, ranks=(6, 7, 1), sigma=0.1, seed=5, scale=5.0)
    res = schatten.latent_schatten_denoising(y, 1.0, tol=1e-6)
    energy = jnp.sum(res.components**2, axis=(1, 2, 3))
    assert int(jnp.argmax(energy)) == 2
    assert float(energy[2]) > 0.95 * float(jnp.sum(energy))


def test_complexity_measures_by_hand():
  shape, ranks = (50, 50, 20), (10, 10, 3)
  mean_inv_sqrt_n = (1 / math.sqrt(50) + 1 / math.sqrt(50) + 1 / math.sqrt(20)) / 3
  mean_sqrt_r = (math.sqrt(10) + math.sqrt(10) + math.sqrt(3)) / 3
  expected = 0.01 * mean_inv_sqrt_n**2 * mean_sqrt_r**2
  assert schatten.overlapped_complexity(shape, ranks, sigma=0.1) == pytest.approx(expected)
  assert schatten.latent_complexity(shape, ranks, sigma=0.1) == pytest.approx(0.01 * 3 / 20)
  # 80 x 80 x 40, rank (5, 40, 7): min rank 5 over min size 40.
  assert schatten.latent_complexity((80, 80, 40), (5, 40, 7)) == pytest.approx(5 / 40)
  # Equal ranks and sizes: overlapped reduces to sigma^2 r / n.
  assert schatten.overlapped_complexity((30, 30, 30), (4, 4, 4), 2.0) == pytest.approx(
      4 * 4 / 30)


@pytest.mark.parametrize("fn", [schatten.overlapped_schatten_denoising,
                                schatten.latent_schatten_denoising])
def test_bad_inputs_raise(fn):
  y = jnp.ones(SHAPE)
  with pytest.raises(ValueError, match="lam must be > 0"):
    fn(y, 0.0)
  with pytest.raises(ValueError, match="lam must be > 0"):
    fn(y, -1.0)
  with pytest.raises(ValueError, match="at least two modes"):
    fn(jnp.ones(5), 1.0)
  with pytest.raises(ValueError, match="tol must be > 0"):
    fn(y, 1.0, tol=0.0)
  with pytest.raises(ValueError, match="max_iter"):
    fn(y, 1.0, max_iter=0)


def test_complexity_bad_inputs_raise():
  with pytest.raises(ValueError, match="one entry per mode"):
    schatten.overlapped_complexity((5, 5, 5), (1, 1))
  with pytest.raises(ValueError, match=r"ranks\[2\] must be in \[1, 5\]"):
    schatten.latent_complexity((5, 5, 5), (1, 1, 6))
  with pytest.raises(ValueError, match="positive integers"):
    schatten.latent_complexity((5, 0, 5), (1, 1, 1))
