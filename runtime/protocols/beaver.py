"""Products: mul, matmul, linear, conv2d — any op f that is bilinear over Z_2^64.

secret x secret (Beaver): the dealer gives [a], [b], [c] = [f(a, b)] for uniform a, b
of the operands' shapes. Parties open e = x - a and d = y - b in one round and set

    [z] = [c] + f(e, [b]) + f([a], d) + f(e, d)        (the last term at party 0 only)

which is f(x, y) because f(e + a, d + b) expands into exactly those four terms.

private<k> x secret: a is known in the clear to party k (and the dealer) alone, so only
k sends e = x - a; everybody opens d = y - b. The dealer shares c = f(a, b - b_k), leaving
out k's own share b_k of the mask. Then party k holds f(x, d + b_k) + [c]_k and every
other party j holds f(e, b_j) + [c]_j; they sum to f(x, d + b) = f(x, y) because
f(e, b - b_k) + f(a, b - b_k) = f(x, b - b_k). One product per party, and the other
parties send |y| instead of |x| + |y|.

private<j> x private<k>: j sends e = x - a, k sends d = y - b, nothing else; j adds
f(a, d), k adds f(e, b). Each owner sends its own operand's size once.

public operand: local, f(x, [y]) on shares. Both operands carry f fractional bits, so
the product carries 2f and is truncated once (see common.truncate for the bound).
Biases of linear/conv2d are added after the truncation.

Each product's map f is registered on its op definition (``register("bilinear", OP.x)``:
f(x, y, attrs) on int64 ring tensors), and ``products`` looks it up there.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from planc.ir import ops
from planc.ir.ops import OP

from .core import Ex, Shared, protocol
from ..material import Part
from .common import others, settle, shared


# ---------------------------------------------------------------- the bilinear maps, per op


@ops.register("bilinear", OP.mul)
def _mul(x, y, a):
    return torch.mul(x, y)


@ops.register("bilinear", OP.matmul)
def _matmul(x, y, a):
    return torch.matmul(x, y)


@ops.register("bilinear", OP.linear)
def _linear(x, w, a):
    return torch.matmul(x, w.t())


@ops.register("bilinear", OP.conv2d)
def _conv2d(x, w, a):
    return F.conv2d(x, w, None, a["stride"], a["padding"], a["dilation"], a["groups"])


def bilinear(node):
    """The node's bilinear map f(x, y) on ring tensors, from its op's "bilinear" rule."""
    rule = ops.get(node.op).rule("bilinear")
    if rule is None:
        raise AssertionError(f"{node.op} has no bilinear rule")
    a = node.attr_dict
    return lambda x, y: rule(x, y, a)


def _add_bias(P, z: Shared, node, args):
    if len(args) < 3:
        return z
    bias, vis = args[2], node.operands[2].type.vis
    b = shared(P, bias, vis, node.operands[2].type.shape)
    shape = [1] * z.data.dim()
    # the bias's axis is a per-op fact (conv2d: channels, linear: last); no trait says it yet
    axis = 1 if node.op == "conv2d" else z.data.dim() - 1
    shape[axis] = -1
    # the bias has f fractional bits, the product f + extra: shift the bias up, exactly
    return Shared(z.data + (b.data.reshape(shape) << z.extra), z.extra)


def product(P, x, y, xv, yv, xs, ys, f, integral=False):
    """([f(x, y)] as a ring tensor, whether it still carries 2f fractional bits); a
    generator. `integral`: the public operand, if any, is small whole numbers."""
    if xv.is_public or yv.is_public:
        i = 0 if xv.is_public else 1
        pub, sec = (x, y) if i == 0 else (y, x)
        sec = shared(P, sec, (yv if i == 0 else xv), (ys if i == 0 else xs))
        if P.meta:
            enc = P.empty(pub.shape)
        else:
            enc = pub.to(torch.int64) if integral else P.enc(pub)
        return (f(enc, sec.data) if i == 0 else f(sec.data, enc)), not integral
        yield  # pragma: no cover
    if xv.is_private and yv.is_private:
        return (yield from _private_private(P, x, y, xv.owner, yv.owner, xs, ys, f)), True
    if xv.is_private or yv.is_private:
        return (yield from _private_secret(P, x, y, xv, yv, xs, ys, f)), True
    return (yield from _secret_secret(P, x.data, y.data, xs, ys, f)), True


def _triple(P, xs, ys, f, x_sharing="arith", y_sharing="arith"):
    a_meta = torch.empty(xs, dtype=torch.int64, device="meta")
    b_meta = torch.empty(ys, dtype=torch.int64, device="meta")
    cs = tuple(f(a_meta, b_meta).shape)
    return P.material.get("triple", [Part("a", tuple(xs), x_sharing), Part("b", tuple(ys), y_sharing)],
                          [Part("c", cs)], lambda r: {"c": f(r["a"], r["b"])})


def _secret_secret(P, x, y, xs, ys, f):
    m = _triple(P, xs, ys, f)
    e, d = yield from _open_pair(P, x - m["a"], y - m["b"])
    if P.meta:
        return m["c"]
    d_lead = m["b"] + d if P.leader else m["b"]
    return m["c"] + f(e, d_lead) + f(m["a"], d)


def _open_pair(P, e_share, d_share):
    specs = [(tuple(e_share.shape), torch.int64), (tuple(d_share.shape), torch.int64)]
    got = yield Ex({j: [e_share, d_share] for j in others(P)}, {j: specs for j in others(P)})
    if P.meta:
        return e_share, d_share
    e, d = e_share.clone(), d_share.clone()
    for j in others(P):
        e += got[j][0]
        d += got[j][1]
    return e, d


def _private_secret(P, x, y, xv, yv, xs, ys, f):
    # normalise to (plaintext operand x at owner k, secret operand y) with g(x, y)
    plain_first = xv.is_private
    k = xv.owner if plain_first else yv.owner
    plain, sec = (x, y) if plain_first else (y, x)
    sec = sec.data
    ps, ss = (xs, ys) if plain_first else (ys, xs)
    g = f if plain_first else (lambda u, v: f(v, u))
    # c = g(a, b - b_k): the owner's own share of b is left out, because the owner
    # multiplies its plaintext by (d + b_k) directly. One product per party.
    cs = tuple(g(torch.empty(ps, dtype=torch.int64, device="meta"),
                 torch.empty(ss, dtype=torch.int64, device="meta")).shape)
    m = P.material.get("triple", [Part("a", tuple(ps), f"own:{k}"), Part("b", tuple(ss))], [Part("c", cs)],
                       lambda r: {"c": g(r["a"], r["b"] - r[f"b@{k}"])}, share_of={"b": k})
    d_share = sec - m["b"]
    if P.rank == k:
        e = P.enc(plain) - m["a"] if not P.meta else P.empty(ps)
        got = yield Ex({j: [e, d_share] for j in others(P)}, {j: [(tuple(ss), torch.int64)] for j in others(P)})
    else:
        got = yield Ex({j: [d_share] for j in others(P)},
                       {j: ([(tuple(ps), torch.int64)] if j == k else []) + [(tuple(ss), torch.int64)]
                        for j in others(P)})
    if P.meta:
        return m["c"]
    d = d_share.clone()
    e = None
    for j in others(P):
        msg = got[j]
        if j == k:
            e, msg = msg[0], msg[1:]
        d += msg[0]
    if P.rank == k:
        # d + b_k: the opened difference plus this party's own mask share
        return m["c"] + g(P.enc(plain), d.add_(m["b"]))
    return m["c"] + g(e, m["b"])


def _private_private(P, x, y, j, k, xs, ys, f):
    if j == k:
        raise AssertionError("same owner: plaintext")
    m = _triple(P, xs, ys, f, x_sharing=f"own:{j}", y_sharing=f"own:{k}")
    sends, recvs = {}, {}
    if P.rank == j:
        e = P.enc(x) - m["a"] if not P.meta else P.empty(xs)
        sends = {i: [e] for i in others(P)}
        recvs = {k: [(tuple(ys), torch.int64)]}
    elif P.rank == k:
        d = P.enc(y) - m["b"] if not P.meta else P.empty(ys)
        sends = {i: [d] for i in others(P)}
        recvs = {j: [(tuple(xs), torch.int64)]}
    else:
        recvs = {j: [(tuple(xs), torch.int64)], k: [(tuple(ys), torch.int64)]}
    got = yield Ex(sends, recvs)
    if P.meta:
        return m["c"]
    e = got[j][0] if P.rank != j else P.enc(x) - m["a"]
    d = got[k][0] if P.rank != k else P.enc(y) - m["b"]
    z = m["c"]
    if P.leader:
        z = z + f(e, d)
    if P.rank == j:
        z = z + f(m["a"], d)
    if P.rank == k:
        z = z + f(e, m["b"])
    return z


@protocol(OP.mul, OP.matmul, OP.linear, OP.conv2d)
def products(P, node, args, a):
    f = bilinear(node)
    x, y = args[0], args[1]
    ox, oy = node.operands[0], node.operands[1]
    integral = P.integral(ox) if ox.type.vis.is_public else P.integral(oy)
    z, scaled = yield from product(P, x, y, ox.type.vis, oy.type.vis, ox.type.shape, oy.type.shape, f, integral)
    # the truncation is left pending: the next op that needs the standard scale does it,
    # so a chain of linear ops after the product shares one truncation
    out = _add_bias(P, Shared(z, P.frac if scaled else 0), node, args)
    if not P.lazy:
        out = yield from settle(P, out)
    return out

