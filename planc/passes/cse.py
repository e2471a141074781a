"""cse: one node for each distinct computation.

Two nodes are the same computation when op, operands, attributes and result types
agree (two loads of one tag from one owner are one value). Values computed above a loop
are reused inside its body; nodes with regions are never merged.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from planc.ir.graph import Region

from .base import Pass, register
from .rewrite import with_nodes


def _key(n):
    return (n.op, tuple(v.name for v in n.operands), n.attrs, tuple(r.type for r in n.results))


def cse_block(nodes, seen: dict, mapping: dict):
    out = []
    for n in nodes:
        ops = tuple(mapping.get(v.name, v) for v in n.operands)
        if ops != n.operands:
            n = replace(n, operands=ops)
        if n.regions:
            inner = dict(seen)
            n = replace(n, regions=tuple(Region(r.params, cse_block(r.nodes, inner, mapping)) for r in n.regions))
            out.append(n)
            continue
        if not n.results or n.op in ("yield", "return"):
            out.append(n)
            continue
        k = _key(n)
        if k in seen:
            for r, earlier in zip(n.results, seen[k].results):
                mapping[r.name] = earlier
            continue
        seen[k] = n
        out.append(n)
    return tuple(out)


@register
@dataclass(frozen=True)
class CSE(Pass):
    name = "cse"

    def run(self, graph):
        return with_nodes(graph, cse_block(graph.nodes, {}, {}))
