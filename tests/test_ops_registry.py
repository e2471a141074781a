"""One op, one place: every op's rules are registered against its definition, the
completeness check names what is missing, and `planc ops` shows it all."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import planc
from planc import opsinfo
from planc.ir import ops
from planc.lower import LOWER

ROOT = Path(__file__).resolve().parents[1]


def test_every_op_has_every_rule_its_traits_require():
    assert ops.missing() == {}


def test_every_rule_location_is_real_code():
    for d in ops.REGISTRY.values():
        for kind, r in d.rules.items():
            path, _, line = r.where.rpartition(":")
            assert os.path.isfile(path), (d.name, kind, r.where)
            assert 1 <= int(line) <= len(Path(path).read_text().splitlines()), (d.name, kind, r.where)


def test_a_rule_is_registered_once_and_only_on_op_definitions():
    with pytest.raises(AssertionError, match="has a protocol rule already"):
        ops.register("protocol", ops.OP.relu)(lambda *a: None)
    with pytest.raises(AssertionError, match="takes op definitions"):
        ops.register("protocol", "relu")(lambda *a: None)
    with pytest.raises(AssertionError, match="unknown rule kind"):
        ops.register("frobnicate", ops.OP.relu)
    with pytest.raises(AttributeError, match="no op 'rleu'"):
        ops.OP.rleu


def test_traits_say_what_the_old_tables_said():
    products = {d.name for d in ops.REGISTRY.values() if d.product}
    assert products == {"mul", "matmul", "linear", "conv2d", "batch_norm", "gather"}
    assert {d.name for d in ops.REGISTRY.values() if d.source} == {"load", "input", "const", "call"}
    assert {d.name for d in ops.REGISTRY.values() if d.structural} == {"loop", "yield", "return"}
    for d in ops.REGISTRY.values():
        if d.shape_only:
            assert d.accepts_pending_truncation and not d.communicates, d.name
        if d.approximate:
            assert d.rule("bound") is not None, d.name


def test_every_lowering_target_reaches_the_ops_it_declares():
    declared = {id(fn) for d in ops.REGISTRY.values() if d.rule("lower") for _, fn in d.rule("lower").entries}
    plumbing = [k for k, fn in LOWER.items() if id(fn) not in declared]
    # targets that emit no op (identity, eval-mode dropout, refusals with a hint)
    names = {opsinfo.describe_target(k) if not isinstance(k, str) else k for k in plumbing}
    assert names <= {"method:contiguous", "method:clone", "method:detach", "torch.clone", "torch.detach",
                     "method:requires_grad_", "operator.pos", "torch.zeros_like", "torch.ones_like",
                     "method:cpu", "method:float", "F.dropout", "F.dropout1d", "F.dropout2d", "F.alpha_dropout",
                     "torch.dropout", "planc.load", "planc.load_model"}, names


@pytest.mark.parametrize("cls", list(opsinfo.NN_MODULES), ids=lambda c: c.__name__)
def test_listed_nn_modules_trace(cls):
    make, shape = opsinfo.NN_MODULES[cls]
    m = make()

    def f():
        return planc.reveal(m(planc.load("x", owner="bob", shape=shape)), to="bob")

    plan = planc.trace(f, parties=["alice", "bob"])
    x = torch.randn(shape)
    (got,) = planc.run_reference(plan, data={"bob": {"x": x}})
    torch.testing.assert_close(got, m(x))


def test_describe_names_every_rule_and_the_sample_cost():
    rows = dict(opsinfo.describe("relu"))
    assert {"F.relu", "torch.relu", "Tensor.relu"} <= set(rows["from torch"].split(", "))
    assert rows["protocol"].endswith("compare.relu")
    assert "alice: 3 rounds" in rows["cost, 2 parties, 4x6"]
    for kind in ("reference", "protocol", "lower", "sample"):
        assert f"rule: {kind}" in rows
    assert "2^-14" in dict(opsinfo.describe("sigmoid"))["error bound"]


def test_planc_ops_cli():
    run = lambda *a: subprocess.run([sys.executable, "-m", "planc.cli", "ops", *a], capture_output=True, text=True,
                                    cwd=ROOT, timeout=120)
    r = run("relu")
    assert r.returncode == 0 and "compare.py" in r.stdout and "F.relu" in r.stdout, r.stderr
    r = run("--torch")
    assert r.returncode == 0 and "nn.Conv2d" in r.stdout and "Tensor.view" in r.stdout
    r = run("relu_")
    assert r.returncode != 0 and "did you mean relu" in r.stderr
