"""Multilinear algebra for K-way tensors: unfoldings, mode products, Tucker, HOSVD.

"Estimation of low-rank tensors via convex optimization", Ryota Tomioka, Kohei Hayashi,
Hisashi Kashima, 2010, arXiv:1010.0789.

The building blocks every convex tensor method in :mod:`tomioka_jax.tensor` is written in:
the mode-k unfolding and its inverse, the mode-k product, Tucker reconstruction, the
(truncated) higher-order SVD, and the paper's random Tucker generator (core N(0, 1),
orthonormal factors). Every function works for any order K >= 1 and keeps shapes static.

Unfolding convention. ``unfold(X, k)`` is the ``n_k x (prod_{j != k} n_j)`` matrix whose row
``i_k`` holds the fibres of mode ``k``; its columns run over the remaining modes in
increasing mode order, C order (the last remaining mode varies fastest). That is
``jnp.moveaxis(X, k, 0).reshape(n_k, -1)`` and is tensorly's convention; the authors' MATLAB
code orders the columns cyclically (k+1, ..., K, 1, ..., k-1, first fastest). The two differ
by a column permutation, so every norm in this package (trace norms, spectral norms) is the
same under either.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike


class Tucker(NamedTuple):
  """A Tucker decomposition ``X = C x_1 U_1 x_2 U_2 ... x_K U_K``.

  Attributes:
    core: the core tensor ``C``, shape ``ranks``.
    factors: one matrix ``U_k`` of shape ``(n_k, r_k)`` per mode.
  """

  core: jax.Array
  factors: tuple[jax.Array, ...]


def check_mode(mode: int, ndim: int) -> int:
  if not -ndim <= mode < ndim:
    raise ValueError(f"mode must be in [-{ndim}, {ndim}) for a {ndim}-way tensor, got {mode}")
  return mode % ndim


def unfold(x: ArrayLike, mode: int) -> jax.Array:
  """The mode-``k`` unfolding (matricization) ``X_(k)``.

  .. math:: X_{(k)}[i_k, j] = X[i_1, \\dots, i_K],\\quad
     j = \\mathrm{ravel}_C(i_1, \\dots, i_{k-1}, i_{k+1}, \\dots, i_K).

  Args:
    x: a tensor of shape ``(n_1, ..., n_K)``.
    mode: the mode ``k`` (0-based; negative counts from the end).

  Returns:
    The ``n_k x prod_{j != k} n_j`` matrix; see the module docstring for the column order.

  Example:
    >>> unfold(jnp.arange(24.).reshape(2, 3, 4), 1).shape
    (3, 8)
  """
  x = jnp.asarray(x)
  mode = check_mode(mode, x.ndim)
  return jnp.moveaxis(x, mode, 0).reshape(x.shape[mode], -1)


def fold(matrix: ArrayLike, mode: int, shape: Sequence[int]) -> jax.Array:
  """The inverse of :func:`unfold`: ``fold(unfold(X, k), k, X.shape) == X``.

  Args:
    matrix: a ``n_k x prod_{j != k} n_j`` matrix.
    mode: the mode ``k`` it was unfolded along.
    shape: the tensor's shape ``(n_1, ..., n_K)``.

  Returns:
    The tensor of shape ``shape``.
  """
  matrix = jnp.asarray(matrix)
  shape = tuple(int(n) for n in shape)
  mode = check_mode(mode, len(shape))
  moved = (shape[mode],) + shape[:mode] + shape[mode + 1:]
  if matrix.size != math.prod(moved) or matrix.shape[0] != shape[mode]:
    raise ValueError(f"matrix of shape {matrix.shape} is not a mode-{mode} unfolding of a "
                     f"tensor of shape {shape}")
  return jnp.moveaxis(matrix.reshape(moved), 0, mode)


def mode_product(x: ArrayLike, matrix: ArrayLike, mode: int) -> jax.Array:
  """The mode-``k`` product ``X x_k M``: multiplies every mode-``k`` fibre by ``M``.

  .. math:: (X \\times_k M)_{(k)} = M X_{(k)}.

  Args:
    x: a tensor of shape ``(n_1, ..., n_K)``.
    matrix: ``M`` of shape ``(m, n_k)``.
    mode: the mode ``k``.

  Returns:
    A tensor whose mode ``k`` now has size ``m``.

  Example:
    >>> x = jnp.ones((2, 3, 4))
    >>> mode_product(x, jnp.ones((5, 3)), 1).shape
    (2, 5, 4)
  """
  x = jnp.asarray(x)
  matrix = jnp.asarray(matrix)
  mode = check_mode(mode, x.ndim)
  if matrix.ndim != 2 or matrix.shape[1] != x.shape[mode]:
    raise ValueError(f"matrix must have shape (m, {x.shape[mode]}) for mode {mode} of a tensor "
                     f"of shape {x.shape}, got {matrix.shape}")
  return jnp.moveaxis(jnp.tensordot(matrix, x, axes=(1, mode)), 0, mode)


def multi_mode_product(x: ArrayLike, matrices: Sequence[ArrayLike | None],
                       transpose: bool = False) -> jax.Array:
  """``X x_1 M_1 x_2 M_2 ... x_K M_K``, skipping modes whose matrix is ``None``.

  Args:
    x: a K-way tensor.
    matrices: K matrices (or ``None``), one per mode.
    transpose: multiply by ``M_k^T`` instead (projection onto factor subspaces).

  Returns:
    The product tensor.
  """
  x = jnp.asarray(x)
  if len(matrices) != x.ndim:
    raise ValueError(f"matrices must have one entry per mode ({x.ndim}), got {len(matrices)}")
  for k, m in enumerate(matrices):
    if m is not None:
      m = jnp.asarray(m)
      x = mode_product(x, m.T if transpose else m, k)
  return x


def tucker_to_tensor(core: ArrayLike, factors: Sequence[ArrayLike]) -> jax.Array:
  """Reconstructs ``C x_1 U_1 ... x_K U_K`` from a Tucker decomposition.

  Args:
    core: the core, shape ``(r_1, ..., r_K)``.
    factors: ``U_k`` of shape ``(n_k, r_k)``.

  Returns:
    The tensor of shape ``(n_1, ..., n_K)``.
  """
  return multi_mode_product(core, factors)


def leading_left_singular_vectors(matrix: jax.Array, rank: int) -> jax.Array:
  # Eigenvectors of the small Gram matrix M M^T: the unfoldings are short and wide.
  _, vecs = jnp.linalg.eigh(matrix @ matrix.T)
  return vecs[:, ::-1][:, :rank]


def hosvd(x: ArrayLike, ranks: Sequence[int] | None = None) -> Tucker:
  """The (truncated) higher-order SVD of De Lathauwer et al.

  ``U_k`` holds the ``r_k`` leading left singular vectors of ``X_(k)`` and the core is
  ``X x_1 U_1^T ... x_K U_K^T``. Without truncation the decomposition is exact; with it,
  it is quasi-optimal (within a factor sqrt(K) of the best rank-``ranks`` Tucker fit).

  Args:
    x: a K-way tensor.
    ranks: the multilinear ranks ``(r_1, ..., r_K)``, each ``1 <= r_k <= n_k``; default
      the full sizes.

  Returns:
    A :class:`Tucker` ``(core, factors)``.

  Example:
    >>> t = hosvd(jnp.ones((4, 5, 6)), (1, 1, 1))
    >>> float(jnp.abs(tucker_to_tensor(*t) - 1).max()) < 1e-5
    True
  """
  x = jnp.asarray(x)
  ranks = tuple(x.shape) if ranks is None else tuple(int(r) for r in ranks)
  check_ranks(x.shape, ranks)
  factors = tuple(leading_left_singular_vectors(unfold(x, k), r) for k, r in enumerate(ranks))
  return Tucker(multi_mode_product(x, factors, transpose=True), factors)


def check_ranks(shape: Sequence[int], ranks: Sequence[int]) -> None:
  if len(ranks) != len(shape):
    raise ValueError(f"ranks must have one entry per mode ({len(shape)}), got {tuple(ranks)}")
  for k, (n, r) in enumerate(zip(shape, ranks)):
    if not 1 <= r <= n:
      raise ValueError(f"ranks[{k}] must be in [1, {n}] (the size of mode {k}), got {r}")


def random_tucker(key: jax.Array, shape: Sequence[int], ranks: Sequence[int],
                  dtype: jnp.dtype | None = None) -> Tucker:
  """A random low-rank tensor as in the paper's experiments (Section 5).

  The core has i.i.d. N(0, 1) entries; each factor is the Q of the QR decomposition of an
  ``n_k x r_k`` standard Gaussian matrix, so it has orthonormal columns.

  Args:
    key: a ``jax.random`` key.
    shape: the tensor's shape ``(n_1, ..., n_K)``.
    ranks: the multilinear ranks ``(r_1, ..., r_K)``, ``1 <= r_k <= n_k``.
    dtype: a floating dtype; default JAX's default float.

  Returns:
    A :class:`Tucker`; ``tucker_to_tensor(*random_tucker(...))`` is the tensor.

  Example:
    >>> t = random_tucker(jax.random.key(0), (50, 50, 20), (7, 8, 9))
    >>> tucker_to_tensor(*t).shape
    (50, 50, 20)
  """
  shape = tuple(int(n) for n in shape)
  ranks = tuple(int(r) for r in ranks)
  check_ranks(shape, ranks)
  dtype = jnp.zeros(()).dtype if dtype is None else jnp.dtype(dtype)
  key_core, *keys = jax.random.split(key, len(shape) + 1)
  core = jax.random.normal(key_core, ranks, dtype)
  factors = tuple(jnp.linalg.qr(jax.random.normal(k, (n, r), dtype))[0]
                  for k, n, r in zip(keys, shape, ranks))
  return Tucker(core, factors)
