"""Secret-shared approximations (runtime/protocols/approx/) against the plaintext reference.

Inputs are multiples of 2^-16, so they encode exactly and the reference computes the
function of the very values the protocols receive: every result must lie within the
bound its docstring documents (approx.ERROR): |got - want| <= ABS + REL |want|. Plans run
over the in-process communicator with 2 and 3 parties and the dealer; results stay
secret and the test sums the shares, so rounds are the protocol's alone (asserted
exactly for 2 parties, where a product costs one round).
"""
from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from planc.ir.builder import Builder
from planc.ir.types import PUBLIC, TensorType, private
from planc.ir.verify import verify
from planc.runtime import fixed
from planc.runtime.local import run_local
from planc.runtime.protocols import approx
from planc.runtime.protocols.approx import softmax as softmax_family
from planc.runtime.reference import run_reference

FRAC = fixed.DEFAULT_FRAC_BITS
ULP = 2.0 ** -FRAC
# kept small for a 2-core machine; raise to search harder (APPROX_EXAMPLES=100)
FEW = settings(max_examples=int(os.environ.get("APPROX_EXAMPLES", "5")), deadline=None)
seeds = st.integers(0, 2 ** 31 - 1)
nparties = st.sampled_from([2, 3])

# rounds with 2 parties, for ops whose count does not depend on the shape
ROUNDS = {"exp": 9, "reciprocal": 12, "log": 7, "sqrt": 8, "rsqrt": 8, "sigmoid": 10, "tanh": 10}


# ---------------------------------------------------------------- plans and runs


def build(op, operands, attrs=None, nparties=2):
    """One-op plan. operands: (tensor, vis) with vis "secret" (loaded by party 0, then
    shared), "public" (a run-time input) or an int k (private<k>)."""
    names = ["alice", "bob", "carol"][:nparties]
    b = Builder("t", names)
    vals, data, inputs = [], {}, []
    for i, (t, vis) in enumerate(operands):
        if vis == "public":
            vals.append(b.emit("input", attrs={"index": len(inputs)},
                               types=[TensorType("f32", tuple(t.shape), PUBLIC)]))
            inputs.append(t)
            continue
        owner = 0 if vis == "secret" else vis
        v = b.emit("load", attrs={"tag": f"x{i}", "owner": owner},
                   types=[TensorType("f32", tuple(t.shape), private(owner))])
        data.setdefault(names[owner], {})[f"x{i}"] = t
        vals.append(b.emit("share", [v]) if vis == "secret" else v)
    out = b.emit(op, vals, attrs or {})
    return verify(b.finish([out])), data, inputs


def run(op, operands, attrs=None, nparties=2, merge=True, lazy=True):
    """(reference output in float64, decoded secret-shared output, LocalResult)."""
    g, data, inputs = build(op, operands, attrs, nparties)
    (want,) = run_reference(g, data=data, inputs=inputs)
    res = run_local(g, data, inputs=inputs, merge=merge, lazy=lazy)
    total = sum(res.outputs[p][0].data for p in res.parties)
    return want.double(), fixed.decode(total, FRAC, torch.float64), res


def on_grid(x):
    """x rounded to a multiple of 2^-16 (float64, so that it encodes exactly)."""
    return torch.round(x.double() * 2 ** FRAC) / 2 ** FRAC


def within(op, got, want):
    abs_, rel = approx.ERROR[op]
    err = (got - want).abs()
    bound = abs_ + rel * want.abs()
    worst = (err - bound).max().item() if err.numel() else -1.0
    assert worst <= 0, f"{op}: error exceeds the documented bound by {worst:.3g} (max error {err.max().item():.3g})"


def rounds(res):
    return {res.stats[p]["rounds"] for p in res.parties}


# ---------------------------------------------------------------- inputs in each documented range


def inputs(op, shape, seed):
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(shape, generator=g, dtype=torch.float64)
    if op == "exp":
        x = -20 + 32 * u  # range x <= 12; below -16 the result is 0
    elif op == "reciprocal":
        sign = torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0).double()
        x = sign * torch.exp2(-8 + 24 * u).clamp(max=2 ** 16 - 1)
    elif op == "log":
        x = torch.exp2(-12 + 28 * u).clamp(max=2 ** 16 - 1)
    elif op == "sqrt":
        x = torch.exp2(-16 + 32 * u).clamp(max=2 ** 16 - 1)
        x = torch.where(torch.rand(shape, generator=g) < 0.1, 0.0, x)
    elif op == "rsqrt":
        x = torch.exp2(-16 + 32 * u).clamp(min=2 ** -16, max=2 ** 16 - 1)
    elif op in ("sigmoid", "tanh"):
        x = torch.randn(shape, generator=g, dtype=torch.float64) * torch.exp2(4 * u)  # mostly small, some large
    else:  # softmax, log_softmax: logits
        x = torch.randn(shape, generator=g, dtype=torch.float64) * 6
    x = on_grid(x)
    if op in ("reciprocal",):
        x = torch.where(x.abs() < 2 ** -8, torch.full_like(x, 2 ** -8), x)
    if op == "log":
        x = x.clamp(min=2 ** -12)
    return x


UNARY = ["exp", "reciprocal", "log", "sqrt", "rsqrt", "sigmoid", "tanh"]
shapes = st.lists(st.integers(1, 6), min_size=1, max_size=2).map(tuple)


@FEW
@given(op=st.sampled_from(UNARY), shape=shapes, n=nparties, seed=seeds)
def test_unary_ops_within_their_documented_bounds(op, shape, n, seed):
    x = inputs(op, shape, seed)
    want, got, res = run(op, [(x, "secret")], nparties=n)
    assert got.shape == want.shape
    within(op, got, want)
    if n == 2:
        assert rounds(res) == {ROUNDS[op]}


@FEW
@given(op=st.sampled_from(["softmax", "log_softmax"]), shape=st.lists(st.integers(1, 12), min_size=1, max_size=3)
       .map(tuple), data=st.data(), n=nparties, seed=seeds)
def test_softmax_and_log_softmax_within_their_bounds(op, shape, data, n, seed):
    dim = data.draw(st.integers(0, len(shape) - 1))
    x = inputs(op, shape, seed)
    want, got, _ = run(op, [(x, "secret")], {"dim": dim}, nparties=n)
    within(op, got, want)


# ---------------------------------------------------------------- sweeps over each range


SWEEP = {
    "exp": torch.linspace(-20, 12, 700, dtype=torch.float64),
    "reciprocal": torch.cat([torch.exp2(torch.linspace(-8, 15.99, 350, dtype=torch.float64)),
                             -torch.exp2(torch.linspace(-8, 15.99, 350, dtype=torch.float64))]),
    "log": torch.exp2(torch.linspace(-12, 15.99, 700, dtype=torch.float64)),
    "sqrt": torch.cat([torch.zeros(1, dtype=torch.float64),
                       torch.exp2(torch.linspace(-16, 15.99, 699, dtype=torch.float64))]),
    "rsqrt": torch.exp2(torch.linspace(-16, 15.99, 700, dtype=torch.float64)),
    "sigmoid": torch.linspace(-40, 40, 700, dtype=torch.float64),
    "tanh": torch.linspace(-20, 20, 700, dtype=torch.float64),
}


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("op", UNARY)
def test_sweep_over_the_whole_range(op, n):
    x = on_grid(SWEEP[op])
    want, got, res = run(op, [(x, "secret")], nparties=n)
    within(op, got, want)
    if n == 2:
        assert rounds(res) == {ROUNDS[op]}
    else:  # each pending truncation costs a round, merged into openings where possible
        assert max(rounds(res)) <= ROUNDS[op] + 2


def test_exact_values_at_the_edges():
    """exp below -16 is exactly 0, sqrt(0) exactly 0, sigmoid and tanh saturate."""
    x = on_grid(torch.tensor([-17.0, -100.0, -1000.0], dtype=torch.float64))
    _, got, _ = run("exp", [(x, "secret")])
    assert torch.equal(got, torch.zeros_like(got))
    _, got, _ = run("sqrt", [(torch.zeros(4, dtype=torch.float64), "secret")])
    assert torch.equal(got, torch.zeros_like(got))
    x = torch.tensor([-1e4, -40.0, 40.0, 1e4], dtype=torch.float64)
    _, got, _ = run("sigmoid", [(x, "secret")])
    assert (got - torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64)).abs().max() <= 2 * ULP


# ---------------------------------------------------------------- softmax: rounds and argmax


def max_rounds(shape, dim):
    """Rounds of compare's max along dim, measured (its staging is compare.py's business)."""
    x = torch.zeros(shape, dtype=torch.float64)
    _, _, res = run("max", [(x, "secret")], {"dim": dim, "keepdim": True})
    return max(rounds(res))


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_64x10_rounds_and_argmax(op):
    """The headline case: 64 rows of 10 logits, <= 30 rounds with 2 parties (20 here)."""
    x = inputs(op, (64, 10), 11)
    want, got, res = run(op, [(x, "secret")], {"dim": 1})
    within(op, got, want)
    _, _, _, K = softmax_family.recip_const(1.0, 10.0)
    extra = 6 + (K if op == "softmax" else 3 + 3)  # exp chain, then 1/s or log s
    assert rounds(res) == {max_rounds((64, 10), 1) + extra}
    assert max(rounds(res)) <= 30
    top2 = want.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 2 ** -10
    assert torch.equal(got.argmax(1)[clear], want.argmax(1)[clear])
    if op == "softmax":
        assert (got.sum(1) - 1).abs().max() <= 10 * approx.ERROR[op][0]


def test_softmax_of_wide_logits_and_single_entries():
    """A spread far beyond exp's range (the small terms are zeroed, not garbage), rows of
    one element (probability 1), and softmax along the first dim."""
    x = on_grid(torch.tensor([[0.0, -50.0, 300.0, 299.5], [7.0, 7.0, 7.0, 7.0], [-1e3, 1e3, 0.0, 1.0]],
                             dtype=torch.float64))
    for op in ("softmax", "log_softmax"):
        for dim in (0, 1):
            want, got, _ = run(op, [(x, "secret")], {"dim": dim})
            within(op, got, want)
    want, got, _ = run("softmax", [(x[:, :1], "secret")], {"dim": 1})
    within("softmax", got, want)


# ---------------------------------------------------------------- obliviousness and scheduling


@pytest.mark.parametrize("op", UNARY + ["softmax"])
def test_costs_do_not_depend_on_the_values(op):
    """Rounds, bytes each party sends and receives, and the dealer's batch are functions
    of the plan alone."""
    shape = (3, 5)
    attrs = {"dim": 1} if op == "softmax" else None
    stats = []
    for seed in (1, 2):
        _, _, res = run(op, [(inputs(op, shape, seed), "secret")], attrs)
        stats.append({p: (s["rounds"], s["bytes_sent"], s["bytes_recv"], s.get("dealer_bytes"))
                      for p, s in res.stats.items() if p in res.parties or p == "dealer"})
    assert stats[0] == stats[1]


def test_one_node_at_a_time_gives_the_same_results():
    """merge=False runs nodes one by one: material is requested in another order across
    nodes but each protocol's own order is unchanged, so results keep their bounds."""
    x = inputs("sigmoid", (20,), 5)
    y = inputs("reciprocal", (20,), 6)
    b = Builder("t", ["alice", "bob"])
    xs = b.emit("share", [b.emit("load", attrs={"tag": "x", "owner": 0}, types=[TensorType("f32", (20,), private(0))])])
    ys = b.emit("share", [b.emit("load", attrs={"tag": "y", "owner": 1}, types=[TensorType("f32", (20,), private(1))])])
    g = verify(b.finish([b.emit("sigmoid", [xs]), b.emit("reciprocal", [ys])]))
    data = {"alice": {"x": x}, "bob": {"y": y}}
    merged = run_local(g, data)
    single = run_local(g, data, merge=False)
    for res in (merged, single):
        for i, (op, v) in enumerate((("sigmoid", x), ("reciprocal", y))):
            got = fixed.decode(sum(res.outputs[p][i].data for p in res.parties), FRAC, torch.float64)
            within(op, got, getattr(torch, op)(v))
    assert rounds(merged) == {12} and rounds(single) == {22}


def test_per_element_costs():
    """Bytes per element (2 parties) stay near the documented figures."""
    budget = {"reciprocal": (200, 900), "sigmoid": (240, 550), "exp": (140, 450)}
    for op, (sent, dealer) in budget.items():
        _, _, res = run(op, [(inputs(op, (2000,), 3), "secret")])
        assert max(res.stats[p]["bytes_sent"] for p in res.parties) <= sent * 2000, op
        assert res.stats["dealer"]["dealer_bytes"] <= dealer * 2000, op


# ---------------------------------------------------------------- batch_norm with secret statistics


def bn_bound(x, mean, var, w, eps):
    """rsqrt's bound, then two truncations (s = w r, then (x - mean) s)."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    r = 1 / torch.sqrt(var + eps)
    s_err = w.abs() * (2 ** -14 + 2 ** -16 * r) + ULP
    return (x - mean.reshape(shape)).abs() * s_err.reshape(shape) + 2 * ULP


@FEW
@given(vis=st.sampled_from(["secret", "var", "public_w"]), n=nparties, seed=seeds,
       shape=st.sampled_from([(2, 3), (2, 3, 4, 4), (1, 2, 5)]), lazy=st.booleans())
def test_batch_norm_with_secret_statistics(vis, n, seed, shape, lazy):
    g = torch.Generator().manual_seed(seed)
    C = shape[1]
    x = on_grid(torch.randn(shape, generator=g, dtype=torch.float64) * 3)
    mean = on_grid(torch.randn(C, generator=g, dtype=torch.float64))
    var = on_grid(torch.exp2(torch.empty(C, dtype=torch.float64).uniform_(-4, 8, generator=g)))
    w = on_grid(torch.randn(C, generator=g, dtype=torch.float64))
    b = on_grid(torch.randn(C, generator=g, dtype=torch.float64))
    eps = 2.0 ** -10
    if vis == "secret":
        ops = [(x, "secret"), (mean, "secret"), (var, "secret"), (w, "secret"), (b, "secret")]
    elif vis == "var":
        ops = [(x, "secret"), (mean, 1), (var, "secret"), (w, 1), (b, 1)]
    else:
        ops = [(x, "secret"), (mean, "secret"), (var, "secret"), (w, "public"), (b, "public")]
    want, got, res = run("batch_norm", ops, {"eps": eps}, nparties=n, lazy=lazy)
    assert ((got - want).abs() - bn_bound(x, mean, var, w, eps)).max() <= 0
    if n == 2:  # rsqrt 8, s = w r 1 (local for a public w), (x - mean) s 1
        assert rounds(res) == {9 if vis == "public_w" else 10}


# ---------------------------------------------------------------- stated bounds agree with the registrations


def _bound_line(name, b):
    return f"{name}: {b}; rounds: {b.rounds}"


def test_each_family_docstring_states_its_registered_bounds():
    """Every family file's docstring has a line ``op: <bound>; rounds: <rounds>`` equal to
    the bound registered for op, and registers it in the file of the op's protocol."""
    import sys

    from planc.ir import ops

    seen = set()
    for name, b in approx.BOUNDS.items():
        if name == "rsqrt":
            mod = approx.roots
        else:
            d = ops.get(name)
            mod = sys.modules[d.rule("protocol").__module__]
            assert d.rules["bound"].where.rpartition(":")[0] == mod.__file__, (name, d.rules["bound"].where)
        assert mod in approx.FAMILIES, (name, mod.__name__)
        lines = {line.strip() for line in mod.__doc__.splitlines()}
        assert _bound_line(name, b) in lines, f"{mod.__name__}'s docstring does not state: {_bound_line(name, b)}"
        seen.add(name)
    # and no family states a bound that is not registered (or states one twice)
    for mod in approx.FAMILIES:
        stated = [line.strip().split(":")[0] for line in mod.__doc__.splitlines() if "|error| <=" in line]
        assert len(stated) == len(set(stated)) and set(stated) <= seen, (mod.__name__, stated)


def test_the_overview_table_agrees_with_the_registrations():
    """The table in approx/__init__.py's docstring: range, ABS, REL and rounds per op."""
    import math
    import re

    def _pow2(v):
        return f"2^{int(math.log2(v))}" if v > 0 and math.log2(v).is_integer() else f"{v:g}"

    rows = {}
    lines = approx.__doc__.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:3] == ["op", "range", "ABS"])
    for line in lines[start + 1:]:
        if not line.strip():
            break
        cols = re.split(r"\s{2,}", line.strip())
        rows[cols[0]] = cols[1:5]
    assert set(rows) == set(approx.BOUNDS)
    for name, b in approx.BOUNDS.items():
        want = [b.domain, _pow2(b.abs), _pow2(b.rel) if b.rel else "-", b.rounds]
        assert rows[name] == want, (name, rows[name], want)
    assert approx.ERROR == {n: (b.abs, b.rel) for n, b in approx.BOUNDS.items()}
