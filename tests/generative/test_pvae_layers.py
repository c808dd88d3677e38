"""Tests of the gyroplane and Möbius layers: geometry, Euclidean limits, functional NNX use."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import optax
from flax import nnx

from tomioka_jax.generative import pvae


def _points(seed, n, d, c, max_radius=0.8):
  rng = np.random.default_rng(seed)
  e = rng.normal(size=(n, d))
  e /= np.linalg.norm(e, axis=1, keepdims=True)
  return jnp.asarray(e * max_radius * rng.uniform(size=(n, 1)) / np.sqrt(c))


def test_gyroplane_layer_is_a_weighted_signed_distance():
  with jax.enable_x64(True):
    c = 1.5
    layer = pvae.GyroplaneLayer(3, 4, c=c, rngs=nnx.Rngs(0))
    layer.w[...] = jnp.eye(4, 3, dtype=jnp.float64) * 1.7
    layer.b[...] = jnp.zeros(4)
    z = _points(0, 16, 3, c)
    out = layer(z)
    assert out.shape == (16, 4)
    # Plane through 0 with normal e_k: half the distance to the mirror image across {z_k = 0}.
    for k in range(3):
      mirror = z.at[:, k].multiply(-1.0)
      expected = 2 * 1.7 * jnp.sign(z[:, k]) * pvae.distance(z, mirror, c) / 2
      np.testing.assert_allclose(out[:, k], expected, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(out[:, 3], 0.0, atol=1e-12)  # a zero normal scores 0
    # A positive offset b moves the plane along w: points near p_k score about 0.
    layer.b[...] = jnp.full(4, 0.4)
    p0 = pvae.expmap0(jnp.array([0.4 * 1.7, 0.0, 0.0]), c)
    np.testing.assert_allclose(layer(p0)[0], 0.0, atol=1e-12)


def test_layers_tend_to_euclidean_affine_maps():
  with jax.enable_x64(True):
    c = 1e-8
    x = _points(1, 8, 3, 1.0)
    gyro = pvae.GyroplaneLayer(3, 5, c=c, rngs=nnx.Rngs(1))
    w, b = gyro.w[...], gyro.b[...]
    assert np.all(np.abs(b) > 0)  # planes off the origin at initialisation (reference init)
    # Signed Euclidean distance to the plane through b w with normal w, times 2 |w|, metric 4.
    expected = 4 * x @ w.T - 4 * (b * jnp.sum(w * w, axis=1))[None, :]
    np.testing.assert_allclose(gyro(x), expected, rtol=1e-5, atol=1e-7)
    mob = pvae.MobiusLayer(3, 2, c=c, rngs=nnx.Rngs(2))
    mob.bias[...] = jnp.array([0.3, -0.1])
    np.testing.assert_allclose(mob(x), x @ mob.kernel[...].T + mob.bias[...][None, :], rtol=1e-5,
                               atol=1e-7)


def test_mobius_layer_identity_and_stays_in_ball():
  with jax.enable_x64(True):
    c = 0.7
    layer = pvae.MobiusLayer(3, 3, c=c, rngs=nnx.Rngs(3))
    layer.kernel[...] = jnp.eye(3)
    layer.bias[...] = jnp.zeros(3)
    x = _points(2, 8, 3, c)
    np.testing.assert_allclose(layer(x), x, atol=1e-12)
  big = pvae.MobiusLayer(3, 4, c=2.0, rngs=nnx.Rngs(4))
  big.kernel[...] = 100.0 * big.kernel[...]
  y = big(_points(3, 8, 3, 2.0, 0.99).astype(jnp.float32))
  assert np.all(2.0 * np.sum(np.asarray(y) ** 2, -1) < 1.0)


def test_functional_nnx_step_has_finite_gradients():
  model = nnx.Sequential(pvae.MobiusLayer(2, 3, c=1.0, rngs=nnx.Rngs(5)),
                         pvae.GyroplaneLayer(3, 4, c=1.0, rngs=nnx.Rngs(6)))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)  # rest: the Curvature variables
  x = _points(4, 6, 2, 1.0).astype(jnp.float32)
  x = x.at[0].set(0.0)  # the origin is a valid input

  @jax.jit
  def loss(params):
    return jnp.sum(jnp.square(nnx.merge(graphdef, params, rest)(x)))

  grads = jax.grad(loss)(params)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_curvature_is_state_that_optimizer_updates_leave_alone():
  """c is a non-trainable Curvature variable: not in the Params, unchanged by optimiser steps."""
  model = nnx.Sequential(pvae.MobiusLayer(2, 3, c=0.7, rngs=nnx.Rngs(7)),
                         pvae.GyroplaneLayer(3, 4, c=0.7, rngs=nnx.Rngs(8)))
  is_var = lambda v: isinstance(v, nnx.Variable)
  assert not any(isinstance(v, pvae.Curvature)
                 for v in jax.tree.leaves(nnx.state(model, nnx.Param), is_leaf=is_var))
  x = _points(5, 6, 2, 0.7).astype(jnp.float32)
  optimizer = nnx.Optimizer(model, optax.sgd(0.5), wrt=nnx.Param)
  w_before = model.layers[1].w[...]

  @nnx.jit
  def step(model, optimizer):
    grads = nnx.grad(lambda m: jnp.sum(jnp.square(m(x))))(model)
    optimizer.update(model, grads)

  step(model, optimizer)
  assert not np.allclose(model.layers[1].w[...], w_before)  # the step did change the params
  for layer in model.layers:
    assert isinstance(layer.c, pvae.Curvature)
    np.testing.assert_array_equal(layer.c[...], np.float32(0.7))

  # A traced c: the layer can be vmapped over curvatures (it equals the per-c layers).
  @jax.jit
  def outputs(cs):
    layer = lambda c: pvae.GyroplaneLayer(2, 3, c=c, rngs=nnx.Rngs(9))(x)
    return jax.vmap(layer)(cs), jnp.stack([layer(0.3), layer(1.2)])

  vmapped, separate = outputs(jnp.array([0.3, 1.2]))
  np.testing.assert_allclose(vmapped, separate, rtol=1e-5, atol=1e-6)
  assert not np.allclose(separate[0], separate[1])


@pytest.mark.parametrize("cls", [pvae.GyroplaneLayer, pvae.MobiusLayer])
def test_bad_layer_arguments_raise(cls):
  with pytest.raises(ValueError, match="c must be"):
    cls(2, 3, c=0.0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="out_features must be a positive integer"):
    cls(2, 0, c=1.0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="c must be a scalar"):
    cls(2, 3, c=jnp.ones(2), rngs=nnx.Rngs(0))
