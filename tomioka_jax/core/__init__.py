"""Method-agnostic core: train state, pure train/eval steps, data parallelism, the fit loop."""

from tomioka_jax.core._checks import is_concrete
from tomioka_jax.core._classifier import MLP
from tomioka_jax.core._classifier import ClassifierConfig
from tomioka_jax.core._classifier import classification_sums
from tomioka_jax.core._classifier import classification_curves
from tomioka_jax.core._classifier import make_classifier_trainer
from tomioka_jax.core._classifier import cross_entropy_loss
from tomioka_jax.core._classifier import train_classifier
from tomioka_jax.core._gaussians import DiagonalNormal
from tomioka_jax.core._gaussians import diag_gaussian_log_prob
from tomioka_jax.core._gaussians import kl_to_standard_normal
from tomioka_jax.core._gaussians import log_mean_exp
from tomioka_jax.core._gaussians import product_of_gaussians
from tomioka_jax.core._gaussians import reparameterized_sample
from tomioka_jax.core._loop import Checkpointer
from tomioka_jax.core._loop import FitResult
from tomioka_jax.core._loop import evaluate
from tomioka_jax.core._loop import fit
from tomioka_jax.core._parallel import DATA_AXIS
from tomioka_jax.core._parallel import batch_sharding
from tomioka_jax.core._parallel import data_mesh
from tomioka_jax.core._parallel import initialize_distributed
from tomioka_jax.core._parallel import mesh_size
from tomioka_jax.core._parallel import replicate
from tomioka_jax.core._parallel import replicated_sharding
from tomioka_jax.core._parallel import shard_batch
from tomioka_jax.core._rng import flat_normal
from tomioka_jax.core._rng import flat_uniform
from tomioka_jax.core._train import TrainState
from tomioka_jax.core._train import apply_model
from tomioka_jax.core._train import create_train_state
from tomioka_jax.core._train import make_eval_step
from tomioka_jax.core._train import make_sampler_trainer
from tomioka_jax.core._train import make_scan_trainer
from tomioka_jax.core._train import make_shard_map_train_step
from tomioka_jax.core._train import make_train_step
from tomioka_jax.core._train import pmean_gradients

__all__ = [
    "is_concrete",
    "MLP",
    "ClassifierConfig",
    "classification_sums",
    "classification_curves",
    "make_classifier_trainer",
    "cross_entropy_loss",
    "train_classifier",
    "DiagonalNormal",
    "diag_gaussian_log_prob",
    "kl_to_standard_normal",
    "log_mean_exp",
    "product_of_gaussians",
    "reparameterized_sample",
    "Checkpointer",
    "FitResult",
    "evaluate",
    "fit",
    "DATA_AXIS",
    "batch_sharding",
    "data_mesh",
    "initialize_distributed",
    "mesh_size",
    "replicate",
    "replicated_sharding",
    "shard_batch",
    "flat_normal",
    "flat_uniform",
    "TrainState",
    "apply_model",
    "create_train_state",
    "make_eval_step",
    "make_sampler_trainer",
    "make_scan_trainer",
    "make_shard_map_train_step",
    "make_train_step",
    "pmean_gradients",
]
