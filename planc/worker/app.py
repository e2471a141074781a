"""The HTTP API (FastAPI): versioned routes over a ``Daemon`` (daemon.py).

Every route runs inside ``_guard``: a ``Refusal`` becomes its JSON 4xx (wire.py), any
other exception a JSON 500 naming it — logged with its traceback, and the daemon goes
on serving. Unknown paths and methods are JSON 404/405 in the same form. The caller's
identity is what the TLS handshake proved (server.py puts it in the request's scope
as ``planc.peer``); no header or body field can claim one.

Bodies are read with a bound (``max_body``; 413 past it) before any parsing, JSON is
parsed by hand so that a malformed body is a 400 naming the field, and anything slow
(reading a plan, admission's bounds) runs in a worker thread, not on the event loop.

Routes (all JSON unless said):

    GET  /v1/info                      name, role, version, approval, transport, policy
    GET  /v1/catalogue?q=TEXT          {worker, entries: [{tag, owner, dtype, shape, description, meta}]}
    GET  /v1/status                    {name, role, uptime_s, runs, active, pending}
    POST /v1/runs                      submit -> {run_id, state, plan_hash, data_port}
    POST /v1/models                    upload an ONNX model into the catalogue (identities in `uploads`)
    POST /v1/runs/{id}/start           {peers: {rank: {host, port, identity}}} -> the run
    GET  /v1/runs/{id}?wait=S          the run (long-poll up to 30 s for a change of state)
    GET  /v1/runs/{id}/reveals         binary: the caller's (a client's) shares, once
    POST /v1/runs/{id}/cancel          the run
    GET  /v1/pending                   runs waiting for approval, hash approvals
    POST /v1/approve                   {run_id} | {plan_hash, limit} -> {approved, plan_hash, remaining}
"""
from __future__ import annotations

import traceback

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .submit import parse_body
from .wire import Refusal, message

MAX_WAIT = 30.0
_DRAIN = 256 << 20  # bytes of an oversized body read and dropped so the client sees the 413


def peer(request: Request) -> str | None:
    return request.scope.get("planc.peer")


async def read_body(request: Request, limit: int) -> bytes:
    n = request.headers.get("content-length")
    over = False
    if n is not None:
        try:
            over = int(n) > limit
        except ValueError:
            raise Refusal(400, "body", "malformed Content-Length") from None
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            over = True
        if over:
            if total > limit + _DRAIN:
                break
            continue
        chunks.append(chunk)
    if over:
        raise Refusal(413, "max_body", f"the body is larger than this worker's limit of {limit:,} bytes")
    return b"".join(chunks)


def make_app(daemon) -> FastAPI:
    app = FastAPI(title=f"planc {daemon.cfg.role} {daemon.cfg.name}", version="1", openapi_url=None, docs_url=None,
                  redoc_url=None)
    name = daemon.cfg.name

    def refusal(r: Refusal, request: Request | None = None) -> JSONResponse:
        daemon.log.event("refused", client=peer(request) if request is not None else None,
                         path=request.url.path if request is not None else None, code=r.status, rule=r.rule,
                         message=r.message[:2000], where=r.where,
                         run_id=getattr(request.state, "run_id", None) if request is not None else None)
        return JSONResponse(r.body(name), status_code=r.status)

    async def _guard(request: Request, fn, *, allowed=True):
        try:
            if allowed:
                daemon.require_allowed(peer(request))
            return await fn()
        except Refusal as r:
            return refusal(r, request)
        except Exception as e:  # noqa: BLE001 — a bug in a handler is a 500, never a stopped daemon
            daemon.log.event("error", client=peer(request), path=request.url.path,
                             message=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-4000:])
            return JSONResponse(Refusal(500, "internal", f"internal error: {type(e).__name__}: {e}").body(name),
                                status_code=500)

    async def json_body(request: Request):
        return parse_body(await read_body(request, daemon.cfg.max_body))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        rule = {404: "route", 405: "method"}.get(exc.status_code, "http")
        msg = {404: f"no such route {request.url.path}", 405: f"{request.method} is not allowed on "
                                                            f"{request.url.path}"}.get(exc.status_code, exc.detail)
        return refusal(Refusal(exc.status_code, rule, str(msg)), request)

    @app.exception_handler(Exception)
    async def _any(request: Request, exc: Exception):
        daemon.log.event("error", path=request.url.path, message=f"{type(exc).__name__}: {exc}")
        return JSONResponse(Refusal(500, "internal", f"internal error: {type(exc).__name__}").body(name),
                            status_code=500)

    @app.get("/v1/info")
    async def info(request: Request):
        async def go():
            return daemon.info()
        return await _guard(request, go)

    @app.get("/v1/catalogue")
    async def catalogue(request: Request):
        async def go():
            q = request.query_params.get("q")
            cat = daemon.catalogue
            return {"worker": name, "entries": cat.search(q) if cat is not None else []}
        return await _guard(request, go)

    @app.get("/v1/status")
    async def status(request: Request):
        async def go():
            return daemon.status(peer(request))
        return await _guard(request, go)

    @app.post("/v1/runs")
    async def submit_run(request: Request):
        async def go():
            d = await json_body(request)
            if isinstance(d.get("run_id"), str):
                request.state.run_id = d["run_id"][:64]
            out = await anyio.to_thread.run_sync(daemon.submit, peer(request), d)
            return JSONResponse(out, status_code=201)
        return await _guard(request, go)

    @app.post("/v1/runs/{run_id}/start")
    async def start(request: Request, run_id: str):
        async def go():
            request.state.run_id = run_id
            d = await json_body(request)
            return daemon.start(peer(request), run_id, d)
        return await _guard(request, go)

    @app.get("/v1/runs/{run_id}")
    async def get_run(request: Request, run_id: str):
        async def go():
            request.state.run_id = run_id
            run = daemon.run_for(run_id, peer(request))
            w = request.query_params.get("wait")
            if w is not None:
                try:
                    wait = float(w)
                except ValueError:
                    raise Refusal(400, "query", f"wait: expected seconds, got {w!r}") from None
                if not 0 <= wait < float("inf"):
                    raise Refusal(400, "query", f"wait: expected seconds >= 0, got {w!r}")
                await daemon.table.wait_change(run, min(wait, MAX_WAIT))
            return daemon.run_view(run)
        return await _guard(request, go)

    @app.get("/v1/runs/{run_id}/reveals")
    async def reveals(request: Request, run_id: str):
        async def go():
            request.state.run_id = run_id
            header, ts = daemon.reveals(peer(request), run_id)
            return Response(message(header, ts), media_type="application/octet-stream")
        return await _guard(request, go, allowed=False)  # the run's client mapping decides

    @app.post("/v1/runs/{run_id}/cancel")
    async def cancel(request: Request, run_id: str):
        async def go():
            request.state.run_id = run_id
            raw = await read_body(request, daemon.cfg.max_body)
            body = parse_body(raw) if raw.strip() else {}  # optional: {"reason": why the submitter cancels}
            reason = body.get("reason") if isinstance(body, dict) else None
            if reason is not None and not isinstance(reason, str):
                raise Refusal(400, "body", "field 'reason': expected a string")
            return daemon.cancel(peer(request), run_id, reason[:500] if reason else None)
        return await _guard(request, go)

    @app.post("/v1/models")
    async def upload_model(request: Request):
        async def go():
            from .uploads import upload

            d = await json_body(request)
            return await anyio.to_thread.run_sync(upload, daemon, peer(request), d)
        return await _guard(request, go)

    @app.get("/v1/pending")
    async def pending(request: Request):
        async def go():
            return daemon.pending(peer(request))
        return await _guard(request, go, allowed=False)

    @app.post("/v1/approve")
    async def approve(request: Request):
        async def go():
            daemon.require_admin(peer(request))
            return daemon.approve(peer(request), await json_body(request))
        return await _guard(request, go, allowed=False)

    from .serving import add_routes  # serving a shared model: its routes (serving.py)

    add_routes(app, daemon, guard=_guard, json_body=json_body, read_body=read_body, peer=peer)
    return app
