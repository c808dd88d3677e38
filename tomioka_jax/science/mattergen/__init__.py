"""MatterGen (Zeni, Pinsler, Zügner et al. 2023): a diffusion model for inorganic crystals that
corrupts the lattice, the fractional coordinates and the atom types jointly, with property
adapters and classifier-free guidance.
"""

__all__: list[str] = []
