"""The DistIR intermediate representation: typed values on devices, ops, functions.

Santhanam, Krishna, Tomioka, Harris, Zaharia, "DistIR: An Intermediate Representation and
Simulator for Efficient Neural Network Distribution" (arXiv 2111.05426).

A :class:`Function` is a topologically ordered list of :class:`Op` over :class:`Value`s.
Every value has a :class:`TensorType` -- shape, dtype and the **device** it lives on -- so a
distributed program is one global view in which data moves only through explicit
communication ops:

==================  =====================================================================
``send``            one value to another device (``params["device"]``)
``allreduce``       n values on n devices -> n copies of their sum
``allgather``       n shards on n devices -> n copies of their concatenation (``axis``)
``reduce_scatter``  n values on n devices -> their sum, split into n shards (``axis``)
``mpi_broadcast``   one value -> copies on ``params["devices"]``
``mpi_scatter``     one value -> its split into shards on ``params["devices"]`` (``axis``)
``mpi_gather``      n shards -> their concatenation on ``params["device"]`` (``axis``)
==================  =====================================================================

Every other op is a JAX primitive (``Op.primitive``, a ``jax.extend.core.Primitive``) with
the parameters it has in a jaxpr, so :func:`import_jaxpr` turns ``jax.make_jaxpr`` of any
training step into a single-device DistIR function, and a transform builds a distributed one
by inlining per-device pieces (:meth:`FunctionBuilder.inline`) around communication ops.
Constants (jaxpr literals and closed-over arrays) are values with ``const`` set and no
device: they are part of the program and usable on every device.

The kinds of primitive the importer accepts are listed in :data:`PRIMITIVE_CATEGORIES`; the
cost model needs to know each one (a matmul and an exponential cost differently), so an
unknown primitive is an error that names it rather than a silent zero-cost op.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.extend import core as jex_core

# --------------------------------------------------------------------------------------
# Devices and topology
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Device:
  """A device and the rates the cost model charges for it.

  The defaults are the reference's (``dist_ir/utils/constants.py``): a V100-class GPU.

  Attributes:
    id: the device's index in its :class:`Topology` (and in the programs that use it).
    kind: a free-form label (``"gpu"``, ``"cpu"``).
    flops: peak floating-point rate, FLOP/s.
    dram_bandwidth: memory bandwidth, bytes/s.
    launch_overhead: fixed cost of one kernel, seconds.
    memory: capacity in bytes (``inf``: unbounded).
  """

  id: int
  kind: str = "gpu"
  flops: float = 1.4e13
  dram_bandwidth: float = 9e11
  launch_overhead: float = 1e-5
  memory: float = float("inf")

  def __post_init__(self):
    if not isinstance(self.id, (int, np.integer)) or self.id < 0:
      raise ValueError(f"Device: id must be a non-negative integer, got {self.id!r}")
    for name in ("flops", "dram_bandwidth"):
      value = getattr(self, name)
      if not value > 0:
        raise ValueError(f"Device: {name} must be > 0, got {value!r}")
    if not self.launch_overhead >= 0:
      raise ValueError(
          f"Device: launch_overhead must be >= 0, got {self.launch_overhead!r}")
    if not self.memory > 0:
      raise ValueError(f"Device: memory must be > 0, got {self.memory!r}")


@dataclasses.dataclass(frozen=True, eq=False)
class Topology:
  """Devices and the links between them (alpha-beta model).

  Attributes:
    devices: the devices, ``devices[i].id == i``.
    bandwidth: ``(n, n)`` bytes/s between each pair (the diagonal is unused).
    latency: per-message latency alpha, seconds (one value, or ``(n, n)``).
  """

  devices: tuple[Device, ...]
  bandwidth: np.ndarray
  latency: np.ndarray

  def __post_init__(self):
    n = len(self.devices)
    if n == 0:
      raise ValueError("Topology: devices must be non-empty")
    for i, device in enumerate(self.devices):
      if device.id != i:
        raise ValueError(f"Topology: devices[{i}].id must be {i}, got {device.id}")
    bandwidth = np.asarray(self.bandwidth, dtype=np.float64)
    if bandwidth.shape != (n, n):
      raise ValueError(
          f"Topology: bandwidth must have shape ({n}, {n}), got {bandwidth.shape}")
    off = bandwidth[~np.eye(n, dtype=bool)]
    if not np.all(off > 0):
      raise ValueError("Topology: bandwidth between distinct devices must be > 0")
    latency = np.broadcast_to(np.asarray(self.latency, dtype=np.float64), (n, n))
    if not np.all(latency >= 0):
      raise ValueError("Topology: latency must be >= 0")
    object.__setattr__(self, "bandwidth", bandwidth)
    object.__setattr__(self, "latency", np.array(latency))

  @classmethod
  def uniform(cls, num_devices: int, *, bandwidth: float = 25e9 / 8,
              latency: float = 0.0, **device_kwargs) -> Topology:
    """``num_devices`` identical devices, every pair linked at ``bandwidth`` bytes/s.

    The default bandwidth is the reference's 25 Gbps.
    """
    if not isinstance(num_devices, (int, np.integer)) or num_devices < 1:
      raise ValueError(
          f"Topology.uniform: num_devices must be an integer >= 1, got {num_devices!r}")
    if not bandwidth > 0:
      raise ValueError(f"Topology.uniform: bandwidth must be > 0, got {bandwidth!r}")
    devices = tuple(Device(i, **device_kwargs) for i in range(num_devices))
    return cls(devices, np.full((num_devices, num_devices), float(bandwidth)),
               np.full((num_devices, num_devices), float(latency)))

  @property
  def num_devices(self) -> int:
    return len(self.devices)


# --------------------------------------------------------------------------------------
# Types, values, ops, functions
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TensorType:
  """Shape, dtype and device of a value (``device=None``: a constant, on every device)."""

  shape: tuple[int, ...]
  dtype: np.dtype
  device: int | None = None

  def __post_init__(self):
    object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
    if not jax.dtypes.issubdtype(self.dtype, jax.dtypes.extended):  # PRNG keys stay as is
      object.__setattr__(self, "dtype", np.dtype(self.dtype))

  @property
  def size(self) -> int:
    return int(np.prod(self.shape, dtype=np.int64))

  @property
  def nbytes(self) -> int:
    return self.size * self.dtype.itemsize

  def on(self, device: int | None) -> TensorType:
    return dataclasses.replace(self, device=device)

  def __str__(self) -> str:
    dims = ",".join(str(d) for d in self.shape)
    where = "" if self.device is None else f"@d{self.device}"
    return f"{_dtype_short(self.dtype)}[{dims}]{where}"


def _dtype_short(dtype: np.dtype) -> str:
  if jax.dtypes.issubdtype(dtype, jax.dtypes.extended):
    return str(dtype)
  names = {"float32": "f32", "float64": "f64", "float16": "f16", "bfloat16": "bf16",
           "int32": "i32", "int64": "i64", "uint32": "u32", "uint8": "u8", "int8": "i8",
           "bool": "bool"}
  return names.get(dtype.name, dtype.name)


@dataclasses.dataclass(frozen=True, eq=False)
class Value:
  """A value of a function: identity is the object (names are for printing only)."""

  name: str
  type: TensorType
  const: Any = None  # np.ndarray for constants

  @property
  def is_const(self) -> bool:
    return self.const is not None

  def __repr__(self) -> str:
    return f"Value({self.name}: {self.type})"


COMMUNICATION_OPS = ("send", "allreduce", "allgather", "reduce_scatter", "mpi_broadcast",
                     "mpi_scatter", "mpi_gather")


@dataclasses.dataclass(frozen=True, eq=False)
class Op:
  """One operation: a JAX primitive on one device, or a communication op.

  Attributes:
    name: the primitive's name (``"dot_general"``) or a communication op's.
    inputs, outputs: the values it reads and defines.
    params: the primitive's jaxpr parameters, or the communication op's.
    primitive: the JAX primitive (``None`` for communication ops).
  """

  name: str
  inputs: tuple[Value, ...]
  outputs: tuple[Value, ...]
  params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  primitive: Any = None

  @property
  def is_communication(self) -> bool:
    return self.name in COMMUNICATION_OPS

  @property
  def devices(self) -> tuple[int, ...]:
    """The devices this op runs on, sorted (one for a compute op)."""
    found = {v.type.device for v in itertools.chain(self.inputs, self.outputs)}
    found.discard(None)
    return tuple(sorted(found))


@dataclasses.dataclass(frozen=True, eq=False)
class Function:
  """A DistIR function: inputs, topologically ordered ops, outputs."""

  name: str
  inputs: tuple[Value, ...]
  ops: tuple[Op, ...]
  outputs: tuple[Value, ...]

  @property
  def devices(self) -> tuple[int, ...]:
    found = {v.type.device for v in self.inputs + self.outputs}
    for op in self.ops:
      found.update(op.devices)
    found.discard(None)
    return tuple(sorted(found))

  def __str__(self) -> str:
    return format_function(self)

  def verify(self) -> Function:
    """Check that the function is well formed: every value is defined once, before use.

    Returns the function; raises ``ValueError`` naming the first offending value.
    """
    defined: set[int] = set()
    for value in self.inputs:
      if id(value) in defined:
        raise ValueError(f"{self.name}: input {value.name} appears twice")
      defined.add(id(value))
    for op in self.ops:
      for value in op.inputs:
        if not value.is_const and id(value) not in defined:
          raise ValueError(
              f"{self.name}: op {op.name} reads {value.name} before it is defined")
      for value in op.outputs:
        if id(value) in defined:
          raise ValueError(f"{self.name}: {value.name} is defined twice")
        defined.add(id(value))
    for value in self.outputs:
      if not value.is_const and id(value) not in defined:
        raise ValueError(f"{self.name}: output {value.name} is never defined")
    return self


# --------------------------------------------------------------------------------------
# Primitive categories (what the importer accepts)
# --------------------------------------------------------------------------------------

_ELEMENTWISE = """
abs acos acosh add add_any and asin asinh atan atan2 atanh cbrt ceil clamp conj copy copy_p
cos cosh digamma div eq erf erf_inv erfc exp exp2 expm1 floor ge gt igamma imag integer_pow
is_finite le lgamma log log1p logistic lt max min mul ne neg nextafter not or pow real rem
round rsqrt select_n shift_left shift_right_arithmetic shift_right_logical sign sin sinh
sqrt square stop_gradient sub tan tanh xor population_count clz convert_element_type
reduce_precision bitcast_convert_type
""".split()
_REDUCTION = """
reduce_sum reduce_max reduce_min reduce_prod reduce_and reduce_or reduce_xor argmax argmin
cumsum cumprod cummax cummin cumlogsumexp reduce_window_sum reduce_window_max
reduce_window_min reduce_window select_and_scatter_add select_and_gather_add
""".split()
_MOVEMENT = """
broadcast_in_dim reshape transpose squeeze expand_dims concatenate slice dynamic_slice
dynamic_update_slice gather scatter scatter-add scatter_add scatter-mul scatter-min
scatter-max pad rev iota split sort top_k device_put
""".split()
_RANDOM = """
random_bits random_seed random_wrap random_unwrap random_fold_in random_split threefry2x32
""".split()

#: The primitives the importer accepts, by cost category: ``elementwise`` (one op per output
#: element), ``reduction`` (one op per input element), ``movement`` (bytes only),
#: ``random`` (counter-based generator), ``dot`` (``dot_general``: 2 x the multiply-adds),
#: ``conv`` (``conv_general_dilated``), and ``control`` (``scan``, ``cond``: their bodies'
#: cost, times the length for a scan).
PRIMITIVE_CATEGORIES: dict[str, str] = {
    **{name: "elementwise" for name in _ELEMENTWISE},
    **{name: "reduction" for name in _REDUCTION},
    **{name: "movement" for name in _MOVEMENT},
    **{name: "random" for name in _RANDOM},
    "dot_general": "dot",
    "conv_general_dilated": "conv",
    "scan": "control",
    "cond": "control",
}

#: Call-like primitives the importer inlines, with the parameter that holds the body.
INLINED_PRIMITIVES: dict[str, str] = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
    "remat": "jaxpr",
    "remat2": "jaxpr",
    "checkpoint": "jaxpr",
    "custom_lin": "jaxpr",
}


# --------------------------------------------------------------------------------------
# Type inference of one op (used by the builder and the type-inference semantics)
# --------------------------------------------------------------------------------------


def _compute_device(name: str, input_types: Sequence[TensorType]) -> int | None:
  devices = {t.device for t in input_types} - {None}
  if len(devices) > 1:
    raise ValueError(
        f"op {name} reads values on devices {sorted(devices)}: a compute op runs on one "
        "device; move values with a communication op (send, allgather, ...) first")
  return devices.pop() if devices else None


def primitive_output_types(primitive, params: Mapping[str, Any],
                           input_types: Sequence[TensorType],
                           const_values: Sequence[Any] | None = None,
                           device: int | None = None) -> tuple[TensorType, ...]:
  """Output types of a JAX primitive applied to inputs of the given types.

  Shapes and dtypes come from JAX's own abstract evaluation of the primitive; the device is
  the inputs' common device (or ``device`` when every input is a constant).
  """
  found = _compute_device(primitive.name, input_types)
  out_device = found if found is not None else device
  const_values = const_values or [None] * len(input_types)

  def apply(*args):
    full = [c if c is not None else a for a, c in zip(args, const_values)]
    out = primitive.bind(*full, **params)
    return tuple(out) if primitive.multiple_results else (out,)

  structs = [jax.ShapeDtypeStruct(t.shape, t.dtype) for t in input_types]
  outs = jax.eval_shape(apply, *structs)
  return tuple(TensorType(o.shape, o.dtype, out_device) for o in outs)


def _check_shards(name: str, types: Sequence[TensorType]) -> None:
  if not types:
    raise ValueError(f"{name}: needs at least one input")
  devices = [t.device for t in types]
  if None in devices:
    raise ValueError(f"{name}: every input must live on a device, got {devices}")
  if len(set(devices)) != len(devices):
    raise ValueError(f"{name}: inputs must be on distinct devices, got {devices}")


def _check_axis(name: str, axis: int, rank: int) -> int:
  if not -rank <= axis < rank:
    raise ValueError(f"{name}: axis must be in [-{rank}, {rank}), got {axis}")
  return axis % rank


def communication_output_types(name: str, params: Mapping[str, Any],
                               input_types: Sequence[TensorType]) -> tuple[TensorType, ...]:
  """Output types of a communication op; raises ``ValueError`` for inconsistent inputs."""
  if name == "send":
    (t,) = input_types
    target = params["device"]
    if t.device is None or t.device == target:
      raise ValueError(f"send: the value must be on a device other than the target "
                       f"{target}, got {t.device}")
    return (t.on(target),)
  if name == "mpi_broadcast":
    (t,) = input_types
    if t.device is None:
      raise ValueError("mpi_broadcast: the value must live on a device")
    return tuple(t.on(d) for d in params["devices"])
  if name == "mpi_scatter":
    (t,) = input_types
    if t.device is None:
      raise ValueError("mpi_scatter: the value must live on a device")
    devices = tuple(params["devices"])
    axis = _check_axis(name, params["axis"], len(t.shape))
    if t.shape[axis] % len(devices):
      raise ValueError(f"mpi_scatter: dimension {axis} of size {t.shape[axis]} does not split "
                       f"into {len(devices)} equal shards")
    shape = list(t.shape)
    shape[axis] //= len(devices)
    return tuple(TensorType(shape, t.dtype, d) for d in devices)
  _check_shards(name, input_types)
  first = input_types[0]
  for t in input_types[1:]:
    if t.dtype != first.dtype:
      raise ValueError(f"{name}: inputs must share a dtype, got {first.dtype} and {t.dtype}")
  n = len(input_types)
  if name == "allreduce":
    for t in input_types:
      if t.shape != first.shape:
        raise ValueError(f"{name}: inputs must share a shape, got {first.shape}, {t.shape}")
    return tuple(input_types)
  axis = _check_axis(name, params["axis"], len(first.shape))
  for t in input_types:
    if t.shape[:axis] + t.shape[axis + 1:] != first.shape[:axis] + first.shape[axis + 1:]:
      raise ValueError(f"{name}: inputs must agree off axis {axis}, got {first.shape}, "
                       f"{t.shape}")
  if name in ("allgather", "mpi_gather"):
    shape = list(first.shape)
    shape[axis] = sum(t.shape[axis] for t in input_types)
    if name == "mpi_gather":
      return (TensorType(shape, first.dtype, params["device"]),)
    return tuple(TensorType(shape, first.dtype, t.device) for t in input_types)
  if name == "reduce_scatter":
    for t in input_types:
      if t.shape != first.shape:
        raise ValueError(f"{name}: inputs must share a shape, got {first.shape}, {t.shape}")
    if first.shape[axis] % n:
      raise ValueError(f"reduce_scatter: dimension {axis} of size {first.shape[axis]} does "
                       f"not split into {n} equal shards")
    shape = list(first.shape)
    shape[axis] //= n
    return tuple(TensorType(shape, first.dtype, t.device) for t in input_types)
  raise ValueError(f"unknown communication op {name!r}; known: {COMMUNICATION_OPS}")


# --------------------------------------------------------------------------------------
# Building functions
# --------------------------------------------------------------------------------------


class FunctionBuilder:
  """Builds a :class:`Function` op by op, inferring every output's type.

  Example::

    b = FunctionBuilder("mlp_dp")
    x = b.input("x", (8, 16), "float32", device=0)
    xs = b.scatter(x, axis=0, devices=(0, 1))
    ...
    fn = b.finish(outputs)
  """

  def __init__(self, name: str):
    self.name = name
    self._inputs: list[Value] = []
    self._ops: list[Op] = []
    self._counter = itertools.count()

  def _fresh(self, type_: TensorType, hint: str = "v", const=None) -> Value:
    return Value(f"{hint}{next(self._counter)}", type_, const)

  def input(self, name: str, shape: Sequence[int], dtype, device: int | None) -> Value:
    if device is None:
      raise ValueError(f"input {name}: device must be an integer, got None")
    value = Value(name, TensorType(tuple(shape), dtype, device))
    self._inputs.append(value)
    return value

  def add_input(self, value: Value) -> Value:
    """Adds an existing value (e.g. from another function) as an input."""
    self._inputs.append(value)
    return value

  def constant(self, array) -> Value:
    array = np.asarray(array)
    return self._fresh(TensorType(array.shape, array.dtype, None), "c", array)

  def primitive(self, primitive, inputs: Sequence[Value], params: Mapping[str, Any] | None
                = None, *, device: int | None = None,
                output_types: Sequence[TensorType] | None = None) -> tuple[Value, ...]:
    """Applies a JAX primitive; returns its outputs (always a tuple).

    ``output_types`` skips type inference (the importer knows them from the jaxpr).
    """
    params = dict(params or {})
    if output_types is None:
      types = primitive_output_types(
          primitive, params, [v.type for v in inputs],
          [v.const for v in inputs], device)
    else:
      found = _compute_device(primitive.name, [v.type for v in inputs])
      where = found if found is not None else device
      types = tuple(t.on(where) for t in output_types)
    outputs = tuple(self._fresh(t) for t in types)
    self._ops.append(Op(primitive.name, tuple(inputs), outputs, params, primitive))
    return outputs

  def _communicate(self, name: str, inputs: Sequence[Value], params) -> tuple[Value, ...]:
    types = communication_output_types(name, params, [v.type for v in inputs])
    outputs = tuple(self._fresh(t) for t in types)
    self._ops.append(Op(name, tuple(inputs), outputs, dict(params)))
    return outputs

  def send(self, x: Value, device: int) -> Value:
    return self._communicate("send", [x], {"device": int(device)})[0]

  def allreduce(self, xs: Sequence[Value]) -> tuple[Value, ...]:
    return self._communicate("allreduce", xs, {})

  def allgather(self, xs: Sequence[Value], axis: int) -> tuple[Value, ...]:
    return self._communicate("allgather", xs, {"axis": int(axis)})

  def reduce_scatter(self, xs: Sequence[Value], axis: int) -> tuple[Value, ...]:
    return self._communicate("reduce_scatter", xs, {"axis": int(axis)})

  def broadcast(self, x: Value, devices: Sequence[int]) -> tuple[Value, ...]:
    return self._communicate("mpi_broadcast", [x], {"devices": tuple(int(d) for d in devices)})

  def scatter(self, x: Value, axis: int, devices: Sequence[int]) -> tuple[Value, ...]:
    return self._communicate("mpi_scatter", [x], {"axis": int(axis),
                                              "devices": tuple(int(d) for d in devices)})

  def gather(self, xs: Sequence[Value], axis: int, device: int) -> Value:
    return self._communicate("mpi_gather", xs, {"axis": int(axis), "device": int(device)})[0]

  def inline(self, fn: Function, inputs: Sequence[Value],
             device: int | None = None) -> tuple[Value, ...]:
    """Appends a copy of ``fn``'s ops applied to ``inputs``; returns the copies' outputs.

    With ``device`` set, every non-constant value of the copy lives on that device (the
    inputs must already be there): this is how a transform places a per-device piece,
    e.g. the imported jaxpr of one shard's forward pass, onto device ``device``.
    """
    if len(inputs) != len(fn.inputs):
      raise ValueError(f"inline {fn.name}: expected {len(fn.inputs)} inputs, got "
                       f"{len(inputs)}")
    env: dict[int, Value] = {}
    for formal, actual in zip(fn.inputs, inputs):
      if formal.type.shape != actual.type.shape or formal.type.dtype != actual.type.dtype:
        raise ValueError(f"inline {fn.name}: input {formal.name} has type {formal.type}, "
                         f"got {actual.type}")
      if device is not None and actual.type.device not in (device, None):
        raise ValueError(f"inline {fn.name} on device {device}: input {formal.name} is on "
                         f"device {actual.type.device}")
      env[id(formal)] = actual

    def lookup(value: Value) -> Value:
      if value.is_const:
        return value
      return env[id(value)]

    for op in fn.ops:
      ins = tuple(lookup(v) for v in op.inputs)
      outs = []
      for v in op.outputs:
        t = v.type if (device is None or op.is_communication) else v.type.on(device)
        new = self._fresh(t)
        env[id(v)] = new
        outs.append(new)
      self._ops.append(Op(op.name, ins, tuple(outs), op.params, op.primitive))
    return tuple(lookup(v) for v in fn.outputs)

  def finish(self, outputs: Sequence[Value]) -> Function:
    return Function(self.name, tuple(self._inputs), tuple(self._ops),
                    tuple(outputs)).verify()


# --------------------------------------------------------------------------------------
# Importing jaxprs
# --------------------------------------------------------------------------------------


def _literal_array(literal) -> np.ndarray:
  return np.asarray(literal.val, dtype=literal.aval.dtype)


def import_jaxpr(jaxpr, *, device: int = 0, name: str = "main",
                 input_names: Sequence[str] | None = None) -> Function:
  """A DistIR function for a jaxpr, every value on ``device``.

  Args:
    jaxpr: a ``ClosedJaxpr`` (``jax.make_jaxpr(f)(*args)``) or an open ``Jaxpr``.
    device: the device every value lives on.
    name: the function's name.
    input_names: names for the function's inputs (default: ``x0, x1, ...``).

  Call-like primitives (``jit``, ``custom_jvp_call``, ``custom_vjp_call``, ``remat``,
  ``closed_call``) are inlined; every other primitive must be in
  :data:`PRIMITIVE_CATEGORIES`, else ``ValueError`` names it. Closed-over constants and
  literals become constant values.
  """
  if isinstance(jaxpr, jex_core.ClosedJaxpr):
    inner, consts = jaxpr.jaxpr, list(jaxpr.consts)
  elif isinstance(jaxpr, jex_core.Jaxpr):
    inner, consts = jaxpr, []
  else:
    raise ValueError(f"import_jaxpr: jaxpr must be a ClosedJaxpr or Jaxpr, got "
                     f"{type(jaxpr).__name__} (use jax.make_jaxpr(f)(*args))")
  if not isinstance(device, (int, np.integer)) or device < 0:
    raise ValueError(f"import_jaxpr: device must be a non-negative integer, got {device!r}")
  builder = FunctionBuilder(name)
  if input_names is None:
    input_names = [f"x{i}" for i in range(len(inner.invars))]
  if len(input_names) != len(inner.invars):
    raise ValueError(f"import_jaxpr: input_names has {len(input_names)} names for "
                     f"{len(inner.invars)} inputs")
  inputs = [builder.input(n, v.aval.shape, v.aval.dtype, int(device))
            for n, v in zip(input_names, inner.invars)]
  const_values = [builder.constant(np.asarray(c)) for c in consts]
  outputs = _import_into(builder, inner, const_values + inputs, int(device))
  return builder.finish(outputs)


def _import_into(builder: FunctionBuilder, jaxpr, args: Sequence[Value],
                 device: int) -> list[Value]:
  env: dict[Any, Value] = {}
  for var, value in zip(list(jaxpr.constvars) + list(jaxpr.invars), args):
    env[var] = value

  def read(atom) -> Value:
    if isinstance(atom, jex_core.Literal):
      return builder.constant(_literal_array(atom))
    return env[atom]

  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    ins = [read(a) for a in eqn.invars]
    if name in INLINED_PRIMITIVES:
      body = eqn.params[INLINED_PRIMITIVES[name]]
      if isinstance(body, jex_core.ClosedJaxpr):
        consts = [builder.constant(np.asarray(c)) for c in body.consts]
        body = body.jaxpr
      else:
        consts = []
      # custom_vjp_call / custom_jvp_call may take extra leading operands (consts).
      n_extra = len(ins) - len(body.invars)
      outs = _import_into(builder, body, consts + ins[n_extra:], device)
    elif name in PRIMITIVE_CATEGORIES:
      types = [TensorType(v.aval.shape, v.aval.dtype) for v in eqn.outvars]
      outs = builder.primitive(eqn.primitive, ins, eqn.params, device=device,
                               output_types=types)
    else:
      raise ValueError(
          f"import_jaxpr: unsupported primitive {name!r} (params: "
          f"{sorted(eqn.params)}); the importer knows {len(PRIMITIVE_CATEGORIES)} "
          "primitives (PRIMITIVE_CATEGORIES) and inlines " + ", ".join(INLINED_PRIMITIVES))
    for var, value in zip(eqn.outvars, outs):
      if not isinstance(var, jex_core.DropVar):
        env[var] = value
  return [read(v) for v in jaxpr.outvars]


def trace(fn: Callable, *example_args, device: int = 0, name: str | None = None,
          **example_kwargs) -> Function:
  """``import_jaxpr(jax.make_jaxpr(fn)(*example_args))`` over flattened arguments.

  The inputs are the leaves of ``example_args`` (``jax.tree.leaves`` order) and the outputs
  the leaves of the result.
  """
  closed = jax.make_jaxpr(fn)(*example_args, **example_kwargs)
  leaves_with_path = jax.tree_util.tree_flatten_with_path((example_args, example_kwargs))[0]
  names = [_path_name(p) for p, _ in leaves_with_path]
  return import_jaxpr(closed, device=device, name=name or getattr(fn, "__name__", "main"),
                      input_names=names)


def _path_name(path) -> str:
  parts = []
  for key in path:
    text = str(key).strip(".[]'\"")
    parts.append(text)
  text = "_".join(p for p in parts if p) or "x"
  return text if text[0].isalpha() else "x" + text


# --------------------------------------------------------------------------------------
# Printing
# --------------------------------------------------------------------------------------

_HIDDEN_PARAMS = ("preferred_element_type", "precision", "out_sharding", "sharding",
                  "accumulation_type")


def _format_param(value) -> str:
  text = repr(value) if not isinstance(value, str) else value
  text = " ".join(text.split())
  return text if len(text) <= 60 else text[:57] + "..."


def _format_operand(value: Value) -> str:
  if value.is_const:
    array = np.asarray(value.const)
    if array.size == 1:
      return f"{array.reshape(()).item()!r}:{_dtype_short(array.dtype)}"
    return f"{value.name}:const{value.type}"
  return value.name


def format_function(fn: Function) -> str:
  """A readable listing: one op per line with its output types and device."""
  lines = [f"function {fn.name}("
           + ", ".join(f"{v.name}: {v.type}" for v in fn.inputs) + ") {"]
  for op in fn.ops:
    outs = ", ".join(f"{v.name}: {v.type}" for v in op.outputs)
    params = {k: v for k, v in op.params.items()
              if k not in _HIDDEN_PARAMS and not isinstance(v, (jex_core.ClosedJaxpr,
                                                                jex_core.Jaxpr))}
    shown = ", ".join(f"{k}={_format_param(v)}" for k, v in params.items())
    args = ", ".join(_format_operand(v) for v in op.inputs)
    lines.append(f"  {outs} = {op.name}" + (f"[{shown}]" if shown else "") + f"({args})")
  lines.append("  return " + ", ".join(_format_operand(v) for v in fn.outputs))
  lines.append("}")
  return "\n".join(lines)


def values_of(fn: Function) -> Iterable[Value]:
  """Every value of ``fn``: inputs, then op outputs in order."""
  yield from fn.inputs
  for op in fn.ops:
    yield from op.outputs
