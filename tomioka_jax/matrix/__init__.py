"""Algebraic-combinatorial low-rank matrix completion (Király, Theran, Tomioka).

* ``_completability`` -- which entries a mask determines (generic-point
  Jacobian test, rank-one bipartite connectivity), circuits, single-entry completion with error
  estimates, and nuclear-norm completion for comparison (arXiv 1211.4116, 1206.6470).
"""

from tomioka_jax.matrix._completability import (
    Circuit,
    Completability,
    EntryCompletion,
    NuclearNormCompletion,
    PathCompletion,
    RankOneCompletion,
    bipartite_components,
    closure,
    complete_entry,
    LowRankFit,
    low_rank_fit,
    completable_entries,
    find_circuit,
    is_completable,
    jacobian_completability,
    nuclear_norm_complete,
    rank_one_complete,
    rank_one_completable,
    rank_one_path_completion,
)

__all__ = [
    "Circuit",
    "Completability",
    "EntryCompletion",
    "NuclearNormCompletion",
    "PathCompletion",
    "RankOneCompletion",
    "bipartite_components",
    "closure",
    "complete_entry",
    "LowRankFit",
    "low_rank_fit",
    "completable_entries",
    "find_circuit",
    "is_completable",
    "jacobian_completability",
    "nuclear_norm_complete",
    "rank_one_complete",
    "rank_one_completable",
    "rank_one_path_completion",
]
