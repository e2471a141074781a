"""ONNX import (planc/onnx/): real torch exports at opsets 13, 17 and 21 and handwritten
graphs for every op type planc maps, each run by planc's reference runtime and compared
with onnx's own ReferenceEvaluator and with PyTorch; the seed CNN and a transformer
block also run over shares (threads) within the new ops' bounds."""
from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import planc
from planc.onnx import DISPATCH, OnnxImportError, OnnxModel, coverage, link

ROOT = Path(__file__).resolve().parents[1]
COVERED: set[str] = set()  # ONNX op types the tests below import; the last test checks none is missed


def export(model, args, opset, names=("x",)) -> bytes:
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), args, f, opset_version=opset, dynamo=False, input_names=list(names))
    return f.getvalue()


def weights(data: bytes | onnx.ModelProto, tag: str) -> dict:
    m = data if isinstance(data, onnx.ModelProto) else onnx.load_from_string(data)
    return {f"{tag}/{i.name}": torch.from_numpy(numpy_helper.to_array(i).copy()) for i in m.graph.initializer
            if numpy_helper.to_array(i).dtype.kind == "f"}


def onnx_run(data, feeds: dict):
    m = data if isinstance(data, onnx.ModelProto) else onnx.load_from_string(data)
    return ReferenceEvaluator(m).run(None, {k: v.numpy() for k, v in feeds.items()})


def imported(data, feeds, tag="m"):
    """(plan, planc reference outputs, data dict): inputs at bob, weights at alice."""
    plan = planc.from_onnx(data, owner="alice", tag=tag, input_owner="bob", reveal_to="bob")
    m = data if isinstance(data, onnx.ModelProto) else onnx.load_from_string(data)
    COVERED.update(n.op_type for n in m.graph.node)
    d = {"alice": weights(data, tag), "bob": dict(feeds)}
    return plan, planc.run_reference(plan, data=d), d


def seed_cnn():
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import mnist_cnn
    finally:
        sys.path.pop(0)
    torch.manual_seed(0)
    return mnist_cnn.model.eval()


class Block(nn.Module):
    """Embedding, LayerNorm, attention-like softmax over the last axis with broadcasting
    matmuls, a GELU MLP and a residual."""

    def __init__(self, vocab=11, d=8):
        super().__init__()
        self.emb, self.ln, self.q = nn.Embedding(vocab, d), nn.LayerNorm(d), nn.Linear(d, d)
        self.fc1, self.fc2, self.act = nn.Linear(d, 2 * d), nn.Linear(2 * d, d), nn.GELU()

    def forward(self, ids):
        h = self.ln(self.emb(ids))
        att = torch.softmax(self.q(h) @ h.transpose(-1, -2) / 4.0, dim=-1)
        h = h + att @ h
        return self.fc2(self.act(self.fc1(h)))


# ---------------------------------------------------------------- real exports


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_seed_cnn_matches_onnx_and_torch(opset):
    model = seed_cnn()
    x = torch.rand(3, 1, 28, 28)
    data = export(model, (x,), opset)
    plan, (got,), _ = imported(data, {"x": x}, tag="cnn")
    torch.testing.assert_close(got, model(x).detach(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got.numpy(), onnx_run(data, {"x": x})[0], rtol=1e-4, atol=1e-4)
    # the weights stay loads at alice, never constants of the plan
    assert {n.attr("tag") for n in plan.graph.loads()} >= {"cnn/fc.weight", "cnn/features.0.weight"}
    assert not any(t.is_floating_point() and t.numel() > 1 for t in plan.constants.values())


def test_seed_cnn_over_shares():
    model = seed_cnn()
    x = torch.rand(4, 1, 28, 28)
    data = export(model, (x,), 17)
    plan, (ref,), d = imported(data, {"x": x}, tag="cnn")
    res = planc.run_local(plan, d)
    got = res.outputs["bob"][0]
    assert (got - ref).abs().max() < 2 ** -8
    assert torch.equal(got.argmax(1), ref.argmax(1))


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_mlp(opset):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8), nn.Tanh(),
                          nn.Linear(8, 4), nn.Sigmoid(), nn.Dropout(0.3), nn.Linear(4, 3), nn.LogSoftmax(1))
    x = torch.randn(5, 3, 4)
    data = export(model, (x,), opset)
    _, (got,), _ = imported(data, {"x": x})
    torch.testing.assert_close(got, model.eval()(x).detach(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.numpy(), onnx_run(data, {"x": x})[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_transformer_block(opset):
    torch.manual_seed(2)
    model = Block()
    ids = torch.tensor([[1, 4, 10, 0], [3, 3, 7, 2]])
    data = export(model, (ids,), opset, names=("ids",))
    plan, (got,), _ = imported(data, {"ids": ids})
    torch.testing.assert_close(got, model(ids).detach(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.numpy(), onnx_run(data, {"ids": ids})[0], rtol=1e-5, atol=1e-5)
    ops_used = {n.op for n in plan.graph.walk()}
    assert {"gather", "layer_norm" if opset >= 17 else "sqrt", "gelu", "softmax", "matmul"} <= ops_used
    if opset >= 17:  # the exact gelu's Div/Erf/Add/Mul/Mul chain became one op
        assert "erf" not in ops_used


def test_transformer_block_over_shares():
    torch.manual_seed(2)
    model = Block()
    ids = torch.tensor([[1, 4, 10, 0], [3, 3, 7, 2]])
    data = export(model, (ids,), 17, names=("ids",))
    plan, (ref,), d = imported(data, {"ids": ids})
    got = planc.run_local(plan, d).outputs["bob"][0]
    # layer_norm 2^-11 + 2^-8 |g| feeding a few products and gelu (2^-14): well under 2^-5
    assert (got - ref).abs().max() < 2 ** -5, (got - ref).abs().max()


def test_every_node_is_located_at_its_onnx_node():
    data = export(seed_cnn(), (torch.rand(1, 1, 28, 28),), 17)
    names = {n.name: n.op_type for n in onnx.load_from_string(data).graph.node}
    plan = planc.from_onnx(data, owner="alice", tag="cnn", input_owner="bob", reveal_to="bob")
    for n in plan.graph.walk():
        if n.op in ("load", "return") and n.attr("owner") != 0:
            continue
        if n.op in ("reveal", "return"):
            continue
        assert n.loc.module in names and n.loc.module_class == names[n.loc.module], (n.op, n.loc)
    assert 'in "/fc/Gemm": "Gemm"' in str(plan)


# ---------------------------------------------------------------- handwritten graphs

F32 = TensorProto.FLOAT


def graph(nodes, inputs: dict, outputs, inits: dict = None, opset=21):
    """A model of `nodes`; `inputs` {name: array} are graph inputs, `inits` initializers."""
    ins = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
           for k, v in inputs.items()]
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()]

    def model(outs):
        m = helper.make_model(helper.make_graph(nodes, "t", ins, outs, inits),
                              opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = 8 if opset <= 17 else 9 if opset <= 20 else 10
        return m

    # the outputs' types as onnx's evaluator finds them (the checker wants them typed)
    got = ReferenceEvaluator(model([helper.make_empty_tensor_value_info(o) for o in outputs])).run(None, inputs)
    return model([helper.make_tensor_value_info(o, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                  for o, a in zip(outputs, got)])


def r(*shape, seed=0, lo=-2.0, hi=2.0):
    g = np.random.default_rng(seed)
    return (g.random(shape) * (hi - lo) + lo).astype(np.float32)


def ints(*v):
    return np.asarray(v, dtype=np.int64)


def N(op, ins, outs=("y",), **kw):
    return helper.make_node(op, list(ins), list(outs), name=f"my_{op.lower()}", **kw)


# (op type, opsets, builder(opset) -> (nodes, inputs, inits, outputs))
CASES = [
    ("Add", lambda o: ([N("Add", ["a", "w"])], {"a": r(2, 3)}, {"w": r(3, seed=1)})),
    ("Sub", lambda o: ([N("Sub", ["a", "b"])], {"a": r(2, 3), "b": r(2, 3, seed=2)}, {})),
    ("Mul", lambda o: ([N("Mul", ["a", "w"])], {"a": r(2, 3)}, {"w": r(2, 3, seed=1)})),
    ("Div", lambda o: ([N("Div", ["a", "c"])], {"a": r(2, 3)}, {"c": ints(4).astype(np.float32)[0]})),
    ("Neg", lambda o: ([N("Neg", ["a"])], {"a": r(4)}, {})),
    ("Relu", lambda o: ([N("Relu", ["a"])], {"a": r(4)}, {})),
    ("Sigmoid", lambda o: ([N("Sigmoid", ["a"])], {"a": r(4)}, {})),
    ("Tanh", lambda o: ([N("Tanh", ["a"])], {"a": r(4)}, {})),
    ("Exp", lambda o: ([N("Exp", ["a"])], {"a": r(4)}, {})),
    ("Log", lambda o: ([N("Log", ["a"])], {"a": r(4, lo=0.5)}, {})),
    ("Sqrt", lambda o: ([N("Sqrt", ["a"])], {"a": r(4, lo=0.5)}, {})),
    ("Reciprocal", lambda o: ([N("Reciprocal", ["a"])], {"a": r(4, lo=0.5)}, {})),
    ("Erf", lambda o: ([N("Erf", ["a"])], {"a": r(6)}, {})),
    ("Abs", lambda o: ([N("Abs", ["a"])], {"a": r(6)}, {})),
    ("Pow", lambda o: ([N("Pow", ["a", "e"])], {"a": r(5, lo=0.5)}, {"e": np.float32(0.5)})),
    ("Clip", lambda o: ([N("Clip", ["a", "lo", "hi"])], {"a": r(6)}, {"lo": np.float32(-1), "hi": np.float32(0.5)})),
    ("LeakyRelu", lambda o: ([N("LeakyRelu", ["a"], alpha=0.1)], {"a": r(6)}, {})),
    ("Equal", lambda o: ([N("Equal", ["a", "a"])], {"a": r(3)}, {})),
    ("Greater", lambda o: ([N("Greater", ["a", "b"])], {"a": r(3), "b": r(3, seed=4)}, {})),
    ("Less", lambda o: ([N("Less", ["a", "b"])], {"a": r(3), "b": r(3, seed=4)}, {})),
    ("GreaterOrEqual", lambda o: ([N("GreaterOrEqual", ["a", "b"])], {"a": r(3), "b": r(3, seed=4)}, {})),
    ("LessOrEqual", lambda o: ([N("LessOrEqual", ["a", "b"])], {"a": r(3), "b": r(3, seed=4)}, {})),
    ("Where", lambda o: ([N("Greater", ["a", "b"], ["c"]), N("Where", ["c", "a", "b"])],
                         {"a": r(3), "b": r(3, seed=4)}, {})),
    ("Sum", lambda o: ([N("Sum", ["a", "b", "a"])], {"a": r(3), "b": r(3, seed=4)}, {})),
    ("Mean", lambda o: ([N("Mean", ["a", "b"])], {"a": r(3), "b": r(3, seed=4)}, {})),
    ("Max", lambda o: ([N("Max", ["a", "b"])], {"a": r(3), "b": r(3, seed=4)}, {})),
    ("Min", lambda o: ([N("Min", ["a", "b"])], {"a": r(3), "b": r(3, seed=4)}, {})),
    ("ReduceSum", lambda o: ([N("ReduceSum", ["a", "ax"], keepdims=0)], {"a": r(2, 3, 4)}, {"ax": ints(1, -1)})),
    ("ReduceMean", lambda o: ([N("ReduceMean", ["a", "ax"])] if o >= 18 else [N("ReduceMean", ["a"], axes=[1])],
                              {"a": r(2, 3, 4)}, {"ax": ints(1)} if o >= 18 else {})),
    ("ReduceMax", lambda o: ([N("ReduceMax", ["a", "ax"], keepdims=0)] if o >= 18 else
                             [N("ReduceMax", ["a"], axes=[2], keepdims=0)], {"a": r(2, 3, 4)},
                             {"ax": ints(2)} if o >= 18 else {})),
    ("ArgMax", lambda o: ([N("ArgMax", ["a"], axis=1, keepdims=0)], {"a": r(3, 5)}, {})),
    ("Softmax", lambda o: ([N("Softmax", ["a"], axis=0)], {"a": r(3, 4)}, {})),
    ("LogSoftmax", lambda o: ([N("LogSoftmax", ["a"], axis=1)], {"a": r(3, 4)}, {})),
    ("MatMul", lambda o: ([N("MatMul", ["a", "w"])], {"a": r(2, 3, 4)}, {"w": r(4, 5, seed=1)})),
    ("Gemm", lambda o: ([N("Gemm", ["a", "w", "c"], transA=1, alpha=0.5, beta=2.0)], {"a": r(4, 3)},
                        {"w": r(4, 5, seed=1), "c": r(5, seed=2)})),
    ("Conv", lambda o: ([N("Conv", ["a", "w", "b"], pads=[1, 0, 1, 2], strides=[1, 2])], {"a": r(1, 2, 5, 6)},
                        {"w": r(3, 2, 3, 3, seed=1), "b": r(3, seed=2)})),
    ("MaxPool", lambda o: ([N("MaxPool", ["a"], kernel_shape=[2, 2], strides=[2, 2])], {"a": r(1, 2, 4, 6)}, {})),
    ("AveragePool", lambda o: ([N("AveragePool", ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
                               {"a": r(1, 2, 4, 5)}, {})),
    ("GlobalAveragePool", lambda o: ([N("GlobalAveragePool", ["a"])], {"a": r(2, 3, 4, 4)}, {})),
    ("BatchNormalization", lambda o: ([N("BatchNormalization", ["a", "s", "b", "m", "v"], epsilon=1e-3)],
                                      {"a": r(2, 3, 4)}, {"s": r(3, seed=1), "b": r(3, seed=2), "m": r(3, seed=3),
                                                          "v": r(3, seed=4, lo=0.5)})),
    ("LayerNormalization", lambda o: ([N("LayerNormalization", ["a", "s", "b"], axis=-2)], {"a": r(2, 3, 4)},
                                      {"s": r(3, 4, seed=1), "b": r(3, 4, seed=2)})),
    ("Gelu", lambda o: ([N("Gelu", ["a"], approximate="tanh")], {"a": r(6) * 3}, {})),
    ("Dropout", lambda o: ([N("Dropout", ["a"])], {"a": r(3)}, {})),
    ("Identity", lambda o: ([N("Identity", ["a"])], {"a": r(3)}, {})),
    ("Constant", lambda o: ([N("Constant", [], ["k"], value=numpy_helper.from_array(r(3, seed=9))),
                             N("Add", ["a", "k"])], {"a": r(3)}, {})),
    ("Cast", lambda o: ([N("Cast", ["a"], to=TensorProto.FLOAT)], {"a": r(3)}, {})),
    ("Reshape", lambda o: ([N("Reshape", ["a", "s"])], {"a": r(2, 3, 4)}, {"s": ints(0, -1)})),
    ("Flatten", lambda o: ([N("Flatten", ["a"], axis=2)], {"a": r(2, 3, 4, 2)}, {})),
    ("Transpose", lambda o: ([N("Transpose", ["a"], perm=[2, 0, 1])], {"a": r(2, 3, 4)}, {})),
    ("Squeeze", lambda o: ([N("Squeeze", ["a", "ax"])], {"a": r(2, 1, 3, 1)}, {"ax": ints(1)})),
    ("Unsqueeze", lambda o: ([N("Unsqueeze", ["a", "ax"])], {"a": r(2, 3)}, {"ax": ints(0, -1)})),
    ("Concat", lambda o: ([N("Concat", ["a", "b"], axis=-1)], {"a": r(2, 3), "b": r(2, 2, seed=1)}, {})),
    ("Split", lambda o: ([N("Split", ["a", "sp"], ["y", "z"], axis=1)], {"a": r(2, 5)}, {"sp": ints(2, 3)})),
    ("Slice", lambda o: ([N("Slice", ["a", "s", "e", "ax", "st"])], {"a": r(4, 6)},
                         {"s": ints(1, -5), "e": ints(100, 5), "ax": ints(0, 1), "st": ints(1, 2)})),
    ("Gather", lambda o: ([N("Gather", ["a", "i"], axis=1)], {"a": r(3, 4)}, {"i": ints([0, -1], [2, 2])})),
    ("Expand", lambda o: ([N("Expand", ["a", "s"])], {"a": r(3, 1)}, {"s": ints(2, 3, 4)})),
    ("Pad", lambda o: ([N("Pad", ["a", "p", "v"])], {"a": r(2, 3)}, {"p": ints(0, 1, 1, 2), "v": np.float32(0.5)})),
    ("Resize", lambda o: ([N("Resize", ["a", "", "sc"], mode="nearest")], {"a": r(1, 2, 2, 3)},
                          {"sc": np.asarray([1, 1, 2, 3], dtype=np.float32)})),
    ("Shape", lambda o: ([N("Shape", ["a"], ["s"]), N("Reshape", ["a", "s2"], ["y0"]), N("Shape", ["y0"], ["t"]),
                          N("Reshape", ["y0", "s"])], {"a": r(2, 6)}, {"s2": ints(3, 4)})),
    ("Size", lambda o: ([N("Size", ["a"], ["n"]), N("Reshape", ["n", "one"], ["n1"]), N("Reshape", ["a", "n1"])],
                        {"a": r(2, 3)}, {"one": ints(1)})),
    ("ConstantOfShape", lambda o: ([N("ConstantOfShape", ["s"], ["k"], value=numpy_helper.from_array(
        np.asarray([1.5], dtype=np.float32))), N("Add", ["a", "k"])], {"a": r(2, 3)}, {"s": ints(2, 3)})),
    ("Range", lambda o: ([N("Range", ["s", "l", "d"], ["i"]), N("Gather", ["a", "i"], axis=0)], {"a": r(5, 2)},
                         {"s": np.int64(1), "l": np.int64(5), "d": np.int64(2)})),
]
SINCE = {"LayerNormalization": 17, "Gelu": 20}


@pytest.mark.parametrize("opset", [13, 17, 21])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_handwritten_node(case, opset):
    op_type, build = case
    if opset < SINCE.get(op_type, 13):
        pytest.skip(f"{op_type} exists from opset {SINCE[op_type]}")
    nodes, inputs, inits = build(opset)
    outs = [o for o in nodes[-1].output]
    m = graph(nodes, inputs, outs, inits, opset)
    feeds = {k: torch.from_numpy(v) for k, v in inputs.items()}
    plan = planc.from_onnx(m, owner="alice", tag="t", input_owner="bob")
    COVERED.update(n.op_type for n in m.graph.node)
    got = planc.run_reference(plan, data={"alice": weights(m, "t"), "bob": feeds})
    want = ReferenceEvaluator(m).run(None, {k: v for k, v in inputs.items()})
    if op_type == "BatchNormalization" and opset < 14:
        # onnx's evaluator for BatchNormalization-9 gives other values on this input than
        # the operator's formula (its -15 version agrees with it, and with torch)
        x, sc, b, mean, var = (torch.from_numpy(v) for v in (inputs["a"], inits["s"], inits["b"], inits["m"],
                                                             inits["v"]))
        want = [torch.nn.functional.batch_norm(x, mean, var, sc, b, eps=1e-3).numpy()]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w, rtol=2e-5, atol=2e-5)


def test_secret_paths_of_handwritten_graphs():
    """A few mappings whose planc form differs most from the ONNX node, over shares."""
    for op_type in ("Gemm", "Conv", "LayerNormalization", "Gather", "Resize", "Pad", "Clip"):
        nodes, inputs, inits = dict(CASES)[op_type](21)
        m = graph(nodes, inputs, [nodes[-1].output[0]], inits)
        plan = planc.from_onnx(m, owner="alice", tag="t", input_owner="bob", reveal_to="bob")
        d = {"alice": weights(m, "t"), "bob": {k: torch.from_numpy(v) for k, v in inputs.items()}}
        (ref,) = planc.run_reference(plan, data=d)
        got = planc.run_local(plan, d).outputs["bob"][0]
        assert (got - ref).abs().max() < 2 ** -9, op_type


# ---------------------------------------------------------------- errors, linking, CLI


def test_unsupported_node_names_node_type_opset_and_the_alternatives():
    m = graph([N("Hardmax", ["a"])], {"a": r(2, 3)}, ["y"], opset=13)
    with pytest.raises(OnnxImportError) as e:
        planc.from_onnx(m, owner="alice", tag="t")
    err = e.value
    assert (err.node, err.op_type, err.opset) == ("my_hardmax", "Hardmax", 21)
    assert "Gemm" in err.supported and "LayerNormalization" in err.supported
    assert str(err).startswith("node 'my_hardmax' (Hardmax, opset 21): op type Hardmax is not supported; planc "
                               "imports: Abs, Add")


def test_bad_inputs_are_clear_errors():
    with pytest.raises(OnnxImportError, match="not an ONNX model"):
        planc.from_onnx(b"\x00not a model", owner="alice", tag="t")
    m = graph([N("Relu", ["a"])], {"a": r(2, 3)}, ["y"])
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    with pytest.raises(OnnxImportError, match="symbolic dimension 'batch'.*input_shapes"):
        planc.from_onnx(m, owner="alice", tag="t")
    plan = planc.from_onnx(m, owner="alice", tag="t", input_shapes={"a": (5, 3)})
    assert plan.graph.nodes[0].result.type.shape == (5, 3)
    w = graph([N("Reshape", ["a", "s"])], {"a": r(2, 3), "s": ints(3, 2)}, ["y"])
    with pytest.raises(OnnxImportError, match="node 'my_reshape' .*Reshape's shape must be fixed at import time"):
        planc.from_onnx(w, owner="alice", tag="t")


def test_link_replaces_a_load_model_call_by_the_model_body():
    model = seed_cnn()
    data = export(model, (torch.rand(2, 1, 28, 28),), 17)

    @planc.plan(parties=["alice", "bob"])
    def infer():
        x = planc.load("images", owner="bob", shape=(2, 1, 28, 28))
        net = planc.load_model("cnn", owner="alice", output=(2, 10), input=(2, 1, 28, 28))
        return planc.reveal(net(x), to="bob")

    assert [n.op for n in infer.plan.graph.nodes].count("call") == 1
    linked = link(infer.plan, {"cnn": OnnxModel.read(data, name="cnn.onnx")})
    assert "call" not in {n.op for n in linked.graph.walk()}
    x = torch.rand(2, 1, 28, 28)
    d = {"alice": weights(data, "cnn"), "bob": {"images": x}}
    (got,) = planc.run_reference(linked, data=d)
    torch.testing.assert_close(got, model(x).detach(), rtol=1e-4, atol=1e-4)
    bad = planc.load_model("cnn", owner="alice", output=(2, 9))

    @planc.plan(parties=["alice", "bob"])
    def wrong():
        return planc.reveal(bad(planc.load("images", owner="bob", shape=(2, 1, 28, 28))), to="bob")

    with pytest.raises(OnnxImportError, match="gives secret f32\\[2,10\\], the plan declares secret f32\\[2,9\\]"):
        link(wrong.plan, {"cnn": data})


def test_cli_trace_onnx_and_ops_onnx(tmp_path, capsys):
    from planc.cli import main

    path = tmp_path / "cnn.onnx"
    path.write_bytes(export(seed_cnn(), (torch.rand(1, 1, 28, 28),), 13))
    out = tmp_path / "m.plan"
    assert main(["trace", str(path), "-o", str(out), "--owner", "alice", "--input-owner", "bob",
                 "--reveal-to", "bob"]) == 0
    plan = planc.read_plan(str(out))
    assert "cnn/fc.weight" in {n.attr("tag") for n in plan.graph.loads()}
    assert main(["trace", str(path), "-o", str(out)]) == 1
    assert "needs --owner PARTY" in capsys.readouterr().err
    assert main(["ops", "--onnx"]) == 0
    text = capsys.readouterr().out
    assert "LayerNormalization" in text and "layer_norm" in text and "20..21" in text


def test_coverage_is_on_the_op_definitions_and_every_mapping_is_tested():
    from planc.ir import ops

    cov = coverage()
    assert cov["Gemm"]["planc"][0] == "linear" and cov["Gelu"]["opsets"] == (20, 21)
    assert "Gemm" in ops.OP.linear.rule("onnx").op_types()
    for t, row in cov.items():
        for name in row["planc"]:
            assert t in ops.get(name).rule("onnx").op_types()
    crypten = {"Add", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Constant", "ConstantOfShape",
               "Conv", "Div", "Dropout", "Equal", "Erf", "Exp", "Expand", "Flatten", "Gather", "Gemm",
               "GlobalAveragePool", "LogSoftmax", "MatMul", "MaxPool", "Mul", "Pad", "Pow", "Range", "ReduceMean",
               "ReduceSum", "Relu", "Reshape", "Shape", "Sigmoid", "Slice", "Softmax", "Sqrt", "Squeeze", "Sub",
               "Transpose", "Unsqueeze", "Where"}
    asked = {"Identity", "Split", "LayerNormalization", "Gelu", "Resize", "Tanh", "Log", "Reciprocal", "Neg",
             "Sum", "Mean", "ArgMax"}
    assert crypten | asked <= set(DISPATCH)
    if len(COVERED) > 20:  # the whole file ran: every mapping was imported by some test
        assert set(DISPATCH) <= COVERED, sorted(set(DISPATCH) - COVERED)
