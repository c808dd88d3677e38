"""The Algebraic Combinatorial Approach for Low-Rank Matrix Completion.

Franz J. Király, Louis Theran, Ryota Tomioka; JMLR 16:1391-1436, 2015; arXiv 1211.4116.
Its predecessor: "A Combinatorial Algebraic Approach for the Identifiability of Low-Rank Matrix
Completion", Franz J. Király, Ryota Tomioka; ICML 2012; arXiv 1206.6470.

Which entries of a generic rank-``r`` matrix are determined by a given set of observed positions
depends only on the positions: entry ``(k, l)`` is (finitely) completable iff its gradient with
respect to the factors ``(U, V)`` of ``A = U V^T`` lies in the row span of the Jacobian of the
observed entries, at a random (hence, with probability one, generic) point. This module provides
that test for all entries at once (:func:`jacobian_completability`, :func:`completable_entries`,
:func:`is_completable`, :func:`closure`); for rank one, the exact combinatorial test (bipartite
connectivity), completion along a path and the minimum-variance combination of all paths in log
space with its error estimate (:func:`rank_one_complete`); for any rank, the completion of a
single entry from a circuit found from the Jacobian together with its first-order error under
observation noise (:func:`find_circuit`, :func:`complete_entry`, started from an exact
propagation or from a global fit, :func:`low_rank_fit`); and nuclear-norm minimisation
on the same entries for comparison (:func:`nuclear_norm_complete`).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Iterator, Sequence
from typing import ClassVar, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
import scipy.stats
from jax.typing import ArrayLike

from tomioka_jax import core, tensor

__all__ = [
    "Completability",
    "jacobian_completability",
    "completable_entries",
    "is_completable",
    "closure",
    "bipartite_components",
    "rank_one_completable",
    "PathCompletion",
    "rank_one_path_completion",
    "RankOneCompletion",
    "rank_one_complete",
    "Circuit",
    "find_circuit",
    "EntryCompletion",
    "StrategyAttempt",
    "LocalSolveOptions",
    "LocalSolution",
    "Declined",
    "EntryProblem",
    "CompletionStrategy",
    "GivenStart",
    "PropagatedStart",
    "GlobalFitStart",
    "RandomRestarts",
    "DEFAULT_COMPLETION_STRATEGIES",
    "complete_entry",
    "LowRankFit",
    "low_rank_fit",
    "NuclearNormCompletion",
    "nuclear_norm_complete",
]

# Numerical-rank tolerances of the generic-point test, both relative (see
# `jacobian_completability`). At a random point with unit-norm factor rows, eigenvalues of the
# (Schur-reduced) J^T J that vanish in exact arithmetic come out at ~1e-16..1e-14 of the largest,
# and the nonzero ones stayed above ~1e-6 of it on the random masks of the tests and the
# benchmark (m, n <= 100, r <= 5): the reported `log10_gap` was >= 5 orders of magnitude in
# singular values. The thresholds sit inside that gap.
DEFAULT_RANK_RTOL = 1e-11   # on eigenvalues (i.e. ~3e-6 on singular values of J)
DEFAULT_ENTRY_RTOL = 1e-5   # on ||N^T h_kl|| / ||h_kl|| (reduced gradient off the row span)


# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------


def _check_mask(mask: ArrayLike) -> np.ndarray:
  mask = np.asarray(mask)
  if mask.dtype != np.bool_:
    raise ValueError(f"mask must be a boolean array, got dtype {mask.dtype}; "
                     "pass e.g. `values != 0` or `mask.astype(bool)`.")
  if mask.ndim != 2:
    raise ValueError(f"mask must be 2-D (rows x columns), got shape {mask.shape}.")
  return mask


def _check_rank(rank: int, shape: tuple[int, int]) -> int:
  if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)):
    raise ValueError(f"rank must be an int, got {rank!r}.")
  if not 1 <= rank <= min(shape):
    raise ValueError(f"rank must satisfy 1 <= rank <= min(m, n) = {min(shape)} for a "
                     f"{shape[0]}x{shape[1]} matrix, got {rank}.")
  return int(rank)


def _check_values(values: ArrayLike, shape: tuple[int, ...]) -> jax.Array:
  values = jnp.asarray(values)
  if values.shape != shape:
    raise ValueError(f"values must have the mask's shape {shape}, got {values.shape}.")
  if not jnp.issubdtype(values.dtype, jnp.floating):
    raise ValueError(f"values must be a floating-point array, got dtype {values.dtype}.")
  return values


def _check_count(name: str, value, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")
  return int(value)


def _check_entry(entry: tuple[int, int], shape: tuple[int, int]) -> tuple[int, int]:
  try:
    k, l = (int(i) for i in entry)
  except (TypeError, ValueError):
    raise ValueError(f"entry must be a pair (row, column) of ints, got {entry!r}.") from None
  if not (0 <= k < shape[0] and 0 <= l < shape[1]):
    raise ValueError(f"entry must index a {shape[0]}x{shape[1]} matrix, got {entry!r}.")
  return k, l


# ----------------------------------------------------------------------------------------------
# The Jacobian of (U, V) -> (u_i^T v_j)_{(i, j) in E} and the generic-point test
# ----------------------------------------------------------------------------------------------


def _random_point(key: jax.Array, m: int, n: int, rank: int, dtype) -> tuple[jax.Array, jax.Array]:
  """A random point of the factor space with unit-norm rows.

  Scaling row i of U (column j of V) by c != 0 is an automorphism of the rank-r determinantal
  variety, so normalised rows are as generic as Gaussian ones while avoiding the tiny rows that
  make the Jacobian needlessly ill-conditioned.
  """
  ku, kv = jax.random.split(key)
  u = jax.random.normal(ku, (m, rank), dtype)
  v = jax.random.normal(kv, (n, rank), dtype)
  return (u / jnp.linalg.norm(u, axis=1, keepdims=True),
          v / jnp.linalg.norm(v, axis=1, keepdims=True))


def _jacobian_gram(weights: jax.Array, u: jax.Array, v: jax.Array) -> jax.Array:
  """J^T diag(weights) J for the Jacobian J of the entries u_i^T v_j, parameters (vec U, vec V).

  The gradient of entry (i, j) is v_j in the block of u_i and u_i in the block of v_j, so
  J^T J has r x r blocks: sum_j w_ij v_j v_j^T on the U diagonal, sum_i w_ij u_i u_i^T on the V
  diagonal, and w_ij v_j u_i^T coupling u_i with v_j. Built in O(mn r^2) without forming J.
  """
  m, r = u.shape
  n = v.shape[0]
  guu = jnp.einsum("ij,ja,jb->iab", weights, v, v)
  gvv = jnp.einsum("ij,ia,ib->jab", weights, u, u)
  uu = jnp.einsum("ik,iab->iakb", jnp.eye(m, dtype=u.dtype), guu).reshape(m * r, m * r)
  vv = jnp.einsum("jl,jab->jalb", jnp.eye(n, dtype=u.dtype), gvv).reshape(n * r, n * r)
  uv = jnp.einsum("ij,ja,ib->iajb", weights, v, u).reshape(m * r, n * r)
  return jnp.block([[uu, uv], [uv.T, vv]])


class _PointTest(NamedTuple):
  completable: jax.Array
  jacobian_rank: jax.Array
  log10_gap: jax.Array
  residual: jax.Array


@functools.partial(jax.jit, static_argnames=("rank",))
def _prune_low_degree(mask: jax.Array, rank: int) -> jax.Array:
  """Removes, until none is left, the observed entries of rows and columns with < r of them.

  In a row with fewer than r observed entries, u_i can match any values there (the v_j are
  generically independent), so those entries are coloops of the matroid: independent of
  everything, constraining nothing, and no missing entry of that row is determined (the degree
  condition of ICML 2012). Removing them may lower other degrees, hence the loop.
  """

  def prune(core):
    keep = (core.sum(1) >= rank)[:, None] & (core.sum(0) >= rank)[None, :]
    return core & keep

  return jax.lax.while_loop(lambda s: jnp.any(s[0] != s[1]), lambda s: (prune(s[0]), s[0]),
                            (prune(mask), mask))[0]


@functools.partial(jax.jit, static_argnames=("rank",))
def _test_at_point(mask: jax.Array, rank: int, key: jax.Array, rank_rtol: float,
                   entry_rtol: float) -> _PointTest:
  """All entries from one eigendecomposition of size r * min(m, n).

  With the low-degree entries pruned, every remaining row i has a positive definite block
  D_i = sum_j v_j v_j^T of J^T J, so u can be eliminated: the null space of J^T J is
  {(-D^{-1} B z, z) : S z = 0} with the Schur complement S = D_vv - B^T D^{-1} B (n r x n r),
  and entry (k, l) lies in the row span of J iff its reduced gradient h_kl = c_kl (x) u_k,
  c_kl[j] = delta_jl - w_kj v_j^T D_k^{-1} v_l, is orthogonal to null(S).
  """
  m, n = mask.shape
  if m < n:   # eliminate the larger side, so the eigenproblem has the smaller one
    t = _test_at_point(mask.T, rank, key, rank_rtol, entry_rtol)
    return _PointTest(t.completable.T, t.jacobian_rank, t.log10_gap, t.residual.T)
  r = rank
  core = _prune_low_degree(mask, r)
  w = core.astype(jnp.float64)
  u, v = _random_point(key, m, n, r, jnp.float64)
  row_kept = core.any(1)
  eye = jnp.eye(r, dtype=jnp.float64)
  duu = jnp.einsum("ij,ja,jb->iab", w, v, v)
  duu = jnp.where(row_kept[:, None, None], duu, eye)
  chol = jnp.linalg.cholesky(duu)                                     # D_i = C_i C_i^T
  # G = stacked C_i^{-1} B_i, so that B^T D^{-1} B = G^T G is one GEMM.
  cinv_v = jax.vmap(lambda c: jax.scipy.linalg.solve_triangular(c, v.T, lower=True))(chol)
  g = jnp.einsum("ij,iaj,ib->iajb", w, cinv_v, u).reshape(m * r, n * r)
  dvv = jnp.einsum("ij,ia,ib->jab", w, u, u)
  dvv = jnp.einsum("jl,jab->jalb", jnp.eye(n, dtype=jnp.float64), dvv).reshape(n * r, n * r)
  lam, z = jnp.linalg.eigh(dvv - g.T @ g)
  scale = jnp.maximum(lam[-1], 1e-300)
  null = lam <= rank_rtol * scale
  d = n * r
  kept = jnp.min(jnp.where(null, jnp.inf, lam))
  dropped = jnp.max(jnp.where(null, jnp.abs(lam), 0.0))
  log10_gap = 0.5 * (jnp.log10(kept) - jnp.log10(jnp.maximum(dropped, 1e-300 * scale)))
  pruned_rows = m - jnp.sum(row_kept)
  jacobian_rank = (r * (m + n) - jnp.sum(null) - r * pruned_rows
                   + jnp.sum(mask) - jnp.sum(core)).astype(jnp.int32)
  zb = (z * null.astype(z.dtype)[None, :]).reshape(n, r, d)
  dinv = jax.vmap(lambda c: jax.scipy.linalg.cho_solve((c, True), eye))(chol)   # D_k^{-1}

  # Z^T h_kl = W[k,l] - v_l^T D_k^{-1} Q_k, with W[k,j] = u_k^T Z_j and
  # Q_k = sum_j w_kj v_j W[k,j]; a block of rows k at a time (bounded memory).
  chunk = max(1, min(m, (1 << 21) // (n * d)))
  blocks = -(-m // chunk)
  pad = blocks * chunk - m

  def padded(x):
    return jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1)).reshape((blocks, chunk) + x.shape[1:])

  def block_residual(args):
    u_c, w_c, dinv_c = args
    wkj = jnp.einsum("ka,jad->kjd", u_c, zb)
    q = jnp.einsum("kj,ja,kjd->kad", w_c, v, wkj)
    proj = wkj - jnp.einsum("la,kab,kbd->kld", v, dinv_c, q)
    return jnp.sum(proj**2, axis=-1)

  res2 = jax.lax.map(block_residual, (padded(u), padded(w), padded(dinv)))
  res2 = res2.reshape(blocks * chunk, n)[:m]
  s = jnp.einsum("la,kab,lb->kl", v, dinv, v)
  h2 = jnp.sum(u**2, 1)[:, None] * jnp.maximum(1.0 - 2.0 * w * s + s, 1e-300)
  residual = jnp.sqrt(res2 / h2)
  determined = (residual <= entry_rtol) & row_kept[:, None] & core.any(0)[None, :]
  return _PointTest(mask | determined, jacobian_rank, log10_gap, residual)


class Completability(NamedTuple):
  """Result of the generic-point completability test.

  Attributes:
    completable: (m, n) bool, entries finitely determined by the mask for generic rank-r
      matrices (observed entries included). The conjunction over the two random points.
    jacobian_rank: rank of the Jacobian of the observed entries (the rank of the mask in the
      determinantal matroid), at the first point.
    max_rank: r (m + n - r), the dimension of the variety of m x n rank-r matrices; the mask is
      completable iff ``jacobian_rank == max_rank``.
    log10_gap: log10 of (smallest kept / largest dropped) singular value of the Jacobian, the
      smaller over the two points; above ~4 the numerical rank is unambiguous.
    consistent: True iff both random points gave the same rank and the same entries.
  """

  completable: jax.Array
  jacobian_rank: jax.Array
  max_rank: int
  log10_gap: jax.Array
  consistent: jax.Array


def jacobian_completability(mask: ArrayLike, rank: int, key: jax.Array, *,
                            rank_rtol: float = DEFAULT_RANK_RTOL,
                            entry_rtol: float = DEFAULT_ENTRY_RTOL) -> Completability:
  r"""Which entries of a generic rank-``r`` matrix the observed positions determine.

  With :math:`A = UV^\top`, observed positions :math:`E` and the Jacobian :math:`J_E` of
  :math:`(U, V) \mapsto (u_i^\top v_j)_{(i,j) \in E}` (one row per observed entry, with
  :math:`v_j` in the block of :math:`u_i` and :math:`u_i` in the block of :math:`v_j`), entry
  :math:`(k, l)` is finitely completable iff :math:`\operatorname{rank} J_{E \cup \{kl\}} =
  \operatorname{rank} J_E` at a generic point (JMLR 2015; the matroid of
  the determinantal variety is the linear matroid of its Jacobian at a generic point), and the
  whole matrix is completable iff :math:`\operatorname{rank} J_E = r(m+n-r)`.

  Algorithm: entries of rows/columns with fewer than r observations are pruned (they are
  coloops and determine nothing), the row factors are eliminated from :math:`J_E^\top J_E`
  (each remaining row block is positive definite), and one float64 eigendecomposition of the
  Schur complement :math:`S` (size :math:`r\min(m,n)`) gives its null space :math:`N`
  (eigenvalues :math:`\le` ``rank_rtol`` times the largest); entry :math:`(k,l)` is completable
  iff its reduced gradient :math:`h_{kl}` satisfies :math:`\|N^\top h_{kl}\| \le`
  ``entry_rtol`` :math:`\|h_{kl}\|`, computed for all entries at once with GEMMs. The point has
  unit-norm Gaussian rows. A wrong answer needs an unlucky point (probability
  zero) or a tolerance that cuts through the spectrum, so the test is repeated at a second
  independent point: an entry is reported completable only if both points agree, and
  ``consistent`` / ``log10_gap`` flag a doubtful numerical rank.

  Args:
    mask: (m, n) bool, True where the entry is observed.
    rank: the rank r, 1 <= r <= min(m, n).
    key: PRNG key for the two random points.
    rank_rtol: relative eigenvalue threshold for the numerical rank of :math:`J_E^\top J_E`.
    entry_rtol: relative residual below which a gradient lies in the row span.

  Returns:
    A :class:`Completability`.

  Example:
    >>> import jax, numpy as np
    >>> mask = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1]], bool)
    >>> jacobian_completability(mask, 1, jax.random.key(0)).completable.all()
    Array(True, dtype=bool)

  References:
    Király, Theran, Tomioka (2015); Király, Tomioka (2012).
  """
  mask = _check_mask(mask)
  rank = _check_rank(rank, mask.shape)
  m, n = mask.shape
  with jax.enable_x64(True):
    completable, jacobian_rank, log10_gap, consistent = _test_two_points(
        jnp.asarray(mask), rank, key, rank_rtol, entry_rtol)
  return Completability(completable, jacobian_rank, rank * (m + n - rank), log10_gap,
                        consistent)


def _test_two_points(mask, rank, key, rank_rtol, entry_rtol):
  # Two calls of one compiled single-point test: compiling it is ~1.5x cheaper than compiling
  # a vmapped pair, and compilation dominates on small masks.
  k0, k1 = jax.random.split(key)
  return _combine_points(_test_at_point(mask, rank, k0, rank_rtol, entry_rtol),
                         _test_at_point(mask, rank, k1, rank_rtol, entry_rtol))


@jax.jit
def _combine_points(t0: _PointTest, t1: _PointTest):
  consistent = (t0.jacobian_rank == t1.jacobian_rank) & jnp.all(
      t0.completable == t1.completable)
  return (t0.completable & t1.completable, t0.jacobian_rank,
          jnp.minimum(t0.log10_gap, t1.log10_gap), consistent)


def completable_entries(mask: ArrayLike, rank: int, key: jax.Array) -> jax.Array:
  """(m, n) bool: entries finitely determined by ``mask`` for generic rank-``rank`` matrices.

  The probability-one Jacobian-rank test of :func:`jacobian_completability` (see there for the
  maths and
  tolerances), cross-checked at two random points.

  Example:
    >>> import jax, numpy as np
    >>> mask = np.array([[1, 1, 0], [0, 0, 1], [0, 0, 0]], bool)
    >>> completable_entries(mask, 1, jax.random.key(0))[1, 0]  # row 1 is not linked to col 0
    Array(False, dtype=bool)
  """
  return jacobian_completability(mask, rank, key).completable


def is_completable(mask: ArrayLike, rank: int, key: jax.Array) -> jax.Array:
  r"""Whether ``mask`` determines every entry of a generic rank-``rank`` matrix (finitely).

  True iff :math:`\operatorname{rank} J_E = r(m+n-r)` (JMLR 2015) and every entry
  passes the test of :func:`jacobian_completability` at both random points.
  """
  c = jacobian_completability(mask, rank, key)
  return jnp.asarray(int(c.jacobian_rank) == c.max_rank) & jnp.all(c.completable)


def closure(mask: ArrayLike, rank: int, key: jax.Array) -> jax.Array:
  """The closure of ``mask`` in the rank-``rank`` determinantal matroid: all entries it
  determines. It contains ``mask`` and is idempotent (``closure(closure(E)) == closure(E)``)."""
  return completable_entries(mask, rank, key)


# ----------------------------------------------------------------------------------------------
# Rank one: bipartite connectivity, paths, and the minimum-variance combination of paths
# ----------------------------------------------------------------------------------------------


@jax.jit
def _component_labels(mask: jax.Array) -> jax.Array:
  """Smallest node index in each node's component; rows are nodes 0..m-1, columns m..m+n-1."""
  m, n = mask.shape
  big = m + n

  def step(labels):
    lr, lc = labels[:m], labels[m:]
    lr_new = jnp.minimum(lr, jnp.min(jnp.where(mask, lc[None, :], big), axis=1))
    lc_new = jnp.minimum(lc, jnp.min(jnp.where(mask, lr_new[:, None], big), axis=0))
    return jnp.concatenate([lr_new, lc_new])

  def cond(state):
    labels, prev = state
    return jnp.any(labels != prev)

  init = jnp.arange(m + n)
  labels, _ = jax.lax.while_loop(cond, lambda s: (step(s[0]), s[0]), (step(init), init))
  return labels


def bipartite_components(mask: ArrayLike) -> jax.Array:
  """Connected components of the bipartite graph of ``mask``.

  Rows are nodes ``0..m-1``, columns nodes ``m..m+n-1``, and (i, j) is an edge iff
  ``mask[i, j]``. Label propagation (each node takes the smallest label among its neighbours)
  inside one ``lax.while_loop``; it stops after diameter + 1 sweeps of O(mn).

  Args:
    mask: (m, n) bool.

  Returns:
    (m + n,) int: for every node, the smallest node index of its component.
  """
  return _component_labels(jnp.asarray(_check_mask(mask)))


def rank_one_completable(mask: ArrayLike) -> jax.Array:
  """Exact rank-one completability: (k, l) is determined iff row k and column l are connected.

  For rank one the circuits of the determinantal matroid are the cycles of the bipartite graph
  (JMLR 2015; ICML 2012), so the closure of a mask is the union of the
  complete bipartite graphs on its connected components.

  Example:
    >>> import numpy as np
    >>> rank_one_completable(np.array([[1, 1], [0, 1]], bool))
    Array([[ True,  True],
           [ True,  True]], dtype=bool)
  """
  mask = _check_mask(mask)
  labels = bipartite_components(mask)
  m = mask.shape[0]
  return labels[:m, None] == labels[None, m:]


class PathCompletion(NamedTuple):
  """Completion of one entry along one path.

  Attributes:
    estimate: the completed entry.
    log_variance: first-order variance of ``log|estimate|`` under additive noise ``noise_std``
      on every observed entry (the sum of ``noise_std**2 / a_e**2`` over the path).
  """

  estimate: jax.Array
  log_variance: jax.Array


def rank_one_path_completion(values: ArrayLike, path: ArrayLike,
                             noise_std: float = 0.0) -> PathCompletion:
  r"""Completes a rank-one entry along an alternating path of observed entries.

  For :math:`A = uv^\top` and a path :math:`k = i_0, j_1, i_1, j_2, \dots, i_p, j_{p+1} = l`
  in the bipartite graph, :math:`a_{kl} = \prod_t a_{i_t j_{t+1}} / \prod_t a_{i_{t+1} j_{t+1}}`
  (the :math:`u`'s and :math:`v`'s of the inner nodes cancel; JMLR 2015). In log space
  this is a signed sum, so independent noise adds variances.

  Args:
    values: (m, n) matrix whose path entries are observed.
    path: even-length int sequence ``[k, j_1, i_1, j_2, ..., i_p, l]`` alternating row and
      column indices; consecutive pairs are observed entries.
    noise_std: standard deviation of additive observation noise, for ``log_variance``.

  Returns:
    A :class:`PathCompletion`.

  Example:
    >>> import jax.numpy as jnp
    >>> a = jnp.outer(jnp.array([1., 2.]), jnp.array([3., 5.]))
    >>> rank_one_path_completion(a, [1, 0, 0, 1]).estimate  # a[1,0] a[0,1] / a[0,0]
    Array(10., dtype=float32)
  """
  values = jnp.asarray(values)
  path = np.asarray(path, dtype=int)
  if path.ndim != 1 or path.size < 2 or path.size % 2:
    raise ValueError(f"path must be an even-length 1-D sequence [row, col, row, ..., col], got "
                     f"{path.tolist()}.")
  rows, cols = path[0::2], path[1::2]
  forward = values[rows, cols]                   # (i_t, j_{t+1}): numerator
  backward = values[rows[1:], cols[:-1]]         # (i_{t+1}, j_{t+1}): denominator
  estimate = jnp.prod(forward) / jnp.prod(backward)
  on_path = jnp.concatenate([forward, backward])
  return PathCompletion(estimate, jnp.sum(noise_std**2 / on_path**2))


class RankOneCompletion(NamedTuple):
  """Rank-one completion of every determined entry by the best combination of paths.

  Attributes:
    estimate: (m, n) completed matrix (observed entries re-estimated too; NaN where the entry
      is not determined).
    std: (m, n) predicted standard deviation of ``estimate`` under the noise model.
    log_std: (m, n) predicted standard deviation of ``log|estimate|`` (for ``noise_std=1`` it is
      the square root of the effective resistance between row k and column l).
    completable: (m, n) bool, row and column in the same component.
  """

  estimate: jax.Array
  std: jax.Array
  log_std: jax.Array
  completable: jax.Array


@jax.jit
def _rank_one_complete(values, mask, noise_std):
  m, n = mask.shape
  dtype = values.dtype
  labels = _component_labels(mask)
  # Signs: sign(a_ij) = s_i t_j; propagate from each component's root (the node with the
  # smallest index) along observed edges, one sweep per graph distance.
  sign_a = jnp.where(mask, jnp.sign(values), 0.0)
  root = (labels == jnp.arange(m + n)).astype(dtype)

  def sign_step(s):
    sr, sc = s[:m], s[m:]
    sr = jnp.where(sr == 0, jnp.sign(sign_a @ sc), sr)
    sc = jnp.where(sc == 0, jnp.sign(sign_a.T @ sr), sc)
    return jnp.concatenate([sr, sc])

  signs, _ = jax.lax.while_loop(lambda st: jnp.any(st[0] != st[1]),
                                lambda st: (sign_step(st[0]), st[0]),
                                (sign_step(root), root))
  # Log space: y_ij = log|a_ij| = phi_i - phi_{m+j} with phi_i = log|u_i|, phi_{m+j} = -log|v_j|.
  # Under additive noise, Var(y_ij) ~ sigma^2 / a_ij^2 (delta method), so the minimum-variance
  # unbiased combination of all paths is weighted least squares on the graph, with weights
  # w_ij = a_ij^2 (the common sigma^2 cancels): L phi = B^T W y, L the weighted Laplacian.
  # Its variance for phi_k - phi_{m+l} is sigma^2 times the effective resistance
  # (e_k - e_{m+l})^T L^+ (e_k - e_{m+l}) (JMLR 2015: the variance-minimal path combination).
  w = jnp.where(mask, values**2, 0.0)
  y = jnp.where(mask, jnp.log(jnp.where(mask, jnp.abs(values), 1.0)), 0.0)
  lap = jnp.block([[jnp.diag(w.sum(1)), -w], [-w.T, jnp.diag(w.sum(0))]])
  rhs = jnp.concatenate([(w * y).sum(1), -(w * y).sum(0)])
  # L + P with P the projector onto the component indicators is invertible, and its inverse
  # equals L^+ on vectors orthogonal to every indicator (all potential differences inside a
  # component), so one Cholesky solves every component at once.
  onehot = (labels[:, None] == jnp.arange(m + n)[None, :]).astype(dtype)
  onehot = onehot / jnp.sqrt(jnp.maximum(onehot.sum(0, keepdims=True), 1.0))
  chol = jax.scipy.linalg.cho_factor(lap + onehot @ onehot.T)
  phi = jax.scipy.linalg.cho_solve(chol, rhs)
  inv = jax.scipy.linalg.cho_solve(chol, jnp.eye(m + n, dtype=dtype))
  d = jnp.diag(inv)
  resistance = d[:m, None] + d[None, m:] - 2.0 * inv[:m, m:]
  completable = labels[:m, None] == labels[None, m:]
  log_std = noise_std * jnp.sqrt(jnp.maximum(resistance, 0.0))
  magnitude = jnp.exp(phi[:m, None] - phi[None, m:])
  estimate = jnp.where(completable, signs[:m, None] * signs[None, m:] * magnitude, jnp.nan)
  return RankOneCompletion(estimate, jnp.abs(estimate) * log_std,
                           jnp.where(completable, log_std, jnp.inf), completable)


def rank_one_complete(values: ArrayLike, mask: ArrayLike,
                      noise_std: float = 1.0) -> RankOneCompletion:
  r"""Completes every determined entry of a rank-one matrix by the minimum-variance path
  combination, with its error estimate.

  Every path from row :math:`k` to column :math:`l` gives an unbiased estimate of
  :math:`\log|a_{kl}|` as a signed sum of observed :math:`\log|a_{ij}|`
  (:func:`rank_one_path_completion`). Under independent additive noise of standard deviation
  :math:`\sigma`, :math:`\operatorname{Var}\log|a_{ij}| \approx \sigma^2 / a_{ij}^2`, and the
  minimum-variance linear combination of all paths is the weighted least-squares potential
  :math:`L\phi = B^\top W y` on the bipartite graph; its variance is :math:`\sigma^2` times the
  effective resistance between row :math:`k` and column :math:`l` with edge resistances
  :math:`1/a_{ij}^2` (the electrical-network form of the paper's variance-minimal combination).
  Signs are propagated along a spanning forest. Noiseless data are reproduced exactly.
  Observed entries must be nonzero: a zero entry of a rank-one matrix zeroes its whole row or
  column and carries no ratio information (its log-weight is zero).

  Args:
    values: (m, n) float, observed entries (others are ignored).
    mask: (m, n) bool, True where observed.
    noise_std: :math:`\sigma`, only scales the reported standard deviations.

  Returns:
    A :class:`RankOneCompletion`; ``std`` is the first-order (delta-method) standard deviation
    :math:`|\hat a_{kl}|\,\sigma\sqrt{R_{\mathrm{eff}}(k, l)}`.

  Example:
    >>> import jax.numpy as jnp, numpy as np
    >>> a = jnp.outer(jnp.array([1., -2.]), jnp.array([3., 5.]))
    >>> mask = np.array([[1, 1], [1, 0]], bool)
    >>> round(float(rank_one_complete(a, mask).estimate[1, 1]), 4)
    -10.0

  References:
    Király, Theran, Tomioka (2015), rank one: paths, cycles, error-minimising
    combination; Király, Theran (2013), arXiv 1302.5337.
  """
  mask = _check_mask(mask)
  values = _check_values(values, mask.shape)
  return _rank_one_complete(values, jnp.asarray(mask), jnp.asarray(noise_std, values.dtype))


# ----------------------------------------------------------------------------------------------
# Rank r: circuits from the Jacobian and the local equations they define
# ----------------------------------------------------------------------------------------------


class Circuit(NamedTuple):
  """A circuit through one entry.

  Attributes:
    entries: (m, n) bool, the observed entries C such that C + {entry} is a circuit (a minimal
      dependent set) of the rank-r determinantal matroid; all False if the entry is not
      completable; just the entry itself if it is observed.
    completable: whether the entry is determined by the mask.
  """

  entries: np.ndarray
  completable: bool


def _gradient_rows(rows, cols, u, v, row_index, col_index, d):
  """Dense Jacobian rows (numpy) of entries (rows[t], cols[t]) in local parameter coordinates."""
  r = u.shape[1]
  jac = np.zeros((len(rows), d))
  for t, (i, j) in enumerate(zip(rows, cols)):
    jac[t, row_index[i] * r:(row_index[i] + 1) * r] = v[j]
    off = (len(row_index) + col_index[j]) * r
    jac[t, off:off + r] = u[i]
  return jac


def _bfs_distance(mask: np.ndarray, k: int, l: int) -> tuple[np.ndarray, np.ndarray]:
  """Graph distances of every row and column node from {row k, column l}."""
  m, n = mask.shape
  drow = np.full(m, np.inf)
  dcol = np.full(n, np.inf)
  drow[k] = 0
  dcol[l] = 0
  while True:
    ncol = np.minimum(dcol, np.min(np.where(mask, drow[:, None] + 1, np.inf), axis=0))
    nrow = np.minimum(drow, np.min(np.where(mask, ncol[None, :] + 1, np.inf), axis=1))
    if np.array_equal(ncol, dcol) and np.array_equal(nrow, drow):
      return drow, dcol
    drow, dcol = nrow, ncol


def find_circuit(mask: ArrayLike, rank: int, entry: tuple[int, int], key: jax.Array, *,
                 rtol: float = 1e-8) -> Circuit:
  r"""A circuit of the rank-r determinantal matroid through an unobserved entry.

  A circuit :math:`C \cup \{kl\}` is a minimal set of entries that are algebraically dependent
  on rank-r matrices; its circuit polynomial determines :math:`a_{kl}` from :math:`a_C`
  (JMLR 2015). At a generic point the matroid is the linear matroid of the
  Jacobian rows, so: order the observed entries by their graph distance from row k and column
  l (random tie-break), take the shortest prefix :math:`S` whose Jacobian spans
  :math:`g_{kl}` (doubling, then bisection), pick a basis :math:`B \subseteq S` by pivoted QR,
  and return the fundamental circuit of :math:`kl` in :math:`B`: the support of the unique
  :math:`c` with :math:`J_B^\top c = g_{kl}` (minimal by construction).

  This is a host-side routine (float64 NumPy/SciPy): the circuit's size is data-dependent.

  Args:
    mask: (m, n) bool observed positions.
    rank: the rank r.
    entry: (k, l), the entry to complete.
    key: PRNG key for the random point and the tie-break.
    rtol: relative residual for "lies in the span" on the small local systems.

  Returns:
    A :class:`Circuit`.

  References:
    Király, Theran, Tomioka (2015), circuits.
  """
  mask = _check_mask(mask)
  rank = _check_rank(rank, mask.shape)
  k, l = _check_entry(entry, mask.shape)
  m, n = mask.shape
  if mask[k, l]:
    only = np.zeros_like(mask)
    only[k, l] = True
    return Circuit(only, True)
  kc, kp, kt = jax.random.split(key, 3)
  if not bool(completable_entries(mask, rank, kc)[k, l]):
    return Circuit(np.zeros_like(mask), False)
  with jax.enable_x64(True):
    u, v = (np.asarray(x) for x in _random_point(kp, m, n, rank, jnp.float64))
    tie = np.asarray(jax.random.uniform(kt, (m, n), jnp.float64))
  drow, dcol = _bfs_distance(mask, k, l)
  priority = np.where(mask, drow[:, None] + dcol[None, :] + tie, np.inf)
  order = np.argsort(priority, axis=None)[: int(mask.sum())]
  obs_rows, obs_cols = np.unravel_index(order, mask.shape)

  def local_system(p):
    rows = np.unique(np.concatenate([obs_rows[:p], [k]]))
    cols = np.unique(np.concatenate([obs_cols[:p], [l]]))
    ri = {int(i): t for t, i in enumerate(rows)}
    ci = {int(j): t for t, j in enumerate(cols)}
    d = rank * (len(rows) + len(cols))
    jac = _gradient_rows(obs_rows[:p], obs_cols[:p], u, v, ri, ci, d)
    g = _gradient_rows([k], [l], u, v, ri, ci, d)[0]
    return jac, g

  def residual(jac, g):
    coef = scipy.linalg.lstsq(jac.T, g, lapack_driver="gelsd", cond=1e-10)[0]
    return np.linalg.norm(jac.T @ coef - g) / np.linalg.norm(g), coef

  def spans(p):
    return residual(*local_system(p))[0] <= rtol

  total = len(order)
  lo, hi = 0, min(total, (rank + 1) ** 2 - 1)   # no circuit has fewer than (r+1)^2 entries
  while not spans(hi):
    lo, hi = hi, min(total, 2 * hi)
    if lo == total:                             # numerically inconsistent with the global test
      return Circuit(np.zeros_like(mask), False)
  while hi - lo > 1:                            # invariant: prefix lo fails, prefix hi spans
    mid = (lo + hi) // 2
    lo, hi = (lo, mid) if spans(mid) else (mid, hi)
  jac, g = local_system(hi)
  _, r_diag, piv = scipy.linalg.qr(jac.T, mode="economic", pivoting=True)
  basis_size = int(np.sum(np.abs(np.diag(r_diag)) > 1e-10 * abs(r_diag[0, 0])))
  basis = np.sort(piv[:basis_size])
  _, coef = residual(jac[basis], g)
  support = basis[np.abs(coef) > 1e-9 * np.max(np.abs(coef))]
  if residual(jac[support], g)[0] > rtol:       # threshold cut a true coefficient: keep basis
    support = basis
  circuit = np.zeros_like(mask)
  circuit[obs_rows[support], obs_cols[support]] = True
  return Circuit(circuit, True)


# ----------------------------------------------------------------------------------------------
# r-neighbour propagation: a unique, linear construction of the factors (the exact start)
# ----------------------------------------------------------------------------------------------


class _Propagation(NamedTuple):
  """Factors of a rigid "body" grown from a fully observed r x r seed.

  Attributes:
    row_gen, col_gen: (m,), (n,) int generation at which each row/column joined (-1: never).
      Seed rows and columns have generation 0; rows join at odd, columns at even generations.
    u, v: (m, r), (n, r) float64 factors in the seed's gauge (U[seed rows] = I); NaN outside.
    seed_rows, seed_cols: the seed's indices.
  """

  row_gen: np.ndarray
  col_gen: np.ndarray
  u: np.ndarray
  v: np.ndarray
  seed_rows: np.ndarray
  seed_cols: np.ndarray


def _seed_blocks(mask: np.ndarray, rank: int, rng: np.random.Generator, tries: int):
  """Random fully observed r x r blocks (K_{r,r} subgraphs of the bipartite graph)."""
  m = mask.shape[0]
  seen = set()
  for _ in range(tries):
    i0 = int(rng.integers(m))
    cols0 = np.flatnonzero(mask[i0])
    if len(cols0) < rank:
      continue
    cs = np.sort(rng.choice(cols0, rank, replace=False))
    cand = np.flatnonzero(mask[:, cs].all(1))
    if len(cand) < rank:
      continue
    rs = np.sort(np.concatenate([[i0], rng.choice(cand[cand != i0], rank - 1, replace=False)]))
    if (tuple(rs), tuple(cs)) not in seen:
      seen.add((tuple(rs), tuple(cs)))
      yield rs, cs


def _generations(mask: np.ndarray, rank: int, rows: np.ndarray, cols: np.ndarray):
  """r-neighbour bootstrap percolation from a seed: a row joins once it has >= r observed
  entries in joined columns, a column once it has >= r in joined rows (sweeps alternate)."""
  m, n = mask.shape
  row_gen = np.full(m, -1)
  col_gen = np.full(n, -1)
  row_gen[rows] = 0
  col_gen[cols] = 0
  gen = 1
  while True:
    new_rows = (row_gen < 0) & ((mask & (col_gen >= 0)[None, :]).sum(1) >= rank)
    row_gen[new_rows] = gen
    new_cols = (col_gen < 0) & ((mask & (row_gen >= 0)[:, None]).sum(0) >= rank)
    col_gen[new_cols] = gen + 1
    if not (new_rows.any() or new_cols.any()):
      return row_gen, col_gen
    gen += 2


def _propagate(values: np.ndarray, mask: np.ndarray, rank: int, entry: tuple[int, int],
               rng: np.random.Generator, max_seeds: int):
  r"""Exact factors on bodies containing row k and column l, one per seed that reaches both
  (a generator: at most ``max_seeds`` seeds are tried in all).

  With a fully observed, invertible r x r seed block :math:`A_0 = A[R_0, C_0]`, the gauge
  :math:`U_{R_0} = I` gives :math:`V_{C_0} = A_0^\top`; every later row (column) has >= r
  observed entries in earlier columns (rows), so its factor is the unique least-squares
  solution of a full-rank linear system (generically). On noiseless data this reproduces the
  true rank-r matrix on the whole body: the propagation picks the one root of the polynomial
  system that all the linear steps agree on, so no root has to be chosen afterwards. Every
  entry of the body is determined (the body is rigid), but not every determined entry lies in
  a body grown from an r x r seed (near the counting bound for r >= 3 they often do not).
  """
  k, l = entry
  m, n = mask.shape
  for rs, cs in _seed_blocks(mask, rank, rng, 20 * max_seeds):
    max_seeds -= 1
    if max_seeds < 0:
      return
    row_gen, col_gen = _generations(mask, rank, rs, cs)
    if row_gen[k] < 0 or col_gen[l] < 0:
      continue
    a0 = values[np.ix_(rs, cs)]
    if np.linalg.cond(a0) > 1e8:
      continue
    u = np.full((m, rank), np.nan)
    v = np.full((n, rank), np.nan)
    u[rs] = np.eye(rank)
    v[cs] = a0.T
    for g in range(1, max(row_gen.max(), col_gen.max()) + 1):
      if g % 2:
        for i in np.flatnonzero(row_gen == g):
          p = np.flatnonzero(mask[i] & (col_gen >= 0) & (col_gen < g))
          u[i] = np.linalg.lstsq(v[p], values[i, p], rcond=None)[0]
      else:
        for j in np.flatnonzero(col_gen == g):
          p = np.flatnonzero(mask[:, j] & (row_gen >= 0) & (row_gen < g))
          v[j] = np.linalg.lstsq(u[p], values[p, j], rcond=None)[0]
    yield _Propagation(row_gen, col_gen, u, v, rs, cs)


def _ancestors(mask: np.ndarray, prop: _Propagation, entry: tuple[int, int]):
  """Rows and columns whose observed entries the propagation used to reach row k and col l."""
  k, l = entry
  rows = np.zeros(mask.shape[0], bool)
  cols = np.zeros(mask.shape[1], bool)
  stack = [("r", k), ("c", l)]
  while stack:
    side, i = stack.pop()
    if side == "r":
      if rows[i]:
        continue
      rows[i] = True
      parents = np.flatnonzero(mask[i] & (prop.col_gen >= 0) & (prop.col_gen < prop.row_gen[i]))
      stack.extend(("c", int(j)) for j in parents if not cols[j])
    else:
      if cols[i]:
        continue
      cols[i] = True
      parents = np.flatnonzero(mask[:, i] & (prop.row_gen >= 0) & (prop.row_gen < prop.col_gen[i]))
      stack.extend(("r", int(j)) for j in parents if not rows[j])
  rows[prop.seed_rows] = True   # the gauge and the seed block A_0 enter every factor
  cols[prop.seed_cols] = True
  return np.flatnonzero(rows), np.flatnonzero(cols)


def _balanced(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The same product u v^T with u^T u = v^T v (a well-scaled gauge for the local solver)."""
  qu, ru = np.linalg.qr(u)
  qv, rv = np.linalg.qr(v)
  left, s, right_t = np.linalg.svd(ru @ rv.T)
  return qu @ left * np.sqrt(s), qv @ right_t.T * np.sqrt(s)


class _Fit(NamedTuple):
  u: jax.Array
  v: jax.Array
  loss: jax.Array


@functools.partial(jax.jit, static_argnames=("rank", "n_restarts", "iterations"))
def _fit_low_rank(values, weights, rank, key, n_restarts, iterations, u_init=None, v_init=None):
  """Levenberg-Marquardt on 0.5 * sum w_ij (u_i^T v_j - a_ij)^2 from several starts (vmapped).

  Restart 0 starts from (u_init, v_init) when given, else from a truncated SVD; the others
  from random factors.
  """
  m, n = values.shape
  dtype = values.dtype
  scale = jnp.sqrt(jnp.sum(weights * values**2) / jnp.maximum(jnp.sum(weights), 1.0) / rank)

  def loss_fn(u, v):
    return 0.5 * jnp.sum(weights * (u @ v.T - values) ** 2)

  # Without an initial point, restart 0 starts from the rank-r SVD of the rescaled zero-filled
  # block (a good start when the block is well sampled).
  fill = jnp.sum(weights) / (m * n)
  left, sv, right = jnp.linalg.svd(weights * values / jnp.maximum(fill, 1e-12),
                                   full_matrices=False)
  u_svd = left[:, :rank] * jnp.sqrt(sv[:rank])[None, :]
  v_svd = right[:rank].T * jnp.sqrt(sv[:rank])[None, :]
  if u_init is not None:
    u_svd, v_svd = u_init.astype(dtype), v_init.astype(dtype)

  def solve_one(k, from_svd):
    ku, kv = jax.random.split(k)
    u0 = jnp.where(from_svd, u_svd, jnp.sqrt(scale) * jax.random.normal(ku, (m, rank), dtype))
    v0 = jnp.where(from_svd, v_svd, jnp.sqrt(scale) * jax.random.normal(kv, (n, rank), dtype))

    def step(state):
      it, u, v, loss, mu, fails = state
      res = weights * (u @ v.T - values)
      grad = jnp.concatenate([(res @ v).ravel(), (res.T @ u).ravel()])
      gram = _jacobian_gram(weights, u, v)
      # Marquardt scaling plus a small absolute ridge: J^T J is singular along the r^2 gauge
      # directions (U G, V G^{-T}) and along unobserved rows, which do not change the loss.
      damp = mu * (jnp.diag(gram) + 1e-12 * jnp.max(jnp.diag(gram)) + 1e-30)
      delta = -jnp.linalg.solve(gram + jnp.diag(damp), grad)
      u_new = u + delta[: m * rank].reshape(m, rank)
      v_new = v + delta[m * rank:].reshape(n, rank)
      new_loss = loss_fn(u_new, v_new)
      better = new_loss < loss
      return (it + 1, jnp.where(better, u_new, u), jnp.where(better, v_new, v),
              jnp.where(better, new_loss, loss),
              jnp.where(better, jnp.maximum(mu / 3.0, 1e-12), mu * 4.0),
              jnp.where(better, 0, fails + 1))

    def running(state):
      # Stop after `iterations`, or after 8 rejected steps in a row (the damping grew 4^8-fold
      # without progress: converged to rounding, or stuck).
      return (state[0] < iterations) & (state[5] < 8)

    _, u, v, loss, _, _ = jax.lax.while_loop(
        running, step, (0, u0, v0, loss_fn(u0, v0), jnp.asarray(1e-2, dtype), 0))
    return _Fit(u, v, loss)

  return jax.vmap(solve_one)(jax.random.split(key, n_restarts), jnp.arange(n_restarts) == 0)


class StrategyAttempt(NamedTuple):
  """One step of :func:`complete_entry`: a strategy's start that was solved, or its refusal.

  Attributes:
    strategy: the strategy's ``name``.
    accepted: whether this solve passed the misfit test (the last attempt of an accepted
      completion; at most one attempt is accepted).
    reason: why the strategy offered no start (``misfit_excess`` is then NaN), or the misfit
      test's verdict on its solve.
    misfit_excess: squared misfit over its largest value consistent with the noise model
      (accepted iff <= 1).
  """

  strategy: str
  accepted: bool
  reason: str
  misfit_excess: float


class EntryCompletion(NamedTuple):
  """Completion of one entry from its circuit.

  Attributes:
    value: the completed entry (NaN if the entry is not completable or no strategy offered a
      start).
    std: predicted standard deviation of ``value`` under i.i.d. additive noise ``noise_std`` on
      the observed entries used (first-order, at the returned local solution).
    circuit: (m, n) bool, the circuit found (see :class:`Circuit`); with ``use_block`` the fit
      uses every observed entry of a block of rows and columns containing it.
    residual: root-mean-square misfit of the local equations at the solution (~0 on noiseless
      data; about ``noise_std`` times sqrt(1 - dof / equations) at the right root otherwise).
    spread: max - min of the completed value over the restarts that reached the best misfit
      (up to 1e-6 relative); nonzero flags several roots of the circuit polynomial. Zero when
      the solve started from constructed factors (one restart).
    strategy: the ``name`` of the strategy whose solve is returned ("given", "propagated",
      "global", "random" for the default ones), or "observed" / "none" for an observed or
      undetermined entry (and "none" when every strategy declined).
    consistent: whether the returned solve passed the chi-square test of the noise model (see
      :func:`complete_entry`); if False, ``std`` uses the noise level the misfit implies.
    attempts: every start tried, in order, with why it was rejected (:class:`StrategyAttempt`);
      empty for an observed or undetermined entry.
  """

  value: jax.Array
  std: jax.Array
  circuit: np.ndarray
  residual: jax.Array
  spread: jax.Array
  strategy: str
  consistent: bool
  attempts: tuple[StrategyAttempt, ...] = ()


class LocalSolveOptions(NamedTuple):
  """How every local solve of :func:`complete_entry` is set up (shared by all strategies).

  Attributes:
    use_block: fit every observed entry in the block of the circuit's rows x columns, grown
      until it has r more equations than local degrees of freedom, not only the circuit.
    iterations: Levenberg-Marquardt iterations of each solve.
    max_grow: how many times a block may grow (two rows and two columns at a time).
  """

  use_block: bool = True
  iterations: int = 150
  max_grow: int = 10


class LocalSolution(NamedTuple):
  """A local solve on rows x columns: the entry, its first-order gain ``||c||`` (sd = sigma
  ``||c||``), the RMS ``residual`` over the ``equations`` fitted, the ``spread`` over equally
  good restarts, the local degrees of freedom ``dof`` (rank of J^T J) and the noise level the
  misfit implies, ``noise_estimate`` = sqrt(SSR / (equations - dof))."""

  value: float
  gain: float
  residual: float
  spread: float
  equations: int
  dof: int
  noise_estimate: float


class Declined(NamedTuple):
  """What a completion strategy yields when it has no start to offer, and why."""

  reason: str


class EntryProblem(NamedTuple):
  """What a completion strategy sees: one missing, determined entry and the data.

  Attributes:
    values: (m, n) observed entries, zero elsewhere, in the solver's dtype.
    mask: (m, n) bool observed positions.
    rank: the rank r.
    entry: (k, l).
    circuit: its :class:`Circuit`.
    rows, cols: the circuit's rows and columns, with row k and column l.
    fitted: (m, n) bool, the observed entries a local solve may fit: the whole mask with
      ``options.use_block``, else the circuit.
    start: the ``start`` factors given to :func:`complete_entry` (float64), or None.
    key: PRNG key of the local solves (restarts).
    seed_key: PRNG key of the propagation's seed blocks.
    options: the :class:`LocalSolveOptions`.
  """

  values: jax.Array
  mask: np.ndarray
  rank: int
  entry: tuple[int, int]
  circuit: Circuit
  rows: np.ndarray
  cols: np.ndarray
  fitted: np.ndarray
  start: tuple[np.ndarray, np.ndarray] | None
  key: jax.Array
  seed_key: jax.Array
  options: LocalSolveOptions

  def block(self, used: np.ndarray, rows: np.ndarray, cols: np.ndarray):
    """Rows and columns grown (with ``use_block``) until ``used`` has r spare equations."""
    if not self.options.use_block:
      return rows, cols
    return _grow_to_spare(used, rows, cols, self.rank, self.options.max_grow)

  def solve(self, used: np.ndarray, rows: np.ndarray, cols: np.ndarray,
            init: tuple[np.ndarray, np.ndarray] | None = None,
            n_restarts: int = 1) -> LocalSolution:
    """Fits the entries of ``used`` in rows x cols from ``init`` (factors of those rows and
    columns) or, if None, from a truncated SVD and ``n_restarts - 1`` random starts."""
    return _solve_local(self.values, used, rows, cols, self.rank, self.entry, self.key,
                        n_restarts, self.options.iterations, init)


class CompletionStrategy(Protocol):
  """A way to start the local solve of :func:`complete_entry`.

  ``solutions(problem)`` yields, lazily, one :class:`LocalSolution` per start it constructs
  (:meth:`EntryProblem.solve`), or a single :class:`Declined` saying why it has none;
  :func:`complete_entry` stops asking once a solution passes the misfit test.
  """

  name: str

  def solutions(self, problem: EntryProblem) -> Iterator[LocalSolution | Declined]: ...


@dataclasses.dataclass(frozen=True)
class GivenStart:
  """Strategy "given": start from the ``start`` factors of the whole matrix passed to
  :func:`complete_entry` (e.g. one :func:`low_rank_fit` shared by many entries)."""

  name: ClassVar[str] = "given"

  def solutions(self, problem: EntryProblem) -> Iterator[LocalSolution | Declined]:
    if problem.start is None:
      yield Declined("no start was given")
      return
    rows, cols = problem.block(problem.fitted, problem.rows, problem.cols)
    su, sv = problem.start
    yield problem.solve(problem.fitted, rows, cols, _balanced(su[rows], sv[cols]))


@dataclasses.dataclass(frozen=True)
class PropagatedStart:
  r"""Strategy "propagated": start from the exact r-neighbour propagation.

  From a fully observed r x r block (gauge :math:`U_{R_0} = I`), rows and columns with at
  least r observed entries among those already placed are added one generation at a time,
  each factor the least-squares solution of a full-rank linear system. This is unique, hence
  picks the true root on noiseless data (exact up to rounding), and close to it under small
  noise. Seed blocks are drawn (up to ``max_seeds``) until one grows a body that reaches row k
  and column l; up to ``max_propagations`` such bodies give one start each. If the circuit's
  block leaves the body, its rows and columns outside are replaced by all those the
  propagation used to reach row k and column l, and only entries inside the body are fitted.
  Declines when no seed reaches the entry (typical for r >= 3 near the counting bound, where
  percolation from an r x r seed dies out).
  """

  max_seeds: int = 64
  max_propagations: int = 3
  name: ClassVar[str] = "propagated"

  def __post_init__(self):
    _check_count("max_seeds", self.max_seeds, 1)
    _check_count("max_propagations", self.max_propagations, 1)

  def solutions(self, problem: EntryProblem) -> Iterator[LocalSolution | Declined]:
    p = problem
    rng = np.random.default_rng(np.asarray(jax.random.key_data(p.seed_key)).ravel())
    host_values = np.asarray(p.values, np.float64)
    props = _propagate(host_values, p.mask, p.rank, p.entry, rng, self.max_seeds)
    found = 0
    for prop in itertools.islice(props, self.max_propagations):
      rows, cols = p.rows, p.cols
      in_rows, in_cols = prop.row_gen >= 0, prop.col_gen >= 0
      if not (in_rows[rows].all() and in_cols[cols].all()):
        anc_rows, anc_cols = _ancestors(p.mask, prop, p.entry)
        rows = np.union1d(rows[in_rows[rows]], anc_rows)
        cols = np.union1d(cols[in_cols[cols]], anc_cols)
      used = p.mask & in_rows[:, None] & in_cols[None, :]
      rows, cols = p.block(used, rows, cols)
      found += 1
      yield p.solve(used, rows, cols, _balanced(prop.u[rows], prop.v[cols]))
    if not found:
      yield Declined(f"no fully observed {p.rank}x{p.rank} seed block (up to {self.max_seeds} "
                     f"tried) grows a body reaching row {p.entry[0]} and column {p.entry[1]}")


@dataclasses.dataclass(frozen=True)
class GlobalFitStart:
  """Strategy "global": start from a fit of all observed entries, :func:`low_rank_fit`
  (Levenberg-Marquardt from the rank-r truncation of a short nuclear-norm solve), restricted
  to the block. Declines when a ``start`` was given: that start stands for the global fit."""

  nn_iterations: int = 150
  iterations: int = 300
  name: ClassVar[str] = "global"

  def __post_init__(self):
    _check_count("nn_iterations", self.nn_iterations, 1)
    _check_count("iterations", self.iterations, 1)

  def solutions(self, problem: EntryProblem) -> Iterator[LocalSolution | Declined]:
    p = problem
    if p.start is not None:
      yield Declined("a start was given; it stands for the global fit")
      return
    fit = low_rank_fit(p.values, p.mask, p.rank, nn_iterations=self.nn_iterations,
                       iterations=self.iterations)
    rows, cols = p.block(p.fitted, p.rows, p.cols)
    yield p.solve(p.fitted, rows, cols, _balanced(np.asarray(fit.u, np.float64)[rows],
                                                  np.asarray(fit.v, np.float64)[cols]))


@dataclasses.dataclass(frozen=True)
class RandomRestarts:
  """Strategy "random": the best of ``n_restarts`` starts on the block (one from the truncated
  SVD of the zero-filled block, the others random). While the best restarts disagree on the
  entry (``spread``: a circuit polynomial with several roots), the block grows by the two rows
  and two columns with the most observed entries in its span, whose extra equations the
  spurious roots generically violate."""

  n_restarts: int = 32
  name: ClassVar[str] = "random"

  def __post_init__(self):
    _check_count("n_restarts", self.n_restarts, 1)

  def solutions(self, problem: EntryProblem) -> Iterator[LocalSolution | Declined]:
    p = problem
    rows, cols = p.block(p.fitted, p.rows, p.cols)
    for _ in range(p.options.max_grow + 1):
      sol = p.solve(p.fitted, rows, cols, None, self.n_restarts)
      if not p.options.use_block or sol.spread <= 1e-6 * (abs(sol.value) + sol.residual + 1e-30):
        break
      rows, cols = _grow_block(p.fitted, rows, cols)
    yield sol


# The order in which :func:`complete_entry` tries its starts: cheapest and most reliable first.
DEFAULT_COMPLETION_STRATEGIES: tuple[CompletionStrategy, ...] = (
    GivenStart(), PropagatedStart(), GlobalFitStart(), RandomRestarts())


def _observed_values(values: jax.Array, mask: np.ndarray) -> jax.Array:
  """``values`` with its unobserved entries set to zero (they are ignored, NaN included); its
  observed entries must be finite (checked when concrete)."""
  if core.is_concrete(values):
    bad = mask & ~np.isfinite(np.asarray(values))
    if bad.any():
      i, j = np.argwhere(bad)[0]
      raise ValueError(f"values must be finite at the observed positions (mask), got "
                       f"{int(bad.sum())} NaN/inf observed entries, the first at ({i}, {j}): "
                       f"{np.asarray(values)[i, j]}.")
  return jnp.where(jnp.asarray(mask), values, jnp.zeros((), values.dtype))


def _pad(size: int) -> int:
  """Padded block size: 8, 16, 24, 32, 48, 64, 96, ... (few shapes, hence few compilations)."""
  if size <= 32:
    return max(8, -(-size // 8) * 8)
  step = 1 << (int(np.ceil(np.log2(size))) - 2)   # quarter of the next power of two
  return -(-size // step) * step


def complete_entry(values: ArrayLike, mask: ArrayLike, rank: int, entry: tuple[int, int],
                   key: jax.Array, *, noise_std: float = 1.0,
                   strategies: Sequence[CompletionStrategy] = DEFAULT_COMPLETION_STRATEGIES,
                   options: LocalSolveOptions = LocalSolveOptions(),
                   start: tuple[ArrayLike, ArrayLike] | None = None,
                   circuit: Circuit | None = None,
                   misfit_level: float = 1e-6) -> EntryCompletion:
  r"""Completes one entry of a rank-r matrix from a circuit, with its error estimate.

  The circuit :math:`C` through :math:`(k, l)` (:func:`find_circuit`) names a few rows
  :math:`I` and columns :math:`J`; the local equations :math:`u_i^\top v_j = a_{ij}` for the
  observed :math:`(i,j)` (those of :math:`C`, or with ``options.use_block`` every observed
  entry of :math:`I \times J`, grown until there are r more equations than local degrees of
  freedom) are solved by Levenberg-Marquardt, and :math:`\hat a_{kl} = \hat u_k^\top \hat v_l`.

  The local system is polynomial and near the counting bound it is barely overdetermined:
  from random starts Levenberg-Marquardt mostly stalls at non-zero misfit (at 100 x 100,
  rank 2, 1.6 times the counting bound, none of 32 starts reached the solution for most
  entries), and the circuit polynomial can have several roots. So the start matters, and
  ``strategies`` lists the ways to make one, tried in order. The default,
  :data:`DEFAULT_COMPLETION_STRATEGIES`, is

  1. :class:`GivenStart` -- the ``start`` factors, if given;
  2. :class:`PropagatedStart` -- the exact r-neighbour propagation from fully observed r x r
     seeds (exact on noiseless data; up to 3 seeds);
  3. :class:`GlobalFitStart` -- a fit of all observed entries, :func:`low_rank_fit` (only
     without a given ``start``; what r >= 3 near the counting bound needs);
  4. :class:`RandomRestarts` -- 32 starts on the block, growing it while they disagree.

  A strategy may decline (no start given, no seed reaches the entry) or offer several starts.

  Picking the root: a start can stall or lead to a spurious root of the local equations (under
  noise, a propagation along many generations can land far from the truth). At the true root
  the squared misfit is, to first order, :math:`\sigma^2\chi^2_{N-p}` (N equations, p local
  degrees of freedom), so a solve is accepted only if its squared misfit is below the upper
  ``misfit_level`` quantile of that law (plus rounding); otherwise the next start is tried. If
  none passes, the solve with the smallest misfit is returned with ``consistent=False``; if
  every strategy declines, the value is NaN. ``attempts`` in the result records each start
  and why it was rejected.

  Error estimate (first order, JMLR 2015): at the returned local solution, since
  :math:`g_{kl} = J^\top c` for the local Jacobian :math:`J`, :math:`d a_{kl} = c^\top
  d a_{\mathrm{obs}}`, so :math:`\operatorname{sd}(\hat a_{kl}) \approx \sigma \|c\| =
  \sigma \sqrt{g_{kl}^\top (J^\top J)^+ g_{kl}}` with the minimum-norm :math:`c` (the
  least-squares prediction variance of the local fit). When the misfit rejects the nominal
  :math:`\sigma` (``consistent=False``), :math:`\sigma` is replaced by the noise level the
  misfit implies, :math:`\sqrt{\mathrm{SSR}/(N-p)}`, as in least squares with an unknown
  noise level: a solve that the data contradict reports a larger error.

  Args:
    values: (m, n) float, observed entries; the others are ignored (NaN included), the
      observed ones must be finite. Its dtype is the solver's dtype.
    mask: (m, n) bool observed positions.
    rank: the rank r.
    entry: (k, l).
    key: PRNG key (circuit search, seeds and restarts).
    noise_std: :math:`\sigma` >= 0, standard deviation of additive observation noise (scales
      ``std`` and sets the misfit test).
    strategies: the :class:`CompletionStrategy` objects to try, in order (e.g.
      ``(PropagatedStart(max_seeds=8),)`` to use only the propagation).
    options: :class:`LocalSolveOptions` of every local solve (block, iterations, growth).
    start: optional ((m, r), (n, r)) factors of the whole matrix, for :class:`GivenStart`.
    circuit: a :class:`Circuit` from :func:`find_circuit` for this mask, rank and entry, to
      reuse it (e.g. across noise draws); found here when None.
    misfit_level: false-rejection probability of the misfit test at the true root.

  Returns:
    An :class:`EntryCompletion`.

  Raises:
    ValueError: on a bad argument, including NaN or inf in ``values`` at an observed position.

  Example:
    >>> import jax, numpy as np
    >>> a = np.outer([1., 2., 3.], [1., -1., 2.])
    >>> mask = ~np.eye(3, dtype=bool)
    >>> out = complete_entry(a, mask, 1, (0, 0), jax.random.key(0))
    >>> round(float(out.value), 6), out.strategy
    (1.0, 'propagated')

  References:
    Király, Theran, Tomioka (2015).
  """
  mask = _check_mask(mask)
  values = _observed_values(_check_values(values, mask.shape), mask)
  rank = _check_rank(rank, mask.shape)
  k, l = _check_entry(entry, mask.shape)
  if not np.isfinite(noise_std) or noise_std < 0:
    raise ValueError(f"noise_std must be a finite number >= 0, got {noise_std}.")
  if not 0.0 < misfit_level < 1.0:
    raise ValueError(f"misfit_level must lie in (0, 1), got {misfit_level}.")
  strategies = tuple(strategies)
  if not strategies or not all(callable(getattr(s, "solutions", None)) and isinstance(
      getattr(s, "name", None), str) for s in strategies):
    raise ValueError("strategies must be a non-empty sequence of completion strategies (a "
                     f"`name` and a `solutions(problem)` method each), got {strategies!r}.")
  options = LocalSolveOptions(*options)
  _check_count("options.iterations", options.iterations, 1)
  _check_count("options.max_grow", options.max_grow, 0)
  if start is not None:
    start = tuple(np.asarray(x, np.float64) for x in start)
    if start[0].shape != (mask.shape[0], rank) or start[1].shape != (mask.shape[1], rank):
      raise ValueError(f"start must be factors of shapes ({mask.shape[0]}, {rank}) and "
                       f"({mask.shape[1]}, {rank}), got {start[0].shape} and {start[1].shape}.")
    if not all(np.isfinite(x).all() for x in start):
      raise ValueError("start must be finite factors, got NaN or inf.")
  kc, kf, ks = jax.random.split(key, 3)
  if circuit is None:
    circuit = find_circuit(mask, rank, (k, l), kc)
  dtype = values.dtype
  nan = jnp.asarray(jnp.nan, dtype)
  if not circuit.completable:
    return EntryCompletion(nan, jnp.asarray(jnp.inf, dtype), circuit.entries, nan, nan, "none",
                           False)
  if mask[k, l]:
    return EntryCompletion(values[k, l], jnp.asarray(noise_std, dtype), circuit.entries,
                           jnp.zeros((), dtype), jnp.zeros((), dtype), "observed", True)
  rows, cols = np.nonzero(circuit.entries)
  problem = EntryProblem(values, mask, rank, (k, l), circuit,
                         np.unique(np.concatenate([rows, [k]])),
                         np.unique(np.concatenate([cols, [l]])),
                         mask if options.use_block else circuit.entries, start, kf, ks, options)
  attempts, best = [], None
  for name, sol in _strategy_solutions(strategies, problem):
    if isinstance(sol, Declined):
      attempts.append(StrategyAttempt(name, False, sol.reason, float("nan")))
      continue
    # Misfit test: at the true root the squared misfit is noise_std^2 times a chi-square with
    # (equations - local degrees of freedom) degrees of freedom (first order); a start that
    # stalls or lands on a spurious root leaves a misfit far above it.
    excess = float(_misfit_excess(sol, noise_std, misfit_level))
    verdict = (f"squared misfit {excess:.3g} x its chi-square bound at level {misfit_level:g} "
               f"({sol.equations} equations, {sol.dof} local degrees of freedom)")
    attempts.append(StrategyAttempt(name, excess <= 1.0, verdict, excess))
    if best is None or excess < best[0]:
      best = (excess, name, sol)
    if excess <= 1.0:
      break
  if best is None:
    return EntryCompletion(nan, jnp.asarray(jnp.inf, dtype), circuit.entries, nan, nan, "none",
                           False, tuple(attempts))
  excess, name, sol = best
  consistent = bool(excess <= 1.0)
  # First-order sd sigma * ||c||. If no start fits within the noise level, the nominal sigma is
  # contradicted by the data: use the noise level the misfit implies, sqrt(SSR / (N - p)).
  sigma = noise_std if consistent else max(noise_std, sol.noise_estimate)
  return EntryCompletion(jnp.asarray(sol.value, dtype), jnp.asarray(sigma * sol.gain, dtype),
                         circuit.entries, jnp.asarray(sol.residual, dtype),
                         jnp.asarray(sol.spread, dtype), name, consistent, tuple(attempts))


def _strategy_solutions(strategies, problem):
  """(name, LocalSolution or Declined) from each strategy in turn, lazily."""
  for strategy in strategies:
    offered = False
    for sol in strategy.solutions(problem):
      offered = True
      yield strategy.name, sol
    if not offered:
      yield strategy.name, Declined("offered no start")


class LowRankFit(NamedTuple):
  """Result of :func:`low_rank_fit`.

  Attributes:
    u, v: (m, r), (n, r) factors (rows/columns with fewer than r observed entries, after
      pruning, are not fitted and stay at their nuclear-norm start).
    residual: root-mean-square misfit on the fitted observed entries.
  """

  u: jax.Array
  v: jax.Array
  residual: jax.Array


def low_rank_fit(values: ArrayLike, mask: ArrayLike, rank: int, *, nn_iterations: int = 150,
                 iterations: int = 300) -> LowRankFit:
  r"""Least-squares rank-r factorisation of all observed entries (a start for the local solves).

  Minimises :math:`	frac12\sum_{(i,j) \in E'} (u_i^	op v_j - a_{ij})^2` over the entries
  :math:`E'` of rows and columns with at least r observations (the others are coloops,
  :func:`jacobian_completability`) by Levenberg-Marquardt, started from the rank-r truncated
  SVD of a short nuclear-norm solve (:func:`nuclear_norm_complete`, ``nn_iterations``
  iterations): the convex solution is inaccurate near the counting bound but lands in the basin
  of the right root far more often than random starts. On noiseless data a ``residual`` at
  rounding level certifies the fit on the rigid part of the mask.

  Args:
    values: (m, n) float observed entries.
    mask: (m, n) bool observed positions.
    rank: the rank r.
    nn_iterations: iterations of the nuclear-norm start.
    iterations: Levenberg-Marquardt iterations.

  Returns:
    A :class:`LowRankFit`.
  """
  mask = _check_mask(mask)
  values = _observed_values(_check_values(values, mask.shape), mask)
  rank = _check_rank(rank, mask.shape)
  pruned = np.asarray(_prune_low_degree(jnp.asarray(mask), rank))
  nn = nuclear_norm_complete(values, mask, max_iterations=nn_iterations)
  left, sv, right = np.linalg.svd(np.asarray(nn.estimate, np.float64), full_matrices=False)
  u0 = left[:, :rank] * np.sqrt(sv[:rank])
  v0 = right[:rank].T * np.sqrt(sv[:rank])
  dtype = values.dtype
  w = jnp.asarray(pruned, dtype)
  fit = _fit_low_rank(values * w, w, rank, jax.random.key(0), 1, iterations,
                      jnp.asarray(u0, dtype), jnp.asarray(v0, dtype))
  resid = jnp.sqrt(2.0 * fit.loss[0] / max(int(pruned.sum()), 1))
  return LowRankFit(fit.u[0], fit.v[0], resid)


def _grow_to_spare(mask, rows, cols, rank, max_grow):
  """Grows the block until it has r more observed entries than local degrees of freedom (a
  generic root is then the only one) or cannot grow."""
  for _ in range(max_grow):
    spare = mask[np.ix_(rows, cols)].sum() - rank * (len(rows) + len(cols) - rank)
    grown = _grow_block(mask, rows, cols)
    if spare >= rank or (len(grown[0]), len(grown[1])) == (len(rows), len(cols)):
      break
    rows, cols = grown
  return rows, cols


def _grow_block(mask: np.ndarray, rows: np.ndarray, cols: np.ndarray, step: int = 2):
  row_hits = np.where(np.isin(np.arange(mask.shape[0]), rows), -1, mask[:, cols].sum(1))
  col_hits = np.where(np.isin(np.arange(mask.shape[1]), cols), -1, mask[rows, :].sum(0))
  new_rows = np.argsort(-row_hits, kind="stable")[:step]
  new_cols = np.argsort(-col_hits, kind="stable")[:step]
  return (np.union1d(rows, new_rows[row_hits[new_rows] > 0]),
          np.union1d(cols, new_cols[col_hits[new_cols] > 0]))


def _misfit_excess(sol: LocalSolution, noise_std: float, level: float) -> float:
  """Squared misfit over its largest value consistent with noise ``noise_std``.

  At the true root, to first order, SSR / sigma^2 ~ chi^2(N - p). The bound is the upper
  ``level`` quantile of that law plus rounding (1e-10 of the block's scale per equation), so a
  ratio > 1 rejects the root at that level.
  """
  ssr = sol.residual**2 * sol.equations
  df = max(sol.equations - sol.dof, 1)
  bound = noise_std**2 * scipy.stats.chi2.isf(level, df) + sol.equations * (
      1e-10 * max(abs(sol.value), 1.0))**2
  return ssr / bound


def _solve_local(values, used_mask, rows, cols, rank, entry, key, n_restarts, iterations, init):
  """Fits the local equations on rows x cols and predicts the entry (padded, jitted)."""
  k, l = entry
  dtype = values.dtype
  used = used_mask[np.ix_(rows, cols)]
  # Pad with unobserved rows/columns (sizes from `_pad`) so that few shapes get compiled; padded
  # rows have zero weight and do not move the fit. (Gathered on the host: eager device ops
  # would compile once per block shape.)
  # Square padding halves the number of distinct shapes (compilations) for a small cost.
  mp = np_ = _pad(max(len(rows), len(cols)))
  w = np.zeros((mp, np_), dtype)
  w[: len(rows), : len(cols)] = used
  a = np.zeros((mp, np_), dtype)
  a[: len(rows), : len(cols)] = np.asarray(values)[np.ix_(rows, cols)]
  w, a = jnp.asarray(w), jnp.asarray(a)
  if init is None:
    fit = _fit_low_rank(a * w, w, rank, key, n_restarts, iterations)
  else:
    u0 = np.zeros((mp, rank), dtype)
    v0 = np.zeros((np_, rank), dtype)
    u0[: len(rows)], v0[: len(cols)] = init
    fit = _fit_low_rank(a * w, w, rank, key, n_restarts, iterations, jnp.asarray(u0),
                        jnp.asarray(v0))
  kk, ll = np.searchsorted(rows, k), np.searchsorted(cols, l)
  value, gain, resid, spread, dof = (float(x) for x in _local_estimate(fit, w, kk, ll))
  n_eq = int(used.sum())
  return LocalSolution(value, gain, resid, spread, n_eq, int(dof),
                        resid * np.sqrt(n_eq / max(n_eq - int(dof), 1)))


@jax.jit
def _local_estimate(fit: _Fit, weights, k, l):
  best = jnp.argmin(fit.loss)
  u, v = fit.u[best], fit.v[best]
  preds = jnp.einsum("sa,sa->s", fit.u[:, k], fit.v[:, l])
  near = fit.loss <= fit.loss[best] * (1 + 1e-6) + 1e-20 * jnp.max(jnp.abs(preds)) ** 2
  spread = jnp.max(jnp.where(near, preds, -jnp.inf)) - jnp.min(jnp.where(near, preds, jnp.inf))
  m, r = u.shape
  n = v.shape[0]
  block = jnp.arange(r)
  g = jnp.zeros((m + n) * r, u.dtype)
  g = g.at[k * r + block].set(v[l]).at[(m + l) * r + block].set(u[k])
  # g^T (J^T J)^+ g by an eigendecomposition: the r^2 gauge directions (and unobserved padding)
  # are null, and g has no component there because the entry is in the span.
  lam, w = jnp.linalg.eigh(_jacobian_gram(weights, u, v))
  keep = lam > 1e-10 * lam[-1]
  coords = w.T @ g
  variance = jnp.sum(jnp.where(keep, coords**2 / jnp.where(keep, lam, 1.0), 0.0))
  resid = jnp.sqrt(2.0 * fit.loss[best] / jnp.maximum(jnp.sum(weights), 1.0))
  return u[k] @ v[l], jnp.sqrt(variance), resid, spread, jnp.sum(keep)


# ----------------------------------------------------------------------------------------------
# Nuclear-norm minimisation on the same entries (baseline)
# ----------------------------------------------------------------------------------------------


class NuclearNormCompletion(NamedTuple):
  """Result of :func:`nuclear_norm_complete`.

  Attributes:
    estimate: (m, n) completed matrix.
    iterations: iterations run.
    relative_change: last relative change of the iterate (the stopping criterion).
    converged: whether ``relative_change < tol`` before ``max_iterations``.
  """

  estimate: jax.Array
  iterations: jax.Array
  relative_change: jax.Array
  converged: jax.Array


@functools.partial(jax.jit, static_argnames=("max_iterations",))
def _accelerated_soft_impute(values, mask, lam, tol, max_iterations):
  maskf = mask.astype(values.dtype)
  observed = maskf * values

  def body(state):
    x, x_prev, t, _, it, lam_t = state
    # Accelerated proximal gradient (Toh, Yun 2010) with unit step -- the loss
    # 0.5 ||P_E(X - A)||^2 has a 1-Lipschitz gradient -- and lam decreased geometrically to its
    # target (continuation), which makes small lam, i.e. near-interpolation, converge fast.
    t_next = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t**2))
    y = x + ((t - 1.0) / t_next) * (x - x_prev)
    x_new = tensor.singular_value_thresholding(observed + (1.0 - maskf) * y, lam_t)
    change = jnp.linalg.norm(x_new - x) / jnp.maximum(jnp.linalg.norm(x), 1e-30)
    return x_new, x, t_next, change, it + 1, jnp.maximum(lam_t * 0.7, lam)

  def cond(state):
    *_, change, it, lam_t = state
    return (it < max_iterations) & ((change > tol) | (lam_t > lam))

  zero = jnp.zeros_like(values)
  lam0 = jnp.maximum(0.5 * jnp.linalg.norm(observed, 2), lam)
  init = (zero, zero, jnp.asarray(1.0, values.dtype), jnp.asarray(jnp.inf, values.dtype),
          jnp.asarray(0), lam0)
  x, _, _, change, it, _ = jax.lax.while_loop(cond, body, init)
  return NuclearNormCompletion(x, it, change, change <= tol)


def nuclear_norm_complete(values: ArrayLike, mask: ArrayLike, *, lam: float | None = None,
                          tol: float = 1e-6, max_iterations: int = 2000) -> NuclearNormCompletion:
  r"""Nuclear-norm-regularised completion, the convex baseline the papers compare against.

  Solves :math:`\min_X \tfrac12\|P_E(X - A)\|_F^2 + \lambda\|X\|_*` by accelerated proximal
  gradient (:func:`tomioka_jax.tensor.singular_value_thresholding`) with continuation
  in :math:`\lambda`, inside one ``lax.while_loop``. For noiseless data a small :math:`\lambda`
  approximates the
  interpolating nuclear-norm minimiser :math:`\min \|X\|_*` s.t. :math:`P_E X = P_E A`.

  Args:
    values: (m, n) float observed entries.
    mask: (m, n) bool observed positions.
    lam: :math:`\lambda`; default ``1e-4 * ||P_E A||_2``.
    tol: stop when the relative change of X falls below it (after continuation ends).
    max_iterations: iteration cap.

  Returns:
    A :class:`NuclearNormCompletion`.

  References:
    Candès, Recht (2009); Toh, Yun (2010); Mazumder, Hastie, Tibshirani (2010); the
    comparison baseline of Király, Theran, Tomioka (2015).
  """
  mask = _check_mask(mask)
  values = _observed_values(_check_values(values, mask.shape), mask)
  if lam is None:
    lam = 1e-4 * float(jnp.linalg.norm(jnp.where(jnp.asarray(mask), values, 0.0), 2))
  if lam < 0:
    raise ValueError(f"lam must be >= 0, got {lam}.")
  return _accelerated_soft_impute(values, jnp.asarray(mask), jnp.asarray(lam, values.dtype),
                      jnp.asarray(tol, values.dtype), max_iterations)
