"""Serving a secret-shared model (planc/serving.py, planc/worker/serving*.py) against real
daemons (subprocesses on 127.0.0.1, TLS everywhere): alice shares the seed CNN across
bob, carol and dave; answers match PyTorch; concurrent queries are batched; the request
limit holds under concurrency; a query of the wrong shape or dtype is refused before any
party computes; stop releases the mesh and the shares; a worker killed while serving ends
the service and every waiting client hears of it, by name.
"""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch
from safetensors.torch import save_file

import planc
import workerkit as wk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
from mnist_cnn import SeedCNN, set_weights, trained_weights  # noqa: E402

NAMES = ["alice", "bob", "carol", "dave", "dealer", "orch"]
SERVERS = ["bob", "carol", "dave"]
BOUND = 0.02  # |logits - PyTorch|: fixed point with 16 fractional bits through 4 layers (observed ~5e-4)


@pytest.fixture(scope="module")
def dep(tmp_path_factory):
    d = tmp_path_factory.mktemp("serving")
    ids = wk.deployment(d / "certs", NAMES)
    weights = trained_weights()
    save_file(weights, str(d / "cnn.safetensors"))
    ca = d / "certs" / "ca.pem"
    common = dict(ca=ca, clients=["orch"], transport="tls")
    cfgs = {"alice": wk.write_config(d / "alice.toml", name="alice", **ids["alice"], **common,
                                     serving={"share_with": SERVERS},
                                     catalogue=[{"tag": t, "file": str(d / "cnn.safetensors"), "key": t}
                                                for t in weights]),
            "dealer": wk.write_config(d / "dealer.toml", name="dealer", role="dealer", **ids["dealer"], **common)}
    for w in SERVERS:
        cfgs[w] = wk.write_config(d / f"{w}.toml", name=w, **ids[w], **common,
                                  serving={"owners": ["alice"], "max_requests": 500, "max_batch": 8})
    with wk.running(cfgs) as ds, planc.Cluster({n: ds[n].url for n in ["alice", *SERVERS]},
                                               {"dealer": ds["dealer"].url},
                                               {"cert": ids["orch"]["cert"], "key": ids["orch"]["key"],
                                                "ca": str(ca)}, timeout=30) as cluster:
        yield {"dir": d, "ids": ids, "ca": ca, "daemons": ds, "cluster": cluster, "weights": weights}


def _serve(dep, **kw):
    c = dep["cluster"]
    h = c.share_model("cnn", owner="alice", workers=SERVERS)
    kw.setdefault("max_batch", 8)
    return h, c.serve(h, model=SeedCNN().eval(), input_shape=(1, 28, 28), **kw)


def _images(n):
    return planc.datasets.mnist(split="eval")[0][:n]


def test_serving_config_is_checked(tmp_path):
    from planc.worker.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match=r"serving.max_request: unknown key; \[serving\] takes owners"):
        from_dict({"name": "w", "serving": {"max_request": 3}}, "w.toml", tmp_path)
    with pytest.raises(ConfigError, match="serving.max_batch: expected a whole number from 1 to 64"):
        from_dict({"name": "w", "serving": {"max_batch": 0}}, "w.toml", tmp_path)
    cfg = from_dict({"name": "w", "serving": {"owners": ["alice"], "max_requests": 3}}, "w.toml", tmp_path)
    assert cfg.serving.owners == ("alice",) and cfg.serving.max_requests == 3


def test_share_only_where_allowed(dep):
    c = dep["cluster"]
    with pytest.raises(planc.ClusterError, match=r"alice refused \(share_with\).*not with 'mallory'"):
        c._call("alice", "POST", "/v1/models/cnn/share", json={"workers": {"bob": c.urls["bob"],
                                                                           "mallory": c.urls["carol"]}})
    with pytest.raises(planc.ServingError, match="dealer: not a worker of this cluster|worker dealer"):
        c.share_model("cnn", owner="alice", workers=["bob", "dealer"])
    with pytest.raises(planc.ClusterError, match=r"refused \(catalogue\).*no weights of model 'rnn'"):
        c.share_model("rnn", owner="alice", workers=SERVERS)


def test_queries_match_pytorch_and_stop_releases(dep):
    h, svc = _serve(dep, max_requests=50)
    ref = set_weights(SeedCNN(), dep["weights"])
    client = planc.Client(dep["cluster"])
    xs = _images(3)
    for x in xs:
        t = time.perf_counter()
        got = client.query("cnn", x)
        assert time.perf_counter() - t < 5
        with torch.no_grad():
            want = ref(x.unsqueeze(0))
        assert got.shape == (1, 10)
        assert (got - want).abs().max().item() < BOUND
        assert int(got.argmax()) == int(want.argmax())
    # the wrong shape or dtype: refused by the client before anything is sent ...
    with pytest.raises(planc.ServingError, match=r"shape \[2, 28, 28\]; the service takes one sample of shape "
                                                 r"\[1, 28, 28\]"):
        client.query("cnn", torch.zeros(2, 28, 28))
    with pytest.raises(planc.ServingError, match="dtype float64; the service takes float32"):
        client.query("cnn", torch.zeros(1, 28, 28, dtype=torch.float64))
    # ... and by every worker, before any party computes, for a client that sends one anyway
    from planc.worker.wire import message

    ds, ids = dep["daemons"], dep["ids"]
    with wk.client(ds["carol"], ids["orch"], dep["ca"]) as raw:
        r = raw.post(f"/v1/services/{svc.service_id}/query",
                     content=message({"qid": "bad-shape"}, {"x": torch.zeros(1, 1, 27, 28, dtype=torch.int64)}))
    assert r.status_code == 400 and r.json()["error"]["rule"] == "shape"
    assert "int64 of shape [1, 1, 28, 28]" in r.json()["error"]["message"]
    assert svc.info()["served"] == 3 and svc.info("carol")["served"] == 3
    # the orchestrator never held a share: its handle carries shapes only
    assert set(h.tags) == set(dep["weights"]) and all(set(v) == {"dtype", "shape"} for v in h.tags.values())
    views = svc.stop()
    assert all(views[w]["state"] == "stopped" for w in [*SERVERS, "dealer"]), views
    assert all(views[w]["released"] is True for w in SERVERS), views
    for w in SERVERS:
        with wk.client(ds[w], ids["orch"], dep["ca"]) as raw:
            listing = raw.get("/v1/serving").json()
        assert not [s for s in listing["states"] if s["handle"] == h.handle]
    with pytest.raises(planc.ServingError, match=r"stopped|no worker serves"):
        planc.Client(dep["cluster"]).query("cnn", xs[0])
    client.close()


def test_concurrent_clients_batched_and_limit_holds(dep):
    limit, k = 6, 10
    h, svc = _serve(dep, max_requests=limit, window_ms=20)
    assert svc.limit == limit
    xs = _images(k)
    ok, refused, batches = [], [], []
    go = threading.Barrier(k)
    clients = [planc.Client(dep["cluster"]) for _ in range(k)]
    for c in clients:
        c.service("cnn")  # looked up before the burst

    def one(i):
        go.wait()
        try:
            y = clients[i].query("cnn", xs[i])
            ok.append((i, y))
            batches.append(clients[i].last["batch"])
        except planc.ServingError as e:
            refused.append(e)

    ts = [threading.Thread(target=one, args=(i,)) for i in range(k)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert len(ok) == limit and len(refused) == k - limit, (ok, refused)
    assert all("limit of 6 requests" in str(e) for e in refused), refused
    assert max(batches) > 1, batches  # queries that came together shared one run
    ref = set_weights(SeedCNN(), dep["weights"])
    for i, y in ok:
        with torch.no_grad():
            assert (y - ref(xs[i:i + 1])).abs().max().item() < BOUND
    info = svc.info()
    assert info["state"] == "done" and info["served"] == limit
    assert any(int(b) > 1 for b in info["batch_sizes"])
    for c in clients:
        c.close()
    svc.stop()


def test_worker_killed_while_serving(dep):
    h, svc = _serve(dep, max_requests=400)
    client = planc.Client(dep["cluster"], timeout=20)
    x = _images(1)[0]
    client.query("cnn", x)
    errors = []

    def loop():
        end = time.monotonic() + 40
        while time.monotonic() < end:
            try:
                client.query("cnn", x)
            except planc.ServingError as e:
                errors.append(e)
                return

    t = threading.Thread(target=loop)
    t.start()
    time.sleep(0.3)
    dep["daemons"]["dave"].proc.kill()
    t0 = time.monotonic()
    t.join(45)
    assert not t.is_alive() and errors, "the waiting client was never told"
    assert time.monotonic() - t0 < 30
    assert "dave" in str(errors[0]), errors[0]
    for w in ("bob", "carol", "dealer"):
        v = svc.info(w)
        end = time.monotonic() + 20
        while v["state"] == "serving" and time.monotonic() < end:
            time.sleep(0.1)
            v = svc.info(w)
        assert v["state"] == "failed" and "dave" in v["error"], (w, v)
    with pytest.raises(planc.ServingError, match="dave"):
        planc.Client(dep["cluster"]).query("cnn", x)
    out = svc.stop()  # dave is gone: reported, not raised
    assert isinstance(out["dave"], planc.ClusterError)
    client.close()
