"""The package's structural rules (CONTRIBUTING.md), checked for every subpackage.

1. Export rule: a family's implementation modules are private (``_name.py``); its ``__init__``
   is the API and lists it in ``__all__``. An exported name is a function, class or constant
   defined in the family, or a public sub-namespace that is a package following the same rule.
2. No name means two things: one public name is one object throughout the library.
3. No module reaches into another's underscore names (importing a sibling private *module*
   is how a family is built; importing or reading a private *name* of another module is not).
   The benchmarks follow the same rule towards the library.
4. No import cycle between the library's modules, counting imports inside functions.
5. The library never imports ``jax._src``.
"""

from __future__ import annotations

import ast
import importlib
import pathlib
import pkgutil
import types

import pytest

import tomioka_jax

ROOT = pathlib.Path(tomioka_jax.__file__).parent
BENCHMARKS = ROOT.parent / "benchmarks"


def _packages() -> list[str]:
  names = ["tomioka_jax"]
  for info in pkgutil.walk_packages([str(ROOT)], prefix="tomioka_jax."):
    if info.ispkg:
      names.append(info.name)
  return sorted(names)


def _module_files(root: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def _module_name(path: pathlib.Path) -> str:
  rel = path.relative_to(ROOT.parent).with_suffix("")
  parts = list(rel.parts)
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


FAMILIES = [p for p in _packages() if p != "tomioka_jax"]


def test_every_family_is_found():
  assert {"tomioka_jax.core", "tomioka_jax.tensor", "tomioka_jax.generative.pvae"} <= set(FAMILIES)


@pytest.mark.parametrize("package", FAMILIES)
def test_implementation_modules_are_private(package):
  pkg = importlib.import_module(package)
  for info in pkgutil.iter_modules(pkg.__path__):
    if not info.ispkg:
      assert info.name.startswith("_"), (
          f"{package}.{info.name} is a public module: implementation modules are private "
          f"(_{info.name}.py) and {package}/__init__.py exports their API")


@pytest.mark.parametrize("package", FAMILIES)
def test_init_is_the_api(package):
  pkg = importlib.import_module(package)
  exported = getattr(pkg, "__all__", None)
  assert exported, f"{package} has no __all__"
  assert len(set(exported)) == len(exported), f"{package}.__all__ lists a name twice"
  subpackages = {info.name for info in pkgutil.iter_modules(pkg.__path__) if info.ispkg}
  for name in exported:
    assert not name.startswith("_"), f"{package} exports the private name {name}"
    value = getattr(pkg, name)
    if isinstance(value, types.ModuleType):
      assert name in subpackages and value.__name__ == f"{package}.{name}", (
          f"{package}.{name} is a module but not a public subpackage of {package}")
    else:
      home = getattr(value, "__module__", None)
      if home is not None and callable(value):
        assert home.startswith(package + "."), (
            f"{package}.{name} is defined in {home}, outside the family")
  public_attrs = {n for n, v in vars(pkg).items()
                  if not n.startswith("_") and not isinstance(v, types.ModuleType)}
  assert public_attrs <= set(exported), (
      f"{package} binds public names missing from __all__: {sorted(public_attrs - set(exported))}")


def _public_objects():
  seen: dict[str, list[tuple[str, object]]] = {}
  for package in FAMILIES:
    pkg = importlib.import_module(package)
    for name in pkg.__all__:
      value = getattr(pkg, name)
      if not isinstance(value, types.ModuleType):
        seen.setdefault(name, []).append((package, value))
  return seen


def test_no_name_means_two_things():
  clashes = {name: [p for p, _ in uses] for name, uses in _public_objects().items()
             if len({id(v) for _, v in uses}) > 1}
  assert not clashes, f"one name, different objects: {clashes}"


def _imports(path: pathlib.Path):
  """(kind, target, name, line) for each import and private attribute read in ``path``."""
  tree = ast.parse(path.read_text(), filename=str(path))
  module_aliases: dict[str, str] = {}
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        found.append(("import", alias.name, None, node.lineno))
        if alias.asname:
          module_aliases[alias.asname] = alias.name
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      for alias in node.names:
        found.append(("from", node.module, alias.name, node.lineno))
        full = f"{node.module}.{alias.name}"
        if _is_module(full):
          module_aliases[alias.asname or alias.name] = full
  for node in ast.walk(tree):
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        and node.value.id in module_aliases and node.attr.startswith("_")
        and not node.attr.startswith("__")):
      found.append(("attr", module_aliases[node.value.id], node.attr, node.lineno))
  return found


def _is_module(name: str) -> bool:
  if not name.startswith("tomioka_jax"):
    return False
  try:
    return importlib.util.find_spec(name) is not None
  except (ImportError, ValueError):
    return False


def _private_access(path: pathlib.Path, own: str | None) -> list[str]:
  bad = []
  for kind, target, name, line in _imports(path):
    if not target.startswith("tomioka_jax") or target == own:
      continue
    if kind == "from" and name.startswith("_") and not _is_module(f"{target}.{name}"):
      bad.append(f"{path.name}:{line} imports {target}.{name}")
    if kind == "attr":
      bad.append(f"{path.name}:{line} reads {target}.{name}")
  return bad


def test_no_module_reads_another_modules_private_names():
  bad = []
  for path in _module_files(ROOT):
    bad += _private_access(path, _module_name(path))
  for path in _module_files(BENCHMARKS):
    bad += _private_access(path, None)
  assert not bad, "private names used across modules:\n" + "\n".join(bad)


def _import_graph() -> dict[str, set[str]]:
  graph: dict[str, set[str]] = {}
  for path in _module_files(ROOT):
    me = _module_name(path)
    edges = graph.setdefault(me, set())
    for kind, target, name, _ in _imports(path):
      if kind == "attr" or not target.startswith("tomioka_jax"):
        continue
      if kind == "from" and _is_module(f"{target}.{name}"):
        target = f"{target}.{name}"
      if target != me:
        edges.add(target)
  return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  state: dict[str, int] = {}
  stack: list[str] = []

  def visit(node):
    state[node] = 1
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      # Importing a submodule runs its parent package's __init__ first; an __init__ that
      # imports its own children is how a family is assembled, not a cycle.
      if node.startswith(nxt + "."):
        continue
      if state.get(nxt) == 1:
        return stack[stack.index(nxt):] + [nxt]
      if state.get(nxt) is None:
        cycle = visit(nxt)
        if cycle:
          return cycle
    stack.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if state.get(node) is None:
      cycle = visit(node)
      if cycle:
        return cycle
  return None


def test_no_import_cycle():
  cycle = _find_cycle(_import_graph())
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_cycle():
  assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_library_never_imports_jax_src():
  bad = [f"{p.relative_to(ROOT.parent)}:{line}"
         for p in _module_files(ROOT) for _, target, _, line in _imports(p)
         if target == "jax._src" or target.startswith("jax._src.")]
  assert not bad, "jax._src imported by: " + ", ".join(bad)
