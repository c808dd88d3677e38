"""Federici, Tomioka, Forré 2021: the four criteria on CMNIST, d-CMNIST and y-CMNIST, exactly.

Each dataset is its discrete joint p(e, y, c, d) with x = (c, d) (20 observations); the encoder
q(z|x) is a free table over 64 codes, and each criterion -I(y;z) + lambda R (information
bottleneck R = I(x;z), independence I(e;z), sufficiency I(e;y|z), separation I(e;z|y)) is
minimised on the training joint (environments 0 and 1) exactly, with the reference's schedule
(Adam, lr 1e-3, 5000 steps, then checks every 1000 until the train/test cross-entropies move by
less than 1e-4). Every lambda of the sweep and every restart of one criterion and dataset is one
compiled solve (``vmap`` over a ``lax.while_loop``). The induced predictor q(y|z) is scored by
its cross-entropy on the training joint and on the test environment (e = 2, colours flipped).

Side by side: the reference implementation's own results (mfederici/dsit, PyTorch), read from
its committed ``results/points.csv`` (the reference predictors) and ``results/trajectories.csv``
(the criteria at lambda = 1e6, information bottleneck at lambda = 1).
"""

from __future__ import annotations

import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _harness
from tomioka_jax import representation

PAPER = ("Federici, Tomioka, Forré 2021, An Information-theoretic Approach to Distribution "
         "Shifts, NeurIPS 2021, arXiv:2106.03783")
NAME = "dist_shift"

DATASETS = representation.CMNIST_VARIANTS
CRITERIA = ("independence", "sufficiency", "separation", "information_bottleneck")
LABELS = {"independence": "Independence", "sufficiency": "Sufficiency",
          "separation": "Separation", "information_bottleneck": "IB"}
FEATURES = {"picture": ("c", "d"), "colour": "c", "digit": "d", "prior": ()}

# mfederici/dsit results/points.csv: (train, test) cross-entropy of each reference predictor.
REFERENCE_PREDICTORS = {
    "CMNIST": {"picture": (0.354463, 1.381331), "colour": (0.422709, 1.723660),
               "digit": (0.562335, 0.562335), "prior": (0.693147, 0.693147)},
    "d-CMNIST": {"picture": (0.317119, 1.526894), "colour": (0.376625, 1.886365),
                 "digit": (0.562335, 0.562335), "prior": (0.693147, 0.693147)},
    "y-CMNIST": {"picture": (0.317512, 1.526235), "colour": (0.376190, 1.890942),
                 "digit": (0.562335, 0.562335), "prior": (0.693147, 0.693147)},
}
# mfederici/dsit results/trajectories.csv: (train, test) at the last lambda of each sweep
# (1e6 - 1; the information bottleneck's sweep ends at 1).
REFERENCE_CRITERIA = {
    "CMNIST": {"independence": (0.422735, 1.723491), "sufficiency": (0.562436, 0.562459),
               "separation": (0.562467, 0.562486), "information_bottleneck": (0.693147, 0.693147)},
    "d-CMNIST": {"independence": (0.531599, 1.531934), "sufficiency": (0.562161, 0.563008),
                 "separation": (0.545907, 1.141032),
                 "information_bottleneck": (0.693147, 0.693147)},
    "y-CMNIST": {"independence": (0.692441, 0.700257), "sufficiency": (0.348863, 1.164724),
                 "separation": (0.562434, 0.562466),
                 "information_bottleneck": (0.693147, 0.693147)},
}
TOLERANCE = 1e-3  # nats: how close a cell must be to the reference's
# The range dsit's own curve spans over its last 8 lambdas (1.4e5 to 1e6; IB: 0.81 to 1),
# ((train lo, hi), (test lo, hi)): how reproducible the reference's end point is in itself.
REFERENCE_TAIL_RANGES = {
    "CMNIST": {"independence": ((0.4227, 0.4227), (1.7235, 1.7235)),
               "sufficiency": ((0.5624, 0.5625), (0.5625, 0.5626)),
               "separation": ((0.5624, 0.5625), (0.5625, 0.5625)),
               "information_bottleneck": ((0.6931, 0.6931), (0.6931, 0.6931))},
    "d-CMNIST": {"independence": ((0.5312, 0.5316), (1.5319, 1.5344)),
                 "sufficiency": ((0.5619, 0.5622), (0.5627, 0.5638)),
                 "separation": ((0.5459, 0.5459), (1.1410, 1.1412)),
                 "information_bottleneck": ((0.6931, 0.6931), (0.6931, 0.6931))},
    "y-CMNIST": {"independence": ((0.6921, 0.6925), (0.6981, 0.7033)),
                 "sufficiency": ((0.3488, 0.3489), (1.1647, 1.1649)),
                 "separation": ((0.5624, 0.5624), (0.5625, 0.5626)),
                 "information_bottleneck": ((0.6931, 0.6931), (0.6931, 0.6931))},
}

CONFIGS = {
    # num_lambdas: the sweep exp(linspace(0, log(top + 1), n)) - 1 (top = 1e6; 1 for the IB);
    # restarts: random initialisations per lambda (the lowest final loss is kept; the reference
    # ran one per lambda, as the full config does); the rest is the reference's schedule.
    "smoke": {"num_lambdas": 2, "restarts": 1, "num_codes": 8, "initial_iterations": 200,
              "check_every": 100, "max_iterations": 400},
    "quick": {"num_lambdas": 6, "restarts": 2, "num_codes": 64, "initial_iterations": 5000,
              "check_every": 1000, "max_iterations": 100_000},
    "full": {"num_lambdas": 50, "restarts": 1, "num_codes": 64, "initial_iterations": 5000,
             "check_every": 1000, "max_iterations": 100_000},
}

HEADLINE = (
    "({mode}): exact optimisation of the four criteria over a {num_codes}-code encoder on the "
    "discrete CMNIST, d-CMNIST and y-CMNIST joints against the reference's table: {matched}/24 "
    "train/test cross-entropies at lambda = 1e6 within 1e-3 nats of dsit's (largest gap "
    "{worst:.4f}); test cross-entropy worse than the prior's for {failures}; all "
    "{num_lambdas} x 4 x 3 sweeps in {solve_s:.0f} s")

NOTES = """\
Schedule: Adam (lr 1e-3) from standard-normal logits of q(z|x) ({num_codes} codes), {initial}
steps, then a check every {check} steps, stopping when the pair (train CE, test CE) moved by
at most 1e-4 since the last check (the reference's rule: it watches the cross-entropies, not the
loss), capped at {max_it} steps; {restarts} restart(s) per lambda (with more than one, the
one with the lowest final criterion is kept, re-evaluated in float64: in float32 the term
lambda R at lambda = 1e6 is rounding noise of the order of I(y;z) itself).
{num_lambdas} lambdas per criterion, exp(linspace(0, log(1e6), n)) - 1 (information
bottleneck: exp(linspace(0, log 2, n)) - 1).
Solves that hit the cap: {capped}. Run time of the {num_solves} solves: {solve_s:.0f} s
(compilation included, one compile per criterion).

What a cell at lambda = 1e6 can be compared to: on CMNIST and in the separation/sufficiency
cells the optimum is a clean predictor (the colour, the digit) and every seed we tried lands on
it.
Two cells are not clean. d-CMNIST independence: dsit's own curve sits at 0.5312 / 1.5344 for
lambda from 4.5e4 to 4e5 and moves to 0.5316 / 1.5319 only at its last two lambdas; the
optimum there is a mixture that Adam approaches slowly. y-CMNIST independence is nearly the
prior (train 0.692): its test cross-entropy depends on which sliver of information survives and
varies by +-3e-3 between restarts and between neighbouring lambdas in dsit's curve (0.698 to
0.703), so the 1e-3 match there is luck of the seed, for them as for us. Worst cell here:
{worst_cell} ({worst:.4f})."""


def _lambdas(criterion: str, n: int) -> np.ndarray:
  top = 1.0 if criterion == "information_bottleneck" else 1e6
  return np.exp(np.linspace(0.0, math.log(top + 1.0), n)) - 1.0


@functools.partial(jax.jit, static_argnames=("criterion", "num_codes", "initial_iterations",
                                             "check_every", "max_iterations"))
def _sweep(keys, lams, train, test, *, criterion, num_codes, initial_iterations, check_every,
           max_iterations):
  """Every (lambda, restart) pair of one criterion: one compiled program."""
  def one(key, lam):
    return representation.fit_discrete_encoder(
        key, train, test, criterion, lam, num_codes=num_codes,
        initial_iterations=initial_iterations, check_every=check_every,
        max_iterations=max_iterations)
  return jax.vmap(jax.vmap(one, in_axes=(0, None)), in_axes=(None, 0))(keys, lams)


def _float64_losses(logits, train, criterion, lams) -> np.ndarray:
  with jax.enable_x64(True):
    train64 = jnp.asarray(np.asarray(train, np.float64))
    fn = jax.vmap(jax.vmap(lambda l, lam: representation.criterion_loss(l, train64, criterion,
                                                                        lam),
                           in_axes=(0, None)), in_axes=(0, 0))
    return np.asarray(fn(jnp.asarray(np.asarray(logits, np.float64)),
                         jnp.asarray(np.asarray(lams, np.float64))))


def experiment(config: dict) -> dict:
  """Reference predictors and every criterion's sweep on the three datasets."""
  predictors, curves, capped, solves = {}, {}, 0, 0
  t0 = time.perf_counter()
  for dataset in DATASETS:
    train, test = representation.split_environments(representation.cmnist_distribution(dataset))
    predictors[dataset] = {
        name: [float(v) for v in representation.feature_cross_entropies(train, test, feats)]
        for name, feats in FEATURES.items()}
    for ci, criterion in enumerate(CRITERIA):
      lams = _lambdas(criterion, config["num_lambdas"])
      keys = jax.random.split(jax.random.key(1000 * DATASETS.index(dataset) + ci),
                              config["restarts"])
      fit = _sweep(keys, jnp.asarray(lams, jnp.float32), train, test, criterion=criterion,
                   num_codes=config["num_codes"],
                   initial_iterations=config["initial_iterations"],
                   check_every=config["check_every"], max_iterations=config["max_iterations"])
      # [lambda, restart]; with one restart there is nothing to choose (and nothing to compile)
      losses = (_float64_losses(fit.logits, train, criterion, lams) if config["restarts"] > 1
                else np.asarray(fit.loss, np.float64))
      best = np.argmin(losses, axis=1)
      pick = lambda a: np.take_along_axis(np.asarray(a), best[:, None], axis=1)[:, 0]
      capped += int((~np.asarray(fit.converged)).sum())
      solves += int(np.asarray(fit.converged).size)
      curves[(dataset, criterion)] = {
          "lambda": lams.tolist(),
          "train_ce": pick(fit.train_cross_entropy).tolist(),
          "test_ce": pick(fit.test_cross_entropy).tolist(),
          "loss": pick(losses).tolist(),
          "regularizer": pick(fit.regularizer).tolist(),
          "iterations": pick(fit.iterations).tolist(),
          "restart_test_ce_at_top": np.asarray(fit.test_cross_entropy)[-1].tolist(),
      }
  solve_s = time.perf_counter() - t0
  return {"predictors": predictors,
          "curves": {f"{d}/{c}": v for (d, c), v in curves.items()},
          "capped": capped, "num_solves": solves, "solve_s": solve_s}


def _table_cells(exp: dict) -> list[tuple]:
  """(dataset, criterion, ours train, ours test, ref train, ref test, max gap)."""
  rows = []
  for dataset in DATASETS:
    for criterion in CRITERIA:
      c = exp["curves"][f"{dataset}/{criterion}"]
      ours = (c["train_ce"][-1], c["test_ce"][-1])
      ref = REFERENCE_CRITERIA[dataset][criterion]
      rows.append((dataset, criterion, *ours, *ref,
                   max(abs(ours[0] - ref[0]), abs(ours[1] - ref[1]))))
  return rows


def _predictor_gap(exp: dict) -> float:
  return max(abs(exp["predictors"][d][n][i] - REFERENCE_PREDICTORS[d][n][i])
             for d in DATASETS for n in FEATURES for i in (0, 1))


def _in_tail_range(row: tuple) -> bool:
  (lo_tr, hi_tr), (lo_te, hi_te) = REFERENCE_TAIL_RANGES[row[0]][row[1]]
  return (lo_tr - TOLERANCE <= row[2] <= hi_tr + TOLERANCE
          and lo_te - TOLERANCE <= row[3] <= hi_te + TOLERANCE)


def _failures(cells) -> tuple[set, set]:
  """The cells whose test CE is worse than the prior's by 0.05 nats: ours and dsit's."""
  bad = lambda test: test > math.log(2) + 0.05
  return ({(r[0], r[1]) for r in cells if bad(r[3])}, {(r[0], r[1]) for r in cells if bad(r[5])})


def _format_cells(cells: set) -> str:
  return ", ".join(f"{LABELS[c]} on {d}" for d, c in sorted(cells)) or "none"


def claims(config: dict, exp: dict, times: dict) -> list[_harness.Claim]:
  del times
  out = []
  gap = _predictor_gap(exp)
  out.append(_harness.Claim(
      "the reference predictors (picture, colour, digit, prior) match dsit's train/test "
      "cross-entropies within 1e-3 nats on all three datasets", "points.csv",
      f"largest gap {gap:.1e}", gap <= TOLERANCE,
      reason="" if gap <= TOLERANCE else f"gap {gap:.1e} > 1e-3"))
  cells = _table_cells(exp)
  for dataset in DATASETS:
    rows = [r for r in cells if r[0] == dataset]
    worst = max(rows, key=lambda r: r[6])
    ok = worst[6] <= TOLERANCE
    out.append(_harness.Claim(
        f"{dataset}: every criterion at lambda = 1e6 (IB at 1) matches dsit's train/test "
        "cross-entropy within 1e-3 nats",
        "; ".join(f"{LABELS[r[1]]} {r[4]:.4f}/{r[5]:.4f}" for r in rows),
        "; ".join(f"{LABELS[r[1]]} {r[2]:.4f}/{r[3]:.4f}" for r in rows),
        ok, reason="" if ok else f"{LABELS[worst[1]]} off by {worst[6]:.4f}"))
  outside = [r for r in cells if not _in_tail_range(r)]
  out.append(_harness.Claim(
      "every cell lies within the range dsit's own curve spans over its last 8 lambdas "
      "(1.4e5 to 1e6), widened by 1e-3 nats", "24 cells",
      f"{24 - len(outside)}/24 inside" + "".join(
          f"; {LABELS[r[1]]} on {r[0]}: {r[2]:.4f}/{r[3]:.4f}" for r in outside),
      not outside, reason="" if not outside else f"{len(outside)} cell(s) outside"))
  ours_fail, ref_fail = _failures(cells)
  same = ours_fail == ref_fail
  fmt = _format_cells
  out.append(_harness.Claim(
      "the criteria fail (test CE above the prior's log 2 + 0.05) exactly where dsit's do: "
      "independence on CMNIST and d-CMNIST, separation on d-CMNIST, sufficiency on y-CMNIST",
      fmt(ref_fail), fmt(ours_fail), same,
      reason="" if same else f"differs: ours {fmt(ours_fail)}"))
  return out


def report(config: dict, exp: dict, times: dict) -> _harness.Report:
  del times
  cells = _table_cells(exp)
  pred_rows = [(d, n, *exp["predictors"][d][n], *REFERENCE_PREDICTORS[d][n])
               for d in DATASETS for n in FEATURES]
  tables = [
      "## Each criterion at lambda = 1e6 (IB at lambda = 1): cross-entropy in nats\n\n" +
      _harness.markdown_table(["dataset", "criterion", "train (ours)", "test (ours)",
                               "train (dsit)", "test (dsit)", "max |gap|"], cells),
      "## Reference predictors\n\n" +
      _harness.markdown_table(["dataset", "predictor", "train (ours)", "test (ours)",
                               "train (dsit)", "test (dsit)"], pred_rows),
  ]
  worst = max(cells, key=lambda r: r[6])
  fields = {
      "mode": config["mode"], "num_codes": config["num_codes"],
      "initial": config["initial_iterations"], "check": config["check_every"],
      "max_it": config["max_iterations"], "restarts": config["restarts"],
      "num_lambdas": config["num_lambdas"], "capped": exp["capped"],
      "num_solves": exp["num_solves"], "solve_s": exp["solve_s"],
      "matched": sum((abs(r[2] - r[4]) <= TOLERANCE) + (abs(r[3] - r[5]) <= TOLERANCE)
                     for r in cells),
      "worst": worst[6], "worst_cell": f"{LABELS[worst[1]]} on {worst[0]}",
      "failures": _format_cells(_failures(cells)[0]),
  }
  return _harness.Report(tables=tables, figure=_figure(exp), notes=NOTES.format(**fields),
                         headline=HEADLINE.format(**fields))


def _figure(exp: dict):
  import matplotlib  # pylint: disable=g-import-not-at-top
  import matplotlib.ticker  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  colours = {"independence": "tab:blue", "sufficiency": "tab:green",
             "separation": "tab:red", "information_bottleneck": "tab:gray"}
  fig, axes = plt.subplots(2, 3, figsize=(14, 7.5), sharex=True, sharey="row")
  first_twin = None
  for j, dataset in enumerate(DATASETS):
    for i, split in enumerate(("train_ce", "test_ce")):
      ax = axes[i, j]
      ib_ax = ax.twiny()   # the IB sweeps lambda over [0, 1]: its own axis, on top
      first_twin = first_twin or ib_ax
      ib_ax.set_xscale("log")
      ib_ax.set_xlim(0.97, 2.06)   # the main axis' margins, so both sweeps end at the right
      ib_ax.set_xticks([1, 1.25, 1.5, 2], ["1", "1.25", "1.5", "2"])
      ib_ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
      ib_ax.tick_params(axis="x", colors=colours["information_bottleneck"], labelsize=7)
      for criterion in CRITERIA:
        c = exp["curves"][f"{dataset}/{criterion}"]
        target = ib_ax if criterion == "information_bottleneck" else ax
        target.plot(np.asarray(c["lambda"]) + 1, c[split], "-", color=colours[criterion],
                    label=LABELS[criterion] + (" (top axis)" if target is ib_ax else ""))
        ref = REFERENCE_CRITERIA[dataset][criterion][i]
        target.plot(c["lambda"][-1] + 1, ref, "x", color=colours[criterion], ms=9, mew=2)
      for name, style in (("picture", ":"), ("colour", "--"), ("digit", "-."), ("prior", "-")):
        ax.axhline(exp["predictors"][dataset][name][i], color="k", ls=style, lw=0.8,
                   alpha=0.6, label=f"{name} predictor")
      ax.set_xscale("log")
      ax.set_title(f"{dataset}: {'train' if i == 0 else 'test'} cross-entropy (IB: "
                   "lambda + 1 on top)", pad=18, fontsize=10)
      if i == 1:
        ax.set_xlabel("lambda + 1")
      if j == 0:
        ax.set_ylabel("nats")
  handles = [h for a in (axes[0, 0], first_twin) for h in a.get_lines()
             if not h.get_label().startswith("_")]
  axes[0, 0].legend(handles=handles, fontsize=7, loc="lower right")
  fig.suptitle("Criteria against lambda (lines: ours; x: dsit at the sweep's end; "
               "IB on the grey top axis)")
  fig.tight_layout()
  return fig
