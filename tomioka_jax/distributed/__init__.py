"""Distributed training: QSGD gradient quantization, coding and quantized all-reduce.

* ``_qsgd`` -- Alistarh, Grubic, Li, Tomioka, Vojnovic (2017), QSGD.
"""

from tomioka_jax.distributed._qsgd import PRESETS
from tomioka_jax.distributed._qsgd import Quantized
from tomioka_jax.distributed._qsgd import QuantizedMean
from tomioka_jax.distributed._qsgd import as_buckets
from tomioka_jax.distributed._qsgd import decode
from tomioka_jax.distributed._qsgd import dequantize
from tomioka_jax.distributed._qsgd import encode
from tomioka_jax.distributed._qsgd import encoded_bits
from tomioka_jax.distributed._qsgd import quantize
from tomioka_jax.distributed._qsgd import quantized_mean
from tomioka_jax.distributed._qsgd import quantized_tree_mean
from tomioka_jax.distributed._qsgd import wire_bits

__all__ = [
    "PRESETS",
    "Quantized",
    "QuantizedMean",
    "as_buckets",
    "decode",
    "dequantize",
    "encode",
    "encoded_bits",
    "quantize",
    "quantized_mean",
    "quantized_tree_mean",
    "wire_bits",
]
