"""Tests of TICA, the VAMP-2 score, VAMPNets and MSMs (representation/tib/_baselines.py)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from tomioka_jax.representation.tib import _baselines as bl
from tomioka_jax.representation.tib import _prinz as prinz


@functools.lru_cache(maxsize=1)
def _data():
  return prinz.prinz_trajectories(jax.random.key(0), 8, 300)


def _reversible_covariances(x, lag):
  a = np.concatenate([t[:-lag] for t in x])
  b = np.concatenate([t[lag:] for t in x])
  mean = 0.5 * (a.mean(0) + b.mean(0))
  a, b = a - mean, b - mean
  n = len(a)
  return (a.T @ a + b.T @ b) / (2 * n), (a.T @ b + b.T @ a) / (2 * n)


def test_tica_solves_the_generalized_eigenproblem_and_finds_the_slow_coordinate():
  x = np.asarray(_data().x, np.float64)
  lag = 5
  with jax.enable_x64(True):
    model = bl.tica(x, lag)
    lam, r = np.asarray(model.eigenvalues), np.asarray(model.eigenvectors)
  c0, ct = _reversible_covariances(x, lag)
  ref = scipy.linalg.eigh(ct, c0, eigvals_only=True)[::-1]
  np.testing.assert_allclose(lam, ref, rtol=1e-8, atol=1e-10)
  np.testing.assert_allclose(ct @ r, c0 @ r * lam[None, :], atol=1e-9)
  np.testing.assert_allclose(r.T @ c0 @ r, np.eye(2), atol=1e-9)
  # the slowest component is the Prinz coordinate (the fast OU decorrelates at lag 5 frames)
  direction = r[:, 0] * np.sqrt(np.diag(c0))
  assert abs(direction[0]) / np.linalg.norm(direction) > 0.98
  assert lam[0] > 0.5 > 0.4 > lam[1]


def test_tica_eigenvalues_equal_deeptime():
  decomposition = pytest.importorskip("deeptime.decomposition")
  x = np.asarray(_data().x, np.float64)
  ours = bl.tica(x, 5)
  with jax.enable_x64(True):
    ours = np.asarray(bl.tica(x, 5).eigenvalues)
  theirs = decomposition.TICA(lagtime=5).fit_from_timeseries(list(x)).fetch_model()
  np.testing.assert_allclose(ours, np.sort(theirs.singular_values)[::-1], atol=1e-6)


def test_vamp2_score_equals_slow_reference():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(500, 3))
  b = 0.6 * a @ rng.normal(size=(3, 3)) + rng.normal(size=(500, 3))
  a0, b0 = a - a.mean(0), b - b.mean(0)
  c00, c0t, ctt = a0.T @ a0 / 499, a0.T @ b0 / 499, b0.T @ b0 / 499
  k = np.linalg.inv(scipy.linalg.sqrtm(c00)) @ c0t @ np.linalg.inv(scipy.linalg.sqrtm(ctt))
  ref = np.sum(np.linalg.svd(k, compute_uv=False)**2)
  with jax.enable_x64(True):
    ours = float(bl.vamp2_score(a, b, epsilon=1e-12))
  np.testing.assert_allclose(ours, ref, rtol=1e-8)
  # invariant to invertible linear maps of either side
  with jax.enable_x64(True):
    moved = float(bl.vamp2_score(a @ rng.normal(size=(3, 3)), b + 5.0, epsilon=1e-12))
  np.testing.assert_allclose(moved, ref, rtol=1e-6)
  # the singular functions: their values squared sum to the score, and they are whitened
  with jax.enable_x64(True):
    mean, w, s = bl.vamp_singular_functions(a, b, epsilon=1e-12)
    f = (a - np.asarray(mean)[None]) @ np.asarray(w)
  np.testing.assert_allclose(np.sum(np.asarray(s)**2), ref, rtol=1e-8)
  np.testing.assert_allclose(f.T @ f / 499, np.eye(3), atol=1e-8)
  np.testing.assert_allclose(np.sort(np.asarray(s))[::-1],
                             np.linalg.svd(k, compute_uv=False), rtol=1e-8)


def test_msm_recovers_transition_and_vampnet_trains():
  t = np.array([[0.8, 0.15, 0.05], [0.1, 0.8, 0.1], [0.05, 0.15, 0.8]])
  paths = np.asarray(bl.simulate_msm(jax.random.key(0), t, np.arange(60) % 3, 2000))
  assert paths.shape == (60, 2001)
  np.testing.assert_allclose(bl.fit_msm(paths, 1, 3), t, atol=0.01)
  np.testing.assert_allclose(bl.fit_msm(paths, 2, 3), t @ t, atol=0.01)
  e = bl.emission_matrix(np.array([0, 0, 1, 1]), np.array([1, 1, 0, 1]), 2, 2)
  np.testing.assert_allclose(e, [[0, 1], [0.5, 0.5]], atol=1e-6)
  edges = bl.quantile_edges(np.arange(100.0), 4)
  np.testing.assert_array_equal(np.bincount(bl.assign_bins(np.arange(100.0), edges)), [25] * 4)
  fit = bl.train_vampnet(_data().x, 5, num_states=4, steps=150, batch_size=256, seeds=(0, 1))
  assert fit.vamp2.shape == (2, 150)
  assert np.all(fit.vamp2[:, -20:].mean(1) > fit.vamp2[:, :5].mean(1) + 0.3)
  states = np.asarray(bl.vampnet_assign(fit, 1, _data().x))
  assert states.shape == (8, 300) and states.min() >= 0 and states.max() < 4


def test_bad_input():
  with pytest.raises(ValueError, match="lag must be smaller than the trajectory length 300"):
    bl.tica(_data().x, 300)
  with pytest.raises(ValueError, match="chi_0 and chi_t must be"):
    bl.vamp2_score(np.zeros((4, 2)), np.zeros((4, 3)))
  with pytest.raises(ValueError, match="num_states must be an integer >= 2"):
    bl.train_vampnet(_data().x, 5, num_states=1)
