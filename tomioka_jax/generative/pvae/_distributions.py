"""Normal distributions on the Poincaré ball: the wrapped normal and the Riemannian normal.

"Continuous Hierarchical Representations with Poincaré Variational Auto-Encoders", Emile Mathieu,
Charline Le Lan, Chris J. Maddison, Ryota Tomioka, Yee Whye Teh, 2019, arXiv:1901.06033.

Both generalisations of the Gaussian used by the P-VAE (Section 3) as ``distrax.Distribution``
subclasses whose ``log_prob`` is a density with respect to the Riemannian volume measure of the
ball: :class:`WrappedNormal` (push-forward of a diagonal Gaussian in the tangent space at the origin,
transported to ``loc`` and mapped by ``exp``) and :class:`RiemannianNormal` (the maximum-entropy
density ``exp(-d_c(loc, z)^2 / 2 sigma^2) / Z``), with its exact normaliser and a reparameterised
radius sampler whose gradients come from the implicit function theorem.
"""

from __future__ import annotations

import functools
import math

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero
from jax.typing import ArrayLike
from scipy import special

from tomioka_jax import core
from tomioka_jax.generative.pvae import _manifold as manifold

_MAX_NEWTON_STEPS = 40  # safeguarded Newton: a cap, typically 4-8 steps are taken
_TABLE_NODES = 257  # quantile-table nodes per distinct (sigma, c)
_TABLE_Z = 8.5  # the table spans z in [-8.5, 8.5] (float64 normals stay within 8.3)
_TABLE_MIN_RATIO = 2  # tabulate when samples >= 2 * nodes * distinct (sigma, c)
_JACOBI_NODES = 8  # Gauss-Jacobi nodes of the CDF near r = 0


def _check_scale(scale: ArrayLike, name: str = "scale") -> None:
  if isinstance(scale, jax.core.Tracer):
    return
  arr = np.asarray(scale)
  if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
    raise ValueError(f"{name} must be finite and > 0, got {name}={scale}")


def _broadcasts_to(shape: tuple[int, ...], to: tuple[int, ...]) -> bool:
  """Whether an array of ``shape`` broadcasts to exactly ``to``."""
  try:
    return jnp.broadcast_shapes(shape, to) == tuple(to)
  except ValueError:
    return False


def _check_dim(dim: int) -> None:
  if not isinstance(dim, (int, np.integer)) or dim < 1:
    raise ValueError(f"dim must be a positive integer (the ball's dimension), got dim={dim}")


def _compute_dtype() -> jnp.dtype:
  """float64 when x64 is enabled (the closed forms cancel badly in float32), else float32."""
  return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def log_sinh_ratio(x: ArrayLike) -> jax.Array:
  """``log(sinh(x) / x)`` for ``x >= 0``, stable at 0 (Taylor) and for large ``x``."""
  x = jnp.asarray(x)
  small = x < 0.5
  xs = jnp.where(small, 1.0, x)
  x2 = jnp.square(x)
  # log(sinh x / x) = x^2/6 - x^4/180 + x^6/2835 - x^8/37800 + O(x^10).
  taylor = x2 * (1.0 / 6.0 + x2 * (-1.0 / 180.0 + x2 * (1.0 / 2835.0 - x2 / 37800.0)))
  large = xs + jnp.log1p(-jnp.exp(-2.0 * xs)) - jnp.log(2.0 * xs)
  return jnp.where(small, taylor, large)


def _log_sinh(x: jax.Array) -> jax.Array:
  """``log sinh(x)`` for ``x > 0``."""
  return jnp.log(x) + log_sinh_ratio(x)


def _log_ndtr(x: jax.Array) -> jax.Array:
  """``log Phi(x)`` from one ``erfc``: lighter to compile and run than ``jax.scipy``'s ``log_ndtr``.

  ``log(erfc(-x / sqrt 2) / 2)`` for ``x <= 0`` (``erfc`` is relatively accurate in its tail),
  ``log1p(-erfc(x / sqrt 2) / 2)`` for ``x > 0``, and below the point where ``erfc`` underflows
  (``x < -37`` in float64, ``-12`` in float32) the asymptotic series ``log(phi(x) / -x) +
  log(1 - x^-2 + 3 x^-4 - 15 x^-6 + 105 x^-8)``, whose error there is below ``945 x^-10``.
  """
  x = jnp.asarray(x)
  cutoff = -37.0 if x.dtype == jnp.float64 else -12.0
  # Phi(-|x|), written with where (not abs) so that the derivative at x = 0 is phi(0).
  tail = 0.5 * jax.lax.erfc(jnp.where(x > 0, x, -x) * (1.0 / math.sqrt(2.0)))
  xa = jnp.minimum(x, cutoff)
  w = 1.0 / jnp.square(xa)
  asymptotic = (-0.5 * jnp.square(xa) - 0.5 * math.log(2.0 * math.pi) - jnp.log(-xa)
                + jnp.log1p(w * (-1.0 + w * (3.0 + w * (-15.0 + 105.0 * w)))))
  body = jnp.where(x > 0, jnp.log1p(-tail), jnp.log(jnp.where(x > cutoff, tail, 1.0)))
  return jnp.where(x > cutoff, body, asymptotic)


def _log_ndtr_pair(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(log Phi(x), log Phi(-x))`` from one ``erfc``, the same values as two :func:`_log_ndtr`.

  Both share the tail ``Phi(-|x|)``: one of the pair is its log (or the asymptotic series), the
  other ``log1p`` of minus it. Half the ``erfc``/series work, and a smaller program, where the
  CDF needs both tails of the same arguments.
  """
  x = jnp.asarray(x)
  cutoff = -37.0 if x.dtype == jnp.float64 else -12.0
  a = jnp.where(x > 0, x, -x)  # |x|, with the derivative of the branch taken at 0 (as above)
  tail = 0.5 * jax.lax.erfc(a * (1.0 / math.sqrt(2.0)))  # Phi(-|x|)
  xa = jnp.minimum(-a, cutoff)
  w = 1.0 / jnp.square(xa)
  asymptotic = (-0.5 * jnp.square(xa) - 0.5 * math.log(2.0 * math.pi) - jnp.log(-xa)
                + jnp.log1p(w * (-1.0 + w * (3.0 + w * (-15.0 + 105.0 * w)))))
  inside = -a > cutoff
  log_tail = jnp.where(inside, jnp.log(jnp.where(inside, tail, 1.0)), asymptotic)
  log_body = jnp.log1p(-tail)
  positive = x > 0
  return jnp.where(positive, log_body, log_tail), jnp.where(positive, log_tail, log_body)


def _log1mexp(t: jax.Array) -> jax.Array:
  """``log(1 - exp(t))`` for ``t <= 0`` (Mächler 2012)."""
  near = t > -math.log(2.0)
  return jnp.where(near, jnp.log(-jnp.expm1(jnp.where(near, t, -1.0))),
                   jnp.log1p(-jnp.exp(jnp.where(near, -1.0, t))))


def _log_diff_ndtr(x1: jax.Array, x2: jax.Array) -> jax.Array:
  """``log(Phi(x1) - Phi(x2))`` for ``x1 >= x2``, through the upper tails when both are positive."""
  upper = x2 > 0
  l1p, l1m = _log_ndtr_pair(x1)
  l2p, l2m = _log_ndtr_pair(x2)
  la = jnp.where(upper, l2m, l1p)
  lb = jnp.where(upper, l1m, l2p)
  return la + _log1mexp(jnp.minimum(lb - la, 0.0))


def _binomial_terms(dim: int, scale: jax.Array, c: jax.Array):
  """``b_k``, ``log C(d-1, k)`` and signs ``(-1)^k`` of the expansion of ``sinh^{d-1}``, on a new last axis."""
  n = dim - 1
  k = np.arange(n + 1)
  log_binom = np.array([math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) for j in k])
  signs = np.where(k % 2 == 0, 1.0, -1.0)
  dtype = scale.dtype
  lead = (1,) * jnp.ndim(c)
  b = jnp.sqrt(c)[..., None] * jnp.asarray(n - 2 * k, dtype).reshape(lead + (-1,))
  return (b, jnp.broadcast_to(jnp.asarray(log_binom, dtype), b.shape),
          jnp.broadcast_to(jnp.asarray(signs, dtype), b.shape))


def _log_radial_mass(scale: jax.Array, c: jax.Array, dim: int) -> jax.Array:
  """``log sum_k (-1)^k C(n,k) exp(b_k^2 s^2 / 2) Phi(b_k s)`` with ``b_k = (n - 2k) sqrt(c)``."""
  b, log_binom, signs = _binomial_terms(dim, scale, c)
  s = scale[..., None]
  terms = log_binom + 0.5 * jnp.square(b * s) + _log_ndtr(b * s)
  return jax.nn.logsumexp(terms, axis=-1, b=signs)


def _log_radial_normalizer(scale: jax.Array, c: jax.Array, dim: int) -> jax.Array:
  """``log int_0^inf exp(-r^2 / 2 s^2) sinh(sqrt(c) r)^(d-1) dr`` in closed form."""
  n = dim - 1
  # int_0^inf exp(-r^2/2s^2 + b r) dr = s sqrt(2 pi) exp(b^2 s^2 / 2) Phi(b s); sinh^n = 2^-n sum_k ...
  return (-n * math.log(2.0) + jnp.log(scale) + 0.5 * math.log(2.0 * math.pi)
          + _log_radial_mass(scale, c, dim))


def log_normalizer(scale: ArrayLike, c: ArrayLike, dim: int) -> jax.Array:
  """Exact log-normaliser of the Riemannian normal on the d-dimensional Poincaré ball.

  .. math::  Z(\\sigma, c) = \\frac{2\\pi^{d/2}}{\\Gamma(d/2)}\\,\\sqrt{\\tfrac{\\pi}{2}}\\,\\sigma\\,
     \\frac{1}{(2\\sqrt c)^{d-1}} \\sum_{k=0}^{d-1} (-1)^k \\binom{d-1}{k}
     e^{\\frac{(d-1-2k)^2 c \\sigma^2}{2}}\\Big[1 + \\mathrm{erf}\\Big(
     \\frac{(d-1-2k)\\sqrt c\\,\\sigma}{\\sqrt 2}\\Big)\\Big]

  (paper eq. 7 and Appendix B.4.2): the surface of the unit sphere times the radial integral of
  ``exp(-r^2 / 2 sigma^2) (sinh(sqrt(c) r) / sqrt(c))^(d-1)``. The alternating sum is evaluated as
  a signed log-sum-exp with ``1 + erf(x / sqrt 2) = 2 Phi(x)`` through ``log_ndtr``, in float64
  when x64 is enabled. It cancels when ``sqrt(c) sigma`` is small: in float64 the relative error
  is ~1e-16 C(d-1, (d-1)/2) / (2 sqrt(c) sigma)^(d-1) (below 1e-9 for ``sqrt(c) sigma >= 0.1``,
  ``d <= 10``); float32 (x64 disabled) is accurate only for small ``d`` or larger ``sigma``.

  Args:
    scale: sigma > 0, any shape.
    c: curvature magnitude > 0, broadcastable against ``scale``.
    dim: the ball's dimension d >= 1 (static).

  Returns:
    ``log Z`` with the broadcast shape of ``scale`` and ``c``, in their dtype.

  Example:
    >>> round(float(log_normalizer(1.0, 1.0, 2)), 4)  # log of the integral of exp(-d^2/2)
    2.182
  """
  _check_dim(dim)
  _check_scale(scale)
  manifold.check_curvature(c)
  out_dtype = jnp.result_type(jnp.asarray(scale), jnp.asarray(c), 0.0)
  return _log_normalizer(scale, c, int(dim)).astype(out_dtype)


@functools.partial(jax.jit, static_argnums=(2,))
def _log_normalizer(scale, c, dim):
  dtype = _compute_dtype()
  scale, c = jnp.broadcast_arrays(jnp.asarray(scale, dtype), jnp.asarray(c, dtype))
  log_area = math.log(2.0) + 0.5 * dim * math.log(math.pi) - math.lgamma(0.5 * dim)
  return log_area - 0.5 * (dim - 1) * jnp.log(c) + _log_radial_normalizer(scale, c, dim)


def _on_radius(fn, r: ArrayLike, scale: ArrayLike, c: ArrayLike, dim: int) -> jax.Array:
  """Calls a jitted radius function in the compute dtype on broadcast inputs; casts back."""
  _check_dim(dim)
  dtype = _compute_dtype()
  out_dtype = jnp.result_type(jnp.asarray(r), 0.0)
  r, scale, c = jnp.broadcast_arrays(*(jnp.asarray(a, dtype) for a in (r, scale, c)))
  return fn(r, scale, c, dim).astype(out_dtype)


def radius_log_prob(r: ArrayLike, scale: ArrayLike, c: ArrayLike, dim: int) -> jax.Array:
  """Log-density of the geodesic radius ``r = d_c(loc, z)`` of a Riemannian normal sample.

  .. math::  p(r) \\propto e^{-r^2 / 2\\sigma^2} \\sinh(\\sqrt c\\, r)^{d-1}, \\qquad r > 0
  """
  return _on_radius(_radius_log_prob, r, scale, c, dim)


@functools.partial(jax.jit, static_argnums=(3,))
def _radius_log_prob(r, scale, c, dim):
  n = dim - 1
  log_sinh = _log_sinh(jnp.sqrt(c) * r) if n else jnp.zeros_like(r)
  return -0.5 * jnp.square(r / scale) + n * log_sinh - _log_radial_normalizer(scale, c, dim)


def radius_cdf(r: ArrayLike, scale: ArrayLike, c: ArrayLike, dim: int) -> jax.Array:
  """Closed-form CDF of the geodesic radius of a Riemannian normal sample.

  .. math::  F(r) = \\frac{\\sum_k (-1)^k \\binom{d-1}{k} e^{b_k^2\\sigma^2/2}
     [\\Phi((r - b_k\\sigma^2)/\\sigma) - \\Phi(-b_k\\sigma)]}
     {\\sum_k (-1)^k \\binom{d-1}{k} e^{b_k^2\\sigma^2/2}\\,\\Phi(b_k\\sigma)},
     \\qquad b_k = (d - 1 - 2k)\\sqrt c

  Evaluated as a ratio of signed log-sum-exps (float64 when x64 is enabled).
  """
  return _on_radius(_radius_cdf, r, scale, c, dim)


@functools.partial(jax.jit, static_argnums=(3,))
def _radius_cdf(r, scale, c, dim):
  b, log_binom, signs = _binomial_terms(dim, scale, c)
  s = scale[..., None]
  bs = b * s
  x1 = (jnp.maximum(r, 0.0)[..., None] - b * jnp.square(s)) / s
  x2 = -bs
  terms = log_binom + 0.5 * jnp.square(bs) + _log_diff_ndtr(jnp.maximum(x1, x2), x2)
  log_num = jax.nn.logsumexp(terms, axis=-1, b=signs)
  return jnp.clip(jnp.exp(log_num - _log_radial_mass(scale, c, dim)), 0.0, 1.0)


def _radius_constants(scale: jax.Array, c: jax.Array, dim: int):
  """Per-(sigma, c) pieces of the radius law shared by every CDF evaluation of one solve."""
  b, log_binom, signs = _binomial_terms(dim, scale, c)
  s = scale[..., None]
  x2 = -b * s
  log_mass = _log_radial_mass(scale, c, dim)
  # log of the radial density's normaliser (sinh^n, not (sinh / sqrt c)^n), see _radius_log_prob.
  log_norm = ((1 - dim) * math.log(2.0) + jnp.log(scale) + 0.5 * math.log(2.0 * math.pi)
              + log_mass)
  l2p, l2m = _log_ndtr_pair(x2)
  return dict(b=b, base=log_binom + 0.5 * jnp.square(x2), signs=signs, x2=x2,
              l2p=l2p, l2m=l2m, log_mass=log_mass, log_norm=log_norm)


def _log_cdf_sf(r, scale, consts):
  """``(log F(r), log(1 - F(r)))`` by signed log-sum-exps; NaN where the alternating sum cancels."""
  s = scale[..., None]
  x1 = jnp.maximum((jnp.maximum(r, 0.0)[..., None] + consts["x2"] * s) / s, consts["x2"])
  l1p, l1m = _log_ndtr_pair(x1)
  upper = consts["x2"] > 0
  # log(Phi(x1) - Phi(x2)) through the upper tails when both are positive (as _log_diff_ndtr).
  la = jnp.where(upper, consts["l2m"], l1p)
  lb = jnp.where(upper, l1m, consts["l2p"])
  log_diff = la + _log1mexp(jnp.minimum(lb - la, 0.0))
  # 1 - F(r) = sum_k w_k Phi(b_k s - r / s) / M: no difference of Phi's needed.
  log_f = jax.nn.logsumexp(consts["base"] + log_diff, axis=-1, b=consts["signs"])
  log_sf = jax.nn.logsumexp(consts["base"] + l1m, axis=-1, b=consts["signs"])
  return log_f - consts["log_mass"], log_sf - consts["log_mass"]


def _log_cdf_near0(r, scale, c, dim, log_norm):
  """``log F(r)`` for ``r <= min(sigma, 1/sqrt c) / 2`` by Gauss-Jacobi quadrature (weight t^(d-1)).

  ``F(r) = r^d int_0^1 x^(d-1) g(r x) dx / Z_r`` with ``g(t) = e^{-t^2/2s^2} (sinh(sqrt(c) t) /
  t)^(d-1)`` smooth and even: the rule is exact through degree 15 of ``g``'s Taylor series, whose
  next terms are ``O((r / s)^16 / (2^8 8!))``.
  """
  n = dim - 1
  x, w = special.roots_jacobi(_JACOBI_NODES, 0.0, float(n))
  x, w = 0.5 * (x + 1.0), w / 2.0 ** (n + 1)
  t = r[..., None] * jnp.asarray(x, r.dtype).reshape((1,) * r.ndim + (-1,))
  log_g = -0.5 * jnp.square(t / scale[..., None])
  if n:
    log_g = log_g + n * log_sinh_ratio(jnp.sqrt(c)[..., None] * t)
  log_int = jax.nn.logsumexp(log_g, axis=-1, b=jnp.broadcast_to(jnp.asarray(w, r.dtype), t.shape))
  return dim * jnp.log(r) + 0.5 * n * jnp.log(c) + log_int - log_norm


def _fast_log_density(r, scale, c, dim, log_norm):
  """``log p(r)`` of the radius for ``r >= 0`` (``-inf`` at 0 when d > 1)."""
  n = dim - 1
  log_sinh = _log_sinh(jnp.sqrt(c) * r) if n else jnp.zeros_like(r)
  return -0.5 * jnp.square(r / scale) + n * log_sinh - log_norm


def _initial_radius(z, scale, c, dim):
  """Quantile guess below the true one: max of the envelope's and of sigma * chi_d's quantiles.

  The radius law is the Gaussian envelope ``N((d-1) sqrt(c) s^2, s^2)`` times the increasing
  factor ``(1 - e^{-2 sqrt(c) r})^(d-1)``, and ``e^{-r^2/2s^2} (sqrt(c) r)^(d-1)`` times the
  increasing ``(sinh(y)/y)^(d-1)``: it is stochastically larger than both; the chi quantile is
  the Wilson-Hilferty approximation.
  """
  n = dim - 1
  gauss = n * jnp.sqrt(c) * jnp.square(scale) + scale * z
  a = 2.0 / (9.0 * dim)
  chi = scale * math.sqrt(dim) * jnp.maximum(1.0 - a + z * math.sqrt(a), 0.05) ** 1.5
  return jnp.maximum(gauss, chi)


def _solve_radius(z, scale, c, dim):
  """Solve ``F(r) = Phi(z)`` elementwise by safeguarded Newton on ``log F`` or ``log(1 - F)``.

  ``log F`` (for ``z < 0``) and ``log(1 - F)`` (for ``z >= 0``) are concave in ``r`` (the radius
  density is log-concave: ``log sinh`` is concave), so Newton from the guess of
  :func:`_initial_radius` converges monotonically after at most one overshoot; iterates leaving
  the bracket ``[lo, hi]`` (kept from the signs of the residuals) are replaced by its midpoint.
  Using the tail that is small keeps the relative accuracy in both tails; the lower half steps in
  ``log r``. Stops once every step is below ``2 sqrt(eps)`` relative: by quadratic convergence
  the error after that last step is ~eps (a tighter test would spin on rounding noise).
  """
  dtype = z.dtype
  n = dim - 1
  consts = _radius_constants(scale, c, dim)
  lower = z < 0
  target = jnp.where(lower, _log_ndtr(z), _log_ndtr(-z))
  hi = n * jnp.sqrt(c) * jnp.square(scale) + (12.0 + math.sqrt(n)) * scale
  lo = jnp.zeros_like(hi)
  tiny = jnp.finfo(dtype).tiny
  r = jnp.clip(_initial_radius(z, scale, c, dim), 1e-3 * scale, 0.99 * hi)
  rtol = 2.0 * math.sqrt(float(jnp.finfo(dtype).eps))  # the step after this one is ~rtol^2
  r_quad = 0.5 * jnp.minimum(scale, 1.0 / jnp.sqrt(c))

  def body(state):
    it, r, lo, hi, _ = state
    log_f, log_sf = _log_cdf_sf(r, scale, consts)
    # Near 0 the alternating sum cancels like (r / s)^(d-1): integrate the density instead.
    near0 = r <= r_quad
    log_f = jnp.where(near0, _log_cdf_near0(jnp.where(near0, r, r_quad), scale, c, dim,
                                            consts["log_norm"]), log_f)
    log_p = _fast_log_density(r, scale, c, dim, consts["log_norm"])
    g = jnp.where(lower, log_f, log_sf) - target
    slope = jnp.where(lower, jnp.exp(log_p - log_f), -jnp.exp(log_p - log_sf))
    below = jnp.where(lower, g < 0, g > 0)  # F(r) < Phi(z)
    lo = jnp.where(below, r, lo)
    hi = jnp.where(below, hi, r)
    # Lower half: the step in log r (exact in one step for a power law F ~ r^d near 0).
    new = jnp.where(lower, r * jnp.exp(jnp.clip(-g / (r * slope), -20.0, 20.0)), r - g / slope)
    ok = jnp.isfinite(new) & (new >= lo) & (new <= hi)
    new = jnp.where(ok, new, 0.5 * (lo + hi))
    done = jnp.all(jnp.abs(new - r) <= rtol * new + tiny)
    return it + 1, new, lo, hi, done

  def cond(state):
    it, _, _, _, done = state
    return (it < _MAX_NEWTON_STEPS) & ~done

  _, r, _, _, _ = jax.lax.while_loop(cond, body, (0, r, lo, hi, jnp.asarray(False)))
  return r


def _table_radius(z, scale, c, dim):
  """Radii for many samples per ``(sigma, c)``: a quantile table and quintic Hermite interpolation.

  For each distinct ``(sigma, c)`` (shape ``P``) the quantiles ``r_j = F^{-1}(Phi(z_j))`` at
  ``_TABLE_NODES`` equally spaced ``z_j`` in ``[-Z, Z]`` are solved by :func:`_solve_radius`.
  The table holds ``u = log r`` and its first two derivatives in ``z``, exact from the quantile
  equation ``F(r(z)) = Phi(z)``:

  .. math::  r' = \\frac{\\phi(z)}{p(r)}, \\qquad
     r'' = r' \\big(-z - r' (\\log p)'(r)\\big), \\qquad
     (\\log p)'(r) = -\\frac{r}{\\sigma^2} + (d-1)\\sqrt c \\coth(\\sqrt c\\, r)

  and ``u' = r'/r``, ``u'' = r''/r - u'^2``. A sample's ``z`` is mapped by the quintic Hermite
  interpolant of ``u`` on its cell and ``r = exp(u)``: per sample six table reads, a polynomial
  and one ``exp``, whatever d. ``log r`` is smooth in both tails (about ``-z^2 / 2d`` in the lower
  one, where ``r`` itself varies over orders of magnitude), so the interpolation error is
  uniform in relative terms: with 257 nodes below ~1e-9 relative for d = 2..20 and
  ``sqrt(c) sigma`` from 0.05 to 2 (checked against the solver in the tests). Outside the table
  (``|z| > Z``; float64 normals stay within 8.3) ``u`` is extended linearly.
  """
  shape = z.shape
  pshape = scale.shape
  m = _TABLE_NODES
  h = 2.0 * _TABLE_Z / (m - 1)
  dtype = z.dtype
  tiny = jnp.finfo(dtype).tiny
  z_nodes = jnp.asarray(np.linspace(-_TABLE_Z, _TABLE_Z, m), dtype)
  scale_t, c_t = scale[..., None], c[..., None]
  r_nodes = _solve_radius(jnp.broadcast_to(z_nodes, pshape + (m,)),
                          jnp.broadcast_to(scale_t, pshape + (m,)),
                          jnp.broadcast_to(c_t, pshape + (m,)), dim)
  r_nodes = jnp.maximum(r_nodes, tiny)
  log_norm_t = _radius_constants(scale, c, dim)["log_norm"][..., None]
  log_phi = -0.5 * jnp.square(z_nodes) - 0.5 * math.log(2.0 * math.pi)
  r1 = jnp.exp(jnp.broadcast_to(log_phi, r_nodes.shape)
               - _fast_log_density(r_nodes, scale_t, c_t, dim, log_norm_t))
  dlog_p = -r_nodes / jnp.square(scale_t)
  if dim > 1:
    sqrt_c = jnp.sqrt(c_t)
    dlog_p = dlog_p + (dim - 1) * sqrt_c / jnp.tanh(sqrt_c * r_nodes)
  r2 = r1 * (-jnp.broadcast_to(z_nodes, r_nodes.shape) - r1 * dlog_p)
  u0 = jnp.log(r_nodes)
  u1 = r1 / r_nodes
  u2 = r2 / r_nodes - jnp.square(u1)
  # One row per table node: (u, h u', h^2 u''), gathered by flat index.
  rows = jnp.stack([u0, h * u1, h * h * u2], axis=-1).reshape(-1, 3)

  pos = (z + _TABLE_Z) / h
  j = jnp.clip(jnp.floor(pos), 0, m - 2).astype(jnp.int32)
  t = pos - j.astype(dtype)
  param = jnp.broadcast_to(jnp.arange(math.prod(pshape), dtype=jnp.int32).reshape(pshape), shape)
  flat = param * m + j
  left, right = jnp.take(rows, flat, axis=0), jnp.take(rows, flat + 1, axis=0)
  f0, m0, a0 = left[..., 0], left[..., 1], left[..., 2]
  f1, m1, a1 = right[..., 0], right[..., 1], right[..., 2]
  tc = jnp.clip(t, 0.0, 1.0)
  t2 = jnp.square(tc)
  t3 = t2 * tc
  # Quintic Hermite basis, in Horner-like form.
  h3 = t3 * (10.0 + tc * (-15.0 + 6.0 * tc))
  u = ((1.0 - h3) * f0 + h3 * f1
       + (tc + t3 * (-6.0 + tc * (8.0 - 3.0 * tc))) * m0
       + t3 * (-4.0 + tc * (7.0 - 3.0 * tc)) * m1
       + 0.5 * (t2 + t3 * (-3.0 + tc * (3.0 - tc))) * a0
       + 0.5 * t3 * (1.0 + tc * (-2.0 + tc)) * a1)
  # Linear extension of log r outside the table.
  u = u + jnp.where(t < 0, t * m0, jnp.where(t > 1, (t - 1.0) * m1, 0.0))
  return jnp.exp(u)


def _radius_from_normal_impl(z, scale, c, dim):
  size, params = math.prod(z.shape), math.prod(scale.shape)
  if size >= _TABLE_MIN_RATIO * _TABLE_NODES * params:
    return _table_radius(z, scale, c, dim)
  shape = z.shape
  return _solve_radius(z, jnp.broadcast_to(scale, shape), jnp.broadcast_to(c, shape), dim)


def _sum_to_shape(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Sums a cotangent over the axes along which an input of ``shape`` was broadcast."""
  x = jnp.sum(x, axis=tuple(range(x.ndim - len(shape))))
  axes = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
  return jnp.sum(x, axis=axes, keepdims=True).reshape(shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _radius_from_normal(z, scale, c, dim):
  return _radius_from_normal_impl(z, scale, c, dim)


def _radius_fwd(z, scale, c, dim):
  # symbolic_zeros=True: the primals say whether they are perturbed, so the backward pass only
  # builds the (large) CDF derivatives that are needed -- e.g. no dF/dc when c is not trained.
  # Which cotangents are needed is static, carried in the residuals' tree structure.
  needed = tuple(name for name, p in (("z", z), ("scale", scale), ("c", c)) if p.perturbed)
  z, scale, c = z.value, scale.value, c.value
  r = _radius_from_normal_impl(z, scale, c, dim)
  return r, (z, r, scale, c, dict.fromkeys(needed))


def _radius_bwd(dim, res, g):
  z, r, scale_p, c_p, needed = res
  if isinstance(g, SymbolicZero):
    g = jnp.zeros(g.shape, g.dtype)
  scale, c = jnp.broadcast_to(scale_p, r.shape), jnp.broadcast_to(c_p, r.shape)
  # Implicit function theorem on F(r(z, s, c); s, c) = Phi(z): dr/dtheta = -(dF/dtheta) / p(r).
  density = jnp.exp(_radius_log_prob(r, scale, c, dim))
  safe_density = jnp.maximum(density, jnp.finfo(density.dtype).tiny)
  ones = jnp.ones_like(r)
  out = [None, None, None]
  if "z" in needed:
    phi = jnp.exp(-0.5 * jnp.square(z)) / math.sqrt(2.0 * math.pi)
    out[0] = g * phi / safe_density
  if "scale" in needed:
    _, dF_ds = jax.jvp(lambda s: _radius_cdf(r, s, c, dim), (scale,), (ones,))
    out[1] = _sum_to_shape(-g * dF_ds / safe_density, scale_p.shape)
  if "c" in needed:
    _, dF_dc = jax.jvp(lambda k: _radius_cdf(r, scale, k, dim), (c,), (ones,))
    out[2] = _sum_to_shape(-g * dF_dc / safe_density, c_p.shape)
  return tuple(out)


_radius_from_normal.defvjp(_radius_fwd, _radius_bwd, symbolic_zeros=True)


def sample_radius(key: jax.Array, scale: ArrayLike, c: ArrayLike, dim: int,
                  shape: tuple[int, ...] = ()) -> jax.Array:
  """Reparameterised sample of the Riemannian normal's geodesic radius, by inverse CDF.

  ``r = F^{-1}(Phi(z); sigma, c)`` with ``z ~ N(0, 1)``, on the closed-form CDF
  (:func:`radius_cdf`) rather than by the reference code's adaptive rejection sampler: fixed
  shapes under ``jit``/``vmap``, no rejection loop, and a sample that is a smooth function of
  ``(sigma, c)`` for a fixed key. Two solvers, chosen from the static shapes:

  * few samples per distinct ``(sigma, c)``: safeguarded Newton on ``log F`` (lower half) or
    ``log(1 - F)`` (upper half), from a guess below the root (a handful of steps, each ``d``
    ``log_ndtr`` pairs), to ~64 ulp;
  * many samples per distinct ``(sigma, c)`` (e.g. a scalar ``scale``): ``log r(z)`` is
    tabulated once per ``(sigma, c)`` with that solver, with its exact first and second
    derivatives, and interpolated (quintic Hermite in ``z``, then one ``exp``): relative error
    below ~1e-9, and a cost per sample that does not grow with d (see :func:`_table_radius`).

  Gradients with respect to ``scale`` and ``c`` are implicit (``jax.custom_vjp``):

  .. math::  \\frac{\\partial r}{\\partial \\sigma} = -\\frac{\\partial F/\\partial\\sigma}
     {\\partial F/\\partial r} = -\\frac{\\partial F/\\partial\\sigma}{p(r)}

  (paper Appendix B.4.3).

  Args:
    key: PRNG key.
    scale: sigma > 0.
    c: curvature magnitude > 0.
    dim: the ball's dimension d >= 1 (static).
    shape: output shape; ``scale`` and ``c`` must broadcast to it.

  Returns:
    Radii of shape ``shape``, dtype of ``scale`` (at least float32).

  Example:
    >>> r = sample_radius(jax.random.key(0), 0.5, 1.0, 2, (1000,))
  """
  _check_dim(dim)
  _check_scale(scale)
  manifold.check_curvature(c)
  shape = tuple(shape)
  try:
    params = jnp.broadcast_shapes(jnp.shape(scale), jnp.shape(c))
    fits = len(params) <= len(shape) and jnp.broadcast_shapes(params, shape) == shape
  except ValueError:
    fits = False
  if not fits:
    raise ValueError(f"scale and c must broadcast to shape={shape}, got shapes "
                     f"{jnp.shape(scale)} and {jnp.shape(c)}")
  out_dtype = jnp.result_type(jnp.asarray(scale), 0.0)
  return _sample_radius(key, scale, c, int(dim), shape).astype(out_dtype)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _sample_radius(key, scale, c, dim, shape):
  dtype = _compute_dtype()
  z = core.flat_normal(key, shape, dtype)
  scale, c = jnp.broadcast_arrays(jnp.asarray(scale, dtype), jnp.asarray(c, dtype))
  return _radius_from_normal(z, scale, c, dim)


def _uniform_direction(key: jax.Array, shape: tuple[int, ...],
                       dtype) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Uniform unit vectors along the last axis, as ``(e, inv_norm, sq_norm)``: ``e * inv_norm``.

  An angle when d = 2 (``e = (cos, sin)``, ``inv_norm = sq_norm = 1``), normalised Gaussians
  else (``e ~ N(0, I)``, ``inv_norm = 1 / |e|``, ``sq_norm = |e|^2 inv_norm^2``, 1 to rounding).
  The direction is left unnormalised so that a caller that needs only ``a x + b alpha`` scales
  once per point instead of dividing every coordinate.
  """
  if shape[-1] == 2:
    theta = (2.0 * math.pi) * core.flat_uniform(key, shape[:-1], dtype)
    ones = jnp.ones(shape[:-1], dtype)
    return jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=-1), ones, ones
  e = core.flat_normal(key, shape, dtype)
  sq = manifold.sq_norm(e)
  positive = sq > jnp.finfo(dtype).tiny
  norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
  inv_norm = 1.0 / jnp.maximum(norm, jnp.finfo(dtype).tiny)
  return e, inv_norm, sq * jnp.square(inv_norm)


class _PoincareDistribution(distrax.Distribution):
  """Shared shapes and checks: ``loc`` (..., d) on the ball, curvature ``c`` (a scalar)."""

  def __init__(self, loc: ArrayLike, c: ArrayLike):
    manifold.check_curvature(c)
    if jnp.ndim(c) != 0:
      raise ValueError(f"c must be a scalar, got shape {jnp.shape(c)}")
    loc = jnp.asarray(loc)
    if loc.ndim < 1:
      raise ValueError(f"loc must have at least one axis (the event axis), got shape {loc.shape}")
    manifold.check_in_ball(loc, c, "loc")
    self._loc = loc.astype(jnp.result_type(loc, 0.0))
    self._c = c

  @property
  def loc(self) -> jax.Array:
    return self._loc

  def _broadcast_value(self, value: ArrayLike) -> tuple[jax.Array, jax.Array]:
    value = jnp.asarray(value, self._loc.dtype)
    try:
      shape = jnp.broadcast_shapes(value.shape, self._loc.shape)
    except ValueError:
      raise ValueError(f"value of shape {value.shape} does not broadcast against loc's shape "
                       f"{self._loc.shape} (batch {self.batch_shape}, event "
                       f"{self.event_shape})") from None
    return jnp.broadcast_to(value, shape), jnp.broadcast_to(self._loc, shape)

  def _on_support(self, log_prob_fn, value: ArrayLike) -> jax.Array:
    """``log_prob_fn(loc, value)`` inside the open ball; ``-inf`` outside (density zero).

    Points outside are replaced by the origin before ``log_prob_fn`` sees them, so neither the
    value nor its gradient is a NaN from the map's singularities; NaN values stay NaN.
    """
    value, loc = self._broadcast_value(value)
    sq = jnp.asarray(self._c, value.dtype) * manifold.sq_norm(value)
    inside = sq < 1
    safe = jnp.where(inside[..., None], value, jnp.zeros_like(value))
    log_p = jnp.where(inside, log_prob_fn(loc, safe), -jnp.inf)
    return jnp.where(jnp.isnan(sq), jnp.nan, log_p)

  @property
  def c(self) -> ArrayLike:
    return self._c

  @property
  def event_shape(self) -> tuple[int, ...]:
    return self._loc.shape[-1:]

  @property
  def batch_shape(self) -> tuple[int, ...]:
    return self._loc.shape[:-1]


class WrappedNormal(_PoincareDistribution):
  """Wrapped normal on the Poincaré ball: a tangent Gaussian at the origin moved to ``loc``.

  Sampling (paper Section 3, Algorithm 1):

  .. math::  v \\sim \\mathcal N(0, \\mathrm{diag}(\\sigma^2)),\\quad
     z = \\exp_\\mu^c\\big(P_{0\\to\\mu}(v / \\lambda_0^c)\\big)

  so that ``d_c(mu, z) = |v|`` (sigma is in geodesic units). Log-density with respect to the
  Riemannian volume (paper eq. 5):

  .. math::  \\log p(z) = \\log\\mathcal N\\big(\\lambda_\\mu^c \\log_\\mu^c z;\\ 0,
     \\mathrm{diag}(\\sigma^2)\\big) - (d - 1)\\log\\frac{\\sinh(\\sqrt c\\, r)}{\\sqrt c\\, r},
     \\qquad r = d_c(\\mu, z)

  Args:
    loc: means ``mu`` (..., d) inside the ball; leading axes are the batch.
    scale: per-dimension sigma > 0, broadcastable to ``loc.shape``.
    c: curvature magnitude > 0 (a scalar).

  Example:
    >>> q = WrappedNormal(jnp.zeros(2), jnp.ones(2), c=1.0)
    >>> z, log_q = q.sample_and_log_prob(seed=jax.random.key(0), sample_shape=5)
  """

  def __init__(self, loc: ArrayLike, scale: ArrayLike, c: ArrayLike = 1.0):
    super().__init__(loc, c)
    _check_scale(scale)
    scale = jnp.asarray(scale, self._loc.dtype)
    if not _broadcasts_to(scale.shape, self._loc.shape):
      raise ValueError(f"scale must broadcast to loc's shape {self._loc.shape} (one sigma per "
                       f"dimension), got scale of shape {scale.shape}")
    self._scale = jnp.broadcast_to(scale, self._loc.shape)

  @property
  def scale(self) -> jax.Array:
    return self._scale

  def _sample_n(self, key: jax.Array, n: int) -> jax.Array:
    return _wrapped_draw(key, self._loc, self._scale, self._c, n)[0]

  def _sample_n_and_log_prob(self, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    # The density at the tangent vector drawn: no log map back from the sample.
    return _wrapped_draw(key, self._loc, self._scale, self._c, n)

  def log_prob(self, value: ArrayLike) -> jax.Array:
    """The log-density at ``value``; ``-inf`` for points outside the ball (``c |z|^2 >= 1``)."""
    return self._on_support(
        lambda loc, z: _wrapped_log_prob(loc, jnp.broadcast_to(self._scale, z.shape), self._c, z),
        value)


class RiemannianNormal(_PoincareDistribution):
  """Riemannian (maximum-entropy) normal on the Poincaré ball.

  .. math::  p(z) = \\frac{1}{Z(\\sigma, c)} \\exp\\Big(-\\frac{d_c(\\mu, z)^2}{2\\sigma^2}\\Big)

  a density with respect to the Riemannian volume (paper eq. 6), ``Z`` from
  :func:`log_normalizer`. Sampling: a geodesic radius ``r`` from :func:`sample_radius`
  (inverse CDF with implicit gradients) and a uniform direction, ``z = exp_mu(P_{0->mu}(r alpha /
  lambda_0))``, so ``d_c(mu, z) = r``.

  Finite precision bounds the geodesic distances the ball can represent: points are kept within
  ``(1 - eps) / sqrt(c)`` of the origin, i.e. at most ``~12.2 / sqrt(c)`` (float64) or
  ``~6.2 / sqrt(c)`` (float32) away from it. The radius law peaks near ``(d - 1) sqrt(c) sigma^2``,
  so for large ``d sqrt(c) sigma^2`` samples are clipped to that sphere (the reference code
  clamps ``sigma`` to ``[0.1, 7]`` and still meets NaNs there); :func:`sample_radius` itself is
  exact.

  Args:
    loc: means ``mu`` (..., d) inside the ball; leading axes are the batch.
    scale: a scalar sigma > 0 per batch element: shape broadcastable to ``loc.shape[:-1]``.
    c: curvature magnitude > 0 (a scalar).

  Example:
    >>> p = RiemannianNormal(jnp.zeros(2), 0.7, c=1.0)
    >>> z = p.sample(seed=jax.random.key(0), sample_shape=5)
  """

  def __init__(self, loc: ArrayLike, scale: ArrayLike, c: ArrayLike = 1.0):
    super().__init__(loc, c)
    _check_scale(scale)
    scale = jnp.asarray(scale, self._loc.dtype)
    if scale.ndim > len(self.batch_shape):
      raise ValueError(f"scale must be a scalar per batch element, broadcastable to "
                       f"{self.batch_shape}, got shape {scale.shape}")
    self._scale = jnp.broadcast_to(scale, self.batch_shape)

  @property
  def scale(self) -> jax.Array:
    return self._scale

  def _sample_n(self, key: jax.Array, n: int) -> jax.Array:
    return _riemannian_draw(key, self._loc, self._scale, self._c, n)[0]

  def _sample_n_and_log_prob(self, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    # The density at the radius drawn, d_c(mu, z) = r: no distance computed back from the sample.
    return _riemannian_draw(key, self._loc, self._scale, self._c, n)

  def log_prob(self, value: ArrayLike) -> jax.Array:
    """The log-density at ``value``; ``-inf`` for points outside the ball (``c |z|^2 >= 1``)."""
    return self._on_support(
        lambda loc, z: _riemannian_log_prob(loc, jnp.broadcast_to(self._scale, z.shape[:-1]),
                                            self._c, z),
        value)


# The kernels below are jitted so that eager use compiles once instead of dispatching every op.


def _exp_transported(loc: jax.Array, loc_sq: jax.Array, loc_v: jax.Array, v_sq: jax.Array,
                     v: jax.Array, c) -> jax.Array:
  """``exp_mu(P_{0->mu}(v / lambda_0)) = mu (+) exp_0(v / 2)``, at distance ``|v|`` from mu.

  ``P_{0->mu}`` scales by ``2 / lambda_mu`` and ``exp_mu`` multiplies the length by
  ``lambda_mu``. From the per-point ``|mu|^2``, ``<mu, v>`` and ``|v|^2`` (shape (..., )) as
  ``a mu + b v`` (:func:`manifold.mobius_add_expmap0_coefficients`): one pass over the (..., d)
  arrays (``v`` may be an unevaluated expression of the draws) instead of the vector-valued
  Möbius composition.
  """
  a, b = manifold.mobius_add_expmap0_coefficients(loc_sq, 0.5 * loc_v, 0.25 * v_sq, c)
  return a[..., None] * loc + (0.5 * b)[..., None] * v


def _safe_sqrt(x: jax.Array) -> jax.Array:
  """``sqrt(x)`` for ``x >= 0`` with gradient 0 (not inf or NaN) at 0."""
  positive = x > jnp.finfo(x.dtype).tiny
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


@functools.partial(jax.jit, static_argnums=(4,))
def _wrapped_draw(key, loc, scale, c, n):
  """Samples and their log-densities (paper eq. 5 at ``v``, the tangent vector drawn).

  With ``v = scale * eps``, everything but the sample itself is a function of three inner
  products per point: ``|eps|^2`` (the Gaussian's exponent), ``|v|^2`` (the radius, in the
  log-determinant term) and ``<mu, v>``.
  """
  shape = (n,) + loc.shape
  eps = core.flat_normal(key, shape, loc.dtype)
  loc_b, scale_b = jnp.broadcast_to(loc, shape), jnp.broadcast_to(scale, shape)
  c = jnp.asarray(c, loc.dtype)
  sq_eps = manifold.event_sum(jnp.square(eps))
  v_sq = manifold.event_sum(jnp.square(scale_b * eps))
  loc_v = manifold.event_sum(loc_b * scale_b * eps)
  loc_sq = manifold.sq_norm(loc_b)
  z = _exp_transported(loc_b, loc_sq, loc_v, v_sq, scale_b * eps, c)
  r = _safe_sqrt(v_sq)
  # log N(v; 0, diag(scale^2)) with v / scale = eps; sum(log scale) once per batch element.
  log_norm = manifold.event_sum(jnp.log(scale) + 0.5 * math.log(2 * math.pi))
  log_gauss = -0.5 * sq_eps - jnp.broadcast_to(log_norm, shape[:-1])
  log_p = log_gauss - (shape[-1] - 1) * log_sinh_ratio(jnp.sqrt(c) * r)
  return z, log_p


@jax.jit
def _wrapped_log_prob(loc, scale, c, value):
  # v = lambda_0 P_{mu->0}(log_mu z) = lambda_mu log_mu z, the tangent Gaussian's argument (eq. 5).
  v = manifold.conformal_factor(loc, c)[..., None] * manifold.logmap(loc, value, c)
  r = manifold.safe_norm(v)
  log_gauss = -0.5 * manifold.event_sum(jnp.square(v / scale) + 2.0 * jnp.log(scale)
                                        + math.log(2 * math.pi))
  d = loc.shape[-1]
  return log_gauss - (d - 1) * log_sinh_ratio(jnp.sqrt(jnp.asarray(c, v.dtype)) * r)


@functools.partial(jax.jit, static_argnums=(4,))
def _riemannian_draw(key, loc, scale, c, n):
  """Samples ``z = mu (+) exp_0(r alpha / 2)`` (so ``d_c(mu, z) = r``) and their log-densities."""
  radius_key, direction_key = jax.random.split(key)
  shape = (n,) + loc.shape
  r = sample_radius(radius_key, scale, c, shape[-1], shape[:-1]).astype(loc.dtype)
  # alpha = e * inv_norm: the geometry needs only <mu, e>, and v = r alpha = (r inv_norm) e.
  e, inv_norm, alpha_sq = _uniform_direction(direction_key, shape, loc.dtype)
  loc_b = jnp.broadcast_to(loc, shape)
  loc_sq = manifold.sq_norm(loc_b)
  loc_alpha = inv_norm * manifold.dot(loc_b, e)
  z = _exp_transported(loc_b, loc_sq, loc_alpha * r, alpha_sq * jnp.square(r),
                       (r * inv_norm)[..., None] * e, jnp.asarray(c, loc.dtype))
  log_z = log_normalizer(scale, c, shape[-1]).astype(loc.dtype)
  log_p = -0.5 * jnp.square(r / jnp.broadcast_to(scale, r.shape)) - jnp.broadcast_to(log_z, r.shape)
  return z, log_p


@jax.jit
def _riemannian_log_prob(loc, scale, c, value):
  dist = manifold.distance(loc, value, c)
  return -0.5 * jnp.square(dist / scale) - log_normalizer(scale, c, loc.shape[-1]).astype(dist.dtype)
