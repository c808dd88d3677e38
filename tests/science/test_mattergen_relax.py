"""Tests of the torch-free relaxation proxy (periodic shifted-force LJ + FIRE)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("ase")

from tomioka_jax.science.mattergen import _crystal, _relax  # noqa: E402


def _batch(lattices, fracs, symbols, n):
  b = len(lattices)
  frac = np.zeros((b, n, 3))
  types = np.zeros((b, n), np.int32)
  mask = np.zeros((b, n), bool)
  for i, (f, s) in enumerate(zip(fracs, symbols)):
    frac[i, :len(s)] = f
    types[i, :len(s)] = [_crystal.element_index(x) for x in s]
    mask[i, :len(s)] = True
  return _crystal.Crystals(np.asarray(lattices), frac, types, mask)


def test_pair_energy_equals_analytic_dimer_and_minimum_at_radius_sum():
  pot = _relax.covalent_radius_potential()
  r_na, r_cl = (float(pot.radius[_crystal.element_index(x)]) for x in ("Na", "Cl"))
  s = (r_na + r_cl) / 2 ** (1 / 6)
  rc = _relax.LJ_CUTOFF_FACTOR * s
  box = 3 * rc  # no image inside the cutoff

  def phi(r):
    v = lambda x: 4 * ((s / x) ** 12 - (s / x) ** 6)
    dv = lambda x: 4 * (-12 * s ** 12 / x ** 13 + 6 * s ** 6 / x ** 7)
    return v(r) - v(rc) - (r - rc) * dv(rc) if r < rc else 0.0

  rs = np.array([0.9, 1.0, 1.2, 1.9]) * (r_na + r_cl)
  c = _batch([np.eye(3) * box] * 4, [[[0, 0, 0], [r / box, 0, 0]] for r in rs],
             [["Na", "Cl"]] * 4, 3)
  e = np.asarray(_relax.pair_energy(c, pot, num_images=1))
  np.testing.assert_allclose(e, [phi(r) for r in rs], rtol=1e-5, atol=1e-5)
  # phi'(r) = 0 at the radius sum up to the shift's constant slope -v'(rc)
  f, _ = _relax.pair_forces_and_stress(c, pot, num_images=1)
  slope_shift = -4 * (-12 * s ** 12 / rc ** 13 + 6 * s ** 6 / rc ** 7)
  np.testing.assert_allclose(np.asarray(f)[1, 1, 0], -slope_shift, rtol=1e-3, atol=1e-5)


def test_forces_and_stress_match_finite_differences():
  rng = np.random.default_rng(1)
  lat = np.array([[3.4, 0.2, 0.1], [0.2, 3.7, -0.3], [0.1, -0.3, 4.1]])
  frac = rng.uniform(size=(3, 3))
  c = _batch([lat], [frac], [["Mg", "O", "O"]], 4)
  pot = _relax.covalent_radius_potential()
  with jax.enable_x64(True):
    c64 = _crystal.Crystals(*(jnp.asarray(x) for x in c))
    pot64 = _relax.PairPotential(jnp.asarray(pot.radius, jnp.float64), 1.0)
    k = _relax.pair_potential_images(c, pot) + 1

    def energy(lattice, fr):
      return float(_relax._energy_one(jnp.asarray(lattice), jnp.asarray(fr), c64.atom_types[0],
                                      c64.mask[0], pot64, _relax._images(k).astype(jnp.float64)))

    f, stress = _relax.pair_forces_and_stress(c64, pot64, num_images=k)
    f, stress = np.asarray(f)[0], np.asarray(stress)[0]
    h = 1e-5
    x = frac @ lat
    for i in range(3):
      for a in range(3):
        xp, xm = x.copy(), x.copy()
        xp[i, a] += h
        xm[i, a] -= h
        fd = -(energy(lat, np.vstack([xp @ np.linalg.inv(lat), np.zeros((1, 3))]))
               - energy(lat, np.vstack([xm @ np.linalg.inv(lat), np.zeros((1, 3))]))) / (2 * h)
        assert f[i, a] == pytest.approx(fd, rel=1e-5, abs=1e-7)
    fpad = np.vstack([frac, np.zeros((1, 3))])
    vol = np.linalg.det(lat)
    for a in range(3):
      for b in range(3):
        e = np.zeros((3, 3))
        e[a, b] = h
        fd = (energy(lat @ (np.eye(3) + e), fpad) - energy(lat @ (np.eye(3) - e), fpad)) / (2 * h)
        assert stress[a, b] == pytest.approx(fd / vol, rel=1e-5, abs=1e-7)
  assert np.all(np.asarray(f)[3] == 0)  # padding slot


def test_relaxation_lowers_energy_small_forces_and_bad_input():
  rng = np.random.default_rng(0)
  # rock salt NaCl squeezed by 10 % and rattled; a 2-atom cell with atoms too close
  a = 5.64 * 0.9
  fcc = np.array([[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]) * a
  rs = _batch([fcc, np.eye(3) * 3.0],
              [np.array([[0, 0, 0], [0.5, 0.5, 0.5]]) + rng.normal(0, 0.02, (2, 3)),
               [[0.1, 0.1, 0.1], [0.3, 0.2, 0.15]]],
              [["Na", "Cl"], ["Cu", "Cu"]], 3)
  rs = rs._replace(frac_coords=np.mod(rs.frac_coords, 1.0) * rs.mask[..., None])
  res = _relax.relax_crystals(rs, fmax=0.01, max_steps=2000)
  e0, e1 = np.asarray(res.initial_energy), np.asarray(res.energy)
  assert np.all(e1 < e0 - 1e-3)
  assert bool(np.all(res.converged)) and float(np.max(res.max_force)) < 0.01
  f, stress = _relax.pair_forces_and_stress(res.crystals, num_images=4)
  assert float(jnp.max(jnp.abs(f))) < 0.02
  vol = np.abs(np.linalg.det(np.asarray(res.crystals.lattice)))
  n = np.asarray(rs.mask).sum(1)
  assert np.max(np.abs(np.asarray(stress)) * (vol / n)[:, None, None]) < 0.05
  _crystal.check_crystals(res.crystals)
  # fixed-cell relaxation leaves the lattice unchanged
  fixed = _relax.relax_crystals(rs, relax_cell=False, max_steps=50, fmax=0.05)
  np.testing.assert_allclose(np.asarray(fixed.crystals.lattice), rs.lattice, atol=1e-5)
  with pytest.raises(ValueError, match="fmax"):
    _relax.relax_crystals(rs, fmax=0.0)
  with pytest.raises(ValueError, match="max_steps"):
    _relax.relax_crystals(rs, max_steps=0)
  bad = rs._replace(lattice=np.stack([-fcc, np.eye(3)]))
  with pytest.raises(ValueError, match="positive-definite"):
    _relax.relax_crystals(bad)


def test_chgnet_missing_raises_clear_import_error():
  try:
    import chgnet  # noqa: F401
    pytest.skip("chgnet is installed")
  except ImportError:
    pass
  with pytest.raises(ImportError, match="torch"):
    _relax.chgnet_relax([])
