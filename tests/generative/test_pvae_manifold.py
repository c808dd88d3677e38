"""Tests of the Poincaré-ball geometry against its defining identities and independent formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from tomioka_jax.generative import pvae
from tomioka_jax.generative.pvae import _manifold as manifold

CURVATURES = [0.1, 1.0, 2.5]


def _points(seed, n, d, c, max_radius=0.9):
  """n points uniform in direction with Euclidean radius up to max_radius / sqrt(c)."""
  rng = np.random.default_rng(seed)
  e = rng.normal(size=(n, d))
  e /= np.linalg.norm(e, axis=1, keepdims=True)
  r = max_radius * rng.uniform(size=(n, 1)) ** (1 / d) / np.sqrt(c)
  return jnp.asarray(e * r)


def _arcosh_distance(x, y, c):
  """The textbook formula d = arcosh(1 + 2c|x-y|^2 / ((1-c|x|^2)(1-c|y|^2))) / sqrt(c)."""
  x, y = np.asarray(x), np.asarray(y)
  num = 2 * c * np.sum((x - y) ** 2, -1)
  den = (1 - c * np.sum(x**2, -1)) * (1 - c * np.sum(y**2, -1))
  return np.arccosh(1 + num / den) / np.sqrt(c)


@pytest.mark.parametrize("c", CURVATURES)
def test_exp_log_are_inverse(c):
  with jax.enable_x64(True):
    x, y = _points(0, 64, 5, c), _points(1, 64, 5, c)
    np.testing.assert_allclose(pvae.expmap(x, pvae.logmap(x, y, c), c), y, atol=1e-10)
    # Riemannian length ~1 so exp stays clear of the projection margin near the boundary.
    v = 0.5 * jnp.asarray(np.random.default_rng(2).normal(size=(64, 5)))
    v_at_x = v / pvae.conformal_factor(x, c)[:, None]
    np.testing.assert_allclose(pvae.logmap(x, pvae.expmap(x, v_at_x, c), c), v_at_x, rtol=1e-8,
                               atol=1e-10)
    np.testing.assert_allclose(pvae.logmap0(pvae.expmap0(v, c), c), v, rtol=1e-8, atol=1e-12)
    zero = jnp.zeros_like(x)
    np.testing.assert_allclose(pvae.expmap(zero, v, c), pvae.expmap0(v, c), atol=1e-12)
    np.testing.assert_allclose(pvae.logmap(zero, y, c), pvae.logmap0(y, c), atol=1e-12)


@pytest.mark.parametrize("c", CURVATURES)
def test_distance_is_a_metric_matching_arcosh_formula(c):
  with jax.enable_x64(True):
    x, y, z = (_points(s, 200, 3, c) for s in (3, 4, 5))
    dxy, dyx = pvae.distance(x, y, c), pvae.distance(y, x, c)
    np.testing.assert_allclose(dxy, dyx, rtol=1e-10)
    np.testing.assert_allclose(dxy, _arcosh_distance(x, y, c), rtol=1e-7)
    assert np.all(dxy <= pvae.distance(x, z, c) + pvae.distance(z, y, c) + 1e-12)
    np.testing.assert_allclose(pvae.distance(x, x, c), 0.0, atol=1e-7)
    # d(x, y) is the Riemannian length of log_x(y), and d(0, x) = distance0(x).
    np.testing.assert_allclose(pvae.riemannian_norm(x, pvae.logmap(x, y, c), c), dxy, rtol=1e-8)
    np.testing.assert_allclose(pvae.distance(jnp.zeros_like(x), x, c), pvae.distance0(x, c),
                               rtol=1e-10)


def test_distance_tends_to_twice_euclidean_as_c_vanishes():
  with jax.enable_x64(True):
    x, y = _points(6, 50, 4, 1.0, 2.0), _points(7, 50, 4, 1.0, 2.0)  # |x| < 2
    euclid = 2.0 * np.linalg.norm(np.asarray(x - y), axis=-1)
    for c, tol in [(1e-3, 1e-2), (1e-6, 1e-5), (1e-9, 1e-8)]:
      np.testing.assert_allclose(pvae.distance(x, y, c), euclid, rtol=tol)


@pytest.mark.parametrize("c", CURVATURES)
def test_mobius_addition_identities(c):
  with jax.enable_x64(True):
    x, y = _points(8, 64, 4, c), _points(9, 64, 4, c)
    np.testing.assert_allclose(pvae.mobius_add(-x, pvae.mobius_add(x, y, c), c), y, atol=1e-10)
    np.testing.assert_allclose(pvae.mobius_add(x, jnp.zeros_like(x), c), x, atol=1e-14)
    np.testing.assert_allclose(pvae.mobius_add(jnp.zeros_like(x), y, c), y, atol=1e-14)
    # Möbius translation is an isometry: d(x (+) y, x (+) z) = d(y, z).
    z = _points(10, 64, 4, c)
    np.testing.assert_allclose(pvae.distance(pvae.mobius_add(x, y, c), pvae.mobius_add(x, z, c), c),
                               pvae.distance(y, z, c), rtol=1e-7)


@pytest.mark.parametrize("c", CURVATURES)
def test_mobius_scalar_and_matvec(c):
  with jax.enable_x64(True):
    x = _points(11, 32, 3, c, 0.7)
    np.testing.assert_allclose(pvae.mobius_scalar_mul(2.0, x, c), pvae.mobius_add(x, x, c),
                               atol=1e-10)
    r = jnp.linspace(-1.5, 1.5, 32)
    np.testing.assert_allclose(pvae.distance0(pvae.mobius_scalar_mul(r, x, c), c),
                               jnp.abs(r) * pvae.distance0(x, c), rtol=1e-8)
    np.testing.assert_allclose(pvae.mobius_matvec(jnp.eye(3), x, c), x, atol=1e-12)


@pytest.mark.parametrize("c", CURVATURES)
def test_gyration_closed_form_matches_definition(c):
  with jax.enable_x64(True):
    u, v, w = (_points(s, 32, 3, c, 0.8) for s in (12, 13, 14))
    by_definition = pvae.mobius_add(-pvae.mobius_add(u, v, c),
                                    pvae.mobius_add(u, pvae.mobius_add(v, w, c), c), c)
    np.testing.assert_allclose(pvae.gyration(u, v, w, c), by_definition, atol=1e-10)


@pytest.mark.parametrize("c", CURVATURES)
def test_parallel_transport(c):
  with jax.enable_x64(True):
    x, y = _points(15, 64, 4, c), _points(16, 64, 4, c)
    rng = np.random.default_rng(17)
    u, v = jnp.asarray(rng.normal(size=(64, 4))), jnp.asarray(rng.normal(size=(64, 4)))
    pu, pv = pvae.parallel_transport(x, y, u, c), pvae.parallel_transport(x, y, v, c)
    lx, ly = pvae.conformal_factor(x, c), pvae.conformal_factor(y, c)
    np.testing.assert_allclose(pvae.riemannian_norm(y, pu, c), pvae.riemannian_norm(x, u, c),
                               rtol=1e-10)
    np.testing.assert_allclose(ly**2 * jnp.sum(pu * pv, -1), lx**2 * jnp.sum(u * v, -1),
                               rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(pvae.parallel_transport(y, x, pu, c), u, atol=1e-10)
    # The geodesic's velocity is transported to itself: P(log_x y) = -log_y x.
    np.testing.assert_allclose(pvae.parallel_transport(x, y, pvae.logmap(x, y, c), c),
                               -pvae.logmap(y, x, c), atol=1e-9)
    zero = jnp.zeros_like(x)
    np.testing.assert_allclose(pvae.parallel_transport0(y, u, c),
                               pvae.parallel_transport(zero, y, u, c), atol=1e-12)
    np.testing.assert_allclose(pvae.parallel_transport_to0(x, u, c),
                               pvae.parallel_transport(x, zero, u, c), atol=1e-12)


@pytest.mark.parametrize("c", [0.5, 2.0])
def test_gyroplane_distance_is_half_the_distance_to_the_mirror_image(c):
  with jax.enable_x64(True):
    z = _points(18, 64, 3, c)
    mirror = z * jnp.array([[-1.0, 1.0, 1.0]])
    expected = jnp.sign(z[:, 0]) * pvae.distance(z, mirror, c) / 2
    e1 = jnp.broadcast_to(jnp.array([3.0, 0.0, 0.0]), z.shape)  # |a| does not matter
    np.testing.assert_allclose(pvae.gyroplane_distance(z, jnp.zeros_like(z), e1, c), expected,
                               rtol=1e-8, atol=1e-12)
    # Translating the plane's offset by p is undone by left cancellation.
    p = _points(19, 64, 3, c, 0.5)
    np.testing.assert_allclose(
        pvae.gyroplane_distance(pvae.mobius_add(p, z, c), p, e1, c),
        pvae.gyroplane_distance(z, jnp.zeros_like(z), e1, c), rtol=1e-6, atol=1e-9)



def test_gyroplane_distances_by_inner_products_equal_the_pairwise_definition():
  """Every (point, plane) pair, incl. z = p and Möbius sums clipped at the ball's edge."""
  c = 1.5
  z = np.asarray(_points(22, 24, 3, c, 0.999), np.float64)
  p = np.concatenate([np.asarray(_points(23, 5, 3, c, 0.999), np.float64), z[:2]])  # z = p
  a = np.random.default_rng(24).normal(size=(7, 3))
  shape = (24, 7, 3)

  def pairwise(z, p, a):
    return pvae.gyroplane_distance(jnp.broadcast_to(z[:, None, :], shape),
                                   jnp.broadcast_to(p, shape), jnp.broadcast_to(a, shape), c)

  summed = lambda fn: lambda *args: jnp.sum(fn(*args))
  with jax.enable_x64(True):
    z, p, a = jnp.asarray(z), jnp.asarray(p), jnp.asarray(a)
    diff = pvae.mobius_add(-jnp.broadcast_to(p, shape), jnp.broadcast_to(z[:, None, :], shape), c)
    assert float(jnp.max(c * jnp.sum(diff**2, -1))) > 0.99  # the projection is exercised
    got = pvae.gyroplane_distances(z, p, a, c)
    assert got.shape == (24, 7)
    np.testing.assert_allclose(got, pairwise(z, p, a), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(pvae.gyroplane_distances(z[3], p, a, c), got[3], rtol=1e-12)
    grads = jax.grad(summed(pvae.gyroplane_distances), argnums=(0, 1, 2))(z, p, a, c)
    for g, ref in zip(grads, jax.grad(summed(pairwise), argnums=(0, 1, 2))(z, p, a)):
      np.testing.assert_allclose(g, ref, rtol=1e-9, atol=1e-10)
  # float32 (its own, wider boundary margin): against the pairwise definition in float32.
  args32 = [jnp.asarray(np.asarray(t), jnp.float32) for t in (z, p, a)]
  got32 = pvae.gyroplane_distances(*args32, c)
  assert got32.dtype == jnp.float32
  np.testing.assert_allclose(got32, pairwise(*args32), rtol=2e-4, atol=2e-4)

def test_gradients_finite_at_the_origin_and_on_the_diagonal():
  zero = jnp.zeros(3)
  for fn in [lambda v: jnp.sum(pvae.expmap0(v, 1.0)), lambda v: jnp.sum(pvae.logmap0(v, 1.0)),
             lambda v: pvae.distance0(v, 1.0), lambda v: jnp.sum(pvae.expmap(v, v, 1.0)),
             lambda v: pvae.distance(v, v, 1.0), lambda v: jnp.sum(pvae.logmap(v, v, 1.0)),
             lambda v: jnp.sum(pvae.mobius_scalar_mul(0.5, v, 1.0))]:
    g = jax.grad(fn)(zero)
    assert np.all(np.isfinite(g)), g
  np.testing.assert_allclose(jax.grad(lambda v: jnp.sum(pvae.expmap0(v, 1.0)))(zero), 1.0)


def test_gradients_match_finite_differences():
  with jax.enable_x64(True):
    x, y = _points(20, 4, 3, 1.3), _points(21, 4, 3, 1.3)
    v = 0.5 * y
    check_grads(lambda a, b: pvae.distance(a, b, 1.3), (x, y), order=1, modes=("rev",))
    check_grads(lambda a, b: pvae.expmap(a, b, 1.3), (x, v), order=1, modes=("rev",))
    check_grads(lambda a, b, w: pvae.parallel_transport(a, b, w, 1.3), (x, y, v), order=1,
                modes=("rev",))


def test_project_clips_with_margin_and_leaves_interior_alone():
  for dtype, eps in [(jnp.float32, 4e-3), (jnp.float64, 1e-5)]:
    with jax.enable_x64(dtype == jnp.float64):
      x = jnp.array([[3.0, 4.0], [0.1, 0.2]], dtype)
      out = pvae.project(x, 4.0)
      assert out.dtype == dtype
      np.testing.assert_allclose(np.linalg.norm(out[0]), (1 - eps) / 2, rtol=1e-6)
      np.testing.assert_allclose(out[0] / np.linalg.norm(out[0]), [0.6, 0.8], rtol=1e-6)
      np.testing.assert_array_equal(out[1], x[1])
      # exp maps never leave the ball, even for huge tangent vectors.
      far = pvae.expmap0(jnp.array([1e4, 0.0], dtype), 4.0)
      assert 4.0 * jnp.sum(far**2) < 1.0


def test_jit_and_float32_agree_with_float64():
  x32, y32 = _points(22, 16, 3, 1.0).astype(jnp.float32), _points(23, 16, 3, 1.0).astype(
      jnp.float32)
  d32 = jax.jit(pvae.distance)(x32, y32, 1.0)
  assert d32.dtype == jnp.float32
  with jax.enable_x64(True):
    d64 = pvae.distance(x32.astype(jnp.float64), y32.astype(jnp.float64), 1.0)
  np.testing.assert_allclose(d32, d64, rtol=1e-4)


@pytest.mark.parametrize("c", [0.0, -1.0, float("nan")])
def test_bad_curvature_raises(c):
  with pytest.raises(ValueError, match="c must be"):
    pvae.expmap0(jnp.ones(2), c)
  with pytest.raises(ValueError, match="c must be"):
    pvae.distance(jnp.zeros(2), jnp.zeros(2), jnp.asarray(c))


def test_points_outside_the_ball_raise_in_check_in_ball():
  pvae.check_in_ball(jnp.array([0.5, 0.5]), 1.0)
  with pytest.raises(ValueError, match=r"loc must lie inside the Poincaré ball"):
    pvae.check_in_ball(jnp.array([[0.5, 0.5], [0.9, 0.9]]), 1.0, "loc")
  with pytest.raises(ValueError, match="inside the Poincaré ball"):
    pvae.check_in_ball(jnp.array([0.5, 0.0]), 4.0)  # on the boundary of radius 1/2
  # Under jit the check is skipped (traced), and the primitives clip instead of failing.
  assert np.isfinite(jax.jit(lambda x: manifold.distance0(x, 1.0))(jnp.array([2.0, 0.0])))


def test_event_sum_equals_sum_over_the_last_axis():
  """The matmul form for short event axes: same values and gradients as jnp.sum."""
  for d in (1, 2, 4, 5):
    x = jax.random.normal(jax.random.key(d), (3, 2, d))
    np.testing.assert_allclose(manifold.event_sum(x), jnp.sum(x, axis=-1), rtol=1e-6,
                               atol=1e-6)
    g = jax.grad(lambda x: jnp.sum(jnp.sin(manifold.event_sum(x))))(x)
    np.testing.assert_allclose(g, jnp.broadcast_to(jnp.cos(jnp.sum(x, -1))[..., None], x.shape),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("c", CURVATURES)
def test_mobius_add_expmap0_in_closed_form(c):
  """x (+) exp0(v) = a x + b v equals the vector composition, also where either projection bites;
  it lies at distance 2|v| from x and is exp_x(P_{0->x}(v)); gradients match the composition."""
  with jax.enable_x64(True):
    x = jnp.concatenate([_points(11, 60, 4, c), jnp.zeros((1, 4)),
                         _points(12, 20, 4, c, max_radius=0.99999)])
    rng = np.random.default_rng(13)
    lengths = np.concatenate([[0.3, 0.0, 1e-9], 10.0 ** rng.uniform(-3, 1.5, x.shape[0] - 3)])
    v = rng.normal(size=x.shape)
    v = jnp.asarray(v / np.linalg.norm(v, axis=-1, keepdims=True) * lengths[:, None] / np.sqrt(c))
    got = manifold.mobius_add_expmap0(x, v, c)
    expected = manifold.mobius_add(x, manifold.expmap0(v, c), c)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)
    # Some of the cases are clipped to the margin by one projection or the other.
    max_norm = (1 - manifold.boundary_eps(jnp.float64)) / np.sqrt(c)
    assert np.any(np.isclose(np.linalg.norm(expected, axis=-1), max_norm, rtol=1e-13))
    # Geometry: the distance from x is 2|v| (left translation is an isometry), away from the clip;
    # and the point is exp_x of the transported v.
    inside = np.sqrt(c) * np.linalg.norm(expected, axis=-1) < 0.99
    assert np.sum(inside) > 40
    np.testing.assert_allclose(manifold.distance(x, got, c)[inside],
                               2 * np.linalg.norm(v, axis=-1)[inside], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got, manifold.expmap(x, manifold.parallel_transport0(x, v, c), c),
                               rtol=1e-10, atol=1e-12)
    w = jnp.asarray(rng.normal(size=x.shape))
    grad = lambda f: jax.grad(lambda x, v: jnp.sum(w * f(x, v)), argnums=(0, 1))(x, v)
    compose = lambda x, v: manifold.mobius_add(x, manifold.expmap0(v, c), c)
    for g, h in zip(grad(lambda x, v: manifold.mobius_add_expmap0(x, v, c)), grad(compose)):
      np.testing.assert_allclose(g, h, rtol=1e-9, atol=1e-9)
    check_grads(lambda x, v: manifold.mobius_add_expmap0(x, v, c), (x[:5], v[:5]), order=1,
                modes=("rev",))
    # The coefficients alone, on scalars: at x = 0, b v = exp0(v), tanh(sqrt(c)|v|) / (sqrt(c)|v|).
    _, b = manifold.mobius_add_expmap0_coefficients(0.0, 0.0, 0.25 / c, c)
    np.testing.assert_allclose(b, np.tanh(0.5) / 0.5, rtol=1e-14)
