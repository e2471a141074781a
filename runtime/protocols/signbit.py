"""Dealer-assisted bit extraction on ring shares: sign_bit, the zero test and relu_ring.

Everything rests on two dealer-assisted bit extractions on a ring share [x]:

    sign_bit  [x < 0]   for |x| < 2^40 ring units (|value| < 2^(40-f), 2^24 for f = 16)
    zero_bit  [x == 0]  for |x| < 2^40 ring units

each 3 rounds whatever the number of parties, returning an ARITHMETIC share of the plain
0/1 bit (scale 1). Results are exact in the ring inside these ranges (no approximation,
no truncation); outside them the bit is meaningless. Comparing fixed-point encodings,
x < y differs from the float comparison only when |x - y| < 2^-f (both sides round to
the same or to neighbouring encodings).

sign_bit (L = 41, c_i / r_i: bit i)
-----------------------------------
Dealer: uniform ring mask r; XOR shares of the thermometer code of each 4-bit group of
r's low 40 bits, of the round-2 products below and of rho = r_40; arithmetic shares of a
four-entry truth table (round 3) and of its products with the `mult` masks.

Round 1. Open c = x + 2^40 + r (mod 2^64). c is uniform, so it reveals nothing. With
x' = x + 2^40 in [0, 2^41) we have x' = (c - r) mod 2^41, and its top bit is

    s = msb(x') = c_40 xor rho xor B,   B = [c_{0..39} < r_{0..39}]   (the borrow)

and [x < 0] = 1 - s. Only c mod 2^41 is needed, so each party sends the low 6 bytes of
its share (unless a product by x itself is asked for, see below: then 8).

Level 1, no communication. Split the 40 bits into 10 groups of 4. For group g the dealer
XOR-shares the 16-bit thermometer word q with q_v = [r_g >= v] (q_0 = 1; q_16 = 0 lies
outside the word), and with c_g public

    G_g = [c_g < r_g] = q_{c_g + 1},      P_g = [c_g = r_g] = q_{c_g} xor q_{c_g + 1}:

both are XOR-linear in q, so each party shifts its own share word right by c_g and keeps
two bits, (a_g, b_g) = (q_{c_g}, q_{c_g + 1}); G = b and P = a xor b are left implicit
(folded into the tables of round 2).

Round 2. Lexicographic order: [c < r] = OR_g G_g AND_{h > g} P_h; the terms are
mutually exclusive. Groups 0-4 and 5-9 form two super-groups, each needing
G = G4 + P4 G3 + P4 P3 G2 + P4 P3 P2 G1 + P4 P3 P2 P1 G0 and P = P0 P1 P2 P3 P4: monomials
of up to 5 secret bits u_j, all evaluated in ONE round. The dealer gives random bits m_j
and XOR shares of M_T = AND_{j in T} m_j for every subset T of a monomial (62 subsets);
parties open e = u xor m (uniform) and use

    AND_{j in S} u_j = AND_{j in S} (e_j xor m_j) = XOR_{T subset S} (AND_{j in S-T} e_j) M_T,

public coefficients times shares. What is masked and opened is the raw (a, b) pairs: 20
bits per element, sent as a uint16 (bits 0-15) and a nibble (bits 16-19, two elements a
byte). G, P and their masks are XORs of raw bits, so the dealer's products and the
parties' tables are indexed by raw 10-bit words. Each element's 62 bits M_T, and a
constant 1 in bit 63 (M_empty, shared like the rest), are one 64-bit word, and for each
of the 2^10 values of e a table holds the word of coefficients (bit 63: the public term),
so an output is parity(table[e] & word).

Round 3. B = G_top + P_top G_bot (exclusive terms, so also G_top xor P_top G_bot) and

    s = c_40 xor t,   t = rho xor B = w xor P_top G_bot,   w = rho xor G_top,

where w is XOR-linear: the dealer XOR-shares rho too (one bit plane). One AND is left.
Parties open e = (w, P_top, G_bot) xor (m0, m1, m2) (three bit planes), so that

    t = e0 xor v[e1 + 2 e2],   v[j] = m0 xor ((j & 1) xor m1)((j >> 1) xor m2):

the dealer shares the four v[j] ARITHMETICALLY (the truth table of the AND for each
possible opening, xor the fresh m0) and each party just picks its share of v[e1 + 2 e2].
With the public f = 1 xor c_40 xor e0, [x < 0] = 1 - s = f xor v = f + (1 - 2f) v.

Products with the bit, free of rounds (`mult`): for y = eps + a with a a dealer mask
and eps = y - a opened in round 1 alongside c,

    [x < 0] y = f y + (1 - 2f)(eps [v] + [v a]) = f y + eps ([x < 0] - f) + (1 - 2f) [v a],

which only needs the four [v[j] a] from the dealer. When y is x itself, a = -r and
eps = x + r = c - 2^40 come for free (then c is opened in full). [x < 0] y carries y's
scale: the bit has scale 1, so nothing is truncated and the product is exact.

Representation. XOR-shared bits never exist one per byte: the dealer's material is
packed words (sharing ``xor64`` in runtime/material.py: 64-bit words regenerated straight
from the PRG), viewed as uint16 thermometer words (10, n), int64 closure words (2, n),
the round-2 mask in its wire layout and bit planes; messages are those words themselves.
Arrays are component-major ((k, n): one row per group, closure word or plane) so that
every numpy / torch loop runs over n, and all table lookups are 1-D gathers.

Cost per element (2 parties): 3 rounds; sent 6 B + 2.5 B + 3 bits (8 B instead of 6 when
y = x), 8 B more per y in `mult` (none for y = x); dealer (the last party's corrections)
20 B of thermometers + 16 B of closure words + 1 bit + 4 ring elements, and 4 ring
elements per y.

zero_bit is the same with equality only: c = x + r (40 bits), P_g = a_g xor b_g, round 2
ANDs five P's per super-group (31 subsets), round 3 ANDs the two results arithmetically
(closure {m0, m1, m0 m1}, arithmetically shared).

The ops built on these (comparisons, where, max/argmax, max_pool2d) are in compare.py.

Public API (``__all__``)
------------------------
- ``sign_bit(P, x, mult)``, ``zero_bit(P, x)``, ``relu_ring(P, x)``: the extractions.
- ``Monomials``: sums of monomials over secret bits in one round (the tables of round 2).
- Rounds 2 and 3 on a public c, for callers that open their own round 1 (compare.py's
  group stage compares every pair of a group from one opening of each candidate):
  ``lt_parts`` (the material they need), ``lt_derive`` (the dealer's derived parts from
  the comparison masks), ``lt_rounds`` (the two rounds; the opened bit planes come back),
  ``mask_planes`` / ``plane_code`` (bit planes of material, and per-element codes from
  planes), ``bit40`` (bit 40 of ring values) and ``XOR_DEAL`` (round 3's truth table of
  the AND as XOR bits, one byte per mask code).
- ``open_mixed(P, items)``: one round opening ring sums, 48-bit sums and XOR words.
- Packed material words: ``nwords``, ``view_words``, ``alloc_words``; ``unsqueeze_right``.
- Constants: ``L`` (x + 2^(L-1) in [0, 2^L)), ``PAD`` (-(2^39 - 1): "-inf" for padding).
"""
from __future__ import annotations

import math
import sys

import numpy as np
import torch


from .core import Ex
from ..material import Part
from .common import others

__all__ = [
    "L", "PAD", "Monomials", "XOR_DEAL", "alloc_words", "bit40", "lt_derive", "lt_parts", "lt_rounds",
    "mask_planes", "nwords", "open_mixed", "plane_code", "relu_ring", "sign_bit", "unsqueeze_right",
    "view_words", "zero_bit",
]

assert sys.byteorder == "little"  # byte views of ring elements below

L = 41  # x' = x + 2^(L-1) lies in [0, 2^L) for |x| < 2^(L-1)
WIDTH = 4  # bits per level-1 group
NGROUPS = 10  # (L - 1) / WIDTH
FAN = 5  # groups per super-group (two super-groups)
LOW_BYTES = 6  # an opened c is only used mod 2^41 (mod 2^40 for equality)
PAD = -(2 ** 39 - 1)  # "-inf" for max_pool2d padding, in ring units

_TOP = np.uint64(1 << 63)


# ---------------------------------------------------------------- packed words


def nwords(count: int, itemsize: int) -> int:
    """int64 words holding `count` items of `itemsize` bytes."""
    return -(-count * itemsize // 8)


def view_words(words: torch.Tensor, dtype, shape) -> np.ndarray:
    """The first prod(shape) items of `dtype` in int64 words (material), zero-copy."""
    count = math.prod(shape)
    return words.numpy().reshape(-1).view(dtype)[:count].reshape(shape)


def alloc_words(dtype, shape):
    """(int64 word tensor, numpy view of it as dtype/shape); the padding is zeroed."""
    count = math.prod(shape)
    nw = nwords(count, np.dtype(dtype).itemsize)
    buf = np.empty(nw, np.int64)
    if nw:
        buf[-1] = 0
    return torch.from_numpy(buf), buf.view(dtype)[:count].reshape(shape)


def _parity(w: np.ndarray) -> np.ndarray:
    """XOR of the bits of each word, as uint8 0/1 (counted unsigned: numpy counts the
    bits of |w| for signed words)."""
    p = np.bitwise_count(w.view(_UNSIGNED[w.dtype.itemsize]))
    p &= 1
    return p


_UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


# ---------------------------------------------------------------- monomials in one round


def _subsets(mask: int):
    """Every subset of `mask`, the empty one included."""
    sub = mask
    while True:
        yield sub
        if sub == 0:
            return
        sub = (sub - 1) & mask


def _bits_of(values: np.ndarray, nbits: int) -> np.ndarray:
    """(len(values), nbits) bool: bit j of each value."""
    return ((values[:, None] >> np.arange(nbits)) & 1).astype(bool)


def _words_of(cols) -> np.ndarray:
    """Bool columns (each (N,)) as int64 words, column i in bit i."""
    w = np.zeros(len(cols[0]) if cols else 0, np.uint64)
    for i, c in enumerate(cols):
        w |= c.astype(np.uint64) << np.uint64(i)
    return w


class Monomials:
    """Sums of monomials over secret bits u_j, evaluated in one round of masked openings.

    `outputs` is a list of outputs, each a list of monomials (tuples of variable indices);
    an output is the XOR (equivalently, for mutually exclusive terms, the sum) of its
    monomials. The dealer's material is the down-closure of the monomials: every
    non-empty subset T of a monomial, with M_T = AND_{j in T} m_j (K of them, K <= 63).

    `raw` (optional) says what is opened: variable j is the XOR of the raw opened bits in
    the mask raw[j] (and its mask the XOR of the same raw mask bits), so the tables below
    are indexed by raw words.

    Packed form: an element's M_T are one 64-bit word (closure element i in bit i) with a
    constant 1 in bit 63 (`prod_words[m]`, m the raw mask word); for each raw opened word
    e, `coef_words[o][e]` holds output o's public coefficients, its public term in bit 63:
    an output's share is then parity(coef_words[o][e] & word), at every party alike.
    `arith_table()` gives the integer coefficients of output 0 (see arith_coefs).
    `products`, `xor_eval` and `arith_coefs` take bool tensors of the variables
    themselves (identity `raw` only)."""

    def __init__(self, nvars: int, outputs, raw=None):
        self.nvars = nvars
        self.outputs = [[sum(1 << j for j in mono) for mono in out] for out in outputs]
        closure = {t for out in self.outputs for s in out for t in _subsets(s)} - {0}
        self.closure = sorted(closure, key=lambda t: (bin(t).count("1"), t))
        self.index = {t: i for i, t in enumerate(self.closure)}
        self.K = len(self.closure)
        assert self.K <= 63
        self.raw = list(raw) if raw is not None else [1 << j for j in range(nvars)]
        self.nraw = max(m.bit_length() for m in self.raw)
        every = np.arange(1 << self.nraw, dtype=np.int64)
        logical = np.stack([(np.bitwise_count(every & m) & 1).astype(bool) for m in self.raw], -1)
        E = self._prods(logical, np.logical_and)
        E[0] = np.ones(1 << self.nraw, dtype=bool)
        self.prod_words = (_words_of([E[t] for t in self.closure]) | _TOP).view(np.int64)
        coef = []
        for out in self.outputs:
            c = {t: np.zeros(1 << self.nraw, dtype=bool) for t in self.closure}
            pub = np.zeros(1 << self.nraw, dtype=bool)
            for s in out:
                pub ^= E[s]
                for t in _subsets(s):
                    if t:
                        c[t] = c[t] ^ E[s ^ t]
            w = _words_of([c[t] for t in self.closure])
            w[pub] |= _TOP
            coef.append(w.view(np.int64))
        self.coef_words = coef

    def _prods(self, v, mul):
        """{T: prod_{j in T} v_j} over the closure (T = 0 left out), built incrementally."""
        out = {}
        for t in self.closure:
            j = t.bit_length() - 1
            rest = t & ~(1 << j)
            out[t] = v[..., j] if rest == 0 else mul(out[rest], v[..., j])
        return out

    def _raw_index(self, b: torch.Tensor) -> torch.Tensor:
        assert self.raw == [1 << j for j in range(self.nvars)]
        return (b.to(torch.int64) << torch.arange(self.nvars)).sum(-1)

    def products(self, m: torch.Tensor) -> torch.Tensor:
        """Dealer: the bits M_T (..., K) of the closure for mask bits m (..., nvars)."""
        w = torch.from_numpy(self.prod_words)[self._raw_index(m)]
        return ((w.unsqueeze(-1) >> torch.arange(self.K)) & 1).bool()

    def xor_eval(self, e: torch.Tensor, M: torch.Tensor, leader: bool) -> torch.Tensor:
        """XOR shares (..., outputs) from the opened e = u xor m (..., nvars) and XOR shares
        of M_T (..., K): output = XOR_T coef_T(e) M_T, xor the public part at party 0."""
        i = _np(self._raw_index(e))
        word = _np((M.to(torch.int64) << torch.arange(self.K)).sum(-1))
        if leader:
            word = word | _TOP.view(np.int64)
        out = np.stack([_parity(c[i] & word) for c in self.coef_words], -1)
        return torch.from_numpy(out.view(bool))

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

    def arith_table(self) -> np.ndarray:
        """(1 + K, 2^nvars) int64: for each opened e (identity raw), output 0's constant
        (row 0) and the coefficient of each M_T in closure order."""
        every = torch.from_numpy(_bits_of(np.arange(1 << self.nvars), self.nvars))
        coef = self.arith_coefs(every)
        rows = [coef.get(0, torch.zeros(1 << self.nvars, dtype=torch.int64))]
        rows += [coef.get(t, torch.zeros(1 << self.nvars, dtype=torch.int64)) for t in self.closure]
        return torch.stack(rows).numpy().copy()

    def prod_table(self) -> np.ndarray:
        """(K, 2^nvars) int64 0/1: M_T of each mask word m (identity raw), closure order."""
        w = self.prod_words.view(np.uint64)
        return np.stack([((w >> np.uint64(i)) & np.uint64(1)).astype(np.int64) for i in range(self.K)])


def _mono_lt():
    # super-group variables: G_j is 2j, P_j is 2j + 1 (group 0 lowest); opened: the raw
    # pairs a_j (bit 2j) and b_j (bit 2j + 1), with G_j = b_j and P_j = a_j xor b_j
    g = [tuple([2 * j] + [2 * h + 1 for h in range(j + 1, FAN)]) for j in range(FAN)]
    raw = []
    for j in range(FAN):
        raw += [2 << 2 * j, 3 << 2 * j]
    return Monomials(2 * FAN, [g, [tuple(2 * h + 1 for h in range(FAN))]], raw)


LT2 = _mono_lt()  # round 2 of sign_bit: (G, P) of each super-group, XOR-shared
EQ2 = Monomials(FAN, [[tuple(range(FAN))]], [3 << 2 * j for j in range(FAN)])  # AND of 5 P's
EQ3 = Monomials(2, [[(0, 1)]])  # round 3: AND of the two super-groups

_SH2 = np.array([2 * g for g in range(8)] + [0, 2], np.uint16)[:, None]  # group g at bits 2g of 20: 16 + 4


def _truth_table():
    """Round 3 of sign_bit: t = rho xor B = w xor Pt Gb with w = rho xor Gt, opened as
    e = (w, Pt, Gb) xor (m0, m1, m2). Then t = e0 xor v[e1 + 2 e2] with the dealer's
    v[j] = m0 xor ((j & 1) xor m1)((j >> 1) xor m2): the truth table of the one AND left,
    one row per value of the mask code m (bit k: m_k), as ring values (8, 4) and as a
    byte of 4 bits (8,)."""
    tab = np.zeros((4, 8), np.int64)
    for m in range(8):
        m0, m1, m2 = m & 1, (m >> 1) & 1, (m >> 2) & 1
        for j in range(4):
            tab[j, m] = m0 ^ (((j & 1) ^ m1) & ((j >> 1) ^ m2))
    byte = (tab << np.arange(4)[:, None]).sum(0).astype(np.uint8)
    return tab, byte


_SIGN_DEAL, XOR_DEAL = _truth_table()
_ZERO_COEF = EQ3.arith_table()  # (1 + 3, 4)
_ZERO_DEAL = EQ3.prod_table()  # (3, 4)


# ---------------------------------------------------------------- opening


def open_mixed(P, items):
    """One round opening several sharings: items are (share, kind) with kind 'ring'
    (sum mod 2^64), 'low' (sum mod 2^48, 6 bytes on the wire) or 'xor' (XOR of bool or
    integer words)."""
    wire = []
    for t, kind in items:
        if kind != "low":
            wire.append(t)
        elif P.meta:
            wire.append(P.empty(tuple(t.shape) + (LOW_BYTES,), torch.uint8))
        else:
            b = _np(t).view(np.uint8).reshape(-1, 8)[:, :LOW_BYTES]
            wire.append(torch.from_numpy(np.ascontiguousarray(b)).reshape(tuple(t.shape) + (LOW_BYTES,)))
    specs = [(tuple(w.shape), w.dtype) for w in wire]
    got = yield Ex({j: wire for j in others(P)}, {j: specs for j in others(P)})
    if P.meta:
        return [P.empty(t.shape, t.dtype) for t, _ in items]
    out = []
    for i, (t, kind) in enumerate(items):
        acc = None
        for j in others(P):
            w = got[j][i]
            if kind == "xor":
                acc = t ^ w if acc is None else acc.bitwise_xor_(w)
            elif kind == "low":
                full = torch.zeros(tuple(t.shape) + (8,), dtype=torch.uint8)
                full[..., :LOW_BYTES] = w
                full = full.view(torch.int64).reshape(t.shape)
                acc = t + full if acc is None else acc.add_(full)
            else:
                acc = t + w if acc is None else acc.add_(w)
        out.append(acc)
    return out


def _nibbles(v: torch.Tensor) -> np.ndarray:
    """The ten 4-bit groups of v's low 40 bits, as (10, n) uint8 (group g in row g)."""
    n = v.shape[0]
    b = np.ascontiguousarray(_np(v).view(np.uint8).reshape(n, 8).T[:NGROUPS // 2])
    out = np.empty((NGROUPS, n), np.uint8)
    np.bitwise_and(b, 15, out=out[0::2])
    np.right_shift(b, 4, out=out[1::2])
    return out


def bit40(v: torch.Tensor) -> np.ndarray:
    """Bit 40 of each element, as uint8 (n,)."""
    n = v.shape[0]
    return _np(v).view(np.uint8).reshape(n, 8)[:, 5] & 1


def unsqueeze_right(t, ndim):
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


def _nhalf(n):
    return (n + 1) // 2


def _nplane(n):
    return (n + 7) // 8


def lt_parts(n, planes=3, rho=True):
    """Material of rounds 2 and 3 of n comparisons, packed. Random masks in the wire
    layouts: m2 = the low 16 bits of each element's 20 raw bits (n,) uint16, then their
    top 4 bits two elements a byte; m3 = `planes` bit planes of n bits. Derived, by
    `lt_derive` from the comparison masks: thermometer words T (10, n) uint16, closure
    words M2 (2, n) int64 and (with rho) the bit plane of rho = r_40."""
    derived = [Part("T", (nwords(NGROUPS * n, 2),), "xor64"), Part("M2", (2, n), "xor64")]
    if rho:
        derived.append(Part("rx", (nwords(_nplane(n), 1),), "xor64"))
    return ([Part("m2", (nwords(2 * n + _nhalf(n), 1),), "xor64"),
             Part("m3", (nwords(planes * _nplane(n), 1),), "xor64")], derived)


def _m2(words, n):
    """The wire layout of round 2 in material words: (low 16 bits (n,), high nibbles)."""
    b = words.numpy().view(np.uint8)
    return b[:2 * n].view(np.uint16), b[2 * n:2 * n + _nhalf(n)]


def _raw2(lo, hi, n):
    """The two super-groups' 10-bit raw words (2, n) from the wire layout (bits 0-9 and
    10-19 of each element's 20 bits), as intp: table indices."""
    h = np.empty(2 * _nhalf(n), np.uint8)
    np.bitwise_and(hi, 15, out=h[0::2])
    np.right_shift(hi, 4, out=h[1::2])
    out = np.empty((2, n), np.intp)
    np.bitwise_and(lo, 1023, out=out[0], casting="unsafe")
    np.right_shift(lo, 10, out=out[1], casting="unsafe")
    top = h[:n].astype(np.intp)
    top <<= 6
    out[1] |= top
    return out


def _rows(table, idx):
    """table[:, idx] (k, n) for a small (k, m) table, one 1-D gather per row (numpy's
    take along axis 1 is several times slower)."""
    idx = idx.astype(np.intp)
    out = np.empty((table.shape[0], idx.shape[0]), table.dtype)
    for j in range(table.shape[0]):
        np.take(table[j], idx, out=out[j], mode="clip")
    return out


def mask_planes(m3, n, planes):
    """Bit planes (planes, ceil(n / 8)) uint8 of the round-3 masks in material words."""
    return m3.numpy().view(np.uint8)[:planes * _nplane(n)].reshape(planes, _nplane(n))


def plane_code(planes, n, extra=None):
    """Per element, the bits of `planes` (k, ceil(n / 8)) as one uint8 code (bit j from
    plane j), or'ed with `extra` shifted above them."""
    k = planes.shape[0]
    b = np.unpackbits(planes, axis=-1, count=n, bitorder="little")
    code = b[0].copy()
    for j in range(1, k):
        b[j] <<= j
        code |= b[j]
    if extra is not None:
        extra <<= k
        code |= extra
    return code


def lt_derive(r, full, mono=None):
    """Dealer: thermometer words of r's groups and the closure words (of `mono`, LT2 by
    default) of the masks m2."""
    n = r.shape[0]
    T, tv = alloc_words(np.uint16, (NGROUPS, n))
    np.left_shift(np.uint16(0xFFFE), _nibbles(r), out=tv)
    np.invert(tv, out=tv)  # (2 << g) - 1: bits 0..g set, q_v = [g >= v]
    m2 = _raw2(*_m2(full["m2"], n), n)
    out = {"T": T, "M2": torch.from_numpy(np.take((mono or LT2).prod_words, m2))}
    if mono is None:
        out["rx"], rx = alloc_words(np.uint8, (_nplane(n),))
        rx[:] = np.packbits(bit40(r), bitorder="little")
    return out


def _level1(P, c, m, n):
    """Level 1 and the masking of round 2: this party's share of the raw (a, b) pairs of
    the ten groups xor m2, in the wire layout (the low 16 of the 20 bits (n,) int16, the
    top 4 two elements a byte (ceil(n / 2),) uint8). Group g's pair is in bits 2g, 2g + 1
    of the 20; super-group s is bits 10 s to 10 s + 9."""
    y = view_words(m["T"], np.uint16, (NGROUPS, n)) >> _nibbles(c)
    y &= 3
    y <<= _SH2
    mlo, mhi = _m2(m["m2"], n)
    lo = mlo ^ y[0]
    for g in range(1, 8):
        lo ^= y[g]
    h = np.empty(2 * _nhalf(n), np.uint8)
    h[n:] = 0
    np.bitwise_or(y[8], y[9], out=h[:n], casting="unsafe")
    hi = h[1::2] << 4
    hi |= h[0::2]
    hi ^= mhi
    return [torch.from_numpy(lo.view(np.int16)), torch.from_numpy(hi)]


def _round2_wire(P, n):
    if P.meta:
        return [P.empty((n,), torch.int16), P.empty((_nhalf(n),), torch.uint8)]
    return None


def lt_rounds(P, c, m):
    """Rounds 2 and 3 of comparisons [c_{0..39} < r_{0..39}] for public c (n,): level 1
    locally, round 2 for each super-group's (G, P), round 3 opens (rho xor Gt, Pt, Gb)
    masked by m3, as three bit planes. Returns the opened planes (3, ceil(n / 8)) uint8;
    the caller finishes arithmetically or in XOR (see `_truth_table`)."""
    n = c.shape[0]
    u2 = _round2_wire(P, n) or _level1(P, c, m, n)
    e2 = yield from open_mixed(P, [(u, "xor") for u in u2])
    if P.meta:
        u3 = P.empty((3, _nplane(n)), torch.uint8)
    else:
        e = _raw2(e2[0].numpy().view(np.uint16), e2[1].numpy(), n)
        W = np.empty((3, n), np.int64)
        np.take(LT2.coef_words[0], e[1], out=W[0], mode="clip")  # G top
        np.take(LT2.coef_words[1], e[1], out=W[1], mode="clip")  # P top
        np.take(LT2.coef_words[0], e[0], out=W[2], mode="clip")  # G bottom
        M = view_words(m["M2"], np.int64, (2, n))
        W[:2] &= M[1]
        W[2] &= M[0]
        u = np.packbits(_parity(W), axis=-1, bitorder="little")
        u[0] ^= mask_planes(m["rx"], n, 1)[0]  # w = rho xor Gt
        u ^= mask_planes(m["m3"], n, 3)
        u3 = torch.from_numpy(u)
    (e3,) = yield from open_mixed(P, [(u3, "xor")])
    if P.meta:
        return e3
    return e3.numpy()


def _lt_zero(P, x, ys, same):
    """sign_bit on flat x (n,): ys[k] (n, ...) are the mult factors, same[k] whether
    ys[k] is x itself (then its mask is -r and its eps is c - 2^40, both free)."""
    n = x.shape[0]
    random, derived = lt_parts(n)
    random = [Part("r", (n,))] + random
    derived.append(Part("D", (4, n)))
    for k, y in enumerate(ys):
        ysh = tuple(y.shape)
        if not same[k]:
            random.append(Part(f"a{k}", ysh))
        derived.append(Part(f"Da{k}", (4,) + ysh))

    def derive(full):
        r = full["r"]
        out = lt_derive(r, full)
        D = torch.from_numpy(_rows(_SIGN_DEAL, plane_code(mask_planes(full["m3"], n, 3), n)))  # (4, n): v[j]
        out["D"] = D
        for k, y in enumerate(ys):
            if same[k]:  # a = -r
                out[f"Da{k}"] = torch.mul(D, r).neg_()
            else:
                out[f"Da{k}"] = unsqueeze_right(D, y.dim() - 1) * full[f"a{k}"]
        return out

    m = P.material.get("sign", random, derived, derive)

    # round 1: c = x + 2^40 + r, and eps = y - a for the other factors
    full_c = any(same)
    c_share = x + m["r"]
    if P.leader and not P.meta:
        c_share += 1 << (L - 1)
    items = [(c_share, "ring" if full_c else "low")]
    for k, y in enumerate(ys):
        if not same[k]:
            items.append((y - m[f"a{k}"], "ring"))
    opened = yield from open_mixed(P, items)
    c, eps_list = opened[0], opened[1:]
    e3 = yield from lt_rounds(P, c, m)
    if P.meta:
        return P.empty((n,)), [P.empty(y.shape) for y in ys]

    # s = c_40 xor t, t = e0 xor v[e1 + 2 e2]: [x < 0] = f xor v = f + (1 - 2f) v with the
    # public f = 1 xor c_40 xor e0, and [x < 0] y = f y + eps ([x < 0] - f) + (1 - 2f) [v a]
    code = plane_code(e3, n)
    sel = torch.from_numpy(code >> 1).to(torch.int64).unsqueeze(0)  # e1 + 2 e2
    code &= 1
    code ^= bit40(c)
    code ^= 1
    f = torch.from_numpy(code).to(torch.int64)
    g = 1 - 2 * f
    bit = torch.gather(m["D"], 0, sel)[0].mul_(g)
    if P.leader:
        bit += f
        bf = bit - f  # [x < 0] - f
    else:
        bf = bit
    prods = []
    it = iter(eps_list)
    for k, y in enumerate(ys):
        extra = y.dim() - 1
        Da = m[f"Da{k}"]
        va = torch.gather(Da, 0, unsqueeze_right(sel, extra).expand((1,) + tuple(Da.shape[1:])))[0]
        if same[k]:
            q = va.mul_(g)
            q.addcmul_(f, y)
            q.addcmul_(c.sub_(1 << (L - 1)), bf)  # eps = c - 2^40 (c is not used again)
        else:
            q = va.mul_(unsqueeze_right(g, extra))
            q += unsqueeze_right(f, extra) * y
            q += next(it) * unsqueeze_right(bf, extra)
        prods.append(q)
    return bit, prods


def _dot(coef, M):
    """sum_k coef[k] M[k] over the first dim of (k, n) tensors, M consumed (in place)."""
    acc = M[0].mul_(coef[0])
    for k in range(1, coef.shape[0]):
        acc.addcmul_(coef[k], M[k])
    return acc


def zero_bit(P, x):
    """[x == 0] as an arithmetic share with scale 1, for |x| < 2^40 ring units. 3 rounds."""
    shape = tuple(x.shape)
    n = math.prod(shape)
    x = x.reshape(n)
    random, derived = lt_parts(n, 2, rho=False)
    random = [Part("r", (n,))] + random
    derived.append(Part("M3", (EQ3.K, n)))

    def derive(full):
        out = lt_derive(full["r"], full, EQ2)
        m3 = plane_code(mask_planes(full["m3"], n, 2), n)
        out["M3"] = torch.from_numpy(_rows(_ZERO_DEAL, m3))
        return out

    m = P.material.get("zero", random, derived, derive)
    (c,) = yield from open_mixed(P, [(x + m["r"], "low")])  # x == 0 iff c = r mod 2^40
    u2 = _round2_wire(P, n) or _level1(P, c, m, n)
    e2 = yield from open_mixed(P, [(u, "xor") for u in u2])
    if P.meta:
        u3 = P.empty((2, _nplane(n)), torch.uint8)
    else:
        e = _raw2(e2[0].numpy().view(np.uint16), e2[1].numpy(), n)
        W = np.take(EQ2.coef_words[0], e, mode="clip")
        W &= view_words(m["M2"], np.int64, (2, n))
        u = np.packbits(_parity(W), axis=-1, bitorder="little")
        u ^= mask_planes(m["m3"], n, 2)
        u3 = torch.from_numpy(u)
    (e3,) = yield from open_mixed(P, [(u3, "xor")])
    if P.meta:
        return P.empty(shape)
    C = torch.from_numpy(_rows(_ZERO_COEF, plane_code(e3.numpy(), n)))
    z = _dot(C[1:], m["M3"])
    if P.leader:
        z += C[0]
    return z.reshape(shape)


def relu_ring(P, x):
    """Ring share of relu(x) = x - [x < 0] x, exact, for |x| < 2^40 ring units; 3 rounds."""
    _, (neg,) = yield from sign_bit(P, x, [x])
    return x - neg


