"""licm: hoist loop-invariant nodes out of loop bodies.

A body node whose operands are all defined outside the loop (or by nodes already
hoisted) computes the same value on every trip: it moves in front of the loop, so a
1000-trip loop computes it once — for a secret op, that is 999 fewer protocol runs.
Nodes with regions stay where they are.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from planc.ir.graph import Region

from .base import Pass, register
from .rewrite import with_nodes


def hoist_block(nodes):
    out = []
    for n in nodes:
        if n.op == "loop":
            (body,) = n.regions
            inner = hoist_block(body.nodes)
            local = {p.name for p in body.params}
            moved, kept = [], []
            for m in inner:
                reads = {v.name for v in m.operands}
                if m.op != "yield" and not m.regions and m.results and not (reads & local):
                    moved.append(m)
                else:
                    kept.append(m)
                    local.update(r.name for r in m.results)
            out.extend(moved)
            n = replace(n, regions=(Region(body.params, tuple(kept)),))
        elif n.regions:
            n = replace(n, regions=tuple(Region(r.params, hoist_block(r.nodes)) for r in n.regions))
        out.append(n)
    return tuple(out)


@register
@dataclass(frozen=True)
class LICM(Pass):
    name = "licm"

    def run(self, graph):
        return with_nodes(graph, hoist_block(graph.nodes))
