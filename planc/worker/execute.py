"""Running one accepted run as this daemon's party (or as the dealer), in a thread.

The control plane (app.py) only checks and records; here a run meets the data plane:

- at acceptance ``bind`` opens the run's listener — a TLS ``Listener`` on
  ``data_host``, port 0 (or, on the explicitly insecure gloo transport, rank 0's
  rendezvous store) — and its port goes back to the submitter; the dealer starts making
  the run's material then (``prepare``), while the other parties are still accepting;
- at start ``launch`` checks the peers' table against the identities the run was
  submitted with (a submitter cannot point a rank at another identity than the one this
  worker admitted the plan for), then a thread builds the communicator, loads this
  party's catalogue tensors for the plan's loads, and calls ``run_party`` (``run_dealer``
  for the dealer) with this worker's own policy: the runtime admits the plan once more;
- outputs are classified: a value revealed to all is reported with its value, one
  revealed to this party is written to ``outputs_dir/<run_id>/out<i>.safetensors`` (the
  API gives its path, never the value), a share stays here under a handle, and the
  shares of values revealed to clients wait for those clients (``/reveals``);
- ``release`` closes the communicator, the listener and the store, whatever happened.

A failure becomes the run's error as an ``ErrorRecord`` (runtime/errors.py): the node,
the party and the user's source line, as JSON. Cancelling a running run fails it from
inside: the communicator's checks raise, and its failure reaches the peers.
"""
from __future__ import annotations

import threading
import time

from . import linking
from .wire import Refusal


class Cancelled(RuntimeError):
    """The run was cancelled through the API."""


def bind(run, cfg, identity):
    """Open the run's data-plane endpoint; its port (None where nothing is bound)."""
    sub = run.sub
    if cfg.transport == "tls":
        from planc.runtime.comm.tls import Listener

        run.listener = Listener(identity, host=cfg.data_host, port=0)
        run.data_port = run.listener.port
    elif sub.rank == 0:  # gloo: rank 0 hosts the run's rendezvous store
        from planc.runtime.comm.dist import host_store

        run.store = host_store(cfg.data_host, 0, len(sub.names), sub.timeout)
        run.data_port = run.store.port
    return run.data_port


class Prepared:
    """The dealer's material for an accepted run, made in a thread of its own from the
    moment of acceptance (it needs the plan only, no peer), so that at start only the
    sending is left; the wait for the other parties' acceptance and for the start hides it.
    Only material that fits in one chunk is made ahead (runtime/material.py): past it,
    making stops (TooLarge) and the batch is None — run_dealer then makes and sends the
    chunks at start, in bounded memory."""

    def __init__(self, run, policy):
        self.batch = self.error = None
        self.thread = threading.Thread(target=self._make, args=(run, policy), daemon=True,
                                       name=f"planc-material-{run.run_id}")
        self.thread.start()

    def _make(self, run, policy):
        from planc.runtime.session import prepare_dealer

        sub = run.sub

        def check(where=None):  # stop making material for a run that ended before it started
            if run.cancel_reason is not None or run.state not in ("accepted", "running"):
                raise Cancelled(run.cancel_reason or f"run {sub.run_id} is {run.state}")

        from planc.runtime.session import TooLarge

        try:
            self.batch = prepare_dealer(sub.graph, len(sub.parties), constants=sub.plan.constants, inputs=sub.inputs,
                                        frac=sub.frac, policy=policy, clients=tuple(sub.clients), check=check,
                                        whole=False)
        except TooLarge:
            self.batch = None  # chunked: made at start
        except BaseException as e:  # noqa: BLE001 — the run's error, raised where it starts
            self.error = e

    def result(self, timeout):
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError(f"the dealer's material was not ready within {timeout:g} s")
        if self.error is not None:
            raise self.error
        return self.batch


def prepare(run, policy):
    """At acceptance: the dealer starts making the run's material (for a plan that calls
    a model, only once the architecture has come: at start)."""
    if run.sub.rank == len(run.sub.parties) and run.sub.model_owner is None:
        run.prepared = Prepared(run, policy)


def release(run):
    run.prepared = None  # the material of a run that will not use it is dropped here
    for what in ("comm", "listener"):
        obj = getattr(run, what)
        if obj is not None:
            try:
                obj.close()
            except Exception:  # noqa: BLE001 — releasing must not fail
                pass
            if what == "comm":  # _watch's wrappers refer to the comm: break the cycle, free its sockets now
                for k in ("check", "_check_peers"):
                    vars(obj).pop(k, None)
                if hasattr(obj, "store"):
                    obj.store = None
            setattr(run, what, None)
    run.store = None


def peers_of(run, body) -> dict:
    """The start body's peers {rank: (host, port, identity)}, checked against the run."""
    sub = run.sub
    peers = body.get("peers") if isinstance(body, dict) else None
    if not isinstance(peers, dict):
        raise Refusal(400, "body", "field 'peers': expected {rank: {host, port, identity}}")
    out = {}
    world = len(sub.names)
    for k, v in peers.items():
        try:
            r = int(k)
        except (TypeError, ValueError):
            raise Refusal(400, "body", f"field 'peers': {k!r} is not a rank") from None
        if not 0 <= r < world:
            raise Refusal(400, "body", f"field 'peers': rank {r} outside 0..{world - 1}")
        if r == sub.rank:
            continue
        port = v.get("port") if isinstance(v, dict) else None
        if not isinstance(v, dict) or not isinstance(v.get("host"), str) or not isinstance(v.get("identity"), str) \
                or not (port is None or (type(port) is int and 0 < port <= 65535)):
            raise Refusal(400, "body", f"field 'peers.{k}': expected {{host: str, port: int (null where the rank "
                                       f"reported none), identity: str}}")
        want = sub.identity_of(r)
        if v["identity"] != want:
            raise Refusal(400, "peers", f"field 'peers.{k}': rank {r} ({sub.names[r]}) was submitted as "
                                        f"{want!r}, not {v['identity']!r}")
        out[r] = (v["host"], v["port"], v["identity"])
    return out


def comm_for(run, cfg, identity, peers):
    sub = run.sub
    names = sub.names
    if cfg.transport == "tls":
        from planc.runtime.comm.tls import TLSComm

        missing = [r for r in range(len(names)) if r != sub.rank and (r not in peers or peers[r][1] is None)]
        if missing:
            raise Refusal(400, "peers", f"field 'peers': no address for rank {missing[0]} ({names[missing[0]]})")
        return TLSComm(sub.rank, names, sub.timeout, identity=identity, listener=run.listener, peers=peers,
                       run_id=sub.run_id)
    from planc.runtime.comm.dist import DistComm

    prefix = f"planc/{sub.run_id}"
    if sub.rank == 0:
        return DistComm(0, names, sub.timeout, store=run.store, bind=cfg.data_host, prefix=prefix)
    if 0 not in peers or peers[0][1] is None:
        raise Refusal(400, "peers", "field 'peers': the gloo transport needs rank 0's address and port")
    host, port, _ = peers[0]
    return DistComm(sub.rank, names, sub.timeout, addr=host, port=port, host=False, bind=cfg.data_host,
                    prefix=prefix)


def _watch(comm, run):
    """Make the communicator's checks raise once the run is cancelled (between nodes,
    per loop trip, while waiting)."""
    check, peers = comm.check, comm._check_peers

    def cancelled():
        if run.cancel_reason is not None:
            raise Cancelled(run.cancel_reason)

    def check_(where=None):
        cancelled()
        return check(where)

    def check_peers_():
        cancelled()
        return peers()

    comm.check = check_
    comm._check_peers = check_peers_


def data_for(sub, catalogue, graph) -> dict:
    """This party's loads of `graph` (the plan, or the plan it linked: then a model's
    weights too) from its catalogue."""
    if catalogue is None:
        return {}
    tags = {n.attr("tag") for n in graph.loads() if n.attr("owner") == sub.rank}
    linked = graph is not sub.graph
    return {t: catalogue.get(t, linked=linked).load() for t in sorted(tags)}


def execute(run, cfg, identity, catalogue, policy, peers, table, log):
    """The run's thread: connect, run, record; always release."""
    from planc.runtime.errors import ErrorRecord
    from planc.runtime.session import held, run_dealer, run_party

    from planc.ir.policy import PolicyError

    from .submit import read_plan, refusal_of

    sub = run.sub
    t0 = time.perf_counter()
    comm = graph = None
    try:
        comm = comm_for(run, cfg, identity, peers)
        run.comm = comm
        _watch(comm, run)
        connect_s = time.perf_counter() - t0
        clients = tuple(sub.clients)
        plan = sub.plan
        if sub.model_owner is not None:  # the owner's linked plan, sent over the mesh and checked (linking.py)
            plan, run.linked_hash = linking.exchange(sub, comm, sub.linked_bytes, read_plan)
            log.event("linked", run_id=sub.run_id, plan_hash=sub.plan_hash, linked_hash=run.linked_hash,
                      party=sub.party, owner=sub.graph.parties[sub.model_owner])
        graph = plan.graph
        if sub.rank == len(sub.parties):
            prepared = run.prepared.result(sub.timeout) if run.prepared is not None else None
            timings = run_dealer(graph, comm, constants=plan.constants, inputs=sub.inputs, frac=sub.frac,
                                 policy=policy, clients=clients, prepared=prepared)
            run.prepared = None
            outs = []
        else:
            reveals: dict = {}
            outs, timings = run_party(graph, comm, data=data_for(sub, catalogue, graph), constants=plan.constants,
                                      inputs=sub.inputs, frac=sub.frac, policy=policy, clients=clients,
                                      client_shares=sub.client_shares, reveals_out=reveals)
            outs = [held(o) for o in outs]
            run.reveals = reveals
        c = time.perf_counter()
        comm.close()
        stats = {**comm.stats.as_dict(), "connect_s": getattr(comm, "connect_s", connect_s), **timings,
                 "close_s": time.perf_counter() - c, "wall_s": time.perf_counter() - t0}
        run.outputs = outputs(run, outs, cfg)
        table.set_state(run, "done", outcome="ok", stats=stats)
        log.event("done", run_id=sub.run_id, plan_hash=sub.plan_hash, client=run.submitter, party=sub.party,
                  duration_s=round(time.perf_counter() - t0, 3), rounds=stats.get("rounds"),
                  bytes_sent=stats.get("bytes_sent"))
    except BaseException as e:  # noqa: BLE001 — every failure is the run's, never the daemon's
        if comm is not None:
            try:
                comm.fail(e)
            except Exception:  # noqa: BLE001
                pass
        if isinstance(e, PolicyError):  # the linked plan breaks this party's policy: its rule and ONNX node
            e = refusal_of(e)
        if isinstance(e, Refusal):
            err = {"kind": "refused", "type": "Refusal", "party": sub.party, "node": None, "loc": None,
                   "problem": e.message, "message": e.message, "cause": None, "rule": e.rule, "where": e.where}
        else:
            err = ErrorRecord.of(e, graph if graph is not None else sub.graph).to_json()
        stats = comm.stats.as_dict() if comm is not None else None
        table.set_state(run, "failed", outcome="cancelled" if isinstance(e, Cancelled) else "error", error=err,
                        stats=stats)
        log.event("failed", run_id=sub.run_id, plan_hash=sub.plan_hash, client=run.submitter, party=sub.party,
                  duration_s=round(time.perf_counter() - t0, 3), error=err["message"][:2000], kind=err["kind"])
    finally:
        release(run)
        run.thread = None


def launch(run, cfg, identity, catalogue, policy, peers, table, log):
    table.set_state(run, "running", started=time.time())
    log.event("started", run_id=run.run_id, plan_hash=run.plan_hash, client=run.submitter, party=run.sub.party,
              parties=run.sub.parties, peers={r: f"{h}:{p} ({i})" for r, (h, p, i) in peers.items()})
    t = threading.Thread(target=execute, args=(run, cfg, identity, catalogue, policy, peers, table, log),
                         name=f"planc-run-{run.run_id}", daemon=True)
    run.thread = t
    t.start()


def outputs(run, outs, cfg) -> list:
    """What the API reports of each plan output (see the module docstring)."""
    import torch
    from safetensors.torch import save_file

    from planc.ir.types import TORCH_TO_IR
    from planc.runtime.party import Shared

    sub = run.sub
    out = []
    values = sub.graph.outputs
    for i, o in enumerate(outs):
        vis = values[i].type.vis if i < len(values) else None
        if isinstance(o, Shared):
            handle = f"{sub.run_id}/out{i}"
            run.held[handle] = o
            out.append({"index": i, "kind": "held", "handle": handle, "dtype": values[i].type.dtype,
                        "shape": list(values[i].type.shape)})
        elif isinstance(o, torch.Tensor):
            dtype = TORCH_TO_IR.get(str(o.dtype), str(o.dtype))
            if vis is not None and vis.is_public:
                out.append({"index": i, "kind": "public", "dtype": dtype, "shape": list(o.shape),
                            "value": o.tolist()})
            else:
                d = cfg.outputs_dir / sub.run_id
                d.mkdir(parents=True, exist_ok=True)
                path = d / f"out{i}.safetensors"
                save_file({f"out{i}": o.detach().contiguous().clone()}, str(path))
                out.append({"index": i, "kind": "own", "dtype": dtype, "shape": list(o.shape),
                            "path": str(path.resolve())})
        else:
            out.append({"index": i, "kind": "none"})
    return out
