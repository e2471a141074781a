"""The comparisons pass (planc/passes/comparisons.py): each comparison's protocol chosen
with the cost model under an objective; the choice is the plan's (its text, its cost,
`planc show --cost`), and the results do not change."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import planc
from planc.ir.parser import parse_graph as parse
from planc.ir.printer import print_graph
from planc.passes.comparisons import ChooseComparisons, methods


def _plan(parties=("alice", "bob"), n=4096):
    def f():
        x = planc.load("x", owner="bob", shape=(n,))
        w = planc.load("w", owner="alice", shape=(n,))
        h = F.relu(planc.share(x) * w)
        return planc.reveal(h, to="bob"), planc.reveal(h > 0.5, to="bob")

    return planc.trace(f, parties=list(parties), name="cmp")


def _data(n=4096):
    g = torch.Generator().manual_seed(0)
    return {"bob": {"x": torch.randn(n, generator=g)}, "alice": {"w": torch.randn(n, generator=g)}}


def _methods(plan):
    return [m for _, m in methods(plan.graph.nodes)]


def test_the_objective_decides_and_the_cost_follows():
    plan = _plan()
    fewest = planc.compile(plan, objective="rounds")
    assert _methods(fewest) == ["fss", "fss"]
    # on a LAN a round costs 0.2 ms and a DCF key (1.3 KB an element) more than that
    lan = planc.compile(plan, objective="time", net="lan")
    assert _methods(lan) == ["bits", "bits"]
    assert fewest.cost().rounds < lan.cost().rounds
    assert fewest.cost().dealer_bytes > lan.cost().dealer_bytes
    # a slow, far network makes rounds dear: on 500 ms RTT the fss keys are worth it
    far = planc.compile(plan, objective="time", net="500,1")
    assert _methods(far) == ["fss", "fss"]
    # the choice is in the plan's text and survives the round trip
    text = print_graph(fewest.graph)
    assert 'method="fss"' in text
    assert _methods(planc.Plan(parse(text))) == ["fss", "fss"]


def test_results_do_not_change():
    plan, data = _plan(), _data()
    want = planc.run_reference(plan, data=data)
    for objective in ("rounds", "time"):
        got = planc.run_local(planc.compile(plan, objective=objective), data).outputs["bob"]
        assert torch.allclose(got[0], want[0], atol=1e-3)
        assert torch.equal(got[1].bool(), want[1].bool()) or (got[1].bool() != want[1].bool()).sum() <= 2


def test_three_computing_parties_keep_bits_two_of_three_choose():
    plan = _plan(("alice", "bob", "orch"))
    assert _methods(planc.compile(plan, objective="rounds")) == ["bits", "bits"]
    # orch a client: two parties compute, and the pass is told so
    two = planc.compile(plan, objective="rounds", clients=("orch",))
    assert _methods(two) == ["fss", "fss"]
    from planc.runtime import bounds

    three = planc.compile(plan, objective="rounds")
    assert bounds.compute(two, clients=("orch",)).rounds < bounds.compute(three, clients=("orch",)).rounds


def test_errors_are_named():
    with pytest.raises(ValueError, match="objective 'speed': use one of rounds, bytes, time"):
        ChooseComparisons(objective="speed")
    with pytest.raises(ValueError, match="network 'fast'"):
        ChooseComparisons(net="fast")
    text = print_graph(planc.compile(_plan(), objective="rounds").graph).replace('method="fss"', 'method="magic"', 1)
    with pytest.raises(Exception, match=r"method='magic' is not one of 'bits', 'fss'"):
        parse(text)


def test_cli_compile_objective_and_show_cost(tmp_path):
    src = tmp_path / "p.plan"
    _plan(n=256).save(str(src))

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "planc.cli", *map(str, args)], capture_output=True, text=True,
                              timeout=120)

    r = cli("compile", src, "-o", tmp_path / "q.plan", "--objective", "rounds")
    assert r.returncode == 0, r.stderr
    r = cli("show", tmp_path / "q.plan", "--cost")
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("│ relu %") or line.startswith("│ gt %")]
    assert len(rows) == 2 and all("fss" in line for line in rows), r.stdout
    r = cli("compile", src, "-o", tmp_path / "q.plan", "--objective", "time", "--net", "nowhere")
    assert r.returncode != 0 and "network 'nowhere'" in r.stderr
