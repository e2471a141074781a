"""Lowering of torch functions, tensor methods and operators to IR ops.

One table, ``LOWER``, maps an fx target (a function object, or ``"method:name"`` for a
tensor method) to a rule with the torch signature. Rules receive IR ``Value``s for
traced tensors and plain Python values for everything else, and return a Value, a
Python value, or a tuple of them. Anything not in the table is an error that names the
user's line and, where there is one, what to use instead.
"""
from .base import (LOWER, SUGGEST, Lowerings, describe_target, lower_node, lowers, target_name,  # noqa: F401
                   unsupported)
from . import arith, losses, nonlinear, shapes  # noqa: F401,E402  (each registers its lowerings)
