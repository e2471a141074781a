"""The cost model: rounds, bytes per party and dealer material, predicted exactly; memory,
work and time bounded.

The runtime's protocols are data-oblivious: which messages they send and what material
they ask for depends only on the plan (shapes, attributes, visibilities), never on
values. So the model runs each party's protocols on shape-only (meta) tensors — public
values included, loops costed one trip and multiplied — with a communicator that counts
instead of sending: the prediction is the runtime's own count, made without any data and
without executing anything on it. The core is the runtime's (``planc.runtime.bounds``,
which workers use without the front end); this module presents it. Per-node figures are
each node's own exchanges (loop trips included); totals are given for both schedules,
before and after round merging. How exact each figure is: ``planc.runtime.bounds``
(rounds and bytes exact, peak memory an upper estimate, work and time estimates).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from planc.runtime import bounds as _bounds
from planc.runtime.bounds import NETWORKS, parse_net  # noqa: F401  (the public names of this module)
from planc.runtime.report import mib


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
    peak_bytes: dict = field(default_factory=dict)  # party -> peak memory, an upper estimate (bytes)
    net: str | tuple = "lan"  # the network model time_estimate() uses by default
    bounds: _bounds.Bounds | None = None  # the runtime's figures: work, dealer memory, notes

    @property
    def work(self) -> dict:
        """party -> element operations (an estimate, loop trips included)."""
        return {p: b.work for p, b in self.bounds.party.items()} if self.bounds else {}

    @property
    def dealer_peak_bytes(self) -> int:
        return self.bounds.dealer.peak_bytes if self.bounds else 0

    @property
    def notes(self) -> list:
        """Where a figure said to be exact is not, for this plan (planc.runtime.bounds)."""
        return list(self.bounds.notes) if self.bounds else []

    def wall_estimate(self, net: str | tuple | None = None) -> float:
        """Seconds of a whole run, roughly: the dealer's and the slowest party's work plus
        communication on `net` (planc.runtime.bounds.Bounds.wall_estimate)."""
        return self.bounds.wall_estimate(self.net if net is None else net) if self.bounds else 0.0

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
        for col in ("party", "rounds (one node at a time)", "rounds (merged)", "sent", "received",
                    "peak memory (at most)", "work (element ops)"):
            t.add_column(col, justify="left" if col == "party" else "right")
        work = self.work
        for p in self.parties:
            t.add_row(p, str(self.sequential[p].rounds), str(self.merged[p].rounds), mib(self.merged[p].bytes_sent),
                      mib(self.merged[p].bytes_recv), mib(self.peak_bytes.get(p, 0)), f"{work.get(p, 0):.3g}")
        return t

    def dealer_line(self) -> str:
        to = self.parties[-1] if self.parties else "nobody"
        line = f"dealer material: {mib(self.dealer_bytes)} to {to}, {sum(self.material.values())} requests"
        if self.bounds:
            line += f"; dealer memory at most {mib(self.dealer_peak_bytes)}"
        return line

    def wall_line(self, net: str | tuple | None = None) -> str:
        return (f"estimated wall time on {self.net_label(net)}, work and communication (rough, within a factor "
                f"of ~2): {self.wall_estimate(net):.3g} s")

    def notes_lines(self) -> list[str]:
        return [f"note: {n}" for n in self.notes]

    def __str__(self) -> str:
        from planc.runtime.report import render

        return render(self.total_table(), self.dealer_line(), self.net_line(), self.wall_line(),
                      *self.notes_lines()).rstrip("\n")

    def __repr__(self) -> str:
        worst = max((c.bytes_sent for c in self.merged.values()), default=0)
        return (f"<Cost {', '.join(self.parties)}: {self.rounds} rounds, {mib(self.bytes_sent)} sent "
                f"({mib(worst)} by the busiest party), dealer {mib(self.dealer_bytes)}; "
                f"~{self.time_estimate():.3f} s on {self.net_label()}>")


def predict(plan, inputs=None, lazy: bool = True, net: str | tuple = "lan") -> Cost:
    """Exact rounds, bytes and dealer material of running `plan` (a Plan or Graph), with
    its peak memory (upper estimate), work and time (estimates).
    `lazy=False` predicts a run with every truncation done at once (for comparison);
    `net` is the network model the result's time estimate uses (see `parse_net`)."""
    parse_net(net)  # a bad network model fails before the work
    graph = getattr(plan, "graph", plan)
    constants = getattr(plan, "constants", {}) or {}
    b = _bounds.compute(plan, constants=constants, inputs=inputs, lazy=lazy)
    parties = list(graph.parties)
    merged = {p: PartyCost(pb.rounds, pb.bytes_sent, pb.bytes_recv) for p, pb in b.party.items()}
    seq = {}
    integral = _bounds.integral_names(graph, constants)
    frac = _frac(plan)
    for k, name in enumerate(parties):
        r = _bounds.run_cost(graph, constants, k, merge=False, inputs=inputs, lazy=lazy, frac=frac, integral=integral)
        seq[name] = PartyCost(r.tally.rounds + r.tally.bulk_rounds, r.tally.sent + r.tally.bulk_sent,
                              r.tally.recv + r.tally.bulk_recv)
    per_node = [(node, {p: PartyCost(f.rounds, f.bytes_sent, f.bytes_recv) for p, f in figs.items()})
                for node, figs in b.per_node
                if any(f.rounds or f.bytes_sent or f.bytes_recv for f in figs.values())]
    return Cost(parties, merged, seq, per_node, b.dealer.bytes, dict(b.dealer.material),
                {p: pb.peak_bytes for p, pb in b.party.items()}, net, b)


def _frac(plan) -> int:
    from planc.runtime import fixed

    meta = getattr(plan, "meta", None)
    return int(meta.get("frac_bits", fixed.DEFAULT_FRAC_BITS)) if isinstance(meta, dict) else fixed.DEFAULT_FRAC_BITS
