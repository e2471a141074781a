"""Clients: plan parties that contribute inputs and receive reveals but do not compute.

An orchestrator, or any user querying a model, is often a party of the plan without being
one of the machines that run the protocols. Such a *client* is listed last among the
plan's parties (so the computing parties keep the ranks 0..n-1 the protocols use) and
named as a client when the plan is run; the plan itself is unchanged, so the same plan
runs with that party computing or as a client.

- **Inputs.** The client runs, in plaintext, the nodes private to it (its loads and what
  it computes from them and from public constants). Each of its values that a computing
  party reads (``interpreter.client_values``) it encodes in fixed point and splits into n
  uniformly random additive shares in Z_2^64, x = x_1 + ... + x_n: party i gets x_i
  alone, before the run, and any n-1 of them are uniform, so no party (nor the dealer,
  which gets none) learns anything about x.
- **Reveals.** A value the plan reveals to the client is revealed to nobody else: each
  computing party keeps its share (``Party.for_clients``) and sends it to the client
  alone, which adds them and decodes (a pending truncation is part of the scale it divides
  by, as in every reveal). A value private to one party and revealed to the client is sent
  by its owner in the clear; a value revealed to all reaches every client as well.
- **After.** With the reveals in hand, the client runs the rest of the nodes private to
  it and ends with the plan's outputs it may see.

Only what a plan's ``reveal`` names ever reaches a client: a worker sends a client only
the entries the reveal protocol kept for it. Unsupported, with a clear error: a client's
input that depends on a value revealed to it during the same run, and client values or
reveals to a client inside a loop body.
"""
from __future__ import annotations

import torch

import dataclasses
import threading

from planc.ir import ops
from planc.ir.graph import Graph, Node, Region, Value
from planc.ir.types import SECRET

from . import fixed, prg
from .dtypes import TORCH_DTYPE
from .errors import PlanRuntimeError
from .interpreter import outer_reads


class ClientError(PlanRuntimeError):
    """A plan that cannot be run with the given clients, or a client's failure."""


def client_values(graph: Graph, n: int) -> dict:
    """{value name: owner index} of the values owned by a client (a plan party with index
    >= n) that a node run by the computing parties reads: what each client secret-shares
    to them before the run. Plaintext nodes private to the client run at the client."""
    def at_client(node):
        return node.results and all(r.type.vis.is_private and r.type.vis.owner >= n for r in node.results)

    read = set()

    def walk(nodes):
        for node in nodes:
            if ops.get(node.op).terminator or at_client(node):
                continue
            read.update(v.name for v in node.operands)
            read.update(outer_reads(node))
            for r in node.regions:
                walk(r.nodes)

    walk(graph.nodes)
    return {r.name: r.type.vis.owner for node in graph.walk() for r in node.results
            if r.name in read and r.type.vis.is_private and r.type.vis.owner >= n}


_VIEWS: list = []  # [(graph, n, view)]: the computing parties' view of recent plans
_views_lock = threading.Lock()


def for_computing(graph: Graph, clients=()) -> tuple[Graph, dict]:
    """The plan as the computing parties run it, and its client values (client_values):
    each client value is typed secret — the parties hold shares of it, and the protocols
    choose their algorithm by their operands' types — so every node reading one sees a
    secret operand. Nodes, names and locations are otherwise the plan's own. Cached per
    plan object (the cost model keys its cache on the graph it is given)."""
    if not clients:
        return graph, {}
    n = ncompute(graph, clients)
    with _views_lock:
        for g, k, view in _VIEWS:
            if g is graph and k == n:
                return view
    values = client_values(graph, n)
    typed = {}

    def value(v: Value) -> Value:
        if v.name not in values:
            return v
        got = typed.get(v.name)
        if got is None:
            got = typed[v.name] = Value(v.name, dataclasses.replace(v.type, vis=SECRET))
        return got

    def node(nd: Node) -> Node:
        return dataclasses.replace(nd, operands=tuple(value(v) for v in nd.operands),
                                   results=tuple(value(v) for v in nd.results),
                                   regions=tuple(Region(tuple(value(p) for p in r.params),
                                                        tuple(node(m) for m in r.nodes)) for r in nd.regions))

    view = (dataclasses.replace(graph, nodes=tuple(node(nd) for nd in graph.nodes)), values)
    with _views_lock:
        _VIEWS[:] = _VIEWS[-7:] + [(graph, n, view)]
    return view


def ncompute(graph: Graph, clients=()) -> int:
    """The number of computing parties when `clients` (names) do not compute; checks that
    they are the plan's last parties and that at least two parties compute."""
    clients = list(clients or ())
    parties = list(graph.parties)
    unknown = [c for c in clients if c not in parties]
    if unknown:
        raise ClientError(None, None, f"client {unknown[0]} is not a party of the plan (parties: "
                                      f"{', '.join(parties)})")
    if len(set(clients)) != len(clients):
        raise ClientError(None, None, f"clients repeat: {', '.join(clients)}")
    n = len(parties) - len(clients)
    if sorted(parties[n:]) != sorted(clients):
        raise ClientError(None, None, f"clients must be the plan's last parties: the plan lists "
                                      f"{', '.join(parties)}; trace it with parties=[...] ordered so that "
                                      f"{', '.join(clients)} come last")
    if n < 2:
        raise ClientError(None, None, f"{n} computing part{'y' if n == 1 else 'ies'} besides the clients "
                                      f"{', '.join(clients)}: a secret-shared run needs at least 2")
    if clients:
        _check_loops(graph, n)
    return n


def _check_loops(graph: Graph, n: int):
    for top in graph.nodes:
        if not top.regions:
            continue
        for node in _inside(top):
            for r in node.results:
                vis = r.type.vis
                if vis.is_private and vis.owner >= n:
                    raise ClientError(node, graph.parties[vis.owner], "a client's value inside a loop body "
                                      "(clients compute only outside loops)", graph=graph)
            if node.op == "reveal" and node.attr("to") >= n:
                raise ClientError(node, graph.parties[node.attr("to")], "a reveal to a client inside a loop body; "
                                  "reveal after the loop", graph=graph)


def _inside(node):
    for r in node.regions:
        for n in r.nodes:
            yield n
            yield from _inside(n)


class ClientRun:
    """What client `name` does for one run of `graph`: ``shares()`` before it (one dict of
    shares per computing party), ``finish(kept)`` after it, with what each party kept for
    it (``Party.for_clients``), giving the plan's outputs as the client sees them."""

    def __init__(self, graph: Graph, name: str, clients, *, data=None, constants=None, inputs=(),
                 frac: int = fixed.DEFAULT_FRAC_BITS):
        self.g = graph
        self.name = name
        self.n = ncompute(graph, clients)
        if name not in clients:
            raise ClientError(None, name, f"{name} is not among the clients ({', '.join(clients)})")
        self.k = list(graph.parties).index(name)
        self.data = data or {}
        self.constants = constants or {}
        self.inputs = list(inputs)
        self.frac = frac
        self.sends = client_values(graph, self.n)
        self.env: dict = {}
        self._run(revealed={})

    # ---- the plaintext part private to this client ------------------------------------------
    def _run(self, revealed: dict):
        """Every top-level node this client can compute, in order; the rest stay unknown."""
        env = self.env
        for node in self.g.nodes:
            d = ops.get(node.op)
            if d.terminator or node.regions or node.results[0].name in env:
                continue  # a loop is the computing parties' (its results may be revealed to this client later)
            r = node.results[0]
            if node.op == "reveal":
                if node.attr("to") in (self.k, -1) and r.name in revealed:
                    env[r.name] = revealed[r.name]
                elif node.attr("to") == self.k and node.operands[0].name in env:
                    env[r.name] = env[node.operands[0].name]  # its own value, back to itself
                continue
            mine = all(x.type.vis.is_public or (x.type.vis.is_private and x.type.vis.owner == self.k)
                       for x in node.results)
            if not mine:
                continue
            if d.source:
                outs = [self._source(node)]
            elif all(v.name in env for v in node.operands):
                try:
                    outs = d.rule("reference")(node, [env[o.name] for o in node.operands], node.attr_dict)
                except Exception as e:  # noqa: BLE001 — named, with the user's line
                    raise ClientError(node, self.name, f"{type(e).__name__}: {e}", e, graph=self.g) from e
                if not isinstance(outs, (list, tuple)):
                    outs = [outs]
            else:
                continue
            for res, v in zip(node.results, outs):
                if v is not None:
                    env[res.name] = v

    def _source(self, node):
        a = node.attr_dict
        t = node.result.type
        if node.op == "const":
            return torch.tensor(a["value"], dtype=TORCH_DTYPE[t.dtype]) if a["value"] is not None \
                else self.constants.get(a["name"])
        if node.op == "input":
            return self.inputs[a["index"]].to(TORCH_DTYPE[t.dtype]) if a["index"] < len(self.inputs) else None
        if node.op == "load" and a["owner"] == self.k:
            x = self.data.get(a["tag"])
            if x is None:
                have = ", ".join(sorted(self.data)) or "none"
                raise ClientError(node, self.name, f"client {self.name} has no data under tag {a['tag']!r} "
                                                   f"(it has: {have})", graph=self.g)
            if tuple(x.shape) != tuple(t.shape):
                raise ClientError(node, self.name, f"tag {a['tag']!r}: shape {tuple(x.shape)}, the plan expects "
                                                   f"{tuple(t.shape)}", graph=self.g)
            return x.to(TORCH_DTYPE[t.dtype])
        return None

    # ---- before the run ------------------------------------------------------------------------
    def shares(self) -> list[dict]:
        """[{value name: int64 share} for each computing party]: additive shares of every
        value of this client that the computing parties read."""
        out = [{} for _ in range(self.n)]
        for node in self.g.walk():
            if len(node.results) != 1 or node.result.name not in self.sends:
                continue  # a client's values are single results (loads, and what it computes from them)
            if node.result.type.vis.owner != self.k:
                continue
            name = node.result.name
            if name not in self.env:
                raise ClientError(node, self.name, f"client {self.name} cannot share %{name} before the run: it "
                                  "depends on a value revealed to it during the run (split the plan in two)",
                                  graph=self.g)
            x = fixed.encode(self.env[name], self.frac)
            seed = prg.new_seed()
            rest = torch.zeros_like(x)
            for i in range(self.n - 1):
                r = prg.ring(seed, "client", i, tuple(x.shape))
                out[i][name] = r
                rest += r
            out[self.n - 1][name] = x - rest
        return out

    # ---- after the run -------------------------------------------------------------------------
    def finish(self, kept: list[dict]) -> list:
        """The plan's outputs for this client (None where it may not see one), from what
        every computing party kept for it: kept[i] = {value name: entry} of party i."""
        if len(kept) != self.n:
            raise ClientError(None, self.name, f"reveals from {len(kept)} parties, {self.n} compute")
        revealed = {}
        names = set().union(*[set(k) for k in kept]) if kept else set()
        for name in sorted(names):
            entries = [k.get(name) for k in kept]
            plain = [e["plain"] for e in entries if e is not None and "plain" in e]
            if plain:
                revealed[name] = plain[0]
                continue
            if any(e is None or "share" not in e for e in entries):
                who = [self.g.parties[i] for i, e in enumerate(entries) if e is None or "share" not in e]
                raise ClientError(None, self.name, f"%{name}: no share from {', '.join(who)}")
            extra = entries[0]["extra"]
            total = torch.zeros_like(entries[0]["share"])
            for e in entries:
                if e["extra"] != extra or tuple(e["share"].shape) != tuple(total.shape):
                    raise ClientError(None, self.name, f"%{name}: the parties' shares disagree in shape or scale")
                total += e["share"]
            revealed[name] = fixed.decode(total, self.frac + extra, TORCH_DTYPE[entries[0]["dtype"]])
        self._run(revealed)
        term = self.g.nodes[-1]
        outs = []
        for v in term.operands:
            vis = v.type.vis
            seen = vis.is_public or (vis.is_private and vis.owner == self.k)
            outs.append(self.env.get(v.name) if seen else None)
        return outs
