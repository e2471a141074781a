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

(the one-hot has exactly one 1, so XOR over a set of its entries is their OR). Each
group's one-hot share is packed into a 16-bit word w, and one lookup in a table indexed
by (w, c_g) yields both bits: G and P are XOR-linear in h, so each party applies the
same table to its own share.

Round 2. Lexicographic order: [c < r] = OR_g G_g AND_{h > g} P_h; the terms are
mutually exclusive. Groups 0-4 and 5-9 form two super-groups, each needing
G = G4 + P4 G3 + P4 P3 G2 + P4 P3 P2 G1 + P4 P3 P2 P1 G0 and P = P0 P1 P2 P3 P4: monomials
of up to 5 secret bits u_j, all evaluated in ONE round. The dealer gives random bits m_j
and XOR shares of M_T = AND_{j in T} m_j for every subset T of a monomial (62 subsets);
parties open e = u xor m (uniform) and use

    AND_{j in S} u_j = AND_{j in S} (e_j xor m_j) = XOR_{T subset S} (AND_{j in S-T} e_j) M_T,

public coefficients times shares (M_empty = 1 is added by party 0). Each element's 62
bits M_T are packed into one 64-bit word, and for each of the 2^10 values of e a table
holds the word of coefficients, so an output is parity(table[e] & word).

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
    max over n values: a tournament of stages, exact, the earlier index winning ties
        (like torch.argmax); the argmax index, or one-hot rows, ride along as products.
        Pair stage (3 rounds, halves the candidates): max(a, b) = a - [a < b](a - b) by
        one sign_bit with mult=[a - b, ...]. Group stage (4 rounds, divides by 3 or 4):
        all pairs of a group compared at once, then the winner indicator, an AND of its
        k - 1 wins, times its value in one more round (see _group_stage). _stages picks
        the fewest rounds: 64x10 max + argmax takes 8 rounds (10 -> 3 -> 1), max over
        1000 values 20. Groups cost twice the comparisons per reduction, so they are
        used only on stages with at most GROUP_LIMIT = 2^15 candidates in all; beyond,
        pairs (3 rounds per halving: a 2x2 max_pool2d over a big feature map takes 6).
    max_pool2d: windows gathered locally from a copy padded with -(2^39 - 1) ring units
        (below every valid input), then max over each window.

Input ranges: |x| < 2^40 ring units for sign_bit/relu; |x - y| < 2^40 for comparisons;
|x| < 2^39 for max, argmax and max_pool2d (so that differences stay in range).
"""
from __future__ import annotations

import functools
import math
from itertools import combinations

import numpy as np
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
_BYTE_SHIFTS = torch.arange(LOW_BYTES, dtype=torch.int64) * 8


# ---------------------------------------------------------------- monomials in one round


def _subsets(mask: int):
    """Every subset of `mask`, the empty one included."""
    sub = mask
    while True:
        yield sub
        if sub == 0:
            return
        sub = (sub - 1) & mask


def _index(b: torch.Tensor) -> torch.Tensor:
    """Bits (..., v <= 24) as the integer sum_j b_j 2^j, int64 (...); a float32 matmul
    is exact below 2^24 and much faster than shifting and summing."""
    pow2 = 2.0 ** torch.arange(b.shape[-1], dtype=torch.float32)
    return (b.to(torch.float32) @ pow2).to(torch.int64)


_WORDS = {8: "<u1", 16: "<u2", 32: "<u4", 64: "<i8"}


def _pack(b: torch.Tensor) -> torch.Tensor:
    """Bits (..., K <= 64) as one int64 word each, bit j = b[..., j]."""
    width = next(w for w in _WORDS if w >= b.shape[-1])
    pad = width - b.shape[-1]
    if pad:
        b = torch.cat([b, torch.zeros(tuple(b.shape[:-1]) + (pad,), dtype=torch.bool)], -1)
    words = np.packbits(b.contiguous().numpy().reshape(-1), bitorder="little").view(_WORDS[width])
    return torch.from_numpy(words.astype(np.int64)).reshape(b.shape[:-1])


def _fold(v: torch.Tensor, bits: int) -> torch.Tensor:
    s = bits // 2
    while s:
        v = v ^ (v >> s)
        s //= 2
    return v & 1


_PAR16 = _fold(torch.arange(1 << 16, dtype=torch.int64), 16).to(torch.uint8)


def _parity(v: torch.Tensor) -> torch.Tensor:
    """XOR of the 64 bits of each element, as uint8 0/1."""
    v = v ^ (v >> 32)
    v = v ^ (v >> 16)
    return _PAR16[v & 0xFFFF]


class Monomials:
    """Sums of monomials over secret bits u_j, evaluated in one round of masked openings.

    `outputs` is a list of outputs, each a list of monomials (tuples of variable indices);
    an output is the XOR (equivalently, for mutually exclusive terms, the sum) of its
    monomials. The dealer's material is the down-closure of the monomials: every
    non-empty subset T of a monomial, with M_T = AND_{j in T} m_j (K of them, K <= 64).

    For the XOR form each element's M_T are packed into one 64-bit word, and since every
    public coefficient is a function of the opened e (nvars bits), tables indexed by e
    give, per output, the word of T whose coefficient is 1 and the public term (T empty):
    an output is then parity(table[e] & word), a few integer operations per element."""

    def __init__(self, nvars: int, outputs):
        self.nvars = nvars
        self.outputs = [[sum(1 << j for j in mono) for mono in out] for out in outputs]
        closure = {t for out in self.outputs for s in out for t in _subsets(s)} - {0}
        self.closure = sorted(closure, key=lambda t: (bin(t).count("1"), t))
        self.index = {t: i for i, t in enumerate(self.closure)}
        self.K = len(self.closure)
        assert self.K <= 64
        every = ((torch.arange(1 << nvars).unsqueeze(-1) >> torch.arange(nvars)) & 1).bool()
        E = self._prods(every, torch.logical_and)
        E[0] = torch.ones(1 << nvars, dtype=torch.bool)
        self._products = _pack(torch.stack([E[t] for t in self.closure], -1))  # M_T of each m
        coef, pub = [], []
        for out in self.outputs:
            c = {t: torch.zeros(1 << nvars, dtype=torch.bool) for t in self.closure}
            p = torch.zeros(1 << nvars, dtype=torch.bool)
            for s in out:
                p ^= E[s]
                for t in _subsets(s):
                    if t:
                        c[t] = c[t] ^ E[s ^ t]
            coef.append(_pack(torch.stack([c[t] for t in self.closure], -1)))
            pub.append(p.to(torch.uint8))
        self._coef = torch.stack(coef, -1)  # (2^nvars, outputs) int64 words
        self._pub = torch.stack(pub, -1)  # (2^nvars, outputs) 0/1

    def _prods(self, v, mul):
        """{T: prod_{j in T} v_j} over the closure (T = 0 left out), built incrementally."""
        out = {}
        for t in self.closure:
            j = t.bit_length() - 1
            rest = t & ~(1 << j)
            out[t] = v[..., j] if rest == 0 else mul(out[rest], v[..., j])
        return out

    def products(self, m: torch.Tensor) -> torch.Tensor:
        """Dealer: the bits M_T (..., K) of the closure for mask bits m (..., nvars)."""
        words = self._products[_index(m)].numpy().reshape(-1, 1).view(np.uint8)
        bits = np.unpackbits(words, axis=-1, count=self.K, bitorder="little").view(bool)
        return torch.from_numpy(bits).reshape(tuple(m.shape[:-1]) + (self.K,))

    def xor_eval(self, e: torch.Tensor, M: torch.Tensor, leader: bool) -> torch.Tensor:
        """XOR shares (..., outputs) from the opened e = u xor m (..., nvars) and XOR shares
        of M_T (..., K): output = XOR_T coef_T(e) M_T, xor the public part at party 0."""
        i = _index(e)
        out = _parity(self._coef[i] & _pack(M).unsqueeze(-1))
        if leader:
            out = out ^ self._pub[i]
        return out.bool()

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
    # super-group variables: G_j is 2j, P_j is 2j + 1 (group 0 lowest)
    g = [tuple([2 * j] + [2 * h + 1 for h in range(j + 1, FAN)]) for j in range(FAN)]
    return Monomials(2 * FAN, [g, [tuple(2 * h + 1 for h in range(FAN))]])


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
    """Dealer: the one-hot (..., 10, 16) of each 4-bit group of r, unpacked from the
    16-bit words 2^group."""
    words = (1 << _groups(r)).numpy().astype("<u2")
    bits = np.unpackbits(words.view(np.uint8), bitorder="little").view(bool)
    return torch.from_numpy(bits).reshape(tuple(r.shape) + (NGROUPS, 1 << WIDTH))


_LEVEL1 = []


def _level1(oh, c):
    """(G_g, P_g) of the ten groups as bools (..., 10, 2), from XOR shares of the one-hot h
    (..., 10, 16) and the public c: P_g = h_{c_g}, G_g = XOR_{v > c_g} h_v. Each group's
    one-hot is packed into a 16-bit word w, and a table indexed by (w, c_g) holds both
    bits (G + 2 P): one lookup per group."""
    if not _LEVEL1:
        w = torch.arange(1 << 16, dtype=torch.int64).unsqueeze(-1)
        cg = torch.arange(1 << WIDTH, dtype=torch.int64)
        _LEVEL1.append((_fold(w >> (cg + 1), 16) + 2 * ((w >> cg) & 1)).to(torch.uint8).reshape(-1))
    gp = _LEVEL1[0][(_pack(oh) << WIDTH) | _groups(c)]
    bits = np.unpackbits(gp.numpy()[..., None], axis=-1, count=2, bitorder="little").view(bool)
    return torch.from_numpy(bits)  # (..., 10, [G, P])


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


def _lt_parts(n):
    """Material of rounds 2 and 3 of n comparisons: random masks, and the one-hots and
    closure products derived by `_lt_derive` from the comparison masks."""
    return ([Part("m2", (n, 2, 2 * FAN), "xor"), Part("m3", (n, 3), "xor")],
            [Part("oh", (n, NGROUPS, 1 << WIDTH), "xor"), Part("M2", (n, 2, LT2.K), "xor")])


def _lt_derive(r, full):
    return {"oh": _onehot(r), "M2": LT2.products(full["m2"])}


def _lt_rounds(P, c, m):
    """Rounds 2 and 3 of comparisons [c_{0..39} < r_{0..39}] for public c (n,): level 1
    locally, round 2 for each super-group's (G, P), round 3 opens (Gt, Pt, Gb) masked by
    m3. Returns the opened e3 (n, 3); the caller finishes arithmetically or in XOR."""
    n = c.shape[0]
    if P.meta:
        u2 = P.empty((n, 2, 2 * FAN), torch.bool)
    else:
        u2 = _level1(m["oh"], c).reshape(n, 2, 2 * FAN)  # G0 P0 G1 P1 ... per super-group
    (e2,) = yield from _open(P, [(u2 ^ m["m2"], "xor")])
    if P.meta:
        u3 = P.empty((n, 3), torch.bool)
    else:
        gp = LT2.xor_eval(e2, m["M2"], P.leader)  # (n, 2 super-groups, [G, P])
        u3 = torch.stack([gp[:, 1, 0], gp[:, 1, 1], gp[:, 0, 0]], -1)
    (e3,) = yield from _open(P, [(u3 ^ m["m3"], "xor")])
    return e3


def _lt_zero(P, x, ys, same):
    """sign_bit on flat x (n,): ys[k] (n, ...) are the mult factors, same[k] whether
    ys[k] is x itself (then its mask is -r and its eps is c - 2^40, both free)."""
    n = x.shape[0]
    K = LT3.K
    random, derived = _lt_parts(n)
    random = [Part("r", (n,))] + random
    derived += [Part("rho", (n,)), Part("D", (n, K))]
    for k, y in enumerate(ys):
        ysh = tuple(y.shape)
        if not same[k]:
            random.append(Part(f"a{k}", ysh))
        derived += [Part(f"ra{k}", ysh), Part(f"Da{k}", ysh + (K,))]

    def derive(full):
        r = full["r"]
        rho = (r >> (L - 1)) & 1
        D = (1 - 2 * rho).unsqueeze(-1) * LT3.products(full["m3"]).to(torch.int64)
        out = {**_lt_derive(r, full), "rho": rho, "D": D}
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
    e3 = yield from _lt_rounds(P, c, m)
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
                "M3": EQ3.products(full["m3"]).to(torch.int64)}

    m = P.material.get("zero", random, derived, derive)
    (c,) = yield from _open(P, [(x + m["r"], "low")])  # x == 0 iff c = r mod 2^40
    if P.meta:
        u2 = P.empty((n, 2, FAN), torch.bool)
    else:
        u2 = _level1(m["oh"], c)[..., 1].reshape(n, 2, FAN)
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


GROUP_LIMIT = 2 ** 15  # most candidates (batch x m) a stage may compare all-pairs


def _stages(m: int, batch: int = 1):
    """(rounds, group sizes) of the way to reduce m candidates (in each of `batch` rows) to
    one in the fewest rounds: pairs cost 3 rounds (one sign_bit), groups of 3 or 4 cost 4
    (all pairs + one AND), ties going to the smaller group. All pairs of a group need
    (k - 1) / 2 comparisons per candidate where pairs need 1/2 for half the reduction, so
    groups are used only while batch * m <= GROUP_LIMIT: for big tensors bytes and CPU
    time outweigh the 2 rounds a stage saves."""
    return _plan(m, GROUP_LIMIT // max(batch, 1))


@functools.lru_cache(maxsize=None)
def _plan(m: int, most: int):
    if m <= 1:
        return 0, ()
    best = None
    for k in (2, 3, 4) if m <= most else (2,):
        r, seq = _plan(-(-m // k), most)
        cand = (r + (3 if k == 2 else 4), k, (k,) + seq)
        if best is None or cand[:2] < best[:2]:
            best = cand
    return best[0], best[2]


class _Race:
    """The candidates of a tournament: values v (B, m) and, when tracked, the argmax index
    idx (B, m) and one-hot rows oh (B, m, w), all ring shares with scale 1 for idx and oh.
    Before the first stage idx and oh are public (candidate i is element i): None. pos
    (m, w) names the element each one-hot slot stands for (-1: padding, always 0)."""

    def __init__(self, v, track):
        self.v, self.track = v, track
        self.idx = self.oh = None
        self.pos = torch.arange(v.shape[1]).reshape(-1, 1)


def _tournament(P, v, track=None):
    """Max over the last dim of ring shares v (..., n), the earlier index winning ties.
    track: None, "index" (scale-1 argmax index) or "onehot" ((..., n) scale-1 one-hot of
    the argmax). Stages from `_stages`: about 2 log2(n) rounds for small tensors, up to
    3 log2(n) for big ones."""
    n = v.shape[-1]
    lead = tuple(v.shape[:-1])
    B = math.prod(lead)
    race = _Race(v.reshape(B, n), track)
    for k in _stages(n, B)[1]:
        if k == 2:
            yield from _pair_stage(P, race)
        else:
            yield from _group_stage(P, race, k)
    out = race.v[:, 0].reshape(lead)
    if track == "index":
        if race.idx is None:  # a single candidate
            return out, P.empty(lead) if P.meta else torch.zeros(lead, dtype=torch.int64)
        return out, race.idx[:, 0].reshape(lead)
    if track == "onehot":
        if P.meta:
            return out, P.empty(lead + (n,))
        if race.oh is None:
            return out, _lead(P, torch.ones(lead + (1,), dtype=torch.int64))
        oh = torch.zeros(B, n, dtype=torch.int64)
        keep = race.pos[0] >= 0
        oh[:, race.pos[0][keep]] = race.oh[:, 0, keep]
        return out, oh.reshape(lead + (n,))
    return out, None


def _pair_stage(P, race):
    """Candidates paired in order, the odd last one passing through: s = [a < b] by one
    sign_bit, winner a - s (a - b); the index and one-hot ride as more `mult` products
    (idx = ia + s (ib - ia); one-hot = (oh_a - s oh_a, s oh_b)). 3 rounds."""
    v, track = race.v, race.track
    B, m = v.shape
    h = m // 2
    a, b = v[:, 0:2 * h:2], v[:, 1:2 * h:2]
    d = a - b
    mult = [d]
    if track == "index" and race.idx is not None:
        ia, ib = race.idx[:, 0:2 * h:2], race.idx[:, 1:2 * h:2]
        mult.append(ib - ia)
    if track == "onehot" and race.oh is not None:
        oa, ob = race.oh[:, 0:2 * h:2], race.oh[:, 1:2 * h:2]
        mult += [oa, ob]
    s, prods = yield from sign_bit(P, d, mult)  # s = [a < b]: b wins
    win = a - prods[0]
    if m % 2:
        win = torch.cat([win, v[:, m - 1:]], -1)
    if track == "index":
        if P.meta:
            idx = P.empty((B, h))
        elif race.idx is None:
            idx = _lead(P, torch.arange(0, 2 * h, 2).expand(B, h)) + s
        else:
            idx = ia + prods[1]
        if m % 2:
            if P.meta:
                last = P.empty((B, 1))
            elif race.idx is None:
                last = _lead(P, torch.full((B, 1), m - 1, dtype=torch.int64))
            else:
                last = race.idx[:, m - 1:]
            idx = torch.cat([idx, last], -1)
        race.idx = idx
    if track == "onehot":
        w = race.pos.shape[1]
        pos = torch.cat([race.pos[0:2 * h:2], race.pos[1:2 * h:2]], -1)
        if P.meta:
            oh = P.empty((B, h, 2 * w))
        elif race.oh is None:
            oh = torch.stack([_lead(P, torch.ones_like(s)) - s, s], -1)
        else:
            oh = torch.cat([oa - prods[1], prods[2]], -1)
        if m % 2:
            pos = torch.cat([pos, F.pad(race.pos[m - 1:], (0, w), value=-1)], 0)
            if P.meta:
                last = P.empty((B, 1, 2 * w))
            elif race.oh is None:
                last = _lead(P, F.pad(torch.ones((B, 1, 1), dtype=torch.int64), (0, 1)))
            else:
                last = F.pad(race.oh[:, m - 1:], (0, w))
            oh = torch.cat([oh, last], 1)
        race.oh, race.pos = oh, pos
    race.v = win


_CAND = {k: Monomials(k - 1, [[tuple(range(k - 1))]]) for k in (2, 3, 4)}  # a candidate's k-1 wins


def _classes(m, k):
    """Consecutive groups of sizes as equal as possible, at most k: [(start, groups, size)]."""
    G = -(-m // k)
    q, r = divmod(m, G)
    out = [(0, r, q + 1), (r * (q + 1), G - r, q)]
    return [c for c in out if c[1]]


def _group_stage(P, race, k):
    """Groups of up to k consecutive candidates (sizes k or k - 1), every pair compared at
    once. Each candidate is opened once, eps_i = v_i - a_i; the comparison of i < j is then
    against the dealer mask R = a_j - a_i with the PUBLIC c = x' + R = eps_i - eps_j + 2^40
    (x' = v_i - v_j + 2^40), so all pairs cost rounds 2 and 3 of sign_bit only, ending in
    XOR shares s_ij = [v_i < v_j] = not c_40 xor rho xor B. Candidate i wins its group iff
    it beats every other: W_i = AND_{j > i} (not s_ij) AND_{j < i} s_ji (the earlier index
    wins ties; exactly one W_i is 1). One more round opens f = s xor mu for dealer bits mu,
    and with M_T = prod_{T} mu (arithmetically shared, T a subset of i's k - 1 pairs)

        W_i = sum_T coef_T(f) M_T,   W_i y = eps_y W_i + sum_T coef_T(f) [M_T a_y]

    for each y = eps_y + a_y among v_i and the tracked index or one-hot (whose eps were
    opened with eps_i in the first round). The group's max is sum_i W_i v_i, its index
    sum_i W_i idx_i, its one-hot the W_i oh_i side by side. 4 rounds."""
    v, track = race.v, race.track
    B, m = v.shape
    classes = _classes(m, k)
    w = race.pos.shape[1]
    pay_i = track == "index" and race.idx is not None
    pay_o = track == "onehot" and race.oh is not None
    pairs, npairs = {}, 0
    for c, (start, g, size) in enumerate(classes):
        pl = list(combinations(range(size), 2))
        pairs[c] = (torch.tensor([p[0] for p in pl]), torch.tensor([p[1] for p in pl]), pl)
        npairs += B * g * len(pl)
    random, derived = _lt_parts(npairs)
    random.append(Part("mu", (npairs,), "xor"))
    derived += [Part("rho", (npairs,), "xor"), Part("M3", (npairs, LT3.K), "xor")]
    for c, (start, g, size) in enumerate(classes):
        K = _CAND[size].K
        random.append(Part(f"a{c}", (B, g, size)))
        derived += [Part(f"W{c}", (B, g, size, K)), Part(f"Wa{c}", (B, g, size, K))]
        if pay_i:
            random.append(Part(f"ai{c}", (B, g, size)))
            derived.append(Part(f"Wi{c}", (B, g, size, K)))
        if pay_o:
            random.append(Part(f"ao{c}", (B, g, size, w)))
            derived.append(Part(f"Wo{c}", (B, g, size, w, K)))

    def derive(full):
        R = torch.cat([(full[f"a{c}"][..., pairs[c][1]] - full[f"a{c}"][..., pairs[c][0]]).reshape(-1)
                       for c in range(len(classes))])
        out = {**_lt_derive(R, full), "rho": ((R >> (L - 1)) & 1).bool(), "M3": LT3.products(full["m3"])}
        at = 0
        for c, (start, g, size) in enumerate(classes):
            np_ = B * g * len(pairs[c][2])
            mu = full["mu"][at:at + np_].reshape(B, g, -1)
            at += np_
            W = _CAND[size].products(mu[..., _wins(size)[0]]).to(torch.int64)
            out[f"W{c}"] = W
            out[f"Wa{c}"] = W * full[f"a{c}"].unsqueeze(-1)
            if pay_i:
                out[f"Wi{c}"] = W * full[f"ai{c}"].unsqueeze(-1)
            if pay_o:
                out[f"Wo{c}"] = W.unsqueeze(-2) * full[f"ao{c}"].unsqueeze(-1)
        return out

    mat = P.material.get("group_max", random, derived, derive)

    # round 1: every candidate (and its tracked payload) opened once, masked
    items = []
    for c, (start, g, size) in enumerate(classes):
        sl = slice(start, start + g * size)
        items.append((v[:, sl].reshape(B, g, size) - mat[f"a{c}"], "ring"))
        if pay_i:
            items.append((race.idx[:, sl].reshape(B, g, size) - mat[f"ai{c}"], "ring"))
        if pay_o:
            items.append((race.oh[:, sl].reshape(B, g, size, w) - mat[f"ao{c}"], "ring"))
    opened = iter((yield from _open(P, items)))
    eps = []
    for c in range(len(classes)):
        eps.append((next(opened), next(opened) if pay_i else None, next(opened) if pay_o else None))
    if P.meta:
        cpub = P.empty((npairs,))
    else:
        cpub = torch.cat([(e[0][..., pairs[c][0]] - e[0][..., pairs[c][1]]).reshape(-1) for c, e in enumerate(eps)])
        cpub = cpub + (1 << (L - 1))

    # rounds 2 and 3: all comparisons, finished in XOR: [x < 0] = not c_40 xor rho xor B
    e3 = yield from _lt_rounds(P, cpub, mat)
    if P.meta:
        sx = P.empty((npairs,), torch.bool)
    else:
        sx = LT3.xor_eval(e3, mat["M3"], P.leader)[:, 0] ^ mat["rho"]
        if P.leader:
            sx = sx ^ (((cpub >> (L - 1)) & 1) == 0)

    # round 4: the AND of each candidate's wins, with its products, arithmetically
    (f,) = yield from _open(P, [(sx ^ mat["mu"], "xor")])
    vs, idxs, ohs, poss = [], [], [], []
    width = max(size for _, _, size in classes) * w
    at = 0
    for c, (start, g, size) in enumerate(classes):
        np_ = B * g * len(pairs[c][2])
        fc = f[at:at + np_].reshape(B, g, -1)
        at += np_
        if track == "onehot":
            base = race.pos[start:start + g * size].reshape(g, size * w)
            poss.append(F.pad(base, (0, width - size * w), value=-1))
        if P.meta:
            vs.append(P.empty((B, g)))
            idxs.append(P.empty((B, g)))
            ohs.append(P.empty((B, g, width)))
            continue
        sel, neg = _wins(size)
        coef = _CAND[size].arith_coefs(fc[..., sel] ^ neg)
        ix = _CAND[size].index
        Wi = _lead(P, coef[0])
        for T, ct in coef.items():
            if T:
                Wi = Wi + ct * mat[f"W{c}"][..., ix[T]]
        vs.append(_times(Wi, coef, ix, eps[c][0], mat[f"a{c}"], mat[f"Wa{c}"]).sum(-1))
        if track == "index":
            if pay_i:
                idxs.append(_times(Wi, coef, ix, eps[c][1], mat[f"ai{c}"], mat[f"Wi{c}"]).sum(-1))
            else:
                ids = torch.arange(start, start + g * size).reshape(g, size)
                idxs.append((Wi * ids).sum(-1))
        if track == "onehot":
            oh = _times(Wi, coef, ix, eps[c][2], mat[f"ao{c}"], mat[f"Wo{c}"]) if pay_o else Wi.unsqueeze(-1)
            ohs.append(F.pad(oh.reshape(B, g, size * w), (0, width - size * w)))
    race.v = torch.cat(vs, 1)
    if track == "index":
        race.idx = torch.cat(idxs, 1)
    if track == "onehot":
        race.oh = torch.cat(ohs, 1)
        race.pos = torch.cat(poss, 0)


def _times(Wi, coef, ix, e_y, a_y, Wy):
    """Shares of W_i y_i for y = e_y + a_y (e_y public, (B, g, size, ...)): e_y W_i +
    sum_T coef_T [M_T a_y], with M_empty a_y = a_y; Wy holds [M_T a_y] on its last dim."""
    ex = e_y.dim() - 3
    acc = e_y * _bc(Wi, ex) + _bc(coef[0], ex) * a_y
    for T, ct in coef.items():
        if T:
            acc = acc + _bc(ct, ex) * Wy[..., ix[T]]
    return acc


@functools.lru_cache(maxsize=None)
def _wins(size):
    """For each candidate i of a group, the pairs (index into combinations(range(size), 2))
    that decide it, and whether i wins on s = 0 (i is the earlier of the pair: s = [v_i <
    v_j] must be 0) — the literal is s xor neg."""
    pl = list(combinations(range(size), 2))
    sel = [[p for p, (a, b) in enumerate(pl) if i in (a, b)] for i in range(size)]
    neg = [[pl[p][0] == i for p in row] for i, row in enumerate(sel)]
    return torch.tensor(sel).reshape(size, size - 1), torch.tensor(neg).reshape(size, size - 1)


def _along(x, dim):
    """x with `dim` (None: all dims, flattened) moved last."""
    if dim is None:
        return x.reshape(1, -1)
    return x.movedim(dim, -1)


def max_dim(P, x: Shared, dim: int, keepdim: bool):
    """(max of x along dim, one-hot of the first maximum, shape of x, scale 2^f): exact for
    |x| < 2^39 ring units. dim=None takes every element. A generator; rounds from _stages
    (3 for n = 2, 4 for n = 3 or 4, 8 for n = 10 when the tensor is small)."""
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
    """Max (over dim, or all elements) by `_tournament`: exact for |x| < 2^39 ring units;
    rounds from `_stages` (8 for 10 values, 20 for 1000; 3 per halving on big tensors)."""
    return (yield from _reduced(P, node, args, None))


@protocol("argmax")
def argmax(P, node, args, a):
    """Index of the first maximum, as i * 2^f: exact on the fixed-point encodings (ties
    within 2^-f of each other in the floats may pick another index); |x| < 2^39 ring
    units. Same rounds as max: the index rides along as one more product per stage."""
    return (yield from _reduced(P, node, args, "index"))


@protocol("max_pool2d")
def max_pool2d(P, node, args, a):
    """Windows gathered from a copy padded with PAD = -(2^39 - 1) ring units (below any
    valid input, so padding never changes a max: torch guarantees each window holds an
    input element); extra bottom/right padding stands for ceil_mode's partial windows.
    Then a tournament over each window, exact for |x| < 2^39 ring units: a 2x2 window
    takes 4 rounds on small inputs (one group stage), 6 on big ones (two pair stages;
    see _stages)."""
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

