"""The toy data-parallel problem shared by the multi-process test and its workers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from tomioka_jax import core
from tomioka_jax import data

NUM_STEPS = 6
GLOBAL_BATCH = 16


def _dataset():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(64, 6)).astype(np.float32)
  w = rng.normal(size=(6, 3)).astype(np.float32)
  return {"x": x, "y": np.argmax(x @ w, -1).astype(np.int32)}


def train(mesh, process_index: int, process_count: int) -> dict[str, np.ndarray]:
  """Trains the MLP with both data-parallel steps; returns losses and final parameters."""
  out = {}
  batches = data.Batches(_dataset(), GLOBAL_BATCH, key=jax.random.key(1),
                         process_index=process_index, process_count=process_count)
  for kind in ("jit", "shard_map"):
    model = core.MLP(6, (16,), 3, rngs=nnx.Rngs(0))
    opt = optax.adam(1e-2)
    graphdef, state = core.create_train_state(model, opt, jax.random.key(2))
    state = core.replicate(state, mesh)
    if kind == "jit":
      step = core.make_train_step(graphdef, core.cross_entropy_loss, opt, mesh=mesh)
    else:
      step = core.make_shard_map_train_step(graphdef, core.cross_entropy_loss, opt, mesh)
    losses = []
    for t in range(NUM_STEPS):
      state, metrics = step(state, core.shard_batch(batches(t), mesh))
      losses.append(np.asarray(jax.device_get(metrics["loss"])))
    out[f"{kind}_losses"] = np.array(losses)
    # Replicated arrays: every process can read its local copy.
    leaves = [np.asarray(x.addressable_data(0)) for x in jax.tree.leaves(state.params)]
    out[f"{kind}_params"] = np.concatenate([l.ravel() for l in leaves])
  return out


def fit_with_checkpoints(mesh, process_index: int, process_count: int, workdir) -> np.ndarray:
  """Runs ``core.fit`` with checkpoints (every process writes its part); final parameters."""
  batches = data.Batches(_dataset(), GLOBAL_BATCH, key=jax.random.key(1),
                         process_index=process_index, process_count=process_count)
  model = core.MLP(6, (16,), 3, rngs=nnx.Rngs(0))
  opt = optax.adam(1e-2)
  graphdef, state = core.create_train_state(model, opt, jax.random.key(2))
  state = core.replicate(state, mesh)
  step = core.make_train_step(graphdef, core.cross_entropy_loss, opt, mesh=mesh)
  result = core.fit(step, state, lambda t: core.shard_batch(batches(t), mesh), NUM_STEPS,
                    workdir=workdir, checkpoint_every=2, progress=False)
  leaves = [np.asarray(x.addressable_data(0)) for x in jax.tree.leaves(result.state.params)]
  return np.concatenate([l.ravel() for l in leaves])


def save(path, results):
  np.savez(path, **results)


__all__ = ["train", "save", "NUM_STEPS"]
del jnp
