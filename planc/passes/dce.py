"""dce: drop nodes whose results nobody uses.

A reveal whose result is not returned has no effect and goes too; so do loads that
nothing reads (the party is then not even asked for that tag). Loop bodies are cleaned
inside; a loop none of whose results is used disappears whole.
"""
from __future__ import annotations

from dataclasses import dataclass

from .base import Pass, register
from .rewrite import map_blocks, used_names, with_nodes


def dce_block(nodes):
    *body, term = nodes
    live = {v.name for v in term.operands}
    kept = [term]
    for n in reversed(body):
        if any(r.name in live for r in n.results):
            kept.append(n)
            live.update(v.name for v in n.operands)
            for r in n.regions:
                live |= used_names(r.nodes)
    return tuple(reversed(kept))


@register
@dataclass(frozen=True)
class DCE(Pass):
    name = "dce"

    def run(self, graph):
        return with_nodes(graph, map_blocks(graph.nodes, dce_block))
