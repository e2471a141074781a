"""Every rank in a process of its own, talking over torch.distributed (gloo on TCP).

`run_rank` is what one process does as one rank — a deployment runs it once per machine
with the rendezvous at rank 0's address. `run_processes` runs all ranks of a plan on this
machine (``run_local(..., processes=True)``): it hosts the rendezvous store on a free
127.0.0.1 port, spawns the n parties and the dealer, hands each party the plan as plan-
file bytes and only its own data, and collects outputs, counters and timings through a
pipe per rank. Nothing crossing a process boundary is pickled by planc: plans travel in
their own format, tensors as safetensors, everything else as JSON. The first real error is
re-raised (`local.raise_first`); the other ranks stop on their own through the store
(`PeerFailed`), and any rank still running shortly after is killed, as is every rank
whose process dies.
"""
from __future__ import annotations

import contextlib
import json
import multiprocessing.connection as mp_connection
import threading
import time

import safetensors.torch as st
import torch

from planc.ir.plan import Plan

from .comm.base import DEFAULT_TIMEOUT, CommError, PeerFailed, PeerTimeout
from . import fixed
from .comm.dist import PREFIX, DistComm, host_store
from .errors import DataError, PlanRuntimeError, describe
from .local import LocalResult, _clean, raise_first
from .party import Shared
from .session import run_dealer, run_party

_GRACE = 5.0  # seconds the other ranks get to stop after a failure before they are killed


def run_rank(graph, constants, rank: int, addr: str, port: int, nparties: int, names, data=None, inputs=(),
             timeout: float = DEFAULT_TIMEOUT, merge: bool = True, frac: int = fixed.DEFAULT_FRAC_BITS, *,
             host: bool | None = None, bind: str | None = None, prefix: str = PREFIX):
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
    try:
        if rank < nparties:
            outs, timings = run_party(graph, comm, data=data or {}, constants=constants, inputs=inputs,
                                      frac=frac, merge=merge)
            outs = [_clean(o) for o in outs]
        else:
            timings = run_dealer(graph, comm, constants=constants, inputs=inputs, frac=frac, merge=merge)
            outs = []
        t = time.perf_counter()
        comm.close()  # the last sends must be taken before this rank leaves
        timings = {**timings, "close_s": time.perf_counter() - t}
    except BaseException as e:
        comm.fail(e)
        comm.close()
        raise
    return outs, {**comm.stats.as_dict(), "connect_s": comm.connect_s, **timings}


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


_COMM_ERRORS = {c.__name__: c for c in (CommError, PeerFailed, PeerTimeout)}
_PLAN_ERRORS = {c.__name__: c for c in (PlanRuntimeError, DataError)}


def _error_record(e: BaseException, graph) -> dict:
    """What the parent needs to raise an equivalent error: plain data only."""
    rec = {"type": type(e).__name__, "text": str(e)}
    if isinstance(e, PlanRuntimeError):
        idx = None
        if e.node is not None and graph is not None:
            idx = next((i for i, m in enumerate(graph.walk()) if m is e.node), None)
        rec.update(plan=True, party=e.party, problem=e.problem, node=idx,
                   cause=describe(e.cause) if e.cause is not None else None)
    return rec


def _rebuild_error(rec: dict, graph) -> BaseException:
    if rec.get("plan"):
        cls = _PLAN_ERRORS.get(rec["type"], PlanRuntimeError)
        e = cls.__new__(cls)
        RuntimeError.__init__(e, rec["text"])
        node = None
        if rec["node"] is not None:
            node = next((m for i, m in enumerate(graph.walk()) if i == rec["node"]), None)
        cause = RuntimeError(rec["cause"]) if rec["cause"] else None
        e.node, e.party, e.problem, e.cause = node, rec["party"], rec["problem"], cause
        e.__cause__ = cause
        return e
    if rec["type"] in _COMM_ERRORS:
        return _COMM_ERRORS[rec["type"]](rec["text"])
    return RuntimeError(f"{rec['type']}: {rec['text']}")


def _outputs_message(outs, stats) -> bytes:
    kinds, tensors = [], {}
    for i, o in enumerate(outs):
        if isinstance(o, Shared):
            kinds.append({"kind": "shared", "extra": o.extra})
            tensors[f"out{i}"] = o.data
        elif isinstance(o, torch.Tensor):
            kinds.append({"kind": "tensor"})
            tensors[f"out{i}"] = o
        else:
            kinds.append({"kind": "none"})
    return _message({"ok": True, "outs": kinds, "stats": stats}, tensors)


def _outputs(header, tensors):
    outs = []
    for i, k in enumerate(header["outs"]):
        if k["kind"] == "shared":
            outs.append(Shared(tensors[f"out{i}"], k["extra"]))
        else:
            outs.append(tensors[f"out{i}"] if k["kind"] == "tensor" else None)
    return outs, header["stats"]


# ---- spawning ---------------------------------------------------------------------------------

_SPAWN_LOCK = threading.Lock()


@contextlib.contextmanager
def _without_main():
    """Spawn children that do not re-run the caller's __main__ (a script without an
    ``if __name__ == "__main__"`` guard would otherwise run again in every rank). They
    need nothing from it: what they get is a plan file's bytes and tensors in safetensors."""
    import multiprocessing.spawn as spawn

    with _SPAWN_LOCK:
        orig = spawn.get_preparation_data

        def prep(name):
            d = orig(name)
            d.pop("init_main_from_path", None)
            d.pop("init_main_from_name", None)
            return d

        spawn.get_preparation_data = prep
        try:
            yield
        finally:
            spawn.get_preparation_data = orig


# ---- one child process ------------------------------------------------------------------------

def _child(plan_bytes: bytes, job: bytes, rank: int, port: int, conn):
    """One rank: the plan arrives as plan-file bytes (checked like any plan file), the
    party's data and the settings as a JSON + safetensors message; the result goes back
    the same way."""
    torch.set_num_threads(1)
    graph = None
    try:
        plan = Plan.from_bytes(plan_bytes)
        graph = plan.graph
        head, tensors = _read_message(job)
        data = {k[5:]: t for k, t in tensors.items() if k.startswith("data/")}
        inputs = [tensors[f"input/{i}"] for i in range(head["inputs"])]
        names = head["names"]
        outs, stats = run_rank(graph, plan.constants, rank, "127.0.0.1", port, len(names) - 1, names, data, inputs,
                               head["timeout"], head["merge"], head["frac"], host=False)
        conn.send_bytes(_outputs_message(outs, stats))
    except BaseException as e:  # noqa: BLE001 — every failure goes to the parent
        try:
            conn.send_bytes(_message({"ok": False, "error": _error_record(e, graph)}))
        except Exception:  # noqa: BLE001
            conn.send_bytes(_message({"ok": False, "error": {"type": type(e).__name__, "text": str(e)}}))
    finally:
        conn.close()


def _job(names, own: dict, inputs, timeout, merge, frac) -> bytes:
    tensors = {}
    for tag, t in own.items():
        if not isinstance(t, torch.Tensor):
            raise PlanRuntimeError(None, None, f"data under tag {tag!r} is a {type(t).__name__}, not a torch.Tensor")
        tensors[f"data/{tag}"] = t
    for i, t in enumerate(inputs):
        tensors[f"input/{i}"] = torch.as_tensor(t)
    head = {"names": names, "inputs": len(inputs), "timeout": timeout, "merge": merge, "frac": frac}
    return _message(head, tensors)


def run_processes(graph, constants, data, inputs, *, timeout: float = DEFAULT_TIMEOUT, merge: bool = True,
                  frac: int = fixed.DEFAULT_FRAC_BITS) -> LocalResult:
    """All ranks of `graph` as processes on this machine (see the module docstring)."""
    import torch.multiprocessing as mp

    names = list(graph.parties) + ["dealer"]
    n = len(graph.parties)
    ctx = mp.get_context("spawn")
    t0 = time.perf_counter()
    store = host_store("127.0.0.1", 0, None, timeout)  # port 0: a free port, no race
    port = store.port
    plan_bytes = Plan(graph, dict(constants or {})).to_bytes()
    procs, conns = [], []
    for r in range(n + 1):
        # each party gets its own data only; the dealer none
        own = dict(data.get(names[r], {})) if r < n else {}
        job = _job(names, own, tuple(inputs), timeout, merge, frac)
        reader, writer = ctx.Pipe(duplex=False)
        conns.append(reader)
        procs.append(ctx.Process(target=_child, args=(plan_bytes, job, r, port, writer), name=f"planc-{names[r]}",
                                 daemon=True))
    results: dict = {}
    errors: list = [None] * (n + 1)
    reported: set = set()
    try:
        with _without_main():
            for p in procs:
                p.start()
        first_error = None

        def take(r):
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
                errors[r] = _rebuild_error(head["error"], graph)
                if first_error is None:
                    first_error = time.monotonic()
            return True

        while len(reported) < n + 1:
            waiting = [conns[r] for r in range(n + 1) if r not in reported]
            ready = mp_connection.wait(waiting, timeout=0.05)
            for c in ready:
                take(conns.index(c))
            if ready:
                continue
            now = time.monotonic()
            for r, p in enumerate(procs):
                if r in reported or p.exitcode is None:
                    continue
                if conns[r].poll() and take(r):  # its report may still be in the pipe
                    continue
                if r not in reported:
                    reported.add(r)
                    errors[r] = RuntimeError(f"the process of {names[r]} died (exit code {p.exitcode})")
                    first_error = first_error or now
                    try:  # tell the others, who would otherwise wait for it
                        store.compare_set(f"{PREFIX}/failed", "", f"{names[r]}: {errors[r]}")
                    except Exception:  # noqa: BLE001
                        pass
            if first_error is not None and now - first_error > _GRACE:
                break  # the rest are stragglers
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
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
    return LocalResult(outputs, stats, wall, list(graph.parties))


__all__ = ["run_rank", "run_processes"]
