"""The command line across machines: the daemons, certificates, and the orchestrator's
commands on a cluster (planc/cluster.py).

    planc worker --config alice.toml        a data owner's daemon (planc/worker/cli.py)
    planc worker approve RUN|HASH --config alice.toml
    planc dealer --config dealer.toml       the dealer's daemon
    planc certs --parties alice,bob,dealer,orchestrator -o certs/
    planc search --cluster cluster.toml [TEXT]
    planc cluster status --cluster cluster.toml
    planc run x.plan --cluster cluster.toml [--data TAG=FILE]
"""
from __future__ import annotations

import argparse


def add_commands(sub) -> None:
    """The subcommands of this module, on planc's subparsers."""
    from .worker.cli import add_arguments as daemon_arguments
    from .worker.cli import main as daemon_main

    for role, text in (("worker", "serve a party's data and run plans it accepts (a data owner's daemon)"),
                       ("dealer", "serve correlated randomness to runs (the dealer's daemon)")):
        p = sub.add_parser(role, help=text)
        daemon_arguments(p, role)
        p.set_defaults(parser=p, fn=daemon_main, daemon=True)

    p = sub.add_parser("certs", help="make a deployment's CA and a certificate per party")
    p.add_argument("--parties", required=True, help="comma-separated names: workers, the dealer and clients")
    p.add_argument("-o", "--out", required=True, help="directory for ca.pem, NAME.pem and NAME.key")
    p.add_argument("--hosts", default="127.0.0.1,localhost",
                   help="comma-separated addresses and host names the daemons serve at (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(parser=p, fn=cmd_certs)

    p = sub.add_parser("search", help="search the catalogues of a cluster's workers (metadata, never values)")
    p.add_argument("query", nargs="?", help="text in a tag, description or metadata (default: everything)")
    p.add_argument("--cluster", required=True, help="cluster.toml: identity, workers and dealer")
    p.set_defaults(parser=p, fn=cmd_search)

    p = sub.add_parser("cluster", help="the state of a cluster's daemons")
    p.add_argument("action", choices=["status"])
    p.add_argument("--cluster", required=True, help="cluster.toml")
    p.set_defaults(parser=p, fn=cmd_cluster)


def _cluster(path):
    from .cluster import Cluster

    return Cluster.from_config(path)


def cmd_certs(a) -> int:
    from .certs import certs_main

    return certs_main(a) or 0


def cmd_search(a) -> int:
    from rich.table import Table

    from planc.runtime.report import render

    with _cluster(a.cluster) as c:
        entries = c.search(a.query)
    t = Table(title=f"catalogue entries matching {a.query!r}" if a.query else "catalogue", title_justify="left")
    for col in ("worker", "tag", "dtype", "shape", "description"):
        t.add_column(col)
    for e in entries:
        t.add_row(e.worker, e.tag, e.dtype, "[" + ",".join(map(str, e.shape)) + "]", e.description)
    print(render(t, width=120), end="")
    if not entries:
        print("no entries")
    return 0


def cmd_cluster(a) -> int:
    from rich.table import Table

    from planc.runtime.report import render

    from .cluster import ClusterError

    with _cluster(a.cluster) as c:
        got = c.status()
        t = Table(title="cluster", title_justify="left")
        for col in ("daemon", "role", "address", "state", "uptime", "active", "pending", "runs", "last run"):
            t.add_column(col)
        bad = 0
        for name, s in got.items():
            if isinstance(s, ClusterError):
                bad += 1
                t.add_row(name, "?", c.urls[name], "unreachable", "-", "-", "-", "-", s.problem[:60])
                continue
            runs = s.get("runs") or []
            last = runs[-1] if runs else None
            t.add_row(name, s.get("role", "?"), c.urls[name], "up", f"{s.get('uptime_s', 0):.0f} s",
                      str(s.get("active", 0)), str(s.get("pending", 0)), str(len(runs)),
                      f"{last['run_id']} {last.get('state')}" if last else "-")
    print(render(t, width=140), end="")
    return 1 if bad else 0


def run_on_cluster(a, plan, inputs, con) -> dict:
    """`planc run x.plan --cluster cluster.toml`: this client's outputs (what it was
    revealed) printed and returned as {name: tensor} for -o."""
    from planc.weights import read_tensors

    data = {}
    for item in a.data or ():
        tag, sep, path = item.partition("=")
        if not sep or ":" in tag:
            raise argparse.ArgumentTypeError(f"--data {item!r}: with --cluster give TAG=FILE (this client's own "
                                             "data; the workers hold theirs)")
        ts = read_tensors(path)
        data[tag] = next(iter(ts.values())) if len(ts) == 1 else ts
    with _cluster(a.cluster) as c:
        res = c.run(plan, data=data, inputs=inputs, timeout=a.timeout, progress=True)
    g = plan.graph
    saved = {}
    for i, (v, o) in enumerate(zip(g.outputs, res.outputs)):
        con.print(f"output {i}: {v.type}", markup=False)
        if o is None:
            kept = [f"{w}: {x['kind']}" + (f" {x.get('handle') or x.get('path') or ''}".rstrip())
                    for w, outs in res.kept.items() for x in (outs or []) if x.get("index") == i and x["kind"] != "none"]
            con.print(f"  not revealed to {c.name}" + (f" (kept at {'; '.join(kept)})" if kept else ""),
                      markup=False)
        else:
            con.print(f"  {o}", markup=False)
            saved[f"output{i}"] = o.contiguous()
    res.summary()
    return saved
