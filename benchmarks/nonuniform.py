"""Certified non-uniform bounds: volume against the uniform box, normal vs adversarial training.

Paper: Liu, Tomioka, Cevher, "On Certifying Non-uniform Bound against Adversarial Attacks"
(ICML 2019, arXiv 1903.06603); reference code liuchen11/CertifyNonuniformBounds. MLPs are
trained normally and with PGD adversarial training (Adam lr 1e-4 as the reference, fewer
epochs), inputs normalized to [-1, 1] as the reference's loaders do. For correctly classified
test points we certify the non-uniform box (the reference's augmented Lagrangian, its
schedule and defaults, separate-logit bound) and the largest uniform box (bisection on the
same bound), and report the log-volume ratio ``sum_i log eps_i^NU - d log eps^U``.

Soundness, every run: PGD and APGD-CE started inside each certified box and constrained to it
never change the label; sampled points stay inside the computed bounds. Bound quality: at each
point's uniform certified radius the linear bound's certified margin beats interval
arithmetic's. Speed: time per certified point of our compiled, vmapped certifier against the
reference's method re-implemented in NumPy (``benchmarks/_nonuniform_numpy.py``: its forward
bound propagation and a hand-written gradient; PyTorch does not install here), same network,
points, bound, schedule and dtype, at equal volume.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from benchmarks import _harness
from benchmarks import _nonuniform_numpy as numpy_ref
from tomioka_jax import core
from tomioka_jax import data as data_lib
from tomioka_jax import robust

PAPER = ("Liu, Tomioka, Cevher 2019, On Certifying Non-uniform Bound against Adversarial "
         "Attacks (ICML, arXiv 1903.06603)")
NAME = "nonuniform"

CONFIGS = {
    # dataset; hidden widths; training epochs and the PGD adversary of adversarial training
    # (radius in [-1, 1] units, steps); certified points; the certifier's iterations (the
    # reference: 400); attack steps and samples of the soundness check; whether to certify with
    # the back-substituted margin bound too; timing: points certified by ours
    # in one batch, points NumPy certifies one at a time, repeats.
    "smoke": {"dataset": "digits", "hidden": (32,), "epochs": 2, "adv_eps": 0.1,
              "adv_steps": 3, "points": 4, "iterations": 40, "attack_steps": 5,
              "samples": 200, "train_size": 600, "margin_bound": False, "timed_points": 4,
              "numpy_points": 1, "timing_repeats": 1},
    "quick": {"dataset": "digits", "hidden": (100,), "epochs": 60, "adv_eps": 0.1,
              "adv_steps": 7, "points": 50, "iterations": 400, "attack_steps": 20,
              "samples": 2000, "train_size": None, "margin_bound": True, "timed_points": 50,
              "numpy_points": 5, "timing_repeats": 3},
    "full": {"dataset": "fashion_mnist", "hidden": (300,), "epochs": 8, "adv_eps": 0.1,
             "adv_steps": 7, "points": 200, "iterations": 400, "attack_steps": 50,
             "samples": 2000, "train_size": None, "margin_bound": True, "timed_points": 200,
             "numpy_points": 5, "timing_repeats": 2},
}

HEADLINE = (
    "({mode}, {dataset}): non-uniform certified boxes (the reference's augmented Lagrangian) "
    "have {nu_normal:.1f} (normal) and {nu_adv:.1f} (adversarially trained) more log-volume "
    "than the largest uniform box, geometric-mean width x{gm_normal:.2f} / x{gm_adv:.2f}; no "
    "PGD/APGD attack inside a certified box changes the label; certification {batch_x:.1f}x "
    "faster per point than the reference's method in NumPy in its batches of 10 (target 10x)")

NOTES = """\
Dataset {dataset}, MLP hidden {hidden}, inputs in [-1, 1]; {epochs} epochs of Adam (lr 1e-4,
weight decay 1e-4, b2 0.99 as the reference) with and without PGD adversarial training
(l_inf radius {adv_eps}, {adv_steps} steps of eps/4). Test accuracy: normal {acc_normal:.3f},
adversarial {acc_adv:.3f}. Certification of the first {n_cert} correctly classified test
points with the reference's defaults ({iterations} iterations, SGD lr 1e-3 on the loss
averaged over batches of 10, lambda every 5 steps, beta x5 every 80, eps0 1e-3, delta 1e-4,
final shrink 0.99) and its separate-logit bound; the uniform baseline is the largest radius
certified by the same bound (bisection), which is at least what the reference's own uniform
mode reaches. The tighter back-substituted margin bound is reported beside it. The box is not
intersected with the data range (the reference does not). Soundness: PGD ({attack_steps}
steps) and APGD-CE ({attack_steps} steps) restricted to each certified box, and {samples}
uniform samples per box checked against the linear bounds.

Caveat: the reference's schedule bounds how far a box can grow. Each step adds at most
about 4 lr / 10 = 4e-4 to eps_i (the barrier's gradient -2/v), so after {iterations} steps
eps_i <= 1e-3 + 4e-4 x {iterations} (0.161 at 400). Where that cap binds (the per-feature maps
saturate at it, the certified margin stays well above delta), the non-uniform volume is set
by the schedule, not by the certificate: the ratio is a lower bound on what the relaxation
allows, and the margin-bound column shows how much room there is.

Speed (second table; the runner times it alone on an idle machine): a network trained for one
epoch, the first {timed_points} correctly classified test points, the reference's schedule, float32.
Ours is one compiled program vmapped over the points (compilation reported apart; the
batch's shrink search runs until its slowest point is certified). The baseline is the
reference's method in NumPy (benchmarks/_nonuniform_numpy.py): its forward propagation of
one coefficient matrix per source, a hand-written reverse pass for the gradient, BLAS
products; it skips the reference's post-activation linear bound (never the tighter), so it
does less work than the reference. The claim is judged against NumPy on the reference's
batch of 10 (Python overhead shared by 10 points); one point at a time is shown beside it.
Equal volume: the per-point log-volumes agree to a relative 1e-3."""


def _load(config):
  if config["dataset"] == "digits":
    train, test = data_lib.load_digits("train"), data_lib.load_digits("test")
  else:
    train, test = data_lib.load(config["dataset"], "train"), data_lib.load(config["dataset"],
                                                                            "test")

  def prep(ds, n=None):
    x = np.asarray(ds.x, np.float32).reshape(len(ds.y), -1)
    if x.max() > 1.5:
      x = x / 255.0
    x = (x - 0.5) / 0.5
    y = np.asarray(ds.y, np.int32)
    return (x[:n], y[:n]) if n else (x, y)

  return prep(train, config["train_size"]), prep(test)


def _train(config, x, y, adversarial: bool, seed: int = 0):
  d = x.shape[1]
  model = core.MLP(d, config["hidden"], 10, rngs=nnx.Rngs(seed))
  optimizer = optax.chain(optax.add_decayed_weights(1e-4), optax.adam(1e-4, b2=0.99))
  graphdef, state = core.create_train_state(model, optimizer, jax.random.key(seed))

  def loss_fn(model, batch, rng):
    xb = batch["x"]
    if adversarial:
      def logits_fn(z):
        return model(z)
      xb = jax.lax.stop_gradient(robust.pgd(logits_fn, xb, batch["y"], rng, eps=config["adv_eps"],
                                            steps=config["adv_steps"]))
    return core.cross_entropy_loss(model, {"x": xb, "y": batch["y"]}, rng)

  train = core.make_scan_trainer(graphdef, loss_fn, optimizer, batch_size=100,
                                 epochs=config["epochs"])
  state, _ = train(state, {"x": jnp.asarray(x), "y": jnp.asarray(y)}, jax.random.key(seed + 1))
  model = nnx.merge(graphdef, state.params, state.model_state)
  return robust.layers_from_nnx(model)


def _options(config, **changes):
  return dataclasses.replace(robust.CertifyOptions(iterations=config["iterations"]), **changes)


def _soundness(layers, x, y, eps, config, key):
  """Attacks started inside and restricted to each box; samples checked against bounds."""
  logits_fn = lambda z: robust.apply_layers(layers, z)
  k1, k2, k3 = jax.random.split(key, 3)
  adv_pgd = robust.pgd(logits_fn, x, y, k1, eps=eps, steps=config["attack_steps"])
  adv_apgd = robust.apgd_ce(logits_fn, x, y, k2, eps=eps, steps=config["attack_steps"])
  flips = 0
  for adv in (adv_pgd, adv_apgd):
    inside = np.all(np.abs(np.asarray(adv) - x) <= np.asarray(eps) * (1 + 1e-5) + 1e-7)
    assert inside, "attack left the box"
    flips += int(np.sum(np.argmax(np.asarray(logits_fn(adv)), -1) != y))
  lo, hi = robust.linear_bounds(layers, x - eps, x + eps)
  outside = 0
  u = jax.random.uniform(k3, (config["samples"],) + x.shape, minval=-1.0, maxval=1.0)
  pts = x[None] + u * eps[None]
  out = np.asarray(logits_fn(pts.reshape(-1, x.shape[1]))).reshape(pts.shape[:2] + (-1,))
  outside = int(np.sum((out < np.asarray(lo)[None] - 1e-4) | (out > np.asarray(hi)[None] + 1e-4)))
  label_flips = int(np.sum(np.argmax(out, -1) != y[None]))
  return {"attack_flips": flips, "sample_outside": outside, "sample_flips": label_flips}


def _certify_model(layers, x, y, config):
  correct = np.asarray(jnp.argmax(robust.apply_layers(layers, x), -1)) == y
  idx = np.flatnonzero(correct)[:config["points"]]
  xc, yc = x[idx], y[idx]
  opts = _options(config)
  nu = robust.certify_nonuniform(layers, xc, yc, opts)
  u = robust.certify_uniform(layers, xc, yc, opts)
  d = x.shape[1]
  ratio = np.asarray(robust.log_volume_ratio(nu, u))
  ratio_m = np.full_like(ratio, np.nan)  # smoke skips the margin bound (one compile fewer)
  if config["margin_bound"]:
    nu_m = robust.certify_nonuniform(layers, xc, yc, _options(config, method="margin"))
    ratio_m = np.asarray(nu_m.log_volume - u.log_volume)
  # Linear vs interval at the uniform certified radius (u.margin: the linear bound's there).
  eps_u = np.asarray(u.eps)
  lin = np.asarray(u.margin)
  il, iu = robust.interval_bounds(layers, xc - eps_u, xc + eps_u)
  il, iu = np.asarray(il), np.asarray(iu)
  ibp = np.array([np.min(np.delete(il[i, yc[i]] - iu[i], yc[i])) for i in range(len(yc))])
  sound = _soundness(layers, xc, yc, np.asarray(nu.eps), config, jax.random.key(7))
  return {
      "n": int(len(yc)), "d": d, "accuracy": float(np.mean(correct)),
      "certified_nu": int(np.sum(np.asarray(nu.certified))),
      "certified_u": int(np.sum(np.asarray(u.certified))),
      "ratio": ratio, "ratio_margin": ratio_m,
      "log_eps_u": np.log(eps_u[:, 0]), "gm_ratio": np.exp(ratio / d),
      "lin_margin": lin, "ibp_margin": ibp,
      "eps_maps": np.asarray(nu.eps[:3]), "eps_u_first": eps_u[:3, 0], "images": xc[:3],
      "shrink_steps": np.asarray(nu.shrink_steps), **sound,
  }


def experiment(config: dict) -> dict:
  (xtr, ytr), (xte, yte) = _load(config)
  out = {}
  for name, adv in (("normal", False), ("adversarial", True)):
    layers = _train(config, xtr, ytr, adv)
    acc = float(np.mean(np.asarray(jnp.argmax(robust.apply_layers(layers, xte), -1)) == yte))
    res = _certify_model(layers, xte, yte, config)
    res["test_accuracy"] = acc
    out[name] = res
  return out


def timings(config: dict) -> dict:
  """Certification time per point: ours (one compiled, vmapped program over a batch of points)
  against the reference's method in NumPy (``benchmarks/_nonuniform_numpy.py``: its forward
  bound and a hand-written gradient), on the same network, points, schedule and dtype
  (float32, as the reference runs). NumPy runs one point at a time (median of repeats per
  point) and as the reference's batch of 10 (one run)."""
  (xtr, ytr), (xte, yte) = _load(config)
  layers = _train(dict(config, epochs=1), xtr, ytr, False)
  correct = np.asarray(jnp.argmax(robust.apply_layers(layers, xte), -1)) == yte
  idx = np.flatnonzero(correct)[:config["timed_points"]]
  x, y = xte[idx], yte[idx]
  opts = _options(config)

  def ours():
    return robust.certify_nonuniform(layers, x, y, opts)

  t_ours = _harness.timeit(lambda: ours().eps, repeats=config["timing_repeats"])
  cert = ours()
  k = config["numpy_points"]
  np_single, np_cert = [], []
  for i in range(k):
    t = _harness.timeit(lambda: numpy_ref.certify_nonuniform(layers, x[i:i + 1], y[i:i + 1], opts),
                        repeats=config["timing_repeats"], warmup=False)
    np_single.append(t.median_s)
    np_cert.append(numpy_ref.certify_nonuniform(layers, x[i:i + 1], y[i:i + 1], opts))
  b = min(10, len(y))
  t_batch = _harness.timeit(lambda: numpy_ref.certify_nonuniform(layers, x[:b], y[:b], opts),
                            repeats=1, warmup=False)
  lv_ours = np.asarray(cert.log_volume)
  lv_np = np.array([c.log_volume[0] for c in np_cert])
  roof = _roofline(layers, x, y, opts, int(np.max(np.asarray(cert.shrink_steps))),
                   config["timing_repeats"])
  return {
      **roof,
      "points": int(len(y)), "ours": t_ours.as_dict(),
      "ours_per_point_s": t_ours.median_s / len(y),
      "numpy_points": k, "numpy_single_s": np_single,
      "numpy_per_point_s": float(np.mean(np_single)),
      "numpy_batch_points": b, "numpy_batch_per_point_s": t_batch.median_s / b,
      "log_volume_ours": lv_ours[:k].tolist(), "log_volume_numpy": lv_np.tolist(),
      "shrink_ours": np.asarray(cert.shrink_steps).tolist(),
      "shrink_numpy": [int(c.shrink_steps[0]) for c in np_cert],
  }


def _xla_flops(f, *args) -> float:
  analysis = jax.jit(f).lower(*args).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  return float(analysis.get("flops", 0.0))


def _roofline(layers, x, y, opts, max_shrink: int, repeats: int) -> dict:
  """How far our certifier is from this machine's limit: its floating-point work per point
  (XLA's cost analysis of one gradient of the certified margin, times the schedule's
  iterations, plus the batch's shrink evaluations: the vmapped while loop runs until its
  slowest point is certified) against the measured float32 GEMM rate on the bound's largest
  product (first-layer weights times the back-substituted coefficients of every point; at
  least 2048 columns, so that small configurations still measure the machine, not dispatch)."""
  n = len(y)
  eps0 = jnp.full(x.shape, 1e-3, x.dtype)

  def margin_sum(e):
    return jnp.sum(robust.certified_margin(layers, x, y, e, method=opts.method))

  grad_flops = _xla_flops(jax.grad(margin_sum), eps0) / n
  fwd_flops = _xla_flops(margin_sum, eps0) / n
  work = opts.iterations * grad_flops + (max_shrink + 1) * fwd_flops
  w1 = jnp.asarray(layers[0].weight)
  k = jnp.shape(layers[-1].weight)[1]
  cols = max(k * n, 2048)
  rhs = jnp.ones((w1.shape[1], cols), w1.dtype)
  gemm = jax.jit(lambda a, b: a @ b)
  t = _harness.timeit(lambda: gemm(w1, rhs), repeats=max(5, 5 * repeats))
  return {"grad_flops_per_point": grad_flops, "margin_flops_per_point": fwd_flops,
          "work_flops_per_point": work,
          "gemm_flops_per_s": 2.0 * w1.shape[0] * w1.shape[1] * cols / t.median_s}


SPEED_CLAIM = ("certification time per point vs the reference's method in NumPy (its forward "
               "bound, hand-written gradient; batches of 10 as the reference runs), same bound, "
               "box and schedule, at equal volume: 10x faster")


def _speed(times):
  ours = times["ours_per_point_s"]
  lv_o, lv_n = np.asarray(times["log_volume_ours"]), np.asarray(times["log_volume_numpy"])
  rel = float(np.max(np.abs(lv_o - lv_n) / np.abs(lv_n)))
  return {"ours_ms": 1e3 * ours, "single_ms": 1e3 * times["numpy_per_point_s"],
          "batch_ms": 1e3 * times["numpy_batch_per_point_s"],
          "single_x": times["numpy_per_point_s"] / ours,
          "batch_x": times["numpy_batch_per_point_s"] / ours, "volume_rel": rel,
          "lv_ours": float(np.mean(lv_o)), "lv_numpy": float(np.mean(lv_n))}


def _roof_text(times) -> str:
  if "work_flops_per_point" not in times:
    return ""
  rate = times["work_flops_per_point"] / times["ours_per_point_s"]
  return (f"; ours does {times['work_flops_per_point'] / 1e9:.2f} GFLOP per point at "
          f"{rate / 1e9:.0f} GFLOP/s, {100 * rate / times['gemm_flops_per_s']:.0f}% of this "
          f"machine's measured float32 GEMM rate ({times['gemm_flops_per_s'] / 1e9:.0f} "
          f"GFLOP/s on the bound's largest product)")


def _speed_claim(times):
  sp = _speed(times)
  equal = sp["volume_rel"] <= 1e-3
  holds = bool(equal and sp["batch_x"] >= 10)
  reason = "" if holds else ("volumes differ" if not equal else
                             f"{sp['batch_x']:.1f}x against the batch of 10 "
                             f"({sp['single_x']:.1f}x one point at a time)" + _roof_text(times))
  return _harness.Claim(
      SPEED_CLAIM, "10x",
      f"{sp['batch_x']:.1f}x vs batches of 10, {sp['single_x']:.1f}x vs one point at a time "
      f"({sp['ours_ms']:.1f} vs {sp['batch_ms']:.1f} / {sp['single_ms']:.1f} ms/point); mean "
      f"log-volume {sp['lv_ours']:.2f} vs {sp['lv_numpy']:.2f} (max rel. diff "
      f"{sp['volume_rel']:.1e})", holds, reason=reason)


def _margin_ratios(nrm, adv):
  if not np.all(np.isfinite(nrm["ratio_margin"])):
    return "not run in this mode"
  return f"{float(np.mean(nrm['ratio_margin'])):.2f} / {float(np.mean(adv['ratio_margin'])):.2f}"


def claims(config: dict, exp: dict, times: dict) -> list[_harness.Claim]:
  nrm, adv = exp["normal"], exp["adversarial"]
  r_n, r_a = float(np.mean(nrm["ratio"])), float(np.mean(adv["ratio"]))
  frac_n = float(np.mean(np.asarray(nrm["ratio"]) > 0))
  flips = sum(m["attack_flips"] + m["sample_flips"] for m in (nrm, adv))
  outside = sum(m["sample_outside"] for m in (nrm, adv))
  lin_wins = all(np.all(np.asarray(m["lin_margin"]) > np.asarray(m["ibp_margin"]))
                 for m in (nrm, adv))
  claims_ = [
      _harness.Claim("non-uniform certified boxes have larger volume than uniform ones "
                     "(mean log-volume ratio > 0)", "larger",
                     f"normal {r_n:.2f} ({100 * frac_n:.0f}% of points > 0), adversarial "
                     f"{r_a:.2f}; margin bound: {_margin_ratios(nrm, adv)}",
                     bool(r_n > 0 and r_a > 0),
                     reason="" if r_n > 0 and r_a > 0 else "mean ratio <= 0"),
      _harness.Claim("adversarially trained models have larger non-uniform bounds",
                     "larger", f"mean sum log eps: normal "
                     f"{float(np.mean(nrm['ratio'] + nrm['d'] * nrm['log_eps_u'])):.1f}, "
                     f"adversarial {float(np.mean(adv['ratio'] + adv['d'] * adv['log_eps_u'])):.1f}",
                     bool(np.mean(adv["ratio"] + adv["d"] * adv["log_eps_u"])
                          > np.mean(nrm["ratio"] + nrm["d"] * nrm["log_eps_u"])),
                     reason="adversarial volume not larger"),
      _harness.Claim("soundness: no PGD/APGD-CE attack inside a certified box and no sampled "
                     "point changes the label; samples stay inside the bounds", "0 violations",
                     f"{flips} label changes, {outside} outputs outside the bounds",
                     bool(flips == 0 and outside == 0), reason="violations found"),
      _harness.Claim("linear (Fast-Lin) bounds tighter than interval bounds on every point",
                     "tighter", "certified margin at the uniform radius: linear > interval on "
                     f"{'every' if lin_wins else 'not every'} point", bool(lin_wins),
                     reason="" if lin_wins else "some point not tighter"),
  ]
  claims_.append(_speed_claim(times))
  return claims_


def report(config: dict, exp: dict, times: dict) -> _harness.Report:
  rows = ["| model | test acc | points | certified NU / U | mean log-vol ratio (logits) | "
          "geo-mean width ratio | ratio (margin bound) | mean log eps_U | linear > interval |",
          "|---|---|---|---|---|---|---|---|---|"]
  for name in ("normal", "adversarial"):
    m = exp[name]
    rows.append(
        f"| {name} | {m['test_accuracy']:.3f} | {m['n']} | {m['certified_nu']} / "
        f"{m['certified_u']} | {float(np.mean(m['ratio'])):.2f} | "
        f"{float(np.exp(np.mean(np.log(m['gm_ratio'])))):.3f} | "
        f"{float(np.mean(m['ratio_margin'])):.2f} | {float(np.mean(m['log_eps_u'])):.2f} | "
        f"{int(np.sum(np.asarray(m['lin_margin']) > np.asarray(m['ibp_margin'])))}/{m['n']} |")
  nrm, adv = exp["normal"], exp["adversarial"]
  gm = lambda m: float(np.exp(np.mean(np.log(m["gm_ratio"]))))
  sp = _speed(times)
  speed = ["| certifier | points | ms / point | ours faster by | mean log-volume | shrink steps |",
           "|---|---|---|---|---|---|",
           f"| ours: one jit, vmapped (compile {times['ours']['compile_s']:.1f} s apart) | "
           f"{times['points']} | {sp['ours_ms']:.2f} | - | {sp['lv_ours']:.2f} (first "
           f"{times['numpy_points']}) | mean {np.mean(times['shrink_ours']):.0f}, max "
           f"{np.max(times['shrink_ours'])} |",
           f"| NumPy, one point at a time (median of {config['timing_repeats']}) | "
           f"{times['numpy_points']} | {sp['single_ms']:.2f} | {sp['single_x']:.1f}x | "
           f"{sp['lv_numpy']:.2f} | mean {np.mean(times['shrink_numpy']):.0f} |",
           f"| NumPy, the reference's batch of {times['numpy_batch_points']} | "
           f"{times['numpy_batch_points']} | {sp['batch_ms']:.2f} | {sp['batch_x']:.1f}x | - | - |"]
  return _harness.Report(
      tables=["\n".join(rows), "\n".join(speed)], figure=_figure(exp),
      notes=NOTES.format(**config, acc_normal=nrm["test_accuracy"],
                         acc_adv=adv["test_accuracy"], n_cert=nrm["n"]),
      headline=HEADLINE.format(mode=config["mode"], dataset=config["dataset"],
                               nu_normal=float(np.mean(nrm["ratio"])),
                               nu_adv=float(np.mean(adv["ratio"])), gm_normal=gm(nrm),
                               gm_adv=gm(adv), batch_x=sp["batch_x"]))


def _figure(exp):
  """Per model, the first three certified test images beside their per-feature half-widths
  (one colour scale for all maps; the image's title gives its uniform radius)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  names = ("normal", "adversarial")
  maps = {n: np.asarray(exp[n]["eps_maps"]) for n in names}
  k = min(len(maps[n]) for n in names)
  side = int(round(np.sqrt(maps["normal"].shape[1])))
  fig, axes = plt.subplots(2, 2 * k, figsize=(2.6 * k * 2, 5.6), squeeze=False)
  vmax = float(max(maps[n][:k].max() for n in names))
  for row, name in enumerate(names):
    images = np.asarray(exp[name]["images"])
    for j in range(k):
      ax_img, ax_map = axes[row, 2 * j], axes[row, 2 * j + 1]
      ax_img.imshow(images[j].reshape(side, side), cmap="gray", vmin=-1, vmax=1)
      ax_img.set_title(f"{name} {j}: image\nuniform eps {exp[name]['eps_u_first'][j]:.3f}",
                       fontsize=8)
      im = ax_map.imshow(maps[name][j].reshape(side, side), cmap="viridis", vmin=0, vmax=vmax)
      ax_map.set_title(f"{name} {j}: eps_i\nmean {maps[name][j].mean():.3f}", fontsize=8)
      for ax in (ax_img, ax_map):
        ax.set_xticks([])
        ax.set_yticks([])
  fig.colorbar(im, ax=axes, shrink=0.8, label="certified half-width eps_i (non-uniform)")
  fig.suptitle("Per-feature certified bounds, normal vs adversarial training")
  return fig
