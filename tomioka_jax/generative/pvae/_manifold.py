"""The Poincaré ball of curvature -c: gyrovector operations, exp/log maps, transport, distance.

"Continuous Hierarchical Representations with Poincaré Variational Auto-Encoders", Emile Mathieu,
Charline Le Lan, Chris J. Maddison, Ryota Tomioka, Yee Whye Teh, 2019, arXiv:1901.06033.

The latent space of the P-VAE is the ball ``B_c^d = {x : c |x|^2 < 1}`` with metric
``lambda_x^2 I``, ``lambda_x = 2 / (1 - c |x|^2)`` (sectional curvature ``-c``). This module gives
its geometry (Section 2 and Appendix B of the paper) as pure functions over the last axis that
broadcast over leading axes: Möbius addition and scalar multiplication, exp/log maps, parallel
transport, geodesic distance, the signed distance to a gyroplane, and projection into the ball.

Conventions and numerics:

* Points are arrays ``(..., d)``; tangent vectors are given in the ambient (Euclidean) coordinates.
  The geodesic distance is ``d_c(x, y) = (2 / sqrt(c)) artanh(sqrt(c) |(-x) (+) y|)``, so that
  ``d_c(x, y) -> 2 |x - y|`` as ``c -> 0`` (the metric is ``4 |dx|^2`` at ``c = 0``).
* ``tanh(x)/x`` and ``artanh(x)/x`` are evaluated as functions of ``x^2`` with a Taylor branch near 0
  (and the double-``where`` trick), so values *and gradients* are finite at the origin and at
  ``x = y``.
* Exp maps and Möbius operations project their output to the closed ball of radius
  ``(1 - eps) / sqrt(c)`` (``eps`` = 4e-3 in float32, 1e-5 in float64), since ``tanh`` rounds to 1
  in finite precision; ``artanh`` arguments are clipped to the same margin.
* Input checks: ``c`` is checked (``ValueError`` if not ``> 0``) whenever it is concrete, i.e. a
  Python number or a concrete array; under ``jit`` a traced ``c`` is not checked. Points are not
  checked by the primitives (that would force a device sync on every call); they are clipped as
  above. :func:`check_in_ball` raises for concrete points outside the ball and is called by the
  distributions' constructors.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike


def boundary_eps(dtype) -> float:
  """The relative margin kept from the ball's boundary: 4e-3 in float32 (and below), 1e-5 in float64."""
  return 1e-5 if jnp.dtype(dtype) == jnp.float64 else 4e-3


def check_curvature(c: ArrayLike) -> None:
  """Raise ``ValueError`` if a concrete ``c`` is not a finite positive number (tracers pass)."""
  if isinstance(c, jax.core.Tracer):
    return
  arr = np.asarray(c)
  if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
    raise ValueError(f"c must be a finite curvature magnitude > 0 (the ball has curvature -c), "
                     f"got c={c}")


def check_in_ball(x: ArrayLike, c: ArrayLike, name: str = "x") -> None:
  """Raise ``ValueError`` if a concrete ``x`` has a point with ``c |x|^2 >= 1`` (tracers pass)."""
  check_curvature(c)
  if isinstance(x, jax.core.Tracer) or isinstance(c, jax.core.Tracer):
    return
  sq = np.asarray(c) * np.sum(np.square(np.asarray(x, np.float64)), axis=-1)
  if not np.all(np.isfinite(sq)) or np.any(sq >= 1.0):
    worst = float(np.nanmax(np.where(np.isfinite(sq), sq, np.inf)))
    raise ValueError(f"{name} must lie inside the Poincaré ball (c * |{name}|^2 < 1), got "
                     f"max c * |{name}|^2 = {worst:.6g}")


_SMALL_EVENT = 4  # event sizes up to this are summed by a matrix-vector product (event_sum)


def event_sum(x: jax.Array) -> jax.Array:
  """Sum over the last (event) axis.

  For a short axis (the ball's dimension is often 2) the sum is a product with a vector of
  ones: XLA:CPU runs a reduce over a size-2 minor axis as its own strided loop, ~4x slower per
  row than the product. (Writing it as ``x[..., 0] + x[..., 1]`` is faster still in isolation,
  but XLA then duplicates the fused producer of ``x`` into every slice, which compounds through
  nested Möbius operations: 9x slower gyroplane decoders.) Same value up to rounding, same
  derivatives.
  """
  d = x.shape[-1]
  if d > _SMALL_EVENT:
    return jnp.sum(x, axis=-1)
  return jnp.matmul(x, jnp.ones((d,), x.dtype))


def dot(x: jax.Array, y: jax.Array) -> jax.Array:
  return event_sum(x * y)


def sq_norm(x: jax.Array) -> jax.Array:
  return event_sum(jnp.square(x))


def safe_norm(x: jax.Array) -> jax.Array:
  """|x| with gradient 0 (a subgradient) instead of NaN at x = 0."""
  sq = sq_norm(x)
  positive = sq > jnp.finfo(sq.dtype).tiny
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def _tanh_ratio(x2: jax.Array) -> jax.Array:
  """tanh(x) / x as a function of x^2 >= 0, smooth (and exact to rounding) at 0."""
  small = x2 < jnp.finfo(x2.dtype).eps
  x = jnp.sqrt(jnp.where(small, 1.0, x2))
  return jnp.where(small, 1.0 - x2 / 3.0, jnp.tanh(x) / x)


def _artanh_ratio(x2: jax.Array) -> jax.Array:
  """artanh(x) / x as a function of x^2, with x clipped below 1 - eps."""
  limit = (1.0 - boundary_eps(x2.dtype)) ** 2
  x2 = jnp.minimum(x2, limit)
  small = x2 < jnp.finfo(x2.dtype).eps
  x = jnp.sqrt(jnp.where(small, 1.0, x2))
  return jnp.where(small, 1.0 + x2 / 3.0, jnp.arctanh(x) / x)


def _as_arrays(*xs: ArrayLike) -> list[jax.Array]:
  arrays = [jnp.asarray(x) for x in xs]
  dtype = jnp.result_type(*arrays, 0.0)
  return [a.astype(dtype) for a in arrays]


def project(x: ArrayLike, c: ArrayLike) -> jax.Array:
  """Radially clip points to the ball of radius ``(1 - eps) / sqrt(c)`` (a float-safe margin).

  Args:
    x: points (..., d); may lie outside the ball.
    c: curvature magnitude, > 0.

  Returns:
    ``x`` where it is inside the margin, else ``x`` rescaled onto it.

  Example:
    >>> [round(float(v), 4) for v in project(jnp.array([2.0, 0.0]), 1.0)]
    [0.996, 0.0]
  """
  check_curvature(c)
  x, c = _as_arrays(x, c)
  max_norm = (1.0 - boundary_eps(x.dtype)) / jnp.sqrt(c)
  norm = safe_norm(x)
  scale = jnp.where(norm > max_norm, max_norm / jnp.where(norm > 0, norm, 1.0), 1.0)
  return scale[..., None] * x


def conformal_factor(x: ArrayLike, c: ArrayLike) -> jax.Array:
  """``lambda_x^c = 2 / (1 - c |x|^2)``, the metric's conformal factor (shape ``x.shape[:-1]``)."""
  check_curvature(c)
  x, c = _as_arrays(x, c)
  floor = boundary_eps(x.dtype)
  return 2.0 / jnp.maximum(1.0 - c * sq_norm(x), floor)


def mobius_add(x: ArrayLike, y: ArrayLike, c: ArrayLike) -> jax.Array:
  """Möbius addition ``x (+)_c y``.

  .. math::  x \\oplus_c y = \\frac{(1 + 2c\\langle x,y\\rangle + c|y|^2)\\,x + (1 - c|x|^2)\\,y}
     {1 + 2c\\langle x,y\\rangle + c^2 |x|^2 |y|^2}

  Not commutative nor associative, but ``(-x) (+) (x (+) y) = y`` (left cancellation).

  Args:
    x, y: points (..., d) of equal rank.
    c: curvature magnitude, > 0.

  Returns:
    ``x (+)_c y``, projected into the ball.

  References:
    Ungar (2008), "A gyrovector space approach to hyperbolic geometry"; paper eq. (B.1).
  """
  check_curvature(c)
  x, y, c = _as_arrays(x, y, c)
  xy, x2, y2 = dot(x, y), sq_norm(x), sq_norm(y)
  num = (1.0 + 2.0 * c * xy + c * y2)[..., None] * x + (1.0 - c * x2)[..., None] * y
  den = 1.0 + 2.0 * c * xy + c * c * x2 * y2
  den = jnp.maximum(den, jnp.finfo(den.dtype).eps)
  return project(num / den[..., None], c)


def expmap0(v: ArrayLike, c: ArrayLike) -> jax.Array:
  """Exponential map at the origin: ``tanh(sqrt(c)|v|) v / (sqrt(c)|v|)``, projected."""
  check_curvature(c)
  v, c = _as_arrays(v, c)
  return project(_tanh_ratio(c * sq_norm(v))[..., None] * v, c)


def logmap0(y: ArrayLike, c: ArrayLike) -> jax.Array:
  """Logarithmic map at the origin: ``artanh(sqrt(c)|y|) y / (sqrt(c)|y|)``."""
  check_curvature(c)
  y, c = _as_arrays(y, c)
  return _artanh_ratio(c * sq_norm(y))[..., None] * y


def mobius_add_expmap0_coefficients(x2: ArrayLike, xv: ArrayLike, v2: ArrayLike,
                                    c: ArrayLike) -> tuple[jax.Array, jax.Array]:
  """Scalars ``(a, b)`` with ``x (+)_c exp_0^c(v) = a x + b v``, from three inner products.

  Both operands of the sum lie in span{x, v}: ``exp_0(v) = beta v`` with ``beta = tanh(sqrt(c)
  |v|) / (sqrt(c) |v|)`` (times the projection factor of :func:`expmap0`), and by
  :func:`mobius_add`

  .. math::  x \\oplus_c \\beta v = a x + b v,\\quad
     a = \\frac{1 + 2c\\beta\\langle x,v\\rangle + c\\beta^2|v|^2}{D},\\quad
     b = \\frac{(1 - c|x|^2)\\,\\beta}{D},\\quad
     D = 1 + 2c\\beta\\langle x,v\\rangle + c^2\\beta^2|x|^2|v|^2

  with ``|a x + b v|^2 = a^2 |x|^2 + 2ab<x, v> + b^2 |v|^2`` for the final projection into the
  ball. Both projections of ``mobius_add(x, expmap0(v, c), c)`` are applied, so the two agree
  to rounding; but per point this is scalar work only, where the composition makes five passes
  over the (..., d) arrays (three inner products, two norms) and four vector-valued
  intermediates.

  Args:
    x2: ``|x|^2``, any shape.
    xv: ``<x, v>``, broadcastable against ``x2``.
    v2: ``|v|^2``, broadcastable against ``x2``.
    c: curvature magnitude, > 0.

  Returns:
    ``(a, b)``, with the broadcast shape of the inputs.
  """
  check_curvature(c)
  x2, xv, v2, c = _as_arrays(x2, xv, v2, c)
  max_sq = (1.0 - boundary_eps(v2.dtype)) ** 2 / c
  # exp_0(v) = t v, projected onto the ball's margin where |t v| lies beyond it (as project()).
  t = _tanh_ratio(c * v2)
  y2 = jnp.square(t) * v2
  beyond = y2 > max_sq
  beta = t * jnp.where(beyond, jnp.sqrt(max_sq / jnp.where(beyond, y2, 1.0)), 1.0)
  y2 = jnp.where(beyond, max_sq, y2)
  xy = beta * xv
  inv_den = 1.0 / jnp.maximum(1.0 + 2.0 * c * xy + c * c * x2 * y2, jnp.finfo(y2.dtype).eps)
  a = (1.0 + 2.0 * c * xy + c * y2) * inv_den
  b = (1.0 - c * x2) * beta * inv_den
  z2 = jnp.maximum(jnp.square(a) * x2 + 2.0 * a * b * xv + jnp.square(b) * v2, 0.0)
  beyond = z2 > max_sq
  shrink = jnp.where(beyond, jnp.sqrt(max_sq / jnp.where(beyond, z2, 1.0)), 1.0)
  return a * shrink, b * shrink


def mobius_add_expmap0(x: ArrayLike, v: ArrayLike, c: ArrayLike) -> jax.Array:
  """``x (+)_c exp_0^c(v)``, the same point as ``mobius_add(x, expmap0(v, c), c)``, cheaper.

  Equal to ``exp_x(P_{0->x}(v))``, the exponential map at ``x`` of the tangent vector ``v`` at
  the origin transported to ``x``; the wrapped and Riemannian normals sample
  ``x (+) exp_0(u / 2) = exp_x(P_{0->x}(u / lambda_0))``, at geodesic distance ``|u|`` from
  ``x``. Computed as ``a x + b v`` (:func:`mobius_add_expmap0_coefficients`).

  Args:
    x: points (..., d) in the ball.
    v: tangent vectors at the origin (..., d), of the same rank.
    c: curvature magnitude, > 0.

  Returns:
    Points (..., d), projected into the ball, at geodesic distance ``2 |v|`` from ``x`` (before
    projection).
  """
  check_curvature(c)
  x, v, c = _as_arrays(x, v, c)
  a, b = mobius_add_expmap0_coefficients(sq_norm(x), dot(x, v), sq_norm(v), c)
  return a[..., None] * x + b[..., None] * v


def expmap(x: ArrayLike, v: ArrayLike, c: ArrayLike) -> jax.Array:
  """Exponential map at ``x``: the endpoint of the unit-time geodesic from ``x`` with velocity ``v``.

  .. math::  \\exp_x^c(v) = x \\oplus_c \\Big(\\tanh\\big(\\sqrt{c}\\,\\lambda_x^c |v| / 2\\big)
     \\frac{v}{\\sqrt{c}|v|}\\Big) = x \\oplus_c \\exp_0^c(\\lambda_x^c v / 2)

  Args:
    x: base points (..., d).
    v: tangent vectors at ``x`` (..., d), ambient coordinates.
    c: curvature magnitude, > 0.

  Returns:
    Points (..., d) with ``d_c(x, exp_x(v)) = lambda_x |v|``.

  Example:
    >>> x = jnp.array([0.3, 0.1]); v = jnp.array([0.5, -1.0])
    >>> logmap(x, expmap(x, v, 1.0), 1.0).round(4)  # v again
    Array([ 0.5, -1. ], dtype=float32)

  References:
    Ganea, Bécigneul, Hofmann (2018), "Hyperbolic neural networks", Lemma 2; paper eq. (B.4).
  """
  check_curvature(c)
  x, v, c = _as_arrays(x, v, c)
  lam = conformal_factor(x, c)
  return mobius_add(x, expmap0(0.5 * lam[..., None] * v, c), c)


def logmap(x: ArrayLike, y: ArrayLike, c: ArrayLike) -> jax.Array:
  """Logarithmic map at ``x``, the inverse of :func:`expmap`.

  .. math::  \\log_x^c(y) = \\frac{2}{\\lambda_x^c} \\log_0^c\\big((-x) \\oplus_c y\\big)
  """
  check_curvature(c)
  x, y, c = _as_arrays(x, y, c)
  lam = conformal_factor(x, c)
  return (2.0 / lam)[..., None] * logmap0(mobius_add(-x, y, c), c)


def distance(x: ArrayLike, y: ArrayLike, c: ArrayLike) -> jax.Array:
  """Geodesic distance ``d_c(x, y) = (2/sqrt(c)) artanh(sqrt(c) |(-x) (+)_c y|)``.

  Tends to ``2 |x - y|`` as ``c -> 0``. The gradient at ``x = y`` is 0 (a subgradient), not NaN.

  Args:
    x, y: points (..., d) of equal rank.
    c: curvature magnitude, > 0.

  Returns:
    Distances, shape of the broadcast leading axes.
  """
  check_curvature(c)
  x, y, c = _as_arrays(x, y, c)
  n = safe_norm(mobius_add(-x, y, c))
  return 2.0 * n * _artanh_ratio(c * n * n)


def distance0(x: ArrayLike, c: ArrayLike) -> jax.Array:
  """Distance to the origin, ``(2/sqrt(c)) artanh(sqrt(c) |x|)``."""
  check_curvature(c)
  x, c = _as_arrays(x, c)
  n = safe_norm(x)
  return 2.0 * n * _artanh_ratio(c * n * n)


def mobius_scalar_mul(r: ArrayLike, x: ArrayLike, c: ArrayLike) -> jax.Array:
  """Möbius scalar multiplication ``r (x)_c x = tanh(r artanh(sqrt(c)|x|)) x / (sqrt(c)|x|)``.

  Equal to ``exp0(r log0(x))``; ``r`` is a scalar or has shape ``x.shape[:-1]``.
  """
  check_curvature(c)
  r, x, c = _as_arrays(r, x, c)
  if r.ndim:
    r = r[..., None]
  return expmap0(r * logmap0(x, c), c)


def mobius_matvec(m: ArrayLike, x: ArrayLike, c: ArrayLike) -> jax.Array:
  """Möbius matrix-vector product ``M (x)_c x = exp0(M log0(x))`` for ``m`` of shape (d_out, d_in).

  References:
    Ganea, Bécigneul, Hofmann (2018), "Hyperbolic neural networks", eq. (26).
  """
  check_curvature(c)
  m, x, c = _as_arrays(m, x, c)
  return expmap0(logmap0(x, c) @ m.T, c)


def gyration(u: ArrayLike, v: ArrayLike, w: ArrayLike, c: ArrayLike) -> jax.Array:
  """The gyration ``gyr[u, v] w = -(u (+) v) (+) (u (+) (v (+) w))``, in closed form.

  Linear in ``w`` (so ``w`` may be any tangent vector) and an isometry of the Euclidean norm.

  .. math::  \\mathrm{gyr}[u,v]w = w + 2\\frac{A u + B v}{D},\\quad
     A = -c^2\\langle u,w\\rangle|v|^2 + c\\langle v,w\\rangle + 2c^2\\langle u,v\\rangle
     \\langle v,w\\rangle,\\quad B = -c^2\\langle v,w\\rangle|u|^2 - c\\langle u,w\\rangle,\\quad
     D = 1 + 2c\\langle u,v\\rangle + c^2|u|^2|v|^2
  """
  check_curvature(c)
  u, v, w, c = _as_arrays(u, v, w, c)
  uw, vw, uv = dot(u, w), dot(v, w), dot(u, v)
  u2, v2 = sq_norm(u), sq_norm(v)
  a = -c * c * uw * v2 + c * vw + 2.0 * c * c * uv * vw
  b = -c * c * vw * u2 - c * uw
  d = jnp.maximum(1.0 + 2.0 * c * uv + c * c * u2 * v2, jnp.finfo(u2.dtype).eps)
  return w + 2.0 * (a / d)[..., None] * u + 2.0 * (b / d)[..., None] * v


def parallel_transport(x: ArrayLike, y: ArrayLike, v: ArrayLike, c: ArrayLike) -> jax.Array:
  """Parallel transport of ``v`` in ``T_x`` to ``T_y`` along the geodesic.

  .. math::  P_{x \\to y}(v) = \\frac{\\lambda_x^c}{\\lambda_y^c}\\,\\mathrm{gyr}[y, -x]\\,v

  Preserves the Riemannian norm ``lambda |v|`` (and inner products).

  References:
    Ungar (2008); paper eq. (B.5).
  """
  check_curvature(c)
  x, y, v, c = _as_arrays(x, y, v, c)
  ratio = conformal_factor(x, c) / conformal_factor(y, c)
  return ratio[..., None] * gyration(y, -x, v, c)


def parallel_transport0(y: ArrayLike, v: ArrayLike, c: ArrayLike) -> jax.Array:
  """Parallel transport from the origin to ``y``: ``(2 / lambda_y) v = (1 - c|y|^2) v``."""
  check_curvature(c)
  y, v, c = _as_arrays(y, v, c)
  return (2.0 / conformal_factor(y, c))[..., None] * v


def parallel_transport_to0(x: ArrayLike, v: ArrayLike, c: ArrayLike) -> jax.Array:
  """Parallel transport from ``x`` to the origin: ``(lambda_x / 2) v``."""
  check_curvature(c)
  x, v, c = _as_arrays(x, v, c)
  return (0.5 * conformal_factor(x, c))[..., None] * v


def riemannian_norm(x: ArrayLike, v: ArrayLike, c: ArrayLike) -> jax.Array:
  """The norm of the tangent vector ``v`` at ``x``: ``lambda_x |v|``."""
  check_curvature(c)
  x, v, c = _as_arrays(x, v, c)
  return conformal_factor(x, c) * safe_norm(v)


def gyroplane_distance(z: ArrayLike, p: ArrayLike, a: ArrayLike, c: ArrayLike) -> jax.Array:
  """Signed distance from ``z`` to the gyroplane through ``p`` with normal ``a`` (in ``T_p``).

  .. math::  d_c^{\\pm}(z, H_{a,p}) = \\frac{1}{\\sqrt c}\\,\\mathrm{asinh}\\Big(
     \\frac{2\\sqrt c\\,\\langle (-p)\\oplus_c z,\\, a\\rangle}{(1 - c|(-p)\\oplus_c z|^2)\\,|a|}\\Big)

  The building block of hyperbolic multinomial regression and of the paper's gyroplane decoder
  layer (eq. 12).

  References:
    Ganea, Bécigneul, Hofmann (2018), "Hyperbolic neural networks", Theorem 5; paper eq. (12).
  """
  check_curvature(c)
  z, p, a, c = _as_arrays(z, p, a, c)
  diff = mobius_add(-p, z, c)
  sqrt_c = jnp.sqrt(c)
  floor = boundary_eps(diff.dtype)
  a_norm = jnp.maximum(safe_norm(a), jnp.finfo(diff.dtype).eps)  # tiny underflows below
  arg = 2.0 * sqrt_c * dot(diff, a) / (jnp.maximum(1.0 - c * sq_norm(diff), floor) * a_norm)
  return jnp.arcsinh(arg) / sqrt_c


def gyroplane_distances(z: ArrayLike, p: ArrayLike, a: ArrayLike, c: ArrayLike) -> jax.Array:
  """Signed distances from points ``z`` (..., d) to K gyroplanes: ``p``, ``a`` of shape (K, d).

  The values of :func:`gyroplane_distance` for every (point, plane) pair, shape (..., K), but
  computed from the inner products ``<z, p_k>``, ``<z, a_k>`` (two matrix products) and ``|z|^2``
  instead of forming each Möbius sum ``(-p_k) (+) z``: with ``A = 1 - 2c<p,z> + c|z|^2``,
  ``B = 1 - c|p|^2`` and ``D = 1 - 2c<p,z> + c^2 |p|^2 |z|^2``, ``(-p) (+) z = (B z - A p) / D``,
  so

  .. math::  \\langle (-p)\\oplus_c z, a\\rangle
     = \\frac{B\\langle z,a\\rangle - A\\langle p,a\\rangle}{D}, \\qquad
     |(-p)\\oplus_c z|^2 = \\frac{A^2|p|^2 - 2AB\\langle p,z\\rangle + B^2|z|^2}{D^2}

  with the same projection into the ball as :func:`mobius_add`. Much smaller programs (and
  faster ones) than broadcasting :func:`gyroplane_distance` over (..., K, d) for a layer of
  many planes.
  """
  check_curvature(c)
  z, p, a, c = _as_arrays(z, p, a, c)
  # Full-precision products (accelerators may otherwise round the inputs to bfloat16).
  zp, za = (jnp.matmul(z, m.T, precision=jax.lax.Precision.HIGHEST) for m in (p, a))
  shape = zp.shape
  z2 = jnp.broadcast_to(sq_norm(z)[..., None], shape)
  p2, pa = jnp.broadcast_to(sq_norm(p), shape), jnp.broadcast_to(dot(p, a), shape)
  big_a = 1.0 - 2.0 * c * zp + c * z2
  big_b = 1.0 - c * p2
  den = jnp.maximum(1.0 - 2.0 * c * zp + c * c * p2 * z2, jnp.finfo(zp.dtype).eps)
  dot_a = (big_b * za - big_a * pa) / den
  sq = jnp.maximum(jnp.square(big_a) * p2 - 2.0 * big_a * big_b * zp + jnp.square(big_b) * z2,
                   0.0) / jnp.square(den)
  # project(): radially onto the ball of radius (1 - eps) / sqrt(c) where the sum lies beyond it.
  max_sq = (1.0 - boundary_eps(zp.dtype)) ** 2 / c
  beyond = sq > max_sq
  dot_a = jnp.where(beyond, jnp.sqrt(max_sq / jnp.where(beyond, sq, 1.0)), 1.0) * dot_a
  sq = jnp.where(beyond, max_sq, sq)
  sqrt_c = jnp.sqrt(c)
  floor = boundary_eps(zp.dtype)
  a_norm = jnp.broadcast_to(jnp.maximum(safe_norm(a), jnp.finfo(zp.dtype).eps), shape)
  arg = 2.0 * sqrt_c * dot_a / (jnp.maximum(1.0 - c * sq, floor) * a_norm)
  return jnp.arcsinh(arg) / sqrt_c
