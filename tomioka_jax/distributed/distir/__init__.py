"""DistIR: an IR, transforms and a simulator for distributed training, fed from jaxprs.

Santhanam, Krishna, Tomioka, Harris, Zaharia (2021), arXiv 2111.05426. ``trace(step, *args)``
turns any JAX function (a training step of this library or yours) into a DistIR function;
transforms distribute it over a device topology; one abstract interpreter runs it for
reference, infers its types and simulates its cost.

* ``_ir`` -- values on devices, ops, functions, the jaxpr importer, the printer.
* ``_interpret`` -- the abstract interpreter; reference execution and type inference.
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

__all__ = [
    "AbstractInterpreter",
    "COMMUNICATION_OPS",
    "Device",
    "Function",
    "FunctionBuilder",
    "Op",
    "PRIMITIVE_CATEGORIES",
    "TensorType",
    "Topology",
    "Value",
    "execute",
    "format_function",
    "import_jaxpr",
    "infer_types",
    "trace",
]
