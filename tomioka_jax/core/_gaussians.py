"""Diagonal Gaussians: products (evidence accumulation), KL divergences, log densities.

Shared by the grouped-evidence posterior of the multi-level VAE (Bouchacourt, Tomioka, Nowozin
2017), whose group content posterior is a product of per-observation Gaussians, and by
Gaussian-attention scoring (Zhang, Winn, Tomioka 2016), where conjunctions of conditions are
products of Gaussians.

The product of Gaussian densities ``prod_i N(z; m_i, v_i)`` is proportional to
``N(z; m, v)`` with precision ``1/v = sum_i 1/v_i`` and precision-weighted mean
``m = v * sum_i m_i / v_i``: the posterior of ``z`` under a flat prior after observing each
``m_i`` with noise variance ``v_i``. All functions act elementwise over the last (event) axis
and broadcast over leading axes; variances are parametrized by their logarithms for stability.
"""

from __future__ import annotations

import math

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
  """``log N(x; mean, diag(exp(log_var)))`` summed over the last axis."""
  x, mean, log_var = jnp.asarray(x), jnp.asarray(mean), jnp.asarray(log_var)
  return -0.5 * jnp.sum(log_var + jnp.square(x - mean) * jnp.exp(-log_var) + math.log(2 * math.pi),
                        axis=-1)


def reparameterized_sample(key: jax.Array, mean: ArrayLike, log_var: ArrayLike) -> jax.Array:
  """``mean + exp(log_var / 2) * eps`` with ``eps ~ N(0, I)``: differentiable in both."""
  mean = jnp.asarray(mean)
  eps = jax.random.normal(key, mean.shape, mean.dtype)
  return mean + jnp.exp(0.5 * jnp.asarray(log_var)) * eps


__all__ = [
    "product_of_gaussians",
    "kl_to_standard_normal",
    "diag_gaussian_log_prob",
    "reparameterized_sample",
]
