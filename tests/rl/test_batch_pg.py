"""Tests of the batch policy gradient (Kandasamy et al. 2017): the equations themselves."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from tomioka_jax import core
from tomioka_jax.rl import _batch_pg as bpg


def _slow_lambda_returns(r, v, rho, gamma, lam, mask):
  """The recursion written out, one sequence and one step at a time."""
  n, t_len = r.shape
  g = np.zeros_like(r)
  for i in range(n):
    last = int(mask[i].sum()) - 1
    nxt = 0.0
    for t in range(last, -1, -1):
      if t == last:
        g[i, t] = r[i, t]
      else:
        g[i, t] = r[i, t] + gamma * ((1 - lam) * v[i, t + 1] + lam * rho[i, t + 1] * nxt)
      nxt = g[i, t]
  return g


def _random_batch(seed, n=5, t_len=6):
  rng = np.random.default_rng(seed)
  r = rng.normal(size=(n, t_len))
  v = rng.normal(size=(n, t_len))
  rho = rng.uniform(0.2, 2.0, size=(n, t_len))
  lengths = rng.integers(1, t_len + 1, size=n)
  mask = (np.arange(t_len)[None] < lengths[:, None]).astype(np.float64)
  return r * mask, v * mask, rho, mask


@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (0.9, 0.5), (0.7, 0.0), (1.0, 0.3)])
def test_lambda_returns_match_the_recursion(gamma, lam):
  r, v, rho, mask = _random_batch(0)
  with jax.enable_x64(True):
    got = np.asarray(bpg.lambda_returns(r, v, rho, gamma, lam, mask))
  np.testing.assert_allclose(got, _slow_lambda_returns(r, v, rho, gamma, lam, mask),
                             rtol=1e-12, atol=1e-12)


def test_lambda_returns_match_rlax_when_on_policy():
  rlax = pytest.importorskip("rlax")
  rng = np.random.default_rng(1)
  r, v = rng.normal(size=(7,)).astype(np.float32), rng.normal(size=(7,)).astype(np.float32)
  ours = bpg.lambda_returns(r, v, np.ones(7, np.float32), 0.9, 0.6)
  # rlax bootstraps from v_t = V(s_{t+1}); after the last step the value is 0 (episode ends).
  v_next = np.concatenate([v[1:], [0.0]]).astype(np.float32)
  ref = rlax.lambda_returns(r, np.full(7, 0.9, np.float32), v_next, 0.6)
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_lambda_returns_bad_input():
  r = np.zeros((2, 3))
  with pytest.raises(ValueError, match="gamma"):
    bpg.lambda_returns(r, r, r + 1, 1.5, 0.5)
  with pytest.raises(ValueError, match="lam"):
    bpg.lambda_returns(r, r, r + 1, 0.9, -0.1)
  with pytest.raises(ValueError, match="shape"):
    bpg.lambda_returns(r, np.zeros((2, 4)), r + 1, 0.9, 0.5)
  with pytest.raises(ValueError, match="rho"):
    bpg.lambda_returns(r, r, r - 1, 0.9, 0.5)


def _policy(seed, vocab=3, hidden=6, scale=2.0):
  return bpg.TokenPolicy(vocab, hidden, 4, logit_scale=scale, rngs=nnx.Rngs(seed))


def _score(tokens, mask):
  """Counts of the target token 1 in the valid part, plus a bonus for token 2 first."""
  return (jnp.sum((tokens == 1) * mask, -1) + 0.5 * (tokens[:, 0] == 2)).astype(jnp.float32)


def test_policy_probabilities_sum_to_one_and_sampling_agrees():
  pol = _policy(0, vocab=4)
  seqs = bpg.enumerate_token_sequences(4, 3)
  assert len(seqs) == 1 + 3 + 9 + 27  # end at step 0, 1, 2 or never
  logp, mask, feats = bpg.token_log_probs(pol, seqs)
  assert feats.shape == (40, 3, 7)
  np.testing.assert_allclose(float(jnp.exp(logp.sum(-1)).sum()), 1.0, rtol=1e-5)
  tokens, lp, m = jax.jit(lambda k: bpg.sample_tokens(pol, k, 64, 3))(jax.random.key(2))
  lp2, m2, _ = bpg.token_log_probs(pol, tokens)
  np.testing.assert_allclose(lp, lp2, atol=1e-5)
  np.testing.assert_array_equal(m, m2)
  # padding after the end token is the end token, masked out
  ended = np.cumsum(np.asarray(tokens) == 0, 1) - (np.asarray(tokens) == 0) > 0
  assert np.all(np.asarray(tokens)[ended] == 0) and np.all(np.asarray(m)[ended] == 0)


def test_sequence_mask_and_terminal_rewards():
  tokens = np.array([[2, 0, 0], [1, 2, 1], [0, 0, 0]])
  mask = bpg.sequence_mask(tokens)
  np.testing.assert_array_equal(mask, [[1, 1, 0], [1, 1, 1], [1, 0, 0]])
  r = bpg.terminal_rewards(np.array([3.0, 4.0, 5.0]), mask)
  np.testing.assert_array_equal(r, [[0, 3, 0], [0, 0, 4], [5, 0, 0]])
  with pytest.raises(ValueError, match="scores"):
    bpg.terminal_rewards(np.ones(2), mask)


def _per_sequence_setup(pi, q, seqs):
  lq, mask, _ = bpg.token_log_probs(q, seqs)
  scores = _score(jnp.asarray(seqs), mask)
  return lq, mask, scores, bpg.terminal_rewards(scores, mask)


def test_surrogate_gradient_is_the_estimator():
  """grad of the surrogate = sum_t rho_t grad log pi_t (G_t - V_t), per-step Jacobians."""
  pi, q = _policy(1), _policy(2)
  seqs = bpg.enumerate_token_sequences(3, 3)[[3, 7, 12]]
  lq, mask, _, rewards = _per_sequence_setup(pi, q, seqs)
  values = 0.3 * mask + 0.1 * jnp.arange(3.0)[None]  # any state-dependent values
  graphdef, params, rest = nnx.split(pi, nnx.Param, ...)
  logp_of = lambda p: bpg.token_log_probs(nnx.merge(graphdef, p, rest), seqs)[0]
  surr = lambda p: jnp.sum(bpg.batch_policy_gradient_surrogate(logp_of(p), lq, rewards,
                                                                values, 0.9, 0.5, mask))
  got = ravel_pytree(jax.grad(surr)(params))[0]
  p0, unravel = ravel_pytree(params)
  jac = np.asarray(jax.jacobian(lambda p: logp_of(unravel(p)))(p0))  # (N, T, P)
  logp = np.asarray(logp_of(params))
  rho = np.where(np.asarray(mask) > 0, np.exp(logp - np.asarray(lq)), 1.0)
  g = _slow_lambda_returns(np.asarray(rewards, np.float64), np.asarray(values, np.float64),
                           rho, 0.9, 0.5, np.asarray(mask))
  want = np.einsum("nt,ntp->p", rho * (g - np.asarray(values)) * np.asarray(mask), jac)
  np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-5)


def test_estimator_expectation_is_the_exact_gradient():
  """E_q[estimator] by enumeration (lambda = gamma = 1): equals the off-policy (excursion)
  gradient for pi != q with any state-dependent baseline, and grad E_pi[R] at pi = q."""
  pi, q = _policy(3), _policy(4)
  seqs = bpg.enumerate_token_sequences(3, 3)
  lq, mask, scores, rewards = _per_sequence_setup(pi, q, seqs)
  q_prob = jnp.exp(jnp.sum(lq, -1))
  graphdef, params, rest = nnx.split(pi, nnx.Param, ...)
  flat = lambda tree: ravel_pytree(tree)[0]

  def expected_estimate(p, values, behaviour):
    logp, _, feats = bpg.token_log_probs(nnx.merge(graphdef, p, rest), seqs)
    v = values(feats) * mask
    surr = bpg.batch_policy_gradient_surrogate(logp, behaviour, rewards, v, 1.0, 1.0, mask)
    return jnp.sum(jax.lax.stop_gradient(jnp.exp(jnp.sum(behaviour, -1))) * surr)

  grad_j, grad_exc, _ = bpg.exact_gradients(pi, lq, seqs, scores)
  w = jax.random.normal(jax.random.key(0), (7,))
  for values in (lambda f: 0.8 * jnp.ones(f.shape[:-1]), lambda f: f @ w):
    est = flat(jax.grad(expected_estimate)(params, values, lq))
    np.testing.assert_allclose(est, flat(grad_exc), rtol=1e-4, atol=1e-6)
  # per-step ratios leave the prefix distribution at q's: not grad J when pi != q
  assert np.linalg.norm(flat(grad_exc) - flat(grad_j)) > 1e-2 * np.linalg.norm(flat(grad_j))
  # at pi = q the estimator is unbiased for grad J itself
  lpi = bpg.token_log_probs(pi, seqs)[0]
  est_on = flat(jax.grad(expected_estimate)(params, lambda f: 0.8 * jnp.ones(f.shape[:-1]),
                                            jax.lax.stop_gradient(lpi)))
  grad_j_on, grad_exc_on, _ = bpg.exact_gradients(pi, lpi, seqs, scores)
  np.testing.assert_allclose(est_on, flat(grad_j_on), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(flat(grad_exc_on), flat(grad_j_on), rtol=1e-4, atol=1e-6)
  assert float(jnp.sum(q_prob)) == pytest.approx(1.0, rel=1e-5)


def test_gtd_step_matches_the_equations():
  rng = np.random.default_rng(3)
  w, h, e, phi, phi1 = (rng.normal(size=4) for _ in range(5))
  r, rho, gamma, lam, alpha, beta = 0.7, 1.3, 0.9, 0.4, 0.1, 0.2
  st, trace = bpg.gtd_lambda_step(bpg.GTDState(w, h), e, phi, phi1, r, rho, gamma, lam,
                                  alpha, beta)
  delta = r + gamma * phi1 @ w - phi @ w
  e_new = rho * (phi + gamma * lam * e)
  np.testing.assert_allclose(trace, e_new, rtol=1e-6)
  np.testing.assert_allclose(
      st.w, w + alpha * (delta * e_new - gamma * (1 - lam) * (e_new @ h) * phi1), rtol=1e-5)
  np.testing.assert_allclose(st.h, h + beta * (delta * e_new - (h @ phi) * phi), rtol=1e-5)


def _chain_mdp():
  """A 4-state ring with actions left/right (stochastic), rewards on arrival."""
  s, a = 4, 2
  p = np.zeros((s, a, s))
  for i in range(s):
    p[i, 0, (i - 1) % s] += 0.8
    p[i, 0, (i + 1) % s] += 0.2
    p[i, 1, (i + 1) % s] += 0.8
    p[i, 1, i] += 0.2
  r = np.tile(np.array([0.0, 1.0, -0.5, 2.0])[None, None], (s, a, 1))  # r(s, a, s') = c[s']
  pi = np.array([[0.3, 0.7], [0.6, 0.4], [0.2, 0.8], [0.5, 0.5]])
  q = np.full((s, a), 0.5)
  return p, r, pi, q


def _td_fixed_point(p, r, pi, q, phi, gamma, lam):
  """Off-policy TD(lambda) fixed point: Phi^T D (I - g l P)^-1 [(I - g P) Phi w - r_pi] = 0."""
  p_pi = np.einsum("sa,sat->st", pi, p)
  p_q = np.einsum("sa,sat->st", q, p)
  r_pi = np.einsum("sa,sat,sat->s", pi, p, r)
  evals, evecs = np.linalg.eig(p_q.T)
  d = np.real(evecs[:, np.argmin(np.abs(evals - 1))])
  d = d / d.sum()
  m = np.linalg.inv(np.eye(len(d)) - gamma * lam * p_pi)
  a_mat = phi.T @ np.diag(d) @ m @ (np.eye(len(d)) - gamma * p_pi) @ phi
  b_vec = phi.T @ np.diag(d) @ m @ r_pi
  return np.linalg.solve(a_mat, b_vec), p_pi, r_pi


def test_gtd_converges_to_the_off_policy_td_fixed_point():
  p, r, pi, q = _chain_mdp()
  gamma, lam = 0.8, 0.5
  phi = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [1.0, 1.0, 0.0], [0.3, 0.0, 1.0]])
  w_star, p_pi, r_pi = _td_fixed_point(p, r, pi, q, phi, gamma, lam)
  # the reference itself: with tabular features the fixed point is V^pi for any lambda
  v_pi = np.linalg.solve(np.eye(4) - gamma * p_pi, r_pi)
  np.testing.assert_allclose(_td_fixed_point(p, r, pi, q, np.eye(4), gamma, lam)[0], v_pi,
                             rtol=1e-10)
  # one long behaviour trajectory, cut into chunks (bootstrapping on the next state)
  rng = np.random.default_rng(0)
  chunks, length = 40, 2500
  states = np.zeros(chunks * length + 1, int)
  actions = rng.random(chunks * length) < q[0, 1]  # q is uniform: action 1 w.p. 1/2
  for t in range(chunks * length):
    states[t + 1] = rng.choice(4, p=p[states[t], int(actions[t])])
  acts = actions.astype(int)
  rewards = r[states[:-1], acts, states[1:]].astype(np.float32)
  rho = (pi[states[:-1], acts] / q[states[:-1], acts]).astype(np.float32)
  feats = phi[states].astype(np.float32)
  run = jax.jit(lambda st, f, rw, rh, last: bpg.gtd_lambda(st, f, rw, rh, gamma, lam, 0.01,
                                                           0.02, last_features=last))
  st = bpg.gtd_lambda_init(3)
  ws = []
  for c in range(chunks):
    sl = slice(c * length, (c + 1) * length)
    st = run(st, feats[sl], rewards[sl], rho[sl], feats[(c + 1) * length])
    ws.append(np.asarray(st.w))
  w_avg = np.mean(ws[chunks // 2:], axis=0)
  np.testing.assert_allclose(w_avg, w_star, rtol=0.05, atol=0.05)
  assert np.linalg.norm(w_avg - w_star) < 0.05 * np.linalg.norm(w_star)


def test_gtd_masks_and_episodes():
  """Masked steps change nothing; an episode's terminal next-features are zero."""
  rng = np.random.default_rng(4)
  f = rng.normal(size=(2, 4, 3)).astype(np.float32)
  r = rng.normal(size=(2, 4)).astype(np.float32)
  rho = rng.uniform(0.5, 1.5, size=(2, 4)).astype(np.float32)
  mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], np.float32)
  st0 = bpg.GTDState(jnp.asarray(rng.normal(size=3), jnp.float32), jnp.zeros(3))
  got = bpg.gtd_lambda(st0, f, r, rho, 0.9, 0.3, 0.1, 0.1, mask)
  # by hand: episode 1 has two steps, then terminal; episode 2 four steps
  st = st0
  for i, n in ((0, 2), (1, 4)):
    e = np.zeros(3)
    for t in range(n):
      nxt = f[i, t + 1] if t + 1 < n else np.zeros(3)
      st, e = bpg.gtd_lambda_step(st, e, f[i, t], nxt, r[i, t], rho[i, t], 0.9, 0.3, 0.1, 0.1)
  np.testing.assert_allclose(got.w, st.w, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got.h, st.h, rtol=1e-5, atol=1e-6)


def test_gtd_bad_input():
  st = bpg.gtd_lambda_init(3)
  f, r = np.zeros((4, 3)), np.zeros(4)
  with pytest.raises(ValueError, match="gamma"):
    bpg.gtd_lambda(st, f, r, r + 1, 1.1, 0.5, 0.1, 0.1)
  with pytest.raises(ValueError, match="lam"):
    bpg.gtd_lambda(st, f, r, r + 1, 0.9, 2.0, 0.1, 0.1)
  with pytest.raises(ValueError, match="alpha"):
    bpg.gtd_lambda(st, f, r, r + 1, 0.9, 0.5, 0.0, 0.1)
  with pytest.raises(ValueError, match="features"):
    bpg.gtd_lambda(st, np.zeros((5, 3)), r, r + 1, 0.9, 0.5, 0.1, 0.1)
  with pytest.raises(ValueError, match="weights"):
    bpg.gtd_lambda(st, np.zeros((4, 2)), r, r + 1, 0.9, 0.5, 0.1, 0.1)
  with pytest.raises(ValueError, match="rho"):
    bpg.gtd_lambda(st, f, r, r - 1, 0.9, 0.5, 0.1, 0.1)
  with pytest.raises(ValueError, match="num_features"):
    bpg.gtd_lambda_init(0)
  with pytest.raises(ValueError, match="baseline"):
    bpg.make_batch_pg_loss(baseline="oracle")
  with pytest.raises(ValueError, match="vocab_size"):
    bpg.TokenPolicy(1, 4, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="batch_size"):
    bpg.make_reinforce_loss(_score, batch_size=1, length=3)


def test_batch_pg_with_gtd_improves_the_policy_from_a_fixed_batch():
  """Off-policy training on q's samples raises the exact expected reward (core's trainer)."""
  q = _policy(5, scale=1.0)
  seqs = bpg.enumerate_token_sequences(3, 3)
  tokens, lq, mask = bpg.sample_tokens(q, jax.random.key(1), 128, 3)
  data = {"tokens": tokens, "behaviour_log_probs": lq, "reward": _score(tokens, mask)}
  model = bpg.ActorCritic(_policy(5, scale=1.0))
  opt = optax.adam(0.02)
  graphdef, state = core.create_train_state(model, opt, jax.random.key(0))
  loss = bpg.make_batch_pg_loss(baseline="gtd", lam=0.5)
  train = core.make_scan_trainer(graphdef, loss, opt, batch_size=32, epochs=10)
  new_state, metrics = train(state, data, jax.random.key(2))
  s_seq = _score(jnp.asarray(seqs), bpg.sequence_mask(seqs))

  def exact_j(st):
    m = nnx.merge(graphdef, st.params, st.model_state)
    return float(jnp.sum(jnp.exp(bpg.token_log_probs(m.policy, seqs)[0].sum(-1)) * s_seq))

  assert exact_j(new_state) > exact_j(state) + 0.2
  assert np.all(np.isfinite(metrics["loss"]))
  w = nnx.merge(graphdef, new_state.params, new_state.model_state).critic_w[...]
  assert float(jnp.linalg.norm(w)) > 0  # the critic was updated inside the loss
