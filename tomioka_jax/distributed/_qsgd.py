"""QSGD: Communication-Efficient SGD via Gradient Quantization and Encoding.

Dan Alistarh, Demjan Grubic, Jerry Li, Ryota Tomioka, Milan Vojnovic (2017), arXiv:1610.02132.

Provides the stochastic quantizer ``Q_s`` of the paper's section 3 (per-bucket scales, 2-norm or
max-norm), the Elias coding of quantized vectors with an exact bit count, and quantized
all-reduce kernels (``quantized_mean``) that name an ``axis_name`` and so run unchanged under
``jax.shard_map`` and ``jax.pmap`` to average gradients across data-parallel workers.

The stochastic rounding draws its uniforms from a keyed counter hash (a 32-bit integer mixer
applied to ``i * k1 + k0``, with ``k0, k1`` from ``jax.random.bits(key, (2,))``). This is the
library's one random number generator of its own, kept because a benchmark shows it pays: it
costs a few integer operations per element instead of Threefry's twenty rounds, and XLA fuses
it into the rounding. On stock JAX 0.10 (2-core CPU, 2^22 values, 4-bit preset,
``benchmarks/qsgd.py``) quantize + dequantize runs at 0.27x the speed of a fused ``x * 2``
with the hash and at 0.028x with ``jax.random.uniform`` (~10x slower: XLA:CPU lowers the
Threefry hash as a loop that fuses with nothing). ``rng="threefry"`` switches to
``jax.random.uniform``'s numbers. Everything else in the library draws with ``jax.random``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from tomioka_jax import core

from tomioka_jax import core

__all__ = [
    "PRESETS",
    "Quantized",
    "QuantizedMean",
    "decode",
    "dequantize",
    "encode",
    "encoded_bits",
    "quantize",
    "quantized_mean",
    "quantized_tree_mean",
]

# The paper's experimental presets (section 5): b bits per coordinate on the wire, sign
# included, so s = 2^(b-1) - 1 levels; bucket sizes as in the paper.
PRESETS: dict[str, dict[str, int]] = {
    "2bit": {"num_levels": 1, "bucket_size": 128},
    "4bit": {"num_levels": 7, "bucket_size": 512},
    "8bit": {"num_levels": 127, "bucket_size": 8192},
}

_NORMS = ("l2", "max")
_RNGS = ("hash", "threefry")
_MODES = ("all_gather", "reduce_scatter", "shared_scale")
# Above 2^24 levels a float32 ratio s|v_i|/||v|| no longer resolves one level, and the
# rounding would stop being unbiased.
_MAX_LEVELS = 1 << 24


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["levels", "signs", "scales"],
                   meta_fields=["shape", "num_levels", "dtype"])
@dataclasses.dataclass(frozen=True)
class Quantized:
  """A stochastically quantized array: ``x ≈ scale · sign · level / num_levels`` per bucket.

  A pytree whose arrays are leaves and whose shape metadata is static, so it passes through
  ``jit``, ``vmap`` and collectives (a NamedTuple would turn ``shape`` into traced leaves).

  Attributes:
    levels: ``(num_buckets, bucket_size)`` integer levels in ``[0, num_levels]``, in the
      smallest unsigned dtype that holds ``num_levels`` (uint8, uint16 or uint32). The
      flattened input fills the buckets in order; the last bucket is padded with zeros.
    signs: ``(num_buckets, bucket_size)`` bool, True where the value is negative. Only the
      signs of nonzero levels carry information (:func:`decode` returns False elsewhere).
    scales: ``(num_buckets,)`` float32 bucket norms (2-norm or max-norm), rounded up to a
      float32 so that ``|v_i| <= scale`` holds exactly for float64 inputs too.
    shape: the original array's shape.
    num_levels: ``s``, the number of quantization levels.
    dtype: the original array's dtype, which :func:`dequantize` returns.
  """

  levels: jax.Array
  signs: jax.Array
  scales: jax.Array
  shape: tuple[int, ...]
  num_levels: int
  dtype: Any

  @property
  def size(self) -> int:
    return math.prod(self.shape)

  @property
  def bucket_size(self) -> int:
    return self.levels.shape[-1]


@functools.partial(jax.tree_util.register_dataclass, data_fields=["mean"],
                   meta_fields=["payload_bits"])
@dataclasses.dataclass(frozen=True)
class QuantizedMean:
  """The output of :func:`quantized_mean`: a pytree whose only leaf is ``mean``.

  Attributes:
    mean: the unbiased estimate of the mean over the axis, with the input's shape and dtype
      (a pytree for :func:`quantized_tree_mean`).
    payload_bits: the size in bits of the quantized messages this device hands to the
      collectives (levels at their packed wire width plus 32 bits per scale; see
      :func:`quantized_mean` for each mode). A static Python int, since it depends only on
      shapes; it stays an int when the result leaves ``jit``.
  """

  mean: Any
  payload_bits: int


# ---------------------------------------------------------------------------------------------
# Argument checks.


def _check_num_levels(num_levels: Any) -> int:
  if (isinstance(num_levels, bool) or not isinstance(num_levels, (int, np.integer))
      or not 1 <= num_levels <= _MAX_LEVELS):
    raise ValueError(f"num_levels must be an integer in [1, 2**24], got {num_levels!r}")
  return int(num_levels)


def _check_bucket_size(bucket_size: Any) -> int | None:
  if bucket_size is None:
    return None
  if (isinstance(bucket_size, bool) or not isinstance(bucket_size, (int, np.integer))
      or bucket_size < 1):
    raise ValueError(f"bucket_size must be None or an integer >= 1, got {bucket_size!r}")
  return int(bucket_size)


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
  if value not in allowed:
    raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
  return value


def _check_float(x: jax.Array) -> None:
  """A floating dtype always; finite values when ``x`` is concrete (eager calls).

  A NaN or inf makes its bucket's scale NaN/inf, so the whole bucket (the whole message with
  ``bucket_size=None``) would dequantize to NaN. Eagerly that is an error; under ``jit`` the
  values cannot be inspected and the NaN propagates to the bucket (and to the mean), where the
  training loop's loss shows it.
  """
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"x must have a floating dtype, got {x.dtype}; cast integer gradients "
                     "with x.astype(jnp.float32) first")
  if core.is_concrete(x):
    bad = ~np.isfinite(np.asarray(x))
    if bad.any():
      first = tuple(int(i) for i in np.argwhere(bad)[0])
      raise ValueError(
          f"x must be finite: it has {int(bad.sum())} NaN/inf values, the first at index "
          f"{first}; quantizing it would make its whole bucket NaN (under jit it does)")


# ---------------------------------------------------------------------------------------------
# Quantization.


def _level_dtype(num_levels: int) -> Any:
  for dtype in (jnp.uint8, jnp.uint16, jnp.uint32):
    if num_levels <= jnp.iinfo(dtype).max:
      return dtype
  raise AssertionError(num_levels)  # unreachable: num_levels <= 2**24 was checked


def _compute_dtype(dtype: Any) -> Any:
  """float64 stays float64; float32 and narrower floats are quantized in float32."""
  return jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32


def _bucket_layout(size: int, bucket_size: int | None) -> tuple[int, int]:
  """(bucket size d, number of buckets); a bucket never exceeds the array."""
  d = max(1, size if bucket_size is None else min(bucket_size, size))
  return d, -(-size // d)


def as_buckets(x: jax.Array, bucket_size: int | None) -> jax.Array:
  """Flattens ``x`` into ``(num_buckets, d)`` rows in its compute dtype, zero-padding the end."""
  d, nb = _bucket_layout(x.size, bucket_size)
  flat = x.reshape(-1).astype(_compute_dtype(x.dtype))
  return jnp.pad(flat, (0, nb * d - x.size)).reshape(nb, d)


def _bucket_scales(v: jax.Array, norm: str) -> jax.Array:
  """Per-bucket 2-norm or max-norm as float32, rounded up when ``v`` is float64."""
  if norm == "l2":
    scale = jnp.sqrt(jnp.sum(v * v, axis=-1))
  else:
    scale = jnp.max(jnp.abs(v), axis=-1)
  scale32 = scale.astype(jnp.float32)
  if v.dtype == jnp.float64:
    # Rounding up keeps s|v_i|/scale <= s, so the stored float32 scale is the one the
    # rounding probabilities are computed with: unbiased with respect to what is sent.
    up = jnp.nextafter(scale32, jnp.float32(jnp.inf))
    scale32 = jnp.where(scale32.astype(jnp.float64) < scale, up, scale32)
  return scale32


def _mix32(h: jax.Array) -> jax.Array:
  """A bijective 32-bit avalanche mixer (xorshift-multiply, 'lowbias32' constants)."""
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x7FEB352D)
  h = h ^ (h >> 15)
  h = h * jnp.uint32(0x846CA68B)
  return h ^ (h >> 16)


def _uniform(key: jax.Array, shape: tuple[int, int], dtype: Any, rng: str) -> jax.Array:
  """Uniforms in [0, 1) for the stochastic rounding, one per element of ``shape``."""
  if rng == "threefry":
    return core.flat_uniform(key, shape, dtype)  # jax.random.uniform's numbers, short compile
  # Counter-based: element i gets mix(i * k1 + k0), with k0 and an odd k1 drawn from the key,
  # so keys from fold_in/split (one per device) walk unrelated progressions through the mixer.
  # The counter is 32-bit: buckets beyond 2^32 elements would reuse uniforms.
  seed = jax.random.bits(key, (2,), jnp.uint32)
  counter = (lax.broadcasted_iota(jnp.uint32, shape, 0) * jnp.uint32(shape[1])
             + lax.broadcasted_iota(jnp.uint32, shape, 1))
  h = _mix32(counter * (seed[1] | jnp.uint32(1)) + seed[0])
  if dtype == jnp.float64:
    return h.astype(jnp.float64) * (2.0**-32)
  return (h >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)


def _stochastic_levels(key: jax.Array, v: jax.Array, scales: jax.Array, num_levels: int,
                       rng: str) -> jax.Array:
  """Levels ``l + Bernoulli(r - l)`` with ``r = s|v_i|/scale``, ``l = floor(r)`` (section 3).

  ``E[level] = r`` up to the resolution of the uniforms (2^-24 in float32, 2^-32 in float64),
  hence ``E[scale · level / s] = |v_i|``.
  """
  s = num_levels
  scales = scales.astype(v.dtype)
  inv = jnp.where(scales > 0, s / jnp.where(scales > 0, scales, 1), 0)
  r = jnp.abs(v) * inv[:, None]
  r = jnp.where(r < s, r, s)  # |v_i| * (s / scale) can round a hair above s
  low = jnp.floor(r)
  u = _uniform(key, v.shape, v.dtype, rng)
  return (low + (u < r - low).astype(v.dtype)).astype(_level_dtype(s))


def quantize(key: jax.Array, x: jax.typing.ArrayLike, *, num_levels: int,
             bucket_size: int | None = None, norm: str = "l2", rng: str = "hash") -> Quantized:
  r"""Stochastically quantizes ``x`` to ``num_levels`` levels per bucket (QSGD, section 3).

  Within each bucket ``v`` of ``d`` consecutive values of the flattened ``x``,

  .. math::

    Q_s(v_i) = \|v\| \operatorname{sgn}(v_i)\, \xi_i(v, s), \quad
    \xi_i = \begin{cases} (l+1)/s & \text{w.p. } s|v_i|/\|v\| - l \\ l/s & \text{otherwise}
    \end{cases}, \quad l = \lfloor s|v_i|/\|v\| \rfloor .

  Lemma 3.1: :math:`E[Q_s(v)] = v`, :math:`E\|Q_s(v) - v\|^2 \le \min(d/s^2, \sqrt d/s)\|v\|^2`
  and :math:`E\|Q_s(v)\|_0 \le s(s + \sqrt d)` (for the 2-norm; the max-norm, the paper's
  practical variant, has smaller variance and more nonzeros).

  Args:
    key: a ``jax.random`` key. Distinct keys give independent roundings.
    x: a floating array of any shape.
    num_levels: ``s >= 1``, the number of levels (1 is ternary, 127 fits int8 with the sign).
    bucket_size: ``d``, values per bucket, each with its own scale; None (the paper's
      unbucketed quantizer) uses one bucket. Clamped to ``x.size``.
    norm: ``"l2"`` (the paper) or ``"max"`` (its practical variant).
    rng: ``"hash"`` (a keyed counter hash, fast) or ``"threefry"`` (``jax.random.uniform``).

  Returns:
    A :class:`Quantized` with ``ceil(x.size / d)`` buckets.

  Example:
    >>> q = quantize(jax.random.key(0), jnp.arange(6.0) - 2.5, num_levels=4, bucket_size=4)
    >>> q.levels.shape, q.levels.dtype, q.scales.shape
    ((2, 4), dtype('uint8'), (2,))

  Raises:
    ValueError: bad arguments, or a concrete ``x`` holds NaN or inf (under ``jit`` a NaN makes
      its bucket NaN).

  References:
    Alistarh et al. (2017), QSGD, arXiv:1610.02132, section 3 and Lemma 3.1.
  """
  x = jnp.asarray(x)
  _check_float(x)  # outside the jit below, so that concrete values are checked
  return _quantize(key, x, num_levels=num_levels, bucket_size=bucket_size, norm=norm, rng=rng)


@functools.partial(jax.jit, static_argnames=("num_levels", "bucket_size", "norm", "rng"))
def _quantize(key: jax.Array, x: jax.Array, *, num_levels: int, bucket_size: int | None,
              norm: str, rng: str) -> Quantized:
  num_levels = _check_num_levels(num_levels)
  bucket_size = _check_bucket_size(bucket_size)
  _check_choice("norm", norm, _NORMS)
  _check_choice("rng", rng, _RNGS)
  v = as_buckets(x, bucket_size)
  scales = _bucket_scales(v, norm)
  levels = _stochastic_levels(key, v, scales, num_levels, rng)
  # Not masked by levels > 0: a mask would make XLA recompute the whole rounding in a second
  # fusion. Zero levels ignore their sign everywhere (dequantize, encode).
  signs = v < 0
  return Quantized(levels=levels, signs=signs, scales=scales, shape=tuple(x.shape),
                   num_levels=num_levels, dtype=x.dtype)


@jax.jit
def dequantize(q: Quantized) -> jax.Array:
  """Reconstructs ``scale · sign · level / s`` with the original shape and dtype.

  Args:
    q: the output of :func:`quantize` (or :func:`decode`).

  Returns:
    An array of shape ``q.shape`` and dtype ``q.dtype``; an unbiased estimate of the array
    that was quantized.

  Example:
    >>> x = jnp.array([0.5, -1.0, 2.0])
    >>> dequantize(quantize(jax.random.key(0), x, num_levels=8)).shape
    (3,)
  """
  ctype = _compute_dtype(q.dtype)
  step = q.scales.astype(ctype) / q.num_levels
  magnitude = q.levels.astype(ctype) * step[:, None]
  values = jnp.where(q.signs, -magnitude, magnitude)
  return values.reshape(-1)[:q.size].reshape(q.shape).astype(q.dtype)


# ---------------------------------------------------------------------------------------------
# Elias coding (section 3), host side.


def _bit_length(k: np.ndarray) -> np.ndarray:
  """Number of binary digits of positive integers below 2^53, exactly (frexp is exact)."""
  return np.frexp(k.astype(np.float64))[1].astype(np.int64)


def _elias_groups(k: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
  """Recursive Elias (omega) code of each ``k >= 1`` as (value, width) groups, innermost first.

  Elias(k) writes the binary of k, prefixed recursively by the code of its length minus one,
  and ends with a 0 bit: ``|Elias(k)| = 1 + log k + log log k + ...`` (section 3).
  """
  groups = []
  g = k.astype(np.int64)
  while True:
    active = g > 1
    if not active.any():
      return groups
    width = _bit_length(g)
    groups.append((np.where(active, g, 0), np.where(active, width, 0)))
    g = np.where(active, width - 1, 1)


def _elias_fields(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(values, widths), shape ``(len(k), depth + 1)``, in write order: groups, then the 0 bit."""
  groups = _elias_groups(k)[::-1]
  values = [g for g, _ in groups] + [np.zeros(len(k), np.int64)]
  widths = [w for _, w in groups] + [np.ones(len(k), np.int64)]
  return np.stack(values, axis=1), np.stack(widths, axis=1)


def _elias_length(k: np.ndarray) -> np.ndarray:
  return 1 + sum((w for _, w in _elias_groups(k)), np.zeros(len(k), np.int64))


def _nonzeros(q: Quantized) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(gaps, signs, levels) of the nonzero levels in order, and the float32 scales."""
  levels = np.asarray(q.levels).reshape(-1)
  where = np.flatnonzero(levels)
  gaps = np.diff(where, prepend=-1)  # first gap is index + 1, so every gap is >= 1
  signs = np.asarray(q.signs).reshape(-1)[where].astype(np.int64)
  return gaps, signs, levels[where].astype(np.int64), np.asarray(q.scales, np.float32)


def encoded_bits(q: Quantized) -> int:
  """The exact length in bits of :func:`encode`'s stream before byte padding.

  32 bits per bucket scale, then for each nonzero ``|Elias(gap)| + 1 + |Elias(level)|``.

  Args:
    q: a :class:`Quantized`.

  Returns:
    The number of bits, a Python int (Theorem 3.2 bounds its expectation; with one bucket and
    ``s = sqrt(n)``, the paper gives ``2.8 n + 32``).
  """
  gaps, signs, levels, scales = _nonzeros(q)
  return int(32 * len(scales) + _elias_length(gaps).sum() + len(signs)
             + _elias_length(levels).sum())


def encode(q: Quantized) -> bytes:
  """Elias-codes a quantized array (section 3) into bytes.

  The stream is the bucket scales as big-endian float32 (32 bits each), then for each nonzero
  level in flattened order: Elias(gap to the previous nonzero, the first counted from -1), one
  sign bit (1 = negative), Elias(level). The last byte is padded with 1 bits, which cannot
  complete an Elias code, so the decoder needs no count of nonzeros.

  Args:
    q: a :class:`Quantized` (its arrays are brought to the host).

  Returns:
    ``ceil(encoded_bits(q) / 8)`` bytes.

  Example:
    >>> q = quantize(jax.random.key(0), jnp.ones(100), num_levels=10)
    >>> len(encode(q)) == -(-encoded_bits(q) // 8)
    True
  """
  gaps, signs, levels, scales = _nonzeros(q)
  gap_values, gap_widths = _elias_fields(gaps)
  level_values, level_widths = _elias_fields(levels)
  values = np.concatenate(
      [scales.view(np.uint32).astype(np.int64),
       np.concatenate([gap_values, signs[:, None], level_values], axis=1).reshape(-1)])
  widths = np.concatenate(
      [np.full(len(scales), 32, np.int64),
       np.concatenate([gap_widths, np.ones((len(signs), 1), np.int64), level_widths],
                      axis=1).reshape(-1)])
  # Write every field's bits at once: field f covers bits [start_f, start_f + width_f).
  total = int(widths.sum())
  field = np.repeat(np.arange(len(widths)), widths)
  start = np.cumsum(widths) - widths
  shift = widths[field] - 1 - (np.arange(total) - start[field])
  bits = ((values[field] >> shift) & 1).astype(np.uint8)
  padding = np.ones(-total % 8, np.uint8)
  return np.packbits(np.concatenate([bits, padding])).tobytes()


def _windows(data: bytes, num_positions: int) -> np.ndarray:
  """uint64 holding bits ``[p, p + 64)`` of ``data`` (zero beyond its end) for each p."""
  raw = np.frombuffer(data, np.uint8)
  bytes_ = np.zeros(num_positions // 8 + 18, np.uint64)
  bytes_[:len(raw)] = raw
  words = np.zeros(len(bytes_) - 8, np.uint64)
  for k in range(8):
    words |= bytes_[k:k + len(words)] << np.uint64(56 - 8 * k)
  p = np.arange(num_positions)
  offset = (p & 7).astype(np.uint64)
  nxt = bytes_[(p >> 3) + 8]
  return (words[p >> 3] << offset) | (nxt >> (np.uint64(8) - offset))


def _parse_elias_everywhere(windows: np.ndarray, total: int) -> tuple[np.ndarray, np.ndarray]:
  """Decodes an Elias code starting at every bit position at once.

  Returns (value, end) per position; ``end = -1`` where no complete code starts there within
  the first ``total`` bits (or its value would exceed 2^40, far above any valid gap or level).
  """
  num = len(windows) - 64
  pos = np.arange(num)
  value = np.ones(num, np.int64)
  end = np.full(num, -1, np.int64)
  live = np.ones(num, bool)
  for _ in range(8):  # codes of values below 2^40 have at most 5 groups
    safe = np.minimum(pos, len(windows) - 1)
    head = (windows[safe] >> np.uint64(63)).astype(bool)
    stop = live & ~head & (pos < total)
    end[stop] = pos[stop] + 1
    width = value + 1
    live &= head & (width <= 41) & (pos + width <= total)
    if not live.any():
      break
    shift = (64 - np.where(live, width, 1)).astype(np.uint64)
    value = np.where(live, (windows[safe] >> shift).astype(np.int64), value)
    pos = np.where(live, pos + width, pos)
  return value, end


def decode(data: bytes, *, shape: tuple[int, ...], num_levels: int,
           bucket_size: int | None = None, dtype: Any = jnp.float32) -> Quantized:
  """Decodes :func:`encode`'s bytes back into the :class:`Quantized` that was encoded.

  Levels and scales come back bit for bit, and so do the signs of nonzero levels (the only
  ones encoded; the others come back False), hence ``dequantize`` of the result is identical.

  Vectorized: an Elias code is parsed from every bit position at once, after which the
  entries are chained by a single pass over precomputed next-entry offsets.

  Args:
    data: the bytes from :func:`encode`.
    shape: the original array's shape.
    num_levels: ``s`` used to quantize.
    bucket_size: the bucket size used to quantize (None for one bucket).
    dtype: the original array's dtype.

  Returns:
    The :class:`Quantized` that was encoded.

  Raises:
    ValueError: if the metadata does not match the data (wrong number of buckets, a position
      beyond the array, a level above ``num_levels``) or the data is truncated or corrupt.
  """
  num_levels = _check_num_levels(num_levels)
  bucket_size = _check_bucket_size(bucket_size)
  shape = tuple(int(n) for n in shape)
  size = math.prod(shape)
  d, nb = _bucket_layout(size, bucket_size)
  meta = f"shape={shape}, num_levels={num_levels}, bucket_size={bucket_size}"
  total = 8 * len(data)
  if total < 32 * nb:
    raise ValueError(f"data has {total} bits, fewer than the {32 * nb} bits of the {nb} bucket "
                     f"scales that {meta} implies: the metadata does not match the data")
  windows = _windows(data, total + 64)
  heads = 32 * np.arange(nb)
  scales = (windows[heads] >> np.uint64(32)).astype(np.uint32).view(np.float32)

  value, end = _parse_elias_everywhere(windows, total)
  # An entry starting at p: Elias(gap) ends at e1, the sign bit sits at e1, Elias(level) runs
  # from e1 + 1 to e2 = the next entry's start.
  value, end = np.append(value, 1), np.append(end, -1)  # index `total` = no code
  e1 = end[:total]
  level_at = np.where(e1 >= 0, np.minimum(e1 + 1, total), total)
  next_entry = np.where(e1 >= 0, end[level_at], -1).tolist()
  starts = []
  p = 32 * nb
  while p < total and next_entry[p] >= 0:
    starts.append(p)
    p = next_entry[p]
  tail = np.unpackbits(np.frombuffer(data, np.uint8))[p:]
  if len(tail) >= 8 or not tail.all():
    raise ValueError(f"data is corrupt or does not match {meta}: no valid entry at bit {p} "
                     f"of {total}")
  starts = np.asarray(starts, np.int64)
  e1 = end[starts]
  positions = np.cumsum(value[starts]) - 1
  levels = value[e1 + 1]
  signs = ((windows[np.minimum(e1, total)] >> np.uint64(63)) & np.uint64(1)).astype(bool)
  if len(starts) and (positions[-1] >= size or levels.max() > num_levels):
    raise ValueError(f"data does not match {meta}: a nonzero at flat position "
                     f"{positions[-1]} (size {size}) or a level {levels.max()} > num_levels")
  flat_levels = np.zeros(nb * d, _level_dtype(num_levels))
  flat_signs = np.zeros(nb * d, bool)
  flat_levels[positions] = levels
  flat_signs[positions] = signs
  return Quantized(levels=jnp.asarray(flat_levels.reshape(nb, d)),
                   signs=jnp.asarray(flat_signs.reshape(nb, d)),
                   scales=jnp.asarray(scales), shape=shape, num_levels=num_levels,
                   dtype=jnp.dtype(dtype))


# ---------------------------------------------------------------------------------------------
# Quantized collectives.


def _wire_width(num_levels: int) -> int:
  """Bits per coordinate on the wire: codes in [0, 2s] (sign folded in), rounded up to a
  width that packs whole into bytes."""
  needed = (2 * num_levels).bit_length()
  return next(w for w in (2, 4, 8, 16, 32) if w >= needed)


def _to_wire(q: Quantized) -> tuple[jax.Array, jax.Array]:
  """Packs signed levels as ``s ± level`` codes, ``8 / w`` per byte when ``w < 8``."""
  s, w = q.num_levels, _wire_width(q.num_levels)
  levels = q.levels.reshape(-1).astype(jnp.uint32)
  codes = jnp.where(q.signs.reshape(-1), s - levels, s + levels)
  if w >= 8:
    return codes.astype({8: jnp.uint8, 16: jnp.uint16, 32: jnp.uint32}[w]), q.scales
  per_byte = 8 // w
  codes = jnp.pad(codes, (0, -codes.size % per_byte)).reshape(-1, per_byte)
  shifts = jnp.arange(per_byte, dtype=jnp.uint32) * jnp.uint32(w)
  packed = jnp.sum(codes << shifts[None, :], axis=1, dtype=jnp.uint32)
  return packed.astype(jnp.uint8), q.scales


def _from_wire(wire: tuple[jax.Array, jax.Array], like: Quantized) -> Quantized:
  """Inverse of :func:`_to_wire`; ``like`` supplies shapes and metadata."""
  packed, scales = wire
  s, w = like.num_levels, _wire_width(like.num_levels)
  if w < 8:
    per_byte = 8 // w
    shifts = jnp.arange(per_byte, dtype=jnp.uint32) * jnp.uint32(w)
    codes = (packed.astype(jnp.uint32)[:, None] >> shifts[None, :]) & jnp.uint32((1 << w) - 1)
    codes = codes.reshape(-1)[:like.levels.size]
  else:
    codes = packed.astype(jnp.uint32)
  negative = codes < s
  levels = jnp.where(negative, s - codes, codes - s).astype(like.levels.dtype)
  return dataclasses.replace(like, levels=levels.reshape(like.levels.shape),
                             signs=negative.reshape(like.levels.shape), scales=scales)


def wire_bits(q: Quantized) -> int:
  """Bits of :func:`_to_wire`'s output: packed codes plus 32 per scale."""
  w = _wire_width(q.num_levels)
  per_byte = max(1, 8 // w)
  return -(-q.levels.size // per_byte) * per_byte * w + 32 * q.scales.size


def _sum_dtype(bound: int) -> Any:
  for dtype in (jnp.int8, jnp.int16, jnp.int32):
    if bound <= jnp.iinfo(dtype).max:
      return dtype
  raise ValueError(f"num_levels times the axis size must be below 2**31 for the integer psum "
                   f"of mode='shared_scale', got {bound}")


def _mean_of_gathered(wire: tuple[jax.Array, jax.Array], like: Quantized) -> jax.Array:
  """Dequantizes a stack of wire payloads (leading axis: senders) and averages them."""
  values = jax.vmap(lambda w: dequantize(_from_wire(w, like)))(wire)
  return jnp.mean(values, axis=0)


def _all_gather_mean(key, x, axis_name, num_levels, bucket_size, norm, rng):
  q = quantize(key, x, num_levels=num_levels, bucket_size=bucket_size, norm=norm, rng=rng)
  wire = lax.all_gather(_to_wire(q), axis_name)
  return _mean_of_gathered(wire, q), wire_bits(q)


def _reduce_scatter_mean(key, x, axis_name, num_levels, bucket_size, norm, rng):
  workers = lax.axis_size(axis_name)
  # Chunk j (bucket-aligned, m values) is reduced by worker j; without a bucket size, each
  # chunk is one bucket.
  d = -(-x.size // workers) if bucket_size is None else min(bucket_size, x.size)
  m = -(-x.size // (workers * d)) * d
  flat = jnp.pad(x.reshape(-1), (0, workers * m - x.size)).reshape(workers, m)
  key_scatter, key_gather = jax.random.split(key)
  opts = dict(num_levels=num_levels, bucket_size=d, norm=norm, rng=rng)
  # Phase 1: quantize every chunk, send chunk j to worker j, which averages what it receives.
  q_rows = jax.vmap(lambda k, row: quantize(k, row, **opts))(
      jax.random.split(key_scatter, workers), flat)
  wire = jax.vmap(_to_wire)(q_rows)
  received = lax.all_to_all(wire, axis_name, 0, 0)
  like = jax.tree.map(lambda a: a[0], q_rows)
  chunk_mean = _mean_of_gathered(received, like)
  # Phase 2: re-quantize the reduced chunk (fresh randomness: unbiased given phase 1) and
  # all-gather the chunks.
  q_chunk = quantize(key_gather, chunk_mean, **opts)
  chunks = jax.vmap(lambda w: dequantize(_from_wire(w, q_chunk)))(
      lax.all_gather(_to_wire(q_chunk), axis_name))
  mean = chunks.reshape(-1)[:x.size].reshape(x.shape)
  bits = (workers - 1) * wire_bits(like) + wire_bits(q_chunk)
  return mean, bits


def _shared_scale_mean(key, x, axis_name, num_levels, bucket_size, norm, rng):
  workers = lax.axis_size(axis_name)
  sum_dtype = _sum_dtype(workers * num_levels)
  v = as_buckets(x, bucket_size)
  # One scale per bucket for all workers, so the integer levels of different workers share a
  # unit and can be summed exactly.
  scales = lax.pmax(_bucket_scales(v, norm), axis_name)
  levels = _stochastic_levels(key, v, scales, num_levels, rng).astype(sum_dtype)
  total = lax.psum(jnp.where(v < 0, -levels, levels), axis_name)
  step = scales.astype(v.dtype) / (num_levels * workers)
  mean = (total.astype(v.dtype) * step[:, None]).reshape(-1)[:x.size]
  bits = v.size * jnp.iinfo(sum_dtype).bits + 32 * scales.size
  return mean.reshape(x.shape), bits


_MEANS = {"all_gather": _all_gather_mean, "reduce_scatter": _reduce_scatter_mean,
          "shared_scale": _shared_scale_mean}


def quantized_mean(key: jax.Array, x: jax.typing.ArrayLike, axis_name: Any, *,
                   num_levels: int, bucket_size: int | None = None, mode: str = "all_gather",
                   norm: str = "l2", rng: str = "hash") -> QuantizedMean:
  r"""Unbiased estimate of ``mean_i x_i`` over ``axis_name`` from QSGD-quantized messages.

  Call it per device inside ``jax.shard_map`` or ``jax.pmap`` (it only names the axis). Each
  device draws its randomness from ``fold_in(key, axis_index(axis_name))``, so pass the same
  ``key`` on every device and the workers' roundings are independent.

  Modes (``N`` workers, ``n`` values, ``w`` wire bits per value, 32-bit bucket scales):

  * ``"all_gather"`` (the paper's estimator): every worker quantizes its ``x_i``, all-gathers
    the packed payloads, dequantizes and averages. ``payload_bits`` = its one message,
    ``n w + 32 n / d``; every worker receives ``N - 1`` of them.
  * ``"reduce_scatter"``: every worker quantizes its ``x_i`` in ``N`` bucket-aligned chunks and
    sends chunk ``j`` to worker ``j`` (all-to-all), which averages the ``N`` chunks it gets,
    re-quantizes the average with fresh randomness and all-gathers it. ``payload_bits`` = the
    ``N - 1`` chunks sent in phase 1 plus the re-quantized chunk of phase 2. Unbiased by the
    tower rule, with the variance of two quantizations.
  * ``"shared_scale"``: the bucket scales are ``pmax``-ed so that all workers share one unit,
    then the signed integer levels are ``psum``-ed exactly in the narrowest integer type that
    holds ``N s``. ``payload_bits`` = the integers plus the scales. The shared scale is at least
    each worker's own norm, so the variance is that of :func:`quantize` with that larger norm.

  Args:
    key: a ``jax.random`` key, the same on every device.
    x: this device's floating array (any shape, the same on every device).
    axis_name: the mapped axis to average over.
    num_levels: ``s``; see :data:`PRESETS` for the paper's settings.
    bucket_size: values per scale (None: one bucket per message).
    mode: ``"all_gather"``, ``"reduce_scatter"`` or ``"shared_scale"``.
    norm: ``"l2"`` or ``"max"``.
    rng: ``"hash"`` or ``"threefry"``, as in :func:`quantize`.

  Returns:
    :class:`QuantizedMean`: the estimate (same on every device, shape and dtype of ``x``) and
    this device's payload bits.

  Example:
    >>> mesh = jax.make_mesh((jax.device_count(),), ("data",))
    >>> xs = jax.device_put(jnp.ones((jax.device_count(), 5)),
    ...                     jax.NamedSharding(mesh, jax.P("data")))
    >>> f = jax.shard_map(lambda x: quantized_mean(jax.random.key(0), x[0], "data",
    ...                                            num_levels=7).mean[None],
    ...                   mesh=mesh, in_specs=jax.P("data"), out_specs=jax.P("data"))
    >>> f(xs).shape[1]
    5

  References:
    Alistarh et al. (2017), QSGD, arXiv:1610.02132, sections 3 and 5.
  """
  num_levels = _check_num_levels(num_levels)
  bucket_size = _check_bucket_size(bucket_size)
  _check_choice("mode", mode, _MODES)
  _check_choice("norm", norm, _NORMS)
  _check_choice("rng", rng, _RNGS)
  x = jnp.asarray(x)
  _check_float(x)
  device_key = jax.random.fold_in(key, lax.axis_index(axis_name))
  mean, bits = _MEANS[mode](device_key, x, axis_name, num_levels, bucket_size, norm, rng)
  return QuantizedMean(mean=mean.astype(x.dtype), payload_bits=int(bits))


def quantized_tree_mean(key: jax.Array, tree: Any, axis_name: Any, **kwargs: Any
                        ) -> QuantizedMean:
  """:func:`quantized_mean` of a pytree (a gradient), flattened into one message.

  All leaves are concatenated (in their common promoted dtype) so one set of collectives
  serves the whole pytree; buckets may straddle leaves, as in the paper's flat gradient.

  Args:
    key: a ``jax.random`` key, the same on every device.
    tree: this device's pytree of floating arrays.
    axis_name: the mapped axis to average over.
    **kwargs: ``num_levels``, ``bucket_size``, ``mode``, ``norm``, ``rng`` of
      :func:`quantized_mean`.

  Returns:
    :class:`QuantizedMean` whose ``mean`` is a pytree like ``tree``.

  Raises:
    ValueError: a concrete leaf holds NaN or inf (under ``jit`` it propagates to its bucket).

  In a training step, the gradient reduction of :func:`tomioka_jax.core.make_shard_map_train_step`
  (``reduce_gradients(key, grads, axis_name) -> grads``) returns the ``mean``; the step
  rejects the :class:`QuantizedMean` itself with a TypeError. The same function runs under
  ``jax.pmap(..., axis_name="data")``.

  Example:
    >>> import optax
    >>> from flax import nnx
    >>> from tomioka_jax import core
    >>> def reduce_gradients(key, grads, axis_name):
    ...   return quantized_tree_mean(key, grads, axis_name, num_levels=15,
    ...                              bucket_size=512).mean
    >>> model = core.MLP(64, (32,), 10, rngs=nnx.Rngs(0))
    >>> graphdef, state = core.create_train_state(model, optax.sgd(0.1), jax.random.key(0))
    >>> mesh = core.data_mesh()
    >>> step = core.make_shard_map_train_step(graphdef, core.cross_entropy_loss,
    ...                                       optax.sgd(0.1), mesh,
    ...                                       reduce_gradients=reduce_gradients)
    >>> batch = {"x": jnp.ones((64, 64)), "y": jnp.zeros(64, jnp.int32)}
    >>> state, metrics = step(core.replicate(state, mesh), core.shard_batch(batch, mesh))
    >>> int(state.step)
    1
  """
  flat, unravel = ravel_pytree(tree)
  result = quantized_mean(key, flat, axis_name, **kwargs)
  return QuantizedMean(mean=unravel(result.mean), payload_bits=result.payload_bits)
