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


INSTALL_MARK = "Installs tomioka_jax when it is not importable"


def _install_cell(path):
  nb = nbformat.read(path, as_version=4)
  return next(c for c in nb.cells if c.cell_type == "code").source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_opens_with_the_install_cell(path):
  assert INSTALL_MARK in _install_cell(path)
  assert _install_cell(path) == _install_cell(NOTEBOOKS[0]), "one install cell for all"


def _run_install_cell(tmp_path, monkeypatch, importable):
  """Runs the install cell in ``tmp_path`` with pip replaced by a recorder."""
  import importlib.util
  import subprocess
  calls = []
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name: object() if importable else None)
  monkeypatch.setattr(subprocess, "check_call", calls.append)
  exec(_install_cell(NOTEBOOKS[0]), {})  # pylint: disable=exec-used
  return calls


def test_install_cell_does_nothing_when_importable(tmp_path, monkeypatch):
  (tmp_path / "tomioka_jax-0.1.0-py3-none-any.whl").write_text("")
  assert _run_install_cell(tmp_path, monkeypatch, importable=True) == []


def test_install_cell_installs_an_uploaded_wheel_or_a_clone(tmp_path, monkeypatch):
  (tmp_path / "tomioka_jax-0.1.0-py3-none-any.whl").write_text("")
  calls = _run_install_cell(tmp_path, monkeypatch, importable=False)
  assert calls == [[sys.executable, "-m", "pip", "install", "-q",
                    "tomioka_jax-0.1.0-py3-none-any.whl"]]
  (tmp_path / "tomioka_jax-0.1.0-py3-none-any.whl").unlink()
  clone = tmp_path / "my-clone"
  clone.mkdir()
  (clone / "pyproject.toml").write_text((COLABS.parent / "pyproject.toml").read_text())
  calls = _run_install_cell(tmp_path, monkeypatch, importable=False)
  assert calls == [[sys.executable, "-m", "pip", "install", "-q", "my-clone"]]


def test_install_cell_says_what_to_do_without_a_source(tmp_path, monkeypatch):
  sub = tmp_path / "session"
  sub.mkdir()
  with pytest.raises(RuntimeError, match="upload a wheel .* or clone the repository"):
    _run_install_cell(sub, monkeypatch, importable=False)
