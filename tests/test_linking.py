"""Models the orchestrator never sees, linked at the workers (planc/worker/linking.py):
alice's worker holds an ONNX model, the orchestrator's plan only calls it
(`planc.load_model`), alice links it at submission and sends the architecture to bob and
the dealer over the run's mesh; each checks it against its own policy. Real daemons on
127.0.0.1; run_local(models=...) links the same plan locally."""
from __future__ import annotations

import io
import warnings

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

import planc
import workerkit as wk
from planc import ClusterError

NAMES = ["alice", "bob", "dealer", "orch"]
pytestmark = pytest.mark.filterwarnings("ignore")

torch.manual_seed(3)
RELU = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
GELU = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 3)).eval()
X = torch.randn(2, 4)


def _onnx(m) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (torch.randn(2, 4),), buf, dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return buf.getvalue()


@pytest.fixture(scope="module")
def dep(tmp_path_factory):
    d = tmp_path_factory.mktemp("linking")
    ids = wk.deployment(d / "certs", NAMES)
    (d / "relu.onnx").write_bytes(_onnx(RELU))
    (d / "gelu.onnx").write_bytes(_onnx(GELU))
    save_file({"x": X}, str(d / "x.safetensors"))
    (d / "bob-policy.toml").write_text('name = "no-gelu"\n[ops]\ndeny = ["gelu"]\n')
    common = dict(ca=d / "certs" / "ca.pem", clients=["orch"], transport="tls")
    cfgs = {
        "alice": wk.write_config(d / "alice.toml", name="alice", **ids["alice"], **common, uploads=["orch"],
                                 models_dir=str(d / "alice-models"), catalogue=[
            {"tag": "mlp", "file": str(d / "relu.onnx"), "description": "an MLP nobody else has seen"},
            {"tag": "mlpg", "file": str(d / "gelu.onnx"), "description": "the same with GELU"}]),
        "bob": wk.write_config(d / "bob.toml", name="bob", **ids["bob"], **common, policy=str(d / "bob-policy.toml"),
                               catalogue=[{"tag": "x", "file": str(d / "x.safetensors")}]),
        "dealer": wk.write_config(d / "dealer.toml", name="dealer", role="dealer", **ids["dealer"], **common),
    }
    with wk.running(cfgs) as ds, planc.Cluster({n: ds[n].url for n in ("alice", "bob")},
                                               dealer={"dealer": ds["dealer"].url},
                                               identity={**ids["orch"], "ca": d / "certs" / "ca.pem"}) as c:
        yield {"dir": d, "daemons": ds, "cluster": c}


def _plan(tag):
    def f(x):
        m = planc.load_model(tag, owner="alice", output=(2, 3), input=(2, 4))
        return planc.reveal(m(planc.share(x)), to="orch")

    return planc.trace(f, planc.load("x", owner="bob", shape=(2, 4)), parties=["alice", "bob", "orch"],
                       name=f"call_{tag}")


def test_a_model_linked_at_its_owner_runs_and_the_orchestrator_sees_only_the_call(dep):
    c, ds = dep["cluster"], dep["daemons"]
    (entry,) = c.search("nobody else")
    assert entry.meta == {} and entry.dtype == "model"
    plan = _plan("mlp")
    assert [n.op for n in plan.graph.nodes if n.op not in ("load", "share", "reveal", "return")] == ["call"]
    res = c.run(plan, timeout=60)
    with torch.no_grad():
        want = RELU(X)
    assert torch.allclose(res.outputs[0], want, atol=2e-3), (res.outputs[0], want)
    hashes = set()
    for d in ("alice", "bob", "dealer"):
        info = c.run_info(res.run_id, d)
        assert info["state"] == "done" and info["linked_hash"], info
        hashes.add(info["linked_hash"])
        (ev,) = [e for e in ds[d].log_lines() if e["event"] == "linked" and e["run_id"] == res.run_id]
        assert ev["linked_hash"] == info["linked_hash"] and ev["plan_hash"] == res.plan_hash
    assert len(hashes) == 1 and res.plan_hash not in hashes  # everyone ran the same linked plan, not the call


def test_a_model_breaking_a_partys_policy_is_refused_naming_the_onnx_node(dep):
    c = dep["cluster"]
    with pytest.raises(ClusterError) as e:
        c.run(_plan("mlpg"), timeout=60)
    err = e.value
    assert err.worker == "bob" and err.rule == "ops", (err.worker, err.rule, str(err))
    assert "gelu" in str(err) and "gelu.onnx" in str(err), str(err)


def test_a_missing_model_or_mismatched_declaration_is_refused_at_submission(dep):
    c = dep["cluster"]
    with pytest.raises(ClusterError) as e:
        c.run(_plan("nope"), timeout=30)
    assert e.value.worker == "alice" and e.value.rule == "catalogue" and "nope" in str(e.value)

    def wrong(x):
        m = planc.load_model("mlp", owner="alice", output=(2, 5), input=(2, 4))
        return planc.reveal(m(planc.share(x)), to="orch")

    plan = planc.trace(wrong, planc.load("x", owner="bob", shape=(2, 4)), parties=["alice", "bob", "orch"])
    with pytest.raises(ClusterError) as e:
        c.run(plan, timeout=30)
    assert e.value.worker == "alice" and e.value.rule == "model" and "declares" in str(e.value), str(e.value)


def test_a_plan_cannot_load_a_models_weights_directly(dep):
    c = dep["cluster"]

    def steal():
        w = planc.load("mlp/0.weight", owner="alice", shape=(8, 4))
        return planc.reveal(w, to="orch")

    plan = planc.trace(steal, parties=["alice", "bob", "orch"])
    with pytest.raises(ClusterError) as e:
        c.run(plan, timeout=30)
    assert e.value.worker == "alice" and e.value.rule == "catalogue"


def test_run_local_links_the_same_plan(dep):
    plan = _plan("mlp")
    res = planc.run_local(plan, {"bob": {"x": X}}, models={"alice": {"mlp": dep["dir"] / "relu.onnx"}},
                          clients=["orch"])
    with torch.no_grad():
        assert torch.allclose(res.outputs["orch"][0], RELU(X), atol=2e-3)


def test_upload_model_then_call_it(dep):
    c = dep["cluster"]
    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    e = c.upload_model("uploaded", net, to="alice", sample=torch.randn(1, 4), description="sent as ONNX")
    assert e["kind"] == "model" and e["inputs"][0]["shape"] == ["?", 4] and e["meta"]["uploaded_by"] == "orch"
    assert (dep["dir"] / "alice-models" / f"uploaded-{e['meta']['sha256'][:12]}.onnx").stat().st_mode & 0o777 == 0o600
    res = c.run(_plan("uploaded"), timeout=60)
    with torch.no_grad():
        assert torch.allclose(res.outputs[0], net(X), atol=2e-3)
    with pytest.raises(ClusterError) as err:  # the tag is taken now
        c.upload_model("uploaded", net, to="alice", sample=torch.randn(1, 4))
    assert err.value.code == 409
    with pytest.raises(ClusterError) as err:  # bob's configuration allows no uploads
        c.upload_model("other", net, to="bob", sample=torch.randn(1, 4))
    assert err.value.code == 403 and err.value.rule == "uploads"
    with pytest.raises(ClusterError) as err:  # not a model
        c.upload_model("junk", b"not onnx at all", to="alice")
    assert err.value.code == 400 and err.value.rule == "model"
    assert any(x["event"] == "model_uploaded" and x["tag"] == "uploaded" for x in dep["daemons"]["alice"].log_lines())
