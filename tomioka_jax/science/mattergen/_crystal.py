"""Batches of crystals as fixed-shape arrays, the data structure every MatterGen module shares.

A batch of ``B`` crystals with at most ``N`` atoms each is four arrays:

* ``lattice`` (B, 3, 3): the rows are the lattice vectors a, b, c in angstrom, so the Cartesian
  position of an atom is ``frac_coords @ lattice``;
* ``frac_coords`` (B, N, 3): fractional coordinates in [0, 1);
* ``atom_types`` (B, N) int32: the atomic number minus one (0 = H, ..., 99 = Fm), or
  ``MASK_TYPE`` (100), the absorbing state of the type diffusion;
* ``mask`` (B, N) bool: which of the N slots hold an atom (padding slots are False, their
  coordinates 0 and their type 0).

Fixed N and padding let one ``jit`` serve every batch.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tomioka_jax import core

# Chemical symbols of elements 1-100, index = atomic number - 1.
ELEMENTS = (
    "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg", "Al", "Si", "P", "S", "Cl",
    "Ar", "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga", "Ge", "As",
    "Se", "Br", "Kr", "Rb", "Sr", "Y", "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd", "In",
    "Sn", "Sb", "Te", "I", "Xe", "Cs", "Ba", "La", "Ce", "Pr", "Nd", "Pm", "Sm", "Eu", "Gd", "Tb",
    "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W", "Re", "Os", "Ir", "Pt", "Au", "Hg", "Tl",
    "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Th", "Pa", "U", "Np", "Pu", "Am", "Cm", "Bk",
    "Cf", "Es", "Fm")
NUM_ELEMENTS = len(ELEMENTS)
# The absorbing ("masked") state of the atom-type diffusion; types live in {0, ..., MASK_TYPE}.
MASK_TYPE = NUM_ELEMENTS
NUM_TYPE_STATES = NUM_ELEMENTS + 1


class Crystals(NamedTuple):
  """A padded batch of crystals (see the module docstring for the conventions)."""
  lattice: jax.Array
  frac_coords: jax.Array
  atom_types: jax.Array
  mask: jax.Array

  @property
  def num_atoms(self) -> jax.Array:
    """Atoms per crystal, shape (B,)."""
    return jnp.sum(self.mask, axis=-1)


def element_index(symbol: str) -> int:
  """Returns the type index (atomic number - 1) of a chemical symbol such as ``"Fe"``."""
  try:
    return ELEMENTS.index(symbol)
  except ValueError:
    raise ValueError(
        f"unknown element {symbol!r}: allowed are the chemical symbols of elements 1-100 "
        f"(H ... Fm)") from None


def right_handed(crystals: Crystals) -> Crystals:
  """The same crystals with every cell right-handed (det(lattice) > 0); jittable.

  A cell with det < 0 becomes ``(-L, -f mod 1)``: every Cartesian position ``f L = (-f)(-L)``
  and every lattice point stays where it was, so it is the same crystal, not its mirror image.
  The reverse lattice diffusion keeps its samples symmetric, not positive definite, so a
  generated cell can come out left-handed (an odd number of negative eigenvalues).
  Padding slots keep coordinates 0.
  """
  lattice, frac, types, mask = crystals
  flip = jnp.linalg.det(lattice) < 0
  neg = jnp.mod(-frac, 1.0)
  neg = jnp.where(neg >= 1.0, 0.0, neg)  # -tiny mod 1 can round to 1.0 in float32
  frac = jnp.where(flip[:, None, None] & mask[..., None], neg, frac).astype(frac.dtype)
  lattice = jnp.where(flip[:, None, None], -lattice, lattice)
  return Crystals(lattice, frac, types, mask)


def check_crystals(crystals: Crystals, *, allow_mask_type: bool = False) -> Crystals:
  """Checks shapes and, where the arrays are concrete, values; returns ``crystals`` unchanged.

  Raises ``ValueError`` naming the field for: shapes that disagree; a lattice that is not
  finite or not positive definite (a non-positive volume, i.e. a left-handed or degenerate
  cell); fractional coordinates outside [0, 1) or not finite on real atoms; atom types outside
  0..99 (or 0..100 with ``allow_mask_type``) on real atoms; a crystal with no atoms. Under
  ``jit`` only the shapes are checked.
  """
  lattice, frac, types, mask = crystals
  if lattice.ndim != 3 or lattice.shape[1:] != (3, 3):
    raise ValueError(f"lattice must have shape (B, 3, 3), got {lattice.shape}")
  b = lattice.shape[0]
  if frac.ndim != 3 or frac.shape[0] != b or frac.shape[2] != 3:
    raise ValueError(f"frac_coords must have shape (B={b}, N, 3), got {frac.shape}")
  n = frac.shape[1]
  if types.shape != (b, n):
    raise ValueError(f"atom_types must have shape (B, N) = {(b, n)}, got {types.shape}")
  if mask.shape != (b, n):
    raise ValueError(f"mask must have shape (B, N) = {(b, n)}, got {mask.shape}")
  if not core.is_concrete(lattice, frac, types, mask):
    return crystals
  lat = np.asarray(lattice, np.float64)
  if not np.all(np.isfinite(lat)):
    raise ValueError("lattice has non-finite entries")
  gram = lat @ np.swapaxes(lat, 1, 2)
  eig_min = np.linalg.eigvalsh(gram)[:, 0]
  det = np.linalg.det(lat)
  bad = np.flatnonzero((det <= 0) | (eig_min <= 1e-12 * np.maximum(1.0, np.abs(gram).max())))
  if bad.size:
    i = int(bad[0])
    raise ValueError(
        f"lattice of crystal {i} is not a positive-definite, right-handed cell (det = "
        f"{det[i]:.4g}); allowed are lattices with volume det(lattice) > 0")
  m = np.asarray(mask, bool)
  if not np.all(m.any(axis=1)):
    raise ValueError(f"mask: crystal {int(np.flatnonzero(~m.any(axis=1))[0])} has no atoms")
  f = np.asarray(frac, np.float64)[m]
  if not np.all(np.isfinite(f)) or f.min(initial=0.0) < 0.0 or f.max(initial=0.0) >= 1.0:
    raise ValueError(
        f"frac_coords must be finite and in [0, 1) on real atoms, got values in "
        f"[{np.nanmin(f):.4g}, {np.nanmax(f):.4g}] (wrap them with frac % 1.0)")
  t = np.asarray(types)[m]
  hi = MASK_TYPE if allow_mask_type else NUM_ELEMENTS - 1
  if t.min(initial=0) < 0 or t.max(initial=0) > hi:
    raise ValueError(
        f"atom_types must be in 0..{hi} (atomic number - 1{', or MASK_TYPE' if allow_mask_type else ''}) "
        f"on real atoms, got values in [{t.min()}, {t.max()}]")
  return crystals
