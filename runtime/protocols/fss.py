"""Comparisons by function secret sharing: the sign bit in ONE round, relu in TWO (2 parties).

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

fss_relu: relu(x) = x - [x < 0] x, two rounds
---------------------------------------------
Round 1 as above but c opened in full (8 bytes: x = c - 2^40 - r in the ring). Let b =
[x < 0] (a bit, arithmetic shares b_0 + b_1 = b mod 2^64). Since lsb(b_0 + b_1) =
lsb(b_0) xor lsb(b_1), the low bits of the shares are XOR shares of b. The dealer adds a
uniform bit m as arithmetic shares [m] (again lsb([m]_j) are XOR shares of m) and [m r].
Round 2 opens e = b xor m: party j sends lsb(b_j) xor lsb(m_j), one bit (bit-packed);
e is uniform, and the sent bit is uniform to the peer (m_j is). Then

    b = e xor m = e + (1 - 2e) m,
    m x = m (c - 2^40 - r) = (c - 2^40) m - m r   =>   [m x] = (c - 2^40)[m] - [m r],
    b x = e x + (1 - 2e) m x                      =>   [b x] = e [x] + (1 - 2e)[m x],

all linear in shares with public coefficients (e, c): relu = [x] - [b x], exact.

Costs per element (2 parties), n = 40:
- sign bit: 1 round, 6 B sent per party; relu: 2 rounds, 8 B + 1 bit per party;
- dealer: DCF correction words 40 (16 + 8) + 8 = 968 B to EACH party (sharing "dealt"
  in material.py: the same copy to both), plus the last party's corrections of [rho]
  (8 B), and for relu [m], [m r] (16 B): 976 B to the last party and 968 B to the other
  for the sign bit (992 / 968 for relu); root seeds and [r] come from seeds (free).
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
    correction words and, for relu, [m], [m r] from the dealer's uniform bit m."""
    random = [Part("r", (n,)), Part("k0", (n, 2), "own:0"), Part("k1", (n, 2), "own:1")]
    derived = [Part("rho", (n,)), Part("cw", (cw_rows(NBITS), n), "dealt")]
    if relu:
        random.append(Part("u", (n,)))  # m = its low bit: independent of r (whose top bits c shows)
        derived += [Part("m", (n,)), Part("mr", (n,))]

    def derive(full):
        r = full["r"]
        rho = (r >> NBITS) & 1
        beta = 1 - 2 * rho
        cw = gen_dcf((r & _LOW).numpy(), beta.numpy(), full["k0"].numpy(), full["k1"].numpy(), NBITS)
        out = {"rho": rho, "cw": torch.from_numpy(cw)}
        if relu:
            m = full["u"] & 1
            out["m"], out["mr"] = m, m * r
        return out

    return P.material.get("fss_relu" if relu else "fss_sign", random, derived, derive)


def _sign(P, x, relu):
    """Round 1 on flat x (n,): (the bit [x < 0], the public c, the blocks' material)."""
    n = x.shape[0]
    mats = [_request(P, b - a, relu) for a, b in _blocks(n)]
    r = mats[0]["r"] if len(mats) == 1 else torch.cat([m["r"] for m in mats])
    c_share = x + r
    if P.leader and not P.meta:
        c_share += 1 << NBITS
    (c,) = yield from open_mixed(P, [(c_share, "ring" if relu else "low")])
    if P.meta:
        return P.empty((n,)), c, mats
    low = (c & _LOW).numpy()
    V = np.empty(n, np.int64)
    for (a, b), m in zip(_blocks(n), mats):
        if b > a:
            V[a:b] = eval_dcf(P.rank, m[f"k{P.rank}"].numpy(), m["cw"].numpy(), low[a:b], NBITS)
    rho = mats[0]["rho"] if len(mats) == 1 else torch.cat([m["rho"] for m in mats])
    t = torch.from_numpy(V).add_(rho)  # [rho xor B]
    c40 = (c >> NBITS) & 1
    s = t.mul_(1 - 2 * c40).add_(lead(P, c40))  # [s] = c_40 + (1 - 2 c_40)[rho xor B]
    bit = lead(P, torch.ones_like(s)).sub_(s)  # [x < 0] = 1 - [s]
    return bit, c, mats


def fss_sign_bit(P, x, node=None):
    """[x < 0] as an arithmetic share (scale 1) of the exact bit, |x| < 2^40 ring units;
    x: this party's int64 ring share, any shape. A generator: ONE round."""
    _need_two(P, node, "sign_bit")
    shape = tuple(x.shape)
    bit, _, _ = yield from _sign(P, x.reshape(math.prod(shape)), relu=False)
    return bit.reshape(shape)


def fss_relu(P, x, node=None):
    """Ring share of relu(x) = x - [x < 0] x, exact for |x| < 2^40 ring units. TWO rounds."""
    _need_two(P, node, "relu")
    shape = tuple(x.shape)
    n = math.prod(shape)
    xf = x.reshape(n)
    bit, c, mats = yield from _sign(P, xf, relu=True)
    cat = (lambda k: mats[0][k]) if len(mats) == 1 else (lambda k: torch.cat([m[k] for m in mats]))
    if P.meta:
        u = P.empty((n,), torch.bool)
    else:
        u = ((bit ^ cat("m")) & 1).to(torch.bool)  # lsb of the shares: XOR shares of b xor m
    (e,) = yield from open_mixed(P, [(u, "xor")])
    if P.meta:
        return P.empty(shape)
    e = e.to(torch.int64)
    mx = cat("m") * (c - (1 << NBITS)) - cat("mr")  # [m x] = (c - 2^40)[m] - [m r]
    bx = mx.mul_(1 - 2 * e).add_(e * xf)  # [b x] = e [x] + (1 - 2e)[m x]
    return (xf - bx).reshape(shape)
