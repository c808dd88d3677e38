"""Generative models: f-GANs (Nowozin, Cseke, Tomioka 2016), Poincaré-ball VAEs (Mathieu, Le
Lan, Maddison, Tomioka, Teh 2019) and the multi-level VAE (Bouchacourt, Tomioka, Nowozin 2017).

The API of this family (implementation in the private modules ``_fgan`` and ``_mlvae``, and the
public sub-namespace ``pvae``, a package that follows the same rule):

* f-GAN (``_fgan``) -- every f-divergence of the paper with its conjugate,
  output activation and stable composite; the objective ``F``; the single-step gradient method
  (Algorithm 1); density-ratio estimates from the critic; Lambert W and Wright omega.
* :mod:`tomioka_jax.generative.pvae` -- the Poincaré ball (Möbius operations, exp/log maps,
  parallel transport, distances), the wrapped and Riemannian normal distributions (distrax),
  gyroplane and Möbius layers.
* ML-VAE (``_mlvae``) -- the ML-VAE: group evidence accumulation as a
  product of Gaussians, the group ELBO and IWAE bound, content/style swapping.
"""

from tomioka_jax.generative import pvae

from tomioka_jax.generative._fgan import DIVERGENCES
from tomioka_jax.generative._fgan import FDivergence
from tomioka_jax.generative._fgan import FGANMetrics
from tomioka_jax.generative._fgan import FGANState
from tomioka_jax.generative._fgan import density_ratio
from tomioka_jax.generative._fgan import divergence
from tomioka_jax.generative._fgan import init_fgan_state
from tomioka_jax.generative._fgan import lambert_w
from tomioka_jax.generative._fgan import make_fgan_step
from tomioka_jax.generative._fgan import switch_divergence
from tomioka_jax.generative._fgan import variational_objective
from tomioka_jax.generative._fgan import wright_omega
from tomioka_jax.generative._mlvae import ELBOTerms
from tomioka_jax.generative._mlvae import MLVAE
from tomioka_jax.generative._mlvae import Posteriors
from tomioka_jax.generative._mlvae import accumulate_group_evidence
from tomioka_jax.generative._mlvae import encode_groups
from tomioka_jax.generative._mlvae import group_batches
from tomioka_jax.generative._mlvae import group_elbo
from tomioka_jax.generative._mlvae import group_iwae
from tomioka_jax.generative._mlvae import make_group_sampler
from tomioka_jax.generative._mlvae import mlvae_loss
from tomioka_jax.generative._mlvae import swap

__all__ = [
    "pvae",
    "DIVERGENCES",
    "FDivergence",
    "FGANMetrics",
    "FGANState",
    "density_ratio",
    "divergence",
    "init_fgan_state",
    "lambert_w",
    "make_fgan_step",
    "switch_divergence",
    "variational_objective",
    "wright_omega",
    # ML-VAE
    "ELBOTerms",
    "MLVAE",
    "Posteriors",
    "accumulate_group_evidence",
    "encode_groups",
    "group_batches",
    "group_elbo",
    "group_iwae",
    "make_group_sampler",
    "mlvae_loss",
    "swap",
]
