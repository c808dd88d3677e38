"""Path-SGD against SGD, AdaGrad and Adam from balanced and unbalanced initializations, and the
implicit-regularization (network size) experiment with norm-based capacity measures.

Papers: Neyshabur, Salakhutdinov, Srebro, "Path-SGD" (NeurIPS 2015, arXiv 1506.02617);
Neyshabur, Tomioka, Srebro, "In Search of the Real Inductive Bias" (arXiv 1412.6614) and
"Norm-Based Capacity Control in Neural Networks" (arXiv 1503.00036); Neyshabur, Tomioka,
Salakhutdinov, Srebro, "Geometry of Optimization and Implicit Regularization in Deep
Learning" (arXiv 1705.03071).

Experiment 1 (Path-SGD paper, Figures 2-3 layout): an MLP with two hidden layers of ReLU
units, trained from a balanced initialization and from an *unbalanced* one -- a random
node-wise rescaling of the balanced one, hence the same function -- with each optimizer; the
training cross-entropy, training error and test error per epoch. The claim: Path-SGD's
trajectory does not depend on the rescaling (it is rescaling invariant), while SGD and AdaGrad
slow down markedly from the unbalanced start.

Experiment 2 (Inductive Bias paper, Figure 1 layout): one hidden layer of H units, H from 4 up,
trained by SGD with no explicit regularization until the training error is 0; test error keeps
falling as H grows, while the network-size capacity grows; norm-based measures do not.

Each training run is one compiled function (``core.make_classifier_trainer``: ``lax.scan`` over
epochs and minibatches). No timing decides a claim (the seconds are reported), so there is no
``timings`` phase.
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from benchmarks import _harness
from tomioka_jax import core
from tomioka_jax import data
from tomioka_jax import optim

PAPER = ("Neyshabur, Salakhutdinov, Srebro 2015 (Path-SGD, arXiv 1506.02617); Neyshabur, "
         "Tomioka, Srebro 2014/2015 (arXiv 1412.6614, 1503.00036)")
NAME = "path_sgd"
CE_TARGET = 0.01
# Step sizes picked once on the balanced initialization of the quick digits run, by the
# training cross-entropy after 10 epochs over the grids Path-SGD {0.005, 0.02, 0.05, 0.1},
# SGD {0.02, 0.05, 0.1, 0.2}, AdaGrad {0.003, 0.01, 0.03}, Adam {3e-4, 1e-3}; then kept for
# every other run (except the full mode's Path-SGD step, below).
LEARNING_RATES = {"Path-SGD": 0.05, "SGD": 0.2, "AdaGrad": 0.03, "Adam": 1e-3}
# Path-SGD's steps on the hidden layers grow with the width at this initialization (the
# out-path norms of a hidden unit shrink like 1 / width), so the full mode's 2 x 4000 network
# gets the quick step scaled by 1000 / 4000: by the same criterion (training CE after 10
# epochs, balanced start) over {0.0125, 0.025, 0.05, 0.1, 0.2, 0.5, 1} at 4000 units, 0.0125
# reaches 0.010, 0.025 0.021, 0.05 0.82, 0.1 2.3; from 0.2 the CE blows up (> 1000). The
# other steps are kept.
FULL_LEARNING_RATES = dict(LEARNING_RATES, **{"Path-SGD": 0.0125})
SPREAD = math.log(10.0)  # per-unit scales log-uniform in [1/10, 10]

CONFIGS = {
    # Experiment 1: dataset (MNIST falls back to the 8x8 digits offline), 2 x hidden ReLU
    # units, epochs (epochs_digits when MNIST fell back to the 1347 training digits: 30 epochs
    # are 630 steps), Path-SGD's step size (the others are LEARNING_RATES'). Experiment 2:
    # hidden sizes H and epochs.
    "smoke": {"dataset": "digits", "hidden": 16, "epochs": 1, "epochs_digits": 1,
              "path_sgd_lr": LEARNING_RATES["Path-SGD"], "sizes": (8,), "size_epochs": 2},
    "quick": {"dataset": "digits", "hidden": 1000, "epochs": 4, "epochs_digits": 4,
              "path_sgd_lr": LEARNING_RATES["Path-SGD"], "sizes": (16, 128, 512),
              "size_epochs": 100},
    "full": {"dataset": "mnist", "hidden": 4000, "epochs": 100, "epochs_digits": 30,
             "path_sgd_lr": FULL_LEARNING_RATES["Path-SGD"],
             "sizes": (4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096), "size_epochs": 300},
}


def _optimizer(name: str, network, input_shape, lr: float) -> optax.GradientTransformation:
  if name == "Path-SGD":
    return optim.path_sgd(lr, network, input_shape)
  return {"SGD": optax.sgd, "AdaGrad": optax.adagrad, "Adam": optax.adam}[name](lr)


def _epochs_to(curve: np.ndarray, target: float) -> float:
  hit = np.nonzero(curve <= target)[0]
  return float(hit[0] + 1) if len(hit) else math.inf


def experiment_init(train, test, hidden: int, epochs: int, spread: float,
                    learning_rates: dict[str, float] = LEARNING_RATES) -> dict:
  in_features = int(np.prod(train["x"].shape[1:]))
  model = core.MLP(in_features, (hidden, hidden), 10, rngs=nnx.Rngs(0))
  network, balanced = optim.nnx_network(model)
  layers = optim.mlp_layers(balanced)
  scales = optim.random_rescaling(jax.random.key(7), layers, spread)
  unbalanced = optim.set_mlp_layers(balanced, optim.rescale(layers, scales))
  x_probe = jnp.asarray(train["x"][:64])
  same_function = float(jnp.max(jnp.abs(network(unbalanced, x_probe) -
                                        network(balanced, x_probe))))
  out = {"curves": {}, "seconds": {}, "same_function_max_abs_diff": same_function}
  for name, lr in learning_rates.items():
    opt = _optimizer(name, network, train["x"].shape[1:], lr)
    trainer = core.make_classifier_trainer(model, opt, train, test, batch_size=64, epochs=epochs)
    for init_name, params in (("balanced", balanced), ("unbalanced", unbalanced)):
      t0 = time.perf_counter()
      _, metrics = _harness.block(trainer(params, jax.random.key(1)))
      out["seconds"][f"{name}/{init_name}"] = time.perf_counter() - t0
      out["curves"][f"{name}/{init_name}"] = {k: np.asarray(v) for k, v in metrics.items()}
  return out


def experiment_size(train, test, sizes, epochs: int) -> dict:
  in_features = int(np.prod(train["x"].shape[1:]))
  rows = []
  for h in sizes:
    model = core.MLP(in_features, (h,), 10, rngs=nnx.Rngs(0))
    network, params = optim.nnx_network(model)
    trainer = core.make_classifier_trainer(model, optax.sgd(0.3), train, test, batch_size=64,
                                           epochs=epochs)
    params, metrics = trainer(params, jax.random.key(1))
    layers = optim.mlp_layers(params)
    logits = network(params, jnp.asarray(train["x"]))
    margin = float(jnp.quantile(optim.margins(logits, jnp.asarray(train["y"])), 0.05))
    rows.append({
        "hidden": h,
        "weights": sum(int(np.prod(w.shape)) for w, _ in layers),
        "train_err": float(metrics["train_err"][-1]),
        "test_err": float(metrics["test_err"][-1]),
        "train_ce": float(metrics["train_ce"][-1]),
        "path_norm_2": float(optim.path_norm(layers, 2.0)),
        "per_unit_l2_max": float(optim.per_unit_max_norm(layers, 2.0)),
        "frobenius_product": float(optim.group_norm(layers, 2.0, 2.0)),
        "spectral_product": float(optim.spectral_norm_product(layers)),
        "margin_q05": margin,
    })
  return {"rows": rows}


def experiment(config: dict) -> dict:
  """Experiment 1 (balanced vs unbalanced starts) and experiment 2 (network size)."""
  train, test = data.load(config["dataset"], "train"), data.load(config["dataset"], "test")
  tr = {"x": train.x.reshape(len(train.y), -1), "y": train.y}
  te = {"x": test.x.reshape(len(test.y), -1), "y": test.y}
  epochs = config["epochs_digits" if "digits" in train.source else "epochs"]
  rates = dict(LEARNING_RATES, **{"Path-SGD": config["path_sgd_lr"]})
  exp1 = experiment_init(tr, te, config["hidden"], epochs, SPREAD, rates)
  exp2 = experiment_size(tr, te, config["sizes"], epochs=config["size_epochs"])
  return {"source": train.source, "epochs": epochs, "learning_rates": rates,
          "curves": exp1["curves"], "seconds": exp1["seconds"],
          "same_function_max_abs_diff": exp1["same_function_max_abs_diff"],
          "size_experiment": exp2["rows"]}


def _ratio(exp: dict) -> dict[str, float]:
  """Final train CE unbalanced / balanced, per optimizer."""
  final = {k: float(v["train_ce"][-1]) for k, v in exp["curves"].items()}
  return {n: final[f"{n}/unbalanced"] / final[f"{n}/balanced"] for n in LEARNING_RATES}


def claims(config: dict, exp: dict, times: dict) -> list[_harness.Claim]:
  del config, times
  ratio, rows = _ratio(exp), exp["size_experiment"]
  # Sensitivity: |log(final train CE unbalanced / balanced)|; 0 for an invariant method, inf
  # for a run that diverged (a NaN cross-entropy, as SGD from the unbalanced start at 4000
  # units) -- the most sensitive outcome, not an undecided one.
  sens = {n: abs(math.log(r)) if math.isfinite(r) and r > 0 else math.inf
          for n, r in ratio.items()}
  invariant = sens["Path-SGD"] < 0.1 and min(sens["SGD"], sens["AdaGrad"]) > 0.5
  zero_train = [r for r in rows if r["train_err"] == 0.0]
  falling = bool(zero_train and rows[-1]["test_err"] <= zero_train[0]["test_err"])
  return [
      _harness.Claim(
          "Path-SGD is insensitive to an unbalanced (rescaled) initialization; SGD and AdaGrad "
          "are not: final train CE ratio unbalanced / balanced",
          "Path-SGD ~1, SGD and AdaGrad far from 1 (Fig. 2-3, [recall])",
          ", ".join(f"{k} {v:.3g}" for k, v in ratio.items()), bool(invariant),
          reason="" if invariant else
          "Path-SGD's ratio is off 1 by >= 10%, or SGD's or AdaGrad's within a factor e of 1"),
      _harness.Claim(
          "test error keeps falling with H after training error reaches 0 (no regularization)",
          "decreasing (Fig. 1, [recall])",
          ", ".join(f"H={r['hidden']}: {r['test_err']:.3f}" for r in rows), falling,
          reason="" if falling else
          ("training error never reaches 0" if not zero_train else
           "the largest H's test error is above that of the first H with training error 0")),
  ]


HEADLINES = {
    "implicit": (
        "on {source_name} (`path_sgd` benchmark, {mode}; one hidden layer, SGD without "
        "regularization, H = {h_first} to {h_last}): test error {err_first:.3f} at H = "
        "{h_first} to {err_last:.3f} at H = {h_last}, training error 0 from H = {h_zero}, "
        "while the 2-path norm goes from {pn_first:.3g} to {pn_last:.3g}"),
    "geometry": (
        "on {source_name} for Path-SGD ({mode}, 2 x {hidden} MLP, {epochs} epochs, Path-SGD's "
        "step {path_lr}): final training CE unbalanced/balanced init {path:.3g} for Path-SGD vs "
        "{sgd:.3g} (SGD) and {adagrad:.3g} (AdaGrad); Path-SGD reaches CE {path_ce:.2g} from "
        "the balanced start; DDP-SGD in `benchmarks/ddp.py`"),
}

TABLE_INIT = ("## Balanced vs unbalanced initialization ({source}, 2 x {hidden} ReLU, batch 64, "
              "{epochs} epochs)\n\nStep sizes: {rates}\n\n")
TABLE_SIZE = "## Network size (one hidden layer, SGD, no regularization)\n\n"

NOTES = """\
The unbalanced initialization multiplies each hidden unit's incoming weights by a factor
log-uniform in [1/10, 10] and divides its outgoing weights by it; the network computes the same
function (max |difference| {same_function:.2e} on 64 inputs). Path-SGD here is the paper's
update w - lr * g / kappa with kappa recomputed every step; the reference PyTorch port's one-off
global rescaling of the step size is not used. The paper's numbers are read from its figures
from memory ([recall]); DDP-SGD (the data-dependent variant) is compared in
benchmarks/ddp.py."""


def report(config: dict, exp: dict, times: dict) -> _harness.Report:
  del times
  curves, rows, rates = exp["curves"], exp["size_experiment"], exp["learning_rates"]
  rows1 = []
  for n in LEARNING_RATES:
    for init in ("balanced", "unbalanced"):
      c = curves[f"{n}/{init}"]
      rows1.append((n, init, c["train_ce"][-1], c["train_err"][-1], c["test_err"][-1],
                    _epochs_to(c["train_ce"], CE_TARGET), exp["seconds"][f"{n}/{init}"]))
  rows2 = [(r["hidden"], r["weights"], r["train_err"], r["test_err"], r["path_norm_2"],
            r["per_unit_l2_max"], r["frobenius_product"], r["spectral_product"],
            r["margin_q05"]) for r in rows]
  tables = [
      TABLE_INIT.format(source=exp["source"], hidden=config["hidden"], epochs=exp["epochs"],
                        rates=", ".join(f"{k} {v}" for k, v in rates.items())) +
      _harness.markdown_table(["optimizer", "init", "train CE", "train err", "test err",
                               f"epochs to CE<={CE_TARGET}", "seconds"], rows1),
      TABLE_SIZE + _harness.markdown_table(
          ["H", "weights", "train err", "test err", "2-path norm", "per-unit l2 max",
           "Frobenius product", "spectral product", "margin (5% quantile)"], rows2),
  ]
  ratio = _ratio(exp)
  zero_train = [r["hidden"] for r in rows if r["train_err"] == 0.0]
  source_name = "8x8 digits" if exp["source"] == "sklearn:digits" else exp["source"]
  headline = {
      "implicit": HEADLINES["implicit"].format(
          source_name=source_name, mode=config["mode"], h_first=rows[0]["hidden"],
          h_last=rows[-1]["hidden"], err_first=rows[0]["test_err"],
          err_last=rows[-1]["test_err"], h_zero=zero_train[0] if zero_train else "none",
          pn_first=rows[0]["path_norm_2"], pn_last=rows[-1]["path_norm_2"]),
      "geometry": HEADLINES["geometry"].format(
          source_name=source_name, mode=config["mode"], hidden=config["hidden"],
          epochs=exp["epochs"], path_lr=rates["Path-SGD"], path=ratio["Path-SGD"],
          sgd=ratio["SGD"], adagrad=ratio["AdaGrad"],
          path_ce=float(curves["Path-SGD/balanced"]["train_ce"][-1])),
  }
  return _harness.Report(
      tables=tables, figure=_figure(exp),
      notes=NOTES.format(same_function=exp["same_function_max_abs_diff"]), headline=headline)


def _figure(exp: dict):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  curves, rows = exp["curves"], exp["size_experiment"]
  fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
  colors = dict(zip(LEARNING_RATES, ["C3", "C0", "C2", "C1"]))
  for n in LEARNING_RATES:
    for init, style in (("balanced", "-"), ("unbalanced", "--")):
      c = curves[f"{n}/{init}"]
      ep = np.arange(1, len(c["train_ce"]) + 1)
      axes[0].semilogy(ep, c["train_ce"], style, color=colors[n], label=f"{n} ({init})")
      axes[1].plot(ep, c["test_err"], style, color=colors[n])
  axes[0].set(xlabel="epoch", ylabel="training cross-entropy", ylim=(1e-3, 1e1),
              title="balanced (-) / unbalanced (--)")
  axes[0].legend(fontsize=7)
  axes[1].set(xlabel="epoch", ylabel="test error", title=exp["source"])
  hs = [r["hidden"] for r in rows]
  axes[2].semilogx(hs, [r["train_err"] for r in rows], "o-", label="train error")
  axes[2].semilogx(hs, [r["test_err"] for r in rows], "s-", label="test error")
  axes[2].set(xlabel="hidden units H", ylabel="error", title="network size")
  axes[2].legend()
  for key, label in (("path_norm_2", "2-path norm"), ("per_unit_l2_max", "per-unit l2 max"),
                     ("frobenius_product", "Frobenius product"),
                     ("spectral_product", "spectral product"), ("weights", "# weights")):
    vals = np.array([r[key] for r in rows], float)
    axes[3].loglog(hs, vals / vals[0], "o-", label=label)
  axes[3].set(xlabel="hidden units H", ylabel="relative to H = %d" % hs[0],
              title="capacity measures")
  axes[3].legend(fontsize=7)
  fig.tight_layout()
  return fig
