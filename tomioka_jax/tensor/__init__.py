"""Convex low-rank tensor estimation (Tomioka and co-authors, 2011-2016).

* ``_admm`` -- the ADMM engine every convex solver of the family runs: named loop
  states, one options object (:class:`ADMMOptions`, the tuned defaults; ``PAPER_ADMM``).
* ``_ops`` -- unfold/fold, mode products, Tucker, HOSVD, random Tucker.
* ``_prox`` -- singular value thresholding; overlapped, latent and
  scaled latent trace norms' duals and proxes (the overlapped norm itself).
* ``_completion`` -- tensor completion: Constraint, Mixture,
  As-a-Matrix, Tucker by EM and as the N-way toolbox fits it (Tomioka, Hayashi, Kashima,
  arXiv:1010.0789); the latent trace norm (the fully observed Mixture solve).
* ``_spectral`` -- the spectral norm of a tensor by the higher-order
  power method with random restarts (Tomioka, Suzuki, arXiv:1407.1870).
* ``_schatten`` -- denoising with the overlapped and latent Schatten-1
  norms and their predicted-MSE complexity measures (Tomioka, Suzuki, arXiv:1303.6370).
* ``_subspace`` -- denoising with the subspace norm (Zheng, Tomioka,
  arXiv:1503.05479).
"""

from tomioka_jax.tensor._admm import ADMMOptions
from tomioka_jax.tensor._admm import PAPER_ADMM
from tomioka_jax.tensor._completion import CompletionResult
from tomioka_jax.tensor._completion import TuckerResult
from tomioka_jax.tensor._completion import as_matrix
from tomioka_jax.tensor._completion import constraint
from tomioka_jax.tensor._completion import latent_trace_norm
from tomioka_jax.tensor._completion import mixture
from tomioka_jax.tensor._completion import observation_tensors
from tomioka_jax.tensor._completion import scaled_latent_trace_norm
from tomioka_jax.tensor._completion import tucker_em
from tomioka_jax.tensor._completion import tucker_nway
from tomioka_jax.tensor._ops import Tucker
from tomioka_jax.tensor._ops import fold
from tomioka_jax.tensor._ops import hosvd
from tomioka_jax.tensor._ops import mode_product
from tomioka_jax.tensor._ops import multi_mode_product
from tomioka_jax.tensor._ops import random_tucker
from tomioka_jax.tensor._ops import tucker_to_tensor
from tomioka_jax.tensor._ops import unfold
from tomioka_jax.tensor._prox import LatentProx
from tomioka_jax.tensor._prox import latent_trace_norm_dual
from tomioka_jax.tensor._prox import latent_trace_norm_prox
from tomioka_jax.tensor._prox import nuclear_norm
from tomioka_jax.tensor._prox import overlapped_trace_norm
from tomioka_jax.tensor._prox import overlapped_trace_norm_dual
from tomioka_jax.tensor._prox import overlapped_trace_norm_prox
from tomioka_jax.tensor._prox import project_spectral_ball
from tomioka_jax.tensor._prox import scaled_latent_trace_norm_dual
from tomioka_jax.tensor._prox import scaled_latent_trace_norm_prox
from tomioka_jax.tensor._prox import scaled_latent_weights
from tomioka_jax.tensor._prox import singular_value_thresholding
from tomioka_jax.tensor._prox import singular_values
from tomioka_jax.tensor._prox import spectral_norm
from tomioka_jax.tensor._regression import REGRESSION_LOSSES
from tomioka_jax.tensor._regression import REGRESSION_NORMS
from tomioka_jax.tensor._regression import RegressionResult
from tomioka_jax.tensor._regression import fit_regression
from tomioka_jax.tensor._regression import predict_regression
from tomioka_jax.tensor._regression import regression_default_eta
from tomioka_jax.tensor._regression import regression_solve
from tomioka_jax.tensor._spectral import TensorSpectralNorm
from tomioka_jax.tensor._spectral import tensor_spectral_norm
from tomioka_jax.tensor._schatten import DenoisingResult
from tomioka_jax.tensor._schatten import latent_complexity
from tomioka_jax.tensor._schatten import latent_schatten_denoising
from tomioka_jax.tensor._schatten import overlapped_complexity
from tomioka_jax.tensor._schatten import overlapped_schatten_denoising
from tomioka_jax.tensor._subspace import SubspaceResult
from tomioka_jax.tensor._subspace import subspace_basis
from tomioka_jax.tensor._subspace import subspace_factors
from tomioka_jax.tensor._subspace import subspace_norm_denoising

__all__ = [
    "ADMMOptions",
    "CompletionResult",
    "LatentProx",
    "PAPER_ADMM",
    "TensorSpectralNorm",
    "Tucker",
    "TuckerResult",
    "as_matrix",
    "constraint",
    "fold",
    "hosvd",
    "latent_trace_norm",
    "latent_trace_norm_dual",
    "latent_trace_norm_prox",
    "mixture",
    "mode_product",
    "multi_mode_product",
    "nuclear_norm",
    "observation_tensors",
    "overlapped_trace_norm",
    "overlapped_trace_norm_dual",
    "overlapped_trace_norm_prox",
    "project_spectral_ball",
    "random_tucker",
    "scaled_latent_trace_norm",
    "scaled_latent_trace_norm_dual",
    "scaled_latent_trace_norm_prox",
    "scaled_latent_weights",
    "singular_value_thresholding",
    "singular_values",
    "spectral_norm",
    "tensor_spectral_norm",
    "tucker_em",
    "tucker_nway",
    "tucker_to_tensor",
    "unfold",
    # structured Schatten norms (2013) and the subspace norm (2015)
    "DenoisingResult",
    "SubspaceResult",
    "latent_complexity",
    "latent_schatten_denoising",
    "overlapped_complexity",
    "overlapped_schatten_denoising",
    "subspace_basis",
    "subspace_factors",
    "subspace_norm_denoising",
    # tensor regression and classification (2015)
    "REGRESSION_LOSSES",
    "REGRESSION_NORMS",
    "RegressionResult",
    "fit_regression",
    "predict_regression",
    "regression_default_eta",
    "regression_solve",
]
