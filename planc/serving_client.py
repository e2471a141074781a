"""A client of a served model: ``planc.Client(cluster).query("cnn", x)``.

``query`` encodes x in fixed point, splits it into one additive share per serving
worker and POSTs each worker its share over its own kept HTTPS connection (checked to
be that worker's before anything is sent); all the shares go out first, then the answers
are read, so the workers' waits overlap in one thread. Each worker answers in the same
request once the query's batch has run, with its share of the logits for this query
only; their sum, decoded, is the answer. Every wait has a timeout; a refusal or a
failure is a ``ServingError`` naming the worker (and the party the service lost, when
one was lost).
"""
from __future__ import annotations

import threading
import uuid

import httpx
import torch


class ServingError(RuntimeError):
    """A query refused or failed, or a service that would not start: `worker`, `rule`,
    `where`, `code`, `problem`, like ClusterError (which the control calls of share_model,
    serve and stop raise as planc.Cluster does; this module does not import planc.cluster,
    which delegates to it)."""

    def __init__(self, worker: str | None, message: str, *, rule: str | None = None, where: str | None = None,
                 code: int | None = None):
        self.worker, self.rule, self.where, self.code, self.problem = worker, rule, where, code, message
        head = f"worker {worker}" if worker else "client"
        if rule:
            head += f" refused ({rule})" if code and 400 <= code < 500 else f" ({rule})"
        super().__init__(f"{head}: {message}")


def _transport(ctx) -> httpx.HTTPTransport:
    """HTTPS with TCP_NODELAY: a request's headers and body are two TLS records, and without
    it the second waits for the server's delayed ACK (40 ms on Linux) — most of a query."""
    import socket

    return httpx.HTTPTransport(verify=ctx, limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
                               socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])


def _host(url: str) -> str:
    return httpx.URL(url).host


class _Link:
    """Keep-alive HTTPS connections from this client to one serving worker, for queries.

    http.client, not httpx: a query is one small POST to each worker, and httpx's work per
    request (plus a thread per worker to send them in parallel) was most of a client's CPU.
    Each connection is mutually authenticated TLS (the client's certificate, the
    deployment CA as the only root), and the worker's certificate must name the worker
    this link is for before any share is sent on it; TCP_NODELAY (see _transport)."""

    KEEP = 4  # idle connections kept per worker

    def __init__(self, name: str, url: str, ctx, timeout: float):
        u = httpx.URL(url)
        self.name, self.url, self.host, self.port = name, url, u.host, u.port or 443
        self.ctx, self.timeout = ctx, timeout
        self.idle: list = []
        self.lock = threading.Lock()

    def get(self):
        """(connection, reused): an idle one that the worker has not closed, else a new one."""
        import select

        while True:
            with self.lock:
                c = self.idle.pop() if self.idle else None
            if c is None:
                break
            if not select.select([c.sock], [], [], 0)[0]:  # readable while idle: closed (or garbage)
                return c, True
            c.close()
        return self._connect(), False

    def _connect(self):
        import http.client
        import socket

        from planc.runtime.comm.tls import peer_name

        c = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=self.timeout)
        try:
            c.connect()
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer = peer_name(c.sock)
        except Exception as err:  # noqa: BLE001 — refused, reset, a failed handshake, no name
            c.close()
            raise ServingError(self.name, f"unreachable at {self.url}: {type(err).__name__}: {err}",
                               rule="connection") from None
        if peer != self.name:
            c.close()
            raise ServingError(self.name, f"{self.url} presented a certificate of {peer!r}, not {self.name!r}: "
                                          f"nothing sent", rule="identity")
        return c

    def put(self, c):
        with self.lock:
            if len(self.idle) < self.KEEP:
                self.idle.append(c)
                return
        c.close()

    def close(self):
        with self.lock:
            idle, self.idle = self.idle, []
        for c in idle:
            c.close()


class Client:
    """Queries a served model: ``Client(cluster).query("cnn", x)``. identity: {"cert",
    "key", "ca"} files (default: the cluster's own)."""

    def __init__(self, cluster, identity: dict | None = None, *, timeout: float = 30.0):
        from planc.runtime.comm.tls import Identity

        self.cluster, self.timeout = cluster, timeout
        self.urls = dict(cluster.urls)
        ident = Identity(identity["cert"], identity["key"], identity["ca"]) if identity else cluster.identity
        self.name = ident.name
        self._ctx = ident.client_context()
        self._http: dict[str, httpx.Client] = {}
        self._links: dict[str, _Link] = {}
        self._lock = threading.Lock()
        self._services: dict[str, dict] = {}

    def _link(self, w) -> _Link:
        with self._lock:
            link = self._links.get(w)
            if link is None:
                link = self._links[w] = _Link(w, self.urls[w], self._ctx, self.timeout + 5.0)
            return link

    def _client(self, w) -> httpx.Client:
        c = self._http.get(w)
        if c is None:
            c = self._http[w] = httpx.Client(base_url=self.urls[w], timeout=self.timeout, transport=_transport(self._ctx))
        return c

    def service(self, model: str, *, refresh: bool = False) -> dict:
        """The serving service of `model` as its workers describe it (cached)."""
        if not refresh and model in self._services:
            return self._services[model]
        seen = []
        for w in self.cluster.workers:
            try:
                r = self._client(w).get("/v1/serving", timeout=self.timeout)
            except httpx.HTTPError:
                continue
            if r.status_code != 200:
                continue
            for s in r.json()["services"]:
                if s["model"] == model:
                    seen.append(s)
                    if s["state"] == "serving":
                        self._services[model] = s
                        return s
        if seen:
            s = seen[-1]
            raise ServingError(s["workers"][0], f"model {model!r}: service {s['service_id']} is {s['state']} "
                                                f"({s.get('error') or s.get('why')})", rule="service")
        raise ServingError(None, f"no worker serves model {model!r}")

    def query(self, model: str, x: torch.Tensor, *, timeout: float | None = None) -> torch.Tensor:
        """The model's output for one sample x (float32, the service's input shape, or with
        a leading 1): f32[1, ...]. Refused here, before anything is sent, if x does not fit."""
        from planc.runtime import fixed, prg
        from planc.worker.wire import message

        s = self.service(model)
        row = tuple(s["input_shape"])
        if not isinstance(x, torch.Tensor):
            raise ServingError(None, f"query of {model!r}: expected a torch.Tensor, got {type(x).__name__}",
                               rule="input")
        if x.dtype != torch.float32:
            raise ServingError(None, f"query of {model!r}: dtype {str(x.dtype).replace('torch.', '')}; the service "
                                     f"takes float32 of shape {list(row)}", rule="dtype")
        if tuple(x.shape) not in (row, (1, *row)):
            raise ServingError(None, f"query of {model!r}: shape {list(x.shape)}; the service takes one sample of "
                                     f"shape {list(row)} (or {[1, *row]})", rule="shape")
        e = fixed.encode(x.reshape(1, *row), s["frac"])
        workers = s["workers"]
        n = len(workers)
        seed, rest, parts = prg.new_seed(), torch.zeros_like(e), []
        for i in range(n - 1):
            r = prg.ring(seed, "query", i, tuple(e.shape))
            parts.append(r)
            rest += r
        parts.append(e - rest)
        qid = uuid.uuid4().hex
        wait = timeout or self.timeout
        path = f"/v1/services/{s['service_id']}/query"
        # every worker's share goes out first, then the answers are read: the workers hold
        # the requests until the batch is done, so the three wait in parallel, in one thread
        sent, errors = [], []
        for i, w in enumerate(workers):
            try:
                sent.append((w, self._post(w, path, message({"qid": qid}, {"x": parts[i]}), wait)))
            except ServingError as err:
                errors.append(err)
                break
        if errors:  # a worker unreachable: the others' answers are not waited for
            for _, (_, c) in sent:
                c.close()
            sent = []
        got = []
        for w, (link, c) in sent:
            try:
                got.append(self._answer(w, link, c))
            except ServingError as err:
                errors.append(err)
        if errors:
            self._services.pop(model, None)
            # a survivor's account (it names the party lost) before a dead worker's unreachability
            errors.sort(key=lambda err: err.rule == "connection")
            raise errors[0]
        extra = {h["extra"] for h, _ in got}
        if len(extra) != 1:
            raise ServingError(None, "the workers' answers disagree in scale", rule="answer")
        total = torch.zeros_like(got[0][1]["y"])
        for _, ts in got:
            total += ts["y"]
        self.last = {"batch": got[0][0].get("batch"), "size": got[0][0].get("size"),
                     "server_s": {w: h.get("server_s") for w, (h, _) in zip(workers, got)}}
        return fixed.decode(total, s["frac"] + extra.pop(), torch.float32)

    def _post(self, w: str, path: str, body: bytes, wait: float):
        """Send one query request to worker `w`: (link, connection) to read its answer on.
        A kept connection the worker closed meanwhile is replaced once (nothing reached it)."""
        import http.client

        link = self._link(w)
        c, reused = link.get()
        for attempt in (0, 1):
            try:
                c.sock.settimeout(wait + 5.0)
                c.request("POST", path, body=body, headers={"Content-Type": "application/octet-stream"})
                return link, c
            except (OSError, http.client.HTTPException) as err:
                c.close()
                if not reused or attempt:
                    raise ServingError(w, f"unreachable at {self.urls[w]}: {type(err).__name__}: {err}",
                                       rule="connection") from None
                c, reused = link._connect(), False

    def _answer(self, w: str, link: _Link, c):
        import http.client
        import json

        from planc.worker.wire import read_message

        try:
            r = c.getresponse()
            data = r.read()
        except (OSError, http.client.HTTPException) as err:
            c.close()
            why = "no answer in time" if isinstance(err, TimeoutError) else f"{type(err).__name__}: {err}"
            raise ServingError(w, f"unreachable at {self.urls[w]}: {why}",
                               rule="timeout" if isinstance(err, TimeoutError) else "connection") from None
        if r.will_close:
            c.close()
        else:
            link.put(c)
        if r.status >= 400:
            try:
                d = json.loads(data)["error"]
            except Exception:  # noqa: BLE001
                raise ServingError(w, f"HTTP {r.status}: {data[:300]!r}", code=r.status) from None
            raise ServingError(d.get("worker") or w, d.get("message", ""), rule=d.get("rule"), code=r.status)
        try:
            return read_message(data)
        except Exception as err:  # noqa: BLE001 — a malformed answer
            raise ServingError(w, f"a malformed answer ({type(err).__name__}: {err})", rule="answer") from None

    def close(self):
        for c in self._http.values():
            c.close()
        self._http.clear()
        with self._lock:
            links, self._links = list(self._links.values()), {}
        for link in links:
            link.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
