"""What users write inside traced code: placeholders for remote data and models, and
the explicit visibility changes.

Each function works in two modes. While a trace is active it records a node and returns
a traced value; outside a trace it returns a *spec* that ``planc.trace`` accepts as an
input (``planc.load``, ``planc.public``) or marks an object (``planc.owned``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx

from planc.ir import ops
from planc.ir.graph import Value
from planc.ir.ops import OP
from planc.ir.types import DTYPES, PUBLIC, SECRET, TensorType, join, private

from .errors import TraceError, user_loc
from .lower import lowers
from .tracer import ACTIVE, PlancProxy, ir_dtype


def _dtype(dtype) -> str:
    if isinstance(dtype, str):
        if dtype in DTYPES:
            return dtype
        dtype = getattr(torch, dtype, None)
    if not isinstance(dtype, torch.dtype):
        raise TraceError(f"unknown dtype {dtype!r}", user_loc())
    return ir_dtype(dtype)


def _shape(shape, what):
    if shape is None:
        raise TraceError(f"{what}: shape= is required (the plan is compiled for static shapes)", user_loc())
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise TraceError(f"{what}: shape must be a sequence of ints, not {shape!r}", user_loc()) from None
    if any(s < 0 for s in shape):
        raise TraceError(f"{what}: negative size in shape {list(shape)}", user_loc())
    return shape


def _party_name(p, what) -> str:
    if not isinstance(p, str) or not p.isidentifier() or p == "all":
        raise TraceError(f"{what}: a party is named by an identifier (not 'all'), got {p!r}", user_loc())
    return p


@dataclass(frozen=True)
class TensorSpec:
    """Shape and dtype of a tensor; `public(...)` of a run-time argument."""

    shape: tuple
    dtype: str = "f32"

    def materialize(self, cx, hint):
        index = cx.b.__dict__.setdefault("_n_inputs", 0)
        cx.b._n_inputs += 1
        t = TensorType(self.dtype, self.shape, PUBLIC)
        return cx.b.emit("input", (), {"index": index}, types=[t], name=hint, loc=user_loc())


@dataclass(frozen=True)
class LoadSpec:
    """A tensor that party `owner` holds under `tag`."""

    tag: str
    owner: str
    shape: tuple
    dtype: str = "f32"

    def materialize(self, cx, hint=None):
        k = cx.b.party(self.owner)
        t = TensorType(self.dtype, self.shape, private(k))
        name = hint or f"{self.owner}_{self.tag}"
        return cx.b.emit("load", (), {"tag": self.tag, "owner": k}, types=[t], name=name, loc=user_loc(),
                         at_top=True)


def public(shape, dtype="float32") -> TensorSpec:
    """A public argument of the plan, given by whoever runs it."""
    return TensorSpec(_shape(shape, "public"), _dtype(dtype))


def spec(shape, dtype="float32") -> TensorSpec:
    return TensorSpec(_shape(shape, "spec"), _dtype(dtype))


def _load_marker(spec: LoadSpec):
    raise AssertionError("only called through the tracer")


@lowers(_load_marker)
def _lower_load(cx, handle):
    return cx.held[handle].materialize(cx)


def load(tag: str, *, owner: str, shape=None, dtype="float32"):
    """Data or weights that party `owner` holds under `tag`; never seen by the tracer."""
    if not isinstance(tag, str) or not tag:
        raise TraceError(f"load: tag must be a non-empty string, got {tag!r}", user_loc())
    s = LoadSpec(tag, _party_name(owner, "load"), _shape(shape, f"load {tag!r}"), _dtype(dtype))
    cx = ACTIVE.get()
    if cx is None:
        return s
    return cx.create_proxy("call_function", _load_marker, (cx.hold(s),), {})


def _traced(x, what):
    if not isinstance(x, PlancProxy) or not isinstance(x.value, Value):
        raise TraceError(f"{what} expects a traced tensor, got {type(x).__name__}", user_loc())
    return x


def _reveal_marker(x, to):
    raise AssertionError("only called through the tracer")


@lowers(OP.reveal, _reveal_marker)
def _lower_reveal(cx, x, to):
    k = -1 if to == "all" else cx.b.party(to)
    if x.type.vis.is_public:
        raise TraceError("reveal of a value that is already public", user_loc())
    if x.type.vis == private(k) if k >= 0 else False:
        return x  # already held by that party in plaintext
    return cx.emit("reveal", [x], {"to": k})


def reveal(x, *, to: str):
    """Open `x` to party `to` ("all": to every party). The only way out of secret."""
    cx = ACTIVE.get()
    if cx is None:
        raise TraceError("planc.reveal is only meaningful inside traced code", user_loc())
    if to != "all":
        _party_name(to, "reveal")
    return cx.create_proxy("call_function", _reveal_marker, (_traced(x, "reveal"), to), {})


def _share_marker(x):
    raise AssertionError("only called through the tracer")


@lowers(OP.share, _share_marker)
def _lower_share(cx, x):
    if x.type.vis.is_secret:
        return x
    return cx.emit("share", [x])


def share(x):
    """Secret-share `x` explicitly (the tracer also does it where owners meet)."""
    cx = ACTIVE.get()
    if cx is None:
        raise TraceError("planc.share is only meaningful inside traced code", user_loc())
    return cx.create_proxy("call_function", _share_marker, (_traced(x, "share"),), {})


def owned(module: torch.nn.Module, *, owner: str, tag: str):
    """Mark `module`'s parameters and buffers as held by `owner` under `tag/<name>`.

    Tracing turns each of them into a ``load``; no weight travels inside the plan.
    """
    if not isinstance(module, torch.nn.Module):
        raise TraceError(f"owned expects an nn.Module, got {type(module).__name__}", user_loc())
    module.__dict__["_planc_owned"] = (_party_name(owner, "owned"), tag)
    cx = ACTIVE.get()
    if cx is not None:
        cx.own_module(module, owner, tag)
    return module


def _call_marker(model, *args):
    raise AssertionError("only called through the tracer")


@lowers(_call_marker)
def _lower_call(cx, handle, *args):
    model = cx.held[handle]
    k = cx.b.party(model.owner)
    for a in args:
        if not isinstance(a, Value):
            raise TraceError(f"model {model.tag!r} takes tensors, got {type(a).__name__}", user_loc())
    if model.inputs is not None:
        got = [(a.type.dtype, a.type.shape) for a in args]
        want = [(s.dtype, s.shape) for s in model.inputs]
        if got != want:
            raise TraceError(f"model {model.tag!r} declares inputs {want}, called with {got}", user_loc())
    vis = join(private(k), *(a.type.vis for a in args))
    args = list(args)
    if vis.is_secret:
        args = [cx.emit("share", [a]) if a.type.vis.is_private else a for a in args]
    types = [TensorType(s.dtype, s.shape, vis) for s in model.outputs]
    out = cx.b.emit("call", args, {"tag": model.tag, "owner": k}, types=types, name=model.tag, loc=user_loc())
    return out


@dataclass(frozen=True)
class RemoteModel:
    """A model that `owner` holds; its architecture and weights stay there."""

    tag: str
    owner: str
    outputs: tuple
    inputs: tuple | None

    def __call__(self, *args):
        cx = ACTIVE.get()
        if cx is None:
            raise TraceError(f"model {self.tag!r} lives at {self.owner}; it can only be called inside traced code",
                             user_loc())
        for a in args:
            _traced(a, f"model {self.tag!r}")
        return cx.create_proxy("call_function", _call_marker, (cx.hold(self), *args), {})


def _specs(x, what):
    if x is None:
        return None
    if isinstance(x, TensorSpec):
        return (x,)
    if isinstance(x, tuple) and all(isinstance(i, int) for i in x):
        return (TensorSpec(_shape(x, what)),)
    return tuple(s if isinstance(s, TensorSpec) else TensorSpec(_shape(s, what)) for s in x)


def load_model(tag: str, *, owner: str, output, input=None) -> RemoteModel:
    """A model unknown to the tracer: a `call` node typed by the declared `output`
    (a shape, a planc.spec or a list of them), linked at the workers before running."""
    outs = _specs(output, f"load_model {tag!r} output")
    if not outs:
        raise TraceError(f"load_model {tag!r}: output= must declare at least one tensor", user_loc())
    return RemoteModel(tag, _party_name(owner, "load_model"), outs, _specs(input, f"load_model {tag!r} input"))


# ------------------------------------------------------------------ loops


def _region_param():
    raise AssertionError("only created by fori_loop")


def fori_loop(n: int, body, init):
    """Run ``carry = body(i, carry)`` for i in range(n) as one `loop` node.

    The body is traced once, whatever n is. `init` is a traced tensor or a tuple of them.
    Carried values keep their shape and dtype; their visibility widens to what the body
    produces (a public accumulator that gains secret terms becomes secret).
    """
    cx = ACTIVE.get()
    if cx is None:  # plain PyTorch semantics outside tracing
        carry = init
        for i in range(n):
            carry = body(torch.tensor(i), carry)
        return carry
    if isinstance(n, fx.Proxy) or not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise TraceError("fori_loop needs a non-negative Python int trip count (loops over a secret "
                         "count are not possible; use torch.where inside a fixed-length loop)", user_loc())
    single = not isinstance(init, (tuple, list))
    inits = [cx.as_value(x, "fori_loop init") for x in ([init] if single else init)]
    vis = [v.type.vis for v in inits]
    loc = user_loc()
    for _ in range(3):
        types = [v.type.with_vis(s) for v, s in zip(inits, vis)]
        saved = dict(cx._shares)
        params = cx.b.begin_region([TensorType("i64", (), PUBLIC)] + types, ["i"] + ["carry"] * len(types))
        proxies = []
        for p in params:
            node = fx.Tracer.create_node(cx, "call_function", _region_param, (), {})
            node.meta["planc"] = p
            proxies.append(cx.proxy(node))
        out = body(proxies[0], proxies[1] if single else tuple(proxies[1:]))
        outs = [out] if single else list(out) if isinstance(out, (tuple, list)) else [out]
        if len(outs) != len(types):
            cx.b.abandon_region()
            raise TraceError(f"fori_loop body returns {len(outs)} values but carries {len(types)}", loc)
        outv = []
        for o, t in zip(outs, types):
            v = o.value if isinstance(o, PlancProxy) else cx.scalar(o)
            if (v.type.dtype, v.type.shape) != (t.dtype, t.shape):
                cx.b.abandon_region()
                raise TraceError(f"fori_loop body changes a carried value from {t} to {v.type}; "
                                 "carried values keep their shape and dtype", loc)
            outv.append(v)
        widened = [join(s, v.type.vis) for s, v in zip(vis, outv)]
        if widened == vis:
            outv = [cx.emit("share", [v]) if t.vis.is_secret and not v.type.vis.is_secret else v
                    for v, t in zip(outv, types)]
            region = cx.b.end_region(outv, loc)
            cx._shares = saved
            break
        cx.b.abandon_region()
        cx._shares = saved
        vis = [SECRET if not (a == b) else a for a, b in zip(vis, widened)]
    else:
        raise TraceError("fori_loop: carried visibilities did not settle", loc)
    starts = [cx.b.emit("share", [v], loc=loc) if t.vis != v.type.vis else v for v, t in zip(inits, types)]
    res = cx.b.emit("loop", starts, {"trips": n}, types=types, regions=[region], loc=loc, name="loop")
    res = res if isinstance(res, tuple) else (res,)
    proxies = []
    for r in res:
        node = fx.Tracer.create_node(cx, "call_function", _region_param, (), {})
        node.meta["planc"] = r
        proxies.append(cx.proxy(node))
    return proxies[0] if single else tuple(proxies)



def scan(f, init, xs):
    """``carry, y = f(carry, xs[i])`` for every i along xs's first dimension; returns
    (final carry, ys stacked), like jax.lax.scan, as one `loop` node.

    `xs` is a traced tensor or a tuple/list of them with the same leading dimension (then
    f gets a tuple of their rows: data held by different parties stays apart, each row
    keeping its tensor's visibility). Inside the loop the counter is public, so row i of
    xs is picked and row i of ys is written with a public one-hot mask: multiplications by
    public 0/1 values, which cost no communication on secrets.
    """
    many = isinstance(xs, (tuple, list))
    cx = ACTIVE.get()
    if cx is None:
        carry, ys = init, []
        for x in (zip(*xs) if many else xs):
            carry, y = f(carry, tuple(x) if many else x)
            ys.append(y)
        return carry, torch.stack(ys)
    xl = list(xs) if many else [xs]
    if not xl:
        raise TraceError("scan needs at least one xs to scan over", user_loc())
    xvs = [cx.as_value(x, "scan xs") for x in xl]
    if any(v.type.rank < 1 for v in xvs):
        raise TraceError("scan needs xs with a leading dimension to scan over", user_loc())
    n = xvs[0].type.shape[0]
    if any(v.type.shape[0] != n for v in xvs):
        raise TraceError(f"scan: xs have leading dimensions {[v.type.shape[0] for v in xvs]}; they must agree",
                         user_loc())
    single = not isinstance(init, (tuple, list))
    # probe the body once, inside a region that is then thrown away, to learn y's type
    inits = [cx.as_value(c, "scan init") for c in ([init] if single else init)]
    cx.b.begin_region([v.type for v in inits] + [v.type.with_shape(v.type.shape[1:]) for v in xvs],
                      ["c"] * len(inits) + ["x"] * len(xvs))
    saved = dict(cx._shares)
    try:
        probe = [_proxy(cx, p) for p in cx.b._params[-1]]
        pc, px = probe[:len(inits)], probe[len(inits):]
        _, y = f(pc[0] if single else tuple(pc), tuple(px) if many else px[0])
        ytype = cx.as_value(y, "scan body's y").type
    finally:
        cx.b.abandon_region()
        cx._shares = saved
    positions = torch.arange(n)
    zeros = torch.zeros((n,) + ytype.shape, dtype=torch_dtype_of(ytype.dtype))

    def body(i, state):
        carry, ys = (state[0], state[1]) if single else (tuple(state[:-1]), state[-1])
        sel = positions == i  # public one-hot: picks x_i, places y_i
        rows = [(x * sel.reshape((n,) + (1,) * (v.type.rank - 1))).sum(0) for x, v in zip(xl, xvs)]
        carry, y = f(carry, tuple(rows) if many else rows[0])
        ys = ys + sel.reshape((n,) + (1,) * ytype.rank) * y
        return ((carry, ys) if single else (*carry, ys))

    out = fori_loop(n, body, ((init, zeros) if single else (*init, zeros)))
    return (out[0], out[1]) if single else (tuple(out[:-1]), out[-1])


def _proxy(cx, value):
    node = fx.Tracer.create_node(cx, "call_function", _region_param, (), {})
    node.meta["planc"] = value
    return cx.proxy(node)


def torch_dtype_of(dt: str):
    from .tracer import torch_dtype

    return torch_dtype(dt)


# the user-facing name of each shell, for `planc ops`
for _marker, _name in ((_load_marker, "planc.load"), (_reveal_marker, "planc.reveal"),
                       (_share_marker, "planc.share"), (_call_marker, "planc.load_model")):
    _marker.planc_name = _name

# every computing op can now be reached from traced code
ops.check("lower")

# gradients: every differentiable op has its vjp rule (planc.grad works in traced code)
from . import autodiff  # noqa: E402,F401
