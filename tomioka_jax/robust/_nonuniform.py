"""Certified non-uniform bounds: the largest-volume certified box by an augmented Lagrangian.

Liu, Tomioka, Cevher, "On Certifying Non-uniform Bound against Adversarial Attacks", ICML 2019
(arXiv 1903.06603), Section 4, with the schedules and defaults of its code
(liuchen11/CertifyNonuniformBounds, ``run/certify.py``).

For a correctly classified point ``x_0`` with label ``y`` and per-feature half-widths ``eps``,
let ``m_j(eps)`` be a lower bound on ``f_y(x) - f_j(x)`` over the box ``|x - x_0| <= eps``
(:func:`tomioka_jax.robust.margin_bounds`; the reference's separate-logit bound ``L_y - U_j``
by default). The paper maximizes the box's log-volume subject to the certified margin,

    max_eps  sum_i log eps_i    s.t.  m_j(eps) - delta >= 0  for all j != y,

parametrized as ``eps = v * v``, by the augmented Lagrangian (Rockafellar's form for
inequality constraints) with multipliers ``lambda_j >= 0`` and penalty ``beta``:

    e_j = min(m_j(eps) - delta, -lambda_j / beta),
    L(v) = -sum_i log eps_i + sum_{j != y} [lambda_j e_j + beta / 2 e_j^2],

minimized by plain gradient steps on ``v`` (the reference's SGD, learning rate 1e-3 on the
loss averaged over its batch of ``batch_size = 10`` points, i.e. a step of ``lr / 10`` per
point), with ``lambda <- lambda + beta e`` every ``dual_every = 5`` steps and ``beta <- 5
beta`` every ``beta_every = 80`` steps, 400 steps from ``eps = 1e-3`` with ``delta = 1e-4``.
The result need not be feasible, so a final search multiplies ``eps`` by 0.99 until the
margin is certified (at most 1000 times); if the loop diverged (non-finite ``eps``, which the
reference would return), the search starts from ``eps_init`` instead. The box is the l_inf box ``x_0 +- eps`` itself: the
reference does not intersect it with the data range, and neither do we.

The uniform baseline (one ``eps`` for all features) is found by bisection on the same
certificate (:func:`certify_uniform`), which for a fixed relaxation gives the largest
certifiable uniform radius, at least what the reference's augmented Lagrangian in its
``uniform`` mode reaches. The two are compared by the log-volume ratio ``sum_i log eps_i^NU - d
log eps^U``.

Everything runs in ``lax.scan`` / ``lax.while_loop`` under one ``jit`` and is ``vmap``-ed over
points.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tomioka_jax import core
from tomioka_jax.robust import _bounds as bounds


@dataclasses.dataclass(frozen=True)
class CertifyOptions:
  """How the certified boxes are searched; defaults are the reference's (``run/certify.py``).

  Attributes:
    iterations: gradient steps of the augmented Lagrangian (400).
    learning_rate: SGD's step on the batch-averaged loss (1e-3).
    batch_size: the reference averages the loss over the correctly classified points of a
      batch of 10; each point's step is ``learning_rate / batch_size`` (exact when the whole
      batch is correctly classified).
    beta: the initial penalty (1).
    beta_growth: ``beta`` is multiplied by this (5) ...
    beta_every: ... every this many steps (80) ...
    beta_start: ... after this many steps (0, the reference's ``inc_min``).
    dual_every: ``lambda <- lambda + beta e`` every this many steps (5).
    eps_init: the starting half-width of every feature (1e-3).
    delta: the certified margin (1e-4).
    shrink: the final search's factor (0.99) ...
    max_shrink: ... applied at most this many times (1000).
    method: the margin bound, ``"logits"`` (the reference's ``L_y - U_j``) or ``"margin"``
      (back-substituted margins, tighter; see :func:`tomioka_jax.robust.margin_bounds`).
    bisection_steps: halvings of the uniform search's interval (50).
    eps_max: the uniform search's upper end (10).
  """

  iterations: int = 400
  learning_rate: float = 1e-3
  batch_size: int = 10
  beta: float = 1.0
  beta_growth: float = 5.0
  beta_every: int = 80
  beta_start: int = 0
  dual_every: int = 5
  eps_init: float = 1e-3
  delta: float = 1e-4
  shrink: float = 0.99
  max_shrink: int = 1000
  method: str = "logits"
  bisection_steps: int = 50
  eps_max: float = 10.0

  def __post_init__(self):
    for name in ("iterations", "batch_size", "beta_every", "dual_every", "bisection_steps"):
      value = getattr(self, name)
      if not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    for name in ("beta_start", "max_shrink"):
      value = getattr(self, name)
      if not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    for name in ("learning_rate", "beta", "eps_init", "eps_max"):
      value = getattr(self, name)
      if not (isinstance(value, (int, float)) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not (isinstance(self.beta_growth, (int, float)) and self.beta_growth >= 1):
      raise ValueError(f"beta_growth must be a number >= 1, got {self.beta_growth!r}")
    if not (isinstance(self.delta, (int, float)) and self.delta >= 0):
      raise ValueError(f"delta must be a number >= 0, got {self.delta!r}")
    if not (isinstance(self.shrink, (int, float)) and 0 < self.shrink < 1):
      raise ValueError(f"shrink must lie in (0, 1), got {self.shrink!r}")
    if self.method not in bounds.MARGIN_METHODS:
      raise ValueError(f"method must be one of {bounds.MARGIN_METHODS}, got {self.method!r}")


REFERENCE_OPTIONS = CertifyOptions()


class Certificate(NamedTuple):
  """A certified box ``x_0 +- eps`` per point (leading axes: the points).

  Attributes:
    eps: (..., d) the half-widths; zeros where the point is misclassified.
    log_volume: (...) ``sum_i log eps_i`` (``-inf`` where misclassified).
    margin: (...) the certified margin ``min_{j != y} m_j(eps)`` at the returned ``eps``.
    certified: (...) the point is correctly classified and ``margin >= delta``.
    correct: (...) the network classifies ``x_0`` as ``y``.
    shrink_steps: (...) how many times the final search shrank ``eps`` (0 for uniform).
  """

  eps: jax.Array
  log_volume: jax.Array
  margin: jax.Array
  certified: jax.Array
  correct: jax.Array
  shrink_steps: jax.Array


def _margin_lower(layers, x0, eps, label, method):
  lower, _ = bounds.margin_bounds(layers, x0 - eps, x0 + eps, label, method=method)
  return lower


def _min_other(values, label):
  is_label = jnp.arange(values.shape[-1]) == label
  return jnp.min(jnp.where(is_label, jnp.inf, values))


def certified_margin(layers: bounds.Layers, x0: jax.Array, label: jax.Array, eps: jax.Array, *,
                     method: str = "logits") -> jax.Array:
  """``min_{j != y}`` of the lower bound on ``f_y - f_j`` over the box ``x0 +- eps``.

  The box is certified for ``y`` with margin ``delta`` when this is ``>= delta``.

  Args:
    layers: the network (see :mod:`tomioka_jax.robust`).
    x0: (..., d) centres; label: (...) integer labels; eps: half-widths, broadcast to ``x0``.
    method: as :func:`tomioka_jax.robust.margin_bounds`.

  Raises:
    ValueError: (when concrete) ``eps < 0``; the checks of ``margin_bounds``.
  """
  eps = jnp.broadcast_to(jnp.asarray(eps, jnp.result_type(x0, float)), jnp.shape(x0))
  if core.is_concrete(eps) and np.any(np.asarray(eps) < 0):
    raise ValueError(f"eps must be >= 0, got min {float(np.min(np.asarray(eps)))}")
  lower, _ = bounds.margin_bounds(layers, x0 - eps, x0 + eps, label, method=method)
  fn = jnp.vectorize(_min_other, signature="(k),()->()")
  return fn(lower, jnp.asarray(label))


def _augmented_lagrangian(layers, x0, label, options: CertifyOptions):
  """The reference's loop on one point; returns ``v`` after ``options.iterations`` steps."""
  num_out = layers[-1].weight.shape[1]
  other = (jnp.arange(num_out) != label).astype(x0.dtype)
  step = options.learning_rate / options.batch_size

  def loss_fn(v, lam, beta):
    eps = v * v
    err = _margin_lower(layers, x0, eps, label, options.method) - options.delta
    e = jnp.minimum(err, -lam / beta) * other
    loss = -jnp.sum(jnp.log(eps)) + jnp.sum(lam * e) + beta / 2 * jnp.sum(e * e)
    return loss, e

  grad_fn = jax.grad(loss_fn, has_aux=True)

  def body(carry, t):
    v, lam, beta = carry
    g, e = grad_fn(v, lam, beta)
    v = v - step * g
    n = t + 1
    lam = jnp.where(n % options.dual_every == 0, lam + beta * e, lam)
    grow = (n > options.beta_start) & ((n - options.beta_start) % options.beta_every == 0)
    beta = jnp.where(grow, beta * options.beta_growth, beta)
    return (v, lam, beta), None

  v0 = jnp.full(x0.shape, np.sqrt(options.eps_init), x0.dtype)
  carry = (v0, jnp.zeros((num_out,), x0.dtype), jnp.asarray(options.beta, x0.dtype))
  (v, _, _), _ = jax.lax.scan(body, carry, jnp.arange(options.iterations))
  return v


def _shrink(layers, x0, label, eps, options: CertifyOptions):
  """The reference's final search: ``eps *= shrink`` until certified (at most max_shrink)."""

  def margin(eps):
    return _min_other(_margin_lower(layers, x0, eps, label, options.method), label)

  def cond(state):
    eps, m, k = state
    return (m < options.delta) & (k < options.max_shrink)

  def body(state):
    eps, _, k = state
    eps = eps * options.shrink
    return eps, margin(eps), k + 1

  return jax.lax.while_loop(cond, body, (eps, margin(eps), jnp.zeros((), jnp.int32)))


def _finish(layers, x0, label, eps, margin, shrink_steps, options):
  correct = jnp.argmax(bounds.apply_layers(layers, x0)) == label
  eps = jnp.where(correct, eps, 0.0)
  log_volume = jnp.where(correct, jnp.sum(jnp.log(eps)), -jnp.inf)
  certified = correct & (margin >= options.delta)
  return Certificate(eps, log_volume, margin, certified, correct, shrink_steps)


def _nonuniform_one(layers, x0, label, options):
  v = _augmented_lagrangian(layers, x0, label, options)
  eps = v * v
  # A diverged loop (a step through v = 0 blows the barrier's gradient up) restarts the shrink
  # from eps_init; the reference would return NaN there.
  eps = jnp.where(jnp.all(jnp.isfinite(eps)), eps, options.eps_init)
  eps, margin, k = _shrink(layers, x0, label, eps, options)
  return _finish(layers, x0, label, eps, margin, k, options)


def _uniform_one(layers, x0, label, options):
  def ok(r):
    eps = jnp.full(x0.shape, r, x0.dtype)
    m = _min_other(_margin_lower(layers, x0, eps, label, options.method), label)
    return m >= options.delta

  def body(_, state):
    lo, hi = state
    mid = (lo + hi) / 2
    good = ok(mid)
    return jnp.where(good, mid, lo), jnp.where(good, hi, mid)

  hi0 = jnp.asarray(options.eps_max, x0.dtype)
  lo, _ = jax.lax.fori_loop(0, options.bisection_steps, body, (jnp.zeros_like(hi0), hi0))
  r = jnp.where(ok(hi0), hi0, lo)
  eps = jnp.full(x0.shape, r, x0.dtype)
  margin = _min_other(_margin_lower(layers, x0, eps, label, options.method), label)
  return _finish(layers, x0, label, eps, margin, jnp.zeros((), jnp.int32), options)


@functools.partial(jax.jit, static_argnames=("options", "uniform"))
def _certify_batch(layers, x, labels, options, uniform):
  one = _uniform_one if uniform else _nonuniform_one
  return jax.vmap(lambda x0, y: one(layers, x0, y, options))(x, labels)


def _prepare(layers, x, label):
  layers = bounds.as_layers(layers)
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.float32)
  d = layers[0].weight.shape[0]
  if x.ndim not in (1, 2) or x.shape[-1] != d:
    raise ValueError(f"x must have shape ({d},) or (n, {d}) (the first layer's fan_in), got "
                     f"{x.shape}")
  label = jnp.asarray(label)
  if label.shape != x.shape[:-1]:
    raise ValueError(f"label must have shape {x.shape[:-1]} (one per point), got {label.shape}")
  bounds.check_label(label, layers[-1].weight.shape[1])
  return layers, x, label


def _run(layers, x, label, options, uniform):
  if not isinstance(options, CertifyOptions):
    raise ValueError(f"options must be a CertifyOptions, got {type(options).__name__}")
  layers, x, label = _prepare(layers, x, label)
  single = x.ndim == 1
  xb, lb = (x[None], label[None]) if single else (x, label)
  cert = _certify_batch(layers, xb, lb.astype(jnp.int32), options, uniform)
  return jax.tree.map(lambda a: a[0], cert) if single else cert


def certify_nonuniform(layers: bounds.Layers, x: jax.Array, label: jax.Array,
                       options: CertifyOptions = REFERENCE_OPTIONS) -> Certificate:
  """Per-feature certified half-widths by the reference's augmented Lagrangian + shrink.

  Args:
    layers: the network (see :mod:`tomioka_jax.robust`).
    x: (d,) one point or (n, d) points (``vmap``-ed).
    label: () or (n,) integer labels.
    options: :class:`CertifyOptions` (hashable: one compilation per options value).

  Returns:
    A :class:`Certificate`; its ``certified`` is False only where the point is misclassified
    or the shrink search ran out of steps.

  Raises:
    ValueError: bad layers, shapes or labels (label checks only when concrete), or options
      that are not a :class:`CertifyOptions`.
  """
  return _run(layers, x, label, options, uniform=False)


def certify_uniform(layers: bounds.Layers, x: jax.Array, label: jax.Array,
                    options: CertifyOptions = REFERENCE_OPTIONS) -> Certificate:
  """The largest single half-width certified for every feature, by bisection on
  ``[0, options.eps_max]`` (``options.bisection_steps`` halvings; the returned radius is
  certified, the search's upper end is not unless it equals ``eps_max``).

  Arguments, returns and errors as :func:`certify_nonuniform`; ``eps`` holds the radius
  broadcast to (..., d), so ``log_volume = d log eps``.
  """
  return _run(layers, x, label, options, uniform=True)


def log_volume_ratio(nonuniform: Certificate, uniform: Certificate) -> jax.Array:
  """``sum_i log eps_i^NU - d log eps^U`` per point (> 0: the non-uniform box is larger)."""
  return nonuniform.log_volume - uniform.log_volume


__all__ = ["CertifyOptions", "REFERENCE_OPTIONS", "Certificate", "certified_margin",
           "certify_nonuniform", "certify_uniform", "log_volume_ratio"]
