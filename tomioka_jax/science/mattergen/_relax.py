"""A torch-free relaxation proxy: a periodic Lennard-Jones pair potential relaxed by FIRE in JAX.

MatterGen relaxes every generated structure with a machine-learned interatomic potential
(MatterSim; the paper used DFT) and reports the RMSD between the generated and the relaxed
structure and the energy above the convex hull. This module gives the same *pipeline* without
torch or DFT. The energy of a crystal with lattice L (rows) and fractional coordinates f is

  E = 1/2 sum_{i, j, n} phi_ij(|(f_j + n - f_i) L|),   n in {-K..K}^3, (i, i, 0) excluded,

  phi_ij(r) = v(r) - v(r_c) - (r - r_c) v'(r_c) for r < r_c, 0 beyond (shifted-force LJ),
  v(r) = 4 eps [(s/r)^12 - (s/r)^6],   s = (r_i + r_j) / 2^(1/6),   r_c = 2 s,

so that each pair's minimum sits (before the shift) at the sum of the two covalent radii
(ase's ``covalent_radii``, Cordero et al. 2008) and the energy and forces are continuous at the
cutoff. K is the number of periodic images per axis the cutoff needs for the starting cell;
``relax_crystals`` groups the batch by K (one compiled program per K) so that a few thin cells
do not make every crystal pay for 9^3 images. A cell that shrinks during relaxation may then
miss pair terms near the cutoff (there phi and phi' are already close to zero).

``relax_crystals`` minimises E over positions and cell together, FIRE (Bitzek et al. 2006) on
the generalised coordinates of ase's ``UnitCellFilter``: atoms at u F and lattice L0 F with the
deformation F = I + G / n; the gradient in G is the virial per atom, so a fixed point has zero
forces and zero stress. Every crystal of the batch runs in one ``jit`` (``vmap`` over a
``while_loop``).

**What the proxy is not.** A pair potential with covalent radii knows nothing of charge
transfer, bonding directionality or magnetism. Its minima are close-packed-like arrangements at
sensible interatomic distances, so the RMSD to its relaxed structure measures whether a
generated structure sits near *some* local minimum of a generic repulsive-attractive energy,
and its energy per atom is a geometric sanity score; neither is an energy above a DFT convex
hull, and no stability claim of the paper can be checked with it. ``chgnet_relax`` (optional,
needs torch) is the closer proxy.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tomioka_jax.science.mattergen import _crystal

LJ_CUTOFF_FACTOR = 2.0
_TWO_SIXTH = 2.0 ** (1.0 / 6.0)


class PairPotential(NamedTuple):
  """Per-element Lennard-Jones parameters: radius (angstrom) and well depth (eV) per type."""
  radius: jax.Array  # (NUM_ELEMENTS,)
  epsilon: float = 1.0


def covalent_radius_potential(epsilon: float = 1.0) -> PairPotential:
  """The default potential: covalent radii of elements 1-100 from ``ase.data``, depth ``epsilon``."""
  if not epsilon > 0:
    raise ValueError(f"epsilon must be > 0, got {epsilon}")
  try:
    from ase.data import covalent_radii
  except ImportError as e:  # pragma: no cover
    raise ImportError("the covalent radii come from ase: pip install 'tomioka_jax[materials]'"
                      ) from e
  r = np.asarray(covalent_radii[1:_crystal.NUM_ELEMENTS + 1], np.float32)
  r = np.where(r > 0.1, r, 1.5).astype(np.float32)
  return PairPotential(jnp.asarray(r), float(epsilon))


def _images(k: int) -> jax.Array:
  g = np.arange(-k, k + 1)
  return jnp.asarray(np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3),
                     jnp.float32)


def _pair_phi(r: jax.Array, s: jax.Array, eps: float) -> jax.Array:
  rc = LJ_CUTOFF_FACTOR * s

  def v(x):
    q = (s / x) ** 6
    return 4.0 * eps * (q * q - q)

  def dv(x):
    q = (s / x) ** 6
    return 4.0 * eps * (-12.0 * q * q + 6.0 * q) / x

  inside = r < rc
  rs = jnp.where(inside, r, rc)
  return jnp.where(inside, v(rs) - v(rc) - (rs - rc) * dv(rc), 0.0)


def _energy_one(lattice: jax.Array, frac: jax.Array, types: jax.Array, mask: jax.Array,
                potential: PairPotential, images: jax.Array) -> jax.Array:
  n = frac.shape[0]
  rad = potential.radius[jnp.clip(types, 0, _crystal.NUM_ELEMENTS - 1)]
  s = (rad[:, None] + rad[None, :]) / _TWO_SIXTH  # (N, N)
  df = frac[None, :, None, :] - frac[:, None, None, :] + images[None, None, :, :]  # (N,N,I,3)
  d = df @ lattice
  r2 = jnp.sum(d * d, axis=-1)
  zero = jnp.all(images == 0, axis=-1)  # (I,)
  self_pair = jnp.eye(n, dtype=bool)[:, :, None] & zero[None, None, :]
  valid = (mask[:, None] & mask[None, :])[:, :, None] & ~self_pair
  big = (LJ_CUTOFF_FACTOR * s[:, :, None] + 1.0) ** 2
  r = jnp.sqrt(jnp.where(valid, r2, big))
  phi = _pair_phi(r, s[:, :, None], potential.epsilon)
  return 0.5 * jnp.sum(jnp.where(valid, phi, 0.0))


def pair_images_per_crystal(crystals: _crystal.Crystals, potential: PairPotential,
                                margin: int = 0) -> np.ndarray:
  """Images per axis K each crystal's cutoff needs (its thinnest width), plus ``margin``."""
  lat = np.asarray(crystals.lattice, np.float64)
  vol = np.abs(np.linalg.det(lat))
  cross = np.stack([np.cross(lat[:, 1], lat[:, 2]), np.cross(lat[:, 2], lat[:, 0]),
                    np.cross(lat[:, 0], lat[:, 1])], 1)
  width = vol[:, None] / np.linalg.norm(cross, axis=-1)
  types = np.asarray(crystals.atom_types)[np.asarray(crystals.mask)]
  rad = np.asarray(potential.radius)[np.clip(np.asarray(crystals.atom_types), 0, 99)]
  rmax = np.where(np.asarray(crystals.mask), rad, 0.0).max(axis=1)
  rc = LJ_CUTOFF_FACTOR * 2 * rmax / _TWO_SIXTH
  return np.ceil(rc / width.min(axis=1)).astype(int) + int(margin)


def pair_potential_images(crystals: _crystal.Crystals, potential: PairPotential,
                    margin: int = 0) -> int:
  """Images per axis K the cutoff needs for every crystal of the batch, plus ``margin``."""
  return int(pair_images_per_crystal(crystals, potential, margin).max())


def pair_energy(crystals: _crystal.Crystals, potential: PairPotential | None = None, *,
                num_images: int | None = None) -> jax.Array:
  """Energy (eV) of each crystal under the shifted-force LJ pair potential, shape (B,).

  Args:
    crystals: a batch (checked by ``check_crystals``).
    potential: default ``covalent_radius_potential()``.
    num_images: K; default ``pair_potential_images(crystals, potential, margin=0)`` (needs
      concrete lattices).
  """
  potential = potential or covalent_radius_potential()
  if num_images is None:
    _crystal.check_crystals(crystals)
    num_images = pair_potential_images(crystals, potential, margin=0)
  if num_images < 0:
    raise ValueError(f"num_images must be >= 0, got {num_images}")
  images = _images(int(num_images))
  return jax.vmap(lambda l, f, t, m: _energy_one(l, f, t, m, potential, images))(
      jnp.asarray(crystals.lattice, jnp.float32), jnp.asarray(crystals.frac_coords, jnp.float32),
      jnp.asarray(crystals.atom_types), jnp.asarray(crystals.mask))


def pair_forces_and_stress(crystals: _crystal.Crystals, potential: PairPotential | None = None,
                           *, num_images: int | None = None) -> tuple[jax.Array, jax.Array]:
  """Cartesian forces -dE/dx (B, N, 3) in eV/A and the stress (1/V) dE/d(strain) (B, 3, 3).

  The strain acts on row vectors, x -> x (I + e) and L -> L (I + e).
  """
  potential = potential or covalent_radius_potential()
  if num_images is None:
    _crystal.check_crystals(crystals)
    num_images = pair_potential_images(crystals, potential, margin=0)
  images = _images(int(num_images))

  def one(l, f, t, m):
    def e_of(x, strain):
      lat = l @ (jnp.eye(3) + strain)
      frac = jnp.linalg.solve(lat.T, (x @ (jnp.eye(3) + strain)).T).T
      return _energy_one(lat, frac, t, m, potential, images)

    x = f @ l
    gx, gs = jax.grad(e_of, argnums=(0, 1))(x, jnp.zeros((3, 3), x.dtype))
    return -gx * m[:, None], gs / jnp.abs(jnp.linalg.det(l))

  return jax.vmap(one)(jnp.asarray(crystals.lattice, jnp.float32),
                       jnp.asarray(crystals.frac_coords, jnp.float32),
                       jnp.asarray(crystals.atom_types), jnp.asarray(crystals.mask))


class RelaxResult(NamedTuple):
  """Output of ``relax_crystals``; arrays have a leading batch axis."""
  crystals: _crystal.Crystals  # relaxed, coordinates wrapped to [0, 1)
  initial_energy: jax.Array  # eV per crystal
  energy: jax.Array  # eV per crystal after relaxation
  max_force: jax.Array  # largest generalised force at the end (eV/A, and virial per atom)
  steps: jax.Array
  converged: jax.Array


def relax_crystals(crystals: _crystal.Crystals, potential: PairPotential | None = None, *,
                   fmax: float = 0.01, max_steps: int = 500, relax_cell: bool = True,
                   dt: float = 0.1, dt_max: float = 1.0, max_move: float = 0.2,
                   num_images: int | None = None) -> RelaxResult:
  """Relaxes positions (and the cell) with FIRE until every generalised force is below ``fmax``.

  FIRE (Bitzek et al. 2006) with ase's defaults: N_min 5, f_inc 1.1, f_dec 0.5, alpha 0.1,
  f_alpha 0.99, unit masses, a step limited to ``max_move`` angstrom per coordinate row.

  Args:
    crystals: a batch with concrete arrays.
    potential: default ``covalent_radius_potential()``.
    fmax: convergence threshold on the largest force norm (eV/A; the cell's generalised force
      is the virial per atom, eV).
    max_steps: FIRE steps at most.
    relax_cell: also relax the lattice (ase ``UnitCellFilter`` coordinates).
    dt, dt_max: FIRE's initial and largest time steps.
    max_move: largest displacement of one coordinate row in one step.
    num_images: K for every crystal; default: each crystal's own K from its starting cell
      (crystals with equal K relax together, one compiled program per distinct K).
  """
  for name, v in (("fmax", fmax), ("dt", dt), ("dt_max", dt_max), ("max_move", max_move)):
    if not v > 0:
      raise ValueError(f"{name} must be > 0, got {v}")
  if int(max_steps) < 1:
    raise ValueError(f"max_steps must be >= 1, got {max_steps}")
  _crystal.check_crystals(crystals)
  potential = potential or covalent_radius_potential()
  lat0 = np.asarray(crystals.lattice, np.float32)
  frac0 = np.asarray(crystals.frac_coords, np.float32)
  types = np.asarray(crystals.atom_types)
  mask = np.asarray(crystals.mask)
  if num_images is None:
    ks = pair_images_per_crystal(crystals, potential)
  else:
    if int(num_images) < 0:
      raise ValueError(f"num_images must be >= 0, got {num_images}")
    ks = np.full(lat0.shape[0], int(num_images))
  outs = [np.zeros_like(lat0), np.zeros_like(frac0)] + [np.zeros(lat0.shape[0], np.float32)
                                                        for _ in range(3)]
  outs.append(np.zeros(lat0.shape[0], np.int32))
  for k in np.unique(ks):
    idx = np.flatnonzero(ks == k)
    res = _relax_jit(jnp.asarray(lat0[idx]), jnp.asarray(frac0[idx]), jnp.asarray(types[idx]),
                     jnp.asarray(mask[idx]), potential, _images(int(k)), float(fmax),
                     int(max_steps), bool(relax_cell), float(dt), float(dt_max),
                     float(max_move))
    for o, r in zip(outs, res):
      o[idx] = np.asarray(r)
  lat, frac, e0, e1, fm, steps = (jnp.asarray(o) for o in outs)
  frac = jnp.where(jnp.asarray(mask)[..., None], jnp.mod(frac, 1.0), 0.0)
  frac = jnp.where(frac >= 1.0, 0.0, frac)
  relaxed = _crystal.Crystals(lat, frac, jnp.asarray(types), jnp.asarray(mask))
  return RelaxResult(relaxed, e0, e1, fm, steps, fm < fmax)


@functools.partial(jax.jit, static_argnames=("fmax", "max_steps", "relax_cell", "dt", "dt_max", "max_move"))
def _relax_jit(lat0, frac0, types, mask, potential, images, fmax, max_steps, relax_cell, dt,
               dt_max, max_move):
  def one(l0, f0, t, m):
    n_atoms = jnp.maximum(jnp.sum(m), 1).astype(l0.dtype)

    def energy(q):
      u, g = q
      fdef = jnp.eye(3) + g / n_atoms if relax_cell else jnp.eye(3)
      lat = l0 @ fdef
      frac = jnp.linalg.solve(lat.T, (u @ fdef).T).T
      return _energy_one(lat, frac, t, m, potential, images)

    def gen_force(q):
      gu, gg = jax.grad(energy)(q)
      gg = gg if relax_cell else jnp.zeros_like(gg)
      return (-gu * m[:, None], -gg)

    def fnorm(f):
      return jnp.maximum(jnp.max(jnp.linalg.norm(f[0], axis=-1)),
                         jnp.max(jnp.linalg.norm(f[1], axis=-1)))

    def dot(a, b):
      return jnp.sum(a[0] * b[0]) + jnp.sum(a[1] * b[1])

    q = (f0 @ l0, jnp.zeros((3, 3), l0.dtype))
    v = jax.tree.map(jnp.zeros_like, q)
    f = gen_force(q)
    state = (q, v, f, jnp.asarray(dt, l0.dtype), jnp.asarray(0.1, l0.dtype),
             jnp.asarray(0, jnp.int32), jnp.asarray(0, jnp.int32))

    def cond(s):
      return (fnorm(s[2]) >= fmax) & (s[6] < max_steps)

    def body(s):
      q, v, f, dt_, alpha, n_pos, step = s
      p = dot(f, v)
      fn = jnp.sqrt(dot(f, f))
      vn = jnp.sqrt(dot(v, v))
      v = jax.tree.map(lambda vv, ff: (1 - alpha) * vv + alpha * ff / (fn + 1e-30) * vn, v, f)
      uphill = p <= 0
      v = jax.tree.map(lambda vv: jnp.where(uphill, 0.0, vv), v)
      n_pos = jnp.where(uphill, 0, n_pos + 1)
      grow = (~uphill) & (n_pos > 5)
      dt_ = jnp.where(uphill, dt_ * 0.5, jnp.where(grow, jnp.minimum(dt_ * 1.1, dt_max), dt_))
      alpha = jnp.where(uphill, 0.1, jnp.where(grow, alpha * 0.99, alpha))
      v = jax.tree.map(lambda vv, ff: vv + dt_ * ff, v, f)
      dq = jax.tree.map(lambda vv: dt_ * vv, v)
      norm = jnp.maximum(jnp.max(jnp.linalg.norm(dq[0], axis=-1)),
                         jnp.max(jnp.linalg.norm(dq[1], axis=-1)))
      scale = jnp.minimum(1.0, max_move / (norm + 1e-30))
      q = jax.tree.map(lambda a, b: a + scale * b, q, dq)
      return (q, v, gen_force(q), dt_, alpha, n_pos, step + 1)

    e0 = energy(q)
    q, _, f, _, _, _, steps = jax.lax.while_loop(cond, body, state)
    u, g = q
    fdef = jnp.eye(3) + g / n_atoms if relax_cell else jnp.eye(3)
    lat = l0 @ fdef
    frac = jnp.linalg.solve(lat.T, (u @ fdef).T).T
    return lat, frac, e0, energy(q), fnorm(f), steps

  return jax.vmap(one)(lat0, frac0, types, mask)


def chgnet_relax(structures: Sequence[Any], *, fmax: float = 0.1, steps: int = 500
                 ) -> tuple[list[Any], np.ndarray]:
  """Optional: relaxes pymatgen structures with CHGNet; returns (relaxed, energy per atom eV).

  CHGNet (Deng et al. 2023) is a universal ML potential trained on Materials Project
  relaxations, a far better proxy than the pair potential but still not DFT: its energies are
  not corrected to the MP2020 scheme and no convex hull is computed here.

  Raises:
    ImportError: when chgnet (and torch) are not installed; they are not part of the
      torch-free ``[materials]`` extra.
  """
  try:
    from chgnet.model import StructOptimizer
  except ImportError as e:
    raise ImportError(
        "chgnet_relax needs the chgnet package and torch, which tomioka_jax does not install "
        "(the [materials] extra stays torch-free): pip install chgnet; the default relaxation "
        "is relax_crystals (a JAX pair potential)") from e
  opt = StructOptimizer()
  relaxed, energies = [], []
  for s in structures:
    r = opt.relax(s, fmax=fmax, steps=steps, verbose=False)
    relaxed.append(r["final_structure"])
    energies.append(float(r["trajectory"].energies[-1]) / len(s))
  return relaxed, np.asarray(energies)
