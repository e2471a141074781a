"""Optimizers as pure functions: ``new_params, new_state = sgd(params, grads, state, lr=...)``.

`params` and `grads` are one tensor, or a tuple/list/dict of them (the same structure);
they may be traced values (inside `planc.trace`, `planc.fori_loop`, `planc.scan`) or plain
tensors (then the functions are plain PyTorch, and match torch.optim step for step).
`state` is a flat tuple of tensors (so that it splices into a loop's carry:
``carry = (*params, *state)``), made by ``sgd_init`` / ``adam_init`` or, with state=None,
as a first step would (momentum buffers of zeros, step powers of one). The step count of
Adam is carried as the public powers beta^t, so a bias correction is a division by a
public number: no protocol cost.

Error over shares: sgd is additions and products by public numbers (local; one
truncation each, within 2^-16) on top of the gradients' own error. adam adds sqrt
(|error| <= 2^-14 + 2^-16 |f|) and reciprocal (2^-14 + 2^-14 |f| on 2^-8 <= |x| < 2^16):
its denominator sqrt(v_hat) + eps must stay at or above 2^-8, which gradients with an
RMS under ~0.004 (or eps below 2^-8 with vanishing gradients) leave; give eps >= 2^-8
where gradients may vanish. tests/test_losses.py measures both against torch.optim.
"""
from __future__ import annotations

import torch
import torch.fx as fx

from .errors import TraceError, user_loc

__all__ = ["adam", "adam_init", "sgd", "sgd_init"]


def _leaves(x, what):
    """Leaves of a tensor / tuple / list / dict and a rebuilder of that structure."""
    if isinstance(x, dict):
        keys = list(x)
        return [x[k] for k in keys], lambda vs: dict(zip(keys, vs))
    if isinstance(x, (tuple, list)):
        kind = type(x)
        return list(x), lambda vs: kind(vs)
    if isinstance(x, (torch.Tensor, fx.Proxy)):  # a tensor or a traced one
        return [x], lambda vs: vs[0]
    raise TraceError(f"{what}: expected a tensor or a tuple, list or dict of tensors, got {type(x).__name__}",
                     user_loc())


def _pair(params, grads):
    ps, build = _leaves(params, "params")
    gs, _ = _leaves(grads, "grads")
    if isinstance(params, dict) and isinstance(grads, dict):
        if list(params) != list(grads):
            raise TraceError(f"grads has keys {list(grads)}, params {list(params)}", user_loc())
    if len(ps) != len(gs) or type(params) is not type(grads) and not (
            isinstance(params, (tuple, list)) and isinstance(grads, (tuple, list))):
        raise TraceError(f"grads ({type(grads).__name__} of {len(gs)}) do not match params "
                         f"({type(params).__name__} of {len(ps)})", user_loc())
    for i, (p, g) in enumerate(zip(ps, gs)):
        if tuple(p.shape) != tuple(g.shape):
            raise TraceError(f"grads[{i}] has shape {list(g.shape)}, params[{i}] {list(p.shape)}", user_loc())
    return ps, gs, build


def _state(state, want: int, what: str):
    if not isinstance(state, (tuple, list)) or len(state) != want:
        n = len(state) if isinstance(state, (tuple, list)) else type(state).__name__
        raise TraceError(f"{what} state: expected a flat tuple of {want} tensors (from {what}_init), got {n}",
                         user_loc())
    return list(state)


def _zeros(p):
    return torch.zeros(tuple(p.shape))


def _number(name, v, lo=0.0):
    if not isinstance(v, (int, float)) or isinstance(v, bool) or v < lo:
        raise TraceError(f"{name}={v!r}: expected a number >= {lo}", user_loc())
    return float(v)


def _rate(name, v):
    """A learning rate: a number, or a 0-d tensor (traced or plain) for a schedule — e.g. a
    public row of the xs of planc.scan, one rate per step."""
    if isinstance(v, (torch.Tensor, fx.Proxy)):
        if tuple(v.shape) != ():
            raise TraceError(f"{name}: a tensor learning rate must be 0-d, got shape {list(v.shape)}", user_loc())
        return v
    return _number(name, v)


def sgd_init(params, momentum: float = 0.0) -> tuple:
    """sgd's starting state: a zero momentum buffer per parameter (none without momentum)."""
    ps, _ = _leaves(params, "params")
    return tuple(_zeros(p) for p in ps) if momentum else ()


def sgd(params, grads, state=None, *, lr: float, momentum: float = 0.0, dampening: float = 0.0,
        weight_decay: float = 0.0, nesterov: bool = False, maximize: bool = False):
    """One step of torch.optim.SGD: ``(new_params, new_state)``; `lr` a number or a 0-d tensor.

    g <- g + weight_decay p; with momentum m: b <- m b + (1 - dampening) g (b = g on a
    first step, state=None, as torch), g <- g + m b with nesterov else b; p <- p - lr g.
    From zero buffers (sgd_init) a first step is torch's when dampening is 0.
    """
    lr, momentum = _rate("lr", lr), _number("momentum", momentum)
    dampening, weight_decay = _number("dampening", dampening), _number("weight_decay", weight_decay)
    if nesterov and (momentum == 0 or dampening != 0):
        raise TraceError("sgd: nesterov momentum needs momentum > 0 and dampening 0 (as torch.optim.SGD)",
                         user_loc())
    ps, gs, build = _pair(params, grads)
    if momentum:
        bufs = [None] * len(ps) if state is None else _state(state, len(ps), "sgd")
    else:
        bufs = [None] * len(ps) if state is None else _state(state, 0, "sgd") + [None] * len(ps)
    new_p, new_b = [], []
    for p, g, b in zip(ps, gs, bufs):
        if maximize:
            g = -g
        if weight_decay:
            g = g + weight_decay * p
        if momentum:
            if b is None:
                b = g
            else:
                b = momentum * b + (g if dampening == 0 else (1 - dampening) * g)
            new_b.append(b)
            g = g + momentum * b if nesterov else b
        new_p.append(p - lr * g)
    return build(new_p), tuple(new_b)


def adam_init(params) -> tuple:
    """adam's starting state: (beta1^0, beta2^0, first moments m~..., second moments v~...)."""
    ps, _ = _leaves(params, "params")
    return (torch.ones(()), torch.ones(())) + tuple(_zeros(p) for p in ps) + tuple(_zeros(p) for p in ps)


def adam(params, grads, state=None, *, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
         weight_decay: float = 0.0, maximize: bool = False):
    """One step of torch.optim.Adam (amsgrad off): ``(new_params, new_state)``.

    g <- g + weight_decay p; m <- b1 m + (1 - b1) g; v <- b2 v + (1 - b2) g^2;
    p <- p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps), computed with the moments
    rescaled, m~ = m / (1 - b1) and v~ = v / (1 - b2) (the state holds these: in fixed
    point (1 - b2) g^2 underflows 2^-16 for |g| < 0.1). The state carries b1^t and b2^t (public: the corrections divide by public numbers); over shares, the
    division by the denominator is a reciprocal, in its domain for denominators >= 2^-8
    (module docstring).
    """
    lr, eps, weight_decay = _rate("lr", lr), _number("eps", eps), _number("weight_decay", weight_decay)
    b1, b2 = (_number("betas[0]", betas[0]), _number("betas[1]", betas[1])) if isinstance(betas, (tuple, list)) \
        and len(betas) == 2 else (None, None)
    if b1 is None or not (b1 < 1 and b2 < 1):
        raise TraceError(f"adam: betas={betas!r}; expected two numbers in [0, 1)", user_loc())
    ps, gs, build = _pair(params, grads)
    st = list(adam_init(params)) if state is None else _state(state, 2 + 2 * len(ps), "adam")
    p1, p2 = st[0] * b1, st[1] * b2
    ms, vs = st[2:2 + len(ps)], st[2 + len(ps):]
    new_p, new_m, new_v = [], [], []
    for p, g, m, v in zip(ps, gs, ms, vs):
        if maximize:
            g = -g
        if weight_decay:
            g = g + weight_decay * p
        # m~ = m / (1 - b1), v~ = v / (1 - b2): torch's moments rescaled, so that v~ ~ g^2
        # keeps its bits in fixed point where (1 - b2) g^2 would underflow 2^-16
        m = b1 * m + g
        v = b2 * v + g * g
        mscale = (1 - b1) / (1 - p1)  # public: m_hat = m~ (1 - b1) / (1 - b1^t)
        vscale = torch.sqrt((1 - b2) / (1 - p2))  # public: sqrt(v_hat) = sqrt(v~) sqrt((1 - b2) / (1 - b2^t))
        denom = torch.sqrt(v) * vscale + eps
        new_p.append(p - (lr * mscale) * (m * torch.reciprocal(denom)))
        new_m.append(m)
        new_v.append(v)
    return build(new_p), (p1, p2, *new_m, *new_v)
