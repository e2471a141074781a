"""Gradients of the shape ops and of the visibility moves (identities for gradients)."""
from __future__ import annotations

from planc.ir.ops import OP

from .emit import vjp


@vjp(OP.share, OP.reveal)
def _move(e, n, cts):
    # who sees a value changes nothing about it; the cotangent keeps the visibility it has
    return [cts[0]]


@vjp(OP.reshape, OP.flatten, OP.squeeze, OP.unsqueeze)
def _reshape(e, n, cts):
    return [e.reshape(cts[0], n.operands[0].type.shape)]


@vjp(OP.expand)
def _expand(e, n, cts):
    return [e.unbroadcast(cts[0], n.operands[0])]


@vjp(OP.transpose)
def _transpose(e, n, cts):
    return [e.op("transpose", cts[0], dim0=n.attr("dim0"), dim1=n.attr("dim1"))]


@vjp(OP.permute)
def _permute(e, n, cts):
    p = n.attr("dims")
    inv = tuple(sorted(range(len(p)), key=lambda i: p[i]))
    return [e.op("permute", cts[0], dims=inv)]


@vjp(OP.slice_)
def _slice(e, n, cts):
    (g,), (x,) = cts, n.operands
    d, start, step = n.attr("dim"), n.attr("start"), n.attr("step")
    size = x.type.shape[d]
    k = g.type.shape[d]
    if k == 0:
        return [e.zeros(x)]
    g = e.dilate(g, d, step)
    return [e.zero_extend(g, d, start, size - start - ((k - 1) * step + 1))]


@vjp(OP.index_)
def _index(e, n, cts):
    (g,), (x,) = cts, n.operands
    d, i = n.attr("dim"), n.attr("index")
    return [e.zero_extend(e.op("unsqueeze", g, dim=d), d, i, x.type.shape[d] - 1 - i)]


@vjp(OP.cat)
def _cat(e, n, cts):
    (g,), d = cts, n.attr("dim")
    out, at = [], 0
    for x in n.operands:
        k = x.type.shape[d]
        out.append(e.op("slice", g, dim=d, start=at, end=at + k) if e.needs(x) else None)
        at += k
    return out


@vjp(OP.stack)
def _stack(e, n, cts):
    (g,), d = cts, n.attr("dim")
    return [e.op("index", g, dim=d, index=k) if e.needs(x) else None for k, x in enumerate(n.operands)]


@vjp(OP.pad)
def _pad(e, n, cts):
    (g,), (x,) = cts, n.operands
    p, r = n.attr("pads"), x.type.rank
    for i in range(len(p) // 2):
        d = r - 1 - i
        if p[2 * i] or p[2 * i + 1]:
            g = e.op("slice", g, dim=d, start=p[2 * i], end=p[2 * i] + x.type.shape[d])
    return [g]
