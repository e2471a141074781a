"""`planc.trace` and the `@planc.plan` decorator."""
from __future__ import annotations

import functools
import inspect
import re

import torch
import torch.fx as fx

from planc.ir.graph import Value
from planc.ir.verify import VerifyError, verify

from .errors import TraceError, user_loc, warn_unrevealed
from .tracer import ACTIVE, PlancTracer


def trace(fn, *specs, name: str | None = None, parties=None, owner: str | None = None, tag: str | None = None):
    """Trace `fn` (a function or an nn.Module) into a verified `Plan`.

    `specs` give one input per positional argument: ``planc.load(...)`` for a party's data,
    ``planc.public(shape)`` for a run-time public argument. For a module, ``owner=`` and
    ``tag=`` say who holds its weights (each becomes a ``load`` of ``tag/<param>``).
    `parties` fixes the party order; by default parties are numbered as they appear.
    """
    from .plans import Plan

    if isinstance(fn, PlanFunction):
        return fn.trace(*specs) if specs else fn.plan
    if not callable(fn):
        raise TraceError(f"trace expects a function or an nn.Module, got {type(fn).__name__}")
    target = fn.forward if isinstance(fn, torch.nn.Module) else fn
    nparams = _positional_count(target)
    if nparams is not None and len(specs) != nparams:
        raise TraceError(f"{_qualname(fn)} takes {nparams} positional argument(s) but {len(specs)} input spec(s) "
                         "were given; pass planc.load(...) or planc.public(...) for each", user_loc())
    cx = PlancTracer(_plan_name(name or _qualname(fn)), parties or ())
    if isinstance(fn, torch.nn.Module):
        if owner is not None:
            cx.own_module(fn, owner, tag or type(fn).__name__.lower())
    elif owner is not None:
        raise TraceError("owner= is for tracing an nn.Module; mark modules inside functions with planc.owned",
                         user_loc())
    names = _param_names(target, len(specs))

    def root():
        # inputs are created here rather than by fx's placeholders, so that arguments
        # with defaults keep them (a default tensor becomes a listed constant)
        return fn(*(cx.input_proxy(s, n) for s, n in zip(specs, names)))

    token = ACTIVE.set(cx)
    try:
        cx.trace(root)
    except TraceError as e:
        raise e.with_traceback(None) from None
    except fx.proxy.TraceError as e:
        raise TraceError(str(e), user_loc()) from None
    finally:
        ACTIVE.reset(token)
    outs = _flatten_outputs(cx.outputs)
    graph = cx.b.finish(outs)
    try:
        verify(graph)
    except VerifyError as e:  # a bug in lowering, never the user's fault: say so
        raise TraceError(f"internal error: traced IR does not verify:\n{e}") from e
    warn_unrevealed(graph)
    used = {n.attr("name") for n in graph.consts() if n.attr("name") is not None}
    consts = {k: v for k, v in cx.constants.items() if k in used}
    return Plan(graph, consts, {k: v for k, v in cx.captured.items() if k in used}, {})


def _flatten_outputs(out) -> list[Value]:
    from .tracer import PlancProxy

    if out is None:
        raise TraceError("the traced function returns nothing; return the values the plan produces")
    items = list(out.values()) if isinstance(out, dict) else list(out) if isinstance(out, (tuple, list)) else [out]
    vals = []
    for x in items:
        x = x.value if isinstance(x, PlancProxy) else x
        if not isinstance(x, Value):
            raise TraceError(f"the traced function returns a {type(x).__name__}; a plan returns tensors")
        vals.append(x)
    return vals


def _param_names(f, n):
    try:
        names = [p.name for p in inspect.signature(f).parameters.values()
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        names = []
    return (names + [f"arg{i}" for i in range(len(names), n)])[:n]


def _positional_count(f):
    try:
        sig = inspect.signature(f)
    except (TypeError, ValueError):
        return None
    n = 0
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            return None
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty:
            n += 1
    return n


def _qualname(fn) -> str:
    if isinstance(fn, torch.nn.Module):
        return type(fn).__name__
    return getattr(fn, "__name__", "plan")


def _plan_name(s: str) -> str:
    s = re.sub(r"\W", "_", s)
    return s if s and not s[0].isdigit() else "plan_" + s


class PlanFunction:
    """A function with its input specs, traced on first use (like PySyft's func2plan).

    `.plan` is the traced Plan; ``planc.run_local(fn, data)`` runs it among the parties.
    Calling it runs the original PyTorch code, which works only for code that uses no
    placeholders: one that loads another party's data (``planc.load``) or reveals is a
    plan to trace and run, and calling it says so."""

    def __init__(self, fn, specs, name, parties):
        functools.update_wrapper(self, fn)
        self.fn, self.specs, self.name, self.parties = fn, specs, name, parties
        self._plan = None

    def __call__(self, *args, **kwargs):
        if ACTIVE.get() is not None:  # called from code being traced: trace through it
            return self.fn(*args, **kwargs)
        try:
            return self.fn(*args, **kwargs)
        except Exception as e:
            if not _placeholder_misuse(e):
                raise
            raise TypeError(self._not_callable()) from e

    def _not_callable(self) -> str:
        n = getattr(self.fn, "__name__", "plan")
        return (f"{n} is a @planc.plan: a plan that parties run together over secret shares, not a function "
                f"to call with data (its planc.load(...) placeholders are other parties' tensors, absent here). "
                f"Use {n}.plan for the traced plan (print it, .save(path), .cost()), "
                f"planc.run_local({n}, data={{party: {{tag: tensor}}}}) to run it privately, or "
                f"planc.run_reference({n}, data=...) to run it in plaintext")

    def trace(self, *specs):
        return trace(self.fn, *specs, name=self.name or self.fn.__name__, parties=self.parties)

    @property
    def plan(self):
        if self._plan is None:
            self._plan = self.trace(*self.specs)
        return self._plan


def plan(*specs, name: str | None = None, parties=None):
    """Decorator: ``@planc.plan(planc.load("x", owner="bob", shape=(3,)), parties=["alice", "bob"])``."""
    if len(specs) == 1 and callable(specs[0]) and not hasattr(specs[0], "materialize"):
        return PlanFunction(specs[0], (), None, None)

    def deco(fn):
        return PlanFunction(fn, specs, name, parties)

    return deco


def _placeholder_misuse(e: BaseException) -> bool:
    """Did running a plan's code outside a trace fail on one of planc's placeholders?"""
    text = f"{type(e).__name__}: {e}"
    return any(k in text for k in ("LoadSpec", "TensorSpec", "RemoteModel", "only meaningful inside traced code",
                                   "can only be called inside traced code"))


def _as_plan(plan):
    return plan.plan if isinstance(plan, PlanFunction) else plan


def _read_data(data):
    """{party: {tag: tensor} | path of a data file} -> {party: {tag: tensor}}."""
    import os

    if not data:
        return data
    from .weights import read_tensors

    return {p: read_tensors(d) if isinstance(d, (str, os.PathLike)) else d for p, d in data.items()}


def run_reference(plan, *, data=None, inputs=(), models=None, stats=None):
    """Run a Plan (a bare Graph, or a @planc.plan function) in plaintext with each party's
    data by tag: ``data={"alice": {"cnn/fc.weight": w, ...}, "bob": {"mnist/test": x}}``; a
    party's entry may instead be the path of a data file (`planc.save_data`)."""
    from planc.ir.graph import Graph
    from planc.runtime.reference import run_reference as _run

    plan, data = _as_plan(plan), _read_data(data)
    if isinstance(plan, Graph):
        return _run(plan, data=data, inputs=inputs, models=models, stats=stats)
    return _run(plan.graph, data=data, constants=plan.constants, inputs=inputs, models=models, stats=stats)


def run_local(plan, data=None, **kw):
    """Run every party of `plan` (a Plan or a @planc.plan function) on this machine over
    secret shares (threads by default, ``processes=True`` for one process per party over
    torch.distributed). `data`: ``{party: {tag: tensor}}``, or a party's data file path
    (`planc.save_data`) in place of its dict. Returns a LocalResult: ``.outputs[party]``
    (what each party holds at the end: tensors it may see, shares of secret outputs, None
    for what it does not hold), ``.stats[party]`` (rounds, bytes sent and received,
    timings; the dealer's too) and ``.summary()`` (the table `planc run` prints).

    models: ``{party: {tag: model.onnx (path, bytes or ModelProto)}}`` links the plan's
    ``load_model`` calls here as the workers do (planc/worker/linking.py): each call
    replaced by the model's body, the party's data gaining its weights."""
    from planc.runtime.local import run_local as _run

    plan, data = _as_plan(plan), _read_data(data)
    models = kw.pop("models", None)
    if models:
        plan, data = link_models(plan, data, models)
    return _run(plan, data, **kw)


def link_models(plan, data, models: dict):
    """(linked plan, data with each owner's model weights) for run_local's models=."""
    import os

    from planc.onnx import OnnxModel, link, weights
    from planc.onnx.context import read_model

    g = plan.graph
    data = {p: dict(d) for p, d in (data or {}).items()}
    by_tag = {}
    for party, ms in models.items():
        if party not in g.parties:
            raise ValueError(f"models for {party!r}, but the plan's parties are {', '.join(g.parties)}")
        for tag, m in ms.items():
            calls = [n for n in g.walk() if n.op == "call" and n.attr("tag") == tag]
            if not calls:
                raise ValueError(f"models: the plan calls no model {tag!r}")
            if any(g.parties[n.attr("owner")] != party for n in calls):
                raise ValueError(f"models: model {tag!r} is called from {g.parties[calls[0].attr('owner')]}, "
                                 f"not {party}")
            proto = read_model(m)
            inits = {i.name for i in proto.graph.initializer}
            names = [vi.name for vi in proto.graph.input if vi.name not in inits]
            # the call's operands fix the model's symbolic dimensions (a batch)
            shapes = {name: tuple(v.type.shape) for name, v in zip(names, calls[0].operands)}
            om = OnnxModel.read(proto, input_shapes=shapes,
                                name=os.path.basename(os.fspath(m)) if isinstance(m, (str, os.PathLike)) else None)
            by_tag[tag] = om
            data.setdefault(party, {}).update(weights(om, tag))
    return link(plan, by_tag), data
