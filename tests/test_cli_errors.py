"""Bad `planc` invocations, table-driven: each ends with the right exit status (2: the
command line does not parse; 1: planc refuses what it names, or the command fails) and
a short stderr -- no Python traceback -- that names what was wrong.

Most cases run in-process through `planc.cli.main(argv)` (fast); a few run as users run
them, in a subprocess, including the ones that once crashed deep in the runtime.
"""
from __future__ import annotations

import io
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import planc
from planc import cli

MODEL = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)).eval()


@planc.plan(parties=["alice", "bob"])
def tiny():
    x = planc.load("x/test", owner="bob", shape=(2, 6))
    net = planc.owned(MODEL, owner="alice", tag="m")
    return planc.reveal(net(x), to="bob")


USER_FILE = '''\
import torch, torch.nn as nn, planc
MODEL = nn.Sequential(nn.Linear(6, 4), nn.ReLU()).eval()
X = 3


class Thing:
    pass


@planc.plan(parties=["alice", "bob"])
def tiny():
    x = planc.load("x/test", owner="bob", shape=(2, 6))
    return planc.reveal(planc.owned(MODEL, owner="alice", tag="m")(x), to="bob")


def needs_args(x):
    return x


def returns_none():
    planc.load("x", owner="bob", shape=(2,))


def returns_int():
    return 3


def flow():
    x = planc.load("x", owner="bob", shape=(2,))
    if x.sum() > 0:
        return x
    return x


def undefined():
    x = planc.load("x", owner="bob", shape=(2,))
    return x + not_defined_anywhere


def divides():
    x = planc.load("x", owner="bob", shape=(2,))
    return x * (1 / 0)
'''


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    """A folder of good and bad files; the cases run inside it and name files relative to it."""
    d = tmp_path_factory.mktemp("cli_errors")
    torch.manual_seed(0)
    (d / "user.py").write_text(USER_FILE)
    (d / "syn.py").write_text("import planc\n\ndef f(:\n    return 1\n")
    (d / "imp.py").write_text("import planc\nraise RuntimeError('boom at import')\n")
    (d / "exits.py").write_text("import sys\nsys.exit(3)\n")
    (d / "helper_mod.py").write_text("X = 1\nY = X / 0\n")
    (d / "uses_helper.py").write_text("import helper_mod\n\ndef f():\n    return 1\n")
    (d / "notes.txt").write_text("not a tensor\n")
    (d / "noext").write_text("not a tensor\n")
    (d / "sub").mkdir()
    (d / "dir.npy").mkdir()
    plan = tiny.plan
    plan.save(d / "tiny.plan")
    good = (d / "tiny.plan").read_bytes()
    planc.save_data(d / "alice.safetensors", planc.weights_of(MODEL, "m"))
    planc.save_data(d / "bob.safetensors", {"x/test": torch.randn(2, 6)})
    planc.save_data(d / "wrong_shape.safetensors", {"x/test": torch.randn(3, 6)})
    planc.save_data(d / "two.safetensors", {"a": torch.ones(2), "b": torch.zeros(2)})
    np.save(d / "x.npy", np.ones((2, 6), dtype=np.float32))
    np.save(d / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (d / "garbage.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    # files that are not plan files
    (d / "truncated.plan").write_bytes(good[: len(good) // 2])
    (d / "empty.plan").write_bytes(b"")
    (d / "text.plan").write_text("plan @f (parties: alice=0) {\n}\n")
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x41
    (d / "flipped.plan").write_bytes(bytes(flipped))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("hello.txt", "hi")
    (d / "otherzip.plan").write_bytes(buf.getvalue())
    # policies
    (d / "deny_relu.toml").write_text('[ops]\ndeny = ["relu"]\n')
    (d / "not_toml.toml").write_text("this is = = not toml\n")
    (d / "section.toml").write_text("[bogus]\nx = 1\n")
    (d / "unknown_op.toml").write_text('[ops]\nallow = ["nosuchop"]\n')
    (d / "wrong_type.toml").write_text('[limits]\nmax_nodes = "many"\n')
    (d / "binary.toml").write_bytes(b"\xff\xfe\x00\x01\x80")
    return d


# (id, argv, exit status, texts stderr must contain, most lines stderr may have)
CASES = [
    # ---- the command line itself: argparse, exit 2
    ("no-command", "", 2, ["required", "cmd"], 4),
    ("unknown-command", "frobnicate tiny.plan", 2, ["invalid choice", "frobnicate"], 4),
    ("unknown-flag", "show tiny.plan --bogus", 2, ["unrecognized arguments: --bogus"], 4),
    ("misspelt-flag", "run tiny.plan --locall", 2, ["unrecognized arguments: --locall"], 6),
    ("show-no-plan", "show", 2, ["required", "plan"], 4),
    ("trace-no-output", "trace user.py:tiny", 2, ["required", "-o/--output"], 4),
    ("check-no-policy", "check tiny.plan", 2, ["required", "--policy"], 4),
    ("timeout-word", "run tiny.plan --local --timeout abc", 2, ["--timeout", "number of seconds", "'abc'"], 6),
    ("timeout-nan", "run tiny.plan --local --timeout nan", 2, ["--timeout", "> 0", "'nan'"], 6),
    ("timeout-inf", "run tiny.plan --local --timeout inf", 2, ["--timeout", "'inf'"], 6),
    ("timeout-negative", "run tiny.plan --local --timeout -5", 2, ["--timeout", "> 0", "'-5'"], 6),
    ("timeout-zero", "run tiny.plan --local --timeout 0", 2, ["--timeout", "'0'"], 6),
    ("timeout-huge", "run tiny.plan --local --timeout 1e300", 2, ["--timeout", "at most 1,000,000,000"], 6),
    ("timeout-empty", "run tiny.plan --local --timeout=", 2, ["--timeout", "number of seconds"], 6),
    ("local-and-reference", "run tiny.plan --local --reference", 2, ["choose one", "--local", "--reference"], 6),
    ("neither-local-nor-reference", "run tiny.plan", 2, ["choose one"], 6),
    ("processes-without-local", "run tiny.plan --reference --processes", 2, ["--processes", "needs --local"], 6),
    ("ops-name-and-torch", "ops relu --torch", 2, ["not both"], 4),
    ("plan-name-bad", "trace user.py:tiny -o out.plan --name bad#name", 2,
     ["--name", "'bad#name'", "not a plan name"], 4),
    ("plan-name-empty", "trace user.py:tiny -o out.plan --name=", 2, ["--name", "not a plan name"], 4),
    # ---- FILE.py:OBJECT mistakes, exit 1
    ("target-no-colon", "trace user.py -o out.plan", 1, ["user.py: expected FILE.py:OBJECT"], 1),
    ("target-no-object", "trace user.py: -o out.plan", 1, ["'' is not an object name"], 1),
    ("target-no-file", "trace :tiny -o out.plan", 1, ["no FILE.py before ':'"], 1),
    ("target-bad-object", "trace user.py:not-a-name -o out.plan", 1, ["'not-a-name' is not an object name"], 1),
    ("target-missing-file", "trace nope.py:f -o out.plan", 1, ["nope.py: no such file"], 1),
    ("target-directory", "trace sub:f -o out.plan", 1, ["sub: is a directory"], 1),
    ("target-not-python", "trace notes.txt:f -o out.plan", 1, ["notes.txt: not a Python file"], 1),
    ("target-missing-object", "trace user.py:nothing -o out.plan", 1, ["user.py has no object 'nothing'"], 1),
    ("target-missing-dotted", "trace user.py:torch.nothing -o out.plan", 1, ["has no object 'torch.nothing'"], 1),
    ("target-constant", "trace user.py:X -o out.plan", 1, ["user.py:X is a int", "expected a @planc.plan"], 1),
    ("target-class", "trace user.py:Thing -o out.plan", 1, ["user.py:Thing is a class"], 1),
    ("target-module", "trace user.py:torch -o out.plan", 1, ["user.py:torch is a module"], 1),
    ("target-needs-args", "trace user.py:needs_args -o out.plan", 1,
     ["user.py:16: needs_args takes 1 positional argument"], 1),
    ("target-returns-none", "trace user.py:returns_none -o out.plan", 1,
     ["user.py:20: the traced function returns nothing"], 1),
    ("target-returns-int", "trace user.py:returns_int -o out.plan", 1,
     ["user.py:24: the traced function returns a int"], 1),
    ("user-control-flow", "trace user.py:flow -o out.plan", 1, ["user.py:30: Python control flow"], 1),
    ("user-name-error", "trace user.py:undefined -o out.plan", 1,
     ["user.py:37: NameError: name 'not_defined_anywhere' is not defined"], 1),
    ("user-zero-division", "trace user.py:divides -o out.plan", 1, ["user.py:42: ZeroDivisionError"], 1),
    ("user-syntax-error", "trace syn.py:f -o out.plan", 1, ["syn.py:3: SyntaxError", "def f(:"], 2),
    ("user-import-error", "trace imp.py:f -o out.plan", 1,
     ["imp.py:2: RuntimeError: boom at import", "while importing imp.py"], 1),
    ("user-helper-import-error", "trace uses_helper.py:f -o out.plan", 1,
     ["helper_mod.py:2: ZeroDivisionError", "while importing uses_helper.py"], 1),
    ("user-sys-exit", "trace exits.py:f -o out.plan", 1, ["exits.py: called sys.exit(3) while importing"], 1),
    # ---- -o: the directory must exist, exit 1
    ("trace-o-no-dir", "trace user.py:tiny -o nodir/out.plan", 1, ["-o nodir/out.plan: no directory nodir"], 1),
    ("compile-o-no-dir", "compile tiny.plan -o nodir/out.plan", 1, ["no directory nodir", "mkdir -p nodir"], 1),
    ("graph-o-no-dir", "graph tiny.plan -o nodir/g.dot", 1, ["-o nodir/g.dot: no directory nodir"], 1),
    ("graph-svg-o-no-dir", "graph tiny.plan -o nodir/g.svg", 1, ["-o nodir/g.svg: no directory nodir"], 1),
    ("run-o-no-dir", "run tiny.plan --reference --data alice=alice.safetensors --data bob=bob.safetensors "
                     "-o nodir/out.safetensors", 1, ["-o nodir/out.safetensors: no directory nodir"], 1),
    ("o-is-directory", "compile tiny.plan -o sub", 1, ["-o sub: is a directory"], 1),
    ("o-under-a-file", "trace user.py:tiny -o user.py/out.plan", 1, ["user.py is not a directory"], 1),
    ("o-empty", "compile tiny.plan -o=", 1, ["-o: empty file name"], 1),
    # ---- files that are not plan files, exit 1
    ("plan-missing", "show nope.plan", 1, ["nope.plan: no such file"], 1),
    ("plan-directory", "show sub", 1, ["sub: is a directory"], 1),
    ("plan-empty", "show empty.plan", 1, ["empty.plan: not a readable plan file"], 1),
    ("plan-text", "show text.plan", 1, ["text.plan: not a readable plan file"], 1),
    ("plan-truncated", "show truncated.plan", 1, ["truncated.plan: not a readable plan file"], 1),
    ("plan-flipped-byte", "run flipped.plan --reference", 1, ["flipped.plan: not a readable plan file"], 1),
    ("plan-other-zip", "compile otherzip.plan -o out.plan", 1, ["otherzip.plan: not a readable plan file"], 1),
    ("plan-is-data", "graph bob.safetensors -o g.dot", 1, ["bob.safetensors: not a readable plan file"], 1),
    ("plan-check-missing", "check nope.plan --policy deny_relu.toml", 1, ["nope.plan: no such file"], 1),
    # ---- --data and --input, exit 1
    ("data-no-equals", "run tiny.plan --reference --data bob", 1,
     ["--data 'bob': '=FILE' is missing", "PARTY:TAG=FILE"], 1),
    ("data-no-file", "run tiny.plan --reference --data bob=", 1, ["--data 'bob=': the FILE after '=' is missing"], 1),
    ("data-no-party", "run tiny.plan --reference --data =bob.safetensors", 1, ["the PARTY before '=' is missing"], 1),
    ("data-empty-tag", "run tiny.plan --reference --data bob:=bob.safetensors", 1, ["the TAG after ':' is missing"], 1),
    ("data-txt", "run tiny.plan --reference --data bob=notes.txt", 1,
     ["notes.txt: unsupported file type '.txt'", ".safetensors or .npy"], 1),
    ("data-no-extension", "run tiny.plan --reference --data bob=noext", 1, ["file without an extension", ".npy"], 1),
    ("data-missing-file", "run tiny.plan --reference --data bob=nope.safetensors", 1,
     ["--data 'bob=nope.safetensors': nope.safetensors: no such file"], 1),
    ("data-directory", "run tiny.plan --reference --data bob=dir.npy", 1, ["dir.npy: is a directory"], 1),
    ("data-unknown-party", "run tiny.plan --reference --data carol=bob.safetensors", 1,
     ["no party 'carol' in this plan; parties are alice, bob"], 1),
    ("data-misspelt-party", "run tiny.plan --reference --data bbo=bob.safetensors", 1,
     ["no party 'bbo'", "did you mean bob?"], 1),
    ("data-garbage", "run tiny.plan --reference --data bob=garbage.safetensors", 1,
     ["garbage.safetensors: not a readable safetensors file"], 1),
    ("data-pickled-npy", "run tiny.plan --reference --data bob:x/test=pickled.npy", 1, ["not a plain .npy array"], 1),
    ("data-tag-not-in-file", "run tiny.plan --reference --data bob:x/test=two.safetensors", 1,
     ["two.safetensors holds 2 tensors and none is named 'x/test'"], 1),
    ("data-missing-for-party", "run tiny.plan --reference --data alice=alice.safetensors", 1,
     ["bob", "x/test"], 8),
    ("data-wrong-shape", "run tiny.plan --reference --data alice=alice.safetensors "
                         "--data bob=wrong_shape.safetensors", 1, ["x/test", "f32[2,6]"], 8),
    ("input-missing", "run tiny.plan --reference --input nope.npy", 1, ["--input: nope.npy: no such file"], 1),
    ("input-txt", "run tiny.plan --reference --input notes.txt", 1,
     ["--input: notes.txt: unsupported file type '.txt'", ".safetensors or .npy"], 1),
    ("input-two-tensors", "run tiny.plan --reference --input two.safetensors", 1,
     ["--input: two.safetensors: expected exactly one tensor, found 2"], 1),
    # ---- policies, exit 1
    ("policy-missing", "check tiny.plan --policy nope.toml", 1, ["nope.toml: no such policy file"], 1),
    ("policy-directory", "check tiny.plan --policy sub", 1, ["sub: is a directory, not a policy file"], 1),
    ("policy-not-toml", "check tiny.plan --policy not_toml.toml", 1, ["not_toml.toml", "TOML"], 1),
    ("policy-binary", "check tiny.plan --policy binary.toml", 1, ["binary.toml"], 1),
    ("policy-unknown-section", "check tiny.plan --policy section.toml", 1, ["section.toml", "bogus"], 1),
    ("policy-unknown-op", "compile tiny.plan -o out.plan --policy unknown_op.toml", 1,
     ["unknown_op.toml", "nosuchop"], 1),
    ("policy-wrong-type-check", "check tiny.plan --policy wrong_type.toml", 1, ["wrong_type.toml", "max_nodes"], 1),
    ("policy-wrong-type-compile", "compile tiny.plan -o out.plan --policy wrong_type.toml", 1,
     ["wrong_type.toml", "max_nodes"], 1),
    ("policy-wrong-type-run", "run tiny.plan --local --policy wrong_type.toml --data alice=alice.safetensors "
                              "--data bob=bob.safetensors", 1, ["wrong_type.toml", "max_nodes"], 1),
    ("policy-violated-check", "check tiny.plan --policy deny_relu.toml", 1,
     ["plan violates policy 'deny_relu'", "op relu is not allowed"], 4),
    ("policy-violated-run", "run tiny.plan --local --policy deny_relu.toml --data alice=alice.safetensors "
                            "--data bob=bob.safetensors", 1, ["op relu is not allowed"], 4),
    # ---- other values planc judges, exit 1
    ("net-unknown", "show tiny.plan --net fast", 1, ["network 'fast'", "use lan, wan or RTT_ms,Gbit_per_s"], 1),
    ("net-negative", "show tiny.plan --net 5,-1", 1, ["network '5,-1'", "bandwidth > 0"], 1),
    ("net-three-numbers", "show tiny.plan --net 1,2,3 --no-ir", 1, ["network '1,2,3'"], 1),
    ("pipeline-unknown-pass", "compile tiny.plan -o out.plan -p verify,bogus", 1,
     ["unknown pass 'bogus'", "passes are"], 1),
    ("ops-unknown", "ops rleu", 1, ["no op 'rleu'", "did you mean relu"], 1),
]


# `planc check` lists a plan's violations as its answer, as tests/test_policy.py expects
UNPREFIXED = {"policy-violated-check"}
COMMANDS = {"trace", "show", "graph", "compile", "check", "run", "ops"}


def _run_inprocess(argv, monkeypatch, capsys):
    monkeypatch.delenv("PLANC_DEBUG", raising=False)
    try:
        rc = cli.main(argv)
    except SystemExit as e:  # argparse's usage errors
        rc = e.code
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _check(case, rc, out, err):
    name, argv, want_rc, texts, max_lines = case
    lines = [s for s in err.splitlines() if s.strip()]
    assert rc == want_rc, f"{name}: exit {rc}, want {want_rc}\n{err}"
    assert "Traceback" not in err and "Traceback" not in out, f"{name}:\n{err}"
    assert 1 <= len(lines) <= max_lines, f"{name}: {len(lines)} lines on stderr (at most {max_lines}):\n{err}"
    cmd = next((w for w in shlex.split(argv) if not w.startswith("-")), None)
    head = f"planc {cmd}: error: " if cmd in COMMANDS else "planc: error: "
    # exit 1: the message comes first; exit 2: argparse's usage lines, then the message
    line = lines[0] if want_rc == 1 else lines[-1]
    if name not in UNPREFIXED:
        assert line.startswith(head), f"{name}: {line!r} does not start with {head!r}"
    for t in texts:
        assert t in err, f"{name}: {t!r} not in\n{err}"


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_invocation(case, d, monkeypatch, capsys):
    monkeypatch.chdir(d)
    rc, out, err = _run_inprocess(shlex.split(case[1]), monkeypatch, capsys)
    _check(case, rc, out, err)
    assert not (d / "out.plan").exists() and not (d / "nodir").exists()


def test_enough_cases():
    assert len(CASES) >= 54 and len({c[0] for c in CASES}) == len(CASES)
    assert {c[2] for c in CASES} == {1, 2}


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz not installed")
def test_graph_unknown_format(d, monkeypatch, capsys):
    monkeypatch.chdir(d)
    case = ("graph-unknown-format", "graph tiny.plan -o g.bogus", 1,
            ["-o g.bogus: Graphviz cannot write format 'bogus'", ".svg, .png, .pdf or .dot"], 1)
    _check(case, *_run_inprocess(shlex.split(case[1]), monkeypatch, capsys))


# ------------------------------------------------------------------ the last resort


def test_unexpected_exception_is_one_line_naming_command_and_exception(monkeypatch, capsys):
    def boom(a):
        raise ZeroDivisionError("division by zero\nsecond line of detail")

    monkeypatch.setattr(cli, "cmd_ops", boom)
    rc, out, err = _run_inprocess(["ops"], monkeypatch, capsys)
    assert rc == 1 and "Traceback" not in err
    assert err.strip() == ("planc ops: error: unexpected ZeroDivisionError: division by zero "
                           "(set PLANC_DEBUG=1 to see the traceback)")
    monkeypatch.setenv("PLANC_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        cli.main(["ops"])


def test_os_error_names_the_file(monkeypatch, capsys):
    def denied(a):
        raise PermissionError(13, "Permission denied", "/some/where.plan")

    monkeypatch.setattr(cli, "cmd_ops", denied)
    rc, out, err = _run_inprocess(["ops"], monkeypatch, capsys)
    assert rc == 1 and err.strip() == "planc ops: error: /some/where.plan: Permission denied"


def test_closed_stdout_is_not_reported(monkeypatch, capsys):
    def closed(a):  # `planc ops | head -1`
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "cmd_ops", closed)
    rc, out, err = _run_inprocess(["ops"], monkeypatch, capsys)
    assert rc == 1 and err == ""


def test_policy_error_from_reading_a_policy_is_one_line(d, monkeypatch, capsys):
    """Policy-file validation raises PolicyError (ir/policy.py, someone else's): whatever
    its message looks like, the CLI prints one line naming the file."""
    from planc.ir.policy import Policy, PolicyError

    class ListError(PolicyError):  # the form PolicyError has for violations: a header, then a list
        def __init__(self):
            ValueError.__init__(self, "plan violates policy file (2 problems):\n  a\n  b")
            self.violations = ["limits.max_nodes: expected an integer, got 'many'", "reveal.to: expected a list"]

    class TextError(PolicyError):
        def __init__(self):
            ValueError.__init__(self, "wrong_type.toml: limits.max_nodes: expected an integer,\n got 'many'")

    monkeypatch.chdir(d)
    for exc, texts in ((ListError, ["max_nodes: expected an integer", "reveal.to: expected a list"]),
                       (TextError, ["max_nodes: expected an integer", "got 'many'"])):
        def read(path, exc=exc):
            raise exc()

        monkeypatch.setattr(Policy, "read", staticmethod(read))
        for argv in (["check", "tiny.plan", "--policy", "wrong_type.toml"],
                     ["compile", "tiny.plan", "-o", "out.plan", "--policy", "wrong_type.toml"]):
            rc, out, err = _run_inprocess(argv, monkeypatch, capsys)
            assert rc == 1 and len(err.strip().splitlines()) == 1, err
            assert err.startswith(f"planc {argv[0]}: error: wrong_type.toml: ") and "Traceback" not in err, err
            for t in texts:
                assert t in err, (t, err)


def test_correct_invocations_still_work(d, monkeypatch, capsys):
    monkeypatch.chdir(d)
    rc, out, err = _run_inprocess(["trace", "user.py:tiny", "-o", "sub/t.plan", "--name", "my.plan-1"],
                                  monkeypatch, capsys)
    assert rc == 0 and "wrote sub/t.plan" in out, err
    rc, out, err = _run_inprocess(["run", "sub/t.plan", "--reference", "--timeout", "5",
                                   "--data", "alice=alice.safetensors", "--data", "bob:x/test=x.npy",
                                   "-o", "sub/out.safetensors"], monkeypatch, capsys)
    assert rc == 0 and "wrote sub/out.safetensors" in out, err
    rc, out, err = _run_inprocess(["check", "sub/t.plan", "--policy", "section.toml"], monkeypatch, capsys)
    assert rc == 1  # (a bad policy, to show the check reaches it)
    rc, out, err = _run_inprocess(["graph", "sub/t.plan", "-o", "sub/t.dot"], monkeypatch, capsys)
    assert rc == 0 and (d / "sub" / "t.dot").read_text().startswith('digraph "my.plan-1"'), err


# ------------------------------------------------------------------ as users run it


ROOT = Path(__file__).resolve().parents[1]


def planc_cli(*args, cwd, env=None):
    """`python -m planc.cli ARGS` in `cwd`, importing planc from this checkout."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "planc.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": path, **(env or {})})


SUBPROCESS_CASES = [
    ("sub-timeout-nan-processes", "run tiny.plan --local --processes --timeout nan --data alice=alice.safetensors "
                                  "--data bob=bob.safetensors", 2, ["--timeout", "'nan'"], 6),
    ("sub-timeout-negative-processes", "run tiny.plan --local --processes --timeout -5 --data alice=alice.safetensors "
                                       "--data bob=bob.safetensors", 2, ["--timeout", "'-5'"], 6),
    ("sub-syntax-error", "trace syn.py:f -o out.plan", 1, ["syn.py:3: SyntaxError"], 2),
    ("sub-name-error", "trace user.py:undefined -o out.plan", 1, ["user.py:37: NameError"], 1),
    ("sub-input-txt", "run tiny.plan --reference --input notes.txt", 1, ["unsupported file type '.txt'"], 1),
    ("sub-run-o-no-dir", "run tiny.plan --local --data alice=alice.safetensors --data bob=bob.safetensors "
                         "-o nodir/o.safetensors", 1, ["no directory nodir"], 1),
]


@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=[c[0] for c in SUBPROCESS_CASES])
def test_bad_invocation_subprocess(case, d):
    r = planc_cli(*shlex.split(case[1]), cwd=d, env={"PLANC_DEBUG": ""})
    _check(case, r.returncode, r.stdout, r.stderr)


def test_planc_debug_shows_the_traceback(d):
    r = planc_cli("trace", "user.py:undefined", "-o", "out.plan", cwd=d, env={"PLANC_DEBUG": "1"})
    assert r.returncode == 1 and "Traceback" in r.stderr and "NameError" in r.stderr
    assert not (d / "out.plan").exists()
