"""The serving routes on a daemon's FastAPI app (app.py registers them: ``add_routes``).

Every route runs in app.py's guard (a Refusal becomes its JSON 4xx; the caller's identity
is the TLS peer's). A query (``POST /v1/services/{id}/query``: a binary message, header
``{qid}``, tensor ``x``: this worker's share) is held open until its batch is done and
answered in the same request (binary: ``{extra, dtype, ...}``, ``y``: this worker's share
of the answer), or refused; it waits at most QUERY_WAIT seconds (or the service's
timeout).
"""
from __future__ import annotations

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from .wire import Refusal, message, read_message

QUERY_WAIT = 60.0


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
