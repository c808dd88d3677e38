"""An NNX MLP trained by the core on 1 device and on 8 data-parallel devices.

Checks that data parallelism changes nothing but speed: the same seeds give the same loss
trajectory on 1 and 8 devices (relative difference <= 1e-5 at every step), and the model
reaches >= 0.96 test accuracy. Speed is reported as steps/s of the jitted step for 1 and 8
devices and beside flax's idiomatic ``nnx.jit`` + ``nnx.Optimizer`` step, the loop users would
otherwise write, on the same model, data and optimizer.

Data: MNIST through TFDS when it is available (full mode); otherwise, and always in --quick
mode, scikit-learn's 8x8 digits. The results say which.
"""

from __future__ import annotations

import jax
import numpy as np
import optax
from flax import nnx

from benchmarks import _harness
from tomioka_jax import core
from tomioka_jax import data

PAPER = "Foundation benchmark (no paper): the core's data-parallel training loop"
NAME = "mlp_digits"


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


def run(quick: bool) -> _harness.Result:
  if quick:
    train, test = data.load("digits", "train"), data.load("digits", "test")
  else:
    train, test = data.load("mnist", "train"), data.load("mnist", "test")
  num_steps = 400 if quick else 3000
  cfg = core.ClassifierConfig(hidden=(256, 256), learning_rate=1e-3, batch_size=128,
                              num_steps=num_steps, seed=0)
  n_dev = min(8, jax.device_count())
  runs = {}
  for label, devices in (("1 device", jax.devices()[:1]), (f"{n_dev} devices", jax.devices()[:n_dev])):
    mesh = core.data_mesh(devices)
    runs[label] = (mesh, core.train_classifier(cfg, train.as_dict(), test.as_dict(),
                                               train.num_classes, mesh=mesh))
  (l1, (mesh1, r1)), (ln, (meshn, rn)) = runs.items()
  loss1 = np.array([h["loss"] for h in r1.history])
  lossn = np.array([h["loss"] for h in rn.history])
  rel = np.abs(loss1 - lossn) / np.maximum(np.abs(loss1), 1e-30)
  acc1, accn = r1.evals[-1]["accuracy"], rn.evals[-1]["accuracy"]

  # Speed: the jitted step alone, on batches already placed on the devices.
  timed_steps = 50 if quick else 200
  repeats = 3 if quick else 5
  batches = data.Batches(train.as_dict(), cfg.batch_size, key=jax.random.key(1))
  host_batches = [batches(i) for i in range(timed_steps)]
  timings = {}
  in_features = int(np.prod(train.x.shape[1:]))
  for label, mesh in ((l1, mesh1), (ln, meshn)):
    model = core.MLP(in_features, cfg.hidden, train.num_classes, rngs=nnx.Rngs(0))
    optimizer = optax.adam(cfg.learning_rate)
    graphdef, state = core.create_train_state(model, optimizer, jax.random.key(0))
    state = core.replicate(state, mesh)
    step = core.make_train_step(graphdef, core.cross_entropy_loss, optimizer, mesh=mesh)
    dev_batches = [core.shard_batch(b, mesh) for b in host_batches]
    timings[label] = _time_steps(step, state, dev_batches, timed_steps, repeats)
  timings["flax nnx.jit (1 device)"] = _flax_baseline_timing(
      cfg, train.as_dict(), train.num_classes, host_batches, timed_steps, repeats)
  steps_per_s = {k: timed_steps / t.median_s for k, t in timings.items()}

  # Work per step: forward + backward of the MLP is ~6 flops per weight per example.
  n_weights = sum(a * b for a, b in zip([in_features, *cfg.hidden],
                                        [*cfg.hidden, train.num_classes]))
  flops_per_step = 6 * n_weights * cfg.batch_size
  speed_rows = [(k, steps_per_s[k], steps_per_s[k] / steps_per_s[l1],
                 flops_per_step * steps_per_s[k] / 1e9, timings[k].compile_s)
                for k in timings]

  claims = [
      _harness.Claim(f"same loss trajectory on 1 and {n_dev} devices (max rel. diff over "
                     f"{num_steps} steps)", "<= 1e-5", f"{rel.max():.2e}",
                     bool(rel.max() <= 1e-5)),
      _harness.Claim(f"test accuracy ({train.source})", ">= 0.96",
                     f"{acc1:.4f} (1 dev), {accn:.4f} ({n_dev} dev)",
                     bool(min(acc1, accn) >= 0.96)),
      _harness.Claim(f"steps/s, 1 device vs {n_dev} devices vs flax nnx.jit",
                     "reported", ", ".join(f"{v:.0f}" for v in steps_per_s.values()), None),
  ]
  tables = [
      "## Speed (median of repeats, compile time apart)\n\n" + _harness.markdown_table(
          ["step", "steps/s", "ratio to 1 device", "GFLOP/s", "compile s"], speed_rows),
      "## Accuracy\n\n" + _harness.markdown_table(
          ["run", "final train loss", "test loss", "test accuracy"],
          [(l1, loss1[-1], r1.evals[-1]["loss"], acc1),
           (ln, lossn[-1], rn.evals[-1]["loss"], accn)]),
  ]

  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  steps = np.arange(1, len(loss1) + 1)
  axes[0].plot(steps, loss1, label=l1, lw=2)
  axes[0].plot(steps, lossn, "--", label=ln, lw=1.2)
  axes[0].set(xlabel="step", ylabel="train loss (minibatch)", yscale="log",
              title=f"MLP on {train.source}")
  axes[0].legend()
  nonzero = rel > 0
  axes[1].semilogy(steps[nonzero], rel[nonzero], ".", ms=3,
                   label=f"nonzero ({(~nonzero).sum()} of {len(rel)} steps are identical)")
  axes[1].axhline(1e-5, color="r", ls=":", label="1e-5 bound")
  axes[1].set(xlabel="step", ylabel="relative difference", title=f"|loss(1) - loss({n_dev})| / loss(1)")
  axes[1].legend()
  fig.tight_layout()

  return _harness.Result(
      name=NAME, paper=PAPER, claims=claims, tables=tables, figure=fig,
      data={"source": train.source, "config": cfg.__dict__, "loss_1": loss1, "loss_n": lossn,
            "rel_diff": rel, "devices": n_dev, "evals_1": r1.evals, "evals_n": rn.evals,
            "timings": {k: t.as_dict() for k, t in timings.items()},
            "steps_per_s": steps_per_s, "flops_per_step": flops_per_step},
      notes=(f"Data: {train.source} ({len(train.y)} train / {len(test.y)} test images). "
             f"Adam(lr={cfg.learning_rate}), batch {cfg.batch_size}, MLP {cfg.hidden}. "
             f"The {n_dev} devices are simulated CPU devices sharing this machine's cores, so "
             "their steps/s measure the overhead of sharding, not a speed-up."))
