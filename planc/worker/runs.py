"""The runs a daemon knows: their states, approvals, deadlines and what they leave behind.

A run's life, each step one log line:

    pending_approval --approve--> accepted --start--> running --> done | failed
          |                          |                   |
          +-- timeout: refused       +-- timeout:        +-- cancel: failed (the
          +-- cancel: cancelled          expired             comm tells the peers)
                                     +-- cancel: cancelled

A run holds a data-plane listener from acceptance on (its port goes back to the
submitter, who passes every party's to every other at start); whatever way the run
ends, the listener, the communicator and the thread are released, and only the record
stays, with its outputs and error, among the last ``max_runs`` finished runs.

Approval by hash: the owner may approve a plan's sha256 (the bytes of the plan file)
for a number of runs (or without limit); pending runs of that hash are approved at
once, and later runs of it are accepted without asking until the count is used up.

Waiting: handlers long-poll a run (``wait_change``) on the event loop; the threads that
change states wake them through ``call_soon_threadsafe``.
"""
from __future__ import annotations

import asyncio
import collections
import threading
import time
from dataclasses import dataclass, field

FINAL = ("done", "failed", "refused", "expired", "cancelled")


@dataclass(eq=False)
class Run:
    sub: object  # submit.Submission
    submitter: str
    state: str
    created: float = field(default_factory=time.time)
    deadline: float = 0.0  # monotonic: when a pending run is refused / an accepted one expires
    started: float | None = None
    ended: float | None = None
    outcome: str | None = None
    error: dict | None = None
    stats: dict | None = None
    outputs: list = field(default_factory=list)
    held: dict = field(default_factory=dict)  # "<run_id>/out<i>" -> share (runtime Shared)
    reveals: dict | None = None  # client party -> {value name: {"share", "extra", "dtype"}}
    delivered: set = field(default_factory=set)
    listener: object = None
    data_port: int | None = None
    store: object = None  # gloo transport: the rendezvous store rank 0 hosts
    comm: object = None
    thread: threading.Thread | None = None
    cancel_reason: str | None = None
    prepared: object = None  # the dealer: execute.Prepared, its material made while the others accept
    linked_hash: str | None = None  # a plan calling a model: the sha256 of the linked plan it ran
    version: int = 0
    waiters: list = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.sub.run_id

    @property
    def plan_hash(self) -> str:
        return self.sub.plan_hash

    def summary(self) -> dict:
        s = self.sub
        return {"run_id": s.run_id, "plan_hash": s.plan_hash, "state": self.state, "party": s.party,
                "parties": dict(s.parties), "clients": dict(s.clients), "dealer": s.dealer,
                "client": self.submitter, "started": self.started, "ended": self.ended, "outcome": self.outcome}


class RunTable:
    def __init__(self, max_runs: int = 100, log=None):
        self.max_runs = max_runs
        self.log = log
        self.lock = threading.RLock()
        self.runs: dict[str, Run] = {}
        self.finished: collections.deque = collections.deque()
        self.seen: collections.OrderedDict = collections.OrderedDict()  # run ids ever used (bounded)
        self.approvals: dict[str, int | None] = {}  # plan hash -> runs left (None: no limit)

    # ---- lookup ------------------------------------------------------------------------

    def get(self, run_id: str) -> Run | None:
        with self.lock:
            return self.runs.get(run_id)

    def taken(self, run_id: str) -> bool:
        with self.lock:
            return run_id in self.seen

    def all(self) -> list[Run]:
        with self.lock:
            return list(self.runs.values())

    def pending(self) -> list[Run]:
        with self.lock:
            return [r for r in self.runs.values() if r.state == "pending_approval"]

    def active(self) -> list[Run]:
        with self.lock:
            return [r for r in self.runs.values() if r.state not in FINAL]

    # ---- changes -----------------------------------------------------------------------

    def add(self, run: Run, manual: bool) -> str:
        """Register a checked run; its state: accepted, or pending_approval under manual
        approval unless an approval of its hash has runs left (one is used)."""
        with self.lock:
            if run.run_id in self.seen:
                return "taken"
            self.seen[run.run_id] = True
            while len(self.seen) > 100 * self.max_runs:
                self.seen.popitem(last=False)
            state = "accepted"
            if manual:
                state = "pending_approval" if not self._use_approval(run.plan_hash) else "accepted"
                if state == "accepted":
                    self._log("approved", run, decision="by hash", remaining=self._left(run.plan_hash))
            run.state = state
            run.deadline = time.monotonic() + run.sub.timeout
            self.runs[run.run_id] = run
            return state

    def _left(self, h):
        left = self.approvals.get(h, 0)
        return "unlimited" if left is None else left

    def _use_approval(self, h: str) -> bool:
        if h not in self.approvals:
            return False
        left = self.approvals[h]
        if left is None:
            return True
        if left <= 0:
            del self.approvals[h]
            return False
        left -= 1
        if left == 0:
            del self.approvals[h]
        else:
            self.approvals[h] = left
        return True

    def approve_hash(self, h: str, limit: int | None, by: str) -> list[Run]:
        """Approve plan hash `h` for `limit` runs (None: no limit); pending runs of it first."""
        with self.lock:
            self.approvals[h] = limit
            done = []
            for r in sorted(self.pending(), key=lambda r: r.created):
                if r.plan_hash != h or not self._use_approval(h):
                    continue
                self._accept(r, by, "by hash")
                done.append(r)
            if limit == 0:
                self.approvals.pop(h, None)
            return done

    def approve_run(self, run: Run, by: str) -> bool:
        with self.lock:
            if run.state != "pending_approval":
                return False
            self._accept(run, by, "by run id")
            return True

    def _accept(self, run: Run, by: str, how: str):
        run.deadline = time.monotonic() + run.sub.timeout
        self.set_state(run, "accepted")
        self._log("approved", run, decision=how, approver=by, remaining=self._left(run.plan_hash))

    def set_state(self, run: Run, state: str, **fields):
        with self.lock:
            run.state = state
            for k, v in fields.items():
                setattr(run, k, v)
            if state in FINAL:
                run.ended = run.ended or time.time()
                self.finished.append(run.run_id)
                while len(self.finished) > self.max_runs:
                    old = self.finished.popleft()
                    gone = self.runs.pop(old, None)
                    if gone is not None:
                        gone.held.clear()
                        gone.reveals = None
            run.version += 1
            waiters = list(run.waiters)
        for loop, ev in waiters:
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:  # the loop is closed: the daemon is stopping
                pass

    def expire(self, release) -> None:
        """Refuse pending runs and expire accepted ones past their deadlines; `release(run)`
        closes what they hold."""
        now = time.monotonic()
        for r in self.active():
            if r.deadline and now > r.deadline:
                if r.state == "pending_approval":
                    release(r)
                    r.error = {"rule": "approval", "message": f"not approved within {r.sub.timeout:g} s"}
                    self.set_state(r, "refused", outcome="refused")
                    self._log("refused", r, rule="approval", decision="not approved in time")
                elif r.state == "accepted":
                    release(r)
                    r.error = {"rule": "start", "message": f"not started within {r.sub.timeout:g} s of acceptance"}
                    self.set_state(r, "expired", outcome="expired")
                    self._log("expired", r, rule="start")

    def _log(self, event, run, **kw):
        if self.log is not None:
            self.log.event(event, run_id=run.run_id, plan_hash=run.plan_hash, client=run.submitter, **kw)

    # ---- waiting -----------------------------------------------------------------------

    async def wait_change(self, run: Run, seconds: float):
        """Return once `run` changes state or `seconds` pass."""
        if seconds <= 0 or run.state in FINAL:
            return
        loop = asyncio.get_running_loop()
        ev = asyncio.Event()
        entry = (loop, ev)
        with self.lock:
            v0 = run.version
            run.waiters.append(entry)
        try:
            if run.version == v0:
                try:
                    await asyncio.wait_for(ev.wait(), seconds)
                except asyncio.TimeoutError:
                    pass
        finally:
            with self.lock:
                try:
                    run.waiters.remove(entry)
                except ValueError:
                    pass
