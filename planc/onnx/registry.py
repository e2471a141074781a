"""ONNX op types and the planc ops they lower to, registered on the op definitions.

``@onnx_op("Gemm", OP.linear, OP.matmul, ...)`` makes the function the lowering of ONNX
nodes of type "Gemm" and registers, on every planc op it may emit, the kind-"onnx" rule
(``ir.opdef.register``): an ``OnnxMappings`` listing each ONNX type that lowers to the
op, so ``planc ops NAME`` and ``coverage()`` read it from the op itself. ``DISPATCH``
is the derived view by ONNX type that the importer looks a node up in (an ONNX file
names its ops by strings); ops that emit no planc op (Identity, Shape, Constant, ...)
are in it with no op definitions.
"""
from __future__ import annotations

from dataclasses import dataclass

from planc.ir import ops

FIRST_OPSET, LAST_OPSET = 13, 21  # models are converted to LAST_OPSET before lowering


@dataclass(frozen=True)
class Mapping:
    op_type: str
    fn: object
    emits: tuple  # the planc OpDefs it may emit
    since: int  # the first opset of FIRST..LAST in which the op type exists
    where: str


class OnnxMappings:
    """An op's "onnx" rule: every ONNX op type that may lower to it."""

    def __init__(self):
        self.entries: list[Mapping] = []

    def op_types(self) -> list[str]:
        return [m.op_type for m in self.entries]


DISPATCH: dict[str, Mapping] = {}


def onnx_op(op_type: str, *defs, since: int = FIRST_OPSET):
    """Decorator: `fn(cx, node, xs)` lowers ONNX nodes of `op_type`; `defs` are the planc
    op definitions it may emit."""
    where = ops.call_site(1)
    for d in defs:
        if not isinstance(d, ops.OpDef):
            raise AssertionError(f"onnx_op({op_type!r}, ...) takes op definitions, got {d!r}")

    def deco(fn):
        if op_type in DISPATCH:
            raise AssertionError(f"ONNX {op_type} is mapped twice ({DISPATCH[op_type].where})")
        m = Mapping(op_type, fn, tuple(defs), since, where)
        DISPATCH[op_type] = m
        for d in defs:
            got = d.rule("onnx")
            if got is None:
                got = OnnxMappings()
                ops.register("onnx", d, where=where)(got)
            got.entries.append(m)
        return fn

    return deco


def coverage() -> dict[str, dict]:
    """{ONNX op type: {"planc": [planc ops it lowers to], "opsets": (first, last)}}, the
    opsets being those planc converts from and tests (tests/test_onnx.py)."""
    out = {}
    for t in sorted(DISPATCH):
        m = DISPATCH[t]
        out[t] = {"planc": [d.name for d in m.emits], "opsets": (max(FIRST_OPSET, m.since), LAST_OPSET)}
    return out
