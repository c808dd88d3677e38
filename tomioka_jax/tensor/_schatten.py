"""Tensor denoising with the overlapped and latent Schatten-1 norms, and their predicted MSE.

"Convex Tensor Decomposition via Structured Schatten Norm Regularization", Ryota Tomioka,
Taiji Suzuki, NIPS 2013, arXiv:1303.6370.

A tensor ``Y = X* + E`` is observed in full and ``X*`` is estimated by

.. math:: \\hat X = \\arg\\min_X \\tfrac12 \\|Y - X\\|_F^2 + \\lambda \\|X\\|,

with ``||.||`` the overlapped Schatten-1 norm ``sum_k ||X_(k)||_*`` or the latent one
``inf_{sum_k W_k = X} sum_k ||W_k,(k)||_*``. The estimate is the proximal operator of the
norm at ``Y``; we compute it with the fully observed instance of the Constraint and Mixture
ADMMs of :mod:`tomioka_jax.tensor._completion` (the authors do the same), run by the
family's engine (:mod:`tomioka_jax.tensor._admm`) with its tuned defaults, which stop on a
certified relative duality gap. The module also gives the paper's two complexity measures,
to which each method's mean squared error ``||X_hat - X*||_F^2 / N`` is proportional.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from tomioka_jax import core
from tomioka_jax.tensor import _admm as admm
from tomioka_jax.tensor import _completion as completion
from tomioka_jax.tensor import _prox as prox

# Denoising returns exactly what a completion solve returns (estimate, components, gap).
DenoisingResult = completion.CompletionResult


def _prepare(y: ArrayLike, lam: ArrayLike, tol, max_iter, eta) -> jax.Array:
  y = jnp.asarray(y)
  if not jnp.issubdtype(y.dtype, jnp.floating):
    y = y.astype(jnp.zeros(()).dtype)
  if y.ndim < 2:
    raise ValueError(f"y must be a tensor with at least two modes, got shape {y.shape}")
  if core.is_concrete(lam) and not float(lam) > 0:
    raise ValueError(f"lam must be > 0 for denoising, got {lam}")
  admm.check_hyper(lam, tol, max_iter, eta)
  return y


def overlapped_schatten_denoising(y: ArrayLike, lam: ArrayLike, *, tol: ArrayLike = 1e-4,
                                  max_iter: int = 2000, eta: ArrayLike | None = None,
                                  weights: ArrayLike | None = None, method: str = "auto",
                                  check_every: int | None = None,
                                  adaptive_eta: bool | None = None,
                                  relaxation: float | None = None,
                                  float32_start: bool | None = None,
                                  options: admm.ADMMOptions | None = None) -> DenoisingResult:
  """Denoising with the overlapped Schatten-1 norm (the paper's eq. 2 with ``p = 1``).

  .. math:: \\hat X = \\arg\\min_X \\tfrac12\\|Y - X\\|_F^2 + \\lambda \\sum_k g_k \\|X_{(k)}\\|_*.

  Solved by the Constraint ADMM with every entry observed (:func:`completion.constraint`),
  stopped when the relative duality gap is at most ``tol``.

  Args:
    y: the noisy tensor, any order ``K >= 2``.
    lam: the regularization constant ``lambda > 0``.
    tol: relative duality gap at which to stop (the paper's experiments: 1e-4).
    max_iter: the most ADMM iterations.
    eta: the ADMM step; default ``1 / (10 std(y))`` as the authors' code.
    weights: mode weights ``g_k``; default ones.
    method: singular value thresholding method (:func:`prox.singular_value_thresholding`).
    check_every, adaptive_eta, relaxation, float32_start, options: the engine's options, as
      in :func:`completion.constraint` (default: the tuned solver, :class:`ADMMOptions`).

  Returns:
    A :class:`DenoisingResult` (a :class:`completion.CompletionResult`): ``X`` the estimate,
    ``components`` the ADMM's low-rank copies ``Z_k`` of ``X`` (folded), ``gap``,
    ``primal`` and ``dual`` (scaled by ``1 / lam``: ``norm + ||Y - X||^2 / (2 lam)``).

  Example:
    >>> y = jax.random.normal(jax.random.key(0), (6, 7, 8))
    >>> res = overlapped_schatten_denoising(y, 1.0)
    >>> bool(res.converged)
    True

  References:
    Tomioka, Suzuki, NIPS 2013, Section 2 and Theorem 1; authors' ``exp_denoising.m``.
  """
  opts = admm.resolve_options(options, check_every=check_every, adaptive_eta=adaptive_eta,
                              relaxation=relaxation, float32_start=float32_start)
  y = _prepare(y, lam, tol, max_iter, eta)
  eta = 1 / (10 * admm.sample_std(y.ravel())) if eta is None else eta
  w = prox.mode_weights(y.shape, weights, y.dtype)
  mask = jnp.ones(y.shape, bool)
  return completion.constraint_jit(
      mask, y, lam, eta, tol, w, modes=tuple(range(y.ndim)), max_iter=max_iter, method=method,
      options=opts)


def latent_schatten_denoising(y: ArrayLike, lam: ArrayLike, *, tol: ArrayLike = 1e-4,
                              max_iter: int = 2000, eta: ArrayLike | None = None,
                              weights: ArrayLike | None = None, method: str = "auto",
                              check_every: int | None = None,
                              adaptive_eta: bool | None = None, relaxation: float | None = None,
                              float32_start: bool | None = None,
                              options: admm.ADMMOptions | None = None) -> DenoisingResult:
  """Denoising with the latent Schatten-1 norm (the paper's eq. 3 with ``p = 1``).

  .. math:: \\min_{W_1, \\dots, W_K} \\tfrac12\\|Y - \\sum_k W_k\\|_F^2
     + \\lambda \\sum_k g_k \\|W_{k,(k)}\\|_*, \\qquad \\hat X = \\sum_k \\hat W_k.

  Solved by the Mixture ADMM on the dual with every entry observed
  (:func:`completion.mixture`); the dual feasible set is ``max_k ||A_(k)||_op / g_k <= 1``
  (the latent norm's dual, the paper's Lemma 1), and the solve stops on the relative gap.

  Args:
    y: the noisy tensor, any order ``K >= 2``.
    lam: the regularization constant ``lambda > 0``.
    tol: relative duality gap at which to stop (the paper's experiments: 1e-4).
    max_iter: the most ADMM iterations.
    eta: the ADMM step; default ``10 std(y)`` as the authors' code.
    weights: mode weights ``g_k``; default ones (``prox.scaled_latent_weights`` gives the
      scaled latent norm).
    method: singular value thresholding method.
    check_every, adaptive_eta, relaxation, float32_start, options: the engine's options, as
      in :func:`completion.constraint` (default: the tuned solver, :class:`ADMMOptions`).

  Returns:
    A :class:`DenoisingResult`: ``X`` the estimate and ``components`` the latent split
    ``W_k`` stacked on a leading axis (``X = components.sum(0)``).

  Example:
    >>> y = jax.random.normal(jax.random.key(0), (6, 7, 8))
    >>> res = latent_schatten_denoising(y, 1.0)
    >>> res.components.shape
    (3, 6, 7, 8)

  References:
    Tomioka, Suzuki, NIPS 2013, Sections 2-3 and Theorem 2; authors' ``tensormix_adm.m``.
  """
  opts = admm.resolve_options(options, check_every=check_every, adaptive_eta=adaptive_eta,
                              relaxation=relaxation, float32_start=float32_start)
  y = _prepare(y, lam, tol, max_iter, eta)
  eta = 10 * admm.sample_std(y.ravel()) if eta is None else eta
  w = prox.mode_weights(y.shape, weights, y.dtype)
  mask = jnp.ones(y.shape, bool)
  return completion.mixture_jit(
      mask, y, lam, eta, tol, w, max_iter=max_iter, method=method, exact=False, options=opts)


def _check_shape_ranks(shape: Sequence[int], ranks: Sequence[int]) -> tuple[np.ndarray, ...]:
  shape, ranks = tuple(shape), tuple(ranks)
  if len(shape) < 2 or any(int(n) != n or n < 1 for n in shape):
    raise ValueError(f"shape must hold at least two positive integers, got {shape}")
  if len(ranks) != len(shape):
    raise ValueError(f"ranks must have one entry per mode ({len(shape)}), got {ranks}")
  for k, (n, r) in enumerate(zip(shape, ranks)):
    if not 1 <= r <= n:
      raise ValueError(f"ranks[{k}] must be in [1, {n}] (the size of mode {k}), got {r}")
  return np.asarray(shape, np.float64), np.asarray(ranks, np.float64)


def overlapped_complexity(shape: Sequence[int], ranks: Sequence[int],
                          sigma: float = 1.0) -> float:
  """The overlapped approach's predicted MSE scale (Theorem 1 of the paper).

  .. math:: \\sigma^2 \\,\\|n^{-1}\\|_{1/2} \\,\\|r\\|_{1/2}, \\qquad
     \\|n^{-1}\\|_{1/2} = \\Big(\\frac1K \\sum_k \\sqrt{1/n_k}\\Big)^2, \\quad
     \\|r\\|_{1/2} = \\Big(\\frac1K \\sum_k \\sqrt{r_k}\\Big)^2.

  With ``lambda`` chosen proportional to ``sigma`` times the expected dual norm of the
  noise, ``||X_hat - X*||_F^2 / N`` is at most a constant times this ("Tucker rank
  complexity" in the authors' plots).

  Args:
    shape: the tensor's shape ``(n_1, ..., n_K)``.
    ranks: its multilinear (Tucker) rank ``(r_1, ..., r_K)``.
    sigma: the noise standard deviation.

  Returns:
    The complexity, a Python float.

  Example:
    >>> round(overlapped_complexity((50, 50, 20), (50, 50, 3)), 4)
    0.7979
  """
  n, r = _check_shape_ranks(shape, ranks)
  return float(sigma**2 * np.mean(np.sqrt(1 / n))**2 * np.mean(np.sqrt(r))**2)


def latent_complexity(shape: Sequence[int], ranks: Sequence[int], sigma: float = 1.0) -> float:
  """The latent approach's predicted MSE scale (Theorem 2 of the paper).

  .. math:: \\sigma^2 \\, \\frac{\\min_k r_k}{\\min_k n_k}.

  The latent norm does as well as if the mode of smallest rank were known ("latent rank
  complexity" in the authors' plots).

  Args:
    shape: the tensor's shape ``(n_1, ..., n_K)``.
    ranks: its multilinear (Tucker) rank ``(r_1, ..., r_K)``.
    sigma: the noise standard deviation.

  Returns:
    The complexity, a Python float.

  Example:
    >>> latent_complexity((50, 50, 20), (40, 40, 3))
    0.15
  """
  n, r = _check_shape_ranks(shape, ranks)
  return float(sigma**2 * r.min() / n.min())
