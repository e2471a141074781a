"""ONNX elementwise arithmetic, non-linear functions, comparisons and reductions."""
from __future__ import annotations

import numpy as np

from planc.ir.ops import OP

from .context import attrs
from .registry import onnx_op


def _binary(op):
    def rule(cx, n, xs):
        return cx.emit(op, xs[:2])

    return rule


onnx_op("Add", OP.add)(_binary("add"))
onnx_op("Sub", OP.sub)(_binary("sub"))
onnx_op("Mul", OP.mul)(_binary("mul"))
onnx_op("Equal", OP.eq)(_binary("eq"))
onnx_op("Greater", OP.gt)(_binary("gt"))
onnx_op("Less", OP.lt)(_binary("lt"))
onnx_op("GreaterOrEqual", OP.ge)(_binary("ge"))
onnx_op("LessOrEqual", OP.le)(_binary("le"))


@onnx_op("Div", OP.div, OP.mul, OP.reciprocal)
def _div(cx, n, xs):
    x, y = xs
    if cx.is_known(y) or not cx.is_known(x) and cx.value(y).type.vis.is_public:
        return cx.emit("div", [x, y])
    # a divisor that is not public: x * (1 / y), the reciprocal local at y's owner or
    # approximated when y is secret
    return cx.emit("mul", [x, cx.emit("reciprocal", [y])])


def _unary(op, **fixed):
    def rule(cx, n, xs):
        return cx.emit(op, [xs[0]], dict(fixed))

    return rule


for _t, _d in (("Neg", OP.neg), ("Relu", OP.relu), ("Sigmoid", OP.sigmoid), ("Tanh", OP.tanh), ("Exp", OP.exp),
               ("Log", OP.log), ("Sqrt", OP.sqrt), ("Reciprocal", OP.reciprocal), ("Erf", OP.erf)):
    onnx_op(_t, _d)(_unary(_d.name))


@onnx_op("Gelu", OP.gelu, since=20)
def _gelu(cx, n, xs):
    form = attrs(n).get("approximate", "none")
    if form not in ("none", "tanh"):
        raise cx.error(f"approximate={form!r}; planc has 'none' and 'tanh'")
    return cx.emit("gelu", [xs[0]], {"approximate": form})


@onnx_op("Pow", OP.mul, OP.sqrt, OP.rsqrt, OP.reciprocal)
def _pow(cx, n, xs):
    x, e = xs
    e = cx.known(e, "Pow's exponent")
    if e.size != 1:
        raise cx.error("Pow needs a scalar exponent")
    e = float(e.reshape(()))
    if e == 1:
        return cx.value(x)
    if e == 2:
        return cx.emit("mul", [x, x])
    if e == 3:
        return cx.emit("mul", [cx.emit("mul", [x, x]), x])
    table = {0.5: "sqrt", -0.5: "rsqrt", -1.0: "reciprocal"}
    if e in table:
        return cx.emit(table[e], [x])
    raise cx.error(f"Pow by {e:g}: planc has exponents 1, 2, 3, 0.5, -0.5 and -1")


@onnx_op("Abs", OP.where, OP.ge, OP.neg)
def _abs(cx, n, xs):
    x = cx.value(xs[0])
    return cx.emit("where", [cx.emit("ge", [x, _zero(x)]), x, cx.emit("neg", [x])])


def _zero(x):
    from .context import Known

    return Known(np.zeros((), dtype=np.float64 if x.type.dtype == "f64" else np.float32))


def _scalar(v, like):
    from .context import Known

    return Known(np.asarray(v, dtype=np.float64 if like.type.dtype == "f64" else np.float32))


@onnx_op("Clip", OP.where, OP.gt, OP.lt)
def _clip(cx, n, xs):
    x = cx.value(xs[0])
    lo = xs[1] if len(xs) > 1 else None
    hi = xs[2] if len(xs) > 2 else None
    if lo is not None:
        x = cx.emit("where", [cx.emit("gt", [x, lo]), x, lo])
    if hi is not None:
        x = cx.emit("where", [cx.emit("lt", [x, hi]), x, hi])
    return x


@onnx_op("LeakyRelu", OP.where, OP.gt, OP.mul)
def _leaky(cx, n, xs):
    x = cx.value(xs[0])
    alpha = attrs(n).get("alpha", 0.01)
    return cx.emit("where", [cx.emit("gt", [x, _zero(x)]), x, cx.emit("mul", [x, _scalar(alpha, x)])])


def _fold_pairs(op):
    def rule(cx, n, xs):
        out = cx.value(xs[0])
        for y in xs[1:]:
            out = op(cx, out, cx.value(y))
        return out

    return rule


onnx_op("Sum", OP.add)(_fold_pairs(lambda cx, a, b: cx.emit("add", [a, b])))
onnx_op("Max", OP.where, OP.gt)(_fold_pairs(lambda cx, a, b: cx.emit("where", [cx.emit("gt", [a, b]), a, b])))
onnx_op("Min", OP.where, OP.lt)(_fold_pairs(lambda cx, a, b: cx.emit("where", [cx.emit("lt", [a, b]), a, b])))


@onnx_op("Mean", OP.add, OP.div)
def _mean(cx, n, xs):
    s = _fold_pairs(lambda cx, a, b: cx.emit("add", [a, b]))(cx, n, xs)
    return cx.emit("div", [s, _scalar(float(len(xs)), s)]) if len(xs) > 1 else s


@onnx_op("Where", OP.where)
def _where(cx, n, xs):
    return cx.emit("where", xs)


# ---------------------------------------------------------------- reductions


def reduce_axes(cx, n, xs, rank):
    """(axes or None for all, keepdims) of a Reduce* node at opset 18+ (axes an input);
    opset-13 nodes (ReduceSum has taken axes as an input since 13) read the attribute."""
    a = attrs(n)
    axes = a.get("axes")
    if len(xs) > 1 and xs[1] is not None:
        axes = [int(v) for v in cx.known(xs[1], "the axes").reshape(-1)]
    if not axes:
        if a.get("noop_with_empty_axes", 0):
            return (), bool(a.get("keepdims", 1))
        return None, bool(a.get("keepdims", 1))
    return tuple(sorted(cx.axis(int(v), rank) for v in axes)), bool(a.get("keepdims", 1))


def _reduce(op):
    def rule(cx, n, xs):
        x = cx.value(xs[0])
        axes, keep = reduce_axes(cx, n, xs, x.type.rank)
        if axes == ():
            return x
        return cx.emit(op, [x], {"dim": axes, "keepdim": keep})

    return rule


onnx_op("ReduceSum", OP.sum_)(_reduce("sum"))
onnx_op("ReduceMean", OP.mean)(_reduce("mean"))


@onnx_op("ReduceMax", OP.max_)
def _reduce_max(cx, n, xs):
    x = cx.value(xs[0])
    axes, keep = reduce_axes(cx, n, xs, x.type.rank)
    if axes == ():
        return x
    if axes is None:
        axes = tuple(range(x.type.rank))
    for d in sorted(axes, reverse=True):
        x = cx.emit("max", [x], {"dim": d, "keepdim": keep})
    return x


@onnx_op("ArgMax", OP.argmax)
def _argmax(cx, n, xs):
    a = attrs(n)
    if a.get("select_last_index", 0):
        raise cx.error("select_last_index=1 is not supported (planc's argmax takes the first maximum)")
    x = cx.value(xs[0])
    return cx.emit("argmax", [x], {"dim": cx.axis(int(a.get("axis", 0)), x.type.rank),
                                   "keepdim": bool(a.get("keepdims", 1))})


@onnx_op("Softmax", OP.softmax)
def _softmax(cx, n, xs):
    x = cx.value(xs[0])
    return cx.emit("softmax", [x], {"dim": cx.axis(int(attrs(n).get("axis", -1)), x.type.rank)})


@onnx_op("LogSoftmax", OP.log_softmax)
def _log_softmax(cx, n, xs):
    x = cx.value(xs[0])
    return cx.emit("log_softmax", [x], {"dim": cx.axis(int(attrs(n).get("axis", -1)), x.type.rank)})
