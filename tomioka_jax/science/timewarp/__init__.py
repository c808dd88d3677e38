"""Timewarp (Klein, Foong, Fjelde, Mlodozeniec, Brockschmidt, Nowozin, Noé, Tomioka 2023):
transferable acceleration of molecular dynamics by a learned time-coarsened conditional flow
p(x_{t+tau} | x_t) used as a Metropolis-Hastings proposal.
"""

from tomioka_jax.science.timewarp._units import MOLAR_GAS_CONSTANT
from tomioka_jax.science.timewarp._units import thermal_energy

__all__ = [
    "MOLAR_GAS_CONSTANT",
    "thermal_energy",
]
