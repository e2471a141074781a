"""ONNX layers: Gemm, MatMul, Conv, pooling, normalisation, Dropout."""
from __future__ import annotations

import numpy as np

from planc.ir.ops import OP

from .context import Known, attrs
from .registry import onnx_op


@onnx_op("MatMul", OP.matmul)
def _matmul(cx, n, xs):
    return cx.emit("matmul", xs[:2])


@onnx_op("Gemm", OP.linear, OP.matmul, OP.transpose, OP.mul, OP.add)
def _gemm(cx, n, xs):
    """alpha op(A) op(B) + beta C: with transB (torch's Linear export) a `linear`, whose
    weight is [out, in] as ONNX stores it; otherwise a matmul."""
    a = attrs(n)
    A, B = cx.value(xs[0]), xs[1]
    C = xs[2] if len(xs) > 2 else None
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    if a.get("transA", 0):
        A = cx.emit("transpose", [A], {"dim0": 0, "dim1": 1})
    if a.get("transB", 0):
        bias = C if (C is not None and beta == 1.0 and cx.rank(C) == 1 and cx.shape(C)[0] == cx.shape(B)[0]) else None
        y = cx.emit("linear", [A, B] + ([bias] if bias is not None else []))
        if bias is not None:
            C = None
    else:
        y = cx.emit("matmul", [A, B])
    if alpha != 1.0:
        y = cx.emit("mul", [y, Known(np.asarray(alpha, dtype=np.float32))])
    if C is not None:
        if beta != 1.0:
            C = cx.emit("mul", [C, Known(np.asarray(beta, dtype=np.float32))])
        y = cx.emit("add", [y, C])
    return y


def _pads2(cx, a, k):
    """ONNX pads [top, left, bottom, right] as symmetric (ph, pw), or an error."""
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return _auto_pad(cx, a, k)
    p = list(a.get("pads", [0] * (2 * k)))
    if a.get("auto_pad") == "VALID":
        p = [0] * (2 * k)
    return p


def _auto_pad(cx, a, k):
    raise cx.error(f"auto_pad={a['auto_pad']} is not supported; export with explicit pads")


@onnx_op("Conv", OP.conv2d, OP.pad, OP.unsqueeze, OP.squeeze)
def _conv(cx, n, xs):
    a = attrs(n)
    x, w = cx.value(xs[0]), xs[1]
    b = xs[2] if len(xs) > 2 else None
    k = cx.rank(w) - 2
    if k not in (1, 2):
        raise cx.error(f"{k}-d convolution: planc has 1-d and 2-d")
    p = _pads2(cx, a, k)
    s, d = list(a.get("strides", [1] * k)), list(a.get("dilations", [1] * k))
    if k == 1:  # as a 2-d convolution over [N, C, 1, L]
        x = cx.emit("unsqueeze", [x], {"dim": 2})
        w = cx.emit("unsqueeze", [w], {"dim": 2})
        p, s, d = [0, p[0], 0, p[1]], [1, s[0]], [1, d[0]]
    if p[0] != p[2] or p[1] != p[3]:
        x = cx.emit("pad", [x], {"pads": (p[1], p[3], p[0], p[2]), "value": 0.0})
        p = [0, 0, 0, 0]
    y = cx.emit("conv2d", [x, w] + ([b] if b is not None else []),
                {"stride": tuple(s), "padding": (p[0], p[1]), "dilation": tuple(d), "groups": int(a.get("group", 1))})
    return cx.emit("squeeze", [y], {"dims": (2,)}) if k == 1 else y


def _pool_attrs(cx, n, a):
    k = list(a["kernel_shape"])
    if len(k) != 2:
        raise cx.error(f"{len(k)}-d pooling: planc has 2-d")
    p = _pads2(cx, a, 2)
    if p[0] != p[2] or p[1] != p[3]:
        raise cx.error(f"asymmetric pads {p}: planc pools with symmetric padding")
    return {"kernel": tuple(k), "stride": tuple(a.get("strides", [1, 1])), "padding": (p[0], p[1]),
            "ceil_mode": bool(a.get("ceil_mode", 0))}


@onnx_op("MaxPool", OP.max_pool2d)
def _max_pool(cx, n, xs):
    a = attrs(n)
    if len([o for o in n.output if o]) > 1:
        raise cx.error("MaxPool's Indices output is not supported")
    return cx.emit("max_pool2d", [xs[0]], {**_pool_attrs(cx, n, a), "dilation": tuple(a.get("dilations", [1, 1]))})


@onnx_op("AveragePool", OP.avg_pool2d)
def _avg_pool(cx, n, xs):
    a = attrs(n)
    if a.get("dilations", [1, 1]) != [1, 1]:
        raise cx.error("dilated AveragePool is not supported")
    return cx.emit("avg_pool2d", [xs[0]], {**_pool_attrs(cx, n, a),
                                           "count_include_pad": bool(a.get("count_include_pad", 0))})


@onnx_op("GlobalAveragePool", OP.mean)
def _global_avg(cx, n, xs):
    x = cx.value(xs[0])
    return cx.emit("mean", [x], {"dim": tuple(range(2, x.type.rank)), "keepdim": True})


@onnx_op("BatchNormalization", OP.batch_norm)
def _batch_norm(cx, n, xs):
    a = attrs(n)
    if a.get("training_mode", 0) or len([o for o in n.output if o]) > 1:
        raise cx.error("BatchNormalization in training mode; export the model in eval mode")
    x, scale, bias, mean, var = xs
    return cx.emit("batch_norm", [x, mean, var, scale, bias], {"eps": float(a.get("epsilon", 1e-5))})


@onnx_op("LayerNormalization", OP.layer_norm, since=17)
def _layer_norm(cx, n, xs):
    a = attrs(n)
    if len([o for o in n.output if o]) > 1:
        raise cx.error("LayerNormalization's Mean and InvStdDev outputs are not supported")
    x = cx.value(xs[0])
    axis = cx.axis(int(a.get("axis", -1)), x.type.rank)
    operands = [x] + [v for v in xs[1:3] if v is not None]
    return cx.emit("layer_norm", operands, {"dims": x.type.rank - axis, "eps": float(a.get("epsilon", 1e-5))})


@onnx_op("Dropout")
def _dropout(cx, n, xs):
    a = attrs(n)
    if len(xs) > 2 and xs[2] is not None and bool(cx.known(xs[2], "training_mode").reshape(())):
        raise cx.error("Dropout in training mode; export the model in eval mode")
    if len([o for o in n.output if o]) > 1:
        raise cx.error("Dropout's mask output is not supported")
    del a
    return xs[0]
