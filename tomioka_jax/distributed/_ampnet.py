"""AMPNet: asynchronous model-parallel training of dynamic networks.

Gaunt, Johnson, Riechert, Tarlow, Tomioka, Vytiniotis, Webster (2017), "AMPNet: Asynchronous
Model-Parallel Training for Dynamic Neural Networks", arXiv:1705.09786.

The paper trains networks whose control flow depends on the instance (lists, trees, graphs),
where minibatching is impractical, by *model* parallelism taken to the extreme: every node of
the network lives on its own worker, and training is a stream of messages between workers.
This module provides that runtime on JAX devices, a synchronous reference trainer, a GPipe
fill-and-drain schedule on the same workers, and the paper's list-reduction RNN.

**Messages and keys.** A program is a list of nodes (:class:`AMPNode`), each owning its
parameters and placed on its own device (``jax.devices()[n]``), served by one worker thread
with an inbox. A forward message carries a payload (an activation) and a *key*: the instance
id and a loop counter, ``(instance, step)``. A node applies its payload transform
``y = f_n(theta_n, x, side)`` (``side``: an auxiliary input the node reads from the instance at
that key, such as the list element of the current step) and its *routing* decision
``route(instance, step) -> (node, step)`` sends ``y`` to the next node: a linear pipeline
routes ``n -> n + 1``; a loop routes a node back to itself with ``step + 1`` until a
condition on the instance says stop (the paper's Cond / Phi / Isu control nodes, here one
host-side function per node). A *terminal* node's output is the instance's loss; it
starts the backward message with cotangent 1. Each node keeps the residuals of every key it has
forwarded and, when the backward message ``dL/dy`` for that key arrives, computes
``(dL/dtheta_n, dL/dx) = vjp(f_n)(dL/dy)`` *at the parameters it used in the forward pass*
(recomputed from the stored input: rematerialisation), and sends ``dL/dx`` back along the
path the forward message came by. Many instances, of different lengths, are in flight at once.

**max_active_keys (mak).** The controller admits a new instance only while fewer than
``max_active_keys`` are in flight (an instance leaves when its backward message has left
the entry node). mak sets the pipelining depth, and with it the staleness: the forward pass
of a key may use parameters that are updated before its gradient arrives. In a linear
pipeline with first-in-first-out workers and ``min_update_frequency = 1``, a gradient is
applied at most ``mak - 1`` updates after the version it was computed with.

**min_update_frequency (muf).** Each node sums the gradient of an instance over its visits (a
loop node is visited once per step), and after ``muf`` instances' gradients applies its own
optax update with their mean: ``theta_n <- theta_n + optimizer(mean_k g_k)``. There is no
global barrier: nodes update at different times, each on its own count. With
``mak = 1, muf = 1`` one instance is in flight and every node updates after every instance:
synchronous SGD, which :meth:`AMPRuntime.train_synchronous` computes without threads and
which the asynchronous runtime reproduces bitwise.

**GPipe.** :meth:`AMPRuntime.gpipe_step` runs the synchronous pipeline schedule on the same
workers: m microbatches forward through p stages, then backward in reverse order, then one
update per stage; its idle fraction (:func:`amp_idle_fraction` of the recorded busy intervals)
is compared with the pipeline bubble ``(p - 1) / (m + p - 1)`` (:func:`gpipe_bubble`).

**List reduction (reconstructed).** The paper's synthetic list-reduction task could not be
retrieved here; :func:`list_reduction_data` is our reconstruction: an instance is an
operation token (max, min, or sum mod 10) and a list of 1..L digits, the label is the
operation applied to the list. :func:`list_reduction_program` is a gated RNN over it: an
embedding node for the operation, a cell node that the message visits once per list element
(the loop), and a classifier node whose output is the cross-entropy.

Workers are Python threads; jitted kernels release the GIL while they run, so kernels on
different devices overlap, but the Python between them does not. Each worker waits on its
inbox with a timeout, and an exception in any worker stops the run and is raised to the caller
(``RuntimeError`` from the worker's exception; ``TimeoutError`` when nothing happens for
``timeout_s`` seconds), so a failing run never hangs.

Example:
  >>> import jax, optax
  >>> from tomioka_jax import distributed
  >>> program = distributed.amp_pipeline_program(
  ...     [(lambda p, x: x * p, jax.numpy.ones(2)), (lambda p, x: x + p, jax.numpy.zeros(2))],
  ...     lambda y, t: jax.numpy.sum((y - t) ** 2))
  >>> data = [{"x": jax.numpy.ones(2), "y": jax.numpy.full(2, 3.0)}] * 4
  >>> runtime = distributed.AMPRuntime(program, optax.sgd(0.1))
  >>> trace = runtime.train(data, max_active_keys=2, min_update_frequency=1)
  >>> len(trace.losses), [len(u) for u in trace.updates]
  (4, [4, 4])
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from tomioka_jax import core

Route = Callable[[Any, int], "tuple[int, int] | None"]

_POLL_S = 0.02  # how often a waiting thread looks at the stop flag


class AMPNode(NamedTuple):
  """One node of an AMPNet program: a parameterised payload transform and its routing.

  Attributes:
    apply: ``apply(params, x, side) -> y``, a pure JAX function (jitted once by the runtime;
      fixed shapes). A terminal node returns the instance's scalar loss.
    params: the node's parameters (a pytree of float arrays).
    route: ``route(instance, step) -> (next_node, next_step)``, evaluated on the host after
      the forward pass of key ``(instance, step)``; ``None`` makes the node terminal.
    side: ``side(instance, step) -> array`` or None: an auxiliary, non-differentiated input
      read from the instance at that key (a list element, a label).
    name: for traces and error messages.
  """

  apply: Callable[[Any, jax.Array, Any], jax.Array]
  params: Any
  route: Route | None = None
  side: Callable[[Any, int], Any] | None = None
  name: str = ""


class AMPProgram(NamedTuple):
  """Nodes, the entry payload of an instance, and a batched predictor for evaluation.

  Attributes:
    nodes: the nodes; messages enter at ``nodes[0]`` with step 0 (no node may route back to
      node 0).
    inputs: ``inputs(instance) -> array``, the payload of the first forward message.
    predict: ``predict(params_list, batch) -> outputs`` or None, a pure function of all nodes'
      parameters for evaluation (not used in training).
  """

  nodes: tuple[AMPNode, ...]
  inputs: Callable[[Any], Any]
  predict: Callable[..., Any] | None = None


class AMPUpdate(NamedTuple):
  """One optax update of one node.

  Attributes:
    version: the node's parameter version that the update replaced (0 for the first update).
    instances: the instances whose gradients were averaged, in arrival order.
    forward_versions: the parameter version each of those gradients was computed with (the
      version of the instance's first forward visit); ``version - forward_versions`` is the
      staleness.
    time: ``time.perf_counter()`` when the update was applied.
  """

  version: int
  instances: tuple[int, ...]
  forward_versions: tuple[int, ...]
  time: float


class AMPTrace(NamedTuple):
  """What a run recorded.

  Attributes:
    busy: per node, its busy intervals ``(start, end, kind, instance, step)`` with kind
      ``"F"`` (forward), ``"B"`` (backward; a terminal node's forward-and-backward) or ``"U"``
      (update), in ``time.perf_counter()`` seconds.
    updates: per node, its :class:`AMPUpdate` records in order.
    losses: instance index -> its loss (at the parameters its forward pass saw).
    start, end: wall-clock bounds of the run.
  """

  busy: tuple[tuple[tuple[float, float, str, int, int], ...], ...]
  updates: tuple[tuple[AMPUpdate, ...], ...]
  losses: dict[int, float]
  start: float
  end: float

  @property
  def wall_s(self) -> float:
    return self.end - self.start


def _check_int(name: str, value: Any, low: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
    raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
  return int(value)


def _as_stage(stage: Any, index: int) -> tuple[Callable[[Any, jax.Array], jax.Array], Any]:
  """An NNX module or a ``(fn, params)`` pair -> ``(apply(params, x), params)``."""
  if isinstance(stage, nnx.Module):
    graphdef, params = nnx.split(stage)
    return (lambda p, x: nnx.merge(graphdef, p)(x)), params
  if isinstance(stage, (tuple, list)) and len(stage) == 2 and callable(stage[0]):
    return stage[0], stage[1]
  raise ValueError(f"stages[{index}] must be an nnx.Module or a (fn, params) pair with "
                   f"fn(params, x) -> y, got {type(stage).__name__}")


def amp_pipeline_program(stages: Sequence[Any],
                         loss: Callable[[jax.Array, Any], jax.Array], *,
                         inputs: Callable[[Any], Any] = lambda inst: inst["x"],
                         labels: Callable[[Any], Any] = lambda inst: inst["y"]) -> AMPProgram:
  """A linear pipeline: stage ``n`` routes to ``n + 1``; the last stage adds the loss.

  Args:
    stages: each an NNX module (split into graph and parameters) or a pair
      ``(fn, params)`` with ``fn(params, x) -> y``.
    loss: ``loss(output_of_last_stage, label) -> scalar``.
    inputs: the entry payload of an instance (default ``instance["x"]``).
    labels: the label the last stage reads as its side input (default ``instance["y"]``).

  Returns:
    An :class:`AMPProgram` whose ``predict(params_list, x)`` composes the stages (no loss).
  """
  if len(stages) < 1:
    raise ValueError(f"stages must hold at least one stage, got {len(stages)}")
  fns, params = zip(*(_as_stage(s, i) for i, s in enumerate(stages)))
  last = len(stages) - 1
  nodes = []
  for n, (fn, p) in enumerate(zip(fns, params)):
    if n < last:
      nodes.append(AMPNode(apply=lambda p, x, side, fn=fn: fn(p, x), params=p,
                           route=lambda inst, step, n=n: (n + 1, 0), name=f"stage{n}"))
    else:
      nodes.append(AMPNode(apply=lambda p, x, y, fn=fn: loss(fn(p, x), y), params=p,
                           side=lambda inst, step: labels(inst), name=f"stage{n}+loss"))

  def predict(params_list: Sequence[Any], x: jax.Array) -> jax.Array:
    for fn, p in zip(fns, params_list):
      x = fn(p, x)
    return x

  return AMPProgram(nodes=tuple(nodes), inputs=inputs, predict=predict)


def amp_minibatches(x: Any, y: Any, batch_size: int) -> list[dict[str, np.ndarray]]:
  """Instances of ``batch_size`` examples each, ``{"x", "y"}``, in order; the remainder that
  does not fill a batch is dropped (the runtime jits each node once, for one shape)."""
  batch_size = _check_int("batch_size", batch_size, 1)
  x, y = np.asarray(x), np.asarray(y)
  if len(x) != len(y) or len(x) < batch_size:
    raise ValueError(f"x and y must have the same length >= batch_size={batch_size}, got "
                     f"{len(x)} and {len(y)}")
  return [{"x": x[i:i + batch_size], "y": y[i:i + batch_size]}
          for i in range(0, len(x) - batch_size + 1, batch_size)]


def gpipe_bubble(num_stages: int, num_microbatches: int) -> float:
  """The idle fraction of a fill-and-drain pipeline, ``(p - 1) / (m + p - 1)``.

  With uniform per-stage forward and backward times, p stages and m microbatches take
  ``(m + p - 1)`` forward slots and as many backward ones, of which each stage is busy in m.
  """
  p = _check_int("num_stages", num_stages, 1)
  m = _check_int("num_microbatches", num_microbatches, 1)
  return (p - 1) / (m + p - 1)


def amp_idle_fraction(trace: AMPTrace, kinds: str = "FB") -> float:
  """``1 - busy / (nodes x span)``: the fraction of worker time spent idle.

  Only intervals whose kind is in ``kinds`` count (default forward and backward, so the
  final updates of a GPipe step are not part of the bubble); the span runs from the first
  such interval's start to the last one's end, over all nodes.
  """
  intervals = [[iv for iv in node if iv[2] in kinds] for node in trace.busy]
  flat = [iv for node in intervals for iv in node]
  if not flat:
    raise ValueError(f"trace has no busy intervals of kinds {kinds!r}")
  span = max(iv[1] for iv in flat) - min(iv[0] for iv in flat)
  busy = sum(iv[1] - iv[0] for iv in flat)
  return 1.0 - busy / (len(trace.busy) * span)


def amp_staleness(trace: AMPTrace) -> np.ndarray:
  """Every applied gradient's staleness, ``update.version - forward_version``, all nodes."""
  return np.asarray([u.version - v for node in trace.updates for u in node
                     for v in u.forward_versions], dtype=int)


class _Kernels:
  """A node's jitted kernels: forward, vjp, terminal loss-and-grad, gradient sum, update."""

  def __init__(self, node: AMPNode, optimizer: optax.GradientTransformation):
    apply = node.apply
    self.forward = jax.jit(apply)

    def backward(params, x, side, gy):
      _, vjp = jax.vjp(lambda p, x: apply(p, x, side), params, x)
      return vjp(gy)

    self.backward = jax.jit(backward)

    def loss_and_grad(params, x, side):
      loss, (gp, gx) = jax.value_and_grad(lambda p, x: apply(p, x, side), (0, 1))(params, x)
      return loss, gp, gx

    self.loss_and_grad = jax.jit(loss_and_grad)
    self.add = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b))

    def update(params, opt_state, grad_sum, count):
      grads = jax.tree.map(lambda g: g / count.astype(g.dtype), grad_sum)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state

    self.update = jax.jit(update)


_KERNEL_CACHE: dict[tuple[Any, Any], _Kernels] = {}


def _kernels_for(node: AMPNode, optimizer: optax.GradientTransformation) -> _Kernels:
  """One set of jitted kernels per (payload transform, optimizer): runtimes built from the
  same program and optimizer share their compilations."""
  key = (node.apply, optimizer)
  if key not in _KERNEL_CACHE:
    _KERNEL_CACHE[key] = _Kernels(node, optimizer)
  return _KERNEL_CACHE[key]


class _NodeState:
  """The mutable training state of one node (touched only by its worker during a run)."""

  def __init__(self, params: Any, opt_state: Any, device: Any):
    self.device = device
    self.params = params
    self.opt_state = opt_state
    self.version = 0
    self.grad_sum = None  # sum of completed instances' gradients since the last update
    self.grad_keys: list[int] = []
    self.grad_versions: list[int] = []


class _RunFailed(Exception):
  pass


class AMPRuntime:
  """Workers for an :class:`AMPProgram`: node ``n`` on ``devices[n]``, one thread each.

  Args:
    program: the nodes and the entry payload.
    optimizer: an optax transformation; each node keeps its own state of it.
    devices: the devices to place the nodes on (default ``jax.devices()``); at least one per
      node.
    timeout_s: a run raises ``TimeoutError`` when no worker reports anything for this long.

  Attributes:
    params: the nodes' current parameters (list, node order).
  """

  def __init__(self, program: AMPProgram, optimizer: optax.GradientTransformation, *,
               devices: Sequence[Any] | None = None, timeout_s: float = 60.0):
    nodes = tuple(program.nodes)
    if not nodes:
      raise ValueError("program.nodes must hold at least one node, got none")
    devices = list(jax.devices() if devices is None else devices)
    if len(nodes) > len(devices):
      raise ValueError(f"program has {len(nodes)} nodes but only {len(devices)} devices are "
                       "given; each node needs its own device (set jax_num_cpu_devices or "
                       "XLA_FLAGS=--xla_force_host_platform_device_count for simulated CPUs)")
    if not timeout_s > 0:
      raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    self.program = program
    self.nodes = nodes
    self.timeout_s = float(timeout_s)
    self._kernels = [_kernels_for(node, optimizer) for node in nodes]
    self._state = []
    for node, dev in zip(nodes, devices):
      params = jax.device_put(node.params, dev)
      self._state.append(_NodeState(params, jax.device_put(optimizer.init(params), dev), dev))

  @property
  def params(self) -> list[Any]:
    return [s.params for s in self._state]

  def params_on(self, device: Any = None) -> list[Any]:
    """All nodes' parameters copied onto one device (default ``jax.devices()[0]``), for
    ``program.predict`` under one ``jit``."""
    return jax.device_put(self.params, jax.devices()[0] if device is None else device)

  # ---- helpers shared by every schedule --------------------------------------------------

  def _route(self, n: int, instance: Any, step: int) -> tuple[int, int] | None:
    node = self.nodes[n]
    if node.route is None:
      return None
    nxt = node.route(instance, step)
    if (not isinstance(nxt, tuple) or len(nxt) != 2 or not 1 <= int(nxt[0]) < len(self.nodes)):
      raise ValueError(f"node {n} ({node.name}) routed key step={step} to {nxt!r}; a route "
                       f"must return (node, step) with 1 <= node < {len(self.nodes)}")
    return int(nxt[0]), int(nxt[1])

  def _side(self, n: int, instance: Any, step: int) -> Any:
    side = self.nodes[n].side
    return None if side is None else jax.device_put(side(instance, step), self._state[n].device)

  def _complete_instance(self, n: int, key: int, grad: Any, forward_version: int,
                         min_update_frequency: int, updates: list, busy: list) -> None:
    """Adds one instance's gradient at node n; updates after ``min_update_frequency``."""
    s, k = self._state[n], self._kernels[n]
    s.grad_sum = grad if s.grad_sum is None else k.add(s.grad_sum, grad)
    s.grad_keys.append(key)
    s.grad_versions.append(forward_version)
    if len(s.grad_keys) == min_update_frequency:
      t0 = time.perf_counter()
      s.params, s.opt_state = k.update(s.params, s.opt_state, s.grad_sum,
                                       jnp.asarray(min_update_frequency, jnp.int32))
      jax.block_until_ready(s.params)
      t1 = time.perf_counter()
      busy.append((t0, t1, "U", key, -1))
      updates.append(AMPUpdate(s.version, tuple(s.grad_keys), tuple(s.grad_versions), t1))
      s.version += 1
      s.grad_sum, s.grad_keys, s.grad_versions = None, [], []

  def _check_instances(self, instances: Sequence[Any], order: Sequence[int] | None
                       ) -> list[int]:
    if len(instances) < 1:
      raise ValueError("instances must hold at least one instance, got none")
    if order is None:
      return list(range(len(instances)))
    order = [int(i) for i in order]
    if sorted(order) != list(range(len(instances))):
      raise ValueError(f"order must be a permutation of range({len(instances)}), got "
                       f"{len(order)} indices")
    return order

  def warm_up(self, instance: Any) -> None:
    """Compiles every kernel on the path of ``instance`` (one forward, backward and update
    per node), then restores the parameters and optimizer states: nothing is learned."""
    saved = [(s.params, s.opt_state, s.version, s.grad_sum, list(s.grad_keys),
              list(s.grad_versions)) for s in self._state]
    self.train_synchronous([instance])
    for s, (params, opt_state, version, grad_sum, keys, versions) in zip(self._state, saved):
      s.params, s.opt_state, s.version = params, opt_state, version
      s.grad_sum, s.grad_keys, s.grad_versions = grad_sum, keys, versions

  # ---- the synchronous reference -----------------------------------------------------------

  def train_synchronous(self, instances: Sequence[Any], *,
                        order: Sequence[int] | None = None) -> AMPTrace:
    """One epoch of synchronous training, in this thread: for each instance in ``order``,
    its forward pass along the routes, its backward pass in reverse, then every node it
    visited updates with that instance's gradient (``mak = 1, muf = 1``).

    The kernels, devices and order of operations are the asynchronous runtime's, so
    ``train(..., max_active_keys=1, min_update_frequency=1)`` gives the same parameters bitwise.
    """
    order = self._check_instances(instances, order)
    p = len(self.nodes)
    busy: list[list] = [[] for _ in range(p)]
    updates: list[list] = [[] for _ in range(p)]
    losses = {}
    start = time.perf_counter()
    for i in order:
      inst = instances[i]
      tape = []  # (node, step, params, x, side)
      n, step, x = 0, 0, self.program.inputs(inst)
      while True:
        s, k = self._state[n], self._kernels[n]
        t0 = time.perf_counter()
        x = jax.device_put(x, s.device)
        side = self._side(n, inst, step)
        tape.append((n, step, s.params, x, side))
        nxt = self._route(n, inst, step)
        if nxt is None:
          loss, gp, gx = k.loss_and_grad(s.params, x, side)
          jax.block_until_ready(gx)
          busy[n].append((t0, time.perf_counter(), "B", i, step))
          losses[i] = float(loss)
          break
        x = k.forward(s.params, x, side)
        jax.block_until_ready(x)
        busy[n].append((t0, time.perf_counter(), "F", i, step))
        n, step = nxt
      tape.pop()
      grads = {n: gp}
      while tape:
        n, step, params, x, side = tape.pop()
        t0 = time.perf_counter()
        gy = jax.device_put(gx, self._state[n].device)
        gp, gx = self._kernels[n].backward(params, x, side, gy)
        jax.block_until_ready(gx)
        busy[n].append((t0, time.perf_counter(), "B", i, step))
        grads[n] = gp if n not in grads else self._kernels[n].add(grads[n], gp)
      for n in sorted(grads):
        self._complete_instance(n, i, grads[n], self._state[n].version, 1, updates[n], busy[n])
    return AMPTrace(tuple(map(tuple, busy)), tuple(map(tuple, updates)), losses, start,
                    time.perf_counter())

  # ---- the asynchronous runtime ------------------------------------------------------------

  def train(self, instances: Sequence[Any], *, max_active_keys: int,
            min_update_frequency: int, order: Sequence[int] | None = None) -> AMPTrace:
    """One epoch of asynchronous model-parallel training (every instance once).

    Args:
      instances: the training instances (any Python objects the program's ``inputs``,
        ``route`` and ``side`` functions read).
      max_active_keys: the most instances in flight at once (>= 1).
      min_update_frequency: each node updates after this many instances' gradients (>= 1);
        a partial count carries over to the next call (no barrier at the epoch's end).
      order: the order in which instances are admitted (default: as given).

    Returns:
      The :class:`AMPTrace` of the epoch.

    Raises:
      RuntimeError: a worker failed (its exception is the cause).
      TimeoutError: no worker reported anything for ``timeout_s`` seconds.
    """
    mak = _check_int("max_active_keys", max_active_keys, 1)
    muf = _check_int("min_update_frequency", min_update_frequency, 1)
    order = self._check_instances(instances, order)
    p = len(self.nodes)
    inboxes = [queue.Queue() for _ in range(p)]
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    busy: list[list] = [[] for _ in range(p)]
    updates: list[list] = [[] for _ in range(p)]

    def worker(n: int) -> None:
      s, k = self._state[n], self._kernels[n]
      residuals = {}  # (instance, step) -> (params, x, side, sender)
      first_version = {}  # instance -> version of its first forward visit here
      open_visits = {}  # instance -> forward visits whose backward has not arrived
      instance_grad = {}  # instance -> gradient summed over its visits

      def backward_done(i: int, gp: Any, gx: Any, sender: tuple[int, int] | None) -> None:
        instance_grad[i] = gp if i not in instance_grad else k.add(instance_grad[i], gp)
        open_visits[i] -= 1
        if open_visits[i] == 0:
          del open_visits[i]
          self._complete_instance(n, i, instance_grad.pop(i), first_version.pop(i), muf,
                                  updates[n], busy[n])
        if sender is None:
          events.put(("done", i, None))
        else:
          inboxes[sender[0]].put(("B", i, sender[1], gx))

      try:
        while not stop.is_set():
          try:
            msg = inboxes[n].get(timeout=_POLL_S)
          except queue.Empty:
            continue
          if msg is None:
            return
          kind, i, step, payload, *rest = msg
          inst = instances[i]
          t0 = time.perf_counter()
          if kind == "F":
            sender = rest[0]
            x = jax.device_put(payload, s.device)
            side = self._side(n, inst, step)
            first_version.setdefault(i, s.version)
            open_visits[i] = open_visits.get(i, 0) + 1
            nxt = self._route(n, inst, step)
            if nxt is None:
              loss, gp, gx = k.loss_and_grad(s.params, x, side)
              jax.block_until_ready(gx)
              busy[n].append((t0, time.perf_counter(), "B", i, step))
              events.put(("loss", i, float(loss)))
              backward_done(i, gp, gx, sender)
            else:
              residuals[(i, step)] = (s.params, x, side, sender)
              y = k.forward(s.params, x, side)
              jax.block_until_ready(y)
              busy[n].append((t0, time.perf_counter(), "F", i, step))
              inboxes[nxt[0]].put(("F", i, nxt[1], y, (n, step)))
          else:
            params, x, side, sender = residuals.pop((i, step))
            gy = jax.device_put(payload, s.device)
            gp, gx = k.backward(params, x, side, gy)
            jax.block_until_ready(gx)
            busy[n].append((t0, time.perf_counter(), "B", i, step))
            backward_done(i, gp, gx, sender)
      except BaseException as exc:  # pylint: disable=broad-except  (reported to the caller)
        events.put(("error", n, exc))

    losses, start = self._run(worker, order, lambda i: inboxes[0].put(
        ("F", i, 0, self.program.inputs(instances[i]), None)), mak, events, stop, inboxes)
    return AMPTrace(tuple(map(tuple, busy)), tuple(map(tuple, updates)), losses, start,
                    time.perf_counter())

  def _run(self, worker: Callable[[int], None], order: list[int],
           admit: Callable[[int], None], mak: int, events: queue.Queue,
           stop: threading.Event, inboxes: list[queue.Queue]) -> tuple[dict, float]:
    """Starts the workers, admits instances (at most ``mak`` in flight) and waits for each
    instance's ``done``; any worker error or a silence of ``timeout_s`` ends the run."""
    threads = [threading.Thread(target=worker, args=(n,), daemon=True,
                                name=f"amp-worker-{n}") for n in range(len(self.nodes))]
    start = time.perf_counter()
    for t in threads:
      t.start()
    losses, pending, in_flight, completed = {}, list(order), 0, 0
    try:
      while completed < len(order):
        while pending and in_flight < mak:
          admit(pending.pop(0))
          in_flight += 1
        try:
          event, who, value = events.get(timeout=self.timeout_s)
        except queue.Empty:
          raise TimeoutError(
              f"no AMPNet worker reported anything for timeout_s={self.timeout_s} s "
              f"({completed} of {len(order)} instances done)") from None
        if event == "error":
          raise RuntimeError(f"AMPNet worker {who} ({self.nodes[who].name}) failed: "
                             f"{type(value).__name__}: {value}") from value
        if event == "loss":
          losses[who] = value
        elif event == "done":
          in_flight -= 1
          completed += 1
    finally:
      stop.set()
      for box in inboxes:
        box.put(None)
      for t in threads:
        t.join(timeout=self.timeout_s)
    return losses, start

  # ---- GPipe ---------------------------------------------------------------------------------

  def gpipe_step(self, microbatches: Sequence[Any]) -> AMPTrace:
    """One synchronous GPipe step on the workers: fill and drain, then one update per stage.

    Stage ``s`` runs the forward passes of microbatches ``0..m-1`` in order, then their
    backward passes in the order ``m-1..0`` (the last stage's backward needs no message: its
    cotangent is 1), then updates with the mean of the m gradients: one gradient step on the
    mean loss. The program must be a linear pipeline (every node routes to the next).
    """
    order = self._check_instances(microbatches, None)
    m, p = len(order), len(self.nodes)
    for n in range(p - 1):
      for j in order:
        if self._route(n, microbatches[j], 0) != (n + 1, 0):
          raise ValueError(f"gpipe_step needs a linear pipeline; node {n} "
                           f"({self.nodes[n].name}) does not route step 0 to node {n + 1}")
    if self.nodes[-1].route is not None:
      raise ValueError("gpipe_step needs a linear pipeline whose last node is terminal")
    for s in self._state:
      if s.grad_keys:
        raise ValueError(f"gpipe_step needs no pending gradients, but a node holds "
                         f"{len(s.grad_keys)} from an earlier train() call")
    inboxes = [queue.Queue() for _ in range(p)]
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    busy: list[list] = [[] for _ in range(p)]
    updates: list[list] = [[] for _ in range(p)]

    def worker(n: int) -> None:
      s, k = self._state[n], self._kernels[n]
      waiting = {}  # (kind, microbatch) -> payload, for messages that came early

      def receive(kind: str, j: int) -> Any:
        while (kind, j) not in waiting:
          if stop.is_set():
            raise _RunFailed
          try:
            msg = inboxes[n].get(timeout=_POLL_S)
          except queue.Empty:
            continue
          if msg is None:
            raise _RunFailed
          waiting[(msg[0], msg[1])] = msg[3]
        return waiting.pop((kind, j))

      try:
        residuals = {}
        for j in range(m):
          payload = receive("F", j)
          t0 = time.perf_counter()
          x = jax.device_put(payload, s.device)
          side = self._side(n, microbatches[j], 0)
          residuals[j] = (x, side)
          y = k.forward(s.params, x, side)
          jax.block_until_ready(y)
          busy[n].append((t0, time.perf_counter(), "F", j, 0))
          if n < p - 1:
            inboxes[n + 1].put(("F", j, 0, y))
          else:
            events.put(("loss", j, float(y)))
        grad_sum = None
        for j in reversed(range(m)):
          x, side = residuals.pop(j)
          if n == p - 1:
            t0 = time.perf_counter()
            _, gp, gx = k.loss_and_grad(s.params, x, side)
          else:
            payload = receive("B", j)
            t0 = time.perf_counter()
            gp, gx = k.backward(s.params, x, side, jax.device_put(payload, s.device))
          jax.block_until_ready(gx)
          busy[n].append((t0, time.perf_counter(), "B", j, 0))
          grad_sum = gp if grad_sum is None else k.add(grad_sum, gp)
          if n > 0:
            inboxes[n - 1].put(("B", j, 0, gx))
          else:
            events.put(("done", j, None))
        t0 = time.perf_counter()
        s.params, s.opt_state = k.update(s.params, s.opt_state, grad_sum,
                                         jnp.asarray(m, jnp.int32))
        jax.block_until_ready(s.params)
        busy[n].append((t0, time.perf_counter(), "U", -1, -1))
        updates[n].append(AMPUpdate(s.version, tuple(reversed(range(m))), (s.version,) * m,
                                    time.perf_counter()))
        s.version += 1
      except _RunFailed:
        return
      except BaseException as exc:  # pylint: disable=broad-except  (reported to the caller)
        events.put(("error", n, exc))

    # All m microbatches are admitted at once (mak = m): the schedule orders them.
    losses, start = self._run(worker, order, lambda j: inboxes[0].put(
        ("F", j, 0, self.program.inputs(microbatches[j]))), m, events, stop, inboxes)
    # The updates run after the last "done" event: wait for every stage's update.
    deadline = time.perf_counter() + self.timeout_s
    while any(not u for u in updates) and time.perf_counter() < deadline:
      time.sleep(_POLL_S)
    if any(not u for u in updates):
      raise TimeoutError(f"a GPipe stage did not update within timeout_s={self.timeout_s} s")
    return AMPTrace(tuple(map(tuple, busy)), tuple(map(tuple, updates)), losses, start,
                    time.perf_counter())


# ---- the list-reduction task -----------------------------------------------------------------

LIST_REDUCTION_OPS = ("max", "min", "sum_mod_10")
_NUM_DIGITS = 10


class ListInstance(NamedTuple):
  """One list-reduction instance: an operation index, a list of digits, the answer."""

  op: int
  digits: np.ndarray
  label: int


def list_reduction_data(key: jax.Array, num_instances: int, *, max_length: int = 8,
                        min_length: int = 1) -> list[ListInstance]:
  """Random list-reduction instances (our reconstruction of the paper's synthetic task).

  An instance draws an operation uniformly from :data:`LIST_REDUCTION_OPS` (max, min, sum mod
  10), a length uniformly in ``[min_length, max_length]`` and that many digits uniformly in
  0..9; its label is the operation applied to the digits (a class in 0..9).
  """
  num_instances = _check_int("num_instances", num_instances, 1)
  min_length = _check_int("min_length", min_length, 1)
  max_length = _check_int("max_length", max_length, min_length)
  k_op, k_len, k_dig = jax.random.split(key, 3)
  ops = np.asarray(jax.random.randint(k_op, (num_instances,), 0, len(LIST_REDUCTION_OPS)))
  lengths = np.asarray(jax.random.randint(k_len, (num_instances,), min_length, max_length + 1))
  digits = np.asarray(jax.random.randint(k_dig, (num_instances, max_length), 0, _NUM_DIGITS))
  out = []
  for op, length, row in zip(ops, lengths, digits):
    d = row[:length].astype(np.int32)
    label = (int(d.max()), int(d.min()), int(d.sum() % 10))[int(op)]
    out.append(ListInstance(int(op), d, label))
  return out


def _affine(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
  """``x @ w + b`` for one example or a batch (the bias broadcast explicitly)."""
  y = x @ w
  return y + jnp.broadcast_to(b, y.shape)


def _embed(params: dict, op_onehot: jax.Array) -> jax.Array:
  return jnp.tanh(_affine(op_onehot, params["w"], params["b"]))


def _cell(params: dict, h: jax.Array, digit_onehot: jax.Array) -> jax.Array:
  """A gated cell: ``z = sigmoid(W_z [x, h] + b_z)``, ``h' = (1 - z) h + z tanh(W_c [x, h] +
  b_c)``."""
  xh = jnp.concatenate([digit_onehot, h], axis=-1)
  z = jax.nn.sigmoid(_affine(xh, params["wz"], params["bz"]))
  c = jnp.tanh(_affine(xh, params["wc"], params["bc"]))
  return (1 - z) * h + z * c


def _head(params: dict, h: jax.Array) -> jax.Array:
  return _affine(h, params["w"], params["b"])


def list_reduction_loss(logits: jax.Array, label: jax.Array) -> jax.Array:
  """Cross-entropy of one instance's logits against its integer label."""
  return -jnp.take(jax.nn.log_softmax(logits), label)


def list_reduction_program(key: jax.Array, hidden: int = 64) -> AMPProgram:
  """The list-reduction RNN as an AMPNet program with a loop.

  Three nodes: ``embed`` (the operation token -> the initial state), ``cell`` (one gated step
  per list element, read as its side input; it routes the message back to itself with
  ``step + 1`` while elements remain, else on to the classifier: the loop's Cond) and
  ``head`` (linear classifier + cross-entropy against the label, terminal). ``predict(params,
  (ops, digits, lengths))`` gives batched logits for padded lists (a masked ``lax.scan``).
  """
  hidden = _check_int("hidden", hidden, 1)
  k = jax.random.split(key, 4)
  nops = len(LIST_REDUCTION_OPS)
  width = _NUM_DIGITS + hidden
  embed = {"w": core.flat_normal(k[0], (nops, hidden)), "b": jnp.zeros(hidden)}
  cell = {"wz": core.flat_normal(k[1], (width, hidden)) / np.sqrt(width),
          "bz": jnp.zeros(hidden),
          "wc": core.flat_normal(k[2], (width, hidden)) / np.sqrt(width),
          "bc": jnp.zeros(hidden)}
  head = {"w": core.flat_normal(k[3], (hidden, _NUM_DIGITS)) / np.sqrt(hidden),
          "b": jnp.zeros(_NUM_DIGITS)}
  eye_ops, eye_digits = np.eye(nops, dtype=np.float32), np.eye(_NUM_DIGITS, dtype=np.float32)

  def cell_route(inst: ListInstance, step: int) -> tuple[int, int]:
    return (1, step + 1) if step + 1 < len(inst.digits) else (2, 0)

  nodes = (
      AMPNode(apply=lambda p, x, side: _embed(p, x), params=embed,
              route=lambda inst, step: (1, 0), name="embed"),
      AMPNode(apply=_cell, params=cell, route=cell_route,
              side=lambda inst, step: eye_digits[inst.digits[step]], name="cell"),
      AMPNode(apply=lambda p, h, y: list_reduction_loss(_head(p, h), y), params=head,
              side=lambda inst, step: np.int32(inst.label), name="head"),
  )

  def predict(params_list: Sequence[Any], batch: tuple[Any, Any, Any]) -> jax.Array:
    ops, digits, lengths = (jnp.asarray(a) for a in batch)
    h = _embed(params_list[0], jax.nn.one_hot(ops, nops))

    def step(h, t):
      h_new = _cell(params_list[1], h, jax.nn.one_hot(digits[:, t], _NUM_DIGITS))
      return jnp.where((t < lengths)[:, None], h_new, h), None

    h, _ = jax.lax.scan(step, h, jnp.arange(digits.shape[1]))
    return _head(params_list[2], h)

  return AMPProgram(nodes=nodes, inputs=lambda inst: eye_ops[inst.op], predict=predict)


def list_reduction_batch(instances: Sequence[ListInstance]
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """``(ops, digits padded with 0, lengths, labels)`` arrays for ``predict``."""
  if not instances:
    raise ValueError("instances must hold at least one instance, got none")
  width = max(len(i.digits) for i in instances)
  digits = np.zeros((len(instances), width), np.int32)
  for r, inst in enumerate(instances):
    digits[r, :len(inst.digits)] = inst.digits
  return (np.asarray([i.op for i in instances], np.int32), digits,
          np.asarray([len(i.digits) for i in instances], np.int32),
          np.asarray([i.label for i in instances], np.int32))
