"""Distributed training: QSGD gradient quantization, coding and quantized all-reduce.

* ``_qsgd`` -- Alistarh, Grubic, Li, Tomioka, Vojnovic (2017), QSGD.
* ``_ampnet`` -- Gaunt, Johnson, Riechert, Tarlow, Tomioka, Vytiniotis, Webster (2017),
  AMPNet: asynchronous model-parallel training (workers, keys, mak, muf; GPipe schedule).
* ``distir`` -- Santhanam, Krishna, Tomioka, Harris, Zaharia (2021), DistIR: a public
  sub-namespace (IR, jaxpr importer, transforms, simulator).
"""

from tomioka_jax.distributed import distir

from tomioka_jax.distributed._ampnet import AMPNode
from tomioka_jax.distributed._ampnet import AMPProgram
from tomioka_jax.distributed._ampnet import AMPRuntime
from tomioka_jax.distributed._ampnet import AMPTrace
from tomioka_jax.distributed._ampnet import AMPUpdate
from tomioka_jax.distributed._ampnet import LIST_REDUCTION_OPS
from tomioka_jax.distributed._ampnet import ListInstance
from tomioka_jax.distributed._ampnet import amp_idle_fraction
from tomioka_jax.distributed._ampnet import amp_minibatches
from tomioka_jax.distributed._ampnet import amp_pipeline_program
from tomioka_jax.distributed._ampnet import amp_staleness
from tomioka_jax.distributed._ampnet import gpipe_bubble
from tomioka_jax.distributed._ampnet import list_reduction_batch
from tomioka_jax.distributed._ampnet import list_reduction_data
from tomioka_jax.distributed._ampnet import list_reduction_loss
from tomioka_jax.distributed._ampnet import list_reduction_program
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
    "AMPNode",
    "AMPProgram",
    "AMPRuntime",
    "AMPTrace",
    "AMPUpdate",
    "LIST_REDUCTION_OPS",
    "ListInstance",
    "amp_idle_fraction",
    "amp_minibatches",
    "amp_pipeline_program",
    "amp_staleness",
    "gpipe_bubble",
    "list_reduction_batch",
    "list_reduction_data",
    "list_reduction_loss",
    "list_reduction_program",
    "PRESETS",
    "Quantized",
    "QuantizedMean",
    "as_buckets",
    "decode",
    "dequantize",
    "distir",
    "encode",
    "encoded_bits",
    "quantize",
    "quantized_mean",
    "quantized_tree_mean",
    "wire_bits",
]
