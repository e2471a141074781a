"""Shapes, indexing and plumbing: torch to IR."""
from __future__ import annotations

import builtins
import operator

import torch
import torch.nn.functional as F

from planc.ir.graph import Value
from planc.ir.ops import OP

from ..errors import TraceError, user_loc
from .base import lowers, norm_dim, norm_dims, rank, resolve_shape, shape_args


# ------------------------------------------------------------------ shapes


@lowers(OP.reshape, torch.reshape, "reshape", "view")
def _reshape(cx, x, *shape):
    shape = resolve_shape(shape_args(shape), x.type.numel)
    if shape == x.type.shape:
        return x
    return cx.emit("reshape", [x], {"shape": shape})


@lowers(OP.flatten, torch.flatten, "flatten")
def _flatten(cx, x, start_dim=0, end_dim=-1):
    r = rank(x)
    return cx.emit("flatten", [x], {"start": norm_dim(start_dim, r), "end": norm_dim(end_dim, r)})


@lowers(OP.transpose, torch.transpose, "transpose", torch.swapaxes, "swapaxes")
def _transpose(cx, x, dim0, dim1):
    r = rank(x)
    return cx.emit("transpose", [x], {"dim0": norm_dim(dim0, r), "dim1": norm_dim(dim1, r)})


@lowers(OP.transpose, torch.t, "t")
def _t(cx, x):
    if rank(x) < 2:
        return x
    return cx.emit("transpose", [x], {"dim0": 0, "dim1": 1})


@lowers(OP.permute, torch.permute, "permute")
def _permute(cx, x, *dims):
    dims = shape_args(dims)
    return cx.emit("permute", [x], {"dims": tuple(norm_dim(d, rank(x)) for d in dims)})


@lowers(OP.permute, OP.transpose, builtins.getattr)
def _getattr(cx, x, name):
    if name in ("T", "mT") and isinstance(x, Value):
        r = rank(x)
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
    return cx.emit("cat", tensors, {"dim": norm_dim(dim, rank(tensors[0]))})


@lowers(OP.stack, torch.stack)
def _stack(cx, tensors, dim=0):
    tensors = list(tensors)
    return cx.emit("stack", tensors, {"dim": norm_dim(dim, rank(tensors[0]) + 1)})


@lowers(OP.pad, F.pad)
def _pad(cx, x, pad, mode="constant", value=None):
    if mode != "constant":
        raise TraceError(f"pad mode {mode!r} is not supported; use mode='constant'", user_loc())
    return cx.emit("pad", [x], {"pads": tuple(int(p) for p in pad), "value": float(value or 0.0)})


@lowers(OP.squeeze, torch.squeeze, "squeeze")
def _squeeze(cx, x, dim=None):
    dims = () if dim is None else norm_dims(dim, rank(x))
    if dims:
        dims = tuple(d for d in dims if x.type.shape[d] == 1)  # torch ignores non-1 dims
        if not dims:
            return x
    return cx.emit("squeeze", [x], {"dims": dims})


@lowers(OP.unsqueeze, torch.unsqueeze, "unsqueeze")
def _unsqueeze(cx, x, dim):
    return cx.emit("unsqueeze", [x], {"dim": norm_dim(dim, rank(x) + 1)})


@lowers(OP.expand, "expand")
def _expand(cx, x, *shape):
    shape = list(shape_args(shape))
    off = len(shape) - rank(x)
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
        idx = idx[:k] + (slice(None),) * (rank(x) - n_real) + idx[k + 1:]
    if n_real > rank(x):
        raise TraceError(f"too many indices for a tensor of rank {rank(x)}", user_loc())
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


@lowers(OP.gather, F.embedding)
def _embedding(cx, input, weight, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
               sparse=False):
    if max_norm is not None:
        raise TraceError("F.embedding with max_norm renormalises the table in place; it is not supported",
                         user_loc())
    if not isinstance(input, Value) or not isinstance(weight, Value):
        raise TraceError("F.embedding takes a tensor of indices and a table", user_loc())
    if weight.type.rank != 2:
        raise TraceError(f"F.embedding's table must be 2-d, got {list(weight.type.shape)}", user_loc())
    return cx.emit("gather", [weight, input], {"dim": 0})


@lowers(OP.gather, torch.index_select, "index_select")
def _index_select(cx, x, dim, index):
    if not isinstance(index, Value):
        raise TraceError("index_select takes a tensor of indices", user_loc())
    if index.type.rank != 1:
        raise TraceError(f"index_select takes a 1-d index, got {list(index.type.shape)}", user_loc())
    return cx.emit("gather", [x, index], {"dim": norm_dim(dim, rank(x))})


@lowers("cpu")
def _cpu(cx, x):
    return x


@lowers("float")
def _float_method(cx, x, *a, **k):
    if x.type.dtype != "f32":
        raise TraceError(f"casting {x.type.dtype} to f32 is not supported; load the data as float32", user_loc())
    return x
