"""Feature aggregation: logistic regression trained on vertically split data, privately.

Synthetic tabular data from a known logistic model (fixed seed): features 0..K-1 at
alice, features K.. and the labels at bob. One epoch of SGD (momentum 0.9) by planc.scan
over minibatches of 64, from a public zero init, over secret shares (run_local, threads);
the weights are revealed to alice at the end, the per-batch losses too. Prints the final
loss next to torch's plaintext training of the same (target: within 0.5 %).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import planc

ROWS, BATCH, K, D = 1024, 64, 3, 6
TRUE_W, TRUE_B = torch.tensor([1.2, -0.8, 0.5, -1.5, 0.9, 0.3]), -0.2
OPT = dict(lr=0.5, momentum=0.9)


def data(rows=ROWS, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.round(torch.randn(rows, D, generator=g) * 2 ** 16) / 2 ** 16
    y = (torch.rand(rows, generator=g) < torch.sigmoid(x @ TRUE_W + TRUE_B)).float()
    nb = rows // BATCH
    return x[:, :K].reshape(nb, BATCH, K), torch.cat([x[:, K:], y[:, None]], 1).reshape(nb, BATCH, D - K + 1)


def train(xa, xb_y):
    """xa: alice's features [batches, 64, K]; xb_y: bob's features and labels."""
    xs = torch.cat([xa, xb_y], -1)  # secret: the two parties' columns side by side
    w0, b0 = torch.zeros(D), torch.zeros(())

    def step(carry, batch):
        w, b, *state = carry
        x, y = batch[:, :D], batch[:, D]
        loss, grads = planc.value_and_grad(lambda w, b: F.binary_cross_entropy_with_logits(x @ w + b, y),
                                           argnums=(0, 1))(w, b)
        (w, b), state = planc.optim.sgd((w, b), grads, tuple(state), **OPT)
        return (w, b, *state), loss

    (w, b, *_), losses = planc.scan(step, (w0, b0, *planc.optim.sgd_init((w0, b0), OPT["momentum"])), xs)
    return planc.reveal(w, to="alice"), planc.reveal(b, to="alice"), planc.reveal(losses, to="alice")


def torch_train(xa, xb_y):
    w, b = torch.zeros(D, requires_grad=True), torch.zeros((), requires_grad=True)
    opt = torch.optim.SGD([w, b], **OPT)
    losses = []
    for a, by in zip(xa, xb_y):
        x, y = torch.cat([a, by[:, :-1]], 1), by[:, -1]
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(x @ w + b, y)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return w.detach(), b.detach(), torch.stack(losses)


def main(rows=ROWS):
    xa, xb_y = data(rows)
    plan = planc.trace(train, planc.load("features", owner="alice", shape=tuple(xa.shape)),
                       planc.load("features_labels", owner="bob", shape=tuple(xb_y.shape)), parties=["alice", "bob"])
    res = planc.run_local(plan, {"alice": {"features": xa}, "bob": {"features_labels": xb_y}})
    w, b, losses = res.outputs["alice"]
    tw, tb, tl = torch_train(xa, xb_y)
    x_all = torch.cat([xa, xb_y[..., :-1]], -1).reshape(-1, D)
    y_all = xb_y[..., -1].reshape(-1)
    final = F.binary_cross_entropy_with_logits(x_all @ w + b, y_all).item()
    final_t = F.binary_cross_entropy_with_logits(x_all @ tw + tb, y_all).item()
    rel = abs(final - final_t) / final_t
    print(f"{rows} rows, {xa.shape[0]} minibatches of {BATCH}; features 0..{K - 1} at alice, {K}..{D - 1} and labels "
          f"at bob; plan: {sum(1 for _ in plan.graph.walk())} nodes, one loop")
    print(f"last batch loss   private {losses[-1].item():.5f}   torch {tl[-1].item():.5f}")
    print(f"epoch-end loss    private {final:.5f}   torch {final_t:.5f}   ({100 * rel:.3f} % apart)")
    print(f"weights at alice  {[round(v, 3) for v in w.tolist()]}  b {b.item():.3f}  (max |w - torch| "
          f"{(w - tw).abs().max().item():.1e}; generating model {TRUE_W.tolist()}, {TRUE_B})")
    return rel


if __name__ == "__main__":
    main()
