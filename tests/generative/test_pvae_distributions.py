"""Tests of the wrapped and Riemannian normals: normalisation, normaliser, sampler, gradients."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import integrate, stats

from tomioka_jax.generative import pvae


def _disk_grid(c, t_max, n_t=500, n_theta=256):
  """Geodesic polar grid on the 2-D ball: points and Riemannian volume weights.

  x = tanh(sqrt(c) t / 2) / sqrt(c) (cos a, sin a) is at geodesic distance t from 0, where the
  volume element is sinh(sqrt(c) t) / sqrt(c) dt da. Gauss-Legendre in t, the (spectrally accurate)
  periodic trapezoid rule in a.
  """
  nodes, weights = np.polynomial.legendre.leggauss(n_t)
  t = 0.5 * t_max * (nodes + 1)
  w_t = 0.5 * t_max * weights * np.sinh(np.sqrt(c) * t) / np.sqrt(c)
  a = 2 * np.pi * np.arange(n_theta) / n_theta
  rho = np.tanh(np.sqrt(c) * t / 2) / np.sqrt(c)
  x = np.stack([np.outer(rho, np.cos(a)), np.outer(rho, np.sin(a))], axis=-1).reshape(-1, 2)
  w = np.outer(w_t, np.full(n_theta, 2 * np.pi / n_theta)).reshape(-1)
  return jnp.asarray(x), w


def _log_normalizer_by_quadrature(scale, c, d):
  log_integrand = lambda r: (-r**2 / (2 * scale**2)
                             + (d - 1) * np.log(np.sinh(np.sqrt(c) * r) / np.sqrt(c)))
  r_peak = max((d - 1) * np.sqrt(c) * scale**2, 1e-3)  # near the mode, for the offset
  offset = log_integrand(r_peak)
  value, _ = integrate.quad(lambda r: np.exp(log_integrand(r) - offset) if r > 0 else 0.0, 0,
                            r_peak + 40 * scale, points=[r_peak], epsabs=0, epsrel=1e-12, limit=200)
  log_area = math.log(2) + 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d)
  return log_area + offset + math.log(value)


CASES_2D = [(0.5, 0.3), (1.0, 1.0), (2.0, 0.6)]  # (c, scale)


@pytest.mark.parametrize("c,scale", CASES_2D)
def test_densities_integrate_to_one_on_the_disk(c, scale):
  with jax.enable_x64(True):
    loc = jnp.array([0.4, -0.3]) / np.sqrt(c)
    t_max = float(pvae.distance0(loc, c)) + np.sqrt(c) * scale**2 + 14 * scale
    x, w = _disk_grid(c, t_max)
    for dist in [pvae.WrappedNormal(loc, jnp.array([scale, 0.5 * scale]), c),
                 pvae.RiemannianNormal(loc, scale, c)]:
      # log_prob's kernels are jitted at module level: compiled once for the three cases.
      density = np.exp(np.asarray(dist.log_prob(x)))
      np.testing.assert_allclose(np.sum(w * density), 1.0, atol=1e-3)


@pytest.mark.parametrize("d", range(2, 11))
def test_log_normalizer_against_numerical_integration(d):
  with jax.enable_x64(True):
    for scale, c in [(0.3, 1.0), (1.0, 0.5), (1.7, 1.2)]:
      expected = _log_normalizer_by_quadrature(scale, c, d)
      np.testing.assert_allclose(pvae.log_normalizer(scale, c, d), expected, rtol=1e-8, atol=1e-8)


def test_log_normalizer_limits_and_batching():
  with jax.enable_x64(True):
    # d = 1: the Gaussian normaliser sqrt(2 pi) sigma, for every c.
    np.testing.assert_allclose(pvae.log_normalizer(0.7, 3.0, 1), math.log(math.sqrt(2 * math.pi)
                                                                          * 0.7), rtol=1e-12)
    # c -> 0: the Euclidean Gaussian in normal coordinates, (2 pi)^(d/2) sigma^d.
    np.testing.assert_allclose(pvae.log_normalizer(0.8, 1e-6, 3),
                               1.5 * math.log(2 * math.pi) + 3 * math.log(0.8), atol=1e-5)
    scales = jnp.array([[0.3], [1.0]]) * jnp.ones((2, 3))
    batched = pvae.log_normalizer(scales, 1.0, 4)
    assert batched.shape == (2, 3)
    np.testing.assert_allclose(batched[1, 2], pvae.log_normalizer(1.0, 1.0, 4), rtol=1e-12)


@pytest.mark.parametrize("scale,c,d", [(0.4, 2.0, 2), (0.6, 0.5, 10)])
def test_radius_cdf_and_sampler(scale, c, d):
  with jax.enable_x64(True):
    # The closed-form CDF against quadrature of the radius density.
    density = lambda r: float(np.exp(pvae.radius_log_prob(r, scale, c, d)))
    for r in [0.3 * scale, scale, 3 * scale]:
      expected, _ = integrate.quad(density, 0, r, epsabs=1e-12)
      np.testing.assert_allclose(pvae.radius_cdf(r, scale, c, d), expected, atol=1e-9)
    # Inverse-CDF samples against the CDF (KS), also through the distribution's geometry.
    r = pvae.sample_radius(jax.random.key(0), scale, c, d, (3000,))
    cdf = lambda x: np.asarray(pvae.radius_cdf(jnp.asarray(x), scale, c, d))
    assert stats.kstest(np.asarray(r), cdf).pvalue > 1e-3
    loc = jnp.full((d,), 0.3 / np.sqrt(c * d))
    z = pvae.RiemannianNormal(loc, scale, c).sample(seed=jax.random.key(1), sample_shape=3000)
    dist = pvae.distance(jnp.broadcast_to(loc, z.shape), z, c)
    assert stats.kstest(np.asarray(dist), cdf).pvalue > 1e-3


def test_wrapped_normal_distance_is_chi_distributed():
  with jax.enable_x64(True):
    loc, scale, c = jnp.array([0.2, -0.5, 0.1]), 0.8, 1.5
    z = pvae.WrappedNormal(loc, jnp.full(3, scale), c).sample(seed=jax.random.key(2),
                                                              sample_shape=3000)
    dist = pvae.distance(jnp.broadcast_to(loc, z.shape), z, c)
    assert stats.kstest(np.asarray(dist) / scale, stats.chi(3).cdf).pvalue > 1e-3


@pytest.mark.parametrize("c,scale", [(1.0, 0.5)])
def test_samples_match_log_prob_moments(c, scale):
  """Monte Carlo means under the samplers equal quadrature means under ``log_prob``."""
  with jax.enable_x64(True):
    loc = jnp.array([0.35, 0.2])
    x, w = _disk_grid(c, float(pvae.distance0(loc, c)) + 14 * scale + 1.0)
    for dist in [pvae.WrappedNormal(loc, jnp.array([scale, 0.6 * scale]), c),
                 pvae.RiemannianNormal(loc, scale, c)]:
      p = w * np.exp(np.asarray(dist.log_prob(x)))
      mean_quad = np.sum(p[:, None] * np.asarray(x), axis=0)
      z = np.asarray(dist.sample(seed=jax.random.key(3), sample_shape=20000))
      stderr = z.std(axis=0) / np.sqrt(len(z))
      assert np.all(np.abs(z.mean(axis=0) - mean_quad) < 5 * stderr), (z.mean(0), mean_quad)


def test_implicit_radius_gradients_match_finite_differences():
  """dr/dsigma and dr/dc from the implicit function theorem against central differences."""
  with jax.enable_x64(True):
    key = jax.random.key(4)
    # Jitted: one compiled forward and backward instead of op-by-op dispatch.
    f = jax.jit(lambda s, k: pvae.sample_radius(key, s, k, 4, (5,)))
    check_grads(f, (0.7, 1.3), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


def test_reparameterized_samples_have_correct_gradients():
  with jax.enable_x64(True):
    key = jax.random.key(5)
    loc, c = jnp.array([0.2, -0.1, 0.3]), 0.9
    rn = jax.jit(lambda loc, s: pvae.RiemannianNormal(loc, s, c).sample(seed=key,
                                                                        sample_shape=2))
    check_grads(rn, (loc, 0.6), order=1, modes=("rev",), atol=1e-5, rtol=1e-5)
    # log q(z) is differentiable in sigma through the signed log-sum-exp normaliser.
    check_grads(lambda s: pvae.log_normalizer(s, c, 5), (0.6,), order=2, modes=("rev",))


def test_shapes_jit_and_float32():
  loc = jnp.array([[0.1, 0.2], [-0.3, 0.0], [0.0, 0.0]])
  for dist in [pvae.WrappedNormal(loc, 0.5, 1.0), pvae.RiemannianNormal(loc, jnp.ones(3), 1.0)]:
    assert dist.event_shape == (2,) and dist.batch_shape == (3,)
    z, log_p = jax.jit(lambda d: d.sample_and_log_prob(seed=jax.random.key(6),
                                                        sample_shape=(4,)))(dist)
    assert z.shape == (4, 3, 2) and log_p.shape == (4, 3)
    assert z.dtype == jnp.float32 and log_p.dtype == jnp.float32
    np.testing.assert_allclose(log_p, dist.log_prob(z), rtol=1e-5, atol=1e-5)
    with jax.enable_x64(True):
      z64 = jnp.asarray(z, jnp.float64)
      dist64 = type(dist)(jnp.asarray(loc, jnp.float64), jnp.asarray(dist.scale, jnp.float64),
                          1.0)
      np.testing.assert_allclose(log_p, dist64.log_prob(z64), rtol=1e-4, atol=1e-4)


def test_bad_inputs_raise():
  loc = jnp.zeros(2)
  for cls, scale in [(pvae.WrappedNormal, jnp.ones(2)), (pvae.RiemannianNormal, 1.0)]:
    with pytest.raises(ValueError, match="c must be"):
      cls(loc, scale, 0.0)
    with pytest.raises(ValueError, match="c must be"):
      cls(loc, scale, -1.0)
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
      cls(loc, 0.0 * scale, 1.0)
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
      cls(loc, -scale, 1.0)
    with pytest.raises(ValueError, match="loc must lie inside the Poincaré ball"):
      cls(jnp.array([0.8, 0.8]), scale, 1.0)
    with pytest.raises(ValueError, match="loc must have at least one axis"):
      cls(jnp.asarray(0.0), scale, 1.0)
  with pytest.raises(ValueError, match="scale must be a scalar per batch element"):
    pvae.RiemannianNormal(loc, jnp.ones(2), 1.0)
  with pytest.raises(ValueError, match="dim must be a positive integer"):
    pvae.log_normalizer(1.0, 1.0, 0)
  with pytest.raises(ValueError, match="scale must be finite and > 0"):
    pvae.sample_radius(jax.random.key(0), -1.0, 1.0, 2)
  with pytest.raises(ValueError, match="c must be"):
    pvae.log_normalizer(1.0, 0.0, 3)


def test_scale_and_value_shapes_are_named():
  loc = jnp.zeros((4, 2))
  with pytest.raises(ValueError, match=r"scale must broadcast to loc's shape \(4, 2\).*"
                     r"got scale of shape \(3,\)"):
    pvae.WrappedNormal(loc, jnp.ones(3))
  with pytest.raises(ValueError, match=r"value of shape \(3,\) does not broadcast against "
                     r"loc's shape \(4, 2\)"):
    pvae.WrappedNormal(loc, jnp.ones(2)).log_prob(jnp.zeros(3))


@pytest.mark.parametrize("c", [1.0, 0.5])
def test_density_is_zero_outside_the_ball(c):
  """Outside the ball log p = -inf, below every value inside, and the
  gradient there is finite (zero), not NaN."""
  radius = 1 / math.sqrt(c)
  for dist in (pvae.WrappedNormal(jnp.array([0.1, -0.2]) * radius, jnp.array([0.7, 1.3]), c),
               pvae.RiemannianNormal(jnp.array([0.1, -0.2]) * radius, 0.8, c)):
    outside = jnp.array([[2.0, 0.0], [1.001, 0.0], [0.0, -1.5], [0.8, 0.8]]) * radius
    inside = jnp.array([[0.999, 0.0], [0.0, 0.5]]) * radius
    assert np.all(np.asarray(dist.log_prob(outside)) == -np.inf)
    assert np.all(np.isfinite(np.asarray(dist.log_prob(inside))))
    grad = jax.grad(lambda z: dist.log_prob(z))(outside[0])
    assert np.all(np.asarray(grad) == 0.0)
    assert np.isnan(float(dist.log_prob(jnp.array([np.nan, 0.0]))))


def test_log_ndtr_against_scipy():
  """The single-erfc log Phi (with its asymptotic tail) against scipy, values and derivatives."""
  from scipy import special  # pylint: disable=g-import-not-at-top
  from tomioka_jax.generative.pvae import _distributions as dist_lib
  x = np.concatenate([np.linspace(-60.0, 10.0, 4001), [0.0]])
  ref = special.log_ndtr(x)
  ref_grad = np.exp(-0.5 * x**2 - 0.5 * np.log(2 * np.pi) - ref)
  with jax.enable_x64(True):
    got = np.asarray(dist_lib._log_ndtr(jnp.asarray(x)))
    grad = np.asarray(jax.vmap(jax.grad(dist_lib._log_ndtr))(jnp.asarray(x)))
    # Both tails from one erfc: the same values as two _log_ndtr calls, and right derivatives.
    pair = [np.asarray(t) for t in dist_lib._log_ndtr_pair(jnp.asarray(x))]
    pair_grad = [np.asarray(jax.vmap(jax.grad(lambda t, i=i: dist_lib._log_ndtr_pair(t)[i]))(
        jnp.asarray(x))) for i in (0, 1)]
  np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-14)
  np.testing.assert_allclose(grad, ref_grad, rtol=1e-11)
  np.testing.assert_array_equal(pair[0], got)
  np.testing.assert_allclose(pair[1], special.log_ndtr(-x), rtol=1e-13, atol=1e-14)
  np.testing.assert_allclose(pair_grad[0], ref_grad, rtol=1e-11)
  np.testing.assert_allclose(pair_grad[1], -np.exp(-0.5 * x**2 - 0.5 * np.log(2 * np.pi)
                                                   - special.log_ndtr(-x)), rtol=1e-11, atol=1e-300)
  x32 = x[x > -40]  # float32 log Phi stays finite beyond; compare where the reference is a float32
  got32 = np.asarray(dist_lib._log_ndtr(jnp.asarray(x32, jnp.float32)), np.float64)
  np.testing.assert_allclose(got32, special.log_ndtr(x32), rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("scale,c,d", [(0.8, 1.0, 2), (0.6, 0.5, 10)])
def test_radius_solvers_invert_the_cdf(scale, c, d):
  """Newton solver: F(r) = Phi(z) in both tails; quintic-Hermite quantile table: equal to it."""
  from scipy import special  # pylint: disable=g-import-not-at-top
  from tomioka_jax.generative.pvae import _distributions as dist_lib
  with jax.enable_x64(True):
    z = jnp.linspace(-8.0, 8.0, 161)
    s, k = jnp.full(z.shape, scale), jnp.full(z.shape, c)
    r = jax.jit(dist_lib._solve_radius, static_argnums=3)(z, s, k, d)
    consts = dist_lib._radius_constants(s, k, d)
    log_f, log_sf = dist_lib._log_cdf_sf(r, s, consts)
    # Near r = 0 the closed form cancels; the solver integrates there (Gauss-Jacobi).
    near0 = r <= 0.5 * jnp.minimum(s, 1 / jnp.sqrt(k))
    log_f = jnp.where(near0, dist_lib._log_cdf_near0(r, s, k, d, consts["log_norm"]), log_f)
    middle = np.abs(np.asarray(z)) <= 6
    # Relative accuracy of each tail: log F for z < 0, log(1 - F) for z >= 0.
    residual = np.where(np.asarray(z) < 0, np.asarray(log_f) - special.log_ndtr(np.asarray(z)),
                        np.asarray(log_sf) - special.log_ndtr(-np.asarray(z)))
    assert np.max(np.abs(residual[middle])) < 1e-9, residual
    # The far lower tail, where the closed form cancels, against quadrature of the density.
    density = lambda t: float(np.exp(pvae.radius_log_prob(t, scale, c, d))) if t > 0 else 0.0
    mass, _ = integrate.quad(density, 0, float(r[0]), epsabs=0, epsrel=1e-10)
    np.testing.assert_allclose(np.log(mass), special.log_ndtr(-8.0), rtol=1e-7)
    r_table = jax.jit(dist_lib._table_radius, static_argnums=3)(z, jnp.asarray(scale),
                                                                 jnp.asarray(c), d)
    np.testing.assert_allclose(r_table, r, rtol=1e-8)


def test_table_sampler_gradients_and_shapes():
  """The tabulated path (many samples per scale) has the implicit gradients too, per scale."""
  from tomioka_jax.generative.pvae import _distributions as dist_lib
  n = 600
  assert n >= dist_lib._TABLE_MIN_RATIO * dist_lib._TABLE_NODES * 1  # one (sigma, c): tabulated
  with jax.enable_x64(True):
    key = jax.random.key(7)
    f = jax.jit(lambda s, k: pvae.sample_radius(key, s, k, 3, (n,)))
    check_grads(f, (0.7, 1.3), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)
    # Two scales broadcast over 2 x 600 samples: cotangents are summed per scale.
    mask = jnp.array([[1.0, 0.0]])
    g = jax.jit(jax.grad(lambda s: jnp.sum(pvae.sample_radius(key, s, 1.0, 3, (n, 2)) * mask)))(
        jnp.array([0.5, 0.9]))
    assert g.shape == (2,) and g[0] > 0 and g[1] == 0
  with pytest.raises(ValueError, match="scale and c must broadcast to shape"):
    pvae.sample_radius(jax.random.key(0), jnp.ones(3), 1.0, 2, (4,))


@pytest.mark.parametrize("d", [5])
def test_fused_log_densities_equal_log_prob_of_the_samples(d):
  """sample_and_log_prob's density at the drawn tangent vector / radius (closed-form geometry)
  equals the general log_prob (log map / distance back from the sample), and the wrapped
  sample's distance to loc is chi-distributed as |scale * eps|."""
  with jax.enable_x64(True):
    loc = jnp.asarray(np.linspace(-0.5, 0.4, d)) / np.sqrt(d)
    for dist in [pvae.WrappedNormal(loc, jnp.linspace(0.5, 1.1, d), 1.3),
                 pvae.RiemannianNormal(loc, 0.7, 1.3)]:
      # 600 samples: the Riemannian radius comes from the quantile table (relative error 1e-9).
      z, log_p = jax.jit(lambda k, dist=dist: dist.sample_and_log_prob(seed=k, sample_shape=600))(
          jax.random.key(d))
      np.testing.assert_allclose(log_p, dist.log_prob(z), rtol=1e-7, atol=1e-7)
    key = jax.random.key(8)
    wn = pvae.WrappedNormal(loc, jnp.full(d, 0.6), 1.3)
    z = wn.sample(seed=key, sample_shape=200)
    eps = jax.random.normal(key, (200, d), jnp.float64)  # the draws _wrapped_draw makes
    np.testing.assert_allclose(pvae.distance(jnp.broadcast_to(loc, z.shape), z, 1.3),
                               0.6 * np.linalg.norm(eps, axis=-1), rtol=1e-9)


def test_wrapped_samples_have_correct_gradients():
  with jax.enable_x64(True):
    key = jax.random.key(9)
    f = jax.jit(lambda loc, s: pvae.WrappedNormal(loc, s, 0.8).sample_and_log_prob(
        seed=key, sample_shape=3))
    check_grads(f, (jnp.array([0.2, -0.1, 0.3]), jnp.array([0.5, 0.9, 1.4])), order=1,
                modes=("rev",), atol=1e-6, rtol=1e-6)
