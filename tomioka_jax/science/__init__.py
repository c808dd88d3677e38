"""Learned samplers for the natural sciences: Timewarp, transferable MCMC for molecular dynamics
(Klein, Foong, Fjelde et al. 2023), and MatterGen, joint diffusion over crystal lattices,
fractional coordinates and atom types (Zeni, Pinsler, Zügner et al. 2023).

Both are public sub-namespaces:

* :mod:`tomioka_jax.science.timewarp` -- a conditional normalizing flow over positions and
  auxiliary velocities with kernel-attention transformer couplings, Metropolis-Hastings with the
  Boltzmann target and the exploration mode; JAX toy systems and an OpenMM bridge.
* :mod:`tomioka_jax.science.mattergen` -- the lattice VP SDE, the wrapped VE SDE on fractional
  coordinates, absorbing D3PM over atom types, a periodic E(3)-invariant score network with
  property adapters and classifier-free guidance, the predictor-corrector sampler, and the
  structure metrics.
"""

from tomioka_jax.science import mattergen
from tomioka_jax.science import timewarp

__all__ = ["mattergen", "timewarp"]
