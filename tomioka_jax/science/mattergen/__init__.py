"""MatterGen (Zeni, Pinsler, Zügner et al. 2023): a diffusion model for inorganic crystals that
corrupts the lattice, the fractional coordinates and the atom types jointly, with property
adapters and classifier-free guidance.
"""

# The mean atomic number density of MP-20 (atoms per cubic angstrom), which sets the limit mean
# (n / rho)^(1/3) I of the lattice diffusion in the reference's configuration.
MP20_ATOM_DENSITY = 0.0577

__all__ = [
    "MP20_ATOM_DENSITY",
]
