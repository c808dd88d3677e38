"""Method-agnostic core: train state, pure train/eval steps, data parallelism, the fit loop."""

from tomioka_jax.core.classifier import MLP
from tomioka_jax.core.classifier import ClassifierConfig
from tomioka_jax.core.classifier import classification_sums
from tomioka_jax.core.classifier import make_epoch_trainer
from tomioka_jax.core.classifier import cross_entropy_loss
from tomioka_jax.core.classifier import train_classifier
from tomioka_jax.core.compat import fast_threefry_compilation
from tomioka_jax.core.loop import Checkpointer
from tomioka_jax.core.loop import FitResult
from tomioka_jax.core.loop import evaluate
from tomioka_jax.core.loop import fit
from tomioka_jax.core.parallel import DATA_AXIS
from tomioka_jax.core.parallel import batch_sharding
from tomioka_jax.core.parallel import data_mesh
from tomioka_jax.core.parallel import initialize_distributed
from tomioka_jax.core.parallel import mesh_size
from tomioka_jax.core.parallel import replicate
from tomioka_jax.core.parallel import replicated_sharding
from tomioka_jax.core.parallel import shard_batch
from tomioka_jax.core.train import TrainState
from tomioka_jax.core.train import apply_model
from tomioka_jax.core.train import create_train_state
from tomioka_jax.core.train import make_eval_step
from tomioka_jax.core.train import make_shard_map_train_step
from tomioka_jax.core.train import make_train_step
from tomioka_jax.core.train import optimizer_extra_args
from tomioka_jax.core.train import pmean_gradients

__all__ = [
    "MLP",
    "ClassifierConfig",
    "classification_sums",
    "make_epoch_trainer",
    "cross_entropy_loss",
    "train_classifier",
    "fast_threefry_compilation",
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
    "TrainState",
    "apply_model",
    "create_train_state",
    "make_eval_step",
    "make_shard_map_train_step",
    "make_train_step",
    "optimizer_extra_args",
    "pmean_gradients",
]
