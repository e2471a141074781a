"""The plaintext reference interpreter: the oracle for the secret-shared runtime.

It runs a plan with ordinary floating-point torch ops, as if one trusted machine held
every party's data. Nothing is shared, ``share`` and ``reveal`` are the identity, and a
loop runs its body natively ``trips`` times. The secret-shared runtime is tested
against this: same plan, same data, results equal within the documented fixed-point bound.

Each op runs its plaintext rule (``semantics.py``, registered on the op definition);
every result is cast to the node's declared dtype and checked against its declared
shape, so a reference run is typed exactly like the IR it runs.

Values are freed after their last use, so long plans run in the memory their widest
point needs; ``stats`` lets tests observe that. Any failure is re-raised as a
``PlanRuntimeError`` naming the node and the user's ``file:line``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch

from planc.ir import ops
from planc.ir.graph import Graph, Node, Value

from .dtypes import TORCH_DTYPE, fit_problem  # noqa: F401  (TORCH_DTYPE re-exported)
from .errors import DataError, PlanRuntimeError, describe, missing_tag
from .semantics import RULES, SOURCES, STRUCTURE  # noqa: F401  (RULES used; the rest re-exported)

# ---------------------------------------------------------------- preparation


def _uses(node: Node) -> set[str]:
    """Names a node reads, counting every read inside its regions as a read by the node."""
    names = {v.name for v in node.operands}
    for r in node.regions:
        for inner in _walk(r.nodes):
            names.update(v.name for v in inner.operands)
    return names


def _walk(nodes):
    for n in nodes:
        yield n
        for r in n.regions:
            yield from _walk(r.nodes)


@dataclass
class _Step:
    node: Node
    attrs: dict
    free: tuple[str, ...]  # values defined in this block that are dead after this node
    terminator: bool
    body: "_Block | None" = None


@dataclass
class _Block:
    params: tuple[Value, ...]
    unused_params: tuple[str, ...]
    steps: list[_Step]


def _prepare(graph: Graph, params: tuple[Value, ...], nodes: tuple[Node, ...]) -> _Block:
    """Attributes completed, and for each node the values to free after it.

    Only values defined in this block (params and results) are freed here: a value of
    an outer block read inside a loop body must survive every iteration, so its last
    use is the loop node itself, counted in the outer block.
    """
    last: dict[str, int] = {}
    for i, n in enumerate(nodes):
        for name in _uses(n):
            last[name] = i
    free: list[list[str]] = [[] for _ in nodes]
    for p in params:
        if p.name in last:
            free[last[p.name]].append(p.name)
    for i, n in enumerate(nodes):
        for r in n.results:
            # a result nobody reads dies at once
            free[last.get(r.name, i)].append(r.name)
    steps = []
    for i, n in enumerate(nodes):
        try:
            d = ops.get(n.op)
            attrs = ops.full_attrs(d, n.attr_dict)
        except ops.TypeRuleError as e:
            raise PlanRuntimeError(n, None, str(e), e, graph=graph) from e
        body = _prepare(graph, n.regions[0].params, n.regions[0].nodes) if n.regions else None
        steps.append(_Step(n, attrs, tuple(free[i]), d.terminator, body))
    unused = tuple(p.name for p in params if p.name not in last)
    return _Block(params, unused, steps)


# ---------------------------------------------------------------- the run


class _Run:
    def __init__(self, graph, data, constants, inputs, models):
        self.graph = graph
        self.data = data
        self.constants = constants
        self.inputs = inputs
        self.models = models
        self.env: dict[str, torch.Tensor] = {}
        self.live_bytes = 0
        self.peak_live = 0
        self.peak_bytes = 0
        self.nodes_run = 0

    # -- errors
    def fail(self, cls, node, party, problem, cause=None):
        return cls(node, party, problem, cause, graph=self.graph)

    def party(self, k: int) -> str:
        return self.graph.parties[k] if 0 <= k < len(self.graph.parties) else f"party{k}"

    # -- values
    def set(self, name: str, t: torch.Tensor):
        old = self.env.get(name)
        if old is not None:
            self.live_bytes -= old.nbytes
        self.env[name] = t
        self.live_bytes += t.nbytes
        self.peak_live = max(self.peak_live, len(self.env))
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)

    def drop(self, names):
        for name in names:
            t = self.env.pop(name, None)
            if t is not None:
                self.live_bytes -= t.nbytes

    def bind(self, node: Node, outs):
        if len(outs) != len(node.results):
            raise self.fail(PlanRuntimeError, node, None,
                            f"computed {len(outs)} results, the IR declares {len(node.results)}")
        for r, t in zip(node.results, outs):
            if not isinstance(t, torch.Tensor):
                raise self.fail(PlanRuntimeError, node, None, f"computed a {type(t).__name__}, not a tensor")
            if tuple(t.shape) != r.type.shape:
                raise self.fail(PlanRuntimeError, node, None,
                                f"computed shape [{','.join(map(str, t.shape))}] but the IR says {r.type}")
            self.set(r.name, t.to(TORCH_DTYPE[r.type.dtype]))

    def operands(self, node: Node) -> list[torch.Tensor]:
        try:
            return [self.env[v.name] for v in node.operands]
        except KeyError as e:
            # only an unverified graph gets here: verify() checks every use is in scope
            raise self.fail(PlanRuntimeError, node, None, f"operand %{e.args[0]} is not defined here") from None

    # -- blocks
    def block(self, blk: _Block) -> list[torch.Tensor]:
        self.drop(blk.unused_params)
        out: list[torch.Tensor] = []
        for step in blk.steps:
            node = step.node
            args = self.operands(node)
            if step.terminator:
                out = args
            else:
                self.run_node(step, args)
                self.nodes_run += 1
            self.drop(step.free)
        return out

    def run_node(self, step: _Step, args) -> None:
        node = step.node
        try:
            handler = _HANDLERS.get(node.op)
            if handler is not None:
                outs = handler(self, step, args)
            else:
                outs = RULES[node.op](node, args, step.attrs)
            self.bind(node, outs)
        except PlanRuntimeError:
            raise
        except Exception as e:
            raise self.fail(PlanRuntimeError, node, None, describe(e), e) from e

    # -- sources and loops
    def load(self, step, args):
        node, a = step.node, step.attrs
        party, tag, want = self.party(a["owner"]), a["tag"], node.results[0].type
        held = self.data.get(party, {})
        if tag not in held:
            others = [p for p, d in self.data.items() if p != party and tag in d]
            raise self.fail(DataError, node, party, missing_tag(tag, want, party, held, others))
        t = held[tag]
        problem = fit_problem(t, want)
        if problem:
            raise self.fail(DataError, node, party, f"tag {tag!r}: {problem}")
        return [t]

    def input(self, step, args):
        node, i, want = step.node, step.attrs["index"], step.node.results[0].type
        if i >= len(self.inputs):
            raise self.fail(DataError, node, None,
                            f"input {i} is missing: the run got {len(self.inputs)} inputs (expected {want})")
        problem = fit_problem(self.inputs[i], want)
        if problem:
            raise self.fail(DataError, node, None, f"input {i}: {problem}")
        return [self.inputs[i]]

    def const(self, step, args):
        node, a, want = step.node, step.attrs, step.node.results[0].type
        name = a["name"]
        if name is None:
            return [torch.tensor(a["value"], dtype=TORCH_DTYPE[want.dtype])]
        if name not in self.constants:
            raise self.fail(DataError, node, None, f"no constant named {name!r} (expected {want})")
        problem = fit_problem(self.constants[name], want)
        if problem:
            raise self.fail(DataError, node, None, f"constant {name!r}: {problem}")
        return [self.constants[name]]

    def call(self, step, args):
        node, a = step.node, step.attrs
        party, tag = self.party(a["owner"]), a["tag"]
        if tag not in self.models:
            raise self.fail(DataError, node, party, f"no model under tag {tag!r}")
        try:
            out = self.models[tag](*args)
        except Exception as e:
            raise self.fail(PlanRuntimeError, node, party, f"model {tag!r} failed: {describe(e)}", e) from e
        outs = [out] if isinstance(out, torch.Tensor) else list(out) if isinstance(out, (tuple, list)) else [out]
        if len(outs) != len(node.results):
            raise self.fail(DataError, node, party,
                            f"model {tag!r} gave {len(outs)} results, the plan expects {len(node.results)}")
        for k, (t, r) in enumerate(zip(outs, node.results)):
            problem = fit_problem(t, r.type)
            if problem:
                raise self.fail(DataError, node, party, f"model {tag!r} result {k}: {problem}")
        return outs

    def loop(self, step, args):
        body = step.body
        counter, carried_params = body.params[0], body.params[1:]
        carried = list(args)
        for i in range(step.attrs["trips"]):
            self.set(counter.name, torch.tensor(i, dtype=torch.int64))
            for p, v in zip(carried_params, carried):
                self.set(p.name, v)
            try:
                carried = self.block(body)
            except PlanRuntimeError as e:
                e.add_note(f"  in iteration {i} of {step.node.where()}")
                raise
        return carried


_HANDLERS: dict[str, Callable] = {
    "load": _Run.load,
    "input": _Run.input,
    "const": _Run.const,
    "call": _Run.call,
    "loop": _Run.loop,
}
assert set(_HANDLERS) == set(SOURCES) | {"loop"}


# ---------------------------------------------------------------- public API


def run_reference(
    graph: Graph,
    *,
    data: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    constants: Mapping[str, torch.Tensor] | None = None,
    inputs: Sequence[torch.Tensor] = (),
    models: Mapping[str, Callable] | None = None,
    stats: dict | None = None,
) -> list[torch.Tensor]:
    """Run `graph` in plaintext; return the values of its `return`, in order.

    data:      party name -> tag -> tensor, read by ``load`` nodes;
    constants: name -> tensor, read by named ``const`` nodes;
    inputs:    the public arguments, read by ``input`` nodes by index;
    models:    tag -> callable standing for a ``call``'s model;
    stats:     if given, filled with ``peak_live`` (most values alive at once),
               ``peak_bytes`` and ``nodes_run``.
    """
    data = data or {}
    for party in data:
        if party not in graph.parties:
            raise DataError(None, None, f"data for party {party!r}, but plan @{graph.name} has parties "
                                        f"{', '.join(graph.parties) or '(none)'}")
    run = _Run(graph, data, constants or {}, list(inputs), models or {})
    # a plan is inference: models with trainable weights must not build autograd graphs
    with torch.no_grad():
        outs = run.block(_prepare(graph, (), graph.nodes))
    if stats is not None:
        stats.update(peak_live=run.peak_live, peak_bytes=run.peak_bytes, nodes_run=run.nodes_run)
    return outs


def run_reference_by_party(graph: Graph, **kw) -> dict[str, list[torch.Tensor]]:
    """Outputs as each party would see them: ``{party: [outputs visible to it]}``.

    A public output goes to every party, a private<k> one to party k only; a secret
    output stays as shares at the workers, so nobody sees it: it is reported under the
    key ``"secret"``. Each list keeps the order of the plan's outputs.
    """
    if "secret" in graph.parties:
        raise ValueError('a party named "secret" would collide with the key for secret outputs')
    outs = run_reference(graph, **kw)
    seen: dict[str, list[torch.Tensor]] = {p: [] for p in graph.parties}
    seen["secret"] = []
    for v, t in zip(graph.outputs, outs):
        vis = v.type.vis
        if vis.is_public:
            for p in graph.parties:
                seen[p].append(t)
        elif vis.is_private:
            seen[graph.parties[vis.owner]].append(t)
        else:
            seen["secret"].append(t)
    return seen
