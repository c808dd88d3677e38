"""Tests of MatterGen's validity, uniqueness, novelty and RMSD metrics."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pymatgen")
pytest.importorskip("smact")

from pymatgen.core import Lattice, Structure  # noqa: E402

from tomioka_jax.science.mattergen import _metrics  # noqa: E402


def _nacl(a: float = 5.64) -> Structure:
  return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"],
                                   [[0, 0, 0], [0.5, 0.5, 0.5]])


def _cscl(a: float = 4.12) -> Structure:
  return Structure(Lattice.cubic(a), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_min_distance_and_structure_validity():
  nacl = _nacl()
  close = Structure(Lattice.cubic(6.0), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]])  # 0.3 A
  thin = Structure(Lattice.cubic(0.4), ["Na"], [[0, 0, 0]])  # the atom meets its own image
  tiny = Structure(Lattice([[0.6, 0, 0], [0, 0.6, 0], [0, 0, 0.2]]), ["H"], [[0, 0, 0]])
  d = _metrics.min_distances([nacl, close, thin])
  np.testing.assert_allclose(d, [5.64 / 2, 0.3, 0.4], atol=1e-8)
  np.testing.assert_array_equal(_metrics.structure_validity([nacl, close, thin, tiny]),
                                [True, False, False, False])
  with pytest.raises(ValueError, match="min_distance"):
    _metrics.structure_validity([nacl], min_distance=0.0)
  with pytest.raises(ValueError, match="pymatgen Structure"):
    _metrics.structure_validity([np.eye(3)])


def test_min_distance_of_a_skewed_or_needle_thin_cell_is_exact_and_cheap():
  # The same NaCl in a badly skewed cell (L' = U L, f' = f U^-1): the same shortest distance.
  nacl = _nacl()
  u = np.array([[1, 7, 0], [0, 1, 0], [0, -5, 1]])
  skew = Structure(Lattice(u @ nacl.lattice.matrix), nacl.species,
                   nacl.frac_coords @ np.linalg.inv(u), coords_are_cartesian=False)
  # A needle: one lattice vector of 1e-3 A, atoms 2 A apart along another. A neighbour search
  # over 5 A in this cell would list ~10^4 images per atom; the reduced search lists a few.
  needle = Structure(Lattice([[1e-3, 0, 0], [0, 6.0, 0], [0, 0, 6.0]]), ["Na", "Cl"],
                     [[0, 0, 0], [0, 1 / 3, 0]])
  d = _metrics.min_distances([skew, needle])
  np.testing.assert_allclose(d, [5.64 / 2, 1e-3], rtol=1e-6)
  assert not _metrics.structure_validity([needle])[0]


def test_smact_validity_charge_balance():
  lat = Lattice.cubic(5.0)
  def s(species):
    return Structure(lat, species, np.linspace(0, 0.9, len(species))[:, None] * np.ones(3))
  ok = [s(["Na", "Cl"]), s(["Mg", "O"]), s(["Al", "Al", "O", "O", "O"]), s(["Fe"]),
        s(["Cu", "Au"])]  # ionic salts, an element, an alloy
  bad = [s(["Na", "Na", "Cl"]), s(["Na", "O", "O", "O"]), s(["Mg", "F", "F", "F", "F"])]
  np.testing.assert_array_equal(_metrics.smact_validity(ok), [True] * 5)
  np.testing.assert_array_equal(_metrics.smact_validity(bad), [False] * 3)
  # F2O: SMACT lists only negative states for F and O, so no neutral assignment exists
  fo = s(["F", "F", "O"])
  assert not _metrics.smact_validity([fo])[0]


def test_uniqueness_counts_duplicates():
  a, b = _nacl(), _cscl()
  a_rot = a.copy()
  a_rot.apply_strain(0.01)  # within ltol
  a_super = a.copy()
  a_super.make_supercell([1, 1, 2])  # the same crystal in a larger cell
  other = _nacl(7.5)  # NaCl with a 33 % larger lattice
  structures = [a, b, a_rot, a_super, b.copy()]
  labels = _metrics.unique_labels(structures)
  np.testing.assert_array_equal(labels, [0, 1, 0, 0, 1])
  np.testing.assert_array_equal(_metrics.is_unique(structures), [1, 1, 0, 0, 0])
  # StructureMatcher scales volumes by default, so a uniformly expanded NaCl is the same
  assert _metrics.is_unique([a, other]).tolist() == [True, False]
  # a different prototype of the same formula is unique
  zb = Structure.from_spacegroup("F-43m", Lattice.cubic(5.6), ["Na", "Cl"],
                                 [[0, 0, 0], [0.25, 0.25, 0.25]])
  assert _metrics.is_unique([a, zb]).tolist() == [True, True]
  summary = _metrics.evaluate_structures(structures)
  assert summary["unique"] == pytest.approx(2 / 5)


def test_novelty_against_reference():
  ref = [_nacl(), _cscl()]
  kbr = Structure.from_spacegroup("Fm-3m", Lattice.cubic(6.6), ["K", "Br"],
                                  [[0, 0, 0], [0.5, 0.5, 0.5]])
  nacl_zb = Structure.from_spacegroup("F-43m", Lattice.cubic(5.6), ["Na", "Cl"],
                                      [[0, 0, 0], [0.25, 0.25, 0.25]])
  perturbed = _nacl()
  perturbed.perturb(0.05, min_distance=0.05)
  np.testing.assert_array_equal(_metrics.is_novel([kbr, nacl_zb, perturbed, _cscl()], ref),
                                [True, True, False, False])


def test_rmsd_zero_identical_positive_perturbed_nan_unmatched():
  s = Structure(Lattice.from_parameters(4.0, 4.5, 5.0, 90, 95, 90), ["Mg", "O", "O"],
                [[0, 0, 0], [0.3, 0.3, 0.3], [0.7, 0.6, 0.2]])
  p = s.copy()
  rng = np.random.default_rng(0)
  for i in range(len(p)):
    p.translate_sites([i], rng.normal(0, 0.05, 3), frac_coords=False)
  far = Structure(s.lattice, ["Mg", "O", "O"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.0, 0.5, 0.0]])
  r = _metrics.rmsd([s, s, s], [s.copy(), p, far])
  assert r[0] == pytest.approx(0.0, abs=1e-8)
  assert 0.0 < r[1] < 0.1
  # a slow reference: RMS displacement of the (unmoved-origin) perturbation, normalised by
  # (V/n)^(1/3), is an upper bound on the matcher's (it also optimises the translation)
  disp = p.cart_coords - s.cart_coords
  bound = np.sqrt(np.mean(np.sum(disp ** 2, 1))) / (s.volume / len(s)) ** (1 / 3)
  assert r[1] <= bound + 1e-6
  with pytest.raises(ValueError, match="equal lengths"):
    _metrics.rmsd([s], [s, s])
  summary = _metrics.evaluate_structures([s, p], reference=[s], relaxed=[s, s])
  assert summary["rmsd_match_rate"] == 1.0 and summary["novel"] == 0.0
