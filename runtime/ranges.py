"""Fixed-point range: how large a plan's inputs may be for its results to be trusted.

Secret values live in Z_2^64 with f fractional bits (f = 16 unless the plan says
otherwise). A value v is held as v * 2^(f + e) ring units, e being the truncation still
pending on it (a product leaves e = f, a power-of-two scale adds to it; the cost run
records e for every value, runtime/bounds.py). Two things go wrong when v is too large:

- **overflow**: |v| 2^(f+e) must stay below 2^63 or the ring wraps and v comes back as
  something else entirely (this is what turns alice's 1e13 in the secure mean into 3.9e8:
  the mean is held at 2^32, and 1e13 * 2^32 > 2^63). The check keeps |v| 2^(f+e) <= 2^62.
- **truncation failure**: truncating v (2 parties: SecureML, local; more: a masked
  opening) fails with probability about |v| 2^(f+e) / 2^63 per element
  (protocols/common.py), wrong by ~2^(64-f-e) when it does. The check keeps it at most
  2^-bits per element, bits = ``DEFAULT_SECURITY_BITS`` (20) or the policy's
  ``truncation_security_bits``: |v| 2^(f+e) <= 2^(63 - bits) for every value that is
  truncated (used by an op that needs the standard scale, by a scaling op that may settle
  it, or leaving a loop trip or the plan still shared; a value only revealed is divided
  exactly and needs the overflow bound alone).

Why 2^-20 and not 2^-40: with f = 16 a product of two values of magnitude 1 is truncated
at 2^32 ring units, which fails with probability 2^-31 per element whatever the check
does; 2^-40 would allow no value above 2^-9 after a product. 2^-20 leaves the seed CNN's
inputs (images in [0, 1], weights up to 1.6 in its first layer) a factor of 4 of room.

Derivation. Every plan value gets a magnitude bound |v| <= p(A), a polynomial in A with
non-negative coefficients, where A bounds every input (load or public input) it depends
on; constants enter with their true magnitude. Rules: sums add; products multiply, times
the contracted length (K = C_in kh kw for a convolution, the inner dimension for a matrix
product), with every encoded operand allowed its rounding 2^-f; a division by a known
constant c divides by min |c|; means and poolings do not grow values beyond the rounding
of 1/n (n 2^-(f+1) relative); sums grow by n; relu, max, pooling and shape ops keep the
bound; comparisons give 1, sigmoid/tanh/softmax 1, sqrt(x) <= x + 1; a batch norm scales
by max |w / sqrt(var + eps)| when the plan holds its statistics; loops iterate the
body's bounds to a fixed point (a few rounds) or give up. The analysis covers values of
degree at most 2 in the inputs — the inputs themselves, linear maps of them and one
product of two (a layer of weights times data): there the bound is what the plan
computes at worst, and each constraint above becomes a quadratic in A. Beyond (a deeper
layer, whose size depends on trained weights together with the data; exp, reciprocal,
log, rsqrt, log_softmax and a batch norm with statistics not in the plan) magnitudes cannot be bounded from input checks, and the check
says nothing about them; the approximations state their own domains (``planc ops NAME``).

Each input's limit is the largest A that keeps every constraint it takes part in (with
all inputs of that constraint at A — the bounds are monotone, so any inputs within their
limits keep it); an input in no constraint is not checked here (the encoder still refuses
values beyond 2^(62-f), runtime/fixed.py). The interpreter checks every load and public
input against its limit before using it (``Interpreter.source``): a value outside is a
DataError naming the party, the tag, the value, the limit and the node whose range sets
it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from planc.ir import ops
from planc.ir.graph import Graph, Node

from . import fixed

DEFAULT_SECURITY_BITS = 20  # truncation failure probability at most 2^-20 per element
OVERFLOW_BITS = 62  # |v| 2^(f+e) <= 2^62: a factor of two from wrapping
_SCALING = frozenset({"div", "mean", "avg_pool2d", "adaptive_avg_pool2d"})  # may settle their operand
_TRUNCATING = frozenset({"div", "mean", "avg_pool2d", "adaptive_avg_pool2d", "batch_norm"})
_KEEP = frozenset({"share", "reveal", "neg", "relu", "max", "max_pool2d"})
_ONE = frozenset({"gt", "lt", "ge", "le", "eq", "sigmoid", "tanh", "softmax"})


@dataclass(frozen=True)
class Mag:
    """|value| <= c[0] + c[1] A + c[2] A^2 for inputs bounded by A; `src` the inputs involved."""

    c: tuple
    src: frozenset = frozenset()

    @property
    def degree(self) -> int:
        return max((i for i, v in enumerate(self.c) if v), default=0)

    def at(self, A: float) -> float:
        return self.c[0] + self.c[1] * A + self.c[2] * A * A


def _const(v: float) -> Mag:
    return Mag((abs(float(v)), 0.0, 0.0))


def _add(*ms):
    if any(m is None for m in ms):
        return None
    return Mag(tuple(sum(m.c[i] for m in ms) for i in range(3)), frozenset().union(*(m.src for m in ms)))


def _scale(m, k: float):
    if m is None or not math.isfinite(k):
        return None
    return Mag(tuple(v * k for v in m.c), m.src)


def _mul(a, b):
    if a is None or b is None or a.degree + b.degree > 2:
        return None
    c = [0.0, 0.0, 0.0]
    for i, x in enumerate(a.c):
        for j, y in enumerate(b.c):
            if x and y:
                c[i + j] += x * y
    return Mag(tuple(c), a.src | b.src)


def _max(*ms):
    if any(m is None for m in ms):
        return None
    return Mag(tuple(max(m.c[i] for m in ms) for i in range(3)), frozenset().union(*(m.src for m in ms)))


def _le(a, b) -> bool:
    if b is None:
        return True
    if a is None:
        return False
    return all(x <= y * (1 + 1e-12) + 1e-300 for x, y in zip(a.c, b.c)) and a.src <= b.src


@dataclass(frozen=True)
class Constraint:
    mag: Mag
    log2_cap: int  # |v| 2^scale <= 2^log2_cap
    scale: int  # ring units per unit of the value, log2
    node: Node
    kind: str  # "overflow" | "truncation"

    def limit(self) -> float:
        """The largest A with mag(A) 2^scale <= 2^log2_cap."""
        C = 2.0 ** (self.log2_cap - self.scale)
        c0, c1, c2 = self.mag.c
        room = C - c0
        if room < 0:
            return 0.0
        if c2 > 0:
            return (-c1 + math.sqrt(c1 * c1 + 4 * c2 * room)) / (2 * c2)
        if c1 > 0:
            return room / c1
        return math.inf


@dataclass(frozen=True)
class Limit:
    """Inputs of value `name` must have |x| <= bound (and be finite)."""

    bound: float
    constraint: Constraint | None  # the one that sets it; None: the encoding range

    def why(self) -> str:
        c = self.constraint
        if c is None:
            return "no fixed-point value of the plan depends on it within the analysis"
        what = ("not to wrap the ring" if c.kind == "overflow"
                else f"to truncate with failure probability at most 2^-{63 - c.log2_cap} per element")
        return (f"{c.node.where()} holds {_poly(c.mag)} at 2^{c.scale} ring units per unit, and must stay within "
                f"2^{c.log2_cap} {what}")


def analyse(graph: Graph, constants=None, extras=None, *, frac: int = fixed.DEFAULT_FRAC_BITS,
            bits: int = DEFAULT_SECURITY_BITS, lazy: bool = True) -> list[Constraint]:
    """The constraints the plan's fixed-point values put on its inputs (module docstring)."""
    return _Analysis(graph, constants or {}, extras or {}, frac, bits, lazy).run()


def input_limits(graph: Graph, constants=None, extras=None, *, frac: int = fixed.DEFAULT_FRAC_BITS,
                 bits: int = DEFAULT_SECURITY_BITS, lazy: bool = True) -> dict[str, Limit]:
    """{value name of a load or input: Limit}: the largest magnitude each may have."""
    cons = analyse(graph, constants, extras, frac=frac, bits=bits, lazy=lazy)
    free = Limit(math.inf, None)  # in no constraint: plaintext only, or beyond what the analysis covers
    out = {}
    for n in graph.walk():
        if n.op in ("load", "input"):
            out[n.result.name] = free
    for c in cons:
        A = c.limit()
        for s in c.mag.src:
            if s in out and A < out[s].bound:
                out[s] = Limit(A, c)
    return out


def range_problem(x: torch.Tensor, limit: Limit) -> str | None:
    """Why tensor `x` is outside `limit`, or None."""
    if not isinstance(x, torch.Tensor) or x.numel() == 0 or x.dtype == torch.bool or limit.bound == math.inf:
        return None
    if x.is_floating_point():
        xd = x.detach()
        finite = torch.isfinite(xd)
        if not bool(finite.all()):
            return "holds a value that is not finite (nan or inf)"
        big = float(xd.abs().max())
    else:
        big = float(x.detach().abs().max())
    if big <= limit.bound:
        return None
    return (f"|value| reaches {big:.4g}, above {limit.bound:.4g}, the largest magnitude this plan computes "
            f"correctly with: {limit.why()}")


class _Analysis:
    def __init__(self, graph, constants, extras, frac, bits, lazy):
        self.g, self.constants, self.extras = graph, constants, extras
        self.f, self.bits, self.lazy = frac, bits, lazy
        self.delta = 2.0 ** -frac  # rounding of an encoded operand
        self.out: list[Constraint] = []
        self.collect = True

    def run(self):
        env: dict = {}
        self.block(self.g.nodes, env)
        return self.out

    # ---- blocks
    def block(self, nodes, env):
        uses = _uses(nodes)
        for n in nodes:
            if ops.get(n.op).terminator:
                return [env.get(v.name) for v in n.operands]
            res = self.node(n, env)
            for r, m in zip(n.results, res):
                env[r.name] = m
                if self.collect and r.type.vis.is_secret:
                    self.constrain(n, r, m, uses.get(r.name, ()))
        return []

    def constrain(self, n: Node, r, m, users):
        if m is None or not m.src:
            return
        e = self.extras.get(r.name, 0)
        truncating = ops.get(n.op).product or n.op in _TRUNCATING
        scale = self.f + (max(e, self.f) if truncating else e)
        self.out.append(Constraint(m, OVERFLOW_BITS, scale, n, "overflow"))
        truncated = (truncating and (e == 0 or not self.lazy)) or (e > 0 and any(
            u is None or not ops.get(u.op).accepts_pending_truncation or u.op in _SCALING for u in users))
        if truncated:
            self.out.append(Constraint(m, 63 - self.bits, scale, n, "truncation"))

    # ---- nodes
    def node(self, n: Node, env) -> list:
        if n.op == "loop":
            return self.loop(n, env)
        xs = [env.get(v.name) for v in n.operands]
        try:
            return [self.rule(n, xs)] * max(1, len(n.results))
        except (KeyError, IndexError, TypeError, ValueError):
            return [None] * max(1, len(n.results))

    def rule(self, n: Node, xs):
        op, d = n.op, ops.get(n.op)
        if op == "load" or op == "input":
            return Mag((0.0, 1.0, 0.0), frozenset({n.result.name}))
        if op == "const":
            if n.attr("value") is not None:
                return _const(n.attr("value"))
            t = self.constants.get(n.attr("name"))
            if t is None or t.numel() == 0:
                return _const(0.0)
            return _const(float(t.detach().to(torch.float64).abs().max())) if t.dtype != torch.bool else _const(1)
        if op == "call":
            return None
        if d.shape_only or op in _KEEP:
            return xs[0]
        if op in ("add", "sub"):
            return _add(xs[0], xs[1])
        if op in _ONE:
            return _const(1.0)
        dl = self.delta
        if op == "mul":
            return _mul(_add(xs[0], _const(dl)), _add(xs[1], _const(dl)))
        if op in ("matmul", "linear", "conv2d"):
            w = n.operands[1].type.shape
            if op == "conv2d":
                k = w[1] * math.prod(w[2:])
            elif op == "linear":
                k = w[-1]
            else:
                k = n.operands[0].type.shape[-1] if n.operands[0].type.rank else 1
            z = _scale(_mul(_add(xs[0], _const(dl)), _add(xs[1], _const(dl))), k)
            return _add(z, xs[2]) if len(xs) > 2 else z
        if op == "div":
            c = self._known_min(n.operands[1], xs[1])
            if not c:
                return None
            return _scale(xs[0], 1.0 / c + dl)
        if op == "sum":
            return _scale(xs[0], self._count(n))
        if op in ("mean", "avg_pool2d", "adaptive_avg_pool2d"):
            k = self._count(n)
            return _scale(xs[0], 1.0 + k * 2.0 ** -(self.f + 1))
        if op == "where":
            return _max(xs[1], xs[2])
        if op in ("cat", "stack"):
            return _max(*xs)
        if op == "pad":
            return _max(xs[0], _const(n.attr("value")))
        if op == "argmax":
            return _const(max(1, n.operands[0].type.numel))
        if op == "sqrt":
            return _add(xs[0], _const(1.0))
        if op == "batch_norm":
            # scale w / sqrt(var + eps): bounded only when the plan holds var and w as constants
            x, mean, _var, w, b = xs
            s = self._known_scale(n)
            if s is None:
                return None
            return _add(_scale(_add(x, mean), s + dl), b)
        return None  # exp, log, reciprocal, rsqrt, log_softmax, ...: not bounded by input checks

    def _count(self, n: Node) -> int:
        """How many elements one output element of a reduction or pooling sums."""
        src = n.operands[0].type.shape
        if n.op in ("sum", "mean"):
            dims = n.attr("dim")
            if dims is None:
                return max(1, math.prod(src))
            return max(1, math.prod(src[d] for d in dims))
        if n.op == "avg_pool2d":
            return math.prod(n.attr("kernel"))
        H, W = src[-2:]
        oh, ow = n.attr("output")
        return max(1, math.ceil(H / max(oh, 1)) + 1) * max(1, math.ceil(W / max(ow, 1)) + 1)

    def _known_scale(self, n: Node) -> float | None:
        """max |w / sqrt(var + eps)| of a batch_norm whose var and w are constants."""
        var, w = (self._constant(v) for v in n.operands[2:4])
        if var is None or w is None:
            return None
        return float((w.to(torch.float64).abs() / torch.sqrt(var.to(torch.float64) + n.attr("eps"))).max())

    def _constant(self, v):
        """The tensor of a value the plan holds as a constant, else None."""
        if not hasattr(self, "_def"):
            self._def = {r.name: x for x in self.g.walk() for r in x.results}
        node = self._def.get(v.name)
        if node is None or node.op != "const":
            return None
        if node.attr("value") is not None:
            return torch.tensor(float(node.attr("value")))
        t = self.constants.get(node.attr("name"))
        return t if t is not None and t.numel() else None

    def _known_min(self, v, m) -> float | None:
        """min |c| of a divisor known from the plan (a constant), else None."""
        if m is None or m.src:
            return None
        t = self._constant(v)
        if t is None:
            return None
        return float(t.detach().to(torch.float64).abs().min()) or None

    def loop(self, n: Node, env):
        (body,) = n.regions
        trips = n.attr("trips")
        init = [env.get(v.name) for v in n.operands]
        if trips == 0:
            return init
        carried = init
        saved, self.collect = self.collect, False
        inner = dict(env)
        for _ in range(8):
            inner[body.params[0].name] = _const(max(0, trips - 1))
            for p, m in zip(body.params[1:], carried):
                inner[p.name] = m
            new = self.block(body.nodes, inner)
            if all(_le(a, b) for a, b in zip(new, carried)):
                break
            carried = [_max(a, b) if a is not None and b is not None else None for a, b in zip(new, carried)]
        else:
            carried = [None] * len(carried)
        self.collect = saved
        inner[body.params[0].name] = _const(max(0, trips - 1))
        for p, m in zip(body.params[1:], carried):
            inner[p.name] = m
        out = self.block(body.nodes, inner)
        for k, v in inner.items():
            env.setdefault(k, v)
        return [_max(a, b) if a is not None and b is not None else None for a, b in zip(out, carried)]


def integral_names(graph: Graph, constants) -> frozenset:
    """Public values the plan itself shows to be small whole numbers (a product by one is
    exact and needs no truncation): decided from the plan alone, so that the dealer, every
    party and the cost model make the same choice."""
    out = set()
    for n in graph.walk():
        if n.op != "const":
            continue
        v = n.attr("value")
        if v is not None and float(v).is_integer() and abs(v) < 2 ** 20:
            out.add(n.result.name)
        t = constants.get(n.attr("name")) if n.attr("name") is not None else None
        if t is not None and t.numel() and not t.is_floating_point() or (
                t is not None and t.numel() and torch.all(t == t.round()) and t.abs().max() < 2 ** 20):
            out.add(n.result.name)
    return frozenset(out)


def _poly(m: Mag) -> str:
    """The bound as people read it: ``9 A^2 + 1 A + 0.3`` with A the inputs' magnitude."""
    terms = [f"{m.c[2]:.3g} A^2" if m.c[2] else "", f"{m.c[1]:.3g} A" if m.c[1] else "",
             f"{m.c[0]:.3g}" if m.c[0] else ""]
    return "|v| <= " + (" + ".join(t for t in terms if t) or "0") + " (A: |inputs|)"


def _uses(nodes) -> dict:
    """value name -> the nodes of this block that use it (None: used inside a region or by
    a terminator, where it may be truncated)."""
    out: dict = {}
    for n in nodes:
        term = ops.get(n.op).terminator
        for v in n.operands:
            out.setdefault(v.name, []).append(None if term else n)
        if n.regions:
            for name in _outer_reads(n):
                out.setdefault(name, []).append(None)
    return out


def _outer_reads(node: Node) -> set:
    """Values a node's regions read from outside them (as interpreter.outer_reads)."""
    defined, used = set(), set()
    stack = [r for r in node.regions]
    while stack:
        r = stack.pop()
        defined.update(p.name for p in r.params)
        for n in r.nodes:
            used.update(v.name for v in n.operands)
            defined.update(x.name for x in n.results)
            stack.extend(n.regions)
    return used - defined
