"""A service's loops over its mesh: the leader's batching, a follower's and the dealer's.

Rank 0 leads: it gathers the queries that reach it (``gather``: the batch closes at the
largest plan size; else once ``window`` passes without a new query, or ``MAX_WINDOWS``
windows after the first; while it holds fewer queries than the last batch did it waits
for them up to ``STRAGGLER_SHARE`` of the last run instead — under load, the clients of
the last batch send their next queries spread out, and one left out would cost a run of
its own), takes at most what the request limit has left (the rest is refused,
``limit``), and tells every rank ``{"op": "run", "size": B, "qids": [...]}`` over the
mesh; B is the smallest plan size that holds them (rows past the queries are zero
shares: nobody's answer). Every serving worker runs that batch's plan with ``run_party``
(``run_batch``: the model's weights are a client party's values, the batch's input the
rows of its queries' shares; the output, revealed to the plan's ``client`` party, stays
a share here, row j going back to query j); the dealer answers the same command with
material from its pool (``material``). While idle the leader sends a heartbeat every
``HEARTBEAT_S``, so every wait on the mesh has the mesh's timeout. A follower whose share
of a scheduled query has not arrived within ``SHARE_WAIT`` computes with a zero row for it
and answers that query with an error.

These are functions of the Service (serving_run.py), which runs them in its thread.
"""
from __future__ import annotations

import json
import queue
import time

import torch

from .wire import Refusal

HEARTBEAT_S = 1.0
SHARE_WAIT = 5.0  # seconds a follower waits for a scheduled query's share
MAX_COMMAND = 1 << 20
MAX_WINDOWS = 4  # a batch waits at most this many windows after its first query
STRAGGLER_SHARE = 0.5  # ... or, while smaller than the last batch, this share of the last run's wall time
STRAGGLER_MAX_S = 0.25  # (at most)


def tell(svc, cmd: dict):
    data = json.dumps(cmd).encode()
    for r in range(1, len(svc.names)):
        svc.comm.send_bytes(r, data)


def lead(svc):
    biggest = svc.sizes[-1]
    tell(svc, {"op": "warm", "size": svc.sizes[0]})  # one uncounted batch of zeros: first-run costs
    run_batch(svc, {"size": svc.sizes[0], "qids": []}, warm=True)
    while True:
        if svc.stopping is not None:
            tell(svc, {"op": "stop", "state": "stopped", "why": svc.stopping})
            return svc.end("stopped", why=svc.stopping)
        try:
            first = svc.arrivals.get(timeout=HEARTBEAT_S)
        except queue.Empty:
            tell(svc, {"op": "idle"})
            svc.comm.check()
            continue
        t_first = time.monotonic()
        batch = gather(svc, first, biggest)
        gather_s, idle_s = time.monotonic() - t_first, t_first - svc.ran_at
        batch = [q for q in batch if not q.done.is_set()]  # its client gave up meanwhile
        room = svc.limit - svc.served
        take, over = batch[:room], batch[room:]
        cmd = {"op": "run" if take else "refuse", "qids": [q.qid for q in take],
               "refused": [q.qid for q in over], "why": limit_text(svc)}
        if take:
            cmd["size"] = next(b for b in svc.sizes if b >= len(take))
        tell(svc, cmd)
        svc.refuse_ids(cmd["refused"], cmd["why"])
        if take:
            t0 = time.monotonic()
            run_batch(svc, cmd, take)
            svc.ran_at = time.monotonic()
            svc.expect, svc.run_s = len(take), svc.ran_at - t0
            svc.last.update(gather_s=round(gather_s, 4), idle_s=round(idle_s, 4))
        if svc.served >= svc.limit:
            why = f"served its limit of {svc.limit} requests"
            tell(svc, {"op": "stop", "state": "done", "why": why})
            return svc.end("done", why=why)


def gather(svc, first, biggest: int) -> list:
    """The batch that `first` opens. It closes at `biggest` queries; else once `window`
    passes without a new query, or MAX_WINDOWS windows after the first: whichever comes
    first. While it holds fewer queries than the last batch did (as many clients as
    then are likely still sending: under load their next queries arrive spread out),
    it waits for them up to STRAGGLER_SHARE of the last batch's run instead: a
    straggler left out would cost a run of its own, nearly as dear as the batch."""
    t0 = time.monotonic()
    batch, cap = [first], t0 + MAX_WINDOWS * svc.window
    expect = min(biggest, svc.expect)
    long_cap = max(cap, t0 + min(STRAGGLER_MAX_S, STRAGGLER_SHARE * svc.run_s))
    while len(batch) < biggest:
        now = time.monotonic()
        if len(batch) < expect:
            left = long_cap - now
        else:
            left = min(svc.window, cap - now)
        try:
            batch.append(svc.arrivals.get(timeout=left) if left > 0 else svc.arrivals.get_nowait())
        except queue.Empty:
            break
    return batch


def limit_text(svc) -> str:
    return f"service {svc.model} ({svc.sid}) has served its limit of {svc.limit} requests"


def follow(svc):
    while True:
        raw = svc.comm.recv_bytes(0)
        if len(raw) > MAX_COMMAND:
            raise Refusal(400, "service", f"a command of {len(raw):,} bytes from the leader {svc.workers[0]}")
        cmd = json.loads(raw.decode())
        op = cmd.get("op")
        if op == "idle":
            continue
        if op == "stop":
            return svc.end("done" if cmd.get("state") == "done" else "stopped", why=cmd.get("why"))
        if op == "warm":
            if svc.dealer:
                material(svc, {"size": cmd.get("size"), "qids": []}, warm=True)
            else:
                run_batch(svc, {"size": cmd.get("size"), "qids": []}, warm=True)
            continue
        if op not in ("run", "refuse"):
            raise Refusal(400, "service", f"unknown command {op!r} from the leader {svc.workers[0]}")
        svc.refuse_ids(cmd.get("refused") or [], cmd.get("why") or "refused by the leader")
        if op == "run":
            if svc.dealer:
                material(svc, cmd)
            else:
                run_batch(svc, cmd)


def check_batch(svc, cmd, warm=False) -> tuple:
    b, qids = cmd.get("size"), cmd.get("qids")
    if b not in svc.plans or not isinstance(qids, list) or not (0 if warm else 1) <= len(qids) <= b:
        raise Refusal(400, "service", f"the leader {svc.workers[0]} asked for a batch of size {b!r} with "
                                      f"{len(qids) if isinstance(qids, list) else qids!r} queries; this "
                                      f"service's sizes are {svc.sizes}")
    if svc.served + len(qids) > svc.limit:
        raise Refusal(403, "limit", f"the leader {svc.workers[0]} asked for {len(qids)} more queries after "
                                    f"{svc.served}; the limit is {svc.limit}")
    return b, qids


def material(svc, cmd, warm=False):
    from planc.runtime.session import run_dealer

    b, qids = check_batch(svc, cmd, warm)
    p = svc.plans[b]
    prepared = svc.pool.take(b)
    run_dealer(p.graph, svc.comm, constants=p.constants, frac=p.frac, policy=svc.policy,
               clients=svc.clients, prepared=prepared)
    if not warm:
        svc.served += len(qids)
        svc.batches += 1
        svc.batch_sizes[len(qids)] += 1


def collect(svc, qids) -> list:
    """This worker's Query for each scheduled id (None where its share never came)."""
    end = time.monotonic() + SHARE_WAIT
    out = []
    with svc.cv:
        for qid in qids:
            while qid not in svc.queries and time.monotonic() < end and svc.state == "serving":
                svc.cv.wait(min(0.05, max(0.0, end - time.monotonic())))
            out.append(svc.queries.get(qid))
    return out


def run_batch(svc, cmd, qs=None, warm=False):
    """Run one batch as a serving worker; `qs`: the leader's own Query objects."""
    from planc.runtime.comm.base import Counters
    from planc.runtime.session import run_party

    b, qids = check_batch(svc, cmd, warm)
    t0 = time.perf_counter()
    p = svc.plans[b]
    qs = qs if qs is not None else collect(svc, qids)
    x = torch.zeros((b, *svc.row), dtype=torch.int64)
    for j, q in enumerate(qs):
        if q is not None:
            x[j] = q.share[0]
    shares = {v: svc.weights[tag] for v, tag in p.weights.items()}
    shares[p.query] = x
    svc.comm.stats = Counters()  # this batch's rounds and bytes
    kept: dict = {}
    _, timings = run_party(p.graph, svc.comm, constants=p.constants, frac=p.frac, policy=svc.policy,
                           clients=svc.clients, client_shares=shares, reveals_out=kept)
    if warm:
        return
    (entry,) = kept["client"].values()
    share, head = entry["share"], {"extra": int(entry.get("extra", 0)), "dtype": entry.get("dtype")}
    for j, (qid, q) in enumerate(zip(qids, qs)):
        if q is None:
            with svc.cv:
                svc.gone[qid] = f"its share did not reach {svc.workers[svc.rank]} within {SHARE_WAIT:g} s"
            continue
        svc.answer(q, result=({**head, "qid": qid, "batch": len(qids), "size": b,
                                 "server_s": round(time.monotonic() - q.t0, 4)}, {"y": share[j:j + 1]}))
    svc.served += len(qids)
    svc.batches += 1
    svc.batch_sizes[len(qids)] += 1
    svc.last = {**svc.comm.stats.as_dict(), "queries": len(qids), "size": b,
                 "wall_s": round(time.perf_counter() - t0, 4), "online_s": round(timings["online_s"], 4),
                 "cpu_s": round(timings["cpu_s"], 4)}
