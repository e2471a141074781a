"""share and reveal: the only ways into and out of secret.

share: PRZS — party i's share is sum_{j>i} PRG(s_ij) - sum_{j<i} PRG(s_ji), and the
owner adds its encoded value; the shares sum to the value and nothing is sent.

reveal to k: every other party sends its share to k, which adds them and decodes
(one round, (n-1) * 8 bytes per element into k). reveal to all: every party sends
its share to every other (one round). A private<j> value revealed to k is simply sent
by j in the clear; nobody else learns anything.
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
    if isinstance(x, Shared):
        if to == -1:
            (v,) = yield from open_all(P, [x.data])
        else:
            got = yield from open_to(P, [x.data], to)
            if got is None:
                return ABSENT
            v = got[0]
        # a pending truncation is simply part of the scale we divide by: exact
        return P.dec(v, dtype, extra=x.extra)
    # every party yields exactly once, involved or not: schedules (and so the order in
    # which material is used) must be the same at every party and at the dealer
    owner = node.operands[0].type.vis.owner
    spec = [(t.shape, dtype)]
    dests = [j for j in range(P.nparties) if j != owner] if to == -1 else [to]
    if P.meta:
        yield Ex({}, {})
        return ABSENT if to != -1 else P.empty(t.shape, dtype)
    if P.rank == owner:
        yield Ex({d: [x.to(dtype)] for d in dests}, {})
        return x.to(dtype) if to == -1 else ABSENT
    if P.rank in dests:
        got = yield Ex({}, {owner: spec})
        return got[owner][0]
    yield Ex({}, {})
    return ABSENT
