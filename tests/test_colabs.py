"""Executes every notebook in colabs/ top to bottom in smoke mode (TOMIOKA_SMOKE=1)."""

import os
import pathlib
import sys

import nbformat
import pytest
from nbclient import NotebookClient

COLABS = pathlib.Path(__file__).resolve().parents[1] / "colabs"
NOTEBOOKS = sorted(COLABS.glob("*.ipynb"))


def test_there_are_notebooks():
  assert NOTEBOOKS, f"no notebooks in {COLABS}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_smoke_mode(path, monkeypatch):
  monkeypatch.setenv("TOMIOKA_SMOKE", "1")
  monkeypatch.setenv("MPLBACKEND", "Agg")
  # The "python3" kernel runs the first `python` on PATH: make it this interpreter.
  monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
  # Notebooks run on whatever devices a user has; here, the 8 simulated CPU devices.
  monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", "") +
                     " --xla_force_host_platform_device_count=8")
  nb = nbformat.read(path, as_version=4)
  client = NotebookClient(nb, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": str(COLABS)}})
  client.execute()
  errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if o.get("output_type") == "error"]
  assert not errors
