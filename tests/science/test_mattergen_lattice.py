"""Tests of the lattice VP SDE (mattergen/_lattice.py): marginals against the moment ODE and a
Monte Carlo of the forward SDE, the score against autodiff, the symmetric noise, the polar
decomposition, and reverse-time sampling of a Gaussian lattice distribution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tomioka_jax.science.mattergen import _lattice as lat

SDE = lat.LATTICE_SDE


def test_defaults_are_the_reference():
  assert (SDE.beta_min, SDE.beta_max, SDE.limit_density, SDE.limit_var_scale) == (
      0.1, 20.0, 0.0577, 0.25)


def test_marginal_matches_the_moment_ode():
  # dm/dt = -beta/2 (m - mu), dv/dt = -beta v + beta v_lim, m(0) = L0, v(0) = 0, RK4 in float64.
  with jax.enable_x64(True):
    n = jnp.array([1, 8, 20])
    l0 = jnp.array([[2.0, 0.3, -0.1], [0.3, 3.0, 0.2], [-0.1, 0.2, 5.0]])
    mu = np.asarray(lat.lattice_limit_mean(n))
    vl = np.asarray(lat.lattice_limit_var(n))
    m = np.broadcast_to(np.asarray(l0), (3, 3, 3)).copy()
    v = np.zeros(3)
    beta = lambda t: 0.1 + t * 19.9
    f = lambda t, m, v: (-0.5 * beta(t) * (m - mu), -beta(t) * v + beta(t) * vl)
    steps, h = 4000, 1.0 / 4000
    checks = {1000: 0.25, 2000: 0.5, 4000: 1.0}
    for i in range(steps):
      t = i * h
      k1 = f(t, m, v)
      k2 = f(t + h / 2, m + h / 2 * k1[0], v + h / 2 * k1[1])
      k3 = f(t + h / 2, m + h / 2 * k2[0], v + h / 2 * k2[1])
      k4 = f(t + h, m + h * k3[0], v + h * k3[1])
      m = m + h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
      v = v + h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
      if i + 1 in checks:
        tt = jnp.full((3,), checks[i + 1])
        mean, std = lat.lattice_marginal(jnp.broadcast_to(l0, (3, 3, 3)), tt, n)
        np.testing.assert_allclose(mean, m, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(std**2, v, rtol=1e-9)
  # At t = 1 the marginal is the limit N(mu_n, v_n) to within a_1 = exp(-5.05).
  np.testing.assert_allclose(v, vl, rtol=1e-4)


def test_limit_mean_and_variance_scale_with_atom_count():
  n = jnp.array([1, 8, 27])
  np.testing.assert_allclose(lat.lattice_limit_mean(n)[:, 0, 0],
                             (np.array([1, 8, 27]) / 0.0577) ** (1 / 3), rtol=1e-6)
  np.testing.assert_allclose(lat.lattice_limit_var(n), 0.25 * np.array([1, 4, 9]), rtol=1e-6)
  np.testing.assert_array_equal(lat.lattice_limit_mean(n)[:, 0, 1], 0.0)


def test_forward_sde_monte_carlo_matches_marginal():
  # Euler-Maruyama of dL = -beta/2 (L - mu) dt + sqrt(beta v) dW with symmetric noise.
  b, steps, t_end = 4000, 400, 0.3
  n = jnp.full((b,), 4)
  l0 = jnp.broadcast_to(jnp.array([[3.0, 0.5, 0.0], [0.5, 4.0, -0.4], [0.0, -0.4, 5.0]]),
                        (b, 3, 3))
  mu, vl = lat.lattice_limit_mean(n), lat.lattice_limit_var(n)
  h = t_end / steps

  def step(x, inp):
    i, key = inp
    beta = lat.lattice_beta(i * h)
    dw = lat.symmetric_noise(key, (b, 3, 3)) * np.sqrt(h)
    return x - 0.5 * beta * (x - mu) * h + jnp.sqrt(beta * vl)[:, None, None] * dw, None

  keys = jax.random.split(jax.random.key(0), steps)
  x, _ = jax.jit(lambda x: jax.lax.scan(step, x, (jnp.arange(steps), keys)))(l0)
  mean, std = lat.lattice_marginal(l0[:1], jnp.array([t_end]), n[:1])
  se = float(std[0]) / np.sqrt(b)
  np.testing.assert_allclose(jnp.mean(x, axis=0), mean[0], atol=5 * se + 2e-3)
  np.testing.assert_allclose(jnp.var(x, axis=0), jnp.full((3, 3), std[0] ** 2), rtol=0.08)
  np.testing.assert_allclose(x, jnp.swapaxes(x, 1, 2), atol=1e-5)


def test_symmetric_noise_has_unit_variance_and_independent_free_entries():
  z = lat.symmetric_noise(jax.random.key(1), (20000, 3, 3))
  np.testing.assert_array_equal(z, jnp.swapaxes(z, 1, 2))
  iu = np.triu_indices(3)
  free = np.asarray(z)[:, iu[0], iu[1]]
  np.testing.assert_allclose(np.cov(free.T), np.eye(6), atol=0.04)
  with pytest.raises(ValueError, match="square"):
    lat.symmetric_noise(jax.random.key(0), (4, 3, 2))


def test_score_is_the_gradient_of_the_log_density_of_the_free_entries():
  with jax.enable_x64(True):
    n, t = jnp.array([5]), jnp.array([0.37])
    l0 = jnp.array([[[3.0, 0.2, 0.1], [0.2, 4.0, 0.3], [0.1, 0.3, 3.5]]])
    mean, std = lat.lattice_marginal(l0, t, n)
    iu = jnp.triu_indices(3)

    def log_density(free):  # the six free entries of a symmetric matrix, i.i.d. N(mean, std^2)
      return -0.5 * jnp.sum((free - mean[0][iu]) ** 2) / std[0] ** 2

    x = mean + 0.7 * std[0] * lat.symmetric_noise(jax.random.key(2), (1, 3, 3), jnp.float64)
    grad = jax.grad(log_density)(x[0][iu])
    score = lat.lattice_marginal_score(x, l0, t, n)
    np.testing.assert_allclose(score[0][iu], grad, rtol=1e-12)
    np.testing.assert_array_equal(score, jnp.swapaxes(score, 1, 2))
    # The std-scaled output convention: score * std = -z.
    sample, z = lat.lattice_sample_marginal(jax.random.key(3), l0, t, n)
    np.testing.assert_allclose(lat.lattice_marginal_score(sample, l0, t, n) * std[0], -z,
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(lat.lattice_score_from_output(-z, t, n),
                               lat.lattice_marginal_score(sample, l0, t, n), rtol=1e-10)


def test_polar_decomposition():
  with jax.enable_x64(True):
    l = jax.random.normal(jax.random.key(4), (5, 3, 3), jnp.float64) + 3 * jnp.eye(3)[None]
    p = lat.symmetric_lattice(l)
    np.testing.assert_allclose(p, jnp.swapaxes(p, 1, 2), atol=1e-12)
    assert np.all(np.linalg.eigvalsh(np.asarray(p)) > 0)
    np.testing.assert_allclose(p @ p, l @ jnp.swapaxes(l, 1, 2), rtol=1e-10, atol=1e-10)
    u = jnp.linalg.solve(p, l)  # L = P U with U orthogonal
    np.testing.assert_allclose(u @ jnp.swapaxes(u, 1, 2), jnp.broadcast_to(jnp.eye(3), u.shape),
                               atol=1e-10)
    np.testing.assert_allclose(lat.symmetric_lattice(p), p, atol=1e-10)


def test_langevin_step_size():
  eps = lat.langevin_step_size(jnp.array([2.0, 0.0, 1e-9]), jnp.array([3.0, 3.0, 3.0]), 0.2,
                               jnp.array([0.5, 0.5, 0.5]), 1e6)
  np.testing.assert_allclose(eps, [2 * 0.5 * (0.2 * 3 / 2) ** 2, 1e6, 1e6], rtol=1e-6)


def test_predictor_last_step_is_the_denoised_mean():
  # Gaussian data N(mu0, s0^2): E[L0 | Lt] is linear, and the last step (s = 0) must return it.
  with jax.enable_x64(True):
    n, t = jnp.array([4]), jnp.array([0.01])
    mu0, s0 = 4.0 * jnp.eye(3)[None], 0.3
    a = lat.lattice_mean_coeff(t)[:, None, None]
    v = lat.lattice_limit_var(n)[:, None, None]
    mt = a * mu0 + (1 - a) * lat.lattice_limit_mean(n)
    vt = a**2 * s0**2 + (1 - a**2) * v
    x = mt + 0.5 * lat.symmetric_noise(jax.random.key(5), (1, 3, 3), jnp.float64)
    score = -(x - mt) / vt
    sample, mean = lat.lattice_predictor_step(jax.random.key(6), x, score, t, -t, n)
    np.testing.assert_array_equal(sample, mean)
    # Tweedie: E[L0 | Lt] = (Lt + sigma_t^2 score - (1 - a) mu_n) / a, sigma_t^2 = (1 - a^2) v.
    sig2 = (1 - a**2) * v
    tweedie = (x + sig2 * score - (1 - a) * lat.lattice_limit_mean(n)) / a
    np.testing.assert_allclose(mean, tweedie, rtol=1e-10)


def test_reverse_sampling_recovers_a_gaussian_lattice_distribution():
  # Data N(mu0, s0^2) per free entry; exact score of the marginal; predictor-corrector from the
  # prior must return the data's moments.
  b, steps, natoms = 3000, 100, 4
  n = jnp.full((b,), natoms)
  mu0 = jnp.array([[[4.0, 0.5, 0.0], [0.5, 5.0, -0.3], [0.0, -0.3, 6.0]]])
  s0 = 0.3
  vl = lat.lattice_limit_var(n)[:, None, None]
  mu_n = lat.lattice_limit_mean(n)
  ts = np.linspace(1.0, 1.0 / steps, steps)
  dt = -(1.0 - 1.0 / steps) / (steps - 1)

  def score(x, t):
    a = lat.lattice_mean_coeff(t)[:, None, None]
    return -(x - a * mu0 - (1 - a) * mu_n) / (a**2 * s0**2 + (1 - a**2) * vl)

  def step(x, inp):
    t, key = inp
    kc, kp = jax.random.split(key)
    tb = jnp.full((b,), t)
    x, _ = lat.lattice_corrector_step(kc, x, score(x, tb), tb, dt, snr=0.2)
    x, _ = lat.lattice_predictor_step(kp, x, score(x, tb), tb, dt, n)
    return x, None

  def run(key):
    k0, k1 = jax.random.split(key)
    x = lat.lattice_prior_sample(k0, n)
    return jax.lax.scan(step, x, (jnp.asarray(ts, jnp.float32),
                                  jax.random.split(k1, steps)))[0]

  x = jax.jit(run)(jax.random.key(7))
  np.testing.assert_allclose(jnp.mean(x, axis=0), mu0[0], atol=5 * s0 / np.sqrt(b))
  np.testing.assert_allclose(jnp.std(x, axis=0), jnp.full((3, 3), s0), rtol=0.06)


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="beta_min"):
    lat.LatticeVPSDE(beta_min=0.0)
  with pytest.raises(ValueError, match="limit_density"):
    lat.LatticeVPSDE(limit_density=-1.0)
  with pytest.raises(ValueError, match="limit_var_scale"):
    lat.LatticeVPSDE(limit_var_scale=0.0)
  with pytest.raises(ValueError, match="sde"):
    lat.lattice_beta(jnp.ones(2), sde="vp")
  x = jnp.broadcast_to(jnp.eye(3), (2, 3, 3))
  with pytest.raises(ValueError, match="snr"):
    lat.lattice_corrector_step(jax.random.key(0), x, x, jnp.ones(2), -0.1, snr=0.0)
  with pytest.raises(ValueError, match="max_step_size"):
    lat.lattice_corrector_step(jax.random.key(0), x, x, jnp.ones(2), -0.1, max_step_size=-1.0)
