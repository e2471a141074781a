"""ONNX import: a model (opsets 13..21) as planc IR, its weights left at their owner.

    api.py         from_onnx (a whole plan), OnnxModel (the body, emitted into any
                   Builder: what a worker links in place of a load_model call), link
    context.py     reading, opset conversion, shape inference; lowering state (Known
                   constants folded at import, weights as loads), locations
    registry.py    @onnx_op: the mapping from ONNX op types to planc ops, registered on
                   the op definitions (kind "onnx"); coverage()
    rules_*.py     the mappings: math (elementwise, reductions), nn (layers), shape
    fuse.py        patterns lowered as one op (the exact gelu as Div/Erf/Add/Mul/Mul)
    errors.py      OnnxImportError: the node, its op type and opset, what planc has
"""
from .api import OnnxModel, from_onnx, link, weights  # noqa: F401
from .errors import OnnxImportError  # noqa: F401
from .registry import DISPATCH, coverage, onnx_op  # noqa: F401

__all__ = ["OnnxImportError", "OnnxModel", "coverage", "from_onnx", "link", "onnx_op", "weights"]
