"""Path-normalized optimization and norm-based capacity control (Neyshabur, Tomioka, et al.)."""

from tomioka_jax.optim import capacity
from tomioka_jax.optim import ddp
from tomioka_jax.optim.ddp import DDPNormalizedLinear
from tomioka_jax.optim.ddp import DDPNormalizedMLP
from tomioka_jax.optim.ddp import ddp_norm
from tomioka_jax.optim.ddp import ddp_scaling
from tomioka_jax.optim.ddp import ddp_sgd
from tomioka_jax.optim.ddp import scale_by_ddp
from tomioka_jax.optim.path_sgd import ScaleByPathNormState
from tomioka_jax.optim.path_sgd import nnx_network
from tomioka_jax.optim.path_sgd import path_norm
from tomioka_jax.optim.path_sgd import path_scaling
from tomioka_jax.optim.path_sgd import path_sgd
from tomioka_jax.optim.path_sgd import scale_by_path_norm

__all__ = [
    "capacity",
    "ddp",
    "DDPNormalizedLinear",
    "DDPNormalizedMLP",
    "ddp_norm",
    "ddp_scaling",
    "ddp_sgd",
    "scale_by_ddp",
    "ScaleByPathNormState",
    "nnx_network",
    "path_norm",
    "path_scaling",
    "path_sgd",
    "scale_by_path_norm",
]
