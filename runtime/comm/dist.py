"""Communicator over ``torch.distributed``'s gloo backend (TCP): one rank per process,
on any number of machines.

Ranks ``0..n-1`` are the computing parties and rank ``n`` the dealer. A ``TCPStore``
is the rendezvous: rank 0 hosts it at ``addr:port`` by default (a local launcher may host
it itself and have every rank join as a client). Each rank announces itself under
``<prefix>/up/<rank>`` and waits for the others, so a rank that never starts is named in
the timeout. Then every rank builds its own gloo process group over that store, with a
TCP device bound to an explicit address (127.0.0.1 when the rendezvous is on loopback).
The group is an object of the communicator, not torch's process-global default group, so
several communicators can live in one process (tests, a worker running several plans).

Messages are gloo ``send``/``recv`` of flat uint8 tensors on one tag; gloo keeps them in
order per pair of ranks, and the receiver knows every size, so nothing is framed.

Waiting: in gloo a send completes only once the receiver has posted the matching recv,
a work's ``is_completed()`` turns true only after someone called ``wait()``, and a
``wait(timeout)`` that expires tears the connection down. So one daemon thread per
communicator blocks in ``work.wait()`` for the rank, and the rank polls that thread's
event, every 50 ms checking the store for a published failure and its own deadline:

- a timeout raises ``PeerTimeout`` naming the rank that did not answer;
- ``fail(err)`` publishes ``"<party>: <message>"`` under ``<prefix>/failed`` (first one
  wins); a waiting rank that sees it raises ``PeerFailed("party <who> failed: ...")``;
- a connection that breaks (a peer process died, or a failed peer tore its connections
  down on close) raises ``PeerFailed`` naming the peer, with the peer's published error
  when there is one.

Sends are posted without waiting (an exchange posts all its sends before its first
recv, so all-to-all rounds cannot deadlock). At most a few stay unfinished per
destination (older ones are awaited when a new one is posted, which bounds the buffers
held), and ``close()`` awaits the rest with the same timeout, so a rank never leaves
before its last message was taken. Empty payloads are not sent.
"""
from __future__ import annotations

import collections
import datetime
import ipaddress
import os
import queue
import socket
import threading
import time

import torch
import torch.distributed as dist

from .base import DEFAULT_TIMEOUT, Comm, CommError, PeerFailed, PeerTimeout

PREFIX = "planc"  # default namespace of a run's keys in the store
_POLL = 0.05
_IN_FLIGHT = 4  # unfinished sends kept per destination
_TAG = 0
_ABORT_TAG = 0x5A5A  # a recv on it that never completes tears the connections down
_MAX_MESSAGE = 8000  # characters of a published failure


def is_loopback(addr: str) -> bool:
    if addr == "localhost":
        return True
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


def local_address_towards(addr: str, port: int) -> str:
    """The address of this machine's interface that routes to `addr` (no packet is sent)."""
    if is_loopback(addr):
        return "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((addr, port or 1))
        return s.getsockname()[0]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def host_store(addr: str, port: int, world_size: int | None = None,
               timeout: float = DEFAULT_TIMEOUT) -> dist.TCPStore:
    """A rendezvous store served from this process, listening on `addr` only (TCPStore's
    own server would listen on every interface); port 0 picks a free port (`.port`)."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    sk = socket.socket(family, socket.SOCK_STREAM)
    try:
        sk.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sk.bind((addr, port))
        sk.listen(128)
        port = sk.getsockname()[1]
    except BaseException:
        sk.close()
        raise
    fd = sk.detach()  # the store owns the listening socket from here on
    try:
        return dist.TCPStore(addr, port, world_size, True, datetime.timedelta(seconds=timeout),
                             wait_for_workers=False, master_listen_fd=fd)
    except BaseException:
        os.close(fd)
        raise


def _first_line(e: BaseException) -> str:
    lines = [s for s in str(e).splitlines() if s.strip()]
    return lines[0].strip() if lines else type(e).__name__


class _Pending:
    """A posted gloo work; `done` is set by the waiter thread once `work.wait()` returned."""

    __slots__ = ("work", "peer", "payload", "done", "error")

    def __init__(self, work, peer: int, payload=None):
        self.work = work
        self.peer = peer
        self.payload = payload  # a send's buffer must live until the send completes
        self.done = threading.Event()
        self.error: BaseException | None = None


class _Waiter:
    """One daemon thread per communicator that blocks in `work.wait()` for the rank, one
    work at a time (the rank waits for one thing at a time). A persistent thread hands a
    completion over in microseconds; a thread per work costs far more."""

    def __init__(self, name: str):
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name=f"planc-gloo-wait-{name}", daemon=True)
        self.thread.start()

    def submit(self, p: _Pending) -> _Pending:
        self.q.put(p)
        return p

    def _run(self):
        while True:
            p = self.q.get()
            if p is None:
                return
            try:
                p.work.wait()  # gloo's own timeout (ours + 10 s) bounds this
            except BaseException as e:  # noqa: BLE001 — reported by the rank that polls
                p.error = e
            p.done.set()
            del p

    def stop(self, wait: float = 0.0):
        """End the thread; `wait` > 0 joins it (a thread still alive while the
        interpreter shuts down can abort the process in gloo's destructors)."""
        self.q.put(None)
        if wait > 0:
            self.thread.join(wait)


class DistComm(Comm):
    """One rank of a plan's run over gloo.

    rank, names: this rank and the names of all ranks (parties, then "dealer").
    addr, port: the rendezvous TCPStore. host: whether this rank serves it (default:
    rank 0). store: an already connected store to use instead (then addr/port only
    serve to pick the bind address). bind: the address gloo listens on and announces
    (default 127.0.0.1 for a loopback rendezvous, else the interface routing to addr).
    prefix: namespace of this run's keys in the store.
    """

    def __init__(self, rank: int, names, timeout: float = DEFAULT_TIMEOUT, *, addr: str = "127.0.0.1",
                 port: int = 29500, host: bool | None = None, store=None, bind: str | None = None,
                 prefix: str = PREFIX):
        super().__init__(rank=rank, names=list(names), timeout=float(timeout))
        self.world = len(self.names)
        if not 0 <= rank < self.world:
            raise ValueError(f"rank {rank} outside 0..{self.world - 1}")
        self.addr, self.port, self.prefix = addr, port, prefix
        self.host = (rank == 0) if host is None else bool(host)
        if store is not None:
            self.host = False
        self.bind = bind or local_address_towards(addr, port)
        self._sends: dict[int, collections.deque] = collections.defaultdict(collections.deque)
        self._waiter: _Waiter | None = None
        self._failed = False
        self._closed = False
        self._store_ok = True
        self.pg = None
        self.connect_s = 0.0
        t0 = time.perf_counter()
        self.store = store if store is not None else self._open_store()
        try:
            try:
                self._rendezvous()
                self.pg = self._make_group()
            except CommError:
                raise
            except Exception as e:  # the store or gloo: say so as a communication failure
                self._check_failed()
                raise CommError(f"party {self.me}: could not connect the ranks through {self.addr}:{self.port} "
                                f"({_first_line(e)})") from e
        except BaseException as e:
            self.fail(e)
            self.close()
            raise
        self.connect_s = time.perf_counter() - t0
        self._heard()  # the deadline between messages counts from here, not from before the rendezvous

    # ---- setup -------------------------------------------------------------------------

    @property
    def me(self) -> str:
        return self.names[self.rank]

    def _key(self, *parts) -> str:
        return "/".join((self.prefix,) + tuple(str(p) for p in parts))

    def _open_store(self):
        td = datetime.timedelta(seconds=self.timeout)
        if self.host:
            return host_store(self.addr, self.port, self.world, self.timeout)
        try:
            return dist.TCPStore(self.addr, self.port, self.world, False, td)
        except Exception as e:  # the client retries until its timeout, then gives up
            raise PeerTimeout(f"party {self.me}: no answer from the rendezvous at {self.addr}:{self.port} "
                              f"(hosted by {self.names[0]}) within {self.timeout:g} s ({_first_line(e)})") from None

    def _rendezvous(self):
        self.store.set(self._key("up", self.rank), self.bind)
        deadline = time.monotonic() + self.timeout
        missing = list(range(self.world))
        while True:
            missing = [r for r in missing if not self.store.check([self._key("up", r)])]
            if not missing:
                return
            self._check_failed()
            if time.monotonic() > deadline:
                who = ", ".join(self.names[r] for r in missing)
                raise PeerTimeout(f"party {self.me}: no answer from {who} within {self.timeout:g} s "
                                  f"(never joined the rendezvous at {self.addr}:{self.port})")
            time.sleep(0.01)

    def _make_group(self):
        G = dist.ProcessGroupGloo
        opts = G._Options()
        opts._devices = [G.create_device(hostname=self.bind)]
        # gloo's own timeout only backs ours up: the polling below fires first
        opts._timeout = datetime.timedelta(seconds=self.timeout + 10)
        return G(dist.PrefixStore(self._key("gloo"), self.store), self.rank, self.world, opts)

    # ---- failures ----------------------------------------------------------------------

    def _published_failure(self):
        """(who, message) published by a failed rank, or None."""
        if not self._store_ok:
            return None
        key = self._key("failed")
        try:
            if not self.store.check([key]):
                return None
            text = self.store.get(key).decode("utf-8", "replace")
        except Exception:  # noqa: BLE001 — the store's host is gone; the connections will tell
            self._store_ok = False
            return None
        who, _, msg = text.partition(": ")
        return who, msg

    CHECK_EVERY = 0.1  # check(): a look at the store is a round trip to its host

    def _check_peers(self):
        self._check_failed()

    def _check_failed(self):
        f = self._published_failure()
        if f is not None and f[0] != self.me:
            raise PeerFailed(f"party {f[0]} failed: {f[1]}")

    def fail(self, err: BaseException):
        self._failed = True
        text = f"{self.me}: {err}"[:_MAX_MESSAGE]
        if getattr(self, "store", None) is None:
            return
        try:
            self.store.compare_set(self._key("failed"), "", text)
        except Exception:  # noqa: BLE001 — nobody left to tell
            pass

    def _await(self, p: _Pending, what: str):
        """Wait for a posted work, polling for published failures and the deadline."""
        if self._waiter is None:
            self._waiter = _Waiter(self.me)
        self._waiter.submit(p)
        deadline = time.monotonic() + self.timeout
        try:
            while not p.done.wait(_POLL):
                self._check_failed()
                if time.monotonic() > deadline:
                    raise PeerTimeout(f"party {self.me}: {what} {self.names[p.peer]} within {self.timeout:g} s")
            if p.error is not None:
                self._check_failed()
                raise PeerFailed(f"party {self.me}: lost the connection to {self.names[p.peer]} "
                                 f"({_first_line(p.error)})")
        except CommError:
            self._failed = True  # this rank stops: close() will not wait for its sends
            raise

    # ---- transport ---------------------------------------------------------------------

    def _send(self, dst: int, payload: torch.Tensor):
        if self.pg is None:
            raise CommError(f"party {self.me}: communicator is closed")
        if payload.numel() == 0:
            return
        payload = payload.contiguous()
        pending = self._sends[dst]
        pending.append(_Pending(self._post(self.pg.send, payload, dst), dst, payload))
        # Flow control: a gloo send completes once dst has posted the matching recv, so
        # the oldest of several is normally done; waiting for it bounds the buffers held.
        # Everything dst needs to reach that recv was posted before it: no deadlock.
        while len(pending) > _IN_FLIGHT:
            self._await(pending.popleft(), "no receive posted by")

    def _recv(self, src: int, nbytes_: int) -> torch.Tensor:
        if self.pg is None:
            raise CommError(f"party {self.me}: communicator is closed")
        buf = torch.empty(nbytes_, dtype=torch.uint8)
        if nbytes_ == 0:
            return buf
        self._await(_Pending(self._post(self.pg.recv, buf, src), src), "no message from")
        return buf

    def _post(self, op, buf, peer):
        """Post a gloo send or recv; one to a peer whose connection broke raises at once."""
        try:
            return op([buf], peer, _TAG)
        except Exception as e:  # noqa: BLE001
            self._check_failed()
            raise PeerFailed(f"party {self.me}: lost the connection to {self.names[peer]} "
                             f"({_first_line(e)})") from None

    def flush(self):
        """Wait until every posted send has been taken by its receiver."""
        for pending in self._sends.values():
            while pending:
                self._await(pending[0], "no receive posted by")
                pending.popleft()

    def close(self):
        """Flush sends (unless failed), then leave; the rendezvous host waits for all ranks
        to leave (at most `timeout`) so that the store outlives every reader."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self._failed and self.pg is not None:
                self.flush()
        except BaseException as e:
            self.fail(e)
            raise
        finally:
            if self._failed:
                self._abort()
            self._leave()

    def _abort(self):
        """Tear this rank's gloo connections down: its own blocked wait returns, and peers
        still waiting on it stop at once (with the published error) even without the store.
        gloo has no abort that does this; an expired wait does it, so make one expire."""
        if self.pg is None:
            return
        try:
            peer = 1 if self.rank == 0 else 0
            work = self.pg.recv([torch.empty(1, dtype=torch.uint8)], peer, _ABORT_TAG)
            work.wait(datetime.timedelta(milliseconds=1))
        except Exception:  # noqa: BLE001 — expected: that is the point
            pass

    def _leave(self):
        store = getattr(self, "store", None)
        if store is None:
            return
        key = self._key("done")
        try:
            store.add(key, 1)
            if self.host:  # wait for the ranks that joined to leave
                deadline = time.monotonic() + self.timeout
                while time.monotonic() < deadline:
                    joined = sum(bool(store.check([self._key("up", r)])) for r in range(self.world))
                    if store.add(key, 0) >= joined:
                        break
                    time.sleep(_POLL)
        except Exception:  # noqa: BLE001
            pass
        self._sends.clear()
        if self._waiter is not None:
            self._waiter.stop(2.0)
        self.pg = None
