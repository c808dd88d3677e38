"""Periodic neighbour graphs of padded crystal batches, with fixed shapes for ``jit``.

An atom ``i`` of a crystal with lattice ``L`` (rows = lattice vectors) and fractional
coordinates ``f`` sees every periodic image of every atom ``j``; the edge to the image shifted
by the integer vector ``n`` is

.. math::
   r_{ij,n} = (f_j + n - f_i) L ,

and the graph keeps the edges with ``0 < |r_{ij,n}| <= cutoff`` (the zero-length edge, atom
``i`` to itself in image ``n = 0``, is excluded, and so are edges between atoms closer than
1e-5 angstrom, which have no direction; padding atoms have no edges).

Fixed shapes: the candidates are all ``(j, n)`` with ``n`` in ``{-K..K}^3`` (``M = (2K+1)^3``
images, ``K = max_images``), and each atom keeps its ``k = min(max_neighbors, N M)`` nearest
candidates (``lax.top_k`` on the squared distances), so the graph of a ``(B, N)`` batch has
arrays of shape ``(B, N, k, ...)`` whatever the crystals are, and one compiled program serves
every batch. Candidates beyond the cutoff, and the padding left when fewer than ``k``
neighbours lie within it, are masked.

When is the graph complete? Write ``r = (Δf + n) L`` with ``Δf = f_j - f_i`` in ``(-1, 1)^3``
(coordinates wrapped to ``[0, 1)``). Component ``a`` of ``r L^{-1}`` is ``r · b_a`` with
``b_a`` the ``a``-th column of ``L^{-1}`` (a reciprocal vector, ``|b_a| = 1 / w_a`` where
``w_a = det L / |l_b × l_c|`` is the cell's width perpendicular to the other two lattice
vectors), so ``|r| <= cutoff`` gives ``|Δf_a + n_a| <= cutoff / w_a`` and hence
``|n_a| <= ceil(cutoff / w_a)``. :func:`required_images` returns these bounds; the graph's
``complete`` flag is True when ``max_images`` covers them and no atom has more than ``k``
neighbours within the cutoff (then the graph is exactly the cutoff graph, independent of the
choice of cell and of the order of the atoms). The reference (MatterGen's GemNet-T) uses a
7 angstrom cutoff, at most 50 neighbours and at most 5 images per direction.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tomioka_jax import core
from tomioka_jax.science.mattergen import _crystal

# The reference's graph (MatterGen's GemNet-T configuration).
REFERENCE_CUTOFF = 7.0
REFERENCE_MAX_NEIGHBORS = 50
REFERENCE_MAX_IMAGES = 5


class PeriodicGraph(NamedTuple):
  """Neighbour lists of a padded batch: ``k`` slots per atom, masked where empty.

  Attributes:
    neighbors: (B, N, k) int32, the index ``j`` of the neighbour in slot ``s`` of atom ``i``.
    offsets: (B, N, k, 3) float, the integer image shift ``n`` of that neighbour.
    vectors: (B, N, k, 3) Cartesian edge vectors ``r = (f_j + n - f_i) L`` (zero where masked).
    distances: (B, N, k) ``|r|`` (zero where masked).
    mask: (B, N, k) bool, the real edges (within the cutoff, between real atoms, not the
      zero-length self edge).
    complete: (B,) bool, True when the graph holds every edge within the cutoff (the image
      range covers the cutoff sphere and no atom has more than ``k`` neighbours in it).
  """

  neighbors: jax.Array
  offsets: jax.Array
  vectors: jax.Array
  distances: jax.Array
  mask: jax.Array
  complete: jax.Array


def image_offsets(max_images: int) -> np.ndarray:
  """The ``(2K+1)^3`` integer image shifts ``{-K..K}^3``, shape (M, 3), the zero shift first."""
  if int(max_images) != max_images or max_images < 0:
    raise ValueError(f"max_images must be an integer >= 0, got {max_images}")
  k = int(max_images)
  rng = range(-k, k + 1)
  shifts = sorted(itertools.product(rng, rng, rng), key=lambda s: (s != (0, 0, 0), s))
  return np.asarray(shifts, np.float32)


def perpendicular_widths(lattice: jax.Array) -> jax.Array:
  """The widths ``w_a = det L / |l_b × l_c|`` of the cells, shape (B, 3) (same units as L).

  ``w_a`` is the distance between the two faces of the cell spanned by the other two lattice
  vectors; a sphere of radius ``r`` fits in the cell iff ``2 r <= min_a w_a``.
  """
  lattice = jnp.asarray(lattice)
  a, b, c = lattice[..., 0, :], lattice[..., 1, :], lattice[..., 2, :]
  cross = jnp.stack([jnp.cross(b, c), jnp.cross(c, a), jnp.cross(a, b)], axis=-2)
  volume = jnp.abs(jnp.sum(a * cross[..., 0, :], axis=-1))
  return volume[..., None] / jnp.linalg.norm(cross, axis=-1)


def required_images(lattice: jax.Array, cutoff: float) -> jax.Array:
  """The image range ``ceil(cutoff / w_a)`` per lattice direction that covers the cutoff
  sphere for coordinates in ``[0, 1)``, shape (B, 3) int32 (see the module docstring)."""
  _check_cutoff(cutoff)
  return jnp.ceil(cutoff / perpendicular_widths(lattice)).astype(jnp.int32)


def _check_cutoff(cutoff: float) -> None:
  if core.is_concrete(cutoff) and not (np.isfinite(cutoff) and cutoff > 0):
    raise ValueError(f"cutoff must be a finite number > 0 (angstrom), got {cutoff}")


def periodic_graph(crystals: _crystal.Crystals, *, cutoff: float, max_neighbors: int | None,
                   max_images: int) -> PeriodicGraph:
  """The cutoff graph of each crystal as fixed-size neighbour lists (module docstring).

  Args:
    crystals: a padded batch; fractional coordinates are wrapped to [0, 1) here, so integer
      shifts of them give the same graph.
    cutoff: the radius in angstrom (reference 7).
    max_neighbors: neighbour slots per atom, ``k = min(max_neighbors, N M)``; None keeps all
      ``N M`` candidates (exact for any density, but larger). Reference 50.
    max_images: ``K``, the images ``{-K..K}^3`` searched (reference up to 5).

  Returns:
    A :class:`PeriodicGraph`. Slots are sorted by distance, masked slots last.
  """
  _check_cutoff(cutoff)
  if max_neighbors is not None and (int(max_neighbors) != max_neighbors or max_neighbors < 1):
    raise ValueError(f"max_neighbors must be an integer >= 1 or None, got {max_neighbors}")
  shifts = jnp.asarray(image_offsets(max_images))  # (M, 3)
  lattice, frac, _, atom_mask = crystals
  b, n = atom_mask.shape
  m = shifts.shape[0]
  frac = jnp.mod(frac, 1.0)
  # Fractional edge vectors of every candidate (i, j, image): (B, N, N, M, 3).
  dfrac = frac[:, None, :, None, :] - frac[:, :, None, None, :] + shifts[None, None, None]
  cart = jnp.einsum("bijmd,bde->bijme", dfrac, lattice)
  d2 = jnp.sum(cart * cart, axis=-1)  # (B, N, N, M)
  pair = atom_mask[:, :, None, None] & atom_mask[:, None, :, None]
  not_self = ~(jnp.eye(n, dtype=bool)[None, :, :, None]
               & (jnp.arange(m) == 0)[None, None, None, :])
  # Coincident atoms (|r| below 1e-5 angstrom) have no edge direction: no edge either.
  valid = pair & not_self & (d2 <= cutoff * cutoff) & (d2 > 1e-10)
  d2_flat = jnp.reshape(jnp.where(valid, d2, jnp.inf), (b, n, n * m))
  k = n * m if max_neighbors is None else min(int(max_neighbors), n * m)
  _, slot = jax.lax.top_k(-d2_flat, k)  # (B, N, k) indices into the N*M candidates
  neighbors = (slot // m).astype(jnp.int32)
  image = slot % m
  offsets = shifts[image]  # (B, N, k, 3)
  edge_mask = jnp.take_along_axis(jnp.reshape(valid, (b, n, n * m)), slot, axis=-1)
  # Recompute the chosen vectors from the inputs (differentiable in coordinates and lattice).
  f_j = jnp.take_along_axis(frac[:, None, :, :], neighbors[..., None], axis=2)  # (B, N, k, 3)
  vectors = jnp.einsum("bisd,bde->bise", f_j + offsets - frac[:, :, None, :], lattice)
  vectors = jnp.where(edge_mask[..., None], vectors, 0.0)
  d2_edge = jnp.sum(vectors * vectors, axis=-1)
  distances = jnp.where(edge_mask, jnp.sqrt(jnp.where(edge_mask, d2_edge, 1.0)), 0.0)
  within = jnp.sum(valid, axis=(2, 3))  # (B, N) neighbours within the cutoff
  covered = jnp.all(required_images(lattice, cutoff) <= max_images, axis=-1)
  complete = covered & jnp.all(within <= k, axis=-1)
  return PeriodicGraph(neighbors, offsets, vectors, distances, edge_mask, complete)
