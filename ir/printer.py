"""Print a graph as text that people read and ``ir.parser`` reads back.

Layout::

    plan @name(parties: alice=0, bob=1) {
      %x = load "mnist/test" from bob            : private<1> f32[100,1,28,28]  loc("a.py":12)
      %h = conv2d %x1, %w1 {stride=[2,2]}         : secret f32[100,16,13,13]     loc("a.py":20)
      %s = loop %h {trips=10} {
        ^(%i: public i64[], %c: secret f32[...]):
          ...
          yield %c2
      } : secret f32[...]
      %y = reveal %s to bob                       : private<1> f32[...]
      return %y
    }

A node made inside a submodule names it and its class after the line:
``loc("a.py":20 in "features.3": "Conv2d")``.

Attributes equal to their declared default are left out; the parser fills them in.
"""
from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

from . import ops

if TYPE_CHECKING:  # annotations only: graph.py imports this module to print itself
    from .graph import Graph, Loc, Node

TYPE_COLUMN = 44


def fmt_attr_value(v) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, tuple):
        return "[" + ", ".join(fmt_attr_value(x) for x in v) + "]"
    raise TypeError(f"cannot print attribute value {v!r}")


def _same(a, b) -> bool:
    # 1 == 1.0 == True in Python; an attribute equals its default only if the kind agrees too
    return type(a) is type(b) and a == b


def fmt_attrs(node: Node, skip=()) -> str:
    d = ops.REGISTRY.get(node.op)
    items = []
    for k, v in node.attrs:
        if k in skip:
            continue
        spec = d.attrs.get(k) if d else None
        if spec is not None and not spec.required and _same(v, spec.default):
            continue
        items.append(f"{k}={fmt_attr_value(v)}")
    return "{" + ", ".join(items) + "}" if items else ""


def _party(g: Graph, i: int) -> str:
    if i == -1:
        return "all"
    return g.parties[i] if 0 <= i < len(g.parties) else f"party{i}"


def _head(g: Graph, n: Node) -> str:
    """The part of a node's line before its type."""
    res = ", ".join(map(str, n.results))
    args = ", ".join(map(str, n.operands))
    if n.op == "load":
        body = f"load {json.dumps(n.attr('tag'))} from {_party(g, n.attr('owner'))}"
    elif n.op == "reveal":
        body = f"reveal {args} to {_party(g, n.attr('to'))}"
    elif n.op == "call":
        body = f"call {json.dumps(n.attr('tag'))} from {_party(g, n.attr('owner'))} ({args})"
    else:
        skip = ("trips",) if n.op == "loop" else ()
        parts = [n.op + (f" {n.attr('trips')}" if n.op == "loop" else "")]
        if args:
            parts.append(args)
        a = fmt_attrs(n, skip)
        if a:
            parts.append(a)
        body = " ".join(parts)
    return f"{res} = {body}" if res else body


def _types(n: Node) -> str:
    return ", ".join(str(r.type) for r in n.results)


def fmt_loc(loc: Loc) -> str:
    """``loc("file":line)``, with ``in "module": "Class"`` for a node made in a submodule."""
    out = f"{json.dumps(loc.file)}:{loc.line}"
    if loc.module is not None:
        out += f" in {json.dumps(loc.module)}"
        if loc.module_class is not None:
            out += f": {json.dumps(loc.module_class)}"
    return f"loc({out})"


def _loc(n: Node) -> str:
    return "  " + fmt_loc(n.loc) if n.loc else ""


def _lines(g: Graph, nodes, indent: str, out: list[tuple[str, Node | None]]):
    for n in nodes:
        head = indent + _head(g, n)
        if n.regions:
            (body,) = n.regions
            out.append((head + " {", n))
            params = ", ".join(f"{p}: {p.type}" for p in body.params)
            out.append((f"{indent}  ^({params}):", None))
            _lines(g, body.nodes, indent + "    ", out)
            out.append((f"{indent}}} : {_types(n)}{_loc(n)}", None))
            continue
        if n.results:
            head = head.ljust(TYPE_COLUMN) + " : " + _types(n)
        out.append((head + _loc(n), n))


def print_lines(g: Graph) -> list[tuple[str, Node | None]]:
    """The printed lines of `g`, each with the node it starts (None for the header, a loop
    body's parameters and closing lines): what error messages quote as context."""
    parties = ", ".join(f"{p}={i}" for i, p in enumerate(g.parties))
    out: list[tuple[str, Node | None]] = [(f"plan @{g.name}(parties: {parties}) {{", None)]
    _lines(g, g.nodes, "  ", out)
    out.append(("}", None))
    return out


def print_graph(g: Graph) -> str:
    return "\n".join(line for line, _ in print_lines(g)) + "\n"
