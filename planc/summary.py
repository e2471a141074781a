"""Facts about a plan that `planc show` prints: who gives what, who gets what."""
from __future__ import annotations

from collections import Counter

from planc.ir import ops


def summarize(plan) -> dict:
    g = plan.graph
    defs = {r.name: n for n in g.walk() for r in n.results}
    inputs = []
    for n in g.walk():
        loc = str(n.loc) if n.loc else ""
        if n.op == "load":
            inputs.append((g.parties[n.attr("owner")], n.attr("tag"), str(n.result.type), loc))
        elif n.op == "call":
            inputs.append((g.parties[n.attr("owner")], f"model {n.attr('tag')}", "(linked at the worker)", loc))
        elif n.op == "input":
            inputs.append(("(runner)", f"input {n.attr('index')}", str(n.result.type), loc))
    out_locs = []
    for v in g.outputs:
        n = defs.get(v.name)
        out_locs.append(str(n.loc) if n is not None and n.loc else "")
    constants = []
    for name, t in sorted(plan.constants.items()):
        ty = defs_type(g, name)
        constants.append((name, ty, t.numel() * t.element_size(), plan.captured.get(name, "")))
    hist = Counter(n.op for n in g.walk() if n.op not in ("return", "yield"))
    histogram = [(op, k, ops.REGISTRY[op].communicates) for op, k in sorted(hist.items(), key=lambda x: (-x[1], x[0]))]
    return {
        "nodes": sum(hist.values()),
        "inputs": inputs,
        "out_locs": out_locs,
        "constants": constants,
        "histogram": histogram,
    }


def defs_type(g, const_name: str) -> str:
    for n in g.walk():
        if n.op == "const" and n.attr("name") == const_name:
            return str(n.result.type)
    return "?"
