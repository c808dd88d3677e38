"""Tests for tomioka_jax.generative._fgan against the mathematics of f-divergences.

Conjugates are checked against a brute-force supremum, Fenchel-Young and (f*)' = (f')^{-1};
the composites against the plain formulas and for finiteness at extreme inputs; the variational
bound against D_f by quadrature for two Gaussians; Algorithm 1 against a hand-computed step and
by convergence on a Gaussian problem whose optimal critic the critic class contains.
"""

import math

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import optax
import pytest
import scipy.special

from tomioka_jax.generative import _fgan as fgan

ALPHAS = (-1.0, 0.0, 0.5, 1.0, 2.0)  # both branches (a < 1, a > 1) and both limits
CASES = [(n, {}) for n in fgan.DIVERGENCES if n != "alpha"] + [("alpha", {"alpha": a})
                                                             for a in ALPHAS]
IDS = [n if not p else f"alpha={p['alpha']:g}" for n, p in CASES]
# Divergences whose f' is invertible (all but total variation).
RATIO_CASES = [c for c in CASES if c[0] != "total_variation"]
RATIO_IDS = [i for i, c in zip(IDS, CASES) if c[0] != "total_variation"]


def _div(case):
  name, params = case
  return fgan.divergence(name, **params)


def _u_grid():
  return jnp.logspace(-2.0, 2.0, 41)


def _t_inside(div, n=61):
  """Points well inside dom f*, avoiding the boundary by a margin."""
  lo, hi = div.f_star_domain
  if div.name == "total_variation":
    return jnp.linspace(lo, hi, n)
  lo = max(lo, -20.0) + (0.05 if math.isfinite(lo) else 0.0)
  hi = min(hi, 6.0) - (0.05 if math.isfinite(hi) else 0.0)
  return jnp.linspace(lo, hi, n)


# ---------------------------------------------------------------------------- conjugates


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_fenchel_young_inequality_and_equality_at_f_prime(case):
  with jax.enable_x64(True):
    div = _div(case)
    u = _u_grid()
    t = _t_inside(div)
    gap = div.f(u)[:, None] + div.f_star(t)[None, :] - u[:, None] * t[None, :]
    assert float(jnp.min(gap)) >= -1e-12
    t_u = div.f_prime(u)
    np.testing.assert_allclose(div.f(u) + div.f_star(t_u), u * t_u, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_f_star_is_the_supremum_over_positive_u(case):
  """f*(t) = sup_{u > 0} u t - f(u), by brute force on a fine log grid of u."""
  with jax.enable_x64(True):
    div = _div(case)
    u = jnp.logspace(-6.0, 6.0, 24001)
    t = _t_inside(div, 25)
    brute = jnp.max(u[None, :] * t[:, None] - div.f(u)[None, :], axis=1)
    closed = div.f_star(t)
    # The grid is a subset of (0, inf), so the brute force can only fall short.
    assert float(jnp.min(closed - brute)) >= -1e-9
    np.testing.assert_allclose(brute, closed, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_f_star_is_infinite_outside_its_domain(case):
  div = _div(case)
  lo, hi = div.f_star_domain
  outside = [x for x in (lo - 0.5, hi + 0.5) if math.isfinite(x)]
  if outside:
    assert bool(jnp.all(div.f_star(jnp.asarray(outside)) == jnp.inf))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_f_is_zero_at_one_and_convex(case):
  with jax.enable_x64(True):
    div = _div(case)
    # The paper's GAN generator is normalised so that D_GAN = 2 D_JS - log 4: f(1) = -log 4.
    expected = -math.log(4.0) if div.name == "gan" else 0.0
    assert float(div.f(1.0)) == pytest.approx(expected, abs=1e-14)
    u = jnp.linspace(0.01, 10.0, 400)  # uniform, so second differences test convexity
    second = div.f(u[2:]) - 2 * div.f(u[1:-1]) + div.f(u[:-2])
    assert float(jnp.min(second)) >= -1e-12
    t = _t_inside(div)
    second = div.f_star(t[2:]) - 2 * div.f_star(t[1:-1]) + div.f_star(t[:-2])
    assert float(jnp.min(second)) >= -1e-12
    assert float(div.f_prime(1.0)) == pytest.approx(div.f_prime_at_1, abs=1e-14)


@pytest.mark.parametrize("case", RATIO_CASES, ids=RATIO_IDS)
def test_conjugate_derivative_inverts_f_prime(case):
  """(f*)'(f'(u)) = u: the density ratio is recovered from the optimal critic value."""
  with jax.enable_x64(True):
    div = _div(case)
    u = _u_grid()
    back = jax.vmap(jax.grad(div.f_star))(div.f_prime(u))
    np.testing.assert_allclose(back, u, rtol=1e-9)


# ---------------------------------------------------------------------------- activations


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_activation_lands_in_domain_and_composite_matches_plain_formula(case):
  with jax.enable_x64(True):
    div = _div(case)
    v = jnp.linspace(-8.0, 8.0, 81)
    t = div.activation(v)
    lo, hi = div.f_star_domain
    if div.name == "total_variation":
      assert bool(jnp.all((t >= lo) & (t <= hi)))
    else:
      assert bool(jnp.all((t > lo) & (t < hi)))
    np.testing.assert_allclose(div.f_star_of_activation(v), div.f_star(t), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("case", RATIO_CASES, ids=RATIO_IDS)
def test_density_ratio_is_conjugate_derivative_and_optimal_critic_inverts_it(case):
  with jax.enable_x64(True):
    div = _div(case)
    v = jnp.linspace(-5.0, 5.0, 41)
    t = div.activation(v)
    via_grad = jax.vmap(jax.grad(div.f_star))(t)
    np.testing.assert_allclose(fgan.density_ratio(div, v), via_grad, rtol=1e-8)
    log_r = jnp.linspace(-4.0, 4.0, 33)
    v_star = div.optimal_critic(log_r)
    np.testing.assert_allclose(div.activation(v_star), div.f_prime(jnp.exp(log_r)), rtol=1e-9,
                               atol=1e-12)
    np.testing.assert_allclose(div.density_ratio(v_star), jnp.exp(log_r), rtol=1e-9)


def _finite_range(div, dtype):
  # The composite grows like e^{k v} for some divergences; below this |v| the true value is
  # representable for every case in CASES (the fastest, alpha=0.5 and KL, grow like e^v).
  return 80.0 if dtype == jnp.float32 else 700.0


@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_composite_is_finite_and_never_nan(case, x64):
  with jax.enable_x64(x64):
    div = _div(case)
    dtype = jnp.float64 if x64 else jnp.float32
    vmax = _finite_range(div, dtype)
    v = jnp.concatenate([jnp.linspace(-vmax, vmax, 401, dtype=dtype),
                         jnp.asarray([-1e30, -1e4, 1e4, 1e30], dtype)])
    out = div.f_star_of_activation(v)
    grad = jax.jit(jax.vmap(jax.grad(div.f_star_of_activation)))(v)
    assert out.dtype == dtype
    assert not bool(jnp.any(jnp.isnan(out)))
    assert bool(jnp.all(jnp.isfinite(out[:401])))
    assert bool(jnp.all(jnp.isfinite(grad[:401])))
    assert bool(jnp.all(jnp.isfinite(div.activation(v)) | (jnp.abs(v) > vmax)))
    if not x64:
      with jax.enable_x64(True):
        ref = np.asarray(_div(case).f_star_of_activation(jnp.asarray(v[:401], jnp.float64)))
      np.testing.assert_allclose(np.asarray(out[:401], np.float64), ref, rtol=2e-5,
                                 atol=2e-5)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradients_match_finite_differences(case):
  with jax.enable_x64(True):
    div = _div(case)
    v = jnp.asarray([-3.1, -0.7, 0.4, 2.3])
    jax.test_util.check_grads(div.f_star_of_activation, (v,), order=2, modes=["rev"])
    jax.test_util.check_grads(div.activation, (v,), order=1, modes=["fwd", "rev"])
    t = _t_inside(div, 5)[1:-1]
    if div.name != "total_variation":
      jax.test_util.check_grads(div.f_star, (t,), order=1, modes=["rev"])
      jax.test_util.check_grads(div.density_ratio, (v,), order=1, modes=["rev"])


# ---------------------------------------------------------------------------- special functions


def test_lambert_w_and_wright_omega_against_scipy_float64():
  with jax.enable_x64(True):
    x = np.concatenate([np.linspace(-1 / np.e + 1e-12, 3.0, 501), np.logspace(-300, 300, 301),
                        -np.logspace(-200, math.log10(1 / np.e) - 1e-9, 101)])
    w = np.asarray(jax.jit(fgan.lambert_w)(x))
    # W is ill-conditioned at the branch point -1/e (W' ~ 1/sqrt(x + 1/e)): 1e-10 there.
    np.testing.assert_allclose(w, scipy.special.lambertw(x).real, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(w * np.exp(w), x, rtol=1e-12, atol=1e-16)
    z = np.concatenate([np.linspace(-60.0, 60.0, 1201), [1e3, 1e10, 1e300, -700.0]])
    np.testing.assert_allclose(jax.jit(fgan.wright_omega)(z), scipy.special.wrightomega(z).real,
                               rtol=1e-13)
    assert bool(jnp.isnan(fgan.lambert_w(-0.5)))


def test_lambert_w_and_wright_omega_float32_extremes_and_gradients():
  z = jnp.asarray([-1e30, -200.0, -50.0, 0.0, 50.0, 1e30, 3e38], jnp.float32)
  w = jax.jit(fgan.wright_omega)(z)
  assert w.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(w)))
  np.testing.assert_allclose(w, scipy.special.wrightomega(np.asarray(z, np.float64)).real,
                             rtol=1e-6, atol=1e-37)  # omega(-200) underflows in float32
  x = jnp.asarray([-0.36, -0.1, 0.0, 1.0, 1e20, 3e38], jnp.float32)
  assert bool(jnp.all(jnp.isfinite(jax.jit(fgan.lambert_w)(x))))
  with jax.enable_x64(True):
    jax.test_util.check_grads(jax.jit(fgan.wright_omega),
                              (jnp.asarray([-30.0, -1.0, 0.5, 40.0]),), order=1,
                              modes=["fwd", "rev"])
    jax.test_util.check_grads(jax.jit(fgan.lambert_w),
                              (jnp.asarray([-0.3, -0.01, 0.0, 0.7, 1e3]),), order=1,
                              modes=["fwd", "rev"])


# ---------------------------------------------------------------------------- variational bound

X = np.linspace(-14.0, 14.0, 14001)
P_GAUSS, Q_GAUSS = (0.0, 1.0), (0.6, 1.25)


def _log_normal(x, m, s):
  return -0.5 * ((x - m) / s) ** 2 - jnp.log(s) - 0.5 * math.log(2 * math.pi)


def _quad(y):
  return jnp.sum((y[1:] + y[:-1]) * 0.5) * (X[1] - X[0])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_variational_bound_is_tight_at_optimal_critic_by_quadrature(case):
  """F(T) <= D_f(P || Q) for every critic, with equality at T* = f'(p / q)."""
  with jax.enable_x64(True):
    div = _div(case)
    x = jnp.asarray(X)
    log_p, log_q = _log_normal(x, *P_GAUSS), _log_normal(x, *Q_GAUSS)
    p, q = jnp.exp(log_p), jnp.exp(log_q)
    d_f = _quad(q * div.f(jnp.exp(log_p - log_q)))

    def bound(v):
      return _quad(p * div.activation(v) - q * div.f_star_of_activation(v))

    v_star = div.optimal_critic(log_p - log_q)
    assert float(bound(v_star)) == pytest.approx(float(d_f), rel=1e-7, abs=1e-10)
    finite_star = jnp.where(jnp.isfinite(v_star), v_star, jnp.sign(v_star) * 5.0)
    for h in (jnp.sin(x), x / 4, jnp.ones_like(x)):
      for eps in (-0.3, 0.1):
        assert float(bound(finite_star + eps * h)) < float(d_f)


def test_quadrature_divergences_match_closed_forms():
  with jax.enable_x64(True):
    (m1, s1), (m2, s2) = P_GAUSS, Q_GAUSS
    x = jnp.asarray(X)
    log_p, log_q = _log_normal(x, m1, s1), _log_normal(x, m2, s2)
    q, r = jnp.exp(log_q), jnp.exp(log_p - log_q)

    def d(name):
      return float(_quad(q * fgan.divergence(name).f(r)))

    kl_pq = math.log(s2 / s1) + (s1**2 + (m1 - m2)**2) / (2 * s2**2) - 0.5
    kl_qp = math.log(s1 / s2) + (s2**2 + (m1 - m2)**2) / (2 * s1**2) - 0.5
    bc = math.sqrt(2 * s1 * s2 / (s1**2 + s2**2)) * math.exp(-(m1 - m2)**2 / (4 * (s1**2 + s2**2)))
    assert d("kl") == pytest.approx(kl_pq, rel=1e-9)
    assert d("reverse_kl") == pytest.approx(kl_qp, rel=1e-9)
    assert d("jeffrey") == pytest.approx(kl_pq + kl_qp, rel=1e-9)
    assert d("squared_hellinger") == pytest.approx(2 * (1 - bc), rel=1e-9)
    assert d("gan") == pytest.approx(d("jensen_shannon") - math.log(4), rel=1e-9)


def test_monte_carlo_objective_at_optimal_critic_estimates_divergence():
  with jax.enable_x64(True):
    div = fgan.divergence("kl")
    kp, kq = jax.random.split(jax.random.key(0))
    xp = P_GAUSS[0] + P_GAUSS[1] * jax.random.normal(kp, (200_000,))
    xq = Q_GAUSS[0] + Q_GAUSS[1] * jax.random.normal(kq, (200_000,))

    def v_star(x):
      return div.optimal_critic(_log_normal(x, *P_GAUSS) - _log_normal(x, *Q_GAUSS))

    (m1, s1), (m2, s2) = P_GAUSS, Q_GAUSS
    kl = math.log(s2 / s1) + (s1**2 + (m1 - m2)**2) / (2 * s2**2) - 0.5
    est = float(fgan.variational_objective(div, v_star(xp), v_star(xq)))
    assert est == pytest.approx(kl, abs=0.01)


# ---------------------------------------------------------------------------- Algorithm 1


def _gaussian_problem():
  def generator(theta, z):
    return theta["mu"] + jnp.exp(theta["log_sigma"]) * z

  def critic(omega, x):
    # Quadratic critics contain the optimal critic of any of these divergences for
    # Gaussians, whose log density ratio is quadratic in x.
    return omega["a"] * x * x + omega["b"] * x + omega["c"]

  theta = {"mu": jnp.asarray(0.0), "log_sigma": jnp.asarray(0.5)}
  omega = {"a": jnp.asarray(0.0), "b": jnp.asarray(0.0), "c": jnp.asarray(0.0)}
  return generator, critic, theta, omega


def test_single_step_is_simultaneous_descent_ascent():
  generator, critic, theta, omega = _gaussian_problem()
  div = fgan.divergence("jensen_shannon")
  opt = optax.sgd(0.1)
  state = fgan.init_fgan_state(theta, omega, opt, opt)
  x_real = jnp.linspace(-2.0, 3.0, 16)
  z = jnp.linspace(-1.5, 1.5, 16)
  omega = {"a": jnp.asarray(0.1), "b": jnp.asarray(-0.2), "c": jnp.asarray(0.3)}
  state = state._replace(critic_params=omega)
  new, metrics = jax.jit(fgan.make_fgan_step(div, generator, critic, opt, opt))(state, x_real, z)

  def F(th, om):
    return fgan.variational_objective(div, critic(om, x_real), critic(om, generator(th, z)))

  g_th, g_om = jax.grad(F, argnums=(0, 1))(theta, omega)
  for k in theta:
    np.testing.assert_allclose(new.generator_params[k], theta[k] - 0.1 * g_th[k], rtol=1e-6)
  for k in omega:
    np.testing.assert_allclose(new.critic_params[k], omega[k] + 0.1 * g_om[k], rtol=1e-6)
  np.testing.assert_allclose(metrics.objective, F(theta, omega), rtol=1e-6)
  assert int(new.step) == 1


def test_step_compiles_once_from_weakly_typed_initial_parameters():
  generator, critic, theta, omega = _gaussian_problem()  # Python-scalar (weak) parameters
  opt = optax.adam(1e-2)
  step = jax.jit(fgan.make_fgan_step(fgan.divergence("kl"), generator, critic, opt, opt))
  state = fgan.init_fgan_state(theta, omega, opt, opt)
  x_real, z = jnp.linspace(-2.0, 3.0, 16), jnp.linspace(-1.5, 1.5, 16)
  for _ in range(3):
    state, _ = step(state, x_real, z)
  assert step._cache_size() == 1  # pylint: disable=protected-access


@pytest.mark.parametrize("name,generator_loss,make_opt", [
    ("gan", "minimax", optax.sgd),  # Algorithm 1 as written: plain simultaneous gradient steps
    ("kl", "nonsaturating", lambda lr: optax.adam(lr, b1=0.0)),
], ids=["gan-minimax-sgd", "kl-nonsaturating-adam"])
def test_single_step_gradient_method_fits_a_gaussian(name, generator_loss, make_opt):
  """P = N(1.5, 0.7^2) is in the model class: Algorithm 1 converges to it."""
  generator, critic, theta, omega = _gaussian_problem()
  div = fgan.divergence(name)
  steps = 1500
  opt = make_opt(optax.linear_schedule(0.3 if make_opt is optax.sgd else 0.05, 0.01, steps))
  step = fgan.make_fgan_step(div, generator, critic, opt, opt, generator_loss=generator_loss)

  def body(state, key):
    kx, kz = jax.random.split(key)
    x_real = 1.5 + 0.7 * jax.random.normal(kx, (512,))
    return step(state, x_real, jax.random.normal(kz, (512,)))

  state, metrics = jax.jit(lambda s, k: jax.lax.scan(body, s, k))(
      fgan.init_fgan_state(theta, omega, opt, opt), jax.random.split(jax.random.key(1), steps))
  assert float(state.generator_params["mu"]) == pytest.approx(1.5, abs=0.1)
  assert float(jnp.exp(state.generator_params["log_sigma"])) == pytest.approx(0.7, abs=0.1)
  # At the saddle P = Q the bound is D_f(P || P) = f(1) (0, or -log 4 for "gan").
  assert float(jnp.mean(metrics.objective[-100:])) == pytest.approx(float(div.f(1.0)), abs=0.02)


def test_switch_divergence_matches_each_divergence_under_vmap():
  divs = [fgan.divergence(n) for n in ("kl", "jeffrey", "gan")]
  v = jnp.linspace(-3.0, 3.0, 7)

  def composite(i):
    return fgan.switch_divergence(divs, i).f_star_of_activation(v)

  out = jax.jit(jax.vmap(composite))(jnp.arange(3))
  for i, d in enumerate(divs):
    np.testing.assert_allclose(out[i], d.f_star_of_activation(v), rtol=1e-6)
  sw = fgan.switch_divergence(divs, 2)
  assert float(sw.f_prime_at_1) == pytest.approx(-math.log(2))


# ---------------------------------------------------------------------------- bad input


def test_unknown_divergence_name_lists_the_allowed_names():
  with pytest.raises(ValueError, match=r"name must be one of .*'kl'.*got 'kullback'"):
    fgan.divergence("kullback")


@pytest.mark.parametrize("params,match", [
    ({}, "needs the parameter alpha"),
    ({"alpha": math.inf}, "alpha must be a finite real number, got inf"),
    ({"alpha": math.nan}, "alpha must be a finite real number"),
    ({"alpha": "half"}, "alpha must be a finite real number, got 'half'"),
    ({"alpha": True}, "alpha must be a finite real number"),
    ({"alpha": 0.5, "beta": 1.0}, "takes only the parameter 'alpha'"),
])
def test_invalid_alpha_is_rejected(params, match):
  with pytest.raises(ValueError, match=match):
    fgan.divergence("alpha", **params)


def test_parameters_for_a_parameterless_divergence_are_rejected():
  with pytest.raises(ValueError, match="'kl' takes no parameters"):
    fgan.divergence("kl", alpha=0.5)


def test_bad_generator_loss_and_empty_switch_and_total_variation_ratio():
  opt = optax.sgd(0.1)
  with pytest.raises(ValueError, match="generator_loss must be one of"):
    fgan.make_fgan_step(fgan.divergence("gan"), lambda t, z: z, lambda o, x: x, opt, opt,
                        generator_loss="wasserstein")
  with pytest.raises(ValueError, match="divergences must be a non-empty"):
    fgan.switch_divergence([], 0)
  with pytest.raises(ValueError, match="no density-ratio estimate"):
    fgan.density_ratio(fgan.divergence("total_variation"), jnp.zeros(3))


def test_alpha_half_is_twice_squared_hellinger_and_limits_are_continuous():
  with jax.enable_x64(True):
    u = _u_grid()
    np.testing.assert_allclose(fgan.divergence("alpha", alpha=0.5).f(u),
                               2 * fgan.divergence("squared_hellinger").f(u), rtol=1e-12,
                               atol=1e-15)
    v = jnp.linspace(-4.0, 4.0, 17)
    for special in (0.0, 1.0):
      exact = fgan.divergence("alpha", alpha=special)
      near = fgan.divergence("alpha", alpha=special + 1e-7)
      np.testing.assert_allclose(near.f(u), exact.f(u), rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(near.f_star(exact.f_prime(u)), exact.f_star(exact.f_prime(u)),
                                 rtol=1e-5, atol=1e-6)
    # Near 0 the activation family is continuous too, so the composite is.
    np.testing.assert_allclose(fgan.divergence("alpha", alpha=1e-7).f_star_of_activation(v),
                               fgan.divergence("alpha", alpha=0.0).f_star_of_activation(v),
                               rtol=1e-5, atol=1e-6)
