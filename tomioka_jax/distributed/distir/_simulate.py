"""DistIR's simulator: per-device clocks, live memory and a trace, as one more semantics.

Santhanam, Krishna, Tomioka, Harris, Zaharia, "DistIR" (arXiv 2111.05426), section 4
(``dist_ir/executor/simulator.py`` in the reference).

The simulator is the abstract interpreter (:class:`~interpret.AbstractInterpreter`) run with
abstract values = :class:`~ir.TensorType` and a state of

* a clock per device ``c_d`` (seconds). A compute op on device ``d`` with kernel time ``t``
  (:class:`~tomioka_jax.distributed.distir.CostModel`) runs over ``[c_d, c_d + t)``. An op on
  several devices (a collective, or a send: source and target) first synchronizes them,
  ``c_d <- max_{d' in op} c_{d'}``, then advances each by the op's time, so a send is a
  rendezvous: the source waits for the target to reach it, and both are busy while it moves;
* live bytes per device: a function input (weights, the batch) is resident throughout; an
  op's outputs are allocated when it runs, and a value is freed after its last consumer
  (outputs of the function are kept). The peak of the live bytes is the peak memory;
* a list of trace events, exported in the Chrome trace format (``chrome://tracing``,
  Perfetto).

The step time is ``max_d c_d``. With ``executors=k`` the devices additionally share ``k``
executors: every op also waits for the earliest free one and holds it for its duration. This
models simulated devices that are threads of one host (8 XLA:CPU devices on 2 cores), where
the devices' work is serialized onto the cores; ``executors=None`` (default) is the paper's
model of devices that each compute on their own.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import os
from collections.abc import Mapping
from typing import Any

from tomioka_jax.distributed.distir import _cost as cost_lib
from tomioka_jax.distributed.distir import _interpret as interpret
from tomioka_jax.distributed.distir import _ir as ir
from tomioka_jax.distributed.distir import _runtime as runtime_lib


@dataclasses.dataclass(frozen=True)
class Simulation:
  """The result of :func:`simulate`.

  Attributes:
    total_time: the step time, the largest device clock (seconds).
    device_times: each device's clock at the end (seconds).
    peak_memory: each device's peak live bytes.
    events: one dict per (op, device) interval: ``name``, ``device``, ``start``,
      ``duration`` (seconds), ``kind`` (``"compute"`` or ``"communication"``).
  """

  total_time: float
  device_times: Mapping[int, float]
  peak_memory: Mapping[int, int]
  events: tuple[dict, ...]

  def busy_time(self, device: int) -> float:
    """Seconds ``device`` spends in ops (its clock minus its idle waits)."""
    return sum(e["duration"] for e in self.events if e["device"] == device)

  def to_chrome_trace(self, path: str | os.PathLike | None = None) -> dict:
    """The trace as a Chrome-trace dict (``traceEvents``; microseconds); written to ``path``.

    Each device is a process (``pid``) named ``device d``; each op a complete event
    (``ph: "X"``) with ``ts`` and ``dur`` in microseconds.
    """
    events = [{"name": "process_name", "ph": "M", "pid": d, "tid": 0,
               "args": {"name": f"device {d}"}} for d in sorted(self.device_times)]
    for e in self.events:
      events.append({"name": e["name"], "cat": e["kind"], "ph": "X", "pid": e["device"],
                     "tid": 0, "ts": e["start"] * 1e6, "dur": e["duration"] * 1e6})
    trace = {"traceEvents": events, "displayTimeUnit": "ms"}
    if path is not None:
      with open(path, "w", encoding="utf-8") as f:
        json.dump(trace, f)
    return trace


@dataclasses.dataclass
class _State:
  model: cost_lib.CostModel
  clocks: dict[int, float]
  live: dict[int, int]
  peak: dict[int, int]
  remaining: dict[int, int]      # id(value) -> consumers not yet run
  keep: set[int]                 # ids of values never freed (inputs, outputs)
  events: list[dict]
  executors: list[float] | None  # heap of executor free times
  per_segment: bool = False      # charge the launch overhead once per compute segment
  in_segment: set[int] = dataclasses.field(default_factory=set)
  runtime: Any = None            # RuntimeConstants: the local runtime's model
  plan: Any = None               # its fusion plan of the function


def _allocate(state: _State, value: ir.Value) -> None:
  d = value.type.device
  if d is None:
    return
  state.live[d] = state.live.get(d, 0) + value.type.nbytes
  state.peak[d] = max(state.peak.get(d, 0), state.live[d])


def _free(state: _State, value: ir.Value) -> None:
  d = value.type.device
  if d is not None:
    state.live[d] -= value.type.nbytes


_WIDE = ("dot_general", "conv_general_dilated")


def _simulate_rule(op: ir.Op, types: tuple, state: _State):
  if state.runtime is not None:
    times = runtime_lib.runtime_op_times(op, state.plan, state.runtime,
                                         state.model.free_movement)
  else:
    times = state.model.op_times(op)
  if state.per_segment and state.runtime is None:
    if op.is_communication:
      state.in_segment.difference_update(times)
    else:
      (d,) = times
      launch = state.model.topology.devices[d].launch_overhead
      if times[d] > 0:  # a free op (a bitcast) launches nothing
        body = max(times[d] - launch, 0.0)
        times = {d: body + (0.0 if d in state.in_segment else launch)}
        state.in_segment.add(d)
  devices = sorted(times)
  start = max(state.clocks.get(d, 0.0) for d in devices)
  duration = max(times.values())
  if state.executors is not None and state.runtime is not None and op.name in _WIDE:
    # a product runs on XLA:CPU's threaded library: it holds every executor (core)
    start = max(start, max(state.executors))
    state.executors = [start + duration] * len(state.executors)
  elif state.executors is not None:
    free_at = heapq.heappop(state.executors)
    start = max(start, free_at)
    heapq.heappush(state.executors, start + duration)
  kind = "communication" if op.is_communication else "compute"
  for d in devices:
    # A multi-device op starts together on all its devices (they are synchronized).
    state.events.append({"name": op.name, "device": d, "start": start,
                         "duration": times[d], "kind": kind})
    state.clocks[d] = start + times[d]
  # Memory: outputs live from now; inputs are freed after their last consumer.
  for value in op.outputs:
    _allocate(state, value)
  for value in op.outputs:
    if state.remaining.get(id(value), 0) == 0 and id(value) not in state.keep:
      _free(state, value)
  for value in op.inputs:
    if value.is_const or id(value) in state.keep:
      continue
    state.remaining[id(value)] -= 1
    if state.remaining[id(value)] == 0:
      _free(state, value)
  return tuple(v.type for v in op.outputs), state


_SIMULATOR = interpret.AbstractInterpreter(
    "simulate", {name: _simulate_rule for name in ir.COMMUNICATION_OPS},
    primitive_rule=_simulate_rule, constant=lambda value: value.type)


def simulate(fn: ir.Function, topology: ir.Topology | None = None, *,
             cost_model: cost_lib.CostModel | None = None,
             executors: int | None = None, launch: str = "op",
             runtime: runtime_lib.RuntimeConstants | None = None) -> Simulation:
  """Simulates one run of ``fn`` (module docstring): step time, peak memory, trace.

  Args:
    fn: the program (every op's devices must be in the topology).
    topology: the devices and links; default: ``cost_model.topology``, else a uniform
      topology of the reference's V100-class devices over ``fn``'s devices.
    cost_model: how long each op takes (default ``CostModel(topology)``).
    executors: ``None`` (each device runs on its own) or the number of executors (cores)
      that all devices share.
    launch: ``"op"`` (the paper: every op pays the launch overhead) or ``"segment"`` (a
      device pays it once per maximal run of compute ops between its communication ops:
      what a runtime that compiles each such run into one executable pays, e.g.
      ``run_projected``; the ops inside are fused by XLA).
    runtime: :class:`~tomioka_jax.distributed.distir.RuntimeConstants`: charge every op
      the local runtime's cost instead (``_runtime``'s module docstring: a dispatch per
      segment, fused kernels, products, ``device_put`` copies); the cost model then only
      decides ``free_movement``, and ``launch`` must be ``"segment"``. With ``executors`` a
      product holds all of them (XLA:CPU threads it over the cores), every other op one.

  Raises:
    ValueError: a device of ``fn`` is not in the topology, or ``executors`` is not a
      positive integer.
  """
  if cost_model is None:
    if topology is None:
      topology = ir.Topology.uniform(max(fn.devices, default=0) + 1)
    cost_model = cost_lib.CostModel(topology)
  elif topology is not None and topology is not cost_model.topology:
    raise ValueError("simulate: pass either topology or cost_model (whose topology is used),"
                     " not two different topologies")
  topology = cost_model.topology
  for d in fn.devices:
    if d >= topology.num_devices:
      raise ValueError(f"simulate: {fn.name} uses device {d}, the topology has "
                       f"{topology.num_devices} devices")
  if launch not in ("op", "segment"):
    raise ValueError(f"simulate: launch must be 'op' or 'segment', got {launch!r}")
  if runtime is not None:
    if not isinstance(runtime, runtime_lib.RuntimeConstants):
      raise ValueError(f"simulate: runtime must be a RuntimeConstants, got "
                       f"{type(runtime).__name__}")
    if launch != "segment":
      raise ValueError(f"simulate: runtime= models per-segment dispatch; pass "
                       f"launch='segment', got {launch!r}")
  if executors is not None and (not isinstance(executors, int) or executors < 1):
    raise ValueError(f"simulate: executors must be None or an integer >= 1, got "
                     f"{executors!r}")
  remaining: dict[int, int] = {}
  for op in fn.ops:
    for value in op.inputs:
      if not value.is_const:
        remaining[id(value)] = remaining.get(id(value), 0) + 1
  keep = {id(v) for v in fn.inputs} | {id(v) for v in fn.outputs}
  state = _State(cost_model, {d: 0.0 for d in fn.devices}, {}, {}, remaining, keep, [],
                 [0.0] * executors if executors is not None else None,
                 per_segment=launch == "segment", runtime=runtime,
                 plan=(runtime_lib.fusion_plan(fn, cost_model.free_movement)
                       if runtime is not None else None))
  for value in fn.inputs:
    _allocate(state, value)
  for d in fn.devices:
    state.peak.setdefault(d, 0)
  _, state = _SIMULATOR.run(fn, [v.type for v in fn.inputs], state)
  total = max(state.clocks.values(), default=0.0)
  return Simulation(total, dict(state.clocks), dict(state.peak), tuple(state.events))


def simulation_summary(sim: Simulation) -> dict[str, Any]:
  """Plain numbers of a simulation: total time, max peak memory, busy fraction per device."""
  return {"total_time": sim.total_time,
          "peak_memory": max(sim.peak_memory.values(), default=0),
          "busy": {d: (sim.busy_time(d) / sim.total_time if sim.total_time else 0.0)
                   for d in sim.device_times}}
