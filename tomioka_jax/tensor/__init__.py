"""Convex low-rank tensor estimation (Tomioka and co-authors, 2011-2016).

* :mod:`~tomioka_jax.tensor.ops` -- unfold/fold, mode products, Tucker, HOSVD, random Tucker.
* :mod:`~tomioka_jax.tensor.prox` -- singular value thresholding; overlapped, latent and
  scaled latent trace norms, their duals and proxes.
* :mod:`~tomioka_jax.tensor.completion` -- tensor completion: Constraint, Mixture,
  As-a-Matrix, Tucker by EM and as the N-way toolbox fits it (Tomioka, Hayashi, Kashima,
  arXiv:1010.0789).
* :mod:`~tomioka_jax.tensor.spectral` -- the spectral norm of a tensor by the higher-order
  power method with random restarts (Tomioka, Suzuki, arXiv:1407.1870).
* :mod:`~tomioka_jax.tensor.schatten` -- denoising with the overlapped and latent Schatten-1
  norms and their predicted-MSE complexity measures (Tomioka, Suzuki, arXiv:1303.6370).
* :mod:`~tomioka_jax.tensor.subspace` -- denoising with the subspace norm (Zheng, Tomioka,
  arXiv:1503.05479).
"""

from tomioka_jax.tensor import regression
from tomioka_jax.tensor.completion import CompletionResult
from tomioka_jax.tensor.completion import TuckerResult
from tomioka_jax.tensor.completion import as_matrix
from tomioka_jax.tensor.completion import constraint
from tomioka_jax.tensor.completion import mixture
from tomioka_jax.tensor.completion import observation_tensors
from tomioka_jax.tensor.completion import tucker_em
from tomioka_jax.tensor.completion import tucker_nway
from tomioka_jax.tensor.ops import Tucker
from tomioka_jax.tensor.ops import fold
from tomioka_jax.tensor.ops import hosvd
from tomioka_jax.tensor.ops import mode_product
from tomioka_jax.tensor.ops import multi_mode_product
from tomioka_jax.tensor.ops import random_tucker
from tomioka_jax.tensor.ops import tucker_to_tensor
from tomioka_jax.tensor.ops import unfold
from tomioka_jax.tensor.prox import LatentProx
from tomioka_jax.tensor.prox import latent_trace_norm
from tomioka_jax.tensor.prox import latent_trace_norm_dual
from tomioka_jax.tensor.prox import latent_trace_norm_prox
from tomioka_jax.tensor.prox import nuclear_norm
from tomioka_jax.tensor.prox import overlapped_trace_norm
from tomioka_jax.tensor.prox import overlapped_trace_norm_dual
from tomioka_jax.tensor.prox import overlapped_trace_norm_prox
from tomioka_jax.tensor.prox import project_spectral_ball
from tomioka_jax.tensor.prox import scaled_latent_trace_norm
from tomioka_jax.tensor.prox import scaled_latent_trace_norm_dual
from tomioka_jax.tensor.prox import scaled_latent_trace_norm_prox
from tomioka_jax.tensor.prox import scaled_latent_weights
from tomioka_jax.tensor.prox import singular_value_thresholding
from tomioka_jax.tensor.prox import singular_values
from tomioka_jax.tensor.prox import spectral_norm
from tomioka_jax.tensor.spectral import TensorSpectralNorm
from tomioka_jax.tensor.spectral import tensor_spectral_norm
from tomioka_jax.tensor.schatten import DenoisingResult
from tomioka_jax.tensor.schatten import latent_complexity
from tomioka_jax.tensor.schatten import latent_schatten_denoising
from tomioka_jax.tensor.schatten import overlapped_complexity
from tomioka_jax.tensor.schatten import overlapped_schatten_denoising
from tomioka_jax.tensor.subspace import SubspaceResult
from tomioka_jax.tensor.subspace import subspace_basis
from tomioka_jax.tensor.subspace import subspace_factors
from tomioka_jax.tensor.subspace import subspace_norm_denoising

__all__ = [
    "regression",
    "CompletionResult",
    "LatentProx",
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
]
