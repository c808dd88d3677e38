"""Path-normalized optimization and norm-based capacity control (Neyshabur, Tomioka, et al.)."""

from tomioka_jax.optim import capacity
from tomioka_jax.optim.path_sgd import ScaleByPathNormState
from tomioka_jax.optim.path_sgd import nnx_network
from tomioka_jax.optim.path_sgd import path_norm
from tomioka_jax.optim.path_sgd import path_scaling
from tomioka_jax.optim.path_sgd import path_sgd
from tomioka_jax.optim.path_sgd import scale_by_path_norm

__all__ = [
    "capacity",
    "ScaleByPathNormState",
    "nnx_network",
    "path_norm",
    "path_scaling",
    "path_sgd",
    "scale_by_path_norm",
]
