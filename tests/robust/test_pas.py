"""Tests of robust/_pas.py: schedules against the reference's formulas, adversarial training
on the core trainer, snapshots and the snapshot ensemble."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tomioka_jax import core
from tomioka_jax.robust import _attacks as attacks
from tomioka_jax.robust import _pas as pas


def _ref_cycle_cos(x, ckpts, eps_min, eps_max, max_v):
  """util/seq_parser.py's cycle_cos, transcribed (x strictly inside the schedule)."""
  c = sorted(ckpts)
  if c[0] > 0:
    c = [0.0] + c
  if x > c[-1]:
    return min(eps_max, max_v)
  if x <= c[0]:
    return min(eps_min, max_v)
  for l, r in zip(c[:-1], c[1:]):
    if l <= x < r:
      ratio = (x - l) / (r - l)
  return min(eps_min + 0.5 * (eps_max - eps_min) * (1 - math.cos(ratio * math.pi)), max_v)


def test_cycle_cos_matches_the_reference_and_reaches_the_target_mid_cycle():
  ckpts = [10, 15, 20]
  target = 0.3
  xs = [0, 0.5, 2.5, 5, 7.5, 9.99, 10, 11.25, 12.5, 14, 15, 17.5, 19.9, 25]
  got = pas.cycle_cos(jnp.asarray(xs), ckpts=ckpts, eps_min=0.0, eps_max=2 * target,
                      max_value=target)
  want = [_ref_cycle_cos(x, ckpts, 0.0, 2 * target, target) for x in xs]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # hand values: cycle boundaries restart at 0; a quarter of the way 0.6 (1 - cos(pi/4))/2
  sched = pas.pas_eps_schedule(target, ckpts=ckpts)
  assert float(sched(10.0)) == 0.0 and float(sched(15.0)) == 0.0
  np.testing.assert_allclose(sched(2.5), 0.3 * (1 - math.cos(math.pi / 4)), rtol=1e-6)
  np.testing.assert_allclose(sched(5.0), target, rtol=1e-6)  # mid-cycle: target reached
  np.testing.assert_allclose(sched(8.0), target, rtol=1e-6)  # clipped, not 0.6 sin^2
  np.testing.assert_allclose(sched(20.0), target, rtol=1e-6)  # limit from the left at c_K
  # without the clip the cosine peaks at eps_max at the end of the cycle
  np.testing.assert_allclose(pas.cycle_cos(9.999, ckpts=ckpts, eps_min=0.0, eps_max=0.6), 0.6,
                             rtol=1e-4)


def test_linear_and_constant_warmups():
  lin = pas.pas_eps_schedule(0.4, ckpts=[100], warmup="linear")
  np.testing.assert_allclose([lin(0.0), lin(25.0), lin(50.0), lin(75.0)],
                             [0.0, 0.2, 0.4, 0.4], rtol=1e-6)
  const = pas.pas_eps_schedule(0.4, ckpts=[100], warmup="const")
  np.testing.assert_allclose(const(jnp.array([0.0, 99.0])), [0.4, 0.4])
  np.testing.assert_allclose(pas.linear_schedule(3.0, start=1.0, slope=0.5, max_value=2.2), 2.2)


def test_learning_rate_schedules_match_their_formulas():
  ckpts = [0, 100, 150, 200]
  x = jnp.array([0.0, 49.0, 50.0, 99.0, 100.0, 124.9, 125.0, 160.0, 190.0])
  lr = pas.cycle_jump(x, ckpts=ckpts, start=0.1, power=0.1, drop_points=[0.5, 0.75])
  r = np.array([0, .49, .5, .99, 0, .498, .5, .2, .8])
  want = 0.1 * 0.1 ** ((r >= 0.5).astype(int) + (r >= 0.75).astype(int))
  np.testing.assert_allclose(lr, want, rtol=1e-5)
  cos = pas.cos_cycle_jump(jnp.array([0.0, 5.0, 10.0, 12.5, 25.0]), low=0.0, up=0.2,
                           cycle_freq=10.0, min_jump_pt=2.5)
  t = np.array([0.0, 2.5, 7.5, 0.0, 2.5])
  np.testing.assert_allclose(cos, (np.cos(t / 10 * np.pi) + 1) * 0.1, rtol=1e-5, atol=1e-7)
  step = pas.step_decay(jnp.array([0.0, 99.0, 100.0, 150.0]), start=0.1, drops=[100, 150])
  np.testing.assert_allclose(step, [0.1, 0.1, 0.01, 0.001], rtol=1e-5)
  sched = pas.optax_schedule(lambda e: 1.0 + e, steps_per_epoch=4)
  assert [float(sched(c)) for c in (0, 3, 4, 9)] == [1.0, 1.0, 2.0, 3.0]
  sched = pas.optax_schedule(lambda e: 1.0 + e, steps_per_epoch=4, per_batch=True)
  assert float(sched(3)) == 1.75


def _tiny_problem():
  rng = np.random.default_rng(0)
  centers = rng.uniform(0.3, 0.7, (2, 8)).astype(np.float32)
  y = np.repeat(np.arange(2), 64).astype(np.int32)
  x = np.clip(centers[y] + 0.1 * rng.standard_normal((128, 8)), 0, 1).astype(np.float32)
  return {"x": jnp.asarray(x), "y": jnp.asarray(y)}


def test_pas_training_lowers_the_adversarial_loss_and_keeps_snapshots():
  data = _tiny_problem()
  model = core.MLP(8, (16,), 2, rngs=nnx.Rngs(0))
  epochs, bs = 6, 32
  lr = pas.optax_schedule(
      lambda e: pas.cycle_jump(e, ckpts=[0, 3, 6], start=0.5, power=0.5, drop_points=[0.5]),
      steps_per_epoch=128 // bs)
  opt = optax.sgd(lr)
  graphdef, state = core.create_train_state(model, opt, jax.random.key(1))
  loss_fn = pas.make_adversarial_loss(steps=3)
  eps_fn = pas.pas_eps_schedule(0.1, ckpts=[3, 6])
  train = pas.make_pas_trainer(graphdef, loss_fn, opt, eps_schedule=eps_fn, batch_size=bs,
                               epochs=epochs, snapshot_epochs=(3, 6))
  batch = {**data, "eps": jnp.full((128,), 0.1)}
  before, _ = loss_fn(nnx.merge(graphdef, state.params, state.model_state), batch,
                      jax.random.key(2))
  final, metrics, snaps = train(state, data, jax.random.key(3))
  after, _ = loss_fn(nnx.merge(graphdef, final.params, final.model_state), batch,
                     jax.random.key(2))
  assert float(after) < 0.7 * float(before)
  np.testing.assert_allclose(metrics["eps"], [eps_fn(float(e)) for e in range(epochs)],
                             rtol=1e-6)
  assert float(metrics["eps"][0]) == 0.0
  # the last snapshot is the final model
  for a, b in zip(jax.tree.leaves(jax.tree.map(lambda s: s[1], snaps)),
                  jax.tree.leaves(final.params)):
    np.testing.assert_array_equal(a, b)
  # an ensemble of identical members is the member: same softmax (and logits when averaged)
  same = jax.tree.map(lambda p: jnp.stack([p, p, p]), final.params)
  f = nnx.merge(graphdef, final.params, final.model_state)
  ens = pas.ensemble_logits(graphdef, same, final.model_state)
  np.testing.assert_allclose(jax.nn.softmax(ens(data["x"])), jax.nn.softmax(f(data["x"])),
                             atol=1e-6)
  ens = pas.ensemble_logits(graphdef, same, final.model_state, average="logits")
  np.testing.assert_allclose(ens(data["x"]), f(data["x"]), atol=1e-5)
  # the ensemble of two snapshots averages the members' probabilities
  ens = pas.ensemble_logits(graphdef, snaps, final.model_state)
  probs = [jax.nn.softmax(nnx.merge(graphdef, jax.tree.map(lambda s: s[i], snaps),
                                    final.model_state)(data["x"])) for i in (0, 1)]
  np.testing.assert_allclose(jax.nn.softmax(ens(data["x"])), (probs[0] + probs[1]) / 2,
                             atol=1e-6)
  # attacks run on the ensemble
  xa = attacks.pgd(ens, data["x"], data["y"], jax.random.key(0), eps=0.1, steps=2)
  assert np.all(np.abs(np.asarray(xa) - np.asarray(data["x"])) <= 0.1 + 1e-6)


def test_bad_input_raises():
  with pytest.raises(ValueError, match="warmup must be one of"):
    pas.pas_eps_schedule(0.3, ckpts=[10], warmup="exp")
  with pytest.raises(ValueError, match="target must be positive"):
    pas.pas_eps_schedule(0.0, ckpts=[10])
  with pytest.raises(ValueError, match="ckpts must hold distinct"):
    pas.cycle_cos(1.0, ckpts=[5, 5], eps_min=0, eps_max=1)
  with pytest.raises(ValueError, match="steps_per_epoch must be a positive"):
    pas.optax_schedule(lambda e: e, 0)
  with pytest.raises(ValueError, match="cycle_freq must be positive"):
    pas.cos_cycle_jump(1.0, low=0, up=1, cycle_freq=0)
  with pytest.raises(ValueError, match="steps must be a positive"):
    pas.make_adversarial_loss(steps=0)
  with pytest.raises(ValueError, match="average must be"):
    pas.ensemble_logits(None, None, average="max")
  model = core.MLP(8, (4,), 2, rngs=nnx.Rngs(0))
  graphdef, _ = core.create_train_state(model, optax.sgd(0.1), jax.random.key(0))
  with pytest.raises(ValueError, match="snapshot_epochs must be distinct"):
    pas.make_pas_trainer(graphdef, pas.make_adversarial_loss(), optax.sgd(0.1),
                         eps_schedule=lambda e: 0.1, batch_size=4, epochs=3,
                         snapshot_epochs=(4,))


def _fit_setup(lr=0.3):
  data = {k: np.asarray(v) for k, v in _tiny_problem().items()}
  model = core.MLP(8, (16,), 2, rngs=nnx.Rngs(0))
  opt = optax.sgd(lr)
  graphdef, state = core.create_train_state(model, opt, jax.random.key(1))
  return data, graphdef, state, opt, pas.make_adversarial_loss(steps=2, unroll=True)


def test_fit_pas_follows_the_schedule_keeps_snapshots_and_resumes(tmp_path):
  data, graphdef, state, opt, loss_fn = _fit_setup()
  eps_fn = pas.pas_eps_schedule(0.1, ckpts=[2, 4])
  kw = dict(eps_schedule=eps_fn, batch_size=32, progress=False)
  final, snaps, hist = pas.fit_pas(graphdef, state, loss_fn, opt, data, epochs=4,
                                   snapshot_epochs=(2, 4), **kw)
  assert int(final.step) == 4 * (128 // 32) and len(hist) == int(final.step)
  # every step trained at its epoch's eps
  per_step = np.repeat([float(eps_fn(jnp.float32(e))) for e in range(4)], 128 // 32)
  np.testing.assert_allclose([h["eps"] for h in hist], per_step, rtol=1e-6)
  # the snapshot after epoch 2 is the final model of the same run stopped after 2 epochs
  short, _, _ = pas.fit_pas(graphdef, state, loss_fn, opt, data, epochs=2, **kw)
  for a, b in zip(jax.tree.leaves(jax.tree.map(lambda s: s[0], snaps)),
                  jax.tree.leaves(short.params)):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree.leaves(jax.tree.map(lambda s: s[1], snaps)),
                  jax.tree.leaves(final.params)):
    np.testing.assert_array_equal(a, b)
  # stopped after its first cycle, a run in a workdir resumes to the same result
  work = tmp_path / "run"
  pas.fit_pas(graphdef, state, loss_fn, opt, data, epochs=2, workdir=str(work),
              checkpoint_every=3, **kw)
  assert (work / "metrics.jsonl").exists()
  resumed, rsnaps, rhist = pas.fit_pas(graphdef, state, loss_fn, opt, data, epochs=4,
                                       snapshot_epochs=(2, 4), workdir=str(work),
                                       checkpoint_every=3, **kw)
  assert len(rhist) == len(hist)
  for a, b in zip(jax.tree.leaves((resumed.params, rsnaps)), jax.tree.leaves((final.params,
                                                                               snaps))):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  # the adversarial loss went down
  batch = {**data, "eps": np.full((128,), 0.1, np.float32)}
  before, _ = loss_fn(nnx.merge(graphdef, state.params, state.model_state), batch,
                      jax.random.key(2))
  after, _ = loss_fn(nnx.merge(graphdef, final.params, final.model_state), batch,
                     jax.random.key(2))
  assert float(after) < 0.8 * float(before)


def test_fit_pas_bad_input():
  data, graphdef, state, opt, loss_fn = _fit_setup()
  kw = dict(eps_schedule=lambda e: 0.1, progress=False)
  with pytest.raises(ValueError, match="fewer than one batch"):
    pas.fit_pas(graphdef, state, loss_fn, opt, data, batch_size=256, epochs=1, **kw)
  with pytest.raises(ValueError, match="share their first dimension"):
    pas.fit_pas(graphdef, state, loss_fn, opt, {"x": data["x"], "y": data["y"][:5]},
                batch_size=4, epochs=1, **kw)
  with pytest.raises(ValueError, match="snapshot_epochs must be distinct"):
    pas.fit_pas(graphdef, state, loss_fn, opt, data, batch_size=4, epochs=2,
                snapshot_epochs=(3,), **kw)
