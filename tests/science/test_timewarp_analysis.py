"""Tests of science/timewarp/_analysis.py: dihedrals, Ramachandran histograms and free energies,
Jensen-Shannon divergence, TICA features and the effective sample size."""

from __future__ import annotations

import importlib.util
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tomioka_jax.representation import tib
from tomioka_jax.science.timewarp import _analysis as an


def test_dihedral_of_a_hand_built_geometry():
  # p0 on the x axis, the p1 -> p2 bond along z, p3 rotated by theta about z: the dihedral is
  # theta (IUPAC sign).
  thetas = np.array([-3.0, -math.pi / 2, -0.3, 0.0, 0.7, math.pi / 2, 2.5, math.pi])
  p0 = np.broadcast_to([1.0, 0.0, 0.0], (thetas.size, 3))
  p1 = np.zeros((thetas.size, 3))
  p2 = np.broadcast_to([0.0, 0.0, 1.5], (thetas.size, 3))
  p3 = np.stack([np.cos(thetas), np.sin(thetas), np.full_like(thetas, 1.5)], axis=1) * 0.8 + (
      np.array([[0.0, 0.0, 0.3]]))
  got = np.asarray(an.dihedral_angle(p0, p1, p2, p3))
  # atan2 puts +-pi on either side: compare on the circle.
  np.testing.assert_allclose(np.cos(got - thetas), 1.0, atol=1e-6)
  np.testing.assert_allclose(got[:-1], thetas[:-1], atol=1e-5)
  # Rigid motions and bond stretches leave it unchanged; a mirror image flips its sign.
  rng = np.random.default_rng(0)
  q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
  q = q * np.sign(np.linalg.det(q))
  moved = [p @ q.T + 1.7 for p in (p0, p1, p2, p3)]
  np.testing.assert_allclose(np.asarray(an.dihedral_angle(*moved))[:-1], thetas[:-1], atol=1e-5)
  mirrored = [p * np.array([[1.0, -1.0, 1.0]]) for p in (p0, p1, p2, p3)]
  np.testing.assert_allclose(np.asarray(an.dihedral_angle(*mirrored))[1:-1], -thetas[1:-1],
                             atol=1e-5)


def _alanine_pdb() -> pathlib.Path:
  spec = importlib.util.find_spec("openmmtools")
  if spec is None:
    pytest.skip("openmmtools (the [md] extra) ships the alanine-dipeptide PDB")
  return (pathlib.Path(list(spec.submodule_search_locations)[0]) / "data" /
          "alanine-dipeptide-gbsa" / "alanine-dipeptide.pdb")


def test_backbone_dihedrals_match_mdtraj():
  md = pytest.importorskip("mdtraj")
  traj = md.load(str(_alanine_pdb()))
  rng = np.random.default_rng(1)
  xyz = traj.xyz[0][None] + 0.03 * rng.normal(size=(50, 22, 3)).astype(np.float32)
  traj = md.Trajectory(xyz, traj.topology)
  phi_idx, phi = md.compute_phi(traj)
  psi_idx, psi = md.compute_psi(traj)
  np.testing.assert_array_equal(phi_idx[0], [4, 6, 8, 14])
  np.testing.assert_array_equal(psi_idx[0], [6, 8, 14, 16])
  got = np.asarray(an.backbone_dihedrals(jnp.asarray(xyz), phi_idx[0], psi_idx[0]))
  np.testing.assert_allclose(got, np.concatenate([phi, psi], axis=1), atol=2e-5)
  quads = np.stack([rng.permutation(22)[:4] for _ in range(6)])  # four distinct atoms each
  np.testing.assert_allclose(np.asarray(an.dihedral_angles(xyz, quads)),
                             md.compute_dihedrals(traj, quads), atol=2e-4)


def test_ramachandran_histogram_and_free_energy():
  rng = np.random.default_rng(2)
  angles = rng.uniform(-math.pi, math.pi, size=(2000, 2)).astype(np.float32)
  angles[:700] = rng.normal([-1.4, 2.5], 0.3, size=(700, 2)).astype(np.float32)
  wrapped = np.mod(angles + math.pi, 2 * math.pi) - math.pi
  hist = np.asarray(an.ramachandran_histogram(angles, bins=12))
  ref, _, _ = np.histogram2d(wrapped[:, 0], wrapped[:, 1], bins=12,
                             range=[[-math.pi, math.pi], [-math.pi, math.pi]])
  np.testing.assert_allclose(hist, ref / len(angles), atol=1e-7)
  assert abs(hist.sum() - 1) < 1e-6
  kt = 2.577
  f = np.asarray(an.free_energy_surface(hist, kt))
  assert f.min() == 0.0
  full = hist > 0
  # exp(-F / kT) is p up to the normalization p_max.
  np.testing.assert_allclose(np.exp(-f[full] / kt), hist[full] / hist.max(), rtol=1e-5)
  assert np.all(np.isinf(f[~full]))


def test_js_divergence_properties():
  rng = np.random.default_rng(3)
  a = rng.normal([-1.0, 1.0], 0.4, size=(3000, 2))
  b = rng.normal([1.0, -1.0], 0.4, size=(3000, 2))
  c = np.concatenate([a[:1500], b[:1500]])
  assert float(an.ramachandran_js_divergence(a, a, bins=20)) == pytest.approx(0.0, abs=1e-7)
  # Disjoint supports: log 2.
  left = np.stack([rng.uniform(-3, -0.1, 500), rng.uniform(-3, 3, 500)], axis=1)
  right = np.stack([rng.uniform(0.1, 3, 800), rng.uniform(-3, 3, 800)], axis=1)
  assert float(an.ramachandran_js_divergence(left, right, bins=20)) == pytest.approx(
      math.log(2), rel=1e-5)
  ac, ca = (float(an.ramachandran_js_divergence(x, y, 20)) for x, y in ((a, c), (c, a)))
  assert ac == pytest.approx(ca, rel=1e-6)
  # Against the definition, in NumPy.
  p = np.asarray(an.ramachandran_histogram(a, 20), np.float64)
  q = np.asarray(an.ramachandran_histogram(c, 20), np.float64)
  m = (p + q) / 2

  def kl(u):
    s = u > 0
    return np.sum(u[s] * np.log(u[s] / m[s]))

  assert ac == pytest.approx(0.5 * kl(p) + 0.5 * kl(q), rel=1e-4)
  assert 0 < ac < math.log(2)


def test_autocorrelation_matches_the_direct_sum():
  rng = np.random.default_rng(4)
  x = rng.normal(size=(3, 101)).cumsum(axis=1)
  rho = np.asarray(an.autocorrelation(x))
  xc = x - x.mean(axis=1, keepdims=True)
  n = x.shape[1]
  ref = np.stack([[np.sum(r[:n - k] * r[k:]) for k in range(n)] for r in xc])
  ref = ref / ref[:, :1]
  np.testing.assert_allclose(rho, ref, atol=1e-4)
  assert np.all(np.asarray(an.autocorrelation(np.ones(10))) == 1)
  # A chain that never moved counts as one sample.
  assert float(an.effective_sample_size(np.full(50, 0.3))) == 1.0
  # Also when its features were computed with rounding differences (one float32 ulp).
  stuck = np.full(50, 0.3, np.float32)
  stuck[::7] = np.nextafter(np.float32(0.3), np.float32(1))
  assert float(an.effective_sample_size(stuck)) == 1.0
  assert np.all(np.asarray(an.autocorrelation(stuck)) == 1)


def _ar1(key, a, num_chains, n):
  eps = jax.random.normal(key, (num_chains, n))

  def step(x, e):
    x = a * x + math.sqrt(1 - a * a) * e
    return x, x

  _, xs = jax.lax.scan(step, eps[:, 0], eps.T)
  return xs.T


@pytest.mark.parametrize("a", [0.5, 0.9])
def test_ess_of_ar1_matches_the_closed_form(a):
  n = 200_000
  x = _ar1(jax.random.key(5), a, 8, n)
  ess = np.asarray(an.effective_sample_size(x))
  exact = n * (1 - a) / (1 + a)
  # Each chain within 10%, their mean within 4% (the truncated sum is noisy, unbiased to O(1/N)).
  np.testing.assert_allclose(ess, exact, rtol=0.10)
  assert abs(ess.mean() / exact - 1) < 0.04
  # White noise: about N; ESS per second divides by the time.
  white = np.asarray(an.effective_sample_size(jax.random.normal(jax.random.key(6), (4, n))))
  np.testing.assert_allclose(white, n, rtol=0.1)
  assert float(an.ess_per_second(x[0], 2.0)) == pytest.approx(float(ess[0]) / 2, rel=1e-6)


def test_tica_features_and_the_slowest_component():
  rng = np.random.default_rng(7)
  pos = rng.normal(size=(5, 6, 3))
  quads = np.array([[0, 1, 2, 3], [1, 2, 3, 4]])
  f = np.asarray(an.tica_features(pos, [0, 2, 5], quads))
  d = [np.linalg.norm(pos[:, i] - pos[:, j], axis=-1) for i, j in ((0, 2), (0, 5), (2, 5))]
  ang = np.asarray(an.dihedral_angles(pos, quads))
  np.testing.assert_allclose(f, np.concatenate([np.stack(d, 1), np.sin(ang), np.cos(ang)], 1),
                             rtol=1e-5, atol=1e-6)
  # A slow AR(1) hidden in a rotated 3-D signal: TIC0 recovers it.
  slow = np.asarray(_ar1(jax.random.key(8), 0.99, 1, 20_000))[0]
  fast = rng.normal(size=(20_000, 2))
  raw = np.concatenate([slow[:, None], fast], axis=1)
  q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
  model = an.fit_tica(raw @ q.T, lag=10)
  tic0 = np.asarray(tib.tica_transform(model, raw @ q.T))[:, 0]
  assert abs(np.corrcoef(tic0, slow)[0, 1]) > 0.99
  assert float(model.eigenvalues[0]) == pytest.approx(0.99**10, abs=0.03)


def test_bad_input():
  with pytest.raises(ValueError, match="lag must be smaller than the trajectory length T=5"):
    an.fit_tica(np.zeros((5, 2)), lag=5)
  with pytest.raises(ValueError, match="lag must be a positive integer"):
    an.fit_tica(np.zeros((5, 2)), lag=0)
  bad = np.zeros((3, 4, 3))
  bad[1, 2, 0] = np.nan
  with pytest.raises(ValueError, match="positions must have finite coordinates"):
    an.backbone_dihedrals(bad, (0, 1, 2, 3), (0, 1, 2, 3))
  with pytest.raises(ValueError, match=r"indices must lie in \[0, 4\)"):
    an.backbone_dihedrals(np.zeros((3, 4, 3)), (0, 1, 2, 4), (0, 1, 2, 3))
  with pytest.raises(ValueError, match="positions must have shape"):
    an.tica_features(np.zeros((3, 4)), [0, 1])
  with pytest.raises(ValueError, match="bins must be a positive integer"):
    an.ramachandran_histogram(np.zeros((3, 2)), bins=0)
  with pytest.raises(ValueError, match="angles must have shape"):
    an.ramachandran_histogram(np.zeros((3, 3)))
  with pytest.raises(ValueError, match="angles must be finite"):
    an.ramachandran_histogram(np.full((3, 2), np.inf))
  with pytest.raises(ValueError, match="kT must be"):
    an.free_energy_surface(np.ones(3), kT=0.0)
  with pytest.raises(ValueError, match="seconds must be"):
    an.ess_per_second(np.ones(10), 0.0)
  with pytest.raises(ValueError, match="last .time. axis"):
    an.effective_sample_size(np.ones(1))


def test_multichain_ess_counts_disagreeing_chains_once():
  rng = np.random.default_rng(7)
  a, m, n = 0.6, 4, 6000
  x = np.zeros((m, n))
  e = rng.normal(size=(m, n))
  for i in range(1, n):
    x[:, i] = a * x[:, i - 1] + e[:, i]
  want = m * n * (1 - a) / (1 + a)  # m independent AR(1) chains
  assert float(an.multichain_effective_sample_size(x)) == pytest.approx(want, rel=0.15)
  # Chains that never move, at different points: m N / (2 N - 1).
  stuck = np.repeat(rng.normal(size=(m, 1)), n, axis=1)
  assert float(an.multichain_effective_sample_size(stuck)) == pytest.approx(
      m * n / (2 * n - 1), rel=1e-4)
  # Jittering about different points: the single-chain ESS counts thousands of samples, the
  # multi-chain ESS about m / 2.
  jitter = stuck + 1e-3 * x
  assert float(np.sum(an.effective_sample_size(jitter))) > 1000
  assert float(an.multichain_effective_sample_size(jitter)) < m
  with pytest.raises(ValueError, match=r"chains must have shape \(m, N\) with m >= 2"):
    an.multichain_effective_sample_size(x[:1])
