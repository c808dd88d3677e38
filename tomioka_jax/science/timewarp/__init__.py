"""Timewarp (Klein, Foong, Fjelde, Mlodozeniec, Brockschmidt, Nowozin, Noé, Tomioka 2023):
transferable acceleration of molecular dynamics by a learned time-coarsened conditional flow
p(x_{t+tau} | x_t) used as a Metropolis-Hastings proposal.

The API of this family (implementation in the private modules ``_units``, ``_flow``,
``_sampler`` and ``_toys``):

* units (``_units``) -- OpenMM's units (nm, ps, kJ/mol, amu), the molar gas constant and
  ``kT`` at a temperature.
* the flow (``_flow``) -- :class:`TimewarpFlow`, the conditional RealNVP ``p(y_x, y_v | x_t,
  v_t)`` over positions and auxiliary velocities with kernel-attention transformer couplings
  (``AD1_FLOW_CONFIG``: the reference's alanine-dipeptide model), uniform random rotations,
  the NLL loss with rotation augmentation and ``train_flow`` on the core sampler trainer.
* the samplers (``_sampler``) -- exact Metropolis-Hastings on ``exp(-U/kT) N(v; 0, I)`` with
  the flow as proposal and ``k`` batched proposals per iteration, the energy-threshold
  exploration mode, the chain's multiplicities and its sequential expansion.
* toys (``_toys``) -- fully-JAX systems (double-well dimer with its exact bond-length
  density, Lennard-Jones cluster, harmonic wells) and a jittable BAOAB Langevin integrator.
"""

from tomioka_jax.science.timewarp._units import MOLAR_GAS_CONSTANT
from tomioka_jax.science.timewarp._units import thermal_energy

from tomioka_jax.science.timewarp._flow import AD1_FLOW_CONFIG
from tomioka_jax.science.timewarp._flow import FlowOutput
from tomioka_jax.science.timewarp._flow import TimewarpFlow
from tomioka_jax.science.timewarp._flow import make_flow_loss
from tomioka_jax.science.timewarp._flow import random_rotation
from tomioka_jax.science.timewarp._flow import train_flow

from tomioka_jax.science.timewarp._sampler import ChainResult
from tomioka_jax.science.timewarp._sampler import DEFAULT_EXPLORATION_THRESHOLD
from tomioka_jax.science.timewarp._sampler import chain_weights
from tomioka_jax.science.timewarp._sampler import expand_chain
from tomioka_jax.science.timewarp._sampler import explore
from tomioka_jax.science.timewarp._sampler import make_chain_sampler
from tomioka_jax.science.timewarp._sampler import metropolis_hastings

from tomioka_jax.science.timewarp._toys import ToySystem
from tomioka_jax.science.timewarp._toys import dimer_distance
from tomioka_jax.science.timewarp._toys import dimer_distance_density
from tomioka_jax.science.timewarp._toys import double_well_dimer
from tomioka_jax.science.timewarp._toys import harmonic_well
from tomioka_jax.science.timewarp._toys import lennard_jones_cluster
from tomioka_jax.science.timewarp._toys import simulate_langevin

__all__ = [
    "AD1_FLOW_CONFIG",
    "ChainResult",
    "DEFAULT_EXPLORATION_THRESHOLD",
    "FlowOutput",
    "MOLAR_GAS_CONSTANT",
    "TimewarpFlow",
    "ToySystem",
    "chain_weights",
    "dimer_distance",
    "dimer_distance_density",
    "double_well_dimer",
    "expand_chain",
    "explore",
    "harmonic_well",
    "lennard_jones_cluster",
    "make_chain_sampler",
    "make_flow_loss",
    "metropolis_hastings",
    "random_rotation",
    "simulate_langevin",
    "thermal_energy",
    "train_flow",
]
