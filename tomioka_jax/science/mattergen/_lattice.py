"""The lattice corruption of MatterGen: a variance-preserving SDE whose limit depends on the
atom count.

The lattice ``L`` (3 x 3, rows = lattice vectors, made symmetric by the polar decomposition) of a
crystal with ``n`` atoms diffuses under

    dL = -1/2 beta(t) (L - mu_n) dt + sqrt(beta(t) v_n) dW,      beta(t) = b0 + t (b1 - b0),

on t in [0, 1], with the limit mean mu_n = (n / rho)^(1/3) I (rho the mean atom density of the
data, atoms per cubic angstrom) and the limit variance v_n = c n^(2/3) per entry (c = 0.25), so
the prior's cell volume scales with n. The marginal is Gaussian:

    L_t | L_0 ~ N(a_t L_0 + (1 - a_t) mu_n, (1 - a_t^2) v_n),
    a_t = exp(-1/4 t^2 (b1 - b0) - 1/2 t b0).

The noise is symmetric: the diagonal entries are i.i.d. N(0, 1) and the off-diagonal pairs are
(e_ij + e_ji) / sqrt(2), so each of the six free entries of a symmetric matrix has unit variance
(the reference's ``make_noise_symmetric_preserve_variance``). The score used everywhere is the
entrywise one, -(L - mean) / var: on the six free entries (the diagonal and the upper triangle)
it is exactly the gradient of the log density of the symmetric Gaussian.

Reverse time uses the reference's predictor-corrector pair: the ancestral-sampling predictor
(the posterior of L_s given L_t and the denoised L_0 = (L_t + sigma_t^2 score) / a_t, Ho et al.
2020 eq. 7 shifted by the limit mean) and a Langevin corrector whose step size is set by a
signal-to-noise ratio, followed by the polar decomposition. Reference:
``mattergen/common/diffusion/corruption.py`` (``LatticeVPSDE``) and
``mattergen/common/diffusion/predictors_correctors.py``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from tomioka_jax import core

# The mean atomic number density of MP-20 (atoms per cubic angstrom), which sets the limit mean
# (n / rho)^(1/3) I of the lattice diffusion in the reference's configuration.
MP20_ATOM_DENSITY = 0.0577
# The reference clips a_t / a_s from below at this value in the ancestral predictor.
_MIN_ALPHA_RATIO = 1e-3


@dataclasses.dataclass(frozen=True)
class LatticeVPSDE:
  """Hyperparameters of the lattice VP SDE (the reference's defaults).

  Attributes:
    beta_min, beta_max: the linear schedule beta(t) = beta_min + t (beta_max - beta_min).
    limit_density: rho in the limit mean (n / rho)^(1/3) I, atoms per cubic angstrom.
    limit_var_scale: c in the limit variance c n^(2/3).
  """
  beta_min: float = 0.1
  beta_max: float = 20.0
  limit_density: float = MP20_ATOM_DENSITY
  limit_var_scale: float = 0.25

  def __post_init__(self):
    if not 0.0 < self.beta_min <= self.beta_max:
      raise ValueError(
          f"beta_min, beta_max must satisfy 0 < beta_min <= beta_max, got {self.beta_min}, "
          f"{self.beta_max}")
    if not self.limit_density > 0.0:
      raise ValueError(f"limit_density must be positive, got {self.limit_density}")
    if not self.limit_var_scale > 0.0:
      raise ValueError(f"limit_var_scale must be positive, got {self.limit_var_scale}")


LATTICE_SDE = LatticeVPSDE()


def _check_sde(sde: LatticeVPSDE) -> None:
  if not isinstance(sde, LatticeVPSDE):
    raise ValueError(f"sde must be a LatticeVPSDE, got {type(sde).__name__}")


def _b33(x: jax.Array) -> jax.Array:
  """(B,) -> (B, 1, 1)."""
  return x[:, None, None]


def lattice_beta(t: jax.Array, sde: LatticeVPSDE = LATTICE_SDE) -> jax.Array:
  """beta(t) = beta_min + t (beta_max - beta_min)."""
  _check_sde(sde)
  return sde.beta_min + t * (sde.beta_max - sde.beta_min)


def lattice_mean_coeff(t: jax.Array, sde: LatticeVPSDE = LATTICE_SDE) -> jax.Array:
  """a_t = exp(-1/2 int_0^t beta) = exp(-1/4 t^2 (beta_max - beta_min) - 1/2 t beta_min)."""
  _check_sde(sde)
  return jnp.exp(-0.25 * t**2 * (sde.beta_max - sde.beta_min) - 0.5 * t * sde.beta_min)


def lattice_limit_mean(num_atoms: jax.Array, sde: LatticeVPSDE = LATTICE_SDE) -> jax.Array:
  """mu_n = (n / rho)^(1/3) I, shape (B, 3, 3) for ``num_atoms`` of shape (B,)."""
  _check_sde(sde)
  n = jnp.asarray(num_atoms)
  side = jnp.cbrt(n.astype(jnp.result_type(float)) / sde.limit_density)
  return _b33(side) * jnp.eye(3, dtype=side.dtype)[None]


def lattice_limit_var(num_atoms: jax.Array, sde: LatticeVPSDE = LATTICE_SDE) -> jax.Array:
  """v_n = c n^(2/3) per entry, shape (B,)."""
  _check_sde(sde)
  n = jnp.asarray(num_atoms).astype(jnp.result_type(float))
  return sde.limit_var_scale * jnp.cbrt(n) ** 2


def lattice_marginal(lattice0: jax.Array, t: jax.Array, num_atoms: jax.Array,
                     sde: LatticeVPSDE = LATTICE_SDE) -> tuple[jax.Array, jax.Array]:
  """The mean (B, 3, 3) and standard deviation (B,) of L_t given L_0.

  mean = a_t L_0 + (1 - a_t) mu_n, std = sqrt((1 - a_t^2) v_n).
  """
  a = lattice_mean_coeff(t, sde)
  mean = _b33(a) * lattice0 + _b33(1.0 - a) * lattice_limit_mean(num_atoms, sde)
  std = jnp.sqrt((1.0 - a**2) * lattice_limit_var(num_atoms, sde))
  return mean, std


def symmetric_noise(key: jax.Array, shape: tuple[int, ...], dtype=float) -> jax.Array:
  """Symmetric Gaussian noise (..., 3, 3): diagonal N(0, 1), off-diagonal (e_ij + e_ji)/sqrt(2).

  Every entry has unit variance; the six free entries are independent.
  """
  if len(shape) < 2 or shape[-1] != shape[-2]:
    raise ValueError(f"shape must end in a square (d, d), got {shape}")
  e = core.flat_normal(key, shape, dtype)
  eye = jnp.broadcast_to(jnp.eye(shape[-1], dtype=e.dtype), e.shape)
  return (1.0 - eye) * (e + jnp.swapaxes(e, -1, -2)) / jnp.sqrt(2.0).astype(e.dtype) + eye * e


def symmetric_lattice(lattice: jax.Array) -> jax.Array:
  """The symmetric factor P of the polar decomposition L = P U (U a rotation), P = (L L^T)^(1/2).

  Rows of ``L`` are lattice vectors; replacing ``L`` by ``P = L U^T`` rotates the Cartesian frame,
  so fractional coordinates stay valid. Computed by the SVD L = W S V^T as P = W S W^T (the
  reference's ``compute_lattice_polar_decomposition``).
  """
  w, s, _ = jnp.linalg.svd(lattice)
  return jnp.einsum("...ij,...j,...kj->...ik", w, s, w)


def lattice_sample_marginal(key: jax.Array, lattice0: jax.Array, t: jax.Array,
                            num_atoms: jax.Array, sde: LatticeVPSDE = LATTICE_SDE
                            ) -> tuple[jax.Array, jax.Array]:
  """Draws L_t ~ p(L_t | L_0) with symmetric noise; returns (L_t, z) with L_t = mean + std z."""
  mean, std = lattice_marginal(lattice0, t, num_atoms, sde)
  z = symmetric_noise(key, lattice0.shape, lattice0.dtype)
  return mean + _b33(std) * z, z


def lattice_marginal_score(lattice: jax.Array, lattice0: jax.Array, t: jax.Array,
                           num_atoms: jax.Array, sde: LatticeVPSDE = LATTICE_SDE) -> jax.Array:
  """grad log p(L_t | L_0) = -(L_t - mean) / std^2 (entrywise), shape (B, 3, 3)."""
  mean, std = lattice_marginal(lattice0, t, num_atoms, sde)
  return -(lattice - mean) / _b33(std**2)


def lattice_prior_sample(key: jax.Array, num_atoms: jax.Array,
                         sde: LatticeVPSDE = LATTICE_SDE, dtype=float) -> jax.Array:
  """Draws L_1 from the limit N(mu_n, v_n) with symmetric noise, shape (B, 3, 3)."""
  n = jnp.asarray(num_atoms)
  z = symmetric_noise(key, (n.shape[0], 3, 3), dtype)
  return lattice_limit_mean(n, sde).astype(z.dtype) + _b33(
      jnp.sqrt(lattice_limit_var(n, sde))).astype(z.dtype) * z


def lattice_predictor_step(key: jax.Array, lattice: jax.Array, score: jax.Array, t: jax.Array,
                           dt: jax.Array, num_atoms: jax.Array, sde: LatticeVPSDE = LATTICE_SDE
                           ) -> tuple[jax.Array, jax.Array]:
  """One ancestral-sampling step from time t to s = t + dt (dt < 0); returns (sample, mean).

  With a_{t|s} = a_t / a_s (clipped below at 1e-3 as the reference) and
  sigma^2_{t|s} = sigma_t^2 - sigma_s^2 a_{t|s}^2:

      mean = (L_t + sigma^2_{t|s} score) / a_{t|s} + (1 - 1 / a_{t|s}) mu_n,
      L_s  = mean + sigma_{t|s} sigma_s / sigma_t z,   z symmetric noise,

  where ``score`` is grad log p_t(L_t). At s <= 0, sigma_s = 0: the step returns the denoised
  mean without noise.
  """
  s = t + dt
  at = lattice_mean_coeff(t, sde)
  as_ = lattice_mean_coeff(jnp.maximum(s, 0.0), sde)
  var_lim = lattice_limit_var(num_atoms, sde)
  sig2_t = (1.0 - at**2) * var_lim
  sig2_s = jnp.where(s <= 0.0, 0.0, (1.0 - as_**2) * var_lim)
  ratio = jnp.clip(at / as_, _MIN_ALPHA_RATIO, 1.0)
  sig2_ts = jnp.maximum(sig2_t - sig2_s * ratio**2, 0.0)
  std = jnp.sqrt(sig2_ts) * jnp.sqrt(sig2_s) / jnp.sqrt(sig2_t)
  x_coeff = 1.0 / ratio
  mean = (_b33(x_coeff) * lattice + _b33(sig2_ts / ratio) * score
          + _b33(1.0 - x_coeff) * lattice_limit_mean(num_atoms, sde).astype(lattice.dtype))
  z = symmetric_noise(key, lattice.shape, lattice.dtype)
  return mean + _b33(std) * z, mean


def langevin_step_size(score_norm: jax.Array, noise_norm: jax.Array, snr: float,
                       alpha: jax.Array, max_step_size: float) -> jax.Array:
  """The corrector's step size eps = min(2 alpha (snr ||z|| / ||score||)^2, max_step_size).

  A zero score (a flat density) gets ``max_step_size``, as in the reference.
  """
  safe = jnp.where(score_norm > 0, score_norm, 1.0)
  eps = 2.0 * alpha * (snr * noise_norm / safe) ** 2
  return jnp.where(score_norm > 0, jnp.minimum(eps, max_step_size), max_step_size)


def corrector_norm(norm: jax.Array, per_crystal: bool) -> jax.Array:
  """Per-crystal norms (B,), or their batch mean broadcast to (B,) (the reference)."""
  return norm if per_crystal else jnp.broadcast_to(jnp.mean(norm), norm.shape)


def lattice_corrector_step(key: jax.Array, lattice: jax.Array, score: jax.Array, t: jax.Array,
                           dt: jax.Array, *, snr: float = 0.2, max_step_size: float = 1e6,
                           per_crystal: bool = False, sde: LatticeVPSDE = LATTICE_SDE
                           ) -> tuple[jax.Array, jax.Array]:
  """One Langevin corrector step at time t, then the polar decomposition; returns (sample, mean).

      mean = L + eps score,  L' = mean + sqrt(2 eps) z,  z symmetric noise,

  eps from :func:`langevin_step_size` with alpha = a_t^2 / a_{t+dt}^2 (the reference's VP
  factor) and the Frobenius norms of ``score`` and ``z``. The reference averages both norms over
  the batch (one step size for all crystals, ``per_crystal=False``); ``per_crystal=True`` uses
  each crystal's own norms, so a crystal's update does not depend on the rest of the batch.
  """
  if not snr > 0.0:
    raise ValueError(f"snr must be positive, got {snr}")
  if not max_step_size > 0.0:
    raise ValueError(f"max_step_size must be positive, got {max_step_size}")
  alpha = (lattice_mean_coeff(t, sde) / lattice_mean_coeff(t + dt, sde)) ** 2
  z = symmetric_noise(key, lattice.shape, lattice.dtype)
  gnorm = corrector_norm(jnp.sqrt(jnp.sum(score**2, axis=(1, 2))), per_crystal)
  znorm = corrector_norm(jnp.sqrt(jnp.sum(z**2, axis=(1, 2))), per_crystal)
  eps = langevin_step_size(gnorm, znorm, snr, alpha, max_step_size)
  mean = lattice + _b33(eps) * score
  sample = mean + _b33(jnp.sqrt(2.0 * eps)) * z
  return symmetric_lattice(sample), symmetric_lattice(mean)


def lattice_score_from_output(output: jax.Array, t: jax.Array, num_atoms: jax.Array,
                              sde: LatticeVPSDE = LATTICE_SDE) -> jax.Array:
  """The score from a model output trained on the std-scaled score: output / sigma_t."""
  _, std = lattice_marginal(jnp.zeros_like(output), t, num_atoms, sde)
  return output / _b33(std).astype(output.dtype)
