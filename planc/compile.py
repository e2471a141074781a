"""planc.compile: run a pipeline of passes over a plan."""
from __future__ import annotations

import difflib
import sys

from planc.ir.plan import Plan as IRPlan
from planc.ir.policy import DEFAULT, Policy
from planc.ir.printer import print_graph
from planc.ir.verify import verify

from .errors import warn_unrevealed
from .passes import DEFAULT_PIPELINE, parse_pipeline
from .plans import Plan


def compile(plan, pipeline: str = DEFAULT_PIPELINE, *, policy: Policy | None = None, print_after_all=False,
            verify_each: bool = False, out=None, **options) -> Plan:
    """Run the passes named in `pipeline` (comma-separated; default ``planc.passes.DEFAULT_PIPELINE``)
    and return a new Plan; constants nobody reads any more are dropped.

    print_after_all: after every pass, print what it changed in the IR text as a unified
    diff, or that it changed nothing (to `out`, default stderr).
    verify_each: run the verifier after every pass (the tests do).
    objective= ("rounds", "bytes" or "time"), net= (for "time"), clients= (the parties
    that do not compute): options of the `comparisons` pass, which then runs last if the pipeline
    does not name it (planc/passes/comparisons.py).
    """
    graph = plan.graph if isinstance(plan, IRPlan) else plan
    if (options.get("objective") or options.get("net")) and "comparisons" not in pipeline.replace(" ", "").split(","):
        # an objective asks the compiler to choose each comparison's protocol
        pipeline = pipeline + ",comparisons,verify"
    if isinstance(plan, IRPlan):  # passes that cost the plan read its constants
        options.setdefault("constants", plan.constants)
    passes = parse_pipeline(pipeline, policy=policy or DEFAULT, **options)
    out = out or sys.stderr
    text = print_graph(graph) if print_after_all else None
    for p in passes:
        graph = p.run(graph)
        if verify_each:
            verify(graph)
        if print_after_all:
            text = _print_change(p.name, text, print_graph(graph), out)
    before = graph if not isinstance(plan, IRPlan) else plan.graph
    if [v.type.vis for v in graph.nodes[-1].operands] != [v.type.vis for v in before.nodes[-1].operands]:
        warn_unrevealed(graph)  # a pass changed what the outputs are (trace warned about the original)
    if not isinstance(plan, IRPlan):
        return Plan(graph)
    used = {n.attr("name") for n in graph.consts() if n.attr("name") is not None}
    return Plan(graph, {k: v for k, v in plan.constants.items() if k in used},
                {k: v for k, v in plan.captured.items() if k in used}, dict(plan.meta))


def _print_change(name: str, before: str, after: str, out) -> str:
    """`// ----- after NAME: unchanged`, or the header and a unified diff of the IR text."""
    if after == before:
        print(f"// ----- after {name}: unchanged", file=out)
        return after
    print(f"// ----- after {name}", file=out)
    diff = difflib.unified_diff(before.splitlines(), after.splitlines(), f"before {name}", f"after {name}",
                                lineterm="")
    for line in diff:
        print(line, file=out)
    return after
