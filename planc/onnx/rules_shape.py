"""ONNX shapes, indexing and plumbing: Reshape, Transpose, Concat, Split, Slice, Gather, ...

Shapes, axes, pads, scales and indices must be known at import time (a plan has static
shapes); the importer folds constant subgraphs (context.py), so Shape -> Gather ->
Concat -> Reshape chains arrive here as constants.
"""
from __future__ import annotations

import numpy as np

from planc.ir.ops import OP

from .context import Known, ONNX_DTYPES, attrs
from .registry import onnx_op


@onnx_op("Identity")
def _identity(cx, n, xs):
    return xs[0]


@onnx_op("Constant")
def _constant(cx, n, xs):
    a = attrs(n)
    if "value" in a:
        return Known(np.asarray(a["value"]))
    for k, dt in (("value_float", np.float32), ("value_floats", np.float32), ("value_int", np.int64),
                  ("value_ints", np.int64)):
        if k in a:
            return Known(np.asarray(a[k], dtype=dt))
    raise cx.error(f"Constant with {', '.join(a) or 'no value'}: planc reads value, value_float(s), value_int(s)")


@onnx_op("Shape")
def _shape(cx, n, xs):
    a = attrs(n)
    s = np.asarray(cx.shape(xs[0]), dtype=np.int64)
    r = len(s)
    start, end = a.get("start", 0), a.get("end", r)
    return Known(s[start:end])


@onnx_op("Size")
def _size(cx, n, xs):
    return Known(np.asarray(int(np.prod(cx.shape(xs[0]))), dtype=np.int64))


@onnx_op("Cast")
def _cast(cx, n, xs):
    to = ONNX_DTYPES.get(attrs(n)["to"])
    x = xs[0]
    if isinstance(x, Known):
        return x
    v = cx.value(x)
    if to == v.type.dtype or (to in ("f32", "f64") and v.type.dtype in ("f32", "f64")):
        return v  # the ring holds both float widths alike
    raise cx.error(f"Cast from {v.type.dtype} to {to or 'an unsupported type'} of a computed value: only casts "
                   "between float widths (and of constants) are harmless")


@onnx_op("ConstantOfShape")
def _constant_of_shape(cx, n, xs):
    raise cx.error("ConstantOfShape of a computed shape")


@onnx_op("Range")
def _range(cx, n, xs):
    raise cx.error("Range of computed bounds")


@onnx_op("Reshape", OP.reshape)
def _reshape(cx, n, xs):
    x = cx.value(xs[0])
    shape = [int(s) for s in cx.known(xs[1], "Reshape's shape").reshape(-1)]
    if not attrs(n).get("allowzero", 0):
        shape = [x.type.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    if shape.count(-1) > 1:
        raise cx.error(f"shape {shape} has more than one -1")
    if -1 in shape:
        known = int(np.prod([s for s in shape if s != -1]))
        shape[shape.index(-1)] = x.type.numel // max(known, 1)
    if tuple(shape) == x.type.shape:
        return x
    return cx.emit("reshape", [x], {"shape": tuple(shape)})


@onnx_op("Flatten", OP.flatten, OP.reshape)
def _flatten(cx, n, xs):
    x = cx.value(xs[0])
    ax = int(attrs(n).get("axis", 1))
    ax = ax % (x.type.rank + 1) if ax < 0 else ax
    s = x.type.shape
    shape = (int(np.prod(s[:ax])), int(np.prod(s[ax:])))
    if shape == s:
        return x
    if ax == 1 and x.type.rank >= 2:  # what nn.Flatten exports: planc's flatten, as a policy knows it
        return cx.emit("flatten", [x], {"start": 1, "end": x.type.rank - 1})
    return cx.emit("reshape", [x], {"shape": shape})


@onnx_op("Transpose", OP.permute)
def _transpose(cx, n, xs):
    x = cx.value(xs[0])
    perm = tuple(int(p) for p in attrs(n).get("perm", reversed(range(x.type.rank))))
    if perm == tuple(range(x.type.rank)):
        return x
    return cx.emit("permute", [x], {"dims": perm})


@onnx_op("Squeeze", OP.squeeze)
def _squeeze(cx, n, xs):
    x = cx.value(xs[0])
    axes = () if len(xs) < 2 or xs[1] is None else tuple(
        sorted(cx.axis(int(v), x.type.rank) for v in cx.known(xs[1], "the axes").reshape(-1)))
    return cx.emit("squeeze", [x], {"dims": axes})


@onnx_op("Unsqueeze", OP.unsqueeze)
def _unsqueeze(cx, n, xs):
    x = cx.value(xs[0])
    axes = [int(v) for v in cx.known(xs[1], "the axes").reshape(-1)]
    r = x.type.rank + len(axes)
    for d in sorted(a % r for a in axes):
        x = cx.emit("unsqueeze", [x], {"dim": d})
    return x


@onnx_op("Concat", OP.cat)
def _concat(cx, n, xs):
    # ONNX allows empty 1-d inputs to Concat (nothing to join)
    vals = [x for x in xs if x is not None and not (cx.rank(x) == 1 and cx.shape(x)[0] == 0)]
    r = cx.rank(vals[0])
    return cx.emit("cat", vals, {"dim": cx.axis(int(attrs(n)["axis"]), r)})


@onnx_op("Split", OP.slice_)
def _split(cx, n, xs):
    a = attrs(n)
    x = cx.value(xs[0])
    d = cx.axis(int(a.get("axis", 0)), x.type.rank)
    size = x.type.shape[d]
    outs = [o for o in n.output]
    if len(xs) > 1 and xs[1] is not None:
        parts = [int(v) for v in cx.known(xs[1], "Split's sizes").reshape(-1)]
    else:
        k = int(a.get("num_outputs", len(outs)))
        step = -(-size // k)
        parts = [min(step, size - i * step) for i in range(k)]
    if sum(parts) != size:
        raise cx.error(f"split sizes {parts} do not add up to {size}")
    res, start = [], 0
    for p in parts:
        res.append(x if p == size else cx.emit("slice", [x], {"dim": d, "start": start, "end": start + p}))
        start += p
    return res


@onnx_op("Slice", OP.slice_, OP.reshape)
def _slice(cx, n, xs):
    x = cx.value(xs[0])
    starts = cx.known(xs[1], "Slice's starts").reshape(-1)
    ends = cx.known(xs[2], "Slice's ends").reshape(-1)
    axes = cx.known(xs[3], "Slice's axes").reshape(-1) if len(xs) > 3 and xs[3] is not None else range(len(starts))
    steps = cx.known(xs[4], "Slice's steps").reshape(-1) if len(xs) > 4 and xs[4] is not None else [1] * len(starts)
    for s, e, ax, st in zip(starts, ends, axes, steps):
        d = cx.axis(int(ax), x.type.rank)
        if int(st) < 1:
            raise cx.error(f"Slice with step {int(st)}: planc slices forwards")
        size = x.type.shape[d]
        lo, hi, st = slice(int(max(min(s, 2 ** 62), -2 ** 62)), int(max(min(e, 2 ** 62), -2 ** 62)), int(st)).indices(size)
        hi = max(lo, hi)
        if (lo, hi, st) != (0, size, 1):
            x = cx.emit("slice", [x], {"dim": d, "start": lo, "end": hi, "step": st})
    return x


@onnx_op("Gather", OP.gather)
def _gather(cx, n, xs):
    x, idx = xs
    d = cx.axis(int(attrs(n).get("axis", 0)), cx.rank(x))
    if isinstance(idx, Known):
        size = cx.shape(x)[d]
        bad = idx.array[(idx.array < -size) | (idx.array >= size)]
        if bad.size:
            raise cx.error(f"index {int(bad.reshape(-1)[0])} is out of range for axis {d} of size {size}")
        idx = Known(idx.array.astype(np.int64))
    return cx.emit("gather", [x, idx], {"dim": d})


@onnx_op("Expand", OP.expand, OP.reshape)
def _expand(cx, n, xs):
    x = cx.value(xs[0])
    shape = tuple(int(s) for s in cx.known(xs[1], "Expand's shape").reshape(-1))
    r = max(len(shape), x.type.rank)
    src = (1,) * (r - x.type.rank) + x.type.shape
    want = (1,) * (r - len(shape)) + shape
    out = tuple(max(a, b) for a, b in zip(src, want))
    if src != x.type.shape:
        x = cx.emit("reshape", [x], {"shape": src})
    return x if out == src else cx.emit("expand", [x], {"shape": out})


@onnx_op("Pad", OP.pad)
def _pad(cx, n, xs):
    a = attrs(n)
    if a.get("mode", "constant") != "constant":
        raise cx.error(f"pad mode {a['mode']!r}: planc pads with a constant")
    x = cx.value(xs[0])
    r = x.type.rank
    p = [int(v) for v in cx.known(xs[1], "Pad's pads").reshape(-1)]
    value = 0.0
    if len(xs) > 2 and xs[2] is not None:
        value = float(cx.known(xs[2], "Pad's constant_value").reshape(-1)[0])
    axes = list(range(r))
    if len(xs) > 3 and xs[3] is not None:
        axes = [cx.axis(int(v), r) for v in cx.known(xs[3], "Pad's axes").reshape(-1)]
    k = len(axes)
    begin, end = dict(zip(axes, p[:k])), dict(zip(axes, p[k:]))
    if min(p, default=0) < 0:
        raise cx.error(f"negative pads {p} (cropping) are not supported")
    last = max([ax for ax in axes if begin[ax] or end[ax]], default=None)
    if last is None:
        return x
    first = min(ax for ax in axes if begin[ax] or end[ax])
    pads = []
    for ax in range(r - 1, first - 1, -1):  # F.pad's order: last dim first
        pads += [begin.get(ax, 0), end.get(ax, 0)]
    return cx.emit("pad", [x], {"pads": tuple(pads), "value": value})


@onnx_op("Resize", OP.unsqueeze, OP.expand, OP.reshape, since=13)
def _resize(cx, n, xs):
    """Nearest-neighbour upsampling by whole factors: each element repeated, which is
    unsqueeze, expand and reshape on shares (no arithmetic)."""
    a = attrs(n)
    if a.get("mode", "nearest") != "nearest":
        raise cx.error(f"Resize mode {a['mode']!r}: planc resizes by nearest neighbour")
    x = cx.value(xs[0])
    shape = x.type.shape
    if len(xs) > 3 and xs[3] is not None:
        sizes = [int(v) for v in cx.known(xs[3], "Resize's sizes").reshape(-1)]
        factors = [s / o for s, o in zip(sizes, shape)]
    elif len(xs) > 2 and xs[2] is not None:
        factors = [float(v) for v in cx.known(xs[2], "Resize's scales").reshape(-1)]
    else:
        raise cx.error("Resize without scales or sizes")
    if any(f < 1 or f != int(f) for f in factors):
        raise cx.error(f"Resize by {factors}: planc upsamples by whole factors")
    out = x
    for d in reversed(range(len(shape))):
        f = int(factors[d])
        if f == 1:
            continue
        cur = out.type.shape
        out = cx.emit("unsqueeze", [out], {"dim": d + 1})
        out = cx.emit("expand", [out], {"shape": cur[:d + 1] + (f,) + cur[d + 1:]})
        out = cx.emit("reshape", [out], {"shape": cur[:d] + (cur[d] * f,) + cur[d + 1:]})
    return out

