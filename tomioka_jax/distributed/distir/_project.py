"""Rank projection of a global DistIR program, and real execution of the per-device programs.

Santhanam et al. (2021), section 3.3 (the reference's ``rank_projector``). A transform
writes one global program; a real cluster runs one program per device (an MPI rank).
:func:`rank_projection` splits the global program: each device gets its inputs, its compute
ops in the global order, and its part of every communication op --

* a ``send`` becomes a ``send`` (input, no output) on the source and a ``recv`` (output, no
  input) on the target;
* a collective (``allreduce``, ``allgather``, ``reduce_scatter``, ``mpi_*``) becomes, on each
  participating device, an op of the same name over that device's inputs and outputs, with
  the participating ``group`` of devices.

Every projected communication op carries ``comm_id`` (the op's index in the global program)
and the positions of its values in the global op, so the participants can be matched.

:func:`run_projected` executes the per-device programs on local JAX devices (the test suite
has 8 simulated CPU devices) from one controller: each device's maximal runs of compute ops
are jitted segments, dispatched asynchronously on that device; a communication op runs when
every participant has reached it, with ``jax.device_put`` copies between devices (a
collective is the sum or concatenation of the copies on each participant). Because every
device's program is the restriction of one global order, the earliest pending communication
op always has all its participants waiting, so the walk never deadlocks. The wall time of a
whole step (median over repeats, compilation excluded) is what the simulator is checked
against.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tomioka_jax.distributed.distir import _ir as ir

# --------------------------------------------------------------------------------------
# Projection
# --------------------------------------------------------------------------------------


def rank_projection(fn: ir.Function) -> dict[int, ir.Function]:
  """Per-device programs of a global function (see the module docstring).

  Returns:
    ``{device: Function}`` for every device of ``fn``. Device ``r``'s inputs are ``fn``'s
    inputs on ``r`` and its outputs ``fn``'s outputs on ``r``, both in ``fn``'s order.
  """
  devices = fn.devices
  inputs = {r: [] for r in devices}
  ops = {r: [] for r in devices}
  for value in fn.inputs:
    inputs[value.type.device].append(value)
  for gid, op in enumerate(fn.ops):
    if not op.is_communication:
      targets = op.devices or devices  # an op on constants only: every device has it
      if len(targets) > 1 and op.devices:
        raise ValueError(f"rank_projection: compute op {op.name} spans devices {op.devices}")
      for r in targets:
        ops[r].append(op)
      continue
    group = op.devices
    for r in group:
      in_pos = tuple(i for i, v in enumerate(op.inputs) if v.type.device == r)
      out_pos = tuple(i for i, v in enumerate(op.outputs) if v.type.device == r)
      name = op.name
      if op.name == "send":
        name = "send" if in_pos else "recv"
      params = {"comm_id": gid, "op": op.name, "group": group, "params": dict(op.params),
                "input_positions": in_pos, "output_positions": out_pos,
                "num_inputs": len(op.inputs), "num_outputs": len(op.outputs)}
      if op.name == "send":
        params["source"] = op.inputs[0].type.device
        params["device"] = op.params["device"]
      ops[r].append(ir.Op(name, tuple(op.inputs[i] for i in in_pos),
                          tuple(op.outputs[i] for i in out_pos), params))
  programs = {}
  for r in devices:
    outs = tuple(v for v in fn.outputs if v.type.device == r)
    programs[r] = ir.Function(f"{fn.name}.rank{r}", tuple(inputs[r]), tuple(ops[r]),
                              outs).verify()
  return programs


def project_inputs(fn: ir.Function, args: Sequence[Any]) -> dict[int, list[Any]]:
  """Splits the global function's arguments into the per-device programs' inputs."""
  if len(args) != len(fn.inputs):
    raise ValueError(f"project_inputs: {fn.name} takes {len(fn.inputs)} inputs, got "
                     f"{len(args)}")
  out: dict[int, list[Any]] = {r: [] for r in fn.devices}
  for value, arg in zip(fn.inputs, args):
    out[value.type.device].append(arg)
  return out


def gather_projected_outputs(fn: ir.Function, outputs: Mapping[int, Sequence[Any]]
                             ) -> tuple:
  """The global function's outputs, in its order, from the per-device programs' outputs."""
  iters = {r: iter(outs) for r, outs in outputs.items()}
  return tuple(next(iters[v.type.device]) for v in fn.outputs)


# --------------------------------------------------------------------------------------
# Execution on local devices
# --------------------------------------------------------------------------------------


def _params_key(op: ir.Op):
  try:
    key = tuple(sorted(op.params.items()))
    hash(key)
    return key
  except TypeError:
    return id(op)


class _Segment:
  """A maximal run of compute ops of one device, compiled as one jitted function."""

  def __init__(self, ops: Sequence[ir.Op], live_after: set[int], cache: dict):
    defined: dict[int, tuple[int, int]] = {}
    ins: list[ir.Value] = []
    in_index: dict[int, int] = {}
    structure = []
    for i, op in enumerate(ops):
      refs = []
      for v in op.inputs:
        if v.is_const:
          refs.append(("const", id(v)))
        elif id(v) in defined:
          refs.append(("local",) + defined[id(v)])
        else:
          if id(v) not in in_index:
            in_index[id(v)] = len(ins)
            ins.append(v)
          refs.append(("in", in_index[id(v)]))
      for j, v in enumerate(op.outputs):
        defined[id(v)] = (i, j)
      structure.append((op.name, _params_key(op), tuple(refs)))
    outs = [v for op in ops for v in op.outputs if id(v) in live_after]
    out_refs = tuple(defined[id(v)] for v in outs)
    self.inputs, self.outputs = ins, outs
    key = (tuple(structure), out_refs,
           tuple((v.type.shape, v.type.dtype.name) for v in ins))
    if key not in cache:
      cache[key] = jax.jit(functools.partial(_run_ops, tuple(ops), out_refs))
    self.call = cache[key]


def _run_ops(ops, out_refs, *args):
  env: dict[tuple[int, int], Any] = {}
  by_id: dict[int, Any] = {}
  index = {}
  for i, op in enumerate(ops):
    for j, v in enumerate(op.outputs):
      index[id(v)] = (i, j)
  arg_iter = iter(args)
  for i, op in enumerate(ops):
    vals = []
    for v in op.inputs:
      if v.is_const:
        vals.append(v.const)
      elif id(v) in index:
        vals.append(env[index[id(v)]])
      else:
        if id(v) not in by_id:
          by_id[id(v)] = next(arg_iter)
        vals.append(by_id[id(v)])
    out = op.primitive.bind(*vals, **op.params)
    out = tuple(out) if op.primitive.multiple_results else (out,)
    for j, x in enumerate(out):
      env[i, j] = x
  return tuple(env[r] for r in out_refs)


def _plan(program: ir.Function, cache: dict) -> list:
  """The program as a list of ``_Segment``s and communication ops."""
  # used_from[i]: the values that ops i, i+1, ... or the outputs read
  used_from: list[set[int]] = [set() for _ in range(len(program.ops) + 1)]
  live = {id(v) for v in program.outputs}
  used_from[len(program.ops)] = set(live)
  for i in reversed(range(len(program.ops))):
    live |= {id(v) for v in program.ops[i].inputs}
    used_from[i] = set(live)
  steps, run = [], []
  for i, op in enumerate(program.ops):
    if op.primitive is None:
      if run:
        steps.append(_Segment(run, used_from[i], cache))
        run = []
      steps.append(op)
    else:
      run.append(op)
  if run:
    steps.append(_Segment(run, used_from[len(program.ops)], cache))
  return steps


@jax.jit
def _sum(*xs):
  return functools.reduce(jnp.add, xs)


@functools.partial(jax.jit, static_argnums=0)
def _concatenate(axis, *xs):
  return jnp.concatenate(xs, axis=axis)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _sum_slice(axis, n, i, *xs):
  return jnp.split(functools.reduce(jnp.add, xs), n, axis=axis)[i]


@functools.lru_cache(maxsize=None)
def _psum_program(devices: tuple, shape: tuple, dtype: str):
  mesh = jax.sharding.Mesh(np.array(devices, dtype=object), ("g",))
  spec = jax.sharding.PartitionSpec("g")
  sharding = jax.sharding.NamedSharding(mesh, spec)
  program = jax.jit(jax.shard_map(lambda a: jax.lax.psum(a, "g"), mesh=mesh, in_specs=spec,
                                  out_specs=spec))
  return program, sharding


def _xla_allreduce(xs, devices):
  """``psum`` under ``shard_map`` over the participants' devices: XLA's own collective."""
  shape = np.shape(xs[0])
  program, sharding = _psum_program(tuple(devices), tuple(shape), np.dtype(xs[0].dtype).name)
  global_shape = (len(xs) * shape[0],) + tuple(shape[1:])
  stacked = jax.make_array_from_single_device_arrays(global_shape, sharding, list(xs))
  out = program(stacked)
  by_device = {shard.device: shard.data for shard in out.addressable_shards}
  return [by_device[dev] for dev in devices]


def _communicate(parts: dict[int, ir.Op], env: dict[int, dict], placement,
                 collectives: str) -> None:
  """Runs one projected communication op, given every participant's part."""
  any_part = next(iter(parts.values()))
  p = any_part.params
  kind, inner = p["op"], p["params"]
  xs: list[Any] = [None] * p["num_inputs"]
  targets: list[tuple[int, ir.Value] | None] = [None] * p["num_outputs"]
  for r, part in parts.items():
    for pos, v in zip(part.params["input_positions"], part.inputs):
      xs[pos] = env[r][id(v)]
    for pos, v in zip(part.params["output_positions"], part.outputs):
      targets[pos] = (r, v)

  def put(x, r):
    return jax.device_put(x, placement[r])

  if kind in ("send", "mpi_broadcast"):
    results = [put(xs[0], r) for r, _ in targets]
  elif kind == "allreduce" and collectives == "xla" and np.ndim(xs[0]) >= 1:
    results = _xla_allreduce(xs, [placement[r] for r, _ in targets])
  elif kind == "allreduce":
    # reduce on the first participant, then copy the sum to the others
    total = _sum(*[put(x, targets[0][0]) for x in xs])
    results = [total] + [put(total, r) for r, _ in targets[1:]]
  elif kind == "allgather":
    results = [_concatenate(inner["axis"], *[put(x, r) for x in xs]) for r, _ in targets]
  elif kind == "reduce_scatter":
    n = len(targets)
    results = [_sum_slice(inner["axis"], n, i, *[put(x, r) for x in xs])
               for i, (r, _) in enumerate(targets)]
  elif kind == "mpi_scatter":
    pieces = jnp.split(xs[0], len(targets), axis=inner["axis"])
    results = [put(piece, r) for piece, (r, _) in zip(pieces, targets)]
  elif kind == "mpi_gather":
    (r, _), = targets
    results = [_concatenate(inner["axis"], *[put(x, r) for x in xs])]
  else:
    raise ValueError(f"run_projected: unknown communication op {kind!r}")
  for (r, v), x in zip(targets, results):
    env[r][id(v)] = x


def run_projected(programs: Mapping[int, ir.Function],
                  per_device_inputs: Mapping[int, Sequence[Any]], *,
                  devices: Mapping[int, Any] | Sequence[Any] | None = None,
                  repeats: int = 5, collectives: str = "copies"
                  ) -> tuple[dict[int, tuple], float]:
  """Executes per-device programs (from :func:`rank_projection`) on local JAX devices.

  Args:
    programs: ``{rank: Function}``.
    per_device_inputs: ``{rank: arrays}`` in each program's input order
      (:func:`project_inputs`).
    devices: the JAX device of each rank (a mapping, or a sequence indexed by rank);
      default ``jax.devices()[rank]``.
    repeats: timed steps after one untimed (compiling) step; ``>= 1``.
    collectives: ``"copies"`` (an allreduce sums ``device_put`` copies on its first
      participant and copies the sum back) or ``"xla"`` (an allreduce of arrays of rank
      >= 1 is ``psum`` under ``jax.shard_map`` over the participants' devices).

  Returns:
    ``({rank: outputs}, seconds)``: the last step's outputs (``jax.Array``s on their
    devices) and the median wall time of a step, from dispatch to every output ready.
  """
  if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
    raise ValueError(f"run_projected: repeats must be an integer >= 1, got {repeats!r}")
  if collectives not in ("copies", "xla"):
    raise ValueError(f"run_projected: collectives must be 'copies' or 'xla', got "
                     f"{collectives!r}")
  ranks = sorted(programs)
  if devices is None:
    local = jax.devices()
    if ranks and ranks[-1] >= len(local):
      raise ValueError(f"run_projected: rank {ranks[-1]} needs {ranks[-1] + 1} local devices,"
                       f" JAX has {len(local)} (set jax_num_cpu_devices or pass devices=)")
    placement = {r: local[r] for r in ranks}
  elif isinstance(devices, Mapping):
    placement = {r: devices[r] for r in ranks}
  else:
    placement = {r: devices[r] for r in ranks}
  for r in ranks:
    if r not in per_device_inputs:
      raise ValueError(f"run_projected: per_device_inputs has no entry for rank {r}")
    if len(per_device_inputs[r]) != len(programs[r].inputs):
      raise ValueError(f"run_projected: rank {r} takes {len(programs[r].inputs)} inputs, "
                       f"got {len(per_device_inputs[r])}")
  cache: dict = {}
  plans = {r: _plan(programs[r], cache) for r in ranks}
  placed = {r: [jax.device_put(x, placement[r]) for x in per_device_inputs[r]]
            for r in ranks}

  def step():
    env = {r: {id(v): x for v, x in zip(programs[r].inputs, placed[r])} for r in ranks}
    pointer = {r: 0 for r in ranks}
    waiting: dict[int, dict[int, ir.Op]] = {}
    finished: set[int] = set()
    remaining = len(ranks)
    while remaining:
      progressed = False
      for r in ranks:
        plan = plans[r]
        while pointer[r] < len(plan):
          item = plan[pointer[r]]
          if isinstance(item, _Segment):
            with jax.default_device(placement[r]):
              outs = item.call(*[env[r][id(v)] for v in item.inputs])
            for v, x in zip(item.outputs, outs):
              env[r][id(v)] = x
            pointer[r] += 1
            progressed = True
            continue
          cid = item.params["comm_id"]
          parts = waiting.setdefault(cid, {})
          if r in parts:
            break  # already arrived, still waiting for the others
          parts[r] = item
          progressed = True
          if set(parts) != set(item.params["group"]):
            break
          _communicate(parts, env, placement, collectives)
          del waiting[cid]
          for q in parts:
            pointer[q] += 1
        if pointer[r] == len(plan) and r not in finished:
          finished.add(r)
          remaining -= 1
      if not progressed and remaining:
        stuck = {r: plans[r][pointer[r]] for r in ranks if pointer[r] < len(plans[r])}
        raise ValueError(f"run_projected: the programs deadlock at {stuck}")
    outs = {r: tuple(env[r][id(v)] if not v.is_const else v.const
                     for v in programs[r].outputs) for r in ranks}
    jax.block_until_ready(outs)
    return outs

  outs = step()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    outs = step()
    times.append(time.perf_counter() - start)
  return outs, float(statistics.median(times))
