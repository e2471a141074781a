"""What the compiler earns: the seed CNN before and after optimisation, and loop folding.

    python benchmarks/bench_compiler.py [--json out/bench_compiler.json]

"before": every product operand secret-shared first (what an eager library does), each
truncation done at once, one node at a time. "after": `planc.compile` (visibility keeps
the owners' plaintext operands, so their cheaper protocols apply), pending truncations
shared by chains of linear ops, all independent openings merged per round. Each figure
is predicted by the cost model and measured by a run over the in-process communicator.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import planc  # noqa: E402
from bench_mpc import make_plan  # noqa: E402
from mnist_cnn import SeedCNN, set_weights, trained_weights  # noqa: E402
from planc.cost import predict  # noqa: E402
from planc.ir import ops as irops  # noqa: E402
from planc.ir.graph import Node, Value  # noqa: E402
from planc.ir.types import SECRET  # noqa: E402
from planc.passes.rewrite import Namer  # noqa: E402

def share_everything(plan):
    """The eager baseline: private operands of products are shared before use."""
    g = plan.graph
    namer = Namer(g)
    out, shared = [], {}
    for n in g.nodes:
        if irops.get(n.op).product and n.results[0].type.vis.is_secret:
            ops = []
            for v in n.operands:
                if v.type.vis.is_private:
                    if v.name not in shared:
                        s = Value(namer(v.name + "_s"), v.type.with_vis(SECRET))
                        out.append(Node("share", (v,), (s,), (), (), n.loc))
                        shared[v.name] = s
                    v = shared[v.name]
                ops.append(v)
            n = replace(n, operands=tuple(ops))
        out.append(n)
    return planc.Plan(replace(g, nodes=tuple(out)), plan.constants, plan.captured, plan.meta)


def measure(plan, data, merge, lazy):
    r = planc.run_local(plan, data, merge=merge, lazy=lazy)
    return {p: (r.stats[p]["rounds"], r.stats[p]["bytes_sent"]) for p in plan.graph.parties}


def cnn_table(model, images):
    rows = []
    for n in (2, 3):
        for batch in (1, 64):
            traced = make_plan(n, batch, model)
            before = share_everything(traced)
            after = planc.compile(traced)
            data = {"alice": planc.weights_of(model, "cnn"), "bob": {"mnist/test": images[:batch]}}
            pb, pa = predict(before, lazy=False), predict(after)
            mb, ma = measure(before, data, False, False), measure(after, data, True, True)
            for p in traced.graph.parties:
                rows.append({
                    "parties": n, "batch": batch, "party": p,
                    "before_pred": (pb.sequential[p].rounds, pb.sequential[p].bytes_sent), "before_meas": mb[p],
                    "after_pred": (pa.merged[p].rounds, pa.merged[p].bytes_sent), "after_meas": ma[p],
                })
    mib = 2 ** 20
    print("seed CNN: rounds / MiB sent per party, before -> after optimisation (predicted | measured)")
    print(f"{'n':>2} {'batch':>5} {'party':6} {'before predicted':>18} {'before measured':>18} "
          f"{'after predicted':>18} {'after measured':>18}")
    for r in rows:
        def fmt(x):
            return f"{x[0]:3d} r {x[1] / mib:8.3f} MiB"
        print(f"{r['parties']:>2} {r['batch']:>5} {r['party']:6} {fmt(r['before_pred']):>18} {fmt(r['before_meas']):>18} "
              f"{fmt(r['after_pred']):>18} {fmt(r['after_meas']):>18}")
        assert r["before_pred"] == r["before_meas"] and r["after_pred"] == r["after_meas"], r
    return rows


def _step(w, X, y, lr=0.1):
    p = torch.sigmoid(X @ w)
    return w - (X.t() @ (p - y)) * (lr / X.shape[0])


def loops_table():
    def loader():
        X = planc.share(planc.load("X", owner="bob", shape=(32, 4)))
        y = planc.share(planc.load("y", owner="bob", shape=(32, 1)))
        w = planc.share(planc.load("w0", owner="alice", shape=(4, 1)))
        return X, y, w

    def python_for(steps):
        def train():
            X, y, w = loader()
            for _ in range(steps):
                w = _step(w, X, y)
            return planc.reveal(w, to="alice")
        return train

    def fori(steps):
        def train():
            X, y, w = loader()
            return planc.reveal(planc.fori_loop(steps, lambda i, w: _step(w, X, y), w), to="alice")
        return train

    parties = ["alice", "bob"]
    one = planc.trace(fori(1), parties=parties)
    f1000 = planc.trace(fori(1000), parties=parties)
    unrolled = planc.trace(python_for(1000), parties=parties)
    folded = planc.compile(unrolled)
    data = {"bob": {"X": torch.randn(32, 4), "y": (torch.rand(32, 1) > 0.5).float()}, "alice": {"w0": torch.zeros(4, 1)}}
    ref_unrolled = planc.run_reference(unrolled, data=data)[0]
    ref_folded = planc.run_reference(folded, data=data)[0]
    rows = [("fori_loop, 1 step", one), ("fori_loop, 1000 steps", f1000), ("python for, 1000 steps (as traced)", unrolled),
            ("python for, 1000 steps, folded", folded)]
    base = len(one.to_bytes())
    print("\ntraining loop (logistic regression, 1000 steps): plan size")
    print(f"{'plan':40} {'nodes':>7} {'bytes':>9} {'vs 1 step':>9}")
    out = []
    for name, p in rows:
        nodes = sum(1 for _ in p.graph.walk())
        size = len(p.to_bytes())
        print(f"{name:40} {nodes:7d} {size:9d} {size / base:9.2f}")
        out.append({"plan": name, "nodes": nodes, "bytes": size})
    same = torch.allclose(ref_unrolled, ref_folded, atol=1e-6)
    print(f"folded plan's results equal the unrolled plan's (reference runtime): {same}")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    from planc.datasets import load_mnist

    model = set_weights(SeedCNN(), trained_weights())
    images = load_mnist()[0][8000:]
    res = {"cnn": cnn_table(model, images), "loops": loops_table()}
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
