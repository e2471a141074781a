"""The plaintext reference interpreter against direct torch, op by op, plus loops,
error messages and value freeing."""
from __future__ import annotations

import os
import re

import hypothesis.extra.numpy as hnp
import pytest
import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from planc.ir import ops
from planc.ir.builder import Builder
from planc.ir.graph import Graph, Loc, Node, Value
from planc.ir.types import PUBLIC, SECRET, TORCH_TO_IR, TensorType, private
from planc.ir.verify import verify
from planc.runtime.errors import DataError, PlanRuntimeError
from planc.runtime.reference import (
    RULES, SOURCES, STRUCTURE, TORCH_DTYPE, run_reference, run_reference_by_party,
)

# kept small for a 2-core machine; raise it to search harder (REFERENCE_EXAMPLES=500)
FEW = settings(max_examples=int(os.environ.get("REFERENCE_EXAMPLES", "25")), deadline=None)
LOC = Loc("examples/x.py", 14)


# ---------------------------------------------------------------- helpers


def ty(t: torch.Tensor, vis=PUBLIC) -> TensorType:
    return TensorType(TORCH_TO_IR[str(t.dtype)], tuple(t.shape), vis)


def one_op(op, tensors, attrs=None) -> Graph:
    """A verified plan: every tensor an input, then `op` on them."""
    b = Builder("t", ["alice", "bob"])
    args = [b.emit("input", attrs={"index": k}, types=[ty(t)]) for k, t in enumerate(tensors)]
    out = b.emit(op, args, attrs or {}, loc=LOC)
    return verify(b.finish([out]))


def check(op, tensors, want, attrs=None):
    """run_reference of `op` equals `want` (torch's answer) in the IR's result dtype."""
    g = one_op(op, tensors, attrs)
    (got,) = run_reference(g, inputs=tensors)
    declared = g.outputs[0].type
    assert got.dtype == TORCH_DTYPE[declared.dtype]
    assert tuple(got.shape) == declared.shape
    torch.testing.assert_close(got, want.to(got.dtype), rtol=1e-6, atol=1e-6, equal_nan=True)


def randn(shape, seed, dtype="f32"):
    g = torch.Generator().manual_seed(seed)
    if dtype in ("i64", "i32"):
        return torch.randint(-4, 5, tuple(shape), generator=g, dtype=TORCH_DTYPE[dtype])
    if dtype == "bool":
        return torch.randint(0, 2, tuple(shape), generator=g).bool()
    # drawn in f32 so that f32 and f64 operands compare the same whoever promotes
    return torch.randn(tuple(shape), generator=g).to(TORCH_DTYPE[dtype])


def positive(shape, seed):
    return randn(shape, seed).abs() + 0.1


seeds = st.integers(0, 2**16)
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)
TESTED: set[str] = set()  # ops exercised below; the last test checks none is forgotten


def covers(*names):
    TESTED.update(names)


# ---------------------------------------------------------------- elementwise

covers("add", "sub", "mul", "div", "gt", "lt", "ge", "le", "eq")
BINARY = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div,
          "gt": torch.gt, "lt": torch.lt, "ge": torch.ge, "le": torch.le, "eq": torch.eq}
DTYPE_PAIRS = [("f32", "f32"), ("f32", "f64"), ("i64", "f32"), ("i64", "i64"), ("i32", "i64"), ("f64", "i32")]


@FEW
@given(op=st.sampled_from(sorted(BINARY)), sh=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=4),
       dts=st.sampled_from(DTYPE_PAIRS), seed=seeds)
def test_binary_broadcast(op, sh, dts, seed):
    x = randn(sh.input_shapes[0], seed, dts[0])
    y = randn(sh.input_shapes[1], seed + 1, dts[1])
    if op == "div":
        y = torch.where(y == 0, torch.ones_like(y), y)
    check(op, [x, y], BINARY[op](x, y))


def test_arith_computes_in_the_ir_dtype():
    # torch would add a 0-d f64 to an f32 tensor in f32; the IR says f64
    x = torch.full((3,), 1.0)
    y = torch.tensor(1e-9, dtype=torch.float64)
    (got,) = run_reference(one_op("add", [x, y]), inputs=[x, y])
    assert got.dtype == torch.float64
    assert torch.equal(got, x.double() + y)


def test_integer_division_is_true_division():
    x, y = torch.tensor([7, -7]), torch.tensor([2, 2])
    check("div", [x, y], torch.tensor([3.5, -3.5]))


covers("neg", "relu", "sigmoid", "tanh", "exp", "log", "reciprocal", "sqrt", "rsqrt")
UNARY = {"neg": torch.neg, "relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
         "exp": torch.exp, "log": torch.log, "reciprocal": torch.reciprocal, "sqrt": torch.sqrt,
         "rsqrt": torch.rsqrt}


@FEW
@given(op=st.sampled_from(sorted(UNARY)), shape=shapes, dt=st.sampled_from(["f32", "f64"]), seed=seeds)
def test_unary(op, shape, dt, seed):
    x = randn(shape, seed, dt)
    if op in ("log", "reciprocal", "sqrt", "rsqrt"):
        x = x.abs() + 0.1
    check(op, [x], UNARY[op](x))


def test_relu_and_neg_of_integers():
    x = torch.tensor([-3, 0, 5])
    check("relu", [x], torch.relu(x))
    check("neg", [x], -x)


covers("softmax", "log_softmax")


@FEW
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=4), data=st.data(), seed=seeds,
       log=st.booleans())
def test_softmax(shape, data, seed, log):
    dim = data.draw(st.integers(0, len(shape) - 1))
    x = randn(shape, seed) * 5
    fn = F.log_softmax if log else F.softmax
    check("log_softmax" if log else "softmax", [x], fn(x, dim=dim), {"dim": dim})


covers("where")


@FEW
@given(sh=hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=3), seed=seeds,
       dts=st.sampled_from(DTYPE_PAIRS))
def test_where(sh, seed, dts):
    c = randn(sh.input_shapes[0], seed, "bool")
    x = randn(sh.input_shapes[1], seed + 1, dts[0])
    y = randn(sh.input_shapes[2], seed + 2, dts[1])
    check("where", [c, x, y], torch.where(c, x, y))


# ---------------------------------------------------------------- reductions

covers("sum", "mean")


@FEW
@given(shape=shapes, data=st.data(), keepdim=st.booleans(), seed=seeds, mean=st.booleans())
def test_sum_mean(shape, data, keepdim, seed, mean):
    x = randn(shape, seed)
    dims = data.draw(st.none() | st.lists(st.integers(0, max(len(shape) - 1, 0)), min_size=1, unique=True)
                     .map(tuple))
    if dims is not None and not shape:
        dims = None
    fn = torch.mean if mean else torch.sum
    want = fn(x, dim=dims, keepdim=keepdim)
    check("mean" if mean else "sum", [x], want, {"dim": dims, "keepdim": keepdim})


def test_sum_of_integers_keeps_the_ir_dtype():
    x = torch.arange(6, dtype=torch.int32).reshape(2, 3)
    check("sum", [x], x.sum(dim=1), {"dim": (1,)})  # torch would give i64; the IR says i32


def test_sum_over_no_dims_is_identity():
    # the IR reduces nothing for dim=(); torch would read () as every dim
    x = randn((2, 3), 0)
    check("sum", [x], x, {"dim": ()})


covers("max", "argmax")


@FEW
@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4), data=st.data(), keepdim=st.booleans(),
       seed=seeds, arg=st.booleans())
def test_max_argmax(shape, data, keepdim, seed, arg):
    x = randn(shape, seed)
    dim = data.draw(st.none() | st.integers(0, max(len(shape) - 1, 0)))
    if dim is None:
        want = x.argmax() if arg else x.max()
    else:
        want = torch.argmax(x, dim, keepdim) if arg else torch.max(x, dim, keepdim).values
    check("argmax" if arg else "max", [x], want, {"dim": dim, "keepdim": keepdim})


# ---------------------------------------------------------------- linear algebra

covers("matmul")


@pytest.mark.parametrize("xs,ws", [((3,), (3,)), ((3,), (3, 4)), ((2, 3), (3,)), ((2, 3), (3, 4)),
                                   ((2, 1, 3, 4), (5, 4, 2)), ((4, 2, 3), (3, 2))])
def test_matmul(xs, ws):
    x, w = randn(xs, 1), randn(ws, 2)
    check("matmul", [x, w], x @ w)


def test_matmul_of_integers():
    x, w = torch.arange(6).reshape(2, 3), torch.arange(6).reshape(3, 2)
    check("matmul", [x, w], x @ w)


covers("linear")


@pytest.mark.parametrize("xs", [(4,), (2, 4), (2, 3, 4)])
@pytest.mark.parametrize("bias", [False, True])
def test_linear(xs, bias):
    x, w, b = randn(xs, 1), randn((5, 4), 2), randn((5,), 3)
    args = [x, w, b] if bias else [x, w]
    check("linear", args, F.linear(*args))


covers("conv2d")


@FEW
@given(n=st.integers(1, 2), g=st.integers(1, 2), cg=st.integers(1, 2), og=st.integers(1, 2),
       k=st.tuples(st.integers(1, 3), st.integers(1, 3)), s=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       p=st.tuples(st.integers(0, 2), st.integers(0, 2)), d=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       hw=st.tuples(st.integers(3, 7), st.integers(3, 7)), bias=st.booleans(), seed=seeds)
def test_conv2d(n, g, cg, og, k, s, p, d, hw, bias, seed):
    assume(all(hw[i] + 2 * p[i] >= d[i] * (k[i] - 1) + 1 for i in (0, 1)))
    x = randn((n, g * cg) + hw, seed)
    w = randn((g * og, cg) + k, seed + 1)
    b = randn((g * og,), seed + 2)
    args = [x, w, b] if bias else [x, w]
    attrs = {"stride": s, "padding": p, "dilation": d, "groups": g}
    check("conv2d", args, F.conv2d(*args, stride=s, padding=p, dilation=d, groups=g), attrs)


covers("batch_norm")


@pytest.mark.parametrize("shape", [(3, 4), (2, 4, 3, 3)])
def test_batch_norm(shape):
    x = randn(shape, 1)
    mean, var, w, b = randn((4,), 2), positive((4,), 3), randn((4,), 4), randn((4,), 5)
    want = F.batch_norm(x, mean, var, w, b, training=False, eps=1e-3)
    check("batch_norm", [x, mean, var, w, b], want, {"eps": 1e-3})


# ---------------------------------------------------------------- pooling

covers("avg_pool2d", "max_pool2d")


@FEW
@given(k=st.tuples(st.integers(1, 3), st.integers(1, 3)), s=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       data=st.data(), ceil=st.booleans(), incl=st.booleans(), d=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       hw=st.tuples(st.integers(3, 8), st.integers(3, 8)), batch=st.booleans(), seed=seeds,
       avg=st.booleans())
def test_pool(k, s, data, ceil, incl, d, hw, batch, seed, avg):
    p = (data.draw(st.integers(0, k[0] // 2)), data.draw(st.integers(0, k[1] // 2)))
    x = randn(((2,) if batch else ()) + (3,) + hw, seed)
    if avg:
        attrs = {"kernel": k, "stride": s, "padding": p, "ceil_mode": ceil, "count_include_pad": incl}
        want = F.avg_pool2d(x, k, s, p, ceil_mode=ceil, count_include_pad=incl)
    else:
        attrs = {"kernel": k, "stride": s, "padding": p, "ceil_mode": ceil, "dilation": d}
        assume(all(hw[i] + 2 * p[i] >= d[i] * (k[i] - 1) + 1 for i in (0, 1)))
        want = F.max_pool2d(x, k, s, p, dilation=d, ceil_mode=ceil)
    check("avg_pool2d" if avg else "max_pool2d", [x], want, attrs)


covers("adaptive_avg_pool2d")


@FEW
@given(hw=st.tuples(st.integers(1, 7), st.integers(1, 7)), o=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       seed=seeds)
def test_adaptive_avg_pool2d(hw, o, seed):
    x = randn((2, 3) + hw, seed)
    check("adaptive_avg_pool2d", [x], F.adaptive_avg_pool2d(x, o), {"output": o})


# ---------------------------------------------------------------- shapes

covers("reshape", "flatten", "transpose", "permute", "slice", "index", "squeeze", "unsqueeze", "expand", "pad")


@FEW
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=4), data=st.data(), seed=seeds)
def test_shape_ops(shape, data, seed):
    x = randn(shape, seed)
    r = len(shape)
    dim = st.integers(0, r - 1)
    a, b = data.draw(dim), data.draw(dim)
    check("reshape", [x], x.reshape(tuple(reversed(shape))), {"shape": tuple(reversed(shape))})
    lo, hi = min(a, b), max(a, b)
    check("flatten", [x], torch.flatten(x, lo, hi), {"start": lo, "end": hi})
    check("transpose", [x], x.transpose(a, b), {"dim0": a, "dim1": b})
    perm = tuple(data.draw(st.permutations(range(r))))
    check("permute", [x], x.permute(perm), {"dims": perm})
    start = data.draw(st.integers(0, shape[a]))
    end = data.draw(st.integers(start, shape[a]))
    step = data.draw(st.integers(1, 3))
    at = (slice(None),) * a + (slice(start, end, step),)
    check("slice", [x], x[at], {"dim": a, "start": start, "end": end, "step": step})
    i = data.draw(st.integers(0, shape[a] - 1))
    check("index", [x], x.select(a, i), {"dim": a, "index": i})
    u = data.draw(st.integers(0, r))
    check("unsqueeze", [x], x.unsqueeze(u), {"dim": u})
    pads = tuple(data.draw(st.lists(st.integers(0, 2), min_size=0, max_size=r).map(lambda v: v * 2)))
    check("pad", [x], F.pad(x, pads, value=1.5), {"pads": pads, "value": 1.5})


def test_squeeze():
    x = randn((1, 3, 1, 2), 0)
    check("squeeze", [x], x.squeeze(), {"dims": ()})  # empty: every size-1 dim
    check("squeeze", [x], x.squeeze(2), {"dims": (2,)})
    check("squeeze", [x], x.squeeze((0, 2)), {"dims": (0, 2)})


def test_expand():
    x = randn((3, 1), 0)
    check("expand", [x], x.expand(2, 3, 4), {"shape": (2, 3, 4)})


def test_rank0_shape_ops():
    x = torch.tensor(2.5)
    check("flatten", [x], torch.flatten(x), {"end": 0})
    check("unsqueeze", [x], x.unsqueeze(0), {"dim": 0})
    check("reshape", [x], x.reshape(1, 1), {"shape": (1, 1)})


covers("cat", "stack")


@FEW
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=3), n=st.integers(1, 3), data=st.data(),
       seed=seeds)
def test_cat_stack(shape, n, data, seed):
    d = data.draw(st.integers(0, len(shape) - 1))
    xs = []
    for k in range(n):
        s = list(shape)
        s[d] = data.draw(st.integers(0, 3))
        xs.append(randn(s, seed + k, data.draw(st.sampled_from(["f32", "f64", "i64"]))))
    check("cat", xs, torch.cat(xs, d), {"dim": d})
    same = [randn(shape, seed + k) for k in range(n)]
    sd = data.draw(st.integers(0, len(shape)))
    check("stack", same, torch.stack(same, sd), {"dim": sd})


# ---------------------------------------------------------------- sources, share, reveal

covers("share", "reveal")


def _by_party_graph():
    b = Builder("p", ["alice", "bob"])
    a = b.emit("load", attrs={"tag": "a", "owner": 0}, types=[TensorType("f32", (2,), private(0))], name="a")
    x = b.emit("load", attrs={"tag": "x", "owner": 1}, types=[TensorType("f64", (2,), private(1))], name="x")
    pub = b.emit("input", attrs={"index": 0}, types=[TensorType("f32", (), PUBLIC)], name="pub")
    sa, sx = b.emit("share", [a]), b.emit("share", [x])
    prod = b.emit("mul", [sa, sx], name="prod")
    to_bob = b.emit("reveal", [prod], {"to": 1}, name="to_bob")
    to_all = b.emit("reveal", [prod], {"to": -1}, name="to_all")
    return verify(b.finish([pub, a, to_bob, prod, to_all]))


def test_share_reveal_and_visibility_by_party():
    g = _by_party_graph()
    data = {"alice": {"a": torch.tensor([1.0, 2.0])}, "bob": {"x": torch.tensor([3.0, 4.0], dtype=torch.float64)}}
    pub = torch.tensor(7.0)
    outs = run_reference(g, data=data, inputs=[pub])
    prod = torch.tensor([3.0, 8.0], dtype=torch.float64)
    assert [o.dtype for o in outs] == [torch.float32, torch.float32, torch.float64, torch.float64, torch.float64]
    for got, want in zip(outs, [pub, data["alice"]["a"], prod, prod, prod]):
        torch.testing.assert_close(got, want.to(got.dtype))
    seen = run_reference_by_party(g, data=data, inputs=[pub])
    assert set(seen) == {"alice", "bob", "secret"}
    assert [t.tolist() for t in seen["alice"]] == [7.0, [1.0, 2.0], [3.0, 8.0]]
    assert [t.tolist() for t in seen["bob"]] == [7.0, [3.0, 8.0], [3.0, 8.0]]
    assert [t.tolist() for t in seen["secret"]] == [[3.0, 8.0]]


def test_load_casts_to_the_declared_dtype():
    b = Builder("t", ["alice"])
    x = b.emit("load", attrs={"tag": "img", "owner": 0}, types=[TensorType("f32", (2, 2), private(0))])
    g = b.finish([x])
    img = torch.tensor([[0, 255], [7, 9]], dtype=torch.uint8)  # images often come as bytes
    (got,) = run_reference(g, data={"alice": {"img": img}})
    assert got.dtype == torch.float32 and got.tolist() == [[0.0, 255.0], [7.0, 9.0]]


def test_consts():
    b = Builder("t")
    w = b.emit("const", attrs={"name": "w"}, types=[TensorType("f64", (2,), PUBLIC)])
    two = b.emit("const", attrs={"value": 2.0}, types=[TensorType("i64", (), PUBLIC)])
    g = verify(b.finish([w, two]))
    w_got, two_got = run_reference(g, constants={"w": torch.tensor([1.0, 2.0])})
    assert w_got.dtype == torch.float64 and w_got.tolist() == [1.0, 2.0]
    assert two_got.dtype == torch.int64 and two_got.shape == () and two_got.item() == 2


def _call_graph():
    b = Builder("t", ["alice", "bob"])
    x = b.emit("load", attrs={"tag": "x", "owner": 1}, types=[TensorType("f32", (2, 3), private(1))])
    s = b.emit("share", [x])
    y, z = b.emit("call", [s], {"tag": "net", "owner": 0}, loc=Loc("m.py", 5), name="y",
                  types=[TensorType("f32", (2, 4), SECRET), TensorType("f32", (2,), SECRET)])
    return verify(b.finish([y, z]))


X23 = {"bob": {"x": torch.ones(2, 3)}}


def test_call_runs_the_model():
    w = randn((4, 3), 0)
    y, z = run_reference(_call_graph(), data=X23, models={"net": lambda x: (x @ w.T, x.sum(1))})
    torch.testing.assert_close(y, torch.ones(2, 3) @ w.T)
    assert z.tolist() == [3.0, 3.0]


# ---------------------------------------------------------------- loops


def _loop_graph(trips):
    """acc, k = loop trips (x, 0.) { acc*w + i, k + acc.sum() }: uses an outer %w."""
    b = Builder("loops")
    x = b.emit("input", attrs={"index": 0}, types=[TensorType("f32", (3,), PUBLIC)], name="x")
    w = b.emit("input", attrs={"index": 1}, types=[TensorType("f32", (3,), PUBLIC)], name="w")
    k0 = b.emit("const", attrs={"value": 0.0}, types=[TensorType("f32", (), PUBLIC)], name="k0")
    i, acc, k = b.begin_region([TensorType("i64", (), PUBLIC), x.type, k0.type], ["i", "acc", "k"])
    acc2 = b.emit("add", [b.emit("mul", [acc, w]), i])
    k2 = b.emit("add", [k, b.emit("sum", [acc])])
    body = b.end_region([acc2, k2])
    out = b.emit("loop", [x, k0], {"trips": trips}, types=[x.type, k0.type], regions=[body], name="l")
    return verify(b.finish(list(out)))


@FEW
@given(trips=st.integers(0, 6), seed=seeds)
def test_loop_matches_python(trips, seed):
    x, w = randn((3,), seed), randn((3,), seed + 1)
    acc, k = x, torch.tensor(0.0)
    for i in range(trips):
        acc, k = acc * w + i, k + acc.sum()
    got_acc, got_k = run_reference(_loop_graph(trips), inputs=[x, w])
    torch.testing.assert_close(got_acc, acc, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got_k, k, rtol=1e-6, atol=1e-6)


def test_nested_loops_use_outer_values():
    # for i in range(3): h = a + i; for j in range(4): b = b * w + h + i*j ; a = a + b
    t = TensorType("f64", (2,), PUBLIC)
    c = TensorType("i64", (), PUBLIC)
    b = Builder("nested")
    a0 = b.emit("input", attrs={"index": 0}, types=[t], name="a0")
    w = b.emit("input", attrs={"index": 1}, types=[t], name="w")
    b0 = b.emit("input", attrs={"index": 2}, types=[t], name="b0")
    i, a, bb = b.begin_region([c, t, t], ["i", "a", "b"])
    h = b.emit("add", [a, i], name="h")
    j, bi = b.begin_region([c, t], ["j", "bi"])
    nb = b.emit("add", [b.emit("add", [b.emit("mul", [bi, w]), h]), b.emit("mul", [i, j])], loc=Loc("n.py", 9))
    inner = b.end_region([nb])
    b2 = b.emit("loop", [bb], {"trips": 4}, types=[t], regions=[inner], name="inner")
    a2 = b.emit("add", [a, b2])
    outer = b.end_region([a2, b2])
    res = b.emit("loop", [a0, b0], {"trips": 3}, types=[t, t], regions=[outer], name="outer")
    g = verify(b.finish(list(res)))

    av, wv, bv = randn((2,), 1, "f64"), randn((2,), 2, "f64") * 0.5, randn((2,), 3, "f64")
    a_, b_ = av, bv
    for ii in range(3):
        hh = a_ + ii
        for jj in range(4):
            b_ = b_ * wv + hh + ii * jj
        a_ = a_ + b_
    got_a, got_b = run_reference(g, inputs=[av, wv, bv])
    torch.testing.assert_close(got_a, a_, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(got_b, b_, rtol=1e-9, atol=1e-9)


def test_loop_yielding_params_and_outer_values_unchanged():
    t = TensorType("f32", (2,), PUBLIC)
    b = Builder("swap")
    x = b.emit("input", attrs={"index": 0}, types=[t], name="x")
    y = b.emit("input", attrs={"index": 1}, types=[t], name="y")
    z = b.emit("input", attrs={"index": 2}, types=[t], name="z")
    _, p, q, r = b.begin_region([TensorType("i64", (), PUBLIC), t, t, t], ["i", "p", "q", "r"])
    body = b.end_region([q, p, z])  # swap p and q; r unused; z from outside
    out = b.emit("loop", [x, y, y], {"trips": 3}, types=[t, t, t], regions=[body])
    g = verify(b.finish(list(out)))
    xv, yv, zv = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]), torch.tensor([5.0, 6.0])
    got = run_reference(g, inputs=[xv, yv, zv])
    assert [v.tolist() for v in got] == [[3.0, 4.0], [1.0, 2.0], [5.0, 6.0]]


# ---------------------------------------------------------------- errors


def _load_graph():
    b = Builder("t", ["alice", "bob"])
    x = b.emit("load", attrs={"tag": "mnist/test", "owner": 1}, types=[TensorType("f32", (2, 3), private(1))],
               loc=Loc("infer.py", 12), name="x")
    return verify(b.finish([b.emit("relu", [x])]))


def test_error_format():
    node = Node("conv2d", results=(Value("h", TensorType("f32", (1,))),), loc=LOC)
    e = PlanRuntimeError(node, "bob", "weight does not fit")
    assert str(e) == "examples/x.py:14: conv2d %h (party bob): weight does not fit"
    assert (e.node, e.party, e.problem, e.cause) == (node, "bob", "weight does not fit", None)
    assert str(PlanRuntimeError(node, None, "boom")) == "examples/x.py:14: conv2d %h: boom"
    assert issubclass(DataError, PlanRuntimeError) and issubclass(PlanRuntimeError, RuntimeError)


def test_missing_tag():
    with pytest.raises(DataError, match=re.escape(
            "infer.py:12: load %x (party bob): no tensor under tag 'mnist/test' (expected private<1> f32[2,3])")) as ei:
        run_reference(_load_graph(), data={"bob": {"other": torch.ones(2, 3)}})
    assert ei.value.party == "bob" and ei.value.node.op == "load"
    assert '> ' in str(ei.value) and 'load "mnist/test" from bob' in str(ei.value)  # IR context


def test_data_under_the_wrong_party():
    with pytest.raises(DataError, match=re.escape(
            "infer.py:12: load %x (party bob): no tensor under tag 'mnist/test' (expected private<1> f32[2,3]); "
            "party alice holds one, but the plan loads it from bob")):
        run_reference(_load_graph(), data={"alice": {"mnist/test": torch.ones(2, 3)}})


def test_data_of_the_wrong_shape():
    with pytest.raises(DataError, match=re.escape(
            "infer.py:12: load %x (party bob): tag 'mnist/test': expected f32[2,3], got f32[3,2]")):
        run_reference(_load_graph(), data={"bob": {"mnist/test": torch.ones(3, 2)}})


def test_data_of_an_incompatible_dtype():
    with pytest.raises(DataError, match=re.escape("tag 'mnist/test': expected f32[2,3], got bool[2,3]")):
        run_reference(_load_graph(), data={"bob": {"mnist/test": torch.ones(2, 3, dtype=torch.bool)}})
    b = Builder("t", ["alice"])
    y = b.emit("load", attrs={"tag": "labels", "owner": 0}, types=[TensorType("i64", (2,), private(0))])
    g = b.finish([y])
    # a float would be truncated silently: refused
    with pytest.raises(DataError, match=re.escape("tag 'labels': expected i64[2], got f32[2]")):
        run_reference(g, data={"alice": {"labels": torch.tensor([1.0, 2.5])}})


def test_data_that_is_not_a_tensor():
    with pytest.raises(DataError, match="got a list, not a torch.Tensor"):
        run_reference(_load_graph(), data={"bob": {"mnist/test": [[1.0] * 3] * 2}})


def test_data_for_an_unknown_party():
    with pytest.raises(DataError, match=re.escape("data for party 'carol', but plan @t has parties alice, bob")):
        run_reference(_load_graph(), data={"carol": {"mnist/test": torch.ones(2, 3)}})


def test_input_errors():
    x = torch.ones(3)
    g = one_op("relu", [x])
    with pytest.raises(DataError, match=re.escape("input %input: input 0 is missing: the run got 0 inputs "
                                                  "(expected public f32[3])")):
        run_reference(g)
    with pytest.raises(DataError, match=re.escape("input %input: input 0: expected f32[3], got f32[4]")):
        run_reference(g, inputs=[torch.ones(4)])


def test_const_errors():
    b = Builder("t")
    w = b.emit("const", attrs={"name": "w"}, types=[TensorType("f32", (2,), PUBLIC)], loc=Loc("c.py", 3))
    g = b.finish([w])
    with pytest.raises(DataError, match=re.escape("c.py:3: const %const: no constant named 'w' "
                                                  "(expected public f32[2])")):
        run_reference(g)
    with pytest.raises(DataError, match=re.escape("c.py:3: const %const: constant 'w': expected f32[2], got f32[3]")):
        run_reference(g, constants={"w": torch.ones(3)})


def test_call_errors():
    g = _call_graph()
    with pytest.raises(DataError, match=re.escape("m.py:5: call %y, %y_1 (party alice): no model under tag 'net'")):
        run_reference(g, data=X23)
    with pytest.raises(DataError, match=re.escape("model 'net' gave 1 results, the plan expects 2")):
        run_reference(g, data=X23, models={"net": lambda x: x})
    with pytest.raises(DataError, match=re.escape("model 'net' result 1: expected f32[2], got f32[3]")):
        run_reference(g, data=X23, models={"net": lambda x: (torch.ones(2, 4), torch.ones(3))})
    with pytest.raises(PlanRuntimeError, match=re.escape("m.py:5: call %y, %y_1 (party alice): "
                                                         "model 'net' failed: ZeroDivisionError: division by zero")) as ei:
        run_reference(g, data=X23, models={"net": lambda x: 1 / 0})
    assert isinstance(ei.value.__cause__, ZeroDivisionError)


def test_rule_failure_names_the_node_and_keeps_the_cause():
    x = torch.tensor([True, False])
    g = one_op("sub", [x, x])  # the IR allows bool - bool; torch refuses it
    with pytest.raises(PlanRuntimeError, match=re.escape(
            "examples/x.py:14: sub %sub: RuntimeError: Subtraction, the `-` operator, with two bool tensors "
            "is not supported")) as ei:
        run_reference(g, inputs=[x, x])
    e = ei.value
    assert type(e) is PlanRuntimeError and e.party is None and e.node.op == "sub"
    assert isinstance(e.__cause__, RuntimeError) and e.cause is e.__cause__


def test_failure_inside_a_loop_says_which_iteration():
    t = TensorType("f32", (2,), PUBLIC)
    b = Builder("t")
    x = b.emit("input", attrs={"index": 0}, types=[t])
    _, c = b.begin_region([TensorType("i64", (), PUBLIC), t], ["i", "c"])
    body = b.end_region([b.emit("call", [c], {"tag": "f", "owner": 0}, types=[t], loc=Loc("l.py", 7), name="y")])
    out = b.emit("loop", [x], {"trips": 5}, types=[t], regions=[body], loc=Loc("l.py", 6), name="l")
    b.party("alice")
    g = b.finish([out])
    calls = []

    def f(v):
        calls.append(1)
        if len(calls) == 3:
            raise ValueError("third time")
        return v + 1

    with pytest.raises(PlanRuntimeError, match=re.escape("l.py:7: call %y (party alice): "
                                                         "model 'f' failed: ValueError: third time")) as ei:
        run_reference(g, inputs=[torch.zeros(2)], models={"f": f})
    assert ei.value.__notes__ == ["  in iteration 2 of l.py:6: loop %l"]


def test_rule_disagreeing_with_the_declared_type_is_caught():
    # an unverified graph whose relu claims the wrong shape
    x = Value("x", TensorType("f32", (3,)))
    r = Value("r", TensorType("f32", (5,)))
    g = Graph("bad", (), (Node("input", (), (x,), (("index", 0),)), Node("relu", (x,), (r,), loc=LOC),
                          Node("return", (r,))))
    with pytest.raises(PlanRuntimeError, match=re.escape("examples/x.py:14: relu %r: computed shape [3] "
                                                         "but the IR says public f32[5]")):
        run_reference(g, inputs=[torch.ones(3)])


def test_undefined_operand_in_an_unverified_graph():
    x = Value("x", TensorType("f32", (3,)))
    g = Graph("bad", (), (Node("relu", (x,), (Value("r", x.type),)), Node("return", ())))
    with pytest.raises(PlanRuntimeError, match=re.escape("relu %r: operand %x is not defined here")):
        run_reference(g)


# ---------------------------------------------------------------- freeing values


def _chain(n):
    b = Builder("chain")
    v = b.emit("input", attrs={"index": 0}, types=[TensorType("f32", (64,), PUBLIC)])
    for k in range(n):
        v = b.emit("sigmoid" if k % 2 else "neg", [v])
    return b.finish([v])


def test_long_chain_keeps_few_values_alive():
    stats = {}
    x = randn((64,), 0)
    (got,) = run_reference(_chain(300), inputs=[x], stats=stats)
    want = x
    for k in range(300):
        want = torch.sigmoid(want) if k % 2 else -want
    torch.testing.assert_close(got, want)
    assert stats["nodes_run"] == 301
    assert stats["peak_live"] <= 2
    assert stats["peak_bytes"] <= 2 * 64 * 4


def test_unused_values_die_at_once():
    b = Builder("t")
    for k in range(50):
        b.emit("const", attrs={"value": float(k)}, types=[TensorType("f32", (), PUBLIC)])
    stats = {}
    run_reference(b.finish([]), stats=stats)
    assert stats["peak_live"] == 1


def test_loop_frees_body_values_each_iteration():
    t = TensorType("f32", (16,), PUBLIC)
    b = Builder("t")
    x = b.emit("input", attrs={"index": 0}, types=[t])
    w = b.emit("input", attrs={"index": 1}, types=[t])
    _, c = b.begin_region([TensorType("i64", (), PUBLIC), t], ["i", "c"])
    v = c
    for k in range(40):
        v = b.emit("mul" if k % 2 else "add", [v, w])
    body = b.end_region([v])
    out = b.emit("loop", [x], {"trips": 20}, types=[t], regions=[body])
    g = verify(b.finish([b.emit("relu", [out])]))
    xv, wv = randn((16,), 1), torch.full((16,), 0.5)
    want = xv
    for _ in range(20):
        for k in range(40):
            want = want * wv if k % 2 else want + wv
    stats = {}
    (got,) = run_reference(g, inputs=[xv, wv], stats=stats)
    torch.testing.assert_close(got, torch.relu(want))
    # x and w outside, the loop's carried value, one body value and the one being made
    assert stats["peak_live"] <= 6


# ---------------------------------------------------------------- erf, gelu, layer_norm, gather


covers("erf", "gelu", "layer_norm", "gather")


@FEW
@given(shape=shapes, seed=seeds, form=st.sampled_from(["none", "tanh"]))
def test_erf_and_gelu(shape, seed, form):
    x = randn(shape, seed) * 3
    check("erf", [x], torch.erf(x))
    check("gelu", [x], torch.nn.functional.gelu(x, approximate=form), {"approximate": form})


@FEW
@given(seed=seeds, shape=st.sampled_from([(2, 5), (3, 2, 4)]), nd=st.integers(1, 2), affine=st.integers(0, 2))
def test_layer_norm(seed, shape, nd, affine):
    x = randn(shape, seed) * 2 + 1
    ns = shape[len(shape) - nd:]
    w, b = randn(ns, seed + 1), randn(ns, seed + 2)
    extra = [w, b][:affine]
    want = torch.nn.functional.layer_norm(x, ns, *(extra + [None] * (2 - affine)), eps=1e-3)
    check("layer_norm", [x] + extra, want, {"dims": nd, "eps": 1e-3})


def test_gather_is_numpy_take_with_negative_indices():
    x = randn((4, 3, 2), 3)
    idx = torch.tensor([[0, -1], [2, -3]])
    for dim in range(3):
        i = idx.clamp(-x.shape[dim], x.shape[dim] - 1)
        check("gather", [x, i], torch.from_numpy(np.take(x.numpy(), i.numpy(), axis=dim)), {"dim": dim})
    check("gather", [x, torch.tensor(1)], x[1], {"dim": 0})  # a 0-d index drops the dim


# ---------------------------------------------------------------- coverage of the rule table


def test_every_op_has_a_rule_and_a_test():
    handled = set(RULES) | set(SOURCES) | set(STRUCTURE)
    assert handled == set(ops.REGISTRY)
    assert TESTED == set(RULES), f"ops without a test: {sorted(set(RULES) - TESTED)}"


def test_completeness_check_names_an_op_without_a_rule():
    # the reference rules are registered against the op definitions; a new op without
    # one is named by ops.check, with the layer where its rule belongs
    ops.check("reference")
    d = ops.OpDef("frobnicate", ("x",), infer=lambda t, a: t)
    ops.REGISTRY["frobnicate"] = d
    try:
        with pytest.raises(ops.IncompleteOps, match=r"frobnicate: no reference, protocol, lower rule"):
            ops.check("reference", "protocol", "lower")
        assert ops.missing("reference") == {"frobnicate": ["reference"]}
    finally:
        del ops.REGISTRY["frobnicate"]
    with pytest.raises(AssertionError, match="has a reference rule already"):
        ops.register("reference", ops.OP.relu)(lambda n, a, k: a)
