"""Train the seed CNN of examples/mnist_cnn.py and write examples/weights/mnist_cnn.safetensors.

Plain PyTorch, no planc involved: the data owner's ordinary training. The MNIST files
here are the official 10,000-image test set; the first 8,000 train, the last 2,000 are
held out and never seen in training (`planc.datasets.mnist(split="train" / "eval")`).

    python examples/train_mnist_cnn.py              # ~1 min on one core; prints accuracy and sha256
    python examples/train_mnist_cnn.py -o /tmp/w.safetensors

Reproducible: the seed is fixed, batches and shifts come from one seeded generator and
training runs on one CPU thread, so the same torch version writes the same bytes.
Recipe: AdamW (weight decay 1e-4), one-cycle learning rate up to 1e-2, 30 epochs of
batches of 64, each batch shifted by up to 2 pixels (the same shift for the whole batch).
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from planc.datasets import mnist
from planc.weights import export_weights

HERE = Path(__file__).resolve().parent
SEED, EPOCHS, BATCH, LR, WEIGHT_DECAY, SHIFT = 0, 30, 64, 1e-2, 1e-4, 2


def train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, epochs: int = EPOCHS,
          seed: int = SEED, log=print) -> nn.Module:
    """Train `model` in place, deterministically; returns it in eval mode."""
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # results depend on how reductions are split across threads
    try:
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        steps = epochs * ((len(images) + BATCH - 1) // BATCH)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps)
        t0 = time.perf_counter()
        for epoch in range(epochs):
            model.train()
            perm = torch.randperm(len(images), generator=gen)
            total = 0.0
            for i in range(0, len(images), BATCH):
                idx = perm[i:i + BATCH]
                x = images[idx]
                if SHIFT:
                    dx, dy = torch.randint(0, 2 * SHIFT + 1, (2,), generator=gen).tolist()
                    x = F.pad(x, (SHIFT,) * 4)[:, :, dy:dy + 28, dx:dx + 28]
                opt.zero_grad()
                loss = F.cross_entropy(model(x), labels[idx])
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
            if log and (epoch % 5 == 4 or epoch == epochs - 1):
                log(f"epoch {epoch + 1:2d}/{epochs}: training loss {total / len(images):.4f} "
                    f"({time.perf_counter() - t0:.0f} s)")
    finally:
        torch.set_num_threads(saved_threads)
    return model.eval()


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(images).argmax(1) == labels).float().mean().item()


def main(argv=None):
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    from mnist_cnn import TAG, WEIGHTS, SeedCNN

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", default=str(WEIGHTS), help="where to write the weights (safetensors)")
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    a = ap.parse_args(argv)

    images, labels = mnist(split="train")
    held_out, truth = mnist(split="eval")
    torch.manual_seed(SEED)  # the initial weights
    model = train(SeedCNN(), images, labels, epochs=a.epochs)
    export_weights(model, TAG, a.out)
    digest = hashlib.sha256(Path(a.out).read_bytes()).hexdigest()
    print(f"accuracy: {accuracy(model, images, labels):.2%} on the 8,000 training images, "
          f"{accuracy(model, held_out, truth):.2%} on the 2,000 held out")
    print(f"wrote {a.out}  sha256 {digest}")
    return model


if __name__ == "__main__":
    main()
