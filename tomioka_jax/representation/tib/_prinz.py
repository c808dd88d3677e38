"""The 2-D Prinz process: a slow four-well coordinate beside a fast Ornstein-Uhlenbeck one.

The benchmark process of Federici, Forré, Tomioka, Veeling 2023 (Section 5): the first
coordinate diffuses in the one-dimensional Prinz potential (Prinz et al. 2011, as in deeptime's
``prinz_potential``)

.. math::  V(x) = 4\\big(x^8 + 0.8 e^{-80 x^2} + 0.2 e^{-80 (x-0.5)^2}
                        + 0.5 e^{-40 (x+0.5)^2}\\big),

overdamped Langevin dynamics ``dx = -V'(x) dt + sqrt(2 kT) dW`` (mass and damping 1), and the
second is an independent Ornstein-Uhlenbeck process ``dv = -theta v dt + sqrt(2 theta) s dW'``
(stationary ``N(0, s^2)``, autocorrelation ``exp(-theta t)``) that mixes far faster than the
wells. The target label ``y`` is the well of the slow coordinate (4 classes, split at the
three barrier tops). Both coordinates are integrated by Euler-Maruyama with step ``dt`` inside
``lax.scan``; ``frame_dt / dt`` steps separate saved frames; trajectories are a ``vmap``.
The stationary density of the slow coordinate is the Boltzmann density ``exp(-V/kT) / Z``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from tomioka_jax import core

# deeptime's ``prinz_potential().minima``: the four wells, left to right.
PRINZ_MINIMA = (-0.73943019, -0.22373758, 0.26914935, 0.67329635)
# The three barrier tops between them (roots of V' with V'' < 0, to 1e-10).
PRINZ_BARRIERS = (-0.5015979524, -0.0000070954, 0.5020093813)
NUM_WELLS = 4


def prinz_potential(x: ArrayLike) -> jax.Array:
  """The Prinz potential ``V(x)`` (elementwise).

  .. math::  V(x) = 4(x^8 + 0.8 e^{-80 x^2} + 0.2 e^{-80 (x-0.5)^2} + 0.5 e^{-40 (x+0.5)^2})
  """
  x = jnp.asarray(x)
  return 4.0 * (x**8 + 0.8 * jnp.exp(-80.0 * x**2) + 0.2 * jnp.exp(-80.0 * (x - 0.5)**2)
                + 0.5 * jnp.exp(-40.0 * (x + 0.5)**2))


def prinz_force(x: ArrayLike) -> jax.Array:
  """``-V'(x)`` in closed form (elementwise), the drift of the slow coordinate.

  .. math::  -V'(x) = -4\\big(8x^7 - 128 x e^{-80x^2} - 32 (x-0.5) e^{-80(x-0.5)^2}
                              - 40 (x+0.5) e^{-40(x+0.5)^2}\\big)
  """
  x = jnp.asarray(x)
  return -4.0 * (8.0 * x**7 - 128.0 * x * jnp.exp(-80.0 * x**2)
                 - 32.0 * (x - 0.5) * jnp.exp(-80.0 * (x - 0.5)**2)
                 - 40.0 * (x + 0.5) * jnp.exp(-40.0 * (x + 0.5)**2))


def prinz_well(x: ArrayLike) -> jax.Array:
  """The well (0..3, left to right) of slow coordinates ``x``: which barriers lie below it."""
  x = jnp.asarray(x)
  barriers = jnp.asarray(PRINZ_BARRIERS, x.dtype).reshape((1,) * x.ndim + (-1,))
  return jnp.sum(x[..., None] > barriers, axis=-1).astype(jnp.int32)


def _check_positive(**values: float) -> None:
  for name, value in values.items():
    if not (isinstance(value, (int, float, np.floating, np.integer)) and math.isfinite(value)
            and value > 0):
      raise ValueError(f"{name} must be a finite number > 0, got {name}={value!r}")


def boltzmann_grid(kT: float = 1.0, num_points: int = 4001, bound: float = 1.3
                   ) -> tuple[np.ndarray, np.ndarray]:
  """The normalized Boltzmann density ``exp(-V/kT) / Z`` of the slow coordinate on a grid.

  Returns ``(grid, density)`` on ``num_points`` equispaced points of ``[-bound, bound]`` (the
  density is ~1e-40 of its peak at |x| = 1.3 for kT = 1), ``Z`` by the trapezoidal rule, in
  float64 NumPy (a reference for tests and for the stationary sampler).
  """
  _check_positive(kT=kT, bound=bound)
  grid = np.linspace(-bound, bound, num_points)
  v = 4.0 * (grid**8 + 0.8 * np.exp(-80 * grid**2) + 0.2 * np.exp(-80 * (grid - 0.5)**2)
             + 0.5 * np.exp(-40 * (grid + 0.5)**2))
  w = np.exp(-(v - v.min()) / kT)
  return grid, w / np.trapezoid(w, grid)


def sample_prinz_stationary(key: jax.Array, num: int, *, kT: float = 1.0,
                            ou_std: float = 0.5) -> jax.Array:
  """``num`` draws ``(x, v)`` from the stationary law: Boltzmann times ``N(0, ou_std^2)``.

  The slow coordinate is drawn from :func:`boltzmann_grid`'s density by choosing a grid cell
  with probability proportional to its trapezoid mass and a uniform point inside it (exact to
  the grid's resolution, 6.5e-4). Returns ``(num, 2)``.
  """
  _check_positive(kT=kT, ou_std=ou_std)
  grid, density = boltzmann_grid(kT)
  mass = 0.5 * (density[1:] + density[:-1]) * np.diff(grid)
  k_cell, k_pos, k_ou = jax.random.split(key, 3)
  cell = jax.random.choice(k_cell, len(mass), (num,), p=jnp.asarray(mass / mass.sum()))
  u = jax.random.uniform(k_pos, (num,))
  left = jnp.asarray(grid[:-1], u.dtype)
  x = left[cell] + u * jnp.asarray(grid[1] - grid[0], u.dtype)
  v = ou_std * jax.random.normal(k_ou, (num,))
  return jnp.stack([x, v], axis=-1)


def simulate_prinz(key: jax.Array, x0: ArrayLike, num_frames: int, *, frame_dt: float = 0.01,
                   dt: float = 1e-4, kT: float = 1.0, ou_rate: float = 20.0,
                   ou_std: float = 0.5) -> jax.Array:
  """Euler-Maruyama trajectories of the 2-D Prinz process from ``x0``.

  Each step, with ``eta ~ N(0, I_2)``:

  .. math::  x \\leftarrow x - V'(x)\\,dt + \\sqrt{2\\,kT\\,dt}\\,\\eta_1, \\qquad
             v \\leftarrow v - \\theta v\\,dt + \\sqrt{2\\theta s^2 dt}\\,\\eta_2

  (deeptime's integrator for the first line). ``frame_dt / dt`` steps (a ``lax.scan`` inside a
  ``lax.scan`` over frames) separate two saved frames; frame 0 is ``x0``.

  Args:
    key: PRNG key.
    x0: starting points, ``(2,)`` or ``(n, 2)`` (one trajectory each, a ``vmap``).
    num_frames: frames saved per trajectory (>= 1).
    frame_dt: time between frames (a multiple of ``dt``).
    dt: the integrator's step (stable below ~2e-3; the bias of the stationary law grows
      with ``dt``: 1e-4 keeps it below the histogram test's resolution).
    kT: temperature of the slow coordinate.
    ou_rate, ou_std: ``theta`` and the stationary standard deviation ``s`` of the fast one.

  Returns:
    ``(num_frames, 2)`` or ``(n, num_frames, 2)``.

  Raises:
    ValueError: a non-positive or non-finite parameter, ``frame_dt`` not a multiple of ``dt``,
    ``x0`` of the wrong shape or (when concrete) with non-finite coordinates.
  """
  _check_positive(frame_dt=frame_dt, dt=dt, kT=kT, ou_rate=ou_rate, ou_std=ou_std)
  if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) \
      or num_frames < 1:
    raise ValueError(f"num_frames must be a positive integer, got num_frames={num_frames!r}")
  substeps = frame_dt / dt
  if abs(substeps - round(substeps)) > 1e-6 * substeps:
    raise ValueError(f"frame_dt must be a multiple of dt, got frame_dt={frame_dt}, dt={dt}")
  substeps = int(round(substeps))
  x0 = jnp.asarray(x0, jnp.result_type(float))
  if x0.ndim not in (1, 2) or x0.shape[-1] != 2:
    raise ValueError(f"x0 must have shape (2,) or (n, 2), got {x0.shape}")
  if core.is_concrete(x0) and not bool(jnp.all(jnp.isfinite(x0))):
    raise ValueError("x0 must have finite coordinates, got non-finite values")
  drift_noise = jnp.asarray([math.sqrt(2.0 * kT * dt), math.sqrt(2.0 * ou_rate * dt) * ou_std],
                            x0.dtype)

  def one(key: jax.Array, start: jax.Array) -> jax.Array:
    def step(state, k):
      noise = jax.random.normal(k, (2,), state.dtype)
      drift = jnp.stack([prinz_force(state[0]), -ou_rate * state[1]])
      return state + drift * dt + drift_noise * noise, None

    def frame(state, k):
      state, _ = jax.lax.scan(step, state, jax.random.split(k, substeps))
      return state, state

    _, frames = jax.lax.scan(frame, start, jax.random.split(key, num_frames - 1))
    return jnp.concatenate([start[None], frames], axis=0)

  if x0.ndim == 1:
    return jax.jit(one)(key, x0)
  return jax.jit(jax.vmap(one))(jax.random.split(key, x0.shape[0]), x0)


class PrinzData(NamedTuple):
  """Trajectories of the 2-D Prinz process and their well labels.

  Attributes:
    x: ``(n, T, 2)`` coordinates (slow, fast).
    y: ``(n, T)`` int32 well labels of the slow coordinate (:func:`prinz_well`).
    frame_dt: time between frames.
  """

  x: np.ndarray
  y: np.ndarray
  frame_dt: float


def prinz_trajectories(key: jax.Array, num_trajectories: int, num_frames: int, *,
                       frame_dt: float = 0.01, dt: float = 1e-4, kT: float = 1.0,
                       ou_rate: float = 20.0, ou_std: float = 0.5) -> PrinzData:
  """Stationary trajectories: starts from :func:`sample_prinz_stationary`, then
  :func:`simulate_prinz`, labelled with :func:`prinz_well`. Returns NumPy arrays."""
  if isinstance(num_trajectories, bool) or not isinstance(num_trajectories, (int, np.integer)) \
      or num_trajectories < 1:
    raise ValueError(f"num_trajectories must be a positive integer, got "
                     f"num_trajectories={num_trajectories!r}")
  k0, k1 = jax.random.split(key)
  x0 = sample_prinz_stationary(k0, num_trajectories, kT=kT, ou_std=ou_std)
  x = simulate_prinz(k1, x0, num_frames, frame_dt=frame_dt, dt=dt, kT=kT, ou_rate=ou_rate,
                     ou_std=ou_std)
  return PrinzData(x=np.asarray(x), y=np.asarray(prinz_well(x[..., 0])), frame_dt=frame_dt)


def lagged_pairs(trajectories: ArrayLike, lag: int) -> tuple[jax.Array, jax.Array]:
  """All ``(x_{t-lag}, x_t)`` pairs of ``(n, T, ...)`` trajectories (axis 1 is time).

  Returns two arrays of ``n (T - lag)`` rows each (trajectory-major).

  Raises:
    ValueError: ``lag`` not a positive integer, or not smaller than the trajectory length;
    non-finite coordinates (when concrete).
  """
  trajectories = jnp.asarray(trajectories)
  if trajectories.ndim < 2:
    raise ValueError(f"trajectories must have shape (n, T, ...), got {trajectories.shape}")
  if isinstance(lag, bool) or not isinstance(lag, (int, np.integer)) or lag < 1:
    raise ValueError(f"lag must be a positive integer, got lag={lag!r}")
  length = trajectories.shape[1]
  if lag >= length:
    raise ValueError(f"lag must be smaller than the trajectory length {length}, got lag={lag}")
  if (jnp.issubdtype(trajectories.dtype, jnp.floating) and core.is_concrete(trajectories)
      and not bool(jnp.all(jnp.isfinite(trajectories)))):
    raise ValueError("trajectories must have finite coordinates, got non-finite values")
  tail = trajectories.shape[2:]
  before = trajectories[:, :length - lag].reshape((-1, *tail))
  after = trajectories[:, lag:].reshape((-1, *tail))
  return before, after
