"""Serving the API: uvicorn over mutually authenticated TLS, the peer's identity per request.

The daemon's TLS identity (its certificate, key and the deployment's CA:
``planc.runtime.comm.tls.Identity``) gives uvicorn its server context: TLS 1.2+,
client certificates required and checked against the CA, which is the only trust root.
A client without a certificate, or with one from another CA, fails the handshake and
never reaches the app.

uvicorn does not put the client certificate in the ASGI scope, so ``PeerProtocol``
(uvicorn's h11 protocol) reads it when the connection is made — the handshake is done
by then — and wraps the app for that connection: every request's scope carries
``planc.peer``, the certificate's common name. The same wrapper writes one log line
per request (method, path, identity, status, duration).

``serve`` binds the listening socket itself (port 0: a free one), writes the chosen
``host:port`` to ``address_file`` once uvicorn is serving (atomically: a reader sees
the whole line or no file), and runs uvicorn in the main thread; SIGTERM and SIGINT
stop it, and then the daemon cancels its runs and closes every listener.
"""
from __future__ import annotations

import asyncio
import os
import socket
import ssl
import time

from uvicorn.protocols.http.h11_impl import H11Protocol


def load_identity(cfg):
    """The daemon's TLS identity from its configuration."""
    try:
        from planc.runtime.comm.tls import Identity
    except ImportError:  # until the TLS communicator lands: the same contract, here
        return _Identity(str(cfg.cert), str(cfg.key), str(cfg.ca))
    return Identity(str(cfg.cert), str(cfg.key), str(cfg.ca))


def peer_name(sslobj) -> str | None:
    try:
        from planc.runtime.comm.tls import peer_name as _peer_name
    except ImportError:
        return _cn(sslobj.getpeercert())
    return _peer_name(sslobj)


def _cn(cert) -> str | None:
    for rdn in (cert or {}).get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                return v
    return None


class _Identity:
    """A stand-in for tls.Identity (same methods) while that module is not there."""

    def __init__(self, cert, key, ca):
        import cryptography.x509 as x509

        self.cert, self.key, self.ca = cert, key, ca
        self.server_context()  # a key that does not fit the certificate fails here
        with open(cert, "rb") as f:
            c = x509.load_pem_x509_certificate(f.read())
        self.name = c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value

    def _ctx(self, purpose):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if purpose == "server" else ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        ctx.load_verify_locations(self.ca)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def server_context(self):
        return self._ctx("server")

    def client_context(self):
        return self._ctx("client")


class PeerProtocol(H11Protocol):
    """uvicorn's h11 protocol, with the TLS peer's identity in every request's scope."""

    def connection_made(self, transport):
        super().connection_made(transport)
        sslobj = transport.get_extra_info("ssl_object")
        who = None
        if sslobj is not None:
            try:
                who = peer_name(sslobj)
            except Exception:  # noqa: BLE001 — no name: every route refuses it
                who = None
        inner = self.app
        log = getattr(self.config, "planc_log", None)

        async def app(scope, receive, send):
            if scope.get("type") != "http":
                return await inner(scope, receive, send)
            scope["planc.peer"] = who
            t0 = time.perf_counter()
            status = {}

            async def send_(msg):
                if msg.get("type") == "http.response.start":
                    status["code"] = msg.get("status")
                await send(msg)

            try:
                await inner(scope, receive, send_)
            finally:
                if log is not None:
                    log.event("request", client=who, method=scope.get("method"), path=scope.get("path"),
                              status=status.get("code"), duration_s=round(time.perf_counter() - t0, 4))

        self.app = app


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY on accepted connections only when the socket's
    # proto says TCP, and without it a response's second TLS record waits for a delayed ACK (40 ms)
    s = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(128)
    s.set_inheritable(False)
    return s


def _write_address(path, text: str):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text + "\n")
    os.replace(tmp, path)


def serve(daemon, app) -> None:
    """Serve `app` until SIGTERM/SIGINT, then shut the daemon down."""
    import uvicorn

    cfg = daemon.cfg
    sock = _bind(cfg.host, cfg.port)
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, http=PeerProtocol, ssl_context_factory=lambda c, default: daemon.identity
                            .server_context(), log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=2, ws="none", server_header=False)
    config.planc_log = daemon.log
    server = uvicorn.Server(config)

    async def main():
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        if server.started:
            address = f"{host}:{port}"
            daemon.log.event("serving", address=address, role=cfg.role, transport=cfg.transport,
                             approval=cfg.approval, catalogue=len(daemon.catalogue or ()),
                             policy=daemon.info()["policy"])
            if cfg.address_file is not None:
                _write_address(cfg.address_file, address)
        await task

    import signal

    stopped = []
    # uvicorn re-raises the signal that stopped it once it is done: let that land here, so
    # that the daemon shuts down its runs and exits 0 instead of dying by the signal
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, f: stopped.append(s))
    try:
        asyncio.run(main())
    finally:
        daemon.shutdown()
        sock.close()
        if cfg.address_file is not None:
            try:
                os.unlink(cfg.address_file)
            except OSError:
                pass
