"""constfold: compute public scalar arithmetic at compile time.

A public node whose operands are all inline scalar constants, and whose result is a
scalar, becomes an inline constant computed by the reference runtime's own rule (so
folding cannot change what the op means).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from planc.ir.graph import Node, make_attrs
from planc.ir import ops
from planc.runtime.dtypes import TORCH_DTYPE

from .base import Pass, register
from .rewrite import map_blocks, substitute, with_nodes

def fold_block(nodes):
    scalars: dict[str, torch.Tensor] = {}
    mapping = {}
    out = []
    for n in substitute(nodes, {}):
        if mapping:
            (n,) = substitute([n], mapping)
        if n.op == "const" and n.attr("value") is not None:
            scalars[n.result.name] = torch.tensor(n.attr("value"), dtype=TORCH_DTYPE[n.result.type.dtype])
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
            if torch.isfinite(val.double()).all():
                c = Node("const", (), n.results, make_attrs({"name": None, "value": float(val.double())}), (), n.loc)
                scalars[n.result.name] = val
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
