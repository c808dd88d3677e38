"""Timewarp's conditional normalizing flow ``p(y_x, y_v | x_t, v_t)`` (Klein et al. 2023, Sec. 3).

The flow models the positions ``y_x = x_{t+tau}`` (``(n_atoms, 3)``) jointly with auxiliary
velocities ``y_v`` (``(n_atoms, 3)``, a standard normal under the target) given the conditioning
state ``(x_t, v_t)``:

* **Target and canonicalization.** The positions half of the flow is the displacement
  ``y_x - x_t``; the conditioning positions are centred on their (unweighted, unmasked) centre
  ``x_t - mean(x_t)``, so the model is translation equivariant.
* **Base.** ``z_x ~ N(0, e^{2 a} I)``, ``z_v ~ N(0, e^{2 b} I)`` with learnable log-scales
  ``a, b`` (scalars).
* **Couplings** (RealNVP, an even number, alternating): coupling ``k`` transforms one half
  ``u`` (positions for even ``k``, velocities for odd ``k``) given the other half ``o``,

  .. math::  u' = u \\odot e^{s(h)} + t(h), \\qquad \\log|\\det \\partial u'/\\partial u|
             = \\textstyle\\sum_{i,a} s_{ia}(h),

  ``h = [\\mathrm{embed}(\\text{type}), x_t - \\bar x_t, v_t, o]`` per atom, and ``(s, t)`` the
  6 outputs per atom of a transformer over atoms (per-axis scales, so the flow is not
  rotation equivariant: training uses random-rotation augmentation instead). The log-scale
  is soft-clamped, ``s = S \\tanh(\\hat s / S)`` with ``S = max_log_scale``, for stable training.
* **Kernel attention** (the reference's ``kernel_attention.py``): head ``h`` with lengthscale
  ``l_h`` mixes atoms with weights

  .. math::  A^h_{ij} = \\frac{\\exp(-|x_i - x_j|^2 / l_h^2)}{\\sum_{k} \\exp(-|x_i - x_k|^2/l_h^2)}

  of the conditioning positions (padded atoms excluded from the sum), ``out_i = W_o
  \\mathrm{concat}_h \\sum_j A^h_{ij} W^h_v h_j``; a layer is kernel attention and a ReLU
  feedforward, each with a residual connection and post-layer norm. The weights depend only
  on ``x_t``, so they are computed once per call and shared by every coupling.
* **Density.** ``log p(y_x, y_v | x_t, v_t) = log N(z) - sum_k log|det J_k|`` with ``z`` the
  inverse image; masked (padded) atoms are passed through unchanged and left out of every
  sum.

Training is maximum likelihood (:func:`make_flow_loss`, :func:`train_flow` on the core
sampler trainer) with the reference's auxiliary velocities drawn from ``N(0, I)`` for both
``v_t`` and ``y_v`` and a uniform random rotation applied jointly to ``(x_t, y_x)``.

The reference's AD-1 model (``configs/kernel_transformer_nvp.yaml``) is
``TimewarpFlow(num_atom_types, **AD1_FLOW_CONFIG, rngs=...)``: 8 couplings, 3 layers,
``d_model`` 128, feedforward 2048, 6 heads with lengthscales 0.1, 0.2, 0.5, 0.7, 1.0, 1.2 nm,
32-dimensional atom embeddings (trained with Adam 1e-4, 1000 warm-up steps, batch 32). The
defaults here are scaled for a CPU (4 couplings, 2 layers, ``d_model`` 32). One difference to
the reference: ``s`` and ``t`` come from one transformer with 6 outputs per atom rather than
two transformers.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.typing import ArrayLike

from tomioka_jax import core

AD1_FLOW_CONFIG = {
    "num_couplings": 8,
    "num_layers": 3,
    "d_model": 128,
    "dim_feedforward": 2048,
    "lengthscales": (0.1, 0.2, 0.5, 0.7, 1.0, 1.2),
    "atom_embedding_dim": 32,
}
"""The reference's best alanine-dipeptide (AD-1) configuration, keyword arguments of
:class:`TimewarpFlow` (trained there with Adam 1e-4, 1000 warm-up steps, batch 32)."""


def _batch_shape_check(x: jax.Array, name: str) -> None:
  if x.ndim < 2 or x.shape[-1] != 3:
    raise ValueError(f"{name} must have shape (..., n_atoms, 3), got {x.shape}")


def _check_finite(name: str, x: jax.Array) -> None:
  if core.is_concrete(x) and not np.all(np.isfinite(np.asarray(x))):
    raise ValueError(f"{name} must have finite coordinates, got non-finite values")


def centre(x: jax.Array, mask: jax.Array) -> jax.Array:
  """``x - mean_unmasked(x)`` over atoms, ``(..., n, 3)``; masked atoms are set to zero."""
  w = mask.astype(x.dtype)[..., None]
  com = jnp.sum(x * w, axis=-2, keepdims=True) / jnp.maximum(jnp.sum(w, axis=-2, keepdims=True),
                                                             1.0)
  return (x - com) * w


def kernel_attention_weights(x: ArrayLike, lengthscales: Sequence[float],
                             mask: ArrayLike | None = None) -> jax.Array:
  """Kernel attention ``A[..., h, i, j] ∝ exp(-|x_i - x_j|^2 / l_h^2)``, normalized over ``j``.

  Args:
    x: ``(..., n, 3)`` positions.
    lengthscales: one per head (same unit as ``x``).
    mask: optional ``(..., n)`` bool, False for padded atoms (never attended to).

  Returns:
    ``(..., H, n, n)`` rows summing to one over the unmasked ``j``.
  """
  x = jnp.asarray(x)
  n = x.shape[-2]
  mask = jnp.ones(x.shape[:-1], bool) if mask is None else jnp.asarray(mask, bool)
  inv_l2 = jnp.asarray([1.0 / (l * l) for l in lengthscales], x.dtype)
  diff = x[..., :, None, :] - x[..., None, :, :]
  d2 = jnp.sum(diff * diff, axis=-1)  # (..., n, n)
  logits = -jnp.einsum("...ij,h->...hij", d2, inv_l2)
  keys = jnp.broadcast_to(mask[..., None, None, :], logits.shape)
  logits = jnp.where(keys, logits, jnp.asarray(-1e30, x.dtype))
  del n
  return jax.nn.softmax(logits, axis=-1)


class KernelAttention(nnx.Module):
  """Multi-head attention whose weights are the fixed Gaussian kernels of the positions."""

  def __init__(self, d_model: int, num_heads: int, *, rngs: nnx.Rngs):
    self.num_heads = num_heads
    self.head_dim = max(d_model // num_heads, 1)
    self.value = nnx.Linear(d_model, num_heads * self.head_dim, rngs=rngs)
    self.out = nnx.Linear(num_heads * self.head_dim, d_model, rngs=rngs)

  def __call__(self, h: jax.Array, weights: jax.Array) -> jax.Array:
    """``h (..., n, D)``, ``weights (..., H, n, n)`` -> ``(..., n, D)``."""
    v = self.value(h)
    v = v.reshape(v.shape[:-1] + (self.num_heads, self.head_dim))
    o = jnp.einsum("...hij,...jhd->...ihd", weights, v)
    return self.out(o.reshape(o.shape[:-2] + (self.num_heads * self.head_dim,)))


class KernelTransformerLayer(nnx.Module):
  """Kernel attention + ReLU feedforward, each residual with post layer norm."""

  def __init__(self, d_model: int, num_heads: int, dim_feedforward: int, *, rngs: nnx.Rngs):
    self.attention = KernelAttention(d_model, num_heads, rngs=rngs)
    self.norm1 = nnx.LayerNorm(d_model, rngs=rngs)
    self.ff1 = nnx.Linear(d_model, dim_feedforward, rngs=rngs)
    self.ff2 = nnx.Linear(dim_feedforward, d_model, rngs=rngs)
    self.norm2 = nnx.LayerNorm(d_model, rngs=rngs)

  def __call__(self, h: jax.Array, weights: jax.Array) -> jax.Array:
    h = self.norm1(h + self.attention(h, weights))
    return self.norm2(h + self.ff2(jax.nn.relu(self.ff1(h))))


class KernelTransformer(nnx.Module):
  """Input projection, kernel transformer layers, output projection (per atom)."""

  def __init__(self, d_in: int, d_out: int, *, d_model: int, num_layers: int, num_heads: int,
               dim_feedforward: int, zero_output: bool, rngs: nnx.Rngs):
    self.inp = nnx.Linear(d_in, d_model, rngs=rngs)
    self.layers = nnx.List([KernelTransformerLayer(d_model, num_heads, dim_feedforward, rngs=rngs)
                            for _ in range(num_layers)])
    init = nnx.initializers.zeros_init() if zero_output else nnx.initializers.lecun_normal()
    self.outp = nnx.Linear(d_model, d_out, kernel_init=init, rngs=rngs)

  def __call__(self, h: jax.Array, weights: jax.Array) -> jax.Array:
    h = self.inp(h)
    for layer in self.layers:
      h = layer(h, weights)
    return self.outp(h)


class AffineCoupling(nnx.Module):
  """One RealNVP coupling: ``u' = u e^{s} + t`` with ``(s, t)`` from a kernel transformer."""

  def __init__(self, d_in: int, *, d_model: int, num_layers: int, num_heads: int,
               dim_feedforward: int, max_log_scale: float, zero_output: bool, rngs: nnx.Rngs):
    self.net = KernelTransformer(d_in, 6, d_model=d_model, num_layers=num_layers,
                                 num_heads=num_heads, dim_feedforward=dim_feedforward,
                                 zero_output=zero_output, rngs=rngs)
    self.max_log_scale = max_log_scale

  def scale_shift(self, features: jax.Array, other: jax.Array, weights: jax.Array,
                  mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    out = self.net(jnp.concatenate([features, other], axis=-1), weights)
    m = self.max_log_scale
    s = m * jnp.tanh(out[..., :3] / m)
    keep = mask[..., None]
    return jnp.where(keep, s, 0.0), jnp.where(keep, out[..., 3:], 0.0)


class FlowOutput(NamedTuple):
  """Positions and velocities of one side of the flow and the accumulated log-determinant."""

  positions: jax.Array
  velocities: jax.Array
  log_det: jax.Array


class TimewarpFlow(nnx.Module):
  """Timewarp's conditional RealNVP ``p(y_x, y_v | x_t, v_t)`` (module docstring).

  All methods take ``atom_types`` ``(n,)`` or ``(..., n)`` ints in ``[0, num_atom_types)``,
  conditioning ``x, v`` and targets ``y, w`` of shape ``(..., n, 3)`` with any common leading
  batch shape, and an optional ``mask`` ``(n,)`` / ``(..., n)`` bool (False = padded atom,
  ignored everywhere). Shapes, atom counts and (when concrete) finiteness are checked.

  Args:
    num_atom_types: size of the atom-type vocabulary.
    num_couplings: even number of couplings (positions, velocities, positions, ...).
    num_layers, d_model, dim_feedforward: each coupling's kernel transformer.
    lengthscales: one per attention head, in the unit of the positions (nm).
    atom_embedding_dim: width of the learned atom embedding.
    max_log_scale: bound ``S`` of the soft-clamped log-scales.
    init_log_scale: initial value of the base log-scales ``a`` (positions) and ``b``
      (velocities is always 0).
    identity_init: zero the couplings' output layers so the flow starts as the identity
      (the base distribution); False gives a random, non-trivial flow (tests).
    rngs: ``nnx.Rngs``.

  Raises:
    ValueError: an odd or non-positive ``num_couplings``, non-positive sizes or lengthscales.
  """

  def __init__(self, num_atom_types: int, *, num_couplings: int = 4, num_layers: int = 2,
               d_model: int = 32, dim_feedforward: int = 64,
               lengthscales: Sequence[float] = (0.1, 0.3, 0.6, 1.2),
               atom_embedding_dim: int = 16, max_log_scale: float = 3.0,
               init_log_scale: float = 0.0, identity_init: bool = True, rngs: nnx.Rngs):
    for name, val in (("num_atom_types", num_atom_types), ("num_layers", num_layers),
                      ("d_model", d_model), ("dim_feedforward", dim_feedforward),
                      ("atom_embedding_dim", atom_embedding_dim)):
      if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
        raise ValueError(f"{name} must be a positive integer, got {name}={val!r}")
    if (isinstance(num_couplings, bool) or not isinstance(num_couplings, (int, np.integer))
        or num_couplings < 2 or num_couplings % 2):
      raise ValueError(f"num_couplings must be an even integer >= 2 (couplings alternate between "
                       f"positions and velocities), got num_couplings={num_couplings!r}")
    lengthscales = tuple(float(l) for l in lengthscales)
    if not lengthscales or not all(math.isfinite(l) and l > 0 for l in lengthscales):
      raise ValueError(f"lengthscales must be a non-empty sequence of positive numbers, got "
                       f"{lengthscales!r}")
    if not (math.isfinite(max_log_scale) and max_log_scale > 0):
      raise ValueError(f"max_log_scale must be a finite number > 0, got {max_log_scale!r}")
    self.num_atom_types = int(num_atom_types)
    self.lengthscales = lengthscales
    self.embed = nnx.Embed(int(num_atom_types), int(atom_embedding_dim), rngs=rngs)
    d_in = int(atom_embedding_dim) + 9  # embedding, centred x_t, v_t, the other half
    self.couplings = nnx.List([
        AffineCoupling(d_in, d_model=int(d_model), num_layers=int(num_layers),
                       num_heads=len(lengthscales), dim_feedforward=int(dim_feedforward),
                       max_log_scale=float(max_log_scale), zero_output=identity_init, rngs=rngs)
        for _ in range(int(num_couplings))])
    self.positions_log_scale = nnx.Param(jnp.asarray(float(init_log_scale), jnp.float32))
    self.velocities_log_scale = nnx.Param(jnp.asarray(0.0, jnp.float32))

  # ---- shared preparation -------------------------------------------------------------------

  def _prepare(self, atom_types, x, v, mask, *others):
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
      x = x.astype(jnp.float32)
    _batch_shape_check(x, "x")
    n = x.shape[-2]
    arrays = []
    for name, a in (("v", v),) + others:
      a = jnp.asarray(a, x.dtype)
      if a.shape != x.shape:
        raise ValueError(f"{name} must have the shape of x {x.shape}, got {a.shape}")
      _check_finite(name, a)
      arrays.append(a)
    _check_finite("x", x)
    types = jnp.asarray(atom_types)
    if types.ndim < 1 or types.shape[-1] != n or not jnp.issubdtype(types.dtype, jnp.integer):
      raise ValueError(f"atom_types must be integers of shape (n_atoms,) or (..., n_atoms) with "
                       f"n_atoms = {n} (the positions' atom count), got {types.shape} "
                       f"({types.dtype})")
    if core.is_concrete(types) and types.size:
      t = np.asarray(types)
      if t.min() < 0 or t.max() >= self.num_atom_types:
        raise ValueError(f"atom_types must lie in [0, {self.num_atom_types}), got values in "
                         f"[{t.min()}, {t.max()}]")
    batch = x.shape[:-1]
    types = jnp.broadcast_to(types, batch)
    if mask is None:
      m = jnp.ones(batch, bool)
    else:
      m = jnp.asarray(mask)
      if m.ndim < 1 or m.shape[-1] != n:
        raise ValueError(f"mask must have shape (n_atoms,) or (..., n_atoms) with n_atoms = {n}, "
                         f"got {m.shape}")
      m = jnp.broadcast_to(m.astype(bool), batch)
    xc = centre(x, m)
    weights = kernel_attention_weights(xc, self.lengthscales, m)
    features = jnp.concatenate([self.embed(types).astype(x.dtype), xc, jnp.where(
        m[..., None], arrays[0], 0.0)], axis=-1)
    return x, m, weights, features, arrays

  def _base_log_prob(self, zx, zv, m):
    a, b = self.positions_log_scale[...], self.velocities_log_scale[...]
    keep = m[..., None].astype(zx.dtype)
    c = 0.5 * math.log(2.0 * math.pi)
    lx = -0.5 * (zx * jnp.exp(-a)) ** 2 - a - c
    lv = -0.5 * (zv * jnp.exp(-b)) ** 2 - b - c
    return jnp.sum((lx + lv) * keep, axis=(-1, -2))

  def _forward(self, zx, zv, features, weights, m):
    log_det = jnp.zeros(zx.shape[:-2], zx.dtype)
    for k, coupling in enumerate(self.couplings):
      if k % 2 == 0:
        s, t = coupling.scale_shift(features, zv, weights, m)
        zx = zx * jnp.exp(s) + t
      else:
        s, t = coupling.scale_shift(features, zx, weights, m)
        zv = zv * jnp.exp(s) + t
      log_det = log_det + jnp.sum(s, axis=(-1, -2))
    return zx, zv, log_det

  def _inverse(self, ux, uv, features, weights, m):
    log_det = jnp.zeros(ux.shape[:-2], ux.dtype)
    for k in reversed(range(len(self.couplings))):
      coupling = self.couplings[k]
      if k % 2 == 0:
        s, t = coupling.scale_shift(features, uv, weights, m)
        ux = (ux - t) * jnp.exp(-s)
      else:
        s, t = coupling.scale_shift(features, ux, weights, m)
        uv = (uv - t) * jnp.exp(-s)
      log_det = log_det - jnp.sum(s, axis=(-1, -2))
    return ux, uv, log_det

  # ---- public API ---------------------------------------------------------------------------

  def forward(self, atom_types: ArrayLike, x: ArrayLike, v: ArrayLike, z_x: ArrayLike,
              z_v: ArrayLike, mask: ArrayLike | None = None) -> FlowOutput:
    """Base -> data: latents ``(z_x, z_v)`` to ``(y, w)``, with ``log|det dy dw / dz|``.

    Masked atoms get ``y = x`` and ``w = 0``.
    """
    x, m, weights, features, (_, zx, zv) = self._prepare(atom_types, x, v, mask, ("z_x", z_x),
                                                         ("z_v", z_v))
    ux, uv, log_det = self._forward(zx, zv, features, weights, m)
    keep = m[..., None]
    return FlowOutput(jnp.where(keep, x + ux, x), jnp.where(keep, uv, 0.0), log_det)

  def inverse(self, atom_types: ArrayLike, x: ArrayLike, v: ArrayLike, y: ArrayLike,
              w: ArrayLike, mask: ArrayLike | None = None) -> FlowOutput:
    """Data -> base: ``(y, w)`` to the latents ``(z_x, z_v)``, with ``log|det dz / dy dw|``."""
    x, m, weights, features, (_, y, w) = self._prepare(atom_types, x, v, mask, ("y", y),
                                                       ("w", w))
    zx, zv, log_det = self._inverse(y - x, w, features, weights, m)
    keep = m[..., None]
    return FlowOutput(jnp.where(keep, zx, 0.0), jnp.where(keep, zv, 0.0), log_det)

  def log_prob(self, atom_types: ArrayLike, x: ArrayLike, v: ArrayLike, y: ArrayLike,
               w: ArrayLike, mask: ArrayLike | None = None) -> jax.Array:
    """``log p(y, w | x, v)`` ``(...)``: base density of the inverse image plus its log-det."""
    x, m, weights, features, (_, y, w) = self._prepare(atom_types, x, v, mask, ("y", y),
                                                       ("w", w))
    zx, zv, log_det = self._inverse(y - x, w, features, weights, m)
    return self._base_log_prob(zx, zv, m) + log_det

  def sample_and_log_prob(self, key: jax.Array, atom_types: ArrayLike, x: ArrayLike,
                          v: ArrayLike, mask: ArrayLike | None = None
                          ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One draw ``(y, w) ~ p(. | x, v)`` per conditioning state, and ``log p(y, w | x, v)``.

    For ``k`` draws from one state, broadcast ``x`` and ``v`` to ``(k, n, 3)`` first.

    Returns:
      ``(y (..., n, 3), w (..., n, 3), log_prob (...))``.
    """
    x, m, weights, features, _ = self._prepare(atom_types, x, v, mask)
    kx, kv = jax.random.split(key)
    zx = jnp.exp(self.positions_log_scale[...]).astype(x.dtype) * jax.random.normal(
        kx, x.shape, x.dtype)
    zv = jnp.exp(self.velocities_log_scale[...]).astype(x.dtype) * jax.random.normal(
        kv, x.shape, x.dtype)
    keep = m[..., None]
    zx, zv = jnp.where(keep, zx, 0.0), jnp.where(keep, zv, 0.0)
    base = self._base_log_prob(zx, zv, m)
    ux, uv, log_det = self._forward(zx, zv, features, weights, m)
    return jnp.where(keep, x + ux, x), jnp.where(keep, uv, 0.0), base - log_det

  def sample(self, key: jax.Array, atom_types: ArrayLike, x: ArrayLike, v: ArrayLike,
             mask: ArrayLike | None = None) -> tuple[jax.Array, jax.Array]:
    """One draw ``(y, w) ~ p(. | x, v)`` per conditioning state (see sample_and_log_prob)."""
    y, w, _ = self.sample_and_log_prob(key, atom_types, x, v, mask)
    return y, w


# ---- rotations and the likelihood loss --------------------------------------------------------


def random_rotation(key: jax.Array, shape: Sequence[int] = (), dtype: Any = jnp.float32
                    ) -> jax.Array:
  """Uniform (Haar) random rotations ``(*shape, 3, 3)``: the matrix of a uniform unit quaternion.

  A standard normal 4-vector normalized is uniform on ``S^3``, and the quaternion map ``S^3 ->
  SO(3)`` pushes the uniform measure to the Haar measure; the result is orthogonal with
  determinant +1 by construction.
  """
  q = jax.random.normal(key, tuple(shape) + (4,), dtype)
  q = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
  a, b, c, d = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
  rows = [
      [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
      [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
      [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d],
  ]
  return jnp.stack([jnp.stack(r, axis=-1) for r in rows], axis=-2)


def make_flow_loss(*, rotate: bool = True) -> Callable[[TimewarpFlow, dict, jax.Array],
                                                     tuple[jax.Array, dict]]:
  """The negative log-likelihood loss ``loss_fn(flow, batch, rng) -> (loss, metrics)``.

  ``batch`` holds ``"x"``, ``"y"`` ``(B, n, 3)`` pairs ``(x_t, x_{t+tau})``, ``"atom_types"``
  ``(B, n)`` ints and optionally ``"mask"`` ``(B, n)`` bool. The auxiliary velocities ``v_t``,
  ``y_v`` are drawn from ``N(0, I)``; with ``rotate`` one uniform random rotation per example
  is applied to both ``x`` and ``y`` (about the origin; the model only sees ``y - x`` and the
  centred ``x``, so the centre of rotation does not matter). The loss is the mean of
  ``-log p(y, y_v | x, v_t)``; ``metrics`` has ``nll_per_atom`` (divided by the number of
  unmasked atoms).
  """

  def loss_fn(flow: TimewarpFlow, batch: dict, rng: jax.Array):
    x, y = batch["x"], batch["y"]
    mask = batch.get("mask")
    k_rot, k_v, k_w = jax.random.split(rng, 3)
    if rotate:
      r = random_rotation(k_rot, x.shape[:-2], x.dtype)
      x = jnp.einsum("...ij,...nj->...ni", r, x)
      y = jnp.einsum("...ij,...nj->...ni", r, y)
    v = jax.random.normal(k_v, x.shape, x.dtype)
    w = jax.random.normal(k_w, x.shape, x.dtype)
    logp = flow.log_prob(batch["atom_types"], x, v, y, w, mask)
    nll = -jnp.mean(logp)
    atoms = x.shape[-2] if mask is None else jnp.sum(jnp.asarray(mask, x.dtype), axis=-1)
    return nll, {"nll_per_atom": jnp.mean(-logp / atoms)}

  return loss_fn


def regularized_energy_difference(du: jax.Array, cutoff: float) -> jax.Array:
  """``du`` below ``cutoff``, ``cutoff + log(1 + du - cutoff)`` above (and for ``+inf``).

  The logarithmic continuation (as in Boltzmann generators, Noé et al. 2019) keeps the
  gradient of a loss on the energies of a poor model's samples, whose atoms overlap and whose
  energies reach ``1e10`` kJ/mol, of the size of a relative change (``1 / du``) instead of the
  force itself. Non-finite ``du`` counts as ``1e30`` (``cutoff + 69``, finite, no gradient).
  """
  excess = jnp.maximum(du - cutoff, 0.0)
  soft = cutoff + jnp.log1p(jnp.where(jnp.isfinite(excess), excess, 1e30))
  return jnp.where(du < cutoff, du, soft)


def make_acceptance_loss(energy_fn: Callable[[jax.Array], jax.Array], kT: float, *,
                         likelihood_weight: float = 1.0, energy_cutoff: float = 1000.0,
                         rotate: bool = True
                         ) -> Callable[[TimewarpFlow, dict, jax.Array], tuple[jax.Array, dict]]:
  r"""The acceptance loss: the expected ``-log alpha`` of one Metropolis-Hastings step, plus NLL.

  Timewarp fine-tunes a likelihood-trained flow to raise its acceptance (Klein et al. 2023,
  Sec. 4, "acceptance loss"). For a data state ``x`` (``batch["x"]``), ``v ~ N(0, I)`` and a
  reparameterized proposal ``(y, w) ~ p_theta(. | x, v)``,

  .. math::  -\log\alpha = \max\Big(0, \frac{U(y) - U(x)}{kT} + \frac{|w|^2 - |v|^2}{2}
             + \log p_\theta(y, w | x, v) - \log p_\theta(x, v | y, w)\Big),

  differentiated through the sample (so ``energy_fn`` must be differentiable: e.g.
  ``jax_energy_fn(evaluator, differentiable=True)``), with ``U(y) - U(x)`` replaced by
  :func:`regularized_energy_difference` above ``energy_cutoff`` (kJ/mol). The loss is the mean
  of ``-log alpha`` plus ``likelihood_weight`` times :func:`make_flow_loss`'s NLL on the data
  pairs ``(batch["x"], batch["y"])`` (the reference keeps the likelihood term so the flow does not
  collapse to tiny moves, which are accepted but useless). ``rotate``: one random rotation per
  example, as in :func:`make_flow_loss` (``U`` is rotation invariant).

  Returns:
    ``loss_fn(flow, batch, rng) -> (loss, metrics)`` for :func:`train_flow`; metrics:
    ``nll_per_atom``, ``neg_log_alpha`` (the mean, regularized) and ``acceptance`` (the mean
    MH acceptance probability with the exact energies).

  Raises:
    ValueError: ``kT`` or ``energy_cutoff`` not a finite number > 0, a negative or non-finite
      ``likelihood_weight``.
  """
  if not callable(energy_fn):
    raise TypeError(f"energy_fn must be callable, got {type(energy_fn).__name__}")
  for name, val in (("kT", kT), ("energy_cutoff", energy_cutoff)):
    if isinstance(val, bool) or not isinstance(val, (int, float, np.integer, np.floating)) or not (
        math.isfinite(val) and val > 0):
      raise ValueError(f"{name} must be a finite number > 0 (kJ/mol), got {name}={val!r}")
  if not (math.isfinite(likelihood_weight) and likelihood_weight >= 0):
    raise ValueError(f"likelihood_weight must be a finite number >= 0, got "
                     f"likelihood_weight={likelihood_weight!r}")
  nll_loss = make_flow_loss(rotate=False)
  kT, cutoff, lam = float(kT), float(energy_cutoff), float(likelihood_weight)

  def loss_fn(flow: TimewarpFlow, batch: dict, rng: jax.Array):
    x, y = batch["x"], batch["y"]
    mask = batch.get("mask")
    k_rot, k_nll, k_v, k_p = jax.random.split(rng, 4)
    if rotate:
      r = random_rotation(k_rot, x.shape[:-2], x.dtype)
      x = jnp.einsum("...ij,...nj->...ni", r, x)
      y = jnp.einsum("...ij,...nj->...ni", r, y)
    nll, metrics = nll_loss(flow, {**batch, "x": x, "y": y}, k_nll)
    types = batch["atom_types"]
    v = jax.random.normal(k_v, x.shape, x.dtype)
    if mask is not None:
      v = jnp.where(jnp.asarray(mask, bool)[..., None], v, 0.0)
    prop, w, logp_fwd = flow.sample_and_log_prob(k_p, types, x, v, mask)
    logp_rev = flow.log_prob(types, prop, w, x, v, mask)
    du = energy_fn(prop) - jax.lax.stop_gradient(energy_fn(x))
    rest = 0.5 * (jnp.sum(w * w, axis=(-1, -2)) - jnp.sum(v * v, axis=(-1, -2))) + (
        logp_fwd - logp_rev)
    neg_log_alpha = jnp.maximum(regularized_energy_difference(du, cutoff) / kT + rest, 0.0)
    exact = jnp.where(jnp.isfinite(du), du / kT + rest, jnp.inf)
    acceptance = jnp.exp(-jnp.maximum(jax.lax.stop_gradient(exact), 0.0))
    loss = jnp.mean(neg_log_alpha) + lam * nll
    return loss, {**metrics, "neg_log_alpha": jnp.mean(neg_log_alpha),
                  "acceptance": jnp.mean(acceptance)}

  return loss_fn


def train_flow(flow: TimewarpFlow, x: ArrayLike, y: ArrayLike, key: jax.Array, *,
               atom_types: ArrayLike, steps: int, batch_size: int = 32,
               learning_rate: float = 1e-3, warmup_steps: int = 100, clip_norm: float = 10.0,
               mask: ArrayLike | None = None, rotate: bool = True,
               loss_fn: Callable[[TimewarpFlow, dict, jax.Array], tuple[jax.Array, dict]]
               | None = None) -> tuple[TimewarpFlow, dict]:
  """Trains ``flow`` by maximum likelihood on pairs ``(x_t, x_{t+tau})`` (one compiled run).

  Each of ``steps`` Adam steps (linear warm-up to ``learning_rate`` over ``warmup_steps``,
  global-norm clipping at ``clip_norm``) draws ``batch_size`` pairs uniformly with replacement
  (``core.make_sampler_trainer`` with :func:`make_flow_loss`).

  Args:
    flow: the initial model (not modified).
    x, y: ``(N, n, 3)`` pairs (``training_pairs`` of a trajectory), float32.
    key: PRNG key (batches, rotations, auxiliary velocities).
    atom_types: ``(n,)`` or ``(N, n)`` ints.
    steps, batch_size: positive integers.
    learning_rate, warmup_steps, clip_norm: the optimizer.
    mask: optional ``(n,)`` or ``(N, n)`` bool.
    rotate: random-rotation augmentation.
    loss_fn: the loss (default ``make_flow_loss(rotate=rotate)``); e.g.
      :func:`make_acceptance_loss` to fine-tune a trained flow for acceptance.

  Returns:
    ``(trained flow, metrics)`` with ``metrics["loss"]``, ``metrics["nll_per_atom"]`` and the
    loss's other metrics as ``(steps,)`` NumPy arrays (per step).

  Raises:
    ValueError: ``x``/``y`` shapes differ or are not ``(N, n, 3)``, non-finite pairs,
      non-positive ``steps``/``batch_size``/``learning_rate``, negative ``warmup_steps``.
  """
  x = jnp.asarray(x, jnp.float32)
  y = jnp.asarray(y, jnp.float32)
  if x.ndim != 3 or x.shape[-1] != 3 or y.shape != x.shape:
    raise ValueError(f"x and y must both have shape (N, n_atoms, 3), got {x.shape} and {y.shape}")
  if not (bool(jnp.all(jnp.isfinite(x))) and bool(jnp.all(jnp.isfinite(y)))):
    raise ValueError("x and y must have finite coordinates, got non-finite values")
  for name, val in (("steps", steps), ("batch_size", batch_size)):
    if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
      raise ValueError(f"{name} must be a positive integer, got {name}={val!r}")
  if not (learning_rate > 0 and math.isfinite(learning_rate)):
    raise ValueError(f"learning_rate must be a finite number > 0, got {learning_rate!r}")
  if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, (int, np.integer)) or (
      warmup_steps < 0):
    raise ValueError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}")
  num, n = x.shape[0], x.shape[1]
  types = jnp.broadcast_to(jnp.asarray(atom_types, jnp.int32), (num, n))
  data = {"x": x, "y": y, "atom_types": types}
  if mask is not None:
    data["mask"] = jnp.broadcast_to(jnp.asarray(mask, bool), (num, n))
  # Validate shapes / types once on a concrete example before compiling.
  flow.log_prob(types[:1], x[:1], jnp.zeros_like(x[:1]), y[:1], jnp.zeros_like(y[:1]),
                None if mask is None else data["mask"][:1])
  if warmup_steps:
    schedule = optax.linear_schedule(0.0, learning_rate, int(warmup_steps))
  else:
    schedule = learning_rate
  optimizer = optax.chain(optax.clip_by_global_norm(clip_norm), optax.adam(schedule))

  def sample(k):
    idx = jax.random.randint(k, (batch_size,), 0, num)
    return jax.tree.map(lambda a: a[idx], data)

  k_state, k_train = jax.random.split(key)
  graphdef, state = core.create_train_state(flow, optimizer, k_state)
  if loss_fn is None:
    loss_fn = make_flow_loss(rotate=rotate)
  train = core.make_sampler_trainer(graphdef, loss_fn, optimizer,
                                    sample=sample, steps=int(steps))
  state, metrics = train(state, k_train)
  trained = nnx.merge(graphdef, state.params, state.model_state)
  return trained, {k: np.asarray(v) for k, v in metrics.items()}
