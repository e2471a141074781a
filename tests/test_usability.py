"""What a new user meets first: the README's Quick start, reprs, messages, the CLI's
small conveniences. Each test is something a newcomer tried."""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import planc
from planc.cost import Cost, parse_net, predict
from planc.ir.plan import Plan as IRPlan
from planc.runtime.errors import DataError, missing_tag

ROOT = Path(__file__).resolve().parents[1]
MNIST = "examples/mnist_cnn.py:encrypted_inference"


def cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "planc.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


MODEL = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)).eval()


@planc.plan(parties=["alice", "bob"])
def tiny():
    x = planc.load("x/test", owner="bob", shape=(2, 6))
    net = planc.owned(MODEL, owner="alice", tag="m")
    return planc.reveal(net(x), to="bob")


def tiny_data():
    return {"alice": planc.weights_of(MODEL, "m"), "bob": {"x/test": torch.randn(2, 6)}}


# ------------------------------------------------------------------ 1. --version


def test_version():
    r = cli("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"planc {planc.__version__} (torch {torch.__version__}, Python ")


# ------------------------------------------------------------------ 2. short reprs, summary


def test_plan_repr_is_one_short_line():
    plan = tiny.plan
    text = repr(plan)
    assert "\n" not in text and len(text) < 200, text
    assert text == (f"<Plan @tiny parties alice, bob; {sum(1 for n in plan.graph.walk() if n.op != 'return')} nodes, "
                    f"0 constants (0 B); sha256 {plan.sha256()[:12]}>")
    # the base class reads the same way, and a plan that cannot be saved still has a repr
    assert repr(IRPlan(plan.graph)).startswith("<Plan @tiny parties alice, bob;")
    assert "sha256 ? (PlanFormatError)" in repr(IRPlan(plan.graph, {"stray": torch.ones(3)}))


def test_plan_repr_counts_constants():
    scale = torch.arange(5.0)

    def f():
        return planc.reveal(planc.load("x", owner="bob", shape=(5,)) * scale, to="bob")

    assert "1 constants (20 B)" in repr(planc.trace(f))


def test_result_repr_and_summary(capsys):
    res = planc.run_local(tiny, tiny_data())
    text = repr(res)
    assert "\n" not in text and len(text) < 200, text
    rounds = res.stats["alice"]["rounds"]
    assert re.fullmatch(r"<LocalResult parties alice, bob; outputs 0: f32\[2,3\] at bob; "
                        rf"{rounds} rounds, [\d,]+ B sent; wall [\d.]+ ms>", text), text
    table = res.summary()
    assert capsys.readouterr().out == table
    for word in ("communication", "party", "rounds", "dealer material", "alice", "bob", "dealer", "wall time"):
        assert word in table
    assert res.summary(echo=False) == table and capsys.readouterr().out == ""


def test_result_repr_of_secret_outputs():
    def f():
        return planc.share(planc.load("x", owner="bob", shape=(3,)))

    res = planc.run_local(planc.trace(f, parties=["alice", "bob"]), {"bob": {"x": torch.ones(3)}})
    assert "outputs 0: shares [3] at alice, bob;" in repr(res)


def test_cli_run_prints_the_summary_table(tmp_path):
    plan = tmp_path / "t.plan"
    tiny.plan.save(plan)
    data = tiny_data()
    planc.save_data(tmp_path / "alice.safetensors", data["alice"])
    planc.save_data(tmp_path / "bob.safetensors", data["bob"])
    r = cli("run", plan, "--local", "--data", f"alice={tmp_path / 'alice.safetensors'}",
            "--data", f"bob={tmp_path / 'bob.safetensors'}")
    assert r.returncode == 0, r.stderr
    res = planc.run_local(planc.read_plan(plan), data)
    assert _cells(res.summary(echo=False)) == _cells(r.stdout[r.stdout.index("communication\n"):])


def _cells(table: str):
    """A rendered table's cells, timings left out (column widths follow them)."""
    rows = [[c.strip() for c in re.split("[│┃]", line)[1:-1]] for line in table.splitlines() if line[:1] in "│┃"]
    return [row[:-1] for row in rows]


# ------------------------------------------------------------------ 3. the cost model


def test_plan_cost_prints_units():
    plan = tiny.plan
    assert isinstance(plan, planc.Plan) and isinstance(plan, IRPlan)
    c = plan.cost(net="wan")
    assert isinstance(c, Cost)
    want = predict(plan)
    assert c.rounds == max(p.rounds for p in want.merged.values()) and c.merged == want.merged
    text = repr(c)
    assert "\n" not in text and " rounds" in text and " sent" in text and text.endswith(" s on wan>"), text
    table = str(c)
    for unit in ("rounds (merged)", "sent", "MiB" if c.bytes_sent >= 2 ** 16 else " B", "40 ms RTT", "ms"):
        assert unit in table, unit
    assert f"{c.time_estimate() * 1000:.1f} ms" in table


def test_time_estimate_takes_a_name_or_a_parsed_net():
    c = tiny.plan.cost()
    assert c.time_estimate(parse_net("wan")) == c.time_estimate("wan") == tiny.plan.cost(net="wan").time_estimate()
    assert c.time_estimate((40.0, 0.1)) == c.time_estimate("40,0.1")
    assert c.time_estimate("wan") > c.time_estimate("lan")
    with pytest.raises(ValueError, match="use lan, wan or RTT_ms,Gbit_per_s"):
        tiny.plan.cost(net="fast")
    with pytest.raises(ValueError, match="bandwidth > 0"):
        c.time_estimate("10,0")


def test_front_end_plans_everywhere(tmp_path):
    plan = tiny.plan
    plan.save(tmp_path / "a.plan")
    for p in (planc.read_plan(tmp_path / "a.plan"), planc.Plan.read(tmp_path / "a.plan"),
              planc.Plan.from_bytes(plan.to_bytes()), planc.compile(plan), planc.trace(tiny)):
        assert type(p) is planc.Plan and hasattr(p, "cost")
    # same file, same bytes as the language layer's reading
    base = IRPlan.read(tmp_path / "a.plan")
    assert type(base) is IRPlan and base == planc.read_plan(tmp_path / "a.plan")
    assert base.sha256() == plan.sha256()


def test_ir_never_imports_the_front_end():
    import ast

    for f in sorted((ROOT / "ir").rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for n in names:
                assert not (n == "planc" or n.startswith("planc.")) or n.startswith("planc.ir"), (f, n)


# ------------------------------------------------------------------ 4. calling a plan


def test_calling_a_plan_function_explains_itself():
    with pytest.raises(TypeError) as e:
        tiny()
    msg = str(e.value)
    assert msg.startswith("tiny is a @planc.plan: a plan that parties run together")
    for hint in ("tiny.plan", "planc.run_local(tiny, ", "planc.run_reference(tiny, "):
        assert hint in msg


def test_plain_functions_still_run_when_called():
    @planc.plan(planc.public((3,)))
    def double(x):
        return x * 2

    assert torch.equal(double(torch.ones(3)), torch.full((3,), 2.0))
    with pytest.raises(ZeroDivisionError):  # an ordinary error of the user's code is left alone
        planc.plan(lambda: 1 / 0)()


def test_run_local_and_reference_take_the_plan_function():
    data = tiny_data()
    (ref,) = planc.run_reference(tiny, data=data)
    res = planc.run_local(tiny, data)
    assert (res.outputs["bob"][0] - ref).abs().max() < 1e-3


# ------------------------------------------------------------------ 5. misspelt tags


def test_missing_tag_message():
    m = missing_tag("mnist/test", "private<1> f32[2]", "bob", {"mnist/tset": 1, "cnn/w": 2})
    assert m == ("no tensor under tag 'mnist/test' (expected private<1> f32[2]); the tags supplied for bob: "
                 "'cnn/w', 'mnist/tset'; closest match 'mnist/tset' (misspelt?)")
    assert missing_tag("x", "f32[1]", "bob", {}).endswith("; no tensors were supplied for bob")
    assert "closest" not in missing_tag("images", "f32[1]", "bob", ["zzz"])
    many = missing_tag("t", "f32[1]", "bob", [f"w{i:02d}" for i in range(25)])
    assert "'w19' and 5 more" in many and "'w20'" not in many


@pytest.mark.parametrize("runner", ["local", "reference"])
def test_misspelt_tag_lists_supplied_and_closest(runner):
    data = tiny_data()
    data["bob"] = {"x/tset": data["bob"]["x/test"], "other": torch.ones(1)}
    run = (lambda: planc.run_local(tiny, data)) if runner == "local" else (lambda: planc.run_reference(tiny, data=data))
    with pytest.raises(DataError) as e:
        run()
    first = str(e.value).splitlines()[0]
    assert first.endswith("no tensor under tag 'x/test' (expected private<1> f32[2,6]); the tags supplied for bob: "
                          "'other', 'x/tset'; closest match 'x/tset' (misspelt?)"), first


def test_missing_tag_at_the_cli_lists_what_the_file_holds(tmp_path):
    tiny.plan.save(tmp_path / "t.plan")
    planc.save_data(tmp_path / "bob.safetensors", {"x/tst": torch.ones(2, 6)})
    r = cli("run", tmp_path / "t.plan", "--reference", "--data", f"bob={tmp_path / 'bob.safetensors'}")
    assert r.returncode == 1 and "closest match 'x/tst' (misspelt?)" in r.stderr, r.stderr


# ------------------------------------------------------------------ 6. data files


def test_save_data_is_read_by_run_local_and_the_cli(tmp_path):
    data = tiny_data()
    path = planc.save_data(tmp_path / "bob.safetensors", {"x/test": data["bob"]["x/test"][:, :]})  # a view is fine
    assert planc.load_data(path).keys() == {"x/test"}
    res = planc.run_local(tiny, {"alice": data["alice"], "bob": str(path)})
    (ref,) = planc.run_reference(tiny, data={"alice": data["alice"], "bob": path})
    assert (res.outputs["bob"][0] - ref).abs().max() < 1e-3
    plan = tmp_path / "t.plan"
    tiny.plan.save(plan)
    planc.save_data(tmp_path / "alice.safetensors", data["alice"])
    r = cli("run", plan, "--reference", "--data", f"alice={tmp_path / 'alice.safetensors'}", "--data", f"bob={path}",
            "-o", tmp_path / "out.safetensors")
    assert r.returncode == 0, r.stderr
    assert torch.allclose(planc.load_data(tmp_path / "out.safetensors")["output0"], ref)
    with pytest.raises(ValueError, match="is a list, not a torch.Tensor"):
        planc.save_data(tmp_path / "bad.safetensors", {"x": [1, 2]})
    with pytest.raises(ValueError, match=r"\.safetensors"):
        planc.save_data(tmp_path / "bad.pt", {"x": torch.ones(1)})


# ------------------------------------------------------------------ 7. the Quick start


def _quick_start() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Quick start"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_quick_start_runs_in_any_directory(tmp_path):
    code = _quick_start()
    assert "from examples" not in code
    (tmp_path / "quick_start.py").write_text(code + "\nprint('logits', tuple(logits.shape), repr(res))\n")
    # nothing of the checkout on the path: only the installed package
    path = [d for d in os.environ.get("PYTHONPATH", "").split(os.pathsep) if d and Path(d).resolve() != ROOT]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    r = subprocess.run([sys.executable, "quick_start.py"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert "plan @encrypted_inference" in r.stdout and "communication" in r.stdout and "wan" in r.stdout
    assert "logits (100, 10) <LocalResult parties alice, bob;" in r.stdout
    assert (tmp_path / "infer.plan").is_file() and (tmp_path / "bob.safetensors").is_file()


def test_datasets_is_a_public_helper():
    try:
        images, labels = planc.datasets.mnist(split="eval")
    except FileNotFoundError:
        pytest.skip("MNIST files not available")
    assert images.shape == (2000, 1, 28, 28) and labels.shape == (2000,) and images.dtype == torch.float32
    train, _ = planc.datasets.mnist(split="train")
    allx, _ = planc.datasets.mnist()
    assert train.shape[0] == 8000 and torch.equal(torch.cat([train, images]), allx)
    with pytest.raises(ValueError, match="split 'test'"):
        planc.datasets.mnist(split="test")


# ------------------------------------------------------------------ 8-10. CLI conveniences


LOOP_SRC = """import planc
def f():
    x = planc.load("x", owner="bob", shape=(4,))
    for _ in range(3):
        x = x * 2 + 1
    return planc.reveal(x, to="bob")
"""


def test_print_after_all_prints_diffs(tmp_path):
    (tmp_path / "loop.py").write_text(LOOP_SRC)
    assert cli("trace", "loop.py:f", "-o", "a.plan", cwd=tmp_path).returncode == 0
    r = cli("compile", "a.plan", "-o", "b.plan", "--print-after-all", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "// ----- after verify: unchanged" in out and "// ----- after policy: unchanged" in out
    assert "// ----- after fold-loops\n--- before fold-loops\n+++ after fold-loops\n@@ " in out
    assert re.search(r"^\+.*= loop", out, re.M) and re.search(r"^-.*= mul ", out, re.M)
    assert "plan @f" not in out.split("// ----- after fold-loops")[1].split("@@")[0]  # no full IR dump


def test_show_net_implies_cost(tmp_path):
    tiny.plan.save(tmp_path / "t.plan")
    r = cli("show", tmp_path / "t.plan", "--no-ir", "--net", "wan")
    assert r.returncode == 0, r.stderr
    assert "estimated online time on wan (40 ms RTT, 0.1 Gbit/s)" in r.stdout and "total" in r.stdout
    r = cli("show", tmp_path / "t.plan", "--no-ir")
    assert "estimated online time" not in r.stdout
    r = cli("show", tmp_path / "t.plan", "--no-ir", "--net", "fast")
    assert r.returncode == 1 and "use lan, wan or RTT_ms,Gbit_per_s" in r.stderr


def test_graph_legend_has_colour_swatches():
    from planc.graphviz import PARTY_COLOURS, PUBLIC, SECRET, to_dot

    dot = to_dot(tiny.plan.graph)
    legend = next(line for line in dot.splitlines() if line.strip().startswith("legend "))
    for colour in (PARTY_COLOURS[0], PARTY_COLOURS[1], SECRET, PUBLIC):
        assert f'<TD BGCOLOR="{colour}"' in legend
    assert "alice: private&lt;0&gt;" in legend and "bob: private&lt;1&gt;" in legend


# ------------------------------------------------------------------ 11. the demo's weights


def test_demo_weights_reach_97_percent():
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        images, labels = planc.datasets.mnist(split="eval")
    except FileNotFoundError:
        pytest.skip("MNIST files not available")
    from mnist_cnn import SeedCNN, set_weights, trained_weights

    model = set_weights(SeedCNN(), trained_weights())
    with torch.no_grad():
        acc = (model(images).argmax(1) == labels).float().mean().item()
    assert acc >= 0.97, acc


@pytest.mark.skipif(not os.environ.get("PLANC_SLOW"), reason="retrains for about a minute; PLANC_SLOW=1 runs it")
def test_training_reproduces_the_weights(tmp_path):
    out = tmp_path / "w.safetensors"
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "train_mnist_cnn.py"), "-o", out], cwd=tmp_path,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    want = hashlib.sha256((ROOT / "examples" / "weights" / "mnist_cnn.safetensors").read_bytes()).hexdigest()
    assert hashlib.sha256(out.read_bytes()).hexdigest() == want
