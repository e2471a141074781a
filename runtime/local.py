"""Run every party of a plan on this machine: the embedded local default.

Threads (default) share one process and talk over in-process queues; processes talk over
mutually authenticated TLS on 127.0.0.1 with certificates made for the run (or, chosen
explicitly, torch.distributed's gloo, unencrypted). Either way each party sees only its own data and
what it receives, and the dealer is a party of its own.
"""
from __future__ import annotations

import contextlib
import sys
import threading
import time
from dataclasses import dataclass, field

import torch

from . import fixed
from .admission import admit
from .comm.base import DEFAULT_TIMEOUT
from .comm.inproc import Network
from .clients import ClientRun, ncompute
from .errors import PlanRuntimeError, raise_first  # noqa: F401  (raise_first: was defined here)
from .session import held, run_dealer, run_party


@dataclass
class LocalResult:
    """What each party ended with, and what it cost."""

    outputs: dict  # party name -> [tensor | Shared | None]: None where the party holds nothing
    stats: dict  # party name (and "dealer") -> counters and timings
    wall_s: float = 0.0
    parties: list = field(default_factory=list)

    def output(self, party: str, i: int = 0):
        return self.outputs[party][i]

    def revealed(self) -> dict:
        """{party: [tensors it holds in the clear]} (shares and absent values left out)."""
        return {p: [o for o in outs if isinstance(o, torch.Tensor)] for p, outs in self.outputs.items()}

    def __repr__(self) -> str:
        from .report import mib, outputs_line

        comp = {p: s for p, s in self.stats.items() if p != "dealer"}
        rounds = max((s.get("rounds", 0) for s in comp.values()), default=0)
        sent = sum(s.get("bytes_sent", 0) for s in comp.values())
        parties = ", ".join(self.parties or list(self.outputs))
        return (f"<LocalResult parties {parties}; outputs {outputs_line(self.outputs)}; "
                f"{rounds} rounds, {mib(sent)} sent; wall {self.wall_s * 1000:.1f} ms>")

    def summary(self, file=None, *, echo: bool = True) -> str:
        """The table `planc run` prints (rounds, bytes, dealer material, time per party):
        printed to `file` (default stdout; echo=False: not printed) and returned as text."""
        from .report import render, stats_table, wall_line

        text = render(stats_table(self.stats), wall_line(self.wall_s))
        if echo:
            print(text, end="", file=file if file is not None else sys.stdout)
        return text


def run_local(plan, data=None, *, inputs=(), processes: bool = False, timeout: float = DEFAULT_TIMEOUT,
              merge: bool = True, frac: int | None = None, progress=None, policy=None,
              lazy: bool = True, clients=(), transport: str | None = None) -> LocalResult:
    """Run `plan` (a Plan or Graph) with every party on this machine.

    data: {party name: {tag: tensor}} — each party gets only its own entry.
    progress: optional callable(done, total) called as party 0 finishes nodes (threads only).
    policy: a planc.ir.policy.Policy (default: the default policy, with its resource
    limits); a plan that breaks it or needs more than its limits is refused (PolicyError,
    runtime/admission.py) before anything runs.
    clients: plan parties (the last ones) that do not compute: each secret-shares its
    values to the computing parties and alone reconstructs what is revealed to it
    (runtime/clients.py); their outputs are in the result like every party's.
    transport: with processes=True, how the ranks talk: "tls" (default: mutually
    authenticated TLS with certificates made for the run) or "gloo" (unencrypted, for
    benchmarks and trusted hosts; chosen explicitly). Threads talk through in-process queues.
    merge / lazy: False turns off round merging / pending truncations (for comparisons).
    """
    graph = getattr(plan, "graph", plan)
    constants = getattr(plan, "constants", {}) or {}
    if frac is None:
        frac = int(getattr(plan, "meta", {}).get("frac_bits", fixed.DEFAULT_FRAC_BITS)) if hasattr(plan, "meta") \
            else fixed.DEFAULT_FRAC_BITS
    data = data or {}
    if transport is not None and not processes:
        raise ValueError(f"transport={transport!r} is for processes=True (threads talk through in-process queues)")
    unknown = set(data) - set(graph.parties)
    if unknown:
        raise PlanRuntimeError(None, None, f"data for {', '.join(sorted(unknown))}, but the plan's parties are "
                                           f"{', '.join(graph.parties)}")
    if len(graph.parties) < 2:
        raise PlanRuntimeError(None, None, "a secret-shared run needs at least 2 parties")
    clients = list(clients or ())
    ncompute(graph, clients)
    # admission (runtime/admission.py): the policy's rules and resource limits, every party and the dealer
    admit(graph, policy, constants=constants, inputs=inputs, merge=merge, lazy=lazy, frac=frac, clients=clients)
    if processes:
        from .procs import run_processes

        if not lazy:
            raise ValueError("lazy=False is for comparisons with threads")

        def run(shares=None, kept=None):
            outputs, stats, wall = run_processes(graph, constants, data, inputs, timeout=timeout, merge=merge,
                                                 frac=frac, transport=transport or "tls", clients=clients,
                                                 client_shares=shares, kept=kept)
            return LocalResult(outputs, stats, wall, list(graph.parties))
    else:
        def run(shares=None, kept=None):
            return _run_threads(graph, constants, data, inputs, timeout, merge, frac, progress, lazy, policy,
                                clients, shares, kept)
    if clients:
        return _with_clients(graph, constants, data, inputs, clients, frac, run)
    return run()


def _with_clients(graph, constants, data, inputs, clients, frac, run) -> LocalResult:
    """Play each client around a run of the computing parties (threads or processes): its
    shares before, its reconstruction after (runtime/clients.py)."""
    n = ncompute(graph, clients)
    plays = {c: ClientRun(graph, c, clients, data=data.get(c, {}), constants=constants, inputs=inputs, frac=frac)
             for c in clients}
    shares = [{} for _ in range(n)]
    for c, play in plays.items():
        for i, got in enumerate(play.shares()):
            shares[i].update(got)
    kept = [{} for _ in range(n)]
    res = run(shares, kept)
    for c, play in plays.items():
        res.outputs[c] = play.finish([k.get(c, {}) for k in kept])
    res.parties = list(graph.parties)
    return res


def _run_threads(graph, constants, data, inputs, timeout, merge, frac, progress=None, lazy=True,
                 policy=None, clients=(), client_shares=None, kept=None) -> LocalResult:
    # policy: each party and the dealer admit the plan under it; clients: see _with_clients
    n = len(graph.parties) - len(clients)
    names = list(graph.parties)[:n] + ["dealer"]
    net = Network(names)
    comms = [net.comm(r, timeout) for r in range(n + 1)]
    results: dict = {}
    errors: list = [None] * (n + 1)

    tick = None
    if progress is not None:
        from .interpreter import count_steps

        total = count_steps(graph.nodes)

        def tick(done):
            progress(done, total)

    def party(r):
        try:
            results[r] = run_party(graph, comms[r], data=data.get(names[r], {}), constants=constants,
                                   inputs=inputs, frac=frac, merge=merge, tick=tick if r == 0 else None, lazy=lazy,
                                   policy=policy, clients=clients,
                                   client_shares=client_shares[r] if client_shares else None,
                                   reveals_out=kept[r] if kept is not None else None)
        except BaseException as e:  # noqa: BLE001 — every failure must reach the caller
            errors[r] = e
            net.fail(r, e)

    def dealer():
        try:
            results[n] = run_dealer(graph, comms[n], constants=constants, inputs=inputs, frac=frac, merge=merge,
                                    lazy=lazy, policy=policy, clients=clients)
        except BaseException as e:  # noqa: BLE001
            errors[n] = e
            net.fail(n, e)

    with _party_threads_settings():
        t0 = time.perf_counter()
        threads = [threading.Thread(target=party, args=(r,), name=f"planc-{names[r]}", daemon=True)
                   for r in range(n)]
        threads.append(threading.Thread(target=dealer, name="planc-dealer", daemon=True))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    raise_first(errors, names)
    outputs = {names[r]: [held(o) for o in results[r][0]] for r in range(n)}
    stats = {names[r]: {**comms[r].stats.as_dict(), **results[r][1]} for r in range(n)}
    stats["dealer"] = {**comms[n].stats.as_dict(), **results[n]}
    return LocalResult(outputs, stats, wall, names[:n])


# ---- process-wide settings while parties run as threads -----------------------------------------
#
# Two settings help when every party and the dealer are threads of this process, and both
# belong to the whole process, not to a thread: torch's intra-op thread count (parties
# share this machine's cores: one torch thread each, or OpenMP teams of every party spin
# against each other; CrypTen's default is 2-3x slower for it) and the interpreter's GIL
# switch interval (parties hand each other a message every round; with Python's default
# 5 ms slices a busy thread, the dealer say, delays every handoff). So they are set only
# while runs are in progress and put back after the last one: counted, so that runs
# overlapping in other threads neither restore too early nor leave the run's values behind.

PARTY_TORCH_THREADS = 1
PARTY_SWITCH_INTERVAL_S = 0.0002

_settings_lock = threading.Lock()
_settings_users = 0
_settings_saved: tuple[int, float] | None = None


@contextlib.contextmanager
def _party_threads_settings():
    global _settings_users, _settings_saved
    with _settings_lock:
        if _settings_users == 0:
            _settings_saved = (torch.get_num_threads(), sys.getswitchinterval())
            torch.set_num_threads(PARTY_TORCH_THREADS)
            sys.setswitchinterval(PARTY_SWITCH_INTERVAL_S)
        _settings_users += 1
    try:
        yield
    finally:
        with _settings_lock:
            _settings_users -= 1
            if _settings_users == 0:
                threads, interval = _settings_saved
                torch.set_num_threads(threads)
                sys.setswitchinterval(interval)
