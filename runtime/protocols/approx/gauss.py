"""erf and gelu (exact erf form and tanh form): functions that saturate outside a window.

Each function f here is a constant or x itself outside [-L, L) (erf: -1 and 1 beyond 4,
within 2^-26; gelu: 0 and x beyond 6, within 2^-27) and smooth inside. One sign_bit
batch against the cuts -L, -L + 1, ..., L (3 rounds) sorts x into unit bands
[c - 1/2, c + 1/2); with the free products [x < t] x it also gives, exactly,

    u = 2 (x - c)  in [-1, 1)        (0 outside the window: no band holds x)

and f(x) = sum_k C_k u^k with C_k = sum_b [x in band b] c_bk, c_b the degree-6
Chebyshev interpolant of f on band b (error below 2^-19.9 for erf, 2^-21 for either
gelu form), so every band is evaluated at once: C_k is a local sum of band bits times
public coefficients. Then u is opened together with the C_k (1 round), u^2 (1), u^3 and
u^4 (1), u^5 and u^6 (1) by the doubling tree of log.py's polynomials, and
C_k u^k is a monomial of opened values: local. Outside the window the C_k are 0 and
the saturated part (erf: [x >= L] - [x < -L]; gelu: [x >= L] x) comes from the bits.

The tanh form of gelu, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), is the same
protocol with its own interpolants: both forms cost the same, and each is within its
bound of its own reference (F.gelu(x, approximate=...)).

Scales: u and the powers at 19 fractional bits, the coefficients at 19: each product
C_k u^k carries 38 bits with |C_k u^k| <= 0.6, and the sum in a band (|f| <= 6) stays
below 2^41 ring units before its one truncation.

Bounds (registered below; tests/test_gauss.py measures them, tests/test_approx.py
checks these lines against the registrations):

    erf: |error| <= 2^-14 for |x| < 2^23; rounds: 7
    gelu: |error| <= 2^-14 for |x| < 2^23; rounds: 7

Per element (2 parties): 9 (erf) or 13 (gelu) comparisons in the sign_bit batch, then
four openings of at most seven values.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

from planc.ir.ops import OP

from ..core import Shared, bound, protocol
from .engine import Ctx, operand, thresholds
from .log import cheb_fit

__all__ = ["erf", "gelu", "saturating"]

DEGREE = 6
SCALE = 19  # fractional bits of u, its powers and the coefficients


def _erf(x):
    return np.vectorize(math.erf)(x)


def _gelu_erf(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


# name -> (f, L, value below -L, slope of the value above L (x), constant above L)
FUNCTIONS = {
    "erf": (_erf, 4, -1.0, 0.0, 1.0),
    "gelu": (_gelu_erf, 6, 0.0, 1.0, 0.0),
    "gelu_tanh": (_gelu_tanh, 6, 0.0, 1.0, 0.0),
}


@functools.lru_cache(maxsize=None)
def band_coefficients(name: str):
    """(cuts, [[c_b0..c_bD] per band]) of f on the unit bands of [-L, L): c_b the
    interpolant of f(c + u/2) in u on [-1, 1], c the band's centre."""
    f, L, *_ = FUNCTIONS[name]
    cuts = [float(t) for t in range(-L, L + 1)]
    coeffs = [cheb_fit(lambda u, c=c: f(c + 0.5 + u / 2), DEGREE) for c in cuts[:-1]]
    return cuts, coeffs


def saturating(ctx, x: Shared, name: str):
    """f(x) for the function `name` of FUNCTIONS, as terms at x's scale or finer;
    7 rounds (see the module docstring)."""
    P = ctx.P
    _, L, below, slope, above = FUNCTIONS[name]
    cuts, coeffs = band_coefficients(name)
    B, BX = yield from thresholds(ctx, x, cuts, with_x=True)
    K = len(cuts) - 1  # bands
    S = x.bits
    if ctx.meta:
        u = Shared.at(P.empty(x.shape), S + 1)
        C = [Shared.at(P.empty(x.shape), SCALE) for _ in range(DEGREE + 1)]
        side = Shared.at(P.empty(x.shape), S)
    else:
        u_d = torch.zeros(x.shape, dtype=torch.int64)
        C_d = [torch.zeros(x.shape, dtype=torch.int64) for _ in range(DEGREE + 1)]
        for b in range(K):
            band = B[b + 1] - B[b]  # [cuts[b] <= x < cuts[b + 1]]
            bx = BX[b + 1] - BX[b]
            c = cuts[b] + 0.5  # dyadic: exact at x's scale
            u_d = u_d + bx - band * int(round(c * 2 ** S))
            for k in range(DEGREE + 1):
                C_d[k] = C_d[k] + band * int(round(coeffs[b][k] * 2 ** SCALE))
        # u = 2 (x - c): the same ring value read with one fractional bit less
        u = Shared.at(u_d, S - 1)
        C = [Shared.at(d, SCALE) for d in C_d]
        one = ctx.lead(torch.ones(x.shape, dtype=torch.int64))
        hi = one - B[K]  # [x >= L]
        side_d = (hi * int(round(above * 2 ** S)) + B[0] * int(round(below * 2 ** S))
                  + (x.data - BX[K]) * int(slope))  # [x >= L] x = x - [x < L] x
        side = Shared.at(side_d, S)
    u.retarget(SCALE)
    yield from ctx.open([u] + C[1:])
    have = {1: u}
    for m, top in ((1, 2), (2, 4), (4, 6)):
        for k in range(m + 1, top + 1):
            have[k] = ctx.mono([have[m], have[k - m]])
            have[k].retarget(SCALE)
        # the opening does the pending truncation too (locally first with 2 parties)
        yield from ctx.open([have[k] for k in range(m + 1, top + 1)])
    poly = ctx.lin([(1, C[0])] + [(1, ctx.mono([C[k], have[k]])) for k in range(1, DEGREE + 1)])
    return [side, poly]


def _run(P, node, args, name):
    x = operand(P, node, args)
    ctx = Ctx(P)
    terms = yield from saturating(ctx, Shared.at(x.data, P.frac), name)
    return Shared((yield from ctx.output_sum(terms, P.frac)))


@protocol(OP.erf)
def erf(P, node, args, a):
    """erf(x): -1 below -4, 1 from 4 on, between them degree-6 interpolants on eight
    unit bands, all evaluated at once (module docstring). 7 rounds.

    Range: |x| < 2^23. Error: absolute 2^-14.
    """
    return (yield from _run(P, node, args, "erf"))


@protocol(OP.gelu)
def gelu(P, node, args, a):
    """gelu(x) = x Phi(x) (approximate='none') or its tanh form ('tanh'): 0 below -6, x
    from 6 on, between them degree-6 interpolants of the chosen form on twelve unit
    bands (module docstring). 7 rounds; twice erf's route (erf, then a product) would
    be 8 and less accurate for large |x|.

    Range: |x| < 2^23. Error: absolute 2^-14 from the chosen form.
    """
    return (yield from _run(P, node, args, "gelu" if a["approximate"] == "none" else "gelu_tanh"))


bound(OP.erf, 2.0 ** -14, 0.0, "|x| < 2^23", "7")
bound(OP.gelu, 2.0 ** -14, 0.0, "|x| < 2^23", "7")
