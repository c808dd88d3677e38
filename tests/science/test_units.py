"""Tests of the molecular units (science/timewarp/_units.py)."""

from __future__ import annotations

import pytest

from tomioka_jax.science import timewarp


def test_thermal_energy_at_the_reference_temperature():
  # kT at 310 K: 8.314462618 J/(mol K) * 310 K = 2.5775 kJ/mol.
  assert timewarp.thermal_energy(310.0) == pytest.approx(2.57748341, rel=1e-8)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "300"])
def test_thermal_energy_rejects_bad_temperatures(bad):
  with pytest.raises(ValueError, match="temperature"):
    timewarp.thermal_energy(bad)
