"""A model the orchestrator never sees: alice's worker holds the seed CNN as ONNX, the
orchestrator's plan only *calls* it, and alice links it where it is.

    python examples/workers/linked.py [--work out/workers-linked]

Starts alice (the CNN as cnn.onnx in her catalogue; she also accepts uploads from the
orchestrator), bob (the MNIST images; his policy, demo.py's, also allows the `call` op: he
accepts plans that call a model he has not seen, and checks what it links to) and the
dealer, as demo.py does. Then, as the
orchestrator:

1. the catalogue shows alice's model by its inputs and outputs only;
2. the plan: ``planc.load_model("cnn", owner="alice", ...)`` on bob's images — its IR has
   one `call` node where the network would be;
3. the run: alice links the call at submission (the ONNX converted, its types checked,
   the linked plan admitted under her policy), sends the architecture to bob and the
   dealer over the run's TLS mesh, each checks it against its own policy; the logits
   come back to the orchestrator and match PyTorch;
4. a model uploaded by the orchestrator (``cluster.upload_model``) with an op bob's
   policy forbids: bob refuses the linked plan, naming the ONNX node.
"""
from __future__ import annotations

import argparse
import io
import warnings
from pathlib import Path

import torch
import torch.nn as nn

import demo
import planc


def export(model, sample) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (sample,), buf, dynamo=False, opset_version=17, input_names=["images"],
                          output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    return buf.getvalue()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="out/workers-linked")
    a = ap.parse_args(argv)
    work = Path(a.work).resolve()
    weights, x, labels = demo.prepare(work, 64)
    demo.set_weights(demo.model, weights)
    (work / "alice" / "cnn.onnx").write_bytes(export(demo.model.eval(), x[:1]))  # alice's file, nobody else's
    cfg = (work / "alice.toml").read_text()
    cfg = cfg.replace('clients = ["orchestrator", "bob"]', 'clients = ["orchestrator", "bob"]\nuploads = ["orchestrator"]')
    cfg += '\n[[catalogue]]\ntag = "cnn"\nfile = "alice/cnn.onnx"\ndescription = "a CNN for MNIST (ONNX)"\n'
    (work / "alice.toml").write_text(cfg)
    # bob accepts plans that call a model he has not seen (the `call` op): he checks what it links to
    pol = (work / "bob.policy.toml").read_text().replace('allow = ["conv2d"', 'allow = ["call", "conv2d"')
    (work / "bob.policy.toml").write_text(pol)
    procs, addrs = {}, {}
    try:
        for n in ("alice", "bob", "dealer"):
            procs[n], addrs[n] = demo.start(work, n)
        cluster = planc.Cluster.from_config(demo.write_cluster(work, addrs))
        (m,) = [e for e in cluster.catalogue() if e.kind == "model"]
        print(f"alice's catalogue: model {m.tag!r}: inputs {list(m.inputs)}, outputs {list(m.outputs)}")

        images = cluster.load("mnist/test")

        def infer(xs):
            cnn = planc.load_model("cnn", owner="alice", output=(64, 10), input=(64, 1, 28, 28))
            return planc.reveal(cnn(planc.share(xs)), to="orchestrator")

        plan = planc.trace(infer, images, parties=["alice", "bob", "orchestrator"], name="linked_cnn")
        print("\nthe orchestrator's plan (no architecture, no weights):")
        print(plan)
        res = cluster.run(plan, progress=True)
        with torch.no_grad():
            want = demo.model(x)
        agree = (res.outputs[0].argmax(1) == want.argmax(1)).float().mean().item()
        info = cluster.run_info(res.run_id, "bob")
        print(f"logits at the orchestrator: argmax agreement with PyTorch {agree:.2%}, accuracy "
              f"{(res.outputs[0].argmax(1) == labels).float().mean().item():.1%}, max error "
              f"{(res.outputs[0] - want).abs().max().item():.2e}")
        print(f"plan {res.plan_hash[:16]} (the call), linked plan {info['linked_hash'][:16]} (what every party ran)")
        res.summary()

        torch.manual_seed(0)
        odd = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.Sigmoid()).eval()
        e = cluster.upload_model("odd", odd, to="alice", sample=x[:1], description="uploaded by the orchestrator")
        print(f"\nuploaded to alice: {e['tag']!r} (sha256 {e['meta']['sha256'][:16]})")

        def infer_odd(xs):
            m = planc.load_model("odd", owner="alice", output=(64, 10), input=(64, 1, 28, 28))
            return planc.reveal(m(planc.share(xs)), to="orchestrator")

        try:
            cluster.run(planc.trace(infer_odd, images, parties=["alice", "bob", "orchestrator"]))
            raise SystemExit("bob ran a model his policy forbids")
        except planc.ClusterError as err:
            print(f"a model whose architecture breaks bob's policy: {err}")
        cluster.close()
    finally:
        demo.stop(procs)


if __name__ == "__main__":
    main()
