"""Norm-based capacity measures of layered ReLU networks, and node-wise rescaling.

Neyshabur, Tomioka, Srebro, "Norm-Based Capacity Control in Neural Networks", COLT 2015
(arXiv 1503.00036); "In Search of the Real Inductive Bias: On the Role of Implicit
Regularization in Deep Learning", ICLR 2015 workshop (arXiv 1412.6614); Neyshabur, Tomioka,
Salakhutdinov, Srebro, "Geometry of Optimization and Implicit Regularization in Deep
Learning", 2017 (arXiv 1705.03071).

A layered network is a sequence of dense layers ``[(W_1, b_1), ..., (W_L, b_L)]`` with
``W_l`` of shape (fan_in, fan_out) and ``b_l`` of shape (fan_out,) or ``None``; hidden units
apply ReLU. This module provides the group norms ``mu_{p,q}`` (products over layers of
``||W_l||_{p,q}``), per-unit max norms (``mu_{p,inf}``), the l_p path norms for ``p = 1, 2,
inf``, the product of spectral norms, the node-wise rescalings that leave the network's
function unchanged (and the random "unbalanced" rescaling of the Path-SGD experiments), and
margin-normalized measures. Path norms count biases as paths from a constant unit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

Layer = tuple[jax.Array, jax.Array | None]
Layers = Sequence[Layer]


def check_layers(layers: Layers) -> None:
  if not layers:
    raise ValueError("layers must hold at least one (W, b) pair, got an empty sequence")
  for i, (w, b) in enumerate(layers):
    if jnp.ndim(w) != 2:
      raise ValueError(f"layers[{i}] weight must be 2-D (fan_in, fan_out), got shape "
                       f"{jnp.shape(w)}")
    if b is not None and jnp.shape(b) != (jnp.shape(w)[1],):
      raise ValueError(f"layers[{i}] bias must have shape ({jnp.shape(w)[1]},), got "
                       f"{jnp.shape(b)}")
    if i and jnp.shape(layers[i - 1][0])[1] != jnp.shape(w)[0]:
      raise ValueError(f"layers[{i}] has fan_in {jnp.shape(w)[0]} but layers[{i - 1}] has "
                       f"fan_out {jnp.shape(layers[i - 1][0])[1]}")


def mlp_layers(params: Any) -> list[Layer]:
  """The ``(kernel, bias)`` pairs of a :class:`tomioka_jax.core.MLP`'s parameter state."""
  layers = params["layers"]
  out = []
  for i in sorted(layers.keys()):
    layer = layers[i]
    bias = layer["bias"][...] if "bias" in layer else None
    out.append((layer["kernel"][...], bias))
  return out


def set_mlp_layers(params: Any, layers: Layers) -> Any:
  """A copy of an MLP parameter state with its ``(kernel, bias)`` pairs replaced by ``layers``
  (the inverse of :func:`mlp_layers`)."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  params = jax.tree.map(lambda v: v, params)
  if len(layers) != len(params["layers"]):
    raise ValueError(f"layers has {len(layers)} entries, the MLP has {len(params['layers'])}")
  for i, (w, b) in zip(sorted(params["layers"].keys()), layers):
    params["layers"][i]["kernel"] = nnx.Param(w)
    if b is not None:
      params["layers"][i]["bias"] = nnx.Param(b)
  return params


def mlp_forward(layers: Layers, x: jax.Array) -> jax.Array:
  """The network's output on a batch ``x`` of shape (batch, fan_in): ReLU between layers."""
  check_layers(layers)
  for i, (w, b) in enumerate(layers):
    x = x @ w + (0.0 if b is None else b[None, :])
    if i < len(layers) - 1:
      x = jax.nn.relu(x)
  return x


def group_norm(layers: Layers, p: float = 2.0, q: float = 2.0) -> jax.Array:
  """``mu_{p,q}(w) = prod_l ||W_l||_{p,q}``, with ``||W||_{p,q}`` the l_q norm over units of
  the l_p norms of each unit's incoming weights (biases excluded).

  ``q = inf`` gives the per-unit max norm :func:`per_unit_max_norm`; ``p = q = 2`` the
  product of Frobenius norms.
  """
  check_layers(layers)
  if not p >= 1 or not q >= 1:
    raise ValueError(f"p and q must be >= 1 (inf allowed), got p={p}, q={q}")
  total = jnp.ones((), layers[0][0].dtype)
  for w, _ in layers:
    unit_norms = jnp.linalg.norm(w, ord=p, axis=0)  # one per unit (column)
    total = total * jnp.linalg.norm(unit_norms, ord=q)
  return total


def per_unit_max_norm(layers: Layers, p: float = 2.0) -> jax.Array:
  """``mu_{p,inf}``: the product over layers of the largest l_p norm of a unit's fan-in."""
  return group_norm(layers, p, float("inf"))


def spectral_norm_product(layers: Layers) -> jax.Array:
  """The product over layers of the largest singular value of ``W_l``."""
  check_layers(layers)
  total = jnp.ones((), layers[0][0].dtype)
  for w, _ in layers:
    total = total * jnp.linalg.norm(w, ord=2)
  return total


def path_norm(layers: Layers, p: float = 2.0) -> jax.Array:
  """The l_p path norm ``(sum_paths prod_e |w_e|^p)^(1/p)``; ``p = inf`` takes the max path.

  Paths start at an input unit or at a bias (a constant unit feeding that bias's unit) and end
  at an output unit. Dynamic programming over layers: ``h_v = sum_u h_u |w_uv|^p + |b_v|^p``
  from ``h = 1`` at the inputs (``max`` in place of ``sum`` for ``p = inf``).
  """
  check_layers(layers)
  if p == float("inf"):
    h = jnp.ones((jnp.shape(layers[0][0])[0],), layers[0][0].dtype)
    for w, b in layers:
      h = jnp.max(h[:, None] * jnp.abs(w), axis=0)
      if b is not None:
        h = jnp.maximum(h, jnp.abs(b))
    return jnp.max(h)
  if not p >= 1:
    raise ValueError(f"p must be >= 1 or inf, got {p}")
  h = jnp.ones((jnp.shape(layers[0][0])[0],), layers[0][0].dtype)
  for w, b in layers:
    h = h @ (jnp.abs(w) ** p) + (0.0 if b is None else jnp.abs(b) ** p)
  return jnp.sum(h) ** (1.0 / p)


def rescale(layers: Layers, scales: Sequence[jax.Array]) -> list[Layer]:
  """Node-wise rescaling: hidden unit ``v`` of layer ``l`` gets incoming weights and bias
  times ``scales[l][v] > 0`` and outgoing weights divided by it. The function is unchanged
  (ReLU is positively homogeneous).

  Args:
    layers: L dense layers.
    scales: L - 1 positive vectors, one per hidden layer, of that layer's width.
  """
  check_layers(layers)
  if len(scales) != len(layers) - 1:
    raise ValueError(f"scales must hold one vector per hidden layer ({len(layers) - 1}), got "
                     f"{len(scales)}")
  out = [list(layer) for layer in layers]
  for l, s in enumerate(scales):
    if jnp.shape(s) != (jnp.shape(layers[l][0])[1],):
      raise ValueError(f"scales[{l}] must have shape ({jnp.shape(layers[l][0])[1]},), got "
                       f"{jnp.shape(s)}")
    w, b = out[l]
    out[l] = [w * s[None, :], None if b is None else b * s]
    w_next, b_next = out[l + 1]
    out[l + 1] = [w_next / s[:, None], b_next]
  return [tuple(layer) for layer in out]


def balance(layers: Layers, p: float = 2.0) -> list[Layer]:
  """The node-wise rescaling after which every hidden unit's fan-in has unit l_p "path mass".

  Each hidden unit ``v`` is divided by ``gamma_p(v)``, the l_p path norm of the paths ending at
  ``v`` (biases included). Afterwards every hidden unit's incoming weights and bias have l_p
  norm 1, and an output unit's incoming l_p norm equals the path norm of the paths ending at
  it. So for one output, ``per_unit_max_norm(balance(w, p), p) == path_norm(w, p)``: the
  minimum over rescalings of ``mu_{p,inf}`` (Neyshabur, Tomioka, Srebro 2015) is attained here.
  """
  check_layers(layers)
  if not 1 <= p < float("inf"):
    raise ValueError(f"p must be a finite number >= 1, got {p}")
  h = jnp.ones((jnp.shape(layers[0][0])[0],), layers[0][0].dtype)
  scales = []
  for w, b in layers[:-1]:
    h = h @ (jnp.abs(w) ** p) + (0.0 if b is None else jnp.abs(b) ** p)
    # w_uv -> w_uv gamma(u) / gamma(v), with gamma of the *original* network.
    scales.append(1.0 / jnp.maximum(h, jnp.finfo(h.dtype).tiny) ** (1.0 / p))
  return rescale(layers, scales)


def random_rescaling(key: jax.Array, layers: Layers, spread: float) -> list[jax.Array]:
  """Random node-wise scales ``exp(U(-spread, spread))`` per hidden unit (the unbalanced
  initialization of the Path-SGD experiments when applied with :func:`rescale`)."""
  check_layers(layers)
  if not spread >= 0:
    raise ValueError(f"spread must be >= 0, got {spread}")
  keys = jax.random.split(key, max(len(layers) - 1, 1))
  return [jnp.exp(jax.random.uniform(k, (jnp.shape(w)[1],), w.dtype, -spread, spread))
          for k, (w, _) in zip(keys, layers[:-1])]


def margins(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Classification margins ``f(x)[y] - max_{j != y} f(x)[j]`` (negative when misclassified)."""
  if jnp.ndim(logits) != 2 or jnp.shape(labels) != (jnp.shape(logits)[0],):
    raise ValueError(f"logits must be (n, classes) and labels (n,), got {jnp.shape(logits)} "
                     f"and {jnp.shape(labels)}")
  correct = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
  others = jnp.where(jax.nn.one_hot(labels, logits.shape[1], dtype=bool), -jnp.inf, logits)
  return correct - jnp.max(others, axis=1)


def margin_normalized(measure: jax.Array, logits: jax.Array, labels: jax.Array, *,
                      quantile: float = 0.05) -> jax.Array:
  """A capacity measure divided by the ``quantile``-th quantile of the training margins.

  Norm-based measures scale with the network's output; dividing by a (robust) margin makes
  them scale-free, so that networks trained to different output magnitudes compare. Squared
  path/group norms should be divided by the squared margin: pass ``measure`` accordingly.
  """
  if not 0 <= quantile < 1:
    raise ValueError(f"quantile must be in [0, 1), got {quantile}")
  return measure / jnp.quantile(margins(logits, labels), quantile)


__all__ = [
    "mlp_layers",
    "set_mlp_layers",
    "mlp_forward",
    "group_norm",
    "per_unit_max_norm",
    "spectral_norm_product",
    "path_norm",
    "rescale",
    "balance",
    "random_rescaling",
    "margins",
    "margin_normalized",
]
