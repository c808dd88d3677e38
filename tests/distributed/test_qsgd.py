"""Tests for tomioka_jax.distributed._qsgd against the mathematics of QSGD (arXiv:1610.02132).

Monte Carlo tolerances: means are compared per coordinate with z-scores against the exact
rounding variance (|z| < 5.5: a false alarm has probability < 1e-6 per coordinate), second
moments within a relative error several times their standard error ``sqrt(2/K)``. All seeds
are fixed, so every run draws the same numbers.
"""

import functools
import math

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from tomioka_jax import core
from tomioka_jax import distributed
from tomioka_jax.distributed import PRESETS
from tomioka_jax.distributed import decode
from tomioka_jax.distributed import dequantize
from tomioka_jax.distributed import encode
from tomioka_jax.distributed import encoded_bits
from tomioka_jax.distributed import quantize
from tomioka_jax.distributed import quantized_mean
from tomioka_jax.distributed import quantized_tree_mean
from tomioka_jax.distributed import _qsgd as qsgd

NUM_DEVICES = 8
Z_MAX = 5.5


def _buckets(x, d):
  x = np.asarray(x, np.float64).reshape(-1)
  nb = -(-x.size // d)
  return np.pad(x, (0, nb * d - x.size)).reshape(nb, d)


def _exact_moments(x, num_levels, d, norm="l2"):
  """Exact E[level > 0] and Var[Q(x)_i] per coordinate (section 3), in float64 NumPy."""
  v = _buckets(x, d)
  scale = np.linalg.norm(v, axis=1) if norm == "l2" else np.abs(v).max(axis=1)
  scale = np.where(scale > 0, scale, 1.0)[:, None]
  r = num_levels * np.abs(v) / scale
  p = r - np.floor(r)
  var = (scale / num_levels) ** 2 * p * (1 - p)
  nonzero_prob = np.where(r >= 1, 1.0, r)
  return nonzero_prob, var, v


def _samples(x, keys, **kwargs):
  """dequantize(quantize(k, x)) for each key, as float64 NumPy (num_keys, x.size)."""
  f = jax.jit(jax.vmap(lambda k: dequantize(quantize(k, x, **kwargs)).reshape(-1)))
  return np.asarray(f(keys), np.float64)


def _levels(x, keys, **kwargs):
  f = jax.jit(jax.vmap(lambda k: quantize(k, x, **kwargs).levels))
  return np.asarray(f(keys), np.float64)


# -------------------------------------------------------------------------------------------
# quantize / dequantize


@pytest.mark.parametrize("num_levels,dtype", [(1, np.uint8), (255, np.uint8),
                                              (256, np.uint16), (70000, np.uint32)])
def test_level_dtype_is_smallest_that_holds_num_levels(num_levels, dtype):
  q = quantize(jax.random.key(0), jnp.ones(4), num_levels=num_levels, norm="max")
  assert q.levels.dtype == dtype
  assert int(q.levels.max()) == num_levels  # ones / max-norm: every level is the top one


def test_shapes_padding_and_metadata():
  x = core.flat_normal(jax.random.key(1), (3, 5, 7))
  q = quantize(jax.random.key(2), x, num_levels=4, bucket_size=16)
  assert q.levels.shape == (7, 16) and q.signs.shape == (7, 16) and q.scales.shape == (7,)
  assert q.scales.dtype == jnp.float32 and q.signs.dtype == jnp.bool_
  assert q.shape == (3, 5, 7) and q.num_levels == 4 and q.bucket_size == 16
  np.testing.assert_array_equal(q.levels.reshape(-1)[105:], 0)  # padding quantizes to 0
  np.testing.assert_array_equal(q.signs.reshape(-1)[:105], np.asarray(x).reshape(-1) < 0)
  np.testing.assert_allclose(q.scales, np.linalg.norm(_buckets(x, 16), axis=1), rtol=1e-6)
  y = dequantize(q)
  assert y.shape == x.shape and y.dtype == x.dtype
  # Q(x) is x rounded to a neighbouring level: |Q(x)_i - x_i| < scale / s.
  step = np.repeat(np.asarray(q.scales), 16)[:105].reshape(3, 5, 7) / 4
  assert np.all(np.abs(np.asarray(y) - np.asarray(x)) < step + 1e-6)
  assert np.all(np.sign(np.asarray(y)) * np.sign(np.asarray(x)) >= 0)


def test_bucket_larger_than_input_is_clamped():
  q = quantize(jax.random.key(0), jnp.ones(10), num_levels=3, bucket_size=8192)
  assert q.levels.shape == (1, 10)


def test_values_on_the_grid_are_exact():
  # Max-norm 1 and s = 4: every value is a level, so rounding is deterministic.
  x = jnp.array([1.0, -0.5, 0.25, 0.0, -1.0, 0.75])
  for key in jax.random.split(jax.random.key(0), 3):
    np.testing.assert_array_equal(dequantize(quantize(key, x, num_levels=4, norm="max")), x)


def test_zeros_quantize_to_zeros():
  q = quantize(jax.random.key(0), jnp.zeros((4, 4)), num_levels=3, bucket_size=5)
  np.testing.assert_array_equal(q.scales, 0)
  np.testing.assert_array_equal(dequantize(q), 0)


def test_jit_matches_eager():
  x = jax.random.normal(jax.random.key(1), (300,))
  kwargs = dict(num_levels=5, bucket_size=64)
  eager = quantize(jax.random.key(3), x, **kwargs)
  jitted = jax.jit(functools.partial(quantize, **kwargs))(jax.random.key(3), x)
  for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("norm,rng", [("l2", "hash"), ("max", "hash"), ("l2", "threefry")])
def test_unbiased_and_lemma_3_1_variance(norm, rng):
  num_keys, d, s = 4000, 16, 2
  x = jnp.concatenate([jax.random.normal(jax.random.key(5), (40,)),
                       jnp.array([0.0, 3.0, -1e-3, 0.0, 1.0, 1.0, 1.0, 1.0])])
  samples = _samples(x, jax.random.split(jax.random.key(6), num_keys), num_levels=s,
                     bucket_size=d, norm=norm, rng=rng)
  _, var, v = _exact_moments(x, s, d, norm)
  var = var.reshape(-1)[:x.size]
  x64 = np.asarray(x, np.float64)
  # E[Q(x)] = x, coordinate by coordinate.
  err = samples.mean(axis=0) - x64
  exact = var == 0
  np.testing.assert_allclose(err[exact], 0, atol=1e-6)
  z = err[~exact] / np.sqrt(var[~exact] / num_keys)
  assert np.abs(z).max() < Z_MAX, np.abs(z).max()
  # Per bucket: E||Q(v) - v||^2 equals the exact two-point variance (z-test on the K draws)
  # and is <= min(d/s^2, sqrt(d)/s) ||v||^2 (Lemma 3.1).
  sq_err = np.stack([_buckets(e, d).sum(axis=1) for e in (samples - x64) ** 2])
  exact_bucket = _buckets(var, d).sum(axis=1)
  z = (sq_err.mean(axis=0) - exact_bucket) / (sq_err.std(axis=0) / math.sqrt(num_keys))
  assert np.abs(z).max() < Z_MAX, z
  bound = min(d / s**2, math.sqrt(d) / s) * (v**2).sum(axis=1)
  assert np.all(sq_err.mean(axis=0) <= bound)
  # Roundings of different coordinates are independent: the variance of the summed error is
  # the sum of the variances (the counter hash has no pairwise correlation).
  total = (samples - x64).sum(axis=1)
  fourth = np.mean(total**4)
  se = math.sqrt(max(fourth - var.sum() ** 2, 0) / num_keys)
  assert abs(total.var() - var.sum()) < Z_MAX * se, (total.var(), var.sum(), se)


@pytest.mark.parametrize("d,s", [(16, 1), (64, 3), (100, 5)])
def test_variance_bound_is_nearly_attained_by_flat_vectors(d, s):
  # A flat bucket is the worst case of Lemma 3.1 for s <= sqrt(d): the measured ratio
  # variance / bound approaches 1 - s/sqrt(d), so a quantizer off by a constant would fail.
  num_keys = 3000
  x = jnp.ones(d)
  samples = _samples(x, jax.random.split(jax.random.key(7), num_keys), num_levels=s)
  measured = ((samples - 1.0) ** 2).sum(axis=1).mean()
  bound = min(d / s**2, math.sqrt(d) / s) * d
  r = s / math.sqrt(d)  # every coordinate has ratio r = s |v_i| / ||v||
  expected = d * (d / s**2) * r * (1 - r) if r < 1 else 0.0
  np.testing.assert_allclose(measured, expected, rtol=0.05)
  assert measured <= bound


@pytest.mark.parametrize("kind", ["gaussian", "flat", "spiky"])
def test_expected_nonzeros_at_most_s_s_plus_sqrt_d(kind):
  num_keys, d, s = 2000, 256, 4
  key = jax.random.key(11)
  x = {"gaussian": jax.random.normal(key, (d,)), "flat": jnp.ones(d),
       "spiky": jax.random.normal(key, (d,)) ** 5}[kind]
  levels = _levels(x, jax.random.split(key, num_keys), num_levels=s)
  nnz = (levels > 0).sum(axis=(1, 2))
  nonzero_prob, _, _ = _exact_moments(x, s, d)
  expected = nonzero_prob.sum()
  sd = math.sqrt((nonzero_prob * (1 - nonzero_prob)).sum() / num_keys)
  assert abs(nnz.mean() - expected) < Z_MAX * sd + 1e-9
  assert nnz.mean() <= s * (s + math.sqrt(d))


def test_independent_keys_give_uncorrelated_roundings():
  n, s = 100_000, 3
  # Max-norm 1 and |x_i| = 0.5 / s: r = 0.5 for all i > 0, so each rounding is a fair coin.
  x = jnp.full((n,), 0.5 / s).at[0].set(1.0)
  key = jax.random.key(0)
  a = np.asarray(quantize(jax.random.fold_in(key, 0), x, num_levels=s, norm="max").levels)
  b = np.asarray(quantize(jax.random.fold_in(key, 1), x, num_levels=s, norm="max").levels)
  a, b = a.reshape(-1)[1:] * 2.0 - 1, b.reshape(-1)[1:] * 2.0 - 1
  bound = Z_MAX / math.sqrt(n)
  assert abs(a.mean()) < bound and abs(b.mean()) < bound
  assert abs((a * b).mean()) < bound  # across keys (devices)
  assert abs((a[1:] * a[:-1]).mean()) < bound  # neighbours within one stream


def test_hash_uniforms_are_uniform():
  u = np.asarray(qsgd._uniform(jax.random.key(4), (100, 1000), jnp.float32, "hash"))
  assert u.min() >= 0 and u.max() < 1
  counts = np.histogram(u, bins=100, range=(0, 1))[0]
  chi2 = ((counts - 1000) ** 2 / 1000).sum()
  assert chi2 < 99 + 5.5 * math.sqrt(2 * 99)  # chi-square with 99 degrees of freedom


def test_float64_is_unbiased_and_keeps_dtype():
  with jax.enable_x64(True):
    x = jnp.asarray(np.random.default_rng(0).standard_normal(24) * 1e-3, jnp.float64)
    q = quantize(jax.random.key(0), x, num_levels=3, bucket_size=8)
    assert q.scales.dtype == jnp.float32 and dequantize(q).dtype == jnp.float64
    norms = np.linalg.norm(_buckets(x, 8), axis=1)
    assert np.all(np.asarray(q.scales, np.float64) >= norms)  # rounded up to float32
    np.testing.assert_allclose(np.asarray(q.scales, np.float64), norms, rtol=2**-23)
    num_keys = 3000
    samples = _samples(x, jax.random.split(jax.random.key(1), num_keys), num_levels=3,
                       bucket_size=8)
  _, var, _ = _exact_moments(x, 3, 8)
  z = (samples.mean(axis=0) - np.asarray(x)) / np.sqrt(var.reshape(-1) / num_keys)
  assert np.abs(z).max() < Z_MAX


# -------------------------------------------------------------------------------------------
# Elias coding


def _elias_ref(k: int) -> str:
  """Recursive Elias code of k >= 1 as a bit string, built the slow obvious way."""
  code = "0"
  while k > 1:
    binary = bin(k)[2:]
    code = binary + code
    k = len(binary) - 1
  return code


def _encode_ref(q) -> bytes:
  levels = np.asarray(q.levels).reshape(-1)
  signs = np.asarray(q.signs).reshape(-1)
  bits = "".join(format(int(np.float32(s).view(np.uint32)), "032b")
                 for s in np.asarray(q.scales))
  last = -1
  for i in np.flatnonzero(levels):
    bits += _elias_ref(int(i - last)) + ("1" if signs[i] else "0") + _elias_ref(int(levels[i]))
    last = i
  bits += "1" * (-len(bits) % 8)
  return int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b""


def test_elias_code_of_known_integers():
  known = {1: "0", 2: "100", 3: "110", 4: "101000", 7: "101110", 16: "10100100000",
           17: "10100100010"}
  for k, code in known.items():
    assert _elias_ref(k) == code
    assert qsgd._elias_length(np.array([k]))[0] == len(code)


def _assert_round_trip(q, bucket_size):
  data = encode(q)
  back = decode(data, shape=q.shape, num_levels=q.num_levels, bucket_size=bucket_size,
                dtype=q.dtype)
  np.testing.assert_array_equal(back.levels, q.levels)
  assert back.levels.dtype == q.levels.dtype
  np.testing.assert_array_equal(back.signs, np.asarray(q.signs) & (np.asarray(q.levels) > 0))
  np.testing.assert_array_equal(dequantize(back), dequantize(q))
  assert encode(back) == data
  np.testing.assert_array_equal(back.scales, q.scales)
  assert back.shape == q.shape and back.num_levels == q.num_levels
  bits = encoded_bits(q)
  assert len(data) == -(-bits // 8)
  return data


@pytest.mark.parametrize("n,s,d", [(1, 1, None), (2, 1, None), (37, 3, 8), (1000, 31, None),
                                   (1000, 127, 128), (4096, 1, 128)])
def test_round_trip_matches_reference_bitstream(n, s, d):
  x = jax.random.normal(jax.random.key(n), (n,)) ** 3
  q = quantize(jax.random.key(s), x, num_levels=s, bucket_size=d)
  data = _assert_round_trip(q, d)
  assert data == _encode_ref(q)


def test_round_trip_adversarial_inputs():
  key = jax.random.key(0)
  cases = [
      (jnp.zeros(50), 4, None),  # no nonzero at all: only the scale
      (jnp.zeros(50).at[49].set(-2.0), 4, None),  # one nonzero, at the last position
      (jnp.zeros(50).at[0].set(3.0), 4, 7),  # one nonzero, at the first position
      (jnp.ones(300), 1 << 24, 100),  # the top level 2^24 everywhere (uint32 levels)
      (-jnp.ones(300), 255, None),  # top level of uint8, all negative
      (jnp.zeros((6, 5)).at[2].set(1.0), 9, 5),  # zero-scale buckets between nonzero ones
  ]
  for x, s, d in cases:
    q = quantize(key, x, num_levels=s, bucket_size=d, norm="max")
    _assert_round_trip(q, d)
  q = quantize(key, jnp.zeros(50).at[49].set(-2.0), num_levels=4)
  assert encoded_bits(q) == 32 + len(_elias_ref(50)) + 1 + len(_elias_ref(4))


@pytest.mark.parametrize("n", [10**3, 10**4, 10**5, 10**6])
def test_bits_at_s_sqrt_n_within_2_8n_plus_32(n):
  # Theorem 3.2 with one bucket and s = sqrt(n): E[bits] <= 2.8 n + 32. At n = 1e3 a single
  # draw exceeds it ~18% of the time, so average 16 draws there.
  s = round(math.sqrt(n))
  draws = 16 if n == 10**3 else 1
  x = jax.random.normal(jax.random.key(n), (n,))
  bits = []
  for key in jax.random.split(jax.random.key(1), draws):
    q = quantize(key, x, num_levels=s)
    bits.append(encoded_bits(q))
  assert np.mean(bits) <= 2.8 * n + 32, np.mean(bits) / n
  if n == 10**6:  # the largest round trip, 1e6 elements
    _assert_round_trip(q, None)


def test_decode_rejects_metadata_that_does_not_match():
  x = jax.random.normal(jax.random.key(0), (100,))
  q = quantize(jax.random.key(1), x, num_levels=8, bucket_size=10)
  data = encode(q)
  with pytest.raises(ValueError, match="does not match"):
    decode(data, shape=(50,), num_levels=8, bucket_size=10)  # positions beyond the array
  with pytest.raises(ValueError, match="does not match"):
    decode(data, shape=(100,), num_levels=2, bucket_size=10)  # levels above num_levels
  with pytest.raises(ValueError, match="does not match"):
    decode(data, shape=(100,), num_levels=8, bucket_size=1)  # more scales than bits
  with pytest.raises(ValueError, match="does not match"):
    decode(data[:20], shape=(100,), num_levels=8, bucket_size=10)  # truncated inside scales
  with pytest.raises(ValueError, match="corrupt"):
    decode(data + b"\x00", shape=(100,), num_levels=8, bucket_size=10)  # zero padding
  with pytest.raises(ValueError, match="num_levels"):
    decode(data, shape=(100,), num_levels=0)


# -------------------------------------------------------------------------------------------
# Collectives on 8 simulated devices


def _mesh():
  return jax.make_mesh((NUM_DEVICES,), ("d",), axis_types=(jax.sharding.AxisType.Explicit,))


def _shard_map_mean(fn, xs):
  """Runs ``fn(x_i) -> (mean, bits)`` on each of 8 devices; returns per-device means, bits."""
  bits = []

  def body(x):
    out = fn(x[0])
    bits.append(out.payload_bits)
    return out.mean[None]

  mesh = _mesh()
  f = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=P("d"), out_specs=P("d")))
  out = f(jax.device_put(xs, jax.NamedSharding(mesh, P("d"))))
  return np.asarray(out), bits[0]


def _reference_mean(key, xs, mode, s, d):
  """A single-device, device-by-device reimplementation of each mode with the same keys."""
  xs = np.asarray(xs)
  n_dev, n = xs.shape
  keys = [jax.random.fold_in(key, i) for i in range(n_dev)]
  opts = dict(num_levels=s, bucket_size=d)
  if mode == "all_gather":
    return np.mean([np.asarray(dequantize(quantize(k, x, **opts))) for k, x in zip(keys, xs)],
                   axis=0)
  if mode == "shared_scale":
    # Same uniforms as quantize with the same key; the rounding itself is redone in NumPy.
    v = np.stack([_buckets(x, d) for x in xs]).astype(np.float32)
    scales = np.sqrt((v * v).sum(axis=2)).max(axis=0)
    inv = np.where(scales > 0, np.float32(s) / np.where(scales > 0, scales, 1), 0)
    total = 0
    for k, vi in zip(keys, v):
      r = np.minimum(np.abs(vi) * inv[:, None], np.float32(s))
      u = np.asarray(qsgd._uniform(k, vi.shape, jnp.float32, "hash"))
      levels = np.floor(r) + (u < r - np.floor(r))
      total = total + np.sign(vi) * levels * (scales[:, None] / s)
    return (total / n_dev).reshape(-1)[:n]
  # reduce_scatter
  m = -(-n // (n_dev * d)) * d
  rows = np.pad(xs, ((0, 0), (0, n_dev * m - n))).reshape(n_dev, n_dev, m)
  phase1 = np.zeros((n_dev, n_dev, m), np.float32)  # [sender, chunk]
  gather_keys = []
  for i, k in enumerate(keys):
    k_scatter, k_gather = jax.random.split(k)
    gather_keys.append(k_gather)
    for j, kr in enumerate(jax.random.split(k_scatter, n_dev)):
      phase1[i, j] = dequantize(quantize(kr, rows[i, j], **opts))
  chunks = [dequantize(quantize(gather_keys[j], jnp.asarray(phase1[:, j].mean(axis=0)), **opts))
            for j in range(n_dev)]
  return np.concatenate(chunks)[:n]


@pytest.mark.parametrize("mode", ["all_gather", "reduce_scatter", "shared_scale"])
def test_modes_equal_single_device_reference_and_pmap(mode):
  s, d, n = 3, 16, 200
  key = jax.random.key(42)
  xs = core.flat_normal(jax.random.key(1), (NUM_DEVICES, n))
  fn = lambda x: quantized_mean(key, x, "d", num_levels=s, bucket_size=d, mode=mode)
  means, bits = _shard_map_mean(fn, xs)
  np.testing.assert_array_equal(means, np.broadcast_to(means[:1], means.shape))
  np.testing.assert_allclose(means[0], _reference_mean(key, xs, mode, s, d), atol=2e-6)
  pmapped = jax.pmap(lambda x: fn(x).mean, axis_name="d")(xs)
  np.testing.assert_allclose(np.asarray(pmapped), means, atol=1e-6)
  # Payload: 4-bit codes (2s+1 = 7 values) for each padded value plus 32 bits per scale.
  m = -(-n // (NUM_DEVICES * d)) * d  # reduce_scatter's chunk length
  expected_bits = {"all_gather": 208 * 4 + 13 * 32,
                   "reduce_scatter": NUM_DEVICES * (m * 4 + (m // d) * 32),
                   "shared_scale": 208 * 8 + 13 * 32}  # int8 sums hold 8 * 3 levels
  assert bits == expected_bits[mode]


@pytest.mark.parametrize("mode", ["all_gather", "reduce_scatter", "shared_scale"])
def test_modes_are_unbiased_with_independent_devices(mode):
  num_keys, s, d, n = 400, 1, 8, 24
  # Positive inputs: had the devices shared their uniforms, their roundings would be
  # positively correlated and the variance of the mean visibly larger.
  xs = jnp.abs(core.flat_normal(jax.random.key(3), (NUM_DEVICES, n)))
  keys = jax.random.split(jax.random.key(4), num_keys)

  def body(x):
    f = lambda k: quantized_mean(k, x[0], "d", num_levels=s, bucket_size=d, mode=mode).mean
    return jax.vmap(f)(keys)[None]

  mesh = _mesh()
  f = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=P("d"), out_specs=P("d")))
  samples = np.asarray(f(jax.device_put(xs, jax.NamedSharding(mesh, P("d")))))[0]
  target = np.asarray(xs, np.float64).mean(axis=0)
  sd = samples.std(axis=0) / math.sqrt(num_keys)
  z = (samples.mean(axis=0) - target) / np.where(sd > 0, sd, 1)
  assert np.abs(z).max() < Z_MAX, np.abs(z).max()
  # Independent devices: the variance of the mean is the average of the per-device
  # variances over N (here checked for all_gather, whose per-device variance is exact).
  if mode == "all_gather":
    per_device = np.stack([_exact_moments(x, s, d)[1].reshape(-1)[:n] for x in xs])
    np.testing.assert_allclose(samples.var(axis=0).sum(),
                               per_device.sum() / NUM_DEVICES**2, rtol=0.12)


def test_tree_mean_matches_flat_mean():
  key = jax.random.key(0)
  tree = {"w": core.flat_normal(jax.random.key(1), (NUM_DEVICES, 3, 4)),
          "b": core.flat_normal(jax.random.key(2), (NUM_DEVICES, 5))}
  opts = dict(num_levels=7, bucket_size=8)

  def body(t):
    t = jax.tree.map(lambda a: a[0], t)
    tree_out = quantized_tree_mean(key, t, "d", **opts)
    flat, _ = jax.flatten_util.ravel_pytree(t)
    flat_out = quantized_mean(key, flat, "d", **opts)
    assert tree_out.payload_bits == flat_out.payload_bits
    got, _ = jax.flatten_util.ravel_pytree(tree_out.mean)
    return jnp.stack([got, flat_out.mean])[None]

  out = jax.pmap(body, axis_name="d")(tree)
  np.testing.assert_array_equal(out[:, 0], out[:, 1])


def test_presets_map_bits_to_levels():
  for bits, preset in [(2, PRESETS["2bit"]), (4, PRESETS["4bit"]), (8, PRESETS["8bit"])]:
    assert qsgd._wire_width(preset["num_levels"]) == bits


# -------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_levels=0), "num_levels"), (dict(num_levels=-3), "num_levels"),
    (dict(num_levels=2.5), "num_levels"), (dict(num_levels=2**25), "num_levels"),
    (dict(num_levels=3, bucket_size=0), "bucket_size"),
    (dict(num_levels=3, bucket_size=1.5), "bucket_size"),
    (dict(num_levels=3, norm="l1"), "norm"), (dict(num_levels=3, rng="mt"), "rng"),
])
def test_quantize_rejects_bad_hyperparameters(kwargs, match):
  with pytest.raises(ValueError, match=match):
    quantize(jax.random.key(0), jnp.ones(4), **kwargs)


def test_quantize_rejects_integer_input():
  with pytest.raises(ValueError, match="floating dtype"):
    quantize(jax.random.key(0), jnp.arange(4), num_levels=3)


def test_quantized_mean_rejects_bad_mode_and_input():
  with pytest.raises(ValueError, match="mode"):
    jax.pmap(lambda x: quantized_mean(jax.random.key(0), x, "d", num_levels=3, mode="psum"),
             axis_name="d")(jnp.ones((NUM_DEVICES, 4)))
  with pytest.raises(ValueError, match="floating dtype"):
    jax.pmap(lambda x: quantized_mean(jax.random.key(0), x, "d", num_levels=3),
             axis_name="d")(jnp.ones((NUM_DEVICES, 4), jnp.int32))
  with pytest.raises(ValueError, match="num_levels"):
    jax.pmap(lambda x: quantized_mean(jax.random.key(0), x, "d", num_levels=0),
             axis_name="d")(jnp.ones((NUM_DEVICES, 4)))


# -------------------------------------------------------------------------------------------
# Training integration: the core's shard_map train step with a quantized gradient all-reduce


def test_core_train_step_with_quantized_gradients_tracks_fp32():
  from flax import nnx  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  class Linear(nnx.Module):

    def __init__(self):
      self.w = nnx.Param(core.flat_normal(jax.random.key(0), (5, 3)))

    def __call__(self, x):
      return x @ self.w[...]

  def loss_fn(model, batch, rng):
    del rng
    return jnp.mean(jnp.sum((model(batch["x"]) - batch["y"]) ** 2, -1)), {}

  w_true = np.asarray(core.flat_normal(jax.random.key(1), (5, 3)))
  batches = []
  for seed in range(12):
    x = np.asarray(core.flat_normal(jax.random.key(100 + seed), (64, 5)))
    batches.append({"x": x, "y": x @ w_true})
  mesh = core.data_mesh()
  opt = optax.sgd(0.1)
  final = {}
  for name in ("fp32", "8bit", "2bit"):
    graphdef, state = core.create_train_state(Linear(), opt, jax.random.key(0))
    state = core.replicate(state, mesh)
    kwargs = {}
    if name != "fp32":
      kwargs["reduce_gradients"] = lambda key, grads, axis_name, p=PRESETS[name]: (
          quantized_tree_mean(key, grads, axis_name, **p).mean)
    step = core.make_shard_map_train_step(graphdef, loss_fn, opt, mesh, **kwargs)
    losses = []
    for batch in batches:
      state, metrics = step(state, core.shard_batch(batch, mesh))
      losses.append(float(metrics["loss"]))
    final[name] = losses
  # Unbiased gradients: 8-bit follows the fp32 trajectory closely, 2-bit (ternary) still
  # descends, more slowly.
  np.testing.assert_allclose(final["8bit"], final["fp32"], rtol=0.02)
  assert final["2bit"][-1] < 0.2 * final["2bit"][0]
  assert final["fp32"][-1] < 0.05 * final["fp32"][0]


def test_nan_is_an_error_eagerly_and_stays_in_its_bucket_under_jit():
  x = jnp.arange(12.0).at[5].set(jnp.nan)
  key = jax.random.key(0)
  with pytest.raises(ValueError, match=r"x must be finite: it has 1 NaN/inf values, the first "
                     r"at index \(5,\)"):
    distributed.quantize(key, x, num_levels=4, bucket_size=4)
  with pytest.raises(ValueError, match="x must be finite"):
    distributed.quantize(key, x.at[0].set(jnp.inf), num_levels=4)
  # Under jit the values cannot be checked: the NaN makes its bucket (entries 4..7) NaN and
  # leaves the other buckets exact in expectation and finite.
  q = jax.jit(lambda x: distributed.dequantize(
      distributed.quantize(key, x, num_levels=4, bucket_size=4)))(x)
  q = np.asarray(q)
  assert np.all(np.isnan(q[4:8])) and np.all(np.isfinite(q[:4])) and np.all(np.isfinite(q[8:]))
