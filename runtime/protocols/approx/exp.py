"""e^x, and the chain of squarings that softmax and sigmoid reuse (``exp_chain``).

u = x / 2^n is the same share read with n more fractional bits (exact); z_0 = u + u^2/2 +
u^3/6 = e^u - 1 up to u^4/24, then n squarings z <- 2z + z^2 = (1 + z)^2 - 1 give
e^x = 1 + z_n, up to a relative 2^n u^4/24. The last squaring is done once per band of x
(a sign_bit batch in parallel), each at the finest scale its values allow, and
multiplied by the band's bit, so that values below the range give exactly 0.

Bound (registered below; tests/test_approx.py checks this line against the registration):

    exp: |error| <= 2^-15 + 2^-13 |f(x)| for x <= 12 (0 below -16); rounds: 9
"""
from __future__ import annotations

import math

from planc.ir.ops import OP

from ..core import Shared, bound, par, protocol
from .engine import MAG, Box, Ctx, bands, mag_scale, operand, value_of

__all__ = ["exp", "exp_chain"]

CUBE = 6.0 ** (-1.0 / 3.0)  # c = u 6^(-1/3) gives c^3 = u^3 / 6
EXP_N, EXP_HI, EXP_CUTS = 8, 12.0, (-16.0, 0.0, 6.0)


def exp_chain(ctx, x: Shared, n: int, lo: float, hi: float, bands, cap: int = 24):
    """Terms summing to sum_b bit_b e^x for x in [lo, hi]: n + 1 rounds, math in ``exp``.

    `bands` (a list, or a Box another lock-step generator fills before the last round) of
    pairs (bit, top): 0/1 scale-0 indicators of disjoint ranges of x, each below top.
    The last squaring is done once per band, on z opened at the finest scale that band's
    values allow (one opening, several shifts), and multiplied by the band's bit."""
    # z_i = e^(x / 2^(n-i)) - 1 is formed at scale T_i: |z_i| 2^T_i <= 2^41
    Z = [max(1 - math.exp(lo / 2 ** (n - i)), math.exp(hi / 2 ** (n - i)) - 1) * 1.05 + 2.0 ** -20
         for i in range(n + 1)]
    T = [mag_scale(z) for z in Z]
    u = Shared.at(x.data, x.bits + n)  # u = x / 2^n: the same share, read with n more fractional bits
    uo = Shared.at(x.data, x.bits + n, min(24, (T[0] - 1) // 2))  # u opened for its square
    c = ctx.lin([(CUBE, u)], fb=min(24, T[0] // 3))  # opened coarser for the cube
    yield from ctx.open([uo, c])
    z = ctx.lin([(1, u), (0.5, ctx.mono([uo, uo])), (1, ctx.mono([c, c, c]))])
    for i in range(n - 1):
        z.retarget(min(24, T[i + 1] // 2))
        # the square uses z opened coarsely; the doubled term a fine copy of the same share
        (fine,) = yield from ctx.open([z], keep=[(z, min(z.bits, T[i + 1]))])
        z = ctx.lin([(2, fine), (1, ctx.mono([z, z]))])
    bl = value_of(bands)
    log2e = math.log2(math.e)
    scales = [min(cap, int(math.floor((MAG - min(top, hi) * log2e - 0.1) / 2))) for _, top in bl]
    z.retarget(scales[0])
    zs = [z] + (yield from ctx.open([z] + [b for b, _ in bl], views=[(z, sc) for sc in scales[1:]]))
    # b e^x = b (1 + z)^2 = b + 2 b z + b z^2: the selection rides on the last squaring
    return [ctx.lin([(1, b), (2, ctx.mono([b, zb])), (1, ctx.mono([b, zb, zb]))]) for (b, _), zb in zip(bl, zs)]


@protocol(OP.exp)
def exp(P, node, args, a):
    """e^x.

    u = x / 2^8 (exact: the same share with 8 more fractional bits), z_0 = u + u^2/2 +
    u^3/6 = e^u - 1 up to u^4/24 (one round: u opened, and u 6^(-1/3) opened coarser for
    the cube), then eight squarings in the form z <- 2z + z^2 = (1 + z)^2 - 1, one round
    each: e^x = 1 + z_8, up to a relative 2^8 u^4/24 = x^4 2^-35 / 3. Each z is opened
    coarsely for its square (its magnitude bounds the scale) while the doubled term uses a
    finer copy of the same share (local with 2 parties, one more shift of the same
    opening with more), since the doublings amplify its error. In parallel, one sign_bit
    batch sorts x into [-16, 0), [0, 6) and [6, inf): the last squaring is done per band,
    each at the finest scale its values allow, and multiplied by the band's bit, so that
    x < -16 gives exactly 0 (e^-16 < 2^-23).

    Range: x <= 12 (any x < -16 gives 0; above 12 unspecified). Error: absolute 2^-15
    plus relative 2^-13 (measured: 2^-15.7 for x < 0, relative 2^-15 on [0, 6) and 2^-14
    on [6, 12]). Rounds: 9; per element 128 bytes sent and 400 dealer bytes (2 parties).
    """
    x = operand(P, node, args)
    ctx = Ctx(P)
    xf = Shared.at(x.data, P.frac)
    box = Box()
    _, terms = yield from par(bands(ctx, xf, EXP_CUTS, box), exp_chain(ctx, xf, EXP_N, EXP_CUTS[0], EXP_HI, box))
    return Shared((yield from ctx.output_sum(terms, P.frac)))


bound(OP.exp, 2.0 ** -15, 2.0 ** -13, "x <= 12 (0 below -16)", "9")
