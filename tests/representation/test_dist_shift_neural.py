"""Tests of representation/_dist_shift_neural.py: the coloured-image process, the neural
objectives of the distribution-shift paper, and their trainer."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tomioka_jax import data as data_lib
from tomioka_jax.representation import _dist_shift as ds
from tomioka_jax.representation import _dist_shift_neural as dn


# ----------------------------------------------------------------------------- data


@pytest.mark.parametrize("variant", ds.CMNIST_VARIANTS)
def test_colored_digits_follow_the_discrete_process(variant):
  n_train, n_test = 30000, 10000
  split = dn.colored_digits(variant, 3, num_train=n_train, num_valid=n_train, num_test=n_test)
  joint = np.asarray(ds.cmnist_distribution(variant), np.float64)
  for part, table, n, envs in ((split.train, joint[:2], n_train, (0, 1)),
                               (split.valid, joint[:2], n_train, (0, 1)),
                               (split.test, joint[2:], n_test, (2,))):
    table = table / table.sum()
    counts = np.zeros(table.shape)
    np.add.at(counts, (part.e - envs[0], part.y, part.c, part.d), 1.0)
    freq = counts / n
    # every cell within 4.5 binomial standard deviations (120 cells; a false alarm is ~1e-3)
    sd = np.sqrt(table * (1 - table) / n)
    assert np.all(np.abs(freq - table) <= 4.5 * sd + 1e-12), np.max(np.abs(freq - table) / sd)
    # the named marginals of the notes' table
    if variant == "CMNIST" and envs == (0, 1):
      for e, match in ((0, 0.9), (1, 0.8)):
        m = part.e == e
        assert abs(np.mean(part.c[m] == part.y[m]) - match) < 0.01
    assert np.all(np.isin(part.e, envs))
  # the picture: an image of class d in channel c, the other channel empty
  for part, split_name in ((split.train, "train"), (split.valid, "train"),
                           (split.test, "test")):
    pool = data_lib.load_digits(split_name)
    images = {(img.tobytes(), int(k)) for img, k in zip(pool.x[..., 0], pool.y)}
    idx = np.arange(200)
    shown = part.x[idx, part.c[idx]]
    other = part.x[idx, 1 - part.c[idx]]
    assert not other.any()
    assert all((img.tobytes(), int(k)) in images for img, k in zip(shown, part.d[idx]))


def test_colored_digits_label_noise_and_colour_flip():
  split = dn.colored_digits("CMNIST", 0, num_train=20000, num_test=20000)
  tr, te = split.train, split.test
  assert abs(np.mean(tr.y == (tr.d >= 5)) - 0.75) < 0.01
  assert abs(np.mean(te.c == te.y) - 0.1) < 0.01   # the test environment flips the colours


def test_colored_digits_bad_input():
  with pytest.raises(ValueError, match="variant must be one of"):
    dn.colored_digits("z-CMNIST")
  with pytest.raises(ValueError, match="source must be one of"):
    dn.colored_digits("CMNIST", source="mnist")
  with pytest.raises(ValueError, match="num_train must be a positive integer, got num_train=0"):
    dn.colored_digits("CMNIST", num_train=0)
  with pytest.raises(ValueError, match="pool must divide the image size 8x8, got pool=3"):
    dn.colored_digits("CMNIST", num_train=10, num_test=10, pool=3)


# ----------------------------------------------------------------------------- schedule


def test_beta_schedule_is_dsits_linear_increment():
  def reference(t, start, warmup, inc):   # dsit's LinearIncrementScheduler
    return start if t <= warmup else (t - warmup) * inc + start

  steps = np.array([0, 1, 4999, 5000, 5001, 7500, 25000])
  got = dn.beta_schedule(steps, increment=0.02)
  np.testing.assert_allclose(got, [reference(t, 1e-5, 5000, 0.02) for t in steps], rtol=1e-6)
  assert dn.default_beta_increment("VREx") == 1e-4 and dn.default_beta_increment("ERM") == 0.0
  with pytest.raises(ValueError, match="increment must be >= 0, got increment=-1"):
    dn.beta_schedule(3, increment=-1.0)
  with pytest.raises(ValueError, match="start must be >= 0"):
    dn.beta_schedule(3, start=-1e-5)
  with pytest.raises(ValueError, match="objective must be one of"):
    dn.default_beta_increment("GroupDRO")


# ----------------------------------------------------------------------------- objectives


def _model(objective, in_features=8, seed=0, **kw):
  return dn.DistShiftModel(in_features, z_dim=4, encoder_hidden=(16,), predictor_hidden=(8,),
                           discriminator_hidden=(8,), dropout=0.0, rngs=nnx.Rngs(seed),
                           **dn._model_kind(objective), **kw)


def _batch(n=16, seed=0, in_features=8):
  rng = np.random.default_rng(seed)
  return {"x": jnp.asarray(rng.standard_normal((n, in_features)), jnp.float32),
          "y": jnp.asarray(rng.integers(0, 2, n), jnp.int32),
          "e": jnp.asarray(np.arange(n) % 2, jnp.int32)}


def _loss(objective, model, batch, beta=0.7, key=0):
  fn = dn.make_dist_shift_loss(objective, beta_start=beta, beta_warmup=0, beta_increment=0.0)
  return fn(model, batch, jax.random.key(key))


def test_gradient_reversal_splits_the_min_max_game():
  """The DANN/CDANN loss's gradient: +CE(e|.) for the discriminator, CE(y) - beta CE(e|.)
  for the encoder and predictor."""
  assert float(jax.grad(lambda x: 3.0 * dn.gradient_reversal(x, 2.0))(1.5)) == -6.0
  batch, beta = _batch(), 0.7
  for objective in dn.ADVERSARIAL_OBJECTIVES:
    model = _model(objective)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def total(p):
      return _loss(objective, nnx.merge(graphdef, p, jax.tree.map(lambda a: a, rest)), batch,
                   beta)[0]

    def parts(p):
      m = nnx.merge(graphdef, p, jax.tree.map(lambda a: a, rest))
      z, _ = m.encode(batch["x"])
      ce = optax.softmax_cross_entropy_with_integer_labels(m.predictor(z), batch["y"]).mean()
      d_ce = ds.adversarial_cross_entropy(m.discriminate(z, batch["y"]), batch["e"])
      return ce, d_ce

    g = jax.jit(jax.grad(total))(params)
    g_enc = jax.jit(jax.grad(lambda p: parts(p)[0] - beta * parts(p)[1]))(params)
    g_dis = jax.jit(jax.grad(lambda p: parts(p)[1]))(params)
    for path, leaf in jax.tree_util.tree_leaves_with_path(g):
      name = jax.tree_util.keystr(path)
      ref = g_dis if "discriminator" in name else g_enc
      want = dict((jax.tree_util.keystr(q), v)
                  for q, v in jax.tree_util.tree_leaves_with_path(ref))[name]
      np.testing.assert_allclose(leaf, want, rtol=1e-5, atol=1e-7, err_msg=name)


def test_adversarial_losses_at_chance():
  """A discriminator that knows nothing has CE log(2); the best one on a constant z has
  CE = H(e) for DANN and H(e|y) for CDANN (the batch's empirical entropies)."""
  batch = _batch(24, 1)
  for objective in dn.ADVERSARIAL_OBJECTIVES:
    model = _model(objective)
    last = model.discriminator.layers[-1]
    last.kernel[...] = jnp.zeros_like(last.kernel[...])
    last.bias[...] = jnp.zeros_like(last.bias[...])
    _, metrics = _loss(objective, model, batch)
    np.testing.assert_allclose(-metrics["regularization"], math.log(2), rtol=1e-6)
  # the Bayes discriminator of e from y alone reaches the conditional entropy H(e|y)
  y, e = np.asarray(batch["y"]), np.asarray(batch["e"])
  counts = np.zeros((2, 2))
  np.add.at(counts, (e, y), 1.0)
  p = counts / counts.sum()
  log_post = np.log(p / p.sum(0, keepdims=True))         # log p(e|y), [e, y]
  ce = ds.adversarial_cross_entropy(jnp.asarray(log_post.T[y]), e)
  np.testing.assert_allclose(ce, ds.entropy(jnp.asarray(p), 0, 1), rtol=1e-6)


def test_penalties_in_the_losses():
  # VREx vanishes when the environments' risks are equal: environment 1 copies environment 0.
  b = _batch(8, 2)
  twin = {"x": jnp.concatenate([b["x"], b["x"]]), "y": jnp.concatenate([b["y"], b["y"]]),
          "e": jnp.asarray([0] * 8 + [1] * 8, jnp.int32)}
  model = _model("VREx")
  loss, m = _loss("VREx", model, twin)
  assert float(m["regularization"]) == 0.0
  np.testing.assert_allclose(loss, m["cross_entropy"], rtol=1e-7)
  # IRM: the unbiased penalty of the predictor's logits; zero when each environment's halves
  # coincide with a stationary point in the scale is checked in test_dist_shift.py.
  batch = _batch(16, 3)
  model = _model("IRM")
  loss, m = _loss("IRM", model, batch, beta=0.5)
  logits = model(batch["x"])
  pen = ds.irm_penalty(logits, batch["y"], batch["e"], 2, unbiased=True)
  np.testing.assert_allclose(m["regularization"], pen, rtol=1e-5)
  np.testing.assert_allclose(loss, m["cross_entropy"] + 0.5 * pen, rtol=1e-6)
  # VIB: the analytic KL of the encoder's Gaussian, averaged over the batch.
  model = _model("VIB")
  loss, m = _loss("VIB", model, batch, beta=0.3)
  mean, log_var = model.encode(batch["x"])
  mean, log_var = np.asarray(mean, np.float64), np.asarray(log_var, np.float64)
  kl = 0.5 * np.sum(mean ** 2 + np.exp(log_var) - log_var - 1, axis=1).mean()
  np.testing.assert_allclose(m["regularization"], kl, rtol=1e-5)
  np.testing.assert_allclose(loss, m["cross_entropy"] + 0.3 * kl, rtol=1e-5)
  # ERM: just the cross-entropy; the step counter advances.
  model = _model("ERM")
  loss, m = _loss("ERM", model, batch)
  assert float(m["regularization"]) == 0.0 and int(model.steps_taken[...]) == 1


def test_cross_entropies_per_environment():
  batch = _batch(12, 4)
  model = _model("ERM")
  out = dn.dist_shift_cross_entropies(model, batch["x"], batch["y"], batch["e"], 2)
  logits = np.asarray(model(batch["x"]), np.float64)
  y, e = np.asarray(batch["y"]), np.asarray(batch["e"])
  nll = -(logits[np.arange(12), y] - np.log(np.exp(logits).sum(1)))
  np.testing.assert_allclose(out["env_cross_entropy"], [nll[e == k].mean() for k in (0, 1)],
                             rtol=1e-5)
  np.testing.assert_allclose(out["cross_entropy"], nll.mean(), rtol=1e-5)
  np.testing.assert_allclose(out["accuracy"], np.mean(logits.argmax(1) == y), rtol=1e-6)


# ----------------------------------------------------------------------------- training


def _toy_split(n=512, seed=0, y_depends_on_e=False):
  """Two features: a noisy copy of y and a noisy copy of e, as (n, 2, 1, 1) images."""
  rng = np.random.default_rng(seed)
  e = rng.integers(0, 2, n)
  y = np.where(rng.random(n) < (np.where(e == 0, 0.8, 0.2) if y_depends_on_e else 0.5), 0, 1)
  x = np.stack([y + 0.3 * rng.standard_normal(n), e + 0.3 * rng.standard_normal(n)], 1)
  part = dn.ColoredDigits(x=x.reshape(n, 2, 1, 1).astype(np.float32), y=y.astype(np.int32),
                          e=e.astype(np.int32), c=np.zeros(n, np.int32), d=np.zeros(n, np.int32))
  return dn.ColoredDigitsSplit(train=part, valid=part, test=part, source="toy")


_SMALL = dict(z_dim=4, encoder_hidden=(16,), predictor_hidden=(8,), discriminator_hidden=(16,),
              dropout=0.0, batch_size=128)


def _discriminator_ce(fit, split, seed_index=0):
  model = fit.model(seed_index)
  x = jnp.asarray(split.train.x.reshape(len(split.train.y), -1))
  z, _ = model.encode(x)
  return float(ds.adversarial_cross_entropy(model.discriminate(z, jnp.asarray(split.train.y)),
                                            split.train.e))


def test_alternating_steps_are_k_discriminator_steps_then_one_encoder_step():
  """dsit's schedule on a tiny problem: k Adam steps of the discriminator alone (each on its
  own batch, the representation fixed), then one Adam step of encoder and predictor on
  CE(y|z) - beta CE(e|z, y) against the updated discriminator, replayed by hand."""
  k, b, beta = 3, 8, 0.5
  rng = np.random.default_rng(5)
  batch = {"x": jnp.asarray(rng.standard_normal(((k + 1) * b, 8)), jnp.float32),
           "y": jnp.asarray(rng.integers(0, 2, (k + 1) * b), jnp.int32),
           "e": jnp.asarray(rng.integers(0, 2, (k + 1) * b), jnp.int32)}
  model = _model("CDANN")
  graphdef, disc, params, rest = nnx.split(model, dn._DISCRIMINATOR, nnx.Param, ...)
  opt, disc_opt = optax.adam(1e-2), optax.adam(1e-1)
  loss_fn = dn.make_dist_shift_loss("CDANN", beta_start=beta, beta_warmup=0, beta_increment=0.0)
  train = dn._make_alternating_trainer(graphdef, loss_fn, opt, disc_opt, lambda key: batch,
                                       steps=1, discriminator_steps=k, batch_size=b)
  state = dn._AdversarialState(disc, params, rest, disc_opt.init(disc), opt.init(params),
                               jax.random.key(0))
  new, metrics = train(state, jax.random.key(1))

  def parts(d, p, rows):
    m = nnx.merge(graphdef, d, p, jax.tree.map(lambda a: a, rest))
    z, _ = m.encode(batch["x"][rows])
    ce = optax.softmax_cross_entropy_with_integer_labels(m.predictor(z), batch["y"][rows])
    d_ce = ds.adversarial_cross_entropy(m.discriminate(z, batch["y"][rows]), batch["e"][rows])
    return ce.mean(), d_ce

  @jax.jit
  def replay(d):
    d_state, d_losses = disc_opt.init(d), []
    for i in range(k):
      rows = slice((i + 1) * b, (i + 2) * b)
      loss, g = jax.value_and_grad(lambda d_: parts(d_, params, rows)[1])(d)
      d_losses.append(loss)
      u, d_state = disc_opt.update(g, d_state, d)
      d = optax.apply_updates(d, u)
    first = slice(0, b)
    g = jax.grad(lambda p: parts(d, p, first)[0] - beta * parts(d, p, first)[1])(params)
    u, _ = opt.update(g, opt.init(params), params)
    return d, optax.apply_updates(params, u), d_losses

  d, p, d_losses = replay(disc)
  for got, want in ((new.discriminator, d), (new.params, p)):
    for x, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(x, w, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(metrics["discriminator_loss"][0], np.mean(d_losses), rtol=1e-5)
  assert int(new.rest["steps_taken"][...]) == 1
  moved = [float(jnp.max(jnp.abs(x - w))) for x, w in zip(jax.tree.leaves(new.discriminator),
                                                          jax.tree.leaves(disc))]
  assert min(moved) > 0   # every discriminator parameter was updated


def test_training_decreases_the_loss_and_vmap_matches_separate_runs():
  split = dn.colored_digits("CMNIST", 0, num_train=1024, num_valid=256, num_test=256)
  kw = dict(steps=80, eval_every=40, beta_warmup=40, beta_increment=1e-3, **_SMALL)
  both = dn.train_dist_shift("VREx", split, seeds=(0, 1), **kw)
  one = dn.train_dist_shift("VREx", split, seeds=(1,), **kw)
  assert both.train_cross_entropy.shape == (2, 2) and both.train_env_accuracy.shape == (2, 2, 2)
  np.testing.assert_allclose(both.beta, [1e-5, 1e-5 + 39e-3], rtol=1e-5)
  assert np.all(both.train_cross_entropy[:, -1] < 0.6)            # from log 2 = 0.693
  assert np.all(both.test_cross_entropy[:, -1] > both.train_cross_entropy[:, -1])  # colour
  for field in ("train_cross_entropy", "valid_cross_entropy", "test_cross_entropy", "loss",
                "regularization"):
    np.testing.assert_allclose(getattr(both, field)[1], getattr(one, field)[0], rtol=2e-4,
                               atol=1e-5, err_msg=field)


def test_train_argument_errors():
  split = _toy_split(64)
  with pytest.raises(ValueError, match="objective must be one of"):
    dn.train_dist_shift("GroupDRO", split, steps=10)
  with pytest.raises(ValueError, match="beta_start must be >= 0"):
    dn.train_dist_shift("IRM", split, steps=10, beta_start=-1.0)
  with pytest.raises(ValueError, match="beta_increment must be >= 0"):
    dn.make_dist_shift_loss("IRM", beta_increment=-0.1)
  with pytest.raises(ValueError, match="eval_every must divide steps"):
    dn.train_dist_shift("ERM", split, steps=10, eval_every=3)
  with pytest.raises(ValueError, match="steps must be a positive integer"):
    dn.train_dist_shift("ERM", split, steps=0)
  with pytest.raises(ValueError, match="seeds must be a non-empty sequence of integers"):
    dn.train_dist_shift("ERM", split, steps=10, seeds=())
  with pytest.raises(ValueError, match="learning_rate must be > 0"):
    dn.train_dist_shift("ERM", split, steps=10, learning_rate=0.0)
  with pytest.raises(ValueError, match="data must be a ColoredDigitsSplit"):
    dn.train_dist_shift("ERM", split.train, steps=10)
  with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
    dn.DistShiftModel(8, dropout=1.0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="discriminator must be None, 'z' or 'zy'"):
    dn.DistShiftModel(8, discriminator="y", rngs=nnx.Rngs(0))
