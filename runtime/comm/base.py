"""What every communicator does: one *exchange* is one round.

In an exchange a party sends a list of tensors to some peers and receives lists of
known shapes from some peers. Protocols never send outside exchanges, so rounds and
bytes are counted in one place, the same way for every transport:

- ``rounds``: exchanges in which this party sent or received anything;
- ``bytes_sent`` / ``bytes_recv``: payload bytes (bool tensors travel bit-packed).

The dealer's one batch before the online phase is counted apart (``dealer_bytes``).
Every wait has a timeout; a timeout names the party that did not answer, and a party
that fails tells the others, which stop with its error instead of waiting.

Between messages a rank may compute for a long time (a loop of local work, the dealer
making material), so waits alone do not stop it. ``check()`` does: the interpreter calls
it between waves of nodes and once per loop trip, the dealer's material between the
parts it makes. It raises ``PeerFailed`` once any rank failed, and ``PeerTimeout`` once
this rank has gone ``timeout`` seconds without a message in or out — the same bound its
peers' waits put on it, also where nobody waits. It looks at the clock on every call and
at the peers (an event, a store) at most every ``CHECK_EVERY`` seconds: about 0.1 µs a call.
That timeout is a ``DeadlineExceeded`` (a ``PeerTimeout``), naming what the rank was doing.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

DEFAULT_TIMEOUT = 60.0


class CommError(RuntimeError):
    """A peer failed or did not answer in time."""


class PeerFailed(CommError):
    pass


class PeerTimeout(CommError):
    pass


class DeadlineExceeded(PeerTimeout):
    """This rank itself went `timeout` seconds without a message (busy with local work):
    of all the timeouts in a run, the one that says where it was stuck."""


@dataclass
class Counters:
    rounds: int = 0
    bytes_sent: int = 0
    bytes_recv: int = 0
    messages: int = 0
    dealer_bytes: int = 0

    def as_dict(self) -> dict:
        return dict(rounds=self.rounds, bytes_sent=self.bytes_sent, bytes_recv=self.bytes_recv,
                    messages=self.messages, dealer_bytes=self.dealer_bytes)


def nbytes(shape, dtype) -> int:
    n = 1
    for d in shape:
        n *= d
    if dtype == torch.bool:
        return (n + 7) // 8
    return n * torch.empty((), dtype=dtype).element_size()


def pack(tensors) -> torch.Tensor:
    """Tensors -> one flat uint8 tensor that owns its memory (never a view of an input);
    bool tensors are bit-packed."""
    parts = []
    for t in tensors:
        t = t.detach().contiguous().reshape(-1)
        if t.dtype == torch.bool:
            parts.append(torch.from_numpy(np.packbits(t.numpy())))
        else:
            parts.append(t.view(torch.uint8))
    if not parts:
        return torch.empty(0, dtype=torch.uint8)
    return torch.cat(parts) if len(parts) > 1 else parts[0].clone()


def unpack(buf: torch.Tensor, specs) -> list[torch.Tensor]:
    want = sum(nbytes(s, d) for s, d in specs)
    if buf.numel() != want:
        raise CommError(f"message of {buf.numel()} bytes where {want} were expected")
    out, off = [], 0
    for shape, dtype in specs:
        k = nbytes(shape, dtype)
        chunk = buf[off:off + k]
        off += k
        n = 1
        for d in shape:
            n *= d
        if dtype == torch.bool:
            bits = np.unpackbits(chunk.numpy(), count=n).astype(bool)
            out.append(torch.from_numpy(bits).reshape(shape))
        else:
            size = torch.empty((), dtype=dtype).element_size()
            # the buffer is ours alone: aligned chunks are viewed in place, not copied
            if chunk.storage_offset() % size:
                chunk = chunk.clone()
            out.append(chunk.view(dtype).reshape(shape))
    return out


@dataclass
class Comm:
    """Base class: subclasses move bytes; this class packs, counts and checks."""

    rank: int
    names: list  # names of all ranks: computing parties, then "dealer"
    timeout: float = DEFAULT_TIMEOUT
    stats: Counters = field(default_factory=Counters)
    # monotonic time of this rank's last message in or out (or of its start)
    quiet_since: float = field(default_factory=time.monotonic, init=False, repr=False, compare=False)
    _next_check: float = field(default=0.0, init=False, repr=False, compare=False)

    CHECK_EVERY = 0.02  # seconds between looks at the peers (transports may set their own)

    @property
    def nparties(self) -> int:
        return len(self.names) - 1

    @property
    def dealer(self) -> int:
        return len(self.names) - 1

    # transports implement these two
    def _send(self, dst: int, payload: torch.Tensor):
        raise NotImplementedError

    def _recv(self, src: int, nbytes_: int) -> torch.Tensor:
        raise NotImplementedError

    def fail(self, err: BaseException):
        """Tell every peer that this party stopped."""

    def close(self):
        pass

    # ---- cancellation: failures and the deadline, between messages ------------------------

    def check(self, where=None):
        """Stop this rank if a peer failed (PeerFailed) or if it has gone `timeout` seconds
        without a message (DeadlineExceeded); cheap enough to call per node and per loop trip.
        `where`: what the rank is busy with (a Node, or text), for the timeout's message."""
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self.CHECK_EVERY
        # its own deadline first: a rank past it is stuck itself, whatever its peers said
        # meanwhile (a peer waiting for it times out at about the same moment)
        if now - self.quiet_since > self.timeout:
            at = getattr(where, "where", None)
            at = at() if callable(at) else where
            raise DeadlineExceeded(f"party {self.names[self.rank]}: nothing sent or received for {self.timeout:g} s "
                                   f"(local work ran past the timeout{f', at {at}' if at else ''})")
        self._check_peers()

    def _check_peers(self):
        """Raise PeerFailed if another rank failed (transports know how to tell)."""

    def _heard(self):
        self.quiet_since = time.monotonic()

    def exchange(self, sends: dict, recvs: dict) -> dict:
        """One round: send `sends[dst]` (lists of tensors), receive `recvs[src]` (lists of
        (shape, dtype)); returns {src: [tensors]}."""
        sends = {d: ts for d, ts in sends.items() if ts}
        recvs = {s: sp for s, sp in recvs.items() if sp}
        if not sends and not recvs:
            return {}
        self.stats.rounds += 1
        for dst in sorted(sends):
            buf = pack(sends[dst])
            self.stats.bytes_sent += buf.numel()
            self.stats.messages += 1
            self._send(dst, buf)
        out = {}
        for src in sorted(recvs):
            specs = recvs[src]
            buf = self._recv(src, sum(nbytes(s, d) for s, d in specs))
            self.stats.bytes_recv += buf.numel()
            out[src] = unpack(buf, specs)
        self._heard()
        return out

    def send_dealer_batch(self, dst: int, tensors):
        buf = pack(tensors)
        self.stats.dealer_bytes += buf.numel()
        self._send(dst, buf)
        self._heard()

    def recv_dealer_batch(self, specs) -> list[torch.Tensor]:
        buf = self._recv(self.dealer, sum(nbytes(s, d) for s, d in specs))
        self.stats.dealer_bytes += buf.numel()
        self._heard()
        return unpack(buf, specs)

    def send_bytes(self, dst: int, data: bytes):
        """Setup messages (seeds, descriptors): not counted as online traffic."""
        n = torch.tensor([len(data)], dtype=torch.int64)
        self._send(dst, n.view(torch.uint8))
        self._send(dst, torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8))
        self._heard()

    def recv_bytes(self, src: int, max_bytes: int | None = None) -> bytes:
        n = int(self._recv(src, 8).view(torch.int64)[0])
        if n < 0 or (max_bytes is not None and n > max_bytes):
            raise CommError(f"party {self.names[self.rank]}: {self.names[src]} announced a message of {n:,} bytes "
                            f"(at most {max_bytes:,} expected)")
        data = bytes(self._recv(src, n).numpy().tobytes()) if n else b""
        self._heard()
        return data
