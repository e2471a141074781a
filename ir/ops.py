"""The op set: every op of the IR is declared here, once, with its traits.

Each op is one ``OpDef`` (``opdef.py``): operands, typed attributes, its type rule
(``typerules.py``), its traits, and the rules the other layers register against it —
reference semantics, lowerings from torch, protocol, error bound, sample, policy hint
(``planc ops NAME`` lists them with their file:line). A layer looks an op up by its
definition (``OP.relu``), never in a table of its own keyed by the op's name; the
completeness check (``opdef.check``) names every op that lacks a rule its traits require.

Adding an op: declare it below; register its reference rule (runtime/reference.py), its
lowering (planc/lower/), its sample (planc/samples.py) and, unless it is shape-only, its
protocol (one file in runtime/protocols/) — import fails until each is there.
"""
from __future__ import annotations

from .opdef import (KINDS, REGISTRY, Attr, IncompleteOps, Kind, MixesSecret, OpDef, Rule, TypeRuleError,  # noqa: F401
                    call_site, check, check_attr, full_attrs, get, infer_types, missing, op, register)
from .typerules import (_adaptive, _argmax, _batch_norm, _cat, _compare, _conv2d, _div, _elementwise, _expand,
                        _flatten, _index, _linear, _matmul, _max, _max_pool, _mean, _pad, _permute, _pool, _product,
                        _reshape, _reveal, _share, _slice, _softmax, _squeeze, _stack, _sum, _transpose, _unary,
                        _unary_float, _unsqueeze, _where, broadcast, _gather, _gelu, _layer_norm)  # noqa: F401
from .types import SECRET  # noqa: F401  (re-exported)


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
op("layer_norm", ("x", "weight?", "bias?"), {"dims": Attr("int"), "eps": Attr("float", 1e-5)}, _layer_norm,
   communicates=True, approximate=True,
   doc="(x - mean) / sqrt(var + eps) * weight + bias over the last `dims` dims (biased var)")

# non-linear
# how a comparison runs over shares: "bits" (the dealer-assisted bit extraction of
# runtime/protocols/signbit.py, 3 rounds, any number of parties) or "fss" (a distributed
# comparison function from the dealer, runtime/protocols/fss.py: 1 round, 2 parties);
# the compiler's choose_comparisons pass sets it with the cost model
METHOD = {"method": Attr("str", "bits", choices=("bits", "fss"))}
op("relu", ("x",), dict(METHOD), _unary, communicates=True, torch_fn="relu", doc="max(x, 0)")
op("sigmoid", ("x",), {}, _unary_float, communicates=True, torch_fn="sigmoid", approximate=True, doc="1 / (1 + exp(-x))")
op("tanh", ("x",), {}, _unary_float, communicates=True, torch_fn="tanh", approximate=True, doc="hyperbolic tangent")
op("exp", ("x",), {}, _unary_float, communicates=True, torch_fn="exp", approximate=True, doc="e^x")
op("log", ("x",), {}, _unary_float, communicates=True, torch_fn="log", approximate=True, doc="natural logarithm")
op("reciprocal", ("x",), {}, _unary_float, communicates=True, torch_fn="reciprocal", approximate=True, doc="1 / x")
op("sqrt", ("x",), {}, _unary_float, communicates=True, torch_fn="sqrt", approximate=True, doc="square root")
op("rsqrt", ("x",), {}, _unary_float, communicates=True, torch_fn="rsqrt", approximate=True, doc="1 / sqrt(x)")
op("erf", ("x",), {}, _unary_float, communicates=True, torch_fn="erf", approximate=True, doc="the error function")
op("gelu", ("x",), {"approximate": Attr("str", "none")}, _gelu, communicates=True, approximate=True,
   doc="x * Phi(x) (approximate='none'), or its tanh form (approximate='tanh'), as F.gelu")
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
   nondiff=True,
   doc="index of the maximum over one dim, or of all elements (flattened)")

# comparisons and selection
for _n, _sym in (("gt", ">"), ("lt", "<"), ("ge", ">="), ("le", "<="), ("eq", "==")):
    op(_n, ("x", "y"), dict(METHOD) if _n != "eq" else {}, _compare, communicates=True, nondiff=True, doc=f"x {_sym} y, elementwise (bool)")
op("where", ("cond", "x", "y"), {}, _where, communicates=True, doc="x where cond else y")
op("gather", ("x", "index"), {"dim": Attr("int")}, _gather, communicates=True, product=True,
   doc="x's slices at integer `index` along dim (ONNX Gather, numpy take; negative indices count from the "
       "end): local for a public index, a one-hot product for a private or secret one")

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


