"""Arithmetic, products, pooling and normalisation: torch to IR."""
from __future__ import annotations

import operator

import torch
import torch.nn.functional as F

from planc.ir.ops import OP

from ..errors import TraceError, user_loc
from .base import both, const_like, lowers, pair, value_of


# ------------------------------------------------------------------ arithmetic


@lowers(OP.add, OP.mul, operator.add, operator.iadd, torch.add, "add", "add_", "__add__", "__radd__", "__iadd__")
def _add(cx, x, y, alpha=1):
    x, y = both(cx, x, y)
    if alpha != 1:
        y = _mul(cx, y, alpha)
    return cx.emit("add", [x, y])


@lowers(OP.sub, OP.mul, operator.sub, operator.isub, torch.sub, "sub", "sub_", "__sub__", "__isub__")
def _sub(cx, x, y, alpha=1):
    x, y = both(cx, x, y)
    if alpha != 1:
        y = _mul(cx, y, alpha)
    return cx.emit("sub", [x, y])


@lowers(OP.sub, "__rsub__", torch.rsub)
def _rsub(cx, x, y, alpha=1):
    return _sub(cx, y, x, alpha)


@lowers(OP.mul, operator.mul, operator.imul, torch.mul, "mul", "mul_", "__mul__", "__rmul__", "__imul__")
def _mul(cx, x, y):
    x, y = both(cx, x, y)
    return cx.emit("mul", [x, y])


@lowers(OP.div, operator.truediv, operator.itruediv, torch.div, torch.true_divide, "div", "div_", "__truediv__",
        "true_divide")
def _div(cx, x, y, rounding_mode=None):
    if rounding_mode is not None:
        raise TraceError(f"division with rounding_mode={rounding_mode!r} is not supported", user_loc())
    x, y = both(cx, x, y)
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


@lowers(OP.mul, OP.sqrt, OP.rsqrt, OP.reciprocal, operator.pow, torch.pow, "pow", "__pow__")
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
        return cx.emit("rsqrt", [x])
    if isinstance(e, int) and 2 < e <= 8:
        out = x
        for _ in range(e - 1):
            out = cx.emit("mul", [out, x])
        return out
    raise TraceError(f"x ** {e} is not supported; use powers 2..8, 0.5, -1 or -0.5, or exp/log", user_loc())


@lowers(OP.where, OP.ge, OP.neg, torch.abs, "abs")
def _abs(cx, x):
    return cx.emit("where", [cx.emit("ge", [x, value_of(cx, 0, x)]), x, cx.emit("neg", [x])])


@lowers(OP.matmul, operator.matmul, torch.matmul, torch.mm, torch.bmm, "matmul", "mm", "bmm", "__matmul__")
def _matmul(cx, x, y):
    return cx.emit("matmul", [x, y])


@lowers(OP.linear, F.linear)
def _linear(cx, x, weight, bias=None):
    return cx.emit("linear", [x, weight] + ([bias] if bias is not None else []))


@lowers(OP.conv2d, F.conv2d, torch.conv2d)
def _conv2d(cx, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    dilation = pair(dilation)
    if isinstance(padding, str):
        if padding == "valid":
            padding = 0
        elif padding == "same":
            k = weight.type.shape[2:]
            tot = [d * (kk - 1) for d, kk in zip(dilation, k)]
            if any(t % 2 for t in tot) or pair(stride) != (1, 1):
                raise TraceError("padding='same' needs stride 1 and an odd effective kernel; give explicit padding",
                                 user_loc())
            padding = tuple(t // 2 for t in tot)
        else:
            raise TraceError(f"conv2d padding={padding!r}", user_loc())
    if x.type.rank == 3:
        raise TraceError("conv2d of an unbatched [C,H,W] input; add a batch dimension with unsqueeze(0)", user_loc())
    attrs = {"stride": pair(stride), "padding": pair(padding), "dilation": dilation, "groups": int(groups)}
    return cx.emit("conv2d", [x, weight] + ([bias] if bias is not None else []), attrs)


@lowers(OP.avg_pool2d, F.avg_pool2d)
def _avg_pool2d(cx, x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                divisor_override=None):
    if divisor_override is not None:
        raise TraceError("avg_pool2d divisor_override is not supported", user_loc())
    k = pair(kernel_size)
    s = pair(stride) if stride not in (None, ()) and stride != [] else k
    return cx.emit("avg_pool2d", [x], {"kernel": k, "stride": s, "padding": pair(padding),
                                       "ceil_mode": bool(ceil_mode), "count_include_pad": bool(count_include_pad)})


def _max_pool2d(cx, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    if return_indices:
        raise TraceError("max_pool2d with return_indices=True is not supported", user_loc())
    k = pair(kernel_size)
    s = pair(stride) if stride not in (None, ()) and stride != [] else k
    return cx.emit("max_pool2d", [x], {"kernel": k, "stride": s, "padding": pair(padding),
                                       "dilation": pair(dilation), "ceil_mode": bool(ceil_mode)})


lowers(OP.max_pool2d, *{t for t in (F.max_pool2d, torch.max_pool2d, getattr(F, "_max_pool2d", None),
                                   torch._C._nn.max_pool2d_with_indices) if t is not None})(_max_pool2d)


@lowers(OP.adaptive_avg_pool2d, F.adaptive_avg_pool2d, torch._C._nn.adaptive_avg_pool2d)
def _adaptive_avg_pool2d(cx, x, output_size):
    o = pair(output_size)
    o = tuple(x.type.shape[-2 + i] if v is None else v for i, v in enumerate(o))
    return cx.emit("adaptive_avg_pool2d", [x], {"output": o})


@lowers(OP.batch_norm, F.batch_norm, torch.batch_norm)
def _batch_norm(cx, x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                eps=1e-5, *rest):
    if training or running_mean is None:
        raise TraceError("batch_norm in training mode; call model.eval() before tracing", user_loc())
    c = x.type.shape[1]
    dt = x.type.dtype
    weight = weight if weight is not None else const_like(cx, 1.0, (c,), dt)
    bias = bias if bias is not None else const_like(cx, 0.0, (c,), dt)
    return cx.emit("batch_norm", [x, running_mean, running_var, weight, bias], {"eps": float(eps)})


@lowers(OP.layer_norm, F.layer_norm, torch.layer_norm)
def _layer_norm(cx, x, normalized_shape, weight=None, bias=None, eps=1e-5, *rest):
    shape = (int(normalized_shape),) if isinstance(normalized_shape, int) else tuple(int(s) for s in normalized_shape)
    if not shape or tuple(x.type.shape[x.type.rank - len(shape):]) != shape or len(shape) > x.type.rank:
        raise TraceError(f"layer_norm over {list(shape)} does not fit an input of shape {list(x.type.shape)}",
                         user_loc())
    if weight is None and bias is not None:
        weight = const_like(cx, 1.0, shape, x.type.dtype)
    operands = [x] + [v for v in (weight, bias) if v is not None]
    return cx.emit("layer_norm", operands, {"dims": len(shape), "eps": float(eps)})


@lowers(F.dropout, F.dropout2d, F.dropout1d, F.alpha_dropout, torch.dropout)
def _dropout(cx, x, p=0.5, training=True, inplace=False):
    if training:
        raise TraceError("dropout in training mode; call model.eval() before tracing", user_loc())
    return x


