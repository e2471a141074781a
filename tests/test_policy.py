"""Policies: every violation located and explained; compile and run refuse a bad plan."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import planc
from planc.ir.policy import Policy, PolicyError

ROOT = Path(__file__).resolve().parents[1]
HOSPITAL = ROOT / "examples" / "policies" / "hospital.toml"
HERE = "tests/test_policy.py"


def leaky():
    x = planc.load("mnist/test", owner="bob", shape=(4, 1, 28, 28))
    w = planc.load("cnn/w", owner="alice", shape=(8, 1, 3, 3))
    h = F.max_pool2d(F.conv2d(x, w, stride=3), 2)  # LINE-A
    return planc.reveal(h.flatten(1), to="alice")  # LINE-B


def _line(marker):
    for i, line in enumerate((ROOT / HERE).read_text().splitlines(), 1):
        if marker in line and "_line(" not in line:
            return i


@pytest.fixture(autouse=True)
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def test_every_violation_is_listed_with_line_and_remedy():
    plan = planc.trace(leaky, parties=["alice", "bob"])
    got = [str(v) for v in Policy.read(HOSPITAL).violations(plan.graph)]
    a, b = _line("LINE-A"), _line("LINE-B")
    assert got == [
        f"{HERE}:{a}: conv2d %conv2d: stride=[3, 3] is outside what policy 'hospital' allows (max 2); "
        "use stride within max 2",
        f"{HERE}:{a}: max_pool2d %max_pool2d: op max_pool2d is not allowed by policy 'hospital'; "
        "use avg_pool2d (no comparisons)",
        f"{HERE}:{b}: reveal %reveal: reveal to alice is not allowed by policy 'hospital' (reveals may go to: bob); "
        "reveal to an allowed party, or return the value unrevealed (it stays secret-shared at the workers)",
    ]


def test_compile_and_run_refuse_a_plan_that_breaks_the_policy():
    plan = planc.trace(leaky, parties=["alice", "bob"])
    pol = Policy.read(HOSPITAL)
    with pytest.raises(PolicyError, match=r"plan violates policy 'hospital' \(3 problems\)"):
        planc.compile(plan, policy=pol)
    data = {"alice": {"cnn/w": torch.randn(8, 1, 3, 3)}, "bob": {"mnist/test": torch.rand(4, 1, 28, 28)}}
    with pytest.raises(PolicyError, match="reveal to alice is not allowed"):
        planc.run_local(plan, data, policy=pol)


def test_limits():
    def many():
        x = planc.load("x", owner="bob", shape=(1000, 1000))
        return planc.reveal(planc.fori_loop(500, lambda i, c: c + 1.0, x), to="bob")

    plan = planc.trace(many)
    pol = Policy.from_toml("[limits]\nmax_loop_trips = 100\nmax_elements = 10000\nmax_nodes = 3\n")
    msgs = [v.problem for v in pol.violations(plan.graph)]
    assert "loop of 500 trips, more than max_loop_trips = 100" in msgs
    assert any(m.startswith("%bob_x has 1,000,000 elements, more than max_elements = 10,000") for m in msgs)
    assert any(m.endswith("nodes, more than max_nodes = 3") for m in msgs)


@pytest.mark.parametrize("text,msg", [
    ("[ops]\nallow = ['conv3d']", "ops.allow: unknown op 'conv3d'"),
    ("[attrs.conv2d]\nkernel = {max = 3}", "attrs.conv2d.kernel: conv2d has no attribute 'kernel'"),
    ("[limits]\nmax_time = 3", "limits.max_time: unknown limit"),
    ("[network]\n", "unknown section(s) network"),
    ("[ops\n", "not valid TOML"),
])
def test_bad_policy_files_are_explained(text, msg):
    with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        Policy.from_toml(text, "p.toml")


def test_planc_check_cli(tmp_path):
    plan = planc.trace(leaky, parties=["alice", "bob"])
    plan.save(tmp_path / "bad.plan")
    r = subprocess.run([sys.executable, "-m", "planc.cli", "check", str(tmp_path / "bad.plan"), "--policy",
                        str(HOSPITAL)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 1
    assert r.stderr.startswith("plan violates policy 'hospital' (3 problems):\n  tests/test_policy.py:")
    ok = subprocess.run([sys.executable, "-m", "planc.cli", "check", str(tmp_path / "bad.plan"), "--policy",
                         str(ROOT / "examples" / "policies" / "open.toml")], capture_output=True, text=True,
                        timeout=120, cwd=ROOT)
    assert ok.returncode == 0 and "satisfies policy 'open'" in ok.stdout
