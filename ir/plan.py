"""The plan file: a graph and its public constants, shipped as one canonical zip.

Layout, members always in this order::

    manifest.json          format, versions, name, parties, sha256 and size of the others,
                           captured constants, plan settings; JSON, sorted keys, compact
    plan.ir                print_graph(graph), UTF-8
    constants.safetensors  the tensors that `const name=...` nodes refer to

The encoding is a function of the Plan alone (fixed timestamps, permissions, no
compression, no extra fields), so a data owner can approve a plan by its sha256.

Reading never unpickles and never executes anything: JSON, our own text parser and
safetensors only. A file is accepted only if re-encoding what was read gives back the
very same bytes, so tampering with bytes that no checksum covers (zip header fields,
padding, trailing data) is rejected as well. Every failure is a PlanFormatError, and
nothing else is raised, whatever the bytes.

A file written by a stranger is refused before it costs much: by its size before it is
read (``MAX_SIZE``, checked with stat), each member by its declared and its actual size as
it is read (``MAX_MANIFEST_SIZE``, ``MAX_IR_SIZE``), then by the manifest's fields, each
with a type and a range, the plan's settings (``SETTINGS``: ``frac_bits`` an int in 8..30)
among them, then by the verifier's bounds (``ir/verify.py``). Reading takes time and memory
linear in the file.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import stat
import zipfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import sys
from typing import TYPE_CHECKING

from .graph import Graph, Node, short
from .parser import ParseError, parse_graph
from .printer import print_graph
from .types import TORCH_TO_IR, TensorType
from .verify import MAX_PARTIES, VerifyError, clip, num, verify

if TYPE_CHECKING:
    import torch

# torch is imported only by the functions that read or write tensors, so that the IR
# (and reading a plan's text) needs no torch: `import planc.ir.plan` stays light.

FORMAT = "planc-plan"
FORMAT_VERSION = 1
MANIFEST, IR, CONSTANTS = "manifest.json", "plan.ir", "constants.safetensors"
MEMBERS = (MANIFEST, IR, CONSTANTS)
MAX_SIZE = 2 << 30  # 2 GiB: a plan carries public constants, not data sets
MAX_MANIFEST_SIZE = 16 << 20  # 16 MiB of JSON: names, digests, short descriptions
MAX_IR_SIZE = 64 << 20  # 64 MiB of text, about 750,000 nodes (reading it takes some 10 s)
MAX_DESCRIPTION = 1024  # characters of one captured constant's description
_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+!_\-]{0,63}")  # a PEP 440 version, as planc_version() gives it

# the manifest's fields and the JSON types they must have
_FIELDS = {
    "format": str,
    "format_version": int,
    "planc_version": str,
    "name": str,
    "parties": list,
    "members": dict,
    "captured": dict,
    "meta": dict,
}
# every zip header field we control is pinned, so bytes do not depend on the OS or clock
_DATE = (1980, 1, 1, 0, 0, 0)
_ATTR = 0o100644 << 16  # regular file, rw-r--r--
_UNIX = 3  # create_system; zipfile would say 0 on Windows


class PlanFormatError(ValueError):
    """A plan file is malformed or was tampered with; the message names the member and field.

    member: the zip member at fault ("manifest.json", "plan.ir", "constants.safetensors"),
    field: the manifest field ("meta.frac_bits", "parties", ...), each None when not known.
    The message is cut at MAX_MESSAGE characters: a hostile file never makes a huge one."""

    def __init__(self, msg: str, *, member: str | None = None, field: str | None = None):
        self.member, self.field = member, field
        super().__init__(clip(str(msg)))


# ---------------------------------------------------------------- settings

RING_BITS = 64  # the runtime computes in Z_2^64 (runtime/fixed.py)


@dataclass(frozen=True)
class Setting:
    """One plan setting (a key of ``Plan.meta``): its type, its range and its default."""

    name: str
    kind: type
    lo: int
    hi: int
    default: int
    doc: str

    def problem(self, v) -> str | None:
        """Why `v` cannot be this setting, or None."""
        if type(v) is not self.kind:  # bool is no int here: `true` is not 1 fractional bit
            return f"expected {self.kind.__name__}, got {json.dumps(v) if _jsonable(v) else type(v).__name__}"
        if not self.lo <= v <= self.hi:
            return f"{num(v)} is outside {self.lo}..{self.hi} ({self.doc})"
        return None


# A product of two fixed-point values carries 2 * frac_bits fractional bits until it is
# truncated; in the 64-bit ring at least 3 integer bits and the sign must remain, hence
# 2 * frac_bits <= 60. Fewer than 8 fractional bits round every value to 1/256 or worse.
SETTINGS = {s.name: s for s in (
    Setting("frac_bits", int, 8, (RING_BITS - 4) // 2, 16,
            "fractional bits of the fixed-point encoding in Z_2^64; products need twice as many"),
)}


def _jsonable(v) -> bool:
    return v is None or type(v) in (int, float, str, bool)


def settings_problem(meta) -> tuple[str, str] | None:
    """(field, problem) for the first setting of `meta` that is unknown or out of range."""
    if not isinstance(meta, dict):
        return "meta", f"expected an object of settings, got {type(meta).__name__}"
    for k, v in meta.items():
        if k not in SETTINGS:
            known = ", ".join(SETTINGS)
            return "meta", f"unknown setting {short(json.dumps(k) if isinstance(k, str) else repr(k))} (settings: {known})"
        p = SETTINGS[k].problem(v)
        if p:
            return f"meta.{k}", p
    return None


def settings(meta: dict) -> dict:
    """Every setting's value for a plan with `meta`: what it sets, else the default."""
    return {k: meta.get(k, s.default) for k, s in SETTINGS.items()}


def check_settings(meta: dict) -> dict:
    """`meta` if every setting in it is known and in range; else PlanFormatError naming it.
    For a runner handed a Plan object rather than a file (reading a file checks it)."""
    bad = settings_problem(meta)
    if bad:
        field, problem = bad
        raise PlanFormatError(f"{MANIFEST}: field {json.dumps(field)}: {problem}", member=MANIFEST, field=field)
    return meta


def planc_version() -> str:
    try:
        return metadata.version("planc")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0"


@dataclass(eq=False)
class Plan:
    """A graph, the public tensors its consts name, where they came from (captured) and the
    settings it runs with (meta: a subset of SETTINGS, each in range; the rest default)."""

    graph: Graph
    constants: dict[str, torch.Tensor] = field(default_factory=dict)
    captured: dict[str, str] = field(default_factory=dict)
    meta: dict[str, int | str | float | bool] = field(default_factory=dict)

    # ---- writing
    def to_bytes(self) -> bytes:
        _check(self)  # refuse to write a file that reading would reject
        return _encode(self, planc_version(), check=True)

    def save(self, path) -> None:
        Path(path).write_bytes(self.to_bytes())

    def sha256(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    # ---- reading
    @classmethod
    def from_bytes(cls, data, *, max_size: int = MAX_SIZE) -> "Plan":
        try:
            return _decode(data, max_size)
        except PlanFormatError:
            raise
        except Exception as e:  # a library surprise on hostile input is still a bad file to the caller
            raise PlanFormatError(f"unreadable plan: {type(e).__name__}: {short(_safe_str(e), 300)}") from e

    @classmethod
    def read(cls, path, *, max_size: int = MAX_SIZE) -> "Plan":
        # a regular file is refused by its size before a byte is read; anything else (a
        # pipe) is read up to one byte past the limit
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if stat.S_ISREG(st.st_mode) and st.st_size > max_size:
                raise PlanFormatError(f"plan file is larger than the limit of {max_size} bytes "
                                      f"({st.st_size:,} bytes)")
            data = f.read(max_size + 1)
        return cls.from_bytes(data, max_size=max_size)

    # ---- looking
    def __str__(self) -> str:
        return print_graph(self.graph)

    def __repr__(self) -> str:
        # one line, never a dump of tensors; never raises, even for a plan that would not save
        g = self.graph
        try:
            name, parties = f"@{g.name}", ", ".join(g.parties)
            nodes = sum(1 for n in g.walk() if n.op not in ("return", "yield"))
        except Exception:  # noqa: BLE001 — not a Graph: say so rather than fail
            return f"<{type(self).__name__} of a {type(g).__name__}>"
        size = sum(t.numel() * t.element_size() for t in self.constants.values() if _is_tensor(t))
        try:
            sha = self.sha256()[:12]
        except Exception as e:  # noqa: BLE001
            sha = f"? ({type(e).__name__})"
        return (f"<{type(self).__name__} {name} parties {parties}; {nodes} nodes, "
                f"{len(self.constants)} constants ({size:,} B); sha256 {sha}>")

    def __eq__(self, other) -> bool:
        if not isinstance(other, Plan):
            return NotImplemented
        return (
            self.graph == other.graph
            and _typed(self.captured) == _typed(other.captured)
            and _typed(self.meta) == _typed(other.meta)
            and self.constants.keys() == other.constants.keys()
            and all(_same_tensor(self.constants[k], other.constants[k]) for k in self.constants)
        )

    __hash__ = None  # mutable dicts inside


def _safe_str(x) -> str:
    try:
        return str(x)
    except Exception:  # noqa: BLE001
        return f"<{type(x).__name__}>"


def _is_tensor(x) -> bool:
    """isinstance(x, torch.Tensor) without importing torch: no tensor exists before it is."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _typed(d: dict) -> dict:
    # True == 1 == 1.0 in Python, but they are different settings and print differently in JSON
    return {k: (type(v), v) for k, v in d.items()}


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    # bitwise, not torch.equal: NaN must equal itself and -0.0 differs from 0.0 in the file bytes
    import torch

    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(_raw(a), _raw(b))


def _raw(t: torch.Tensor) -> torch.Tensor:
    import torch

    t = t.detach().cpu().contiguous().reshape(-1)
    return t.view(torch.uint8) if t.dtype != torch.bool else t


def _ir_type(t: torch.Tensor) -> str:
    dt = TORCH_TO_IR.get(str(t.dtype), str(t.dtype).removeprefix("torch."))
    return f"{dt}[{','.join(map(str, t.shape))}]"


# ---------------------------------------------------------------- encoding


def _encode(plan: Plan, version: str, check: bool = False) -> bytes:
    from safetensors.torch import save as _st_save

    ir = print_graph(plan.graph).encode("utf-8")
    # clone: safetensors refuses views that share storage, and must not see caller's strides
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in plan.constants.items()}
    consts = _st_save(tensors)  # no metadata; tensor order is safetensors' own, independent of ours
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "planc_version": version,
        "name": plan.graph.name,
        "parties": list(plan.graph.parties),
        "members": {IR: _digest(ir), CONSTANTS: _digest(consts)},
        "captured": dict(plan.captured),
        "meta": dict(plan.meta),
    }
    if check:
        _fields(manifest)  # write nothing that reading would refuse
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    buf = io.BytesIO()
    # BytesIO is seekable, so zipfile writes sizes in the local headers and no data descriptors
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, data in ((MANIFEST, text.encode("utf-8")), (IR, ir), (CONSTANTS, consts)):
            zi = zipfile.ZipInfo(name, date_time=_DATE)
            zi.compress_type = zipfile.ZIP_STORED  # no zlib: bytes must not depend on its version
            zi.external_attr = _ATTR
            zi.create_system = _UNIX
            zf.writestr(zi, data)
    return buf.getvalue()


def _digest(data: bytes) -> dict:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


# ---------------------------------------------------------------- decoding


def _decode(data, max_size: int) -> Plan:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PlanFormatError(f"expected the bytes of a plan file, got {type(data).__name__}")
    size = data.nbytes if isinstance(data, memoryview) else len(data)
    if size > max_size:  # before any copy
        raise PlanFormatError(f"plan file is larger than the limit of {max_size} bytes")
    data = bytes(data)
    members = _unzip(data, max_size)
    manifest = _manifest(members[MANIFEST], max_size)
    for name in (IR, CONSTANTS):
        want, got = manifest["members"][name], _digest(members[name])
        if want["size"] != got["size"]:
            raise PlanFormatError(f"member {name}: size {got['size']} but manifest says {want['size']}")
        if want["sha256"] != got["sha256"]:
            raise PlanFormatError(f"member {name}: sha256 mismatch (manifest {want['sha256']}, content {got['sha256']})")
    graph = _graph(members[IR], manifest)
    from safetensors.torch import load as _st_load

    try:
        constants = _st_load(members[CONSTANTS])
    except Exception as e:  # safetensors raises its own error type, or others on odd headers
        raise PlanFormatError(f"{CONSTANTS}: not a safetensors file: {e}") from e
    plan = Plan(graph, constants, manifest["captured"], manifest["meta"])
    _check(plan, verified=True)
    # last, the strongest check: only the one canonical encoding of this plan is accepted
    if _encode(plan, manifest["planc_version"]) != data:
        raise PlanFormatError("non-canonical encoding: the bytes differ from how planc writes this plan")
    return plan


def _unzip(data: bytes, max_size: int = MAX_SIZE) -> dict[str, bytes]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except Exception as e:  # BadZipFile, EOFError, struct.error... whatever the header fields provoke
        if data.startswith(b"PK\x03\x04"):  # begins like a zip: most likely cut short
            raise PlanFormatError(f"truncated or corrupt zip: {e}") from e
        raise PlanFormatError("not a zip file") from e
    with zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        for n in names:
            if n not in MEMBERS:
                raise PlanFormatError(f"unexpected member {json.dumps(n)}")
        for n in MEMBERS:
            if names.count(n) != 1:
                raise PlanFormatError(f"{'missing' if n not in names else 'duplicate'} member {json.dumps(n)}")
        if tuple(names) != MEMBERS:
            raise PlanFormatError(f"members in order {', '.join(names)}; expected {', '.join(MEMBERS)}")
        if zf.comment:
            raise PlanFormatError("zip has an archive comment")
        for i in infos:
            # flag bits would mean encryption, data descriptors or UTF-8 names: none of ours
            if i.flag_bits:
                raise PlanFormatError(f"member {i.filename}: unexpected flag bits {i.flag_bits:#x}")
            if i.compress_type != zipfile.ZIP_STORED or i.compress_size != i.file_size:
                raise PlanFormatError(f"member {i.filename}: compressed; plan members are stored")
            if i.extra or i.comment:
                raise PlanFormatError(f"member {i.filename}: unexpected extra field or comment")
        if sum(i.file_size for i in infos) > len(data):
            raise PlanFormatError("zip declares members larger than the file")
        limits = {MANIFEST: min(MAX_MANIFEST_SIZE, max_size), IR: min(MAX_IR_SIZE, max_size), CONSTANTS: max_size}
        for i in infos:  # by the sizes the zip declares, before reading any member
            if i.file_size > limits[i.filename]:
                raise PlanFormatError(f"member {i.filename}: {i.file_size:,} bytes, more than the limit of "
                                      f"{limits[i.filename]:,}", member=i.filename)
        out = {}
        for i in infos:
            try:
                # never more than the declared size (plus one byte, to notice more); reading to
                # the end also checks the CRC, and opening the local header's name
                with zf.open(i) as f:
                    raw = f.read(i.file_size + 1)
            except Exception as e:
                raise PlanFormatError(f"member {i.filename}: {short(_safe_str(e), 300)}", member=i.filename) from e
            if len(raw) != i.file_size:
                raise PlanFormatError(f"member {i.filename}: {len(raw):,} bytes, but the zip declares "
                                      f"{i.file_size:,}", member=i.filename)
            out[i.filename] = raw
        return out


def _show(v) -> str:
    """A JSON value for a message, shortened."""
    try:
        return short(json.dumps(v, ensure_ascii=False), 120)
    except Exception:  # noqa: BLE001
        return type(v).__name__


def _bad(field: str, problem: str) -> PlanFormatError:
    return PlanFormatError(f"{MANIFEST}: field {json.dumps(field)}: {problem}", member=MANIFEST, field=field)


def _no_constant(c):  # NaN and Infinity are not JSON
    raise PlanFormatError(f"{MANIFEST}: {c} is not JSON", member=MANIFEST)


def _json_int(s: str) -> int:
    # int() of many thousands of digits is slow (and refused past 4300); up to 1000 the
    # number is read, so that the field's own range check can name the field
    if len(s.lstrip("-")) > 1000:
        raise PlanFormatError(f"{MANIFEST}: integer of {len(s):,} digits", member=MANIFEST)
    return int(s)


def _json_float(s: str) -> float:
    v = float(s)
    if not math.isfinite(v):  # 1e999
        raise PlanFormatError(f"{MANIFEST}: number {short(s, 40)} is not finite", member=MANIFEST)
    return v


def _text_ok(s: str) -> bool:
    """Whether `s` can be written back as UTF-8 (JSON escapes can make lone surrogates)."""
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _manifest(raw: bytes, max_size: int = MAX_SIZE) -> dict:
    try:
        m = json.loads(raw.decode("utf-8"), parse_constant=_no_constant, parse_int=_json_int,
                       parse_float=_json_float)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise PlanFormatError(f"{MANIFEST}: not JSON: {short(_safe_str(e), 300)}", member=MANIFEST) from e
    if not isinstance(m, dict):
        raise PlanFormatError(f"{MANIFEST}: expected a JSON object, got {type(m).__name__}", member=MANIFEST)
    # format and version first: a newer file may legitimately have other fields
    if m.get("format") != FORMAT:
        raise _bad("format", f"expected {json.dumps(FORMAT)}, got {_show(m.get('format'))}")
    v = m.get("format_version")
    if type(v) is not int or v != FORMAT_VERSION:
        raise PlanFormatError(f"{MANIFEST}: unsupported format_version {_show(v)} (this planc reads {FORMAT_VERSION})",
                              member=MANIFEST, field="format_version")
    for k, t in _FIELDS.items():
        if k not in m:
            raise PlanFormatError(f"{MANIFEST}: missing field {json.dumps(k)}", member=MANIFEST, field=k)
        if not isinstance(m[k], t):
            raise _bad(k, f"expected {t.__name__}, got {type(m[k]).__name__}")
    for k in m:
        if k not in _FIELDS:
            raise PlanFormatError(f"{MANIFEST}: unexpected field {_show(k)}", member=MANIFEST)
    _fields(m, max_size)
    return m


def _fields(m: dict, max_size: int = MAX_SIZE) -> None:
    """Each manifest field within its range (their JSON types are checked already); the
    writer checks what it writes the same way."""
    if not _VERSION.fullmatch(m["planc_version"]):
        raise _bad("planc_version", f"expected a version such as \"0.1.0\", got {_show(m['planc_version'])}")
    if not m["name"] or len(m["name"]) > 1024 or not _text_ok(m["name"]):
        raise _bad("name", f"expected the plan's name (1 to 1024 characters), got {_show(m['name'])}")
    parties = m["parties"]
    if not all(isinstance(p, str) for p in parties):
        raise _bad("parties", "expected a list of names")
    if not 1 <= len(parties) <= MAX_PARTIES or not all(p.isidentifier() and len(p) <= 1024 for p in parties):
        raise _bad("parties", f"expected 1 to {MAX_PARTIES} names (identifiers of at most 1024 characters)")
    if sorted(m["members"]) != sorted((IR, CONSTANTS)):
        raise _bad("members", f"expected entries for {IR} and {CONSTANTS}")
    limits = {IR: min(MAX_IR_SIZE, max_size), CONSTANTS: max_size}
    for name, d in m["members"].items():
        ok = (
            isinstance(d, dict)
            and sorted(d) == ["sha256", "size"]
            and isinstance(d["sha256"], str)
            and len(d["sha256"]) == 64
            and all(c in "0123456789abcdef" for c in d["sha256"])
            and type(d["size"]) is int
            and 0 <= d["size"] <= limits[name]
        )
        if not ok:
            raise _bad("members", f"{name}: expected {{\"sha256\": hex, \"size\": int}} "
                                  f"(at most {limits[name]:,} bytes)")
    for k, v in m["captured"].items():
        if not isinstance(v, str):
            raise _bad("captured", "expected descriptions (strings)")
        if len(v) > MAX_DESCRIPTION or not _text_ok(k) or not _text_ok(v):
            raise _bad("captured", f"{_show(k)}: expected a description of at most {MAX_DESCRIPTION} characters")
    bad = settings_problem(m["meta"])
    if bad:
        raise _bad(*bad)


def _graph(raw: bytes, manifest: dict) -> Graph:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PlanFormatError(f"{IR}: not UTF-8: {e}", member=IR) from e
    try:
        g = parse_graph(text, file=IR)
    except ParseError as e:
        # ParseError carries line, column and problem; say them in the plan file's terms
        where = f"line {e.line}:{e.column}: " if hasattr(e, "line") else ""
        raise PlanFormatError(f"{IR}: {where}{getattr(e, 'problem', e)}", member=IR) from e
    try:
        verify(g)
    except VerifyError as e:
        raise PlanFormatError(f"{IR}: {e}", member=IR) from e
    if g.name != manifest["name"]:
        raise PlanFormatError(f"{MANIFEST}: field \"name\": {json.dumps(manifest['name'])} but {IR} is plan @{g.name}")
    if list(g.parties) != manifest["parties"]:
        raise PlanFormatError(f"{MANIFEST}: field \"parties\": {manifest['parties']} but {IR} has {list(g.parties)}")
    return g


def _check(plan: Plan, verified: bool = False) -> None:
    """Graph, tensors, captured and meta fit together; shared by the writer and the reader."""
    g = plan.graph
    if not isinstance(g, Graph):
        raise PlanFormatError(f"{IR}: expected a Graph, got {type(g).__name__}")
    if not verified:
        try:
            verify(g)
        except VerifyError as e:
            raise PlanFormatError(f"{IR}: {e}") from e
    named: dict[str, tuple[Node, TensorType]] = {}
    for n in g.consts():
        name = n.attr("name")
        if name is None:
            continue  # an inline scalar lives in the IR text
        t = n.result.type
        if name in named and named[name][1] != t:
            raise PlanFormatError(f"{IR}: consts %{named[name][0].result.name} and %{n.result.name} "
                                  f"declare {json.dumps(name)} as {named[name][1]} and {t}")
        named.setdefault(name, (n, t))
        if name not in plan.constants:
            raise PlanFormatError(f"{CONSTANTS}: no tensor {json.dumps(name)} for const %{n.result.name} ({t})")
        x = plan.constants[name]
        if not _is_tensor(x):
            raise PlanFormatError(f"{CONSTANTS}: {json.dumps(name)} is a {type(x).__name__}, not a tensor")
        if TORCH_TO_IR.get(str(x.dtype)) != t.dtype or tuple(x.shape) != t.shape:
            raise PlanFormatError(f"{CONSTANTS}: tensor {json.dumps(name)} is {_ir_type(x)} "
                                  f"but const %{n.result.name} declares {t}")
    for name in plan.constants:
        if name not in named:
            # an unreferenced tensor is data shipped by accident, or smuggled
            raise PlanFormatError(f"{CONSTANTS}: tensor {json.dumps(name)} is not named by any const")
    for k, v in plan.captured.items():
        if k not in named:
            raise PlanFormatError(f"{MANIFEST}: field \"captured\": {json.dumps(k)} is not a constant of the plan")
        if not isinstance(v, str):
            raise PlanFormatError(f"{MANIFEST}: field \"captured\": {json.dumps(k)}: expected a description")
    bad = settings_problem(plan.meta)
    if bad:
        raise _bad(*bad)
