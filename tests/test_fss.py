"""Comparisons by function secret sharing (runtime/protocols/fss.py, dcf.py): the DCF
against the plaintext, lt/gt/ge/le and relu in one round with method="fss", exact,
over threads and processes (TLS, gloo), with rounds, bytes and dealer bytes (dealt to
both parties) equal to the cost model's; chunked dealt material; 3 parties refused."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from planc.ir.builder import Builder
from planc.ir.types import TensorType, private
from planc.ir.verify import verify
from planc.runtime import bounds, fixed
from planc.runtime.errors import PlanRuntimeError
from planc.runtime.local import run_local
from planc.runtime.protocols import fss
from planc.runtime.protocols.dcf import cw_rows, eval_dcf, gen_dcf
from planc.runtime.reference import run_reference

FRAC = fixed.DEFAULT_FRAC_BITS
ULP = 2.0 ** -FRAC
COUNTERS = ("rounds", "bytes_sent", "bytes_recv", "messages", "dealer_bytes")

# ---------------------------------------------------------------- the DCF itself


@settings(max_examples=12, deadline=None)
@given(nbits=st.sampled_from([1, 2, 3, 7, 40]), seed=st.integers(0, 2 ** 31 - 1), n=st.integers(1, 40),
       k=st.sampled_from([1, 2]))
def test_dcf_matches_the_plaintext(nbits, seed, n, k):
    rng = np.random.default_rng(seed)
    top = (1 << nbits) - 1
    alpha = rng.integers(0, top, n, dtype=np.uint64, endpoint=True)
    alpha[0] = 0
    alpha[-1] = top
    beta = rng.integers(-2 ** 63, 2 ** 63 - 1, (k, n) if k > 1 else n, dtype=np.int64)  # k output words
    s0 = rng.integers(-2 ** 63, 2 ** 63 - 1, (n, 2), dtype=np.int64)
    s1 = rng.integers(-2 ** 63, 2 ** 63 - 1, (n, 2), dtype=np.int64)
    cw = gen_dcf(alpha, beta, s0, s1, nbits)
    assert cw.shape == (cw_rows(nbits, k), n) and cw.dtype == np.int64
    near = np.clip(alpha.astype(np.int64) + rng.integers(-1, 2, n), 0, top).astype(np.uint64)
    for x in (rng.integers(0, top, n, dtype=np.uint64, endpoint=True), alpha, near,
              np.zeros(n, np.uint64), np.full(n, top, np.uint64)):
        got = eval_dcf(0, s0, cw, x, nbits) + eval_dcf(1, s1, cw, x, nbits)
        np.testing.assert_array_equal(got, np.where(x < alpha, beta, 0))


def test_dcf_key_alone_does_not_give_the_value():
    """One party's shares look random (not the 0/beta output): a smoke test of hiding."""
    rng = np.random.default_rng(0)
    n = 1000
    alpha = rng.integers(0, 1 << 40, n, dtype=np.uint64)
    s0, s1 = (rng.integers(-2 ** 63, 2 ** 63 - 1, (n, 2), dtype=np.int64) for _ in range(2))
    cw = gen_dcf(alpha, np.ones(n, np.int64), s0, s1, 40)
    y0 = eval_dcf(0, s0, cw, rng.integers(0, 1 << 40, n, dtype=np.uint64), 40)
    assert len(np.unique(y0)) == n


# ---------------------------------------------------------------- plans


def _shared_xy(n, shape):
    """A builder for n parties and x (alice's), y (bob's) loaded and shared."""
    b = Builder("t", ["alice", "bob", "carol"][:n])
    xs = []
    for k, tag in ((0, "x"), (1, "y")):
        v = b.emit("load", attrs={"tag": tag, "owner": k}, types=[TensorType("f32", shape, private(k))])
        xs.append(b.emit("share", [v]))
    return b, xs


def chain(n=2, shape=(3, 5), method="fss"):
    """x (alice), y (bob) shared; lt, gt, ge, le of (x, y), relu(x), relu(y - x), all secret."""
    b, (x, y) = _shared_xy(n, shape)
    a = {"method": method}
    outs = [b.emit(op, [x, y], a) for op in ("lt", "gt", "ge", "le")]
    outs.append(b.emit("relu", [x], a))
    outs.append(b.emit("relu", [b.emit("sub", [y, x])], a))
    return verify(b.finish(outs))


def one(op, n=2, shape=(3, 5), method="fss"):
    b, xs = _shared_xy(n, shape)
    out = b.emit(op, xs if op != "relu" else xs[:1], {"method": method})
    return verify(b.finish([out]))


def data(shape=(3, 5), seed=0, scale=100.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.round(torch.randn(shape, generator=g) * scale * 256) / 256
    y = torch.where(torch.rand(shape, generator=g) < 0.3, x, torch.round(torch.randn(shape, generator=g) * scale * 256) / 256)
    x.view(-1)[0] = 0.0
    y.view(-1)[0] = 0.0
    lim = 2.0 ** (39 - FRAC) - 1  # |x - y| < 2^40 ring units
    return {"alice": {"x": x.clamp(-lim, lim)}, "bob": {"y": y.clamp(-lim, lim)}}


def outputs(res, want):
    return [fixed.decode(sum(res.outputs[p][i].data for p in res.parties), FRAC, w.dtype) for i, w in enumerate(want)]


def check_exact(g, d, res):
    want = run_reference(g, data=d)
    for got, w in zip(outputs(res, want), want):
        assert got.dtype == w.dtype
        if w.dtype == torch.bool:
            assert torch.equal(got, w)
        else:
            assert (got - w).abs().max().item() == 0.0  # grid values: relu is exact


def check_cost(g, res):
    b = bounds.compute(g)
    assert b.exact, b.notes
    for p in res.parties:
        pb = b.party[p]
        assert (pb.rounds, pb.bytes_sent, pb.bytes_recv) == \
            (res.stats[p]["rounds"], res.stats[p]["bytes_sent"], res.stats[p]["bytes_recv"]), p
    assert b.dealer.bytes == res.stats["dealer"]["dealer_bytes"]
    names = list(res.parties)
    # dealt bytes reach every party; the last one also gets its corrections
    assert res.stats[names[0]]["dealer_bytes"] == b.dealer.dealt > 0
    assert res.stats[names[-1]]["dealer_bytes"] == b.dealer.bytes - b.dealer.dealt
    return b


# ---------------------------------------------------------------- the protocols


@pytest.mark.parametrize("op", ["lt", "gt", "ge", "le", "relu"])
def test_one_op_exact_rounds_bytes(op):
    shape = (4, 6)
    g, d = one(op, shape=shape), data(shape, seed=1)
    res = run_local(g, d, timeout=60)
    check_exact(g, d, res)
    b = check_cost(g, res)
    n = 24
    for p in res.parties:  # share is free (zero sharing): the protocol's one round
        assert res.stats[p]["rounds"] == 1
        assert res.stats[p]["bytes_sent"] == (8 if op == "relu" else 6) * n
    bits = run_local(one(op, shape=shape, method="bits"), d, timeout=60)
    assert {p: bits.stats[p]["rounds"] for p in bits.parties} == {p: 3 for p in bits.parties}
    per = (1296 if op == "relu" else 968) * n  # DCF correction words, to each party (relu: two words)
    assert b.dealer.dealt == per
    assert b.dealer.bytes == 2 * per + (16 if op == "relu" else 8) * n


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), scale=st.sampled_from([1e-3, 1.0, 1e4, 4e6]),
       shape=st.sampled_from([(1,), (2, 3), (7,), (0,)]))
def test_fss_agrees_with_the_plaintext(seed, scale, shape):
    g, d = chain(shape=shape), data(shape, seed, scale)
    res = run_local(g, d, timeout=60)
    check_exact(g, d, res)


def test_range_edges():
    big = 2.0 ** (40 - FRAC) - 2  # near the end of |x| < 2^40 ring units, exact in float32
    x = torch.tensor([big, -big, 0.0, ULP, -ULP, 3.0, -3.0])
    y = torch.zeros(7)
    d = {"alice": {"x": x}, "bob": {"y": y}}
    for op in ("lt", "gt", "relu"):
        g = one(op, shape=(7,))
        check_exact(g, d, run_local(g, d, timeout=60))


@pytest.mark.parametrize("transport", ["tls", "gloo"])
def test_processes(transport):
    g, d = chain(), data(seed=4)
    res = run_local(g, d, processes=True, transport=transport, timeout=60)
    check_exact(g, d, res)
    check_cost(g, res)
    assert max(res.stats[p]["rounds"] for p in res.parties) == 1  # one wave: every comparison and relu in 1 round


@pytest.mark.parametrize("comm", ["threads", "processes"])
def test_chunked_dealt_material(comm, monkeypatch):
    """Several chunks, each with dealt values, pulled by both parties: results and counters
    of the one-batch run."""
    g, d = chain(shape=(40,)), data((40,), seed=5)
    base = run_local(g, d, timeout=60)
    monkeypatch.setenv("PLANC_CHUNK_BYTES", "1000")
    res = run_local(g, d, timeout=60, **({"processes": True} if comm == "processes" else {}))
    check_exact(g, d, res)
    for who in ("alice", "bob", "dealer"):
        assert {k: res.stats[who][k] for k in COUNTERS} == {k: base.stats[who][k] for k in COUNTERS}, who
    assert res.stats["dealer"]["chunks"] >= 6


def test_blocks_split_big_requests(monkeypatch):
    monkeypatch.setattr(fss, "BLOCK", 7)
    g, d = chain(shape=(4, 5)), data((4, 5), seed=6)
    res = run_local(g, d, timeout=60)
    check_exact(g, d, res)
    b = check_cost(g, res)
    assert b.dealer.requests >= 6 * 3


def test_three_parties_refused():
    g = one("lt", n=3)
    d = data()
    with pytest.raises(PlanRuntimeError, match="method='fss' needs exactly 2 computing parties"):
        run_local(g, d, timeout=30)


def test_prepared_dealer_batch():
    """A worker's dealer makes the material before the parties connect (prepare_dealer):
    the dealt values go out from the batch, and the run is the same."""
    import threading

    from planc.runtime.comm.inproc import Network
    from planc.runtime.session import prepare_dealer, run_dealer, run_party

    g, d = chain(), data(seed=7)
    batch = prepare_dealer(g, 2, whole=False)
    assert batch.head is not None and batch.dealt
    net = Network(["alice", "bob", "dealer"])
    comms = [net.comm(r, 30) for r in range(3)]
    out, errors = {}, []

    def go(r):
        try:
            if r == 2:
                out[r] = run_dealer(g, comms[r], prepared=batch)
            else:
                out[r] = run_party(g, comms[r], data=d[["alice", "bob"][r]])
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
            net.fail(r, e)

    threads = [threading.Thread(target=go, args=(r,), daemon=True) for r in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    want = run_reference(g, data=d)
    for i, w in enumerate(want):
        got = fixed.decode(out[0][0][i].data + out[1][0][i].data, FRAC, w.dtype)
        assert torch.equal(got, w) if w.dtype == torch.bool else (got - w).abs().max().item() == 0.0
    b = bounds.compute(g)
    assert comms[2].stats.dealer_bytes == b.dealer.bytes and comms[0].stats.dealer_bytes == b.dealer.dealt


def test_in_a_loop_chosen_by_the_comparisons_pass():
    """relu inside fori_loop, its method set by the comparisons pass (objective rounds):
    the cost model's loop replay counts the dealt values of every trip."""
    import planc
    from planc.compile import compile as compile_plan

    @planc.plan(parties=["alice", "bob"])
    def looped():
        x = planc.share(planc.load("x", owner="bob", shape=(40,)))
        w = planc.share(planc.load("w", owner="alice", shape=(40,)))
        return planc.reveal(planc.fori_loop(4, lambda i, c: torch.relu(c * w * 0.5 + x) - 0.5 * x, x), to="bob")

    plan = compile_plan(looped.plan, objective="rounds")
    assert [n.attr("method") for n in plan.graph.walk() if n.op == "relu"] == ["fss"]
    g = torch.Generator().manual_seed(3)
    d = {"bob": {"x": torch.randn(40, generator=g)}, "alice": {"w": torch.rand(40, generator=g)}}
    (want,) = planc.run_reference(looped.plan, data=d)
    res = run_local(plan, d, timeout=60)
    assert (res.outputs["bob"][0] - want).abs().max() < 1e-3
    b = check_cost(plan, res)
    assert b.dealer.dealt == 4 * 40 * 1296  # relu: the two-word DCF
    assert res.stats["alice"]["rounds"] < run_local(looped.plan, d, timeout=60).stats["alice"]["rounds"]
