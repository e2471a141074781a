"""Secret-shared comparisons: relu on 1e5 elements and max + argmax over the last dim of
a 64x10 tensor, with 2 and 3 parties (in-process threads, the dealer included).

    python benchmarks/bench_compare.py [--runs 5] [--json out/bench_compare.json]

Prints rounds and bytes sent per party (the maximum over parties), the dealer's batch
(the last party's corrections) and the median wall time over the runs, after a warm-up.
The input stays secret at the end (no reveal), so rounds are the protocols' alone.

Targets: relu <= 4 rounds and <= 10 MiB per party (CrypTen: 9 rounds, 44 MiB); max +
argmax <= ~20 rounds (CrypTen: 57).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import planc
from planc.ir.builder import Builder
from planc.ir.types import TensorType, private
from planc.ir.verify import verify
from planc.runtime import fixed

TARGETS = {"relu 1e5": (4, 10.0), "max+argmax 64x10": (20, None)}
CRYPTEN = {"relu 1e5": (9, 44.0), "max+argmax 64x10": (57, None)}


def plan_relu(nparties, n=100_000):
    b = Builder("relu", ["alice", "bob", "carol"][:nparties])
    x = b.emit("share", [b.emit("load", attrs={"tag": "x", "owner": 0}, types=[TensorType("f32", (n,), private(0))])])
    return verify(b.finish([b.emit("relu", [x])])), {"alice": {"x": torch.randn(n) * 10}}


def plan_max(nparties, shape=(64, 10)):
    b = Builder("max", ["alice", "bob", "carol"][:nparties])
    x = b.emit("share", [b.emit("load", attrs={"tag": "x", "owner": 0}, types=[TensorType("f32", shape, private(0))])])
    outs = [b.emit("max", [x], {"dim": 1}), b.emit("argmax", [x], {"dim": 1})]
    return verify(b.finish(outs)), {"alice": {"x": torch.randn(shape)}}


def check(name, res, data):
    x = data["alice"]["x"]
    total = [sum(res.outputs[p][i].data for p in res.parties) for i in range(len(res.outputs[res.parties[0]]))]
    if name.startswith("relu"):
        err = (fixed.decode(total[0], dtype=torch.float64) - torch.relu(x.double())).abs().max().item()
        return err
    assert torch.equal(fixed.decode(total[1], dtype=torch.int64), x.argmax(1)), "argmax differs"
    return (fixed.decode(total[0], dtype=torch.float64) - x.max(1).values.double()).abs().max().item()


def bench(name, make, nparties, runs):
    g, data = make(nparties)
    planc.run_local(g, data)  # warm-up: imports, lookup tables, allocator
    walls, res = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        res = planc.run_local(g, data)
        walls.append(time.perf_counter() - t0)
    st = {p: res.stats[p] for p in res.parties}
    return {
        "case": name, "parties": nparties,
        "rounds": max(s["rounds"] for s in st.values()),
        "bytes_sent": max(s["bytes_sent"] for s in st.values()),
        "dealer_bytes": res.stats["dealer"]["dealer_bytes"],
        "median_s": statistics.median(walls), "min_s": min(walls),
        "online_median_s": max(s["online_s"] for s in st.values()),
        "max_abs_err": check(name, res, data),
    }


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    rows = [bench(name, make, n, max(a.runs, 5))
            for name, make in (("relu 1e5", plan_relu), ("max+argmax 64x10", plan_max)) for n in (2, 3)]
    mib = 2 ** 20
    print(f"{'case':18} {'n':>2} {'rounds':>6} {'MiB sent':>9} {'dealer MiB':>10} {'median s':>9} {'min s':>7} "
          f"{'err':>8}   target / CrypTen (2 parties)")
    for r in rows:
        t, c = TARGETS[r["case"]], CRYPTEN[r["case"]]
        tgt = f"<= {t[0]} rounds" + (f", <= {t[1]} MiB" if t[1] else "")
        cr = f"{c[0]} rounds" + (f", {c[1]} MiB" if c[1] else "")
        print(f"{r['case']:18} {r['parties']:>2} {r['rounds']:>6} {r['bytes_sent'] / mib:9.3f} "
              f"{r['dealer_bytes'] / mib:10.2f} {r['median_s']:9.3f} {r['min_s']:7.3f} {r['max_abs_err']:8.1e}   "
              f"{tgt} / {cr}")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
