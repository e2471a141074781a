"""Dataset augmentation: an MLP trained jointly on rows held by three parties, privately.

Synthetic data from a known generating model (fixed seed): features x ~ N(0, 1)^10 and a
class label y = argmax(teacher(x)) of a fixed random teacher MLP (10 -> 16 tanh -> 3),
with 10 % of the labels flipped to a random class. alice, bob and carol each hold some
rows (features and labels; alice 32, bob and carol 16 of each minibatch of 64). A
student MLP (10 -> 32 ReLU -> 3) starts from a public agreed init and is trained with
SGD (momentum 0.9) by planc.scan over the minibatches: one epoch is one `loop` node.
Each party's rows enter as its own scan input and its labels stay its own (the loss is
the sum of per-party cross-entropies over the batch); the weights are secret during
training and revealed to alice at the end, with the per-batch losses. Prints the final
loss and held-out accuracy next to torch's plaintext training on the same rows, and
what alice would reach on her rows alone.

    python examples/train_augmentation.py              # 1,024 rows, 16 steps
    python examples/train_augmentation.py --batches 64
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import planc

D, H, C, BATCH = 10, 32, 3, 64
SPLIT = {"alice": 32, "bob": 16, "carol": 16}  # rows of each minibatch, by party
OPT = dict(lr=0.2, momentum=0.9)


def _fx(t):
    return torch.round(t * 2 ** 16) / 2 ** 16


def teacher():
    g = torch.Generator().manual_seed(1234)
    return torch.randn(D, 16, generator=g) / D ** 0.5 * 2, torch.randn(16, C, generator=g) * 2


def sample(rows, seed):
    """(x f32[rows, D], y i64[rows]) from the generating model."""
    w1, w2 = teacher()
    g = torch.Generator().manual_seed(seed)
    x = _fx(torch.randn(rows, D, generator=g))
    y = (torch.tanh(x @ w1) @ w2).argmax(1)
    flip = torch.rand(rows, generator=g) < 0.1
    return x, torch.where(flip, torch.randint(0, C, (rows,), generator=g), y)


def data(batches, seed=0):
    """Each party's rows, shaped [batches, its rows per batch, ...]: {party: (x, y)}."""
    out = {}
    for i, (p, k) in enumerate(SPLIT.items()):
        x, y = sample(batches * k, seed * 10 + i)
        out[p] = (x.reshape(batches, k, D), y.reshape(batches, k))
    return out


def init_weights(seed=0):
    """The agreed public init: torch.nn.Linear's default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), seeded."""
    g = torch.Generator().manual_seed(seed)

    def u(*shape, fan_in):
        return _fx((torch.rand(*shape, generator=g) * 2 - 1) / fan_in ** 0.5)

    return [u(H, D, fan_in=D), u(H, fan_in=D), u(C, H, fan_in=H), u(C, fan_in=H)]


def mlp(ps, x):
    w1, b1, w2, b2 = ps
    return F.linear(F.relu(F.linear(x, w1, b1)), w2, b2)


def train(xa, ya, xb, yb, xc, yc):
    ps0 = init_weights()

    def step(carry, batch):
        ps, state = carry[:4], carry[4:]
        parts = [(batch[2 * j], batch[2 * j + 1]) for j in range(3)]

        def loss_fn(*p):  # the batch mean of cross-entropy, each party's labels used where they are
            total = None
            for x, y in parts:
                s = F.cross_entropy(mlp(p, x), y, reduction="sum")
                total = s if total is None else total + s
            return total * (1.0 / BATCH)

        loss, grads = planc.value_and_grad(loss_fn, argnums=(0, 1, 2, 3))(*ps)
        ps, state = planc.optim.sgd(tuple(ps), grads, tuple(state), **OPT)
        return (*ps, *state), loss

    carry, losses = planc.scan(step, (*ps0, *planc.optim.sgd_init(tuple(ps0), OPT["momentum"])),
                               (xa, ya, xb, yb, xc, yc))
    return (*(planc.reveal(w, to="alice") for w in carry[:4]), planc.reveal(losses, to="alice"))


def trace(batches):
    args = []
    for p, k in SPLIT.items():
        args += [planc.load("x", owner=p, shape=(batches, k, D)),
                 planc.load("y", owner=p, shape=(batches, k), dtype="int64")]
    return planc.trace(train, *args, parties=list(SPLIT), name="train_augmentation")


def torch_train(parts, ws=None):
    """Plain torch.optim.SGD on the same minibatches (the parties' rows side by side)."""
    ps = [w.clone().requires_grad_(True) for w in (ws or init_weights())]
    opt = torch.optim.SGD(ps, **OPT)
    losses = []
    xs = torch.cat([x for x, _ in parts], 1)
    ys = torch.cat([y for _, y in parts], 1)
    for x, y in zip(xs, ys):
        opt.zero_grad()
        loss = F.cross_entropy(mlp(ps, x), y)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return [p.detach() for p in ps], torch.stack(losses)


@torch.no_grad()
def evaluate(ws, x, y):
    logits = mlp(ws, x)
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def main(batches=16, processes=False, log=print):
    parts = data(batches)
    plan = trace(batches)
    feed = {p: {"x": x, "y": y} for p, (x, y) in parts.items()}
    t0 = time.perf_counter()
    res = planc.run_local(plan, feed, processes=processes)
    took = time.perf_counter() - t0
    *ws, losses = res.outputs["alice"]
    tws, tl = torch_train(list(parts.values()))
    # alice alone: her 32 rows per batch, as many steps
    ax, ay = parts["alice"]
    alone, _ = torch_train([(ax, ay)])
    ex, ey = sample(4000, 99)
    loss_p, acc_p = evaluate(ws, ex, ey)
    loss_t, acc_t = evaluate(tws, ex, ey)
    _, acc_a = evaluate(alone, ex, ey)
    st = res.stats
    sent = max(s["bytes_sent"] for p, s in st.items() if p != "dealer")
    nodes = sum(1 for _ in plan.graph.walk())
    rows = {p: batches * k for p, k in SPLIT.items()}
    log(f"{sum(rows.values())} rows ({', '.join(f'{p} {r}' for p, r in rows.items())}), {batches} minibatches of "
        f"{BATCH}; plan: {nodes} nodes, one loop")
    log(f"private epoch {took:.2f} s ({1000 * took / batches:.0f} ms per step incl. dealer), "
        f"{st['alice']['rounds'] / batches:.0f} rounds, {sent / batches / 1024:.0f} KiB per step (busiest party)")
    log(f"last batch loss   private {losses[-1].item():.5f}   torch {tl[-1].item():.5f}   "
        f"(max |loss - torch| over the epoch {(losses - tl).abs().max().item():.1e})")
    log(f"held-out (4,000 fresh rows of the generating model): loss private {loss_p:.4f} torch {loss_t:.4f}; "
        f"accuracy private {100 * acc_p:.2f} %, torch {100 * acc_t:.2f} %, alice's rows alone {100 * acc_a:.2f} %")
    dw = max((a - b).abs().max().item() for a, b in zip(ws, tws))
    log(f"weights at alice: max |w - torch| {dw:.1e}")
    return {"losses": losses, "torch_losses": tl, "weights": ws, "torch_weights": tws, "max_dw": dw,
            "acc_private": acc_p, "acc_torch": acc_t, "acc_alone": acc_a, "loss_private": loss_p,
            "loss_torch": loss_t, "seconds": took}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=16, help="minibatches of 64 (rows: 32/16/16 per batch)")
    ap.add_argument("--processes", action="store_true", help="one process per party (torch.distributed)")
    a = ap.parse_args()
    main(a.batches, a.processes)
