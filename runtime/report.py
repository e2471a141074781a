"""Tables and one-line descriptions of runs, shared by `planc run` and `LocalResult`.

The runtime layer owns them so that `LocalResult.summary()` and the command line print
the very same table, and the runtime needs nothing from the front end to do it.
"""
from __future__ import annotations

import io


def mib(n: int) -> str:
    """Bytes for people: ``1.25 MiB`` from 64 KiB up, ``12,345 B`` below."""
    return f"{n / 2 ** 20:.2f} MiB" if n >= 2 ** 16 else f"{n:,} B"


def stats_table(stats: dict):
    """The `communication` table: one row per party (and the dealer) of a run's stats."""
    from rich.table import Table

    t = Table(title="communication", title_justify="left")
    for c in ("party", "rounds", "sent", "received", "dealer material", "time"):
        t.add_column(c, justify="right" if c != "party" else "left")
    for p, s in stats.items():
        took = s.get("online_s", s.get("dealer_s", 0.0))
        t.add_row(p, str(s.get("rounds", 0)), mib(s.get("bytes_sent", 0)), mib(s.get("bytes_recv", 0)),
                  mib(s.get("dealer_bytes", 0)), f"{took * 1000:.1f} ms")
    return t


def wall_line(wall_s: float) -> str:
    return f"wall time {wall_s * 1000:.1f} ms"


def render(*items, width: int = 100) -> str:
    """Rich renderables (tables, strings) as plain text, as a pipe would show them."""
    from rich.console import Console

    buf = io.StringIO()
    con = Console(file=buf, width=width, highlight=False, soft_wrap=True, color_system=None, force_terminal=False)
    for it in items:
        con.print(it, markup=False) if isinstance(it, str) else con.print(it)
    return buf.getvalue()


def describe_value(o) -> str:
    """`f32[100,10]` for a tensor, `shares [100,10]` for a share, `-` for nothing held."""
    import torch

    from planc.ir.types import TORCH_TO_IR

    from .party import Shared

    if o is None:
        return "-"
    if isinstance(o, torch.Tensor):
        dt = TORCH_TO_IR.get(str(o.dtype), str(o.dtype).removeprefix("torch."))
        return f"{dt}[{','.join(map(str, o.shape))}]"
    if isinstance(o, Shared):
        return f"shares [{','.join(map(str, o.shape))}]"
    return type(o).__name__


def outputs_line(outputs: dict) -> str:
    """`0: f32[100,10] at bob; 1: shares [4] at alice, bob` from {party: [value, ...]}."""
    n = max((len(v) for v in outputs.values()), default=0)
    parts = []
    for i in range(n):
        held: dict[str, list[str]] = {}
        for p, outs in outputs.items():
            o = outs[i] if i < len(outs) else None
            if o is not None:
                held.setdefault(describe_value(o), []).append(p)
        what = "; ".join(f"{d} at {', '.join(ps)}" for d, ps in held.items()) or "held by nobody"
        parts.append(f"{i}: {what}")
    return " | ".join(parts) if parts else "none"
