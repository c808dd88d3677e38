"""The Gaussian attention model and TransGaussian knowledge-base embedding.

Zhang, Winn, Tomioka, "Gaussian Attention Model and Its Application to Knowledge Base
Embedding and Question Answering" (2016, arXiv 1611.02266).

Content-based attention with a Gaussian kernel, ``a(e) ~ exp(-1/2 (mu_e - m)^T Sigma^{-1}
(mu_e - m))``, whose learned covariance lets the focus range from one memory item to a broad
set. Used as the scoring function of a knowledge-base embedding (TransGaussian), it scores a
triple ``(s, r, o)`` by ``log N(mu_o; mu_s + delta_r, Sigma_r)``; a path ``s -> r1 -> r2`` adds
the means and the covariances (the convolution of the relations' Gaussians), and a
conjunction of constraints on one answer multiplies their Gaussians (precisions add).

The module provides the kernels (:func:`gaussian_attention`, :func:`trans_gaussian_score`,
:func:`trans_e_score`, :func:`compose_path`, :func:`gaussian_conjunction`,
:func:`conjunction_log_score`), the two embeddings as NNX modules (:class:`TransGaussian` and
the TransE baseline :class:`TransE`, both answering the same padded queries), margin-ranking
training with negative sampling on the core sampler trainer (``vmap`` over seeds), filtered
ranking of every query against every entity in one compiled call (:func:`filtered_ranks`,
:func:`ranking_metrics`), and data: a synthetic compositional knowledge base in the shape of
the paper's WorldCup2014 data (players, clubs, countries, positions; the data set itself is
not public), a WordNet 3.0 reader (Debian's ``wordnet-base``; the official WN18 splits are not
available offline), a train/test split that holds out a fact together with its inverse, and
generators of single-relation, path and conjunctive queries.

A query is padded to one shape so that every kind shares one compiled function: ``anchors``
``(n, C)`` (``-1``: no such conjunct) and ``relations`` ``(n, C, L)`` (``-1``: the path is
shorter). Single-relation queries are ``C = L = 1``, two-hop paths ``C = 1, L = 2``,
conjunctions of two relations ``C = 2, L = 1``.

Details of the paper that could not be verified offline (its tables and equations were not
retrievable): the covariance is diagonal and parametrized here by its logarithm (the paper
makes it positive by a link of the same kind); the margin, regularization and negative
sampling are the standard TransE recipe, not necessarily the paper's.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.typing import ArrayLike

from tomioka_jax import core

__all__ = [
    "KnowledgeBase",
    "KBQueries",
    "TransE",
    "TransGaussian",
    "compose_path",
    "conjunction_log_score",
    "conjunctive_queries",
    "filtered_rank",
    "filtered_ranks",
    "gaussian_attention",
    "gaussian_conjunction",
    "kb_margin_ranking_loss",
    "load_wordnet_kb",
    "make_kb_trainer",
    "path_queries",
    "ranking_metrics",
    "single_relation_queries",
    "split_kb",
    "synthetic_soccer_kb",
    "train_kb_embedding",
    "trans_e_score",
    "trans_gaussian_score",
]

# ------------------------------------------------------------------------------ argument checks


def _check_positive(name: str, value: ArrayLike) -> None:
  """A diagonal covariance must be positive (checked when concrete)."""
  if core.is_concrete(value):
    v = np.asarray(value)
    if v.size and not np.all(v > 0):
      raise ValueError(f"{name} must be positive (the diagonal of a covariance), got minimum "
                       f"{np.nanmin(v) if not np.all(np.isnan(v)) else 'nan'}; allowed: every "
                       f"entry > 0")


def _check_last_axis(**arrays: jax.Array) -> int:
  """All arrays share their last (embedding) axis; returns its length."""
  dims = {name: (jnp.shape(a)[-1] if jnp.ndim(a) else None) for name, a in arrays.items()}
  values = set(dims.values())
  if None in values or len(values) != 1:
    shapes = {name: jnp.shape(a) for name, a in arrays.items()}
    raise ValueError(f"the arguments must share one embedding (last) axis, got shapes {shapes}")
  return values.pop()


def _check_indices(name: str, value: ArrayLike, upper: int, *, padded: bool) -> None:
  """Indices in ``[0, upper)`` (or ``-1`` where ``padded``), checked when concrete."""
  if not core.is_concrete(value):
    return
  v = np.asarray(value)
  if not np.issubdtype(v.dtype, np.integer):
    raise ValueError(f"{name} must hold integer indices, got dtype {v.dtype}")
  low = -1 if padded else 0
  bad = (v < low) | (v >= upper)
  if bad.any():
    allowed = f"-1 (padding) or 0..{upper - 1}" if padded else f"0..{upper - 1}"
    raise ValueError(f"{name} holds index {int(v[bad].flat[0])} out of range; allowed: {allowed}")


# ---------------------------------------------------------------------------------- the kernels


def gaussian_attention(memory: ArrayLike, mean: ArrayLike, covariance: ArrayLike) -> jax.Array:
  """Gaussian attention weights over memory items (the paper's attention model).

  .. math::  a_e = \\frac{\\exp(-\\tfrac12 (\\mu_e - m)^\\top \\Sigma^{-1} (\\mu_e - m))}
     {\\sum_{e'} \\exp(-\\tfrac12 (\\mu_{e'} - m)^\\top \\Sigma^{-1} (\\mu_{e'} - m))}

  A small covariance attends sharply to the item nearest ``m``; a large one spreads the
  attention. The normalizer of the Gaussian cancels in the ratio.

  Args:
    memory: ``(E, d)`` memory vectors ``mu_e``.
    mean: ``(d,)`` the attention's centre ``m``.
    covariance: ``(d,)`` a diagonal covariance (positive) or ``(d, d)`` a symmetric
      positive-definite one (both checked when concrete).

  Returns:
    ``(E,)`` weights that sum to one.

  Example:
    >>> w = gaussian_attention(jnp.array([[0.0], [1.0], [3.0]]), jnp.array([0.2]),
    ...                        jnp.array([0.01]))
    >>> [round(float(x), 3) for x in w]
    [1.0, 0.0, 0.0]
  """
  memory, mean, covariance = jnp.asarray(memory), jnp.asarray(mean), jnp.asarray(covariance)
  if memory.ndim != 2 or mean.shape != memory.shape[1:]:
    raise ValueError(f"memory must be (E, d) and mean (d,), got memory {memory.shape} and mean "
                     f"{mean.shape}")
  d = memory.shape[1]
  diff = memory - mean[None, :]
  if covariance.shape == (d,):
    _check_positive("covariance", covariance)
    quad = jnp.sum(jnp.square(diff) / covariance[None, :], axis=-1)
  elif covariance.shape == (d, d):
    if core.is_concrete(covariance):
      c = np.asarray(covariance, np.float64)
      eig = np.linalg.eigvalsh(0.5 * (c + c.T))
      if not np.allclose(c, c.T, rtol=1e-5, atol=1e-8) or eig.min() <= 0:
        raise ValueError(f"covariance must be symmetric positive definite, got smallest "
                         f"eigenvalue {eig.min():.3g} (symmetric: {np.allclose(c, c.T)}); "
                         f"allowed: a (d, d) SPD matrix or a positive (d,) diagonal")
    chol = jnp.linalg.cholesky(covariance)
    white = jax.scipy.linalg.solve_triangular(chol, diff.T, lower=True)
    quad = jnp.sum(jnp.square(white), axis=0)
  else:
    raise ValueError(f"covariance must have shape ({d},) (diagonal) or ({d}, {d}), got "
                     f"{covariance.shape}")
  return jax.nn.softmax(-0.5 * quad)


def trans_gaussian_score(subject_mean: ArrayLike, relation_offset: ArrayLike,
                         relation_variance: ArrayLike, object_mean: ArrayLike) -> jax.Array:
  """The TransGaussian score of a triple: ``log N(mu_o; mu_s + delta_r, Sigma_r)``.

  .. math::  -\\tfrac12 \\sum_k \\Big(\\log(2\\pi\\sigma_{r,k}^2)
     + \\frac{(\\mu_{o,k} - \\mu_{s,k} - \\delta_{r,k})^2}{\\sigma_{r,k}^2}\\Big)

  with a diagonal covariance ``Sigma_r = diag(sigma_r^2)``. Broadcasts over leading axes.

  Args:
    subject_mean, relation_offset, object_mean: ``(..., d)`` embeddings.
    relation_variance: ``(..., d)`` the diagonal of ``Sigma_r``, positive (checked when
      concrete).

  Returns:
    The log-density, shape the broadcast of the leading axes.

  Example:
    >>> float(trans_gaussian_score(jnp.zeros(2), jnp.ones(2), jnp.ones(2), jnp.ones(2)))
    -1.837...
  """
  _check_last_axis(subject_mean=subject_mean, relation_offset=relation_offset,
                   relation_variance=relation_variance, object_mean=object_mean)
  _check_positive("relation_variance", relation_variance)
  mean = jnp.asarray(subject_mean) + jnp.asarray(relation_offset)
  return core.diag_gaussian_log_prob(object_mean, mean, jnp.log(jnp.asarray(relation_variance)))


def trans_e_score(subject_mean: ArrayLike, relation_offset: ArrayLike,
                  object_mean: ArrayLike) -> jax.Array:
  """The TransE score (Bordes et al. 2013): ``-||mu_s + delta_r - mu_o||_2``, a fixed scale.

  Example:
    >>> float(trans_e_score(jnp.zeros(2), jnp.array([3.0, 0.0]), jnp.array([0.0, 4.0])))
    -5.0
  """
  _check_last_axis(subject_mean=subject_mean, relation_offset=relation_offset,
                   object_mean=object_mean)
  diff = jnp.asarray(subject_mean) + jnp.asarray(relation_offset) - jnp.asarray(object_mean)
  return -jnp.sqrt(jnp.sum(jnp.square(diff), axis=-1))


def compose_path(anchor_mean: ArrayLike, offsets: ArrayLike, variances: ArrayLike,
                 mask: ArrayLike | None = None) -> tuple[jax.Array, jax.Array]:
  """The Gaussian of a path ``anchor -> r_1 -> ... -> r_L``: means and covariances add.

  .. math::  m = \\mu_a + \\sum_l \\delta_{r_l}, \\qquad \\Sigma = \\sum_l \\Sigma_{r_l}

  Following ``r_1`` from the anchor gives ``N(mu_a + delta_1, Sigma_1)``; following ``r_2``
  from a point drawn from it adds an independent ``N(delta_2, Sigma_2)``, and the sum of
  independent Gaussians is Gaussian with summed means and covariances (the convolution).

  Args:
    anchor_mean: ``(..., d)``.
    offsets, variances: ``(..., L, d)`` the relations' offsets and diagonal covariances
      (positive, checked when concrete).
    mask: optional ``(..., L)`` 0/1, the steps that exist (paths shorter than ``L``).

  Returns:
    ``(mean, variance)``, each ``(..., d)``.

  Example:
    >>> m, v = compose_path(jnp.zeros(1), jnp.array([[1.0], [2.0]]), jnp.array([[0.5], [0.25]]))
    >>> float(m[0]), float(v[0])
    (3.0, 0.75)
  """
  _check_last_axis(anchor_mean=anchor_mean, offsets=offsets, variances=variances)
  _check_positive("variances", variances)
  offsets, variances = jnp.asarray(offsets), jnp.asarray(variances)
  if offsets.shape != variances.shape or offsets.ndim < 2:
    raise ValueError(f"offsets and variances must share one (..., L, d) shape, got "
                     f"{offsets.shape} and {variances.shape}")
  if mask is not None:
    mask = jnp.asarray(mask, offsets.dtype)
    if mask.shape != offsets.shape[:-1]:
      raise ValueError(f"mask must have shape {offsets.shape[:-1]}, got {mask.shape}")
    offsets, variances = offsets * mask[..., None], variances * mask[..., None]
  return _compose(jnp.asarray(anchor_mean), offsets, variances)


def _compose(anchor_mean: jax.Array, offsets: jax.Array, variances: jax.Array
             ) -> tuple[jax.Array, jax.Array]:
  """:func:`compose_path` on masked (zeroed) steps, unchecked (for traced parameters)."""
  return anchor_mean + jnp.sum(offsets, axis=-2), jnp.sum(variances, axis=-2)


def gaussian_conjunction(means: ArrayLike, variances: ArrayLike, mask: ArrayLike | None = None
                         ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The product of the constraints' Gaussians: mean, variance and log-normalizer.

  .. math::  \\prod_c N(x; m_c, \\Sigma_c) = Z \\, N(x; m, \\Sigma), \\quad
     \\Sigma^{-1} = \\sum_c \\Sigma_c^{-1}, \\quad m = \\Sigma \\sum_c \\Sigma_c^{-1} m_c,

  and ``log Z = sum_c log N(m; m_c, Sigma_c) - log N(m; m, Sigma)`` (the identity at
  ``x = m``); for two factors ``Z = N(m_1; m_2, Sigma_1 + Sigma_2)``. Mean and variance come
  from :func:`tomioka_jax.core.product_of_gaussians`.

  Args:
    means, variances: ``(..., C, d)`` the conjuncts' Gaussians (variances positive).
    mask: optional ``(..., C)`` 0/1, the conjuncts that exist (at least one per query).

  Returns:
    ``(mean, variance, log_normalizer)``: ``(..., d)``, ``(..., d)``, ``(...)``.

  Example:
    >>> m, v, log_z = gaussian_conjunction(jnp.array([[0.0], [2.0]]), jnp.array([[1.0], [1.0]]))
    >>> float(m[0]), float(v[0]), round(float(log_z), 4)  # Z = N(0; 2, 2)
    (1.0, 0.5, -2.2655)
  """
  means, variances = jnp.asarray(means), jnp.asarray(variances)
  if means.shape != variances.shape or means.ndim < 2:
    raise ValueError(f"means and variances must share one (..., C, d) shape, got {means.shape} "
                     f"and {variances.shape}")
  _check_positive("variances", variances)
  mean, log_var, log_z = _conjunction(means, jnp.log(variances), mask)
  return mean, jnp.exp(log_var), log_z


def _conjunction(means: jax.Array, log_var: jax.Array, mask: ArrayLike | None
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """:func:`gaussian_conjunction` on log-variances, unchecked (for traced parameters)."""
  mean, prod_log_var = core.product_of_gaussians(means, log_var, axis=-2, mask=mask)
  each = core.diag_gaussian_log_prob(mean[..., None, :], means, log_var)
  if mask is not None:
    each = each * jnp.asarray(mask, each.dtype)
  log_z = jnp.sum(each, axis=-1) - core.diag_gaussian_log_prob(mean, mean, prod_log_var)
  return mean, prod_log_var, log_z


def conjunction_log_score(x: ArrayLike, means: ArrayLike, variances: ArrayLike,
                          mask: ArrayLike | None = None) -> jax.Array:
  """Log of the product of the conjuncts' Gaussian attentions at ``x``.

  .. math::  \\sum_c \\log N(x; m_c, \\Sigma_c) = \\log Z + \\log N(x; m, \\Sigma)

  computed through :func:`gaussian_conjunction` (one Gaussian per query, so scoring many
  candidates costs one density each).

  Args:
    x: ``(..., d)`` candidates (broadcast against the query's leading axes).
    means, variances, mask: as in :func:`gaussian_conjunction`.

  Example:
    >>> s = conjunction_log_score(jnp.ones(1), jnp.array([[0.0], [2.0]]),
    ...                           jnp.array([[1.0], [1.0]]))
    >>> round(float(s), 4)  # 2 log N(1; 0, 1)
    -2.8379
  """
  mean, variance, log_z = gaussian_conjunction(means, variances, mask)
  return log_z + core.diag_gaussian_log_prob(x, mean, jnp.log(variance))


# ------------------------------------------------------------------------------------- queries


class KnowledgeBase(NamedTuple):
  """A knowledge base: triples over indexed entities and relations.

  Attributes:
    triples: ``(n, 3)`` int32 rows ``(subject, relation, object)``.
    num_entities, num_relations: the index ranges.
    inverse: ``(num_relations,)`` int32, the inverse relation of each (``-1``: none); a fact and
      its inverse are both in ``triples``.
    entity_names, relation_names: tuples of names.
  """

  triples: np.ndarray
  num_entities: int
  num_relations: int
  inverse: np.ndarray
  entity_names: tuple[str, ...]
  relation_names: tuple[str, ...]


class KBQueries(NamedTuple):
  """Queries with one answer per row, padded to one shape (see the module docstring).

  Attributes:
    anchors: ``(n, C)`` int32 anchor entities, ``-1`` for an absent conjunct (the first
      conjunct always exists).
    relations: ``(n, C, L)`` int32 relation paths, ``-1`` after a path's end.
    answers: ``(n,)`` int32, the answer to rank.
    known: ``(n, K)`` int32, every known answer of the row's query (train and test), ``-1``
      padded; filtered ranking ignores them (except ``answers`` itself).
  """

  anchors: np.ndarray
  relations: np.ndarray
  answers: np.ndarray
  known: np.ndarray


def _check_queries(queries: KBQueries, num_entities: int, num_relations: int) -> None:
  anchors, relations, answers, known = (np.asarray(a) for a in queries)
  n = answers.shape[0] if answers.ndim == 1 else None
  if (n is None or anchors.ndim != 2 or anchors.shape[0] != n or relations.ndim != 3
      or relations.shape[:2] != anchors.shape or known.ndim != 2 or known.shape[0] != n):
    raise ValueError(f"queries must have anchors (n, C), relations (n, C, L), answers (n,) and "
                     f"known (n, K), got shapes {anchors.shape}, {relations.shape}, "
                     f"{answers.shape}, {known.shape}")
  _check_indices("queries.anchors", anchors, num_entities, padded=True)
  _check_indices("queries.relations", relations, num_relations, padded=True)
  _check_indices("queries.answers", answers, num_entities, padded=False)
  _check_indices("queries.known", known, num_entities, padded=True)
  if n and (np.any(anchors[:, 0] < 0) or np.any(relations[:, :, 0][anchors >= 0] < 0)):
    raise ValueError("queries must have a first conjunct in every row and a first relation in "
                     "every conjunct that has an anchor; got a row without")


def _pad_queries(q: KBQueries, conjuncts: int, length: int, known: int | None = None
                 ) -> KBQueries:
  n, c = q.anchors.shape
  ell = q.relations.shape[2]
  k = q.known.shape[1] if known is None else known
  anchors = np.full((n, conjuncts), -1, np.int32)
  anchors[:, :c] = q.anchors
  relations = np.full((n, conjuncts, length), -1, np.int32)
  relations[:, :c, :ell] = q.relations
  kn = np.full((n, k), -1, np.int32)
  kn[:, :q.known.shape[1]] = q.known[:, :k]
  return KBQueries(anchors, relations, np.asarray(q.answers, np.int32), kn)


def _adjacency(triples: np.ndarray) -> dict[tuple[int, int], set[int]]:
  adj: dict[tuple[int, int], set[int]] = {}
  for s, r, o in np.asarray(triples).tolist():
    adj.setdefault((s, r), set()).add(o)
  return adj


def _rows(keys: list[tuple], answers_train: list[set[int]], answers_all: list[set[int]],
          conjuncts: int, length: int) -> tuple[KBQueries, KBQueries]:
  """Train rows (answers in the training graph) and test rows (the others) of query keys.

  A key is a tuple of conjuncts ``(anchor, (r_1, ..., r_l))``.
  """
  out = []
  for test in (False, True):
    anchors, relations, answers, known = [], [], [], []
    for key, a_train, a_all in zip(keys, answers_train, answers_all):
      chosen = sorted(a_all - a_train) if test else sorted(a_train)
      if not chosen:
        continue
      row_a = [-1] * conjuncts
      row_r = [[-1] * length for _ in range(conjuncts)]
      for c, (anchor, path) in enumerate(key):
        row_a[c] = anchor
        row_r[c][:len(path)] = list(path)
      ks = sorted(a_all)
      for o in chosen:
        anchors.append(row_a)
        relations.append(row_r)
        answers.append(o)
        known.append(ks)
    width = max((len(k) for k in known), default=0)
    kn = np.full((len(known), max(width, 1)), -1, np.int32)
    for i, k in enumerate(known):
      kn[i, :len(k)] = k
    out.append(KBQueries(np.asarray(anchors, np.int32).reshape(-1, conjuncts),
                         np.asarray(relations, np.int32).reshape(-1, conjuncts, length),
                         np.asarray(answers, np.int32), kn))
  return out[0], out[1]


def single_relation_queries(train_triples: ArrayLike, test_triples: ArrayLike
                            ) -> tuple[KBQueries, KBQueries]:
  """Queries ``(s, r, ?)`` from triples: training rows and test rows, filters from both.

  Args:
    train_triples, test_triples: ``(n, 3)`` int arrays (from :func:`split_kb`).

  Returns:
    ``(train, test)`` :class:`KBQueries` with ``C = L = 1``; a test row's ``known`` lists every
    object of its ``(s, r)`` in either split.

  Example:
    >>> train, test = single_relation_queries(np.array([[0, 0, 1]]), np.array([[0, 0, 2]]))
    >>> test.answers.tolist(), test.known.tolist()
    ([2], [[1, 2]])
  """
  train_triples, test_triples = np.asarray(train_triples), np.asarray(test_triples)
  for name, t in (("train_triples", train_triples), ("test_triples", test_triples)):
    if t.ndim != 2 or t.shape[1] != 3:
      raise ValueError(f"{name} must have shape (n, 3), got {t.shape}")
  adj_train = _adjacency(train_triples)
  adj_all = _adjacency(np.concatenate([train_triples, test_triples]))
  keys = sorted(adj_all)
  return _rows([((s, (r,)),) for s, r in keys], [adj_train.get(k, set()) for k in keys],
               [adj_all[k] for k in keys], 1, 1)


def _follow(adj: dict, starts: set[int], path: Sequence[int]) -> set[int]:
  current = set(starts)
  for r in path:
    current = set().union(*(adj.get((e, r), set()) for e in current)) if current else set()
  return current


def path_queries(kb: KnowledgeBase, train_triples: ArrayLike, *, length: int = 2,
                 max_queries: int = 2000, max_answers: int = 100, seed: int = 0
                 ) -> tuple[KBQueries, KBQueries]:
  """Path queries ``a -> r_1 -> ... -> r_L -> ?`` with answers from the training and full graphs.

  Query keys are the ``(anchor, path)`` pairs reachable in the full knowledge base, without a
  step that undoes the previous one (``r_{l+1} = inverse(r_l)``), at most ``max_queries`` of
  them drawn with ``seed``, and only those with at most ``max_answers`` answers (broad queries
  would dominate the filters). Training rows are the answers reachable in the training graph
  (compositional training, Guu et al. 2015); test rows are the answers that need a held-out
  fact.

  Args:
    kb: the full knowledge base.
    train_triples: the training split's triples.
    length: path length (>= 1).
    max_queries, max_answers: positive integers, the sample and the breadth cap.
    seed: the sample's seed.

  Returns:
    ``(train, test)`` :class:`KBQueries` with ``C = 1``.

  Example:
    >>> kb = synthetic_soccer_kb(0, num_players=40)
    >>> train, test = path_queries(kb, split_kb(kb, 0.2)[0], max_queries=50)
    >>> train.relations.shape[1:]
    (1, 2)
  """
  if length < 1:
    raise ValueError(f"length must be >= 1, got length={length}")
  for name, v in (("max_queries", max_queries), ("max_answers", max_answers)):
    if v < 1:
      raise ValueError(f"{name} must be a positive integer, got {name}={v}")
  adj_all = _adjacency(kb.triples)
  adj_train = _adjacency(np.asarray(train_triples))
  out_rel: dict[int, set[int]] = {}
  for s, r in adj_all:
    out_rel.setdefault(s, set()).add(r)
  keys = set()
  for (s, r1) in sorted(adj_all):
    frontier = [((r1,), adj_all[(s, r1)])]
    for _ in range(length - 1):
      nxt = []
      for path, ends in frontier:
        rels = set().union(*(out_rel.get(e, set()) for e in ends))
        for r in sorted(rels):
          if r != kb.inverse[path[-1]]:
            nxt.append((path + (r,), _follow(adj_all, ends, (r,))))
      frontier = nxt
    keys.update((s, path) for path, _ in frontier)
  keys = sorted(keys)
  rng = np.random.default_rng(seed)
  rng.shuffle(keys)
  chosen, a_train, a_all = [], [], []
  for s, path in keys:
    full = _follow(adj_all, {s}, path)
    if len(full) > max_answers or not full:
      continue
    chosen.append(((s, path),))
    a_all.append(full)
    a_train.append(_follow(adj_train, {s}, path))
    if len(chosen) == max_queries:
      break
  return _rows(chosen, a_train, a_all, 1, length)


def conjunctive_queries(kb: KnowledgeBase, train_triples: ArrayLike, *,
                        max_queries: int = 2000, max_answers: int = 100, seed: int = 0
                        ) -> tuple[KBQueries, KBQueries]:
  """Conjunctions of two single-relation constraints on one answer: ``(a_1, r_1) and (a_2, r_2)``.

  Drawn by picking an entity with two distinct incoming facts in the full knowledge base and
  asking for every entity that satisfies both (the intersection of the two answer sets); at
  most ``max_queries`` distinct queries with at most ``max_answers`` answers. Training rows:
  the answers that satisfy both constraints in the training graph; test rows: the others.

  Returns:
    ``(train, test)`` :class:`KBQueries` with ``C = 2, L = 1``.

  Example:
    >>> kb = synthetic_soccer_kb(0, num_players=40)
    >>> train, test = conjunctive_queries(kb, split_kb(kb, 0.2)[0], max_queries=50)
    >>> test.anchors.shape[1], bool((test.anchors >= 0).all())
    (2, True)
  """
  for name, v in (("max_queries", max_queries), ("max_answers", max_answers)):
    if v < 1:
      raise ValueError(f"{name} must be a positive integer, got {name}={v}")
  adj_all = _adjacency(kb.triples)
  adj_train = _adjacency(np.asarray(train_triples))
  incoming: dict[int, list[tuple[int, int]]] = {}
  for s, r, o in np.asarray(kb.triples).tolist():
    incoming.setdefault(o, []).append((s, r))
  targets = sorted(o for o, ins in incoming.items() if len(ins) >= 2)
  rng = np.random.default_rng(seed)
  keys, a_train, a_all = [], [], []
  seen = set()
  for _ in range(20 * max_queries):
    if len(keys) == max_queries or not targets:
      break
    o = targets[rng.integers(len(targets))]
    i, j = sorted(rng.choice(len(incoming[o]), 2, replace=False).tolist())
    key = tuple(sorted((incoming[o][i], incoming[o][j])))
    if key in seen:
      continue
    seen.add(key)
    (s1, r1), (s2, r2) = key
    full = adj_all[(s1, r1)] & adj_all[(s2, r2)]
    if len(full) > max_answers:
      continue
    keys.append(((s1, (r1,)), (s2, (r2,))))
    a_all.append(full)
    a_train.append(adj_train.get((s1, r1), set()) & adj_train.get((s2, r2), set()))
  return _rows(keys, a_train, a_all, 2, 1)


# ------------------------------------------------------------------------------------------ data


def split_kb(kb: KnowledgeBase, test_fraction: float, seed: int = 0, *,
             keep_entities: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """Random train/test split of the facts; a held-out fact's inverse is held out with it.

  Holding out both directions keeps the test from being answered by the inverse triple alone
  (the leak of the original WN18 split). With ``keep_entities`` a fact is held out only if
  both its entities keep another training fact, so that every test entity has an embedding
  trained on something (a WordNet leaf with one hypernym would otherwise be unknowable); the
  facts are visited in random order and the test set stops at ``test_fraction`` of them, or
  is smaller when too few facts can be held out.

  Args:
    kb: the knowledge base.
    test_fraction: in ``(0, 1)``, the fraction of facts (a fact and its inverse count once).
    seed: the split's seed.
    keep_entities: keep every entity in the training graph (see above).

  Returns:
    ``(train_triples, test_triples)``, ``(n, 3)`` int32 arrays.

  Example:
    >>> kb = synthetic_soccer_kb(0, num_players=40)
    >>> train, test = split_kb(kb, 0.1)
    >>> len(train) + len(test) == len(kb.triples)
    True
  """
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"test_fraction must be in (0, 1), got test_fraction={test_fraction}")
  t = np.asarray(kb.triples)
  inverse = np.asarray(kb.inverse)
  inv_r = np.where(inverse[t[:, 1]] >= 0, inverse[t[:, 1]], t[:, 1])
  # A fact's canonical form: the direction with the smaller relation index.
  forward = np.where((t[:, 1] <= inv_r)[:, None], t, np.stack([t[:, 2], inv_r, t[:, 0]], 1))
  facts, fact_of = np.unique(forward, axis=0, return_inverse=True)
  rng = np.random.default_rng(seed)
  target = int(round(test_fraction * len(facts)))
  held = np.zeros(len(facts), bool)
  degree = np.bincount(facts[:, [0, 2]].ravel(), minlength=kb.num_entities)
  for i in rng.permutation(len(facts)):
    if held.sum() == target:
      break
    s, o = facts[i, 0], facts[i, 2]
    if keep_entities and (degree[s] <= 1 + (s == o) or degree[o] <= 1 + (s == o)):
      continue
    held[i] = True
    degree[s] -= 1
    degree[o] -= 1
  test = held[np.ravel(fact_of)]
  return t[~test].astype(np.int32), t[test].astype(np.int32)


SOCCER_RELATIONS = ("plays_for_country", "country_has_player", "plays_in_club",
                    "club_has_player", "plays_position", "position_has_player",
                    "club_in_country", "country_has_club")


def synthetic_soccer_kb(seed: int = 0, *, num_players: int = 300, num_countries: int = 8,
                        clubs_per_country: int = 3, num_positions: int = 4,
                        home_league: float = 0.7) -> KnowledgeBase:
  """A synthetic compositional knowledge base shaped like the paper's WorldCup2014 data.

  Entities fall into latent groups (countries, their clubs, positions, players); every
  relation maps a group to a group, so paths and conjunctions have well-defined answers.
  Each player has a country, a position (uniform) and a club, drawn from the clubs of the
  player's own country with probability ``home_league`` (else from all clubs); each club lies
  in one country. Eight relations, four facts and their inverses (``plays_for_country`` /
  ``country_has_player``, ``plays_in_club`` / ``club_has_player``, ``plays_position`` /
  ``position_has_player``, ``club_in_country`` / ``country_has_club``). So the two-hop path
  ``plays_in_club -> club_in_country`` (the player's league) predicts the held-out
  ``plays_for_country`` with probability about ``home_league``, and "players of country X at
  position Y" is a conjunction. The paper's data set is not public; this stand-in is ours.

  Args:
    seed: NumPy seed.
    num_players, num_countries, clubs_per_country, num_positions: positive sizes.
    home_league: in ``[0, 1]``.

  Returns:
    A :class:`KnowledgeBase` (entities: countries, clubs, positions, then players).

  Example:
    >>> kb = synthetic_soccer_kb(0, num_players=10, num_countries=2, clubs_per_country=2)
    >>> kb.num_entities, kb.num_relations, len(kb.triples)
    (20, 8, 68)
  """
  for name, v in (("num_players", num_players), ("num_countries", num_countries),
                  ("clubs_per_country", clubs_per_country), ("num_positions", num_positions)):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
      raise ValueError(f"{name} must be a positive integer, got {name}={v!r}")
  if not 0.0 <= home_league <= 1.0:
    raise ValueError(f"home_league must be in [0, 1], got home_league={home_league}")
  rng = np.random.default_rng(seed)
  n_clubs = num_countries * clubs_per_country
  country0, club0, pos0 = 0, num_countries, num_countries + n_clubs
  player0 = pos0 + num_positions
  facts = []  # (subject, forward relation, object); forward relations 0, 2, 4, 6
  club_country = np.arange(n_clubs) // clubs_per_country
  for c in range(n_clubs):
    facts.append((club0 + c, 6, country0 + club_country[c]))
  for p in range(num_players):
    country = rng.integers(num_countries)
    if rng.random() < home_league:
      club = country * clubs_per_country + rng.integers(clubs_per_country)
    else:
      club = rng.integers(n_clubs)
    facts += [(player0 + p, 0, country0 + country), (player0 + p, 2, club0 + club),
              (player0 + p, 4, pos0 + rng.integers(num_positions))]
  facts = np.asarray(facts, np.int64)
  inverse = np.array([1, 0, 3, 2, 5, 4, 7, 6], np.int32)
  back = np.stack([facts[:, 2], inverse[facts[:, 1]], facts[:, 0]], 1)
  names = ([f"country_{i}" for i in range(num_countries)] +
           [f"club_{i}_of_country_{club_country[i]}" for i in range(n_clubs)] +
           [f"position_{i}" for i in range(num_positions)] +
           [f"player_{i}" for i in range(num_players)])
  return KnowledgeBase(np.concatenate([facts, back]).astype(np.int32), len(names), 8, inverse,
                       tuple(names), SOCCER_RELATIONS)


WORDNET_POINTERS = (("@", "~", "hypernym", "hyponym"),
                    ("@i", "~i", "instance_hypernym", "instance_hyponym"),
                    ("#p", "%p", "part_holonym", "part_meronym"),
                    ("#m", "%m", "member_holonym", "member_meronym"),
                    ("#s", "%s", "substance_holonym", "substance_meronym"))


def load_wordnet_kb(path: str | os.PathLike = "/usr/share/wordnet", *,
                    lexicographer_files: Sequence[int] | None = None,
                    pointers: Sequence[tuple[str, str, str, str]] = WORDNET_POINTERS
                    ) -> KnowledgeBase:
  """WordNet 3.0's noun synsets and their pointers as a knowledge base.

  Reads ``data.noun`` of a WordNet 3.0 database (Debian's ``wordnet-base`` installs it under
  ``/usr/share/wordnet``). Each line is a synset: its offset, lexicographer file number, words,
  and pointers ``(symbol, target offset, part of speech, source/target)``. For each pair in
  ``pointers`` (forward symbol, inverse symbol, their relation names) the forward noun-to-noun
  pointers become facts and their inverses are added, so the knowledge base holds both
  directions of every fact exactly once. ``lexicographer_files`` keeps the synsets of those
  files (e.g. ``(13,)``, noun.food, about 2,600 synsets: a subset sized for a CPU) and the
  pointers among them; synsets without a kept pointer are dropped. The WN18 benchmark's
  official splits are not available offline; use :func:`split_kb`.

  Args:
    path: the directory holding ``data.noun``.
    lexicographer_files: lexicographer file numbers to keep (``None``: all nouns).
    pointers: ``(forward, inverse, forward name, inverse name)`` tuples.

  Returns:
    A :class:`KnowledgeBase`; entity names are ``word.offset``.

  Raises:
    FileNotFoundError: no ``data.noun`` under ``path`` (install ``wordnet-base``).

  Example:
    >>> import pathlib, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "data.noun").write_text(
    ...     "00000001 03 n 01 dog 0 001 @ 00000002 n 0000 | a dog\\n"
    ...     "00000002 03 n 01 animal 0 000 | an animal\\n")
    >>> kb = load_wordnet_kb(d)
    >>> kb.entity_names, kb.triples.tolist()
    (('dog.00000001', 'animal.00000002'), [[0, 0, 1], [1, 1, 0]])
  """
  data = os.path.join(os.fspath(path), "data.noun")
  if not os.path.exists(data):
    raise FileNotFoundError(f"WordNet not found: no data.noun under path={os.fspath(path)!r}; "
                            f"install Debian's wordnet-base (apt-get install wordnet-base) or "
                            f"pass the directory of a WordNet 3.0 database")
  forward = {p[0]: i for i, p in enumerate(pointers)}
  keep_files = None if lexicographer_files is None else {int(f) for f in lexicographer_files}
  words: dict[str, str] = {}
  lexfile: dict[str, int] = {}
  edges = []
  with open(data, encoding="utf-8", errors="replace") as f:
    for line in f:
      if line.startswith("  ") or not line.strip():
        continue  # the licence header
      fields = line.split(" | ")[0].split()
      offset, filenum = fields[0], int(fields[1])
      w_cnt = int(fields[3], 16)
      words[offset] = fields[4]
      lexfile[offset] = filenum
      i = 4 + 2 * w_cnt
      p_cnt = int(fields[i])
      for k in range(p_cnt):
        symbol, target, pos = fields[i + 1 + 4 * k: i + 4 + 4 * k]
        if pos == "n" and symbol in forward:
          edges.append((offset, forward[symbol], target))
  if keep_files is not None:
    edges = [(s, r, o) for s, r, o in edges
             if lexfile.get(s) in keep_files and lexfile.get(o) in keep_files]
  edges = sorted(set((s, r, o) for s, r, o in edges if o in words))
  offsets = sorted({s for s, _, _ in edges} | {o for _, _, o in edges})
  index = {off: i for i, off in enumerate(offsets)}
  facts = np.asarray([(index[s], 2 * r, index[o]) for s, r, o in edges], np.int32).reshape(-1, 3)
  back = np.stack([facts[:, 2], facts[:, 1] + 1, facts[:, 0]], 1)
  inverse = np.arange(2 * len(pointers), dtype=np.int32) ^ 1
  names = tuple(n for p in pointers for n in p[2:])
  return KnowledgeBase(np.concatenate([facts, back]).astype(np.int32), len(offsets),
                       2 * len(pointers), inverse,
                       tuple(f"{words[o]}.{o}" for o in offsets), names)


# ------------------------------------------------------------------------------------ the models


def _gather_paths(table: jax.Array, relations: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Rows of ``table`` at ``relations`` (``-1`` padding gives zeros) and the step mask."""
  mask = relations >= 0
  rows = table[jnp.maximum(relations, 0)]
  return rows * mask[..., None].astype(rows.dtype), mask


class TransGaussian(nnx.Module):
  """TransGaussian: entity means, relation offsets and diagonal relation covariances.

  A query's answer is scored by the log of the product of its conjuncts' Gaussian attentions,
  each conjunct the Gaussian of a path from its anchor (:func:`compose_path`), the product by
  :func:`gaussian_conjunction`:

  .. math::  \\mathrm{score}(q, o) = \\sum_c \\log N\\big(\\mu_o;\\ \\mu_{a_c} + \\sum_l
     \\delta_{r_{cl}},\\ \\sum_l \\Sigma_{r_{cl}}\\big)

  For a single relation this is :func:`trans_gaussian_score`. Covariances are
  ``Sigma_r = diag(exp(relation_log_var))``, positive for every parameter value.

  Args:
    num_entities, num_relations, dim: sizes.
    init_scale: standard deviation of the initial means and offsets.
    init_log_var: initial log-variance of every relation.
    rngs: ``nnx.Rngs``.

  Example:
    >>> m = TransGaussian(5, 2, 3, rngs=nnx.Rngs(0))
    >>> m.score_all(jnp.array([[0]]), jnp.array([[[1]]])).shape
    (1, 5)
  """

  def __init__(self, num_entities: int, num_relations: int, dim: int, *,
               init_scale: float = 0.1, init_log_var: float = 0.0, rngs: nnx.Rngs):
    k1, k2 = jax.random.split(rngs.params())
    self.entity_mean = nnx.Param(init_scale * core.flat_normal(k1, (num_entities, dim)))
    self.relation_offset = nnx.Param(init_scale * core.flat_normal(k2, (num_relations, dim)))
    self.relation_log_var = nnx.Param(jnp.full((num_relations, dim), init_log_var))

  def query(self, anchors: jax.Array, relations: jax.Array
            ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(mean, variance, log_normalizer)`` of each query's product Gaussian."""
    _check_query_indices(self, anchors, relations)
    offsets, _ = _gather_paths(self.relation_offset[...], relations)
    variances, _ = _gather_paths(jnp.exp(self.relation_log_var[...]), relations)
    means, var = _compose(self.entity_mean[...][jnp.maximum(anchors, 0)], offsets, variances)
    conj = anchors >= 0
    var = jnp.where(conj[..., None], var, 1.0)  # an absent conjunct: any positive variance
    mean, log_var, log_z = _conjunction(means, jnp.log(var), conj)
    return mean, jnp.exp(log_var), log_z

  def score(self, anchors: jax.Array, relations: jax.Array, candidates: jax.Array) -> jax.Array:
    """Scores ``(n, M)`` of candidate entities ``(n, M)`` for queries ``(n, C)``, ``(n, C, L)``."""
    mean, var, log_z = self.query(anchors, relations)
    x = self.entity_mean[...][candidates]
    return log_z[:, None] + core.diag_gaussian_log_prob(x, mean[:, None, :],
                                                        jnp.log(var)[:, None, :])

  def score_all(self, anchors: jax.Array, relations: jax.Array) -> jax.Array:
    """Scores ``(n, E)`` of every entity."""
    mean, var, log_z = self.query(anchors, relations)
    x = self.entity_mean[...]
    return log_z[:, None] + core.diag_gaussian_log_prob(x[None], mean[:, None, :],
                                                        jnp.log(var)[:, None, :])


class TransE(nnx.Module):
  """The TransE baseline on the same queries: translations with a fixed, isotropic scale.

  .. math::  \\mathrm{score}(q, o) = -\\sum_c \\big\\|\\mu_{a_c} + \\sum_l \\delta_{r_{cl}}
     - \\mu_o\\big\\|_2

  A path adds its offsets (compositional TransE, Guu et al. 2015); a conjunction adds the
  conjuncts' scores, each with the same weight (no covariance says which is the sharper).

  Example:
    >>> m = TransE(5, 2, 3, rngs=nnx.Rngs(0))
    >>> m.score(jnp.array([[0]]), jnp.array([[[1]]]), jnp.array([[2, 3]])).shape
    (1, 2)
  """

  def __init__(self, num_entities: int, num_relations: int, dim: int, *,
               init_scale: float = 0.1, rngs: nnx.Rngs):
    k1, k2 = jax.random.split(rngs.params())
    self.entity_mean = nnx.Param(init_scale * core.flat_normal(k1, (num_entities, dim)))
    self.relation_offset = nnx.Param(init_scale * core.flat_normal(k2, (num_relations, dim)))

  def query(self, anchors: jax.Array, relations: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Each conjunct's translated point ``(n, C, d)`` and the conjunct mask ``(n, C)``."""
    _check_query_indices(self, anchors, relations)
    offsets, _ = _gather_paths(self.relation_offset[...], relations)
    return self.entity_mean[...][jnp.maximum(anchors, 0)] + jnp.sum(offsets, axis=-2), anchors >= 0

  def _score(self, points: jax.Array, conj: jax.Array, x: jax.Array) -> jax.Array:
    # points (n, C, d), x (n or 1, M, d) -> (n, M); sqrt with a floor keeps gradients finite.
    diff = points[:, :, None, :] - x[:, None, :, :]
    dist = jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(diff), axis=-1), 1e-12))
    return -jnp.sum(dist * conj[:, :, None].astype(dist.dtype), axis=1)

  def score(self, anchors: jax.Array, relations: jax.Array, candidates: jax.Array) -> jax.Array:
    points, conj = self.query(anchors, relations)
    return self._score(points, conj, self.entity_mean[...][candidates])

  def score_all(self, anchors: jax.Array, relations: jax.Array) -> jax.Array:
    points, conj = self.query(anchors, relations)
    return self._score(points, conj, self.entity_mean[...][None])


def _check_query_indices(model: nnx.Module, anchors: jax.Array, relations: jax.Array) -> None:
  num_entities, num_relations = model.entity_mean.shape[0], model.relation_offset.shape[0]
  if jnp.ndim(anchors) != 2 or jnp.ndim(relations) != 3 or (
      jnp.shape(relations)[:2] != jnp.shape(anchors)):
    raise ValueError(f"anchors must be (n, C) and relations (n, C, L), got "
                     f"{jnp.shape(anchors)} and {jnp.shape(relations)}")
  _check_indices("anchors", anchors, num_entities, padded=True)
  _check_indices("relations", relations, num_relations, padded=True)


# -------------------------------------------------------------------------------------- training


def kb_margin_ranking_loss(model: nnx.Module, batch: dict, rng: jax.Array, *,
                           num_negatives: int = 16, margin: float = 1.0
                           ) -> tuple[jax.Array, dict]:
  """Margin ranking loss with uniformly sampled negative answers.

  .. math::  \\frac{1}{nK} \\sum_{i=1}^n \\sum_{k=1}^K
     \\big[\\gamma - \\mathrm{score}(q_i, o_i) + \\mathrm{score}(q_i, o'_{ik})\\big]_+,
     \\qquad o'_{ik} \\sim \\mathrm{Uniform}(\\text{entities})

  The ``loss_fn(model, batch, rng)`` of the core trainers (bind the keywords with
  ``functools.partial``); ``batch`` holds ``anchors``, ``relations`` and ``answers`` of
  :class:`KBQueries` rows. Negatives may hit a true answer (unfiltered sampling).

  Returns:
    ``(loss, {"violations": fraction of pairs inside the margin})``.

  Example:
    >>> m = TransE(6, 2, 4, rngs=nnx.Rngs(0))
    >>> batch = {"anchors": jnp.array([[0]]), "relations": jnp.array([[[1]]]),
    ...          "answers": jnp.array([3])}
    >>> loss, metrics = kb_margin_ranking_loss(m, batch, jax.random.key(0), num_negatives=4)
    >>> loss.shape, sorted(metrics)
    ((), ['violations'])
  """
  if num_negatives < 1:
    raise ValueError(f"num_negatives must be a positive integer, got {num_negatives}")
  if margin <= 0:
    raise ValueError(f"margin must be positive, got margin={margin}")
  answers = batch["answers"]
  num_entities = model.entity_mean.shape[0]
  negatives = jax.random.randint(rng, (answers.shape[0], num_negatives), 0, num_entities)
  scores = model.score(batch["anchors"], batch["relations"],
                       jnp.concatenate([answers[:, None], negatives], axis=1))
  gap = margin - scores[:, :1] + scores[:, 1:]
  return jnp.mean(jax.nn.relu(gap)), {"violations": jnp.mean((gap > 0).astype(gap.dtype))}


def make_kb_trainer(graphdef: nnx.GraphDef, pools: Sequence[KBQueries],
                    optimizer: optax.GradientTransformation, *, steps: int, batch_size: int,
                    num_negatives: int = 16, margin: float = 1.0):
  """A whole training run as one compiled function on :func:`tomioka_jax.core.make_sampler_trainer`.

  Each step draws ``batch_size // len(pools)`` rows (with replacement) from every pool of
  query rows: ``[single]`` trains on triples only; ``[single, paths, conjunctions]`` is the
  compositional training (every pool gets an equal share of the batch, so both runs see the
  same number of rows). The pools are padded to one query shape and held on the device.

  Args:
    graphdef: from :func:`tomioka_jax.core.create_train_state` on a :class:`TransGaussian` or
      :class:`TransE`.
    pools: non-empty training :class:`KBQueries`.
    optimizer: the optax transformation the state was created with.
    steps, batch_size: positive integers (``batch_size >= len(pools)``).
    num_negatives, margin: as in :func:`kb_margin_ranking_loss`.

  Returns:
    ``train(state, key) -> (state, metrics)``, jitted; ``jax.vmap`` it over seeds.
  """
  if not pools or any(len(p.answers) == 0 for p in pools):
    raise ValueError(f"pools must be a non-empty list of non-empty KBQueries, got sizes "
                     f"{[len(p.answers) for p in pools]}")
  if batch_size < len(pools):
    raise ValueError(f"batch_size must be at least the number of pools ({len(pools)}), got "
                     f"batch_size={batch_size}")
  conj = max(p.anchors.shape[1] for p in pools)
  length = max(p.relations.shape[2] for p in pools)
  padded = [_pad_queries(p, conj, length, known=1) for p in pools]
  arrays = [{"anchors": jnp.asarray(p.anchors), "relations": jnp.asarray(p.relations),
             "answers": jnp.asarray(p.answers)} for p in padded]
  share = batch_size // len(pools)

  def sample(key):
    parts = []
    for i, pool in enumerate(arrays):
      idx = jax.random.randint(jax.random.fold_in(key, i), (share,), 0, pool["answers"].shape[0])
      parts.append(jax.tree.map(lambda x, idx=idx: x[idx], pool))
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)

  loss_fn = functools.partial(kb_margin_ranking_loss, num_negatives=num_negatives,
                              margin=margin)
  return core.make_sampler_trainer(graphdef, loss_fn, optimizer, sample=sample, steps=steps)


def train_kb_embedding(model: str, num_entities: int, num_relations: int,
                       pools: Sequence[KBQueries], *, dim: int = 32, steps: int = 2000,
                       batch_size: int = 256, num_negatives: int = 16, margin: float = 1.0,
                       learning_rate: float = 0.01, weight_decay: float = 1e-4,
                       seeds: Sequence[int] = (0,)) -> tuple[nnx.GraphDef, core.TrainState,
                                                             dict]:
  """Trains ``model`` (``"trans_gaussian"`` or ``"trans_e"``) for several seeds at once.

  One state per seed (initialization and training key from the seed), stacked, and
  :func:`make_kb_trainer`'s run ``vmap``-ped over them: one compiled program for all seeds.
  The optimizer is AdamW (the weight decay keeps the embeddings' scale, and for TransGaussian
  pulls the log-variances towards 0, from drifting under the margin loss).

  Returns:
    ``(graphdef, states, metrics)``: states and metrics with a leading seed axis; a seed's
    model is ``nnx.merge(graphdef, jax.tree.map(lambda x: x[i], states.params))``.

  Example:
    >>> kb = synthetic_soccer_kb(0, num_players=30)
    >>> train, _ = single_relation_queries(*split_kb(kb, 0.2))
    >>> g, states, metrics = train_kb_embedding("trans_e", kb.num_entities, kb.num_relations,
    ...                                         [train], dim=8, steps=5, batch_size=16,
    ...                                         seeds=(0, 1))
    >>> metrics["loss"].shape
    (2, 5)
  """
  if model not in ("trans_gaussian", "trans_e"):
    raise ValueError(f"model must be 'trans_gaussian' or 'trans_e', got model={model!r}")
  for name, v in (("dim", dim), ("steps", steps), ("batch_size", batch_size)):
    if v < 1:
      raise ValueError(f"{name} must be a positive integer, got {name}={v}")
  if not seeds:
    raise ValueError("seeds must list at least one seed, got an empty sequence")
  for p in pools:
    _check_queries(p, num_entities, num_relations)
  optimizer = optax.adamw(learning_rate, weight_decay=weight_decay)
  cls = TransGaussian if model == "trans_gaussian" else TransE
  states = []
  graphdef = None
  for s in seeds:
    net = cls(num_entities, num_relations, dim, rngs=nnx.Rngs(s))
    graphdef, state = core.create_train_state(net, optimizer, jax.random.key(s))
    states.append(state)
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
  train = make_kb_trainer(graphdef, pools, optimizer, steps=steps, batch_size=batch_size,
                          num_negatives=num_negatives, margin=margin)
  keys = jnp.stack([jax.random.fold_in(jax.random.key(s), 1) for s in seeds])
  stacked, metrics = jax.vmap(train)(stacked, keys)
  return graphdef, stacked, metrics


# --------------------------------------------------------------------------------------- ranking


def filtered_rank(scores: ArrayLike, target: ArrayLike, known: ArrayLike) -> jax.Array:
  """The filtered rank of ``target`` among all entities (one query; ``vmap`` for many).

  Entities in ``known`` (the query's other true answers) are removed before ranking; ties
  count half (the mean of the optimistic and pessimistic ranks), and a NaN score counts as
  higher than the target's (a NaN target ranks last):

  .. math::  \\mathrm{rank} = 1 + |\\{e \\notin F: s_e > s_t\\}|
     + \\tfrac12 |\\{e \\notin F, e \\ne t: s_e = s_t\\}|

  Args:
    scores: ``(E,)`` scores of every entity.
    target: the answer's index.
    known: ``(K,)`` known answers, ``-1`` padded (``target`` may appear in it).

  Returns:
    The rank (float, >= 1).

  Example:
    >>> float(filtered_rank(jnp.array([0.9, 0.5, 0.7, 0.5]), 1, jnp.array([0, 1, -1])))
    2.5
  """
  scores = jnp.asarray(scores)
  e = scores.shape[-1]
  known = jnp.asarray(known)
  mask = jnp.zeros(e, bool).at[jnp.where(known >= 0, known, e)].set(True, mode="drop")
  others = ~mask & (jnp.arange(e) != target)
  s_t = scores[target]
  greater = jnp.sum(others & ((scores > s_t) | jnp.isnan(scores)))
  ties = jnp.sum(others & (scores == s_t))
  rank = 1.0 + greater + 0.5 * ties
  return jnp.where(jnp.isnan(s_t), 1.0 + jnp.sum(others), rank)


@functools.partial(jax.jit, static_argnums=(0, 6))
def _ranks(graphdef, state, anchors, relations, answers, known, chunk_size):
  model = nnx.merge(graphdef, state)
  n = answers.shape[0]
  pad = (-n) % chunk_size

  def padded(x):
    return jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)).reshape(
        (-1, chunk_size) + x.shape[1:])

  def chunk(args):
    a, r, t, k = args
    scores = model.score_all(a, r)
    return jax.vmap(filtered_rank)(scores, t, k)

  ranks = jax.lax.map(chunk, (padded(anchors), padded(relations), padded(answers),
                              padded(known)))
  return ranks.reshape(-1)[:n]


def filtered_ranks(model: nnx.Module, queries: KBQueries, *, chunk_size: int = 128
                   ) -> jax.Array:
  """Filtered ranks of every query's answer against every entity, in one compiled call.

  Every query is scored against all entities (``model.score_all``) and ranked by
  :func:`filtered_rank`; queries run in chunks of ``chunk_size`` under ``lax.map`` so that the
  ``(chunk, E, d)`` intermediates fit in memory. Padding rows (to a multiple of the chunk) are
  dropped.

  Args:
    model: a :class:`TransGaussian` or :class:`TransE`.
    queries: :class:`KBQueries` (indices checked).
    chunk_size: positive integer.

  Returns:
    ``(n,)`` float ranks.

  Example:
    >>> kb = synthetic_soccer_kb(0, num_players=20)
    >>> _, test = single_relation_queries(*split_kb(kb, 0.2))
    >>> ranks = filtered_ranks(TransGaussian(kb.num_entities, 8, 4, rngs=nnx.Rngs(0)), test)
    >>> ranks.shape == test.answers.shape and bool((ranks >= 1).all())
    True
  """
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be a positive integer, got chunk_size={chunk_size}")
  num_entities, num_relations = model.entity_mean.shape[0], model.relation_offset.shape[0]
  _check_queries(queries, num_entities, num_relations)
  graphdef, state = nnx.split(model)
  return _ranks(graphdef, state, *(jnp.asarray(x) for x in queries), chunk_size)


def ranking_metrics(ranks: ArrayLike, ks: Sequence[int] = (1, 10)) -> dict[str, float]:
  """Hits@k (fraction of ranks <= k) and the mean reciprocal rank of filtered ranks.

  Example:
    >>> ranking_metrics(jnp.array([1.0, 2.0, 4.0]))
    {'hits@1': 0.333..., 'hits@10': 1.0, 'mrr': 0.583...}
  """
  ranks = np.asarray(ranks, np.float64)
  if ranks.ndim != 1 or ranks.size == 0:
    raise ValueError(f"ranks must be a non-empty 1-D array, got shape {ranks.shape}")
  out = {f"hits@{k}": float(np.mean(ranks <= k)) for k in ks}
  out["mrr"] = float(np.mean(1.0 / ranks))
  return out

