"""A plan as a Graphviz picture, coloured by visibility.

public: white; private<k>: one pastel per party; secret: red. Loop bodies are boxed
clusters. We write DOT text ourselves and leave layout to Graphviz's `dot`.
"""
from __future__ import annotations

import html
import json

from planc.ir.graph import Graph

PARTY_COLOURS = ["#cfe8ff", "#d7f5d0", "#fff1b8", "#f1d9ff", "#ffe0cc", "#d9f2f2"]
SECRET = "#ffb3b3"
PUBLIC = "#ffffff"


def _colour(t) -> str:
    v = t.vis
    if v.is_secret:
        return SECRET
    if v.is_private:
        return PARTY_COLOURS[v.owner % len(PARTY_COLOURS)]
    return PUBLIC


def _q(s: str) -> str:
    return json.dumps(s)


def to_dot(g: Graph) -> str:
    out = [f"digraph {_q(g.name)} {{", "  rankdir=TB;", '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
           '  edge [fontname="Helvetica", fontsize=8, color="#666666"];']
    defs: dict[str, str] = {}
    counter = [0]

    def node_id(n) -> str:
        counter[0] += 1
        return f"n{counter[0]}"

    def emit(nodes, indent):
        for n in nodes:
            nid = node_id(n)
            for r in n.results:
                defs[r.name] = nid
            if n.op == "load":
                label = f"load {n.attr('tag')}\\nfrom {g.parties[n.attr('owner')]}"
            elif n.op == "reveal":
                to = n.attr("to")
                label = f"reveal to {'all' if to == -1 else g.parties[to]}"
            else:
                label = n.op
            if n.results:
                label += "\\n" + ", ".join(str(r.type) for r in n.results)
            fill = _colour(n.results[0].type) if n.results else "#eeeeee"
            if n.regions:
                trips = n.attr("trips")
                out.append(f"{indent}subgraph cluster_{nid} {{ label={_q(f'loop x{trips}')}; style=dashed;")
                for p in n.regions[0].params:
                    pid = node_id(None)
                    defs[p.name] = pid
                    out.append(f"{indent}  {pid} [label={_q(f'%{p.name}: {p.type}')}, fillcolor={_q(_colour(p.type))}, shape=ellipse];")
                emit(n.regions[0].nodes, indent + "  ")
                out.append(f"{indent}}}")
            out.append(f"{indent}{nid} [label={_q(label).replace(chr(92) * 2, chr(92))}, fillcolor={_q(fill)}];")
            for v in n.operands:
                if v.name in defs:
                    out.append(f"{indent}{defs[v.name]} -> {nid} [label={_q('%' + v.name)}];")

    emit(g.nodes, "  ")
    out.append(f"  legend [shape=plaintext, style=\"\", label=<{legend_html(g)}>];")
    out.append("}")
    return "\n".join(out) + "\n"


def legend_entries(g: Graph) -> list[tuple[str, str]]:
    """(fill colour, what it means) for every colour the picture can use."""
    rows = [(PARTY_COLOURS[i % len(PARTY_COLOURS)], f"{p}: private<{i}> (held by {p} only)")
            for i, p in enumerate(g.parties)]
    return rows + [(SECRET, "secret (shared, seen by nobody)"), (PUBLIC, "public (every party)")]


def legend_html(g: Graph) -> str:
    """A Graphviz HTML-like table: one colour swatch and its meaning per row."""
    rows = "".join(
        f'<TR><TD BGCOLOR="{colour}" WIDTH="18" HEIGHT="12" FIXEDSIZE="TRUE"></TD>'
        f'<TD ALIGN="LEFT" BORDER="0">{html.escape(text)}</TD></TR>'
        for colour, text in legend_entries(g))
    return ('<TABLE BORDER="1" COLOR="#999999" BGCOLOR="#f8f8f8" CELLBORDER="1" CELLSPACING="3" CELLPADDING="2">'
            '<TR><TD COLSPAN="2" BORDER="0"><B>legend</B></TD></TR>' + rows + "</TABLE>")
