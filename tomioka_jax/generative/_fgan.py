"""f-divergences, their Fenchel conjugates, and variational divergence minimization.

"f-GAN: Training Generative Neural Samplers using Variational Divergence Minimization",
Sebastian Nowozin, Botond Cseke, Ryota Tomioka, 2016, arXiv:1606.00709.

Every f-divergence of the paper's tables as :func:`divergence`, a NamedTuple of scalar
functions (generator ``f``, conjugate ``f_star``, output activation ``g_f``, the numerically
stable composite ``f*(g_f(v))``, the density ratio recovered from a critic output) that work
under ``jit``, ``vmap`` and ``grad``; the variational objective ``F(theta, omega)``; the
single-step gradient method (Algorithm 1) as a pure step over two pytrees of parameters; and
the Lambert W / Wright omega functions that the Jeffrey conjugate needs.

The variational representation (Section 2.2 of the paper): for any critic ``T``,

  D_f(P || Q) = int q f(p / q) dx >= E_P[T(x)] - E_Q[f*(T(x))],

with equality at ``T*(x) = f'(p(x) / q(x))``. The critic is written ``T = g_f(V)`` with an
unconstrained network ``V`` and an activation ``g_f`` onto the domain of ``f*`` (Table 2), so

  F(theta, omega) = E_P[g_f(V_omega(x))] - E_{Q_theta}[f*(g_f(V_omega(x)))].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.typing import ArrayLike

ScalarFn = Callable[[ArrayLike], jax.Array]

DIVERGENCES = ("kl", "reverse_kl", "pearson", "neyman", "squared_hellinger", "jeffrey",
               "jensen_shannon", "gan", "total_variation", "alpha")
_LOG2 = math.log(2.0)


class FDivergence(NamedTuple):
  """An f-divergence ``D_f(P || Q) = int q f(p / q) dx`` and what VDM needs of it.

  Every function is elementwise over arrays and differentiable where the maths is. Outside
  the domain of ``f*`` the conjugate is ``+inf`` (it is a supremum of affine functions).

  Attributes:
    name: the divergence's name (and its parameter, for ``alpha``).
    f: the convex generator ``f(u)`` on ``u > 0``, with ``f(1) = 0``.
    f_prime: its derivative ``f'(u)``.
    f_star: the Fenchel conjugate ``f*(t) = sup_{u > 0} u t - f(u)``.
    activation: the output activation ``g_f(v)`` mapping the reals into ``dom f*``.
    f_star_of_activation: ``f*(g_f(v))``, simplified so that it never cancels or overflows
      before the true value does.
    density_ratio: ``r(v) = (f*)'(g_f(v)) = (f')^{-1}(g_f(v))``, the estimate of ``p / q``
      at a point where the critic outputs ``v``.
    optimal_critic: ``v*(log r)``, the critic output with ``g_f(v*) = f'(r)``, as a function of
      the log density ratio ``log(p / q)``.
    f_star_domain: ``(lo, hi)``, the interval ``dom f*`` (open, except for total variation,
      whose domain is the closed ``[-1/2, 1/2]``).
    f_prime_at_1: ``f'(1)``, the critic value at which ``p = q``: the threshold for deciding
      ``p > q`` from the critic.
  """

  name: str
  f: ScalarFn
  f_prime: ScalarFn
  f_star: ScalarFn
  activation: ScalarFn
  f_star_of_activation: ScalarFn
  density_ratio: ScalarFn
  optimal_critic: ScalarFn
  f_star_domain: tuple[float, float]
  f_prime_at_1: float


# ----------------------------------------------------------------------------- special functions


def _float(x: ArrayLike) -> jax.Array:
  x = jnp.asarray(x)
  return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))


# The special functions are jitted (inlined when called under an outer jit) because eager
# callers would otherwise dispatch their ~40 elementwise operations one by one.
@jax.custom_jvp
@jax.jit
def wright_omega(z: ArrayLike) -> jax.Array:
  r"""The Wright omega function ``omega(z) = W(e^z)``, the solution of ``w + log w = z``.

  It is the Lambert W function of ``e^z`` computed without forming ``e^z``, so it is finite
  wherever its value is: ``omega(z) ~ e^z`` as ``z -> -inf`` and ``~ z - log z`` as
  ``z -> +inf``. Winitzki's approximation ``L (1 - log(1 + L) / (2 + L))``, ``L = log(1 + e^z)``,
  starts three iterations of the quartically convergent Fritsch-Shafer-Crowley scheme.

  .. math::
    \omega'(z) = \frac{\omega(z)}{1 + \omega(z)}

  Args:
    z: real input, any shape.

  Returns:
    ``omega(z)``, the same shape, a floating dtype.

  Example:
    >>> round(float(wright_omega(1.0)), 6)  # W(e) = 1
    1.0

  References:
    Lawrence, Corless, Jeffrey, "Algorithm 917: Complex double-precision evaluation of the
    Wright omega function", ACM TOMS 2012.
  """
  z = _float(z)
  # e^z is exact to rounding when it is below eps^2 (omega = e^z (1 - e^z + ...)), and the
  # iteration below would take log(0) where e^z underflows.
  tiny = z < -40.0
  zs = jnp.where(tiny | ~jnp.isfinite(z), 1.0, z)
  big_l = jax.nn.softplus(zs)
  w = big_l * (1.0 - jnp.log1p(big_l) / (2.0 + big_l))
  for _ in range(3):
    r = zs - w - jnp.log(w)
    # The published ratio ((1+w)(1+w+2r/3) - r/2) / ((1+w)(1+w+2r/3) - r), divided through by
    # (1 + w) so that it does not overflow for large z.
    a = 1.0 + w + 2.0 * r / 3.0
    b = r / (1.0 + w)
    w = w * (1.0 + b * (a - 0.5 * b) / (a - b))
  w = jnp.where(tiny, jnp.exp(z), w)
  return jnp.where(z == jnp.inf, jnp.inf, w)


@wright_omega.defjvp
def _wright_omega_jvp(primals, tangents):
  (z,), (dz,) = primals, tangents
  w = wright_omega(z)
  return w, w / (1.0 + w) * dz


@jax.custom_jvp
@jax.jit
def lambert_w(x: ArrayLike) -> jax.Array:
  r"""The principal branch ``W_0`` of the Lambert W function: ``W(x) e^{W(x)} = x``, ``x >= -1/e``.

  For ``x > 0`` it is ``wright_omega(log x)``; on ``[-1/e, 0]`` Halley's iteration starts from
  the branch-point series ``-1 + p - p^2/3 + 11 p^3 / 72``, ``p = sqrt(2 (e x + 1))``. Below
  ``-1/e`` the result is NaN (no real solution).

  .. math::
    W'(x) = \frac{1}{e^{W(x)} (1 + W(x))}

  Args:
    x: real input, any shape.

  Returns:
    ``W_0(x)``, the same shape, a floating dtype.

  Example:
    >>> round(float(lambert_w(1.0)), 6)  # the omega constant
    0.567143

  References:
    Corless, Gonnet, Hare, Jeffrey, Knuth, "On the Lambert W function", Adv. Comput. Math. 1996.
  """
  x = _float(x)
  positive = x > 0
  w_pos = wright_omega(jnp.log(jnp.where(positive, x, 1.0)))
  xn = jnp.where(positive, -0.1, x)
  p = jnp.sqrt(jnp.maximum(2.0 * (math.e * xn + 1.0), 0.0))
  w = jnp.where(xn < -0.25, -1.0 + p - p * p / 3.0 + 11.0 / 72.0 * p ** 3,
                xn - xn * xn + 1.5 * xn ** 3)
  for _ in range(4):
    ew = jnp.exp(w)
    h = w * ew - xn
    # Halley's step; at the branch point (w = -1) h' vanishes, and so does h.
    denom = ew * (w + 1.0) - (w + 2.0) * h / (2.0 * w + 2.0)
    w = jnp.where(jnp.abs(h) > 0, w - h / jnp.where(denom == 0, 1.0, denom), w)
  w_neg = jnp.where(x < -1.0 / math.e, jnp.nan, w)
  return jnp.where(positive, w_pos, jnp.where(x == 0, 0.0, w_neg))


@lambert_w.defjvp
def _lambert_w_jvp(primals, tangents):
  (x,), (dx,) = primals, tangents
  w = lambert_w(x)
  return w, dx / (jnp.exp(w) * (1.0 + w))


@jax.custom_jvp
def _log_softplus(x: jax.Array) -> jax.Array:
  """``log(log(1 + e^x))`` without underflow: it is ``x`` to double precision for ``x < -80``."""
  small = x < -80.0
  return jnp.where(small, x, jnp.log(jax.nn.softplus(jnp.where(small, 0.0, x))))


@_log_softplus.defjvp
def _log_softplus_jvp(primals, tangents):
  # sigmoid(x) / softplus(x), formed in log space: both factors underflow as x -> -inf while
  # the ratio tends to 1, and autodiff of the plain form multiplies 1/softplus (overflowing in
  # float32 from x ~ -44 on in the composites) by sigmoid.
  (x,), (dx,) = primals, tangents
  y = _log_softplus(x)
  return y, jnp.exp(jax.nn.log_sigmoid(x) - y) * dx


def _inv_softplus(s: jax.Array) -> jax.Array:
  """``y`` with ``softplus(y) = s > 0``: ``log(expm1(s))``, written as ``s + log(-expm1(-s))``."""
  return s + jnp.log(-jnp.expm1(-s))


def _where_domain(inside: jax.Array, t: jax.Array, safe: float,
                  fn: Callable[[jax.Array], jax.Array]) -> jax.Array:
  """``fn(t)`` inside ``dom f*`` and ``+inf`` outside, with gradients free of NaN."""
  return jnp.where(inside, fn(jnp.where(inside, t, safe)), jnp.inf)


# ----------------------------------------------------------------------------- the divergences


def _kl() -> FDivergence:
  return FDivergence(
      name="kl",
      f=lambda u: _float(u) * jnp.log(u),
      f_prime=lambda u: 1.0 + jnp.log(_float(u)),
      f_star=lambda t: jnp.exp(_float(t) - 1.0),
      activation=lambda v: _float(v),
      f_star_of_activation=lambda v: jnp.exp(_float(v) - 1.0),
      density_ratio=lambda v: jnp.exp(_float(v) - 1.0),
      optimal_critic=lambda lr: 1.0 + _float(lr),
      f_star_domain=(-math.inf, math.inf),
      f_prime_at_1=1.0)


def _reverse_kl() -> FDivergence:
  def f_star(t):
    t = _float(t)
    return _where_domain(t < 0, t, -1.0, lambda s: -1.0 - jnp.log(-s))

  return FDivergence(
      name="reverse_kl",
      f=lambda u: -jnp.log(_float(u)),
      f_prime=lambda u: -1.0 / _float(u),
      f_star=f_star,
      activation=lambda v: -jnp.exp(-_float(v)),
      # -1 - log(e^{-v}) = v - 1.
      f_star_of_activation=lambda v: _float(v) - 1.0,
      density_ratio=lambda v: jnp.exp(_float(v)),
      optimal_critic=lambda lr: _float(lr),
      f_star_domain=(-math.inf, 0.0),
      f_prime_at_1=-1.0)


def _pearson() -> FDivergence:
  # The conjugate of f(u) = (u - 1)^2 over u >= 0 (the density ratios), not over all reals: the
  # supremum sits at u = 1 + t/2 while t >= -2 and at u = 0 below, where f*(t) = -1. The paper's
  # t^2/4 + t agrees for t >= -2 and is a looser bound below (cf. rdevon/DIM#4).
  def f_star(t):
    t = _float(t)
    return jnp.where(t >= -2.0, 0.25 * t * t + t, -1.0)

  return FDivergence(
      name="pearson",
      f=lambda u: jnp.square(_float(u) - 1.0),
      f_prime=lambda u: 2.0 * (_float(u) - 1.0),
      f_star=f_star,
      activation=lambda v: _float(v),
      f_star_of_activation=f_star,
      density_ratio=lambda v: jnp.maximum(1.0 + 0.5 * _float(v), 0.0),
      optimal_critic=lambda lr: 2.0 * jnp.expm1(_float(lr)),
      f_star_domain=(-math.inf, math.inf),
      f_prime_at_1=0.0)


def _neyman() -> FDivergence:
  def f_star(t):
    t = _float(t)
    return _where_domain(t < 1, t, 0.0, lambda s: 2.0 - 2.0 * jnp.sqrt(1.0 - s))

  return FDivergence(
      name="neyman",
      f=lambda u: jnp.square(1.0 - _float(u)) / u,
      f_prime=lambda u: 1.0 - 1.0 / jnp.square(_float(u)),
      f_star=f_star,
      activation=lambda v: -jnp.expm1(-_float(v)),
      # 1 - t = e^{-v}, so f* = 2 - 2 e^{-v/2}.
      f_star_of_activation=lambda v: 2.0 - 2.0 * jnp.exp(-0.5 * _float(v)),
      density_ratio=lambda v: jnp.exp(0.5 * _float(v)),
      optimal_critic=lambda lr: 2.0 * _float(lr),
      f_star_domain=(-math.inf, 1.0),
      f_prime_at_1=0.0)


def _squared_hellinger() -> FDivergence:
  def f_star(t):
    t = _float(t)
    return _where_domain(t < 1, t, 0.0, lambda s: s / (1.0 - s))

  return FDivergence(
      name="squared_hellinger",
      f=lambda u: jnp.square(jnp.sqrt(_float(u)) - 1.0),
      f_prime=lambda u: 1.0 - 1.0 / jnp.sqrt(_float(u)),
      f_star=f_star,
      activation=lambda v: -jnp.expm1(-_float(v)),
      # t / (1 - t) with 1 - t = e^{-v} is e^v - 1.
      f_star_of_activation=lambda v: jnp.expm1(_float(v)),
      density_ratio=lambda v: jnp.exp(2.0 * _float(v)),
      optimal_critic=lambda lr: 0.5 * _float(lr),
      f_star_domain=(-math.inf, 1.0),
      f_prime_at_1=0.0)


@jax.custom_jvp
def _jeffrey_f_star(t: ArrayLike) -> jax.Array:
  # With w = W(e^{1-t}) = omega(1 - t), the maximiser of u t - f(u) is u = 1/w, and
  # f*(t) = w + 1/w + t - 2 = 1/w - log(w) - 1 (using w + log w = 1 - t): the second form does
  # not cancel when t -> -inf, where w and -t are both large.
  w = wright_omega(1.0 - _float(t))
  return 1.0 / w - jnp.log(w) - 1.0


@_jeffrey_f_star.defjvp
def _jeffrey_f_star_jvp(primals, tangents):
  # (f*)'(t) = u* = 1/w directly; the chain rule through 1/w would square 1/w and overflow.
  (t,), (dt,) = primals, tangents
  w = wright_omega(1.0 - _float(t))
  return 1.0 / w - jnp.log(w) - 1.0, dt / w


def _jeffrey() -> FDivergence:
  return FDivergence(
      name="jeffrey",
      f=lambda u: (_float(u) - 1.0) * jnp.log(u),
      f_prime=lambda u: jnp.log(_float(u)) + 1.0 - 1.0 / u,
      f_star=_jeffrey_f_star,
      activation=lambda v: _float(v),
      f_star_of_activation=_jeffrey_f_star,
      density_ratio=lambda v: 1.0 / wright_omega(1.0 - _float(v)),
      optimal_critic=lambda lr: _float(lr) - jnp.expm1(-_float(lr)),
      f_star_domain=(-math.inf, math.inf),
      f_prime_at_1=0.0)


def _jensen_shannon() -> FDivergence:
  def f_star(t):
    t = _float(t)
    return _where_domain(t < _LOG2, t, 0.0, lambda s: -jnp.log(2.0 - jnp.exp(s)))

  return FDivergence(
      name="jensen_shannon",
      f=lambda u: (-(_float(u) + 1.0) * (jnp.log1p(u) - _LOG2) + u * jnp.log(u)),
      f_prime=lambda u: _LOG2 + jnp.log(_float(u)) - jnp.log1p(u),
      f_star=f_star,
      activation=lambda v: _LOG2 - jax.nn.softplus(-_float(v)),
      # 2 - e^{g} = 2 sigmoid(-v), so f* = softplus(v) - log 2.
      f_star_of_activation=lambda v: jax.nn.softplus(_float(v)) - _LOG2,
      density_ratio=lambda v: jnp.exp(_float(v)),
      optimal_critic=lambda lr: _float(lr),
      f_star_domain=(-math.inf, _LOG2),
      f_prime_at_1=0.0)


def _gan() -> FDivergence:
  def f_star(t):
    t = _float(t)
    return _where_domain(t < 0, t, -1.0, lambda s: -jnp.log(-jnp.expm1(s)))

  return FDivergence(
      name="gan",
      f=lambda u: _float(u) * jnp.log(u) - (u + 1.0) * jnp.log1p(u),
      f_prime=lambda u: jnp.log(_float(u)) - jnp.log1p(u),
      f_star=f_star,
      activation=lambda v: -jax.nn.softplus(-_float(v)),
      # 1 - e^{g} = sigmoid(-v), so f* = softplus(v).
      f_star_of_activation=lambda v: jax.nn.softplus(_float(v)),
      density_ratio=lambda v: jnp.exp(_float(v)),
      optimal_critic=lambda lr: _float(lr),
      f_star_domain=(-math.inf, 0.0),
      f_prime_at_1=-_LOG2)


def _total_variation() -> FDivergence:
  def f_star(t):
    t = _float(t)
    return jnp.where(jnp.abs(t) <= 0.5, t, jnp.inf)

  def density_ratio(v):
    raise ValueError("divergence 'total_variation' has no density-ratio estimate: f'(u) = "
                     "sign(u - 1)/2 is not invertible; compare activation(v) with "
                     "f_prime_at_1 = 0 to decide p > q")

  def optimal_critic(lr):
    lr = _float(lr)
    return jnp.where(lr > 0, jnp.inf, jnp.where(lr < 0, -jnp.inf, 0.0))

  return FDivergence(
      name="total_variation",
      f=lambda u: 0.5 * jnp.abs(_float(u) - 1.0),
      f_prime=lambda u: 0.5 * jnp.sign(_float(u) - 1.0),
      f_star=f_star,
      activation=lambda v: 0.5 * jnp.tanh(_float(v)),
      f_star_of_activation=lambda v: 0.5 * jnp.tanh(_float(v)),
      density_ratio=density_ratio,
      optimal_critic=optimal_critic,
      f_star_domain=(-0.5, 0.5),
      f_prime_at_1=0.0)


def _alpha(alpha: float) -> FDivergence:
  r"""The alpha-divergence ``f(u) = (u^a - 1 - a (u - 1)) / (a (a - 1))``, any real ``a``.

  ``f'(u) = (u^{a-1} - 1) / (a - 1)`` ranges over ``(-inf, 1/(1-a))`` for ``a < 1`` and over
  ``(1/(1-a), inf)`` for ``a > 1``, hence ``g_f(v) = 1/(1-a) -+ softplus(-+v)``. Writing
  ``c s = 1 + (a - 1) t`` with ``c = |1 - a|`` and ``s = softplus(-+v)``, the conjugate is
  ``f*(t) = ((c s)^{a/(a-1)} - 1) / a``, computed as an ``expm1`` of a log so that ``a`` near 0
  is accurate. ``a = 0`` and ``a = 1`` are the limits: ``f = u - 1 - log u`` (reverse-KL-like)
  and ``f = u log u - u + 1`` (KL-like).
  """
  name = f"alpha({alpha:g})"
  if alpha == 1.0:
    return FDivergence(
        name=name,
        f=lambda u: _float(u) * jnp.log(u) - u + 1.0,
        f_prime=lambda u: jnp.log(_float(u)),
        f_star=lambda t: jnp.expm1(_float(t)),
        activation=lambda v: _float(v),
        f_star_of_activation=lambda v: jnp.expm1(_float(v)),
        density_ratio=lambda v: jnp.exp(_float(v)),
        optimal_critic=lambda lr: _float(lr),
        f_star_domain=(-math.inf, math.inf),
        f_prime_at_1=0.0)
  if alpha == 0.0:
    def f_star0(t):
      t = _float(t)
      return _where_domain(t < 1, t, 0.0, lambda s: -jnp.log1p(-s))

    return FDivergence(
        name=name,
        f=lambda u: _float(u) - 1.0 - jnp.log(u),
        f_prime=lambda u: 1.0 - 1.0 / _float(u),
        f_star=f_star0,
        activation=lambda v: 1.0 - jax.nn.softplus(-_float(v)),
        f_star_of_activation=lambda v: -_log_softplus(-_float(v)),
        density_ratio=lambda v: 1.0 / jax.nn.softplus(-_float(v)),
        optimal_critic=lambda lr: -_inv_softplus(jnp.exp(-_float(lr))),
        f_star_domain=(-math.inf, 1.0),
        f_prime_at_1=0.0)

  a = float(alpha)
  sign = 1.0 if a < 1 else -1.0  # s = softplus(-sign * v)
  c = abs(1.0 - a)
  bound = 1.0 / (1.0 - a)

  def f(u):
    u = _float(u)
    return (u ** a - 1.0 - a * (u - 1.0)) / (a * (a - 1.0))

  def f_prime(u):
    return jnp.expm1((a - 1.0) * jnp.log(_float(u))) / (a - 1.0)

  def from_log_cs(log_cs):
    return jnp.expm1(a / (a - 1.0) * log_cs) / a

  def f_star(t):
    t = _float(t)
    inside = sign * (bound - t) > 0
    return _where_domain(inside, t, 0.0, lambda s: from_log_cs(jnp.log1p((a - 1.0) * s)))

  def log_cs(v):
    return math.log(c) + _log_softplus(-sign * _float(v))

  return FDivergence(
      name=name,
      f=f,
      f_prime=f_prime,
      f_star=f_star,
      activation=lambda v: bound - sign * jax.nn.softplus(-sign * _float(v)),
      f_star_of_activation=lambda v: from_log_cs(log_cs(v)),
      density_ratio=lambda v: jnp.exp(log_cs(v) / (a - 1.0)),
      # (c s)^{1/(a-1)} = r  =>  s = r^{a-1} / c.
      optimal_critic=lambda lr: -sign * _inv_softplus(jnp.exp((a - 1.0) * _float(lr)) / c),
      f_star_domain=(-math.inf, bound) if a < 1 else (bound, math.inf),
      f_prime_at_1=0.0)


_BUILDERS: dict[str, Callable[[], FDivergence]] = {
    "kl": _kl,
    "reverse_kl": _reverse_kl,
    "pearson": _pearson,
    "neyman": _neyman,
    "squared_hellinger": _squared_hellinger,
    "jeffrey": _jeffrey,
    "jensen_shannon": _jensen_shannon,
    "gan": _gan,
    "total_variation": _total_variation,
}


def divergence(name: str, **params: Any) -> FDivergence:
  r"""The f-divergence ``name`` of the f-GAN paper's Tables 1 and 2.

  .. math::
    D_f(P \| Q) = \int q(x) f\Big(\frac{p(x)}{q(x)}\Big) dx
      \ge \sup_T E_P[T(x)] - E_Q[f^*(T(x))],  \quad T^* = f'(p / q).

  Args:
    name: one of ``DIVERGENCES``: "kl", "reverse_kl", "pearson", "neyman",
      "squared_hellinger", "jeffrey", "jensen_shannon", "gan", "total_variation", "alpha".
    **params: ``alpha=a`` (any finite real) for "alpha"; the others take none. ``a = 0``
      and ``a = 1`` are the limits of the family; ``a = 1/2`` is twice the squared Hellinger.

  Returns:
    An :class:`FDivergence` of scalar functions (close over it; it is not a pytree of arrays).

  Raises:
    ValueError: an unknown name, a missing, unexpected or non-finite parameter.

  Example:
    >>> js = divergence("jensen_shannon")
    >>> v = jnp.array([-30.0, 0.0, 30.0])
    >>> bool(jnp.all(jnp.isfinite(js.f_star_of_activation(v))))
    True

  References:
    Nowozin, Cseke, Tomioka, "f-GAN", arXiv:1606.00709, Tables 1, 2 and 6.
  """
  if name == "alpha":
    unexpected = sorted(set(params) - {"alpha"})
    if unexpected:
      raise ValueError(f"divergence 'alpha' takes only the parameter 'alpha', got {unexpected}")
    if "alpha" not in params:
      raise ValueError("divergence 'alpha' needs the parameter alpha (a finite real, e.g. "
                       "divergence('alpha', alpha=0.5))")
    alpha = params["alpha"]
    try:
      value = float(alpha)
    except (TypeError, ValueError):
      value = math.nan
    if isinstance(alpha, bool) or not math.isfinite(value):
      raise ValueError(f"alpha must be a finite real number, got {alpha!r}")
    return _alpha(value)
  if name not in _BUILDERS:
    raise ValueError(f"name must be one of {DIVERGENCES}, got {name!r}")
  if params:
    raise ValueError(f"divergence {name!r} takes no parameters, got {sorted(params)}")
  return _BUILDERS[name]()


def switch_divergence(divergences: Sequence[FDivergence], index: ArrayLike) -> FDivergence:
  """One :class:`FDivergence` that applies ``divergences[index]`` for a traced ``index``.

  With it a single compiled program trains several divergences at once, ``vmap``-ed over
  ``index`` (``lax.switch`` under ``vmap`` evaluates every branch and selects, which is cheap
  next to the networks). ``f_star_domain`` and ``f_prime_at_1`` become arrays.

  Args:
    divergences: the candidates (built by :func:`divergence`).
    index: an integer scalar, possibly traced.

  Returns:
    An :class:`FDivergence` whose functions dispatch on ``index``.
  """
  if not divergences:
    raise ValueError("divergences must be a non-empty sequence of FDivergence")
  index = jnp.asarray(index, jnp.int32)

  def dispatch(field: str) -> ScalarFn:
    branches = [getattr(d, field) for d in divergences]
    return lambda x: lax.switch(index, branches, _float(x))

  return FDivergence(
      name="|".join(d.name for d in divergences),
      f=dispatch("f"), f_prime=dispatch("f_prime"), f_star=dispatch("f_star"),
      activation=dispatch("activation"),
      f_star_of_activation=dispatch("f_star_of_activation"),
      density_ratio=dispatch("density_ratio"), optimal_critic=dispatch("optimal_critic"),
      f_star_domain=(jnp.asarray([d.f_star_domain[0] for d in divergences])[index],
                     jnp.asarray([d.f_star_domain[1] for d in divergences])[index]),
      f_prime_at_1=jnp.asarray([d.f_prime_at_1 for d in divergences])[index])


# ----------------------------------------------------------------------------- objective and step


def variational_objective(div: FDivergence, v_p: ArrayLike, v_q: ArrayLike) -> jax.Array:
  r"""The f-GAN objective ``F`` from critic outputs on samples of P and of Q.

  .. math::
    F = \frac{1}{n} \sum_i g_f(v^P_i) - \frac{1}{m} \sum_j f^*(g_f(v^Q_j))

  A Monte Carlo estimate of a lower bound on ``D_f(P || Q)``, tight at the optimal critic.

  Args:
    div: the divergence.
    v_p: critic outputs ``V(x)`` on samples ``x ~ P``, shape ``(n,)``.
    v_q: critic outputs on samples ``x ~ Q``, shape ``(m,)``.

  Returns:
    The scalar ``F``.

  Example:
    >>> kl = divergence("kl")
    >>> float(variational_objective(kl, jnp.ones(4), jnp.ones(4)))  # T = f'(1): F = 0
    0.0
  """
  return (jnp.mean(div.activation(v_p))
          - jnp.mean(div.f_star_of_activation(v_q)))


class FGANState(NamedTuple):
  """The two players' parameters and optimizer states.

  Attributes:
    generator_params: the sampler's parameters ``theta`` (any pytree).
    critic_params: the variational function's parameters ``omega`` (any pytree).
    generator_opt_state: optax state for ``theta``.
    critic_opt_state: optax state for ``omega``.
    step: number of steps taken (int32 scalar).
  """

  generator_params: Any
  critic_params: Any
  generator_opt_state: optax.OptState
  critic_opt_state: optax.OptState
  step: jax.Array


class FGANMetrics(NamedTuple):
  """Diagnostics of one step, at the parameters before the update.

  Attributes:
    objective: the minibatch estimate of ``F(theta, omega)``.
    generator_loss: what the generator's gradient descended (``F`` for "minimax",
      ``-E_Q[g_f(V)]`` for "nonsaturating").
  """

  objective: jax.Array
  generator_loss: jax.Array


def init_fgan_state(generator_params: Any, critic_params: Any,
                    generator_optimizer: optax.GradientTransformation,
                    critic_optimizer: optax.GradientTransformation) -> FGANState:
  """The initial :class:`FGANState`: both optimizers initialised, step 0.

  Parameters are made strongly typed (a weakly typed Python-scalar parameter would change type
  after the first update and make a jitted step compile twice).
  """
  strong = lambda tree: jax.tree.map(lambda a: jnp.asarray(a, dtype=jnp.asarray(a).dtype), tree)
  generator_params, critic_params = strong(generator_params), strong(critic_params)
  return FGANState(generator_params, critic_params, generator_optimizer.init(generator_params),
                   critic_optimizer.init(critic_params), jnp.zeros((), jnp.int32))


_GENERATOR_LOSSES = ("minimax", "nonsaturating")


def make_fgan_step(
    div: FDivergence,
    generator_apply: Callable[[Any, jax.Array], jax.Array],
    critic_apply: Callable[[Any, jax.Array], jax.Array],
    generator_optimizer: optax.GradientTransformation,
    critic_optimizer: optax.GradientTransformation,
    generator_loss: str = "minimax",
) -> Callable[[FGANState, jax.Array, jax.Array], tuple[FGANState, FGANMetrics]]:
  r"""The single-step gradient method (Algorithm 1) as a pure step.

  Both gradients are taken at the same point ``(theta_t, omega_t)`` and applied at once:

  .. math::
    \omega_{t+1} = \omega_t + \eta \nabla_\omega F, \qquad
    \theta_{t+1} = \theta_t - \eta \nabla_\theta F,

  with the step sizes and preconditioning of the two optax optimizers. With
  ``generator_loss="nonsaturating"`` the generator instead ascends ``E_Q[g_f(V)]``
  (Section 3.2 of the paper), which has the same fixed points and stronger early gradients.

  Args:
    div: the divergence (from :func:`divergence` or :func:`switch_divergence`).
    generator_apply: ``(theta, z) -> x``, a batch of samples of ``Q_theta`` from noise ``z``.
    critic_apply: ``(omega, x) -> v``, one unconstrained critic output per sample, ``(batch,)``.
    generator_optimizer: optax transformation for ``theta`` (minimises).
    critic_optimizer: optax transformation for ``omega`` (it is fed ``-grad F``).
    generator_loss: "minimax" (Algorithm 1 exactly) or "nonsaturating".

  Returns:
    ``step(state, x_real, z) -> (state, FGANMetrics)``, pure, to be jitted or scanned.

  Example:
    >>> import optax
    >>> div = divergence("gan")
    >>> gen = lambda th, z: th["mu"] + z
    >>> critic = lambda om, x: om["a"] * x + om["b"]
    >>> opt = optax.sgd(0.1)
    >>> state = init_fgan_state({"mu": jnp.zeros(())}, {"a": jnp.zeros(()), "b": jnp.zeros(())},
    ...                         opt, opt)
    >>> step = jax.jit(make_fgan_step(div, gen, critic, opt, opt))
    >>> state, metrics = step(state, jnp.ones(8), jnp.zeros(8))
    >>> int(state.step)
    1

  References:
    Nowozin, Cseke, Tomioka, "f-GAN", arXiv:1606.00709, Algorithm 1 and Section 3.2.
  """
  if generator_loss not in _GENERATOR_LOSSES:
    raise ValueError(f"generator_loss must be one of {_GENERATOR_LOSSES}, got {generator_loss!r}")

  def objective(theta, omega, x_real, z):
    v_p = critic_apply(omega, x_real)
    v_q = critic_apply(omega, generator_apply(theta, z))
    return variational_objective(div, v_p, v_q)

  def step(state: FGANState, x_real: jax.Array, z: jax.Array):
    theta, omega = state.generator_params, state.critic_params
    # One backward pass gives both players' gradients at the same point (theta_t, omega_t).
    value, (g_theta, g_omega) = jax.value_and_grad(objective, argnums=(0, 1))(
        theta, omega, x_real, z)
    gen_value = value
    if generator_loss == "nonsaturating":
      def heuristic(th):
        return -jnp.mean(div.activation(critic_apply(omega, generator_apply(th, z))))
      gen_value, g_theta = jax.value_and_grad(heuristic)(theta)
    ascent = jax.tree.map(jnp.negative, g_omega)
    u_omega, critic_opt_state = critic_optimizer.update(ascent, state.critic_opt_state, omega)
    u_theta, gen_opt_state = generator_optimizer.update(g_theta, state.generator_opt_state,
                                                        theta)
    new_state = FGANState(optax.apply_updates(theta, u_theta),
                          optax.apply_updates(omega, u_omega), gen_opt_state,
                          critic_opt_state, state.step + 1)
    return new_state, FGANMetrics(objective=value, generator_loss=gen_value)

  return step


def density_ratio(div: FDivergence, v: ArrayLike) -> jax.Array:
  """The density-ratio estimate ``p(x)/q(x) ~ (f*)'(g_f(V(x)))`` from critic outputs ``v``.

  At the optimal critic ``g_f(V*) = f'(p/q)`` and ``(f*)' = (f')^{-1}``, so it is exact there.

  Args:
    div: the divergence the critic was trained with (not "total_variation", whose ``f'`` is
      not invertible).
    v: critic outputs, any shape.

  Returns:
    The estimated ratios, the shape of ``v``.
  """
  return div.density_ratio(v)
