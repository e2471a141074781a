"""Type rules: result dtype, shape and visibility of each op from its operands' types
and its attributes. Each rule is given to the op's declaration in ``ops.py``.

Visibility rule for computing ops: the result is ``join`` of the operands. When that
join is ``secret`` every non-public operand must already be secret: the move from
plaintext to shares is an explicit ``share`` node — except for ops with the ``product``
trait, whose protocols take a party's plaintext operand directly and need less traffic
than for a shared one.
"""
from __future__ import annotations

from .opdef import MixesSecret, TypeRuleError
from .types import FLOAT_DTYPES, PUBLIC, SECRET, TensorType, Vis, join, private, promote




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
        _err("needs operands of rank >= 1")
    xs, ws = list(x.shape), list(w.shape)
    xv = len(xs) == 1
    wv = len(ws) == 1
    if xv:
        xs = [1] + xs
    if wv:
        ws = ws + [1]
    if xs[-1] != ws[-2]:
        _err(f"inner dimensions differ: {list(x.shape)} @ {list(w.shape)}")
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
        _err(f"input {list(x.shape)} does not fit weight {list(w.shape)}")
    if len(types) == 3 and types[2].shape != (w.shape[0],):
        _err(f"bias {list(types[2].shape)} should be [{w.shape[0]}]")
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
        _err(f"expects input [N,C,H,W] and weight [O,C/g,kh,kw], got {list(x.shape)} and {list(w.shape)}")
    g = a["groups"]
    if g < 1 or x.shape[1] != w.shape[1] * g or w.shape[0] % g:
        _err(f"weight is {w} but input has {x.shape[1]} channels (groups={g})")
    if len(types) == 3 and types[2].shape != (w.shape[0],):
        _err(f"bias {list(types[2].shape)} should be [{w.shape[0]}]")
    s, p, d = _pair(a["stride"], "stride"), _pair(a["padding"], "padding"), _pair(a["dilation"], "dilation")
    if min(s) < 1 or min(d) < 1 or min(p) < 0:
        _err("stride and dilation must be >= 1, padding >= 0")
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
            _err(f"per-channel operand {list(t.shape)} should be [{x.shape[1]}]")
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
        _err(f"condition must be bool, got {types[0]}")
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
        _err(f"start {s} after end {e}")
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
        _err(f"{list(p)} is not a permutation of {x.rank} dims")
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
            _err(f"shapes {list(x.shape)} and {list(t.shape)} differ outside dim {d}")
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
            _err(f"shapes {list(x.shape)} and {list(t.shape)} differ")
    return [TensorType(dt, x.shape[:d] + (len(types),) + x.shape[d:], _vis(types))]


def _pad(types, a):
    x = types[0]
    p = a["pads"]
    if len(p) % 2 or len(p) // 2 > x.rank or min(p, default=0) < 0:
        _err(f"{list(p)} needs non-negative (left, right) pairs for the last dims")
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
            _err(f"dim {d} has size {x.shape[d]}, not 1")
    return [TensorType(x.dtype, tuple(s for i, s in enumerate(x.shape) if i not in dims), _vis(types))]


def _unsqueeze(types, a):
    x = types[0]
    d = _dim(a["dim"], x.rank + 1)
    return [TensorType(x.dtype, x.shape[:d] + (1,) + x.shape[d:], _vis(types))]


def _expand(types, a):
    x = types[0]
    shape = a["shape"]
    if len(shape) < x.rank:
        _err(f"{list(shape)} has fewer dims than {list(x.shape)}")
    for i, s in enumerate(x.shape):
        t = shape[len(shape) - x.rank + i]
        if s != 1 and s != t:
            _err(f"cannot expand {list(x.shape)} to {list(shape)}")
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


def _product(types, a):
    shape = broadcast(*(t.shape for t in types))
    return [TensorType(promote(types[0].dtype, types[1].dtype), shape, _vis(types, mixed=True))]




def _layer_norm(types, a):
    x = types[0]
    _float(x)
    n = a["dims"]
    if not 1 <= n <= x.rank:
        _err(f"normalises the last {n} dims of a tensor of rank {x.rank}")
    for i, t in enumerate(types[1:], 1):
        if t.shape != x.shape[x.rank - n:]:
            _err(f"{'weight' if i == 1 else 'bias'} {list(t.shape)} should be {list(x.shape[x.rank - n:])}")
    if a["eps"] < 0:
        _err(f"eps {a['eps']} is negative")
    return [x.with_vis(_vis(types))]


GELU_FORMS = ("none", "tanh")


def _gelu(types, a):
    if a["approximate"] not in GELU_FORMS:
        _err(f"approximate={a['approximate']!r}; it is one of {', '.join(GELU_FORMS)}")
    return _unary_float(types, a)


def _gather(types, a):
    x, idx = types
    if idx.dtype not in ("i64", "i32"):
        _err(f"index must be an integer tensor, got {idx}")
    if x.rank == 0:
        _err("gather from a 0-d tensor")
    d = _dim(a["dim"], x.rank)
    shape = x.shape[:d] + idx.shape + x.shape[d + 1:]
    # like a product: the index's owner takes part with its plaintext one-hot rows
    return [TensorType(x.dtype, shape, _vis(types, mixed=True))]
