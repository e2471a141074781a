"""Policies: every violation located and explained; compile and run refuse a bad plan."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import planc
from planc.ir.policy import Policy, PolicyError, PolicyFileError

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
    # the limits too, as a worker admits a plan: a dealer budget the plan exceeds
    (tmp_path / "tiny.toml").write_text('name = "tiny"\n[limits]\nmax_dealer_bytes = "1 KiB"\n')
    lim = subprocess.run([sys.executable, "-m", "planc.cli", "check", str(tmp_path / "bad.plan"), "--policy",
                          str(tmp_path / "tiny.toml")], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert lim.returncode == 1 and "of dealer material" in lim.stderr and "allows 1 KiB" in lim.stderr, lim.stderr


# ---------------------------------------------------------------- policy files are validated


@pytest.mark.parametrize("text,key,expected", [
    ("[limits]\nmax_nodes = \"5\"", "limits.max_nodes", "expected a whole number (or \"none\" for no limit), got '5' "
                                                        "(a string)"),
    ("[limits]\nmax_elements = -1", "limits.max_elements", "expected at least 1 (or \"none\" for no limit), got -1"),
    ("[limits]\nmax_loop_trips = 2.5", "limits.max_loop_trips", "expected a whole number"),
    ("[limits]\nmax_work = true", "limits.max_work", "got True (a boolean)"),
    ("[limits]\nmax_peak_bytes = \"8 parsecs\"", "limits.max_peak_bytes", "expected a size in bytes"),
    ("[limits]\nmax_dealer_bytes = -5", "limits.max_dealer_bytes", "expected at least 0"),
    ("[limits]\ntruncation_security_bits = 70", "limits.truncation_security_bits", "expected at most 60 bits"),
    ("[limits]\ntruncation_security_bits = \"none\"", "limits.truncation_security_bits", "not \"none\""),
    ("[attrs.conv2d]\nstride = {max = \"2\"}", "attrs.conv2d.stride.max",
     "expected an integer (conv2d.stride is ints), got '2' (a string)"),
    ("[attrs.conv2d]\nstride = 2", "attrs.conv2d.stride", "expected a table with min, max and/or in"),
    ("[attrs.conv2d]\ngroups = {in = [1, true]}", "attrs.conv2d.groups.in", "expected a list of integers"),
    ("[attrs.conv2d]\nstride = {min = 3, max = 2}", "attrs.conv2d.stride", "min 3 is above max 2"),
    ("[attrs.avg_pool2d]\nceil_mode = {max = 1}", "attrs.avg_pool2d.ceil_mode.max", "use in = [...], not max"),
    ("[reveal]\nto = \"bob\"", "reveal.to", "expected a list of party names (e.g. to = [\"bob\"]"),
    ("[reveal]\nto = [1]", "reveal.to", "expected a list of party names"),
    ("[reveal]\nwho = [\"bob\"]", "reveal.who", "unknown key; reveal takes to"),
    ("[ops]\nallow = \"relu\"", "ops.allow", "expected a list of op names"),
    ("[ops]\nalow = [\"relu\"]", "ops.alow", "unknown key; ops takes allow, deny"),
    ("ops = 5", "ops", "expected a table ([ops]), got 5 (an integer)"),
    ("name = 3", "name", "expected the policy's name"),
])
def test_every_key_has_a_type_and_range(text, key, expected):
    with pytest.raises(PolicyFileError) as ei:
        Policy.from_toml(text, "p.toml")
    e = ei.value
    assert isinstance(e, PolicyError) and isinstance(e, ValueError)
    assert e.source == "p.toml" and e.key == key and expected in e.problem, str(e)
    assert str(e).startswith(f"p.toml: {key}: ")


def test_a_policy_file_that_is_not_valid_is_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[limits]\nmax_nodes = \"lots\"\n")
    with pytest.raises(PolicyFileError, match=rf"^{bad}: limits.max_nodes: expected a whole number"):
        Policy.read(bad)
    planc.trace(leaky, parties=["alice", "bob"]).save(tmp_path / "a.plan")
    r = subprocess.run([sys.executable, "-m", "planc.cli", "check", str(tmp_path / "a.plan"), "--policy", str(bad)],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode != 0 and "limits.max_nodes: expected a whole number" in r.stderr, r.stderr


def test_limits_default_and_can_be_lifted():
    from planc.ir.policy import DEFAULT, DEFAULT_LIMITS, GiB

    assert DEFAULT_LIMITS == {"max_nodes": 100_000, "max_loop_trips": None, "max_elements": None,
                              "max_peak_bytes": 8 * GiB, "max_dealer_bytes": 8 * GiB, "max_work": 10 ** 12,
                              "truncation_security_bits": 20}
    assert all(getattr(DEFAULT, k) == v for k, v in DEFAULT_LIMITS.items())
    p = Policy.from_toml("[limits]\nmax_peak_bytes = \"512 MiB\"\nmax_work = \"none\"\nmax_dealer_bytes = \"1.5 GB\"\n")
    assert p.max_peak_bytes == 512 * 2 ** 20 and p.max_work is None and p.max_dealer_bytes == 1_500_000_000
    assert p.max_nodes == 100_000 and p.truncation_security_bits == 20  # left out: the default's
    for f in (HOSPITAL, ROOT / "examples" / "policies" / "open.toml"):
        Policy.read(f)  # the examples are valid


def test_a_policy_travels_as_plain_data():
    import json

    for p in (Policy.read(HOSPITAL), Policy(name="lifted", max_work=None, max_peak_bytes=None)):
        back = Policy.from_dict(json.loads(json.dumps(p.to_dict())), "<job>")
        assert back == p
