"""Plaintext semantics of every computing op: one rule per op, registered against its
definition (``@register("reference", OP.x)``), used by the reference interpreter, by
the parties for public and private values, and by constant folding.

Semantics are exactly torch's, with one deliberate difference: operands are first cast
to the dtype the IR gives, so f32 + f64[] is computed in f64 as the IR says, not in f32
as torch's 0-d promotion would.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.nn.functional as F

from planc.ir import ops
from planc.ir.ops import OP, register
from planc.ir.graph import Node
from planc.ir.types import promote

from .dtypes import TORCH_DTYPE

Rule = Callable[[Node, list, dict], list]


# ---------------------------------------------------------------- dtype helpers


def _result_dtype(node: Node) -> torch.dtype:
    return TORCH_DTYPE[node.results[0].type.dtype]


def _operand_dtype(node: Node) -> torch.dtype:
    """The IR's promotion of the operands' dtypes (torch's differs for 0-d tensors)."""
    dt = node.operands[0].type.dtype
    for v in node.operands[1:]:
        dt = promote(dt, v.type.dtype)
    return TORCH_DTYPE[dt]


def _to(args, dtype):
    return [a.to(dtype) for a in args]


# ---------------------------------------------------------------- rule makers

# Operands of arithmetic are cast to the result dtype first, so that f32 + f64[] is
# computed in f64 as the IR says, not in f32 as torch's 0-d promotion would.


def _arith(fn) -> Rule:
    def rule(node, args, a):
        return [fn(*_to(args, _result_dtype(node)))]

    return rule


def _compare(fn) -> Rule:
    def rule(node, args, a):
        return [fn(*_to(args, _operand_dtype(node)))]

    return rule


def _unary(fn) -> Rule:
    def rule(node, args, a):
        return [fn(args[0])]

    return rule


def _identity(node, args, a):
    return [args[0]]


def _bias(args):
    return args[2] if len(args) > 2 else None


# ---------------------------------------------------------------- rules


def _linear(node, args, a):
    args = _to(args, _result_dtype(node))
    return [F.linear(args[0], args[1], _bias(args))]


def _conv2d(node, args, a):
    args = _to(args, _result_dtype(node))
    return [F.conv2d(args[0], args[1], _bias(args), stride=a["stride"], padding=a["padding"],
                     dilation=a["dilation"], groups=a["groups"])]


def _avg_pool2d(node, args, a):
    return [F.avg_pool2d(args[0], a["kernel"], a["stride"], a["padding"], ceil_mode=a["ceil_mode"],
                         count_include_pad=a["count_include_pad"])]


def _max_pool2d(node, args, a):
    return [F.max_pool2d(args[0], a["kernel"], a["stride"], a["padding"], dilation=a["dilation"],
                         ceil_mode=a["ceil_mode"])]


def _adaptive_avg_pool2d(node, args, a):
    return [F.adaptive_avg_pool2d(args[0], a["output"])]


def _batch_norm(node, args, a):
    x, mean, var, weight, bias = _to(args, _result_dtype(node))
    return [F.batch_norm(x, mean, var, weight, bias, training=False, eps=a["eps"])]


def _layer_norm(node, args, a):
    args = _to(args, _result_dtype(node))
    x = args[0]
    w = args[1] if len(args) > 1 else None
    b = args[2] if len(args) > 2 else None
    return [F.layer_norm(x, x.shape[x.dim() - a["dims"]:], w, b, a["eps"])]


def _gelu(node, args, a):
    return [F.gelu(args[0], approximate=a["approximate"])]


def gather_plain(x: torch.Tensor, index: torch.Tensor, dim: int) -> torch.Tensor:
    """ONNX Gather / numpy take along `dim`: negative indices count from the end, any
    index outside [-size, size) is an error naming it."""
    size = x.shape[dim]
    idx = index.to(torch.int64)
    if idx.numel() and (idx.min() < -size or idx.max() >= size):
        bad = idx[(idx < -size) | (idx >= size)][0].item()
        raise IndexError(f"gather index {bad} is out of range for dim {dim} of size {size}")
    flat = x.index_select(dim, (idx % max(size, 1)).reshape(-1))
    return flat.reshape(x.shape[:dim] + idx.shape + x.shape[dim + 1:])


def _gather(node, args, a):
    return [gather_plain(args[0], args[1], a["dim"])]


def _softmax(node, args, a):
    return [F.softmax(args[0], dim=a["dim"])]


def _log_softmax(node, args, a):
    return [F.log_softmax(args[0], dim=a["dim"])]


def _reduce(fn) -> Rule:
    def rule(node, args, a):
        dims = a["dim"]
        if dims == ():
            # the IR reduces over no dims here; torch would read () as "all dims"
            return [args[0]]
        return [fn(args[0], dim=dims, keepdim=a["keepdim"])]

    return rule


def _max(node, args, a):
    x, d = args[0], a["dim"]
    if d is None:
        return [x.max()]  # the IR ignores keepdim without a dim
    return [torch.max(x, d, keepdim=a["keepdim"]).values]


def _argmax(node, args, a):
    x, d = args[0], a["dim"]
    if d is None:
        return [torch.argmax(x)]
    return [torch.argmax(x, d, keepdim=a["keepdim"])]


def _where(node, args, a):
    cond, x, y = args
    x, y = _to((x, y), _result_dtype(node))
    return [torch.where(cond.to(torch.bool), x, y)]


def _reshape(node, args, a):
    return [args[0].reshape(a["shape"])]


def _flatten(node, args, a):
    return [torch.flatten(args[0], a["start"], a["end"])]


def _transpose(node, args, a):
    return [args[0].transpose(a["dim0"], a["dim1"])]


def _permute(node, args, a):
    return [args[0].permute(a["dims"])]


def _slice(node, args, a):
    at = (slice(None),) * a["dim"] + (slice(a["start"], a["end"], a["step"]),)
    return [args[0][at]]


def _index(node, args, a):
    return [args[0].select(a["dim"], a["index"])]


def _cat(node, args, a):
    return [torch.cat(_to(args, _result_dtype(node)), dim=a["dim"])]


def _stack(node, args, a):
    return [torch.stack(_to(args, _result_dtype(node)), dim=a["dim"])]


def _pad(node, args, a):
    return [F.pad(args[0], a["pads"], mode="constant", value=a["value"])]


def _squeeze(node, args, a):
    dims = a["dims"]
    # empty dims means every size-1 dim; torch's squeeze(x, ()) would squeeze none
    return [args[0].squeeze(dims) if dims else args[0].squeeze()]


def _unsqueeze(node, args, a):
    return [args[0].unsqueeze(a["dim"])]


def _expand(node, args, a):
    return [args[0].expand(a["shape"])]


# every computing op's rule, registered against its definition
register("reference", OP.share)(_identity)
register("reference", OP.reveal)(_identity)
register("reference", OP.add)(_arith(torch.add))
register("reference", OP.sub)(_arith(torch.sub))
register("reference", OP.mul)(_arith(torch.mul))
register("reference", OP.div)(_arith(torch.div))
register("reference", OP.neg)(_unary(torch.neg))
register("reference", OP.matmul)(_arith(torch.matmul))
register("reference", OP.linear)(_linear)
register("reference", OP.conv2d)(_conv2d)
register("reference", OP.avg_pool2d)(_avg_pool2d)
register("reference", OP.max_pool2d)(_max_pool2d)
register("reference", OP.adaptive_avg_pool2d)(_adaptive_avg_pool2d)
register("reference", OP.batch_norm)(_batch_norm)
register("reference", OP.layer_norm)(_layer_norm)
register("reference", OP.gelu)(_gelu)
register("reference", OP.gather)(_gather)
register("reference", OP.softmax)(_softmax)
register("reference", OP.log_softmax)(_log_softmax)
register("reference", OP.sum_)(_reduce(torch.sum))
register("reference", OP.mean)(_reduce(torch.mean))
register("reference", OP.max_)(_max)
register("reference", OP.argmax)(_argmax)
register("reference", OP.gt)(_compare(torch.gt))
register("reference", OP.lt)(_compare(torch.lt))
register("reference", OP.ge)(_compare(torch.ge))
register("reference", OP.le)(_compare(torch.le))
register("reference", OP.eq)(_compare(torch.eq))
register("reference", OP.where)(_where)
register("reference", OP.reshape)(_reshape)
register("reference", OP.flatten)(_flatten)
register("reference", OP.transpose)(_transpose)
register("reference", OP.permute)(_permute)
register("reference", OP.slice_)(_slice)
register("reference", OP.index_)(_index)
register("reference", OP.cat)(_cat)
register("reference", OP.stack)(_stack)
register("reference", OP.pad)(_pad)
register("reference", OP.squeeze)(_squeeze)
register("reference", OP.unsqueeze)(_unsqueeze)
register("reference", OP.expand)(_expand)

# plain elementwise ops: torch's function of the same name
for _d in ops.REGISTRY.values():
    if _d.torch_fn and _d.rule("reference") is None:
        register("reference", _d, where=ops.call_site(0))(_unary(getattr(torch, _d.torch_fn)))

ops.check("reference")

# views for callers that look rules up by op name (derived from the registrations)
RULES: Mapping[str, Rule] = {d.name: d.rule("reference") for d in ops.REGISTRY.values() if d.rule("reference")}
SOURCES = tuple(d.name for d in ops.REGISTRY.values() if d.source)
STRUCTURE = tuple(d.name for d in ops.REGISTRY.values() if d.structural)


