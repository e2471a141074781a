"""The seed CNN served by three workers on 127.0.0.1: query latency and throughput.

    python benchmarks/bench_serving.py [--queries 40] [--clients 1,2,4,8,16] [--window-ms 5] [--json out/bench_serving.json]

It starts the deployment of examples/serving/ (alice with the weights, bob, carol and
dave serving, a dealer; every daemon its own process, every link TLS), shares the
model, serves it, and measures from a client's side (client send -> client has its
answer, i.e. shares out to the three workers, the batching window, the MPC run over the
service's mesh, the shares back, the reconstruction):

- latency at batch 1: --queries queries one at a time (after warm-up): median and p95;
- throughput vs concurrent clients: k threads, each with its own planc.Client, querying
  back to back for --seconds; queries per second, the latency median/p95 under that
  load, the mean batch size the leader formed, and the speed-up over one client.

The leader's rounds and payload bytes per batch (its service view, `last_batch`) and the
dealer pool's hits and misses are printed too. All on one machine: the workers, the
dealer and the clients share its cores, so the numbers are an honest upper bound on
the CPU cost, not a network measurement.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "serving"))
sys.path.insert(0, str(ROOT / "examples"))

import serve as example  # noqa: E402  (examples/serving/serve.py: the deployment)
import planc  # noqa: E402
from mnist_cnn import SeedCNN  # noqa: E402
from planc.datasets import load_mnist  # noqa: E402


def cpu_s(pid=None) -> float:
    """CPU seconds (user + system) a process has used so far: a daemon by pid (from
    /proc), or this process (the clients) when pid is None."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_all(procs) -> dict:
    out = {n: cpu_s(p.pid) for n, p in procs.items() if n != "alice"}
    out["clients"] = cpu_s()
    return out


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def sequential(client, images, n):
    lat = []
    for i in range(n):
        t = time.perf_counter()
        client.query("cnn", images[i % len(images)])
        lat.append(time.perf_counter() - t)
    return lat


def concurrent(make_client, images, k, seconds, probe):
    clients = [make_client() for _ in range(k)]
    for c in clients:
        c.query("cnn", images[0])  # connections up, service looked up
    lat, batches, lock = [], [], threading.Lock()
    stop = time.perf_counter() + seconds
    start = threading.Barrier(k + 1)

    def run(c, j):
        mine, sizes = [], []
        start.wait()
        i = j
        while time.perf_counter() < stop:
            t = time.perf_counter()
            c.query("cnn", images[i % len(images)])
            mine.append(time.perf_counter() - t)
            sizes.append(c.last["batch"])
            i += k
        with lock:
            lat.extend(mine)
            batches.extend(sizes)

    ts = [threading.Thread(target=run, args=(c, j)) for j, c in enumerate(clients)]
    for t in ts:
        t.start()
    c0 = probe()
    start.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    c1 = probe()
    for c in clients:
        c.close()
    return len(lat) / wall, lat, statistics.mean(batches), {n: (c1[n] - c0[n]) / len(lat) for n in c0}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="out/bench_serving")
    ap.add_argument("--queries", type=int, default=40, help="sequential queries for the latency")
    ap.add_argument("--clients", default="1,2,4,8,16")
    ap.add_argument("--seconds", type=float, default=4.0, help="per concurrency level")
    ap.add_argument("--window-ms", type=float, default=5.0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    levels = [int(x) for x in args.clients.split(",")]
    work = Path(args.work).resolve()
    example.prepare(work)
    for w in ("bob", "carol", "dave"):  # the example's workers allow 1,000 queries per service; this needs more
        f = work / f"{w}.toml"
        f.write_text(f.read_text().replace("max_requests = 1000", "max_requests = 1000000"))
    procs = {}
    try:
        for n in example.DAEMONS:
            procs[n], _ = example.start(work, n)
        addrs = example.wait_up(work, procs)
        certs = work / "certs"
        cluster = planc.Cluster({n: addrs[n] for n in example.DAEMONS if n != "dealer"}, {"dealer": addrs["dealer"]},
                                {"cert": certs / "orchestrator.pem", "key": certs / "orchestrator.key",
                                 "ca": certs / "ca.pem"})
        ident = {"cert": certs / "client.pem", "key": certs / "client.key", "ca": certs / "ca.pem"}
        handle = cluster.share_model("cnn", owner="alice", workers=["bob", "carol", "dave"])
        t = time.perf_counter()
        svc = cluster.serve(handle, model=SeedCNN().eval(), input_shape=(1, 28, 28), max_requests=10 ** 6,
                            window_ms=args.window_ms)
        start_s = time.perf_counter() - t
        images = load_mnist()[0][8000:8200]
        client = planc.Client(cluster, identity=ident)
        sequential(client, images, 5)  # warm-up
        probe = lambda: cpu_all(procs)  # noqa: E731
        c0 = probe()
        lat = sequential(client, images, args.queries)
        c1 = probe()
        seq_cpu = {n: (c1[n] - c0[n]) / len(lat) for n in c0}
        last = svc.info()["last_batch"]
        seq_rate = len(lat) / sum(lat)
        rows = []
        for k in levels:
            rate, ls, mean_batch, cpu = concurrent(lambda: planc.Client(cluster, identity=ident), images, k,
                                                   args.seconds, probe)
            rows.append({"clients": k, "qps": rate, "median_ms": statistics.median(ls) * 1000,
                         "p95_ms": pct(ls, 0.95) * 1000, "mean_batch": mean_batch, "speedup": rate / seq_rate,
                         "queries": len(ls), "cpu_ms": {n: v * 1000 for n, v in cpu.items()}})
        info = svc.info()
        pool = svc.info(cluster.dealer_name).get("pool")
        print(f"seed CNN served by bob, carol, dave + dealer on 127.0.0.1 (TLS), batching window "
              f"{args.window_ms:g} ms, service started in {start_s:.2f} s")
        print(f"latency at batch 1 ({len(lat)} sequential queries): median {statistics.median(lat) * 1000:.1f} ms, "
              f"p95 {pct(lat, 0.95) * 1000:.1f} ms -> {seq_rate:.1f} queries/s one at a time")
        print(f"per query at batch 1 (leader bob): {last['rounds']} rounds, {last['bytes_sent'] / 1e6:.2f} MB sent, "
              f"{last['bytes_recv'] / 1e6:.2f} MB received; run over the mesh {last['wall_s'] * 1000:.1f} ms "
              f"(online {last['online_s'] * 1000:.1f} ms)")
        print(f"\n{'clients':>7} {'queries/s':>10} {'x sequential':>12} {'median ms':>10} {'p95 ms':>8} "
              f"{'mean batch':>10} {'queries':>8}")
        for r in rows:
            print(f"{r['clients']:>7} {r['qps']:>10.1f} {r['speedup']:>12.1f} {r['median_ms']:>10.1f} "
                  f"{r['p95_ms']:>8.1f} {r['mean_batch']:>10.1f} {r['queries']:>8}")
        names = list(seq_cpu)
        print(f"\nCPU ms per query, by process (the box has {os.cpu_count()} cores: a rate of R queries/s needs "
              f"R x total / 1000 cores)")
        print(f"{'clients':>7} " + " ".join(f"{n:>8}" for n in names) + f" {'total':>8} {'bound q/s':>9}")
        for k, cpu in [("seq", {n: v * 1000 for n, v in seq_cpu.items()})] + [(r["clients"], r["cpu_ms"]) for r in rows]:
            tot = sum(cpu.values())
            print(f"{k:>7} " + " ".join(f"{cpu[n]:>8.1f}" for n in names) + f" {tot:>8.1f} "
                  f"{os.cpu_count() * 1000 / tot:>9.1f}")
        lb = info["last_batch"]
        print(f"\nlast batch under load: {lb.get('queries')} queries (size {lb.get('size')}): {lb.get('rounds')} rounds, "
              f"{lb.get('bytes_sent', 0) / 1e6:.2f} MB sent by the leader, run over the mesh "
              f"{lb.get('wall_s', 0) * 1000:.1f} ms (online {lb.get('online_s', 0) * 1000:.1f} ms, leader's CPU "
              f"{lb.get('cpu_s', 0) * 1000:.1f} ms); before it the leader waited {lb.get('idle_s', 0) * 1000:.1f} ms "
              f"for its first query and {lb.get('gather_s', 0) * 1000:.1f} ms for the rest")
        print(f"batches formed: {info['batch_sizes']}; dealer pool: {pool}")
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps({"latency_ms": [x * 1000 for x in lat], "batch1": last,
                                                   "throughput": rows, "pool": pool, "sequential_cpu_ms": seq_cpu,
                                                   "batch_sizes": info["batch_sizes"]}, indent=1))
        client.close()
        svc.stop()
        cluster.close()
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(15)
            except Exception:  # noqa: BLE001
                p.kill()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
