"""Every docstring example in the library and every Python block of the README runs."""

from __future__ import annotations

import doctest
import importlib
import pathlib
import pkgutil
import re
import subprocess
import sys

import pytest

import tomioka_jax

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _library_modules() -> list[str]:
  return sorted(info.name for info in pkgutil.walk_packages(tomioka_jax.__path__, "tomioka_jax."))


def _modules_with_examples() -> list[str]:
  finder = doctest.DocTestFinder()
  names = []
  for name in _library_modules():
    tests = finder.find(importlib.import_module(name), name)
    if any(t.examples for t in tests):
      names.append(name)
  return names


def test_examples_are_found():
  assert len(_modules_with_examples()) >= 10


@pytest.mark.parametrize("name", _modules_with_examples())
def test_docstring_examples_run(name):
  module = importlib.import_module(name)
  # Each example sees its module's globals, as a reader of the module would assume.
  result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                           report=True, verbose=False)
  assert result.attempted > 0
  assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def _readme_blocks() -> list[str]:
  text = (ROOT / "README.md").read_text()
  return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_has_python_blocks():
  assert _readme_blocks()


@pytest.mark.parametrize("index", range(len(_readme_blocks())))
def test_readme_python_block_runs(index, tmp_path):
  """Runs as a user would: a fresh interpreter in an empty directory."""
  code = _readme_blocks()[index]
  proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, f"README block {index} failed:\n{code}\n{proc.stderr[-3000:]}"
