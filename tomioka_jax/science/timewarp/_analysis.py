"""What Timewarp measures on its samples: backbone dihedrals, Ramachandran free energies, the
Jensen-Shannon divergence to MD, TICA's slowest component and its effective sample size.

Pure JAX (no OpenMM), so the same functions score MD frames and sampler chains:

* **Dihedrals** (IUPAC sign, as mdtraj): for atoms ``p0..p3`` with bonds ``b1 = p1 - p0``,
  ``b2 = p2 - p1``, ``b3 = p3 - p2``,

  .. math::  \\phi = \\operatorname{atan2}\\big(|b_2|\\, b_1 \\cdot (b_2 \\times b_3),\\;
             (b_1 \\times b_2) \\cdot (b_2 \\times b_3)\\big) \\in (-\\pi, \\pi].

* **Ramachandran** histograms of ``(phi, psi)`` on ``[-pi, pi)^2``, the free energy
  ``F = -kT log p`` (shifted to minimum 0), and the Jensen-Shannon divergence of two
  histograms (``representation.tib.js_divergence``, nats, at most ``log 2``).
* **TICA** (the reference's ``utils/tica_utils.py``): features are the pairwise distances of
  the heavy atoms and the sin / cos of the backbone dihedrals; the slowest component (TIC0)
  from ``representation.tib.tica`` (reversible covariances; the reference uses deeptime's
  Koopman-reweighted estimator, which on equilibrium MD gives the same components).
* **Effective sample size** (the reference's speed-up notebooks): with the normalized
  autocorrelation ``rho_k`` of a scalar series of length ``N``,

  .. math::  \\mathrm{ESS} = \\frac{N}{-1 + 2 \\sum_{k=0}^{K-1} \\rho_k}
             = \\frac{N}{1 + 2 \\sum_{k=1}^{K-1} \\rho_k},

  truncated at the first lag ``K >= 1`` with ``rho_K <= 0``; the speed-up is the ratio of the
  model's ESS per second of wall-clock time to MD's, on TIC0.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from tomioka_jax import core
from tomioka_jax.representation import tib


def dihedral_angle(p0: ArrayLike, p1: ArrayLike, p2: ArrayLike, p3: ArrayLike) -> jax.Array:
  """The dihedral angle (radians, ``(-pi, pi]``) of four points ``(..., 3)`` each -> ``(...)``.

  IUPAC convention (mdtraj's ``compute_dihedrals``): looking along ``p1 -> p2``, the angle
  from ``p0`` to ``p3``, positive clockwise.
  """
  p0, p1, p2, p3 = (jnp.asarray(p) for p in (p0, p1, p2, p3))
  b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
  c12, c23 = jnp.cross(b1, b2), jnp.cross(b2, b3)
  y = jnp.linalg.norm(b2, axis=-1) * jnp.sum(b1 * c23, axis=-1)
  x = jnp.sum(c12 * c23, axis=-1)
  return jnp.arctan2(y, x)


def _check_quads(quads: Any, num_atoms: int) -> np.ndarray:
  q = np.asarray(quads)
  if q.ndim == 1:
    q = q[None]
  if q.ndim != 2 or q.shape[1] != 4 or not np.issubdtype(q.dtype, np.integer):
    raise ValueError(f"dihedral atoms must be integer quadruples of shape (4,) or (k, 4), got "
                     f"{np.asarray(quads).shape} ({np.asarray(quads).dtype})")
  if q.size and (q.min() < 0 or q.max() >= num_atoms):
    raise ValueError(f"dihedral atom indices must lie in [0, {num_atoms}), got {q.tolist()}")
  return q


def _check_positions(positions: ArrayLike, name: str = "positions") -> jax.Array:
  x = jnp.asarray(positions)
  if x.ndim < 2 or x.shape[-1] != 3:
    raise ValueError(f"{name} must have shape (..., n_atoms, 3), got {x.shape}")
  if core.is_concrete(x) and not bool(jnp.all(jnp.isfinite(x))):
    raise ValueError(f"{name} must have finite coordinates, got non-finite values")
  return x


def dihedral_angles(positions: ArrayLike, quads: Any) -> jax.Array:
  """Dihedrals of ``(..., n_atoms, 3)`` positions for atom quadruples ``(k, 4)`` -> ``(..., k)``.

  Raises:
    ValueError: a bad shape, indices outside ``[0, n_atoms)``, non-finite positions (checked
      when concrete).
  """
  x = _check_positions(positions)
  q = _check_quads(quads, x.shape[-2])
  pts = [jnp.take(x, jnp.asarray(q[:, j]), axis=-2) for j in range(4)]
  return dihedral_angle(*pts)


def backbone_dihedrals(positions: ArrayLike, phi_atoms: Any, psi_atoms: Any) -> jax.Array:
  """``(phi, psi)`` of ``(..., n_atoms, 3)`` positions -> ``(..., 2)`` radians.

  ``phi_atoms = (C_prev, N, CA, C)`` and ``psi_atoms = (N, CA, C, N_next)`` (for alanine
  dipeptide ``MolecularSystem.phi_atoms`` / ``psi_atoms``: ``(4, 6, 8, 14)`` and
  ``(6, 8, 14, 16)``).
  """
  return dihedral_angles(positions, np.stack([np.asarray(phi_atoms), np.asarray(psi_atoms)]))


def _check_bins(bins: Any) -> None:
  if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
    raise ValueError(f"bins must be a positive integer, got bins={bins!r}")


def ramachandran_histogram(angles: ArrayLike, bins: int = 60) -> jax.Array:
  """The normalized 2-D histogram of ``(N, 2)`` ``(phi, psi)`` angles on ``[-pi, pi)^2``.

  Returns ``(bins, bins)`` probabilities (``[i, j]``: phi bin ``i``, psi bin ``j``); angles are
  wrapped into ``[-pi, pi)`` first.

  Raises:
    ValueError: ``angles`` not ``(N, 2)`` with ``N >= 1``, non-finite (when concrete), or
      ``bins < 1``.
  """
  _check_bins(bins)
  a = jnp.asarray(angles)
  if a.ndim != 2 or a.shape[1] != 2 or a.shape[0] < 1:
    raise ValueError(f"angles must have shape (N, 2) with N >= 1, got {a.shape}")
  if core.is_concrete(a) and not bool(jnp.all(jnp.isfinite(a))):
    raise ValueError("angles must be finite, got non-finite values")
  wrapped = jnp.mod(a + math.pi, 2 * math.pi)
  idx = jnp.clip(jnp.floor(wrapped / (2 * math.pi) * bins).astype(jnp.int32), 0, bins - 1)
  flat = idx[:, 0] * bins + idx[:, 1]
  counts = jnp.zeros(bins * bins, a.dtype).at[flat].add(1.0)
  return (counts / a.shape[0]).reshape(bins, bins)


def free_energy_surface(probabilities: ArrayLike, kT: float = 1.0) -> jax.Array:
  """``F = -kT log p``, shifted so its minimum is 0; ``+inf`` in empty cells (any shape).

  With ``kT`` in kJ/mol (``thermal_energy(310.)``) the result is in kJ/mol; ``kT = 1`` gives
  units of kT.
  """
  if not (isinstance(kT, (int, float)) and math.isfinite(kT) and kT > 0):
    raise ValueError(f"kT must be a finite number > 0, got kT={kT!r}")
  p = jnp.asarray(probabilities)
  logp = jnp.where(p > 0, jnp.log(jnp.where(p > 0, p, 1.0)), -jnp.inf)
  return -kT * (logp - jnp.max(logp))


def ramachandran_js_divergence(angles_a: ArrayLike, angles_b: ArrayLike, bins: int = 60
                               ) -> jax.Array:
  """Jensen-Shannon divergence (nats) of the Ramachandran histograms of two ``(N, 2)`` samples.

  ``JS(p, q) = KL(p || m) / 2 + KL(q || m) / 2`` with ``m = (p + q) / 2``: 0 for equal
  histograms, ``log 2`` for disjoint ones, symmetric.
  """
  return tib.js_divergence(ramachandran_histogram(angles_a, bins),
                           ramachandran_histogram(angles_b, bins))


def tica_features(positions: ArrayLike, atoms: Any, dihedral_quads: Any = ()) -> jax.Array:
  """TICA features of ``(..., n_atoms, 3)`` positions -> ``(..., m (m - 1) / 2 + 2 k)``.

  The distances between every pair of the ``m`` ``atoms`` (upper triangle, row-major), then
  ``sin`` and ``cos`` of the ``k`` dihedrals ``dihedral_quads`` (``(k, 4)``; sines first).
  The reference uses its C, N and S atoms and phi, psi, omega.
  """
  x = _check_positions(positions)
  idx = np.asarray(atoms)
  if idx.ndim != 1 or idx.size < 2 or not np.issubdtype(idx.dtype, np.integer) or (
      idx.min() < 0 or idx.max() >= x.shape[-2]):
    raise ValueError(f"atoms must be >= 2 indices in [0, {x.shape[-2]}), got {idx.tolist()}")
  sub = jnp.take(x, jnp.asarray(idx), axis=-2)
  i, j = np.triu_indices(idx.size, k=1)
  diff = jnp.take(sub, jnp.asarray(i), axis=-2) - jnp.take(sub, jnp.asarray(j), axis=-2)
  feats = [jnp.linalg.norm(diff, axis=-1)]
  if np.asarray(dihedral_quads).size:
    ang = dihedral_angles(x, np.asarray(dihedral_quads))
    feats += [jnp.sin(ang), jnp.cos(ang)]
  return jnp.concatenate(feats, axis=-1)


def fit_tica(features: ArrayLike, lag: int) -> tib.TICA:
  """TICA of ``(T, d)`` or ``(n, T, d)`` features at ``lag`` frames (``representation.tib.tica``).

  ``tib.tica_transform(model, features)[..., 0]`` is then TIC0, the slowest component (its
  sign is arbitrary).

  Raises:
    ValueError: a bad shape, ``lag`` not in ``[1, T)``, non-finite features.
  """
  f = jnp.asarray(features)
  if f.ndim == 2:
    f = f[None]
  if f.ndim != 3:
    raise ValueError(f"features must have shape (T, d) or (n, T, d), got {jnp.shape(features)}")
  if isinstance(lag, bool) or not isinstance(lag, (int, np.integer)) or lag < 1:
    raise ValueError(f"lag must be a positive integer, got lag={lag!r}")
  if lag >= f.shape[1]:
    raise ValueError(f"lag must be smaller than the trajectory length T={f.shape[1]}, got "
                     f"lag={lag}")
  return tib.tica(f, lag)


def autocorrelation(x: ArrayLike) -> jax.Array:
  """The normalized autocorrelation ``rho_k``, ``k = 0..N-1``, of series ``(..., N)``.

  ``rho_k = sum_t (x_t - mean)(x_{t+k} - mean) / sum_t (x_t - mean)^2`` (the standard biased
  estimator, ``rho_0 = 1``), by FFT with zero padding. A constant series (a Markov chain that
  never moved; constant up to a few rounding errors) is perfectly correlated: ``rho_k = 1``.
  """
  x = jnp.asarray(x)
  if x.ndim < 1 or x.shape[-1] < 2:
    raise ValueError(f"x must have a last (time) axis of length >= 2, got shape {x.shape}")
  n = x.shape[-1]
  xc = x - jnp.mean(x, axis=-1, keepdims=True)
  size = 1 << (2 * n - 1).bit_length()
  f = jnp.fft.rfft(xc, n=size, axis=-1)
  acov = jnp.fft.irfft(f * jnp.conj(f), n=size, axis=-1)[..., :n]
  var = acov[..., :1]
  moving = (var > 0) & ~_is_constant(x)[..., None]
  rho = jnp.where(moving, acov / jnp.where(moving, var, 1.0), 1.0)
  return rho.at[..., 0].set(1.0)


def effective_sample_size(x: ArrayLike) -> jax.Array:
  """ESS of series ``(..., N)`` -> ``(...)``: ``N / (1 + 2 sum_{k=1}^{K-1} rho_k)``.

  ``K`` is the first lag ``>= 1`` with ``rho_K <= 0`` (the reference writes the same as
  ``N / (-1 + 2 sum_{k=0}^{K-1} rho_k)``). For an AR(1) series with coefficient ``a > 0`` it
  approaches ``N (1 - a) / (1 + a)``. A constant series (a chain stuck in its start) has ESS 1.
  """
  rho = autocorrelation(x)
  n = rho.shape[-1]
  positive = jnp.cumprod((rho[..., 1:] > 0).astype(rho.dtype), axis=-1)
  tau = 1.0 + 2.0 * jnp.sum(rho[..., 1:] * positive, axis=-1)
  return jnp.where(_is_constant(jnp.asarray(x)), 1.0, n / tau)


def multichain_effective_sample_size(chains: ArrayLike) -> jax.Array:
  r"""ESS of ``m`` chains ``(m, N)`` of one quantity together, counting their disagreement.

  The multi-chain estimator of Gelman et al. (BDA3, Sec. 11.5; Vehtari et al. 2021 without
  the rank normalization): with ``W`` the mean within-chain variance, ``B / N`` the variance
  of the chain means and ``var+ = (N - 1) / N W + B / N``,

  .. math::  \hat\rho_k = 1 - \frac{W - \frac{1}{m}\sum_j \hat c_{j,k}}{\mathrm{var}^+},
             \qquad \mathrm{ESS} = \frac{m N}{1 + 2 \sum_{k=1}^{K-1} \hat\rho_k}

  (``c_{j,k}`` chain ``j``'s autocovariance at lag ``k``, ``K`` the first lag with
  ``rho_K <= 0``, as :func:`effective_sample_size`). Unlike the single-chain ESS, chains that
  each jitter about a different point (stuck near their starts) are not counted as
  independent draws: when the chain means disagree ``rho_k`` stays near 1, and ``m`` chains
  that never move have ``ESS = m N / (2 N - 1)``, about ``m / 2``. For ``m`` independent
  stationary chains it approaches the sum of their single-chain ESS.
  """
  x = jnp.asarray(chains)
  if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
    raise ValueError(f"chains must have shape (m, N) with m >= 2 chains of N >= 2 steps, got "
                     f"shape {x.shape}")
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  m, n = x.shape
  means = jnp.mean(x, axis=1, keepdims=True)
  xc = x - means
  size = 1 << (2 * n - 1).bit_length()
  f = jnp.fft.rfft(xc, n=size, axis=-1)
  acov = jnp.fft.irfft(f * jnp.conj(f), n=size, axis=-1)[:, :n] / n  # biased, (m, n)
  w = jnp.mean(acov[:, 0]) * n / (n - 1)
  b_over_n = jnp.var(means[:, 0], ddof=1)
  var_plus = (n - 1) / n * w + b_over_n
  rho = 1.0 - (w - jnp.mean(acov, axis=0)) / jnp.where(var_plus > 0, var_plus, 1.0)
  rho = jnp.where(var_plus > 0, rho, 1.0)
  positive = jnp.cumprod((rho[1:] > 0).astype(rho.dtype))
  tau = 1.0 + 2.0 * jnp.sum(rho[1:] * positive)
  return m * n / tau


def _is_constant(x: jax.Array) -> jax.Array:
  """Series ``(..., N)`` whose spread is within a few rounding errors of their magnitude (the
  same state, its features computed by differently vectorized code)."""
  dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
  spread = jnp.max(x, axis=-1) - jnp.min(x, axis=-1)
  scale = jnp.max(jnp.abs(x), axis=-1)
  return spread <= 64 * jnp.finfo(dtype).eps * jnp.maximum(scale, jnp.finfo(dtype).tiny)


def ess_per_second(x: ArrayLike, seconds: float) -> jax.Array:
  """``effective_sample_size(x) / seconds``: the quantity Timewarp's speed-up compares."""
  if not (isinstance(seconds, (int, float, np.floating)) and math.isfinite(seconds)
          and seconds > 0):
    raise ValueError(f"seconds must be a finite number > 0, got seconds={seconds!r}")
  return effective_sample_size(x) / seconds
