"""Layering: `planc` (front end) -> `planc.runtime` -> `planc.ir`, and no import cycles.

The import graph is read from the sources with `ast` (module-level and function-level
imports, relative and absolute), with the directories mapped as pyproject.toml maps
them: ir/ is planc.ir, runtime/ is planc.runtime, planc/ is planc. `from pkg import x`
counts as an import of the module pkg.x when there is one, else of pkg. Then, in fresh
interpreters, what importing the runtime or the IR really loads.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"planc.ir": ROOT / "ir", "planc.runtime": ROOT / "runtime", "planc": ROOT / "planc"}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg, d in PACKAGES.items():
        for f in sorted(d.rglob("*.py")):
            rel = f.relative_to(d).with_suffix("").parts
            if rel[-1] == "__init__":
                rel = rel[:-1]
            out[".".join((pkg, *rel))] = f
    return out


MODULES = _modules()


def _is_package(mod: str) -> bool:
    return MODULES[mod].name == "__init__.py"


def _resolve(mod: str, level: int, target: str | None) -> str:
    """The absolute name of `from <level dots><target> import ...` written in `mod`."""
    if level == 0:
        return target or ""
    base = mod.split(".")
    if not _is_package(mod):
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _ours(name: str) -> str | None:
    """The module of ours that importing `name` means (its longest known prefix)."""
    parts = name.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in MODULES:
            return cand
        parts.pop()
    return None


def _type_checking(test) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(mod: str):
    """(imported module, line, module_level) for every import of ours in `mod`."""
    tree = ast.parse(MODULES[mod].read_text(encoding="utf-8"), str(MODULES[mod]))
    found = []

    def visit(node, top: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child.test):
                for c in child.orelse:  # `if TYPE_CHECKING:` imports never run
                    visit(ast.Module(body=[c], type_ignores=[]), top)
                continue
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for a in child.names:
                    found.append((a.name, child.lineno, top))
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(mod, child.level, child.module)
                for a in child.names:
                    sub = f"{base}.{a.name}" if base else a.name
                    found.append((sub if sub in MODULES else base, child.lineno, top))
            visit(child, inner)

    visit(tree, True)
    out = []
    for name, line, top in found:
        m = _ours(name)
        if m is not None and m != mod:
            out.append((m, line, top))
    return out


GRAPH = {m: _imports(m) for m in MODULES}


def _layer(mod: str) -> str:
    for pkg in ("planc.ir", "planc.runtime"):
        if mod == pkg or mod.startswith(pkg + "."):
            return pkg
    return "planc"


# which layers each layer may import
ALLOWED = {"planc.ir": {"planc.ir"}, "planc.runtime": {"planc.runtime", "planc.ir"},
           "planc": {"planc", "planc.runtime", "planc.ir"}}


def test_the_graph_sees_every_package():
    assert {"planc", "planc.ir.graph", "planc.runtime.session", "planc.tracer", "planc.passes"} <= set(MODULES)
    assert ("planc.ir.graph", True) in {(m, top) for m, _, top in GRAPH["planc.ir.verify"]}
    assert ("planc.runtime.protocols", True) in {(m, top) for m, _, top in GRAPH["planc.runtime.session"]}
    assert ("planc.ir.printer", False) in {(m, top) for m, _, top in GRAPH["planc.ir.graph"]}


def test_layers_point_one_way():
    bad = [f"{MODULES[m].relative_to(ROOT)}:{line}: {m} ({_layer(m)}) imports {t} ({_layer(t)})"
           for m, edges in GRAPH.items() for t, line, _ in edges if _layer(t) not in ALLOWED[_layer(m)]]
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


@pytest.mark.parametrize("which", ["module-level imports", "all imports"])
def test_no_import_cycles(which):
    """No cycles between modules, neither among the imports that run when a module is
    imported nor when the imports inside functions count as well (a function-level
    import that closes a cycle only hides it)."""
    counts = (lambda top: top) if which == "module-level imports" else (lambda top: True)
    edges = {m: {t for t, _, top in es if counts(top)} for m, es in GRAPH.items()}
    cycles = _cycles(edges)
    detail = []
    for comp in cycles:
        for m in comp:
            for t, line, top in GRAPH[m]:
                if counts(top) and t in comp:
                    detail.append(f"  {MODULES[m].relative_to(ROOT)}:{line}: {m} -> {t}"
                                  + ("" if top else " (in a function)"))
    assert not cycles, "import cycles:\n" + "\n".join(
        ["  " + " <-> ".join(c) for c in cycles] + list(dict.fromkeys(detail)))


def _foreign(mod: str):
    """(imported name, line, module_level) for every import of a module not ours."""
    tree = ast.parse(MODULES[mod].read_text(encoding="utf-8"), str(MODULES[mod]))
    out = []

    def visit(node, top):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child.test):
                continue
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, top) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0:
                out.extend((f"{child.module}.{a.name}", child.lineno, top) for a in child.names)
            visit(child, inner)

    visit(tree, True)
    return out


def test_ir_and_runtime_never_import_torch_fx_and_ir_no_torch_at_module_level():
    bad = []
    for m in MODULES:
        if _layer(m) == "planc":
            continue
        for name, line, top in _foreign(m):
            where = f"{MODULES[m].relative_to(ROOT)}:{line}: {m} imports {name}"
            if name == "torch.fx" or name.startswith("torch.fx."):
                bad.append(where)
            elif _layer(m) == "planc.ir" and top and (name == "torch" or name.startswith("torch.")
                                                     or name.startswith("safetensors.torch")):
                bad.append(where + " at module level")
    assert not bad, "\n".join(bad)


def _fresh(code: str) -> dict:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


_PROBE = """
import json, sys
{imports}
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("planc", "torch"))))
"""


def _loaded(*imports: str) -> set[str]:
    return set(_fresh(_PROBE.format(imports="\n".join(f"import {m}" for m in imports))))


def _under(loaded, *prefixes):
    return sorted(m for m in loaded if any(m == p or m.startswith(p + ".") for p in prefixes))


# `import torch` itself loads torch.fx (torch/__init__.py imports torch.fx.experimental), so
# for torch.fx "left out" means: nothing of torch.fx beyond what importing torch loads
TORCH_ALONE = None


def _torch_fx_of_torch() -> set[str]:
    global TORCH_ALONE
    if TORCH_ALONE is None:
        TORCH_ALONE = set(_under(_loaded("torch"), "torch.fx"))
    return TORCH_ALONE


def test_runtime_session_loads_no_tracer_or_compiler():
    loaded = _loaded("planc.runtime.session")
    assert not _under(loaded, "planc.tracer", "planc.passes", "planc.api", "planc.lower", "planc.shells",
                      "planc.compile", "planc.cost", "planc.cli")
    assert set(_under(loaded, "torch.fx")) <= _torch_fx_of_torch()


def test_ir_loads_no_torch_fx_or_runtime():
    loaded = _loaded("planc.ir")
    assert not _under(loaded, "torch", "planc.runtime", "planc.tracer", "planc.passes")


def test_every_ir_module_imports_without_torch():
    ir = sorted(m for m in MODULES if _layer(m) == "planc.ir")
    loaded = _loaded(*ir)
    assert not _under(loaded, "torch", "planc.runtime", "planc.tracer", "planc.passes", "planc.api")


@pytest.mark.parametrize("name", ["trace", "plan", "compile", "run_local", "Plan", "weights", "Loc", "TraceError"])
def test_front_end_names_still_resolve(name):
    import planc

    assert name in planc.__all__ and name in dir(planc)
    assert getattr(planc, name) is not None


def test_planc_compile_stays_the_function_after_its_module_is_imported():
    out = _fresh("import json, planc.compile, planc\n"
                 "import planc.compile as m\n"
                 "print(json.dumps([callable(planc.compile), type(planc.compile).__name__,\n"
                 "                  sorted(set(planc.__all__) - set(dir(planc)))]))")
    assert out == [True, "function", []]


# ---- no process-wide side effects at import or after a run ------------------------------------

_SETTINGS = """
import json, sys, multiprocessing.spawn as spawn
import torch
torch.set_num_threads(2)
before = [torch.get_num_threads(), sys.getswitchinterval(), spawn.get_preparation_data.__module__]
{code}
after = [torch.get_num_threads(), sys.getswitchinterval(), spawn.get_preparation_data.__module__]
print(json.dumps([before, after]))
"""


def test_importing_the_runtime_changes_no_process_settings():
    code = "\n".join(f"import {m}" for m in sorted(MODULES) if _layer(m) == "planc.runtime")
    before, after = _fresh(_SETTINGS.format(code=code))
    assert before == after


def test_runs_put_process_settings_back():
    code = """
import threading, planc
from planc.runtime.local import run_local

@planc.plan(parties=["alice", "bob"])
def f():
    a = planc.load("a", owner="alice", shape=(3,))
    b = planc.load("b", owner="bob", shape=(3,))
    return planc.reveal(planc.share(a) * planc.share(b), to="bob")

data = {"alice": {"a": torch.ones(3)}, "bob": {"b": torch.ones(3)}}
inside = []
def probe(done, total):
    inside.append((torch.get_num_threads(), sys.getswitchinterval()))
run_local(f.plan, data, progress=probe)
# overlapping runs in two threads: the settings come back only after the last one
ts = [threading.Thread(target=run_local, args=(f.plan, data)) for _ in range(3)]
for t in ts: t.start()
for t in ts: t.join()
run_local(f.plan, data, processes=True, timeout=60)
assert inside and inside[0][0] == 1 and abs(inside[0][1] - 0.0002) < 1e-9, inside
"""
    before, after = _fresh(_SETTINGS.format(code=code))
    assert before == after and before[2] == "multiprocessing.spawn"
