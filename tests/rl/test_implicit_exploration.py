"""Tests for tomioka_jax/rl/_implicit_exploration.py: DQN pieces against slow references."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

gymnax = pytest.importorskip("gymnax")

from tomioka_jax.rl import _implicit_exploration as ie  # noqa: E402


def _transitions(values, obs_dim=2):
  values = np.asarray(values, np.float32)
  n = values.shape[0]
  obs = np.repeat(values[:, None], obs_dim, axis=1)
  return ie.Transitions(jnp.asarray(obs), jnp.arange(n, dtype=jnp.int32) % 3,
                        jnp.asarray(values), jnp.asarray(obs + 0.5),
                        jnp.asarray(values > 100))


def test_replay_buffer_wraps_around_and_overwrites_the_oldest():
  buf = ie.init_replay_buffer(5, 2)
  buf = ie.replay_add(buf, _transitions([1, 2, 3]))
  assert int(buf.position) == 3 and int(buf.size) == 3
  buf = ie.replay_add(buf, _transitions([4, 5, 6]))
  # slots 3, 4, 0 get 4, 5, 6: the oldest (1) is overwritten, 2 and 3 stay.
  np.testing.assert_array_equal(buf.reward, [6, 2, 3, 4, 5])
  np.testing.assert_array_equal(buf.obs[:, 0], [6, 2, 3, 4, 5])
  np.testing.assert_array_equal(buf.next_obs[:, 1], [6.5, 2.5, 3.5, 4.5, 5.5])
  assert int(buf.position) == 1 and int(buf.size) == 5
  buf = ie.replay_add(buf, _transitions([7, 8, 9, 10, 11]))
  np.testing.assert_array_equal(buf.reward, [11, 7, 8, 9, 10])
  assert int(buf.position) == 1 and int(buf.size) == 5


def test_replay_sample_draws_only_filled_slots_uniformly():
  buf = ie.replay_add(ie.init_replay_buffer(10, 2), _transitions([1, 2, 3]))
  batch = ie.replay_sample(buf, jax.random.key(0), 3000)
  values, counts = np.unique(np.asarray(batch.reward), return_counts=True)
  np.testing.assert_array_equal(values, [1, 2, 3])  # never an empty (zero) slot
  np.testing.assert_allclose(counts / 3000, 1 / 3, atol=0.04)
  # Each sampled transition is a stored one, fields aligned.
  np.testing.assert_array_equal(batch.obs[:, 0], batch.reward)
  np.testing.assert_array_equal(batch.next_obs[:, 0], batch.reward + 0.5)


def test_td_target_masks_only_termination():
  reward = jnp.asarray([1.0, -1.0, 0.5])
  terminated = jnp.asarray([False, True, False])
  next_q = jnp.asarray([[0.0, 2.0], [5.0, 3.0], [-1.0, -4.0]])
  y = ie.td_target(reward, terminated, next_q, 0.9)
  np.testing.assert_allclose(y, [1.0 + 0.9 * 2.0, -1.0, 0.5 + 0.9 * -1.0], rtol=1e-6)


def test_env_transition_keeps_truncation_bootstrapping_and_the_pre_reset_state():
  env, params = gymnax.make("MountainCar-v0")
  params = params.replace(max_steps_in_episode=2)  # every episode is cut by the time limit
  obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(jax.random.key(1), 3),
                                                      params)
  action = jnp.asarray([0, 1, 2], jnp.int32)
  batch1, obs1, state1, done1 = ie.env_transition(env, params, jax.random.key(2), state, obs,
                                                  action)
  assert not bool(done1.any())
  np.testing.assert_array_equal(batch1.next_obs, obs1)
  batch2, obs2, _, done2 = ie.env_transition(env, params, jax.random.key(3), state1, obs1,
                                             action)
  assert bool(done2.all())                # truncated at the limit ...
  assert not bool(batch2.terminated.any())  # ... but not terminated: the target bootstraps
  # s' is the state the action reached (position moved by its velocity), not the reset one.
  np.testing.assert_allclose(batch2.next_obs[:, 0], obs1[:, 0] + batch2.next_obs[:, 1],
                             atol=1e-6)
  assert bool((jnp.abs(obs2[:, 1]) == 0).all())  # the reset observation has zero velocity
  y = ie.td_target(batch2.reward, batch2.terminated, jnp.ones((3, 3)), 0.99)
  np.testing.assert_allclose(y, -1.0 + 0.99, rtol=1e-6)


@pytest.mark.parametrize("depth,activation", [(0, "relu"), (1, "tanh"), (3, "elu"),
                                              (2, "linear")])
def test_q_network_shapes_and_forward_pass(depth, activation):
  params = ie.init_q_network(jax.random.key(0), 4, 3, depth, 7)
  assert len(params) == depth + 1
  assert params[0][0].shape == (4, 3 if depth == 0 else 7)
  assert params[-1][0].shape == ((4 if depth == 0 else 7), 3)
  obs = jax.random.normal(jax.random.key(1), (5, 4))
  q = ie.q_values(params, obs, activation)
  assert q.shape == (5, 3)
  act = {"relu": lambda x: np.maximum(x, 0), "tanh": np.tanh, "linear": lambda x: x,
         "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0)))}[activation]
  h = np.asarray(obs, np.float64)
  for w, b in params[:-1]:
    h = act(h @ np.asarray(w, np.float64) + np.asarray(b, np.float64))
  ref = h @ np.asarray(params[-1][0], np.float64) + np.asarray(params[-1][1], np.float64)
  np.testing.assert_allclose(q, ref, rtol=1e-4, atol=1e-5)
  # Every weight within PyTorch's default bound 1/sqrt(fan_in).
  for w, b in params:
    bound = 1 / np.sqrt(w.shape[0])
    assert float(jnp.abs(w).max()) <= bound and float(jnp.abs(b).max()) <= bound


def test_depth_zero_is_affine_and_linear_activation_is_affine():
  x, y = jax.random.normal(jax.random.key(2), (2, 6, 3))
  for depth, activation in ((0, "relu"), (2, "linear")):
    params = ie.init_q_network(jax.random.key(3), 3, 2, depth, 5)
    q = lambda o: ie.q_values(params, o, activation)  # noqa: E731
    # Affine: Q(a x + (1 - a) y) = a Q(x) + (1 - a) Q(y).
    np.testing.assert_allclose(q(0.3 * x + 0.7 * y), 0.3 * q(x) + 0.7 * q(y), atol=1e-5)
  params = ie.init_q_network(jax.random.key(3), 3, 2, 2, 5)
  q = lambda o: ie.q_values(params, o, "relu")  # noqa: E731
  assert float(jnp.abs(q(0.3 * x + 0.7 * y) - 0.3 * q(x) - 0.7 * q(y)).max()) > 1e-4


def test_greedy_action_is_the_argmax_and_epsilon_one_is_uniform():
  q = jax.random.normal(jax.random.key(0), (500, 4))
  a0 = ie.epsilon_greedy(jax.random.key(1), q, jnp.float32(0.0))
  np.testing.assert_array_equal(a0, np.argmax(np.asarray(q), axis=1))
  a1 = ie.epsilon_greedy(jax.random.key(1), jnp.zeros((4000, 4)).at[:, 2].set(9.0),
                         jnp.float32(1.0))
  np.testing.assert_allclose(np.bincount(np.asarray(a1), minlength=4) / 4000, 0.25, atol=0.03)
  a_half = ie.epsilon_greedy(jax.random.key(2), jnp.zeros((4000, 4)).at[:, 2].set(9.0),
                             jnp.float32(0.4))
  # P(argmax) = 1 - eps + eps / |A|.
  np.testing.assert_allclose(np.mean(np.asarray(a_half) == 2), 0.6 + 0.1, atol=0.03)


def test_epsilon_schedule_is_linear_then_flat():
  eps = [float(ie.epsilon_schedule(jnp.asarray(s), 1.0, 0.1, 100)) for s in (0, 50, 100, 500)]
  np.testing.assert_allclose(eps, [1.0, 0.55, 0.1, 0.1], rtol=1e-6)
  assert float(ie.epsilon_schedule(jnp.asarray(7), 0.3, 0.0, 0)) == pytest.approx(0.3)


@pytest.mark.parametrize("loss", ["huber", "squared"])
def test_dqn_loss_matches_a_reference_and_its_gradient_skips_the_target(loss):
  params = ie.init_q_network(jax.random.key(0), 2, 3, 1, 4)
  target = ie.init_q_network(jax.random.key(1), 2, 3, 1, 4)
  k = jax.random.split(jax.random.key(2), 3)
  batch = ie.Transitions(jax.random.normal(k[0], (6, 2)) * 3,
                         jnp.asarray([0, 1, 2, 0, 1, 2], jnp.int32),
                         jnp.asarray([-1.0, 1.0, 0.0, 2.0, -3.0, 0.5]),
                         jax.random.normal(k[1], (6, 2)),
                         jnp.asarray([False, True, False, False, True, False]))
  value = ie.dqn_loss(params, target, batch, 0.9, "tanh", loss)
  q = np.asarray(ie.q_values(params, batch.obs, "tanh"))[np.arange(6), np.asarray(batch.action)]
  nq = np.asarray(ie.q_values(target, batch.next_obs, "tanh")).max(axis=1)
  y = np.asarray(batch.reward) + 0.9 * (1 - np.asarray(batch.terminated)) * nq
  u = q - y
  ref = np.where(np.abs(u) <= 1, 0.5 * u ** 2, np.abs(u) - 0.5) if loss == "huber" else 0.5 * u ** 2
  np.testing.assert_allclose(value, ref.mean(), rtol=1e-5)
  # The target network gets no gradient (semi-gradient TD).
  g_target = jax.grad(lambda t: ie.dqn_loss(params, t, batch, 0.9, "tanh", loss))(target)
  assert all(float(jnp.abs(leaf).max()) == 0 for leaf in jax.tree.leaves(g_target))
  # The online gradient against central finite differences in one coordinate.
  g = jax.grad(ie.dqn_loss)(params, target, batch, 0.9, "tanh", loss)
  with jax.enable_x64(True):
    p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
    t64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), target)
    b64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64) if a.dtype == jnp.float32 else a,
                       batch)
    h = 1e-6

    def shifted(s):
      w, b = p64[0]
      return ie.dqn_loss([(w.at[1, 2].add(s), b)] + p64[1:], t64, b64, 0.9, "tanh", loss)
    fd = float((shifted(h) - shifted(-h)) / (2 * h))
  np.testing.assert_allclose(float(g[0][0][1, 2]), fd, rtol=1e-3, atol=1e-6)


def test_cell_index_and_distinct_counting_match_a_set():
  low, high = jnp.asarray([-1.0, 0.0]), jnp.asarray([1.0, 4.0])
  obs = jnp.asarray([[-1.0, 0.0], [0.99, 3.99], [5.0, -2.0], [0.0, 2.0], [-0.01, 1.99]])
  idx = ie.cell_index(obs, low, high, 4)
  # (i_0, i_1): (0, 0), (3, 3), (3, 0) clipped, (2, 2), (1, 1); index i_0 + 4 i_1.
  np.testing.assert_array_equal(idx, [0, 15, 3, 10, 5])
  rng = np.random.default_rng(0)
  visited, count, seen = jnp.zeros((16,), bool), jnp.int32(0), set()
  for _ in range(6):
    cells = rng.integers(0, 16, size=5)
    visited, count = ie.mark_visited(visited, count, jnp.asarray(cells, jnp.int32))
    seen |= set(cells.tolist())
    assert int(count) == len(seen) == int(visited.sum())


def test_learning_curve_matches_a_loop():
  rng = np.random.default_rng(0)
  done = rng.random((23, 2)) < 0.3
  done[::3, 0] = True  # every window ends some episode
  ret = np.where(done, rng.normal(size=(23, 2)), 0.0).astype(np.float32)
  metrics = {"episode_done": jnp.asarray(done), "episode_return": jnp.asarray(ret),
             "episode_success": jnp.asarray(done & (ret > 0)),
             "cells_visited": jnp.arange(23, dtype=jnp.int32)}
  curve = ie.learning_curve(metrics, 4)
  for b in range(4):
    rows = [t for t in range(23) if t * 4 // 23 == b]
    sel = done[rows]
    assert int(curve["episodes"][b]) == sel.sum() > 0
    np.testing.assert_allclose(curve["mean_return"][b], ret[rows][sel].mean(), rtol=1e-5)
    np.testing.assert_allclose(curve["success_rate"][b], (ret[rows][sel] > 0).mean(), rtol=1e-5)
    assert int(curve["cells_visited"][b]) == rows[-1]
  empty = ie.learning_curve({**metrics, "episode_done": jnp.zeros((23, 2), bool)}, 4)
  assert bool(jnp.isnan(empty["mean_return"]).all()) and int(empty["episodes"].sum()) == 0


_TINY = ie.DQNConfig(num_envs=2, total_steps=240, buffer_size=100, batch_size=8,
                     learning_starts=20, target_update_every=40, depth=1, width=8,
                     epsilon_start=0.3)


def test_vmap_over_seeds_and_epsilons_equals_separate_runs():
  train = ie.make_dqn("CartPole-v1", _TINY)
  keys = jax.random.split(jax.random.key(0), 2)
  hypers = ie.DQNHyperparams(jnp.asarray([0.0, 0.5]), jnp.asarray([0.0, 0.5]),
                             jnp.asarray([1e-3, 3e-3]))
  params_v, metrics_v = jax.jit(jax.vmap(train))(keys, hypers)
  single = jax.jit(train)
  for i in range(2):
    params_i, metrics_i = single(keys[i], jax.tree.map(lambda a: a[i], hypers))  # noqa: B023
    for a, b in zip(jax.tree.leaves(params_v), jax.tree.leaves(params_i)):
      np.testing.assert_allclose(a[i], b, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(metrics_v["episode_done"][i], metrics_i["episode_done"])
    np.testing.assert_allclose(metrics_v["episode_return"][i], metrics_i["episode_return"])
    np.testing.assert_array_equal(metrics_v["cells_visited"][i], metrics_i["cells_visited"])
  assert metrics_v["episode_done"].shape == (2, 120, 2)
  np.testing.assert_allclose(metrics_v["epsilon"][:, 0], [0.0, 0.5])
  # Bookkeeping: an episode's return is its length in CartPole (+1 per step), the loss is
  # zero before learning starts, and the visited-cell count never decreases.
  done = np.asarray(metrics_v["episode_done"])
  np.testing.assert_array_equal(np.asarray(metrics_v["episode_return"])[done],
                                np.asarray(metrics_v["episode_length"])[done])
  assert float(jnp.abs(metrics_v["loss"][:, :9]).max()) == 0.0
  assert float(jnp.abs(metrics_v["loss"][:, 10:]).min()) > 0.0
  assert bool((jnp.diff(metrics_v["cells_visited"], axis=1) >= 0).all())


def test_training_on_cartpole_improves_the_return():
  cfg = ie.DQNConfig(total_steps=12_000, buffer_size=10_000, learning_starts=500,
                     target_update_every=200, depth=1, width=64, epsilon_start=1.0,
                     epsilon_end=0.05, epsilon_anneal_steps=4_000)
  _, metrics = jax.jit(ie.make_dqn("CartPole-v1", cfg))(jax.random.key(0))
  done = np.asarray(metrics["episode_done"][:, 0])
  returns = np.asarray(metrics["episode_return"][:, 0])[done]
  first, last = returns[:20].mean(), returns[-10:].mean()
  assert last > 3 * first and last > 100, (first, last)


def test_bad_input_raises():
  with pytest.raises(ValueError, match="env='NoSuchEnv-v0'"):
    ie.make_dqn("NoSuchEnv-v0", _TINY)
  with pytest.raises(ValueError, match="discrete action space"):
    ie.make_dqn("Pendulum-v1", _TINY)
  bad = {"activation": "swish", "depth": -1, "epsilon_start": 1.5, "epsilon_end": -0.1,
         "gamma": 1.2, "learning_rate": 0.0, "tau": 0.0, "loss": "l1", "num_envs": 0,
         "batch_size": 1000, "cell_bins": 0, "max_grad_norm": -1.0}
  for name, value in bad.items():
    with pytest.raises(ValueError, match=name):
      dataclasses.replace(_TINY, **{name: value})
  with pytest.raises(ValueError, match="activation"):
    ie.q_values(ie.init_q_network(jax.random.key(0), 2, 2, 1, 3), jnp.zeros((1, 2)), "swish")
  with pytest.raises(ValueError, match="depth"):
    ie.init_q_network(jax.random.key(0), 2, 2, -1, 3)
  with pytest.raises(ValueError, match="cell_bins"):
    ie.make_dqn("Acrobot-v1", dataclasses.replace(_TINY, cell_bins=20))
  with pytest.raises(ValueError, match="num_bins"):
    ie.learning_curve({"episode_done": jnp.zeros((5, 1), bool)}, 6)
  with pytest.raises(ValueError, match="loss"):
    ie.dqn_loss([], [], None, 0.9, loss="l1")
