"""Lowering of torch functions, tensor methods and operators to IR ops.

One table, ``LOWER``, maps an fx target (a function object, or ``"method:name"`` for a
tensor method) to a rule with the torch signature. Rules receive IR ``Value``s for
traced tensors and plain Python values for everything else, and return a Value, a
Python value, or a tuple of them. Anything not in the table is an error that names the
user's line and, where there is one, what to use instead.
"""
from __future__ import annotations

import builtins
import operator

import torch
import torch.nn.functional as F

from planc.ir import ops
from planc.ir.graph import Value
from planc.ir.ops import OP
from planc.ir.types import PUBLIC, TensorType

from .errors import TraceError, user_loc

LOWER: dict = {}

# torch functions planc does not lower, and what to write instead; `instead` names the
# op the user is pointed to (listed by `planc ops NAME`), or None when no op fits
SUGGEST: dict[str, tuple] = {}


def unsupported(instead, hint: str, *names: str):
    for n in names:
        SUGGEST[n] = (instead, hint)


unsupported(OP.sigmoid, "use relu, sigmoid or tanh instead (x * torch.sigmoid(1.702 * x) approximates gelu)", "gelu")
unsupported(OP.sigmoid, "write x * torch.sigmoid(x) instead", "silu")
unsupported(OP.relu, "use relu instead", "elu")
unsupported(OP.where, "write torch.where(x > 0, x, 0.01 * x) instead", "leaky_relu")
unsupported(OP.log, "write torch.log(1 + torch.exp(x)) instead", "softplus")
unsupported(OP.reveal, "a traced value cannot be read into Python; keep it a tensor and reveal it",
            "item", "tolist", "numpy")
unsupported(OP.max_, "use max/argmax instead", "sort", "topk")
unsupported(None, "tensors keep the dtype they were loaded with", "double", "long")
unsupported(None, "tensors keep the dtype and device they were loaded with", "to")


class Lowerings:
    """An op's "lower" rule: every (torch targets, rule) that can emit the op."""

    def __init__(self):
        self.entries: list[tuple[tuple, object]] = []

    def targets(self) -> list[str]:
        return [describe_target(t) for ts, _ in self.entries for t in ts]


def lowers(*args):
    """Decorator: `fn` lowers the torch targets in `args` (function objects, or tensor
    method names as strings) to IR; the op definitions leading `args` are the ops it may
    emit, and the rule is registered on each of them."""
    defs = [a for a in args if isinstance(a, ops.OpDef)]
    where = ops.call_site(1)
    targets = tuple(a for a in args if not isinstance(a, ops.OpDef))

    def deco(fn):
        for t in targets:
            key = "method:" + t if isinstance(t, str) else t
            if LOWER.get(key, fn) is not fn:  # F.conv2d is torch.conv2d: aliases are fine
                raise AssertionError(f"{describe_target(t)} is lowered twice")
            LOWER[key] = fn
        for d in defs:
            got = d.rule("lower")
            if got is None:
                got = Lowerings()
                ops.register("lower", d, where=where)(got)
            got.entries.append((targets, fn))
        return fn

    return deco


def describe_target(t) -> str:
    """How a user writes a lowering target: torch.add, F.conv2d, Tensor.view, operator +."""
    if isinstance(t, str):
        return f"Tensor.{t}"
    if hasattr(t, "planc_name"):
        return t.planc_name
    mod = getattr(t, "__module__", None) or ""
    name = getattr(t, "__name__", repr(t))
    if mod in ("_operator", "operator"):
        return f"operator.{name}"
    if mod.startswith("torch._C") or mod.startswith("torch.nn.functional") or mod == "torch.functional":
        mod = "torch.nn.functional" if hasattr(F, name) and mod != "torch.functional" else "torch"
        if mod == "torch.nn.functional":
            return f"F.{name}"
    if mod == "torch.nn.functional":
        return f"F.{name}"
    return f"{mod}.{name}" if mod else name


def target_name(node) -> str:
    t = node.target
    if node.op == "call_method":
        return f"Tensor.{t}"
    mod = getattr(t, "__module__", None) or ""
    name = getattr(t, "__name__", repr(t))
    if mod in ("_operator", "operator"):
        return f"operator {name}"
    if mod.startswith("torch._C"):
        mod = "torch.nn.functional" if hasattr(F, name) else "torch"
    return f"{mod}.{name}" if mod else name


def lower_node(cx, node):
    if node.op == "call_method":
        key = "method:" + node.target
    else:
        key = node.target
    rule = LOWER.get(key)
    if rule is None:
        short = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
        hint = SUGGEST.get(short.strip("_"), (None, None))[1]
        msg = f"{target_name(node)} is not supported by planc"
        raise TraceError(msg + (f"; {hint}" if hint else "; `planc ops` lists the op set"),
                         user_loc())
    args = _unwrap(node.args)
    kwargs = {k: _unwrap(v) for k, v in node.kwargs.items()}
    try:
        return rule(cx, *args, **kwargs)
    except TypeError as e:
        # a rule called with arguments torch accepts but we do not
        raise TraceError(f"{target_name(node)}: unsupported arguments ({e})", user_loc()) from None


def _unwrap(a):
    import torch.fx as fx

    return fx.node.map_aggregate(a, lambda x: x.meta["planc"] if isinstance(x, fx.Node) else x)


# ------------------------------------------------------------------ helpers


def _v(cx, x, like=None) -> Value:
    if isinstance(x, Value):
        return x
    return cx.scalar(x, like)


def _both(cx, x, y):
    like = x if isinstance(x, Value) else y if isinstance(y, Value) else None
    return _v(cx, x, like), _v(cx, y, like)


def _rank(x: Value) -> int:
    return x.type.rank


def _nd(d: int, rank: int) -> int:
    """Normalise a possibly negative dim."""
    if not -max(rank, 1) <= d < max(rank, 1):
        raise TraceError(f"dim {d} out of range for a tensor of rank {rank}", user_loc())
    return d % max(rank, 1)


def _dims(d, rank):
    if d is None:
        return None
    if isinstance(d, int):
        d = (d,)
    return tuple(sorted(_nd(i, rank) for i in d))


def _pair(v):
    if isinstance(v, int):
        return (v, v)
    v = tuple(v)
    return v * 2 if len(v) == 1 else v


def _shape_args(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
        shape = tuple(shape[0])
    return tuple(int(s) for s in shape)


def _resolve(shape, numel):
    shape = list(shape)
    if shape.count(-1) > 1:
        raise TraceError("only one dimension can be -1", user_loc())
    if -1 in shape:
        known = 1
        for s in shape:
            if s != -1:
                known *= s
        if known == 0 or numel % known:
            raise TraceError(f"cannot infer -1 in {shape} for {numel} elements", user_loc())
        shape[shape.index(-1)] = numel // known
    return tuple(shape)


def _const_like(cx, value: float, shape, dtype) -> Value:
    c = cx.b.emit("const", (), {"value": float(value)}, types=[TensorType(dtype, (), PUBLIC)],
                  name="c", loc=user_loc())
    if tuple(shape) == ():
        return c
    return cx.emit("expand", [c], {"shape": tuple(shape)})


# ------------------------------------------------------------------ arithmetic


@lowers(OP.add, OP.mul, operator.add, operator.iadd, torch.add, "add", "add_", "__add__", "__radd__", "__iadd__")
def _add(cx, x, y, alpha=1):
    x, y = _both(cx, x, y)
    if alpha != 1:
        y = _mul(cx, y, alpha)
    return cx.emit("add", [x, y])


@lowers(OP.sub, OP.mul, operator.sub, operator.isub, torch.sub, "sub", "sub_", "__sub__", "__isub__")
def _sub(cx, x, y, alpha=1):
    x, y = _both(cx, x, y)
    if alpha != 1:
        y = _mul(cx, y, alpha)
    return cx.emit("sub", [x, y])


@lowers(OP.sub, "__rsub__", torch.rsub)
def _rsub(cx, x, y, alpha=1):
    return _sub(cx, y, x, alpha)


@lowers(OP.mul, operator.mul, operator.imul, torch.mul, "mul", "mul_", "__mul__", "__rmul__", "__imul__")
def _mul(cx, x, y):
    x, y = _both(cx, x, y)
    return cx.emit("mul", [x, y])


@lowers(OP.div, operator.truediv, operator.itruediv, torch.div, torch.true_divide, "div", "div_", "__truediv__",
        "true_divide")
def _div(cx, x, y, rounding_mode=None):
    if rounding_mode is not None:
        raise TraceError(f"division with rounding_mode={rounding_mode!r} is not supported", user_loc())
    x, y = _both(cx, x, y)
    return cx.emit("div", [x, y])


@lowers(OP.div, "__rtruediv__")
def _rdiv(cx, x, y):
    return _div(cx, y, x)


@lowers(OP.neg, operator.neg, torch.neg, "neg", "__neg__")
def _neg(cx, x):
    return cx.emit("neg", [x])


@lowers(operator.pos)
def _pos(cx, x):
    return x


@lowers(OP.mul, OP.sqrt, OP.reciprocal, operator.pow, torch.pow, "pow", "__pow__")
def _pow(cx, x, e):
    if not isinstance(e, (int, float)) or isinstance(e, bool):
        raise TraceError("only powers by a constant number are supported", user_loc())
    if e == 1:
        return x
    if e == 2:
        return cx.emit("mul", [x, x])
    if e == 0.5:
        return cx.emit("sqrt", [x])
    if e == -1:
        return cx.emit("reciprocal", [x])
    if e == -0.5:
        return cx.emit("reciprocal", [cx.emit("sqrt", [x])])
    if isinstance(e, int) and 2 < e <= 8:
        out = x
        for _ in range(e - 1):
            out = cx.emit("mul", [out, x])
        return out
    raise TraceError(f"x ** {e} is not supported; use powers 2..8, 0.5, -1 or -0.5, or exp/log", user_loc())


@lowers(OP.where, OP.ge, OP.neg, torch.abs, "abs")
def _abs(cx, x):
    return cx.emit("where", [cx.emit("ge", [x, _v(cx, 0, x)]), x, cx.emit("neg", [x])])


@lowers(OP.matmul, operator.matmul, torch.matmul, torch.mm, torch.bmm, "matmul", "mm", "bmm", "__matmul__")
def _matmul(cx, x, y):
    return cx.emit("matmul", [x, y])


@lowers(OP.linear, F.linear)
def _linear(cx, x, weight, bias=None):
    return cx.emit("linear", [x, weight] + ([bias] if bias is not None else []))


@lowers(OP.conv2d, F.conv2d, torch.conv2d)
def _conv2d(cx, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    dilation = _pair(dilation)
    if isinstance(padding, str):
        if padding == "valid":
            padding = 0
        elif padding == "same":
            k = weight.type.shape[2:]
            tot = [d * (kk - 1) for d, kk in zip(dilation, k)]
            if any(t % 2 for t in tot) or _pair(stride) != (1, 1):
                raise TraceError("padding='same' needs stride 1 and an odd effective kernel; give explicit padding",
                                 user_loc())
            padding = tuple(t // 2 for t in tot)
        else:
            raise TraceError(f"conv2d padding={padding!r}", user_loc())
    if x.type.rank == 3:
        raise TraceError("conv2d of an unbatched [C,H,W] input; add a batch dimension with unsqueeze(0)", user_loc())
    attrs = {"stride": _pair(stride), "padding": _pair(padding), "dilation": dilation, "groups": int(groups)}
    return cx.emit("conv2d", [x, weight] + ([bias] if bias is not None else []), attrs)


@lowers(OP.avg_pool2d, F.avg_pool2d)
def _avg_pool2d(cx, x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                divisor_override=None):
    if divisor_override is not None:
        raise TraceError("avg_pool2d divisor_override is not supported", user_loc())
    k = _pair(kernel_size)
    s = _pair(stride) if stride not in (None, ()) and stride != [] else k
    return cx.emit("avg_pool2d", [x], {"kernel": k, "stride": s, "padding": _pair(padding),
                                       "ceil_mode": bool(ceil_mode), "count_include_pad": bool(count_include_pad)})


def _max_pool2d(cx, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    if return_indices:
        raise TraceError("max_pool2d with return_indices=True is not supported", user_loc())
    k = _pair(kernel_size)
    s = _pair(stride) if stride not in (None, ()) and stride != [] else k
    return cx.emit("max_pool2d", [x], {"kernel": k, "stride": s, "padding": _pair(padding),
                                       "dilation": _pair(dilation), "ceil_mode": bool(ceil_mode)})


lowers(OP.max_pool2d, *{t for t in (F.max_pool2d, torch.max_pool2d, getattr(F, "_max_pool2d", None),
                                   torch._C._nn.max_pool2d_with_indices) if t is not None})(_max_pool2d)


@lowers(OP.adaptive_avg_pool2d, F.adaptive_avg_pool2d, torch._C._nn.adaptive_avg_pool2d)
def _adaptive_avg_pool2d(cx, x, output_size):
    o = _pair(output_size)
    o = tuple(x.type.shape[-2 + i] if v is None else v for i, v in enumerate(o))
    return cx.emit("adaptive_avg_pool2d", [x], {"output": o})


@lowers(OP.batch_norm, F.batch_norm, torch.batch_norm)
def _batch_norm(cx, x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                eps=1e-5, *rest):
    if training or running_mean is None:
        raise TraceError("batch_norm in training mode; call model.eval() before tracing", user_loc())
    c = x.type.shape[1]
    dt = x.type.dtype
    weight = weight if weight is not None else _const_like(cx, 1.0, (c,), dt)
    bias = bias if bias is not None else _const_like(cx, 0.0, (c,), dt)
    return cx.emit("batch_norm", [x, running_mean, running_var, weight, bias], {"eps": float(eps)})


@lowers(F.dropout, F.dropout2d, F.dropout1d, F.alpha_dropout, torch.dropout)
def _dropout(cx, x, p=0.5, training=True, inplace=False):
    if training:
        raise TraceError("dropout in training mode; call model.eval() before tracing", user_loc())
    return x


# ------------------------------------------------------------------ non-linear


def _unary(d):
    def rule(cx, x, *a, **k):
        if k.get("inplace") is None:
            k.pop("inplace", None)
        return cx.emit(d.name, [x])

    return rule


for _d, _targets in (
    (OP.relu, (F.relu, torch.relu, "relu", "relu_", torch.relu_)),
    (OP.sigmoid, (torch.sigmoid, F.sigmoid, "sigmoid")),
    (OP.tanh, (torch.tanh, F.tanh, "tanh")),
    (OP.exp, (torch.exp, "exp")),
    (OP.log, (torch.log, "log")),
    (OP.reciprocal, (torch.reciprocal, "reciprocal")),
    (OP.sqrt, (torch.sqrt, "sqrt")),
):
    lowers(_d, *_targets)(_unary(_d))


@lowers(OP.reciprocal, OP.sqrt, torch.rsqrt, "rsqrt")
def _rsqrt(cx, x):
    return cx.emit("reciprocal", [cx.emit("sqrt", [x])])


def _softmax_rule(op):
    def rule(cx, x, dim=None, _stacklevel=3, dtype=None):
        if dim is None:
            raise TraceError(f"{op} needs an explicit dim", user_loc())
        if dtype is not None:
            raise TraceError(f"{op} with dtype= is not supported", user_loc())
        return cx.emit(op, [x], {"dim": _nd(dim, _rank(x))})

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
        return cx.emit(op, [x], {"dim": _dims(dim, _rank(x)), "keepdim": bool(keepdim)})

    return rule


lowers(OP.sum_, torch.sum, "sum")(_reduce("sum"))
lowers(OP.mean, torch.mean, "mean")(_reduce("mean"))


@lowers(OP.max_, OP.argmax, OP.where, OP.gt, torch.max, "max")
def _max(cx, x, dim=None, keepdim=False):
    if isinstance(dim, Value):  # torch.max(a, b) is the elementwise maximum
        return _maximum(cx, x, dim)
    if dim is None:
        return cx.emit("max", [x])
    d = _nd(dim, _rank(x))
    return (cx.emit("max", [x], {"dim": d, "keepdim": bool(keepdim)}),
            cx.emit("argmax", [x], {"dim": d, "keepdim": bool(keepdim)}))


@lowers(OP.max_, OP.argmax, OP.neg, OP.where, OP.lt, torch.min, "min")
def _min(cx, x, dim=None, keepdim=False):
    if isinstance(dim, Value):
        return _minimum(cx, x, dim)
    n = cx.emit("neg", [x])
    if dim is None:
        return cx.emit("neg", [cx.emit("max", [n])])
    d = _nd(dim, _rank(x))
    return (cx.emit("neg", [cx.emit("max", [n], {"dim": d, "keepdim": bool(keepdim)})]),
            cx.emit("argmax", [n], {"dim": d, "keepdim": bool(keepdim)}))


@lowers(OP.max_, torch.amax, "amax")
def _amax(cx, x, dim=(), keepdim=False):
    dims = _dims(dim, _rank(x)) if dim not in ((), None) else tuple(range(_rank(x)))
    if len(dims) == _rank(x) and not keepdim:
        return cx.emit("max", [x])
    out = x
    for d in sorted(dims, reverse=True):
        out = cx.emit("max", [out], {"dim": d, "keepdim": bool(keepdim)})
    return out


@lowers(OP.argmax, torch.argmax, "argmax")
def _argmax(cx, x, dim=None, keepdim=False):
    return cx.emit("argmax", [x], {"dim": None if dim is None else _nd(dim, _rank(x)), "keepdim": bool(keepdim)})


@lowers(OP.argmax, OP.neg, torch.argmin, "argmin")
def _argmin(cx, x, dim=None, keepdim=False):
    return _argmax(cx, cx.emit("neg", [x]), dim, keepdim)


@lowers(OP.where, OP.gt, torch.maximum, "maximum")
def _maximum(cx, x, y):
    x, y = _both(cx, x, y)
    return cx.emit("where", [cx.emit("gt", [x, y]), x, y])


@lowers(OP.where, OP.lt, torch.minimum, "minimum")
def _minimum(cx, x, y):
    x, y = _both(cx, x, y)
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
        x, y = _both(cx, x, y)
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
    return cx.emit("where", [cond, _v(cx, x, like), _v(cx, y, like)])


# ------------------------------------------------------------------ shapes


@lowers(OP.reshape, torch.reshape, "reshape", "view")
def _reshape(cx, x, *shape):
    shape = _resolve(_shape_args(shape), x.type.numel)
    if shape == x.type.shape:
        return x
    return cx.emit("reshape", [x], {"shape": shape})


@lowers(OP.flatten, torch.flatten, "flatten")
def _flatten(cx, x, start_dim=0, end_dim=-1):
    r = _rank(x)
    return cx.emit("flatten", [x], {"start": _nd(start_dim, r), "end": _nd(end_dim, r)})


@lowers(OP.transpose, torch.transpose, "transpose", torch.swapaxes, "swapaxes")
def _transpose(cx, x, dim0, dim1):
    r = _rank(x)
    return cx.emit("transpose", [x], {"dim0": _nd(dim0, r), "dim1": _nd(dim1, r)})


@lowers(OP.transpose, torch.t, "t")
def _t(cx, x):
    if _rank(x) < 2:
        return x
    return cx.emit("transpose", [x], {"dim0": 0, "dim1": 1})


@lowers(OP.permute, torch.permute, "permute")
def _permute(cx, x, *dims):
    dims = _shape_args(dims)
    return cx.emit("permute", [x], {"dims": tuple(_nd(d, _rank(x)) for d in dims)})


@lowers(OP.permute, OP.transpose, builtins.getattr)
def _getattr(cx, x, name):
    if name in ("T", "mT") and isinstance(x, Value):
        r = _rank(x)
        if name == "T":
            return x if r < 2 else cx.emit("permute", [x], {"dims": tuple(reversed(range(r)))})
        return cx.emit("transpose", [x], {"dim0": r - 2, "dim1": r - 1})
    if name in ("data",):
        return x
    raise TraceError(f"attribute .{name} of a traced tensor is not supported", user_loc())


@lowers(OP.cat, torch.cat, torch.concat, torch.concatenate)
def _cat(cx, tensors, dim=0, axis=None):
    dim = axis if axis is not None else dim
    tensors = list(tensors)
    return cx.emit("cat", tensors, {"dim": _nd(dim, _rank(tensors[0]))})


@lowers(OP.stack, torch.stack)
def _stack(cx, tensors, dim=0):
    tensors = list(tensors)
    return cx.emit("stack", tensors, {"dim": _nd(dim, _rank(tensors[0]) + 1)})


@lowers(OP.pad, F.pad)
def _pad(cx, x, pad, mode="constant", value=None):
    if mode != "constant":
        raise TraceError(f"pad mode {mode!r} is not supported; use mode='constant'", user_loc())
    return cx.emit("pad", [x], {"pads": tuple(int(p) for p in pad), "value": float(value or 0.0)})


@lowers(OP.squeeze, torch.squeeze, "squeeze")
def _squeeze(cx, x, dim=None):
    dims = () if dim is None else _dims(dim, _rank(x))
    if dims:
        dims = tuple(d for d in dims if x.type.shape[d] == 1)  # torch ignores non-1 dims
        if not dims:
            return x
    return cx.emit("squeeze", [x], {"dims": dims})


@lowers(OP.unsqueeze, torch.unsqueeze, "unsqueeze")
def _unsqueeze(cx, x, dim):
    return cx.emit("unsqueeze", [x], {"dim": _nd(dim, _rank(x) + 1)})


@lowers(OP.expand, "expand")
def _expand(cx, x, *shape):
    shape = list(_shape_args(shape))
    off = len(shape) - _rank(x)
    for i, s in enumerate(shape):
        if s == -1:
            shape[i] = x.type.shape[i - off]
    if tuple(shape) == x.type.shape:
        return x
    return cx.emit("expand", [x], {"shape": tuple(shape)})


@lowers(OP.expand, "expand_as")
def _expand_as(cx, x, other):
    return _expand(cx, x, *other.type.shape)


@lowers("contiguous", "clone", "detach", torch.clone, torch.detach, "requires_grad_")
def _identity(cx, x, *a, **k):
    return x


@lowers(torch.zeros_like, torch.ones_like)
def _fill_like(cx, x, *a, **k):
    raise TraceError("zeros_like/ones_like of a traced tensor: use torch.zeros(shape)/torch.ones(shape) "
                     "with x.shape, which is known while tracing", user_loc())


@lowers(OP.unsqueeze, OP.slice_, OP.index_, operator.getitem)
def _getitem(cx, x, idx):
    if not isinstance(x, Value):
        return x[idx]  # a tuple from a multi-result rule, e.g. torch.max(x, dim)
    if isinstance(idx, Value):
        raise TraceError("indexing with a traced tensor is data-dependent; use torch.where or a one-hot matmul",
                         user_loc())
    if not isinstance(idx, tuple):
        idx = (idx,)
    n_real = sum(1 for i in idx if i is not None and i is not Ellipsis)
    if Ellipsis in idx:
        k = idx.index(Ellipsis)
        idx = idx[:k] + (slice(None),) * (_rank(x) - n_real) + idx[k + 1:]
    if n_real > _rank(x):
        raise TraceError(f"too many indices for a tensor of rank {_rank(x)}", user_loc())
    out, d = x, 0
    for i in idx:
        if i is None:
            out = cx.emit("unsqueeze", [out], {"dim": d})
            d += 1
        elif isinstance(i, slice):
            size = out.type.shape[d]
            start, stop, step = i.indices(size)
            if step < 1:
                raise TraceError("negative slice steps are not supported", user_loc())
            stop = max(start, stop)
            if (start, stop, step) != (0, size, 1):
                out = cx.emit("slice", [out], {"dim": d, "start": start, "end": stop, "step": step})
            d += 1
        elif isinstance(i, int) and not isinstance(i, bool):
            size = out.type.shape[d]
            if not -size <= i < size:
                raise TraceError(f"index {i} out of range for dim {d} of size {size}", user_loc())
            out = cx.emit("index", [out], {"dim": d, "index": i % size})
        else:
            raise TraceError(f"indexing with {type(i).__name__} is not supported; use ints, slices and None",
                             user_loc())
    return out


@lowers("cpu")
def _cpu(cx, x):
    return x


@lowers("float")
def _float_method(cx, x, *a, **k):
    if x.type.dtype != "f32":
        raise TraceError(f"casting {x.type.dtype} to f32 is not supported; load the data as float32", user_loc())
    return x
