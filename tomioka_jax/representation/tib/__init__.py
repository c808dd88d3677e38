"""T-IB: latent representation and simulation of Markov processes via the time-lagged
information bottleneck (Federici, Forré, Tomioka, Veeling 2023, ICLR 2024).

The API of this sub-namespace (implementation in the private modules):

* ``_prinz`` -- the 2-D Prinz process (a slow four-well coordinate and a fast
  Ornstein-Uhlenbeck one) by Euler-Maruyama in ``lax.scan``, its Boltzmann law, the well labels,
  time-lagged pairs.
* ``_estimators`` -- InfoNCE and SMILE lower bounds on mutual information from a critic's score
  matrix, plug-in autoinformation of label sequences, Jensen-Shannon and KL divergences of
  discrete laws.
* ``_baselines`` -- TICA (reversible lagged covariances), the VAMP-2 score and VAMPNets trained
  by ``core.make_sampler_trainer``, Markov state models (counts, simulation, label emission).
* ``_tib`` -- T-InfoMax and T-IB: the Gaussian encoder with a separable InfoNCE critic, the
  conditional spline flow ``q_phi(z_t | z_{t-tau})`` (distrax), the two-stage training of every
  seed in one ``jit(vmap)``, latent simulation and label prediction; a ``beta`` grid trained in
  one program and ``beta`` chosen by the JS divergences of latent simulations on validation
  trajectories.
"""

from tomioka_jax.representation.tib._baselines import TICA
from tomioka_jax.representation.tib._baselines import VAMPNetFit
from tomioka_jax.representation.tib._baselines import assign_bins
from tomioka_jax.representation.tib._baselines import decode_labels
from tomioka_jax.representation.tib._baselines import emission_matrix
from tomioka_jax.representation.tib._baselines import fit_msm
from tomioka_jax.representation.tib._baselines import quantile_edges
from tomioka_jax.representation.tib._baselines import simulate_msm
from tomioka_jax.representation.tib._baselines import tica
from tomioka_jax.representation.tib._baselines import tica_transform
from tomioka_jax.representation.tib._baselines import train_vampnet
from tomioka_jax.representation.tib._baselines import vamp2_score
from tomioka_jax.representation.tib._baselines import vampnet_assign
from tomioka_jax.representation.tib._baselines import vamp_singular_functions
from tomioka_jax.representation.tib._baselines import vampnet_features
from tomioka_jax.representation.tib._baselines import vampnet_loss

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
from tomioka_jax.representation.tib._tib import ConditionalFlow
from tomioka_jax.representation.tib._tib import TIBEncoderModel
from tomioka_jax.representation.tib._tib import TIBBetaSelection
from tomioka_jax.representation.tib._tib import TIBFit
from tomioka_jax.representation.tib._tib import TransitionModel
from tomioka_jax.representation.tib._tib import encode_latent
from tomioka_jax.representation.tib._tib import latent_simulation_js
from tomioka_jax.representation.tib._tib import make_tib_loss
from tomioka_jax.representation.tib._tib import predict_labels
from tomioka_jax.representation.tib._tib import select_tib_beta
from tomioka_jax.representation.tib._tib import simulate_latent
from tomioka_jax.representation.tib._tib import take_runs
from tomioka_jax.representation.tib._tib import train_tib
from tomioka_jax.representation.tib._tib import train_tib_sweep
from tomioka_jax.representation.tib._tib import transition_loss

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
    # baselines
    "TICA",
    "VAMPNetFit",
    "assign_bins",
    "decode_labels",
    "emission_matrix",
    "fit_msm",
    "quantile_edges",
    "simulate_msm",
    "tica",
    "tica_transform",
    "train_vampnet",
    "vamp2_score",
    "vampnet_assign",
    "vampnet_loss",
    "vamp_singular_functions",
    "vampnet_features",
    # T-InfoMax / T-IB
    "ConditionalFlow",
    "TIBEncoderModel",
    "TIBBetaSelection",
    "TIBFit",
    "TransitionModel",
    "encode_latent",
    "latent_simulation_js",
    "make_tib_loss",
    "predict_labels",
    "select_tib_beta",
    "simulate_latent",
    "take_runs",
    "train_tib",
    "train_tib_sweep",
    "transition_loss",
]
