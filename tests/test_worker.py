"""The daemons (`planc worker`, `planc dealer`) as real subprocesses over HTTPS with
client certificates: info and catalogue (metadata, never values), every bad request a
clear JSON 4xx after which the daemon keeps serving, manual approval (by run, by hash
with a limit), deadlines, cancelling, and full runs of 2 parties + dealer whose outputs
match the plaintext reference.

Daemons are shared by the module (each start costs 2-3 s); every test uses run ids of
its own. The data plane is the TLS mesh when planc.runtime.comm.tls is there, else the
gloo transport (labelled as such by the daemon's /v1/info).
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
import zipfile
import io

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import planc
import workerkit as wk

TRANSPORT = "tls" if importlib.util.find_spec("planc.runtime.comm.tls") is not None else "gloo"
NAMES = ["alice", "bob", "dealer", "carol", "orch", "boss", "stranger"]
pytestmark = pytest.mark.filterwarnings("ignore:output .* is revealed to nobody")

torch.manual_seed(0)
VA = torch.randn(3)
VB = torch.randn(3)
M = torch.randn(2, 2)


@planc.plan(parties=["alice", "bob"])
def product():
    x = planc.load("va", owner="alice", shape=(3,))
    y = planc.load("vb", owner="bob", shape=(3,))
    s = planc.share(x) * planc.share(y)
    return planc.reveal(s, to="all"), planc.reveal(s + 1.0, to="alice"), s


@planc.plan(parties=["alice", "bob"])
def uses_exp():
    x = planc.load("va", owner="alice", shape=(3,))
    return planc.reveal(torch.exp(planc.share(x)), to="all")  # EXP_LINE


@planc.plan(parties=["alice", "bob"])
def reveal_to_bob():
    x = planc.load("va", owner="alice", shape=(3,))
    y = planc.load("vb", owner="bob", shape=(3,))
    return planc.reveal(planc.share(x) + planc.share(y), to="bob")


@planc.plan(parties=["alice", "bob"])
def missing_tag():
    x = planc.load("nope", owner="alice", shape=(3,))
    return planc.reveal(x + 1.0, to="all")


@planc.plan(parties=["alice", "bob"])
def wrong_shape():
    x = planc.load("m", owner="alice", shape=(3, 3))
    return planc.reveal(x + 1.0, to="all")


@planc.plan(parties=["alice", "bob"])
def too_big():
    x = planc.load("big", owner="alice", shape=(3,))
    y = planc.load("vb", owner="bob", shape=(3,))
    return planc.reveal(planc.share(x) * planc.share(y), to="all")


def _here() -> str:
    """This file as the plans' locations name it (relative to where pytest runs)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return uses_exp.plan.graph.nodes[0].loc.file


HERE = _here()


def _line(marker: str) -> int:
    src = open(__file__).read().splitlines()
    return next(i + 1 for i, s in enumerate(src) if marker in s and "_line(" not in s)


@pytest.fixture(scope="module")
def dep(tmp_path_factory):
    d = tmp_path_factory.mktemp("deploy")
    ids = wk.deployment(d / "certs", NAMES)
    other = wk.deployment(d / "other", ["orch"])  # the same name, another CA
    save_file({"a": VA}, str(d / "a.safetensors"))
    save_file({"m": M, "big": torch.full((3,), 1e30)}, str(d / "am.safetensors"))
    np.save(d / "b.npy", VB.numpy())
    (d / "alice-policy.toml").write_text('name = "alice-policy"\n[ops]\ndeny = ["exp"]\n'
                                         '[reveal]\nto = ["all", "alice"]\n')
    return {"dir": d, "ids": ids, "ca": d / "certs" / "ca.pem", "other": other, "other_ca": d / "other" / "ca.pem"}


@pytest.fixture(scope="module")
def daemons(dep):
    d, ids, ca = dep["dir"], dep["ids"], dep["ca"]
    common = dict(ca=ca, clients=["orch"], transport=TRANSPORT)
    cfgs = {
        "alice": wk.write_config(d / "alice.toml", name="alice", **ids["alice"], **common, max_body="256 KiB",
                                 policy=str(d / "alice-policy.toml"), admins=["boss"], catalogue=[
                                     {"tag": "va", "file": str(d / "a.safetensors"),
                                      "description": "Alice's vector, 3 float32",
                                      "meta": {"source": "randn seed 0", "license": "CC0"}},
                                     {"tag": "m", "file": str(d / "am.safetensors"), "key": "m",
                                      "description": "a 2x2 matrix"},
                                     {"tag": "big", "file": str(d / "am.safetensors"), "key": "big",
                                      "description": "values far out of range"}]),
        "bob": wk.write_config(d / "bob.toml", name="bob", **ids["bob"], **common, catalogue=[
            {"tag": "vb", "file": str(d / "b.npy"), "description": "Bob's vector (npy)"}]),
        "dealer": wk.write_config(d / "dealer.toml", name="dealer", role="dealer", **ids["dealer"], **common),
        "carol": wk.write_config(d / "carol.toml", name="carol", **ids["carol"], **common, approval="manual",
                                 admins=["boss"], catalogue=[{"tag": "va", "file": str(d / "a.safetensors")}]),
    }
    with wk.running(cfgs) as ds:
        yield ds


@pytest.fixture(scope="module")
def conns(dep, daemons):
    cs = {k: wk.client(v, dep["ids"]["orch"], dep["ca"]) for k, v in daemons.items()}
    yield cs
    for c in cs.values():
        c.close()


def as_(dep, daemons, who, where="alice"):
    return wk.client(daemons[where], dep["ids"][who], dep["ca"])


def sub(plan_fn, run_id, party="alice", **kw):
    return wk.submission(plan_fn.plan.to_bytes(), run_id, party, {"alice": "alice", "bob": "bob"}, "dealer", **kw)


def err(r, status, rule=None):
    assert r.status_code == status, (r.status_code, r.text)
    e = r.json()["error"]
    assert set(e) == {"code", "worker", "rule", "message", "where"} and e["code"] == status
    if rule is not None:
        assert e["rule"] == rule, e
    return e


def still_serving(conns, where="alice"):
    r = conns[where].get("/v1/info")
    assert r.status_code == 200 and r.json()["name"] == where


# ---- reading ----------------------------------------------------------------------------------

def test_info(conns):
    d = conns["alice"].get("/v1/info").json()
    assert d["name"] == "alice" and d["role"] == "worker" and d["approval"] == "auto"
    assert d["transport"] == TRANSPORT and d["policy"]["name"] == "alice-policy" and len(d["policy"]["sha256"]) == 64
    d = conns["dealer"].get("/v1/info").json()
    assert d["role"] == "dealer" and d["policy"]["name"] == "default"
    assert conns["carol"].get("/v1/info").json()["approval"] == "manual"


def test_catalogue_and_search_show_metadata_never_values(conns):
    r = conns["alice"].get("/v1/catalogue")
    d = r.json()
    assert d["worker"] == "alice" and [e["tag"] for e in d["entries"]] == ["big", "m", "va"]
    va = next(e for e in d["entries"] if e["tag"] == "va")
    assert va == {"tag": "va", "owner": "alice", "dtype": "f32", "shape": [3], "description": "Alice's vector, 3 "
                  "float32", "meta": {"source": "randn seed 0", "license": "CC0"}}
    for x in VA.tolist() + M.flatten().tolist():  # no value, no path
        assert f"{x:.4f}"[:6] not in r.text
    assert "safetensors" not in r.text
    search = lambda q: [e["tag"] for e in conns["alice"].get("/v1/catalogue", params={"q": q}).json()["entries"]]
    assert search("VEC") == ["va"]  # description, any case
    assert search("cc0") == ["va"]  # a meta value
    assert search("m") == ["m"] and search("OUT OF") == ["big"]
    assert search("2x2") == ["m"]
    assert search("zebra") == []
    b = conns["bob"].get("/v1/catalogue").json()["entries"]
    assert b == [{"tag": "vb", "owner": "bob", "dtype": "f32", "shape": [3], "description": "Bob's vector (npy)",
                  "meta": {}}]
    assert conns["dealer"].get("/v1/catalogue").json()["entries"] == []


def test_status(conns):
    d = conns["alice"].get("/v1/status").json()
    assert d["name"] == "alice" and d["role"] == "worker" and d["uptime_s"] > 0
    assert isinstance(d["runs"], list) and "active" in d and "pending" in d


# ---- who may connect --------------------------------------------------------------------------

def test_no_client_certificate_is_refused_by_tls(dep, daemons, conns):
    with wk.client(daemons["alice"], None, dep["ca"]) as c:
        with pytest.raises(httpx.TransportError):
            c.get("/v1/info")
    still_serving(conns)


def test_certificate_from_another_ca_is_refused(dep, daemons, conns):
    evil = dep["other"]["orch"]  # CN "orch", but signed by another CA
    ctx = wk.client_context(evil["cert"], evil["key"], dep["ca"])
    with httpx.Client(base_url=daemons["alice"].url, verify=ctx) as c:
        with pytest.raises(httpx.TransportError):
            c.get("/v1/info")
    still_serving(conns)


def test_identity_not_among_clients_is_403(dep, daemons, conns):
    with as_(dep, daemons, "stranger") as c:
        e = err(c.get("/v1/info"), 403, "identity")
        assert "stranger" in e["message"] and e["worker"] == "alice"
        err(c.post("/v1/runs", json=sub(product, "s1")), 403, "identity")
        err(c.get("/v1/catalogue"), 403, "identity")
    still_serving(conns)


# ---- bad submissions: each a clear 4xx, and the daemon keeps serving --------------------------

def _bad_manifest() -> bytes:
    from planc.ir.plan import Plan, _encode, planc_version

    p = product.plan
    return _encode(Plan(p.graph, p.constants, p.captured, {"frac_bits": 99}), planc_version())


def _flipped() -> bytes:
    b = bytearray(product.plan.to_bytes())
    b[len(b) // 2] ^= 0xFF
    return bytes(b)


BAD = {
    "malformed json": (lambda: b"{not json", 400, "body", "not JSON"),
    "not an object": (lambda: b"[1, 2]", 400, "body", "JSON object"),
    "missing field": (lambda: {k: v for k, v in sub(product, "b1").items() if k != "timeout"}, 400, "body",
                      "'timeout': missing"),
    "unknown field": (lambda: {**sub(product, "b2"), "colour": "red"}, 400, "body", "'colour'"),
    "bad base64": (lambda: {**sub(product, "b3"), "plan": "%%% not base64 %%%"}, 400, "body", "'plan': not valid base64"),
    "bad inputs base64": (lambda: {**sub(product, "b3i"), "inputs": "@@@"}, 400, "body", "'inputs'"),
    "inputs not safetensors": (lambda: {**sub(product, "b3s"), "inputs": wk.b64(b"hello world!")}, 400, "body",
                               "'inputs': not a safetensors"),
    "bad timeout": (lambda: {**sub(product, "b4"), "timeout": -1}, 400, "body", "'timeout'"),
    "bad run id": (lambda: {**sub(product, "b5"), "run_id": "../etc"}, 400, "run_id", "run_id"),
    "corrupt plan bytes": (lambda: {**sub(product, "b6"), "plan": wk.b64(_flipped())}, 400, "plan", "member"),
    "not a plan": (lambda: {**sub(product, "b7"), "plan": wk.b64(b"hello")}, 400, "plan", "not a zip file"),
    "bad manifest field": (lambda: {**sub(product, "b8"), "plan": wk.b64(_bad_manifest())}, 400, "plan",
                           "meta.frac_bits"),
    "party mapped to another worker": (lambda: {**sub(product, "b9"), "parties": {"alice": "bob", "bob": "alice"}},
                                       400, "party", "mapped to 'bob'"),
    "parties not the plan's": (lambda: {**sub(product, "b10"), "parties": {"x": "alice"}}, 400, "party",
                               "the plan's parties are alice, bob"),
    "a worker as dealer": (lambda: sub(product, "b11", party="dealer"), 400, "party", "not the dealer"),
    "tag the worker lacks": (lambda: sub(missing_tag, "b12"), 409, "catalogue", "'nope'"),
    "wrong shape": (lambda: sub(wrong_shape, "b13"), 409, "catalogue", "wants f32[3,3], this worker has f32[2,2]"),
    "op the policy denies": (lambda: sub(uses_exp, "b14"), 403, "ops", "op exp is not allowed"),
    "reveal the policy denies": (lambda: sub(reveal_to_bob, "b15"), 403, "reveal", "reveal to bob"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_submission_is_a_clear_4xx_and_the_daemon_keeps_serving(conns, case):
    make, status, rule, text = BAD[case]
    body = make()
    c = conns["alice"]
    if isinstance(body, bytes):
        r = c.post("/v1/runs", content=body, headers={"content-type": "application/json"})
    else:
        r = c.post("/v1/runs", json=body)
    e = err(r, status, rule)
    assert text in e["message"], e
    assert e["worker"] == "alice"
    if case == "op the policy denies":
        assert e["where"] == f"{HERE}:{_line('# EXP_LINE')}", e
    if case in ("tag the worker lacks", "wrong shape"):
        assert e["where"] is not None and e["where"].startswith(HERE)
    still_serving(conns)


def test_oversized_body_is_413(conns):
    big = {**sub(product, "big1"), "inputs": wk.b64(b"x" * (300 << 10))}
    e = err(conns["alice"].post("/v1/runs", json=big), 413, "max_body")
    assert "262,144" in e["message"]
    still_serving(conns)


def test_duplicate_run_id_is_409(conns):
    r = conns["bob"].post("/v1/runs", json=sub(product, "dup1", party="bob"))
    assert r.status_code == 201, r.text
    err(conns["bob"].post("/v1/runs", json=sub(product, "dup1", party="bob")), 409, "run_id")
    conns["bob"].post("/v1/runs/dup1/cancel")
    err(conns["bob"].post("/v1/runs", json=sub(product, "dup1", party="bob")), 409, "run_id")  # even once ended
    still_serving(conns, "bob")


def test_unknown_routes_and_methods_are_json(conns):
    err(conns["alice"].get("/v1/nothing"), 404, "route")
    err(conns["alice"].get("/"), 404, "route")
    err(conns["alice"].delete("/v1/info"), 405, "method")
    err(conns["alice"].get("/v1/runs/nosuchrun"), 404, "run_id")
    err(conns["alice"].get("/v1/runs/x", params={"wait": "soon"}), 404)  # the run first
    still_serving(conns)


def test_the_dealer_refuses_to_play_a_party(conns):
    err(conns["dealer"].post("/v1/runs", json=sub(product, "d1", party="alice")), 400, "party")
    r = conns["dealer"].post("/v1/runs", json=sub(product, "d2", party="dealer"))
    assert r.status_code == 201 and r.json()["state"] == "accepted", r.text
    conns["dealer"].post("/v1/runs/d2/cancel")


# ---- run states: deadlines, cancelling, who may see a run -------------------------------------

def _wait_state(c, rid, states, wait=15.0):
    end = time.monotonic() + wait
    while time.monotonic() < end:
        d = c.get(f"/v1/runs/{rid}", params={"wait": 5}).json()
        if d["state"] in states:
            return d
    raise AssertionError(f"{rid}: still {d['state']}")


def test_an_accepted_run_never_started_expires(conns):
    r = conns["bob"].post("/v1/runs", json=sub(product, "exp1", party="bob", timeout=1))
    assert r.json()["state"] == "accepted" and (r.json()["data_port"] or TRANSPORT == "gloo")
    d = _wait_state(conns["bob"], "exp1", ("expired",))
    assert d["error"]["rule"] == "start"
    err(conns["bob"].post("/v1/runs/exp1/start", json={"peers": {}}), 409, "state")


def test_long_poll_returns_at_once_on_a_change_and_after_wait_otherwise(conns):
    conns["bob"].post("/v1/runs", json=sub(product, "lp1", party="bob", timeout=2))
    t = time.monotonic()
    d = conns["bob"].get("/v1/runs/lp1", params={"wait": 0.5}).json()
    assert d["state"] == "accepted" and 0.4 < time.monotonic() - t < 2
    t = time.monotonic()
    d = conns["bob"].get("/v1/runs/lp1", params={"wait": 30}).json()
    assert d["state"] == "expired" and time.monotonic() - t < 5


def test_cancel_and_who_may_see_a_run(dep, daemons, conns):
    r = conns["bob"].post("/v1/runs", json=sub(product, "c1", party="bob"))
    assert r.status_code == 201
    with as_(dep, daemons, "alice", "bob") as other:  # another identity: may not read or start it
        err(other.get("/v1/info"), 403, "identity")  # alice is not among bob's clients at all
    d = conns["bob"].post("/v1/runs/c1/cancel").json()
    assert d["state"] == "cancelled"
    err(conns["bob"].post("/v1/runs/c1/cancel"), 409, "state")
    err(conns["bob"].post("/v1/runs/c1/start", json={"peers": {}}), 409, "state")
    with as_(dep, daemons, "boss", "alice") as boss:  # an admin may read alice's runs
        conns["alice"].post("/v1/runs", json=sub(product, "c2"))
        assert boss.get("/v1/runs/c2").json()["state"] == "accepted"
        err(boss.post("/v1/runs/c2/start", json={"peers": {}}), 403, "identity")  # only the submitter starts
        boss.post("/v1/runs/c2/cancel")
    err(conns["alice"].get("/v1/runs/c2/reveals"), 403, "identity")  # orch is no client party of c2


def test_start_checks_the_peers_against_the_submitted_identities(conns):
    conns["alice"].post("/v1/runs", json=sub(product, "pe1"))
    bad = {"peers": {"1": {"host": "127.0.0.1", "port": 9, "identity": "mallory"},
                     "2": {"host": "127.0.0.1", "port": 9, "identity": "dealer"}}}
    e = err(conns["alice"].post("/v1/runs/pe1/start", json=bad), 400, "peers")
    assert "'bob'" in e["message"] and "mallory" in e["message"]
    err(conns["alice"].post("/v1/runs/pe1/start", json={"peers": "x"}), 400, "body")
    assert conns["alice"].get("/v1/runs/pe1").json()["state"] == "accepted"
    conns["alice"].post("/v1/runs/pe1/cancel")


# ---- manual approval --------------------------------------------------------------------------

def test_manual_approval_by_run_and_by_hash_with_a_limit(dep, daemons, conns):
    c = conns["carol"]

    def submit(rid, timeout=60):
        body = wk.submission(uses_va.plan.to_bytes(), rid, "carol", {"carol": "carol", "bob": "bob"}, "dealer",
                             timeout=timeout)
        r = c.post("/v1/runs", json=body)
        assert r.status_code == 201, r.text
        return r.json()

    d = submit("m1")
    assert d["state"] == "pending_approval"
    h = d["plan_hash"]
    assert h == uses_va.plan.sha256()
    err(c.get("/v1/pending"), 403, "identity")  # orch may submit, not approve
    err(c.post("/v1/approve", json={"run_id": "m1"}), 403, "identity")
    err(c.post("/v1/runs/m1/start", json={"peers": {}}), 409, "approval")
    with as_(dep, daemons, "boss", "carol") as boss, as_(dep, daemons, "carol", "carol") as own:
        p = boss.get("/v1/pending").json()
        assert [x["run_id"] for x in p["pending"]] == ["m1"] and p["pending"][0]["plan_hash"] == h
        assert own.get("/v1/pending").status_code == 200  # its own identity may, too
        assert boss.post("/v1/approve", json={"run_id": "m1"}).json()["approved"] == ["m1"]
        assert c.get("/v1/runs/m1").json()["state"] == "accepted"
        err(boss.post("/v1/approve", json={"run_id": "m1"}), 409, "state")
        err(boss.post("/v1/approve", json={"plan_hash": "xyz"}), 400, "body")
        err(boss.post("/v1/approve", json={"run_id": "m1", "plan_hash": h}), 400, "body")
        # a hash approved for 2 runs: the next two go through, the third waits again
        a = own.post("/v1/approve", json={"plan_hash": h, "limit": 2}).json()
        assert a["approved"] == [] and a["remaining"] == 2
        assert submit("m2")["state"] == "accepted"
        assert submit("m3")["state"] == "accepted"
        assert submit("m4")["state"] == "pending_approval"
        # approving the hash again approves the pending run at once and leaves one
        a = boss.post("/v1/approve", json={"plan_hash": h, "limit": 2}).json()
        assert a["approved"] == ["m4"] and a["remaining"] == 1
        # a pending run not approved in time is refused
        assert submit("m5", timeout=60)["state"] == "accepted"  # the one left
        assert submit("m6", timeout=1)["state"] == "pending_approval"
        d = _wait_state(c, "m6", ("refused",))
        assert d["error"]["rule"] == "approval"
        for rid in ("m1", "m2", "m3", "m4", "m5"):
            c.post(f"/v1/runs/{rid}/cancel")
        assert boss.get("/v1/pending").json()["pending"] == []
    events = [x["event"] for x in daemons["carol"].log_lines()]
    assert "pending" in events and "approved" in events and "refused" in events


@planc.plan(parties=["carol", "bob"])
def uses_va():
    x = planc.load("va", owner="carol", shape=(3,))
    y = planc.load("vb", owner="bob", shape=(3,))
    return planc.reveal(planc.share(x) * planc.share(y), to="all")


# ---- full runs: 2 parties + dealer over the data plane -----------------------------------------

def test_full_run_outputs_match_the_reference(daemons, conns, dep):
    pb = product.plan.to_bytes()
    out = wk.run_plan(pb, "full1", {"alice": daemons["alice"], "bob": daemons["bob"]}, daemons["dealer"], conns,
                      timeout=60)
    for p, d in out.items():
        assert d["state"] == "done", (p, d["error"])
    ref = planc.run_reference(product.plan, data={"alice": {"va": VA}, "bob": {"vb": VB}})
    a, b = out["alice"]["outputs"], out["bob"]["outputs"]
    assert [o["kind"] for o in a] == ["public", "own", "held"]
    assert [o["kind"] for o in b] == ["public", "none", "held"]
    for o in (a[0], b[0]):
        assert o["dtype"] == "f32" and o["shape"] == [3]
        assert torch.allclose(torch.tensor(o["value"]), ref[0], atol=1e-3)
    assert "value" not in a[1] and a[1]["path"].endswith("full1/out1.safetensors")
    own = load_file(a[1]["path"])["out1"]
    assert torch.allclose(own, ref[1], atol=1e-3)
    assert a[2]["handle"] == "full1/out2" and "value" not in a[2]
    assert out["dealer"]["outputs"] == []
    for p in ("alice", "bob"):
        s = out[p]["stats"]
        assert s["rounds"] >= 1 and s["bytes_sent"] > 0 and "online_s" in s
    assert out["bob"]["stats"]["dealer_bytes"] > 0
    st = conns["alice"].get("/v1/status").json()
    assert any(r["run_id"] == "full1" and r["state"] == "done" and r["outcome"] == "ok" for r in st["runs"])
    events = [x["event"] for x in daemons["alice"].log_lines() if x.get("run_id") == "full1"]
    assert {"accepted", "started", "done"} <= set(events)


def test_a_failing_run_names_the_node_and_the_daemons_keep_serving(daemons, conns):
    out = wk.run_plan(too_big.plan.to_bytes(), "fail1", {"alice": daemons["alice"], "bob": daemons["bob"]},
                      daemons["dealer"], conns, timeout=20)
    a = out["alice"]
    assert a["state"] == "failed" and a["error"]["kind"] == "data", a["error"]
    assert a["error"]["loc"][0] == HERE and "big" in a["error"]["message"]
    assert out["bob"]["state"] == "failed"
    # and the next run goes through
    out = wk.run_plan(product.plan.to_bytes(), "full2", {"alice": daemons["alice"], "bob": daemons["bob"]},
                      daemons["dealer"], conns, timeout=60)
    assert all(d["state"] == "done" for d in out.values()), out


def test_runs_in_a_row_leak_no_threads_or_ports(daemons, conns):
    import os

    pid = daemons["alice"].proc.pid
    fds = lambda: len(os.listdir(f"/proc/{pid}/fd"))
    threads = lambda: int(next(x for x in open(f"/proc/{pid}/status") if x.startswith("Threads:")).split()[1])
    for i in range(2):  # warm: thread pools, imports
        wk.run_plan(product.plan.to_bytes(), f"warm{i}", {"alice": daemons["alice"], "bob": daemons["bob"]},
                    daemons["dealer"], conns)
    f0, t0 = fds(), threads()
    for i in range(4):
        out = wk.run_plan(product.plan.to_bytes(), f"row{i}", {"alice": daemons["alice"], "bob": daemons["bob"]},
                          daemons["dealer"], conns)
        assert all(d["state"] == "done" for d in out.values())
    time.sleep(0.5)
    assert fds() <= f0 + 2 and threads() <= t0 + 2, (f0, fds(), t0, threads())


# ---- a client: inputs shared in, reveals to it alone ------------------------------------------

@planc.plan(parties=["carol", "bob", "orch"])
def client_query():
    x = planc.load("x", owner="orch", shape=(3,))
    w = planc.load("va", owner="carol", shape=(3,))
    v = planc.load("vb", owner="bob", shape=(3,))
    y = (x * 2.0) * w + v
    return planc.reveal(y, to="orch"), planc.reveal(y.sum(), to="all")


@planc.plan(parties=["alice", "bob", "orch"])
def client_query_at_alice():
    x = planc.load("x", owner="orch", shape=(3,))
    w = planc.load("va", owner="alice", shape=(3,))
    return planc.reveal(x * w, to="orch")


def test_a_client_shares_inputs_in_and_alone_receives_its_reveals(dep, daemons, conns):
    from planc.runtime.clients import ClientRun

    plan = client_query.plan
    x = torch.tensor([0.5, -1.0, 2.0])
    me = ClientRun(plan.graph, "orch", ["orch"], data={"x": x})
    shares = me.shares()
    with as_(dep, daemons, "boss", "carol") as boss:  # carol asks for approval: approve this plan once
        assert boss.post("/v1/approve", json={"plan_hash": plan.sha256(), "limit": 1}).status_code == 200
    out = wk.run_plan(plan.to_bytes(), "cl1", {"carol": daemons["carol"], "bob": daemons["bob"]}, daemons["dealer"],
                      conns, clients={"orch": "orch"}, client_shares={"carol": shares[0], "bob": shares[1]})
    for p, d in out.items():
        assert d["state"] == "done", (p, d["error"])
    assert [o["kind"] for o in out["bob"]["outputs"]] == ["none", "public"]
    kept = [wk.collect_reveals(conns["carol"], "cl1"), wk.collect_reveals(conns["bob"], "cl1")]
    got = me.finish(kept)
    want = planc.run_reference(plan, data={"orch": {"x": x}, "carol": {"va": VA}, "bob": {"vb": VB}})
    assert torch.allclose(got[0], want[0], atol=1e-3) and torch.allclose(got[1], want[1], atol=1e-3)
    err(conns["bob"].get("/v1/runs/cl1/reveals"), 410, "reveals")  # delivered once
    with as_(dep, daemons, "boss", "carol") as boss:
        err(boss.get("/v1/runs/cl1/reveals"), 403, "identity")  # an admin is no client of the run
    # alice's policy reveals only to all and alice: a reveal to the client is refused, with its line
    body = wk.submission(client_query_at_alice.plan.to_bytes(), "cl2", "alice", {"alice": "alice", "bob": "bob"},
                         "dealer", clients={"orch": "orch"})
    e = err(conns["alice"].post("/v1/runs", json=body), 403, "reveal")
    assert "reveal to orch" in e["message"] and e["where"].startswith(HERE)


# ---- configuration errors and shutdown ---------------------------------------------------------

def _serve(cfg, timeout=60):
    return subprocess.run([sys.executable, "-m", "planc.worker", "--config", str(cfg)], capture_output=True,
                          text=True, timeout=timeout)


def test_configuration_errors_are_one_line_exit_2(dep, tmp_path):
    ids, ca = dep["ids"], dep["ca"]
    base = dict(name="alice", cert=ids["alice"]["cert"], key=ids["alice"]["key"], ca=ca)
    cases = [
        (dict(base, aproval="manual"), "aproval: unknown key"),
        (dict(base, approval="sometimes"), "approval: expected \"auto\" or \"manual\""),
        (dict(base, listen="localhost"), "listen: expected \"HOST:PORT\""),
        (dict(base, cert=str(tmp_path / "nope.pem")), "tls.cert: no such file"),
        (dict(base, catalogue=[{"tag": "t", "file": str(dep["dir"] / "am.safetensors")}]),
         "holds 2 tensors"),
        (dict(base, catalogue=[{"tag": "t", "file": str(dep["dir"] / "am.safetensors"), "key": "zz"}]),
         "has no tensor 'zz'"),
        (dict(base, name="bob"), "name: 'bob', but the certificate"),
        (dict(base, policy=str(tmp_path / "bad-policy.toml")), "policy:"),
    ]
    (tmp_path / "bad-policy.toml").write_text("[ops]\nallow = [\"nosuchop\"]\n")
    for i, (keys, text) in enumerate(cases):
        cfg = wk.write_config(tmp_path / f"c{i}.toml", **keys)
        r = _serve(cfg)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2, (keys, r.stderr)
        assert len(lines) == 1 and lines[0].startswith("planc worker: error: ") and text in lines[0], lines
        assert f"c{i}.toml" in lines[0]
    (tmp_path / "broken.toml").write_text("name = \n")
    r = _serve(tmp_path / "broken.toml")
    assert r.returncode == 2 and "not valid TOML" in r.stderr and "Traceback" not in r.stderr


def test_sigterm_shuts_down_cleanly(dep, tmp_path):
    ids = dep["ids"]
    cfg = wk.write_config(tmp_path / "solo.toml", name="carol", **ids["carol"], ca=dep["ca"], clients=["orch"],
                          approval="manual", transport=TRANSPORT,
                          catalogue=[{"tag": "va", "file": str(dep["dir"] / "a.safetensors")}])
    d = wk.Daemon.start(cfg, "carol")
    try:
        with wk.client(d, ids["orch"], dep["ca"]) as c:
            body = wk.submission(uses_va.plan.to_bytes(), "t1", "carol", {"carol": "carol", "bob": "bob"}, "dealer")
            assert c.post("/v1/runs", json=body).json()["state"] == "pending_approval"
    finally:
        rc = d.stop()
    assert rc == 0, d.stderr()
    ev = [x["event"] for x in d.log_lines()]
    assert ev[-1] == "stopped" and "serving" in ev
    assert not d.addr_file.exists()
