"""The seed demo across daemons: alice's worker holds the CNN's weights, bob's worker a
batch of MNIST test images, a dealer daemon makes the correlated randomness, and this
script — the orchestrator, who knows neither — searches their catalogues, traces the
plan with the shapes it finds there, ships it, and receives only the logits.

    python examples/workers/demo.py              # everything on 127.0.0.1, then stops the daemons
    python examples/workers/demo.py --keep       # leave the daemons running (prints how to reach them)

Every daemon is a separate process (`planc worker --config alice.toml`, ...) with its own
certificate from a CA made for the deployment (`planc certs`); every byte between them
travels over mutually authenticated TLS. The work directory (default out/workers/) gets
the certificates, the data files, copies of the configs beside them, the daemons' logs
and cluster.toml, so the commands it prints at the end work as they are.

Run twice: once revealing the logits to the orchestrator (a client party of the plan
that does not compute: it receives each worker's share and adds them up), once to bob
(the logits stay on bob's machine, in its outputs directory). Then a plan that breaks
bob's policy, and its refusal.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import planc  # noqa: E402
from mnist_cnn import model, set_weights, trained_weights  # noqa: E402
from planc.datasets import load_mnist  # noqa: E402

NAMES = ["alice", "bob", "dealer", "orchestrator"]
START_S = 60.0


def prepare(work: Path, batch: int):
    """Certificates, data files and the configs, in `work`."""
    from planc.certs import make_deployment

    if work.exists():
        shutil.rmtree(work)
    (work / "alice").mkdir(parents=True)
    (work / "bob").mkdir()
    make_deployment(NAMES, work / "certs")
    for f in ("alice.toml", "bob.toml", "dealer.toml", "alice.policy.toml", "bob.policy.toml"):
        shutil.copy(HERE / f, work / f)
    weights = trained_weights()
    save_file(weights, str(work / "alice" / "cnn.safetensors"))  # alice's file; nobody else reads it
    images, labels = load_mnist()
    x, y = images[8000:8000 + batch].contiguous(), labels[8000:8000 + batch]
    save_file({"images": x}, str(work / "bob" / "mnist_test.safetensors"))  # bob's file
    return weights, x, y


def start(work: Path, name: str, stem: str | None = None) -> tuple[subprocess.Popen, str]:
    """`planc worker --config STEM.toml` (or dealer; STEM defaults to the name) as a
    process; its address (from STEM.addr, the config's address_file) once up."""
    stem = stem or name
    addr = work / f"{stem}.addr"
    addr.unlink(missing_ok=True)
    role = "dealer" if name == "dealer" else "worker"
    err = open(work / f"{stem}.stderr", "wb")
    p = subprocess.Popen([sys.executable, "-m", "planc.cli", role, "--config", f"{stem}.toml"], cwd=work,
                         stdout=subprocess.DEVNULL, stderr=err)
    end = time.monotonic() + START_S
    while time.monotonic() < end:
        if addr.exists() and addr.read_text().strip():
            return p, addr.read_text().strip()
        if p.poll() is not None:
            raise SystemExit(f"{stem} exited: {(work / f'{stem}.stderr').read_text()[-2000:]}")
        time.sleep(0.05)
    p.kill()
    raise SystemExit(f"{name} did not start within {START_S:g} s")


def write_cluster(work: Path, addrs: dict, name: str = "cluster.toml") -> Path:
    path = work / name
    path.write_text("# the orchestrator's view of the deployment (written by demo.py)\n"
                    "timeout = 60\n\n[identity]\ncert = \"certs/orchestrator.pem\"\n"
                    "key = \"certs/orchestrator.key\"\nca = \"certs/ca.pem\"\n\n[workers]\n"
                    + "".join(f"{n} = \"https://{addrs[n]}\"\n" for n in ("alice", "bob"))
                    + f"\n[dealer]\ndealer = \"https://{addrs['dealer']}\"\n")
    return path


def inference(to: str, images, parties=("alice", "bob", "orchestrator")):
    """The plan: alice's CNN on bob's images, logits revealed to `to` only."""
    net = planc.owned(model, owner="alice", tag="cnn")

    def infer(x):
        return planc.reveal(net(x), to=to)

    return planc.trace(infer, images, parties=list(parties), name=f"cnn_to_{to}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="out/workers", help="work directory (replaced)")
    ap.add_argument("--batch", type=int, default=64, help="images in bob's batch")
    ap.add_argument("--keep", action="store_true", help="leave the daemons running")
    args = ap.parse_args(argv)
    work = Path(args.work).resolve()
    weights, x, labels = prepare(work, args.batch)
    set_weights(model, weights)  # only to print PyTorch's answer beside planc's: the orchestrator never has them
    procs, addrs = {}, {}
    try:
        for n in ("alice", "bob", "dealer"):
            procs[n], addrs[n] = start(work, n)
        print("daemons: " + ", ".join(f"{n} at https://{a}" for n, a in addrs.items()))
        cluster = planc.Cluster.from_config(write_cluster(work, addrs))

        print("\n$ planc search --cluster cluster.toml mnist")
        for e in cluster.search("mnist"):
            print(f"  {e.worker:6} {e.tag:12} {e.dtype} {list(e.shape)}  {e.description}")
        images = cluster.load("mnist/test")  # a shell: bob's tag, with the shape and dtype from his catalogue
        with torch.no_grad():
            want = model(x)

        plan = inference("orchestrator", images)
        print(f"\nplan {plan.graph.name}: sha256 {plan.sha256()[:16]}…, parties {', '.join(plan.graph.parties)} "
              "(orchestrator: a client, it does not compute)")
        res = cluster.run(plan, progress=True)
        (logits,) = res.outputs
        agree = (logits.argmax(1) == want.argmax(1)).float().mean().item()
        acc = (logits.argmax(1) == labels).float().mean().item()
        print(f"logits at the orchestrator: argmax agreement with PyTorch {agree:.2%}, accuracy {acc:.1%}, "
              f"max |logits - PyTorch| = {(logits - want).abs().max().item():.2e}")
        res.summary()

        plan = inference("bob", images)
        res = cluster.run(plan, progress=True)
        assert res.outputs == [None], "the orchestrator must receive nothing"
        (kept,) = [o for o in res.kept["bob"] if o["kind"] == "own"]
        from safetensors.torch import load_file

        at_bob = next(iter(load_file(kept["path"]).values()))
        agree = (at_bob.argmax(1) == want.argmax(1)).float().mean().item()
        print(f"logits revealed to bob, kept on bob's machine at {kept['path']}: the orchestrator got "
              f"nothing; argmax agreement with PyTorch {agree:.2%}")

        def peek(xs):  # breaks bob's policy: `mean` is not on his list, and it is about his raw data
            return planc.reveal(xs.mean(dim=0), to="orchestrator")

        bad = planc.trace(peek, images, parties=["alice", "bob", "orchestrator"])
        try:
            cluster.run(bad)
            raise SystemExit("bob accepted a plan his policy forbids")
        except planc.ClusterError as e:
            print(f"\na plan that breaks bob's policy: {e}")

        print("\n$ planc cluster status --cluster cluster.toml")
        for n, s in cluster.status().items():
            runs = s["runs"] if isinstance(s, dict) else []
            print(f"  {n:7} {'up' if isinstance(s, dict) else s}  {len(runs)} runs; last "
                  f"{runs[-1]['run_id'] + ' ' + runs[-1]['state'] if runs else '-'}")
        cluster.close()
        if args.keep:
            print(f"\ndaemons left running (pids {', '.join(str(p.pid) for p in procs.values())}); in {work}:\n"
                  "  planc search --cluster cluster.toml mnist\n  planc cluster status --cluster cluster.toml\n"
                  f"  kill {' '.join(str(p.pid) for p in procs.values())}")
            procs = {}
    finally:
        stop(procs)


def stop(procs: dict):
    """SIGTERM every daemon (they shut down cleanly), then SIGKILL what is left after 15 s."""
    for p in procs.values():
        p.terminate()
    for p in procs.values():
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


if __name__ == "__main__":
    main()
