"""Natural logarithm, and its band decomposition (``log_parts``) that log_softmax reuses.

One sign_bit batch sorts x into bands [2^k, 2^(k+w)) and, with the free products
[x < t] x, gives x' = x 2^-k in [1, 2^w) exactly; log x = k ln 2 + log x', the first
part exact from the bits, the second a Chebyshev polynomial in u = (x' - c)/h evaluated
from a doubling tree of powers (``_poly``).

Bound (registered below; tests/test_approx.py checks this line against the registration):

    log: |error| <= 2^-14 for 2^-12 <= x < 2^16; rounds: 7
"""
from __future__ import annotations

import math

import numpy as np
import torch

from planc.ir.ops import OP

from ..core import Shared, bound, protocol
from .engine import Ctx, operand, thresholds

__all__ = ["cheb_fit", "log", "log_parts"]


def _cheb_fit(fn, D: int):
    """Monomial coefficients (low to high) of the degree-D Chebyshev interpolant of fn
    on [-1, 1] (near-minimax)."""
    k = np.arange(D + 1)
    nodes = np.cos(np.pi * (k + 0.5) / (D + 1))
    cheb = np.polynomial.chebyshev.chebfit(nodes, fn(nodes), D)
    return [float(c) for c in np.polynomial.chebyshev.cheb2poly(cheb)]


cheb_fit = _cheb_fit  # public: gauss.py fits its bands the same way


def _poly(ctx, t: Shared, coeffs, F: int = 20):
    """sum_k c_k t^k for |t| <= 1: powers by a doubling tree (t^(m + j) = t^m t^j from
    opened t^m, t^j: ceil(log2 D) + 1 rounds), each power formed at scale 2F; then one
    linear combination (with more than 2 parties the powers' truncation costs a round)."""
    D = len(coeffs) - 1
    t.retarget(F)
    yield from ctx.open([t])
    have = {1: t}
    m = 1
    while m < D:
        top = min(2 * m, D)
        need = [have[m]] + [have[j] for j in range(1, top - m + 1)]
        for v in need:
            v.retarget(F)
        yield from ctx.open(need)
        for k in range(m + 1, top + 1):
            have[k] = ctx.mono([have[m], have[k - m]])
            have[k].retarget(F)
        m = top
    powers = [have[k] for k in range(2, D + 1)]
    yield from ctx.settle_all(powers)
    return ctx.lin([(c, have[k]) for k, c in enumerate(coeffs) if k >= 1], const=coeffs[0])


LOG_W = 2  # bands x in [2^k, 2^(k+2))
LOG_LO, LOG_HI = -12, 16  # range 2^-12 <= x < 2^16
LOG_D = 12


def _log_coeffs(w: int, D: int):
    """Coefficients in u of log(c + h u), c = (1 + 2^w)/2, h = 2^(w-1), for
    |u| <= r = 1 - 2^-w (x' = c + h u covers [1, 2^w])."""
    c, h, r = (1 + 2.0 ** w) / 2, 2.0 ** (w - 1), 1 - 2.0 ** -w
    cv = _cheb_fit(lambda v: np.log(c + h * r * v), D)
    return [ck / r ** k for k, ck in enumerate(cv)]


def log_parts(ctx, x: Shared, lo: int, hi: int, w: int, D: int, f_out: int):
    """log x for 2^lo <= x < 2^hi as terms: bands [2^k, 2^(k+w)) from one sign_bit batch
    with the free products [x < t] x give x' = x 2^-k in [1, 2^w) exactly, and
    log x = k ln 2 + log x', the first part exact from the bits, the second a degree-D
    polynomial in u = (x' - c)/h. 3 + ceil(log2 D) + 1 rounds."""
    P = ctx.P
    ks = list(range(lo, hi, w))
    ts = [2.0 ** k for k in ks[1:]]
    B, BX = (yield from thresholds(ctx, x, ts, with_x=True)) if ts else ([], [])
    kmax = ks[-1]
    S = x.bits + kmax  # x' = sum_k band_k x 2^-k, exact: every band shifts left
    if ctx.meta:
        xn, base = Shared.at(P.empty(x.shape), S), Shared.at(P.empty(x.shape), f_out)
    else:
        xn_d = torch.zeros(x.shape, dtype=torch.int64)
        base_d = torch.zeros(x.shape, dtype=torch.int64)
        one = ctx.lead(torch.ones(x.shape, dtype=torch.int64))
        nb = len(ks)
        for j, k in enumerate(ks):
            # band j = [x < 2^(k+w)] - [x < 2^k]; the first band takes everything below
            band = (B[j] if j < nb - 1 else one) - (B[j - 1] if j > 0 else 0)
            bx = (BX[j] if j < nb - 1 else x.data) - (BX[j - 1] if j > 0 else 0)
            xn_d = xn_d + (bx << (kmax - k))
            base_d = base_d + band * int(round(k * math.log(2) * 2 ** f_out))
        xn, base = Shared.at(xn_d, S), Shared.at(base_d, f_out)
    c, h = (1 + 2.0 ** w) / 2, 2.0 ** (w - 1)
    u = ctx.lin([(1 / h, xn)], const=-c / h)  # dyadic: exact
    p = yield from _poly(ctx, u, _log_coeffs(w, D))
    return [base, p]


@protocol(OP.log)
def log(P, node, args, a):
    """Natural logarithm.

    One sign_bit batch (3 rounds) against 2^-10, 2^-8, ..., 2^14 sorts x into bands
    [2^k, 2^(k+2)); with the free products [x < t] x it gives x' = x 2^-k in [1, 4)
    exactly, and log x = k ln 2 + log x': the first part exact from the bits, the second
    the degree-12 Chebyshev interpolant of log on [1, 4] (error 2^-21) in
    u = (x' - 2.5)/2, from the powers u..u^12 (a doubling tree: u, u^2, {u^3, u^4}, u^8
    opened, 4 rounds). Rounds: 7. Per element (2 parties): about 180 bytes sent, 1.6 kB
    dealer (13 comparisons).

    Range: 2^-12 <= x < 2^16 (outside it the result is unspecified). Error: absolute
    2^-14 (measured 2^-15.2).
    """
    x = operand(P, node, args)
    ctx = Ctx(P)
    terms = yield from log_parts(ctx, Shared.at(x.data, P.frac), LOG_LO, LOG_HI, LOG_W, LOG_D, P.frac)
    return Shared((yield from ctx.output_sum(terms, P.frac)))


bound(OP.log, 2.0 ** -14, 0.0, "2^-12 <= x < 2^16", "7")
