"""Local ring compute: the int64 convolutions and matmuls a party runs, against float and
against exact limb-split float methods, and the PRG's AES throughput (issue 12, part 4).

    python benchmarks/bench_ring.py [--runs 5] [--threads 1] [--json out/bench_ring.json]

Each layer of the seed CNN at batch 1 and 64 (forward convolutions and the final linear),
on uniform 64-bit ring operands (what a Beaver product's opened values and shares are):

* int64       F.conv2d / matmul on int64, wrapping mod 2^64: what runtime/protocols/beaver.py runs
* unfold      im2col (F.unfold) then an int64 matmul: the same result by another kernel
* f64 limbs   exact: both operands split into c limbs of w bits, the c(c+1)/2 limb products
              with i + j < c as float64 convolutions, recombined mod 2^64; w is the widest
              with 2w + bits(K) <= 53 (K the reduction length: every sum stays an exact
              float64 integer), so w = 22, c = 3, 6 products for these layers
* f32 limbs   the same in float32: 2w + bits(K) <= 24, w = 6 to 7, 55 to 66 products
* f64, f32    the float convolution of the same shapes: not exact, the speed of the hardware

GMAC/s = multiply-accumulates / seconds, median over --runs (after one warm-up), one thread by
default (a party gets one of the machine's cores). Every exact method is checked equal to int64.
AES: the PRG's keystream (runtime/prg.py, AES-128-CTR via libcrypto) in GB/s.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

LAYERS = [  # name, input shape (without batch), weight shape
    ("conv1", (1, 28, 28), (16, 1, 3, 3)),
    ("conv2", (16, 13, 13), (32, 16, 3, 3)),
    ("conv3", (32, 5, 5), (64, 32, 3, 3)),
    ("fc", (64,), (10, 64)),
]


def _op(x, w):
    return F.conv2d(x, w) if w.dim() == 4 else x @ w.t()


def _unfold(x, w):
    if w.dim() != 4:
        return x @ w.t()
    cols = F.unfold(x.view(torch.float64), w.shape[2:]).view(torch.int64)  # im2col moves bits, exactly
    out = w.reshape(w.shape[0], -1) @ cols
    h, wd = x.shape[2] - w.shape[2] + 1, x.shape[3] - w.shape[3] + 1
    return out.reshape(x.shape[0], w.shape[0], h, wd)


def _limbs(t, width, count):
    """Unsigned limbs of int64 ring elements, low first (the top limb takes what is left)."""
    out, mask = [], (1 << width) - 1
    for i in range(count):
        out.append((t >> (width * i)) & mask if i < count - 1 else (t >> (width * i)) & ((1 << (64 - width * i)) - 1))
    return out


def limb_product(x, w, width, count, dtype):
    """f(x, w) mod 2^64 from float products of limbs: sum over i + j < count of
    f(x_i, w_j) * 2^(width (i + j)); each float result is an exact integer (checked by
    the caller against int64)."""
    xs = [l.to(dtype) for l in _limbs(x, width, count)]
    ws = [l.to(dtype) for l in _limbs(w, width, count)]
    acc = None
    for i in range(count):
        for j in range(count - i):
            term = _op(xs[i], ws[j]).to(torch.int64) << (width * (i + j))
            acc = term if acc is None else acc + term
    return acc


def _time(fn, runs):
    fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _macs(x, w):
    out = _op(x[:1].float(), w.float())
    return out.numel() * x.shape[0] * (w[0].numel())


def aes_gbps(runs) -> float:
    from planc.runtime import prg

    n = 1 << 24  # 16M ring elements = 128 MiB
    return 8 * n / _time(lambda: prg.ring(1, "bench", 0, (n,)), runs) / 1e9


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    rows = []
    for batch in (1, 64):
        for name, xs, ws in LAYERS:
            x = torch.randint(-2 ** 63, 2 ** 63 - 1, (batch,) + xs, generator=g)
            w = torch.randint(-2 ** 63, 2 ** 63 - 1, ws, generator=g)
            want = _op(x, w)
            k = w[0].numel()
            b64, b32 = (53 - k.bit_length()) // 2, (24 - k.bit_length()) // 2
            methods = {"int64": lambda: _op(x, w), "unfold": lambda: _unfold(x, w),
                       "f64 limbs": lambda: limb_product(x, w, b64, -(-64 // b64), torch.float64),
                       "f32 limbs": lambda: limb_product(x, w, b32, -(-64 // b32), torch.float32)}
            for m in ("unfold", "f64 limbs", "f32 limbs"):
                if not torch.equal(methods[m](), want):
                    raise AssertionError(f"{m} is not exact on {name}")
            xf, wf = x.double(), w.double()
            x32, w32 = x.float(), w.float()
            methods["f64"] = lambda: _op(xf, wf)
            methods["f32"] = lambda: _op(x32, w32)
            macs = _macs(x, w)
            rows.append({"layer": name, "batch": batch, "macs": macs,
                         **{m: macs / _time(fn, a.runs) / 1e9 for m, fn in methods.items()}})
    cols = ["int64", "unfold", "f64 limbs", "f32 limbs", "f64", "f32"]
    print(f"GMAC/s, {a.threads} thread(s), median of {a.runs}")
    print(f"{'layer':6} {'batch':>5} {'MMAC':>7} " + " ".join(f"{c:>10}" for c in cols))
    for r in rows:
        print(f"{r['layer']:6} {r['batch']:>5} {r['macs'] / 1e6:7.2f} " + " ".join(f"{r[c]:10.2f}" for c in cols))
    aes = aes_gbps(a.runs)
    print(f"PRG (AES-128-CTR keystream): {aes:.2f} GB/s")
    best = {r["layer"] + "/" + str(r["batch"]): max(("int64", "unfold", "f64 limbs", "f32 limbs"), key=lambda m: r[m])
            for r in rows}
    print("fastest exact method per layer: " + ", ".join(f"{k} {v}" for k, v in best.items()))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"rows": rows, "aes_gbps": aes, "fastest_exact": best}, indent=2))


if __name__ == "__main__":
    main()
