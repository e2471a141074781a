"""Patterns of several ONNX nodes that planc lowers as one op.

The exact gelu, as torch.onnx.export writes it before opset 20 (and many models after):

    t = Div(x, sqrt(2)) | Mul(x, 1/sqrt(2));  e = Erf(t);  s = Add(e, 1);
    m = Mul(x, s);  y = Mul(m, 0.5)            (or Mul(x, Mul(s, 0.5)), operands either way)

becomes one `gelu` (7 rounds) instead of erf, a product and a scaling (8 rounds, with
erf's error multiplied by |x|). The chain's inner values must have no other use.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
from onnx import numpy_helper

from .context import attrs

SQRT2 = math.sqrt(2.0)


def _consts(model):
    """name -> array for Constant outputs and initializers (what a pattern may test)."""
    out = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" and "value" in attrs(n):
            out[n.output[0]] = np.asarray(attrs(n)["value"])
    return out


def _is(c, name, v) -> bool:
    a = c.get(name)
    return a is not None and a.size == 1 and abs(float(a.reshape(())) - v) <= 1e-6 * max(1.0, abs(v))


def gelu_chains(model):
    """{index of the chain's last node: (x's name, the chain's node indices)}."""
    g = model.graph
    c = _consts(model)
    users: dict[str, list[int]] = {}
    for i, n in enumerate(g.node):
        for name in n.input:
            users.setdefault(name, []).append(i)
    outputs = {o.name for o in g.output}
    made = {o: i for i, n in enumerate(g.node) for o in n.output}

    def only_use(name):
        u = users.get(name, [])
        return u[0] if len(u) == 1 and name not in outputs else None

    def other(n, name):
        a, b = n.input
        return b if a == name else a

    found = {}
    for i, n in enumerate(g.node):
        if n.op_type != "Erf":
            continue
        t = made.get(n.input[0])
        if t is None:
            continue
        tn = g.node[t]
        if tn.op_type == "Div" and _is(c, tn.input[1], SQRT2):
            x = tn.input[0]
        elif tn.op_type == "Mul" and (_is(c, tn.input[1], 1 / SQRT2) or _is(c, tn.input[0], 1 / SQRT2)):
            x = tn.input[0] if _is(c, tn.input[1], 1 / SQRT2) else tn.input[1]
        else:
            continue
        if only_use(tn.output[0]) != i:
            continue
        a = only_use(n.output[0])
        if a is None or g.node[a].op_type != "Add" or not _is(c, other(g.node[a], n.output[0]), 1.0):
            continue
        m = only_use(g.node[a].output[0])
        if m is None or g.node[m].op_type != "Mul":
            continue
        mn = g.node[m]
        o = other(mn, g.node[a].output[0])
        if o == x:  # Mul(x, s) then Mul(., 0.5)
            h = only_use(mn.output[0])
            if h is None or g.node[h].op_type != "Mul" or not _is(c, other(g.node[h], mn.output[0]), 0.5):
                continue
            found[h] = (x, (t, i, a, m, h))
        elif _is(c, o, 0.5):  # Mul(s, 0.5) then Mul(x, .)
            h = only_use(mn.output[0])
            if h is None or g.node[h].op_type != "Mul" or other(g.node[h], mn.output[0]) != x:
                continue
            found[h] = (x, (t, i, a, m, h))
    return found


def fusions(model):
    """(indices of nodes to skip, {index: rule run in place of the node's own})."""
    skip, rules = set(), {}
    for last, (x, chain) in gelu_chains(model).items():
        skip.update(chain[:-1])

        def rule(cx, n, xs, x=x):
            # located at the chain's last node, its class naming the whole pattern
            cx.loc = replace(cx.loc, module_class="Div+Erf+Add+Mul+Mul (gelu)")
            return cx.emit("gelu", [cx.env[x]], {"approximate": "none"})

        rules[last] = rule
    return frozenset(skip), rules
