"""Representation learning: information-theoretic distribution shift (Federici, Tomioka, Forré
2021), multiple similarity measures from triplet comparisons (Zhang, Maji, Tomioka 2015) and the
Gaussian attention model for knowledge bases (Zhang, Winn, Tomioka 2016).

The API of this family (implementation in the private modules ``_dist_shift``, ``_triplets``
and ``_gaussian_attention``; each lists its public names in its own ``__all__``):

* distribution shift (``_dist_shift``) -- exact information quantities of discrete joints, the
  CMNIST-family data-generating processes, exact criterion optimization over a finite code space,
  and the neural objectives (VIB, DANN, CDANN, IRMv1, VREx).
* triplets (``_triplets``) -- a shared embedding with view-specific PSD metrics learned from
  triplet comparisons, independent and pooled baselines, STE and t-STE, a multi-view generator.
* Gaussian attention (``_gaussian_attention``) -- TransGaussian and TransE scores, path and
  conjunctive queries, filtered ranking, a synthetic compositional knowledge base and WordNet.
"""

from tomioka_jax.representation import _dist_shift
from tomioka_jax.representation import _gaussian_attention
from tomioka_jax.representation import _triplets
from tomioka_jax.representation._dist_shift import *  # noqa: F403  (names listed in its __all__)
from tomioka_jax.representation._gaussian_attention import *  # noqa: F403
from tomioka_jax.representation._triplets import *  # noqa: F403

__all__ = [*_dist_shift.__all__, *_triplets.__all__, *_gaussian_attention.__all__]
