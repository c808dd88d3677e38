"""Tests for tomioka_jax.tensor._prox: optimality conditions, Moreau decomposition, pairings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tomioka_jax.tensor import _completion as completion
from tomioka_jax.tensor import _ops as ops
from tomioka_jax.tensor import _prox as prox

SHAPE = (6, 5, 4)
WEIGHTS = (1.0, 0.7, 1.3)


def _randn(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape))


def _svt_reference(m, tau):
  u, s, vt = np.linalg.svd(np.asarray(m, np.float64), full_matrices=False)
  return (u * np.maximum(s - tau, 0)) @ vt


@pytest.mark.parametrize("shape", [(8, 40), (40, 8), (12, 12)])
@pytest.mark.parametrize("method", ["svd", "gram"])
def test_svt_matches_svd_reference_float64(shape, method):
  with jax.enable_x64(True):
    m = _randn(shape, seed=1)
    tau = 0.5 * float(np.linalg.svd(np.asarray(m), compute_uv=False)[2])
    out = prox.singular_value_thresholding(m, tau, method=method)
    assert out.dtype == jnp.float64
    np.testing.assert_allclose(out, _svt_reference(m, tau), atol=1e-10)


def test_svt_float32_gram_path_and_subgradient_condition():
  m = _randn((10, 60), seed=2).astype(jnp.float32)
  tau = 3.0
  z = prox.singular_value_thresholding(m, tau, method="gram")
  assert z.dtype == jnp.float32
  np.testing.assert_allclose(z, _svt_reference(m, tau), atol=2e-4)
  # (M - Z) / tau is a subgradient of ||.||_* at Z: spectral norm <= 1, <M - Z, Z> = tau ||Z||_*.
  r = np.asarray(m - z, np.float64)
  assert np.linalg.norm(r, 2) <= tau * (1 + 1e-4)
  np.testing.assert_allclose(np.vdot(r, np.asarray(z, np.float64)),
                             tau * np.linalg.svd(np.asarray(z, np.float64), compute_uv=False).sum(),
                             rtol=1e-4)


def test_singular_values_spectral_and_nuclear_norms():
  with jax.enable_x64(True):
    m = _randn((7, 30), seed=3)
    s = np.linalg.svd(np.asarray(m), compute_uv=False)
    for method in ("svd", "gram"):
      np.testing.assert_allclose(np.sort(prox.singular_values(m, method=method)), np.sort(s),
                                 rtol=1e-10)
    np.testing.assert_allclose(prox.spectral_norm(m), s[0], rtol=1e-12)
    np.testing.assert_allclose(prox.spectral_norm(m.T), s[0], rtol=1e-12)
    np.testing.assert_allclose(prox.nuclear_norm(m), s.sum(), rtol=1e-10)
    ball = prox.project_spectral_ball(m, s[3])
    np.testing.assert_allclose(np.linalg.svd(np.asarray(ball), compute_uv=False),
                               np.minimum(s, s[3]), rtol=1e-10)


def _check_moreau_overlapped(y, x, lam, w):
  """x = prox of lam * overlapped at y iff y - x is in lam * dual ball with <y - x, x> = lam f(x)."""
  r = y - x
  assert float(prox.overlapped_trace_norm_dual(r, w)) <= lam * (1 + 1e-3)
  np.testing.assert_allclose(jnp.vdot(r, x), lam * prox.overlapped_trace_norm(x, w), rtol=1e-6)


def test_overlapped_prox_optimality_and_moreau():
  with jax.enable_x64(True):
    y, w, lam = _randn(SHAPE), jnp.asarray(WEIGHTS), 0.8
    blocks, x = prox._overlapped_dual_split(y, lam, w, 300, "auto")
    np.testing.assert_allclose(prox.overlapped_trace_norm_prox(y, lam, w), x, atol=1e-12)
    assert float(jnp.linalg.norm(x)) > 0.5  # not the trivial prox
    # Subgradient conditions: y - x = sum_k A_k, ||A_k,(k)||_op <= lam g_k, and
    # <A_k,(k), X_(k)> = lam g_k ||X_(k)||_* for every k (so y - x in lam * d f(x)).
    np.testing.assert_allclose(sum(blocks), y - x, atol=1e-12)
    for k, b in enumerate(blocks):
      assert float(prox.spectral_norm(ops.unfold(b, k))) <= lam * WEIGHTS[k] * (1 + 1e-9)
      np.testing.assert_allclose(jnp.vdot(b, x),
                                 lam * WEIGHTS[k] * prox.nuclear_norm(ops.unfold(x, k)),
                                 rtol=1e-6)
    _check_moreau_overlapped(y, x, lam, w)
    # lam above the dual norm sends the prox to zero.
    big = 1.01 * float(prox.overlapped_trace_norm_dual(y, w))
    assert float(jnp.abs(prox.overlapped_trace_norm_prox(y, big, w)).max()) < 1e-4


def test_latent_prox_optimality_and_moreau():
  with jax.enable_x64(True):
    y, w, lam = _randn(SHAPE, seed=4), jnp.asarray(WEIGHTS), 0.8
    out = prox.latent_trace_norm_prox(y, lam, w)
    np.testing.assert_allclose(out.components.sum(0), out.x, atol=1e-12)
    r = y - out.x
    # Moreau: y - x is the projection onto the lam-ball of the dual, max_k ||R_(k)||_op / g_k.
    assert float(prox.latent_trace_norm_dual(r, w)) <= lam * (1 + 1e-9)
    # Each component: R_(k) in lam g_k d||W_k,(k)||_*.
    for k in range(3):
      wk = out.components[k]
      np.testing.assert_allclose(jnp.vdot(r, wk),
                                 lam * WEIGHTS[k] * prox.nuclear_norm(ops.unfold(wk, k)),
                                 rtol=1e-7, atol=1e-10)
    # <R, x> = lam * latent(x): the split is optimal, checked against the ADMM value.
    np.testing.assert_allclose(jnp.vdot(r, out.x), lam * completion.latent_trace_norm(out.x, w),
                               rtol=1e-4)


def test_scaled_latent_is_latent_with_inverse_sqrt_weights():
  with jax.enable_x64(True):
    y = _randn(SHAPE, seed=5)
    w = 1 / np.sqrt(np.asarray(SHAPE, np.float64))
    np.testing.assert_allclose(prox.scaled_latent_trace_norm_dual(y),
                               max(np.sqrt(n) * np.linalg.norm(ops.unfold(y, k), 2)
                                   for k, n in enumerate(SHAPE)), rtol=1e-10)
    np.testing.assert_allclose(prox.scaled_latent_trace_norm_prox(y, 0.3).x,
                               prox.latent_trace_norm_prox(y, 0.3, w).x, atol=1e-12)


def test_latent_norm_dual_pairing_equality_at_maximizer():
  with jax.enable_x64(True):
    y, w = _randn(SHAPE, seed=6), np.asarray(WEIGHTS)
    ratios = [np.linalg.norm(ops.unfold(y, k), 2) / w[k] for k in range(3)]
    k = int(np.argmax(ratios))
    np.testing.assert_allclose(prox.latent_trace_norm_dual(y, w), ratios[k], rtol=1e-10)
    # X = the top singular pair of Y_(k*) folded back: <X, Y> = ||Y||_dual * g_k*, and the
    # pairing inequality forces latent(X) = g_k*.
    u, _, vt = np.linalg.svd(np.asarray(ops.unfold(y, k)))
    x = ops.fold(np.outer(u[:, 0], vt[0]), k, SHAPE)
    np.testing.assert_allclose(jnp.vdot(x, y), w[k] * ratios[k], rtol=1e-10)
    np.testing.assert_allclose(completion.latent_trace_norm(x, w), w[k], rtol=1e-5)
    # Hoelder for a random pair.
    x2 = _randn(SHAPE, seed=7)
    assert float(jnp.vdot(x2, y)) <= float(completion.latent_trace_norm(x2, w) *
                                           prox.latent_trace_norm_dual(y, w))


def test_overlapped_norm_dual_pairing_equality_at_subgradient():
  with jax.enable_x64(True):
    w = np.asarray(WEIGHTS)
    x = ops.tucker_to_tensor(*ops.random_tucker(jax.random.key(0), SHAPE, (2, 2, 2), jnp.float64))
    # G = sum_k g_k fold(U_k V_k^T) is a subgradient of the overlapped norm at X, so
    # <X, G> = ||X|| and ||G||_dual = 1 exactly.
    g = 0
    for k in range(3):
      u, s, vt = np.linalg.svd(np.asarray(ops.unfold(x, k)), full_matrices=False)
      r = int((s > 1e-9 * s[0]).sum())
      g = g + w[k] * ops.fold(u[:, :r] @ vt[:r], k, SHAPE)
    np.testing.assert_allclose(jnp.vdot(x, g), prox.overlapped_trace_norm(x, w), rtol=1e-7)
    np.testing.assert_allclose(prox.overlapped_trace_norm_dual(g, w), 1.0, rtol=1e-3)
    np.testing.assert_allclose(prox.overlapped_trace_norm(jnp.ones((2, 3, 4))),
                               np.sqrt(24) * 3, rtol=1e-5)


def test_bad_inputs():
  with pytest.raises(ValueError, match="method must be one of"):
    prox.singular_value_thresholding(jnp.eye(3), 1.0, method="qr")
  with pytest.raises(ValueError, match="weights must be positive"):
    prox.overlapped_trace_norm(jnp.ones((2, 2, 2)), (1.0, -1.0, 1.0))
  with pytest.raises(ValueError, match=r"weights must have shape \(3,\)"):
    prox.latent_trace_norm_dual(jnp.ones((2, 2, 2)), (1.0, 1.0))


def test_matrix_functions_reject_tensors_and_negative_thresholds():
  x = jnp.ones((3, 4, 5))
  for fn in (lambda m: prox.singular_value_thresholding(m, 1.0), prox.singular_values,
             prox.spectral_norm, prox.nuclear_norm):
    with pytest.raises(ValueError, match=r"matrix must be a 2-D matrix \(m x n\), got shape "
                       r"\(3, 4, 5\); unfold a tensor first"):
      fn(x)
  m = jnp.eye(3)
  with pytest.raises(ValueError, match="tau must be >= 0, got tau=-0.5"):
    prox.singular_value_thresholding(m, -0.5)
  with pytest.raises(ValueError, match="tau must be >= 0, got tau=nan"):
    prox.singular_value_thresholding(m, float("nan"))
  with pytest.raises(ValueError, match="radius must be >= 0"):
    prox.project_spectral_ball(m, -1.0)
  for fn in (prox.overlapped_trace_norm_prox, prox.latent_trace_norm_prox,
             prox.scaled_latent_trace_norm_prox):
    with pytest.raises(ValueError, match="lam must be >= 0, got lam=-0.1"):
      fn(x, -0.1)
  # Traced thresholds are not checked (the docstring says tau >= 0), and work.
  out = jax.jit(prox.singular_value_thresholding)(m, 0.25)
  np.testing.assert_allclose(out, 0.75 * np.eye(3), rtol=1e-6)
