"""DistIR: an IR, transforms and a simulator for distributed training, fed from jaxprs.

Santhanam, Krishna, Tomioka, Harris, Zaharia (2021), arXiv 2111.05426. ``trace(step, *args)``
turns any JAX function (a training step of this library or yours) into a DistIR function;
transforms distribute it over a device topology; one abstract interpreter runs it for
reference, infers its types and simulates its cost.

* ``_ir`` -- values on devices, ops, functions, the jaxpr importer, the printer.
* ``_interpret`` -- the abstract interpreter; reference execution and type inference.
* ``_transforms`` -- data / horizontal (Megatron) / pipeline parallelism and their nesting.
* ``_pipeline`` -- GPipe (FIFO) and 1F1B microbatch schedules.
* ``_project`` -- rank projection to per-device programs; running them on local devices.
"""

from tomioka_jax.distributed.distir._interpret import AbstractInterpreter
from tomioka_jax.distributed.distir._interpret import execute
from tomioka_jax.distributed.distir._interpret import infer_types
from tomioka_jax.distributed.distir._ir import COMMUNICATION_OPS
from tomioka_jax.distributed.distir._ir import Device
from tomioka_jax.distributed.distir._ir import Function
from tomioka_jax.distributed.distir._ir import FunctionBuilder
from tomioka_jax.distributed.distir._ir import Op
from tomioka_jax.distributed.distir._ir import PRIMITIVE_CATEGORIES
from tomioka_jax.distributed.distir._ir import TensorType
from tomioka_jax.distributed.distir._ir import Topology
from tomioka_jax.distributed.distir._ir import Value
from tomioka_jax.distributed.distir._ir import format_function
from tomioka_jax.distributed.distir._ir import import_jaxpr
from tomioka_jax.distributed.distir._ir import trace
from tomioka_jax.distributed.distir._pipeline import pipeline_schedule
from tomioka_jax.distributed.distir._project import gather_projected_outputs
from tomioka_jax.distributed.distir._project import project
from tomioka_jax.distributed.distir._project import project_inputs
from tomioka_jax.distributed.distir._project import run_projected
from tomioka_jax.distributed.distir._transforms import GPT_BLOCK_SPLITS
from tomioka_jax.distributed.distir._transforms import data_parallel
from tomioka_jax.distributed.distir._transforms import gather_gpt_outputs
from tomioka_jax.distributed.distir._transforms import gather_mlp_outputs
from tomioka_jax.distributed.distir._transforms import gpt_inference
from tomioka_jax.distributed.distir._transforms import mlp_reference_step
from tomioka_jax.distributed.distir._transforms import mlp_training_step
from tomioka_jax.distributed.distir._transforms import op_label
from tomioka_jax.distributed.distir._transforms import shard_batch
from tomioka_jax.distributed.distir._transforms import shard_gpt_inputs
from tomioka_jax.distributed.distir._transforms import shard_mlp_inputs

__all__ = [
    "AbstractInterpreter",
    "COMMUNICATION_OPS",
    "Device",
    "Function",
    "FunctionBuilder",
    "GPT_BLOCK_SPLITS",
    "Op",
    "PRIMITIVE_CATEGORIES",
    "TensorType",
    "Topology",
    "Value",
    "data_parallel",
    "execute",
    "format_function",
    "gather_gpt_outputs",
    "gather_mlp_outputs",
    "gather_projected_outputs",
    "gpt_inference",
    "import_jaxpr",
    "infer_types",
    "mlp_reference_step",
    "mlp_training_step",
    "op_label",
    "pipeline_schedule",
    "project",
    "project_inputs",
    "run_projected",
    "shard_batch",
    "shard_gpt_inputs",
    "shard_mlp_inputs",
    "trace",
]
