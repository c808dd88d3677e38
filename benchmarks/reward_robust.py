"""Regularized policies are reward robust: the exact tabular identities and the adversarial reward.

Paper: Husain, Ciosek, Tomioka, "Regularized Policies are Reward Robust" (AISTATS 2021, arXiv
2101.07012). By Fenchel duality the KL-regularized optimum ``max_{d in D} <r, d> - Omega(d)`` is
an ordinary RL optimum under the worst-case reward ``r' = r - Delta*``; for the policy KL to
``pi0`` at strength ``lam``, ``Delta* = lam log(pi* / pi0)``, chosen from the set
``{sum_a pi0 exp(Delta / lam) <= 1}``. The paper is a theory paper; what we reproduce are its
identities, exactly (float64, to 1e-6), on an 8x8 gridworld (gamma 0.9, lam in {0.1, 0.5, 1})
and on random MDPs, and its picture: heat maps of the adversarial perturbation on the gridworld.

Identities checked (max abs residual over every lam and MDP):
(a) soft Bellman optimality of soft value iteration's fixed point;
(b) indifference: under ``r'`` every policy (uniform, random, deterministic, ``pi*``) has value
    ``v_soft``;
(c) the occupancy LP's primal and dual (HiGHS) agree with value iteration; the regularized
    primal and dual agree (zero gap, feasible);
(d) the adversary's constraint is tight at ``Delta*`` in every state;
(e) ``pi*`` is optimal for the unregularized MDP with reward ``r'`` (LP value = soft value);
(f) minimax: for random feasible ``Delta`` the value of ``pi*`` under ``r - Delta`` is at least
    the regularized optimum; and the same game for a regularizer on ``d`` itself (occupancy KL),
    where the adversary pays ``Omega*(Delta)`` (Fenchel-Young, zero gap, indifference).

Speed: our jitted soft value iteration vmapped over many random MDPs against a NumPy loop of
the same backups, MDP by MDP; ``scipy.optimize.linprog`` (HiGHS) on the unregularized LP is the
exact reference's cost.
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _harness
from tomioka_jax import rl

PAPER = "Husain, Ciosek, Tomioka 2021, Regularized Policies are Reward Robust (arXiv 2101.07012)"
NAME = "reward_robust"

# The gridworld of the figure: walls, a goal (+1) and a trap (-1), both absorbing.
GRID = {"height": 8, "width": 8, "slip": 0.1, "step_reward": 0.0, "gamma": 0.9,
        "walls": ((2, 1), (2, 2), (2, 3), (2, 4), (5, 3), (5, 4), (5, 5), (5, 6)),
        "goals": {(7, 7): 1.0, (4, 2): -1.0}}

CONFIGS = {
    # grid: the 8x8 gridworld above (smoke: 5x5); lams: regularization strengths; random:
    # (count, S, A, branching) of random MDPs for the identities; policies / perturbations:
    # random policies and feasible Delta per case; speed: (batch, S, A) of the vmapped timing;
    # numpy_mdps / lp_mdps: how many of them the NumPy loop and linprog solve (timed per MDP).
    "smoke": {"grid": 5, "lams": (0.1, 0.5, 1.0), "random": (1, 10, 3, 3), "policies": 3,
              "perturbations": 3, "speed": (16, 20, 4), "numpy_mdps": 4, "lp_mdps": 2},
    "quick": {"grid": 8, "lams": (0.1, 0.5, 1.0), "random": (8, 30, 4, 5), "policies": 8,
              "perturbations": 8, "speed": (256, 30, 4), "numpy_mdps": 32, "lp_mdps": 16},
    "full": {"grid": 8, "lams": (0.1, 0.5, 1.0), "random": (32, 50, 4, 8), "policies": 16,
             "perturbations": 16, "speed": (1024, 50, 4), "numpy_mdps": 64, "lp_mdps": 32},
}
SPEED_LAM = 0.5
CHUNK = 8  # MDPs per vmapped chunk in the timing
TOL = 1e-6

HEADLINE = (
    "({mode}): on an {grid}x{grid} gridworld and {n_random} random MDPs (gamma 0.9, lam in "
    "{lams}) every identity of the paper holds to {worst:.1e} (float64): under the worst-case "
    "reward r - lam log(pi*/pi0) every policy has the soft-optimal value, the adversary's "
    "constraint is tight, the LP primal and dual agree, and pi* is optimal for the perturbed "
    "reward; soft value iteration vmapped over {batch} MDPs is {speedup:.0f}x a NumPy loop and "
    "{lp_ratio:.0f}x linprog per MDP")

NOTES = """\
Conventions: d is the unnormalized discounted occupancy (sum d = 1 / (1 - gamma)), so every value
is <mu0, v> and <r, d> with no (1 - gamma) factor; the paper's normalized occupancy is
(1 - gamma) d. The gridworld is {grid}x{grid} with {n_walls} wall cells, a goal (+1) and a trap
(-1), both absorbing after the reward of entering them, slip {slip} (a uniformly random move),
gamma {gamma}, pi0 uniform; mu0 is uniform over the free non-terminal cells. The random MDPs have
Dirichlet(1) transitions over {branching} successors, N(0, 1) rewards and a random pi0 (rows from
U(0.2, 1), normalized). Delta* is computed as q - v of the soft fixed point, which equals
lam log(pi*/pi0) algebraically; the identities are then checked against independent
computations: policy values by a NumPy linear solve, the LPs by HiGHS (both primal and dual),
tightness per state, and {perturbations} random feasible Delta per case (random normal rows
shifted into the set, with a random margin). The occupancy-KL rows use
Omega(d) = lam KL(d || d0) (generalized), d0 = the occupancy of the uniform policy from a
uniform start; its dual is smooth and solved by damped Newton.

The paper's gridworld figure could not be read here (its grid, gamma and lam are
unverified); the heat maps show Delta*(s, a) = lam log(pi*(a|s) / pi0(a|s)) per action, the
reward the adversary removes: positive (red) where pi* puts more mass than pi0 (the adversary
taxes the actions the policy likes: toward the goal, away from the trap), negative (blue) where
it puts less (the adversary refunds actions the policy avoids). Every row's perturbation sits on
the boundary sum_a pi0 exp(Delta / lam) = 1 in every cell. As lam grows the policy stays closer
to pi0 but the adversary's budget grows with lam, so |Delta*| spans {span}.

Speed: both implementations run the same backups to the same tolerance in float64 (lam =
{speed_lam}, {batch} random MDPs with S = {speed_s}, A = {speed_a}); ours is jitted
lax.while_loop under vmap (a vmapped batch runs until its slowest MDP converges), compiled
before timing (compile {compile_s:.2f} s). A backup is a matrix-vector product with P, so it is
memory-bound: one vmap over all {batch} MDPs streams every P from memory at each of the ~200
backups ({vmap_ms:.3f} ms per MDP), while lax.map over vmapped chunks of {chunk} keeps each
chunk's P in cache ({chunked_ms:.3f} ms per MDP); both give the same values (max difference
{vmap_diff:.1e}). NumPy solves {numpy_mdps} of the MDPs one after another; linprog (HiGHS)
solves the unregularized LP's primal for {lp_mdps} of them, the exact reference's cost."""


def _pi0_random(seed: int, shape) -> np.ndarray:
  pi0 = np.random.default_rng(seed).uniform(0.2, 1.0, size=shape)
  return pi0 / pi0.sum(-1, keepdims=True)


def _np_value(P, r, gamma, policy) -> np.ndarray:
  r_pi = (policy * r).sum(-1)
  P_pi = np.einsum("sa,sat->st", policy, P)
  return np.linalg.solve(np.eye(len(r_pi)) - gamma * P_pi, r_pi)


def _lse(z: np.ndarray) -> np.ndarray:
  m = z.max(-1)
  return m + np.log(np.exp(z - m[:, None]).sum(-1))


def _grid_world(size: int) -> rl.Gridworld:
  if size == 8:
    return rl.gridworld(8, 8, walls=GRID["walls"], goals=GRID["goals"], slip=GRID["slip"],
                        step_reward=GRID["step_reward"], gamma=GRID["gamma"])
  return rl.gridworld(size, size, walls=((1, 1), (1, 2)), goals={(size - 1, size - 1): 1.0,
                                                                   (2, 1): -1.0},
                      slip=GRID["slip"], gamma=GRID["gamma"])


def _residuals(mdp: rl.TabularMDP, lam: float, pi0: np.ndarray, num_policies: int,
               num_perturbations: int, seed: int) -> dict:
  """Every identity's residual for one MDP and lam (float64; call under enable_x64)."""
  P, r, gamma, mu0 = (np.asarray(mdp.P), np.asarray(mdp.r), mdp.gamma, np.asarray(mdp.mu0))
  rng = np.random.default_rng(seed)
  num_states, num_actions = r.shape
  sol = rl.solve_policy_regularized(mdp.P, mdp.r, gamma, mdp.mu0, lam, pi0)
  v, pol = np.asarray(sol.v), np.asarray(sol.policy)
  delta, r_prime = np.asarray(sol.perturbation), np.asarray(sol.worst_case_reward)
  soft_value = float(mu0 @ v)
  out = {}
  # (a) soft Bellman optimality (recomputed in NumPy) and the policy's form.
  q = r + gamma * P @ v
  out["bellman"] = max(np.abs(lam * _lse(np.log(pi0) + q / lam) - v).max(),
                       np.abs(pol - pi0 * np.exp((q - v[:, None]) / lam)).max())
  # (b) indifference: every policy has value v under r'.
  pols = rng.gamma(0.5, size=(num_policies, num_states, num_actions)) + 1e-12
  pols = list(pols / pols.sum(-1, keepdims=True))
  pols += [np.full(r.shape, 1 / num_actions), np.eye(num_actions)[np.arange(num_states)
                                                                   % num_actions], pol]
  out["indifference"] = max(np.abs(_np_value(P, r_prime, gamma, p) - v).max() for p in pols)
  out["delta_is_log_ratio"] = np.abs(delta - lam * np.log(pol / pi0)).max()
  # (c) LP primal = dual = hard value iteration; regularized primal = dual.
  lp = rl.occupancy_lp(P, r, gamma, mu0)
  hard = rl.soft_value_iteration(mdp.P, mdp.r, gamma, 0.0)
  out["lp_primal_dual"] = max(abs(lp.primal_value - lp.dual_value),
                              abs(lp.primal_value - float(mu0 @ np.asarray(hard.v))))
  out["regularized_gap"] = max(abs(float(sol.gap)), float(sol.flow_residual),
                               max(float(sol.dual_violation), 0.0))
  # (d) tightness in every state.
  out["tightness"] = np.abs(_lse(np.log(pi0) + delta / lam)).max()
  # (e) pi* optimal under r': the LP on r' has the soft value, attained by d*.
  lp_prime = rl.occupancy_lp(P, r_prime, gamma, mu0)
  out["pi_star_optimal"] = max(abs(lp_prime.primal_value - soft_value),
                               abs(lp_prime.dual_value - soft_value),
                               abs(float((np.asarray(sol.d) * r_prime).sum())
                                   - lp_prime.primal_value))
  # (f) minimax: feasible Delta never push pi* (nor the best policy) below the optimum.
  margins = []
  for _ in range(num_perturbations):
    # half spread widely, half near Delta* (where the margin is smallest)
    raw = rng.normal(size=r.shape) if len(margins) % 2 else delta + 0.05 * rng.normal(
        size=r.shape)
    d_rand = raw - lam * _lse(np.log(pi0) + raw / lam)[:, None] - 0.3 * rng.uniform(
        size=(num_states, 1)) * (len(margins) % 2)
    v_pi = _np_value(P, r - d_rand, gamma, pol)
    margins.append(float(mu0 @ v_pi) - soft_value)
  out["minimax_margin"] = min(margins)  # >= 0 expected
  # Occupancy-KL regularizer: Fenchel-Young, zero gap, indifference.
  d0 = np.asarray(rl.occupancy_measure(mdp.P, gamma, np.full(num_states, 1 / num_states),
                                       np.full(r.shape, 1 / num_actions)))
  occ = rl.solve_occupancy_regularized(mdp.P, mdp.r, gamma, mdp.mu0, lam, d0)
  d_o, delta_o = np.asarray(occ.d), np.asarray(occ.perturbation)
  fy = (float(rl.occupancy_kl_regularizer(d_o, d0, lam))
        + float(rl.occupancy_kl_conjugate(delta_o, d0, lam)) - float((d_o * delta_o).sum()))
  out["occupancy_kl"] = max(abs(float(occ.gap)), float(occ.flow_residual), abs(fy),
                            np.abs(delta_o - lam * np.log(d_o / d0)).max(),
                            max(np.abs(_np_value(P, np.asarray(occ.worst_case_reward), gamma, p)
                                       - np.asarray(occ.v)).max() for p in pols[-3:]))
  out["soft_value"] = soft_value
  out["occupancy_kl_value"] = float(occ.primal_value)
  out["iterations"] = int(sol.iterations)
  return {k: float(x) for k, x in out.items()}


IDENTITIES = ("bellman", "indifference", "delta_is_log_ratio", "lp_primal_dual",
              "regularized_gap", "tightness", "pi_star_optimal", "occupancy_kl")


def experiment(config: dict) -> dict:
  """Residuals of every identity on the gridworld and the random MDPs; the figure's data."""
  rows, heat = [], {}
  with jax.enable_x64(True):
    world = _grid_world(config["grid"])
    cases = [("gridworld", world.mdp, np.full(world.mdp.r.shape, 0.25))]
    count, num_states, num_actions, branching = config["random"]
    for i in range(count):
      mdp = rl.random_mdp(jax.random.key(100 + i), num_states, num_actions, gamma=0.9,
                          branching=branching)
      cases.append((f"random {i}", mdp, _pi0_random(i, (num_states, num_actions))))
    for c, (name, mdp, pi0) in enumerate(cases):
      for lam in config["lams"]:
        res = _residuals(mdp, lam, pi0, config["policies"], config["perturbations"],
                         seed=1000 * c + int(lam * 100))
        rows.append({"case": name, "lam": lam, **res})
    for lam in config["lams"]:
      w = rl.worst_case_reward(world.mdp.P, world.mdp.r, world.mdp.gamma, lam)
      # Terminal cells (absorbing, zero reward: v = 0 and Delta* = 0) are masked in the figure.
      terminal = np.zeros(len(world.cells), bool)
      terminal[list(world.goal_states)] = True
      mask = lambda x: np.where(terminal.reshape((-1,) + (1,) * (x.ndim - 1)), np.nan, x)
      heat[lam] = {"delta": world.to_grid(mask(np.asarray(w.perturbation))),
                   "v": world.to_grid(mask(np.asarray(w.v))),
                   "policy": world.to_grid(mask(np.asarray(w.policy)))}
  return {"rows": rows, "heat": heat, "cells": world.cells, "height": world.height,
          "width": world.width,
          "walls": [list(c) for c in (GRID["walls"] if config["grid"] == 8 else ((1, 1), (1, 2)))],
          "goals": ([[7, 7, 1.0], [4, 2, -1.0]] if config["grid"] == 8
                    else [[config["grid"] - 1, config["grid"] - 1, 1.0], [2, 1, -1.0]])}


def _numpy_soft_vi(P, r, gamma, lam, log_pi0, tol, max_iters=10_000):
  """The same backups in NumPy, one MDP: v <- lam logsumexp(log pi0 + (r + gamma P v) / lam)."""
  v = np.zeros(P.shape[0])
  for it in range(max_iters):
    q = r + gamma * P @ v
    v_new = lam * _lse(log_pi0 + q / lam)
    delta = np.abs(v_new - v).max()
    v = v_new
    if delta <= tol:
      return v, it + 1
  return v, max_iters


def timings(config: dict) -> dict:
  """Per-MDP time: vmapped jitted soft VI vs NumPy vs linprog (HiGHS) on the LP."""
  batch, num_states, num_actions = config["speed"]
  with jax.enable_x64(True):
    keys = jax.random.split(jax.random.key(7), batch)
    mdps = jax.jit(jax.vmap(lambda k: rl.random_mdp(k, num_states, num_actions, gamma=0.9,
                                                    branching=5)))(keys)
    pi0 = jnp.full((num_states, num_actions), 1 / num_actions)
    tol = 1e-10
    one = lambda P, r: rl.soft_value_iteration(P, r, 0.9, SPEED_LAM, pi0, tol=tol)
    # One vmap over the whole batch streams every P from memory at each backup; vmapped chunks
    # of CHUNK MDPs run one after another (lax.map) and keep their P in cache.
    solve = jax.jit(jax.vmap(one))
    chunked = jax.jit(lambda P, r: jax.lax.map(lambda x: one(*x), (P, r), batch_size=CHUNK))
    ours_vmap = _harness.timeit(lambda: solve(mdps.P, mdps.r), repeats=3)
    ours = _harness.timeit(lambda: chunked(mdps.P, mdps.r), repeats=5)
    sol = chunked(mdps.P, mdps.r)
    vmap_agree = float(jnp.max(jnp.abs(solve(mdps.P, mdps.r).v - sol.v)))
    P_np, r_np = np.asarray(mdps.P), np.asarray(mdps.r)
  log_pi0 = np.log(np.asarray(pi0))
  n_np = min(config["numpy_mdps"], batch)
  t0 = time.perf_counter()
  np_results = [_numpy_soft_vi(P_np[i], r_np[i], 0.9, SPEED_LAM, log_pi0, tol)
                for i in range(n_np)]
  numpy_s = (time.perf_counter() - t0) / n_np
  agree = max(np.abs(np_results[i][0] - np.asarray(sol.v[i])).max() for i in range(n_np))
  n_lp = min(config["lp_mdps"], batch)
  mu0 = np.full(num_states, 1 / num_states)
  t0 = time.perf_counter()
  for i in range(n_lp):
    rl.occupancy_lp(P_np[i], r_np[i], 0.9, mu0)
  lp_s = (time.perf_counter() - t0) / n_lp / 2  # occupancy_lp solves primal and dual: per LP
  return {"batch": batch, "S": num_states, "A": num_actions, "ours": ours.as_dict(),
          "ours_per_mdp_s": ours.median_s / batch, "ours_vmap": ours_vmap.as_dict(),
          "ours_vmap_per_mdp_s": ours_vmap.median_s / batch, "vmap_vs_chunked": vmap_agree, "numpy_per_mdp_s": numpy_s,
          "linprog_per_lp_s": lp_s, "numpy_mdps": n_np, "lp_mdps": n_lp,
          "max_abs_diff_vs_numpy": float(agree),
          "iterations_ours": int(np.max(np.asarray(sol.iterations))),
          "iterations_numpy": int(max(it for _, it in np_results))}


def _worst(rows, key):
  return max(abs(r[key]) for r in rows)


def claims(config: dict, exp: dict, times: dict) -> list[_harness.Claim]:
  rows = exp["rows"]
  lams = ", ".join(f"{lam:g}" for lam in config["lams"])
  where = f"{config['grid']}x{config['grid']} grid + {config['random'][0]} random MDPs, lam {lams}"
  texts = {
      "bellman": "(a) soft value iteration reaches the soft Bellman fixed point, "
                 "pi* = pi0 exp((q - v) / lam)",
      "indifference": "(b) under r' = r - lam log(pi*/pi0) every policy has value v_soft "
                      "(the worst-case reward is indifferent)",
      "lp_primal_dual": "(c) occupancy LP: primal = dual (HiGHS) = value iteration",
      "regularized_gap": "(c) regularized primal max <r, d> - Omega(d) = dual <mu0, v_soft> "
                         "(zero gap, both feasible)",
      "tightness": "(d) the adversary's constraint sum_a pi0 exp(Delta*/lam) <= 1 is tight "
                   "in every state",
      "pi_star_optimal": "(e) pi* is optimal for the unregularized MDP with reward r' "
                         "(LP value = soft value)",
      "occupancy_kl": "(f) occupancy KL regularizer: zero gap, Fenchel-Young equality, "
                      "Delta* = grad Omega(d*), indifferent r - Delta*",
  }
  out = []
  for key, text in texts.items():
    worst = _worst(rows, key)
    if key == "bellman":
      worst = max(worst, _worst(rows, "delta_is_log_ratio"))
    ok = worst <= TOL
    out.append(_harness.Claim(text, "exact (= 0)", f"max abs residual {worst:.1e} ({where})",
                              bool(ok), reason="" if ok else f"residual {worst:.1e} > {TOL:g}"))
  margin = min(r["minimax_margin"] for r in rows)
  ok = margin >= -1e-9
  out.append(_harness.Claim(
      "(f) minimax: for random feasible Delta, J(pi*, r - Delta) >= the regularized optimum",
      ">= 0", f"smallest margin {margin:.3g} over {config['perturbations']} Delta per case",
      bool(ok), reason="" if ok else "a feasible Delta beat the worst case"))
  out.append(_harness.Claim(
      "vmapped jitted soft value iteration vs a NumPy loop of the same backups (per MDP)",
      "reported",
      f"{_speedup(times):.1f}x in vmapped chunks of {CHUNK} "
      f"({times['numpy_per_mdp_s'] / times['ours_vmap_per_mdp_s']:.1f}x as one vmap over the "
      f"batch) ({times['ours_per_mdp_s'] * 1e3:.3f} ms vs "
      f"{times['numpy_per_mdp_s'] * 1e3:.2f} ms, {times['batch']} MDPs S={times['S']} "
      f"A={times['A']}; linprog {times['linprog_per_lp_s'] * 1e3:.1f} ms per LP; "
      f"max |v - v_numpy| {times['max_abs_diff_vs_numpy']:.1e})", None))
  return out


def _speedup(times: dict) -> float:
  return times["numpy_per_mdp_s"] / times["ours_per_mdp_s"]


def report(config: dict, exp: dict, times: dict) -> _harness.Report:
  rows = exp["rows"]
  by_case = []
  for case in dict.fromkeys(r["case"] for r in rows):
    if case.startswith("random") and case != "random 0":
      continue
    for r in rows:
      if r["case"] == case:
        by_case.append((case, r["lam"], *(f"{r[k]:.1e}" for k in IDENTITIES),
                        f"{r['minimax_margin']:.3g}", f"{r['soft_value']:.4f}",
                        int(r["iterations"])))
  worst = [("max over all cases", "-", *(f"{_worst(rows, k):.1e}" for k in IDENTITIES),
            f"{min(r['minimax_margin'] for r in rows):.3g}", "-", "-")]
  tables = [
      "## Residuals of the identities (max abs, float64)\n\n" + _harness.markdown_table(
          ["case", "lam", "(a) Bellman", "(b) indifferent", "Delta* = lam log(pi*/pi0)",
           "(c) LP primal-dual", "(c) regularized gap", "(d) tight", "(e) pi* optimal",
           "(f) occupancy KL", "(f) minimax margin (>= 0)", "<mu0, v_soft>", "VI iterations"],
          by_case + worst),
      "## Speed (per MDP)\n\n" + _harness.markdown_table(
          ["implementation", "ms per MDP", "ratio to ours", "MDPs timed", "max iterations"],
          [(f"tomioka_jax (jit, lax.map over vmapped chunks of {CHUNK})",
            times["ours_per_mdp_s"] * 1e3, 1.0, times["batch"], times["iterations_ours"]),
           ("tomioka_jax (jit, one vmap over the batch)", times["ours_vmap_per_mdp_s"] * 1e3,
            times["ours_vmap_per_mdp_s"] / times["ours_per_mdp_s"], times["batch"],
            times["iterations_ours"]),
           ("NumPy loop, same backups", times["numpy_per_mdp_s"] * 1e3, _speedup(times),
            times["numpy_mdps"], times["iterations_numpy"]),
           ("scipy linprog (HiGHS), unregularized LP", times["linprog_per_lp_s"] * 1e3,
            times["linprog_per_lp_s"] / times["ours_per_mdp_s"], times["lp_mdps"], "-")]),
  ]
  all_worst = max(_worst(rows, k) for k in IDENTITIES)
  spans = [np.nanmax(np.abs(exp["heat"][lam]["delta"])) for lam in config["lams"]]
  span = ", ".join(f"{s:.2f} (lam {lam:g})" for s, lam in zip(spans, config["lams"]))
  batch, speed_s, speed_a = config["speed"]
  return _harness.Report(
      tables=tables, figure=_figure(exp, config["lams"]),
      notes=NOTES.format(grid=config["grid"], n_walls=len(exp["walls"]), slip=GRID["slip"],
                         gamma=GRID["gamma"], branching=config["random"][3],
                         perturbations=config["perturbations"], span=span,
                         speed_lam=SPEED_LAM, batch=batch, speed_s=speed_s, speed_a=speed_a,
                         compile_s=times["ours"]["compile_s"], numpy_mdps=times["numpy_mdps"],
                         vmap_ms=times["ours_vmap_per_mdp_s"] * 1e3, chunk=CHUNK,
                         chunked_ms=times["ours_per_mdp_s"] * 1e3,
                         vmap_diff=times["vmap_vs_chunked"],
                         lp_mdps=times["lp_mdps"]),
      headline=HEADLINE.format(mode=config["mode"], grid=config["grid"],
                               n_random=config["random"][0],
                               lams="{" + ", ".join(f"{lam:g}" for lam in config["lams"]) + "}",
                               worst=all_worst, batch=batch, speedup=_speedup(times),
                               lp_ratio=times["linprog_per_lp_s"] / times["ours_per_mdp_s"]))


def _figure(exp: dict, lams):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from matplotlib import colors  # pylint: disable=g-import-not-at-top

  names = rl.GRID_ACTION_NAMES
  moves = np.array(rl.GRID_ACTIONS, dtype=float)  # (row, col) per action
  fig, axes = plt.subplots(len(lams), 1 + len(names), figsize=(3.0 * (1 + len(names)),
                                                               2.9 * len(lams)),
                           squeeze=False)
  height, width = exp["height"], exp["width"]

  def decorate(ax):
    for (i, j) in exp["walls"]:
      ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, color="0.35"))
    for i, j, g in exp["goals"]:
      ax.text(j, i, "G" if g > 0 else "T", ha="center", va="center", fontsize=11,
              fontweight="bold", color="k")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)

  for row, lam in enumerate(lams):
    h = exp["heat"][lam]
    ax = axes[row, 0]
    im = ax.imshow(h["v"], cmap="viridis")
    pol = np.nan_to_num(h["policy"])  # (H, W, A)
    drift = pol @ moves  # expected (row, col) move of pi*, scaled per panel: longest 0.9 cell
    drift = 0.9 * drift / max(float(np.abs(drift).max()), 1e-12)
    ii, jj = np.mgrid[0:height, 0:width]
    ax.quiver(jj, ii, drift[..., 1], drift[..., 0], color="w", scale=1, scale_units="xy",
              angles="xy", width=0.012)
    decorate(ax)
    ax.set_title(f"lam = {lam:g}: v_soft, pi* mean move", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    # Delta* <= lam log(1 / pi0) above but is unbounded below: one slope per sign.
    norm = colors.TwoSlopeNorm(vcenter=0.0, vmin=min(float(np.nanmin(h["delta"])), -1e-9),
                               vmax=max(float(np.nanmax(h["delta"])), 1e-9))
    for a, name in enumerate(names):
      ax = axes[row, 1 + a]
      im = ax.imshow(h["delta"][..., a], cmap="RdBu_r", norm=norm)
      decorate(ax)
      ax.set_title(f"lam = {lam:g}: Delta*(s, {name})", fontsize=9)
    cbar = fig.colorbar(im, ax=axes[row, 1:].tolist(), fraction=0.012, pad=0.01)
    cbar.set_ticks([norm.vmin, norm.vmin / 2, 0.0, norm.vmax / 2, norm.vmax])
    cbar.ax.tick_params(labelsize=8)
  fig.suptitle("Worst-case reward perturbation Delta* = lam log(pi*/pi0) on the gridworld: the "
               "reward the adversary removes (red: taxed, blue: refunded; separate scales for "
               "the two signs)\nG goal +1, T trap -1 (absorbing), grey walls; left: soft value "
               "and the mean move of pi* (arrows scaled per panel)", fontsize=10)
  return fig
