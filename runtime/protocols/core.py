"""The protocol core: exchanges, protocol registration, and composing protocols.

A protocol is a generator: ``got = yield Ex(sends, recvs)`` is one message exchange
(one round), ``got[src]`` the list of tensors that arrived from party ``src``; its
``return`` value is the node's result. Protocols are registered against the op
definitions of ``planc.ir.ops`` (``@protocol(OP.relu)``), never by name.

Several exchanges taken in the same round are merged into one (``merge``), and the
replies split back (``split``): the interpreter does this for independent nodes of a
wave, and ``par`` for sub-protocols of one node (as MP-SPDZ merges its opens). Nothing
here knows the interpreter; the interpreter imports this module, never the reverse.
"""
from __future__ import annotations

from dataclasses import dataclass

from planc.ir.ops import call_site, register


@dataclass
class Ex:
    """One exchange: tensors to send per peer, (shape, dtype) to receive per peer."""

    sends: dict
    recvs: dict


def protocol(*defs):
    """Decorator: the secret-shared protocol of each op in `defs` (op definitions)."""
    return register("protocol", *defs, where=call_site(1))


def bound(op, abs_err: float, rel_err: float, domain: str, rounds: str = ""):
    """State op's error bound: |result - f(x)| <= abs_err + rel_err |f(x)| for the
    fixed-point x the protocol receives, on `domain`; tests measure it."""
    return register("bound", op, where=call_site(1))(Bound(abs_err, rel_err, domain, rounds))


@dataclass(frozen=True)
class Bound:
    abs: float
    rel: float
    domain: str
    rounds: str = ""

    def __str__(self):
        rel = f" + {_pow2(self.rel)} |f(x)|" if self.rel else ""
        return f"|error| <= {_pow2(self.abs)}{rel} for {self.domain}"


def _pow2(v: float) -> str:
    import math

    if v > 0 and math.log2(v).is_integer():
        return f"2^{int(math.log2(v))}"
    return f"{v:g}"


def merge(exs):
    """One Ex carrying all of `exs`, and the index that ``split`` needs."""
    sends, recvs, index = {}, {}, []
    for ex in exs:
        mine = {}
        for d, ts in ex.sends.items():
            sends.setdefault(d, []).extend(ts)
        for s, specs in ex.recvs.items():
            lst = recvs.setdefault(s, [])
            mine[s] = (len(lst), len(specs))
            lst.extend(specs)
        index.append(mine)
    return Ex(sends, recvs), index


def split(got, index):
    """The replies to a merged Ex, one dict per original exchange."""
    return [{s: got[s][a:a + n] for s, (a, n) in mine.items()} for mine in index]


def par(*gens):
    """Run protocol generators side by side, lock-step: each round carries the exchange
    of every one still running. Returns their results in order."""
    results = [None] * len(gens)
    live = []
    for i, g in enumerate(gens):
        try:
            live.append((i, g, next(g)))
        except StopIteration as stop:
            results[i] = stop.value
    while live:
        merged, index = merge([ex for _, _, ex in live])
        got = yield merged
        parts = split(got, index)
        nxt = []
        for (i, g, _), part in zip(live, parts):
            try:
                nxt.append((i, g, g.send(part)))
            except StopIteration as stop:
                results[i] = stop.value
        live = nxt
    return results


def local(value):
    """A result that needs no communication, as a protocol that returns at once."""
    return value
    yield  # pragma: no cover
