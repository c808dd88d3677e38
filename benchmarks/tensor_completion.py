"""Tensor completion: the 2011 Figure 1 redrawn, and the solvers' speed against plain NumPy.

Tomioka, Hayashi, Kashima, "Estimation of low-rank tensors via convex optimization"
(arXiv:1010.0789), Figure 1: a 50 x 50 x 20 tensor of Tucker rank (7, 8, 9) (core N(0, 1),
orthonormal factors), a fraction of its entries observed uniformly without replacement, no
noise, tolerance 1e-3 on the relative duality gap; the error is ``||X - X*||_F / ||X*||_F``
on the unobserved entries (as the authors' newer ``exp_completion.m``). Methods: Constraint
(overlapped trace norm), Mixture (latent trace norm), As a Matrix (each unfolding alone) and
Tucker by EM with the true ranks and with ranks x1.2 (``round(1.2 r)``).

Speed: Constraint and Mixture at 35% observed, float64, against a plain NumPy/SciPy ADMM
(``benchmarks/_tensor_numpy_admm.py``: same iterations, defaults and stopping rule, SVD per
unfolding) on the same instance; compile time reported apart.

``--quick`` runs one repetition at five fractions (0.2 ... 0.8), caps Mixture and As a
Matrix at 300 iterations (below their thresholds they do not converge anyway), and times 10
NumPy iterations, scaled to the solve's iteration count (the iterations are the same); the
full mode runs the paper's 19 fractions x 10 repetitions with the default 2000 and the whole
NumPy solves. Both check the gap every 5 iterations (``check_every=5``).
"""

from __future__ import annotations

import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import threadpoolctl

from benchmarks import _harness
from benchmarks import _tensor_numpy_admm as numpy_admm
from tomioka_jax import tensor
from tomioka_jax.tensor import completion

PAPER = ("Tomioka, Hayashi, Kashima (2010), Estimation of low-rank tensors via convex "
         "optimization, arXiv:1010.0789")
NAME = "tensor_completion"
SHAPE = (50, 50, 20)
RANKS = (7, 8, 9)
LARGE_RANKS = tuple(int(round(1.2 * r)) for r in RANKS)
TOL = 1e-3
METHODS = ("Constraint", "Mixture", "As a Matrix (mode 1)", "As a Matrix (mode 2)",
           "As a Matrix (mode 3)", "Tucker (exact)", "Tucker (large)")


def _instance(rep: int, fraction: float):
  x = tensor.tucker_to_tensor(*tensor.random_tucker(jax.random.key(rep), SHAPE, RANKS,
                                                    jnp.float64))
  rng = np.random.default_rng([rep, int(round(1000 * fraction))])
  size = math.prod(SHAPE)
  flat = rng.choice(size, int(round(fraction * size)), replace=False)
  idx = np.stack(np.unravel_index(flat, SHAPE), axis=1)
  return x, idx, x[tuple(idx.T)]


def _error(x_hat, x, idx) -> float:
  test = np.ones(SHAPE, bool)
  test[tuple(idx.T)] = False
  d = np.asarray(x_hat - x)[test]
  return float(np.linalg.norm(d) / np.linalg.norm(np.asarray(x)[test]))


def _solve_all(x, idx, y, max_iter_slow: int) -> dict[str, dict]:
  out = {}
  runs = {
      "Constraint": lambda: tensor.constraint(SHAPE, idx, y, tol=TOL),
      "Mixture": lambda: tensor.mixture(SHAPE, idx, y, tol=TOL, max_iter=max_iter_slow),
      "Tucker (exact)": lambda: tensor.tucker_em(SHAPE, idx, y, RANKS),
      "Tucker (large)": lambda: tensor.tucker_em(SHAPE, idx, y, LARGE_RANKS),
  }
  for k in range(3):
    runs[f"As a Matrix (mode {k + 1})"] = (
        lambda k=k: tensor.as_matrix(SHAPE, idx, y, k, tol=TOL, max_iter=max_iter_slow))
  for name in METHODS:
    res = _harness.block(runs[name]())
    out[name] = {"error": _error(res.X, x, idx), "iterations": int(res.iterations),
                 "converged": bool(res.converged)}
  return out


def _curves(fractions, reps, max_iter_slow):
  errors = {m: np.zeros((len(fractions), reps)) for m in METHODS}
  raw = []
  for i, frac in enumerate(fractions):
    for rep in range(reps):
      x, idx, y = _instance(rep, frac)
      res = _solve_all(x, idx, y, max_iter_slow)
      raw.append({"fraction": frac, "rep": rep, **res})
      for m in METHODS:
        errors[m][i, rep] = res[m]["error"]
  return errors, raw


def _compile_seconds(solve, mask, y, values, eta_fn, static) -> float:
  """Tracing + compilation of a fresh ``jax.jit`` of the whole solve."""
  fresh = jax.jit(solve, static_argnames=tuple(static))
  eta = eta_fn(float(np.std(np.asarray(values), ddof=1)))
  t0 = time.perf_counter()
  fresh.lower(mask, y, 0.0, eta, TOL, jnp.ones((3,), y.dtype), max_iter=2000, check_every=5,
              **static).compile()
  return time.perf_counter() - t0


def _speed(repeats: int, numpy_full: bool) -> dict:
  x, idx, y = _instance(0, 0.35)
  mask, y_dense = tensor.observation_tensors(SHAPE, idx, y)
  mask_np, y_np = np.asarray(mask), np.asarray(y_dense)
  solvers = (
      ("Constraint", tensor.constraint, numpy_admm.constraint, completion.constraint_solve,
       lambda s: 1 / (10 * s), dict(modes=(0, 1, 2))),
      ("Mixture", tensor.mixture, numpy_admm.mixture, completion.mixture_solve,
       lambda s: 10 * s, {}))
  out = {}
  for name, ours, ref, solve, eta_fn, static in solvers:
    compile_s = _compile_seconds(solve, mask, y_dense, y, eta_fn, static)
    timing = _harness.timeit(lambda o=ours: o(SHAPE, idx, y, tol=TOL), repeats=repeats)
    # CPU seconds (all threads) per solve: less sensitive to the shared machine's load.
    c0 = time.process_time()
    for _ in range(repeats):
      res = _harness.block(ours(SHAPE, idx, y, tol=TOL))
    cpu_s = (time.process_time() - c0) / repeats
    its = int(res.iterations)
    # The quick mode times 10 NumPy iterations (two gap checks) and scales to the same
    # iteration count: the two run the same iterations (the full mode checks that).
    ref_iters = its if numpy_full else 10
    # One BLAS thread: on this shared 2-core machine OpenBLAS's threads oversubscribe the
    # cores and make a 50 x 1000 SVD ~100x slower, which would flatter us unfairly.
    with threadpoolctl.threadpool_limits(1):
      t0 = time.perf_counter()
      c0 = time.process_time()
      x_ref, it_ref, gap_ref = ref(mask_np, y_np, tol=TOL if numpy_full else 0.0,
                                   max_iter=2000 if numpy_full else ref_iters)
      ref_s = (time.perf_counter() - t0) * (1 if numpy_full else its / ref_iters)
      ref_cpu_s = (time.process_time() - c0) * (1 if numpy_full else its / ref_iters)
    out[name] = {
        "ours": timing.as_dict(), "ours_cpu_s": cpu_s, "ours_compile_s": compile_s,
        "ours_iterations": its,
        "ours_gap": float(res.gap), "ours_error": _error(res.X, x, idx),
        "numpy_s": ref_s, "numpy_cpu_s": ref_cpu_s, "numpy_estimated": not numpy_full,
        "numpy_iterations": int(it_ref) if numpy_full else its,
        "numpy_gap": float(gap_ref) if numpy_full else None,
        "numpy_error": _error(x_ref, x, idx) if numpy_full else None,
        "speedup": ref_s / timing.median_s,
    }
  return out


def _first_fraction_below(fractions, mean_err, level):
  for f, e in zip(fractions, mean_err):
    if e <= level:
      return f
  return None


def _figure(fractions, errors):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  styles = {"Constraint": "o-", "Mixture": "s-", "As a Matrix (mode 1)": "v--",
            "As a Matrix (mode 2)": "^--", "As a Matrix (mode 3)": "<--",
            "Tucker (exact)": "d-.", "Tucker (large)": "x-."}
  for m in METHODS:
    e = errors[m]
    mean = e.mean(axis=1)
    ax.errorbar(fractions, mean, yerr=e.std(axis=1) if e.shape[1] > 1 else None,
                fmt=styles[m], label=m, markersize=4, capsize=2)
  ax.axhline(TOL, color="0.6", lw=1, label="optimization tolerance")
  ax.set_yscale("log")
  ax.set_xlabel("fraction of observed elements")
  ax.set_ylabel("relative error on unobserved entries")
  ax.set_title("50x50x20, Tucker rank (7,8,9) (Tomioka et al. 2010, Fig. 1)")
  ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
  ax.grid(True, which="both", alpha=0.3)
  return fig


def run(quick: bool) -> _harness.Result:
  with jax.enable_x64(True):
    if quick:
      fractions, reps, max_iter_slow, repeats = [0.2, 0.35, 0.5, 0.65, 0.8], 1, 300, 3
    else:
      fractions = [round(0.05 * i, 2) for i in range(1, 20)]
      reps, max_iter_slow, repeats = 10, 2000, 10
    t0 = time.perf_counter()
    errors, raw = _curves(fractions, reps, max_iter_slow)
    curve_s = time.perf_counter() - t0
    load_before = os.getloadavg()[0]
    speed = _speed(repeats, numpy_full=not quick)
    speed["load_average_1min"] = [load_before, os.getloadavg()[0]]

  mean = {m: errors[m].mean(axis=1) for m in METHODS}
  frac = np.asarray(fractions)

  def at(m, f):
    return float(mean[m][int(np.argmin(np.abs(frac - f)))])

  constraint_from = _first_fraction_below(fractions, mean["Constraint"], 2e-3)
  mixture_from = _first_fraction_below(fractions, mean["Mixture"], 2e-3)
  c_ok = bool(np.all(mean["Constraint"][frac >= 0.35 - 1e-9] <= 2e-3))
  sc, sm = speed["Constraint"], speed["Mixture"]
  claims = [
      _harness.Claim("Constraint reaches the tolerance level (<= 2e-3) from 35% observed",
                     "from 35%", f"from {constraint_from:.0%}" if constraint_from else "never",
                     c_ok),
      _harness.Claim("Mixture reaches it only from about 80%", "~80% (drop 65-80%)",
                     f"from {mixture_from:.0%}" if mixture_from else "never",
                     mixture_from is not None and 0.65 <= mixture_from <= 0.85),
      _harness.Claim("As a Matrix, mode 3 (n=20) is still far off at 80%", "~0.1 at 80%",
                     f"{at('As a Matrix (mode 3)', 0.8):.2g} at 80%",
                     at("As a Matrix (mode 3)", 0.8) > 1e-2),
      _harness.Claim("Tucker with ranks x1.2 stays bad at every fraction", "~0.6-1",
                     f"min {float(mean['Tucker (large)'].min()):.2g}",
                     bool(mean["Tucker (large)"].min() > 0.1)),
      _harness.Claim("Tucker with the true ranks declines smoothly (non-convex EM)",
                     "0.1 at 45%, 1e-2 at 60%, 1e-5 at 85%",
                     f"{at('Tucker (exact)', 0.35):.2g} at 35%, {at('Tucker (exact)', 0.5):.2g} "
                     f"at 50%", None),
      _harness.Claim("Constraint solve, 35% observed, float64, <= 0.15 s (target)",
                     "MATLAB/Octave ~2-5 s", f"{sc['ours']['median_s']:.3f} s "
                     f"({sc['speedup']:.1f}x NumPy)", sc["ours"]["median_s"] <= 0.15),
      _harness.Claim("Mixture solve, 35% observed, float64, <= 0.4 s (target)",
                     "MATLAB/Octave ~2.5-9 s", f"{sm['ours']['median_s']:.3f} s "
                     f"({sm['speedup']:.1f}x NumPy)", sm["ours"]["median_s"] <= 0.4),
  ]
  curve_rows = [[f"{f:.2f}"] + [float(mean[m][i]) for m in METHODS]
                for i, f in enumerate(fractions)]
  tables = [
      "### Relative error on unobserved entries (mean over repetitions)\n\n" +
      _harness.markdown_table(["fraction"] + list(METHODS), curve_rows),
      "### Paper (read off Fig. 1 of the authors' repository, TKML10 fig1.png)\n\n" +
      _harness.markdown_table(
          ["method", "paper"],
          [("Constraint", "~2 at 30% -> ~1e-3 at 35%, then 5e-4-1e-3"),
           ("Mixture", "sharp drop 65-80%; ~3e-4 at 80%, 1e-4 at 95%"),
           ("As a Matrix modes 1, 2", "~3e-3 at 50%, ~1e-3 from 80%"),
           ("As a Matrix mode 3", "~0.1 at 80%, 2e-3 at 95%"),
           ("Tucker (exact)", "0.1 at 45%, 1e-2 at 60%, 1e-3 at 70-75%, 1e-5 at 85%"),
           ("Tucker (large)", "~0.6-1 everywhere")]),
      "### Speed at 35% observed, float64, same instance and tolerance\n\n" +
      _harness.markdown_table(
          ["solver", "ours median s", "ours CPU s", "ours compile s", "ours iters",
           "NumPy s" + (" (est. from 10 iters)" if quick else ""), "NumPy CPU s",
           "NumPy iters", "speedup", "ours error", "NumPy error"],
          [(n, s["ours"]["median_s"], s["ours_cpu_s"], s["ours_compile_s"],
            s["ours_iterations"], s["numpy_s"], s["numpy_cpu_s"], s["numpy_iterations"],
            s["speedup"], s["ours_error"],
            s["numpy_error"]) for n, s in speed.items() if n in ("Constraint", "Mixture")]),
  ]
  notes = (
      f"Instances: core N(0,1), factors Q of QR(randn), observed entries uniform without "
      f"replacement; lam = 0 (exact fit), tol = {TOL} on the relative duality gap, the "
      f"authors' default eta (Constraint 1/(10 std y), Mixture 10 std y). Tucker: EM with "
      f"HOOI sweeps from the zero-filled HOSVD (the paper used the N-way toolbox's ALS with "
      f"missing values, whose local minima give its larger, noisier errors). Curves took "
      f"{curve_s:.1f} s. The NumPy baseline runs the same iterations with numpy.linalg.svd per "
      f"unfolding (no Gram-matrix shortcut), BLAS limited to one thread (threadpoolctl; with "
      f"OpenBLAS's default threads it is ~100x slower on this loaded machine); both check the gap every 5 iterations. The machine is a shared 2-core CPU; absolute times vary with its load, the "
      f"ratio less so (1-minute load average during the timings: "
      f"{speed['load_average_1min'][0]:.1f} -> {speed['load_average_1min'][1]:.1f} on 2 cores). tensorly is not installed here and was not compared.")
  return _harness.Result(
      name=NAME, paper=PAPER, claims=claims, tables=tables,
      data={"shape": SHAPE, "ranks": RANKS, "large_ranks": LARGE_RANKS, "fractions": fractions,
            "repetitions": reps, "max_iter_slow": max_iter_slow,
            "errors": {m: errors[m] for m in METHODS}, "runs": raw, "speed": speed},
      figure=_figure(fractions, errors), notes=notes)
