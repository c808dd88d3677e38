"""Hyperbolic layers of the P-VAE decoder: the gyroplane layer and the Möbius linear layer.

"Continuous Hierarchical Representations with Poincaré Variational Auto-Encoders", Emile Mathieu,
Charline Le Lan, Chris J. Maddison, Ryota Tomioka, Yee Whye Teh, 2019, arXiv:1901.06033.

Flax NNX modules that read points of the Poincaré ball: :class:`GyroplaneLayer` (the decoder's
first layer, paper eq. 12, i.e. hyperbolic multinomial regression) maps a point to its signed,
norm-weighted distances to ``out_features`` gyroplanes, and :class:`MobiusLayer` is the Möbius
version of an affine map, ``(W (x) x) (+) b`` (Ganea et al. 2018). Both tend to Euclidean affine
maps as ``c -> 0``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import ArrayLike

from tomioka_jax.generative.pvae import _manifold as manifold


class Curvature(nnx.Variable):
  """The ball's curvature magnitude ``c``: module state, not a trained parameter.

  Not an ``nnx.Param``, so ``nnx.split(module, nnx.Param, ...)`` and ``nnx.Optimizer(...,
  wrt=nnx.Param)`` leave it alone; being an array (not a Python float) it can be a traced value,
  so a model can be ``vmap``-ed over curvatures.
  """


def _curvature(c: ArrayLike) -> Curvature:
  manifold.check_curvature(c)
  if jnp.ndim(c) != 0:
    raise ValueError(f"c must be a scalar, got shape {jnp.shape(c)}")
  return Curvature(jnp.asarray(c, jnp.result_type(c, float)))


def _check_features(**features: int) -> None:
  for name, value in features.items():
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"{name} must be a positive integer, got {name}={value}")


class GyroplaneLayer(nnx.Module):
  """Signed distances to learned gyroplanes, weighted by the normals' Riemannian norms.

  Unit ``k`` has a direction ``w_k`` and a scalar offset ``b_k``; its plane passes through
  ``p_k = exp_0(b_k w_k)`` with normal ``a_k = P_{0 -> p_k}(w_k)``, and (paper eq. 12)

  .. math::  f_k(z) = \\|a_k\\|_{p_k}\\, d_c^{\\pm}(z, H_{a_k, p_k}),
     \\qquad \\|a_k\\|_{p_k} = \\lambda_{p_k}^c |a_k| = 2 |w_k|

  with the signed distance of :func:`~tomioka_jax.generative.pvae._manifold.gyroplane_distance`.
  As ``c -> 0`` it tends to the affine map ``z -> 4 W z - 4 b |w|^2`` (the metric is
  ``4|dx|^2`` there; ``p_k -> b_k w_k``).

  Args:
    in_features: the ball's dimension d.
    out_features: number of gyroplanes K.
    c: curvature magnitude > 0, a scalar (may be traced); kept as a non-trainable
      :class:`Curvature` variable.
    rngs: ``nnx.Rngs`` for initialisation (``w`` ~ N(0, 1/(3d)), ``b`` ~ U(-4/sqrt(d),
      4/sqrt(d)), as the reference code's ``GeodesicLayer``).

  Example:
    >>> layer = GyroplaneLayer(2, 8, c=1.0, rngs=nnx.Rngs(0))
    >>> layer(jnp.array([[0.1, -0.2]])).shape
    (1, 8)
  """

  def __init__(self, in_features: int, out_features: int, *, c: ArrayLike = 1.0,
               rngs: nnx.Rngs):
    _check_features(in_features=in_features, out_features=out_features)
    self.c = _curvature(c)
    # As the reference code: w ~ N(0, 1/(3d)) (PyTorch's kaiming_normal with a = sqrt(5)) and
    # offsets b ~ U(-4/sqrt(d), 4/sqrt(d)), so that the planes start spread over the ball
    # (with b = 0 they would all pass through the origin).
    std = 1.0 / jnp.sqrt(3.0 * in_features)
    w_key, b_key = rngs.params(), rngs.params()
    self.w = nnx.Param(std * jax.random.normal(w_key, (out_features, in_features)))
    bound = 4.0 / jnp.sqrt(in_features)
    self.b = nnx.Param(jax.random.uniform(b_key, (out_features,), minval=-bound, maxval=bound))

  def __call__(self, z: ArrayLike) -> jax.Array:
    """Map points ``z`` (..., d) to ``(..., K)`` signed weighted distances."""
    z = jnp.asarray(z)
    w, b, c = self.w[...], self.b[...], self.c[...]
    p = manifold.expmap0(b[:, None] * w, c)
    a = manifold.parallel_transport0(p, w, c)
    # gyroplane_distance for every (point, plane) pair, through inner products.
    dist = manifold.gyroplane_distances(z, p, a, c)
    weight = manifold.riemannian_norm(p, a, c)
    return jnp.broadcast_to(weight, dist.shape) * dist


class MobiusLayer(nnx.Module):
  """Möbius affine layer ``x -> (W (x)_c x) (+)_c exp_0(b)`` between Poincaré balls.

  ``W (x)_c x = exp_0(W log_0 x)`` (Ganea et al. 2018, eq. 26); the bias is parametrised in the
  tangent space at the origin so it is unconstrained. Tends to ``W x + b`` as ``c -> 0``.

  Args:
    in_features, out_features: dimensions of the input and output balls.
    c: curvature magnitude > 0, a scalar (may be traced); kept as a non-trainable
      :class:`Curvature` variable.
    rngs: ``nnx.Rngs`` for initialisation (``W`` ~ N(0, 1/in), ``b`` = 0).

  Example:
    >>> layer = MobiusLayer(2, 3, c=1.0, rngs=nnx.Rngs(0))
    >>> layer(jnp.array([[0.1, -0.2]])).shape  # inside the ball
    (1, 3)
  """

  def __init__(self, in_features: int, out_features: int, *, c: ArrayLike = 1.0,
               rngs: nnx.Rngs):
    _check_features(in_features=in_features, out_features=out_features)
    self.c = _curvature(c)
    std = 1.0 / jnp.sqrt(in_features)
    self.kernel = nnx.Param(std * jax.random.normal(rngs.params(), (out_features, in_features)))
    self.bias = nnx.Param(jnp.zeros((out_features,)))

  def __call__(self, x: ArrayLike) -> jax.Array:
    """Map points ``x`` (..., in_features) to points (..., out_features) of the ball."""
    x = jnp.asarray(x)
    c = self.c[...]
    mx = manifold.mobius_matvec(self.kernel[...], x, c)
    bias = jnp.broadcast_to(manifold.expmap0(self.bias[...], c), mx.shape)
    return manifold.mobius_add(mx, bias, c)
