"""Poincaré-ball VAEs (Mathieu, Le Lan, Maddison, Tomioka, Teh 2019, arXiv:1901.06033).

* ``_manifold`` -- the Poincaré ball of curvature -c: Möbius
  operations, exp/log maps, parallel transport, distances, gyroplanes, projection.
* ``_distributions`` -- ``WrappedNormal`` and ``RiemannianNormal``
  (distrax distributions, densities w.r.t. the Riemannian volume), the Riemannian normal's exact
  log-normaliser, radius CDF and reparameterised radius sampler.
* ``_layers`` -- NNX ``GyroplaneLayer`` (hyperbolic multinomial
  regression, the decoder's first layer) and ``MobiusLayer``.
* ``_vae`` -- the N-VAE / P-VAE family (wrapped or Riemannian
  normal prior and posterior, wrapped or gyroplane decoder), ELBO and IWAE bounds, training.
* ``_data`` -- the branching-diffusion tree data of the paper.
"""

from tomioka_jax.generative.pvae._data import TreeData
from tomioka_jax.generative.pvae._data import branching_diffusion
from tomioka_jax.generative.pvae._data import train_test_split
from tomioka_jax.generative.pvae._distributions import RiemannianNormal
from tomioka_jax.generative.pvae._distributions import WrappedNormal
from tomioka_jax.generative.pvae._distributions import log_normalizer
from tomioka_jax.generative.pvae._distributions import radius_cdf
from tomioka_jax.generative.pvae._distributions import radius_log_prob
from tomioka_jax.generative.pvae._distributions import sample_radius
from tomioka_jax.generative.pvae._layers import Curvature
from tomioka_jax.generative.pvae._layers import GyroplaneLayer
from tomioka_jax.generative.pvae._layers import MobiusLayer
from tomioka_jax.generative.pvae._manifold import check_in_ball
from tomioka_jax.generative.pvae._manifold import conformal_factor
from tomioka_jax.generative.pvae._manifold import distance
from tomioka_jax.generative.pvae._manifold import distance0
from tomioka_jax.generative.pvae._manifold import expmap
from tomioka_jax.generative.pvae._manifold import expmap0
from tomioka_jax.generative.pvae._manifold import gyration
from tomioka_jax.generative.pvae._manifold import gyroplane_distance
from tomioka_jax.generative.pvae._manifold import gyroplane_distances
from tomioka_jax.generative.pvae._manifold import logmap
from tomioka_jax.generative.pvae._manifold import logmap0
from tomioka_jax.generative.pvae._manifold import mobius_add
from tomioka_jax.generative.pvae._manifold import mobius_add_expmap0
from tomioka_jax.generative.pvae._manifold import mobius_matvec
from tomioka_jax.generative.pvae._manifold import mobius_scalar_mul
from tomioka_jax.generative.pvae._manifold import parallel_transport
from tomioka_jax.generative.pvae._manifold import parallel_transport0
from tomioka_jax.generative.pvae._manifold import parallel_transport_to0
from tomioka_jax.generative.pvae._manifold import project
from tomioka_jax.generative.pvae._manifold import riemannian_norm
from tomioka_jax.generative.pvae._vae import VAE
from tomioka_jax.generative.pvae._vae import VAEConfig
from tomioka_jax.generative.pvae._vae import elbo
from tomioka_jax.generative.pvae._vae import evaluate_iwae
from tomioka_jax.generative.pvae._vae import iwae_bound
from tomioka_jax.generative.pvae._vae import make_train
from tomioka_jax.generative.pvae._vae import make_vae

__all__ = [
    "TreeData",
    "branching_diffusion",
    "train_test_split",
    "VAE",
    "VAEConfig",
    "elbo",
    "evaluate_iwae",
    "iwae_bound",
    "make_train",
    "make_vae",
    "Curvature",
    "GyroplaneLayer",
    "MobiusLayer",
    "RiemannianNormal",
    "WrappedNormal",
    "check_in_ball",
    "conformal_factor",
    "distance",
    "distance0",
    "expmap",
    "expmap0",
    "gyration",
    "gyroplane_distance",
    "gyroplane_distances",
    "log_normalizer",
    "logmap",
    "logmap0",
    "mobius_add",
    "mobius_add_expmap0",
    "mobius_matvec",
    "mobius_scalar_mul",
    "parallel_transport",
    "parallel_transport0",
    "parallel_transport_to0",
    "project",
    "radius_cdf",
    "radius_log_prob",
    "riemannian_norm",
    "sample_radius",
]
