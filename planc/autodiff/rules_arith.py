"""Gradients of arithmetic, products, reductions and selection."""
from __future__ import annotations

import torch

from planc.ir.ops import OP

from .emit import vjp


@vjp(OP.add)
def _add(e, n, cts):
    (g,), (x, y) = cts, n.operands
    return [e.unbroadcast(g, x), e.unbroadcast(g, y)]


@vjp(OP.sub)
def _sub(e, n, cts):
    (g,), (x, y) = cts, n.operands
    return [e.unbroadcast(g, x), e.unbroadcast(e.neg(g), y) if e.needs(y) else None]


@vjp(OP.mul)
def _mul(e, n, cts):
    (g,), (x, y) = cts, n.operands
    return [e.unbroadcast(e.mul(g, y), x) if e.needs(x) else None,
            e.unbroadcast(e.mul(g, x), y) if e.needs(y) else None]


@vjp(OP.div)
def _div(e, n, cts):
    (g,), (x, y) = cts, n.operands
    gx = e.divide(g, y)
    # d(x/y)/dy = -(x/y)/y
    gy = e.neg(e.divide(e.mul(g, n.result), y)) if e.needs(y) else None
    return [e.unbroadcast(gx, x) if e.needs(x) else None, e.unbroadcast(gy, y)]


@vjp(OP.neg)
def _neg(e, n, cts):
    return [e.neg(cts[0])]


def _t(e, v):
    r = v.type.rank
    return e.op("transpose", v, dim0=r - 2, dim1=r - 1)


@vjp(OP.matmul)
def _matmul(e, n, cts):
    (g,), (x, y) = cts, n.operands
    # vectors as matrices: [k] @ [..., k, m] is [1, k] @ ...; [..., n, k] @ [k] is ... @ [k, 1]
    xm = e.op("unsqueeze", x, dim=0) if x.type.rank == 1 else x
    ym = e.op("unsqueeze", y, dim=1) if y.type.rank == 1 else y
    gshape = list(g.type.shape)
    if y.type.rank == 1:
        gshape.append(1)
    if x.type.rank == 1:
        gshape.insert(len(gshape) - 1, 1)
    gm = e.reshape(g, gshape)
    gx = e.reshape(e.unbroadcast(e.op("matmul", gm, _t(e, ym)), xm), x.type.shape) if e.needs(x) else None
    gy = e.reshape(e.unbroadcast(e.op("matmul", _t(e, xm), gm), ym), y.type.shape) if e.needs(y) else None
    return [gx, gy]


@vjp(OP.linear)
def _linear(e, n, cts):
    (g,), (x, w, *b) = cts, n.operands
    o, i = w.type.shape
    gx = e.op("matmul", g, w) if e.needs(x) else None
    gw = None
    if e.needs(w):
        g2, x2 = e.reshape(g, (g.type.numel // o, o)), e.reshape(x, (x.type.numel // i, i))
        gw = e.op("matmul", e.op("transpose", g2, dim0=0, dim1=1), x2)
    out = [gx, gw]
    if b:
        out.append(e.sum(g, range(g.type.rank - 1)) if e.needs(b[0]) else None)
    return out


def _keep_shape(x, dims):
    return tuple(1 if i in dims else s for i, s in enumerate(x.type.shape))


def _dims(x, d):
    return tuple(range(x.type.rank)) if d is None else tuple(d)


@vjp(OP.sum_)
def _sum(e, n, cts):
    (g,), (x,) = cts, n.operands
    dims = _dims(x, n.attr("dim"))
    return [e.expand_to(e.reshape(g, _keep_shape(x, dims)), x.type.shape)]


@vjp(OP.mean)
def _mean(e, n, cts):
    (g,), (x,) = cts, n.operands
    dims = _dims(x, n.attr("dim"))
    count = 1
    for d in dims:
        count *= x.type.shape[d]
    gx = e.expand_to(e.reshape(g, _keep_shape(x, dims)), x.type.shape)
    return [e.scale(gx, 1.0 / max(count, 1))]


@vjp(OP.max_)
def _max(e, n, cts):
    # to every element equal to the maximum (torch: to the first one along a dim, shared
    # evenly among ties for the maximum of all elements; alike without ties)
    (g,), (x,) = cts, n.operands
    d = n.attr("dim")
    keep = _keep_shape(x, _dims(x, None if d is None else (d,)))
    top = e.expand_to(e.reshape(n.result, keep), x.type.shape)
    mask = e.op("ge", x, top)
    return [e.mul(e.expand_to(e.reshape(g, keep), x.type.shape), mask)]


@vjp(OP.where)
def _where(e, n, cts):
    (g,), (c, x, y) = cts, n.operands
    zero = e.const(0.0, g)
    return [None,
            e.unbroadcast(e.op("where", c, g, zero), x) if e.needs(x) else None,
            e.unbroadcast(e.op("where", c, zero, g), y) if e.needs(y) else None]


@vjp(OP.gather)
def _gather(e, n, cts):
    # the transpose of picking rows: a one-hot product, onehot[p, s] = (index[p] == s)
    (g,), (x, idx) = cts, n.operands
    d = n.attr("dim")
    shape = x.type.shape
    size = shape[d]
    a = 1
    for s in shape[:d]:
        a *= s
    bsz = x.type.numel // max(a * size, 1)
    p = idx.type.numel
    flat = e.reshape(idx, (p,))
    flat = e.op("where", e.op("lt", flat, e.tensor(torch.tensor(0, dtype=torch.int64), "zero_i64")),
                e.op("add", flat, e.tensor(torch.tensor(size, dtype=torch.int64), f"size_{size}")), flat)
    onehot = e.op("eq", e.op("unsqueeze", flat, dim=1), e.tensor(torch.arange(size), f"arange_{size}"))
    onehot = e.mul(onehot, e.const(1.0, g))  # [P, S] as numbers
    g3 = e.op("transpose", e.reshape(g, (a, p, bsz)), dim0=1, dim1=2)  # [A, B, P]
    gx = e.op("transpose", e.op("matmul", g3, onehot), dim0=1, dim1=2)  # [A, S, B]
    return [e.reshape(gx, shape), None]
