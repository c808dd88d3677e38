"""Path-SGD: steepest descent with respect to the path regularizer, as an optax transformation.

Neyshabur, Salakhutdinov, Srebro, "Path-SGD: Path-Normalized Optimization in Deep Neural
Networks", NeurIPS 2015 (arXiv 1506.02617); the method the path-normalization papers of
Neyshabur, Tomioka, Salakhutdinov and Srebro (arXiv 1412.6614, 1503.00036, 1511.06747,
1705.03071) build on.

For a ReLU network the squared 2-path norm is a sum over input-to-output paths of products of
squared weights, ``gamma^2(w) = sum_paths prod_{e in path} w_e^2``. Path-SGD divides each
gradient entry by ``kappa_e = d gamma^2 / d (w_e^2)``, the number of paths through edge ``e``
weighted by the other edges' squared weights, which makes the update invariant to node-wise
rescaling (multiplying a unit's incoming weights by ``c > 0`` and its outgoing weights by
``1/c``). All ``kappa_e`` come from one forward pass of the network with squared weights on
an all-ones input (every pre-activation is then non-negative, so each ReLU is the identity and
the output sums path products) and one backward pass.

Supported networks: any composition of dense (``nnx.Linear``) and convolution (``nnx.Conv``)
layers with ReLU activations, flattening, and average pooling -- every map that is linear or
ReLU, so that the squared-weight forward pass sums path products. Biases are extra path
sources: a bias ``b_v`` is an edge from a constant unit with value 1 to ``v``. Max pooling,
normalization layers and other activations are not path-sum networks; :func:`nnx_network`
rejects modules with parameters other than dense and convolution kernels and biases, and
:func:`scale_by_path_norm`'s ``init`` rejects networks that are not path sums (tanh, sigmoid,
max pooling, ...) by a probe: with non-negative weights and inputs a path-sum network is
affine in its input, ``f(a + b) + f(0) = f(a) + f(b)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from tomioka_jax import core

Params = Any
# network(params, x) -> outputs, for a batch x of shape (batch, *input_shape).
Network = Callable[[Params, jax.Array], jax.Array]

_SUPPORTED_LAYERS = (nnx.Linear, nnx.Conv)


def nnx_network(model: nnx.Module) -> tuple[Network, nnx.State]:
  """The functional form of an NNX model for Path-SGD: ``(network, params)``.

  ``network(params, x)`` merges ``params`` (an ``nnx.Param`` state of the same structure) into
  the model and calls it on ``x``. Checks that every parameter belongs to a supported layer.

  Raises:
    ValueError: the model has a parametrized layer that is not ``nnx.Linear``/``nnx.Conv``.
  """
  for path, module in nnx.iter_modules(model):
    own_params = [v for name, v in vars(module).items() if isinstance(v, nnx.Param)]
    if own_params and not isinstance(module, _SUPPORTED_LAYERS):
      where = "/".join(str(p) for p in path) or "<root>"
      raise ValueError(
          f"unsupported layer {type(module).__name__} at {where!r} in model: path "
          f"normalization needs a ReLU network whose parameters all belong to "
          f"{', '.join(t.__name__ for t in _SUPPORTED_LAYERS)} layers")
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def network(params, x):
    return nnx.merge(graphdef, params, jax.tree.map(lambda v: v, rest))(x)

  first = next((m for _, m in nnx.iter_modules(model) if isinstance(m, _SUPPORTED_LAYERS)), None)
  if isinstance(first, nnx.Linear):
    network.example_check = _dense_example_check(first.in_features)
  elif isinstance(first, nnx.Conv):
    network.example_check = _conv_example_check(len(first.kernel_size), first.in_features)
  return network, params


def _batch_axis_error(input_shape, why):
  return ValueError(
      f"input_shape={tuple(input_shape)} {why}: it looks like it includes the batch axis. "
      f"Pass the shape of one example (x.shape[1:] for a batch x); with the batch axis, "
      f"kappa would count every path once per example and the step would shrink by 1/batch.")


def _dense_example_check(in_features):
  def check(input_shape):
    size = 1
    for d in input_shape:
      size *= d
    if len(input_shape) > 1 and size != in_features and input_shape[-1] == in_features:
      raise _batch_axis_error(input_shape, f"holds {size} values per example but the first "
                              f"dense layer takes {in_features} inputs")
  return check


def _conv_example_check(spatial_dims, in_features):
  def check(input_shape):
    if len(input_shape) > spatial_dims + 1 and input_shape[-1] == in_features:
      raise _batch_axis_error(input_shape, f"has {len(input_shape)} axes but the first "
                              f"convolution takes {spatial_dims} spatial axes and channels")
  return check


def check_path_sum_network(network: Network, params: Params, input_shape: Sequence[int],
                           *, probes: int = 16, rtol: float = 1e-4) -> None:
  """Raises ``ValueError`` unless ``network`` sums paths: ReLU, linear maps and average pooling.

  With the squared (so non-negative) weights of ``params`` and non-negative inputs, every
  pre-activation of a path-sum network is non-negative, so each ReLU acts as the identity and
  the network is affine in its input: ``f(a + b) + f(0) = f(a) + f(b)``. tanh, sigmoid, max
  pooling and normalisation break this for random ``a, b``; ``probes`` pairs on disjoint
  random supports are tried (a probe, not a proof: a max that no probe switches passes).
  Needs concrete ``params``. The probe runs in at least float32; a network that computes in a
  lower precision is allowed a relative gap of four of its ulps.
  """
  # In at least float32: bfloat16's 8-bit mantissa would blur the affine identity.
  dtype = jnp.promote_types(jax.tree.leaves(params)[0].dtype, jnp.float32)
  squared = jax.tree.map(lambda w: jnp.square(jnp.asarray(w, dtype)), params)
  # Probe pairs on disjoint random supports, so that a max or a saturation that one input
  # direction leaves untouched is met by another.
  k_u, k_s = jax.random.split(jax.random.key(0))
  u = jax.random.uniform(k_u, (2, probes, *input_shape), dtype)
  side = jax.random.bernoulli(k_s, 0.5, (probes, *input_shape))
  a, b = jnp.where(side, u[0], 0), jnp.where(side, 0, u[1])
  f = lambda x: network(squared, x)  # noqa: E731
  lhs = f(a + b) + f(jnp.zeros_like(a))
  rhs = f(a) + f(b)
  scale = jnp.max(jnp.abs(lhs)) + jnp.max(jnp.abs(rhs))
  gap = float(jnp.max(jnp.abs(lhs - rhs)))
  # A network that computes in low precision (nnx layers with dtype=bfloat16) rounds its own
  # outputs: allow a few of its ulps.
  tol = max(rtol, 4 * float(jnp.finfo(lhs.dtype).eps))
  if not gap <= tol * float(scale):
    raise ValueError(
        f"network is not a path-sum network: with non-negative weights and inputs it is not "
        f"affine in its input (|f(a+b) + f(0) - f(a) - f(b)| = {gap:.3g}, scale "
        f"{float(scale):.3g}). Path-SGD's kappa needs ReLU activations, linear layers and "
        f"average pooling only; tanh, sigmoid, max pooling and normalisation are not supported.")


def path_scaling(network: Network, params: Params, input_shape: Sequence[int]) -> Params:
  """``kappa_e = d gamma^2(w) / d (w_e^2)`` for every parameter entry (a pytree like params).

  ``gamma^2(w) = sum(network(w**2, ones))``: with squared weights and an all-ones input every
  unit of a ReLU network outputs the sum over paths ending at it of products of squared
  weights (biases are paths of their own). The gradient with respect to the squared weights is
  the per-edge path count weighted by the rest of each path.

  Args:
    network: ``network(params, x) -> outputs``.
    params: the parameters ``w``.
    input_shape: the shape of one input example (without the batch axis).
  """
  squared = jax.tree.map(jnp.square, params)
  dtype = jax.tree.leaves(params)[0].dtype
  ones = jnp.ones((1, *input_shape), dtype)
  return jax.grad(lambda sq: jnp.sum(network(sq, ones)))(squared)


def network_path_norm(network: Network, params: Params, input_shape: Sequence[int],
              p: float = 2.0) -> jax.Array:
  """The l_p path norm ``(sum_paths prod_e |w_e|^p)^(1/p)`` for finite ``p >= 1``.

  Computed as the summed output of the network with weights ``|w|^p`` on an all-ones input.
  (For ``p = inf`` on dense networks, use :func:`tomioka_jax.optim.path_norm`.)
  """
  if not p >= 1 or p == float("inf"):
    raise ValueError(f"p must be a finite number >= 1, got {p}")
  powered = jax.tree.map(lambda w: jnp.abs(w) ** p, params)
  dtype = jax.tree.leaves(params)[0].dtype
  total = jnp.sum(network(powered, jnp.ones((1, *input_shape), dtype)))
  return total ** (1.0 / p)


class ScaleByPathNormState(NamedTuple):
  """Path-SGD keeps no state: ``kappa`` is recomputed from the current weights every step."""


def scale_by_path_norm(network: Network, input_shape: Sequence[int], *,
                       eps: float = 1e-12) -> optax.GradientTransformation:
  """Divides each gradient entry by its path scaling ``kappa_e`` (Path-SGD's preconditioner).

  .. math::  u_e = g_e / \\kappa_e(w), \\qquad
     \\kappa_e(w) = \\frac{\\partial \\gamma^2(w)}{\\partial w_e^2}

  Args:
    network: ``network(params, x)`` (see :func:`nnx_network`).
    input_shape: the shape of one input example.
    eps: a floor on ``kappa`` (a dead path has ``kappa = 0``).

  Returns:
    An optax transformation; its ``update`` needs ``params``. Its ``init`` checks, when
    ``params`` are concrete (not under ``jit``), that the network is a path-sum network
    (:func:`check_path_sum_network`).

  Raises:
    ValueError: ``eps <= 0``, or ``input_shape`` includes the batch axis (checked for networks
      from :func:`nnx_network` whose first layer is dense or a convolution).
  """
  if core.is_concrete(eps) and not eps > 0:
    raise ValueError(f"eps must be > 0, got {eps}")
  input_shape = tuple(int(d) for d in input_shape)
  example_check = getattr(network, "example_check", None)
  if example_check is not None:
    example_check(input_shape)

  def init_fn(params):
    if core.is_concrete(*jax.tree.leaves(params)):
      check_path_sum_network(network, params, input_shape)
    return ScaleByPathNormState()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("scale_by_path_norm needs params: call update(grads, state, params)")
    kappa = path_scaling(network, params, input_shape)
    updates = jax.tree.map(lambda g, k: (g / jnp.maximum(k, eps)).astype(g.dtype), updates, kappa)
    return updates, state

  return optax.GradientTransformation(init_fn, update_fn)


def path_sgd(learning_rate: optax.ScalarOrSchedule, network: Network,
             input_shape: Sequence[int], *, momentum: float | None = None,
             nesterov: bool = False, eps: float = 1e-12) -> optax.GradientTransformation:
  """Path-SGD: ``w <- w - learning_rate * g / kappa(w)``, optionally with momentum.

  Args:
    learning_rate: a positive step size or an optax schedule.
    network, input_shape: the network as in :func:`scale_by_path_norm`.
    momentum: heavy-ball momentum applied to the path-normalized gradient (``None``: none).
    nesterov: Nesterov momentum.
    eps: a floor on ``kappa``.

  With ``optax.inject_hyperparams`` (to schedule or change ``learning_rate`` inside a jitted
  step) name ``network`` and ``input_shape`` static: they are not hyperparameters, and
  inject_hyperparams would call ``network`` as a schedule,
  ``optax.inject_hyperparams(path_sgd, static_args=("network", "input_shape"))``.

  Example:
    >>> from flax import nnx
    >>> from tomioka_jax import core
    >>> model = core.MLP(64, (100, 100), 10, rngs=nnx.Rngs(0))
    >>> network, params = nnx_network(model)
    >>> opt = path_sgd(0.01, network, (8, 8, 1))
  """
  # optax.inject_hyperparams passes learning_rate as a traced array under jit: check it only
  # when it is a concrete number.
  if (not callable(learning_rate) and core.is_concrete(learning_rate)
      and not learning_rate > 0):
    raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
  if momentum is not None and not 0 <= momentum < 1:
    raise ValueError(f"momentum must be in [0, 1) or None, got {momentum}")
  parts = [scale_by_path_norm(network, input_shape, eps=eps)]
  if momentum:
    parts.append(optax.trace(decay=momentum, nesterov=nesterov))
  parts.append(optax.scale_by_learning_rate(learning_rate))
  return optax.chain(*parts)


__all__ = [
    "nnx_network",
    "path_scaling",
    "check_path_sum_network",
    "network_path_norm",
    "ScaleByPathNormState",
    "scale_by_path_norm",
    "path_sgd",
]
