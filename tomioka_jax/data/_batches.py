"""Batch iterators whose batch for step ``t`` is a pure function of ``(key, t)``.

That property is what lets :func:`tomioka_jax.core.fit` resume exactly from a checkpoint: no
iterator state needs saving. Shuffling draws one permutation per epoch from
``fold_in(key, epoch)``. With several processes every process computes the same global batch
indices and keeps its own contiguous slice of them (process ``p`` of ``P`` holds rows
``[p*B/P, (p+1)*B/P)`` of the global batch of size ``B``), which is the layout
``jax.make_array_from_process_local_data`` expects for a batch sharded over a process-ordered
mesh.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import numpy as np


class Batches:
  """Minibatches of a dataset held as a dict (or any pytree) of equal-length arrays.

  Args:
    data: a pytree of arrays with one common leading size ``n``.
    batch_size: the *global* batch size, > 0; each process gets ``batch_size / process_count``.
    key: a PRNG key to shuffle with (one permutation per epoch); ``None`` keeps the order.
    drop_remainder: drop the last partial batch of an epoch (default), keeping shapes fixed.
    pad_remainder: with ``drop_remainder=False``, pad the last partial batch to the full size
      by repeating rows and add a ``"mask"`` entry (1 for real rows, 0 for padding); needs
      ``data`` to be a dict.
    process_index, process_count: this process's slice of each global batch.

  Example:
    >>> import jax, numpy as np
    >>> x, y = np.zeros((1000, 64), np.float32), np.arange(1000) % 10
    >>> batches = Batches({"x": x, "y": y}, 128, key=jax.random.key(0))
    >>> batch = batches(12)            # the batch of update 12, any epoch
    >>> batch["x"].shape, len(batches), sum(1 for _ in batches.epoch(3))
    ((128, 64), 7, 7)
  """

  def __init__(self, data: Any, batch_size: int, *, key: jax.Array | None = None,
               drop_remainder: bool = True, pad_remainder: bool = False,
               process_index: int = 0, process_count: int = 1):
    leaves = jax.tree.leaves(data)
    if not leaves:
      raise ValueError("data must hold at least one array, got an empty pytree")
    sizes = {np.shape(x)[0] if np.ndim(x) else None for x in leaves}
    if None in sizes or len(sizes) != 1:
      raise ValueError(
          f"data must be arrays with one common leading size, got shapes "
          f"{jax.tree.map(np.shape, data)}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
      raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(process_count, (int, np.integer)) or process_count < 1:
      raise ValueError(f"process_count must be a positive integer, got {process_count!r}")
    if not 0 <= process_index < process_count:
      raise ValueError(
          f"process_index must be in [0, process_count={process_count}), got {process_index}")
    if batch_size % process_count:
      raise ValueError(
          f"batch_size={batch_size} must be a multiple of process_count={process_count}")
    (self.num_examples,) = sizes
    if drop_remainder and batch_size > self.num_examples:
      raise ValueError(
          f"batch_size={batch_size} exceeds the {self.num_examples} examples; allowed: "
          f"batch_size <= {self.num_examples}, or drop_remainder=False")
    if pad_remainder and not isinstance(data, dict):
      raise ValueError("pad_remainder=True needs data to be a dict (a 'mask' entry is added)")
    self.data = jax.tree.map(np.asarray, data)
    self.batch_size = int(batch_size)
    self.key = key
    self.drop_remainder = drop_remainder
    self.pad_remainder = pad_remainder and not drop_remainder
    self.process_index = int(process_index)
    self.process_count = int(process_count)

  @property
  def steps_per_epoch(self) -> int:
    if self.drop_remainder:
      return self.num_examples // self.batch_size
    return -(-self.num_examples // self.batch_size)

  def _order(self, epoch: int) -> np.ndarray:
    if self.key is None:
      return np.arange(self.num_examples)
    return np.asarray(jax.random.permutation(jax.random.fold_in(self.key, epoch),
                                             self.num_examples))

  def _take(self, order: np.ndarray, start: int) -> Any:
    idx = order[start:start + self.batch_size]
    real = len(idx)
    if self.pad_remainder and real < self.batch_size:
      idx = np.concatenate([idx, np.resize(idx, self.batch_size - real)])
    if len(idx) % self.process_count:
      raise ValueError(
          f"the last batch has {len(idx)} rows, which {self.process_count} processes cannot "
          f"split evenly; use pad_remainder=True or drop_remainder=True")
    local = len(idx) // self.process_count
    lo = self.process_index * local
    idx_local = idx[lo:lo + local]
    batch = jax.tree.map(lambda x: x[idx_local], self.data)
    if self.pad_remainder:
      mask = (np.arange(lo, lo + len(idx_local)) < real).astype(np.float32)
      batch = {**batch, "mask": mask}
    return batch

  def __call__(self, step: int) -> Any:
    """This process's part of the batch for update ``step`` (counting across epochs)."""
    if step < 0:
      raise ValueError(f"step must be >= 0, got {step}")
    epoch, i = divmod(int(step), self.steps_per_epoch)
    return self._take(self._order(epoch), i * self.batch_size)

  def epoch(self, epoch: int) -> Iterator[Any]:
    """Iterates over this process's part of every batch of ``epoch``."""
    order = self._order(epoch)
    for i in range(self.steps_per_epoch):
      yield self._take(order, i * self.batch_size)

  def __len__(self) -> int:
    return self.steps_per_epoch


__all__ = ["Batches"]
