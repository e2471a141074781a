"""Communicator over mutually authenticated TLS: one rank per process, any machines.

Trust model. A deployment has its own CA (``planc certs``); every party holds a key and a
certificate from it whose CN is the party's name. Each connection is TLS (1.3 where both
ends have it, never below 1.2) with certificates required on *both* sides and the CA as
the only trust root, so every byte is encrypted and integrity-protected, and each end
knows which party it talks to. Hostnames are not checked: a rank is expected to present
one identity (``peers[rank][2]``), and after the handshake its certificate's CN is
compared with that. The first frame each way is a hello carrying the run id and the
rank, so a connection is bound to one run and one rank: a valid party of another run, or
one claiming a rank it was not given, is refused.

What someone without a certificate can do: open a TCP connection to a listener and be
refused (the handshake fails and the socket is closed); each connection gets at most
``_HANDSHAKE_S`` seconds in its own thread, so silent or garbage connections never stall
the run, and the legitimate ranks keep being accepted until the connect deadline. A
party *with* a certificate from the CA but the wrong name or run is refused the same
way. (Flooding a listener with connections is a denial of service this does not stop.)

Mesh: rank r connects to every lower rank's `Listener` and accepts every higher rank, so
each pair has one connection. Frames: a 9-byte header (type, length), then the payload:
HELLO (JSON), DATA, FAIL ("<party>: <message>"), BYE. A reader thread per connection
queues DATA payloads (uint8 tensors owning their memory); `_recv` waits on that queue,
checking for failures every 20 ms, up to the timeout. `close()` says BYE and waits for
the peers' BYE (or EOF) so that no rank leaves before its last message was read.

Sockets are non-blocking and every OpenSSL call on a connection holds that connection's
lock (an SSL object must not be used by two threads at once): the reader and a sender
interleave record by record, and wait for readiness with poll() outside the lock.
"""
from __future__ import annotations

import json
import queue
import select
import socket
import ssl
import struct
import threading
import time

import torch

from .base import DEFAULT_TIMEOUT, Comm, CommError, PeerFailed, PeerTimeout
from .identity import Identity, cert_name, new_ca, new_identity, peer_name, throwaway_identities  # noqa: F401

HELLO, DATA, FAIL, BYE = 1, 2, 3, 4
_HEAD = struct.Struct("!BQ")
_POLL = 0.02
_CHUNK = 1 << 20  # bytes handed to OpenSSL per call when sending
_SMALL = 1 << 16  # payloads up to this go out in one buffer with their header
_HANDSHAKE_S = 10.0  # a connection's TLS handshake + hello must finish within this
_MAX_HELLO = 4096
_MAX_MESSAGE = 8000

class Listener:
    """A listening socket bound before the run (so its port can be reported)."""

    def __init__(self, identity: Identity, host: str = "127.0.0.1", port: int = 0):
        self.identity = identity
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host, port))
            self.sock.listen(64)
            self.sock.settimeout(0.1)  # accept() wakes up to look at the deadline
        except BaseException:
            self.sock.close()
            raise
        self.host, self.port = host, self.sock.getsockname()[1]

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Refused(CommError):
    pass


def _why(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _raw_shutdown(s):
    try:  # the base class's shutdown: wakes a thread blocked on the socket, leaves SSL state alone
        socket.socket.shutdown(s, socket.SHUT_RDWR)
    except OSError:
        pass


def _tcp_bytes(s) -> tuple[int, int] | None:
    """(bytes sent, bytes received) on a TCP socket as the kernel counts them: TLS records,
    handshakes and all — what went on the wire above TCP (Linux's tcp_info; None elsewhere)."""
    try:
        info = socket.socket.getsockopt(s, socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except (OSError, AttributeError):
        return None
    if len(info) < 208:
        return None
    (received,) = struct.unpack_from("<Q", info, 128)  # tcpi_bytes_received
    (sent,) = struct.unpack_from("<Q", info, 200)  # tcpi_bytes_sent (retransmits included)
    return sent, received


def _no_delay(s):
    """No Nagle: a round's small frames (hellos, a handshake's last flight, short shares)
    must not wait for the peer's delayed ACK (40 ms on Linux) — gloo does the same."""
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


def _recv_exact(s, n) -> bytearray:
    """Setup only (the socket has a timeout then)."""
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = s.recv_into(view[got:], n - got)
        if not k:
            raise _Refused("connection closed during setup")
        got += k
    return buf


def _send_hello(s, run_id, rank, to):
    body = json.dumps({"run": run_id, "rank": rank, "to": to}).encode()
    s.sendall(_HEAD.pack(HELLO, len(body)) + body)


def _read_hello(s) -> dict:
    kind, n = _HEAD.unpack(_recv_exact(s, _HEAD.size))
    if kind != HELLO or n > _MAX_HELLO:
        raise _Refused(f"expected a hello frame, got type {kind} of {n} bytes")
    try:
        h = json.loads(_recv_exact(s, n).decode())
    except ValueError:
        raise _Refused("malformed hello") from None
    if not (isinstance(h, dict) and isinstance(h.get("run"), str) and type(h.get("rank")) is int
            and type(h.get("to")) is int):
        raise _Refused("malformed hello")
    return h


class _Conn:
    """One peer's connection: a non-blocking SSLSocket, its lock, a reader thread."""

    def __init__(self, comm, rank, s):
        self.rank, self.name, self.s = rank, comm.names[rank], s
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self.ssl_lock, self.send_lock = threading.Lock(), threading.Lock()
        self.failed = self.lost = None
        self.bye = self.stop = self.broken = False
        self.done = threading.Event()
        s.settimeout(0.0)
        self.rpoll, self.wpoll = select.poll(), select.poll()
        self.rpoll.register(s.fileno(), select.POLLIN)
        self.wpoll.register(s.fileno(), select.POLLOUT)
        self.thread = threading.Thread(target=self._read_loop, name=f"planc-tls-{comm.me}-{self.name}", daemon=True)
        self.thread.start()

    def _read_into(self, view):
        got, n = 0, len(view)
        while got < n:
            with self.ssl_lock:
                try:
                    k = self.s.recv_into(view[got:], n - got)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    k = None
            if k is None:
                if self.stop:
                    raise _Refused("stopped")
                self.rpoll.poll(200)
            elif k == 0:
                raise EOFError("closed by the peer without saying goodbye")
            else:
                got += k

    def _read_loop(self):
        head = bytearray(_HEAD.size)
        try:
            while True:
                self._read_into(memoryview(head))
                kind, n = _HEAD.unpack(head)
                if kind == DATA:
                    buf = torch.empty(n, dtype=torch.uint8)
                    if n:
                        self._read_into(memoryview(buf.numpy()))
                    self.q.put(buf)
                elif kind == FAIL and n <= 4 * _MAX_MESSAGE:
                    body = bytearray(n)
                    self._read_into(memoryview(body))
                    self.failed = body.decode("utf-8", "replace")
                elif kind == BYE:
                    self.bye = True
                    return
                else:
                    self.lost = f"protocol error (frame type {kind} of {n} bytes)"
                    return
        except _Refused:
            return
        except (OSError, EOFError) as e:
            if not self.stop:
                self.lost = f"connection lost ({_why(e)})"
        finally:
            self.done.set()

    def write(self, parts, wait, me):
        """Send buffers in order; the frame is whole or the connection is marked broken."""
        with self.send_lock:
            if self.broken:
                raise PeerFailed(f"party {self.name}: {self.lost or 'connection broken'}")
            deadline = time.monotonic() + wait
            try:
                for part in parts:
                    mv = memoryview(part).cast("B")
                    off = 0
                    while off < len(mv):
                        chunk = mv[off:off + _CHUNK]
                        with self.ssl_lock:
                            try:
                                off += self.s.send(chunk)
                                continue
                            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                                pass
                        if self.lost is not None:
                            raise PeerFailed(f"party {self.name}: {self.lost}")
                        if time.monotonic() > deadline:
                            raise PeerTimeout(f"party {me}: {self.name} took no data for {wait:g} s")
                        self.wpoll.poll(int(_POLL * 1000))
            except OSError as e:
                self.broken = True
                self.lost = self.lost or f"connection lost ({_why(e)})"
                raise PeerFailed(f"party {self.name}: {self.lost}") from None
            except BaseException:
                self.broken = True  # a frame cut short: nothing more may go on this connection
                raise

    def close(self, wait):
        self.stop = True
        self.thread.join(wait)
        _raw_shutdown(self.s)
        self.thread.join(1.0)
        self.s.close()


class TLSComm(Comm):
    """One rank of a run over TLS. peers: {rank: (host, port, expected identity)} for
    every other rank; listener: this rank's bound Listener (closed by close())."""

    CHECK_EVERY = 0.02  # _check_peers only reads attributes: cheap

    def __init__(self, rank: int, names, timeout: float = DEFAULT_TIMEOUT, *, identity: Identity,
                 listener: Listener | None, peers: dict, run_id: str):
        super().__init__(rank=rank, names=list(names), timeout=float(timeout))
        world = len(self.names)
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside 0..{world - 1}")
        missing = [r for r in range(world) if r != rank and r not in peers]
        if missing:
            raise ValueError(f"party {self.me}: no address for rank {missing[0]} ({self.names[missing[0]]})")
        if rank < world - 1 and listener is None:
            raise ValueError(f"party {self.me}: a listener is needed to accept the higher ranks")
        self.identity, self.listener, self.run_id = identity, listener, str(run_id)
        self.peers = {int(r): (h, p, i) for r, (h, p, i) in peers.items()}
        self.conns: dict[int, _Conn] = {}
        self.refused: list[str] = []
        self._cv = threading.Condition()
        self._pending: set = set()
        self._admitters: list[threading.Thread] = []
        self._stopping = False
        self._closed = self._failed = False
        self._wire = (0, 0)
        self._acceptor = None
        t0 = time.perf_counter()
        deadline = time.monotonic() + self.timeout
        try:
            if rank < world - 1:
                self._acceptor = threading.Thread(target=self._accept_loop, args=(deadline,), daemon=True,
                                                  name=f"planc-tls-accept-{self.me}")
                self._acceptor.start()
            for r in range(rank):
                self._connect(r, deadline)
            self._await_higher(deadline)
        except BaseException as e:
            self.fail(e)
            self.close()
            raise
        self.connect_s = time.perf_counter() - t0
        self._heard()

    @property
    def me(self) -> str:
        return self.names[self.rank]

    # ---- setup -------------------------------------------------------------------------

    def _register(self, r, s):
        with self._cv:
            if r in self.conns or self._stopping:
                raise _Refused(f"rank {r} is already connected")
            self.conns[r] = _Conn(self, r, s)
            self._cv.notify_all()

    def _connect(self, r, deadline):
        host, port, want = self.peers[r]
        last, ctx = "no answer", self.identity._client
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PeerTimeout(f"party {self.me}: could not connect to {self.names[r]} (rank {r}) at "
                                  f"{host}:{port} within {self.timeout:g} s ({last})")
            s = None
            try:
                raw = socket.create_connection((host, port), timeout=min(left, _HANDSHAKE_S))
                _no_delay(raw)
                s = ctx.wrap_socket(raw, do_handshake_on_connect=False)
                s.do_handshake()
                who = peer_name(s)
                if who != want:
                    raise _Refused(f"it presented a certificate of {who!r}, not {want!r}")
                _send_hello(s, self.run_id, self.rank, r)
                h = _read_hello(s)  # the acceptor answers only once it admitted us
                if h["run"] != self.run_id or h["rank"] != r or h["to"] != self.rank:
                    raise _Refused("its hello is for another run or rank")
                self._register(r, s)
                return
            except (OSError, CommError, ValueError) as e:
                last = _why(e)
                if s is not None:
                    s.close()
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def _accept_loop(self, deadline):
        want = set(range(self.rank + 1, len(self.names)))
        while not self._stopping and time.monotonic() < deadline:
            with self._cv:
                if want <= set(self.conns):
                    break
            try:
                raw, addr = self.listener.sock.accept()
                _no_delay(raw)
            except (socket.timeout, BlockingIOError):
                continue
            except OSError:
                break  # the listener was closed
            self._admitters = [t for t in self._admitters if t.is_alive()]
            if len(self._admitters) >= 32:  # bounded work for unauthenticated connections
                raw.close()
                continue
            t = threading.Thread(target=self._admit, args=(raw, addr), daemon=True, name=f"planc-tls-admit-{self.me}")
            self._admitters.append(t)
            t.start()

    def _admit(self, raw, addr):
        s = wrapped = None
        try:
            raw.settimeout(min(_HANDSHAKE_S, self.timeout))
            s = wrapped = self.identity._server.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
            with self._cv:
                if self._stopping:
                    raise _Refused("closing")
                self._pending.add(s)
            s.do_handshake()
            who = peer_name(s)
            h = _read_hello(s)
            r = h["rank"]
            if h["run"] != self.run_id:
                raise _Refused(f"{who!r} is in another run")
            if h["to"] != self.rank or not self.rank < r < len(self.names):
                raise _Refused(f"{who!r} claims rank {r}, which does not connect to rank {self.rank}")
            if who != self.peers[r][2]:
                raise _Refused(f"certificate of {who!r} where rank {r} is {self.peers[r][2]!r}")
            _send_hello(s, self.run_id, self.rank, r)
            self._register(r, s)
            s = raw = None  # the connection owns it now
        except (OSError, CommError, ValueError) as e:
            with self._cv:
                self.refused.append(f"{addr[0]}:{addr[1]}: {_why(e)}")
        finally:
            with self._cv:  # `wrapped`, not `s`: a registered connection must leave _pending too, or
                self._pending.discard(wrapped)  # close() would shut it down before the last message is read
            if s is not None:
                s.close()
            elif raw is not None:
                raw.close()  # wrap_socket never ran or failed: raw still owns the fd

    def _await_higher(self, deadline):
        with self._cv:
            while True:
                missing = [r for r in range(self.rank + 1, len(self.names)) if r not in self.conns]
                if not missing:
                    return
                self._cv.release()
                try:
                    self._check_peers()
                finally:
                    self._cv.acquire()
                if time.monotonic() > deadline:
                    r = missing[0]
                    seen = f"; refused meanwhile: {'; '.join(self.refused[:3])}" if self.refused else ""
                    raise PeerTimeout(f"party {self.me}: {self.names[r]} (rank {r}, at {self.peers[r][0]}:"
                                      f"{self.peers[r][1]}) did not connect to {self.listener.host}:"
                                      f"{self.listener.port} within {self.timeout:g} s{seen}")
                self._cv.wait(0.05)

    # ---- transport ---------------------------------------------------------------------

    def _conn(self, peer) -> _Conn:
        c = self.conns.get(peer)
        if c is None or self._closed:
            raise CommError(f"party {self.me}: no open connection to rank {peer}")
        return c

    def _send(self, dst, payload: torch.Tensor):
        c = self._conn(dst)
        n = payload.numel()
        if n == 0:
            return  # the receiver knows the size, and waits for nothing either
        data = payload.contiguous().numpy()
        head = _HEAD.pack(DATA, n)
        parts = [head + data.tobytes()] if n <= _SMALL else [head, data]
        try:
            c.write(parts, self.timeout, self.me)
        except CommError:
            self._failed = True
            raise

    def _recv(self, src, nbytes_):
        if nbytes_ == 0:
            return torch.empty(0, dtype=torch.uint8)
        c = self._conn(src)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                buf = c.q.get(timeout=_POLL)
                break
            except queue.Empty:
                pass
            try:
                self._check_peers()
                if time.monotonic() > deadline:
                    raise PeerTimeout(f"party {self.me}: no message from {self.names[src]} within {self.timeout:g} s")
            except CommError:
                self._failed = True
                raise
        if buf.numel() != nbytes_:
            self._failed = True
            raise CommError(f"party {self.me}: message of {buf.numel()} bytes from {self.names[src]} where "
                            f"{nbytes_} were expected")
        return buf

    def _check_peers(self):
        conns = list(self.conns.values())
        for c in conns:
            if c.failed is not None:
                who, _, msg = c.failed.partition(": ")
                if who not in self.names:
                    who, msg = c.name, c.failed
                raise PeerFailed(f"party {who} failed: {msg}")
        for c in conns:
            if c.lost is not None:
                raise PeerFailed(f"party {c.name}: {c.lost}")

    def wire_bytes(self) -> dict:
        """After close(): bytes this rank's connections put on and took off the wire
        (TLS framing and handshakes included), next to the payload counters in `stats`."""
        return {"wire_sent": self._wire[0], "wire_recv": self._wire[1]}

    def fail(self, err: BaseException):
        self._failed = True
        body = f"{self.me}: {err}"[:_MAX_MESSAGE].encode()
        for c in list(self.conns.values()):
            try:
                c.write([_HEAD.pack(FAIL, len(body)) + body], min(self.timeout, 5.0), self.me)
            except Exception:  # noqa: BLE001 — nobody left to tell there
                pass

    def close(self):
        """BYE to every peer, wait for theirs (or EOF), then close everything."""
        if self._closed:
            return
        self._closed = True
        with self._cv:
            self._stopping = True
            pending = list(self._pending)
        for s in pending:
            _raw_shutdown(s)
        if self._acceptor is not None:
            self._acceptor.join(2.0)
        for t in list(self._admitters):
            t.join(2.0)
        wait = min(self.timeout, 5.0) if self._failed else self.timeout
        deadline = time.monotonic() + wait
        for c in self.conns.values():
            try:
                c.write([_HEAD.pack(BYE, 0)], min(wait, 5.0), self.me)
            except Exception:  # noqa: BLE001
                pass
        for c in self.conns.values():
            c.done.wait(max(0.0, deadline - time.monotonic()))
        for c in self.conns.values():
            got = _tcp_bytes(c.s)
            if got is not None:
                self._wire = (self._wire[0] + got[0], self._wire[1] + got[1])
            c.close(0.5)
        if self.listener is not None:
            self.listener.close()


__all__ = ["Identity", "Listener", "TLSComm", "peer_name", "new_ca", "new_identity", "cert_name",
           "throwaway_identities"]
