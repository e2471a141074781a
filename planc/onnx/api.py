"""`planc.from_onnx` and the model body a worker links in place of a `load_model` call.

Two ways in:

- ``from_onnx(model, owner="alice", tag="cnn", input_owner="bob", reveal_to="bob")``: a
  whole `planc.Plan`. The model's graph inputs become loads of ``<input name>`` from
  `input_owner` (public run-time inputs when it is None), its float initializers loads
  of ``<tag>/<initializer>`` from `owner`, its outputs the plan's outputs (revealed to
  `reveal_to` when given).
- ``OnnxModel.read(model)`` then ``.emit(builder, args, owner=k, tag=...)``: the body
  alone, as nodes appended to any `ir.builder.Builder`, taking the model's inputs as
  operands (Values of any visibility) and returning its outputs; weights are the same
  loads. ``link(plan, {tag: model})`` uses it to replace every `call` node of a plan
  (`planc.load_model`) by the body, checking the call's declared types.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace

import onnx

from planc.ir.builder import Builder
from planc.ir.graph import Graph, Loc, Value
from planc.ir.types import SECRET, TensorType, private
from planc.ir.verify import verify

from . import fuse, rules_math, rules_nn, rules_shape  # noqa: F401  (each registers its mappings)
from .context import Ctx, read_model, tensor_type
from .errors import OnnxImportError


@dataclass(frozen=True)
class OnnxModel:
    """An ONNX model read, converted to the importer's opset and shape-inferred."""

    model: onnx.ModelProto
    name: str  # the file name locations use
    inputs: tuple[tuple[str, TensorType], ...]  # graph inputs that are not initializers (public types)
    outputs: tuple[str, ...]

    @classmethod
    def read(cls, model, *, input_shapes=None, name: str | None = None) -> "OnnxModel":
        if name is None:
            name = os.path.basename(os.fspath(model)) if isinstance(model, (str, os.PathLike)) else "model.onnx"
        m = read_model(model)
        inits = {i.name for i in m.graph.initializer}
        shapes = dict(input_shapes or {})
        ins = tuple((vi.name, tensor_type(vi, shapes, "input")) for vi in m.graph.input if vi.name not in inits)
        unknown = set(shapes) - {n for n, _ in ins}
        if unknown:
            raise OnnxImportError(f"input_shapes names {sorted(unknown)}, but the model's inputs are "
                                  f"{[n for n, _ in ins]}")
        return cls(m, name, ins, tuple(o.name for o in m.graph.output))

    def emit(self, b: Builder, args, *, owner: int, tag: str, constants: dict) -> list[Value]:
        """The model's body appended to `b`: `args` (one Value per model input, any
        visibility, of the input's dtype and shape) in, its outputs out. Weights are
        loads of ``<tag>/<initializer>`` from party `owner`; public constants the body
        needs go into `constants` (the plan's)."""
        if len(args) != len(self.inputs):
            raise OnnxImportError(f"the model takes {len(self.inputs)} inputs "
                                  f"({', '.join(n for n, _ in self.inputs)}), given {len(args)}")
        for (n, t), v in zip(self.inputs, args):
            if (v.type.dtype, v.type.shape) != (t.dtype, t.shape):
                raise OnnxImportError(f"input {n!r} is {t.dtype}{list(t.shape)}, given %{v.name}: {v.type}")
        cx = Ctx(b, self.model, owner=owner, tag=tag, file=self.name, constants=constants)
        skip, repl = fuse.fusions(self.model)
        outs = cx.run({n: v for (n, _), v in zip(self.inputs, args)}, skip=skip, replace=repl)
        cx.loc = Loc(self.name, len(self.model.graph.node) + 1, "outputs", "graph")
        return [cx.value(o) for o in outs]


def from_onnx(model, *, owner: str, tag: str, parties=None, input_owner: str | None = None,
              reveal_to: str | None = None, input_shapes=None, name: str | None = None):
    """An ONNX model (a path, its bytes or a ModelProto; opsets 13..21) as a `planc.Plan`
    (see the module docstring). `parties` fixes the party order (default: owner, then
    input_owner and reveal_to as they come); `input_shapes` {input: shape} fixes
    symbolic dimensions; `name` names the plan (default: the ONNX graph's name)."""
    from planc.errors import warn_unrevealed
    from planc.plans import Plan

    om = OnnxModel.read(model, input_shapes=input_shapes, name=None if not isinstance(model, (str, os.PathLike))
                        else os.path.basename(os.fspath(model)))
    b = Builder(_plan_name(name or om.model.graph.name or "onnx_model"), list(parties or ()))
    k = b.party(owner)
    args = []
    for i, (n, t) in enumerate(om.inputs):
        loc = Loc(om.name, 0, n, "input")
        if input_owner is None:
            args.append(b.emit("input", (), {"index": i}, types=[t], name=n, loc=loc))
        else:
            j = b.party(input_owner)
            args.append(b.emit("load", (), {"tag": n, "owner": j}, types=[t.with_vis(private(j))], name=n, loc=loc))
    if reveal_to is not None:
        b.party(reveal_to)
    constants: dict = {}
    outs = om.emit(b, args, owner=k, tag=tag, constants=constants)
    if reveal_to is not None:
        r = b.party(reveal_to)
        outs = [b.emit("reveal", [v], {"to": r}, loc=Loc(om.name, 0, o, "output"))
                if not v.type.vis.is_public and v.type.vis != private(r) else v for v, o in zip(outs, om.outputs)]
    graph = verify(b.finish(outs))
    warn_unrevealed(graph)
    return Plan(graph, constants, {}, {})


def weights(model, tag: str) -> dict:
    """{``<tag>/<initializer>``: tensor} of a model's float initializers: the data its
    owner supplies for the loads `emit` makes (a worker reads them from its catalogue)."""
    import torch
    from onnx import numpy_helper

    m = model.model if isinstance(model, OnnxModel) else read_model(model)
    out = {}
    for init in m.graph.initializer:
        a = numpy_helper.to_array(init)
        if a.dtype.kind == "f":
            out[f"{tag}/{init.name}"] = torch.from_numpy(a.copy())
    return out


def _plan_name(s: str) -> str:
    s = re.sub(r"\W", "_", s)
    return s if s and not s[0].isdigit() else "plan_" + s


def link(plan, models: dict):
    """`plan` with every top-level `call` node of a tag in `models` ({tag: path, bytes,
    ModelProto or OnnxModel}) replaced by that model's body; the call's owner is the
    weights' owner, its operands the model's inputs, and the body's outputs must have
    the dtypes and shapes the call declared (a secret declaration takes a private body
    output shared). Returns a new `planc.Plan`."""
    from planc.plans import Plan

    g = plan.graph
    b = Builder(g.name, g.parties)
    for n in g.walk():
        for v in n.results:
            b._used.add(v.name)
    constants = dict(plan.constants)
    mapping: dict[str, Value] = {}
    for n in g.nodes:
        n = replace(n, operands=tuple(mapping.get(v.name, v) for v in n.operands))
        if n.op != "call" or n.attr("tag") not in models:
            if n.regions and any(x.op == "call" for r in n.regions for x in r.nodes):
                raise OnnxImportError(f"{n.where()}: a model called inside a loop cannot be linked")
            b._blocks[-1].append(n)
            continue
        m = models[n.attr("tag")]
        m = m if isinstance(m, OnnxModel) else OnnxModel.read(m)
        outs = m.emit(b, list(n.operands), owner=n.attr("owner"), tag=n.attr("tag"), constants=constants)
        if len(outs) != len(n.results):
            raise OnnxImportError(f"{n.where()}: model {n.attr('tag')!r} has {len(outs)} outputs, the plan "
                                  f"declares {len(n.results)}")
        for want, got in zip(n.results, outs):
            if (want.type.dtype, want.type.shape) != (got.type.dtype, got.type.shape):
                raise OnnxImportError(f"{n.where()}: model {n.attr('tag')!r} gives {got.type}, the plan declares "
                                      f"{want.type}")
            if want.type.vis != got.type.vis:
                if want.type.vis == SECRET:
                    got = b.emit("share", [got], loc=n.loc)
                else:
                    raise OnnxImportError(f"{n.where()}: model {n.attr('tag')!r} gives {got.type}, the plan "
                                          f"declares {want.type}")
            mapping[want.name] = got
    graph = Graph(g.name, g.parties, tuple(b._blocks[0]))
    return Plan(verify(graph), {k: v for k, v in constants.items()}, dict(plan.captured), dict(plan.meta))

