"""Tests of data-dependent path normalization: the measure as explicit quadratic forms, the
DDP-SGD scaling against the Hessian of a slow reference, the reduction to Path-SGD at
alpha = 1, node-rescaling invariance, DDP-Normalization, and bad input."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from tomioka_jax import core
from tomioka_jax import optim
from tomioka_jax.optim import _capacity as capacity
from tomioka_jax.optim import _ddp as ddp


def random_layers(sizes=(3, 4, 4, 3, 2), seed=0):
  rng = np.random.default_rng(seed)
  return [(jnp.asarray(rng.normal(size=(a, b))), jnp.asarray(0.5 * rng.normal(size=(b,))))
          for a, b in zip(sizes[:-1], sizes[1:])]


def random_inputs(n, d, seed=0):
  return jnp.asarray(np.random.default_rng(seed + 100).normal(size=(n, d)))


# Compiled once per shape and alpha: eager op-by-op dispatch would dominate the test time.
scaling = jax.jit(ddp.ddp_scaling, static_argnums=2)
gammas = jax.jit(ddp.ddp_gammas, static_argnums=2)


def slow_unit_gammas(layers, x, alpha):
  """gamma_v^2 = w^T R_v w per unit with R_v built explicitly: the bias is an extra incoming
  coordinate with activation 1 and gamma 1; inputs have gamma 1. (R_v is shared by the units
  of a layer.) Returns [(gamma^2 of the layer's units, R)] per layer."""
  gamma_prev = jnp.ones((x.shape[1],), x.dtype)
  h = x
  out = []
  for l, (w, b) in enumerate(layers):
    h1 = jnp.concatenate([h, jnp.ones((h.shape[0], 1), h.dtype)], axis=1)
    diag = jnp.diag(jnp.concatenate([gamma_prev, jnp.ones((1,), h.dtype)]))
    r = alpha * diag + (1 - alpha) * (h1.T @ h1) / h1.shape[0]
    w1 = jnp.concatenate([w, b[None, :]], axis=0)  # column v: (w_{->v}, b_v)
    gamma_prev = jnp.einsum("iv,ij,jv->v", w1, r, w1)
    out.append((gamma_prev, r))
    z = h @ w + b[None, :]
    h = jax.nn.relu(z) if l < len(layers) - 1 else z
  return out


def slow_gamma_net_sq(layers, x, alpha):
  return jnp.sum(slow_unit_gammas(layers, x, alpha)[-1][0])


def rescaled(layers, seed=5, spread=1.5):
  rng = np.random.default_rng(seed)
  scales = [jnp.asarray(np.exp(rng.uniform(-spread, spread, size=w.shape[1])))
            for w, _ in layers[:-1]]
  return capacity.rescale(layers, scales), scales


@jax.jit
def half_hessian_diagonal(layers, x, alpha):
  """(1/2) diag of the Hessian of the slow gamma_net^2, by forward-over-reverse autodiff."""
  flat, unravel = ravel_pytree(layers)
  grad = jax.grad(lambda v: slow_gamma_net_sq(unravel(v), x, alpha))
  basis = jnp.eye(flat.shape[0], dtype=flat.dtype)
  return 0.5 * jax.vmap(lambda e: jnp.vdot(e, jax.jvp(grad, (flat,), (e,))[1]))(basis)


def test_scaling_equals_half_hessian_diagonal_of_explicit_formula():
  with jax.enable_x64(True):
    layers = random_layers()  # three hidden layers: exercises Jacobians 2 and 3 layers apart
    x = random_inputs(6, 3)
    for alpha in (0.0, 0.3, 0.7, 1.0):
      expected = np.asarray(half_hessian_diagonal(layers, x, alpha))
      got = np.asarray(ravel_pytree(scaling(layers, x, alpha))[0])
      np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12, err_msg=f"{alpha=}")


def test_traced_alpha_matches_static_alpha():
  """alpha may be traced (vmap over alphas): no shortcuts, same values."""
  layers = [(jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32))
            for w, b in random_layers(seed=6)]
  x = jnp.asarray(random_inputs(5, 3, seed=6), jnp.float32)
  alphas = (0.0, 0.3, 1.0)
  traced = jax.jit(jax.vmap(lambda a: ddp.ddp_scaling(layers, x, a)))(jnp.array(alphas))
  for i, alpha in enumerate(alphas):
    for got, want in zip(jax.tree.leaves(traced), jax.tree.leaves(scaling(layers, x, alpha))):
      np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("alpha", [0.0, 0.4, 1.0])
def test_gammas_are_quadratic_forms_and_nonnegative(alpha):
  with jax.enable_x64(True):
    layers = random_layers(seed=2)
    x = random_inputs(9, 3, seed=2)
    got = gammas(layers, x, alpha)
    slow = jax.jit(slow_unit_gammas)(layers, x, alpha)
    np.testing.assert_allclose(got[0], np.ones(3))
    for g, (g_slow, r) in zip(got[1:], slow):
      np.testing.assert_allclose(g, g_slow, rtol=1e-12)
      assert np.all(np.asarray(g) >= 0)
      assert np.linalg.eigvalsh(np.asarray(r)).min() > -1e-12  # R_v is PSD
    np.testing.assert_allclose(np.sqrt(np.sum(got[-1])),
                               ddp.ddp_norm(layers, x, alpha, input_gamma="ones"), rtol=1e-12)


def test_alpha_zero_is_output_second_moment_and_alpha_one_is_path_norm():
  with jax.enable_x64(True):
    layers = random_layers(seed=3)
    x = random_inputs(8, 3, seed=3)
    out = np.asarray(capacity.mlp_forward(layers, x))
    np.testing.assert_allclose(np.sum(gammas(layers, x, 0.0)[-1]), np.sum(np.mean(out**2, 0)),
                               rtol=1e-12)
    np.testing.assert_allclose(np.sqrt(np.sum(gammas(layers, x, 1.0)[-1])),
                               capacity.path_norm(layers, 2.0), rtol=1e-12)
    # input_gamma="second_moment" puts E[x_u^2] at the inputs: with x = ones it is "ones".
    ones = jnp.ones((4, 3), jnp.float64)
    np.testing.assert_allclose(ddp.ddp_norm(layers, ones, 0.5, input_gamma="second_moment"),
                               ddp.ddp_norm(layers, ones, 0.5), rtol=1e-12)


def tiny_mlp(sizes=(3, 4, 3, 2), seed=0):
  model = core.MLP(sizes[0], sizes[1:-1], sizes[-1], rngs=nnx.Rngs(seed))
  rng = np.random.default_rng(seed + 1)
  for layer in model.layers:
    layer.bias[...] = jnp.asarray(0.5 * rng.normal(size=layer.bias[...].shape), jnp.float32)
  return model


def test_alpha_one_equals_path_sgd_exactly():
  network, params = ddp.ddp_network(tiny_mlp())
  x = jnp.asarray(random_inputs(5, 3), jnp.float32)
  path = optim.path_sgd(0.1, network, (3,))
  opt = ddp.ddp_sgd(0.1, 1.0)

  @jax.jit
  def both(params):
    grads = jax.grad(lambda p: jnp.sum(network(p, x) ** 2))(params)
    kappa_path = optim.path_scaling(network, params, (3,))
    up_path, _ = path.update(grads, path.init(params), params)
    up_ddp, _ = opt.update(grads, opt.init(params), params, inputs=x)
    return kappa_path, up_path, up_ddp

  kappa_path, up_path, up_ddp = both(params)
  kappa_ddp = scaling(capacity.mlp_layers(params), x, 1.0)
  for (pw, pb), (dw, db) in zip(capacity.mlp_layers(kappa_path), kappa_ddp):
    np.testing.assert_allclose(dw, pw, rtol=1e-6)
    np.testing.assert_allclose(db, pb, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(up_path), jax.tree.leaves(up_ddp)):
    np.testing.assert_allclose(b, a, rtol=1e-6)


@jax.jit
def _loss(layers, x, y):
  return optax.softmax_cross_entropy_with_integer_labels(capacity.mlp_forward(layers, x), y).mean()


@functools.partial(jax.jit, static_argnums=3)
def _ddp_step(layers, x, y, alpha):
  grads = jax.grad(_loss)(layers, x, y)
  kappa = ddp.ddp_scaling(layers, x, alpha)
  return jax.tree.map(lambda w, g, k: w - 0.1 * g / k, layers, grads, kappa)


@jax.jit
def _sgd_step(layers, x, y):
  return jax.tree.map(lambda w, g: w - 0.1 * g, layers, jax.grad(_loss)(layers, x, y))


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_measure_and_step_are_node_rescaling_invariant(alpha):
  with jax.enable_x64(True):
    layers = random_layers(sizes=(3, 5, 4, 2), seed=4)
    x = random_inputs(10, 3, seed=4)
    y = jnp.arange(10) % 2
    other, scales = rescaled(layers)
    np.testing.assert_allclose(np.sum(gammas(other, x, alpha)[-1]),
                               np.sum(gammas(layers, x, alpha)[-1]), rtol=1e-10)
    image_of_step = capacity.rescale(_ddp_step(layers, x, y, alpha), scales)
    step_of_image = _ddp_step(other, x, y, alpha)
    for a, b in zip(jax.tree.leaves(image_of_step), jax.tree.leaves(step_of_image)):
      np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12)
    # SGD is not invariant, so the check above can fail.
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
        jax.tree.leaves(capacity.rescale(_sgd_step(layers, x, y), scales)),
        jax.tree.leaves(_sgd_step(other, x, y))))
    assert diff > 1e-3


def test_inputs_extra_arg_and_reference_inputs_agree_and_jit():
  network, params = ddp.ddp_network(tiny_mlp())
  x = jnp.asarray(random_inputs(6, 3, seed=2), jnp.float32)
  grads = jax.tree.map(lambda p: jnp.ones_like(p), params)
  with_batch = ddp.ddp_sgd(0.1, 0.5, momentum=0.9)
  with_ref = ddp.ddp_sgd(0.1, 0.5, momentum=0.9, reference_inputs=x)
  a, _ = jax.jit(with_batch.update)(grads, with_batch.init(params), params, inputs=x)
  ref_update = jax.jit(with_ref.update)
  b, _ = ref_update(grads, with_ref.init(params), params)
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(u, v, rtol=1e-6)
  c, _ = ref_update(grads, with_ref.init(params), params, inputs=2 * x)
  assert any(not np.allclose(u, v) for u, v in zip(jax.tree.leaves(b), jax.tree.leaves(c)))


def test_core_trainers_feed_the_batch_inputs_to_ddp_sgd():
  """DDP-SGD gets the minibatch inputs through the core trainers' extra-args hook: without
  reference inputs it runs in core.make_train_step, make_shard_map_train_step and the scan
  trainer, and takes the step computed by hand with the (global) batch."""
  model = tiny_mlp()
  network, params = ddp.ddp_network(model)
  x = jnp.asarray(random_inputs(8, 3, seed=4), jnp.float32)
  y = jnp.arange(8) % 2
  opt = ddp.ddp_sgd(0.1, 0.5)
  inputs = lambda batch: {"inputs": batch["x"]}

  def loss_fn(model, batch, rng):
    del rng
    logits = model(batch["x"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean(), {}

  grads = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
      network(p, x), y).mean())(params)
  updates, _ = opt.update(grads, opt.init(params), params, inputs=x)
  expected = optax.apply_updates(params, updates)
  graphdef, state = core.create_train_state(model, opt, jax.random.key(0))
  mesh = core.data_mesh()
  steps = {"jit": core.make_train_step(graphdef, loss_fn, opt, extra_args=inputs),
           "shard_map": core.make_shard_map_train_step(graphdef, loss_fn, opt, mesh,
                                                       extra_args=inputs)}
  for name, step in steps.items():
    start = core.replicate(state, mesh) if name == "shard_map" else state
    batch = {"x": x, "y": y}
    batch = core.shard_batch(batch, mesh) if name == "shard_map" else batch
    new_state, _ = step(start, batch)
    for u, v in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(expected)):
      np.testing.assert_allclose(u, v, rtol=2e-5, atol=1e-7, err_msg=name)
  # Without the hook DDP-SGD gets no inputs and says so.
  with pytest.raises(ValueError, match="inputs"):
    core.make_train_step(graphdef, loss_fn, opt)(state, {"x": x, "y": y})
  run = core.make_classifier_trainer(model, opt, {"x": x, "y": y}, {"x": x, "y": y},
                                     batch_size=4, epochs=2, extra_args=inputs)
  _, metrics = run(params, jax.random.key(1))
  assert np.all(np.isfinite(metrics["train_ce"]))


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_ddp_normalization_invariant_to_rescaling_raw_weights(alpha):
  layer = ddp.DDPNormalizedLinear(3, 4, alpha=alpha, rngs=nnx.Rngs(0), epsilon=1e-12)
  layer.bias[...] = jnp.array([0.3, -0.2, 0.5, 0.1])
  layer.scale[...] = jnp.array([1.0, 2.0, -0.5, 3.0])
  x = jnp.asarray(random_inputs(16, 3), jnp.float32)
  before = layer(x)
  s = jnp.array([3.0, 0.2, 7.0, 1.0])
  layer.kernel[...] = layer.kernel[...] * s[None, :]
  layer.bias[...] = layer.bias[...] * s
  after = layer(x)
  np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)
  # gamma_v^2 as the module computes it: alpha (||v||^2 + c^2) + (1 - alpha) mean(t^2).
  t = x @ layer.kernel[...] + layer.bias[...][None, :]
  g2 = (alpha * (jnp.sum(layer.kernel[...] ** 2, 0) + layer.bias[...] ** 2) +
        (1 - alpha) * jnp.mean(t ** 2, 0))
  np.testing.assert_allclose(after, layer.scale[...][None, :] * t / jnp.sqrt(g2)[None, :],
                             rtol=1e-5, atol=1e-6)
  if alpha == 0.0:  # batch normalization without centering: unit mean square before the gain
    np.testing.assert_allclose(jnp.mean((after / layer.scale[...][None, :]) ** 2, 0), 1.0, rtol=1e-5)


def test_centered_ddp_normalization_at_alpha_zero_is_batch_normalization():
  """center=True, alpha = 0, c = 0: zero batch mean and unit mean square before the gain (the
  batch-normalized pre-activation); rescaling a unit still changes nothing, and evaluation
  uses the running input mean."""
  layer = ddp.DDPNormalizedLinear(4, 3, alpha=0.0, center=True, momentum=0.0, epsilon=1e-12,
                                  rngs=nnx.Rngs(2))
  x = jnp.asarray(random_inputs(64, 4), jnp.float32) + 5.0  # far from centered
  y = layer(x)
  np.testing.assert_allclose(jnp.mean(y, 0), 0.0, atol=1e-5)
  np.testing.assert_allclose(jnp.mean(y ** 2, 0), 1.0, rtol=1e-4)
  t = x @ layer.kernel[...]
  bn = (t - t.mean(0, keepdims=True)) / t.std(0, keepdims=True)
  np.testing.assert_allclose(y, bn, rtol=1e-4, atol=1e-4)
  layer.kernel[...] = layer.kernel[...] * jnp.array([0.5, 2.0, 3.0])[None, :]
  np.testing.assert_allclose(layer(x), y, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(layer.input_mean[...], jnp.mean(x, 0), rtol=1e-6)  # momentum 0
  np.testing.assert_allclose(layer(x, use_running_average=True), y, rtol=1e-4, atol=1e-4)


def test_ddp_normalization_running_average():
  model = ddp.DDPNormalizedMLP(4, (5,), 3, alpha=0.5, rngs=nnx.Rngs(0), momentum=0.0)
  x = jnp.asarray(random_inputs(32, 4), jnp.float32)
  train_out = model(x)
  eval_out = model(x, use_running_average=True)  # momentum 0: running = last batch
  np.testing.assert_allclose(eval_out, train_out, rtol=1e-5, atol=1e-6)
  scaled = 3.0 * x[:8]
  with_running = model(scaled, use_running_average=True)  # the statistics of x
  with_batch = model(scaled)  # the statistics of this batch
  assert not np.allclose(with_running, with_batch)


@pytest.mark.parametrize("normalize_output", [True, False])
def test_ddp_normalized_mlp_is_invariant_to_hidden_unit_rescaling(normalize_output):
  """Scaling a hidden unit's raw incoming weights and bias leaves the network unchanged; the
  output layer is a DDP-normalized or a plain dense layer as asked."""
  model = ddp.DDPNormalizedMLP(4, (6, 5), 3, alpha=0.5, rngs=nnx.Rngs(1),
                               normalize_output=normalize_output)
  assert isinstance(model.layers[-1], ddp.DDPNormalizedLinear) == normalize_output
  x = jnp.asarray(random_inputs(16, 4), jnp.float32)
  before = model(x)
  for layer, c in zip(model.layers[:-1], (jnp.linspace(0.5, 3.0, 6), jnp.linspace(3.0, 0.5, 5))):
    layer.kernel[...] = layer.kernel[...] * c[None, :]
    layer.bias[...] = layer.bias[...] * c
  np.testing.assert_allclose(model(x), before, rtol=2e-4, atol=1e-5)
  if not normalize_output:  # a plain head: scaling its weights scales the logits
    model.layers[-1].kernel[...] = 2.0 * model.layers[-1].kernel[...]
    model.layers[-1].bias[...] = 2.0 * model.layers[-1].bias[...]
    np.testing.assert_allclose(model(x), 2.0 * before, rtol=2e-4, atol=1e-5)


def test_bad_input():
  network, params = ddp.ddp_network(tiny_mlp())
  x = jnp.ones((2, 3))
  for alpha in (-0.1, 1.5, True, float("nan"), jnp.array([0.1, 0.2])):
    with pytest.raises(ValueError, match="alpha"):
      ddp.ddp_sgd(0.1, alpha)
    with pytest.raises(ValueError, match="alpha"):
      ddp.ddp_gammas(capacity.mlp_layers(params), x, alpha)
    with pytest.raises(ValueError, match="alpha"):
      ddp.DDPNormalizedLinear(2, 2, alpha=alpha, rngs=nnx.Rngs(0))
  for lr in (0.0, -1.0):
    with pytest.raises(ValueError, match="learning_rate"):
      ddp.ddp_sgd(lr, 0.5)
  with pytest.raises(ValueError, match="input_gamma"):
    ddp.scale_by_ddp(0.5, input_gamma="unit")
  with pytest.raises(ValueError, match="momentum"):
    ddp.ddp_sgd(0.1, 0.5, momentum=1.0)
  with pytest.raises(ValueError, match="features"):
    ddp.ddp_scaling(capacity.mlp_layers(params), jnp.ones((2, 5)), 0.5)

  class ConvNet(nnx.Module):
    def __init__(self):
      self.conv = nnx.Conv(1, 2, (3, 3), rngs=nnx.Rngs(0))

  class BatchNormNet(nnx.Module):
    def __init__(self):
      self.layers = nnx.List([nnx.Linear(3, 4, rngs=nnx.Rngs(0))])
      self.norm = nnx.BatchNorm(4, rngs=nnx.Rngs(0))

  for model in (ConvNet(), BatchNormNet()):
    with pytest.raises(ValueError, match="unsupported layer"):
      ddp.ddp_network(model)
  opt = ddp.ddp_sgd(0.1, 0.5)
  grads = jax.tree.map(jnp.zeros_like, params)
  with pytest.raises(ValueError, match="inputs"):
    opt.update(grads, opt.init(params), params)
  with pytest.raises(ValueError, match="params"):
    opt.update(grads, opt.init(params), {"w": jnp.ones(3)}, inputs=x)
