"""Hypothesis strategies for random *valid* graphs, built with the Builder.

`graphs()` draws a plan over 1-4 parties: sources of every visibility, share/reveal,
every op with its attributes (defaults sometimes spelled out, sometimes left out),
broadcasting, variadic ops, models called at a party, and loops nested up to depth 2
that carry several values and use values from above. Every graph passes `verify`.

Each op maker picks its first operand from the values in scope when one fits, or makes a
fresh source of a fitting shape; further operands share a visibility group with it so
that the op's visibility rule holds (`public` mixes with anything, one owner's private
values with each other, secrets with public values only).
"""
from __future__ import annotations

from hypothesis import strategies as st

from planc.ir import ops
from planc.ir.builder import Builder
from planc.ir.graph import Loc
from planc.ir.types import DTYPES, FLOAT_DTYPES, INT_RANGE, PUBLIC, SECRET, TensorType, join, private

I64 = TensorType("i64", (), PUBLIC)

# party names include words that are keywords elsewhere in the text format;
# "all" is left out: `reveal %x to all` means every party
_party_names = st.sampled_from(["alice", "bob", "carol", "from", "to", "loop", "public", "none"]) | st.from_regex(
    r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True
).filter(lambda s: s != "all")
_graph_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,8}", fullmatch=True)
_hints = st.none() | st.sampled_from(["x", "w", "h.1", "9lives", "ü", "", "loop", "return", "all", "%"])
_files = st.sampled_from(["model.py", 'we"ird\\name.py', "ünïcode/π.py", "a b.py"]) | st.text(max_size=8)
_modules = st.sampled_from(["features.3", "fc", "layer1.0.conv1", 'we"ird', ""]) | st.text(max_size=6)
_classes = st.none() | st.sampled_from(["Conv2d", "Sequential", "in", "ü"]) | st.text(max_size=6)
_locs = (st.none() | st.builds(Loc, _files, st.integers(0, 10**6))
         | st.builds(Loc, _files, st.integers(0, 10**6), _modules, _classes))
_texts = st.text(max_size=8)
_floats = st.floats(allow_nan=False) | st.integers(-3, 3)  # ints check the float conversion
_dtypes = st.just("f32") | st.sampled_from(DTYPES)


def _inline_values(dtype):
    """Values an inline const of `dtype` holds (the verifier rejects the others)."""
    if dtype == "bool":
        return st.sampled_from([0.0, 1.0]) | st.integers(0, 1)
    if dtype in INT_RANGE:
        lo, hi = INT_RANGE[dtype]
        # up to the largest float <= hi (2**63 - 1 is no float); ints check the float conversion
        return st.floats(float(lo), float(hi) if float(hi) <= hi else float(hi) - 1024.0) | st.integers(-3, 3)
    return _floats


def _shape(lo=0, hi=3, dim_lo=1, dim_hi=4):
    return st.lists(st.integers(dim_lo, dim_hi), min_size=lo, max_size=hi).map(tuple)


class _Gen:
    def __init__(self, draw, b: Builder, nparties: int):
        self.draw = draw
        self.b = b
        self.vis_all = [PUBLIC, SECRET] + [private(k) for k in range(nparties)]
        self.nparties = nparties
        self.pool = []  # values in scope

    # ---- emitting
    def emit(self, op, operands=(), attrs=None, types=None, regions=()):
        out = self.b.emit(op, operands, attrs, types=types, regions=regions,
                          loc=self.draw(_locs), name=self.draw(_hints))
        out = out if isinstance(out, tuple) else (out,)
        self.pool.extend(out)
        return out[0] if len(out) == 1 else out

    def maybe(self, attrs: dict, **optional):
        """Pass optional attributes or leave them to their defaults, at random."""
        for k, v in optional.items():
            if self.draw(st.booleans()):
                attrs[k] = v
        return attrs

    # ---- operands
    def leaf(self, vis, shape, dtype):
        t = TensorType(dtype, tuple(shape), vis)
        d = self.draw
        if vis.is_private:
            return self.emit("load", attrs={"tag": d(st.text(min_size=1, max_size=8)), "owner": vis.owner},
                             types=[t])
        if vis.is_secret:
            base = self.leaf(d(st.sampled_from([v for v in self.vis_all if not v.is_secret])), shape, dtype)
            return self.emit("share", [base])
        kind = d(st.sampled_from(["input", "const", "inline"] if shape == () else ["input", "const"]))
        if kind == "input":
            return self.emit("input", attrs={"index": d(st.integers(0, 5))}, types=[t])
        if kind == "const":
            return self.emit("const", attrs={"name": d(_texts)}, types=[t])
        return self.emit("const", attrs={"value": d(_inline_values(dtype))}, types=[t])

    def pick(self, ok=lambda t: True, shape=None, dtypes=DTYPES, vis=None):
        """A value in scope whose type passes `ok`, or a fresh source of `shape`."""
        vis = vis or self.vis_all
        cands = [v for v in self.pool if ok(v.type) and v.type.dtype in dtypes and v.type.vis in vis]
        if cands and self.draw(st.booleans()):
            return self.draw(st.sampled_from(cands))
        s = self.draw(shape if shape is not None else _shape())
        dt = self.draw(st.sampled_from(dtypes)) if "f32" not in dtypes else self.draw(
            st.just("f32") | st.sampled_from(dtypes))
        return self.leaf(self.draw(st.sampled_from(vis)), s, dt)

    def group(self, x):
        """Visibilities that may join x in one op."""
        v = x.type.vis
        if v.is_public:
            v = self.draw(st.sampled_from(self.vis_all))
        return [PUBLIC, v] if not v.is_public else [PUBLIC]

    def like(self, shape, vis, dtypes=DTYPES):
        """An operand of exactly `shape` in visibility group `vis`."""
        return self.pick(lambda t: t.shape == tuple(shape), st.just(tuple(shape)), dtypes, vis)

    def broadcastable(self, shape, vis, dtypes=DTYPES):
        d = self.draw
        drop = d(st.integers(0, len(shape)))
        s = [1 if d(st.booleans()) else n for n in shape[drop:]]
        if not drop and d(st.integers(0, 3)) == 0:  # a new leading dim fits only a full shape
            s = [d(st.integers(1, 3))] + s

        def ok(t):
            try:
                ops.broadcast(t.shape, tuple(shape))
                return True
            except ops.TypeRuleError:
                return False

        return self.pick(ok, st.just(tuple(s)), dtypes, vis)

    # ---- op makers: each emits one op (and maybe sources for it)
    def op_source(self):
        self.leaf(self.draw(st.sampled_from(self.vis_all)), self.draw(_shape()), self.draw(_dtypes))

    def op_unary(self):
        self.emit(self.draw(st.sampled_from(["neg", "relu"])), [self.pick()])

    def op_unary_float(self):
        name = self.draw(st.sampled_from(["sigmoid", "tanh", "exp", "log", "reciprocal", "sqrt"]))
        self.emit(name, [self.pick(dtypes=FLOAT_DTYPES)])

    def op_binary(self):
        name = self.draw(st.sampled_from(["add", "sub", "mul", "gt", "lt", "ge", "le", "eq"]))
        x = self.pick()
        self.emit(name, [x, self.broadcastable(x.type.shape, self.group(x))])

    def op_div(self):
        x = self.pick()
        v = x.type.vis
        # a secret is divided only by a public value
        vis = [PUBLIC] if v.is_secret else [PUBLIC, v] if v.is_private else [PUBLIC] + self.vis_all[2:]
        self.emit("div", [x, self.broadcastable(x.type.shape, vis)])

    def op_where(self):
        c = self.pick(dtypes=("bool",))
        vis = self.group(c)
        x = self.broadcastable(c.type.shape, vis)
        y = self.broadcastable(c.type.shape, vis)
        try:  # x and y each fit c, but may not fit each other
            ops.broadcast(c.type.shape, x.type.shape, y.type.shape)
        except ops.TypeRuleError:
            y = self.like(c.type.shape, vis)
        self.emit("where", [c, x, y])

    def op_matmul(self):
        x = self.pick(lambda t: t.rank >= 1, _shape(1, 3))
        k, m = x.type.shape[-1], self.draw(st.integers(1, 3))
        yshape = self.draw(st.sampled_from([(k,), (k, m), (1, k, m)]))
        self.emit("matmul", [x, self.like(yshape, self.group(x))])

    def op_linear(self):
        x = self.pick(lambda t: t.rank >= 1, _shape(1, 3))
        vis = self.group(x)
        o = self.draw(st.integers(1, 3))
        args = [x, self.like((o, x.type.shape[-1]), vis)]
        if self.draw(st.booleans()):
            args.append(self.like((o,), vis))
        self.emit("linear", args)

    def op_conv2d(self):
        d = self.draw
        x = self.pick(lambda t: t.rank == 4 and min(t.shape) >= 1 and min(t.shape[2:]) >= 2, _shape(4, 4, 1, 4).map(lambda s: s[:2] + (s[2] + 2, s[3] + 2)))
        n, c, h, w = x.type.shape
        g = d(st.sampled_from([i for i in range(1, c + 1) if c % i == 0]))
        o = g * d(st.integers(1, 2))
        k = [d(st.integers(1, 3)) for _ in range(2)]
        s = [d(st.integers(1, 2)) for _ in range(2)]
        p = [d(st.integers(0, 1)) for _ in range(2)]
        dl = [d(st.integers(1, 2)) for _ in range(2)]
        for i, size in enumerate((h, w)):
            if dl[i] * (k[i] - 1) + 1 > size + 2 * p[i]:
                k[i], dl[i] = 1, 1
        vis = self.group(x)
        args = [x, self.like((o, c // g, k[0], k[1]), vis)]
        if d(st.booleans()):
            args.append(self.like((o,), vis))
        # an attribute off its default must be given; one at its default may be
        a = {k: v for k, v, default in [("stride", s, [1, 1]), ("padding", p, [0, 0]),
                                        ("dilation", dl, [1, 1]), ("groups", g, 1)]
             if v != default or d(st.booleans())}
        self.emit("conv2d", args, a)

    def pool_attrs(self, x, dilation=False):
        d = self.draw
        padded = d(st.booleans())
        k, s, p, dl = [], [], [], []
        for size in x.type.shape[-2:]:
            k.append(d(st.integers(1, min(3, size))))
            s.append(d(st.integers(1, 2)))
            p.append(d(st.integers(0, k[-1] // 2)) if padded else 0)
            # a dilation of 2 must still leave the window inside the padded input
            dl.append(d(st.integers(1, 2)) if dilation and 2 * (k[-1] - 1) < size + 2 * p[-1] else 1)
        a = {"kernel": k, "stride": s}
        if padded:
            a["padding"] = p
        if dilation and (dl != [1, 1] or d(st.booleans())):
            a["dilation"] = dl
        return self.maybe(a, ceil_mode=d(st.booleans()))

    def op_pool(self):
        x = self.pick(lambda t: t.rank in (3, 4) and t.numel > 0, _shape(3, 4))
        if self.draw(st.booleans()):
            self.emit("max_pool2d", [x], self.pool_attrs(x, dilation=True))
        else:
            a = self.maybe(self.pool_attrs(x), count_include_pad=self.draw(st.booleans()))
            self.emit("avg_pool2d", [x], a)

    def op_adaptive(self):
        x = self.pick(lambda t: t.rank in (3, 4), _shape(3, 4))
        self.emit("adaptive_avg_pool2d", [x], {"output": self.draw(_shape(2, 2, 1, 3))})

    def op_batch_norm(self):
        x = self.pick(lambda t: t.rank >= 2, _shape(2, 4))
        vis = self.group(x)
        c = x.type.shape[1]
        rest = [self.like((c,), vis) for _ in range(4)]
        self.emit("batch_norm", [x, *rest], self.maybe({}, eps=self.draw(_floats)))

    def op_softmax(self):
        x = self.pick(dtypes=FLOAT_DTYPES)
        dim = self.draw(st.integers(0, max(x.type.rank, 1) - 1))
        self.emit(self.draw(st.sampled_from(["softmax", "log_softmax"])), [x], {"dim": dim})

    def op_reduce(self):
        name = self.draw(st.sampled_from(["sum", "mean"]))
        x = self.pick(dtypes=FLOAT_DTYPES if name == "mean" else DTYPES)
        dims = self.draw(st.none() | st.permutations(range(x.type.rank)).flatmap(
            lambda p: st.integers(0, len(p)).map(lambda n: p[:n])))
        self.emit(name, [x], self.maybe({}, dim=dims, keepdim=self.draw(st.booleans())))

    def op_max(self):
        x = self.pick(lambda t: t.numel > 0)
        dim = self.draw(st.none() | st.integers(0, max(x.type.rank, 1) - 1))
        name = self.draw(st.sampled_from(["max", "argmax"]))
        self.emit(name, [x], self.maybe({}, dim=dim, keepdim=self.draw(st.booleans())))

    def op_reshape(self):
        x = self.pick()
        s = x.type.shape
        shape = self.draw(st.sampled_from([s[::-1], (x.type.numel,), s + (1,), () if x.type.numel == 1 else s]))
        self.emit("reshape", [x], {"shape": shape})

    def op_flatten(self):
        x = self.pick()
        r = max(x.type.rank, 1)
        start = self.draw(st.integers(0, r - 1))
        end = self.draw(st.integers(start, r - 1))
        a = {"end": end}
        if start or self.draw(st.booleans()):
            a["start"] = start
        self.emit("flatten", [x], a)

    def op_transpose(self):
        x = self.pick()
        r = max(x.type.rank, 1)
        self.emit("transpose", [x], {"dim0": self.draw(st.integers(0, r - 1)), "dim1": self.draw(st.integers(0, r - 1))})

    def op_permute(self):
        x = self.pick()
        self.emit("permute", [x], {"dims": self.draw(st.permutations(range(x.type.rank)))})

    def op_slice(self):
        x = self.pick(lambda t: t.rank >= 1, _shape(1, 3))
        d = self.draw(st.integers(0, x.type.rank - 1))
        n = x.type.shape[d]
        start = self.draw(st.integers(0, n))
        end = self.draw(st.integers(start, n))
        a = self.maybe({"dim": d, "start": start, "end": end}, step=self.draw(st.integers(1, 3)))
        self.emit("slice", [x], a)

    def op_index(self):
        x = self.pick(lambda t: t.rank >= 1 and t.numel > 0, _shape(1, 3))
        d = self.draw(st.integers(0, x.type.rank - 1))
        self.emit("index", [x], {"dim": d, "index": self.draw(st.integers(0, x.type.shape[d] - 1))})

    def op_cat(self):
        x = self.pick(lambda t: t.rank >= 1, _shape(1, 3))
        d = self.draw(st.integers(0, x.type.rank - 1))
        vis = self.group(x)
        xs = [x]
        for _ in range(self.draw(st.integers(0, 2))):
            s = list(x.type.shape)
            s[d] = self.draw(st.integers(1, 3))
            xs.append(x if self.draw(st.booleans()) else self.like(s, vis))
        self.emit("cat", xs, {"dim": d})

    def op_stack(self):
        x = self.pick()
        vis = self.group(x)
        xs = [x] + [self.like(x.type.shape, vis) for _ in range(self.draw(st.integers(0, 2)))]
        self.emit("stack", xs, {"dim": self.draw(st.integers(0, x.type.rank))})

    def op_pad(self):
        x = self.pick()
        pads = self.draw(st.lists(st.integers(0, 2), max_size=2 * x.type.rank).map(
            lambda p: p[: len(p) // 2 * 2]))
        self.emit("pad", [x], self.maybe({"pads": pads}, value=self.draw(_floats)))

    def op_squeeze(self):
        x = self.pick()
        ones = [i for i, n in enumerate(x.type.shape) if n == 1]
        dims = self.draw(st.permutations(ones).flatmap(lambda p: st.integers(0, len(p)).map(lambda n: p[:n])))
        self.emit("squeeze", [x], self.maybe({}, dims=dims))

    def op_unsqueeze(self):
        x = self.pick()
        self.emit("unsqueeze", [x], {"dim": self.draw(st.integers(0, x.type.rank))})

    def op_expand(self):
        x = self.pick()
        shape = [self.draw(st.integers(1, 3)) if n == 1 else n for n in x.type.shape]
        lead = self.draw(_shape(0, 1))
        self.emit("expand", [x], {"shape": list(lead) + shape})

    def op_share(self):
        self.emit("share", [self.pick(vis=[v for v in self.vis_all if not v.is_secret])])

    def op_reveal(self):
        x = self.pick(vis=self.vis_all[1:])
        to = [-1] + [k for k in range(self.nparties) if x.type.vis != private(k)]
        self.emit("reveal", [x], {"to": self.draw(st.sampled_from(to))})

    def op_call(self):
        d = self.draw
        owner = d(st.integers(0, self.nparties - 1))
        # plaintext of the owner, or shares: a model never sees another party's plaintext
        vis = d(st.sampled_from([[PUBLIC, private(owner)], [PUBLIC, SECRET]]))
        args = [self.pick(vis=vis) for _ in range(d(st.integers(0, 2)))]
        v = join(private(owner), *(a.type.vis for a in args))
        types = [TensorType(d(_dtypes), d(_shape()), v) for _ in range(d(st.integers(1, 2)))]
        self.emit("call", args, {"tag": d(st.text(min_size=1, max_size=8)), "owner": owner}, types=types)

    def op_loop(self, depth):
        d = self.draw
        carried = [self.pick() for _ in range(d(st.integers(0, 3)))]
        types = [v.type for v in carried]
        outer = self.pool
        params = self.b.begin_region([I64] + types, ["i"] + [d(_hints) or "c" for _ in types])
        self.pool = outer + list(params)
        for _ in range(d(st.integers(0, 4))):
            self.step(depth + 1)
        # every carried slot yields some value of its type in scope (its param at least)
        ys = [d(st.sampled_from([v for v in self.pool if v.type == t])) for t in types]
        region = self.b.end_region(ys, loc=d(_locs))
        self.pool = outer
        self.emit("loop", carried, {"trips": d(st.integers(0, 5))}, types=types, regions=[region])

    def step(self, depth):
        names = [n for n in dir(self) if n.startswith("op_") and n != "op_loop"]
        if depth < 2:
            names += ["op_loop"] * 3  # loops hold the interesting scoping: draw them often
        name = self.draw(st.sampled_from(sorted(names)))
        if name == "op_loop":
            self.op_loop(depth)
        else:
            getattr(self, name)()


@st.composite
def graphs(draw, max_steps: int = 8):
    """A random valid graph (passes verify)."""
    parties = draw(st.lists(_party_names, min_size=1, max_size=4, unique=True))
    b = Builder(draw(_graph_names), parties)
    gen = _Gen(draw, b, len(parties))
    for _ in range(draw(st.integers(0, max_steps))):
        gen.step(0)
    outs = draw(st.lists(st.sampled_from(gen.pool), max_size=3)) if gen.pool else []
    return b.finish(outs, loc=draw(_locs))
