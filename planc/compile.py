"""planc.compile: run a pipeline of passes over a plan."""
from __future__ import annotations

import sys

from planc.ir.plan import Plan
from planc.ir.policy import DEFAULT, Policy
from planc.ir.printer import print_graph
from planc.ir.verify import verify

from .passes import DEFAULT_PIPELINE, parse_pipeline


def compile(plan, pipeline: str = DEFAULT_PIPELINE, *, policy: Policy | None = None, print_after_all=False,
            verify_each: bool = False, out=None, **options) -> Plan:
    """Run the passes named in `pipeline` (comma-separated; default ``planc.passes.DEFAULT_PIPELINE``)
    and return a new Plan; constants nobody reads any more are dropped.

    print_after_all: print the IR after every pass (to `out`, default stderr).
    verify_each: run the verifier after every pass (the tests do).
    """
    graph = plan.graph if isinstance(plan, Plan) else plan
    passes = parse_pipeline(pipeline, policy=policy or DEFAULT, **options)
    out = out or sys.stderr
    for p in passes:
        graph = p.run(graph)
        if verify_each:
            verify(graph)
        if print_after_all:
            print(f"// ----- after {p.name}", file=out)
            print(print_graph(graph), file=out)
    if not isinstance(plan, Plan):
        return Plan(graph)
    used = {n.attr("name") for n in graph.consts() if n.attr("name") is not None}
    return Plan(graph, {k: v for k, v in plan.constants.items() if k in used},
                {k: v for k, v in plan.captured.items() if k in used}, dict(plan.meta))
