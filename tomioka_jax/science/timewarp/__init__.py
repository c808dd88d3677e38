"""Timewarp (Klein, Foong, Fjelde, Mlodozeniec, Brockschmidt, Nowozin, Noé, Tomioka 2023):
transferable acceleration of molecular dynamics by a learned time-coarsened conditional flow
p(x_{t+tau} | x_t) used as a Metropolis-Hastings proposal.

The API of this family (implementation in the private modules ``_units``, ``_flow``,
``_sampler``, ``_openmm``, ``_analysis`` and ``_toys``):

* units (``_units``) -- OpenMM's units (nm, ps, kJ/mol, amu), the molar gas constant and
  ``kT`` at a temperature.
* the flow (``_flow``) -- :class:`TimewarpFlow`, the conditional RealNVP ``p(y_x, y_v | x_t,
  v_t)`` over positions and auxiliary velocities with kernel-attention transformer couplings
  (``AD1_FLOW_CONFIG``: the reference's alanine-dipeptide model), uniform random rotations,
  the NLL loss with rotation augmentation and ``train_flow`` on the core sampler trainer.
* the samplers (``_sampler``) -- exact Metropolis-Hastings on ``exp(-U/kT) N(v; 0, I)`` with
  the flow as proposal and ``k`` batched proposals per iteration, the energy-threshold
  exploration mode, the chain's multiplicities and its sequential expansion.
* molecules (``_openmm``) -- alanine dipeptide (AMBER99SB-ILDN with OBC1 implicit solvent, or
  vacuum) through OpenMM (the ``[md]`` extra, imported inside the functions): Langevin MD at
  310 K with a resumable on-disk cache, batched energies and their ``jax.pure_callback``
  wrapper for the samplers, training pairs at a lag.
* analysis (``_analysis``) -- backbone dihedrals, Ramachandran histograms and free energies,
  Jensen-Shannon divergences, TICA features and components, autocorrelation and the truncated
  effective sample size.
* toys (``_toys``) -- fully-JAX systems (double-well dimer with its exact bond-length
  density, Lennard-Jones cluster, harmonic wells) and a jittable BAOAB Langevin integrator.
"""

from tomioka_jax.science.timewarp._analysis import autocorrelation
from tomioka_jax.science.timewarp._analysis import backbone_dihedrals
from tomioka_jax.science.timewarp._analysis import dihedral_angle
from tomioka_jax.science.timewarp._analysis import dihedral_angles
from tomioka_jax.science.timewarp._analysis import effective_sample_size
from tomioka_jax.science.timewarp._analysis import ess_per_second
from tomioka_jax.science.timewarp._analysis import fit_tica
from tomioka_jax.science.timewarp._analysis import multichain_effective_sample_size
from tomioka_jax.science.timewarp._analysis import free_energy_surface
from tomioka_jax.science.timewarp._analysis import ramachandran_histogram
from tomioka_jax.science.timewarp._analysis import ramachandran_js_divergence
from tomioka_jax.science.timewarp._analysis import tica_features

from tomioka_jax.science.timewarp._openmm import EnergyEvaluator
from tomioka_jax.science.timewarp._openmm import FORCE_FIELDS
from tomioka_jax.science.timewarp._openmm import MDTrajectory
from tomioka_jax.science.timewarp._openmm import MolecularSystem
from tomioka_jax.science.timewarp._openmm import SOLVENTS
from tomioka_jax.science.timewarp._openmm import alanine_dipeptide
from tomioka_jax.science.timewarp._openmm import check_positions
from tomioka_jax.science.timewarp._openmm import default_cache_dir
from tomioka_jax.science.timewarp._openmm import jax_energy_fn
from tomioka_jax.science.timewarp._openmm import minimize_energy
from tomioka_jax.science.timewarp._openmm import openmm_system
from tomioka_jax.science.timewarp._openmm import rigid_align
from tomioka_jax.science.timewarp._openmm import simulate_md
from tomioka_jax.science.timewarp._openmm import training_pairs

from tomioka_jax.science.timewarp._units import MOLAR_GAS_CONSTANT
from tomioka_jax.science.timewarp._units import thermal_energy

from tomioka_jax.science.timewarp._flow import AD1_FLOW_CONFIG
from tomioka_jax.science.timewarp._flow import FlowOutput
from tomioka_jax.science.timewarp._flow import TimewarpFlow
from tomioka_jax.science.timewarp._flow import make_acceptance_loss
from tomioka_jax.science.timewarp._flow import make_flow_loss
from tomioka_jax.science.timewarp._flow import random_rotation
from tomioka_jax.science.timewarp._flow import regularized_energy_difference
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
    "EnergyEvaluator",
    "FORCE_FIELDS",
    "FlowOutput",
    "MDTrajectory",
    "MOLAR_GAS_CONSTANT",
    "MolecularSystem",
    "SOLVENTS",
    "TimewarpFlow",
    "ToySystem",
    "alanine_dipeptide",
    "autocorrelation",
    "backbone_dihedrals",
    "chain_weights",
    "check_positions",
    "default_cache_dir",
    "dihedral_angle",
    "dihedral_angles",
    "dimer_distance",
    "dimer_distance_density",
    "double_well_dimer",
    "effective_sample_size",
    "ess_per_second",
    "expand_chain",
    "explore",
    "fit_tica",
    "free_energy_surface",
    "harmonic_well",
    "jax_energy_fn",
    "lennard_jones_cluster",
    "make_acceptance_loss",
    "make_chain_sampler",
    "make_flow_loss",
    "metropolis_hastings",
    "minimize_energy",
    "multichain_effective_sample_size",
    "openmm_system",
    "ramachandran_histogram",
    "ramachandran_js_divergence",
    "random_rotation",
    "regularized_energy_difference",
    "rigid_align",
    "simulate_langevin",
    "simulate_md",
    "thermal_energy",
    "tica_features",
    "train_flow",
    "training_pairs",
]
