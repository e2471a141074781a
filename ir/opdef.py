"""What an op is: its definition (``OpDef``: operands, typed attributes, type rule,
traits) and the rules every layer registers against it (``register``), with the
completeness check (``missing``/``check``). The ops themselves are declared in
``ops.py``; their type rules are in ``typerules.py``.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Callable

from .types import TensorType


class TypeRuleError(ValueError):
    """An op's operands or attributes do not fit its declaration: `problem` says how,
    `op` names the op, `attr` the attribute at fault and `operand` the operand's index
    (each None when not known). ``str()`` is "op: problem", or `sentence` when the
    problem reads as one with the op's name in front ("max_pool2d has no attribute ...")."""

    def __init__(self, problem: str, *, op: str | None = None, attr: str | None = None,
                 operand: int | None = None, sentence: bool = False):
        super().__init__(problem)
        self.problem, self.op, self.attr, self.operand, self.sentence = problem, op, attr, operand, sentence

    def __str__(self):
        if not self.op:
            return self.problem
        return f"{self.op} {self.problem}" if self.sentence else f"{self.op}: {self.problem}"


def _err(msg, **where):
    raise TypeRuleError(msg, **where)


class MixesSecret(TypeRuleError):
    """A private operand meets a secret one in an op that needs shares: the fix is a
    ``share`` of operand ``operand`` (the visibility pass inserts it)."""

    def __init__(self, msg, operand: int):
        super().__init__(msg, operand=operand)


# attribute kinds: int, float, bool, str, ints, floats; a trailing "?" allows None
def check_attr(kind: str, v) -> bool:
    if kind.endswith("?"):
        if v is None:
            return True
        kind = kind[:-1]
    if kind == "int":
        return isinstance(v, int) and not isinstance(v, bool)
    if kind == "float":
        return isinstance(v, float) or (isinstance(v, int) and not isinstance(v, bool))
    if kind == "bool":
        return isinstance(v, bool)
    if kind == "str":
        return isinstance(v, str)
    if kind == "ints":
        return isinstance(v, tuple) and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
    if kind == "floats":
        return isinstance(v, tuple) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
    raise AssertionError(kind)


_NO_DEFAULT = object()


@dataclass(frozen=True)
class Attr:
    kind: str
    default: object = _NO_DEFAULT
    choices: tuple = ()  # the values a "str" attribute may take (empty: any)

    @property
    def required(self) -> bool:
        return self.default is _NO_DEFAULT


@dataclass(frozen=True, eq=False)
class OpDef:
    """One op: its signature, its traits, and every layer's rule for it (``rules``).

    Traits are facts about the op that several layers act on; rules are functions the
    layers register against this object (see ``register``)."""

    name: str
    operands: tuple[str, ...]  # "x", "bias?" optional, "*xs" variadic
    attrs: dict[str, Attr] = field(default_factory=dict)
    infer: Callable | None = None  # (types, attrs) -> list[TensorType]
    communicates: bool = False  # needs messages when an input is secret
    declared: bool = False  # result types are written on the node, not inferred
    regions: int = 0
    terminator: bool = False
    doc: str = ""
    # traits
    source: bool = False  # brings a value into the plan (load, input, const, call)
    structural: bool = False  # shapes the program, computes nothing (loop, yield, return)
    product: bool = False  # takes a party's plaintext operand with a secret one directly
    shape_only: bool = False  # moves elements without arithmetic: same op on every share
    accepts_pending_truncation: bool = False  # accepts operands with a pending truncation and carries it along
    moves: bool = False  # changes who sees a value (share, reveal): never folded away
    always_allowed: bool = False  # no policy can refuse it (it computes nothing itself)
    approximate: bool = False  # its protocol approximates: it has a stated error bound
    nondiff: bool = False  # its results carry no gradient (comparisons, argmax): it needs no vjp rule
    # a plain elementwise op equal to torch.<torch_fn>: its reference rule, lowering
    # (torch.f, F.f, Tensor.f) and sample derive from the name, so the op needs only
    # its declaration and its protocol
    torch_fn: str | None = None
    rules: dict = field(default_factory=dict, repr=False)  # kind -> Rule

    @property
    def computes(self) -> bool:
        return not (self.source or self.structural)

    @property
    def differentiable(self) -> bool:
        """Gradients flow through it (every computing op and `loop`, unless `nondiff`)."""
        return not self.nondiff and (self.computes or self.regions > 0)

    def rule(self, kind: str):
        """The function registered for `kind`, or None."""
        r = self.rules.get(kind)
        return None if r is None else r.fn

    def __repr__(self):
        return f"<op {self.name}>"

    def arity(self) -> tuple[int, int | None]:
        """(min, max) operand count; max None when variadic."""
        lo = sum(1 for o in self.operands if not o.endswith("?") and not o.startswith("*"))
        if any(o.startswith("*") for o in self.operands):
            return lo, None
        return lo, len(self.operands)


REGISTRY: dict[str, OpDef] = {}


def op(name, operands=(), attrs=None, infer=None, **kw) -> OpDef:
    d = OpDef(name, tuple(operands), dict(attrs or {}), infer, **kw)
    REGISTRY[name] = d
    return d


def get(name: str) -> OpDef:
    try:
        return REGISTRY[name]
    except KeyError:
        raise TypeRuleError(f"unknown op {name!r}") from None


# ---------------------------------------------------------------- rules per op

@dataclass(frozen=True)
class Rule:
    fn: object
    where: str  # file:line of the rule's code, for `planc ops NAME`


@dataclass(frozen=True)
class Kind:
    """A kind of rule: what it gives an op, and which ops must have one."""

    name: str
    what: str
    needed: Callable[[OpDef], bool] | None  # None: optional for every op
    layer: str  # where such rules live


KINDS = {k.name: k for k in (
    Kind("reference", "plaintext semantics (the oracle)", lambda d: d.computes, "runtime/reference.py"),
    Kind("protocol", "the secret-shared protocol", lambda d: d.computes and not d.shape_only,
         "runtime/protocols/"),
    Kind("lower", "the torch functions, methods or shells that lower to it", lambda d: d.computes,
         "planc/lower.py, planc/shells.py"),
    Kind("bound", "the error bound of its approximation", lambda d: d.approximate, "runtime/protocols/"),
    Kind("sample", "an example use in traced code, for its cost and the cost tests",
         lambda d: d.computes and not d.moves, "planc/samples.py"),
    Kind("bilinear", "the bilinear map of a product, on ring tensors", None, "runtime/protocols/beaver.py"),
    Kind("hint", "what a policy suggests instead when it refuses the op", None, "ir/policy.py"),
    # kinds the next layers fill: gradients for training, ONNX import
    Kind("vjp", "its vector-Jacobian product, for gradients on the IR", lambda d: d.differentiable,
         "planc/autodiff/"),
    Kind("onnx", "the ONNX node types that map to it", None, "planc/onnx/"),
)}


def call_site(depth: int = 1) -> str:
    """file:line of the code `depth` frames above the caller (where a rule is registered)."""
    f = sys._getframe(depth + 1)
    return f"{f.f_code.co_filename}:{f.f_lineno}"


def register(kind: str, *defs: OpDef, where: str | None = None):
    """Decorator: `fn` is the `kind` rule of each op in `defs`. One rule per op and kind.

    The rule's location is where it is registered (the decorator's line, or the call),
    unless `where` says otherwise (wrappers pass their caller's)."""
    where = where or call_site(1)
    if kind not in KINDS:
        raise AssertionError(f"unknown rule kind {kind!r}; kinds: {', '.join(KINDS)}")

    def deco(fn):
        for d in defs:
            if not isinstance(d, OpDef):
                raise AssertionError(f"register({kind!r}, ...) takes op definitions, got {d!r}")
            if kind in d.rules:
                raise AssertionError(f"{d.name} has a {kind} rule already, at {d.rules[kind].where}")
            d.rules[kind] = Rule(fn, where)
        return fn

    return deco


def missing(*kinds: str) -> dict[str, list[str]]:
    """{op: [kinds it needs but lacks]} over `kinds` (default: all)."""
    out: dict[str, list[str]] = {}
    for d in REGISTRY.values():
        for k in kinds or KINDS:
            need = KINDS[k].needed
            if need is not None and need(d) and k not in d.rules:
                out.setdefault(d.name, []).append(k)
    return out


class IncompleteOps(AssertionError):
    """An op lacks a rule that its traits require."""


def check(*kinds: str) -> None:
    """Raise naming every op that lacks one of `kinds` (called when a layer has loaded)."""
    gaps = missing(*kinds)
    if gaps:
        lines = [f"  {name}: no {', '.join(ks)} rule ({'; '.join(KINDS[k].layer for k in ks)})"
                 for name, ks in sorted(gaps.items())]
        raise IncompleteOps("ops without the rules their traits require:\n" + "\n".join(lines))


def full_attrs(opdef: OpDef, given: dict) -> dict:
    """Attributes with defaults filled in; unknown or ill-typed ones are errors."""
    out = {}
    for k in given:
        if k not in opdef.attrs:
            _err(f"has no attribute {k!r}; it has {', '.join(opdef.attrs) or 'none'}", op=opdef.name, attr=k,
                 sentence=True)
    for k, spec in opdef.attrs.items():
        if k in given:
            v = given[k]
            if isinstance(v, list):
                v = tuple(v)
            if not check_attr(spec.kind, v):
                _err(f"attribute {k}={v!r} is not of kind {spec.kind}", op=opdef.name, attr=k)
            if spec.choices and v not in spec.choices:
                _err(f"attribute {k}={v!r} is not one of {', '.join(map(repr, spec.choices))}", op=opdef.name, attr=k)
            # one spelling per value, so that equal graphs print and compare equal
            if spec.kind.startswith("floats") and v is not None:
                v = tuple(float(x) for x in v)
            elif spec.kind.startswith("float") and v is not None:
                v = float(v)
            out[k] = v
        elif spec.required:
            _err(f"missing attribute {k!r} ({spec.kind})", op=opdef.name, attr=k)
        else:
            out[k] = spec.default
    return out


def infer_types(name: str, types: list[TensorType], attrs: dict) -> list[TensorType]:
    """Result types of op `name` on operands of `types` (attrs already complete)."""
    d = get(name)
    lo, hi = d.arity()
    if len(types) < lo or (hi is not None and len(types) > hi):
        want = f"{lo}" if hi == lo else f"{lo}..{hi if hi is not None else ''}"
        _err(f"takes {want} operands, got {len(types)}", op=name, sentence=True)
    if d.infer is None:
        _err("has declared result types", op=name, sentence=True)
    try:
        return d.infer(types, attrs)
    except TypeRuleError as e:
        if e.op is None:
            e.op = name
        raise
