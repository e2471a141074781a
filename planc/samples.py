"""One example use of every computing op in traced code, registered on the op.

Each sample is a function of two secret inputs ``x`` (positive) and ``y``, both
``[4, 6]``, returning the op's result. ``planc ops NAME`` traces it to show the op's
protocol cost on that shape, and the cost-model tests check predicted against measured
rounds and bytes on every sample, so a new op is covered by registering its sample here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from planc.ir import ops
from planc.ir.ops import OP

SHAPE = (4, 6)


def sample(d, fn):
    ops.register("sample", d, where=ops.call_site(1))(fn)


sample(OP.add, lambda x, y: x + y)
sample(OP.sub, lambda x, y: x - y)
sample(OP.neg, lambda x, y: -x)
sample(OP.mul, lambda x, y: x * y)
sample(OP.div, lambda x, y: x / 3.0)
sample(OP.matmul, lambda x, y: x @ y.t())
sample(OP.linear, lambda x, y: F.linear(x, y[:3]))
sample(OP.conv2d, lambda x, y: F.conv2d(x.reshape(1, 1, 4, 6), y[:2, :4].reshape(2, 1, 2, 2)))
sample(OP.avg_pool2d, lambda x, y: F.avg_pool2d(x.reshape(1, 1, 4, 6), 2))
sample(OP.max_pool2d, lambda x, y: F.max_pool2d(x.reshape(1, 1, 4, 6), 2))
sample(OP.adaptive_avg_pool2d, lambda x, y: F.adaptive_avg_pool2d(x.reshape(1, 1, 4, 6), (2, 2)))
sample(OP.batch_norm, lambda x, y: F.batch_norm(x, y[0], x[0] + 1.0, y[1], y[2]))
sample(OP.layer_norm, lambda x, y: F.layer_norm(y, (6,), x[0], y[0]))
sample(OP.gelu, lambda x, y: F.gelu(y))
sample(OP.gather, lambda x, y: torch.index_select(y, 1, torch.tensor([0, 2, 2, 5])))
sample(OP.softmax, lambda x, y: F.softmax(y, 1))
sample(OP.log_softmax, lambda x, y: F.log_softmax(y, 1))
sample(OP.sum_, lambda x, y: y.sum(1))
sample(OP.mean, lambda x, y: y.mean(0))
sample(OP.max_, lambda x, y: y.max())
sample(OP.argmax, lambda x, y: y.argmax(1))
sample(OP.gt, lambda x, y: x > y)
sample(OP.lt, lambda x, y: x < y)
sample(OP.ge, lambda x, y: x >= y)
sample(OP.le, lambda x, y: x <= y)
sample(OP.eq, lambda x, y: x == y)
sample(OP.where, lambda x, y: torch.where(x > y, x, y))
sample(OP.reshape, lambda x, y: y.reshape(6, 4))
sample(OP.flatten, lambda x, y: y.flatten())
sample(OP.transpose, lambda x, y: y.t())
sample(OP.permute, lambda x, y: y.permute(1, 0))
sample(OP.slice_, lambda x, y: y[:, 1:4])
sample(OP.index_, lambda x, y: y[2])
sample(OP.cat, lambda x, y: torch.cat([x, y]))
sample(OP.stack, lambda x, y: torch.stack([x, y]))
sample(OP.pad, lambda x, y: F.pad(y, (1, 1), value=0.5))
sample(OP.squeeze, lambda x, y: y.unsqueeze(0).squeeze(0))
sample(OP.unsqueeze, lambda x, y: y.unsqueeze(1))
sample(OP.expand, lambda x, y: y.unsqueeze(0).expand(2, 4, 6))

# plain elementwise ops: torch's function on the positive input
for _d in ops.REGISTRY.values():
    if _d.torch_fn and _d.rule("sample") is None:
        ops.register("sample", _d, where=ops.call_site(0))(lambda x, y, _f=getattr(torch, _d.torch_fn): _f(x))

ops.check("sample")


def sample_plan(d, parties=("alice", "bob")):
    """The plan of op `d`'s sample: x at the first party, y at the second, the result
    revealed to the second."""
    import planc

    fn = d.rule("sample")

    def f():
        x = planc.share(planc.load("x", owner=parties[0], shape=SHAPE))
        y = planc.share(planc.load("y", owner=parties[1], shape=SHAPE))
        return planc.reveal(fn(x, y), to=parties[1])

    import warnings

    from .errors import UnrevealedOutputWarning

    with warnings.catch_warnings():  # a sample's secret output is the point: it is costed, never run
        warnings.simplefilter("ignore", UnrevealedOutputWarning)
        return planc.trace(f, name=f"sample_{d.name}", parties=list(parties))
