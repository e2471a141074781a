"""Errors of the front end. Each names the user's `file:line` first, like a compiler, and
the submodule it happened in (``mnist_cnn.py:44 in features.3 (Conv2d): ...``)."""
from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import os
import sys

from planc.ir.graph import Loc

# frames in these folders are planc's own, never the user's
_PKG_DIRS = tuple(
    os.path.dirname(os.path.abspath(importlib.util.find_spec(m).origin))
    for m in ("planc.errors", "planc.ir", "planc.runtime")
)


class TraceError(Exception):
    """Tracing or lowering failed at a line of the user's code."""

    def __init__(self, msg: str, loc: Loc | None = None):
        self.loc = loc
        self.problem = msg
        super().__init__(f"{loc}: {msg}" if loc else msg)


def _internal(filename: str) -> bool:
    if filename.startswith("<"):
        return True
    f = os.path.abspath(filename)
    if any(f.startswith(d + os.sep) for d in _PKG_DIRS):
        return True
    return f"{os.sep}torch{os.sep}" in f or f"{os.sep}python3." in f and "site-packages" not in f


# the submodule whose forward runs while tracing: (path, class name), or None outside
# submodules; set by the tracer around each module call (PlancTracer.call_module)
_MODULE: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("planc_module", default=None)


@contextlib.contextmanager
def in_module(path: str | None, cls: str | None):
    """Locations made inside name the submodule `path` of class `cls` (None: no submodule)."""
    token = _MODULE.set((path, cls) if path is not None else None)
    try:
        yield
    finally:
        _MODULE.reset(token)


def user_loc(skip: int = 1) -> Loc | None:
    """Location of the innermost frame that belongs to the user, not to planc or torch,
    and the submodule being traced, if any."""
    frame = sys._getframe(skip)
    while frame is not None:
        fn = frame.f_code.co_filename
        if not _internal(fn):
            module = _MODULE.get()
            return Loc(display_path(fn), frame.f_lineno, *(module or ()))
        frame = frame.f_back
    return None


def user_frames(skip: int = 1):
    frame = sys._getframe(skip)
    while frame is not None:
        if not _internal(frame.f_code.co_filename):
            yield frame
        frame = frame.f_back


def display_path(filename: str) -> str:
    """Path relative to the working directory when inside it, so plans do not depend on
    where the checkout lives."""
    f = os.path.abspath(filename)
    cwd = os.getcwd()
    if f.startswith(cwd + os.sep):
        return os.path.relpath(f, cwd)
    return f


def loc_of_exception(exc: BaseException) -> Loc | None:
    """Where an exception raised by the user's own code happened: the innermost frame of
    its traceback that belongs to the user (a `SyntaxError` names its own file and line)."""
    if isinstance(exc, SyntaxError) and exc.filename and not exc.filename.startswith("<"):
        return Loc(display_path(exc.filename), exc.lineno or 0)
    found = None
    tb = exc.__traceback__
    while tb is not None:
        fn = tb.tb_frame.f_code.co_filename
        if not _internal(fn):
            found = Loc(display_path(fn), tb.tb_lineno)
        tb = tb.tb_next
    return found


def first_line(exc: BaseException) -> str:
    """`Type: first line of the message` -- torch's messages can run to many lines."""
    try:
        text = str(exc)
    except Exception:  # an exception whose message itself fails
        text = ""
    lines = [s.strip() for s in text.splitlines() if s.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


class UnrevealedOutputWarning(UserWarning):
    """A plan output that no party is revealed: it stays secret-shared where it ran."""


def warn_unrevealed(graph) -> None:
    """Warn about each plan output that nobody is revealed, so that it does not silently
    vanish: at run time each computing party holds only its share of it (run_local: a
    ``Shared`` in the party's outputs; a worker keeps it under the handle
    ``<run id>/out<i>`` and returns no value)."""
    import warnings

    term = graph.nodes[-1] if graph.nodes else None
    made = {r.name: n for n in graph.nodes for r in n.results}
    for i, v in enumerate(term.operands if term is not None else ()):
        if v.type.vis.is_secret:
            loc = getattr(made.get(v.name), "loc", None)
            msg = (f"output {i} (%{v.name}) is revealed to nobody: it stays secret-shared at the computing "
                   "parties; planc.reveal(x, to=...) it to receive it")
            if loc is not None:  # reported at the user's line, where the output was made
                warnings.warn_explicit(msg, UnrevealedOutputWarning, loc.file, loc.line)
            else:
                warnings.warn(msg, UnrevealedOutputWarning, stacklevel=3)
