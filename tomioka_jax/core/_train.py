"""Train state, pure train/eval steps and the on-device scan trainer for Flax NNX models.

A model is split once, outside ``jit``, into a static ``GraphDef`` and two pytrees: its
parameters (``nnx.Param``) and the rest of its state (batch statistics, RNG counters, ...).
The pure step merges them back inside ``jit``, computes the loss and its gradient with respect
to the parameters only, applies an optax update, and returns a new :class:`TrainState`.

Two ways to run a step over several devices are provided, both from the same loss function:

* :func:`make_train_step` with a ``mesh``: ``jax.jit`` with ``NamedSharding``; the batch is
  sharded along the mesh's data axis, the state is replicated, and XLA inserts the gradient
  all-reduce. This is the default for data parallelism.
* :func:`make_shard_map_train_step`: per-device gradients inside ``jax.shard_map`` reduced by
  an explicit collective that takes an ``axis_name`` (``lax.pmean`` by default, a quantized
  all-reduce for QSGD), for methods whose communication is the point.

The same pure step also runs a whole training run on the device, as one compiled function
that ``vmap``-s over seeds and hyperparameters: :func:`make_scan_trainer` scans it over
shuffled minibatches of an in-memory data set, epoch after epoch; :func:`make_sampler_trainer`
scans it over batches that a sampler draws from each step's key (groups, tasks, synthetic data).

Optimizers that need more than the gradient (DDP-SGD reads the minibatch's inputs) get it
through one hook shared by every trainer: ``extra_args(batch) -> dict`` of keyword arguments
for ``optimizer.update`` (see :func:`make_train_step`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from tomioka_jax.core import _parallel as parallel

Batch = Any
Metrics = dict[str, jax.Array]
# loss_fn(model, batch, rng) -> (scalar loss, metrics dict). The model is a live NNX module
# merged inside the step; mutations of its non-parameter state (batch statistics) are kept.
LossFn = Callable[[nnx.Module, Batch, jax.Array], tuple[jax.Array, Metrics]]
# eval_fn(model, batch) -> metrics dict of per-batch *sums* (so that means over a dataset are
# exact when batches differ in size) -- see :func:`make_eval_step`.
EvalFn = Callable[[nnx.Module, Batch], Metrics]


class TrainState(NamedTuple):
  """Everything a training run carries from one step to the next.

  Attributes:
    step: number of updates applied so far (int32 scalar).
    params: the model's ``nnx.Param`` state.
    model_state: the model's other state (batch statistics, RNG counters); may be empty.
    opt_state: the optax optimizer state for ``params``.
    rng: a typed PRNG key, split once per step for the step's randomness.
  """

  step: jax.Array
  params: nnx.State
  model_state: nnx.State
  opt_state: optax.OptState
  rng: jax.Array


def create_train_state(model: nnx.Module, optimizer: optax.GradientTransformation,
                       rng: jax.Array) -> tuple[nnx.GraphDef, TrainState]:
  """Splits ``model`` into (graphdef, params, rest) and initializes the optimizer.

  Args:
    model: a Flax NNX module (its current values become the initial parameters).
    optimizer: an optax gradient transformation.
    rng: a PRNG key (typed or raw uint32) for the steps' randomness.

  Returns:
    ``(graphdef, state)``: the static structure to pass to the step makers, and the state.
  """
  if not isinstance(model, nnx.Module):
    raise TypeError(f"model must be a flax.nnx.Module, got {type(model).__name__}")
  graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
  if not jnp.issubdtype(jnp.asarray(rng).dtype, jax.dtypes.prng_key):
    rng = jax.random.wrap_key_data(jnp.asarray(rng, jnp.uint32))
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
                     opt_state=optimizer.init(params), rng=rng)
  return graphdef, state


def _check_batch(batch: Batch, num_shards: int) -> None:
  """Trace-time check that every leaf of ``batch`` has one common leading (batch) size."""
  leaves = jax.tree.leaves(batch)
  if not leaves:
    raise ValueError("batch must contain at least one array, got an empty pytree")
  sizes = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in leaves}
  if None in sizes or len(sizes) != 1:
    shapes = jax.tree.map(jnp.shape, batch)
    raise ValueError(
        f"batch must be a pytree of arrays sharing one leading batch dimension, got shapes "
        f"{shapes}")
  (size,) = sizes
  if size % num_shards:
    raise ValueError(
        f"batch has leading size {size}, which the data axis of {num_shards} devices does not "
        f"divide; allowed: a multiple of {num_shards}")


def _checked(jitted: Callable[..., Any], num_shards: int) -> Callable[..., Any]:
  """Wraps a jitted ``(state, batch)`` step with the batch check, run before dispatch.

  The check must precede the call: with a mesh, ``jit`` itself would reject an indivisible
  batch with a message about tiling factors instead of naming the argument.
  The jitted function stays reachable as ``.jitted`` (for ``lower``, cost analysis, ...).
  """

  @functools.wraps(jitted)
  def step(state, batch):
    _check_batch(batch, num_shards)
    return jitted(state, batch)

  step.jitted = jitted
  return step


def _loss_and_grads(graphdef: nnx.GraphDef, loss_fn: LossFn, state: TrainState, batch: Batch,
                    rng: jax.Array):
  """Loss, metrics, new non-parameter state and gradient with respect to the parameters."""

  def objective(params):
    # Rebuild the non-parameter variables inside this trace so that loss_fn may update them
    # (batch statistics); NNX refuses to mutate a variable created at an outer trace level.
    model_state = jax.tree.map(lambda x: x, state.model_state)
    model = nnx.merge(graphdef, params, model_state)
    loss, metrics = loss_fn(model, batch, rng)
    _, _, model_state = nnx.split(model, nnx.Param, ...)
    return loss, (metrics, model_state)

  (loss, (metrics, model_state)), grads = jax.value_and_grad(objective, has_aux=True)(
      state.params)
  return loss, metrics, model_state, grads


# extra_args(batch) -> keyword arguments for optimizer.update besides (grads, state, params).
ExtraArgsFn = Callable[[Batch], dict[str, Any]]


def _with_extra_args(optimizer: optax.GradientTransformation,
                     extra_args: ExtraArgsFn | None) -> optax.GradientTransformation:
  """The optimizer, made to accept (and ignore unknown) keyword arguments when a hook is given."""
  return optimizer if extra_args is None else optax.with_extra_args_support(optimizer)


def _make_step(graphdef: nnx.GraphDef, loss_fn: LossFn, optimizer: optax.GradientTransformation,
               extra_args: ExtraArgsFn | None) -> Callable[[TrainState, Batch],
                                                          tuple[TrainState, Metrics]]:
  """The pure (un-jitted) step every trainer runs: jitted, sharded or scanned."""
  optimizer = _with_extra_args(optimizer, extra_args)

  def step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    rng, step_rng = jax.random.split(state.rng)
    loss, metrics, model_state, grads = _loss_and_grads(graphdef, loss_fn, state, batch,
                                                         step_rng)
    extra = {} if extra_args is None else extra_args(batch)
    return (_apply(state, optimizer, grads, model_state, rng, extra), {"loss": loss, **metrics})

  return step


def _apply(state: TrainState, optimizer: optax.GradientTransformation, grads, model_state,
           rng: jax.Array, extra: dict[str, Any]) -> TrainState:
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params, **extra)
  params = optax.apply_updates(state.params, updates)
  return TrainState(step=state.step + 1, params=params, model_state=model_state,
                    opt_state=opt_state, rng=rng)


def make_train_step(graphdef: nnx.GraphDef, loss_fn: LossFn,
                    optimizer: optax.GradientTransformation, *, mesh: Mesh | None = None,
                    donate: bool = False, extra_args: ExtraArgsFn | None = None
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
  """Builds the pure, jit-compiled training step ``(state, batch) -> (state, metrics)``.

  ``metrics`` holds ``loss`` and whatever ``loss_fn`` returns, averaged over the global batch
  exactly as on one device: with a ``mesh`` the batch is sharded along its first axis and XLA
  reduces the gradient across devices, so the same code runs on 1 or N devices.

  **The extra-arguments hook.** ``optimizer.update(grads, opt_state, params, **extra)`` gets
  ``extra = extra_args(batch)``, computed from the (global) batch inside the step. It is how an
  optimizer that needs data besides the gradient receives it, for example DDP-SGD
  (:func:`tomioka_jax.optim.ddp_sgd`), which reads the minibatch's inputs:
  ``extra_args=lambda batch: {"inputs": batch["x"]}``. With a hook, the optimizer is wrapped
  with ``optax.with_extra_args_support``, so the transformations of a chain that do not know
  an argument ignore it. The same hook is taken by :func:`make_shard_map_train_step`,
  :func:`make_scan_trainer` and :func:`make_sampler_trainer`.

  Args:
    graphdef: from :func:`create_train_state`.
    loss_fn: ``loss_fn(model, batch, rng) -> (loss, metrics)``, a mean over the batch.
    optimizer: the optax transformation the state was created with.
    mesh: a 1-D data mesh (:func:`tomioka_jax.core.data_mesh`); ``None`` runs uncommitted
      on the default device.
    donate: donate the input state's buffers to the output (saves memory in long runs).
    extra_args: ``extra_args(batch) -> dict`` of keyword arguments for ``optimizer.update``
      (``None``: none).

  Returns:
    The jitted step.

  Example:
    >>> import jax, numpy as np, optax
    >>> from flax import nnx
    >>> from tomioka_jax import core
    >>> model = core.MLP(64, (32,), 10, rngs=nnx.Rngs(0))
    >>> graphdef, state = core.create_train_state(model, optax.adam(1e-3), jax.random.key(0))
    >>> mesh = core.data_mesh()
    >>> step = core.make_train_step(graphdef, core.cross_entropy_loss, optax.adam(1e-3),
    ...                             mesh=mesh)
    >>> batch = {"x": np.zeros((64, 64), np.float32), "y": np.zeros(64, np.int32)}
    >>> state, metrics = step(core.replicate(state, mesh), core.shard_batch(batch, mesh))
    >>> int(state.step), sorted(metrics)
    (1, ['accuracy', 'loss'])
  """
  num_shards = 1 if mesh is None else parallel.mesh_size(mesh)
  step = _make_step(graphdef, loss_fn, optimizer, extra_args)
  donate_argnums = (0,) if donate else ()
  if mesh is None:
    return _checked(jax.jit(step, donate_argnums=donate_argnums), num_shards)
  replicated = parallel.replicated_sharding(mesh)
  return _checked(jax.jit(step, in_shardings=(replicated, parallel.batch_sharding(mesh)),
                          out_shardings=(replicated, replicated),
                          donate_argnums=donate_argnums), num_shards)


GradReduceFn = Callable[[jax.Array, Any, str], Any]


def pmean_gradients(key: jax.Array, grads: Any, axis_name: str) -> Any:
  """The exact gradient all-reduce: the mean over ``axis_name`` (``key`` unused)."""
  del key
  return jax.lax.pmean(grads, axis_name)


def make_shard_map_train_step(
    graphdef: nnx.GraphDef, loss_fn: LossFn, optimizer: optax.GradientTransformation,
    mesh: Mesh, *, reduce_gradients: GradReduceFn = pmean_gradients,
    extra_args: ExtraArgsFn | None = None,
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
  """A data-parallel step whose gradient all-reduce is an explicit collective.

  Each device computes the gradient of ``loss_fn`` on its shard of the batch; then
  ``reduce_gradients(key, grads, axis_name)`` combines them across the mesh's data axis (the
  default, :func:`pmean_gradients`, is the exact mean; QSGD passes a quantized mean). Every
  device then applies the same optimizer update to its replica, so the state stays
  replicated. ``key`` is the step's key, identical on every device; a reduction that needs
  independent per-device randomness folds in ``lax.axis_index(axis_name)``.

  The loss and metrics reported are means over devices (exact for equal shard sizes).
  ``extra_args(batch)`` is computed from the *global* batch, outside the per-device code, and
  handed to every device replicated, so that a data-dependent optimizer (DDP-SGD) updates
  every replica alike, exactly as in :func:`make_train_step`.

  Args:
    graphdef, loss_fn, optimizer, extra_args: as in :func:`make_train_step`.
    mesh: a 1-D data mesh.
    reduce_gradients: the collective that replaces the all-reduce.

  Returns:
    The jitted step ``(state, batch) -> (state, metrics)``.

  Raises:
    ValueError: ``mesh`` is not 1-D. TypeError (when the step is traced): ``reduce_gradients``
      returned something other than a pytree shaped like the gradients (for QSGD, return
      ``quantized_tree_mean(...).mean``, not the ``QuantizedMean`` itself).
  """
  if len(mesh.axis_names) != 1:
    raise ValueError(
        f"mesh must be a 1-D data mesh, got axes {tuple(mesh.axis_names)} of shape "
        f"{tuple(mesh.devices.shape)}; make one with core.data_mesh() or "
        f"jax.make_mesh((n,), ('data',))")
  (axis_name,) = mesh.axis_names
  num_shards = parallel.mesh_size(mesh)
  optimizer = _with_extra_args(optimizer, extra_args)

  def per_device(state: TrainState, batch: Batch, extra: dict[str, Any]):
    rng, step_rng = jax.random.split(state.rng)
    loss_rng, reduce_rng = jax.random.split(step_rng)
    # Per-device randomness of the loss (dropout) differs between devices.
    loss_rng = jax.random.fold_in(loss_rng, jax.lax.axis_index(axis_name))
    loss, metrics, model_state, grads = _loss_and_grads(graphdef, loss_fn, state, batch,
                                                         loss_rng)
    reduced = reduce_gradients(reduce_rng, grads, axis_name)
    if jax.tree.structure(reduced) != jax.tree.structure(grads):
      raise TypeError(
          f"reduce_gradients must return a pytree shaped like the gradients "
          f"({jax.tree.structure(grads).num_leaves} arrays), got {type(reduced).__name__} with "
          f"structure {jax.tree.structure(reduced)}; a QSGD reduction returns "
          f"quantized_tree_mean(key, grads, axis_name, ...).mean")
    grads = reduced
    # Non-parameter state (batch statistics) is averaged so that replicas stay identical.
    model_state = jax.lax.pmean(model_state, axis_name)
    metrics = jax.lax.pmean({"loss": loss, **metrics}, axis_name)
    return _apply(state, optimizer, grads, model_state, rng, extra), metrics

  sharded = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(axis_name), P()),
                          out_specs=(P(), P()), check_vma=False)

  def step(state: TrainState, batch: Batch):
    return sharded(state, batch, {} if extra_args is None else extra_args(batch))

  replicated = parallel.replicated_sharding(mesh)
  return _checked(jax.jit(step, in_shardings=(replicated, parallel.batch_sharding(mesh)),
                          out_shardings=(replicated, replicated)), num_shards)


def _check_positive_ints(**values: Any) -> None:
  """Raises ``ValueError`` naming the first argument that is not a positive integer."""
  for name, value in values.items():
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")


def _scan_steps(step: Callable[[TrainState, Batch], tuple[TrainState, Metrics]],
                state: TrainState, xs: Any, batch_of: Callable[[Any], Batch]
                ) -> tuple[TrainState, Metrics]:
  """``lax.scan`` of the pure ``step`` over ``xs``; each step's batch is ``batch_of(x)``.

  The loop shared by the on-device trainers: ``xs`` are minibatch indices
  (:func:`make_scan_trainer`) or step numbers (:func:`make_sampler_trainer`). Returns the final
  state and the per-step metrics (leading axis: the steps).
  """
  return jax.lax.scan(lambda s, x: step(s, batch_of(x)), state, xs)


def make_scan_trainer(graphdef: nnx.GraphDef, loss_fn: LossFn,
                      optimizer: optax.GradientTransformation, *, batch_size: int, epochs: int,
                      evaluate: Callable[[TrainState], Metrics] | None = None,
                      extra_args: ExtraArgsFn | None = None
                      ) -> Callable[[TrainState, Batch, jax.Array], tuple[TrainState, Metrics]]:
  """A whole training run as one compiled function: the train step under ``lax.scan``.

  For experiments whose data fit on the device and whose point is many runs (seeds, step
  sizes, curvatures): ``train(state, data, key) -> (state, metrics)`` runs ``epochs`` epochs of
  :func:`make_train_step`'s step (the same pure function) over shuffled minibatches of
  ``data``, a pytree of arrays with one leading example axis. Each epoch draws a permutation
  with its own key from ``jax.random.split(key, epochs)`` and drops the last partial batch;
  the step's own randomness comes from ``state.rng`` as in :func:`make_train_step`.
  ``train`` is jitted and, being a pure function of arrays, ``jax.vmap``-s over states
  (seeds, initializations), data sets and keys; build the optimizer inside a ``vmap``-ed
  function to ``vmap`` over its hyperparameters (purejaxrl's ``make_train(config) ->
  train(rng)``).

  Args:
    graphdef, loss_fn, optimizer, extra_args: as in :func:`make_train_step` (``extra_args``
      sees each minibatch).
    batch_size, epochs: positive integers (``batch_size`` at most the number of examples).
    evaluate: optional ``evaluate(state) -> metrics`` run after every epoch (for example the
      error on whole training and test sets held in its closure).

  Returns:
    ``train(state, data, key)``, returning the final state and, per epoch (leading axis of
    length ``epochs``), the step metrics (``loss`` and ``loss_fn``'s) averaged over the epoch's
    steps, updated with ``evaluate``'s metrics (which win on a shared name).

  Example:
    >>> import jax, numpy as np, optax
    >>> from flax import nnx
    >>> from tomioka_jax import core
    >>> model = core.MLP(64, (32,), 10, rngs=nnx.Rngs(0))
    >>> graphdef, state = core.create_train_state(model, optax.sgd(0.1), jax.random.key(0))
    >>> train = core.make_scan_trainer(graphdef, core.cross_entropy_loss, optax.sgd(0.1),
    ...                                batch_size=64, epochs=10)
    >>> x, y = np.zeros((256, 64), np.float32), np.zeros(256, np.int32)
    >>> state, metrics = train(state, {"x": x, "y": y}, jax.random.key(1))
    >>> metrics["loss"].shape
    (10,)
  """
  _check_positive_ints(batch_size=batch_size, epochs=epochs)
  step = _make_step(graphdef, loss_fn, optimizer, extra_args)

  @jax.jit
  def train(state: TrainState, data: Batch, key: jax.Array) -> tuple[TrainState, Metrics]:
    n = {jnp.shape(x)[0] for x in jax.tree.leaves(data)}
    if len(n) != 1:
      raise ValueError(f"data must be a pytree of arrays sharing one leading example axis, got "
                       f"shapes {jax.tree.map(jnp.shape, data)}")
    (n,) = n
    if batch_size > n:
      raise ValueError(f"batch_size={batch_size} exceeds the {n} training examples")
    steps = n // batch_size

    def epoch(state, key):
      order = jax.random.permutation(key, n)[:steps * batch_size].reshape(steps, batch_size)
      state, metrics = _scan_steps(step, state, order,
                                   lambda idx: jax.tree.map(lambda x: x[idx], data))
      metrics = jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)
      return state, metrics if evaluate is None else {**metrics, **evaluate(state)}

    return jax.lax.scan(epoch, state, jax.random.split(key, epochs))

  return train


def make_sampler_trainer(graphdef: nnx.GraphDef, loss_fn: LossFn,
                         optimizer: optax.GradientTransformation, *,
                         sample: Callable[[jax.Array], Batch], steps: int,
                         extra_args: ExtraArgsFn | None = None
                         ) -> Callable[[TrainState, jax.Array], tuple[TrainState, Metrics]]:
  """A whole training run as one compiled function, each step's batch drawn by a sampler.

  The form of :func:`make_scan_trainer` for training data that are *drawn*, not iterated:
  groups of same-class images (the ML-VAE), tasks, synthetic data. ``train(state, key) ->
  (state, metrics)`` runs ``steps`` steps of :func:`make_train_step`'s step (the same pure
  function), step ``t`` (from 0) on the batch ``sample(jax.random.fold_in(key, t))``; the
  step's own randomness comes from ``state.rng`` as in :func:`make_train_step`. The sampler
  runs on the device inside the scan, so it must be a jittable function of a key returning a
  pytree of arrays with one leading batch axis (for example
  :func:`tomioka_jax.generative.make_group_sampler`'s indices, used to index arrays held in its
  closure). ``train`` is jitted and ``jax.vmap``-s over states and keys (seeds).

  Args:
    graphdef, loss_fn, optimizer, extra_args: as in :func:`make_train_step` (``extra_args``
      sees each sampled batch).
    sample: ``sample(key) -> batch``, jittable.
    steps: the number of steps, a positive integer.

  Returns:
    ``train(state, key)``, returning the final state and the metrics of every step (``loss``
    and ``loss_fn``'s; leading axis of length ``steps``).

  Raises:
    TypeError: ``sample`` is not callable. ValueError: ``steps`` is not a positive integer;
    (when ``train`` is traced) a sampled batch is not a pytree of arrays sharing one leading
    batch axis.

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from flax import nnx
    >>> from tomioka_jax import core
    >>> x, y = jnp.zeros((256, 64)), jnp.zeros(256, jnp.int32)  # on the device
    >>> def sample(key):  # 32 examples drawn with replacement
    ...   idx = jax.random.randint(key, (32,), 0, 256)
    ...   return {"x": x[idx], "y": y[idx]}
    >>> model = core.MLP(64, (32,), 10, rngs=nnx.Rngs(0))
    >>> graphdef, state = core.create_train_state(model, optax.sgd(0.1), jax.random.key(0))
    >>> train = core.make_sampler_trainer(graphdef, core.cross_entropy_loss, optax.sgd(0.1),
    ...                                   sample=sample, steps=100)
    >>> state, metrics = train(state, jax.random.key(1))
    >>> int(state.step), metrics["loss"].shape
    (100, (100,))
  """
  if not callable(sample):
    raise TypeError(f"sample must be a function key -> batch, got sample={sample!r}")
  _check_positive_ints(steps=steps)
  step = _make_step(graphdef, loss_fn, optimizer, extra_args)

  def draw(key: jax.Array, t: jax.Array) -> Batch:
    batch = sample(jax.random.fold_in(key, t))
    try:
      _check_batch(batch, 1)  # at trace time: shapes are static
    except ValueError as e:
      raise ValueError(f"sample(key) returned an unusable batch: {e}") from None
    return batch

  @jax.jit
  def train(state: TrainState, key: jax.Array) -> tuple[TrainState, Metrics]:
    return _scan_steps(step, state, jnp.arange(steps), functools.partial(draw, key))

  return train


def make_eval_step(graphdef: nnx.GraphDef, eval_fn: EvalFn, *,
                   mesh: Mesh | None = None) -> Callable[[TrainState, Batch], Metrics]:
  """Builds the jitted evaluation step ``(state, batch) -> metrics``.

  ``eval_fn(model, batch)`` returns per-batch **sums** (for example the number of correct
  predictions and the summed loss, plus ``count``); :func:`fit` adds them over the evaluation
  set and divides by ``count``, so partial batches are weighted correctly.
  """
  num_shards = 1 if mesh is None else parallel.mesh_size(mesh)

  def step(state: TrainState, batch: Batch) -> Metrics:
    model = nnx.merge(graphdef, state.params, state.model_state)
    return eval_fn(model, batch)

  if mesh is None:
    return _checked(jax.jit(step), num_shards)
  replicated = parallel.replicated_sharding(mesh)
  return _checked(jax.jit(step, in_shardings=(replicated, parallel.batch_sharding(mesh)),
                          out_shardings=replicated), num_shards)


@functools.partial(jax.jit, static_argnums=0)
def apply_model(graphdef: nnx.GraphDef, state: TrainState, *args: Any) -> Any:
  """Calls the model held by ``state`` on ``args`` (inference; state is not updated)."""
  return nnx.merge(graphdef, state.params, state.model_state)(*args)


__all__ = [
    "TrainState",
    "create_train_state",
    "make_train_step",
    "make_shard_map_train_step",
    "make_scan_trainer",
    "make_sampler_trainer",
    "make_eval_step",
    "pmean_gradients",
    "apply_model",
]
