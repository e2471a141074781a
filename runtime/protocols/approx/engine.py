"""The approximation engine: masked openings, monomials, one material request per step.

A value inside an approximation is a ``Shared`` (core.py) whose ``frac`` is named: a ring
share of value * 2^bits, meant to have scale ``frac`` (bits > frac: a truncation by
bits - frac is pending). Products are evaluated by *opening* their factors once, Beaver
style, and expanding:

    open:  e = v - a  (a: uniform dealer mask, shared by PRG: no dealer traffic), so that
           v * 2^frac = e + a with e public and a = [m] a mask the DEALER knows;
    product of opened values v_1..v_k (repetitions allowed: powers):
           prod_i (e_i + m_i) = sum_{T subset of positions} (prod_{i not in T} e_i) [M_T],
           M_T = prod_{i in T} m_i

so any monomial in already-opened values is local, given shares of the mask products
M_T (|T| >= 2), which the dealer derives from masks of earlier requests (the dealer runs
this code on meta tensors and calls ``derive`` at request time, so a derive closure may
read the masks it stashed for earlier openings). An opened value can be reused in any
number of later products without new traffic: x^2, x^3 and x y all come from one
opening of x and y. The result is exact in the ring; it carries scale sum_i frac_i.
What an opening leaves on a value is its ``Opening`` (e, m, mid).

Truncation is common.py's (its docstring states the error and failure probability):
with 2 parties a share is truncated locally (``truncate_local``: below 1 unit of the last
place, mean 0). With more parties a pending truncation is done *by* the next opening:
open z = d + r for a dealer pair (r, r >> k) (``truncation_mask``), and then
v * 2^frac = (z >> k) - (r >> k) (``truncated_opening``): e = z >> k is public and
m = -(r >> k) is a mask the dealer knows — a truncation and an opening in one round.

Magnitudes: a truncation (either kind) of value * 2^s fails with probability about
|value| 2^s / 2^64 (a share wraps). Every value truncated below has |value| 2^s <= 2^41
on its function's documented range (scales are chosen from bounds, see ``mag_scale``),
so each truncation fails with probability below 2^-23 per element. Terms inside a sum
may wrap freely: the ring is exact, only the sum is truncated.

Comparisons come from signbit.sign_bit: 3 rounds, exact, and ``mult`` products with the
bit for free; a batch of thresholds is one call on a stacked tensor (``thresholds``).
"""
from __future__ import annotations

import math
from itertools import combinations

import torch

from ...material import Part
from ..common import lead, others, shared, truncate_local, truncated_opening, truncation_mask
from ..core import Ex, Opening, Shared
from ..signbit import sign_bit

__all__ = ["MAG", "Box", "Ctx", "Lazy", "bands", "coef", "mag_scale", "operand", "thresholds", "value_of"]


def coef(c: float, bits: int):
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
    def public(self, value, shape, s: int) -> Shared:
        """A public constant (float or tensor) as a sharing held by party 0."""
        if self.meta:
            return Shared.at(self.P.empty(shape), s)
        v = torch.as_tensor(value, dtype=torch.float64).expand(shape)
        enc = torch.round(v * (2.0 ** s)).to(torch.int64)
        return Shared.at(enc.clone() if self.P.leader else torch.zeros(shape, dtype=torch.int64), s)

    def lead(self, t):
        """A public ring value as party 0's share."""
        return lead(self.P, t)

    # ------------------------------------------------------------ local arithmetic
    def settle(self, v: Shared) -> Shared:
        """2 parties: do a pending truncation now (local). More parties: unchanged."""
        if not self.two or v.extra <= 0:
            if v.extra < 0:
                return Shared.at(v.data if self.meta else v.data << -v.extra, v.frac)
            return v
        return Shared.at(truncate_local(self.P, v.data, v.extra), v.frac)

    def _settle_in_place(self, v: Shared) -> None:
        w = self.settle(v)
        v.data, v.extra = w.data, 0

    def lin(self, terms, const=0.0, fb=None, bits: int = 20) -> Shared:
        """sum_i c_i v_i + const (public c_i, const), exact in the ring at a common scale,
        to be brought to `fb` at its next opening (default: none pending).
        Coefficients that are dyadic (1/2, 3/4, 2) add no bits; others are rounded to
        `bits` fractional bits, which the result's scale carries until its truncation.
        With 2 parties pending truncations of the inputs are done first (locally)."""
        terms = [(c, self.settle(v) if v.extra > 0 else v) for c, v in terms]
        enc = [(coef(c, bits), v) for c, v in terms]
        S = max(v.bits + k for (_, k), v in enc)
        if fb is None:
            fb = S
        shape = torch.broadcast_shapes(*[v.shape for _, v in terms])
        if self.meta:
            return Shared.at(self.P.empty(shape), S, fb)
        acc = torch.zeros(shape, dtype=torch.int64)
        for (C, k), v in enc:
            sh = S - v.bits - k
            acc = acc + (v.data * C << sh)
        if const:
            acc = acc + self.lead(torch.full(shape, int(round(const * 2.0 ** S)), dtype=torch.int64))
        return Shared.at(acc, S, fb)

    def bit_lin(self, terms, const=0, fb=0) -> Shared:
        """sum_i c_i b_i + const for scale-1 integer shares b_i and integer c_i: exact."""
        shape = torch.broadcast_shapes(*[b.shape for _, b in terms])
        if self.meta:
            return Shared.at(self.P.empty(shape), fb)
        acc = torch.zeros(shape, dtype=torch.int64)
        for c, b in terms:
            acc = acc + b * int(c)
        if const:
            acc = acc + self.lead(torch.full(shape, int(const), dtype=torch.int64))
        return Shared.at(acc << fb, fb)

    # ------------------------------------------------------------ one round of openings
    def open(self, vals, views=(), keep=()):
        """Open every not-yet-opened value of `vals` in ONE round (see the module
        docstring); pending truncations are done by the same opening. `views`: pairs
        (v, s) asking for v opened at further scales s, returned in order as opened
        values: the same opened z = d + r is shifted by several amounts, one more dealer
        share each and no more traffic. `keep`: pairs (v, s) asking for a plain share of
        v at scale s (returned after the views): a local truncation with 2 parties, a
        further shift of the opening with more."""
        P = self.P
        kept = []
        if self.two:
            kept = [self.settle(Shared.at(v.data, v.bits, sc)) for v, sc in keep]
        else:
            views = list(views) + list(keep)
        extra = {}
        for v, sc in views:
            extra.setdefault(id(v), []).append(sc)
        todo, seen = [], set()
        for v in list(vals) + [v for v, _ in views]:
            if v.opened is not None or id(v) in seen:
                continue
            seen.add(id(v))
            multi = id(v) in extra
            if not multi and (v.extra < 0 or (self.two and v.extra > 0)):
                self._settle_in_place(v)  # 2 parties: truncate locally, open with a free mask
            todo.append(v)
        if not todo:
            return list(kept)
        random, derived, plan = [], [], []
        for i, v in enumerate(todo):
            scales = [v.frac] + extra.get(id(v), [])
            base = max([v.bits] + scales)
            up = base - v.bits
            if up > 0:
                v.data = v.data if self.meta else v.data << up
                v.extra += up
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
        outs, mids = {}, {}  # (i, j) -> the opened value, its mask id
        for i, v, scales, shifts, masked in plan:
            for j, sc in enumerate(scales):
                self.ids += 1
                mids[i, j] = self.ids
                outs[i, j] = v if j == 0 else Shared.at(None, sc)
        stash = self.stash

        def derive(full):
            out = {}
            for i, v, scales, shifts, masked in plan:
                if not masked:
                    stash[mids[i, 0]] = full[f"a{i}"]
                    continue
                for j, k in enumerate(shifts):
                    t = truncation_mask(full[f"r{i}"], k)
                    if k > 0:
                        out[f"t{i}_{j}"] = t
                    stash[mids[i, j]] = -t
            return out

        mat = P.material.get("fx.open", random, derived, derive)
        wire = [v.data + mat[f"r{i}"] if masked else v.data - mat[f"a{i}"] for i, v, _, _, masked in plan]
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
                    w.opened = Opening(P.empty(v.shape) if self.meta else z, mat[f"a{i}"], mids[i, j])
                    continue
                rt = mat[f"t{i}_{j}"] if k > 0 else mat[f"r{i}"]
                if self.meta:
                    e, m = P.empty(v.shape), -rt
                else:
                    e, m = truncated_opening(z, rt, k)
                w.opened = Opening(e, m, mids[i, j])
                w.data = m if self.meta else m + self.lead(e)
                w.frac, w.extra = sc, 0
        where = {id(v): i for i, v, *_ in plan}
        count, res = {}, []
        for v, _ in views:
            count[id(v)] = count.get(id(v), 0) + 1
            res.append(outs[where[id(v)], count[id(v)]])
        return res + kept

    # ------------------------------------------------------------ monomials
    def mono(self, factors, fb=None) -> Shared:
        """prod(factors) for opened factors (repetition allowed), exact in the ring at
        scale sum(frac_i), to be brought to `fb` later."""
        for v in factors:
            assert v.opened is not None, "mono needs opened factors"
        ops = [v.opened for v in factors]
        k = len(factors)
        shape = torch.broadcast_shapes(*[v.shape for v in factors])
        S = sum(v.frac for v in factors)
        fb = S if fb is None else fb
        # mask products M_T for |T| >= 2, deduplicated by the multiset of mask ids
        keys = {}
        for r in range(2, k + 1):
            for T in combinations(range(k), r):
                key = tuple(sorted(ops[i].mid for i in T))
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
            return Shared.at(self.P.empty(shape), S, fb)
        acc = torch.zeros(shape, dtype=torch.int64)
        for r in range(0, k + 1):
            for T in combinations(range(k), r):
                pub = None
                for i in range(k):
                    if i not in T:
                        pub = ops[i].e if pub is None else pub * ops[i].e
                if r == 0:
                    term = self.lead(pub)
                elif r == 1:
                    term = ops[T[0]].m
                else:
                    term = M[tuple(sorted(ops[i].mid for i in T))]
                acc = acc + (term if pub is None or r == 0 else pub * term)
        return Shared.at(acc, S, fb)

    def settle_all(self, vals):
        """Bring every value to its scale: locally with 2 parties; with more, one round
        of truncating openings (the values come back opened)."""
        if self.two:
            for v in vals:
                if v.extra:
                    self._settle_in_place(v)
            return
        todo = [v for v in vals if v.extra > 0 and v.opened is None]
        for v in vals:
            if v.extra < 0:
                self._settle_in_place(v)
        if todo:
            yield from self.open(todo)

    def output_sum(self, terms, f: int):
        """sum of terms as a plain ring share with scale f, each term truncated on its
        own (with more parties: all in one round)."""
        outs = [Shared.at(v.data, v.bits, f) for v in terms]
        if not self.two and any(v.extra > 0 for v in outs):
            yield from self.open([v for v in outs if v.extra > 0])
        acc = None
        for v in outs:
            d = v.data if v.opened is not None else self.settle(v).data
            acc = d if acc is None else acc + d
        return acc


class Box:
    """A value another lock-step generator will produce before it is needed."""

    __slots__ = ("v",)

    def __init__(self, v=None):
        self.v = v


class Lazy(Box):
    """A Box whose value is computed when first read."""

    __slots__ = ("fn",)

    def __init__(self, fn):
        super().__init__()
        self.fn = fn


def value_of(v):
    """The value of a Box (a lazy one computed on first read), or v itself."""
    if isinstance(v, Lazy):
        if v.v is None:
            v.v = v.fn()
        return v.v
    return v.v if isinstance(v, Box) else v


# ---------------------------------------------------------------- helpers

MAG = 41  # products keep |value| * 2^scale <= 2^MAG (truncation failure < 2^-23)


def mag_scale(bound: float, cap: int = 48) -> int:
    """The largest scale s with bound * 2^s <= 2^MAG."""
    return min(cap, int(math.floor(MAG - math.log2(bound))))


def operand(P, node, args) -> Shared:
    """The node's one operand as a sharing (at the standard scale: approximations take
    no pending truncation)."""
    (x,) = args
    return shared(P, x, node.operands[0].type.vis, node.operands[0].type.shape)


def thresholds(ctx, x: Shared, ts, with_x=False):
    """One sign_bit batch (3 rounds): bits B_j = [x < t_j] (scale-0 shares) and, with
    `with_x`, shares of B_j * x at x's scale (free: B_j (x - t_j) is the product by the
    compared value itself, and B_j t_j is local)."""
    P = ctx.P
    K = len(ts)
    enc = [int(round(t * 2 ** x.bits)) for t in ts]
    if ctx.meta:
        d = P.empty(x.shape + (K,))
    else:
        d = x.data.unsqueeze(-1) - ctx.lead(torch.tensor(enc, dtype=torch.int64).expand(x.shape + (K,)))
    bits, prods = yield from sign_bit(P, d, [d] if with_x else [])
    if ctx.meta:
        B = [P.empty(x.shape) for _ in ts]
        return B, ([P.empty(x.shape) for _ in ts] if with_x else None)
    B = [bits[..., j] for j in range(K)]
    if not with_x:
        return B, None
    return B, [prods[0][..., j] + bits[..., j] * enc[j] for j in range(K)]


def bands(ctx, x: Shared, cuts, box: Box):
    """box.v = [(1[c_k <= x < c_k+1] as a scale-0 share, c_k+1)] for cuts c_0 < c_1 < ...
    (the last band is open above; below c_0 no band holds x): 3 rounds."""
    B, _ = yield from thresholds(ctx, x, cuts)
    K = len(cuts)
    box.v = [(ctx.bit_lin([(1, B[k + 1]), (-1, B[k])]) if k + 1 < K else ctx.bit_lin([(-1, B[k])], const=1),
              cuts[k + 1] if k + 1 < K else math.inf) for k in range(K)]
