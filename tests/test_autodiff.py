"""Gradients on the IR (planc/autodiff/): every vjp rule against torch.autograd on random
inputs, through fori_loop and scan, over shares (run_local), and the visibility of
gradients."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import planc
import planc.autodiff  # noqa: F401  (registers the vjp rules)
from planc.ir import ops
from planc.ir.types import private

pos = lambda t: t.abs() + 0.5  # noqa: E731

# op -> (function of the differentiated tensors, their shapes, a transform of the random inputs)
CASES = {
    "add": (lambda x, y: x + y, [(2, 3), (3,)], None),
    "sub": (lambda x, y: x - y, [(2, 3), (2, 1)], None),
    "mul": (lambda x, y: x * y, [(2, 1, 3), (4, 3)], None),
    "div": (lambda x, y: x / y, [(2, 3), (3,)], [None, pos]),
    "neg": (lambda x: -x, [(3, 2)], None),
    "matmul": (lambda x, y, v: (x @ y) @ v + (v @ y.transpose(0, 1)).sum(), [(2, 3), (3, 4), (4,)], None),
    "linear": (lambda x, w, b: F.linear(x, w, b), [(2, 5, 3), (4, 3), (4,)], None),
    "conv2d": (lambda x, w, b, wg: F.conv2d(x, w, b, stride=2, padding=1).sum() + F.conv2d(x, w, None, dilation=2)
               .sum() + F.conv2d(x, wg, None, groups=2, stride=(1, 2)).sum(),
               [(2, 2, 7, 6), (3, 2, 3, 2), (3,), (4, 1, 2, 3)], None),
    "avg_pool2d": (lambda x: F.avg_pool2d(x, 2).sum() + F.avg_pool2d(x, 3, 2, 1, ceil_mode=True,
                                                                      count_include_pad=False).sum(),
                   [(2, 2, 5, 6)], None),
    "max_pool2d": (lambda x: F.max_pool2d(x, 2).sum() + (F.max_pool2d(x, 3, 2, 1) * 2).sum(), [(1, 2, 5, 6)], None),
    "adaptive_avg_pool2d": (lambda x: F.adaptive_avg_pool2d(x, (2, 3)), [(1, 2, 5, 7)], None),
    # torch.autograd does not differentiate running statistics: its side is the formula
    "batch_norm": (lambda x, m, v, w, b: F.batch_norm(x, m, v, w, b, training=False, eps=1e-3)
                   if planc.tracer.ACTIVE.get() is not None else
                   (x - m[:, None, None]) / torch.sqrt(v[:, None, None] + 1e-3) * w[:, None, None] + b[:, None, None],
                   [(2, 3, 2, 2), (3,), (3,), (3,), (3,)], [None, None, pos, None, None]),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (4,), w, b), [(3, 4), (4,), (4,)], None),
    "relu": (torch.relu, [(4, 3)], None),
    "sigmoid": (torch.sigmoid, [(4, 3)], None),
    "tanh": (torch.tanh, [(4, 3)], None),
    "exp": (torch.exp, [(4, 3)], None),
    "log": (torch.log, [(4, 3)], [pos]),
    "reciprocal": (torch.reciprocal, [(4, 3)], [pos]),
    "sqrt": (torch.sqrt, [(4, 3)], [pos]),
    "rsqrt": (torch.rsqrt, [(4, 3)], [pos]),
    "erf": (torch.erf, [(4, 3)], None),
    "gelu": (lambda x: F.gelu(x) + F.gelu(x, approximate="tanh") * 2, [(4, 3)], None),
    "softmax": (lambda x: F.softmax(x, dim=1), [(3, 4)], None),
    "log_softmax": (lambda x: F.log_softmax(x, dim=0), [(3, 4)], None),
    "sum": (lambda x: x.sum(1, keepdim=True) * 2 + x.sum(), [(3, 4)], None),
    "mean": (lambda x: x.mean((0, 2)), [(3, 4, 2)], None),
    "max": (lambda x: torch.amax(x, 1).sum() + x.max(), [(3, 4)], None),
    "where": (lambda x, y: torch.where(x > 0, x, y * 2), [(3, 4), (4,)], None),
    "gather": (lambda w: F.embedding(torch.tensor([[0, 2], [2, 3]]), w), [(4, 3)], None),
    "reshape": (lambda x: x.reshape(4, 3), [(3, 4)], None),
    "flatten": (lambda x: x.flatten(1), [(2, 3, 2)], None),
    "transpose": (lambda x: x.transpose(0, 2), [(2, 3, 4)], None),
    "permute": (lambda x: x.permute(2, 0, 1), [(2, 3, 4)], None),
    "slice": (lambda x: x[:, 1:6:2], [(2, 7)], None),
    "index": (lambda x: x[1], [(3, 4)], None),
    "cat": (lambda x, y: torch.cat([x, y, x], 1), [(2, 3), (2, 1)], None),
    "stack": (lambda x, y: torch.stack([x, y], 1), [(2, 3), (2, 3)], None),
    "pad": (lambda x: F.pad(x, (1, 2, 0, 1)), [(2, 3, 4)], None),
    "squeeze": (lambda x: x.squeeze(1), [(3, 1, 2)], None),
    "unsqueeze": (lambda x: x.unsqueeze(1), [(3, 2)], None),
    "expand": (lambda x: x.expand(2, 3, 4), [(3, 1)], None),
}
# tested elsewhere in this file
OTHERS = {"share", "reveal", "loop"}


def _inputs(shapes, fix, seed):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(s, generator=g, dtype=torch.float64).float() for s in shapes]
    return [f(x) if f else x for x, f in zip(xs, fix or [None] * len(xs))]


def _check(fn, xs, expect_op=None, owner="alice"):
    names = [f"x{i}" for i in range(len(xs))]
    probe = fn(*xs)
    r = torch.randn(probe.shape, generator=torch.Generator().manual_seed(1))

    def loss(*a):
        return (fn(*a) * r).sum()

    def f(*a):
        value, g = planc.value_and_grad(loss, argnums=tuple(range(len(a))))(*a)
        return (value, *g)

    plan = planc.trace(f, *(planc.load(n, owner=owner, shape=tuple(x.shape)) for n, x in zip(names, xs)),
                       parties=["alice", "bob"])
    if expect_op:
        assert any(n.op == expect_op for n in plan.graph.walk()), expect_op
    got = planc.run_reference(plan, data={owner: dict(zip(names, xs))})
    leaves = [x.clone().requires_grad_() for x in xs]
    want = loss(*leaves)
    grads = torch.autograd.grad(want, leaves, allow_unused=True)
    torch.testing.assert_close(got[0], want.detach(), rtol=1e-4, atol=1e-4)
    for a, b in zip(got[1:], grads):
        torch.testing.assert_close(a, torch.zeros_like(a) if b is None else b, rtol=1e-4, atol=1e-4)
    return plan


def test_every_differentiable_op_has_a_vjp_rule_and_a_case():
    assert ops.missing("vjp") == {}
    with_rule = {d.name for d in ops.REGISTRY.values() if d.rule("vjp")}
    assert with_rule == set(CASES) | OTHERS
    for d in ops.REGISTRY.values():
        assert (d.rule("vjp") is not None) == d.differentiable, d.name
    assert {d.name for d in ops.REGISTRY.values() if d.nondiff} == {"gt", "lt", "ge", "le", "eq", "argmax"}


def test_a_missing_vjp_is_named():
    d = ops.OP.relu
    rule = d.rules.pop("vjp")
    try:
        assert ops.missing("vjp") == {"relu": ["vjp"]}
        with pytest.raises(ops.IncompleteOps, match="relu: no vjp rule"):
            ops.check("vjp")
    finally:
        d.rules["vjp"] = rule


@pytest.mark.parametrize("op", sorted(CASES))
@settings(max_examples=3)
@given(seed=st.integers(0, 2**31 - 1))
def test_vjp_matches_torch_autograd(op, seed):
    fn, shapes, fix = CASES[op]
    _check(fn, _inputs(shapes, fix, seed), expect_op=op)


@settings(max_examples=5)
@given(seed=st.integers(0, 2**31 - 1), trips=st.integers(0, 4))
def test_gradient_through_fori_loop(seed, trips):
    w0, x0 = _inputs([(3, 3), (3,)], None, seed)
    w0 = w0 * 0.5

    def fn(w, x):
        def body(i, c):
            h, acc = c
            h = torch.tanh(w @ h + x)
            return h, acc + (h * h).sum() * (i + 1)

        h, acc = planc.fori_loop(trips, body, (x, torch.zeros(())))
        return h.sum() + acc

    def torch_fn(w, x):
        h, acc = x, torch.zeros(())
        for i in range(trips):
            h = torch.tanh(w @ h + x)
            acc = acc + (h * h).sum() * (i + 1)
        return h.sum() + acc

    plan = _check(lambda w, x: fn(w, x) if planc.tracer.ACTIVE.get() is not None else torch_fn(w, x), [w0, x0])
    assert sum(n.op == "loop" for n in plan.graph.nodes) == (2 if trips else 1)


def test_gradient_through_scan_and_nested_loops():
    g = torch.Generator().manual_seed(3)
    w0, xs0 = torch.randn(2, 2, generator=g), torch.randn(3, 2, generator=g)

    def fn(w, xs):
        if planc.tracer.ACTIVE.get() is None:
            c, ys = torch.zeros(2), []
            for x in xs:
                for _ in range(2):
                    c = torch.sigmoid(w @ c + x)
                ys.append(c * 2)
            return torch.stack(ys).sum() + c.sum()

        def step(c, x):
            c = planc.fori_loop(2, lambda i, c: torch.sigmoid(w @ c + x), c)
            return c, c * 2

        c, ys = planc.scan(step, torch.zeros(2), xs)
        return ys.sum() + c.sum()

    _check(fn, [w0, xs0])


def _vis(plan):
    return [v.type.vis for v in plan.graph.outputs]


def test_gradients_keep_the_visibility_the_type_rules_give():
    def loss(w, x):
        return torch.sigmoid(x @ w).sum()

    def f(w, x):
        return planc.grad(loss)(w, x)

    # everything alice's: the gradient stays private to alice
    plan = planc.trace(f, planc.load("w", owner="alice", shape=(3,)), planc.load("x", owner="alice", shape=(4, 3)),
                       parties=["alice", "bob"])
    assert _vis(plan) == [private(0)]
    assert not any(n.op == "share" for n in plan.graph.walk())
    # alice's weights on bob's data: secret
    plan = planc.trace(f, planc.load("w", owner="alice", shape=(3,)), planc.load("x", owner="bob", shape=(4, 3)),
                       parties=["alice", "bob"])
    assert _vis(plan) == [planc.SECRET]
    # public weights, private data: private to the data's owner
    plan = planc.trace(f, planc.public((3,)), planc.load("x", owner="bob", shape=(4, 3)), parties=["alice", "bob"])
    assert _vis(plan) == [private(1)]


def test_grad_errors_name_the_users_line():
    def f(x):
        return planc.grad(lambda x: x * 2)(x)

    with pytest.raises(planc.TraceError, match="scalar") as e:
        planc.trace(f, planc.load("x", owner="alice", shape=(3,)))
    assert "test_autodiff.py" in str(e.value)
    with pytest.raises(planc.TraceError, match="inside traced code"):
        planc.grad(lambda x: x.sum())(torch.ones(3))


def _logreg_and_mlp():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=g)
    y = (torch.rand(16, generator=g) > 0.5).float()
    w = torch.randn(4, generator=g) * 0.3
    w1, w2 = torch.randn(8, 4, generator=g) * 0.4, torch.randn(1, 8, generator=g) * 0.4

    def logreg(w, x, y):
        p = torch.sigmoid(x @ w)
        return ((p - y) * (p - y)).mean()

    def mlp(w1, w2, x, y):
        h = torch.relu(F.linear(x, w1))
        return ((F.linear(h, w2).squeeze(1) - y) ** 2).mean()

    return x, y, w, w1, w2, logreg, mlp


@pytest.mark.parametrize("model", ["logreg", "mlp"])
def test_training_gradients_over_shares_match_torch(model):
    x, y, w, w1, w2, logreg, mlp = _logreg_and_mlp()
    params = [w] if model == "logreg" else [w1, w2]
    fn = logreg if model == "logreg" else mlp

    def step(*a):
        loss, gs = planc.value_and_grad(fn, argnums=tuple(range(len(params))))(*a)
        return (planc.reveal(loss, to="alice"), *(planc.reveal(g, to="alice") for g in gs))

    specs = [planc.load(f"w{i}", owner="alice", shape=tuple(p.shape)) for i, p in enumerate(params)]
    plan = planc.trace(step, *specs, planc.load("x", owner="bob", shape=(16, 4)), planc.load("y", owner="bob",
                                                                                                shape=(16,)),
                       parties=["alice", "bob"])
    res = planc.run_local(plan, {"alice": {f"w{i}": p for i, p in enumerate(params)}, "bob": {"x": x, "y": y}})
    got = res.outputs["alice"]
    leaves = [p.clone().requires_grad_() for p in params]
    want = fn(*leaves, x, y)
    grads = torch.autograd.grad(want, leaves)
    # fixed point (16 fractional bits) and the sigmoid's approximation (its bound 2^-14)
    torch.testing.assert_close(got[0], want.detach(), rtol=0, atol=2e-3)
    for a, b in zip(got[1:], grads):
        torch.testing.assert_close(a, b, rtol=0, atol=2e-3)
