"""Building blocks shared by the protocols: opening, free sharing, truncation.

Every function that communicates is a generator to be used with ``yield from``; one
``yield`` is one round.
"""
from __future__ import annotations

import torch

from .core import Ex
from ..material import Part
from ..party import ABSENT, Party, Shared


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


def truncate(P: Party, x: torch.Tensor, bits: int | None = None):
    """Divide a sharing by 2^bits (default f), rounding down up to one unit.

    Two parties (SecureML): party 0 shifts its share, party 1 shifts the negation of its
    share and negates back; no message. The result is off by at most 1 in the last place,
    except with probability about |x| / 2^63 per element, where a share wraps and the
    result is wrong by ~2^(64-f): for |x| < 2^40 (values below 2^24 = 16.7 M before the
    shift, with f = 16) that is below 2^-23 per element. Shares are uniform because
    they come from a zero sharing or a Beaver opening.

    More parties: the dealer gives [r] and [r >> bits] for a uniform r; parties open
    z = x + r (one round) and take (z >> bits) - [r >> bits]; the same wrap probability
    applies, and the error is at most 1 unit.
    """
    bits = P.frac if bits is None else bits
    if P.nparties == 2:
        if P.meta:
            return x
        if P.rank == 0:
            return x >> bits
        return -((-x) >> bits)
    shape = tuple(x.shape)
    m = P.material.get("trunc", [Part("r", shape)], [Part("rt", shape)], lambda r: {"rt": r["r"] >> bits})
    (z,) = yield from open_all(P, [x + m["r"]])
    if P.meta:
        return x
    out = -m["rt"]
    if P.leader:
        out = out + (z >> bits)
    return out


# Pending bits beyond f. |data| = |value| * 2^(f + extra), and a 2-party truncation fails
# with probability about |data| / 2^63: f + 4 keeps a conv -> avg_pool chain (f + 2) lazy
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
