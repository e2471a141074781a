"""sqrt and rsqrt (also used by batch_norm's secret statistics, linear.py).

One sign_bit batch sorts x into bands [2^(E-2), 2^E) and gives x' = x 2^-E in [1/4, 1)
exactly; a linear guess g ~ x'^(-1/2) and Newton's iteration for the inverse root in
residual form (q <- q (1 + e/2), e <- 3/4 e^2 + 1/4 e^3) converge from e <= 0.22, and
2^(-+E/2) is folded into the last round. sqrt starts from q = x' g, rsqrt from q = g.

Bounds (registered below; tests/test_approx.py checks these lines against them):

    sqrt: |error| <= 2^-14 + 2^-16 |f(x)| for 0 <= x < 2^16; rounds: 8
    rsqrt: |error| <= 2^-14 + 2^-16 |f(x)| for 2^-16 <= x < 2^16; rounds: 8
"""
from __future__ import annotations

import torch

from planc.ir.ops import OP

from ..core import Shared, bound, protocol
from .engine import Ctx, operand, thresholds

__all__ = ["RSQRT", "rsqrt", "rsqrt_protocol", "sqrt"]

ROOT_LO, ROOT_HI = -16, 16  # 2^-16 <= x < 2^16, bands [2^k, 2^(k+2)), k even
ROOT_ALPHA = 2.018395910322382  # g = alpha - x' ~ x'^(-1/2) on [1/4, 1]: |1 - x' g^2| <= 0.2182


def _root_parts(ctx, x: Shared, inverse: bool):
    """x^(-1/2) (inverse) or x^(1/2) as terms; 3 + 2 + 3 rounds. See ``sqrt``."""
    P = ctx.P
    tops = list(range(ROOT_LO + 2, ROOT_HI + 1, 2))  # band tops E: x in [2^(E-2), 2^E)
    ts = [2.0 ** E for E in tops[:-1]]
    B, BX = yield from thresholds(ctx, x, ts, with_x=True)
    emax = tops[-1]
    FS = 8  # 2^(-+E/2) >= 2^-8: exact at scale 8
    if ctx.meta:
        xn, sc = Shared.at(P.empty(x.shape), x.bits + emax), Shared.at(P.empty(x.shape), FS)
    else:
        xn_d = torch.zeros(x.shape, dtype=torch.int64)
        sc_d = torch.zeros(x.shape, dtype=torch.int64)
        one = ctx.lead(torch.ones(x.shape, dtype=torch.int64))
        nb = len(tops)
        for j, E in enumerate(tops):
            band = (B[j] if j < nb - 1 else one) - (B[j - 1] if j > 0 else 0)
            bx = (BX[j] if j < nb - 1 else x.data) - (BX[j - 1] if j > 0 else 0)
            xn_d = xn_d + (bx << (emax - E))
            half = -E // 2 if inverse else E // 2
            sc_d = sc_d + band * (1 << (FS + half))
        # x' = x 2^-E in [1/4, 1); sc = 2^(-+E/2)
        xn, sc = Shared.at(xn_d, x.bits + emax), Shared.at(sc_d, FS)
    xn.retarget(20)
    yield from ctx.open([xn])
    g = ctx.lin([(-1, xn)], const=ROOT_ALPHA)  # ~ x'^(-1/2)
    h = ctx.lin([(ROOT_ALPHA, xn), (-1, ctx.mono([xn, xn]))])  # x' g ~ x'^(1/2)
    g.retarget(20)
    h.retarget(20)
    yield from ctx.open([g, h])
    e = ctx.lin([(-1, ctx.mono([h, g]))], const=1.0)  # e = 1 - x' g^2, |e| <= 0.22
    q = g if inverse else h
    # q (1 - e)^(-1/2) by Newton's iteration in residual form: q <- q (1 + e/2),
    # e <- 1 - (1 - e)(1 + e/2)^2 = 3/4 e^2 + 1/4 e^3: 0.22 -> 0.038 -> 1.1e-3 -> 9e-7
    for _ in range(2):
        e.retarget(20)
        q.retarget(20)
        keep = [(q, min(q.bits, 36))] if q.opened is None else []
        got = yield from ctx.open([q, e], views=[(e, 13)], keep=keep)
        ec, q_hi = got[0], (got[1] if keep else q)
        q_next = ctx.lin([(1, q_hi), (0.5, ctx.mono([q, e]))])
        e = ctx.lin([(0.75, ctx.mono([e, e])), (0.25, ctx.mono([ec, ec, ec]))])
        q = q_next
    e.retarget(20)
    q.retarget(23)
    (qc,) = yield from ctx.open([q, e, sc], views=[(q, 13)])
    return [ctx.mono([sc, q]), ctx.lin([(0.5, ctx.mono([sc, qc, e]))])]


@protocol(OP.sqrt)
def sqrt(P, node, args, a):
    """sqrt(x).

    One sign_bit batch (3 rounds) against 2^-14, 2^-12, ..., 2^14 sorts x into bands
    [2^(E-2), 2^E) (E even); the free products [x < t] x give x' = x 2^-E in [1/4, 1)
    exactly, and sqrt(x) = 2^(E/2) sqrt(x'). With g = 2.0184 - x' (|1 - x' g^2| <= 0.22
    on [1/4, 1]): h = x' g, e = 1 - h g (2 rounds), then Newton's iteration for the
    inverse root in residual form, q <- q (1 + e/2), e <- 3/4 e^2 + 1/4 e^3, from q = h
    (so that q -> x' x'^(-1/2)): three steps, one round each, 2^(E/2) folded into the
    last. 8 rounds.

    Range: 0 <= x < 2^16 (x = 0 gives 0; below 0 unspecified). Error: relative 2^-18
    plus absolute 2^-15 (measured; the stated bound, above, leaves a margin).
    """
    x = operand(P, node, args)
    ctx = Ctx(P)
    terms = yield from _root_parts(ctx, Shared.at(x.data, P.frac), inverse=False)
    return Shared((yield from ctx.output_sum(terms, P.frac)))


def rsqrt(P, x: Shared):
    """x^(-1/2) for a secret x at the standard scale (a generator returning a Shared):
    the math of ``sqrt`` from q = g. Range 2^-16 <= x < 2^16; error relative 2^-18 plus
    absolute 2^-15 (measured; stated: ``RSQRT``); 8 rounds."""
    ctx = Ctx(P)
    terms = yield from _root_parts(ctx, Shared.at(x.data, P.frac), inverse=True)
    return Shared((yield from ctx.output_sum(terms, P.frac)))


@protocol(OP.rsqrt)
def rsqrt_protocol(P, node, args, a):
    """1 / sqrt(x): ``rsqrt`` on the operand, 8 rounds (reciprocal of sqrt would take 20)."""
    return (yield from rsqrt(P, operand(P, node, args)))


bound(OP.sqrt, 2.0 ** -14, 2.0 ** -16, "0 <= x < 2^16", "8")
bound(OP.rsqrt, 2.0 ** -14, 2.0 ** -16, "2^-16 <= x < 2^16", "8")
RSQRT = OP.rsqrt.rule("bound")
