"""Gradients of the non-linear functions and the normalisations."""
from __future__ import annotations

import math

from planc.ir.ops import OP

from .emit import vjp


@vjp(OP.relu)
def _relu(e, n, cts):
    (g,), (x,) = cts, n.operands
    return [e.mul(g, e.op("gt", x, e.const(0.0, x)))]


@vjp(OP.sigmoid)
def _sigmoid(e, n, cts):
    y = n.result
    return [e.mul(cts[0], e.mul(y, e.sub(e.const(1.0, y), y)))]


@vjp(OP.tanh)
def _tanh(e, n, cts):
    y = n.result
    return [e.mul(cts[0], e.sub(e.const(1.0, y), e.mul(y, y)))]


@vjp(OP.exp)
def _exp(e, n, cts):
    return [e.mul(cts[0], n.result)]


@vjp(OP.log)
def _log(e, n, cts):
    return [e.divide(cts[0], n.operands[0])]


@vjp(OP.reciprocal)
def _reciprocal(e, n, cts):
    y = n.result
    return [e.neg(e.mul(cts[0], e.mul(y, y)))]


@vjp(OP.sqrt)
def _sqrt(e, n, cts):
    return [e.scale(e.divide(cts[0], n.result), 0.5)]


@vjp(OP.rsqrt)
def _rsqrt(e, n, cts):
    y = n.result
    return [e.scale(e.mul(cts[0], e.mul(y, e.mul(y, y))), -0.5)]


def _gauss(e, x):
    """exp(-x^2 / 2)."""
    return e.op("exp", e.scale(e.mul(x, x), -0.5))


@vjp(OP.erf)
def _erf(e, n, cts):
    x = n.operands[0]
    return [e.scale(e.mul(cts[0], e.op("exp", e.neg(e.mul(x, x)))), 2 / math.sqrt(math.pi))]


@vjp(OP.gelu)
def _gelu(e, n, cts):
    (g,), (x,) = cts, n.operands
    one = e.const(1.0, x)
    if n.attr("approximate") == "tanh":
        k, c = math.sqrt(2 / math.pi), 0.044715
        x2 = e.mul(x, x)
        t = e.op("tanh", e.scale(e.mul(x, e.add(one, e.scale(x2, c))), k))
        du = e.scale(e.add(one, e.scale(x2, 3 * c)), k)
        d = e.add(e.scale(e.add(one, t), 0.5), e.mul(e.scale(x, 0.5), e.mul(e.sub(one, e.mul(t, t)), du)))
    else:
        cdf = e.scale(e.add(one, e.op("erf", e.scale(x, 1 / math.sqrt(2)))), 0.5)
        d = e.add(cdf, e.scale(e.mul(x, _gauss(e, x)), 1 / math.sqrt(2 * math.pi)))
    return [e.mul(g, d)]


@vjp(OP.softmax)
def _softmax(e, n, cts):
    (g,), y, d = cts, n.result, n.attr("dim")
    return [e.mul(y, e.sub(g, e.sum(e.mul(g, y), (d,), keepdim=True)))]


@vjp(OP.log_softmax)
def _log_softmax(e, n, cts):
    (g,), (x,), d = cts, n.operands, n.attr("dim")
    return [e.sub(g, e.mul(e.op("softmax", x, dim=d), e.sum(g, (d,), keepdim=True)))]


@vjp(OP.layer_norm)
def _layer_norm(e, n, cts):
    (g,), (x, *wb) = cts, n.operands
    r, k = x.type.rank, n.attr("dims")
    dims, lead = tuple(range(r - k, r)), tuple(range(r - k))
    mu = e.op("mean", x, dim=dims, keepdim=True)
    xc = e.sub(x, mu)
    rstd = e.op("rsqrt", e.add(e.op("mean", e.mul(xc, xc), dim=dims, keepdim=True), e.const(n.attr("eps"), x)))
    xhat = e.mul(xc, rstd)
    gh = e.mul(g, wb[0]) if wb else g
    gx = e.mul(rstd, e.sub(e.sub(gh, e.op("mean", gh, dim=dims, keepdim=True)),
                           e.mul(xhat, e.op("mean", e.mul(gh, xhat), dim=dims, keepdim=True))))
    out = [gx]
    if len(wb) > 0:
        out.append(e.sum(e.mul(g, xhat), lead) if e.needs(wb[0]) else None)
    if len(wb) > 1:
        out.append(e.sum(g, lead) if e.needs(wb[1]) else None)
    return out


@vjp(OP.batch_norm)
def _batch_norm(e, n, cts):
    # inference form: mean and var are given (running statistics), not the batch's
    (g,), (x, mean, var, w, b) = cts, n.operands
    r = x.type.rank
    chan = (1, x.type.shape[1]) + (1,) * (r - 2)
    others = tuple(i for i in range(r) if i != 1)
    per = lambda v: e.reshape(v, chan)  # noqa: E731
    rstd = e.op("rsqrt", e.add(var, e.const(n.attr("eps"), var)))
    xc = e.sub(x, per(mean))
    gx = e.mul(g, per(e.mul(w, rstd)))
    out = [gx if e.needs(x) else None,
           e.neg(e.sum(gx, others)) if e.needs(mean) else None,
           None, None, e.sum(g, others) if e.needs(b) else None]
    if e.needs(var):
        r3 = e.mul(rstd, e.mul(rstd, rstd))
        out[2] = e.scale(e.mul(e.sum(e.mul(g, e.mul(xc, per(w))), others), r3), -0.5)
    if e.needs(w):
        out[3] = e.sum(e.mul(g, e.mul(xc, per(rstd))), others)
    return out
