"""The gradient of a `loop`: reverse mode with stored carries.

The forward loop is rewritten in place to also record the carried values entering each
step (a tape of trips x carry, written with a public one-hot mask: local on shares).
The backward loop runs the steps in reverse: step j reads its carries off the tape (a
public one-hot pick), recomputes the body's intermediates from them, and runs the body's
vjp, carrying the carries' cotangents and summing those of the outer values the body
reads. Stored carries, because recomputing carry j from the start would cost O(trips^2)
body runs, or masked work on secrets at every step; the body's intermediates are
recomputed (once per step, so the backward pass costs about two forward bodies) to keep
the tape at one carry per step rather than every intermediate.
"""
from __future__ import annotations

import torch

from planc.ir.graph import Node, Region, Value
from planc.ir.ops import OP
from planc.ir.types import PUBLIC, SECRET, TensorType, join

from ..errors import TraceError
from .backward import backprop, clone, forward_active, free_values
from .emit import Emitter, is_float, vjp


def _coerce(e: Emitter, v: Value, t: TensorType, like: Value) -> Value:
    """`v` with visibility t.vis (`like` has it): shared, or made private by adding 0 * like."""
    if v.type.vis == t.vis:
        return v
    if t.vis.is_secret:
        return e.b.emit("share", [v], loc=e.loc)
    return e.b.emit("add", [v, e.b.emit("mul", [e.const(0.0, v), like], loc=e.loc)], loc=e.loc)


def _tape(e: Emitter, n: Node) -> list[Value]:
    """Rewrite loop `n` in the current block to record its carries; the tapes after it."""
    block = e.b._blocks[-1]
    at = next((i for i, m in enumerate(block) if m is n), None)
    if at is None:
        raise TraceError("gradient of a loop made outside the differentiated function", n.loc)
    trips, body = n.attr("trips"), n.regions[0]
    counter, carries = body.params[0], body.params[1:]
    mark = len(block)  # what is made from here on moves before the loop (consts at the top included)
    positions = e.tensor(torch.arange(trips), f"arange_{trips}", fresh=True)
    zero_i = e.tensor(torch.tensor(0, dtype=torch.int64), "zero_i64", fresh=True)
    inits = []
    for c, init in zip(carries, n.operands):
        zero = e.const(0.0, c, (trips,) + c.type.shape) if is_float(c) else e.b.emit(
            "expand", [zero_i], {"shape": (trips,) + c.type.shape}, loc=e.loc)
        if c.type.vis.is_secret:
            zero = e.b.emit("share", [zero], loc=e.loc)
        elif c.type.vis.is_private:
            zero = e.b.emit("mul", [zero, init], loc=e.loc)
        inits.append(zero)
    moved = block[mark:]
    del block[mark:]
    block[at:at] = moved
    tparams = e.b.begin_region([v.type for v in inits], ["tape"] * len(inits))
    sel = e.b.emit("eq", [positions, counter], loc=n.loc)
    news = []
    for c, tp in zip(carries, tparams):
        s = e.b.emit("reshape", [sel], {"shape": (trips,) + (1,) * c.type.rank}, loc=n.loc)
        news.append(e.b.emit("add", [tp, e.b.emit("mul", [s, c], loc=n.loc)], loc=n.loc))
    extra = e.b.end_region(news)
    yield_ = Node("yield", body.yielded + tuple(news), loc=body.nodes[-1].loc)
    region = Region(body.params + tparams, body.nodes[:-1] + extra.nodes[:-1] + (yield_,))
    tapes = tuple(Value(e.b.fresh("tape"), v.type) for v in inits)
    new = Node("loop", n.operands + tuple(inits), n.results + tapes, n.attrs, (region,), n.loc)
    block[at + len(moved)] = new
    return list(tapes)


@vjp(OP.loop)
def _loop(e, n, cts):
    trips, body = n.attr("trips"), n.regions[0]
    carries = body.params[1:]
    free = free_values(n)
    outer = [v for v in free if e.needs(v)]
    diff = [j for j, c in enumerate(carries) if is_float(c)]
    if trips == 0:
        return [cts[j] for j in range(len(carries))] + [None] * len(free)
    loc = e.loc
    tapes = _tape(e, n)
    e.loc = loc
    positions = e.tensor(torch.arange(trips), f"arange_{trips}")
    last = e.tensor(torch.tensor(trips - 1, dtype=torch.int64), f"last_{trips}")
    starts = [cts[j] if cts[j] is not None else e.zeros(carries[j]) for j in diff] + [e.zeros(v) for v in outer]
    vis = [v.type.vis for v in starts]
    cx = e.cx
    for _ in range(3):
        types = [v.type.with_vis(s) for v, s in zip(starts, vis)]
        saved = dict(cx._shares)
        params = e.b.begin_region([TensorType("i64", (), PUBLIC)] + types, ["i"] + ["ct"] * len(types))
        step = e.b.emit("sub", [last, params[0]], loc=loc)
        sel = e.b.emit("eq", [positions, step], loc=loc)
        env = {body.params[0].name: step}
        for c, tape in zip(carries, tapes):
            s = e.b.emit("reshape", [sel], {"shape": (trips,) + (1,) * c.type.rank}, loc=loc)
            env[c.name] = e.b.emit("sum", [e.b.emit("mul", [tape, s], loc=loc)], {"dim": (0,)}, loc=loc)
        clone(e.b, body.nodes[:-1], env)
        nodes = e.b._blocks[-1][:]
        seeds: dict[str, Value] = {}
        inner = Emitter(cx, forward_active(nodes, {env[carries[j].name].name for j in diff} | {v.name for v in outer}))
        inner.at(n)
        for j, p in zip(diff, params[1:]):
            y = env.get(body.yielded[j].name, body.yielded[j])
            seeds[y.name] = inner.add(seeds.get(y.name), p)
        got = backprop(inner, nodes, seeds)
        outs = []
        for k, j in enumerate(diff):
            outs.append(got.get(env[carries[j].name].name) or inner.zeros(carries[j]))
        for k, v in enumerate(outer):
            outs.append(inner.add(params[1 + len(diff) + k], got.get(v.name)))
        widened = [join(s, o.type.vis) for s, o in zip(vis, outs)]
        if widened == vis:
            inner.loc = loc
            outs = [_coerce(inner, o, t, p) for o, t, p in zip(outs, types, params[1:])]
            region = e.b.end_region(outs, loc)
            cx._shares = saved
            break
        e.b.abandon_region()
        cx._shares = saved
        vis = [SECRET if a != b else a for a, b in zip(vis, widened)]
    else:
        raise TraceError("gradient of a loop: cotangent visibilities did not settle", loc)
    e.loc = loc
    starts = [v if v.type.vis == t.vis else e.b.emit("share", [v], loc=loc) for v, t in zip(starts, types)]
    res = e.b.emit("loop", starts, {"trips": trips}, types=types, regions=[region], loc=loc, name="dloop")
    res = res if isinstance(res, tuple) else (res,)
    grads: list = [None] * len(carries)
    for k, j in enumerate(diff):
        grads[j] = res[k]
    by_name = {v.name: res[len(diff) + k] for k, v in enumerate(outer)}
    return grads + [by_name.get(v.name) for v in free]
