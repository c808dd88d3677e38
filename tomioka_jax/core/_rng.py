"""Threefry draws that fuse with their consumers on XLA:CPU, bit for bit ``jax.random``'s.

:func:`normal` and :func:`uniform` return exactly ``jax.random.normal`` / ``jax.random.uniform``
for the same key, shape and dtype (float32, float64), but on CPU they write the Threefry-2x32
hash out as array operations, so XLA fuses the hash with the transform (``erfinv`` for normals)
and with whatever consumes the draws, instead of running JAX's CPU lowering of the hash as a
loop over whole bit arrays. Float64 normals cost about half as much this way. Keys other than
a single threefry key, non-partitionable threefry, other backends and very large draws fall
back to ``jax.random`` itself.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _threefry2x32(k1: jax.Array, k2: jax.Array, x1: jax.Array,
                  x2: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The Threefry-2x32 block cipher (20 rounds; Salmon et al. 2011), written out as array ops.

  The same function as JAX's ``threefry2x32`` primitive, whose CPU lowering runs its five
  4-round blocks as a loop over whole arrays (each block reads and writes both (N,) uint32
  arrays); written out, XLA fuses the hash into the elementwise code that consumes the bits.
  """
  def rotl(x, r):
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))

  ks = (k1, k2, k1 ^ k2 ^ np.uint32(0x1BD11BDA))
  x1, x2 = x1 + ks[0], x2 + ks[1]
  for block in range(5):
    for r in _THREEFRY_ROTATIONS[block % 2]:
      x1 = x1 + x2
      x2 = x1 ^ rotl(x2, r)
    x1 = x1 + ks[(block + 1) % 3]
    x2 = x2 + ks[(block + 2) % 3] + np.uint32(block + 1)
  return x1, x2


def _fusable_threefry(key: jax.Array, size: int) -> bool:
  """Whether :func:`normal` may hash itself: a single threefry key (typed or raw),
  partitionable threefry bits, fewer than 2^31 draws, on CPU (elsewhere JAX's own lowering)."""
  if not jax.config.jax_threefry_partitionable or size >= 2**31 or jax.default_backend() != "cpu":
    return False
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    return key.shape == () and str(jax.random.key_impl(key)) == "threefry2x32"
  return (key.shape == (2,) and key.dtype == jnp.uint32
          and jax.config.jax_default_prng_impl == "threefry2x32")


_DRAW_BLOCKS = 4  # draws of at least _DRAW_BLOCKS * 1024 numbers are made in this many blocks


def _unit_uniform(data: jax.Array, index: jax.Array, dtype) -> jax.Array:
  """JAX's uniform on [0, 1) for the flat indices ``index`` of a draw with threefry key ``data``.

  The partitionable threefry bits of the flat index (``threefry2x32(key, (0, i))``; 64 bits as
  ``hi << 32 | lo`` in float64, ``hi ^ lo`` in float32), the top mantissa bits with exponent 0,
  minus 1.
  """
  hi, lo = _threefry2x32(data[0], data[1], jnp.zeros_like(index), index)
  finfo = jnp.finfo(dtype)
  if dtype == jnp.float64:
    uint, one = jnp.uint64, np.uint64(0x3FF0000000000000)
    bits = (hi.astype(uint) << np.uint64(32)) | lo.astype(uint)
  else:
    uint, one = jnp.uint32, np.uint32(0x3F800000)
    bits = hi ^ lo
  mantissa = (bits >> np.array(finfo.bits - finfo.nmant, uint)) | one
  return jax.lax.bitcast_convert_type(mantissa, dtype) - np.array(1.0, dtype)


def _hashed_draws(key: jax.Array, shape: tuple[int, ...], dtype, transform) -> jax.Array | None:
  """``transform(u)`` of JAX's uniform bits of ``(key, shape, dtype)``, hashed in place.

  ``None`` where :func:`_fusable_threefry` says no (then the caller uses ``jax.random``). The
  numbers are made block by block in a loop, each block one fusion (hash, ``transform``, store):
  the loop keeps them materialised once. Without it XLA copies the cheap integer hash (and
  ``erfinv``'s polynomial) into every fusion that reads the draws -- three hashes and two
  ``erfinv`` for the wrapped normal, four of each for the Riemannian radius.
  """
  dtype = jnp.dtype(dtype)
  size = math.prod(shape)
  if dtype not in (jnp.float32, jnp.float64) or not _fusable_threefry(key, size):
    return None
  data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
  blocks = _DRAW_BLOCKS if size >= 1024 * _DRAW_BLOCKS else 1
  block = -(-size // blocks)

  def body(i, out):
    start = i * block
    index = start.astype(jnp.uint32) + jax.lax.iota(jnp.uint32, block)
    return jax.lax.dynamic_update_slice(out, transform(_unit_uniform(data, index, dtype)),
                                        (start,))

  out = jax.lax.fori_loop(0, blocks, body, jnp.zeros((blocks * block,), dtype))
  return out[:size].reshape(shape)


def uniform(key: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
  """``jax.random.uniform(key, shape, dtype)``, bit for bit (see :func:`normal`)."""
  u = _hashed_draws(key, shape, dtype, lambda unit: unit)
  return jax.random.uniform(key, shape, dtype) if u is None else u


def _normal_from_unit(unit: jax.Array) -> jax.Array:
  """JAX's map from its uniform bits on [0, 1) to N(0, 1): onto (-1, 1), then sqrt(2) erfinv."""
  dtype = unit.dtype
  low = np.nextafter(np.array(-1.0, dtype), np.array(0.0, dtype))
  u = jnp.maximum(low, unit * (np.array(1.0, dtype) - low) + low)
  return np.array(np.sqrt(2.0), dtype) * jax.lax.erf_inv(u)


def normal(key: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
  """``jax.random.normal(key, shape, dtype)`` bit for bit, with the hash in the same fusion.

  JAX's recipe (:func:`_unit_uniform`, :func:`_normal_from_unit`), differing only in the
  program: the unrolled hash fuses with ``erfinv`` (:func:`_hashed_draws`), where JAX's CPU
  lowering of the hash loops over its five blocks of rounds, reading and writing the bit arrays
  at each. Anything :func:`_fusable_threefry` declines falls back to ``jax.random.normal``; the
  tests compare the two bit for bit.
  """
  eps = _hashed_draws(key, shape, dtype, _normal_from_unit)
  return jax.random.normal(key, shape, dtype) if eps is None else eps


__all__ = ["normal", "uniform"]
