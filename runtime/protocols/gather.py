"""gather: x's slices at integer indices along a dim (ONNX Gather, nn.Embedding).

- public index: the same selection on every share, local and exact (what an ONNX
  Gather on constant indices and an embedding of public token ids become);
- index private to party k: k builds the one-hot rows H[m, v] = [index_m = v] in the
  clear, and the result is H @ X with X = x moved to [V, rest]: the one-sided product
  of beaver.py (k sends its masked H, every party opens X - b): 1 round, M V + V R ring
  elements from k and V R from each other party (M indices, V rows, R elements per row);
  exact up to the product's one truncation (2^-16);
- secret index: H[m, v] = [index_m = v] + [index_m = v - V] by signbit.zero_bit on all
  2 M V differences (3 rounds), then a Beaver product H @ X (1 round): 4 rounds,
  2 M V comparisons.

Indices out of [-V, V) select nothing in the one-hot forms (a zero row) and are an
error in the clear (runtime/semantics.py).
"""
from __future__ import annotations

import math

import torch

from planc.ir.ops import OP
from planc.ir.types import SECRET

from .beaver import product
from .common import shared
from .core import ABSENT, Shared, protocol
from .signbit import zero_bit

__all__ = ["gather"]


def _rows(t, dim):
    """t with dim moved first and the rest flattened: [V, R]."""
    t = t.movedim(dim, 0)
    return t.reshape(t.shape[0], -1)


def _place(z, idx_shape, x_shape, dim):
    """[M, R] rows back to x.shape[:dim] + idx_shape + x.shape[dim + 1:]."""
    rest = tuple(x_shape[:dim]) + tuple(x_shape[dim + 1:])
    z = z.reshape(tuple(idx_shape) + rest)
    q = len(idx_shape)
    perm = list(range(q, q + dim)) + list(range(q)) + list(range(q + dim, q + len(rest)))
    return z.permute(perm).contiguous()


@protocol(OP.gather)
def gather(P, node, args, a):
    """Selection by a public index (local), or a one-hot product (module docstring)."""
    x, idx = args
    xo, io = node.operands
    dim = a["dim"]
    xs, ishape = tuple(xo.type.shape), tuple(io.type.shape)
    V = xs[dim]
    if io.type.vis.is_public:
        if P.meta:
            return Shared(P.empty(node.result.type.shape), x.extra)
        from planc.runtime.semantics import gather_plain

        return Shared(gather_plain(x.data, idx, dim).contiguous(), x.extra)
        yield  # pragma: no cover
    M = math.prod(ishape)
    xv = xo.type.vis
    rows_shape = (V, math.prod(xs) // max(V, 1))
    if xv.is_secret:
        xr = Shared(_rows(x.data, dim))
    elif xv.is_public:
        xr = _rows(x, dim)  # public values are real at the dealer too
    else:
        xr = ABSENT if x is ABSENT else (x if P.meta else _rows(x, dim))
    if io.type.vis.is_private:
        k = io.type.vis.owner
        hot = ABSENT
        if P.rank == k and not P.meta:
            i = idx.to(torch.int64).reshape(M, 1)
            vs = torch.arange(V).reshape(1, V)
            hot = ((i == vs) | (i == vs - V)).to(torch.float64)
        hv = io.type.vis
    else:
        # [index == v] + [index == v - V] for every v (negative indices count from the
        # end): scale-1 bits from zero_bit on 2 M V differences, as values at scale f
        iv = shared(P, idx, io.type.vis, ishape).data.reshape(M, 1)
        vs = torch.cat([torch.arange(V), torch.arange(V) - V]).reshape(1, 2 * V)
        diff = P.empty((M, 2 * V)) if P.meta else iv - P.public_share(P.enc(vs).expand(M, 2 * V).contiguous()).data
        bits = yield from zero_bit(P, diff)
        hot = Shared(P.empty((M, V)) if P.meta else (bits[:, :V] + bits[:, V:]) << P.frac)
        hv = SECRET
    z, scaled = yield from product(P, hot, xr, hv, xv, (M, V), rows_shape, torch.matmul)
    out = Shared(P.empty((M, rows_shape[1])) if P.meta else z, P.frac if scaled else 0)
    out = Shared(P.empty(node.result.type.shape) if P.meta else _place(out.data, ishape, xs, dim), out.extra)
    return out
