"""Tests of rl/_reward_robust.py: the exact identities of regularized RL and its adversary.

Everything runs in float64 (``jax.enable_x64``) so that the identities hold to 1e-6 or better;
references are written here in NumPy/SciPy (loops, linear solves, SLSQP, HiGHS).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from tomioka_jax import rl
from tomioka_jax.rl import _reward_robust as rr

LAMS = (0.1, 0.5, 1.0)
ATOL = 1e-6


@pytest.fixture(autouse=True)
def _x64():
  with jax.enable_x64(True):
    yield


def _grid() -> rr.Gridworld:
  return rr.gridworld(4, 5, walls=[(1, 1), (2, 1)], goals={(3, 4): 1.0, (0, 4): -1.0},
                      slip=0.2, step_reward=-0.01, gamma=0.9)


def _mdps() -> dict[str, rr.TabularMDP]:
  return {"grid": _grid().mdp,
          "random": rr.random_mdp(jax.random.key(3), 7, 3, gamma=0.9, branching=3)}


MDP_NAMES = ("grid", "random")


def _mdp(name: str) -> rr.TabularMDP:
  return _mdps()[name]


def _np(x) -> np.ndarray:
  return np.asarray(x, np.float64)


def _random_policies(seed: int, num: int, shape) -> np.ndarray:
  rng = np.random.default_rng(seed)
  pols = rng.gamma(0.5, size=(num,) + tuple(shape)) + 1e-12
  return pols / pols.sum(-1, keepdims=True)


def _np_value(P, r, gamma, policy, penalty=None) -> np.ndarray:
  """Policy value by an explicit linear solve in NumPy (the slow reference)."""
  P, r, policy = _np(P), _np(r), _np(policy)
  r_pi = (policy * r).sum(-1) - (0 if penalty is None else penalty)
  P_pi = np.einsum("sa,sat->st", policy, P)
  return np.linalg.solve(np.eye(len(r_pi)) - gamma * P_pi, r_pi)


def _np_reference_pi0(mdp, seed=11) -> np.ndarray:
  rng = np.random.default_rng(seed)
  pi0 = rng.uniform(0.2, 1.0, size=mdp.r.shape)
  return pi0 / pi0.sum(-1, keepdims=True)


# ----------------------------------------------------------------------------- (a) soft Bellman


@pytest.mark.parametrize("name", MDP_NAMES)
def test_soft_bellman_fixed_point_and_policy_form(name):
  mdp = _mdp(name)
  pi0 = _np_reference_pi0(mdp)
  P, r = _np(mdp.P), _np(mdp.r)
  for lam in LAMS:
    q, v, pol, residual, _ = rl.soft_value_iteration(mdp.P, mdp.r, mdp.gamma, lam, pi0)
    q, v, pol = _np(q), _np(v), _np(pol)
    q_ref = r + mdp.gamma * P @ v
    v_ref = np.array([lam * math.log(sum(pi0[s, a] * math.exp(q_ref[s, a] / lam)
                                         for a in range(r.shape[1]))) for s in range(len(v))])
    assert np.max(np.abs(v - v_ref)) < 1e-10
    assert np.max(np.abs(q - q_ref)) < 1e-10
    np.testing.assert_allclose(pol, pi0 * np.exp((q_ref - v_ref[:, None]) / lam), atol=1e-10)
    assert float(residual) < 1e-10
    # The fixed point is the regularized value of pi* (linear solve with the KL penalty).
    kl = (pol * np.log(pol / pi0)).sum(-1)
    np.testing.assert_allclose(_np_value(P, r, mdp.gamma, pol, lam * kl), v, atol=1e-9)


def test_entropy_is_uniform_kl_plus_log_a():
  mdp = _mdp("grid")
  num_actions = mdp.r.shape[1]
  for lam in LAMS:
    ent = rl.soft_value_iteration(mdp.P, mdp.r, mdp.gamma, lam, entropy=True)
    kl = rl.soft_value_iteration(mdp.P, mdp.r, mdp.gamma, lam)  # uniform pi0
    np.testing.assert_allclose(_np(ent.v), _np(kl.v) + lam * math.log(num_actions)
                               / (1 - mdp.gamma), atol=1e-9)
    np.testing.assert_allclose(_np(ent.policy), _np(kl.policy), atol=1e-10)
    # Entropy-regularized value of pi* = soft value (policy_evaluation with entropy bonus).
    pe = rl.policy_evaluation(mdp.P, mdp.r, mdp.gamma, ent.policy, lam=lam, entropy=True)
    np.testing.assert_allclose(_np(pe.v), _np(ent.v), atol=1e-9)


# ----------------------------------------------------------------------------- (b) indifference


@pytest.mark.parametrize("name", MDP_NAMES)
def test_worst_case_reward_is_indifferent(name):
  mdp = _mdp(name)
  pi0 = _np_reference_pi0(mdp)
  pols = _random_policies(0, 5, mdp.r.shape)
  uniform = np.full(mdp.r.shape, 1.0 / mdp.r.shape[1])
  deterministic = np.eye(mdp.r.shape[1])[np.arange(mdp.r.shape[0]) % mdp.r.shape[1]]
  for lam in LAMS:
    w = rl.worst_case_reward(mdp.P, mdp.r, mdp.gamma, lam, pi0)
    pol, v = _np(w.policy), _np(w.v)
    # r' = r - lam log(pi* / pi0), computed from the returned policy.
    np.testing.assert_allclose(_np(w.reward), _np(mdp.r) - lam * np.log(pol / pi0), atol=1e-9)
    # r'(s, a) + gamma E v(s') = v(s) for every action.
    q_prime = _np(w.reward) + mdp.gamma * _np(mdp.P) @ v
    assert np.max(np.abs(q_prime - v[:, None])) < ATOL
    for policy in [*pols, uniform, deterministic, pol]:
      assert np.max(np.abs(_np_value(mdp.P, w.reward, mdp.gamma, policy) - v)) < ATOL


# ----------------------------------------------------------------------------- (c) the LP


@pytest.mark.parametrize("name", MDP_NAMES)
def test_lp_primal_dual_agree_with_value_iteration(name):
  mdp = _mdp(name)
  lp = rl.occupancy_lp(mdp.P, mdp.r, mdp.gamma, mdp.mu0)
  hard = rl.soft_value_iteration(mdp.P, mdp.r, mdp.gamma, 0.0)
  value = float(jnp.dot(mdp.mu0, hard.v))
  assert abs(lp.primal_value - lp.dual_value) < ATOL
  assert abs(lp.primal_value - value) < ATOL
  # The greedy policy's value (linear solve) and its occupancy measure's return.
  v_greedy = _np_value(mdp.P, mdp.r, mdp.gamma, hard.policy)
  assert abs(float(_np(mdp.mu0) @ v_greedy) - value) < ATOL
  d = rl.occupancy_measure(mdp.P, mdp.gamma, mdp.mu0, hard.policy)
  assert abs(float(jnp.sum(d * mdp.r)) - value) < ATOL
  assert abs(float(jnp.sum(d)) - 1 / (1 - mdp.gamma)) < 1e-9
  assert float(jnp.max(jnp.abs(rl.flow_residual(mdp.P, mdp.gamma, mdp.mu0, d)))) < 1e-10
  assert np.max(np.abs(_np(rl.flow_residual(mdp.P, mdp.gamma, mdp.mu0, lp.d)))) < 1e-8
  # The LP's dual solution satisfies every Bellman inequality.
  slack = lp.v[:, None] - _np(mdp.r) - mdp.gamma * _np(mdp.P) @ lp.v
  assert slack.min() > -1e-8


def test_occupancy_measure_against_rollout_sum():
  mdp = _mdp("random")
  pol = _random_policies(1, 1, mdp.r.shape)[0]
  P, mu0 = _np(mdp.P), _np(mdp.mu0)
  d, state = np.zeros(mdp.r.shape), mu0.copy()
  for t in range(400):  # sum_t gamma^t Pr(s_t, a_t), truncated (0.9^400 ~ 5e-19)
    d += mdp.gamma ** t * state[:, None] * pol
    state = np.einsum("s,sa,sat->t", state, pol, P)
  np.testing.assert_allclose(_np(rl.occupancy_measure(mdp.P, mdp.gamma, mdp.mu0, pol)), d,
                             atol=1e-12)


# ----------------------------------------------------------------------------- (d) tightness


@pytest.mark.parametrize("name", MDP_NAMES)
def test_adversary_constraint_is_tight(name):
  mdp = _mdp(name)
  pi0 = _np_reference_pi0(mdp)
  for lam in LAMS:
    w = rl.worst_case_reward(mdp.P, mdp.r, mdp.gamma, lam, pi0)
    delta = _np(w.perturbation)
    per_state = np.log((pi0 * np.exp(delta / lam)).sum(-1))
    assert np.max(np.abs(per_state)) < 1e-10  # tight in every state, not only the max
    assert abs(float(rl.feasible_set_violation(delta, pi0, lam))) < 1e-10
    assert float(rl.feasible_set_violation(delta - 0.1, pi0, lam)) < -0.1 / lam + 1e-9
    assert float(rl.feasible_set_violation(delta + 0.1, pi0, lam)) > 0
    went = rl.worst_case_reward(mdp.P, mdp.r, mdp.gamma, lam, entropy=True)
    assert abs(float(rl.feasible_set_violation(went.perturbation, lam=lam, entropy=True))) < 1e-10
    np.testing.assert_allclose(_np(went.perturbation), lam * np.log(_np(went.policy)), atol=1e-9)
  # lam = 0: the hard advantage, <= 0, with max 0 in every state.
  w0 = rl.worst_case_reward(mdp.P, mdp.r, mdp.gamma, 0.0)
  assert abs(float(rl.feasible_set_violation(w0.perturbation, None, 0.0))) < 1e-12
  assert np.all(_np(w0.perturbation) <= 1e-12)


# ----------------------------------------------------------------------------- (e) pi* is optimal


@pytest.mark.parametrize("name", MDP_NAMES)
def test_pi_star_is_optimal_for_the_worst_case_reward(name):
  mdp = _mdp(name)
  pi0 = _np_reference_pi0(mdp)
  for lam in LAMS:
    w = rl.worst_case_reward(mdp.P, mdp.r, mdp.gamma, lam, pi0)
    soft_value = float(_np(mdp.mu0) @ _np(w.v))
    lp = rl.occupancy_lp(mdp.P, w.reward, mdp.gamma, mdp.mu0)
    assert abs(lp.primal_value - soft_value) < ATOL
    assert abs(lp.dual_value - soft_value) < ATOL
    d_star = rl.occupancy_measure(mdp.P, mdp.gamma, mdp.mu0, w.policy)
    assert abs(float(jnp.sum(d_star * w.reward)) - lp.primal_value) < ATOL
    hard = rl.soft_value_iteration(mdp.P, w.reward, mdp.gamma, 0.0)
    assert np.max(np.abs(_np(hard.v) - _np(w.v))) < ATOL
    # every action of pi* (indeed every action) attains max_a q'(s, a)
    assert np.max(np.abs(_np(hard.q) - _np(hard.v)[:, None])) < ATOL


# ----------------------------------------------------------------------------- (f) minimax


def _feasible_perturbations(seed, num, pi0, lam, margin_scale=0.3):
  """Random Delta, shifted per state into {sum_a pi0 exp(Delta / lam) <= 1}."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(num):
    raw = rng.normal(scale=1.0, size=pi0.shape)
    shift = lam * np.log((pi0 * np.exp(raw / lam)).sum(-1, keepdims=True))
    out.append(raw - shift - margin_scale * rng.uniform(size=(pi0.shape[0], 1)))
  return out


@pytest.mark.parametrize("name", MDP_NAMES)
def test_minimax_the_adversary_is_worst_case(name):
  mdp = _mdp(name)
  pi0 = _np_reference_pi0(mdp)
  for lam in LAMS:
    sol = rl.solve_policy_regularized(mdp.P, mdp.r, mdp.gamma, mdp.mu0, lam, pi0)
    optimum = float(sol.dual_value)
    d_star, omega = _np(sol.d), float(rl.policy_kl_regularizer(sol.d, pi0, lam))
    # Fenchel: Omega(d*) = max over the feasible set of <Delta, d*>, attained at Delta*.
    assert abs(float(np.sum(_np(sol.perturbation) * d_star)) - omega) < ATOL
    for delta in _feasible_perturbations(7, 6, pi0, lam):
      assert float(rl.feasible_set_violation(delta, pi0, lam)) <= 1e-12
      assert float(np.sum(delta * d_star)) <= omega + 1e-9
      # pi* under r - Delta earns at least the regularized optimum ...
      v_pi = _np_value(mdp.P, _np(mdp.r) - delta, mdp.gamma, sol.policy)
      assert float(_np(mdp.mu0) @ v_pi) >= optimum - 1e-9
      # ... hence so does the best policy for r - Delta: the adversary cannot do better.
      hard = rl.soft_value_iteration(mdp.P, _np(mdp.r) - delta, mdp.gamma, 0.0)
      assert float(_np(mdp.mu0) @ _np(hard.v)) >= optimum - 1e-9


@pytest.mark.parametrize("name", MDP_NAMES)
def test_policy_regularized_duality_certificate(name):
  mdp = _mdp(name)
  pi0 = _np_reference_pi0(mdp)
  for lam in LAMS:
    sol = rl.solve_policy_regularized(mdp.P, mdp.r, mdp.gamma, mdp.mu0, lam, pi0)
    assert abs(float(sol.gap)) < 1e-9
    assert float(sol.flow_residual) < 1e-10 and float(sol.dual_violation) < 1e-10
    # The primal objective at the occupancy of any policy is its regularized value (<= opt).
    for pol in _random_policies(5, 4, mdp.r.shape):
      d = rl.occupancy_measure(mdp.P, mdp.gamma, mdp.mu0, pol)
      obj = float(jnp.sum(d * mdp.r) - rl.policy_kl_regularizer(d, pi0, lam))
      kl = (pol * np.log(pol / pi0)).sum(-1)
      assert abs(obj - float(_np(mdp.mu0) @ _np_value(mdp.P, mdp.r, mdp.gamma, pol,
                                                       lam * kl))) < 1e-9
      assert obj <= float(sol.primal_value) + 1e-9


def _tiny_mdp() -> rr.TabularMDP:
  return rr.random_mdp(jax.random.key(5), 3, 2, gamma=0.8)


def _slsqp_primal(mdp, objective_and_grad):
  """max_{d in D} objective(d) by SLSQP over d >= 0 with the flow constraints (reference)."""
  P, mu0 = _np(mdp.P), _np(mdp.mu0)
  num_states, num_actions = mdp.r.shape
  M = np.repeat(np.eye(num_states), num_actions, axis=1) - mdp.gamma * P.reshape(-1,
                                                                                  num_states).T
  x0 = _np(rl.occupancy_measure(mdp.P, mdp.gamma, mdp.mu0,
                                np.full(mdp.r.shape, 1 / num_actions))).ravel()

  def neg(x):
    f, g = objective_and_grad(x.reshape(num_states, num_actions))
    return -f, -g.ravel()
  res = optimize.minimize(neg, x0, jac=True, method="SLSQP",
                          bounds=[(1e-14, None)] * x0.size,
                          constraints=[{"type": "eq", "fun": lambda x: M @ x - mu0,
                                        "jac": lambda x: M}],
                          options={"ftol": 1e-15, "maxiter": 1000})
  return -res.fun


def test_regularized_primals_against_slsqp():
  mdp = _tiny_mdp()
  r = _np(mdp.r)
  pi0 = _np_reference_pi0(mdp)
  lam = 0.5

  def policy_kl_obj(d):
    d_s = d.sum(-1, keepdims=True)
    grad_omega = lam * np.log(d / (d_s * pi0))
    return float((r * d).sum() - (d * grad_omega).sum()), r - grad_omega
  ours = rl.solve_policy_regularized(mdp.P, mdp.r, mdp.gamma, mdp.mu0, lam, pi0)
  assert abs(_slsqp_primal(mdp, policy_kl_obj) - float(ours.primal_value)) < 1e-6

  d0 = _np(rl.occupancy_measure(mdp.P, mdp.gamma, mdp.mu0, pi0))

  def occupancy_kl_obj(d):
    omega = lam * (d * np.log(d / d0) - d + d0).sum()
    return float((r * d).sum() - omega), r - lam * np.log(d / d0)
  occ = rl.solve_occupancy_regularized(mdp.P, mdp.r, mdp.gamma, mdp.mu0, lam, d0)
  assert abs(_slsqp_primal(mdp, occupancy_kl_obj) - float(occ.primal_value)) < 1e-6


# ----------------------------------------------------------------------------- occupancy KL


@pytest.mark.parametrize("name", MDP_NAMES)
def test_occupancy_kl_regularizer_duality(name):
  mdp = _mdp(name)
  num_states, num_actions = mdp.r.shape
  d0 = _np(rl.occupancy_measure(mdp.P, mdp.gamma, np.full(num_states, 1 / num_states),
                                np.full(mdp.r.shape, 1 / num_actions)))
  rng = np.random.default_rng(2)
  for lam in (0.05,) + LAMS:
    sol = rl.solve_occupancy_regularized(mdp.P, mdp.r, mdp.gamma, mdp.mu0, lam, d0)
    d, v, delta = _np(sol.d), _np(sol.v), _np(sol.perturbation)
    assert float(sol.flow_residual) < 1e-9 and abs(float(sol.gap)) < 1e-9
    np.testing.assert_allclose(delta, lam * np.log(d / d0), atol=1e-9)  # Delta* = grad Omega
    omega = float(rl.occupancy_kl_regularizer(d, d0, lam))
    conj = float(rl.occupancy_kl_conjugate(delta, d0, lam))
    assert abs(omega + conj - float(np.sum(d * delta))) < 1e-9  # Fenchel-Young equality
    for _ in range(3):  # ... and inequality elsewhere
      y = delta + rng.normal(size=delta.shape)
      x = d * rng.uniform(0.5, 1.5, size=d.shape)
      assert float(rl.occupancy_kl_regularizer(x, d0, lam)) + float(
          rl.occupancy_kl_conjugate(y, d0, lam)) >= float(np.sum(x * y)) - 1e-12
    # The worst-case reward is indifferent: every policy has value v under it.
    for pol in [*_random_policies(3, 3, mdp.r.shape), _np(sol.policy)]:
      assert np.max(np.abs(_np_value(mdp.P, sol.worst_case_reward, mdp.gamma, pol) - v)) < ATOL
    assert abs(float(_np(mdp.mu0) @ v) + conj - float(sol.primal_value)) < 1e-9
    # Random occupancies score lower; random Delta cost the adversary more.
    for pol in _random_policies(4, 3, mdp.r.shape):
      x = rl.occupancy_measure(mdp.P, mdp.gamma, mdp.mu0, pol)
      assert float(jnp.sum(x * mdp.r) - rl.occupancy_kl_regularizer(x, d0, lam)) <= float(
          sol.primal_value) + 1e-9
    for _ in range(3):
      y = delta + 0.3 * rng.normal(size=delta.shape)
      hard = rl.soft_value_iteration(mdp.P, _np(mdp.r) - y, mdp.gamma, 0.0)
      adversary = float(_np(mdp.mu0) @ _np(hard.v)) + float(rl.occupancy_kl_conjugate(y, d0, lam))
      assert adversary >= float(sol.primal_value) - 1e-9


# ----------------------------------------------------------------------------- limits, gradients


def test_lam_to_zero_recovers_hard_value_iteration():
  mdp = _mdp("grid")
  num_actions = mdp.r.shape[1]
  hard = rl.soft_value_iteration(mdp.P, mdp.r, mdp.gamma, 0.0)
  gaps = []
  for lam in (1.0, 0.1, 0.01, 0.001):
    soft = rl.soft_value_iteration(mdp.P, mdp.r, mdp.gamma, lam)
    gap = _np(hard.v) - _np(soft.v)
    # v_hard - lam log|A| / (1 - gamma) <= v_soft <= v_hard (uniform pi0)
    assert gap.min() >= -1e-12
    assert gap.max() <= lam * math.log(num_actions) / (1 - mdp.gamma) + 1e-12
    gaps.append(gap.max())
  assert gaps[-1] < 1e-2 * gaps[0]


def test_soft_value_gradient_is_the_occupancy_measure():
  """Envelope theorem: d <mu0, v_soft> / d r(s, a) = d*(s, a) (forward mode through the loop)."""
  mdp = _mdp("random")
  lam = 0.5
  d_star = rl.solve_policy_regularized(mdp.P, mdp.r, mdp.gamma, mdp.mu0, lam).d
  direction = jnp.asarray(np.random.default_rng(0).normal(size=mdp.r.shape))

  def value(r):
    return jnp.dot(mdp.mu0, rl.soft_value_iteration(mdp.P, r, mdp.gamma, lam).v)
  _, tangent = jax.jvp(value, (mdp.r,), (direction,))
  assert abs(float(tangent) - float(jnp.sum(d_star * direction))) < 1e-8


def test_jit_vmap_over_mdps_matches_single_solves():
  keys = jax.random.split(jax.random.key(0), 4)
  mdps = jax.vmap(lambda k: rr.random_mdp(k, 7, 3, gamma=0.9, branching=3))(keys)
  solve = jax.jit(jax.vmap(lambda P, r: rl.soft_value_iteration(P, r, 0.9, 0.3).v))
  batched = solve(mdps.P, mdps.r)
  for i in range(len(keys)):
    single = rl.soft_value_iteration(mdps.P[i], mdps.r[i], 0.9, 0.3).v
    np.testing.assert_allclose(_np(batched[i]), _np(single), atol=1e-10)


def test_float32_default_dtype():
  with jax.enable_x64(False):
    mdp = rr.gridworld(3, 3, slip=0.1).mdp
    assert mdp.P.dtype == jnp.float32
    sol = rl.soft_value_iteration(mdp.P, mdp.r, mdp.gamma, 0.5)
    assert sol.v.dtype == jnp.float32
  mdp64 = rr.gridworld(3, 3, slip=0.1).mdp
  assert mdp64.P.dtype == jnp.float64
  ref = rl.soft_value_iteration(mdp64.P, mdp64.r, mdp64.gamma, 0.5)
  np.testing.assert_allclose(np.asarray(sol.v), _np(ref.v), atol=1e-4)


# ----------------------------------------------------------------------------- builders


def test_gridworld_layout_and_dynamics():
  g = rr.gridworld(3, 4, walls=[(1, 1)], goals={(0, 3): 2.0}, slip=0.2, step_reward=-0.1,
                   gamma=0.9)
  P, r, _, mu0 = (_np(x) if i != 2 else x for i, x in enumerate(g.mdp))
  assert P.shape == (11, 4, 11) and len(g.cells) == 11
  assert (1, 1) not in {tuple(c) for c in g.cells}
  np.testing.assert_allclose(P.sum(-1), 1.0, atol=1e-12)
  idx = {tuple(c): k for k, c in enumerate(g.cells)}
  goal = idx[(0, 3)]
  assert g.goal_states == (goal,)
  np.testing.assert_allclose(P[goal, :, goal], 1.0)
  np.testing.assert_allclose(r[goal], 0.0)
  # from (1, 2) "up" reaches (0, 2) w.p. 1 - slip + slip/4; "left" bumps the wall (1, 1)
  s = idx[(1, 2)]
  assert P[s, 0, idx[(0, 2)]] == pytest.approx(0.8 + 0.05)
  assert P[s, 3, s] == pytest.approx(0.8 + 0.05)
  # (0, 2) "right" enters the goal: r = step + 2 * P(goal)
  s = idx[(0, 2)]
  assert r[s, 1] == pytest.approx(-0.1 + 2.0 * 0.85)
  assert mu0[goal] == 0 and mu0.sum() == pytest.approx(1.0)
  grid = g.to_grid(np.arange(11))
  assert np.isnan(grid[1, 1]) and grid[0, 3] == goal
  start = rr.gridworld(2, 2, start=(0, 0)).mdp.mu0
  np.testing.assert_allclose(_np(start), [1, 0, 0, 0])


def test_random_mdp_structure():
  mdp = rr.random_mdp(jax.random.key(1), 9, 2, branching=4, gamma=0.95)
  P = _np(mdp.P)
  np.testing.assert_allclose(P.sum(-1), 1.0, atol=1e-12)
  assert np.all((P > 0).sum(-1) == 4)
  assert mdp.gamma == 0.95 and abs(float(jnp.sum(mdp.mu0)) - 1) < 1e-12
  full = rr.random_mdp(jax.random.key(1), 5, 2)
  assert np.all(_np(full.P) > 0)


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_clear_errors():
  mdp = _mdp("random")
  P, r, g = _np(mdp.P), _np(mdp.r), mdp.gamma
  bad_rows = P.copy()
  bad_rows[0, 0] *= 1.1
  with pytest.raises(ValueError, match="P must sum to 1"):
    rl.soft_value_iteration(bad_rows, r, g, 0.1)
  negative = P.copy()
  negative[0, 0, :2] = [-0.1, negative[0, 0, 0] + negative[0, 0, 1] + 0.1]
  with pytest.raises(ValueError, match="P must be non-negative"):
    rl.policy_evaluation(negative, r, g, np.full(r.shape, 1 / r.shape[1]))
  for gamma in (1.0, -0.1, 1.5):
    with pytest.raises(ValueError, match=r"gamma must be a scalar in \[0, 1\)"):
      rl.soft_value_iteration(P, r, gamma, 0.1)
  with pytest.raises(ValueError, match="lam must be a finite scalar >= 0"):
    rl.worst_case_reward(P, r, g, -0.5)
  with pytest.raises(ValueError, match=r"r must have shape \(S, A\)"):
    rl.soft_value_iteration(P, r[:, :2], g, 0.1)
  with pytest.raises(ValueError, match=r"P must have shape \(S, A, S\)"):
    rl.soft_value_iteration(P[:, :, :3], r, g, 0.1)
  with pytest.raises(ValueError, match="pi0 must have shape"):
    rl.soft_value_iteration(P, r, g, 0.1, np.full((2,), 0.5))
  with pytest.raises(ValueError, match="pi0 must sum to 1"):
    rl.soft_value_iteration(P, r, g, 0.1, np.full(r.shape, 0.5))
  with pytest.raises(ValueError, match="pi0 must be None when entropy=True"):
    rl.soft_value_iteration(P, r, g, 0.1, np.full(r.shape, 1 / 3), entropy=True)
  with pytest.raises(ValueError, match=r"mu0 must have shape \(S,\)"):
    rl.occupancy_lp(P, r, g, np.full(3, 1 / 3))
  with pytest.raises(ValueError, match="mu0 must sum to 1"):
    rl.tabular_mdp(P, r, g, np.full(7, 0.2))
  with pytest.raises(ValueError, match="policy must sum to 1"):
    rl.occupancy_measure(P, g, mdp.mu0, np.full(r.shape, 0.5))
  with pytest.raises(ValueError, match="lam must be > 0"):
    rl.solve_occupancy_regularized(P, r, g, mdp.mu0, 0.0, np.ones(r.shape))
  with pytest.raises(ValueError, match="d0 must be positive"):
    rl.solve_occupancy_regularized(P, r, g, mdp.mu0, 0.1, np.zeros(r.shape))
  with pytest.raises(ValueError, match="slip must be a probability"):
    rr.gridworld(3, 3, slip=1.5)
  with pytest.raises(ValueError, match="walls must lie on the 3 x 3 grid"):
    rr.gridworld(3, 3, walls=[(5, 0)])
  with pytest.raises(ValueError, match="goals must not be walls"):
    rr.gridworld(3, 3, walls=[(2, 2)])
  with pytest.raises(ValueError, match="branching must be in"):
    rr.random_mdp(jax.random.key(0), 4, 2, branching=5)
  with pytest.raises(ValueError, match="gamma must be a scalar"):
    rr.gridworld(3, 3, gamma=1.0)
  assert isinstance(rl.tabular_mdp(P, r, g), rl.TabularMDP)
