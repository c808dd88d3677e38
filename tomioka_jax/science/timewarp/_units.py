"""Units of the molecular systems: OpenMM's nm, ps, kJ/mol and amu (1 amu nm^2 / ps^2 = 1 kJ/mol)."""

from __future__ import annotations

import math

# Boltzmann's constant times Avogadro's number, kJ / (mol K) (CODATA 2018, exact).
MOLAR_GAS_CONSTANT = 8.314462618e-3


def thermal_energy(temperature: float) -> float:
  """Returns kT in kJ/mol at ``temperature`` kelvin (2.577 kJ/mol at the reference's 310 K)."""
  if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)
          and temperature > 0):
    raise ValueError(f"temperature must be a finite number of kelvin > 0, got {temperature!r}")
  return MOLAR_GAS_CONSTANT * float(temperature)
