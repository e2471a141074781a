"""Structured logs: one JSON object a line, to the log file and to stderr.

A data owner must be able to answer, afterwards, who asked this worker to run what,
and what it decided: every request, every refusal with its rule, every approval and
every run's end is one line with the same fields — ``ts`` (UTC, ISO 8601), ``worker``,
``event`` (request, refused, accepted, pending, approved, started, done, failed,
expired, cancelled, error, ...), and as they apply ``run_id``, ``plan_hash``,
``client`` (the caller's authenticated identity), ``parties``, ``decision``/``rule``,
``duration_s``. Lines are written whole under a lock, so threads never interleave them;
a log that cannot be written never stops the daemon.
"""
from __future__ import annotations

import datetime
import json
import sys
import threading


class Log:
    def __init__(self, worker: str, path=None, stderr: bool = True):
        self.worker = worker
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8", buffering=1) if path is not None else None
        self._stderr = stderr

    def event(self, event: str, **fields):
        rec = {"ts": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
               "worker": self.worker, "event": event}
        rec.update({k: v for k, v in fields.items() if v is not None})
        try:
            line = json.dumps(rec, default=str, ensure_ascii=False)
        except Exception:  # noqa: BLE001 — an odd field is shown, not fatal
            line = json.dumps({k: str(v) for k, v in rec.items()})
        with self._lock:
            for f in (self._file, sys.stderr if self._stderr else None):
                if f is None:
                    continue
                try:
                    f.write(line + "\n")
                    f.flush()
                except Exception:  # noqa: BLE001
                    pass

    def close(self):
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
