"""One abstract interpreter for DistIR, and its two basic semantics.

DistIR's design (``dist_ir/executor/absint.py`` in the reference) runs every analysis as
the same walk over a function's ops, dispatching each op to a rule of the current
*semantics*; only the abstract values differ:

==================  ================================  =====================================
semantics           abstract value                    rule result
==================  ================================  =====================================
reference execution an array                          the op's output arrays
type inference      a :class:`TensorType`             output types, checked for consistency
cost / simulation   a :class:`TensorType` + a state   output types; the state advances
==================  ================================  =====================================

A rule is ``rule(op, inputs, state) -> (outputs, state)``. :class:`AbstractInterpreter`
looks a rule up by the op's name, then falls back to the semantics' rule for JAX
primitives. The cost model and the simulator (``_cost``, ``_simulate``) are semantics
built on the same interpreter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from tomioka_jax.distributed.distir import _ir as ir

Rule = Callable[[ir.Op, tuple, Any], tuple[tuple, Any]]


class AbstractInterpreter:
  """Walks a function's ops in order, dispatching each to a rule of one semantics.

  Args:
    name: the semantics' name (for error messages).
    rules: rules by op name (communication ops, or primitives that need special care).
    primitive_rule: the rule for any other op that has a JAX primitive.
    constant: the abstract value of a constant :class:`~ir.Value` (default: its array).
  """

  def __init__(self, name: str, rules: Mapping[str, Rule], *,
               primitive_rule: Rule | None = None,
               constant: Callable[[ir.Value], Any] | None = None):
    self.name = name
    self.rules = dict(rules)
    self.primitive_rule = primitive_rule
    self.constant = constant or (lambda value: value.const)

  def rule_for(self, op: ir.Op) -> Rule:
    rule = self.rules.get(op.name)
    if rule is None and op.primitive is not None:
      rule = self.primitive_rule
    if rule is None:
      raise ValueError(f"{self.name}: no rule for op {op.name!r}")
    return rule

  def run(self, fn: ir.Function, inputs: Sequence[Any], state: Any = None
          ) -> tuple[tuple, Any]:
    """Interprets ``fn`` on abstract ``inputs``; returns ``(outputs, final state)``."""
    if len(inputs) != len(fn.inputs):
      raise ValueError(f"{self.name}: function {fn.name} takes {len(fn.inputs)} inputs, "
                       f"got {len(inputs)}")
    env: dict[int, Any] = {id(v): x for v, x in zip(fn.inputs, inputs)}

    def read(value: ir.Value):
      if value.is_const:
        return self.constant(value)
      return env[id(value)]

    for op in fn.ops:
      args = tuple(read(v) for v in op.inputs)
      outs, state = self.rule_for(op)(op, args, state)
      if len(outs) != len(op.outputs):
        raise ValueError(f"{self.name}: rule for {op.name} returned {len(outs)} values for "
                         f"{len(op.outputs)} outputs")
      for v, x in zip(op.outputs, outs):
        env[id(v)] = x
    return tuple(read(v) for v in fn.outputs), state


# --------------------------------------------------------------------------------------
# Reference execution
# --------------------------------------------------------------------------------------


def _execute_primitive(op: ir.Op, args: tuple, state):
  out = op.primitive.bind(*args, **op.params)
  return (tuple(out) if op.primitive.multiple_results else (out,)), state


def _split(x, n: int, axis: int):
  return tuple(jnp.split(x, n, axis=axis))


def _execute_reduce_scatter(op, args, state):
  total = sum(args[1:], args[0])
  return _split(total, len(args), op.params["axis"]), state


EXECUTION_RULES: dict[str, Rule] = {
    "send": lambda op, args, state: ((args[0],), state),
    "allreduce": lambda op, args, state: ((sum(args[1:], args[0]),) * len(args), state),
    "allgather": lambda op, args, state: (
        (jnp.concatenate(args, axis=op.params["axis"]),) * len(args), state),
    "reduce_scatter": _execute_reduce_scatter,
    "mpi_broadcast": lambda op, args, state: ((args[0],) * len(op.params["devices"]), state),
    "mpi_scatter": lambda op, args, state: (
        _split(args[0], len(op.params["devices"]), op.params["axis"]), state),
    "mpi_gather": lambda op, args, state: (
        (jnp.concatenate(args, axis=op.params["axis"]),), state),
}

_EXECUTOR = AbstractInterpreter("execute", EXECUTION_RULES,
                                primitive_rule=_execute_primitive)


def execute(fn: ir.Function, *args) -> tuple:
  """Runs ``fn`` op by op on arrays (the reference semantics).

  Communication ops act on the values (``allreduce`` sums, ``scatter`` splits, ...);
  placement is not simulated. For an imported jaxpr this equals running the jaxpr.

  Raises:
    ValueError: an argument's shape or dtype differs from the function's input type.
  """
  for value, arg in zip(fn.inputs, args):
    shape, dtype = np.shape(arg), jnp.result_type(arg)
    if tuple(shape) != value.type.shape or dtype != value.type.dtype:
      raise ValueError(f"execute {fn.name}: input {value.name} must be "
                       f"{value.type.dtype}{list(value.type.shape)}, got "
                       f"{dtype}{list(shape)}")
  outputs, _ = _EXECUTOR.run(fn, args)
  return outputs


# --------------------------------------------------------------------------------------
# Type inference
# --------------------------------------------------------------------------------------


def _infer_primitive(op: ir.Op, types: tuple, state):
  device = op.devices[0] if op.devices else None
  outs = ir.primitive_output_types(op.primitive, op.params, types,
                                   [v.const for v in op.inputs], device)
  return outs, state


def _infer_communication(op: ir.Op, types: tuple, state):
  return ir.communication_output_types(op.name, op.params, types), state


_TYPE_CHECKER = AbstractInterpreter(
    "infer_types", {name: _infer_communication for name in ir.COMMUNICATION_OPS},
    primitive_rule=_infer_primitive, constant=lambda value: value.type)


def infer_types(fn: ir.Function,
                input_types: Sequence[ir.TensorType] | None = None
                ) -> tuple[ir.TensorType, ...]:
  """Output types of ``fn`` by type inference, checked against the declared types.

  With ``input_types`` (default: the declared input types) the function is re-typed for
  new inputs: a shape mismatch anywhere raises ``ValueError`` naming the op. With the
  declared types, each op's inferred output types must equal the ones the function
  declares (a check on programs assembled by hand or by transforms).
  """
  declared = input_types is None
  input_types = tuple(v.type for v in fn.inputs) if declared else tuple(input_types)

  def checked(rule: Rule) -> Rule:
    def wrapped(op, types, state):
      outs, state = rule(op, types, state)
      if declared:
        for value, found in zip(op.outputs, outs):
          if value.type != found:
            raise ValueError(f"infer_types {fn.name}: op {op.name} declares {value.name}: "
                             f"{value.type} but its inputs give {found}")
      return outs, state
    return wrapped

  checker = AbstractInterpreter(
      "infer_types", {k: checked(r) for k, r in _TYPE_CHECKER.rules.items()},
      primitive_rule=checked(_infer_primitive), constant=lambda value: value.type)
  outputs, _ = checker.run(fn, input_types)
  return outputs
