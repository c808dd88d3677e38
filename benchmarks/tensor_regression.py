"""Tensor regression: overlapped, latent and scaled latent trace norms against ridge and matrices.

Wimalawarne, Tomioka, Sugiyama, "Theoretical and Experimental Analyses of Tensor-Based
Regression and Classification", Neural Computation 28(4), 2016 (arXiv:1509.01770).

Simulated regression ``y_i = <X_i, W*> + b + eps_i``: inputs with i.i.d. N(0, 1) entries,
``W*`` a random Tucker tensor (core N(0, 1), orthonormal factors, as the package's other
benchmarks), noise ``sigma = 0.1``, bias 0.5. The test MSE of the predictions is plotted
against the number of training samples for the three tensor norms, ridge regression and
the best single unfolding (the matrix trace norm of the one mode picked on validation),
each at its lambda picked on a validation set. Two regimes:

* (a) 16 x 4 x 4 of Tucker rank (2, 4, 4), low rank only in the large mode: the paper's
  analysis (the scaled latent bound scales with ``min_k r_k / n_k``) says the scaled latent
  norm wins;
* (b) 6 x 6 x 6 of Tucker rank (2, 2, 2), low rank in every mode: the overlapped norm wins.

Lambda grid: ``sigma sqrt(m)`` times each regularizer's dual norm of a standard Gaussian
tensor (the noise level the theory asks lambda to dominate), times ``c`` on a log grid.
All solves of one regularizer family for one training size run as one jitted ``lax.map`` over
(lambda, weights) of :func:`tomioka_jax.tensor.regression_solve`; the training sets are
nested and padded to the largest size with a sample mask, and both experiments' inputs are
zero-padded to one tensor shape (``PAD``, which changes no estimate), so each family compiles
once. Data are drawn with NumPy.

Quick mode: m in {40, 100, 200}, 3 lambdas, 1 repetition; full: m in 20..300 (7 sizes),
7 lambdas, 5 repetitions.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _harness
from tomioka_jax import tensor

PAPER = ("Wimalawarne, Tomioka, Sugiyama (2016), Theoretical and Experimental Analyses of "
         "Tensor-Based Regression and Classification, Neural Computation 28(4), arXiv:1509.01770")
NAME = "tensor_regression"

EXPERIMENTS = {"a": ((16, 4, 4), (2, 4, 4)), "b": ((6, 6, 6), (2, 2, 2))}
# The solvers see both experiments' inputs zero-padded to one shape (one compilation per
# family). Padding changes no estimate: the trace norms of a tensor and of its zero-padded
# copy are equal (zero rows and columns add no singular values), the dual ADMM's iterates
# stay zero off the true block (X_i is zero there), and the scaled latent weights and the
# default eta are taken from the true shape. The benchmark reports the largest entry of W
# off the true block (zero up to rounding).
PAD = (16, 6, 6)
TITLES = {"a": "(a) 16x4x4, rank (2,4,4): low rank only in the large mode",
          "b": "(b) 6x6x6, rank (2,2,2): low rank in every mode"}
SIGMA = 0.1
BIAS = 0.5
N_VAL, N_TEST = 200, 1000
TOL = 1e-3
MAX_ITER = 2000
CONFIGS = {
    # sizes: training-set sizes m; grid: lambda multipliers c; reps: repetitions; ridge: the
    # number of ridge lambdas on a log grid from 1e-2 to 1e3.
    "smoke": {"sizes": (10, 20), "grid": (0.2,), "reps": 1, "ridge": 3},
    "quick": {"sizes": (40, 100, 200), "grid": (0.05, 0.2, 0.8), "reps": 1, "ridge": 6},
    "full": {"sizes": (20, 40, 60, 100, 150, 200, 300),
             "grid": tuple(np.logspace(-1.6, 0.4, 7).tolist()), "reps": 5, "ridge": 11},
}

HEADLINE = (
    ": overlapped / latent / scaled-latent / single-unfolding / ridge regression and logistic "
    "classification by dual ADMM (`tensor_regression` benchmark, {mode}: {best_a} best when "
    "only the large mode is low rank; {best_b} best when every mode is low rank, test MSE "
    "{pairs_b} (overlapped vs latent); the paper's own sizes and numbers not verified)")

NOTES = """\
Setup (ours): W* of size {shape_a} with Tucker rank {ranks_a} (a) and {shape_b} with rank
{ranks_b} (b), X_i entries N(0,1), sigma {sigma}, bias {bias}; validation {n_val} and test
{n_test} samples; lambda = c sigma sqrt(m) R*(G) with c in {grid} (R* the regularizer's dual
norm, G a N(0,1) tensor); ridge (closed form, NumPy) lambda in {ridge_grid}; {reps}
repetition(s). Dual ADMM, tol {tol} (gap checked every 5 iterations), residual-balanced eta,
float64. Data drawn with NumPy (seeded by repetition, shape and ranks); inputs zero-padded to
{pad} for the solvers (one compilation per family); largest |W| entry off the true block
{pad_max:.1e}. The paper's exact sizes, ranks, sample counts and MSE values could not be
checked here (no access to the PDF's experiment section); its qualitative claims are marked
[mem, unverified]. First size (including compilation of both families' solvers)
{first_size_s:.1f} s; everything {total_s:.1f} s on a shared 2-core machine."""

METHODS = ("overlapped", "latent", "scaled_latent", "matrix", "ridge")
LABELS = {"overlapped": "overlapped", "latent": "latent", "scaled_latent": "scaled latent",
          "matrix": "best single unfolding", "ridge": "ridge (vector)"}


def _pad(t, n_lead=0):
  """Zero-pads the trailing tensor axes of ``t`` (after ``n_lead`` leading ones) to PAD."""
  widths = [(0, 0)] * n_lead + [(0, p - n) for p, n in zip(PAD, t.shape[n_lead:])]
  return np.pad(t, widths)


def _families(shape):  # noqa: D103
  """Per family: one (weights, lambda base) per regularizer; the base is the dual norm of a
  standard Gaussian tensor of ``shape``, estimated on one fixed draw (zero-padded to PAD,
  which leaves every dual norm unchanged)."""
  g = jnp.asarray(_pad(np.random.default_rng(7).standard_normal(shape)))
  k = len(shape)
  ones = jnp.ones((k,))
  scaled = tensor.scaled_latent_weights(shape, jnp.float64)  # of the true sizes, not PAD's
  over = [("overlapped", ones, float(tensor.overlapped_trace_norm_dual(g)))]
  for mode in range(k):
    over.append((f"matrix{mode}", jnp.zeros((k,)).at[mode].set(1),
                 float(tensor.spectral_norm(tensor.unfold(g, mode)))))
  latent = [("latent", ones, float(tensor.latent_trace_norm_dual(g))),
            ("scaled_latent", scaled, float(tensor.latent_trace_norm_dual(g, scaled)))]
  return {"overlapped": over, "latent": latent}


def _instance(seed, shape, ranks, m_max):
  """W* (random Tucker: core N(0, 1), factors Q of QR(randn)) and the (training,
  validation, test) sets, drawn with NumPy; inputs zero-padded to PAD."""
  rng = np.random.default_rng(seed)
  w = rng.standard_normal(ranks)
  for k, (n, r) in enumerate(zip(shape, ranks)):
    u = np.linalg.qr(rng.standard_normal((n, r)))[0]
    w = np.moveaxis(np.tensordot(u, w, axes=(1, k)), 0, k)
  n = m_max + N_VAL + N_TEST
  x = rng.standard_normal((n, *shape))
  y = x.reshape(n, -1) @ w.reshape(-1) + BIAS + SIGMA * rng.standard_normal(n)
  x = _pad(x, 1)
  split = (slice(0, m_max), slice(m_max, m_max + N_VAL), slice(m_max + N_VAL, n))
  return w, [(x[s], y[s]) for s in split]


def _make_solver(norm):
  """One jitted solve of a whole family: ``lax.map`` over its (lambda, weights) lanes.

  A sequential map, not ``vmap``: under ``vmap`` the while loop runs every lane until the
  slowest one stops and the every-5-iterations gap check (a ``lax.cond``) turns into a
  select that evaluates it at every iteration; here each lane stops at its own iteration.
  """
  def one(x, y, mask, lam, weights, eta_scale):
    # default_eta divides by the inputs' rms, which the padding zeros lower by
    # sqrt(size / PAD size): eta_scale undoes that, so the ADMM runs as on the true shape.
    eta = eta_scale * tensor.regression_default_eta(x, y, mask, lam, "squared")
    return tensor.regression_solve(x, y, mask, lam, eta, TOL, weights, MAX_ITER, 5, 10,
                                norm=norm, loss="squared", modes=tuple(range(len(PAD))))

  def family(x, y, mask, lams, weights, eta_scale):
    return jax.lax.map(lambda lw: one(x, y, mask, *lw, eta_scale), (lams, weights))
  return jax.jit(family)


def _ridge_path(x, y, m, lams):  # x may be zero-padded: zero columns get zero weights
  """Ridge with an unpenalized bias on the first m samples, in closed form (NumPy).

  ``min_{w, b} 1/2 ||y - X w - b||^2 + lam/2 ||w||^2`` (what ``tensor.fit_regression`` with
  ``norm="frobenius"`` solves on the dual): centre, then ``(Xc^T Xc + lam I) w = Xc^T yc``.
  """
  xm = x[:m].reshape(m, -1)
  x_mean, y_mean = xm.mean(0), y[:m].mean()
  xc, yc = xm - x_mean, y[:m] - y_mean
  gram, rhs = xc.T @ xc, xc.T @ yc
  w = np.stack([np.linalg.solve(gram + lam * np.eye(len(rhs)), rhs) for lam in lams])
  return w, y_mean - w @ x_mean


def _mse_lanes(w, b, x, y):
  """Test MSE of every lane's ``(W, b)`` (stacked on a leading axis) on ``(x, y)``."""
  pred = x.reshape(x.shape[0], -1) @ np.asarray(w).reshape(len(w), -1).T + np.asarray(b)[None, :]
  return np.mean((pred - y[:, None]) ** 2, axis=0)


def _unpad_residue(w, shape):
  """The entries of stacked weight tensors outside the true ``shape`` (zero in theory)."""
  keep = np.zeros(w.shape[1:], bool)
  keep[tuple(slice(0, n) for n in shape)] = True
  return w[:, ~keep]


def _run_size(solvers, families, data, shape, m, grid, ridge_grid):
  (x_tr, y_tr), (x_val, y_val), (x_te, y_te) = data
  mask = jnp.arange(x_tr.shape[0]) < m
  out, info = {}, {}
  pad_max = 0.0

  def pick(w, b, lams, names):
    # Lanes are grouped by member, len(lams) // len(names) lambdas each; keep the lambda with
    # the best validation MSE: (validation MSE, test MSE, lambda).
    val, test = _mse_lanes(w, b, x_val, y_val), _mse_lanes(w, b, x_te, y_te)
    per = len(lams) // len(names)
    for j, name in enumerate(names):
      i = min(range(j * per, (j + 1) * per), key=lambda i: val[i])
      out[name] = (float(val[i]), float(test[i]), float(lams[i]))

  for fam, members in families.items():
    lams = np.array([base * SIGMA * np.sqrt(m) * c for _, _, base in members for c in grid])
    weights = jnp.stack([w for _, w, _ in members for _ in grid])
    res = solvers[fam](jnp.asarray(x_tr), jnp.asarray(y_tr), mask, jnp.asarray(lams), weights,
                       np.sqrt(np.prod(shape) / np.prod(PAD)))
    pad_max = max(pad_max, float(np.max(np.abs(_unpad_residue(np.asarray(res.W), shape)))))
    info[fam] = dict(converged=float(jnp.mean(res.converged)),
                     max_iterations=int(jnp.max(res.iterations)))
    pick(res.W, res.b, lams, [name for name, _, _ in members])
  pick(*_ridge_path(x_tr, y_tr, m, ridge_grid), ridge_grid, ["ridge"])
  # The matrix baseline: the unfolding (and lambda) with the best validation error.
  mats = [k for k in out if k.startswith("matrix")]
  best_mode = min(mats, key=lambda k: out[k][0])
  out["matrix"] = out[best_mode] + (best_mode,)
  info["pad_max"] = pad_max
  return out, info


def _figure(sizes, mse):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
  styles = {"overlapped": "o-", "latent": "s-", "scaled_latent": "^-", "matrix": "d--",
            "ridge": "x:"}
  for ax, exp in zip(axes, EXPERIMENTS):
    for meth in METHODS:
      mean = mse[exp][meth].mean(1)
      ax.plot(sizes, mean, styles[meth], label=LABELS[meth])
    ax.axhline(SIGMA ** 2, color="grey", lw=0.8, ls="--", label="noise variance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of training samples m")
    ax.set_title(TITLES[exp], fontsize=10)
    ax.grid(alpha=0.3, which="both")
  axes[0].set_ylabel("test MSE")
  axes[0].legend(fontsize=8)
  fig.suptitle(f"Tensor regression: test MSE at the validation-picked lambda, sigma={SIGMA}",
               fontsize=11)
  fig.tight_layout()
  return fig


def experiment(config: dict) -> dict:
  """Test MSE of every method at its validation-picked lambda, per experiment, size, rep."""
  sizes, grid, reps = list(config["sizes"]), np.array(config["grid"]), config["reps"]
  m_max = max(sizes)
  ridge_grid = np.logspace(-2, 3, config["ridge"])
  mse = {e: {m: np.zeros((len(sizes), reps)) for m in METHODS} for e in EXPERIMENTS}
  picked = {e: [] for e in EXPERIMENTS}
  conv, max_it, pad_max = [], 0, 0.0
  with jax.enable_x64(True):
    # Both experiments' tensors are zero-padded to PAD, so each family compiles once.
    solvers = {fam: _make_solver(fam) for fam in ("overlapped", "latent")}
    t_start = time.perf_counter()
    first_done = None
    for e, (shape, ranks) in EXPERIMENTS.items():
      families = _families(shape)
      for rep in range(reps):
        _, data = _instance([1000 * rep + (1 if e == "a" else 2), *shape, *ranks], shape, ranks,
                            m_max)
        for i, m in enumerate(sizes):
          out, info = _run_size(solvers, families, data, shape, m, grid, ridge_grid)
          pad_max = max(pad_max, info.pop("pad_max"))
          if first_done is None:
            first_done = time.perf_counter() - t_start
          for meth in METHODS:
            mse[e][meth][i, rep] = out[meth][1]
          picked[e].append({"m": m, "rep": rep, "matrix_mode": out["matrix"][3],
                            **{k: out[k][2] for k in out if k != "matrix"}})
          conv += [v["converged"] for v in info.values()]
          max_it = max(max_it, *(v["max_iterations"] for v in info.values()))
  return {"sizes": sizes, "grid": grid, "ridge_grid": ridge_grid, "mse": mse,
          "picked_lambdas": picked, "converged_fraction": float(np.mean(conv)),
          "max_iterations": max_it, "pad_max_abs_w": pad_max, "first_size_s": first_done,
          "total_s": time.perf_counter() - t_start, "experiments": EXPERIMENTS}


def _mean(exp: dict) -> dict:
  return {e: {m: exp["mse"][e][m].mean(1) for m in METHODS} for e in EXPERIMENTS}


TENSOR_NORMS = ("overlapped", "latent", "scaled_latent")


def claims(config: dict, exp: dict, times: dict) -> list[_harness.Claim]:
  del config, times
  sizes, mean = exp["sizes"], _mean(exp)
  big = slice(len(sizes) // 2, None)  # the larger half of the sizes
  larger = [(i, m) for i, m in enumerate(sizes) if i >= len(sizes) // 2]

  def wins(e, meth, over):
    return bool(np.all(mean[e][meth][big] < np.min([mean[e][o][big] for o in over], 0)))

  def because(ok: bool, why: str) -> str:
    return "" if ok else why

  a_modes = sorted({p["matrix_mode"] for p in exp["picked_lambdas"]["a"]})
  ridge_ratio = max(np.max(np.min([mean[e][t] for t in TENSOR_NORMS], 0) / mean[e]["ridge"])
                    for e in EXPERIMENTS)
  a_wins = wins("a", "scaled_latent", ("overlapped", "latent"))
  b_wins = wins("b", "overlapped", ("latent", "scaled_latent"))
  b_matrix = wins("b", "overlapped", ("matrix",))
  converged = exp["converged_fraction"] > 0.95
  return [
      _harness.Claim("(a) low rank only in the large mode: scaled latent beats overlapped and "
                     "latent (larger half of m)",
                     "scaled latent best among tensor norms [mem, unverified]",
                     "; ".join(f"m={m}: SL {mean['a']['scaled_latent'][i]:.3g} / L "
                               f"{mean['a']['latent'][i]:.3g} / O {mean['a']['overlapped'][i]:.3g}"
                               for i, m in larger),
                     a_wins, reason=because(a_wins, "another tensor norm is better")),
      _harness.Claim("(b) low rank in every mode: overlapped beats latent and scaled latent "
                     "(larger half of m)",
                     "overlapped best [mem, unverified]",
                     "; ".join(f"m={m}: O {mean['b']['overlapped'][i]:.3g} / L "
                               f"{mean['b']['latent'][i]:.3g} / SL "
                               f"{mean['b']['scaled_latent'][i]:.3g}" for i, m in larger),
                     b_wins, reason=because(b_wins, "another tensor norm is better")),
      _harness.Claim("tensor norms beat the vector (ridge) baseline at every m, both regimes",
                     "tensor > vector [mem, unverified]",
                     f"best tensor / ridge MSE ratio <= {ridge_ratio:.3f}", bool(ridge_ratio < 1),
                     reason=because(ridge_ratio < 1, "ridge is as good at some m")),
      _harness.Claim("(b) overlapped beats the best single unfolding (larger half of m)",
                     "tensor > matrix [mem, unverified]",
                     "; ".join(f"m={m}: O {mean['b']['overlapped'][i]:.3g} / matrix "
                               f"{mean['b']['matrix'][i]:.3g}" for i, m in larger),
                     b_matrix, reason=because(b_matrix, "the single unfolding is as good")),
      _harness.Claim("(a) the best single unfolding (mode picked on validation) is about as "
                     "good as scaled latent: all low rank sits in one mode",
                     "- (our observation)",
                     f"picked modes {a_modes}; matrix/SL MSE ratio at largest m "
                     f"{mean['a']['matrix'][-1] / mean['a']['scaled_latent'][-1]:.2f}", None),
      _harness.Claim("dual ADMM solves reach the relative duality gap tol",
                     f"tol {TOL}", f"{100 * exp['converged_fraction']:.0f}% of the solves "
                     f"converged; max {exp['max_iterations']} iterations (cap {MAX_ITER})",
                     converged, reason=because(converged, "more than 5% hit the cap")),
  ]


def report(config: dict, exp: dict, times: dict) -> _harness.Report:
  del times
  sizes, mean = exp["sizes"], _mean(exp)
  rows = [(e, m) + tuple(mean[e][meth][i] for meth in METHODS)
          for e in EXPERIMENTS for i, m in enumerate(sizes)]
  table = _harness.markdown_table(["exp", "m"] + [LABELS[m] for m in METHODS], rows)
  best = {e: min(METHODS, key=lambda k, e=e: mean[e][k][-1]) for e in EXPERIMENTS}
  worst = {e: max(METHODS, key=lambda k, e=e: mean[e][k][-1]) for e in EXPERIMENTS}
  paper_table = _harness.markdown_table(
      ["setting", "paper (unverified, from memory)", "ours (this run)"],
      [("low rank only in one (large) mode", "scaled latent best; matrix of the right mode "
        "close", f"best at largest m: {best['a']}"),
       ("low rank in every mode", "overlapped best", f"best at largest m: {best['b']}"),
       ("vector (ridge) baseline", "worst",
        f"worst at largest m: {worst['a']} (a), {worst['b']} (b)")])
  best_tensor = {e: LABELS[min(TENSOR_NORMS, key=lambda k, e=e: mean[e][k][-1])]
                 for e in EXPERIMENTS}
  pairs = " and ".join(f"{mean['b']['overlapped'][i]:.2g} vs {mean['b']['latent'][i]:.2g} at "
                       f"m = {m}" for i, m in enumerate(sizes) if i >= len(sizes) // 2)
  (shape_a, ranks_a), (shape_b, ranks_b) = EXPERIMENTS["a"], EXPERIMENTS["b"]
  notes = NOTES.format(
      shape_a=shape_a, ranks_a=ranks_a, shape_b=shape_b, ranks_b=ranks_b, sigma=SIGMA,
      bias=BIAS, n_val=N_VAL, n_test=N_TEST, grid=np.round(exp["grid"], 3).tolist(),
      ridge_grid=np.round(exp["ridge_grid"], 3).tolist(), reps=config["reps"], tol=TOL,
      pad=PAD, pad_max=exp["pad_max_abs_w"], first_size_s=exp["first_size_s"],
      total_s=exp["total_s"])
  return _harness.Report(
      tables=["### Test MSE (mean over repetitions)\n\n" + table,
              "### Against the paper\n\n" + paper_table],
      figure=_figure(sizes, exp["mse"]), notes=notes,
      headline=HEADLINE.format(mode=config["mode"], best_a=best_tensor["a"],
                               best_b=best_tensor["b"], pairs_b=pairs))
