"""Tests of the wrapped VE SDE on fractional coordinates (mattergen/_coords.py): the noise
schedule, the wrapped-normal score against finite differences of the wrapped density, the
truncation bound, the factorized 343-image softmax, and reverse-time sampling on the torus."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from tomioka_jax.science.mattergen import _coords as crd


def _log_wrapped_density_1d(d, var, images=60):
  k = np.arange(-images, images + 1)
  u = d[..., None] + k
  lw = -u**2 / (2 * var[..., None])
  top = lw.max(axis=-1)
  return top + np.log(np.sum(np.exp(lw - top[..., None]), axis=-1))


def _exact_score_1d(d, var, images=60):
  k = np.arange(-images, images + 1)
  u = d[..., None] + k
  lw = -u**2 / (2 * var[..., None])
  w = np.exp(lw - lw.max(axis=-1, keepdims=True))
  w /= w.sum(axis=-1, keepdims=True)
  return -np.sum(w * u, axis=-1) / var


def test_defaults_and_noise_schedule():
  assert (crd.COORD_SDE.sigma_min, crd.COORD_SDE.sigma_max, crd.COORD_SDE.num_images) == (
      0.01, 5.0, 3)
  with jax.enable_x64(True):
    n = jnp.array([1, 8, 27])
    np.testing.assert_allclose(crd.coord_sigma(jnp.zeros(3), n), 0.01 / np.array([1, 2, 3]),
                               rtol=1e-12)
    np.testing.assert_allclose(crd.coord_sigma(jnp.ones(3), n), 5.0 / np.array([1, 2, 3]),
                               rtol=1e-12)
    # The VE SDE: d sigma_t^2 / dt = g(t)^2.
    for t in (0.1, 0.5, 0.9):
      dvar = jax.grad(lambda t: crd.coord_sigma(t[None], n[1:2])[0] ** 2)(jnp.asarray(t))
      np.testing.assert_allclose(dvar, crd.coord_diffusion(jnp.array([t]), n[1:2])[0] ** 2,
                                 rtol=1e-10)


def test_wrapped_score_matches_finite_differences_of_the_wrapped_density():
  rng = np.random.default_rng(0)
  x = rng.uniform(0, 1, (200, 3))
  mean = rng.uniform(0, 1, (200, 3))
  sig = np.exp(rng.uniform(np.log(0.01), np.log(5.0), (200, 1)))
  with jax.enable_x64(True):
    score = np.asarray(crd.wrapped_normal_score(jnp.asarray(x), jnp.asarray(mean),
                                                jnp.asarray(sig**2), num_images=3))
    exact_score = np.asarray(crd.wrapped_normal_score(jnp.asarray(x), jnp.asarray(mean),
                                                      jnp.asarray(sig**2), num_images=60))
    bound = np.asarray(crd.wrapped_normal_truncation_bound(jnp.asarray(sig[:, 0]), 3))
  h = 1e-6
  d = x - mean
  var = np.broadcast_to(sig**2, d.shape)
  fd = (_log_wrapped_density_1d(d + h, var) - _log_wrapped_density_1d(d - h, var)) / (2 * h)
  # The many-image score is the derivative of the log wrapped density (the density is a product
  # over the three axes, so each component is a 1-D derivative).
  np.testing.assert_allclose(exact_score, fd, rtol=1e-6, atol=1e-6 / sig.min() ** 2)
  # The truncated (W = 3) score is within the bound of it.
  err = np.abs(score - exact_score)
  assert np.all(np.isfinite(bound))
  assert np.all(err <= bound[:, None] * (1 + 1e-9) + 1e-12 * np.abs(exact_score))


def test_truncation_bound_holds_and_is_tight_where_the_reference_needs_it():
  d = np.linspace(-0.5, 0.5, 41)
  for w in (0, 1, 3):
    for s in (0.05, 0.2, 0.5, 1.0, 2.0, 5.0):
      var = np.full_like(d, s**2)
      with jax.enable_x64(True):
        trunc = np.asarray(crd.wrapped_normal_score(jnp.asarray(d), jnp.zeros(41),
                                                    jnp.asarray(var), num_images=w))
        bound = float(crd.wrapped_normal_truncation_bound(jnp.asarray(s), w))
      err = np.abs(trunc - _exact_score_1d(d, var, images=200))
      assert err.max() <= bound * (1 + 1e-9) + 1e-12, (w, s, err.max(), bound)
  with jax.enable_x64(True):
    b = np.asarray(crd.wrapped_normal_truncation_bound(jnp.array([0.1, 0.5, 1.0, 5.0]), 3))
  assert b[0] < 1e-100 and b[1] < 2.5e-9 and b[2] < 0.05   # sigma <= 0.5: accurate
  # At sigma_max = 5 the W = 3 score (the reference's training target) is off by O(1/sigma):
  var = np.full_like(d, 25.0)
  with jax.enable_x64(True):
    trunc = np.asarray(crd.wrapped_normal_score(jnp.asarray(d), jnp.zeros(41), jnp.asarray(var)))
  assert np.abs(trunc - _exact_score_1d(d, var, images=200)).max() * 5 > 0.05


def test_factorized_score_equals_the_343_image_softmax():
  rng = np.random.default_rng(1)
  x, mean = rng.uniform(0, 1, (50, 3)), rng.uniform(0, 1, (50, 3))
  var = rng.uniform(0.01, 4.0, (50, 1))
  d = x - mean
  d = d - np.round(d)
  k = np.stack(np.meshgrid(*[np.arange(-3, 4)] * 3, indexing="ij"), -1).reshape(-1, 3)
  u = d[:, None, :] + k[None]                        # (50, 343, 3)
  lw = -np.sum(u**2, -1) / (2 * var)
  w = np.exp(lw - lw.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  ref = -np.sum(w[..., None] * u, axis=1) / var
  with jax.enable_x64(True):
    got = crd.wrapped_normal_score(jnp.asarray(x), jnp.asarray(mean), jnp.asarray(var))
  np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)


def test_sample_marginal_is_wrapped_and_has_the_marginal_spread():
  b, n = 2000, 4
  frac0 = jnp.full((b, n, 3), 0.98)
  t = jnp.full((b,), 0.3)
  natoms = jnp.full((b,), n)
  x = crd.coord_sample_marginal(jax.random.key(0), frac0, t, natoms)
  assert float(x.min()) >= 0.0 and float(x.max()) < 1.0
  disp = np.asarray(crd.nearest_image(x - frac0))
  sigma = float(crd.coord_sigma(t[:1], natoms[:1])[0])
  assert sigma < 0.1
  np.testing.assert_allclose(disp.std(), sigma, rtol=0.03)
  # The std-scaled target convention: sigma * score ~ -z for small sigma.
  score = crd.coord_marginal_score(x, frac0, t, natoms)
  np.testing.assert_allclose(np.asarray(score) * sigma, -disp / sigma, atol=1e-4)


def _reverse(score_of, b, n, steps, key, corrector=True):
  mask = jnp.ones((b, n), bool)
  natoms = jnp.full((b,), n)
  ts = np.linspace(1.0, 1.0 / steps, steps)
  dt = -(1.0 - 1.0 / steps) / (steps - 1)

  def step(x, inp):
    t, k = inp
    kc, kp = jax.random.split(k)
    tb = jnp.full((b,), t)
    if corrector:
      x, _ = crd.coord_corrector_step(kc, x, score_of(x, tb, natoms), mask, snr=0.4)
    x, _ = crd.coord_predictor_step(kp, x, score_of(x, tb, natoms), tb, dt, mask)
    return x, None

  def run(key):
    k0, k1 = jax.random.split(key)
    x = crd.coord_prior_sample(k0, mask)
    return jax.lax.scan(step, x, (jnp.asarray(ts, jnp.float32), jax.random.split(k1, steps)))[0]

  return np.asarray(jax.jit(run)(key))


def test_reverse_sampling_keeps_uniform_coordinates_uniform():
  # Uniform data on the torus: every marginal is uniform and the exact score is 0.
  x = _reverse(lambda x, t, n: jnp.zeros_like(x), 500, 2, 20, jax.random.key(2))
  assert x.min() >= 0.0 and x.max() < 1.0
  for axis in range(3):
    assert stats.kstest(x[..., axis].ravel(), "uniform").pvalue > 1e-3


def test_reverse_sampling_recovers_a_wrapped_normal():
  # Data: wrapped N(c, s0^2); the marginal at t is wrapped N(c, s0^2 + sigma_t^2).
  s0, c = 0.05, jnp.array([0.9, 0.1, 0.5])

  def score(x, t, n):
    var = s0**2 + crd.coord_sigma(t, n) ** 2
    return crd.wrapped_normal_score(x, jnp.broadcast_to(c, x.shape), var[:, None, None],
                                    num_images=20)

  # The ancestral predictor alone samples the data distribution.
  x = _reverse(score, 1500, 8, 100, jax.random.key(3), corrector=False)
  disp = np.asarray(crd.nearest_image(x - np.asarray(c)))
  np.testing.assert_allclose(disp.mean(axis=(0, 1)), 0.0, atol=4 * s0 / math.sqrt(disp.size / 3))
  np.testing.assert_allclose(disp.std(axis=(0, 1)), s0, rtol=0.05)
  # (With the reference's snr-0.4 Langevin corrector the spread grows by a few percent: its
  # step eps = 2 snr^2 var has the stationary variance var / (1 - snr^2), std x 1.09; see the
  # joint sampler test in test_mattergen_diffusion.py.)


def test_steps_keep_padding_and_wrap():
  mask = jnp.array([[True, False], [True, True]])
  x = jnp.array([[[0.99, 0.5, 0.01], [0.0, 0.0, 0.0]], [[0.2, 0.3, 0.4], [0.6, 0.7, 0.8]]])
  score = jnp.full_like(x, 3.0)
  t = jnp.array([0.5, 0.5])
  for out in (crd.coord_predictor_step(jax.random.key(0), x, score, t, -0.1, mask)
              + crd.coord_corrector_step(jax.random.key(1), x, score, mask)):
    assert float(out.min()) >= 0.0 and float(out.max()) < 1.0
    np.testing.assert_array_equal(out[0, 1], 0.0)
  # The last step (s <= 0) is noise-free: sample == mean == x + sigma_t^2 score (mod 1).
  s, m = crd.coord_predictor_step(jax.random.key(0), x, score, jnp.array([0.01, 0.01]),
                                  jnp.array(-0.01), mask)
  np.testing.assert_array_equal(s, m)
  sig = crd.coord_sigma(jnp.array([0.01, 0.01]), jnp.array([1, 2]))
  np.testing.assert_allclose(m[1], crd.wrap_frac(x[1] + sig[1] ** 2 * 3.0), atol=1e-6)


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="sigma_min"):
    crd.WrappedVESDE(sigma_min=1.0, sigma_max=0.5)
  with pytest.raises(ValueError, match="num_images"):
    crd.WrappedVESDE(num_images=-1)
  with pytest.raises(ValueError, match="num_images"):
    crd.wrapped_normal_score(jnp.zeros(3), jnp.zeros(3), jnp.ones(3), num_images=1.5)
  with pytest.raises(ValueError, match="snr"):
    crd.coord_corrector_step(jax.random.key(0), jnp.zeros((1, 1, 3)), jnp.zeros((1, 1, 3)),
                             jnp.ones((1, 1), bool), snr=-1.0)
  with pytest.raises(ValueError, match="sde"):
    crd.coord_sigma(jnp.ones(1), jnp.ones(1), sde=None)
