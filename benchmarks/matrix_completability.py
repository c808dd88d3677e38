"""Algebraic-combinatorial matrix completion: completability phase transition, calibrated
single-entry error estimates, the algebraic method against nuclear-norm minimisation, and the
speed of the generic-point completability test.

Reproduces Király, Theran, Tomioka (JMLR 2015, arXiv 1211.4116) and Király, Tomioka (ICML 2012,
arXiv 1206.6470) at m = n = 100 (20 in quick mode, except the speed claim, always 100 x 100).
The speed claim's timing runs in the timings phase, alone on the machine.
"""

from __future__ import annotations

import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from benchmarks import _harness
from tomioka_jax import matrix as mc

_LOG = logging.getLogger(__name__)

PAPER = ("Király, Theran, Tomioka 2015, arXiv 1211.4116 (JMLR 16); Király, Tomioka 2012, "
         "arXiv 1206.6470 (ICML)")
RANKS = (1, 2, 3, 4, 5)
SIGMA = 1e-3  # the calibration's Gaussian noise

CONFIGS = {
    # n: the matrices' size; factors: |E|/dim of the phase transition, trials per factor;
    # cal_*: the rank-2/3 calibration's entries and noise draws, rank one's draws; exact3,
    # compare: entries of the rank-3 exactness and of the rank-2 comparison; speed_n, repeats,
    # naive: the speed claim's mask size, repeats, entries the naive baseline tests.
    "smoke": {"n": 20, "factors": (1.0, 1.5), "trials": 1, "cal_entries": 2, "cal_draws": 2,
              "cal1_draws": 20, "exact3": 2, "compare": 2, "speed_n": 30, "repeats": 1,
              "naive": 1},
    "quick": {"n": 20, "factors": (0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0), "trials": 2,
              "cal_entries": 6, "cal_draws": 5, "cal1_draws": 200, "exact3": 4, "compare": 4,
              "speed_n": 100, "repeats": 3, "naive": 1},
    "full": {"n": 100, "factors": (0.5, 0.7, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2, 1.35, 1.5,
                                   2.0, 3.0),
             "trials": 3, "cal_entries": 16, "cal_draws": 20, "cal1_draws": 200, "exact3": 30,
             "compare": 40, "speed_n": 100, "repeats": 5, "naive": 3},
}

HEADLINE = {
    "identifiability": (
        "({n}x{n}, {mode}): determined entries completed exactly where nuclear-norm "
        "minimization errs (median relative error {alg1:.0e} vs {nn1:.2g} at rank 1, {alg2:.1e} "
        "vs {nn2:.2g} at rank 2); single entries at rank 3 exact in {exact3_ok} of {exact3} "
        "(`low_rank_fit` start)"),
    "completion": (
        "({mode}, {n}x{n}): half the entries completable at |E| = {half_lo:.2f}-{half_hi:.2f} "
        "r(m+n-r) for r = 1..5; error estimates calibrated against Monte Carlo errors under "
        "noise: rank 1 Spearman {rho1:.3f}, rank-2/3 circuits {rho23:.3f} (local solves whose "
        "misfit contradicts the noise model are retried from other starts); {speed_n}x{speed_n} "
        "rank-5 completability in {cpu:.2f} s (target 1 s)"),
}

NOTES = """\
Setup. Masks are i.i.d. Bernoulli(p); the counting bound |E| = r(m+n-r) (the dimension of the
rank-r determinantal variety, necessary for completing the whole matrix) is at
p_dof = r(m+n-r)/(mn). Completability is the generic-point Jacobian test (float64, two random
points). Rank-one matrices have |u_i|, |v_j| ~ U[0.5, 2] with random signs (the log-space error
model needs entries away from zero); rank-r matrices are products of Gaussian factors.
Calibration: additive Gaussian noise sd {sigma}; the predicted sd is the first-order one
(effective resistance for rank one, sqrt(g^T (J^T J)^+ g) for circuits), the empirical one the
RMS error over noise draws ({cal1_draws} for rank one, {cal_draws} per entry for ranks two and
three). The rank-2/3 predictions use noisy data only: each entry is completed from 2 candidate
circuits on a first noisy draw and the one with the smallest predicted sd is kept; ranks >= 3
start the local solves from one global fit per draw (low_rank_fit), rank 2 from the
propagation. A local solve is accepted when its misfit passes the chi-square test of the
noise model (level 1e-6); otherwise the next start is tried (propagation from up to 3 seeds,
then a global fit, then random restarts) and, if none passes, the sd uses the noise level the
misfit implies. Starts used (first draw and all repeats): rank 2 {starts2}, rank 3 {starts3};
misfit consistent in {consistent2:.0%} / {consistent3:.0%} of the solves. Rank-3 exactness:
noiseless, 1.6x the counting bound, local solves started from one low_rank_fit (global misfit
{global_fit:.1e}). Nuclear norm: accelerated proximal gradient with continuation to
lam = 1e-4 ||P_E A||_2, tol 1e-7, same instance. The algebraic rank-2 time is for the listed
entries one by one (circuit search + local solve each); the NN time is one solve for the whole
matrix. The speed claim is timed in the timings phase, alone on the machine, and judged on
process CPU time (load average {load:.1f} when it started); the naive baseline agrees with ours
on the sampled entries: {naive_agrees}. Paper numbers marked [mem] are recalled, not checked
against the PDF."""


def _dof_density(m: int, n: int, r: int) -> float:
  """Sampling density at which |E| equals dim = r(m+n-r), the counting bound of the papers."""
  return r * (m + n - r) / (m * n)


def _phase_transition(n: int, ranks, factors, trials: int, key) -> dict:
  rng = np.random.default_rng(0)
  curves = {}
  for r in ranks:
    p_dof = _dof_density(n, n, r)
    fractions = []
    for c in factors:
      vals = []
      for _ in range(trials):
        mask = rng.random((n, n)) < min(1.0, c * p_dof)
        key, sub = jax.random.split(key)
        vals.append(float(jnp.mean(mc.completable_entries(mask, r, sub))))
      fractions.append(float(np.mean(vals)))
    # Interpolated density (in units of p_dof) where half the entries become completable.
    f = np.asarray(fractions)
    above = np.nonzero(f >= 0.5)[0]
    if len(above) and above[0] > 0:
      i = above[0]
      half = factors[i - 1] + (0.5 - f[i - 1]) * (factors[i] - factors[i - 1]) / (f[i] - f[i - 1])
    else:
      half = float(factors[above[0]]) if len(above) else float("nan")
    curves[r] = {"p_dof": p_dof, "factors": list(factors), "fraction": fractions,
                 "half_at_factor": float(half)}
  return curves


def _naive_entry_test(mask: np.ndarray, r: int, entries, seed: int = 0) -> list[bool]:
  """The straightforward baseline: one NumPy rank computation per entry (the JMLR 2015 test as
  written), on an explicitly formed Jacobian."""
  m, n = mask.shape
  rng = np.random.default_rng(seed)
  u, v = rng.normal(size=(m, r)), rng.normal(size=(n, r))

  def row(i, j):
    g = np.zeros(r * (m + n))
    g[i * r:(i + 1) * r] = v[j]
    g[(m + j) * r:(m + j + 1) * r] = u[i]
    return g

  jac = np.stack([row(i, j) for i, j in np.argwhere(mask)])
  base = np.linalg.matrix_rank(jac)
  return [np.linalg.matrix_rank(np.vstack([jac, row(i, j)[None]])) == base for i, j in entries]


def _calibration_rank_one(n: int, sigma: float, draws: int, seed: int = 1) -> dict:
  rng = np.random.default_rng(seed)
  with jax.enable_x64(True):
    a = np.outer(rng.uniform(0.5, 2.0, n) * rng.choice([-1, 1], n),
                 rng.uniform(0.5, 2.0, n) * rng.choice([-1, 1], n))
    mask = rng.random((n, n)) < 2.0 * _dof_density(n, n, 1)
    pred = mc.rank_one_complete(jnp.asarray(a), mask, noise_std=sigma)
    noisy = jnp.asarray(a[None] + sigma * rng.normal(size=(draws, n, n)))
    est = jax.vmap(lambda x: mc.rank_one_complete(x, mask, noise_std=sigma).estimate)(noisy)
    c = np.asarray(pred.completable) & ~mask
    empirical = np.sqrt(np.mean((np.asarray(est) - a[None]) ** 2, axis=0))[c]
    predicted = np.asarray(pred.std)[c]
  return {"predicted": predicted, "empirical": empirical,
          "spearman": float(scipy.stats.spearmanr(predicted, empirical).statistic)}


def _determined_instance(rng, n: int, r: int, entries: int, seed: int):
  """A Gaussian rank-r n x n matrix, a mask at 1.6x the counting bound and up to ``entries``
  of its determined unobserved entries, in random order (call under ``enable_x64``)."""
  a = rng.normal(size=(n, r)) @ rng.normal(size=(r, n))
  mask = rng.random((n, n)) < 1.6 * _dof_density(n, n, r)
  comp = np.asarray(mc.completable_entries(mask, r, jax.random.key(seed)))
  targets = np.argwhere(comp & ~mask)
  return a, mask, targets[rng.permutation(len(targets))[:entries]]


def _calibration_rank_r(n: int, r: int, sigma: float, entries: int, draws: int,
                        candidates: int = 2, seed: int = 2) -> dict:
  """Predicted vs empirical error of circuit completions under noise.

  The prediction uses only noisy data: on a first noisy draw, each entry is completed from
  ``candidates`` circuits (different random tie-breaks) and the circuit with the smallest
  predicted sd is kept (what a user would do); the empirical error is the RMS error of that
  circuit's completion over ``draws`` further independent draws. Rank 2 starts the local solves
  from the propagation; rank >= 3 (where r-neighbour propagation dies out) from one global fit
  of each noisy draw (`low_rank_fit`), shared by all entries.
  """
  rng = np.random.default_rng(seed)
  with jax.enable_x64(True):
    a, mask, targets = _determined_instance(rng, n, r, entries, seed)
    keys = [[jax.random.key(1000 * t + c) for c in range(candidates)]
            for t in range(len(targets))]
    circuits = [[mc.find_circuit(mask, r, (k, l), kk) for kk in ks]
                for (k, l), ks in zip(targets, keys)]

    def complete_all(noisy, chosen):
      start = None
      if r >= 3:
        fit = mc.low_rank_fit(noisy, mask, r)
        start = (fit.u, fit.v)
      out = []
      for t, (k, l) in enumerate(targets):
        cands = range(candidates) if chosen is None else [chosen[t]]
        out.append([mc.complete_entry(noisy, mask, r, (k, l), keys[t][c], noise_std=sigma,
                                      circuit=circuits[t][c], start=start) for c in cands])
      return out

    first = complete_all(jnp.asarray(a + sigma * rng.normal(size=a.shape)), None)
    chosen = [int(np.argmin([float(o.std) for o in outs])) for outs in first]
    predicted = np.asarray([float(outs[c].std) for outs, c in zip(first, chosen)])
    errs, starts = [], {}
    solves = [outs[c] for outs, c in zip(first, chosen)]
    for _ in range(draws):
      outs = complete_all(jnp.asarray(a + sigma * rng.normal(size=a.shape)), chosen)
      errs.append([float(o[0].value) - a[k, l] for o, (k, l) in zip(outs, targets)])
      solves += [o[0] for o in outs]
    for o in solves:
      starts[o.strategy] = starts.get(o.strategy, 0) + 1
    empirical = np.sqrt(np.mean(np.square(errs), axis=0))
    sizes = [int(circuits[t][c].entries.sum()) for t, c in enumerate(chosen)]
  return {"rank": r, "predicted": predicted, "empirical": empirical, "circuit_sizes": sizes,
          "spearman": float(scipy.stats.spearmanr(predicted, empirical).statistic),
          "starts": starts, "solves": len(solves),
          "consistent_fraction": float(np.mean([o.consistent for o in solves]))}


def _rank_r_exactness(n: int, r: int, entries: int, seed: int = 4) -> dict:
  """Noiseless single-entry completion at 1.6x the counting bound: success fraction."""
  rng = np.random.default_rng(seed)
  with jax.enable_x64(True):
    a, mask, targets = _determined_instance(rng, n, r, entries, seed)
    aj = jnp.asarray(a)
    fit = mc.low_rank_fit(aj, mask, r)
    scale = float(np.sqrt(np.mean(a**2)))
    errs, kinds = [], []
    for t, (k, l) in enumerate(targets):
      out = mc.complete_entry(aj, mask, r, (k, l), jax.random.key(t), start=(fit.u, fit.v))
      errs.append(abs(float(out.value) - a[k, l]) / scale)
      kinds.append(out.strategy)
  errs = np.asarray(errs)
  return {"rank": r, "n": n, "entries": len(errs), "max_rel_err": float(errs.max()),
          "success": float(np.mean(errs <= 1e-8)), "global_fit_residual": float(fit.residual)}


def _algebraic_vs_nuclear(n: int, r: int, factor: float, entries: int, seed: int = 3) -> dict:
  """Noiseless rank-r matrix; determined entries completed by both methods."""
  rng = np.random.default_rng(seed)
  with jax.enable_x64(True):
    if r == 1:
      a = np.outer(rng.uniform(0.5, 2.0, n) * rng.choice([-1, 1], n),
                   rng.uniform(0.5, 2.0, n) * rng.choice([-1, 1], n))
    else:
      a = rng.normal(size=(n, r)) @ rng.normal(size=(r, n))
    mask = rng.random((n, n)) < factor * _dof_density(n, n, r)
    aj = jnp.asarray(a)
    t0 = time.perf_counter()
    comp = np.asarray(mc.completable_entries(mask, r, jax.random.key(seed)))
    t_test = time.perf_counter() - t0
    targets = np.argwhere(comp & ~mask)
    if r == 1:
      timing = _harness.timeit(mc.rank_one_complete, aj, mask, repeats=3)
      est = np.asarray(mc.rank_one_complete(aj, mask).estimate)
      alg_err = np.abs(est - a)[comp & ~mask]
      alg_time = timing.median_s
      n_done = len(targets)
    else:
      targets = targets[rng.permutation(len(targets))[:entries]]
      mc.complete_entry(aj, mask, r, tuple(targets[0]), jax.random.key(0))   # compile
      t0 = time.perf_counter()
      vals = [float(mc.complete_entry(aj, mask, r, (k, l), jax.random.key(i)).value)
              for i, (k, l) in enumerate(targets)]
      alg_time = time.perf_counter() - t0
      alg_err = np.abs(np.asarray(vals) - a[targets[:, 0], targets[:, 1]])
      n_done = len(targets)
    nn_timing = _harness.timeit(mc.nuclear_norm_complete, aj, mask, tol=1e-7, repeats=1)
    nn = mc.nuclear_norm_complete(aj, mask, tol=1e-7)
    nn_est = np.asarray(nn.estimate)
    if r == 1:
      nn_err = np.abs(nn_est - a)[comp & ~mask]
    else:
      nn_err = np.abs(nn_est[targets[:, 0], targets[:, 1]] - a[targets[:, 0], targets[:, 1]])
    scale = float(np.sqrt(np.mean(a**2)))
  return {"rank": r, "density": float(mask.mean()), "factor": factor, "entries": n_done,
          "completable_fraction": float(comp.mean()), "test_s": t_test,
          "alg_median_rel_err": float(np.median(alg_err) / scale),
          "alg_max_rel_err": float(np.max(alg_err) / scale), "alg_s": alg_time,
          "nn_median_rel_err": float(np.median(nn_err) / scale),
          "nn_max_rel_err": float(np.max(nn_err) / scale), "nn_s": nn_timing.median_s,
          "nn_compile_s": nn_timing.compile_s, "nn_iterations": int(nn.iterations),
          "nn_converged": bool(nn.converged)}


def experiment(config: dict) -> dict:
  """Phase transition, calibration of the error estimates, rank-3 exactness, vs nuclear norm."""
  n = config["n"]
  stages, cpu_stages = {"start": time.perf_counter()}, {"start": time.process_time()}

  def stage(name):
    stages[name], cpu_stages[name] = time.perf_counter(), time.process_time()
    _LOG.info("%s done", name)

  curves = _phase_transition(n, RANKS, config["factors"], trials=config["trials"],
                             key=jax.random.key(0))
  stage("phase")
  cal1 = _calibration_rank_one(n, SIGMA, draws=config["cal1_draws"])
  cal2 = _calibration_rank_r(n, 2, SIGMA, entries=config["cal_entries"],
                             draws=config["cal_draws"])
  cal3 = _calibration_rank_r(n, 3, SIGMA, entries=config["cal_entries"],
                             draws=config["cal_draws"])
  pooled_pred = np.concatenate([cal2["predicted"], cal3["predicted"]])
  pooled_emp = np.concatenate([cal2["empirical"], cal3["empirical"]])
  stage("calibration")
  exact3 = _rank_r_exactness(n, 3, config["exact3"])  # the calibration's shapes: compiled
  stage("rank3")
  comparisons = [_algebraic_vs_nuclear(n, 1, 1.5, 0),
                 _algebraic_vs_nuclear(n, 2, 1.6, config["compare"])]
  stage("comparison")
  names = list(stages)
  return {"n": n, "phase": curves, "calibration_rank1": cal1, "calibration_rank2": cal2,
          "calibration_rank3": cal3, "calibration_pooled_spearman":
          float(scipy.stats.spearmanr(pooled_pred, pooled_emp).statistic),
          "calibration_pooled": {"predicted": pooled_pred, "empirical": pooled_emp},
          "rank3_exactness": exact3, "comparisons": comparisons,
          "stage_s": {b: stages[b] - stages[a] for a, b in zip(names, names[1:])},
          "stage_cpu_s": {b: cpu_stages[b] - cpu_stages[a] for a, b in zip(names, names[1:])}}


def timings(config: dict) -> dict:
  """The completability test of a speed_n^2 mask at rank 5 against per-entry NumPy ranks."""
  n, key = config["speed_n"], jax.random.key(0)
  load = os.getloadavg()[0]
  rng = np.random.default_rng(5)
  mask = rng.random((n, n)) < 1.2 * _dof_density(n, n, 5)
  t0 = time.perf_counter()
  ours = np.asarray(_harness.block(mc.jacobian_completability(mask, 5, key)).completable)
  first_call = time.perf_counter() - t0
  cpu0 = time.process_time()   # compiled calls only
  runs = _harness.timeit(mc.jacobian_completability, mask, 5, key, repeats=config["repeats"],
                         warmup=False)
  cpu_per_call = (time.process_time() - cpu0) / config["repeats"]
  speed = _harness.Timing(first_call_s=first_call, median_s=runs.median_s, runs_s=runs.runs_s)
  sample = [tuple(e) for e in np.argwhere(~mask)[:config["naive"]]]
  t0 = time.perf_counter()
  naive = _naive_entry_test(mask, 5, sample)
  naive_per_entry = (time.perf_counter() - t0) / len(sample)
  return {"n": n, "speed": speed.as_dict(), "cpu_per_call_s": cpu_per_call,
          "naive_per_entry_s": naive_per_entry,
          "naive_all_s": naive_per_entry * int((~mask).sum()), "unobserved": int((~mask).sum()),
          "naive_entries": len(sample),
          "naive_agrees": all(ours[e] == ok for e, ok in zip(sample, naive)),
          "load_average": load}


def claims(config: dict, exp: dict, times: dict) -> list[_harness.Claim]:
  del config
  halfs = {r: exp["phase"][r]["half_at_factor"] for r in RANKS}
  cal1, cal2, cal3 = (exp[f"calibration_rank{r}"] for r in (1, 2, 3))
  exact3, comparisons, n = exp["rank3_exactness"], exp["comparisons"], exp["n"]
  rho = exp["calibration_pooled_spearman"]
  fast = times["cpu_per_call_s"] <= 1.0
  transition = all(0.8 <= h <= 1.5 for h in halfs.values())
  exact = exact3["success"] == 1.0
  beats = all(c["alg_max_rel_err"] < 1e-6 < c["nn_median_rel_err"] for c in comparisons)

  def because(ok: bool, why: str) -> str:
    return "" if ok else why

  return [
      # Judged on process CPU time: on the shared 2-core machine wall time mostly measures the
      # other tenants (a bare 500x500 eigh takes 0.03 s idle and 0.3-2 s at load 5-8).
      _harness.Claim(f"completability of a {times['n']}x{times['n']} mask at rank 5 takes "
                     "<= 1 s", "(issue target)",
                     f"{times['cpu_per_call_s']:.2f} s CPU, {times['speed']['median_s']:.2f} s "
                     f"wall (load avg {times['load_average']:.1f}); naive per-entry ranks "
                     f"~{times['naive_all_s']:.0f} s", fast,
                     reason=because(fast, "slower than the target")),
      _harness.Claim("completability phase transition sits at |E| ~ r(m+n-r)",
                     "transition near the counting bound (JMLR) [mem]",
                     "half completable at |E|/dim = " +
                     ", ".join(f"r={r}: {h:.2f}" for r, h in halfs.items()), transition,
                     reason=because(transition, "a transition outside 0.8-1.5 of the bound")),
      _harness.Claim("rank-1 error estimate (min-variance path combination) is calibrated",
                     "rank correlation >= 0.9", f"Spearman {cal1['spearman']:.3f}",
                     cal1["spearman"] >= 0.9, reason=because(cal1["spearman"] >= 0.9,
                                                             "rank correlation below 0.9")),
      _harness.Claim("rank-2/3 circuit error estimate is calibrated", "rank correlation >= 0.9",
                     f"Spearman {rho:.3f} (r=2: {cal2['spearman']:.2f}, r=3: "
                     f"{cal3['spearman']:.2f}; {n}x{n}, "
                     f"{len(exp['calibration_pooled']['predicted'])} entries)", rho >= 0.9,
                     reason=because(rho >= 0.9, "rank correlation below 0.9")),
      _harness.Claim("rank-3 single entries are completed exactly (1.6x the counting bound, "
                     "noiseless)", "exact on determined entries (JMLR) [mem]",
                     f"{exact3['success']:.0%} of {exact3['entries']} entries within 1e-8 "
                     f"(max rel err {exact3['max_rel_err']:.1e}; {exact3['n']}x{exact3['n']})",
                     exact, reason=because(exact, "some entry is not exact")),
      _harness.Claim("algebraic completion is exact on determined entries where nuclear norm "
                     "is not (noiseless, near the counting bound)",
                     "algebraic outperforms NN on sparse masks (ICML 2012) [mem]",
                     "; ".join(f"r={c['rank']}: alg {c['alg_max_rel_err']:.1e} vs NN "
                               f"{c['nn_median_rel_err']:.1e} (median)" for c in comparisons),
                     beats, reason=because(beats, "not exact, or nuclear norm is as good")),
  ]


def report(config: dict, exp: dict, times: dict) -> _harness.Report:
  curves, comparisons, n = exp["phase"], exp["comparisons"], exp["n"]
  cal1, cal2, cal3 = (exp[f"calibration_rank{r}"] for r in (1, 2, 3))
  pooled = exp["calibration_pooled"]
  speed = times["speed"]
  speed_table = _harness.markdown_table(
      ["method", "entries tested", "time (s)", "compile (s)", "ratio vs ours"],
      [["ours: one eigh of the Schur complement of J^T J (size r min(m,n)), two points",
        times["n"] ** 2, speed["median_s"], speed["compile_s"], 1.0],
       [f"naive: NumPy matrix_rank per entry (extrapolated from {times['naive_entries']})",
        times["unobserved"], times["naive_all_s"], 0.0,
        times["naive_all_s"] / speed["median_s"]]])
  phase_table = _harness.markdown_table(
      ["rank", "p at |E| = dim", "|E|/dim where 50% completable"] +
      [f"frac @ {c}" for c in config["factors"]],
      [[r, curves[r]["p_dof"], curves[r]["half_at_factor"]] + curves[r]["fraction"]
       for r in RANKS])
  cmp_table = _harness.markdown_table(
      ["rank", "density", "entries", "alg median rel err", "alg max rel err", "alg time (s)",
       "NN median rel err", "NN max rel err", "NN time (s)", "NN iters"],
      [[c["rank"], c["density"], c["entries"], c["alg_median_rel_err"], c["alg_max_rel_err"],
        c["alg_s"], c["nn_median_rel_err"], c["nn_max_rel_err"], c["nn_s"], c["nn_iterations"]]
       for c in comparisons])
  median_ratio = lambda c: float(np.median(c["empirical"] / c["predicted"]))
  cal_table = _harness.markdown_table(
      ["setting", "entries", "Spearman(pred, emp)", "median emp/pred"],
      [["rank 1, all determined entries", len(cal1["predicted"]), cal1["spearman"],
        median_ratio(cal1)],
       [f"rank 2, circuits ({n}x{n})", len(cal2["predicted"]), cal2["spearman"],
        median_ratio(cal2)],
       [f"rank 3, circuits ({n}x{n})", len(cal3["predicted"]), cal3["spearman"],
        median_ratio(cal3)],
       ["ranks 2 and 3 pooled", len(pooled["predicted"]), exp["calibration_pooled_spearman"],
        median_ratio(pooled)]])
  exact3 = exp["rank3_exactness"]
  halfs = [curves[r]["half_at_factor"] for r in RANKS]
  notes = NOTES.format(
      sigma=SIGMA, cal1_draws=config["cal1_draws"], cal_draws=config["cal_draws"],
      starts2=cal2["starts"], starts3=cal3["starts"],
      consistent2=cal2["consistent_fraction"], consistent3=cal3["consistent_fraction"],
      global_fit=exact3["global_fit_residual"], load=times["load_average"],
      naive_agrees=times["naive_agrees"])
  headline = {
      "identifiability": HEADLINE["identifiability"].format(
          n=n, mode=config["mode"], alg1=comparisons[0]["alg_median_rel_err"],
          nn1=comparisons[0]["nn_median_rel_err"], alg2=comparisons[1]["alg_median_rel_err"],
          nn2=comparisons[1]["nn_median_rel_err"],
          exact3_ok=round(exact3["success"] * exact3["entries"]), exact3=exact3["entries"]),
      "completion": HEADLINE["completion"].format(
          n=n, mode=config["mode"], half_lo=min(halfs), half_hi=max(halfs),
          rho1=cal1["spearman"], rho23=exp["calibration_pooled_spearman"],
          speed_n=times["n"], cpu=times["cpu_per_call_s"])}
  return _harness.Report(tables=[speed_table, phase_table, cal_table, cmp_table],
                         figure=_figure(config, exp), notes=notes, headline=headline)


def _figure(config: dict, exp: dict):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  curves, comparisons, n = exp["phase"], exp["comparisons"], exp["n"]
  cal1, cal2, cal3 = (exp[f"calibration_rank{r}"] for r in (1, 2, 3))
  pooled = exp["calibration_pooled"]
  factors = config["factors"]
  fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
  for r in RANKS:
    axes[0].plot(factors, curves[r]["fraction"], "o-", label=f"r={r}")
  axes[0].axvline(1.0, color="k", ls=":", lw=1, label="|E| = r(m+n-r)")
  axes[0].axvline(np.log(n) / n / _dof_density(n, n, 1), color="C0", ls="--", lw=1,
                  label="r=1: p = log n / n (connectivity)")
  axes[0].set(xlabel="|E| / r(m+n-r)  (expected observed entries over dimension)",
              ylabel="fraction of entries completable",
              title=f"Completability phase transition, {n}x{n}")
  axes[0].legend(fontsize=8, loc="lower right")
  for cal, lab, mk in [(cal1, "rank 1 (path combination)", "."), (cal2, "rank 2 (circuit)", "x"),
                       (cal3, "rank 3 (circuit)", "+")]:
    axes[1].loglog(cal["predicted"], cal["empirical"], mk, label=f"{lab}, "
                   f"rho={cal['spearman']:.2f}")
  lo = min(cal1["predicted"].min(), pooled["predicted"].min())
  hi = max(cal1["predicted"].max(), pooled["predicted"].max())
  axes[1].plot([lo, hi], [lo, hi], "k--", lw=1)
  axes[1].set(xlabel="predicted sd", ylabel="empirical RMS error",
              title=f"Error estimates, Gaussian noise sd {SIGMA}")
  axes[1].legend(fontsize=8)
  width = 0.35
  xs = np.arange(len(comparisons))
  axes[2].bar(xs - width / 2, [max(c["alg_median_rel_err"], 1e-17) for c in comparisons], width,
              label="algebraic")
  axes[2].bar(xs + width / 2, [c["nn_median_rel_err"] for c in comparisons], width,
              label="nuclear norm")
  axes[2].set(yscale="log", xticks=xs, xticklabels=[f"rank {c['rank']}" for c in comparisons],
              ylabel="median relative error on determined entries",
              title="Noiseless completion near the counting bound")
  axes[2].legend(fontsize=8)
  fig.tight_layout()
  return fig
