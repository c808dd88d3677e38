"""Tests of benchmarks/_nonuniform_numpy.py, the NumPy re-implementation of the reference's
certifier (forward bound + hand-written reverse pass) that ``benchmarks/nonuniform.py`` times
against ours: same bounds and certified margin as the JAX library, hand gradient against
``jax.grad`` and finite differences, and the same certified box after the same loop."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import _nonuniform_numpy as ref
from tomioka_jax.robust import _bounds as bounds
from tomioka_jax.robust import _nonuniform as nonuniform

D, H1, H2, K = 6, 12, 9, 4


def _network(rng, depth=2):
  widths = [D, H1, H2][:depth + 1] + [K]
  layers = []
  for k, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
    act = "identity" if k == len(widths) - 2 else "relu"
    layers.append((rng.normal(size=(a, b)) / np.sqrt(a), 0.3 * rng.normal(size=b), act))
  return layers


def _points(layers, rng, n=4):
  x = rng.normal(size=(n, D))
  y = np.argmax(np.asarray(bounds.apply_layers(layers, x)), -1)
  return x, y


@pytest.mark.parametrize("depth", [1, 2])
def test_bounds_and_certified_margin_equal_the_library(depth):
  rng = np.random.default_rng(depth)
  with jax.enable_x64(True):
    layers = _network(rng, depth)
    x, y = _points(layers, rng)
    np_layers = ref.as_numpy_layers(layers, np.float64)
    unstable = 0
    for scale in (1e-3, 0.05, 0.3, 2.0):  # from all-stable to mostly unstable ReLUs
      eps = scale * rng.uniform(0.2, 1.0, size=x.shape)
      low, up, tape = ref.bound(np_layers, x, eps)
      jl, ju = bounds.linear_bounds(layers, x - eps, x + eps)
      np.testing.assert_allclose(low, jl, rtol=1e-10, atol=1e-10)
      np.testing.assert_allclose(up, ju, rtol=1e-10, atol=1e-10)
      margin = ref.certified_margin(np_layers, x, y, eps)
      jm = nonuniform.certified_margin(layers, x, y, eps, method="logits")
      np.testing.assert_allclose(margin, jm, rtol=1e-5, atol=1e-5)
      np.testing.assert_allclose(margin, jm, rtol=1e-10, atol=1e-10)
      for l_k, u_k in tape.pre[:-1]:
        unstable += int(np.sum((l_k < 0) & (u_k > 0)))
    assert unstable > 0  # the relaxation (not only stable neurons) was exercised


def _jax_loss(layers, x0, y, eps, lam, beta, delta):
  lower, _ = bounds.margin_bounds(layers, x0 - eps, x0 + eps, y, method="logits")
  e = jnp.where(jnp.arange(K) != y, jnp.minimum(lower - delta, -lam / beta), 0.0)
  return -jnp.sum(jnp.log(eps)) + jnp.sum(lam * e) + beta / 2 * jnp.sum(e * e)


@pytest.mark.parametrize("depth", [1, 2])
def test_hand_gradient_equals_jax_grad_and_finite_differences(depth):
  rng = np.random.default_rng(10 + depth)
  with jax.enable_x64(True):
    layers = _network(rng, depth)
    x, y = _points(layers, rng, n=3)
    np_layers = ref.as_numpy_layers(layers, np.float64)
    eps = 1.2 * rng.uniform(0.2, 1.0, size=x.shape)
    delta, beta = 1e-4, 2.5
    # Some constraints violated beyond -lam / beta (they pull eps), some capped (inactive).
    low, up, _ = ref.bound(np_layers, x, eps)
    err = low[np.arange(3), y][:, None] - up - delta
    lam = beta * np.abs(err) * np.where((np.arange(K) + np.arange(3)[:, None]) % 2 == 0, 0.5,
                                        2.0)
    loss, e, g = ref.loss_and_grad(np_layers, x, y, eps, lam, beta, delta)
    active = (np.abs(e + lam / beta) > 1e-9) & (np.arange(K) != y[:, None])
    assert np.any(active) and np.any(~active & (np.arange(K) != y[:, None]))
    grad_fn = jax.grad(_jax_loss, argnums=3)
    for i in range(3):
      np.testing.assert_allclose(loss[i], _jax_loss(layers, x[i], y[i], eps[i], lam[i], beta,
                                                    delta), rtol=1e-12)
      np.testing.assert_allclose(g[i], grad_fn(layers, x[i], y[i], eps[i], lam[i], beta, delta),
                                 rtol=1e-8, atol=1e-8)
    # Central differences of the NumPy loss itself (the bounds are piecewise smooth in eps).
    h = 1e-7
    fd = np.zeros_like(eps)
    for j in range(D):
      step = np.zeros_like(eps)
      step[:, j] = h
      fd[:, j] = (ref.loss_and_grad(np_layers, x, y, eps + step, lam, beta, delta)[0]
                  - ref.loss_and_grad(np_layers, x, y, eps - step, lam, beta, delta)[0]) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-5)


def test_certifier_loop_equals_the_library():
  """Same schedule, same float64 trajectory: the same box, margin and shrink count."""
  rng = np.random.default_rng(3)
  with jax.enable_x64(True):
    layers = _network(rng, 2)
    x, y = _points(layers, rng, n=3)
    opts = nonuniform.CertifyOptions(iterations=60, learning_rate=2e-2, beta_every=20,
                                     beta_start=3, dual_every=4, batch_size=2)
    ours = nonuniform.certify_nonuniform(layers, x, y, opts)
    theirs = ref.certify_nonuniform(layers, x, y, opts, dtype=np.float64)
    assert np.all(np.asarray(ours.correct))
    np.testing.assert_allclose(theirs.eps, ours.eps, rtol=1e-7)
    np.testing.assert_allclose(theirs.log_volume, ours.log_volume, rtol=1e-9)
    np.testing.assert_allclose(theirs.margin, ours.margin, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(theirs.shrink_steps, ours.shrink_steps)
    assert np.all(theirs.margin >= opts.delta)
    assert np.all(theirs.eps > 3 * opts.eps_init)  # the loop moved the box
    # One point at a time (as the benchmark times it) is the same as the batch.
    one = ref.certify_nonuniform(layers, x[1:2], y[1:2], opts, dtype=np.float64)
    np.testing.assert_allclose(one.eps[0], theirs.eps[1], rtol=1e-12)


def test_unsupported_networks_and_bounds_raise():
  rng = np.random.default_rng(0)
  layers = _network(rng, 1)
  x, y = _points(layers, rng, n=1)
  with pytest.raises(ValueError, match="options.method must be 'logits'"):
    ref.certify_nonuniform(layers, x, y, nonuniform.CertifyOptions(method="margin"))
  tanh = [layers[0][:2] + ("tanh",), layers[1]]
  with pytest.raises(ValueError, match="activation='tanh'"):
    ref.certify_nonuniform(tanh, x, y, dataclasses.replace(nonuniform.REFERENCE_OPTIONS))
