"""Workers on 127.0.0.1, already running: the seed CNN end to end through planc.Cluster,
next to run_local(processes=True), over TLS and over gloo, side by side in one run.

    python benchmarks/bench_workers.py [--runs 7] [--batch 64] [--leak 50] [--json out/bench_workers.json]

It starts the demo's daemons (examples/workers/: alice with the weights, bob with a
batch of MNIST test images, a dealer) twice — once with `transport = "tls"` (the
default), once with `transport = "gloo"` (explicitly insecure) — and measures, after one
warm-up each, --runs runs of:

- cluster tls / gloo: `Cluster.run` from the call to the orchestrator's reconstructed
  logits (submission, every worker's checks, the mesh, the dealer, the online phase,
  collecting the shares); "accept ms" is submission to all-accepted;
- local tls / gloo: `run_local(processes=True, transport=...)`: the online time of the
  slowest party (process start-up excluded, as in bench_runtime.py).

Rounds, payload bytes per party, bytes on the wire (TLS: the kernel's count, records and
handshakes included) and the dealer's material are printed for each. Then --leak runs in
a row on the TLS daemons, with each daemon's file descriptors, threads and resident
memory before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "workers"))
sys.path.insert(0, str(ROOT / "examples"))

import demo  # noqa: E402  (examples/workers/demo.py: the deployment)
import planc  # noqa: E402

DAEMONS = ("alice", "bob", "dealer")


def gloo_configs(work: Path):
    """Copies of the demo's configs with transport = "gloo" and their own address/log files."""
    for n in DAEMONS:
        text = (work / f"{n}.toml").read_text()
        text = text.replace('transport = "tls"', 'transport = "gloo"')
        for key in ("address_file", "log"):
            text = text.replace(f'{key} = "{n}.', f'{key} = "{n}-gloo.')
        text = text.replace(f'outputs_dir = "{n}-out"', f'outputs_dir = "{n}-gloo-out"')
        (work / f"{n}-gloo.toml").write_text(text)


def proc_stats(pid: int) -> dict:
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
    return {"fds": fds, "threads": int(status["Threads"]), "rss_mib": int(status["VmRSS"].split()[0]) / 1024}


def summary(times):
    return {"median_ms": 1000 * statistics.median(times), "min_ms": 1000 * min(times),
            "max_ms": 1000 * max(times)}


def counters(stats, parties=("alice", "bob")) -> dict:
    return {"rounds": max(stats[p]["rounds"] for p in parties),
            "mib_sent": max(stats[p]["bytes_sent"] for p in parties) / 2 ** 20,
            "wire_mib": (max(stats[p].get("wire_sent", 0) for p in parties) / 2 ** 20) or None,
            "dealer_mib": stats["dealer"].get("dealer_bytes", 0) / 2 ** 20,
            "dealer_wire_mib": (stats["dealer"].get("wire_sent", 0) / 2 ** 20) or None}


def bench_cluster(cluster, plan, runs):
    cluster.run(plan)  # warm-up: the daemons' first plan (imports, caches)
    walls, accepts, res = [], [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        res = cluster.run(plan)
        walls.append(time.perf_counter() - t0)
        accepts.append(res.accept_s)
    online = [max(res.stats[p].get("online_s", 0) for p in ("alice", "bob"))]
    return {**summary(walls), "accept_ms": 1000 * statistics.median(accepts), "online_ms": 1000 * online[0],
            **counters(res.stats)}, res


def bench_local(plan, data, transport, runs):
    planc.run_local(plan, data, processes=True, transport=transport)
    online, res = [], None
    for _ in range(runs):
        res = planc.run_local(plan, data, processes=True, transport=transport)
        online.append(max(s["online_s"] for p, s in res.stats.items() if p != "dealer"))
    return {**summary(online), "accept_ms": None, "online_ms": 1000 * statistics.median(online),
            **counters(res.stats)}


def leak(cluster, plan, procs, n):
    for _ in range(3):
        cluster.run(plan)
    before = {d: proc_stats(procs[d].pid) for d in DAEMONS}
    t0 = time.perf_counter()
    for _ in range(n):
        cluster.run(plan)
    took = time.perf_counter() - t0
    time.sleep(1.0)  # let finished runs' threads end
    after = {d: proc_stats(procs[d].pid) for d in DAEMONS}
    return before, after, took


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--leak", type=int, default=50, help="runs in a row for the leak figures (0: skip)")
    ap.add_argument("--work", default="out/bench_workers")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    work = Path(a.work).resolve()
    weights, x, _ = demo.prepare(work, a.batch)
    gloo_configs(work)
    procs, addrs = {}, {}
    rows = {}
    try:
        for stem in DAEMONS + tuple(f"{n}-gloo" for n in DAEMONS):
            name = stem.split("-")[0]
            procs[stem], addrs[stem] = demo.start(work, name, stem)
        tls = planc.Cluster.from_config(demo.write_cluster(work, {n: addrs[n] for n in DAEMONS}))
        gloo = planc.Cluster.from_config(demo.write_cluster(work, {n: addrs[f"{n}-gloo"] for n in DAEMONS},
                                                            "cluster-gloo.toml"))
        images = tls.load("mnist/test")
        plan = demo.inference("orchestrator", images)
        # one process per party has no clients: the same network between alice and bob, logits to bob
        local_plan = demo.inference("bob", images, parties=("alice", "bob"))
        data = {"alice": weights, "bob": {"mnist/test": x}}
        rows["local gloo"] = bench_local(local_plan, data, "gloo", a.runs)
        rows["local tls"] = bench_local(local_plan, data, "tls", a.runs)
        rows["cluster gloo"], _ = bench_cluster(gloo, plan, a.runs)
        rows["cluster tls"], res = bench_cluster(tls, plan, a.runs)
        demo.set_weights(demo.model, weights)
        with torch.no_grad():
            agree = (res.outputs[0].argmax(1) == demo.model(x).argmax(1)).float().mean().item()
        print(f"seed CNN, 2 parties + dealer, batch {a.batch}, {a.runs} runs after a warm-up; argmax agreement "
              f"with PyTorch {agree:.2%}")
        print(f"{'path':13} {'median ms':>9} {'min':>7} {'max':>7} {'accept ms':>9} {'online ms':>9} {'rounds':>6} "
              f"{'MiB/party':>9} {'wire MiB':>8} {'dealer MiB':>10} {'dealer wire':>11}")
        for k, r in rows.items():
            f = lambda v, w=9, p=1: f"{v:{w}.{p}f}" if v is not None else f"{'-':>{w}}"  # noqa: E731
            print(f"{k:13} {r['median_ms']:9.1f} {r['min_ms']:7.1f} {r['max_ms']:7.1f} {f(r['accept_ms'])} "
                  f"{r['online_ms']:9.1f} {r['rounds']:>6} {r['mib_sent']:9.2f} {f(r['wire_mib'], 8, 2)} "
                  f"{r['dealer_mib']:10.2f} {f(r['dealer_wire_mib'], 11, 2)}")
        base = rows["local gloo"]["median_ms"]
        print(f"cluster tls end to end / local gloo online: {rows['cluster tls']['median_ms'] / base:.2f}x "
              f"(target <= 1.5x); local tls / local gloo online: {rows['local tls']['median_ms'] / base:.2f}x; "
              f"CrypTen (one process per party, measured here): 587 ms")
        out = {"rows": rows}
        if a.leak:
            before, after, took = leak(tls, plan, procs, a.leak)
            print(f"\n{a.leak} runs in a row on the TLS daemons ({took:.1f} s, {1000 * took / a.leak:.0f} ms a run):")
            print(f"{'daemon':8} {'fds':>9} {'threads':>9} {'RSS MiB':>15}")
            for d in DAEMONS:
                b, e = before[d], after[d]
                print(f"{d:8} {b['fds']:>4} -> {e['fds']:<3} {b['threads']:>4} -> {e['threads']:<3} "
                      f"{b['rss_mib']:7.1f} -> {e['rss_mib']:<7.1f}")
            out["leak"] = {"runs": a.leak, "before": before, "after": after, "seconds": took}
        tls.close()
        gloo.close()
        if a.json:
            Path(a.json).parent.mkdir(parents=True, exist_ok=True)
            Path(a.json).write_text(json.dumps(out, indent=2))
    finally:
        demo.stop(procs)


if __name__ == "__main__":
    main()
