"""Low-rank tensor completion by convex optimization: Constraint, Mixture, As-a-Matrix, Tucker.

"Estimation of low-rank tensors via convex optimization", Ryota Tomioka, Kohei Hayashi,
Hisashi Kashima, 2010, arXiv:1010.0789.

The paper's four approaches to recovering a tensor from a subset of its entries: the
overlapped trace norm by ADMM ("Constraint"), the latent trace norm by ADMM on the dual
("Mixture"), each mode's unfolding as a low-rank matrix ("As a Matrix"), and the non-convex
Tucker decomposition fitted by EM ("Tucker"). Each solve, including the relative duality gap
the paper stops on, runs inside one ``lax.while_loop`` under one ``jax.jit``; the observed
entries are held as a dense mask so that every shape is static.

Problem (eq. 5 of the paper; ``lam = 0`` is the exact-fit constraint ``Omega(X) = y``):

.. math:: \\min_X \\sum_k g_k \\|X_{(k)}\\|_* + \\frac{1}{2\\lambda}\\|\\Omega(X) - y\\|^2.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from tomioka_jax import core
from tomioka_jax.tensor import _ops as ops
from tomioka_jax.tensor import _prox as prox


class CompletionResult(NamedTuple):
  """What a convex completion solve returns.

  Attributes:
    X: the full estimate, shape ``shape``.
    components: per-mode tensors stacked on a leading axis: the latent split ``W_k`` for
      Mixture (``X = sum_k W_k``); the auxiliary ``Z_k = X_(k)`` (folded) for Constraint.
    iterations: ADMM iterations run.
    gap: the last evaluated relative duality gap ``(primal - dual) / primal`` (``inf`` if
      no check ran; Constraint skips the exact gap while a cheap estimate is far from tol).
    primal: the primal objective at ``X`` (the iterate of the last evaluated gap).
    dual: the best dual objective found (a lower bound on the optimum).
    converged: whether ``gap <= tol``.
  """

  X: jax.Array
  components: jax.Array
  iterations: jax.Array
  gap: jax.Array
  primal: jax.Array
  dual: jax.Array
  converged: jax.Array


class TuckerResult(NamedTuple):
  """What :func:`tucker_em` and :func:`tucker_nway` return.

  Attributes:
    X: the full estimate ``core x_1 U_1 ... x_K U_K``.
    core: the Tucker core, shape ``ranks``.
    factors: the orthonormal factors ``U_k``, shapes ``(n_k, r_k)``.
    iterations: sweeps run (for :func:`tucker_nway`, counted as the toolbox counts them).
    gap: the convergence measure: for :func:`tucker_em` the last change of the
      observed-entry squared error relative to ``||y||^2``; for :func:`tucker_nway` the
      last relative change of the imputed values' sum of squares.
    converged: whether the stopping rule was met (not the sweep limit).
  """

  X: jax.Array
  core: jax.Array
  factors: tuple[jax.Array, ...]
  iterations: jax.Array
  gap: jax.Array
  converged: jax.Array


# --------------------------------------------------------------------------- input checks



def observation_tensors(shape: Sequence[int], indices: ArrayLike,
                        values: ArrayLike) -> tuple[jax.Array, jax.Array]:
  """Scatters observations into a boolean mask and a dense tensor (zero where unobserved).

  Args:
    shape: the tensor's shape ``(n_1, ..., n_K)``.
    indices: integer array ``(n_observed, K)`` of observed positions, each row distinct.
    values: the observed values, shape ``(n_observed,)``.

  Returns:
    ``(mask, y)``, both of shape ``shape``; ``y`` has ``values``' floating dtype.

  Raises:
    ValueError: a malformed shape, indices that are not ``(n_observed, K)`` integers, a
      length mismatch, indices out of range, or duplicate indices (checked when concrete).
  """
  shape = tuple(shape)
  if len(shape) < 2 or any(int(n) != n or n < 1 for n in shape):
    raise ValueError(f"shape must be a tuple of at least two positive integers, got {shape}")
  shape = tuple(int(n) for n in shape)
  k = len(shape)
  indices = jnp.asarray(indices)
  values = jnp.asarray(values)
  if not jnp.issubdtype(values.dtype, jnp.floating):
    values = values.astype(jnp.zeros(()).dtype)
  if indices.ndim != 2 or indices.shape[1] != k or not jnp.issubdtype(indices.dtype,
                                                                       jnp.integer):
    raise ValueError(f"indices must be an integer array of shape (n_observed, {k}), got "
                     f"{indices.dtype} {indices.shape}")
  if values.shape != (indices.shape[0],):
    raise ValueError(f"values must have shape (n_observed,) = ({indices.shape[0]},) to match "
                     f"indices, got {values.shape}")
  if indices.shape[0] < 1:
    raise ValueError("indices must hold at least one observed entry, got none")
  if core.is_concrete(indices):
    idx = np.asarray(indices)
    bad = (idx < 0) | (idx >= np.asarray(shape)[None, :])
    if bad.any():
      row = int(np.argwhere(bad.any(axis=1))[0, 0])
      raise ValueError(f"indices out of range for shape {shape}: row {row} is "
                       f"{tuple(int(i) for i in idx[row])}; each index must satisfy 0 <= i_k < n_k")
    flat = np.ravel_multi_index(tuple(idx.T), shape)
    uniq, counts = np.unique(flat, return_counts=True)
    if len(uniq) != len(flat):
      dup = np.unravel_index(uniq[counts > 1][0], shape)
      raise ValueError(f"indices must be distinct; {tuple(int(i) for i in dup)} is observed "
                       f"{int(counts.max())} times")
  if core.is_concrete(indices, values):
    # Scatter on the host: an eager scatter compiles anew for every number of observations.
    where = tuple(np.asarray(indices).T)
    mask = np.zeros(shape, bool)
    mask[where] = True
    y = np.zeros(shape, values.dtype)
    y[where] = np.asarray(values)
    return jnp.asarray(mask), jnp.asarray(y)
  where = tuple(indices.T)
  mask = jnp.zeros(shape, bool).at[where].set(True)
  y = jnp.zeros(shape, values.dtype).at[where].set(values)
  return mask, y


def _observed_values(mask: jax.Array, y: jax.Array, values: ArrayLike) -> jax.Array:
  """The observed values in ``y``'s dtype (gathered on the host when concrete)."""
  if core.is_concrete(mask, y):
    return np.asarray(y)[np.asarray(mask)]
  return jnp.asarray(values, y.dtype)


def check_admm_hyper(lam, tol, max_iter, eta, check_every=1, tol_name="tol") -> None:
  if int(check_every) != check_every or check_every < 1:
    raise ValueError(f"check_every must be a positive integer, got {check_every}")
  if core.is_concrete(lam) and not float(lam) >= 0:
    raise ValueError(f"lam must be >= 0 (0 fits the observations exactly), got {lam}")
  if core.is_concrete(tol) and not float(tol) > 0:
    raise ValueError(f"{tol_name} must be > 0, got {tol}")
  if int(max_iter) != max_iter or max_iter < 1:
    raise ValueError(f"max_iter must be a positive integer, got {max_iter}")
  if eta is not None and core.is_concrete(eta) and not float(eta) > 0:
    raise ValueError(f"eta must be > 0 (or None for the paper's default), got {eta}")


def sample_std(values: jax.Array) -> jax.Array:
  if core.is_concrete(values):
    # On the host: jnp.std would compile anew for every number of observations.
    v = np.asarray(values)
    s = float(np.std(v, ddof=1)) if v.shape[0] > 1 else 0.0
    return jnp.asarray(s if s > 0 else 1.0, values.dtype)
  s = jnp.std(values, ddof=1) if values.shape[0] > 1 else jnp.zeros((), values.dtype)
  return jnp.where(s > 0, s, 1)


# --------------------------------------------------------------------------- Constraint


# The cheap gap estimate must be within this factor of tol before the exact certificate runs.
_ESTIMATE_FACTOR = 10.0
# Residual balancing (He, Yang, Wang 2000; Boyd et al. 2011, Section 3.4.1): every
# _ADAPT_EVERY iterations within the first _ADAPT_ITERATIONS, eta is multiplied by
# _STEP_FACTOR when the primal residual exceeds _BALANCE times the dual one and divided by it
# in the opposite case; fixed afterwards, so the usual ADMM convergence applies. (3, 3) was
# chosen on the paper's Figure 1 instances (fractions 0.2-0.9, two draws each): Constraint at
# 35% takes 35-40 iterations instead of 65-70 at the authors' fixed eta, at 20% 20-25 instead
# of 55-60; Mixture (over-relaxed) at 90% 55 instead of 115; elsewhere no change.
_BALANCE = 3.0
_STEP_FACTOR = 3.0
_ADAPT_ITERATIONS = 500
_ADAPT_EVERY = 5


def _check_relaxation(relaxation) -> None:
  if core.is_concrete(relaxation) and not 0 < float(relaxation) < 2:
    raise ValueError(f"relaxation must be in (0, 2) (1: no over-relaxation), got {relaxation}")


def _check_float32_start(float32_start) -> bool:
  if not isinstance(float32_start, (bool, np.bool_)):
    raise ValueError(f"float32_start must be True or False, got {float32_start!r}")
  return bool(float32_start)


def _adapt_until(adaptive_eta: bool) -> int:
  if not isinstance(adaptive_eta, (bool, np.bool_)):
    raise ValueError(f"adaptive_eta must be True or False, got {adaptive_eta!r}")
  return _ADAPT_ITERATIONS if adaptive_eta else 0


def constraint_solve(mask: jax.Array, y: jax.Array, lam: ArrayLike, eta: ArrayLike,
                     tol: ArrayLike, weights: jax.Array, *, modes: tuple[int, ...],
                     max_iter: int, method: str = "auto", check_every: int = 1,
                     adapt_until: int = 0, relax: ArrayLike = 1.0,
                     float32_start: bool = False) -> CompletionResult:
  """The Constraint ADMM on dense observation tensors (see :func:`constraint`).

  With ``float32_start`` and float64 data, the iterations first run in float32 until the
  float32 gap is within ``max(tol, 1e-4)``; the state is then cast to float64 (``X`` set
  to ``y`` on the observed entries again when ``lam = 0``), the exact gap is evaluated in
  float64 at once, and the float64 iterations continue from there if it is above ``tol``.
  The result carries a float64 certificate either way.

  ``modes`` selects the unfoldings in the overlapped norm (all modes for Constraint, one for
  As-a-Matrix) and ``weights`` holds one ``g_k`` per entry of ``modes``. The loop carries
  ``B_k = X_(k) + A_k / eta`` and ``Z_k`` (unfolded) instead of ``(Z_k, A_k)``: the same
  iterates with fewer folds, unfoldings and elementwise passes per iteration.

  At each check a cheap estimate of the gap comes first: the primal value at the ``Z_k``
  (their nuclear norms are the thresholded singular values, already at hand) and the dual
  value at ``A`` made feasible with the bound ``||A_k - V||_op <= g_k + ||V||_F``. Only when
  it is within ``_ESTIMATE_FACTOR`` of ``tol`` is the exact gap evaluated (nuclear norms of
  the unfoldings of ``X``, spectral norms of the corrected ``A_k``); the loop stops on the
  exact gap only. The estimate's dual value is a valid lower bound and joins the best one.
  """
  kwargs = dict(modes=modes, max_iter=max_iter, method=method, check_every=check_every,
                adapt_until=adapt_until, relax=relax)
  if not (float32_start and y.dtype == jnp.float64):
    return _constraint_admm(mask, y, lam, eta, tol, weights, **kwargs)[0]
  x, b, z, it, _, _, _, _, eta = _float32_phase(_constraint_admm, mask, y, lam, eta, tol,
                                                weights, kwargs)
  x = jnp.where(mask & (jnp.asarray(lam) == 0), y, x)
  return _constraint_admm(mask, y, lam, eta, tol, weights, **kwargs,
                          start=(x, b, z, it, eta))[0]


# The float32 phase of a ``float32_start`` solve stops at this gap at the least: below it
# float32's rounding of the nuclear norms starts to show.
_FLOAT32_GAP = 1e-4


def _float32_phase(admm, mask, y, lam, eta, tol, weights, kwargs):
  """Runs the loop ``admm`` in float32 to a gap of ``max(tol, _FLOAT32_GAP)``; returns its
  final state in ``y``'s dtype."""
  low = jnp.float32
  tol_low = jnp.maximum(jnp.asarray(tol, low), _FLOAT32_GAP)
  _, state = admm(mask, y.astype(low), jnp.asarray(lam, low), jnp.asarray(eta, low), tol_low,
                  weights.astype(low), **kwargs)
  return jax.tree.map(
      lambda v: v.astype(y.dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v, state)


def _constraint_admm(mask: jax.Array, y: jax.Array, lam: ArrayLike, eta: ArrayLike,
                     tol: ArrayLike, weights: jax.Array, *, modes: tuple[int, ...],
                     max_iter: int, method: str, check_every: int, adapt_until: int,
                     relax: ArrayLike, start: tuple | None = None):
  """The Constraint ADMM loop; from ``start = (X, B, Z, it, eta)`` after an exact check.

  Returns the result and the loop's final state.
  """
  shape, dtype = y.shape, y.dtype
  lam, eta, tol, relax = (jnp.asarray(v, dtype) for v in (lam, eta, tol, relax))
  n_blocks = len(modes)

  def x_step(z_minus_a, eta):
    # argmin_X of the augmented Lagrangian: the average of the folded Z_k - A_k / eta off
    # Omega; on Omega the closed form (y + lam eta K m) / (1 + lam eta K), i.e. y at lam = 0.
    m = sum(ops.fold(t, k, shape) for t, k in zip(z_minus_a, modes)) / n_blocks
    c = lam * eta * n_blocks
    return jnp.where(mask, (y + c * m) / (1 + c), m)

  def loss(x):
    # The data-fit term of the noisy model (lam > 0); zero at lam = 0, where X fits y.
    def value(x):
      return jnp.sum(jnp.where(mask, x - y, 0) ** 2) / (2 * jnp.where(lam > 0, lam, 1))
    return lax.cond(lam > 0, value, lambda _: jnp.zeros((), dtype), x)

  def primal_value(x):
    return sum(weights[i] * prox.nuclear_norm(ops.unfold(x, k), method=method)
               for i, k in enumerate(modes)) + loss(x)

  def dual_value(scale, sy, ss):
    return scale * sy - lam / 2 * scale ** 2 * ss

  def certificate(x, b, z, shrunk, gap, primal, dual_best, eta, force_exact=False):
    # Feasible dual point from the multipliers A_k = eta (B_k - Z_k): sum_k A_k must vanish
    # off Omega (remove the mean violation V from every A_k), then one common scaling puts
    # every ||A_k - V_(k)||_op under g_k; S is the observed part of sum_k A_k.
    a_sum = eta * sum(ops.fold(b_i - z_i, k, shape) for b_i, z_i, k in zip(b, z, modes))
    off = jnp.where(mask, 0, a_sum) / n_blocks
    s = jnp.where(mask, a_sum, 0)
    sy, ss = jnp.vdot(s, y), jnp.vdot(s, s)
    # ||A_k||_op = eta min(s_max(B_k), g_k / eta) <= g_k (the SVT clipped the rest) and
    # ||V_(k)||_op <= ||V||_F: a feasible scaling without any decomposition.
    g_min = jnp.min(weights)
    dual_best = jnp.maximum(dual_best, dual_value(
        jnp.minimum(1, g_min / (g_min + jnp.sqrt(jnp.vdot(off, off)))), sy, ss))

    def exact(_):
      p = primal_value(x)
      ratios = [weights[i] / prox.spectral_norm(eta * (b_i - z_i) - ops.unfold(off, k))
                for i, (b_i, z_i, k) in enumerate(zip(b, z, modes))]
      d = jnp.maximum(dual_best, dual_value(jnp.minimum(1, jnp.min(jnp.stack(ratios))), sy,
                                            ss))
      return (p - d) / jnp.abs(p), p, d

    if force_exact:
      return exact(None)
    # The primal value at the Z_k instead of X: their nuclear norms are at hand.
    estimate = sum(weights[i] * jnp.sum(sv) for i, sv in enumerate(shrunk)) + loss(x)
    near = ~((estimate - dual_best) / jnp.abs(estimate) > _ESTIMATE_FACTOR * tol)
    return lax.cond(near, exact, lambda _: (gap, primal, dual_best), None)

  def body(state):
    # One iteration of the paper: X-step, Z-step, A-step. The state keeps B_k = X_(k) +
    # A_k / eta (the input of the k-th thresholding) and Z_k = svt(B_k) from the previous
    # iteration, unfolded: the multiplier is A_k = eta (B_k - Z_k), so the X-step's input
    # Z_k - A_k / eta is 2 Z_k - B_k and the new B_k is X_(k) + B_k - Z_k. eta is carried:
    # residual balancing may change it (rebalance, below).
    _, b, z_old, it, gap, primal, dual_best, _, eta = state
    x = x_step((2 * z_i - b_i for z_i, b_i in zip(z_old, b)), eta)
    # Over-relaxation (relax = 1: the paper's step) replaces X_(k) by relax X_(k) + (1 - relax)
    # Z_k in the Z- and A-steps: B_k <- relax (X_(k) - Z_k) + B_k.
    b = tuple(relax * (ops.unfold(x, k) - z_i) + b_i for k, b_i, z_i in zip(modes, b, z_old))
    z, shrunk = zip(*(prox.svt_with_spectrum(b_i, weights[i] / eta, method)
                      for i, b_i in enumerate(b)))
    check = (it + 1) % check_every == 0
    # The gap costs about as much as an iteration; it can be checked every few iterations.
    gap, primal, dual_best = lax.cond(
        check, lambda _: certificate(x, b, z, shrunk, gap, primal, dual_best, eta),
        lambda _: (gap, primal, dual_best), None)

    def rebalance(b):
      # Residual balancing: primal residual X_(k) - Z_k, dual residual eta times the change
      # of sum_k fold(Z_k) where X is free. Rescaling B_k - Z_k keeps the multipliers A_k.
      r = jnp.sqrt(sum(jnp.vdot(ops.unfold(x, k) - z_i, ops.unfold(x, k) - z_i)
                       for k, z_i in zip(modes, z)))
      dz = sum(ops.fold(z_i - o_i, k, shape) for z_i, o_i, k in zip(z, z_old, modes))
      s = eta * jnp.linalg.norm(jnp.where(mask & (lam == 0), 0, dz))
      new = jnp.where(r > _BALANCE * s, eta * _STEP_FACTOR,
                      jnp.where(s > _BALANCE * r, eta / _STEP_FACTOR, eta))
      return tuple(z_i + (b_i - z_i) * (eta / new) for b_i, z_i in zip(b, z)), new

    b, eta = lax.cond(((it + 1) % _ADAPT_EVERY == 0) & (it < adapt_until), rebalance,
                      lambda b: (b, eta), b)
    return x, b, tuple(z), it + 1, gap, primal, dual_best, gap <= tol, eta

  def cond(state):
    return (state[3] < max_iter) & ~state[7]

  inf = jnp.asarray(jnp.inf, dtype)
  if start is None:
    # B_k = Z_k = 0 makes the first X-step the paper's, from Z_k = A_k = 0.
    zeros = tuple(ops.unfold(jnp.zeros_like(y), k) for k in modes)
    init = (jnp.zeros_like(y), zeros, zeros, jnp.asarray(0, jnp.int32), inf, inf, -inf,
            jnp.asarray(False), eta)
  else:
    x, b, z, it, eta = start
    gap, primal, dual = certificate(x, b, z, None, inf, inf, -inf, eta, force_exact=True)
    init = (x, b, z, it, gap, primal, dual, gap <= tol, eta)
  state = lax.while_loop(cond, body, init)
  x, _, z, it, gap, primal, dual, converged, _ = state
  comps = jnp.stack([ops.fold(z_i, k, shape) for z_i, k in zip(z, modes)])
  return CompletionResult(x, comps, it, gap, primal, dual, converged), state


# max_iter and check_every are traced, so changing them does not recompile.
constraint_jit = jax.jit(constraint_solve, static_argnames=("modes", "method",
                                                            "float32_start"))


def constraint(shape: Sequence[int], indices: ArrayLike, values: ArrayLike, *,
               lam: ArrayLike = 0.0, tol: ArrayLike = 1e-3, max_iter: int = 2000,
               eta: ArrayLike | None = None, weights: ArrayLike | None = None,
               method: str = "auto", check_every: int = 5, adaptive_eta: bool = True,
               relaxation: ArrayLike = 1.0, float32_start: bool = True) -> CompletionResult:
  """Tensor completion with the overlapped trace norm, by ADMM ("Constraint").

  Splits ``X_(k) = Z_k`` with multipliers ``A_k`` and alternates (Section 4 of the paper):

  * ``X``: the average of ``fold_k(Z_k - A_k / eta)``, blended with ``y`` on the observed
    entries (set to ``y`` when ``lam = 0``);
  * ``Z_k = prox_{(g_k / eta)||.||_*}(X_(k) + A_k / eta)`` (singular value thresholding);
  * ``A_k <- A_k + eta (X_(k) - Z_k)``.

  It stops when the relative duality gap ``(P(X) - D(A)) / P(X) <= tol``; the dual point is
  ``A`` made feasible (zero sum off the observed entries, ``||A_k||_op <= g_k``), and
  ``D(A) = <s, y> - lam/2 ||s||^2`` with ``s`` the observed part of ``sum_k A_k``. The exact
  gap needs a Gram matrix and an eigen-decomposition per unfolding for each of ``P`` and
  ``D``; a check first forms a cheap estimate (``P`` at the ``Z_k``, ``D`` with a
  norm bound) and evaluates the exact gap only when the estimate is within 10 ``tol``.

  Args:
    shape: the tensor's shape ``(n_1, ..., n_K)``.
    indices: integer array ``(n_observed, K)`` of distinct observed positions.
    values: the observed values ``(n_observed,)``; their floating dtype is the solve's.
    lam: ``>= 0``; 0 fits the observations exactly, ``> 0`` is the noisy model.
    tol: relative duality gap at which to stop (the paper uses 1e-3).
    max_iter: the most ADMM iterations.
    eta: the augmented-Lagrangian step; default ``1 / (10 std(values))`` as the authors' code.
    weights: mode weights ``g_k``; default ones.
    method: singular value thresholding method (:func:`prox.singular_value_thresholding`).
    check_every: check the duality gap every this many iterations. An exact check costs
      about as much as an iteration; the authors' code checks every iteration (1).
    adaptive_eta: rebalance ``eta`` every 5 iterations within the first 500 (residual
      balancing: times 3 when the primal residual ``||X_(k) - Z_k||`` is over 3
      times the dual one, ``eta ||sum_k fold(Z_k - Z_k_prev)||`` where ``X`` is free, divided
      by 3 in the opposite case), starting from ``eta``; the multipliers are kept. The same
      optimum and stopping rule; ``False`` is the authors' fixed step.
    relaxation: over-relaxation ``rho`` in ``(0, 2)`` (Eckstein and Bertsekas 1992; Boyd et
      al. 2011, Section 3.4.3): the Z- and A-steps see ``rho X_(k) + (1 - rho) Z_k`` instead
      of ``X_(k)``. 1 (default) is the paper's ADMM; on Figure 1's instances 1.5-1.8 did not
      beat residual balancing alone.
    float32_start: for float64 data, iterate in float32 until the float32 gap is within
      ``max(tol, 1e-4)``, then cast the state to float64 (``X = y`` on the observed
      entries again), evaluate the exact gap in float64 and go on in float64 while it is
      above ``tol``. The result meets the same float64 stopping rule; on Figure 1's
      instances it takes the same iterations and stops at the same gap and error, in
      0.6-0.75x the time on a 2-core CPU. ``False`` iterates in float64 throughout.
      Ignored for float32 data.

  Returns:
    A :class:`CompletionResult`.

  Example:
    >>> t = ops.random_tucker(jax.random.key(0), (10, 10, 10), (2, 2, 2))
    >>> x = ops.tucker_to_tensor(*t)
    >>> idx = jnp.argwhere(jax.random.bernoulli(jax.random.key(1), 0.7, x.shape))
    >>> res = constraint(x.shape, idx, x[tuple(idx.T)])
    >>> bool(res.converged)
    True

  References:
    Tomioka, Hayashi, Kashima, arXiv:1010.0789, Section 4.1; authors' ``tensorconst_adm.m``.
  """
  mask, y = observation_tensors(shape, indices, values)
  check_admm_hyper(lam, tol, max_iter, eta, check_every)
  _check_relaxation(relaxation)
  values = _observed_values(mask, y, values)
  eta = 1 / (10 * sample_std(values)) if eta is None else eta
  w = prox.mode_weights(y.shape, weights, y.dtype)
  return constraint_jit(mask, y, lam, eta, tol, w, modes=tuple(range(y.ndim)),
                         max_iter=max_iter, method=method, check_every=check_every,
                         adapt_until=_adapt_until(adaptive_eta), relax=relaxation,
                         float32_start=_check_float32_start(float32_start))


def as_matrix(shape: Sequence[int], indices: ArrayLike, values: ArrayLike, mode: int, *,
              lam: ArrayLike = 0.0, tol: ArrayLike = 1e-3, max_iter: int = 2000,
              eta: ArrayLike | None = None, method: str = "auto",
              check_every: int = 5, adaptive_eta: bool = True,
              relaxation: ArrayLike = 1.0, float32_start: bool = True) -> CompletionResult:
  """Completion of one unfolding as a low-rank matrix ("As a Matrix").

  The Constraint ADMM with the single term ``||X_(k)||_*`` (the authors'
  ``tensor_as_matrix.m``); call it for each mode to get the paper's K estimates.

  Args:
    shape: the tensor's shape.
    indices: integer array ``(n_observed, K)`` of distinct observed positions.
    values: the observed values ``(n_observed,)``.
    mode: which unfolding ``k`` to complete.
    lam: ``>= 0``; 0 fits the observations exactly.
    tol: relative duality gap at which to stop.
    max_iter: the most ADMM iterations.
    eta: the ADMM step; default ``1 / (10 std(values))``.
    method: singular value thresholding method.
    check_every: evaluate the duality gap every this many iterations.
    adaptive_eta: residual balancing of ``eta`` as in :func:`constraint`.
    relaxation: over-relaxation as in :func:`constraint`.
    float32_start: float32 iterations before the float64 ones, as in :func:`constraint`.

  Returns:
    A :class:`CompletionResult` (``components`` has one entry).
  """
  mask, y = observation_tensors(shape, indices, values)
  check_admm_hyper(lam, tol, max_iter, eta, check_every)
  if int(mode) != mode or not 0 <= mode < y.ndim:
    raise ValueError(f"mode must be an integer in [0, {y.ndim}), got {mode}")
  values = _observed_values(mask, y, values)
  eta = 1 / (10 * sample_std(values)) if eta is None else eta
  # The problem only sees the mode-k unfolding: solve it as a matrix (a 2-way tensor), which
  # compiles once per unfolding shape rather than once per (shape, mode).
  mode = int(mode)
  res = constraint_jit(ops.unfold(mask, mode), ops.unfold(y, mode), lam, eta, tol,
                        jnp.ones((1,), y.dtype), modes=(0,), max_iter=max_iter, method=method,
                        check_every=check_every, adapt_until=_adapt_until(adaptive_eta),
                        relax=relaxation, float32_start=_check_float32_start(float32_start))
  return res._replace(X=ops.fold(res.X, mode, y.shape),
                      components=ops.fold(res.components[0], mode, y.shape)[None])


# --------------------------------------------------------------------------- Mixture


def mixture_solve(mask: jax.Array, y: jax.Array, lam: ArrayLike, eta: ArrayLike,
                  tol: ArrayLike, weights: jax.Array, *, max_iter: int,
                  method: str = "auto", check_every: int = 1,
                  exact: bool | None = None, adapt_until: int = 0,
                  relax: ArrayLike = 1.0, float32_start: bool = False) -> CompletionResult:
  """The Mixture ADMM on dense observation tensors (see :func:`mixture`).

  ``exact`` (static) says whether ``lam == 0``, so that only the matching primal value is
  compiled; ``None`` decides at run time (both are compiled). It must agree with ``lam``.
  ``float32_start`` as in :func:`constraint_solve`.
  """
  kwargs = dict(max_iter=max_iter, method=method, check_every=check_every, exact=exact,
                adapt_until=adapt_until, relax=relax)
  if not (float32_start and y.dtype == jnp.float64):
    return _mixture_admm(mask, y, lam, eta, tol, weights, **kwargs)[0]
  state = _float32_phase(_mixture_admm, mask, y, lam, eta, tol, weights, kwargs)
  return _mixture_admm(mask, y, lam, eta, tol, weights, **kwargs, start=state)[0]


def _mixture_admm(mask: jax.Array, y: jax.Array, lam: ArrayLike, eta: ArrayLike,
                  tol: ArrayLike, weights: jax.Array, *, max_iter: int, method: str,
                  check_every: int, exact: bool | None, adapt_until: int,
                  relax: ArrayLike, start: tuple | None = None):
  """The Mixture ADMM loop; from the state ``start`` after an exact check.

  Returns the result and the loop's final state.
  """
  shape, dtype = y.shape, y.dtype
  lam, eta, tol, relax = (jnp.asarray(v, dtype) for v in (lam, eta, tol, relax))
  n_modes = len(shape)
  modes = range(n_modes)

  def primal_noisy(z, sv, z_sum):
    sq = jnp.sum(jnp.where(mask, z_sum - y, 0) ** 2)
    return sum(weights[k] * jnp.sum(sv[k]) for k in modes) + sq / (2 * jnp.where(lam > 0, lam, 1))

  def primal_exact(z, sv, z_sum):
    # Spread the violation of sum_k W_k = y on Omega evenly over the K components, which
    # makes the split feasible; then evaluate its norm (the authors' code does the same).
    shift = jnp.where(mask, (z_sum - y) / n_modes, 0)
    return sum(weights[k] * prox.nuclear_norm(z[k] - ops.unfold(shift, k), method=method)
               for k in modes)

  def certificate(z_new, sv, z_sum, alpha, gap, primal, dual_best, force_exact=False):
    args = (tuple(z_new), sv, z_sum)
    scale = jnp.minimum(1, jnp.min(jnp.stack(
        [weights[k] / prox.spectral_norm(ops.unfold(alpha, k)) for k in modes])))
    a = scale * alpha
    d = jnp.maximum(dual_best, jnp.vdot(a, y) - lam / 2 * jnp.vdot(a, a))

    def noisy(*args):
      p = primal_noisy(*args)
      return (p - d) / jnp.abs(p), p

    def exact_fit(*args):
      def evaluate(_):
        p = primal_exact(*args)
        return (p - d) / jnp.abs(p), p

      if force_exact:
        return evaluate(None)
      # The feasible split's value needs a Gram matrix and an eigen-decomposition per
      # mode; it is skipped while the value of the unshifted split (the thresholded
      # singular values, at hand) says the gap is far above tol.
      estimate = sum(weights[k] * jnp.sum(sv[k]) for k in modes)
      near = ~((estimate - d) / jnp.abs(estimate) > _ESTIMATE_FACTOR * tol)
      return lax.cond(near, evaluate, lambda _: (gap, primal), None)

    if exact is None:
      g, p = lax.cond(lam > 0, noisy, exact_fit, *args)
    else:
      g, p = exact_fit(*args) if exact else noisy(*args)
    return g, p, d

  def body(state):
    z, z_sum, alpha, it, gap, primal, dual_best, _, eta, v_sum_old, v_old = state
    z_new, sv, v_new = [], [], []
    for k in modes:
      # Z_k <- prox of eta g_k ||.||_* at T_k = Z_k + eta alpha_(k); V_k, the projection onto
      # the spectral ball of radius g_k, is what thresholding removed: (T_k - Z_k_new) / eta.
      # Over-relaxation (relax = 1: the paper's step) uses relax alpha_(k) + (1 - relax) V_k
      # in place of alpha_(k) here and in the multiplier step.
      t_k = z[k] + eta * (relax * ops.unfold(alpha, k) + (1 - relax) * v_old[k])
      z_k, sv_k = prox.svt_with_spectrum(t_k, eta * weights[k], method)
      z_new.append(z_k)
      sv.append(sv_k)
      v_new.append((t_k - z_k) / eta)
    # sum_k fold(V_k) = (sum_k fold(Z_k) + eta sum_k fold(T_k - Z_k) - sum_k fold(Z_k_new)) /
    # eta, with sum_k fold(T_k - Z_k) = eta (relax K alpha + (1 - relax) sum_k fold(V_k_old)).
    z_sum_new = sum(ops.fold(z_k, k, shape) for k, z_k in zip(modes, z_new))
    eta_v_sum = z_sum + eta * (relax * n_modes * alpha + (1 - relax) * v_sum_old) - z_sum_new
    z_sum = z_sum_new
    alpha = jnp.where(mask, (y - z_sum + eta_v_sum) / (lam + eta * n_modes), 0)
    v_sum = eta_v_sum / eta

    check = (it + 1) % check_every == 0
    gap, primal, dual_best = lax.cond(
        check, lambda _: certificate(z_new, tuple(sv), z_sum, alpha, gap, primal, dual_best),
        lambda _: (gap, primal, dual_best), None)

    def rebalance(_):
      # Residual balancing. The primal residual alpha_(k) - V_k is the change of the
      # multipliers W_k over eta; the dual residual, eta times the change of Omega(sum_k V_k).
      r = jnp.sqrt(sum(jnp.vdot(a - b, a - b) for a, b in zip(z_new, z))) / eta
      s = eta * jnp.linalg.norm(jnp.where(mask, v_sum - v_sum_old, 0))
      return jnp.where(r > _BALANCE * s, eta * _STEP_FACTOR,
                       jnp.where(s > _BALANCE * r, eta / _STEP_FACTOR, eta))

    eta = lax.cond(((it + 1) % _ADAPT_EVERY == 0) & (it < adapt_until), rebalance,
                   lambda _: eta, None)
    return (tuple(z_new), z_sum, alpha, it + 1, gap, primal, dual_best, gap <= tol, eta,
            v_sum, tuple(v_new))

  def cond(state):
    return (state[3] < max_iter) & ~state[7]

  inf = jnp.asarray(jnp.inf, dtype)
  if start is None:
    zeros = tuple(ops.unfold(jnp.zeros_like(y), k) for k in modes)
    init = (zeros, jnp.zeros_like(y), jnp.where(mask, y, 0), jnp.asarray(0, jnp.int32), inf,
            inf, -inf, jnp.asarray(False), eta, jnp.zeros_like(y), zeros)
  else:
    z, _, alpha, it, _, _, _, _, eta, v_sum, v = start
    z_sum = sum(ops.fold(z_k, k, shape) for k, z_k in zip(modes, z))
    # The primal value of the exact fit needs no singular values here (force_exact); the
    # noisy one sums them.
    sv = tuple(prox.singular_values(z_k, method=method) for z_k in z) if exact is not True \
        else (None,) * n_modes
    gap, primal, dual = certificate(z, sv, z_sum, alpha, inf, inf, -inf, force_exact=True)
    init = (z, z_sum, alpha, it, gap, primal, dual, gap <= tol, eta, v_sum, v)
  state = lax.while_loop(cond, body, init)
  z, _, _, it, gap, primal, dual, converged, _, _, _ = state
  comps = jnp.stack([ops.fold(z_k, k, shape) for k, z_k in zip(modes, z)])
  z_sum = jnp.sum(comps, axis=0)
  shift = jnp.where((lam > 0) | ~mask, 0, (z_sum - y) / n_modes)
  comps = comps - shift[None]
  return (CompletionResult(jnp.sum(comps, axis=0), comps, it, gap, primal, dual, converged),
          state)


mixture_jit = jax.jit(mixture_solve, static_argnames=("method", "exact", "float32_start"))


def mixture(shape: Sequence[int], indices: ArrayLike, values: ArrayLike, *,
            lam: ArrayLike = 0.0, tol: ArrayLike = 1e-3, max_iter: int = 2000,
            eta: ArrayLike | None = None, weights: ArrayLike | None = None,
            method: str = "auto", check_every: int = 5, adaptive_eta: bool = True,
            relaxation: ArrayLike = 1.8, float32_start: bool = True) -> CompletionResult:
  """Tensor completion with the latent trace norm, by ADMM on the dual ("Mixture").

  Primal: ``min sum_k g_k ||W_k,(k)||_* + 1/(2 lam) ||Omega(sum_k W_k) - y||^2``. Dual:
  ``max_alpha <alpha, y> - lam/2 ||alpha||^2`` subject to ``||Omega^T(alpha)_(k)||_op <= g_k``.
  The ADMM splits ``V_k = Omega^T(alpha)_(k)``; its multipliers are the primal components
  ``W_k``. One iteration (Section 4.2 of the paper):

  * ``W_k = prox_{eta g_k ||.||_*}(W_k + eta alpha_(k))``, and ``V_k`` the clipped remainder;
  * ``alpha = (y - Omega(sum_k W_k) + eta Omega(sum_k V_k)) / (lam + eta K)``.

  It stops on the relative duality gap, with ``alpha`` scaled into the dual feasible set and
  the best dual value kept. With ``lam = 0`` the primal value is taken at the split made
  feasible by spreading the residual on the observed entries over the K components (a Gram
  matrix and an eigen-decomposition per mode, so it is evaluated only once the value of the
  unshifted split puts the gap within 10 ``tol``), and the returned ``X`` fits the
  observations exactly.

  Args:
    shape: the tensor's shape ``(n_1, ..., n_K)``.
    indices: integer array ``(n_observed, K)`` of distinct observed positions.
    values: the observed values ``(n_observed,)``.
    lam: ``>= 0``; 0 fits the observations exactly.
    tol: relative duality gap at which to stop.
    max_iter: the most ADMM iterations.
    eta: the ADMM step; default ``10 std(values)`` as the authors' code.
    weights: mode weights ``g_k``; default ones. Pass
      :func:`prox.scaled_latent_weights` for the scaled latent norm.
    method: singular value thresholding method.
    check_every: evaluate the duality gap every this many iterations (the authors: 1).
    adaptive_eta: rebalance ``eta`` every 5 iterations within the first 500, as in
      :func:`constraint`; here the primal residual is the change of the ``W_k`` over ``eta``
      (``alpha_(k) - V_k`` without relaxation) and the dual one ``eta`` times the change of
      ``Omega(sum_k V_k)``. ``False`` is the authors' fixed step.
    relaxation: over-relaxation ``rho`` in ``(0, 2)`` (Eckstein and Bertsekas 1992; Boyd et
      al. 2011, Section 3.4.3): the V- and W-steps see ``rho alpha_(k) + (1 - rho) V_k`` (the
      previous ``V_k``) instead of ``alpha_(k)``. 1 is the paper's ADMM; the default 1.8
      takes 55 instead of 100 iterations at 35% observed on Figure 1's instances, 145
      instead of 255 at 65%.
    float32_start: for float64 data, float32 iterations until the float32 gap is within
      ``max(tol, 1e-4)``, then the float64 gap and iterations, as in :func:`constraint`.

  Returns:
    A :class:`CompletionResult`; ``components`` holds the latent split ``W_k``.

  References:
    Tomioka, Hayashi, Kashima, arXiv:1010.0789, Section 4.2; authors' ``tensormix_adm.m``.
  """
  mask, y = observation_tensors(shape, indices, values)
  check_admm_hyper(lam, tol, max_iter, eta, check_every)
  _check_relaxation(relaxation)
  values = _observed_values(mask, y, values)
  eta = 10 * sample_std(values) if eta is None else eta
  w = prox.mode_weights(y.shape, weights, y.dtype)
  exact = bool(float(lam) == 0) if core.is_concrete(lam) else None
  return mixture_jit(mask, y, lam, eta, tol, w, max_iter=max_iter, method=method,
                      check_every=check_every, exact=exact,
                      adapt_until=_adapt_until(adaptive_eta), relax=relaxation,
                      float32_start=_check_float32_start(float32_start))


# --------------------------------------------------------------------------- Tucker


def _hooi_sweep(filled: jax.Array, factors: tuple[jax.Array, ...],
                ranks: tuple[int, ...]) -> tuple[jax.Array, tuple[jax.Array, ...]]:
  """One sweep of higher-order orthogonal iteration on a complete tensor, then its core."""
  factors = list(factors)
  for k, r in enumerate(ranks):
    others = [None if j == k else u for j, u in enumerate(factors)]
    g = ops.multi_mode_product(filled, others, transpose=True)
    factors[k] = ops.leading_left_singular_vectors(ops.unfold(g, k), r)
  return ops.multi_mode_product(filled, factors, transpose=True), tuple(factors)


def tucker_em_solve(mask: jax.Array, y: jax.Array, tol: ArrayLike, *, ranks: tuple[int, ...],
                    max_iter: int) -> TuckerResult:
  """EM for Tucker with missing entries on dense observation tensors (see :func:`tucker_em`)."""
  dtype = y.dtype
  tol = jnp.asarray(tol, dtype)
  scale = jnp.sum(jnp.where(mask, y, 0) ** 2)

  def fit(x):
    return jnp.sum(jnp.where(mask, x - y, 0) ** 2)

  def body(state):
    x, _, factors, it, sse, _, _ = state
    # E-step: impute the missing entries with the current estimate; M-step: one HOOI sweep.
    core, factors = _hooi_sweep(jnp.where(mask, y, x), factors, ranks)
    x = ops.tucker_to_tensor(core, factors)
    sse_new = fit(x)
    change = jnp.abs(sse - sse_new) / scale
    return x, core, factors, it + 1, sse_new, change, change <= tol

  def cond(state):
    return (state[3] < max_iter) & ~state[6]

  # Initialization: truncated HOSVD of the zero-filled observations.
  core, factors = ops.hosvd(jnp.where(mask, y, 0), ranks)
  x = ops.tucker_to_tensor(core, factors)
  init = (x, core, factors, jnp.asarray(0, jnp.int32), fit(x), jnp.asarray(jnp.inf, dtype),
          jnp.asarray(False))
  x, core, factors, it, _, change, converged = lax.while_loop(cond, body, init)
  return TuckerResult(x, core, factors, it, change, converged)


_tucker_em_jit = jax.jit(tucker_em_solve, static_argnames=("ranks",))


def tucker_em(shape: Sequence[int], indices: ArrayLike, values: ArrayLike,
              ranks: Sequence[int], *, tol: ArrayLike = 1e-9,
              max_iter: int = 500) -> TuckerResult:
  """Tucker decomposition with missing values by EM, the paper's non-convex baseline.

  Alternates imputing the unobserved entries with the current estimate and one sweep of
  higher-order orthogonal iteration (each ``U_k`` the leading left singular vectors of the
  imputed tensor projected on the other factors), from the truncated HOSVD of the
  zero-filled observations. It stops when the squared error on the observed entries changes
  by at most ``tol * ||y||^2`` in a sweep. Non-convex: the result depends on the start.

  Args:
    shape: the tensor's shape ``(n_1, ..., n_K)``.
    indices: integer array ``(n_observed, K)`` of distinct observed positions.
    values: the observed values ``(n_observed,)``.
    ranks: the Tucker ranks ``(r_1, ..., r_K)``, ``1 <= r_k <= n_k``.
    tol: stopping threshold on the relative change of the observed squared error.
    max_iter: the most EM sweeps.

  Returns:
    A :class:`TuckerResult`.

  References:
    Tomioka, Hayashi, Kashima, arXiv:1010.0789, Section 5 (the N-way toolbox ``tucker``
    with missing values); Andersson, Bro, "The N-way Toolbox for MATLAB", 2000.
  """
  mask, y = observation_tensors(shape, indices, values)
  ranks = _check_tucker_ranks(y.shape, ranks)
  check_admm_hyper(0.0, tol, max_iter, None)
  return _tucker_em_jit(mask, y, tol, ranks=ranks, max_iter=max_iter)


def _check_tucker_ranks(shape: Sequence[int], ranks: Sequence[int]) -> tuple[int, ...]:
  ranks = tuple(ranks)
  if any(int(r) != r for r in ranks):
    raise ValueError(f"ranks must be integers, got {ranks}")
  ops.check_ranks(shape, ranks)
  return tuple(int(r) for r in ranks)


# Below this fraction of the convergence criterion an ALS sweep counts as having settled.
_SETTLED = 1e-2


def _row_column_means(mask: jax.Array, y: jax.Array) -> jax.Array:
  """The N-way toolbox's start for missing entries, on the mode-1 unfolding ``X_(1)``.

  A missing ``(i, j)`` gets ``(mean of row i + mean of column j) / 3`` over the observed
  entries; where a column has none, the average of the mean row term and the mean column
  term, as ``tucker.m`` does.
  """
  m, x = ops.unfold(mask, 0), ops.unfold(jnp.where(mask, y, 0), 0)

  def means(axis):
    count = jnp.sum(m, axis)
    return jnp.sum(x, axis) / jnp.maximum(count, 1), count > 0

  col, col_ok = means(0)
  row, row_ok = means(1)
  col, row = col / 3, row / 3
  fill = row[:, None] + col[None, :]
  both = col_ok[None, :] & row_ok[:, None]
  mean = (jnp.sum(jnp.where(col_ok, col, 0)) / jnp.maximum(jnp.sum(col_ok), 1)
          + jnp.sum(jnp.where(row_ok, row, 0)) / jnp.maximum(jnp.sum(row_ok), 1)) / 2
  fill = jnp.where(both, fill, mean)
  return jnp.where(mask, y, ops.fold(fill, 0, y.shape))


def tucker_nway_solve(mask: jax.Array, y: jax.Array, crit: ArrayLike, *,
                      ranks: tuple[int, ...], max_iter: int, impute_every: int,
                      skip_settled: bool = True) -> TuckerResult:
  """The N-way toolbox's Tucker ALS with missing values (see :func:`tucker_nway`)."""
  dtype = y.dtype
  crit = jnp.asarray(crit, dtype)
  missing = ~mask

  def e_step(args):
    _, core, factors, ss_old = args
    model = ops.tucker_to_tensor(core, factors)
    ss = jnp.sum(jnp.where(missing, model, 0) ** 2)
    # Convergence criterion 2 of tucker.m: the imputed values' sum of squares changes by
    # less than 10 crit relative to its previous value.
    change = jnp.abs(ss - ss_old) / ss_old
    return jnp.where(mask, y, model), ss, change, change < 10 * crit

  def body(state):
    filled, core_old, factors, it, ss_old, change, _ = state
    core, factors = _hooi_sweep(filled, factors, ranks)
    it = it + 1
    if skip_settled:
      # Once the ALS has fitted the completed tensor (the core's sum of squares moves by
      # less than crit / 100 relative), the sweeps left before the next re-imputation
      # would leave the model in place: count them instead of running them.
      g_old, g = jnp.sum(core_old ** 2), jnp.sum(core ** 2)
      settled = (it > 1) & (jnp.abs(g - g_old) < _SETTLED * crit * g_old)
      it = jnp.where(settled, jnp.minimum(max_iter, -(-it // impute_every) * impute_every), it)
    # The toolbox re-imputes at its display iterations only: the first, then every
    # Options(5)-th sweep; between them the ALS fits the same completed tensor.
    impute = (it == 1) | (it % impute_every == 0)
    filled, ss_old, change, converged = lax.cond(
        impute, e_step, lambda a: (a[0], a[3], change, jnp.asarray(False)),
        (filled, core, factors, ss_old))
    return filled, core, factors, it, ss_old, change, converged

  def cond(state):
    return (state[3] < max_iter) & ~state[6]

  filled = _row_column_means(mask, y)
  core, factors = ops.hosvd(filled, ranks)
  ss = jnp.sum(jnp.where(missing, filled, 0) ** 2)
  init = (filled, core, factors, jnp.asarray(0, jnp.int32), ss,
          jnp.asarray(jnp.inf, dtype), jnp.asarray(False))
  _, core, factors, it, _, change, converged = lax.while_loop(cond, body, init)
  return TuckerResult(ops.tucker_to_tensor(core, factors), core, factors, it, change,
                      converged)


_tucker_nway_jit = jax.jit(tucker_nway_solve, static_argnames=("ranks", "skip_settled"))


def tucker_nway(shape: Sequence[int], indices: ArrayLike, values: ArrayLike,
                ranks: Sequence[int], *, crit: ArrayLike = 1e-6, max_iter: int = 2500,
                impute_every: int = 100, skip_settled: bool = True) -> TuckerResult:
  """Tucker with missing values as the paper ran it: the N-way toolbox's ``tucker``.

  The paper's Tucker baseline is ``tucker`` from the N-way toolbox (Andersson and Bro)
  with the missing entries as NaN and ``Options = [0 0 0 0 100]``. Its ``tucker.m``
  differs from :func:`tucker_em` (one E-step per ALS sweep) in three ways, all kept here:

  - it starts the missing entries of the mode-1 unfolding at ``(row mean + column
    mean) / 3`` and the factors at the HOSVD of that completed tensor;
  - it re-imputes the missing entries from the model only at its display iterations, the
    first ALS sweep and then every ``Options(5) = impute_every`` sweeps: in between, the
    ALS fits a fixed completed tensor;
  - it stops at a re-imputation when the sum of squares of the imputed values changes by
    less than ``10 crit`` relative to the previous one, or after ``max_iter`` sweeps.

  ``crit`` and ``max_iter`` default to the toolbox's documented defaults for its ALS
  (``parafac``: convergence criterion 1e-6, at most 2500 iterations); ``tucker.m`` loads
  its own from ``noptiot3.mat``, a binary file not shown in any source available here, so
  these two are an assumption. Each sweep is one HOOI update of every factor (the toolbox
  takes the leading right singular vectors of the projected data, the same subspace) and
  the core of the completed tensor. Sweeps left before a re-imputation once the ALS has
  settled on the completed tensor are counted without being run (``skip_settled``); on
  Figure 1's instances this gives the same errors to three digits, 30 times faster.

  With few E-steps an over-sized model (ranks x1.2 in the paper's Figure 1) fits the
  imputed values and keeps them: it stays far from the truth at every observed fraction,
  as in the paper.

  Args:
    shape: the tensor's shape ``(n_1, ..., n_K)``.
    indices: integer array ``(n_observed, K)`` of distinct observed positions.
    values: the observed values ``(n_observed,)``.
    ranks: the Tucker ranks ``(r_1, ..., r_K)``, ``1 <= r_k <= n_k``.
    crit: the toolbox's ``Options(1)``, the relative convergence criterion.
    max_iter: ``Options(6)``, the most ALS sweeps in all.
    impute_every: ``Options(5)``, sweeps between re-imputations.
    skip_settled: count instead of run the sweeps after the ALS has settled (the core's
      sum of squares changing by less than ``crit / 100`` relative); ``False`` runs every
      sweep, as the toolbox does.

  Returns:
    A :class:`TuckerResult`; ``gap`` is the last relative change of the imputed values'
    sum of squares and ``iterations`` counts ALS sweeps.

  References:
    Tomioka, Hayashi, Kashima, arXiv:1010.0789, Section 5; Andersson, Bro, "The N-way
    Toolbox for MATLAB", Chemometrics and Intelligent Laboratory Systems 52, 2000.
  """
  mask, y = observation_tensors(shape, indices, values)
  ranks = _check_tucker_ranks(y.shape, ranks)
  check_admm_hyper(0.0, crit, max_iter, None, tol_name="crit")
  if isinstance(impute_every, bool) or int(impute_every) != impute_every or impute_every < 1:
    raise ValueError(f"impute_every must be a positive integer, got {impute_every!r}")
  if not isinstance(skip_settled, bool):
    raise ValueError(f"skip_settled must be True or False, got {skip_settled!r}")
  return _tucker_nway_jit(mask, y, crit, ranks=ranks, max_iter=max_iter,
                          impute_every=int(impute_every), skip_settled=skip_settled)
