"""Test helpers for the daemons: certificates, configurations, daemon subprocesses,
clients with a certificate, and a minimal orchestrator (submit to every party, start,
wait) — the server side's tests use them, and so can the cluster's.

Daemons are real subprocesses (``python -m planc.worker --config FILE``) on 127.0.0.1,
each on a free port it picks itself (``listen = "127.0.0.1:0"``) and writes to its
``address_file``; ``Daemon.start`` waits for that file, bounded, and fails with the
daemon's stderr if it exits first.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 60.0


# ---- certificates ------------------------------------------------------------------------------

def deployment(out_dir, names) -> dict:
    """{name: {"cert", "key"}} for `names`, signed by a fresh CA at out_dir/ca.pem."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        from planc.certs import make_deployment
    except ImportError:
        return _make_deployment(list(names), out_dir)
    return {k: {kk: str(vv) for kk, vv in v.items()} for k, v in make_deployment(list(names), out_dir).items()}


def _make_deployment(names, out_dir: Path) -> dict:
    """A stand-in for planc.certs.make_deployment (same contract), until that lands."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def pem_key(k):
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("planc test CA")).issuer_name(name("planc test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    (out_dir / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out = {}
    for n in names:
        k = ec.generate_private_key(ec.SECP256R1())
        c = (x509.CertificateBuilder().subject_name(name(n)).issuer_name(ca.subject).public_key(k.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=2))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                                                   x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
             .sign(ca_key, hashes.SHA256()))
        cert, key = out_dir / f"{n}.pem", out_dir / f"{n}.key"
        cert.write_bytes(c.public_bytes(serialization.Encoding.PEM))
        key.write_bytes(pem_key(k))
        os.chmod(key, 0o600)
        out[n] = {"cert": str(cert), "key": str(key)}
    return out


# ---- configurations ----------------------------------------------------------------------------

def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def write_config(path, *, name, cert, key, ca, catalogue=(), **keys) -> Path:
    """A daemon's TOML file: top-level `keys`, [tls], [[catalogue]] entries (dicts)."""
    path = Path(path)
    keys.setdefault("listen", "127.0.0.1:0")
    keys.setdefault("address_file", str(path.with_suffix(".addr")))
    keys.setdefault("log", str(path.with_suffix(".log")))
    keys.setdefault("outputs_dir", str(path.parent / f"{name}-out"))
    lines = [f"name = {_toml_value(name)}"] + [f"{k} = {_toml_value(v)}" for k, v in keys.items()]
    lines += ["[tls]", f"cert = {_toml_value(str(cert))}", f"key = {_toml_value(str(key))}",
              f"ca = {_toml_value(str(ca))}"]
    for e in catalogue:
        lines.append("[[catalogue]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in e.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


# ---- daemons -----------------------------------------------------------------------------------

class Daemon:
    """A daemon subprocess: `address` ("127.0.0.1:PORT"), `url`, `stop()`."""

    def __init__(self, config: Path, name: str):
        self.config = Path(config)
        self.name = name
        self.addr_file = self.config.with_suffix(".addr")
        self.stderr_path = self.config.with_suffix(".stderr")
        self.proc: subprocess.Popen | None = None
        self.address: str | None = None

    @classmethod
    def start(cls, config, name, timeout: float = START_TIMEOUT) -> "Daemon":
        d = cls(config, name)
        d.launch()
        d.wait_ready(timeout)
        return d

    def launch(self):
        if self.addr_file.exists():
            self.addr_file.unlink()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "planc.worker", "--config", str(self.config)],
                                     cwd=str(self.config.parent), stdout=subprocess.DEVNULL, stderr=self._err,
                                     env=env)

    def wait_ready(self, timeout: float = START_TIMEOUT):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.addr_file.exists():
                text = self.addr_file.read_text().strip()
                if text:
                    self.address = text
                    return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon {self.name} exited with {self.proc.returncode}:\n{self.stderr()}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"daemon {self.name} did not start within {timeout:g} s:\n{self.stderr()}")

    @property
    def url(self) -> str:
        return f"https://{self.address}"

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def log_lines(self) -> list[dict]:
        p = self.config.with_suffix(".log")
        return [json.loads(x) for x in p.read_text().splitlines() if x.strip()] if p.exists() else []

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._err.close()
        return self.proc.returncode


@contextlib.contextmanager
def running(configs: dict):
    """{name: config path} started at once (each start costs 2-3 s: they overlap), waited
    for, yielded as {name: Daemon}, and stopped whatever happens."""
    ds = {k: Daemon(v, k) for k, v in configs.items()}
    for x in ds.values():
        x.launch()
    try:
        for x in ds.values():
            x.wait_ready()
        yield ds
    finally:
        for x in ds.values():
            x.stop()


# ---- clients -----------------------------------------------------------------------------------

def client_context(cert=None, key=None, ca=None) -> ssl.SSLContext:
    """A TLS client context that trusts `ca` only and presents cert/key (if given)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def client(daemon: Daemon, ident: dict | None, ca, timeout: float = 60.0) -> httpx.Client:
    """An httpx client to `daemon` as the identity {"cert", "key"} (None: no certificate)."""
    ctx = client_context(ident["cert"] if ident else None, ident["key"] if ident else None, ca)
    return httpx.Client(base_url=daemon.url, verify=ctx, timeout=timeout)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def tensors_b64(ts: dict) -> str:
    from safetensors.torch import save

    return b64(save({k: v.contiguous() for k, v in ts.items()}))


def read_message(data: bytes):
    """The reveals body: 8-byte header length, JSON header, safetensors."""
    from safetensors.torch import load

    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n]), (load(data[8 + n:]) if len(data) > 8 + n else {})


# ---- a minimal orchestrator --------------------------------------------------------------------

def submission(plan_bytes: bytes, run_id: str, party: str, parties: dict, dealer: str, *, clients=None,
               timeout: float = 60.0, inputs=None, client_shares=None) -> dict:
    return {"run_id": run_id, "plan": b64(plan_bytes), "party": party, "parties": parties,
            "clients": clients or {}, "dealer": dealer, "timeout": timeout,
            "inputs": tensors_b64({str(i): t for i, t in enumerate(inputs)}) if inputs else None,
            "client_shares": tensors_b64(client_shares) if client_shares else None}


def run_plan(plan_bytes: bytes, run_id: str, workers: dict, dealer, conns: dict, *, timeout: float = 60.0,
             wait: float = 120.0, inputs=None, clients=None, client_shares=None) -> dict:
    """Run a plan on daemons: `workers` {plan party: Daemon}, `dealer` a Daemon, `conns`
    {daemon name: httpx.Client of the submitter}; `clients` {client plan party: identity},
    `client_shares` {plan party: {value name: int64 share}}. Returns {party or "dealer":
    final run JSON}."""
    parties = {p: d.name for p, d in workers.items()}
    order = list(workers) + ["dealer"]
    daemons = {**workers, "dealer": dealer}
    ports = {}
    for p in order:
        body = submission(plan_bytes, run_id, p, parties, dealer.name, timeout=timeout, inputs=inputs,
                          clients=clients, client_shares=(client_shares or {}).get(p))
        r = conns[daemons[p].name].post("/v1/runs", json=body)
        assert r.status_code == 201, (p, r.status_code, r.text)
        assert r.json()["state"] == "accepted", r.json()
        ports[p] = r.json()["data_port"]
    peers = {str(i): {"host": "127.0.0.1", "port": ports[p], "identity": daemons[p].name}
             for i, p in enumerate(order)}
    for p in order:
        r = conns[daemons[p].name].post(f"/v1/runs/{run_id}/start", json={"peers": peers})
        assert r.status_code == 200, (p, r.status_code, r.text)
    out = {}
    end = time.monotonic() + wait
    for p in order:
        while True:
            r = conns[daemons[p].name].get(f"/v1/runs/{run_id}", params={"wait": 10})
            assert r.status_code == 200, r.text
            d = r.json()
            if d["state"] in ("done", "failed", "cancelled", "expired", "refused"):
                out[p] = d
                break
            assert time.monotonic() < end, f"{p}: run {run_id} still {d['state']} after {wait} s"
    return out


def collect_reveals(conn: httpx.Client, run_id: str) -> dict:
    """What one computing party kept for the calling client: {value name: entry} in the
    form runtime.clients.ClientRun.finish takes ({"share", "extra", "dtype"} or {"plain", "dtype"})."""
    r = conn.get(f"/v1/runs/{run_id}/reveals")
    assert r.status_code == 200, (r.status_code, r.text)
    header, ts = read_message(r.content)
    out = {}
    for name, h in header.items():
        if h["kind"] == "plain":
            out[name] = {"plain": ts[name], "dtype": h["dtype"]}
        else:
            out[name] = {"share": ts[name], "extra": h["extra"], "dtype": h["dtype"]}
    return out
