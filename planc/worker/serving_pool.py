"""The dealer's pool: a service's material made ahead, per batch size.

``prepare_dealer`` (runtime/session.py) makes a batch's material from the plan and fresh
seeds alone, so the dealer makes it before the batch is asked for, in a thread of the
lowest CPU priority (material for later batches takes what the running batch leaves
idle); a batch's online time then carries no dealer work unless the pool ran dry (a
miss, made on the spot).
"""
from __future__ import annotations

import collections
import os
import threading

POOL_NICE = 19
POOL_DEPTH = {1: 4}  # material kept ready per batch size (others: 2)


class Pool:
    """The dealer's material for the service's plans, made ahead in a thread: ``depth[B]``
    batches per size, refilled as they are taken; ``take`` makes one on the spot only when
    the pool has none left (a miss)."""

    def __init__(self, plans: dict, nparties: int, policy, clients, name: str):
        self.plans, self.n, self.policy, self.clients = plans, nparties, policy, clients
        self.depth = {b: POOL_DEPTH.get(b, 2) for b in plans}
        self.ready = {b: collections.deque() for b in plans}
        self.cv = threading.Condition()
        self.hits = self.misses = 0
        self.error = None
        self.stopped = False
        self.thread = threading.Thread(target=self._fill, name=f"planc-pool-{name}", daemon=True)
        self.thread.start()

    def _make(self, b):
        from planc.runtime.session import prepare_dealer

        p = self.plans[b]
        return prepare_dealer(p.graph, self.n, constants=p.constants, frac=p.frac, policy=self.policy,
                              clients=self.clients)

    def _fill(self):
        try:
            # lowest CPU priority (Linux: per thread): material for later batches is made with
            # what the running batch leaves idle, not taken from it
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), POOL_NICE)
        except (AttributeError, OSError):
            pass
        try:
            while True:
                with self.cv:
                    while not self.stopped:
                        want = [b for b in sorted(self.ready) if len(self.ready[b]) < self.depth[b]]
                        if want:
                            break
                        self.cv.wait(1.0)
                    if self.stopped:
                        return
                    # the size with the fewest ready, relative to its depth (the small ones first)
                    b = min(want, key=lambda k: (len(self.ready[k]) / self.depth[k], k))
                made = self._make(b)
                with self.cv:
                    self.ready[b].append(made)
                    self.cv.notify_all()
        except BaseException as e:  # noqa: BLE001 — seen by take()
            self.error = e

    def primed(self) -> bool:
        with self.cv:
            return all(self.ready[b] for b in self.ready)

    def take(self, b):
        with self.cv:
            if self.ready[b]:
                self.hits += 1
                got = self.ready[b].popleft()
                self.cv.notify_all()
                return got
            self.misses += 1
        if self.error is not None:
            raise self.error
        return self._make(b)

    def stats(self) -> dict:
        with self.cv:
            return {"hits": self.hits, "misses": self.misses, "ready": {str(b): len(q) for b, q in self.ready.items()}}

    def close(self):
        with self.cv:
            self.stopped = True
            for q in self.ready.values():
                q.clear()
            self.cv.notify_all()
