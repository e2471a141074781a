"""Private inference of the seed CNN: time, rounds and bytes per party.

    python benchmarks/bench_mpc.py [--runs 5] [--json out/bench_mpc.json] [--processes]

Weights are private to party 0 (alice), images private to party 1 (bob); with 3 parties
carol only computes. Times are wall-clock for the whole run (setup, dealer batch and
online phase) after one warm-up run; the online phase alone is printed too. Rounds and
bytes are those of party 0 (and the maximum over parties).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import planc  # noqa: E402
from mnist_cnn import SeedCNN, set_weights, trained_weights  # noqa: E402
from planc.datasets import load_mnist  # noqa: E402

TARGETS = {  # (parties, batch): (seconds, rounds, MiB per party) from the issue; None: no target
    (2, 1): (0.027, None, None),
    (2, 64): (0.15, 16, 25),
    (3, 1): (0.10, None, None),
    (3, 64): (0.43, 20, None),
}
CRYPTEN = {(2, 1): (0.110, 32, 2.0), (2, 64): (0.610, 32, 105.7), (3, 1): (0.391, 71, 4.0), (3, 64): (1.73, 71, 233)}


def make_plan(nparties: int, batch: int, model):
    parties = ["alice", "bob", "carol"][:nparties]

    def encrypted_inference():
        images = planc.load("mnist/test", owner="bob", shape=(batch, 1, 28, 28))
        net = planc.owned(model, owner="alice", tag="cnn")
        return planc.reveal(net(images), to="bob")

    return planc.trace(encrypted_inference, parties=parties, name=f"cnn_{nparties}p_b{batch}")


def bench(nparties, batch, runs, processes, model, weights, images):
    plan = make_plan(nparties, batch, model)
    data = {"alice": planc.weights_of(model, "cnn"), "bob": {"mnist/test": images[:batch]}}
    planc.run_local(plan, data, processes=processes)  # warm-up (imports, allocator)
    walls, online = [], []
    res = None
    for _ in range(runs):
        t0 = time.perf_counter()
        res = planc.run_local(plan, data, processes=processes)
        walls.append(time.perf_counter() - t0)
        online.append(max(s["online_s"] for p, s in res.stats.items() if p != "dealer"))
    with torch.no_grad():
        want = model(images[:batch])
    err = (res.outputs["bob"][0] - want).abs().max().item()
    agree = (res.outputs["bob"][0].argmax(1) == want.argmax(1)).float().mean().item()
    p0 = res.stats["alice"]
    return {
        "parties": nparties, "batch": batch, "comm": "processes (tls)" if processes else "threads",
        "median_s": statistics.median(walls), "min_s": min(walls), "max_s": max(walls),
        "online_median_s": statistics.median(online),
        "rounds": p0["rounds"], "max_rounds": max(s["rounds"] for p, s in res.stats.items() if p != "dealer"),
        "bytes_sent_p0": p0["bytes_sent"],
        "max_bytes_sent": max(s["bytes_sent"] for p, s in res.stats.items() if p != "dealer"),
        "dealer_bytes": res.stats["dealer"]["dealer_bytes"], "max_abs_err": err, "argmax_agree": agree,
    }


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", default=None)
    ap.add_argument("--processes", action="store_true", help="also one process per party (over TLS, run_local's default)")
    ap.add_argument("--only", default=None, help="e.g. 2x64")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    model = set_weights(SeedCNN(), trained_weights())
    weights = planc.weights_of(model, "cnn")
    images, _ = load_mnist()
    images = images[8000:]
    rows = []
    comms = [False, True] if a.processes else [False]
    for processes in comms:
        for nparties, batch in TARGETS:
            if a.only and a.only != f"{nparties}x{batch}":
                continue
            rows.append(bench(nparties, batch, a.runs, processes, model, weights, images))
    mib = 2 ** 20
    print(f"{'comm':10} {'n':>2} {'batch':>5} {'median s':>9} {'min s':>7} {'max s':>7} {'online s':>9} "
          f"{'rounds':>6} {'MiB p0':>7} {'MiB max':>7} {'dealer MiB':>10} {'err':>8}   target / CrypTen")
    for r in rows:
        key = (r["parties"], r["batch"])
        t = TARGETS[key]
        c = CRYPTEN[key]
        tgt = f"<= {t[0]} s" + (f", <= {t[1]} rounds" if t[1] else "") + (f", <= {t[2]} MiB" if t[2] else "")
        print(f"{r['comm']:10} {r['parties']:>2} {r['batch']:>5} {r['median_s']:9.3f} {r['min_s']:7.3f} "
              f"{r['max_s']:7.3f} {r['online_median_s']:9.3f} {r['rounds']:>6} {r['bytes_sent_p0'] / mib:7.2f} "
              f"{r['max_bytes_sent'] / mib:7.2f} {r['dealer_bytes'] / mib:10.2f} {r['max_abs_err']:8.1e}   "
              f"{tgt} / {c[0]} s, {c[1]} rounds, {c[2]} MiB")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
