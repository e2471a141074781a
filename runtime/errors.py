"""Errors raised while running a plan.

Every failure names the node and the user's source line, like a compiler's error
(DESIGN §8, §10): ``examples/x.py:14: conv2d %h (party bob): <what went wrong>``,
followed by a few printed lines of IR around the node when the graph is known.
The original exception stays reachable as ``cause`` and ``__cause__``.
"""
from __future__ import annotations

from planc.ir.graph import Graph, Node


class PlanRuntimeError(RuntimeError):
    """A node of a plan failed at run time.

    node:  the failing node (None for problems that belong to no node, such as data
           offered for a party the plan does not have);
    party: the name of the party concerned, or None (the reference runtime runs as
           nobody in particular);
    cause: the underlying exception, if any;
    problem: the bare description, without location.
    """

    def __init__(self, node: Node | None, party: str | None, problem: str,
                 cause: BaseException | None = None, graph: Graph | None = None):
        self.node = node
        self.party = party
        self.problem = problem
        self.cause = cause
        head = node.where() if node is not None else ""
        if party is not None:
            head += f" (party {party})" if head else f"party {party}"
        text = f"{head}: {problem}" if head else problem
        if node is not None and graph is not None:
            # imported late: the context printer is a nicety and must not be an import cycle
            from planc.ir.verify import context

            ctx = context(graph, node)
            if ctx:
                text += "\n" + ctx
        super().__init__(text)


class DataError(PlanRuntimeError):
    """Data, inputs, constants or models supplied to a run are missing or do not fit the plan."""


def describe(e: BaseException) -> str:
    """One line for an exception from inside a rule: torch messages can run to many lines."""
    lines = [s for s in str(e).splitlines() if s.strip()]
    first = lines[0].strip() if lines else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__
