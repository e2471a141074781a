"""A worker's (or the dealer's) configuration: one TOML file, checked key by key.

The daemon is started by people who are not its authors, often on a machine they
reach only through a terminal: a mistake in the file must say where it is and what
was expected, in one line, never a traceback — ``alice.toml: tls.cert: no such file
'certs/alice.pem'``. So every key is read by hand with its type and range, unknown keys
are refused (a misspelt ``aproval`` silently giving the default would be a security
problem), and every path is taken relative to the file, so a deployment directory can
be moved as a whole. Command-line flags (``--name``, ``--listen``, ``--data TAG=FILE``)
override single keys; they are checked the same way, with ``--flag`` as their "key".

Nothing here opens a socket or reads a data file beyond stat: the catalogue reads the
headers of its files (catalogue.py), the server binds (server.py).
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROLES = ("worker", "dealer")
APPROVALS = ("auto", "manual")
TRANSPORTS = ("tls", "gloo")
IDENTITY = re.compile(r"[A-Za-z0-9_.@-]{1,128}")  # a certificate CN as planc.certs makes them
TAG = re.compile(r"[^\x00-\x1f\x7f]{1,512}")
_UNITS = {"b": 1, "kb": 10 ** 3, "mb": 10 ** 6, "gb": 10 ** 9, "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30}
DEFAULT_MAX_BODY = 64 * 2 ** 20
MAX_THREADS = 256

KEYS = ("name", "role", "listen", "address_file", "data_host", "policy", "approval", "clients", "admins", "peers",
        "transport", "threads", "max_body", "log", "outputs_dir", "max_runs", "tls", "catalogue", "uploads",
        "models_dir", "serving")
TLS_KEYS = ("cert", "key", "ca")
ENTRY_KEYS = ("tag", "file", "key", "description", "meta")


class ConfigError(ValueError):
    """A configuration problem: `source` the file (or "command line"), `key` the key or
    flag at fault, `problem` what is wrong. str(): ``source: key: problem``."""

    def __init__(self, source: str, key: str | None, problem: str):
        self.source, self.key, self.problem = source, key, problem
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")


@dataclass(frozen=True)
class EntrySpec:
    """One [[catalogue]] entry as configured (the file is read by catalogue.py)."""

    tag: str
    file: Path
    key: str | None = None
    description: str = ""
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    name: str
    role: str = "worker"
    host: str = "127.0.0.1"
    port: int = 0
    address_file: Path | None = None
    data_host: str = "127.0.0.1"
    policy: Path | None = None  # None: the default policy
    approval: str = "auto"
    clients: tuple = ()
    admins: tuple = ()
    peers: tuple = ()
    uploads: tuple = ()  # identities that may upload models into the catalogue (POST /v1/models)
    models_dir: Path | None = None  # where uploaded models are kept (default: outputs_dir/models)
    transport: str = "tls"
    threads: int = 1
    max_body: int = DEFAULT_MAX_BODY
    log: Path | None = None
    outputs_dir: Path = Path("out")
    max_runs: int = 100
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    catalogue: tuple = ()  # EntrySpec
    serving: object = None  # serving.ServingConfig: the [serving] table (None: no model serving)
    source: str = "command line"

    @property
    def listen(self) -> str:
        return f"{self.host}:{self.port}"

    def allowed(self, who: str | None) -> bool:
        """May `who` use this daemon's API at all (info, catalogue, submit)?"""
        return who is not None and (who == self.name or who in self.clients or who in self.admins
                                    or who in self.peers or who in self.uploads)

    def admin(self, who: str | None) -> bool:
        return who is not None and (who == self.name or who in self.admins)


def show(v) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "a table"}
    kind = next((k for t, k in kinds.items() if type(v) is t), type(v).__name__)
    text = repr(v)
    return f"{text[:57] + '...' if len(text) > 60 else text} ({kind})"


def parse_address(text, bad, key) -> tuple[str, int]:
    """``host:port`` -> (host, port); port 0 picks a free one."""
    if not isinstance(text, str) or ":" not in text:
        raise bad(key, f"expected \"HOST:PORT\" (e.g. \"127.0.0.1:4000\"; port 0 picks a free one), got {show(text)}")
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise bad(key, f"expected \"HOST:PORT\" with a port from 0 to 65535, got {show(text)}")
    return host, int(port)


def parse_size(v, bad, key) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        n = v
    elif isinstance(v, str):
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", v.replace("_", ""))
        if not m or m.group(2).lower() not in _UNITS | {"": 1}:
            raise bad(key, f"expected a size such as \"64 MiB\" (units B, kB, MB, GB, KiB, MiB, GiB), got {show(v)}")
        n = int(float(m.group(1)) * (_UNITS.get(m.group(2).lower(), 1)))
    else:
        raise bad(key, f"expected a size in bytes (an integer or a string such as \"64 MiB\"), got {show(v)}")
    if not 1024 <= n <= 2 ** 34:
        raise bad(key, f"expected a size from 1 KiB to 16 GiB, got {n:,} bytes")
    return n


def _identity(v, bad, key) -> str:
    if not isinstance(v, str) or not IDENTITY.fullmatch(v):
        raise bad(key, f"expected an identity (a certificate's common name: 1 to 128 of A-Z a-z 0-9 _ . @ -), "
                       f"got {show(v)}")
    return v


def _identities(v, bad, key) -> tuple:
    if not isinstance(v, list):
        raise bad(key, f"expected a list of identities (e.g. [\"orchestrator\"]), got {show(v)}")
    return tuple(_identity(x, bad, f"{key}[{i}]") for i, x in enumerate(v))


def _path(v, base: Path, bad, key, *, exists=True, kind="file") -> Path:
    if not isinstance(v, str) or not v:
        raise bad(key, f"expected a path (a string), got {show(v)}")
    p = Path(v).expanduser()
    p = p if p.is_absolute() else base / p
    if exists:
        if not p.exists():
            raise bad(key, f"no such {kind} {v!r} (looked for {p})")
        if kind == "file" and not p.is_file():
            raise bad(key, f"{v!r} is not a file")
        if kind == "directory" and not p.is_dir():
            raise bad(key, f"{v!r} is not a directory")
    return p


def from_dict(d: dict, source: str, base: Path) -> Config:
    """A Config from parsed TOML; every key checked (ConfigError naming `source` and the key)."""

    def bad(key, problem):
        return ConfigError(source, key, problem)

    extra = sorted(set(d) - set(KEYS))
    if extra:
        raise bad(extra[0], f"unknown key; the keys are {', '.join(KEYS)}")
    if "name" not in d:
        raise bad("name", "missing: the daemon's identity (its certificate's common name)")
    name = _identity(d["name"], bad, "name")
    out: dict = {"name": name, "source": source}
    role = d.get("role", "worker")
    if role not in ROLES:
        raise bad("role", f"expected \"worker\" or \"dealer\", got {show(role)}")
    out["role"] = role
    out["host"], out["port"] = parse_address(d.get("listen", "127.0.0.1:0"), bad, "listen")
    if "address_file" in d:
        p = _path(d["address_file"], base, bad, "address_file", exists=False)
        if not p.parent.is_dir():
            raise bad("address_file", f"directory {str(p.parent)!r} does not exist")
        out["address_file"] = p
    dh = d.get("data_host", "127.0.0.1")
    if not isinstance(dh, str) or not dh or len(dh) > 255:
        raise bad("data_host", f"expected a host name or address, got {show(dh)}")
    out["data_host"] = dh
    if "policy" in d:
        out["policy"] = _path(d["policy"], base, bad, "policy")
    approval = d.get("approval", "auto")
    if approval not in APPROVALS:
        raise bad("approval", f"expected \"auto\" or \"manual\", got {show(approval)}")
    out["approval"] = approval
    for k in ("clients", "admins", "peers", "uploads"):
        if k in d:
            out[k] = _identities(d[k], bad, k)
    if "models_dir" in d:
        p = _path(d["models_dir"], base, bad, "models_dir", exists=False)
        if p.exists() and not p.is_dir() or not p.exists() and not p.parent.is_dir():
            raise bad("models_dir", f"{d['models_dir']!r} is not a directory (nor can it be made in an existing one)")
        out["models_dir"] = p
    transport = d.get("transport", "tls")
    if transport not in TRANSPORTS:
        raise bad("transport", f"expected \"tls\" (or \"gloo\", unauthenticated and unencrypted, for trusted "
                               f"networks only), got {show(transport)}")
    out["transport"] = transport
    threads = d.get("threads", 1)
    if type(threads) is not int or not 1 <= threads <= MAX_THREADS:
        raise bad("threads", f"expected a whole number of torch threads from 1 to {MAX_THREADS}, got {show(threads)}")
    out["threads"] = threads
    if "max_body" in d:
        out["max_body"] = parse_size(d["max_body"], bad, "max_body")
    max_runs = d.get("max_runs", 100)
    if type(max_runs) is not int or not 1 <= max_runs <= 100_000:
        raise bad("max_runs", f"expected how many finished runs to keep, 1 to 100000, got {show(max_runs)}")
    out["max_runs"] = max_runs
    if "log" in d:
        p = _path(d["log"], base, bad, "log", exists=False)
        if not p.parent.is_dir():
            raise bad("log", f"directory {str(p.parent)!r} does not exist")
        out["log"] = p
    od = d.get("outputs_dir", "out")
    p = _path(od, base, bad, "outputs_dir", exists=False)
    if p.exists() and not p.is_dir():
        raise bad("outputs_dir", f"{od!r} is not a directory")
    if not p.exists() and not p.parent.is_dir():
        raise bad("outputs_dir", f"neither {od!r} nor its parent directory exists")
    out["outputs_dir"] = p
    tls = d.get("tls", {})
    if not isinstance(tls, dict):
        raise bad("tls", f"expected a table [tls] with cert, key and ca, got {show(tls)}")
    extra = sorted(set(tls) - set(TLS_KEYS))
    if extra:
        raise bad(f"tls.{extra[0]}", "unknown key; [tls] takes cert, key, ca")
    for k in TLS_KEYS:
        if k in tls:
            out[k] = _path(tls[k], base, bad, f"tls.{k}")
    cat = d.get("catalogue", [])
    if not isinstance(cat, list) or not all(isinstance(e, dict) for e in cat):
        raise bad("catalogue", f"expected [[catalogue]] tables, got {show(cat)}")
    if cat and role == "dealer":
        raise bad("catalogue", "the dealer holds no data: a dealer's configuration has no [[catalogue]]")
    out["catalogue"] = tuple(_entry(e, i, base, bad) for i, e in enumerate(cat))
    _unique_tags(out["catalogue"], bad)
    if "serving" in d:
        from .serving import parse_config

        out["serving"] = parse_config(d["serving"], bad, identities=_identities, show=show)
    return Config(**out)


def _entry(e: dict, i: int, base: Path, bad) -> EntrySpec:
    where = f"catalogue[{i}]"
    extra = sorted(set(e) - set(ENTRY_KEYS))
    if extra:
        raise bad(f"{where}.{extra[0]}", f"unknown key; an entry takes {', '.join(ENTRY_KEYS)}")
    for k in ("tag", "file"):
        if k not in e:
            raise bad(f"{where}.{k}", "missing")
    tag = e["tag"]
    if not isinstance(tag, str) or not TAG.fullmatch(tag):
        raise bad(f"{where}.tag", f"expected a tag (1 to 512 printable characters), got {show(tag)}")
    where = f"catalogue[{i}] ({tag})"
    f = _path(e["file"], base, bad, f"{where}.file")
    if f.suffix not in (".safetensors", ".npy", ".onnx"):
        raise bad(f"{where}.file", f"expected a .safetensors or .npy file (a tensor) or an .onnx file (a model), "
                                   f"got {e['file']!r}")
    key = e.get("key")
    if key is not None and (not isinstance(key, str) or not key):
        raise bad(f"{where}.key", f"expected the tensor's name in the file (a string), got {show(key)}")
    if key is not None and f.suffix in (".npy", ".onnx"):
        raise bad(f"{where}.key", f"a {f.suffix} file is one entry: leave key out")
    desc = e.get("description", "")
    if not isinstance(desc, str) or len(desc) > 4096:
        raise bad(f"{where}.description", f"expected a string of at most 4096 characters, got {show(desc)}")
    meta = e.get("meta", {})
    if not isinstance(meta, dict) or not all(isinstance(v, (str, int, float, bool)) for v in meta.values()):
        raise bad(f"{where}.meta", f"expected a table of strings and numbers, got {show(meta)}")
    return EntrySpec(tag, f, key, desc, dict(meta))


def _unique_tags(entries, bad):
    seen = set()
    for i, e in enumerate(entries):
        if e.tag in seen:
            raise bad(f"catalogue[{i}].tag", f"tag {e.tag!r} appears twice")
        seen.add(e.tag)


def read(path) -> Config:
    """The configuration in `path` (ConfigError for any problem, naming the file and key)."""
    p = Path(path)
    src = str(path)
    if not p.exists():
        raise ConfigError(src, None, "no such file")
    if not p.is_file():
        raise ConfigError(src, None, "not a file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(src, None, "not a text file (TOML is UTF-8)") from None
    except OSError as e:
        raise ConfigError(src, None, f"cannot be read ({e.strerror})") from None
    try:
        d = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(src, None, f"not valid TOML: {e}") from None
    return from_dict(d, src, p.resolve().parent)


def override(cfg: Config | None, args) -> Config:
    """`cfg` (or nothing) with the command line's flags applied; each flag checked as its key.

    args: an argparse namespace with name, listen, cert, key, ca, policy, approval, data
    (["TAG=FILE", ...]; replaces the file's catalogue), each None when not given."""
    import dataclasses

    def bad(key, problem):
        return ConfigError("command line", key, problem)

    cwd = Path.cwd()
    changes: dict = {}
    if getattr(args, "name", None) is not None:
        changes["name"] = _identity(args.name, bad, "--name")
    if getattr(args, "role", None) is not None:
        if args.role not in ROLES:
            raise bad("--role", f"expected worker or dealer, got {args.role!r}")
        changes["role"] = args.role
    if getattr(args, "listen", None) is not None:
        changes["host"], changes["port"] = parse_address(args.listen, bad, "--listen")
    if getattr(args, "address_file", None) is not None:
        changes["address_file"] = _path(args.address_file, cwd, bad, "--address-file", exists=False)
    for k in ("cert", "key", "ca", "policy"):
        v = getattr(args, k, None)
        if v is not None:
            changes[k] = _path(v, cwd, bad, f"--{k}")
    if getattr(args, "approval", None) is not None:
        if args.approval not in APPROVALS:
            raise bad("--approval", f"expected auto or manual, got {args.approval!r}")
        changes["approval"] = args.approval
    if getattr(args, "clients", None):
        changes["clients"] = tuple(_identity(c, bad, "--client") for c in args.clients)
    if getattr(args, "data", None):
        entries = []
        for spec in args.data:
            tag, eq, f = spec.partition("=")
            if not eq or not tag or not f:
                raise bad("--data", f"expected TAG=FILE, got {spec!r}")
            fp = _path(f, cwd, bad, f"--data {tag}")
            if fp.suffix not in (".safetensors", ".npy"):
                raise bad(f"--data {tag}", f"expected a .safetensors or .npy file, got {f!r}")
            entries.append(EntrySpec(tag, fp))
        _unique_tags(entries, bad)
        changes["catalogue"] = tuple(entries)
    if cfg is None:
        if "name" not in changes:
            raise bad("--name", "missing: give --config FILE or at least --name (and --cert, --key, --ca)")
        cfg = Config(name=changes.pop("name"))
    cfg = dataclasses.replace(cfg, **changes)
    if cfg.role == "dealer" and cfg.catalogue:
        raise ConfigError(cfg.source, "catalogue", "the dealer holds no data: no catalogue entries")
    for k in ("cert", "key", "ca"):  # the control API is HTTPS with client certificates, whatever the transport
        if getattr(cfg, k) is None:
            raise ConfigError(cfg.source, f"tls.{k}", f"missing: the daemon serves its API over mutually "
                                                      f"authenticated TLS only (--{k} FILE)")
    return cfg
