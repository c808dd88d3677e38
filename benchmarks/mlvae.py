"""ML-VAE on digits grouped by class: test ELBO against group size, disentanglement probes, swaps.

Paper: Bouchacourt, Tomioka, Nowozin, "Multi-Level Variational Autoencoder" (AAAI 2018,
arXiv 1705.08841), MNIST experiments (groups = digit classes).

* Test ELBO per observation for test groups of size 1..16 (groups of unseen images), for the
  ML-VAE and for a VAE with the same networks and latent size (the ML-VAE trained on groups of
  one is exactly a VAE). The paper's claim: accumulating the group evidence makes the ML-VAE's
  bound improve with the group size, beyond the VAE's.
* Disentanglement: a logistic-regression probe predicts the class from the content latent and
  from the style latent of single test images. The content latent should predict the group
  well and the style latent poorly (the reference port's README reports 99.7% vs 42.1% on
  MNIST with its evidence accumulation [code README, not the paper]).
* A swap grid: each row keeps one image's style, each column takes one class's content.

Each training run is one compiled function, ``core.make_sampler_trainer``: every step draws
its groups on the device (``generative.make_group_sampler``). No timing decides a claim (the
training times are reported), so there is no ``timings`` phase.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from benchmarks import _harness
from tomioka_jax import core
from tomioka_jax import data
from tomioka_jax import generative

PAPER = "Bouchacourt, Tomioka, Nowozin 2017 (ML-VAE, arXiv 1705.08841)"
NAME = "mlvae"
STYLE_DIM = CONTENT_DIM = 10
GROUP_SIZES = (1, 2, 4, 8, 16)
TRAIN_GROUP = 8  # the ML-VAE trains on groups of 8 same-class images; the VAE on groups of 1
IMAGES_PER_STEP = 256

CONFIGS = {
    # dataset (MNIST falls back to the 8x8 digits offline); training steps; MLP width;
    # test groups per size and posterior samples for the test ELBO; training images the
    # probes are fitted on (None: all).
    "smoke": {"dataset": "digits", "num_steps": 5, "hidden": 32, "elbo_groups": 10,
              "elbo_samples": 2, "probe_train": 200},
    "quick": {"dataset": "digits", "num_steps": 600, "hidden": 256, "elbo_groups": 200,
              "elbo_samples": 8, "probe_train": None},
    "full": {"dataset": "mnist", "num_steps": 20000, "hidden": 256, "elbo_groups": 200,
             "elbo_samples": 8, "probe_train": None},
}

HEADLINE = (
    "on {source_name} ({mode}, {num_steps} steps): test ELBO per image {elbo_1:.1f} (group of "
    "1) to {elbo_k:.1f} (group of {k}), {gain:+.1f} nats over the VAE at {k}; content probe "
    "{content:.1%} vs style {style:.1%} (the reference port reports 99.7% vs 42.1% on MNIST)")

NOTES = """\
Data: {source}. Bernoulli likelihood on pixels in [0, 1]; MLP encoder/decoder with {hidden}
hidden units; style and content latents of {style_dim} dimensions; Adam 1e-3, {images} images
per step, {num_steps} steps. The ML-VAE is trained on groups of {train_group} same-class images;
the VAE is the same model trained on groups of one. Test groups are drawn from the held-out
images ({elbo_groups} groups per size, {elbo_samples} posterior samples each). The paper
reports these comparisons as figures; no numbers were retrieved ([mem])."""


def train_model(x: np.ndarray, y: np.ndarray, group_size: int, num_steps: int, seed: int = 0,
                hidden: int = 256):
  """Trains an ML-VAE with groups of ``group_size`` same-class images; returns the model.

  The whole run is one compiled function (:func:`tomioka_jax.core.make_sampler_trainer`):
  each step draws its groups on the device (:func:`tomioka_jax.generative.make_group_sampler`).
  """
  model = generative.MLVAE(x.shape[1:], STYLE_DIM, CONTENT_DIM, hidden=hidden,
                           rngs=nnx.Rngs(seed))
  opt = optax.adam(1e-3)
  graphdef, state = core.create_train_state(model, opt, jax.random.key(seed))
  groups = generative.make_group_sampler(y, IMAGES_PER_STEP // group_size, group_size)
  images = jnp.asarray(x)
  train = core.make_sampler_trainer(graphdef, generative.mlvae_loss, opt,
                                    sample=lambda key: {"x": images[groups(key)]},
                                    steps=num_steps)
  state, _ = _harness.block(train(state, jax.random.key(seed + 1)))
  return nnx.merge(graphdef, state.params, state.model_state)


@jax.jit
def _elbo_per_obs(model, keys, x, mask):
  terms = jax.vmap(lambda k: generative.group_elbo(model, k, x, mask).elbo)(keys)
  return jnp.mean(terms) / jnp.sum(mask[0])


def test_elbo(model, x, y, group_size: int, num_groups: int = 200, num_samples: int = 8
              ) -> float:
  """Test ELBO per image of groups of ``group_size``, padded to the largest group size (one
  compiled function for every size; the mask marks the real members)."""
  idx = generative.group_batches(jax.random.key(100 + group_size), y, num_groups, group_size)
  pad = max(GROUP_SIZES) - group_size
  idx = np.pad(idx, ((0, 0), (0, pad)))
  mask = jnp.asarray(np.arange(max(GROUP_SIZES)) < group_size, jnp.float32)
  mask = jnp.broadcast_to(mask, (num_groups, max(GROUP_SIZES)))
  return float(_elbo_per_obs(model, jax.random.split(jax.random.key(7), num_samples),
                             jnp.asarray(x[idx]), mask))


def probe_accuracy(model, x_tr, y_tr, x_te, y_te) -> dict[str, float]:
  """Class accuracy of a logistic-regression probe on single-image content / style means."""
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  out = {}
  feats = {}
  for split, x in (("train", x_tr), ("test", x_te)):
    s_mean, _, c_mean, _ = model.encode(jnp.asarray(x))
    feats[split] = {"content": np.asarray(c_mean), "style": np.asarray(s_mean)}
  for part in ("content", "style"):
    clf = LogisticRegression(max_iter=2000).fit(feats["train"][part], y_tr)
    out[part] = float(clf.score(feats["test"][part], y_te))
  return out


def swap_grid(model, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Rows keep the style of one test image (left column), columns take each class's content
  (top row: one image of the class)."""
  rng = np.random.default_rng(0)
  styles = x[rng.choice(len(y), 8, replace=False)]
  columns = []
  for c in range(10):
    group = x[np.nonzero(y == c)[0][:8]]
    columns.append(np.asarray(generative.swap(model, jnp.asarray(styles), jnp.asarray(group))))
  h, w = x.shape[1:3]
  grid = np.zeros(((8 + 1) * (h + 1), (10 + 1) * (w + 1)))
  for r in range(8):
    grid[(r + 1) * (h + 1):(r + 1) * (h + 1) + h, :w] = styles[r, ..., 0]
    for c in range(10):
      grid[(r + 1) * (h + 1):(r + 1) * (h + 1) + h,
           (c + 1) * (w + 1):(c + 1) * (w + 1) + w] = columns[c][r, ..., 0]
  for c in range(10):
    grid[:h, (c + 1) * (w + 1):(c + 1) * (w + 1) + w] = x[np.nonzero(y == c)[0][0], ..., 0]
  return grid


def experiment(config: dict) -> dict:
  """Trains the ML-VAE and the VAE; test ELBOs per group size, probes and the swap grid."""
  train, test = data.load(config["dataset"], "train"), data.load(config["dataset"], "test")
  num_steps, hidden = config["num_steps"], config["hidden"]
  seconds = {}
  models = {}
  for label, group_size in (("mlvae", TRAIN_GROUP), ("vae", 1)):  # groups of one: a plain VAE
    t0 = time.perf_counter()
    models[label] = train_model(train.x, train.y, group_size, num_steps, hidden=hidden)
    seconds[label] = time.perf_counter() - t0
  elbo = {k: {label: test_elbo(models[label], test.x, test.y, k, config["elbo_groups"],
                               config["elbo_samples"]) for label in models}
          for k in GROUP_SIZES}
  n_probe = config["probe_train"] or len(train.y)
  probes = {name: probe_accuracy(models[label], train.x[:n_probe], train.y[:n_probe], test.x,
                                 test.y)
            for name, label in (("ML-VAE", "mlvae"), ("VAE", "vae"))}
  return {"source": train.source, "num_steps": num_steps, "train_group_size": TRAIN_GROUP,
          "elbo": elbo, "probes": probes, "seconds": seconds,
          "swap_grid": _to_hex_rows(swap_grid(models["mlvae"], test.x, test.y))}


def _to_hex_rows(image: np.ndarray) -> list[str]:
  """An image in [0, 1] as one hex string of 8-bit pixels per row (a compact JSON record)."""
  pixels = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
  return [row.tobytes().hex() for row in pixels]


def _from_hex_rows(rows: list[str]) -> np.ndarray:
  return np.stack([np.frombuffer(bytes.fromhex(r), np.uint8) for r in rows]) / 255.0


def _ml_curve(exp: dict) -> list[float]:
  return [exp["elbo"][k]["mlvae"] for k in GROUP_SIZES]


def _gain(exp: dict) -> float:
  k = GROUP_SIZES[-1]
  return exp["elbo"][k]["mlvae"] - exp["elbo"][k]["vae"]


def claims(config: dict, exp: dict, times: dict) -> list[_harness.Claim]:
  del config, times
  ml, gain, probe = _ml_curve(exp), _gain(exp), exp["probes"]["ML-VAE"]
  improves = all(b >= a - 0.05 for a, b in zip(ml, ml[1:])) and ml[-1] > ml[0]
  disentangled = probe["content"] >= 0.9 and probe["style"] <= probe["content"] - 0.2
  return [
      _harness.Claim("ML-VAE test ELBO per image improves with the test group size",
                     "increasing (paper Fig. 4, [mem])",
                     ", ".join(f"K={k}: {v:.2f}" for k, v in zip(GROUP_SIZES, ml)),
                     bool(improves),
                     reason="" if improves else "the bound falls somewhere along the sizes"),
      _harness.Claim(f"ML-VAE beats the VAE for groups of {GROUP_SIZES[-1]} (nats per image)",
                     "ML-VAE above VAE ([mem])", f"{gain:+.2f}", bool(gain > 0),
                     reason="" if gain > 0 else "the VAE's bound is higher"),
      _harness.Claim("content latent predicts the group, style latent much less",
                     "99.7% vs 42.1% (reference port's README, MNIST)",
                     f"{probe['content']:.1%} vs {probe['style']:.1%}", bool(disentangled),
                     reason="" if disentangled else
                     "content below 90% or style within 20 points of it"),
  ]


def report(config: dict, exp: dict, times: dict) -> _harness.Report:
  del times
  num_steps, sec = exp["num_steps"], exp["seconds"]
  tables = [
      "## Test ELBO per image (nats) against test group size\n\n" + _harness.markdown_table(
          ["group size", "ML-VAE", "VAE", "ML-VAE - VAE"],
          [(k, e["mlvae"], e["vae"], e["mlvae"] - e["vae"]) for k, e in exp["elbo"].items()]),
      "## Class accuracy of linear probes on single-image latents (test set)\n\n" +
      _harness.markdown_table(["model", "content latent", "style latent"],
                              [(m, p["content"], p["style"]) for m, p in exp["probes"].items()]),
      "## Training\n\n" + _harness.markdown_table(
          ["model", "steps", "images/step", "seconds", "steps/s"],
          [(f"ML-VAE (groups of {TRAIN_GROUP})", num_steps, IMAGES_PER_STEP, sec["mlvae"],
            num_steps / sec["mlvae"]),
           ("VAE (groups of 1)", num_steps, IMAGES_PER_STEP, sec["vae"],
            num_steps / sec["vae"])]),
  ]
  ml, probe = _ml_curve(exp), exp["probes"]["ML-VAE"]
  source_name = "8x8 digits" if exp["source"] == "sklearn:digits" else exp["source"]
  return _harness.Report(
      tables=tables, figure=_figure(exp),
      notes=NOTES.format(source=exp["source"], hidden=config["hidden"], style_dim=STYLE_DIM,
                         images=IMAGES_PER_STEP, num_steps=num_steps, train_group=TRAIN_GROUP,
                         elbo_groups=config["elbo_groups"],
                         elbo_samples=config["elbo_samples"]),
      headline=HEADLINE.format(source_name=source_name, mode=config["mode"], num_steps=num_steps,
                               elbo_1=ml[0], elbo_k=ml[-1], k=GROUP_SIZES[-1], gain=_gain(exp),
                               content=probe["content"], style=probe["style"]))


def _figure(exp: dict):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig = plt.figure(figsize=(13, 5))
  ax = fig.add_subplot(1, 2, 1)
  ax.plot(GROUP_SIZES, _ml_curve(exp), "o-", label="ML-VAE")
  ax.plot(GROUP_SIZES, [exp["elbo"][k]["vae"] for k in GROUP_SIZES], "s--", label="VAE")
  ax.set(xscale="log", xlabel="test group size", ylabel="test ELBO per image (nats)",
         title=exp["source"])
  ax.set_xticks(GROUP_SIZES, [str(k) for k in GROUP_SIZES])
  ax.legend()
  ax = fig.add_subplot(1, 2, 2)
  ax.imshow(_from_hex_rows(exp["swap_grid"]), cmap="gray_r", interpolation="nearest")
  ax.set(title="swap: row = style source (left), column = class content (top)",
         xticks=[], yticks=[])
  fig.tight_layout()
  return fig
