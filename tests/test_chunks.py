"""Dealer material in chunks (runtime/material.py, runtime/session.py): a plan whose
corrections span several chunks (a tiny PLANC_CHUNK_BYTES) gives the unchunked run's
results and counters, over threads and processes (TLS, gloo), and the chunks held at the
dealer and the last party stay within one chunk plus a request — as the cost model says."""
from __future__ import annotations

import multiprocessing

import pytest
import torch

import planc
from planc.runtime import bounds
from planc.runtime.local import run_local
from planc.runtime.session import TooLarge, prepare_dealer

CHUNK = 1000  # bytes: a request or two a chunk
COUNTERS = ("rounds", "bytes_sent", "bytes_recv", "messages", "dealer_bytes")


@planc.plan(parties=["alice", "bob"])
def looped():
    x = planc.share(planc.load("x", owner="bob", shape=(40,)))
    w = planc.share(planc.load("w", owner="alice", shape=(40,)))
    y = planc.fori_loop(8, lambda i, c: c * w * 0.5 + x, x)
    return planc.reveal(torch.relu(y), to="bob")


def _data():
    g = torch.Generator().manual_seed(3)
    return {"bob": {"x": torch.randn(40, generator=g)}, "alice": {"w": torch.rand(40, generator=g)}}


_BASE: dict = {}


def _unchunked():
    if not _BASE:
        _BASE["res"] = run_local(looped.plan, _data(), timeout=60)
    return _BASE["res"]


@pytest.mark.parametrize("comm", ["threads", "processes", "processes-gloo"])
def test_chunked_material_matches_unchunked(comm, monkeypatch):
    base = _unchunked()
    assert base.stats["dealer"]["chunks"] == 1 and base.stats["bob"]["chunks"] == 1
    monkeypatch.setenv("PLANC_CHUNK_BYTES", str(CHUNK))
    kw = {} if comm == "threads" else {"processes": True, **({"transport": "gloo"} if comm == "processes-gloo" else {})}
    res = run_local(looped.plan, _data(), timeout=60, **kw)
    (want,) = planc.run_reference(looped.plan, data=_data())
    got = res.outputs["bob"][0]
    assert torch.allclose(got, want, atol=2e-3), (got - want).abs().max()
    assert torch.allclose(got, base.outputs["bob"][0], atol=2e-3)
    for who in ("alice", "bob", "dealer"):  # chunk transfers are dealer traffic: the online figures unchanged
        assert {k: res.stats[who][k] for k in COUNTERS} == {k: base.stats[who][k] for k in COUNTERS}, who
    d, last = res.stats["dealer"], res.stats["bob"]
    total = base.stats["dealer"]["dealer_bytes"]
    assert d["chunks"] == last["chunks"] >= 4, (d["chunks"], total)
    b = bounds.compute(looped.plan)
    assert b.dealer.chunks and CHUNK < b.dealer.chunk_bytes < total
    # measured: no chunk held more than the chunk size plus one request (the cost model's bound)
    bound = b.dealer.chunk_bytes
    assert 0 < d["chunk_max"] <= bound and 0 < last["chunk_max"] <= bound, (d["chunk_max"], last["chunk_max"])
    # the cost model: the last party holds two chunks, not the total
    held = b.party["bob"].parts["dealer corrections held"]
    assert last["chunk_max"] <= held // 2 and held <= 2 * bound, held
    if comm != "threads":
        assert not multiprocessing.active_children()


@planc.plan(parties=["alice", "bob"])
def looped_long():
    x = planc.share(planc.load("x", owner="bob", shape=(40,)))
    w = planc.share(planc.load("w", owner="alice", shape=(40,)))
    return planc.reveal(planc.fori_loop(300, lambda i, c: c * w * 0.5 + x, x), to="bob")


def test_bounds_peaks_follow_chunking(monkeypatch):
    """The estimates: two chunks held at the last party and the dealer, not the total."""
    whole = bounds.compute(looped_long.plan)
    monkeypatch.setenv("PLANC_CHUNK_BYTES", str(CHUNK))
    chunked = bounds.compute(looped_long.plan)
    assert not whole.dealer.chunks and chunked.dealer.chunks
    total = whole.party["bob"].parts["dealer corrections held"]
    assert total > 50 * chunked.dealer.chunk_bytes
    assert chunked.party["bob"].parts["dealer corrections held"] == 2 * chunked.dealer.chunk_bytes
    assert chunked.dealer.bytes == whole.dealer.bytes  # the total is exact and unchanged
    assert chunked.party["bob"].parts["dealer corrections held"] < whole.party["bob"].parts["dealer corrections held"]
    assert chunked.dealer.peak_bytes < whole.dealer.peak_bytes


def test_prepared_ahead_only_within_one_chunk(monkeypatch):
    batch = prepare_dealer(looped.plan.graph, 2, whole=False)  # fits: one batch, as before
    assert batch.head is not None and batch.head["last"] and batch.chunks == 1
    monkeypatch.setenv("PLANC_CHUNK_BYTES", str(CHUNK))
    with pytest.raises(TooLarge):  # a worker then makes it at start, in chunks
        prepare_dealer(looped.plan.graph, 2, whole=False)
