"""visibility: re-infer every value's visibility from the loads and inputs.

- results get the type their op's rule gives for the (possibly changed) operands;
- where values of different owners, or a private value and a secret, meet in an op that
  needs shares, a ``share`` of the private operand is inserted;
- a product (an op with the ``product`` trait) whose operand is a ``share`` of a
  private value takes the private value itself: its protocol then lets the owner send
  its masked operand once instead of every party opening shares of it (the cheaper
  private x secret protocol); the unused share disappears in dce;
- computation on one party's values stays ``private<k>``: it runs locally at k.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from planc.ir import ops
from planc.ir.graph import Node, Region, Value

from .base import Pass, register
from .rewrite import Namer, with_nodes

@register
@dataclass(frozen=True)
class Visibility(Pass):
    name = "visibility"

    def run(self, graph):
        namer = Namer(graph)
        defs: dict[str, Node] = {}
        mapping: dict[str, Value] = {}

        def block(nodes):
            out = []
            for n in nodes:
                n = replace(n, operands=tuple(mapping.get(v.name, v) for v in n.operands))
                if n.regions:
                    n = replace(n, regions=tuple(Region(r.params, block(r.nodes)) for r in n.regions))
                d = ops.REGISTRY[n.op]
                if d.product:
                    n = replace(n, operands=tuple(_unshared(defs, v) for v in n.operands))
                if not d.declared and not d.terminator:
                    n = self._retype(n, out, namer, mapping)
                for r in n.results:
                    defs[r.name] = n
                out.append(n)
            return tuple(out)

        return with_nodes(graph, block(graph.nodes))

    def _retype(self, n, out, namer, mapping):
        attrs = n.attr_dict
        try:
            types = ops.infer_types(n.op, [v.type for v in n.operands], attrs)
        except ops.MixesSecret:
            shared = []
            for v in n.operands:
                if v.type.vis.is_private:
                    s = Value(namer(f"{v.name}_s"), v.type.with_vis(ops.SECRET))
                    out.append(Node("share", (v,), (s,), (), (), n.loc))
                    v = s
                shared.append(v)
            n = replace(n, operands=tuple(shared))
            types = ops.infer_types(n.op, [v.type for v in n.operands], attrs)
        if [r.type for r in n.results] != types:
            new = tuple(Value(r.name, t) for r, t in zip(n.results, types))
            for r, nr in zip(n.results, new):
                mapping[r.name] = nr
            n = replace(n, results=new)
        return n


def _unshared(defs, v: Value) -> Value:
    d = defs.get(v.name)
    if d is not None and d.op == "share" and d.operands[0].type.vis.is_private:
        return d.operands[0]
    return v
