"""An NNX MLP trained by the core on 1 device and on 8 data-parallel devices.

Checks that data parallelism changes nothing but speed: the same seeds give the same loss
trajectory on 1 and 8 devices, and the model reaches >= 0.96 test accuracy. The trajectories
are trained in float64: training is chaotic, so float32 rounding differences (the 8 devices sum
the gradient in another order) grow past 1e-5 after a few hundred steps on some CPUs; in float64
the same growth stays far below the 1e-9 bound, so the claim tests data parallelism, not chaos. Speed is reported as steps/s of the jitted step for 1 and 8
devices and beside flax's idiomatic ``nnx.jit`` + ``nnx.Optimizer`` step, the loop users would
otherwise write, on the same model, data and optimizer.

Data: MNIST through TFDS when it is available (full mode); otherwise, and always in --quick
and smoke mode, scikit-learn's 8x8 digits. The results say which. Speed is timed in float32,
what users train in.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from benchmarks import _harness
from tomioka_jax import core
from tomioka_jax import data

PAPER = "Foundation benchmark (no paper): the core's data-parallel training loop"
NAME = "mlp_digits"

CONFIGS = {
    # dataset; MLP hidden sizes; training steps; steps timed per repeat, repeats.
    "smoke": {"dataset": "digits", "hidden": (32,), "num_steps": 20, "timed_steps": 5,
              "repeats": 1},
    "quick": {"dataset": "digits", "hidden": (256, 256), "num_steps": 400, "timed_steps": 50,
              "repeats": 3},
    "full": {"dataset": "mnist", "hidden": (256, 256), "num_steps": 3000, "timed_steps": 200,
             "repeats": 5},
}
PARITY_BOUND = 1e-9  # float64; float32 would need ~1e-2 after 400 steps on some CPUs

HEADLINE = (
    "the loss trajectory on {n_dev} simulated devices equals 1 device's to {rel:.1e} relative "
    "in float64 (bound {bound:.0e}; {steps} steps), test accuracy {acc:.3f} on {source} "
    "(bound 0.96).")

NOTES = """Data: {source} ({n_train} train / {n_test} test images). Adam(lr={learning_rate}), batch
{batch_size}, MLP {hidden}, {num_steps} steps. The trajectories are trained in float64 (the
model's dtype; jax.enable_x64 around the runs): the 8 devices sum each gradient in another
order than 1 device, and training amplifies such rounding differences step by step, so in
float32 they reach 1e-5 after ~200 steps (9e-3 at step 400 on one CPU) without anything being
wrong; in float64 they start 9 orders of magnitude lower. Speed is timed in float32. The
{n_dev} devices are simulated CPU devices sharing this machine's cores, so their steps/s measure
the overhead of sharding, not a speed-up."""


def _time_steps(step, state, batches, num_steps: int, repeats: int) -> _harness.Timing:
  """Times ``num_steps`` consecutive updates (batches prepared beforehand), median of repeats."""

  def run():
    s = state
    for b in batches[:num_steps]:
      s, _ = step(s, b)
    return s

  return _harness.timeit(run, repeats=repeats)


def _flax_baseline_timing(cfg: core.ClassifierConfig, train: dict, num_classes: int,
                          host_batches: list, num_steps: int, repeats: int) -> _harness.Timing:
  """Flax's idiomatic loop: ``nnx.Optimizer`` updated inside ``nnx.jit``."""
  in_features = int(np.prod(train["x"].shape[1:]))
  model = core.MLP(in_features, cfg.hidden, num_classes, rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax.adam(cfg.learning_rate), wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer, batch):
    def loss_fn(model):
      return core.cross_entropy_loss(model, batch, None)[0]
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  device_batches = [jax.device_put(b) for b in host_batches[:num_steps]]

  def run():
    loss = None
    for b in device_batches:
      loss = step(model, optimizer, b)
    return loss

  return _harness.timeit(run, repeats=repeats)


def _config(config: dict) -> core.ClassifierConfig:
  return core.ClassifierConfig(hidden=config["hidden"], learning_rate=1e-3, batch_size=128,
                               num_steps=config["num_steps"], seed=0)


def _data(config: dict):
  return data.load(config["dataset"], "train"), data.load(config["dataset"], "test")


def experiment(config: dict) -> dict:
  """Trains the same MLP, same seeds, in float64 on 1 and on n devices."""
  train, test = _data(config)
  cfg = _config(config)
  n_dev = min(8, jax.device_count())
  runs = {}
  with jax.enable_x64(True):
    for n in (1, n_dev):
      runs[n] = core.train_classifier(cfg, train.as_dict(), test.as_dict(), train.num_classes,
                                      mesh=core.data_mesh(jax.devices()[:n]), dtype=jnp.float64)
  return {"source": train.source, "n_train": len(train.y), "n_test": len(test.y),
          "n_dev": n_dev, "config": cfg.__dict__,
          "loss_1": np.array([h["loss"] for h in runs[1].history]),
          "loss_n": np.array([h["loss"] for h in runs[n_dev].history]),
          "evals_1": runs[1].evals, "evals_n": runs[n_dev].evals}


def timings(config: dict) -> dict:
  """Steps/s of the float32 jitted step on 1 and n devices and of flax's idiomatic loop."""
  train, _ = _data(config)
  cfg = _config(config)
  n_dev = min(8, jax.device_count())
  steps, repeats = config["timed_steps"], config["repeats"]
  batches = data.Batches(train.as_dict(), cfg.batch_size, key=jax.random.key(1))
  host_batches = [batches(i) for i in range(steps)]
  in_features = int(np.prod(train.x.shape[1:]))
  timed = {}
  for label, n in (("1 device", 1), (f"{n_dev} devices", n_dev)):
    mesh = core.data_mesh(jax.devices()[:n])
    model = core.MLP(in_features, cfg.hidden, train.num_classes, rngs=nnx.Rngs(0))
    optimizer = optax.adam(cfg.learning_rate)
    graphdef, state = core.create_train_state(model, optimizer, jax.random.key(0))
    step = core.make_train_step(graphdef, core.cross_entropy_loss, optimizer, mesh=mesh)
    dev_batches = [core.shard_batch(b, mesh) for b in host_batches]
    timed[label] = _time_steps(step, core.replicate(state, mesh), dev_batches, steps, repeats)
  timed["flax nnx.jit (1 device)"] = _flax_baseline_timing(
      cfg, train.as_dict(), train.num_classes, host_batches, steps, repeats)
  # Work per step: forward + backward of the MLP is ~6 flops per weight per example.
  sizes = [in_features, *cfg.hidden, train.num_classes]
  return {"timings": {k: t.as_dict() for k, t in timed.items()},
          "steps_per_s": {k: steps / t.median_s for k, t in timed.items()},
          "flops_per_step": 6 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:])) * cfg.batch_size}


def _rel(exp: dict) -> np.ndarray:
  return np.abs(exp["loss_1"] - exp["loss_n"]) / np.maximum(np.abs(exp["loss_1"]), 1e-30)


def claims(config: dict, exp: dict, times: dict) -> list[_harness.Claim]:
  rel = _rel(exp).max()
  acc1, accn = exp["evals_1"][-1]["accuracy"], exp["evals_n"][-1]["accuracy"]
  n_dev = exp["n_dev"]
  return [
      _harness.Claim(f"same float64 loss trajectory on 1 and {n_dev} devices (max relative "
                     "difference over every step)", f"<= {PARITY_BOUND:.0e}", f"{rel:.2e}",
                     bool(rel <= PARITY_BOUND),
                     reason="" if rel <= PARITY_BOUND else "the devices train differently"),
      _harness.Claim(f"test accuracy ({exp['source']})", ">= 0.96",
                     f"{acc1:.4f} (1 dev), {accn:.4f} ({n_dev} dev)",
                     bool(min(acc1, accn) >= 0.96),
                     reason="" if min(acc1, accn) >= 0.96 else "below 0.96"),
      _harness.Claim(f"float32 steps/s, 1 device vs {n_dev} devices vs flax nnx.jit", "reported",
                     ", ".join(f"{v:.0f}" for v in times["steps_per_s"].values()), None),
  ]


def report(config: dict, exp: dict, times: dict) -> _harness.Report:
  sps = times["steps_per_s"]
  one = next(iter(sps.values()))
  speed_rows = [(k, v, v / one, times["flops_per_step"] * v / 1e9,
                 times["timings"][k]["compile_s"]) for k, v in sps.items()]
  n_dev = exp["n_dev"]
  tables = [
      "## Speed, float32 (median of repeats, compile time apart)\n\n" + _harness.markdown_table(
          ["step", "steps/s", "ratio to 1 device", "GFLOP/s", "compile s"], speed_rows),
      "## Accuracy, float64\n\n" + _harness.markdown_table(
          ["run", "final train loss", "test loss", "test accuracy"],
          [("1 device", exp["loss_1"][-1], exp["evals_1"][-1]["loss"],
            exp["evals_1"][-1]["accuracy"]),
           (f"{n_dev} devices", exp["loss_n"][-1], exp["evals_n"][-1]["loss"],
            exp["evals_n"][-1]["accuracy"])]),
  ]
  source = "the 8x8 digits" if exp["source"] == "sklearn:digits" else exp["source"]
  acc = min(exp["evals_1"][-1]["accuracy"], exp["evals_n"][-1]["accuracy"])
  return _harness.Report(
      tables=tables, figure=_figure(exp),
      notes=NOTES.format(**exp, **exp["config"]),
      headline=HEADLINE.format(n_dev=n_dev, rel=_rel(exp).max(), bound=PARITY_BOUND,
                               steps=config["num_steps"], acc=acc, source=source))


def _figure(exp: dict):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  loss1, lossn, rel, n_dev = exp["loss_1"], exp["loss_n"], _rel(exp), exp["n_dev"]
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  steps = np.arange(1, len(loss1) + 1)
  axes[0].plot(steps, loss1, label="1 device", lw=2)
  axes[0].plot(steps, lossn, "--", label=f"{n_dev} devices", lw=1.2)
  axes[0].set(xlabel="step", ylabel="train loss (minibatch)", yscale="log",
              title=f"MLP on {exp['source']}, float64")
  axes[0].legend()
  nonzero = rel > 0
  axes[1].semilogy(steps[nonzero], rel[nonzero], ".", ms=3,
                   label=f"nonzero ({(~nonzero).sum()} of {len(rel)} steps are identical)")
  axes[1].axhline(PARITY_BOUND, color="r", ls=":", label=f"{PARITY_BOUND:.0e} bound")
  axes[1].set(xlabel="step", ylabel="relative difference",
              title=f"|loss(1) - loss({n_dev})| / loss(1)")
  axes[1].legend()
  fig.tight_layout()
  return fig
