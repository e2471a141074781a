"""Correlated randomness from a dealer, seeded so that only one party's corrections travel.

A request names random parts (uniform, shared among the parties) and derived parts
(functions of the random parts: Beaver products, truncated masks, bits of a mask...).
Every party's share of every part is pseudo-random from a seed it shares with the dealer
— *except* the last party's share of each derived part, which the dealer computes as
``derived - (sum of the other shares)`` and sends. So a Beaver triple costs one tensor
of traffic, to one party, instead of three tensors to every party.

Sharing kinds:
- ``arith``  additive shares in Z_2^64: the value is the sum of the shares;
- ``xor``    XOR shares of bits (bool tensors);
- ``xor64``  XOR shares of bits packed in int64 words (64 bits a word, laid out as the
             protocol likes: it views the words as uint8/uint16/int64 arrays); shares
             come straight from the PRG's keystream and travel as words, with no
             unpacking anywhere;
- ``own:k``  a random value known in the clear to party k (and the dealer) only;
- ``dealt``  (derived parts only, int64) a value every computing party receives the SAME
             copy of, in the clear: the dealer sends it (no seed can stand in for it).
             The correction words of a distributed comparison function are public to
             both key holders (protocols/dcf.py). The last party gets it among its
             corrections (its "correction" is the value itself); every other party gets
             it in its own dealt chunks (below).

The dealer learns the request sequence by running the plan itself on shape-only (meta)
tensors: protocols are data-oblivious, so the same code asks for the same material in
the same order at the dealer and at every party. The last party checks the dealer's
descriptor of each request against what its protocols ask for.

Making material is most of the dealer's work and one request can take seconds, so the
dealer's ``check`` (its communicator's: a peer failed, the deadline passed) runs before
each share it draws from a PRG and before deriving: once any party failed, no more
material is made.

Chunks (bounded memory). A long plan (a training epoch: a scan of 125 steps) needs GiBs
of corrections, more than the dealer or the last party should hold at once. So the
dealer makes them in *chunks*: it runs the plan on meta tensors as before, and as soon
as the corrections it holds reach ``chunk_bytes()`` (tensor bytes, bools a byte each;
default 256 MiB, ``PLANC_CHUNK_BYTES`` overrides it) it hands them, with their
descriptors, to its ``flush`` (runtime/session.py sends them to the last party) and goes
on with empty hands. A chunk always ends at a request boundary, so a chunk holds at most
``chunk_bytes() + the largest request`` (``chunk_limit``). The last party's
PartyMaterial starts with the first chunk and, when a request falls past the chunk it
holds, pulls the next one (its ``more``): the descriptors say where each chunk starts
and whether it is the last. Request order, descriptors and seeds are exactly those of
the unchunked run, so the shares, and the results, are bit for bit the same; only the
moments at which corrections travel change. The seed-derived parts stay as they are.
A plan whose corrections stay under one chunk is sent in one batch, as before.

Dealt parts at the other parties. A chunk's dealt values also go, as a *dealt chunk*, to
every party other than the last, only for chunks that hold dealt parts: a list of
(request, descriptor) and the tensors (runtime/session.py: chunk 0's before the online
phase, later ones when the party pulls them). The party takes them through its
``more_dealt``, called when a dealt part is requested past those it holds, and checks
each against its request. A plan with no dealt part sends nothing more, so its messages
and counts are those of before.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from . import prg


class MaterialError(RuntimeError):
    pass


DEFAULT_CHUNK_BYTES = 256 << 20


def chunk_bytes() -> int:
    """Corrections a chunk gathers before it is sent (bytes as tensors, bools a byte each):
    ``PLANC_CHUNK_BYTES`` (tests set a tiny one), else 256 MiB."""
    v = os.environ.get("PLANC_CHUNK_BYTES")
    return max(1, int(v)) if v else DEFAULT_CHUNK_BYTES


def held_bytes(t: torch.Tensor) -> int:
    """A correction's bytes in memory (a bool one is a byte an element once unpacked)."""
    return t.numel() * t.element_size()


@dataclass(frozen=True)
class Part:
    name: str
    shape: tuple
    sharing: str = "arith"  # "arith" | "xor" | "own:k"

    @property
    def dtype(self):
        return torch.bool if self.sharing == "xor" else torch.int64


def _descr(kind, parts) -> str:
    return kind + "(" + ",".join(f"{p.name}:{p.sharing}{list(p.shape)}" for p in parts) + ")"


def _meta(p: Part):
    return torch.empty(p.shape, dtype=p.dtype, device="meta")


class PartyMaterial:
    """A party's view: its own shares, regenerated from seeds; the last party also
    holds the dealer's corrections, consumed in order.

    Chunked material (the last party): `corrections`/`descriptors` are the first chunk
    (requests ``first ..``); `last` says whether more follow, and ``more()`` returns the
    next chunk as (descriptors, corrections, first, last) — it is called when a request
    falls past the chunk held, once that chunk's corrections are all used (the old ones
    are dropped then: the party holds the chunk it uses, and the one its transport
    has prefetched). `chunks` counts the chunks and `chunk_max` the most bytes one held."""

    def __init__(self, rank: int, nparties: int, seed: int, corrections=None, descriptors=None, *,
                 first: int = 0, last: bool = True, more=None, more_dealt=None):
        self.rank, self.n, self.seed = rank, nparties, seed
        self.counter = 0
        self.corrections = list(corrections or [])
        self.descriptors = list(descriptors or [])
        self._first, self._last, self._more = first, last, more
        self._next = 0
        self.chunks = 1
        self.chunk_max = sum(held_bytes(t) for t in self.corrections)
        # a party other than the last: the dealt values it holds, as (request, descriptor)
        # and tensors, and how to pull the next dealt chunk (material.py docstring)
        self._more_dealt = more_dealt
        self._dealt_entries, self._dealt, self._dealt_next = [], [], 0

    def _pull(self, i, kind):
        if self._next != len(self.corrections) or self._more is None:
            raise MaterialError(f"dealer material mismatch at request {i} ({kind}): {len(self.corrections) - self._next}"
                                " corrections of the previous chunk left unused")
        want = self._first + len(self.descriptors)
        self.corrections = self.descriptors = None  # the used chunk goes before the next comes
        descriptors, corrections, first, last = self._more()
        if first != want:
            raise MaterialError(f"dealer material chunk starts at request {first}, expected {want}")
        self.descriptors, self.corrections = list(descriptors), list(corrections)
        self._first, self._last, self._next = first, last, 0
        self.chunks += 1
        self.chunk_max = max(self.chunk_max, sum(held_bytes(t) for t in self.corrections))

    def get(self, kind: str, random: list[Part], derived: list[Part], derive, share_of=None) -> dict:
        i = self.counter
        self.counter += 1
        out = {}
        for p in random:
            out[p.name] = self._random(p, i)
        for p in derived:
            if p.sharing == "dealt" and self.rank < self.n - 1:
                out[p.name] = self._take_dealt(i, kind, random, derived, p)
            elif self.rank < self.n - 1:
                out[p.name] = prg.random_like(_kind(p), self.seed, f"{i}/{p.name}", 0, p.shape)
            else:
                out[p.name] = self._correction(i, kind, random, derived, p)
        return out

    def _random(self, p: Part, i: int):
        if p.sharing.startswith("own:"):
            owner = int(p.sharing[4:])
            # only the owner can regenerate it: the dealer sent the owner's seed to it alone
            return prg.ring(self.seed, f"{i}/{p.name}", 0, p.shape) if owner == self.rank else None
        return prg.random_like(_kind(p), self.seed, f"{i}/{p.name}", 0, p.shape)

    def _take_dealt(self, i, kind, random, derived, p):
        """The next dealt value (a party other than the last), pulling a dealt chunk when
        those held are used up; checked against the request it belongs to."""
        if self._dealt_next >= len(self._dealt):
            if self._more_dealt is None:
                raise MaterialError(f"dealer material: no dealt values for request {i} ({kind}) at party {self.rank}")
            entries, tensors = self._more_dealt()
            if len(entries) != len(tensors) or not tensors:
                raise MaterialError(f"dealer material: a dealt chunk of {len(tensors)} values for {len(entries)} "
                                    "entries")
            self._dealt_entries, self._dealt, self._dealt_next = [tuple(e) for e in entries], list(tensors), 0
        want = (i, _descr(kind, random + derived))
        got = self._dealt_entries[self._dealt_next]
        if tuple(got) != want:
            raise MaterialError(f"dealer material mismatch at request {i}: dealer dealt for {got}, protocol asked for "
                                f"{want}")
        t = self._dealt[self._dealt_next]
        if tuple(t.shape) != tuple(p.shape) or t.dtype != p.dtype:
            raise MaterialError(f"dealer material: dealt {p.name} of request {i} is {t.dtype}{list(t.shape)}, "
                                f"expected {p.dtype}{list(p.shape)}")
        self._dealt[self._dealt_next] = None  # free as we go
        self._dealt_next += 1
        return t

    def _correction(self, i, kind, random, derived, p):
        if p is derived[0]:
            while not self._last and i >= self._first + len(self.descriptors):
                self._pull(i, kind)
        if self._next >= len(self.corrections):
            raise MaterialError(f"dealer material ran out at request {i} ({kind}): the dealer and the parties "
                                "ran different plans")
        if p is derived[0]:
            want = _descr(kind, random + derived)
            j = i - self._first
            got = self.descriptors[j] if 0 <= j < len(self.descriptors) else None
            if got != want:
                raise MaterialError(f"dealer material mismatch at request {i}: dealer made {got}, protocol asked "
                                    f"for {want}")
        t = self.corrections[self._next]
        self.corrections[self._next] = None  # free as we go
        self._next += 1
        return t

    def finish(self):
        # the dealer's chunk after the plan's last request may hold no corrections (the one
        # before filled up right at the end): take it, and see that nothing was left
        while self.rank == self.n - 1 and not self._last and self._next == len(self.corrections):
            self._pull(self.counter, "end of the plan")
        if self._dealt_next != len(self._dealt):
            raise MaterialError(f"{len(self._dealt) - self._dealt_next} dealt values left unused")
        if self.rank == self.n - 1 and (self._next != len(self.corrections) or not self._last):
            raise MaterialError(f"{len(self.corrections) - self._next} dealer corrections left unused"
                                + ("" if self._last else " (and more chunks not pulled)"))


def _kind(p: Part) -> str:
    """How shares combine and are drawn: "arith", "xor" (bools) or "xor64" (words)."""
    return p.sharing if p.sharing in ("xor", "xor64") else "arith"


class DealerMaterial:
    """The dealer's view while it runs the plan on meta tensors: it returns meta
    placeholders to the protocols and makes the real material on the side.

    flush(descriptors, corrections, first, last, dealt): where chunks go (None: everything
    is kept, one batch); dealt: the chunk's dealt values [(request, descriptor, tensor)],
    also among its corrections (the same tensors), for the other parties. With a flush,
    once the corrections held reach `chunk` bytes (default
    ``chunk_bytes()``) after a request, they are flushed (last=False) and dropped here;
    ``finish()`` flushes the rest (last=True). `descriptors`/`corrections` are those of
    the current chunk, `first` its first request; `chunks`, `chunk_max`: as sent."""

    def __init__(self, nparties: int, seeds: list[int], check=None, flush=None, chunk=None):
        self.n, self.seeds = nparties, seeds
        self.counter = 0
        self.corrections: list[torch.Tensor] = []
        self.descriptors: list[str] = []
        self.dealt: list = []  # (request, descriptor, tensor) of the current chunk's dealt parts
        self.check = check or _no_check  # callable(where): raises to stop the dealer
        self.flush, self.chunk = flush, (chunk if chunk is not None else chunk_bytes())
        self.first = 0
        self.held = 0
        self.chunks = 0
        self.chunk_max = 0

    def _flush(self, last: bool):
        corrections, descriptors, first, dealt = self.corrections, self.descriptors, self.first, self.dealt
        self.corrections, self.descriptors, self.first, self.dealt = [], [], self.counter, []
        self.chunks += 1
        self.chunk_max = max(self.chunk_max, self.held)
        self.held = 0
        self.flush(descriptors, corrections, first, last, dealt)

    def finish(self):
        """The last chunk (with a flush); without one, the corrections stay for the caller."""
        if self.flush is not None:
            self._flush(last=True)
        else:
            self.chunks, self.chunk_max = 1, self.held

    def get(self, kind: str, random: list[Part], derived: list[Part], derive, share_of=None) -> dict:
        """`share_of` {part name: party}: derive also gets that party's share of that
        random part, as full["name@k"] (one-sided products need it)."""
        i = self.counter
        self.counter += 1
        check = self.check
        full = {}
        for p in random:
            if p.sharing.startswith("own:"):
                check(f"dealer material, request {i} ({kind})")
                k = int(p.sharing[4:])
                full[p.name] = prg.ring(self.seeds[k], f"{i}/{p.name}", 0, p.shape)
                continue
            shares = []
            for s in self.seeds:  # a part of 10^7 elements takes a PRG a few tenths of a second per seed
                check(f"dealer material, request {i} ({kind})")
                shares.append(prg.random_like(_kind(p), s, f"{i}/{p.name}", 0, p.shape))
            if share_of and p.name in share_of:
                k = share_of[p.name]
                full[f"{p.name}@{k}"] = shares[k].clone()  # _combine accumulates into shares[0]
            full[p.name] = _combine(p, shares)
        check(f"dealer material, request {i} ({kind})")
        values = derive(full)
        descr = _descr(kind, random + derived)
        for p in derived:
            v = values[p.name]
            if tuple(v.shape) != tuple(p.shape) or v.dtype != p.dtype:
                raise MaterialError(f"{kind}: derived {p.name} is {v.dtype}{list(v.shape)}, declared "
                                    f"{p.dtype}{list(p.shape)}")
            if p.sharing == "dealt":  # the same value to every party: the last one's "correction" is it
                if v.dtype != torch.int64:
                    raise MaterialError(f"{kind}: dealt {p.name} must be int64")
                self.corrections.append(v)
                self.dealt.append((i, descr, v))
                self.held += held_bytes(v)
                continue
            corr = None
            for s in self.seeds[:-1]:
                check(f"dealer material, request {i} ({kind})")
                o = prg.random_like(_kind(p), s, f"{i}/{p.name}", 0, p.shape)
                if corr is None:  # written over the fresh share: no allocation
                    corr = torch.bitwise_xor(v, o, out=o) if _kind(p) != "arith" else torch.sub(v, o, out=o)
                elif _kind(p) != "arith":
                    corr ^= o
                else:
                    corr -= o
            t = v.clone() if corr is None else corr
            self.corrections.append(t)
            self.held += held_bytes(t)
        self.descriptors.append(descr)
        if self.flush is not None and self.held >= self.chunk:
            self._flush(last=False)
        return {p.name: _meta(p) for p in random + derived}


def _no_check(where=None):
    pass


def _combine(p: Part, shares):
    """The value from its shares, accumulated in place into the first (fresh from the PRG)."""
    out = shares[0]
    for s in shares[1:]:
        if _kind(p) != "arith":
            out ^= s
        else:
            out += s
    return out
