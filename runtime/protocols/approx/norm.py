"""layer_norm: (x - mean) / sqrt(var + eps) * weight + bias over the last dims.

With n the number of normalised elements per row:

    E = (n x - sum(x)) / p                    p = 2^ceil(log2 n): exact but for one truncation
                                              (E = (n/p) d, d = x - mean; an encoded 1/n
                                              would shift every d by up to |sum| 2^-17)
    E*E and E*weight                          one round: two Beaver products side by side
    v = sum(E*E) / n = (n/p)^2 var            local: 1/p a shift, p/n in [1, 2) encoded
    r = rsqrt(v + (n/p)^2 eps)                approx.roots.rsqrt, 8 rounds: (p/n) / std
    y = (E weight) r + bias                   one product; its truncation left pending

10 rounds with 2 parties whatever the shape (a public or absent weight makes d*weight
local); with more parties each truncation costs a round unless it rides on an opening.
Bytes per element: two Beaver products of the row's shape and one of a row by a
per-row scalar, plus rsqrt's on one value per row.

Error. rsqrt is within 2^-14 + 2^-16 r of r (roots.py), and v carries about
2^-16 (1 + 2 sqrt(v)) from its truncations, so r is within a relative 2^-14 / r +
2^-16 + 2^-17 (1 + 2 sqrt(v)) / v of its value: at most 2^-10 for 2^-6 <= var + eps <
2^8 (stated: 2^-8; measured 2^-9.5 at the edge). E's own truncation (2^-16, times
r <= 16 and |weight| <= 2) and the last product's give the absolute part. With g = weight (x - mean) / sqrt(var + eps) the normalised-and-
scaled part of the result (|f(x)| below is |g|, not |g + bias|):

    layer_norm: |error| <= 2^-11 + 2^-8 |f(x)| for rows with 2^-6 <= var + eps < 2^8, |weight| <= 2, |f(x)| read as |g|; rounds: 10
"""
from __future__ import annotations

import math

import torch

from planc.ir.ops import OP
from planc.ir.types import SECRET

from ..beaver import product
from ..common import lead, scale_public, settle, shared
from ..core import Shared, bound, par, protocol
from .roots import rsqrt

__all__ = ["layer_norm"]


@protocol(OP.layer_norm)
def layer_norm(P, node, args, a):
    """layer_norm over the last `dims` dims, 10 rounds (module docstring)."""
    xo = node.operands[0]
    shape = tuple(xo.type.shape)
    dims = tuple(range(len(shape) - a["dims"], len(shape)))
    n = math.prod(shape[d] for d in dims)
    k = max(0, math.ceil(math.log2(n)))  # p = 2^k >= n
    x = shared(P, args[0], xo.type.vis, shape)
    # E = (n x - sum x) / 2^k = (n / p) d exactly but for the one truncation: an encoded
    # 1/n would shift the mean by |sum| 2^-17, which r = 1/std magnifies
    D = x.data if P.meta else x.data * n - x.data.sum(dims, keepdim=True)
    E = yield from settle(P, Shared(D, k))
    gens = [product(P, E, E, SECRET, SECRET, shape, shape, torch.mul)]
    wo = node.operands[1] if len(args) > 1 else None
    if wo is not None:
        w = args[1] if wo.type.vis.is_public else shared(P, args[1], wo.type.vis, wo.type.shape)
        gens.append(product(P, E, w, SECRET, wo.type.vis, shape, tuple(wo.type.shape), torch.mul))
    got = yield from par(*gens)
    # each square truncated before the sum: the sum of n of them need not fit 2^41 at 2f bits
    EE = yield from settle(P, Shared(got[0][0], P.frac))
    # var_E = sum(E^2) / n = (n / p)^2 var: 1/p a shift, p/n in [1, 2) encoded to 2^-17
    var = yield from scale_public(P, Shared(EE.data.sum(dims, keepdim=True), k),
                                  torch.tensor(2.0 ** k / n, dtype=torch.float64))
    var = yield from settle(P, var)
    eps = a["eps"] * (n / 2.0 ** k) ** 2
    eps = P.empty(var.shape) if P.meta else lead(P, P.enc(torch.full(var.shape, eps, dtype=torch.float64)))
    r = yield from rsqrt(P, Shared(var.data + eps))  # = (p / n) / sqrt(var + eps)
    if wo is not None:
        z, scaled = got[1]
        Ew = yield from settle(P, Shared(z, P.frac if scaled else 0))
    else:
        Ew = E
    z, _ = yield from product(P, Ew, r, SECRET, SECRET, shape, tuple(r.shape), torch.mul)
    if len(args) > 2:
        bo = node.operands[2]
        b = shared(P, args[2], bo.type.vis, bo.type.shape).data
        z = z + (b if P.meta else b << P.frac)
    out = Shared(z, P.frac)  # like a product's, the truncation waits for the next op that needs it
    if not P.lazy:
        out = yield from settle(P, out)
    return out


bound(OP.layer_norm, 2.0 ** -11, 2.0 ** -8,
      "rows with 2^-6 <= var + eps < 2^8, |weight| <= 2, |f(x)| read as |g|", "10")
