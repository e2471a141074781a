"""Every rank in a process of its own, talking over torch.distributed (gloo on TCP).

`run_rank` is what one process does as one rank — a deployment runs it once per machine
with the rendezvous at rank 0's address. `run_processes` runs all ranks of a plan on this
machine (``run_local(..., processes=True)``): it hosts the rendezvous store on a free
127.0.0.1 port, spawns the n parties and the dealer, hands each party only its own data,
and collects outputs, counters and timings through a queue. The first real error is
re-raised (`local.raise_first`); the other ranks stop on their own through the store
(`PeerFailed`), and any rank still running shortly after is killed, as is every rank
whose process dies.
"""
from __future__ import annotations

import contextlib
import pickle
import queue as queue_mod
import threading
import time

import torch

from .comm.base import DEFAULT_TIMEOUT, CommError
from . import fixed
from .comm.dist import PREFIX, DistComm, host_store
from .errors import PlanRuntimeError
from .local import LocalResult, _clean, raise_first
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


# ---- errors across processes ------------------------------------------------------------------

def _portable_error(e: BaseException, graph):
    """Something picklable from which `_rebuild_error` makes an equal exception."""
    if isinstance(e, PlanRuntimeError):
        idx = None
        if e.node is not None:
            idx = next((i for i, m in enumerate(graph.walk()) if m is e.node), None)
        return ("plan", type(e), str(e), e.party, e.problem, idx, None if idx is not None else e.node,
                _try_pickle(e.cause))
    b = _try_pickle(e)
    if b is not None:
        return ("pickle", b)
    return ("text", type(e).__name__, str(e), isinstance(e, CommError))


def _try_pickle(x):
    if x is None:
        return None
    try:
        b = pickle.dumps(x)
        pickle.loads(b)
        return b
    except Exception:  # noqa: BLE001
        return None


def _rebuild_error(rec, graph) -> BaseException:
    kind = rec[0]
    if kind == "plan":
        _, cls, text, party, problem, idx, node, cause_b = rec
        e = cls.__new__(cls)
        RuntimeError.__init__(e, text)
        if idx is not None:
            node = next((m for i, m in enumerate(graph.walk()) if i == idx), node)
        cause = pickle.loads(cause_b) if cause_b is not None else None
        e.node, e.party, e.problem, e.cause = node, party, problem, cause
        e.__cause__ = cause
        return e
    if kind == "pickle":
        return pickle.loads(rec[1])
    _, tname, text, comm = rec
    return (CommError if comm else RuntimeError)(f"{tname}: {text}")


# ---- spawning ---------------------------------------------------------------------------------

_SPAWN_LOCK = threading.Lock()


@contextlib.contextmanager
def _without_main():
    """Spawn children that do not re-run the caller's __main__ (a script without an
    ``if __name__ == "__main__"`` guard would otherwise run again in every rank). They
    need nothing from it: what they get is planc IR and tensors, pickled here."""
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

def _child(blob: bytes, rank: int, port: int, q):
    torch.set_num_threads(1)
    graph = None
    try:
        graph, constants, names, data, inputs, timeout, merge, frac = pickle.loads(blob)
        outs, stats = run_rank(graph, constants, rank, "127.0.0.1", port, len(names) - 1, names, data, inputs,
                               timeout, merge, frac, host=False)
        q.put((rank, "ok", pickle.dumps((outs, stats))))
    except BaseException as e:  # noqa: BLE001 — every failure goes to the parent
        try:
            q.put((rank, "err", pickle.dumps(_portable_error(e, graph))))
        except Exception:  # noqa: BLE001
            q.put((rank, "err", pickle.dumps(("text", type(e).__name__, str(e), False))))
    finally:
        try:
            q.close()
            q.join_thread()  # everything is in the pipe before this process ends
        except Exception:  # noqa: BLE001
            pass


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
    q = ctx.Queue()
    procs = []
    for r in range(n + 1):
        # each party gets its own data only; the dealer none
        own = dict(data.get(names[r], {})) if r < n else {}
        blob = pickle.dumps((graph, constants, names, own, tuple(inputs), timeout, merge, frac))
        procs.append(ctx.Process(target=_child, args=(blob, r, port, q), name=f"planc-{names[r]}", daemon=True))
    results: dict = {}
    errors: list = [None] * (n + 1)
    reported: set = set()
    try:
        with _without_main():
            for p in procs:
                p.start()
        first_error = None

        def take(msg):
            nonlocal first_error
            r, kind, body = msg
            reported.add(r)
            if kind == "ok":
                results[r] = pickle.loads(body)
            else:
                errors[r] = _rebuild_error(pickle.loads(body), graph)
                if first_error is None:
                    first_error = time.monotonic()

        while len(reported) < n + 1:
            try:
                take(q.get(timeout=0.05))
                continue
            except queue_mod.Empty:
                pass
            now = time.monotonic()
            for r, p in enumerate(procs):
                if r in reported or p.exitcode is None:
                    continue
                while True:  # its report may still be in the pipe
                    try:
                        take(q.get_nowait())
                    except queue_mod.Empty:
                        break
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
        q.close()
        q.cancel_join_thread()
    wall = time.perf_counter() - t0
    raise_first(errors, names)
    missing = [names[r] for r in range(n + 1) if r not in results]
    if missing:
        raise PlanRuntimeError(None, missing[0], "the rank ended without a result")
    outputs = {names[r]: results[r][0] for r in range(n)}
    stats = {names[r]: results[r][1] for r in range(n + 1)}
    return LocalResult(outputs, stats, wall, list(graph.parties))


__all__ = ["run_rank", "run_processes"]
