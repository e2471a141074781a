"""Comparisons and selection: relu, gt/lt/ge/le, eq, where, max/argmax, max_pool2d.

They rest on the bit extractions of signbit.py (sign_bit: [x < 0] in 3 rounds, with free
products of the bit; the zero test for eq), whose docstring has the protocol and its costs.

Ops built on them (f: fractional bits; a result bit b is stored as b * 2^f):

    lt(x, y) = sign_bit(x - y)          gt(x, y) = sign_bit(y - x)
    ge = 1 - lt,  le = 1 - gt           eq(x, y) = zero_bit(x - y)
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
import sys
from itertools import combinations

import numpy as np
import torch
import torch.nn.functional as F

from planc.ir.types import SECRET as SECRET_VIS

from planc.ir.ops import OP

from ..material import Part
from .beaver import product
from .common import lead, shared, truncate
from .core import Shared, protocol
from .fss import fss_relu, fss_sign_bit
from .signbit import (
    L, PAD, XOR_DEAL, Monomials, alloc_words, bit40, lt_derive, lt_parts, lt_rounds, mask_planes, nwords,
    open_mixed, plane_code, relu_ring, sign_bit, unsqueeze_right, view_words, zero_bit,
)

assert sys.byteorder == "little"  # byte views of ring elements below


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
    outer = tuple(v.shape[:-1])
    B = math.prod(outer)
    race = _Race(v.reshape(B, n), track)
    for k in _stages(n, B)[1]:
        if k == 2:
            yield from _pair_stage(P, race)
        else:
            yield from _group_stage(P, race, k)
    out = race.v[:, 0].reshape(outer)
    if track == "index":
        if race.idx is None:  # a single candidate
            return out, P.empty(outer) if P.meta else torch.zeros(outer, dtype=torch.int64)
        return out, race.idx[:, 0].reshape(outer)
    if track == "onehot":
        if P.meta:
            return out, P.empty(outer + (n,))
        if race.oh is None:
            return out, lead(P, torch.ones(outer + (1,), dtype=torch.int64))
        oh = torch.zeros(B, n, dtype=torch.int64)
        keep = race.pos[0] >= 0
        oh[:, race.pos[0][keep]] = race.oh[:, 0, keep]
        return out, oh.reshape(outer + (n,))
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
            idx = lead(P, torch.arange(0, 2 * h, 2).expand(B, h)) + s
        else:
            idx = ia + prods[1]
        if m % 2:
            if P.meta:
                last = P.empty((B, 1))
            elif race.idx is None:
                last = lead(P, torch.full((B, 1), m - 1, dtype=torch.int64))
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
            oh = torch.stack([lead(P, torch.ones_like(s)) - s, s], -1)
        else:
            oh = torch.cat([oa - prods[1], prods[2]], -1)
        if m % 2:
            pos = torch.cat([pos, F.pad(race.pos[m - 1:], (0, w), value=-1)], 0)
            if P.meta:
                last = P.empty((B, 1, 2 * w))
            elif race.oh is None:
                last = lead(P, F.pad(torch.ones((B, 1, 1), dtype=torch.int64), (0, 1)))
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
    random, derived = lt_parts(npairs)
    random.append(Part("mu", (npairs,), "xor"))
    derived.append(Part("M3x", (nwords(npairs, 1),), "xor64"))
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
        out = lt_derive(R, full)
        idx = plane_code(mask_planes(full["m3"], npairs, 3), npairs).astype(np.intp)
        out["M3x"], xw = alloc_words(np.uint8, (npairs,))
        np.take(XOR_DEAL, idx, out=xw, mode="clip")
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
    opened = iter((yield from open_mixed(P, items)))
    eps = []
    for c in range(len(classes)):
        eps.append((next(opened), next(opened) if pay_i else None, next(opened) if pay_o else None))
    if P.meta:
        cpub = P.empty((npairs,))
    else:
        cpub = torch.cat([(e[0][..., pairs[c][0]] - e[0][..., pairs[c][1]]).reshape(-1) for c, e in enumerate(eps)])
        cpub = cpub + (1 << (L - 1))

    # rounds 2 and 3: all comparisons, finished in XOR: [x < 0] = not c_40 xor rho xor B
    e3 = yield from lt_rounds(P, cpub, mat)
    if P.meta:
        sx = P.empty((npairs,), torch.bool)
    else:
        # [v_i < v_j] = not s = f xor v[e1 + 2 e2], f = 1 xor c_40 xor e0 (see signbit.sign_bit)
        code = plane_code(e3, npairs)
        sx = view_words(mat["M3x"], np.uint8, (npairs,)) >> (code >> 1)
        if P.leader:
            sx ^= code
            sx ^= bit40(cpub)
            sx ^= 1
        sx &= 1
        sx = torch.from_numpy(sx.view(bool))

    # round 4: the AND of each candidate's wins, with its products, arithmetically
    (f,) = yield from open_mixed(P, [(sx ^ mat["mu"], "xor")])
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
        Wi = lead(P, coef[0])
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
    acc = e_y * unsqueeze_right(Wi, ex) + unsqueeze_right(coef[0], ex) * a_y
    for T, ct in coef.items():
        if T:
            acc = acc + unsqueeze_right(ct, ex) * Wy[..., ix[T]]
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
        return x, Shared(lead(P, torch.full((), P.scale, dtype=torch.int64)) if not P.meta else P.empty(()))
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


@protocol(OP.max_)
def max_(P, node, args, a):
    """Max (over dim, or all elements) by `_tournament`: exact for |x| < 2^39 ring units;
    rounds from `_stages` (8 for 10 values, 20 for 1000; 3 per halving on big tensors)."""
    return (yield from _reduced(P, node, args, None))


@protocol(OP.argmax)
def argmax(P, node, args, a):
    """Index of the first maximum, as i * 2^f: exact on the fixed-point encodings (ties
    within 2^-f of each other in the floats may pick another index); |x| < 2^39 ring
    units. Same rounds as max: the index rides along as one more product per stage."""
    return (yield from _reduced(P, node, args, "index"))


@protocol(OP.max_pool2d)
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
        bit = lead(P, torch.ones_like(bit)) - bit
    return Shared((bit << P.frac).reshape(node.result.type.shape))


def _order(P, node, args, swap: bool, negate: bool, a=None):
    """[x - y < 0] (swap: [y - x < 0]), or 1 minus it (negate): one sign_bit, 3 rounds,
    exact on the encodings for |x - y| < 2^40 ring units (method="fss": 1 round, fss.py)."""
    if (a or {}).get("method") == "fss":
        s = yield from fss_sign_bit(P, _diff(P, node, args, swap), node)
        return _as_result(P, node, s, negate=negate)
    s, _ = yield from sign_bit(P, _diff(P, node, args, swap))
    return _as_result(P, node, s, negate=negate)


@protocol(OP.lt)
def lt(P, node, args, a):
    """lt(x, y) = [x - y < 0]."""
    return (yield from _order(P, node, args, swap=False, negate=False, a=a))


@protocol(OP.gt)
def gt(P, node, args, a):
    """gt(x, y) = [y - x < 0]."""
    return (yield from _order(P, node, args, swap=True, negate=False, a=a))


@protocol(OP.ge)
def ge(P, node, args, a):
    """ge(x, y) = 1 - [x - y < 0]."""
    return (yield from _order(P, node, args, swap=False, negate=True, a=a))


@protocol(OP.le)
def le(P, node, args, a):
    """le(x, y) = 1 - [y - x < 0]."""
    return (yield from _order(P, node, args, swap=True, negate=True, a=a))


@protocol(OP.eq)
def eq(P, node, args, a):
    """eq(x, y) = [x - y == 0] by zero_bit: 3 rounds, exact on the encodings for
    |x - y| < 2^40 ring units."""
    z = yield from zero_bit(P, _diff(P, node, args))
    return _as_result(P, node, z)


@protocol(OP.relu)
def relu(P, node, args, a):
    """relu(x) = x - [x < 0] x: one sign_bit with mult=[x]; exact for |x| < 2^40 ring
    units; 3 rounds, about 11 bytes per element per peer."""
    (x,) = args
    x = shared(P, x, node.operands[0].type.vis, node.operands[0].type.shape)
    if a.get("method") == "fss":  # 2 rounds (fss.py)
        return Shared((yield from fss_relu(P, x.data, node)))
    out = yield from relu_ring(P, x.data)
    return Shared(out)


@protocol(OP.where)
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

