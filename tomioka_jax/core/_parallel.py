"""Data parallelism: a mesh over all devices, shardings, and multi-process set-up.

The same training step runs on 1 CPU, N simulated CPU devices, GPUs, TPU pods, and several
processes joined by ``jax.distributed``: the step is ``jax.jit`` with a replicated state and a
batch sharded along the mesh's single ``"data"`` axis. Each process feeds only its own slice
of the global batch (:func:`shard_batch` assembles the global array from process-local data).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def data_mesh(devices: Sequence[jax.Device] | None = None, *,
              axis_name: str = DATA_AXIS) -> Mesh:
  """A 1-D mesh over ``devices`` (default: every device of every process).

  Args:
    devices: the devices to use, in order; by default ``jax.devices()``.
    axis_name: the name of the data axis.

  Returns:
    A ``Mesh`` with one axis, ``axis_name``, of size ``len(devices)``. The axis is of type
    ``Auto``: shardings are constraints for XLA to propagate, so model code needs no sharding
    annotations.
  """
  devices = list(jax.devices() if devices is None else devices)
  if not devices:
    raise ValueError("devices must name at least one device, got an empty sequence")
  return jax.make_mesh((len(devices),), (axis_name,), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))


def mesh_size(mesh: Mesh) -> int:
  """The number of devices in ``mesh``."""
  return int(np.prod(list(mesh.shape.values())))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array (model parameters, optimizer state)."""
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """The leading (batch) axis is split across all the mesh's axes."""
  return NamedSharding(mesh, P(mesh.axis_names))


def _as_host(x: Any) -> np.ndarray:
  if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    raise TypeError("use replicate(), which handles PRNG keys, for typed keys")
  return np.asarray(x)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places a pytree on every device of ``mesh`` (every process must pass the same values)."""
  sharding = replicated_sharding(mesh)

  def put(x):
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      impl = jax.random.key_impl(x)
      data = jax.make_array_from_process_local_data(sharding, np.asarray(jax.random.key_data(x)))
      return jax.random.wrap_key_data(data, impl=impl)
    return jax.make_array_from_process_local_data(sharding, _as_host(x))

  return jax.tree.map(put, tree)


def shard_batch(local_batch: Any, mesh: Mesh) -> Any:
  """Assembles a globally sharded batch from this process's slice of it.

  On one process ``local_batch`` is the whole batch. With P processes each passes its own
  ``1/P`` of the rows (see :class:`tomioka_jax.data.Batches`, which yields exactly that), and
  the result is one global array whose leading size is P times the local one.
  """
  sharding = batch_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, _as_host(x)), local_batch)


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None, process_id: int | None = None,
                           *, local_device_ids: Sequence[int] | None = None,
                           cpu_collectives: str | None = "gloo") -> None:
  """Joins this process to a multi-process JAX run (a thin ``jax.distributed.initialize``).

  Arguments left ``None`` are read from the environment variables ``JAX_COORDINATOR_ADDRESS``,
  ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` when set, and otherwise auto-detected by JAX
  (Slurm, Cloud TPU, ...). Calling it twice is a no-op. Must run before any JAX computation.

  Args:
    coordinator_address: ``host:port`` of process 0's coordinator service.
    num_processes: the number of processes.
    process_id: this process's index in ``[0, num_processes)``.
    local_device_ids: restrict this process to these local devices.
    cpu_collectives: the CPU collectives implementation (``"gloo"`` lets CPU-only processes
      all-reduce across each other, as the tests do on localhost); ``None`` leaves it.
  """
  if jax.distributed.is_initialized():
    return
  env = os.environ
  coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
  if num_processes is None and "JAX_NUM_PROCESSES" in env:
    num_processes = int(env["JAX_NUM_PROCESSES"])
  if process_id is None and "JAX_PROCESS_ID" in env:
    process_id = int(env["JAX_PROCESS_ID"])
  if num_processes is not None and num_processes < 1:
    raise ValueError(f"num_processes must be >= 1, got {num_processes}")
  if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
    raise ValueError(
        f"process_id must be in [0, num_processes={num_processes}), got {process_id}")
  if cpu_collectives is not None:
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id,
                             local_device_ids=local_device_ids)
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())


__all__ = [
    "DATA_AXIS",
    "data_mesh",
    "mesh_size",
    "replicated_sharding",
    "batch_sharding",
    "replicate",
    "shard_batch",
    "initialize_distributed",
]
