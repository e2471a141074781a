"""Gradients of convolution and pooling. The input's gradient is a transposed
convolution, written with existing ops: the cotangent dilated by the stride (zeros
between neighbours), padded (or cropped) to the input's extent, convolved with the
kernel flipped (a `gather` by a public reversed index: local on shares) and with its
in and out channels swapped per group."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from planc.ir.ops import OP

from .emit import vjp


def _flip(e, w, dim):
    k = w.type.shape[dim]
    if k == 1:
        return w
    return e.op("gather", w, e.tensor(torch.arange(k - 1, -1, -1), f"reversed_{k}"), dim=dim)


def conv_transpose(e, g, w, hw, stride, padding, dilation, groups, flip=True):
    """The input gradient of conv2d(x [N,C,*hw], w [O,C/groups,kh,kw]) from its cotangent g [N,O,Ho,Wo]."""
    for ax in (2, 3):
        s, p, d, k = stride[ax - 2], padding[ax - 2], dilation[ax - 2], w.type.shape[ax]
        ho = g.type.shape[ax]
        g = e.dilate(g, ax, s)
        g = e.zero_extend(g, ax, d * (k - 1) - p, hw[ax - 2] - 1 - (ho - 1) * s + p)
    if flip:
        w = _flip(e, _flip(e, w, 2), 3)
    o, cg, kh, kw = w.type.shape
    if groups == 1:
        w = e.op("transpose", w, dim0=0, dim1=1)
    else:
        w = e.reshape(w, (groups, o // groups, cg, kh, kw))
        w = e.reshape(e.op("permute", w, dims=(0, 2, 1, 3, 4)), (groups * cg, o // groups, kh, kw))
    return e.op("conv2d", g, w, dilation=tuple(dilation), groups=groups)


@vjp(OP.conv2d)
def _conv2d(e, n, cts):
    (g,), (x, w, *b) = cts, n.operands
    s, p, d, groups = n.attr("stride"), n.attr("padding"), n.attr("dilation"), n.attr("groups")
    out = [conv_transpose(e, g, w, x.type.shape[2:], s, p, d, groups) if e.needs(x) else None, None]
    if e.needs(w):
        o, cg, kh, kw = w.type.shape
        og = o // groups
        parts = []
        for gi in range(groups):
            xg = x if groups == 1 else e.op("slice", x, dim=1, start=gi * cg, end=(gi + 1) * cg)
            gg = g if groups == 1 else e.op("slice", g, dim=1, start=gi * og, end=(gi + 1) * og)
            # sum over n, i, j of g[n,o,i,j] x[n,c,i*s+a*d,j*s+b*d]: a convolution over the batch
            r = e.op("conv2d", e.op("transpose", xg, dim0=0, dim1=1), e.op("transpose", gg, dim0=0, dim1=1),
                     stride=tuple(d), padding=tuple(p), dilation=tuple(s))
            r = e.op("slice", e.op("slice", r, dim=2, start=0, end=kh), dim=3, start=0, end=kw)
            parts.append(e.op("transpose", r, dim0=0, dim1=1))
        out[1] = parts[0] if groups == 1 else e.op("cat", *parts, dim=0)
    if b:
        out.append(e.sum(g, (0, 2, 3)) if e.needs(b[0]) else None)
    return out


def _as4(e, v):
    return v if v.type.rank == 4 else e.op("unsqueeze", v, dim=0)


@vjp(OP.avg_pool2d)
def _avg_pool2d(e, n, cts):
    (g,), (x,) = cts, n.operands
    k, s, p = n.attr("kernel"), n.attr("stride"), n.attr("padding")
    h, w = x.type.shape[-2:]
    ones = torch.ones(1, 1, h, w)
    kw = dict(kernel_size=k, stride=s, padding=p, ceil_mode=n.attr("ceil_mode"))
    # 1 / the divisor torch uses at each window (it depends on count_include_pad and the edges)
    inv = F.avg_pool2d(ones, count_include_pad=n.attr("count_include_pad"), **kw) / F.avg_pool2d(
        ones, divisor_override=1, **kw)
    scale = inv[0, 0].to(torch.float32)
    uniform = bool((scale == scale.reshape(-1)[0]).all())
    g4 = _as4(e, e.scale(g, scale.reshape(-1)[0].item()) if uniform else e.mul(g, e.tensor(scale, "avg_pool_scale")))
    if tuple(k) == tuple(s) and tuple(p) == (0, 0):
        # non-overlapping windows: each cotangent spread over its window by a broadcast (local,
        # no product), then zeros for the rows and columns no window covers
        n4, c, oh, ow = g4.type.shape
        u = e.op("expand", e.reshape(g4, (n4, c, oh, 1, ow, 1)), shape=(n4, c, oh, k[0], ow, k[1]))
        gx = e.reshape(u, (n4, c, oh * k[0], ow * k[1]))
        for ax, size in ((2, h), (3, w)):
            gx = e.zero_extend(gx, ax, 0, size - gx.type.shape[ax])
        return [e.reshape(gx, x.type.shape)]
    c = g4.type.shape[1]
    kern = e.const(1.0, g, (c, 1) + tuple(k))
    gx = conv_transpose(e, g4, kern, (h, w), s, p, (1, 1), c, flip=False)
    return [e.reshape(gx, x.type.shape)]


@vjp(OP.max_pool2d)
def _max_pool2d(e, n, cts):
    # to the first maximal element of each window (torch's choice), window offset by offset:
    # a comparison with the window's maximum, minus the windows already taken
    (g,), (x,) = cts, n.operands
    k, s, p, d = n.attr("kernel"), n.attr("stride"), n.attr("padding"), n.attr("dilation")
    x4, g4, y4 = _as4(e, x), _as4(e, g), _as4(e, n.result)
    hw, ohw = x4.type.shape[2:], g4.type.shape[2:]
    extra = [max(0, (ohw[i] - 1) * s[i] + d[i] * (k[i] - 1) + 1 - (hw[i] + 2 * p[i])) for i in (0, 1)]
    xp = x4
    for i in (0, 1):
        xp = e.zero_extend(xp, 2 + i, p[i], p[i] + extra[i])
    padded = xp.type.shape[2:]
    valid = torch.zeros(padded)
    valid[p[0]:p[0] + hw[0], p[1]:p[1] + hw[1]] = 1
    taken, gxp = None, None
    for a in range(k[0]):
        for b in range(k[1]):
            off = (a * d[0], b * d[1])
            win = xp
            for i in (0, 1):
                win = e.op("slice", win, dim=2 + i, start=off[i], end=off[i] + (ohw[i] - 1) * s[i] + 1, step=s[i])
            vwin = valid[off[0]::s[0], off[1]::s[1]][:ohw[0], :ohw[1]]
            m = e.mul(e.op("ge", win, y4), e.tensor(vwin, "max_pool_valid") if vwin.min() < 1 else e.const(1.0, g))
            if taken is not None:
                m = e.mul(m, e.sub(e.const(1.0, g), taken))
            taken = e.add(taken, m)
            part = e.mul(g4, m)
            for i in (0, 1):
                part = e.dilate(part, 2 + i, s[i])
                part = e.zero_extend(part, 2 + i, off[i], padded[i] - off[i] - part.type.shape[2 + i])
            gxp = e.add(gxp, part)
    for i in (0, 1):
        gxp = e.zero_extend(gxp, 2 + i, -p[i], -(p[i] + extra[i]))
    return [e.reshape(gxp, x.type.shape)]


def _window_matrix(size, out):
    """[out, size]: row i averages adaptive window i (torch's floor/ceil bounds)."""
    m = torch.zeros(out, size)
    for i in range(out):
        lo, hi = (i * size) // out, -(-((i + 1) * size) // out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


@vjp(OP.adaptive_avg_pool2d)
def _adaptive_avg_pool2d(e, n, cts):
    (g,), (x,) = cts, n.operands
    h, w = x.type.shape[-2:]
    oh, ow = n.attr("output")
    ah = e.tensor(_window_matrix(h, oh).t().contiguous(), "adaptive_rows")
    aw = e.tensor(_window_matrix(w, ow), "adaptive_cols")
    return [e.op("matmul", e.op("matmul", ah, g), aw)]
