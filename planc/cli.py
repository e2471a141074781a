"""The `planc` command line: trace, show, graph, compile, check, run, ops.

Every failure the user can cause ends as one clear message on stderr, starting
``planc CMD: error:``, and a non-zero status; set PLANC_DEBUG=1 to see Python tracebacks.

- exit 2 (usage): the command line does not parse -- an unknown command or flag, a missing
  argument, a number that is not one or is out of range (``--timeout`` must be finite,
  > 0 and at most 1e9 s), a plan name the IR cannot spell (``--name``), flags that
  exclude each other (``--local``/``--reference``, ``--processes`` without ``--local``,
  ``ops NAME --torch``). argparse's own format: a usage line, then the error.
- exit 1 (refused or failed): the command line parses but planc refuses what it names or
  the command fails -- a missing file, a directory where a file belongs, a data file that
  is not ``.safetensors``/``.npy``, a malformed ``--data`` spec or ``FILE.py:OBJECT``, a
  party the plan does not have, a file that is not a plan or a policy, a policy value
  that cannot be checked, an error in the traced file (its ``file:line`` and the error),
  a policy violation, a run-time failure.

Arguments are checked before any work starts: files to read must exist, and the
directory of every ``-o`` file must exist already -- planc never creates directories, so
a misspelt path fails at once instead of after a long trace or run. Any other exception
that escapes a command is reported as one line naming the command and the exception,
with the hint to set PLANC_DEBUG=1 (exit 1).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import math
import os
import re
import sys
from pathlib import Path

EXIT_USAGE, EXIT_ERROR = 2, 1

DATA_SUFFIXES = (".safetensors", ".npy")  # what planc.weights.read_tensors reads
MAX_TIMEOUT = 1e9  # seconds; torch.distributed's timedelta overflows near 8.6e13
PLAN_NAME = re.compile(r"[A-Za-z0-9_.$\-]+")  # ir/grammar.lark: GRAPH_NAME without its @


class CliError(Exception):
    """A user mistake planc refuses: printed as one line, exit 1."""


def _debug() -> bool:
    return bool(os.environ.get("PLANC_DEBUG"))


# ------------------------------------------------------------------ argument checks


def _seconds(text: str) -> float:
    """argparse type of --timeout: a finite number of seconds, > 0."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (math.isfinite(x) and 0 < x <= MAX_TIMEOUT):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0 and at most {MAX_TIMEOUT:,.0f}, "
                                         f"got {text!r}")
    return x


def _plan_name(text: str) -> str:
    """argparse type of trace --name: what the plan file's IR can spell after `plan @`."""
    if not PLAN_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a plan name; use letters, digits and _ . $ -")
    return text


def _need_file(path: str, what: str = "file") -> Path:
    """An existing regular file to read, or CliError naming what is wrong with `path`."""
    p = Path(path)
    if not path:
        raise CliError(f"empty path where a {what} belongs")
    if p.is_dir():
        raise CliError(f"{path}: is a directory, not a {what}")
    if not p.is_file():
        raise CliError(f"{path}: no such {what}" if what != "file" else f"{path}: no such file")
    if not os.access(p, os.R_OK):
        raise CliError(f"{path}: cannot read the {what} (permission denied)")
    return p


def _need_data_file(path: str, flag: str) -> Path:
    """A tensor file planc reads: .safetensors or .npy, existing. `flag` starts the message."""
    suffix = Path(path).suffix
    if suffix not in DATA_SUFFIXES:
        kind = f"file type {suffix!r}" if suffix else "file without an extension"
        raise CliError(f"{flag}: {path}: unsupported {kind}; data files are {' or '.join(DATA_SUFFIXES)}")
    try:
        return _need_file(path)
    except CliError as e:
        raise CliError(f"{flag}: {e}") from None


def _need_output(path: str) -> Path:
    """`-o PATH`: a file name in a directory that exists and can be written. planc does not
    create directories (a misspelt one should fail now, not after the work is done)."""
    p = Path(path)
    if not path:
        raise CliError("-o: empty file name")
    if p.is_dir():
        raise CliError(f"-o {path}: is a directory; give a file name")
    parent = p.parent
    if not parent.is_dir():
        if parent.exists():
            raise CliError(f"-o {path}: {parent} is not a directory")
        raise CliError(f"-o {path}: no directory {parent} (planc does not create directories; "
                       f"mkdir -p {parent} first)")
    if not os.access(parent, os.W_OK):
        raise CliError(f"-o {path}: cannot write into {parent} (permission denied)")
    return p


def _split_data(item: str):
    """`PARTY[:TAG]=FILE` -> (party, tag or "", file), or CliError naming what is missing."""
    left, eq, path = item.partition("=")
    party, colon, tag = left.partition(":")
    if not eq or not path or not party or (colon and not tag):
        missing = ("'=FILE'" if not eq else "the FILE after '='" if not path else
                   "the PARTY before '='" if not party else "the TAG after ':'")
        raise CliError(f"--data {item!r}: {missing} is missing; expected PARTY:TAG=FILE or PARTY=FILE.safetensors")
    return party, tag, path


def _console():
    from rich.console import Console

    # pipes get a wide console: file paths and types should not wrap mid-word
    width = None if sys.stdout.isatty() else 160
    return Console(highlight=False, soft_wrap=True, width=width)


# ------------------------------------------------------------------ trace


@contextlib.contextmanager
def _user_code(path: str, doing: str):
    """Exceptions raised by the user's file (while importing or tracing it) become one
    line: the user's `file:line` and the error -- not planc's stack."""
    from planc.errors import TraceError, first_line, loc_of_exception

    try:
        yield
    except (CliError, TraceError):
        raise
    except SystemExit as e:
        if _debug():
            raise
        raise CliError(f"{path}: called sys.exit({e.code!r}) while {doing}; keep a script's own code under "
                       "`if __name__ == \"__main__\":`") from None
    except Exception as e:
        if _debug():
            raise
        loc = loc_of_exception(e)
        if isinstance(e, SyntaxError):
            msg = f"{loc or path}: SyntaxError: {e.msg}"
            if e.text and e.text.strip():
                msg += f"\n    {e.text.strip()}"
        else:
            msg = f"{loc or path}: {first_line(e)}" + (f" (while {doing})" if doing.startswith("importing") else "")
        raise CliError(msg) from None


def _need_python(path: str) -> Path:
    p = _need_file(path)
    if p.suffix != ".py":
        raise CliError(f"{path}: not a Python file (.py); expected FILE.py:OBJECT")
    return p


@contextlib.contextmanager
def _located_at(obj, path: str):
    """A TraceError that names no line of the user's code (the function returns nothing, or
    takes arguments the command line cannot give) names where `obj` is defined instead --
    not the command line's own frames, which are all that is on the stack then."""
    import inspect

    from planc.errors import TraceError, display_path
    from planc.ir.graph import Loc

    outside = {os.path.abspath(f.filename) for f in inspect.stack(0)}  # bin/planc, runpy, a test
    try:
        yield
    except TraceError as e:
        if e.loc is not None and os.path.abspath(e.loc.file) not in outside:
            raise
        import planc

        target = obj.fn if isinstance(obj, planc.PlanFunction) else obj
        target = getattr(target, "forward", target)  # a module: its forward
        try:
            loc = Loc(display_path(inspect.getsourcefile(target)), inspect.getsourcelines(target)[1])
        except (TypeError, OSError):  # defined in no file planc can read
            raise TraceError(f"{path}: {e.problem}") from None
        raise TraceError(e.problem, loc) from None


def _import_file(path: str):
    p = _need_python(path)
    name = "_planc_user_" + "".join(c if c.isalnum() else "_" for c in p.stem)
    spec = importlib.util.spec_from_file_location(name, p)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    sys.path.insert(0, str(p.resolve().parent))
    try:
        with _user_code(path, f"importing {path}"):
            spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        sys.path.pop(0)
    return mod


def _split_target(ref: str):
    """`FILE.py:OBJECT` -> (file, object path), or CliError saying what is malformed."""
    example = "e.g. examples/mnist_cnn.py:encrypted_inference"
    if ":" not in ref:
        raise CliError(f"{ref}: expected FILE.py:OBJECT, {example}")
    path, _, attr = ref.rpartition(":")
    if not path:
        raise CliError(f"{ref}: no FILE.py before ':'; expected FILE.py:OBJECT, {example}")
    if not attr or not all(part.isidentifier() for part in attr.split(".")):
        raise CliError(f"{ref}: {attr!r} is not an object name; expected FILE.py:OBJECT, {example}")
    return path, attr


def load_target(ref: str):
    """`file.py:obj` -> a Plan, tracing the object as needed."""
    import planc
    from planc.ir.plan import Plan

    path, attr = _split_target(ref)
    mod = _import_file(path)
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CliError(f"{path} has no object {attr!r}")
        obj = getattr(obj, part)
    if isinstance(obj, Plan):
        return obj
    if isinstance(obj, planc.PlanFunction) or (callable(obj) and not isinstance(obj, type)):
        with _user_code(path, f"tracing {attr}"), _located_at(obj, path):
            return obj.plan if isinstance(obj, planc.PlanFunction) else planc.trace(obj)
    kind = "class" if isinstance(obj, type) else type(obj).__name__
    raise CliError(f"{ref} is a {kind}; expected a @planc.plan function, a function, an nn.Module or a Plan")


def _onnx_plan(a):
    """`planc trace model.onnx`: the model as a plan (planc.onnx.from_onnx)."""
    from planc.onnx import OnnxImportError, from_onnx

    if not a.owner:
        raise CliError(f"{a.target}: an ONNX model needs --owner PARTY (who holds its weights)")
    try:
        return from_onnx(a.target, owner=a.owner, tag=a.tag or Path(a.target).stem, input_owner=a.input_owner,
                         reveal_to=a.reveal_to, name=a.name)
    except OnnxImportError as e:
        raise CliError(str(e)) from None


def cmd_trace(a):
    plan = _onnx_plan(a) if a.target.endswith(".onnx") else load_target(a.target)
    if a.name:
        from dataclasses import replace

        plan.graph = replace(plan.graph, name=a.name)
    plan.save(a.output)
    print(f"wrote {a.output}  ({len(plan.to_bytes())} bytes, sha256 {plan.sha256()})")
    return 0


# ------------------------------------------------------------------ show


def _read_plan(path):
    from planc.ir.plan import Plan, PlanFormatError

    _need_file(path)
    try:
        return Plan.read(path)
    except PlanFormatError as e:  # its messages say what is wrong, not with which file
        if _debug():
            raise
        raise CliError(f"{path}: not a readable plan file: {e}") from None


def _holder(g, t) -> str:
    v = t.vis
    if v.is_public:
        return "every party"
    if v.is_private:
        return g.parties[v.owner]
    return "nobody (stays secret-shared)"


def cmd_show(a):
    from rich.table import Table

    from planc.summary import summarize

    plan = _read_plan(a.plan)
    g = plan.graph
    s = summarize(plan)
    con = _console()
    con.print(f"[bold]plan @{g.name}[/bold]  {a.plan}")
    con.print(f"  parties   {', '.join(f'{p}={i}' for i, p in enumerate(g.parties))}")
    con.print(f"  sha256    {plan.sha256()}")
    con.print(f"  nodes     {s['nodes']}  (loop bodies counted once)")
    if not a.no_ir:
        con.print()
        con.print(str(g), markup=False)

    t = Table(title="inputs", title_justify="left")
    for c in ("party", "tag / index", "type", "source"):
        t.add_column(c)
    for row in s["inputs"]:
        t.add_row(*row)
    con.print(t)

    t = Table(title="outputs", title_justify="left")
    for c in ("#", "type", "received by", "source"):
        t.add_column(c)
    for i, v in enumerate(g.outputs):
        t.add_row(str(i), str(v.type), _holder(g, v.type), s["out_locs"][i])
    con.print(t)

    t = Table(title=f"captured constants ({len(plan.constants)})", title_justify="left")
    for c in ("name", "type", "bytes", "origin"):
        t.add_column(c)
    for name, ty, nbytes, origin in s["constants"]:
        t.add_row(name, ty, f"{nbytes:,}", origin)
    con.print(t)
    if not plan.constants:
        con.print("  (no tensor travels inside this plan)")

    t = Table(title="ops", title_justify="left")
    for c in ("op", "count", "communicates on secrets"):
        t.add_column(c)
    for op, n, comm in s["histogram"]:
        t.add_row(op, str(n), "yes" if comm else "")
    con.print(t)
    if a.cost or a.net is not None:  # a network model only matters for the cost: --net implies --cost
        _show_cost(con, plan, a.net or "lan")
    return 0


def _protocols(node) -> str:
    """The comparison protocols a top-level node runs (planc/passes/comparisons.py):
    `fss` / `bits` for a comparison, counts for a loop's body."""
    from collections import Counter

    from planc.passes.comparisons import methods

    got = Counter(m for _, m in methods([node]))
    if not got:
        return ""
    if len(got) == 1 and not node.regions:
        return next(iter(got))
    return ", ".join(f"{m} x{k}" for m, k in sorted(got.items()))


def _show_cost(con, plan, net):
    from rich.table import Table

    from planc.cost import parse_net, predict

    try:
        parse_net(net)
    except ValueError as e:
        raise CliError(str(e)) from None
    c = predict(plan, net=net)
    parties = c.parties
    t = Table(title="cost per node (one node at a time)", title_justify="left")
    t.add_column("node")
    t.add_column("source")
    t.add_column("rounds", justify="right")
    for p in parties:
        t.add_column(f"sent by {p}", justify="right")
    t.add_column("protocol")
    for node, pc in c.per_node:
        any_cost = next(iter(pc.values()))
        t.add_row(f"{node.op} {node.results[0] if node.results else ''}", str(node.loc or ""), str(any_cost.rounds),
                  *[_mib(pc[p].bytes_sent) if p in pc else "0 B" for p in parties], _protocols(node))
    con.print(t)
    con.print(c.total_table())
    con.print(c.dealer_line(), markup=False)
    for descr, k in sorted(c.material.items(), key=lambda x: -x[1])[:12]:
        con.print(f"  {k} x {descr}", markup=False)
    con.print(c.net_line(), markup=False)


# ------------------------------------------------------------------ graph


def cmd_graph(a):
    import shutil
    import subprocess

    from planc.graphviz import to_dot

    plan = _read_plan(a.plan)
    dot = to_dot(plan.graph)
    out = a.output
    if out.endswith(".dot") or out.endswith(".gv"):
        Path(out).write_text(dot)
    else:
        fmt = Path(out).suffix.lstrip(".") or "svg"
        exe = shutil.which("dot")
        if exe is None:
            raise CliError("Graphviz's `dot` is not installed (apt-get install graphviz); "
                           "or write the DOT text with -o graph.dot")
        r = subprocess.run([exe, f"-T{fmt}", "-o", out], input=dot.encode(), capture_output=True, timeout=120)
        if r.returncode:
            err = r.stderr.decode(errors="replace").strip()
            if "not recognized" in err:
                raise CliError(f"-o {out}: Graphviz cannot write format {fmt!r}; use .svg, .png, .pdf or .dot")
            raise CliError(f"dot failed: {' '.join(err.split())[:300]}")
    print(f"wrote {out}")
    return 0


# ------------------------------------------------------------------ run


def parse_data_args(items, parties):
    """`PARTY:TAG=FILE` (one tensor) or `PARTY=FILE.safetensors` (every tensor, by name)."""
    from planc.weights import read_tensors

    data: dict[str, dict] = {}
    for item in items or ():
        party, tag, path = _split_data(item)
        if party not in parties:
            import difflib

            near = difflib.get_close_matches(party, list(parties), n=1)
            raise CliError(f"--data {item!r}: no party {party!r} in this plan; parties are {', '.join(parties)}"
                           + (f" (did you mean {near[0]}?)" if near else ""))
        try:
            tensors = read_tensors(path)
        except (OSError, ValueError) as e:
            raise CliError(f"--data {item!r}: {e}") from None
        if tag:
            if tag in tensors:
                t = tensors[tag]
            elif len(tensors) == 1:
                t = next(iter(tensors.values()))
            else:
                raise CliError(f"--data {item!r}: {path} holds {len(tensors)} tensors and none is named {tag!r}")
            data.setdefault(party, {})[tag] = t
        else:
            data.setdefault(party, {}).update(tensors)
    return data


def cmd_run(a):
    import torch
    from safetensors.torch import save_file

    from planc.weights import read_tensors

    plan = _read_plan(a.plan)
    g = plan.graph
    policy = _policy(a.policy, plan) if a.policy else None
    data = parse_data_args(a.data, g.parties) if not a.cluster else {}  # --cluster: this client's TAG=FILE
    inputs = []
    for path in a.input or ():
        try:
            ts = read_tensors(path)
        except (OSError, ValueError) as e:
            raise CliError(f"--input: {e}") from None
        if len(ts) != 1:
            raise CliError(f"--input: {path}: expected exactly one tensor, found {len(ts)}")
        inputs.append(next(iter(ts.values())))
    con = _console()
    torch.set_printoptions(precision=4, threshold=20, edgeitems=3)
    if a.cluster:
        from .cli_cluster import run_on_cluster

        saved = run_on_cluster(a, plan, inputs, con)
    elif a.reference:
        from planc.runtime.reference import run_reference

        outs = run_reference(g, data=data, constants=plan.constants, inputs=inputs)
        for i, (v, t) in enumerate(zip(g.outputs, outs)):
            con.print(f"output {i}: {v.type}  -> {_holder(g, v.type)}", markup=False)
            con.print(f"  {t}", markup=False)
        saved = {f"output{i}": t.contiguous() for i, t in enumerate(outs)}
    else:
        res = _run_local_with_progress(plan, data, inputs, a, con, policy)
        saved = {}
        for i, v in enumerate(g.outputs):
            con.print(f"output {i}: {v.type}  -> {_holder(g, v.type)}", markup=False)
            for p in g.parties:
                o = res.outputs[p][i]
                if isinstance(o, torch.Tensor):
                    con.print(f"  at {p}: {o}", markup=False)
                    saved.setdefault(f"output{i}", o.contiguous())
        _print_stats(con, res)
    if a.output:
        save_file(saved, a.output)
        print(f"wrote {a.output}")
    return 0


def _run_local_with_progress(plan, data, inputs, a, con, policy=None):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from planc.runtime.local import run_local

    if a.processes or not sys.stderr.isatty():
        return run_local(plan, data, inputs=inputs, processes=a.processes, timeout=a.timeout, policy=policy,
                         transport=a.transport if a.processes else None)
    with Progress(TextColumn("running {task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} nodes"),
                  TimeElapsedColumn(), transient=True) as bar:
        task = bar.add_task(plan.graph.name, total=None)

        def progress(done, total):
            bar.update(task, completed=done, total=total)

        return run_local(plan, data, inputs=inputs, timeout=a.timeout, progress=progress, policy=policy)


def _print_stats(con, res):
    from planc.runtime.report import stats_table, wall_line

    con.print(stats_table(res.stats))
    con.print(wall_line(res.wall_s))


def _mib(n: int) -> str:
    from planc.runtime.report import mib

    return mib(n)


# ------------------------------------------------------------------ compile / check


def _policy(path, plan=None):
    """The policy file at `path` (the default policy without one). With `plan`, the policy
    is also tried on it once, so that a value of the wrong type fails here, as one line
    naming the file, and not deep inside a pass or a run."""
    from planc.errors import first_line
    from planc.ir.policy import DEFAULT, Policy

    if not path:
        return DEFAULT
    _need_file(path, "policy file")
    try:
        pol = Policy.read(path)
    except Exception as e:  # PolicyError/ValueError from validation; anything else a file can provoke
        if _debug():
            raise
        raise CliError(_policy_problem(path, e)) from None
    if plan is not None:
        try:
            pol.violations(plan.graph)
        except Exception as e:
            if _debug():
                raise
            keys = _culprits(pol, plan)
            what = (f"{', '.join(keys)}: a value of the wrong type" if keys else "is a value of the wrong type?")
            raise CliError(f"{path}: {what}; the plan cannot be checked against it ({first_line(e)})") from None
    return pol


# the TOML key of each field of Policy, for messages
_POLICY_KEYS = {"allow": "ops.allow", "deny": "ops.deny", "attrs": "attrs", "reveal_to": "reveal.to",
                "max_nodes": "limits.max_nodes", "max_loop_trips": "limits.max_loop_trips",
                "max_elements": "limits.max_elements"}


def _culprits(pol, plan) -> list[str]:
    """The policy entries whose values break checking: each one that, put back to its
    default alone, lets the check run. (Validating policy files is ir/policy.py's job;
    this only names the entry when a value slipped through.)"""
    import dataclasses

    out = []
    for f in dataclasses.fields(pol):
        if f.name == "name":
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if getattr(pol, f.name) == default:
            continue
        try:
            dataclasses.replace(pol, **{f.name: default}).violations(plan.graph)
        except Exception:
            continue
        value = getattr(pol, f.name)
        shown = repr(value if not isinstance(value, frozenset) else sorted(value, key=str))
        out.append(f"{_POLICY_KEYS.get(f.name, f.name)} = {shown[:60]}")
    return out


def _policy_problem(path: str, e: Exception) -> str:
    """One line for an error reading a policy file, whatever its class."""
    violations = getattr(e, "violations", None)
    if violations:
        text = "; ".join(" ".join(str(v).split()) for v in violations)
    else:
        text = "; ".join(s.strip() for s in str(e).splitlines() if s.strip()) or type(e).__name__
        if not isinstance(e, ValueError):
            text = f"{type(e).__name__}: {text}"
    if isinstance(e, UnicodeDecodeError):
        text = "not a UTF-8 text file"
    return text if path in text else f"{path}: {text}"


def cmd_compile(a):
    from planc.compile import compile
    from planc.passes import DEFAULT_PIPELINE
    from planc.passes.base import PipelineError

    plan = _read_plan(a.plan)
    try:
        if a.net is not None:
            from planc.cost import parse_net

            parse_net(a.net)
        clients = tuple(c.strip() for c in (a.clients or "").split(",") if c.strip())
        out = compile(plan, a.pipeline or DEFAULT_PIPELINE, policy=_policy(a.policy, plan),
                      print_after_all=a.print_after_all, out=sys.stdout, objective=a.objective, net=a.net,
                      clients=clients or None)
    except (PipelineError, ValueError) as e:
        raise CliError(str(e)) from None
    out.save(a.output)
    before = sum(1 for _ in plan.graph.walk())
    after = sum(1 for _ in out.graph.walk())
    print(f"wrote {a.output}  ({before} -> {after} nodes, {len(plan.to_bytes())} -> {len(out.to_bytes())} bytes, "
          f"sha256 {out.sha256()})")
    return 0


def cmd_check(a):
    """The policy's rules, then its resource limits for every party and the dealer: what a
    worker with this policy decides before running (runtime/admission.py)."""
    from planc.ir.policy import PolicyError
    from planc.runtime.admission import admit

    plan = _read_plan(a.plan)
    pol = _policy(a.policy, plan)
    problems = pol.violations(plan.graph)
    if problems:
        print(PolicyError(problems, f"policy {pol.name!r}"), file=sys.stderr)
        return EXIT_ERROR
    calls = sorted({n.attr("tag") for n in plan.graph.walk() if n.op == "call"})
    if calls:  # a remote model's cost is known only once its owner links it
        print(f"ok: {a.plan} satisfies policy {pol.name!r}'s rules; its limits are checked when the model"
              f"{'s' if len(calls) > 1 else ''} {', '.join(map(repr, calls))} "
              f"{'are' if len(calls) > 1 else 'is'} linked")
        return 0
    clients = [c for c in (a.clients or "").split(",") if c]
    bad = [c for c in clients if c not in plan.graph.parties]
    if bad:
        a.parser.error(f"--clients {bad[0]!r}: not a party of the plan ({', '.join(plan.graph.parties)})")
    try:
        admit(plan, pol, clients=clients)
    except PolicyError as e:
        print(e, file=sys.stderr)
        return EXIT_ERROR
    print(f"ok: {a.plan} satisfies policy {pol.name!r}: its rules and its limits, at every party and the dealer")
    return 0


# ------------------------------------------------------------------ ops


def cmd_ops(a):
    from rich.table import Table

    from planc import opsinfo
    from planc.ir import ops

    con = _console()
    if a.onnx:
        from planc.onnx import coverage

        t = Table(title="ONNX op types planc imports", title_justify="left")
        for c in ("ONNX op", "planc ops", "opsets"):
            t.add_column(c)
        for op_type, row in coverage().items():
            t.add_row(op_type, ", ".join(row["planc"]) or "(no op: folded or plumbing)", "%d..%d" % row["opsets"])
        con.print(t)
        return 0
    if a.torch:
        t = Table(title="torch functions, tensor methods, operators and nn modules planc lowers", title_justify="left")
        for c in ("kind", "torch", "planc ops"):
            t.add_column(c)
        for row in opsinfo.torch_surface():
            t.add_row(*row)
        con.print(t)
        return 0
    if a.name:
        if a.name not in ops.REGISTRY:
            import difflib

            near = difflib.get_close_matches(a.name, list(ops.REGISTRY), n=3)
            raise CliError(f"no op {a.name!r}" + (f"; did you mean {', '.join(near)}?" if near else
                                                  "; `planc ops` lists them"))
        t = Table(title=f"op {a.name}", title_justify="left", show_header=False)
        t.add_column(style="bold")
        t.add_column()
        for k, v in opsinfo.describe(a.name):
            t.add_row(k, v)
        con.print(t)
        return 0
    t = Table(title="planc op set", title_justify="left")
    for c in ("op", "operands", "attributes", "traits", "missing rules"):
        t.add_column(c)
    gaps = ops.missing()
    for name, d in ops.REGISTRY.items():
        attrs = ", ".join(f"{k}: {s.kind}" + ("" if s.required else f" = {s.default!r}") for k, s in d.attrs.items())
        traits = ", ".join(x for x in opsinfo.TRAITS if getattr(d, x))
        t.add_row(name, ", ".join(d.operands), attrs, traits, ", ".join(gaps.get(name, [])))
    con.print(t)
    return 0


# ------------------------------------------------------------------ main


def _version() -> str:
    import platform

    import torch

    import planc

    return f"planc {planc.__version__} (torch {torch.__version__}, Python {platform.python_version()})"


OUT_HELP = "its directory must exist"


def build_parser():
    ap = argparse.ArgumentParser(prog="planc", description="Trace PyTorch into plans for private ML; inspect and run them.")
    ap.add_argument("--version", action="version", version=_version())
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("trace", help="trace FILE.py:OBJECT (or import MODEL.onnx) into a plan file")
    p.add_argument("target", metavar="TARGET", help="FILE.py:OBJECT, or MODEL.onnx")
    p.add_argument("--owner", metavar="P", help="MODEL.onnx: the party holding its weights (loads of TAG/<initializer>)")
    p.add_argument("--tag", metavar="T", help="MODEL.onnx: the weights' tag prefix (default: the file's stem)")
    p.add_argument("--input-owner", metavar="P", help="MODEL.onnx: the party holding its inputs (default: public run-time inputs)")
    p.add_argument("--reveal-to", metavar="P", help="MODEL.onnx: the party its outputs are revealed to")
    p.add_argument("-o", "--output", required=True, help=OUT_HELP)
    p.add_argument("--name", type=_plan_name, help="name of the plan (default: the function's)")
    p.set_defaults(parser=p, fn=cmd_trace)

    p = sub.add_parser("show", help="header, IR, inputs and outputs per party, captured constants, op histogram")
    p.add_argument("plan")
    p.add_argument("--no-ir", action="store_true", help="leave out the printed IR")
    p.add_argument("--cost", action="store_true", help="rounds, bytes, dealer material and memory, per node and total")
    p.add_argument("--net", help="network model for the time estimate: lan (default), wan or RTT_ms,Gbit_per_s; "
                                 "implies --cost")
    p.set_defaults(parser=p, fn=cmd_show)

    p = sub.add_parser("graph", help="draw the graph coloured by visibility (Graphviz)")
    p.add_argument("plan")
    p.add_argument("-o", "--output", required=True, help=f"x.svg, x.png, x.pdf or x.dot; {OUT_HELP}")
    p.set_defaults(parser=p, fn=cmd_graph)

    p = sub.add_parser("run", help="run a plan")
    p.add_argument("plan")
    p.add_argument("--local", action="store_true", help="every party (and the dealer) on this machine, over shares")
    p.add_argument("--processes", action="store_true", help="with --local: one process per party")
    p.add_argument("--transport", choices=("tls", "gloo"), default="tls",
                   help="with --processes: mutually authenticated TLS (default) or gloo (unencrypted, trusted hosts)")
    p.add_argument("--timeout", type=_seconds, default=60.0, help="seconds any party waits for a message")
    p.add_argument("--policy", help="refuse to run a plan that breaks this TOML policy")
    p.add_argument("--reference", action="store_true", help="plaintext reference runtime on this machine")
    p.add_argument("--data", action="append", metavar="PARTY:TAG=FILE",
                   help="a party's tensor (.safetensors/.npy); PARTY=FILE.safetensors loads every tensor by name")
    p.add_argument("--input", action="append", metavar="FILE", help="public inputs in order")
    p.add_argument("--cluster", metavar="CLUSTER.toml", help="run on the cluster's workers (planc worker daemons); "
                                                               "--data then gives this client's own TAG=FILE")
    p.add_argument("-o", "--output", help=f"write the outputs to a safetensors file; {OUT_HELP}")
    p.set_defaults(parser=p, fn=cmd_run)

    p = sub.add_parser("compile", help="run compiler passes over a plan")
    p.add_argument("plan")
    p.add_argument("-o", "--output", required=True, help=OUT_HELP)
    from planc.passes import DEFAULT_PIPELINE

    p.add_argument("-p", "--pipeline", help=f"comma-separated passes (default: {DEFAULT_PIPELINE})")
    p.add_argument("--policy", help="TOML policy the plan must satisfy")
    p.add_argument("--print-after-all", action="store_true", help="print the IR after every pass")
    p.add_argument("--objective", choices=("rounds", "bytes", "time"),
                   help="what the comparisons pass minimises (default: time on --net)")
    p.add_argument("--net", help="network model for --objective time: lan (default), wan or RTT_ms,Gbit_per_s")
    p.add_argument("--clients", metavar="A,B", help="the plan's parties that do not compute (listed last)")
    p.set_defaults(parser=p, fn=cmd_compile)

    p = sub.add_parser("check", help="list every way a plan breaks a policy")
    p.add_argument("plan")
    p.add_argument("--policy", required=True, help="TOML policy")
    p.add_argument("--clients", metavar="A,B", help="the plan's parties that do not compute (listed last)")
    p.set_defaults(parser=p, fn=cmd_check)

    p = sub.add_parser("ops", help="list the op set; one op in full; or the torch functions planc lowers")
    p.add_argument("name", nargs="?", help="one op: signature, traits, torch sources, protocol, cost, bound, rules")
    p.add_argument("--torch", action="store_true", help="list supported torch functions, methods and nn modules")
    p.add_argument("--onnx", action="store_true", help="list the ONNX op types planc imports and their planc ops")
    p.set_defaults(parser=p, fn=cmd_ops)

    from .cli_cluster import add_commands  # worker, dealer, certs, search, cluster

    add_commands(sub)
    return ap


def parse_args(argv=None):
    """argparse, with unknown flags reported by the command they were given to (and the
    closest flag it has), then the checks of flags that exclude each other."""
    import difflib

    a, extra = build_parser().parse_known_args(argv)
    if extra:
        msg = f"unrecognized arguments: {' '.join(extra)}"
        flags = [o for act in a.parser._actions for o in act.option_strings]
        near = difflib.get_close_matches(extra[0].split("=")[0], flags, n=1) if extra[0].startswith("-") else []
        a.parser.error(msg + (f" (did you mean {near[0]}?)" if near else ""))
    check_usage(a)
    return a


def check_usage(a):
    """Flags that exclude each other: argparse's usage error (exit 2)."""
    if a.cmd == "run":
        if a.reference + a.local + bool(a.cluster) != 1:
            a.parser.error("choose one: --local runs every party on this machine over secret shares, "
                           "--cluster FILE on a cluster's workers, --reference runs the plan in plaintext")
        if a.processes and not a.local:
            a.parser.error("--processes runs the parties of --local in processes; it needs --local")
        if a.transport != "tls" and not a.processes:
            a.parser.error("--transport chooses how the processes of --local --processes talk; it needs --processes")
    if a.cmd == "ops" and a.name and a.torch:
        a.parser.error(f"give an op name or --torch, not both (`planc ops {a.name}` or `planc ops --torch`)")
    if a.cmd == "trace" and not a.target.endswith(".onnx") and (a.owner or a.tag or a.input_owner or a.reveal_to):
        a.parser.error("--owner, --tag, --input-owner and --reveal-to are for MODEL.onnx; in FILE.py say it "
                       "with planc.load/planc.owned/planc.reveal")
    if a.cmd == "ops" and a.onnx and (a.name or a.torch):
        a.parser.error("--onnx lists the ONNX op types alone; give no op name or --torch with it")


def check_arguments(a):
    """Before any work: every file to read exists (and has a type planc reads), every
    value planc can judge alone is valid, and every -o file can be created. CliError
    (exit 1) otherwise."""
    if a.cmd == "trace" and a.target.endswith(".onnx"):
        _need_file(a.target, "ONNX model")
    elif a.cmd == "trace":
        _need_python(_split_target(a.target)[0])
    elif hasattr(a, "plan"):
        _need_file(a.plan)
    for item in getattr(a, "data", None) or ():
        _need_data_file(item.partition("=")[2] if getattr(a, "cluster", None) else _split_data(item)[2],
                        f"--data {item!r}")
    for path in getattr(a, "input", None) or ():
        _need_data_file(path, "--input")
    if getattr(a, "policy", None):
        _need_file(a.policy, "policy file")
    if a.cmd == "show" and a.net is not None:
        from planc.cost import parse_net

        try:
            parse_net(a.net)
        except ValueError as e:
            raise CliError(str(e)) from None
    if getattr(a, "output", None) is not None:
        _need_output(a.output)


def main(argv=None) -> int:
    from planc.errors import TraceError, first_line
    from planc.ir.plan import PlanFormatError
    from planc.ir.policy import PolicyError
    from planc.ir.verify import VerifyError
    from planc.runtime.errors import PlanRuntimeError

    from planc.cluster import ClusterError

    a = parse_args(argv)
    if getattr(a, "daemon", False):  # planc worker / dealer: their own errors and exit codes
        return a.fn(a)
    try:
        check_arguments(a)
        return a.fn(a)
    except (CliError, TraceError, PlanFormatError, VerifyError, PlanRuntimeError, PolicyError, ClusterError) as e:
        if _debug():
            raise
        print(f"planc {a.cmd}: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout closed early (`planc ops | head`): nothing to report; keep the interpreter
        # from complaining again when it flushes stdout on exit
        with contextlib.suppress(Exception):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR
    except OSError as e:
        if _debug():
            raise
        if e.filename is None or not e.strerror:
            print(f"planc {a.cmd}: error: {first_line(e)} (set PLANC_DEBUG=1 to see the traceback)", file=sys.stderr)
        else:
            print(f"planc {a.cmd}: error: {e.filename}: {e.strerror}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:  # the last resort: a bug in planc, or a mistake nobody thought of
        if _debug():
            raise
        print(f"planc {a.cmd}: error: unexpected {first_line(e)} (set PLANC_DEBUG=1 to see the traceback)",
              file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
