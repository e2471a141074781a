"""Serving a secret-shared model: the daemon's side (state, checks, routes).

Modules: serving_config ([serving]), serving_shares (a model's shares: the owner
shares, a worker holds), serving_plans (a service request and its plans, checked),
serving_routes (the HTTP routes), serving_run (a service: its queries, mesh and life),
serving_loops (the leader's batching, a follower's and the dealer's loops over the mesh),
serving_pool (the dealer's material made ahead). This one holds a daemon's ``Table``.

Three roles meet here:

- the **model owner's worker** (alice: its catalogue holds the weights under
  ``<model>/<param>``) secret-shares a model once when an orchestrator asks
  (``share``): every weight encoded in fixed point and split into n additive shares, one
  per serving worker, each sent by alice's daemon *directly* to that worker over HTTPS
  with alice's own certificate (and the worker's checked against the name it must have).
  The orchestrator gets the handle and the weights' shapes, never a value or a share.
  Alice shares only with identities her ``[serving] share_with`` lists;
- a **serving worker** stores its shares under the handle (``store``: only from an
  identity its ``[serving] owners`` lists), accepts a service on them (``accept``: each
  batch size's plan read and admitted under its *own* policy, exactly as a run
  submission is — submit.check — and matched against the shares it holds), joins the
  service's mesh (``start``) and answers queries (serving_run.py);
- the **dealer** accepts the same service (its plans admitted as the dealer) and starts
  filling its pool of material at once.

Routes (HTTPS with client certificates, JSON unless said):

    POST /v1/models/{model}/share        orchestrator -> owner: {workers: {name: url}} -> handle, tags
    POST /v1/serving/state               owner -> worker: its shares of one model
    POST /v1/serving/state/{h}/release   requester, owner or admin: drop the shares
    GET  /v1/serving                     {states, services} the caller may see
    POST /v1/services                    accept a service -> {state, data_port, limit}
    POST /v1/services/{id}/start         {peers} -> the service
    GET  /v1/services/{id}?wait=S&while=STATE   the service (long-poll while in STATE)
    POST /v1/services/{id}/stop          {reason}
    POST /v1/services/{id}/query         binary ({qid}, {x: share}) -> binary ({extra, dtype}, {y: share})
"""
from __future__ import annotations

import threading

from .serving_config import ServingConfig, cfg_of, parse_config  # noqa: F401  (config.py reads [serving] here)
from .serving_plans import check_plan, parse_spec
from .serving_routes import add_routes  # noqa: F401  (app.py registers them from here)
from .serving_shares import State, share
from .wire import Refusal, tensors


class Table:
    """The shares and services of one daemon."""

    def __init__(self, daemon):
        self.d = daemon
        self.states: dict[str, State] = {}
        self.services: dict = {}
        self.lock = threading.RLock()

    # ---- the owner: share a model ---------------------------------------------------------
    def share(self, who, model: str, body: dict) -> dict:
        """The model owner: share `model` across the serving workers (serving_shares.py)."""
        return share(self.d, who, model, body)

    # ---- a serving worker: hold shares -------------------------------------------------------
    def store(self, who, body: dict) -> dict:
        import torch

        me = self.d.cfg.name
        if who not in cfg_of(self.d).owners:
            raise Refusal(403, "owners", f"{me} holds model shares only from {', '.join(cfg_of(self.d).owners) or 'nobody'}"
                                         f" ([serving] owners); not from {who!r}")
        if self.d.cfg.role == "dealer":
            raise Refusal(400, "role", "the dealer holds no model shares")
        h, model, workers, rank = body.get("handle"), body.get("model"), body.get("workers"), body.get("rank")
        if not (isinstance(h, str) and isinstance(model, str) and isinstance(workers, list) and type(rank) is int
                and 0 <= rank < len(workers) and workers[rank] == me and body.get("owner") == who):
            raise Refusal(400, "body", f"expected {{handle, model, owner (= {who}), requester, workers, rank (of "
                                       f"{me}), frac, tags, shares}}")
        shares = tensors("shares", body.get("shares"))
        meta = body.get("tags") or {}
        if set(shares) != set(meta) or any(s.dtype != torch.int64 or list(s.shape) != meta[t].get("shape")
                                           for t, s in shares.items()):
            raise Refusal(400, "shares", "field 'shares': int64 shares of exactly the tags listed, in their shapes")
        with self.lock:
            if h in self.states:
                raise Refusal(409, "handle", f"handle {h!r} is taken at {me}")
            self.states[h] = State(h, model, who, str(body.get("requester")), workers, rank,
                                   int(body.get("frac", 16)), shares)
        self.d.log.event("shares_stored", handle=h, model=model, owner=who, tags=len(shares))
        return {"handle": h, "stored": len(shares)}

    def release(self, who, handle: str) -> dict:
        with self.lock:
            st = self.states.get(handle)
            if st is None:
                raise Refusal(404, "handle", f"no model shares under {handle!r} at {self.d.cfg.name}")
            if who not in (st.requester, st.owner) and not self.d.cfg.admin(who):
                raise Refusal(403, "identity", f"{who!r} may not release {handle!r}")
            live = [s.sid for s in self.services.values() if s.spec["handle"] == handle and s.state in
                    ("accepted", "serving")]
            if live:
                raise Refusal(409, "state", f"service {live[0]} still uses {handle!r}: stop it first")
            del self.states[handle]
        self.d.log.event("shares_released", handle=handle, client=who)
        return {"handle": handle, "released": True}

    def listing(self, who) -> dict:
        with self.lock:
            states = [s.view() for s in self.states.values()
                      if who in (s.requester, s.owner) or self.d.cfg.admin(who)]
            services = [s.view() for s in self.services.values()]
        return {"worker": self.d.cfg.name, "states": states, "services": services}

    # ---- services -------------------------------------------------------------------------------
    def accept(self, who, body: dict) -> dict:
        from .serving_run import Service

        d, me, role = self.d, self.d.cfg.name, self.d.cfg.role
        sid = body.get("service_id")
        spec = parse_spec(body)
        workers = spec["workers"]
        st = None
        if role == "dealer":
            if spec["dealer"] != me:
                raise Refusal(400, "party", f"field 'dealer': {spec['dealer']!r}, but this is {me!r}")
            rank = len(workers)
        else:
            with self.lock:
                st = self.states.get(spec["handle"])
            if st is None:
                raise Refusal(404, "handle", f"no model shares under {spec['handle']!r} at {me}")
            if who != st.requester and not d.cfg.admin(who):
                raise Refusal(403, "identity", f"{spec['handle']!r} was shared for {st.requester!r}; {who!r} may not "
                                               f"serve it")
            if workers != st.workers or spec["owner"] != st.owner or spec["model"] != st.model:
                raise Refusal(400, "workers", f"the shares of {spec['handle']!r} were made for {st.workers} by "
                                              f"{st.owner}; the service names {workers} and {spec['owner']}")
            rank = st.rank
        cfg = cfg_of(d)
        if spec["sizes"][-1] > cfg.max_batch:
            raise Refusal(403, "max_batch", f"{me} runs batches of at most {cfg.max_batch} ([serving] max_batch); "
                                            f"the service asks for {spec['sizes'][-1]}")
        limits = [x for x in (spec["max_requests"], cfg.max_requests) if x is not None]
        if not limits:
            raise Refusal(400, "limit", f"a service needs a request limit: give max_requests, or set [serving] "
                                        f"max_requests in {me}'s configuration")
        spec["limit"] = min(limits)
        plans = {b: check_plan(raw, b, spec, me, rank, d, st) for b, raw in spec["plans"].items()}
        spec["frac"] = next(iter(plans.values())).frac
        with self.lock:
            if sid in self.services:
                raise Refusal(409, "service_id", f"service id {sid!r} is taken at {me}")
            try:
                svc = Service(spec, plans, st.shares if st is not None else None, rank=rank, identity=d.identity,
                              policy=d.policy, log=d.log, data_host=d.cfg.data_host)
            except OSError as e:
                raise Refusal(503, "data_port", f"could not open a data port: {e}") from None
            svc.requester = who
            self.services[sid] = svc
        d.log.event("service_accepted", service=sid, model=spec["model"], client=who, rank=rank, limit=spec["limit"],
                    plans={str(b): p.sha256 for b, p in plans.items()})
        return {"service_id": sid, "state": svc.state, "data_port": svc.data_port, "limit": svc.limit,
                "plans": {str(b): p.sha256 for b, p in plans.items()}}

    def service_for(self, sid: str, who=None, *, owner_only=False):
        with self.lock:
            svc = self.services.get(sid)
        if svc is None:
            raise Refusal(404, "service", f"no service {sid!r} at {self.d.cfg.name}")
        if owner_only and who != svc.requester and not self.d.cfg.admin(who):
            raise Refusal(403, "identity", f"service {sid!r} belongs to {svc.requester!r}")
        return svc

    def start(self, who, sid: str, body: dict) -> dict:
        svc = self.service_for(sid, who, owner_only=True)
        peers, limit = body.get("peers"), body.get("limit")
        if type(limit) is not int or not 1 <= limit <= svc.limit:
            raise Refusal(400, "limit", f"field 'limit': expected a whole number from 1 to {svc.limit} (this "
                                        f"worker's limit), got {limit!r}")
        if not isinstance(peers, dict):
            raise Refusal(400, "body", "field 'peers': expected {rank: {host, port, identity}}")
        out = {}
        for r, name in enumerate(svc.spec["workers"] + [svc.spec["dealer"]]):
            if r == svc.rank:
                continue
            v = peers.get(str(r))
            if not isinstance(v, dict) or not isinstance(v.get("host"), str) or type(v.get("port")) is not int:
                raise Refusal(400, "peers", f"field 'peers.{r}': expected {{host, port, identity}} of {name}")
            if v.get("identity") != name:
                raise Refusal(400, "peers", f"field 'peers.{r}': rank {r} is {name!r}, not {v.get('identity')!r}")
            out[r] = (v["host"], v["port"], name)
        svc.limit = limit
        svc.start(out)
        return svc.view()

    def stop(self, who, sid: str, reason: str | None) -> dict:
        svc = self.service_for(sid, who, owner_only=True)
        svc.stop(f"stopped by {who}" + (f": {reason}" if reason else ""))
        return svc.view()

    def shutdown(self):
        with self.lock:
            svcs = list(self.services.values())
            self.states.clear()
        for s in svcs:
            if s.comm is not None:
                try:
                    s.comm.fail(RuntimeError(f"{self.d.cfg.name} is shutting down"))
                except Exception:  # noqa: BLE001
                    pass
            s.end("failed", error=f"{self.d.cfg.name} shut down")
