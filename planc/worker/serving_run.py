"""One model service at one daemon: its persistent mesh, the leader's batching loop, a
follower's and the dealer's loops, and the dealer's pool of material made ahead.

A service is n serving workers (ranks 0..n-1, in the order the model's shares were made
for) and the dealer (rank n), joined for the service's whole life by one mutually
authenticated TLS mesh (runtime/comm/tls.py, bound to the service id as its run id), so a
query pays no submission, approval or handshake. Rank 0 leads:

- a query's shares reach every serving worker directly from its client (HTTPS, one POST
  each, held open until that worker's share of the answer is ready); the leader puts its
  arrivals in a queue;
- when one arrives the leader keeps collecting until ``window`` (default 5 ms) passes
  without another, the largest batch size the service has a plan for is reached, or
  ``MAX_WINDOWS`` windows (20 ms) have passed since the first; a lone query waits one
  window. It takes at most what the request limit has
  left (the rest is refused, ``limit``), and tells every rank on the mesh
  ``{"op": "run", "size": B, "qids": [...]}``; B is the smallest plan size that holds them
  (rows past the queries are zero shares: nobody's answer);
- every serving worker then runs that batch's plan (compiled once per size, checked
  against its own policy when the service was accepted) with ``run_party``: the model's
  weights are a client party's values, their shares the ones the model owner sent this
  worker; the batch's input is the rows of its queries' shares, and the output, revealed
  to the plan's ``client`` party, stays a share here: row j goes back to query j's POST;
- the dealer answers the same command from its pool (``Pool``: ``prepare_dealer`` per
  batch size, refilled in a background thread, a bounded number per size), so a query's
  online time carries no dealer work unless the pool ran dry (counted as a miss).

While idle the leader sends a heartbeat every second, so every wait on the mesh has the
mesh's timeout and a lost rank is seen within it (at once when its connection drops). A
rank that fails tells the others through the mesh (``comm.fail``); every rank then ends
the service as failed and answers every waiting query with the error, which names the
party. A follower whose share of a scheduled query has not arrived within ``SHARE_WAIT``
computes with a zero row for it and answers that query with an error.
"""
from __future__ import annotations

import asyncio
import collections
import json
import os
import queue
import threading
import time

import torch

from .wire import Refusal

HEARTBEAT_S = 1.0
SHARE_WAIT = 5.0  # seconds a follower waits for a scheduled query's share
MAX_COMMAND = 1 << 20
POOL_NICE = 19
POOL_DEPTH = {1: 4}  # material kept ready per batch size (others: 2)
FINAL = ("done", "stopped", "failed")
MAX_WINDOWS = 4  # a batch waits at most this many windows after its first query
STRAGGLER_SHARE = 0.5  # ... or, while smaller than the last batch, this share of the last run's wall time
STRAGGLER_MAX_S = 0.25  # (at most)


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
        self._expect, self._run_s = 1, 0.0  # the leader's last batch: its queries, its run's wall time
        self._ran_at = time.monotonic()  # ... and when it ended
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
        self.pool = Pool(plans, len(self.workers), policy, self.clients, self.sid) if self.dealer else None
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

    def _answer(self, q: Query, result=None, error: Refusal | None = None):
        q.finish(result, error)
        with self.cv:
            if self.queries.get(q.qid) is q:
                del self.queries[q.qid]
            if error is not None:
                self.gone[q.qid] = error.message
                while len(self.gone) > 10_000:
                    self.gone.pop(next(iter(self.gone)))

    def _refuse_ids(self, qids, why: str):
        for qid in qids:
            with self.cv:
                q = self.queries.get(qid)
                self.gone[qid] = why
            if q is not None:
                self._answer(q, error=Refusal(409, "limit", why))
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
            self._end("stopped", why=why)

    def _expire(self):
        with self.cv:
            if self.thread is not None or self.state != "accepted":
                return
        self._end("failed", error=f"service {self.sid} was accepted but not started within {self.timeout:g} s")

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
                self._lead()
            else:
                self._follow()
        except BaseException as e:  # noqa: BLE001 — the service's failure, never the daemon's
            if self.comm is not None:
                try:
                    self.comm.fail(e)
                except Exception:  # noqa: BLE001
                    pass
            self._end("failed", error=str(e) or type(e).__name__)

    def _end(self, state: str, *, why: str | None = None, error: str | None = None):
        with self.cv:
            if self.state in FINAL:
                return
            self.state, self.why, self.error, self.ended = state, why, error, time.time()
            pending = list(self.queries.values())
        self._expiry.cancel()
        msg = self._ended_text()
        for q in pending:
            self._answer(q, error=Refusal(503 if state == "failed" else 409, "service", msg))
        while True:  # queries still queued at the leader
            try:
                q = self.arrivals.get_nowait()
            except queue.Empty:
                break
            self._answer(q, error=Refusal(409, "service", msg))
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
    def _tell(self, cmd: dict):
        data = json.dumps(cmd).encode()
        for r in range(1, len(self.names)):
            self.comm.send_bytes(r, data)

    def _lead(self):
        biggest = self.sizes[-1]
        self._tell({"op": "warm", "size": self.sizes[0]})  # one uncounted batch of zeros: first-run costs
        self._batch({"size": self.sizes[0], "qids": []}, warm=True)
        while True:
            if self.stopping is not None:
                self._tell({"op": "stop", "state": "stopped", "why": self.stopping})
                return self._end("stopped", why=self.stopping)
            try:
                first = self.arrivals.get(timeout=HEARTBEAT_S)
            except queue.Empty:
                self._tell({"op": "idle"})
                self.comm.check()
                continue
            t_first = time.monotonic()
            batch = self._gather(first, biggest)
            gather_s, idle_s = time.monotonic() - t_first, t_first - self._ran_at
            batch = [q for q in batch if not q.done.is_set()]  # its client gave up meanwhile
            room = self.limit - self.served
            take, over = batch[:room], batch[room:]
            cmd = {"op": "run" if take else "refuse", "qids": [q.qid for q in take],
                   "refused": [q.qid for q in over], "why": self._limit_text()}
            if take:
                cmd["size"] = next(b for b in self.sizes if b >= len(take))
            self._tell(cmd)
            self._refuse_ids(cmd["refused"], cmd["why"])
            if take:
                t0 = time.monotonic()
                self._batch(cmd, take)
                self._ran_at = time.monotonic()
                self._expect, self._run_s = len(take), self._ran_at - t0
                self.last.update(gather_s=round(gather_s, 4), idle_s=round(idle_s, 4))
            if self.served >= self.limit:
                why = f"served its limit of {self.limit} requests"
                self._tell({"op": "stop", "state": "done", "why": why})
                return self._end("done", why=why)

    def _gather(self, first: Query, biggest: int) -> list:
        """The batch that `first` opens. It closes at `biggest` queries; else once `window`
        passes without a new query, or MAX_WINDOWS windows after the first: whichever comes
        first. While it holds fewer queries than the last batch did (as many clients as
        then are likely still sending: under load their next queries arrive spread out),
        it waits for them up to STRAGGLER_SHARE of the last batch's run instead: a
        straggler left out would cost a run of its own, nearly as dear as the batch."""
        t0 = time.monotonic()
        batch, cap = [first], t0 + MAX_WINDOWS * self.window
        expect = min(biggest, self._expect)
        long_cap = max(cap, t0 + min(STRAGGLER_MAX_S, STRAGGLER_SHARE * self._run_s))
        while len(batch) < biggest:
            now = time.monotonic()
            if len(batch) < expect:
                left = long_cap - now
            else:
                left = min(self.window, cap - now)
            try:
                batch.append(self.arrivals.get(timeout=left) if left > 0 else self.arrivals.get_nowait())
            except queue.Empty:
                break
        return batch

    def _limit_text(self) -> str:
        return f"service {self.model} ({self.sid}) has served its limit of {self.limit} requests"

    def _follow(self):
        while True:
            raw = self.comm.recv_bytes(0)
            if len(raw) > MAX_COMMAND:
                raise Refusal(400, "service", f"a command of {len(raw):,} bytes from the leader {self.workers[0]}")
            cmd = json.loads(raw.decode())
            op = cmd.get("op")
            if op == "idle":
                continue
            if op == "stop":
                return self._end("done" if cmd.get("state") == "done" else "stopped", why=cmd.get("why"))
            if op == "warm":
                if self.dealer:
                    self._material({"size": cmd.get("size"), "qids": []}, warm=True)
                else:
                    self._batch({"size": cmd.get("size"), "qids": []}, warm=True)
                continue
            if op not in ("run", "refuse"):
                raise Refusal(400, "service", f"unknown command {op!r} from the leader {self.workers[0]}")
            self._refuse_ids(cmd.get("refused") or [], cmd.get("why") or "refused by the leader")
            if op == "run":
                if self.dealer:
                    self._material(cmd)
                else:
                    self._batch(cmd)

    def _check_batch(self, cmd, warm=False) -> tuple:
        b, qids = cmd.get("size"), cmd.get("qids")
        if b not in self.plans or not isinstance(qids, list) or not (0 if warm else 1) <= len(qids) <= b:
            raise Refusal(400, "service", f"the leader {self.workers[0]} asked for a batch of size {b!r} with "
                                          f"{len(qids) if isinstance(qids, list) else qids!r} queries; this "
                                          f"service's sizes are {self.sizes}")
        if self.served + len(qids) > self.limit:
            raise Refusal(403, "limit", f"the leader {self.workers[0]} asked for {len(qids)} more queries after "
                                        f"{self.served}; the limit is {self.limit}")
        return b, qids

    def _material(self, cmd, warm=False):
        from planc.runtime.session import run_dealer

        b, qids = self._check_batch(cmd, warm)
        p = self.plans[b]
        prepared = self.pool.take(b)
        run_dealer(p.graph, self.comm, constants=p.constants, frac=p.frac, policy=self.policy,
                   clients=self.clients, prepared=prepared)
        if not warm:
            self.served += len(qids)
            self.batches += 1
            self.batch_sizes[len(qids)] += 1

    def _collect(self, qids) -> list:
        """This worker's Query for each scheduled id (None where its share never came)."""
        end = time.monotonic() + SHARE_WAIT
        out = []
        with self.cv:
            for qid in qids:
                while qid not in self.queries and time.monotonic() < end and self.state == "serving":
                    self.cv.wait(min(0.05, max(0.0, end - time.monotonic())))
                out.append(self.queries.get(qid))
        return out

    def _batch(self, cmd, qs=None, warm=False):
        """Run one batch as a serving worker; `qs`: the leader's own Query objects."""
        from planc.runtime.comm.base import Counters
        from planc.runtime.session import run_party

        b, qids = self._check_batch(cmd, warm)
        t0 = time.perf_counter()
        p = self.plans[b]
        qs = qs if qs is not None else self._collect(qids)
        x = torch.zeros((b, *self.row), dtype=torch.int64)
        for j, q in enumerate(qs):
            if q is not None:
                x[j] = q.share[0]
        shares = {v: self.weights[tag] for v, tag in p.weights.items()}
        shares[p.query] = x
        self.comm.stats = Counters()  # this batch's rounds and bytes
        kept: dict = {}
        _, timings = run_party(p.graph, self.comm, constants=p.constants, frac=p.frac, policy=self.policy,
                               clients=self.clients, client_shares=shares, reveals_out=kept)
        if warm:
            return
        (entry,) = kept["client"].values()
        share, head = entry["share"], {"extra": int(entry.get("extra", 0)), "dtype": entry.get("dtype")}
        for j, (qid, q) in enumerate(zip(qids, qs)):
            if q is None:
                with self.cv:
                    self.gone[qid] = f"its share did not reach {self.workers[self.rank]} within {SHARE_WAIT:g} s"
                continue
            self._answer(q, result=({**head, "qid": qid, "batch": len(qids), "size": b,
                                     "server_s": round(time.monotonic() - q.t0, 4)}, {"y": share[j:j + 1]}))
        self.served += len(qids)
        self.batches += 1
        self.batch_sizes[len(qids)] += 1
        self.last = {**self.comm.stats.as_dict(), "queries": len(qids), "size": b,
                     "wall_s": round(time.perf_counter() - t0, 4), "online_s": round(timings["online_s"], 4),
                     "cpu_s": round(timings["cpu_s"], 4)}
