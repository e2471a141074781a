"""Non-linear functions on secret fixed-point values: exp, log, reciprocal, sqrt (and
rsqrt for batch_norm), sigmoid, tanh, softmax, log_softmax.

Each function's math, input range and error bound are in its docstring; the bounds are
collected in ``ERROR`` and measured by tests/test_approx.py. A bound is for the
fixed-point input the protocol receives (a float input first rounds to a multiple of
2^-f, which adds |f'(x)| 2^-(f+1)), with f = 16: |result - f(x)| <= ABS + REL |f(x)|.
Costs per element are for 2 parties (sent by each party / sent by the dealer before the
online phase); "max" is compare.max_dim's rounds (8 for n = 10).

    op           range                  ABS     REL     rounds        bytes sent / dealer
    exp          x <= 12 (0 below -16)  2^-15   2^-13   9             137 / 430
    reciprocal   2^-8 <= |x| < 2^16     2^-14   2^-14   12            182 / 830
    log          2^-12 <= x < 2^16      2^-14   -       7             209 / 1600
    sqrt         0 <= x < 2^16          2^-14   2^-16   8             267 / 1900
    sigmoid      |x| < 2^23             2^-14   -       10            225 / 500
    tanh         |x| < 2^22             2^-13   -       10            225 / 500
    softmax      |x| < 2^23             2^-14   -       max + 12 (n = 10)   (per row
    log_softmax  |x| < 2^23             2^-14   -       max + 12 (n = 10)    mostly)

With more parties each truncation costs a round; the engine folds a pending truncation
into the next opening of the value (both are one opening of d + r), so a function costs
1 or 2 rounds more than with 2 parties.

The engine: masked openings, monomials, one material request per step
--------------------------------------------------------------------------
A value inside a protocol is an ``Fx``: a ring share ``d`` of value * 2^s and the scale
``fb`` it is meant to have (s > fb means a truncation by s - fb is pending). Products are
evaluated by *opening* their factors once, Beaver style, and expanding:

    open:  e = v - a  (a: uniform dealer mask, shared by PRG: no dealer traffic), so that
           v * 2^fb = e + a with e public and a = [m] a mask the DEALER knows;
    product of opened values v_1..v_k (repetitions allowed: powers):
           prod_i (e_i + m_i) = sum_{T subset of positions} (prod_{i not in T} e_i) [M_T],
           M_T = prod_{i in T} m_i

so any monomial in already-opened values is local, given shares of the mask products
M_T (|T| >= 2), which the dealer derives from masks of earlier requests (the dealer runs
this code on meta tensors and calls ``derive`` at request time, so a derive closure may
read the masks it stashed for earlier openings). An opened value can be reused in any
number of later products without new traffic: x^2, x^3 and x y all come from one
opening of x and y. The result is exact in the ring; it carries scale sum_i fb_i.

Truncation: with 2 parties a share is truncated locally (common.truncate: error below 1
unit of the last place, mean 0). With more parties a pending truncation is done *by* the
next opening: open z = d + r for a dealer pair (r, r >> k), and then
v * 2^fb = (z >> k) - (r >> k): e = z >> k is public and m = -(r >> k) is a mask the
dealer knows — a truncation and an opening in one round.

Magnitudes: a truncation (either kind) of value * 2^s fails with probability about
|value| 2^s / 2^64 (a share wraps). Every value truncated below has |value| 2^s <= 2^41
on its function's documented range (scales are chosen from bounds, see ``_mag_scale``),
so each truncation fails with probability below 2^-23 per element. Terms inside a sum
may wrap freely: the ring is exact, only the sum is truncated.

Comparisons come from compare.sign_bit: 3 rounds, exact, and ``mult`` products with the
bit for free; a batch of thresholds is one call on a stacked tensor.
"""
from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import torch

from planc.ir.ops import OP

from planc.ir import ops

from .core import Ex, bound, par, protocol
from ..material import Part
from ..party import Shared
from .common import others, shared
from .compare import max_dim, sign_bit


# ---------------------------------------------------------------- fixed-point values


class Fx:
    """A share ``d`` of value * 2^s, to be brought to scale ``fb``; after an opening,
    value * 2^fb = e + m with ``e`` public and ``m`` a share of the dealer-known mask ``mid``."""

    __slots__ = ("d", "s", "fb", "e", "m", "mid")

    def __init__(self, d, s, fb=None):
        self.d, self.s = d, s
        self.fb = s if fb is None else fb
        self.e = self.m = self.mid = None

    @property
    def shape(self):
        return tuple(self.d.shape)

    @property
    def pending(self) -> int:
        return self.s - self.fb


def _coef(c: float, bits: int):
    """c as C / 2^k with C an integer: exactly when c is a dyadic fraction of at most
    `bits` bits, else rounded to `bits` fractional bits."""
    c = float(c)
    for k in range(0, bits + 1):
        v = c * (1 << k)
        if v == int(v):
            return int(v), k
    return int(round(c * (1 << bits))), bits


class Ctx:
    """One protocol's view of the engine: party, dealer stash, material requests."""

    def __init__(self, P):
        self.P = P
        self.meta = P.meta
        self.two = P.nparties == 2
        self.stash = {}  # dealer only: mask id -> full mask (int64)
        self.ids = 0

    # ------------------------------------------------------------ making values
    def public(self, value, shape, s: int) -> Fx:
        """A public constant (float or tensor) as a sharing held by party 0."""
        if self.meta:
            return Fx(self.P.empty(shape), s)
        v = torch.as_tensor(value, dtype=torch.float64).expand(shape)
        enc = torch.round(v * (2.0 ** s)).to(torch.int64)
        return Fx(enc.clone() if self.P.leader else torch.zeros(shape, dtype=torch.int64), s)

    def _lead(self, t):
        return t if self.P.leader else torch.zeros_like(t)

    # ------------------------------------------------------------ local arithmetic
    def settle(self, v: Fx) -> Fx:
        """2 parties: do a pending truncation now (local). More parties: unchanged."""
        if not self.two or v.pending <= 0:
            if v.pending < 0:
                return Fx(v.d if self.meta else v.d << -v.pending, v.fb)
            return v
        k = v.pending
        if self.meta:
            return Fx(v.d, v.fb)
        d = v.d >> k if self.P.rank == 0 else -((-v.d) >> k)
        return Fx(d, v.fb)

    def lin(self, terms, const=0.0, fb=None, bits: int = 20) -> Fx:
        """sum_i c_i v_i + const (public c_i, const), exact in the ring at a common scale,
        to be brought to `fb` at its next opening (default: none pending).
        Coefficients that are dyadic (1/2, 3/4, 2) add no bits; others are rounded to
        `bits` fractional bits, which the result's scale carries until its truncation.
        With 2 parties pending truncations of the inputs are done first (locally)."""
        terms = [(c, self.settle(v) if v.pending > 0 else v) for c, v in terms]
        enc = [(_coef(c, bits), v) for c, v in terms]
        S = max(v.s + k for (_, k), v in enc)
        if fb is None:
            fb = S
        shape = torch.broadcast_shapes(*[v.shape for _, v in terms])
        if self.meta:
            return Fx(self.P.empty(shape), S, fb)
        acc = torch.zeros(shape, dtype=torch.int64)
        for (C, k), v in enc:
            sh = S - v.s - k
            acc = acc + (v.d * C << sh)
        if const:
            acc = acc + self._lead(torch.full(shape, int(round(const * 2.0 ** S)), dtype=torch.int64))
        return Fx(acc, S, fb)

    def bit_lin(self, terms, const=0, fb=0) -> Fx:
        """sum_i c_i b_i + const for scale-1 integer shares b_i and integer c_i: exact."""
        shape = torch.broadcast_shapes(*[b.shape for _, b in terms])
        if self.meta:
            return Fx(self.P.empty(shape), fb)
        acc = torch.zeros(shape, dtype=torch.int64)
        for c, b in terms:
            acc = acc + b * int(c)
        if const:
            acc = acc + self._lead(torch.full(shape, int(const), dtype=torch.int64))
        return Fx(acc << fb, fb)

    # ------------------------------------------------------------ one round of openings
    def open(self, vals, views=(), keep=()):
        """Open every not-yet-opened value of `vals` in ONE round (see the module
        docstring); pending truncations are done by the same opening. `views`: pairs
        (v, s) asking for v opened at further scales s, returned in order as opened Fx:
        the same opened z = d + r is shifted by several amounts, one more dealer share
        each and no more traffic. `keep`: pairs (v, s) asking for a plain share of v at
        scale s (returned after the views): a local truncation with 2 parties, a further
        shift of the opening with more."""
        P = self.P
        kept = []
        if self.two:
            kept = [self.settle(Fx(v.d, v.s, sc)) for v, sc in keep]
        else:
            views = list(views) + list(keep)
        extra = {}
        for v, sc in views:
            extra.setdefault(id(v), []).append(sc)
        todo, seen = [], set()
        for v in list(vals) + [v for v, _ in views]:
            if v.e is not None or id(v) in seen:
                continue
            seen.add(id(v))
            multi = id(v) in extra
            if not multi and (v.pending < 0 or (self.two and v.pending > 0)):
                w = self.settle(v)  # 2 parties: truncate locally, open with a free mask
                v.d, v.s = w.d, w.s
            todo.append(v)
        if not todo:
            return list(kept)
        random, derived, plan = [], [], []
        for i, v in enumerate(todo):
            scales = [v.fb] + extra.get(id(v), [])
            base = max([v.s] + scales)
            if base > v.s:
                v.d, v.s = (v.d if self.meta else v.d << (base - v.s)), base
            shifts = [base - sc for sc in scales]
            masked = len(scales) > 1 or shifts[0] > 0
            if masked:
                random.append(Part(f"r{i}", v.shape))
                for j, k in enumerate(shifts):
                    if k > 0:
                        derived.append(Part(f"t{i}_{j}", v.shape))
            else:
                random.append(Part(f"a{i}", v.shape))
            plan.append((i, v, scales, shifts, masked))
        outs = {}  # (i, j) -> Fx with e/m/mid
        for i, v, scales, shifts, masked in plan:
            for j, sc in enumerate(scales):
                w = v if j == 0 else Fx(None, sc)
                self.ids += 1
                w.mid = self.ids
                outs[i, j] = w
        stash = self.stash

        def derive(full):
            out = {}
            for i, v, scales, shifts, masked in plan:
                if not masked:
                    stash[outs[i, 0].mid] = full[f"a{i}"]
                    continue
                for j, k in enumerate(shifts):
                    t = full[f"r{i}"] >> k
                    if k > 0:
                        out[f"t{i}_{j}"] = t
                    stash[outs[i, j].mid] = -t
            return out

        mat = P.material.get("fx.open", random, derived, derive)
        wire = [v.d + mat[f"r{i}"] if masked else v.d - mat[f"a{i}"] for i, v, _, _, masked in plan]
        specs = [(tuple(w.shape), torch.int64) for w in wire]
        got = yield Ex({j: wire for j in others(P)}, {j: specs for j in others(P)})
        for idx, (i, v, scales, shifts, masked) in enumerate(plan):
            z = None
            if not self.meta:
                z = wire[idx].clone()
                for j in others(P):
                    z += got[j][idx]
            for j, (sc, k) in enumerate(zip(scales, shifts)):
                w = outs[i, j]
                if not masked:
                    w.e, w.m = (P.empty(v.shape) if self.meta else z), mat[f"a{i}"]
                    continue
                w.m = -(mat[f"t{i}_{j}"] if k > 0 else mat[f"r{i}"])
                w.e = P.empty(v.shape) if self.meta else z >> k
                w.d = w.m if self.meta else w.m + self._lead(w.e)
                w.s = w.fb = sc
        where = {id(v): i for i, v, *_ in plan}
        count, res = {}, []
        for v, _ in views:
            count[id(v)] = count.get(id(v), 0) + 1
            res.append(outs[where[id(v)], count[id(v)]])
        return res + kept

    # ------------------------------------------------------------ monomials
    def mono(self, factors, fb=None) -> Fx:
        """prod(factors) for opened factors (repetition allowed), exact in the ring at
        scale sum(fb_i), to be brought to `fb` later."""
        for v in factors:
            assert v.e is not None, "mono needs opened factors"
        k = len(factors)
        shape = torch.broadcast_shapes(*[v.shape for v in factors])
        S = sum(v.fb for v in factors)
        fb = S if fb is None else fb
        # mask products M_T for |T| >= 2, deduplicated by the multiset of mask ids
        keys = {}
        for r in range(2, k + 1):
            for T in combinations(range(k), r):
                key = tuple(sorted(factors[i].mid for i in T))
                if key not in keys:
                    keys[key] = (len(keys), torch.broadcast_shapes(*[factors[i].shape for i in T]))
        M = {}
        if keys:
            stash = self.stash
            parts = [Part(f"M{j}", tuple(sh)) for _, (j, sh) in keys.items()]

            def derive(full):
                out = {}
                for key, (j, sh) in keys.items():
                    p = stash[key[0]]
                    for mid in key[1:]:
                        p = p * stash[mid]
                    out[f"M{j}"] = p.expand(sh).contiguous() if tuple(p.shape) != tuple(sh) else p
                return out

            got = self.P.material.get("fx.mono", [], parts, derive)
            M = {key: got[f"M{j}"] for key, (j, _) in keys.items()}
        if self.meta:
            return Fx(self.P.empty(shape), S, fb)
        acc = torch.zeros(shape, dtype=torch.int64)
        for r in range(0, k + 1):
            for T in combinations(range(k), r):
                pub = None
                for i in range(k):
                    if i not in T:
                        pub = factors[i].e if pub is None else pub * factors[i].e
                if r == 0:
                    term = self._lead(pub)
                elif r == 1:
                    term = factors[T[0]].m
                else:
                    term = M[tuple(sorted(factors[i].mid for i in T))]
                acc = acc + (term if pub is None or r == 0 else pub * term)
        return Fx(acc, S, fb)

    def settle_all(self, vals):
        """Bring every value to its scale: locally with 2 parties; with more, one round
        of truncating openings (the values come back opened)."""
        if self.two:
            for v in vals:
                if v.pending:
                    w = self.settle(v)
                    v.d, v.s = w.d, w.s
            return
        todo = [v for v in vals if v.pending > 0 and v.e is None]
        for v in vals:
            if v.pending < 0:
                w = self.settle(v)
                v.d, v.s = w.d, w.s
        if todo:
            yield from self.open(todo)

    def output_sum(self, terms, f: int):
        """sum of Fx terms as a plain ring share with scale f, each term truncated on its
        own (with more parties: all in one round)."""
        outs = [Fx(v.d, v.s, f) for v in terms]
        if not self.two and any(v.pending > 0 for v in outs):
            yield from self.open([v for v in outs if v.pending > 0])
        acc = None
        for v in outs:
            d = v.d if v.e is not None else self.settle(v).d
            acc = d if acc is None else acc + d
        return acc


class Box:
    """A value another lock-step generator will produce before it is needed."""

    __slots__ = ("v",)

    def __init__(self, v=None):
        self.v = v


class _Lazy(Box):
    """A Box whose value is computed when first read."""

    __slots__ = ("fn",)

    def __init__(self, fn):
        super().__init__()
        self.fn = fn


def _val(v):
    """The value of a Box (a lazy one computed on first read), or v itself."""
    if isinstance(v, _Lazy):
        if v.v is None:
            v.v = v.fn()
        return v.v
    return v.v if isinstance(v, Box) else v


# ---------------------------------------------------------------- helpers

MAG = 41  # products keep |value| * 2^scale <= 2^MAG (truncation failure < 2^-23)


def _mag_scale(bound: float, cap: int = 48) -> int:
    """The largest scale s with bound * 2^s <= 2^MAG."""
    return min(cap, int(math.floor(MAG - math.log2(bound))))


def _input(P, node, args):
    (x,) = args
    return shared(P, x, node.operands[0].type.vis, node.operands[0].type.shape)


def _thresholds(ctx, x: Fx, ts, with_x=False):
    """One sign_bit batch (3 rounds): bits B_j = [x < t_j] (scale-0 shares) and, with
    `with_x`, shares of B_j * x at x's scale (free: B_j (x - t_j) is the product by the
    compared value itself, and B_j t_j is local)."""
    P = ctx.P
    K = len(ts)
    enc = [int(round(t * 2 ** x.s)) for t in ts]
    if ctx.meta:
        d = P.empty(x.shape + (K,))
    else:
        d = x.d.unsqueeze(-1) - ctx._lead(torch.tensor(enc, dtype=torch.int64).expand(x.shape + (K,)))
    bits, prods = yield from sign_bit(P, d, [d] if with_x else [])
    if ctx.meta:
        B = [P.empty(x.shape) for _ in ts]
        return B, ([P.empty(x.shape) for _ in ts] if with_x else None)
    B = [bits[..., j] for j in range(K)]
    if not with_x:
        return B, None
    return B, [prods[0][..., j] + bits[..., j] * enc[j] for j in range(K)]


def _bands(ctx, x: Fx, cuts, box: Box):
    """box.v = [(1[c_k <= x < c_k+1] as a scale-0 Fx, c_k+1)] for cuts c_0 < c_1 < ...
    (the last band is open above; below c_0 no band holds x): 3 rounds."""
    B, _ = yield from _thresholds(ctx, x, cuts)
    K = len(cuts)
    box.v = [(ctx.bit_lin([(1, B[k + 1]), (-1, B[k])]) if k + 1 < K else ctx.bit_lin([(-1, B[k])], const=1),
              cuts[k + 1] if k + 1 < K else math.inf) for k in range(K)]


# ---------------------------------------------------------------- exp

CUBE = 6.0 ** (-1.0 / 3.0)  # c = u 6^(-1/3) gives c^3 = u^3 / 6
EXP_N, EXP_HI, EXP_CUTS = 8, 12.0, (-16.0, 0.0, 6.0)


def _exp_chain(ctx, x: Fx, n: int, lo: float, hi: float, bands, cap: int = 24):
    """Terms summing to sum_b bit_b e^x for x in [lo, hi]: n + 1 rounds, math in ``exp``.

    `bands` (a list, or a Box another lock-step generator fills before the last round) of
    pairs (bit, top): 0/1 scale-0 Fx indicators of disjoint ranges of x, each below top.
    The last squaring is done once per band, on z opened at the finest scale that band's
    values allow (one opening, several shifts), and multiplied by the band's bit."""
    # z_i = e^(x / 2^(n-i)) - 1 is formed at scale T_i: |z_i| 2^T_i <= 2^41
    Z = [max(1 - math.exp(lo / 2 ** (n - i)), math.exp(hi / 2 ** (n - i)) - 1) * 1.05 + 2.0 ** -20
         for i in range(n + 1)]
    T = [_mag_scale(z) for z in Z]
    u = Fx(x.d, x.s + n)  # u = x / 2^n: the same share, read with n more fractional bits
    uo = Fx(x.d, x.s + n, min(24, (T[0] - 1) // 2))  # u opened for its square
    c = ctx.lin([(CUBE, u)], fb=min(24, T[0] // 3))  # opened coarser for the cube
    yield from ctx.open([uo, c])
    z = ctx.lin([(1, u), (0.5, ctx.mono([uo, uo])), (1, ctx.mono([c, c, c]))])
    for i in range(n - 1):
        z.fb = min(24, T[i + 1] // 2)
        # the square uses z opened coarsely; the doubled term a fine copy of the same share
        (fine,) = yield from ctx.open([z], keep=[(z, min(z.s, T[i + 1]))])
        z = ctx.lin([(2, fine), (1, ctx.mono([z, z]))])
    bl = _val(bands)
    log2e = math.log2(math.e)
    scales = [min(cap, int(math.floor((MAG - min(top, hi) * log2e - 0.1) / 2))) for _, top in bl]
    z.fb = scales[0]
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
    x = _input(P, node, args)
    ctx = Ctx(P)
    xf = Fx(x.data, P.frac)
    box = Box()
    _, terms = yield from par(_bands(ctx, xf, EXP_CUTS, box), _exp_chain(ctx, xf, EXP_N, EXP_CUTS[0], EXP_HI, box))
    return Shared((yield from ctx.output_sum(terms, P.frac)))


# ---------------------------------------------------------------- Goldschmidt products


def _goldschmidt(ctx, q: Fx, e: Fx, K: int, qmax: float, rho: float, mult=None, mmax: float = 1.0):
    """q * prod_{j<K} (1 + e^(2^j)) = q (1 - e^(2^K)) / (1 - e), as a list of terms; K
    rounds. Each round opens q_j and e_j and forms q_{j+1} = q_j + q_j e_j (the linear
    term from a finer kept copy of q_j) and e_{j+1} = e_j^2. |q_j| <= qmax, |e| <= rho.

    `mult` (an Fx or a list of Fx factors, or a Box filled before the last round; their
    product bounded by mmax): the result is multiplied by it in the last round, as
    mult q + mult q e with q opened at two scales (one opening), so that neither term
    overflows."""
    sq = _mag_scale(qmax * 1.02)  # scale q_{j+1} is formed at
    for j in range(K - 1 if mult is not None else K):
        F_e = min(20, sq - 14)
        e.fb = F_e
        if not isinstance(q, Fx):  # a public start: q_1 = q (1 + e) needs e opened only
            yield from ctx.open([e])
            q_next = ctx.lin([(q, e)], const=q, fb=sq)
        else:
            q.fb = min(24, sq - F_e)
            (q_hi,) = yield from ctx.open([q, e], keep=[(q, min(q.s, sq))])
            q_next = ctx.lin([(1, q_hi), (1, ctx.mono([q, e]))])
        e = ctx.mono([e, e])
        q = q_next
    if mult is None:
        return [q]
    ms = _val(mult)
    ms = list(ms) if isinstance(ms, (list, tuple)) else [ms]
    fm = sum(m.fb for m in ms)
    rj = rho ** (2 ** (K - 1)) * 1.02 + 2.0 ** -20
    top = _mag_scale(mmax * qmax * 1.02) - fm  # budget for q's scale in m q
    f_fine = min(24, top)
    e.fb = 18
    f_coarse = min(f_fine, _mag_scale(mmax * qmax * rj * 1.02) - fm - e.fb)
    if isinstance(q, Fx):
        q.fb = f_fine
        (qc,) = yield from ctx.open([q, e] + ms, views=[(q, f_coarse)])
        return [ctx.mono(ms + [q]), ctx.mono(ms + [qc, e])]
    yield from ctx.open([e] + ms)  # a public q (K = 1)
    return [ctx.lin([(q, ctx.mono(ms))]), ctx.lin([(q, ctx.mono(ms + [e]))])]


# ---------------------------------------------------------------- reciprocal

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


def _recip_parts(ctx, x: Fx, tops, w, K):
    """1/x for 2^(tops[0]-w) <= |x| < 2^tops[-1], as terms; 3 + 3 + 1 + K rounds."""
    P = ctx.P
    (b,), (bx,) = yield from _thresholds(ctx, x, [0.0], with_x=True)
    sgn = ctx.bit_lin([(-2, b)], const=1)  # 1 - 2 [x < 0]
    ax = Fx(x.d if ctx.meta else x.d - 2 * bx, x.s)  # |x| = x - 2 [x < 0] x, exact
    B, BX = yield from _thresholds(ctx, ax, [2.0 ** E for E in tops[:-1]], with_x=True)
    top = max(tops)
    if ctx.meta:
        xn, sc = Fx(P.empty(x.shape), x.s + top), Fx(P.empty(x.shape), top)
    else:
        # band k: t_(k-1) <= |x| < t_k (t_k = 2^tops[k]; the first band takes all below):
        # x' = |x| 2^-E_k and T = 2^-E_k, telescoped over the bits [|x| < t_k], exact
        nb = len(tops)
        xn_d = torch.zeros(x.shape, dtype=torch.int64)
        sc_d = torch.zeros(x.shape, dtype=torch.int64)
        one = ctx._lead(torch.ones(x.shape, dtype=torch.int64))
        for k, E in enumerate(tops):
            band = (B[k] if k < nb - 1 else one) - (B[k - 1] if k > 0 else 0)
            bax = (BX[k] if k < nb - 1 else ax.d) - (BX[k - 1] if k > 0 else 0)
            xn_d = xn_d + (bax << (top - E))
            sc_d = sc_d + band * (1 << (top - E))
        xn, sc = Fx(xn_d, x.s + top), Fx(sc_d, top)
    alpha, beta, rho = _linear_guess(2.0 ** -w)
    xn.fb = 20
    yield from ctx.open([xn, sgn])
    g = ctx.lin([(alpha, sgn), (-beta, ctx.mono([sgn, xn]))])  # sign(x) (alpha - beta x')
    e = ctx.lin([(-alpha, xn), (beta, ctx.mono([xn, xn]))], const=1.0)
    qmax = (1 + rho) * 2 ** w
    mmax = 2.0 ** -min(tops)
    return (yield from _goldschmidt(ctx, g, e, K, qmax, rho, mult=sc, mmax=mmax))


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
    x = _input(P, node, args)
    ctx = Ctx(P)
    terms = yield from _recip_parts(ctx, Fx(x.data, P.frac), RECIP_TOPS, RECIP_W, RECIP_K)
    return Shared((yield from ctx.output_sum(terms, P.frac)))


# ---------------------------------------------------------------- polynomials


def _cheb_fit(fn, D: int):
    """Monomial coefficients (low to high) of the degree-D Chebyshev interpolant of fn
    on [-1, 1] (near-minimax)."""
    k = np.arange(D + 1)
    nodes = np.cos(np.pi * (k + 0.5) / (D + 1))
    cheb = np.polynomial.chebyshev.chebfit(nodes, fn(nodes), D)
    return [float(c) for c in np.polynomial.chebyshev.cheb2poly(cheb)]


def _poly(ctx, t: Fx, coeffs, F: int = 20):
    """sum_k c_k t^k for |t| <= 1: powers by a doubling tree (t^(m + j) = t^m t^j from
    opened t^m, t^j: ceil(log2 D) + 1 rounds), each power formed at scale 2F; then one
    linear combination (with more than 2 parties the powers' truncation costs a round)."""
    D = len(coeffs) - 1
    t.fb = F
    yield from ctx.open([t])
    have = {1: t}
    m = 1
    while m < D:
        top = min(2 * m, D)
        need = [have[m]] + [have[j] for j in range(1, top - m + 1)]
        for v in need:
            v.fb = F
        yield from ctx.open(need)
        for k in range(m + 1, top + 1):
            have[k] = ctx.mono([have[m], have[k - m]])
            have[k].fb = F
        m = top
    powers = [have[k] for k in range(2, D + 1)]
    yield from ctx.settle_all(powers)
    return ctx.lin([(c, have[k]) for k, c in enumerate(coeffs) if k >= 1], const=coeffs[0])


# ---------------------------------------------------------------- log

LOG_W = 2  # bands x in [2^k, 2^(k+2))
LOG_LO, LOG_HI = -12, 16  # range 2^-12 <= x < 2^16
LOG_D = 12


def _log_coeffs(w: int, D: int):
    """Coefficients in u of log(c + h u), c = (1 + 2^w)/2, h = 2^(w-1), for
    |u| <= r = 1 - 2^-w (x' = c + h u covers [1, 2^w])."""
    c, h, r = (1 + 2.0 ** w) / 2, 2.0 ** (w - 1), 1 - 2.0 ** -w
    cv = _cheb_fit(lambda v: np.log(c + h * r * v), D)
    return [ck / r ** k for k, ck in enumerate(cv)]


def _log_parts(ctx, x: Fx, lo: int, hi: int, w: int, D: int, f_out: int):
    """log x for 2^lo <= x < 2^hi as terms: bands [2^k, 2^(k+w)) from one sign_bit batch
    with the free products [x < t] x give x' = x 2^-k in [1, 2^w) exactly, and
    log x = k ln 2 + log x', the first part exact from the bits, the second a degree-D
    polynomial in u = (x' - c)/h. 3 + ceil(log2 D) + 1 rounds."""
    P = ctx.P
    ks = list(range(lo, hi, w))
    ts = [2.0 ** k for k in ks[1:]]
    B, BX = (yield from _thresholds(ctx, x, ts, with_x=True)) if ts else ([], [])
    kmax = ks[-1]
    S = x.s + kmax  # x' = sum_k band_k x 2^-k, exact: every band shifts left
    if ctx.meta:
        xn, base = Fx(P.empty(x.shape), S), Fx(P.empty(x.shape), f_out)
    else:
        xn_d = torch.zeros(x.shape, dtype=torch.int64)
        base_d = torch.zeros(x.shape, dtype=torch.int64)
        one = ctx._lead(torch.ones(x.shape, dtype=torch.int64))
        nb = len(ks)
        for j, k in enumerate(ks):
            # band j = [x < 2^(k+w)] - [x < 2^k]; the first band takes everything below
            band = (B[j] if j < nb - 1 else one) - (B[j - 1] if j > 0 else 0)
            bx = (BX[j] if j < nb - 1 else x.d) - (BX[j - 1] if j > 0 else 0)
            xn_d = xn_d + (bx << (kmax - k))
            base_d = base_d + band * int(round(k * math.log(2) * 2 ** f_out))
        xn, base = Fx(xn_d, S), Fx(base_d, f_out)
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
    x = _input(P, node, args)
    ctx = Ctx(P)
    terms = yield from _log_parts(ctx, Fx(x.data, P.frac), LOG_LO, LOG_HI, LOG_W, LOG_D, P.frac)
    return Shared((yield from ctx.output_sum(terms, P.frac)))


# ---------------------------------------------------------------- softmax, log_softmax

SOFT_N, SOFT_LO = 5, -16.0  # e^d for d = x - max in [-16, 0]: 5 squarings; below -16: 0
LOG_SD = 8  # degree of log on [1, 2] for log s


def _dyadic(c: float, k: int) -> float:
    return round(c * 2 ** k) / 2 ** k


def _recip_const(lo: float, hi: float):
    """A constant guess c0 (dyadic, k bits) for 1/s on [lo, hi], the resulting
    rho = max |1 - c0 s|, k, and the Goldschmidt rounds K with rho^(2^K) < 2^-18."""
    c = 2.0 / (lo + hi)
    k = max(0, math.ceil(math.log2(16 / c)))
    c0 = _dyadic(c, k)
    rho = max(abs(1 - c0 * lo), abs(1 - c0 * hi))
    K = max(1, math.ceil(math.log2(18 * math.log(2) / -math.log(rho)))) if rho > 0 else 1
    return c0, k, rho, K


def _soft_exp(P, ctx, x: Shared, dim: int, F_last: int):
    """(d = x - max along dim, e^d as an Fx at scale 2 F_last, zero below -16)."""
    mx, _ = yield from max_dim(P, x, dim, True)
    d = Fx(x.data if P.meta else x.data - mx.data, P.frac)
    box = Box()
    _, terms = yield from par(_bands(ctx, d, [SOFT_LO], box),
                              _exp_chain(ctx, d, SOFT_N, SOFT_LO, 0.0, box, cap=F_last))
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
    x = _input(P, node, args)
    dim = a["dim"] % max(x.data.dim(), 1)
    n = x.shape[dim] if x.data.dim() else 1
    ctx = Ctx(P)
    c0, k, rho, K = _recip_const(1.0, float(n))
    F_last = min(18, int(math.floor((MAG - k - math.log2(max(rho, 2 ** -20))) / 2)))
    d, E = yield from _soft_exp(P, ctx, x, dim, F_last)
    s = Fx(E.d.sum(dim, keepdim=True), E.s)
    e = ctx.lin([(-c0, s)], const=1.0)
    E.fb = 20
    terms = yield from _goldschmidt(ctx, c0, e, K, 1.0 + rho, rho, mult=E, mmax=1.0)
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
    x = _input(P, node, args)
    dim = a["dim"] % max(x.data.dim(), 1)
    n = x.shape[dim] if x.data.dim() else 1
    ctx = Ctx(P)
    F_last = min(18, int(math.floor((40 - math.log2(n) - 0.1) / 2)))
    d, E = yield from _soft_exp(P, ctx, x, dim, F_last)
    s = Fx(E.d.sum(dim, keepdim=True), E.s)
    c = max(1, math.ceil(math.log2(n))) if n > 1 else 1
    parts = yield from _log_parts(ctx, s, 0, c, 1, LOG_SD, P.frac)
    neg = [ctx.lin([(-1, t)]) for t in parts]
    return Shared((yield from ctx.output_sum([d] + neg, P.frac)))



# ---------------------------------------------------------------- sigmoid, tanh

SIG_L, SIG_N = 16.0, 5  # |x| >= 16 saturates (1 - sigmoid(16) < 2^-23)


def _sigmoid_parts(ctx, x: Fx):
    """sigmoid(x) as terms; 10 rounds. See ``sigmoid``."""
    box = Box()

    def cmp():
        B, _ = yield from _thresholds(ctx, x, [-SIG_L, 0.0, SIG_L])
        g_neg = ctx.bit_lin([(1, B[1]), (-1, B[0])])  # -16 <= x < 0: e^x is e^-|x|
        g_pos = ctx.bit_lin([(1, B[2]), (-1, B[1])])  # 0 <= x < 16: e^-x is e^-|x|
        box.v = (g_neg, g_pos, ctx.bit_lin([(1, B[1])]), ctx.bit_lin([(-2, B[1])], const=1))

    nx = Fx(x.d if ctx.meta else -x.d, x.s)
    neg_box, pos_box = Box(), Box()

    def chain(v, which, out):
        bands = _Lazy(lambda: [(box.v[which], 0.0)])
        out.v = yield from _exp_chain(ctx, v, SIG_N, -SIG_L, 0.0, bands, cap=19)

    yield from par(cmp(), chain(x, 0, neg_box), chain(nx, 1, pos_box))
    g_neg, g_pos, b, sgn = box.v
    u = neg_box.v + pos_box.v  # e^-|x|, 0 for |x| >= 16
    c0 = 11 / 16  # 1/(1 + u) for u in [0, 1]: |1 - c0 (1 + u)| <= 3/8
    e = ctx.lin([(-c0, t) for t in u], const=1 - c0)
    terms = yield from _goldschmidt(ctx, c0, e, 4, 1.4, 0.375, mult=sgn, mmax=1.0)
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
    x = _input(P, node, args)
    ctx = Ctx(P)
    terms = yield from _sigmoid_parts(ctx, Fx(x.data, P.frac))
    return Shared((yield from ctx.output_sum(terms, P.frac)))


@protocol(OP.tanh)
def tanh(P, node, args, a):
    """tanh(x) = 2 sigmoid(2x) - 1, with ``sigmoid``'s protocol on 2x (exact: the same
    share read with one fractional bit less). 10 rounds.

    Range: any |x| < 2^22. Error: absolute 2^-13 (measured 2^-14.7).
    """
    x = _input(P, node, args)
    ctx = Ctx(P)
    terms = yield from _sigmoid_parts(ctx, Fx(x.data, P.frac - 1))
    terms = [Fx(t.d, t.s - 1) for t in terms]  # times 2
    terms.append(ctx.public(-1.0, x.shape, P.frac))
    return Shared((yield from ctx.output_sum(terms, P.frac)))


# ---------------------------------------------------------------- sqrt, rsqrt

ROOT_LO, ROOT_HI = -16, 16  # 2^-16 <= x < 2^16, bands [2^k, 2^(k+2)), k even
ROOT_ALPHA = 2.018395910322382  # g = alpha - x' ~ x'^(-1/2) on [1/4, 1]: |1 - x' g^2| <= 0.2182


def _root_parts(ctx, x: Fx, inverse: bool):
    """x^(-1/2) (inverse) or x^(1/2) as terms; 3 + 2 + 3 rounds. See ``sqrt``."""
    P = ctx.P
    tops = list(range(ROOT_LO + 2, ROOT_HI + 1, 2))  # band tops E: x in [2^(E-2), 2^E)
    ts = [2.0 ** E for E in tops[:-1]]
    B, BX = yield from _thresholds(ctx, x, ts, with_x=True)
    emax = tops[-1]
    FS = 8  # 2^(-+E/2) >= 2^-8: exact at scale 8
    if ctx.meta:
        xn, sc = Fx(P.empty(x.shape), x.s + emax), Fx(P.empty(x.shape), FS)
    else:
        xn_d = torch.zeros(x.shape, dtype=torch.int64)
        sc_d = torch.zeros(x.shape, dtype=torch.int64)
        one = ctx._lead(torch.ones(x.shape, dtype=torch.int64))
        nb = len(tops)
        for j, E in enumerate(tops):
            band = (B[j] if j < nb - 1 else one) - (B[j - 1] if j > 0 else 0)
            bx = (BX[j] if j < nb - 1 else x.d) - (BX[j - 1] if j > 0 else 0)
            xn_d = xn_d + (bx << (emax - E))
            half = -E // 2 if inverse else E // 2
            sc_d = sc_d + band * (1 << (FS + half))
        xn, sc = Fx(xn_d, x.s + emax), Fx(sc_d, FS)  # x' = x 2^-E in [1/4, 1); sc = 2^(-+E/2)
    xn.fb = 20
    yield from ctx.open([xn])
    g = ctx.lin([(-1, xn)], const=ROOT_ALPHA)  # ~ x'^(-1/2)
    h = ctx.lin([(ROOT_ALPHA, xn), (-1, ctx.mono([xn, xn]))])  # x' g ~ x'^(1/2)
    g.fb = h.fb = 20
    yield from ctx.open([g, h])
    e = ctx.lin([(-1, ctx.mono([h, g]))], const=1.0)  # e = 1 - x' g^2, |e| <= 0.22
    q = g if inverse else h
    # q (1 - e)^(-1/2) by Newton's iteration in residual form: q <- q (1 + e/2),
    # e <- 1 - (1 - e)(1 + e/2)^2 = 3/4 e^2 + 1/4 e^3: 0.22 -> 0.038 -> 1.1e-3 -> 9e-7
    for _ in range(2):
        e.fb = q.fb = 20
        keep = [(q, min(q.s, 36))] if q.e is None else []
        got = yield from ctx.open([q, e], views=[(e, 13)], keep=keep)
        ec, q_hi = got[0], (got[1] if keep else q)
        q_next = ctx.lin([(1, q_hi), (0.5, ctx.mono([q, e]))])
        e = ctx.lin([(0.75, ctx.mono([e, e])), (0.25, ctx.mono([ec, ec, ec]))])
        q = q_next
    e.fb = 20
    q.fb = 23
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
    plus absolute 2^-15.
    """
    x = _input(P, node, args)
    ctx = Ctx(P)
    terms = yield from _root_parts(ctx, Fx(x.data, P.frac), inverse=False)
    return Shared((yield from ctx.output_sum(terms, P.frac)))


def rsqrt_shared(P, x: Shared):
    """x^(-1/2) for a secret x (a generator returning Shared): the math of ``sqrt`` from
    q = g. Range 2^-16 <= x < 2^16; error relative 2^-18 plus absolute 2^-15; 8 rounds."""
    ctx = Ctx(P)
    terms = yield from _root_parts(ctx, Fx(x.data, P.frac), inverse=True)
    return Shared((yield from ctx.output_sum(terms, P.frac)))


# ---------------------------------------------------------------- documented bounds

# |result - f(x)| <= ABS + REL |f(x)| on the documented range, for the fixed-point x the
# protocol receives (f = 16; tests/test_approx.py measures them, and checks that the
# module docstring's table says the same)
bound(OP.exp, 2.0 ** -15, 2.0 ** -13, "x <= 12 (0 below -16)", "9")
bound(OP.reciprocal, 2.0 ** -14, 2.0 ** -14, "2^-8 <= |x| < 2^16", "12")
bound(OP.log, 2.0 ** -14, 0.0, "2^-12 <= x < 2^16", "7")
bound(OP.sqrt, 2.0 ** -14, 2.0 ** -16, "0 <= x < 2^16", "8")
bound(OP.sigmoid, 2.0 ** -14, 0.0, "|x| < 2^23", "10")
bound(OP.tanh, 2.0 ** -13, 0.0, "|x| < 2^22", "10")
bound(OP.softmax, 2.0 ** -14, 0.0, "|x| < 2^23", "max + 12 (n = 10)")
bound(OP.log_softmax, 2.0 ** -14, 0.0, "|x| < 2^23", "max + 12 (n = 10)")

# by op name, for the tests and benchmarks (derived from the registrations above)
ERROR = {d.name: (d.rule("bound").abs, d.rule("bound").rel) for d in ops.REGISTRY.values() if d.rule("bound")}
ERROR["rsqrt"] = (2.0 ** -14, 2.0 ** -16)  # rsqrt_shared (batch_norm)
