"""Non-linear functions, reductions, comparisons and selection: torch to IR."""
from __future__ import annotations

import operator

import torch
import torch.nn.functional as F

from planc.ir.graph import Value
from planc.ir import ops
from planc.ir.ops import OP

from ..errors import TraceError, user_loc
from .base import both, lowers, norm_dim, norm_dims, rank, value_of


# ------------------------------------------------------------------ non-linear


def _unary(d):
    def rule(cx, x, *a, **k):
        if k.get("inplace") is None:
            k.pop("inplace", None)
        return cx.emit(d.name, [x])

    return rule


# plain elementwise ops (torch_fn): torch.f, F.f where it exists, and the method Tensor.f
for _d in ops.REGISTRY.values():
    if _d.torch_fn:
        _targets = {getattr(torch, _d.torch_fn), getattr(F, _d.torch_fn, None)} - {None}
        if hasattr(torch.Tensor, _d.torch_fn):
            _targets.add(_d.torch_fn)
        lowers(_d, *sorted(_targets, key=str))(_unary(_d))
lowers(OP.relu, "relu_", torch.relu_)(_unary(OP.relu))  # in place: the traced value is replaced


@lowers(OP.gelu, F.gelu)
def _gelu(cx, x, approximate="none"):
    if approximate not in ("none", "tanh"):
        raise TraceError(f"F.gelu approximate={approximate!r}; use 'none' or 'tanh'", user_loc())
    return cx.emit("gelu", [x], {"approximate": approximate})


def _softmax_rule(op):
    def rule(cx, x, dim=None, _stacklevel=3, dtype=None):
        if dim is None:
            raise TraceError(f"{op} needs an explicit dim", user_loc())
        if dtype is not None:
            raise TraceError(f"{op} with dtype= is not supported", user_loc())
        return cx.emit(op, [x], {"dim": norm_dim(dim, rank(x))})

    return rule


lowers(OP.softmax, F.softmax, torch.softmax, "softmax")(_softmax_rule("softmax"))
lowers(OP.log_softmax, F.log_softmax, torch.log_softmax, "log_softmax")(_softmax_rule("log_softmax"))


# ------------------------------------------------------------------ reductions


def _reduce(op):
    def rule(cx, x, dim=None, keepdim=False, dtype=None):
        if dtype is not None:
            raise TraceError(f"{op} with dtype= is not supported", user_loc())
        if isinstance(dim, (tuple, list)) and len(dim) == 0:
            dim = None
        return cx.emit(op, [x], {"dim": norm_dims(dim, rank(x)), "keepdim": bool(keepdim)})

    return rule


lowers(OP.sum_, torch.sum, "sum")(_reduce("sum"))
lowers(OP.mean, torch.mean, "mean")(_reduce("mean"))


@lowers(OP.max_, OP.argmax, OP.where, OP.gt, torch.max, "max")
def _max(cx, x, dim=None, keepdim=False):
    if isinstance(dim, Value):  # torch.max(a, b) is the elementwise maximum
        return _maximum(cx, x, dim)
    if dim is None:
        return cx.emit("max", [x])
    d = norm_dim(dim, rank(x))
    return (cx.emit("max", [x], {"dim": d, "keepdim": bool(keepdim)}),
            cx.emit("argmax", [x], {"dim": d, "keepdim": bool(keepdim)}))


@lowers(OP.max_, OP.argmax, OP.neg, OP.where, OP.lt, torch.min, "min")
def _min(cx, x, dim=None, keepdim=False):
    if isinstance(dim, Value):
        return _minimum(cx, x, dim)
    n = cx.emit("neg", [x])
    if dim is None:
        return cx.emit("neg", [cx.emit("max", [n])])
    d = norm_dim(dim, rank(x))
    return (cx.emit("neg", [cx.emit("max", [n], {"dim": d, "keepdim": bool(keepdim)})]),
            cx.emit("argmax", [n], {"dim": d, "keepdim": bool(keepdim)}))


@lowers(OP.max_, torch.amax, "amax")
def _amax(cx, x, dim=(), keepdim=False):
    dims = norm_dims(dim, rank(x)) if dim not in ((), None) else tuple(range(rank(x)))
    if len(dims) == rank(x) and not keepdim:
        return cx.emit("max", [x])
    out = x
    for d in sorted(dims, reverse=True):
        out = cx.emit("max", [out], {"dim": d, "keepdim": bool(keepdim)})
    return out


@lowers(OP.argmax, torch.argmax, "argmax")
def _argmax(cx, x, dim=None, keepdim=False):
    return cx.emit("argmax", [x], {"dim": None if dim is None else norm_dim(dim, rank(x)), "keepdim": bool(keepdim)})


@lowers(OP.argmax, OP.neg, torch.argmin, "argmin")
def _argmin(cx, x, dim=None, keepdim=False):
    return _argmax(cx, cx.emit("neg", [x]), dim, keepdim)


@lowers(OP.where, OP.gt, torch.maximum, "maximum")
def _maximum(cx, x, y):
    x, y = both(cx, x, y)
    return cx.emit("where", [cx.emit("gt", [x, y]), x, y])


@lowers(OP.where, OP.lt, torch.minimum, "minimum")
def _minimum(cx, x, y):
    x, y = both(cx, x, y)
    return cx.emit("where", [cx.emit("lt", [x, y]), x, y])


@lowers(OP.where, OP.gt, OP.lt, torch.clamp, "clamp", torch.clip, "clip")
def _clamp(cx, x, min=None, max=None):
    if min is not None:
        x = _maximum(cx, x, min)
    if max is not None:
        x = _minimum(cx, x, max)
    return x


@lowers(OP.where, OP.gt, OP.lt, F.hardtanh, F.hardtanh_)
def _hardtanh(cx, x, min_val=-1.0, max_val=1.0, inplace=False):
    return _clamp(cx, x, min_val, max_val)


@lowers(OP.where, OP.gt, OP.lt, F.relu6)
def _relu6(cx, x, inplace=False):
    return _clamp(cx, x, 0.0, 6.0)


# ------------------------------------------------------------------ comparisons


def _cmp(d):
    def rule(cx, x, y):
        x, y = both(cx, x, y)
        return cx.emit(d.name, [x, y])

    return rule


for _d, _ts in (
    (OP.gt, (operator.gt, torch.gt, "gt", "__gt__")),
    (OP.lt, (operator.lt, torch.lt, "lt", "__lt__")),
    (OP.ge, (operator.ge, torch.ge, "ge", "__ge__")),
    (OP.le, (operator.le, torch.le, "le", "__le__")),
    (OP.eq, (operator.eq, torch.eq, "eq", "__eq__")),
):
    lowers(_d, *_ts)(_cmp(_d))


@lowers(OP.where, torch.where, "where")
def _where(cx, cond, x=None, y=None):
    if x is None or y is None:
        raise TraceError("torch.where(cond) with one argument returns data-dependent shapes; "
                         "use torch.where(cond, a, b)", user_loc())
    like = x if isinstance(x, Value) else y if isinstance(y, Value) else None
    return cx.emit("where", [cond, value_of(cx, x, like), value_of(cx, y, like)])


