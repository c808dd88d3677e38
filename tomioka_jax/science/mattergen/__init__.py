"""MatterGen (Zeni, Pinsler, Zügner et al. 2023): a diffusion model for inorganic crystals that
corrupts the lattice, the fractional coordinates and the atom types jointly, with property
adapters and classifier-free guidance.

The API of this family (implementation in the private modules below):

* crystals (``_crystal``) -- padded fixed-shape batches (:class:`Crystals`: lattice rows in
  angstrom, fractional coordinates in [0, 1), types Z - 1 with the absorbing ``MASK_TYPE``,
  mask), their checks, and :func:`right_handed` (a left-handed cell as the same crystal in a
  right-handed one).
* lattice diffusion (``_lattice``) -- the VP SDE with the atom-count-dependent limit mean
  ``(n / rho)^(1/3) I`` and variance ``0.25 n^(2/3)``, symmetric noise, marginals, score,
  ancestral predictor and Langevin corrector.
* coordinate diffusion (``_coords``) -- the atom-count-adjusted wrapped VE SDE on the torus, the
  wrapped-normal score over lattice images with its truncation bound, predictor and corrector.
* type diffusion (``_types``) -- D3PM absorbing (mask) diffusion over 101 states: marginals,
  posteriors, the hybrid loss, ancestral steps.
* joint diffusion (``_diffusion``) -- corruption of a batch, the weighted denoising loss with
  condition dropout, the predictor-corrector sampler with classifier-free guidance.
* score network (``_graph``, ``_network``) -- periodic top-k neighbour graphs with fixed shapes,
  :class:`MatterGenDenoiser` (messages invariant under rotations of the frame, with the
  reference's edge-lattice cosines; equivariant coordinate score, stress-like lattice score,
  type logits), zero-initialised property adapters, guidance.
* data and metrics (``_data``, ``_metrics``, ``_relax``) -- pymatgen/ase converters, the
  offline training set (AFLOW prototypes and ase crystals with substitutions and strains),
  validity, uniqueness, novelty and RMSD with the reference's matcher tolerances, a periodic
  pair-potential relaxation (FIRE, in JAX) and an optional CHGNet relaxation.

pymatgen, ase and smact (the ``[materials]`` extra) are imported inside the functions that need
them.
"""

from tomioka_jax.science.mattergen._crystal import Crystals
from tomioka_jax.science.mattergen._crystal import ELEMENTS
from tomioka_jax.science.mattergen._crystal import MASK_TYPE
from tomioka_jax.science.mattergen._crystal import NUM_ELEMENTS
from tomioka_jax.science.mattergen._crystal import NUM_TYPE_STATES
from tomioka_jax.science.mattergen._crystal import check_crystals
from tomioka_jax.science.mattergen._crystal import element_index
from tomioka_jax.science.mattergen._crystal import right_handed

from tomioka_jax.science.mattergen._lattice import LATTICE_SDE
from tomioka_jax.science.mattergen._lattice import LatticeVPSDE
from tomioka_jax.science.mattergen._lattice import MP20_ATOM_DENSITY
from tomioka_jax.science.mattergen._lattice import lattice_corrector_step
from tomioka_jax.science.mattergen._lattice import lattice_limit_mean
from tomioka_jax.science.mattergen._lattice import lattice_limit_var
from tomioka_jax.science.mattergen._lattice import lattice_marginal
from tomioka_jax.science.mattergen._lattice import lattice_marginal_score
from tomioka_jax.science.mattergen._lattice import lattice_mean_coeff
from tomioka_jax.science.mattergen._lattice import lattice_predictor_step
from tomioka_jax.science.mattergen._lattice import lattice_prior_sample
from tomioka_jax.science.mattergen._lattice import lattice_sample_marginal
from tomioka_jax.science.mattergen._lattice import symmetric_lattice
from tomioka_jax.science.mattergen._lattice import symmetric_noise

from tomioka_jax.science.mattergen._coords import COORD_SDE
from tomioka_jax.science.mattergen._coords import WrappedVESDE
from tomioka_jax.science.mattergen._coords import coord_corrector_step
from tomioka_jax.science.mattergen._coords import coord_predictor_step
from tomioka_jax.science.mattergen._coords import coord_prior_sample
from tomioka_jax.science.mattergen._coords import coord_sample_marginal
from tomioka_jax.science.mattergen._coords import coord_sigma
from tomioka_jax.science.mattergen._coords import wrap_frac
from tomioka_jax.science.mattergen._coords import wrapped_normal_score
from tomioka_jax.science.mattergen._coords import wrapped_normal_truncation_bound

from tomioka_jax.science.mattergen._types import TYPE_DIFFUSION
from tomioka_jax.science.mattergen._types import MaskDiffusion
from tomioka_jax.science.mattergen._types import d3pm_ancestral_step
from tomioka_jax.science.mattergen._types import d3pm_hybrid_loss
from tomioka_jax.science.mattergen._types import d3pm_marginal_probs
from tomioka_jax.science.mattergen._types import d3pm_posterior_logits
from tomioka_jax.science.mattergen._types import d3pm_sample_marginal

from tomioka_jax.science.mattergen._diffusion import DEFAULT_DIFFUSION
from tomioka_jax.science.mattergen._diffusion import DEFAULT_SAMPLER
from tomioka_jax.science.mattergen._diffusion import DiffusionConfig
from tomioka_jax.science.mattergen._diffusion import SamplerConfig
from tomioka_jax.science.mattergen._diffusion import corrupt_crystals
from tomioka_jax.science.mattergen._diffusion import diffusion_loss
from tomioka_jax.science.mattergen._diffusion import guided_score_fn
from tomioka_jax.science.mattergen._diffusion import make_diffusion_loss
from tomioka_jax.science.mattergen._diffusion import null_condition
from tomioka_jax.science.mattergen._diffusion import sample_crystals

from tomioka_jax.science.mattergen._graph import PeriodicGraph
from tomioka_jax.science.mattergen._graph import image_offsets
from tomioka_jax.science.mattergen._graph import periodic_graph
from tomioka_jax.science.mattergen._graph import perpendicular_widths
from tomioka_jax.science.mattergen._graph import required_images

from tomioka_jax.science.mattergen._network import DenoiserOutput
from tomioka_jax.science.mattergen._network import MatterGenDenoiser
from tomioka_jax.science.mattergen._network import fractional_displacement
from tomioka_jax.science.mattergen._network import fractional_score
from tomioka_jax.science.mattergen._network import guided_score
from tomioka_jax.science.mattergen._network import is_null_condition
from tomioka_jax.science.mattergen._network import random_condition_mask
from tomioka_jax.science.mattergen._network import with_adapters

from tomioka_jax.science.mattergen._data import CrystalDataset
from tomioka_jax.science.mattergen._data import allowed_element
from tomioka_jax.science.mattergen._data import atoms_to_crystals
from tomioka_jax.science.mattergen._data import build_training_set
from tomioka_jax.science.mattergen._data import canonical_structure
from tomioka_jax.science.mattergen._data import crystal_density
from tomioka_jax.science.mattergen._data import crystals_to_atoms
from tomioka_jax.science.mattergen._data import crystals_to_structures
from tomioka_jax.science.mattergen._data import dataset_summary
from tomioka_jax.science.mattergen._data import perturb_crystals
from tomioka_jax.science.mattergen._data import polar_symmetric_lattice
from tomioka_jax.science.mattergen._data import random_crystals
from tomioka_jax.science.mattergen._data import structures_to_crystals
from tomioka_jax.science.mattergen._data import type_frequencies

from tomioka_jax.science.mattergen._metrics import MATCHER_TOLERANCES
from tomioka_jax.science.mattergen._metrics import MIN_DISTANCE
from tomioka_jax.science.mattergen._metrics import MIN_VOLUME
from tomioka_jax.science.mattergen._metrics import RMSD_TOLERANCES
from tomioka_jax.science.mattergen._metrics import evaluate_structures
from tomioka_jax.science.mattergen._metrics import is_novel
from tomioka_jax.science.mattergen._metrics import is_unique
from tomioka_jax.science.mattergen._metrics import min_distances
from tomioka_jax.science.mattergen._metrics import rmsd
from tomioka_jax.science.mattergen._metrics import smact_validity
from tomioka_jax.science.mattergen._metrics import structure_validity
from tomioka_jax.science.mattergen._metrics import unique_labels

from tomioka_jax.science.mattergen._relax import LJ_CUTOFF_FACTOR
from tomioka_jax.science.mattergen._relax import PairPotential
from tomioka_jax.science.mattergen._relax import RelaxResult
from tomioka_jax.science.mattergen._relax import chgnet_relax
from tomioka_jax.science.mattergen._relax import covalent_radius_potential
from tomioka_jax.science.mattergen._relax import pair_energy
from tomioka_jax.science.mattergen._relax import pair_forces_and_stress
from tomioka_jax.science.mattergen._relax import pair_images_per_crystal
from tomioka_jax.science.mattergen._relax import pair_potential_images
from tomioka_jax.science.mattergen._relax import relax_crystals

__all__ = [
    "COORD_SDE",
    "CrystalDataset",
    "Crystals",
    "DEFAULT_DIFFUSION",
    "DEFAULT_SAMPLER",
    "DenoiserOutput",
    "DiffusionConfig",
    "ELEMENTS",
    "LATTICE_SDE",
    "LJ_CUTOFF_FACTOR",
    "LatticeVPSDE",
    "MASK_TYPE",
    "MATCHER_TOLERANCES",
    "MIN_DISTANCE",
    "MIN_VOLUME",
    "MP20_ATOM_DENSITY",
    "MaskDiffusion",
    "MatterGenDenoiser",
    "NUM_ELEMENTS",
    "NUM_TYPE_STATES",
    "PairPotential",
    "PeriodicGraph",
    "RMSD_TOLERANCES",
    "RelaxResult",
    "SamplerConfig",
    "TYPE_DIFFUSION",
    "WrappedVESDE",
    "allowed_element",
    "atoms_to_crystals",
    "build_training_set",
    "canonical_structure",
    "check_crystals",
    "chgnet_relax",
    "coord_corrector_step",
    "coord_predictor_step",
    "coord_prior_sample",
    "coord_sample_marginal",
    "coord_sigma",
    "corrupt_crystals",
    "covalent_radius_potential",
    "crystal_density",
    "crystals_to_atoms",
    "crystals_to_structures",
    "d3pm_ancestral_step",
    "d3pm_hybrid_loss",
    "d3pm_marginal_probs",
    "d3pm_posterior_logits",
    "d3pm_sample_marginal",
    "dataset_summary",
    "diffusion_loss",
    "element_index",
    "right_handed",
    "evaluate_structures",
    "fractional_displacement",
    "fractional_score",
    "guided_score",
    "guided_score_fn",
    "image_offsets",
    "is_novel",
    "is_null_condition",
    "is_unique",
    "lattice_corrector_step",
    "lattice_limit_mean",
    "lattice_limit_var",
    "lattice_marginal",
    "lattice_marginal_score",
    "lattice_mean_coeff",
    "lattice_predictor_step",
    "lattice_prior_sample",
    "lattice_sample_marginal",
    "make_diffusion_loss",
    "min_distances",
    "null_condition",
    "pair_energy",
    "pair_forces_and_stress",
    "pair_images_per_crystal",
    "pair_potential_images",
    "periodic_graph",
    "perpendicular_widths",
    "perturb_crystals",
    "polar_symmetric_lattice",
    "random_condition_mask",
    "random_crystals",
    "relax_crystals",
    "required_images",
    "rmsd",
    "sample_crystals",
    "smact_validity",
    "structure_validity",
    "structures_to_crystals",
    "symmetric_lattice",
    "symmetric_noise",
    "type_frequencies",
    "unique_labels",
    "with_adapters",
    "wrap_frac",
    "wrapped_normal_score",
    "wrapped_normal_truncation_bound",
]
