"""The cost model is exact: predicted rounds and bytes equal the runtime's counters,
for every op with a secret-shared protocol and for the seed CNN, 2 and 3 parties."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import planc
from planc.cost import parse_net, predict
from planc.ir import ops
from planc.runtime.interpreter import PROTOCOLS
import planc.samples  # noqa: F401  (registers the samples)

ROOT = Path(__file__).resolve().parents[1]
PARTIES = {2: ["alice", "bob"], 3: ["alice", "bob", "carol"]}


def _secret(shape, owner="bob", tag="x"):
    return planc.share(planc.load(tag, owner=owner, shape=shape))


# op -> function of two secret inputs x [4,6] (positive) and y [4,6], returning the op's
# result: the samples registered on the op definitions (planc/samples.py)
CASES = {d.name: d.rule("sample") for d in ops.REGISTRY.values() if d.rule("sample")}


def test_every_protocol_has_a_cost_case():
    assert set(PROTOCOLS) - {"share", "reveal"} <= set(CASES)


def _check(plan, data):
    c = predict(plan)
    res = planc.run_local(plan, data, timeout=60)
    seq = planc.run_local(plan, data, merge=False, timeout=60)
    for p in plan.graph.parties:
        got = (res.stats[p]["rounds"], res.stats[p]["bytes_sent"], res.stats[p]["bytes_recv"])
        assert (c.merged[p].rounds, c.merged[p].bytes_sent, c.merged[p].bytes_recv) == got, p
        got = (seq.stats[p]["rounds"], seq.stats[p]["bytes_sent"], seq.stats[p]["bytes_recv"])
        assert (c.sequential[p].rounds, c.sequential[p].bytes_sent, c.sequential[p].bytes_recv) == got, p
    assert c.dealer_bytes == res.stats["dealer"]["dealer_bytes"]
    return c


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("op", sorted(CASES))
def test_predicted_equals_measured_for_each_op(op, n):
    fn = CASES[op]

    def f():
        x = _secret((4, 6), owner="alice", tag="x")
        y = _secret((4, 6), tag="y")
        return planc.reveal(fn(x, y), to="bob")

    plan = planc.trace(f, parties=PARTIES[n])
    assert any(node.op == op for node in plan.graph.walk()), op
    data = {"alice": {"x": torch.rand(4, 6) + 0.5}, "bob": {"y": torch.randn(4, 6)}}
    _check(plan, data)


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("batch", [1, 4])
def test_predicted_equals_measured_for_the_seed_cnn(n, batch):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    sys.path.insert(0, str(ROOT / "examples"))
    from bench_mpc import make_plan
    from mnist_cnn import SeedCNN, set_weights, trained_weights

    model = set_weights(SeedCNN(), trained_weights())
    plan = make_plan(n, batch, model)
    data = {"alice": planc.weights_of(model, "cnn"), "bob": {"mnist/test": torch.rand(batch, 1, 28, 28)}}
    c = _check(plan, data)
    assert c.merged["alice"].rounds <= c.sequential["alice"].rounds


def test_network_models():
    assert parse_net("lan") == (0.2, 10.0) and parse_net("wan") == (40.0, 0.1) and parse_net("5,2.5") == (5.0, 2.5)
    with pytest.raises(ValueError, match="use lan, wan or RTT_ms,Gbit_per_s"):
        parse_net("fast")
