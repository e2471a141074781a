"""Setting up and running one party (or the dealer) over a communicator.

Setup (not counted as online traffic): each pair of parties agrees on a seed for zero
sharing (the lower rank sends it), and the dealer sends each party the seed of its
material. The dealer then runs the plan on shape-only tensors to learn every request,
makes the material and sends the last party its corrections: in one batch before the
online phase when they fit in one chunk (runtime/material.py: ``chunk_bytes()``), else
in chunks, each a header (JSON: the chunk's descriptors, its corrections' specs, its
first request, whether it is the last) and then one dealer batch:

- the dealer sends chunk 0 as soon as it is made (the last party gets it during setup);
- the last party, on receiving chunk k (not the last), sends the dealer a pull ("next",
  a setup message: no online round, no online bytes) and goes on; it reads chunk k+1
  when its requests go past chunk k;
- the dealer, once chunk k+1 is made, waits for that pull, then sends it, and makes
  the next. So the last party holds the chunk it uses and at most the next one (in its
  transport's queue), the dealer the chunk it makes and at most the one in flight:
  about two chunks each, whatever the plan's total. The dealer's waits are its
  communicator's (its timeout, a peer's failure); a chunk's online use must take less
  than the timeout (256 MiB: a few seconds of online work).

dealer_bytes counts every chunk's batch: the total is that of one batch.

Dealt parts (material.py: values every party gets the same copy of) travel to the last
party among its corrections, and to each other party as a *dealt chunk*: a header (JSON:
the (request, descriptor) of each value and their specs) and one dealer batch, only for
chunks that hold any. Chunk 0's goes out first, before the last party's chunk 0 and the
ready: the party reads it while it waits for the ready (so neither party's online phase
waits for that transfer; the dealer's send waits for the party's first exchange, which
needs nobody else). A later chunk's goes out once that party pulls it ("next", when its
protocols ask for one of its values), and the party counts that wait as dealer_wait_s
too. A plan without dealt parts sends nothing of this: messages and counts are those of
before.
"""
from __future__ import annotations

import json
import time

import torch

from planc.ir.graph import Graph

from . import fixed, prg
from . import protocols  # noqa: F401  (registers every protocol)
from .admission import admit
from .clients import for_computing, ncompute
from .errors import PlanRuntimeError
from .ranges import integral_names  # noqa: F401  (moved to ranges.py, where the cost model finds it too)
from .interpreter import Interpreter
from .material import DealerMaterial, PartyMaterial
from .party import ABSENT, Party

_DTYPES = {"int64": torch.int64, "bool": torch.bool}


def held(output):
    """What a party holds of one of its outputs: a tensor, its Shared, or None where it
    holds nothing (the interpreter's ABSENT)."""
    if output is ABSENT:
        return None
    return output


def _check_ranks(graph, comm, clients):
    """The communicator's ranks are the plan's computing parties, in order, and the dealer."""
    n = ncompute(graph, clients)
    if list(comm.names[:-1]) != list(graph.parties[:n]) or comm.nparties != n:
        raise PlanRuntimeError(None, comm.names[comm.rank] if comm.rank < len(comm.names) else None,
                               f"the run's ranks are {', '.join(comm.names)}, but the plan's computing parties "
                               f"are {', '.join(graph.parties[:n])} (then the dealer)")


def warm_up():
    """The first op on meta tensors imports part of torch (about a second, once per
    process): do it during setup, not in the middle of the online phase."""
    torch.empty(1, dtype=torch.int64, device="meta") + 1


def run_party(graph: Graph, comm, *, data=None, constants=None, inputs=(), frac=fixed.DEFAULT_FRAC_BITS,
              merge=True, tick=None, policy=None, lazy=True, clients=(), client_shares=None, reveals_out=None):
    """Run `graph` as party `comm.rank`; returns (outputs, timings). The party admits the
    plan first (runtime/admission.py: `policy`, default the default policy): it refuses a
    plan that breaks the policy or needs more than its limits, and checks its inputs'
    ranges.

    clients: the plan's non-computing parties (runtime/clients.py); client_shares: this
    party's shares of their values {value name: int64 tensor}; reveals_out: a dict filled
    with what this party keeps for each client {client name: {value name: entry}}."""
    _check_ranks(graph, comm, clients)
    # admission: the policy's rules, this party's resource bounds, the input ranges
    admitted = admit(graph, policy, party=comm.rank, constants=constants or {}, inputs=inputs, merge=merge,
                     lazy=lazy, frac=frac, clients=clients)
    graph, from_clients = for_computing(graph, clients)  # the plan as the computing parties hold it
    n = comm.nparties
    rank = comm.rank
    c0 = time.thread_time()
    t0 = time.perf_counter()
    warm_up()
    pair = {}
    for j in range(n):
        if j > rank:
            pair[j] = prg.new_seed()
            comm.send_bytes(j, str(pair[j]).encode())
    for j in range(n):
        if j < rank:
            pair[j] = int(comm.recv_bytes(j).decode())
    seed = int(comm.recv_bytes(comm.dealer).decode())
    # The dealer says when the last party holds its first chunk of material; until then
    # the others' first exchange would only wait for the dealer's making. That wait is
    # not online time: it is taken at the first exchange (a party failing on its own
    # data at a first local node still fails at once) and left out of online_s.
    waited = [0.0] if rank == n - 1 else []
    early = None  # a party other than the last: chunk 0's dealt values, read with the ready
    if rank == n - 1:
        descriptors, corrections, first, last = _recv_chunk(comm)
        material = PartyMaterial(rank, n, seed, corrections, descriptors, first=first, last=last,
                                 more=lambda: _recv_chunk(comm))
    else:
        early = []  # chunk 0's dealt values, read with the ready

        def more_dealt():  # after the ready; the wait for the dealer's material is not online time
            if not waited:
                waited.append(_await_ready(comm, rank, early))
            if early:
                return early.pop()
            t = time.perf_counter()
            got = _recv_dealt(comm, rank)
            waited[0] += time.perf_counter() - t
            return got

        material = PartyMaterial(rank, n, seed, more_dealt=more_dealt)
    t1 = time.perf_counter()
    P = Party(rank=rank, nparties=n, names=comm.names[:n], material=material, frac=frac, pair_seeds=pair, comm=comm,
              integral_names=integral_names(graph, constants or {}), lazy=lazy,
              clients=tuple(range(n, len(graph.parties))))
    interp = Interpreter(graph, P, data=data, constants=constants, inputs=inputs, merge=merge,
                         client_shares=client_shares, from_clients=from_clients)
    interp.input_limits = admitted.input_limits  # admission: loads and inputs checked against them
    interp.tick = tick
    interp.check = comm.check  # a peer's failure or the deadline stops this party between nodes

    def exchange(ex):
        if not waited:
            waited.append(_await_ready(comm, rank, early))
        return comm.exchange(ex.sends, ex.recvs)

    outs = interp.run(exchange)
    if not waited:
        waited.append(_await_ready(comm, rank, early))
    P.material.finish()
    if reveals_out is not None:
        reveals_out.update({graph.parties[k]: kept for k, kept in P.for_clients.items()})
    t2 = time.perf_counter()
    timings = {"setup_s": t1 - t0, "online_s": t2 - t1 - waited[0], "dealer_wait_s": waited[0],
               "cpu_s": time.thread_time() - c0}
    if rank == n - 1:  # the dealer's chunks as received (runtime/material.py)
        timings.update(chunks=P.material.chunks, chunk_max=P.material.chunk_max)
    return outs, timings


def _recv_chunk(comm):
    """The last party: one chunk of material (header, batch); a pull for the next one
    if it is not the last. Returns (descriptors, corrections, first, last)."""
    head = json.loads(comm.recv_bytes(comm.dealer).decode())
    specs = [(tuple(s), _DTYPES[d]) for s, d in head["specs"]]
    corrections = comm.recv_dealer_batch(specs) if specs else []
    last = head.get("last", True)
    if not last:
        comm.send_bytes(comm.dealer, _PULL)
    return head["descriptors"], corrections, head.get("first", 0), last


_PULL = b"next"
_READY = b"ready"
_DEALT_HEAD_MAX = 16 << 20  # a dealt chunk's header (descriptors): far below this


def _recv_dealt(comm, rank):
    """A party other than the last: pull its next dealt chunk; (entries, tensors)."""
    comm.send_bytes(comm.dealer, _PULL)
    return _dealt_body(comm, rank, comm.recv_bytes(comm.dealer, max_bytes=_DEALT_HEAD_MAX))


def _dealt_body(comm, rank, raw):
    """A dealt chunk from its header `raw`: (entries, tensors)."""
    try:
        head = json.loads(raw.decode())
    except ValueError:
        raise PlanRuntimeError(None, comm.names[rank], "the dealer sent a malformed dealt chunk header") from None
    try:
        entries = [(int(i), str(d)) for i, d in head["entries"]]
        specs = [(tuple(int(k) for k in s), torch.int64) for s, d in head["specs"] if d == "int64"]
        if len(specs) != len(head["specs"]) or len(entries) != len(specs) or not specs or \
                any(k < 0 for s, _ in specs for k in s):
            raise ValueError("entries and specs")
    except (KeyError, TypeError, ValueError, AttributeError):
        raise PlanRuntimeError(None, comm.names[rank], "the dealer sent a malformed dealt chunk header") from None
    return entries, comm.recv_dealer_batch(specs)


def _send_dealt(comm, dealt, pull=True):
    """The dealer: each party other than the last gets `dealt` [(request, descriptor,
    tensor)], once it pulls it (pull) or at once (chunk 0); nothing for a chunk without
    dealt values."""
    if not dealt:
        return
    head = json.dumps({"entries": [[i, d] for i, d, _ in dealt],
                       "specs": [[list(t.shape), "int64"] for _, _, t in dealt]}).encode()
    tensors = [t for _, _, t in dealt]
    for k in range(comm.nparties - 1):
        got = comm.recv_bytes(k, max_bytes=len(_PULL)) if pull else _PULL
        if got != _PULL:
            raise PlanRuntimeError(None, "dealer", f"{comm.names[k]} sent {got!r} where a pull was expected")
        comm.send_bytes(k, head)
        comm.send_dealer_batch(k, tensors)


def _await_ready(comm, rank, early=None) -> float:
    """A party other than the last: wait for the dealer's ready, reading chunk 0's dealt
    values into `early` if they come first; the seconds waited."""
    t0 = time.perf_counter()
    got = comm.recv_bytes(comm.dealer, max_bytes=_DEALT_HEAD_MAX)
    if got != _READY and early is not None and got[:1] == b"{":
        early.append(_dealt_body(comm, rank, got))
        got = comm.recv_bytes(comm.dealer, max_bytes=len(_READY))
    if got != _READY:
        raise PlanRuntimeError(None, comm.names[rank], f"the dealer sent {got[:40]!r} where {_READY!r} was expected")
    return time.perf_counter() - t0


def _ready(comm):
    """The dealer: the last party holds its first chunk; the others may start."""
    for k in range(comm.nparties - 1):
        comm.send_bytes(k, _READY)


def _head(descriptors, corrections, first, last, chunk):
    return {"descriptors": descriptors, "first": first, "last": last, "chunk": chunk,
            "specs": [[list(t.shape), "bool" if t.dtype == torch.bool else "int64"] for t in corrections]}


class _ChunkSender:
    """The dealer's flush: chunk 0 at once, each later one after the last party's pull."""

    def __init__(self, comm):
        self.comm, self.k = comm, 0

    def __call__(self, descriptors, corrections, first, last, dealt=()):
        comm, dst = self.comm, self.comm.nparties - 1
        if self.k == 0:
            _send_dealt(comm, dealt, pull=False)  # read by the others with the ready: before the last party starts
        if self.k > 0:
            got = comm.recv_bytes(dst, max_bytes=len(_PULL))
            if got != _PULL:
                raise PlanRuntimeError(None, "dealer", f"{comm.names[dst]} sent {got!r} where a pull was expected")
        comm.send_bytes(dst, json.dumps(_head(descriptors, corrections, first, last, self.k)).encode())
        if corrections:
            comm.send_dealer_batch(dst, corrections)
        if self.k == 0:
            _ready(comm)
        else:
            _send_dealt(comm, dealt)
        self.k += 1


def run_dealer(graph: Graph, comm, *, constants=None, inputs=(), frac=fixed.DEFAULT_FRAC_BITS, merge=True,
               lazy=True, policy=None, clients=(), prepared=None):
    """Make and send the material of `graph`; the dealer admits the plan first (its own
    memory and the material's size, under `policy`: default the default policy).
    clients: the plan's non-computing parties, for which the dealer makes nothing.
    prepared: a DealerBatch made earlier by prepare_dealer for this plan (a daemon makes
    it while the other parties are still accepting): then only the sending is left."""
    _check_ranks(graph, comm, clients)
    n = comm.nparties
    if prepared is None:
        admit(graph, policy, party="dealer", constants=constants or {}, inputs=inputs, merge=merge, lazy=lazy,
              frac=frac, clients=clients)  # before anything is sent (cached: prepare_dealer's is free)
        # the seeds first: a party that fails at its first node must not wait for all the material to fail
        seeds = [prg.new_seed() for _ in range(n)]
        for k in range(n):
            comm.send_bytes(k, str(seeds[k]).encode())
        # made and sent as it goes: in chunks if large (the last one when the plan ends)
        made = prepare_dealer(graph, n, constants=constants, inputs=inputs, frac=frac, merge=merge,
                              lazy=lazy, policy=policy, clients=clients, check=comm.check, seeds=seeds,
                              flush=_ChunkSender(comm))
        return {"dealer_s": made.make_s, "make_s": made.make_s, "requests": made.requests, "cpu_s": made.cpu_s,
                "chunks": made.chunks, "chunk_max": made.chunk_max}
    elif prepared.nparties != n:
        raise ValueError(f"material made for {prepared.nparties} parties, the run has {n}")
    else:
        for k in range(n):
            comm.send_bytes(k, str(prepared.seeds[k]).encode())
    t0 = time.perf_counter()
    _send_dealt(comm, prepared.dealt, pull=False)
    comm.send_bytes(n - 1, json.dumps(prepared.head).encode())
    if prepared.corrections:
        comm.send_dealer_batch(n - 1, prepared.corrections)
    _ready(comm)
    return {"dealer_s": prepared.make_s + time.perf_counter() - t0, "make_s": prepared.make_s,
            "requests": prepared.requests, "cpu_s": prepared.cpu_s, "chunks": 1, "chunk_max": prepared.chunk_max}


class DealerBatch:
    """All of a run's dealer material, made before any party is connected: the parties'
    seeds, the last party's corrections and their descriptors (one chunk). Made with a
    flush (run_dealer), the corrections went out in chunks: head is None then."""

    def __init__(self, nparties, seeds, head, corrections, requests, make_s, cpu_s, chunks=1, chunk_max=0,
                 dealt=()):
        self.nparties, self.seeds, self.head, self.corrections = nparties, seeds, head, corrections
        self.dealt = list(dealt)  # (request, descriptor, tensor): also among corrections, for the other parties
        self.requests, self.make_s, self.cpu_s = requests, make_s, cpu_s
        self.chunks, self.chunk_max = chunks, chunk_max


class TooLarge(RuntimeError):
    """prepare_dealer without a flush: the material is more than one chunk (make it at start)."""


def _too_large(descriptors, corrections, first, last, dealt=()):
    raise TooLarge("the dealer material is more than one chunk: made and sent in chunks at start")


def prepare_dealer(graph: Graph, nparties: int, *, constants=None, inputs=(), frac=fixed.DEFAULT_FRAC_BITS,
                   merge=True, lazy=True, policy=None, clients=(), check=None, seeds=None, flush=None,
                   whole=True) -> DealerBatch:
    """Admit the plan as the dealer and make its material (no communicator needed: the
    material depends on the plan and fresh seeds only). check(where) may raise to stop.
    flush: where chunks go as they are made (run_dealer's sender; see material.py).
    Without one, all the material is kept in one batch — with whole=False only while it
    fits in one chunk: past it, TooLarge is raised (a worker then makes it at start)."""
    if ncompute(graph, clients) != nparties:
        raise PlanRuntimeError(None, "dealer", f"material for {nparties} parties, but the plan has "
                                               f"{ncompute(graph, clients)} computing parties")
    admitted = admit(graph, policy, party="dealer", constants=constants or {}, inputs=inputs, merge=merge,
                     lazy=lazy, frac=frac, clients=clients)  # admission
    if flush is None and not whole and getattr(admitted.bounds.dealer, "chunks", False):
        raise TooLarge("the dealer material is more than one chunk (the cost model's exact total): made and sent "
                       "in chunks at start")
    graph, from_clients = for_computing(graph, clients)
    n = nparties
    c0 = time.thread_time()
    t0 = time.perf_counter()
    warm_up()
    seeds = list(seeds) if seeds is not None else [prg.new_seed() for _ in range(n)]
    if flush is None and not whole:
        flush = _too_large
    material = DealerMaterial(n, seeds, check=check, flush=flush)  # stops making material once check raises
    P = Party(rank=0, nparties=n, names=list(graph.parties[:n]), material=material, frac=frac, meta=True,
              integral_names=integral_names(graph, constants or {}), lazy=lazy,
              clients=tuple(range(n, len(graph.parties))))
    interp = Interpreter(graph, P, constants=constants, inputs=inputs, merge=merge, from_clients=from_clients)
    interp.input_limits = admitted.input_limits  # admission
    if check is not None:
        interp.check = check

    def fake(ex):
        return {s: [torch.empty(sh, dtype=dt, device="meta") for sh, dt in specs] for s, specs in ex.recvs.items()}

    try:
        interp.run(fake)
    except PlanRuntimeError as e:  # the interpreter names the node: TooLarge is no error of it
        cause = e
        while cause is not None and not isinstance(cause, TooLarge):
            cause = cause.__cause__
        if cause is not None:
            raise TooLarge(str(cause)) from None
        raise
    if material.flush is _too_large:
        material.flush = None  # it fit: one batch
    material.finish()
    head = None if material.flush is not None else _head(material.descriptors, material.corrections, 0, True, 0)
    return DealerBatch(n, seeds, head, material.corrections if head else [], material.counter,
                       time.perf_counter() - t0, time.thread_time() - c0, material.chunks, material.chunk_max,
                       material.dealt if head else ())
