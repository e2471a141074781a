"""identities: x*1, 1*x, x+0, 0+x, x-0, x/1, --x, double transposes, identity permutes.

A rewrite applies only when the kept value already has the node's exact result type
(shape, dtype and visibility), so broadcasting and promotion are never changed.
"""
from __future__ import annotations

from dataclasses import dataclass

from .base import Pass, register
from .rewrite import map_blocks, resolve, substitute, with_nodes


def _scalar(defs, v):
    n = defs.get(v.name)
    if n is not None and n.op == "const" and n.attr("value") is not None:
        return n.attr("value")
    return None


def identity_of(n, defs):
    """The operand `n` equals, or None."""
    t = n.results[0].type if n.results else None
    ops = n.operands
    cand = None
    if n.op in ("mul",) and len(ops) == 2:
        if _scalar(defs, ops[1]) == 1.0:
            cand = ops[0]
        elif _scalar(defs, ops[0]) == 1.0:
            cand = ops[1]
    elif n.op == "add":
        if _scalar(defs, ops[1]) == 0.0:
            cand = ops[0]
        elif _scalar(defs, ops[0]) == 0.0:
            cand = ops[1]
    elif n.op in ("sub", "div"):
        if _scalar(defs, ops[1]) == (0.0 if n.op == "sub" else 1.0):
            cand = ops[0]
    elif n.op == "neg":
        d = defs.get(ops[0].name)
        if d is not None and d.op == "neg":
            cand = d.operands[0]
    elif n.op == "transpose":
        d = defs.get(ops[0].name)
        same = {n.attr("dim0"), n.attr("dim1")}
        if d is not None and d.op == "transpose" and {d.attr("dim0"), d.attr("dim1")} == same:
            cand = d.operands[0]
        elif n.attr("dim0") == n.attr("dim1"):
            cand = ops[0]
    elif n.op == "permute" and tuple(n.attr("dims")) == tuple(range(len(n.attr("dims")))):
        cand = ops[0]
    elif n.op in ("reshape", "expand") and ops and ops[0].type.shape == t.shape:
        cand = ops[0]
    if cand is not None and cand.type == t:
        return cand
    return None


def simplify_block(nodes):
    defs, mapping, out = {}, {}, []
    for n in nodes:
        if mapping:
            (n,) = substitute([n], resolve(mapping))
        for r in n.results:
            defs[r.name] = n
        keep = identity_of(n, defs) if n.results and not n.regions else None
        if keep is not None:
            mapping[n.results[0].name] = keep
            continue
        out.append(n)
    return tuple(out)


@register
@dataclass(frozen=True)
class Identities(Pass):
    name = "identities"

    def run(self, graph):
        return with_nodes(graph, map_blocks(graph.nodes, simplify_block))
