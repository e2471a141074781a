"""Data labeling: the seed CNN trained privately on images at one party, labels at another.

bob holds MNIST images, carol holds their labels (class indices); neither sees the other's
data. The seed CNN of examples/mnist_cnn.py starts from a public agreed init (torch's
default init under a fixed seed; `--init alice`: alice's pretrained weights,
examples/weights/, held private<alice> and fine-tuned), is secret during training, and
is trained with SGD (batch 64) by planc.scan over the minibatches: one epoch is one
`loop` node. At the end the weights and the per-batch losses are revealed to alice
(`--keep-shared`: the weights stay secret-shared, each party holding its shares). Then
both models (private, and torch's plaintext training of the same) are evaluated on the
last 2,000 test images. Run it:

    python examples/train_data_labeling.py                 # one epoch on the first 8,000 images
    python examples/train_data_labeling.py --images 640    # a shorter run
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import planc
from planc.ir.policy import GiB, Policy

try:
    from mnist_cnn import SeedCNN, trained_weights
except ImportError:  # imported as a file (tests): examples/ is not on the path
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from mnist_cnn import SeedCNN, trained_weights

BATCH, SEED, TAG = 64, 0, "cnn"
# SGD with momentum; the rate decays linearly to 0 over the epoch, one public rate per step
# (a row of the scanned xs). Without the decay the last steps' noise decides the final
# accuracy: in plaintext torch alone a 2^-16 change of the init moves it by 3-20 points.
LR, MOMENTUM = 0.1, 0.9
MEAN, STD = 0.1307, 0.3081  # bob standardizes his images with MNIST's public mean and std
NAMES = ["features.0.weight", "features.0.bias", "features.3.weight", "features.3.bias",
         "features.6.weight", "features.6.bias", "fc.weight", "fc.bias"]


def init_weights(seed=SEED) -> list[torch.Tensor]:
    """The agreed public init: He (Kaiming normal, fan-in, for ReLU) weights and zero biases
    under a fixed seed, rounded to 16 fractional bits."""
    torch.manual_seed(seed)
    m = SeedCNN()
    for mod in m.modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
            torch.nn.init.zeros_(mod.bias)
    sd = m.state_dict()
    return [torch.round(sd[k] * 2 ** 16) / 2 ** 16 for k in NAMES]


def rates(steps: int) -> torch.Tensor:
    """The public per-step learning rates: LR decaying linearly to 0 over the steps."""
    r = LR * (1 - torch.arange(steps, dtype=torch.float64) / steps)
    return (torch.round(r * 2 ** 16) / 2 ** 16).float()  # as the fixed point holds them


def forward(ps, x):
    """SeedCNN as a function of its parameters (the same ops as the module)."""
    c1w, c1b, c2w, c2b, c3w, c3b, fw, fb = ps
    x = F.relu(F.avg_pool2d(F.conv2d(x, c1w, c1b), 2))
    x = F.relu(F.avg_pool2d(F.conv2d(x, c2w, c2b), 2))
    x = F.relu(F.avg_pool2d(F.conv2d(x, c3w, c3b), 2))
    return F.linear(x.flatten(1), fw, fb)


def make_train(start, reveal_to="alice"):
    """The traced training: `start(...)` gives the initial parameters (public constants or
    alice's loads); images [batches, 64, 1, 28, 28] at bob, labels [batches, 64] at carol."""

    def train(images, labels):
        ps0 = start()

        def step(carry, batch):
            x, y, lr = batch
            ps, state = carry[:len(NAMES)], carry[len(NAMES):]
            loss, grads = planc.value_and_grad(lambda *p: F.cross_entropy(forward(p, x), y),
                                               argnums=tuple(range(len(NAMES))))(*ps)
            ps, state = planc.optim.sgd(tuple(ps), grads, tuple(state), lr=lr, momentum=MOMENTUM)
            return (*ps, *state), loss

        carry, losses = planc.scan(step, (*ps0, *planc.optim.sgd_init(tuple(ps0), MOMENTUM)),
                                   (images, labels, rates(images.shape[0])))
        ws = carry[:len(NAMES)]
        if reveal_to is None:  # kept secret-shared: each party gets its shares
            return (*ws, planc.reveal(losses, to="alice"))
        return (*(planc.reveal(w, to=reveal_to) for w in ws), planc.reveal(losses, to=reveal_to))

    return train


def public_start(seed=SEED):
    ws = init_weights(seed)
    return lambda: list(ws)


def alice_start():
    ws = init_weights()
    return lambda: [planc.load(f"{TAG}/{k}", owner="alice", shape=tuple(w.shape)) for k, w in zip(NAMES, ws)]


def trace(batches, init="public", reveal_to="alice"):
    start = public_start() if init == "public" else alice_start()
    return planc.trace(make_train(start, reveal_to),
                       planc.load("images", owner="bob", shape=(batches, BATCH, 1, 28, 28)),
                       planc.load("labels", owner="carol", shape=(batches, BATCH), dtype="int64"),
                       parties=["alice", "bob", "carol"], name="train_data_labeling")


def torch_train(ws, images, labels):
    ps = [w.clone().requires_grad_(True) for w in ws]
    opt = torch.optim.SGD(ps, lr=LR, momentum=MOMENTUM)
    losses = []
    for x, y, lr in zip(images, labels, rates(len(images))):
        opt.param_groups[0]["lr"] = lr.item()
        opt.zero_grad()
        loss = F.cross_entropy(forward(ps, x), y)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return [p.detach() for p in ps], torch.stack(losses)


@torch.no_grad()
def accuracy(ws, images, labels):
    return (forward(ws, images).argmax(1) == labels).float().mean().item()


# The dealer's material travels in chunks (runtime/material.py), so its total is no
# memory bound — the dealer and carol hold about two chunks (under 1 GiB) — but it is
# still traffic to carol, which the default policy caps at 8 GiB. An epoch needs 8.4
# GiB: this example asks for 16 GiB; its other limits are the default's.
POLICY = Policy(name="train_data_labeling", max_dealer_bytes=16 * GiB)


def main(images=8000, init="public", processes=False, keep_shared=False, eval_images=2000, log=print):
    from planc.datasets import load_mnist

    try:
        all_x, all_y = load_mnist()
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"train_data_labeling.py: {e}") from None
    all_x = (all_x - MEAN) / STD  # bob's own preprocessing, before anything is shared
    nb = min(images, 8000) // BATCH
    x = all_x[:nb * BATCH].reshape(nb, BATCH, 1, 28, 28)
    y = all_y[:nb * BATCH].reshape(nb, BATCH)
    ex, ey = all_x[10000 - eval_images:], all_y[10000 - eval_images:]
    ws0 = init_weights() if init == "public" else [trained_weights()[f"{TAG}/{k}"] for k in NAMES]

    t0 = time.perf_counter()
    plan = trace(nb, init, None if keep_shared else "alice")
    traced = time.perf_counter() - t0
    data = {"bob": {"images": x}, "carol": {"labels": y}}
    if init == "alice":
        data["alice"] = {f"{TAG}/{k}": w for k, w in zip(NAMES, ws0)}
    t0 = time.perf_counter()
    from planc.runtime.admission import AdmissionError

    try:
        res = planc.run_local(plan, data, processes=processes, policy=POLICY)
    except AdmissionError as e:
        raise SystemExit(f"train_data_labeling.py: {e}\n(about 70 MiB of dealer material per step; "
                         f"try --images 2000)") from None
    took = time.perf_counter() - t0
    out = res.outputs["alice"]
    if keep_shared:
        ws = None
        losses = out[-1]
    else:
        ws, losses = list(out[:-1]), out[-1]
    tws, tl = torch_train(ws0, x, y)

    nodes = sum(1 for _ in plan.graph.walk())
    loops = sum(1 for n in plan.graph.walk() if n.op == "loop")
    st = res.stats
    rounds = st["alice"]["rounds"]
    sent = max(s["bytes_sent"] for p, s in st.items() if p != "dealer")
    log(f"{nb} minibatches of {BATCH} ({nb * BATCH} images at bob, labels at carol), init {init}; plan: "
        f"{nodes} nodes, {loops} loop, traced in {traced:.1f} s")
    log(f"private epoch {took:.1f} s ({took / nb:.2f} s per step incl. dealer), {rounds / nb:.0f} rounds and "
        f"{sent / nb / 2 ** 20:.1f} MiB per step (busiest party)")
    picks = sorted({0, nb // 4, nb // 2, 3 * nb // 4, nb - 1})
    log("loss at steps    " + "  ".join(f"{i}: {losses[i].item():.4f}/{tl[i].item():.4f}" for i in picks)
        + "   (private/torch)")
    rep = {"steps": nb, "seconds": took, "losses": losses, "torch_losses": tl,
           "acc_torch": accuracy(tws, ex, ey), "rounds": rounds, "bytes": sent}
    if ws is not None:
        rep["weights"], rep["torch_weights"] = ws, tws
        rep["acc_private"] = accuracy(ws, ex, ey)
        rep["max_dw"] = max((a - b).abs().max().item() for a, b in zip(ws, tws))
        log(f"accuracy on the last {len(ey)}: private {100 * rep['acc_private']:.2f} %, plaintext torch "
            f"{100 * rep['acc_torch']:.2f} % ({100 * (rep['acc_private'] - rep['acc_torch']):+.2f} points); "
            f"max |w - torch| {rep['max_dw']:.1e}")
    else:
        log(f"weights kept secret-shared (plaintext torch reaches {100 * rep['acc_torch']:.2f} %)")
    return rep


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=8000, help="training images (the first N, <= 8000)")
    ap.add_argument("--init", choices=("public", "alice"), default="public",
                    help="public agreed init, or alice's pretrained private weights")
    ap.add_argument("--processes", action="store_true", help="one process per party (torch.distributed)")
    ap.add_argument("--keep-shared", action="store_true", help="keep the trained weights secret-shared")
    a = ap.parse_args()
    main(a.images, a.init, a.processes, a.keep_shared)
