"""Adversarial robustness: certified non-uniform bounds (Liu, Tomioka, Cevher 2019) and
adversarial training with periodic adversarial scheduling (Liu, Salzmann, Lin, Tomioka,
Süsstrunk 2020).

The API of this family (implementation in the private modules ``_bounds``, ``_nonuniform``,
``_attacks``, ``_pas`` and ``_landscape``):

* bounds (``_bounds``) -- interval and linear (Fast-Lin/CROWN-style) bound propagation through
  MLPs given as layer lists, on logits and on margins; a converter from an NNX MLP.
* non-uniform certification (``_nonuniform``) -- the augmented-Lagrangian search for the
  largest-volume certified box, the feasibility shrink and the uniform baseline by bisection.
* attacks (``_attacks``) -- PGD (l_inf, l_2) and APGD-CE inside a box or an epsilon ball.
* PAS (``_pas``) -- periodic epsilon and learning-rate schedules, the adversarial training
  step and end-of-cycle snapshot ensembles.
* landscape (``_landscape``) -- top Hessian eigenvalues by Lanczos, gradient statistics and
  loss scans.
"""

# --- _bounds / _nonuniform exports (certification) ---
from tomioka_jax.robust._bounds import ACTIVATIONS
from tomioka_jax.robust._bounds import DenseLayer
from tomioka_jax.robust._bounds import apply_layers
from tomioka_jax.robust._bounds import as_layers
from tomioka_jax.robust._bounds import interval_bounds
from tomioka_jax.robust._bounds import layers_from_nnx
from tomioka_jax.robust._bounds import linear_bounds
from tomioka_jax.robust._bounds import linear_relaxation
from tomioka_jax.robust._bounds import margin_bounds
from tomioka_jax.robust._nonuniform import REFERENCE_OPTIONS
from tomioka_jax.robust._nonuniform import Certificate
from tomioka_jax.robust._nonuniform import CertifyOptions
from tomioka_jax.robust._nonuniform import certified_margin
from tomioka_jax.robust._nonuniform import certify_nonuniform
from tomioka_jax.robust._nonuniform import certify_uniform
from tomioka_jax.robust._nonuniform import log_volume_ratio
# --- end certification ---
# --- _attacks / _pas / _landscape exports (attacks and training) ---
from tomioka_jax.robust._attacks import apgd
from tomioka_jax.robust._attacks import apgd_ce
from tomioka_jax.robust._attacks import apgd_checkpoints
from tomioka_jax.robust._attacks import dlr_loss
from tomioka_jax.robust._attacks import logit_cross_entropy
from tomioka_jax.robust._attacks import margin_loss
from tomioka_jax.robust._attacks import pgd
from tomioka_jax.robust._attacks import project_perturbation
from tomioka_jax.robust._attacks import robust_accuracy
from tomioka_jax.robust._landscape import filter_normalized_direction
from tomioka_jax.robust._landscape import gradient_statistics
from tomioka_jax.robust._landscape import hessian_top_eigenvalues
from tomioka_jax.robust._landscape import hessian_vector_product
from tomioka_jax.robust._landscape import lanczos_tridiagonal
from tomioka_jax.robust._landscape import loss_scan_1d
from tomioka_jax.robust._landscape import loss_scan_2d
from tomioka_jax.robust._pas import constant_schedule
from tomioka_jax.robust._pas import cos_cycle_jump
from tomioka_jax.robust._pas import cycle_cos
from tomioka_jax.robust._pas import cycle_jump
from tomioka_jax.robust._pas import cycle_linear
from tomioka_jax.robust._pas import cycle_ratio
from tomioka_jax.robust._pas import ensemble_logits
from tomioka_jax.robust._pas import fit_pas
from tomioka_jax.robust._pas import linear_schedule
from tomioka_jax.robust._pas import make_adversarial_loss
from tomioka_jax.robust._pas import make_pas_trainer
from tomioka_jax.robust._pas import optax_schedule
from tomioka_jax.robust._pas import pas_eps_schedule
from tomioka_jax.robust._pas import step_decay
# --- end attacks and training ---

__all__ = [
    # certification
    "ACTIVATIONS",
    "DenseLayer",
    "apply_layers",
    "as_layers",
    "interval_bounds",
    "layers_from_nnx",
    "linear_bounds",
    "linear_relaxation",
    "margin_bounds",
    "REFERENCE_OPTIONS",
    "Certificate",
    "CertifyOptions",
    "certified_margin",
    "certify_nonuniform",
    "certify_uniform",
    "log_volume_ratio",
    # attacks and training
    "apgd",
    "apgd_ce",
    "apgd_checkpoints",
    "dlr_loss",
    "logit_cross_entropy",
    "margin_loss",
    "pgd",
    "project_perturbation",
    "robust_accuracy",
    "filter_normalized_direction",
    "gradient_statistics",
    "hessian_top_eigenvalues",
    "hessian_vector_product",
    "lanczos_tridiagonal",
    "loss_scan_1d",
    "loss_scan_2d",
    "constant_schedule",
    "cos_cycle_jump",
    "cycle_cos",
    "cycle_jump",
    "cycle_linear",
    "cycle_ratio",
    "ensemble_logits",
    "fit_pas",
    "linear_schedule",
    "make_adversarial_loss",
    "make_pas_trainer",
    "optax_schedule",
    "pas_eps_schedule",
    "step_decay",
]
