"""The protocol core: the share type, exchanges, protocol registration, composing protocols.

Values: a secret value is a ``Shared`` (this party's additive share, with its fixed-point
scale and any pending truncation; see its docstring), a value this party does not hold
(another party's private data) is ``ABSENT``; public and own private values are plain
tensors. Every protocol, the interpreter and the approximation engine use these.

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


# ---------------------------------------------------------------- values


class _Absent:
    __slots__ = ()

    def __repr__(self):
        return "ABSENT"


ABSENT = _Absent()  # a value this party does not hold (another party's private data)


class Shared:
    """This party's additive share of a secret fixed-point tensor: the one share type.

    Invariant: summed over the parties in Z_2^64 (int64 arithmetic wraps), ``data`` is
    the value times 2^(frac + extra):

    - ``frac``: the fractional bits the value is meant to carry; ``None`` stands for the
      party's standard f (``Party.frac``), which every value between ops has;
    - ``extra``: the bits it carries beyond ``frac``, a truncation by ``extra`` bits not
      yet done (negative, inside the approximation engine only: a left shift is due).

    Between ops ``frac`` is None and ``extra`` >= 0: a product leaves f extra bits,
    linear ops carry them along and a power-of-two scale just adds to them, so one
    truncation serves a whole chain (conv -> avg_pool: one truncation by f + 2 bits) and
    a reveal divides exactly (common.settle, common.MAX_EXTRA). A comparison's bit b is
    b * 2^f like any value.

    The approximation engine (approx/engine.py) works at many scales: it names ``frac``
    (then ``bits`` = frac + extra is the scale ``data`` carries, and ``retarget`` moves
    the aim, not the data), and after one of its masked openings ``opened`` holds an
    ``Opening``: value * 2^frac = e + M with e public. Elsewhere ``opened`` is None.
    """

    __slots__ = ("data", "extra", "frac", "opened")

    def __init__(self, data, extra: int = 0, frac: int | None = None):
        self.data = data
        self.extra = extra
        self.frac = frac
        self.opened = None

    @classmethod
    def at(cls, data, bits: int, frac: int | None = None) -> Shared:
        """A share carrying `bits` fractional bits, meant to have `frac` (default: bits,
        nothing pending)."""
        return cls(data, 0, bits) if frac is None else cls(data, bits - frac, frac)

    @property
    def bits(self) -> int:
        """The fractional bits ``data`` carries: frac + extra (frac must be named)."""
        return self.frac + self.extra

    def retarget(self, frac: int) -> None:
        """Aim at `frac` fractional bits instead, data unchanged: the pending truncation
        becomes bits - frac."""
        self.extra += self.frac - frac
        self.frac = frac

    @property
    def shape(self):
        return tuple(self.data.shape)

    def __repr__(self):
        shape = None if self.data is None else list(self.data.shape)
        scale = "" if self.frac is None else f", frac={self.frac}"
        return f"Shared({shape}" + (f", extra={self.extra}" if self.extra else "") + scale + ")"


class Opening:
    """What a masked opening of the approximation engine leaves on a ``Shared`` v:
    v's value * 2^v.frac = e + M, with ``e`` public (every party holds it), M a mask the
    dealer knows, ``m`` this party's share of M and ``mid`` M's id in the dealer's stash
    (monomials in opened values need shares of products of masks: approx/engine.py)."""

    __slots__ = ("e", "m", "mid")

    def __init__(self, e, m, mid: int):
        self.e, self.m, self.mid = e, m, mid


# ---------------------------------------------------------------- exchanges and registration


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
