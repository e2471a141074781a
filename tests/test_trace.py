"""Tracing: IR produced for real code, captured constants, loops, and every error path."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import planc
from planc.ir.plan import Plan
from planc.ir.verify import verify

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
FILE = os.path.relpath(HERE, ROOT)


def line_of(text: str) -> int:
    """Line number in this file of the first line containing `text`."""
    for i, line in enumerate(HERE.read_text().splitlines(), 1):
        if text in line and "line_of(" not in line:
            return i
    raise AssertionError(text)


@pytest.fixture(autouse=True)
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # locations print relative to the working directory


def raises_at(fn, marker: str, message: str, module: str = ""):
    """`module`: how the location names the submodule the error happened in, if any."""
    with pytest.raises(planc.TraceError) as e:
        planc.trace(fn)
    assert str(e.value) == f"{FILE}:{line_of(marker)}{module}: {message}"
    return e.value


# ------------------------------------------------------------------ what tracing produces


def test_private_ops_stay_local_and_mixing_owners_shares():
    def f():
        a = planc.load("a", owner="alice", shape=(4,))
        b = planc.load("b", owner="bob", shape=(4,))
        local = a * 2 + a  # alice alone: stays private<0>
        return planc.reveal(local + b, to="bob")

    g = planc.trace(f).graph
    ops = [n.op for n in g.nodes]
    assert ops == ["load", "load", "const", "mul", "add", "share", "share", "add", "reveal", "return"]
    types = {n.results[0].name: str(n.results[0].type) for n in g.nodes if n.results}
    assert types["add"] == "private<0> f32[4]"
    assert types["add_1"] == "secret f32[4]"
    assert types["reveal"] == "private<1> f32[4]"


def test_module_parameters_become_loads_never_constants():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    plan = planc.trace(net, planc.load("x", owner="bob", shape=(5, 3)), owner="alice", tag="mlp",
                       parties=["alice", "bob"])
    loads = sorted(n.attr("tag") for n in plan.graph.loads())
    assert loads == ["mlp/0.bias", "mlp/0.weight", "mlp/2.bias", "mlp/2.weight", "x"]
    assert plan.constants == {}
    x = torch.randn(5, 3)
    data = {"alice": planc.weights.weights_of(net, "mlp"), "bob": {"x": x}}
    (y,) = planc.run_reference(plan, data=data)
    assert torch.allclose(y, net(x), atol=1e-6)


def test_captured_tensors_are_named_and_listed():
    scale = torch.arange(4.0)

    def f(bias=torch.ones(4)):
        x = planc.load("x", owner="bob", shape=(4,))
        return planc.reveal(x * scale + bias + GLOBAL_OFFSET, to="bob")

    plan = planc.trace(f)
    assert sorted(plan.constants) == ["GLOBAL_OFFSET", "bias", "scale"]
    line = line_of("x * scale + bias + GLOBAL_OFFSET")
    assert plan.captured["scale"] == f"captured tensor `scale` at {FILE}:{line}"
    assert torch.equal(plan.constants["scale"], scale)
    (y,) = planc.run_reference(plan, data={"bob": {"x": torch.ones(4)}})
    assert torch.equal(y, torch.ones(4) * scale + 1 + GLOBAL_OFFSET)


GLOBAL_OFFSET = torch.full((4,), 0.5)


def test_unowned_module_parameters_are_captured_with_their_names():
    lin = nn.Linear(2, 2)

    def f():
        return planc.reveal(lin(planc.load("x", owner="bob", shape=(1, 2))), to="bob")

    plan = planc.trace(f)
    assert sorted(plan.constants) == ["linear.bias", "linear.weight"]
    assert plan.captured["linear.weight"].startswith("parameter `linear.weight` at ")


def test_shapes_are_concrete_while_tracing():
    def f():
        x = planc.load("x", owner="bob", shape=(6, 2, 3))
        n = x.size(0)
        y = x.view(n, -1) if x.dim() == 3 else x  # shape logic is plain Python
        return planc.reveal(y[:, 1:5:2] + len(x), to="bob")

    g = planc.trace(f).graph
    assert str(g.outputs[0].type) == "private<0> f32[6,2]"  # bob is the first party named


def test_indexing_and_multi_results():
    def f():
        x = planc.load("x", owner="bob", shape=(4, 5))
        v, i = torch.max(x, dim=1)
        return planc.reveal(v, to="all"), planc.reveal(x[..., 2, None], to="all"), planc.reveal(i, to="all")

    plan = planc.trace(f)
    x = torch.randn(4, 5)
    v, col, i = planc.run_reference(plan, data={"bob": {"x": x}})
    assert torch.equal(v, x.max(1).values) and torch.equal(i, x.argmax(1)) and torch.equal(col, x[..., 2, None])


def test_fori_loop_is_one_loop_node_and_widens_visibility():
    def f():
        x = planc.load("x", owner="bob", shape=(3,))
        acc = torch.zeros(3)

        def body(i, acc):
            return acc * 0.5 + x

        return planc.reveal(planc.fori_loop(1000, body, acc), to="all")

    plan = planc.trace(f)
    g = plan.graph
    loops = [n for n in g.nodes if n.op == "loop"]
    assert len(loops) == 1 and loops[0].attr("trips") == 1000
    assert str(loops[0].results[0].type) == "private<1> f32[3]" or loops[0].results[0].type.vis.is_secret
    x = torch.tensor([1.0, 2.0, -3.0])
    (y,) = planc.run_reference(plan, data={"bob": {"x": x}})
    want = torch.zeros(3)
    for _ in range(1000):
        want = want * 0.5 + x
    assert torch.allclose(y, want)


def test_python_loops_unroll():
    def f():
        x = planc.load("x", owner="bob", shape=(3,))
        for _ in range(4):
            x = x + 1
        return planc.reveal(x, to="all")

    assert [n.op for n in planc.trace(f).graph.nodes].count("add") == 4


def test_load_model_is_a_call_node_with_declared_types():
    remote = planc.load_model("clf", owner="alice", output=(2, 10), input=[(2, 5)])

    def f():
        x = planc.load("x", owner="bob", shape=(2, 5))
        return planc.reveal(remote(x), to="bob")

    plan = planc.trace(f, parties=["alice", "bob"])
    call = [n for n in plan.graph.nodes if n.op == "call"][0]
    assert (call.attr("tag"), call.attr("owner"), str(call.result.type)) == ("clf", 0, "secret f32[2,10]")
    lin = nn.Linear(5, 10)
    x = torch.randn(2, 5)
    (y,) = planc.run_reference(plan, data={"bob": {"x": x}}, models={"clf": lin})
    assert torch.allclose(y, lin(x))


def test_decorator_and_trace_agree_byte_for_byte():
    def body():
        x = planc.load("x", owner="bob", shape=(2,))
        return planc.reveal(torch.sigmoid(x), to="all")

    a = planc.trace(body).to_bytes()
    b = planc.plan(body).plan.to_bytes()
    assert a == b


# ------------------------------------------------------------------ examples: golden IR, determinism, numerics


def _example(name):
    from planc.cli import _import_file

    return _import_file(str(ROOT / "examples" / f"{name}.py"))


@pytest.mark.parametrize("name,obj", [("mnist_cnn", "encrypted_inference"), ("secure_average", "secure_average")])
def test_golden_ir_of_examples(name, obj):
    plan = getattr(_example(name), obj).trace()
    text = str(plan.graph)
    golden = ROOT / "tests" / "golden" / f"{name}.ir"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()
    verify(plan.graph)
    assert Plan.from_bytes(plan.to_bytes()) == plan


def test_tracing_twice_gives_identical_bytes():
    mod = _example("mnist_cnn")
    assert mod.encrypted_inference.trace().to_bytes() == mod.encrypted_inference.trace().to_bytes()


def test_mnist_reference_matches_pytorch_on_100_images():
    from planc.datasets import load_mnist

    mod = _example("mnist_cnn")
    weights = mod.trained_weights()
    mod.set_weights(mod.model, weights)
    images, _ = load_mnist()
    batch = images[-100:]
    plan = Plan.from_bytes(mod.encrypted_inference.trace().to_bytes())
    (logits,) = planc.run_reference(plan, data={"alice": weights, "bob": {"mnist/test": batch}})
    with torch.no_grad():
        want = mod.model(batch)
    assert (logits - want).abs().max().item() <= 1e-5


def test_resnet18_traces_verifies_and_round_trips():
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from models import ResNet18

    net = ResNet18(classes=10).eval()
    spec = planc.load("img", owner="bob", shape=(1, 3, 64, 64))
    plan = planc.trace(net, spec, owner="alice", tag="r18", parties=["alice", "bob"])
    verify(plan.graph)
    assert Plan.from_bytes(plan.to_bytes()) == plan
    assert sum(1 for n in plan.graph.loads()) == 1 + len(planc.weights.weights_of(net, "r18"))
    x = torch.randn(1, 3, 64, 64)
    (y,) = planc.run_reference(plan, data={"alice": planc.weights.weights_of(net, "r18"), "bob": {"img": x}})
    with torch.no_grad():
        assert torch.allclose(y, net(x), atol=1e-4)


# ------------------------------------------------------------------ errors name the user's line


def test_error_data_dependent_control_flow():
    def f():
        x = planc.load("x", owner="bob", shape=(3,))
        if x.sum() > 0:  # MARK-if
            x = -x
        return planc.reveal(x, to="all")

    raises_at(f, "MARK-if", "Python control flow (if/while/and/or/bool()) depends on a traced tensor, whose "
              "value is not known while tracing; use torch.where(cond, a, b) to choose between values, or "
              "planc.fori_loop for loops")


def test_error_unsupported_op_suggests_replacement():
    def f():
        x = planc.load("x", owner="bob", shape=(3,))
        return planc.reveal(F.silu(x), to="all")  # MARK-silu

    raises_at(f, "MARK-silu", "torch.nn.functional.silu is not supported by planc; write x * torch.sigmoid(x) "
              "instead")


def test_error_unknown_op_without_suggestion():
    def f():
        x = planc.load("x", owner="bob", shape=(3,))
        return planc.reveal(torch.cumsum(x, 0), to="all")  # MARK-cumsum

    raises_at(f, "MARK-cumsum", "torch.cumsum is not supported by planc; `planc ops` lists the op set")


def test_error_reading_a_value_into_python():
    def f():
        x = planc.load("x", owner="bob", shape=(3,))
        return x.sum().item()  # MARK-item

    raises_at(f, "MARK-item", "Tensor.item is not supported by planc; a traced value cannot be read into "
              "Python; keep it a tensor and reveal it")


def test_error_shapes_mismatch_names_types():
    def f():
        x = planc.load("x", owner="bob", shape=(1, 3, 8, 8))
        w = planc.load("w", owner="alice", shape=(4, 2, 3, 3))
        return planc.reveal(F.conv2d(x, w), to="bob")  # MARK-conv

    raises_at(f, "MARK-conv", "conv2d: weight is private<1> f32[4,2,3,3] but input has 3 channels (groups=1)")


def test_error_division_by_a_secret():
    def f():
        x = planc.load("x", owner="bob", shape=(3,))
        y = planc.load("y", owner="alice", shape=(3,))
        return planc.reveal(x / y, to="bob")  # MARK-div

    raises_at(f, "MARK-div", "div: division of a secret is only by a public value; use reciprocal for a secret divisor")


def test_error_load_without_shape():
    def f():
        return planc.load("x", owner="bob")  # MARK-noshape

    raises_at(f, "MARK-noshape", "load 'x': shape= is required (the plan is compiled for static shapes)")


def test_error_dropout_in_training_mode():
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))

    def f():
        return planc.reveal(net(planc.load("x", owner="bob", shape=(1, 2))), to="bob")  # MARK-drop

    e = raises_at(f, "MARK-drop", "dropout in training mode; call model.eval() before tracing", " in 1 (Dropout)")
    assert (e.loc.module, e.loc.module_class) == ("1", "Dropout")


def test_error_reveal_of_public_value():
    def f():
        x = planc.load("x", owner="bob", shape=(2,))
        y = planc.reveal(x, to="all")
        return planc.reveal(y, to="bob")  # MARK-reveal

    raises_at(f, "MARK-reveal", "reveal of a value that is already public")


def test_error_fori_loop_changes_shape():
    def f():
        x = planc.load("x", owner="bob", shape=(3,))
        return planc.fori_loop(3, lambda i, c: c.sum(), x)  # MARK-loop

    raises_at(f, "MARK-loop", "fori_loop body changes a carried value from private<0> f32[3] to private<0> f32[]; "
              "carried values keep their shape and dtype")


def test_error_wrong_number_of_specs():
    def f(a, b):
        return a

    with pytest.raises(planc.TraceError, match=r"f takes 2 positional argument\(s\) but 1 input spec\(s\) were given"):
        planc.trace(f, planc.public((2,)))


def test_error_bad_party_name():
    def f():
        return planc.load("x", owner="all", shape=(1,))  # MARK-party

    raises_at(f, "MARK-party", "load: a party is named by an identifier (not 'all'), got 'all'")


def test_scan_is_one_loop_and_matches_python():
    def f():
        xs = planc.load("xs", owner="bob", shape=(6, 3))
        h0 = planc.load("h", owner="alice", shape=(3,))

        def step(h, x):
            h = h * 0.5 + x
            return h, h.sum()

        h, ys = planc.scan(step, h0, xs)
        return planc.reveal(h, to="bob"), planc.reveal(ys, to="bob")

    plan = planc.trace(f)
    assert [n.op for n in plan.graph.nodes].count("loop") == 1
    xs, h = torch.randn(6, 3), torch.randn(3)
    got_h, got_ys = planc.run_reference(plan, data={"bob": {"xs": xs}, "alice": {"h": h}})
    want_ys = []
    for x in xs:
        h = h * 0.5 + x
        want_ys.append(h.sum())
    assert torch.allclose(got_h, h) and torch.allclose(got_ys, torch.stack(want_ys))


def test_branching_on_a_secret_suggests_where():
    def f():
        x = planc.share(planc.load("x", owner="bob", shape=(3,)))
        return planc.reveal(x if bool(x.sum() > 0) else -x, to="bob")  # MARK-secret-if

    raises_at(f, "MARK-secret-if", "Python control flow (if/while/and/or/bool()) depends on a traced tensor, whose "
              "value is not known while tracing; use torch.where(cond, a, b) to choose between values, or "
              "planc.fori_loop for loops")


# ------------------------------------------------------------------ locations name the submodule


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        return torch.relu(self.conv(x)) * 2  # MARK-block


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 1)
        self.blocks = nn.Sequential(_Block(), _Block())
        self.head = [nn.Flatten()]  # not registered: its own outermost module

    def forward(self, x):
        h = self.blocks(self.stem(x))  # MARK-net
        return self.head[0](h).sum(1)  # MARK-head


def test_locations_name_submodule_path_and_class():
    net = _Net().eval()

    def f():
        x = planc.load("x", owner="bob", shape=(1, 1, 2, 2))
        m = planc.owned(net, owner="alice", tag="net")
        return planc.reveal(m(x), to="bob")  # MARK-call

    g = planc.trace(f).graph
    locs = {n.results[0].name: n.loc for n in g.nodes if n.results}
    net_line, block_line = line_of("MARK-net"), line_of("MARK-block")
    # a library module's ops: the line that called it, the path and class of the module
    assert locs["stem_weight"] == planc.Loc(FILE, net_line, "stem", "Conv2d")
    convs = [n.loc for n in g.nodes if n.op == "conv2d"]
    assert convs == [planc.Loc(FILE, net_line, "stem", "Conv2d"),
                     planc.Loc(FILE, block_line, "blocks.0.conv", "Conv2d"),
                     planc.Loc(FILE, block_line, "blocks.1.conv", "Conv2d")]
    # a user module's own ops: the line in its forward, and which instance
    assert [n.loc for n in g.nodes if n.op == "relu"] == [planc.Loc(FILE, block_line, "blocks.0", "_Block"),
                                                          planc.Loc(FILE, block_line, "blocks.1", "_Block")]
    # the outermost module's own ops and a module outside its tree: no path
    assert [n.loc for n in g.nodes if n.op == "sum"] == [planc.Loc(FILE, line_of("MARK-head"))]
    assert [n.loc for n in g.nodes if n.op == "reveal"] == [planc.Loc(FILE, line_of("MARK-call"))]
    text = str(g)
    assert f'loc("{FILE}":{block_line} in "blocks.1.conv": "Conv2d")' in text
    conv = [n for n in g.nodes if n.op == "conv2d"][2]
    assert conv.where() == f"{FILE}:{block_line} in blocks.1.conv (Conv2d): conv2d %{conv.result.name}"
    p = planc.trace(f)
    assert Plan.from_bytes(p.to_bytes()) == p
