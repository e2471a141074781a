"""Facts about a plan that `planc show` prints: who gives what, who gets what, and the
settings it runs with. Linear in the plan: one walk, then lookups."""
from __future__ import annotations

from collections import Counter

from planc.ir import ops


def summarize(plan) -> dict:
    """nodes, inputs (party, tag, type, source), out_locs, constants (name, type, bytes,
    origin), histogram (op, count, communicates), settings (name, value, "set by the plan"
    or "default", what it means: every setting of ``planc.ir.plan.SETTINGS``)."""
    g = plan.graph
    defs = {r.name: n for n in g.walk() for r in n.results}
    const_types = {}
    for n in g.walk():
        if n.op == "const" and n.attr("name") is not None:
            const_types.setdefault(n.attr("name"), str(n.result.type))
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
        ty = const_types.get(name, "?")
        constants.append((name, ty, t.numel() * t.element_size(), plan.captured.get(name, "")))
    hist = Counter(n.op for n in g.walk() if n.op not in ("return", "yield"))
    histogram = [(op, k, ops.REGISTRY[op].communicates) for op, k in sorted(hist.items(), key=lambda x: (-x[1], x[0]))]
    return {
        "nodes": sum(hist.values()),
        "inputs": inputs,
        "out_locs": out_locs,
        "constants": constants,
        "histogram": histogram,
        "settings": settings_rows(getattr(plan, "meta", {}) or {}),
    }


def settings_rows(meta: dict) -> list[tuple[str, str, str, str]]:
    """(name, value, "set by the plan" or "default", what it means) for every setting; a
    value the plan sets out of range (a Plan made in memory, never read from a file) is
    shown with what is wrong with it."""
    from planc.ir.plan import SETTINGS

    rows = []
    for name, s in SETTINGS.items():
        if name in meta:
            v = meta[name]
            problem = s.problem(v)
            rows.append((name, repr(v) if problem is None else f"{v!r} (invalid: {problem})", "set by the plan",
                         f"{s.doc}; {s.lo}..{s.hi}"))
        else:
            rows.append((name, repr(s.default), "default", f"{s.doc}; {s.lo}..{s.hi}"))
    return rows


def defs_type(g, const_name: str) -> str:
    """The type of the const naming `const_name` (one walk: for one name; summarize looks
    all of them up at once)."""
    for n in g.walk():
        if n.op == "const" and n.attr("name") == const_name:
            return str(n.result.type)
    return "?"
