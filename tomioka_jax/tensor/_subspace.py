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
from jax.typing import ArrayLike

from tomioka_jax import core
from tomioka_jax.tensor import _admm as admm
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


class SubspaceIterate(NamedTuple):
  """The subspace-norm iteration's iterate.

  Attributes:
    m: per mode, the coefficient matrix ``M_k`` (``n_k x prod_{j != k} H_j``).
    a: the dual variable ``A`` (the scaled residual), shape of ``y``.
  """

  m: tuple[jax.Array, ...]
  a: jax.Array


def subspace_splitting(data, *, method: str) -> admm.Splitting:
  """The primal-dual iteration of :func:`subspace_norm_denoising` as an engine splitting.

  ``data = (y, factors, lam)``. One iteration: a nuclear-norm prox step on every ``M_k``
  at step ``eta`` (its remainder is ``A_(k) S_k`` clipped to the unit spectral ball), then a
  proximal step on ``A`` at step ``1 / (eta K)`` against the extrapolated ``2 M - M_old``
  (Chambolle-Pock; ``||A -> (A_(k) S_k)_k||^2 <= K`` since each ``S_k`` has orthonormal
  columns, so the product of the steps is ``1 / K``). Residual balancing changes ``eta``
  and so both steps, their product fixed (Goldstein, Li, Yuan 2015): the residuals are
  ``||(M_old - M) / eta + L(A_old - A)||`` and ``||eta K (A_old - A) + L^T(M_old - M)||``
  with ``L A = (A_(k) S_k)_k``. The certificate: the primal value at the new ``M``
  (nuclear norms: the thresholded singular values at hand), the dual value at ``A`` scaled
  into ``||A_(k) S_k||_op <= 1``.
  """
  y, factors, lam = data
  n_modes = y.ndim
  modes = range(n_modes)

  def lift_sum(ms):
    return sum(_lift(m_k, factors, k) for k, m_k in zip(modes, ms))

  def init():
    return SubspaceIterate(tuple(jnp.zeros_like(_project(y, factors, k)) for k in modes), y)

  def step(s: SubspaceIterate, eta, relax):
    del relax  # 1: checked by the wrapper
    m_new, sv = zip(*(prox.svt_with_spectrum(s.m[k] + eta * _project(s.a, factors, k), eta,
                                             method) for k in modes))
    x = lift_sum(m_new)
    over = x + lift_sum(m_k - m_old for m_k, m_old in zip(m_new, s.m))
    a = (y + n_modes * eta * s.a - over) / (lam + eta * n_modes)
    return SubspaceIterate(tuple(m_new), a), (tuple(sv), x)

  def certify(s: SubspaceIterate, aux, last: admm.Certificate, eta, gate):
    del eta, gate  # the exact gap is as cheap as an estimate here
    sv, x = aux
    p = sum(jnp.sum(v) for v in sv) + jnp.sum((x - y) ** 2) / (2 * lam)
    scale = jnp.minimum(1, jnp.min(jnp.stack(
        [1 / prox.spectral_norm(_project(s.a, factors, k)) for k in modes])))
    a = scale * s.a
    d = jnp.maximum(last.dual, jnp.vdot(a, y) - lam / 2 * jnp.vdot(a, a))
    return admm.Certificate((p - d) / jnp.abs(p), p, d)

  def residuals(old: SubspaceIterate, new: SubspaceIterate, eta):
    da = old.a - new.a
    dm = tuple(o - n for o, n in zip(old.m, new.m))
    r = jnp.sqrt(sum(jnp.sum((dm_k / eta + _project(da, factors, k)) ** 2)
                     for k, dm_k in zip(modes, dm)))
    d = jnp.linalg.norm(eta * n_modes * da + lift_sum(dm))
    return r, d

  def restart(s: SubspaceIterate):
    return s, (tuple(prox.singular_values(m_k, method=method) for m_k in s.m), lift_sum(s.m))

  return admm.Splitting(init, step, certify, residuals, restart=restart, relaxation=1.0,
                        adaptive_eta=False)


def subspace_norm_solve(y: jax.Array, factors: tuple[jax.Array, ...], lam: ArrayLike,
                        eta: ArrayLike, tol: ArrayLike, *, max_iter: int, method: str = "auto",
                        options: admm.ADMMOptions = admm.ADMMOptions(check_every=1)
                        ) -> SubspaceResult:
  """The primal-dual iteration of :func:`subspace_norm_denoising` (no input checks)."""
  data = (y, tuple(factors), jnp.asarray(lam, y.dtype))
  state, _ = admm.run(lambda d: subspace_splitting(d, method=method), data, eta, tol,
                      max_iter, options)
  comps = jnp.stack([_lift(m_k, factors, k) for k, m_k in enumerate(state.iterate.m)])
  c = state.certificate
  return SubspaceResult(jnp.sum(comps, axis=0), comps, factors, state.iteration, c.gap,
                        c.primal, c.dual, state.converged)


_subspace_jit = jax.jit(subspace_norm_solve, static_argnames=("method", "options"))


def subspace_norm_denoising(y: ArrayLike, lam: ArrayLike,
                            subspace_dim: int | Sequence[int] | None = None, *,
                            factors: Sequence[ArrayLike] | None = None, tol: ArrayLike = 1e-3,
                            max_iter: int = 2000, eta: ArrayLike | None = None,
                            method: str = "auto", check_every: int | None = None,
                            adaptive_eta: bool | None = None, float32_start: bool | None = None,
                            options: admm.ADMMOptions | None = None) -> SubspaceResult:
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
    check_every: evaluate the duality gap every this many iterations (the authors: 1;
      this solver's default, not the options', since an iteration here is cheap).
    adaptive_eta, float32_start: override these fields of ``options``
      (:class:`ADMMOptions`; the tuned defaults: ``eta`` rebalanced between the two steps,
      float32 start for float64 data). Over-relaxation is not offered here (``relaxation``
      must be ``None`` or 1).
    options: an :class:`ADMMOptions`; default the tuned solver.

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
  admm.check_hyper(lam, tol, max_iter, eta)
  if check_every is None and options is None:
    check_every = 1
  opts = admm.resolve_options(options, check_every=check_every, adaptive_eta=adaptive_eta,
                              float32_start=float32_start)
  if opts.relaxation not in (None, 1.0):
    raise ValueError(f"relaxation must be None or 1 for the subspace norm (no "
                     f"over-relaxation of the primal-dual iteration), got {opts.relaxation}")
  if factors is None:
    factors = subspace_factors(y, subspace_dim)
  factors = tuple(jnp.asarray(u, y.dtype) for u in factors)
  if len(factors) != y.ndim or any(u.ndim != 2 or u.shape[0] != n or u.shape[1] > n
                                   for u, n in zip(factors, y.shape)):
    raise ValueError(f"factors must be {y.ndim} matrices of shapes (n_k, H_k) with H_k <= n_k "
                     f"for y of shape {y.shape}, got {[tuple(u.shape) for u in factors]}")
  eta = 10 * jnp.std(y) if eta is None else eta
  return _subspace_jit(y, factors, lam, eta, tol, max_iter=max_iter, method=method,
                       options=opts)
