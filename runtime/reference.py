"""The plaintext reference interpreter: the oracle for the secret-shared runtime.

It runs a plan with ordinary floating-point torch ops, as if one trusted machine held
every party's data. Nothing is shared, ``share`` and ``reveal`` are the identity, and a
loop runs its body natively ``trips`` times. The secret-shared runtime is tested
against this: same plan, same data, results equal within the documented fixed-point bound.

Semantics are exactly torch's, one rule per op in ``RULES`` (no dispatch on op names by
``getattr``), with one deliberate difference: operands are first cast to the dtype the IR
gives, and every result is cast to the node's declared dtype and checked against its
declared shape, so a reference run is typed exactly like the IR it runs.

Values are freed after their last use, so long plans run in the memory their widest
point needs; ``stats`` lets tests observe that. Any failure is re-raised as a
``PlanRuntimeError`` naming the node and the user's ``file:line``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from planc.ir import ops
from planc.ir.ops import OP, register
from planc.ir.graph import Graph, Node, Value
from planc.ir.types import FLOAT_DTYPES, TORCH_TO_IR, TensorType, promote

from .errors import DataError, PlanRuntimeError, describe

TORCH_DTYPE = {
    "f32": torch.float32,
    "f64": torch.float64,
    "i64": torch.int64,
    "i32": torch.int32,
    "bool": torch.bool,
}

Rule = Callable[[Node, list, dict], list]


# ---------------------------------------------------------------- dtype helpers


def _result_dtype(node: Node) -> torch.dtype:
    return TORCH_DTYPE[node.results[0].type.dtype]


def _operand_dtype(node: Node) -> torch.dtype:
    """The IR's promotion of the operands' dtypes (torch's differs for 0-d tensors)."""
    dt = node.operands[0].type.dtype
    for v in node.operands[1:]:
        dt = promote(dt, v.type.dtype)
    return TORCH_DTYPE[dt]


def _to(args, dtype):
    return [a.to(dtype) for a in args]


# ---------------------------------------------------------------- rule makers

# Operands of arithmetic are cast to the result dtype first, so that f32 + f64[] is
# computed in f64 as the IR says, not in f32 as torch's 0-d promotion would.


def _arith(fn) -> Rule:
    def rule(node, args, a):
        return [fn(*_to(args, _result_dtype(node)))]

    return rule


def _compare(fn) -> Rule:
    def rule(node, args, a):
        return [fn(*_to(args, _operand_dtype(node)))]

    return rule


def _unary(fn) -> Rule:
    def rule(node, args, a):
        return [fn(args[0])]

    return rule


def _identity(node, args, a):
    return [args[0]]


def _bias(args):
    return args[2] if len(args) > 2 else None


# ---------------------------------------------------------------- rules


def _linear(node, args, a):
    args = _to(args, _result_dtype(node))
    return [F.linear(args[0], args[1], _bias(args))]


def _conv2d(node, args, a):
    args = _to(args, _result_dtype(node))
    return [F.conv2d(args[0], args[1], _bias(args), stride=a["stride"], padding=a["padding"],
                     dilation=a["dilation"], groups=a["groups"])]


def _avg_pool2d(node, args, a):
    return [F.avg_pool2d(args[0], a["kernel"], a["stride"], a["padding"], ceil_mode=a["ceil_mode"],
                         count_include_pad=a["count_include_pad"])]


def _max_pool2d(node, args, a):
    return [F.max_pool2d(args[0], a["kernel"], a["stride"], a["padding"], dilation=a["dilation"],
                         ceil_mode=a["ceil_mode"])]


def _adaptive_avg_pool2d(node, args, a):
    return [F.adaptive_avg_pool2d(args[0], a["output"])]


def _batch_norm(node, args, a):
    x, mean, var, weight, bias = _to(args, _result_dtype(node))
    return [F.batch_norm(x, mean, var, weight, bias, training=False, eps=a["eps"])]


def _softmax(node, args, a):
    return [F.softmax(args[0], dim=a["dim"])]


def _log_softmax(node, args, a):
    return [F.log_softmax(args[0], dim=a["dim"])]


def _reduce(fn) -> Rule:
    def rule(node, args, a):
        dims = a["dim"]
        if dims == ():
            # the IR reduces over no dims here; torch would read () as "all dims"
            return [args[0]]
        return [fn(args[0], dim=dims, keepdim=a["keepdim"])]

    return rule


def _max(node, args, a):
    x, d = args[0], a["dim"]
    if d is None:
        return [x.max()]  # the IR ignores keepdim without a dim
    return [torch.max(x, d, keepdim=a["keepdim"]).values]


def _argmax(node, args, a):
    x, d = args[0], a["dim"]
    if d is None:
        return [torch.argmax(x)]
    return [torch.argmax(x, d, keepdim=a["keepdim"])]


def _where(node, args, a):
    cond, x, y = args
    x, y = _to((x, y), _result_dtype(node))
    return [torch.where(cond.to(torch.bool), x, y)]


def _reshape(node, args, a):
    return [args[0].reshape(a["shape"])]


def _flatten(node, args, a):
    return [torch.flatten(args[0], a["start"], a["end"])]


def _transpose(node, args, a):
    return [args[0].transpose(a["dim0"], a["dim1"])]


def _permute(node, args, a):
    return [args[0].permute(a["dims"])]


def _slice(node, args, a):
    at = (slice(None),) * a["dim"] + (slice(a["start"], a["end"], a["step"]),)
    return [args[0][at]]


def _index(node, args, a):
    return [args[0].select(a["dim"], a["index"])]


def _cat(node, args, a):
    return [torch.cat(_to(args, _result_dtype(node)), dim=a["dim"])]


def _stack(node, args, a):
    return [torch.stack(_to(args, _result_dtype(node)), dim=a["dim"])]


def _pad(node, args, a):
    return [F.pad(args[0], a["pads"], mode="constant", value=a["value"])]


def _squeeze(node, args, a):
    dims = a["dims"]
    # empty dims means every size-1 dim; torch's squeeze(x, ()) would squeeze none
    return [args[0].squeeze(dims) if dims else args[0].squeeze()]


def _unsqueeze(node, args, a):
    return [args[0].unsqueeze(a["dim"])]


def _expand(node, args, a):
    return [args[0].expand(a["shape"])]


# every computing op's rule, registered against its definition
register("reference", OP.share)(_identity)
register("reference", OP.reveal)(_identity)
register("reference", OP.add)(_arith(torch.add))
register("reference", OP.sub)(_arith(torch.sub))
register("reference", OP.mul)(_arith(torch.mul))
register("reference", OP.div)(_arith(torch.div))
register("reference", OP.neg)(_unary(torch.neg))
register("reference", OP.matmul)(_arith(torch.matmul))
register("reference", OP.linear)(_linear)
register("reference", OP.conv2d)(_conv2d)
register("reference", OP.avg_pool2d)(_avg_pool2d)
register("reference", OP.max_pool2d)(_max_pool2d)
register("reference", OP.adaptive_avg_pool2d)(_adaptive_avg_pool2d)
register("reference", OP.batch_norm)(_batch_norm)
register("reference", OP.relu)(_unary(torch.relu))
register("reference", OP.sigmoid)(_unary(torch.sigmoid))
register("reference", OP.tanh)(_unary(torch.tanh))
register("reference", OP.exp)(_unary(torch.exp))
register("reference", OP.log)(_unary(torch.log))
register("reference", OP.reciprocal)(_unary(torch.reciprocal))
register("reference", OP.sqrt)(_unary(torch.sqrt))
register("reference", OP.softmax)(_softmax)
register("reference", OP.log_softmax)(_log_softmax)
register("reference", OP.sum_)(_reduce(torch.sum))
register("reference", OP.mean)(_reduce(torch.mean))
register("reference", OP.max_)(_max)
register("reference", OP.argmax)(_argmax)
register("reference", OP.gt)(_compare(torch.gt))
register("reference", OP.lt)(_compare(torch.lt))
register("reference", OP.ge)(_compare(torch.ge))
register("reference", OP.le)(_compare(torch.le))
register("reference", OP.eq)(_compare(torch.eq))
register("reference", OP.where)(_where)
register("reference", OP.reshape)(_reshape)
register("reference", OP.flatten)(_flatten)
register("reference", OP.transpose)(_transpose)
register("reference", OP.permute)(_permute)
register("reference", OP.slice_)(_slice)
register("reference", OP.index_)(_index)
register("reference", OP.cat)(_cat)
register("reference", OP.stack)(_stack)
register("reference", OP.pad)(_pad)
register("reference", OP.squeeze)(_squeeze)
register("reference", OP.unsqueeze)(_unsqueeze)
register("reference", OP.expand)(_expand)

ops.check("reference")

# views for callers that look rules up by op name (derived from the registrations)
RULES: Mapping[str, Rule] = {d.name: d.rule("reference") for d in ops.REGISTRY.values() if d.rule("reference")}
SOURCES = tuple(d.name for d in ops.REGISTRY.values() if d.source)
STRUCTURE = tuple(d.name for d in ops.REGISTRY.values() if d.structural)


# ---------------------------------------------------------------- data checks


def _dtype_name(dt: torch.dtype) -> str:
    return TORCH_TO_IR.get(str(dt), str(dt).removeprefix("torch."))


def _fits(got: torch.dtype, want: str) -> bool:
    """Can data of dtype `got` stand for `want` without losing what it means?"""
    if got.is_complex:
        return False
    is_int = not got.is_floating_point and got != torch.bool
    if want in FLOAT_DTYPES:
        return got.is_floating_point or is_int  # images often arrive as integers
    if want == "bool":
        return got == torch.bool
    return is_int  # a float would be silently truncated to an integer


def _describe_tensor(t) -> str:
    if not isinstance(t, torch.Tensor):
        return f"a {type(t).__name__}, not a torch.Tensor"
    return f"{_dtype_name(t.dtype)}[{','.join(map(str, t.shape))}]"


def _fit_problem(t, want: TensorType) -> str | None:
    if not isinstance(t, torch.Tensor) or tuple(t.shape) != want.shape or not _fits(t.dtype, want.dtype):
        return f"expected {want.dtype}[{','.join(map(str, want.shape))}], got {_describe_tensor(t)}"
    return None


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
            hint = f"; party {', '.join(others)} holds one, but the plan loads it from {party}" if others else ""
            raise self.fail(DataError, node, party, f"no tensor under tag {tag!r} (expected {want}){hint}")
        t = held[tag]
        problem = _fit_problem(t, want)
        if problem:
            raise self.fail(DataError, node, party, f"tag {tag!r}: {problem}")
        return [t]

    def input(self, step, args):
        node, i, want = step.node, step.attrs["index"], step.node.results[0].type
        if i >= len(self.inputs):
            raise self.fail(DataError, node, None,
                            f"input {i} is missing: the run got {len(self.inputs)} inputs (expected {want})")
        problem = _fit_problem(self.inputs[i], want)
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
        problem = _fit_problem(self.constants[name], want)
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
            problem = _fit_problem(t, r.type)
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
