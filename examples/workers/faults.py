"""Faults on the demo's deployment: two runs at once, then bob's worker killed mid-run.

    python examples/workers/faults.py [--work out/workers-faults]

Starts alice, bob and the dealer as in demo.py, then as the orchestrator:

1. two runs of the seed CNN at once on the same daemons: each has its own run id, data
   ports, certificates' run binding and dealer material; both must match PyTorch;
2. a long run (the CNN's logits through 300 more ReLUs, ~900 rounds) during which bob's
   daemon is killed with SIGKILL: the orchestrator's error names bob, alice and the
   dealer end their copies of the run within the timeout (they say why);
3. bob's daemon restarted: the next run on the same alice and dealer succeeds.
"""
from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from pathlib import Path

import torch

import demo
import planc


def started(log: Path, run_id: str) -> bool:
    """Whether the daemon's JSON-lines log says the run started computing there."""
    lines = log.read_text().splitlines() if log.exists() else []
    return any(e.get("event") == "started" and e.get("run_id") == run_id for e in map(json.loads, lines))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="out/workers-faults")
    a = ap.parse_args(argv)
    work = Path(a.work).resolve()
    weights, x, _ = demo.prepare(work, 16)
    demo.set_weights(demo.model, weights)
    with torch.no_grad():
        want = demo.model(x)
    procs, addrs = {}, {}
    try:
        for n in ("alice", "bob", "dealer"):
            procs[n], addrs[n] = demo.start(work, n)
        cluster = planc.Cluster.from_config(demo.write_cluster(work, addrs))
        images = cluster.load("mnist/test")
        plan = demo.inference("orchestrator", images)
        cluster.run(plan)  # warm

        got, errs = {}, []

        def go(i):
            try:
                got[i] = cluster.run(plan)
            except Exception as e:  # noqa: BLE001
                errs.append(e)

        t0 = time.perf_counter()
        ts = [threading.Thread(target=go, args=(i,)) for i in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        both = time.perf_counter() - t0
        print(f"two runs at once: {'; '.join(f'{r.run_id} {r.wall_s * 1000:.0f} ms' for r in got.values())} "
              f"({both * 1000:.0f} ms for both); errors: {errs or 'none'}")
        for r in got.values():
            agree = (r.outputs[0].argmax(1) == want.argmax(1)).float().mean().item()
            print(f"  {r.run_id}: argmax agreement with PyTorch {agree:.2%}")

        net = planc.owned(demo.model, owner="alice", tag="cnn")

        def long(xs):
            y = planc.fori_loop(300, lambda i, c: torch.relu(c) * 0.99, net(xs))  # ops bob's policy allows
            return planc.reveal(y, to="orchestrator")

        slow = planc.trace(long, images, parties=["alice", "bob", "orchestrator"], name="slow")
        out = {}

        def victim():
            t = time.perf_counter()
            try:
                cluster.run(slow, run_id="victim", timeout=30)
                out["err"] = None
            except planc.ClusterError as e:
                out["err"] = e
            out["end"] = time.perf_counter()
            out["took"] = out["end"] - t

        th = threading.Thread(target=victim)
        th.start()
        end = time.monotonic() + 60
        while time.monotonic() < end and not started(work / "bob.log", "victim"):
            time.sleep(0.02)
        time.sleep(0.5)
        procs["bob"].send_signal(signal.SIGKILL)
        killed, kill_wall = time.perf_counter(), time.time()
        procs["bob"].wait(10)
        th.join(90)
        print(f"\nbob's daemon killed mid-run: the orchestrator's error {out['end'] - killed:.2f} s after the kill:\n"
              f"  {out['err']}")
        for d in ("alice", "dealer"):
            run = cluster.run_info("victim", d)
            while run["state"] == "running" and time.perf_counter() - killed < 60:
                time.sleep(0.05)
                run = cluster.run_info("victim", d)
            said = (run.get("error") or {}).get("message")
            ended = f" {run['ended'] - kill_wall:.2f} s after the kill" if run.get("ended") else ""
            print(f"  {d}: run victim {run['state']}{ended}" + (f": {said}" if said else ""))
        procs["bob"], addrs["bob"] = demo.start(work, "bob")
        cluster = planc.Cluster.from_config(demo.write_cluster(work, addrs))
        r = cluster.run(plan)
        agree = (r.outputs[0].argmax(1) == want.argmax(1)).float().mean().item()
        print(f"\nbob restarted; the next run on the same alice and dealer: {r.run_id} done in "
              f"{r.wall_s * 1000:.0f} ms (bob's first, cold), "
              f"argmax agreement {agree:.2%}")
    finally:
        demo.stop(procs)


if __name__ == "__main__":
    main()
