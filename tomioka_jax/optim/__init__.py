"""Path-normalized optimization and norm-based capacity control (Neyshabur, Tomioka, et al.).

The API of this family; the implementation lives in private modules:

* ``_path_sgd`` -- Path-SGD, the steepest descent w.r.t. the l2 path regularizer, as an optax
  transformation over any NNX network of dense and convolutional ReLU layers (Neyshabur,
  Salakhutdinov, Srebro, arXiv:1506.02617; Neyshabur, Tomioka, Salakhutdinov, Srebro,
  arXiv:1705.03071).
* ``_ddp`` -- data-dependent path normalization: DDP-SGD and DDP-Normalization (Neyshabur,
  Tomioka, Salakhutdinov, Srebro, arXiv:1511.06747).
* ``_capacity`` -- norm-based capacity measures of layered ReLU networks (group, per-unit max,
  path and spectral norms), node-wise rescaling, margins (arXiv:1503.00036, 1412.6614).
"""

from tomioka_jax.optim._capacity import balance
from tomioka_jax.optim._capacity import group_norm
from tomioka_jax.optim._capacity import margin_normalized
from tomioka_jax.optim._capacity import margins
from tomioka_jax.optim._capacity import mlp_forward
from tomioka_jax.optim._capacity import mlp_layers
from tomioka_jax.optim._capacity import path_norm
from tomioka_jax.optim._capacity import per_unit_max_norm
from tomioka_jax.optim._capacity import random_rescaling
from tomioka_jax.optim._capacity import rescale
from tomioka_jax.optim._capacity import set_mlp_layers
from tomioka_jax.optim._capacity import spectral_norm_product
from tomioka_jax.optim._ddp import DDPNormalizedLinear
from tomioka_jax.optim._ddp import DDPNormalizedMLP
from tomioka_jax.optim._ddp import DDPSecondMoment
from tomioka_jax.optim._ddp import ScaleByDDPState
from tomioka_jax.optim._ddp import ddp_gammas
from tomioka_jax.optim._ddp import ddp_network
from tomioka_jax.optim._ddp import ddp_norm
from tomioka_jax.optim._ddp import ddp_scaling
from tomioka_jax.optim._ddp import ddp_sgd
from tomioka_jax.optim._ddp import scale_by_ddp
from tomioka_jax.optim._path_sgd import ScaleByPathNormState
from tomioka_jax.optim._path_sgd import check_path_sum_network
from tomioka_jax.optim._path_sgd import network_path_norm
from tomioka_jax.optim._path_sgd import nnx_network
from tomioka_jax.optim._path_sgd import path_scaling
from tomioka_jax.optim._path_sgd import path_sgd
from tomioka_jax.optim._path_sgd import scale_by_path_norm

__all__ = [
    # capacity measures and rescaling
    "balance",
    "group_norm",
    "margin_normalized",
    "margins",
    "mlp_forward",
    "mlp_layers",
    "path_norm",
    "per_unit_max_norm",
    "random_rescaling",
    "rescale",
    "set_mlp_layers",
    "spectral_norm_product",
    # data-dependent path normalization
    "DDPNormalizedLinear",
    "DDPNormalizedMLP",
    "DDPSecondMoment",
    "ScaleByDDPState",
    "ddp_gammas",
    "ddp_network",
    "ddp_norm",
    "ddp_scaling",
    "ddp_sgd",
    "scale_by_ddp",
    # Path-SGD
    "ScaleByPathNormState",
    "check_path_sum_network",
    "network_path_norm",
    "nnx_network",
    "path_scaling",
    "path_sgd",
    "scale_by_path_norm",
]
