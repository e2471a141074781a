"""The lowering table and its helpers: how a torch call becomes IR (see __init__)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from planc.ir import ops
from planc.ir.graph import Value
from planc.ir.ops import OP
from planc.ir.types import PUBLIC, TensorType

from ..errors import TraceError, user_loc

LOWER: dict = {}

# torch functions planc does not lower, and what to write instead; `instead` names the
# op the user is pointed to (listed by `planc ops NAME`), or None when no op fits
SUGGEST: dict[str, tuple] = {}


def unsupported(instead, hint: str, *names: str):
    for n in names:
        SUGGEST[n] = (instead, hint)


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


def value_of(cx, x, like=None) -> Value:
    if isinstance(x, Value):
        return x
    return cx.scalar(x, like)


def both(cx, x, y):
    like = x if isinstance(x, Value) else y if isinstance(y, Value) else None
    return value_of(cx, x, like), value_of(cx, y, like)


def rank(x: Value) -> int:
    return x.type.rank


def norm_dim(d: int, rank: int) -> int:
    """Normalise a possibly negative dim."""
    if not -max(rank, 1) <= d < max(rank, 1):
        raise TraceError(f"dim {d} out of range for a tensor of rank {rank}", user_loc())
    return d % max(rank, 1)


def norm_dims(d, rank):
    if d is None:
        return None
    if isinstance(d, int):
        d = (d,)
    return tuple(sorted(norm_dim(i, rank) for i in d))


def pair(v):
    if isinstance(v, int):
        return (v, v)
    v = tuple(v)
    return v * 2 if len(v) == 1 else v


def shape_args(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
        shape = tuple(shape[0])
    return tuple(int(s) for s in shape)


def resolve_shape(shape, numel):
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


def const_like(cx, value: float, shape, dtype) -> Value:
    c = cx.b.emit("const", (), {"value": float(value)}, types=[TensorType(dtype, (), PUBLIC)],
                  name="c", loc=user_loc())
    if tuple(shape) == ():
        return c
    return cx.emit("expand", [c], {"shape": tuple(shape)})


