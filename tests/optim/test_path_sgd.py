"""Tests of Path-SGD and the path norm: the dynamic-programming formula, brute-force path
enumeration, node-rescaling invariance, and bad input."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tomioka_jax import core
from tomioka_jax import optim
from tomioka_jax.optim import _capacity as capacity


def tiny_mlp(sizes=(3, 4, 3, 2), seed=0):
  return core.MLP(sizes[0], sizes[1:-1], sizes[-1], rngs=nnx.Rngs(seed))


def randomize_biases(model, seed=1):
  """nnx.Linear initializes biases to zero; give them values so bias paths matter."""
  keys = jax.random.split(jax.random.key(seed), len(model.layers))
  for k, layer in zip(keys, model.layers):
    layer.bias[...] = 0.5 * jax.random.normal(k, layer.bias[...].shape)
  return model


def explicit_kappa(layers):
  """kappa for W_l[i, j] = gamma_in^2(i) gamma_out^2(j); for b_l[j] = gamma_out^2(j)."""
  g_in = [np.ones(layers[0][0].shape[0])]
  for w, b in layers:
    g_in.append(g_in[-1] @ w**2 + b**2)
  g_out = [np.ones(layers[-1][0].shape[1])]
  for w, _ in reversed(layers):
    g_out.insert(0, w**2 @ g_out[0])
  # g_in[l] is at the input of layer l; g_out[l + 1] at its output.
  return [(np.outer(g_in[l], g_out[l + 1]), g_out[l + 1]) for l in range(len(layers))]


def brute_force_path_sum(layers, p):
  """Enumerates every path (from an input or a bias) and sums prod |w_e|^p (or takes max)."""
  terms = []
  sizes = [layers[0][0].shape[0]] + [w.shape[1] for w, _ in layers]
  for start_layer in range(len(layers) + 1):
    # start_layer 0: paths from inputs; start_layer l >= 1: from the bias of layer l - 1.
    first = 0 if start_layer == 0 else start_layer - 1
    units = [range(sizes[l]) for l in range(first + 1, len(layers) + 1)]
    for start in range(sizes[0] if start_layer == 0 else 1):
      for route in itertools.product(*units):
        if start_layer == 0:
          prod, prev, rest = 1.0, start, route
          ls = range(len(layers))
        else:
          prod, prev, rest = abs(layers[first][1][route[0]]) ** p, route[0], route[1:]
          ls = range(first + 1, len(layers))
        for l, unit in zip(ls, rest):
          prod *= abs(layers[l][0][prev, unit]) ** p
          prev = unit
        terms.append(prod)
  return terms


def test_kappa_by_autodiff_equals_dynamic_programming():
  model = randomize_biases(tiny_mlp())
  network, params = optim.nnx_network(model)
  kappa = optim.path_scaling(network, params, (3,))
  layers = [(np.asarray(w), np.asarray(b)) for w, b in capacity.mlp_layers(params)]
  expected = explicit_kappa(layers)
  got = capacity.mlp_layers(kappa)
  for (kw, kb), (ew, eb) in zip(got, expected):
    np.testing.assert_allclose(kw, ew, rtol=1e-5)
    np.testing.assert_allclose(kb, eb, rtol=1e-5)


@pytest.mark.parametrize("p", [1.0, 2.0])
def test_path_norm_equals_brute_force(p):
  model = randomize_biases(tiny_mlp())
  network, params = optim.nnx_network(model)
  layers = [(np.asarray(w, np.float64), np.asarray(b, np.float64))
            for w, b in capacity.mlp_layers(params)]
  expected = sum(brute_force_path_sum(layers, p)) ** (1 / p)
  np.testing.assert_allclose(optim.network_path_norm(network, params, (3,), p), expected, rtol=1e-5)
  np.testing.assert_allclose(capacity.path_norm(capacity.mlp_layers(params), p), expected,
                             rtol=1e-5)


def test_inf_path_norm_is_the_largest_path():
  model = randomize_biases(tiny_mlp())
  layers = capacity.mlp_layers(nnx.split(model, nnx.Param, ...)[1])
  expected = max(brute_force_path_sum([(np.asarray(w), np.asarray(b)) for w, b in layers], 1.0))
  np.testing.assert_allclose(capacity.path_norm(layers, float("inf")), expected, rtol=1e-6)


def test_path_sgd_step_is_rescaling_invariant_and_sgd_is_not():
  """A rescaled network takes a Path-SGD step to the rescaled image of the original's step."""
  with jax.enable_x64(True):
    model = randomize_biases(core.MLP(5, (6, 4), 3, rngs=nnx.Rngs(0), dtype=jnp.float64))
    network, params = optim.nnx_network(model)
    layers = capacity.mlp_layers(params)
    scales = capacity.random_rescaling(jax.random.key(2), layers, spread=1.5)
    x = jax.random.normal(jax.random.key(3), (16, 5), jnp.float64)
    y = jax.random.randint(jax.random.key(4), (16,), 0, 3)

    def loss(p):
      logits = network(p, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    rescaled = capacity.set_mlp_layers(params, capacity.rescale(layers, scales))
    np.testing.assert_allclose(network(rescaled, x), network(params, x), rtol=1e-10)

    def step(opt, p):
      updates, _ = opt.update(jax.grad(loss)(p), opt.init(p), p)
      return optax.apply_updates(p, updates)

    path_opt = optim.path_sgd(0.1, network, (5,))
    after = capacity.rescale(capacity.mlp_layers(step(path_opt, params)), scales)
    after_rescaled = capacity.mlp_layers(step(path_opt, rescaled))
    for (w1, b1), (w2, b2) in zip(after, after_rescaled):
      np.testing.assert_allclose(w2, w1, rtol=1e-9, atol=1e-12)
      np.testing.assert_allclose(b2, b1, rtol=1e-9, atol=1e-12)

    sgd = optax.sgd(0.1)
    a = capacity.rescale(capacity.mlp_layers(step(sgd, params)), scales)
    b = capacity.mlp_layers(step(sgd, rescaled))
    assert max(float(jnp.max(jnp.abs(w1 - w2))) for (w1, _), (w2, _) in zip(a, b)) > 1e-3


def test_conv_network_kappa_matches_dense_equivalent():
  """A 1x1 convolution is a dense layer per pixel: its kappa scales with the pixel count."""

  class ConvNet(nnx.Module):
    def __init__(self, rngs):
      self.conv = nnx.Conv(2, 3, kernel_size=(1, 1), rngs=rngs)
      self.out = nnx.Linear(3, 2, rngs=rngs)

    def __call__(self, x):
      h = jax.nn.relu(self.conv(x))
      return self.out(jnp.mean(h, axis=(1, 2)))  # average pooling: linear

  net = ConvNet(nnx.Rngs(0))
  network, params = optim.nnx_network(net)
  kappa = optim.path_scaling(network, params, (4, 4, 2))
  w1 = params["conv"]["kernel"][...][0, 0]  # (2, 3)
  w2 = params["out"]["kernel"][...]
  layers = [(np.asarray(w1), np.zeros(3)), (np.asarray(w2), np.zeros(2))]
  expected = explicit_kappa(layers)
  # Average pooling over 16 pixels of identical values: the conv paths carry the same mass.
  np.testing.assert_allclose(kappa["conv"]["kernel"][...][0, 0], expected[0][0], rtol=1e-5)
  np.testing.assert_allclose(kappa["out"]["kernel"][...], expected[1][0], rtol=1e-5)


def test_unsupported_layer_and_bad_arguments():
  class WithNorm(nnx.Module):
    def __init__(self, rngs):
      self.dense = nnx.Linear(3, 4, rngs=rngs)
      self.norm = nnx.BatchNorm(4, rngs=rngs)

    def __call__(self, x):
      return self.norm(self.dense(x))

  with pytest.raises(ValueError, match="unsupported layer BatchNorm at 'norm'"):
    optim.nnx_network(WithNorm(nnx.Rngs(0)))
  network, params = optim.nnx_network(tiny_mlp())
  with pytest.raises(ValueError, match="learning_rate must be > 0, got 0.0"):
    optim.path_sgd(0.0, network, (3,))
  with pytest.raises(ValueError, match="learning_rate must be > 0, got -0.1"):
    optim.path_sgd(-0.1, network, (3,))
  with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
    optim.path_sgd(0.1, network, (3,), momentum=1.0)
  opt = optim.scale_by_path_norm(network, (3,))
  with pytest.raises(ValueError, match="needs params"):
    opt.update(params, opt.init(params))
  with pytest.raises(ValueError, match="p must be a finite number >= 1"):
    optim.network_path_norm(network, params, (3,), p=0.5)


class _Activated(nnx.Module):
  """A 3-4-2 network with a chosen activation (or max pooling) in the hidden layer."""

  def __init__(self, activation, rngs):
    self.hidden = nnx.Linear(4, 4, rngs=rngs)
    self.out = nnx.Linear(4, 2, rngs=rngs)
    self.activation = activation

  def __call__(self, x):
    return self.out(self.activation(self.hidden(x.reshape(x.shape[0], -1))))


def _max_pool_pairs(h):
  pooled = jnp.max(h.reshape(h.shape[0], 2, 2), axis=-1)
  return jnp.concatenate([pooled, pooled], axis=-1)


def _avg_pool_pairs(h):
  pooled = jnp.mean(h.reshape(h.shape[0], 2, 2), axis=-1)
  return jnp.concatenate([pooled, pooled], axis=-1)


@pytest.mark.parametrize("activation", [jnp.tanh, jax.nn.sigmoid, _max_pool_pairs])
def test_non_path_sum_networks_are_rejected_at_init(activation):
  network, params = optim.nnx_network(_Activated(activation, nnx.Rngs(0)))
  opt = optim.path_sgd(0.1, network, (4,))
  with pytest.raises(ValueError, match="network is not a path-sum network"):
    opt.init(params)


@pytest.mark.parametrize("activation", [jax.nn.relu, _avg_pool_pairs, lambda h: h])
def test_path_sum_networks_pass_the_probe(activation):
  network, params = optim.nnx_network(_Activated(activation, nnx.Rngs(0)))
  optim.check_path_sum_network(network, params, (4,))
  optim.path_sgd(0.1, network, (4,)).init(params)


def test_input_shape_with_the_batch_axis_is_rejected():
  class Tokenwise(nnx.Module):  # a dense layer on the last axis: no flattening
    def __init__(self, rngs):
      self.dense = nnx.Linear(3, 2, rngs=rngs)

    def __call__(self, x):
      return self.dense(x)

  network, _ = optim.nnx_network(Tokenwise(nnx.Rngs(0)))
  with pytest.raises(ValueError, match=r"input_shape=\(128, 3\) holds 384 values per example"):
    optim.path_sgd(0.1, network, (128, 3))
  optim.path_sgd(0.1, network, (3,))
  conv = nnx.Conv(1, 2, (3, 3), rngs=nnx.Rngs(0))
  network, _ = optim.nnx_network(conv)
  with pytest.raises(ValueError, match=r"input_shape=\(16, 8, 8, 1\) has 4 axes"):
    optim.scale_by_path_norm(network, (16, 8, 8, 1))
  optim.scale_by_path_norm(network, (8, 8, 1))


def test_inject_hyperparams_under_jit():
  network, params = optim.nnx_network(tiny_mlp())
  opt = optax.inject_hyperparams(optim.path_sgd, static_args=("network", "input_shape"))(
      learning_rate=0.1, network=network, input_shape=(3,))
  state = opt.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, state = jax.jit(opt.update)(grads, state, params)
  eager, _ = optim.path_sgd(0.1, network, (3,)).update(
      grads, optim.path_sgd(0.1, network, (3,)).init(params), params)
  for u, e in zip(jax.tree.leaves(updates), jax.tree.leaves(eager)):
    np.testing.assert_allclose(u, e, rtol=1e-6)
