"""Front-end speed on a ResNet-18: trace, verify, save, read back, print, parse.

    python benchmarks/bench_ir.py [--runs 5] [--json out/bench_ir.json]

Targets (2-core machine): trace + verify + save < 2 s; print + parse < 0.5 s.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import planc  # noqa: E402
from planc.ir.parser import parse_graph  # noqa: E402
from planc.ir.plan import Plan  # noqa: E402
from planc.ir.printer import print_graph  # noqa: E402
from planc.ir.verify import verify  # noqa: E402
from models import ResNet18  # noqa: E402


def timeit(fn, runs):
    out, times = None, []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, times


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    model = ResNet18().eval()
    spec = planc.load("imagenet/batch", owner="bob", shape=(a.batch, 3, 224, 224))

    def do_trace():
        return planc.trace(model, spec, owner="alice", tag="resnet18", parties=["alice", "bob"])

    plan, t_trace = timeit(do_trace, a.runs)
    _, t_verify = timeit(lambda: verify(plan.graph), a.runs)
    data, t_save = timeit(plan.to_bytes, a.runs)
    back, t_read = timeit(lambda: Plan.from_bytes(data), a.runs)
    assert back == plan, "plan changed on a round trip"
    text, t_print = timeit(lambda: print_graph(plan.graph), a.runs)
    g2, t_parse = timeit(lambda: parse_graph(text), a.runs)
    assert g2 == plan.graph, "graph changed on a print/parse round trip"

    rows = [("trace", t_trace), ("verify", t_verify), ("save (to_bytes)", t_save),
            ("read (from_bytes, checks all)", t_read), ("print", t_print), ("parse", t_parse)]
    n = sum(1 for _ in plan.graph.walk())
    print(f"ResNet-18, batch {a.batch}: {n} IR nodes, {len(text.splitlines())} lines of IR, "
          f"plan file {len(data):,} bytes, {sum(p.numel() for p in model.parameters()):,} weights kept at alice")
    print(f"{'step':32} {'median ms':>10} {'min ms':>10} {'max ms':>10}")
    res = {}
    for name, ts in rows:
        med = statistics.median(ts)
        res[name] = {"median_s": med, "min_s": min(ts), "max_s": max(ts)}
        print(f"{name:32} {med * 1e3:10.1f} {min(ts) * 1e3:10.1f} {max(ts) * 1e3:10.1f}")
    tvs = statistics.median(t_trace) + statistics.median(t_verify) + statistics.median(t_save)
    pp = statistics.median(t_print) + statistics.median(t_parse)
    print(f"{'trace + verify + save':32} {tvs * 1e3:10.1f}   target < 2000 ms  {'ok' if tvs < 2 else 'MISSED'}")
    print(f"{'print + parse':32} {pp * 1e3:10.1f}   target <  500 ms  {'ok' if pp < 0.5 else 'MISSED'}")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"nodes": n, "steps": res}, indent=2))


if __name__ == "__main__":
    main()
