"""Linear ops on shares: no communication except truncations (local for 2 parties).

add/sub/neg act on each share; a public operand is added by party 0 alone, a private
one is first shared for free (PRZS). sum is a sum of shares. mean, avg_pool2d,
adaptive_avg_pool2d and div-by-public multiply by public fractions: encoded with f
bits, then one truncation (error at most 1 unit in the last place plus the encoding
error of the fraction, |c| * 2^-17). batch_norm with plaintext statistics folds them
into a per-channel scale and shift at their owner, then needs one product; with secret
(or mixed-owner) statistics it takes approx.roots.rsqrt and up to two products.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from planc.ir.types import SECRET

from planc.ir.ops import OP

from .approx.roots import rsqrt
from .beaver import product
from .common import align, scale_public, settle, shared, truncate
from .core import ABSENT, Shared, protocol


def _operands(P, node, args):
    return [shared(P, a, v.type.vis, v.type.shape) for a, v in zip(args, node.operands)]


@protocol(OP.add)
def add(P, node, args, a):
    x, y = align(*_operands(P, node, args))
    return Shared(x.data + y.data, x.extra)
    yield  # pragma: no cover


@protocol(OP.sub)
def sub(P, node, args, a):
    x, y = align(*_operands(P, node, args))
    return Shared(x.data - y.data, x.extra)
    yield  # pragma: no cover


@protocol(OP.neg)
def neg(P, node, args, a):
    (x,) = _operands(P, node, args)
    return Shared(-x.data, x.extra)
    yield  # pragma: no cover


def _sum_shares(x: Shared, a):
    """(sum of shares over the reduced dims, how many elements each sum covers)."""
    dims = a["dim"]
    if dims is None:
        dims = tuple(range(x.data.dim()))
    if not dims:  # an empty dim list reduces nothing, as the IR's type rule says
        return x, 1
    n = math.prod(x.data.shape[d] for d in dims)
    return Shared(torch.sum(x.data, dim=dims, keepdim=a["keepdim"]), x.extra), n


@protocol(OP.sum_)
def sum_(P, node, args, a):
    return _sum_shares(args[0], a)[0]
    yield  # pragma: no cover


@protocol(OP.mean)
def mean(P, node, args, a):
    s, n = _sum_shares(args[0], a)
    if n == 1:
        return s
    return (yield from scale_public(P, s, torch.tensor(1.0 / n, dtype=torch.float64)))


@protocol(OP.div)
def div(P, node, args, a):
    x, c = args
    x = shared(P, x, node.operands[0].type.vis, node.operands[0].type.shape)
    recip = (1.0 / c.to(torch.float64)) if c.device.type != "meta" else c
    return (yield from scale_public(P, x, recip))


@protocol(OP.avg_pool2d)
def avg_pool2d(P, node, args, a):
    """Window sums by an int64 convolution with a ones kernel, then the per-position
    factor torch uses (1/k^2, or the count of valid cells) applied as a public fraction."""
    (x,) = args
    xs = node.operands[0].type.shape
    out_shape = node.result.type.shape
    kh, kw = a["kernel"]
    sh, sw = a["stride"]
    ph, pw = a["padding"]
    oh, ow = out_shape[-2:]
    H, W = xs[-2:]
    # extra right/bottom padding stands in for ceil_mode's partial windows (they add zeros)
    eh = max(0, (oh - 1) * sh + kh - (H + 2 * ph))
    ew = max(0, (ow - 1) * sw + kw - (W + 2 * pw))
    ones = torch.ones((1, 1, H, W), dtype=torch.float64)
    ref = F.avg_pool2d(ones, (kh, kw), (sh, sw), (ph, pw), a["ceil_mode"], a["count_include_pad"])
    cnt = F.conv2d(F.pad(ones, (pw, pw + ew, ph, ph + eh)), torch.ones((1, 1, kh, kw), dtype=torch.float64),
                   stride=(sh, sw))
    factor = (ref / cnt)[0, 0]  # torch's average = window sum * factor
    d = x.data
    lead = d.shape[:-2]
    if (kh, kw) == (sh, sw) and (ph, pw, eh, ew) == (0, 0, 0, 0):
        # non-overlapping windows: a reshape and a sum, far cheaper than a convolution
        sums = None
        for i in range(kh):
            for j in range(kw):
                part = d[..., i:i + oh * kh:kh, j:j + ow * kw:kw]
                sums = part.clone() if sums is None else sums.add_(part)
    else:
        flat = d.reshape((-1, 1, H, W))
        flat = F.pad(flat, (pw, pw + ew, ph, ph + eh))
        sums = F.conv2d(flat, torch.ones((1, 1, kh, kw), dtype=torch.int64, device=flat.device), stride=(sh, sw))
    sums = Shared(sums.reshape(tuple(lead) + (oh, ow)), x.extra)
    f0 = factor.flatten()[0]
    if torch.all(factor == f0):
        factor = f0
    return (yield from scale_public(P, sums, factor))


@protocol(OP.adaptive_avg_pool2d)
def adaptive_avg_pool2d(P, node, args, a):
    """Adaptive average pooling is a fixed linear map: y = x_flat @ M, M from pooling the
    identity basis in float64; one encoded matmul and one truncation."""
    (x,) = args
    H, W = node.operands[0].type.shape[-2:]
    oh, ow = a["output"]
    if (oh, ow) == (H, W):
        return x
    basis = torch.eye(H * W, dtype=torch.float64).reshape(H * W, 1, H, W)
    M = F.adaptive_avg_pool2d(basis, (oh, ow)).reshape(H * W, oh * ow)
    lead = tuple(x.data.shape[:-2])
    flat = Shared(x.data.reshape(lead + (H * W,)), x.extra)
    out = yield from scale_public(P, flat, M, op=torch.matmul)
    return Shared(out.data.reshape(lead + (oh, ow)), out.extra)


@protocol(OP.batch_norm)
def batch_norm(P, node, args, a):
    """y = x * s + t with s = w / sqrt(var + eps), t = b - mean * s. When the statistics
    are plaintext (public, or one party's), s and t are computed there in float64 and the
    layer costs one product (one-sided for a private owner)."""
    x = args[0]
    stats = node.operands[1:]
    vis = {v.type.vis for v in stats}
    if any(v.is_secret for v in vis) or len({v for v in vis if not v.is_public}) > 1:
        return (yield from _batch_norm_secret(P, node, args, a))
    owner = next((v for v in vis if v.is_private), None)
    holds = owner is None or (not P.meta and owner.owner == P.rank)
    C = node.operands[0].type.shape[1]
    shape = (C,) + (1,) * (len(node.operands[0].type.shape) - 2)
    if holds and not P.meta:
        mean_, var, w, b = (t.to(torch.float64) for t in args[1:])
        s = w / torch.sqrt(var + a["eps"])
        t = b - mean_ * s
        s, t = s.reshape(shape), t.reshape(shape)
    else:
        s = t = ABSENT if owner is not None else P.empty(shape, torch.float64)
    sv = owner if owner is not None else node.operands[1].type.vis
    xv = node.operands[0].type.vis
    xsh = shared(P, x, xv, node.operands[0].type.shape)
    z, scaled = yield from product(P, xsh, s, SECRET, sv, node.operands[0].type.shape, shape, torch.mul, False)
    if scaled:
        z = yield from truncate(P, z)
    tt = shared(P, t, sv, shape)
    return Shared(z + tt.data)


def _plain(P, v, vis):
    """A plaintext operand where this party holds it (public: everyone, the dealer too),
    else None."""
    if v is ABSENT or isinstance(v, Shared) or vis.is_secret:
        return None
    if vis.is_public and P.meta:
        return v.to(torch.float64) if v.device.type != "meta" else None
    return v.to(torch.float64)


def _batch_norm_secret(P, node, args, a):
    """Secret (or mixed-owner) statistics: y = (x - mean) * s + b, s = w * rsqrt(var + eps).

    r = rsqrt(var + eps) is approx.roots.rsqrt when var is secret (8 rounds; var + eps in
    [2^-16, 2^16), error 2^-14 + 2^-16 r), else float64 at var's holder. s = w r is
    plaintext when w and r have one holder, else one product (1 round, truncated); then
    one product for (x - mean) s (1 round), its truncation left pending like any
    product's: 10 rounds with a secret var and w (9 with a public w). Error:
    |x - mean| (|w| (2^-14 + 2^-16 r) + 2^-16) + 2^-15 (eps and the statistics taken as
    encoded)."""
    x, mean_, var, w, b = args
    xo, mo, vo, wo, bo = node.operands
    xs = tuple(xo.type.shape)
    C = xs[1]
    shape = (C,) + (1,) * (len(xs) - 2)
    cs = (C,)
    vv, wv = vo.type.vis, wo.type.vis
    if vv.is_secret:
        eps = P.empty(cs) if P.meta else P.public_share(P.enc(torch.full(cs, a["eps"], dtype=torch.float64))).data
        r = yield from rsqrt(P, Shared(var.data + eps))
        rv = SECRET
    else:
        pv = _plain(P, var, vv)
        r = ABSENT if pv is None and vv.is_private else (
            P.empty(cs, torch.float64) if pv is None else 1.0 / torch.sqrt(pv + a["eps"]))
        rv = vv
    if not rv.is_secret and not wv.is_secret and (rv.is_public or wv.is_public or rv == wv):
        sv = wv if not wv.is_public else rv
        pw, pr = _plain(P, w, wv), (None if isinstance(r, Shared) or r is ABSENT else r)
        holds = sv.is_public or (not P.meta and sv.owner == P.rank)
        if holds and pw is not None and pr is not None:
            s_val = pw * pr
        else:
            s_val = ABSENT if sv.is_private else P.empty(cs, torch.float64)
    else:
        z, scaled = yield from product(P, w, r, wv, rv, cs, cs, torch.mul, False)
        if scaled:
            z = yield from truncate(P, z)
        s_val, sv = Shared(z), SECRET
    if isinstance(s_val, Shared):
        s_val = Shared(s_val.data.reshape(shape))
    elif s_val is not ABSENT:
        s_val = s_val.reshape(shape)
    xm = Shared(shared(P, x, xo.type.vis, xs).data - shared(P, mean_, mo.type.vis, cs).data.reshape(shape))
    z, scaled = yield from product(P, xm, s_val, SECRET, sv, xs, shape, torch.mul, False)
    bias = shared(P, b, bo.type.vis, cs).data.reshape(shape)
    if not scaled:
        return Shared(z + bias)
    # like a product's, the last truncation is left pending for the next op that needs it
    out = Shared(z + (bias if P.meta else bias << P.frac), P.frac)
    if not P.lazy:
        out = yield from settle(P, out)
    return out


# ---------------------------------------------------------------- shape ops
# reshape, transpose, slice, ...: the op's plaintext rule on every share (ops.shape_only);
# pad and cat need a scale and a fill, so they have their own.


@protocol(OP.pad)
def pad(P, node, args, a):
    (x,) = args
    out = F.pad(x.data, a["pads"], value=0)
    if a["value"] != 0 and P.leader and not P.meta:
        fill = P.enc(torch.tensor(a["value"], dtype=torch.float64)) << x.extra
        mask = F.pad(torch.zeros_like(x.data), a["pads"], value=1)
        out = out + mask * fill
    return Shared(out, x.extra)
    yield  # pragma: no cover


def _join(P, node, args, join):
    """cat/stack of shares: operands brought to one pending scale, then joined."""
    xs = align(*_operands(P, node, args))
    return Shared(join([s.data for s in xs], node.attr("dim")), xs[0].extra)


@protocol(OP.cat)
def cat(P, node, args, a):
    return _join(P, node, args, torch.cat)
    yield  # pragma: no cover


@protocol(OP.stack)
def stack(P, node, args, a):
    return _join(P, node, args, torch.stack)
    yield  # pragma: no cover
