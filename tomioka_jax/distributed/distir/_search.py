"""Grid search over (d, h, p, microbatches) with the simulator, and a vectorized cost model.

Santhanam et al. (2021), section 6 (``examples/grid_search.py`` in the reference): every
power-of-two ``(d, h, p)`` with ``d * h * p = world size``, and ``2^1 .. 2^7`` microbatches
when ``p > 1``, ranked by simulated step time; the best configuration per memory budget.

Two paths:

* **exact**: build the program (:func:`mlp_training_step`, :func:`gpt_inference`) and run
  the simulator on it (:func:`simulate_configs`). Cost grows with the program: a few
  thousand ops per second.
* **vectorized**: :func:`mlp_step_model` / :func:`gpt_inference_model`, the same op costs
  (``_cost``'s FLOPs and bytes of each op the transforms emit, alpha-beta collectives)
  composed in closed form over NumPy arrays of configurations, so a grid of thousands of
  configurations costs one pass of array arithmetic. A pipeline of ``p`` equal stages with
  ``m`` microbatches, a forward ``t_F`` and backward ``t_B`` per microbatch and stage and a
  send ``t_s`` between stages takes (rendezvous sends: a stage receives, computes, sends)

      T = (m + p - 1)(t_F + t_B) + [p > 1] (4(m - 1) + 2(p - 1)) t_s + t_allreduce + t_update,

  the GPipe fill-and-drain. Without a pipeline (``p = 1``) this equals the simulator of the
  same program to rounding; with one, the closed form leaves out some rendezvous waits and
  is 4-20% below the simulator (the tests check within 25% on a set of configurations).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Sequence

import numpy as np

from tomioka_jax.distributed.distir import _cost as cost_lib
from tomioka_jax.distributed.distir import _ir as ir
from tomioka_jax.distributed.distir import _simulate as simulate_lib
from tomioka_jax.distributed.distir import _transforms as transforms

#: The reference's model sizes: MLP (layers, width) and GPT-3 (layers, heads, d_model).
MLP_SIZES = {"mlp-small": (16, 8192), "mlp-medium": (64, 16384), "mlp-large": (96, 32768)}
GPT_SIZES = {"gpt3-xl": (24, 16, 2048), "gpt3-6.7B": (32, 32, 4096),
             "gpt3-13B": (40, 40, 5120)}


def _is_power_of_two(n) -> bool:
  return isinstance(n, (int, np.integer)) and n >= 1 and (n & (n - 1)) == 0


def dhp_configurations(world_size: int, *, max_microbatch_log2: int = 7
                       ) -> list[tuple[int, int, int, int]]:
  """All ``(d, h, p, m)``: powers of two with ``d h p = world_size``; ``m = 1`` when
  ``p = 1``, else ``m in 2^1 .. 2^max_microbatch_log2`` (the reference's grid)."""
  if not _is_power_of_two(world_size):
    raise ValueError(f"dhp_configurations: world_size must be a power of two, got "
                     f"{world_size!r}")
  k = int(np.log2(world_size))
  out = []
  for i in range(k + 1):
    for j in range(k + 1 - i):
      d, h, p = 2**i, 2**j, 2 ** (k - i - j)
      ms = [1] if p == 1 else [2**e for e in range(1, max_microbatch_log2 + 1)]
      out.extend((d, h, p, m) for m in ms)
  return out


def _kernel(device: ir.Device, flops, nbytes, combine: str = "sum"):
  compute, memory = flops / device.flops, nbytes / device.dram_bandwidth
  body = compute + memory if combine == "sum" else np.maximum(compute, memory)
  return device.launch_overhead + body


def _link(topology: ir.Topology) -> tuple[float, float]:
  """(alpha, beta) of the topology's slowest link (uniform topologies: the link)."""
  n = topology.num_devices
  off = ~np.eye(n, dtype=bool)
  if n == 1:
    return 0.0, 1.0
  return float(topology.latency[off].max()), float(topology.bandwidth[off].min())


@dataclasses.dataclass(frozen=True)
class ModelEstimate:
  """Vectorized estimates, one entry per configuration."""

  time: np.ndarray
  peak_memory: np.ndarray


def mlp_step_model(d, h, p, m, *, num_layers: int, hidden: int, batch: int,
                   topology: ir.Topology, itemsize: int = 4) -> ModelEstimate:
  """Step time and peak memory of :func:`mlp_training_step` for arrays of ``(d, h, p, m)``.

  Built from ``_cost``'s counts for each op the transform emits (per layer: the forward
  ``dot_general`` and ReLU ``max``; the backward ``gt``, ``broadcast_in_dim``,
  ``select_n``, ``transpose`` and ``dot_general`` for the weight gradient, ``transpose`` and
  ``dot_general`` for the input gradient; gradient accumulation ``add``; SGD ``mul``,
  ``sub``) and the alpha-beta times of its collectives (Megatron allreduce after a
  row-split layer and of the input gradient of a column-split layer, allgather after an
  unpaired column layer, the data-parallel gradient allreduce), with the pipeline formula
  of the module docstring. Device 0's rates are used for every device.
  """
  d, h, p, m = (np.asarray(v, np.float64) for v in (d, h, p, m))
  dev = topology.devices[0]
  alpha, beta = _link(topology)
  s = float(itemsize)
  kt = lambda f, b: _kernel(dev, f, b)
  r = batch / d / m          # rows per microbatch
  H = float(hidden)
  nh = H / h
  per_stage = num_layers / p
  # Layer kinds per stage when h > 1: pairs (col, row), an odd stage ends with col_gather.
  pairs = np.where(h > 1, np.floor(per_stage / 2), 0.0)
  gathers = np.where(h > 1, per_stage - 2 * pairs, 0.0)
  fulls = np.where(h > 1, 0.0, per_stage)

  def dense_fwd(a, b):
    return kt(2 * r * a * b, s * (r * a + a * b + r * b)) + kt(r * b, s * (2 * r * b + 1))

  def dense_bwd(a, b, need_dx):
    t = (kt(r * b, s * (r * b + 1) + r * b)               # gt(out, 0)
         + kt(0.0, s + s * r * b)                           # zeros (broadcast_in_dim)
         + kt(r * b, r * b + 3 * s * r * b)                 # select_n
         + kt(0.0, 2 * s * r * a)                           # x.T
         + kt(2 * r * a * b, s * (r * a + r * b + a * b)))  # dW
    dx = kt(0.0, 2 * s * a * b) + kt(2 * r * a * b, s * (r * b + a * b + r * a))
    return t + need_dx * dx

  ar = lambda nbytes, n: cost_lib.collective_time("allreduce", nbytes, n, alpha, beta)
  ag = lambda nbytes, n: cost_lib.collective_time("allgather", nbytes, n, alpha, beta)
  act = s * r * H
  # Forward of one stage and microbatch.
  t_f = (fulls * dense_fwd(H, H)
         + pairs * (dense_fwd(H, nh) + dense_fwd(nh, H) + ar(act, h))
         + gathers * (dense_fwd(H, nh) + ag(act, h)))
  # Backward (the first layer of stage 0 has no input gradient: ignored, one per step).
  t_b = (fulls * dense_bwd(H, H, 1.0)
         + pairs * (dense_bwd(H, nh, 1.0) + ar(act, h) + dense_bwd(nh, H, 1.0))
         + gathers * (kt(0.0, s * (r * H + r * nh)) + dense_bwd(H, nh, 1.0) + ar(act, h)))
  # Loss gradient and the input slices (first/last stage), once per microbatch.
  t_io = (2 * kt(0.0, s * (m * r * H + r * H)) + kt(r * H, 3 * s * r * H)
          + kt(r * H, s * (2 * r * H + 1)))
  w_size = np.where(h > 1, H * nh, H * H)
  t_acc = (m - 1) * per_stage * kt(w_size, 3 * s * w_size)
  t_send = np.where(p > 1, alpha + act / beta, 0.0)
  t_grad = per_stage * ar(s * w_size, d)
  t_update = per_stage * (kt(w_size, s * (2 * w_size + 1)) + kt(w_size, 3 * s * w_size))
  # Layer 0 computes no input gradient (nor its allreduce), once per microbatch on stage 0.
  first = np.where(h > 1, nh, H)
  t_first = (kt(0.0, 2 * s * H * first) + kt(2 * r * H * first, s * (r * first + H * first
                                                                    + r * H))
             + np.where(h > 1, ar(act, h), 0.0))
  time = ((m + p - 1) * (t_f + t_b) - m * t_first + m * t_io
          + (p > 1) * (4 * (m - 1) + 2 * (p - 1)) * t_send + t_acc + t_grad + t_update)
  # Memory of a device: its weight shards, the inputs, the saved activations of the
  # microbatches in flight (GPipe: all m; a layer's output is the next one's input), the
  # gradients, and during accumulation the running sum, a new gradient and their sum.
  weights = per_stage * s * w_size
  inputs = 2 * s * m * r * H
  width = np.where(h > 1, (H + nh) / 2, H)
  saved = m * (per_stage + 1) * s * r * width
  peak = inputs + 2 * weights + saved + np.where(m > 1, 2.0, 1.0) * s * w_size
  return ModelEstimate(time, peak)


@functools.lru_cache(maxsize=None)
def gpt_kernel_counts() -> tuple[int, int]:
  """Kernels :func:`gpt_inference` launches per block and outside the blocks, per microbatch.

  Counted once on a tiny program (the count does not depend on the sizes) by simulating it
  on a device where every charged op costs exactly one second and nothing else.
  """
  unit = ir.Topology.uniform(1, flops=1e300, dram_bandwidth=1e300, launch_overhead=1.0)

  def launches(num_layers: int) -> int:
    fn = transforms.gpt_inference(1, 1, 1, num_layers=num_layers, d_model=8, num_heads=2,
                                  seq_len=4, batch=1, vocab=8)
    return int(round(simulate_lib.simulate(fn, unit).total_time))

  one, two = launches(1), launches(2)
  return two - one, one - (two - one)


def gpt_inference_model(d, h, p, m, *, num_layers: int, d_model: int, num_heads: int,
                        seq_len: int, batch: int, vocab: int, topology: ir.Topology,
                        itemsize: int = 4) -> ModelEstimate:
  """Step time and peak memory of :func:`gpt_inference` for arrays of ``(d, h, p, m)``.

  Per block and microbatch of ``r`` sequences (``n = r * seq_len`` tokens, ``D = d_model``,
  the Megatron shard ``D / h``): QKV ``2 n D (3D/h)``, attention scores and values
  ``2 * 2 r seq^2 D/h``, output projection ``2 n (D/h) D`` and MLP ``2 * 2 n D (4D/h)``
  FLOPs; elementwise work (layer norms, softmax, GELU, residuals) is counted as ~``30 n D +
  5 r seq^2 heads/h`` FLOPs and bytes ``4x`` that in the dtype;
  two allreduces of ``n D`` values per block over ``h``; ``n D`` values sent between
  stages; logits ``2 n D vocab`` on the last stage.

  Launches: the number of kernels per block and outside the blocks is counted on the
  transform's own program (:func:`gpt_kernel_counts`), so small models, where launch
  overhead dominates, are not under-predicted.
  """
  d, h, p, m = (np.asarray(v, np.float64) for v in (d, h, p, m))
  dev = topology.devices[0]
  alpha, beta = _link(topology)
  s = float(itemsize)
  D, S = float(d_model), float(seq_len)
  r = batch / d / m
  n = r * S
  flops_mm = 2 * n * D * (3 * D / h) + 2 * 2 * r * S * S * D / h + 2 * n * (D / h) * D \
      + 2 * 2 * n * D * (4 * D / h)
  bytes_mm = s * (n * D + 3 * D * D / h + 3 * n * D / h + 2 * r * num_heads / h * S * S
                  + D * D / h + n * D + 2 * (n * D + 4 * D * D / h + 4 * n * D / h))
  ew = 30 * n * D + 5 * r * S * S * num_heads / h
  block_kernels, other_kernels = gpt_kernel_counts()
  t_block = (block_kernels * dev.launch_overhead + flops_mm / dev.flops
             + (bytes_mm + 4 * s * ew) / dev.dram_bandwidth + ew / dev.flops
             + 2 * cost_lib.collective_time("allreduce", s * n * D, h, alpha, beta))
  per_stage = num_layers / p
  t_stage = per_stage * t_block
  t_logits = (_kernel(dev, 2 * n * D * vocab, s * (n * D + D * vocab + n * vocab))
              + (other_kernels - 1) * dev.launch_overhead)
  t_send = np.where(p > 1, alpha + s * n * D / beta, 0.0)
  time = (m + p - 1) * t_stage + m * t_logits + 2 * (p > 1) * (m + p - 2) * t_send
  weights = per_stage * s * (12 * D * D / h + 13 * D) + s * vocab * D
  peak = weights + s * m * n * (2 * D + vocab) + s * n * (4 * D / h + 3 * D)
  return ModelEstimate(time, peak)


@dataclasses.dataclass(frozen=True)
class GridResult:
  """A grid search: configurations ``(d, h, p, m)``, step times, peak memory (bytes)."""

  configs: np.ndarray       # (n, 4) ints
  time: np.ndarray          # (n,)
  peak_memory: np.ndarray   # (n,)

  def ranked(self) -> np.ndarray:
    """Indices of the configurations, fastest first."""
    return np.argsort(self.time, kind="stable")

  def best_per_budget(self, budgets: Sequence[float]) -> list[dict]:
    """For each memory budget (bytes per device): the fastest configuration that fits."""
    out = []
    for budget in budgets:
      ok = np.flatnonzero(self.peak_memory <= budget)
      if ok.size == 0:
        out.append({"budget": float(budget), "config": None, "time": None,
                    "peak_memory": None})
        continue
      i = ok[np.argmin(self.time[ok])]
      out.append({"budget": float(budget), "config": tuple(int(v) for v in self.configs[i]),
                  "time": float(self.time[i]), "peak_memory": float(self.peak_memory[i])})
    return out


def grid_search(model: str, world_size: int, topology: ir.Topology, *, batch: int,
                sizes: dict | None = None, max_microbatch_log2: int = 7,
                itemsize: int = 4, **model_kwargs) -> GridResult:
  """The vectorized grid search over every ``(d, h, p, m)`` of ``world_size``.

  Args:
    model: ``"mlp"`` (training step; ``model_kwargs``: ``num_layers``, ``hidden``) or
      ``"gpt"`` (inference; ``num_layers``, ``d_model``, ``num_heads``, ``seq_len``,
      ``vocab``).
    world_size: devices (a power of two, at most the topology's).
    topology: the modelled machine.
    batch: the global batch.
    max_microbatch_log2: microbatches ``2^1 .. 2^this`` when ``p > 1``.
    itemsize: bytes per value (2 for fp16).

  Configurations the model cannot run (``h`` not dividing the width or heads, a batch
  that does not split into ``d * m`` parts, ``p`` beyond the layers) are dropped.
  """
  if model not in ("mlp", "gpt"):
    raise ValueError(f"grid_search: model must be 'mlp' or 'gpt', got {model!r}")
  if not _is_power_of_two(world_size) or world_size > topology.num_devices:
    raise ValueError(f"grid_search: world_size must be a power of two <= the topology's "
                     f"{topology.num_devices} devices, got {world_size!r}")
  configs = np.array(dhp_configurations(world_size, max_microbatch_log2=max_microbatch_log2),
                     dtype=np.int64)
  d, h, p, m = configs.T
  layers = model_kwargs["num_layers"]
  width = model_kwargs["hidden"] if model == "mlp" else model_kwargs["num_heads"]
  ok = (batch % (d * m) == 0) & (layers % p == 0) & (width % h == 0)
  configs = configs[ok]
  d, h, p, m = configs.T
  fn = mlp_step_model if model == "mlp" else gpt_inference_model
  est = fn(d, h, p, m, batch=batch, topology=topology, itemsize=itemsize, **model_kwargs)
  return GridResult(configs, np.asarray(est.time, np.float64),
                    np.asarray(est.peak_memory, np.float64))


def simulate_configs(build, configs: Sequence[tuple[int, int, int, int]],
                     topology: ir.Topology, *, executors: int | None = None,
                     cost_model: cost_lib.CostModel | None = None) -> GridResult:
  """The exact path: ``build(d, h, p, m) -> Function`` simulated for each configuration."""
  cost_model = cost_model or cost_lib.CostModel(topology)
  times, peaks = [], []
  for d, h, p, m in configs:
    sim = simulate_lib.simulate(build(d, h, p, m), cost_model=cost_model,
                                executors=executors)
    times.append(sim.total_time)
    peaks.append(max(sim.peak_memory.values()))
  return GridResult(np.array(configs, np.int64).reshape(-1, 4), np.array(times),
                    np.array(peaks, np.float64))


def product_grid(**axes) -> list[dict]:
  """All combinations of the given axes, as dicts (a helper for sweeps)."""
  keys = list(axes)
  return [dict(zip(keys, values)) for values in itertools.product(*axes.values())]
