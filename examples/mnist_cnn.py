"""Private MNIST prediction with the seed CNN of the PySyft/Keras demo.

alice holds the model's weights, bob holds a batch of test images; the plan reveals
only the logits, and only to bob. Run it:

    python examples/mnist_cnn.py            # trace, save, run privately, compare with PyTorch
    python examples/mnist_cnn.py --images 200   # fewer held-out images
    planc trace examples/mnist_cnn.py:encrypted_inference -o mnist.plan

The weights in examples/weights/ come from examples/train_mnist_cnn.py (30 epochs on the first 8,000
test images, deterministic; `--train` redoes it); the last 2,000 are held out (98 % accuracy).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file

import planc
from planc.datasets import load_mnist
from planc.weights import weights_of

BATCH = 100
TAG = "cnn"
WEIGHTS = Path(__file__).resolve().parent / "weights" / "mnist_cnn.safetensors"


class SeedCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3), nn.AvgPool2d(2), nn.ReLU(),
            nn.Conv2d(16, 32, 3), nn.AvgPool2d(2), nn.ReLU(),
            nn.Conv2d(32, 64, 3), nn.AvgPool2d(2), nn.ReLU(),
            nn.Flatten(),
        )
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(self.features(x))


# The architecture is public; the weights stay with alice. Tracing never reads them.
model = SeedCNN().eval()


@planc.plan(parties=["alice", "bob"])
def encrypted_inference():
    images = planc.load("mnist/test", owner="bob", shape=(BATCH, 1, 28, 28))
    net = planc.owned(model, owner="alice", tag=TAG)
    logits = net(images)
    return planc.reveal(logits, to="bob")


def trained_weights(retrain: bool = False) -> dict[str, torch.Tensor]:
    """alice's tensors by tag: read from examples/weights, or trained afresh
    (examples/train_mnist_cnn.py, about a minute)."""
    if retrain or not WEIGHTS.exists():
        import sys

        if str(WEIGHTS.parents[1]) not in sys.path:
            sys.path.insert(0, str(WEIGHTS.parents[1]))
        import train_mnist_cnn

        train_mnist_cnn.main(["-o", str(WEIGHTS)])
    return load_file(str(WEIGHTS))


def set_weights(m: nn.Module, weights: dict[str, torch.Tensor]):
    m.load_state_dict({k.split("/", 1)[1]: v for k, v in weights.items()})
    return m.eval()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", action="store_true", help="retrain the weights first (train_mnist_cnn.py, ~1 min)")
    ap.add_argument("-o", "--out", default="out/mnist_cnn.plan", help="where to save the plan")
    ap.add_argument("--images", type=int, default=2000, help="held-out images to classify privately (<= 2000)")
    ap.add_argument("--parties", type=int, default=2, choices=(2, 3), help="computing parties (3: carol helps)")
    args = ap.parse_args(argv)

    weights = trained_weights(args.train)
    set_weights(model, weights)
    try:
        images, labels = load_mnist()
    except (FileNotFoundError, ValueError) as e:  # no data set beside the checkout: say so, no traceback
        raise SystemExit(f"mnist_cnn.py: {e}") from None
    held_out, truth = images[8000:], labels[8000:]

    t0 = time.perf_counter()
    plan = encrypted_inference.plan
    if args.parties == 3:
        plan = planc.trace(encrypted_inference.fn, parties=["alice", "bob", "carol"], name="encrypted_inference")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    plan.save(args.out)
    plan = planc.Plan.read(args.out)
    print(f"traced and saved {args.out} in {time.perf_counter() - t0:.2f} s, sha256 {plan.sha256()[:16]}…")

    # each party's own data, by tag; nothing else goes in
    alice = weights_of(model, TAG)
    batch = held_out[:BATCH]
    (ref,) = planc.run_reference(plan, data={"alice": alice, "bob": {"mnist/test": batch}})
    with torch.no_grad():
        expected = model(batch)
    print(f"reference runtime: max |logits - PyTorch| = {(ref - expected).abs().max().item():.2e} on {BATCH} images")

    n = min(args.images, len(held_out)) // BATCH * BATCH
    agree = correct = 0
    err = 0.0
    took, rounds, sent = [], 0, 0
    for i in range(0, n, BATCH):
        x = held_out[i:i + BATCH]
        t0 = time.perf_counter()
        res = planc.run_local(plan, {"alice": alice, "bob": {"mnist/test": x}})
        took.append(time.perf_counter() - t0)
        logits = res.outputs["bob"][0]  # only bob holds them; alice's entry is None
        with torch.no_grad():
            want = model(x)
        err = max(err, (logits - want).abs().max().item())
        agree += (logits.argmax(1) == want.argmax(1)).sum().item()
        correct += (logits.argmax(1) == truth[i:i + BATCH]).sum().item()
        rounds, sent = res.stats["alice"]["rounds"], max(s["bytes_sent"] for p, s in res.stats.items() if p != "dealer")
    if n:
        print(f"private inference ({args.parties} parties, batches of {BATCH}): {n} held-out images, "
              f"argmax agreement with PyTorch {agree / n:.2%}, accuracy {correct / n:.1%}, "
              f"max |logits - PyTorch| = {err:.2e}")
        print(f"per batch: median {sorted(took)[len(took) // 2] * 1000:.0f} ms, {rounds} rounds, "
              f"{sent / 2 ** 20:.1f} MiB sent by the busiest party")
    return err


if __name__ == "__main__":
    main()
