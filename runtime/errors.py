"""Errors raised while running a plan.

Every failure names the node and the user's source line, like a compiler's error
(the form of ``planc.ir.verify.VerifyError``): ``examples/x.py:14: conv2d %h (party bob): <what went wrong>``,
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


def missing_tag(tag: str, want, party: str, supplied, elsewhere=()) -> str:
    """Why a load found nothing: ``no tensor under tag 'mnist/test' (expected ...); the tags
    supplied for bob: 'mnist/tset'; closest match 'mnist/tset' (misspelt?)``

    supplied: the tags this party was given (a dict or any iterable of names);
    elsewhere: the other parties that were given a tensor under this very tag."""
    import difflib

    text = f"no tensor under tag {tag!r} (expected {want})"
    elsewhere = list(elsewhere)
    if elsewhere:
        text += f"; party {', '.join(elsewhere)} holds one, but the plan loads it from {party}"
    tags = sorted(str(t) for t in (supplied or ()))
    if not tags:
        return text + f"; no tensors were supplied for {party}"
    shown = ", ".join(map(repr, tags[:20])) + (f" and {len(tags) - 20} more" if len(tags) > 20 else "")
    text += f"; the tags supplied for {party}: {shown}"
    close = difflib.get_close_matches(tag, tags, n=1, cutoff=0.6)
    if close:
        text += f"; closest match {close[0]!r} (misspelt?)"
    return text
