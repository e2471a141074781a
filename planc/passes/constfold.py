"""constfold: compute public scalar arithmetic at compile time.

A public node whose operands are all inline scalar constants, and whose result is a
scalar, becomes an inline constant computed by the reference runtime's own rule (so
folding cannot change what the op means). Whatever cannot be folded exactly (a constant
that does not fit its dtype, a rule that fails, a result an inline constant cannot hold)
is left as it is, for the verifier or the run time to report with the user's line.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from planc.ir.graph import Node, make_attrs
from planc.ir import ops
from planc.ir.types import scalar_problem
from planc.runtime.dtypes import TORCH_DTYPE

from .base import Pass, register
from .rewrite import map_blocks, substitute, with_nodes


def _scalar(value: float, dtype: str) -> torch.Tensor | None:
    """The inline constant as a 0-d tensor, or None when it does not fit `dtype`."""
    if scalar_problem(value, dtype) is not None:
        return None
    try:
        return torch.tensor(value, dtype=TORCH_DTYPE[dtype])
    except (RuntimeError, ValueError, TypeError, OverflowError, KeyError):
        return None


def _folded(val, dtype: str) -> tuple[float, torch.Tensor] | None:
    """`val` as an inline constant's value and the scalar that constant stands for, or None
    when no inline constant of `dtype` holds exactly `val` (non-finite, out of range, or
    an integer a float attribute cannot represent)."""
    try:
        value = float(val.double())
    except (RuntimeError, ValueError, TypeError, OverflowError, AttributeError):
        return None
    if not math.isfinite(value):
        return None
    t = _scalar(value, dtype)
    if t is None or t.shape != val.shape or not torch.equal(t, val.to(t.dtype)):
        return None
    return value, t


def fold_block(nodes):
    scalars: dict[str, torch.Tensor] = {}
    mapping = {}
    out = []
    for n in substitute(nodes, {}):
        if mapping:
            (n,) = substitute([n], mapping)
        if n.op == "const" and n.attr("value") is not None:
            t = _scalar(n.attr("value"), n.result.type.dtype)
            if t is not None:  # one that does not fit is the verifier's to report
                scalars[n.result.name] = t
            out.append(n)
            continue
        d = ops.get(n.op)
        if (d.computes and not d.moves and n.results and len(n.results) == 1 and n.result.type.vis.is_public
                and n.result.type.shape == () and n.operands and all(v.name in scalars for v in n.operands)):
            try:
                (val,) = d.rule("reference")(n, [scalars[v.name] for v in n.operands], n.attr_dict)
            except Exception:  # leave it for run time, which reports it with the user's line
                out.append(n)
                continue
            folded = _folded(val, n.result.type.dtype)
            if folded is not None:
                value, scalars[n.result.name] = folded
                c = Node("const", (), n.results, make_attrs({"name": None, "value": value}), (), n.loc)
                out.append(c)
                continue
        out.append(n)
    return tuple(out)


@register
@dataclass(frozen=True)
class ConstFold(Pass):
    name = "constfold"

    def run(self, graph):
        return with_nodes(graph, map_blocks(graph.nodes, fold_block))
