"""Errors raised while running a plan.

Every failure names the node and the user's source line, like a compiler's error
(the form of ``planc.ir.verify.VerifyError``): ``examples/x.py:14: conv2d %h (party bob): <what went wrong>``,
followed by a few printed lines of IR around the node when the graph is known.
The original exception stays reachable as ``cause`` and ``__cause__``.
"""
from __future__ import annotations

from dataclasses import dataclass

from planc.ir.graph import Graph, Node

from .comm.base import CommError, DeadlineExceeded, PeerFailed, PeerTimeout


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


class PartyDied(PlanRuntimeError):
    """A rank's process ended without reporting a result: killed by a signal, or exited.

    party: the rank's name; exitcode: the process's exit code as multiprocessing has it
    (negative: -signal number; None if it could not be reaped); signal: the signal's name
    ("SIGKILL") or None; how: "killed by SIGKILL (signal 9)" / "exited with code 3"."""

    def __init__(self, party: str, exitcode: int | None):
        import signal as _signal

        self.exitcode = exitcode
        self.signal = None
        if exitcode is None:
            how = "closed its pipe without a result"
        elif exitcode < 0:
            try:
                self.signal = _signal.Signals(-exitcode).name
            except ValueError:
                self.signal = f"signal {-exitcode}"
            how = f"killed by {self.signal} (signal {-exitcode})"
        else:
            how = f"exited with code {exitcode} without a result"
        self.how = how
        super().__init__(None, party, f"its process died: {how}")


def describe(e: BaseException) -> str:
    """One line for an exception from inside a rule: torch messages can run to many lines."""
    lines = [s for s in str(e).splitlines() if s.strip()]
    first = lines[0].strip() if lines else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def _root_rank(e: BaseException) -> int:
    """How likely an error is the root of a run's failure (lower: likelier): a rank's own
    error or death, then a rank stuck past its deadline, then a timeout waiting for a peer,
    and last a PeerFailed (always the echo of another rank's failure)."""
    if not isinstance(e, CommError):
        return 0
    if isinstance(e, DeadlineExceeded):
        return 1
    if isinstance(e, PeerFailed):
        return 3
    return 2


def raise_first(errors, names):
    """Raise the root failure of a run, not the peers that stopped because of it
    (`_root_rank`; ties go to the lowest rank).

    errors: one entry per rank (None where the rank succeeded); names: the ranks' names.
    """
    found = [(_root_rank(e), r) for r, e in enumerate(errors) if e is not None]
    if not found:
        return
    err = errors[min(found)[1]]
    if isinstance(err, PlanRuntimeError):
        raise err
    who = names[min(found)[1]]
    raise PlanRuntimeError(None, who, f"{type(err).__name__}: {err}", err) from err


# ---- a failure as data, for crossing a process boundary ---------------------------------------

# kind <-> class, most specific first; anything else is "other"
_KINDS = (("data", DataError), ("plan", PlanRuntimeError), ("peer_failed", PeerFailed),
          ("deadline", DeadlineExceeded), ("peer_timeout", PeerTimeout), ("comm", CommError))
_CLASS = dict(_KINDS)


@dataclass(frozen=True)
class ErrorRecord:
    """A failure as plain data: what a rank's process sends its parent (as JSON, never
    pickled) so that the parent raises the equivalent error with a constructor.

    kind:    "plan" (PlanRuntimeError), "data" (DataError), "comm" (CommError),
             "peer_failed" (PeerFailed), "peer_timeout" (PeerTimeout), "deadline"
             (DeadlineExceeded) or "other";
    type:    the class name of the original exception;
    party:   the party concerned (PlanRuntimeError.party), or None;
    node:    the failing node's position in ``graph.walk()`` order, or None; with the
             plan, which both sides hold, it names the very node;
    loc:     that node's location ``[file, line, module, module_class]``, or None, so the
             record can be read without the plan;
    problem: the bare description (PlanRuntimeError.problem; for others, str(error));
    message: the complete message as the failing process had it;
    cause:   one line on the underlying exception (``describe``), or None.
    """

    kind: str
    type: str
    party: str | None
    node: int | None
    loc: list | None
    problem: str
    message: str
    cause: str | None = None

    FIELDS = ("kind", "type", "party", "node", "loc", "problem", "message", "cause")

    @classmethod
    def of(cls, e: BaseException, graph: Graph | None = None) -> "ErrorRecord":
        kind = next((k for k, c in _KINDS if isinstance(e, c)), "other")
        if not isinstance(e, PlanRuntimeError):
            return cls(kind, type(e).__name__, None, None, None, str(e), str(e), None)
        index = None
        if e.node is not None and graph is not None:
            index = next((i for i, m in enumerate(graph.walk()) if m is e.node), None)
        loc = e.node.loc if e.node is not None else None
        loc = [loc.file, loc.line, loc.module, loc.module_class] if loc is not None else None
        cause = describe(e.cause) if e.cause is not None else None
        return cls(kind, type(e).__name__, e.party, index, loc, e.problem, str(e), cause)

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.FIELDS}

    @classmethod
    def from_json(cls, d) -> "ErrorRecord":
        """Check a received record's shape; a malformed one is a RuntimeError saying so."""
        ok = (isinstance(d, dict) and set(d) == set(cls.FIELDS)
              and (d["kind"] in _CLASS or d["kind"] == "other")
              and all(isinstance(d[k], str) for k in ("type", "problem", "message"))
              and all(d[k] is None or isinstance(d[k], str) for k in ("party", "cause"))
              and (d["node"] is None or (type(d["node"]) is int and d["node"] >= 0))
              and (d["loc"] is None or (isinstance(d["loc"], list) and len(d["loc"]) == 4)))
        if not ok:
            raise RuntimeError(f"malformed error record from a rank: {str(d)[:200]}")
        return cls(**d)

    def to_exception(self, graph: Graph | None = None) -> BaseException:
        """The equivalent error, made by its class's constructor. A PlanRuntimeError gets
        its node back from `graph` (the same plan the rank ran) and so the same message,
        with IR context; its cause comes back as a RuntimeError with the cause's line."""
        cls = _CLASS.get(self.kind)
        if cls is None:
            return RuntimeError(f"{self.type}: {self.message}")
        if not issubclass(cls, PlanRuntimeError):
            return cls(self.message)
        node = None
        if self.node is not None and graph is not None:
            node = next((m for i, m in enumerate(graph.walk()) if i == self.node), None)
        cause = RuntimeError(self.cause) if self.cause is not None else None
        err = cls(node, self.party, self.problem, cause, graph)
        err.__cause__ = cause
        return err


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
