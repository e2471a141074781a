"""1/x, and Goldschmidt's products (``goldschmidt``) that softmax and sigmoid reuse.

x is sorted into bands of octaves by sign_bit batches, which also give x' = |x| 2^-E
exactly; from a linear minimax guess g for 1/x' and e = 1 - x' g, Goldschmidt's products
g (1 + e)(1 + e^2)...(1 + e^(2^(K-1))) = g (1 - e^(2^K)) / (1 - e) converge
quadratically, one round a factor.

Bound (registered below; tests/test_approx.py checks this line against the registration):

    reciprocal: |error| <= 2^-14 + 2^-14 |f(x)| for 2^-8 <= |x| < 2^16; rounds: 12
"""
from __future__ import annotations

import torch

from planc.ir.ops import OP

from ..core import Shared, bound, protocol
from .engine import Ctx, mag_scale, operand, thresholds, value_of

__all__ = ["goldschmidt", "reciprocal"]


def goldschmidt(ctx, q, e: Shared, K: int, qmax: float, rho: float, mult=None, mmax: float = 1.0):
    """q * prod_{j<K} (1 + e^(2^j)) = q (1 - e^(2^K)) / (1 - e), as a list of terms; K
    rounds. Each round opens q_j and e_j and forms q_{j+1} = q_j + q_j e_j (the linear
    term from a finer kept copy of q_j) and e_{j+1} = e_j^2. |q_j| <= qmax, |e| <= rho.
    q is a share, or a public float.

    `mult` (a share or a list of share factors, or a Box filled before the last round;
    their product bounded by mmax): the result is multiplied by it in the last round, as
    mult q + mult q e with q opened at two scales (one opening), so that neither term
    overflows."""
    sq = mag_scale(qmax * 1.02)  # scale q_{j+1} is formed at
    for j in range(K - 1 if mult is not None else K):
        F_e = min(20, sq - 14)
        e.retarget(F_e)
        if not isinstance(q, Shared):  # a public start: q_1 = q (1 + e) needs e opened only
            yield from ctx.open([e])
            q_next = ctx.lin([(q, e)], const=q, fb=sq)
        else:
            q.retarget(min(24, sq - F_e))
            (q_hi,) = yield from ctx.open([q, e], keep=[(q, min(q.bits, sq))])
            q_next = ctx.lin([(1, q_hi), (1, ctx.mono([q, e]))])
        e = ctx.mono([e, e])
        q = q_next
    if mult is None:
        return [q]
    ms = value_of(mult)
    ms = list(ms) if isinstance(ms, (list, tuple)) else [ms]
    fm = sum(m.frac for m in ms)
    rj = rho ** (2 ** (K - 1)) * 1.02 + 2.0 ** -20
    top = mag_scale(mmax * qmax * 1.02) - fm  # budget for q's scale in m q
    f_fine = min(24, top)
    e.retarget(18)
    f_coarse = min(f_fine, mag_scale(mmax * qmax * rj * 1.02) - fm - e.frac)
    if isinstance(q, Shared):
        q.retarget(f_fine)
        (qc,) = yield from ctx.open([q, e] + ms, views=[(q, f_coarse)])
        return [ctx.mono(ms + [q]), ctx.mono(ms + [qc, e])]
    yield from ctx.open([e] + ms)  # a public q (K = 1)
    return [ctx.lin([(q, ctx.mono(ms))]), ctx.lin([(q, ctx.mono(ms + [e]))])]


RECIP_W = 4  # band width in octaves: |x| in [2^(E-4), 2^E)
RECIP_TOPS = (-4, 0, 4, 8, 12, 16)  # band tops E: |x| in [2^-8, 2^16)
RECIP_K = 5  # Goldschmidt rounds: 0.64^32 < 2^-20


def _linear_guess(a: float):
    """(alpha, beta): g(x) = alpha - beta x minimising max |1 - x g(x)| on [a, 1]
    (equioscillation at a, (1+a)/2 and 1), beta rounded to a multiple of 1/2 so that
    beta x^2 adds one bit; returns also the resulting max |1 - x g|."""
    # solve e(a) = e(1) = rho, e((1+a)/2) = -rho for alpha = beta (1 + a):
    # 1 - beta a = rho and 1 - beta (1+a)^2 / 4 = -rho  =>  beta = 2 / (a + (1+a)^2/4)
    beta = 2.0 / (a + (1 + a) ** 2 / 4)
    beta = round(beta * 2) / 2
    alpha = beta * (1 + a)
    xs = torch.linspace(a, 1, 4097, dtype=torch.float64)
    rho = (1 - xs * (alpha - beta * xs)).abs().max().item()
    return alpha, beta, rho


def _recip_parts(ctx, x: Shared, tops, w, K):
    """1/x for 2^(tops[0]-w) <= |x| < 2^tops[-1], as terms; 3 + 3 + 1 + K rounds."""
    P = ctx.P
    (b,), (bx,) = yield from thresholds(ctx, x, [0.0], with_x=True)
    sgn = ctx.bit_lin([(-2, b)], const=1)  # 1 - 2 [x < 0]
    ax = Shared.at(x.data if ctx.meta else x.data - 2 * bx, x.bits)  # |x| = x - 2 [x < 0] x, exact
    B, BX = yield from thresholds(ctx, ax, [2.0 ** E for E in tops[:-1]], with_x=True)
    top = max(tops)
    if ctx.meta:
        xn, sc = Shared.at(P.empty(x.shape), x.bits + top), Shared.at(P.empty(x.shape), top)
    else:
        # band k: t_(k-1) <= |x| < t_k (t_k = 2^tops[k]; the first band takes all below):
        # x' = |x| 2^-E_k and T = 2^-E_k, telescoped over the bits [|x| < t_k], exact
        nb = len(tops)
        xn_d = torch.zeros(x.shape, dtype=torch.int64)
        sc_d = torch.zeros(x.shape, dtype=torch.int64)
        one = ctx.lead(torch.ones(x.shape, dtype=torch.int64))
        for k, E in enumerate(tops):
            band = (B[k] if k < nb - 1 else one) - (B[k - 1] if k > 0 else 0)
            bax = (BX[k] if k < nb - 1 else ax.data) - (BX[k - 1] if k > 0 else 0)
            xn_d = xn_d + (bax << (top - E))
            sc_d = sc_d + band * (1 << (top - E))
        xn, sc = Shared.at(xn_d, x.bits + top), Shared.at(sc_d, top)
    alpha, beta, rho = _linear_guess(2.0 ** -w)
    xn.retarget(20)
    yield from ctx.open([xn, sgn])
    g = ctx.lin([(alpha, sgn), (-beta, ctx.mono([sgn, xn]))])  # sign(x) (alpha - beta x')
    e = ctx.lin([(-alpha, xn), (beta, ctx.mono([xn, xn]))], const=1.0)
    qmax = (1 + rho) * 2 ** w
    mmax = 2.0 ** -min(tops)
    return (yield from goldschmidt(ctx, g, e, K, qmax, rho, mult=sc, mmax=mmax))


@protocol(OP.reciprocal)
def reciprocal(P, node, args, a):
    """1/x, for either sign.

    sign_bit gives b = [x < 0] and, free, b x: |x| = x - 2 b x exactly (3 rounds). A
    second sign_bit batch against 2^-4, 1, 2^4, 2^8, 2^12 sorts |x| into bands
    [2^(E-4), 2^E) and, with the free products [|x| < t] |x|, gives x' = |x| 2^-E in
    [1/16, 1) and T = 2^-E exactly (3 rounds). With g = sign(x) (alpha - 6 x') (the linear
    minimax guess for 1/x' on [1/16, 1], slope rounded to 6) and e = 1 - x' |g| in
    [-0.64, 0.64] (one round, x' opened), Goldschmidt's products

        1/x = T g (1 + e)(1 + e^2)(1 + e^4)(1 + e^8)(1 + e^16) / (1 - e^32)

    take one round each (q <- q + q e and e <- e^2 from one opening of q and e), T
    multiplied in within the last: 3 + 3 + 1 + 5 = 12 rounds. Per element (2 parties):
    about 170 bytes sent and 830 dealer bytes, most of both for the 6 comparisons.

    Range: 2^-8 <= |x| < 2^16 (outside it the result is unspecified). Error: relative
    2^-14 plus absolute 2^-14 (measured: relative 2^-15.2, absolute 1.7 units of 2^-16).
    """
    x = operand(P, node, args)
    ctx = Ctx(P)
    terms = yield from _recip_parts(ctx, Shared.at(x.data, P.frac), RECIP_TOPS, RECIP_W, RECIP_K)
    return Shared((yield from ctx.output_sum(terms, P.frac)))


bound(OP.reciprocal, 2.0 ** -14, 2.0 ** -14, "2^-8 <= |x| < 2^16", "12")
