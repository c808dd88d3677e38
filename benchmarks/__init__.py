"""Benchmarks: one module per paper, each reproducing its headline result beside a baseline.

Run ``python -m benchmarks [NAME ...] [--quick]``. Every non-underscore module here is a
benchmark: it defines ``PAPER``, ``CONFIGS`` and the phases ``experiment``, (``timings``),
``claims`` and ``report`` (see ``_harness.py``).
"""

import importlib
import pkgutil
import pathlib

_HERE = pathlib.Path(__file__).resolve().parent
RESULTS_DIR = _HERE / "results"


def registry() -> dict[str, str]:
  """Benchmark name -> module name, for every benchmark module in this package."""
  names = sorted(m.name for m in pkgutil.iter_modules([str(_HERE)])
                 if not m.name.startswith("_"))
  return {name: f"benchmarks.{name}" for name in names}


def check(name: str) -> str:
  """The module name of benchmark ``name``; unknown names raise ``ValueError`` listing the
  known ones. Imports nothing."""
  known = registry()
  if name not in known:
    raise ValueError(f"unknown benchmark name={name!r}; allowed: {', '.join(known) or 'none'}")
  return known[name]


def load(name: str):
  """Imports benchmark ``name``; unknown names raise ``ValueError`` listing the known ones."""
  module = importlib.import_module(check(name))
  phases = all(hasattr(module, a) for a in ("CONFIGS", "experiment", "claims", "report"))
  if not hasattr(module, "PAPER") or not phases:
    raise ValueError(f"benchmarks/{name}.py must define PAPER, CONFIGS, experiment, claims and "
                     "report")
  return module
