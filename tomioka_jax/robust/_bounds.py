"""Interval and linear (Fast-Lin) bound propagation through MLPs given as layer lists.

Liu, Tomioka, Cevher, "On Certifying Non-uniform Bound against Adversarial Attacks", ICML 2019
(arXiv 1903.06603), Section 3 and the relaxations of its code (liuchen11/CertifyNonuniformBounds,
``util/linearize.py`` and ``util/modules.py``); Weng et al., "Towards Fast Computation of
Certified Robustness for ReLU Networks" (Fast-Lin, ICML 2018).

A network is a list of dense layers ``[(W_0, b_0, act_0), ..., (W_{L-1}, b_{L-1}, act_{L-1})]``
with ``W_k`` of shape (fan_in, fan_out) (the layout of ``nnx.Linear.kernel``), ``b_k`` of shape
(fan_out,) (or ``None``) and ``act_k`` one of :data:`ACTIVATIONS`::

    z_k = W_k^T a_{k-1} + b_k,    a_k = act_k(z_k),    a_{-1} = x,    output a_{L-1}.

The last layer is usually ``"identity"`` (logits). A layer may be a plain tuple or a
:class:`DenseLayer`, a pytree whose activation is static, so a whole layer list can be an
argument of ``jit`` / ``vmap``.

The input box is ``lo <= x <= hi`` with centre ``c = (lo + hi) / 2`` and radius ``r = (hi - lo)
/ 2``; for the l_inf ball of the paper ``lo = x_0 - eps``, ``hi = x_0 + eps`` with a per-feature
``eps``.

**Interval bounds** (IBP): ``W^T c + b +- |W|^T r`` through each dense layer and ``act(l),
act(u)`` through the (monotone) activations.

**Linear bounds** (Fast-Lin with the reference's relaxations): every activation is sandwiched
on its pre-activation interval ``[l, u]`` between two parallel lines,

    D z + m^L <= act(z) <= D z + m^U    for z in [l, u],

(:func:`linear_relaxation`), and a bound on ``s^T z_k`` is obtained by substituting the lines
backwards through the network: with ``A`` the coefficient vector on ``a_j``,

    s^T z_k >= sum_j [ (A_j)_+^T m_j^L + (A_j)_-^T m_j^U + A'_j^T b_j ] + A_x^T c - |A_x|^T r,

(``A'_j = D_j * A_j``, ``A_{j-1} = W_j A'_j``; the upper bound swaps ``m^L`` and ``m^U`` and
the sign of the radius term). Since both lines share the slope ``D``, one back-substitution
gives both bounds. Each hidden layer's pre-activation bounds are intersected with the interval
bounds computed from the previous layer's (already intersected) bounds, as the reference does.
The reference also intersects the *post*-activation bounds with the linear bound of ``a_k``;
that is never tighter than ``act(l), act(u)`` (the relaxation lines lie below / above ``act``
at the tightened ``l`` / ``u`` and ``D >= 0``), so it is skipped here.

**Margins** ``a_y - a_j`` (:func:`margin_bounds`): ``method="margin"`` back-substitutes the
spec matrix with rows ``e_y - e_j`` (CROWN's choice; at each relaxation the signs of ``A_y -
A_j`` choose the intercepts, which is never looser than choosing them for ``A_y`` and ``A_j``
apart) and intersects it with the separate-logit bound; ``method="logits"`` is the reference's
``L_y - U_j`` from the two logit bounds.

Everything is a pure function of arrays: ``jit``-able, differentiable in ``lo`` and ``hi``
(hence in ``eps``), and batched over leading axes of ``lo`` / ``hi`` (``jnp.vectorize``, i.e.
``vmap``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tomioka_jax import core

ACTIVATIONS = ("relu", "sigmoid", "tanh", "arctan", "identity")
MARGIN_METHODS = ("margin", "logits")

# The reference's constants: the relaxation interval is widened by _WIDEN on each side, the
# tangent intercepts are moved outwards by _WIDEN, and chord slopes below _MIN_SLOPE are
# rounded to zero (constant bounds act(l), act(u)) for numerical stability.
_WIDEN = 1e-6
_MIN_SLOPE = 1e-2

_ACT_FNS = {
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "arctan": jnp.arctan,
    "identity": lambda z: z,
}


@functools.partial(jax.tree_util.register_dataclass, data_fields=["weight", "bias"],
                   meta_fields=["activation"])
@dataclasses.dataclass(frozen=True)
class DenseLayer:
  """One dense layer ``a = act(W^T a_prev + b)``: a pytree with a static activation.

  Attributes:
    weight: ``W``, shape (fan_in, fan_out).
    bias: ``b``, shape (fan_out,).
    activation: one of :data:`ACTIVATIONS`.
  """

  weight: jax.Array
  bias: jax.Array
  activation: str = "identity"


Layer = Any  # a DenseLayer or a tuple (W, b, activation)
Layers = Sequence[Layer]


def as_layers(layers: Layers) -> list[DenseLayer]:
  """The layer list as :class:`DenseLayer` s (``None`` biases as zeros), shapes checked.

  Raises:
    ValueError: an empty list, an entry that is not ``(W, b, activation)``, an unknown
      activation, a weight that is not 2-D, a bias of the wrong shape, or consecutive layers
      whose fan-out and fan-in differ.
  """
  if not isinstance(layers, (list, tuple)) or not layers:
    raise ValueError(f"layers must be a non-empty list of (W, b, activation), got {layers!r}")
  out = []
  for i, layer in enumerate(layers):
    if isinstance(layer, DenseLayer):
      w, b, act = layer.weight, layer.bias, layer.activation
    else:
      if not isinstance(layer, (list, tuple)) or len(layer) != 3:
        raise ValueError(f"layers[{i}] must be (W, b, activation) or a DenseLayer, got "
                         f"{type(layer).__name__}")
      w, b, act = layer
    if act not in ACTIVATIONS:
      raise ValueError(f"layers[{i}] has activation={act!r}; allowed: {ACTIVATIONS}")
    if jnp.ndim(w) != 2:
      raise ValueError(f"layers[{i}] weight must be 2-D (fan_in, fan_out), got shape "
                       f"{jnp.shape(w)}")
    if b is None:
      b = jnp.zeros((jnp.shape(w)[1],), jnp.result_type(w))
    if jnp.shape(b) != (jnp.shape(w)[1],):
      raise ValueError(f"layers[{i}] bias must have shape ({jnp.shape(w)[1]},), got "
                       f"{jnp.shape(b)}")
    if out and jnp.shape(out[-1].weight)[1] != jnp.shape(w)[0]:
      raise ValueError(f"layers[{i}] has fan_in {jnp.shape(w)[0]} but layers[{i - 1}] has "
                       f"fan_out {jnp.shape(out[-1].weight)[1]}")
    out.append(DenseLayer(jnp.asarray(w), jnp.asarray(b), act))
  return out


def layers_from_nnx(model: Any, activation: str | Sequence[str] = "relu",
                    output_activation: str = "identity") -> list[DenseLayer]:
  """The layer list of an NNX MLP: a :class:`tomioka_jax.core.MLP`, a module with a
  ``layers`` sequence of ``nnx.Linear``, or a sequence of ``nnx.Linear``.

  Args:
    model: the network.
    activation: the hidden layers' activation, one name for all or one per hidden layer
      (``core.MLP`` uses ``"relu"``).
    output_activation: the last layer's (``"identity"`` for logits).

  Returns:
    ``[DenseLayer(kernel, bias, act), ...]`` with the current parameter values.
  """
  linears = getattr(model, "layers", model)
  try:
    linears = list(linears)
  except TypeError:
    raise ValueError(f"model must be an MLP with a `layers` sequence or a sequence of "
                     f"nnx.Linear, got {type(model).__name__}") from None
  if not linears:
    raise ValueError("model has no layers")
  n_hidden = len(linears) - 1
  acts = [activation] * n_hidden if isinstance(activation, str) else list(activation)
  if len(acts) != n_hidden:
    raise ValueError(f"activation must name one activation or {n_hidden} (one per hidden "
                     f"layer), got {activation!r}")
  acts.append(output_activation)
  layers = []
  for i, (lin, act) in enumerate(zip(linears, acts)):
    if not hasattr(lin, "kernel"):
      raise ValueError(f"layer {i} ({type(lin).__name__}) has no kernel; expected nnx.Linear")
    bias = getattr(lin, "bias", None)
    layers.append((lin.kernel[...], None if bias is None else bias[...], act))
  return as_layers(layers)


def apply_layers(layers: Layers, x: jax.Array) -> jax.Array:
  """The network's output ``a_{L-1}`` on ``x`` of shape (..., fan_in)."""
  layers = as_layers(layers)
  for layer in layers:
    z = x @ layer.weight
    x = _ACT_FNS[layer.activation](z + jnp.broadcast_to(layer.bias, z.shape))
  return x


def _tangent_relaxation(f, t_neg, sym, lo, up, y_lo, y_up, d):
  """The reference's relaxation of an S-shaped activation (convex for z < 0, concave for
  z > 0, odd about its centre ``(0, f(0))``) on the widened interval ``[lo, up]``.

  ``d`` is the chord slope and ``t_neg(d) < 0`` the point where ``f' = d`` on the convex side
  (``-t_neg`` on the concave side). The tangent lines of slope ``d`` there, moved outwards by
  ``_WIDEN``, bound ``f`` below (on ``z <= -t_neg``) and above (on ``z >= t_neg``); the chord
  bounds it above on a convex interval and below on a concave one.
  """
  small = d < _MIN_SLOPE
  d_safe = jnp.where(small, _MIN_SLOPE, d)  # keeps the tangent formulas (and grads) finite
  t1 = t_neg(d_safe)
  y1 = f(t1) - t1 * d_safe - _WIDEN
  y2 = sym - y1  # the tangent at -t1 (f(-t) = sym - f(t)), moved up by _WIDEN
  chord = y_lo - lo * d  # the chord's intercept
  neg = up <= 0.0
  pos = lo >= 0.0
  m_low = jnp.where(pos, chord, y1)
  m_up = jnp.where(neg, chord, y2)
  slope = jnp.where(small, 0.0, d)
  return slope, jnp.where(small, y_lo, m_low), jnp.where(small, y_up, m_up)


def _one_minus_exp_over(w):
  """``(1 - exp(-w)) / w`` for ``w >= 0`` (1 at 0), without cancellation."""
  safe = jnp.maximum(w, 1e-30)
  return jnp.where(w > 1e-12, -jnp.expm1(-safe) / safe, 1.0)


def _chord_slope(activation, lo, up, y_lo, y_up):
  """``(act(up) - act(lo)) / (up - lo)`` without the cancellation of the plain difference
  (which in float32 is off by tens of percent on the widened zero-width intervals and then
  breaks the bounds' soundness):

  * ``sigmoid(u) - sigmoid(l) = sigmoid(u) sigmoid(-l) (1 - exp(-(u - l)))``;
  * ``tanh(u) - tanh(l) = 2 (sigmoid(2u) - sigmoid(2l))``;
  * ``arctan(u) - arctan(l) = arctan((u - l) / (1 + u l))`` where ``1 + u l > 1/2`` (a wide
    interval otherwise, where the plain difference is accurate).
  """
  w = up - lo
  if activation == "sigmoid":
    return jax.nn.sigmoid(up) * jax.nn.sigmoid(-lo) * _one_minus_exp_over(w)
  if activation == "tanh":
    return 4.0 * jax.nn.sigmoid(2 * up) * jax.nn.sigmoid(-2 * lo) * _one_minus_exp_over(2 * w)
  near = 1.0 + up * lo > 0.5
  w_safe = jnp.maximum(w, 1e-30)
  stable = jnp.where(w > 1e-12, jnp.arctan(w_safe / jnp.where(near, 1.0 + up * lo, 1.0)) / w_safe,
                     1.0 / (1.0 + up * lo))
  return jnp.where(near, stable, (y_up - y_lo) / w_safe)


def _sigmoid_tangent(d):
  # sigma'(t) = s (1 - s) = d at s = (1 -/+ r) / 2, r = sqrt(1 - 4d); the t < 0 root is
  # -log((1 + r) / (1 - r)) = -log((1 + r)^2 / (4d)).
  root = jnp.sqrt(jnp.maximum(1.0 - 4.0 * d, 1e-12))
  return -jnp.log((1.0 + root) ** 2 / (4.0 * d))


def _tanh_tangent(d):
  # tanh'(t) = 1 - tanh(t)^2 = d at tanh(t) = -r, r = sqrt(1 - d):
  # t = -atanh(r) = -log((1 + r) / (1 - r)) / 2 = -log((1 + r)^2 / d) / 2.
  root = jnp.sqrt(jnp.maximum(1.0 - d, 1e-12))
  return -jnp.log((1.0 + root) ** 2 / d) / 2.0


def _arctan_tangent(d):
  # arctan'(t) = 1 / (1 + t^2) = d at t = -sqrt(1/d - 1) (clamped: d can round above 1).
  return -jnp.sqrt(jnp.maximum(1.0 / d - 1.0, 1e-12))


def linear_relaxation(activation: str, lower: jax.Array, upper: jax.Array
                      ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The reference's parallel lines around ``act`` on ``[lower, upper]`` (elementwise).

  Returns ``(D, m_lower, m_upper)`` with ``D z + m_lower <= act(z) <= D z + m_upper`` for
  ``z`` in ``[lower, upper]``. The interval is first widened by 1e-6 on each side; on it:

  * relu: ``D = (relu(u) - relu(l)) / (u - l)``, ``m_lower = 0``, ``m_upper = relu(l) - l D``
    (Fast-Lin: the chord above, the parallel line through the origin below);
  * sigmoid, tanh, arctan: ``D`` is the chord slope ``(act(u) - act(l)) / (u - l)``. With
    ``t_1 < 0 < t_2 = -t_1`` the points where ``act' = D``, the bounds are the chord
    (intercept ``(u act(l) - l act(u)) / (u - l)``) where ``act`` is convex (upper bound on
    ``u <= 0``) or concave (lower bound on ``l >= 0``), and otherwise the tangent at ``t_1``
    (lower) or ``t_2`` (upper), their intercepts moved outwards by 1e-6. A slope below 1e-2
    is set to 0 and the bounds become the constants ``act(l)``, ``act(u)``;

  Two numerical departures from the reference's code, both making the lines sound where its
  float arithmetic is not: the chord slope is computed without cancellation
  (:func:`_chord_slope`), and the tangent points in closed form without the reference's 1e-6
  guards inside the logarithm (which move ``t_1`` by a few percent near the 1e-2 slope cutoff
  and let its tanh line cross the function by ~2e-6, more than the 1e-6 offset).
  * identity: ``D = 1``, ``m = 0``.

  Raises:
    ValueError: ``activation`` is not one of :data:`ACTIVATIONS`.
  """
  if activation not in ACTIVATIONS:
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
  lo = jnp.asarray(lower) - _WIDEN
  up = jnp.asarray(upper) + _WIDEN
  if activation == "identity":
    return jnp.ones_like(lo), jnp.zeros_like(lo), jnp.zeros_like(lo)
  f = _ACT_FNS[activation]
  y_lo, y_up = f(lo), f(up)
  if activation == "relu":
    d = (y_up - y_lo) / jnp.maximum(up - lo, 1e-30)
    return d, jnp.zeros_like(d), y_lo - lo * d
  d = _chord_slope(activation, lo, up, y_lo, y_up)
  t_neg, sym = {"sigmoid": (_sigmoid_tangent, 1.0), "tanh": (_tanh_tangent, 0.0),
                "arctan": (_arctan_tangent, 0.0)}[activation]
  return _tangent_relaxation(f, t_neg, sym, lo, up, y_lo, y_up, d)


def _check_box(layers: list[DenseLayer], lo: jax.Array, hi: jax.Array) -> None:
  if jnp.shape(lo) != jnp.shape(hi):
    raise ValueError(f"lo and hi must have the same shape, got {jnp.shape(lo)} and "
                     f"{jnp.shape(hi)}")
  fan_in = jnp.shape(layers[0].weight)[0]
  if jnp.ndim(lo) < 1 or jnp.shape(lo)[-1] != fan_in:
    raise ValueError(f"lo and hi must have shape (..., {fan_in}) (the first layer's fan_in), "
                     f"got {jnp.shape(lo)}")
  if core.is_concrete(lo, hi) and np.any(np.asarray(lo) > np.asarray(hi)):
    where = np.argwhere(np.asarray(lo) > np.asarray(hi))[0]
    raise ValueError(f"lo must be <= hi elementwise, got lo > hi at index {tuple(where)} "
                     f"({np.asarray(lo)[tuple(where)]} > {np.asarray(hi)[tuple(where)]})")


def _dense_interval(layer: DenseLayer, centre: jax.Array, radius: jax.Array
                    ) -> tuple[jax.Array, jax.Array]:
  mid = centre @ layer.weight + layer.bias
  rad = radius @ jnp.abs(layer.weight)
  return mid - rad, mid + rad


def _interval_single(layers, lo, hi):
  for layer in layers:
    zl, zu = _dense_interval(layer, (lo + hi) / 2, (hi - lo) / 2)
    f = _ACT_FNS[layer.activation]
    lo, hi = f(zl), f(zu)
  return lo, hi


def _backsubstitute(layers, relaxations, coef, const, start, centre, radius):
  """Bounds on ``coef^T a_start + const`` (``coef`` of shape (width of a_start, m)).

  ``relaxations[j]`` is ``(D_j, m^L_j, m^U_j)`` of layer ``j``'s activation or ``None`` for the
  identity; ``start = -1`` means ``coef`` acts on the input.
  """
  low = up = const
  for j in range(start, -1, -1):
    if relaxations[j] is not None:
      d, m_low, m_up = relaxations[j]
      pos, neg = jnp.maximum(coef, 0.0), jnp.minimum(coef, 0.0)
      low = low + m_low @ pos + m_up @ neg
      up = up + m_up @ pos + m_low @ neg
      coef = d[:, None] * coef
    bias_term = layers[j].bias @ coef
    low, up = low + bias_term, up + bias_term
    coef = layers[j].weight @ coef
  mid = centre @ coef
  rad = radius @ jnp.abs(coef)
  return mid - rad + low, mid + rad + up


def _linear_single(layers, lo, hi):
  """Fast-Lin bounds on every layer of one point: per-layer pre-activation bounds, the
  relaxations, and the output bounds."""
  centre, radius = (lo + hi) / 2, (hi - lo) / 2
  pre, relaxations = [], []
  post_l = post_u = None
  for k, layer in enumerate(layers):
    if k == 0:  # a linear map of the box: the interval bound is exact
      zl, zu = _dense_interval(layer, centre, radius)
    else:
      il, iu = _dense_interval(layer, (post_l + post_u) / 2, (post_u - post_l) / 2)
      ll, lu = _backsubstitute(layers, relaxations, layer.weight, layer.bias, k - 1, centre,
                               radius)
      zl, zu = jnp.maximum(ll, il), jnp.minimum(lu, iu)
    pre.append((zl, zu))
    act = layer.activation
    relaxations.append(None if act == "identity" else linear_relaxation(act, zl, zu))
    f = _ACT_FNS[act]
    post_l, post_u = f(zl), f(zu)
  return pre, relaxations, (post_l, post_u)


def interval_bounds(layers: Layers, lo: jax.Array, hi: jax.Array
                    ) -> tuple[jax.Array, jax.Array]:
  """Interval bound propagation: elementwise bounds on the outputs over the box [lo, hi].

  Args:
    layers: the network (see the module docstring).
    lo, hi: the box, shape (..., fan_in), ``lo <= hi``.

  Returns:
    ``(lower, upper)``, shape (..., fan_out of the last layer).

  Raises:
    ValueError: bad layers, mismatched shapes, or (when concrete; skipped under ``jit``)
      ``lo > hi`` somewhere.
  """
  layers = as_layers(layers)
  _check_box(layers, lo, hi)
  fn = jnp.vectorize(lambda l, u: _interval_single(layers, l, u), signature="(d),(d)->(k),(k)")
  return fn(jnp.asarray(lo), jnp.asarray(hi))


def linear_bounds(layers: Layers, lo: jax.Array, hi: jax.Array
                  ) -> tuple[jax.Array, jax.Array]:
  """Fast-Lin bounds (the reference's relaxations, intersected with interval bounds at every
  layer): elementwise bounds on the outputs over the box [lo, hi].

  Never looser than :func:`interval_bounds` (each layer is intersected with the interval step
  from the previous layer's tightened bounds).

  Args:
    layers: the network (see the module docstring).
    lo, hi: the box, shape (..., fan_in), ``lo <= hi``.

  Returns:
    ``(lower, upper)``, shape (..., fan_out of the last layer).

  Raises:
    ValueError: as :func:`interval_bounds`.
  """
  layers = as_layers(layers)
  _check_box(layers, lo, hi)
  fn = jnp.vectorize(lambda l, u: _linear_single(layers, l, u)[2], signature="(d),(d)->(k),(k)")
  return fn(jnp.asarray(lo), jnp.asarray(hi))


def _margin_single(layers, lo, hi, label, method):
  pre, relaxations, (out_l, out_u) = _linear_single(layers, lo, hi)
  separate_l = out_l[label] - out_u
  separate_u = out_u[label] - out_l
  if method == "logits":
    low, up = separate_l, separate_u
  else:
    k = out_l.shape[0]
    spec = jax.nn.one_hot(label, k, dtype=out_l.dtype)[:, None] - jnp.eye(k, dtype=out_l.dtype)
    ml, mu = _backsubstitute(layers, relaxations, spec, jnp.zeros((k,), out_l.dtype),
                             len(layers) - 1, (lo + hi) / 2, (hi - lo) / 2)
    low, up = jnp.maximum(ml, separate_l), jnp.minimum(mu, separate_u)
  is_label = jnp.arange(out_l.shape[0]) == label
  return jnp.where(is_label, 0.0, low), jnp.where(is_label, 0.0, up)


def margin_bounds(layers: Layers, lo: jax.Array, hi: jax.Array, label: jax.Array, *,
                  method: str = "margin") -> tuple[jax.Array, jax.Array]:
  """Bounds on the margins ``a_y - a_j`` of the outputs over the box [lo, hi].

  The box is certified for label ``y`` with margin ``delta`` when ``lower[j] >= delta`` for
  every ``j != y``.

  Args:
    layers: the network (see the module docstring).
    lo, hi: the box, shape (..., fan_in).
    label: the class ``y``, integer of shape (...) (broadcast against the box's batch).
    method: ``"margin"`` back-substitutes the margins themselves (rows ``e_y - e_j``) and
      intersects with the separate-logit bounds: never looser than ``"logits"``, the
      reference's ``L_y - U_j`` / ``U_y - L_j`` from the elementwise :func:`linear_bounds`.

  Returns:
    ``(lower, upper)``, shape (..., number of outputs); the entry ``j = y`` is 0.

  Raises:
    ValueError: as :func:`linear_bounds`; an unknown ``method``; (when concrete) a label
      outside ``[0, number of outputs)``.
  """
  layers = as_layers(layers)
  _check_box(layers, lo, hi)
  if method not in MARGIN_METHODS:
    raise ValueError(f"method must be one of {MARGIN_METHODS}, got {method!r}")
  num_out = jnp.shape(layers[-1].weight)[1]
  check_label(label, num_out)
  fn = jnp.vectorize(lambda l, u, y: _margin_single(layers, l, u, y, method),
                     signature="(d),(d),()->(k),(k)")
  return fn(jnp.asarray(lo), jnp.asarray(hi), jnp.asarray(label))


def check_label(label: Any, num_classes: int) -> None:
  """Raises ValueError unless ``label`` (when concrete) is an integer in [0, num_classes)."""
  if not jnp.issubdtype(jnp.result_type(label), jnp.integer):
    raise ValueError(f"label must be an integer array, got dtype {jnp.result_type(label)}")
  if core.is_concrete(label):
    arr = np.asarray(label)
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
      raise ValueError(f"label must lie in [0, {num_classes}) (the number of outputs), got "
                       f"values in [{arr.min()}, {arr.max()}]")


__all__ = ["ACTIVATIONS", "DenseLayer", "as_layers", "layers_from_nnx", "apply_layers",
           "linear_relaxation", "interval_bounds", "linear_bounds", "margin_bounds"]
