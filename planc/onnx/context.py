"""Reading an ONNX model and lowering its nodes into a planc Builder.

A model is checked, converted to opset ``LAST_OPSET`` (onnx.version_converter: one set
of op signatures for the rules) and shape-inferred. Each ONNX value is then, while
lowering, one of

- a planc ``Value`` (what the graph computes: the model's inputs and everything that
  depends on them or on weights);
- a ``Known`` array: architecture fixed at import time (Constant nodes, integer
  initializers such as shapes, axes and indices, and anything computed from those
  alone, folded by onnx's own reference evaluator: Shape -> Gather -> Concat -> Reshape
  chains become a constant shape);
- an ``Init``: a floating-point initializer, i.e. a weight. Used as an operand it
  becomes a ``load`` of ``<tag>/<name>`` from the owner (never embedded in the plan). A
  rule that needs a value at import time (an exponent, resize scales, a pad value) reads
  it: that is architecture, fixed like an attribute, not a weight.

Every node made for an ONNX node is located at it: ``Loc(model name, node index,
module=node name, module_class=op type)``, printed ``loc("cnn.onnx":3 in "/conv1/Conv":
"Conv")``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from planc.ir import ops
from planc.ir.builder import Builder
from planc.ir.graph import Loc, Value
from planc.ir.types import PUBLIC, TensorType, join, private

from .errors import OnnxImportError
from .registry import DISPATCH, FIRST_OPSET, LAST_OPSET

ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: "f32", onnx.TensorProto.DOUBLE: "f64", onnx.TensorProto.INT64: "i64",
    onnx.TensorProto.INT32: "i32", onnx.TensorProto.BOOL: "bool",
}
NP_DTYPES = {"f32": np.float32, "f64": np.float64, "i64": np.int64, "i32": np.int32, "bool": np.bool_}


@dataclass(frozen=True)
class Known:
    """A value fixed at import time (architecture, not data)."""

    array: np.ndarray


@dataclass(frozen=True)
class Init:
    """A floating-point initializer: a weight of the owner's, loaded when used."""

    name: str
    array: np.ndarray


def read_model(model) -> onnx.ModelProto:
    """A ModelProto from a path, bytes or a ModelProto; checked, converted to LAST_OPSET
    and shape-inferred."""
    if isinstance(model, onnx.ModelProto):
        m = model
    else:
        try:
            m = onnx.load_from_string(bytes(model)) if isinstance(model, (bytes, bytearray)) else onnx.load(model)
        except (OSError, ValueError) as e:
            raise OnnxImportError(f"cannot read the model: {e}") from None
        except Exception as e:  # protobuf's DecodeError: not an ONNX file
            raise OnnxImportError(f"not an ONNX model ({type(e).__name__}: {e})") from None
    opset = default_opset(m)
    if opset is None:
        raise OnnxImportError("the model imports no default-domain opset")
    try:
        onnx.checker.check_model(m)
    except onnx.checker.ValidationError as e:
        raise OnnxImportError(f"the model does not pass onnx.checker: {str(e).splitlines()[0]}", opset=opset) from None
    if opset != LAST_OPSET:
        try:
            m = onnx.version_converter.convert_version(m, LAST_OPSET)
        except Exception as e:
            raise OnnxImportError(f"opset {opset} cannot be converted to {LAST_OPSET} "
                                  f"(planc reads opsets {FIRST_OPSET}..{LAST_OPSET}): {e}", opset=opset) from None
    try:
        m = onnx.shape_inference.infer_shapes(m, strict_mode=False)
    except Exception as e:
        raise OnnxImportError(f"shape inference failed: {e}", opset=opset) from None
    return m


def default_opset(m: onnx.ModelProto) -> int | None:
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return None


def tensor_type(vi, shapes: dict, what: str) -> TensorType:
    """The planc type of a graph input/output ValueInfo (its visibility public; the
    caller sets it); `shapes` overrides symbolic dims by input name."""
    tt = vi.type.tensor_type
    dt = ONNX_DTYPES.get(tt.elem_type)
    if dt is None:
        raise OnnxImportError(f"{what} {vi.name!r} has ONNX element type "
                              f"{onnx.TensorProto.DataType.Name(tt.elem_type)}; planc reads float, double, int64, "
                              "int32 and bool")
    if vi.name in shapes:
        return TensorType(dt, tuple(int(s) for s in shapes[vi.name]), PUBLIC)
    dims = []
    for d in tt.shape.dim:
        if not d.HasField("dim_value"):
            raise OnnxImportError(f"{what} {vi.name!r} has a symbolic dimension {d.dim_param or '?'!r}; plans have "
                                  f"static shapes: give input_shapes={{{vi.name!r}: (...)}}")
        dims.append(int(d.dim_value))
    return TensorType(dt, tuple(dims), PUBLIC)


class Ctx:
    """Lowering state for one ONNX graph into a Builder (see the module docstring)."""

    def __init__(self, b: Builder, model: onnx.ModelProto, *, owner: int, tag: str, file: str, constants: dict):
        self.b, self.model, self.owner, self.tag, self.file = b, model, owner, tag, file
        self.env: dict[str, object] = {}
        self.constants = constants  # plan constants made here (public)
        self.loads: dict[str, Value] = {}
        self._shares: dict[str, Value] = {}
        self.loc: Loc | None = None
        self.node = None
        self.opset = default_opset(model)
        for init in model.graph.initializer:
            a = numpy_helper.to_array(init)
            self.env[init.name] = Init(init.name, a) if a.dtype.kind == "f" else Known(a)

    # ---- errors
    def error(self, problem: str, **kw) -> OnnxImportError:
        n = self.node
        return OnnxImportError(problem, node=node_name(n, self.index) if n is not None else None,
                               op_type=n.op_type if n is not None else None, opset=self.opset, **kw)

    # ---- values
    def known(self, x, what: str) -> np.ndarray:
        """x's value at import time, or an error saying that `what` must be a constant."""
        if isinstance(x, (Known, Init)):
            return x.array
        raise self.error(f"{what} must be fixed at import time, not a computed value")

    def is_known(self, x) -> bool:
        return isinstance(x, Known)

    def value(self, x, like: Value | None = None) -> Value:
        """x as a planc Value: a weight becomes a load from the owner, a known array a
        public constant of the plan."""
        if isinstance(x, Value):
            return x
        if isinstance(x, Init):
            if x.name not in self.loads:
                dt = NP_TO_IR.get(x.array.dtype.type)
                if dt is None:
                    raise self.error(f"initializer {x.name!r} has dtype {x.array.dtype}")
                t = TensorType(dt, tuple(x.array.shape), private(self.owner))
                self.loads[x.name] = self.b.emit("load", (), {"tag": f"{self.tag}/{x.name}", "owner": self.owner},
                                                 types=[t], name=x.name.split("/")[-1], loc=self.loc, at_top=True)
            return self.loads[x.name]
        if isinstance(x, Known):
            a = x.array
            dt = NP_TO_IR.get(a.dtype.type)
            if dt is None:
                raise self.error(f"constant of dtype {a.dtype}")
            if like is not None and dt != like.type.dtype and a.dtype.kind == "f" and like.type.dtype in ("f32", "f64"):
                dt = like.type.dtype
            if a.ndim == 0 and dt != "bool":
                return self.b.emit("const", (), {"value": float(a)}, types=[TensorType(dt, (), PUBLIC)], name="c",
                                   loc=self.loc)
            import torch

            name = self.b.fresh("k")
            self.constants[name] = torch.from_numpy(np.ascontiguousarray(a).astype(NP_DTYPES[dt]))
            return self.b.emit("const", (), {"name": name}, types=[TensorType(dt, tuple(a.shape), PUBLIC)], name=name,
                               loc=self.loc, at_top=True)
        if x is None:
            raise self.error("a required input is missing")
        raise AssertionError(type(x))

    # ---- emitting
    def emit(self, op: str, operands, attrs=None) -> Value:
        """`op` on operands (Values, weights or known arrays), located at the node; private
        operands meeting secret ones are shared first, except for products, whose
        protocols take the owner's plaintext."""
        like = next((v for v in operands if isinstance(v, Value)), None)
        vals = [self.value(v, like) for v in operands]
        if not ops.get(op).product:
            vis = join(*(v.type.vis for v in vals))
            if vis.is_secret:
                vals = [self._share(v) if v.type.vis.is_private else v for v in vals]
        try:
            return self.b.emit(op, vals, attrs or {}, loc=self.loc)
        except ops.TypeRuleError as e:
            if e.op is None:
                e.op = op
            raise self.error(f"lowers to {e}") from None

    def _share(self, v: Value) -> Value:
        if v.name not in self._shares:
            self._shares[v.name] = self.b.emit("share", [v], name=f"{v.name}_s", loc=self.loc)
        return self._shares[v.name]

    def shape(self, x) -> tuple:
        if isinstance(x, Value):
            return x.type.shape
        if isinstance(x, (Known, Init)):
            return tuple(x.array.shape)
        raise self.error("a required input is missing")

    def rank(self, x) -> int:
        return len(self.shape(x))

    def axis(self, a: int, rank: int) -> int:
        if not -max(rank, 1) <= a < max(rank, 1):
            raise self.error(f"axis {a} out of range for rank {rank}")
        return a % max(rank, 1)

    # ---- running the graph
    def run(self, inputs: dict[str, Value], skip=frozenset(), replace=None) -> list:
        """Lower every node; `inputs` binds the graph inputs. `replace` maps a node index
        to a function run instead of its rule (fusions); `skip` nodes are left out."""
        g = self.model.graph
        for vi in g.input:
            if vi.name in inputs:
                self.env[vi.name] = inputs[vi.name]
        for i, n in enumerate(g.node):
            if i in skip:
                continue
            self.node, self.index = n, i
            self.loc = Loc(self.file, i + 1, node_name(n, i), n.op_type)
            xs = [self.env.get(name) if name else None for name in n.input]
            rule = replace.get(i) if replace else None
            if rule is None:
                for name, x in zip(n.input, xs):
                    if name and x is None:
                        raise self.error(f"input {name!r} is not defined before the node")
                m = DISPATCH.get(n.op_type) if n.domain in ("", "ai.onnx") else None
                if m is None:
                    dom = f" of domain {n.domain!r}" if n.domain not in ("", "ai.onnx") else ""
                    raise self.error(f"op type {n.op_type}{dom} is not supported", supported=tuple(sorted(DISPATCH)))
                if xs and all(x is None or isinstance(x, Known) for x in xs) and n.op_type not in NO_FOLD:
                    outs = self.fold(n, xs)
                else:
                    outs = m.fn(self, n, xs)
            else:
                outs = rule(self, n, xs)
            outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
            for name, v in zip(n.output, outs):
                if name:
                    self.env[name] = v
        self.node = None
        return [self.env[vi.name] for vi in g.output]

    def fold(self, n, xs):
        """A node on constants alone, computed now by onnx's reference evaluator."""
        from onnx.reference import ReferenceEvaluator

        names = [f"in{i}" if x is not None else "" for i, x in enumerate(xs)]
        node = helper.make_node(n.op_type, names, list(n.output), domain=n.domain)
        node.attribute.extend(n.attribute)
        try:
            got = ReferenceEvaluator(node).run(None, {nm: x.array for nm, x in zip(names, xs) if nm})
        except Exception as e:
            raise self.error(f"cannot fold it on constants: {type(e).__name__}: {e}") from None
        return [Known(np.asarray(a)) for a in got]


NP_TO_IR = {np.float32: "f32", np.float64: "f64", np.int64: "i64", np.int32: "i32", np.bool_: "bool"}
NO_FOLD = frozenset({"Constant"})  # its rule makes the Known itself


def node_name(n, i: int) -> str:
    return n.name or f"{n.op_type}_{i}"


def attrs(n) -> dict:
    """The node's attributes as Python values (strings decoded, tensors as arrays)."""
    out = {}
    for a in n.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, onnx.TensorProto):
            v = numpy_helper.to_array(v)
        elif isinstance(v, list):
            v = [x.decode() if isinstance(x, bytes) else x for x in v]
        out[a.name] = v
    return out
