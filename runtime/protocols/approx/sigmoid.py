"""sigmoid and tanh.

sigmoid(x) = b + (1 - 2b) / (1 + u) with b = [x < 0] and u = e^-|x| in [0, 1]: two of
``exp``'s chains (on x and -x) selected by the bands where each is valid, then 1/(1 + u)
by Goldschmidt's products (reciprocal.goldschmidt) from a public constant.
tanh(x) = 2 sigmoid(2x) - 1 on the same share read with one fractional bit less.

Bounds (registered below; tests/test_approx.py checks these lines against the
registrations):

    sigmoid: |error| <= 2^-14 for |x| < 2^23; rounds: 10
    tanh: |error| <= 2^-13 for |x| < 2^22; rounds: 10
"""
from __future__ import annotations

from planc.ir.ops import OP

from ..core import Shared, bound, par, protocol
from .engine import Box, Ctx, Lazy, operand, thresholds
from .exp import exp_chain
from .reciprocal import goldschmidt

__all__ = ["sigmoid", "tanh"]

SIG_L, SIG_N = 16.0, 5  # |x| >= 16 saturates (1 - sigmoid(16) < 2^-23)


def _sigmoid_parts(ctx, x: Shared):
    """sigmoid(x) as terms; 10 rounds. See ``sigmoid``."""
    box = Box()

    def cmp():
        B, _ = yield from thresholds(ctx, x, [-SIG_L, 0.0, SIG_L])
        g_neg = ctx.bit_lin([(1, B[1]), (-1, B[0])])  # -16 <= x < 0: e^x is e^-|x|
        g_pos = ctx.bit_lin([(1, B[2]), (-1, B[1])])  # 0 <= x < 16: e^-x is e^-|x|
        box.v = (g_neg, g_pos, ctx.bit_lin([(1, B[1])]), ctx.bit_lin([(-2, B[1])], const=1))

    nx = Shared.at(x.data if ctx.meta else -x.data, x.bits)
    neg_box, pos_box = Box(), Box()

    def chain(v, which, out):
        bands = Lazy(lambda: [(box.v[which], 0.0)])
        out.v = yield from exp_chain(ctx, v, SIG_N, -SIG_L, 0.0, bands, cap=19)

    yield from par(cmp(), chain(x, 0, neg_box), chain(nx, 1, pos_box))
    g_neg, g_pos, b, sgn = box.v
    u = neg_box.v + pos_box.v  # e^-|x|, 0 for |x| >= 16
    c0 = 11 / 16  # 1/(1 + u) for u in [0, 1]: |1 - c0 (1 + u)| <= 3/8
    e = ctx.lin([(-c0, t) for t in u], const=1 - c0)
    terms = yield from goldschmidt(ctx, c0, e, 4, 1.4, 0.375, mult=sgn, mmax=1.0)
    return [b] + terms  # b + (1 - 2b) / (1 + u)


@protocol(OP.sigmoid)
def sigmoid(P, node, args, a):
    """sigmoid(x) = b + (1 - 2b) / (1 + u), b = [x < 0], u = e^-|x|.

    Two exp chains (``exp``'s, 5 squarings on [-16, 0]) on x and on -x, and in parallel
    one sign_bit batch against -16, 0, 16: each chain's last squaring is multiplied by
    the bit of the band where it is valid (x in [-16, 0) resp. [0, 16)), so their sum is
    u = e^-|x| (0 for |x| >= 16): 6 rounds. Then 1/(1 + u), u in [0, 1], by Goldschmidt
    from the constant 11/16 (|e| <= 3/8, 4 factors, the first free), with 1 - 2b
    multiplied in within the last round: 4 rounds. 10 rounds in all; per element (2
    parties) about 220 bytes sent and 500 dealer bytes.

    Range: any |x| < 2^23. Error: absolute 2^-14 (measured 2^-15).
    """
    x = operand(P, node, args)
    ctx = Ctx(P)
    terms = yield from _sigmoid_parts(ctx, Shared.at(x.data, P.frac))
    return Shared((yield from ctx.output_sum(terms, P.frac)))


@protocol(OP.tanh)
def tanh(P, node, args, a):
    """tanh(x) = 2 sigmoid(2x) - 1, with ``sigmoid``'s protocol on 2x (exact: the same
    share read with one fractional bit less). 10 rounds.

    Range: any |x| < 2^22. Error: absolute 2^-13 (measured 2^-14.7).
    """
    x = operand(P, node, args)
    ctx = Ctx(P)
    terms = yield from _sigmoid_parts(ctx, Shared.at(x.data, P.frac - 1))
    terms = [Shared.at(t.data, t.bits - 1) for t in terms]  # times 2
    terms.append(ctx.public(-1.0, x.shape, P.frac))
    return Shared((yield from ctx.output_sum(terms, P.frac)))


bound(OP.sigmoid, 2.0 ** -14, 0.0, "|x| < 2^23", "10")
bound(OP.tanh, 2.0 ** -13, 0.0, "|x| < 2^22", "10")
