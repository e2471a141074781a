"""``[serving]`` in a worker's configuration (config.py reads it through parse_config)."""
from __future__ import annotations

from dataclasses import dataclass

KEYS = ("owners", "share_with", "max_requests", "max_batch")
MAX_BATCH = 64


@dataclass(frozen=True)
class ServingConfig:
    """``[serving]``: owners (identities whose model shares this worker accepts),
    share_with (identities this worker may send shares of its own models to),
    max_requests (the most queries one service may answer here), max_batch."""

    owners: tuple = ()
    share_with: tuple = ()
    max_requests: int | None = None
    max_batch: int = 16


def parse_config(d, bad, *, identities, show) -> ServingConfig:
    """The ``[serving]`` table, key by key (ConfigError through `bad`); `identities` and
    `show` are config.py's readers (config.py calls this: no import back)."""
    if not isinstance(d, dict):
        raise bad("serving", f"expected a table [serving] with {', '.join(KEYS)}, got {show(d)}")
    extra = sorted(set(d) - set(KEYS))
    if extra:
        raise bad(f"serving.{extra[0]}", f"unknown key; [serving] takes {', '.join(KEYS)}")
    out = {k: identities(d[k], bad, f"serving.{k}") for k in ("owners", "share_with") if k in d}
    for k, hi in (("max_requests", 10 ** 9), ("max_batch", MAX_BATCH)):
        if k in d:
            v = d[k]
            if type(v) is not int or not 1 <= v <= hi:
                raise bad(f"serving.{k}", f"expected a whole number from 1 to {hi:,}, got {show(v)}")
            out[k] = v
    return ServingConfig(**out)



def cfg_of(daemon) -> ServingConfig:
    """A daemon's ``[serving]`` (the defaults where it has none)."""
    return getattr(daemon.cfg, "serving", None) or ServingConfig()
