"""A deployment's certificates: its own CA and one key + certificate per party.

Every party of a deployment (workers, the dealer, clients, the orchestrator) proves its
name with a certificate signed by the deployment's CA; the CA is the only trust root of
the TLS transport (runtime/comm/tls.py) and of the daemons' HTTPS API. The CN of a
certificate is the party's name; its SANs also name the hosts it serves at, so the same
certificate works for an HTTPS server on 127.0.0.1.

    planc certs --parties alice,bob,dealer,client -o certs/ [--hosts 10.0.0.5,box] [--force]

writes ca.pem, ca.key (0600) and NAME.pem, NAME.key (0600). The X.509 building itself
is in the runtime (`planc.runtime.comm.identity.new_ca` / `new_identity`), which also makes
throwaway deployments for local runs; this module adds files, checks and the command.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from planc.runtime.comm.identity import cert_name, new_ca, new_identity

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
HOSTS = ("127.0.0.1", "localhost")


def check_name(name) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name) or name == "ca":
        raise ValueError(f"bad party name {name!r}: expected 1 to 64 of A-Z a-z 0-9 _ . - (not starting with . or -, "
                         f"and not 'ca', which names the CA's files)")
    return name


def _write(path: Path, data: bytes, secret: bool):
    # keys are created 0600 from the start (never readable by others, even briefly)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    try:
        if secret:
            os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


def _refuse_existing(paths, force):
    if force:
        return
    there = [str(p) for p in paths if p.exists()]
    if there:
        raise FileExistsError(f"{', '.join(there)} exist{'s' if len(there) == 1 else ''}: refusing to overwrite "
                              f"(use force=True / --force)")


def _hosts(hosts):
    if isinstance(hosts, str):
        hosts = [h.strip() for h in hosts.split(",")]
    return tuple(h for h in hosts if h)


def make_deployment(names, out_dir, *, ca_name: str = "planc-ca", days: int = 365, hosts=HOSTS,
                    force: bool = False) -> dict:
    """A fresh CA and a certificate per name in out_dir; {name: {"cert": path, "key": path}}."""
    names = [check_name(n) for n in names]
    if len(set(names)) != len(names):
        raise ValueError(f"names given twice: {sorted({n for n in names if names.count(n) > 1})}")
    if not names:
        raise ValueError("no party names")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "ca.pem", out / "ca.key"] + [out / f"{n}.{e}" for n in names for e in ("pem", "key")]
    _refuse_existing(files, force)  # all checked before anything is written
    ca_cert, ca_key = new_ca(ca_name, days)
    _write(out / "ca.pem", ca_cert, False)
    _write(out / "ca.key", ca_key, True)
    return {n: _issue(n, out, ca_cert, ca_key, days, _hosts(hosts), force) for n in names}


def _issue(name, out: Path, ca_cert, ca_key, days, hosts, force) -> dict:
    cert, key = out / f"{name}.pem", out / f"{name}.key"
    _refuse_existing([cert, key], force)
    c, k = new_identity(ca_cert, ca_key, name, hosts, days)
    _write(key, k, True)
    _write(cert, c, False)
    return {"cert": str(cert), "key": str(key)}


def add_party(name, out_dir, *, days: int = 365, hosts=HOSTS, force: bool = False) -> dict:
    """One more certificate signed by the CA already in out_dir."""
    out = Path(out_dir)
    check_name(name)
    try:
        ca_cert, ca_key = (out / "ca.pem").read_bytes(), (out / "ca.key").read_bytes()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e.filename}: no CA there (make one with make_deployment / planc certs)") from None
    return _issue(name, out, ca_cert, ca_key, days, _hosts(hosts), force)


def identity_name(cert_pem_path) -> str:
    """The CN of a certificate: the party name it proves."""
    return cert_name(cert_pem_path)


def certs_main(args) -> int:
    """`planc certs`: args.parties (comma-separated), args.out, args.hosts (comma-separated
    or a list; default 127.0.0.1,localhost), args.force."""
    names = [n.strip() for n in args.parties.split(",") if n.strip()]
    hosts = getattr(args, "hosts", None) or HOSTS
    made = make_deployment(names, args.out, hosts=hosts, force=bool(getattr(args, "force", False)))
    out = Path(args.out)
    print(f"CA: {out / 'ca.pem'} (its key {out / 'ca.key'}: keep it offline)")
    for n, p in made.items():
        print(f"{n}: {p['cert']} {p['key']}")
    print(f"hosts in every certificate: {', '.join(_hosts(hosts))}")
    return 0
