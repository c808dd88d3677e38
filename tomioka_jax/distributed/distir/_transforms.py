"""DistIR transforms: data, horizontal (Megatron) and pipeline parallelism, and their nesting.

Santhanam et al. (2021), section 3 (and the reference's ``mlp_dhp_transform`` /
``gpt2_dhp_transform``). A transform builds one global DistIR program for ``d * h * p``
devices by tracing the per-device pieces of the computation with per-shard shapes
(:func:`~tomioka_jax.distributed.distir.trace`) and inlining each on its device, with
explicit communication between them.

**Device layout.** Data-parallel replica ``i < d``, horizontal rank ``j < h`` and pipeline
stage ``k < p`` run on position ``(i * h + j) * p + k`` of ``devices`` (default
``range(d * h * p)``): the reference's hierarchical device tree
(``_get_device_tree``: data parallel outermost, then horizontal, then pipeline), without its
extra host device 0, since a steady-state step starts from inputs already on their devices.

**Steady state.** The programs are one step: their inputs are the per-device shards (each
replica's slice of the batch, each device's weight shards), their outputs the updated
shards. :func:`shard_mlp_inputs` / :func:`gather_mlp_outputs` convert to and from the
global arrays, so a test compares the distributed step with :func:`mlp_reference_step`.

**MLP** (:func:`mlp_training_step`). ``L`` square layers ``a_{l+1} = relu(a_l W_l)``,
loss ``(1 / 2B) sum_b ||a_L - y||^2`` over the global batch ``B``, one SGD step
``W_l <- W_l - lr dL/dW_l``. Megatron (Shoeybi et al. 2019) splits consecutive layers of a
stage in pairs: the first by columns (``W = [W^1 .. W^h]``, rank ``j`` computes
``relu(a W^j)``, no communication, since relu acts elementwise), the second by rows (rank ``j``
computes ``relu(a^j W_j)`` partially: ``z = sum_j a^j W_j`` is an ``allreduce``), so one
allreduce per pair forward and one (of the input gradient of the column layer) backward. A
column layer without a partner (the last of a stage with an odd number of layers) is
followed by an ``allgather``. Gradients are summed over microbatches on the device and
over data-parallel replicas by an ``allreduce`` per weight shard, right after the stage's
last backward task, so the synchronisation of late stages overlaps earlier stages' backward.

**Pipeline.** Stage ``k`` holds layers ``[k L/p, (k+1) L/p)`` (``L`` must divide by ``p``);
the replica's batch is cut into ``m`` microbatches; activations go forward and gradients
backward by ``send`` between the devices of one horizontal rank; each stage runs its tasks
in the order of :func:`~tomioka_jax.distributed.distir.pipeline_schedule` (GPipe or 1F1B).
The global program lists the tasks in the order of their start times in a list schedule
(``_pipeline.interleave_stages``), so every ``send`` sits next to the task that produces
its value, near the time it happens.
Every op's output is named after its task (``F3/...``, ``B3/...``, ``grad_allreduce/...``,
``update/...``), so a printed or projected program shows the schedule.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tomioka_jax.distributed.distir import _ir as ir
from tomioka_jax.distributed.distir import _pipeline

# --------------------------------------------------------------------------------------
# A builder that labels every op with the task it belongs to
# --------------------------------------------------------------------------------------


class _Emitter:
  """``FunctionBuilder`` plus a current task label; ``finish`` prefixes every op output's
  name with the label of the task that defined it."""

  def __init__(self, name: str):
    self.builder = ir.FunctionBuilder(name)
    self.label = ""
    self._labels: list[str] = []

  def input(self, name, shape, dtype, device) -> ir.Value:
    return self.builder.input(name, shape, dtype, device)

  def inline(self, piece: ir.Function, inputs: Sequence[ir.Value], device: int):
    self._labels.extend([self.label] * len(piece.ops))
    return self.builder.inline(piece, inputs, device=device)

  def send(self, x: ir.Value, device: int) -> ir.Value:
    self._labels.append(self.label)
    return self.builder.send(x, device)

  def allreduce(self, xs: Sequence[ir.Value]) -> tuple[ir.Value, ...]:
    if len(xs) == 1:
      return tuple(xs)
    self._labels.append(self.label)
    return self.builder.allreduce(xs)

  def allgather(self, xs: Sequence[ir.Value], axis: int) -> tuple[ir.Value, ...]:
    if len(xs) == 1:
      return tuple(xs)
    self._labels.append(self.label)
    return self.builder.allgather(xs, axis)

  def finish(self, outputs: Sequence[ir.Value]) -> ir.Function:
    fn = self.builder.finish(outputs)
    if len(self._labels) != len(fn.ops):
      raise AssertionError("op labels out of step with the ops")  # a bug of this module
    renamed: dict[int, ir.Value] = {}

    def new(value: ir.Value) -> ir.Value:
      return renamed.get(id(value), value)

    ops = []
    for op, label in zip(fn.ops, self._labels):
      outs = []
      for v in op.outputs:
        nv = ir.Value(f"{label}/{v.name}" if label else v.name, v.type, v.const)
        renamed[id(v)] = nv
        outs.append(nv)
      ops.append(ir.Op(op.name, tuple(new(v) for v in op.inputs), tuple(outs), op.params,
                       op.primitive))
    return ir.Function(fn.name, fn.inputs, tuple(ops),
                       tuple(new(v) for v in fn.outputs)).verify()


def op_label(value: ir.Value) -> str:
  """The task label a transform gave the op that defines ``value`` (``""`` if none)."""
  return value.name.rpartition("/")[0]


# --------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------


def _check_positive(where: str, **values) -> None:
  for name, value in values.items():
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
      raise ValueError(f"{where}: {name} must be an integer >= 1, got {value!r}")


def _check_devices(where: str, devices, count: int, what: str) -> tuple[int, ...]:
  if devices is None:
    return tuple(range(count))
  devices = tuple(devices)
  if len(devices) != count:
    raise ValueError(f"{where}: devices has {len(devices)} entries but {what} = {count} "
                     "devices are needed")
  for dev in devices:
    if not isinstance(dev, (int, np.integer)) or isinstance(dev, bool) or dev < 0:
      raise ValueError(f"{where}: devices must be non-negative integers, got {dev!r}")
  if len(set(devices)) != len(devices):
    raise ValueError(f"{where}: devices must be distinct, got {devices}")
  return tuple(int(dev) for dev in devices)


# --------------------------------------------------------------------------------------
# Generic data parallelism
# --------------------------------------------------------------------------------------


def data_parallel_inputs(example_args: Sequence[Any], *, batch_argnums: Sequence[int],
                         num_devices: int) -> list[list[Any]]:
  """Per-device flat inputs for :func:`data_parallel`: ``out[r]`` is device ``r``'s leaves
  (the arguments in ``batch_argnums`` split along axis 0, the others replicated)."""
  _check_positive("data_parallel_inputs", num_devices=num_devices)
  batch_argnums = _check_batch_argnums("data_parallel_inputs", batch_argnums, len(example_args))
  out = []
  for r in range(num_devices):
    leaves = []
    for i, arg in enumerate(example_args):
      for leaf in jax.tree.leaves(arg):
        if i in batch_argnums:
          leaf = np.asarray(leaf)
          n = leaf.shape[0] // num_devices
          leaf = leaf[r * n:(r + 1) * n]
        leaves.append(leaf)
    out.append(leaves)
  return out


def _check_batch_argnums(where, batch_argnums, nargs) -> frozenset[int]:
  nums = frozenset(int(i) for i in batch_argnums)
  for i in nums:
    if not 0 <= i < nargs:
      raise ValueError(f"{where}: batch_argnums entry {i} is out of range for {nargs} "
                       "arguments")
  return nums


def data_parallel(fn_to_trace: Callable, example_args: Sequence[Any], *,
                  batch_argnums: Sequence[int], devices: Sequence[int] | int,
                  reduce: str | None = "mean") -> ir.Function:
  """Data parallelism for any step: each device runs ``fn_to_trace`` on its batch shard.

  The step is traced once with per-shard shapes and inlined on every device; each output
  leaf is then ``allreduce``-d over the devices and, for ``reduce="mean"``, divided by
  their number: for a step returning a mean loss and its gradient over equal shards this is
  the full-batch loss and gradient, ``(1/n) sum_r grad L_r = grad L``.

  Args:
    fn_to_trace: the per-device step, e.g. ``jax.value_and_grad(loss)``.
    example_args: its arguments at the **global** batch size.
    batch_argnums: indices of the arguments (pytrees) whose leaves are split along axis 0;
      the others are replicated.
    devices: device ids, or their number ``n`` for ``range(n)``.
    reduce: ``"mean"``, ``"sum"`` or ``None`` (each device keeps its own outputs).

  Returns:
    A function whose inputs are, device after device, that device's leaves (see
    :func:`data_parallel_inputs`) and whose outputs are, device after device, the reduced
    outputs.
  """
  if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
    _check_positive("data_parallel", devices=devices)
    devices = tuple(range(int(devices)))
  devices = _check_devices("data_parallel", devices, len(tuple(devices)), "len(devices)")
  if not devices:
    raise ValueError("data_parallel: devices must be non-empty")
  if reduce not in ("mean", "sum", None):
    raise ValueError(f"data_parallel: reduce must be 'mean', 'sum' or None, got {reduce!r}")
  example_args = tuple(example_args)
  nums = _check_batch_argnums("data_parallel", batch_argnums, len(example_args))
  if not nums:
    raise ValueError("data_parallel: batch_argnums must name at least one argument")
  n = len(devices)
  shard_args = []
  for i, arg in enumerate(example_args):
    if i in nums:
      def cut(leaf, i=i):
        leaf = np.asarray(leaf)
        if leaf.ndim == 0 or leaf.shape[0] % n:
          raise ValueError(f"data_parallel: argument {i} has a leaf of shape {leaf.shape} "
                           f"whose batch axis does not split into {n} equal shards")
        return jax.ShapeDtypeStruct((leaf.shape[0] // n,) + leaf.shape[1:], leaf.dtype)
      shard_args.append(jax.tree.map(cut, arg))
    else:
      shard_args.append(jax.tree.map(
          lambda leaf: jax.ShapeDtypeStruct(np.shape(leaf), jnp.result_type(leaf)), arg))
  piece = ir.trace(fn_to_trace, *shard_args, name="shard")
  em = _Emitter(f"data_parallel_{getattr(fn_to_trace, '__name__', 'step')}_{n}")
  em.label = "compute"
  per_device = []
  for dev in devices:
    ins = [em.input(f"{v.name}.d{dev}", v.type.shape, v.type.dtype, dev)
           for v in piece.inputs]
    per_device.append(em.inline(piece, ins, dev))
  if reduce is None:
    return em.finish([v for outs in per_device for v in outs])
  em.label = "allreduce"
  reduced = [em.allreduce([outs[j] for outs in per_device])
             for j in range(len(piece.outputs))]
  results = [list(r) for r in reduced]
  if reduce == "mean":
    em.label = "mean"
    for j, out in enumerate(piece.outputs):
      if not jnp.issubdtype(out.type.dtype, jnp.inexact):
        raise ValueError(f"data_parallel: reduce='mean' needs floating outputs; output {j} "
                         f"is {out.type.dtype} (use reduce='sum' or None)")
      scale = _scale_piece(out.type.shape, out.type.dtype.name, 1.0 / n)
      results[j] = [em.inline(scale, [v], dev)[0] for v, dev in zip(results[j], devices)]
  return em.finish([results[j][r] for r in range(n) for j in range(len(results))])


# --------------------------------------------------------------------------------------
# Traced pieces (cached by shape)
# --------------------------------------------------------------------------------------


def _spec(shape, dtype):
  return jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype))


@functools.lru_cache(maxsize=None)
def _scale_piece(shape, dtype, factor):
  return ir.trace(lambda x: x * jnp.asarray(factor, dtype), _spec(shape, dtype), name="scale")


@functools.lru_cache(maxsize=None)
def _add_piece(shape, dtype):
  return ir.trace(jnp.add, _spec(shape, dtype), _spec(shape, dtype), name="add")


@functools.lru_cache(maxsize=None)
def _sgd_piece(shape, dtype, lr):
  return ir.trace(lambda w, g: w - jnp.asarray(lr, dtype) * g, _spec(shape, dtype),
                  _spec(shape, dtype), name="sgd")


@functools.lru_cache(maxsize=None)
def _slice_piece(shape, dtype, axis, start, size):
  def cut(x):
    return jax.lax.slice_in_dim(x, start, start + size, axis=axis)
  return ir.trace(cut, _spec(shape, dtype), name="slice")


@functools.lru_cache(maxsize=None)
def _dense_relu_piece(rows, n_in, n_out, dtype):
  return ir.trace(lambda x, w: jax.nn.relu(x @ w), _spec((rows, n_in), dtype),
                  _spec((n_in, n_out), dtype), name="dense_relu")


@functools.lru_cache(maxsize=None)
def _matmul_piece(rows, n_in, n_out, dtype):
  return ir.trace(lambda x, w: x @ w, _spec((rows, n_in), dtype),
                  _spec((n_in, n_out), dtype), name="matmul")


@functools.lru_cache(maxsize=None)
def _relu_piece(shape, dtype):
  return ir.trace(jax.nn.relu, _spec(shape, dtype), name="relu")


@functools.lru_cache(maxsize=None)
def _dense_relu_backward_piece(rows, n_in, n_out, dtype, need_dx):
  """``(x, w, out, g) -> (dW[, dx])`` for ``out = relu(x w)``, ``g = dL/d out``."""
  def backward(x, w, out, g):
    dz = jnp.where(out > 0, g, jnp.zeros_like(g))
    dw = x.T @ dz
    return (dw, dz @ w.T) if need_dx else (dw,)
  return ir.trace(backward, _spec((rows, n_in), dtype), _spec((n_in, n_out), dtype),
                  _spec((rows, n_out), dtype), _spec((rows, n_out), dtype),
                  name="dense_relu_backward")


@functools.lru_cache(maxsize=None)
def _mse_grad_piece(rows, n, dtype, scale):
  """``(out, y) -> scale (out - y)``: the gradient of ``(scale / 2) ||out - y||^2``."""
  return ir.trace(lambda out, y: (out - y) * jnp.asarray(scale, dtype),
                  _spec((rows, n), dtype), _spec((rows, n), dtype), name="mse_grad")


# --------------------------------------------------------------------------------------
# MLP training step with (d, h, p)
# --------------------------------------------------------------------------------------


def _check_batch(where, d, batch, num_microbatches):
  if batch % d:
    raise ValueError(f"{where}: batch = {batch} must be divisible by d = {d} (each data-"
                     "parallel replica gets an equal slice)")
  if (batch // d) % num_microbatches:
    raise ValueError(f"{where}: num_microbatches = {num_microbatches} must divide the "
                     f"per-replica batch batch / d = {batch // d}")


def _check_mlp(where, d, h, p, num_layers, hidden, batch, num_microbatches, schedule):
  _check_positive(where, d=d, h=h, p=p, num_layers=num_layers, hidden=hidden, batch=batch,
                  num_microbatches=num_microbatches)
  _pipeline.check_schedule(schedule)
  if num_layers % p:
    raise ValueError(f"{where}: num_layers = {num_layers} must be divisible by p = {p} "
                     "(each pipeline stage holds the same number of layers)")
  if hidden % h:
    raise ValueError(f"{where}: hidden = {hidden} must be divisible by h = {h} (Megatron "
                     "splits each weight into h equal column or row blocks)")
  _check_batch(where, d, batch, num_microbatches)


def mlp_layer_kinds(num_layers: int, h: int, p: int) -> list[str]:
  """How each layer is split: ``"full"`` (``h = 1``), ``"col"`` (column-split, partner of
  the next layer), ``"row"`` (row-split, then allreduce), ``"col_gather"`` (column-split
  without a partner in its stage, then allgather)."""
  if h == 1:
    return ["full"] * num_layers
  per_stage = num_layers // p
  kinds = []
  for layer in range(num_layers):
    j = layer % per_stage
    if j % 2:
      kinds.append("row")
    elif j + 1 < per_stage:
      kinds.append("col")
    else:
      kinds.append("col_gather")
  return kinds


def _mlp_shard(w, kind: str, hi: int, h: int):
  if kind == "full":
    return w
  n = w.shape[0] // h
  if kind == "row":
    return w[hi * n:(hi + 1) * n, :]
  return w[:, hi * n:(hi + 1) * n]


def _position(di, hi, pi, h, p):
  return (di * h + hi) * p + pi


def shard_mlp_inputs(weights: Sequence[Any], x, y, d: int, h: int, p: int) -> list[Any]:
  """The inputs of :func:`mlp_training_step` from global weights and batch, in its order.

  Device after device (in position order ``(i * h + j) * p + k``): ``x`` (replica ``i``'s
  batch slice) on first-stage devices, ``y`` on last-stage devices, then the device's weight
  shards in layer order.
  """
  num_layers = len(weights)
  hidden = np.shape(weights[0])[0]
  batch = np.shape(x)[0]
  _check_mlp("shard_mlp_inputs", d, h, p, num_layers, hidden, batch, 1, "gpipe")
  kinds = mlp_layer_kinds(num_layers, h, p)
  per_stage = num_layers // p
  rows = batch // d
  out = []
  for di in range(d):
    for hi in range(h):
      for pi in range(p):
        if pi == 0:
          out.append(np.asarray(x)[di * rows:(di + 1) * rows])
        if pi == p - 1:
          out.append(np.asarray(y)[di * rows:(di + 1) * rows])
        for layer in range(pi * per_stage, (pi + 1) * per_stage):
          out.append(np.asarray(_mlp_shard(np.asarray(weights[layer]), kinds[layer], hi, h)))
  return out


def gather_mlp_outputs(outputs: Sequence[Any], d: int, h: int, p: int, *,
                       num_layers: int, replica: int = 0) -> list[np.ndarray]:
  """Global updated weights from :func:`mlp_training_step`'s outputs (of data-parallel
  ``replica``; all replicas hold the same weights)."""
  _check_positive("gather_mlp_outputs", d=d, h=h, p=p, num_layers=num_layers)
  if len(outputs) != d * num_layers * h:
    raise ValueError(f"gather_mlp_outputs: expected {d * num_layers * h} outputs, got "
                     f"{len(outputs)}")
  kinds = mlp_layer_kinds(num_layers, h, p)
  per_stage = num_layers // p
  shards: dict[tuple[int, int, int], Any] = {}
  it = iter(outputs)
  for di in range(d):
    for hi in range(h):
      for pi in range(p):
        for layer in range(pi * per_stage, (pi + 1) * per_stage):
          shards[(di, hi, layer)] = np.asarray(next(it))
  weights = []
  for layer in range(num_layers):
    parts = [shards[(replica, hi, layer)] for hi in range(h)]
    kind = kinds[layer]
    weights.append(parts[0] if kind == "full"
                   else np.concatenate(parts, axis=0 if kind == "row" else 1))
  return weights


def mlp_reference_step(weights: Sequence[Any], x, y, *, learning_rate: float = 0.1
                       ) -> list[jax.Array]:
  """The undistributed step: ``W_l - lr grad_l`` of ``(1/2B) ||relu(..relu(x W_0)..) - y||^2``."""
  def loss(ws):
    a = x
    for w in ws:
      a = jax.nn.relu(a @ w)
    return 0.5 * jnp.sum(jnp.square(a - y)) / x.shape[0]

  grads = jax.grad(loss)(list(weights))
  return [w - learning_rate * g for w, g in zip(weights, grads)]


def mlp_training_step(d: int, h: int, p: int, *, num_layers: int, hidden: int, batch: int,
                      num_microbatches: int = 1, schedule: str = "gpipe",
                      dtype=np.float32, learning_rate: float = 0.1,
                      devices: Sequence[int] | None = None) -> ir.Function:
  """One SGD step of an MLP over ``d * h * p`` devices (see the module docstring).

  Args:
    d, h, p: data-parallel, horizontal (Megatron) and pipeline-parallel degrees.
    num_layers: ``L`` square ``hidden x hidden`` layers with ReLU; divisible by ``p``.
    hidden: the width; divisible by ``h``.
    batch: the global batch; ``batch / d`` must divide into ``num_microbatches``.
    num_microbatches: microbatches per replica and step (pipeline parallelism).
    schedule: ``"gpipe"`` or ``"1f1b"`` (:func:`pipeline_schedule`).
    dtype: the weights' and activations' dtype.
    learning_rate: the SGD step size.
    devices: the ``d * h * p`` device ids (default ``range(d * h * p)``), by position.

  Returns:
    The step. Inputs and outputs are in :func:`shard_mlp_inputs` order (the outputs: each
    device's updated weight shards).

  Example:
    >>> fn = mlp_training_step(2, 1, 2, num_layers=2, hidden=4, batch=8,
    ...                        num_microbatches=2, schedule="1f1b")
    >>> fn.devices, [v.name for v in fn.inputs[:3]]
    ((0, 1, 2, 3), ['x.d0', 'w0.d0', 'y.d1'])
    >>> sorted({op_label(op.outputs[0]) for op in fn.ops})
    ['B0', 'B1', 'F0', 'F1', 'grad_allreduce', 'update']
  """
  where = "mlp_training_step"
  _check_mlp(where, d, h, p, num_layers, hidden, batch, num_microbatches, schedule)
  devices = _check_devices(where, devices, d * h * p, f"d * h * p = {d} * {h} * {p}")
  dtype = np.dtype(dtype).name
  m = num_microbatches
  rows = batch // d // m
  per_stage = num_layers // p
  kinds = mlp_layer_kinds(num_layers, h, p)
  nh = hidden // h

  def dev(di, hi, pi):
    return devices[_position(di, hi, pi, h, p)]

  def shard_shape(kind):
    return {"full": (hidden, hidden), "row": (nh, hidden)}.get(kind, (hidden, nh))

  em = _Emitter(f"mlp_{d}_{h}_{p}_{m}_{schedule}")
  x_in, y_in, w_in = {}, {}, {}
  for di in range(d):
    for hi in range(h):
      for pi in range(p):
        dv = dev(di, hi, pi)
        if pi == 0:
          x_in[di, hi] = em.input(f"x.d{dv}", (rows * m, hidden), dtype, dv)
        if pi == p - 1:
          y_in[di, hi] = em.input(f"y.d{dv}", (rows * m, hidden), dtype, dv)
        for layer in range(pi * per_stage, (pi + 1) * per_stage):
          w_in[di, hi, layer] = em.input(f"w{layer}.d{dv}", shard_shape(kinds[layer]),
                                         dtype, dv)

  saved: dict[tuple, Any] = {}     # (di, hi, layer, k) -> (layer input, layer output)
  inbox: dict[tuple, Any] = {}     # (di, hi, stage, k, "F"|"B") -> received value
  grads: dict[tuple, Any] = {}     # (di, hi, layer) -> accumulated gradient

  def forward(di, pi, k):
    acts = {}
    for hi in range(h):
      dv = dev(di, hi, pi)
      if pi == 0:
        acts[hi] = em.inline(_slice_piece((rows * m, hidden), dtype, 0, k * rows, rows),
                             [x_in[di, hi]], dv)[0]
      else:
        acts[hi] = inbox.pop((di, hi, pi, k, "F"))
    for layer in range(pi * per_stage, (pi + 1) * per_stage):
      kind = kinds[layer]
      if kind == "row":
        partial = {hi: em.inline(_matmul_piece(rows, nh, hidden, dtype),
                                 [acts[hi], w_in[di, hi, layer]], dev(di, hi, pi))[0]
                   for hi in range(h)}
        summed = em.allreduce([partial[hi] for hi in range(h)])
        outs = {hi: em.inline(_relu_piece((rows, hidden), dtype), [summed[hi]],
                              dev(di, hi, pi))[0] for hi in range(h)}
      else:
        width = hidden if kind == "full" else nh
        outs = {hi: em.inline(_dense_relu_piece(rows, hidden, width, dtype),
                              [acts[hi], w_in[di, hi, layer]], dev(di, hi, pi))[0]
                for hi in range(h)}
      for hi in range(h):
        saved[di, hi, layer, k] = (acts[hi], outs[hi])
      if kind == "col_gather":
        gathered = em.allgather([outs[hi] for hi in range(h)], axis=1)
        acts = dict(enumerate(gathered))
      else:
        acts = outs
    for hi in range(h):
      if pi < p - 1:
        inbox[di, hi, pi + 1, k, "F"] = em.send(acts[hi], dev(di, hi, pi + 1))
      else:
        saved[di, hi, "out", k] = acts[hi]

  def backward(di, pi, k):
    g = {}
    for hi in range(h):
      dv = dev(di, hi, pi)
      if pi == p - 1:
        y_k = em.inline(_slice_piece((rows * m, hidden), dtype, 0, k * rows, rows),
                        [y_in[di, hi]], dv)[0]
        g[hi] = em.inline(_mse_grad_piece(rows, hidden, dtype, 1.0 / batch),
                          [saved.pop((di, hi, "out", k)), y_k], dv)[0]
      else:
        g[hi] = inbox.pop((di, hi, pi, k, "B"))
    for layer in reversed(range(pi * per_stage, (pi + 1) * per_stage)):
      kind = kinds[layer]
      need_dx = layer > 0
      if kind == "col_gather":
        g = {hi: em.inline(_slice_piece((rows, hidden), dtype, 1, hi * nh, nh), [g[hi]],
                           dev(di, hi, pi))[0] for hi in range(h)}
      n_in, n_out = shard_shape(kind)
      dx = {}
      for hi in range(h):
        dv = dev(di, hi, pi)
        x_l, out_l = saved.pop((di, hi, layer, k))
        res = em.inline(_dense_relu_backward_piece(rows, n_in, n_out, dtype, need_dx),
                        [x_l, w_in[di, hi, layer], out_l, g[hi]], dv)
        key = (di, hi, layer)
        grads[key] = (res[0] if key not in grads else
                      em.inline(_add_piece((n_in, n_out), dtype), [grads[key], res[0]],
                                dv)[0])
        if need_dx:
          dx[hi] = res[1]
      if need_dx and kind in ("col", "col_gather"):
        dx = dict(enumerate(em.allreduce([dx[hi] for hi in range(h)])))
      g = dx
    if pi > 0:
      for hi in range(h):
        inbox[di, hi, pi - 1, k, "B"] = em.send(g[hi], dev(di, hi, pi - 1))

  def synchronise_and_update(pi):
    em.label = "grad_allreduce"
    for hi in range(h):
      for layer in range(pi * per_stage, (pi + 1) * per_stage):
        summed = em.allreduce([grads[di, hi, layer] for di in range(d)])
        for di in range(d):
          grads[di, hi, layer] = summed[di]
    em.label = "update"
    for di in range(d):
      for hi in range(h):
        for layer in range(pi * per_stage, (pi + 1) * per_stage):
          w = w_in[di, hi, layer]
          new[di, hi, layer] = em.inline(
              _sgd_piece(w.type.shape, dtype, float(learning_rate)),
              [w, grads[di, hi, layer]], dev(di, hi, pi))[0]

  new: dict[tuple, Any] = {}
  orders = _pipeline.pipeline_schedule(p, m, schedule)
  remaining_backward = [m] * p
  for pi, (kind, k) in _pipeline.interleave_stages(orders):
    em.label = f"{kind}{k}"
    for di in range(d):
      (forward if kind == "F" else backward)(di, pi, k)
    if kind == "B":
      remaining_backward[pi] -= 1
      if remaining_backward[pi] == 0:
        synchronise_and_update(pi)
  outputs = [new[di, hi, layer] for di in range(d) for hi in range(h) for pi in range(p)
             for layer in range(pi * per_stage, (pi + 1) * per_stage)]
  return em.finish(outputs)


# --------------------------------------------------------------------------------------
# GPT-2-style inference with (d, h, p)
# --------------------------------------------------------------------------------------

#: Parameters of one GPT block and how Megatron splits them over ``h`` ranks: ``col``
#: (columns of a matrix: whole heads for q/k/v, a slice of the MLP's hidden units),
#: ``vec`` (the matching slice of a bias), ``row`` (rows: the output projections, whose
#: partial products are allreduced), ``rep`` (replicated).
GPT_BLOCK_SPLITS: dict[str, str] = {
    "ln1_scale": "rep", "ln1_bias": "rep",
    "wq": "col", "bq": "vec", "wk": "col", "bk": "vec", "wv": "col", "bv": "vec",
    "wo": "row", "bo": "rep",
    "ln2_scale": "rep", "ln2_bias": "rep",
    "w_fc": "col", "b_fc": "vec", "w_proj": "row", "b_proj": "rep",
}

_LN_EPS = 1e-5


def _layer_norm(x, scale, bias):
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + _LN_EPS) * scale[None, None, :] + bias[None, None, :]


def _local_attention(x, ln_s, ln_b, wq, bq, wk, bk, wv, bv, wo, heads):
  """Causal self-attention over ``heads`` heads, projected by the matching rows of ``wo``:
  this rank's share of the attention output (before the allreduce and the bias)."""
  rows, seq, _ = x.shape
  a = _layer_norm(x, ln_s, ln_b)
  width = wq.shape[1]
  dh = width // heads

  def split(w, b):
    return (a @ w + b[None, None, :]).reshape(rows, seq, heads, dh)

  q, k, v = split(wq, bq), split(wk, bk), split(wv, bv)
  scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(jnp.asarray(dh, x.dtype))
  causal = jnp.tril(jnp.ones((seq, seq), bool))
  scores = jnp.where(causal[None, None], scores, jnp.finfo(x.dtype).min)
  out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v)
  return out.reshape(rows, seq, width) @ wo


def _local_mlp(x, ln_s, ln_b, w_fc, b_fc, w_proj):
  a = _layer_norm(x, ln_s, ln_b)
  return jax.nn.gelu(a @ w_fc + b_fc[None, None, :], approximate=True) @ w_proj


@functools.lru_cache(maxsize=None)
def _gpt_pieces(rows, seq, d_model, heads_local, h, vocab, dtype):
  width = d_model // h
  x = _spec((rows, seq, d_model), dtype)
  vec_d, vec_w = _spec((d_model,), dtype), _spec((width,), dtype)
  col, row = _spec((d_model, width), dtype), _spec((width, d_model), dtype)
  fc_w = 4 * d_model // h
  pieces = {
      "embed": ir.trace(
          lambda tokens, wte, wpe: wte[tokens] + wpe[None, :, :],
          _spec((rows, seq), np.int32), _spec((vocab, d_model), dtype),
          _spec((seq, d_model), dtype), name="embed"),
      "attention": ir.trace(
          functools.partial(_local_attention, heads=heads_local), x, vec_d, vec_d,
          col, vec_w, col, vec_w, col, vec_w, row, name="attention"),
      "mlp": ir.trace(_local_mlp, x, vec_d, vec_d, _spec((d_model, fc_w), dtype),
                      _spec((fc_w,), dtype), _spec((fc_w, d_model), dtype), name="mlp"),
      "residual": ir.trace(lambda x, y, b: x + y + b[None, None, :], x, x, vec_d,
                           name="residual"),
      "logits": ir.trace(
          lambda x, s, b, wte: jnp.einsum("bsd,vd->bsv", _layer_norm(x, s, b), wte),
          x, vec_d, vec_d, _spec((vocab, d_model), dtype), name="logits"),
  }
  return pieces


def _check_gpt(where, d, h, p, num_layers, d_model, num_heads, seq_len, batch, vocab,
               num_microbatches):
  _check_positive(where, d=d, h=h, p=p, num_layers=num_layers, d_model=d_model,
                  num_heads=num_heads, seq_len=seq_len, batch=batch, vocab=vocab,
                  num_microbatches=num_microbatches)
  if d_model % num_heads:
    raise ValueError(f"{where}: d_model = {d_model} must be divisible by num_heads = "
                     f"{num_heads}")
  if num_heads % h:
    raise ValueError(f"{where}: num_heads = {num_heads} must be divisible by h = {h} "
                     "(Megatron gives each rank whole heads)")
  if num_layers % p:
    raise ValueError(f"{where}: num_layers = {num_layers} must be divisible by p = {p} "
                     "(each pipeline stage holds the same number of blocks)")
  _check_batch(where, d, batch, num_microbatches)


def _gpt_split(array, kind, hi, h):
  array = np.asarray(array)
  if kind == "rep":
    return array
  if kind == "row":
    n = array.shape[0] // h
    return array[hi * n:(hi + 1) * n]
  n = array.shape[-1] // h
  return array[..., hi * n:(hi + 1) * n]


def _gpt_device_inputs(pi, p, per_stage):
  """(name, layer or None, block key or None) of a device's inputs, in order."""
  names = []
  if pi == 0:
    names += [("tokens", None, None), ("wte", None, None), ("wpe", None, None)]
  for layer in range(pi * per_stage, (pi + 1) * per_stage):
    names += [(f"{key}{layer}", layer, key) for key in GPT_BLOCK_SPLITS]
  if pi == p - 1:
    names += [("lnf_scale", None, None), ("lnf_bias", None, None)]
    if pi != 0:
      names.append(("wte", None, None))
  return names


def shard_gpt_inputs(params: dict, tokens, d: int, h: int, p: int) -> list[Any]:
  """The inputs of :func:`gpt_inference` from global parameters and tokens, in its order.

  ``params``: ``wte (vocab, d_model)``, ``wpe (seq_len, d_model)``, ``blocks`` (a list of
  dicts with the keys of :data:`GPT_BLOCK_SPLITS`; ``w_fc (d_model, 4 d_model)``),
  ``lnf_scale``, ``lnf_bias``. Device after device: replica ``i``'s tokens, ``wte`` and
  ``wpe`` on first-stage devices; each block's shards on its stage; the final layer norm
  and (tied) ``wte`` on last-stage devices.
  """
  num_layers = len(params["blocks"])
  _check_positive("shard_gpt_inputs", d=d, h=h, p=p, num_layers=num_layers)
  if num_layers % p:
    raise ValueError(f"shard_gpt_inputs: num_layers = {num_layers} must be divisible by "
                     f"p = {p}")
  tokens = np.asarray(tokens, np.int32)
  rows = tokens.shape[0] // d
  per_stage = num_layers // p
  out = []
  for di in range(d):
    for hi in range(h):
      for pi in range(p):
        for name, layer, key in _gpt_device_inputs(pi, p, per_stage):
          if name == "tokens":
            out.append(tokens[di * rows:(di + 1) * rows])
          elif layer is None:
            out.append(np.asarray(params[name]))
          else:
            out.append(_gpt_split(params["blocks"][layer][key], GPT_BLOCK_SPLITS[key], hi, h))
  return out


def gather_gpt_outputs(outputs: Sequence[Any], d: int, num_microbatches: int = 1
                       ) -> np.ndarray:
  """The global logits ``(batch, seq_len, vocab)`` from :func:`gpt_inference`'s outputs."""
  if len(outputs) != d * num_microbatches:
    raise ValueError(f"gather_gpt_outputs: expected d * num_microbatches = "
                     f"{d * num_microbatches} outputs, got {len(outputs)}")
  return np.concatenate([np.asarray(o) for o in outputs], axis=0)


def gpt_inference(d: int, h: int, p: int, *, num_layers: int, d_model: int, num_heads: int,
                  seq_len: int, batch: int, vocab: int, num_microbatches: int = 1,
                  dtype=np.float32, devices: Sequence[int] | None = None) -> ir.Function:
  """A GPT-2-style forward pass (inference) over ``d * h * p`` devices.

  Each block is ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``, with causal multi-head
  attention and a tanh-GELU MLP of width ``4 d_model``; logits are ``ln_f(x) wte^T``
  (tied embedding). Megatron splits each block over the ``h`` ranks of a replica: rank
  ``j`` holds heads ``[j n/h, (j+1) n/h)`` (the columns of ``wq, wk, wv`` and rows of
  ``wo``) and columns ``j`` of ``w_fc`` / rows ``j`` of ``w_proj``, so a block costs two
  allreduces of the activations. Stages hold ``num_layers / p`` consecutive blocks;
  microbatches flow through them in order (GPipe's forward half). The device layout is
  the module's ``(i * h + j) * p + k``.

  Returns:
    Inputs in :func:`shard_gpt_inputs` order; outputs the logits of each replica's
    microbatches (replica after replica, microbatch after microbatch), on the replica's
    rank-0 last-stage device.
  """
  where = "gpt_inference"
  _check_gpt(where, d, h, p, num_layers, d_model, num_heads, seq_len, batch, vocab,
             num_microbatches)
  devices = _check_devices(where, devices, d * h * p, f"d * h * p = {d} * {h} * {p}")
  dtype = np.dtype(dtype).name
  m = num_microbatches
  rows = batch // d // m
  per_stage = num_layers // p
  pieces = _gpt_pieces(rows, seq_len, d_model, num_heads // h, h, vocab, dtype)
  width, fc_w = d_model // h, 4 * d_model // h
  shapes = {"rep": (d_model,), "vec": (width,), "col": (d_model, width),
            "row": (width, d_model)}

  def shape_of(name, key):
    if key is not None:
      kind = GPT_BLOCK_SPLITS[key]
      if key == "w_fc":
        return (d_model, fc_w)
      if key == "b_fc":
        return (fc_w,)
      if key == "w_proj":
        return (fc_w, d_model)
      return shapes[kind]
    return {"tokens": (rows * m, seq_len), "wte": (vocab, d_model),
            "wpe": (seq_len, d_model), "lnf_scale": (d_model,),
            "lnf_bias": (d_model,)}[name]

  def dev(di, hi, pi):
    return devices[_position(di, hi, pi, h, p)]

  em = _Emitter(f"gpt_{d}_{h}_{p}_{m}")
  value: dict[tuple, ir.Value] = {}
  for di in range(d):
    for hi in range(h):
      for pi in range(p):
        dv = dev(di, hi, pi)
        for name, _, key in _gpt_device_inputs(pi, p, per_stage):
          value[di, hi, pi, name] = em.input(
              f"{name}.d{dv}", shape_of(name, key),
              "int32" if name == "tokens" else dtype, dv)

  inbox: dict[tuple, ir.Value] = {}
  outputs: dict[tuple, ir.Value] = {}

  def forward(di, pi, k):
    acts = {}
    for hi in range(h):
      dv = dev(di, hi, pi)
      if pi == 0:
        tok = em.inline(_slice_piece((rows * m, seq_len), "int32", 0, k * rows, rows),
                        [value[di, hi, 0, "tokens"]], dv)[0]
        acts[hi] = em.inline(pieces["embed"], [tok, value[di, hi, 0, "wte"],
                                               value[di, hi, 0, "wpe"]], dv)[0]
      else:
        acts[hi] = inbox.pop((di, hi, pi, k))
    for layer in range(pi * per_stage, (pi + 1) * per_stage):
      def arg(hi, key, layer=layer):
        return value[di, hi, pi, f"{key}{layer}"]

      for piece, keys, bias in (
          ("attention", ("ln1_scale", "ln1_bias", "wq", "bq", "wk", "bk", "wv", "bv",
                         "wo"), "bo"),
          ("mlp", ("ln2_scale", "ln2_bias", "w_fc", "b_fc", "w_proj"), "b_proj")):
        partial = [em.inline(pieces[piece], [acts[hi]] + [arg(hi, key) for key in keys],
                             dev(di, hi, pi))[0] for hi in range(h)]
        summed = em.allreduce(partial)
        acts = {hi: em.inline(pieces["residual"], [acts[hi], summed[hi], arg(hi, bias)],
                              dev(di, hi, pi))[0] for hi in range(h)}
    if pi < p - 1:
      for hi in range(h):
        inbox[di, hi, pi + 1, k] = em.send(acts[hi], dev(di, hi, pi + 1))
    else:
      dv = dev(di, 0, pi)
      outputs[di, k] = em.inline(pieces["logits"], [
          acts[0], value[di, 0, pi, "lnf_scale"], value[di, 0, pi, "lnf_bias"],
          value[di, 0, pi, "wte"]], dv)[0]

  orders = [[("F", k) for k in range(m)] for _ in range(p)]
  for pi, (_, k) in _pipeline.interleave_stages(orders):
    em.label = f"F{k}"
    for di in range(d):
      forward(di, pi, k)
  return em.finish([outputs[di, k] for di in range(d) for k in range(m)])
