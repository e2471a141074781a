"""Comparisons by function secret sharing: the sign bit and relu in ONE round (2 parties).

Selected per node by ``method="fss"`` on lt/gt/ge/le and relu (compare.py dispatches;
the default "bits" is signbit.py's 3-round protocol). As AriaNN / Orca / SIGMA: the
dealer gives the two parties the keys of a distributed comparison function (dcf.py),
so that the comparison of a masked opening against the mask is evaluated locally.

fss_sign_bit: [x < 0] for |x| < 2^40 ring units (the range of sign_bit)
------------------------------------------------------------------------
Dealer: r uniform in Z_2^64, arithmetic shares [r]; rho = r_40 (bit 40) as arithmetic
shares [rho]; a DCF (n = 40 bits) with alpha = r mod 2^40 and beta = 1 - 2 rho.

Round 1: open c = x + 2^40 + r. With x' = x + 2^40 in [0, 2^41) (|x| < 2^40), x' =
(c - r) mod 2^41: subtracting the low 40 bits borrows B = [c mod 2^40 < r mod 2^40], so

    s = msb(x') = bit 40 of x' = c_40 xor rho xor B,      [x < 0] = [x' < 2^40] = 1 - s.

Only c mod 2^41 is used: each party sends the low 6 bytes of its share (c is uniform:
it reveals nothing). Then locally, with c' = c mod 2^40 public:

    Eval_0(c') + Eval_1(c') = beta [c' < alpha] = (1 - 2 rho) B,
    rho xor B = rho + (1 - 2 rho) B            => [rho xor B] = [rho] + Eval_b(c'),
    s = c_40 xor (rho xor B) = c_40 + (1 - 2 c_40) (rho xor B)   (c_40 public),

and [x < 0] = 1 - [s]: an arithmetic share of the exact bit (scale 1), one round.

fss_relu: relu(x) = [x >= 0] x, ONE round
-----------------------------------------
The same opening, c in full (8 bytes: x = c - 2^40 - r in the ring), and a DCF with two
output words (dcf.py): beta = (1 - 2 rho, (1 - 2 rho) r), so that with u = rho xor B

    [u] = [rho] + Eval_b(c')_0,     [u r] = [rho r] + Eval_b(c')_1
        since u r = rho r + (1 - 2 rho) r B, the dealer adding shares of rho r.

s = [x >= 0] = c_40 + (1 - 2 c_40) u and relu(x) = s x = s (c - 2^40) - s r, where

    [s]   = c_40 + (1 - 2 c_40)[u],       [s r] = c_40 [r] + (1 - 2 c_40)[u r]:

public coefficients times shares, exact. The product of the bit with x needs no second
opening because x's mask is r, which the dealer knows: the DCF carries the bit times r.

Costs per element (2 parties), n = 40:
- sign bit: 1 round, 6 B sent per party; relu: 1 round, 8 B per party;
- dealer: DCF correction words 40 (16 + 8) + 8 = 968 B to EACH party (sharing "dealt"
  in material.py: the same copy to both), plus the last party's corrections of [rho]
  (8 B): 976 B to the last party and 968 B to the other for the sign bit; relu's two-word
  DCF 40 (16 + 16) + 16 = 1296 B to each and [rho], [rho r] (16 B): 1312 / 1296 B; root
  seeds and [r] come from seeds (free).
- work: Eval is 2 AES blocks per level per element (80 blocks), Gen 8 per level.
Requests cover at most BLOCK elements each so that the dealer's chunks (material.py)
bound its memory on big tensors; their openings still travel in the one round.

Exactly 2 computing parties: a DCF is a two-key object (with more parties the key
holders would have to be two of them and the rest reshare: not done); other counts are
refused with the node and the party named.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import PlanRuntimeError
from ..material import Part
from .common import lead
from .dcf import cw_rows, eval_dcf, gen_dcf
from .signbit import L, open_mixed

__all__ = ["BLOCK", "NBITS", "fss_relu", "fss_sign_bit"]

NBITS = L - 1  # the DCF compares c mod 2^40 with r mod 2^40
BLOCK = 1 << 16  # elements per material request: ~64 MB of correction words
_LOW = (1 << NBITS) - 1


def _need_two(P, node, what):
    if P.nparties != 2:
        op = node.op if node is not None else what
        raise PlanRuntimeError(node, P.name, f"{op} with method='fss' needs exactly 2 computing parties (a DCF "
                                             f"has two keys), the plan has {P.nparties}; use method='bits'")


def _blocks(n):
    return [(a, min(n, a + BLOCK)) for a in range(0, n, BLOCK)] or [(0, 0)]


def _request(P, n, relu):
    """One block's material: [r], the root seeds (own:0, own:1), [rho], the dealt DCF
    correction words (two output words for relu) and, for relu, [rho r]."""
    random = [Part("r", (n,)), Part("k0", (n, 2), "own:0"), Part("k1", (n, 2), "own:1")]
    derived = [Part("rho", (n,)), Part("cw", (cw_rows(NBITS, 2 if relu else 1), n), "dealt")]
    if relu:
        derived.append(Part("rhor", (n,)))

    def derive(full):
        r = full["r"]
        rho = (r >> NBITS) & 1
        beta = 1 - 2 * rho
        if relu:
            beta = torch.stack([beta, beta * r])
        cw = gen_dcf((r & _LOW).numpy(), beta.numpy(), full["k0"].numpy(), full["k1"].numpy(), NBITS)
        out = {"rho": rho, "cw": torch.from_numpy(cw)}
        if relu:
            out["rhor"] = rho * r
        return out

    return P.material.get("fss_relu" if relu else "fss_sign", random, derived, derive)


def _sign(P, x, relu):
    """Round 1 on flat x (n,): the public c, this party's [u] = [rho xor B] and, for relu,
    [u r] (see the module docstring), and its share of r."""
    n = x.shape[0]
    mats = [_request(P, b - a, relu) for a, b in _blocks(n)]
    cat = (lambda k: mats[0][k]) if len(mats) == 1 else (lambda k: torch.cat([m[k] for m in mats]))
    r = cat("r")
    c_share = x + r
    if P.leader and not P.meta:
        c_share += 1 << NBITS
    (c,) = yield from open_mixed(P, [(c_share, "ring" if relu else "low")])
    if P.meta:
        return c, P.empty((n,)), (P.empty((n,)) if relu else None), r
    low = (c & _LOW).numpy()
    V = np.empty((2, n) if relu else (n,), np.int64)
    for (a, b), m in zip(_blocks(n), mats):
        if b > a:
            V[..., a:b] = eval_dcf(P.rank, m[f"k{P.rank}"].numpy(), m["cw"].numpy(), low[a:b], NBITS)
    if relu:
        return c, torch.from_numpy(V[0]).add_(cat("rho")), torch.from_numpy(V[1]).add_(cat("rhor")), r
    return c, torch.from_numpy(V).add_(cat("rho")), None, r


def _opened(P, x, node, what, relu):
    """The one round on x (any shape) and what both results are made of: (shape, c, [s],
    [s r]) with s = [x >= 0] = c_40 + (1 - 2 c_40)[u] and, for relu, [s r] = c_40 [r] +
    (1 - 2 c_40)[u r]; [s] is None on meta tensors."""
    _need_two(P, node, what)
    shape = tuple(x.shape)
    c, u, ur, r = yield from _sign(P, x.reshape(math.prod(shape)), relu=relu)
    if P.meta:
        return shape, c, None, None
    c40 = (c >> NBITS) & 1
    flip = 1 - 2 * c40
    s = u.mul_(flip).add_(lead(P, c40))
    return shape, c, s, (ur.mul_(flip).add_(c40 * r) if relu else None)


def fss_sign_bit(P, x, node=None):
    """[x < 0] as an arithmetic share (scale 1) of the exact bit, |x| < 2^40 ring units;
    x: this party's int64 ring share, any shape. A generator: ONE round."""
    shape, _, s, _ = yield from _opened(P, x, node, "sign_bit", relu=False)
    if s is None:
        return P.empty(shape)
    return lead(P, torch.ones_like(s)).sub_(s).reshape(shape)  # [x < 0] = 1 - [s]


def fss_relu(P, x, node=None):
    """Ring share of relu(x) = [x >= 0] x, exact for |x| < 2^40 ring units. ONE round."""
    shape, c, s, sr = yield from _opened(P, x, node, "relu", relu=True)
    if s is None:
        return P.empty(shape)
    return s.mul_(c - (1 << NBITS)).sub_(sr).reshape(shape)  # s x = s (c - 2^40) - s r
