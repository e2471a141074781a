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
from typing import TYPE_CHECKING, Iterator

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
    res = ", ".join(["%" + r.name for r in n.results])
    args = ", ".join(["%" + v.name for v in n.operands])
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


def _types(n: Node, names: dict | None = None) -> str:
    if names is None:
        return ", ".join(str(r.type) for r in n.results)
    out = []
    for r in n.results:  # a plan repeats a few types many times: print each once
        t = r.type
        s = names.get(id(t))  # by identity: cheaper than hashing; the graph keeps t alive
        if s is None:
            s = names[id(t)] = str(t)
        out.append(s)
    return ", ".join(out)


def fmt_loc(loc: Loc) -> str:
    """``loc("file":line)``, with ``in "module": "Class"`` for a node made in a submodule."""
    out = f"{json.dumps(loc.file)}:{loc.line}"
    if loc.module is not None:
        out += f" in {json.dumps(loc.module)}"
        if loc.module_class is not None:
            out += f": {json.dumps(loc.module_class)}"
    return f"loc({out})"


def _loc(n: Node, files: dict | None = None) -> str:
    loc = n.loc
    if not loc:
        return ""
    if files is None or loc.module is not None:
        return "  " + fmt_loc(loc)
    f = files.get(loc.file)  # a plan names a few files many times: quote each once
    if f is None:
        f = files[loc.file] = json.dumps(loc.file)
    return f"  loc({f}:{loc.line})"


def iter_lines(g: Graph) -> Iterator[tuple[str, Node | None]]:
    """The printed lines of `g` one by one, each with the node it starts (None for the
    header, a loop body's parameters and closing lines). Iterative: any depth of nesting
    prints without recursion, and a reader that needs only the first lines stops early."""
    parties = ", ".join(f"{p}={i}" for i, p in enumerate(g.parties))
    yield f"plan @{g.name}(parties: {parties}) {{", None
    names: dict = {}
    files: dict = {}
    # one entry per open block: its nodes, its indent, the line that closes it
    stack = [(iter(g.nodes), "  ", None)]
    while stack:
        nodes, indent, closing = stack[-1]
        for n in nodes:
            head = indent + _head(g, n)
            if n.regions:
                (body,) = n.regions
                yield head + " {", n
                params = ", ".join(f"{p}: {p.type}" for p in body.params)
                yield f"{indent}  ^({params}):", None
                stack.append((iter(body.nodes), indent + "    ", f"{indent}}} : {_types(n, names)}{_loc(n, files)}"))
                break
            if n.results:
                head = head.ljust(TYPE_COLUMN) + " : " + _types(n, names)
            yield head + _loc(n, files), n
        else:
            stack.pop()
            if closing is not None:
                yield closing, None
    yield "}", None


def print_lines(g: Graph) -> list[tuple[str, Node | None]]:
    """The printed lines of `g`, each with the node it starts (None for the header, a loop
    body's parameters and closing lines): what error messages quote as context."""
    return list(iter_lines(g))


def print_graph(g: Graph) -> str:
    return "\n".join(line for line, _ in iter_lines(g)) + "\n"
