"""DistIR's cost model: FLOPs and bytes of each op, kernel times, alpha-beta communication.

Santhanam, Krishna, Tomioka, Harris, Zaharia, "DistIR" (arXiv 2111.05426), section 4
(``dist_ir/executor/cost_model.py`` in the reference).

**Compute.** :func:`op_cost` counts an op's floating-point operations and the bytes it reads
and writes, by the category of its primitive (:data:`~ir.PRIMITIVE_CATEGORIES`):

==============  ===========================================================================
``dot``         ``2 * prod(output dims) * prod(contracted dims)`` (``2mnk`` for a matmul)
``conv``        ``2 * N * C_out * C_in/groups * sum over output positions of the kernel taps
                that land on the input`` (padding and dilation holes excluded, as XLA counts)
``elementwise`` one per output element (a transcendental counts as one)
``reduction``   ``size(input) - size(output)`` for ``reduce_*`` (one binary op per element
                folded in); one per input element for cumulative and window reductions
``movement``    no FLOPs, only bytes
``random``      ``45`` per output word (threefry; XLA:CPU counts ~45 per 32-bit word)
``scan``        the body's cost ``x length``; ``cond``: the field-wise maximum over branches
==============  ===========================================================================

Every op reads its inputs and writes its outputs once (``bytes_read``, ``bytes_written``):
the unfused view. XLA fuses chains of elementwise ops into one kernel, so on a fused program
its "bytes accessed" is smaller than our sum; FLOPs agree exactly.

**Kernel time** on a device with peak rate ``F`` (FLOP/s), memory bandwidth ``B`` (bytes/s)
and launch overhead ``L`` (s)::

    t = L + flops / F + bytes / B                  (combine="sum", the reference's form)
    t = L + max(flops / F, bytes / B)              (combine="max", the roofline)

The sum is the default: it is linear in ``(L, 1/F, 1/B)``, so the constants that
:func:`~tomioka_jax.distributed.distir.calibrate` fits by non-negative least squares are
exactly the ones the simulator then uses; the two forms differ by at most 2x, and only near
the ridge point, where neither term dominates.

**Communication** (alpha-beta): a message of ``m`` bytes over a link of latency ``alpha``
and bandwidth ``beta`` takes ``alpha + m / beta``. For a collective over ``N`` devices in a
ring (the slowest link and largest latency of the ring bound every step), with ``M`` the size
of the full (reduced or gathered) tensor:

==================  ==========================================================
``send``            ``alpha + M / beta``
``allreduce``       ``2(N-1) alpha + 2(N-1)/N * M / beta``   (reduce-scatter + allgather)
``allgather``       ``(N-1) alpha + (N-1)/N * M / beta``
``reduce_scatter``  ``(N-1) alpha + (N-1)/N * M / beta``
``mpi_broadcast``   ``ceil(log2 N) (alpha + M / beta)``      (binomial tree)
``mpi_scatter``     ``(N-1) alpha + (N-1)/N * M / beta``     (the root sends each shard)
``mpi_gather``      ``(N-1) alpha + (N-1)/N * M / beta``     (the root receives each shard)
==================  ==========================================================

(The reference charges allgather the all-reduce's ``2(N-1)/N``; an allgather moves half the
data of an all-reduce.) Compute in a collective (the sums of a reduction) is not charged.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from jax.extend import core as jex_core

from tomioka_jax.distributed.distir import _interpret as interpret
from tomioka_jax.distributed.distir import _ir as ir

#: Operations per 32-bit word of threefry random bits (XLA:CPU's cost analysis counts ~45).
RANDOM_FLOPS_PER_WORD = 45


@dataclasses.dataclass(frozen=True)
class OpCost:
  """FLOPs and bytes of one op (or a sum of ops)."""

  flops: float = 0.0
  bytes_read: float = 0.0
  bytes_written: float = 0.0

  @property
  def bytes_accessed(self) -> float:
    return self.bytes_read + self.bytes_written

  def __add__(self, other: OpCost) -> OpCost:
    return OpCost(self.flops + other.flops, self.bytes_read + other.bytes_read,
                  self.bytes_written + other.bytes_written)

  def scaled(self, factor: float) -> OpCost:
    return OpCost(self.flops * factor, self.bytes_read * factor, self.bytes_written * factor)

  def maximum(self, other: OpCost) -> OpCost:
    return OpCost(max(self.flops, other.flops), max(self.bytes_read, other.bytes_read),
                  max(self.bytes_written, other.bytes_written))


def _size(t) -> int:
  return int(np.prod(t.shape, dtype=np.int64))


def _nbytes(t) -> int:
  # ``dtype.itemsize`` also covers JAX's extended dtypes (PRNG keys).
  return _size(t) * int(t.dtype.itemsize)


def _valid_taps(in_size: int, kernel: int, out_size: int, stride: int, pad_lo: int,
                lhs_dilation: int, rhs_dilation: int) -> int:
  """Pairs (output position, kernel tap) of one spatial dimension that read a real input."""
  o = np.arange(out_size)[:, None]
  k = np.arange(kernel)[None, :]
  pos = o * stride + k * rhs_dilation - pad_lo
  dilated = (in_size - 1) * lhs_dilation + 1
  ok = (pos >= 0) & (pos < dilated) & (pos % lhs_dilation == 0)
  return int(ok.sum())


def _conv_flops(params: Mapping[str, Any], lhs, rhs, out) -> float:
  dn = params["dimension_numbers"]
  lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
  strides = params["window_strides"]
  padding = params["padding"]
  lhs_dil = params.get("lhs_dilation") or (1,) * len(strides)
  rhs_dil = params.get("rhs_dilation") or (1,) * len(strides)
  taps = 1
  for i in range(len(strides)):
    taps *= _valid_taps(lhs.shape[lhs_spec[2 + i]], rhs.shape[rhs_spec[2 + i]],
                        out.shape[out_spec[2 + i]], strides[i], padding[i][0], lhs_dil[i],
                        rhs_dil[i])
  n_out = out.shape[out_spec[0]]
  c_out = out.shape[out_spec[1]]
  c_in = rhs.shape[rhs_spec[1]]
  return 2.0 * n_out * c_out * c_in * taps


def primitive_cost(name: str, params: Mapping[str, Any], in_types: Sequence[Any],
                   out_types: Sequence[Any]) -> OpCost:
  """Cost of JAX primitive ``name`` on inputs/outputs with ``.shape`` and ``.dtype``.

  Raises:
    ValueError: ``name`` is not in :data:`~ir.PRIMITIVE_CATEGORIES`.
  """
  category = ir.PRIMITIVE_CATEGORIES.get(name)
  if category is None:
    raise ValueError(f"primitive_cost: unknown primitive {name!r}; the cost model knows "
                     f"the {len(ir.PRIMITIVE_CATEGORIES)} in PRIMITIVE_CATEGORIES")
  if category == "control":
    if name == "scan":
      return jaxpr_cost(params["jaxpr"]).scaled(int(params["length"]))
    branches = [jaxpr_cost(b) for b in params["branches"]]
    total = branches[0]
    for b in branches[1:]:
      total = total.maximum(b)
    # The predicate/index is read too.
    return total + OpCost(0.0, _nbytes(in_types[0]), 0.0)
  read = float(sum(_nbytes(t) for t in in_types))
  written = float(sum(_nbytes(t) for t in out_types))
  if category == "dot":
    (lhs_contract, _), _ = params["dimension_numbers"]
    k = int(np.prod([in_types[0].shape[i] for i in lhs_contract], dtype=np.int64))
    flops = 2.0 * _size(out_types[0]) * k
  elif category == "conv":
    flops = _conv_flops(params, in_types[0], in_types[1], out_types[0])
  elif category == "elementwise":
    copies = ("copy", "copy_p", "stop_gradient")
    flops = 0.0 if name in copies else float(_size(out_types[0]))
  elif category == "reduction":
    if name.startswith("reduce_") and not name.startswith("reduce_window"):
      flops = float(_size(in_types[0]) - _size(out_types[0]))
    else:
      flops = float(_size(in_types[0]))
  elif category == "random":
    words = sum(_size(t) for t in out_types)
    flops = float(RANDOM_FLOPS_PER_WORD * words) if name in ("random_bits",
                                                            "threefry2x32") else 0.0
  else:  # movement
    flops = 0.0
  return OpCost(flops, read, written)


def jaxpr_cost(jaxpr) -> OpCost:
  """Summed cost of a jaxpr's equations (call-like primitives are entered, as the importer
  inlines them)."""
  if isinstance(jaxpr, jex_core.ClosedJaxpr):
    jaxpr = jaxpr.jaxpr
  total = OpCost()
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name in ir.INLINED_PRIMITIVES:
      total = total + jaxpr_cost(eqn.params[ir.INLINED_PRIMITIVES[name]])
      continue
    ins = [v.aval for v in eqn.invars]
    outs = [v.aval for v in eqn.outvars]
    total = total + primitive_cost(name, eqn.params, ins, outs)
  return total


def op_cost(op: ir.Op) -> OpCost:
  """FLOPs and bytes of one compute op (module docstring's table).

  A communication op moves bytes between devices and computes nothing here: its
  ``bytes_read`` is what it sends in total and ``bytes_written`` what it delivers; its time
  is :func:`communication_time`'s.
  """
  if op.is_communication:
    return OpCost(0.0, float(sum(v.type.nbytes for v in op.inputs)),
                  float(sum(v.type.nbytes for v in op.outputs)))
  return primitive_cost(op.name, op.params, [v.type for v in op.inputs],
                        [v.type for v in op.outputs])


# --------------------------------------------------------------------------------------
# Communication (alpha-beta)
# --------------------------------------------------------------------------------------


def _ring_link(topology: ir.Topology, group: Sequence[int]) -> tuple[float, float]:
  """(alpha, beta) bounding a ring over ``group``: the largest latency, the slowest link."""
  n = len(group)
  pairs = [(group[i], group[(i + 1) % n]) for i in range(n)]
  alpha = max(float(topology.latency[a, b]) for a, b in pairs)
  beta = min(float(topology.bandwidth[a, b]) for a, b in pairs)
  return alpha, beta


def _star_link(topology: ir.Topology, root: int, others: Sequence[int]
               ) -> tuple[float, float]:
  alpha = max(float(topology.latency[root, d]) for d in others)
  beta = min(float(topology.bandwidth[root, d]) for d in others)
  return alpha, beta


def collective_time(kind: str, nbytes, n, alpha, beta):
  """Alpha-beta time of a collective over ``n`` devices on full size ``nbytes``.

  Works elementwise on NumPy arrays (the vectorized grid search uses it); ``n <= 1`` costs
  nothing. ``kind``: ``send``, ``allreduce``, ``allgather``, ``reduce_scatter``,
  ``mpi_broadcast``, ``mpi_scatter`` or ``mpi_gather``.
  """
  nbytes, n = np.asarray(nbytes, np.float64), np.asarray(n, np.float64)
  if kind == "send":
    return alpha + nbytes / beta
  if kind == "allreduce":
    t = 2.0 * (n - 1.0) * alpha + 2.0 * (n - 1.0) / np.maximum(n, 1.0) * nbytes / beta
  elif kind in ("allgather", "reduce_scatter", "mpi_scatter", "mpi_gather"):
    t = (n - 1.0) * alpha + (n - 1.0) / np.maximum(n, 1.0) * nbytes / beta
  elif kind == "mpi_broadcast":
    t = np.ceil(np.log2(np.maximum(n, 1.0))) * (alpha + nbytes / beta)
  else:
    raise ValueError(f"collective_time: kind must be one of {ir.COMMUNICATION_OPS}, got "
                     f"{kind!r}")
  return np.where(n > 1, t, 0.0)


def communication_time(op: ir.Op, topology: ir.Topology) -> float:
  """Seconds a communication op takes under the alpha-beta model (module docstring)."""
  if not op.is_communication:
    raise ValueError(f"communication_time: op {op.name!r} is not a communication op "
                     f"({ir.COMMUNICATION_OPS})")
  for d in op.devices:
    if d >= topology.num_devices:
      raise ValueError(f"communication_time: op {op.name} uses device {d}, the topology "
                       f"has {topology.num_devices}")
  if op.name == "send":
    src, dst = op.inputs[0].type.device, op.outputs[0].type.device
    return float(topology.latency[src, dst]
                 + op.inputs[0].type.nbytes / topology.bandwidth[src, dst])
  if op.name in ("allreduce", "reduce_scatter"):
    group = [v.type.device for v in op.inputs]
    full = op.inputs[0].type.nbytes
  elif op.name == "allgather":
    group = [v.type.device for v in op.inputs]
    full = op.outputs[0].type.nbytes
  elif op.name in ("mpi_broadcast", "mpi_scatter"):
    root = op.inputs[0].type.device
    others = [d for d in op.params["devices"] if d != root]
    if not others:
      return 0.0
    alpha, beta = _star_link(topology, root, others)
    n = len(others) + 1
    full = op.inputs[0].type.nbytes
    if op.name == "mpi_scatter":
      # The root keeps its shard only if it is one of the targets.
      shard = full / len(op.params["devices"])
      return float(len(others) * (alpha + shard / beta))
    return float(collective_time("mpi_broadcast", full, n, alpha, beta))
  else:  # mpi_gather
    root = op.params["device"]
    others = [v.type.device for v in op.inputs if v.type.device != root]
    if not others:
      return 0.0
    alpha, beta = _star_link(topology, root, others)
    return float(sum(alpha + v.type.nbytes / beta for v in op.inputs
                     if v.type.device != root))
  alpha, beta = _ring_link(topology, group)
  return float(collective_time(op.name, full, len(group), alpha, beta))


# --------------------------------------------------------------------------------------
# Kernel time and the cost model
# --------------------------------------------------------------------------------------

_COMBINES = ("sum", "max")


def kernel_time(cost: OpCost | ir.Op, device: ir.Device, combine: str = "sum") -> float:
  """Seconds of one kernel: ``L + flops/F + bytes/B`` (or ``L + max(...)``)."""
  if combine not in _COMBINES:
    raise ValueError(f"kernel_time: combine must be one of {_COMBINES}, got {combine!r}")
  if isinstance(cost, ir.Op):
    cost = op_cost(cost)
  compute = cost.flops / device.flops
  memory = cost.bytes_accessed / device.dram_bandwidth
  body = compute + memory if combine == "sum" else max(compute, memory)
  return device.launch_overhead + body


@dataclasses.dataclass(frozen=True, eq=False)
class CostModel:
  """Per-op times on a topology: kernel time for compute, alpha-beta for communication.

  Attributes:
    topology: the devices (rates) and links (latency, bandwidth).
    combine: ``"sum"`` (default, the reference's and the calibration's form) or ``"max"``
      (roofline) for the compute and memory terms of a kernel.
    free_movement: charge ``reshape``/``squeeze``/``expand_dims`` nothing (XLA makes them
      bitcasts); default True.
  """

  topology: ir.Topology
  combine: str = "sum"
  free_movement: bool = True

  def __post_init__(self):
    if not isinstance(self.topology, ir.Topology):
      raise ValueError(f"CostModel: topology must be a Topology, got "
                       f"{type(self.topology).__name__}")
    if self.combine not in _COMBINES:
      raise ValueError(f"CostModel: combine must be one of {_COMBINES}, got "
                       f"{self.combine!r}")

  def device(self, index: int) -> ir.Device:
    if not 0 <= index < self.topology.num_devices:
      raise ValueError(f"CostModel: device {index} is not in the topology "
                       f"({self.topology.num_devices} devices)")
    return self.topology.devices[index]

  def kernel_time(self, op: ir.Op, device: int | None = None) -> float:
    """Seconds of compute op ``op`` on ``device`` (default: the op's device)."""
    if op.is_communication:
      raise ValueError(f"CostModel.kernel_time: {op.name} is a communication op; use "
                       "op_times or communication_time")
    if self.free_movement and op.name in FREE_MOVEMENT:
      return 0.0
    if device is None:
      device = op.devices[0] if op.devices else 0
    return kernel_time(op_cost(op), self.device(device), self.combine)

  def op_times(self, op: ir.Op) -> dict[int, float]:
    """Seconds the op occupies each of its devices."""
    if op.is_communication:
      t = communication_time(op, self.topology)
      return {d: t for d in op.devices}
    devices = op.devices or (0,)
    return {devices[0]: self.kernel_time(op, devices[0])}


#: Movement primitives that cost nothing (a view of the same buffer) with ``free_movement``.
FREE_MOVEMENT = ("reshape", "squeeze", "expand_dims")


# --------------------------------------------------------------------------------------
# Cost inference: one more semantics of the abstract interpreter
# --------------------------------------------------------------------------------------


def _cost_rule(op: ir.Op, types: tuple, state):
  device = op.devices[0] if op.devices else None
  if op.is_communication:
    for d in op.devices:
      state[d] = state.get(d, OpCost())
  else:
    state[device] = state.get(device, OpCost()) + op_cost(op)
  return tuple(v.type for v in op.outputs), state


_COST_INTERPRETER = interpret.AbstractInterpreter(
    "function_cost", {name: _cost_rule for name in ir.COMMUNICATION_OPS},
    primitive_rule=_cost_rule, constant=lambda value: value.type)


def function_cost(fn: ir.Function) -> dict[int | None, OpCost]:
  """Total compute cost of ``fn`` per device (communication ops add no FLOPs or bytes)."""
  _, state = _COST_INTERPRETER.run(fn, [v.type for v in fn.inputs], {})
  return state
