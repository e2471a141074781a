"""The secret-shared runtime's core: encoding, sharing, linear ops and products.

Every protocol is checked against the plaintext reference runtime on random inputs,
for 2 and 3 parties, and its rounds and bytes against what its docstring says.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import planc
from planc.runtime import fixed, prg
from planc.runtime.errors import PlanRuntimeError
from planc.runtime.local import run_local
from planc.runtime.material import PartyMaterial
from planc.runtime.party import Party

ULP = 2.0 ** -16


# ------------------------------------------------------------------ encoding


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=50))
def test_decode_encode_within_half_ulp(xs):
    x = torch.tensor(xs, dtype=torch.float64)
    back = fixed.decode(fixed.encode(x), dtype=torch.float64)
    assert (back - x).abs().max() <= ULP / 2 + 1e-12


def test_decode_is_exact_for_negative_values():
    # CrypTen returns some values below -1 exactly 1.0 too low; every k / 2^16 must round-trip exactly
    ks = torch.arange(-5 * 2 ** 16, 5 * 2 ** 16, 97, dtype=torch.int64)
    assert torch.equal(fixed.decode(ks, dtype=torch.float64), ks.double() / 2 ** 16)
    assert fixed.decode(fixed.encode(torch.tensor([-1.5, -2.25, -1000.0625])), dtype=torch.float64).tolist() == [
        -1.5, -2.25, -1000.0625]


def test_encoding_out_of_range_is_an_error():
    with pytest.raises(fixed.EncodingError, match=r"value 1e\+15 is outside the fixed-point range"):
        fixed.encode(torch.tensor([1.0, 1e15], dtype=torch.float64))
    with pytest.raises(fixed.EncodingError, match="outside"):
        fixed.encode(torch.tensor([float("nan")]))


@pytest.mark.parametrize("n", [2, 3, 4])
@given(st.lists(st.floats(-3e4, 3e4, allow_nan=False), min_size=1, max_size=20), st.integers(0, 3))
@settings(max_examples=20)
def test_reconstruct_share_is_exact(n, xs, owner_seed):
    owner = owner_seed % n
    seeds = {(i, j): prg.new_seed() for i in range(n) for j in range(i + 1, n)}
    x = torch.tensor(xs)
    total = torch.zeros(len(xs), dtype=torch.int64)
    for k in range(n):
        pair = {j: seeds[(min(k, j), max(k, j))] for j in range(n) if j != k}
        P = Party(rank=k, nparties=n, names=[f"p{i}" for i in range(n)], material=PartyMaterial(k, n, 0),
                  pair_seeds=pair)
        share = P.share_plain(x if k == owner else None, owner, x.shape).data
        if k != owner:
            assert not torch.equal(share, torch.zeros_like(share))  # shares look random
        total += share
    assert torch.equal(total, fixed.encode(x))


# ------------------------------------------------------------------ protocols against the reference

PARTIES = {2: ["alice", "bob"], 3: ["alice", "bob", "carol"]}


def run_both(fn, data, n, **kw):
    plan = planc.trace(fn, parties=PARTIES[n])
    ref = planc.run_reference(plan, data=data)
    res = run_local(plan, data, **kw)
    return plan, ref, res


def held(res, plan, i):
    """Output i from whichever party holds it in the clear."""
    t = plan.graph.outputs[i].type
    party = plan.graph.parties[t.vis.owner] if t.vis.is_private else plan.graph.parties[0]
    return res.outputs[party][i]


@pytest.mark.parametrize("n", [2, 3])
def test_linear_ops_and_shapes(n):
    torch.manual_seed(1)
    a, b = torch.randn(4, 6) * 10, torch.randn(4, 6)

    def f():
        x = planc.load("a", owner="alice", shape=(4, 6))
        y = planc.load("b", owner="bob", shape=(4, 6))
        s = x + y
        outs = [s - 2.5, -s, s.sum(1), s.mean(0, keepdim=True), s / 4.0, s.t()[1:3], s.reshape(2, 12)[:, ::5],
                torch.cat([s, x], 0), torch.stack([s, y], 1), F.pad(s, (1, 2), value=1.5), s.unsqueeze(0).expand(2, 4, 6),
                s.flatten(), s[2], s.permute(1, 0)]
        return tuple(planc.reveal(o, to="carol" if n == 3 else "bob") for o in outs)

    plan, ref, res = run_both(f, {"alice": {"a": a}, "bob": {"b": b}}, n)
    for i, want in enumerate(ref):
        got = held(res, plan, i)
        assert got.shape == want.shape
        assert (got - want).abs().max() <= 4 * ULP * max(1.0, want.abs().max().item() / 1000), i


@pytest.mark.parametrize("n", [2, 3])
def test_pools(n):
    torch.manual_seed(2)
    img = torch.randn(2, 3, 9, 9)

    def f():
        x = planc.share(planc.load("img", owner="bob", shape=(2, 3, 9, 9)))
        return (planc.reveal(F.avg_pool2d(x, 2), to="alice"),
                planc.reveal(F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False), to="alice"),
                planc.reveal(F.adaptive_avg_pool2d(x, (2, 4)), to="alice"))

    plan, ref, res = run_both(f, {"bob": {"img": img}}, n)
    for i, want in enumerate(ref):
        assert (res.outputs["alice"][i] - want).abs().max() <= 1e-4


def _products(kind):
    def f():
        x = planc.load("x", owner="alice", shape=(5, 7))
        y = planc.load("y", owner="bob", shape=(7, 3))
        if kind == "ss":
            x, y = planc.share(x), planc.share(y)
        elif kind == "ps":
            y = planc.share(y)
        elif kind == "sp":
            x = planc.share(x)
        elif kind == "public":
            x = planc.share(x)
            y = torch.linspace(-2, 2, 21).reshape(7, 3)
        return planc.reveal(x @ y, to="bob")

    return f


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("kind", ["ss", "ps", "sp", "pp", "public"])
@given(scale=st.floats(0.1, 30))
@settings(max_examples=3)
def test_matmul_all_visibilities(n, kind, scale):
    x, y = torch.randn(5, 7) * scale, torch.randn(7, 3)
    plan, ref, res = run_both(_products(kind), {"alice": {"x": x}, "bob": {"y": y}}, n)
    # one truncation: at most 1 ulp, plus the encoding error of the operands (1/2 ulp each) times the
    # other operand, summed over the inner dimension
    bound = ULP * (1 + 7 * (x.abs().max() + y.abs().max()).item())
    assert (res.outputs["bob"][0] - ref[0]).abs().max() <= bound


def test_product_traffic_matches_the_protocol():
    x, y = torch.randn(5, 7), torch.randn(7, 3)
    data = {"alice": {"x": x}, "bob": {"y": y}}
    sent = {}
    for kind in ("ss", "ps", "pp"):
        plan = planc.trace(_products(kind), parties=PARTIES[2])
        r = run_local(plan, data)
        sent[kind] = (r.stats["alice"]["bytes_sent"], r.stats["bob"]["bytes_sent"], r.stats["alice"]["rounds"])
    reveal = 8 * 15  # alice sends her share of the 5x3 result to bob
    assert sent["ss"] == (8 * (35 + 21) + reveal, 8 * (35 + 21), 2)  # Beaver: both open e and d
    assert sent["ps"] == (8 * (35 + 21) + reveal, 8 * 21, 2)  # only alice sends x - a
    assert sent["pp"] == (8 * 35 + reveal, 8 * 21, 2)  # each owner sends its masked operand once


@pytest.mark.parametrize("n", [2, 3])
def test_conv_linear_model_with_private_weights(n):
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, stride=2), nn.AvgPool2d(2), nn.Flatten(),
                        nn.Linear(4 * 2 * 2, 5)).eval()
    img = torch.randn(3, 2, 9, 9)

    def f():
        x = planc.load("img", owner="bob", shape=(3, 2, 9, 9))
        return planc.reveal(planc.owned(net, owner="alice", tag="m")(x) * 2, to="bob")

    plan, ref, res = run_both(f, {"alice": planc.weights_of(net, "m"), "bob": {"img": img}}, n)
    assert (res.outputs["bob"][0] - ref[0]).abs().max() <= 1e-3
    assert res.outputs["alice"][0] is None  # alice learns nothing


def test_merged_rounds_are_fewer_and_results_equal():
    def f():
        x = planc.load("x", owner="alice", shape=(8,))
        y = planc.load("y", owner="bob", shape=(8,))
        p = planc.share(x) * planc.share(y)
        q = planc.share(y) * planc.share(y)
        return planc.reveal(p + q, to="alice")

    data = {"alice": {"x": torch.randn(8)}, "bob": {"y": torch.randn(8)}}
    plan = planc.trace(f, parties=PARTIES[2])
    merged, seq = run_local(plan, data), run_local(plan, data, merge=False)
    assert merged.stats["alice"]["rounds"] == 2 and seq.stats["alice"]["rounds"] == 3
    assert merged.stats["alice"]["bytes_sent"] == seq.stats["alice"]["bytes_sent"]
    assert (merged.outputs["alice"][0] - seq.outputs["alice"][0]).abs().max() <= 2 * ULP


def test_loop_runs_natively_over_shares():
    def f():
        x = planc.share(planc.load("x", owner="bob", shape=(4,)))
        return planc.reveal(planc.fori_loop(5, lambda i, c: c * 0.5 + x, x), to="bob")

    x = torch.randn(4)
    plan, ref, res = run_both(f, {"bob": {"x": x}}, 2)
    assert (res.outputs["bob"][0] - ref[0]).abs().max() <= 1e-4


def test_missing_data_names_party_and_tag_and_nobody_hangs():
    def f():
        x = planc.load("x", owner="alice", shape=(3,))
        y = planc.load("y", owner="bob", shape=(3,))
        return planc.reveal(planc.share(x) * planc.share(y), to="bob")

    plan = planc.trace(f, parties=PARTIES[2])
    with pytest.raises(PlanRuntimeError, match=r"load %bob_y \(party bob\): no tensor under tag 'y'"):
        run_local(plan, {"alice": {"x": torch.ones(3)}}, timeout=20)


def test_data_for_unknown_party():
    plan = planc.trace(_products("ss"), parties=PARTIES[2])
    with pytest.raises(PlanRuntimeError, match="data for mallory, but the plan's parties are alice, bob"):
        run_local(plan, {"mallory": {}})


def test_four_parties():
    names = ["a", "b", "c", "d"]

    def f():
        g = [planc.load("g", owner=p, shape=(20,)) for p in names]
        s = g[0] + g[1] + g[2] + g[3]
        return planc.reveal(torch.relu(s) * g[1], to="c"), planc.reveal(s / 4, to="all")

    plan = planc.trace(f, parties=names)
    data = {p: {"g": torch.randn(20)} for p in names}
    want = planc.run_reference(plan, data=data)
    got = run_local(plan, data)
    assert (got.outputs["c"][0] - want[0]).abs().max() <= 1e-3
    assert all((got.outputs[p][1] - want[1]).abs().max() <= 1e-4 for p in names)
    assert got.outputs["a"][0] is None and got.outputs["d"][0] is None


def test_products_take_their_bilinear_map_from_the_op_definition():
    """mul, matmul, linear and conv2d register their map on ring tensors with the op
    ("bilinear" rules); it equals the plaintext op on integers."""
    from planc.ir import ops
    from planc.runtime.protocols import beaver

    for name in ("mul", "matmul", "linear", "conv2d"):
        d = ops.get(name)
        assert d.product and d.rule("bilinear") is not None and d.rule("protocol") is beaver.products, name
    g = torch.Generator().manual_seed(0)
    x, w = torch.randint(-9, 9, (1, 2, 5, 5), generator=g), torch.randint(-9, 9, (3, 2, 3, 3), generator=g)
    a = {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1), "groups": 1}
    want = F.conv2d(x.double(), w.double(), None, 1, 1).long()
    assert torch.equal(ops.get("conv2d").rule("bilinear")(x, w, a), want)
    y, v = torch.randint(-9, 9, (4, 5), generator=g), torch.randint(-9, 9, (3, 5), generator=g)
    assert torch.equal(ops.get("linear").rule("bilinear")(y, v, {}), y @ v.t())
