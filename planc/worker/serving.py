"""Serving a secret-shared model: the daemon's side (state, checks, routes).

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

import hashlib
import threading
import time
import uuid
from dataclasses import dataclass, field

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from .wire import Refusal, b64, encode_tensors, message, read_message, tensors

KEYS = ("owners", "share_with", "max_requests", "max_batch")
MAX_BATCH = 64
QUERY_WAIT = 60.0


@dataclass(frozen=True)
class ServingConfig:
    """``[serving]``: owners (identities whose model shares this worker accepts),
    share_with (identities this worker may send shares of its own models to),
    max_requests (the most queries one service may answer here), max_batch."""

    owners: tuple = ()
    share_with: tuple = ()
    max_requests: int | None = None
    max_batch: int = 16


def parse_config(d, bad, *, identities, show) -> ServingConfig:
    """The ``[serving]`` table, key by key (ConfigError through `bad`); `identities` and
    `show` are config.py's readers (config.py calls this: no import back)."""
    if not isinstance(d, dict):
        raise bad("serving", f"expected a table [serving] with {', '.join(KEYS)}, got {show(d)}")
    extra = sorted(set(d) - set(KEYS))
    if extra:
        raise bad(f"serving.{extra[0]}", f"unknown key; [serving] takes {', '.join(KEYS)}")
    out = {k: identities(d[k], bad, f"serving.{k}") for k in ("owners", "share_with") if k in d}
    for k, hi in (("max_requests", 10 ** 9), ("max_batch", MAX_BATCH)):
        if k in d:
            v = d[k]
            if type(v) is not int or not 1 <= v <= hi:
                raise bad(f"serving.{k}", f"expected a whole number from 1 to {hi:,}, got {show(v)}")
            out[k] = v
    return ServingConfig(**out)


@dataclass
class State:
    """A model's shares held here under a handle."""

    handle: str
    model: str
    owner: str
    requester: str
    workers: list
    rank: int
    frac: int
    shares: dict  # tag -> int64 share
    created: float = field(default_factory=time.time)

    def view(self) -> dict:
        return {"handle": self.handle, "model": self.model, "owner": self.owner, "requester": self.requester,
                "workers": self.workers, "rank": self.rank, "frac": self.frac,
                "tags": {t: {"dtype": "float32", "shape": list(s.shape)} for t, s in self.shares.items()}}


@dataclass(frozen=True)
class ServedPlan:
    """One batch size's plan, checked: its graph, the value name of each weight (-> tag)
    and of the query input."""

    plan: object
    sha256: str
    weights: dict
    query: str

    @property
    def graph(self):
        return self.plan.graph

    @property
    def constants(self):
        return self.plan.constants

    @property
    def frac(self) -> int:
        from planc.ir.plan import settings

        return settings(self.plan.meta)["frac_bits"]


def _cfg(daemon) -> ServingConfig:
    return getattr(daemon.cfg, "serving", None) or ServingConfig()


class Table:
    """The shares and services of one daemon."""

    def __init__(self, daemon):
        self.d = daemon
        self.states: dict[str, State] = {}
        self.services: dict = {}
        self.lock = threading.RLock()

    # ---- the owner: share a model ---------------------------------------------------------
    def share(self, who, model: str, body: dict) -> dict:
        import httpx
        import torch

        from planc.runtime import fixed, prg

        d, me = self.d, self.d.cfg.name
        workers = body.get("workers")
        if not isinstance(workers, dict) or not 2 <= len(workers) <= 8 or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in workers.items()):
            raise Refusal(400, "body", "field 'workers': expected {name: \"https://host:port\"} of 2 to 8 serving "
                                       "workers, in rank order")
        if me in workers:
            raise Refusal(400, "workers", f"{me} owns {model!r}: the model owner does not serve its own shares")
        allowed = _cfg(d).share_with
        for w in workers:
            if w not in allowed:
                raise Refusal(403, "share_with", f"{me} shares models only with {', '.join(allowed) or 'nobody'} "
                                                 f"([serving] share_with); not with {w!r}")
        cat = d.catalogue
        tags = sorted(t for t in (cat.tags() if cat is not None else []) if t.startswith(model + "/"))
        if not tags:
            raise Refusal(404, "catalogue", f"{me} holds no weights of model {model!r} (no tags {model}/...)")
        weights = {}
        for t in tags:
            e = cat.get(t)
            if e.dtype != "f32":
                raise Refusal(409, "catalogue", f"tag {t!r} is {e.type_text()}; served weights are float32")
            weights[t] = e.load().to(torch.float32)
        frac, n = fixed.DEFAULT_FRAC_BITS, len(workers)
        parts = [{} for _ in range(n)]
        for t, w in weights.items():
            x = fixed.encode(w, frac)
            seed, rest = prg.new_seed(), torch.zeros_like(x)
            for i in range(n - 1):
                r = prg.ring(seed, "model", i, tuple(x.shape))
                parts[i][t] = r
                rest += r
            parts[n - 1][t] = x - rest
        handle = f"{model}-{uuid.uuid4().hex[:10]}"
        names = list(workers)
        meta = {t: {"dtype": "float32", "shape": list(w.shape)} for t, w in weights.items()}
        ctx = d.identity.client_context()
        ctx.check_hostname = True  # each worker's certificate must name it (sni_hostname below): checked
        # in the handshake, before a byte of its share is sent

        def send(i):
            w = names[i]
            body = {"handle": handle, "model": model, "owner": me, "requester": who, "workers": names, "rank": i,
                    "frac": frac, "tags": meta, "shares": encode_tensors(parts[i])}
            try:
                with httpx.Client(base_url=workers[w], verify=ctx, timeout=30.0) as c:
                    r = c.post("/v1/serving/state", json=body, extensions={"sni_hostname": w})
                    peer = _server_name(r)
            except httpx.HTTPError as e:
                raise Refusal(502, "connection", f"{me} could not reach serving worker {w} at {workers[w]}: "
                                                 f"{type(e).__name__}: {e}") from None
            if peer != w:
                raise Refusal(502, "identity", f"{workers[w]} presented a certificate of {peer!r}, not {w!r}")
            if r.status_code >= 400:
                raise Refusal(502, "share", f"serving worker {w} refused the shares: {r.text[:500]}")
            return w

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(n) as ex:
            futs = [ex.submit(send, i) for i in range(n)]
        errors = [f.exception() for f in futs if f.exception() is not None]
        if errors:  # all or nothing: the workers that took their shares drop them again
            for i, f in enumerate(futs):
                if f.exception() is None:
                    try:
                        with httpx.Client(base_url=workers[names[i]], verify=ctx, timeout=10.0) as c:
                            c.post(f"/v1/serving/state/{handle}/release", json={},
                                   extensions={"sni_hostname": names[i]})
                    except httpx.HTTPError:
                        pass
        d.log.event("shared", model=model, handle=handle, client=who, workers=names,
                    outcome="error" if errors else "ok")
        if errors:
            raise errors[0]
        return {"handle": handle, "model": model, "owner": me, "workers": names, "frac": frac, "tags": meta}

    # ---- a serving worker: hold shares -------------------------------------------------------
    def store(self, who, body: dict) -> dict:
        import torch

        me = self.d.cfg.name
        if who not in _cfg(self.d).owners:
            raise Refusal(403, "owners", f"{me} holds model shares only from {', '.join(_cfg(self.d).owners) or 'nobody'}"
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
        spec = _spec(body)
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
        cfg = _cfg(d)
        if spec["sizes"][-1] > cfg.max_batch:
            raise Refusal(403, "max_batch", f"{me} runs batches of at most {cfg.max_batch} ([serving] max_batch); "
                                            f"the service asks for {spec['sizes'][-1]}")
        limits = [x for x in (spec["max_requests"], cfg.max_requests) if x is not None]
        if not limits:
            raise Refusal(400, "limit", f"a service needs a request limit: give max_requests, or set [serving] "
                                        f"max_requests in {me}'s configuration")
        spec["limit"] = min(limits)
        plans = {b: _check_plan(raw, b, spec, me, rank, d, st) for b, raw in spec["plans"].items()}
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
            s._end("failed", error=f"{self.d.cfg.name} shut down")


def _server_name(response) -> str | None:
    """The CN of the server certificate an httpx response came over."""
    from planc.runtime.comm.tls import peer_name

    stream = response.extensions.get("network_stream")
    sslobj = stream.get_extra_info("ssl_object") if stream is not None else None
    return peer_name(sslobj) if sslobj is not None else None


def _spec(body: dict) -> dict:
    """A service request's fields, typed (Refusal 400 naming the first bad one)."""
    import re

    fields = ("service_id", "handle", "model", "owner", "workers", "dealer", "plans", "input_shape", "max_requests",
              "window_ms", "timeout")
    extra = sorted(set(body) - set(fields))
    if extra:
        raise Refusal(400, "body", f"field {extra[0]!r}: unknown; a service takes {', '.join(fields)}")
    sid = body.get("service_id")
    if not isinstance(sid, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", sid):
        raise Refusal(400, "service_id", "field 'service_id': 1 to 64 of A-Z a-z 0-9 _ . -")
    for k in ("handle", "model", "owner", "dealer"):
        if not isinstance(body.get(k), str) or not body[k]:
            raise Refusal(400, "body", f"field {k!r}: expected a string")
    ws = body.get("workers")
    if not isinstance(ws, list) or len(ws) < 2 or not all(isinstance(w, str) for w in ws):
        raise Refusal(400, "body", "field 'workers': expected the serving workers' names, in rank order")
    shape = body.get("input_shape")
    if not isinstance(shape, list) or not shape or not all(type(s) is int and s > 0 for s in shape):
        raise Refusal(400, "body", "field 'input_shape': expected one query's shape, e.g. [1, 28, 28]")
    plans = body.get("plans")
    if not isinstance(plans, dict) or not plans:
        raise Refusal(400, "body", "field 'plans': expected {batch size: base64 plan file}")
    try:
        raw = {int(k): b64(f"plans.{k}", v) for k, v in plans.items()}
    except ValueError:
        raise Refusal(400, "body", "field 'plans': keys are batch sizes") from None
    mr, win, t = body.get("max_requests"), body.get("window_ms", 5), body.get("timeout", 60)
    if mr is not None and (type(mr) is not int or mr < 1):
        raise Refusal(400, "body", "field 'max_requests': a whole number >= 1, or null")
    if type(win) not in (int, float) or not 0 <= win <= 1000:
        raise Refusal(400, "body", "field 'window_ms': milliseconds from 0 to 1000")
    if type(t) not in (int, float) or not 1 <= t <= 3600:
        raise Refusal(400, "body", "field 'timeout': seconds from 1 to 3600")
    return {"service_id": sid, "handle": body["handle"], "model": body["model"], "owner": body["owner"],
            "workers": ws, "dealer": body["dealer"], "plans": raw, "sizes": sorted(raw), "input_shape": shape,
            "max_requests": mr, "window_ms": float(win), "timeout": float(t)}


def _check_plan(raw: bytes, b: int, spec: dict, me: str, rank: int, d, st) -> ServedPlan:
    """A batch size's plan: every check a run submission meets (submit.check: plan file,
    party mapping, this daemon's policy and limits), then its shape as a served model's:
    the owner's loads are exactly shares held here, one query load of (b, *input_shape)
    owned by the ``client`` party, one output revealed to it."""
    from . import submit

    workers, owner = spec["workers"], spec["owner"]
    sub = {"run_id": f"{spec['service_id']}.b{b}", "plan": _b64text(raw), "timeout": spec["timeout"],
           "party": "dealer" if rank == len(workers) else workers[rank], "parties": {w: w for w in workers},
           "clients": {owner: owner, "client": "client"}, "dealer": spec["dealer"]}
    s = submit.check(sub, me=me, role=d.cfg.role, policy=d.policy, catalogue=d.catalogue, rid=sub["run_id"])
    g = s.plan.graph
    k_owner, k_client = len(workers), len(workers) + 1
    weights, query = {}, None
    for node in g.loads():
        tag, t, own = node.attr("tag"), node.result.type, node.attr("owner")
        if own == k_owner:
            if st is not None and (tag not in st.shares or list(st.shares[tag].shape) != list(t.shape)):
                have = list(st.shares[tag].shape) if tag in st.shares else "no share"
                raise Refusal(409, "shares", f"plan for batch {b}: {node.where()}: weight {tag!r} of shape "
                                             f"{list(t.shape)}; {me} holds {have}")
            weights[node.result.name] = tag
        elif own == k_client and query is None:
            want = [b, *spec["input_shape"]]
            if list(t.shape) != want or t.dtype != "f32":
                raise Refusal(400, "plan", f"plan for batch {b}: the query is {t.dtype}{list(t.shape)}, expected "
                                           f"f32{want}")
            query = node.result.name
        else:
            raise Refusal(400, "plan", f"plan for batch {b}: {node.where()}: a served plan loads only the owner's "
                                       f"weights and one query")
    outs = g.outputs
    if query is None or len(outs) != 1 or not (outs[0].type.vis.is_private and outs[0].type.vis.owner == k_client):
        raise Refusal(400, "plan", f"plan for batch {b}: expected one query load and one output revealed to "
                                   f"'client'")
    return ServedPlan(s.plan, hashlib.sha256(raw).hexdigest(), weights, query)


def _b64text(raw: bytes) -> str:
    import base64

    return base64.b64encode(raw).decode("ascii")


# ---- routes ----------------------------------------------------------------------------------

def add_routes(app, daemon, *, guard, json_body, read_body, peer):
    """Register the serving routes on the daemon's FastAPI app (app.py calls this)."""
    table = daemon.serving

    @app.post("/v1/models/{model}/share")
    async def share(request: Request, model: str):
        async def go():
            body = await json_body(request)
            return await anyio.to_thread.run_sync(table.share, peer(request), model, body)
        return await guard(request, go)

    @app.post("/v1/serving/state")
    async def store(request: Request):
        async def go():
            body = await json_body(request)
            return JSONResponse(await anyio.to_thread.run_sync(table.store, peer(request), body), status_code=201)
        return await guard(request, go, allowed=False)  # [serving] owners decides

    @app.post("/v1/serving/state/{handle}/release")
    async def release(request: Request, handle: str):
        async def go():
            return table.release(peer(request), handle)
        return await guard(request, go, allowed=False)  # requester, owner or admin

    @app.get("/v1/serving")
    async def listing(request: Request):
        async def go():
            return table.listing(peer(request))
        return await guard(request, go)

    @app.post("/v1/services")
    async def accept(request: Request):
        async def go():
            body = await json_body(request)
            return JSONResponse(await anyio.to_thread.run_sync(table.accept, peer(request), body), status_code=201)
        return await guard(request, go)

    @app.post("/v1/services/{sid}/start")
    async def start(request: Request, sid: str):
        async def go():
            return table.start(peer(request), sid, await json_body(request))
        return await guard(request, go)

    @app.get("/v1/services/{sid}")
    async def get(request: Request, sid: str):
        async def go():
            svc = table.service_for(sid)
            w = request.query_params.get("wait")
            if w is not None:
                try:
                    await svc.wait_change(min(max(float(w), 0.0), 30.0), request.query_params.get("while"))
                except ValueError:
                    raise Refusal(400, "query", f"wait: expected seconds, got {w!r}") from None
            return svc.view()
        return await guard(request, go)

    @app.post("/v1/services/{sid}/stop")
    async def stop(request: Request, sid: str):
        async def go():
            raw = await read_body(request, daemon.cfg.max_body)
            body = json_of(raw)
            reason = body.get("reason") if isinstance(body, dict) else None
            return table.stop(peer(request), sid, reason[:500] if isinstance(reason, str) else None)
        return await guard(request, go)

    @app.post("/v1/services/{sid}/query")
    async def query(request: Request, sid: str):
        async def go():
            svc = table.service_for(sid)
            raw = await read_body(request, daemon.cfg.max_body)
            try:
                head, ts = read_message(raw)
                qid, x = head["qid"], ts["x"]
                assert isinstance(qid, str) and 0 < len(qid) <= 64
            except Exception:  # noqa: BLE001 — any malformed body
                raise Refusal(400, "body", "expected a query message: header {qid}, tensor x (this worker's "
                                           "share)") from None
            q = svc.submit(peer(request), qid, x)
            try:
                done = await q.wait(min(svc.timeout, QUERY_WAIT))
            finally:
                svc.forget(q)
            if not done:
                raise Refusal(504, "timeout", f"query {qid} was not answered within {min(svc.timeout, QUERY_WAIT):g} s "
                                              f"at {daemon.cfg.name}")
            if q.error is not None:
                raise q.error
            head, ts = q.result
            return Response(message(head, ts), media_type="application/octet-stream")
        return await guard(request, go)


def json_of(raw: bytes):
    from .submit import parse_body

    return parse_body(raw) if raw.strip() else {}
