"""The OpenMM bridge: alanine dipeptide, its molecular dynamics, and its energy in JAX.

Timewarp's ground truth is molecular dynamics at 310 K with OpenMM (the reference's
``simulation/md.py``): a Langevin "middle" integrator, friction 0.3 / ps, a 0.5 fs step and no
constraints, after minimisation and a burn-in, one frame every ``spacing`` steps. Its
Metropolis-Hastings target is the Boltzmann law ``exp(-U(x) / kT)`` with ``U`` from the same
force field. This module builds the system, runs and caches that MD, evaluates ``U`` for
batches of conformations in one OpenMM ``Context``, and wraps the evaluator in
``jax.pure_callback`` so a jitted sampler (``lax.scan``, ``vmap``) can call it.

Alanine dipeptide (ACE-ALA-NME, 22 atoms) comes from the coordinates openmmtools ships in its
wheel (``data/alanine-dipeptide-gbsa``). Two force fields:

* ``"amber99sbildn"`` (default): AMBER99SB-ILDN, with the OBC1 generalized-Born implicit
  solvent (``amber99_obc.xml``) for ``solvent="implicit"``; the reference's setup for its
  alanine-dipeptide data set ("old AD": ``amber99sbildn`` + ``amber99_obc``), no cutoff.
* ``"amber-ff96"``: openmmtools' own ``AlanineDipeptideImplicit`` / ``Vacuum`` parameters
  (AMBER ff96 from the shipped ``prmtop``, OBC1 GBSA), built here with ``constraints=None``.

openmm is imported inside the functions, so importing ``tomioka_jax.science.timewarp`` does not
need it (install the ``[md]`` extra). Units are OpenMM's: nm, ps, kJ/mol, amu.

Platform. On this 22-atom molecule OpenMM's ``Reference`` platform is much faster than its
``CPU`` platform (measured on a 2-core machine with one thread: an implicit-solvent MD step
33 us vs 540 us, an energy 41 us vs 490 us; the CPU platform's per-call overhead dominates
at this size), so ``platform="Reference"`` is the default; ``"CPU"`` (``threads`` threads) is
one argument away. Neither needs a re-implementation of the force field in JAX: at ~40 us per
conformation the callback costs less than the flow's proposal.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import math
import os
import pathlib
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tomioka_jax.science.timewarp import _units

SOLVENTS = ("implicit", "vacuum")
FORCE_FIELDS = ("amber99sbildn", "amber-ff96")
PLATFORMS = ("Reference", "CPU")
# The element vocabulary of ``MolecularSystem.element_types`` (peptides: H, C, N, O, S).
PEPTIDE_ELEMENTS = ("H", "C", "N", "O", "S")

# The reference's MD settings (``simulation/md.py``).
MD_TEMPERATURE = 310.0  # K
MD_FRICTION = 0.3  # 1 / ps
MD_TIMESTEP_FS = 0.5  # fs
MINIMIZE_TOLERANCE = 2.0  # kJ / (mol nm)


@dataclasses.dataclass(frozen=True, eq=False)
class MolecularSystem:
  """A molecule with its OpenMM system, ready for MD and energies.

  Attributes:
    name: e.g. ``"alanine-dipeptide"``.
    solvent: ``"implicit"`` or ``"vacuum"``.
    force_field: one of :data:`FORCE_FIELDS`.
    system_xml: the serialized ``openmm.System`` (plain text, so the object pickles into a
      benchmark's worker; :func:`openmm_system` deserializes it).
    positions: ``(n_atoms, 3)`` float64 initial coordinates (nm).
    masses: ``(n_atoms,)`` float64 atomic masses (amu).
    elements: element symbols, one per atom.
    atom_names: PDB atom names, one per atom.
    residue_names: the residue name of each atom.
    element_types: ``(n_atoms,)`` int32 indices into :data:`PEPTIDE_ELEMENTS` (an atom
      embedding by element).
    atom_types: ``(n_atoms,)`` int32: the index of each atom's key in the sorted list of the
      molecule's distinct keys, a finer embedding vocabulary than the element (the reference
      embeds atoms by their name within the residue). The key is (residue name, atom name) for
      heavy atoms and (residue name, ``"H@"`` + the bonded heavy atom's name) for hydrogens, so
      the three hydrogens of a methyl group share a type and the type does not depend on the
      force field's hydrogen naming; ``num_atom_types`` of them.
    num_atom_types: ``max(atom_types) + 1``.
    phi_atoms, psi_atoms: the four atom indices of the backbone dihedrals
      ``phi = C(i-1)-N-CA-C`` and ``psi = N-CA-C-N(i+1)`` (as mdtraj's ``compute_phi`` /
      ``compute_psi``).
    omega_atoms: ``CA(i-1)-C(i-1)-N-CA`` peptide-bond dihedrals, ``(k, 4)``.
    heavy_atoms: indices of the non-hydrogen atoms.
    degrees_of_freedom: ``3 n_atoms`` minus constraints minus 3 when the centre-of-mass motion
      is removed (for the kinetic temperature).
  """

  name: str
  solvent: str
  force_field: str
  system_xml: str
  positions: np.ndarray
  masses: np.ndarray
  elements: tuple[str, ...]
  atom_names: tuple[str, ...]
  residue_names: tuple[str, ...]
  element_types: np.ndarray
  atom_types: np.ndarray
  num_atom_types: int
  phi_atoms: tuple[int, int, int, int]
  psi_atoms: tuple[int, int, int, int]
  omega_atoms: tuple[tuple[int, int, int, int], ...]
  heavy_atoms: tuple[int, ...]
  degrees_of_freedom: int

  @property
  def num_atoms(self) -> int:
    return int(self.positions.shape[0])

  def fingerprint(self) -> str:
    """A short hash of the force field and topology (the MD cache's key)."""
    text = "|".join([self.name, self.solvent, self.force_field, self.system_xml,
                     ",".join(self.atom_names)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class MDTrajectory:
  """Frames of one MD run (returned by :func:`simulate_md`).

  Attributes:
    positions: ``(num_frames, n_atoms, 3)`` float32 coordinates (nm), one frame every
      ``spacing`` steps after the burn-in.
    potential_energy: ``(num_frames,)`` float64 (kJ/mol).
    kinetic_temperature: ``(num_frames,)`` float64 instantaneous temperature
      ``2 K / (dof k_B)`` (K).
    frame_time_ps: time between frames (ps).
    wall_seconds: wall-clock seconds of the integration (summed over cached chunks; the MD
      cost an ESS/s comparison divides by).
    steps: integration steps behind the returned frames (burn-in excluded).
    complete: False when ``time_budget_s`` stopped the run early (fewer frames than asked).
  """

  def __init__(self, positions, potential_energy, kinetic_temperature, frame_time_ps,
               wall_seconds, steps, complete):
    self.positions = positions
    self.potential_energy = potential_energy
    self.kinetic_temperature = kinetic_temperature
    self.frame_time_ps = frame_time_ps
    self.wall_seconds = wall_seconds
    self.steps = steps
    self.complete = complete

  @property
  def num_frames(self) -> int:
    return int(self.positions.shape[0])

  @property
  def seconds_per_frame(self) -> float:
    return self.wall_seconds / max(self.num_frames, 1)


def _openmm():
  try:
    import openmm  # pylint: disable=g-import-not-at-top
    from openmm import app  # pylint: disable=g-import-not-at-top
    from openmm import unit  # pylint: disable=g-import-not-at-top
  except ImportError as e:  # pragma: no cover - exercised only without the [md] extra
    raise ImportError("science.timewarp's OpenMM bridge needs openmm: pip install "
                      "'tomioka_jax[md]'") from e
  return openmm, app, unit


def _openmmtools_data(name: str) -> pathlib.Path:
  """A data directory of the openmmtools wheel, found without importing openmmtools (whose
  import pulls in pymbar, which switches JAX to 64 bits when it runs)."""
  spec = importlib.util.find_spec("openmmtools")
  if spec is None or not spec.submodule_search_locations:
    raise ImportError("alanine dipeptide's coordinates ship with openmmtools: pip install "
                      "'tomioka_jax[md]'")
  path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "data" / name
  if not path.is_dir():
    raise FileNotFoundError(f"openmmtools has no data directory {path}")
  return path


def _dihedral_quads(atoms: list[tuple[int, str, int]]) -> dict[str, list[tuple[int, ...]]]:
  """phi / psi / omega atom quadruples from (index, name, residue index) triples."""
  by_res: dict[int, dict[str, int]] = {}
  for i, name, r in atoms:
    by_res.setdefault(r, {})[name] = i
  out = {"phi": [], "psi": [], "omega": []}
  residues = sorted(by_res)
  for prev, cur, nxt in zip([None] + residues[:-1], residues, residues[1:] + [None]):
    a = by_res[cur]
    if not {"N", "CA", "C"} <= set(a):
      continue
    if prev is not None and "C" in by_res[prev]:
      out["phi"].append((by_res[prev]["C"], a["N"], a["CA"], a["C"]))
    if nxt is not None and "N" in by_res[nxt]:
      out["psi"].append((a["N"], a["CA"], a["C"], by_res[nxt]["N"]))
    if prev is not None and {"C"} <= set(by_res[prev]):
      ca_prev = by_res[prev].get("CA", by_res[prev].get("CH3"))
      if ca_prev is not None:
        out["omega"].append((ca_prev, by_res[prev]["C"], a["N"], a["CA"]))
  return out


def alanine_dipeptide(solvent: str = "implicit", force_field: str = "amber99sbildn"
                      ) -> MolecularSystem:
  """Alanine dipeptide (ACE-ALA-NME, 22 atoms) as an OpenMM system without constraints.

  Args:
    solvent: ``"implicit"`` (OBC1 generalized Born) or ``"vacuum"``.
    force_field: ``"amber99sbildn"`` (the reference's AD setup: AMBER99SB-ILDN with
      ``amber99_obc.xml``) or ``"amber-ff96"`` (openmmtools' ff96 ``prmtop`` with OBC1 GBSA).

  Returns:
    The :class:`MolecularSystem`; positions are the shipped (unminimized) coordinates.

  Raises:
    ValueError: unknown ``solvent`` or ``force_field``.
  """
  if solvent not in SOLVENTS:
    raise ValueError(f"solvent must be one of {SOLVENTS}, got solvent={solvent!r}")
  if force_field not in FORCE_FIELDS:
    raise ValueError(f"force_field must be one of {FORCE_FIELDS}, got "
                     f"force_field={force_field!r}")
  openmm, app, unit = _openmm()
  data = _openmmtools_data("alanine-dipeptide-gbsa")
  if force_field == "amber99sbildn":
    pdb = app.PDBFile(str(data / "alanine-dipeptide.pdb"))
    files = ["amber99sbildn.xml"] + (["amber99_obc.xml"] if solvent == "implicit" else [])
    system = app.ForceField(*files).createSystem(pdb.topology, nonbondedMethod=app.NoCutoff,
                                                 constraints=None, rigidWater=False)
    topology, positions = pdb.topology, pdb.getPositions(asNumpy=True)
  else:
    prmtop = app.AmberPrmtopFile(str(data / "alanine-dipeptide.prmtop"))
    system = prmtop.createSystem(implicitSolvent=app.OBC1 if solvent == "implicit" else None,
                                 constraints=None, nonbondedCutoff=None)
    topology = prmtop.topology
    positions = app.AmberInpcrdFile(str(data / "alanine-dipeptide.crd")).getPositions(
        asNumpy=True)
  return _molecular_system("alanine-dipeptide", solvent, force_field, openmm, unit, system,
                           topology, np.asarray(positions.value_in_unit(unit.nanometer)))


def _molecular_system(name, solvent, force_field, openmm, unit, system, topology, positions
                      ) -> MolecularSystem:
  atoms = list(topology.atoms())
  n = len(atoms)
  positions = np.asarray(positions, np.float64)
  if positions.shape != (n, 3) or system.getNumParticles() != n:
    raise ValueError(f"positions must have shape ({n}, 3) to match the topology's {n} atoms "
                     f"(system: {system.getNumParticles()} particles), got {positions.shape}")
  elements = tuple(a.element.symbol for a in atoms)
  unknown = sorted(set(elements) - set(PEPTIDE_ELEMENTS))
  if unknown:
    raise ValueError(f"the molecule has elements {unknown} outside {PEPTIDE_ELEMENTS}")
  names = tuple(a.name for a in atoms)
  residues = tuple(a.residue.name for a in atoms)
  partner = {}
  for a, b in topology.bonds():
    for h, other in ((a, b), (b, a)):
      if h.element.symbol == "H":
        partner[h.index] = other.name
  keys = [(a.residue.name, "H@" + partner.get(a.index, "?") if a.element.symbol == "H"
           else a.name) for a in atoms]
  pairs = sorted(set(keys))
  atom_types = np.array([pairs.index(k) for k in keys], np.int32)
  quads = _dihedral_quads([(a.index, a.name, a.residue.index) for a in atoms])
  if len(quads["phi"]) != 1 or len(quads["psi"]) != 1:
    raise ValueError(f"{name} must have one phi and one psi dihedral, found {quads}")
  masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(n)])
  cm_removed = any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces())
  dof = 3 * n - system.getNumConstraints() - (3 if cm_removed else 0)
  return MolecularSystem(
      name=name, solvent=solvent, force_field=force_field,
      system_xml=openmm.XmlSerializer.serialize(system), positions=positions, masses=masses,
      elements=elements, atom_names=names, residue_names=residues,
      element_types=np.array([PEPTIDE_ELEMENTS.index(e) for e in elements], np.int32),
      atom_types=atom_types, num_atom_types=len(pairs),
      phi_atoms=tuple(int(i) for i in quads["phi"][0]),
      psi_atoms=tuple(int(i) for i in quads["psi"][0]),
      omega_atoms=tuple(tuple(int(i) for i in q) for q in quads["omega"]),
      heavy_atoms=tuple(i for i, e in enumerate(elements) if e != "H"),
      degrees_of_freedom=int(dof))


def openmm_system(molecule: MolecularSystem):
  """A fresh ``openmm.System`` from ``molecule.system_xml``."""
  openmm, _, _ = _openmm()
  return openmm.XmlSerializer.deserialize(molecule.system_xml)


def check_positions(positions: Any, molecule: MolecularSystem | int, *,
                    name: str = "positions", min_rank: int = 2) -> np.ndarray:
  """``positions`` as a float64 NumPy array of shape ``(..., n_atoms, 3)``, checked.

  Raises:
    ValueError: a shape other than ``(..., n_atoms, 3)`` (with ``n_atoms`` the molecule's
      atom count), rank below ``min_rank``, or non-finite coordinates; the message names
      ``name``.
  """
  n = molecule if isinstance(molecule, int) else molecule.num_atoms
  x = np.asarray(positions, np.float64)
  if x.ndim < min_rank or x.shape[-1] != 3:
    raise ValueError(f"{name} must have shape (..., n_atoms, 3) with rank >= {min_rank}, got "
                     f"shape {x.shape}")
  if x.shape[-2] != n:
    raise ValueError(f"{name} has {x.shape[-2]} atoms (shape {x.shape}) but the topology has "
                     f"{n}")
  if not np.all(np.isfinite(x)):
    bad = int(np.sum(~np.isfinite(x)))
    raise ValueError(f"{name} must have finite coordinates, got {bad} non-finite values")
  return x


def _check_positive(name: str, value: Any, integer: bool = False) -> None:
  ok = (isinstance(value, (int, np.integer)) and not isinstance(value, bool)) if integer else (
      isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
      and math.isfinite(value))
  if not ok or value <= 0:
    kind = "a positive integer" if integer else "a finite number > 0"
    raise ValueError(f"{name} must be {kind}, got {name}={value!r}")


def _make_context(molecule: MolecularSystem, integrator, platform: str, threads: int):
  openmm, _, _ = _openmm()
  if platform not in PLATFORMS:
    raise ValueError(f"platform must be one of {PLATFORMS}, got platform={platform!r}")
  _check_positive("threads", threads, integer=True)
  props = {"Threads": str(threads)} if platform == "CPU" else {}
  return openmm.Context(openmm_system(molecule), integrator,
                        openmm.Platform.getPlatformByName(platform), props)


class EnergyEvaluator:
  """Potential energies (kJ/mol) of batches of conformations in one OpenMM ``Context``.

  ``evaluator(positions)`` takes ``(..., n_atoms, 3)`` coordinates in nm and returns the
  ``(...)`` float64 energies, one ``setPositions`` / ``getState(getEnergy=True)`` per
  conformation. Calls are serialized by a lock (one Context). Conformations that OpenMM cannot
  evaluate (overlapping atoms giving a NaN energy) get ``+inf``.

  Args:
    molecule: the :class:`MolecularSystem`.
    platform: ``"Reference"`` (default; fastest for a few dozen atoms) or ``"CPU"``.
    threads: CPU-platform threads (default 1).
  """

  def __init__(self, molecule: MolecularSystem, platform: str = "Reference", threads: int = 1):
    openmm, _, _ = _openmm()
    self.molecule = molecule
    self.platform = platform
    self._context = _make_context(molecule, openmm.VerletIntegrator(0.001), platform, threads)
    self._lock = threading.Lock()
    self.calls = 0  # conformations evaluated so far

  def __call__(self, positions: Any, *, nonfinite: str = "raise") -> np.ndarray:
    """Energies of ``(..., n_atoms, 3)`` positions (nm) -> ``(...)`` kJ/mol (float64).

    Args:
      positions: coordinates in nm.
      nonfinite: ``"raise"`` (ValueError naming ``positions``) or ``"inf"`` (such
        conformations get ``+inf``: what a sampler's callback needs, as it cannot raise).
    """
    if nonfinite not in ("raise", "inf"):
      raise ValueError(f"nonfinite must be 'raise' or 'inf', got nonfinite={nonfinite!r}")
    x = np.asarray(positions, np.float64)
    if nonfinite == "raise":
      x = check_positions(x, self.molecule)
    elif x.ndim < 2 or x.shape[-2:] != (self.molecule.num_atoms, 3):
      check_positions(np.zeros(x.shape), self.molecule)  # the shape message
    return self._evaluate(x, forces=False)[0]

  def energies_and_forces(self, positions: Any) -> tuple[np.ndarray, np.ndarray]:
    """Energies ``(...)`` (kJ/mol) and forces ``-dU/dx`` ``(..., n_atoms, 3)`` (kJ/(mol nm)).

    Conformations OpenMM cannot evaluate (non-finite positions, energy or forces) get ``+inf``
    energy and zero forces (what a training loss behind ``jax.pure_callback`` needs: it cannot
    raise). Float64 NumPy arrays.
    """
    x = np.asarray(positions, np.float64)
    if x.ndim < 2 or x.shape[-2:] != (self.molecule.num_atoms, 3):
      check_positions(np.zeros(x.shape), self.molecule)  # the shape message
    return self._evaluate(x, forces=True)

  def _evaluate(self, x: np.ndarray, forces: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """One ``setPositions`` / ``getState`` per conformation of ``(..., n, 3)`` float64 ``x``."""
    batch = x.shape[:-2]
    flat = x.reshape(-1, self.molecule.num_atoms, 3)
    energy = np.full(flat.shape[0], np.inf)
    force = np.zeros(flat.shape) if forces else None
    with self._lock:
      for i, conf in enumerate(flat):
        if not np.all(np.isfinite(conf)):
          continue
        self._context.setPositions(conf)
        state = self._context.getState(getEnergy=True, getForces=forces)
        e = state.getPotentialEnergy()._value  # kJ/mol  # pylint: disable=protected-access
        if not forces:
          energy[i] = e if np.isfinite(e) else np.inf
          continue
        f = np.asarray(state.getForces(asNumpy=True)._value)  # pylint: disable=protected-access
        if np.isfinite(e) and np.all(np.isfinite(f)):
          energy[i], force[i] = e, f
      self.calls += flat.shape[0]
    return energy.reshape(batch), None if force is None else force.reshape(x.shape)


def jax_energy_fn(evaluator: EnergyEvaluator, dtype: Any = None, *, differentiable: bool = False
                  ) -> Callable[[jax.Array], jax.Array]:
  """The evaluator as a JAX function ``energy_fn(positions (..., n_atoms, 3)) -> (...)``.

  A ``jax.pure_callback`` (``vmap_method="expand_dims"``: under ``vmap`` the callback gets the
  batch as a leading axis and evaluates it in one call), usable inside ``jit``, ``vmap`` and
  ``lax.scan``. The result has the positions' dtype (or ``dtype``). Non-finite positions get
  ``+inf`` energy, so a Metropolis-Hastings step rejects them.

  With ``differentiable=True`` the function has a custom VJP whose gradient is minus OpenMM's
  forces (evaluated in the same call as the energy; zero where the energy is not finite), for
  losses on the energy of flow samples (:func:`~tomioka_jax.science.timewarp.make_acceptance_loss`);
  otherwise it is not differentiable.

  Raises:
    ValueError: at trace time, when ``positions`` is not ``(..., n_atoms, 3)``.
  """
  n = evaluator.molecule.num_atoms

  def check(positions):
    positions = jnp.asarray(positions)
    if positions.ndim < 2 or positions.shape[-2:] != (n, 3):
      raise ValueError(f"positions has shape {positions.shape}, but the topology has {n} atoms: "
                       f"expected (..., {n}, 3)")
    return positions, (positions.dtype if dtype is None else jnp.dtype(dtype))

  def energy_fn(positions):
    positions, out_dtype = check(positions)
    spec = jax.ShapeDtypeStruct(positions.shape[:-2], out_dtype)
    return jax.pure_callback(
        lambda x: evaluator(np.asarray(x), nonfinite="inf").astype(out_dtype), spec, positions,
        vmap_method="expand_dims")

  if not differentiable:
    return energy_fn

  def with_forces(positions):
    positions, out_dtype = check(positions)
    specs = (jax.ShapeDtypeStruct(positions.shape[:-2], out_dtype),
             jax.ShapeDtypeStruct(positions.shape, positions.dtype))

    def host(x):
      e, f = evaluator.energies_and_forces(np.asarray(x))
      return e.astype(out_dtype), f.astype(positions.dtype)

    return jax.pure_callback(host, specs, positions, vmap_method="expand_dims")

  @jax.custom_vjp
  def differentiable_energy(positions):
    return with_forces(positions)[0]

  def fwd(positions):
    e, f = with_forces(positions)
    return e, f

  def bwd(forces, g):
    return (-jnp.asarray(g, forces.dtype)[..., None, None] * forces,)

  differentiable_energy.defvjp(fwd, bwd)
  return differentiable_energy


def minimize_energy(molecule: MolecularSystem, positions: Any = None, *,
             tolerance: float = MINIMIZE_TOLERANCE, platform: str = "Reference",
             threads: int = 1) -> tuple[np.ndarray, float]:
  """Local energy minimisation (OpenMM's L-BFGS) to ``tolerance`` kJ/(mol nm).

  Returns:
    ``(positions (n_atoms, 3) nm, energy kJ/mol)`` of the minimized structure.
  """
  openmm, _, unit = _openmm()
  x = molecule.positions if positions is None else check_positions(positions, molecule)
  if x.ndim != 2:
    raise ValueError(f"positions must be one conformation (n_atoms, 3), got shape {x.shape}")
  _check_positive("tolerance", tolerance)
  ctx = _make_context(molecule, openmm.VerletIntegrator(0.001), platform, threads)
  ctx.setPositions(x)
  openmm.LocalEnergyMinimizer.minimize(ctx, tolerance)
  state = ctx.getState(getPositions=True, getEnergy=True)
  return (np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)),
          state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))


def default_cache_dir() -> pathlib.Path:
  """``$TOMIOKA_JAX_CACHE/timewarp_md``, else ``~/.cache/tomioka_jax/timewarp_md``."""
  root = os.environ.get("TOMIOKA_JAX_CACHE")
  base = pathlib.Path(root) if root else pathlib.Path.home() / ".cache" / "tomioka_jax"
  return base / "timewarp_md"


def simulate_md(molecule: MolecularSystem, num_frames: int, *, spacing: int = 1000,
                temperature: float = MD_TEMPERATURE, friction: float = MD_FRICTION,
                timestep_fs: float = MD_TIMESTEP_FS, burn_in_steps: int = 20_000,
                seed: int = 0, positions: Any = None, platform: str = "Reference",
                threads: int = 1, cache_dir: str | os.PathLike | None = None,
                chunk_frames: int = 1000, time_budget_s: float | None = None,
                minimize_tolerance: float = MINIMIZE_TOLERANCE) -> MDTrajectory:
  """Langevin MD of ``molecule`` (the reference's protocol), one frame every ``spacing`` steps.

  Minimises the start (``positions`` or the molecule's) to ``minimize_tolerance``, draws
  Maxwell-Boltzmann velocities at ``temperature``, runs ``burn_in_steps`` steps of OpenMM's
  ``LangevinMiddleIntegrator(temperature, friction, timestep)``, then ``num_frames * spacing``
  steps saving every ``spacing``-th. With ``cache_dir`` (``None``: no cache; ``"default"``:
  :func:`default_cache_dir`) the frames are written in ``.npz`` chunks of ``chunk_frames``
  under a directory named by the settings' hash, each with the integrator's end state; a later
  call with the same settings reads the chunks it finds and continues from the last one (so a
  long run can be split into several processes, e.g. with ``time_budget_s``). Chunk ``c``'s
  Langevin noise is seeded by ``(seed, c)``, so a resumed run equals an uninterrupted one up to
  the platform's determinism.

  Args:
    molecule: the system.
    num_frames: frames to return.
    spacing: integration steps between frames.
    temperature: K (310 as in the reference).
    friction: 1/ps (0.3).
    timestep_fs: fs (0.5).
    burn_in_steps: steps after minimisation, not saved.
    seed: velocities and Langevin noise.
    positions: optional ``(n_atoms, 3)`` start (nm).
    platform, threads: as :class:`EnergyEvaluator`.
    cache_dir: the chunk cache (see above).
    chunk_frames: frames per chunk file.
    time_budget_s: stop at the first chunk boundary after this many seconds of integration in
      this call; the result then has ``complete=False`` and fewer frames (call again to go on).
    minimize_tolerance: kJ/(mol nm).

  Raises:
    ValueError: non-positive sizes or physical parameters, bad start positions (shape, atom
      count, non-finite), an unknown platform.
  """
  openmm, _, unit = _openmm()
  for arg, val in (("num_frames", num_frames), ("spacing", spacing),
                   ("chunk_frames", chunk_frames)):
    _check_positive(arg, val, integer=True)
  for arg, val in (("temperature", temperature), ("friction", friction),
                   ("timestep_fs", timestep_fs)):
    _check_positive(arg, val)
  if isinstance(burn_in_steps, bool) or not isinstance(burn_in_steps, (int, np.integer)) or (
      burn_in_steps < 0):
    raise ValueError(f"burn_in_steps must be an integer >= 0, got burn_in_steps={burn_in_steps!r}")
  if time_budget_s is not None:
    _check_positive("time_budget_s", time_budget_s)
  start = molecule.positions if positions is None else check_positions(positions, molecule)
  if start.ndim != 2:
    raise ValueError(f"positions must be one conformation (n_atoms, 3), got shape {start.shape}")
  if platform not in PLATFORMS:
    raise ValueError(f"platform must be one of {PLATFORMS}, got platform={platform!r}")
  settings = {"molecule": molecule.fingerprint(), "spacing": int(spacing),
              "temperature": float(temperature), "friction": float(friction),
              "timestep_fs": float(timestep_fs), "burn_in_steps": int(burn_in_steps),
              "seed": int(seed), "chunk_frames": int(chunk_frames),
              "start": hashlib.sha256(np.ascontiguousarray(start).tobytes()).hexdigest()[:16],
              "minimize_tolerance": float(minimize_tolerance), "platform": platform}
  folder = None
  if cache_dir is not None:
    root = default_cache_dir() if cache_dir == "default" else pathlib.Path(cache_dir)
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    folder = root / f"{molecule.name}-{molecule.solvent}-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps(settings, indent=1))

  def langevin(seed_value: int):
    # The seed takes effect when a Context is created, so each chunk gets a fresh Context.
    integrator = openmm.LangevinMiddleIntegrator(temperature * unit.kelvin,
                                                 friction / unit.picosecond,
                                                 timestep_fs * unit.femtosecond)
    integrator.setRandomNumberSeed(seed_value % 2**31 or 1)  # 0 would draw a random seed
    return integrator, _make_context(molecule, integrator, platform, threads)

  kt_per_dof = 0.5 * molecule.degrees_of_freedom * _units.MOLAR_GAS_CONSTANT
  num_chunks = -(-num_frames // chunk_frames)
  chunks, wall, state_end = [], 0.0, None
  for c in range(num_chunks):
    path = None if folder is None else folder / f"chunk_{c:05d}.npz"
    if path is not None and path.exists():
      with np.load(path) as z:
        chunks.append({k: z[k] for k in ("positions", "potential_energy", "kinetic_energy")})
        wall += float(z["wall_s"])
        state_end = (z["end_positions"], z["end_velocities"])
      continue
    if time_budget_s is not None and _wall_here(chunks) >= time_budget_s:
      break
    if state_end is None:  # the first chunk: minimise, thermalise, burn in
      integrator, ctx = langevin(int(seed) * 7919 + 1)
      ctx.setPositions(start)
      openmm.LocalEnergyMinimizer.minimize(ctx, minimize_tolerance)
      ctx.setVelocitiesToTemperature(temperature * unit.kelvin, (int(seed) % 2**31) or 1)
      if burn_in_steps:
        integrator.step(int(burn_in_steps))
      st = ctx.getState(getPositions=True, getVelocities=True)
      state_end = (st.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
                   st.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond))
    integrator, ctx = langevin(int(seed) * 7919 + 2 + c)
    ctx.setPositions(state_end[0])
    ctx.setVelocities(state_end[1])
    t0 = time.perf_counter()  # the burn-in is not charged to the frames
    frames = min(chunk_frames, num_frames - c * chunk_frames) if folder is None else chunk_frames
    pos = np.empty((frames, molecule.num_atoms, 3), np.float32)
    pot, kin = np.empty(frames), np.empty(frames)
    for f in range(frames):
      integrator.step(int(spacing))
      st = ctx.getState(getPositions=True, getEnergy=True)
      pos[f] = st.getPositions(asNumpy=True)._value  # nm  # pylint: disable=protected-access
      pot[f] = st.getPotentialEnergy()._value  # pylint: disable=protected-access
      kin[f] = st.getKineticEnergy()._value  # pylint: disable=protected-access
    st = ctx.getState(getPositions=True, getVelocities=True)
    state_end = (np.asarray(st.getPositions(asNumpy=True).value_in_unit(unit.nanometer)),
                 np.asarray(st.getVelocities(asNumpy=True).value_in_unit(
                     unit.nanometer / unit.picosecond)))
    dt = time.perf_counter() - t0
    wall += dt
    chunk = {"positions": pos, "potential_energy": pot, "kinetic_energy": kin}
    chunk["_new_s"] = dt
    chunks.append(chunk)
    if path is not None:
      tmp = path.with_suffix(".tmp.npz")
      np.savez(tmp, positions=pos, potential_energy=pot, kinetic_energy=kin, wall_s=dt,
               end_positions=state_end[0], end_velocities=state_end[1])
      os.replace(tmp, path)
  if chunks:
    pos = np.concatenate([c["positions"] for c in chunks])[:num_frames]
    pot = np.concatenate([c["potential_energy"] for c in chunks])[:num_frames]
    kin = np.concatenate([c["kinetic_energy"] for c in chunks])[:num_frames]
  else:
    pos = np.empty((0, molecule.num_atoms, 3), np.float32)
    pot = kin = np.empty(0)
  per_frame = wall / max(sum(c["positions"].shape[0] for c in chunks), 1)
  return MDTrajectory(positions=pos, potential_energy=pot,
                      kinetic_temperature=kin / kt_per_dof,
                      frame_time_ps=spacing * timestep_fs * 1e-3,
                      wall_seconds=per_frame * pos.shape[0], steps=int(pos.shape[0] * spacing),
                      complete=pos.shape[0] == num_frames)


def _wall_here(chunks: list[dict]) -> float:
  """Seconds of integration spent in this call on ``chunks`` (those not read from the cache)."""
  return sum(c.get("_new_s", 0.0) for c in chunks)


def rigid_align(y: Any, x: Any) -> np.ndarray:
  """``y`` rigidly moved onto ``x`` (least squares over all atoms, equal weights; Kabsch).

  For ``(..., n, 3)`` pairs: ``R (y - mean y) + mean x`` with the proper rotation ``R`` (``det
  R = +1``) minimising ``sum_i |R (y_i - mean y) + mean x - x_i|^2``, the SVD solution of
  Kabsch (1976). Float64 NumPy.
  """
  y = np.asarray(y, np.float64)
  x = np.asarray(x, np.float64)
  if y.shape != x.shape or y.ndim < 2 or y.shape[-1] != 3:
    raise ValueError(f"y and x must have the same shape (..., n_atoms, 3), got {y.shape} and "
                     f"{x.shape}")
  yc = y - y.mean(-2, keepdims=True)
  xm = x.mean(-2, keepdims=True)
  cov = np.swapaxes(yc, -1, -2) @ (x - xm)  # (..., 3, 3) = sum_i yc_i x_i^T
  u, _, vt = np.linalg.svd(cov)
  d = np.sign(np.linalg.det(np.swapaxes(vt, -1, -2) @ np.swapaxes(u, -1, -2)))
  fix = np.ones(d.shape + (3,))
  fix[..., 2] = d
  rot = np.swapaxes(vt, -1, -2) @ (fix[..., :, None] * np.swapaxes(u, -1, -2))
  return yc @ np.swapaxes(rot, -1, -2) + xm


def training_pairs(trajectory: Any, lag: int, molecule: MolecularSystem | int | None = None,
                   *, align: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """Timewarp's training pairs ``(x_t, x_{t+lag})`` of one or several trajectories.

  With ``align`` the later frame is rigidly aligned onto the earlier (:func:`rigid_align`):
  the pairs then carry the internal motion only, not the molecule's tumbling (fast in implicit
  solvent: at 0.5 ps it moves atoms more than the internal motion does). The Boltzmann density
  is invariant to rigid motions, so a flow trained on aligned pairs is still a valid
  Metropolis-Hastings proposal for the same target (MH is exact for any proposal).

  Args:
    trajectory: ``(T, n_atoms, 3)`` frames or ``(n_traj, T, n_atoms, 3)`` trajectories.
    lag: frames between the two members of a pair (``tau = lag * frame time``), ``1 <= lag
      < T``.
    molecule: when given, its atom count must match the frames'.
    align: rigidly align ``x_{t+lag}`` onto ``x_t``.

  Returns:
    ``(x_t, x_{t+lag})``, each ``(n_traj (T - lag), n_atoms, 3)`` float32 (trajectory-major).

  Raises:
    ValueError: ``lag`` not a positive integer or ``>= T``; a shape other than
      ``(T, n, 3)`` / ``(n_traj, T, n, 3)``; atom count not the molecule's; non-finite
      coordinates.
  """
  x = np.asarray(trajectory)
  if x.ndim not in (3, 4) or x.shape[-1] != 3:
    raise ValueError(f"trajectory must have shape (T, n_atoms, 3) or (n_traj, T, n_atoms, 3), "
                     f"got {x.shape}")
  if x.ndim == 3:
    x = x[None]
  if isinstance(lag, bool) or not isinstance(lag, (int, np.integer)) or lag < 1:
    raise ValueError(f"lag must be a positive integer number of frames, got lag={lag!r}")
  length = x.shape[1]
  if lag >= length:
    raise ValueError(f"lag must be smaller than the trajectory length T={length}, got lag={lag}")
  if molecule is not None:
    check_positions(x[:, :1], molecule, name="trajectory")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"trajectory must have finite coordinates, got "
                     f"{int(np.sum(~np.isfinite(x)))} non-finite values")
  n = x.shape[-2]
  before = x[:, :length - lag].reshape(-1, n, 3).astype(np.float32)
  after = x[:, lag:].reshape(-1, n, 3)
  if align:
    after = rigid_align(after, before)
  return before, after.astype(np.float32)
