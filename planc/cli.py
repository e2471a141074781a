"""The `planc` command line: trace, show, graph, run, ops.

Every failure the user can cause ends as one clear message and a non-zero status;
set PLANC_DEBUG=1 to see Python tracebacks as well.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

EXIT_USAGE, EXIT_ERROR = 2, 1


class CliError(Exception):
    pass


def _console():
    from rich.console import Console

    # pipes get a wide console: file paths and types should not wrap mid-word
    width = None if sys.stdout.isatty() else 160
    return Console(highlight=False, soft_wrap=True, width=width)


# ------------------------------------------------------------------ trace


def _import_file(path: str):
    p = Path(path)
    if not p.is_file():
        raise CliError(f"{path}: no such file")
    name = "_planc_user_" + "".join(c if c.isalnum() else "_" for c in p.stem)
    spec = importlib.util.spec_from_file_location(name, p)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    sys.path.insert(0, str(p.resolve().parent))
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.pop(0)
    return mod


def load_target(ref: str):
    """`file.py:obj` -> a Plan, tracing the object as needed."""
    import planc
    from planc.ir.plan import Plan

    if ":" not in ref:
        raise CliError(f"{ref}: expected FILE.py:OBJECT, e.g. examples/mnist_cnn.py:encrypted_inference")
    path, _, attr = ref.rpartition(":")
    mod = _import_file(path)
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CliError(f"{path} has no object {attr!r}")
        obj = getattr(obj, part)
    if isinstance(obj, Plan):
        return obj
    if isinstance(obj, planc.PlanFunction):
        return obj.plan
    if callable(obj):
        return planc.trace(obj)
    raise CliError(f"{ref} is a {type(obj).__name__}; expected a @planc.plan function, a function or a Plan")


def cmd_trace(a):
    plan = load_target(a.target)
    if a.name:
        from dataclasses import replace

        plan.graph = replace(plan.graph, name=a.name)
    plan.save(a.output)
    print(f"wrote {a.output}  ({len(plan.to_bytes())} bytes, sha256 {plan.sha256()})")
    return 0


# ------------------------------------------------------------------ show


def _read_plan(path):
    from planc.ir.plan import Plan

    if not Path(path).is_file():
        raise CliError(f"{path}: no such file")
    return Plan.read(path)


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
    for node, pc in c.per_node:
        any_cost = next(iter(pc.values()))
        t.add_row(f"{node.op} {node.results[0] if node.results else ''}", str(node.loc or ""), str(any_cost.rounds),
                  *[_mib(pc[p].bytes_sent) if p in pc else "0 B" for p in parties])
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
            raise CliError(f"dot failed: {r.stderr.decode(errors='replace').strip()}")
    print(f"wrote {out}")
    return 0


# ------------------------------------------------------------------ run


def parse_data_args(items, parties):
    """`PARTY:TAG=FILE` (one tensor) or `PARTY=FILE.safetensors` (every tensor, by name)."""
    from planc.weights import read_tensors

    data: dict[str, dict] = {}
    for item in items or ():
        left, eq, path = item.partition("=")
        if not eq or not path:
            raise CliError(f"--data {item!r}: expected PARTY:TAG=FILE or PARTY=FILE.safetensors")
        party, _, tag = left.partition(":")
        if party not in parties:
            raise CliError(f"--data {item!r}: no party {party!r} in this plan; parties are {', '.join(parties)}")
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
    if a.reference == a.local:
        raise CliError("choose one: --local runs every party on this machine over secret shares, "
                       "--reference runs the plan in plaintext")
    data = parse_data_args(a.data, g.parties)
    inputs = []
    for path in a.input or ():
        ts = read_tensors(path)
        if len(ts) != 1:
            raise CliError(f"--input {path}: expected exactly one tensor, found {len(ts)}")
        inputs.append(next(iter(ts.values())))
    con = _console()
    torch.set_printoptions(precision=4, threshold=20, edgeitems=3)
    if a.reference:
        from planc.runtime.reference import run_reference

        outs = run_reference(g, data=data, constants=plan.constants, inputs=inputs)
        for i, (v, t) in enumerate(zip(g.outputs, outs)):
            con.print(f"output {i}: {v.type}  -> {_holder(g, v.type)}", markup=False)
            con.print(f"  {t}", markup=False)
        saved = {f"output{i}": t.contiguous() for i, t in enumerate(outs)}
    else:
        res = _run_local_with_progress(plan, data, inputs, a, con)
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


def _run_local_with_progress(plan, data, inputs, a, con):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from planc.runtime.local import run_local

    policy = _policy(a.policy) if a.policy else None
    if a.processes or not sys.stderr.isatty():
        return run_local(plan, data, inputs=inputs, processes=a.processes, timeout=a.timeout, policy=policy)
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


def _policy(path):
    from planc.ir.policy import DEFAULT, Policy

    if not path:
        return DEFAULT
    if not Path(path).is_file():
        raise CliError(f"{path}: no such policy file")
    try:
        return Policy.read(path)
    except ValueError as e:
        raise CliError(str(e)) from None


def cmd_compile(a):
    from planc.compile import compile
    from planc.passes import DEFAULT_PIPELINE
    from planc.passes.base import PipelineError

    plan = _read_plan(a.plan)
    try:
        out = compile(plan, a.pipeline or DEFAULT_PIPELINE, policy=_policy(a.policy),
                      print_after_all=a.print_after_all, out=sys.stdout)
    except PipelineError as e:
        raise CliError(str(e)) from None
    out.save(a.output)
    before = sum(1 for _ in plan.graph.walk())
    after = sum(1 for _ in out.graph.walk())
    print(f"wrote {a.output}  ({before} -> {after} nodes, {len(plan.to_bytes())} -> {len(out.to_bytes())} bytes, "
          f"sha256 {out.sha256()})")
    return 0


def cmd_check(a):
    from planc.ir.policy import PolicyError

    plan = _read_plan(a.plan)
    pol = _policy(a.policy)
    problems = pol.violations(plan.graph)
    if problems:
        print(PolicyError(problems, f"policy {pol.name!r}"), file=sys.stderr)
        return EXIT_ERROR
    print(f"ok: {a.plan} satisfies policy {pol.name!r}")
    return 0


# ------------------------------------------------------------------ ops


def cmd_ops(a):
    from rich.table import Table

    from planc import opsinfo
    from planc.ir import ops

    con = _console()
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


def build_parser():
    ap = argparse.ArgumentParser(prog="planc", description="Trace PyTorch into plans for private ML; inspect and run them.")
    ap.add_argument("--version", action="version", version=_version())
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("trace", help="trace FILE.py:OBJECT into a plan file")
    p.add_argument("target", metavar="FILE.py:OBJECT")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--name", help="name of the plan (default: the function's)")
    p.set_defaults(fn=cmd_trace)

    p = sub.add_parser("show", help="header, IR, inputs and outputs per party, captured constants, op histogram")
    p.add_argument("plan")
    p.add_argument("--no-ir", action="store_true", help="leave out the printed IR")
    p.add_argument("--cost", action="store_true", help="rounds, bytes, dealer material and memory, per node and total")
    p.add_argument("--net", help="network model for the time estimate: lan (default), wan or RTT_ms,Gbit_per_s; "
                                 "implies --cost")
    p.set_defaults(fn=cmd_show)

    p = sub.add_parser("graph", help="draw the graph coloured by visibility (Graphviz)")
    p.add_argument("plan")
    p.add_argument("-o", "--output", required=True, help="x.svg, x.png, x.pdf or x.dot")
    p.set_defaults(fn=cmd_graph)

    p = sub.add_parser("run", help="run a plan")
    p.add_argument("plan")
    p.add_argument("--local", action="store_true", help="every party (and the dealer) on this machine, over shares")
    p.add_argument("--processes", action="store_true", help="with --local: one process per party (torch.distributed)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds any party waits for a message")
    p.add_argument("--policy", help="refuse to run a plan that breaks this TOML policy")
    p.add_argument("--reference", action="store_true", help="plaintext reference runtime on this machine")
    p.add_argument("--data", action="append", metavar="PARTY:TAG=FILE",
                   help="a party's tensor (.safetensors/.npy); PARTY=FILE.safetensors loads every tensor by name")
    p.add_argument("--input", action="append", metavar="FILE", help="public inputs in order")
    p.add_argument("-o", "--output", help="write the outputs to a safetensors file")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("compile", help="run compiler passes over a plan")
    p.add_argument("plan")
    p.add_argument("-o", "--output", required=True)
    from planc.passes import DEFAULT_PIPELINE

    p.add_argument("-p", "--pipeline", help=f"comma-separated passes (default: {DEFAULT_PIPELINE})")
    p.add_argument("--policy", help="TOML policy the plan must satisfy")
    p.add_argument("--print-after-all", action="store_true", help="print the IR after every pass")
    p.set_defaults(fn=cmd_compile)

    p = sub.add_parser("check", help="list every way a plan breaks a policy")
    p.add_argument("plan")
    p.add_argument("--policy", required=True, help="TOML policy")
    p.set_defaults(fn=cmd_check)

    p = sub.add_parser("ops", help="list the op set; one op in full; or the torch functions planc lowers")
    p.add_argument("name", nargs="?", help="one op: signature, traits, torch sources, protocol, cost, bound, rules")
    p.add_argument("--torch", action="store_true", help="list supported torch functions, methods and nn modules")
    p.set_defaults(fn=cmd_ops)
    return ap


def main(argv=None) -> int:
    from planc.errors import TraceError
    from planc.ir.plan import PlanFormatError
    from planc.ir.policy import PolicyError
    from planc.ir.verify import VerifyError
    from planc.runtime.errors import PlanRuntimeError

    a = build_parser().parse_args(argv)
    try:
        return a.fn(a)
    except (CliError, TraceError, PlanFormatError, VerifyError, PlanRuntimeError, PolicyError) as e:
        if os.environ.get("PLANC_DEBUG"):
            raise
        print(f"planc {a.cmd}: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
