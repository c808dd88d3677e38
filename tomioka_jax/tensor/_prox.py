"""Trace norms of tensors, their dual norms and their proximal operators.

"Estimation of low-rank tensors via convex optimization", Ryota Tomioka, Kohei Hayashi,
Hisashi Kashima, 2010, arXiv:1010.0789; "Convex Tensor Decomposition via Structured Schatten
Norm Regularization", Ryota Tomioka, Taiji Suzuki, NIPS 2013, arXiv:1303.6370;
"Theoretical and Experimental Analyses of Tensor-Based Regression and Classification",
Kishan Wimalawarne, Ryota Tomioka, Masashi Sugiyama, 2016, arXiv:1509.01770.

Singular value thresholding with fixed shapes (an SVD path and a Gram-matrix eigen-
decomposition path for the short-and-wide unfoldings of tensors), and the three trace norms
of the papers with their duals and proxes:

* overlapped: ``sum_k g_k ||X_(k)||_*``; dual ``inf_{sum_k Y_k = Y} max_k ||Y_k,(k)||_op / g_k``;
* latent: ``inf_{sum_k W_k = X} sum_k g_k ||W_k,(k)||_*``; dual ``max_k ||Y_(k)||_op / g_k``;
* scaled latent: the latent norm with ``g_k = 1 / sqrt(n_k)``.

The weights ``g_k`` (``weights``) default to one. Norms that are an infimum or a maximum
over a convex set are computed by fixed-iteration solvers (block coordinate descent,
bisection), all jittable. The latent trace norm itself (an infimum over splits) needs an
iterative solve with a certificate: it is the Mixture ADMM's, in
:mod:`tomioka_jax.tensor._completion`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from tomioka_jax import core
from tomioka_jax.tensor import _ops as ops

_METHODS = ("auto", "svd", "gram")


def check_matrix(matrix: jax.Array, name: str = "matrix") -> None:
  """Raises ``ValueError`` unless ``matrix`` is 2-D (a tensor must be unfolded first)."""
  if matrix.ndim != 2:
    raise ValueError(f"{name} must be a 2-D matrix (m x n), got shape {matrix.shape}; unfold a "
                     f"tensor first, e.g. tensor.unfold(x, mode)")


def check_nonnegative(value: ArrayLike, name: str) -> None:
  """Raises ``ValueError`` if a concrete ``value`` is negative or NaN (tracers pass)."""
  if core.is_concrete(value) and not np.all(np.asarray(value) >= 0):
    raise ValueError(f"{name} must be >= 0, got {name}={value}")


def _check_method(method: str) -> None:
  if method not in _METHODS:
    raise ValueError(f"method must be one of {_METHODS}, got {method!r}")


def _use_gram(matrix: jax.Array, method: str, for_values: bool) -> bool:
  _check_method(method)
  if method != "auto":
    return method == "gram"
  m, n = matrix.shape
  wide = max(m, n) >= 2 * min(m, n)
  # Eigenvalues of M M^T carry an absolute error ~ eps * s_max^2, so the small singular
  # values from the Gram path are only good to sqrt(eps) * s_max: fine in float64, not in
  # float32 when all of them are summed (nuclear norm). Thresholding is insensitive to it.
  return wide and (not for_values or matrix.dtype == jnp.float64)


def _gram_eigh(matrix: jax.Array) -> tuple[jax.Array, jax.Array, bool]:
  """Eigen-decomposition of the smaller Gram matrix; returns (s, U, transposed)."""
  transposed = matrix.shape[0] > matrix.shape[1]
  m = matrix.T if transposed else matrix
  # The product is symmetric; eigh reads one triangle (no symmetrizing pass).
  u, w = lax.linalg.eigh(m @ m.T, symmetrize_input=False)
  return jnp.sqrt(jnp.maximum(w, 0)), u, transposed


def singular_values(matrix: ArrayLike, *, method: str = "auto") -> jax.Array:
  """All ``min(m, n)`` singular values of a matrix (order unspecified).

  Args:
    matrix: an ``m x n`` matrix.
    method: ``"svd"``, ``"gram"`` (square roots of the eigenvalues of the smaller Gram
      matrix), or ``"auto"`` (Gram for wide float64 matrices).

  Returns:
    The singular values, shape ``(min(m, n),)``.
  """
  matrix = jnp.asarray(matrix)
  check_matrix(matrix)
  if _use_gram(matrix, method, for_values=True):
    return _gram_eigh(matrix)[0]
  return jnp.linalg.svd(matrix, compute_uv=False)


def spectral_norm(matrix: ArrayLike) -> jax.Array:
  """The operator (spectral) norm ``||M||_op``, the largest singular value.

  Computed from the top eigenvalue of the smaller Gram matrix, which carries a relative
  error of order eps only.
  """
  matrix = jnp.asarray(matrix)
  check_matrix(matrix)
  m = matrix.T if matrix.shape[0] > matrix.shape[1] else matrix
  return jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(m @ m.T, symmetrize_input=False)[-1], 0))


def nuclear_norm(matrix: ArrayLike, *, method: str = "auto") -> jax.Array:
  """The nuclear (trace) norm ``||M||_*``, the sum of singular values."""
  return jnp.sum(singular_values(matrix, method=method))


def svt_with_spectrum(matrix: jax.Array, tau: ArrayLike,
                      method: str = "auto") -> tuple[jax.Array, jax.Array]:
  """Singular value thresholding that also returns the thresholded singular values."""
  tau = jnp.asarray(tau, matrix.dtype)
  if _use_gram(matrix, method, for_values=False):
    s, u, transposed = _gram_eigh(matrix)
    # U diag(max(1 - tau / s, 0)) U^T M = U diag(max(s - tau, 0)) V^T, without forming V.
    safe_s = jnp.where(s > tau, s, 1)
    factor = jnp.where(s > tau, 1 - tau / safe_s, 0)
    m = matrix.T if transposed else matrix
    # Forming the small projector first costs one wide product instead of two.
    out = ((u * factor[None, :]) @ u.T) @ m
    return (out.T if transposed else out), jnp.maximum(s - tau, 0)
  u, s, vt = jnp.linalg.svd(matrix, full_matrices=False)
  shrunk = jnp.maximum(s - tau, 0)
  return (u * shrunk[None, :]) @ vt, shrunk


def singular_value_thresholding(matrix: ArrayLike, tau: ArrayLike, *,
                                method: str = "auto") -> jax.Array:
  """The proximal operator of ``tau ||.||_*``: soft-thresholds the singular values.

  .. math:: \\mathrm{prox}_{\\tau\\|\\cdot\\|_*}(M) = U \\max(S - \\tau, 0) V^\\top,
     \\quad M = U S V^\\top.

  Shapes are fixed: singular values below ``tau`` are zeroed, not truncated. The Gram path
  works with the eigen-decomposition ``M M^T = U S^2 U^T`` of the smaller side and returns
  ``U diag(max(1 - tau/s, 0)) U^T M``; for an ``n x N`` unfolding with ``n << N`` it costs
  three ``n x n x N`` products and an ``n x n`` eigen-decomposition.

  Args:
    matrix: an ``m x n`` matrix.
    tau: the threshold, ``>= 0``.
    method: ``"svd"``, ``"gram"``, or ``"auto"`` (Gram when one side is at least twice the
      other).

  Returns:
    The thresholded matrix, same shape and dtype.

  Example:
    >>> singular_value_thresholding(jnp.diag(jnp.array([3., 1.])), 2.)
    Array([[1., 0.],
           [0., 0.]], dtype=float32)

  References:
    Cai, Candes, Shen, "A singular value thresholding algorithm for matrix completion", 2010.
  """
  matrix = jnp.asarray(matrix)
  check_matrix(matrix)
  check_nonnegative(tau, "tau")
  return svt_with_spectrum(matrix, tau, method)[0]


def project_spectral_ball(matrix: ArrayLike, radius: ArrayLike, *,
                          method: str = "auto") -> jax.Array:
  """Euclidean projection onto ``{V : ||V||_op <= radius}``: clips the singular values.

  By the Moreau decomposition it is ``M - prox_{radius ||.||_*}(M)``.
  """
  matrix = jnp.asarray(matrix)
  check_nonnegative(radius, "radius")
  return matrix - singular_value_thresholding(matrix, radius, method=method)


def mode_weights(shape: Sequence[int], weights: ArrayLike | None,
                 dtype: jnp.dtype) -> jax.Array:
  """The per-mode weights ``g_k`` as an array, checked to be positive when concrete."""
  k = len(shape)
  if weights is None:
    return jnp.ones((k,), dtype)
  w = jnp.asarray(weights, dtype)
  if w.shape != (k,):
    raise ValueError(f"weights must have shape ({k},), one per mode, got {w.shape}")
  if not isinstance(w, jax.core.Tracer) and not np.all(np.asarray(w) > 0):
    raise ValueError(f"weights must be positive, got {w}")
  return w


def scaled_latent_weights(shape: Sequence[int], dtype: jnp.dtype = jnp.float32) -> jax.Array:
  """The weights ``1 / sqrt(n_k)`` of the scaled latent trace norm (Wimalawarne et al.)."""
  return 1 / jnp.sqrt(jnp.asarray(shape, dtype))


def _float(x: ArrayLike) -> jax.Array:
  x = jnp.asarray(x)
  return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.zeros(()).dtype)


# --------------------------------------------------------------------------- overlapped


def overlapped_trace_norm(x: ArrayLike, weights: ArrayLike | None = None, *,
                          method: str = "auto") -> jax.Array:
  """The overlapped trace norm ``sum_k g_k ||X_(k)||_*`` (Tomioka et al. 2011, eq. 3).

  Args:
    x: a K-way tensor.
    weights: the mode weights ``g_k > 0``; default ones.
    method: how singular values are computed (see :func:`singular_values`).

  Returns:
    The norm, a scalar.

  Example:
    >>> float(overlapped_trace_norm(jnp.ones((2, 3, 4))))  # three rank-one unfoldings
    14.696...
  """
  x = _float(x)
  w = mode_weights(x.shape, weights, x.dtype)
  return sum(w[k] * nuclear_norm(ops.unfold(x, k), method=method) for k in range(x.ndim))


def _block_coordinate_descent(
    y: jax.Array, block_prox: Callable[[int, jax.Array], jax.Array], num_iters: int,
    blocks: tuple[jax.Array, ...] | None = None,
) -> tuple[tuple[jax.Array, ...], jax.Array]:
  """Minimises ``1/2 ||Y - sum_k B_k||^2 + sum_k h_k(B_k,(k))`` by cyclic exact block updates.

  ``block_prox(k, M)`` is the prox of ``h_k`` on the mode-k unfolding. Each block's
  subproblem is strongly convex, so the Gauss-Seidel sweeps converge (Tseng 2001). Returns
  the blocks (tensors) and the residual ``Y - sum_k B_k``.
  """
  shape = y.shape
  if blocks is None:
    blocks = tuple(jnp.zeros_like(y) for _ in shape)
  resid = y - sum(blocks)

  def sweep(_, state):
    blocks, resid = state
    new = []
    for k, b in enumerate(blocks):
      b_new = ops.fold(block_prox(k, ops.unfold(resid + b, k)), k, shape)
      resid = resid + b - b_new
      new.append(b_new)
    return tuple(new), resid

  return lax.fori_loop(0, num_iters, sweep, (tuple(blocks), resid))


def _overlapped_dual_split(y, lam, w, num_iters, method, blocks=None):
  # Projection onto the lam-ball of the dual norm = the Minkowski sum of the mode-wise
  # spectral-norm balls of radii lam * g_k.
  return _block_coordinate_descent(
      y, lambda k, m: project_spectral_ball(m, lam * w[k], method=method), num_iters, blocks)


@functools.partial(jax.jit, static_argnames=("num_iters", "method"))
def _overlapped_prox_jit(y, lam, w, num_iters, method):
  return _overlapped_dual_split(y, lam, w, num_iters, method)[1]


def overlapped_trace_norm_prox(y: ArrayLike, lam: ArrayLike, weights: ArrayLike | None = None,
                               *, num_iters: int = 300, method: str = "auto") -> jax.Array:
  """The proximal operator of ``lam * sum_k g_k ||X_(k)||_*``.

  .. math:: \\mathrm{prox}(Y) = \\arg\\min_X \\tfrac12\\|X - Y\\|^2
     + \\lambda \\sum_k g_k \\|X_{(k)}\\|_* = Y - \\sum_k A_k,

  where ``(A_k)`` solve the dual ``min 1/2 ||Y - sum_k A_k||^2`` subject to
  ``||A_k,(k)||_op <= lam g_k`` (Moreau: ``sum_k A_k`` is the projection of ``Y`` onto the
  ``lam``-ball of the dual norm). The dual is solved by ``num_iters`` sweeps of block
  coordinate descent, each block update a spectral-ball projection.

  Args:
    y: a K-way tensor.
    lam: the regularization constant, ``>= 0``.
    weights: the mode weights ``g_k``; default ones.
    num_iters: block coordinate sweeps.
    method: singular value thresholding method.

  Returns:
    The prox point, same shape as ``y``.

  References:
    Tomioka, Hayashi, Kashima, arXiv:1010.0789, Section 4 (``softth_overlap``).
  """
  y = _float(y)
  w = mode_weights(y.shape, weights, y.dtype)
  _check_method(method)
  check_nonnegative(lam, "lam")
  return _overlapped_prox_jit(y, jnp.asarray(lam, y.dtype), w, num_iters, method)


def overlapped_trace_norm_dual(y: ArrayLike, weights: ArrayLike | None = None, *,
                               num_bisect: int = 40, num_iters: int = 50,
                               method: str = "auto") -> jax.Array:
  """The dual of the overlapped trace norm, ``inf_{sum Y_k = Y} max_k ||Y_k,(k)||_op / g_k``.

  It is the gauge of the Minkowski sum of the weighted spectral-norm balls: ``||Y||_* <= t``
  iff the overlapped prox of ``Y`` at level ``t`` vanishes. We bisect on ``t`` between the
  pairing lower bound ``<Y, Y> / ||Y||`` and the one-mode split ``min_k ||Y_(k)||_op / g_k``.
  At each level, ``num_iters`` warm-started block-coordinate sweeps of
  :func:`overlapped_trace_norm_prox` give a prox point ``X``; by Hoelder's inequality
  ``<X, Y> / ||X|| <= ||Y||_*``, and for ``t`` below the dual norm the exact prox point has
  ``<X, Y> / ||X|| = t + ||X||_F^2 / ||X|| > t``. So a ratio above ``t`` certifies that ``t`` is
  too small (and raises the lower end to the ratio); otherwise ``t`` becomes the upper end.

  Args:
    y: a K-way tensor.
    weights: the mode weights ``g_k``; default ones.
    num_bisect: bisection steps.
    num_iters: block sweeps per step.
    method: singular value thresholding method.

  Returns:
    The dual norm, a scalar (the middle of the final bracket).
  """
  y = _float(y)
  w = mode_weights(y.shape, weights, y.dtype)
  _check_method(method)
  return _overlapped_dual_jit(y, w, num_bisect, num_iters, method)


@functools.partial(jax.jit, static_argnames=("num_bisect", "num_iters", "method"))
def _overlapped_dual_jit(y, w, num_bisect, num_iters, method):
  tiny = jnp.finfo(y.dtype).tiny
  eps = jnp.finfo(y.dtype).eps
  lo = jnp.vdot(y, y) / overlapped_trace_norm(y, w, method=method)
  hi = jnp.min(jnp.stack([spectral_norm(ops.unfold(y, k)) / w[k] for k in range(y.ndim)]))
  blocks = tuple(jnp.zeros_like(y) for _ in y.shape)

  def step(_, state):
    lo, hi, blocks = state
    t = (lo + hi) / 2
    blocks, x = _overlapped_dual_split(y, t, w, num_iters, method, blocks)
    norm_x = overlapped_trace_norm(x, w, method=method)
    ratio = jnp.vdot(x, y) / jnp.maximum(norm_x, tiny)
    too_small = (norm_x > tiny) & (ratio > t * (1 + 16 * eps))
    lo = jnp.where(too_small, jnp.minimum(ratio, hi), lo)
    hi = jnp.where(too_small, hi, t)
    return lo, hi, blocks

  lo, hi, _ = lax.fori_loop(0, num_bisect, step, (lo, hi, blocks))
  return (lo + hi) / 2


# --------------------------------------------------------------------------- latent


class LatentProx(NamedTuple):
  """The latent-norm prox point and its split.

  Attributes:
    x: the prox point ``sum_k W_k``.
    components: the ``W_k`` stacked on a leading axis, shape ``(K, *x.shape)``.
  """

  x: jax.Array
  components: jax.Array


def latent_trace_norm_dual(y: ArrayLike, weights: ArrayLike | None = None) -> jax.Array:
  """The dual of the latent trace norm, ``max_k ||Y_(k)||_op / g_k`` (Tomioka-Suzuki 2013).

  Example:
    >>> float(latent_trace_norm_dual(jnp.ones((2, 3, 4))))  # sqrt(24)
    4.898...
  """
  y = _float(y)
  w = mode_weights(y.shape, weights, y.dtype)
  return jnp.max(jnp.stack([spectral_norm(ops.unfold(y, k)) / w[k] for k in range(y.ndim)]))


def latent_trace_norm_prox(y: ArrayLike, lam: ArrayLike, weights: ArrayLike | None = None,
                           *, num_iters: int = 300, method: str = "auto") -> LatentProx:
  """The proximal operator of ``lam`` times the latent trace norm.

  .. math:: \\min_{W_1..W_K} \\tfrac12\\|Y - \\sum_k W_k\\|^2
     + \\lambda \\sum_k g_k \\|W_{k,(k)}\\|_*,

  solved by ``num_iters`` sweeps of block coordinate descent, each block update a singular
  value thresholding of its mode-k unfolding. The residual ``Y - x`` is the projection of
  ``Y`` onto ``{max_k ||V_(k)||_op / g_k <= lam}`` (Moreau decomposition).

  Args:
    y: a K-way tensor.
    lam: the regularization constant, ``>= 0``.
    weights: the mode weights ``g_k``; default ones.
    num_iters: block coordinate sweeps.
    method: singular value thresholding method.

  Returns:
    A :class:`LatentProx` ``(x, components)``.

  References:
    Tomioka, Suzuki, "Convex Tensor Decomposition via Structured Schatten Norm
    Regularization", NIPS 2013.
  """
  y = _float(y)
  w = mode_weights(y.shape, weights, y.dtype)
  _check_method(method)
  check_nonnegative(lam, "lam")
  return _latent_prox_jit(y, jnp.asarray(lam, y.dtype), w, num_iters, method)


@functools.partial(jax.jit, static_argnames=("num_iters", "method"))
def _latent_prox_jit(y, lam, w, num_iters, method):
  blocks, resid = _block_coordinate_descent(
      y, lambda k, m: singular_value_thresholding(m, lam * w[k], method=method), num_iters)
  return LatentProx(y - resid, jnp.stack(blocks))


# --------------------------------------------------------------------------- scaled latent


def scaled_latent_trace_norm_dual(y: ArrayLike) -> jax.Array:
  """The dual of the scaled latent trace norm, ``max_k sqrt(n_k) ||Y_(k)||_op``."""
  y = _float(y)
  return latent_trace_norm_dual(y, scaled_latent_weights(y.shape, y.dtype))


def scaled_latent_trace_norm_prox(y: ArrayLike, lam: ArrayLike, **kwargs) -> LatentProx:
  """The proximal operator of ``lam`` times the scaled latent trace norm.

  Keyword arguments go to :func:`latent_trace_norm_prox`.
  """
  y = _float(y)
  return latent_trace_norm_prox(y, lam, scaled_latent_weights(y.shape, y.dtype), **kwargs)
