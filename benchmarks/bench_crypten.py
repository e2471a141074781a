"""CrypTen 0.4.1 next to planc, one after the other in one run, on the same inputs.

    python benchmarks/bench_crypten.py --setup                 # once: the side venv, out/crypten-venv
    python benchmarks/bench_crypten.py [--runs 5] [--only relu] [--parties 2,3] [--comms tls,gloo]
                                       [--venv out/crypten-venv] [--json out/bench_crypten.json]

Rows: the seed CNN (examples/mnist_cnn.py, the trained weights, held-out MNIST images) at
batch 1 and 64, and bench_runtime.py's single ops (relu, sigmoid, reciprocal on 1e5
elements, softmax and max+argmax on 64x10), each for 2 and 3 parties. The model is
party 0's (alice), the input party 1's (bob); the result is revealed to party 1. Per row:
time median / min / max over --runs after one warm-up run, rounds and MiB per party (the
busiest), the ratio CrypTen / planc of the medians, and the output's error against PyTorch.

CrypTen: one process per party plus the trusted third party, all started with the side
venv's python (this script with --crypten-side), over torch.distributed's gloo on
127.0.0.1 (file rendezvous in a temporary folder), one group of processes per row.
Provider: `crypten.mpc.provider.TrustedThirdParty` (cfg.mpc.provider "TTP", the fastest
CrypTen has that is not the insecure trusted-first-party one; --crypten-provider TFP
picks that one): Beaver triples and the like come from the TTP process on demand, during
the computation, so their cost is part of CrypTen's time; party 0's requests to it count
in party 0's rounds and bytes, so the table shows the other parties' (the busiest of
them), and the JSON party 0's beside (rounds_party0, mib_party0). Time: wall time from a barrier to the revealed
output of the slowest party, including the sharing of the model (`model.encrypt(src=0)`)
and of the input (`crypten.cryptensor(x, src=1)`); rounds and bytes from
`crypten.comm.get().get_communication_stats()` (cfg.communicator.verbose on; reset after
the barrier before each run). CrypTen counts 8 bytes an element and, for some collectives,
both what a party sends and what it receives. The CNN is converted by
`crypten.nn.from_pytorch` (its ONNX path, with the patch below), untimed, like planc's
trace and compile.

planc: bench_runtime.py's plans and its `run`, one process per party over TLS (run_local's
default) and gloo; the time is the online phase of the slowest party, after the dealer's
batch arrived (the dealer's work is not in it, unlike the TTP's in CrypTen's), the dealer's
MiB beside.

The side venv (`--setup`): `python -m venv --system-site-packages out/crypten-venv`, so it
sees this interpreter's torch, numpy, onnx and PyYAML; then `pip install --no-deps
crypten==0.4.1` and `pip install omegaconf` (its one dependency, PyYAML, is already there).
CrypTen's other declared dependencies (torchvision, tensorboard, sklearn, pandas, scipy,
future) are not imported by what runs here (pip says they are missing: expected).
Without the venv the script says how to make it and runs planc's rows only.

Patches, applied in the CrypTen processes before `import crypten` (nothing on disk is changed):
1. `crypten/nn/onnx_converter.py` falls back to `from torch.onnx._internal.registration
   import registry`, a module torch 2.13 no longer has (and never uses the name): a stand-in
   module with `registry = None` goes into sys.modules.
2. Since torch 2.9 `torch.onnx.export` defaults to the dynamo exporter, which needs
   onnxscript and ignores the TorchScript symbolic registry CrypTen relies on:
   `torch.onnx.export` is wrapped to default to `dynamo=False` (the TorchScript exporter,
   still in torch 2.13), which `crypten.nn.from_pytorch` calls.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "benchmarks"))

DEFAULT_VENV = ROOT / "out" / "crypten-venv"
CNN_BATCHES = (1, 64)
CT_OPS = {  # bench_runtime.OPS's names: the same op on a CrypTen tensor
    "relu 1e5": lambda x: (x.relu(),),
    "sigmoid 1e5": lambda x: (x.sigmoid(),),
    "reciprocal 1e5": lambda x: (x.reciprocal(),),
    "softmax 64x10": lambda x: (x.softmax(1),),
    "max+argmax 64x10": lambda x: tuple(x.max(dim=1, one_hot=False)),
}
MIB = 2 ** 20


# ---------------------------------------------------------------- the CrypTen side (side venv)

def patch_crypten_imports():
    """The two patches of the module docstring; before `import crypten`."""
    import types

    import torch.onnx

    stand_in = types.ModuleType("torch.onnx._internal.registration")
    stand_in.registry = None
    sys.modules.setdefault("torch.onnx._internal.registration", stand_in)
    export = torch.onnx.export
    torch.onnx.export = lambda *a, **kw: export(*a, **{"dynamo": False, **kw})


def crypten_side(spec_path, rank, world, provider, out):
    """One CrypTen process: party `rank` of `world`, or the TTP (rank == world)."""
    import copy
    import warnings

    warnings.filterwarnings("ignore")
    patch_crypten_imports()
    import crypten
    import crypten.communicator as comm

    crypten.cfg.config.mpc.provider = provider
    crypten.cfg.config.communicator.verbose = True
    crypten.init()
    if rank == world:  # the trusted third party: serves until party 0 says terminate
        crypten.mpc.provider.TTPServer()
        return
    spec = torch.load(spec_path, weights_only=False)
    row, x = spec["row"], spec["input"]
    if row.startswith("CNN"):
        from mnist_cnn import SeedCNN, set_weights

        model = set_weights(SeedCNN(), spec["weights"])
        plain = crypten.nn.from_pytorch(model, torch.zeros_like(x))

        def compute():
            m = copy.deepcopy(plain)
            t0 = time.perf_counter()
            m.encrypt(src=0)
            return t0, (m(crypten.cryptensor(x, src=1)),)
    else:
        def compute():
            t0 = time.perf_counter()
            return t0, CT_OPS[row](crypten.cryptensor(x, src=1))
    times, stats, err = [], [], None
    for i in range(spec["runs"] + 1):
        comm.get().barrier()
        comm.get().reset_communication_stats()
        t0, ys = compute()
        outs = [y.get_plain_text(dst=1) for y in ys]
        t = time.perf_counter() - t0
        s = comm.get().get_communication_stats()
        if i:  # the first run is the warm-up
            times.append(t)
            stats.append({"rounds": s["rounds"], "bytes": s["bytes"]})
    if rank == 1:
        err = max((o.float() - w.float()).abs().max().item() for o, w in zip(outs, spec["want"]))
    crypten.uninit()
    Path(out).write_text(json.dumps({"rank": rank, "times": times, "stats": stats, "max_abs_err": err}))


def venv_python(venv) -> Path:
    return Path(venv) / "bin" / "python"


def run_crypten_row(py, row, parties, x, want, weights, runs, provider, tmp, timeout=900):
    """Start the parties and the TTP for one row; their results merged (per run: the slowest party)."""
    tmp = Path(tmp) / f"{row.split()[0]}_{row.split()[-1]}_{parties}p".replace("+", "")
    tmp.mkdir()
    spec = tmp / "spec.pt"
    torch.save({"row": row, "input": x, "want": want, "weights": weights, "runs": runs}, spec)
    ranks = range(parties + (provider == "TTP"))
    env = {**os.environ, "WORLD_SIZE": str(parties), "DISTRIBUTED_BACKEND": "gloo",
           "RENDEZVOUS": f"file://{tmp / 'rendezvous'}"}
    if Path("/sys/class/net/lo").exists():
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    procs = [subprocess.Popen([str(py), __file__, "--crypten-side", str(spec), "--rank", str(r),
                               "--world", str(parties), "--crypten-provider", provider, "--out",
                               str(tmp / f"rank{r}.json")], env={**env, "RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in ranks]
    deadline, logs = time.monotonic() + timeout, []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            return {"error": f"timed out after {timeout} s"}
    if any(p.returncode for p in procs):
        tail = next(log for p, log in zip(procs, logs) if p.returncode).strip().splitlines()
        return {"error": tail[-1] if tail else "a party failed", "log": logs}
    res = [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(parties)]
    times = [max(r["times"][i] for r in res) for i in range(runs)]
    # with the TTP, party 0's stats include its requests to the TTP: the parties' own
    # exchanges are those of the others (the table's), party 0's are beside them
    peers = [r["stats"][-1] for r in res if r["rank"] or provider != "TTP"]
    return {
        "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
        "rounds": max(s["rounds"] for s in peers), "mib_sent_max": max(s["bytes"] for s in peers) / MIB,
        "rounds_party0": res[0]["stats"][-1]["rounds"], "mib_party0": res[0]["stats"][-1]["bytes"] / MIB,
        "per_party": {r["rank"]: r["stats"][-1] for r in res}, "max_abs_err": res[1]["max_abs_err"],
        "provider": provider,
    }


def setup(venv):
    venv = Path(venv)
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = str(venv_python(venv))
    subprocess.run([py, "-m", "pip", "install", "--no-deps", "crypten==0.4.1"], check=True)
    subprocess.run([py, "-m", "pip", "install", "omegaconf"], check=True)
    check = f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import bench_crypten as b; " \
            "b.patch_crypten_imports(); import crypten; print('crypten', crypten.__version__, 'imports')"
    subprocess.run([py, "-c", check], check=True)
    print("(pip's complaints about CrypTen's other requirements, torchvision and the like, are expected: "
          "nothing run here imports them)")


# ---------------------------------------------------------------- the planc side, and the table

def fmt_t(r):
    if "median_s" not in r:
        return f"{'-':>8} {'-':>7} {'-':>7}"
    return f"{r['median_s']:8.3f} {r['min_s']:7.3f} {r['max_s']:7.3f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setup", action="store_true", help="create the side venv with CrypTen and exit")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", default=None, help="rows whose name contains this")
    ap.add_argument("--parties", default="2,3")
    ap.add_argument("--venv", default=str(DEFAULT_VENV))
    ap.add_argument("--comms", default="tls,gloo", help="planc's transports (comma-separated)")
    ap.add_argument("--crypten-provider", default="TTP", choices=("TTP", "TFP"))
    ap.add_argument("--objective", choices=("rounds", "bytes", "time"), default=None,
                    help="planc's plans compiled with this objective (rounds: the one-round fss comparisons, "
                         "2 parties); default: the default pipeline")
    ap.add_argument("--json", default=None)
    ap.add_argument("--crypten-side", metavar="SPEC", help=argparse.SUPPRESS)
    ap.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--world", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.crypten_side:
        return crypten_side(a.crypten_side, a.rank, a.world, a.crypten_provider, a.out)
    if a.setup:
        return setup(a.venv)

    import planc
    from bench_mpc import make_plan
    from bench_runtime import OPS, op_data, op_plan, run
    from mnist_cnn import SeedCNN, set_weights, trained_weights
    from planc.datasets import load_mnist

    py = venv_python(a.venv)
    if not py.exists():
        print(f"no CrypTen venv at {a.venv}: set it up with\n    python {Path(__file__).relative_to(ROOT)} --setup"
              f"{'' if a.venv == str(DEFAULT_VENV) else ' --venv ' + a.venv}\nrunning planc's rows only.\n")
        py = None
    torch.manual_seed(0)
    weights = trained_weights()
    model = set_weights(SeedCNN(), weights)
    images = load_mnist()[0][8000:]
    parties = [int(n) for n in a.parties.split(",")]
    comms = a.comms.split(",")
    work = []  # (row, n, planc plan, planc data, CrypTen input, PyTorch's output)
    for batch in CNN_BATCHES:
        for n in parties:
            if a.only is None or a.only in f"CNN batch {batch}":
                with torch.no_grad():
                    want = (model(images[:batch]),)
                work.append((f"CNN batch {batch}", n, lambda n=n, b=batch: planc.compile(make_plan(n, b, model), objective=a.objective),
                             {"alice": planc.weights_of(model, "cnn"), "bob": {"mnist/test": images[:batch]}},
                             images[:batch], want))
    for name in OPS:
        if a.only is not None and a.only not in name:
            continue
        data = op_data(name)
        x = data["bob"]["x"]
        out = OPS[name][0](x)
        for n in parties:
            work.append((name, n, lambda n=n, name=name: op_plan(name, n, a.objective), data, x,
                         out if isinstance(out, tuple) else (out,)))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_crypten") as tmp:
        for row, n, plan, data, x, want in work:
            ct = run_crypten_row(py, row, n, x, want, weights, a.runs, a.crypten_provider, tmp) if py else {}
            if ct.get("error"):
                print(f"CrypTen {row}, {n} parties: {ct['error']}", file=sys.stderr)
            p = plan()
            pl = {comm: run(p, data, a.runs, comm) for comm in comms}
            rows.append({"row": row, "parties": n, "crypten": ct, "planc": pl})
            print(f"done: {row}, {n} parties", file=sys.stderr, flush=True)
    print(f"CrypTen: {f'provider {a.crypten_provider}, gloo' if py else 'not run'}; planc: online phase of the "
          f"slowest party. Times in s over {a.runs} runs; ratio: CrypTen / planc; MiB: the busiest party's.")
    print(f"{'row':17} {'n':>1} {'comm':4} {'CrypTen s  med     min     max':>24}  "
          f"{'planc s  med     min     max':>24} "
          f"{'ratio':>6} {'rounds C/p':>10} {'MiB/party C/p':>15} {'dealer MiB':>10}")
    for r in rows:
        ct = r["crypten"]
        for comm, pl in r["planc"].items():
            ratio = f"{ct['median_s'] / pl['median_s']:6.1f}" if "median_s" in ct else f"{'-':>6}"
            rounds = f"{ct.get('rounds', '-')}/{pl['rounds']}"
            mib = f"{ct['mib_sent_max']:.1f}" if "mib_sent_max" in ct else "-"
            mib = f"{mib}/{pl['mib_sent_max']:.1f}"
            print(f"{r['row']:17} {r['parties']:>1} {comm:4} {fmt_t(ct)}  {fmt_t(pl)} {ratio} {rounds:>10} {mib:>15} "
                  f"{pl['dealer_mib']:10.1f}")
    if a.json:
        for r in rows:
            r["crypten"].pop("log", None)
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
