"""Secure averaging: three parties each hold a private gradient; the plan reveals only
their mean, to everyone. No party's own gradient leaves it in the clear.

    python examples/secure_average.py
    planc trace examples/secure_average.py:secure_average -o avg.plan
"""
from __future__ import annotations

import torch

import planc

PARTIES = ["alice", "bob", "carol"]
SHAPE = (1000,)


@planc.plan(parties=PARTIES)
def secure_average():
    grads = [planc.load("grad", owner=p, shape=SHAPE) for p in PARTIES]
    total = grads[0] + grads[1] + grads[2]  # mixes three owners: secret
    return planc.reveal(total / len(PARTIES), to="all")


def main():
    torch.manual_seed(0)
    grads = {p: torch.randn(SHAPE) for p in PARTIES}
    plan = secure_average.plan
    print(plan)
    (mean,) = planc.run_reference(plan, data={p: {"grad": g} for p, g in grads.items()})
    expected = sum(grads.values()) / len(PARTIES)
    err = (mean - expected).abs().max().item()
    print(f"mean of {len(PARTIES)} private gradients of {SHAPE[0]} values; max |error| = {err:.1e}")
    return err


if __name__ == "__main__":
    main()
