"""MatterGen's structure metrics: validity, uniqueness, novelty and RMSD to relaxed structures.

* **Structural validity**: the shortest interatomic distance, periodic images included (an atom
  and its own image count), is at least 0.5 angstrom, and the cell volume at least 0.1 A^3.
* **Compositional validity** (SMACT): the composition admits a charge-neutral assignment of
  SMACT's oxidation states that also passes the Pauling electronegativity test (cations less
  electronegative than anions); one-element compositions and all-metal alloys are valid, as in
  the reference's ``smact_validity``. A composition with an element SMACT has no data for is
  invalid (the reference crashes there, microsoft/mattergen#235).
* **Uniqueness / novelty**: pymatgen's ``StructureMatcher(ltol=0.2, stol=0.3, angle_tol=5)``;
  only structures with the same reduced formula are compared (a match needs equal
  composition), which is an exact pre-filter, not an approximation.
* **RMSD**: ``StructureMatcher(ltol=0.5, stol=0.5, angle_tol=10).get_rms_dist`` between a
  generated structure and its relaxed version, in pymatgen's normalised units (the RMS
  displacement divided by (V / n)^(1/3)); NaN where the matcher finds no match.

All functions take lists of pymatgen ``Structure`` (see ``_data.crystals_to_structures``) and
return NumPy arrays with one entry per structure. pymatgen and smact are imported inside.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

MIN_DISTANCE = 0.5  # angstrom
MIN_VOLUME = 0.1  # angstrom^3
MATCHER_TOLERANCES = {"ltol": 0.2, "stol": 0.3, "angle_tol": 5.0}
RMSD_TOLERANCES = {"ltol": 0.5, "stol": 0.5, "angle_tol": 10.0}


def _matcher(tolerances: dict) -> Any:
  from pymatgen.analysis.structure_matcher import StructureMatcher
  return StructureMatcher(**tolerances)


def _check_list(name: str, structures: Sequence[Any]) -> list[Any]:
  out = list(structures)
  for i, s in enumerate(out):
    if not hasattr(s, "lattice") or not hasattr(s, "frac_coords"):
      raise ValueError(f"{name}[{i}] must be a pymatgen Structure, got {type(s).__name__}")
  return out


def min_distances(structures: Sequence[Any], *, search: float = 5.0) -> np.ndarray:
  """Shortest distance between two atoms (periodic images included) per structure, angstrom.

  Each structure is Niggli-reduced first (the same crystal); the shortest vector ``d0`` of the
  reduced cell is the distance from an atom to its own nearest image, so only neighbours within
  ``min(search, d0)`` need searching. That keeps the search small for a generated cell so thin
  that a search over its own cell would exhaust memory. Distances beyond ``search`` are
  reported as ``search`` (they are valid anyway).
  """
  out = []
  for s in _check_list("structures", structures):
    try:
      s = s.get_reduced_structure(reduction_algo="niggli")
    except Exception:  # pylint: disable=broad-except
      pass  # pymatgen gives up on a degenerate cell; search the cell as given
    d0 = float(min(s.lattice.abc))
    radius = min(search, d0)
    if radius <= 0.0 or not np.isfinite(radius):
      out.append(0.0)
      continue
    _, _, _, d = s.get_neighbor_list(radius * (1 + 1e-9), exclude_self=True)
    d = d[d > 1e-8] if len(s) == 1 else d
    out.append(float(min(d.min(), radius)) if d.size else radius)
  return np.asarray(out)


def structure_validity(structures: Sequence[Any], *, min_distance: float = MIN_DISTANCE,
                       min_volume: float = MIN_VOLUME) -> np.ndarray:
  """Bool per structure: shortest distance >= ``min_distance`` and volume >= ``min_volume``."""
  if min_distance <= 0:
    raise ValueError(f"min_distance must be > 0, got {min_distance}")
  structures = _check_list("structures", structures)
  vol = np.array([s.volume for s in structures])
  close = np.array([len(s.get_neighbor_list(min_distance, exclude_self=True)[3]) > 0
                    for s in structures], bool)
  return (~close) & (vol >= min_volume)


@functools.lru_cache(maxsize=4096)
def _smact_valid_formula(items: tuple[tuple[str, int], ...], use_pauling_test: bool,
                         include_alloys: bool) -> bool:
  import smact
  from smact.screening import pauling_test
  symbols = [e for e, _ in items]
  counts = [c for _, c in items]
  if len(symbols) == 1:
    return True
  if include_alloys and all(e in smact.metals for e in symbols):
    return True
  try:
    els = [smact.Element(e) for e in symbols]
  except (NameError, KeyError, ValueError):
    return False
  ox = [e.oxidation_states for e in els]
  enegs = [e.pauling_eneg for e in els]
  if any(not o for o in ox):
    return False
  g = math.gcd(*counts)
  stoichs = [(c // g,) for c in counts]
  threshold = max(c // g for c in counts)
  for combo in itertools.product(*ox):
    if not smact.neutral_ratios(combo, stoichs=stoichs, threshold=threshold):
      continue
    if not use_pauling_test:
      return True
    if any(x is None for x in enegs):
      continue
    if pauling_test(combo, enegs):
      return True
  return False


def smact_validity(structures: Sequence[Any], *, use_pauling_test: bool = True,
                   include_alloys: bool = True) -> np.ndarray:
  """Bool per structure: the composition is charge-balanced under SMACT (see module doc)."""
  out = []
  for s in _check_list("structures", structures):
    comp = s.composition.element_composition
    items = tuple(sorted((el.symbol, int(round(n))) for el, n in comp.items()))
    out.append(_smact_valid_formula(items, use_pauling_test, include_alloys))
  return np.asarray(out, bool)


def _groups(structures: Sequence[Any]) -> dict[str, list[int]]:
  g: dict[str, list[int]] = {}
  for i, s in enumerate(structures):
    g.setdefault(s.composition.reduced_formula, []).append(i)
  return g


def unique_labels(structures: Sequence[Any], *, tolerances: dict | None = None) -> np.ndarray:
  """Cluster label per structure: the index of the first structure it matches (itself if new).

  Greedy in list order, as MatterGen's evaluator: structure i is a duplicate when it matches an
  earlier representative of the same reduced formula.
  """
  structures = _check_list("structures", structures)
  sm = _matcher(tolerances or MATCHER_TOLERANCES)
  labels = np.arange(len(structures))
  for idx in _groups(structures).values():
    reps: list[int] = []
    for i in idx:
      hit = next((r for r in reps if sm.fit(structures[r], structures[i])), None)
      if hit is None:
        reps.append(i)
      else:
        labels[i] = hit
  return labels


def is_unique(structures: Sequence[Any], *, tolerances: dict | None = None) -> np.ndarray:
  """Bool per structure: True for the first member of each StructureMatcher class."""
  labels = unique_labels(structures, tolerances=tolerances)
  return labels == np.arange(labels.size)


def is_novel(structures: Sequence[Any], reference: Sequence[Any], *,
             tolerances: dict | None = None) -> np.ndarray:
  """Bool per structure: no structure of ``reference`` (same reduced formula) matches it."""
  structures = _check_list("structures", structures)
  reference = _check_list("reference", reference)
  sm = _matcher(tolerances or MATCHER_TOLERANCES)
  ref = _groups(reference)
  return np.asarray([not any(sm.fit(reference[j], s)
                             for j in ref.get(s.composition.reduced_formula, []))
                     for s in structures], bool)


def rmsd(structures: Sequence[Any], relaxed: Sequence[Any], *,
         tolerances: dict | None = None) -> np.ndarray:
  """Normalised RMS displacement between each structure and its relaxed partner (NaN: no match)."""
  structures = _check_list("structures", structures)
  relaxed = _check_list("relaxed", relaxed)
  if len(structures) != len(relaxed):
    raise ValueError(
        f"structures and relaxed must have equal lengths, got {len(structures)} and "
        f"{len(relaxed)}")
  sm = _matcher(tolerances or RMSD_TOLERANCES)
  out = []
  for a, b in zip(structures, relaxed):
    r = sm.get_rms_dist(a, b)
    out.append(float("nan") if r is None else float(r[0]))
  return np.asarray(out)


def evaluate_structures(structures: Sequence[Any], *, reference: Sequence[Any] | None = None,
                        relaxed: Sequence[Any] | None = None) -> dict:
  """The summary MatterGen reports, as fractions of all structures given.

  Keys: ``structure_valid``, ``composition_valid``, ``valid`` (both), ``unique`` (fraction of
  first members of their match classes), ``novel`` (against ``reference``), ``unique_novel``,
  ``valid_unique_novel``, and with ``relaxed``: ``rmsd_mean`` (over matched pairs),
  ``rmsd_median``, ``rmsd_match_rate``; ``num`` = number of structures.
  """
  structures = _check_list("structures", structures)
  if not structures:
    raise ValueError("structures must be non-empty")
  sv = structure_validity(structures)
  cv = smact_validity(structures)
  un = is_unique(structures)
  out = {"num": len(structures), "structure_valid": float(sv.mean()),
         "composition_valid": float(cv.mean()), "valid": float((sv & cv).mean()),
         "unique": float(un.mean())}
  if reference is not None:
    nv = is_novel(structures, reference)
    out.update(novel=float(nv.mean()), unique_novel=float((un & nv).mean()),
               valid_unique_novel=float((sv & cv & un & nv).mean()))
  if relaxed is not None:
    r = rmsd(structures, relaxed)
    ok = np.isfinite(r)
    out.update(rmsd_mean=float(r[ok].mean()) if ok.any() else float("nan"),
               rmsd_median=float(np.median(r[ok])) if ok.any() else float("nan"),
               rmsd_match_rate=float(ok.mean()))
  return out
