"""Tests of the MatterGen structure converters, lattice canonicalisation and offline set."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pymatgen")
pytest.importorskip("ase")

from pymatgen.analysis.structure_matcher import StructureMatcher  # noqa: E402
from pymatgen.core import Lattice, Structure  # noqa: E402

from tomioka_jax.science.mattergen import _crystal, _data  # noqa: E402


def _nacl() -> Structure:
  return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"],
                                   [[0, 0, 0], [0.5, 0.5, 0.5]])


def _triclinic() -> Structure:
  lat = Lattice.from_parameters(3.1, 4.2, 5.3, 75.0, 83.0, 101.0)
  return Structure(lat, ["Fe", "O", "O"], [[0.1, 0.2, 0.3], [0.6, 0.1, 0.9], [0.35, 0.7, 0.45]])


def test_structure_round_trip_matches_and_wraps():
  s = _triclinic()
  shifted = Structure(s.lattice, s.species, s.frac_coords + np.array([1.0, -2.0, 3.0]))
  c = _data.structures_to_crystals([shifted, _nacl().get_primitive_structure()], max_atoms=4)
  f = np.asarray(c.frac_coords)[np.asarray(c.mask)]
  assert f.min() >= 0.0 and f.max() < 1.0
  assert np.asarray(c.mask).sum(axis=1).tolist() == [3, 2]
  assert np.asarray(c.atom_types)[0, 0] == _crystal.element_index("Fe")
  back = _data.crystals_to_structures(c)
  sm = StructureMatcher()
  assert sm.fit(back[0], s) and sm.fit(back[1], _nacl())
  np.testing.assert_allclose(back[0].frac_coords, s.frac_coords, atol=1e-5)


def test_ase_round_trip():
  from ase.build import bulk
  atoms = [bulk("Cu", "fcc", a=3.6), bulk("NaCl", "rocksalt", a=5.64)]
  c = _data.atoms_to_crystals(atoms)
  back = _data.crystals_to_atoms(c)
  for a, b in zip(atoms, back):
    assert a.get_chemical_symbols() == b.get_chemical_symbols()
    np.testing.assert_allclose(a.cell[:], b.cell[:], atol=1e-5)
    np.testing.assert_allclose(a.get_scaled_positions(), b.get_scaled_positions(), atol=1e-5)


def test_polar_decomposition_is_symmetric_with_same_gram():
  rng = np.random.default_rng(0)
  lat = rng.normal(size=(5, 3, 3)) + 3 * np.eye(3)
  lat[np.linalg.det(lat) < 0] *= -1
  s, r = _data.polar_symmetric_lattice(lat)
  np.testing.assert_allclose(s, np.swapaxes(s, 1, 2), atol=1e-12)
  assert np.all(np.linalg.eigvalsh(s) > 0)
  np.testing.assert_allclose(s @ r, lat, atol=1e-12)
  np.testing.assert_allclose(r @ np.swapaxes(r, 1, 2), np.broadcast_to(np.eye(3), r.shape),
                             atol=1e-12)
  np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)
  np.testing.assert_allclose(s @ np.swapaxes(s, 1, 2), lat @ np.swapaxes(lat, 1, 2), atol=1e-10)


def test_canonical_structure_same_crystal_symmetric_niggli():
  s = _triclinic()
  # a skewed but equivalent cell: a' = a, b' = b + 2a, c' = c - b
  m = np.array([[1, 0, 0], [2, 1, 0], [0, -1, 1]])
  skew = s.copy()
  skew.make_supercell(m)
  c = _data.canonical_structure(skew)
  lat = c.lattice.matrix
  np.testing.assert_allclose(lat, lat.T, atol=1e-10)
  assert np.linalg.det(lat) > 0
  niggli = s.lattice.get_niggli_reduced_lattice()
  np.testing.assert_allclose(sorted(c.lattice.abc), sorted(niggli.abc), atol=1e-6)
  assert StructureMatcher().fit(c, s)
  np.testing.assert_allclose(c.volume, s.volume, rtol=1e-10)
  assert c.frac_coords.min() >= 0 and c.frac_coords.max() < 1


def test_bad_input_errors():
  with pytest.raises(ValueError, match="unknown element"):
    _crystal.element_index("Xx")
  with pytest.raises(ValueError, match="max_atoms"):
    _data.structures_to_crystals([_triclinic()], max_atoms=2)
  with pytest.raises(ValueError, match="non-empty"):
    _data.structures_to_crystals([])
  with pytest.raises(ValueError, match="det"):
    _data.polar_symmetric_lattice(-np.eye(3))
  good = _data.structures_to_crystals([_nacl()])
  flat = good._replace(lattice=np.zeros((1, 3, 3), np.float32))
  with pytest.raises(ValueError, match="positive-definite"):
    _data.crystals_to_structures(flat)
  out = good._replace(frac_coords=good.frac_coords + 1.0)
  with pytest.raises(ValueError, match=r"\[0, 1\)"):
    _data.crystals_to_structures(out)
  masked = good._replace(atom_types=np.full_like(good.atom_types, _crystal.MASK_TYPE))
  with pytest.raises(ValueError, match="atom_types"):
    _data.crystals_to_atoms(masked)
  disordered = Structure(Lattice.cubic(3.0), [{"Fe": 0.5, "Co": 0.5}], [[0, 0, 0]])
  with pytest.raises(ValueError, match="disordered"):
    _data.structures_to_crystals([disordered])
  with pytest.raises(ValueError, match="num_strains"):
    _data.build_training_set(num_strains=-1, cache=False)


def test_substitution_partners_are_same_group_neighbours():
  assert _data._substitution_partners("Na") == ["K", "Li"]
  assert "S" in _data._substitution_partners("Se") and "Te" in _data._substitution_partners("Se")
  assert _data._substitution_partners("Ne") == []  # noble gas excluded
  assert not _data.allowed_element("Tc") and _data.allowed_element("Bi")
  assert not _data.allowed_element("U")


def test_small_training_set_build_cache_and_summary(tmp_path):
  kw = dict(max_atoms=4, num_strains=1, strain=0.02, seed=3, max_structures=12,
            cache_dir=tmp_path)
  d = _data.build_training_set(**kw)
  assert len(list(tmp_path.iterdir())) == 1
  d2 = _data.build_training_set(**kw)
  for a, b in zip(d.crystals, d2.crystals):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  c = d.crystals
  _crystal.check_crystals(c)
  assert np.asarray(c.mask).sum(axis=1).max() <= 4
  lat = np.asarray(c.lattice)
  np.testing.assert_allclose(lat, np.swapaxes(lat, 1, 2), atol=1e-5)
  base = d.is_base
  assert base.sum() * 2 == len(d) and base[0] and not base[1]
  assert {"aflow", "substitution"} <= set(d.source.tolist())
  # strained copies: same species, lattice within a few percent
  np.testing.assert_array_equal(np.asarray(c.atom_types)[0], np.asarray(c.atom_types)[1])
  ratio = np.linalg.det(lat[1]) / np.linalg.det(lat[0])
  assert 0.85 < ratio < 1.15 and not np.allclose(lat[0], lat[1])
  # base structures are pairwise distinct under the matcher
  structures = d.base_structures()
  sm = StructureMatcher(ltol=0.2, stol=0.3, angle_tol=5)
  for i in range(len(structures)):
    for j in range(i):
      assert not sm.fit(structures[i], structures[j])
  # labels
  np.testing.assert_allclose(d.density, _data.crystal_density(c), rtol=2e-3)
  np.testing.assert_allclose(d.density[0], structures[0].density, rtol=1e-4)
  summ = _data.dataset_summary(d)
  assert summ["num_base"] == base.sum() and summ["num_structures"] == len(d)
  assert sum(summ["atoms_per_cell_base"].values()) == summ["num_base"]
  assert set(summ["elements"]) == {e.symbol for s in structures for e in s.composition}


def test_random_and_perturbation_baselines():
  import jax
  mask = np.array([[True] * 4 + [False] * 4, [True] * 8])
  p = np.zeros(_crystal.NUM_ELEMENTS)
  p[[_crystal.element_index("Na"), _crystal.element_index("Cl")]] = [1.0, 3.0]
  r = _data.random_crystals(jax.random.key(0), mask, p, lattice_noise=0.0)
  _crystal.check_crystals(r)
  vol = np.linalg.det(np.asarray(r.lattice))
  np.testing.assert_allclose(vol, mask.sum(1) / 0.0577, rtol=1e-4)
  t = np.asarray(r.atom_types)
  assert set(t[mask].tolist()) <= {10, 16} and np.all(t[~mask] == 0)
  big = _data.random_crystals(jax.random.key(1), np.ones((200, 8), bool), p)
  frac_cl = np.mean(np.asarray(big.atom_types) == 16)
  assert abs(frac_cl - 0.75) < 0.03  # 1600 draws: sd 0.011
  with pytest.raises(ValueError, match="type_probs"):
    _data.random_crystals(jax.random.key(0), mask, p[:5])
  base = _data.structures_to_crystals([_triclinic()] * 400)
  pert = _data.perturb_crystals(jax.random.key(2), base, coord_noise=0.1, strain=0.0)
  np.testing.assert_allclose(np.asarray(pert.lattice), np.asarray(base.lattice), atol=1e-6)
  d = (np.asarray(pert.frac_coords) - np.asarray(base.frac_coords) + 0.5) % 1.0 - 0.5
  cart = np.einsum("bni,bij->bnj", d, np.asarray(base.lattice, np.float64))
  assert abs(cart.std() - 0.1) < 0.005  # 3600 draws
  with pytest.raises(ValueError, match="strain"):
    _data.perturb_crystals(jax.random.key(0), base, strain=0.7)
