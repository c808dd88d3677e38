"""Periodic adversarial scheduling (PAS) against vanilla adversarial training, over a grid of
learning rates; the top Hessian eigenvalue of adversarially trained models against epsilon.

Paper: Liu, Salzmann, Lin, Tomioka, Süsstrunk, "On the Loss Landscape of Adversarial
Training: Identifying Challenges and How to Overcome Them", NeurIPS 2020 (arXiv 2006.08403).
Reference code: liuchen11/AdversaryLossLandscape.

Both methods train the same network by PGD adversarial training (l_inf, target eps, PGD step
eps/4, random start within one step) with SGD (momentum 0.9) for ``epochs`` epochs, at each
learning rate of the grid and several seeds:

* vanilla: constant eps; the plain step learning rate (x0.1 at 50 % and 75 % of training,
  the reference's plain schedule);
* PAS: three cycles ending at 50 %, 75 % and 100 % of training (the reference's 100/150/200);
  in each, the cosine eps warm-up from 0 with eps_max = 2 x target, clipped at the target
  (reached at mid-cycle), and the periodic learning rate (x0.1 at 50 % and 75 % of each
  cycle); evaluated as the ensemble of the three end-of-cycle models (mean softmax).

In the smoke and quick modes every (method, learning rate, seed) run is one lane of one
compiled program (``robust.make_pas_trainer`` over ``core.make_scan_trainer``; the optimizer is
built inside the ``vmap``-ed function). The full mode trains a CNN, whose convolutions XLA:CPU
runs ~10x slower inside a loop body: its lanes run one after another, each stepped from Python
by ``robust.fit_pas`` (same schedules, attacks unrolled, checkpoints: a rerun resumes).
Evaluation: clean accuracy and robust accuracy on test points under
PGD (``pgd_steps``, step eps/4, random start) and APGD-CE (``apgd_steps``, one restart), the
ensemble attacked as one model (through log of its mean softmax, as the reference's
``attack_list``). Sensitivity to the learning rate: the spread (max - min over the grid) of the
seed-averaged robust accuracy. Curvature: vanilla models trained at increasing eps, the top
eigenvalue of the Hessian of the adversarial training loss (PGD points of the final model,
held fixed) by Lanczos (``robust.hessian_top_eigenvalues``).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from benchmarks import _harness
from tomioka_jax import core
from tomioka_jax import data
from tomioka_jax import robust

PAPER = ("Liu, Salzmann, Lin, Tomioka, Süsstrunk 2020 (On the Loss Landscape of Adversarial "
         "Training, NeurIPS, arXiv 2006.08403)")
NAME = "pas"

CONFIGS = {
    # dataset; model ("mlp": 2 hidden layers of `width`; "cnn": LeNet-style, conv widths
    # width/2, width and a dense layer of 2 width); train/test examples (None: all); target eps
    # (l_inf, pixels in [0, 1]); epochs; SGD learning-rate grid; seeds; PGD steps in training;
    # evaluation attack steps; eps grid and Lanczos steps of the curvature study.
    "smoke": {"dataset": "digits", "model": "mlp", "width": 16, "train_examples": 256,
              "test_examples": 64, "eps": 0.1, "epochs": 4, "lrs": (0.03, 0.3), "seeds": 1,
              "train_steps": 2, "pgd_steps": 3, "apgd_steps": 3, "batch": 64,
              "hessian_eps": (0.0, 0.1), "hessian_examples": 64, "lanczos_steps": 5},
    "quick": {"dataset": "digits", "model": "mlp", "width": 64, "train_examples": None,
              "test_examples": 450, "eps": 0.1, "epochs": 40, "lrs": (0.01, 0.03, 0.1, 0.3),
              "seeds": 2, "train_steps": 5, "pgd_steps": 20, "apgd_steps": 20, "batch": 64,
              "hessian_eps": (0.0, 0.05, 0.1, 0.2), "hessian_examples": 512,
              "lanczos_steps": 20},
    # full: the LeNet-style CNN (width 16: convolutions of 8 and 16 channels, a dense layer of
    # 32; a quarter of the reference's MNIST LeNet) on 20000 Fashion-MNIST images, two seeds
    # and three learning rates. The lanes run one after another, stepped from Python by
    # robust.fit_pas with the attacks unrolled: a convolution inside an XLA:CPU loop body runs
    # ~10x slower than at top level (jax-ml/jax#12868), which is what kept the earlier full
    # record (vmapped lanes in one scan) to 1000 images and one seed. A step (PGD-5, batch
    # 128) takes ~0.18 s on this 2-core machine, a lane ~4 minutes. Checkpoints go under
    # $TOMIOKA_JAX_CACHE/pas_runs (default ~/.cache/tomioka_jax): a rerun resumes.
    "full": {"dataset": "fashion_mnist", "model": "cnn", "width": 16, "train_examples": 20000,
             "test_examples": 1000, "eps": 0.1, "epochs": 8, "lrs": (0.03, 0.1, 0.3),
             "seeds": 2, "train_steps": 5, "pgd_steps": 20, "apgd_steps": 20, "batch": 128,
             "hessian_eps": (0.0, 0.05, 0.1, 0.2), "hessian_examples": 256,
             "lanczos_steps": 20, "hessian_warmup": 2, "trainer": "fit"},
}

HEADLINE = (
    "({mode}, {dataset}): over SGD learning rates {lrs}, the robust accuracy (APGD-CE, eps "
    "{eps}) of vanilla adversarial training spans {van_lo:.3f}-{van_hi:.3f} and PAS's "
    "end-of-cycle ensemble {pas_lo:.3f}-{pas_hi:.3f} (mean {van_mean:.3f} vs {pas_mean:.3f}); "
    "top Hessian eigenvalue {eig_lo:.2f} at eps = 0 to {eig_hi:.2f} at eps = {eps_hi}")

NOTES = """\
Data: {source}, {n_train} training and {n_test} test images in [0, 1]; model: {model} (width
{width}); eps = {eps} (l_inf); {epochs} epochs, batch {batch}, SGD with momentum 0.9; PGD with
{train_steps} steps in training. The CPU scale is far below the paper's (MNIST LeNet for 100
epochs, CIFAR-10 ResNet/VGG for 200 epochs); the learning-rate grid and the number of seeds
({seeds}) are small, so differences of a few points are within the seed noise (the table gives
the seed standard deviation). Robust accuracy counts a clean mistake as a success of the
attack. 'PAS last' is the final single model of the PAS run, 'PAS ens.' the ensemble of its
{n_snaps} end-of-cycle models. PAS trains at the target eps in {pas_at_target} of the
{epochs} epochs (the rest is the per-cycle warm-up), vanilla in all of them. The eigenvalue is
of the Hessian of the mean cross-entropy on
{hessian_examples} training points at PGD points of each model (Lanczos, {lanczos_steps}
Hessian-vector products, full reorthogonalization), for vanilla models trained at the learning
rate {hessian_lr} and each eps{curv_warmup}. Training of all {n_runs} runs took {train_s:.0f} s
(summed from the logged step rates, so a run resumed from checkpoints still counts its first
part), evaluation {eval_s:.0f} s (likewise: each lane's accuracies are kept beside its
checkpoints with the time they took), the curvature study {hess_s:.0f} s (its training
included)."""


class LeNet(nnx.Module):
  """LeNet as in the reference's MNIST model at a width factor: two 5x5 convolutions with
  2x2 max pooling and one hidden dense layer."""

  def __init__(self, width: int, num_classes: int, *, rngs: nnx.Rngs, in_hw: int = 28):
    c1, c2, h = max(width // 2, 1), width, 2 * width
    self.conv1 = nnx.Conv(1, c1, (5, 5), padding="SAME", rngs=rngs)
    self.conv2 = nnx.Conv(c1, c2, (5, 5), padding="SAME", rngs=rngs)
    self.fc = nnx.Linear(c2 * (in_hw // 4) ** 2, h, rngs=rngs)
    self.out = nnx.Linear(h, num_classes, rngs=rngs)

  def __call__(self, x):
    pool = lambda z: nnx.max_pool(z, (2, 2), strides=(2, 2))  # noqa: E731
    x = pool(jax.nn.relu(self.conv1(x)))
    x = pool(jax.nn.relu(self.conv2(x)))
    x = jnp.reshape(x, (x.shape[0], -1))
    return self.out(jax.nn.relu(self.fc(x)))


def _load(config: dict):
  train, test = data.load(config["dataset"], "train"), data.load(config["dataset"], "test")
  n = min(config["train_examples"] or len(train.y), len(train.y))
  m = min(config["test_examples"] or len(test.y), len(test.y))
  rng = np.random.default_rng(0)
  itr = rng.permutation(len(train.y))[:n]
  ite = rng.permutation(len(test.y))[:m]
  tr = {"x": train.x[itr].astype(np.float32), "y": train.y[itr].astype(np.int32)}
  te = {"x": test.x[ite].astype(np.float32), "y": test.y[ite].astype(np.int32)}
  if config["model"] == "mlp":
    tr["x"], te["x"] = tr["x"].reshape(n, -1), te["x"].reshape(m, -1)
  return tr, te, train.source


def _model(config: dict, in_shape, seed: int) -> nnx.Module:
  rngs = nnx.Rngs(seed)
  if config["model"] == "mlp":
    return core.MLP(int(np.prod(in_shape)), (config["width"],) * 2, 10, rngs=rngs)
  return LeNet(config["width"], 10, rngs=rngs, in_hw=in_shape[0])


def _cycles(epochs: int) -> tuple[int, ...]:
  return (epochs // 2, (3 * epochs) // 4, epochs)


def _unroll(config: dict) -> bool:
  # A convolution inside an XLA:CPU loop body runs ~10x slower (robust.pgd's docstring): CNN
  # attacks unroll, and CNN training steps from Python (robust.fit_pas).
  return config["model"] == "cnn"


def _loss_fn(config: dict):
  return robust.make_adversarial_loss(steps=config["train_steps"], step_ratio=0.25, lower=0.0,
                                      upper=1.0, unroll=_unroll(config))


def _schedules(config: dict, steps_per_epoch: int, lr, pas_flag):
  """The lane's optimizer (SGD, momentum 0.9, its learning-rate schedule) and eps schedule."""
  epochs, eps = config["epochs"], config["eps"]
  ckpts = _cycles(epochs)
  pas_eps = robust.pas_eps_schedule(eps, ckpts=ckpts, warmup="cosine", ratio=2.0)

  def lr_factor(e):
    periodic = robust.cycle_jump(e, ckpts=(0,) + ckpts, start=1.0, power=0.1,
                                 drop_points=(0.5, 0.75))
    plain = robust.step_decay(e, start=1.0, drops=(epochs / 2, 3 * epochs / 4), factor=0.1)
    return jnp.where(pas_flag, periodic, plain)

  schedule = robust.optax_schedule(lambda e: lr * lr_factor(e), steps_per_epoch)
  eps_schedule = lambda e: jnp.where(pas_flag, pas_eps(e), eps)  # noqa: E731
  return optax.sgd(schedule, momentum=0.9), eps_schedule


def _make_run(config: dict, graphdef, tr: dict):
  """``run(params, model_state, key, lr, pas) -> (params, snapshots, metrics)``: one lane."""
  epochs, batch = config["epochs"], config["batch"]
  steps_per_epoch = len(tr["y"]) // batch
  ckpts = _cycles(epochs)
  loss_fn = _loss_fn(config)

  def run(params, model_state, key, lr, pas_flag):
    opt, eps_schedule = _schedules(config, steps_per_epoch, lr, pas_flag)
    train = robust.make_pas_trainer(graphdef, loss_fn, opt, eps_schedule=eps_schedule,
                                    batch_size=batch, epochs=epochs, snapshot_epochs=ckpts)
    k1, k2 = jax.random.split(key)
    state = core.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                            model_state=model_state, opt_state=opt.init(params), rng=k1)
    state, metrics, snaps = train(state, tr, k2)
    return state.params, snaps, metrics

  return run


def _workroot(config: dict):
  """Where the long (fit) runs keep their checkpoints: one folder per configuration, so a rerun
  of the same configuration resumes each lane where it stopped."""
  # The curvature study's settings are not in the key (its lanes are named by eps and
  # warm-up): changing them keeps the main lanes' checkpoints.
  key = hashlib.sha1(json.dumps({k: v for k, v in sorted(config.items())
                                 if k != "mode" and not k.startswith(("hessian_", "lanczos_"))},
                                default=str).encode()).hexdigest()[:12]
  base = os.environ.get("TOMIOKA_JAX_CACHE", str(pathlib.Path.home() / ".cache" / "tomioka_jax"))
  return pathlib.Path(base) / "pas_runs" / key


def _warmup_eps(eps: float, warmup: int):
  """The reference's linear eps warm-up: ``eps * min(1, e / warmup)`` in epoch ``e`` (from 0),
  so the first epoch trains clean; constant ``eps`` without a warm-up."""
  eps = jnp.asarray(eps, jnp.float32)
  if warmup <= 0:
    return lambda e: eps
  return lambda e: eps * jnp.minimum(1.0, jnp.asarray(e, jnp.float32) / warmup)


def _warmup_text(config: dict) -> str:
  w = config.get("hessian_warmup", 0)
  return (f", after the reference's linear eps warm-up from 0 over the first {w} epochs (without"
          f" it, vanilla training at a large eps can stay at the initialization, where the loss"
          f" is flat)" if w else "")


def _fit_lane(config: dict, graphdef, model_state, tr: dict, params, lr: float, pas_flag: bool,
              seed: int, eps_override: float | None = None, name: str = "lane",
              eps_warmup: int = 0):
  """One lane trained by ``robust.fit_pas`` (stepped from Python, resumable): the same
  schedules as the compiled lanes (``eps_override``: a constant eps instead, after a linear
  warm-up of ``eps_warmup`` epochs). Returns (params, snapshots, per-epoch loss, per-epoch eps,
  training seconds): the seconds are summed over the run's logged step rates, so a lane resumed
  from its checkpoints still reports the time it took to train."""
  epochs, batch = config["epochs"], config["batch"]
  steps_per_epoch = len(tr["y"]) // batch
  opt, eps_schedule = _schedules(config, steps_per_epoch, lr, pas_flag)
  if eps_override is not None:
    eps_schedule = _warmup_eps(eps_override, eps_warmup)
  state = core.TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
                          opt_state=opt.init(params), rng=jax.random.key(1000 + seed))
  workdir = _workroot(config) / name
  final, snaps, hist = robust.fit_pas(
      graphdef, state, _loss_fn(config), opt, tr, eps_schedule=eps_schedule, batch_size=batch,
      epochs=epochs, snapshot_epochs=_cycles(epochs), seed=seed,
      workdir=str(workdir), checkpoint_every=max(steps_per_epoch // 2, 1), progress=True)
  loss = np.asarray([h["loss"] for h in hist], np.float64)[:epochs * steps_per_epoch]
  eps = np.asarray([h["eps"] for h in hist], np.float64)[:epochs * steps_per_epoch]
  per_epoch = lambda v: v.reshape(epochs, steps_per_epoch).mean(axis=1)  # noqa: E731
  steps = np.asarray([h["step"] for h in hist], np.float64)
  rates = np.asarray([h.get("steps_per_s", np.nan) for h in hist], np.float64)
  seconds = float(np.nansum(np.diff(steps, prepend=0.0) / rates))
  return final.params, snaps, per_epoch(loss), per_epoch(eps), seconds


def _evaluate(config: dict, graphdef, model_state, te: dict):
  """``evaluate(params, snaps, key) -> accuracies`` of the final model and the ensemble."""
  x, y, eps = jnp.asarray(te["x"]), jnp.asarray(te["y"]), config["eps"]

  def accs(logits_fn, key):
    k1, k2 = jax.random.split(key)
    xp = robust.pgd(logits_fn, x, y, k1, eps=eps, steps=config["pgd_steps"], lower=0.0,
                    upper=1.0, unroll=_unroll(config))
    xa = robust.apgd_ce(logits_fn, x, y, k2, eps=eps, steps=config["apgd_steps"], lower=0.0,
                        upper=1.0, unroll=_unroll(config))
    clean = jnp.mean((jnp.argmax(logits_fn(x), -1) == y).astype(jnp.float32))
    return jnp.stack([clean, robust.robust_accuracy(logits_fn, x, y, xp),
                      robust.robust_accuracy(logits_fn, x, y, xa)])

  def evaluate(params, snaps, key):
    single = accs(lambda z: nnx.merge(graphdef, params, model_state)(z), key)
    ens = accs(robust.ensemble_logits(graphdef, snaps, model_state), key)
    return jnp.stack([single, ens])  # (2: final / ensemble, 3: clean / PGD / APGD)

  return evaluate


def _hessian_stats(config: dict, graphdef, model_state, tr: dict, params, eps, key):
  """Top Hessian eigenvalue, gradient norm and value of the adversarial loss at PGD points of
  the model (held fixed), on the first ``hessian_examples`` training points."""
  m = config["hessian_examples"]
  xh, yh = jnp.asarray(tr["x"][:m]), jnp.asarray(tr["y"][:m])
  k3, k4 = jax.random.split(key)
  f = lambda p: nnx.merge(graphdef, p, model_state)  # noqa: E731
  xa = robust.pgd(f(params), xh, yh, k3, eps=eps, steps=config["pgd_steps"], lower=0.0,
                  upper=1.0, unroll=_unroll(config))
  xa = jax.lax.stop_gradient(xa)
  loss = lambda p: jnp.mean(robust.logit_cross_entropy(f(p)(xa), yh))  # noqa: E731
  top = robust.hessian_top_eigenvalues(loss, params, 1, key=k4, steps=config["lanczos_steps"])[0]
  gnorm = jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves(jax.grad(loss)(params))))
  return top, gnorm, loss(params)


def _curvature(config: dict, graphdef, model_state, tr: dict, params0, hessian_lr: float):
  """Top Hessian eigenvalue of the adversarial loss of vanilla models trained at each eps (one
  compiled program, vmapped over eps)."""
  epochs, batch = config["epochs"], config["batch"]
  steps_per_epoch = len(tr["y"]) // batch
  loss_fn = _loss_fn(config)

  def one(eps, key):
    opt, _ = _schedules(config, steps_per_epoch, hessian_lr, False)
    eps_schedule = _warmup_eps(eps, config.get("hessian_warmup", 0))
    train = robust.make_pas_trainer(graphdef, loss_fn, opt, eps_schedule=eps_schedule,
                                    batch_size=batch, epochs=epochs)
    k1, k2, k3 = jax.random.split(key, 3)
    state = core.TrainState(step=jnp.zeros((), jnp.int32), params=params0,
                            model_state=model_state, opt_state=opt.init(params0), rng=k1)
    state, _, _ = train(state, tr, k2)
    return _hessian_stats(config, graphdef, model_state, tr, state.params, eps, k3)

  eps = jnp.asarray(config["hessian_eps"], jnp.float32)
  keys = jax.random.split(jax.random.key(11), len(config["hessian_eps"]))
  return jax.jit(jax.vmap(one))(eps, keys)


def _lane_name(pas_flag: bool, lr: float, seed: int, eps: float) -> str:
  return f"{'pas' if pas_flag else 'vanilla'}_lr{lr:g}_seed{seed}_eps{eps:g}"


def _experiment_fit(config: dict, graphdef, model_state, params, tr, te, grid):
  """The lanes one after another, each stepped from Python by ``robust.fit_pas`` (checkpoints
  under :func:`_workroot`: an interrupted run resumes), evaluated and measured one by one."""
  lrs = tuple(config["lrs"])
  lanes = [_fit_lane(config, graphdef, model_state, tr, params[s], lr, bool(p), s,
                     name=_lane_name(bool(p), lr, s, config["eps"])) for p, lr, s in grid]
  train_s = sum(lane[4] for lane in lanes)  # from the logged step rates (resumes included)
  # Test points in chunks (one compile per chunk size): the unrolled attacks keep every step's
  # activations live, ~35 MB per CNN test point with the ensemble.
  chunk = config.get("eval_chunk", 100)
  n_te = len(te["y"])
  pieces = [(i, min(i + chunk, n_te)) for i in range(0, n_te, chunk)]
  evals = {}

  def evaluate(params, snaps, key):
    total = 0.0
    for j, (a, b) in enumerate(pieces):
      part = {"x": te["x"][a:b], "y": te["y"][a:b]}
      if b - a not in evals:
        evals[b - a] = jax.jit(lambda p, s, k, x, y: _evaluate(
            config, graphdef, model_state, {"x": x, "y": y})(p, s, k))
      total = total + (b - a) * np.asarray(
          evals[b - a](params, snaps, jax.random.fold_in(key, j), part["x"], part["y"]))
    return total / n_te

  # Each lane's accuracies are kept beside its checkpoints (keyed by the evaluation's settings
  # and the lane's final step), so a rerun after an interruption evaluates only what is missing.
  eval_key = json.dumps({k: config[k] for k in ("test_examples", "pgd_steps", "apgd_steps",
                                                "eps")} | {"epochs": config["epochs"]})
  accs, eval_s = [], 0.0
  for (p, lr, s), (f, sn, _, _, _) in zip(grid, lanes):
    path = _workroot(config) / _lane_name(bool(p), lr, s, config["eps"]) / "evaluation.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    if saved.get("key") != eval_key:
      t0 = time.perf_counter()
      saved = {"key": eval_key, "acc": np.asarray(evaluate(f, sn, jax.random.key(1))).tolist()}
      saved["seconds"] = time.perf_counter() - t0
      path.write_text(json.dumps(saved))
    accs.append(np.asarray(saved["acc"], np.float32))
    eval_s += saved["seconds"]
  acc = np.stack(accs)
  hessian_lr = lrs[len(lrs) // 2]
  stats = jax.jit(lambda p, e, k: _hessian_stats(config, graphdef, model_state, tr, p, e, k))
  warmup = config.get("hessian_warmup", 0)
  curv, hess_s = [], 0.0
  for eps, key in zip(config["hessian_eps"],
                      jax.random.split(jax.random.key(11), len(config["hessian_eps"]))):
    # eps 0 needs no warm-up: that lane is the same with or without one
    name = _lane_name(False, hessian_lr, 0, float(eps)) + (
        f"_warm{warmup}" if warmup and eps > 0 else "")
    p, _, _, _, lane_s = _fit_lane(config, graphdef, model_state, tr, params[0], hessian_lr,
                                   False, 0, eps_override=float(eps), name=name,
                                   eps_warmup=warmup)
    t0 = time.perf_counter()
    curv.append([np.asarray(v) for v in stats(p, jnp.float32(eps), key)])
    hess_s += lane_s + time.perf_counter() - t0
  top, gnorm, adv_loss = (np.asarray(v) for v in zip(*curv))
  metrics = {"loss": np.stack([lane[2] for lane in lanes]),
             "eps": np.stack([lane[3] for lane in lanes])}
  return acc, metrics, (top, gnorm, adv_loss), hessian_lr, (train_s, eval_s, hess_s)


def experiment(config: dict) -> dict:
  tr, te, source = _load(config)
  lrs, seeds = tuple(config["lrs"]), config["seeds"]
  models = [_model(config, tr["x"].shape[1:], s) for s in range(seeds)]
  graphdef, _, model_state = nnx.split(models[0], nnx.Param, ...)
  params = [nnx.split(m, nnx.Param, ...)[1] for m in models]
  # lanes: method (vanilla, PAS) x learning rate x seed
  grid = [(p, lr, s) for p in (0, 1) for lr in lrs for s in range(seeds)]
  stack = lambda trees: jax.tree.map(lambda *v: jnp.stack(v), *trees)  # noqa: E731
  lane_params = stack([params[s] for _, _, s in grid])
  lane_keys = jax.random.split(jax.random.key(0), len(grid))
  lane_lr = jnp.asarray([lr for _, lr, _ in grid], jnp.float32)
  lane_pas = jnp.asarray([bool(p) for p, _, _ in grid])

  if config.get("trainer", "scan") == "fit":
    acc, metrics, (top, gnorm, adv_loss), hessian_lr, (train_s, eval_s, hess_s) = (
        _experiment_fit(config, graphdef, model_state, params, tr, te, grid))
  else:
    run = _make_run(config, graphdef, tr)
    t0 = time.perf_counter()
    final, snaps, metrics = jax.jit(jax.vmap(run, in_axes=(0, None, 0, 0, 0)))(
        lane_params, model_state, lane_keys, lane_lr, lane_pas)
    jax.block_until_ready(final)
    train_s = time.perf_counter() - t0

    evaluate = _evaluate(config, graphdef, model_state, te)
    t0 = time.perf_counter()
    acc = jax.jit(jax.vmap(evaluate, in_axes=(0, 0, None)))(final, snaps, jax.random.key(1))
    acc = np.asarray(acc)  # (lanes, 2, 3)
    eval_s = time.perf_counter() - t0

    hessian_lr = lrs[len(lrs) // 2]
    t0 = time.perf_counter()
    top, gnorm, adv_loss = _curvature(config, graphdef, model_state, tr, params[0], hessian_lr)
    top, gnorm, adv_loss = np.asarray(top), np.asarray(gnorm), np.asarray(adv_loss)
    hess_s = time.perf_counter() - t0

  shape = (2, len(lrs), seeds)
  return {
      "source": source, "n_train": len(tr["y"]), "n_test": len(te["y"]),
      "acc": acc.reshape(shape + (2, 3)),  # method, lr, seed, (final, ensemble), metric
      "train_loss": np.asarray(metrics["loss"]).reshape(shape + (-1,)),
      "train_eps": np.asarray(metrics["eps"]).reshape(shape + (-1,))[0, 0, 0],
      "pas_eps": np.asarray(metrics["eps"]).reshape(shape + (-1,))[1, 0, 0],
      "hessian_top": top, "hessian_grad_norm": gnorm, "hessian_adv_loss": adv_loss,
      "hessian_lr": hessian_lr, "train_s": train_s, "eval_s": eval_s, "hess_s": hess_s,
  }


def _summary(exp: dict) -> dict:
  """Seed means per method and learning rate: vanilla (final model), PAS last, PAS ensemble."""
  acc = np.asarray(exp["acc"])
  rows = {"vanilla": acc[0, :, :, 0, :], "PAS last": acc[1, :, :, 0, :],
          "PAS ens.": acc[1, :, :, 1, :]}
  return {k: (v.mean(axis=1), v.std(axis=1)) for k, v in rows.items()}  # (lr, metric)


def claims(config: dict, exp: dict, times: dict) -> list[_harness.Claim]:
  s = _summary(exp)
  van, pas = s["vanilla"][0], s["PAS ens."][0]
  spread_v = {m: float(van[:, m].max() - van[:, m].min()) for m in (1, 2)}
  spread_p = {m: float(pas[:, m].max() - pas[:, m].min()) for m in (1, 2)}
  less_sensitive = spread_p[2] < spread_v[2]
  better = float(pas[:, 2].mean()) >= float(van[:, 2].mean())
  acc = np.asarray(exp["acc"])
  gap = float(np.max(acc[..., 2] - acc[..., 1]))
  apgd_stronger = gap <= 0.01
  top = np.asarray(exp["hessian_top"])
  eps_list = ", ".join(f"{e:g}" for e in config["hessian_eps"])
  # A model whose adversarial loss stays near log(10) predicts (almost) the uniform
  # distribution: it never left the initialization (or collapsed back to it), is no minimum,
  # and its Hessian is flat there. The sharpness claim is about minima: it is judged on the
  # models that trained (at least three eps values), and the others are named.
  trained = np.asarray(exp["hessian_adv_loss"]) <= 0.95 * np.log(10)
  stuck = [f"{e:g}" for e, ok in zip(config["hessian_eps"], trained) if not ok]
  increasing = bool(trained.sum() >= 3 and np.all(np.diff(top[trained]) > 0))
  curv_reason = ("fewer than three eps values gave trained models" if trained.sum() < 3 else
                 "the top eigenvalue is not increasing in eps among the trained models")
  stuck_text = (f"; the model at eps {', '.join(stuck)} stayed at (or fell back to) the "
                f"uniform prediction (adversarial loss near log 10), left out: the paper's "
                f"other finding, large budgets hinder the escape from the initialization"
                if stuck else "")
  return [
      _harness.Claim(
          "PAS is much less sensitive to the learning rate than vanilla adversarial training: "
          "smaller spread (max - min over the learning-rate grid) of APGD-CE robust accuracy",
          "qualitative (Sec. 5)",
          f"spread {spread_p[2]:.3f} (PAS ens.) vs {spread_v[2]:.3f} (vanilla); PGD: "
          f"{spread_p[1]:.3f} vs {spread_v[1]:.3f}",
          less_sensitive,
          reason="" if less_sensitive else "PAS's spread over the learning rates is not smaller"),
      _harness.Claim(
          "PAS (end-of-cycle ensemble) is at least as robust as vanilla adversarial training "
          "(APGD-CE accuracy averaged over the learning-rate grid)",
          "Table 1 (PAS > vanilla)",
          f"{pas[:, 2].mean():.3f} vs {van[:, 2].mean():.3f}", better,
          reason="" if better else "vanilla's mean robust accuracy is higher"),
      _harness.Claim(
          "APGD-CE is at least as strong as PGD with the same number of iterations (robust "
          "accuracy not higher by more than 0.01 on any model)",
          "Croce & Hein 2020",
          f"largest APGD - PGD accuracy gap {gap:+.3f}", apgd_stronger,
          reason="" if apgd_stronger else "APGD left some model more robust than PGD did"),
      _harness.Claim(
          "larger adversarial budgets give sharper minima: the top Hessian eigenvalue of the "
          "adversarial loss increases with eps (among the models that trained, >= 3 eps)",
          "Sec. 3 (Fig. 2)",
          f"eps {eps_list}: " + ", ".join(f"{v:.2f}" for v in top) + stuck_text, increasing,
          reason="" if increasing else curv_reason),
  ]


def report(config: dict, exp: dict, times: dict) -> _harness.Report:
  s = _summary(exp)
  lrs = config["lrs"]
  rows = []
  for name, (mean, std) in s.items():
    for i, lr in enumerate(lrs):
      rows.append((name, lr, f"{mean[i, 0]:.3f} ± {std[i, 0]:.3f}",
                   f"{mean[i, 1]:.3f} ± {std[i, 1]:.3f}", f"{mean[i, 2]:.3f} ± {std[i, 2]:.3f}"))
  spread = [(name, float(m[:, 2].max() - m[:, 2].min()), float(m[:, 2].mean()),
             float(m[:, 1].max() - m[:, 1].min()), float(m[:, 1].mean()))
            for name, (m, _) in s.items()]
  curv = list(zip(config["hessian_eps"], np.asarray(exp["hessian_top"]).tolist(),
                  np.asarray(exp["hessian_grad_norm"]).tolist(),
                  np.asarray(exp["hessian_adv_loss"]).tolist()))
  tables = [
      "## Accuracy by learning rate (test points, mean ± sd over seeds)\n\n" +
      _harness.markdown_table(["model", "SGD lr", "clean", "PGD", "APGD-CE"], rows),
      "## Sensitivity to the learning rate\n\n" + _harness.markdown_table(
          ["model", "APGD spread", "APGD mean", "PGD spread", "PGD mean"], spread),
      "## Curvature against eps (vanilla, lr {})\n\n".format(exp["hessian_lr"]) +
      _harness.markdown_table(["eps", "top Hessian eigenvalue", "gradient norm",
                               "adversarial loss"], curv),
  ]
  van, pas = s["vanilla"][0][:, 2], s["PAS ens."][0][:, 2]
  top = np.asarray(exp["hessian_top"])
  # the headline's largest eps is the largest whose model trained (see claims)
  trained = np.flatnonzero(np.asarray(exp["hessian_adv_loss"]) <= 0.95 * np.log(10))
  last = int(trained[-1]) if trained.size else len(top) - 1
  n_runs = 2 * len(lrs) * config["seeds"]
  return _harness.Report(
      tables=tables, figure=_figure(config, exp, s),
      notes=NOTES.format(**{**config, **exp}, n_snaps=len(_cycles(config["epochs"])),
                         n_runs=n_runs, curv_warmup=_warmup_text(config), pas_at_target=int(np.sum(
                             np.asarray(exp["pas_eps"]) >= config["eps"] * (1 - 1e-6)))),
      headline=HEADLINE.format(mode=config["mode"], dataset=config["dataset"],
                               lrs="/".join(f"{v:g}" for v in lrs), eps=config["eps"],
                               van_lo=van.min(), van_hi=van.max(), pas_lo=pas.min(),
                               pas_hi=pas.max(), van_mean=van.mean(), pas_mean=pas.mean(),
                               eig_lo=top[0], eig_hi=top[last], eps_hi=config["hessian_eps"][last]))


def _figure(config: dict, exp: dict, s: dict):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 3, figsize=(14, 4))
  lrs = np.asarray(config["lrs"])
  styles = {"vanilla": ("C0", "o-"), "PAS last": ("C1", "s--"), "PAS ens.": ("C3", "^-")}
  for name, (mean, std) in s.items():
    c, fmt = styles[name]
    axes[0].errorbar(lrs, mean[:, 2], yerr=std[:, 2], fmt=fmt, color=c, label=name, capsize=3)
    axes[0].plot(lrs, mean[:, 1], ":", color=c, alpha=0.6)
  axes[0].set(xscale="log", xlabel="SGD learning rate",
              ylabel="robust accuracy (APGD-CE; dotted: PGD)",
              title=f"eps = {config['eps']}, {config['dataset']}")
  axes[0].set_xticks(lrs, [f"{v:g}" for v in lrs])
  axes[0].minorticks_off()
  axes[0].legend()
  epochs = np.arange(config["epochs"])
  axes[1].plot(epochs, exp["train_eps"], "C0-", label="vanilla eps")
  axes[1].plot(epochs, exp["pas_eps"], "C3-", label="PAS eps (cosine warm-up per cycle)")
  axes[1].set(xlabel="epoch", ylabel="eps", title="training budget")
  axes[1].legend(fontsize=8)
  heps, top = np.asarray(config["hessian_eps"]), np.asarray(exp["hessian_top"])
  trained = np.asarray(exp["hessian_adv_loss"]) <= 0.95 * np.log(10)
  axes[2].plot(heps[trained], top[trained], "ko-", label="trained models")
  if not trained.all():
    axes[2].plot(heps[~trained], top[~trained], "x", color="C3", ms=9,
                 label="stayed at the uniform prediction")
  axes[2].legend(fontsize=8)
  axes[2].set(xlabel="training eps", ylabel="top Hessian eigenvalue",
              title="curvature of the adversarial loss")
  fig.tight_layout()
  return fig
