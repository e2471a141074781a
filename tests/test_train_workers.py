"""Training through the workers (issue 11, part 6): the feature-aggregation plan — alice's
features, bob's features and labels, each in its own worker's catalogue — shipped with
planc.Cluster, trained privately in one loop, the weights revealed to alice and kept on
her machine; the orchestrator (a client) gets the per-batch losses only."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import planc
import workerkit as wk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import train_feature_aggregation as fa  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")


def test_feature_aggregation_trains_on_workers(tmp_path):
    xa, xb_y = fa.data(rows=256)
    ids = wk.deployment(tmp_path / "certs", ["alice", "bob", "dealer", "orch"])
    save_file({"features": xa.contiguous()}, str(tmp_path / "a.safetensors"))
    save_file({"features_labels": xb_y.contiguous()}, str(tmp_path / "b.safetensors"))
    common = dict(ca=tmp_path / "certs" / "ca.pem", clients=["orch"], transport="tls")
    cfgs = {
        "alice": wk.write_config(tmp_path / "alice.toml", name="alice", **ids["alice"], **common, catalogue=[
            {"tag": "features", "file": str(tmp_path / "a.safetensors")}]),
        "bob": wk.write_config(tmp_path / "bob.toml", name="bob", **ids["bob"], **common, catalogue=[
            {"tag": "features_labels", "file": str(tmp_path / "b.safetensors")}]),
        "dealer": wk.write_config(tmp_path / "dealer.toml", name="dealer", role="dealer", **ids["dealer"], **common),
    }

    def plan_fn(a, b):
        w, bias, losses = fa.train(a, b)
        return w, bias, planc.reveal(losses, to="orch")

    with wk.running(cfgs) as ds, planc.Cluster({n: ds[n].url for n in ("alice", "bob")},
                                               {"dealer": ds["dealer"].url},
                                               {**ids["orch"], "ca": common["ca"]}) as c:
        plan = planc.trace(plan_fn, c.load("features"), c.load("features_labels"),
                           parties=["alice", "bob", "orch"], name="train_fa")
        assert sum(n.op == "loop" for n in plan.graph.nodes) == 1
        res = c.run(plan, timeout=120)
    w_t, b_t, losses_t = fa.torch_train(xa, xb_y)
    assert res.outputs[0] is None and res.outputs[1] is None  # the weights are alice's, not the orchestrator's
    assert torch.allclose(res.outputs[2].to(losses_t.dtype), losses_t, atol=5e-3), (res.outputs[2], losses_t)
    (w_file,) = [o["path"] for o in res.kept["alice"] if o["index"] == 0]
    w = next(iter(load_file(w_file).values()))
    assert torch.allclose(w.to(w_t.dtype), w_t, atol=2e-2), (w, w_t)
    assert res.stats["alice"]["rounds"] > 0 and res.stats["dealer"]["dealer_bytes"] > 0


def test_chunked_material_through_the_workers(tmp_path, monkeypatch):
    """A plan whose dealer material spans several chunks (PLANC_CHUNK_BYTES tiny in the
    daemons' environment): the dealer daemon cannot prepare it ahead (one chunk at most),
    makes and sends it in chunks as the last party pulls them; the result is the reference's."""
    from test_chunks import CHUNK, _data, looped

    monkeypatch.setenv("PLANC_CHUNK_BYTES", str(CHUNK))  # the daemons inherit it
    data = _data()
    ids = wk.deployment(tmp_path / "certs", ["alice", "bob", "dealer", "orch"])
    save_file({"w": data["alice"]["w"]}, str(tmp_path / "a.safetensors"))
    save_file({"x": data["bob"]["x"]}, str(tmp_path / "b.safetensors"))
    common = dict(ca=tmp_path / "certs" / "ca.pem", clients=["orch"], transport="tls")
    cfgs = {
        "alice": wk.write_config(tmp_path / "alice.toml", name="alice", **ids["alice"], **common,
                                 catalogue=[{"tag": "w", "file": str(tmp_path / "a.safetensors")}]),
        "bob": wk.write_config(tmp_path / "bob.toml", name="bob", **ids["bob"], **common,
                               catalogue=[{"tag": "x", "file": str(tmp_path / "b.safetensors")}]),
        "dealer": wk.write_config(tmp_path / "dealer.toml", name="dealer", role="dealer", **ids["dealer"], **common),
    }

    @planc.plan(parties=["alice", "bob", "orch"])
    def looped_to_orch():
        x = planc.share(planc.load("x", owner="bob", shape=(40,)))
        w = planc.share(planc.load("w", owner="alice", shape=(40,)))
        y = planc.fori_loop(8, lambda i, c: c * w * 0.5 + x, x)
        return planc.reveal(torch.relu(y), to="orch")

    with wk.running(cfgs) as ds, planc.Cluster({n: ds[n].url for n in ("alice", "bob")},
                                               {"dealer": ds["dealer"].url},
                                               {**ids["orch"], "ca": common["ca"]}) as c:
        res = c.run(looped_to_orch.plan, timeout=120)
    (want,) = planc.run_reference(looped.plan, data=data)
    assert torch.allclose(res.outputs[0], want, atol=2e-3), (res.outputs[0] - want).abs().max()
    assert res.stats["dealer"]["chunks"] >= 4 and res.stats["bob"]["chunks"] == res.stats["dealer"]["chunks"], \
        (res.stats["dealer"], res.stats["bob"])
