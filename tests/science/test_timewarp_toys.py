"""Tests of science/timewarp/_toys.py: the energies against slow references, the dimer's exact
bond-length density, and BAOAB Langevin sampling a harmonic well's Boltzmann variance kT/k."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from tomioka_jax.science.timewarp import _toys as toys


def test_lennard_jones_energy_matches_slow_reference():
  system = toys.lennard_jones_cluster(5, sigma=0.34, epsilon=1.0, confinement=5.0)
  x = np.asarray(system.positions, np.float64) + 0.02 * np.random.default_rng(0).normal(
      size=(5, 3))
  want = 0.0
  for i in range(5):
    for j in range(i + 1, 5):
      r = np.linalg.norm(x[i] - x[j])
      want += 4.0 * ((0.34 / r) ** 12 - (0.34 / r) ** 6)
  want += 0.5 * 5.0 * np.sum(x * x)
  np.testing.assert_allclose(float(system.energy(x.astype(np.float32))), want, rtol=1e-4)
  # LJ13 starts at the icosahedron: nearest-neighbour pairs at 2^(1/6) sigma, bound.
  lj13 = toys.lennard_jones_cluster()
  assert float(lj13.energy(lj13.positions)) < -30.0
  assert lj13.energy(np.stack([lj13.positions] * 3)).shape == (3,)


def test_dimer_energy_and_exact_density():
  system = toys.double_well_dimer(tilt=0.5)
  x = np.array([[0.1, 0.2, 0.0], [0.1, 0.2, 0.62]], np.float32)
  u = (0.62 - 0.5) / 0.15
  com = np.array([0.1, 0.2, 0.31])
  want = 5.0 * (u * u - 1) ** 2 + 0.5 * u + 0.5 * 50.0 * com @ com
  np.testing.assert_allclose(float(system.energy(x)), want, rtol=1e-5)
  # Bin masses: a fine Riemann sum of d^2 exp(-U(d)/kT) over (0, 2].
  edges = np.linspace(0.2, 0.9, 8)
  d = np.linspace(1e-6, 2.0, 400_001)
  uu = (d - 0.5) / 0.15
  dens = d ** 2 * np.exp(-(5.0 * (uu ** 2 - 1) ** 2 + 0.5 * uu) / system.kT)
  dens /= dens.sum()
  want = [dens[(d >= lo) & (d < hi)].sum() for lo, hi in zip(edges[:-1], edges[1:])]
  np.testing.assert_allclose(toys.dimer_distance_density(system, edges), want, atol=1e-5)


def test_baoab_samples_harmonic_boltzmann_variance():
  k, kT = 100.0, 2.5
  system = toys.harmonic_well(2, stiffness=k, kT=kT)
  traj = toys.simulate_langevin(system.energy, np.zeros((32, 2, 3), np.float32),
                                jax.random.key(0), masses=system.masses, kT=kT, friction=5.0,
                                timestep=0.02, num_frames=200, spacing=5, burn_in=100)
  assert traj.shape == (32, 200, 2, 3)
  var = float(np.var(np.asarray(traj)))
  # 32 * 200 * 6 draws with correlation time ~ a few frames: a few % error.
  assert abs(var / (kT / k) - 1.0) < 0.06, var / (kT / k)


def test_bad_input_raises():
  with pytest.raises(ValueError, match="num_atoms"):
    toys.lennard_jones_cluster(1)
  with pytest.raises(ValueError, match="kT"):
    toys.double_well_dimer(kT=0.0)
  system = toys.harmonic_well(2)
  with pytest.raises(ValueError, match="shape"):
    system.energy(np.zeros((3, 3)))
  kw = dict(masses=system.masses, kT=1.0, friction=1.0, timestep=0.01, num_frames=2)
  with pytest.raises(ValueError, match="timestep"):
    toys.simulate_langevin(system.energy, np.zeros((2, 3)), jax.random.key(0),
                           **dict(kw, timestep=-0.1))
  with pytest.raises(ValueError, match="finite"):
    toys.simulate_langevin(system.energy, np.full((2, 3), np.nan), jax.random.key(0), **kw)
  with pytest.raises(ValueError, match="masses"):
    toys.simulate_langevin(system.energy, np.zeros((2, 3)), jax.random.key(0),
                           **dict(kw, masses=np.ones(3)))
  assert math.isfinite(float(system.energy(np.zeros((2, 3)))))
