"""Tests of the mutual-information estimators (tomioka_jax/representation/tib/_estimators.py)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tomioka_jax.representation.tib import _estimators as est


def _gaussian_pairs(key, n, d, rho):
  ka, kb = jax.random.split(key)
  a = jax.random.normal(ka, (n * d,)).reshape(n, d)
  b = rho * a + math.sqrt(1 - rho**2) * jax.random.normal(kb, (n * d,)).reshape(n, d)
  return a, b


def _optimal_scores(a, b, rho):
  """log p(b_j | a_i) / p(b_j) for independent coordinates with correlation rho."""
  diff = b[None, :, :] - rho * a[:, None, :]
  s = (-0.5 * math.log(1 - rho**2) - jnp.square(diff) / (2 * (1 - rho**2))
       + 0.5 * jnp.square(b)[None, :, :])
  return jnp.sum(s, axis=-1)


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_estimators_near_truth_with_optimal_critic(rho):
  d, n = 2, 1024
  truth = -0.5 * d * math.log(1 - rho**2)
  a, b = _gaussian_pairs(jax.random.key(0), n, d, rho)
  scores = _optimal_scores(a, b, rho)
  nce = float(est.infonce_lower_bound(scores))
  dv = float(est.smile_lower_bound(scores, clip=None))
  smile = float(est.smile_lower_bound(scores, clip=20.0))
  assert nce <= math.log(n)
  assert abs(nce - truth) < 0.08, (nce, truth)
  assert abs(dv - truth) < 0.08, (dv, truth)
  assert abs(smile - truth) < 0.08, (smile, truth)
  # a critic that ignores the pairing estimates ~0
  assert abs(float(est.infonce_lower_bound(jnp.zeros((n, n))))) < 1e-5


def test_infonce_never_exceeds_log_n():
  n = 64
  for scale in (1.0, 10.0, 1e4):
    s = scale * jax.random.normal(jax.random.key(1), (n * n,)).reshape(n, n)
    assert float(est.infonce_lower_bound(s)) <= math.log(n) + 1e-5
  perfect = 1e4 * jnp.eye(n)
  np.testing.assert_allclose(float(est.infonce_lower_bound(perfect)), math.log(n), rtol=1e-6)


def test_infonce_and_smile_equal_slow_references():
  n = 7
  s = np.asarray(jax.random.normal(jax.random.key(2), (n * n,)).reshape(n, n), np.float64) * 3
  nce = np.mean([s[i, i] - math.log(np.mean(np.exp(s[i]))) for i in range(n)])
  np.testing.assert_allclose(float(est.infonce_lower_bound(s)), nce, rtol=1e-5)
  clip = 2.0
  off = [math.exp(min(max(s[i, j], -clip), clip)) for i in range(n) for j in range(n) if i != j]
  dv = np.mean(np.diag(s)) - math.log(np.mean(off))
  np.testing.assert_allclose(float(est.smile_lower_bound(s, clip=clip)), dv, rtol=1e-5)
  # SMILE's gradient is the JS bound's
  g_smile = jax.grad(lambda x: est.smile_lower_bound(x, clip=clip))(jnp.asarray(s, jnp.float32))
  g_js = jax.grad(est.js_lower_bound)(jnp.asarray(s, jnp.float32))
  np.testing.assert_allclose(np.asarray(g_smile), np.asarray(g_js), rtol=1e-6)
  sp = lambda x: np.log1p(np.exp(x))
  js = np.mean(-sp(-np.diag(s))) - np.mean([sp(s[i, j]) for i in range(n) for j in range(n)
                                            if i != j])
  np.testing.assert_allclose(float(est.js_lower_bound(s)), js, rtol=1e-5)


def test_discrete_autoinformation_and_divergences():
  # a two-state chain with known transition: the plug-in AI equals the exact one
  p = np.array([[0.9, 0.1], [0.2, 0.8]])
  pi = np.array([2 / 3, 1 / 3])
  joint = pi[:, None] * p
  exact = sum(joint[i, j] * math.log(p[i, j] / pi[j]) for i in range(2) for j in range(2))
  np.testing.assert_allclose(float(est.mutual_information_discrete(joint)), exact, rtol=1e-6)
  rng = np.random.default_rng(0)
  s = np.zeros((4, 20000), int)
  s[:, 0] = rng.choice(2, 4, p=pi)
  u = rng.random((4, 20000))
  for t in range(1, 20000):
    s[:, t] = (u[:, t] < p[s[:, t - 1], 1]).astype(int)
  np.testing.assert_allclose(est.lagged_joint(s, 1, 2), joint, atol=0.01)
  assert abs(est.discrete_autoinformation(s, 1, 2) - exact) < 0.01
  assert float(est.js_divergence(joint, joint)) == pytest.approx(0.0, abs=1e-7)
  np.testing.assert_allclose(float(est.js_divergence([1, 0], [0, 1])), math.log(2), rtol=1e-6)
  q = np.array([0.5, 0.5])
  m = (pi + q) / 2
  ref = 0.5 * np.sum(pi * np.log(pi / m)) + 0.5 * np.sum(q * np.log(q / m))
  np.testing.assert_allclose(float(est.js_divergence(pi, q)), ref, rtol=1e-4)
  np.testing.assert_allclose(float(est.kl_divergence_discrete(pi, q)),
                             np.sum(pi * np.log(pi / q)), rtol=1e-4)


def test_bad_input():
  with pytest.raises(ValueError, match=r"scores must be a square \(N, N\) matrix"):
    est.infonce_lower_bound(jnp.zeros((3, 4)))
  with pytest.raises(ValueError, match="clip must be > 0"):
    est.smile_lower_bound(jnp.zeros((3, 3)), clip=0.0)
  with pytest.raises(ValueError, match="lag must be smaller than the trajectory length 5"):
    est.lagged_joint(np.zeros((2, 5), int), 5, 2)
  with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
    est.lagged_joint(np.full((2, 5), 3), 1, 2)
  with pytest.raises(ValueError, match="same number of cells"):
    est.js_divergence([0.5, 0.5], [1.0])


def _train_quadratic_critic(estimator, d, rho, batch, steps, key):
  """Adam on ``f(a, b) = a^T W b + a^T V a + b^T U b + c`` over fresh Gaussian batches.

  The family holds the optimal critic ``log p(a, b) / p(a) p(b)``: ``W = rho / (1 - rho^2) I``,
  ``U = V = -rho^2 / (2 (1 - rho^2)) I``, ``c = -d/2 log(1 - rho^2)`` (InfoNCE is blind to
  ``V`` and ``c``; the JS objective that trains SMILE's critic is not).
  """
  import optax  # pylint: disable=g-import-not-at-top
  params = {"w": jnp.zeros((d, d)), "u": jnp.zeros((d, d)), "v": jnp.zeros((d, d)),
            "c": jnp.zeros(())}
  opt = optax.adam(0.05)

  def step(carry, k):
    p, s = carry
    a, b = _gaussian_pairs(k, batch, d, rho)
    grads = jax.grad(lambda q: -estimator(_quadratic_scores(q, a, b)))(p)
    updates, s = opt.update(grads, s)
    return (optax.apply_updates(p, updates), s), None

  (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, steps))
  return params


def _quadratic_scores(p, a, b):
  quad_b = jnp.sum((b @ p["u"]) * b, axis=1)
  quad_a = jnp.sum((a @ p["v"]) * a, axis=1)
  return a @ p["w"] @ b.T + quad_a[:, None] + quad_b[None, :] + p["c"]


@pytest.mark.parametrize("name", ["infonce", "smile"])
def test_trained_critic_estimates_gaussian_mutual_information(name):
  """A critic trained on the bound recovers ``I = -d/2 log(1 - rho^2)`` of a Gaussian pair."""
  d, rho = 2, 0.8
  truth = -0.5 * d * math.log(1 - rho**2)  # 1.0217 nats
  estimator = {"infonce": est.infonce_lower_bound,
               "smile": lambda s: est.smile_lower_bound(s, clip=5.0)}[name]
  params = jax.jit(lambda k: _train_quadratic_critic(estimator, d, rho, 128, 300, k))(
      jax.random.key(0))
  scores = _quadratic_scores
  a, b = _gaussian_pairs(jax.random.key(1), 2048, d, rho)
  estimate = float(estimator(scores(params, a, b)))
  assert abs(estimate - truth) < 0.1, (name, estimate, truth)
  # the learned bilinear weight is near the optimum's rho / (1 - rho^2) I (InfoNCE identifies
  # W; SMILE's JS objective has the same optimal critic)
  np.testing.assert_allclose(np.asarray(params["w"]), rho / (1 - rho**2) * np.eye(d), atol=0.6)
  # an untrained (zero) critic estimates nothing
  zero = jax.tree.map(jnp.zeros_like, params)
  assert abs(float(estimator(scores(zero, a, b)))) < 1e-5


def test_trained_infonce_saturates_at_log_batch_size():
  """With I >> log N, the trained InfoNCE estimate approaches log N and never exceeds it."""
  d, rho, n = 4, 0.99, 16
  truth = -0.5 * d * math.log(1 - rho**2)  # 7.8 nats
  assert truth > math.log(n) + 4
  params = jax.jit(lambda k: _train_quadratic_critic(
      est.infonce_lower_bound, d, rho, n, 300, k))(jax.random.key(2))
  scores = _quadratic_scores
  values = []
  for i in range(20):
    a, b = _gaussian_pairs(jax.random.key(10 + i), n, d, rho)
    values.append(float(est.infonce_lower_bound(scores(params, a, b))))
  assert max(values) <= math.log(n) + 1e-5
  assert np.mean(values) > math.log(n) - 0.2, (np.mean(values), math.log(n))
