"""Multiple measures of similarity learned jointly from triplet comparisons.

Paper: Liwen Zhang, Subhransu Maji, Ryota Tomioka, "Jointly Learning Multiple Measures of
Similarities from Triplet Comparisons" (2015, arXiv 1503.01521). Every object ``i`` gets one
point ``x_i`` of a shared embedding ``X`` (``N x d``) and every view ``t`` a PSD metric ``M_t``,
either ``L_t L_t^T`` or diagonal; a triplet ``(i, j, k, t)`` says "in view ``t``, ``i`` is closer
to ``j`` than to ``k``" and is fitted by a hinge or logistic loss on the margin
``d_t(i, k) - d_t(i, j)`` with ``d_t(i, j) = (x_i - x_j)^T M_t (x_i - x_j)``, plus the trace
regularizer ``tr(X X^T) + sum_t tr(M_t)`` (the norm/trace regularizer as we read the paper;
its exact weighting is not verified against the text).

This module provides the kernels (view metrics and embeddings, triplet distances, margins,
losses, STE and t-STE probabilities of van der Maaten and Weinberger 2012, the triplet error),
one trainer for the joint model and its baselines (independent embeddings per view, one pooled
embedding, STE and t-STE), a single compiled function that ``vmap``-s over seeds, and the
synthetic multi-view generator (views on overlapping coordinate subsets).

Triplets are integer arrays of shape ``(n, 4)``: rows ``(i, j, k, t)``; a ``(n, 3)`` array is a
single view (``t = 0``).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.typing import ArrayLike

from tomioka_jax import core

__all__ = [
    "TRIPLET_MODELS",
    "TRIPLET_LOSSES",
    "TRIPLET_METRICS",
    "check_triplets",
    "view_metrics",
    "view_embeddings",
    "triplet_distances",
    "triplet_margins",
    "ste_probability",
    "tste_probability",
    "triplet_loss",
    "triplet_error",
    "TripletParams",
    "init_triplet_params",
    "triplet_objective",
    "TripletFit",
    "fit_triplets",
    "shared_coordinate_views",
    "MultiviewTriplets",
    "make_multiview_triplets",
]

# joint: one embedding, a metric per view (the paper's model); independent: one embedding per
# view (identity metric); pooled: one embedding and metric for every view.
TRIPLET_MODELS = ("joint", "independent", "pooled")
# hinge: max(0, 1 - margin); logistic: log(1 + exp(-margin)) = -log(STE probability);
# tste: -log(t-STE probability).
TRIPLET_LOSSES = ("hinge", "logistic", "tste")
# full: M_t = L_t L_t^T; diagonal: M_t = diag(s_t^2) (only for the joint model).
TRIPLET_METRICS = ("full", "diagonal")


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
  if value not in allowed:
    raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got "
                     f"{name}={value!r}")


def _check_positive_int(name: str, value: object) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")


def _check_nonnegative(name: str, value: object) -> None:
  if core.is_concrete(value) and not (np.all(np.isfinite(value))
                                      and np.all(np.asarray(value) >= 0)):
    raise ValueError(f"{name} must be finite and >= 0, got {name}={value!r}")


def _check_positive_float(name: str, value: object) -> None:
  if core.is_concrete(value) and not (np.isfinite(value) and value > 0):
    raise ValueError(f"{name} must be finite and > 0, got {name}={value!r}")


def check_triplets(triplets: ArrayLike, num_objects: int, num_views: int = 1, *,
                   name: str = "triplets") -> jax.Array:
  """Checks triplet comparisons and returns them as an ``(n, 4)`` int32 array of ``(i, j, k, t)``.

  The dtype and shape are always checked. The values (``0 <= i, j, k < num_objects``, ``i``,
  ``j``, ``k`` pairwise distinct, ``0 <= t < num_views``) are checked when ``triplets`` is
  concrete, and skipped under ``jit``/``vmap`` tracing.

  Args:
    triplets: integer array ``(n, 4)`` of rows ``(i, j, k, t)``, or ``(n, 3)`` for one view.
    num_objects: the number of objects ``N``.
    num_views: the number of views ``T``.
    name: the argument's name in error messages.

  Returns:
    The triplets as int32, shape ``(n, 4)`` (a zero view column appended to ``(n, 3)``).

  Raises:
    ValueError: naming the argument, the offending value and what is allowed.

  Example:
    >>> check_triplets([[0, 1, 2]], num_objects=3).tolist()
    [[0, 1, 2, 0]]
    >>> check_triplets([[0, 0, 2]], num_objects=3)
    Traceback (most recent call last):
    ...
    ValueError: triplets[0] = (0, 0, 2) repeats an object; allowed: i, j, k pairwise distinct
  """
  _check_positive_int("num_objects", num_objects)
  _check_positive_int("num_views", num_views)
  if not isinstance(triplets, jax.Array):
    triplets = np.asarray(triplets)  # keeps a float64 or bool dtype for the message
  dtype = triplets.dtype
  if not jnp.issubdtype(dtype, jnp.integer):
    raise ValueError(f"{name} must have an integer dtype, got {name}.dtype={dtype}; allowed: "
                     "int8..int64, uint8..uint64")
  shape = triplets.shape
  if len(shape) != 2 or shape[1] not in (3, 4):
    raise ValueError(f"{name} must have shape (n, 4) of rows (i, j, k, t) or (n, 3), got "
                     f"{name}.shape={shape}")
  if core.is_concrete(triplets):
    t = np.asarray(triplets).astype(np.int64)
    objects = t[:, :3]
    bad = np.argwhere((objects < 0) | (objects >= num_objects))
    if bad.size:
      r, c = bad[0]
      raise ValueError(f"{name}[{r}, {c}] = {objects[r, c]} is not an object index; allowed: "
                       f"0 <= index < num_objects = {num_objects}")
    repeated = np.flatnonzero((objects[:, 0] == objects[:, 1]) | (objects[:, 0] == objects[:, 2])
                              | (objects[:, 1] == objects[:, 2]))
    if repeated.size:
      r = repeated[0]
      raise ValueError(f"{name}[{r}] = {tuple(int(v) for v in objects[r])} repeats an object; "
                       "allowed: i, j, k pairwise distinct")
    if shape[1] == 4:
      bad = np.flatnonzero((t[:, 3] < 0) | (t[:, 3] >= num_views))
      if bad.size:
        r = bad[0]
        raise ValueError(f"{name}[{r}, 3] = {t[r, 3]} is not a view index; allowed: "
                         f"0 <= t < num_views = {num_views}")
  out = jnp.asarray(triplets).astype(jnp.int32)
  if shape[1] == 3:
    out = jnp.concatenate([out, jnp.zeros((shape[0], 1), jnp.int32)], axis=1)
  return out


def view_metrics(factors: ArrayLike) -> jax.Array:
  """The view-specific PSD metrics ``M_t`` from their parameters.

  ``M_t = L_t L_t^T`` for factors ``L_t`` of shape ``(d, r)``, and ``M_t = diag(s_t^2)`` for a
  diagonal parametrization ``s_t`` of shape ``(d,)``. Both are PSD by construction and
  ``tr(M_t)`` is the squared Frobenius norm of the parameter.

  Args:
    factors: ``(T, d, r)`` factors or ``(T, d)`` diagonal scales.

  Returns:
    The metrics, shape ``(T, d, d)``.

  Example:
    >>> view_metrics(jnp.array([[1.0, 2.0]])).tolist()
    [[[1.0, 0.0], [0.0, 4.0]]]
  """
  factors = jnp.asarray(factors)
  if factors.ndim == 2:
    return jax.vmap(jnp.diag)(factors ** 2)
  if factors.ndim != 3:
    raise ValueError(f"factors must have shape (T, d, r) or (T, d), got "
                     f"factors.shape={factors.shape}")
  return factors @ jnp.swapaxes(factors, 1, 2)


def view_embeddings(embedding: ArrayLike, factors: ArrayLike | None = None) -> jax.Array:
  """Per-view embeddings ``Z_t`` whose squared Euclidean distances are the view distances.

  With ``M_t = L_t L_t^T``, ``d_t(i, j) = ||L_t^T (x_i - x_j)||^2``, so ``Z_t = X L_t``
  (``X s_t`` elementwise for diagonal metrics); distances never need the ``d x d`` metrics.
  Without factors, ``embedding`` already holds one embedding per view (independent model) or a
  single one (pooled model, STE) and is returned as is.

  Args:
    embedding: the shared embedding ``(N, d)``, or ``(E, N, d)`` when ``factors`` is None.
    factors: ``(T, d, r)`` factors, ``(T, d)`` diagonal scales, or None (identity metrics).

  Returns:
    ``(T, N, r)`` view embeddings (``(E, N, d)`` without factors).

  Example:
    >>> x = jnp.array([[0.0, 0.0], [3.0, 4.0]])
    >>> view_embeddings(x, jnp.array([[1.0, 0.0], [0.0, 1.0]]))[:, 1].tolist()
    [[3.0, 0.0], [0.0, 4.0]]
  """
  embedding = jnp.asarray(embedding)
  if factors is None:
    if embedding.ndim != 3:
      raise ValueError(f"embedding must have shape (E, N, d) without factors, got "
                       f"embedding.shape={embedding.shape}")
    return embedding
  factors = jnp.asarray(factors)
  if embedding.ndim != 2:
    raise ValueError(f"embedding must have shape (N, d) with factors, got "
                     f"embedding.shape={embedding.shape}")
  if factors.ndim == 2:
    return embedding[None, :, :] * factors[:, None, :]
  return jnp.einsum("nd,tdr->tnr", embedding, factors)


def triplet_distances(view_emb: ArrayLike, triplets: ArrayLike) -> tuple[jax.Array, jax.Array]:
  """The view distances ``(d_t(i, j), d_t(i, k))`` of every triplet ``(i, j, k, t)``.

  ``d_t(i, j) = ||z^t_i - z^t_j||^2`` in the view embedding ``Z_t`` (see
  :func:`view_embeddings`); a single embedding (leading axis 1) serves every view.

  Args:
    view_emb: ``(T, N, r)`` view embeddings, or ``(1, N, r)`` for one shared distance.
    triplets: ``(n, 4)`` integer rows ``(i, j, k, t)`` (see :func:`check_triplets`).

  Returns:
    ``d_ij`` and ``d_ik``, each of shape ``(n,)``.

  Example:
    >>> z = jnp.array([[[0.0], [1.0], [3.0]]])
    >>> [d.tolist() for d in triplet_distances(z, jnp.array([[0, 1, 2, 0]]))]
    [[1.0], [9.0]]
  """
  view_emb, triplets = jnp.asarray(view_emb), jnp.asarray(triplets)
  views = triplets[:, 3] if view_emb.shape[0] > 1 else jnp.zeros_like(triplets[:, 3])
  zi, zj, zk = (view_emb[views, triplets[:, c]] for c in range(3))
  return jnp.sum((zi - zj) ** 2, axis=-1), jnp.sum((zi - zk) ** 2, axis=-1)


def triplet_margins(view_emb: ArrayLike, triplets: ArrayLike) -> jax.Array:
  """The margins ``d_t(i, k) - d_t(i, j)``: positive when the triplet is satisfied.

  Args:
    view_emb, triplets: as in :func:`triplet_distances`.

  Returns:
    The margins, shape ``(n,)``.

  Example:
    >>> z = jnp.array([[[0.0], [1.0], [3.0]]])
    >>> triplet_margins(z, jnp.array([[0, 1, 2, 0], [0, 2, 1, 0]])).tolist()
    [8.0, -8.0]
  """
  d_ij, d_ik = triplet_distances(view_emb, triplets)
  return d_ik - d_ij


def ste_probability(d_ij: ArrayLike, d_ik: ArrayLike) -> jax.Array:
  """STE's probability that ``i`` is closer to ``j`` than to ``k`` (van der Maaten, Weinberger).

  ``p = exp(-d_ij) / (exp(-d_ij) + exp(-d_ik)) = sigmoid(d_ik - d_ij)``: the logistic loss on
  the margin is ``-log p``, so STE is the logistic loss with the identity metric.

  Args:
    d_ij, d_ik: squared distances (any matching shape).

  Returns:
    The probabilities, computed stably for large distances.

  Example:
    >>> float(ste_probability(1.0, 1.0))
    0.5
  """
  return jax.nn.sigmoid(jnp.asarray(d_ik) - jnp.asarray(d_ij))


def tste_probability(d_ij: ArrayLike, d_ik: ArrayLike, alpha: float) -> jax.Array:
  """t-STE's probability with a Student-t kernel of ``alpha`` degrees of freedom.

  ``p = k(d_ij) / (k(d_ij) + k(d_ik))`` with ``k(d) = (1 + d / alpha)^(-(alpha + 1) / 2)``;
  the heavy tail keeps gradients alive for badly placed points.

  Args:
    d_ij, d_ik: squared distances (any matching shape).
    alpha: degrees of freedom, > 0 (van der Maaten and Weinberger use ``d - 1``).

  Returns:
    The probabilities.

  Example:
    >>> round(float(tste_probability(0.0, 3.0, alpha=1.0)), 4)
    0.8
  """
  _check_positive_float("alpha", alpha)
  return jax.nn.sigmoid(_log_student_kernel(d_ij, alpha) - _log_student_kernel(d_ik, alpha))


def _log_student_kernel(d: ArrayLike, alpha: float) -> jax.Array:
  """``log (1 + d / alpha)^(-(alpha + 1) / 2)``, t-STE's kernel of a squared distance."""
  return -(alpha + 1) / 2 * jnp.log1p(jnp.asarray(d) / alpha)


def triplet_loss(d_ij: ArrayLike, d_ik: ArrayLike, loss: str = "hinge", *,
                 alpha: float = 1.0) -> jax.Array:
  """The per-triplet loss on the distances ``d_t(i, j)``, ``d_t(i, k)``.

  With the margin ``m = d_ik - d_ij``: ``hinge`` is ``max(0, 1 - m)``, ``logistic`` is
  ``log(1 + exp(-m)) = -log p_STE``, and ``tste`` is ``-log p_tSTE`` (``alpha`` degrees of
  freedom; see :func:`tste_probability`).

  Args:
    d_ij, d_ik: squared view distances (any matching shape).
    loss: one of :data:`TRIPLET_LOSSES`.
    alpha: t-STE's degrees of freedom (only for ``tste``).

  Returns:
    The losses, the shape of ``d_ij``.

  Example:
    >>> triplet_loss(jnp.array([0.0, 0.0]), jnp.array([0.5, 2.0])).tolist()
    [0.5, 0.0]
  """
  _check_choice("loss", loss, TRIPLET_LOSSES)
  d_ij, d_ik = jnp.asarray(d_ij), jnp.asarray(d_ik)
  if loss == "hinge":
    return jax.nn.relu(1.0 - (d_ik - d_ij))
  if loss == "logistic":
    return jax.nn.softplus(d_ij - d_ik)
  _check_positive_float("alpha", alpha)
  return jax.nn.softplus(_log_student_kernel(d_ik, alpha) - _log_student_kernel(d_ij, alpha))


def triplet_error(view_emb: ArrayLike, triplets: ArrayLike,
                  weights: ArrayLike | None = None) -> jax.Array:
  """The triplet generalization error: the (weighted) fraction of violated triplets.

  A triplet is violated when ``d_t(i, k) < d_t(i, j)``; a tie counts one half.

  Args:
    view_emb, triplets: as in :func:`triplet_distances`.
    weights: optional ``(n,)`` non-negative weights (0 drops a row: padding).

  Returns:
    A scalar in ``[0, 1]``.

  Example:
    >>> z = jnp.array([[[0.0], [1.0], [3.0]]])
    >>> float(triplet_error(z, jnp.array([[0, 1, 2, 0], [0, 2, 1, 0]])))
    0.5
  """
  m = triplet_margins(view_emb, triplets)
  wrong = jnp.where(m < 0, 1.0, jnp.where(m == 0, 0.5, 0.0))
  if weights is None:
    return jnp.mean(wrong)
  weights = jnp.asarray(weights, wrong.dtype)
  return jnp.sum(weights * wrong) / jnp.maximum(jnp.sum(weights), 1e-12)


class TripletParams(NamedTuple):
  """The parameters of a triplet model.

  Attributes:
    embedding: the shared embedding ``(N, d)`` (joint model), or ``(E, N, d)`` embeddings with
      identity metrics (``E = T``: independent; ``E = 1``: pooled, STE).
    factors: ``(T, d, r)`` metric factors or ``(T, d)`` diagonal scales (joint), else None.
  """

  embedding: jax.Array
  factors: jax.Array | None = None

  def view_embeddings(self) -> jax.Array:
    """``view_embeddings(self.embedding, self.factors)``."""
    return view_embeddings(self.embedding, self.factors)


def init_triplet_params(key: jax.Array, *, num_objects: int, num_views: int, dim: int,
                        model: str = "joint", metric: str = "full", rank: int | None = None,
                        scale: float = 0.1) -> TripletParams:
  """A starting point: Gaussian embeddings of standard deviation ``scale``, identity metrics.

  Args:
    key: a ``jax.random`` key.
    num_objects, num_views, dim: ``N``, ``T`` and the embedding dimension ``d``.
    model: one of :data:`TRIPLET_MODELS`.
    metric: one of :data:`TRIPLET_METRICS` (joint model only).
    rank: the factors' rank ``r`` (full metrics; default ``dim``): ``L_t`` starts as the first
      ``r`` columns of the identity.
    scale: the embedding's initial standard deviation, > 0.

  Returns:
    :class:`TripletParams`.

  Example:
    >>> p = init_triplet_params(jax.random.key(0), num_objects=5, num_views=2, dim=3)
    >>> p.embedding.shape, p.factors.shape
    ((5, 3), (2, 3, 3))
  """
  _check_choice("model", model, TRIPLET_MODELS)
  _check_choice("metric", metric, TRIPLET_METRICS)
  for name, value in (("num_objects", num_objects), ("num_views", num_views), ("dim", dim)):
    _check_positive_int(name, value)
  rank = dim if rank is None else rank
  _check_positive_int("rank", rank)
  _check_positive_float("scale", scale)
  if model == "joint":
    embedding = scale * core.flat_normal(key, (num_objects, dim))
    if metric == "diagonal":
      factors = jnp.ones((num_views, dim))
    else:
      factors = jnp.broadcast_to(jnp.eye(dim, rank), (num_views, dim, rank))
    return TripletParams(embedding, factors)
  copies = num_views if model == "independent" else 1
  return TripletParams(scale * core.flat_normal(key, (copies, num_objects, dim)), None)


def triplet_objective(params: TripletParams, triplets: ArrayLike, weights: ArrayLike | None = None,
                      *, loss: str = "hinge", reg: float = 0.0,
                      alpha: float = 1.0) -> jax.Array:
  """The training objective: summed triplet losses plus the trace regularizer.

  ``sum_n w_n loss(d_t(i, j), d_t(i, k)) + reg * (||X||_F^2 + sum_t ||L_t||_F^2)``, where
  ``||X||_F^2 = tr(X X^T)`` and ``||L_t||_F^2 = tr(M_t)`` (the paper's norm/trace regularizer
  as we read it, one weight for both terms; for the baselines, the sum of the embeddings'
  squared norms). Since ``X -> c X`` with
  ``L_t -> L_t / c`` leaves every distance unchanged, the regularizer balances the two and
  acts on their product.

  Args:
    params: :class:`TripletParams`.
    triplets: ``(n, 4)`` int rows ``(i, j, k, t)`` (unchecked; see :func:`check_triplets`).
    weights: optional ``(n,)`` weights (default 1).
    loss: one of :data:`TRIPLET_LOSSES`.
    reg: the regularization weight, >= 0.
    alpha: t-STE's degrees of freedom.

  Returns:
    The scalar objective.

  Example:
    >>> p = TripletParams(jnp.array([[[0.0], [1.0], [3.0]]]))
    >>> float(triplet_objective(p, jnp.array([[0, 1, 2, 0]]), reg=0.1))
    1.0
  """
  losses = triplet_loss(*triplet_distances(params.view_embeddings(), triplets), loss,
                        alpha=alpha)
  data = jnp.sum(losses) if weights is None else jnp.sum(jnp.asarray(weights) * losses)
  penalty = sum(jnp.sum(p ** 2) for p in jax.tree.leaves(params))
  return data + reg * penalty


class TripletFit(NamedTuple):
  """What :func:`fit_triplets` returns.

  Attributes:
    params: the learned :class:`TripletParams`.
    objective: the objective at every step, shape ``(steps,)``.
    train_error: the weighted triplet error on the training triplets at the end.
  """

  params: TripletParams
  objective: jax.Array
  train_error: jax.Array


class _TripletModule(nnx.Module):
  """The parameters as an NNX module, so that ``core``'s on-device trainer runs them."""

  def __init__(self, params: TripletParams):
    self.embedding = nnx.Param(params.embedding)
    self.factors = None if params.factors is None else nnx.Param(params.factors)

  def params(self) -> TripletParams:
    return TripletParams(self.embedding[...],
                         None if self.factors is None else self.factors[...])


def fit_triplets(key: jax.Array, triplets: ArrayLike, *, num_objects: int, num_views: int = 1,
                 dim: int = 2, model: str = "joint", loss: str = "hinge",
                 metric: str = "full", rank: int | None = None, reg: float = 1e-3,
                 alpha: float | None = None, learning_rate: float = 0.05, steps: int = 500,
                 init_scale: float = 0.1, weights: ArrayLike | None = None) -> TripletFit:
  """Learns a triplet embedding: the joint model, its baselines, STE or t-STE.

  Minimizes :func:`triplet_objective` by ``steps`` full-batch Adam steps (step size decayed
  from ``learning_rate`` to 1% of it on a cosine schedule) from
  :func:`init_triplet_params`, as one compiled ``lax.scan`` (``core.make_sampler_trainer``, the
  batch being all triplets). ``model`` picks the structure: ``joint`` (shared ``X``, one metric
  per view, the paper's model), ``independent`` (one embedding per view, each fitted to its own
  triplets only) or ``pooled`` (one embedding for every view, views ignored). STE is
  ``model="independent", loss="logistic"`` (or ``pooled`` for one view); t-STE uses
  ``loss="tste"``. The function is pure in ``key``: ``jax.vmap`` over keys trains several
  seeds at once (the checks then run once on the concrete triplets).

  Args:
    key: a ``jax.random`` key (initialization).
    triplets: ``(n, 4)`` integer rows ``(i, j, k, t)`` or ``(n, 3)`` (checked by
      :func:`check_triplets` when concrete).
    num_objects, num_views, dim: ``N``, ``T`` and the embedding dimension ``d``.
    model: one of :data:`TRIPLET_MODELS`.
    loss: one of :data:`TRIPLET_LOSSES`.
    metric: one of :data:`TRIPLET_METRICS` (joint model; ``full`` = ``L_t L_t^T``).
    rank: rank of the factors (default ``dim``).
    reg: weight of the trace regularizer, >= 0.
    alpha: t-STE's degrees of freedom (default ``max(dim - 1, 1)``).
    learning_rate: Adam's step size, > 0.
    steps: the number of full-batch steps.
    init_scale: standard deviation of the initial embedding.
    weights: optional ``(n,)`` non-negative triplet weights (0 masks padding rows, so
      training sets of several sizes share one compiled function).

  Returns:
    :class:`TripletFit`.

  Example:
    >>> data = make_multiview_triplets(jax.random.key(0), shared_coordinate_views(2, 1, 1),
    ...                                num_objects=20, triplets_per_view=200,
    ...                                test_triplets_per_view=100)
    >>> fit = fit_triplets(jax.random.key(1), data.train, num_objects=20, num_views=2, dim=3,
    ...                    reg=0.1, steps=300)
    >>> fit.objective.shape, float(fit.train_error) < 0.05
    ((300,), True)
    >>> float(triplet_error(fit.params.view_embeddings(), data.test)) < 0.3  # held out
    True
  """
  _check_choice("model", model, TRIPLET_MODELS)
  _check_choice("loss", loss, TRIPLET_LOSSES)
  _check_choice("metric", metric, TRIPLET_METRICS)
  _check_positive_int("steps", steps)
  _check_positive_float("learning_rate", learning_rate)
  _check_nonnegative("reg", reg)
  triplets = check_triplets(triplets, num_objects, num_views)
  if weights is None:
    weights = jnp.ones(triplets.shape[0])
  else:
    if jnp.shape(weights) != (triplets.shape[0],):
      raise ValueError(f"weights must have shape ({triplets.shape[0]},) (one per triplet), got "
                       f"weights.shape={jnp.shape(weights)}")
    _check_nonnegative("weights", weights)
  alpha = float(max(dim - 1, 1)) if alpha is None else alpha
  _check_positive_float("alpha", alpha)
  return _fit(key, triplets, jnp.asarray(weights, jnp.float32), jnp.asarray(reg, jnp.float32),
              num_objects=num_objects, num_views=num_views, dim=dim, model=model, loss=loss,
              metric=metric, rank=rank, alpha=float(alpha), learning_rate=float(learning_rate),
              steps=steps, init_scale=float(init_scale))


@functools.partial(jax.jit, static_argnames=("num_objects", "num_views", "dim", "model", "loss",
                                             "metric", "rank", "alpha", "learning_rate",
                                             "steps", "init_scale"))
def _fit(key, triplets, weights, reg, *, num_objects, num_views, dim, model, loss, metric, rank,
         alpha, learning_rate, steps, init_scale) -> TripletFit:
  params = init_triplet_params(key, num_objects=num_objects, num_views=num_views, dim=dim,
                               model=model, metric=metric, rank=rank, scale=init_scale)
  # Cosine decay to 1% of the step size: constant-step Adam keeps oscillating around the
  # non-smooth hinge loss's minimum instead of settling.
  optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, steps, alpha=0.01))
  graphdef, state = core.create_train_state(_TripletModule(params), optimizer, key)
  batch = {"triplets": triplets, "weights": weights}

  def loss_fn(module, batch, rng):
    del rng
    return triplet_objective(module.params(), batch["triplets"], batch["weights"], loss=loss,
                             reg=reg, alpha=alpha), {}

  train = core.make_sampler_trainer(graphdef, loss_fn, optimizer, sample=lambda _: batch,
                                    steps=steps)
  state, metrics = train(state, key)
  learned = nnx.merge(graphdef, state.params, state.model_state).params()
  return TripletFit(learned, metrics["loss"],
                    triplet_error(learned.view_embeddings(), triplets, weights))


def shared_coordinate_views(num_views: int, num_shared: int, num_private: int) -> np.ndarray:
  """Coordinate masks of views that share ``num_shared`` coordinates and own ``num_private``.

  View ``t`` sees coordinates ``0..num_shared-1`` (common to all views) and its own block
  ``num_shared + t * num_private ...``; the space has ``num_shared + num_views * num_private``
  coordinates.

  Args:
    num_views: ``T`` >= 1.
    num_shared, num_private: coordinates per view shared by all views / owned by one (>= 0,
      not both 0).

  Returns:
    A float32 0/1 array ``(T, D)``.

  Example:
    >>> shared_coordinate_views(2, 1, 1).tolist()
    [[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]]
  """
  _check_positive_int("num_views", num_views)
  for name, value in (("num_shared", num_shared), ("num_private", num_private)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
      raise ValueError(f"{name} must be an integer >= 0, got {name}={value!r}")
  if num_shared + num_private == 0:
    raise ValueError("num_shared + num_private must be >= 1, got num_shared=0, num_private=0")
  masks = np.zeros((num_views, num_shared + num_views * num_private), np.float32)
  masks[:, :num_shared] = 1.0
  for t in range(num_views):
    masks[t, num_shared + t * num_private: num_shared + (t + 1) * num_private] = 1.0
  return masks


class MultiviewTriplets(NamedTuple):
  """A synthetic multi-view triplet data set (:func:`make_multiview_triplets`).

  Attributes:
    points: the true points ``(N, D)``.
    view_masks: the coordinates each view sees, ``(T, D)`` 0/1.
    train: training triplets ``(T * m, 4)``, view after view (row ``t * m + s`` is view
      ``t``'s ``s``-th), so the first ``m' <= m`` of every view is a smaller training set.
    test: held-out triplets ``(T * m_test, 4)``, laid out the same way.
  """

  points: jax.Array
  view_masks: jax.Array
  train: jax.Array
  test: jax.Array


def _random_triplets(key: jax.Array, num_objects: int, n: int) -> jax.Array:
  """``n`` uniformly random ordered triples of pairwise distinct objects, ``(n, 3)``."""
  ki, kj, kk = jax.random.split(key, 3)
  i = jax.random.randint(ki, (n,), 0, num_objects)
  j = jax.random.randint(kj, (n,), 0, num_objects - 1)
  j = j + (j >= i)  # skip i
  k = jax.random.randint(kk, (n,), 0, num_objects - 2)
  lo, hi = jnp.minimum(i, j), jnp.maximum(i, j)
  k = k + (k >= lo)
  k = k + (k >= hi)  # skip both, the smaller first
  return jnp.stack([i, j, k], axis=1)


def make_multiview_triplets(key: jax.Array, view_masks: ArrayLike, *, num_objects: int,
                            triplets_per_view: int, test_triplets_per_view: int,
                            noise: float = 0.0) -> MultiviewTriplets:
  """Synthetic multi-view triplets: views are coordinate subsets of one point cloud.

  ``N`` points are drawn from ``N(0, I_D)``; view ``t``'s true distance is
  ``d_t(i, j) = sum_c mask_tc (p_ic - p_jc)^2``, so views that share coordinates share
  structure. Each view gets uniformly random triples of distinct objects, answered by the true
  distance: ``(i, j, k, t)`` means ``j`` was judged closer to ``i``. With ``noise > 0`` the
  answer is "``j``" with probability ``sigmoid((d_t(i, k) - d_t(i, j)) / noise)`` (a logistic
  annotator); with ``noise = 0`` it is always the true one.

  Args:
    key: a ``jax.random`` key.
    view_masks: ``(T, D)`` 0/1 coordinate masks (e.g. :func:`shared_coordinate_views`).
    num_objects: ``N`` >= 3.
    triplets_per_view, test_triplets_per_view: ``m`` and ``m_test``, positive integers.
    noise: the annotator's temperature, >= 0.

  Returns:
    :class:`MultiviewTriplets`.

  Example:
    >>> data = make_multiview_triplets(jax.random.key(0), shared_coordinate_views(3, 2, 1),
    ...                                num_objects=10, triplets_per_view=4,
    ...                                test_triplets_per_view=2)
    >>> data.points.shape, data.train.shape, data.test.shape
    ((10, 5), (12, 4), (6, 4))
  """
  _check_positive_int("num_objects", num_objects)
  if num_objects < 3:
    raise ValueError(f"num_objects must be >= 3 (a triplet has three distinct objects), got "
                     f"num_objects={num_objects}")
  _check_positive_int("triplets_per_view", triplets_per_view)
  _check_positive_int("test_triplets_per_view", test_triplets_per_view)
  _check_nonnegative("noise", noise)
  masks = jnp.asarray(view_masks, jnp.float32)
  if masks.ndim != 2:
    raise ValueError(f"view_masks must have shape (T, D), got view_masks.shape={masks.shape}")
  num_views, dims = masks.shape
  kp, kt, kn = jax.random.split(key, 3)
  points = core.flat_normal(kp, (num_objects, dims))
  m = triplets_per_view + test_triplets_per_view
  objects = _random_triplets(kt, num_objects, num_views * m).reshape(num_views, m, 3)
  views = jnp.broadcast_to(jnp.arange(num_views)[:, None], (num_views, m))
  diff = lambda a, b: points[objects[..., a]] - points[objects[..., b]]  # (T, m, D)
  dist = lambda a, b: jnp.einsum("tmd,td->tm", diff(a, b) ** 2, masks)
  margin = dist(0, 2) - dist(0, 1)
  if noise > 0:
    keep = jax.random.uniform(kn, margin.shape) < jax.nn.sigmoid(margin / noise)
  else:
    keep = margin >= 0
  ordered = jnp.where(keep[..., None], objects, objects[..., jnp.array([0, 2, 1])])
  rows = jnp.concatenate([ordered, views[..., None]], axis=-1).astype(jnp.int32)
  train = rows[:, :triplets_per_view].reshape(-1, 4)
  test = rows[:, triplets_per_view:].reshape(-1, 4)
  return MultiviewTriplets(points, masks, train, test)
