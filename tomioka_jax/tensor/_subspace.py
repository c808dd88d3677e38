"""Tensor denoising with the subspace norm.

"Interpolating Convex and Non-Convex Tensor Decompositions via the Subspace Norm", Qinqing
Zheng, Ryota Tomioka, NIPS 2015, arXiv:1503.05479.

The subspace norm is a latent trace norm whose mode-k component may only use, along the
other modes, the leading ``H``-dimensional left singular subspaces ``U_j`` of the noisy
tensor's unfoldings:

.. math:: |||X|||_{s} = \\inf\\Big\\{\\sum_k \\|M_k\\|_* :
   X = \\sum_k \\mathrm{fold}_k(M_k S_k^\\top)\\Big\\},

with ``S_k`` the Kronecker product of the ``U_j``, ``j != k`` (:func:`subspace_basis`). Small
``H`` is close to the non-convex estimator (rank-``H`` projections), ``H = n`` recovers the
latent trace norm. We provide the Kronecker basis in the column order of
:func:`tomioka_jax.tensor._ops.unfold`, the subspaces from the data, and the denoising solve
(a primal-dual iteration on the scaled dual, as the authors' code) inside one ``jax.jit``;
the Kronecker products are never formed, only mode products with the ``U_j``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from tomioka_jax import core
from tomioka_jax.tensor import _completion as completion
from tomioka_jax.tensor import _ops as ops
from tomioka_jax.tensor import _prox as prox


class SubspaceResult(NamedTuple):
  """What :func:`subspace_norm_denoising` returns.

  Attributes:
    X: the estimate ``sum_k fold_k(M_k S_k^T)``, shape of ``y``.
    components: the ``K`` components ``fold_k(M_k S_k^T)`` stacked on a leading axis.
    factors: the subspaces ``U_k``, shapes ``(n_k, H_k)``.
    iterations: iterations run.
    gap: the last relative duality gap ``(primal - dual) / primal``.
    primal: ``sum_k ||M_k||_* + ||Y - X||^2 / (2 lam)`` at the returned ``X``.
    dual: the best dual value ``<A, Y> - lam/2 ||A||^2`` over feasible ``A`` seen.
    converged: whether ``gap <= tol``.
  """

  X: jax.Array
  components: jax.Array
  factors: tuple[jax.Array, ...]
  iterations: jax.Array
  gap: jax.Array
  primal: jax.Array
  dual: jax.Array
  converged: jax.Array


def subspace_basis(factors: Sequence[ArrayLike], mode: int) -> jax.Array:
  """The Kronecker basis ``S_k`` of the other modes' subspaces, in :func:`ops.unfold` order.

  Our unfolding runs its columns over the modes ``j != k`` in increasing order with the last
  fastest (C order), so ``S_k = U_{j_1} kron U_{j_2} kron ...`` over ``j_1 < j_2 < ...``:

  .. math:: X_{(k)} S_k = \\big(X \\times_{j \\ne k} U_j^\\top\\big)_{(k)}.

  (The authors' MATLAB unfolding is cyclic with the first index fastest, hence their
  ``V_1 = U_3 kron U_2``, ``V_2 = U_1 kron U_3``, ``V_3 = U_2 kron U_1``.)

  Args:
    factors: ``K`` matrices ``U_j`` of shape ``(n_j, H_j)``.
    mode: the mode ``k`` to leave out.

  Returns:
    ``S_k`` of shape ``(prod_{j != k} n_j, prod_{j != k} H_j)``.

  Example:
    >>> us = [jnp.eye(3)[:, :2], jnp.eye(4)[:, :2], jnp.eye(5)[:, :2]]
    >>> subspace_basis(us, 0).shape
    (20, 4)
  """
  factors = [jnp.asarray(u) for u in factors]
  mode = ops.check_mode(mode, len(factors))
  return functools.reduce(jnp.kron, [u for j, u in enumerate(factors) if j != mode])


def subspace_factors(y: ArrayLike, subspace_dim: int | Sequence[int]) -> tuple[jax.Array, ...]:
  """The paper's subspaces: the leading ``H`` left singular vectors of each unfolding of ``Y``.

  Args:
    y: the noisy tensor.
    subspace_dim: ``H``, one for all modes or one per mode, ``1 <= H_k <= n_k``.

  Returns:
    ``K`` orthonormal matrices ``U_k`` of shape ``(n_k, H_k)``.
  """
  y = jnp.asarray(y)
  dims = _subspace_dims(y.shape, subspace_dim)
  return ops.hosvd(y, dims).factors


def _subspace_dims(shape, subspace_dim) -> tuple[int, ...]:
  dims = ((subspace_dim,) * len(shape) if isinstance(subspace_dim, int)
          else tuple(subspace_dim))
  if len(dims) != len(shape) or any(int(h) != h or not 1 <= h <= n
                                    for h, n in zip(dims, shape)):
    raise ValueError(f"subspace_dim must be an integer H (or one per mode) with "
                     f"1 <= H <= n_k for shape {tuple(shape)}, got {subspace_dim}")
  return tuple(int(h) for h in dims)


def _project(a: jax.Array, factors: tuple[jax.Array, ...], k: int) -> jax.Array:
  """``A_(k) S_k`` as a matrix ``(n_k, prod_{j != k} H_j)``."""
  others = [None if j == k else u for j, u in enumerate(factors)]
  return ops.unfold(ops.multi_mode_product(a, others, transpose=True), k)


def _lift(m: jax.Array, factors: tuple[jax.Array, ...], k: int) -> jax.Array:
  """``fold_k(M S_k^T)``: the tensor whose mode-k unfolding is ``M S_k^T``."""
  small = tuple(m.shape[0] if j == k else u.shape[1] for j, u in enumerate(factors))
  others = [None if j == k else u for j, u in enumerate(factors)]
  return ops.multi_mode_product(ops.fold(m, k, small), others)


def subspace_norm_solve(y: jax.Array, factors: tuple[jax.Array, ...], lam: ArrayLike,
                        eta: ArrayLike, tol: ArrayLike, *, max_iter: int, method: str = "auto",
                        check_every: int = 1) -> SubspaceResult:
  """The primal-dual iteration of :func:`subspace_norm_denoising` (no input checks)."""
  shape, dtype = y.shape, y.dtype
  lam, eta, tol = (jnp.asarray(v, dtype) for v in (lam, eta, tol))
  n_modes = len(shape)
  modes = range(n_modes)

  def dual_value(a):
    # Scale A into the feasible set ||A_(k) S_k||_op <= 1 (the dual norm ball).
    scale = jnp.minimum(1, jnp.min(jnp.stack(
        [1 / prox.spectral_norm(_project(a, factors, k)) for k in modes])))
    a = scale * a
    return jnp.vdot(a, y) - lam / 2 * jnp.vdot(a, a)

  def body(state):
    m, a, it, gap, primal, dual_best, _ = state
    # Dual (nuclear-norm) step for each M_k at step eta: the prox of eta ||.||_*, whose
    # remainder is A_(k) S_k clipped to the unit spectral ball.
    m_new, sv = [], []
    for k in modes:
      m_k, sv_k = prox.svt_with_spectrum(m[k] + eta * _project(a, factors, k), eta, method)
      m_new.append(m_k)
      sv.append(sv_k)
    x = sum(_lift(m_k, factors, k) for k, m_k in zip(modes, m_new))
    # Primal step on A with step 1 / (eta K) against the extrapolated 2 M_new - M (Chambolle-
    # Pock; ||A -> (A_(k) S_k)_k||^2 <= K since each S_k has orthonormal columns).
    over = x + sum(_lift(m_k - m_old, factors, k)
                   for k, m_k, m_old in zip(modes, m_new, m))
    a = (y + n_modes * eta * a - over) / (lam + eta * n_modes)

    def certificate(_):
      p = sum(jnp.sum(s) for s in sv) + jnp.sum((x - y) ** 2) / (2 * lam)
      d = jnp.maximum(dual_best, dual_value(a))
      return (p - d) / jnp.abs(p), p, d

    gap, primal, dual_best = lax.cond((it + 1) % check_every == 0, certificate,
                                      lambda _: (gap, primal, dual_best), None)
    return tuple(m_new), a, it + 1, gap, primal, dual_best, gap <= tol

  def cond(state):
    return (state[2] < max_iter) & ~state[6]

  m0 = tuple(jnp.zeros_like(_project(y, factors, k)) for k in modes)
  inf = jnp.asarray(jnp.inf, dtype)
  init = (m0, y, jnp.asarray(0, jnp.int32), inf, inf, -inf, jnp.asarray(False))
  m, _, it, gap, primal, dual, converged = lax.while_loop(cond, body, init)
  comps = jnp.stack([_lift(m_k, factors, k) for k, m_k in zip(modes, m)])
  return SubspaceResult(jnp.sum(comps, axis=0), comps, factors, it, gap, primal, dual,
                        converged)


_subspace_jit = jax.jit(subspace_norm_solve, static_argnames=("method",))


def subspace_norm_denoising(y: ArrayLike, lam: ArrayLike,
                            subspace_dim: int | Sequence[int] | None = None, *,
                            factors: Sequence[ArrayLike] | None = None, tol: ArrayLike = 1e-3,
                            max_iter: int = 2000, eta: ArrayLike | None = None,
                            method: str = "auto", check_every: int = 1) -> SubspaceResult:
  """Denoising with the subspace norm (Zheng and Tomioka 2015, eq. 6 and Section 4).

  .. math:: \\min_{M_1, \\dots, M_K} \\sum_k \\|M_k\\|_*
     + \\frac{1}{2\\lambda}\\Big\\|Y - \\sum_k \\mathrm{fold}_k(M_k S_k^\\top)\\Big\\|_F^2,

  equivalently ``1/2 ||Y - X||^2 + lam |||X|||_s``. Its scaled dual is
  ``max_A <A, Y> - lam/2 ||A||^2`` subject to ``||A_(k) S_k||_op <= 1``. Each iteration
  takes a nuclear-norm prox step on every ``M_k`` (a thresholding of an ``n_k x H^{K-1}``
  matrix) and a proximal step on ``A`` against the over-relaxed ``2 M_k - M_k^old``; the
  solve stops when the relative duality gap, with ``A`` scaled into the feasible set, is at
  most ``tol``.

  Args:
    y: the noisy tensor, any order ``K >= 2``.
    lam: the regularization constant ``> 0``.
    subspace_dim: ``H`` (one for all modes, or one per mode); the subspaces are then the
      leading ``H`` left singular vectors of each unfolding of ``y`` (:func:`subspace_factors`).
    factors: the subspaces ``U_k`` (``n_k x H_k``, orthonormal columns) instead of
      ``subspace_dim``.
    tol: relative duality gap at which to stop (the authors: 1e-3).
    max_iter: the most iterations.
    eta: the step; default ``10 std(y)`` as the authors' code.
    method: singular value thresholding method.
    check_every: evaluate the duality gap every this many iterations (the authors: 1).

  Returns:
    A :class:`SubspaceResult`.

  Example:
    >>> y = jax.random.normal(jax.random.key(0), (6, 7, 8))
    >>> res = subspace_norm_denoising(y, 1.0, subspace_dim=2)
    >>> res.components.shape
    (3, 6, 7, 8)

  References:
    Zheng, Tomioka, arXiv:1503.05479; authors' ``tensor_subspace_norm.m``.
  """
  y = jnp.asarray(y)
  if not jnp.issubdtype(y.dtype, jnp.floating):
    y = y.astype(jnp.zeros(()).dtype)
  if y.ndim < 2:
    raise ValueError(f"y must be a tensor with at least two modes, got shape {y.shape}")
  if (subspace_dim is None) == (factors is None):
    raise ValueError("give exactly one of subspace_dim (H) and factors, got "
                     f"subspace_dim={subspace_dim} and factors "
                     f"{'None' if factors is None else 'given'}")
  if core.is_concrete(lam) and not float(lam) > 0:
    raise ValueError(f"lam must be > 0, got {lam}")
  completion.check_admm_hyper(lam, tol, max_iter, eta, check_every)
  if factors is None:
    factors = subspace_factors(y, subspace_dim)
  factors = tuple(jnp.asarray(u, y.dtype) for u in factors)
  if len(factors) != y.ndim or any(u.ndim != 2 or u.shape[0] != n or u.shape[1] > n
                                   for u, n in zip(factors, y.shape)):
    raise ValueError(f"factors must be {y.ndim} matrices of shapes (n_k, H_k) with H_k <= n_k "
                     f"for y of shape {y.shape}, got {[tuple(u.shape) for u in factors]}")
  eta = 10 * jnp.std(y) if eta is None else eta
  return _subspace_jit(y, factors, lam, eta, tol, max_iter=max_iter, method=method,
                       check_every=check_every)
