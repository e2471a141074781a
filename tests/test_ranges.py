"""Fixed-point range you can trust (runtime/ranges.py): inputs outside the range in which
the plan's values neither wrap the ring nor fail a truncation with probability above
2^-20 per element are refused, naming the party, the tag and the bound; the demos run."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import planc
from planc.ir.policy import Policy
from planc.runtime import bounds, ranges
from planc.runtime.admission import admit
from planc.runtime.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import secure_average  # noqa: E402


def _grads():
    torch.manual_seed(0)
    return {p: torch.randn(secure_average.SHAPE) for p in secure_average.PARTIES}


def test_the_secure_mean_of_a_huge_value_is_refused_not_wrong():
    """Before: alice's 1e13 gave a mean of 3.88e8 instead of 3.33e12 (1e13 * 2^32 wraps Z_2^64)."""
    grads = _grads()
    grads["alice"][0] = 1e13
    with pytest.raises(DataError) as ei:
        planc.run_local(secure_average.secure_average.plan, {p: {"grad": g} for p, g in grads.items()})
    e = ei.value
    assert e.party == "alice" and e.node.op == "load" and e.node.attr("tag") == "grad"
    msg = str(e)
    assert "(party alice): tag 'grad': |value| reaches 1e+13, above 1.074e+09, the largest magnitude this plan " \
           "computes correctly with: examples/secure_average.py:" in msg, msg
    assert "div %div holds |v| <= 1 A (A: |inputs|) at 2^32 ring units per unit, and must stay within 2^62 not to " \
           "wrap the ring" in msg, msg


def test_the_secure_mean_of_ordinary_gradients_runs_and_is_right():
    grads = _grads()
    res = planc.run_local(secure_average.secure_average.plan, {p: {"grad": g} for p, g in grads.items()})
    want = sum(grads.values()) / 3
    assert (res.outputs["alice"][0] - want).abs().max() < 1e-4
    assert secure_average.main() < 1e-4  # the example itself


def test_the_seed_cnn_leaves_its_inputs_room():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_mpc import make_plan
    from mnist_cnn import SeedCNN, trained_weights

    plan = make_plan(2, 100, SeedCNN())
    lim = admit(plan).input_limits
    first = lim["bob_mnist_test"]
    assert 7 < first.bound < 8 and first.constraint.kind == "truncation" and first.constraint.node.op == "avg_pool2d"
    assert lim["features_0_weight"].bound == first.bound  # the first layer: weights times images
    w = trained_weights()
    assert float(w["cnn/features.0.weight"].abs().max()) * 4 < first.bound
    assert lim["features_3_weight"].constraint is None  # deeper layers: not bounded by input checks
    # a stricter policy narrows it: 2^-30 per element leaves the first layer |x| <= ~0.19
    strict = admit(plan, Policy(truncation_security_bits=30)).input_limits["bob_mnist_test"]
    assert 0.15 < strict.bound < 0.25


def test_images_outside_the_cnns_range_are_refused():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_mpc import make_plan
    from mnist_cnn import SeedCNN, set_weights, trained_weights

    model = set_weights(SeedCNN(), trained_weights())
    plan = make_plan(2, 2, model)
    x = torch.rand(2, 1, 28, 28) * 255  # unnormalised pixels
    with pytest.raises(DataError, match=r"\(party bob\): tag 'mnist/test': \|value\| reaches 25\d\.?\d*, above 7\.4"):
        planc.run_local(plan, {"alice": planc.weights_of(model, "cnn"), "bob": {"mnist/test": x}})


def test_public_inputs_and_non_finite_values_are_checked():
    from planc.ir.builder import Builder
    from planc.ir.types import PUBLIC, TensorType, private

    b = Builder("scale", ["alice", "bob"])
    c = b.emit("input", (), {"index": 0}, types=[TensorType("f32", (3,), PUBLIC)])
    x = b.emit("load", (), {"tag": "x", "owner": 0}, types=[TensorType("f32", (3,), private(0))])
    y = b.emit("mul", [b.emit("share", [x]), c])
    g = b.finish([b.emit("reveal", [y], {"to": 1})])
    ok = planc.run_local(g, {"alice": {"x": torch.ones(3)}}, inputs=[torch.full((3,), 0.5)])
    assert torch.allclose(ok.outputs["bob"][0], torch.full((3,), 0.5))
    # x * c is revealed at 2^32 without a truncation: only the ring bounds it, |x c| <= 2^30
    with pytest.raises(DataError, match=r"public input 0: \|value\| reaches 1e\+06, above 3\.277e\+04, .* mul %mul "
                                        r"holds \|v\| <= 1 A\^2"):
        planc.run_local(g, {"alice": {"x": torch.ones(3)}}, inputs=[torch.full((3,), 1e6)])
    with pytest.raises(DataError, match="tag 'x': holds a value that is not finite"):
        planc.run_local(g, {"alice": {"x": torch.tensor([1.0, float("nan"), 0.0])}}, inputs=[torch.ones(3)])


@pytest.mark.parametrize("c0,c1,c2,cap,want", [
    (0, 1, 0, 10, 2.0 ** 10),  # |v| <= A at 2^0 within 2^10
    (0, 0, 9, 10, (2 ** 10 / 9) ** 0.5),
    (5, 0, 0, 2, 0.0),  # constants alone exceed: nothing fits
])
def test_a_constraint_is_solved_for_the_largest_input(c0, c1, c2, cap, want):
    c = ranges.Constraint(ranges.Mag((c0, c1, c2), frozenset({"x"})), cap, 0, None, "overflow")
    assert c.limit() == pytest.approx(want)


def test_a_loop_growing_its_value_is_not_bounded():
    def f():
        x = planc.share(planc.load("x", owner="alice", shape=(4,)))
        return planc.reveal(planc.fori_loop(50, lambda i, c: c * 1.5, x), to="bob")

    plan = planc.trace(f, parties=["alice", "bob"])
    b = bounds.compute(plan)
    lim = ranges.input_limits(plan.graph, plan.constants, b.extras)
    assert lim["alice_x"].constraint is None or lim["alice_x"].constraint.node.op == "share"
