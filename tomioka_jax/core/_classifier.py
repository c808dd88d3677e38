"""Classifier recipes on top of the core: an NNX MLP, its loss and evaluation, and two trainers.

``train_classifier`` runs :func:`tomioka_jax.core.fit` (resumable, sharded, logged);
``make_classifier_trainer`` runs :func:`tomioka_jax.core.make_scan_trainer` (a whole run as one
compiled function, for sweeps).

This is the piece the quickstart notebook and the ``mlp_digits`` benchmark import, and the
baseline network several papers' experiments start from (QSGD's training parity, Path-SGD).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from tomioka_jax.core import _loop as loop
from tomioka_jax.core import _train as train


class MLP(nnx.Module):
  """A fully connected ReLU network: inputs are flattened, the last layer gives logits."""

  def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int, *,
               rngs: nnx.Rngs, dtype: Any = jnp.float32):
    if in_features < 1 or num_classes < 1 or any(h < 1 for h in hidden):
      raise ValueError(
          f"layer sizes must be positive, got in_features={in_features}, hidden={tuple(hidden)},"
          f" num_classes={num_classes}")
    sizes = [in_features, *hidden, num_classes]
    self.in_features = in_features
    self.layers = nnx.List([
        nnx.Linear(a, b, rngs=rngs, dtype=dtype, param_dtype=dtype)
        for a, b in zip(sizes[:-1], sizes[1:])
    ])

  def __call__(self, x: jax.Array) -> jax.Array:
    x = jnp.reshape(x, (x.shape[0], -1))
    if x.shape[1] != self.in_features:
      raise ValueError(
          f"x must have {self.in_features} features per example after flattening, got shape "
          f"{x.shape}")
    for layer in self.layers[:-1]:
      x = jax.nn.relu(layer(x))
    return self.layers[-1](x)


def cross_entropy_loss(model: nnx.Module, batch: dict[str, jax.Array],
                       rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Mean softmax cross-entropy and accuracy of ``model`` on ``batch = {"x", "y"}``."""
  del rng
  logits = model(batch["x"])
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
  accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["y"])
  return loss, {"accuracy": accuracy}


def classification_sums(model: nnx.Module, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """Per-batch sums for evaluation: summed loss, number correct, and the count.

  Rows with ``batch["mask"] == 0`` (padding of a last partial batch) are ignored.
  """
  logits = model(batch["x"])
  weight = batch.get("mask", jnp.ones(batch["y"].shape, logits.dtype)).astype(logits.dtype)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])
  correct = (jnp.argmax(logits, -1) == batch["y"]).astype(logits.dtype)
  return {"loss": jnp.sum(weight * losses), "accuracy": jnp.sum(weight * correct),
          "count": jnp.sum(weight)}


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
  """Hyperparameters of :func:`train_classifier` (checked on construction).

  Attributes:
    hidden: hidden layer widths.
    learning_rate: Adam's step size, > 0.
    batch_size: the global batch size, > 0 (a multiple of the device count when sharded).
    num_steps: number of updates, > 0.
    seed: seeds the initialization, the shuffling and the step keys.
    eval_every: evaluate on the test set every this many steps (None: only at the end).
    checkpoint_every: checkpoint every this many steps (needs a workdir).
  """

  hidden: tuple[int, ...] = (256, 256)
  learning_rate: float = 1e-3
  batch_size: int = 128
  num_steps: int = 1000
  seed: int = 0
  eval_every: int | None = None
  checkpoint_every: int | None = None

  def __post_init__(self):
    if not (isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0):
      raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate!r}")
    for name in ("batch_size", "num_steps"):
      value = getattr(self, name)
      if not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def train_classifier(config: ClassifierConfig, train_data: dict[str, np.ndarray],
                     test_data: dict[str, np.ndarray], num_classes: int, *,
                     mesh: Mesh | None = None, workdir: Any = None,
                     progress: bool = False, dtype: Any = jnp.float32) -> loop.FitResult:
  """Trains an :class:`MLP` with Adam on ``train_data = {"x", "y"}``, evaluating on ``test_data``.

  With a ``mesh`` the step is data-parallel over its devices (batches sharded, state
  replicated); the loss trajectory is that of one device up to float rounding.
  """
  # Imported here: data depends on core's parallel module, not the other way round.
  from tomioka_jax import data as data_lib  # pylint: disable=g-import-not-at-top

  key = jax.random.key(config.seed)
  init_key, shuffle_key, step_key = jax.random.split(key, 3)
  in_features = int(np.prod(train_data["x"].shape[1:]))
  model = MLP(in_features, config.hidden, num_classes,
              rngs=nnx.Rngs(params=jax.random.key_data(init_key)), dtype=dtype)
  optimizer = optax.adam(config.learning_rate)
  graphdef, state = train.create_train_state(model, optimizer, step_key)
  process_index, process_count = jax.process_index(), jax.process_count()
  batches = data_lib.Batches(train_data, config.batch_size, key=shuffle_key,
                             process_index=process_index, process_count=process_count)
  num_test = len(test_data["y"])
  # Evaluate in one padded batch per 1024 rows (a multiple of any device count up to 1024).
  eval_size = min(1024, -(-num_test // 8) * 8)
  test_batches = data_lib.Batches(test_data, eval_size, drop_remainder=False, pad_remainder=True,
                                  process_index=process_index, process_count=process_count)
  if mesh is not None:
    from tomioka_jax.core import _parallel as parallel  # pylint: disable=g-import-not-at-top
    state = parallel.replicate(state, mesh)
    get_batch = lambda step: parallel.shard_batch(batches(step), mesh)
    eval_batches = lambda: (parallel.shard_batch(b, mesh) for b in test_batches.epoch(0))
  else:
    get_batch = batches
    eval_batches = lambda: test_batches.epoch(0)
  step = train.make_train_step(graphdef, cross_entropy_loss, optimizer, mesh=mesh)
  eval_step = train.make_eval_step(graphdef, classification_sums, mesh=mesh)
  return loop.fit(step, state, get_batch, config.num_steps, workdir=workdir,
                  checkpoint_every=config.checkpoint_every, eval_step=eval_step,
                  eval_batches=eval_batches, eval_every=config.eval_every, progress=progress)


def classification_curves(graphdef: nnx.GraphDef, train_data: dict[str, Any],
                          test_data: dict[str, Any]
                          ) -> Callable[[train.TrainState], dict[str, jax.Array]]:
  """``evaluate(state)`` for :func:`tomioka_jax.core.make_scan_trainer`: whole-set errors.

  Returns ``train_ce`` (mean cross-entropy on ``train_data``), ``train_err`` and ``test_err``
  (misclassified fractions) of the model held by ``state``, in evaluation mode
  (``nnx.Module.eval``: batch normalization uses its running averages). Both sets,
  ``{"x": (n, ...), "y": (n,)}``, are evaluated whole, so they must fit on the device.
  """
  x_tr, y_tr = jnp.asarray(train_data["x"]), jnp.asarray(train_data["y"])
  x_te, y_te = jnp.asarray(test_data["x"]), jnp.asarray(test_data["y"])

  def evaluate(state: train.TrainState) -> dict[str, jax.Array]:
    model = nnx.merge(graphdef, state.params, jax.tree.map(lambda v: v, state.model_state))
    model.eval()
    logits_tr, logits_te = model(x_tr), model(x_te)
    return {
        "train_ce": optax.softmax_cross_entropy_with_integer_labels(logits_tr, y_tr).mean(),
        "train_err": jnp.mean(jnp.argmax(logits_tr, -1) != y_tr),
        "test_err": jnp.mean(jnp.argmax(logits_te, -1) != y_te),
    }

  return evaluate


def make_classifier_trainer(model: nnx.Module, optimizer: optax.GradientTransformation,
                            train_data: dict[str, Any], test_data: dict[str, Any], *,
                            batch_size: int, epochs: int,
                            extra_args: train.ExtraArgsFn | None = None
                            ) -> Callable[[Any, jax.Array], tuple[Any, dict[str, jax.Array]]]:
  """A classifier's whole training run on the device, for comparing optimizers or starts.

  A recipe on :func:`tomioka_jax.core.make_scan_trainer`: ``run(params, key) -> (params,
  metrics)`` trains ``model`` (its structure; ``params`` are its ``nnx.Param`` state, e.g. a
  rescaled copy) with :func:`cross_entropy_loss` and ``optimizer`` for ``epochs`` epochs of
  shuffled minibatches (the last partial batch of each epoch dropped), and returns the
  per-epoch :func:`classification_curves` (``train_ce``, ``train_err``, ``test_err``). ``run``
  is jitted and can be ``vmap``-ed over keys or parameters.

  Args:
    model: an NNX classifier, ``model(x) -> logits``.
    optimizer: any optax transformation.
    train_data, test_data: ``{"x": (n, ...), "y": (n,)}``.
    batch_size, epochs: positive integers.
    extra_args: the optimizer hook of :func:`tomioka_jax.core.make_train_step`, called on each
      minibatch (DDP-SGD: ``lambda batch: {"inputs": batch["x"]}``).
  """
  graphdef, _, model_state = nnx.split(model, nnx.Param, ...)
  trainer = train.make_scan_trainer(
      graphdef, cross_entropy_loss, optimizer, batch_size=batch_size, epochs=epochs,
      evaluate=classification_curves(graphdef, train_data, test_data), extra_args=extra_args)
  data = {"x": jnp.asarray(train_data["x"]), "y": jnp.asarray(train_data["y"])}

  @jax.jit
  def run(params, key):
    state = train.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                             model_state=model_state, opt_state=optimizer.init(params), rng=key)
    state, metrics = trainer(state, data, key)
    return state.params, {k: metrics[k] for k in ("train_ce", "train_err", "test_err")}

  return run


__all__ = ["MLP", "make_classifier_trainer", "classification_curves", "cross_entropy_loss",
           "classification_sums", "ClassifierConfig", "train_classifier"]
