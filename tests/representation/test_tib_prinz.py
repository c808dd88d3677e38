"""Tests of the 2-D Prinz process (tomioka_jax/representation/tib/_prinz.py)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tomioka_jax.representation.tib import _prinz as prinz


def _potential_np(x):
  return 4 * (x**8 + 0.8 * np.exp(-80 * x**2) + 0.2 * np.exp(-80 * (x - 0.5)**2)
              + 0.5 * np.exp(-40 * (x + 0.5)**2))


def test_potential_force_and_critical_points():
  x = np.linspace(-1.1, 1.1, 301)
  np.testing.assert_allclose(np.asarray(prinz.prinz_potential(x)), _potential_np(x), rtol=1e-6)
  with jax.enable_x64(True):
    xs = jnp.asarray(x, jnp.float64)
    grad = jax.vmap(jax.grad(prinz.prinz_potential))(xs)
    np.testing.assert_allclose(np.asarray(prinz.prinz_force(xs)), -np.asarray(grad),
                               rtol=1e-10, atol=1e-9)
    second = jax.grad(jax.grad(prinz.prinz_potential))
    for m in prinz.PRINZ_MINIMA:   # V' = 0, V'' > 0
      assert abs(float(prinz.prinz_force(m))) < 1e-5
      assert float(second(jnp.float64(m))) > 0
    for b in prinz.PRINZ_BARRIERS:  # V' = 0, V'' < 0
      assert abs(float(prinz.prinz_force(jnp.float64(b)))) < 1e-6
      assert float(second(jnp.float64(b))) < 0
  labels = np.asarray(prinz.prinz_well(jnp.asarray(prinz.PRINZ_MINIMA)))
  np.testing.assert_array_equal(labels, [0, 1, 2, 3])


def test_potential_and_force_equal_deeptime():
  dt_data = pytest.importorskip("deeptime.data")
  model = dt_data.prinz_potential()
  x = np.linspace(-1.0, 1.0, 201)[:, None]
  np.testing.assert_allclose(np.asarray(prinz.prinz_potential(x[:, 0])), model.potential(x),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(prinz.prinz_force(x[:, 0])), model.f(0.0, x.T),
                             rtol=1e-4, atol=1e-3)
  np.testing.assert_allclose(prinz.PRINZ_MINIMA, model.minima, atol=1e-8)


def _cdf(grid, density):
  cdf = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(grid))])
  return cdf / cdf[-1]


def test_stationary_sampler_matches_boltzmann():
  grid, density = prinz.boltzmann_grid()
  np.testing.assert_allclose(np.trapezoid(density, grid), 1.0, rtol=1e-9)
  s = np.asarray(prinz.sample_prinz_stationary(jax.random.key(0), 20000))
  cdf = _cdf(grid, density)
  ks = np.max(np.abs(np.searchsorted(np.sort(s[:, 0]), grid) / len(s) - cdf))
  assert ks < 0.015  # i.i.d.: the 1% KS quantile is 1.63 / sqrt(20000) = 0.0115
  assert abs(s[:, 1].std() - 0.5) < 0.01


def test_long_run_is_boltzmann_and_ou_autocorrelation():
  """Starts spread over [-1, 1], 3 time units of burn-in (3.6 slowest relaxation times), then the
  histogram of the slow coordinate against the Boltzmann law, and the fast coordinate's
  autocorrelation against exp(-theta t)."""
  n, frames, burn, frame_dt, rate = 64, 400, 150, 0.02, 20.0
  x0 = np.stack([np.linspace(-1, 1, n), np.zeros(n)], axis=1).astype(np.float32)
  traj = np.asarray(prinz.simulate_prinz(jax.random.key(1), x0, frames, frame_dt=frame_dt,
                                         ou_rate=rate))
  assert traj.shape == (n, frames, 2) and np.isfinite(traj).all()
  np.testing.assert_array_equal(traj[:, 0], x0)
  slow = traj[:, burn:, 0].ravel()
  grid, density = prinz.boltzmann_grid()
  cdf = _cdf(grid, density)
  ks = np.max(np.abs(np.searchsorted(np.sort(slow), grid) / len(slow) - cdf))
  assert ks < 0.03, ks
  # well populations against the Boltzmann masses
  edges = np.concatenate([[-np.inf], prinz.PRINZ_BARRIERS, [np.inf]])
  masses = np.diff(np.interp(edges, grid, cdf, left=0.0, right=1.0))
  counts = np.bincount(np.asarray(prinz.prinz_well(slow)), minlength=4) / len(slow)
  np.testing.assert_allclose(counts, masses, atol=0.03)
  fast = traj[:, burn:, 1]
  assert abs(fast.var() - 0.25) < 0.01
  for k in (1, 2, 4):
    rho = np.mean(fast[:, :-k] * fast[:, k:]) / fast.var()
    assert abs(rho - math.exp(-rate * k * frame_dt)) < 0.02, (k, rho)


def test_trajectories_and_lagged_pairs():
  data = prinz.prinz_trajectories(jax.random.key(2), 3, 50)
  assert data.x.shape == (3, 50, 2) and data.y.shape == (3, 50)
  np.testing.assert_array_equal(data.y, np.asarray(prinz.prinz_well(data.x[..., 0])))
  before, after = prinz.lagged_pairs(data.x, 5)
  assert before.shape == (3 * 45, 2)
  np.testing.assert_array_equal(np.asarray(before[45]), data.x[1, 0])
  np.testing.assert_array_equal(np.asarray(after[45]), data.x[1, 5])


def test_bad_input():
  x = np.zeros((2, 10, 2))
  with pytest.raises(ValueError, match="lag must be smaller than the trajectory length 10"):
    prinz.lagged_pairs(x, 10)
  with pytest.raises(ValueError, match="lag must be a positive integer"):
    prinz.lagged_pairs(x, 0)
  with pytest.raises(ValueError, match="finite"):
    prinz.lagged_pairs(np.full((2, 10, 2), np.nan), 1)
  with pytest.raises(ValueError, match="x0 must have finite coordinates"):
    prinz.simulate_prinz(jax.random.key(0), np.array([np.inf, 0.0]), 3)
  with pytest.raises(ValueError, match=r"x0 must have shape \(2,\) or \(n, 2\)"):
    prinz.simulate_prinz(jax.random.key(0), np.zeros(3), 3)
  with pytest.raises(ValueError, match="frame_dt must be a multiple of dt"):
    prinz.simulate_prinz(jax.random.key(0), np.zeros(2), 3, frame_dt=0.01, dt=3e-4)
  with pytest.raises(ValueError, match="kT must be a finite number > 0"):
    prinz.simulate_prinz(jax.random.key(0), np.zeros(2), 3, kT=-1.0)
  with pytest.raises(ValueError, match="num_frames must be a positive integer"):
    prinz.simulate_prinz(jax.random.key(0), np.zeros(2), 0)
