"""`planc.grad` and `planc.value_and_grad`, in the style of torch.func, for traced code.

The function differentiated is traced inline (its nodes go where the call is, so it
works at the top of a plan and inside a loop body alike); the nodes it made are then
differentiated in reverse by their vjp rules, emitting the backward pass as IR, which
runs over shares with the existing protocols like any other traced code.
"""
from __future__ import annotations

import torch.fx as fx

from ..errors import TraceError, user_loc
from ..tracer import ACTIVE, PlancProxy
from .backward import backprop, forward_active
from .emit import Emitter, is_float


def _grad_value():
    raise AssertionError("only created by planc.value_and_grad")


def _proxy(cx, v):
    node = fx.Tracer.create_node(cx, "call_function", _grad_value, (), {})
    node.meta["planc"] = v
    return cx.proxy(node)


def _leaves(x, what):
    """Traced tensors of argument `x` (a tensor, or a tuple/list/dict of them) and a rebuilder."""
    if isinstance(x, PlancProxy):
        v = x.value
        if not hasattr(v, "type") or not is_float(v):
            raise TraceError(f"{what}: differentiates floating-point tensors, got {getattr(v, 'type', v)}",
                             user_loc())
        return [v], lambda vs: vs[0]
    if isinstance(x, (tuple, list)):
        parts = [_leaves(y, what) for y in x]

        def build(vs, parts=parts, kind=type(x)):
            out, i = [], 0
            for ls, b in parts:
                out.append(b(vs[i:i + len(ls)]))
                i += len(ls)
            return kind(out)

        return [v for ls, _ in parts for v in ls], build
    if isinstance(x, dict):
        keys = list(x)
        inner, b = _leaves([x[k] for k in keys], what)
        return inner, lambda vs: dict(zip(keys, b(vs)))
    raise TraceError(f"{what} is a {type(x).__name__}; planc.grad differentiates traced tensors (or tuples, "
                     "lists and dicts of them)", user_loc())


def _nums(argnums, nargs):
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    if not nums or any(not isinstance(i, int) or isinstance(i, bool) or not -nargs <= i < nargs for i in nums):
        raise TraceError(f"argnums={argnums!r} does not name arguments of a call with {nargs}", user_loc())
    return nums


def value_and_grad(f, argnums=0, has_aux: bool = False):
    """``value_and_grad(f)(*args) -> (f(*args), df/dargs[argnums])``: f returns a scalar
    (with has_aux, a pair (scalar, aux), and the value is that pair); an int `argnums`
    gives one gradient, a tuple a tuple of them, each shaped like its argument."""
    if not callable(f):
        raise TraceError(f"value_and_grad expects a function, got {type(f).__name__}", user_loc())

    def wrapped(*args):
        cx = ACTIVE.get()
        if cx is None:
            raise TraceError("planc.grad / planc.value_and_grad work inside traced code (planc.trace); "
                             "on plain tensors use torch.func.grad", user_loc())
        nums = _nums(argnums, len(args))
        picked = [_leaves(args[i], f"argument {i}") for i in nums]
        loc = user_loc()
        block = cx.b._blocks[-1]
        start = len(block)
        out = f(*args)
        value, aux = (out if isinstance(out, tuple) and len(out) == 2 else (None, None)) if has_aux else (out, None)
        if has_aux and value is None:
            raise TraceError("value_and_grad(has_aux=True): the function returns (value, aux)", loc)
        v = value.value if isinstance(value, PlancProxy) else None
        if not hasattr(v, "type") or v.type.numel != 1 or not is_float(v):
            raise TraceError(f"the function differentiated returns {getattr(v, 'type', type(value).__name__)}; "
                             "it must return a floating-point scalar", loc)
        nodes = list(block[start:])
        wrt = [x for ls, _ in picked for x in ls]
        e = Emitter(cx, forward_active(nodes, {x.name for x in wrt}))
        e.loc, e.what = loc, "loss"
        cts = backprop(e, nodes, {v.name: e.const(1.0, v, v.type.shape)})
        e.loc = loc
        grads = []
        i = 0
        for ls, build in picked:
            gs = [cts.get(x.name) or e.zeros(x) for x in ls]
            grads.append(build([_proxy(cx, g) for g in gs]))
            i += len(ls)
        g = grads[0] if isinstance(argnums, int) else tuple(grads)
        return out, g

    return wrapped


def grad(f, argnums=0, has_aux: bool = False):
    """``grad(f)(*args)``: the gradient of scalar-valued f with respect to args[argnums]
    (with has_aux, the pair (gradient, aux))."""
    vg = value_and_grad(f, argnums, has_aux)

    def wrapped(*args):
        out, g = vg(*args)
        return (g, out[1]) if has_aux else g

    return wrapped


_grad_value.planc_name = "planc.grad"
