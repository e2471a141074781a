"""One model service at one daemon: its queries, its mesh, its life.

A service is n serving workers (ranks 0..n-1, in the order the model's shares were made
for) and the dealer (rank n), joined for the service's whole life by one mutually
authenticated TLS mesh (runtime/comm/tls.py, bound to the service id as its run id), so a
query pays no submission, approval or handshake. A query's shares reach every serving
worker directly from its client (HTTPS, one POST each, held open until that worker's
share of the answer is ready: ``Query``); the leader (rank 0) puts its arrivals in a
queue. The service's thread opens the mesh and runs the leader's, a follower's or the
dealer's loop (serving_loops.py); the dealer's material comes from its pool
(serving_pool.py).

A rank that fails tells the others through the mesh (``comm.fail``); every rank then
ends the service as failed and answers every waiting query with the error, which names
the party. A service accepted but not started within its timeout fails by itself.
"""
from __future__ import annotations

import asyncio
import collections
import queue
import threading
import time

import torch

from . import serving_loops, serving_pool
from .wire import Refusal

FINAL = ("done", "stopped", "failed")
SWITCH_INTERVAL_S = 0.0005


def _switch_interval():
    """A serving daemon's threads hand each other every message of every round (a mesh
    connection's reader thread reads a record at a time): with Python's 5 ms GIL slices a
    busy thread delays each handoff, and a batch's run took twice its CPU time. Lowered
    for the process once it serves (the daemon's own runs gain from it too)."""
    import sys

    if sys.getswitchinterval() > SWITCH_INTERVAL_S:
        sys.setswitchinterval(SWITCH_INTERVAL_S)


class Query:
    """One query at one worker: its share in, its share of the answer (or an error) out."""

    def __init__(self, qid: str, who: str, share: torch.Tensor):
        self.qid, self.who, self.share = qid, who, share
        self.t0 = time.monotonic()
        self.result = self.error = None
        self.done = threading.Event()
        self._waiters: list = []
        self._lock = threading.Lock()

    def finish(self, result=None, error: Refusal | None = None):
        with self._lock:
            if self.done.is_set():
                return
            self.result, self.error = result, error
            self.done.set()
            waiters, self._waiters = self._waiters, []
        for loop, ev in waiters:
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:  # that loop is gone
                pass

    async def wait(self, seconds: float) -> bool:
        loop = asyncio.get_running_loop()
        ev = asyncio.Event()
        with self._lock:
            if self.done.is_set():
                return True
            self._waiters.append((loop, ev))
        try:
            await asyncio.wait_for(ev.wait(), seconds)
        except asyncio.TimeoutError:
            pass
        return self.done.is_set()


class Service:
    """A service as this daemon plays it (see the module docstring). `spec` is the checked
    request (serving.py), `plans` {size: ServedPlan}, `weights` {tag: share} (None at the
    dealer)."""

    def __init__(self, spec: dict, plans: dict, weights: dict | None, *, rank: int, identity, policy, log,
                 data_host: str):
        from planc.runtime.comm.tls import Listener

        self.spec, self.plans, self.weights = spec, plans, weights
        self.sid, self.model = spec["service_id"], spec["model"]
        self.workers = list(spec["workers"])
        self.names = self.workers + ["dealer"]
        self.rank, self.identity, self.policy, self.log = rank, identity, policy, log
        self.leader = rank == 0
        self.dealer = rank == len(self.workers)
        self.clients = (spec["owner"], "client")
        self.row = tuple(spec["input_shape"])
        self.window = spec["window_ms"] / 1000.0
        self.timeout = spec["timeout"]
        self.limit = spec["limit"]
        self.sizes = sorted(plans)
        self.state, self.error, self.why = "accepted", None, None
        self.served = self.batches = self.refused = 0
        self.expect, self.run_s = 1, 0.0  # the leader's last batch: its queries, its run's wall time
        self.ran_at = time.monotonic()  # ... and when it ended
        self.batch_sizes: collections.Counter = collections.Counter()
        self.last: dict = {}
        self.created, self.started, self.ended = time.time(), None, None
        self.queries: dict[str, Query] = {}
        self.gone: dict[str, str] = {}  # qid -> why it was refused, for shares that arrive later
        self.arrivals: queue.SimpleQueue = queue.SimpleQueue()
        self.cv = threading.Condition()
        self.stopping: str | None = None
        self.comm = self.thread = None
        self.version = 0
        self.waiters: list = []
        self.listener = Listener(identity, host=data_host, port=0)
        self.data_port = self.listener.port
        self.pool = serving_pool.Pool(plans, len(self.workers), policy, self.clients, self.sid) if self.dealer else None
        self._expiry = threading.Timer(self.timeout, self._expire)
        self._expiry.daemon = True
        self._expiry.start()

    # ---- views and waiting -----------------------------------------------------------------
    def view(self) -> dict:
        v = {"service_id": self.sid, "model": self.model, "handle": self.spec["handle"], "owner": self.spec["owner"],
             "state": self.state, "workers": self.workers, "leader": self.workers[0], "rank": self.rank,
             "input_shape": list(self.row), "dtype": "float32", "frac": self.spec["frac"], "limit": self.limit,
             "served": self.served, "refused": self.refused, "batches": self.batches,
             "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())}, "sizes": self.sizes,
             "window_ms": self.spec["window_ms"], "data_port": self.data_port, "error": self.error, "why": self.why,
             "last_batch": self.last, "pending": len(self.queries)}
        if self.pool is not None:
            v["pool"] = self.pool.stats()
        return v

    def _changed(self):
        with self.cv:
            self.version += 1
            waiters, self.waiters = self.waiters, []
            self.cv.notify_all()
        for loop, ev in waiters:
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:
                pass

    async def wait_change(self, seconds: float, while_state: str | None = None):
        """Return once the service changes or `seconds` pass; at once if its state is not
        `while_state` (when given): the caller has not seen the present state yet."""
        if seconds <= 0 or self.state in FINAL or (while_state is not None and self.state != while_state):
            return
        loop = asyncio.get_running_loop()
        ev = asyncio.Event()
        with self.cv:
            if while_state is not None and self.state != while_state:
                return
            self.waiters.append((loop, ev))
        try:
            await asyncio.wait_for(ev.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    # ---- queries ---------------------------------------------------------------------------
    def submit(self, who: str, qid: str, share: torch.Tensor) -> Query:
        want = (1, *self.row)
        if share.dtype != torch.int64 or tuple(share.shape) != want:
            raise Refusal(400, "shape", f"service {self.model} ({self.sid}): a query's share is int64 of shape "
                                        f"{list(want)} (one float32 sample of shape {list(self.row)}), got "
                                        f"{str(share.dtype).replace('torch.', '')} {list(share.shape)}")
        with self.cv:
            if self.state != "serving":
                raise Refusal(409, "state", self._ended_text())
            if qid in self.queries or qid in self.gone:
                why = self.gone.get(qid)
                if why is not None:
                    raise Refusal(409, "query", why)
                raise Refusal(409, "query", f"query id {qid!r} is already in use at this worker")
            if self.served >= self.limit:
                raise Refusal(409, "limit", f"service {self.model} ({self.sid}) has served its limit of "
                                            f"{self.limit} requests")
            q = self.queries[qid] = Query(qid, who, share)
            self.cv.notify_all()
        if self.leader:
            self.arrivals.put(q)
        return q

    def forget(self, q: Query):
        with self.cv:
            if self.queries.get(q.qid) is q:
                del self.queries[q.qid]

    def _ended_text(self) -> str:
        if self.state == "accepted":
            return f"service {self.model} ({self.sid}) has not started"
        if self.state == "failed":
            return f"service {self.model} ({self.sid}) failed: {self.error}"
        return f"service {self.model} ({self.sid}) has ended ({self.why or self.state})"

    def answer(self, q: Query, result=None, error: Refusal | None = None):
        q.finish(result, error)
        with self.cv:
            if self.queries.get(q.qid) is q:
                del self.queries[q.qid]
            if error is not None:
                self.gone[q.qid] = error.message
                while len(self.gone) > 10_000:
                    self.gone.pop(next(iter(self.gone)))

    def refuse_ids(self, qids, why: str):
        for qid in qids:
            with self.cv:
                q = self.queries.get(qid)
                self.gone[qid] = why
            if q is not None:
                self.answer(q, error=Refusal(409, "limit", why))
            self.refused += 1

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self, peers: dict):
        with self.cv:
            if self.state != "accepted" or self.thread is not None:
                raise Refusal(409, "state", f"service {self.sid} is {self.state}; only an accepted service starts")
            self.thread = threading.Thread(target=self._main, args=(peers,), daemon=True,
                                           name=f"planc-service-{self.sid}")
        self._expiry.cancel()
        self.started = time.time()
        self.thread.start()

    def stop(self, why: str):
        """Stop: before the mesh, at once; the leader tells every rank; the others end when
        the leader's word reaches them (or when it is lost)."""
        with self.cv:
            if self.state in FINAL:
                return
            self.stopping = why
            started = self.thread is not None
        if not started:
            self.end("stopped", why=why)

    def _expire(self):
        with self.cv:
            if self.thread is not None or self.state != "accepted":
                return
        self.end("failed", error=f"service {self.sid} was accepted but not started within {self.timeout:g} s")

    def _main(self, peers):
        from planc.runtime.comm.tls import TLSComm

        try:
            self.comm = TLSComm(self.rank, self.names, self.timeout, identity=self.identity, listener=self.listener,
                                peers=peers, run_id=f"service/{self.sid}")
            self.listener = None  # the comm owns it now
            _switch_interval()
            with self.cv:
                self.state = "serving"
            self._changed()
            self.log.event("serving", service=self.sid, model=self.model, rank=self.rank, limit=self.limit)
            if self.leader:
                serving_loops.lead(self)
            else:
                serving_loops.follow(self)
        except BaseException as e:  # noqa: BLE001 — the service's failure, never the daemon's
            if self.comm is not None:
                try:
                    self.comm.fail(e)
                except Exception:  # noqa: BLE001
                    pass
            self.end("failed", error=str(e) or type(e).__name__)

    def end(self, state: str, *, why: str | None = None, error: str | None = None):
        with self.cv:
            if self.state in FINAL:
                return
            self.state, self.why, self.error, self.ended = state, why, error, time.time()
            pending = list(self.queries.values())
        self._expiry.cancel()
        msg = self._ended_text()
        for q in pending:
            self.answer(q, error=Refusal(503 if state == "failed" else 409, "service", msg))
        while True:  # queries still queued at the leader
            try:
                q = self.arrivals.get_nowait()
            except queue.Empty:
                break
            self.answer(q, error=Refusal(409, "service", msg))
        self.release()
        self._changed()
        self.log.event("service_ended", service=self.sid, model=self.model, state=state, why=why,
                       error=(error or "")[:2000], served=self.served, batches=self.batches)

    def release(self):
        """The mesh, the listener, the pool and the queries' shares: dropped."""
        comm, self.comm = self.comm, None
        if comm is not None:
            try:
                comm.close()
            except Exception:  # noqa: BLE001
                pass
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        if self.pool is not None:
            self.pool.close()
        self.weights = None

    # ---- the loops -------------------------------------------------------------------------
