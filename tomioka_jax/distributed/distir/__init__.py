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
* ``_cost`` -- FLOPs and bytes per op, kernel times, alpha-beta communication.
* ``_runtime`` -- the local runtime's cost: dispatch per segment, XLA fusions, products,
  ``device_put`` copies.
* ``_simulate`` -- the simulator: per-device clocks, peak memory, Chrome traces.
* ``_calibrate`` -- device and link constants fitted on the local devices.
* ``_search`` -- grid search over (d, h, p, microbatches); the vectorized cost model.
"""

from tomioka_jax.distributed.distir._calibrate import Calibration
from tomioka_jax.distributed.distir._calibrate import calibrate
from tomioka_jax.distributed.distir._calibrate import fit_kernel_constants
from tomioka_jax.distributed.distir._calibrate import fit_link_constants
from tomioka_jax.distributed.distir._calibrate import measure_kernels
from tomioka_jax.distributed.distir._calibrate import measure_transfers
from tomioka_jax.distributed.distir._cost import CostModel
from tomioka_jax.distributed.distir._cost import OpCost
from tomioka_jax.distributed.distir._cost import collective_time
from tomioka_jax.distributed.distir._cost import communication_time
from tomioka_jax.distributed.distir._cost import function_cost
from tomioka_jax.distributed.distir._cost import kernel_time
from tomioka_jax.distributed.distir._cost import op_cost
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
from tomioka_jax.distributed.distir._project import project_inputs
from tomioka_jax.distributed.distir._project import rank_projection
from tomioka_jax.distributed.distir._project import run_projected
from tomioka_jax.distributed.distir._runtime import RuntimeConstants
from tomioka_jax.distributed.distir._runtime import fusion_plan
from tomioka_jax.distributed.distir._runtime import program_features
from tomioka_jax.distributed.distir._calibrate import calibrate_runtime
from tomioka_jax.distributed.distir._calibrate import fit_runtime
from tomioka_jax.distributed.distir._calibrate import measure_runtime
from tomioka_jax.distributed.distir._transforms import GPT_BLOCK_SPLITS
from tomioka_jax.distributed.distir._search import GPT_SIZES
from tomioka_jax.distributed.distir._search import GridResult
from tomioka_jax.distributed.distir._search import MLP_SIZES
from tomioka_jax.distributed.distir._search import dhp_configurations
from tomioka_jax.distributed.distir._search import gpt_inference_model
from tomioka_jax.distributed.distir._search import grid_search
from tomioka_jax.distributed.distir._search import mlp_step_model
from tomioka_jax.distributed.distir._search import simulate_configs
from tomioka_jax.distributed.distir._simulate import Simulation
from tomioka_jax.distributed.distir._simulate import simulate
from tomioka_jax.distributed.distir._transforms import data_parallel
from tomioka_jax.distributed.distir._transforms import data_parallel_inputs
from tomioka_jax.distributed.distir._transforms import gather_gpt_outputs
from tomioka_jax.distributed.distir._transforms import gather_mlp_outputs
from tomioka_jax.distributed.distir._transforms import gpt_inference
from tomioka_jax.distributed.distir._transforms import mlp_reference_step
from tomioka_jax.distributed.distir._transforms import mlp_training_step
from tomioka_jax.distributed.distir._transforms import op_label
from tomioka_jax.distributed.distir._transforms import shard_gpt_inputs
from tomioka_jax.distributed.distir._transforms import shard_mlp_inputs

__all__ = [
    "RuntimeConstants",
    "calibrate_runtime",
    "fit_runtime",
    "fusion_plan",
    "measure_runtime",
    "program_features",
    "AbstractInterpreter",
    "COMMUNICATION_OPS",
    "Calibration",
    "CostModel",
    "Device",
    "Function",
    "FunctionBuilder",
    "GPT_BLOCK_SPLITS",
    "GPT_SIZES",
    "GridResult",
    "MLP_SIZES",
    "Op",
    "OpCost",
    "PRIMITIVE_CATEGORIES",
    "Simulation",
    "TensorType",
    "Topology",
    "Value",
    "calibrate",
    "collective_time",
    "communication_time",
    "data_parallel",
    "data_parallel_inputs",
    "dhp_configurations",
    "execute",
    "fit_kernel_constants",
    "fit_link_constants",
    "format_function",
    "function_cost",
    "gather_gpt_outputs",
    "gather_mlp_outputs",
    "gather_projected_outputs",
    "gpt_inference",
    "gpt_inference_model",
    "grid_search",
    "import_jaxpr",
    "infer_types",
    "kernel_time",
    "measure_kernels",
    "measure_transfers",
    "mlp_reference_step",
    "mlp_step_model",
    "mlp_training_step",
    "op_cost",
    "op_label",
    "pipeline_schedule",
    "project_inputs",
    "rank_projection",
    "run_projected",
    "shard_gpt_inputs",
    "shard_mlp_inputs",
    "simulate",
    "simulate_configs",
    "trace",
]
