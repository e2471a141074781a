"""A secret-shared model served to clients: the orchestrator's and the client's side.

    handle = cluster.share_model("cnn", owner="alice", workers=["w1", "w2", "w3"])
    svc = cluster.serve(handle, model=SeedCNN(), input_shape=(1, 28, 28), max_requests=3)
    logits = planc.Client(cluster).query("cnn", image)       # f32[1, 10], seen by this client only
    svc.stop()                                               # the mesh and every share released

- ``share_model``: asks the model owner's worker to secret-share the weights it holds
  under ``<model>/<param>`` across the serving workers; the owner's daemon sends each
  worker its share itself (planc/worker/serving.py). This side gets a ``Handle``: the
  handle, the workers, the weights' shapes — no value, no share.
- ``serve``: traces the (public) architecture once per batch size (1, 2, 4, ... up to
  ``max_batch``) with the weights as ``load``s of ``<model>/<param>`` owned by the model
  owner — a *client* party of these plans, whose shares come from the stored state — and
  the batch as a load owned by the ``client`` party, revealed to it; ships the plans to
  the serving workers and the dealer, which check each against their own policies, open
  the service's mesh and answer queries until the request limit, a stop or a fault.
- ``Client.query`` (serving_client.py): encodes x in fixed point, splits it into one additive share per
  serving worker and POSTs each its share (in parallel); each answers with its share of
  the logits for this query only; their sum, decoded, is the answer.

Every call has a timeout; a refusal or a failure is a ``ServingError`` naming the worker
(and the party the service lost, when one was lost).
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import torch

from .serving_client import Client, ServingError, _host  # noqa: F401  (planc.Client, planc.ServingError)

WINDOW_MS = 5.0  # the leader's batching window: queries within it of the first share one run
MAX_BATCH = 16


@dataclass
class Handle:
    """A model's shares at the serving workers (from ``share_model``)."""

    handle: str
    model: str
    owner: str
    workers: list
    tags: dict  # tag -> {"dtype", "shape"}
    frac: int = 16

    def __str__(self):
        return self.handle


def share_model(cluster, model: str, *, owner: str, workers, timeout: float | None = None) -> Handle:
    """The owner's worker shares model `model` across `workers` (2 to 8 names, in rank
    order); the first one leads the services on it."""
    workers = list(workers)
    bad = [w for w in [owner, *workers] if w not in cluster.workers]
    if bad:
        raise ServingError(bad[0], f"not a worker of this cluster (workers: {', '.join(cluster.workers)})")
    if owner in workers:
        raise ServingError(owner, "the model owner cannot also serve its own model's shares: choose other workers")
    d = cluster._call(owner, "POST", f"/v1/models/{model}/share", json={"workers": {w: cluster.urls[w] for w in workers}},
                      timeout=timeout or cluster.timeout)
    h = Handle(d["handle"], d["model"], d["owner"], d["workers"], d["tags"], d.get("frac", 16))
    cluster.__dict__.setdefault("_handles", {})[h.handle] = h
    return h


def _handle(cluster, h) -> Handle:
    if isinstance(h, Handle):
        return h
    known = cluster.__dict__.get("_handles", {})
    if h in known:
        return known[h]
    hits = [x for x in known.values() if x.model == h]
    if hits:
        return hits[-1]
    raise ServingError(None, f"no shared model {h!r} (share it first with cluster.share_model)")


def _sizes(max_batch: int) -> list:
    out, b = [], 1
    while b < max_batch:
        out.append(b)
        b *= 2
    return out + [max_batch]


def plans_for(h: Handle, model: torch.nn.Module, input_shape, sizes) -> dict:
    """{batch size: plan-file bytes} of the served model (see the module docstring)."""
    from . import shells
    from .api import trace

    parties = [*h.workers, h.owner, "client"]
    out = {}
    for b in sizes:
        def fn():
            x = shells.load("query", owner="client", shape=(b, *input_shape))
            net = shells.owned(model, owner=h.owner, tag=h.model)
            return shells.reveal(net(x), to="client")
        out[b] = trace(fn, parties=parties).to_bytes()
    return out


class Service:
    """A running service: ``info()``, ``stop()`` (also releases the shares)."""

    def __init__(self, cluster, h: Handle, sid: str, limit: int, input_shape):
        self.cluster, self.handle, self.service_id, self.limit = cluster, h, sid, limit
        self.input_shape = tuple(input_shape)
        self.daemons = [*h.workers, cluster.dealer_name]

    def info(self, worker: str | None = None) -> dict:
        return self.cluster._call(worker or self.handle.workers[0], "GET", f"/v1/services/{self.service_id}")

    def stop(self, *, release: bool = True, timeout: float = 30.0) -> dict:
        """Stop serving (the leader tells every rank; the mesh closes) and, with `release`,
        drop the model's shares at every serving worker. {daemon: final view or error}."""
        return stop(self.cluster, self, release=release, timeout=timeout)

    def __repr__(self):
        return f"<Service {self.service_id} of {self.handle.model} on {', '.join(self.handle.workers)}>"


def serve(cluster, handle, *, model: torch.nn.Module, input_shape, max_requests: int | None = None,
          max_batch: int = MAX_BATCH, window_ms: float = WINDOW_MS, timeout: float = 60.0) -> Service:
    """Start serving `handle` (a Handle or the model's name): returns once every serving
    worker and the dealer have accepted the plans and joined the service's mesh."""
    h = _handle(cluster, handle)
    input_shape = tuple(int(s) for s in input_shape)
    sizes = _sizes(max_batch)
    raw = plans_for(h, model, input_shape, sizes)
    import base64

    sid = f"{h.model}-{uuid.uuid4().hex[:10]}"
    body = {"service_id": sid, "handle": h.handle, "model": h.model, "owner": h.owner, "workers": h.workers,
            "dealer": cluster.dealer_name, "input_shape": list(input_shape), "max_requests": max_requests,
            "window_ms": window_ms, "timeout": timeout,
            "plans": {str(b): base64.b64encode(r).decode("ascii") for b, r in raw.items()}}
    daemons = [*h.workers, cluster.dealer_name]
    got = cluster._each(daemons, lambda w: cluster._call(w, "POST", "/v1/services", json=body, timeout=timeout))
    errors = [e for e in got.values() if isinstance(e, Exception)]
    svc = Service(cluster, h, sid, 0, input_shape)
    if errors:
        stop(cluster, svc, release=False, timeout=10.0)
        raise errors[0]
    limit = min(g["limit"] for g in got.values())
    svc.limit = limit
    peers = {str(r): {"host": _host(cluster.urls[w]), "port": got[w]["data_port"], "identity": w}
             for r, w in enumerate(daemons)}
    res = cluster._each(daemons, lambda w: cluster._call(w, "POST", f"/v1/services/{sid}/start",
                                                         json={"peers": peers, "limit": limit}))
    errors = [e for e in res.values() if isinstance(e, Exception)]
    if errors:
        stop(cluster, svc, release=False, timeout=10.0)
        raise errors[0]
    end = time.monotonic() + timeout
    for w in daemons:
        while True:
            v = cluster._call(w, "GET", f"/v1/services/{sid}", params={"wait": 5.0, "while": "accepted"},
                              timeout=5.0 + cluster.timeout)
            if v["state"] == "serving" or v["state"] in ("done", "stopped", "failed"):
                break
            if time.monotonic() > end:
                stop(cluster, svc, release=False, timeout=10.0)
                raise ServingError(w, f"service {sid} did not start within {timeout:g} s (still {v['state']})",
                                   rule="timeout")
        if v["state"] != "serving":
            raise ServingError(w, f"service {sid} {v['state']}: {v.get('error') or v.get('why')}", rule="service")
    while time.monotonic() < end:  # the dealer's pool holds material for every size: no query waits for it
        pool = cluster._call(cluster.dealer_name, "GET", f"/v1/services/{sid}").get("pool") or {}
        if all(k > 0 for k in (pool.get("ready") or {"": 0}).values()):
            break
        time.sleep(0.05)
    return svc


def stop(cluster, svc_or_handle, *, release: bool = True, timeout: float = 30.0) -> dict:
    """Stop the service (or every service this cluster started on a handle) and release
    the shares. Unreachable daemons are reported, not raised: {daemon: view | error}."""
    svc = svc_or_handle if isinstance(svc_or_handle, Service) else None
    h = svc.handle if svc is not None else _handle(cluster, svc_or_handle)
    out = {}
    sids = [svc.service_id] if svc is not None else _services_of(cluster, h)
    daemons = [*h.workers, cluster.dealer_name]
    for sid in sids:
        cluster._each(daemons[:1], lambda w: cluster._call(w, "POST", f"/v1/services/{sid}/stop", json={}, timeout=10))
        cluster._each(daemons[1:], lambda w: cluster._call(w, "POST", f"/v1/services/{sid}/stop", json={}, timeout=10))
        end = time.monotonic() + timeout

        def final(w):
            while True:
                v = cluster._call(w, "GET", f"/v1/services/{sid}", params={"wait": 2.0, "while": "serving"}, timeout=12)
                if v["state"] in ("done", "stopped", "failed") or time.monotonic() > end:
                    return v

        out.update(cluster._each(daemons, final))
    if release:
        rel = cluster._each(h.workers, lambda w: cluster._call(w, "POST", f"/v1/serving/state/{h.handle}/release",
                                                               json={}, timeout=10))
        for w, r in rel.items():
            out.setdefault(w, {})
            if isinstance(out[w], dict):
                out[w] = {**out[w], "released": r if isinstance(r, Exception) else r.get("released")}
        cluster.__dict__.get("_handles", {}).pop(h.handle, None)
    return out


def _services_of(cluster, h: Handle) -> list:
    try:
        d = cluster._call(h.workers[0], "GET", "/v1/serving")
    except RuntimeError:  # planc.ClusterError: that worker is unreachable
        return []
    return [s["service_id"] for s in d["services"] if s["handle"] == h.handle and s["state"] in ("accepted", "serving")]
