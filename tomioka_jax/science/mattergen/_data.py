"""Crystal structures in and out of padded ``Crystals`` batches, and an offline training set.

Converters between pymatgen ``Structure`` / ase ``Atoms`` and the shared batch
(``_crystal.Crystals``), and the lattice canonicalisation MatterGen applies before training:
a Niggli reduction followed by the polar decomposition of the lattice matrix,

  L = S R,   S = (L L^T)^{1/2} symmetric positive definite,   R = S^{-1} L a rotation,

after which the crystal is rotated by R^T so that its lattice matrix is the symmetric S. The
Gram matrix S S^T = L L^T, the fractional coordinates and hence every interatomic distance are
unchanged; only the orientation in space is fixed, which removes the rotational freedom from the
lattice diffusion.

The offline training set (``build_training_set``) needs no network and no DFT database. It is

1. the AFLOW prototype structures pymatgen ships (``pymatgen/analysis/prototypes/
   aflow_prototypes.json.gz``, 288 structures), each reduced to its primitive cell;
2. the reference crystal of every element for which ``ase.build.bulk`` knows a structure (72
   elements in ase 3.29);
3. restricted to <= ``max_atoms`` atoms per cell and to the elements H..Bi (Z <= 83) without
   Tc, Pm and the noble gases (so that every composition has SMACT data);
4. augmented by **isovalent substitutions**: every element of a structure is replaced in turn by
   its neighbour one row up or down in the same group of the periodic table when the two share
   a common oxidation state (pymatgen's ``common_oxidation_states``; elements without any,
   e.g. the noble metals, only swap with partners that also have none), with the lattice scaled
   by the ratio of the mean atomic radii;
5. deduplicated with pymatgen's ``StructureMatcher`` at MatterGen's tolerances (ltol 0.2,
   stol 0.3, angle_tol 5), comparing only structures of equal reduced formula; these are the
   **base** structures (the reference set for novelty);
6. each base structure followed by ``num_strains`` **strained copies**, the lattice multiplied
   by (I + E) with E symmetric, entries N(0, ``strain``^2) (seeded). A strain of a few percent
   is below the matcher's tolerance, so strained copies are augmentation, not new structures.

The build is deterministic for a seed and cached as an npz under
``~/.cache/tomioka_jax/mattergen`` (override with ``cache_dir``). ``dataset_summary`` states what
the set is (counts, elements, atoms per cell). Property labels for conditioning are the density
(g/cm^3), the mean Pauling electronegativity and the number of distinct elements.

pymatgen, ase and smact are imported inside the functions, so the package imports without them
(they come with the ``[materials]`` extra).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tomioka_jax.science.mattergen import _crystal
from tomioka_jax.science.mattergen import _metrics

# Elements kept in the offline set: H..Bi without the noble gases, Tc and Pm.
_EXCLUDED = frozenset({"He", "Ne", "Ar", "Kr", "Xe", "Tc", "Pm"})
_MAX_Z = 83
_DATASET_VERSION = 1


def _require(module: str):
  try:
    return __import__(module, fromlist=["_"])
  except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        f"{module} is needed for crystal structures: install the materials extra, "
        f"pip install 'tomioka_jax[materials]'") from e


def allowed_element(symbol: str) -> bool:
  """Whether an element is in the offline set's chemistry (H..Bi, no noble gas, Tc or Pm)."""
  z = _crystal.element_index(symbol) + 1
  return z <= _MAX_Z and symbol not in _EXCLUDED


# ----------------------------------------------------------------------------- lattices


def polar_symmetric_lattice(lattice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Polar decomposition L = S R of a right-handed lattice (rows = vectors), batched.

  Args:
    lattice: (..., 3, 3) with det > 0.

  Returns:
    (S, R): S = (L L^T)^{1/2} symmetric positive definite, R = S^{-1} L a proper rotation.

  Raises:
    ValueError: if a lattice is not finite or has det <= 0.
  """
  lat = np.asarray(lattice, np.float64)
  if lat.shape[-2:] != (3, 3):
    raise ValueError(f"lattice must have shape (..., 3, 3), got {lat.shape}")
  det = np.linalg.det(lat)
  if not np.all(np.isfinite(lat)) or np.any(det <= 0):
    raise ValueError(
        f"lattice must be finite with det > 0 (right-handed, non-degenerate), got det "
        f"{np.min(det):.4g}")
  u, s, vt = np.linalg.svd(lat)
  sym = (u * s[..., None, :]) @ np.swapaxes(u, -1, -2)
  rot = u @ vt
  return sym, rot


def canonical_structure(structure: Any) -> Any:
  """Niggli-reduces a pymatgen ``Structure`` and rotates it so its lattice matrix is symmetric.

  A left-handed Niggli cell is inverted first (L -> -L, f -> -f, the same Cartesian positions).
  Fractional coordinates are wrapped to [0, 1).
  """
  pmg = _require("pymatgen.core")
  s = structure.get_reduced_structure(reduction_algo="niggli")
  lat = np.array(s.lattice.matrix, np.float64)
  frac = np.array(s.frac_coords, np.float64)
  if np.linalg.det(lat) < 0:
    lat, frac = -lat, -frac
  sym, _ = polar_symmetric_lattice(lat)
  sym = 0.5 * (sym + sym.T)
  return pmg.Structure(pmg.Lattice(sym), [site.specie for site in s], _wrap(frac),
                       coords_are_cartesian=False)


def _wrap(frac: np.ndarray) -> np.ndarray:
  f = np.mod(np.asarray(frac, np.float64), 1.0)
  return np.where(f >= 1.0, 0.0, f)  # mod can round up to exactly 1.0


# -------------------------------------------------------------------------- converters


def _max_atoms_arg(counts: Sequence[int], max_atoms: int | None) -> int:
  n = max(counts) if counts else 0
  if max_atoms is None:
    return n
  if int(max_atoms) < 1:
    raise ValueError(f"max_atoms must be a positive integer, got {max_atoms}")
  if n > max_atoms:
    raise ValueError(
        f"max_atoms={max_atoms} is smaller than the largest structure ({n} atoms); allowed is "
        f"max_atoms >= {n}")
  return int(max_atoms)


def _pack(lattices, fracs, types, max_atoms: int | None) -> _crystal.Crystals:
  if not lattices:
    raise ValueError("structures must be a non-empty sequence")
  n = _max_atoms_arg([len(t) for t in types], max_atoms)
  b = len(lattices)
  lat = np.stack([np.asarray(x, np.float32) for x in lattices])
  frac = np.zeros((b, n, 3), np.float32)
  typ = np.zeros((b, n), np.int32)
  mask = np.zeros((b, n), bool)
  for i, (f, t) in enumerate(zip(fracs, types)):
    k = len(t)
    frac[i, :k] = _wrap(f).astype(np.float32)
    typ[i, :k] = t
    mask[i, :k] = True
  frac = np.where(frac >= 1.0, 0.0, frac).astype(np.float32)  # float32 rounding of 1 - eps
  return _crystal.check_crystals(_crystal.Crystals(lat, frac, typ, mask))


def structures_to_crystals(structures: Sequence[Any], *, max_atoms: int | None = None,
                           canonical: bool = False) -> _crystal.Crystals:
  """Packs pymatgen ``Structure`` objects into a padded ``Crystals`` batch (NumPy arrays).

  Args:
    structures: ordered structures (one element per site).
    max_atoms: the padded size N (default: the largest structure).
    canonical: apply ``canonical_structure`` (Niggli + symmetric polar lattice) first.

  Raises:
    ValueError: for an empty list, a disordered site, an element outside H..Fm, a structure
      larger than ``max_atoms``, or a lattice/coordinate the ``check_crystals`` checks reject.
  """
  lats, fracs, types = [], [], []
  for i, s in enumerate(structures):
    if not s.is_ordered:
      raise ValueError(f"structures[{i}] is disordered; allowed are ordered structures")
    if canonical:
      s = canonical_structure(s)
    lats.append(np.array(s.lattice.matrix))
    fracs.append(np.array(s.frac_coords).reshape(-1, 3))
    types.append([_crystal.element_index(site.specie.symbol) for site in s])
  return _pack(lats, fracs, types, max_atoms)


def crystals_to_structures(crystals: _crystal.Crystals) -> list[Any]:
  """Unpacks a ``Crystals`` batch into pymatgen ``Structure`` objects (padding dropped).

  Raises:
    ValueError: from ``check_crystals`` (non-positive-definite lattice, coordinates outside
      [0, 1), unknown or masked types).
  """
  pmg = _require("pymatgen.core")
  lat, frac, typ, mask = (np.asarray(x) for x in _crystal.check_crystals(crystals))
  out = []
  for i in range(lat.shape[0]):
    m = mask[i]
    out.append(pmg.Structure(pmg.Lattice(lat[i].astype(np.float64)),
                             [_crystal.ELEMENTS[t] for t in typ[i][m]],
                             frac[i][m].astype(np.float64)))
  return out


def atoms_to_crystals(atoms_list: Sequence[Any], *, max_atoms: int | None = None
                      ) -> _crystal.Crystals:
  """Packs periodic ase ``Atoms`` into a ``Crystals`` batch (positions wrapped into the cell).

  Raises:
    ValueError: for non-periodic atoms, unknown elements or the ``check_crystals`` failures.
  """
  lats, fracs, types = [], [], []
  for i, a in enumerate(atoms_list):
    if not all(a.pbc):
      raise ValueError(f"atoms_list[{i}] must be periodic in all three directions, pbc={a.pbc}")
    lats.append(np.array(a.cell[:]))
    fracs.append(np.array(a.get_scaled_positions(wrap=True)).reshape(-1, 3))
    types.append([_crystal.element_index(s) for s in a.get_chemical_symbols()])
  return _pack(lats, fracs, types, max_atoms)


def crystals_to_atoms(crystals: _crystal.Crystals) -> list[Any]:
  """Unpacks a ``Crystals`` batch into periodic ase ``Atoms``."""
  ase = _require("ase")
  lat, frac, typ, mask = (np.asarray(x) for x in _crystal.check_crystals(crystals))
  return [ase.Atoms([_crystal.ELEMENTS[t] for t in typ[i][mask[i]]],
                    scaled_positions=frac[i][mask[i]].astype(np.float64),
                    cell=lat[i].astype(np.float64), pbc=True) for i in range(lat.shape[0])]


# ------------------------------------------------------------------------ the data set


@dataclasses.dataclass(frozen=True)
class CrystalDataset:
  """The offline training set: a ``Crystals`` batch with labels.

  Attributes:
    crystals: canonical (Niggli + symmetric lattice) structures, padded to ``max_atoms``.
    density: g/cm^3, shape (B,).
    mean_electronegativity: the atom-weighted mean Pauling electronegativity, shape (B,).
    num_elements: distinct elements per crystal, shape (B,).
    formula: reduced formulas, shape (B,) str.
    source: ``"aflow"``, ``"ase_bulk"`` or ``"substitution"``, shape (B,).
    is_base: False for the strained copies; the base structures are the novelty reference.
    config: the build arguments.
  """
  crystals: _crystal.Crystals
  density: np.ndarray
  mean_electronegativity: np.ndarray
  num_elements: np.ndarray
  formula: np.ndarray
  source: np.ndarray
  is_base: np.ndarray
  config: dict

  def __len__(self) -> int:
    return int(self.density.shape[0])

  def subset(self, index: np.ndarray) -> CrystalDataset:
    """The rows ``index`` (an int or bool array)."""
    idx = np.asarray(index)
    c = _crystal.Crystals(*(np.asarray(x)[idx] for x in self.crystals))
    return dataclasses.replace(
        self, crystals=c, density=self.density[idx],
        mean_electronegativity=self.mean_electronegativity[idx],
        num_elements=self.num_elements[idx], formula=self.formula[idx],
        source=self.source[idx], is_base=self.is_base[idx])

  def base_structures(self) -> list[Any]:
    """The base (unstrained) structures as pymatgen objects: the novelty reference set."""
    return crystals_to_structures(self.subset(self.is_base).crystals)


def _aflow_structures() -> list[Any]:
  pmg = _require("pymatgen.core")
  import pymatgen.analysis.prototypes as protos
  path = Path(protos.__file__).parent / "aflow_prototypes.json.gz"
  with gzip.open(path, "rt") as fh:
    entries = json.load(fh)
  return [pmg.Structure.from_dict(e["snl"]) for e in entries]


def _ase_bulk_structures() -> list[Any]:
  build = _require("ase.build")
  adaptor = _require("pymatgen.io.ase").AseAtomsAdaptor
  out = []
  for sym in _crystal.ELEMENTS:
    try:
      atoms = build.bulk(sym)
    except (ValueError, KeyError, NotImplementedError, RuntimeError):
      continue  # ase has no reference crystal for this element
    out.append(adaptor.get_structure(atoms))
  return out


def _substitution_partners(symbol: str) -> list[str]:
  """Same-group neighbours one row up/down sharing a common oxidation state (see module doc)."""
  pmg = _require("pymatgen.core")
  el = pmg.Element(symbol)
  ox = set(el.common_oxidation_states)
  out = []
  for z in (el.Z - 1, el.Z + 1, el.Z - 7, el.Z + 7, el.Z - 8, el.Z + 8, el.Z - 17, el.Z + 17,
            el.Z - 18, el.Z + 18, el.Z - 31, el.Z + 31, el.Z - 32, el.Z + 32):
    if not 1 <= z <= _MAX_Z:
      continue
    other = pmg.Element.from_Z(z)
    if other.group != el.group or abs(other.row - el.row) != 1 or el.is_lanthanoid:
      continue
    if other.is_lanthanoid or not allowed_element(other.symbol):
      continue
    oox = set(other.common_oxidation_states)
    if (ox & oox) or (not ox and not oox):
      out.append(other.symbol)
  return sorted(set(out))


def _radius(symbol: str) -> float:
  pmg = _require("pymatgen.core")
  r = pmg.Element(symbol).atomic_radius
  return float(r) if r is not None else 1.5


def _substitute(structure: Any, old: str, new: str) -> Any:
  s = structure.copy()
  s.replace_species({old: new})
  syms = [site.specie.symbol for site in structure]
  r_old = np.mean([_radius(x) for x in syms])
  r_new = np.mean([_radius(new if x == old else x) for x in syms])
  s.scale_lattice(structure.volume * (r_new / r_old) ** 3)
  return s


def _mean_en(structure: Any) -> float:
  vals = [site.specie.X for site in structure]
  vals = [v for v in vals if v is not None and math.isfinite(v)]
  return float(np.mean(vals)) if vals else float("nan")


def _dedup(structures: list[Any]) -> list[int]:
  """Indices of the first structure of each StructureMatcher class, grouped by formula."""
  sm = _require("pymatgen.analysis.structure_matcher").StructureMatcher(**_metrics.MATCHER_TOLERANCES)
  keep: list[int] = []
  by_formula: dict[str, list[int]] = {}
  for i, s in enumerate(structures):
    f = s.composition.reduced_formula
    group = by_formula.setdefault(f, [])
    if any(sm.fit(structures[j], s) for j in group):
      continue
    group.append(i)
    keep.append(i)
  return keep


def _default_cache_dir() -> Path:
  return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tomioka_jax" / "mattergen"


def build_training_set(*, max_atoms: int = 8, num_strains: int = 2, strain: float = 0.03,
                       substitutions: bool = True, seed: int = 0, cache: bool = True,
                       cache_dir: str | os.PathLike | None = None,
                       max_structures: int | None = None) -> CrystalDataset:
  """Builds (or loads from the cache) the offline crystal training set; see the module doc.

  Args:
    max_atoms: keep primitive cells with at most this many atoms (also the padded size N).
    num_strains: strained copies per base structure (0 for none).
    strain: standard deviation of the symmetric strain entries.
    substitutions: add the isovalent same-group substitutions.
    seed: seeds the strains.
    cache: read/write the npz cache.
    cache_dir: cache directory (default ``~/.cache/tomioka_jax/mattergen``).
    max_structures: keep only the first this many seed structures (prototypes + ase crystals)
      before substitution, for fast tests; None keeps all.

  Returns:
    A ``CrystalDataset``: base structures in a deterministic order, each followed by its
    strained copies.
  """
  if int(max_atoms) < 1:
    raise ValueError(f"max_atoms must be >= 1, got {max_atoms}")
  if int(num_strains) < 0:
    raise ValueError(f"num_strains must be >= 0, got {num_strains}")
  if not (0.0 <= strain < 0.5):
    raise ValueError(f"strain must be in [0, 0.5), got {strain}")
  if max_structures is not None and int(max_structures) < 1:
    raise ValueError(f"max_structures must be None or >= 1, got {max_structures}")
  config = dict(version=_DATASET_VERSION, max_atoms=int(max_atoms), num_strains=int(num_strains),
                strain=float(strain), substitutions=bool(substitutions), seed=int(seed),
                max_structures=None if max_structures is None else int(max_structures))
  tag = "_".join(f"{k}{v}" for k, v in config.items())
  path = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
  path = path / f"offline_{tag}.npz"
  if cache and path.exists():
    return _load(path, config)
  data = _build(config)
  if cache:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, lattice=data.crystals.lattice, frac_coords=data.crystals.frac_coords,
             atom_types=data.crystals.atom_types, mask=data.crystals.mask, density=data.density,
             mean_electronegativity=data.mean_electronegativity, num_elements=data.num_elements,
             formula=data.formula, source=data.source, is_base=data.is_base)
    os.replace(tmp, path)
  return data


def _load(path: Path, config: dict) -> CrystalDataset:
  z = np.load(path)
  return CrystalDataset(
      crystals=_crystal.Crystals(z["lattice"], z["frac_coords"], z["atom_types"], z["mask"]),
      density=z["density"], mean_electronegativity=z["mean_electronegativity"],
      num_elements=z["num_elements"], formula=z["formula"], source=z["source"],
      is_base=z["is_base"], config=config)


def _build(config: dict) -> CrystalDataset:
  max_atoms = config["max_atoms"]
  seeds: list[tuple[str, Any]] = []
  for s in _aflow_structures():
    seeds.append(("aflow", s))
  for s in _ase_bulk_structures():
    seeds.append(("ase_bulk", s))
  kept: list[tuple[str, Any]] = []
  for src, s in seeds:
    if not s.is_ordered or not all(allowed_element(e.symbol) for e in s.composition.elements):
      continue
    if len(s) > max_atoms:
      s = s.get_primitive_structure()
    if len(s) <= max_atoms:
      kept.append((src, s))
  if config["max_structures"] is not None:
    kept = kept[:config["max_structures"]]
  candidates = list(kept)
  if config["substitutions"]:
    for _, s in kept:
      for el in sorted({e.symbol for e in s.composition.elements}):
        for new in _substitution_partners(el):
          if new in {e.symbol for e in s.composition.elements}:
            continue
          candidates.append(("substitution", _substitute(s, el, new)))
  canon = [(src, canonical_structure(s)) for src, s in candidates]
  keep = _dedup([s for _, s in canon])
  base = [canon[i] for i in keep]

  rng = np.random.default_rng(config["seed"])
  pmg = _require("pymatgen.core")
  rows: list[tuple[str, Any, bool]] = []
  for src, s in base:
    rows.append((src, s, True))
    for _ in range(config["num_strains"]):
      e = rng.normal(0.0, config["strain"], (3, 3))
      e = 0.5 * (e + e.T)
      lat = np.array(s.lattice.matrix) @ (np.eye(3) + e)
      sym, _ = polar_symmetric_lattice(lat)
      sym = 0.5 * (sym + sym.T)
      rows.append((src, pmg.Structure(pmg.Lattice(sym), s.species, s.frac_coords), False))
  structures = [r[1] for r in rows]
  crystals = structures_to_crystals(structures, max_atoms=max_atoms)
  return CrystalDataset(
      crystals=crystals,
      density=np.array([float(s.density) for s in structures], np.float32),
      mean_electronegativity=np.array([_mean_en(s) for s in structures], np.float32),
      num_elements=np.array([len(s.composition.elements) for s in structures], np.int32),
      formula=np.array([s.composition.reduced_formula for s in structures]),
      source=np.array([r[0] for r in rows]),
      is_base=np.array([r[2] for r in rows], bool),
      config=dict(config))


def dataset_summary(data: CrystalDataset) -> dict:
  """What the set is: counts by source, elements, atoms-per-cell histogram, label ranges."""
  mask = np.asarray(data.crystals.mask)
  types = np.asarray(data.crystals.atom_types)
  n = mask.sum(axis=1)
  base = np.asarray(data.is_base)
  elements = sorted({_crystal.ELEMENTS[t] for t in types[mask]},
                    key=_crystal.element_index)
  src_base = {s: int(np.sum((data.source == s) & base)) for s in sorted(set(data.source.tolist()))}
  hist = {int(k): int(np.sum(n[base] == k)) for k in range(1, mask.shape[1] + 1)}
  return {
      "num_structures": int(len(data)),
      "num_base": int(base.sum()),
      "num_strained": int((~base).sum()),
      "base_by_source": src_base,
      "num_formulas": int(len(set(data.formula[base].tolist()))),
      "num_elements": len(elements),
      "elements": elements,
      "atoms_per_cell_base": hist,
      "density_range": [float(data.density.min()), float(data.density.max())],
      "density_mean": float(data.density.mean()),
      "mean_electronegativity_range": [float(np.nanmin(data.mean_electronegativity)),
                                       float(np.nanmax(data.mean_electronegativity))],
      "config": dict(data.config),
  }


def crystal_density(crystals: _crystal.Crystals) -> np.ndarray:
  """Mass density in g/cm^3 of each crystal of a batch (NumPy; padding ignored)."""
  lat, _, typ, mask = (np.asarray(x) for x in crystals)
  masses = _atomic_masses()
  m = np.where(mask, masses[np.clip(typ, 0, _crystal.NUM_ELEMENTS - 1)], 0.0).sum(axis=1)
  vol = np.abs(np.linalg.det(lat.astype(np.float64)))
  return m / vol * 1.66053906660  # amu / A^3 -> g / cm^3


def _atomic_masses() -> np.ndarray:
  data = _require("ase.data")
  return np.asarray(data.atomic_masses[1:_crystal.NUM_ELEMENTS + 1], np.float64)


# ------------------------------------------------------------------------------ baselines


def random_crystals(key: Any, mask: Any, type_probs: Any, *, atom_density: float = 0.0577,
                    lattice_noise: float = 0.1) -> _crystal.Crystals:
  """The random-structure baseline: a cell of the right size, uniform coordinates, random types.

  Lattice: (n / atom_density)^{1/3} (I + E) with E symmetric, entries N(0, lattice_noise^2)
  (made positive definite by the polar factor); fractional coordinates U[0, 1); types drawn
  i.i.d. from ``type_probs`` (e.g. the training set's element frequencies).

  Args:
    key: a ``jax.random`` key.
    mask: (B, N) bool, which slots hold atoms.
    type_probs: (NUM_ELEMENTS,) non-negative weights.
    atom_density: atoms per A^3 (default: MP-20's 0.0577).
    lattice_noise: relative size of the random strain.
  """
  import jax
  import jax.numpy as jnp
  from tomioka_jax import core
  mask = np.asarray(mask, bool)
  p = np.asarray(type_probs, np.float64)
  if mask.ndim != 2 or not mask.any(axis=1).all():
    raise ValueError(f"mask must be (B, N) bool with >= 1 atom per row, got shape {mask.shape}")
  if p.shape != (_crystal.NUM_ELEMENTS,) or np.any(p < 0) or p.sum() <= 0:
    raise ValueError(f"type_probs must be {_crystal.NUM_ELEMENTS} non-negative weights with a "
                     f"positive sum, got shape {p.shape}")
  if not atom_density > 0 or not 0 <= lattice_noise < 0.5:
    raise ValueError(f"atom_density must be > 0 and lattice_noise in [0, 0.5), got "
                     f"{atom_density}, {lattice_noise}")
  b, n = mask.shape
  k1, k2, k3 = jax.random.split(key, 3)
  e = lattice_noise * np.asarray(core.flat_normal(k1, (b, 3, 3)), np.float64)
  e = 0.5 * (e + np.swapaxes(e, 1, 2))
  scale = (mask.sum(1) / atom_density) ** (1.0 / 3.0)
  lat, _ = polar_symmetric_lattice(scale[:, None, None] * (np.eye(3) + e))
  frac = np.asarray(core.flat_uniform(k2, (b, n, 3)), np.float32) * mask[..., None]
  types = np.asarray(jax.random.choice(k3, _crystal.NUM_ELEMENTS, (b, n),
                                       p=jnp.asarray(p / p.sum(), jnp.float32)), np.int32)
  frac = np.where(frac >= 1.0, 0.0, frac).astype(np.float32)
  return _crystal.check_crystals(_crystal.Crystals(
      lat.astype(np.float32), frac, np.where(mask, types, 0).astype(np.int32), mask))


def perturb_crystals(key: Any, crystals: _crystal.Crystals, *, coord_noise: float = 0.1,
                     strain: float = 0.05) -> _crystal.Crystals:
  """The perturbation baseline: training crystals with Gaussian noise.

  Each atom moves by N(0, coord_noise^2) per Cartesian axis (angstrom) and the lattice is
  multiplied by (I + E), E symmetric with entries N(0, strain^2); coordinates are re-wrapped.
  """
  import jax
  from tomioka_jax import core
  if coord_noise < 0 or not 0 <= strain < 0.5:
    raise ValueError(f"coord_noise must be >= 0 and strain in [0, 0.5), got {coord_noise}, "
                     f"{strain}")
  lat, frac, types, mask = (np.asarray(x) for x in _crystal.check_crystals(crystals))
  k1, k2 = jax.random.split(key)
  b, n = mask.shape
  e = strain * np.asarray(core.flat_normal(k1, (b, 3, 3)), np.float64)
  e = 0.5 * (e + np.swapaxes(e, 1, 2))
  new_lat = lat.astype(np.float64) @ (np.eye(3) + e)
  dx = coord_noise * np.asarray(core.flat_normal(k2, (b, n, 3)), np.float64)
  cart = np.einsum("bni,bij->bnj", frac.astype(np.float64), new_lat) + dx
  new_frac = np.einsum("bnj,bji->bni", cart, np.linalg.inv(new_lat))
  new_frac = np.where(mask[..., None], _wrap(new_frac), 0.0).astype(np.float32)
  new_frac = np.where(new_frac >= 1.0, 0.0, new_frac).astype(np.float32)
  return _crystal.check_crystals(_crystal.Crystals(new_lat.astype(np.float32), new_frac,
                                                   types, mask))


def type_frequencies(data: CrystalDataset) -> np.ndarray:
  """Element frequencies (NUM_ELEMENTS,) over the atoms of the base structures."""
  c = data.subset(data.is_base).crystals
  t = np.asarray(c.atom_types)[np.asarray(c.mask)]
  return np.bincount(t, minlength=_crystal.NUM_ELEMENTS).astype(np.float64) / t.size
