"""What `planc ops` prints: the op set, one op in full, and the torch surface.

Everything shown is read from the op definitions and the rules registered on them
(``planc.ir.ops``), so it cannot drift from what the layers do.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from planc.ir import ops
from planc.runtime import interpreter  # noqa: F401  (registers every protocol and bound)

from . import lower, samples, shells  # noqa: F401  (shells register the lowerings of share and reveal)
from .errors import UnrevealedOutputWarning
from .lower import LOWER, describe_target

ROOT = Path(__file__).resolve().parents[1]
TRAITS = ("source", "structural", "product", "shape_only", "accepts_pending_truncation", "moves",
          "always_allowed", "approximate", "communicates")

# nn modules whose forward lowers to planc ops (tracing goes through every module, so a
# module works when its forward's functions do): class -> (a small instance, input shape).
# tests/test_trace.py traces each.
NN_MODULES = {
    nn.Conv2d: (lambda: nn.Conv2d(2, 3, 3, padding=1), (1, 2, 6, 6)),
    nn.Linear: (lambda: nn.Linear(6, 3), (4, 6)),
    nn.ReLU: (nn.ReLU, (4, 6)),
    nn.Sigmoid: (nn.Sigmoid, (4, 6)),
    nn.Tanh: (nn.Tanh, (4, 6)),
    nn.Softmax: (lambda: nn.Softmax(dim=1), (4, 6)),
    nn.LogSoftmax: (lambda: nn.LogSoftmax(dim=1), (4, 6)),
    nn.AvgPool2d: (lambda: nn.AvgPool2d(2), (1, 2, 6, 6)),
    nn.MaxPool2d: (lambda: nn.MaxPool2d(2), (1, 2, 6, 6)),
    nn.AdaptiveAvgPool2d: (lambda: nn.AdaptiveAvgPool2d((2, 2)), (1, 2, 6, 6)),
    nn.BatchNorm2d: (lambda: nn.BatchNorm2d(2).eval(), (1, 2, 6, 6)),
    nn.BatchNorm1d: (lambda: nn.BatchNorm1d(6).eval(), (4, 6)),
    nn.Flatten: (nn.Flatten, (1, 2, 6, 6)),
    nn.Dropout: (lambda: nn.Dropout().eval(), (4, 6)),
    nn.Identity: (nn.Identity, (4, 6)),
    nn.Sequential: (lambda: nn.Sequential(nn.Linear(6, 4), nn.ReLU()), (4, 6)),
    nn.Hardtanh: (nn.Hardtanh, (4, 6)),
    nn.ReLU6: (nn.ReLU6, (4, 6)),
    nn.LayerNorm: (lambda: nn.LayerNorm(6), (4, 6)),
    nn.GELU: (nn.GELU, (4, 6)),
}


def _rel(where: str) -> str:
    path, _, line = where.rpartition(":")
    try:
        path = os.path.relpath(path, ROOT)
    except ValueError:
        pass
    return f"{path}:{line}"


def signature(d: ops.OpDef) -> str:
    attrs = ", ".join(f"{k}: {s.kind}" + ("" if s.required else f" = {s.default!r}") for k, s in d.attrs.items())
    return f"{d.name}({', '.join(d.operands)})" + (f" {{{attrs}}}" if attrs else "")


def sample_cost(d: ops.OpDef, parties=("alice", "bob")):
    """(rounds, bytes sent per party, dealer bytes) of the op's sample, or None."""
    if d.rule("sample") is None:
        return None
    from .cost import predict

    plan = samples.sample_plan(d, parties)
    c = predict(plan)
    # the sample reveals its result to the last party: leave that round and its bytes out
    reveal = [pc for n, pc in c.per_node if n.op == "reveal"]
    out = {}
    for p in plan.graph.parties:
        pc = c.merged[p]
        rv = reveal[0][p] if reveal else None
        out[p] = (pc.rounds - (rv.rounds if rv else 0), pc.bytes_sent - (rv.bytes_sent if rv else 0))
    return out, c.dealer_bytes


_MODULE_OPS: dict | None = None


def module_ops() -> dict:
    """{nn module class: set of op names its sample traces to} (traced once, cached)."""
    global _MODULE_OPS
    if _MODULE_OPS is None:
        import planc

        _MODULE_OPS = {}
        for cls, (make, shape) in NN_MODULES.items():
            m = make()

            def f(m=m, shape=shape):
                return m(planc.share(planc.load("x", owner="alice", shape=shape)))

            with warnings.catch_warnings():  # the module's secret output is the point: it is traced, never run
                warnings.simplefilter("ignore", UnrevealedOutputWarning)
                g = planc.trace(f, parties=["alice", "bob"]).graph
            _MODULE_OPS[cls] = {n.op for n in g.walk()}
    return _MODULE_OPS


def describe(name: str) -> list[tuple[str, str]]:
    """(field, text) rows describing op `name`, for `planc ops NAME`."""
    d = ops.get(name)
    rows = [("signature", signature(d)), ("meaning", d.doc or "-"),
            ("traits", ", ".join(t for t in TRAITS if getattr(d, t)) or "-")]
    low = d.rule("lower")
    rows.append(("from torch", ", ".join(low.targets()) if low else "-"))
    mods = [f"nn.{c.__name__}" for c, got in module_ops().items() if d.name in got]
    if mods:
        rows.append(("nn modules", ", ".join(mods)))
    proto = d.rule("protocol")
    if proto is not None:
        rows.append(("protocol", f"{proto.__module__}.{proto.__name__}"))
    elif d.shape_only:
        rows.append(("protocol", "its reference rule on every share (shape only, no message)"))
    cost = sample_cost(d)
    if cost is not None:
        per, dealer = cost
        shape = "x".join(map(str, samples.SHAPE))
        parts = "; ".join(f"{p}: {r} rounds, {b} B sent" for p, (r, b) in per.items())
        rows.append((f"cost, 2 parties, {shape}", f"{parts}; dealer {dealer} B"))
    b = d.rule("bound")
    rows.append(("error bound", str(b) if b else "exact up to fixed-point rounding (2^-16 per truncation)"))
    h = d.rule("hint")
    if h:
        rows.append(("policy hint", h))
    for kind, r in d.rules.items():
        rows.append((f"rule: {kind}", _rel(r.where)))
    for kind in ops.missing().get(d.name, []):
        rows.append((f"rule: {kind}", "MISSING"))
    return rows


def torch_surface() -> list[tuple[str, str, str]]:
    """(kind, torch name, planc ops) for every supported torch function, tensor method,
    operator and nn module."""
    by_fn: dict[int, list[str]] = {}
    for d in ops.REGISTRY.values():
        low = d.rule("lower")
        for _, fn in (low.entries if low else ()):
            by_fn.setdefault(id(fn), []).append(d.name)
    rows = []
    for key, fn in LOWER.items():
        if isinstance(key, str):
            kind, name = "method", "Tensor." + key.removeprefix("method:")
        else:
            name = describe_target(key)
            last = name.rsplit(".", 1)[-1]
            if name.startswith("planc.") or (last.startswith("_") and not last.startswith("__")):
                continue  # shells have their own section of the docs; torch-private aliases say nothing
            kind = "operator" if name.startswith("operator.") else "function"
        rows.append((kind, name, ", ".join(dict.fromkeys(by_fn.get(id(fn), []))) or "(no op: plumbing)"))
    for cls, got in module_ops().items():
        rows.append(("nn module", f"nn.{cls.__name__}", ", ".join(o for o in ops.REGISTRY if o in got
                                                                   and ops.get(o).computes and not ops.get(o).moves)))
    order = {"function": 0, "method": 1, "operator": 2, "nn module": 3}
    rows = sorted(set(rows), key=lambda r: (order[r[0]], r[1]))
    return rows


del lower, shells
