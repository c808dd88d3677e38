"""Generative models: f-GANs (Nowozin, Cseke, Tomioka 2016), Poincaré-ball VAEs (Mathieu, Le
Lan, Maddison, Tomioka, Teh 2019) and the multi-level VAE (Bouchacourt, Tomioka, Nowozin 2017).

* :mod:`~tomioka_jax.generative.fgan` -- every f-divergence of the paper with its conjugate,
  output activation and stable composite; the objective ``F``; the single-step gradient method
  (Algorithm 1); density-ratio estimates from the critic; Lambert W and Wright omega.
* :mod:`~tomioka_jax.generative.pvae` -- the Poincaré ball (Möbius operations, exp/log maps,
  parallel transport, distances), the wrapped and Riemannian normal distributions (distrax),
  gyroplane and Möbius layers.
* :mod:`~tomioka_jax.generative.mlvae` -- the ML-VAE: group evidence accumulation as a
  product of Gaussians, the group ELBO and IWAE bound, content/style swapping.
"""

from tomioka_jax.generative import mlvae
from tomioka_jax.generative import pvae

from tomioka_jax.generative.fgan import DIVERGENCES
from tomioka_jax.generative.fgan import FDivergence
from tomioka_jax.generative.fgan import FGANMetrics
from tomioka_jax.generative.fgan import FGANState
from tomioka_jax.generative.fgan import density_ratio
from tomioka_jax.generative.fgan import divergence
from tomioka_jax.generative.fgan import init_fgan_state
from tomioka_jax.generative.fgan import lambert_w
from tomioka_jax.generative.fgan import make_fgan_step
from tomioka_jax.generative.fgan import switch_divergence
from tomioka_jax.generative.fgan import variational_objective
from tomioka_jax.generative.fgan import wright_omega

__all__ = [
    "mlvae",
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
]
