"""Private training: one SGD step, 2 parties, batch 64, next to CrypTen's figures (issue 11).

    python benchmarks/bench_training.py [--runs 5] [--comms threads,tls] [--json out/bench_training.json]

Workloads (the plans are `training_plans()`, which tests/test_training_cost.py pins):

* logistic regression, as CrypTen's benchmark model is (crypten benchmarks/models.py:
  Linear(n_features, 1) then sigmoid, binary cross-entropy): 784 features (an MNIST image
  flattened) -> 1 logit, the loss F.binary_cross_entropy_with_logits (the same function,
  in its stable form), a step of plain SGD. Weights and bias start private to alice, the
  features and labels are bob's.
* the seed CNN (examples/mnist_cnn.py: 3 x conv 3x3 / avg-pool 2 / relu, linear 64 -> 10)
  with F.cross_entropy on class indices, a step of plain SGD. Weights private to alice
  (the trained weights of examples/weights), MNIST images and labels at bob.

Both steps differentiate with planc.value_and_grad and update with planc.optim.sgd; the
new weights (secret during the step) and the loss are revealed to alice. Every plan is
compiled with the default pipeline.

Time: "threads" is the wall time of a whole run in one process (dealer batch + online);
"tls" / "gloo" run one process per party (run_local(processes=True), the communicator kind
CrypTen measures with), and the time is the online phase of the slowest party after the
dealer's batch arrived (process start-up, ~2 s of importing torch, is not the step's cost;
the wall time including it is in the JSON). median / min / max over --runs after one
warm-up. Rounds and MiB sent: the busiest party, measured (the cost model's prediction is
checked equal). Dealer MiB: the material the dealer sent. Peak memory: the cost model's
upper estimate per party and for the dealer (runtime/bounds.py), not a measured RSS.

Plan sizes: the same step as one plan, and one epoch (8,000 images = 125 minibatches of
64; logistic regression likewise) as planc.scan over minibatches, one loop: nodes and
plan-file bytes.
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

import planc  # noqa: E402

BATCH, FEATURES, EPOCH_BATCHES, LR = 64, 784, 125, 0.05
MIB = 2 ** 20
# issue 11: CrypTen 0.4.1, 2 parties, batch 64, one SGD step, measured: (s, rounds, MiB per party)
CRYPTEN = {"logreg": (0.34, 83, 2.1), "cnn": (2.36, 252, 234)}
TARGETS = {"logreg": (0.07, None, None), "cnn": (0.45, 100, 50)}
CNN_PARAMS = ("features.0.weight", "features.0.bias", "features.3.weight", "features.3.bias",
              "features.6.weight", "features.6.bias", "fc.weight", "fc.bias")
CNN_SHAPES = ((16, 1, 3, 3), (16,), (32, 16, 3, 3), (32,), (64, 32, 3, 3), (64,), (10, 64), (10,))


def cnn(ps, x):
    """The seed CNN of examples/mnist_cnn.py as a function of its parameters."""
    w1, b1, w2, b2, w3, b3, wf, bf = ps
    h = F.relu(F.avg_pool2d(F.conv2d(x, w1, b1), 2))
    h = F.relu(F.avg_pool2d(F.conv2d(h, w2, b2), 2))
    h = F.relu(F.avg_pool2d(F.conv2d(h, w3, b3), 2))
    return F.linear(h.flatten(1), wf, bf)


def cnn_step(ps, x, y):
    loss, grads = planc.value_and_grad(lambda *p: F.cross_entropy(cnn(p, x), y), argnums=tuple(range(8)))(*ps)
    new, _ = planc.optim.sgd(tuple(ps), grads, (), lr=LR)
    return new, loss


def logreg_step(ps, x, y):
    loss, grads = planc.value_and_grad(
        lambda w, b: F.binary_cross_entropy_with_logits(F.linear(x, w, b).squeeze(1), y), argnums=(0, 1))(*ps)
    new, _ = planc.optim.sgd(tuple(ps), grads, (), lr=LR)
    return new, loss


def _specs(kind, batches=None):
    lead = () if batches is None else (batches,)
    if kind == "cnn":
        params = [planc.load(f"cnn/{n}", owner="alice", shape=s) for n, s in zip(CNN_PARAMS, CNN_SHAPES)]
        data = [planc.load("x", owner="bob", shape=lead + (BATCH, 1, 28, 28)),
                planc.load("y", owner="bob", shape=lead + (BATCH,), dtype="int64")]
    else:
        params = [planc.load("w", owner="alice", shape=(1, FEATURES)), planc.load("b", owner="alice", shape=(1,))]
        data = [planc.load("x", owner="bob", shape=lead + (BATCH, FEATURES)),
                planc.load("y", owner="bob", shape=lead + (BATCH,))]
    return params, data


def step_plan(kind):
    """One SGD step of `kind` ("logreg" or "cnn"), compiled."""
    step = cnn_step if kind == "cnn" else logreg_step
    params, data = _specs(kind)
    k = len(params)

    def train(*args):
        new, loss = step(list(args[:k]), *args[k:])
        return tuple(planc.reveal(p, to="alice") for p in new) + (planc.reveal(loss, to="alice"),)

    return planc.compile(planc.trace(train, *params, *data, parties=["alice", "bob"], name=f"{kind}_step"))


def epoch_plan(kind, batches=EPOCH_BATCHES):
    """One epoch of `kind`: planc.scan of the step over `batches` minibatches, compiled."""
    step = cnn_step if kind == "cnn" else logreg_step
    params, data = _specs(kind, batches)
    k = len(params)

    def train(*args):
        def body(carry, batch):
            new, loss = step(list(carry), *batch)
            return tuple(new), loss

        final, losses = planc.scan(body, tuple(args[:k]), tuple(args[k:]))
        return tuple(planc.reveal(p, to="alice") for p in final) + (planc.reveal(losses, to="alice"),)

    return planc.compile(planc.trace(train, *params, *data, parties=["alice", "bob"], name=f"{kind}_epoch"))


def training_plans():
    return {"logreg": step_plan("logreg"), "cnn": step_plan("cnn")}


def step_data(kind):
    from planc.datasets import load_mnist

    images, labels = load_mnist()
    x, y = images[:BATCH], labels[:BATCH]
    if kind == "cnn":
        from mnist_cnn import SeedCNN, set_weights, trained_weights

        model = set_weights(SeedCNN(), trained_weights())
        return {"alice": planc.weights_of(model, "cnn"), "bob": {"x": x, "y": y}}
    torch.manual_seed(0)
    lin = torch.nn.Linear(FEATURES, 1)
    return {"alice": {"w": lin.weight.detach(), "b": lin.bias.detach()},
            "bob": {"x": x.reshape(BATCH, FEATURES), "y": (y % 2).float()}}


def run(plan, data, runs, comm):
    processes = comm != "threads"
    kw = {"processes": True, "transport": comm} if processes else {}
    planc.run_local(plan, data, **kw)  # warm-up
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
        "mib_sent_max": max(res.stats[p]["bytes_sent"] for p in parties) / MIB,
        "dealer_mib": res.stats["dealer"]["dealer_bytes"] / MIB,
    }, res


def check(kind, plan, res, data):
    """The step's new weights against torch's (plaintext) step: max |difference|."""
    got = res.outputs["alice"]
    if kind == "cnn":
        ps = [data["alice"][f"cnn/{n}"].clone().requires_grad_() for n in CNN_PARAMS]
        loss = F.cross_entropy(cnn(ps, data["bob"]["x"]), data["bob"]["y"])
    else:
        ps = [data["alice"]["w"].clone().requires_grad_(), data["alice"]["b"].clone().requires_grad_()]
        loss = F.binary_cross_entropy_with_logits(F.linear(data["bob"]["x"], *ps).squeeze(1), data["bob"]["y"])
    loss.backward()
    want = [p.detach() - LR * p.grad for p in ps]
    return max((g - w).abs().max().item() for g, w in zip(got, want)), abs(got[-1].item() - loss.item())


def size(plan):
    return sum(1 for _ in plan.graph.walk()), len(plan.to_bytes())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--comms", default="threads,tls",
                    help="threads, and one process per party over tls or gloo (comma-separated)")
    ap.add_argument("--only", default=None, help="logreg or cnn")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    kinds = [k for k in ("logreg", "cnn") if a.only in (None, k)]
    rows, sizes = [], []
    for kind in kinds:
        plan = step_plan(kind)
        cost = plan.cost()
        data = step_data(kind)
        for comm in a.comms.split(","):
            r, res = run(plan, data, a.runs, comm)
            assert r["rounds"] == cost.rounds, (r["rounds"], cost.rounds)
            werr, lerr = check(kind, plan, res, data)
            rows.append({"workload": kind, "comm": comm if comm == "threads" else f"procs/{comm}", **r,
                         "predicted_rounds": cost.rounds,
                         "predicted_mib_sent_max": max(c.bytes_sent for c in cost.merged.values()) / MIB,
                         "peak_mib_party": max(cost.peak_bytes.values()) / MIB,
                         "peak_mib_dealer": cost.dealer_peak_bytes / MIB,
                         "max_weight_err": werr, "loss_err": lerr})
        ep = epoch_plan(kind)
        sizes.append((kind, size(plan), size(ep)))
    print(f"{'workload':8} {'comm':10} {'median s':>8} {'min s':>6} {'max s':>6} {'rounds':>6} {'MiB/party':>9} "
          f"{'dealer MiB':>10} {'peak MiB p/d':>13} {'|dw|':>8}  target | CrypTen")
    for r in rows:
        t, c = TARGETS[r["workload"]], CRYPTEN[r["workload"]]
        tgt = f"<= {t[0]} s" + (f", <= {t[1]} rounds" if t[1] else "") + (f", <= {t[2]} MiB" if t[2] else "")
        peak = f"{r['peak_mib_party']:.0f}/{r['peak_mib_dealer']:.0f}"
        print(f"{r['workload']:8} {r['comm']:10} {r['median_s']:8.3f} {r['min_s']:6.3f} {r['max_s']:6.3f} "
              f"{r['rounds']:>6} {r['mib_sent_max']:9.2f} {r['dealer_mib']:10.2f} {peak:>13} "
              f"{r['max_weight_err']:8.1e}  {tgt} | {c[0]} s, {c[1]} rounds, {c[2]} MiB")
    print("time: threads = whole run's wall time; procs = online phase of the slowest party (one process each). "
          "peak: the cost model's upper estimate (party / dealer), not RSS.")
    print(f"\n{'plan':8} {'1 step: nodes':>14} {'bytes':>9} {'1 epoch (' + str(EPOCH_BATCHES) + ' steps, scan): nodes':>34} "
          f"{'bytes':>9}")
    for kind, (n1, b1), (ne, be) in sizes:
        print(f"{kind:8} {n1:>14} {b1:>9} {ne:>34} {be:>9}")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"rows": rows, "sizes": sizes}, indent=2))


if __name__ == "__main__":
    main()
