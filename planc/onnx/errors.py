"""What goes wrong when an ONNX model is turned into planc IR, with where and why."""
from __future__ import annotations


class OnnxImportError(ValueError):
    """An ONNX model planc cannot import: `node` names the ONNX node (None for the model
    itself), `op_type` and `opset` what it is, `problem` what is wrong, and `supported`
    lists the ONNX op types planc imports (given for an unsupported node)."""

    def __init__(self, problem: str, *, node: str | None = None, op_type: str | None = None,
                 opset: int | None = None, supported: tuple[str, ...] = ()):
        self.problem, self.node, self.op_type, self.opset = problem, node, op_type, opset
        self.supported = tuple(supported)
        where = ""
        if node is not None or op_type is not None:
            where = f"node {node!r} ({op_type}" + (f", opset {opset}" if opset is not None else "") + "): "
        tail = f"; planc imports: {', '.join(self.supported)}" if self.supported else ""
        super().__init__(where + problem + tail)
