"""Tests of the train state and the pure train/eval steps, on 1 and 8 devices."""

import jax
import jax.test_util  # noqa: F401  (not imported by `import jax`)
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tomioka_jax import core


class Linear(nnx.Module):
  """y = x w + b with a BatchNorm-like running mean, to exercise non-parameter state."""

  def __init__(self, d_in, d_out, seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    self.w = nnx.Param(jax.random.normal(k1, (d_in, d_out)))
    self.b = nnx.Param(jax.random.normal(k2, (d_out,)))
    self.running_mean = nnx.BatchStat(jnp.zeros((d_in,)))

  def __call__(self, x):
    self.running_mean[...] = 0.9 * self.running_mean[...] + 0.1 * x.mean(0)
    return x @ self.w[...] + self.b[...][None, :]


def squared_loss(model, batch, rng):
  del rng
  pred = model(batch["x"])
  return jnp.mean(jnp.sum((pred - batch["y"]) ** 2, -1)), {}


def make_problem(n=32, d_in=5, d_out=3, seed=1):
  kx, ky = jax.random.split(jax.random.key(seed))
  return {"x": np.asarray(jax.random.normal(kx, (n, d_in))),
          "y": np.asarray(jax.random.normal(ky, (n, d_out)))}


def test_step_is_gradient_descent_on_the_loss():
  """One SGD step moves the parameters by -lr * the analytic gradient of the squared loss."""
  batch = make_problem()
  model = Linear(5, 3)
  lr = 0.1
  opt = optax.sgd(lr)
  graphdef, state = core.create_train_state(model, opt, jax.random.key(0))
  step = core.make_train_step(graphdef, squared_loss, opt)
  new_state, metrics = step(state, batch)
  w, b = np.asarray(model.w[...]), np.asarray(model.b[...])
  x, y = batch["x"], batch["y"]
  resid = x @ w + b - y
  n = x.shape[0]
  grad_w = 2 * x.T @ resid / n
  grad_b = 2 * resid.sum(0) / n
  np.testing.assert_allclose(new_state.params["w"][...], w - lr * grad_w, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new_state.params["b"][...], b - lr * grad_b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(metrics["loss"], np.mean(np.sum(resid**2, -1)), rtol=1e-5)
  # Non-parameter state is carried through the step.
  np.testing.assert_allclose(new_state.model_state["running_mean"][...], 0.1 * x.mean(0),
                             rtol=1e-5, atol=1e-7)
  assert int(new_state.step) == 1
  assert not np.array_equal(jax.random.key_data(new_state.rng), jax.random.key_data(state.rng))


def test_gradient_matches_finite_differences():
  batch = make_problem(n=8, d_in=3, d_out=2)
  model = Linear(3, 2)
  graphdef, state = core.create_train_state(model, optax.sgd(1.0), jax.random.key(0))

  def loss_of_w(w):
    params = jax.tree.map(lambda x: x, state.params)
    params["w"] = nnx.Param(w)
    m = nnx.merge(graphdef, params, jax.tree.map(lambda x: x, state.model_state))
    return squared_loss(m, batch, None)[0]

  with jax.enable_x64(True):
    w = jnp.asarray(model.w[...], jnp.float64)
    jax.test_util.check_grads(loss_of_w, (w,), order=2, modes=["rev"])


def _run_steps(step, state, batches):
  losses = []
  for b in batches:
    state, m = step(state, b)
    losses.append(float(m["loss"]))
  return state, np.array(losses)


@pytest.mark.parametrize("maker", ["jit", "shard_map"])
def test_eight_devices_equal_one_device(maker):
  """The data-parallel step on 8 devices follows the 1-device trajectory."""
  assert jax.device_count() == 8
  batches = [make_problem(n=32, seed=s) for s in range(5)]
  opt = optax.adam(0.05)
  results = {}
  for n_dev in (1, 8):
    mesh = core.data_mesh(jax.devices()[:n_dev])
    graphdef, state = core.create_train_state(Linear(5, 3), opt, jax.random.key(0))
    state = core.replicate(state, mesh)
    if maker == "jit":
      step = core.make_train_step(graphdef, squared_loss, opt, mesh=mesh)
    else:
      step = core.make_shard_map_train_step(graphdef, squared_loss, opt, mesh)
    state, losses = _run_steps(step, state, [core.shard_batch(b, mesh) for b in batches])
    results[n_dev] = (state, losses)
  (s1, l1), (s8, l8) = results[1], results[8]
  np.testing.assert_allclose(l8, l1, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s8.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # The state stays replicated on every device of the mesh.
  leaf = jax.tree.leaves(s8.params)[0]
  assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 8


def test_shard_map_step_uses_the_given_reduction():
  """A reduction that zeroes gradients leaves SGD's parameters where they were."""
  mesh = core.data_mesh()
  opt = optax.sgd(0.1)
  graphdef, state = core.create_train_state(Linear(5, 3), opt, jax.random.key(0))
  state = core.replicate(state, mesh)
  calls = []

  def zero_reduce(key, grads, axis_name):
    calls.append(axis_name)
    assert key.shape == ()
    return jax.tree.map(jnp.zeros_like, grads)

  step = core.make_shard_map_train_step(graphdef, squared_loss, opt, mesh,
                                        reduce_gradients=zero_reduce)
  new_state, _ = step(state, core.shard_batch(make_problem(), mesh))
  assert calls == [core.DATA_AXIS]
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(new_state.params)):
    np.testing.assert_array_equal(a, b)


def test_shard_map_step_rejects_a_2d_mesh_and_a_wrong_reduction():
  opt = optax.sgd(0.1)
  graphdef, state = core.create_train_state(Linear(5, 3), opt, jax.random.key(0))
  mesh2d = jax.make_mesh((4, 2), ("data", "model"))
  with pytest.raises(ValueError, match=r"mesh must be a 1-D data mesh, got axes \('data', "
                     r"'model'\) of shape \(4, 2\)"):
    core.make_shard_map_train_step(graphdef, squared_loss, opt, mesh2d)
  mesh = core.data_mesh()

  def mean_with_stats(key, grads, axis_name):  # like returning QSGD's QuantizedMean itself
    del key
    return (jax.lax.pmean(grads, axis_name), 0.0)

  step = core.make_shard_map_train_step(graphdef, squared_loss, opt, mesh,
                                        reduce_gradients=mean_with_stats)
  with pytest.raises(TypeError, match=r"reduce_gradients must return a pytree shaped like the "
                     r"gradients .*quantized_tree_mean\(key, grads, axis_name, ...\)\.mean"):
    step(core.replicate(state, mesh), core.shard_batch(make_problem(), mesh))


def test_no_recompilation_on_second_step():
  opt = optax.sgd(0.1)
  graphdef, state = core.create_train_state(Linear(5, 3), opt, jax.random.key(0))
  step = core.make_train_step(graphdef, squared_loss, opt)
  state, _ = step(state, make_problem(seed=1))
  before = step.jitted._cache_size()  # pylint: disable=protected-access
  state, _ = step(state, make_problem(seed=2))
  assert step.jitted._cache_size() == before == 1  # pylint: disable=protected-access


def test_eval_step_sums_and_mask():
  """Evaluation sums with a padding mask equal the plain mean over the real rows."""
  train_data = make_problem(n=16)
  model = core.MLP(5, (8,), 4, rngs=nnx.Rngs(0))
  graphdef, state = core.create_train_state(model, optax.sgd(0.1), jax.random.key(0))
  y = np.arange(16) % 4
  batch = {"x": train_data["x"], "y": y}
  eval_step = core.make_eval_step(graphdef, core.classification_sums)
  full = eval_step(state, batch)
  masked = eval_step(state, {"x": np.concatenate([batch["x"], batch["x"][:4]]),
                             "y": np.concatenate([y, y[:4]]),
                             "mask": np.r_[np.ones(16), np.zeros(4)].astype(np.float32)})
  for k in ("loss", "accuracy", "count"):
    np.testing.assert_allclose(masked[k], full[k], rtol=1e-6)
  logits = core.apply_model(graphdef, state, batch["x"])
  np.testing.assert_allclose(full["accuracy"], np.sum(np.argmax(logits, -1) == y))
  assert float(full["count"]) == 16


def test_wrongly_shaped_batch_raises():
  opt = optax.sgd(0.1)
  graphdef, state = core.create_train_state(Linear(5, 3), opt, jax.random.key(0))
  step = core.make_train_step(graphdef, squared_loss, opt)
  bad = {"x": np.zeros((8, 5), np.float32), "y": np.zeros((7, 3), np.float32)}
  with pytest.raises(ValueError, match="batch must be a pytree of arrays sharing one leading"):
    step(state, bad)
  mesh = core.data_mesh()
  step8 = core.make_train_step(graphdef, squared_loss, opt, mesh=mesh)
  with pytest.raises(ValueError, match="leading size 12.*multiple of 8"):
    step8(core.replicate(state, mesh), {"x": np.zeros((12, 5), np.float32),
                                        "y": np.zeros((12, 3), np.float32)})


def test_mlp_rejects_wrong_feature_count():
  model = core.MLP(64, (8,), 10, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="x must have 64 features"):
    model(jnp.zeros((2, 7, 7)))
  with pytest.raises(ValueError, match="layer sizes must be positive"):
    core.MLP(64, (0,), 10, rngs=nnx.Rngs(0))


def test_create_train_state_rejects_non_module():
  with pytest.raises(TypeError, match="model must be a flax.nnx.Module"):
    core.create_train_state({"w": 1.0}, optax.sgd(0.1), jax.random.key(0))


def noisy_loss(model, batch, rng):
  """The squared loss plus a term in the step's key, so that its randomness is exercised."""
  loss, _ = squared_loss(model, batch, rng)
  noise = jax.random.normal(rng, ())
  return loss + 0.1 * noise * jnp.sum(model.b[...]), {"noise": noise}


def test_extra_args_hook_reaches_the_optimizer():
  """Whatever extra_args(batch) returns is passed to optimizer.update, in every step maker."""
  seen = []

  def update(updates, state, params=None, *, scale=None, **unused):
    seen.append(scale)
    return jax.tree.map(lambda g: -scale * g, updates), state

  opt = optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update)
  batch = make_problem()
  graphdef, state = core.create_train_state(Linear(5, 3), opt, jax.random.key(0))
  hook = lambda batch: {"scale": 0.1 * jnp.mean(batch["y"] ** 0)}  # computed from the batch
  step = core.make_train_step(graphdef, squared_loss, opt, extra_args=hook)
  reference = core.make_train_step(graphdef, squared_loss, optax.sgd(0.1))
  new_state, _ = step(state, batch)
  expected, _ = reference(state._replace(opt_state=optax.sgd(0.1).init(state.params)), batch)
  for a, b in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(expected.params)):
    np.testing.assert_allclose(a, b, rtol=1e-6)
  assert len(seen) == 1  # traced once
  # A plain GradientTransformation (no **extra_args) is wrapped, and ignores the arguments.
  plain = core.make_train_step(graphdef, squared_loss, optax.sgd(0.1),
                               extra_args=lambda b: {"inputs": b["x"]})
  got, _ = plain(state._replace(opt_state=optax.sgd(0.1).init(state.params)), batch)
  for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(expected.params)):
    np.testing.assert_array_equal(a, b)


def test_scan_trainer_equals_the_jitted_step_in_a_python_loop():
  """make_scan_trainer runs make_train_step's step: same shuffles, keys, states, metrics."""
  data = make_problem(n=40)
  opt = optax.adam(0.05)
  graphdef, state = core.create_train_state(Linear(5, 3), opt, jax.random.key(0))
  evaluate = lambda s: {"w_norm": jnp.sum(s.params["w"][...] ** 2)}
  train = core.make_scan_trainer(graphdef, noisy_loss, opt, batch_size=16, epochs=3,
                                 evaluate=evaluate)
  key = jax.random.key(5)
  final, metrics = train(state, data, key)
  assert {k: v.shape for k, v in metrics.items()} == {"loss": (3,), "noise": (3,),
                                                      "w_norm": (3,)}
  step = core.make_train_step(graphdef, noisy_loss, opt)
  s, losses, norms = state, [], []
  for k in jax.random.split(key, 3):
    order = np.asarray(jax.random.permutation(k, 40))[:32].reshape(2, 16)
    epoch = []
    for idx in order:
      s, m = step(s, {"x": data["x"][idx], "y": data["y"][idx]})
      epoch.append(float(m["loss"]))
    losses.append(np.mean(epoch))
    norms.append(float(evaluate(s)["w_norm"]))
  assert int(final.step) == int(s.step) == 6
  for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(s)):
    if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
      a, b = jax.random.key_data(a), jax.random.key_data(b)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(metrics["loss"], losses, rtol=1e-5)
  np.testing.assert_allclose(metrics["w_norm"], norms, rtol=1e-5)


def test_scan_trainer_vmaps_over_seeds():
  """A batch of states from different seeds trains in one call, each as it would alone."""
  data = make_problem(n=32)
  opt = optax.sgd(0.05)
  graphdef, _ = core.create_train_state(Linear(5, 3), opt, jax.random.key(0))
  train = core.make_scan_trainer(graphdef, squared_loss, opt, batch_size=8, epochs=2)

  def init(seed):
    _, state = core.create_train_state(Linear(5, 3, seed=seed), opt, jax.random.key(seed))
    return state

  states = [init(s) for s in (1, 2, 3)]
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
  keys = jax.random.split(jax.random.key(9), 3)
  finals, metrics = jax.vmap(train, (0, None, 0))(stacked, data, keys)
  assert metrics["loss"].shape == (3, 2)
  for i, state in enumerate(states):
    alone, alone_metrics = train(state, data, keys[i])
    np.testing.assert_allclose(metrics["loss"][i], alone_metrics["loss"], rtol=1e-5)
    np.testing.assert_allclose(finals.params["w"][...][i], alone.params["w"][...], rtol=1e-5,
                               atol=1e-6)


def test_scan_trainer_bad_arguments():
  opt = optax.sgd(0.1)
  graphdef, state = core.create_train_state(Linear(5, 3), opt, jax.random.key(0))
  with pytest.raises(ValueError, match="epochs must be a positive integer, got epochs=0"):
    core.make_scan_trainer(graphdef, squared_loss, opt, batch_size=4, epochs=0)
  train = core.make_scan_trainer(graphdef, squared_loss, opt, batch_size=64, epochs=1)
  with pytest.raises(ValueError, match="batch_size=64 exceeds the 32 training examples"):
    train(state, make_problem(n=32), jax.random.key(0))
  bad = {"x": np.zeros((32, 5)), "y": np.zeros((31, 3))}
  with pytest.raises(ValueError, match="one leading example axis"):
    train(state, bad, jax.random.key(0))


def _sampler(data, batch_size):
  """Draws ``batch_size`` examples of ``data`` with replacement from a key (jittable)."""
  arrays = jax.tree.map(jnp.asarray, data)
  n = len(data["x"])

  def sample(key):
    idx = jax.random.randint(key, (batch_size,), 0, n)
    return jax.tree.map(lambda x: x[idx], arrays)

  return sample


def test_sampler_trainer_equals_the_jitted_step_in_a_python_loop():
  """make_sampler_trainer runs make_train_step's step on sample(fold_in(key, t)), t = 0, 1, ..."""
  data = make_problem(n=40)
  opt = optax.adam(0.05)
  graphdef, state = core.create_train_state(Linear(5, 3), opt, jax.random.key(0))
  sample = _sampler(data, 16)
  hook = lambda batch: {"inputs": batch["x"]}  # reaches the (wrapped) optimizer, ignored
  train = core.make_sampler_trainer(graphdef, noisy_loss, opt, sample=sample, steps=5,
                                    extra_args=hook)
  key = jax.random.key(5)
  final, metrics = train(state, key)
  assert {k: v.shape for k, v in metrics.items()} == {"loss": (5,), "noise": (5,)}
  step = core.make_train_step(graphdef, noisy_loss, opt, extra_args=hook)
  s, losses = state, []
  for t in range(5):
    s, m = step(s, jax.jit(sample)(jax.random.fold_in(key, t)))
    losses.append(float(m["loss"]))
  assert int(final.step) == int(s.step) == 5
  for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(s)):
    if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
      a, b = jax.random.key_data(a), jax.random.key_data(b)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(metrics["loss"], losses, rtol=1e-5)


def test_sampler_trainer_vmaps_over_seeds():
  """States and keys of several seeds train in one call, each as it would alone."""
  opt = optax.sgd(0.05)
  graphdef, _ = core.create_train_state(Linear(5, 3), opt, jax.random.key(0))
  train = core.make_sampler_trainer(graphdef, squared_loss, opt,
                                    sample=_sampler(make_problem(n=32), 8), steps=4)

  def init(seed):
    _, state = core.create_train_state(Linear(5, 3, seed=seed), opt, jax.random.key(seed))
    return state

  states = [init(s) for s in (1, 2, 3)]
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
  keys = jax.random.split(jax.random.key(9), 3)
  finals, metrics = jax.vmap(train)(stacked, keys)
  assert metrics["loss"].shape == (3, 4)
  for i, state in enumerate(states):
    alone, alone_metrics = train(state, keys[i])
    np.testing.assert_allclose(metrics["loss"][i], alone_metrics["loss"], rtol=1e-5)
    np.testing.assert_allclose(finals.params["w"][...][i], alone.params["w"][...], rtol=1e-5,
                               atol=1e-6)


def test_sampler_trainer_bad_arguments():
  opt = optax.sgd(0.1)
  graphdef, state = core.create_train_state(Linear(5, 3), opt, jax.random.key(0))
  sample = _sampler(make_problem(n=32), 8)
  for steps in (0, -3, 2.0, True):
    with pytest.raises(ValueError, match=rf"steps must be a positive integer, got "
                       rf"steps={steps!r}"):
      core.make_sampler_trainer(graphdef, squared_loss, opt, sample=sample, steps=steps)
  with pytest.raises(TypeError, match="sample must be a function key -> batch, got "
                     "sample='groups'"):
    core.make_sampler_trainer(graphdef, squared_loss, opt, sample="groups", steps=2)
  ragged = lambda key: {"x": jnp.zeros((8, 5)), "y": jnp.zeros((7, 3))}
  train = core.make_sampler_trainer(graphdef, squared_loss, opt, sample=ragged, steps=2)
  with pytest.raises(ValueError, match=r"sample\(key\) returned an unusable batch: batch must "
                     "be a pytree of arrays sharing one leading"):
    train(state, jax.random.key(0))


def test_scan_trainer_rejects_a_boolean_batch_size():
  opt = optax.sgd(0.1)
  graphdef, _ = core.create_train_state(Linear(5, 3), opt, jax.random.key(0))
  with pytest.raises(ValueError, match="batch_size must be a positive integer, got "
                     "batch_size=True"):
    core.make_scan_trainer(graphdef, squared_loss, opt, batch_size=True, epochs=1)
