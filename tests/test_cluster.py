"""planc.Cluster and its command line against real daemons (subprocesses on 127.0.0.1,
TLS everywhere): search and shells from catalogues, a client's inputs in and reveals out
matching the plaintext reference, refusals naming worker, rule and line, manual approval
by `planc worker approve`, two runs at once, a worker killed mid-run (everyone stops with
its name, the next run succeeds), and `planc search` / `planc cluster status` /
`planc run --cluster`.
"""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import planc
import workerkit as wk
from planc import ClusterError

NAMES = ["alice", "bob", "dealer", "carol", "orch", "boss"]
pytestmark = pytest.mark.filterwarnings("ignore:output .* is revealed to nobody")

torch.manual_seed(1)
VA = torch.randn(4)
VB = torch.randn(4)


@pytest.fixture(scope="module")
def dep(tmp_path_factory):
    d = tmp_path_factory.mktemp("cluster")
    ids = wk.deployment(d / "certs", NAMES)
    save_file({"va": VA}, str(d / "a.safetensors"))
    np.save(d / "b.npy", VB.numpy())
    (d / "bob-policy.toml").write_text('name = "bob-policy"\n[ops]\ndeny = ["exp"]\n'
                                       '[reveal]\nto = ["all", "orch", "bob"]\n')
    return {"dir": d, "ids": ids, "ca": d / "certs" / "ca.pem"}


def _configs(dep):
    d, ids, ca = dep["dir"], dep["ids"], dep["ca"]
    common = dict(ca=ca, clients=["orch"], transport="tls")
    return {
        "alice": wk.write_config(d / "alice.toml", name="alice", **ids["alice"], **common, catalogue=[
            {"tag": "va", "file": str(d / "a.safetensors"), "description": "alice's vector"}]),
        "bob": wk.write_config(d / "bob.toml", name="bob", **ids["bob"], **common,
                               policy=str(d / "bob-policy.toml"), catalogue=[
                                   {"tag": "vb", "file": str(d / "b.npy"), "description": "bob's vector (npy)",
                                    "meta": {"site": "ward 3"}}]),
        "dealer": wk.write_config(d / "dealer.toml", name="dealer", role="dealer", **ids["dealer"], **common),
        "carol": wk.write_config(d / "carol.toml", name="carol", **ids["carol"], **common, approval="manual",
                                 admins=["boss"], catalogue=[{"tag": "va", "file": str(d / "a.safetensors")}]),
    }


@pytest.fixture(scope="module")
def daemons(dep):
    with wk.running(_configs(dep)) as ds:
        yield ds


def _cluster_toml(dep, daemons, who="orch"):
    d, ids = dep["dir"], dep["ids"]
    path = d / f"cluster-{who}.toml"
    path.write_text(f'timeout = 60\n[identity]\ncert = "{ids[who]["cert"]}"\nkey = "{ids[who]["key"]}"\n'
                    f'ca = "{dep["ca"]}"\n[workers]\n'
                    + "".join(f'{n} = "{daemons[n].url}"\n' for n in ("alice", "bob", "carol"))
                    + f'[dealer]\ndealer = "{daemons["dealer"].url}"\n')
    return path


@pytest.fixture()
def cluster(dep, daemons):
    with planc.Cluster.from_config(_cluster_toml(dep, daemons)) as c:
        yield c


def _planc(*args, cwd=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "planc.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


# ---- catalogues ---------------------------------------------------------------------------------

def test_search_and_shells_from_catalogues(cluster):
    found = cluster.search("vector")
    assert sorted((e.worker, e.tag) for e in found) == [("alice", "va"), ("bob", "vb")]
    (b,) = cluster.search("ward 3")  # metadata is searched too
    assert (b.worker, b.tag, b.dtype, tuple(b.shape)) == ("bob", "vb", "f32", (4,))
    assert {e.worker for e in cluster.catalogue()} == {"alice", "bob", "carol"}
    assert all(not hasattr(e, "value") for e in found)

    x = cluster.load("vb")
    y = cluster.load("va", worker="alice")  # va is at alice and at carol: say which

    def f(x, y):
        return planc.reveal(planc.share(x) * planc.share(y), to="orch")

    plan = planc.trace(f, x, y, parties=["alice", "bob", "orch"])
    loads = {n.attr("tag"): n for n in plan.graph.nodes if n.op == "load"}
    assert set(loads) == {"va", "vb"} and loads["vb"].results[0].type.shape == (4,)
    with pytest.raises(ClusterError, match="va"):
        cluster.load("va")  # two workers hold it
    with pytest.raises(ClusterError, match="nope"):
        cluster.load("nope")


# ---- runs -----------------------------------------------------------------------------------------

@planc.plan(parties=["alice", "bob", "orch"])
def query():
    q = planc.load("q", owner="orch", shape=(4,))
    a = planc.load("va", owner="alice", shape=(4,))
    b = planc.load("vb", owner="bob", shape=(4,))
    y = planc.share(a) * q + planc.share(b)
    return planc.reveal(y, to="orch"), planc.reveal(y.sum(), to="all"), planc.reveal(y * 2.0, to="bob")


def test_a_client_run_matches_the_reference_and_gets_only_its_reveals(cluster, daemons):
    q = torch.tensor([0.5, -1.0, 2.0, 0.25])
    res = cluster.run(query.plan, data={"q": q}, timeout=60)
    want = planc.run_reference(query.plan, data={"orch": {"q": q}, "alice": {"va": VA}, "bob": {"vb": VB}})
    assert torch.allclose(res.outputs[0], want[0], atol=1e-3)
    assert torch.allclose(res.outputs[1], want[1], atol=1e-3)
    assert res.outputs[2] is None  # revealed to bob: it stays on bob's machine
    (own,) = [o for o in res.kept["bob"] if o["kind"] == "own"]
    from safetensors.torch import load_file
    assert torch.allclose(next(iter(load_file(own["path"]).values())), want[2], atol=1e-3)
    assert res.plan_hash == query.plan.sha256() and res.parties == {"alice": "alice", "bob": "bob",
                                                                     "dealer": "dealer"}
    for p in ("alice", "bob"):
        assert res.stats[p]["rounds"] >= 1 and res.stats[p]["bytes_sent"] > 0
    assert res.stats["dealer"]["dealer_bytes"] > 0
    assert "all accepted" in res.summary(echo=False)
    for d in ("alice", "bob", "dealer"):  # the run's id, hash and outcome are in every daemon's log
        lines = [x for x in daemons[d].log_lines() if x.get("run_id") == res.run_id]
        assert any(x.get("plan_hash") == res.plan_hash for x in lines), d
        assert any(x["event"] == "done" for x in lines), d


@planc.plan(parties=["alice", "bob", "orch"])
def breaks_bob():
    a = planc.load("va", owner="alice", shape=(4,))
    b = planc.load("vb", owner="bob", shape=(4,))
    return planc.reveal(torch.exp(planc.share(b)) + a, to="orch")  # EXP_LINE


def test_a_refusal_names_worker_rule_and_line_and_nothing_starts(cluster, daemons):
    line = next(i + 1 for i, s in enumerate(open(__file__).read().splitlines()) if s.endswith("# EXP_LINE"))
    with pytest.raises(ClusterError) as e:
        cluster.run(breaks_bob.plan, timeout=30)
    err = e.value
    assert err.worker == "bob" and err.rule == "ops" and err.code == 403, (err.worker, err.rule, err.code)
    assert f"test_cluster.py:{line}" in str(err) and "exp" in str(err)
    rid = next(x["run_id"] for x in reversed(daemons["bob"].log_lines()) if x["event"] == "refused")
    # alice and the dealer had accepted: their copies were cancelled, never started
    for d in ("alice", "dealer"):
        events = [x["event"] for x in daemons[d].log_lines() if x.get("run_id") == rid]
        assert "started" not in events and "cancelled" in events, (d, events)


def test_a_plan_for_a_missing_tag_is_refused(cluster):
    @planc.plan(parties=["alice", "bob", "orch"])
    def lacks():
        a = planc.load("vz", owner="alice", shape=(4,))
        return planc.reveal(a + 1.0, to="orch")

    with pytest.raises(ClusterError) as e:
        cluster.run(lacks.plan, timeout=30)
    assert e.value.worker == "alice" and "vz" in str(e.value)


@planc.plan(parties=["carol", "bob", "orch"])
def at_carol():
    a = planc.load("va", owner="carol", shape=(4,))
    b = planc.load("vb", owner="bob", shape=(4,))
    return planc.reveal(planc.share(a) - planc.share(b), to="orch")


def test_manual_approval_with_planc_worker_approve(cluster, daemons):
    cfg = daemons["carol"].config
    out, errs = {}, []

    def go():
        try:
            out["res"] = cluster.run(at_carol.plan, run_id="approve-me", timeout=60)
        except BaseException as e:  # noqa: BLE001
            errs.append(e)

    t = threading.Thread(target=go)
    t.start()
    end = time.monotonic() + 30
    while True:  # the run waits at carol
        p = _planc("worker", "pending", "--config", cfg)
        if "approve-me" in p.stdout or time.monotonic() > end:
            break
        time.sleep(0.2)
    assert "approve-me" in p.stdout, (p.stdout, p.stderr)
    a = _planc("worker", "approve", "approve-me", "--config", cfg)
    assert a.returncode == 0, a.stderr
    t.join(60)
    assert not errs, errs
    want = planc.run_reference(at_carol.plan, data={"carol": {"va": VA}, "bob": {"vb": VB}})
    assert torch.allclose(out["res"].outputs[0], want[0], atol=1e-3)
    events = [x["event"] for x in daemons["carol"].log_lines() if x.get("run_id") == "approve-me"]
    assert "pending" in events and "approved" in events and "done" in events


def test_two_runs_at_once_are_isolated_and_both_succeed(cluster):
    qs = [torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([-1.0, 0.5, 0.0, 8.0])]
    got, errs = {}, []

    def go(i):
        try:
            got[i] = cluster.run(query.plan, data={"q": qs[i]}, timeout=60)
        except BaseException as e:  # noqa: BLE001
            errs.append(e)

    ts = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not errs, errs
    assert got[0].run_id != got[1].run_id
    for i in range(2):
        want = planc.run_reference(query.plan, data={"orch": {"q": qs[i]}, "alice": {"va": VA}, "bob": {"vb": VB}})
        assert torch.allclose(got[i].outputs[0], want[0], atol=1e-3)


# ---- the command line -----------------------------------------------------------------------------

def test_planc_search_status_and_run_on_a_cluster(dep, daemons, tmp_path):
    toml = _cluster_toml(dep, daemons)
    s = _planc("search", "vector", "--cluster", toml)
    assert s.returncode == 0, s.stderr
    assert "alice" in s.stdout and "va" in s.stdout and "bob's vector" in s.stdout
    st = _planc("cluster", "status", "--cluster", toml)
    assert st.returncode == 0, st.stderr
    for n in ("alice", "bob", "carol", "dealer"):
        assert n in st.stdout
    plan = tmp_path / "q.plan"
    query.plan.save(plan)
    np.save(tmp_path / "q.npy", np.array([1.0, 1.0, 1.0, 1.0], dtype=np.float32))
    r = _planc("run", plan, "--cluster", toml, "--data", f"q={tmp_path / 'q.npy'}")
    assert r.returncode == 0, r.stdout + r.stderr
    want = planc.run_reference(query.plan, data={"orch": {"q": torch.ones(4)}, "alice": {"va": VA},
                                                 "bob": {"vb": VB}})
    assert f"{want[1].item():.2f}"[:4] in r.stdout
    assert "not revealed to orch" in r.stdout  # output 2 goes to bob
    bad = _planc("run", plan, "--cluster", toml)  # q missing: a clear error, no traceback
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "q" in bad.stderr, bad.stderr


# ---- faults (last: they restart a daemon) ---------------------------------------------------------

@planc.plan(parties=["alice", "bob", "orch"])
def long_run():
    a = planc.load("va", owner="alice", shape=(4,))
    b = planc.load("vb", owner="bob", shape=(4,))
    w = planc.share(b)
    out = planc.fori_loop(300, lambda i, c: torch.sigmoid(c * w), planc.share(a))
    return planc.reveal(out, to="orch")


def test_a_worker_killed_mid_run_is_named_and_the_next_run_succeeds(dep, daemons, cluster):
    out, errs = {}, []

    def go():
        t0 = time.monotonic()
        try:
            out["res"] = cluster.run(long_run.plan, run_id="victim", timeout=20)
        except BaseException as e:  # noqa: BLE001
            errs.append((e, time.monotonic() - t0))

    t = threading.Thread(target=go)
    t.start()
    bob = daemons["bob"]
    end = time.monotonic() + 30
    while time.monotonic() < end:  # kill bob once the run is computing there
        if any(x.get("run_id") == "victim" and x["event"] == "started" for x in bob.log_lines()):
            break
        time.sleep(0.02)
    time.sleep(0.3)
    bob.proc.kill()
    bob.proc.wait(10)
    t.join(60)
    assert not t.is_alive() and not out, out
    (e, took), = errs
    assert isinstance(e, ClusterError) and "bob" in str(e), e
    assert took < 20 + 15, took
    # alice and the dealer are not wedged: their copy of the run ended, naming bob
    with planc.Cluster.from_config(_cluster_toml(dep, daemons)) as c:
        st = c.status()
        for d in ("alice", "dealer"):
            (run,) = [r for r in st[d]["runs"] if r["run_id"] == "victim"]
            assert run["state"] in ("failed", "cancelled"), run
    bob.launch()
    bob.wait_ready()
    with planc.Cluster.from_config(_cluster_toml(dep, daemons)) as c:
        q = torch.tensor([1.0, 0.0, -1.0, 2.0])
        res = c.run(query.plan, data={"q": q}, timeout=60)
        want = planc.run_reference(query.plan, data={"orch": {"q": q}, "alice": {"va": VA}, "bob": {"vb": VB}})
        assert torch.allclose(res.outputs[0], want[0], atol=1e-3)
