"""Emitting gradient IR: a thin layer over the tracer's Builder that shares private
operands where they meet secret ones (as the tracer does), names every node after the
forward node it differentiates (its `file:line`), and offers the few composite moves
gradient rules share (unbroadcasting, zero extension, dilation, constants)."""
from __future__ import annotations

import torch

from planc.ir import ops
from planc.ir.graph import Loc, Value
from planc.ir.opdef import register
from planc.ir.types import FLOAT_DTYPES, PUBLIC, TensorType

from ..errors import TraceError


def vjp(*defs):
    """Decorator: ``@vjp(OP.mul)`` registers the vector-Jacobian rule of each op in `defs`.

    A rule is ``fn(e, node, cts) -> [cotangent or None per operand]``: `e` an Emitter,
    `node` the forward node, `cts` the cotangent of each result (None: zero). A `loop`'s
    rule answers for its operands, then for the outer values its body reads (`free_values`)."""
    return register("vjp", *defs, where=ops.call_site(1))


def is_float(v: Value) -> bool:
    return v.type.dtype in FLOAT_DTYPES


class Emitter:
    def __init__(self, cx, active: set[str]):
        self.cx = cx
        self.b = cx.b
        self.active = active
        self.loc: Loc | None = None
        self.what = ""

    def at(self, node) -> "Emitter":
        self.loc, self.what = node.loc, node.op
        return self

    def needs(self, v: Value) -> bool:
        """Does operand `v` want a gradient (it depends on what is differentiated)?"""
        return v.name in self.active and is_float(v)

    # ---- nodes
    def op(self, name: str, *xs: Value, **attrs) -> Value:
        operands = list(xs)
        if not ops.get(name).product:
            operands = self.cx.share_if_needed(operands)
        try:
            return self.b.emit(name, operands, attrs, loc=self.loc, name="d" + self.what if self.what else "g")
        except ops.TypeRuleError as e:
            raise TraceError(f"gradient of {self.what}: {e}", self.loc) from None

    def const(self, value: float, like: Value | str = "f32", shape=()) -> Value:
        dt = like if isinstance(like, str) else like.type.dtype
        dt = dt if dt in FLOAT_DTYPES else "f32"
        c = self.b.emit("const", (), {"value": float(value)}, types=[TensorType(dt, (), PUBLIC)], name="c",
                        loc=self.loc)
        return c if tuple(shape) == () else self.op("expand", c, shape=tuple(shape))

    def tensor(self, t: torch.Tensor, hint: str, fresh: bool = False) -> Value:
        """A public tensor known while tracing (an index, a mask), as a named constant
        (one per value, unless `fresh`: where it must be defined after this point)."""
        if fresh:
            return self.cx.capture(t, hint)
        memo = self.cx.__dict__.setdefault("_autodiff_consts", {})
        key = (hint, str(t.dtype), tuple(t.shape), tuple(t.reshape(-1).tolist()))
        if key not in memo:
            memo[key] = self.cx.capture(t, hint)
        return memo[key]

    def zeros(self, v: Value) -> Value:
        return self.const(0.0, v, v.type.shape)

    # ---- arithmetic with None as zero
    def add(self, a, b):
        if a is None:
            return b
        if b is None:
            return a
        return self.op("add", a, b)

    def mul(self, a, b):
        return self.op("mul", a, b)

    def sub(self, a, b):
        return self.op("sub", a, b)

    def neg(self, a):
        return self.op("neg", a)

    def scale(self, a, c: float):
        return self.op("mul", a, self.const(c, a))

    def divide(self, a, b):
        """a / b; by a non-public b as a * reciprocal(b) (a secret divides only by a public)."""
        if b.type.vis.is_public:
            return self.op("div", a, b)
        return self.op("mul", a, self.op("reciprocal", b))

    # ---- shapes
    def reshape(self, x, shape):
        shape = tuple(shape)
        return x if x.type.shape == shape else self.op("reshape", x, shape=shape)

    def sum(self, x, dims, keepdim=False):
        dims = tuple(dims)
        if not dims:
            return x
        return self.op("sum", x, dim=dims, keepdim=keepdim)

    def unbroadcast(self, g, like: Value):
        """`g` summed down to `like`'s shape (the transpose of broadcasting)."""
        if g is None:
            return None
        shape = like.type.shape
        lead = g.type.rank - len(shape)
        g = self.sum(g, range(lead))
        ones = tuple(i for i, s in enumerate(shape) if s == 1 and g.type.shape[i] != 1)
        g = self.sum(g, ones, keepdim=True)
        return self.reshape(g, shape)

    def expand_to(self, g, shape):
        shape = tuple(shape)
        return g if g.type.shape == shape else self.op("expand", g, shape=shape)

    def zero_extend(self, x, dim: int, left: int, right: int):
        """`x` with `left`/`right` zeros added along `dim` (negative: that many cut off)."""
        n = x.type.shape[dim]
        lo, hi = max(0, -left), n - max(0, -right)
        if (lo, hi) != (0, n):
            x = self.op("slice", x, dim=dim, start=lo, end=max(lo, hi))
        parts = []
        for k in (left, None, right):
            if k is None:
                parts.append(x)
            elif k > 0:
                s = list(x.type.shape)
                s[dim] = k
                parts.append(self.const(0.0, x, s))
        return parts[0] if len(parts) == 1 else self.op("cat", *parts, dim=dim)

    def dilate(self, x, dim: int, s: int):
        """`s - 1` zeros between neighbours along `dim` (the transpose of a strided slice)."""
        n = x.type.shape[dim]
        if s == 1 or n <= 1:
            return x
        u = self.op("unsqueeze", x, dim=dim + 1)
        u = self.zero_extend(u, dim + 1, 0, s - 1)
        shape = list(x.type.shape)
        shape[dim] = n * s
        u = self.reshape(u, shape)
        return self.op("slice", u, dim=dim, start=0, end=(n - 1) * s + 1)
