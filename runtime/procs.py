"""Every rank in a process of its own, talking over TLS (default) or torch.distributed's gloo.

`run_rank` is what one process does as one rank — a deployment runs it once per machine
with the rendezvous at rank 0's address. `run_processes` runs all ranks of a plan on this
machine (``run_local(..., processes=True)`` wraps its outputs and stats in a LocalResult):
it hosts the rendezvous store on a free 127.0.0.1 port, spawns the n parties and the
dealer, hands each party the plan as plan-file bytes, only its own data and the settings
it runs with, and collects outputs, counters and timings through a pipe per rank.
Nothing crossing a process boundary is pickled by planc: plans travel in their own
format, tensors as safetensors, everything else as JSON — a failure as an `ErrorRecord`
(runtime/errors.py), rebuilt in the parent by its class's constructor. The first real
error is re-raised (`errors.raise_first`); the other ranks stop on their own through the
store (`PeerFailed`), and any rank still running shortly after (5 s after an error, 1 s
after a death) is killed.

Every failure ends every rank, promptly, with a name:

- a rank's process that dies (a signal, or an exit without a report) is seen by the parent
  at once — it waits on each rank's pipe *and* its process sentinel, and the parent holds
  no write end of any pipe, so a dead rank's pipe reads as closed — and is reaped; the run
  raises `PartyDied` naming the rank and how it died (``killed by SIGKILL (signal 9)``,
  ``exited with code 3``), and the parent publishes that failure in the store, where every
  other rank sees it within a tenth of a second, between nodes or inside a loop
  (``Comm.check``) as well as while waiting;
- a rank dies with its parent (`comm/lifeline.py`, in place before the rank imports
  torch): on Linux the kernel kills it when the thread that started it ends
  (``PR_SET_PDEATHSIG``), and everywhere a watch thread ends it once its parent process is
  gone, so a killed parent leaves no orphans behind;
- a parent that stops for any reason (an error, Ctrl-C) terminates, then kills, and reaps
  every rank still running before it returns.
"""
from __future__ import annotations

import contextlib
import json
import multiprocessing.connection as mp_connection
import os
import threading
import time

import safetensors.torch as st
import torch

from planc.ir.plan import Plan

from . import fixed
from .comm.base import DEFAULT_TIMEOUT
from .comm.dist import PREFIX, DistComm, host_store
from .comm.lifeline import rank_main
from .errors import ErrorRecord, PartyDied, PlanRuntimeError, raise_first
from .party import Shared
from .session import held, run_dealer, run_party

_GRACE = 5.0  # seconds the other ranks get to stop after a failure before they are killed
_GRACE_DIED = 1.0  # the same after a rank's death: that is the run's error, theirs can only echo it


def run_rank(graph, constants, rank: int, addr: str, port: int, nparties: int, names, data=None, inputs=(),
             timeout: float = DEFAULT_TIMEOUT, merge: bool = True, frac: int = fixed.DEFAULT_FRAC_BITS, *,
             host: bool | None = None, bind: str | None = None, prefix: str = PREFIX, clients=(),
             client_shares=None, reveals_out=None):
    """Act as rank `rank` (a party, or the dealer when rank == nparties) of a run whose
    rendezvous store is at addr:port (served by rank 0 unless `host` says otherwise).

    Returns (outputs, stats): outputs as in LocalResult (the dealer has none), stats the
    communicator's counters plus timings (connect_s, setup_s, online_s / dealer_s).
    On failure the error is published to the other ranks and re-raised.
    """
    names = list(names)
    if len(names) != nparties + 1:
        raise ValueError(f"{len(names)} names for {nparties} parties and the dealer")
    comm = DistComm(rank, names, timeout, addr=addr, port=port, host=host, bind=bind, prefix=prefix)
    return run_on(comm, graph, constants, nparties, data, inputs, merge, frac, clients=clients,
                  client_shares=client_shares, reveals_out=reveals_out)


def run_on(comm, graph, constants, nparties: int, data=None, inputs=(), merge: bool = True,
           frac: int = fixed.DEFAULT_FRAC_BITS, *, clients=(), client_shares=None, reveals_out=None):
    """Act as `comm`'s rank (a party, or the dealer when rank == nparties) over a connected
    communicator of any kind; returns (outputs, stats) as run_rank does, and closes it.
    clients / client_shares / reveals_out: as run_party takes them (runtime/clients.py)."""
    rank = comm.rank
    try:
        if rank < nparties:
            outs, timings = run_party(graph, comm, data=data or {}, constants=constants, inputs=inputs,
                                      frac=frac, merge=merge, clients=clients, client_shares=client_shares,
                                      reveals_out=reveals_out)
            outs = [held(o) for o in outs]
        else:
            timings = run_dealer(graph, comm, constants=constants, inputs=inputs, frac=frac, merge=merge,
                                 clients=clients)
            outs = []
        t = time.perf_counter()
        comm.close()  # the last sends must be taken before this rank leaves
        timings = {**timings, "close_s": time.perf_counter() - t}
    except BaseException as e:
        comm.fail(e)
        comm.close()
        raise
    wire = comm.wire_bytes() if hasattr(comm, "wire_bytes") else {}
    return outs, {**comm.stats.as_dict(), "connect_s": comm.connect_s, **wire, **timings}


# ---- messages between the parent and its ranks: JSON and safetensors, never pickle ------------

def _message(header: dict, tensors: dict | None = None) -> bytes:
    """8-byte header length, the JSON header, then the tensors as safetensors."""
    head = json.dumps(header).encode()
    body = st.save({k: t.detach().contiguous().clone() for k, t in tensors.items()}) if tensors else b""
    return len(head).to_bytes(8, "little") + head + body


def _read_message(data: bytes):
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n].decode())
    rest = data[8 + n:]
    return header, (st.load(rest) if rest else {})



def _outputs_message(outs, stats, kept=None) -> bytes:
    """Outputs, counters and what this party keeps for each client ({client: {value:
    entry}}: an entry's tensor goes as `kept/<i>`, its other fields in the header)."""
    kinds, tensors = [], {}
    kept_head = []
    for client, values in (kept or {}).items():
        for value, entry in values.items():
            i = len(kept_head)
            tensor_key = "plain" if "plain" in entry else "share"
            kept_head.append({"client": client, "value": value, "kind": tensor_key,
                              **{k: v for k, v in entry.items() if k not in ("plain", "share")}})
            tensors[f"kept/{i}"] = entry[tensor_key]
    for i, o in enumerate(outs):
        if isinstance(o, Shared):
            kinds.append({"kind": "shared", "extra": o.extra})
            tensors[f"out{i}"] = o.data
        elif isinstance(o, torch.Tensor):
            kinds.append({"kind": "tensor"})
            tensors[f"out{i}"] = o
        else:
            kinds.append({"kind": "none"})
    return _message({"ok": True, "outs": kinds, "stats": stats, "kept": kept_head}, tensors)


def _outputs(header, tensors):
    outs = []
    for i, k in enumerate(header["outs"]):
        if k["kind"] == "shared":
            outs.append(Shared(tensors[f"out{i}"], k["extra"]))
        else:
            outs.append(tensors[f"out{i}"] if k["kind"] == "tensor" else None)
    kept: dict = {}
    for i, e in enumerate(header.get("kept") or []):
        entry = {k: v for k, v in e.items() if k not in ("client", "value", "kind")}
        entry[e["kind"]] = tensors[f"kept/{i}"]
        kept.setdefault(e["client"], {})[e["value"]] = entry
    return outs, header["stats"], kept


# ---- spawning ---------------------------------------------------------------------------------

# Spawned children need nothing from the caller's __main__ (they get a plan file's bytes
# and tensors in safetensors), and must not re-run it: a script without an
# ``if __name__ == "__main__"`` guard would run again in every rank. multiprocessing has
# no per-process switch for that; what the child re-runs comes from
# multiprocessing.spawn.get_preparation_data, a function of the whole process. So while
# ranks are being started it is wrapped, and the wrapper leaves out __main__ only for
# processes started by a thread inside _without_main (a thread-local flag): any other
# thread spawning its own processes meanwhile gets exactly what it would have got. The
# wrapper is put in place by the first such thread and taken out by the last.

_spawn_lock = threading.Lock()
_spawn_users = 0
_spawn_orig = None
_spawning = threading.local()


def _preparation_data(name):
    d = _spawn_orig(name)
    if getattr(_spawning, "active", False):
        d.pop("init_main_from_path", None)
        d.pop("init_main_from_name", None)
    return d


@contextlib.contextmanager
def _without_main():
    """Processes this thread starts inside do not re-run __main__ (see above)."""
    import multiprocessing.spawn as spawn

    global _spawn_users, _spawn_orig
    with _spawn_lock:
        if _spawn_users == 0:
            _spawn_orig = spawn.get_preparation_data
            spawn.get_preparation_data = _preparation_data
        _spawn_users += 1
    _spawning.active = True
    try:
        yield
    finally:
        _spawning.active = False
        with _spawn_lock:
            _spawn_users -= 1
            # put the original back unless someone wrapped ours meanwhile (theirs calls ours,
            # which then passes everything through)
            if _spawn_users == 0 and spawn.get_preparation_data is _preparation_data:
                spawn.get_preparation_data = _spawn_orig


# ---- one child process ------------------------------------------------------------------------

def _child(plan_bytes: bytes, job: bytes, rank: int, port: int, conn):
    """One rank: the plan arrives as plan-file bytes (checked like any plan file), the
    party's data and the settings as a JSON + safetensors message; the result goes back
    the same way, a failure as an ErrorRecord."""
    graph = None
    try:
        head, tensors = _read_message(job)
        # this process is the rank's own: its settings are the job's, not the parent's
        torch.set_num_threads(head["torch_threads"])
        plan = Plan.from_bytes(plan_bytes)
        graph = plan.graph
        data = {k[5:]: t for k, t in tensors.items() if k.startswith("data/")}
        inputs = [tensors[f"input/{i}"] for i in range(head["inputs"])]
        names = head["names"]
        clients = tuple(head.get("clients") or ())
        shares = {k[3:]: t for k, t in tensors.items() if k.startswith("cs/")} if clients else None
        kept: dict = {}
        kw = {"clients": clients, "client_shares": shares, "reveals_out": kept}
        if head["transport"] == "tls":
            comm = _tls_comm(rank, names, head["timeout"], port, head["tls"])
            outs, stats = run_on(comm, graph, plan.constants, len(names) - 1, data, inputs, head["merge"],
                                 head["frac"], **kw)
        else:
            outs, stats = run_rank(graph, plan.constants, rank, "127.0.0.1", port, len(names) - 1, names, data,
                                   inputs, head["timeout"], head["merge"], head["frac"], host=False, **kw)
        conn.send_bytes(_outputs_message(outs, stats, kept))
    except BaseException as e:  # noqa: BLE001 — every failure goes to the parent
        try:
            conn.send_bytes(_message({"ok": False, "error": ErrorRecord.of(e, graph).to_json()}))
        except Exception:  # noqa: BLE001
            text = f"{type(e).__name__}: {e}"
            rec = ErrorRecord("other", type(e).__name__, None, None, None, text, text)
            conn.send_bytes(_message({"ok": False, "error": rec.to_json()}))
    finally:
        conn.close()


def _tls_comm(rank, names, timeout, port, tls: dict):
    """This rank's TLS mesh on 127.0.0.1. Each rank listens on a free port and announces
    it in the parent's store; the store carries addresses only — who is at a port is
    proved by the certificate there (the run's throwaway CA), so a wrong entry can only
    make the run fail, never join it."""
    import datetime

    import torch.distributed as dist

    from .comm.tls import Identity, Listener, TLSComm

    me = names[rank]
    ident = Identity(tls[me]["cert"], tls[me]["key"], tls["ca"], name=me)
    listener = Listener(ident, "127.0.0.1", 0)
    try:
        store = dist.TCPStore("127.0.0.1", port, len(names), False, datetime.timedelta(seconds=timeout))
        store.set(f"{PREFIX}/tls/{rank}", str(listener.port))
        others = [r for r in range(len(names)) if r != rank]
        store.wait([f"{PREFIX}/tls/{r}" for r in others], datetime.timedelta(seconds=timeout))
        peers = {r: ("127.0.0.1", int(store.get(f"{PREFIX}/tls/{r}")), names[r]) for r in others}
        del store
    except BaseException:
        listener.close()
        raise
    return TLSComm(rank, names, timeout, identity=ident, listener=listener, peers=peers, run_id=tls["run_id"])


def _job(names, own: dict, inputs, timeout, merge, frac, transport="gloo", tls=None, clients=(),
         client_shares=None) -> bytes:
    tensors = {}
    for tag, t in own.items():
        if not isinstance(t, torch.Tensor):
            raise PlanRuntimeError(None, None, f"data under tag {tag!r} is a {type(t).__name__}, not a torch.Tensor")
        tensors[f"data/{tag}"] = t
    for i, t in enumerate(inputs):
        tensors[f"input/{i}"] = torch.as_tensor(t)
    for value, t in (client_shares or {}).items():  # this party's shares of the clients' values
        tensors[f"cs/{value}"] = t
    # one torch thread per rank: the ranks share this machine's cores
    head = {"names": names, "inputs": len(inputs), "timeout": timeout, "merge": merge, "frac": frac,
            "torch_threads": 1, "transport": transport, "tls": tls, "clients": list(clients)}
    return _message(head, tensors)


TRANSPORTS = ("tls", "gloo")


def run_processes(graph, constants, data, inputs, *, timeout: float = DEFAULT_TIMEOUT, merge: bool = True,
                  frac: int = fixed.DEFAULT_FRAC_BITS, transport: str = "tls", clients=(), client_shares=None,
                  kept=None):
    """All ranks of `graph` as processes on this machine (see the module docstring).

    clients / client_shares / kept: the plan's non-computing parties, each computing
    party's shares of their values, and a list filled with what each keeps for them
    (runtime/local.py plays the clients around the run).
    transport: "tls" (default) — the ranks' links are mutually authenticated TLS with a
    CA and certificates made for this run alone (comm/tls.py), as between machines;
    "gloo" — torch.distributed's gloo over loopback TCP, unauthenticated and unencrypted:
    for benchmarks and trusted hosts, chosen explicitly.

    Returns (outputs, stats, wall_s): outputs {party: [tensor | Shared | None]}, stats
    {party and "dealer": counters and timings}, as LocalResult has them."""
    import tempfile

    import torch.multiprocessing as mp

    if transport not in TRANSPORTS:
        raise ValueError(f"transport {transport!r}: expected one of {', '.join(TRANSPORTS)}")
    with contextlib.ExitStack() as stack:
        tls = None
        if transport == "tls":
            from .comm.tls import throwaway_identities

            where = stack.enter_context(tempfile.TemporaryDirectory(prefix="planc-tls-"))  # 0700, removed after
            ids = throwaway_identities(list(graph.parties)[:len(graph.parties) - len(clients)] + ["dealer"], where)
            tls = {n: {"cert": i.cert, "key": i.key} for n, i in ids.items()}
            tls["ca"] = next(iter(ids.values())).ca
            tls["run_id"] = os.urandom(8).hex()
        return _run_processes(graph, constants, data, inputs, timeout, merge, frac, transport, tls,
                              tuple(clients), client_shares, kept)


def _run_processes(graph, constants, data, inputs, timeout, merge, frac, transport, tls, clients=(),
                   client_shares=None, kept=None):
    import torch.multiprocessing as mp

    n = len(graph.parties) - len(clients)  # the computing parties; clients are played by the caller
    names = list(graph.parties)[:n] + ["dealer"]
    ctx = mp.get_context("spawn")
    t0 = time.perf_counter()
    store = host_store("127.0.0.1", 0, None, timeout)  # port 0: a free port, no race
    port = store.port
    plan_bytes = Plan(graph, dict(constants or {})).to_bytes()
    procs, conns, writers = [], [], []
    for r in range(n + 1):
        # each party gets its own data only; the dealer none
        own = dict(data.get(names[r], {})) if r < n else {}
        job = _job(names, own, tuple(inputs), timeout, merge, frac, transport, tls, clients,
                   client_shares[r] if client_shares and r < n else None)
        reader, writer = ctx.Pipe(duplex=False)
        conns.append(reader)
        writers.append(writer)
        # started by rank_main, which first ties the process's life to this one (lifeline.py)
        procs.append(ctx.Process(target=rank_main, args=(os.getpid(), __name__, "_child", plan_bytes, job, r, port,
                                                         writer), name=f"planc-{names[r]}", daemon=True))
    results: dict = {}
    errors: list = [None] * (n + 1)
    reported: set = set()
    first_error = None
    grace = _GRACE

    def take(r) -> bool:
        """Read rank r's report; False when its pipe closed without one."""
        nonlocal first_error
        try:
            head, tensors = _read_message(conns[r].recv_bytes())
        except (EOFError, OSError):
            return False
        reported.add(r)
        if head["ok"]:
            results[r] = _outputs(head, tensors)
        else:
            try:
                errors[r] = ErrorRecord.from_json(head["error"]).to_exception(graph)
            except RuntimeError as bad:  # a malformed record: that is this rank's error
                errors[r] = bad
            first_error = first_error or time.monotonic()
        return True

    def died(r):
        """Rank r ended without a report: reap it, name how it died, tell the others."""
        nonlocal first_error, grace
        reported.add(r)
        procs[r].join(1.0)  # its pipe closes as it dies: the exit code follows at once
        errors[r] = PartyDied(names[r], procs[r].exitcode)
        first_error = first_error or time.monotonic()
        grace = min(grace, _GRACE_DIED)
        try:  # the others see it in the store between nodes and while waiting
            store.compare_set(f"{PREFIX}/failed", "", f"{names[r]}: {errors[r]}")
        except Exception:  # noqa: BLE001
            pass

    try:
        with _without_main():
            for p in procs:
                p.start()
        for w in writers:  # the ranks hold the write ends: a dead rank's pipe reads as closed
            w.close()
        del writers[:]
        while len(reported) < n + 1:
            watched = {}
            for r in range(n + 1):
                if r not in reported:
                    watched[conns[r]] = r
                    watched[procs[r].sentinel] = r
            for obj in mp_connection.wait(list(watched), timeout=0.25):
                r = watched[obj]
                if r in reported:
                    continue
                # a report, a closed pipe, or an exited process (whose report may still be
                # in the pipe: read it first)
                if obj is conns[r] or conns[r].poll():
                    if take(r):
                        continue
                elif procs[r].exitcode is None:
                    continue
                died(r)
            if first_error is not None and time.monotonic() - first_error > grace:
                break  # the rest are stragglers
    finally:
        for w in writers:
            w.close()
        started = [p for p in procs if p.pid is not None]
        for p in started:
            if p.is_alive():
                p.terminate()
        for p in started:  # reaped, every one: no zombies
            p.join(2)
            if p.is_alive():
                p.kill()
                p.join(2)
        for c in conns:
            c.close()
    wall = time.perf_counter() - t0
    raise_first(errors, names)
    missing = [names[r] for r in range(n + 1) if r not in results]
    if missing:
        raise PlanRuntimeError(None, missing[0], "the rank ended without a result")
    outputs = {names[r]: results[r][0] for r in range(n)}
    stats = {names[r]: results[r][1] for r in range(n + 1)}
    if kept is not None:  # what each computing party keeps for the clients
        for r in range(n):
            kept[r].update(results[r][2])
    return outputs, stats, wall


__all__ = ["run_rank", "run_on", "run_processes", "TRANSPORTS"]
