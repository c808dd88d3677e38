"""Tests of the D3PM absorbing type diffusion (mattergen/_types.py) by enumeration on a small
state space: marginals as products of one-step matrices, posteriors by Bayes' rule, the model
posterior, the hybrid loss, and ancestral sampling of a known type distribution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tomioka_jax.science.mattergen import _types as ty

SMALL = ty.MaskDiffusion(num_steps=6, num_states=5)   # 4 "elements" + MASK (index 4)


def _products(d):
  """Qbar_k = Q_1 ... Q_k (float64 numpy), k = 0..N."""
  out = [np.eye(d.num_states)]
  for k in range(1, d.num_steps + 1):
    out.append(out[-1] @ np.asarray(ty.d3pm_transition_matrix(k, d), np.float64))
  return out


def test_defaults_and_schedule():
  assert (ty.TYPE_DIFFUSION.num_steps, ty.TYPE_DIFFUSION.num_states,
          ty.TYPE_DIFFUSION.mask_state) == (1000, 101, 100)
  n = 1000
  betas = 1.0 / (n - np.arange(n))                     # the reference's 1 / (N - step)
  alphas = np.concatenate([[1.0], np.cumprod(1 - betas)])
  alphas[-1] = 0.0
  with jax.enable_x64(True):
    np.testing.assert_allclose(ty.d3pm_keep_prob(jnp.arange(n + 1)), alphas, atol=1e-12)


def test_marginals_are_products_of_one_step_matrices():
  qbar = _products(SMALL)
  for k in range(SMALL.num_steps + 1):
    for x0 in range(SMALL.num_states):
      q = np.asarray(ty.d3pm_marginal_probs(jnp.array(x0), jnp.array(k), SMALL))
      np.testing.assert_allclose(q.sum(), 1.0, rtol=1e-6)
      np.testing.assert_allclose(q, qbar[k][x0], atol=1e-6)
  for k in range(1, SMALL.num_steps + 1):
    q = np.asarray(ty.d3pm_transition_matrix(k, SMALL))
    np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=1e-6)
  # Everything is masked at N.
  np.testing.assert_allclose(qbar[-1][:, -1], 1.0, atol=1e-12)


def test_posterior_is_bayes_rule_by_enumeration():
  qbar = _products(SMALL)
  n, k_states = SMALL.num_steps, SMALL.num_states
  for t in range(1, n + 1):
    for s in range(t):
      q_ts = np.eye(k_states)                          # q(x_t | x_s) = Q_{s+1} ... Q_t
      for k in range(s + 1, t + 1):
        q_ts = q_ts @ np.asarray(ty.d3pm_transition_matrix(k, SMALL), np.float64)
      for x0 in range(k_states - 1):
        for xt in range(k_states):
          evidence = qbar[t][x0, xt]
          if evidence == 0:
            continue
          bayes = q_ts[:, xt] * qbar[s][x0] / evidence
          lg = ty.d3pm_posterior_logits(jnp.array(xt), jax.nn.one_hot(x0, k_states),
                                        jnp.array(t), jnp.array(s), SMALL)
          post = np.asarray(jax.nn.softmax(lg))
          np.testing.assert_allclose(post.sum(), 1.0, rtol=1e-6)
          np.testing.assert_allclose(post, bayes, atol=1e-6)


def test_model_posterior_by_enumeration():
  qbar = _products(SMALL)
  rng = np.random.default_rng(0)
  k_states = SMALL.num_states
  for t, s in [(1, 0), (3, 2), (6, 5), (5, 1), (6, 0)]:
    q_ts = np.eye(k_states)
    for k in range(s + 1, t + 1):
      q_ts = q_ts @ np.asarray(ty.d3pm_transition_matrix(k, SMALL), np.float64)
    for xt in range(k_states):
      logits = rng.normal(size=k_states)
      p0 = np.exp(logits[:-1]) / np.exp(logits[:-1]).sum()    # the MASK logit is ignored
      p0 = np.concatenate([p0, [0.0]])
      # p(x_s | x_t) oc q(x_t | x_s) sum_x0 q(x_s | x0) p(x0)
      unnorm = q_ts[:, xt] * (p0 @ qbar[s])
      if unnorm.sum() == 0:
        continue
      want = unnorm / unnorm.sum()
      got = jax.nn.softmax(ty.d3pm_posterior_logits(
          jnp.array(xt), ty.x0_probs_from_logits(jnp.asarray(logits, jnp.float32), SMALL),
          jnp.array(t), jnp.array(s), SMALL))
      np.testing.assert_allclose(got, want, atol=1e-6)


def _hybrid_loss_reference(x0, xnext, k, logits, d, lam):
  qbar = _products(d)
  q1 = np.asarray(ty.d3pm_transition_matrix(k + 1, d), np.float64)
  p0 = np.exp(logits[:-1] - logits[:-1].max())
  p0 = np.concatenate([p0 / p0.sum(), [0.0]])
  q = q1[:, xnext] * qbar[k][x0]
  q = q / q.sum()
  p = q1[:, xnext] * (p0 @ qbar[k])
  p = p / p.sum()
  ce0 = -np.log(p0[x0])
  if k == 0:
    base = -np.log(p[x0])
  else:
    nz = q > 0
    base = np.sum(q[nz] * np.log(q[nz] / p[nz]))
  return base + lam * ce0


def test_hybrid_loss_by_enumeration():
  rng = np.random.default_rng(1)
  for k in range(SMALL.num_steps):
    for x0 in range(4):
      for xnext in (x0, 4):
        if k + 1 == SMALL.num_steps and xnext != 4:
          continue  # x_N is always MASK
        logits = rng.normal(size=5)
        got, parts = ty.d3pm_hybrid_loss(jnp.array(x0), jnp.array(xnext), jnp.array(k),
                                         jnp.asarray(logits, jnp.float32), SMALL, 0.01)
        want = _hybrid_loss_reference(x0, xnext, k, logits, SMALL, 0.01)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        assert float(parts["kl"]) >= -1e-6
  # A perfect x0 prediction makes the base term vanish; the loss is then lambda * ~0.
  logits = 30.0 * jax.nn.one_hot(2, 5)
  for k in range(SMALL.num_steps):
    got, parts = ty.d3pm_hybrid_loss(jnp.array(2), jnp.array(4), jnp.array(k), logits, SMALL)
    assert float(got) < 1e-6 and float(parts["kl"]) < 1e-6


def test_sample_marginal_masks_at_the_right_rate():
  x0 = jnp.full((40000,), 7, jnp.int32)
  for k in (0, 250, 900, 1000):
    x = ty.d3pm_sample_marginal(jax.random.key(k), x0, jnp.array(k))
    frac = float(jnp.mean(x == 100))
    assert set(np.unique(np.asarray(x))) <= {7, 100}
    np.testing.assert_allclose(frac, k / 1000, atol=4 * np.sqrt(0.25 / 40000))


@pytest.mark.parametrize("n_diffusion, num_steps", [(100, 100), (1000, 50)])
def test_ancestral_sampling_recovers_a_type_distribution(n_diffusion, num_steps):
  # i.i.d. types with distribution pi; the exact p(x_0 | x_t) of a masked atom is pi (a masked
  # atom carries no information), of an unmasked one its own type. S = N is the reference's
  # chain; S = 50 < N = 1000 jumps with the closed-form posterior.
  d = ty.MaskDiffusion(num_steps=n_diffusion)
  pi = np.zeros(101)
  pi[[0, 7, 25, 78]] = [0.1, 0.2, 0.3, 0.4]
  logits = jnp.asarray(np.log(np.maximum(pi, 1e-30)), jnp.float32)
  b, n = 600, 4
  mask = jnp.ones((b, n), bool).at[:, 3].set(False)
  t = np.linspace(1.0, 1.0 / num_steps, num_steps)
  k = np.floor(np.round(t * (d.num_steps - 1), 9)).astype(np.int32) + 1
  k_next = np.concatenate([k[1:], [0]])

  def step(x, inp):
    kt, ks, key = inp
    x, _ = ty.d3pm_ancestral_step(key, x, jnp.broadcast_to(logits, (b, n, 101)), kt, ks, mask,
                                  d)
    return x, None

  def run(key):
    x = ty.d3pm_prior_sample(mask, d)
    return jax.lax.scan(step, x, (jnp.asarray(k), jnp.asarray(k_next),
                                  jax.random.split(key, num_steps)))[0]

  x = np.asarray(jax.jit(run)(jax.random.key(0)))
  np.testing.assert_array_equal(x[:, 3], 0)
  real = x[:, :3].ravel()
  assert not np.any(real == 100)
  freq = np.bincount(real, minlength=101) / real.size
  np.testing.assert_allclose(freq, pi, atol=4 * np.sqrt(0.25 / real.size))


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="num_steps"):
    ty.MaskDiffusion(num_steps=0)
  with pytest.raises(ValueError, match="num_states"):
    ty.MaskDiffusion(num_states=1)
  with pytest.raises(ValueError, match="k must be"):
    ty.d3pm_transition_matrix(0, SMALL)
  with pytest.raises(ValueError, match="logits"):
    ty.x0_probs_from_logits(jnp.zeros(7), SMALL)
  with pytest.raises(ValueError, match="hybrid_lambda"):
    ty.d3pm_hybrid_loss(jnp.array(0), jnp.array(0), jnp.array(0), jnp.zeros(5), SMALL, -1.0)
  with pytest.raises(ValueError, match="diffusion"):
    ty.d3pm_keep_prob(jnp.array(1), diffusion=3)
