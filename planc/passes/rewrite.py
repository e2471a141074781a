"""Helpers shared by passes: renaming uses, walking blocks, fresh names."""
from __future__ import annotations

from dataclasses import replace

from planc.ir.graph import Graph, Region, Value


def substitute(nodes, mapping: dict[str, Value]):
    """Nodes with every operand named in `mapping` replaced (regions included)."""
    if not mapping:
        return tuple(nodes)
    out = []
    for n in nodes:
        ops = tuple(mapping.get(v.name, v) for v in n.operands)
        regs = tuple(Region(r.params, substitute(r.nodes, mapping)) for r in n.regions)
        if ops != n.operands or regs != n.regions:
            n = replace(n, operands=ops, regions=regs)
        out.append(n)
    return tuple(out)


def resolve(mapping: dict[str, Value]) -> dict[str, Value]:
    """Follow chains a -> b -> c so every entry points at its final value."""
    out = {}
    for k, v in mapping.items():
        seen = {k}
        while v.name in mapping and v.name not in seen:
            seen.add(v.name)
            v = mapping[v.name]
        out[k] = v
    return out


def with_nodes(g: Graph, nodes) -> Graph:
    return replace(g, nodes=tuple(nodes))


def used_names(nodes) -> set[str]:
    names = set()
    for n in nodes:
        names.update(v.name for v in n.operands)
        for r in n.regions:
            names |= used_names(r.nodes)
    return names


def all_names(g: Graph) -> set[str]:
    names = set()
    for n in g.walk():
        names.update(r.name for r in n.results)
        for r in n.regions:
            names.update(p.name for p in r.params)
    return names


class Namer:
    """Fresh value names that clash with nothing in the graph."""

    def __init__(self, g: Graph):
        self.used = all_names(g)

    def __call__(self, hint: str) -> str:
        name, i = hint, 1
        while name in self.used:
            name = f"{hint}_{i}"
            i += 1
        self.used.add(name)
        return name


def map_blocks(nodes, fn):
    """Apply fn(tuple of nodes) -> tuple of nodes to a block and, first, to every nested block."""
    out = []
    for n in nodes:
        if n.regions:
            n = replace(n, regions=tuple(Region(r.params, map_blocks(r.nodes, fn)) for r in n.regions))
        out.append(n)
    return fn(tuple(out))

