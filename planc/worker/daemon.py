"""The daemon's state and operations, apart from HTTP: what a worker or the dealer *does*.

``Daemon`` holds the configuration, the TLS identity, the catalogue (none for the
dealer), the policy, the log and the run table, and offers the operations the routes
call: submit, start, cancel, approve, read a run. Every operation takes the caller's
authenticated identity (from the TLS handshake, never from the request) and decides
who may do what:

- any identity in ``clients``, ``admins``, ``peers`` or the daemon's own may read info
  and the catalogue and submit runs;
- a run may be read, started and cancelled by its submitter and by admins;
- approvals and the pending list belong to the daemon's own identity and ``admins``;
- a run's reveals go only to the identity mapped to a client party of that run.

A reaper thread refuses runs left unapproved past their timeout and expires accepted
runs never started; ``shutdown`` cancels every run and releases every listener.
"""
from __future__ import annotations

import threading
import time

from . import execute, submit
from .runs import FINAL, Run, RunTable
from .wire import Refusal

VERSION_FALLBACK = "0.0.0"


def _version() -> str:
    try:
        from importlib import metadata

        return metadata.version("planc")
    except Exception:  # noqa: BLE001
        return VERSION_FALLBACK


class Daemon:
    def __init__(self, cfg, identity, catalogue, policy, policy_sha256: str | None, log):
        self.cfg = cfg
        self.identity = identity
        self.catalogue = catalogue
        self.policy = policy
        self.policy_sha256 = policy_sha256
        self.log = log
        self.table = RunTable(cfg.max_runs, log)
        from .serving import Table as ServingTable

        self.serving = ServingTable(self)  # model shares and services (serving.py)
        self.t0 = time.time()
        self.version = _version()
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="planc-reaper", daemon=True)
        self._reaper.start()

    # ---- who may do what -----------------------------------------------------------

    def require_allowed(self, who):
        if not self.cfg.allowed(who):
            raise Refusal(403, "identity", f"identity {who!r} may not use {self.cfg.name}'s API (not in its "
                                           f"clients, admins or peers)")

    def require_admin(self, who):
        if not self.cfg.admin(who):
            raise Refusal(403, "identity", f"identity {who!r} may not approve runs at {self.cfg.name} (only "
                                           f"{self.cfg.name} itself and its admins)")

    def run_for(self, run_id: str, who) -> Run:
        run = self.table.get(run_id)
        if run is None:
            raise Refusal(404, "run_id", f"no run {run_id!r} at {self.cfg.name}")
        if who != run.submitter and not self.cfg.admin(who):
            raise Refusal(403, "identity", f"run {run_id!r} belongs to {run.submitter!r}; {who!r} may not see it")
        return run

    # ---- reading -------------------------------------------------------------------

    def info(self) -> dict:
        return {"name": self.cfg.name, "role": self.cfg.role, "version": self.version,
                "approval": self.cfg.approval, "transport": self.cfg.transport,
                "transport_note": None if self.cfg.transport == "tls" else
                "gloo: party-to-party links are neither authenticated nor encrypted (trusted networks only)",
                "policy": {"name": self.policy.name if self.policy is not None else "default",
                           "sha256": self.policy_sha256}}

    def status(self, who) -> dict:
        mine = self.cfg.admin(who)
        runs = [r.summary() for r in self.table.all() if mine or r.submitter == who]
        return {"name": self.cfg.name, "role": self.cfg.role, "uptime_s": round(time.time() - self.t0, 3),
                "runs": runs, "active": len(self.table.active()), "pending": len(self.table.pending())}

    def run_view(self, run: Run) -> dict:
        return {"run_id": run.run_id, "state": run.state, "plan_hash": run.plan_hash, "party": run.sub.party,
                "data_port": run.data_port, "error": run.error, "stats": run.stats, "outputs": run.outputs,
                "started": run.started, "ended": run.ended, "outcome": run.outcome, "linked_hash": run.linked_hash}

    # ---- submitting ----------------------------------------------------------------

    def submit(self, who, d: dict) -> dict:
        """A parsed submission body -> the accepted (or pending) run's description."""
        rid = submit.run_id_of(d)
        if self.table.taken(rid):
            raise Refusal(409, "run_id", f"run id {rid!r} is already taken at {self.cfg.name}")
        sub = submit.check(d, me=self.cfg.name, role=self.cfg.role, policy=self.policy, catalogue=self.catalogue,
                           rid=rid)
        run = Run(sub, who, "new")
        try:
            execute.bind(run, self.cfg, self.identity)
        except Exception as e:  # noqa: BLE001
            execute.release(run)
            raise Refusal(503, "data_port", f"could not open a data port on {self.cfg.data_host}: "
                                            f"{type(e).__name__}: {e}") from None
        state = self.table.add(run, manual=self.cfg.approval == "manual")
        if state == "taken":  # lost a race for the id
            execute.release(run)
            raise Refusal(409, "run_id", f"run id {rid!r} is already taken at {self.cfg.name}")
        if state == "accepted":
            execute.prepare(run, self.policy)
        self.log.event("accepted" if state == "accepted" else "pending", run_id=rid, plan_hash=sub.plan_hash,
                       client=who, party=sub.party, parties=sub.parties, clients=sub.clients, dealer=sub.dealer,
                       decision=state, data_port=run.data_port)
        return {"run_id": rid, "state": state, "plan_hash": sub.plan_hash, "data_port": run.data_port}

    def start(self, who, run_id: str, body) -> dict:
        run = self.run_for(run_id, who)
        if who != run.submitter:
            raise Refusal(403, "identity", f"only the run's submitter {run.submitter!r} may start it")
        peers = execute.peers_of(run, body)
        with self.table.lock:
            if run.state == "pending_approval":
                raise Refusal(409, "approval", f"run {run_id!r} is waiting for approval at {self.cfg.name}")
            if run.state != "accepted":
                raise Refusal(409, "state", f"run {run_id!r} is {run.state}; only an accepted run can start")
            execute.launch(run, self.cfg, self.identity, self.catalogue, self.policy, peers, self.table,
                           self.log)
        return self.run_view(run)

    def cancel(self, who, run_id: str, reason: str | None = None) -> dict:
        run = self.run_for(run_id, who)
        why = f": {reason}" if reason else ""
        with self.table.lock:
            if run.state in ("pending_approval", "accepted", "new"):
                execute.release(run)
                run.error = {"rule": "cancel", "message": f"cancelled by {who}{why}"}
                self.table.set_state(run, "cancelled", outcome="cancelled")
            elif run.state == "running":
                run.cancel_reason = f"run {run_id} cancelled by {who}{why}"
                comm = run.comm
                if comm is not None:
                    try:
                        comm.fail(execute.Cancelled(run.cancel_reason))
                    except Exception:  # noqa: BLE001
                        pass
            else:
                raise Refusal(409, "state", f"run {run_id!r} has already ended ({run.state})")
        self.log.event("cancelled", run_id=run_id, plan_hash=run.plan_hash, client=who, reason=reason)
        return self.run_view(run)

    def reveals(self, who, run_id: str):
        """(header, tensors) of the shares this worker holds for `who`'s client parties."""
        run = self.table.get(run_id)
        if run is None:
            raise Refusal(404, "run_id", f"no run {run_id!r} at {self.cfg.name}")
        mine = [p for p, ident in run.sub.clients.items() if ident == who]
        if not mine:
            raise Refusal(403, "identity", f"{who!r} is no client party of run {run_id!r}")
        if run.state != "done":
            raise Refusal(409, "state", f"run {run_id!r} is {run.state}; reveals are ready once it is done")
        with self.table.lock:
            if who in run.delivered:
                raise Refusal(410, "reveals", f"the reveals of run {run_id!r} for {who!r} were delivered already")
            run.delivered.add(who)
            got = {p: (run.reveals or {}).pop(p, {}) for p in mine}
        header, ts = {}, {}
        for party, values in got.items():
            for name, v in values.items():
                key = name if len(mine) == 1 else f"{party}/{name}"
                if "plain" in v:  # a value private to this party, revealed to the client: sent as it is
                    header[key] = {"kind": "plain", "dtype": v.get("dtype"), "party": party}
                    ts[key] = v["plain"]
                else:
                    header[key] = {"kind": "share", "extra": int(v.get("extra", 0)), "dtype": v.get("dtype"),
                                   "party": party}
                    ts[key] = v["share"]
        self.log.event("reveals", run_id=run_id, plan_hash=run.plan_hash, client=who, values=sorted(header))
        return header, ts

    # ---- approving -----------------------------------------------------------------

    def pending(self, who) -> dict:
        self.require_admin(who)
        return {"worker": self.cfg.name, "pending": [
            {**r.summary(), "timeout": r.sub.timeout, "created": r.created,
             "expires_in_s": round(max(0.0, r.deadline - time.monotonic()), 3)} for r in self.table.pending()],
            "approvals": {h: ("unlimited" if n is None else n) for h, n in self.table.approvals.items()}}

    def approve(self, who, d) -> dict:
        self.require_admin(who)
        if not isinstance(d, dict):
            raise Refusal(400, "body", "expected {run_id} or {plan_hash, limit}")
        extra = sorted(set(d) - {"run_id", "plan_hash", "limit"})
        if extra:
            raise Refusal(400, "body", f"field {extra[0]!r}: unknown; approve takes run_id or plan_hash and limit")
        if ("run_id" in d) == ("plan_hash" in d):
            raise Refusal(400, "body", "give exactly one of 'run_id' and 'plan_hash'")
        if "run_id" in d:
            rid = d["run_id"]
            run = self.table.get(rid) if isinstance(rid, str) else None
            if run is None:
                raise Refusal(404, "run_id", f"no run {rid!r} at {self.cfg.name}")
            if not self.table.approve_run(run, who):
                raise Refusal(409, "state", f"run {rid!r} is {run.state}, not pending approval")
            return {"approved": [rid], "plan_hash": run.plan_hash}
        h, limit = d["plan_hash"], d.get("limit")
        if not isinstance(h, str) or len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
            raise Refusal(400, "body", "field 'plan_hash': expected a plan file's sha256 (64 lowercase hex digits)")
        if limit is not None and (type(limit) is not int or not 0 <= limit <= 10 ** 9):
            raise Refusal(400, "body", "field 'limit': expected a whole number of runs (0 to 10^9) or null")
        done = self.table.approve_hash(h, limit, who)
        left = self.table.approvals.get(h, 0) if h in self.table.approvals else 0
        self.log.event("approved", plan_hash=h, client=who, decision="hash", limit=limit,
                       runs=[r.run_id for r in done], remaining="unlimited" if limit is None else left)
        return {"approved": [r.run_id for r in done], "plan_hash": h,
                "remaining": "unlimited" if limit is None else left}

    # ---- housekeeping --------------------------------------------------------------

    def _reap(self):
        while not self._stop.wait(0.25):
            try:
                self.table.expire(execute.release)
            except Exception as e:  # noqa: BLE001 — the reaper never dies
                self.log.event("error", where="reaper", message=f"{type(e).__name__}: {e}")

    def shutdown(self, wait: float = 5.0):
        """Cancel every run, release every listener, wait a little for run threads."""
        self._stop.set()
        threads = []
        for r in self.table.active():
            with self.table.lock:
                if r.state == "running":
                    r.cancel_reason = "the daemon is shutting down"
                    if r.comm is not None:
                        try:
                            r.comm.fail(execute.Cancelled(r.cancel_reason))
                        except Exception:  # noqa: BLE001
                            pass
                    if r.thread is not None:
                        threads.append(r.thread)
                elif r.state not in FINAL:
                    execute.release(r)
                    r.error = {"rule": "shutdown", "message": "the daemon shut down"}
                    self.table.set_state(r, "cancelled", outcome="cancelled")
        end = time.monotonic() + wait
        for t in threads:
            t.join(max(0.0, end - time.monotonic()))
        for r in self.table.all():
            execute.release(r)
        self.serving.shutdown()
        self.log.event("stopped", runs=len(self.table.all()))
