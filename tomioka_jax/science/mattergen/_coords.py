"""The coordinate corruption of MatterGen: a wrapped variance-exploding SDE on the unit torus.

Fractional coordinates x in [0, 1)^3 of a crystal with n atoms diffuse as

    dx = g(t) dW  (mod 1),    sigma_t = n^(-1/3) sigma_min (sigma_max / sigma_min)^t,
    g(t) = sigma_t sqrt(2 log(sigma_max / sigma_min)),  so d(sigma_t^2)/dt = g(t)^2,

with sigma_min = 0.01, sigma_max = 5 (the reference's ``NumAtomsVarianceAdjustedWrappedVESDE``:
the n^(-1/3) keeps the Cartesian noise per atom comparable across cell sizes). The marginal is
the wrapped normal

    p_t(x | x_0) = sum_{k in Z^3} N(x + k; x_0, sigma_t^2 I),

whose score, in fractional coordinates,

    grad_x log p_t = -sum_k w_k (x - x_0 + k) / sigma_t^2,
    w = softmax_k(-|x - x_0 + k|^2 / (2 sigma_t^2)),

the reference truncates to the images k in {-W..W}^3, W = 3, with the unit cube as the wrapping
boundary (``mattergen/diffusion/wrapped/wrapped_normal_loss.py``): the images live in
fractional space, not Cartesian. Because the covariance is isotropic and the truncation set is a
product, the 343-image softmax factorizes exactly into three 7-image softmaxes, one per axis,
which is how it is computed here. The difference x - x_0 is first reduced to [-1/2, 1/2] (the
nearest image; the reference uses the raw difference in (-1, 1)), which changes the truncated
sum only by less than :func:`wrapped_normal_truncation_bound`. The truncation is accurate for
sigma_t up to about 0.5 (error below 2.5e-9; 0.04 at sigma_t = 1); near sigma_max the density is
nearly flat, the exact score is nearly 0 and the truncated one is not (the bound says by how
much): this is the reference's training target and is kept as such.

Reverse time: the wrapped ancestral predictor (a VE ancestral step, then mod 1) and the wrapped
Langevin corrector, as the reference's ``WrappedAncestralSamplingPredictor`` and
``WrappedLangevinCorrector``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from tomioka_jax import core
from tomioka_jax.science.mattergen import _lattice


@dataclasses.dataclass(frozen=True)
class WrappedVESDE:
  """Hyperparameters of the atom-count-adjusted wrapped VE SDE (the reference's defaults).

  Attributes:
    sigma_min, sigma_max: the geometric noise range before the n^(-1/3) scaling.
    num_images: W, the images {-W..W} per axis kept in the wrapped-normal score.
  """
  sigma_min: float = 0.01
  sigma_max: float = 5.0
  num_images: int = 3

  def __post_init__(self):
    if not 0.0 < self.sigma_min < self.sigma_max:
      raise ValueError(
          f"sigma_min, sigma_max must satisfy 0 < sigma_min < sigma_max, got {self.sigma_min}, "
          f"{self.sigma_max}")
    if not (isinstance(self.num_images, int) and self.num_images >= 0):
      raise ValueError(f"num_images must be a non-negative integer, got {self.num_images!r}")


COORD_SDE = WrappedVESDE()


def _check_sde(sde: WrappedVESDE) -> None:
  if not isinstance(sde, WrappedVESDE):
    raise ValueError(f"sde must be a WrappedVESDE, got {type(sde).__name__}")


def wrap_frac(x: jax.Array) -> jax.Array:
  """x mod 1 in [0, 1) (a value that rounds to 1.0 in floating point is mapped to 0)."""
  y = jnp.mod(x, 1.0)
  return jnp.where(y >= 1.0, 0.0, y)


def coord_sigma(t: jax.Array, num_atoms: jax.Array, sde: WrappedVESDE = COORD_SDE) -> jax.Array:
  """sigma_t = n^(-1/3) sigma_min (sigma_max / sigma_min)^t, shape (B,)."""
  _check_sde(sde)
  n = jnp.asarray(num_atoms).astype(jnp.result_type(float))
  return sde.sigma_min * (sde.sigma_max / sde.sigma_min) ** t / jnp.cbrt(n)


def coord_diffusion(t: jax.Array, num_atoms: jax.Array,
                    sde: WrappedVESDE = COORD_SDE) -> jax.Array:
  """g(t) = sigma_t sqrt(2 log(sigma_max / sigma_min)), the SDE's diffusion coefficient."""
  return coord_sigma(t, num_atoms, sde) * math.sqrt(2.0 * math.log(sde.sigma_max / sde.sigma_min))


def coord_sample_marginal(key: jax.Array, frac0: jax.Array, t: jax.Array, num_atoms: jax.Array,
                          sde: WrappedVESDE = COORD_SDE) -> jax.Array:
  """Draws x_t = (x_0 + sigma_t z) mod 1, shape (B, N, 3)."""
  sigma = coord_sigma(t, num_atoms, sde).astype(frac0.dtype)
  z = core.flat_normal(key, frac0.shape, frac0.dtype)
  return wrap_frac(frac0 + sigma[:, None, None] * z)


def coord_prior_sample(key: jax.Array, mask: jax.Array, sde: WrappedVESDE = COORD_SDE,
                       dtype=float) -> jax.Array:
  """The reference's prior (sigma_1 z) mod 1 on real atoms, 0 on padding; shape (B, N, 3).

  For n <= 125 (sigma_1 >= 1) it is uniform on the torus to within exp(-2 pi^2) per Fourier mode.
  """
  b, n = mask.shape
  sigma = coord_sigma(jnp.ones((b,)), jnp.sum(mask, axis=-1), sde).astype(dtype)
  z = core.flat_normal(key, (b, n, 3), dtype)
  return jnp.where(mask[:, :, None], wrap_frac(sigma[:, None, None] * z), 0.0)


def nearest_image(d: jax.Array) -> jax.Array:
  """d - round(d), the representative of d mod 1 in [-1/2, 1/2]."""
  return d - jnp.round(d)


def wrapped_normal_score(x: jax.Array, mean: jax.Array, variance: jax.Array,
                         num_images: int = 3) -> jax.Array:
  """The score in x of the wrapped normal sum_k N(x + k; mean, variance I), truncated to |k| <= W.

  Per axis (the isotropic 3-D sum factorizes), with d = nearest_image(x - mean):

      score = -sum_{k=-W}^{W} softmax_k(-(d + k)^2 / (2 variance)) (d + k) / variance.

  Args:
    x, mean: fractional coordinates, same shape (..., 3) (any trailing shape works).
    variance: broadcastable to ``x`` (pass sigma^2 with explicit trailing axes).
    num_images: W >= 0.

  Returns:
    The truncated score, the shape of ``x``.
  """
  if not (isinstance(num_images, int) and num_images >= 0):
    raise ValueError(f"num_images must be a non-negative integer, got {num_images!r}")
  d = nearest_image(x - mean)
  k = jnp.arange(-num_images, num_images + 1, dtype=d.dtype)
  u = d[..., None] + k.reshape((1,) * d.ndim + (-1,))    # (..., 2W+1)
  var = jnp.broadcast_to(variance, d.shape)[..., None]
  w = jax.nn.softmax(-(u**2) / (2.0 * var), axis=-1)
  return -jnp.sum(w * u, axis=-1) / var[..., 0]


def wrapped_normal_truncation_bound(sigma: jax.Array, num_images: int = 3,
                                    num_tail_terms: int = 2000) -> jax.Array:
  """A bound on |score_W - score| per axis for any x (difference reduced to |d| <= 1/2).

  With phi(u) = exp(-u^2 / (2 sigma^2)), A = sum_{|k| <= W} phi(d + k) >= phi(1/2), the omitted
  mass A' = sum_{|k| > W} phi(d + k) <= T0 = 2 sum_{j > W} phi(j - 1/2), and the omitted first
  moment |B'| <= T1 = 2 sum_{j > W} (j + 1/2) phi(j - 1/2); the truncated mean of d + k lies in
  [-W - 1/2, W + 1/2], so

      |score_W - score| <= ((W + 1/2) T0 + T1) / (phi(1/2) sigma^2).

  The tail sums are summed to ``num_tail_terms`` terms (the rest is below exp(-(2000 - W)^2 /
  (2 sigma^2)), negligible for sigma < 100).
  """
  if not (isinstance(num_images, int) and num_images >= 0):
    raise ValueError(f"num_images must be a non-negative integer, got {num_images!r}")
  sigma = jnp.asarray(sigma)
  j = jnp.arange(num_images + 1, num_images + 1 + num_tail_terms, dtype=sigma.dtype)
  j = j.reshape((1,) * sigma.ndim + (-1,))
  var = sigma[..., None] ** 2
  # phi(j - 1/2) / phi(1/2), in one exponent so that small sigma underflows to 0, not 0 / 0.
  ratio = jnp.exp(-((j - 0.5) ** 2 - 0.25) / (2.0 * var))
  t0 = 2.0 * jnp.sum(ratio, axis=-1)
  t1 = 2.0 * jnp.sum((j + 0.5) * ratio, axis=-1)
  return ((num_images + 0.5) * t0 + t1) / sigma**2


def coord_marginal_score(x: jax.Array, frac0: jax.Array, t: jax.Array, num_atoms: jax.Array,
                         sde: WrappedVESDE = COORD_SDE) -> jax.Array:
  """The (truncated) wrapped-normal score of p_t(x | x_0), shape (B, N, 3)."""
  sigma = coord_sigma(t, num_atoms, sde).astype(x.dtype)
  return wrapped_normal_score(x, frac0, (sigma**2)[:, None, None], sde.num_images)


def coord_predictor_step(key: jax.Array, frac: jax.Array, score: jax.Array, t: jax.Array,
                         dt: jax.Array, mask: jax.Array, sde: WrappedVESDE = COORD_SDE
                         ) -> tuple[jax.Array, jax.Array]:
  """One wrapped ancestral step from t to s = t + dt (dt < 0); returns (sample, mean), mod 1.

      mean = x + (sigma_t^2 - sigma_s^2) score,
      x_s = mean + sqrt(sigma_t^2 - sigma_s^2) sigma_s / sigma_t z,

  with sigma_s = 0 at s <= 0 (the last step returns the noise-free mean). Padding atoms stay 0.
  """
  n = jnp.sum(mask, axis=-1)
  s = t + dt
  sig_t = coord_sigma(t, n, sde).astype(frac.dtype)
  sig_s = jnp.where(s <= 0.0, 0.0, coord_sigma(s, n, sde)).astype(frac.dtype)
  var_ts = jnp.maximum(sig_t**2 - sig_s**2, 0.0)
  std = jnp.sqrt(var_ts) * sig_s / sig_t
  z = core.flat_normal(key, frac.shape, frac.dtype)
  mean = frac + var_ts[:, None, None] * score
  sample = mean + std[:, None, None] * z
  m = mask[:, :, None]
  return jnp.where(m, wrap_frac(sample), 0.0), jnp.where(m, wrap_frac(mean), 0.0)


def coord_corrector_step(key: jax.Array, frac: jax.Array, score: jax.Array, mask: jax.Array, *,
                         snr: float = 0.4, max_step_size: float = 1e6, per_crystal: bool = False
                         ) -> tuple[jax.Array, jax.Array]:
  """One wrapped Langevin corrector step; returns (sample, mean), mod 1.

      mean = x + eps score,  x' = mean + sqrt(2 eps) z,

  eps = min(2 (snr ||z|| / ||score||)^2, max_step_size) (alpha = 1 for a VE SDE), the norms over
  each crystal's real atoms, averaged over the batch as the reference (``per_crystal=False``) or
  kept per crystal. Padding atoms stay 0.
  """
  if not snr > 0.0:
    raise ValueError(f"snr must be positive, got {snr}")
  if not max_step_size > 0.0:
    raise ValueError(f"max_step_size must be positive, got {max_step_size}")
  m = mask[:, :, None]
  z = jnp.where(m, core.flat_normal(key, frac.shape, frac.dtype), 0.0)
  score = jnp.where(m, score, 0.0)
  gnorm = _lattice.corrector_norm(jnp.sqrt(jnp.sum(score**2, axis=(1, 2))), per_crystal)
  znorm = _lattice.corrector_norm(jnp.sqrt(jnp.sum(z**2, axis=(1, 2))), per_crystal)
  eps = _lattice.langevin_step_size(gnorm, znorm, snr, jnp.ones_like(gnorm), max_step_size)
  mean = frac + eps[:, None, None] * score
  sample = mean + jnp.sqrt(2.0 * eps)[:, None, None] * z
  return jnp.where(m, wrap_frac(sample), 0.0), jnp.where(m, wrap_frac(mean), 0.0)


def coord_score_from_output(output: jax.Array, t: jax.Array, num_atoms: jax.Array,
                            sde: WrappedVESDE = COORD_SDE) -> jax.Array:
  """The score from a model output trained on the std-scaled score: output / sigma_t."""
  sigma = coord_sigma(t, num_atoms, sde).astype(output.dtype)
  return output / sigma[:, None, None]
