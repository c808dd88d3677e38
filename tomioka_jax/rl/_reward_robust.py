"""Regularized policies are reward robust: tabular MDPs, soft value iteration, the worst-case reward.

"Regularized Policies are Reward Robust", Hisham Husain, Kamil Ciosek, Ryota Tomioka, AISTATS
2021 (PMLR 130:64-72), arXiv:2101.07012.

**Occupancy measures and the normalization used here.** A tabular MDP is ``P[s, a, s']``,
``r[s, a]``, a discount ``gamma`` in ``[0, 1)`` and an initial distribution ``mu0[s]``. The
(unnormalized) discounted occupancy measure of a policy ``pi`` is

.. math:: d_\\pi(s, a) = \\sum_{t \\ge 0} \\gamma^t \\Pr(s_t = s, a_t = a),
   \\qquad \\sum_{s,a} d_\\pi(s, a) = \\frac{1}{1 - \\gamma},

so that the return is linear, ``J(pi) = <mu0, v_pi> = <r, d_pi>``, with no ``(1 - gamma)``
factor anywhere (the normalized occupancy of the paper's convention is ``(1 - gamma) d``; every
value here is then ``1 / (1 - gamma)`` times the normalized one). The occupancy measures are the
polytope ``D = {d >= 0 : sum_a d(s', a) - gamma sum_{s,a} P(s'|s, a) d(s, a) = mu0(s')}``, and
RL is the linear program

.. math:: \\max_{d \\in D} \\langle r, d\\rangle \\;=\\; \\min_v \\langle \\mu_0, v\\rangle
   \\ \\text{s.t.}\\ v(s) \\ge r(s, a) + \\gamma \\textstyle\\sum_{s'} P(s'|s, a) v(s').

**Regularization and its dual (the paper's theorem).** With a convex regularizer
``Omega(d) = sup_Delta <Delta, d> - Omega*(Delta)`` (Fenchel),

.. math:: \\max_{d \\in D} \\langle r, d\\rangle - \\Omega(d)
   = \\max_{d \\in D} \\min_{\\Delta} \\langle r - \\Delta, d\\rangle + \\Omega^*(\\Delta)
   = \\min_{\\Delta} \\Big[\\max_{d \\in D} \\langle r - \\Delta, d\\rangle + \\Omega^*(\\Delta)\\Big]

(minimax: ``D`` is compact and convex): the regularized optimum ``d*`` is an ordinary RL optimum
under the worst-case reward ``r - Delta*``, ``Delta* = grad Omega(d*)``.

* **Policy KL** (the paper's case): ``Omega(d) = lam sum_s d(s) KL(pi_d(.|s) || pi0(.|s))``
  with ``pi_d = d(s, a) / d(s)``. It is positively 1-homogeneous, so ``Omega*`` is the indicator
  of the set ``{Delta : sum_a pi0(a|s) exp(Delta(s, a) / lam) <= 1 for all s}``: the adversary
  picks a perturbation from a fixed set. The regularized optimum is the soft value iteration
  fixed point ``v(s) = lam log sum_a pi0(a|s) exp(q(s, a) / lam)``, ``q = r + gamma P v``,
  ``pi* = pi0 exp((q - v) / lam)``, and the worst case is ``Delta* = lam log(pi* / pi0) = q - v``
  (on the boundary of the set). Under ``r' = r - Delta*`` every action satisfies
  ``r'(s, a) + gamma E v(s') = v(s)``: the reward is *indifferent*, every policy has value ``v``,
  and ``pi*`` is an optimal policy of the unregularized MDP with reward ``r'``.
  Entropy regularization (``entropy=True``) is ``pi0 = 1`` (the counting measure), i.e. uniform
  ``pi0`` shifted by ``lam log |A|`` per step.
* **Occupancy KL** (a regularizer on ``d`` itself): ``Omega(d) = lam sum [d log(d / d0) - d +
  d0]``, ``Omega*(Delta) = lam sum d0 (exp(Delta / lam) - 1)``: finite, so the adversary pays a
  cost instead of being confined to a set. ``Delta* = lam log(d* / d0)``.

Everything is ``jax.numpy`` and jit-able (the linear programs use ``scipy.optimize.linprog``
(HiGHS) as the exact reference and run on the host). Use float64 (``jax.experimental.enable_x64``)
to check the identities to 1e-6.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import xlogy
from jax.typing import ArrayLike

from tomioka_jax import core

# Gridworld actions: (row, column) moves of up, right, down, left.
GRID_ACTIONS = ((-1, 0), (0, 1), (1, 0), (0, -1))
GRID_ACTION_NAMES = ("up", "right", "down", "left")


# ----------------------------------------------------------------------------- containers


class TabularMDP(NamedTuple):
  """A finite discounted MDP as arrays.

  Attributes:
    P: transition probabilities ``P[s, a, s']``, shape ``(S, A, S)``.
    r: rewards ``r[s, a]``, shape ``(S, A)``.
    gamma: discount in ``[0, 1)``.
    mu0: initial state distribution, shape ``(S,)``.
  """

  P: jax.Array
  r: jax.Array
  gamma: float
  mu0: jax.Array


class Gridworld(NamedTuple):
  """A gridworld MDP and its layout.

  Attributes:
    mdp: the :class:`TabularMDP`; its states are the free (non-wall) cells in row-major order.
    cells: ``(S, 2)`` integer (row, column) of every state.
    height: rows of the grid.
    width: columns of the grid.
    goal_states: state indices of the absorbing goal cells.
  """

  mdp: TabularMDP
  cells: np.ndarray
  height: int
  width: int
  goal_states: tuple[int, ...]

  def to_grid(self, values: ArrayLike) -> np.ndarray:
    """Scatters per-state values (leading axis ``S``) onto the grid; walls are NaN."""
    values = np.asarray(values, dtype=np.float64)
    out = np.full((self.height, self.width) + values.shape[1:], np.nan)
    out[self.cells[:, 0], self.cells[:, 1]] = values
    return out


class SoftValueIteration(NamedTuple):
  """The result of :func:`soft_value_iteration` (the first three fields are ``(q, v, policy)``).

  Attributes:
    q: ``q(s, a) = r(s, a) + gamma sum_s' P(s'|s, a) v(s')``, shape ``(S, A)``.
    v: the soft optimal value, shape ``(S,)``.
    policy: ``pi*(a|s) = pi0(a|s) exp((q(s, a) - v(s)) / lam)`` (greedy one-hot at
      ``lam = 0``), shape ``(S, A)``.
    residual: the last sup-norm change ``||T v_k - v_k||``; the distance of ``v`` to the fixed
      point is at most ``gamma / (1 - gamma)`` times it (contraction).
    iterations: Bellman backups run.
  """

  q: jax.Array
  v: jax.Array
  policy: jax.Array
  residual: jax.Array
  iterations: jax.Array


class PolicyValues(NamedTuple):
  """``(q, v)`` of one policy: ``v = (I - gamma P_pi)^{-1} r_pi`` and ``q = r + gamma P v``."""

  q: jax.Array
  v: jax.Array


class WorstCaseReward(NamedTuple):
  """The adversary's reward for a regularized problem.

  Attributes:
    reward: ``r' = r - Delta*``, shape ``(S, A)``.
    perturbation: ``Delta*`` (for the policy KL ``lam log(pi* / pi0)``), shape ``(S, A)``.
    policy: the regularized optimal policy ``pi*``.
    v: the regularized optimal value (every policy's value under ``reward``).
  """

  reward: jax.Array
  perturbation: jax.Array
  policy: jax.Array
  v: jax.Array


class OccupancyLP(NamedTuple):
  """The occupancy-measure LP solved by HiGHS, primal and dual separately.

  Attributes:
    primal_value: ``max_{d in D} <r, d>``.
    dual_value: ``min <mu0, v>`` s.t. ``v(s) >= r(s, a) + gamma P v``.
    d: the primal optimum, ``(S, A)``.
    v: the dual optimum, ``(S,)`` (unique on states reachable from ``mu0``).
    policy: ``d(s, a) / d(s)`` (uniform where ``d(s) = 0``).
  """

  primal_value: float
  dual_value: float
  d: np.ndarray
  v: np.ndarray
  policy: np.ndarray


class RegularizedSolution(NamedTuple):
  """A regularized program ``max_{d in D} <r, d> - Omega(d)`` solved with its certificate.

  Attributes:
    d: the optimal occupancy measure ``d*``, ``(S, A)``.
    v: the dual variable (the regularized value), ``(S,)``.
    policy: ``pi*(a|s) = d*(s, a) / d*(s)``.
    perturbation: the worst case ``Delta* = grad Omega(d*)``.
    worst_case_reward: ``r - Delta*``.
    primal_value: ``<r, d*> - Omega(d*)``.
    dual_value: the dual objective at ``v`` (policy KL: ``<mu0, v>``; occupancy KL:
      ``<mu0, v> + Omega*(r + gamma P v - v)``).
    gap: ``dual_value - primal_value``; with ``flow_residual`` and ``dual_violation`` at zero it
      certifies that both are optimal (weak duality).
    flow_residual: ``max |sum_a d(s', a) - gamma (P^T d)(s') - mu0(s')|`` (primal feasibility).
    dual_violation: the largest violation of the dual constraint (policy KL:
      ``max_s lam log sum_a pi0 exp(q / lam) - v(s)``; occupancy KL: 0, unconstrained).
    iterations: iterations of the solver (soft value iteration or Newton).
  """

  d: jax.Array
  v: jax.Array
  policy: jax.Array
  perturbation: jax.Array
  worst_case_reward: jax.Array
  primal_value: jax.Array
  dual_value: jax.Array
  gap: jax.Array
  flow_residual: jax.Array
  dual_violation: jax.Array
  iterations: jax.Array


# ----------------------------------------------------------------------------- argument checks


def _float(x: ArrayLike) -> jax.Array:
  x = jnp.asarray(x)
  return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))


def _check_distribution(x: jax.Array, arg: str, axis: int = -1) -> None:
  if not core.is_concrete(x):
    return
  xn = np.asarray(x, dtype=np.float64)
  if not np.all(np.isfinite(xn)) or np.any(xn < 0):
    raise ValueError(f"{arg} must be non-negative and finite, got min {np.nanmin(xn):.3g} "
                     f"(entries must be probabilities)")
  sums = xn.sum(axis=axis)
  tol = 1e-5 if x.dtype == jnp.float32 else 1e-6
  if np.any(np.abs(sums - 1) > tol):
    worst = float(sums.flat[np.argmax(np.abs(sums - 1))])
    raise ValueError(f"{arg} must sum to 1 over its last axis, got a sum of {worst:.6g} "
                     f"(allowed: |sum - 1| <= {tol:g})")


def _check_gamma(gamma: ArrayLike) -> None:
  if core.is_concrete(gamma):
    g = np.asarray(gamma)
    if g.ndim != 0 or not 0 <= float(g) < 1:
      raise ValueError(f"gamma must be a scalar in [0, 1), got {g!r}")


def _check_lam(lam: ArrayLike) -> None:
  if core.is_concrete(lam):
    l = np.asarray(lam)
    if l.ndim != 0 or not float(l) >= 0 or not np.isfinite(float(l)):
      raise ValueError(f"lam must be a finite scalar >= 0, got {l!r}")


def _check_mdp(P: ArrayLike, r: ArrayLike, gamma: ArrayLike) -> tuple[jax.Array, jax.Array]:
  P, r = _float(P), _float(r)
  if P.ndim != 3 or P.shape[0] != P.shape[2]:
    raise ValueError(f"P must have shape (S, A, S), got {P.shape}")
  if r.shape != P.shape[:2]:
    raise ValueError(f"r must have shape (S, A) = {P.shape[:2]} to match P, got {r.shape}")
  _check_distribution(P, "P")
  if core.is_concrete(r) and not np.all(np.isfinite(np.asarray(r))):
    raise ValueError("r must be finite, got a non-finite entry")
  _check_gamma(gamma)
  return P, r


def _check_pi0(pi0: ArrayLike | None, shape: tuple[int, int], entropy: bool,
               dtype) -> jax.Array:
  """The reference measure over actions: ``pi0``, uniform if None, counting if ``entropy``."""
  if entropy:
    if pi0 is not None:
      raise ValueError("pi0 must be None when entropy=True (the entropy's reference is the "
                       "counting measure), got an array")
    return jnp.ones(shape, dtype)
  if pi0 is None:
    return jnp.full(shape, 1.0 / shape[1], dtype)
  pi0 = _float(pi0).astype(dtype)
  if pi0.shape == shape[1:]:
    pi0 = jnp.broadcast_to(pi0, shape)
  if pi0.shape != shape:
    raise ValueError(f"pi0 must have shape (S, A) = {shape} or (A,), got {pi0.shape}")
  _check_distribution(pi0, "pi0")
  return pi0


def _check_mu0(mu0: ArrayLike, num_states: int, dtype) -> jax.Array:
  mu0 = _float(mu0).astype(dtype)
  if mu0.shape != (num_states,):
    raise ValueError(f"mu0 must have shape (S,) = ({num_states},), got {mu0.shape}")
  _check_distribution(mu0, "mu0")
  return mu0


def _check_policy(policy: ArrayLike, shape: tuple[int, int], dtype) -> jax.Array:
  policy = _float(policy).astype(dtype)
  if policy.shape != shape:
    raise ValueError(f"policy must have shape (S, A) = {shape}, got {policy.shape}")
  _check_distribution(policy, "policy")
  return policy


def tabular_mdp(P: ArrayLike, r: ArrayLike, gamma: float,
                mu0: ArrayLike | None = None) -> TabularMDP:
  """A validated :class:`TabularMDP` (``mu0`` uniform if None).

  Raises:
    ValueError: ``P`` not of shape ``(S, A, S)`` with non-negative rows summing to 1, ``r`` not
      ``(S, A)``, ``gamma`` outside ``[0, 1)``, ``mu0`` not a distribution over ``S``.
  """
  P, r = _check_mdp(P, r, gamma)
  if mu0 is None:
    mu0 = jnp.full((P.shape[0],), 1.0 / P.shape[0], P.dtype)
  return TabularMDP(P, r.astype(P.dtype), float(gamma), _check_mu0(mu0, P.shape[0], P.dtype))


# ----------------------------------------------------------------------------- builders


def gridworld(height: int, width: int, *, walls: Sequence[tuple[int, int]] = (),
              goals: Mapping[tuple[int, int], float] | None = None, slip: float = 0.0,
              step_reward: float = 0.0, gamma: float = 0.9,
              start: tuple[int, int] | None = None) -> Gridworld:
  """A gridworld with walls, absorbing goal cells and slippery moves.

  Actions are up, right, down, left (:data:`GRID_ACTION_NAMES`). A move goes in the intended
  direction with probability ``1 - slip`` and in a uniformly random one of the four with
  probability ``slip``; moving into a wall or off the grid stays put. Entering a goal cell pays
  its reward (``goals[(row, col)]``, possibly negative: a trap), and every move out of a
  non-goal cell also pays ``step_reward``:
  ``r(s, a) = step_reward + sum_s' P(s'|s, a) goal_reward(s')``. Goal cells are absorbing with
  zero reward, so values stay bounded. ``mu0`` is one-hot at ``start``, or uniform over the
  free non-goal cells if None.

  Args:
    height: rows (>= 1).
    width: columns (>= 1).
    walls: (row, col) of wall cells (not states).
    goals: {(row, col): reward}; default ``{(height - 1, width - 1): 1.0}``.
    slip: probability in ``[0, 1]`` of a uniformly random move.
    step_reward: reward of every move out of a non-goal cell.
    gamma: discount in ``[0, 1)``.
    start: the start cell, or None.

  Returns:
    a :class:`Gridworld` whose ``mdp`` holds float arrays of JAX's default float dtype.
  """
  if int(height) != height or int(width) != width or height < 1 or width < 1:
    raise ValueError(f"height and width must be integers >= 1, got {height} x {width}")
  if not 0.0 <= slip <= 1.0:
    raise ValueError(f"slip must be a probability in [0, 1], got {slip}")
  _check_gamma(gamma)
  goals = {(height - 1, width - 1): 1.0} if goals is None else dict(goals)
  wall_set = {tuple(w) for w in walls}
  for name, cells in (("walls", wall_set), ("goals", set(goals))):
    for c in cells:
      if not (0 <= c[0] < height and 0 <= c[1] < width):
        raise ValueError(f"{name} must lie on the {height} x {width} grid, got cell {c}")
  if wall_set & set(goals):
    raise ValueError(f"goals must not be walls, got {sorted(wall_set & set(goals))}")
  free = [(i, j) for i in range(height) for j in range(width) if (i, j) not in wall_set]
  if not free:
    raise ValueError("walls must leave at least one free cell, got none")
  index = {c: k for k, c in enumerate(free)}
  if start is not None and tuple(start) not in index:
    raise ValueError(f"start must be a free cell, got {start}")
  num_states, num_actions = len(free), len(GRID_ACTIONS)
  P = np.zeros((num_states, num_actions, num_states))
  goal_reward = np.zeros(num_states)
  for c, g in goals.items():
    goal_reward[index[c]] = g
  is_goal = np.zeros(num_states, bool)
  is_goal[[index[c] for c in goals]] = True

  def move(c, delta):
    n = (c[0] + delta[0], c[1] + delta[1])
    return index[n] if n in index else index[c]

  for k, c in enumerate(free):
    if is_goal[k]:
      P[k, :, k] = 1.0
      continue
    for a, delta in enumerate(GRID_ACTIONS):
      P[k, a, move(c, delta)] += 1.0 - slip
      for other in GRID_ACTIONS:
        P[k, a, move(c, other)] += slip / num_actions
  r = np.where(is_goal[:, None], 0.0, step_reward + P @ goal_reward)
  if start is not None:
    mu0 = np.zeros(num_states)
    mu0[index[tuple(start)]] = 1.0
  else:
    mu0 = (~is_goal).astype(np.float64)
    mu0 = mu0 / mu0.sum() if mu0.sum() > 0 else np.full(num_states, 1.0 / num_states)
  dtype = jnp.result_type(float)
  mdp = TabularMDP(jnp.asarray(P, dtype), jnp.asarray(r, dtype), float(gamma),
                   jnp.asarray(mu0, dtype))
  return Gridworld(mdp, np.asarray(free, np.int64).reshape(-1, 2), int(height), int(width),
                   tuple(int(index[c]) for c in goals))


def random_mdp(key: jax.Array, num_states: int, num_actions: int, *, gamma: float = 0.9,
               branching: int | None = None, reward_scale: float = 1.0) -> TabularMDP:
  """A random MDP: Dirichlet(1) transitions over ``branching`` random successors, Gaussian
  rewards ``N(0, reward_scale^2)`` and a Dirichlet(1) initial distribution.

  Args:
    key: PRNG key.
    num_states: ``S >= 1``.
    num_actions: ``A >= 1``.
    gamma: discount in ``[0, 1)``.
    branching: successors per ``(s, a)`` (``1..S``); all ``S`` if None.
    reward_scale: standard deviation of the rewards (>= 0).
  """
  if num_states < 1 or num_actions < 1:
    raise ValueError(f"num_states and num_actions must be >= 1, got {num_states}, {num_actions}")
  branching = num_states if branching is None else branching
  if not 1 <= branching <= num_states:
    raise ValueError(f"branching must be in [1, num_states = {num_states}], got {branching}")
  if not reward_scale >= 0:
    raise ValueError(f"reward_scale must be >= 0, got {reward_scale}")
  _check_gamma(gamma)
  k_mask, k_p, k_r, k_mu = jax.random.split(key, 4)
  dtype = jnp.result_type(float)
  shape = (num_states, num_actions, num_states)
  # The `branching` successors: the smallest ranks of a uniform draw.
  ranks = jnp.argsort(jnp.argsort(core.flat_uniform(k_mask, shape, dtype), axis=-1), axis=-1)
  weights = -jnp.log1p(-core.flat_uniform(k_p, shape, dtype))  # Exp(1) = Gamma(1)
  weights = jnp.where(ranks < branching, weights + jnp.finfo(dtype).tiny, 0.0)
  P = weights / jnp.sum(weights, axis=-1, keepdims=True)
  r = reward_scale * core.flat_normal(k_r, (num_states, num_actions), dtype)
  mu = -jnp.log1p(-jax.random.uniform(k_mu, (num_states,), dtype)) + jnp.finfo(dtype).tiny
  return TabularMDP(P, r, float(gamma), mu / jnp.sum(mu))


# ----------------------------------------------------------------------------- soft value iteration


def _backup(q: jax.Array, pi0: jax.Array, lam: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(v, policy)`` of one soft Bellman backup; the hard max at ``lam = 0``."""
  hard = lam == 0
  lam_safe = jnp.where(hard, 1.0, lam)
  support = pi0 > 0
  z = jnp.where(support, q / lam_safe + jnp.log(jnp.where(support, pi0, 1.0)), -jnp.inf)
  lse = jax.nn.logsumexp(z, axis=-1)
  soft_policy = jnp.exp(z - lse[:, None])
  q_masked = jnp.where(support, q, -jnp.inf)
  v_hard = jnp.max(q_masked, axis=-1)
  greedy = jax.nn.one_hot(jnp.argmax(q_masked, axis=-1), q.shape[-1], dtype=q.dtype)
  v = jnp.where(hard, v_hard, lam_safe * lse)
  policy = jnp.where(hard, greedy, soft_policy)
  return v, policy


def _q_of(P: jax.Array, r: jax.Array, gamma: jax.Array, v: jax.Array) -> jax.Array:
  return r + gamma * jnp.einsum("sat,t->sa", P, v)


@functools.partial(jax.jit, static_argnames=("max_iters",))
def _soft_vi(P, r, gamma, lam, pi0, tol, max_iters):
  # The change shrinks by gamma per backup in exact arithmetic; a change that does not shrink
  # while already below sqrt(eps) of the tolerance's scale is round-off, and the loop stops.
  plateau = tol * jnp.sqrt(1 / jnp.finfo(r.dtype).eps)

  def cond(carry):
    _, delta, prev, it = carry
    stalled = (delta >= prev) & (delta < plateau)
    return (delta > tol) & (it < max_iters) & ~stalled

  def body(carry):
    v, delta, _, it = carry
    v_new, _ = _backup(_q_of(P, r, gamma, v), pi0, lam)
    return v_new, jnp.max(jnp.abs(v_new - v)), delta, it + 1

  v0 = jnp.zeros(P.shape[0], r.dtype)
  inf = jnp.asarray(jnp.inf, r.dtype)
  v, _, _, it = lax.while_loop(cond, body, (v0, inf, inf, jnp.asarray(0)))
  q = _q_of(P, r, gamma, v)
  v_new, policy = _backup(q, pi0, lam)
  return SoftValueIteration(q, v_new, policy, jnp.max(jnp.abs(v_new - v)), it + 1)


def _default_tol(r: jax.Array, gamma: ArrayLike, lam: ArrayLike) -> jax.Array:
  scale = (jnp.max(jnp.abs(r)) + lam * 10.0) / (1.0 - gamma)
  return 4 * jnp.finfo(r.dtype).eps * jnp.maximum(1.0, scale)


def soft_value_iteration(P: ArrayLike, r: ArrayLike, gamma: float, lam: float,
                         pi0: ArrayLike | None = None, *, entropy: bool = False,
                         tol: float | None = None,
                         max_iters: int = 10_000) -> SoftValueIteration:
  """Soft (KL-regularized) value iteration to its fixed point, in one ``lax.while_loop``.

  .. math:: q(s, a) = r(s, a) + \\gamma \\sum_{s'} P(s'|s, a) v(s'),\\qquad
     v(s) = \\lambda \\log \\sum_a \\pi_0(a|s) e^{q(s, a)/\\lambda},\\qquad
     \\pi^*(a|s) = \\pi_0(a|s) e^{(q(s, a) - v(s))/\\lambda}.

  ``v`` maximizes ``E sum_t gamma^t [r(s_t, a_t) - lam KL(pi(.|s_t) || pi0(.|s_t))]`` from every
  state. ``entropy=True`` uses the entropy bonus ``+ lam H(pi(.|s))`` instead (``pi0 = 1``, the
  counting measure: the uniform ``pi0``'s values plus ``lam log|A| / (1 - gamma)``).
  ``lam = 0`` is hard value iteration (``max_a``) with a greedy one-hot policy. The backup is
  a ``gamma``-contraction in the sup norm; the loop stops when an update moves ``v`` by at most
  ``tol``.

  Args:
    P: transitions ``(S, A, S)``, non-negative rows summing to 1.
    r: rewards ``(S, A)``.
    gamma: discount in ``[0, 1)``.
    lam: regularization strength ``>= 0``.
    pi0: reference policy ``(S, A)`` or ``(A,)`` (uniform if None); zero entries are forbidden
      actions.
    entropy: entropy regularization (then ``pi0`` must be None).
    tol: stopping tolerance on ``||v_{k+1} - v_k||_inf``; default ``4 eps`` times the value
      scale ``(max |r| + 10 lam) / (1 - gamma)``. The loop also stops at the round-off plateau
      (a change that no longer shrinks, below ``tol / sqrt(eps)``).
    max_iters: cap on the backups.

  Returns:
    :class:`SoftValueIteration` ``(q, v, policy, residual, iterations)``.

  Raises:
    ValueError: bad shapes, ``P`` or ``pi0`` rows not distributions, ``gamma`` outside
      ``[0, 1)``, ``lam < 0``. Value checks are skipped under ``jit`` (traced arrays).
  """
  P, r = _check_mdp(P, r, gamma)
  _check_lam(lam)
  if max_iters < 1:
    raise ValueError(f"max_iters must be >= 1, got {max_iters}")
  r = r.astype(P.dtype)
  pi0 = _check_pi0(pi0, r.shape, entropy, P.dtype)
  gamma = jnp.asarray(gamma, P.dtype)
  lam = jnp.asarray(lam, P.dtype)
  tol = _default_tol(r, gamma, lam) if tol is None else jnp.asarray(tol, P.dtype)
  return _soft_vi(P, r, gamma, lam, pi0, tol, int(max_iters))


# ----------------------------------------------------------------------------- policy evaluation


def _transition_under(P: jax.Array, policy: jax.Array) -> jax.Array:
  return jnp.einsum("sa,sat->st", policy, P)


def policy_kl(policy: ArrayLike, pi0: ArrayLike | None = None, *,
              entropy: bool = False) -> jax.Array:
  """Per-state ``KL(pi(.|s) || pi0(.|s))`` (``entropy=True``: ``sum_a pi log pi = -H``)."""
  policy = _float(policy)
  return _kl(policy, _check_pi0(pi0, policy.shape, entropy, policy.dtype))


def _kl(policy: jax.Array, reference: jax.Array) -> jax.Array:
  return jnp.sum(xlogy(policy, policy) - xlogy(policy, reference), axis=-1)


def policy_evaluation(P: ArrayLike, r: ArrayLike, gamma: float, policy: ArrayLike, *,
                      lam: float = 0.0, pi0: ArrayLike | None = None,
                      entropy: bool = False) -> PolicyValues:
  """The (regularized) value of a policy by one linear solve.

  .. math:: v = (I - \\gamma P_\\pi)^{-1}\\big(r_\\pi - \\lambda\\,
     \\mathrm{KL}(\\pi(\\cdot|s)\\,\\|\\,\\pi_0(\\cdot|s))\\big),\\qquad
     q = r + \\gamma P v,

  with ``r_pi(s) = sum_a pi(a|s) r(s, a)`` and ``P_pi(s, s') = sum_a pi(a|s) P(s'|s, a)``.
  ``lam = 0`` (default) is the unregularized value.

  Raises:
    ValueError: bad shapes or distributions, ``gamma`` outside ``[0, 1)``, ``lam < 0``.
  """
  P, r = _check_mdp(P, r, gamma)
  _check_lam(lam)
  policy = _check_policy(policy, r.shape, P.dtype)
  reference = _check_pi0(pi0, r.shape, entropy, P.dtype)
  return _evaluate(P, r.astype(P.dtype), jnp.asarray(gamma, P.dtype), policy,
                   jnp.asarray(lam, P.dtype), reference)


@jax.jit
def _evaluate(P, r, gamma, policy, lam, reference):
  r_pi = jnp.sum(policy * r, axis=-1) - lam * _kl(policy, reference)
  eye = jnp.eye(P.shape[0], dtype=P.dtype)
  v = jnp.linalg.solve(eye - gamma * _transition_under(P, policy), r_pi)
  return PolicyValues(_q_of(P, r, gamma, v), v)


def occupancy_measure(P: ArrayLike, gamma: float, mu0: ArrayLike,
                      policy: ArrayLike) -> jax.Array:
  """``d(s, a) = sum_t gamma^t Pr(s_t = s, a_t = a)`` (unnormalized: sums to ``1/(1-gamma)``).

  .. math:: d_S = (I - \\gamma P_\\pi^\\top)^{-1} \\mu_0,\\qquad d(s, a) = d_S(s)\\,\\pi(a|s).

  Raises:
    ValueError: bad shapes or distributions, ``gamma`` outside ``[0, 1)``.
  """
  P = _float(P)
  if P.ndim != 3 or P.shape[0] != P.shape[2]:
    raise ValueError(f"P must have shape (S, A, S), got {P.shape}")
  _check_distribution(P, "P")
  _check_gamma(gamma)
  mu0 = _check_mu0(mu0, P.shape[0], P.dtype)
  policy = _check_policy(policy, P.shape[:2], P.dtype)
  return _occupancy(P, jnp.asarray(gamma, P.dtype), mu0, policy)


@jax.jit
def _occupancy(P, gamma, mu0, policy):
  eye = jnp.eye(P.shape[0], dtype=P.dtype)
  d_s = jnp.linalg.solve(eye - gamma * _transition_under(P, policy).T, mu0)
  return d_s[:, None] * policy


def flow_residual(P: ArrayLike, gamma: float, mu0: ArrayLike, d: ArrayLike) -> jax.Array:
  """``sum_a d(s', a) - gamma sum_{s,a} P(s'|s, a) d(s, a) - mu0(s')``: zero iff ``d`` meets the
  flow constraints of the occupancy polytope."""
  P, d, mu0 = _float(P), _float(d), _float(mu0)
  return jnp.sum(d, axis=1) - gamma * jnp.einsum("sa,sat->t", d, P) - mu0


# ----------------------------------------------------------------------------- the adversary


def worst_case_reward(P: ArrayLike, r: ArrayLike, gamma: float, lam: float,
                      pi0: ArrayLike | None = None, *, entropy: bool = False,
                      tol: float | None = None, max_iters: int = 10_000) -> WorstCaseReward:
  """The adversary's reward ``r' = r - lam log(pi* / pi0)`` for the KL-regularized problem.

  The perturbation ``Delta* = lam log(pi*(a|s) / pi0(a|s))`` equals ``q(s, a) - v(s)`` of the
  soft fixed point (from ``pi* = pi0 exp((q - v) / lam)``), the form used here because it stays
  finite where ``pi*`` underflows and where ``pi0 = 0``. It lies on the boundary of the feasible
  set (``sum_a pi0 exp(Delta* / lam) = 1`` in every state, see
  :func:`feasible_set_violation`) and ``r' = v(s) - gamma sum_s' P(s'|s, a) v(s')``: every
  action, hence every policy, has value ``v`` under ``r'``. At ``lam = 0`` it is the hard
  advantage ``q - max_a q <= 0``. With ``entropy=True``, ``Delta* = lam log pi*``.

  Args: as :func:`soft_value_iteration`.

  Returns:
    :class:`WorstCaseReward` ``(reward, perturbation, policy, v)``.
  """
  sol = soft_value_iteration(P, r, gamma, lam, pi0, entropy=entropy, tol=tol,
                             max_iters=max_iters)
  delta = sol.q - sol.v[:, None]
  return WorstCaseReward(_float(r).astype(delta.dtype) - delta, delta, sol.policy, sol.v)


def feasible_set_violation(delta: ArrayLike, pi0: ArrayLike | None = None,
                           lam: float = 1.0, *, entropy: bool = False) -> jax.Array:
  """``max_s log sum_a pi0(a|s) exp(Delta(s, a) / lam)``: <= 0 feasible, = 0 on the boundary.

  The feasible set of the KL adversary is ``{Delta : sum_a pi0 exp(Delta / lam) <= 1}`` (the
  domain where ``Omega*`` is finite); ``entropy=True`` uses ``pi0 = 1``. At ``lam = 0`` the set
  is ``{Delta <= 0 on the support of pi0}`` and the value returned is ``max Delta`` there.

  Raises:
    ValueError: ``lam < 0``, shapes of ``delta`` and ``pi0`` that disagree, ``pi0`` rows not
      distributions.
  """
  delta = _float(delta)
  if delta.ndim != 2:
    raise ValueError(f"delta must have shape (S, A), got {delta.shape}")
  _check_lam(lam)
  pi0 = _check_pi0(pi0, delta.shape, entropy, delta.dtype)
  lam = jnp.asarray(lam, delta.dtype)
  hard = lam == 0
  lam_safe = jnp.where(hard, 1.0, lam)
  support = pi0 > 0
  z = jnp.where(support, delta / lam_safe + jnp.log(jnp.where(support, pi0, 1.0)), -jnp.inf)
  return jnp.where(hard, jnp.max(jnp.where(support, delta, -jnp.inf)),
                   jnp.max(jax.nn.logsumexp(z, axis=-1)))


# ----------------------------------------------------------------------------- regularizers


def policy_kl_regularizer(d: ArrayLike, pi0: ArrayLike | None = None, lam: float = 1.0, *,
                          entropy: bool = False) -> jax.Array:
  """``Omega(d) = lam sum_{s,a} d(s, a) log(d(s, a) / (d(s) pi0(a|s)))``, ``d(s) = sum_a d``.

  The policy KL regularizer written on the occupancy measure: convex and positively
  1-homogeneous in ``d`` (a perspective), so its conjugate is the indicator of the feasible set
  of :func:`feasible_set_violation`, and ``Omega(d) = max_{Delta feasible} <Delta, d>``.
  ``entropy=True`` is the negative conditional entropy (``pi0 = 1``).
  """
  d = _float(d)
  _check_lam(lam)
  return _policy_omega(d, _check_pi0(pi0, d.shape, entropy, d.dtype), lam)


def _policy_omega(d: jax.Array, reference: jax.Array, lam: ArrayLike) -> jax.Array:
  d_s = jnp.sum(d, axis=1, keepdims=True)
  return lam * jnp.sum(xlogy(d, d) - xlogy(d, d_s * reference))


def occupancy_kl_regularizer(d: ArrayLike, d0: ArrayLike, lam: float = 1.0) -> jax.Array:
  """``Omega(d) = lam sum [d log(d / d0) - d + d0]`` (generalized KL of ``d`` to ``d0 > 0``)."""
  d, d0 = _float(d), _float(d0)
  _check_lam(lam)
  return lam * jnp.sum(xlogy(d, d) - xlogy(d, d0) - d + d0)


def occupancy_kl_conjugate(delta: ArrayLike, d0: ArrayLike, lam: float = 1.0) -> jax.Array:
  """``Omega*(Delta) = lam sum d0 (exp(Delta / lam) - 1)``: the adversary's cost for
  :func:`occupancy_kl_regularizer` (``lam > 0``)."""
  delta, d0 = _float(delta), _float(d0)
  _check_lam(lam)
  return lam * jnp.sum(d0 * jnp.expm1(delta / lam))


def solve_policy_regularized(P: ArrayLike, r: ArrayLike, gamma: float, mu0: ArrayLike,
                             lam: float, pi0: ArrayLike | None = None, *,
                             entropy: bool = False, tol: float | None = None,
                             max_iters: int = 10_000) -> RegularizedSolution:
  """The policy-KL regularized program, primal and dual, with a duality certificate.

  Primal ``max_{d in D} <r, d> - Omega(d)`` with ``Omega`` = :func:`policy_kl_regularizer`;
  dual (the Lagrangian of the flow constraints, maximized over ``d >= 0``)

  .. math:: \\min_v \\langle \\mu_0, v\\rangle \\ \\text{s.t.}\\
     v(s) \\ge \\lambda \\log \\sum_a \\pi_0(a|s) e^{(r(s,a) + \\gamma (P v)(s,a))/\\lambda}.

  The dual's optimum is the soft value iteration fixed point (every constraint tight); the
  primal's is the occupancy measure of ``pi*``, and both values equal ``<mu0, v_soft>`` (the
  soft value, in the unnormalized convention of this module). The result carries the gap and
  the feasibility residuals that certify it (see :class:`RegularizedSolution`).
  """
  P, r = _check_mdp(P, r, gamma)
  r = r.astype(P.dtype)
  mu0 = _check_mu0(mu0, P.shape[0], P.dtype)
  _check_lam(lam)
  if max_iters < 1:
    raise ValueError(f"max_iters must be >= 1, got {max_iters}")
  pi0_full = _check_pi0(pi0, r.shape, entropy, P.dtype)
  gamma = jnp.asarray(gamma, P.dtype)
  lam = jnp.asarray(lam, P.dtype)
  tol = _default_tol(r, gamma, lam) if tol is None else jnp.asarray(tol, P.dtype)
  return _policy_regularized(P, r, gamma, mu0, lam, pi0_full, tol, int(max_iters))


@functools.partial(jax.jit, static_argnames=("max_iters",))
def _policy_regularized(P, r, gamma, mu0, lam, pi0, tol, max_iters):
  sol = _soft_vi(P, r, gamma, lam, pi0, tol, max_iters)
  d = _occupancy(P, gamma, mu0, sol.policy)
  primal = jnp.sum(r * d) - _policy_omega(d, pi0, lam)
  dual = jnp.dot(mu0, sol.v)
  v_backup, _ = _backup(_q_of(P, r, gamma, sol.v), pi0, lam)
  delta = sol.q - sol.v[:, None]
  return RegularizedSolution(
      d=d, v=sol.v, policy=sol.policy, perturbation=delta, worst_case_reward=r - delta,
      primal_value=primal, dual_value=dual, gap=dual - primal,
      flow_residual=jnp.max(jnp.abs(flow_residual(P, gamma, mu0, d))),
      dual_violation=jnp.max(v_backup - sol.v), iterations=sol.iterations)


@functools.partial(jax.jit, static_argnames=("max_iters",))
def _occupancy_kl_newton(P, r, gamma, mu0, lam, d0, tol, max_iters):
  num_states = P.shape[0]
  eye = jnp.eye(num_states, dtype=P.dtype)
  M = gamma * P - eye[:, None, :]  # (S, A, S): A(v) = r + M v

  def advantage(v):
    return r + jnp.einsum("sat,t->sa", M, v)

  def f(v):
    return jnp.dot(mu0, v) + lam * jnp.sum(d0 * jnp.expm1(advantage(v) / lam))

  def grad_hess(v):
    d = d0 * jnp.exp(advantage(v) / lam)
    g = mu0 + jnp.einsum("sa,sat->t", d, M)
    h = jnp.einsum("sat,sa,sau->tu", M, d, M) / lam
    return g, h

  def cond(carry):
    _, g_norm, it, stalled = carry
    return (g_norm > tol) & (it < max_iters) & ~stalled

  def body(carry):
    v, _, it, _ = carry
    g, h = grad_hess(v)
    step = -jnp.linalg.solve(h, g)
    slope = jnp.dot(g, step)
    f0 = f(v)

    def bt_cond(t):  # Armijo backtracking on the convex dual
      f_t = f(v + t * step)
      return (~(f_t <= f0 + 0.25 * t * slope)) & (t > 1e-12)

    t = lax.while_loop(bt_cond, lambda t: 0.5 * t, jnp.asarray(1.0, P.dtype))
    stalled = t <= 1e-12  # no decrease at round-off level: the gradient is as small as it gets
    v_new = jnp.where(stalled, v, v + t * step)
    g_new, _ = grad_hess(v_new)
    return v_new, jnp.max(jnp.abs(g_new)), it + 1, stalled

  # Start from the soft value of the policy KL to d0's conditional policy at the same lam: then
  # A(v0) = lam log(pi* / pi0) is moderate and d = d0(s) pi*(a|s) is off only in its state
  # marginal, which Newton corrects; from v = 0, exp(r / lam) overflows the Hessian for small lam.
  pi0 = d0 / jnp.sum(d0, axis=1, keepdims=True)
  v0 = _soft_vi(P, r, gamma, lam, pi0, _default_tol(r, gamma, lam), 10_000).v
  g0, _ = grad_hess(v0)
  v, _, it, _ = lax.while_loop(cond, body, (v0, jnp.max(jnp.abs(g0)), jnp.asarray(0),
                                            jnp.asarray(False)))
  adv = advantage(v)
  d = d0 * jnp.exp(adv / lam)
  primal = jnp.sum(r * d) - lam * jnp.sum(xlogy(d, d) - xlogy(d, d0) - d + d0)
  dual = jnp.dot(mu0, v) + lam * jnp.sum(d0 * jnp.expm1(adv / lam))
  return RegularizedSolution(
      d=d, v=v, policy=d / jnp.sum(d, axis=1, keepdims=True), perturbation=adv,
      worst_case_reward=r - adv, primal_value=primal, dual_value=dual, gap=dual - primal,
      flow_residual=jnp.max(jnp.abs(flow_residual(P, gamma, mu0, d))),
      dual_violation=jnp.zeros((), P.dtype), iterations=it)


def solve_occupancy_regularized(P: ArrayLike, r: ArrayLike, gamma: float, mu0: ArrayLike,
                                lam: float, d0: ArrayLike, *, tol: float | None = None,
                                max_iters: int = 100) -> RegularizedSolution:
  """``max_{d in D} <r, d> - lam KL(d || d0)`` (generalized KL on the occupancy measure).

  The dual (Lagrangian of the flow constraints, maximized over ``d >= 0`` in closed form) is the
  smooth unconstrained convex program

  .. math:: \\min_v\\ \\langle \\mu_0, v\\rangle + \\Omega^*(A(v)),\\qquad
     A(v)(s, a) = r(s, a) + \\gamma (P v)(s, a) - v(s),\\qquad
     \\Omega^*(\\Delta) = \\lambda \\sum d_0 (e^{\\Delta/\\lambda} - 1),

  solved by damped Newton (Armijo backtracking) in one ``lax.while_loop``, stopping when the
  gradient, which is minus the flow residual of ``d = d0 exp(A(v) / lam)``, is at most ``tol``
  in the sup norm. Then ``d* = d0 exp(A(v*) / lam)``, the worst case is
  ``Delta* = grad Omega(d*) = lam log(d* / d0) = A(v*)`` and ``r - Delta* = v(s) - gamma P v``:
  indifferent again, so every policy has value ``v*`` under it. The adversary is not confined:
  it pays ``Omega*(Delta)``.

  Args:
    P, r, gamma, mu0: the MDP.
    lam: strength, ``> 0``.
    d0: positive reference measure ``(S, A)`` (e.g. the occupancy of a reference policy).
    tol: gradient tolerance; default ``1e4 eps / (1 - gamma)``. The loop also stops when a
      Newton step can no longer decrease the dual (round-off).
    max_iters: cap on Newton steps.

  Raises:
    ValueError: bad MDP, ``lam <= 0``, ``d0`` not positive of shape ``(S, A)``.
  """
  P, r = _check_mdp(P, r, gamma)
  r = r.astype(P.dtype)
  mu0 = _check_mu0(mu0, P.shape[0], P.dtype)
  _check_lam(lam)
  if core.is_concrete(lam) and not float(lam) > 0:
    raise ValueError(f"lam must be > 0 for the occupancy KL regularizer, got {lam}")
  d0 = _float(d0).astype(P.dtype)
  if d0.shape != r.shape:
    raise ValueError(f"d0 must have shape (S, A) = {r.shape}, got {d0.shape}")
  if core.is_concrete(d0) and not np.all(np.asarray(d0) > 0):
    raise ValueError(f"d0 must be positive everywhere, got min {float(jnp.min(d0)):.3g}")
  gamma_a = jnp.asarray(gamma, P.dtype)
  lam_a = jnp.asarray(lam, P.dtype)
  if tol is None:
    tol = 1e4 * jnp.finfo(P.dtype).eps / (1.0 - gamma_a)
  return _occupancy_kl_newton(P, r, gamma_a, mu0, lam_a, d0, jnp.asarray(tol, P.dtype),
                              int(max_iters))


# ----------------------------------------------------------------------------- the exact LP


def occupancy_lp(P: ArrayLike, r: ArrayLike, gamma: float, mu0: ArrayLike) -> OccupancyLP:
  """The occupancy-measure LP and its dual, each solved by ``scipy.optimize.linprog`` (HiGHS).

  .. math:: \\max_{d \\ge 0} \\langle r, d\\rangle\\ \\text{s.t.}\\
     \\textstyle\\sum_a d(s', a) - \\gamma \\sum_{s,a} P(s'|s,a) d(s,a) = \\mu_0(s');\\qquad
     \\min_v \\langle \\mu_0, v\\rangle\\ \\text{s.t.}\\
     v(s) - \\gamma (P v)(s, a) \\ge r(s, a).

  Both values equal ``<mu0, v*>`` of the optimal value function (no ``(1 - gamma)`` factors:
  ``d`` is the unnormalized occupancy). Host-side NumPy, float64; not jit-able.

  Raises:
    ValueError: bad MDP or ``mu0``; RuntimeError if HiGHS fails.
  """
  from scipy import optimize  # pylint: disable=g-import-not-at-top

  P_j, r_j = _check_mdp(P, r, gamma)
  _check_mu0(mu0, P_j.shape[0], P_j.dtype)
  P = np.asarray(P_j, np.float64)
  r = np.asarray(r_j, np.float64)
  mu0 = np.asarray(mu0, np.float64)
  num_states, num_actions, _ = P.shape
  # M[s', (s, a)] = [s == s'] - gamma P(s'|s, a).
  M = np.repeat(np.eye(num_states), num_actions, axis=1) - gamma * P.reshape(-1, num_states).T
  options = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}
  primal = optimize.linprog(-r.ravel(), A_eq=M, b_eq=mu0, bounds=(0, None), method="highs",
                            options=options)
  dual = optimize.linprog(mu0, A_ub=-M.T, b_ub=-r.ravel(), bounds=(None, None),
                          method="highs", options=options)
  if primal.status != 0 or dual.status != 0:
    raise RuntimeError(f"linprog failed: primal {primal.message!r}, dual {dual.message!r}")
  d = primal.x.reshape(num_states, num_actions)
  d_s = d.sum(axis=1, keepdims=True)
  policy = np.where(d_s > 0, d / np.where(d_s > 0, d_s, 1.0), 1.0 / num_actions)
  return OccupancyLP(float(-primal.fun), float(dual.fun), d, dual.x, policy)
