"""The exact cost of benchmarks/bench_training.py's plans (one SGD step, 2 parties, batch
64): rounds and bytes per party as the cost model predicts them, pinned, so that a change
to a gradient rule, a pass or a protocol that moves them shows here; and issue 11's
round and byte targets for the seed CNN. A run over shares (threads) of the logistic
regression step checks the runtime's counters against the prediction. No timing."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_training as bt  # noqa: E402

import planc  # noqa: E402

MIB = 2 ** 20
# kind: (rounds merged, rounds one node at a time, {party: (sent, received)}, dealer bytes)
PINNED = {
    "logreg": (16, 31, {"alice": (34_000, 837_344), "bob": (837_344, 34_000)}, 71_856),
    "cnn": (42, 83, {"alice": (25_465_096, 26_085_088), "bob": (26_085_088, 25_465_096)}, 50_599_192),
}


@pytest.fixture(scope="module")
def plans():
    return bt.training_plans()


@pytest.fixture(scope="module")
def costs(plans):
    return {k: p.cost() for k, p in plans.items()}


@pytest.mark.parametrize("kind", sorted(PINNED))
def test_predicted_cost_is_pinned(costs, kind):
    c = costs[kind]
    rounds, sequential, sent, dealer = PINNED[kind]
    assert c.rounds == rounds
    assert max(x.rounds for x in c.sequential.values()) == sequential
    assert {p: (x.bytes_sent, x.bytes_recv) for p, x in c.merged.items()} == sent
    assert c.dealer_bytes == dealer


def test_cnn_step_meets_round_and_byte_targets(costs):
    c = costs["cnn"]
    _, rounds, mib = bt.TARGETS["cnn"]
    assert c.rounds <= rounds
    assert max(x.bytes_sent for x in c.merged.values()) <= mib * MIB


def test_avg_pool_backward_is_local(plans):
    # non-overlapping windows: the cotangent is spread by a broadcast, no convolution
    convs = [n for n in plans["cnn"].graph.walk() if n.op == "conv2d"]
    assert len(convs) == 3 + 3 + 2  # forward, weight gradients, input gradients (none for the images)
    assert all(n.operands[1].type.vis.is_public is False for n in convs)


def test_logreg_step_runs_as_predicted(plans, costs):
    import torch

    g = torch.Generator().manual_seed(0)  # synthetic: no data set needed
    x = torch.rand(bt.BATCH, bt.FEATURES, generator=g)
    data = {"alice": {"w": torch.randn(1, bt.FEATURES, generator=g) * 0.03, "b": torch.zeros(1)},
            "bob": {"x": x, "y": (torch.rand(bt.BATCH, generator=g) < 0.5).float()}}
    res = planc.run_local(plans["logreg"], data)
    c = costs["logreg"]
    for p, x in c.merged.items():
        assert res.stats[p]["rounds"] == x.rounds
        assert res.stats[p]["bytes_sent"] == x.bytes_sent
    assert res.stats["dealer"]["dealer_bytes"] == c.dealer_bytes
    werr, lerr = bt.check("logreg", plans["logreg"], res, data)
    assert werr < 1e-3 and lerr < 1e-3


def test_epoch_plan_is_one_loop():
    step, epoch = bt.size(bt.step_plan("logreg")), bt.size(bt.epoch_plan("logreg", batches=4))
    assert epoch[0] < 2 * step[0]
    assert sum(1 for n in bt.epoch_plan("logreg", batches=4).graph.nodes if n.op == "loop") == 1
