"""Fully-JAX toy molecular systems for Timewarp and a jittable Langevin integrator.

Units follow OpenMM's (nm, ps, kJ/mol, amu), so ``kT`` is in kJ/mol and forces in
kJ/(mol nm). Positions are ``(n_atoms, 3)`` or batched ``(..., n_atoms, 3)``; every energy
maps ``(..., n_atoms, 3) -> (...)`` and is jittable, vmappable and differentiable.

* **Double-well dimer** (:func:`double_well_dimer`): two atoms whose bond length ``d`` has the
  quartic double-well potential of the flow-matching / Boltzmann-generator literature,
  plus a harmonic confinement of their centre of mass,

  .. math::  U(x) = h\\Big(\\big(\\tfrac{d - d_0}{s}\\big)^2 - 1\\Big)^2 + c\\,\\tfrac{d-d_0}{s}
             + \\tfrac{k_c}{2} |\\bar x|^2, \\qquad d = |x_1 - x_0|,\\ \\bar x = (x_0 + x_1)/2.

  The Boltzmann density factorizes into the centre of mass (Gaussian) and the relative vector
  ``r = x_1 - x_0``; the slow coordinate ``d = |r|`` has the exact marginal
  ``p(d) ∝ d^2 exp(-U(d)/kT)`` on ``d > 0`` (:func:`dimer_distance_density`, by quadrature).
* **Lennard-Jones cluster** (:func:`lennard_jones_cluster`, LJ13 by default, argon-like
  ``sigma = 0.34 nm``, ``epsilon = 1 kJ/mol``) with a soft harmonic confinement to the origin
  so it stays bound,

  .. math::  U(x) = \\sum_{i<j} 4\\epsilon\\big[(\\sigma/r_{ij})^{12} - (\\sigma/r_{ij})^6\\big]
             + \\tfrac{k_c}{2}\\sum_i |x_i|^2.

* **Langevin dynamics** (:func:`simulate_langevin`): the BAOAB splitting (Leimkuhler and
  Matthews 2013) of ``dx = v dt``, ``m dv = -grad U dt - gamma m v dt + sqrt(2 gamma m kT) dW``:
  half kick, half drift, the exact Ornstein-Uhlenbeck step ``v <- c v + sqrt((1 - c^2) kT/m) xi``
  with ``c = exp(-gamma dt)``, half drift, half kick; the whole trajectory is one ``lax.scan``
  and independent chains are ``vmap``-ped. Its invariant measure is ``exp(-U/kT)`` up to
  ``O(dt^2)`` in the positions (exact for a harmonic well's position variance in the BAOAB
  scheme). Training pairs ``(x_t, x_{t+tau})`` are ``training_pairs(trajectory, lag)`` of the
  family.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from tomioka_jax import core

EnergyFn = Callable[[jax.Array], jax.Array]


class ToySystem(NamedTuple):
  """A toy molecular system.

  Attributes:
    name: a short label.
    energy: ``energy(positions (..., n_atoms, 3)) -> (...)`` in kJ/mol, jittable.
    atom_types: ``(n_atoms,)`` int32 atom types (for the flow's embedding).
    masses: ``(n_atoms,)`` amu.
    kT: the thermal energy (kJ/mol) the system is meant to be sampled at.
    positions: ``(n_atoms, 3)`` a low-energy starting configuration (nm).
    params: the potential's parameters (a dict of floats).
  """

  name: str
  energy: EnergyFn
  atom_types: np.ndarray
  masses: np.ndarray
  kT: float
  positions: np.ndarray
  params: dict


def _positive(name: str, value: Any) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or (
      not math.isfinite(value) or value <= 0):
    raise ValueError(f"{name} must be a finite number > 0, got {name}={value!r}")
  return float(value)


def _positive_int(name: str, value: Any) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")
  return int(value)


def _check_atoms(positions: jax.Array, num_atoms: int, name: str = "positions") -> jax.Array:
  if positions.ndim < 2 or positions.shape[-2:] != (num_atoms, 3):
    raise ValueError(f"{name} must have shape (..., {num_atoms}, 3) for this system of "
                     f"{num_atoms} atoms, got {positions.shape}")
  return positions


def dimer_energy_of_distance(d: ArrayLike, *, barrier: float, center: float, scale: float,
                             tilt: float = 0.0) -> jax.Array:
  """The double-well bond potential ``h((u^2 - 1)^2) + c u`` with ``u = (d - d0)/s`` (kJ/mol)."""
  u = (jnp.asarray(d) - center) / scale
  return barrier * (u * u - 1.0) ** 2 + tilt * u


def double_well_dimer(*, barrier: float = 5.0, center: float = 0.5, scale: float = 0.15,
                      tilt: float = 0.0, confinement: float = 50.0, kT: float = 2.5,
                      mass: float = 1.0) -> ToySystem:
  """The double-well dimer (module docstring): 2 atoms, bond length minima near ``d0 +- s``.

  Args:
    barrier: ``h``, the barrier height at zero tilt (kJ/mol); 5 kJ/mol = 2 kT at 300 K.
    center, scale: ``d0`` and ``s`` (nm); ``d0 > 2 s`` keeps the wells away from ``d = 0``.
    tilt: ``c`` (kJ/mol), an asymmetry between the wells.
    confinement: ``k_c`` (kJ/(mol nm^2)) of the centre of mass.
    kT: kJ/mol.
    mass: amu of each atom.

  Raises:
    ValueError: non-positive ``barrier``, ``center``, ``scale``, ``confinement``, ``kT`` or
      ``mass``; a non-finite ``tilt``.
  """
  barrier, center, scale = (_positive(n, v) for n, v in
                            (("barrier", barrier), ("center", center), ("scale", scale)))
  confinement, kT, mass = (_positive(n, v) for n, v in
                           (("confinement", confinement), ("kT", kT), ("mass", mass)))
  if not math.isfinite(tilt):
    raise ValueError(f"tilt must be finite, got tilt={tilt!r}")
  params = {"barrier": barrier, "center": center, "scale": scale, "tilt": float(tilt),
            "confinement": confinement}

  def energy(positions):
    x = _check_atoms(jnp.asarray(positions), 2)
    d = jnp.sqrt(jnp.sum((x[..., 1, :] - x[..., 0, :]) ** 2, axis=-1) + 1e-12)
    com = 0.5 * (x[..., 0, :] + x[..., 1, :])
    return (dimer_energy_of_distance(d, barrier=barrier, center=center, scale=scale, tilt=tilt)
            + 0.5 * confinement * jnp.sum(com * com, axis=-1))

  start = np.array([[-0.5 * (center - scale), 0.0, 0.0], [0.5 * (center - scale), 0.0, 0.0]],
                   np.float32)
  return ToySystem("double_well_dimer", energy, np.zeros(2, np.int32),
                   np.full(2, mass, np.float32), kT, start, params)


def dimer_distance(positions: ArrayLike) -> jax.Array:
  """The dimer's bond length ``|x_1 - x_0|`` of ``(..., 2, 3)`` positions -> ``(...)``."""
  x = _check_atoms(jnp.asarray(positions), 2)
  return jnp.linalg.norm(x[..., 1, :] - x[..., 0, :], axis=-1)


def dimer_distance_density(system: ToySystem, edges: ArrayLike, *,
                           num_quadrature: int = 20001) -> np.ndarray:
  """Exact probabilities of the dimer's bond length in the bins ``edges`` (float64, NumPy).

  ``p(d) ∝ d^2 exp(-U(d)/kT)`` on ``(0, d_max]`` integrated by the trapezoidal rule on
  ``num_quadrature`` points, ``d_max`` far beyond the wells (where the quartic makes the
  density vanish); the bin masses are normalized over all of ``d > 0``, so bins that do not
  cover the support sum to less than one.
  """
  p = system.params
  edges = np.asarray(edges, np.float64)
  if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
    raise ValueError(f"edges must be an increasing 1-D array of >= 2 values, got {edges!r}")
  if isinstance(num_quadrature, bool) or not isinstance(num_quadrature, int) or num_quadrature < 3:
    raise ValueError(f"num_quadrature must be an integer >= 3, got {num_quadrature!r}")

  def log_density(d):
    u = (d - p["center"]) / p["scale"]
    return (2.0 * np.log(np.maximum(d, 1e-300))
            - (p["barrier"] * (u * u - 1.0) ** 2 + p["tilt"] * u) / system.kT)

  d_max = max(p["center"] + 8.0 * p["scale"], float(edges[-1]))
  grid = np.linspace(0.0, d_max, num_quadrature)
  ref = log_density(grid).max()
  total = np.trapezoid(np.exp(log_density(grid) - ref), grid)
  # Each bin integrated on its own grid: no cancellation in the tails.
  per_bin = max(num_quadrature // (edges.size - 1), 101)
  masses = []
  for lo, hi in zip(edges[:-1], edges[1:]):
    g = np.linspace(max(lo, 0.0), max(hi, 0.0), per_bin)
    masses.append(np.trapezoid(np.exp(log_density(g) - ref), g) if hi > 0 else 0.0)
  return np.asarray(masses) / total


def _icosahedron(radius: float) -> np.ndarray:
  phi = (1.0 + math.sqrt(5.0)) / 2.0
  verts = []
  for a in (-1.0, 1.0):
    for b in (-phi, phi):
      verts += [(0.0, a, b), (a, b, 0.0), (b, 0.0, a)]
  v = np.asarray(verts)
  return radius * v / np.linalg.norm(v, axis=-1, keepdims=True)


def lennard_jones_cluster(num_atoms: int = 13, *, sigma: float = 0.34, epsilon: float = 1.0,
                          confinement: float = 5.0, kT: float = 0.5,
                          mass: float = 39.948) -> ToySystem:
  """A Lennard-Jones cluster with soft harmonic confinement (module docstring).

  The start is an icosahedron around a centre atom (the LJ13 minimum) for ``num_atoms = 13``;
  otherwise a cubic lattice of spacing ``2^(1/6) sigma``.

  Args:
    num_atoms: at least 2.
    sigma: nm. epsilon: kJ/mol. confinement: ``k_c`` kJ/(mol nm^2). kT: kJ/mol (0.5 = 0.5
      epsilon, a solid-like cluster). mass: amu (argon by default).

  Raises:
    ValueError: ``num_atoms < 2``; a non-positive parameter.
  """
  if isinstance(num_atoms, bool) or not isinstance(num_atoms, (int, np.integer)) or num_atoms < 2:
    raise ValueError(f"num_atoms must be an integer >= 2, got num_atoms={num_atoms!r}")
  sigma, epsilon, kT, mass = (_positive(n, v) for n, v in
                              (("sigma", sigma), ("epsilon", epsilon), ("kT", kT), ("mass", mass)))
  confinement = _positive("confinement", confinement)
  n = int(num_atoms)
  iu, ju = np.triu_indices(n, 1)
  params = {"sigma": sigma, "epsilon": epsilon, "confinement": confinement}

  def energy(positions):
    x = _check_atoms(jnp.asarray(positions), n)
    diff = x[..., iu, :] - x[..., ju, :]
    r2 = jnp.sum(diff * diff, axis=-1) + 1e-6 * sigma * sigma
    s6 = (sigma * sigma / r2) ** 3
    lj = jnp.sum(4.0 * epsilon * (s6 * s6 - s6), axis=-1)
    return lj + 0.5 * confinement * jnp.sum(x * x, axis=(-1, -2))

  r0 = 2.0 ** (1.0 / 6.0) * sigma
  if n == 13:
    start = np.concatenate([np.zeros((1, 3)), _icosahedron(r0)])
  else:
    side = math.ceil(n ** (1.0 / 3.0))
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n]
    start = r0 * (grid - grid.mean(0))
  return ToySystem(f"lj{n}", energy, np.zeros(n, np.int32), np.full(n, mass, np.float32), kT,
                   start.astype(np.float32), params)


def harmonic_well(num_atoms: int = 1, *, stiffness: float = 100.0, kT: float = 2.5,
                  mass: float = 1.0) -> ToySystem:
  """Independent isotropic harmonic wells ``U = (k/2) sum_i |x_i|^2`` (position variance kT/k)."""
  n = _positive_int("num_atoms", num_atoms)
  stiffness, kT, mass = (_positive(a, v) for a, v in
                         (("stiffness", stiffness), ("kT", kT), ("mass", mass)))

  def energy(positions):
    x = _check_atoms(jnp.asarray(positions), n)
    return 0.5 * stiffness * jnp.sum(x * x, axis=(-1, -2))

  return ToySystem("harmonic", energy, np.zeros(n, np.int32), np.full(n, mass, np.float32), kT,
                   np.zeros((n, 3), np.float32), {"stiffness": stiffness})


def simulate_langevin(energy: EnergyFn, positions: ArrayLike, key: jax.Array, *,
                      masses: ArrayLike, kT: float, friction: float, timestep: float,
                      num_frames: int, spacing: int = 1, burn_in: int = 0) -> jax.Array:
  """BAOAB Langevin trajectories of ``energy``, one frame every ``spacing`` steps.

  Args:
    energy: ``energy(positions (..., n, 3)) -> (...)`` kJ/mol, differentiable.
    positions: ``(n, 3)`` one start or ``(num_chains, n, 3)`` starts of independent chains
      (vmapped; each chain gets its own key from ``jax.random.split(key, num_chains)``).
    key: PRNG key (velocities start Maxwell-Boltzmann at ``kT``).
    masses: ``(n,)`` amu. kT: kJ/mol. friction: ``gamma`` 1/ps. timestep: ``dt`` ps.
    num_frames: frames returned. spacing: steps between frames. burn_in: steps before the
      first frame, not returned.

  Returns:
    ``(num_frames, n, 3)`` or ``(num_chains, num_frames, n, 3)`` positions (the dtype of
    ``positions``).

  Raises:
    ValueError: non-positive ``kT``, ``friction``, ``timestep``, ``num_frames`` or
      ``spacing``; negative ``burn_in``; ``positions`` not ``(n, 3)`` / ``(C, n, 3)``;
      ``masses`` not ``(n,)`` positive; non-finite positions.
  """
  x0 = jnp.asarray(positions)
  if not jnp.issubdtype(x0.dtype, jnp.floating):
    x0 = x0.astype(jnp.float32)
  if x0.ndim not in (2, 3) or x0.shape[-1] != 3:
    raise ValueError(f"positions must have shape (n_atoms, 3) or (num_chains, n_atoms, 3), got "
                     f"{x0.shape}")
  if core.is_concrete(x0) and not bool(jnp.all(jnp.isfinite(x0))):
    raise ValueError("positions must have finite coordinates, got non-finite values")
  m = np.asarray(masses, np.float64)
  if m.shape != (x0.shape[-2],) or not np.all(m > 0):
    raise ValueError(f"masses must be ({x0.shape[-2]},) positive amu, got {m!r}")
  kT, friction, timestep = (_positive(a, v) for a, v in
                            (("kT", kT), ("friction", friction), ("timestep", timestep)))
  num_frames = _positive_int("num_frames", num_frames)
  spacing = _positive_int("spacing", spacing)
  if isinstance(burn_in, bool) or not isinstance(burn_in, (int, np.integer)) or burn_in < 0:
    raise ValueError(f"burn_in must be an integer >= 0, got burn_in={burn_in!r}")
  dtype = x0.dtype
  inv_m = jnp.asarray(1.0 / m, dtype)[:, None]
  c1 = math.exp(-friction * timestep)
  noise_scale = jnp.sqrt((1.0 - c1 * c1) * kT * inv_m).astype(dtype)
  force = jax.grad(lambda x: -jnp.sum(energy(x)))
  half = 0.5 * timestep

  def step(carry, key):
    x, v, f = carry
    v = v + half * f * inv_m
    x = x + half * v
    v = c1 * v + noise_scale * jax.random.normal(key, x.shape, dtype)
    x = x + half * v
    f = force(x)
    v = v + half * f * inv_m
    return (x, v, f), None

  def run_steps(carry, key, num):
    if num == 0:
      return carry
    carry, _ = jax.lax.scan(step, carry, jax.random.split(key, num))
    return carry

  def chain(x, key):
    k_v, k_burn, k_run = jax.random.split(key, 3)
    v = jnp.sqrt(kT * inv_m).astype(dtype) * jax.random.normal(k_v, x.shape, dtype)
    carry = run_steps((x, v, force(x)), k_burn, int(burn_in))

    def frame(carry, key):
      carry = run_steps(carry, key, spacing)
      return carry, carry[0]

    _, frames = jax.lax.scan(frame, carry, jax.random.split(k_run, num_frames))
    return frames

  run = jax.jit(jax.vmap(chain) if x0.ndim == 3 else chain)
  keys = jax.random.split(key, x0.shape[0]) if x0.ndim == 3 else key
  return run(x0, keys)
