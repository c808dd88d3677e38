"""Tests of the crystal batch conventions and their checks (science/mattergen/_crystal.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tomioka_jax.science.mattergen import _crystal as cr


def _rock_salt() -> cr.Crystals:
  a = 5.64
  lattice = 0.5 * a * np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
  frac = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.0, 0.0, 0.0]])
  types = np.array([cr.element_index("Na"), cr.element_index("Cl"), 0])
  mask = np.array([True, True, False])
  return cr.Crystals(jnp.asarray(lattice[None]), jnp.asarray(frac[None]),
                     jnp.asarray(types[None]), jnp.asarray(mask[None]))


def test_element_indices_are_atomic_numbers_minus_one():
  assert cr.element_index("H") == 0
  assert cr.element_index("Na") == 10
  assert cr.element_index("Fe") == 25
  assert cr.ELEMENTS[cr.MASK_TYPE - 1] == "Fm"
  assert cr.NUM_TYPE_STATES == 101
  with pytest.raises(ValueError, match="unknown element 'Xx'"):
    cr.element_index("Xx")


def test_a_valid_crystal_passes_and_counts_its_atoms():
  c = cr.check_crystals(_rock_salt())
  assert int(c.num_atoms[0]) == 2
  # Cartesian Cl position: (0.5, 0.5, 0.5) @ lattice = a/2 (1, 1, 1).
  cart = c.frac_coords[0, 1] @ c.lattice[0]
  np.testing.assert_allclose(cart, 2.82 * np.ones(3), rtol=1e-6)


def test_bad_crystals_raise_naming_the_field():
  c = _rock_salt()
  with pytest.raises(ValueError, match="lattice of crystal 0 is not a positive-definite"):
    cr.check_crystals(c._replace(lattice=c.lattice.at[0, 2].set(c.lattice[0, 1])))
  with pytest.raises(ValueError, match="lattice of crystal 0"):  # left-handed: det < 0
    cr.check_crystals(c._replace(lattice=-c.lattice))
  with pytest.raises(ValueError, match=r"frac_coords must be finite and in \[0, 1\)"):
    cr.check_crystals(c._replace(frac_coords=c.frac_coords.at[0, 1, 0].set(1.0)))
  with pytest.raises(ValueError, match="frac_coords"):
    cr.check_crystals(c._replace(frac_coords=c.frac_coords.at[0, 0, 2].set(jnp.nan)))
  with pytest.raises(ValueError, match="atom_types must be in 0..99"):
    cr.check_crystals(c._replace(atom_types=c.atom_types.at[0, 0].set(cr.MASK_TYPE)))
  cr.check_crystals(c._replace(atom_types=c.atom_types.at[0, 0].set(cr.MASK_TYPE)),
                    allow_mask_type=True)
  with pytest.raises(ValueError, match="mask: crystal 0 has no atoms"):
    cr.check_crystals(c._replace(mask=jnp.zeros_like(c.mask)))
  with pytest.raises(ValueError, match=r"atom_types must have shape \(B, N\)"):
    cr.check_crystals(c._replace(atom_types=c.atom_types[:, :2]))
  # Padding slots are not checked: an out-of-range coordinate there is fine.
  cr.check_crystals(c._replace(frac_coords=c.frac_coords.at[0, 2, 0].set(7.0)))


def test_under_jit_only_shapes_are_checked():
  c = _rock_salt()
  out = jax.jit(lambda c: cr.check_crystals(c).lattice.sum())(c._replace(lattice=-c.lattice))
  assert np.isfinite(float(out))


def test_right_handed_keeps_every_position_and_only_flips_left_handed_cells():
  c = _rock_salt()
  rng = np.random.default_rng(0)
  lat = np.stack([np.asarray(c.lattice[0]), -np.asarray(c.lattice[0]),
                  np.diag([3.0, 4.0, -5.0]) + 0.1 * rng.normal(size=(3, 3))])
  frac = np.stack([np.asarray(c.frac_coords[0])] * 3)
  frac[1:, :2] = rng.uniform(0, 1, (2, 2, 3))
  frac[2, 0] = [0.0, 0.25, 0.0]  # zero coordinates must stay in [0, 1) after -f mod 1
  batch = cr.Crystals(jnp.asarray(lat, jnp.float32), jnp.asarray(frac, jnp.float32),
                      jnp.repeat(c.atom_types, 3, 0), jnp.repeat(c.mask, 3, 0))
  out = jax.jit(cr.right_handed)(batch)
  det = np.linalg.det(np.asarray(out.lattice, np.float64))
  assert np.all(det > 0)
  np.testing.assert_array_equal(np.asarray(out.lattice[0]), lat[0].astype(np.float32))
  np.testing.assert_array_equal(np.asarray(out.frac_coords[0]), np.asarray(batch.frac_coords[0]))
  cr.check_crystals(out)
  # The same crystal: every atom's Cartesian position is a lattice translate of the old one.
  for i in (1, 2):
    old = frac[i, :2] @ lat[i]
    new = np.asarray(out.frac_coords[i, :2], np.float64) @ np.asarray(out.lattice[i], np.float64)
    shift = (new - old) @ np.linalg.inv(lat[i])
    np.testing.assert_allclose(shift, np.round(shift), atol=1e-5)
  np.testing.assert_array_equal(np.asarray(out.frac_coords[:, 2]), 0.0)
