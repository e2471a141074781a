"""A networkx view of a graph, for drawing (`planc graph`) and for graph algorithms.

One networkx node per IR node, loop bodies included: their nodes carry `parent`, the key
of the loop that owns them. Edges run from the node defining a value to each node using
it (once per use, hence a MultiDiGraph), labelled with the value's name. A loop body's
parameters are defined by the loop node itself.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import networkx as nx

if TYPE_CHECKING:  # annotations only: graph.py imports this module for Graph.to_networkx
    from .graph import Graph, Node


def node_key(n: Node, index: int) -> str:
    # '#' never occurs in a value name, so the two kinds of keys cannot collide
    return n.results[0].name if n.results else f"{n.op}#{index}"


def to_networkx(g: Graph) -> nx.MultiDiGraph:
    out = nx.MultiDiGraph(name=g.name, parties=list(g.parties))
    definer: dict[str, str] = {}  # value name -> key of the node defining it
    counter = [0]

    def add(nodes, parent):
        for n in nodes:
            key = node_key(n, counter[0])
            counter[0] += 1
            # strings only (no None) so that GraphML / dot writers accept every attribute
            attrs = dict(
                op=n.op,
                types=", ".join(str(r.type) for r in n.results),
                vis=str(n.results[0].type.vis) if n.results else "",
                loc=str(n.loc) if n.loc else "",
            )
            if parent is not None:
                attrs["parent"] = parent
            out.add_node(key, **attrs)
            for v in n.operands:
                if v.name in definer:
                    out.add_edge(definer[v.name], key, label=v.name, type=str(v.type))
            for r in n.regions:
                for p in r.params:
                    definer[p.name] = key
                add(r.nodes, key)
            for r in n.results:
                definer[r.name] = key

    add(g.nodes, None)
    return out
