"""Hostile plans and unlucky runs: how each attack ends, how long it takes, how much memory.

Each attack runs in its own subprocess (wall-clock limit, peak RSS from getrusage), so a
hang or a blow-up shows as such instead of taking the benchmark down:

    python benchmarks/bench_hostile.py             # every attack, a table
    python benchmarks/bench_hostile.py --only conv_im2col,loops_8000
    python benchmarks/bench_hostile.py --json out/bench_hostile.json

The attacks are the ones measured before the hardening (issue "survive anything a
stranger sends"); the "before" column quotes those measurements.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BEFORE = {
    "loops_8000": "8.4 s to read (1.4 MB)",
    "straight_12mb": "47 s and 0.8 GB to read",
    "public_loop_threads": "runs forever (timeout ignored)",
    "conv_im2col": "allocates 11.8 GB at a party",
    "cost_public_expand": "2.2 GB and 18 s",
    "cost_public_loop": "never finishes",
    "frac_bits_40": "runs, means of 1e-6 instead of -1.33",
    "dealer_after_failure": "26 s and 7.5 GB",
    "big_input_mean": "silently 3.88e8 instead of 3.33e12",
    "sparse_3gib": "13.6 s and 2.3 GB before the size is refused",
}


# ---------------------------------------------------------------- the attacks (run in a child)


def _builder(parties=("alice", "bob")):
    from planc.ir.builder import Builder

    return Builder("hostile", list(parties))


def _tt(shape, vis, dtype="f32"):
    from planc.ir.types import TensorType

    return TensorType(dtype, tuple(shape), vis)


def _save(graph, tmp, meta=None):
    from planc.ir.plan import Plan

    p = Plan(graph)
    if meta:
        p.meta.update(meta)
    path = Path(tmp) / "x.plan"
    p.save(path)
    return path


def attack_loops_8000(tmp):
    """8,000 one-trip loops, each reading the 8,000 constants defined before them."""
    from planc.ir.plan import Plan
    from planc.ir.types import PUBLIC

    b = _builder()
    consts = [b.emit("const", (), {"value": float(i)}, types=[_tt((), PUBLIC)]) for i in range(8000)]
    acc = consts[0]
    for i in range(8000):
        (x,) = b.begin_region([_tt((), PUBLIC, "i64"), _tt((), PUBLIC)])[1:]
        y = b.emit("add", [x, consts[i]])
        body = b.end_region([y])
        acc = b.emit("loop", [acc], {"trips": 1}, types=[_tt((), PUBLIC)], regions=[body])
    path = _save(b.finish([acc]), tmp)
    t = time.perf_counter()
    Plan.read(path)
    return f"read {path.stat().st_size / 1e6:.1f} MB", time.perf_counter() - t


def attack_straight_12mb(tmp):
    from planc.ir.plan import Plan
    from planc.ir.types import PUBLIC

    b = _builder()
    x = b.emit("input", (), {"index": 0}, types=[_tt((4,), PUBLIC)])
    for _ in range(110_000):
        x = b.emit("neg", [x])
    path = _save(b.finish([x]), tmp)
    t = time.perf_counter()
    Plan.read(path)
    return f"read {path.stat().st_size / 1e6:.1f} MB", time.perf_counter() - t


def _public_loop_plan(trips):
    from planc.ir.types import PUBLIC

    b = _builder()
    x = b.emit("input", (), {"index": 0}, types=[_tt((4,), PUBLIC)])
    (v,) = b.begin_region([_tt((), PUBLIC, "i64"), _tt((4,), PUBLIC)])[1:]
    body = b.end_region([b.emit("neg", [v])])
    out = b.emit("loop", [x], {"trips": trips}, types=[_tt((4,), PUBLIC)], regions=[body])
    return b.finish([out])


def attack_public_loop_threads(tmp):
    import torch

    import planc

    g = _public_loop_plan(10 ** 12)
    t = time.perf_counter()
    planc.run_local(g, {}, inputs=[torch.zeros(4)], timeout=2)
    return "finished (!)", time.perf_counter() - t


def attack_cost_public_loop(tmp):
    import planc.cost

    t = time.perf_counter()
    planc.cost.predict(_public_loop_plan(10 ** 12))
    return "costed", time.perf_counter() - t


def attack_cost_public_expand(tmp):
    import planc.cost
    from planc.ir.types import PUBLIC

    b = _builder()
    x = b.emit("input", (), {"index": 0}, types=[_tt((1,), PUBLIC)])
    y = b.emit("expand", [x], {"shape": (2 ** 29,)})
    t = time.perf_counter()
    planc.cost.predict(b.finish([b.emit("sum", [y], {"dim": None, "keepdim": False})]))
    return "costed", time.perf_counter() - t


def attack_conv_im2col(tmp):
    """Every tensor under 1.1M elements, but the im2col of the secret conv is 1.3e9."""
    import torch
    import torch.nn.functional as F

    import planc

    def f():
        x = planc.load("x", owner="bob", shape=(1, 1, 1024, 1024))
        w = planc.load("w", owner="alice", shape=(1, 1, 37, 37))
        return planc.reveal(F.conv2d(planc.share(x), w), to="bob")

    plan = planc.trace(f, parties=["alice", "bob"])
    t = time.perf_counter()
    planc.run_local(plan, {"alice": {"w": torch.zeros(1, 1, 37, 37)}, "bob": {"x": torch.zeros(1, 1, 1024, 1024)}},
                    timeout=60)
    return "ran (!)", time.perf_counter() - t


def attack_frac_bits_40(tmp):
    import torch

    import planc
    from planc.ir.plan import Plan

    def f():
        a = planc.load("a", owner="alice", shape=(4,))
        b = planc.load("b", owner="bob", shape=(4,))
        return planc.reveal(planc.share(a) * planc.share(b) / 2, to="all")

    plan = planc.trace(f, parties=["alice", "bob"])
    plan.meta["frac_bits"] = 40
    path = Path(tmp) / "x.plan"
    t = time.perf_counter()
    plan.save(path)
    got = Plan.read(path)
    res = planc.run_local(got, {"alice": {"a": -torch.ones(4)}, "bob": {"b": -torch.ones(4) * 1.66}}, timeout=30)
    return f"ran: {float(res.outputs['alice'][0][0]):.3g} (want 0.83)", time.perf_counter() - t


def attack_dealer_after_failure(tmp):
    """alice's 50M-element load has no data: she fails at once; the dealer should stop."""
    import planc

    def f():
        x = planc.load("x", owner="alice", shape=(50_000_000,))
        y = planc.load("y", owner="bob", shape=(50_000_000,))
        return planc.reveal(planc.share(x) * planc.share(y), to="bob")

    plan = planc.trace(f, parties=["alice", "bob"])
    import torch

    t = time.perf_counter()
    planc.run_local(plan, {"alice": {}, "bob": {"y": torch.zeros(50_000_000)}}, timeout=60)
    return "ran (!)", time.perf_counter() - t


def attack_big_input_mean(tmp):
    import torch

    sys.path.insert(0, str(ROOT / "examples"))
    import secure_average

    import planc

    grads = {p: torch.randn(secure_average.SHAPE) for p in secure_average.PARTIES}
    grads["alice"][0] = 1e13
    t = time.perf_counter()
    res = planc.run_local(secure_average.secure_average.plan, {p: {"grad": g} for p, g in grads.items()}, timeout=60)
    got = float(res.outputs["alice"][0][0])
    return f"ran: mean[0] {got:.3g} (want {float(sum(g[0] for g in grads.values()) / 3):.3g})", time.perf_counter() - t


def attack_sparse_3gib(tmp):
    from planc.ir.plan import Plan

    path = Path(tmp) / "big.plan"
    with open(path, "wb") as fh:
        fh.truncate(3 * 2 ** 30)
    t = time.perf_counter()
    Plan.read(path)
    return "read (!)", time.perf_counter() - t


ATTACKS = {name[len("attack_"):]: fn for name, fn in sorted(globals().items()) if name.startswith("attack_")}


def child(name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        try:
            outcome, secs = ATTACKS[name](tmp)
        except BaseException as e:  # the outcome we want: a named error
            secs = time.perf_counter() - t0
            msg = str(e).splitlines()[0] if str(e) else ""
            outcome = f"{type(e).__name__}: {msg[:160]}"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB -> GiB
    print(json.dumps({"outcome": outcome, "seconds": secs, "peak_gib": rss}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated attack names")
    ap.add_argument("--limit", type=float, default=120.0, help="wall-clock seconds per attack")
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        return child(a.child)
    names = a.only.split(",") if a.only else list(ATTACKS)
    rows = []
    for name in names:
        t = time.perf_counter()
        try:
            p = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True, text=True,
                               timeout=a.limit, env={**os.environ, "PYTHONPATH": str(ROOT)})
            last = (p.stdout.strip().splitlines() or ["{}"])[-1]
            row = json.loads(last) if last.startswith("{") else {"outcome": f"crashed: {p.stderr[-200:]}"}
        except subprocess.TimeoutExpired:
            row = {"outcome": f"still running after {a.limit:.0f} s (killed)"}
        row.update(name=name, wall=time.perf_counter() - t, before=BEFORE.get(name, ""))
        rows.append(row)
        print(f"{name:22s} {row.get('seconds', float('nan')):7.2f} s  {row.get('peak_gib', float('nan')):5.2f} GiB  "
              f"{row['outcome']}", flush=True)
    print()
    print("| attack | before | now: outcome | s (attack) | peak GiB (process) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['before']} | {r['outcome']} | {r.get('seconds', float('nan')):.2f} | "
              f"{r.get('peak_gib', float('nan')):.2f} |")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
