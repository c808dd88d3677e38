"""Tests of the classifier recipe on the scan trainer against a step-by-step reference."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tomioka_jax import core
from tomioka_jax import optim


def _data():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(40, 5)).astype(np.float32)
  return {"x": x, "y": (x[:, 0] > 0).astype(np.int32)}


def test_classifier_trainer_equals_a_python_loop():
  train, test = _data(), _data()
  model = core.MLP(5, (8,), 2, rngs=nnx.Rngs(0))
  network, params = optim.nnx_network(model)
  opt = optax.sgd(0.1)
  run = core.make_classifier_trainer(model, opt, train, test, batch_size=16, epochs=2)
  key = jax.random.key(3)
  final, metrics = run(params, key)
  assert sorted(metrics) == ["test_err", "train_ce", "train_err"]
  assert metrics["train_ce"].shape == (2,)

  def loss(p, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(network(p, x), y).mean()

  p, state = params, opt.init(params)
  for k in jax.random.split(key, 2):
    order = np.asarray(jax.random.permutation(k, 40))[:32].reshape(2, 16)
    for idx in order:
      updates, state = opt.update(jax.grad(loss)(p, train["x"][idx], train["y"][idx]), state, p)
      p = optax.apply_updates(p, updates)
  for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(p)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  logits = network(p, jnp.asarray(train["x"]))
  np.testing.assert_allclose(metrics["train_err"][-1],
                             np.mean(np.argmax(logits, -1) != train["y"]), atol=1e-7)


def test_classifier_trainer_bad_arguments():
  model = core.MLP(5, (8,), 2, rngs=nnx.Rngs(0))
  _, params = optim.nnx_network(model)
  with pytest.raises(ValueError, match="batch_size must be a positive integer, got batch_size=0"):
    core.make_classifier_trainer(model, optax.sgd(0.1), _data(), _data(), batch_size=0,
                                 epochs=1)
  run = core.make_classifier_trainer(model, optax.sgd(0.1), _data(), _data(), batch_size=64,
                                     epochs=1)
  with pytest.raises(ValueError, match="batch_size=64 exceeds the 40 training examples"):
    run(params, jax.random.key(0))
