"""Depth and nonlinearity induce implicit exploration: DQN on gymnax, one compiled program.

Paper: Dauparas, Tomioka, Hofmann, "Depth and nonlinearity induce implicit exploration for RL"
(2018, arXiv 1805.11711). Q-learning with a nonlinear Q-network and a *purely greedy* policy
(epsilon = 0) learns benchmarks such as mountain car as well as epsilon-greedy; a linear
Q-function does not. The mechanism is optimism by generalisation: rewards are -1 per step, so
the targets ``r + gamma max_a' Q(s', a')`` pull the values of *visited* state-actions down,
while a local (nonlinear) function approximator leaves unvisited ones near their initial
value; the greedy argmax then prefers what has not been tried. A linear Q-function moves the
values of all states together and loses this.

DQN (Mnih et al. 2015) is written here as one pure function of a PRNG key:

* a batch of ``num_envs`` gymnax environments (``env.step`` returns ``(obs, state, reward,
  terminated, truncated, info)`` and resets by itself; ``info["final_observation"]`` is the
  state reached before the reset, which is what the transition stores);
* a ring replay buffer of fixed-size arrays (:func:`init_replay_buffer`, :func:`replay_add`,
  :func:`replay_sample`);
* the TD target ``y = r + gamma (1 - terminated) max_a' Q_target(s', a')``
  (:func:`td_target`): only a true termination stops bootstrapping; a time-limit truncation
  does not, because the state after it still has a future;
* the loss ``mean_i rho(Q(s_i, a_i) - y_i)`` with ``rho`` the Huber function (delta 1) or
  ``u^2 / 2``, minimised with Adam (optax), gradient clipped by global norm;
* a target network ``theta^- <- tau theta + (1 - tau) theta^-`` every
  ``target_update_every`` environment steps (``tau = 1`` is DQN's hard copy);
* epsilon-greedy acting with ``epsilon`` fixed or annealed linearly from ``epsilon_start`` to
  ``epsilon_end`` over ``epsilon_anneal_steps``; ``epsilon = 0`` is the paper's greedy agent.

Everything runs in one ``lax.scan`` over vector steps, so ``jax.vmap`` runs many seeds (and
many epsilons / learning rates, which :class:`DQNHyperparams` passes as arrays) as one program.
The Q-network is a pure function of a list of ``(W, b)`` pairs rather than an NNX module:
the scan carries, copies (target network) and vmaps the parameters on every step, and a plain
pytree does that without split/merge bookkeeping. DQN does not fit ``core``'s trainers (their
step sees a batch, not an environment state and a replay buffer that the step itself fills),
so the loop is written here, once, under ``lax.scan``.

gymnax is an optional dependency (the ``[rl]`` extra); it is imported when a DQN is built.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from tomioka_jax import core

Params = list[tuple[jax.Array, jax.Array]]

Q_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "elu": jax.nn.elu,
    "gelu": jax.nn.gelu,
    "softplus": jax.nn.softplus,
    "leaky_relu": jax.nn.leaky_relu,
    "linear": lambda x: x,
}
"""Hidden-layer activations of the Q-network by name; ``"linear"`` makes a deep linear net."""

LOSSES = ("huber", "squared")

# Box bounds of the state-space grid that counts distinct visited cells (the exploration
# measure), and that scales observations to [-1, 1] when ``normalize_obs``. Classic-control
# observations are unbounded in some coordinates (velocities); these are the ranges the
# dynamics reach (MountainCar's are exact: position clipped to [-1.2, 0.6], speed to 0.07).
OBS_BOUNDS: dict[str, tuple[tuple[float, float], ...]] = {
    "MountainCar-v0": ((-1.2, 0.6), (-0.07, 0.07)),
    "CartPole-v1": ((-2.4, 2.4), (-3.0, 3.0), (-0.21, 0.21), (-3.5, 3.5)),
    "Acrobot-v1": ((-1.0, 1.0),) * 4 + ((-4 * math.pi, 4 * math.pi),
                                       (-9 * math.pi, 9 * math.pi)),
}
"""Per-coordinate ``(low, high)`` of the observation grid for the classic-control tasks."""

CELL_BINS: dict[str, int] = {"MountainCar-v0": 20, "CartPole-v1": 10, "Acrobot-v1": 6}
"""Default bins per coordinate of the visited-cell grid (400, 10^4 and 6^6 cells)."""

# Episodes of these tasks *succeed* when they run to the time limit (no termination);
# elsewhere (MountainCar, Acrobot) a termination is reaching the goal.
_SUCCESS_IS_TRUNCATION = frozenset({"CartPole-v1", "CartPole-v0"})
_MAX_CELLS = 1 << 22


@dataclasses.dataclass(frozen=True)
class DQNConfig:
  """Hyperparameters of :func:`make_dqn` (hashable; validated on construction).

  Step counts are environment steps summed over the ``num_envs`` parallel environments,
  except ``train_every``, which counts vector steps (one step of every environment).
  The defaults are a reconstruction (the paper's PDF was not available to us): one
  environment and one gradient step of 32 transitions per environment step, as in classic
  DQN on control tasks; Adam 1e-3, two hidden layers of 64 units, a hard target copy every
  200 steps. With these, greedy one-hidden-layer networks reach MountainCar-v0's goal in over
  90% of the late episodes of 2e5-step runs (``benchmarks/implicit_exploration.py``).

  Attributes:
    num_envs: parallel environments per run.
    total_steps: environment steps per run (rounded down to a multiple of ``num_envs``).
    buffer_size: replay capacity (transitions).
    batch_size: transitions per gradient step.
    learning_starts: environment steps before the first gradient step.
    train_every: vector steps between gradient steps.
    target_update_every: environment steps between target updates.
    tau: target update ``theta^- <- tau theta + (1 - tau) theta^-`` (1: hard copy).
    gamma: discount in [0, 1].
    learning_rate: Adam step size.
    depth: hidden layers of the Q-network (0: Q linear in the observation).
    width: units per hidden layer.
    activation: a key of :data:`Q_ACTIVATIONS`.
    epsilon_start: exploration probability at step 0 (0: greedy).
    epsilon_end: exploration probability after ``epsilon_anneal_steps`` (None: = start).
    epsilon_anneal_steps: environment steps of the linear anneal (0: epsilon fixed).
    loss: ``"huber"`` (delta 1) or ``"squared"``.
    max_grad_norm: global-norm gradient clip (None: no clip).
    normalize_obs: scale observations to [-1, 1] with :data:`OBS_BOUNDS` (tasks listed there).
    cell_bins: bins per coordinate of the visited-cell grid (None: :data:`CELL_BINS`, else 10).
  """

  num_envs: int = 1
  total_steps: int = 50_000
  buffer_size: int = 50_000
  batch_size: int = 32
  learning_starts: int = 1_000
  train_every: int = 1
  target_update_every: int = 200
  tau: float = 1.0
  gamma: float = 0.99
  learning_rate: float = 1e-3
  depth: int = 2
  width: int = 64
  activation: str = "relu"
  epsilon_start: float = 0.0
  epsilon_end: float | None = None
  epsilon_anneal_steps: int = 0
  loss: str = "huber"
  max_grad_norm: float | None = 10.0
  normalize_obs: bool = True
  cell_bins: int | None = None

  def __post_init__(self):
    positive = ("num_envs", "total_steps", "buffer_size", "batch_size", "train_every",
                "target_update_every", "width")
    for name in positive:
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}; allowed: an integer >= 1")
    for name in ("learning_starts", "epsilon_anneal_steps", "depth"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}={value!r}; allowed: an integer >= 0")
    if self.total_steps < self.num_envs:
      raise ValueError(f"total_steps={self.total_steps}; allowed: >= num_envs={self.num_envs}")
    if self.batch_size > self.buffer_size:
      raise ValueError(f"batch_size={self.batch_size}; allowed: <= buffer_size="
                       f"{self.buffer_size}")
    if self.num_envs > self.buffer_size:
      raise ValueError(f"num_envs={self.num_envs}; allowed: <= buffer_size={self.buffer_size}")
    if not 0.0 < self.tau <= 1.0:
      raise ValueError(f"tau={self.tau!r}; allowed: 0 < tau <= 1")
    if not 0.0 <= self.gamma <= 1.0:
      raise ValueError(f"gamma={self.gamma!r}; allowed: 0 <= gamma <= 1")
    if not self.learning_rate > 0.0:
      raise ValueError(f"learning_rate={self.learning_rate!r}; allowed: > 0")
    if self.activation not in Q_ACTIVATIONS:
      raise ValueError(f"activation={self.activation!r}; allowed: {', '.join(Q_ACTIVATIONS)}")
    for name in ("epsilon_start", "epsilon_end"):
      value = getattr(self, name)
      if value is not None and not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}={value!r}; allowed: 0 <= {name} <= 1")
    if self.loss not in LOSSES:
      raise ValueError(f"loss={self.loss!r}; allowed: {', '.join(LOSSES)}")
    if self.max_grad_norm is not None and not self.max_grad_norm > 0:
      raise ValueError(f"max_grad_norm={self.max_grad_norm!r}; allowed: > 0 or None")
    if self.cell_bins is not None and (not isinstance(self.cell_bins, int)
                                       or self.cell_bins < 1):
      raise ValueError(f"cell_bins={self.cell_bins!r}; allowed: an integer >= 1 or None")

  @property
  def num_iterations(self) -> int:
    """Vector steps of one run: ``total_steps // num_envs``."""
    return self.total_steps // self.num_envs


class DQNHyperparams(NamedTuple):
  """The hyperparameters ``train`` takes as arrays, so that ``jax.vmap`` can sweep them."""

  epsilon_start: jax.Array
  epsilon_end: jax.Array
  learning_rate: jax.Array


def default_hyperparams(config: DQNConfig) -> DQNHyperparams:
  """The config's epsilon schedule and learning rate as float32 scalars."""
  end = config.epsilon_start if config.epsilon_end is None else config.epsilon_end
  return DQNHyperparams(jnp.float32(config.epsilon_start), jnp.float32(end),
                        jnp.float32(config.learning_rate))


# ------------------------------------------------------------------------------------------
# Q-network


def init_q_network(key: jax.Array, obs_dim: int, num_actions: int, depth: int,
                   width: int) -> Params:
  """Parameters ``[(W_1, b_1), ..., (W_{depth+1}, b_{depth+1})]`` of an MLP Q-network.

  Layer ``l`` maps ``fan_in -> fan_out`` with ``W, b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))``
  (PyTorch's ``nn.Linear`` default), so the initial Q-values are small and nearly flat: with
  rewards of -1 per step they are optimistic, which the greedy agent relies on.
  ``depth = 0`` is a single linear layer ``obs_dim -> num_actions``.
  """
  if depth < 0:
    raise ValueError(f"depth={depth}; allowed: an integer >= 0")
  if width < 1 or obs_dim < 1 or num_actions < 1:
    raise ValueError(f"width={width}, obs_dim={obs_dim}, num_actions={num_actions}; allowed: "
                     ">= 1")
  sizes = [obs_dim] + [width] * depth + [num_actions]
  params = []
  for k, (fan_in, fan_out) in zip(jax.random.split(key, len(sizes) - 1),
                                  zip(sizes[:-1], sizes[1:])):
    kw, kb = jax.random.split(k)
    bound = 1.0 / math.sqrt(fan_in)
    params.append((core.flat_uniform(kw, (fan_in, fan_out), jnp.float32, -bound, bound),
                   jax.random.uniform(kb, (fan_out,), jnp.float32, -bound, bound)))
  return params


def q_values(params: Params, obs: jax.Array, activation: str = "relu") -> jax.Array:
  """``Q(s, .)`` for observations ``obs`` of shape ``(..., obs_dim)``: ``(..., num_actions)``.

  ``h_0 = s``, ``h_l = sigma(h_{l-1} W_l + b_l)`` for the hidden layers, and
  ``Q = h_depth W_{depth+1} + b_{depth+1}`` (no activation on the output).
  """
  if activation not in Q_ACTIVATIONS:
    raise ValueError(f"activation={activation!r}; allowed: {', '.join(Q_ACTIVATIONS)}")
  sigma = Q_ACTIVATIONS[activation]

  def affine(h, w, b):
    return h @ w + b.reshape((1,) * (h.ndim - 1) + b.shape)

  h = obs
  for w, b in params[:-1]:
    h = sigma(affine(h, w, b))
  return affine(h, *params[-1])


def epsilon_greedy(key: jax.Array, q: jax.Array, epsilon: jax.Array) -> jax.Array:
  """Actions for Q-values ``q`` of shape ``(n, num_actions)``: argmax with probability
  ``1 - epsilon``, uniform otherwise (``epsilon = 0``: exactly the argmax)."""
  k_explore, k_action = jax.random.split(key)
  n, num_actions = q.shape
  greedy = jnp.argmax(q, axis=-1).astype(jnp.int32)
  random = jax.random.randint(k_action, (n,), 0, num_actions, jnp.int32)
  explore = jax.random.uniform(k_explore, (n,)) < epsilon
  return jnp.where(explore, random, greedy)


def epsilon_schedule(step: jax.Array, start: jax.Array, end: jax.Array,
                     anneal_steps: int) -> jax.Array:
  """``end + (start - end) max(0, 1 - step / anneal_steps)``; ``start`` if ``anneal_steps=0``."""
  if anneal_steps == 0:
    return jnp.asarray(start, jnp.float32)
  frac = jnp.clip(1.0 - step / anneal_steps, 0.0, 1.0)
  return end + (start - end) * frac


# ------------------------------------------------------------------------------------------
# Replay buffer


class ReplayBuffer(NamedTuple):
  """A ring buffer of transitions in fixed-size arrays; ``position`` is the next slot to
  write, ``size`` the number of filled slots (at most the capacity)."""

  obs: jax.Array  # (capacity, obs_dim)
  action: jax.Array  # (capacity,) int32
  reward: jax.Array  # (capacity,)
  next_obs: jax.Array  # (capacity, obs_dim)
  terminated: jax.Array  # (capacity,) bool
  position: jax.Array  # () int32
  size: jax.Array  # () int32


class Transitions(NamedTuple):
  """A batch of transitions ``(s, a, r, s', terminated)``, leading axis the batch."""

  obs: jax.Array
  action: jax.Array
  reward: jax.Array
  next_obs: jax.Array
  terminated: jax.Array


def init_replay_buffer(capacity: int, obs_dim: int) -> ReplayBuffer:
  """An empty :class:`ReplayBuffer` of ``capacity`` transitions."""
  if capacity < 1 or obs_dim < 1:
    raise ValueError(f"capacity={capacity}, obs_dim={obs_dim}; allowed: >= 1")
  return ReplayBuffer(jnp.zeros((capacity, obs_dim), jnp.float32),
                      jnp.zeros((capacity,), jnp.int32), jnp.zeros((capacity,), jnp.float32),
                      jnp.zeros((capacity, obs_dim), jnp.float32),
                      jnp.zeros((capacity,), bool), jnp.int32(0), jnp.int32(0))


def replay_add(buffer: ReplayBuffer, batch: Transitions) -> ReplayBuffer:
  """Writes the ``n`` transitions of ``batch`` to slots ``position, ..., position + n - 1``
  modulo the capacity (overwriting the oldest), and advances ``position`` and ``size``."""
  capacity = buffer.action.shape[0]
  n = batch.action.shape[0]
  if n > capacity:
    raise ValueError(f"batch of {n} transitions; allowed: <= capacity={capacity}")
  idx = (buffer.position + jnp.arange(n, dtype=jnp.int32)) % capacity
  return ReplayBuffer(buffer.obs.at[idx].set(batch.obs.astype(jnp.float32)),
                      buffer.action.at[idx].set(batch.action.astype(jnp.int32)),
                      buffer.reward.at[idx].set(batch.reward.astype(jnp.float32)),
                      buffer.next_obs.at[idx].set(batch.next_obs.astype(jnp.float32)),
                      buffer.terminated.at[idx].set(batch.terminated.astype(bool)),
                      (buffer.position + n) % capacity,
                      jnp.minimum(buffer.size + n, capacity))


def replay_sample(buffer: ReplayBuffer, key: jax.Array, batch_size: int) -> Transitions:
  """``batch_size`` transitions drawn uniformly, with replacement, from the filled slots
  ``0, ..., size - 1`` (a buffer that has not wrapped holds them there; one that has wrapped
  is full). The buffer must hold at least one transition."""
  idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer.size, 1), jnp.int32)
  return Transitions(buffer.obs[idx], buffer.action[idx], buffer.reward[idx],
                     buffer.next_obs[idx], buffer.terminated[idx])


# ------------------------------------------------------------------------------------------
# TD learning


def td_target(reward: jax.Array, terminated: jax.Array, next_q: jax.Array,
              gamma: float) -> jax.Array:
  """Q-learning's target ``y = r + gamma (1 - terminated) max_a' Q(s', a')``.

  Args:
    reward: ``(n,)`` rewards.
    terminated: ``(n,)`` booleans: the episode ended in a terminal state. Pass *only* the
      termination flag: a truncation by the time limit must still bootstrap.
    next_q: ``(n, num_actions)`` Q-values of the next states (the target network's).
    gamma: discount.
  """
  not_terminal = 1.0 - terminated.astype(jnp.float32)
  return reward + gamma * not_terminal * jnp.max(next_q, axis=-1)


def dqn_loss(params: Params, target_params: Params, batch: Transitions, gamma: float,
             activation: str = "relu", loss: str = "huber") -> jax.Array:
  """``mean_i rho(Q(s_i, a_i) - y_i)``, ``y`` the :func:`td_target` of the target network
  (no gradient through it), ``rho`` the Huber function (delta 1) or ``u^2 / 2``."""
  if loss not in LOSSES:
    raise ValueError(f"loss={loss!r}; allowed: {', '.join(LOSSES)}")
  q = q_values(params, batch.obs, activation)
  q_taken = jnp.take_along_axis(q, batch.action[:, None], axis=-1)[:, 0]
  next_q = q_values(target_params, batch.next_obs, activation)
  y = jax.lax.stop_gradient(td_target(batch.reward, batch.terminated, next_q, gamma))
  if loss == "huber":
    return jnp.mean(optax.huber_loss(q_taken, y, delta=1.0))
  return jnp.mean(0.5 * (q_taken - y) ** 2)


# ------------------------------------------------------------------------------------------
# Visited cells


def cell_index(obs: jax.Array, low: jax.Array, high: jax.Array, bins: int) -> jax.Array:
  """The flat index of the grid cell of each observation ``(n, d)``: every coordinate cut into
  ``bins`` equal intervals of ``[low, high]`` (values outside go to the end bins), then
  ``sum_k i_k bins^k``."""
  d = obs.shape[-1]
  unit = (obs - low[None, :]) / (high - low)[None, :]
  i = jnp.clip(jnp.floor(unit * bins), 0, bins - 1).astype(jnp.int32)
  radix = jnp.asarray([bins ** k for k in range(d)], jnp.int32)
  return jnp.sum(i * radix[None, :], axis=-1)


def mark_visited(visited: jax.Array, count: jax.Array,
                 cells: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Marks ``cells`` (flat indices) in the boolean map ``visited`` and adds the number of
  cells seen for the first time (each counted once even if it repeats in ``cells``)."""
  n = cells.shape[0]
  earlier = jnp.tril(jnp.ones((n, n), bool), k=-1)
  repeated = jnp.any((cells[:, None] == cells[None, :]) & earlier, axis=1)
  new = ~visited[cells] & ~repeated
  return visited.at[cells].set(True), count + jnp.sum(new, dtype=jnp.int32)


# ------------------------------------------------------------------------------------------
# The training function


def env_transition(env: Any, env_params: Any, key: jax.Array, env_state: Any, obs: jax.Array,
                   action: jax.Array) -> tuple[Transitions, jax.Array, Any, jax.Array]:
  """One step of a batch of gymnax environments, as the transitions DQN stores.

  gymnax (>= 1.0) resets an environment inside ``step`` when its episode ends; the
  observation it returns is then the new episode's first, and ``info["final_observation"]``
  the state the action reached. The transition ``(s, a, r, s', terminated)`` takes ``s'``
  from the latter and records only ``terminated``: a time-limit truncation bootstraps.

  Args:
    env, env_params: a gymnax environment and its parameters.
    key: one key, split over the ``n`` environments.
    env_state, obs: the environments' states and observations (leading axis ``n``).
    action: ``(n,)`` actions.

  Returns:
    ``(transitions, next_obs, next_env_state, done)``: ``next_obs`` is what the agent sees
    next (after any reset), ``done = terminated | truncated``.
  """
  n = action.shape[0]
  next_obs, env_state, reward, terminated, truncated, info = jax.vmap(
      env.step, in_axes=(0, 0, 0, None))(jax.random.split(key, n), env_state, action,
                                          env_params)
  terminated = terminated.astype(bool)
  done = terminated | truncated.astype(bool)
  batch = Transitions(obs.astype(jnp.float32), action, reward.astype(jnp.float32),
                      info["final_observation"].astype(jnp.float32), terminated)
  return batch, next_obs.astype(jnp.float32), env_state, done


class DQNState(NamedTuple):
  """The scan's carry."""

  params: Params
  target_params: Params
  opt_state: Any
  buffer: ReplayBuffer
  env_state: Any
  obs: jax.Array
  episode_return: jax.Array
  episode_length: jax.Array
  visited: jax.Array
  cells_visited: jax.Array


def _resolve_env(env: Any, env_params: Any):
  import gymnax  # pylint: disable=g-import-not-at-top  # optional dependency ([rl] extra)
  if isinstance(env, str):
    if env not in gymnax.registered_envs:
      raise ValueError(f"env={env!r}; allowed: a gymnax environment id, e.g. MountainCar-v0, "
                       "CartPole-v1, Acrobot-v1 (gymnax.registered_envs lists all)")
    env, default_params = gymnax.make(env)
    env_params = default_params if env_params is None else env_params
  elif env_params is None:
    env_params = env.default_params
  space = env.action_space(env_params)
  if not hasattr(space, "n"):
    raise ValueError(f"env={env.name!r} has action space {type(space).__name__}; allowed: a "
                     "discrete action space")
  obs_shape = tuple(env.observation_space(env_params).shape)
  if len(obs_shape) != 1:
    raise ValueError(f"env={env.name!r} has observations of shape {obs_shape}; allowed: "
                     "flat vectors")
  return env, env_params, int(space.n), obs_shape[0]


def _obs_bounds(env: Any, env_params: Any, obs_dim: int) -> tuple[jax.Array, jax.Array]:
  if env.name in OBS_BOUNDS:
    bounds = jnp.asarray(OBS_BOUNDS[env.name], jnp.float32)
    return bounds[:, 0], bounds[:, 1]
  space = env.observation_space(env_params)
  low = jnp.broadcast_to(jnp.asarray(space.low, jnp.float32), (obs_dim,))
  high = jnp.broadcast_to(jnp.asarray(space.high, jnp.float32), (obs_dim,))
  return jnp.clip(low, -10.0, 10.0), jnp.clip(high, -10.0, 10.0)


def make_dqn(env: Any, config: DQNConfig = DQNConfig(), env_params: Any = None
             ) -> Callable[..., tuple[Params, dict[str, jax.Array]]]:
  """DQN as one pure training function ``train(key, hyper=None) -> (params, metrics)``.

  Args:
    env: a gymnax environment id (``"MountainCar-v0"``, ``"CartPole-v1"``, ``"Acrobot-v1"``,
      ...) or a gymnax environment object, with discrete actions and flat observations.
    config: a :class:`DQNConfig`.
    env_params: the environment's parameters (None: its defaults; MountainCar's episode limit
      is ``max_steps_in_episode = 200``).

  Returns:
    ``train(key, hyper=None)``: runs ``config.num_iterations`` vector steps in one
    ``lax.scan``. ``hyper`` (:class:`DQNHyperparams`, default :func:`default_hyperparams`)
    holds the epsilon schedule's ends and the learning rate as arrays, so
    ``jax.jit(jax.vmap(train))(keys, hypers)`` sweeps seeds and these values in one program.
    It returns the final online Q-network parameters and ``metrics``, arrays with a leading
    axis of ``num_iterations``:

    * ``episode_done``, ``episode_return``, ``episode_length``, ``episode_success``:
      ``(T, num_envs)``; at a step where environment ``e``'s episode ends (terminated or
      truncated), its return (undiscounted sum of rewards), length and success (MountainCar,
      Acrobot: the goal was reached, i.e. terminated, before the limit; CartPole: the pole
      stayed up until the limit); zero elsewhere. :func:`learning_curve` bins them.
    * ``cells_visited``: ``(T,)`` distinct cells of the state grid (``config.cell_bins`` per
      coordinate of :data:`OBS_BOUNDS`) reached so far, the exploration measure.
    * ``loss`` (``(T,)``, 0 where no gradient step ran) and ``epsilon`` (``(T,)``).

  Raises:
    ValueError: an unknown environment, or one without discrete actions / flat observations.
  """
  env, env_params, num_actions, obs_dim = _resolve_env(env, env_params)
  cfg = config
  num_iterations = cfg.num_iterations
  n_env = cfg.num_envs
  low, high = _obs_bounds(env, env_params, obs_dim)
  bins = cfg.cell_bins or CELL_BINS.get(env.name, 10)
  if bins ** obs_dim > _MAX_CELLS:
    raise ValueError(f"cell_bins={bins} gives {bins}^{obs_dim} cells for {env.name}; allowed: "
                     f"at most {_MAX_CELLS} cells")
  num_cells = bins ** obs_dim
  scale_obs = cfg.normalize_obs and env.name in OBS_BOUNDS
  center, half = (high + low) / 2, (high - low) / 2
  success_is_truncation = env.name in _SUCCESS_IS_TRUNCATION

  def features(obs):
    if not scale_obs:
      return obs
    lead = (1,) * (obs.ndim - 1)
    return (obs - center.reshape(lead + center.shape)) / half.reshape(lead + half.shape)

  def q_fn(params, obs):
    return q_values(params, features(obs), cfg.activation)

  def make_optimizer(learning_rate):
    adam = optax.adam(learning_rate)
    if cfg.max_grad_norm is None:
      return adam
    return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), adam)

  def loss_fn(params, target_params, batch):
    scaled = batch._replace(obs=features(batch.obs), next_obs=features(batch.next_obs))
    return dqn_loss(params, target_params, scaled, cfg.gamma, cfg.activation, cfg.loss)

  vreset = jax.vmap(env.reset, in_axes=(0, None))

  def train(key: jax.Array, hyper: DQNHyperparams | None = None):
    hyper = default_hyperparams(cfg) if hyper is None else hyper
    optimizer = make_optimizer(hyper.learning_rate)
    k_init, k_reset, k_loop = jax.random.split(key, 3)
    params = init_q_network(k_init, obs_dim, num_actions, cfg.depth, cfg.width)
    obs, env_state = vreset(jax.random.split(k_reset, n_env), env_params)
    visited = jnp.zeros((num_cells,), bool)
    visited, cells = mark_visited(visited, jnp.int32(0),
                                  cell_index(obs.astype(jnp.float32), low, high, bins))
    state = DQNState(params, params, optimizer.init(params),
                     init_replay_buffer(cfg.buffer_size, obs_dim), env_state,
                     obs.astype(jnp.float32), jnp.zeros((n_env,), jnp.float32),
                     jnp.zeros((n_env,), jnp.int32), visited, cells)

    def step(state: DQNState, t: jax.Array):
      k = jax.random.fold_in(k_loop, t)
      k_act, k_env, k_sample = jax.random.split(k, 3)
      env_steps = t * n_env
      epsilon = epsilon_schedule(env_steps, hyper.epsilon_start, hyper.epsilon_end,
                                 cfg.epsilon_anneal_steps)
      action = epsilon_greedy(k_act, q_fn(state.params, state.obs), epsilon)
      batch, next_obs, env_state, done = env_transition(env, env_params, k_env,
                                                        state.env_state, state.obs, action)
      reward, terminated, final_obs = batch.reward, batch.terminated, batch.next_obs
      buffer = replay_add(state.buffer, batch)
      ep_return = state.episode_return + reward
      ep_length = state.episode_length + 1
      success = (~terminated & done) if success_is_truncation else terminated
      visited, cells = mark_visited(state.visited, state.cells_visited,
                                    cell_index(final_obs, low, high, bins))

      def update(args):
        params, opt_state = args
        batch = replay_sample(buffer, k_sample, cfg.batch_size)
        loss, grads = jax.value_and_grad(loss_fn)(params, state.target_params, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

      def skip(args):
        params, opt_state = args
        return params, opt_state, jnp.float32(0.0)

      do_train = ((env_steps + n_env) >= cfg.learning_starts) & ((t + 1) % cfg.train_every == 0)
      params, opt_state, loss = jax.lax.cond(do_train, update, skip,
                                             (state.params, state.opt_state))
      crossed = ((env_steps + n_env) // cfg.target_update_every
                 > env_steps // cfg.target_update_every)
      target = jax.tree.map(
          lambda p, q: jnp.where(crossed, cfg.tau * p + (1 - cfg.tau) * q, q),
          params, state.target_params)
      new_state = DQNState(params, target, opt_state, buffer, env_state, next_obs,
                           jnp.where(done, 0.0, ep_return), jnp.where(done, 0, ep_length),
                           visited, cells)
      metrics = {"episode_done": done, "episode_return": jnp.where(done, ep_return, 0.0),
                 "episode_length": jnp.where(done, ep_length, 0),
                 "episode_success": success & done, "cells_visited": cells, "loss": loss,
                 "epsilon": epsilon}
      return new_state, metrics

    state, metrics = jax.lax.scan(step, state, jnp.arange(num_iterations, dtype=jnp.int32))
    return state.params, metrics

  return train


def learning_curve(metrics: dict[str, jax.Array], num_bins: int
                   ) -> dict[str, jax.Array]:
  """Episode statistics per window of training: the ``T`` vector steps cut into ``num_bins``
  equal windows; for each, the mean return, mean success and number of the episodes that
  *ended* in it (NaN mean where none ended), and the visited cells at its end.

  Works on the metrics of one run (leading axis ``T``); ``jax.vmap`` it over seeds.
  """
  done = metrics["episode_done"]
  num_iterations = done.shape[0]
  if not 1 <= num_bins <= num_iterations:
    raise ValueError(f"num_bins={num_bins}; allowed: 1 <= num_bins <= {num_iterations} (the "
                     "number of vector steps)")
  which = (jnp.arange(num_iterations) * num_bins) // num_iterations
  count = jax.ops.segment_sum(jnp.sum(done, axis=1), which, num_bins)
  ret = jax.ops.segment_sum(jnp.sum(metrics["episode_return"], axis=1), which, num_bins)
  suc = jax.ops.segment_sum(jnp.sum(metrics["episode_success"], axis=1), which, num_bins)
  safe = jnp.maximum(count, 1)
  # Step t is in window floor(t num_bins / T); window b ends at ceil((b + 1) T / num_bins) - 1.
  last = ((jnp.arange(num_bins) + 1) * num_iterations + num_bins - 1) // num_bins - 1
  return {"mean_return": jnp.where(count > 0, ret / safe, jnp.nan),
          "success_rate": jnp.where(count > 0, suc / safe, jnp.nan),
          "episodes": count, "cells_visited": metrics["cells_visited"][last]}
