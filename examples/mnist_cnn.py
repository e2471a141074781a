"""Private MNIST prediction with the seed CNN of the PySyft/Keras demo.

alice holds the model's weights, bob holds a batch of test images; the plan reveals
only the logits, and only to bob. Run it:

    python examples/mnist_cnn.py            # trace, save, run, compare with PyTorch
    planc trace examples/mnist_cnn.py:encrypted_inference -o mnist.plan

The weights in examples/weights/ come from one epoch of plain training on the first
8,000 test images (`--train` redoes it); the last 2,000 are for evaluation.
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
from planc.weights import export_weights, weights_of

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


def train(m: nn.Module, images, labels, epochs: int = 1, seed: int = 0):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    m.train()
    for _ in range(epochs):
        perm = torch.randperm(len(images))
        for i in range(0, len(images), 32):
            idx = perm[i:i + 32]
            opt.zero_grad()
            nn.functional.cross_entropy(m(images[idx]), labels[idx]).backward()
            opt.step()
    return m.eval()


def trained_weights(retrain: bool = False) -> dict[str, torch.Tensor]:
    """alice's tensors by tag: read from examples/weights, or trained afresh."""
    if retrain or not WEIGHTS.exists():
        images, labels = load_mnist()
        torch.manual_seed(0)
        fresh = train(SeedCNN(), images[:8000], labels[:8000])
        return export_weights(fresh, TAG, WEIGHTS)
    return load_file(str(WEIGHTS))


def set_weights(m: nn.Module, weights: dict[str, torch.Tensor]):
    m.load_state_dict({k.split("/", 1)[1]: v for k, v in weights.items()})
    return m.eval()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", action="store_true", help="retrain the weights (one epoch, 8,000 images)")
    ap.add_argument("-o", "--out", default="out/mnist_cnn.plan", help="where to save the plan")
    args = ap.parse_args(argv)

    weights = trained_weights(args.train)
    set_weights(model, weights)
    images, labels = load_mnist()
    batch, truth = images[-BATCH:], labels[-BATCH:]

    t0 = time.perf_counter()
    plan = encrypted_inference.plan
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    plan.save(args.out)
    print(f"traced and saved {args.out} in {time.perf_counter() - t0:.2f} s, sha256 {plan.sha256()[:16]}…")

    # each party's own data, by tag; nothing else goes in
    data = {"alice": weights_of(model, TAG), "bob": {"mnist/test": batch}}
    t0 = time.perf_counter()
    (logits,) = planc.run_reference(planc.Plan.read(args.out), data=data)
    took = time.perf_counter() - t0
    with torch.no_grad():
        expected = model(batch)
    err = (logits - expected).abs().max().item()
    acc = (logits.argmax(1) == truth).float().mean().item()
    print(f"reference runtime: {BATCH} images in {took * 1000:.1f} ms; max |logits - PyTorch| = {err:.2e}; "
          f"accuracy {acc:.1%}")
    return err


if __name__ == "__main__":
    main()
