"""In-process communicator: one thread per party, one queue per ordered pair.

Payloads are fresh buffers made by `pack` (never views of a party's tensors), so
parties share no memory: what a party learns is exactly what it received. Used by the tests and by the embedded local default.
"""
from __future__ import annotations

import queue
import threading
import time

import torch

from .base import Comm, PeerFailed, PeerTimeout

_POLL = 0.02


class Network:
    """The wires between `names` (computing parties, then the dealer)."""

    def __init__(self, names):
        self.names = list(names)
        n = len(self.names)
        self.queues = {(s, d): queue.Queue() for s in range(n) for d in range(n) if s != d}
        self.failed = threading.Event()
        self.error: tuple[str, BaseException] | None = None
        self._lock = threading.Lock()

    def comm(self, rank: int, timeout: float) -> "InProcComm":
        return InProcComm(rank=rank, names=self.names, timeout=timeout, net=self)

    def fail(self, rank: int, err: BaseException):
        with self._lock:
            if self.error is None:
                self.error = (self.names[rank], err)
        self.failed.set()


class InProcComm(Comm):
    def __init__(self, rank, names, timeout, net: Network):
        super().__init__(rank=rank, names=names, timeout=timeout)
        self.net = net

    def _send(self, dst, payload: torch.Tensor):
        # pack() made this buffer for this message alone, and nobody writes to it again
        self.net.queues[(self.rank, dst)].put(payload)

    def _recv(self, src, nbytes_):
        q = self.net.queues[(src, self.rank)]
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return q.get(timeout=_POLL)
            except queue.Empty:
                pass
            self._check_peers()
            if time.monotonic() > deadline:
                raise PeerTimeout(f"party {self.names[self.rank]}: no message from {self.names[src]} "
                                  f"within {self.timeout:g} s")

    def _check_peers(self):
        if self.net.failed.is_set() and self.net.error is not None:
            who, err = self.net.error
            if who != self.names[self.rank]:
                raise PeerFailed(f"party {who} failed: {err}")

    def fail(self, err):
        self.net.fail(self.rank, err)
