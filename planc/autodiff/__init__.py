"""Gradients on planc's IR: a vector-Jacobian rule per differentiable op, registered on
its definition (``@vjp(OP.mul)``), and `grad` / `value_and_grad` for traced code.

emit.py      the Emitter gradient rules write IR with, and the `vjp` decorator
backward.py  the reverse pass over a list of nodes
rules_*.py   the rules: arithmetic and reductions, non-linear functions and norms,
             shapes and moves, convolution and pooling, loops
api.py       grad, value_and_grad
"""
from planc.ir import ops

from . import rules_arith, rules_conv, rules_loop, rules_nonlinear, rules_shapes  # noqa: F401
from .api import grad, value_and_grad  # noqa: F401

# every differentiable op now has its vjp rule
ops.check("vjp")
