"""Losses: torch to IR, each a short composition of existing ops (so each is
differentiable by those ops' vjp rules) with an error bound derived from theirs.

Bounds are for the fixed-point inputs the protocols receive (16 fractional bits), as the
ops' own bounds are (runtime/protocols/approx/); "per element" is per element of the
unreduced loss, and a mean keeps it, a sum multiplies it by the number of elements.
The reference run (planc.run_reference) is exact float arithmetic: it matches torch to
float rounding. tests/test_losses.py measures every bound below over shares.

    F.log_softmax                       log_softmax                         2^-14 (the op's bound)
    F.cross_entropy (indices / probs)   log_softmax, eq (one-hot), mul, sum 2^-14 + 2^-15  (CE_BOUND)
      its gradient in the logits        softmax - onehot                    2^-14 + 2^-15 per element, / count
    F.nll_loss                          eq (one-hot), mul, sum              2^-15          (NLL_BOUND)
    F.mse_loss                          sub, mul, mean/sum                  2^-15          (MSE_BOUND)
    F.binary_cross_entropy_with_logits  stack, log_softmax (softplus), mul  2^-14 + 2^-15  (BCE_BOUND)
      its gradient in the logits        sigmoid(x) - y (softmax's)          2^-14 + 2^-15 per element, / count

Plus, for a mean over n elements with n not a power of two, a relative n 2^-17 of the
value (`mean_rel`): the runtime multiplies by the public 1/n encoded with 16 fractional
bits (runtime/protocols/common.py, scale_public); the gradients' seed 1/n likewise, adding
n 2^-17 relative and 2^-16 absolute per gradient element. So, for a loss f over n:
|value error| <= BOUND + mean_rel(n) |f|, |gradient error| <= BOUND / n + mean_rel(n) |g| + 2^-16.
Where 2^-15 covers the fixed-point truncations of the products and the mean (each within
2^-16 of exact, two on any path). Class-index targets may be public, private to any party
or secret integers; they become a one-hot mask with `eq` against a public arange (local
for a public or private target), so the picking is a product, never a data-dependent
index. Targets outside [0, C) (torch's ignore_index rows) pick nothing: their loss is 0 and
they still count in a mean; planc refuses an explicit ignore_index for that reason.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from planc.ir.graph import Value
from planc.ir.ops import OP
from planc.ir.types import FLOAT_DTYPES

INT_DTYPES = ("i64", "i32")

from ..errors import TraceError, user_loc
from .base import const_like, lowers, value_of

LOG_SOFTMAX_BOUND = 2.0 ** -14
TRUNC = 2.0 ** -15  # two fixed-point truncations, each within 2^-16
CE_BOUND = LOG_SOFTMAX_BOUND + TRUNC
NLL_BOUND = TRUNC
MSE_BOUND = TRUNC
BCE_BOUND = LOG_SOFTMAX_BOUND + TRUNC

_REDUCTIONS = ("mean", "sum", "none")


def mean_rel(n: int) -> float:
    """Relative error of a mean over n by the runtime: 1/n is encoded with 16 fractional
    bits (exact for a power of two)."""
    return 0.0 if n & (n - 1) == 0 else n * 2.0 ** -17


def _tensor(cx, x, what: str, like: Value | None = None) -> Value:
    if isinstance(x, Value):
        return x
    if isinstance(x, torch.Tensor):
        return cx.capture(x, what)
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return value_of(cx, float(x), like)
    raise TraceError(f"{what}: expected a tensor, got {type(x).__name__}", user_loc())


def _legacy(fn, size_average, reduce, reduction):
    if size_average is not None or reduce is not None:
        raise TraceError(f"{fn}: size_average= and reduce= are deprecated in torch; use reduction=", user_loc())
    if reduction not in _REDUCTIONS:
        raise TraceError(f"{fn}: reduction={reduction!r}; use one of {', '.join(_REDUCTIONS)}", user_loc())


def _float(x: Value, fn: str, what: str):
    if x.type.dtype not in FLOAT_DTYPES:
        raise TraceError(f"{fn}: {what} must be floating point, got {x.type}", user_loc())


def _reduce(cx, loss: Value, reduction: str) -> Value:
    if reduction == "none":
        return loss
    return cx.emit("mean" if reduction == "mean" else "sum", [loss], {"dim": None, "keepdim": False})


def _one_hot(cx, target: Value, classes: int, rank: int) -> Value:
    """[N, C, d...] float mask (target[n, d...] == c) from integer targets [N, d...] (or [] for
    an unbatched input): `eq` against a public arange, then a product with 1.0."""
    ar = cx.capture(torch.arange(classes, dtype=torch.int64 if target.type.dtype == "i64" else torch.int32)
                    .reshape((classes,) + (1,) * (rank - 2 if rank >= 2 else 0)), f"arange_{classes}")
    t = cx.emit("unsqueeze", [target], {"dim": 1 if rank >= 2 else 0})
    hot = cx.emit("eq", [t, ar])
    return cx.emit("mul", [hot, const_like(cx, 1.0, (), "f32")])


def _check_target(fn, x: Value, target: Value) -> bool:
    """True for class-index targets, False for class probabilities (shaped like x)."""
    if target.type.dtype in INT_DTYPES:
        want = (x.type.shape[:1] + x.type.shape[2:]) if x.type.rank >= 2 else ()
        if tuple(target.type.shape) != tuple(want):
            raise TraceError(f"{fn}: class-index target of shape {list(target.type.shape)} for input of shape "
                             f"{list(x.type.shape)}; expected {list(want)} (classes along dim 1)", user_loc())
        return True
    if target.type.dtype in FLOAT_DTYPES:
        if target.type.shape != x.type.shape:
            raise TraceError(f"{fn}: probability target of shape {list(target.type.shape)} for input of shape "
                             f"{list(x.type.shape)}; a float target is a distribution over classes shaped like the "
                             "input (for class indices, give an integer tensor)", user_loc())
        return False
    raise TraceError(f"{fn}: target must be integer class indices or float probabilities, got {target.type}",
                     user_loc())


def _picked_nll(cx, fn, logp: Value, target, weight, reduction: str, smoothing: float = 0.0) -> Value:
    """-sum_c w_c t_c logp_c per row (t: one-hot or probabilities), reduced as torch does."""
    cdim = 1 if logp.type.rank >= 2 else 0
    classes = logp.type.shape[cdim]
    target = _tensor(cx, target, "target")
    index = _check_target(fn, logp, target)
    t = _one_hot(cx, target, classes, logp.type.rank) if index else target
    if smoothing:
        t = cx.emit("add", [cx.emit("mul", [t, value_of(cx, 1.0 - smoothing, logp)]),
                            value_of(cx, smoothing / classes, logp)])
    wt = None
    if weight is not None:
        w = _tensor(cx, weight, "weight")
        if w.type.shape != (classes,):
            raise TraceError(f"{fn}: weight of shape {list(w.type.shape)}; expected [{classes}] (one per class)",
                             user_loc())
        w = cx.emit("reshape", [w], {"shape": (classes,) + (1,) * (logp.type.rank - cdim - 1)})
        wt = cx.emit("mul", [t, w])
    per = cx.emit("neg", [cx.emit("sum", [cx.emit("mul", [wt if wt is not None else t, logp])],
                                  {"dim": (cdim,), "keepdim": False})])
    if reduction == "mean" and wt is not None:
        # torch: the sum divided by the weights the targets pick (sum_n w[target_n])
        total = cx.emit("sum", [per], {"dim": None, "keepdim": False})
        den = cx.emit("sum", [wt], {"dim": None, "keepdim": False})
        if den.type.vis.is_public or not total.type.vis.is_secret:
            return cx.emit("div", [total, den])
        return cx.emit("mul", [total, cx.emit("reciprocal", [den])])
    return _reduce(cx, per, reduction)


def _no_ignore(fn, ignore_index):
    if ignore_index != -100:
        raise TraceError(f"{fn}: ignore_index is not supported (whether a row is ignored would depend on its "
                         "target); give targets in [0, C), or a zero class weight", user_loc())


@lowers(OP.log_softmax, OP.eq, OP.mul, OP.add, OP.sum_, OP.neg, OP.mean, OP.div, OP.reciprocal, OP.unsqueeze,
        OP.reshape, F.cross_entropy)
def _cross_entropy(cx, input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                   reduction="mean", label_smoothing=0.0):
    """F.cross_entropy = nll_loss(log_softmax(input, 1)): |error| <= CE_BOUND (2^-14 + 2^-15),
    log_softmax's 2^-14 (picked by an exact one-hot, or weighted by probabilities summing
    to 1) plus two truncations; the gradient in the logits, softmax - target by the ops'
    rules, is within the same per element (divided by the count for a mean)."""
    fn = "F.cross_entropy"
    _legacy(fn, size_average, reduce, reduction)
    _no_ignore(fn, ignore_index)
    x = _tensor(cx, input, "input")
    _float(x, fn, "input")
    logp = cx.emit("log_softmax", [x], {"dim": 1 if x.type.rank >= 2 else 0})
    return _picked_nll(cx, fn, logp, target, weight, reduction, float(label_smoothing))


@lowers(OP.eq, OP.mul, OP.add, OP.sum_, OP.neg, OP.mean, OP.div, OP.reciprocal, OP.unsqueeze, OP.reshape,
        F.nll_loss)
def _nll_loss(cx, input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
              reduction="mean"):
    """F.nll_loss: -input[n, target[n]] by a one-hot product; |error| <= NLL_BOUND (2^-15:
    truncations only)."""
    fn = "F.nll_loss"
    _legacy(fn, size_average, reduce, reduction)
    _no_ignore(fn, ignore_index)
    x = _tensor(cx, input, "input")
    _float(x, fn, "input")
    return _picked_nll(cx, fn, x, target, weight, reduction)


@lowers(OP.sub, OP.mul, OP.mean, OP.sum_, F.mse_loss)
def _mse_loss(cx, input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """F.mse_loss: (input - target)^2 reduced; |error| <= MSE_BOUND (2^-15: the square's
    and the mean's truncations)."""
    fn = "F.mse_loss"
    _legacy(fn, size_average, reduce, reduction)
    x = _tensor(cx, input, "input")
    y = _tensor(cx, target, "target", x)
    _float(x, fn, "input")
    if x.type.shape != y.type.shape:
        raise TraceError(f"F.mse_loss: input {list(x.type.shape)} and target {list(y.type.shape)} differ in shape "
                         "(torch would broadcast them, usually by mistake); reshape one", user_loc())
    d = cx.emit("sub", [x, y])
    sq = cx.emit("mul", [d, d])
    if weight is not None:
        sq = cx.emit("mul", [sq, _tensor(cx, weight, "weight", x)])
    return _reduce(cx, sq, reduction)


@lowers(OP.stack, OP.log_softmax, OP.index_, OP.neg, OP.mul, OP.sub, OP.add, OP.mean, OP.sum_,
        F.binary_cross_entropy_with_logits)
def _bce_with_logits(cx, input, target, weight=None, size_average=None, reduce=None, reduction="mean",
                     pos_weight=None):
    """F.binary_cross_entropy_with_logits, in the stable form softplus(x) - y x with
    softplus(x) = -log_softmax([0, x])[0] = max(x, 0) + log(1 + e^-|x|) (one log_softmax over
    a pair: its bound, 2^-14, on |x| < 2^23, whatever the sign of x); with pos_weight p:
    (1 + (p - 1) y) softplus(x) - p y x. |error| <= BCE_BOUND (2^-14 + 2^-15) per element
    for targets in [0, 1]. Its gradient by the ops' rules is softmax([0, x])[1] - y =
    sigmoid(x) - y, within the same per element (divided by the count for a mean)."""
    fn = "F.binary_cross_entropy_with_logits"
    _legacy(fn, size_average, reduce, reduction)
    x = _tensor(cx, input, "input")
    y = _tensor(cx, target, "target", x)
    _float(x, fn, "input")
    _float(y, fn, "target")
    if x.type.shape != y.type.shape:
        raise TraceError(f"{fn}: input {list(x.type.shape)} and target {list(y.type.shape)} differ in shape",
                         user_loc())
    zero = const_like(cx, 0.0, x.type.shape, x.type.dtype)
    pair = cx.emit("stack", [zero, x], {"dim": x.type.rank})
    softplus = cx.emit("neg", [cx.emit("index", [cx.emit("log_softmax", [pair], {"dim": x.type.rank})],
                                       {"dim": x.type.rank, "index": 0})])
    yx = cx.emit("mul", [y, x])
    if pos_weight is not None:
        p = _tensor(cx, pos_weight, "pos_weight", x)
        py = cx.emit("mul", [p, y])
        scale = cx.emit("add", [cx.emit("sub", [py, y]), value_of(cx, 1.0, x)])
        loss = cx.emit("sub", [cx.emit("mul", [scale, softplus]), cx.emit("mul", [p, yx])])
    else:
        loss = cx.emit("sub", [softplus, yx])
    if weight is not None:
        loss = cx.emit("mul", [loss, _tensor(cx, weight, "weight", x)])
    return _reduce(cx, loss, reduction)
