"""Structured Schatten norms: overlapped against latent denoising, and the MSE scaling laws.

Tomioka, Suzuki, "Convex Tensor Decomposition via Structured Schatten Norm Regularization",
NIPS 2013 (arXiv:1303.6370), the authors' ``exp_denoising.m``, ``plot_overlap_vs_latent_2013.m``
and ``plot_nips2013.m``.

* Experiment A (Figure 1): 50 x 50 x 20 tensors of Tucker rank (r, r, 3), core N(0, 1) and
  orthonormal factors, noise sigma = 0.1, denoised at the authors' fixed lambdas (overlapped
  0.886, latent 3.79: grid points 7 and 11 of 20 log-spaced values in [0.1, 100]; the full
  mode also takes the best lambda of the grid). Error ``||X_hat - X*||_F``. The overlapped
  error grows with r; the latent one stays flat, because mode 3 keeps rank 3.
* Experiment B (Figure 2): random rank triples (each ``r_k`` uniform in ``1..n_k``) at
  50 x 50 x 20 and 80 x 80 x 40, lambda 0.89 (overlapped) and 3.8 (latent), x1.6 at the
  larger size; the MSE ``||X_hat - X*||^2 / N`` against each method's complexity measure
  (:func:`tomioka_jax.tensor.overlapped_complexity`, :func:`latent_complexity`) should lie
  on one line through both sizes.
* Speed (``timings``): one 50 x 50 x 20 instance per method against the plain NumPy ADMM of
  ``benchmarks/_tensor_numpy_admm.py`` (same iterations, defaults and stopping rule).

Quick mode runs r in {5, 20, 50} with one repetition at the fixed lambdas, 5 rank triples at
50 x 50 x 20 and 1 at 80 x 80 x 40 (its two solves take ~3 s here); the full mode runs the
paper's r = 5..50 x 10 repetitions x 20 lambdas and 20 triples x 10 repetitions per size.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import threadpoolctl

from benchmarks import _harness
from benchmarks import _tensor_numpy_admm as numpy_admm
from tomioka_jax import tensor

PAPER = ("Tomioka, Suzuki (2013), Convex Tensor Decomposition via Structured Schatten Norm "
         "Regularization, NIPS 2013, arXiv:1303.6370")
NAME = "tensor_schatten"

SIGMA = 0.1
TOL = 1e-4
LAMBDAS = np.exp(np.linspace(np.log(0.1), np.log(100), 20))
LAM_OVERLAP, LAM_LATENT = LAMBDAS[6], LAMBDAS[10]  # the authors' grid points 7 and 11
SOLVERS = {"overlapped": tensor.overlapped_schatten_denoising,
           "latent": tensor.latent_schatten_denoising}
SHAPE_A = (50, 50, 20)
SPEED_SHAPE, SPEED_RANKS = (50, 50, 20), (20, 20, 3)

CONFIGS = {
    # rs x reps_a: Experiment A's ranks (r, r, 3) and repetitions; lambda_grid: also every
    # lambda of the authors' grid (the best one); sizes_b: Experiment B's (shape, rank
    # triples, lambda scale), reps_b repetitions per triple; repeats: timed solves; x64:
    # float64 data (smoke: float32, whose solves compile one loop instead of the float32
    # start's two).
    "smoke": {"rs": (5, 20), "reps_a": 1, "lambda_grid": False,
              "sizes_b": (((50, 50, 20), 1, 1.0), ((80, 80, 40), 1, 1.6)), "reps_b": 1,
              "repeats": 1, "x64": False},
    "quick": {"rs": (5, 20, 50), "reps_a": 1, "lambda_grid": False,
              "sizes_b": (((50, 50, 20), 5, 1.0), ((80, 80, 40), 1, 1.6)), "reps_b": 1,
              "repeats": 3, "x64": True},
    "full": {"rs": tuple(range(5, 51, 5)), "reps_a": 10, "lambda_grid": True,
             "sizes_b": (((50, 50, 20), 20, 1.0), ((80, 80, 40), 20, 1.6)), "reps_b": 10,
             "repeats": 10, "x64": True},
}

HEADLINE = (
    "(Figs. 1-2, {mode} run): rank (r, r, 3), the overlapped error grows x{grows:.1f} from "
    "r = {r_lo} to {r_hi} while the latent error stays flat (x{flat:.2f} over r >= 20); MSE "
    "linear in each complexity measure with one slope for {size_names} (within {rel_o:.0f}% "
    "overlapped, {rel_l:.0f}% latent); denoising 50x50x20 {speed_o:.1f}x (overlapped) and "
    "{speed_l:.1f}x (latent) faster than the plain ADMM in NumPy")

NOTES = """\
Solvers: the fully observed Constraint (overlapped) and Mixture (latent) ADMMs, run by the
tensor family's engine with its tuned defaults (tensor.ADMMOptions(): the gap checked every
5 iterations, latent over-relaxed with 1.8, both starting in float32 and
certified in float64), tol {tol} on the relative duality gap (checked every 5 iterations),
from the authors' default eta, float64 data; the speed table also times the paper's plain
ADMM (tensor.PAPER_ADMM) on the same instance. Complexity measures: overlapped sigma^2
(mean_k sqrt(1/n_k))^2 (mean_k sqrt(r_k))^2; latent sigma^2 min_k r_k / min_k n_k (the
theorem's form; the authors' plot caps min_k r_k by the summed ranks of a noiseless latent
split). Experiment B uses only the middle lambda of the authors' three (the one their fit
uses). Experiment A took {time_a:.1f} s, B {time_b:.1f} s (experiment phase). NumPy
baseline: numpy.linalg.svd per unfolding, one BLAS thread. The speed solves run alone on an
otherwise idle machine (the runner's timings phase), {repeats} timed call(s) each after a
compiling one; absolute times vary with the shared 2-core machine's load."""

PAPER_FIGS = (
    ("Fig. 1: overlapped error, r = 5 -> 50", "~10 -> ~25"),
    ("Fig. 1: latent error", "flat, ~10"),
    ("Fig. 2: MSE against the complexity measure", "one line through both sizes"))


def _instance(rng, shape, ranks):
  core = rng.standard_normal(ranks)
  factors = [np.linalg.qr(rng.standard_normal((n, r)))[0] for n, r in zip(shape, ranks)]
  # Mode by mode (optimize=True): the one-shot contraction costs prod(n) * prod(r) flops,
  # about a minute at 80x80x40 with ranks near (40, 40, 20).
  x = np.einsum("abc,ia,jb,kc->ijk", core, *factors, optimize=True)
  return x, x + SIGMA * rng.standard_normal(shape)


def _solve(method, y, lam):
  res = SOLVERS[method](jnp.asarray(y), float(lam), tol=TOL)
  return np.asarray(res.X), int(res.iterations), bool(res.converged)


def _name(shape) -> str:
  return "x".join(map(str, shape))


# --------------------------------------------------------------------------- experiment


def _experiment_a(rs, reps, with_grid):
  rng = np.random.default_rng(2013)
  fixed = {m: np.zeros((len(rs), reps)) for m in SOLVERS}
  best = {m: np.zeros((len(rs), reps, len(LAMBDAS))) for m in SOLVERS} if with_grid else None
  for i, r in enumerate(rs):
    for rep in range(reps):
      x, y = _instance(rng, SHAPE_A, (r, r, 3))
      for m, lam in (("overlapped", LAM_OVERLAP), ("latent", LAM_LATENT)):
        fixed[m][i, rep] = np.linalg.norm(_solve(m, y, lam)[0] - x)
        if with_grid:
          for j, lam_j in enumerate(LAMBDAS):
            best[m][i, rep, j] = np.linalg.norm(_solve(m, y, lam_j)[0] - x)
  return fixed, best


def _experiment_b(sizes, reps):
  rng = np.random.default_rng(1303)
  out = {}
  for shape, n_triples, scale in sizes:
    shape = tuple(shape)
    rows = []
    for _ in range(n_triples):
      ranks = tuple(int(max(1, round(u * n))) for u, n in zip(rng.random(3), shape))
      mse = {"overlapped": [], "latent": []}
      for _ in range(reps):
        x, y = _instance(rng, shape, ranks)
        for m, lam in (("overlapped", LAM_OVERLAP), ("latent", LAM_LATENT)):
          mse[m].append(np.mean((_solve(m, y, lam * scale)[0] - x) ** 2))
      rows.append({"ranks": ranks,
                   "overlapped_complexity": tensor.overlapped_complexity(shape, ranks, SIGMA),
                   "latent_complexity": tensor.latent_complexity(shape, ranks, SIGMA),
                   "overlapped_mse": float(np.mean(mse["overlapped"])),
                   "latent_mse": float(np.mean(mse["latent"]))})
    out[_name(shape)] = rows
  return out


def _slope(xs, ys):
  """Least-squares slope through the origin and the R^2 of that fit."""
  xs, ys = np.asarray(xs), np.asarray(ys)
  c = float(xs @ ys / (xs @ xs))
  if len(xs) < 3:  # R^2 about the mean says nothing with one or two points
    return c, float("nan")
  r2 = 1 - np.sum((ys - c * xs) ** 2) / np.sum((ys - ys.mean()) ** 2)
  return c, float(r2)


def experiment(config: dict) -> dict:
  """Experiment A (Fig. 1) and B (Fig. 2), and B's slopes per size and through both."""
  rs = list(config["rs"])
  with jax.enable_x64(config["x64"]):
    t0 = time.perf_counter()
    fixed, best = _experiment_a(rs, config["reps_a"], config["lambda_grid"])
    time_a = time.perf_counter() - t0
    t0 = time.perf_counter()
    scaling = _experiment_b(config["sizes_b"], config["reps_b"])
    time_b = time.perf_counter() - t0
  fits = {}
  for m in SOLVERS:
    fits[m] = {s: _slope([r[f"{m}_complexity"] for r in rows], [r[f"{m}_mse"] for r in rows])
               for s, rows in scaling.items()}
    all_rows = [r for rows in scaling.values() for r in rows]
    fits[m]["all"] = _slope([r[f"{m}_complexity"] for r in all_rows],
                            [r[f"{m}_mse"] for r in all_rows])
  return {"experiment_a": {"r": rs, "errors_fixed": fixed, "errors_grid": best,
                           "lambda_overlap": LAM_OVERLAP, "lambda_latent": LAM_LATENT,
                           "lambdas": LAMBDAS},
          "experiment_b": scaling, "fits": fits, "time_a": time_a, "time_b": time_b}


# --------------------------------------------------------------------------- timings


def timings(config: dict) -> dict:
  """One instance per method: the tuned solve, our plain ADMM and the NumPy ADMM."""
  repeats = config["repeats"]
  with jax.enable_x64(config["x64"]):
    rng = np.random.default_rng(7)
    x, y = _instance(rng, SPEED_SHAPE, SPEED_RANKS)
    y_j = jnp.asarray(y)
    mask = np.ones(y.shape, bool)
    out = {}
    for method, lam, ref in (("overlapped", LAM_OVERLAP, numpy_admm.constraint),
                             ("latent", LAM_LATENT, numpy_admm.mixture)):
      solve = SOLVERS[method]
      timing = _harness.timeit(lambda s=solve, lam=lam: s(y_j, float(lam), tol=TOL),
                               repeats=repeats)
      res = solve(y_j, float(lam), tol=TOL)
      # The same solve with the paper's plain ADMM (what the denoisers ran before the tuned
      # engine): fixed eta, no over-relaxation, float64 throughout.
      plain = _harness.timeit(
          lambda s=solve, lam=lam: s(y_j, float(lam), tol=TOL, options=tensor.PAPER_ADMM),
          repeats=repeats)
      res_plain = solve(y_j, float(lam), tol=TOL, options=tensor.PAPER_ADMM)
      # One BLAS thread: OpenBLAS's threads oversubscribe this shared 2-core machine.
      with threadpoolctl.threadpool_limits(1):
        t0 = time.perf_counter()
        # The NumPy baseline runs the paper's plain ADMM (fixed eta, no over-relaxation).
        x_ref, it_ref, _ = ref(mask, y, lam=float(lam), tol=TOL, adaptive_eta=False,
                               relaxation=1.0)
        ref_s = time.perf_counter() - t0
      out[method] = {"ours": timing.as_dict(), "ours_iterations": int(res.iterations),
                     "plain": plain.as_dict(), "plain_iterations": int(res_plain.iterations),
                     "plain_error": float(np.linalg.norm(np.asarray(res_plain.X) - x)),
                     "tuned_over_plain": timing.median_s / plain.median_s,
                     "numpy_s": ref_s, "numpy_iterations": int(it_ref),
                     "speedup": ref_s / timing.median_s,
                     "max_abs_diff": float(np.abs(np.asarray(res.X) - x_ref).max()),
                     "ours_error": float(np.linalg.norm(np.asarray(res.X) - x))}
  return out


# --------------------------------------------------------------------------- claims


def _figure1(exp: dict):
  """Experiment A's mean errors: r, overlapped, latent, and the judged ratios."""
  a = exp["experiment_a"]
  rs = a["r"]
  over, lat = a["errors_fixed"]["overlapped"].mean(1), a["errors_fixed"]["latent"].mean(1)
  # Both errors rise from r = 5, where the whole tensor is small; the paper's point is the
  # regime r >> 3 (the mode-3 rank), so flatness is judged from r = 20 on.
  upper = np.asarray(rs) >= 20
  return {"rs": rs, "over": over, "lat": lat, "upper": upper, "grows": over[-1] / over[0],
          "flat": lat[upper].max() / lat[upper].min(),
          "over_upper": over[upper].max() / over[upper].min()}


def _same_slope(exp: dict, m: str):
  small_name, large_name = list(exp["experiment_b"])[:2]
  small, large = exp["fits"][m][small_name][0], exp["fits"][m][large_name][0]
  return small, large, abs(large / small - 1), small_name, large_name


def claims(config: dict, exp: dict, times: dict) -> list[_harness.Claim]:
  del config
  f1 = _figure1(exp)
  rs, over, lat, upper = f1["rs"], f1["over"], f1["lat"], f1["upper"]
  out = [
      _harness.Claim("Fig. 1: overlapped error grows with r (rank (r,r,3), 50x50x20)",
                     "grows from ~10 to ~25 over r=5..50 [fig, y range 6-30]",
                     f"{over[0]:.1f} at r={rs[0]} -> {over[-1]:.1f} at r={rs[-1]} "
                     f"(x{f1['grows']:.2f})", bool(f1["grows"] > 1.4)),
      _harness.Claim("Fig. 1: latent error stays flat in r (judged over r >= 20)",
                     "flat (~10) [fig]",
                     f"{lat[upper].min():.1f} .. {lat[upper].max():.1f} over r >= 20 "
                     f"(x{f1['flat']:.2f}; overlapped x{f1['over_upper']:.2f}); {lat[0]:.1f} at "
                     f"r={rs[0]}",
                     bool(f1["flat"] < 1.25 and f1["over_upper"] > 1.25)),
  ]
  for m in SOLVERS:
    small, large, rel, small_name, large_name = _same_slope(exp, m)
    out.append(_harness.Claim(
        f"Fig. 2: {m} MSE linear in its complexity, one slope for both sizes",
        "linear, same slope",
        f"slopes {small:.3g} ({small_name}) / {large:.3g} ({large_name}), differ "
        f"{100 * rel:.0f}%; R^2 of one line {exp['fits'][m]['all'][1]:.3f}",
        bool(rel < 0.3 and exp["fits"][m]["all"][1] > 0.8)))
  for m, s in times.items():
    out.append(_harness.Claim(
        f"speed: {m} denoising 50x50x20 vs plain NumPy ADMM", "-",
        f"{s['ours']['median_s']:.3f} s vs {s['numpy_s']:.3f} s (x{s['speedup']:.1f}); "
        f"tuned engine {s['tuned_over_plain']:.2f}x the time of our plain ADMM "
        f"({s['ours_iterations']} vs {s['plain_iterations']} iterations)", None))
  return out


# --------------------------------------------------------------------------- report


def report(config: dict, exp: dict, times: dict) -> _harness.Report:
  f1 = _figure1(exp)
  rs, over, lat = f1["rs"], f1["over"], f1["lat"]
  best, scaling, fits = exp["experiment_a"]["errors_grid"], exp["experiment_b"], exp["fits"]
  names = list(scaling)
  table_a = _harness.markdown_table(
      ["r", "overlapped error", "latent error"] +
      (["overlapped best-lambda", "latent best-lambda"] if best is not None else []),
      [(r, over[i], lat[i]) + ((best["overlapped"].mean(1).min(-1)[i],
                                best["latent"].mean(1).min(-1)[i]) if best is not None else ())
       for i, r in enumerate(rs)])
  table_b = _harness.markdown_table(
      ["size", "ranks", "overlapped complexity", "overlapped MSE", "latent complexity",
       "latent MSE"],
      [(s, r["ranks"], r["overlapped_complexity"], r["overlapped_mse"],
        r["latent_complexity"], r["latent_mse"]) for s, rows in scaling.items() for r in rows])
  table_fit = _harness.markdown_table(
      ["method"] + [f"slope {s} (R^2)" for s in names] + ["one line (R^2)"],
      [(m,) + tuple("%.3g (%.2f)" % fits[m][s] for s in names) + ("%.3g (%.2f)" % fits[m]["all"],)
       for m in SOLVERS])
  table_speed = _harness.markdown_table(
      ["method", "ours median s", "ours compile s", "ours iters", "ours plain ADMM s",
       "plain iters", "tuned / plain time", "NumPy s", "NumPy iters", "speedup",
       "max |X_ours - X_numpy|", "error ||X - X*||", "plain error"],
      [(m, s["ours"]["median_s"], s["ours"]["compile_s"], s["ours_iterations"],
        s["plain"]["median_s"], s["plain_iterations"], f"{s['tuned_over_plain']:.2f}",
        s["numpy_s"], s["numpy_iterations"], s["speedup"], s["max_abs_diff"], s["ours_error"],
        s["plain_error"]) for m, s in times.items()])
  i20 = int(np.argmax(np.asarray(rs) >= 20))
  table_paper = _harness.markdown_table(
      ["quantity", "paper [fig]", "ours"],
      [(PAPER_FIGS[0][0], PAPER_FIGS[0][1], f"{over[0]:.1f} -> {over[-1]:.1f} (r = {rs[0]} -> "
                                            f"{rs[-1]})"),
       (PAPER_FIGS[1][0], PAPER_FIGS[1][1], f"{lat[i20:].min():.1f}-{lat[i20:].max():.1f} "
                                            f"over r >= 20"),
       (PAPER_FIGS[2][0], PAPER_FIGS[2][1],
        "; ".join(f"{m} slopes " + " / ".join(f"{fits[m][s][0]:.3g}" for s in names)
                  for m in SOLVERS))])
  tables = ["### Experiment A (Fig. 1): error ||X - X*||_F, mean over repetitions\n\n" + table_a,
            "### Experiment B (Fig. 2): MSE against the complexity measures\n\n" + table_b,
            "### Experiment B: slopes of MSE against complexity (fit through the origin)\n\n" +
            table_fit,
            "### Against the paper (read off its figures)\n\n" + table_paper,
            "### Speed, float64, tol 1e-4, same instance\n\n" + table_speed]
  rel = {m: _same_slope(exp, m)[2] for m in SOLVERS}
  return _harness.Report(
      tables=tables, figure=_figure(rs, exp["experiment_a"]["errors_fixed"], best, scaling,
                                    fits),
      notes=NOTES.format(tol=TOL, time_a=exp["time_a"], time_b=exp["time_b"],
                         repeats=config["repeats"]),
      headline=HEADLINE.format(mode=config["mode"], grows=f1["grows"], r_lo=rs[0],
                               r_hi=rs[-1], flat=f1["flat"], size_names=" and ".join(names),
                               rel_o=100 * rel["overlapped"], rel_l=100 * rel["latent"],
                               speed_o=times["overlapped"]["speedup"],
                               speed_l=times["latent"]["speedup"]))


def _figure(rs, fixed, best, scaling, fits):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
  ax = axes[0]
  for m, lam, style, color in (("overlapped", LAM_OVERLAP, "o-", "C0"),
                               ("latent", LAM_LATENT, "s-", "C1")):
    e = fixed[m]
    ax.errorbar(rs, e.mean(1), yerr=e.std(1) if e.shape[1] > 1 else None, fmt=style,
                color=color, capsize=2, label=f"{m} Schatten-1, lambda={lam:.2f}")
    if best is not None:
      ax.plot(rs, best[m].mean(1).min(-1), style[0] + "--", color=color, alpha=0.6,
              label=f"{m}, best lambda")
  ax.set_ylim(6, 30)
  ax.set_xlabel("rank of the first two modes r (rank (r, r, 3))")
  ax.set_ylabel("estimation error ||W - W*||_F")
  ax.set_title("50x50x20, sigma=0.1 (Tomioka-Suzuki 2013, Fig. 1)")
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=8)
  for ax, m, label in ((axes[1], "overlapped", "Tucker rank complexity"),
                       (axes[2], "latent", "latent rank complexity")):
    xmax = 0.0
    for (shape, rows), marker in zip(scaling.items(), ("o", "^")):
      xs = [r[f"{m}_complexity"] for r in rows]
      ys = [r[f"{m}_mse"] for r in rows]
      xmax = max(xmax, max(xs))
      ax.plot(xs, ys, marker, label=shape)
    c = fits[m]["all"][0]
    ax.plot([0, xmax], [0, c * xmax], "--", color="0.5", label=f"slope {c:.3g}")
    ax.set_xlabel(f"{label} (sigma^2 x measure)")
    ax.set_ylabel(f"mean squared error ({m})")
    ax.set_title(f"{m.capitalize()} approach (Fig. 2)")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  return fig
