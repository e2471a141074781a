"""The runtime's benchmark table: the seed CNN and single ops, over both communicators.

    python benchmarks/bench_runtime.py [--runs 5] [--json out/bench_runtime.json] [--comms threads,tls,gloo]
                                       [--objective rounds]

For each workload: time median / min / max over --runs runs (after one warm-up), rounds
and MiB sent per party (the busiest party), the dealer's batch, and the issue's target
and CrypTen's figure. "threads": every party and the dealer in one process over queues;
time is the wall time of the whole run (dealer batch + online phase). "tls" / "gloo": one
process per party on 127.0.0.1, over mutually authenticated TLS (run_local's default) or
torch.distributed's gloo (unencrypted, chosen explicitly); process start-up (about
2 s: importing torch) is not part of a plan's cost, so the time shown is the online
phase of the slowest party, after the dealer's batch arrived; the wall time including
start-up is in the JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import planc  # noqa: E402
from bench_mpc import CRYPTEN, TARGETS, make_plan  # noqa: E402
from mnist_cnn import SeedCNN, set_weights, trained_weights  # noqa: E402
from planc.datasets import load_mnist  # noqa: E402

OPS = {  # name: (fn of a secret x, input shape, target, CrypTen)
    "relu 1e5": (lambda x: F.relu(x), (100_000,), "<= 4 rounds, <= 10 MiB", "9 rounds, 44.3 MiB, 0.144 s"),
    "softmax 64x10": (lambda x: F.softmax(x, 1), (64, 10), "<= 30 rounds", "94 rounds"),
    "reciprocal 1e5": (lambda x: torch.reciprocal(x), (100_000,), "<= 20 rounds", "38 rounds, 105 MiB"),
    "sigmoid 1e5": (lambda x: torch.sigmoid(x), (100_000,), "beat CrypTen", "23 rounds, 72 MiB"),
    "max+argmax 64x10": (lambda x: tuple(torch.max(x, 1)), (64, 10), "beat CrypTen", "57 rounds"),
}


def op_plan(name, nparties, objective=None):
    fn, shape, _, _ = OPS[name]

    def workload():
        x = planc.share(planc.load("x", owner="bob", shape=shape))
        out = fn(x)
        outs = out if isinstance(out, tuple) else (out,)
        return tuple(planc.reveal(o, to="bob") for o in outs)

    return planc.compile(planc.trace(workload, parties=["alice", "bob", "carol"][:nparties], name=name.split()[0]),
                         objective=objective)


def op_data(name):
    shape = OPS[name][1]
    x = torch.rand(shape) * 4 + 0.25 if name.startswith("reciprocal") else torch.randn(shape) * 3
    return {"bob": {"x": x}}


def run(plan, data, runs, comm):
    processes = comm != "threads"
    kw = {"processes": True, "transport": comm} if processes else {}
    planc.run_local(plan, data, **kw)
    walls, online, res = [], [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        res = planc.run_local(plan, data, **kw)
        walls.append(time.perf_counter() - t0)
        online.append(max(s["online_s"] for p, s in res.stats.items() if p != "dealer"))
    times = online if processes else walls
    parties = [p for p in res.stats if p != "dealer"]
    return {
        "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
        "wall_median_s": statistics.median(walls), "online_median_s": statistics.median(online),
        "rounds": max(res.stats[p]["rounds"] for p in parties),
        "mib_sent_max": max(res.stats[p]["bytes_sent"] for p in parties) / 2 ** 20,
        "mib_sent": {p: res.stats[p]["bytes_sent"] / 2 ** 20 for p in parties},
        "dealer_mib": res.stats["dealer"]["dealer_bytes"] / 2 ** 20,
    }


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-processes", action="store_true", help="threads only")
    ap.add_argument("--comms", default="threads,tls,gloo",
                    help="threads, and one process per party over tls or gloo (comma-separated)")
    ap.add_argument("--objective", choices=("rounds", "bytes", "time"), default=None,
                    help="compile with this objective (planc/passes/comparisons.py: rounds picks the one-round "
                         "fss comparisons for 2 parties); default: the default pipeline (bits)")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    model = set_weights(SeedCNN(), trained_weights())
    images = load_mnist()[0][8000:]
    rows = []
    comms = [c for c in a.comms.split(",") if not (a.no_processes and c != "threads")]
    for comm in comms:
        for (n, batch) in TARGETS:
            plan = planc.compile(make_plan(n, batch, model), objective=a.objective)
            data = {"alice": planc.weights_of(model, "cnn"), "bob": {"mnist/test": images[:batch]}}
            t, c = TARGETS[(n, batch)], CRYPTEN[(n, batch)]
            tgt = f"<= {t[0]} s" + (f", <= {t[1]} rounds" if t[1] else "") + (f", <= {t[2]} MiB" if t[2] else "")
            rows.append({"workload": f"CNN batch {batch}", "parties": n, "comm": comm, "target": tgt,
                         "crypten": f"{c[0]} s, {c[1]} rounds, {c[2]} MiB", **run(plan, data, a.runs, comm)})
        for name in OPS:
            for n in (2, 3):
                rows.append({"workload": name, "parties": n, "comm": comm, "target": OPS[name][2] if n == 2 else "",
                             "crypten": OPS[name][3] if n == 2 else "",
                             **run(op_plan(name, n, a.objective), op_data(name), a.runs, comm)})
    print(f"{'workload':18} {'n':>2} {'comm':9} {'median s':>9} {'min s':>7} {'max s':>7} {'online s':>8} {'rounds':>6} "
          f"{'MiB/party':>9} {'dealer MiB':>10}  target | CrypTen")
    for r in rows:
        print(f"{r['workload']:18} {r['parties']:>2} {r['comm']:9} {r['median_s']:9.3f} {r['min_s']:7.3f} "
              f"{r['max_s']:7.3f} {r['online_median_s']:8.3f} {r['rounds']:>6} {r['mib_sent_max']:9.2f} "
              f"{r['dealer_mib']:10.2f}  {r['target']} | {r['crypten']}")
    print("median s: threads = the whole run (dealer + online); tls/gloo = the online phase of the slowest party. "
          "online s: that online phase, for every communicator")
    procs = [c for c in comms if c != "threads"]
    if "threads" in comms and procs:
        # the same measure on both sides: the slowest party's online phase
        base = {(r["workload"], r["parties"]): r["online_median_s"] for r in rows if r["comm"] == "threads"}
        print(f"\none process per party vs threads (online phase, medians)\n{'workload':18} {'n':>2} {'threads':>8} "
              + " ".join(f"{c:>8} {'ratio':>6}" for c in procs))
        for key, t in base.items():
            cells = []
            for c in procs:
                got = next(r["online_median_s"] for r in rows if r["comm"] == c and (r["workload"], r["parties"]) == key)
                cells.append(f"{got:8.3f} {got / t:6.2f}")
            print(f"{key[0]:18} {key[1]:>2} {t:8.3f} " + " ".join(cells))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
