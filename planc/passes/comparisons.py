"""comparisons: pick each comparison's protocol with the exact cost model.

relu, gt, lt, ge and le on a secret operand run one of two protocols (their `method`
attribute, ir/ops.py): "bits", the dealer-assisted bit extraction (3 rounds, a few bytes
per element of dealer material, any number of parties), or "fss", a distributed
comparison function from the dealer (1 round for a comparison, 2 for relu, but about a
kilobyte of key per element; two computing parties only). Which is faster depends on the
network and the tensor: a round saved is worth an RTT, a key costs dealer traffic.

The pass costs the plan twice with the runtime's cost model (runtime/bounds.py: the
protocols themselves run on shape-only tensors, so the figures are the ones a run
measures) — every comparison "bits", then every one "fss" — and picks per top-level node
(a loop: all comparisons in it together) the cheaper under the objective, the most
expensive party deciding:

    rounds   fewest online rounds, then fewest online bytes
    bytes    fewest online bytes (sent + received), then fewest rounds
    time     rounds x RTT + (online bytes + dealer bytes) / bandwidth + work / rate, on
             `net` ("lan", "wan" or "RTT_ms,Gbit_per_s"): the dealer's material travels
             in the same run unless a worker made it ahead, so it counts here

Then it costs the mix and keeps it only if it beats both uniform choices (merging rounds
across nodes can make the sum of the parts differ from the whole). With other than two
computing parties (the plan's parties but its `clients`, which only share in and
receive) every comparison stays "bits".
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from planc.ir.graph import Graph, Region

from .base import Pass, register
from .rewrite import with_nodes

CANDIDATES = ("relu", "gt", "lt", "ge", "le")
OBJECTIVES = ("rounds", "bytes", "time")
METHODS = ("bits", "fss")


def _is_candidate(n) -> bool:
    return n.op in CANDIDATES and any(v.type.vis.is_secret for v in n.operands)


def _has_candidate(n) -> bool:
    return _is_candidate(n) or any(_has_candidate(m) for r in n.regions for m in r.nodes)


def with_method(nodes, method_of) -> tuple:
    """Nodes with each candidate's method set to method_of(top-level index, node)
    (None: left as it is); the top-level index is passed down into regions."""
    def walk(ns, top=None):
        out = []
        for i, n in enumerate(ns):
            k = i if top is None else top
            if n.regions:
                n = replace(n, regions=tuple(Region(r.params, walk(r.nodes, k)) for r in n.regions))
            if _is_candidate(n):
                m = method_of(k, n)
                if m is not None and n.attr("method") != m:
                    n = replace(n, attrs=tuple(sorted({**n.attr_dict, "method": m}.items())))
            out.append(n)
        return tuple(out)

    return walk(nodes)


def score(figs: dict, objective: str, net) -> tuple:
    """A node's (or a plan's) figures {party: NodeFigures or PartyBounds} under the
    objective: smaller is better; the most expensive party decides."""
    from planc.runtime.bounds import ELEMENTS_PER_S, parse_net

    if not figs:
        return (0, 0)
    rounds = max(f.rounds for f in figs.values())
    online = max(f.bytes_sent + f.bytes_recv for f in figs.values())
    if objective == "rounds":
        return (rounds, online)
    if objective == "bytes":
        return (online, rounds)
    rtt_ms, gbits = parse_net(net)
    dealer = max(getattr(f, "dealer_bytes", 0) for f in figs.values())
    work = max(f.work for f in figs.values())
    return (rounds * rtt_ms / 1000 + (online + dealer) * 8 / (gbits * 1e9) + work / ELEMENTS_PER_S, rounds)


def _plan_score(b, objective, net):
    figs = {p: _Whole(pb.rounds, pb.bytes_sent, pb.bytes_recv, pb.work, b.dealer.bytes) for p, pb in b.party.items()}
    return score(figs, objective, net)


@dataclass
class _Whole:
    rounds: int
    bytes_sent: int
    bytes_recv: int
    work: int
    dealer_bytes: int


@register
@dataclass(frozen=True)
class ChooseComparisons(Pass):
    name = "comparisons"
    objective: str = "time"
    net: str = "lan"
    clients: tuple = ()  # the plan's parties that do not compute (its last ones)
    constants: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        from planc.runtime.bounds import parse_net

        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective {self.objective!r}: use one of {', '.join(OBJECTIVES)}")
        parse_net(self.net)

    def run(self, graph: Graph) -> Graph:
        n = len(graph.parties) - len(self.clients)
        tops = [i for i, node in enumerate(graph.nodes) if _has_candidate(node)]
        if not tops:
            return graph
        bits = with_nodes(graph, with_method(graph.nodes, lambda k, node: "bits"))
        if n != 2:
            return bits
        fss = with_nodes(graph, with_method(graph.nodes, lambda k, node: "fss"))
        from planc.runtime import bounds

        kw = dict(constants=self.constants, clients=tuple(self.clients))
        b_bits, b_fss = bounds.compute(bits, **kw), bounds.compute(fss, **kw)
        # per_node: the top-level nodes but the terminator, in program order (of the
        # computing parties' view of the plan, whose nodes are the plan's, retyped)
        fig_bits = [f for _, f in b_bits.per_node]
        fig_fss = [f for _, f in b_fss.per_node]
        pick = {}
        for i in tops:
            a = score(fig_bits[i], self.objective, self.net)
            b = score(fig_fss[i], self.objective, self.net)
            pick[i] = "fss" if b < a else "bits"
        if set(pick.values()) != {"bits", "fss"}:
            return fss if "fss" in pick.values() else bits
        mixed = with_nodes(graph, with_method(graph.nodes, lambda k, node: pick.get(k, "bits")))
        best = min(((_plan_score(bounds.compute(mixed, **kw), self.objective, self.net), 0, mixed),
                    (_plan_score(b_fss, self.objective, self.net), 1, fss),
                    (_plan_score(b_bits, self.objective, self.net), 2, bits)), key=lambda t: (t[0], t[1]))
        return best[2]


def methods(nodes) -> list:
    """[(node, method)] of every comparison on a secret operand among `nodes` and their
    regions, in program order (for `planc show --cost`)."""
    out = []
    for nd in nodes:
        if _is_candidate(nd):
            out.append((nd, nd.attr("method", "bits")))
        for r in nd.regions:
            out.extend(methods(r.nodes))
    return out
