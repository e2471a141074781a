"""Comparisons and selection: relu, gt/lt/ge/le, eq, where, max/argmax, max_pool2d.

Everything rests on two dealer-assisted bit extractions on a ring share [x]:

    sign_bit  [x < 0]   for |x| < 2^40 ring units (|value| < 2^(40-f), 2^24 for f = 16)
    _zero_bit [x == 0]  for |x| < 2^40 ring units

each 3 rounds whatever the number of parties, returning an ARITHMETIC share of the plain
0/1 bit (scale 1). Results are exact in the ring inside these ranges (no approximation,
no truncation); outside them the bit is meaningless. Comparing fixed-point encodings,
x < y differs from the float comparison only when |x - y| < 2^-f (both sides round to
the same or to neighbouring encodings).

sign_bit (L = 41, c_i / r_i: bit i)
-----------------------------------
Dealer: uniform ring mask r; XOR shares of the one-hot of each 4-bit group of r's low 40
bits; rho = r_40 and the products listed below, arithmetically shared.

Round 1. Open c = x + 2^40 + r (mod 2^64). c is uniform, so it reveals nothing. With
x' = x + 2^40 in [0, 2^41) we have x' = (c - r) mod 2^41, and its top bit is

    s = msb(x') = c_40 xor rho xor B,   B = [c_{0..39} < r_{0..39}]   (the borrow)

and [x < 0] = 1 - s. Only c mod 2^41 is needed, so each party sends the low 6 bytes of
its share (unless a product by x itself is asked for, see below: then 8).

Level 1, no communication. Split the 40 bits into 10 groups of 4. For group g, with
h = [r_g = v] the dealer's one-hot (XOR-shared) and c_g public,

    G_g = [c_g < r_g] = XOR_{v > c_g} h_v,      P_g = [c_g = r_g] = h_{c_g}

(the one-hot has exactly one 1, so XOR over a set of its entries is their OR).

Round 2. Lexicographic order: [c < r] = OR_g G_g AND_{h > g} P_h; the terms are
mutually exclusive. Groups 0-4 and 5-9 form two super-groups, each needing
G = G4 + P4 G3 + P4 P3 G2 + P4 P3 P2 G1 + P4 P3 P2 P1 G0 and P = P0 P1 P2 P3 P4: monomials
of up to 5 secret bits u_j, all evaluated in ONE round. The dealer gives random bits m_j
and XOR shares of M_T = AND_{j in T} m_j for every subset T of a monomial (62 subsets);
parties open e = u xor m (uniform) and use

    AND_{j in S} u_j = AND_{j in S} (e_j xor m_j) = XOR_{T subset S} (AND_{j in S-T} e_j) M_T,

public coefficients times shares (M_empty = 1 is added by party 0).

Round 3. B = G_top + P_top G_bot (again exclusive terms), now computed ARITHMETICALLY:
over the integers e xor m = e + (1 - 2e) m, so

    AND_{j in S} u_j = sum_{T subset S} (prod_{S-T} e_j)(prod_{T} (1 - 2 e_j)) M_T

with M_T arithmetically shared. The xor with rho costs nothing more: t = rho xor B =
rho + (1 - 2 rho) B, so the dealer shares D_T = (1 - 2 rho) M_T (and rho) instead of M_T,
and s = c_40 + (1 - 2 c_40) t is affine in [t] with public coefficients.

Products with the bit, free of rounds (`mult`): for y = eps + a with a a dealer mask
and eps = y - a opened in round 1 alongside c,

    t y = eps [t] + [rho a] + coef_empty ([a] - 2 [rho a]) + sum_T coef_T [D_T a],

which only needs [rho a] and [D_T a] from the dealer. When y is x itself, a = -r and
eps = x + r = c - 2^40 come for free (then c is opened in full). [x < 0] y carries y's
scale: the bit has scale 1, so nothing is truncated and the product is exact.

Cost per element (2 parties): 3 rounds; sent 6 B + 20 bits + 3 bits (about 9 B), 8 B
more per y in `mult` (none for y = x); dealer (the last party's corrections) 284 bits +
5 ring elements, and 5 ring elements per y.

_zero_bit is the same with equality only: c = x + r (40 bits), P_g = h_{c_g}, round 2 ANDs
five P's per super-group (31 subsets), round 3 ANDs the two results arithmetically.

Ops built on them (f: fractional bits; a result bit b is stored as b * 2^f):

    lt(x, y) = sign_bit(x - y)          gt(x, y) = sign_bit(y - x)
    ge = 1 - lt,  le = 1 - gt           eq(x, y) = _zero_bit(x - y)
    relu(x)  = x - [x < 0] x            (one sign_bit with mult=[x]: exact, 3 rounds)
    where(c, x, y) = y + c (x - y)      (local for a public c; otherwise one Beaver
                                         product and one truncation: error <= 2^-f)
    max over n values: a tournament, ceil(log2 n) levels of one sign_bit each:
        max(a, b) = a - [a < b](a - b); the earlier index wins ties (like torch.argmax);
        argmax indices, or one-hot vectors, ride along in the same rounds as further
        `mult` products (idx = ia + [a < b](ib - ia)). 3 ceil(log2 n) rounds, exact.
    max_pool2d: windows gathered locally from a copy padded with -(2^39 - 1) ring units
        (below every valid input), then max over each window.

Input ranges: |x| < 2^40 ring units for sign_bit/relu; |x - y| < 2^40 for comparisons;
|x| < 2^39 for max, argmax and max_pool2d (so that differences stay in range).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from planc.ir.types import SECRET as SECRET_VIS

from ..interpreter import Ex, protocol
from ..material import Part
from ..party import Shared
from .beaver import product
from .common import others, shared, truncate

L = 41  # x' = x + 2^(L-1) lies in [0, 2^L) for |x| < 2^(L-1)
WIDTH = 4  # bits per level-1 group
NGROUPS = 10  # (L - 1) / WIDTH
FAN = 5  # groups per super-group (two super-groups)
LOW_BYTES = 6  # an opened c is only used mod 2^41 (mod 2^40 for equality)
PAD = -(2 ** 39 - 1)  # "-inf" for max_pool2d padding, in ring units

_SHIFTS = torch.arange(NGROUPS, dtype=torch.int64) * WIDTH
_VALUES = torch.arange(1 << WIDTH, dtype=torch.int64)
_BYTE_SHIFTS = torch.arange(LOW_BYTES, dtype=torch.int64) * 8


# ---------------------------------------------------------------- monomials in one round


def _bits(mask: int):
    return [j for j in range(mask.bit_length()) if mask >> j & 1]


def _subsets(mask: int):
    """Every subset of `mask`, the empty one included."""
    sub = mask
    while True:
        yield sub
        if sub == 0:
            return
        sub = (sub - 1) & mask


class Monomials:
    """Sums of monomials over secret bits u_j, evaluated in one round of masked openings.

    `outputs` is a list of outputs, each a list of monomials (tuples of variable indices);
    an output is the XOR (equivalently, for mutually exclusive terms, the sum) of its
    monomials. The dealer's material is the down-closure of the monomials: every
    non-empty subset T of a monomial, with M_T = AND_{j in T} m_j."""

    def __init__(self, nvars: int, outputs):
        self.nvars = nvars
        self.outputs = [[sum(1 << j for j in mono) for mono in out] for out in outputs]
        closure = {t for out in self.outputs for s in out for t in _subsets(s)} - {0}
        self.closure = sorted(closure, key=lambda t: (bin(t).count("1"), t))
        self.index = {t: i for i, t in enumerate(self.closure)}
        self.K = len(self.closure)

    def _prods(self, v, mul):
        """{T: prod_{j in T} v_j} over the closure (T = 0 left out), built incrementally."""
        out = {}
        for t in self.closure:
            j = t.bit_length() - 1
            rest = t & ~(1 << j)
            out[t] = v[..., j] if rest == 0 else mul(out[rest], v[..., j])
        return out

    def products(self, m: torch.Tensor) -> torch.Tensor:
        """Dealer: M_T for the closure, stacked on a last dim (bool for bits, else int64)."""
        p = self._prods(m, torch.logical_and if m.dtype == torch.bool else torch.mul)
        return torch.stack([p[t] for t in self.closure], -1)

    def xor_eval(self, e: torch.Tensor, M: torch.Tensor, leader: bool) -> torch.Tensor:
        """XOR shares of each output from the opened e = u xor m and XOR shares of M_T."""
        E = self._prods(e, torch.logical_and)
        outs = []
        for out in self.outputs:
            acc = torch.zeros(e.shape[:-1], dtype=torch.bool)
            pub = torch.zeros(e.shape[:-1], dtype=torch.bool)
            for s in out:
                pub ^= E[s]
                for t in _subsets(s):
                    if t == 0:
                        continue
                    u = s ^ t
                    term = M[..., self.index[t]]
                    acc ^= term if u == 0 else (E[u] & term)
            outs.append(acc ^ pub if leader else acc)
        return torch.stack(outs, -1)

    def arith_coefs(self, e: torch.Tensor, output: int = 0) -> dict:
        """Public integer coefficients: output = sum_T coef_T M_T (T = 0 means M = 1), from
        e xor m = e + (1 - 2e) m over the integers."""
        ei = e.to(torch.int64)
        E = self._prods(ei, torch.mul)
        E[0] = torch.ones(e.shape[:-1], dtype=torch.int64)
        sign = self._prods(1 - 2 * ei, torch.mul)
        coef = {}
        for s in self.outputs[output]:
            for t in _subsets(s):
                c = E[s ^ t] if t == 0 else E[s ^ t] * sign[t]
                coef[t] = coef[t] + c if t in coef else c
        return coef


def _mono_lt():
    # super-group variables: G0..G4 are 0..4, P0..P4 are 5..9 (group 0 lowest)
    g = [tuple([j] + [FAN + h for h in range(j + 1, FAN)]) for j in range(FAN)]
    return Monomials(2 * FAN, [g, [tuple(FAN + h for h in range(FAN))]])


LT2 = _mono_lt()  # round 2 of sign_bit: (G, P) of each super-group, XOR-shared
LT3 = Monomials(3, [[(0,), (1, 2)]])  # round 3: G_top + P_top G_bot, variables (Gt, Pt, Gb)
EQ2 = Monomials(FAN, [[tuple(range(FAN))]])  # round 2 of _zero_bit: AND of 5 P's
EQ3 = Monomials(2, [[(0, 1)]])  # round 3: AND of the two super-groups


# ---------------------------------------------------------------- opening


def _open(P, items):
    """One round opening several sharings: items are (share, kind) with kind 'ring'
    (sum mod 2^64), 'low' (sum mod 2^48, 6 bytes on the wire) or 'xor' (bool)."""
    wire = []
    for t, kind in items:
        if kind != "low":
            wire.append(t)
        elif P.meta:
            wire.append(P.empty(tuple(t.shape) + (LOW_BYTES,), torch.uint8))
        else:
            wire.append(((t.unsqueeze(-1) >> _BYTE_SHIFTS) & 255).to(torch.uint8))
    specs = [(tuple(w.shape), w.dtype) for w in wire]
    got = yield Ex({j: wire for j in others(P)}, {j: specs for j in others(P)})
    if P.meta:
        return [P.empty(t.shape, t.dtype) for t, _ in items]
    out = []
    for i, (t, kind) in enumerate(items):
        acc = t.clone()
        for j in others(P):
            w = got[j][i]
            if kind == "xor":
                acc ^= w
            elif kind == "low":
                acc += (w.to(torch.int64) << _BYTE_SHIFTS).sum(-1)
            else:
                acc += w
        out.append(acc)
    return out


def _lead(P, v):
    """A public value as party 0's share (others hold 0)."""
    return v if P.leader else torch.zeros_like(v)


def _groups(v):
    """The ten 4-bit groups of v's low 40 bits, as (..., 10) int64."""
    return (v.unsqueeze(-1) >> _SHIFTS) & ((1 << WIDTH) - 1)


def _onehot(r):
    return _groups(r).unsqueeze(-1) == _VALUES


def _bc(t, ndim):
    """t broadcast against a tensor with `ndim` more trailing dims."""
    return t.reshape(tuple(t.shape) + (1,) * ndim)


# ---------------------------------------------------------------- sign bit


def sign_bit(P, x, mult=()):
    """([x < 0], [[x < 0] * y for y in mult]): arithmetic shares, the bit with scale 1.

    x: this party's int64 ring share, |x| < 2^40 ring units. Each y is a ring share whose
    shape starts with x's shape (extra trailing dims are broadcast against the bit);
    passing x itself costs nothing extra. A generator: 3 rounds. See the module docstring
    for the protocol and its costs."""
    shape = tuple(x.shape)
    n = math.prod(shape)
    ys, same = [], []
    for y in mult:
        if tuple(y.shape[:len(shape)]) != shape:
            raise ValueError(f"sign_bit: mult operand {list(y.shape)} does not start with {list(shape)}")
        same.append(y is x)
        ys.append(y.reshape((n,) + tuple(y.shape[len(shape):])))
    bit, prods = yield from _lt_zero(P, x.reshape(n), ys, same)
    return bit.reshape(shape), [p.reshape(y.shape) for p, y in zip(prods, mult)]


def _lt_zero(P, x, ys, same):
    n = x.shape[0]
    K = LT3.K
    random = [Part("r", (n,)), Part("m2", (n, 2, 2 * FAN), "xor"), Part("m3", (n, 3), "xor")]
    derived = [Part("oh", (n, NGROUPS, 1 << WIDTH), "xor"), Part("M2", (n, 2, LT2.K), "xor"),
               Part("rho", (n,)), Part("D", (n, K))]
    for k, y in enumerate(ys):
        ysh = tuple(y.shape)
        if not same[k]:
            random.append(Part(f"a{k}", ysh))
        derived += [Part(f"ra{k}", ysh), Part(f"Da{k}", ysh + (K,))]

    def derive(full):
        r = full["r"]
        rho = (r >> (L - 1)) & 1
        D = (1 - 2 * rho).unsqueeze(-1) * LT3.products(full["m3"].to(torch.int64))
        out = {"oh": _onehot(r), "M2": LT2.products(full["m2"]), "rho": rho, "D": D}
        for k, y in enumerate(ys):
            a = -r.reshape(r.shape + (1,) * (y.dim() - 1)) if same[k] else full[f"a{k}"]
            extra = y.dim() - 1
            out[f"ra{k}"] = _bc(rho, extra) * a
            out[f"Da{k}"] = D.reshape((n,) + (1,) * extra + (K,)) * a.unsqueeze(-1)
        return out

    m = P.material.get("sign", random, derived, derive)

    # round 1: c = x + 2^40 + r, and eps = y - a for the other factors
    full_c = any(same)
    c_share = x + m["r"]
    if P.leader:
        c_share = c_share + (1 << (L - 1))
    items = [(c_share, "ring" if full_c else "low")]
    for k, y in enumerate(ys):
        if not same[k]:
            items.append((y - m[f"a{k}"], "ring"))
    opened = yield from _open(P, items)
    c, eps_list = opened[0], opened[1:]

    # level 1 (local) and round 2: (G, P) of each group, then of each super-group
    if P.meta:
        u2 = P.empty((n, 2, 2 * FAN), torch.bool)
    else:
        cg = _groups(c)
        oh = m["oh"]
        Pg = torch.gather(oh, -1, cg.unsqueeze(-1)).squeeze(-1)
        # XOR_{v > c_g} h_v = (XOR of all h_v) xor (XOR_{v <= c_g} h_v): parities of a cumsum
        cs = oh.to(torch.uint8).cumsum(-1, dtype=torch.uint8)
        Gg = ((cs[..., -1] ^ torch.gather(cs, -1, cg.unsqueeze(-1)).squeeze(-1)) & 1).bool()
        u2 = torch.cat([Gg.reshape(n, 2, FAN), Pg.reshape(n, 2, FAN)], -1)
    (e2,) = yield from _open(P, [(u2 ^ m["m2"], "xor")])

    # round 3: Gt, Pt, Gb masked
    if P.meta:
        u3 = P.empty((n, 3), torch.bool)
    else:
        gp = LT2.xor_eval(e2, m["M2"], P.leader)  # (n, 2 super-groups, [G, P])
        u3 = torch.stack([gp[:, 1, 0], gp[:, 1, 1], gp[:, 0, 0]], -1)
    (e3,) = yield from _open(P, [(u3 ^ m["m3"], "xor")])
    if P.meta:
        return P.empty((n,)), [P.empty(y.shape) for y in ys]

    coef = LT3.arith_coefs(e3)
    one = _lead(P, torch.ones(n, dtype=torch.int64))
    rho, D = m["rho"], m["D"]
    t = rho + coef[0] * (one - 2 * rho)
    for T, ct in coef.items():
        if T:
            t = t + ct * D[:, LT3.index[T]]
    c40 = (c >> (L - 1)) & 1
    keep, flip = 1 - c40, 1 - 2 * c40  # [x < 0] = (1 - c40) - (1 - 2 c40) t
    bit = _lead(P, keep) - flip * t
    prods = []
    it = iter(eps_list)
    for k, y in enumerate(ys):
        extra = y.dim() - 1
        if same[k]:
            eps = _bc(c - (1 << (L - 1)), extra)
            a = -_bc(m["r"], extra)
        else:
            eps = next(it)
            a = m[f"a{k}"]
        ra, Da = m[f"ra{k}"], m[f"Da{k}"]
        ty = eps * _bc(t, extra) + ra + _bc(coef[0], extra) * (a - 2 * ra)
        for T, ct in coef.items():
            if T:
                ty = ty + _bc(ct, extra) * Da[..., LT3.index[T]]
        prods.append(_bc(keep, extra) * y - _bc(flip, extra) * ty)
    return bit, prods


def _zero_bit(P, x):
    """[x == 0] as an arithmetic share with scale 1, for |x| < 2^40 ring units. 3 rounds."""
    shape = tuple(x.shape)
    n = math.prod(shape)
    x = x.reshape(n)
    random = [Part("r", (n,)), Part("m2", (n, 2, FAN), "xor"), Part("m3", (n, 2), "xor")]
    derived = [Part("oh", (n, NGROUPS, 1 << WIDTH), "xor"), Part("M2", (n, 2, EQ2.K), "xor"),
               Part("M3", (n, EQ3.K))]

    def derive(full):
        return {"oh": _onehot(full["r"]), "M2": EQ2.products(full["m2"]),
                "M3": EQ3.products(full["m3"].to(torch.int64))}

    m = P.material.get("zero", random, derived, derive)
    (c,) = yield from _open(P, [(x + m["r"], "low")])  # x == 0 iff c = r mod 2^40
    if P.meta:
        u2 = P.empty((n, 2, FAN), torch.bool)
    else:
        Pg = torch.gather(m["oh"], -1, _groups(c).unsqueeze(-1)).squeeze(-1)
        u2 = Pg.reshape(n, 2, FAN)
    (e2,) = yield from _open(P, [(u2 ^ m["m2"], "xor")])
    u3 = P.empty((n, 2), torch.bool) if P.meta else EQ2.xor_eval(e2, m["M2"], P.leader)[..., 0]
    (e3,) = yield from _open(P, [(u3 ^ m["m3"], "xor")])
    if P.meta:
        return P.empty(shape)
    coef = EQ3.arith_coefs(e3)
    z = _lead(P, coef[0])
    for T, ct in coef.items():
        if T:
            z = z + ct * m["M3"][:, EQ3.index[T]]
    return z.reshape(shape)


def relu_ring(P, x):
    """Ring share of relu(x) = x - [x < 0] x, exact, for |x| < 2^40 ring units; 3 rounds."""
    _, (neg,) = yield from sign_bit(P, x, [x])
    return x - neg


# ---------------------------------------------------------------- max and argmax


def _tournament(P, v, track=None):
    """Max over the last dim of ring shares v (..., n) by a tournament of pairwise
    comparisons, earlier index winning ties. track: None, "index" (scale-1 argmax index)
    or "onehot" ((..., n) scale-1 one-hot of the argmax). 3 ceil(log2 n) rounds."""
    n = v.shape[-1]
    lead = v.shape[:-1]
    idx = oh = None
    level = 0
    while v.shape[-1] > 1:
        m = v.shape[-1]
        h = m // 2
        a, b = v[..., 0:2 * h:2], v[..., 1:2 * h:2]
        d = a - b
        mult = [d]
        if level and track == "index":
            ia, ib = idx[..., 0:2 * h:2], idx[..., 1:2 * h:2]
            mult.append(ib - ia)
        if level and track == "onehot":
            oa, ob = oh[..., 0:2 * h:2, :], oh[..., 1:2 * h:2, :]
            mult += [oa, ob]
        s, prods = yield from sign_bit(P, d, mult)  # s = [a < b]: b wins
        win = a - prods[0]
        if track == "index":
            if level == 0:
                base = torch.arange(0, 2 * h, 2, dtype=torch.int64).expand(lead + (h,))
                new_idx = _lead(P, base) + s if not P.meta else P.empty(lead + (h,))
            else:
                new_idx = ia + prods[1]
        if track == "onehot":
            if level == 0:
                new_oh = torch.stack([_lead(P, torch.ones_like(s)) - s, s], -1) if not P.meta \
                    else P.empty(lead + (h, 2))
            else:
                new_oh = torch.cat([oa - prods[1], prods[2]], -1)
        if m % 2:
            win = torch.cat([win, v[..., m - 1:]], -1)
            if track == "index":
                last = idx[..., m - 1:] if level else (
                    _lead(P, torch.full(lead + (1,), m - 1, dtype=torch.int64)) if not P.meta
                    else P.empty(lead + (1,)))
                new_idx = torch.cat([new_idx, last], -1)
            if track == "onehot":
                if level:
                    last = oh[..., m - 1:, :]
                else:
                    last = P.empty(lead + (1, 1)) if P.meta else _lead(P, torch.ones(lead + (1, 1), dtype=torch.int64))
                last = F.pad(last, (0, new_oh.shape[-1] - last.shape[-1]))
                new_oh = torch.cat([new_oh, last], -2)
        v = win
        if track == "index":
            idx = new_idx
        if track == "onehot":
            oh = new_oh
        level += 1
    if track == "index":
        if idx is None:  # a single candidate
            idx = P.empty(lead + (1,)) if P.meta else torch.zeros(lead + (1,), dtype=torch.int64)
        return v[..., 0], idx[..., 0]
    if track == "onehot":
        if oh is None:
            oh = P.empty(lead + (1, 1)) if P.meta else _lead(P, torch.ones(lead + (1, 1), dtype=torch.int64))
        return v[..., 0], oh[..., 0, :n]
    return v[..., 0], None


def _along(x, dim):
    """x with `dim` (None: all dims, flattened) moved last."""
    if dim is None:
        return x.reshape(1, -1)
    return x.movedim(dim, -1)


def max_dim(P, x: Shared, dim: int, keepdim: bool):
    """(max of x along dim, one-hot of the first maximum, shape of x, scale 2^f): exact for
    |x| < 2^39 ring units. A generator: 3 ceil(log2 n) rounds for n = x.shape[dim]."""
    d = x.data
    dim = None if dim is None else dim % max(d.dim(), 1)
    if d.dim() == 0:
        return x, Shared(_lead(P, torch.full((), P.scale, dtype=torch.int64)) if not P.meta else P.empty(()))
        yield  # pragma: no cover
    v, oh = yield from _tournament(P, _along(d, dim), "onehot")
    oh = oh << P.frac if not P.meta else oh
    if dim is None:
        return Shared(v.reshape(())), Shared(oh.reshape(d.shape))
    out = v.unsqueeze(dim) if keepdim else v
    return Shared(out), Shared(oh.reshape(d.movedim(dim, -1).shape).movedim(-1, dim))


def _reduced(P, node, args, track):
    (x,) = args
    x = shared(P, x, node.operands[0].type.vis, node.operands[0].type.shape)
    d = x.data
    dim = node.attr("dim")
    out_shape = tuple(node.result.type.shape)
    if d.dim() == 0:
        v, idx = d, (P.empty(()) if P.meta else torch.zeros((), dtype=torch.int64))
    else:
        v, idx = yield from _tournament(P, _along(d, dim), track)
    res = v if track is None else (idx << P.frac if not P.meta else idx)
    return Shared(res.reshape(out_shape))


@protocol("max")
def max_(P, node, args, a):
    """Max (over dim, or all elements): exact for |x| < 2^39 ring units; 3 ceil(log2 n)
    rounds, one sign_bit with mult=[a - b] per pair and level."""
    return (yield from _reduced(P, node, args, None))


@protocol("argmax")
def argmax(P, node, args, a):
    """Index of the first maximum, as i * 2^f: exact on the fixed-point encodings (ties
    within 2^-f of each other in the floats may pick another index); |x| < 2^39 ring
    units. Same rounds as max: the index difference rides as a second `mult` product."""
    return (yield from _reduced(P, node, args, "index"))


@protocol("max_pool2d")
def max_pool2d(P, node, args, a):
    """Windows gathered from a copy padded with PAD = -(2^39 - 1) ring units (below any
    valid input, so padding never changes a max: torch guarantees each window holds an
    input element); extra bottom/right padding stands for ceil_mode's partial windows.
    Then a tournament over each window: 3 ceil(log2(kh kw)) rounds, exact for
    |x| < 2^39 ring units."""
    (x,) = args
    x = shared(P, x, node.operands[0].type.vis, node.operands[0].type.shape)
    kh, kw = a["kernel"]
    sh, sw = a["stride"]
    ph, pw = a["padding"]
    dh, dw = a["dilation"]
    oh, ow = node.result.type.shape[-2:]
    H, W = x.data.shape[-2:]
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    eh = max(0, (oh - 1) * sh + span_h - (H + 2 * ph))
    ew = max(0, (ow - 1) * sw + span_w - (W + 2 * pw))
    pads = (pw, pw + ew, ph, ph + eh)
    xp = F.pad(x.data, pads)
    if P.leader and not P.meta and any(pads):
        xp = xp + F.pad(torch.zeros_like(x.data), pads, value=1) * PAD
    win = xp.unfold(-2, span_h, sh).unfold(-2, span_w, sw)[..., :oh, :ow, ::dh, ::dw]
    win = win.reshape(tuple(win.shape[:-2]) + (kh * kw,))
    v, _ = yield from _tournament(P, win, None)
    return Shared(v)


# ---------------------------------------------------------------- comparisons


def _diff(P, node, args, swap=False):
    x, y = (shared(P, v, o.type.vis, o.type.shape) for v, o in zip(args, node.operands))
    return (y.data - x.data) if swap else (x.data - y.data)


def _as_result(P, node, bit, negate=False):
    """A scale-1 bit share as the op's result: b * 2^f (1 - b for negate)."""
    if P.meta:
        return Shared(P.empty(node.result.type.shape))
    if negate:
        bit = _lead(P, torch.ones_like(bit)) - bit
    return Shared((bit << P.frac).reshape(node.result.type.shape))


@protocol("lt", "gt", "ge", "le")
def compare(P, node, args, a):
    """lt(x, y) = [x - y < 0], gt = [y - x < 0], ge = 1 - lt, le = 1 - gt: one sign_bit,
    3 rounds, exact on the encodings for |x - y| < 2^40 ring units."""
    swap = node.op in ("gt", "le")
    s, _ = yield from sign_bit(P, _diff(P, node, args, swap))
    return _as_result(P, node, s, negate=node.op in ("ge", "le"))


@protocol("eq")
def eq(P, node, args, a):
    """eq(x, y) = [x - y == 0] by _zero_bit: 3 rounds, exact on the encodings for
    |x - y| < 2^40 ring units."""
    z = yield from _zero_bit(P, _diff(P, node, args))
    return _as_result(P, node, z)


@protocol("relu")
def relu(P, node, args, a):
    """relu(x) = x - [x < 0] x: one sign_bit with mult=[x]; exact for |x| < 2^40 ring
    units; 3 rounds, about 11 bytes per element per peer."""
    (x,) = args
    x = shared(P, x, node.operands[0].type.vis, node.operands[0].type.shape)
    out = yield from relu_ring(P, x.data)
    return Shared(out)


@protocol("where")
def where(P, node, args, a):
    """where(c, x, y) = y + c (x - y). A public c selects shares locally (exact, free).
    A secret or private c (stored as c * 2^f) multiplies x - y by a Beaver product
    (private c: the owner's one-sided variant) and one truncation: error at most 2^-f
    (see common.truncate), 1 round for 2 parties, 2 for more."""
    c, x, y = args
    cv, xo, yo = node.operands
    shape = tuple(node.result.type.shape)
    X = shared(P, x, xo.type.vis, xo.type.shape)
    Y = shared(P, y, yo.type.vis, yo.type.shape)
    if cv.type.vis.is_public:
        if P.meta:
            return Shared(P.empty(shape))
        return Shared(torch.where(c.to(torch.bool), X.data, Y.data).expand(shape).contiguous())
        yield  # pragma: no cover
    d = X.data - Y.data
    z, scaled = yield from product(P, c, Shared(d), cv.type.vis, SECRET_VIS, cv.type.shape, tuple(d.shape),
                                   torch.mul)
    if scaled:
        z = yield from truncate(P, z)
    return Shared((Y.data + z).expand(shape).contiguous())

