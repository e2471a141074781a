"""The op registry: every op of the IR is declared here, once.

An ``OpDef`` gives the op's operands, its attributes with their kinds, a rule that
computes result types (shape, dtype and visibility) from operand types and attributes,
whether it communicates when its inputs are secret, and whether its result type is
declared by the node itself (sources such as ``load``). Printer, parser, verifier,
whitelist and interpreters all look ops up here; nothing dispatches on op names from a
file with ``getattr``.

Visibility rule for computing ops (DESIGN §2): the result is ``join`` of the operands.
When that join is ``secret`` every non-public operand must already be secret: the
move from plaintext to shares is an explicit ``share`` node — except for products
(mul, matmul, linear, conv2d, batch_norm), whose protocols take a party's plaintext
operand directly and need less traffic than for a shared one.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Callable

from .types import FLOAT_DTYPES, PUBLIC, SECRET, TensorType, Vis, join, private, promote


class TypeRuleError(ValueError):
    """An op's operands or attributes do not fit its declaration."""


class MixesSecret(TypeRuleError):
    """A private operand meets a secret one in an op that needs shares: the fix is a
    ``share`` of operand ``operand`` (the visibility pass inserts it)."""

    def __init__(self, msg, operand: int):
        super().__init__(msg)
        self.operand = operand


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
    rules: dict = field(default_factory=dict, repr=False)  # kind -> Rule

    @property
    def computes(self) -> bool:
        return not (self.source or self.structural)

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


# ---------------------------------------------------------------- shape helpers


def _err(msg):
    raise TypeRuleError(msg)


def broadcast(*shapes) -> tuple[int, ...]:
    n = max(len(s) for s in shapes)
    out = []
    for i in range(n):
        dims = {s[len(s) - n + i] for s in shapes if len(s) - n + i >= 0}
        dims.discard(1)
        if len(dims) > 1:
            _err(f"shapes {' and '.join(str(list(s)) for s in shapes)} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def _vis(types, mixed: bool = False) -> Vis:
    """Result visibility; with `mixed`, private operands may meet secret ones directly
    (products whose protocol uses the owner's plaintext, cheaper than sharing it)."""
    v = join(*(t.vis for t in types))
    if v.is_secret and not mixed:
        for i, t in enumerate(types):
            if t.vis.is_private:
                raise MixesSecret(f"operand {t} mixes with secret values: share it first", i)
    return v


def _dim(d, rank, what="dim"):
    if not (0 <= d < max(rank, 1)):
        _err(f"{what} {d} out of range for a tensor of rank {rank}")
    return d


def _float(t: TensorType):
    if t.dtype not in FLOAT_DTYPES:
        _err(f"expects a floating-point tensor, got {t}")


def _elementwise(types, a, dtype=None):
    shape = broadcast(*(t.shape for t in types))
    dt = dtype
    if dt is None:
        dt = types[0].dtype
        for t in types[1:]:
            dt = promote(dt, t.dtype)
    return [TensorType(dt, shape, _vis(types))]


def _unary(types, a):
    return [types[0].with_vis(_vis(types))]


def _unary_float(types, a):
    _float(types[0])
    return _unary(types, a)


def _compare(types, a):
    return _elementwise(types, a, dtype="bool")


def _div(types, a):
    out = _elementwise(types, a)
    if out[0].vis.is_secret and not types[1].vis.is_public:
        _err("division of a secret is only by a public value; use reciprocal for a secret divisor")
    if out[0].dtype not in FLOAT_DTYPES:
        out = [out[0].with_dtype("f32")]
    return out


def _matmul(types, a):
    x, w = types
    if x.rank == 0 or w.rank == 0:
        _err("matmul needs operands of rank >= 1")
    xs, ws = list(x.shape), list(w.shape)
    xv = len(xs) == 1
    wv = len(ws) == 1
    if xv:
        xs = [1] + xs
    if wv:
        ws = ws + [1]
    if xs[-1] != ws[-2]:
        _err(f"matmul: inner dimensions differ: {list(x.shape)} @ {list(w.shape)}")
    batch = broadcast(tuple(xs[:-2]), tuple(ws[:-2]))
    shape = list(batch) + [xs[-2], ws[-1]]
    if wv:
        shape.pop(-1)
    if xv:
        shape.pop(-2 if not wv else -1)
    return [TensorType(promote(x.dtype, w.dtype), tuple(shape), _vis(types, mixed=True))]


def _linear(types, a):
    x, w = types[0], types[1]
    if w.rank != 2 or x.rank < 1 or x.shape[-1] != w.shape[1]:
        _err(f"linear: input {list(x.shape)} does not fit weight {list(w.shape)}")
    if len(types) == 3 and types[2].shape != (w.shape[0],):
        _err(f"linear: bias {list(types[2].shape)} should be [{w.shape[0]}]")
    return [TensorType(x.dtype, x.shape[:-1] + (w.shape[0],), _vis(types, mixed=True))]


def _pool_out(size, k, s, p, d, ceil):
    eff = d * (k - 1) + 1
    num = size + 2 * p - eff
    if num < 0:
        _err(f"window {k} (dilation {d}) larger than padded input {size + 2 * p}")
    out = (-(-num // s) if ceil else num // s) + 1
    # torch drops a last window that starts entirely in the right padding
    if ceil and (out - 1) * s >= size + p:
        out -= 1
    return out


def _pair(v, name):
    if len(v) != 2:
        _err(f"{name} must have 2 entries, got {list(v)}")
    return v


def _conv2d(types, a):
    x, w = types[0], types[1]
    if x.rank != 4 or w.rank != 4:
        _err(f"conv2d: expects input [N,C,H,W] and weight [O,C/g,kh,kw], got {list(x.shape)} and {list(w.shape)}")
    g = a["groups"]
    if g < 1 or x.shape[1] != w.shape[1] * g or w.shape[0] % g:
        _err(f"conv2d: weight is {w} but input has {x.shape[1]} channels (groups={g})")
    if len(types) == 3 and types[2].shape != (w.shape[0],):
        _err(f"conv2d: bias {list(types[2].shape)} should be [{w.shape[0]}]")
    s, p, d = _pair(a["stride"], "stride"), _pair(a["padding"], "padding"), _pair(a["dilation"], "dilation")
    if min(s) < 1 or min(d) < 1 or min(p) < 0:
        _err("conv2d: stride and dilation must be >= 1, padding >= 0")
    h = _pool_out(x.shape[2], w.shape[2], s[0], p[0], d[0], False)
    wd = _pool_out(x.shape[3], w.shape[3], s[1], p[1], d[1], False)
    return [TensorType(x.dtype, (x.shape[0], w.shape[0], h, wd), _vis(types, mixed=True))]


def _pool(types, a, dilation=(1, 1)):
    x = types[0]
    if x.rank not in (3, 4):
        _err(f"pooling expects [N,C,H,W] or [C,H,W], got {list(x.shape)}")
    k = _pair(a["kernel"], "kernel")
    s = _pair(a["stride"], "stride")
    p = _pair(a["padding"], "padding")
    d = _pair(a.get("dilation", dilation), "dilation")
    if min(k) < 1 or min(s) < 1 or min(p) < 0:
        _err("pooling: kernel and stride must be >= 1, padding >= 0")
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        _err(f"pooling: padding {list(p)} must be at most half the kernel {list(k)}")
    h = _pool_out(x.shape[-2], k[0], s[0], p[0], d[0], a["ceil_mode"])
    w = _pool_out(x.shape[-1], k[1], s[1], p[1], d[1], a["ceil_mode"])
    return [TensorType(x.dtype, x.shape[:-2] + (h, w), _vis(types))]


def _max_pool(types, a):
    return _pool(types, a)


def _adaptive(types, a):
    x = types[0]
    o = _pair(a["output"], "output")
    if x.rank not in (3, 4) or min(o) < 1:
        _err(f"adaptive_avg_pool2d expects [N,C,H,W] and a positive output size, got {list(x.shape)}")
    return [TensorType(x.dtype, x.shape[:-2] + tuple(o), _vis(types))]


def _batch_norm(types, a):
    x = types[0]
    if x.rank < 2:
        _err("batch_norm expects [N,C,...]")
    for t in types[1:]:
        if t.shape != (x.shape[1],):
            _err(f"batch_norm: per-channel operand {list(t.shape)} should be [{x.shape[1]}]")
    return [x.with_vis(_vis(types, mixed=True))]


def _softmax(types, a):
    _float(types[0])
    _dim(a["dim"], types[0].rank)
    return _unary(types, a)


def _reduce_shape(shape, dims, keepdim):
    if dims is None:
        dims = tuple(range(len(shape)))
    for d in dims:
        _dim(d, len(shape))
    if len(set(dims)) != len(dims):
        _err(f"repeated reduction dims {list(dims)}")
    if keepdim:
        return tuple(1 if i in dims else s for i, s in enumerate(shape))
    return tuple(s for i, s in enumerate(shape) if i not in dims)


def _sum(types, a):
    x = types[0]
    return [TensorType(x.dtype, _reduce_shape(x.shape, a["dim"], a["keepdim"]), _vis(types))]


def _mean(types, a):
    _float(types[0])
    return _sum(types, a)


def _max(types, a, dtype=None):
    x = types[0]
    d = a["dim"]
    if x.numel == 0:
        _err("max/argmax of an empty tensor")
    shape = _reduce_shape(x.shape, None if d is None else (d,), a["keepdim"] and d is not None)
    return [TensorType(dtype or x.dtype, shape, _vis(types))]


def _argmax(types, a):
    return _max(types, a, dtype="i64")


def _where(types, a):
    if types[0].dtype != "bool":
        _err(f"where: condition must be bool, got {types[0]}")
    shape = broadcast(*(t.shape for t in types))
    return [TensorType(promote(types[1].dtype, types[2].dtype), shape, _vis(types))]


def _numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def _reshape(types, a):
    x = types[0]
    shape = a["shape"]
    if _numel(shape) != x.numel:
        _err(f"cannot reshape {list(x.shape)} ({x.numel} elements) to {list(shape)}")
    return [TensorType(x.dtype, shape, _vis(types))]


def _flatten(types, a):
    x = types[0]
    if x.rank == 0:
        return [TensorType(x.dtype, (1,), _vis(types))]
    s, e = _dim(a["start"], x.rank), _dim(a["end"], x.rank)
    if s > e:
        _err(f"flatten: start {s} after end {e}")
    shape = x.shape[:s] + (_numel(x.shape[s : e + 1]),) + x.shape[e + 1 :]
    return [TensorType(x.dtype, shape, _vis(types))]


def _transpose(types, a):
    x = types[0]
    i, j = _dim(a["dim0"], x.rank), _dim(a["dim1"], x.rank)
    s = list(x.shape)
    if s:
        s[i], s[j] = s[j], s[i]
    return [TensorType(x.dtype, tuple(s), _vis(types))]


def _permute(types, a):
    x = types[0]
    p = a["dims"]
    if sorted(p) != list(range(x.rank)):
        _err(f"permute: {list(p)} is not a permutation of {x.rank} dims")
    return [TensorType(x.dtype, tuple(x.shape[i] for i in p), _vis(types))]


def _slice(types, a):
    x = types[0]
    d = _dim(a["dim"], x.rank)
    start, end, step = a["start"], a["end"], a["step"]
    if step < 1 or not (0 <= start <= end <= x.shape[d]):
        _err(f"slice [{start}:{end}:{step}] out of range for dim {d} of size {x.shape[d]}")
    n = len(range(start, end, step))
    return [TensorType(x.dtype, x.shape[:d] + (n,) + x.shape[d + 1 :], _vis(types))]


def _index(types, a):
    x = types[0]
    d = _dim(a["dim"], x.rank)
    if not (0 <= a["index"] < x.shape[d]):
        _err(f"index {a['index']} out of range for dim {d} of size {x.shape[d]}")
    return [TensorType(x.dtype, x.shape[:d] + x.shape[d + 1 :], _vis(types))]


def _cat(types, a):
    if not types:
        _err("cat of no tensors")
    x = types[0]
    d = _dim(a["dim"], x.rank)
    dt = x.dtype
    for t in types[1:]:
        dt = promote(dt, t.dtype)
        if t.rank != x.rank or any(t.shape[i] != x.shape[i] for i in range(x.rank) if i != d):
            _err(f"cat: shapes {list(x.shape)} and {list(t.shape)} differ outside dim {d}")
    shape = x.shape[:d] + (sum(t.shape[d] for t in types),) + x.shape[d + 1 :]
    return [TensorType(dt, shape, _vis(types))]


def _stack(types, a):
    if not types:
        _err("stack of no tensors")
    x = types[0]
    d = _dim(a["dim"], x.rank + 1)
    dt = x.dtype
    for t in types[1:]:
        dt = promote(dt, t.dtype)
        if t.shape != x.shape:
            _err(f"stack: shapes {list(x.shape)} and {list(t.shape)} differ")
    return [TensorType(dt, x.shape[:d] + (len(types),) + x.shape[d:], _vis(types))]


def _pad(types, a):
    x = types[0]
    p = a["pads"]
    if len(p) % 2 or len(p) // 2 > x.rank or min(p, default=0) < 0:
        _err(f"pad: {list(p)} needs non-negative (left, right) pairs for the last dims")
    s = list(x.shape)
    for i in range(len(p) // 2):
        s[-1 - i] += p[2 * i] + p[2 * i + 1]
    return [TensorType(x.dtype, tuple(s), _vis(types))]


def _squeeze(types, a):
    x = types[0]
    dims = a["dims"]
    if not dims:
        dims = tuple(i for i, s in enumerate(x.shape) if s == 1)
    for d in dims:
        _dim(d, x.rank)
        if x.shape[d] != 1:
            _err(f"squeeze: dim {d} has size {x.shape[d]}, not 1")
    return [TensorType(x.dtype, tuple(s for i, s in enumerate(x.shape) if i not in dims), _vis(types))]


def _unsqueeze(types, a):
    x = types[0]
    d = _dim(a["dim"], x.rank + 1)
    return [TensorType(x.dtype, x.shape[:d] + (1,) + x.shape[d:], _vis(types))]


def _expand(types, a):
    x = types[0]
    shape = a["shape"]
    if len(shape) < x.rank:
        _err(f"expand: {list(shape)} has fewer dims than {list(x.shape)}")
    for i, s in enumerate(x.shape):
        t = shape[len(shape) - x.rank + i]
        if s != 1 and s != t:
            _err(f"expand: cannot expand {list(x.shape)} to {list(shape)}")
    return [TensorType(x.dtype, shape, _vis(types))]


def _share(types, a):
    t = types[0]
    if t.vis.is_secret:
        _err("share of a value that is already secret")
    return [t.with_vis(SECRET)]


def _reveal(types, a):
    t = types[0]
    if t.vis.is_public:
        _err("reveal of a public value")
    to = a["to"]
    if to < -1:
        _err(f"reveal to party {to}")
    if t.vis.is_private and t.vis.owner == to:
        _err(f"reveal of a private<{to}> value to its own owner")
    return [t.with_vis(PUBLIC if to == -1 else private(to))]


# ---------------------------------------------------------------- declarations

POOL = {
    "kernel": Attr("ints"),
    "stride": Attr("ints"),
    "padding": Attr("ints", (0, 0)),
    "ceil_mode": Attr("bool", False),
}
REDUCE = {"dim": Attr("ints?", None), "keepdim": Attr("bool", False)}

# sources and plumbing
op("load", (), {"tag": Attr("str"), "owner": Attr("int")}, declared=True, source=True, always_allowed=True,
   doc="private<owner> tensor that party `owner` holds under `tag`")
op("input", (), {"index": Attr("int")}, declared=True, source=True, always_allowed=True,
   doc="public argument supplied by whoever runs the plan")
op("const", (), {"name": Attr("str?", None), "value": Attr("float?", None)}, declared=True, source=True,
   always_allowed=True, doc="public constant: a named tensor of the plan file, or an inline scalar")
op("call", ("*args",), {"tag": Attr("str"), "owner": Attr("int")}, declared=True, source=True,
   doc="a model held by `owner` under `tag`, unknown to the tracer, linked at the workers")
op("share", ("x",), {}, _share, moves=True, always_allowed=True, doc="private or public value -> secret shares")
op("reveal", ("x",), {"to": Attr("int")}, _reveal, communicates=True, moves=True, accepts_pending_truncation=True,
   doc="open a value to party `to` (-1: every party)")
op("loop", ("*init",), {"trips": Attr("int")}, declared=True, regions=1, structural=True, always_allowed=True,
   doc="run the body `trips` times; the body gets (i, carried...) and yields carried")
op("yield", ("*xs",), terminator=True, structural=True, always_allowed=True, doc="a loop body's carried values")
op("return", ("*xs",), terminator=True, structural=True, always_allowed=True, doc="the plan's outputs")


def _product(types, a):
    shape = broadcast(*(t.shape for t in types))
    return [TensorType(promote(types[0].dtype, types[1].dtype), shape, _vis(types, mixed=True))]


# arithmetic
op("add", ("x", "y"), {}, _elementwise, accepts_pending_truncation=True, doc="x + y")
op("sub", ("x", "y"), {}, _elementwise, accepts_pending_truncation=True, doc="x - y")
op("mul", ("x", "y"), {}, _product, communicates=True, product=True, doc="x * y, elementwise")
op("div", ("x", "y"), {}, _div, communicates=True, accepts_pending_truncation=True, doc="x / y; a secret only by a public y")
op("neg", ("x",), {}, _unary, accepts_pending_truncation=True, doc="-x")
op("matmul", ("x", "y"), {}, _matmul, communicates=True, product=True, doc="x @ y, torch.matmul's broadcasting")
op("linear", ("x", "weight", "bias?"), {}, _linear, communicates=True, product=True, doc="x @ weight.T + bias")
op("conv2d", ("x", "weight", "bias?"),
   {"stride": Attr("ints", (1, 1)), "padding": Attr("ints", (0, 0)),
    "dilation": Attr("ints", (1, 1)), "groups": Attr("int", 1)},
   _conv2d, communicates=True, product=True, doc="2-d convolution over [N,C,H,W]")
op("avg_pool2d", ("x",), {**POOL, "count_include_pad": Attr("bool", True)}, _pool, communicates=True, accepts_pending_truncation=True,
   doc="mean over 2-d windows")
op("max_pool2d", ("x",), {**POOL, "dilation": Attr("ints", (1, 1))}, _max_pool, communicates=True,
   doc="maximum over 2-d windows")
op("adaptive_avg_pool2d", ("x",), {"output": Attr("ints")}, _adaptive, communicates=True, accepts_pending_truncation=True,
   doc="mean over windows that tile the input into `output`")
op("batch_norm", ("x", "mean", "var", "weight", "bias"), {"eps": Attr("float", 1e-5)}, _batch_norm,
   communicates=True, product=True, doc="(x - mean) / sqrt(var + eps) * weight + bias, per channel")

# non-linear
op("relu", ("x",), {}, _unary, communicates=True, doc="max(x, 0)")
op("sigmoid", ("x",), {}, _unary_float, communicates=True, approximate=True, doc="1 / (1 + exp(-x))")
op("tanh", ("x",), {}, _unary_float, communicates=True, approximate=True, doc="hyperbolic tangent")
op("exp", ("x",), {}, _unary_float, communicates=True, approximate=True, doc="e^x")
op("log", ("x",), {}, _unary_float, communicates=True, approximate=True, doc="natural logarithm")
op("reciprocal", ("x",), {}, _unary_float, communicates=True, approximate=True, doc="1 / x")
op("sqrt", ("x",), {}, _unary_float, communicates=True, approximate=True, doc="square root")
op("softmax", ("x",), {"dim": Attr("int")}, _softmax, communicates=True, approximate=True,
   doc="exp(x) / sum(exp(x)) along dim")
op("log_softmax", ("x",), {"dim": Attr("int")}, _softmax, communicates=True, approximate=True,
   doc="x - log(sum(exp(x))) along dim")

# reductions
op("sum", ("x",), REDUCE, _sum, accepts_pending_truncation=True, doc="sum over dims (all when dim is none)")
op("mean", ("x",), REDUCE, _mean, communicates=True, accepts_pending_truncation=True, doc="mean over dims (all when dim is none)")
op("max", ("x",), {"dim": Attr("int?", None), "keepdim": Attr("bool", False)}, _max, communicates=True,
   doc="maximum over one dim, or of all elements")
op("argmax", ("x",), {"dim": Attr("int?", None), "keepdim": Attr("bool", False)}, _argmax, communicates=True,
   doc="index of the maximum over one dim, or of all elements (flattened)")

# comparisons and selection
for _n, _sym in (("gt", ">"), ("lt", "<"), ("ge", ">="), ("le", "<="), ("eq", "==")):
    op(_n, ("x", "y"), {}, _compare, communicates=True, doc=f"x {_sym} y, elementwise (bool)")
op("where", ("cond", "x", "y"), {}, _where, communicates=True, doc="x where cond else y")

# shapes: always local
_SHAPE = dict(shape_only=True, accepts_pending_truncation=True)
op("reshape", ("x",), {"shape": Attr("ints")}, _reshape, **_SHAPE, doc="same elements, new shape")
op("flatten", ("x",), {"start": Attr("int", 0), "end": Attr("int")}, _flatten, **_SHAPE,
   doc="dims start..end merged into one")
op("transpose", ("x",), {"dim0": Attr("int"), "dim1": Attr("int")}, _transpose, **_SHAPE, doc="two dims swapped")
op("permute", ("x",), {"dims": Attr("ints")}, _permute, **_SHAPE, doc="dims reordered")
op("slice", ("x",), {"dim": Attr("int"), "start": Attr("int"), "end": Attr("int"), "step": Attr("int", 1)},
   _slice, **_SHAPE, doc="x[start:end:step] along dim")
op("index", ("x",), {"dim": Attr("int"), "index": Attr("int")}, _index, **_SHAPE, doc="x[index] along dim")
op("cat", ("*xs",), {"dim": Attr("int")}, _cat, accepts_pending_truncation=True, doc="tensors joined along dim")
op("stack", ("*xs",), {"dim": Attr("int")}, _stack, accepts_pending_truncation=True, doc="tensors stacked along a new dim")
op("pad", ("x",), {"pads": Attr("ints"), "value": Attr("float", 0.0)}, _pad, accepts_pending_truncation=True,
   doc="constant padding of the last dims, F.pad's order")
op("squeeze", ("x",), {"dims": Attr("ints", ())}, _squeeze, **_SHAPE, doc="size-1 dims removed")
op("unsqueeze", ("x",), {"dim": Attr("int")}, _unsqueeze, **_SHAPE, doc="a size-1 dim inserted")
op("expand", ("x",), {"shape": Attr("ints")}, _expand, **_SHAPE, doc="size-1 dims broadcast to shape")


class _Ops:
    """The op definitions by attribute, for registering rules against them:
    ``@register("protocol", OP.relu)``. A misspelt op fails at import."""

    def __getattr__(self, name):
        try:
            return REGISTRY[name.rstrip("_")]
        except KeyError:
            raise AttributeError(f"no op {name!r}") from None

    def __dir__(self):
        return list(REGISTRY)


OP = _Ops()


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
            _err(f"{opdef.name} has no attribute {k!r}; it has {', '.join(opdef.attrs) or 'none'}")
    for k, spec in opdef.attrs.items():
        if k in given:
            v = given[k]
            if isinstance(v, list):
                v = tuple(v)
            if not check_attr(spec.kind, v):
                _err(f"{opdef.name}: attribute {k}={v!r} is not of kind {spec.kind}")
            # one spelling per value, so that equal graphs print and compare equal
            if spec.kind.startswith("floats") and v is not None:
                v = tuple(float(x) for x in v)
            elif spec.kind.startswith("float") and v is not None:
                v = float(v)
            out[k] = v
        elif spec.required:
            _err(f"{opdef.name}: missing attribute {k!r} ({spec.kind})")
        else:
            out[k] = spec.default
    return out


def infer_types(name: str, types: list[TensorType], attrs: dict) -> list[TensorType]:
    """Result types of op `name` on operands of `types` (attrs already complete)."""
    d = get(name)
    lo, hi = d.arity()
    if len(types) < lo or (hi is not None and len(types) > hi):
        want = f"{lo}" if hi == lo else f"{lo}..{hi if hi is not None else ''}"
        _err(f"{name} takes {want} operands, got {len(types)}")
    if d.infer is None:
        _err(f"{name} has declared result types")
    return d.infer(types, attrs)
