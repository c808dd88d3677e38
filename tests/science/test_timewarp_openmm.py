"""Tests of science/timewarp/_openmm.py: alanine dipeptide, its energies in NumPy and JAX, MD at
310 K with the resumable chunk cache, and training pairs."""

from __future__ import annotations

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

openmm = pytest.importorskip("openmm")
pytest.importorskip("openmmtools")

from tomioka_jax.science.timewarp import _openmm as om  # noqa: E402


@pytest.fixture(scope="module")
def implicit():
  return om.alanine_dipeptide("implicit")


@pytest.fixture(scope="module")
def evaluator(implicit):
  return om.EnergyEvaluator(implicit)


def test_alanine_dipeptide_topology(implicit):
  md = pytest.importorskip("mdtraj")
  assert implicit.num_atoms == 22 and implicit.positions.shape == (22, 3)
  assert implicit.elements.count("H") == 12 and len(implicit.heavy_atoms) == 10
  # phi / psi atoms are mdtraj's.
  spec = importlib.util.find_spec("openmmtools")
  pdb = (pathlib.Path(list(spec.submodule_search_locations)[0]) / "data" /
         "alanine-dipeptide-gbsa" / "alanine-dipeptide.pdb")
  top = md.Topology.from_openmm(openmm.app.PDBFile(str(pdb)).topology)
  traj = md.Trajectory(implicit.positions[None].astype(np.float32), top)
  assert tuple(md.compute_phi(traj)[0][0]) == implicit.phi_atoms == (4, 6, 8, 14)
  assert tuple(md.compute_psi(traj)[0][0]) == implicit.psi_atoms == (6, 8, 14, 16)
  # omega: ACE's CH3 stands in for the missing CA (mdtraj finds none); the bond is trans.
  assert implicit.omega_atoms == ((1, 4, 6, 8),)
  assert abs(md.compute_dihedrals(traj, [implicit.omega_atoms[0]])[0, 0]) > 2.8
  # No constraints (the reference's MD); masses in amu.
  assert openmm.XmlSerializer.deserialize(implicit.system_xml).getNumConstraints() == 0
  assert implicit.masses[implicit.elements.index("C")] == pytest.approx(12.01, abs=0.01)
  # Methyl hydrogens share a type; ALA's CA and the caps' CH3 do not.
  t = implicit.atom_types
  assert t[0] == t[2] == t[3] and t[11] == t[12] == t[13]
  assert len({t[1], t[8], t[10], t[18]}) == 4 and implicit.num_atom_types == t.max() + 1


def test_energy_of_the_minimized_structure_matches_openmm(implicit, evaluator):
  x, e = om.minimize_energy(implicit)
  assert float(evaluator(x)) == pytest.approx(e, abs=1e-6)
  # An independent Context of openmm's own, and the translation invariance of U.
  ctx = openmm.Context(om.openmm_system(implicit), openmm.VerletIntegrator(0.001),
                       openmm.Platform.getPlatformByName("Reference"))
  ctx.setPositions(x)
  own = ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(
      openmm.unit.kilojoule_per_mole)
  batch = np.stack([x, x + 0.3, x + 0.01 * np.random.default_rng(0).normal(size=x.shape)])
  energies = evaluator(batch)
  assert energies.shape == (3,)
  np.testing.assert_allclose(energies[:2], own, atol=1e-6)
  assert energies[2] > own  # a perturbed minimum
  # The unminimized start is higher; the implicit solvent lowers the energy below vacuum's.
  assert float(evaluator(implicit.positions)) > e
  vacuum = om.EnergyEvaluator(om.alanine_dipeptide("vacuum"))
  assert float(vacuum(x)) > e


def test_amber_ff96_matches_openmmtools():
  from openmmtools import testsystems  # pylint: disable=g-import-not-at-top
  ref = testsystems.AlanineDipeptideImplicit(constraints=None)
  ours = om.alanine_dipeptide("implicit", force_field="amber-ff96")
  ctx = openmm.Context(ref.system, openmm.VerletIntegrator(0.001),
                       openmm.Platform.getPlatformByName("Reference"))
  x = ours.positions + 0.005 * np.random.default_rng(1).normal(size=(22, 3))
  ctx.setPositions(x)
  want = ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(
      openmm.unit.kilojoule_per_mole)
  assert float(om.EnergyEvaluator(ours)(x)) == pytest.approx(want, abs=1e-6)


def test_jax_energy_fn_under_jit_vmap_and_scan(implicit, evaluator):
  energy_fn = om.jax_energy_fn(evaluator)
  rng = np.random.default_rng(2)
  x = (implicit.positions[None, None] + 0.003 * rng.normal(size=(2, 3, 22, 3))).astype(
      np.float32)
  want = evaluator(x.astype(np.float64))
  got = jax.jit(jax.vmap(energy_fn))(jnp.asarray(x))
  assert got.shape == (2, 3) and got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(jax.vmap(jax.vmap(energy_fn))(x)), want, rtol=1e-5)

  def body(carry, xi):
    return carry + energy_fn(xi), energy_fn(xi[0])

  total, firsts = jax.jit(lambda xs: jax.lax.scan(body, jnp.zeros(3), xs))(jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(total), want.sum(0), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(firsts), want[:, 0], rtol=1e-5)
  # A non-finite proposal gets +inf (so Metropolis-Hastings rejects it); a wrong atom count
  # fails at trace time.
  bad = x[0].copy()
  bad[1, 4, 2] = np.nan
  e = np.asarray(jax.jit(energy_fn)(bad))
  assert np.isinf(e[1]) and e[1] > 0 and np.all(np.isfinite(e[[0, 2]]))
  with pytest.raises(ValueError, match="topology has 22 atoms"):
    jax.jit(energy_fn)(jnp.zeros((4, 21, 3)))


def test_md_temperature_and_resumable_cache(tmp_path):
  vacuum = om.alanine_dipeptide("vacuum")
  # A stronger friction than the reference's 0.3 / ps, so 50 ps average over many relaxation
  # times of the kinetic energy (the integrator and its temperature are the same).
  traj = om.simulate_md(vacuum, 400, spacing=250, friction=5.0, burn_in_steps=4000, seed=3)
  assert traj.positions.shape == (400, 22, 3) and traj.complete
  assert traj.frame_time_ps == pytest.approx(0.125)
  assert traj.kinetic_temperature.mean() == pytest.approx(310.0, rel=0.04)
  assert vacuum.degrees_of_freedom == 3 * 22 - 3
  # The cache: 3 chunks of 20 frames; a second call reads them; with the last chunk deleted
  # (an interrupted run) the rerun continues from chunk 2's end state and reproduces it.
  kw = dict(spacing=50, burn_in_steps=200, seed=4, cache_dir=tmp_path, chunk_frames=20)
  first = om.simulate_md(vacuum, 60, **kw)
  folder, = tmp_path.iterdir()
  chunks = sorted(folder.glob("chunk_*.npz"))
  assert len(chunks) == 3
  again = om.simulate_md(vacuum, 60, **kw)
  np.testing.assert_array_equal(again.positions, first.positions)
  assert again.wall_seconds == pytest.approx(first.wall_seconds)
  chunks[-1].unlink()
  resumed = om.simulate_md(vacuum, 60, **kw)
  np.testing.assert_allclose(resumed.positions, first.positions, atol=1e-5)
  longer = om.simulate_md(vacuum, 70, **kw)
  np.testing.assert_array_equal(longer.positions[:60], resumed.positions)
  assert longer.positions.shape[0] == 70
  # A time budget stops at the first chunk boundary past it: the 4 cached chunks and 1 new one.
  part = om.simulate_md(vacuum, 200, **{**kw, "time_budget_s": 1e-9})
  assert not part.complete and part.num_frames == 100
  np.testing.assert_array_equal(part.positions[:70], longer.positions)


def test_training_pairs(implicit):
  traj = np.arange(5 * 22 * 3, dtype=np.float32).reshape(5, 22, 3)
  x0, x1 = om.training_pairs(traj, 2, implicit)
  assert x0.shape == x1.shape == (3, 22, 3)
  np.testing.assert_array_equal(x0, traj[:3])
  np.testing.assert_array_equal(x1, traj[2:])
  two = np.stack([traj, traj + 1])
  y0, y1 = om.training_pairs(two, 4)
  np.testing.assert_array_equal(y0, two[:, :1].reshape(2, 22, 3))
  np.testing.assert_array_equal(y1, two[:, 4:].reshape(2, 22, 3))


def test_bad_input(implicit, evaluator):
  traj = np.zeros((5, 22, 3))
  with pytest.raises(ValueError, match="lag must be smaller than the trajectory length T=5, got "
                                       "lag=5"):
    om.training_pairs(traj, 5)
  with pytest.raises(ValueError, match="lag must be a positive integer"):
    om.training_pairs(traj, 0)
  with pytest.raises(ValueError, match="trajectory has 21 atoms .* the topology has 22"):
    om.training_pairs(np.zeros((5, 21, 3)), 1, implicit)
  nan = traj.copy()
  nan[3, 2, 1] = np.inf
  with pytest.raises(ValueError, match="trajectory must have finite coordinates, got 1"):
    om.training_pairs(nan, 1)
  with pytest.raises(ValueError, match="positions has 23 atoms"):
    evaluator(np.zeros((2, 23, 3)))
  with pytest.raises(ValueError, match="positions must have finite coordinates"):
    evaluator(nan)
  with pytest.raises(ValueError, match="solvent must be one of"):
    om.alanine_dipeptide("explicit")
  with pytest.raises(ValueError, match="force_field must be one of"):
    om.alanine_dipeptide(force_field="charmm36")
  with pytest.raises(ValueError, match="platform must be one of"):
    om.EnergyEvaluator(implicit, platform="CUDA")
  with pytest.raises(ValueError, match="positions has 21 atoms"):
    om.simulate_md(implicit, 10, positions=np.zeros((21, 3)))
  with pytest.raises(ValueError, match="spacing must be a positive integer, got spacing=0"):
    om.simulate_md(implicit, 10, spacing=0)
  with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
    om.simulate_md(implicit, 10, temperature=-1.0)


def test_forces_are_minus_the_gradient_of_the_energy(implicit, evaluator):
  rng = np.random.default_rng(3)
  x = implicit.positions[None] + 0.002 * rng.normal(size=(3, 22, 3))
  e, f = evaluator.energies_and_forces(x)
  np.testing.assert_allclose(e, evaluator(x), rtol=1e-10)
  assert f.shape == (3, 22, 3)
  # Central differences of U along a random direction equal -F . d.
  d = rng.normal(size=(22, 3))
  h = 1e-6
  fd = (evaluator(x[0] + h * d) - evaluator(x[0] - h * d)) / (2 * h)
  assert float(fd) == pytest.approx(-np.sum(f[0] * d), rel=1e-4)
  # The differentiable JAX energy: its gradient is -F, under jit and vmap.
  energy_fn = om.jax_energy_fn(evaluator, differentiable=True)
  xj = jnp.asarray(x, jnp.float64) if jax.config.jax_enable_x64 else jnp.asarray(x, jnp.float32)
  g = jax.jit(jax.vmap(jax.grad(energy_fn)))(xj)
  np.testing.assert_allclose(np.asarray(g), -f, rtol=2e-3, atol=2e-2)
  np.testing.assert_allclose(np.asarray(energy_fn(xj)), e, rtol=1e-5)
  # A conformation OpenMM cannot evaluate: +inf energy, zero gradient (no NaN).
  bad = np.array(xj).copy()
  bad[1, 0, 0] = np.nan
  e_bad, f_bad = evaluator.energies_and_forces(bad)
  assert np.isinf(e_bad[1]) and np.all(f_bad[1] == 0) and np.all(np.isfinite(e_bad[[0, 2]]))
  g_bad = jax.grad(lambda p: jnp.sum(jnp.where(jnp.isfinite(energy_fn(p)), energy_fn(p), 0.0)))(
      jnp.asarray(bad))
  assert np.all(np.isfinite(np.asarray(g_bad[1]))) and np.all(np.asarray(g_bad[1]) == 0)


def test_rigid_align_undoes_a_rigid_motion_and_aligned_pairs(implicit):
  rng = np.random.default_rng(4)
  x = implicit.positions
  q = rng.normal(size=4)
  a, b, c, d = q / np.linalg.norm(q)
  rot = np.array([[a*a + b*b - c*c - d*d, 2*(b*c - a*d), 2*(b*d + a*c)],
                  [2*(b*c + a*d), a*a - b*b + c*c - d*d, 2*(c*d - a*b)],
                  [2*(b*d - a*c), 2*(c*d + a*b), a*a - b*b - c*c + d*d]])
  y = x @ rot.T + np.array([0.3, -1.0, 2.0])
  np.testing.assert_allclose(om.rigid_align(y, x), x, atol=1e-10)
  # With internal motion: the aligned y has the same internal geometry (distances), and no
  # rotation of it about its centre fits x better (a local minimum of the RMSD).
  y2 = y + 0.02 * rng.normal(size=y.shape)
  al = om.rigid_align(y2, x)
  dist = lambda p: np.linalg.norm(p[:, None] - p[None], axis=-1)  # noqa: E731
  np.testing.assert_allclose(dist(al), dist(y2), atol=1e-10)
  rmsd = np.sum((al - x) ** 2)
  cen = al.mean(0)
  for axis in np.eye(3):
    for t in (-0.01, 0.01):
      k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
      r = np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k
      assert np.sum(((al - cen) @ r.T + cen - x) ** 2) > rmsd
  # A reflection never fits: the mirror image is aligned by a proper rotation only.
  mirror = x * np.array([-1.0, 1.0, 1.0])
  assert np.sum((om.rigid_align(mirror, x) - x) ** 2) > 1e-3
  # training_pairs(align=True) aligns the later frame of each pair onto the earlier.
  traj = np.stack([x, y, y2]).astype(np.float32)
  x0, x1 = om.training_pairs(traj, 1, implicit, align=True)
  np.testing.assert_allclose(x1[0], x, atol=1e-5)
  np.testing.assert_allclose(x1[1], om.rigid_align(y2, y), atol=1e-5)
  with pytest.raises(ValueError, match="same shape"):
    om.rigid_align(y[:5], x)
