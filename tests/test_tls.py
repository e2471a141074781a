"""TLS transport and deployment certificates: a mesh in threads over 127.0.0.1 moves every
kind of payload with the same counters as in-process queues; strangers (another CA, the
wrong name, plain TCP garbage, another run) are refused while the mesh still forms; a
missing rank is named; failures and dead peers stop everyone; no fd or thread leaks."""
from __future__ import annotations

import os
import socket
import ssl
import threading
import time

import pytest
import torch

from planc.certs import add_party, identity_name, make_deployment
from planc.runtime.comm.base import PeerFailed, PeerTimeout
from planc.runtime.comm.tls import Identity, Listener, TLSComm, peer_name

NAMES = ["alice", "bob", "carol", "dealer"]


@pytest.fixture(scope="module")
def dep(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    made = make_deployment(NAMES + ["mallory"], d)
    ids = {n: Identity(p["cert"], p["key"], d / "ca.pem") for n, p in made.items()}
    other = tmp_path_factory.mktemp("other")
    o = make_deployment(["bob"], other)["bob"]
    ids["foreign-bob"] = Identity(o["cert"], o["key"], other / "ca.pem")
    return d, ids


def _mesh(ids, fn, names=NAMES, timeout=20.0, run_id="run-1", who=None, skip=(), late=None, before_late=None):
    """Every rank but `skip` in a thread: {rank: fn(rank, comm) or exception}. Rank `late`
    starts only after `before_late(table)` returned (strangers knock first)."""
    listeners = {r: Listener(ids[n]) for r, n in enumerate(names)}
    table = {r: ("127.0.0.1", listeners[r].port, n) for r, n in enumerate(names)}
    out = {}

    def go(r):
        try:
            c = TLSComm(r, names, timeout, identity=ids[(who or {}).get(r, names[r])], listener=listeners[r],
                        peers={k: v for k, v in table.items() if k != r}, run_id=run_id)
        except BaseException as e:  # noqa: BLE001
            out[r] = e
            listeners[r].close()
            return
        try:
            out[r] = fn(r, c)
        except BaseException as e:  # noqa: BLE001
            out[r] = e
        finally:
            c.close()

    ts = {r: threading.Thread(target=go, args=(r,)) for r in range(len(names)) if r not in skip}
    for r, t in ts.items():
        if r != late:
            t.start()
    if late is not None:
        before_late(table)
        ts[late].start()
    for t in ts.values():
        t.join(60)
    for r in skip:
        listeners[r].close()
    return out


def _payloads(r):
    g = torch.Generator().manual_seed(r)
    return [torch.rand(1001, generator=g) > 0.5, torch.randint(-2**62, 2**62, (77,), generator=g),
            torch.empty(0, dtype=torch.int64), torch.randint(0, 2**62, (30 * 2**20 // 8,), generator=g)]


SPECS = [((1001,), torch.bool), ((77,), torch.int64), ((0,), torch.int64), ((30 * 2**20 // 8,), torch.int64)]


def test_mesh_round_trip_and_counters(dep):
    from planc.runtime.comm.inproc import Network

    _, ids = dep

    def fn(r, c):
        got = c.exchange({d: _payloads(r) for d in range(4) if d != r}, {s: SPECS for s in range(4) if s != r})
        for s, ts in got.items():
            for a, b in zip(ts, _payloads(s)):
                assert a.dtype == b.dtype and torch.equal(a, b)
        return c.stats.as_dict()

    res = _mesh(ids, fn)
    net = Network(NAMES)
    want = _threads_of(lambda r: (lambda c: (c.exchange({d: _payloads(r) for d in range(4) if d != r},
                                                        {s: SPECS for s in range(4) if s != r}),
                                             c.stats.as_dict())[1])(net.comm(r, 20)))
    for r in range(4):
        assert not isinstance(res[r], BaseException), res[r]
        assert res[r] == want[r]


def _threads_of(fn, n=4):
    out = {}
    ts = [threading.Thread(target=lambda r=r: out.__setitem__(r, fn(r))) for r in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    return out


def _stranger(table, ids, rank_target, attempt):
    host, port, _ = table[rank_target]
    attempt(host, port)


def _tls_try(ident, host, port, hello=None):
    import json
    import struct
    ctx = ident.client_context()
    try:
        with socket.create_connection((host, port), timeout=3) as raw, ctx.wrap_socket(raw) as s:
            if hello is not None:
                body = json.dumps(hello).encode()
                s.sendall(struct.pack("!BQ", 1, len(body)) + body)
            s.settimeout(3)
            return s.recv(9)  # b"" or an error: refused
    except (OSError, ssl.SSLError):
        return b""


def test_strangers_are_refused_and_the_mesh_still_forms(dep):
    _, ids = dep
    seen = []

    def strangers(table):
        host, port, _ = table[0]  # alice's listener; bob (rank 1) is the legitimate one
        seen.append(_tls_try(ids["foreign-bob"], host, port, {"run": "run-1", "rank": 1, "to": 0}))
        seen.append(_tls_try(ids["mallory"], host, port, {"run": "run-1", "rank": 1, "to": 0}))
        seen.append(_tls_try(ids["bob"], host, port, {"run": "run-2", "rank": 1, "to": 0}))
        with socket.create_connection((host, port), timeout=3) as s:  # plain TCP garbage
            s.sendall(b"GET / HTTP/1.0\r\n\r\n" * 10)
            s.settimeout(3)
            try:
                seen.append(s.recv(100) and b"")
            except OSError:
                seen.append(b"")
        silent = socket.create_connection((host, port), timeout=3)  # says nothing at all
        time.sleep(0.2)
        threading.Timer(4, silent.close).start()

    def fn(r, c):
        got = c.exchange({d: [torch.tensor([r])] for d in range(4) if d != r},
                         {s: [((1,), torch.int64)] for s in range(4) if s != r})
        return {s: int(t[0]) for s, ts in got.items() for t in ts}, list(c.refused)

    # bob joins only after the strangers tried
    out = _mesh(ids, fn, late=1, before_late=strangers)
    assert seen == [b""] * 4, seen
    for r in range(4):
        assert not isinstance(out[r], BaseException), out[r]
        assert out[r][0] == {s: s for s in range(4) if s != r}
    refused = " | ".join(out[0][1])
    assert "another run" in refused and "mallory" in refused, refused


def test_missing_rank_is_named(dep):
    _, ids = dep
    t0 = time.monotonic()
    res = _mesh(ids, lambda r, c: None, timeout=2.0, skip=(2,))
    assert time.monotonic() - t0 < 15
    for r in (0, 1):  # carol (rank 2) never connects to them
        assert isinstance(res[r], (PeerTimeout, PeerFailed)), res[r]
    assert isinstance(res[3], PeerTimeout) and "carol (rank 2" in str(res[3]), res[3]
    assert "carol" in str(res[0]) and "rank 2" in str(res[0]), res[0]


def test_failure_reaches_every_peer(dep):
    _, ids = dep

    def fn(r, c):
        if r == 1:
            time.sleep(0.3)
            c.fail(ValueError("boom at bob"))
            return None
        t0 = time.monotonic()
        try:
            c._recv(1, 16)
        except PeerFailed as e:
            return e, time.monotonic() - t0

    res = _mesh(ids, fn, timeout=30)
    for r in (0, 2, 3):
        err, took = res[r]
        assert str(err) == "party bob failed: boom at bob", err
        assert took < 3.0


def test_abrupt_close_is_a_lost_connection(dep):
    _, ids = dep

    def fn(r, c):
        if r == 1:
            time.sleep(0.5)  # mid-run, not mid-setup: let the others finish forming the mesh
            for cc in c.conns.values():  # as if the process were killed: no BYE
                socket.socket.shutdown(cc.s, socket.SHUT_RDWR)
            return None
        try:
            c._recv(1, 8)
        except PeerFailed as e:
            return e

    res = _mesh(ids, fn, timeout=30)
    for r in (0, 2, 3):
        assert isinstance(res[r], PeerFailed) and "party bob: connection lost" in str(res[r]), res[r]


def _fds():
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_no_fd_or_thread_leak(dep):
    _, ids = dep
    names = ["alice", "bob", "dealer"]
    fn = lambda r, c: c.exchange({d: [torch.tensor([r])] for d in range(3) if d != r},  # noqa: E731
                                 {s: [((1,), torch.int64)] for s in range(3) if s != r})
    _mesh(ids, fn, names=names)
    fds, threads = _fds(), threading.active_count()
    for _ in range(17):  # 17 meshes of 3: 51 comms
        res = _mesh(ids, fn, names=names)
        assert all(not isinstance(v, BaseException) for v in res.values()), res
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (threading.active_count() > threads or _fds() > fds):
        time.sleep(0.05)
    assert threading.active_count() <= threads and _fds() <= fds, (threading.enumerate(), _fds(), fds)


# ---- planc.certs --------------------------------------------------------------------------------

def test_certs_handshake_names_and_modes(tmp_path):
    made = make_deployment(["alice", "bob"], tmp_path, hosts=("127.0.0.1", "localhost", "::1"))
    assert set(made) == {"alice", "bob"} and identity_name(made["bob"]["cert"]) == "bob"
    for f in ("ca.key", "alice.key", "bob.key"):
        assert os.stat(tmp_path / f).st_mode & 0o777 == 0o600
    a = Identity(made["alice"]["cert"], made["alice"]["key"], tmp_path / "ca.pem")
    b = Identity(made["bob"]["cert"], made["bob"]["key"], tmp_path / "ca.pem", name="bob")
    with Listener(a) as lst:
        got = {}

        def serve():
            conn, _ = lst.sock.accept()
            conn.settimeout(5)
            with a.server_context().wrap_socket(conn, server_side=True) as s:
                got["server"] = peer_name(s), s.version()
                s.sendall(b"x")

        t = threading.Thread(target=serve)
        t.start()
        ctx = b.client_context()
        ctx.check_hostname = True  # the SANs hold 127.0.0.1 and the name too
        with socket.create_connection(("127.0.0.1", lst.port), 5) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            got["client"] = peer_name(s)
            s.recv(1)
        t.join(5)
    assert got == {"server": ("bob", "TLSv1.3"), "client": "alice"}
    c = add_party("carol", tmp_path)
    assert identity_name(c["cert"]) == "carol"
    with pytest.raises(FileExistsError, match="alice.pem"):
        make_deployment(["alice"], tmp_path)
    with pytest.raises(FileExistsError, match="carol"):
        add_party("carol", tmp_path)
    make_deployment(["alice"], tmp_path, force=True)
    with pytest.raises(ValueError, match="not 'mallory'"):
        Identity(made["bob"]["cert"], made["bob"]["key"], tmp_path / "ca.pem", name="mallory")


@pytest.mark.parametrize("bad", ["", "a/b", "../x", "x" * 65, "ca", "-x", "a b", "é"])
def test_certs_bad_names(tmp_path, bad):
    with pytest.raises(ValueError, match="bad party name"):
        make_deployment([bad], tmp_path)
    assert not list(tmp_path.iterdir())


def test_certs_main(tmp_path, capsys):
    import argparse
    from planc.certs import certs_main
    assert certs_main(argparse.Namespace(parties="alice,bob,dealer", out=str(tmp_path), force=False,
                                         hosts="127.0.0.1,localhost")) == 0
    assert "dealer" in capsys.readouterr().out and (tmp_path / "dealer.key").exists()
