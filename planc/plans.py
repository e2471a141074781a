"""`planc.Plan`: the plan file of `planc.ir`, with the front end's conveniences.

The language layer (`planc.ir`) never imports the front end, not even lazily, so what
needs the front end or the runtime — the cost model — cannot be a method of
`planc.ir.plan.Plan`. Instead the front end hands out this subclass: `planc.trace`,
`@planc.plan`'s `.plan`, `planc.compile`, `planc.read_plan` and `planc.Plan.read` all
return it. It is a `planc.ir.plan.Plan` (same fields, same bytes, same sha256, equal to the
base class's reading of the same file); it only adds methods.
"""
from __future__ import annotations

from planc.ir.plan import MAX_SIZE
from planc.ir.plan import Plan as _IRPlan


class Plan(_IRPlan):
    """A traced plan: ``print(plan)`` shows the IR, ``plan.save(path)`` writes the file,
    ``plan.cost(net="wan")`` predicts rounds, bytes and time."""

    @classmethod
    def adopt(cls, plan: _IRPlan) -> "Plan":
        """The same plan (sharing its graph and tensors) as a `planc.Plan`."""
        if isinstance(plan, cls):
            return plan
        return cls(plan.graph, plan.constants, plan.captured, plan.meta)

    @classmethod
    def from_bytes(cls, data, *, max_size: int = MAX_SIZE) -> "Plan":
        return cls.adopt(_IRPlan.from_bytes(data, max_size=max_size))

    def cost(self, net: str | tuple = "lan", *, inputs=None, lazy: bool = True):
        """The exact cost of running this plan (`planc.cost.predict`): rounds, bytes per
        party, dealer material and peak memory; ``print()`` it for a table with units,
        ``.time_estimate()`` for seconds on `net` ("lan", "wan" or "RTT_ms,Gbit_per_s")."""
        from .cost import predict

        return predict(self, inputs=inputs, lazy=lazy, net=net)
