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
