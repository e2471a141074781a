"""Secret-shared approximations: reciprocal, sigmoid and exp on 1e5 elements, softmax
over the last dim of a 64x10 tensor (and, with --all, tanh, log, sqrt, log_softmax), with
2 and 3 parties (in-process threads, the dealer included).

    python benchmarks/bench_approx.py [--runs 5] [--all] [--json out/bench_approx.json]

Prints rounds and bytes sent per party (the maximum over parties), the dealer's batch
(the last party's corrections), the median / min / max wall time over the runs (after a
warm-up) and the largest error against float64 on the encoded input. The result stays
secret (no reveal), so rounds are the protocol's alone.

Targets (2 parties): reciprocal <= 20 rounds (CrypTen: 38 rounds, 105 MiB); softmax 64x10
<= 30 rounds (CrypTen: 94); sigmoid below CrypTen's 23 rounds, 72 MiB.
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

N = 100_000
CRYPTEN = {"reciprocal": "38 rounds, 105 MiB", "sigmoid": "23 rounds, 72 MiB", "softmax": "94 rounds",
           "exp": "8 rounds"}
TARGET = {"reciprocal": "<= 20 rounds", "softmax": "<= 30 rounds", "sigmoid": "< 23 rounds"}


def _inputs(op, shape, gen):
    if op == "reciprocal":
        mag = torch.exp2(torch.empty(shape).uniform_(-8, 15.9, generator=gen))
        return mag * torch.where(torch.rand(shape, generator=gen) < 0.5, -1.0, 1.0)
    if op in ("log", "sqrt"):
        return torch.exp2(torch.empty(shape).uniform_(-12, 15.9, generator=gen))
    if op == "exp":
        return torch.empty(shape).uniform_(-20, 12, generator=gen)
    if op in ("sigmoid", "tanh"):
        return torch.randn(shape, generator=gen) * 8
    return torch.randn(shape, generator=gen) * 8  # softmax, log_softmax logits


def make(op, nparties, shape):
    b = Builder(op, ["alice", "bob", "carol"][:nparties])
    x = b.emit("share", [b.emit("load", attrs={"tag": "x", "owner": 0},
                                types=[TensorType("f32", shape, private(0))])])
    attrs = {"dim": len(shape) - 1} if "softmax" in op else {}
    g = verify(b.finish([b.emit(op, [x], attrs)]))
    gen = torch.Generator().manual_seed(0)
    return g, {"alice": {"x": _inputs(op, shape, gen)}}


def reference(op, x):
    x = fixed.decode(fixed.encode(x), dtype=torch.float64)
    if "softmax" in op:
        return getattr(torch, op)(x, dim=-1)
    return getattr(torch, op)(x)


def bench(op, shape, nparties, runs):
    g, data = make(op, nparties, shape)
    planc.run_local(g, data)  # warm-up
    walls, res = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        res = planc.run_local(g, data)
        walls.append(time.perf_counter() - t0)
    st = {p: res.stats[p] for p in res.parties}
    out = fixed.decode(sum(res.outputs[p][0].data for p in res.parties), dtype=torch.float64)
    err = (out - reference(op, data["alice"]["x"])).abs().max().item()
    return {
        "op": op, "shape": list(shape), "parties": nparties,
        "rounds": max(s["rounds"] for s in st.values()),
        "bytes_sent": max(s["bytes_sent"] for s in st.values()),
        "dealer_bytes": res.stats["dealer"]["dealer_bytes"],
        "median_s": statistics.median(walls), "min_s": min(walls), "max_s": max(walls),
        "max_abs_err": err,
    }


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--all", action="store_true", help="also tanh, log, sqrt, log_softmax")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    cases = [("reciprocal", (N,)), ("sigmoid", (N,)), ("exp", (N,)), ("softmax", (64, 10))]
    if a.all:
        cases += [("tanh", (N,)), ("log", (N,)), ("sqrt", (N,)), ("log_softmax", (64, 10))]
    rows = [bench(op, shape, n, max(a.runs, 5)) for op, shape in cases for n in (2, 3)]
    mib = 2 ** 20
    print(f"{'op':12} {'shape':>9} {'n':>2} {'rounds':>6} {'MiB/party':>9} {'dealer MiB':>10} "
          f"{'median s':>8} {'min s':>6} {'max s':>6} {'max err':>8}   target / CrypTen (2 parties)")
    for r in rows:
        shape = "x".join(str(s) for s in r["shape"])
        note = f"{TARGET.get(r['op'], '-')} / {CRYPTEN.get(r['op'], '-')}" if r["parties"] == 2 else ""
        print(f"{r['op']:12} {shape:>9} {r['parties']:>2} {r['rounds']:>6} {r['bytes_sent'] / mib:9.2f} "
              f"{r['dealer_bytes'] / mib:10.2f} {r['median_s']:8.3f} {r['min_s']:6.3f} {r['max_s']:6.3f} "
              f"{r['max_abs_err']:8.1e}   {note}")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
