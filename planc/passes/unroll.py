"""unroll-loops: replace a loop by copies of its body.

Loops whose trips times body size is within `budget` nodes are unrolled (all loops
when `everything` is set). The counter becomes a public scalar constant per copy.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from planc.ir.graph import Node, Value, make_attrs

from .base import Pass, register
from .rewrite import Namer, map_blocks, resolve, substitute, used_names, with_nodes


def _size(nodes) -> int:
    return sum(1 + sum(_size(r.nodes) for r in n.regions) for n in nodes)


def _copy(nodes, mapping, namer):
    """Copies of `nodes` with fresh result names; `mapping` renames uses."""
    out = []
    for n in nodes:
        (n,) = substitute([n], mapping)
        new_results = tuple(Value(namer(r.name), r.type) for r in n.results)
        for r, nr in zip(n.results, new_results):
            mapping[r.name] = nr
        regions = n.regions
        if regions:
            regions = tuple(_copy_region(r, mapping, namer) for r in regions)
        out.append(replace(n, results=new_results, regions=regions))
    return out


def _copy_region(r, mapping, namer):
    from planc.ir.graph import Region

    params = tuple(Value(namer(p.name), p.type) for p in r.params)
    inner = dict(mapping)
    for p, q in zip(r.params, params):
        inner[p.name] = q
    return Region(params, tuple(_copy(r.nodes, inner, namer)))


@register
@dataclass(frozen=True)
class UnrollLoops(Pass):
    name = "unroll-loops"
    budget: int = 2000
    everything: bool = False

    def run(self, graph):
        namer = Namer(graph)

        def block(nodes):
            out, mapping = [], {}
            for n in nodes:
                if mapping:
                    (n,) = substitute([n], resolve(mapping))
                if n.op != "loop" or not (self.everything or n.attr("trips") * _size(n.regions[0].nodes) <= self.budget):
                    out.append(n)
                    continue
                (body,) = n.regions
                carried = list(n.operands)
                ivar = body.params[0]
                uses_i = ivar.name in used_names(body.nodes)
                for i in range(n.attr("trips")):
                    m = {}
                    if uses_i:  # the counter becomes a constant only where the body reads it
                        c = Node("const", (), (Value(namer(f"i{i}"), ivar.type),),
                                 make_attrs({"name": None, "value": float(i)}), (), n.loc)
                        out.append(c)
                        m[ivar.name] = c.result
                    m.update({p.name: v for p, v in zip(body.params[1:], carried)})
                    copies = _copy(body.nodes[:-1], m, namer)
                    out.extend(copies)
                    carried = [m.get(v.name, v) for v in body.nodes[-1].operands]
                for r, v in zip(n.results, carried):
                    mapping[r.name] = v
            return tuple(out)

        return with_nodes(graph, map_blocks(graph.nodes, block))
