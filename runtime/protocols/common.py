"""Building blocks shared by the protocols: opening, free sharing, truncation.

Every function that communicates is a generator to be used with ``yield from``; one
``yield`` is one round.

Truncation (the one implementation; the approximation engine uses it too)
--------------------------------------------------------------------------
Dividing a sharing of x by 2^k, rounding down up to one unit:

- 2 parties (SecureML), ``truncate_local``: party 0 shifts its share, party 1 shifts
  the negation of its share and negates back; no message.
- More parties (dealer-assisted), ``truncation_mask`` / ``truncated_opening``: the
  dealer gives [r] and [r >> k] for a uniform r; the parties open z = x + r (one round)
  and take (z >> k) - [r >> k], that is e = z >> k public plus the share m = -[r >> k]
  of a mask the dealer knows (the engine keeps them apart, for monomials).

Both are off by at most 1 in the last place, except with probability about |x| / 2^63
per element (x in ring units, i.e. |value| 2^(scale)), where a share (or x + r) wraps and
the result is wrong by ~2^(64-k): for |x| < 2^40 (values below 2^24 = 16.7 M before a
truncation by f = 16 bits) that is below 2^-23 per element. Shares are uniform because
they come from a zero sharing, a Beaver opening or a masked opening.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .core import ABSENT, Ex, Shared
from ..material import Part

if TYPE_CHECKING:
    from ..party import Party


def others(P: Party):
    return [j for j in range(P.nparties) if j != P.rank]


def _add_received(P: Party, xs, got):
    """My shares plus everyone else's: the opened values (XOR for bits)."""
    if P.meta:
        return [P.empty(x.shape, x.dtype) for x in xs]
    out = [x.clone() for x in xs]
    for j in others(P):
        for o, t in zip(out, got[j]):
            if o.dtype == torch.bool:
                o ^= t
            else:
                o += t
    return out


def open_all(P: Party, xs: list[torch.Tensor]):
    """Reveal several arithmetic sharings to every party in one round.

    Each party sends its shares to every other party and adds what it receives:
    x = sum_i x_i (mod 2^64)."""
    specs = [(tuple(x.shape), x.dtype) for x in xs]
    got = yield Ex({j: xs for j in others(P)}, {j: specs for j in others(P)})
    return _add_received(P, xs, got)


def open_to(P: Party, xs: list[torch.Tensor], k: int):
    """Reveal sharings to party k only: the others send, k adds; returns None elsewhere."""
    specs = [(tuple(x.shape), x.dtype) for x in xs]
    if P.rank == k:
        got = yield Ex({}, {j: specs for j in others(P)})
        return _add_received(P, xs, got)
    yield Ex({k: xs}, {})
    return None


def shared(P: Party, v, vis, shape) -> Shared:
    """Any operand as a sharing, without communication: shares stay shares, a public
    value is held by party 0, a private<k> value is added by k to a zero sharing."""
    if isinstance(v, Shared):
        return v
    if vis.is_public:
        return P.public_share(P.enc(v) if not P.meta else P.empty(shape), shape)
    owner = vis.owner
    return P.share_plain(None if v is ABSENT else v, owner, shape)


def lead(P: Party, v: torch.Tensor) -> torch.Tensor:
    """A public ring value as party 0's share (the others hold 0)."""
    return v if P.leader else torch.zeros_like(v)


# ---------------------------------------------------------------- truncation (see the module docstring)


def truncate_local(P: Party, x: torch.Tensor, bits: int) -> torch.Tensor:
    """2 parties: a sharing of x divided by 2^bits, locally (SecureML)."""
    if P.meta:
        return x
    if P.rank == 0:
        return x >> bits
    return -((-x) >> bits)


def truncation_mask(r: torch.Tensor, bits: int) -> torch.Tensor:
    """Dealer: the derived part [r >> bits] of a truncating opening of x + r."""
    return r >> bits


def truncated_opening(z: torch.Tensor, rt: torch.Tensor, bits: int):
    """More parties: after opening z = x + r, (e, m) with x / 2^bits = e + M up to one
    unit: e = z >> bits public, m = -rt this party's share of M = -(r >> bits)."""
    return z >> bits, -rt


def truncate(P: Party, x: torch.Tensor, bits: int | None = None):
    """Divide a sharing by 2^bits (default f), rounding down up to one unit (error and
    failure probability in the module docstring): local with 2 parties, one round with
    more. A generator."""
    bits = P.frac if bits is None else bits
    if P.nparties == 2:
        return truncate_local(P, x, bits)
    shape = tuple(x.shape)
    m = P.material.get("trunc", [Part("r", shape)], [Part("rt", shape)],
                       lambda r: {"rt": truncation_mask(r["r"], bits)})
    (z,) = yield from open_all(P, [x + m["r"]])
    if P.meta:
        return x
    e, mask = truncated_opening(z, m["rt"], bits)
    return mask + lead(P, e)


# Pending bits beyond f. |data| = |value| * 2^(f + extra), and a truncation fails with
# probability about |data| / 2^63: f + 4 keeps a conv -> avg_pool chain (f + 2) lazy
# without making that probability worse than truncating every product at once.
MAX_EXTRA = 20


def settle(P: Party, s: Shared):
    """`s` at the standard scale 2^f: the pending truncation, done now."""
    if not isinstance(s, Shared) or not s.extra:
        return s
    t = yield from truncate(P, s.data, s.extra)
    return Shared(t)


def align(*xs: Shared) -> list[Shared]:
    """Sharings brought to one scale by exact left shifts (no truncation, no message)."""
    top = max(x.extra for x in xs)
    return [x if x.extra == top else Shared(x.data << (top - x.extra), top) for x in xs]


def power_of_two_exponent(c) -> int | None:
    """k when the public scalar c is exactly 2^-k for 0 <= k <= 16, else None."""
    c = float(c)
    for k in range(17):
        if c == 2.0 ** -k:
            return k
    return None


def scale_public(P: Party, s: Shared, c: torch.Tensor, op=torch.mul):
    """[x] * c for a public fractional c, truncation left pending: a c of 2^-k only adds
    k to the pending bits; any other c is encoded with f bits, adding f."""
    if c.dim() == 0 and op is torch.mul:
        k = power_of_two_exponent(c) if not P.meta or c.device.type != "meta" else None
        if k is not None:
            if s.extra + k > MAX_EXTRA:
                s = yield from settle(P, s)
            out = Shared(s.data, s.extra + k)
            if not P.lazy:
                out = yield from settle(P, out)
            return out
    if s.extra + P.frac > MAX_EXTRA:
        s = yield from settle(P, s)
    enc = P.empty(c.shape) if P.meta else P.enc(c)
    out = Shared(op(s.data, enc), s.extra + P.frac)
    if not P.lazy:
        out = yield from settle(P, out)
    return out
