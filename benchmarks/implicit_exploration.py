"""Greedy deep nonlinear Q-learning explores: DQN on MountainCar, CartPole and Acrobot.

Paper: Dauparas, Tomioka, Hofmann, "Depth and nonlinearity induce implicit exploration for RL"
(2018, arXiv 1805.11711). Q-learning with a nonlinear Q-network and a purely greedy policy
(epsilon = 0) learns mountain car as well as or better than epsilon-greedy; a linear
Q-function does not, and both depth and the nonlinearity matter.

We train ``rl.make_dqn`` (one compiled ``lax.scan`` per network; seeds and the three
policies -- greedy, epsilon = 0.1 fixed, epsilon annealed 1 -> 0.05 -- vmapped in one program)
on gymnax's MountainCar-v0 (200-step episode limit), CartPole-v1 and Acrobot-v1 (500), with
Q-networks of depth 0 (linear), 1 and 2, ReLU and tanh, and a deep *linear* network (2 hidden
layers, identity activation) to separate depth from nonlinearity. Reported: mean return and
success rate over the episodes that end in the last 20% of training, the number of distinct
state-grid cells visited (the exploration measure), learning curves. Speed: environment steps
per second of the compiled DQN against the same DQN in NumPy on gymnasium's CartPole-v1 (the
loop users would otherwise write), and of purejaxrl's DQN design under our function.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _harness
from tomioka_jax import rl

PAPER = ("Dauparas, Tomioka, Hofmann 2018, Depth and nonlinearity induce implicit exploration "
         "for RL (arXiv 1805.11711)")
NAME = "implicit_exploration"

# Networks: (label, depth, activation). Policies: (label, epsilon_start, epsilon_end); the
# anneal length is shared (epsilon_anneal_steps), a fixed epsilon has start = end.
NETS = {"linear (depth 0)": (0, "linear"), "1x64 ReLU": (1, "relu"), "1x64 tanh": (1, "tanh"),
        "2x64 ReLU": (2, "relu"), "2x64 tanh": (2, "tanh"), "2x64 identity": (2, "linear")}
POLICIES = (("greedy", 0.0, 0.0), ("eps 0.1", 0.1, 0.1), ("eps 1->0.05", 1.0, 0.05))

CONFIGS = {
    # envs: env -> (total env steps per run, networks); seeds per (network, policy).
    "smoke": {"envs": {"MountainCar-v0": (2_000, ("linear (depth 0)", "2x64 ReLU"))},
              "seeds": 2, "learning_starts": 500, "bins": 10,
              "time_steps": 1_000, "numpy_steps": 300, "purejaxrl_steps": 2_000},
    "quick": {"envs": {"MountainCar-v0": (50_000, tuple(NETS)),
                       "CartPole-v1": (20_000, ("linear (depth 0)", "2x64 ReLU")),
                       "Acrobot-v1": (20_000, ("linear (depth 0)", "2x64 ReLU"))},
              "seeds": 3, "learning_starts": 1_000, "bins": 20,
              "time_steps": 20_000, "numpy_steps": 2_000, "purejaxrl_steps": 100_000},
    "full": {"envs": {"MountainCar-v0": (200_000, tuple(NETS)),
                      "CartPole-v1": (100_000, ("linear (depth 0)", "1x64 ReLU", "2x64 ReLU",
                                                "2x64 tanh")),
                      "Acrobot-v1": (100_000, ("linear (depth 0)", "1x64 ReLU", "2x64 ReLU",
                                               "2x64 tanh"))},
             "seeds": 16, "learning_starts": 1_000, "bins": 20,
             "time_steps": 20_000, "numpy_steps": 3_000, "purejaxrl_steps": 200_000},
}

DEEP = "2x64 ReLU"
LINEAR = "linear (depth 0)"
TOL_SUCCESS = 0.1  # "as well as": within 0.1 of the success rate
TOL_RETURN = 0.1  # ... or within 10% of the return range (episode limit)
PUREJAXRL_STEPS_PER_S = 48_000  # the measurement of purejaxrl's DQN, 2-core CPU

HEADLINE = (
    "({mode}): MountainCar-v0 with its 200-step limit, {seeds} seeds x {steps_mc} steps: "
    "greedy 2x64 ReLU DQN reaches the goal in {g_succ:.0%} of its late episodes (return "
    "{g_ret:.0f}) vs {e_succ:.0%} for the better epsilon-greedy ({e_ret:.0f}); linear greedy "
    "{l_succ:.0%}, deep linear greedy {dl_succ:.0%}; compiled DQN {speedup:.0f}x the env "
    "steps/s of the same DQN in NumPy on gymnasium")

NOTES = """\
Reconstructed setup (the paper's PDF was not available offline; its abstract and our notes give
the claim, not the hyperparameters): DQN with one environment per run and one Adam step
(lr 1e-3, batch 32, Huber loss, gradient clip 10) per environment step after {learning_starts}
steps, replay 5e4, hard target copy every 200 steps, gamma 0.99, PyTorch's default uniform
initialization (small initial Q-values, which are optimistic under MountainCar's -1 rewards),
observations scaled to [-1, 1] by the state bounds. Policies: greedy (epsilon = 0),
epsilon = 0.1 fixed, and epsilon annealed 1 -> 0.05 over the first 10% of steps; "eps-greedy"
in the claims is the better of the two. Episode limits (gymnax defaults, bootstrapped through
by the TD target, which masks only true terminations): {limits}. Late statistics are over the
episodes ending in the last 20% of each run; success is reaching the goal (MountainCar,
Acrobot) or lasting to the limit (CartPole). Distinct cells: a grid of 20x20 (MountainCar),
10^4 (CartPole) and 6^6 (Acrobot) cells over the state bounds, counted on every state
reached. Each network is one compiled program; its {runs} runs ({seeds} seeds x 3 policies)
are vmapped. Speed: env steps/s of our default DQN (one seed) vs the same algorithm written in
NumPy (manual backprop, Adam) stepping gymnasium's CartPole-v1; compilation reported apart.
purejaxrl's design (10 envs, batch 128 every 10 vector steps, buffer 1e4, target every 500)
under our function: {pj_rate:.0f} env steps/s single seed. This run's JAX backend: {backend}
(the full record was run on one GPU, as one script of the session's device time; the quick
record on the 2-core CPU)."""


def _hyper(config: dict, policies=POLICIES) -> rl.DQNHyperparams:
  seeds = config["seeds"]
  starts = np.repeat([p[1] for p in policies], seeds).astype(np.float32)
  ends = np.repeat([p[2] for p in policies], seeds).astype(np.float32)
  return rl.DQNHyperparams(jnp.asarray(starts), jnp.asarray(ends),
                           jnp.full(starts.shape, 1e-3, jnp.float32))


def _dqn_config(total_steps: int, depth: int, activation: str, config: dict) -> rl.DQNConfig:
  return rl.DQNConfig(total_steps=total_steps, depth=depth, activation=activation,
                      learning_starts=config["learning_starts"],
                      epsilon_anneal_steps=max(total_steps // 10, 1))


def _run_net(env_name: str, steps: int, depth: int, activation: str, net: str, config: dict,
             policies=POLICIES) -> list[dict]:
  """One network: its seeds x ``policies`` in one vmapped program; a run dict per policy.

  Seeds are the full sweep's: policy ``p`` of :data:`POLICIES` trains from keys
  ``p * seeds .. (p + 1) * seeds - 1`` of ``split(key(0), 3 * seeds)``, whichever subset runs.
  """
  seeds, bins = config["seeds"], config["bins"]
  train = rl.make_dqn(env_name, _dqn_config(steps, depth, activation, config))

  def run(keys, hyper):
    _, metrics = jax.vmap(train)(keys, hyper)
    curve = jax.vmap(lambda m: rl.learning_curve(m, bins))(metrics)
    late = jax.vmap(lambda m: rl.learning_curve(m, 5))(metrics)
    return curve, late
  all_keys = jax.random.split(jax.random.key(0), len(POLICIES) * seeds)
  index = np.concatenate([np.arange(seeds) + POLICIES.index(p) * seeds for p in policies])
  t0 = time.perf_counter()
  curve, late = jax.block_until_ready(jax.jit(run)(all_keys[index], _hyper(config, policies)))
  wall = time.perf_counter() - t0
  runs = []
  for p, (policy, _, _) in enumerate(policies):
    sel = slice(p * seeds, (p + 1) * seeds)
    runs.append({
        "env": env_name, "net": net, "policy": policy, "steps": steps,
        "curve_return": np.asarray(curve["mean_return"][sel]),
        "curve_success": np.asarray(curve["success_rate"][sel]),
        "curve_cells": np.asarray(curve["cells_visited"][sel]),
        "late_return": np.asarray(late["mean_return"][sel, -1]),
        "late_success": np.asarray(late["success_rate"][sel, -1]),
        "cells": np.asarray(late["cells_visited"][sel, -1]),
        "episodes": np.asarray(jnp.sum(late["episodes"][sel], axis=1)),
        "wall_s": wall})
  return runs


def experiment(config: dict) -> dict:
  """Every (env, network): seeds x policies in one vmapped program; curves and late stats."""
  import gymnax  # pylint: disable=g-import-not-at-top
  runs = []
  limits = {}
  for env_name, (steps, nets) in config["envs"].items():
    limits[env_name] = int(gymnax.make(env_name)[1].max_steps_in_episode)
    for net in nets:
      depth, activation = NETS[net]
      runs += _run_net(env_name, steps, depth, activation, net, config)
  return {"runs": runs, "limits": limits}


# ------------------------------------------------------------------------------------------
# Timings: our compiled DQN vs a NumPy DQN on gymnasium


class _NumpyDQN:
  """The same DQN in NumPy: 2x64 ReLU MLP, manual backprop, Adam, Huber, hard target copy."""

  def __init__(self, obs_dim: int, num_actions: int, seed: int = 0, width: int = 64,
               lr: float = 1e-3, gamma: float = 0.99, buffer: int = 50_000, batch: int = 32):
    self.rng = np.random.default_rng(seed)
    sizes = [obs_dim, width, width, num_actions]
    self.params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
      bound = 1 / np.sqrt(fan_in)
      self.params += [self.rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32),
                      self.rng.uniform(-bound, bound, fan_out).astype(np.float32)]
    self.target = [p.copy() for p in self.params]
    self.m = [np.zeros_like(p) for p in self.params]
    self.v = [np.zeros_like(p) for p in self.params]
    self.t, self.lr, self.gamma, self.batch = 0, lr, gamma, batch
    self.obs = np.zeros((buffer, obs_dim), np.float32)
    self.next_obs = np.zeros((buffer, obs_dim), np.float32)
    self.act = np.zeros(buffer, np.int64)
    self.rew = np.zeros(buffer, np.float32)
    self.term = np.zeros(buffer, np.float32)
    self.pos = self.size = 0

  @staticmethod
  def forward(params, x):
    w1, b1, w2, b2, w3, b3 = params
    h1 = np.maximum(x @ w1 + b1, 0)
    h2 = np.maximum(h1 @ w2 + b2, 0)
    return h1, h2, h2 @ w3 + b3

  def add(self, s, a, r, s2, term):
    i = self.pos
    self.obs[i], self.act[i], self.rew[i], self.next_obs[i], self.term[i] = s, a, r, s2, term
    self.pos = (i + 1) % len(self.act)
    self.size = min(self.size + 1, len(self.act))

  def update(self):
    idx = self.rng.integers(0, self.size, self.batch)
    s, a, r, s2, d = self.obs[idx], self.act[idx], self.rew[idx], self.next_obs[idx], self.term[idx]
    y = r + self.gamma * (1 - d) * self.forward(self.target, s2)[2].max(axis=1)
    h1, h2, q = self.forward(self.params, s)
    u = q[np.arange(self.batch), a] - y
    dq = np.zeros_like(q)
    dq[np.arange(self.batch), a] = np.clip(u, -1, 1) / self.batch  # Huber'(u) / batch
    w1, _, w2, _, w3, _ = self.params
    dh2 = (dq @ w3.T) * (h2 > 0)
    dh1 = (dh2 @ w2.T) * (h1 > 0)
    grads = [s.T @ dh1, dh1.sum(0), h1.T @ dh2, dh2.sum(0), h2.T @ dq, dq.sum(0)]
    self.t += 1
    for i, g in enumerate(grads):
      self.m[i] = 0.9 * self.m[i] + 0.1 * g
      self.v[i] = 0.999 * self.v[i] + 0.001 * g * g
      mhat = self.m[i] / (1 - 0.9 ** self.t)
      vhat = self.v[i] / (1 - 0.999 ** self.t)
      self.params[i] -= self.lr * mhat / (np.sqrt(vhat) + 1e-8)


def _numpy_dqn_run(steps: int, learning_starts: int) -> float:
  """Runs the NumPy DQN for ``steps`` env steps on gymnasium's CartPole-v1; returns seconds."""
  import gymnasium  # pylint: disable=g-import-not-at-top
  env = gymnasium.make("CartPole-v1")
  agent = _NumpyDQN(4, 2)
  obs, _ = env.reset(seed=0)
  t0 = time.perf_counter()
  for t in range(steps):
    q = agent.forward(agent.params, obs[None].astype(np.float32))[2][0]
    action = int(np.argmax(q)) if agent.rng.random() >= 0.1 else int(agent.rng.integers(2))
    obs2, reward, terminated, truncated, _ = env.step(action)
    agent.add(obs, action, reward, obs2, float(terminated))
    obs = obs2
    if terminated or truncated:
      obs, _ = env.reset()
    if t + 1 >= learning_starts:
      agent.update()
    if (t + 1) % 200 == 0:
      agent.target = [p.copy() for p in agent.params]
  return time.perf_counter() - t0


def timings(config: dict) -> dict:
  """Env steps/s: our DQN (1 seed, and 16 seeds vmapped), NumPy's, purejaxrl's design."""
  steps = config["time_steps"]
  cfg = rl.DQNConfig(total_steps=steps, learning_starts=config["learning_starts"],
                     epsilon_start=0.1)
  train = jax.jit(rl.make_dqn("CartPole-v1", cfg))
  ours = _harness.timeit(lambda: train(jax.random.key(1)), repeats=3)
  keys = jax.random.split(jax.random.key(2), 16)
  train16 = jax.jit(jax.vmap(rl.make_dqn("CartPole-v1", cfg)))
  ours16 = _harness.timeit(lambda: train16(keys), repeats=1)
  n_np = config["numpy_steps"]
  learn_np = min(config["learning_starts"], n_np // 2)
  numpy_s = _numpy_dqn_run(n_np, learn_np)
  numpy_pre_s = _numpy_dqn_run(learn_np, learn_np + 1)  # the steps before learning starts
  pj_cfg = rl.DQNConfig(num_envs=10, total_steps=config["purejaxrl_steps"], buffer_size=10_000,
                        batch_size=128, learning_starts=10_000, train_every=10,
                        target_update_every=500, learning_rate=2.5e-4, epsilon_start=1.0,
                        epsilon_end=0.05, epsilon_anneal_steps=config["purejaxrl_steps"] // 2)
  pj = jax.jit(rl.make_dqn("CartPole-v1", pj_cfg))
  pj_t = _harness.timeit(lambda: pj(jax.random.key(3)), repeats=3)
  learning = steps - config["learning_starts"]
  return {"backend": jax.default_backend(), "steps": steps, "ours": ours.as_dict(), "ours16": ours16.as_dict(),
          "numpy_steps": n_np, "numpy_learn_from": learn_np, "numpy_s": numpy_s,
          "numpy_pre_s": numpy_pre_s, "learning_steps": learning,
          "purejaxrl_steps": config["purejaxrl_steps"], "purejaxrl": pj_t.as_dict()}


def _rates(times: dict) -> dict:
  """Env steps/s of the learning phase (every step takes a gradient step)."""
  ours = times["steps"] / times["ours"]["median_s"]
  ours16 = 16 * times["steps"] / times["ours16"]["median_s"]
  learn_np = times["numpy_steps"] - times["numpy_learn_from"] + 1
  numpy_rate = learn_np / max(times["numpy_s"] - times["numpy_pre_s"], 1e-9)
  pj = times["purejaxrl_steps"] / times["purejaxrl"]["median_s"]
  return {"ours": ours, "ours16": ours16, "numpy": numpy_rate, "pj": pj}


# ------------------------------------------------------------------------------------------
# Claims and report


def _find(exp: dict, env: str, net: str, policy: str) -> dict | None:
  for r in exp["runs"]:
    if (r["env"], r["net"], r["policy"]) == (env, net, policy):
      return r
  return None


def _mean(x) -> float:
  x = np.asarray(x, float)
  return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def _best_eps(exp: dict, env: str, net: str, key: str) -> tuple[float, str]:
  vals = [(_mean(r[key]), r["policy"]) for p in POLICIES[1:]
          if (r := _find(exp, env, net, p[0])) is not None]
  return max(vals, key=lambda v: -np.inf if np.isnan(v[0]) else v[0])


def _not_run(claim: str, paper: str, what: str) -> _harness.Claim:
  return _harness.Claim(claim, paper, "not run", None, reason=f"this mode does not run {what}",
                        judged=False)


def claims(config: dict, exp: dict, times: dict) -> list[_harness.Claim]:
  mc = "MountainCar-v0"
  out = []
  g = _find(exp, mc, DEEP, "greedy")
  text = ("MountainCar-v0 (200-step limit): greedy (epsilon = 0) 2x64 ReLU DQN reaches the goal "
          "as often as epsilon-greedy (within 0.1, last 20% of training)")
  g_s, g_r = _mean(g["late_success"]), _mean(g["late_return"])
  e_s, e_pol = _best_eps(exp, mc, DEEP, "late_success")
  e_r = _mean(_find(exp, mc, DEEP, e_pol)["late_return"])
  holds = bool(g_s >= e_s - TOL_SUCCESS)
  out.append(_harness.Claim(
      text, "greedy as good or better", f"success {g_s:.2f} (return {g_r:.0f}) vs {e_s:.2f} "
      f"({e_pol}, return {e_r:.0f})", holds,
      reason="" if holds else f"greedy success {g_s:.2f} < {e_s:.2f} - {TOL_SUCCESS}"))
  lin = _find(exp, mc, LINEAR, "greedy")
  l_s = _mean(lin["late_success"])
  holds = bool(l_s <= TOL_SUCCESS < g_s)
  out.append(_harness.Claim(
      "MountainCar-v0: linear greedy Q-learning fails (success <= 0.1) where the deep ReLU "
      "net succeeds", "linear greedy fails",
      f"linear {l_s:.2f} (cells {_mean(lin['cells']):.0f}) vs 2x64 ReLU {g_s:.2f} (cells "
      f"{_mean(g['cells']):.0f})", holds,
      reason="" if holds else f"linear {l_s:.2f}, deep ReLU {g_s:.2f}"))
  text = ("MountainCar-v0: nonlinearity is needed: a deep linear net (2x64, identity) greedy "
          "fails (success <= 0.1)")
  dl = _find(exp, mc, "2x64 identity", "greedy")
  if dl is None:
    out.append(_not_run(text, "both depth and nonlinearity needed", "the deep linear net"))
  else:
    d_s = _mean(dl["late_success"])
    holds = bool(d_s <= TOL_SUCCESS)
    out.append(_harness.Claim(text, "both depth and nonlinearity needed",
                              f"success {d_s:.2f} (cells {_mean(dl['cells']):.0f})", holds,
                              reason="" if holds else f"deep linear greedy success {d_s:.2f}"))
  text = ("MountainCar-v0: depth helps greedy exploration: 2 hidden ReLU layers succeed at "
          "least as often as 1 (within 0.1), both more than depth 0")
  d1 = _find(exp, mc, "1x64 ReLU", "greedy")
  if d1 is None:
    out.append(_not_run(text, "depth needed", "the 1-layer net"))
  else:
    s1 = _mean(d1["late_success"])
    holds = bool(g_s >= s1 - TOL_SUCCESS and min(g_s, s1) > l_s)
    out.append(_harness.Claim(text, "depth needed",
                              f"depth 0/1/2: {l_s:.2f} / {s1:.2f} / {g_s:.2f}", holds,
                              reason="" if holds else f"depth 0/1/2 success {l_s:.2f}/{s1:.2f}/"
                              f"{g_s:.2f}"))
  for env in ("CartPole-v1", "Acrobot-v1"):
    text = (f"{env}: greedy 2x64 ReLU DQN's late return is within 10% of the episode limit of "
            "epsilon-greedy's")
    g_env = _find(exp, env, DEEP, "greedy")
    if g_env is None:
      out.append(_not_run(text, "greedy as good or better", env))
      continue
    gr = _mean(g_env["late_return"])
    er, pol = _best_eps(exp, env, DEEP, "late_return")
    limit = exp["limits"][env]
    holds = bool(gr >= er - TOL_RETURN * limit)
    out.append(_harness.Claim(text, "greedy as good or better",
                              f"{gr:.0f} vs {er:.0f} ({pol}); linear greedy "
                              f"{_mean(_find(exp, env, LINEAR, 'greedy')['late_return']):.0f}",
                              holds, reason="" if holds else f"greedy {gr:.0f} < {er:.0f} - "
                              f"{TOL_RETURN * limit:.0f}"))
  rates = _rates(times)
  holds = bool(rates["ours"] > rates["numpy"])
  out.append(_harness.Claim(
      "compiled DQN vs the same DQN in NumPy on gymnasium CartPole-v1: env steps/s while "
      "learning (1 seed, a gradient step per env step)", "baseline",
      f"{rates['ours']:.0f} vs {rates['numpy']:.0f} ({rates['ours'] / rates['numpy']:.1f}x); "
      f"16 seeds vmapped: {rates['ours16']:.0f} (JAX on {times['backend']})", holds,
      reason="" if holds else "slower than NumPy"))
  holds = bool(rates["pj"] >= PUREJAXRL_STEPS_PER_S)
  on_cpu = times["backend"] == "cpu"
  out.append(_harness.Claim(
      "purejaxrl's DQN design (10 envs, batch 128 every 10 vector steps) under make_dqn, "
      "CartPole-v1, one seed, CPU: at least purejaxrl's 48k env steps/s", ">= 48000",
      f"{rates['pj']:.0f} env steps/s ({times['backend']})", holds,
      reason=(f"timed on {times['backend']}; the 48k reference is a 2-core CPU" if not on_cpu
              else "" if holds else f"{rates['pj']:.0f} < {PUREJAXRL_STEPS_PER_S}"),
      judged=on_cpu))
  return out


def report(config: dict, exp: dict, times: dict) -> _harness.Report:
  rows = []
  for r in exp["runs"]:
    rows.append((r["env"], exp["limits"][r["env"]], r["net"], r["policy"], r["steps"],
                 _mean(r["late_return"]), float(np.nanstd(r["late_return"])),
                 _mean(r["late_success"]), _mean(r["cells"]), _mean(r["episodes"])))
  rates = _rates(times)
  tables = [
      "## Late performance (episodes ending in the last 20% of training; mean and sd over "
      f"{config['seeds']} seeds)\n\n" + _harness.markdown_table(
          ["env", "episode limit", "Q-network", "policy", "env steps", "return", "sd",
           "success", "distinct cells", "episodes"], rows),
      "## Speed (CartPole-v1, env steps per second while learning)\n\n" +
      _harness.markdown_table(
          ["implementation", "env steps/s", "compile s"],
          [("tomioka_jax make_dqn, 1 seed (jit)", rates["ours"], times["ours"]["compile_s"]),
           ("tomioka_jax make_dqn, 16 seeds vmapped (total)", rates["ours16"],
            times["ours16"]["compile_s"]),
           ("NumPy DQN on gymnasium, 1 seed", rates["numpy"], 0.0),
           ("make_dqn with purejaxrl's design (10 envs, update every 10), 1 seed", rates["pj"],
            times["purejaxrl"]["compile_s"])]),
  ]
  mc = "MountainCar-v0"
  g = _find(exp, mc, DEEP, "greedy")
  e_s, e_pol = _best_eps(exp, mc, DEEP, "late_success")
  dl = _find(exp, mc, "2x64 identity", "greedy")
  limits = ", ".join(f"{k} {v}" for k, v in exp["limits"].items())
  return _harness.Report(
      tables=tables, figure=_figure(exp, config),
      notes=NOTES.format(learning_starts=config["learning_starts"], limits=limits,
                         runs=len(POLICIES) * config["seeds"], seeds=config["seeds"],
                         pj_rate=rates["pj"], backend=times["backend"]),
      headline=HEADLINE.format(
          mode=config["mode"], seeds=config["seeds"], steps_mc=config["envs"][mc][0],
          g_succ=_mean(g["late_success"]), g_ret=_mean(g["late_return"]), e_succ=e_s,
          e_ret=_mean(_find(exp, mc, DEEP, e_pol)["late_return"]),
          l_succ=_mean(_find(exp, mc, LINEAR, "greedy")["late_success"]),
          dl_succ=float("nan") if dl is None else _mean(dl["late_success"]),
          speedup=rates["ours"] / rates["numpy"]))


def _figure(exp: dict, config: dict):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  panels = [(env, "curve_return", "return") for env in config["envs"]]
  panels.insert(1, ("MountainCar-v0", "curve_cells", "distinct cells visited"))
  fig, axes = plt.subplots(len(panels), len(POLICIES), figsize=(4.2 * len(POLICIES),
                                                                  3.0 * len(panels)),
                           squeeze=False, sharey="row")
  colors = dict(zip(NETS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
  for i, (env, key, ylabel) in enumerate(panels):
    for j, (policy, _, _) in enumerate(POLICIES):
      ax = axes[i, j]
      for net in config["envs"][env][1]:
        r = _find(exp, env, net, policy)
        y = np.asarray(r[key], float)
        x = (np.arange(y.shape[1]) + 1) * r["steps"] / y.shape[1]
        with np.errstate(all="ignore"):
          mean, sd = np.nanmean(y, axis=0), np.nanstd(y, axis=0)
        ax.plot(x, mean, color=colors[net], label=net)
        ax.fill_between(x, mean - sd, mean + sd, color=colors[net], alpha=0.15)
      ax.set_title(f"{env}, {policy}", fontsize=9)
      ax.set_xlabel("env steps")
      if j == 0:
        ax.set_ylabel(ylabel)
    axes[i, 0].legend(fontsize=7)
  fig.suptitle(f"DQN learning curves, mean +- sd over {config['seeds']} seeds", fontsize=10)
  fig.tight_layout()
  return fig


# ------------------------------------------------------------------------------------------
# Depth 3: the full record's MountainCar sweep extended to three hidden layers, run in chunks
#
#   python -m benchmarks.implicit_exploration --depth3 relu --parts DIR   (one per activation)
#   python -m benchmarks.implicit_exploration --depth3-report --parts DIR [--results-dir D]
#
# Each chunk is one activation's cells (greedy and epsilon = 0.1, 16 seeds each) in one
# vmapped program; the report reads the chunks and the full record (depths 0-2, run on the
# GPU: results/gpu/implicit_exploration.json) and writes results/implicit_exploration_depth3.*.

DEPTH3_NAME = "implicit_exploration_depth3"
DEPTH3 = {"env": "MountainCar-v0", "steps": 200_000, "seeds": 16, "learning_starts": 1_000,
          "bins": 20, "depth": 3, "activations": ("relu", "tanh", "linear"),
          "policies": ("greedy", "eps 0.1")}
ACTIVATION_LABELS = {"relu": "ReLU", "tanh": "tanh", "linear": "identity"}
SHALLOW_NETS = {(0, "relu"): LINEAR, (0, "tanh"): LINEAR, (0, "linear"): LINEAR,
                (1, "relu"): "1x64 ReLU", (1, "tanh"): "1x64 tanh",
                (2, "relu"): "2x64 ReLU", (2, "tanh"): "2x64 tanh", (2, "linear"): "2x64 identity"}

DEPTH3_NOTES = """\
The full record's MountainCar-v0 sweep (200-step limit, {steps} env steps per run, {seeds}
seeds, the same DQN hyperparameters and seeds: see implicit_exploration.md) extended to three
hidden layers of 64 units, for ReLU, tanh and identity activations, greedy (epsilon = 0) and
epsilon = 0.1 fixed (the better epsilon-greedy schedule for the two-layer nets in the full
record; the annealed 1 -> 0.05 schedule was not run at depth 3). Depths 0-2 are the full record's
numbers (run on one GPU, {shallow_date}); depth 3 ran here on the {backend} in {chunks} chunks,
one activation ({runs} runs vmapped) per chunk: {chunk_times}. The same code on another
backend draws the same seeds but rounds differently, so single runs differ; the comparison is
between seed means. Depth 0 has no activation: its row is repeated for each; the full record
has no 1x64 identity net."""


def depth3_net(activation: str) -> str:
  return f"{DEPTH3['depth']}x64 {ACTIVATION_LABELS[activation]}"


def depth3_part(activation: str, config: dict = DEPTH3) -> dict:
  """One activation's depth-3 cells (greedy and epsilon = 0.1): plain data, as experiment's."""
  if activation not in config["activations"]:
    raise ValueError(f"activation={activation!r}; allowed: {config['activations']}")
  policies = tuple(p for p in POLICIES if p[0] in config["policies"])
  t0 = time.perf_counter()
  runs = _run_net(config["env"], config["steps"], config["depth"], activation,
                  depth3_net(activation), config, policies)
  return {"activation": activation, "runs": runs, "backend": jax.default_backend(),
          "elapsed_s": time.perf_counter() - t0}


def _depth_grid(parts: list[dict], full: dict) -> dict:
  """(activation, depth, policy) -> run dict, depths 0-2 from the full record, 3 from parts."""
  grid = {}
  for (depth, act), net in SHALLOW_NETS.items():
    for policy in DEPTH3["policies"]:
      grid[(act, depth, policy)] = _find(full, DEPTH3["env"], net, policy)
  for part in parts:
    for r in part["runs"]:
      grid[(part["activation"], DEPTH3["depth"], r["policy"])] = r
  return grid


def depth3_claims(parts: list[dict], full: dict) -> list[_harness.Claim]:
  grid = _depth_grid(parts, full)
  done = {p["activation"] for p in parts}
  out = []
  for act in ("relu", "tanh"):
    text = (f"MountainCar-v0, 3x64 {ACTIVATION_LABELS[act]}: greedy (epsilon = 0) reaches the "
            "goal as often as epsilon = 0.1 (within 0.1, last 20% of training)")
    if act not in done:
      out.append(_not_run(text, "greedy as good or better", f"the 3x64 {act} net"))
      continue
    g, e = grid[(act, 3, "greedy")], grid[(act, 3, "eps 0.1")]
    gs, es = _mean(g["late_success"]), _mean(e["late_success"])
    holds = bool(gs >= es - TOL_SUCCESS)
    out.append(_harness.Claim(
        text, "greedy as good or better", f"success {gs:.2f} (return "
        f"{_mean(g['late_return']):.0f}) vs {es:.2f} ({_mean(e['late_return']):.0f})", holds,
        reason="" if holds else f"greedy {gs:.2f} < {es:.2f} - {TOL_SUCCESS}"))
  text = ("MountainCar-v0: nonlinearity is needed at depth 3 too: a 3x64 identity net greedy "
          "fails (success <= 0.1)")
  if "linear" not in done:
    out.append(_not_run(text, "both depth and nonlinearity needed", "the 3x64 identity net"))
  else:
    s = _mean(grid[("linear", 3, "greedy")]["late_success"])
    out.append(_harness.Claim(text, "both depth and nonlinearity needed", f"success {s:.2f}",
                              bool(s <= TOL_SUCCESS),
                              reason="" if s <= TOL_SUCCESS else f"success {s:.2f}"))
  for act in ("relu", "tanh"):
    text = (f"MountainCar-v0, {ACTIVATION_LABELS[act]} greedy: depth helps, success at "
            "depth 3 at least depth 2's and depth 1's (within 0.1)")
    if act not in done:
      out.append(_not_run(text, "depth needed", f"the 3x64 {act} net"))
      continue
    s = [_mean(grid[(act, d, "greedy")]["late_success"]) for d in range(4)]
    holds = bool(s[3] >= max(s[1], s[2]) - TOL_SUCCESS)
    shown = " / ".join(f"{v:.2f}" for v in s)
    out.append(_harness.Claim(text, "depth needed", f"depth 0/1/2/3: {shown}", holds,
                              reason="" if holds else f"depth 0/1/2/3 success {shown}"))
  return out


def depth3_report(parts: list[dict], full: dict, full_date: str,
                  config: dict = DEPTH3) -> _harness.Report:
  grid = _depth_grid(parts, full)
  rows = []
  for act in DEPTH3["activations"]:
    for depth in range(4):
      for policy in DEPTH3["policies"]:
        r = grid.get((act, depth, policy))
        if r is None:
          continue
        rows.append((ACTIVATION_LABELS[act], depth, r["net"], policy,
                     "full record (GPU)" if depth < 3 else "this run",
                     _mean(r["late_return"]), float(np.nanstd(np.asarray(r["late_return"],
                                                                         float))),
                     _mean(r["late_success"]), _mean(r["cells"]), _mean(r["episodes"])))
  tables = ["## MountainCar-v0 by depth and activation (episodes ending in the last 20% of "
            f"training; mean and sd over {config['seeds']} seeds)\n\n" +
            _harness.markdown_table(["activation", "depth", "Q-network", "policy", "source",
                                     "return", "sd", "success", "distinct cells", "episodes"],
                                    rows)]
  notes = DEPTH3_NOTES.format(
      steps=config["steps"], seeds=config["seeds"], shallow_date=full_date,
      backend=", ".join(sorted({p["backend"] for p in parts})) or "-", chunks=len(parts),
      runs=len(DEPTH3["policies"]) * DEPTH3["seeds"],
      chunk_times=", ".join(f"{p['activation']} {p['elapsed_s']:.0f} s (compile included)"
                            for p in parts) or "none")
  return _harness.Report(tables=tables, figure=_depth3_figure(grid, config), notes=notes)


def _depth3_figure(grid: dict, config: dict):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
  colours = {"relu": "tab:blue", "tanh": "tab:orange", "linear": "tab:gray"}
  styles = {"greedy": "-o", "eps 0.1": "--s"}
  for ax, (key, label) in zip(axes, (("late_success", "success rate (late episodes)"),
                                     ("late_return", "return (late episodes)"))):
    for act in DEPTH3["activations"]:
      for policy in DEPTH3["policies"]:
        pts = [(d, grid[(act, d, policy)]) for d in range(4) if (act, d, policy) in grid]
        if not pts:
          continue
        x = np.array([d for d, _ in pts])
        vals = [np.asarray(r[key], float) for _, r in pts]
        mean = np.array([np.nanmean(v) for v in vals])
        sem = np.array([np.nanstd(v) / np.sqrt(max(np.isfinite(v).sum(), 1)) for v in vals])
        ax.errorbar(x + (0.04 if policy != "greedy" else -0.04), mean, yerr=sem,
                    fmt=styles[policy], color=colours[act], capsize=2, ms=4,
                    label=f"{ACTIVATION_LABELS[act]}, {policy}")
    ax.set_xticks(range(4))
    ax.set_xlabel("hidden layers (depth 3: this run; 0-2: full record)")
    ax.set_ylabel(label)
  axes[0].legend(fontsize=7)
  fig.suptitle(f"MountainCar-v0 (200-step limit), {config['steps']} env steps at depth 3, "
               f"mean +- s.e. over {config['seeds']} seeds", fontsize=10)
  fig.tight_layout()
  return fig


def _depth3_main(argv: list[str] | None = None) -> int:
  import argparse  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(prog="python -m benchmarks.implicit_exploration",
                                   description="the depth-3 extension of the full record")
  parser.add_argument("--depth3", choices=DEPTH3["activations"],
                      help="run one activation's depth-3 cells into --parts")
  parser.add_argument("--depth3-report", action="store_true",
                      help="write results/implicit_exploration_depth3.* from --parts")
  parser.add_argument("--parts", type=pathlib.Path, required=True,
                      help="folder of the chunks (one ACTIVATION.json each)")
  parser.add_argument("--steps", type=int, default=None,
                      help="env steps per run (default: the full record's; for a timing probe)")
  parser.add_argument("--results-dir", type=pathlib.Path, default=_harness.RESULTS_DIR)
  args = parser.parse_args(argv)
  if bool(args.depth3) == args.depth3_report:
    parser.error("give exactly one of --depth3 ACTIVATION and --depth3-report")
  if args.depth3:
    config = DEPTH3 if args.steps is None else {**DEPTH3, "steps": args.steps}
    part = depth3_part(args.depth3, config)
    args.parts.mkdir(parents=True, exist_ok=True)
    path = args.parts / f"{args.depth3}.json"
    path.write_text(json.dumps(_harness.to_jsonable({**part, "config": config})) + "\n")
    print(f"{args.depth3}: {part['elapsed_s']:.0f} s -> {path}")
    return 0
  parts = [json.loads(p.read_text()) for p in sorted(args.parts.glob("*.json"))]
  if not parts:
    parser.error(f"no chunks in {args.parts}")
  config = parts[0]["config"]
  if any(p["config"] != config for p in parts):
    parser.error("the chunks ran different configs")
  if config != _harness.to_jsonable(DEPTH3) and args.results_dir == _harness.RESULTS_DIR:
    parser.error(f"the chunks ran a probe config ({config}); write its report elsewhere")
  shallow = json.loads((_harness.RESULTS_DIR / "gpu" / f"{NAME}.json").read_text())
  full = shallow["data"]["experiment"]
  rep = depth3_report(parts, full, shallow["date"], config)
  result = _harness.Result(
      name=DEPTH3_NAME, paper=PAPER, claims=depth3_claims(parts, full), tables=rep.tables,
      figure=rep.figure, notes=rep.notes,
      data={"config": config, "parts": parts, "shallow_record": f"gpu/{NAME}.json",
            "shallow_date": shallow["date"]})
  paths = _harness.write_result(result, args.results_dir, mode="full",
                                elapsed_s=sum(p["elapsed_s"] for p in parts))
  print("wrote", ", ".join(str(v) for v in paths.values()))
  return 0


if __name__ == "__main__":
  import sys  # pylint: disable=g-import-not-at-top
  sys.exit(_depth3_main())
