"""Clients: plan parties that do not compute (runtime/clients.py). A client's inputs reach
the computing parties only as random additive shares; what is revealed to it reaches it
alone, as shares it adds up; the results match plaintext; the cost model and admission
count only the computing parties; unsupported shapes of plan are refused by name."""
from __future__ import annotations

import pytest
import torch

import planc
from planc.runtime import bounds, fixed
from planc.runtime.clients import ClientError, ClientRun, client_values, for_computing, ncompute
from planc.runtime.local import run_local


@planc.plan(parties=["alice", "bob", "orch"])
def scoring():
    x = planc.load("x", owner="orch", shape=(4, 3))
    w = planc.load("w", owner="alice", shape=(3, 2))
    b = planc.load("b", owner="bob", shape=(2,))
    y = torch.relu((x * 2.0) @ w + b)
    total = planc.reveal(y.sum(), to="all")
    z = planc.reveal(y, to="orch")
    return z.argmax(dim=1), total, z


def _data(seed):
    g = torch.Generator().manual_seed(seed)
    return {"orch": {"x": torch.randn(4, 3, generator=g)}, "alice": {"w": torch.randn(3, 2, generator=g)},
            "bob": {"b": torch.randn(2, generator=g)}}


@pytest.mark.parametrize("seed", range(4))
def test_client_outputs_match_plaintext_and_nobody_else_sees_them(seed):
    data = _data(seed)
    want = planc.run_reference(scoring.plan, data=data)
    res = run_local(scoring.plan, data, clients=["orch"], timeout=30)
    got = res.outputs["orch"]
    # 2 fractional-bit products and a relu: within 2^-10 of plaintext at frac 16
    assert torch.allclose(got[2], want[2], atol=2 ** -10)
    assert torch.allclose(got[1], want[1], atol=2 ** -8)
    near_tie = (want[2].topk(2, dim=1).values.diff(dim=1).abs() < 2 ** -8).squeeze(1)
    assert torch.equal(got[0][~near_tie], want[0][~near_tie])
    for p in ("alice", "bob"):
        assert res.outputs[p][0] is None and res.outputs[p][2] is None  # the client's alone
        assert torch.allclose(res.outputs[p][1], want[1], atol=2 ** -8)  # revealed to all
    assert set(res.stats) == {"alice", "bob", "dealer"}  # the client is no rank


@pytest.mark.parametrize("transport", ["tls", "gloo"])
def test_clients_with_one_process_per_party(transport):
    """The same run as threads, each computing party in a process of its own: the counters
    are the threads' exactly and the client's outputs match plaintext."""
    data = _data(7)
    want = planc.run_reference(scoring.plan, data=data)
    res = run_local(scoring.plan, data, clients=["orch"], timeout=60, processes=True, transport=transport)
    threads = run_local(scoring.plan, data, clients=["orch"], timeout=30)
    got = res.outputs["orch"]
    assert torch.allclose(got[2], want[2], atol=2 ** -10) and torch.allclose(got[1], want[1], atol=2 ** -8)
    for p in ("alice", "bob"):
        assert res.outputs[p][0] is None and res.outputs[p][2] is None
    keys = ("rounds", "bytes_sent", "bytes_recv", "dealer_bytes")
    assert {p: {k: s[k] for k in keys} for p, s in res.stats.items()} == \
        {p: {k: s[k] for k in keys} for p, s in threads.stats.items()}


def test_client_shares_are_random_and_add_up():
    data = _data(0)
    play = ClientRun(scoring.plan.graph, "orch", ["orch"], data=data["orch"])
    a, b = play.shares()
    assert set(a) == set(b) == {"mul"}  # x * 2.0 is computed at the client, then shared
    enc = fixed.encode(data["orch"]["x"] * 2.0)
    assert torch.equal(a["mul"] + b["mul"], enc)
    assert not torch.equal(a["mul"], enc) and not torch.equal(b["mul"], enc)
    again = ClientRun(scoring.plan.graph, "orch", ["orch"], data=data["orch"]).shares()
    assert not torch.equal(again[0]["mul"], a["mul"])  # fresh randomness every run


def test_parties_keep_only_what_is_revealed_to_the_client():
    from planc.runtime.comm.inproc import Network
    from planc.runtime.session import run_dealer, run_party
    import threading

    g = scoring.plan.graph
    data = _data(1)
    shares = ClientRun(g, "orch", ["orch"], data=data["orch"]).shares()
    net = Network(["alice", "bob", "dealer"])
    kept = [{}, {}]
    outs = {}

    def party(r):
        outs[r] = run_party(g, net.comm(r, 30), data=data[["alice", "bob"][r]], clients=["orch"],
                            client_shares=shares[r], reveals_out=kept[r])

    ts = [threading.Thread(target=party, args=(r,)) for r in range(2)]
    ts.append(threading.Thread(target=lambda: run_dealer(g, net.comm(2, 30), clients=["orch"])))
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    for k in kept:
        assert set(k) == {"orch"}
        assert set(k["orch"]) == {"reveal", "reveal_1"}  # the two reveals that reach orch; nothing else
        assert "share" in k["orch"]["reveal_1"] and "plain" in k["orch"]["reveal"]
    # one party's share alone is not the value
    want = planc.run_reference(scoring.plan, data=data)[2]
    one = fixed.decode(kept[0]["orch"]["reveal_1"]["share"], 16 + kept[0]["orch"]["reveal_1"]["extra"])
    assert not torch.allclose(one, want, atol=1e-2)


def test_cost_model_counts_the_computing_parties_exactly():
    data = _data(2)
    res = run_local(scoring.plan, data, clients=["orch"], timeout=30)
    b = bounds.compute(scoring.plan, clients=["orch"])
    assert set(b.party) == {"alice", "bob"}
    for p in ("alice", "bob"):
        assert (b.party[p].rounds, b.party[p].bytes_sent, b.party[p].bytes_recv) == \
               (res.stats[p]["rounds"], res.stats[p]["bytes_sent"], res.stats[p]["bytes_recv"])
    assert b.dealer.bytes == res.stats["bob"]["dealer_bytes"]


def test_the_computing_view_types_client_values_secret():
    g = scoring.plan.graph
    view, values = for_computing(g, ["orch"])
    assert values == {"mul": 2}
    assert client_values(g, 2) == values
    mm = next(n for n in view.nodes if n.op == "matmul")
    assert mm.operands[0].type.vis.is_secret and mm.operands[1].type.vis.is_private
    assert for_computing(g, ["orch"])[0] is view  # cached: the cost model keys on it
    assert for_computing(g, ()) == (g, {})


@planc.plan(parties=["orch", "alice", "bob"])
def client_first():
    x = planc.load("x", owner="orch", shape=(2,))
    return planc.reveal(x * planc.load("y", owner="alice", shape=(2,)), to="orch")


@planc.plan(parties=["alice", "bob", "orch"])
def round_trip():
    x = planc.load("x", owner="orch", shape=(2,))
    y = planc.reveal(x * planc.load("y", owner="alice", shape=(2,)), to="orch")
    return planc.reveal(y * planc.load("z", owner="bob", shape=(2,)), to="orch")


@planc.plan(parties=["alice", "orch"])
def lonely():
    return planc.reveal(planc.load("x", owner="orch", shape=(2,)) * planc.load("y", owner="alice", shape=(2,)),
                        to="orch")


def test_unsupported_client_plans_are_refused_by_name():
    with pytest.raises(ClientError, match="last parties.*orch"):
        run_local(client_first.plan, {}, clients=["orch"])
    with pytest.raises(ClientError, match="not a party"):
        ncompute(scoring.plan.graph, ["carol"])
    with pytest.raises(ClientError, match="at least 2"):
        ncompute(lonely.plan.graph, ["orch"])
    data = {"orch": {"x": torch.ones(2)}, "alice": {"y": torch.ones(2)}, "bob": {"z": torch.ones(2)}}
    with pytest.raises(ClientError, match="revealed to it during the run") as ei:
        run_local(round_trip.plan, data, clients=["orch"])
    assert "test_clients.py" in str(ei.value)  # the user's line
    with pytest.raises(ClientError, match="no data under tag 'x'"):
        run_local(scoring.plan, {"alice": _data(0)["alice"], "bob": _data(0)["bob"]}, clients=["orch"])


def test_same_plan_with_the_client_computing():
    data = _data(3)
    as_client = run_local(scoring.plan, data, clients=["orch"], timeout=30).outputs["orch"]
    computing = run_local(scoring.plan, data, timeout=30).outputs["orch"]
    assert torch.allclose(as_client[2], computing[2], atol=2 ** -10)
