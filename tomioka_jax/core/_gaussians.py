"""Diagonal Gaussians and the importance-weighted bound of Gaussian latent-variable models.

One diagonal Gaussian for the whole library: the functions below, on means and
log-variances (products for evidence accumulation, KL to the standard normal, the log density,
reparameterised samples), and :class:`DiagonalNormal`, the same density as a distrax
distribution (``loc``, ``scale``) for code that works with distribution objects. And one IWAE
estimator, :func:`log_mean_exp` of the log importance weights (Burda et al. 2016).

Shared by the multi-level VAE (Bouchacourt, Tomioka, Nowozin 2017), whose group content
posterior is a product of per-observation Gaussians, the N-VAE of the Poincaré VAE paper
(Mathieu et al. 2019), whose prior and posterior are diagonal Gaussians, and Gaussian-attention
scoring (Zhang, Winn, Tomioka 2016), where conjunctions of conditions are products of
Gaussians.

The product of Gaussian densities ``prod_i N(z; m_i, v_i)`` is proportional to
``N(z; m, v)`` with precision ``1/v = sum_i 1/v_i`` and precision-weighted mean
``m = v * sum_i m_i / v_i``: the posterior of ``z`` under a flat prior after observing each
``m_i`` with noise variance ``v_i``. All functions act elementwise over the last (event) axis
and broadcast over leading axes; variances are parametrized by their logarithms for stability.
"""

from __future__ import annotations

import math

import distrax
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike


def product_of_gaussians(mean: ArrayLike, log_var: ArrayLike, *, axis: int = 0,
                         mask: ArrayLike | None = None,
                         prior_precision: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """Normalized product of the diagonal Gaussians along ``axis``: ``(mean, log_var)``.

  .. math::  \\Lambda = \\lambda_0 + \\sum_i 1/v_i, \\qquad
     \\mu = \\Lambda^{-1} \\sum_i \\mu_i / v_i

  Args:
    mean, log_var: per-factor means and log-variances, equal shapes.
    axis: the axis holding the factors (e.g. the members of a group).
    mask: optional 0/1 weights with the shape of ``mean`` up to its trailing event axis (one
      per factor); masked factors are left out, so groups of any size share one array shape.
      A group with no factor gets the prior (needs ``prior_precision > 0``).
    prior_precision: a zero-mean Gaussian prior's precision, multiplied in as one more factor
      (0: a flat prior, the paper's evidence accumulation).

  Returns:
    The product's mean and log-variance, with ``axis`` removed.
  """
  mean = jnp.asarray(mean)
  log_var = jnp.asarray(log_var)
  if mean.shape != log_var.shape:
    raise ValueError(f"mean and log_var must have equal shapes, got {mean.shape} and "
                     f"{log_var.shape}")
  if prior_precision < 0:
    raise ValueError(f"prior_precision must be >= 0, got {prior_precision}")
  precision = jnp.exp(-log_var)
  if mask is not None:
    mask = jnp.asarray(mask, precision.dtype)
    if mask.shape != mean.shape[:-1]:
      raise ValueError(f"mask must have shape {mean.shape[:-1]} (one weight per factor), got "
                       f"{mask.shape}")
    precision = precision * mask[..., None]
  total = jnp.sum(precision, axis=axis) + prior_precision
  product_mean = jnp.sum(precision * mean, axis=axis) / total
  return product_mean, -jnp.log(total)


def kl_to_standard_normal(mean: ArrayLike, log_var: ArrayLike) -> jax.Array:
  """``KL(N(mean, exp(log_var)) || N(0, I))`` summed over the last axis.

  .. math::  \\tfrac12 \\sum_d (\\mu_d^2 + v_d - \\log v_d - 1)
  """
  mean = jnp.asarray(mean)
  log_var = jnp.asarray(log_var)
  return 0.5 * jnp.sum(jnp.square(mean) + jnp.exp(log_var) - log_var - 1.0, axis=-1)


def diag_gaussian_log_prob(x: ArrayLike, mean: ArrayLike, log_var: ArrayLike) -> jax.Array:
  """``log N(x; mean, diag(exp(log_var)))`` summed over the last axis.

  .. math::  -\\tfrac12 \\sum_d \\big(\\log v_d + (x_d - \\mu_d)^2 / v_d + \\log 2\\pi\\big)

  The arguments broadcast against each other explicitly (``(K, d)`` samples against a ``(d,)``
  mean), so it also runs under strict rank promotion.
  """
  x, mean, log_var = jnp.broadcast_arrays(jnp.asarray(x), jnp.asarray(mean),
                                          jnp.asarray(log_var))
  return -0.5 * jnp.sum(log_var + jnp.square(x - mean) * jnp.exp(-log_var) + math.log(2 * math.pi),
                        axis=-1)


def reparameterized_sample(key: jax.Array, mean: ArrayLike, log_var: ArrayLike) -> jax.Array:
  """``mean + exp(log_var / 2) * eps`` with ``eps ~ N(0, I)``: differentiable in both."""
  mean = jnp.asarray(mean)
  eps = jax.random.normal(key, mean.shape, mean.dtype)
  return mean + jnp.exp(0.5 * jnp.asarray(log_var)) * eps


class DiagonalNormal(distrax.Distribution):
  """``N(loc, diag(scale^2))`` over the last axis, as a distrax distribution.

  Its density is :func:`diag_gaussian_log_prob`. Unlike ``distrax.MultivariateNormalDiag`` it
  broadcasts values against ``loc`` explicitly, so that ``log_prob`` of ``(K, d)`` samples of
  a ``(d,)`` location works under strict rank promotion (``jax_numpy_rank_promotion="raise"``,
  which the tests use). Samples are reparameterised: ``loc + scale * eps``.
  """

  def __init__(self, loc: ArrayLike, scale: ArrayLike):
    self._loc = jnp.asarray(loc)
    self._scale = jnp.broadcast_to(jnp.asarray(scale, self._loc.dtype), self._loc.shape)

  @property
  def event_shape(self) -> tuple[int, ...]:
    return self._loc.shape[-1:]

  @property
  def batch_shape(self) -> tuple[int, ...]:
    return self._loc.shape[:-1]

  def _sample_n(self, key: jax.Array, n: int) -> jax.Array:
    shape = (n,) + self._loc.shape
    eps = jax.random.normal(key, shape, self._loc.dtype)
    return jnp.broadcast_to(self._loc, shape) + jnp.broadcast_to(self._scale, shape) * eps

  def log_prob(self, value: ArrayLike) -> jax.Array:
    return diag_gaussian_log_prob(jnp.asarray(value, self._loc.dtype), self._loc,
                                  2.0 * jnp.log(self._scale))


def log_mean_exp(log_weights: ArrayLike, axis: int = 0) -> jax.Array:
  """The importance-weighted (IWAE) estimate of ``log p(x)`` from K log importance weights.

  .. math::  \\mathcal L_K = \\log \\frac1K \\sum_{k=1}^K w_k, \\qquad
     \\log w_k = \\log p(x, z_k) - \\log q(z_k | x), \\quad z_k \\sim q(z | x)

  computed as ``logsumexp - log K`` (finite for weights of any magnitude). With ``K = 1`` it
  is the one-sample ELBO; by Jensen's inequality it is at least the mean of its K one-sample
  ELBOs, and ``E[L_K]`` increases to ``log p(x)`` with K (Burda, Grosse, Salakhutdinov 2016).
  Used by the ML-VAE's ``group_iwae`` and the P-VAE's ``iwae_bound``.

  Args:
    log_weights: log importance weights, the K samples along ``axis``.
    axis: the sample axis (removed).
  """
  log_weights = jnp.asarray(log_weights)
  return jax.nn.logsumexp(log_weights, axis=axis) - math.log(log_weights.shape[axis])


__all__ = [
    "DiagonalNormal",
    "log_mean_exp",
    "product_of_gaussians",
    "kl_to_standard_normal",
    "diag_gaussian_log_prob",
    "reparameterized_sample",
]
