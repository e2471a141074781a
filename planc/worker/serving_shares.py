"""A model's shares: made by its owner's worker, held by the serving workers.

The **model owner's worker** (alice: its catalogue holds the weights under
``<model>/<param>``) secret-shares a model once when an orchestrator asks (``share``):
every weight encoded in fixed point and split into n additive shares, one per serving
worker, each sent by alice's daemon *directly* to that worker over HTTPS with alice's own
certificate (and the worker's checked against the name it must have, in the handshake,
before a byte of its share is sent). All or nothing: when one worker refuses, those that
took theirs drop them again. The orchestrator gets the handle and the weights' shapes,
never a value or a share. Alice shares only with identities her ``[serving]
share_with`` lists. A serving worker keeps what it was sent as a ``State``.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from .serving_config import cfg_of
from .wire import Refusal, encode_tensors


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


def share(d, who, model: str, body: dict) -> dict:
    """The owner's side (see the module docstring): `d` the owner's daemon."""
    import httpx
    import torch

    from planc.runtime import fixed, prg

    me = d.cfg.name
    workers = body.get("workers")
    if not isinstance(workers, dict) or not 2 <= len(workers) <= 8 or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in workers.items()):
        raise Refusal(400, "body", "field 'workers': expected {name: \"https://host:port\"} of 2 to 8 serving "
                                   "workers, in rank order")
    if me in workers:
        raise Refusal(400, "workers", f"{me} owns {model!r}: the model owner does not serve its own shares")
    allowed = cfg_of(d).share_with
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


def _server_name(response) -> str | None:
    """The CN of the server certificate an httpx response came over."""
    from planc.runtime.comm.tls import peer_name

    stream = response.extensions.get("network_stream")
    sslobj = stream.get_extra_info("ssl_object") if stream is not None else None
    return peer_name(sslobj) if sslobj is not None else None
