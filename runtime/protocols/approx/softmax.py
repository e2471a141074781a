"""softmax and log_softmax along a dim.

Both start from d = x - max(x) (compare.max_dim, exact) and e^d by ``exp``'s chain on
[-16, 0] (zero below, where e^d < 2^-23); s = sum_j e^(d_j) lies in [1, n]. softmax
multiplies e^d by 1/s from Goldschmidt's products (reciprocal.goldschmidt) started at
a public constant; log_softmax subtracts log s from log.log_parts.

Bounds (registered below; tests/test_approx.py checks these lines against the
registrations; "max" is compare.max_dim's rounds, 8 for n = 10):

    softmax: |error| <= 2^-14 for |x| < 2^23; rounds: max + 12 (n = 10)
    log_softmax: |error| <= 2^-14 for |x| < 2^23; rounds: max + 12 (n = 10)
"""
from __future__ import annotations

import math

from planc.ir.ops import OP

from ..compare import max_dim
from ..core import Shared, bound, par, protocol
from .engine import MAG, Box, Ctx, bands, operand
from .exp import exp_chain
from .log import log_parts
from .reciprocal import goldschmidt

__all__ = ["log_softmax", "recip_const", "softmax"]

SOFT_N, SOFT_LO = 5, -16.0  # e^d for d = x - max in [-16, 0]: 5 squarings; below -16: 0
LOG_SD = 8  # degree of log on [1, 2] for log s


def _dyadic(c: float, k: int) -> float:
    return round(c * 2 ** k) / 2 ** k


def recip_const(lo: float, hi: float):
    """A constant guess c0 (dyadic, k bits) for 1/s on [lo, hi], the resulting
    rho = max |1 - c0 s|, k, and the Goldschmidt rounds K with rho^(2^K) < 2^-18."""
    c = 2.0 / (lo + hi)
    k = max(0, math.ceil(math.log2(16 / c)))
    c0 = _dyadic(c, k)
    rho = max(abs(1 - c0 * lo), abs(1 - c0 * hi))
    K = max(1, math.ceil(math.log2(18 * math.log(2) / -math.log(rho)))) if rho > 0 else 1
    return c0, k, rho, K


def _soft_exp(P, ctx, x: Shared, dim: int, F_last: int):
    """(d = x - max along dim, e^d as a share at scale 2 F_last, zero below -16)."""
    mx, _ = yield from max_dim(P, x, dim, True)
    d = Shared.at(x.data if P.meta else x.data - mx.data, P.frac)
    box = Box()
    _, terms = yield from par(bands(ctx, d, [SOFT_LO], box),
                              exp_chain(ctx, d, SOFT_N, SOFT_LO, 0.0, box, cap=F_last))
    return d, terms[0]


@protocol(OP.softmax)
def softmax(P, node, args, a):
    """softmax(x)_i = e^(d_i) / s, d = x - max(x) along dim, s = sum_j e^(d_j) in [1, n].

    max by compare.max_dim (8 rounds for n = 10); e^d by ``exp``'s chain with 5 squarings
    on [-16, 0] (error 2^-17 from the degree-3 start, zero below -16 where e^d < 2^-23),
    in parallel with the comparison that does that zeroing: 6 rounds. Then 1/s by
    Goldschmidt's products from the public constant c0 ~ 2/(1 + n): e = 1 - c0 s,
    |e| <= (n - 1)/(n + 1), 1/s = c0 (1 + e)(1 + e^2)...(1 + e^(2^(K-1))) to 2^-18 (K = 6
    for n in [6, 22]); the first factor costs only e's opening, and e^(d_i) is multiplied
    in within the last round. Rounds: max + 6 + K, 20 for n = 10; the chain runs per row,
    so its bytes are small.

    Range: |x| < 2^23 (max_dim's). Error: absolute 2^-14 on each probability (measured
    2^-15).
    """
    x = operand(P, node, args)
    dim = a["dim"] % max(x.data.dim(), 1)
    n = x.shape[dim] if x.data.dim() else 1
    ctx = Ctx(P)
    c0, k, rho, K = recip_const(1.0, float(n))
    F_last = min(18, int(math.floor((MAG - k - math.log2(max(rho, 2 ** -20))) / 2)))
    d, E = yield from _soft_exp(P, ctx, x, dim, F_last)
    s = Shared.at(E.data.sum(dim, keepdim=True), E.bits)
    e = ctx.lin([(-c0, s)], const=1.0)
    E.retarget(20)
    terms = yield from goldschmidt(ctx, c0, e, K, 1.0 + rho, rho, mult=E, mmax=1.0)
    return Shared((yield from ctx.output_sum(terms, P.frac)))


@protocol(OP.log_softmax)
def log_softmax(P, node, args, a):
    """log_softmax(x) = d - log s, d = x - max(x) along dim, s = sum_j e^(d_j) in [1, n].

    max and e^d as in ``softmax`` (max + 6 rounds); log s as in ``log``, with bands
    [2^k, 2^(k+1)) for s (ceil(log2 n) - 1 thresholds, 3 rounds) and the degree-8
    Chebyshev interpolant of log on [1, 2] (error 2^-24, 3 rounds). Rounds: max + 12,
    20 for n = 10.

    Range: |x| < 2^23. Error: absolute 2^-14 (measured 2^-14.7); where d < -16 the
    dropped e^d < 2^-23 changes log s by less than n 2^-23.
    """
    x = operand(P, node, args)
    dim = a["dim"] % max(x.data.dim(), 1)
    n = x.shape[dim] if x.data.dim() else 1
    ctx = Ctx(P)
    F_last = min(18, int(math.floor((40 - math.log2(n) - 0.1) / 2)))
    d, E = yield from _soft_exp(P, ctx, x, dim, F_last)
    s = Shared.at(E.data.sum(dim, keepdim=True), E.bits)
    c = max(1, math.ceil(math.log2(n))) if n > 1 else 1
    parts = yield from log_parts(ctx, s, 0, c, 1, LOG_SD, P.frac)
    neg = [ctx.lin([(-1, t)]) for t in parts]
    return Shared((yield from ctx.output_sum([d] + neg, P.frac)))


bound(OP.softmax, 2.0 ** -14, 0.0, "|x| < 2^23", "max + 12 (n = 10)")
bound(OP.log_softmax, 2.0 ** -14, 0.0, "|x| < 2^23", "max + 12 (n = 10)")
