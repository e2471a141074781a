"""A rank's process ends when its parent does: no orphans.

`rank_main` is the entry point of every rank process that `runtime/procs.py` spawns. It is
imported (and run) before torch: importing torch takes seconds, and a parent killed in
that time must not leave its ranks behind, so this module imports nothing heavy and
loads the rank's real work only once the watch is in place.

The watch, three ways, so that it holds whatever killed the parent:

- on Linux the kernel sends this process SIGKILL when the parent *thread* that started it
  ends (``prctl(PR_SET_PDEATHSIG)``; `run_processes` stays in that thread until every
  rank is reaped);
- on every platform a daemon thread waits on multiprocessing's parent sentinel (a pipe
  whose other end only the parent holds: it reads as closed once the parent is gone) and
  also sees this process re-parented (``os.getppid()`` changing);
- a parent gone before either was in place is caught by the first look.

Either way the process exits at once (``os._exit``): there is nothing to clean up that
the kernel does not (sockets, memory), and its peers see their connections close.
"""
from __future__ import annotations

import importlib
import os
import sys
import threading

PR_SET_PDEATHSIG = 1
POLL_S = 0.5  # seconds between looks at os.getppid() while waiting on the sentinel
EXIT_CODE = 70  # what a rank exits with when its parent is gone


def _parent_gone(parent_pid: int) -> bool:
    return os.getppid() != parent_pid


def die_with_parent(parent_pid: int) -> None:
    """Arrange for this process to end when the process `parent_pid` (its parent) ends."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except Exception:  # noqa: BLE001 — the watch thread below still does it
            pass
    if _parent_gone(parent_pid):
        os._exit(EXIT_CODE)
    import multiprocessing
    import multiprocessing.connection as mp_connection

    parent = multiprocessing.parent_process()
    sentinel = getattr(parent, "sentinel", None)

    def watch():
        while not _parent_gone(parent_pid):
            if sentinel is not None:
                try:
                    if mp_connection.wait([sentinel], timeout=POLL_S):
                        break
                except OSError:  # the sentinel is unusable: fall back to polling
                    pass
                else:
                    continue
            threading.Event().wait(POLL_S)
        os._exit(EXIT_CODE)

    threading.Thread(target=watch, name="planc-parent-watch", daemon=True).start()


def rank_main(parent_pid: int, module: str, function: str, *args):
    """Watch the parent, then run ``module.function(*args)`` (imported only now)."""
    die_with_parent(parent_pid)
    return getattr(importlib.import_module(module), function)(*args)
