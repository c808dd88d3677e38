"""T-IB: latent representation and simulation of Markov processes via the time-lagged
information bottleneck (Federici, Forré, Tomioka, Veeling 2023, ICLR 2024).

The API of this sub-namespace (implementation in the private modules):

* ``_prinz`` -- the 2-D Prinz process (a slow four-well coordinate and a fast
  Ornstein-Uhlenbeck one) by Euler-Maruyama in ``lax.scan``, its Boltzmann law, the well labels,
  time-lagged pairs.
* ``_estimators`` -- InfoNCE and SMILE lower bounds on mutual information from a critic's score
  matrix, plug-in autoinformation of label sequences, Jensen-Shannon and KL divergences of
  discrete laws.
"""

from tomioka_jax.representation.tib._estimators import critic_scores
from tomioka_jax.representation.tib._estimators import discrete_autoinformation
from tomioka_jax.representation.tib._estimators import infonce_lower_bound
from tomioka_jax.representation.tib._estimators import js_divergence
from tomioka_jax.representation.tib._estimators import js_lower_bound
from tomioka_jax.representation.tib._estimators import kl_divergence_discrete
from tomioka_jax.representation.tib._estimators import lagged_joint
from tomioka_jax.representation.tib._estimators import mutual_information_discrete
from tomioka_jax.representation.tib._estimators import smile_lower_bound
from tomioka_jax.representation.tib._prinz import NUM_WELLS
from tomioka_jax.representation.tib._prinz import PRINZ_BARRIERS
from tomioka_jax.representation.tib._prinz import PRINZ_MINIMA
from tomioka_jax.representation.tib._prinz import PrinzData
from tomioka_jax.representation.tib._prinz import boltzmann_grid
from tomioka_jax.representation.tib._prinz import lagged_pairs
from tomioka_jax.representation.tib._prinz import prinz_force
from tomioka_jax.representation.tib._prinz import prinz_potential
from tomioka_jax.representation.tib._prinz import prinz_trajectories
from tomioka_jax.representation.tib._prinz import prinz_well
from tomioka_jax.representation.tib._prinz import sample_prinz_stationary
from tomioka_jax.representation.tib._prinz import simulate_prinz

__all__ = [
    # the Prinz process
    "NUM_WELLS",
    "PRINZ_BARRIERS",
    "PRINZ_MINIMA",
    "PrinzData",
    "boltzmann_grid",
    "lagged_pairs",
    "prinz_force",
    "prinz_potential",
    "prinz_trajectories",
    "prinz_well",
    "sample_prinz_stationary",
    "simulate_prinz",
    # estimators
    "critic_scores",
    "discrete_autoinformation",
    "infonce_lower_bound",
    "js_divergence",
    "js_lower_bound",
    "kl_divergence_discrete",
    "lagged_joint",
    "mutual_information_discrete",
    "smile_lower_bound",
]
