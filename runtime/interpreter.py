"""Run a plan as one party over secret-shared values.

Protocols are generators: ``got = yield Ex(sends, recvs)`` is one message exchange.
The block scheduler runs every node whose operands are ready, advances all running
protocols to their next exchange, and performs all of those exchanges as ONE round
(all openings at the same depth travel together, as MP-SPDZ merges its opens). With
``merge=False`` nodes run one at a time, for comparison.

Ops whose result is public run at every party, ops whose result is ``private<k>`` run
at party k alone, both in plaintext with the reference runtime's rules. Ops with a
secret result, and ``share``/``reveal``, run their protocol from ``PROTOCOLS``.
Values are freed after their last use. Failures are re-raised as PlanRuntimeError
naming the node, the party and the user's source line.

Cancellation: ``check`` (the communicator's ``check``, set by the session) is called
before each top-level node starts and once per loop trip, so a party deep in local
work — a public loop, the dealer making material — still stops on a peer's failure or
its deadline. What it raises (a ``CommError``) passes through unwrapped, so the run's
root failure stays the one reported.
"""
from __future__ import annotations

import torch

from planc.ir import ops
from planc.ir.graph import Graph, Node

from .comm.base import CommError
from .errors import DataError, PlanRuntimeError, describe, missing_tag
from .ranges import range_problem
from .party import Party
from .protocols.common import settle
from .protocols.core import ABSENT, Ex, Shared, local, merge, split
from .dtypes import TORCH_DTYPE, fit_problem


# the protocols (and the plaintext rules, which public and private ops and shape-only ops
# on shares run) register themselves against the op definitions when imported
from . import protocols, semantics  # noqa: E402,F401

ops.check("protocol", "bound")

# a view by op name, for callers that list what has a protocol (derived, read-only)
PROTOCOLS = {d.name: d.rule("protocol") for d in ops.REGISTRY.values() if d.rule("protocol")}


def _shape_protocol(rule):
    """A shape-only op on shares: its plaintext rule applied to every share (no message)."""

    def proto(P, node, args, a):
        (x,) = args
        (out,) = rule(node, [x.data], a)
        return Shared(out, x.extra)
        yield  # pragma: no cover

    return proto


class Interpreter:
    def __init__(self, graph: Graph, party: Party, *, data=None, constants=None, inputs=(), merge: bool = True,
                 client_shares=None, from_clients=None):
        self.g = graph
        self.P = party
        # clients' values that the computing parties use ({value name: client index};
        # runtime/clients.py) and this party's shares of them
        self.from_clients = from_clients or {}
        self.client_shares = client_shares or {}
        self.data = data or {}
        self.constants = constants or {}
        self.inputs = list(inputs)
        self.merge = merge
        self.nodes_run = 0
        self.tick = None  # optional callback after each node, for progress displays
        self.check = None  # optional callable(where): raises to stop this party (see the module docstring)
        self.wave: list = []  # top-level nodes taking part in the exchange being performed
        self._outer: dict[int, frozenset] = {}  # id(node) -> outer_reads(node); the graph keeps nodes alive

    # ------------------------------------------------------------ entry
    def run(self, exchange) -> list:
        """Run the plan; `exchange(Ex) -> {src: [tensors]}` moves the bytes."""
        gen = self.block(self.g.nodes, {})
        try:
            ex = next(gen)
            while True:
                ex = gen.send(exchange(ex))
        except StopIteration as stop:
            return stop.value

    # ------------------------------------------------------------ blocks
    def block(self, nodes, env: dict, depth: int = 0):
        """Generator: runs `nodes` (ending in yield/return), returns the terminator's values."""
        body, term = nodes[:-1], nodes[-1]
        uses: dict[str, int] = {}
        for n in nodes:
            for name in self._reads(n):
                uses[name] = uses.get(name, 0) + 1
        keep = {v.name for v in term.operands}
        pending = list(body)
        running: list = []  # [node, generator, pending Ex]
        check = self.check if depth == 0 else None  # in a loop body: the loop checks once per trip

        def finish(node, outs):
            if not isinstance(outs, (list, tuple)):
                outs = [outs]
            for r, v in zip(node.results, outs):
                env[r.name] = v
            self.nodes_run += 1
            if self.tick is not None:
                self.tick(self.nodes_run)
            for name in self._reads(node):
                uses[name] -= 1
                if uses[name] == 0 and name not in keep:
                    env.pop(name, None)
            for r in node.results:
                if uses.get(r.name, 0) == 0 and r.name not in keep:
                    env.pop(r.name, None)

        while pending or running:
            progressed = True
            while progressed:
                progressed = False
                rest = []
                for node in pending:
                    ready = all(v.name in env for v in node.operands) and all(
                        name in env for name in self._outer_reads(node))
                    if ready and (self.merge or (not running and not rest)):
                        if check is not None:
                            check(node)
                        gen = self.start(node, env)
                        try:
                            ex = next(gen)
                            running.append([node, gen, ex])
                        except StopIteration as stop:
                            finish(node, stop.value)
                        progressed = True
                    else:
                        rest.append(node)
                pending = rest
            if not running:
                if pending:
                    raise PlanRuntimeError(pending[0], self.P.name, "operands never became ready")
                break
            merged = merge([r[2] for r in running])
            if depth == 0:
                self.wave = [r[0] for r in running]
            got = yield merged[0]
            parts = split(got, merged[1])
            still = []
            for (node, gen, _), part in zip(running, parts):
                try:
                    ex = self._advance(node, gen, part)
                    still.append([node, gen, ex])
                except StopIteration as stop:
                    finish(node, stop.value)
            running = still
        outs = [env[v.name] for v in term.operands]
        if any(isinstance(o, Shared) and o.extra for o in outs):
            # loop-carried values and plan outputs leave at the standard scale
            outs = yield from self.settle_all(outs)
        return outs

    def _advance(self, node, gen, part):
        try:
            return gen.send(part)
        except (StopIteration, PlanRuntimeError, CommError):
            raise
        except Exception as e:
            raise self.error(node, e) from e

    def error(self, node, e):
        return PlanRuntimeError(node, self.P.name, describe(e), e, graph=self.g)

    def _outer_reads(self, node: Node) -> frozenset:
        # cached for this run only: loop bodies are scheduled once per trip
        got = self._outer.get(id(node))
        if got is None:
            got = self._outer[id(node)] = outer_reads(node)
        return got

    def _reads(self, node: Node) -> set[str]:
        return {v.name for v in node.operands} | self._outer_reads(node)

    # ------------------------------------------------------------ nodes
    def start(self, node: Node, env: dict):
        """A generator for one node (protocols), or one that returns at once (local ops)."""
        try:
            if self.from_clients and node.results and node.results[0].name in self.from_clients:
                return _now(self.client_share(node))
            args = [env[v.name] for v in node.operands]
            d = ops.get(node.op)
            if node.op == "loop":
                return self.loop(node, args, env)
            if d.source:
                return _now(self.source(node))
            vis = node.results[0].type.vis
            if d.moves or vis.is_secret:
                proto = d.rule("protocol")
                if proto is None and d.shape_only:
                    proto = _shape_protocol(d.rule("reference"))
                if proto is None:
                    raise NotImplementedError(f"no secret-shared protocol for {node.op}")
                if not d.accepts_pending_truncation and any(isinstance(a, Shared) and a.extra for a in args):
                    return self._guard(node, self._settled(proto, node, args))
                return self._guard(node, proto(self.P, node, args, node.attr_dict))
            if vis.is_private and (self.P.meta or vis.owner != self.P.rank):
                return _now(ABSENT)
            if any(a is ABSENT or isinstance(a, Shared) for a in args):
                raise RuntimeError("plaintext op on a value this party does not hold in the clear")
            return _now(d.rule("reference")(node, args, node.attr_dict))
        except (PlanRuntimeError, CommError):
            raise
        except Exception as e:
            raise self.error(node, e) from e

    def client_share(self, node: Node) -> Shared:
        """A client's value, as this party's share of it (the client made the shares and
        sent them before the run: runtime/clients.py); shape-only at the dealer."""
        t = node.result.type
        if self.P.meta:
            return Shared(self.P.empty(t.shape))
        x = self.client_shares.get(node.result.name)
        who = self.g.parties[self.from_clients[node.result.name]]
        if x is None:
            raise DataError(node, self.P.name, f"client {who} sent no share of %{node.result.name}", graph=self.g)
        if not isinstance(x, torch.Tensor) or x.dtype != torch.int64 or tuple(x.shape) != tuple(t.shape):
            got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise DataError(node, self.P.name, f"client {who}'s share of %{node.result.name} is {got}, not int64 "
                                               f"{tuple(t.shape)}", graph=self.g)
        return Shared(x)

    def _settled(self, proto, node, args):
        """Truncate pending bits of secret operands, then run the protocol."""
        args = yield from self.settle_all(args)
        return (yield from proto(self.P, node, args, node.attr_dict))

    def settle_all(self, values):
        """Secret values brought to the standard scale (their pending truncations done)."""
        out = []
        for v in values:
            out.append((yield from settle(self.P, v)) if isinstance(v, Shared) and v.extra else v)
        return out

    def _guard(self, node, gen):
        """Wrap a protocol generator so its failures name the node."""
        try:
            ex = next(gen)
            while True:
                got = yield ex
                ex = gen.send(got)
        except StopIteration as stop:
            return stop.value
        except (PlanRuntimeError, CommError):
            raise
        except Exception as e:
            raise self.error(node, e) from e

    def source(self, node: Node):
        t = node.result.type
        a = node.attr_dict
        if node.op == "const":
            if a["value"] is not None:
                return torch.tensor(a["value"], dtype=TORCH_DTYPE[t.dtype])
            try:
                return self.constants[a["name"]]
            except KeyError:
                raise DataError(node, self.P.name, f"the plan has no constant {a['name']!r}", graph=self.g) from None
        if node.op == "input":
            if a["index"] >= len(self.inputs):
                raise DataError(node, self.P.name, f"public input {a['index']} was not given", graph=self.g)
            x = self.inputs[a["index"]]
            bad = fit_problem(x, t) or self._out_of_range(node, x)
            if bad:
                raise DataError(node, self.P.name, f"public input {a['index']}: {bad}", graph=self.g)
            return x.to(TORCH_DTYPE[t.dtype])
        if node.op == "load":
            if self.P.meta or a["owner"] != self.P.rank:
                return ABSENT
            x = self.data.get(a["tag"])
            if x is None:
                raise DataError(node, self.P.name, missing_tag(a["tag"], t, self.P.name, self.data), graph=self.g)
            bad = fit_problem(x, t) or self._out_of_range(node, x)
            if bad:
                raise DataError(node, self.P.name, f"tag {a['tag']!r}: {bad}", graph=self.g)
            return x.to(TORCH_DTYPE[t.dtype])
        raise DataError(node, self.P.name, f"model {a['tag']!r} must be linked into the plan before a "
                                           "secret-shared run", graph=self.g)

    def _out_of_range(self, node: Node, x) -> str | None:
        """Input range check (runtime/ranges.py): the limits admission derived for this plan
        (set by the session as ``input_limits``); None where none were given."""
        limit = (getattr(self, "input_limits", None) or {}).get(node.result.name)
        return None if limit is None else range_problem(x, limit)

    def loop(self, node: Node, args, env):
        args = yield from self.settle_all(args)
        (body,) = node.regions
        names = sorted(self._outer_reads(node))
        outer = dict(zip(names, (yield from self.settle_all([env[n] for n in names]))))
        carried = list(args)
        check = self.check
        for i in range(node.attr("trips")):
            if check is not None:
                check(node)
            inner = dict(outer)
            inner[body.params[0].name] = torch.tensor(i, dtype=torch.int64)
            for p, v in zip(body.params[1:], carried):
                inner[p.name] = v
            carried = yield from self.block(body.nodes, inner, depth=1)
        return carried


_now = local


def outer_reads(node: Node) -> frozenset:
    """Values a node's regions read from outside them."""
    if not node.regions:
        return frozenset()
    defined, used = set(), set()

    def walk(nodes):
        for n in nodes:
            used.update(v.name for v in n.operands)
            defined.update(r.name for r in n.results)
            for r in n.regions:
                defined.update(p.name for p in r.params)
                walk(r.nodes)

    for r in node.regions:
        defined.update(p.name for p in r.params)
        walk(r.nodes)
    return frozenset(used - defined)


def count_steps(nodes) -> int:
    """Nodes a run executes, loop bodies counted once per trip (for progress bars)."""
    total = 0
    for n in nodes:
        if ops.get(n.op).terminator:
            continue
        total += 1
        if n.op == "loop":
            total += n.attr("trips") * count_steps(n.regions[0].nodes)
    return total
