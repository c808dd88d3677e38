"""MatterGen's score network: an E(3)-invariant periodic message-passing denoiser with a
coordinate-score head, a stress-like lattice-score head, type logits, property adapters and
classifier-free guidance.

Zeni, Pinsler, Zügner et al., "MatterGen: a generative model for inorganic materials design"
(2023; Nature 2025). The reference network is a GemNet-T with a stress head (hidden 512,
4 blocks, 7 angstrom cutoff, at most 50 neighbours, 46.8 M parameters); this is a compact model
in its spirit, with two-body (distance-only) messages and no triplet/angle terms.

**Inputs.** A noisy :class:`~tomioka_jax.science.mattergen.Crystals` batch (types in
``0..MASK_TYPE``: the absorbing state has its own embedding), the diffusion time ``t`` in
[0, 1] per crystal and, for a model with adapters, property values.

**Messages.** On the periodic cutoff graph (:func:`periodic_graph`) every edge carries the
distance ``d = |r_ij|`` only, through a Gaussian radial basis ``e(d)`` times the smooth
polynomial envelope ``u(d / c)`` of DimeNet (exponent ``p``; ``u(0) = 1`` and ``u``, ``u'``,
``u''`` vanish at the cutoff ``c``, so an edge enters or leaves the graph continuously):

.. math::
   u(x) = 1 - \\tfrac{(p+1)(p+2)}{2} x^p + p(p+2) x^{p+1} - \\tfrac{p(p+1)}{2} x^{p+2}.

Node states start from ``h_i = σ(W [emb(a_i), τ(t)])`` (τ: sinusoidal time features), edge
states from ``m_ij = σ(W [h_i, h_j, e(d_ij)])``; each block updates

.. math::
   m_{ij} \\leftarrow m_{ij} + \\mathrm{MLP}(m_{ij}, h_i, h_j) \\odot W_e e(d_{ij}),\\qquad
   h_i \\leftarrow h_i + \\mathrm{MLP}\\big(h_i, \\tfrac{1}{\\bar n} \\textstyle\\sum_j u_{ij}
   m_{ij}\\big),

with ``\\bar n`` a fixed normaliser (``avg_neighbors``). The initial edge state also sees the cosines
between the edge and the three lattice vectors (the reference's ``angle_edge_emb``;
``lattice_cosines``): they tell the lattice head how each edge lies in the cell. Every state is
then invariant under rotations and translations of the Cartesian frame and under integer
shifts of fractional coordinates; without the cosines (and the cell head below) also under
reflections and, when the graph is complete (:class:`PeriodicGraph`), under the choice of unit
cell. The lattice diffusion itself depends on the cell, so the reference gives that up.

**Outputs** (summed over the blocks, like GemNet's output blocks), with ``r̂_ij = r_ij / d_ij``,
as a :class:`DenoiserOutput` ``(lattice_score, coord_score, type_logits)``, the order of the
diffusion's score-model protocol ``model(noisy, t, cond) -> (lattice_out, coord_out, logits)``:

* the Cartesian coordinate score, an equivariant vector per atom
  ``s_i = Σ_blocks Σ_j w_ij u_ij r̂_ij`` with invariant edge weights ``w_ij``
  (``s -> s R^T`` when the frame rotates, ``L -> L R^T``), returned as is
  (``coord_frame="cartesian"``) or, by default and as in the reference, mapped to fractional
  coordinates as a displacement, ``s L^{-1}`` (rotation invariant);
* the lattice score, the reference's stress-like head: a symmetric Cartesian 3×3 matrix
  ``S = Σ_blocks (1/|E|) Σ_ij a_ij u_ij r̂_ij r̂_ij^T`` (``|E|`` the crystal's edge count;
  ``S -> R S R^T``). The reference uses ``S`` itself as the score of its symmetric
  (polar-decomposed) lattice, which transforms as ``P -> R P R^T`` too, and does *not*
  multiply by the lattice. For a general row-lattice ``L``, ``L S`` transforms like ``L``
  (``L S -> L S R^T``) if that is the quantity a corruption needs, plus (``cell_head``, not in
  the reference) :class:`CellHead`'s per-crystal term ``c0 I + c1 M + c2 M^2`` of the cell's
  shape metric ``M`` (:func:`cell_invariants`), which transforms the same way;
* type logits ``(B, N, 101)`` over the 100 elements and ``MASK_TYPE`` (the reference's
  ``fc_atom``), from the final node states.

Padding atoms have no edges and their outputs are zero.

**Coordinate conventions.** Cartesian positions are ``x = f L``. The chain rule turns a
Cartesian gradient into a fractional one, ``∇_f = ∇_x L^T`` (:func:`fractional_score`); the
reference instead maps its Cartesian output to fractional coordinates as a *displacement*,
``δf = δx L^{-1}`` (:func:`fractional_displacement`). Both maps are rotation invariant.

**Adapters** (reference ``GemNetTCtrl``): for each property ``p`` and each block ``b`` an MLP on
``[h_i, e_p]`` (``e_p`` the property's embedding) followed by a zero-initialised linear *mixin*
whose output is added to ``h_i`` after the block, so a model made by :func:`with_adapters`
computes exactly the base model's outputs until the mixins are trained. A crystal without a
property's condition is *unconditional* for it: with ``unconditional="base"`` (the reference)
the adapter's output is switched off, so the unconditional score is the base model's; with
``unconditional="null"`` the adapter runs on a learned null embedding instead.

**Classifier-free guidance** (:func:`guided_score`): ``s_γ = γ s_cond + (1 - γ) s_uncond`` for
both scores and for the type logits (the logits of ``p(a)^{1-γ} p(a | y)^γ``), with the
conditional and unconditional halves evaluated in one batch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tomioka_jax import core
from tomioka_jax.science.mattergen import _crystal
from tomioka_jax.science.mattergen import _graph

# The reference denoiser's size (MatterGen's GemNetTDenoiser configuration).
REFERENCE_HIDDEN = 512
REFERENCE_NUM_BLOCKS = 4
REFERENCE_NUM_PARAMETERS = 46_800_000

_UNCONDITIONAL_MODES = ("base", "null")
_COORD_FRAMES = ("fractional", "cartesian")


class DenoiserOutput(NamedTuple):
  """What the score network predicts for a batch (module docstring for the conventions).

  The order is that of the diffusion's score-model protocol, ``(lattice_out, coord_out,
  type_logits)``, so the output unpacks as that triple.

  Attributes:
    lattice_score: (B, 3, 3) symmetric Cartesian lattice score (the stress-like head).
    coord_score: (B, N, 3) coordinate score, in the model's ``coord_frame``: "fractional" (the
      reference: the Cartesian vector field mapped by ``δf = δx L^{-1}``) or "cartesian".
      Zero on padding atoms.
    type_logits: (B, N, NUM_TYPE_STATES) logits over elements and MASK_TYPE (zero on padding).
  """

  lattice_score: jax.Array
  coord_score: jax.Array
  type_logits: jax.Array


def fractional_score(cart_score: jax.Array, lattice: jax.Array) -> jax.Array:
  """The chain rule ``∇_f = ∇_x L^T`` for ``x = f L``: (B, N, 3) Cartesian -> fractional."""
  return jnp.einsum("bnd,bed->bne", cart_score, lattice)


def fractional_displacement(cart_vector: jax.Array, lattice: jax.Array) -> jax.Array:
  """A Cartesian displacement in fractional units, ``δf = δx L^{-1}`` (the reference's map of
  its Cartesian output to its fractional-coordinate score), shape (B, N, 3)."""
  return jnp.einsum("bnd,bde->bne", cart_vector, jnp.linalg.inv(lattice))


def lattice_cosines_of(unit: jax.Array, lattice: jax.Array) -> jax.Array:
  """The cosines between unit edge vectors (B, N, k, 3) and the crystal's three lattice vectors
  (rows of ``lattice`` (B, 3, 3)), shape (B, N, k, 3): the reference's edge feature that tells
  the network how each edge lies in the cell."""
  norms = jnp.linalg.norm(lattice, axis=-1)
  rows = lattice / jnp.where(norms > 0, norms, 1.0)[..., None]
  return jnp.einsum("bnkd,bld->bnkl", unit, rows)


def polynomial_envelope(x: jax.Array, exponent: int = 5) -> jax.Array:
  """DimeNet's smooth cutoff ``u(x)`` (module docstring): 1 at 0, 0 for ``x >= 1``, with the
  first two derivatives vanishing at 1."""
  p = exponent
  x = jnp.clip(x, 0.0, 1.0)
  u = (1.0 - 0.5 * (p + 1) * (p + 2) * x**p + p * (p + 2) * x**(p + 1)
       - 0.5 * p * (p + 1) * x**(p + 2))
  return jnp.where(x < 1.0, u, 0.0)


def gaussian_basis(d: jax.Array, num: int, cutoff: float) -> jax.Array:
  """Gaussians of ``d`` centred on ``num`` points evenly spaced in [0, cutoff], width the
  spacing; shape ``(*d.shape, num)``."""
  centers = jnp.reshape(jnp.linspace(0.0, cutoff, num), (1,) * d.ndim + (num,))
  width = cutoff / max(num - 1, 1)
  z = (d[..., None] - centers) / width
  return jnp.exp(-0.5 * z * z)


def time_embedding(t: jax.Array, dim: int, max_period: float = 1000.0) -> jax.Array:
  """Sinusoidal features ``[sin(ω_k t), cos(ω_k t)]`` of ``t`` in [0, 1] with frequencies
  ``ω_k`` geometric in [1, max_period]; shape (B, dim) (dim even)."""
  half = dim // 2
  freqs = jnp.exp(jnp.linspace(0.0, math.log(max_period), half))
  arg = t[:, None] * freqs[None, :]
  return jnp.concatenate([jnp.sin(arg), jnp.cos(arg)], axis=-1)


def is_null_condition(values: jax.Array) -> jax.Array:
  """Which crystals' property values, shape (B, dim), are the null ("unconditional") token:
  a NaN among floats, a negative integer, or no True among booleans. Shape (B,)."""
  values = jnp.asarray(values)
  if values.ndim == 1:
    values = values[:, None]
  if jnp.issubdtype(values.dtype, jnp.floating):
    return jnp.any(jnp.isnan(values), axis=-1)
  if jnp.issubdtype(values.dtype, jnp.bool_):
    return ~jnp.any(values, axis=-1)
  if jnp.issubdtype(values.dtype, jnp.integer):
    return jnp.any(values < 0, axis=-1)
  raise ValueError(f"condition values must be float, int or bool arrays, got {values.dtype}")


def _gather_neighbors(h: jax.Array, neighbors: jax.Array) -> jax.Array:
  # h (B, N, H), neighbors (B, N, k) -> (B, N, k, H)
  return jax.vmap(lambda hb, nb: hb[nb])(h, neighbors)


class _MLP(nnx.Module):

  def __init__(self, sizes: list[int], *, rngs: nnx.Rngs):
    self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])

  def __call__(self, x: jax.Array) -> jax.Array:
    for i, layer in enumerate(self.layers):
      x = layer(x)
      if i < len(self.layers) - 1:
        x = nnx.silu(x)
    return x


class InteractionBlock(nnx.Module):
  """One message-passing block with its coordinate- and lattice-score heads."""

  def __init__(self, hidden: int, num_radial: int, *, rngs: nnx.Rngs):
    # MLP(m_ij, h_i, h_j): the first layer split into edge, source and target parts.
    self.edge_m = nnx.Linear(hidden, hidden, rngs=rngs)
    self.edge_src = nnx.Linear(hidden, hidden, use_bias=False, rngs=rngs)
    self.edge_dst = nnx.Linear(hidden, hidden, use_bias=False, rngs=rngs)
    self.edge_out = nnx.Linear(hidden, hidden, rngs=rngs)
    self.edge_filter = nnx.Linear(num_radial, hidden, use_bias=False, rngs=rngs)
    self.node = _MLP([2 * hidden, hidden, hidden], rngs=rngs)
    # Output heads: w_ij = v^T (σ(m_ij) ⊙ W e(d_ij)), one for the coordinates, one for the
    # lattice (the reference puts a dense layer before each; left out for CPU speed).
    self.coord_filter = nnx.Linear(num_radial, hidden, use_bias=False, rngs=rngs)
    self.coord_out = nnx.Linear(hidden, 1, use_bias=False, rngs=rngs)
    self.lattice_filter = nnx.Linear(num_radial, hidden, use_bias=False, rngs=rngs)
    self.lattice_out = nnx.Linear(hidden, 1, use_bias=False, rngs=rngs)

  def __call__(self, h, m, rbf, envelope, neighbors, avg_neighbors):
    src = self.edge_src(h)
    dst = _gather_neighbors(self.edge_dst(h), neighbors)
    pre = self.edge_m(m) + src[:, :, None, :] + dst
    m = m + self.edge_out(nnx.silu(pre)) * self.edge_filter(rbf)
    agg = jnp.sum(envelope[..., None] * m, axis=2) / avg_neighbors
    h = h + self.node(jnp.concatenate([h, agg], axis=-1))
    act = nnx.silu(m)
    w = self.coord_out(act * self.coord_filter(rbf))[..., 0]
    a = self.lattice_out(act * self.lattice_filter(rbf))[..., 0]
    return h, m, w, a


def cell_invariants(lattice: jax.Array, num_atoms: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The cell's normalised shape metric and invariant features.

  With ``v = |det L| / n`` (the volume per atom) and ``G = L^T L / v^(2/3)``, the metric is
  ``M = G / (tr G / 3)`` (trace 3, eigenvalues in (0, 3): the identity for a cubic cell) and the
  features are ``[log v^(1/3), log(tr G / 3), log(tr M^2 / 3)]``. ``M`` transforms as
  ``M -> R M R^T`` when the frame rotates (``L -> L R^T``), like the stress head; the features
  are invariant. Returns (M (B, 3, 3), features (B, 3)).
  """
  n = jnp.maximum(num_atoms.astype(lattice.dtype), 1.0)
  v = jnp.maximum(jnp.abs(jnp.linalg.det(lattice)) / n, 1e-6)
  gram = jnp.einsum("bji,bjk->bik", lattice, lattice) / (v ** (2.0 / 3.0))[:, None, None]
  tr = jnp.maximum(jnp.trace(gram, axis1=1, axis2=2) / 3.0, 1e-6)
  metric = gram / tr[:, None, None]
  tr2 = jnp.sum(metric * metric, axis=(1, 2)) / 3.0
  feats = jnp.stack([jnp.log(v) / 3.0, jnp.log(tr), jnp.log(tr2)], axis=-1)
  return metric, feats


class CellHead(nnx.Module):
  """A per-crystal lattice-score term ``c0 I + c1 M + c2 M^2`` (``M`` from
  :func:`cell_invariants`), with the coefficients from an MLP of the atoms' mean state, the
  time features and the cell invariants; its last layer starts at zero.

  By the representation theorem for isotropic functions of a symmetric matrix this is the
  general rotation-equivariant symmetric function of the cell; it lets a small network
  represent the large-t lattice score ``(L - mu_n) / sigma`` directly, which the edge-sum stress
  head alone learns slowly (not in the reference, whose GemNet-T has only the stress head).
  """

  def __init__(self, hidden: int, *, rngs: nnx.Rngs):
    self.mlp = _MLP([2 * hidden + 3, hidden, hidden], rngs=rngs)
    self.out = nnx.Linear(hidden, 3, kernel_init=nnx.initializers.zeros,
                          bias_init=nnx.initializers.zeros, rngs=rngs)

  def __call__(self, h_mean, temb, lattice, num_atoms):
    metric, feats = cell_invariants(lattice, num_atoms)
    c = self.out(nnx.silu(self.mlp(jnp.concatenate([h_mean, temb, feats], axis=-1))))
    eye = jnp.eye(3, dtype=metric.dtype)[None]
    return (c[:, 0, None, None] * eye + c[:, 1, None, None] * metric
            + c[:, 2, None, None] * jnp.einsum("bij,bjk->bik", metric, metric))


class PropertyEmbedding(nnx.Module):
  """An MLP embedding of a property's value (shape (B, dim)) and a learned null embedding."""

  def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs):
    self.dim = dim
    self.mlp = _MLP([dim, hidden, hidden], rngs=rngs)
    self.null = nnx.Param(0.1 * jax.random.normal(rngs.params(), (hidden,)))

  def __call__(self, values: jax.Array, use: jax.Array) -> jax.Array:
    emb = self.mlp(values)
    return jnp.where(use[:, None], emb, self.null[...][None, :])


class Adapter(nnx.Module):
  """``h + mixin(MLP([h, e]))`` with the mixin zero-initialised (reference ``GemNetTCtrl``)."""

  def __init__(self, hidden: int, *, rngs: nnx.Rngs):
    self.mlp = _MLP([2 * hidden, hidden, hidden], rngs=rngs)
    self.mixin = nnx.Linear(hidden, hidden, kernel_init=nnx.initializers.zeros,
                            bias_init=nnx.initializers.zeros, rngs=rngs)

  def __call__(self, h: jax.Array, emb: jax.Array) -> jax.Array:
    e = jnp.broadcast_to(emb[:, None, :], h.shape)
    return self.mixin(nnx.silu(self.mlp(jnp.concatenate([h, e], axis=-1))))


class PropertyAdapters(nnx.Module):
  """The embeddings of the conditioning properties and their per-block adapters."""

  def __init__(self, properties: Mapping[str, int], hidden: int, num_blocks: int,
               unconditional: str, *, rngs: nnx.Rngs):
    self.dims = {name: int(dim) for name, dim in properties.items()}
    self.unconditional = unconditional
    self.embeddings = nnx.Dict({name: PropertyEmbedding(dim, hidden, rngs=rngs)
                                for name, dim in self.dims.items()})
    self.blocks = nnx.Dict({name: nnx.List([Adapter(hidden, rngs=rngs)
                                            for _ in range(num_blocks)])
                            for name in self.dims})


def _check_properties(properties: Mapping[str, int]) -> dict[str, int]:
  if not isinstance(properties, Mapping) or not properties:
    raise ValueError(f"properties must be a non-empty mapping name -> dimension, got "
                     f"{properties!r}")
  out = {}
  for name, dim in properties.items():
    if not isinstance(name, str) or not name.isidentifier():
      raise ValueError(f"properties: names must be identifiers, got {name!r}")
    if int(dim) != dim or dim < 1:
      raise ValueError(f"properties[{name!r}] must be an integer dimension >= 1, got {dim}")
    out[name] = int(dim)
  return out


class MatterGenDenoiser(nnx.Module):
  """The score network (module docstring). Call it as
  ``model(crystals, t, conditions=None, condition_mask=None) -> DenoiserOutput``.

  Args:
    hidden: width of node and edge states (reference 512).
    num_blocks: interaction blocks (reference 4).
    num_radial: Gaussian radial basis functions.
    cutoff: graph cutoff in angstrom (reference 7).
    max_neighbors: neighbour slots per atom (reference 50); None keeps every candidate.
    max_images: lattice images ``{-K..K}^3`` searched (reference up to 5).
    envelope_exponent: ``p`` of the polynomial envelope (reference 5).
    avg_neighbors: the fixed normaliser of the message sums.
    properties: None (an unconditional model) or a mapping property name -> value dimension;
      a model with properties has adapters (use :func:`with_adapters` to add them to a trained
      base model).
    unconditional: "base" (reference: an unconditional crystal skips the adapters) or "null"
      (the adapters see a learned null embedding).
    coord_frame: the frame of the coordinate output: "fractional" (the reference's map of the
      Cartesian field, ``δf = δx L^{-1}``, trained on sigma_t times the wrapped-normal score in
      fractional coordinates) or "cartesian" (the equivariant field itself).
    lattice_cosines: add the cosines between each edge and the three lattice vectors to the
      initial edge states (the reference's ``angle_edge_emb``). Without them the lattice head
      sees the cell only through distances and cannot learn the lattice score at large t
      (measured: loss 0.85 vs ~0.0 attainable, and gas-like samples); with them the outputs
      stay invariant (and the scores equivariant) under proper rotations of the frame, but
      depend on the choice of unit cell, as does the lattice diffusion itself.
    cell_head: add :class:`CellHead`'s per-crystal term to the stress head (not in the
      reference; an equivariant function of the cell that lets a small model learn the
      large-t lattice score).
    rngs: NNX random streams for initialization.

  The defaults suit CPU training of a toy model on cells of at most ~8 atoms: 152,424
  parameters (hidden 128 with 4 blocks: 680,296). With 24 neighbour slots a training step on
  a batch of 32 crystals of up to 8 atoms takes ~70 ms on a shared 2-core CPU (the benchmark's
  8000 steps: 580 s). The reference model has 46.8 M parameters.
  """

  def __init__(self, *, hidden: int = 64, num_blocks: int = 3, num_radial: int = 16,
               cutoff: float = 5.0, max_neighbors: int | None = 32, max_images: int = 3,
               envelope_exponent: int = 5, avg_neighbors: float = 16.0,
               properties: Mapping[str, int] | None = None, unconditional: str = "base",
               coord_frame: str = "fractional", lattice_cosines: bool = True,
               cell_head: bool = True, rngs: nnx.Rngs):
    for name, value in (("lattice_cosines", lattice_cosines), ("cell_head", cell_head)):
      if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    for name, value, low in (("hidden", hidden, 2), ("num_blocks", num_blocks, 1),
                             ("num_radial", num_radial, 1),
                             ("envelope_exponent", envelope_exponent, 1)):
      if int(value) != value or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value}")
    if hidden % 2:
      raise ValueError(f"hidden must be even (sin/cos time features), got {hidden}")
    if not (np.isfinite(avg_neighbors) and avg_neighbors > 0):
      raise ValueError(f"avg_neighbors must be a finite number > 0, got {avg_neighbors}")
    if unconditional not in _UNCONDITIONAL_MODES:
      raise ValueError(f"unconditional must be one of {_UNCONDITIONAL_MODES}, got "
                       f"{unconditional!r}")
    if coord_frame not in _COORD_FRAMES:
      raise ValueError(f"coord_frame must be one of {_COORD_FRAMES}, got {coord_frame!r}")
    _graph.image_offsets(max_images)  # checks max_images
    if not (np.isfinite(cutoff) and cutoff > 0):
      raise ValueError(f"cutoff must be a finite number > 0 (angstrom), got {cutoff}")
    if max_neighbors is not None and (int(max_neighbors) != max_neighbors or max_neighbors < 1):
      raise ValueError(f"max_neighbors must be an integer >= 1 or None, got {max_neighbors}")
    self.hidden, self.num_blocks, self.num_radial = int(hidden), int(num_blocks), int(num_radial)
    self.cutoff, self.max_neighbors, self.max_images = float(cutoff), max_neighbors, max_images
    self.envelope_exponent, self.avg_neighbors = int(envelope_exponent), float(avg_neighbors)
    self.coord_frame = coord_frame
    h = self.hidden
    self.type_embedding = nnx.Embed(_crystal.NUM_TYPE_STATES, h, rngs=rngs)
    self.time_mlp = _MLP([h, h, h], rngs=rngs)
    self.atom_in = nnx.Linear(2 * h, h, rngs=rngs)
    self.edge_src = nnx.Linear(h, h, rngs=rngs)
    self.edge_dst = nnx.Linear(h, h, use_bias=False, rngs=rngs)
    self.edge_rbf = nnx.Linear(num_radial, h, use_bias=False, rngs=rngs)
    self.lattice_cosines = bool(lattice_cosines)
    self.edge_cosines = (nnx.Linear(3, h, use_bias=False, rngs=rngs) if self.lattice_cosines
                         else None)
    self.blocks = nnx.List([InteractionBlock(h, num_radial, rngs=rngs)
                            for _ in range(num_blocks)])
    self.type_out = _MLP([h, h, _crystal.NUM_TYPE_STATES], rngs=rngs)
    self.cell_head = CellHead(h, rngs=rngs) if cell_head else None
    self.adapters = (None if properties is None else
                     PropertyAdapters(_check_properties(properties), h, num_blocks,
                                      unconditional, rngs=rngs))

  @property
  def properties(self) -> dict[str, int]:
    """The conditioning properties (name -> dimension); empty for an unconditional model."""
    return {} if self.adapters is None else dict(self.adapters.dims)

  def graph(self, crystals: _crystal.Crystals) -> _graph.PeriodicGraph:
    """The periodic neighbour graph the network uses on ``crystals``."""
    return _graph.periodic_graph(crystals, cutoff=self.cutoff, max_neighbors=self.max_neighbors,
                                 max_images=self.max_images)

  def _embed_conditions(self, b, conditions, condition_mask):
    conditions = {} if conditions is None else dict(conditions)
    condition_mask = {} if condition_mask is None else dict(condition_mask)
    dims = self.properties
    for name in list(conditions) + list(condition_mask):
      if name not in dims:
        raise ValueError(f"conditions: unknown property {name!r}; this model conditions on "
                         f"{sorted(dims) or 'nothing (add adapters with with_adapters)'}")
    out = {}
    for name, dim in dims.items():
      if name in conditions and conditions[name] is not None:
        raw = jnp.asarray(conditions[name])
        if raw.ndim == 1 and dim == 1:
          raw = raw[:, None]
        if raw.shape != (b, dim):
          raise ValueError(f"conditions[{name!r}] must have shape (B, {dim}) = {(b, dim)}"
                           f"{' or (B,)' if dim == 1 else ''}, got {raw.shape}")
        use = jnp.asarray(condition_mask.get(name, jnp.ones((b,), bool)), bool)
        if use.shape != (b,):
          raise ValueError(f"condition_mask[{name!r}] must have shape (B,) = {(b,)}, got "
                           f"{use.shape}")
        use = use & ~is_null_condition(raw)
        v = jnp.where(use[:, None], raw.astype(jnp.float32), 0.0)
      else:
        v = jnp.zeros((b, dim), jnp.float32)
        use = jnp.zeros((b,), bool)
      out[name] = (self.adapters.embeddings[name](v, use), use)
    return out

  def __call__(self, crystals: _crystal.Crystals, t: jax.Array,
               conditions: Mapping[str, jax.Array] | None = None,
               condition_mask: Mapping[str, jax.Array] | None = None) -> DenoiserOutput:
    """Scores and logits for noisy ``crystals`` at times ``t`` (B,).

    Args:
      crystals: the noisy batch (types may be MASK_TYPE; fractional coordinates may be any
        real numbers, they are wrapped to [0, 1)).
      t: (B,) diffusion times in [0, 1].
      conditions: property name -> values (B, dim) (or (B,) for dim 1); properties left out
        are unconditional for every crystal, and so is a crystal whose values hold the null
        token of ``_diffusion.null_condition`` (:func:`is_null_condition`).
      condition_mask: property name -> (B,) bool, which crystals use their condition (default
        all that have one); the others are unconditional (classifier-free guidance training
        drops conditions this way, see :func:`random_condition_mask`).
    """
    # The network is periodic: any real fractional coordinates are accepted (wrapped here).
    crystals = crystals._replace(frac_coords=jnp.mod(crystals.frac_coords, 1.0))
    _crystal.check_crystals(crystals, allow_mask_type=True)
    types, atom_mask = crystals.atom_types, crystals.mask
    b = atom_mask.shape[0]
    t = jnp.asarray(t, jnp.float32)
    if t.shape != (b,):
      raise ValueError(f"t must have shape (B,) = {(b,)}, got {t.shape}")
    cond = self._embed_conditions(b, conditions, condition_mask)
    graph = self.graph(crystals)
    emask = graph.mask
    fmask = emask.astype(jnp.float32)
    unit = graph.vectors / jnp.where(emask, graph.distances, 1.0)[..., None]
    envelope = polynomial_envelope(graph.distances / self.cutoff, self.envelope_exponent) * fmask
    rbf = gaussian_basis(graph.distances, self.num_radial, self.cutoff) * envelope[..., None]

    temb = self.time_mlp(time_embedding(t, self.hidden))
    h = self.type_embedding(types)
    h = nnx.silu(self.atom_in(jnp.concatenate(
        [h, jnp.broadcast_to(temb[:, None, :], h.shape)], axis=-1)))
    pre = (self.edge_src(h)[:, :, None, :] + _gather_neighbors(self.edge_dst(h), graph.neighbors)
           + self.edge_rbf(rbf))
    if self.edge_cosines is not None:
      pre = pre + self.edge_cosines(lattice_cosines_of(unit, crystals.lattice)
                                    * fmask[..., None])
    m = nnx.silu(pre)

    coord_w = jnp.zeros(emask.shape, jnp.float32)
    lattice_a = jnp.zeros(emask.shape, jnp.float32)
    for i, block in enumerate(self.blocks):
      h, m, w, a = block(h, m, rbf, envelope, graph.neighbors, self.avg_neighbors)
      coord_w = coord_w + w
      lattice_a = lattice_a + a
      if self.adapters is not None:
        for name, (emb, use) in cond.items():
          delta = self.adapters.blocks[name][i](h, emb)
          if self.adapters.unconditional == "base":
            delta = delta * use[:, None, None].astype(delta.dtype)
          h = h + delta

    coord_score = jnp.sum((coord_w * envelope)[..., None] * unit, axis=2)
    coord_score = coord_score * atom_mask[..., None].astype(coord_score.dtype)
    num_edges = jnp.maximum(jnp.sum(fmask, axis=(1, 2)), 1.0)
    outer = unit[..., :, None] * unit[..., None, :]
    lattice_score = jnp.einsum("bnk,bnkde->bde", lattice_a * envelope, outer)
    lattice_score = lattice_score / num_edges[:, None, None]
    if self.cell_head is not None:
      fmask_atoms = atom_mask.astype(jnp.float32)
      h_mean = (jnp.sum(h * fmask_atoms[..., None], axis=1)
                / jnp.maximum(jnp.sum(fmask_atoms, axis=1), 1.0)[:, None])
      lattice_score = lattice_score + self.cell_head(h_mean, temb, crystals.lattice,
                                                     jnp.sum(atom_mask, axis=1))
    type_logits = self.type_out(h) * atom_mask[..., None].astype(jnp.float32)
    if self.coord_frame == "fractional":
      coord_score = fractional_displacement(coord_score, crystals.lattice)
    return DenoiserOutput(lattice_score, coord_score, type_logits)


def with_adapters(base: MatterGenDenoiser, properties: Mapping[str, int], *,
                  unconditional: str = "base", rngs: nnx.Rngs) -> MatterGenDenoiser:
  """A copy of ``base`` with (zero-mixin) adapters for ``properties`` (name -> dimension).

  The copy computes exactly the base model's outputs, conditioned or not, until its mixins
  move; ``base`` is left unchanged. Fine-tune all parameters (the reference) or only the
  adapters' (``nnx.state(model, ADAPTER_PARAMS)``).
  """
  if base.adapters is not None:
    raise ValueError(f"base already has adapters for {sorted(base.properties)}; start from an "
                     f"unconditional model")
  if unconditional not in _UNCONDITIONAL_MODES:
    raise ValueError(f"unconditional must be one of {_UNCONDITIONAL_MODES}, got "
                     f"{unconditional!r}")
  model = nnx.clone(base)
  model.adapters = nnx.data(PropertyAdapters(_check_properties(properties), base.hidden, base.num_blocks,
                                    unconditional, rngs=rngs))
  return model


# The parameters of the adapters and property embeddings (a filter for nnx.state / optimizers).
ADAPTER_PARAMS = nnx.All(nnx.Param, nnx.PathContains("adapters"))


def random_condition_mask(key: jax.Array, conditions: Mapping[str, jax.Array],
                          p_unconditional: float = 0.2) -> dict[str, jax.Array]:
  """Drops each property's condition independently with probability ``p_unconditional``
  (reference 0.2) per crystal, the training half of classifier-free guidance; returns the
  ``condition_mask`` for the model."""
  if core.is_concrete(p_unconditional) and not 0.0 <= p_unconditional <= 1.0:
    raise ValueError(f"p_unconditional must be in [0, 1], got {p_unconditional}")
  out = {}
  for i, (name, values) in enumerate(sorted(conditions.items())):
    b = jnp.shape(values)[0]
    out[name] = jax.random.uniform(jax.random.fold_in(key, i), (b,)) >= p_unconditional
  return out


def guided_score(model: MatterGenDenoiser, crystals: _crystal.Crystals, t: jax.Array,
                 conditions: Mapping[str, jax.Array], gamma: float | jax.Array,
                 condition_mask: Mapping[str, jax.Array] | None = None) -> DenoiserOutput:
  """Classifier-free guidance ``γ s_cond + (1 - γ) s_uncond`` of every output, from one batch.

  The batch is evaluated twice in one call of ``model`` (stacked along the batch axis): once
  with ``conditions`` (and ``condition_mask``, default all) and once with every condition
  dropped. ``γ = 1`` is the conditional model, ``γ = 0`` the unconditional one, ``γ > 1``
  sharpens ``p(x) p(y | x)^γ`` (the reference's README uses γ = 2). For the type logits the
  combination is that of ``p(a)^{1-γ} p(a | y)^γ``.
  """
  if not conditions:
    raise ValueError("conditions must name at least one property for guidance")
  b = crystals.mask.shape[0]
  both = _crystal.Crystals(*(jnp.concatenate([x, x], axis=0) for x in crystals))
  t2 = jnp.concatenate([jnp.asarray(t, jnp.float32)] * 2, axis=0)
  conds2, mask2 = {}, {}
  for name, values in conditions.items():
    v = jnp.asarray(values)
    conds2[name] = jnp.concatenate([v, v], axis=0)
    use = (jnp.ones((b,), bool) if condition_mask is None or name not in condition_mask
           else jnp.asarray(condition_mask[name], bool))
    mask2[name] = jnp.concatenate([use, jnp.zeros((b,), bool)], axis=0)
  out = model(both, t2, conds2, mask2)
  gamma = jnp.asarray(gamma, jnp.float32)
  # First half conditional, second half unconditional.
  return DenoiserOutput(*(x[:b] * gamma + x[b:] * (1.0 - gamma) for x in out))
