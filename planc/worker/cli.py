"""The command line of the daemons: ``planc worker``, ``planc dealer`` and the owner's
commands ``approve``, ``pending`` and ``status`` (also ``python -m planc.worker``).

    planc worker --config alice.toml            serve (flags override the file's keys)
    planc worker --name alice --listen 127.0.0.1:4000 --cert a.pem --key a.key --ca ca.pem \\
                 --data mnist/test=images.safetensors --approval manual
    planc worker approve RUN|HASH [--limit N] --config alice.toml
    planc worker pending --config alice.toml
    planc worker status --config alice.toml
    planc dealer --config dealer.toml

The owner's commands talk to the running daemon over its own API with the daemon's own
identity (the certificate in the configuration), which may always approve; the
address is the configuration's ``address_file`` if it exists, else ``listen``.

A problem with the configuration or the flags is one line on stderr and exit 2; a
refusal from the daemon is its message and exit 1. For planc/cli.py:
``add_arguments(parser, role)`` fills a subparser and ``main(args)`` runs it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys

from .config import ConfigError

EXIT_USAGE, EXIT_ERROR = 2, 1
HASH = re.compile(r"[0-9a-f]{64}")


def add_arguments(parser: argparse.ArgumentParser, role: str = "worker") -> None:
    """Flags of `planc worker` (role "worker") or `planc dealer` (role "dealer")."""
    parser.set_defaults(expect_role=role, action=None)
    parser.add_argument("--config", metavar="FILE", help="the daemon's TOML configuration")
    g = parser.add_argument_group("overrides (replace the configuration's keys)")
    g.add_argument("--name", help="identity: the certificate's common name")
    g.add_argument("--listen", metavar="HOST:PORT", help="address of the HTTPS API (port 0: a free one)")
    g.add_argument("--address-file", metavar="FILE", help="write the chosen HOST:PORT here once serving")
    g.add_argument("--cert", metavar="FILE")
    g.add_argument("--key", metavar="FILE")
    g.add_argument("--ca", metavar="FILE", help="the deployment's CA certificate (the only trust root)")
    g.add_argument("--policy", metavar="FILE", help="policy TOML (default: the default policy)")
    g.add_argument("--approval", choices=("auto", "manual"))
    g.add_argument("--client", dest="clients", action="append", metavar="IDENTITY",
                   help="an identity allowed to submit runs (repeatable; replaces `clients`)")
    if role == "worker":
        g.add_argument("--data", action="append", metavar="TAG=FILE",
                       help="a catalogue entry (repeatable; replaces the file's [[catalogue]])")
    sub = parser.add_subparsers(dest="action", metavar="{approve,pending,status}")
    a = sub.add_parser("approve", help="approve a pending run, or a plan hash for N runs")
    a.add_argument("target", metavar="RUN|HASH", help="a run id, or a plan file's sha256 (64 hex digits)")
    a.add_argument("--limit", type=int, default=None, help="with a hash: how many runs (default: no limit)")
    a.add_argument("--run", action="store_true", help="TARGET is a run id even if it looks like a hash")
    for name, text in (("pending", "list runs waiting for approval"), ("status", "the daemon's runs")):
        sub.add_parser(name, help=text)
    for p in sub.choices.values():
        p.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS)


def _fail(code: int, role: str, msg: str) -> int:
    print(f"planc {role}: error: {msg}", file=sys.stderr)
    return code


def configuration(args):
    """The Config of `args`: the file, then the flags (ConfigError for any problem)."""
    from . import config

    cfg = config.read(args.config) if getattr(args, "config", None) else None
    role = getattr(args, "expect_role", None)
    if cfg is None and role is not None:
        args.role = role
    cfg = config.override(cfg, args)
    if role is not None and cfg.role != role:
        raise ConfigError(cfg.source, "role", f"this configuration is for a {cfg.role}; start it with "
                                              f"`planc {cfg.role}`")
    return cfg


def build(cfg):
    """The Daemon of a configuration: identity, policy, catalogue, log (ConfigError)."""
    from .catalogue import Catalogue
    from .daemon import Daemon
    from .log import Log
    from .server import load_identity

    try:
        identity = load_identity(cfg)
    except Exception as e:  # noqa: BLE001 — a bad certificate or key is a configuration problem
        raise ConfigError(cfg.source, "tls", f"cannot load the certificate, key and CA: {type(e).__name__}: "
                                             f"{e}") from None
    if getattr(identity, "name", cfg.name) != cfg.name:
        raise ConfigError(cfg.source, "name", f"{cfg.name!r}, but the certificate {str(cfg.cert)!r} is for "
                                              f"{identity.name!r}")
    from planc.ir.policy import DEFAULT, Policy, PolicyFileError

    if cfg.policy is not None:
        try:
            policy = Policy.read(cfg.policy)
        except PolicyFileError as e:
            raise ConfigError(cfg.source, "policy", str(e)) from None
        sha = hashlib.sha256(cfg.policy.read_bytes()).hexdigest()
    else:
        policy = DEFAULT
        sha = hashlib.sha256(json.dumps(DEFAULT.to_dict(), sort_keys=True).encode()).hexdigest()
    catalogue = Catalogue.build(cfg.catalogue, cfg.name, cfg.source) if cfg.role == "worker" else None
    try:
        log = Log(cfg.name, cfg.log)
    except OSError as e:
        raise ConfigError(cfg.source, "log", f"cannot open {str(cfg.log)!r}: {e.strerror}") from None
    return Daemon(cfg, identity, catalogue, policy, sha, log)


def main(args) -> int:
    role = getattr(args, "expect_role", None) or "worker"
    try:
        cfg = configuration(args)
        if args.action is not None:
            return _owner_command(cfg, args)
        daemon = build(cfg)
    except ConfigError as e:
        return _fail(EXIT_USAGE, role, str(e))
    import torch

    from .app import make_app
    from .server import serve

    torch.set_num_threads(cfg.threads)
    try:
        serve(daemon, make_app(daemon))
    except OSError as e:
        return _fail(EXIT_ERROR, role, f"cannot serve on {cfg.listen}: {e.strerror or e}")
    return 0


# ---- the owner's commands, over the daemon's API ------------------------------------------

def address(cfg) -> str:
    if cfg.address_file is not None and cfg.address_file.exists():
        return cfg.address_file.read_text().strip()
    if cfg.port == 0:
        raise ConfigError(cfg.source, "listen", "port 0 and no address_file to say which port the daemon chose")
    return cfg.listen


def client(cfg, timeout: float = 30.0):
    """An httpx client speaking to the daemon with the daemon's own identity."""
    import httpx

    from .server import load_identity

    ctx = load_identity(cfg).client_context()
    return httpx.Client(base_url=f"https://{address(cfg)}", verify=ctx, timeout=timeout)


def _owner_command(cfg, args) -> int:
    import httpx

    role = cfg.role
    try:
        with client(cfg) as c:
            if args.action == "approve":
                t = args.target
                body = {"run_id": t} if args.run or not HASH.fullmatch(t) else {"plan_hash": t, "limit": args.limit}
                if "run_id" in body and args.limit is not None:
                    raise ConfigError("command line", "--limit", "only with a plan hash")
                r = c.post("/v1/approve", json=body)
            elif args.action == "pending":
                r = c.get("/v1/pending")
            else:
                r = c.get("/v1/status")
    except httpx.HTTPError as e:
        return _fail(EXIT_ERROR, role, f"cannot reach the daemon: {type(e).__name__}: {e}")
    try:
        d = r.json()
    except ValueError:
        return _fail(EXIT_ERROR, role, f"the daemon answered {r.status_code} without JSON")
    if r.status_code >= 400:
        err = d.get("error", {}) if isinstance(d, dict) else {}
        return _fail(EXIT_ERROR, role, f"{err.get('message', r.text)} (rule {err.get('rule')})")
    print(json.dumps(d, indent=2))
    return 0


def entry(argv=None) -> int:
    """``python -m planc.worker [dealer] ...``: the same as ``planc worker`` / ``planc dealer``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    role = None  # without one, serve whichever role the configuration says
    if argv and argv[0] in ("worker", "dealer"):
        role = argv.pop(0)
    parser = argparse.ArgumentParser(prog=f"planc {role or 'worker'}", description="a planc daemon")
    add_arguments(parser, role or "worker")
    args = parser.parse_args(argv)
    args.expect_role = role
    return main(args)
