"""Tests for tomioka_jax.tensor._regression: duality gaps, KKT conditions, a slow reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tomioka_jax.tensor import _ops as ops
from tomioka_jax.tensor import _prox as prox
from tomioka_jax.tensor import _regression as regression

SHAPE = (4, 4, 3)
M = 50


def _data(loss="squared", ranks=(1, 1, 1), m=M, shape=SHAPE, seed=0, dtype=jnp.float64,
          noise=0.1, scale=1.0):
  kw, kx, kn = jax.random.split(jax.random.key(seed), 3)
  w = scale * ops.tucker_to_tensor(*ops.random_tucker(kw, shape, ranks, dtype))
  x = jax.random.normal(kx, (m, *shape), dtype)
  z = jnp.einsum("i...,...->i", x, w) + 0.3
  if loss == "squared":
    y = z + noise * jax.random.normal(kn, (m,), dtype)
  else:
    y = jnp.where(jax.random.uniform(kn, (m,), dtype) < jax.nn.sigmoid(z), 1.0, -1.0)
  return x, y.astype(dtype), w


def _grad(res, x, y, loss):
  """The loss gradient in W at the solution, from the predictions (not from alpha)."""
  d = regression.loss_gradient(loss, regression.predict_regression(res, x), y)
  return jnp.einsum("i,i...->...", d, x), d


def _objective(w, b, x, y, loss, lam, norm):
  z = jnp.einsum("i...,...->i", x, w) + b
  fit = regression.loss_value(loss, z, y, jnp.ones(y.shape, bool))
  return fit + lam * norm(w)


# --------------------------------------------------------------------------- optimality


@pytest.mark.parametrize("norm", ["overlapped", "latent", "scaled_latent", "matrix",
                                  "frobenius"])
def test_duality_gap_reaches_tolerance(norm):
  with jax.enable_x64(True):
    x, y, _ = _data()
    res = regression.fit_regression(x, y, norm=norm, lam=2.0, tol=1e-5, max_iter=5000,
                         mode=1 if norm == "matrix" else None)
    assert bool(res.converged) and -1e-12 <= float(res.gap) <= 1e-5  # rounding below 0
    assert float(res.dual) <= float(res.primal) * (1 + 1e-12)
    assert int(res.iterations) < 5000
    # The bias condition sum_i alpha_i = 0, and alpha is minus the loss gradient (residual).
    np.testing.assert_allclose(jnp.sum(res.alpha), 0, atol=1e-10)
    if norm != "frobenius":
      np.testing.assert_allclose(res.alpha, y - regression.predict_regression(res, x), atol=1e-2)


def test_overlapped_kkt_gradient_in_subdifferential():
  # -grad L(W) in lam * d||W||_overlapped: dual norm <= lam, and <-grad, W> = lam ||W||.
  with jax.enable_x64(True):
    x, y, _ = _data()
    lam = 2.0
    res = regression.fit_regression(x, y, norm="overlapped", lam=lam, tol=1e-8, max_iter=20000)
    assert bool(res.converged)
    g, d = _grad(res, x, y, "squared")
    np.testing.assert_allclose(jnp.sum(d), 0, atol=1e-6)
    assert float(prox.overlapped_trace_norm_dual(-g)) <= lam * (1 + 1e-3)
    np.testing.assert_allclose(jnp.vdot(-g, res.W), lam * prox.overlapped_trace_norm(res.W),
                               rtol=1e-4)
    # A nonzero, genuinely low-rank solution: the check is not vacuous.
    assert float(jnp.linalg.norm(res.W)) > 0.1
    s = prox.singular_values(ops.unfold(res.W, 0))
    assert int(jnp.sum(s > 1e-6 * jnp.max(s))) < SHAPE[0]


@pytest.mark.parametrize("norm", ["latent", "scaled_latent"])
def test_latent_kkt_each_component(norm):
  # Dual norm max_k ||G_(k)||_op / g_k <= lam, with equality and alignment on every mode
  # whose component is nonzero: <-G, W_k> = lam g_k ||W_k,(k)||_*.
  with jax.enable_x64(True):
    x, y, _ = _data(ranks=(1, 3, 3))
    lam = 2.0
    res = regression.fit_regression(x, y, norm=norm, lam=lam, tol=1e-8, max_iter=20000)
    assert bool(res.converged)
    g, _ = _grad(res, x, y, "squared")
    weights = (prox.scaled_latent_weights(SHAPE, jnp.float64) if norm == "scaled_latent"
               else jnp.ones(3))
    assert float(prox.latent_trace_norm_dual(-g, weights)) <= lam * (1 + 1e-4)
    active = 0
    for k in range(3):
      wk = res.components[k]
      nuc = prox.nuclear_norm(ops.unfold(wk, k))
      if float(nuc) > 1e-6:
        active += 1
        np.testing.assert_allclose(prox.spectral_norm(ops.unfold(g, k)), lam * weights[k],
                                   rtol=1e-4)
        np.testing.assert_allclose(jnp.vdot(-g, wk), lam * weights[k] * nuc, rtol=1e-4)
    assert active >= 1


# --------------------------------------------------------------------------- slow reference


def _unfold(t, k):
  return np.moveaxis(t, k, 0).reshape(t.shape[k], -1)


def _fold(m, k, shape):
  rest = [n for j, n in enumerate(shape) if j != k]
  return np.moveaxis(m.reshape(shape[k], *rest), 0, k)


def _svt(m, tau):
  u, s, vt = np.linalg.svd(m, full_matrices=False)
  return (u * np.maximum(s - tau, 0)) @ vt


def _fista_latent(x, y, lam, weights, iters):
  """Accelerated proximal gradient on (W_1, ..., W_K, b): the latent prox is separable."""
  x = np.asarray(x)
  y = np.asarray(y)
  m, shape = x.shape[0], x.shape[1:]
  xm = np.concatenate([x.reshape(m, -1), np.ones((m, 1))], axis=1)
  k_modes = len(shape)
  step = 1 / (k_modes * np.linalg.norm(xm, 2) ** 2)
  comps = np.zeros((k_modes, *shape))
  b = 0.0
  prev = (comps, b)
  t = 1.0
  ext = (comps, b)
  for _ in range(iters):
    c_e, b_e = ext
    r = xm @ np.concatenate([c_e.sum(0).ravel(), [b_e]]) - y
    g = xm.T @ r
    gw, gb = g[:-1].reshape(shape), g[-1]
    # A zero weight switches the component off (the single-unfolding problem).
    new = np.stack([
        _fold(_svt(_unfold(c_e[k] - step * gw, k), step * lam * weights[k]), k, shape)
        if weights[k] > 0
        else np.zeros(shape) for k in range(k_modes)])
    new_b = b_e - step * gb
    t_new = (1 + np.sqrt(1 + 4 * t * t)) / 2
    beta = (t - 1) / t_new
    ext = (new + beta * (new - prev[0]), new_b + beta * (new_b - prev[1]))
    prev, t = (new, new_b), t_new
  return prev


@pytest.mark.parametrize("norm", ["latent", "matrix"])
def test_agrees_with_slow_proximal_gradient(norm):
  with jax.enable_x64(True):
    x, y, _ = _data(m=30, seed=3)
    lam = 3.0
    if norm == "latent":
      weights = np.ones(3)
    else:
      weights = np.array([0.0, 1.0, 0.0])  # one unfolding: the others' components stay 0
    comps, b = _fista_latent(x, y, lam, weights, 4000)
    w_ref = comps.sum(0)
    res = regression.fit_regression(x, y, norm=norm, lam=lam, tol=1e-9, max_iter=20000,
                         mode=1 if norm == "matrix" else None)
    assert bool(res.converged)
    np.testing.assert_allclose(res.W, w_ref, atol=2e-4 * np.abs(w_ref).max())
    np.testing.assert_allclose(res.b, b, atol=1e-4)
    ref_obj = _objective(jnp.asarray(w_ref), b, x, y, "squared", 0.0, lambda w: 0.0) + lam * sum(
        weights[k] * np.linalg.svd(_unfold(comps[k], k), compute_uv=False).sum()
        for k in range(3))
    np.testing.assert_allclose(res.primal, ref_obj, rtol=1e-6)


def test_overlapped_agrees_with_proximal_gradient_on_the_overlapped_prox():
  with jax.enable_x64(True):
    x, y, _ = _data(m=30, seed=4)
    lam = 3.0
    xm = jnp.concatenate([x.reshape(30, -1), jnp.ones((30, 1))], axis=1)
    step = 1 / float(jnp.linalg.norm(xm, 2) ** 2)
    prox_fn = jax.jit(lambda v: prox.overlapped_trace_norm_prox(v, step * lam, num_iters=60))
    w, b = jnp.zeros(SHAPE), 0.0
    for _ in range(600):  # plain proximal gradient; the prox is the library's BCD
      r = xm @ jnp.concatenate([w.ravel(), jnp.array([b])]) - y
      g = xm.T @ r
      w = prox_fn(w - step * g[:-1].reshape(SHAPE))
      b = b - step * g[-1]
    res = regression.fit_regression(x, y, norm="overlapped", lam=lam, tol=1e-9, max_iter=20000)
    ref = _objective(w, b, x, y, "squared", lam, prox.overlapped_trace_norm)
    assert float(res.primal) <= float(ref) * (1 + 1e-6)  # at least as good as the reference
    np.testing.assert_allclose(res.primal, ref, rtol=1e-4)
    np.testing.assert_allclose(res.W, w, atol=2e-3 * float(jnp.abs(w).max()))


# --------------------------------------------------------------------------- statistics


def test_recovers_a_low_rank_weight_tensor_with_enough_samples():
  with jax.enable_x64(True):
    x, y, w = _data(ranks=(1, 1, 1), seed=5, noise=0.01, scale=3.0)
    train = jnp.arange(M) < 40  # 40 samples < 48 unknowns: least squares cannot recover W
    res = regression.fit_regression(x, y, norm="overlapped", lam=0.05, tol=1e-5, max_iter=5000,
                         sample_mask=train)
    err = float(jnp.linalg.norm(res.W - w) / jnp.linalg.norm(w))
    ridge = regression.fit_regression(x, y, norm="frobenius", lam=0.05, sample_mask=train)
    err_ridge = float(jnp.linalg.norm(ridge.W - w) / jnp.linalg.norm(w))
    assert err < 0.05 and err_ridge > 0.2, (err, err_ridge)
    np.testing.assert_allclose(res.b, 0.3, atol=0.02)
    # Held-out samples are predicted to the noise level.
    np.testing.assert_allclose(regression.predict_regression(res, x[40:]), y[40:], atol=0.1)


# --------------------------------------------------------------------------- logistic


def test_logistic_gradient_matches_finite_differences():
  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    z = jnp.asarray(rng.standard_normal(7) * 2)
    y = jnp.asarray(np.where(rng.random(7) < 0.5, -1.0, 1.0))
    mask = jnp.ones(7, bool)
    h = 1e-6
    for i in range(7):
      e = jnp.zeros(7).at[i].set(h)
      fd = (regression.loss_value("logistic", z + e, y, mask) -
            regression.loss_value("logistic", z - e, y, mask)) / (2 * h)
      np.testing.assert_allclose(regression.loss_gradient("logistic", z, y)[i], fd, rtol=1e-7)
    # The conjugate pair: l(z) + l*(a) = a z at a = l'(z) (Fenchel-Young equality).
    a = regression.loss_gradient("logistic", z, y)
    np.testing.assert_allclose(
        regression.loss_value("logistic", z, y, mask) - regression.dual_loss_value(
            "logistic", -a, y, mask), jnp.vdot(a, z), rtol=1e-10)


@pytest.mark.parametrize("norm", ["overlapped", "latent"])
def test_logistic_solution_is_stationary_by_finite_differences(norm):
  with jax.enable_x64(True):
    x, y, _ = _data(loss="logistic", scale=3.0, seed=1)
    lam = 1.0
    res = regression.fit_regression(x, y, norm=norm, loss="logistic", lam=lam, tol=1e-8, max_iter=5000)
    assert bool(res.converged) and float(res.gap) <= 1e-8
    # alpha_i = -l'(z_i) with the derivative taken by finite differences.
    z = regression.predict_regression(res, x)
    mask = jnp.ones(M, bool)
    h = 1e-6
    fd = jnp.stack([(regression.loss_value("logistic", z + h * e, y, mask) -
                     regression.loss_value("logistic", z - h * e, y, mask)) / (2 * h)
                    for e in jnp.eye(M)])
    np.testing.assert_allclose(res.alpha, -fd, atol=1e-5)
    # The objective is flat along the solution's own ray (the norm is 1-homogeneous) and
    # along the bias.
    if norm == "overlapped":
      reg = prox.overlapped_trace_norm
    else:
      reg = lambda w: sum(prox.nuclear_norm(ops.unfold(res.components[k], k))  # noqa: E731
                          for k in range(3)) * jnp.linalg.norm(w) / jnp.linalg.norm(res.W)
    f = lambda s, db: _objective((1 + s) * res.W, res.b + db, x, y, "logistic", lam, reg)  # noqa: E731
    assert abs(float(f(h, 0) - f(-h, 0)) / (2 * h)) < 1e-4 * float(f(0, 0))
    assert abs(float(f(0, h) - f(0, -h)) / (2 * h)) < 1e-4 * float(f(0, 0))
    # It classifies its training set better than chance.
    assert float(jnp.mean(jnp.sign(z) == y)) > 0.7


def test_logistic_ridge_matches_newton_on_the_primal():
  with jax.enable_x64(True):
    x, y, _ = _data(loss="logistic", scale=3.0, seed=2)
    lam = 0.5
    res = regression.fit_regression(x, y, norm="frobenius", loss="logistic", lam=lam, tol=1e-10)
    assert bool(res.converged)
    xm = np.concatenate([np.asarray(x).reshape(M, -1), np.ones((M, 1))], axis=1)
    yn = np.asarray(y)
    reg = np.eye(xm.shape[1]) * lam
    reg[-1, -1] = 0  # the bias is not penalized
    v = np.zeros(xm.shape[1])
    for _ in range(30):  # Newton on the primal, with its own gradient and Hessian
      p = 1 / (1 + np.exp(yn * (xm @ v)))  # sigmoid(-y z)
      grad = -xm.T @ (yn * p) + reg @ v
      hess = xm.T @ (xm * (p * (1 - p))[:, None]) + reg
      v = v - np.linalg.solve(hess, grad)
    np.testing.assert_allclose(res.W.ravel(), v[:-1], atol=1e-8)
    np.testing.assert_allclose(res.b, v[-1], atol=1e-8)


# --------------------------------------------------------------------------- mechanics


def test_jit_matches_eager_and_mask_matches_subset():
  with jax.enable_x64(True):
    x, y, _ = _data()
    kw = dict(norm="latent", lam=2.0, tol=1e-6, max_iter=3000)
    eager = regression.fit_regression(x, y, **kw)
    jitted = jax.jit(lambda a, b: regression.fit_regression(a, b, **kw))(x, y)
    np.testing.assert_allclose(jitted.W, eager.W, atol=1e-10)
    assert int(jitted.iterations) == int(eager.iterations)
    np.testing.assert_allclose(jnp.sum(eager.alpha), 0, atol=1e-10)
    # Masked-out samples are ignored: the same solve as on the subset.
    mask = jnp.arange(M) < 35
    masked = regression.fit_regression(x, y, sample_mask=mask, **kw)
    np.testing.assert_allclose(masked.alpha[35:], 0, atol=1e-12)
    ridge_masked = regression.fit_regression(x, y, norm="frobenius", lam=2.0, sample_mask=mask)
    ridge_subset = regression.fit_regression(x[:35], y[:35], norm="frobenius", lam=2.0)
    np.testing.assert_allclose(ridge_masked.W, ridge_subset.W, atol=1e-10)
    np.testing.assert_allclose(ridge_masked.b, ridge_subset.b, atol=1e-10)


def test_float32_matches_float64():
  with jax.enable_x64(True):
    x, y, _ = _data()
    ref = regression.fit_regression(x, y, norm="overlapped", lam=2.0, tol=1e-6, max_iter=5000)
    res = regression.fit_regression(x.astype(jnp.float32), y.astype(jnp.float32), norm="overlapped",
                         lam=2.0, tol=1e-3, max_iter=5000)
    assert res.W.dtype == jnp.float32 and res.alpha.dtype == jnp.float32
    assert bool(res.converged)
    np.testing.assert_allclose(res.W, ref.W, atol=0.02 * float(jnp.abs(ref.W).max()))
    np.testing.assert_allclose(regression.predict_regression(res, x.astype(jnp.float32)),
                               regression.predict_regression(ref, x), atol=0.05)


def test_bad_inputs():
  x, y, _ = _data(dtype=jnp.float32)
  with pytest.raises(ValueError, match="norm must be one of"):
    regression.fit_regression(x, y, norm="nuclear", lam=1.0)
  with pytest.raises(ValueError, match="loss must be one of"):
    regression.fit_regression(x, y, norm="latent", loss="hinge", lam=1.0)
  with pytest.raises(ValueError, match=r"y must have shape \(n_samples,\)"):
    regression.fit_regression(x, y[:-1], norm="latent", lam=1.0)
  with pytest.raises(ValueError, match="X must have shape"):
    regression.fit_regression(x[:, :, 0, 0], y, norm="latent", lam=1.0)
  with pytest.raises(ValueError, match="lam must be > 0, got -1.0"):
    regression.fit_regression(x, y, norm="latent", lam=-1.0)
  with pytest.raises(ValueError, match="tol must be > 0"):
    regression.fit_regression(x, y, norm="latent", lam=1.0, tol=0.0)
  with pytest.raises(ValueError, match="max_iter must be a positive integer"):
    regression.fit_regression(x, y, norm="latent", lam=1.0, max_iter=0)
  with pytest.raises(ValueError, match="eta must be > 0"):
    regression.fit_regression(x, y, norm="latent", lam=1.0, eta=-2.0)
  with pytest.raises(ValueError, match="adapt_every must be a non-negative integer"):
    regression.fit_regression(x, y, norm="latent", lam=1.0, adapt_every=-1)
  with pytest.raises(ValueError, match=r"mode must be an integer in \[0, 3\)"):
    regression.fit_regression(x, y, norm="matrix", lam=1.0)
  with pytest.raises(ValueError, match="mode is only used with norm='matrix'"):
    regression.fit_regression(x, y, norm="latent", lam=1.0, mode=0)
  with pytest.raises(ValueError, match="sample_mask must be a boolean array"):
    regression.fit_regression(x, y, norm="latent", lam=1.0, sample_mask=jnp.ones(3, bool))
  with pytest.raises(ValueError, match="labels in"):
    regression.fit_regression(x, y, norm="latent", loss="logistic", lam=1.0)
  with pytest.raises(ValueError, match="both labels"):
    regression.fit_regression(x, jnp.ones(M), norm="latent", loss="logistic", lam=1.0)
  zero = jnp.zeros(())
  res = regression.RegressionResult(jnp.zeros(SHAPE), zero, jnp.zeros((1, *SHAPE)),
                                    jnp.zeros(M), 0, zero, zero, zero, True, zero, 0)
  np.testing.assert_allclose(regression.predict_regression(res, x), 0)
  with pytest.raises(ValueError, match="X must have shape"):
    regression.predict_regression(res, x[:, :3])


@pytest.mark.parametrize("norm", ["overlapped", "scaled_latent"])
def test_zero_padded_inputs_give_the_same_estimate(norm):
  # benchmarks/tensor_regression.py pads inputs with zeros so that two shapes share one
  # compiled solve; with the true shape's weights and eta the ADMM's iterates are the same.
  with jax.enable_x64(True):
    x, y, _ = _data(shape=(4, 3, 3))
    pad = (5, 5, 3)
    xp = jnp.pad(x, ((0, 0), (0, 1), (0, 2), (0, 0)))
    mask = jnp.ones(y.shape, bool)
    ref = regression.fit_regression(x, y, norm=norm, lam=0.5, check_every=5)
    weights = (prox.scaled_latent_weights((4, 3, 3)) if norm == "scaled_latent"
               else jnp.ones((3,)))
    eta = regression.regression_default_eta(x, y, mask, 0.5, "squared")
    res = regression.regression_solve(xp, y, mask, 0.5, eta, 1e-3, weights, 2000, 5, 10,
                               norm="latent" if norm == "scaled_latent" else norm,
                               loss="squared", modes=(0, 1, 2))
    assert pad == res.W.shape
    np.testing.assert_allclose(res.W[:4, :3], ref.W, atol=1e-9)
    np.testing.assert_allclose(res.W[4:], 0, atol=1e-12)
    np.testing.assert_allclose(res.W[:, 3:], 0, atol=1e-12)
    assert int(res.iterations) == int(ref.iterations)
