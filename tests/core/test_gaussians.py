"""Tests of the diagonal-Gaussian helpers against closed forms and distrax."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tomioka_jax.core import _gaussians as gaussians


def test_product_is_the_posterior_of_noisy_observations():
  """Observing theta through y_i ~ N(theta, v_i) under a flat prior: the posterior is the
  product of the N(y_i, v_i), with precision sum_i 1/v_i and precision-weighted mean."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    y = rng.normal(size=(5, 3))
    v = rng.uniform(0.1, 2.0, size=(5, 3))
    mean, log_var = gaussians.product_of_gaussians(y, np.log(v), axis=0)
    precision = np.sum(1 / v, axis=0)
    np.testing.assert_allclose(np.exp(-log_var), precision, rtol=1e-12)
    np.testing.assert_allclose(mean, np.sum(y / v, axis=0) / precision, rtol=1e-12)
    # The log of the product of densities differs from log N(z; mean, var) by a constant.
    zs = rng.normal(size=(4, 3))
    diffs = [float(jnp.sum(gaussians.diag_gaussian_log_prob(z[None], y, np.log(v))) -
                   gaussians.diag_gaussian_log_prob(z, mean, log_var)) for z in zs]
    np.testing.assert_allclose(diffs, diffs[0], rtol=1e-10)


def test_mask_and_prior():
  with jax.enable_x64(True):
    rng = np.random.default_rng(1)
    m = rng.normal(size=(2, 4, 3))
    lv = rng.normal(size=(2, 4, 3))
    mask = np.array([[1, 1, 0, 1], [1, 0, 0, 0]])
    mean, log_var = gaussians.product_of_gaussians(m, lv, axis=1, mask=mask)
    for g in range(2):
      keep = mask[g] == 1
      ref_mean, ref_lv = gaussians.product_of_gaussians(m[g, keep], lv[g, keep], axis=0)
      np.testing.assert_allclose(mean[g], ref_mean, rtol=1e-12)
      np.testing.assert_allclose(log_var[g], ref_lv, rtol=1e-12)
    # A prior of precision lam is one more factor N(0, 1/lam).
    lam = 2.5
    with_prior = gaussians.product_of_gaussians(m[0], lv[0], prior_precision=lam)
    extra = gaussians.product_of_gaussians(
        np.concatenate([m[0], np.zeros((1, 3))]),
        np.concatenate([lv[0], np.full((1, 3), -np.log(lam))]))
    np.testing.assert_allclose(with_prior[0], extra[0], rtol=1e-12)
    np.testing.assert_allclose(with_prior[1], extra[1], rtol=1e-12)


def test_kl_and_log_prob_match_distrax():
  rng = np.random.default_rng(2)
  mean = rng.normal(size=(6, 4)).astype(np.float32)
  log_var = rng.normal(size=(6, 4)).astype(np.float32)
  q = distrax.MultivariateNormalDiag(mean, jnp.exp(0.5 * log_var))
  p = distrax.MultivariateNormalDiag(jnp.zeros((6, 4)), jnp.ones((6, 4)))
  np.testing.assert_allclose(gaussians.kl_to_standard_normal(mean, log_var),
                             q.kl_divergence(p), rtol=1e-5)
  x = rng.normal(size=(6, 4)).astype(np.float32)
  np.testing.assert_allclose(gaussians.diag_gaussian_log_prob(x, mean, log_var), q.log_prob(x),
                             rtol=1e-5)


def test_reparameterized_sample_moments_and_gradient():
  mean, log_var = jnp.array([1.0, -2.0]), jnp.array([0.0, np.log(4.0)])
  z = jax.vmap(lambda k: gaussians.reparameterized_sample(k, mean, log_var))(
      jax.random.split(jax.random.key(0), 20000))
  np.testing.assert_allclose(z.mean(0), mean, atol=0.05)  # 4 standard errors at n = 20000
  np.testing.assert_allclose(z.var(0), [1.0, 4.0], rtol=0.05)
  g = jax.grad(lambda m: jnp.sum(gaussians.reparameterized_sample(jax.random.key(1), m,
                                                                  log_var)))(mean)
  np.testing.assert_allclose(g, [1.0, 1.0])


def test_bad_input():
  with pytest.raises(ValueError, match="mean and log_var must have equal shapes"):
    gaussians.product_of_gaussians(np.zeros((2, 3)), np.zeros((2, 4)))
  with pytest.raises(ValueError, match=r"mask must have shape \(2,\)"):
    gaussians.product_of_gaussians(np.zeros((2, 3)), np.zeros((2, 3)), mask=np.ones(3))
  with pytest.raises(ValueError, match="prior_precision must be >= 0"):
    gaussians.product_of_gaussians(np.zeros((2, 3)), np.zeros((2, 3)), prior_precision=-1.0)


# ---------------------------------------------------------------- the distribution object
def test_diagonal_normal_log_prob_matches_scipy_and_the_function():
  """DiagonalNormal's density is scipy's multivariate normal with diagonal covariance, and is
  diag_gaussian_log_prob; (K, d) values broadcast against a (d,) loc (strict rank promotion)."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(3)
  with jax.enable_x64(True):
    loc, scale = rng.normal(size=4), np.exp(rng.normal(size=4))
    x = rng.normal(size=(5, 4))
    q = gaussians.DiagonalNormal(loc, scale)
    ref = stats.multivariate_normal(loc, np.diag(scale**2)).logpdf(x)
    np.testing.assert_allclose(q.log_prob(x), ref, rtol=1e-12)
    np.testing.assert_allclose(gaussians.diag_gaussian_log_prob(x, loc, 2 * np.log(scale)), ref,
                               rtol=1e-12)
    assert q.event_shape == (4,) and q.batch_shape == ()


def test_diagonal_normal_samples_and_their_log_prob():
  loc, scale = jnp.array([1.0, -2.0]), jnp.array([0.5, 2.0])
  q = gaussians.DiagonalNormal(loc, scale)
  z, log_q = q.sample_and_log_prob(seed=jax.random.key(0), sample_shape=20000)
  assert z.shape == (20000, 2)
  np.testing.assert_allclose(z.mean(0), loc, atol=0.05)  # > 3 standard errors
  np.testing.assert_allclose(z.std(0), scale, rtol=0.03)
  np.testing.assert_allclose(log_q, q.log_prob(z), rtol=1e-6)
  # Reparameterised: d z / d loc = 1.
  g = jax.grad(lambda m: jnp.sum(gaussians.DiagonalNormal(m, scale).sample(
      seed=jax.random.key(1))))(loc)
  np.testing.assert_allclose(g, [1.0, 1.0])


# ---------------------------------------------------------------- the IWAE estimator
def test_log_mean_exp_is_stable():
  a = jnp.array([[1000.0, 1000.0 + np.log(3.0)], [-1e4, -1e4], [-jnp.inf, 2.0]])
  out = gaussians.log_mean_exp(a, axis=-1)
  np.testing.assert_allclose(out, [1000.0 + np.log(2.0), -1e4, 2.0 - np.log(2.0)], rtol=1e-6)
  ref = np.log(np.mean(np.exp(np.float64([0.1, -2.0, 3.0]))))
  np.testing.assert_allclose(gaussians.log_mean_exp(jnp.array([0.1, -2.0, 3.0])), ref,
                             rtol=1e-6)
  grad = jax.grad(gaussians.log_mean_exp)(jnp.array([500.0, 500.0]))
  np.testing.assert_allclose(grad, [0.5, 0.5], rtol=1e-6)


def _conjugate_log_weights(key, x, q_mean, q_var, num_samples):
  """log w_k = log p(x | z_k) + log p(z_k) - log q(z_k) for z ~ N(0, 1), x | z ~ N(z, 1),
  z_k ~ q = N(q_mean, q_var): a model with log p(x) = log N(x; 0, 2) in closed form."""
  q = gaussians.DiagonalNormal(jnp.array([q_mean]), jnp.sqrt(jnp.array([q_var])))
  z, log_q = q.sample_and_log_prob(seed=key, sample_shape=num_samples)
  zeros = jnp.zeros_like(z)
  log_joint = (gaussians.diag_gaussian_log_prob(jnp.full_like(z, x), z, zeros) +
               gaussians.diag_gaussian_log_prob(z, zeros, zeros))
  return log_joint - log_q


def test_iwae_bound_equals_elbo_at_one_sample_and_tightens_to_log_evidence():
  """On a conjugate model: L_1 is the one-sample ELBO, L_K >= mean of its K ELBOs (Jensen,
  sample by sample), E[L_K] increases with K and stays below log p(x), which the exact
  posterior q = N(x/2, 1/2) attains with zero variance."""
  with jax.enable_x64(True):
    x = 1.3
    log_px = -0.5 * (np.log(2 * np.pi * 2.0) + x**2 / 2.0)
    # The closed-form ELBO of q = N(m, s2): E_q[log p(x|z) + log p(z)] + entropy.
    m, s2 = 0.2, 0.8
    elbo = (-0.5 * ((x - m) ** 2 + s2) - 0.5 * (m**2 + s2) - np.log(2 * np.pi) +
            0.5 * np.log(2 * np.pi * np.e * s2))
    keys = jax.random.split(jax.random.key(0), 4000)
    means = {}
    for k in (1, 4, 32):
      log_w = jax.vmap(lambda key, k=k: _conjugate_log_weights(key, x, m, s2, k))(keys)
      bound = jax.vmap(gaussians.log_mean_exp)(log_w)
      assert np.all(bound >= log_w.mean(1) - 1e-12)  # Jensen, for every draw
      if k == 1:
        np.testing.assert_array_equal(bound, log_w[:, 0])
      means[k] = float(bound.mean())
    np.testing.assert_allclose(means[1], elbo, atol=4 * float(
        jax.vmap(lambda key: _conjugate_log_weights(key, x, m, s2, 1))(keys).std()) / 63)
    assert elbo < means[4] < means[32] < log_px
    exact = jax.vmap(lambda key: gaussians.log_mean_exp(
        _conjugate_log_weights(key, x, x / 2, 0.5, 8)))(keys[:10])
    np.testing.assert_allclose(exact, log_px, rtol=1e-12)
