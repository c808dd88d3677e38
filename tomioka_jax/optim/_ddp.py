"""Data-dependent path normalization: DDP-SGD and DDP-Normalization.

Neyshabur, Tomioka, Salakhutdinov, Srebro, "Data-Dependent Path Normalization in Neural
Networks", ICLR 2016 (arXiv 1511.06747).

A family of node-wise-rescaling-invariant complexity measures of a ReLU network, indexed by
``alpha in [0, 1]``, that interpolates between the data-independent 2-path norm of Path-SGD
(``alpha = 1``) and second moments of the pre-activations, as batch normalization uses them
(``alpha = 0``). This module provides the measure, the steepest-descent update it induces
with a diagonal approximation (DDP-SGD, an optax transformation) and the reparametrization
that divides every unit by its measure (DDP-Normalization, Flax NNX modules).

Definitions implemented here. The paper's text could not be retrieved while writing this
module (only its abstract and third-party summaries were found), so the formulas below are
our reconstruction of it, **not verified against the paper**; the tests check the formulas as
stated here, not the paper. For node ``v`` with incoming weights ``w_{->v}``, incoming
activations ``h`` (the inputs ``x`` for the first layer) and bias ``b_v`` (an edge from a
constant unit with ``h = 1``, ``gamma = 1``):

.. math::
   \\gamma_v^2 = w_{\\to v}^\\top R_v w_{\\to v}, \\qquad
   R_v = \\alpha\\,\\mathrm{diag}(\\gamma_u^2)_{u \\to v} + (1-\\alpha)\\,E[h h^\\top],

which, since ``w^T E[h h^T] w = E[z_v^2]`` for the pre-activation ``z_v = w^T h + b_v``, is
the recursion ``gamma_v^2 = alpha (sum_u gamma_u^2 w_uv^2 + b_v^2) + (1 - alpha) E[z_v^2]``.
Inputs have ``gamma_u = 1`` (``input_gamma="ones"``; then ``alpha = 1`` is exactly the squared
2-path norm with biases as path sources) or ``gamma_u^2 = E[x_u^2]``
(``input_gamma="second_moment"``). The network's measure is
``gamma_net^2 = sum over output units of gamma_v^2``. Expectations are means over a
mini-batch. Every ``gamma_v^2`` is a positive semi-definite quadratic form, hence ``>= 0``,
and ``gamma_net`` is invariant to node-wise rescaling (a hidden unit's incoming weights and
bias times ``c > 0``, its outgoing weights divided by ``c``).

**DDP-SGD** divides each gradient entry by the diagonal of the measure's curvature,

.. math::  w_e \\leftarrow w_e - \\eta\\, \\frac{\\partial L / \\partial w_e}{\\kappa_e(w)},
   \\qquad \\kappa_e(w) = \\tfrac12\\, \\partial^2 \\gamma_{net}^2(w) / \\partial w_e^2 .

``gamma_net^2`` is (almost everywhere) a quadratic function of each single weight, so for
``e = u -> v`` the second derivative splits exactly into a data-independent and a
data-dependent part:

.. math::  \\kappa_{u\\to v} = \\alpha\\,\\gamma_u^2\\, P_v
   + (1-\\alpha)\\, E\\Big[h_u^2 \\sum_{v' \\succeq v} P_{v'}
     \\big(\\partial z_{v'} / \\partial z_v\\big)^2\\Big],

with ``P_v = d gamma_net^2 / d gamma_v^2`` through the ``alpha``-recursion alone
(``P = 1`` at the outputs, ``P_u = alpha sum_v w_uv^2 P_v`` below) and the sum over ``v`` and
all units downstream of it. At ``alpha = 1`` this is Path-SGD's ``kappa`` exactly; at
``alpha = 0`` it is the diagonal of the Gauss-Newton matrix of ``sum_o E[z_o^2]`` (the
"diagonal Fisher" reading of the abstract). The squared-Jacobian term has no one-pass
backward recursion (the square of a sum over intermediate units is not the sum of squares),
so it is computed exactly from per-example Jacobians between layers that are two or more
layers apart: for the two-hidden-layer MLPs of the paper that is the (outputs x first hidden
layer) Jacobian only; for deeper nets with ``alpha > 0`` the cost grows as
``batch * width^3`` per hidden layer pair. The update is invariant to node-wise rescaling:
``kappa`` transforms with the square of the rescaling, the gradient with its inverse.

**DDP-Normalization** (:class:`DDPNormalizedLinear`) divides each unit's raw pre-activation
``t_v = v^T h + c_v`` by ``sqrt(alpha (||v||^2 + c_v^2) + (1 - alpha) E_batch[t_v^2])``: the
measure of that unit when every incoming unit has ``gamma = 1``, which normalization makes
true layer after layer. ``alpha = 1`` is weight normalization with the bias counted in the
norm; ``alpha = 0`` is batch normalization without centering. A learnable per-unit gain
follows, and running averages of ``E[t_v^2]`` replace the batch statistics at evaluation.

Supported networks for DDP-SGD: dense ReLU MLPs, i.e. the parameter state of
:class:`tomioka_jax.core.MLP` (see :func:`ddp_network`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from tomioka_jax.optim import _capacity as capacity
from tomioka_jax.optim._path_sgd import Network
from tomioka_jax.optim._path_sgd import nnx_network

Layer = tuple[jax.Array, jax.Array]
_INPUT_GAMMAS = ("ones", "second_moment")


def _check_alpha(alpha):
  """``alpha`` as a Python float in [0, 1], or a traced scalar (e.g. ``vmap``-ed over alphas)
  whose range cannot be checked at trace time."""
  if isinstance(alpha, jax.core.Tracer):
    if jnp.shape(alpha) != ():
      raise ValueError(f"alpha must be a scalar, got shape {jnp.shape(alpha)}")
    return alpha
  if isinstance(alpha, bool) or not isinstance(alpha, (int, float, jax.Array)) or (
      jnp.shape(alpha) != ()):
    raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
  if not 0 <= float(alpha) <= 1:
    raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
  return float(alpha)


def _check_input_gamma(input_gamma: str) -> None:
  if input_gamma not in _INPUT_GAMMAS:
    raise ValueError(f"input_gamma must be one of {_INPUT_GAMMAS}, got {input_gamma!r}")


def _as_layers(layers: Sequence[tuple[jax.Array, jax.Array | None]]) -> list[Layer]:
  """float32 (or wider) copies of the layers, with missing biases as zeros."""
  capacity.check_layers(layers)
  dtype = jnp.promote_types(jnp.asarray(layers[0][0]).dtype, jnp.float32)
  out = []
  for w, b in layers:
    w = jnp.asarray(w, dtype)
    out.append((w, jnp.zeros((w.shape[1],), dtype) if b is None else jnp.asarray(b, dtype)))
  return out


def _flat_inputs(x: jax.Array, layers: Sequence[Layer]) -> jax.Array:
  x = jnp.asarray(x, layers[0][0].dtype)
  if x.ndim < 1 or x.shape[0] < 1:
    raise ValueError(f"inputs must be a batch (batch, ...) with batch >= 1, got shape {x.shape}")
  x = jnp.reshape(x, (x.shape[0], -1))
  if x.shape[1] != layers[0][0].shape[0]:
    raise ValueError(f"inputs must have {layers[0][0].shape[0]} features per example after "
                     f"flattening, got shape {x.shape}")
  return x


def _forward(layers: Sequence[Layer], x: jax.Array):
  """Pre-activations ``z_l`` and layer inputs ``h_l`` (``h_0 = x``) of the ReLU MLP."""
  hs, zs = [x], []
  for l, (w, b) in enumerate(layers):
    z = hs[-1] @ w + b[None, :]
    zs.append(z)
    if l < len(layers) - 1:
      hs.append(jax.nn.relu(z))
  return hs, zs


def _gammas(layers, hs, zs, alpha, input_gamma):
  """``gamma^2`` at the inputs and at the outputs of every layer (the alpha-recursion)."""
  x = hs[0]
  g = (jnp.ones((x.shape[1],), x.dtype) if input_gamma == "ones" else jnp.mean(x * x, axis=0))
  gs = [g]
  for (w, b), z in zip(layers, zs):
    g = alpha * (g @ (w * w) + b * b) + (1.0 - alpha) * jnp.mean(z * z, axis=0)
    gs.append(g)
  return gs


def ddp_gammas(layers: Sequence[tuple[jax.Array, jax.Array | None]], x: jax.Array,
               alpha: float, *, input_gamma: str = "ones") -> list[jax.Array]:
  """``gamma_v^2`` of every unit, layer by layer: ``[inputs, layer 1, ..., outputs]``.

  Args:
    layers: dense layers ``[(W_l, b_l)]`` of a ReLU MLP, ``W_l`` of shape (fan_in, fan_out).
    x: a mini-batch of inputs (batch, ...), flattened to (batch, fan_in of the first layer);
      its means stand in for the expectations.
    alpha: the interpolation parameter in [0, 1] (1: path norm, 0: second moments); a
      Python number, or a traced scalar (to ``vmap`` over alphas).
    input_gamma: ``"ones"`` or ``"second_moment"`` (``gamma_u^2 = E[x_u^2]`` at the inputs).
  """
  alpha = _check_alpha(alpha)
  _check_input_gamma(input_gamma)
  layers = _as_layers(layers)
  hs, zs = _forward(layers, _flat_inputs(x, layers))
  return _gammas(layers, hs, zs, alpha, input_gamma)


def ddp_norm(layers: Sequence[tuple[jax.Array, jax.Array | None]], x: jax.Array, alpha: float,
             *, input_gamma: str = "ones") -> jax.Array:
  """The data-dependent path norm ``gamma_net = sqrt(sum_{v output} gamma_v^2)``."""
  return jnp.sqrt(jnp.sum(ddp_gammas(layers, x, alpha, input_gamma=input_gamma)[-1]))


def ddp_scaling(layers: Sequence[tuple[jax.Array, jax.Array | None]], x: jax.Array,
                alpha: float, *, input_gamma: str = "ones") -> list[Layer]:
  """``kappa_e = (1/2) d^2 gamma_net^2 / d w_e^2`` for every weight and bias, as layers.

  Exact almost everywhere (away from ReLU kinks); see the module docstring for the formula.

  Args:
    layers, x, alpha, input_gamma: as in :func:`ddp_gammas`.

  Returns:
    ``[(kappa_W_l, kappa_b_l)]`` shaped like the layers (float32 or wider).
  """
  alpha = _check_alpha(alpha)
  _check_input_gamma(input_gamma)
  layers = _as_layers(layers)
  x = _flat_inputs(x, layers)
  hs, zs = _forward(layers, x)
  gs = _gammas(layers, hs, zs, alpha, input_gamma)
  num = len(layers)
  batch = x.shape[0]
  # P_l = d gamma_net^2 / d gamma^2 at the outputs of layer l, through the alpha-recursion.
  ps = [None] * num
  ps[-1] = jnp.ones_like(gs[-1])
  for l in range(num - 2, -1, -1):
    w_next = layers[l + 1][0]
    ps[l] = alpha * ((w_next * w_next) @ ps[l + 1])

  kappas = []
  traced = isinstance(alpha, jax.core.Tracer)  # no shortcuts for alpha = 0 or 1 then
  if traced or alpha < 1.0:
    masks = [(z > 0).astype(z.dtype) for z in zs[:-1]]
    # Q_l[b, v] = sum over v' at or downstream of v of P_v' (dz_v'/dz_v)^2, for example b.
    qs = [jnp.broadcast_to(p[None, :], (batch, p.shape[0])) for p in ps]
    for l in range(num - 1):  # adjacent layers: the Jacobian is a masked weight matrix
      w_next = layers[l + 1][0]
      qs[l] = qs[l] + masks[l] * ((w_next * w_next) @ ps[l + 1])[None, :]
    for target in range(2, num):  # two or more layers apart: per-example Jacobians
      if not traced and alpha == 0.0 and target < num - 1:
        continue  # P vanishes below the outputs when alpha = 0
      jac = layers[target][0].T[None, :, :] * masks[target - 1][:, None, :]
      for k in range(target - 2, -1, -1):
        jac = (jac @ layers[k + 1][0].T[None, :, :]) * masks[k][:, None, :]
        qs[k] = qs[k] + jnp.einsum("bij,i->bj", jac * jac, ps[target])
  for l in range(num):
    k_w = alpha * gs[l][:, None] * ps[l][None, :]
    k_b = alpha * ps[l]
    if traced or alpha < 1.0:
      h2 = hs[l] * hs[l]
      k_w = k_w + (1.0 - alpha) * (h2.T @ qs[l]) / batch
      k_b = k_b + (1.0 - alpha) * jnp.mean(qs[l], axis=0)
    kappas.append((k_w, k_b))
  return kappas


def ddp_network(model: nnx.Module) -> tuple[Network, nnx.State]:
  """The functional form ``(network, params)`` of a dense ReLU MLP, checked for DDP-SGD.

  DDP-SGD needs each unit's pre-activation, which it reads off a layered dense network: the
  model must be a :class:`tomioka_jax.core.MLP` (``model.layers``: ``nnx.Linear`` layers with
  ReLU between them).

  Raises:
    ValueError: the model has a layer other than ``nnx.Linear`` or is not layered that way.
  """
  for path, module in nnx.iter_modules(model):
    own_params = [v for v in vars(module).values() if isinstance(v, nnx.Param)]
    if own_params and not isinstance(module, nnx.Linear):
      where = "/".join(str(p) for p in path) or "<root>"
      raise ValueError(
          f"unsupported layer {type(module).__name__} at {where!r} in model: DDP-SGD supports "
          f"dense ReLU MLPs whose parameters all belong to Linear layers (core.MLP)")
  layers = getattr(model, "layers", None)
  if layers is None or not all(isinstance(layer, nnx.Linear) for layer in layers):
    raise ValueError(f"model must be a core.MLP-like module with a `layers` list of "
                     f"nnx.Linear, got {type(model).__name__}")
  return nnx_network(model)


def _mlp_layers(params: Any) -> list[tuple[jax.Array, jax.Array | None]]:
  try:
    return capacity.mlp_layers(params)
  except (KeyError, TypeError, AttributeError) as err:
    raise ValueError(
        "params must be the parameter state of a core.MLP (params['layers'][i]['kernel'], "
        f"['bias']); got a {type(params).__name__} without that structure") from err


class ScaleByDDPState(NamedTuple):
  """DDP-SGD keeps no state: ``kappa`` is recomputed from the weights and the batch."""


def scale_by_ddp(alpha: float, *, reference_inputs: jax.typing.ArrayLike | None = None,
                 input_gamma: str = "ones",
                 eps: float = 1e-12) -> optax.GradientTransformationExtraArgs:
  """Divides each gradient entry by ``kappa_e = (1/2) d^2 gamma_net^2 / d w_e^2``.

  The data-dependent part needs inputs: pass the mini-batch as an extra argument,
  ``update(grads, state, params, inputs=x)``. The core trainers do so through their
  extra-arguments hook, ``extra_args=lambda batch: {"inputs": batch["x"]}``
  (``core.make_train_step``, ``core.make_shard_map_train_step``, ``core.make_scan_trainer``).
  Otherwise the fixed ``reference_inputs`` (e.g. a few hundred training inputs) are used.

  Args:
    alpha: the interpolation parameter in [0, 1]; 1 is Path-SGD.
    reference_inputs: inputs used when ``update`` gets no ``inputs``.
    input_gamma: ``"ones"`` or ``"second_moment"``, see :func:`ddp_gammas`.
    eps: a floor on ``kappa`` (a dead unit has ``kappa = 0``).

  Returns:
    An optax transformation; ``update`` needs ``params`` (a core.MLP parameter state).
  """
  alpha = _check_alpha(alpha)
  _check_input_gamma(input_gamma)
  if not eps > 0:
    raise ValueError(f"eps must be > 0, got {eps}")
  if reference_inputs is not None:
    reference_inputs = jnp.asarray(reference_inputs)

  def init_fn(params):
    del params
    return ScaleByDDPState()

  def update_fn(updates, state, params=None, *, inputs=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError("scale_by_ddp needs params: call update(grads, state, params)")
    x = inputs if inputs is not None else reference_inputs
    if x is None:
      raise ValueError("scale_by_ddp needs inputs: call update(grads, state, params, "
                       "inputs=x) or build it with reference_inputs")
    kappa = ddp_scaling(_mlp_layers(params), x, alpha, input_gamma=input_gamma)
    kappa = capacity.set_mlp_layers(params, kappa)
    updates = jax.tree.map(lambda g, k: (g / jnp.maximum(k, eps)).astype(g.dtype), updates,
                           kappa)
    return updates, state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def ddp_sgd(learning_rate: optax.ScalarOrSchedule, alpha: float, *,
            reference_inputs: jax.typing.ArrayLike | None = None, input_gamma: str = "ones",
            momentum: float | None = None, nesterov: bool = False,
            eps: float = 1e-12) -> optax.GradientTransformationExtraArgs:
  """DDP-SGD: ``w <- w - learning_rate * g / kappa(w, x)``, optionally with momentum.

  Args:
    learning_rate: a positive step size or an optax schedule.
    alpha: the interpolation parameter in [0, 1] (1: Path-SGD; 0: diagonal Gauss-Newton of
      the outputs' second moments).
    reference_inputs, input_gamma, eps: as in :func:`scale_by_ddp`.
    momentum: heavy-ball momentum on the normalized gradient (``None``: none).
    nesterov: Nesterov momentum.

  Example:
    >>> import jax, numpy as np
    >>> from flax import nnx
    >>> from tomioka_jax import core
    >>> model = core.MLP(64, (100, 100), 10, rngs=nnx.Rngs(0))
    >>> network, params = ddp_network(model)
    >>> opt = ddp_sgd(0.05, alpha=0.5)
    >>> state = opt.init(params)
    >>> grads = jax.tree.map(np.ones_like, params)
    >>> x_batch = np.random.default_rng(0).random((32, 64), np.float32)
    >>> updates, state = opt.update(grads, state, params, inputs=x_batch)
    >>> jax.tree.structure(updates) == jax.tree.structure(params)
    True
  """
  if not callable(learning_rate) and not learning_rate > 0:
    raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
  if momentum is not None and not 0 <= momentum < 1:
    raise ValueError(f"momentum must be in [0, 1) or None, got {momentum}")
  parts = [scale_by_ddp(alpha, reference_inputs=reference_inputs, input_gamma=input_gamma,
                        eps=eps)]
  if momentum:
    parts.append(optax.trace(decay=momentum, nesterov=nesterov))
  parts.append(optax.scale_by_learning_rate(learning_rate))
  return optax.chain(*parts)


class DDPSecondMoment(nnx.BatchStat):
  """Running average of a unit's squared raw pre-activation (DDP-Normalization)."""


class DDPNormalizedLinear(nnx.Module):
  """A dense layer reparametrized by DDP-Normalization.

  ``y_v = g_v * t_v / sqrt(gamma_v^2 + epsilon)`` with ``t = x V + c`` and
  ``gamma_v^2 = alpha (||V_{:,v}||^2 + c_v^2) + (1 - alpha) E[t_v^2]`` (the batch mean in
  training, a running average with ``use_running_average=True``). The output does not change
  when a unit's raw weights ``(V_{:,v}, c_v)`` are multiplied by ``s > 0`` (up to
  ``epsilon``).

  ``center=True`` subtracts the batch mean of the inputs first (``t = (x - E[x]) V + c``, a
  running mean in evaluation), so the data-dependent term is the variance of ``x V``, as batch
  normalization uses; at ``alpha = 0`` the layer is then batch normalization with its shift
  ``c`` inside the normalization. Our option, not the paper's (see ``benchmarks/ddp.py``).
  """

  def __init__(self, in_features: int, out_features: int, *, alpha: float,
               use_bias: bool = True, use_scale: bool = True, momentum: float = 0.99,
               epsilon: float = 1e-6, use_running_average: bool = False, center: bool = False,
               rngs: nnx.Rngs, dtype: Any = jnp.float32):
    self.alpha = _check_alpha(alpha)
    if in_features < 1 or out_features < 1:
      raise ValueError(f"in_features and out_features must be >= 1, got {in_features}, "
                       f"{out_features}")
    if not 0 <= momentum < 1:
      raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if not epsilon > 0:
      raise ValueError(f"epsilon must be > 0, got {epsilon}")
    init = nnx.initializers.lecun_normal()
    self.kernel = nnx.Param(init(rngs.params(), (in_features, out_features), dtype))
    self.bias = nnx.Param(jnp.zeros((out_features,), dtype)) if use_bias else None
    self.scale = nnx.Param(jnp.ones((out_features,), dtype)) if use_scale else None
    self.second_moment = DDPSecondMoment(jnp.ones((out_features,), jnp.float32))
    self.input_mean = (DDPSecondMoment(jnp.zeros((in_features,), jnp.float32)) if center
                       else None)
    self.momentum = momentum
    self.epsilon = epsilon
    self.use_running_average = use_running_average

  def __call__(self, x: jax.Array, *, use_running_average: bool | None = None) -> jax.Array:
    running = self.use_running_average if use_running_average is None else use_running_average
    kernel = self.kernel[...]
    if self.input_mean is not None:
      if running:
        mean = self.input_mean[...]
      else:
        mean = jnp.mean(x.astype(jnp.float32), axis=0)
        self.input_mean[...] = (self.momentum * self.input_mean[...] +
                                (1.0 - self.momentum) * jax.lax.stop_gradient(mean))
      x = x - mean[None, :].astype(x.dtype)
    t = x @ kernel
    weight_sq = jnp.sum(jnp.square(kernel.astype(jnp.float32)), axis=0)
    if self.bias is not None:
      bias = self.bias[...]
      t = t + bias[None, :]
      weight_sq = weight_sq + jnp.square(bias.astype(jnp.float32))
    if running:
      moment = self.second_moment[...]
    else:
      moment = jnp.mean(jnp.square(t.astype(jnp.float32)), axis=0)
      self.second_moment[...] = (self.momentum * self.second_moment[...] +
                                 (1.0 - self.momentum) * jax.lax.stop_gradient(moment))
    gamma_sq = self.alpha * weight_sq + (1.0 - self.alpha) * moment
    y = t * jax.lax.rsqrt(gamma_sq + self.epsilon)[None, :].astype(t.dtype)
    if self.scale is not None:
      y = y * self.scale[...][None, :]
    return y


class DDPNormalizedMLP(nnx.Module):
  """A ReLU MLP of :class:`DDPNormalizedLinear` layers (inputs are flattened).

  ``normalize_output=True`` (the default) normalizes every layer, the output layer included,
  so that every node of the network is reparametrized. ``normalize_output=False`` keeps a plain
  ``nnx.Linear`` output layer (``self.layers[-1]``), the layout of a batch-normalized MLP, whose
  logits are not normalized either. ``center`` is passed to every normalized layer.
  """

  def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int, *,
               alpha: float, rngs: nnx.Rngs, momentum: float = 0.99,
               normalize_output: bool = True, center: bool = False,
               dtype: Any = jnp.float32):
    sizes = [in_features, *hidden, num_classes]
    if any(s < 1 for s in sizes):
      raise ValueError(f"layer sizes must be positive, got in_features={in_features}, "
                       f"hidden={tuple(hidden)}, num_classes={num_classes}")
    self.in_features = in_features
    self.normalize_output = normalize_output
    layers = [DDPNormalizedLinear(a, b, alpha=alpha, momentum=momentum, center=center,
                                  rngs=rngs, dtype=dtype)
              for a, b in zip(sizes[:-2], sizes[1:-1])]
    if normalize_output:
      layers.append(DDPNormalizedLinear(sizes[-2], sizes[-1], alpha=alpha, momentum=momentum,
                                        center=center, rngs=rngs, dtype=dtype))
    else:
      layers.append(nnx.Linear(sizes[-2], sizes[-1], rngs=rngs, param_dtype=dtype))
    self.layers = nnx.List(layers)

  def __call__(self, x: jax.Array, *, use_running_average: bool | None = None) -> jax.Array:
    x = jnp.reshape(x, (x.shape[0], -1))
    if x.shape[1] != self.in_features:
      raise ValueError(f"x must have {self.in_features} features per example after "
                       f"flattening, got shape {x.shape}")
    for layer in self.layers[:-1]:
      x = jax.nn.relu(layer(x, use_running_average=use_running_average))
    if not self.normalize_output:
      return self.layers[-1](x)
    return self.layers[-1](x, use_running_average=use_running_average)


__all__ = [
    "ddp_gammas",
    "ddp_norm",
    "ddp_scaling",
    "ddp_network",
    "ScaleByDDPState",
    "scale_by_ddp",
    "ddp_sgd",
    "DDPSecondMoment",
    "DDPNormalizedLinear",
    "DDPNormalizedMLP",
]
