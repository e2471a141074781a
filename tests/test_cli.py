"""The `planc` command line, run as users run it: in a subprocess."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
MNIST = "examples/mnist_cnn.py:encrypted_inference"


def planc(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "planc.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def mnist_plan(tmp_path_factory):
    out = tmp_path_factory.mktemp("plans") / "a.plan"
    r = planc("trace", MNIST, "-o", out)
    assert r.returncode == 0, r.stderr
    return out


def test_trace_is_deterministic(mnist_plan, tmp_path):
    r = planc("trace", MNIST, "-o", tmp_path / "b.plan")
    assert r.returncode == 0, r.stderr
    digest = hashlib.sha256(mnist_plan.read_bytes()).hexdigest()
    assert digest == hashlib.sha256((tmp_path / "b.plan").read_bytes()).hexdigest()
    assert digest in r.stdout


def test_show_lists_ir_parties_constants_and_histogram(mnist_plan):
    r = planc("show", mnist_plan)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "plan @encrypted_inference" in out and "parties   alice=0, bob=1" in out
    assert '%bob_mnist_test = load "mnist/test" from bob' in out
    for text in ("inputs", "outputs", "captured constants (0)", "no tensor travels inside this plan",
                 "cnn/features.0.weight", "private<1> f32[100,10]", "conv2d", "│ 3 "):
        assert text in out, text


def test_show_lists_captured_constants(tmp_path):
    src = tmp_path / "cap.py"
    src.write_text("import torch, planc\nscale = torch.ones(7)\n"
                   "def f():\n    x = planc.load('x', owner='bob', shape=(7,))\n"
                   "    return planc.reveal(x * scale, to='bob')\n")
    r = planc("trace", f"{src}:f", "-o", tmp_path / "c.plan", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = planc("show", tmp_path / "c.plan", "--no-ir", cwd=tmp_path)
    assert "captured constants (1)" in r.stdout
    assert "captured tensor `scale` at cap.py:5" in r.stdout and "│ 28    │" in r.stdout


def test_graph_writes_dot_and_svg(mnist_plan, tmp_path):
    r = planc("graph", mnist_plan, "-o", tmp_path / "g.dot")
    assert r.returncode == 0, r.stderr
    dot = (tmp_path / "g.dot").read_text()
    assert dot.startswith('digraph "encrypted_inference"') and "#ffb3b3" in dot  # secret nodes are red
    if shutil.which("dot") is None:
        pytest.skip("graphviz not installed")
    r = planc("graph", mnist_plan, "-o", tmp_path / "g.svg")
    assert r.returncode == 0, r.stderr
    assert "<svg" in (tmp_path / "g.svg").read_text()


def test_run_reference_with_data_files(tmp_path):
    import importlib

    sys.path.insert(0, str(ROOT / "examples"))
    mod = importlib.import_module("mnist_cnn")
    weights = mod.trained_weights()
    from planc.datasets import load_mnist

    images, _ = load_mnist()
    save_file({"mnist/test": images[-100:].contiguous()}, tmp_path / "bob.safetensors")
    plan = tmp_path / "a.plan"
    assert planc("trace", MNIST, "-o", plan).returncode == 0
    r = planc("run", plan, "--reference", "--data", f"alice={mod.WEIGHTS}",
              "--data", f"bob:mnist/test={tmp_path / 'bob.safetensors'}", "-o", tmp_path / "out.safetensors")
    assert r.returncode == 0, r.stderr
    assert "output 0: private<1> f32[100,10]  -> bob" in r.stdout
    from safetensors.torch import load_file

    got = load_file(tmp_path / "out.safetensors")["output0"]
    mod.set_weights(mod.model, weights)
    with torch.no_grad():
        assert (got - mod.model(images[-100:])).abs().max() <= 1e-5


def test_errors_are_one_line_and_nonzero(tmp_path):
    bad = tmp_path / "bad.plan"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    r = planc("show", bad)
    assert r.returncode == 1 and r.stderr.startswith("planc show: error: ") and "Traceback" not in r.stderr

    r = planc("trace", "examples/nope.py:f", "-o", tmp_path / "x.plan")
    assert r.returncode == 1 and r.stderr.strip() == "planc trace: error: examples/nope.py: no such file"

    r = planc("trace", "examples/mnist_cnn.py:nothing", "-o", tmp_path / "x.plan")
    assert r.stderr.strip() == "planc trace: error: examples/mnist_cnn.py has no object 'nothing'"


def test_run_reports_missing_data(mnist_plan):
    r = planc("run", mnist_plan, "--reference")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "mnist/test" in r.stderr and "bob" in r.stderr


def test_trace_error_names_user_line(tmp_path):
    src = tmp_path / "flow.py"
    src.write_text("import planc\ndef f():\n    x = planc.load('x', owner='bob', shape=(2,))\n"
                   "    if x.sum() > 0:\n        return x\n    return x\n")
    r = planc("trace", f"{src}:f", "-o", tmp_path / "x.plan", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.startswith("planc trace: error: flow.py:4: Python control flow")
