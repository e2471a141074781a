"""Private prediction as a service: the seed CNN secret-shared across three workers.

    python examples/serving/serve.py            # all on 127.0.0.1; the daemons stop at the end
    python examples/serving/serve.py --requests 5

alice (the model owner's worker) holds the trained seed CNN's weights. The orchestrator
asks her to secret-share them across bob, carol and dave (the serving workers; alice is
not one of them): her daemon sends each his additive share itself, over HTTPS with her
certificate — the orchestrator never sees a weight or a share. It then starts the
service (the architecture is public and traced here, once per batch size; every worker
checks those plans against its own policy), for a limited number of requests. A client
with its own certificate secret-shares each MNIST test image to the three workers, gets
back from each only its share of the logits, and adds them up: nobody else learns the
image or the answer. After the last request the service ends by itself; stopping it
releases every share. Every daemon is a separate process, every link TLS.
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
from mnist_cnn import SeedCNN, set_weights, trained_weights  # noqa: E402
from planc.datasets import load_mnist  # noqa: E402

DAEMONS = ["alice", "bob", "carol", "dave", "dealer"]
START_S = 60.0


def prepare(work: Path):
    from planc.certs import make_deployment

    if work.exists():
        shutil.rmtree(work)
    (work / "alice").mkdir(parents=True)
    make_deployment(DAEMONS + ["orchestrator", "client"], work / "certs")
    for n in DAEMONS:
        shutil.copy(HERE / f"{n}.toml", work / f"{n}.toml")
    weights = trained_weights()
    save_file(weights, str(work / "alice" / "cnn.safetensors"))  # alice's file; nobody else reads it
    return weights


def start(work: Path, name: str) -> tuple[subprocess.Popen, str]:
    addr = work / f"{name}.addr"
    addr.unlink(missing_ok=True)
    role = "dealer" if name == "dealer" else "worker"
    err = open(work / f"{name}.stderr", "wb")
    p = subprocess.Popen([sys.executable, "-m", "planc.cli", role, "--config", f"{name}.toml"], cwd=work,
                         stdout=subprocess.DEVNULL, stderr=err)
    return p, str(addr)


def wait_up(work: Path, procs: dict) -> dict:
    addrs, end = {}, time.monotonic() + START_S
    for n, p in procs.items():
        f = work / f"{n}.addr"
        while not (f.exists() and f.read_text().strip()):
            if p.poll() is not None:
                raise SystemExit(f"{n} exited: {(work / f'{n}.stderr').read_text()[-2000:]}")
            if time.monotonic() > end:
                raise SystemExit(f"{n} did not start within {START_S:g} s")
            time.sleep(0.05)
        addrs[n] = f.read_text().strip()
    return addrs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="out/serving", help="work directory (replaced)")
    ap.add_argument("--requests", type=int, default=3, help="the service's request limit")
    args = ap.parse_args(argv)
    work = Path(args.work).resolve()
    weights = prepare(work)
    procs = {}
    try:
        for n in DAEMONS:
            procs[n], _ = start(work, n)
        addrs = wait_up(work, procs)
        print("daemons: " + ", ".join(f"{n} at https://{a}" for n, a in addrs.items()))
        certs = work / "certs"
        cluster = planc.Cluster({n: addrs[n] for n in DAEMONS if n != "dealer"}, {"dealer": addrs["dealer"]},
                                {"cert": certs / "orchestrator.pem", "key": certs / "orchestrator.key",
                                 "ca": certs / "ca.pem"})

        handle = cluster.share_model("cnn", owner="alice", workers=["bob", "carol", "dave"])
        print(f"alice shared the seed CNN across {', '.join(handle.workers)}: handle {handle.handle} "
              f"({len(handle.tags)} weights; the orchestrator saw only their shapes)")
        t = time.perf_counter()
        svc = cluster.serve(handle, model=SeedCNN().eval(), input_shape=(1, 28, 28), max_requests=args.requests)
        print(f"serving {svc.service_id}: leader {handle.workers[0]}, limit {svc.limit} requests, batches of up to "
              f"16 within a 5 ms window (started in {time.perf_counter() - t:.2f} s)")

        client = planc.Client(cluster, identity={"cert": certs / "client.pem", "key": certs / "client.key",
                                                 "ca": certs / "ca.pem"})
        images, labels = load_mnist()
        reference = set_weights(SeedCNN(), weights)  # only to print PyTorch's answer beside the client's
        first = 8000 + int((labels[8000:] == 7).nonzero()[0])  # the first held-out 7, then the ones after it
        for i in range(args.requests):
            x, y = images[first + i], int(labels[first + i])
            t = time.perf_counter()
            logits = client.query("cnn", x)
            ms = (time.perf_counter() - t) * 1000
            with torch.no_grad():
                ref = reference(x.unsqueeze(0))
            print(f"actual {y}, predicted {int(logits.argmax())}  ({ms:.0f} ms; max |logits - PyTorch| = "
                  f"{(logits - ref).abs().max().item():.1e})")
            if i == 0:
                try:
                    client.query("cnn", torch.zeros(3, 28, 28))
                except planc.ServingError as e:
                    print(f"a query of the wrong shape, refused before anything is sent: {e}")
        try:
            client.query("cnn", images[first + args.requests])
        except planc.ServingError as e:
            print(f"one more: {e}")
        views = svc.stop()
        states = ", ".join(f"{w} {v.get('state')}" for w, v in views.items() if isinstance(v, dict))
        freed = ", ".join(w for w, v in views.items() if isinstance(v, dict) and v.get("released") is True)
        print(f"serving stopped: {states}; shares released at {freed}")
        client.close()
        cluster.close()
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
