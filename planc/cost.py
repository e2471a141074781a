"""The cost model: rounds, bytes per party and dealer material, predicted exactly.

The runtime's protocols are data-oblivious: which messages they send and what material
they ask for depends only on the plan (shapes, attributes, visibilities), never on
values. So the model runs each party's protocols on shape-only (meta) tensors with a
communicator that counts instead of sending: the prediction is the runtime's own count,
made without any data. Per-node figures come from the unmerged schedule (one node at a
time); totals are given for both schedules, before and after round merging.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch

from planc.runtime import protocols  # noqa: F401
from planc.runtime.comm.base import nbytes
from planc.runtime.interpreter import Interpreter
from planc.runtime.material import _descr
from planc.runtime.party import Party
from planc.runtime.dtypes import TORCH_DTYPE
from planc.runtime.report import mib
from planc.runtime.session import integral_names

NETWORKS = {"lan": (0.2, 10.0), "wan": (40.0, 0.1)}  # RTT ms, Gbit/s


@dataclass
class PartyCost:
    rounds: int = 0
    bytes_sent: int = 0
    bytes_recv: int = 0


@dataclass
class Cost:
    """What running a plan costs, exactly: ``plan.cost(net="wan")`` or ``predict(plan)``.

    ``print(cost)`` gives a table with units; ``repr`` one line; ``time_estimate()`` the
    communication-only time in seconds on the network model `net`."""

    parties: list
    merged: dict  # party -> PartyCost with round merging (what the runtime does)
    sequential: dict  # party -> PartyCost, one node at a time
    per_node: list  # [(node, {party: PartyCost})] from the sequential schedule
    dealer_bytes: int = 0
    material: dict = field(default_factory=dict)  # request descriptor -> count
    peak_bytes: dict = field(default_factory=dict)  # party -> estimated peak bytes of live values
    net: str | tuple = "lan"  # the network model time_estimate() uses by default

    @property
    def rounds(self) -> int:
        """Rounds of the run as the runtime schedules it (merged), the most of any party."""
        return max((c.rounds for c in self.merged.values()), default=0)

    @property
    def bytes_sent(self) -> int:
        """Bytes sent by all computing parties together (dealer material not included)."""
        return sum(c.bytes_sent for c in self.merged.values())

    def time_estimate(self, net: str | tuple | None = None) -> float:
        """Seconds of communication on `net`: "lan", "wan", "RTT_ms,Gbit_per_s" or a parsed
        (rtt_ms, gbit_per_s) pair as `parse_net` returns; default: this cost's own `net`."""
        rtt_ms, gbits = parse_net(self.net if net is None else net)
        if not self.merged:
            return 0.0
        worst = max(self.merged.values(), key=lambda c: c.bytes_sent + c.bytes_recv)
        return self.rounds * rtt_ms / 1000 + (worst.bytes_sent + worst.bytes_recv) * 8 / (gbits * 1e9)

    def net_label(self, net: str | tuple | None = None) -> str:
        net = self.net if net is None else net
        rtt, gb = parse_net(net)
        return net if isinstance(net, str) else f"{rtt:g},{gb:g}"

    def net_line(self, net: str | tuple | None = None) -> str:
        net = self.net if net is None else net
        rtt, gb = parse_net(net)
        label = self.net_label(net)
        return (f"estimated online time on {label} ({rtt:g} ms RTT, {gb:g} Gbit/s), communication only: "
                f"{self.time_estimate(net) * 1000:.1f} ms")

    def total_table(self):
        """The `total` table of ``planc show --cost``: rounds, bytes, memory per party."""
        from rich.table import Table

        t = Table(title="total", title_justify="left")
        for col in ("party", "rounds (one node at a time)", "rounds (merged)", "sent", "received", "peak memory"):
            t.add_column(col, justify="left" if col == "party" else "right")
        for p in self.parties:
            t.add_row(p, str(self.sequential[p].rounds), str(self.merged[p].rounds), mib(self.merged[p].bytes_sent),
                      mib(self.merged[p].bytes_recv), mib(self.peak_bytes.get(p, 0)))
        return t

    def dealer_line(self) -> str:
        to = self.parties[-1] if self.parties else "nobody"
        return f"dealer material: {mib(self.dealer_bytes)} to {to}, {sum(self.material.values())} requests"

    def __str__(self) -> str:
        from planc.runtime.report import render

        return render(self.total_table(), self.dealer_line(), self.net_line()).rstrip("\n")

    def __repr__(self) -> str:
        worst = max((c.bytes_sent for c in self.merged.values()), default=0)
        return (f"<Cost {', '.join(self.parties)}: {self.rounds} rounds, {mib(self.bytes_sent)} sent "
                f"({mib(worst)} by the busiest party), dealer {mib(self.dealer_bytes)}; "
                f"~{self.time_estimate():.3f} s on {self.net_label()}>")


def parse_net(net):
    """"lan", "wan" or "RTT_ms,Gbit_per_s" (e.g. "10,1") -> (rtt_ms, gbit_per_s); a pair passes through."""
    if isinstance(net, (tuple, list)) and len(net) == 2:
        rtt, gb = (float(x) for x in net)
    elif isinstance(net, str) and net in NETWORKS:
        return NETWORKS[net]
    else:
        try:
            rtt, gb = (float(x) for x in net.split(","))
        except (ValueError, AttributeError):
            raise ValueError(f"network {net!r}: use lan, wan or RTT_ms,Gbit_per_s (e.g. 10,1)") from None
    if not (rtt >= 0 and gb > 0):
        raise ValueError(f"network {net!r}: the RTT must be >= 0 ms and the bandwidth > 0 Gbit/s")
    return rtt, gb


class _CountingMaterial:
    """Like the dealer's: meta placeholders out, requests counted."""

    def __init__(self):
        self.counter = 0
        self.dealer_bytes = 0
        self.kinds: dict[str, int] = defaultdict(int)

    def get(self, kind, random, derived, derive, share_of=None):
        self.counter += 1
        self.kinds[_descr(kind, random + derived)] += 1
        for p in derived:
            self.dealer_bytes += nbytes(p.shape, p.dtype)
        return {p.name: torch.empty(p.shape, dtype=p.dtype, device="meta") for p in random + derived}


def _run(graph, constants, rank, merge, inputs, per_node=None, lazy=True):
    n = len(graph.parties)
    mat = _CountingMaterial()
    P = Party(rank=rank, nparties=n, names=list(graph.parties), material=mat, meta=True,
              integral_names=integral_names(graph, constants), lazy=lazy)
    interp = Interpreter(graph, P, constants=constants, inputs=inputs, merge=merge)
    cost = PartyCost()

    def exchange(ex):
        sends = {d: ts for d, ts in ex.sends.items() if ts}
        recvs = {s: sp for s, sp in ex.recvs.items() if sp}
        if sends or recvs:
            cost.rounds += 1
            sent = sum(_packed(ts) for ts in sends.values())
            recv = sum(sum(nbytes(s, d) for s, d in sp) for sp in recvs.values())
            cost.bytes_sent += sent
            cost.bytes_recv += recv
            if per_node is not None:
                (node,) = interp.wave
                c = per_node.setdefault(id(node), (node, PartyCost()))[1]
                c.rounds += 1
                c.bytes_sent += sent
                c.bytes_recv += recv
        return {s: [torch.empty(sh, dtype=dt, device="meta") for sh, dt in sp] for s, sp in ex.recvs.items()}

    interp.run(exchange)
    return cost, mat


def _packed(tensors) -> int:
    return sum(nbytes(tuple(t.shape), t.dtype) for t in tensors)


def predict(plan, inputs=None, lazy: bool = True, net: str | tuple = "lan") -> Cost:
    """Exact rounds, bytes and dealer material of running `plan` (a Plan or Graph).
    `lazy=False` predicts a run with every truncation done at once (for comparison);
    `net` is the network model the result's time estimate uses (see `parse_net`)."""
    parse_net(net)  # a bad network model fails before the work
    graph = getattr(plan, "graph", plan)
    constants = getattr(plan, "constants", {}) or {}
    if inputs is None:
        inputs = _zero_inputs(graph)
    parties = list(graph.parties)
    merged, seq, nodes = {}, {}, {}
    mat = None
    for k, name in enumerate(parties):
        merged[name], mat = _run(graph, constants, k, True, inputs, lazy=lazy)
        per = {}
        seq[name], _ = _run(graph, constants, k, False, inputs, per, lazy=lazy)
        for key, (node, c) in per.items():
            nodes.setdefault(key, (node, {}))[1][name] = c
    order = {id(n): i for i, n in enumerate(graph.nodes)}
    per_node = sorted(nodes.values(), key=lambda x: order.get(id(x[0]), 0))
    return Cost(parties, merged, seq, per_node, mat.dealer_bytes, dict(mat.kinds), _peak(graph), net)


def _zero_inputs(graph):
    ins = sorted((n.attr("index"), n.result.type) for n in graph.walk() if n.op == "input")
    return [torch.zeros(t.shape, dtype=TORCH_DTYPE[t.dtype]) for _, t in ins]


def _peak(graph) -> dict:
    """Bytes of live values at the worst point of the top-level schedule, per party: a
    secret element costs 8 bytes (one ring share) at every party; plaintext values count
    at the parties that hold them."""
    last = {}
    for i, n in enumerate(graph.nodes):
        for v in n.operands:
            last[v.name] = i
    out = {}
    for k, p in enumerate(graph.parties):
        live, peak, sizes = 0, 0, {}
        for i, n in enumerate(graph.nodes):
            for r in n.results:
                t = r.type
                held = t.vis.is_secret or t.vis.is_public or t.vis.owner == k
                if held:
                    sizes[r.name] = t.numel * (8 if t.vis.is_secret else torch.empty((), dtype=TORCH_DTYPE[t.dtype]).element_size())
                    live += sizes[r.name]
            peak = max(peak, live)
            for v in n.operands:
                if last.get(v.name) == i and v.name in sizes:
                    live -= sizes.pop(v.name)
        out[p] = peak
    return out
