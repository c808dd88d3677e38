"""A cost model of the local runtime (``run_projected``): dispatch, fusion, ``device_put``.

Santhanam et al. (2021) charge every op ``L + flops/F + bytes/B`` and every message
``alpha + bytes/beta``. That is a model of GPU kernels launched one by one. The runtime that
executes our projected programs on the local (simulated CPU) devices works differently
(:func:`~tomioka_jax.distributed.distir.run_projected`):

* one Python controller walks the per-device programs; every maximal run of compute ops of
  a device between two of its communication ops (a *segment*) is one jitted call, which
  costs the host a **dispatch** ``D`` however many ops it holds;
* inside a segment XLA **fuses** elementwise ops, broadcasts and reductions with their
  producers, so an intermediate value that only feeds such ops in the same segment is never
  written to memory nor read back. Each fusion that writes a value costs a fixed
  ``l_fusion``; its time is ``l_fusion + flops / F_fusion + bytes / B_fusion`` with the bytes
  of the values it reads from memory and writes to it;
* a matrix product (``dot_general``, ``conv_general_dilated``) is its own kernel:
  ``l_dot + flops / F_dot + bytes / B_dot`` (XLA:CPU calls a library matmul with a fixed
  cost of its own, large next to a small product's arithmetic);
* a communication op is the controller's ``jax.device_put`` copies, each
  ``alpha_put + bytes / beta_put`` (measured without blocking, as the runtime issues them),
  plus the jitted sum or concatenation of a collective (a dispatch and a fusion). The copy
  pattern is the runtime's (``collectives="copies"``): an all-reduce over ``N`` devices
  copies the ``N - 1`` inputs to the first participant, sums there and copies the sum to the
  ``N - 1`` others (``2(N-1)`` full-size copies, not a ring's ``2(N-1)/N``).

:func:`runtime_op_times` is the per-op time under these rules, given the fusion plan of the
function (:func:`fusion_plan`). :func:`program_features` sums the same quantities over a
whole single-device program, which is what the calibration
(:func:`~tomioka_jax.distributed.distir.calibrate_runtime`) fits against timed
micro-benchmarks; the simulator (:func:`~tomioka_jax.distributed.distir.simulate` with
``runtime=``) charges them op by op.

Fusion rules (an approximation of XLA's): ops of category ``elementwise``, ``movement`` and
``reduction`` are *fusible*. The output of a fusible op is *materialized* (written) when it
is an output of the function, when a non-fusible op (a product, a communication op, a
control op) or an op of another segment reads it, when it is a reduction's output (XLA does
not fuse a reduction into its consumers), or when two or more ops read it and it is a
transcendental (XLA duplicates cheap producers into each consumer, not expensive ones).
A fusible op reads from memory the inputs that were materialized (or are inputs of the
function, or outputs of a non-fusible op); constants are free.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from tomioka_jax.distributed.distir import _cost as cost_lib
from tomioka_jax.distributed.distir import _ir as ir

FUSIBLE_CATEGORIES = ("elementwise", "movement", "reduction")
#: Elementwise primitives XLA does not duplicate into several consumers.
EXPENSIVE = frozenset({"exp", "exp2", "log", "log1p", "expm1", "tanh", "logistic", "rsqrt",
                       "sqrt", "cbrt", "div", "pow", "erf", "erf_inv", "sin", "cos", "tan",
                       "atan2", "lgamma", "digamma", "integer_pow"})


@dataclasses.dataclass(frozen=True)
class RuntimeConstants:
  """The local runtime's cost constants (module docstring), all in seconds, FLOP/s, B/s.

  Attributes:
    dispatch: host time of one jitted call (a segment), ``D``.
    dot_overhead, dot_flops, dot_bandwidth: ``l_dot``, ``F_dot``, ``B_dot`` of a product.
    fusion_overhead, fusion_flops, fusion_bandwidth: ``l_fusion``, ``F_fusion``,
      ``B_fusion`` of a fused elementwise/reduction kernel.
    transcendental_rate: elements per second of an :data:`EXPENSIVE` op (``exp``,
      ``tanh``, ...) inside a fusion, on top of its FLOP (``T``).
    put_latency, put_bandwidth: ``alpha_put``, ``beta_put`` of one ``device_put`` copy.
    dot_table: measured ``(flops, seconds)`` of products; when given, a product's time is
      interpolated in it (log-log, by FLOPs; beyond the largest entry it grows at
      ``F_dot``, below the smallest it is the smallest's time) instead of the linear form.
      XLA:CPU's products are not linear in their FLOPs at small sizes: tiny ones are
      emitted inline, larger ones call a threaded library with a fixed cost of its own.
  """

  dispatch: float
  dot_overhead: float
  dot_flops: float
  dot_bandwidth: float
  fusion_overhead: float
  fusion_flops: float
  fusion_bandwidth: float
  transcendental_rate: float
  put_latency: float
  put_bandwidth: float
  dot_table: tuple[tuple[float, float], ...] = ()

  def __post_init__(self):
    table = tuple((float(f), float(t)) for f, t in self.dot_table)
    if any(not (f > 0 and t > 0) for f, t in table):
      raise ValueError(f"RuntimeConstants: dot_table must hold (flops > 0, seconds > 0) "
                       f"pairs, got {self.dot_table!r}")
    object.__setattr__(self, "dot_table", tuple(sorted(table)))
    for field in dataclasses.fields(self):
      if field.name == "dot_table":
        continue
      value = getattr(self, field.name)
      if not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"RuntimeConstants: {field.name} must be a number, got {value!r}")
      rate = field.name.endswith(("flops", "bandwidth", "rate"))
      if rate and not value > 0:
        raise ValueError(f"RuntimeConstants: {field.name} must be > 0, got {value!r}")
      if not rate and not value >= 0:
        raise ValueError(f"RuntimeConstants: {field.name} must be >= 0, got {value!r}")

  def put_time(self, nbytes: float) -> float:
    """One ``device_put`` copy of ``nbytes``: ``alpha_put + nbytes / beta_put``."""
    return self.put_latency + nbytes / self.put_bandwidth

  def fusion_time(self, flops: float, nbytes: float, launches: int = 1,
                  transcendentals: float = 0.0) -> float:
    """A fused kernel: ``launches l_fusion + flops / F_fusion + nbytes / B_fusion +
    transcendentals / T``."""
    return (launches * self.fusion_overhead + flops / self.fusion_flops
            + nbytes / self.fusion_bandwidth + transcendentals / self.transcendental_rate)

  def dot_time(self, flops: float, nbytes: float) -> float:
    """A product: interpolated in ``dot_table``, else ``l_dot + flops / F_dot + nbytes /
    B_dot``."""
    if not self.dot_table:
      return self.dot_overhead + flops / self.dot_flops + nbytes / self.dot_bandwidth
    fs = [f for f, _ in self.dot_table]
    ts = [t for _, t in self.dot_table]
    if flops <= fs[0]:
      return ts[0]
    if flops >= fs[-1]:
      return ts[-1] + (flops - fs[-1]) / self.dot_flops
    i = bisect.bisect_right(fs, flops)
    w = (math.log(flops) - math.log(fs[i - 1])) / (math.log(fs[i]) - math.log(fs[i - 1]))
    return math.exp((1 - w) * math.log(ts[i - 1]) + w * math.log(ts[i]))


@dataclasses.dataclass(frozen=True)
class _OpPlan:
  segment_start: bool     # the first compute op of its device's segment: pays the dispatch
  read_bytes: float       # bytes a fusible op reads from memory
  written_bytes: float    # bytes it writes (its materialized outputs)
  launches: int           # 1 if it ends a fusion (writes a value), else 0


def _category(op: ir.Op) -> str:
  if op.is_communication:
    return "communication"
  return ir.PRIMITIVE_CATEGORIES.get(op.name, "other")


def fusion_plan(fn: ir.Function, free_movement: bool = True) -> dict[int, _OpPlan]:
  """``{id(op): plan}`` for every compute op of ``fn`` (module docstring's rules).

  ``free_movement``: reshapes, squeezes and expand_dims are bitcasts (no fusion of their
  own, as :class:`~tomioka_jax.distributed.distir.CostModel` treats them).
  """
  segment: dict[int, tuple[int, int]] = {}   # id(op) -> (device, segment index)
  counter: dict[int, int] = {}
  consumers: dict[int, list[ir.Op]] = {}
  producer: dict[int, ir.Op] = {}
  for op in fn.ops:
    for v in op.inputs:
      if not v.is_const:
        consumers.setdefault(id(v), []).append(op)
    for v in op.outputs:
      producer[id(v)] = op
    if op.is_communication:
      for d in op.devices:
        counter[d] = counter.get(d, 0) + 1
    else:
      d = op.devices[0] if op.devices else None
      segment[id(op)] = (d, counter.get(d, 0))
  outputs = {id(v) for v in fn.outputs}
  free = cost_lib.FREE_MOVEMENT if free_movement else ()

  def fusible(op: ir.Op) -> bool:
    return _category(op) in FUSIBLE_CATEGORIES

  materialized: dict[int, bool] = {}

  def is_materialized(v: ir.Value) -> bool:
    key = id(v)
    if key in materialized:
      return materialized[key]
    op = producer.get(key)
    if op is None or not fusible(op):
      result = True  # a function input, or a product's / a communication op's output
    elif key in outputs or _category(op) == "reduction":
      result = True
    else:
      users = consumers.get(key, [])
      result = any(not fusible(u) or segment.get(id(u)) != segment[id(op)]
                   # a bitcast passes the value on: needed if its result is
                   or (u.name in free and any(is_materialized(o) for o in u.outputs))
                   for u in users)
      if not result and len({id(u) for u in users}) > 1 and op.name in EXPENSIVE:
        result = True
    materialized[key] = result
    return result

  def source(v: ir.Value) -> ir.Value:
    # look through bitcasts to the value whose memory is read
    op = producer.get(id(v))
    while op is not None and op.name in free and op.inputs and not op.inputs[0].is_const:
      v = op.inputs[0]
      op = producer.get(id(v))
    return v

  plans: dict[int, _OpPlan] = {}
  seen_segments: set[tuple[int, int]] = set()
  for op in fn.ops:
    if op.is_communication:
      continue
    seg = segment[id(op)]
    start = seg not in seen_segments
    seen_segments.add(seg)
    if fusible(op) and op.name not in free:
      read = float(sum(v.type.nbytes for v in op.inputs
                       if not v.is_const and is_materialized(source(v))))
      outs = [v for v in op.outputs if is_materialized(v)]
      written = float(sum(v.type.nbytes for v in outs))
      plans[id(op)] = _OpPlan(start, read, written, 1 if outs else 0)
    else:
      plans[id(op)] = _OpPlan(start, 0.0, 0.0, 0)
  return plans


def _collective_kernel(rc: RuntimeConstants, read: float, written: float, flops: float
                       ) -> float:
  # The jitted sum / concatenation of a collective: one dispatch and one fusion.
  return rc.dispatch + rc.fusion_time(flops, read + written)


def communication_time(op: ir.Op, rc: RuntimeConstants) -> float:
  """Seconds the runtime's copies take for one communication op (module docstring).

  A copy onto the device the value is already on costs nothing.
  """
  if not op.is_communication:
    raise ValueError(f"communication_time: op {op.name!r} is not a communication op "
                     f"({ir.COMMUNICATION_OPS})")
  xs, ys = op.inputs, op.outputs
  name = op.name
  if name == "send":
    return rc.put_time(xs[0].type.nbytes)
  if name == "mpi_broadcast":
    src = xs[0].type.device
    return sum(rc.put_time(xs[0].type.nbytes) for y in ys if y.type.device != src)
  n = len(xs)
  if name == "allreduce":
    root = ys[0].type.device
    m = xs[0].type.nbytes
    copies = sum(1 for x in xs if x.type.device != root)
    copies += sum(1 for y in ys[1:] if y.type.device != root)
    elems = m / max(xs[0].type.dtype.itemsize, 1)
    return copies * rc.put_time(m) + _collective_kernel(rc, n * m, m, (n - 1) * elems)
  if name == "allgather":
    total = 0.0
    for y in ys:
      total += sum(rc.put_time(x.type.nbytes) for x in xs if x.type.device != y.type.device)
      total += _collective_kernel(rc, y.type.nbytes, y.type.nbytes, 0.0)
    return total
  if name == "reduce_scatter":
    m = xs[0].type.nbytes
    elems = m / max(xs[0].type.dtype.itemsize, 1)
    total = 0.0
    for y in ys:
      total += sum(rc.put_time(m) for x in xs if x.type.device != y.type.device)
      total += _collective_kernel(rc, n * m, y.type.nbytes, (n - 1) * elems)
    return total
  if name == "mpi_scatter":
    src = xs[0].type.device
    # the split runs eagerly on the root: one dispatch per piece
    total = len(ys) * rc.dispatch + rc.fusion_time(0.0, 2.0 * xs[0].type.nbytes, len(ys))
    return total + sum(rc.put_time(y.type.nbytes) for y in ys if y.type.device != src)
  if name == "mpi_gather":
    (y,) = ys
    total = sum(rc.put_time(x.type.nbytes) for x in xs if x.type.device != y.type.device)
    return total + _collective_kernel(rc, y.type.nbytes, y.type.nbytes, 0.0)
  raise ValueError(f"communication_time: unknown communication op {name!r}")


def _transcendentals(op: ir.Op) -> float:
  if op.name not in EXPENSIVE:
    return 0.0
  return float(sum(math.prod(v.type.shape) for v in op.outputs))


def runtime_op_times(op: ir.Op, plan: Mapping[int, _OpPlan], rc: RuntimeConstants,
                     free_movement: bool = True) -> dict[int, float]:
  """Seconds the op occupies each of its devices under the runtime model."""
  if op.is_communication:
    t = communication_time(op, rc)
    return {d: t for d in op.devices}
  device = op.devices[0] if op.devices else 0
  p = plan[id(op)]
  t = rc.dispatch if p.segment_start else 0.0
  category = _category(op)
  if free_movement and op.name in cost_lib.FREE_MOVEMENT:
    return {device: t}
  cost = cost_lib.op_cost(op)
  if category in ("dot", "conv"):
    t += rc.dot_time(cost.flops, cost.bytes_accessed)
  elif category in FUSIBLE_CATEGORIES:
    t += rc.fusion_time(cost.flops, p.read_bytes + p.written_bytes, p.launches,
                        _transcendentals(op))
  else:  # random, control: an unfused kernel of its own
    t += rc.fusion_time(cost.flops, cost.bytes_accessed)
  return {device: t}


#: The names of :func:`program_features`' entries.
FEATURES = ("dispatches", "dots", "dot_flops", "dot_bytes", "fusions", "fusion_flops",
            "fusion_bytes", "transcendentals")


def program_features(fn: ir.Function, free_movement: bool = True) -> dict[str, float]:
  """The runtime model's counts summed over ``fn``'s compute ops (:data:`FEATURES`).

  The model's time of a single-device ``fn`` is linear in the constants with these
  coefficients: ``dispatches D + dots l_dot + dot_flops / F_dot + dot_bytes / B_dot +
  fusions l_fusion + fusion_flops / F_fusion + fusion_bytes / B_fusion +
  transcendentals / T``.
  """
  plan = fusion_plan(fn, free_movement)
  out = dict.fromkeys(FEATURES, 0.0)
  for op in fn.ops:
    if op.is_communication:
      raise ValueError(f"program_features: {fn.name} has communication op {op.name}; "
                       "features are for single-device programs")
    p = plan[id(op)]
    out["dispatches"] += 1.0 if p.segment_start else 0.0
    if free_movement and op.name in cost_lib.FREE_MOVEMENT:
      continue
    cost = cost_lib.op_cost(op)
    category = _category(op)
    if category in ("dot", "conv"):
      out["dots"] += 1.0
      out["dot_flops"] += cost.flops
      out["dot_bytes"] += cost.bytes_accessed
    elif category in FUSIBLE_CATEGORIES:
      out["fusions"] += p.launches
      out["fusion_flops"] += cost.flops
      out["fusion_bytes"] += p.read_bytes + p.written_bytes
      out["transcendentals"] += _transcendentals(op)
    else:
      out["fusions"] += 1.0
      out["fusion_flops"] += cost.flops
      out["fusion_bytes"] += cost.bytes_accessed
  return out


def predicted_time(features: Mapping[str, float], rc: RuntimeConstants) -> float:
  """The runtime model's time of a program with these :func:`program_features`."""
  return (features["dispatches"] * rc.dispatch + features["dots"] * rc.dot_overhead
          + features["dot_flops"] / rc.dot_flops + features["dot_bytes"] / rc.dot_bandwidth
          + features["fusions"] * rc.fusion_overhead
          + features["fusion_flops"] / rc.fusion_flops
          + features["fusion_bytes"] / rc.fusion_bandwidth
          + features["transcendentals"] / rc.transcendental_rate)


def describe(rc: RuntimeConstants) -> dict[str, Any]:
  """The constants as plain numbers (for records)."""
  return dataclasses.asdict(rc)
