"""share and reveal: the only ways into and out of secret.

share: PRZS — party i's share is sum_{j>i} PRG(s_ij) - sum_{j<i} PRG(s_ji), and the
owner adds its encoded value; the shares sum to the value and nothing is sent.

reveal to k: every other party sends its share to k, which adds them and decodes
(one round, (n-1) * 8 bytes per element into k). reveal to all: every party sends
its share to every other (one round). A private<j> value revealed to k is simply sent
by j in the clear; nobody else learns anything.

reveal to a client (a plan party that does not compute: index >= nparties): no party
learns anything and nothing is sent among them; each keeps its share (or, for a value
private to it, the value) for the client, which collects them and adds them up
(runtime/clients.py). A value revealed to all is kept for every client as well.
"""
from __future__ import annotations

from planc.ir.ops import OP

from .core import ABSENT, Ex, Shared, protocol
from ..dtypes import TORCH_DTYPE
from .common import open_all, open_to, shared


@protocol(OP.share)
def share(P, node, args, a):
    (x,) = args
    return shared(P, x, node.operands[0].type.vis, node.result.type.shape)
    yield  # pragma: no cover


@protocol(OP.reveal)
def reveal(P, node, args, a):
    (x,) = args
    to = a["to"]
    t = node.result.type
    dtype = TORCH_DTYPE[t.dtype]
    name = node.result.name
    if P.is_client(to):  # every party and the dealer take this branch: no exchange
        if isinstance(x, Shared):
            P.keep_for_client(to, name, {"share": x.data, "extra": x.extra, "dtype": t.dtype})
        elif P.rank == node.operands[0].type.vis.owner:
            P.keep_for_client(to, name, {"plain": x.to(dtype), "dtype": t.dtype})
        return ABSENT
    if to == -1:
        v = yield from reveal_all(P, node, x, dtype)
        for c in P.clients:
            P.keep_for_client(c, name, {"plain": v, "dtype": t.dtype})
        return v
    if isinstance(x, Shared):
        got = yield from open_to(P, [x.data], to)
        # a pending truncation is simply part of the scale we divide by: exact
        return ABSENT if got is None else P.dec(got[0], dtype, extra=x.extra)
    # every party yields exactly once, involved or not: schedules (and so the order in
    # which material is used) must be the same at every party and at the dealer
    owner = node.operands[0].type.vis.owner
    if P.meta:
        yield Ex({}, {})
        return ABSENT
    if P.rank == owner:
        yield Ex({to: [x.to(dtype)]}, {})
        return ABSENT
    if P.rank == to:
        got = yield Ex({}, {owner: [(t.shape, dtype)]})
        return got[owner][0]
    yield Ex({}, {})
    return ABSENT


def reveal_all(P, node, x, dtype):
    """The value of a reveal to all, at every computing party (the dealer: shape-only).
    A private value: its owner sends it to every other party."""
    if isinstance(x, Shared):
        (v,) = yield from open_all(P, [x.data])
        return P.dec(v, dtype, extra=x.extra)
    owner = node.operands[0].type.vis.owner
    t = node.result.type
    if P.meta:
        yield Ex({}, {})
        return P.empty(t.shape, dtype)
    if P.rank == owner:
        yield Ex({j: [x.to(dtype)] for j in range(P.nparties) if j != owner}, {})
        return x.to(dtype)
    got = yield Ex({}, {owner: [(t.shape, dtype)]})
    return got[owner][0]
