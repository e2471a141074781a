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
padding, trailing data) is rejected as well. Every failure is a PlanFormatError.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import sys
from typing import TYPE_CHECKING

from .graph import Graph, Node
from .parser import ParseError, parse_graph
from .printer import print_graph
from .types import TORCH_TO_IR, TensorType
from .verify import VerifyError, verify

if TYPE_CHECKING:
    import torch

# torch is imported only by the functions that read or write tensors, so that the IR
# (and reading a plan's text) needs no torch: `import planc.ir.plan` stays light.

FORMAT = "planc-plan"
FORMAT_VERSION = 1
MANIFEST, IR, CONSTANTS = "manifest.json", "plan.ir", "constants.safetensors"
MEMBERS = (MANIFEST, IR, CONSTANTS)
MAX_SIZE = 2 << 30  # 2 GiB: a plan carries public constants, not data sets

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
    """A plan file is malformed or was tampered with; the message names the member and field."""


def planc_version() -> str:
    try:
        return metadata.version("planc")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0"


@dataclass(eq=False)
class Plan:
    graph: Graph
    constants: dict[str, torch.Tensor] = field(default_factory=dict)
    captured: dict[str, str] = field(default_factory=dict)
    meta: dict[str, int | str | float | bool] = field(default_factory=dict)

    # ---- writing
    def to_bytes(self) -> bytes:
        _check(self)  # refuse to write a file that reading would reject
        return _encode(self, planc_version())

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
            raise PlanFormatError(f"unreadable plan: {type(e).__name__}: {e}") from e

    @classmethod
    def read(cls, path, *, max_size: int = MAX_SIZE) -> "Plan":
        # read at most one byte past the limit, so a huge file is refused without loading it
        with open(path, "rb") as f:
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


def _encode(plan: Plan, version: str) -> bytes:
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
    data = bytes(data)
    if len(data) > max_size:
        raise PlanFormatError(f"plan file is larger than the limit of {max_size} bytes")
    members = _unzip(data)
    manifest = _manifest(members[MANIFEST])
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


def _unzip(data: bytes) -> dict[str, bytes]:
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
        out = {}
        for i in infos:
            try:
                out[i.filename] = zf.read(i)  # also checks the CRC and the local header's name
            except Exception as e:
                raise PlanFormatError(f"member {i.filename}: {e}") from e
        return out


def _manifest(raw: bytes) -> dict:
    def no_constant(c):  # NaN and Infinity are not JSON
        raise PlanFormatError(f"{MANIFEST}: {c} is not JSON")

    try:
        m = json.loads(raw.decode("utf-8"), parse_constant=no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise PlanFormatError(f"{MANIFEST}: not JSON: {e}") from e
    if not isinstance(m, dict):
        raise PlanFormatError(f"{MANIFEST}: expected a JSON object, got {type(m).__name__}")
    # format and version first: a newer file may legitimately have other fields
    if m.get("format") != FORMAT:
        raise PlanFormatError(f"{MANIFEST}: field \"format\": expected {json.dumps(FORMAT)}, got {json.dumps(m.get('format'))}")
    v = m.get("format_version")
    if type(v) is not int or v != FORMAT_VERSION:
        raise PlanFormatError(f"{MANIFEST}: unsupported format_version {json.dumps(v)} (this planc reads {FORMAT_VERSION})")
    for k, t in _FIELDS.items():
        if k not in m:
            raise PlanFormatError(f"{MANIFEST}: missing field {json.dumps(k)}")
        if not isinstance(m[k], t):
            raise PlanFormatError(f"{MANIFEST}: field {json.dumps(k)}: expected {t.__name__}, got {type(m[k]).__name__}")
    for k in m:
        if k not in _FIELDS:
            raise PlanFormatError(f"{MANIFEST}: unexpected field {json.dumps(k)}")
    if not all(isinstance(p, str) for p in m["parties"]):
        raise PlanFormatError(f"{MANIFEST}: field \"parties\": expected a list of names")
    if sorted(m["members"]) != sorted((IR, CONSTANTS)):
        raise PlanFormatError(f"{MANIFEST}: field \"members\": expected entries for {IR} and {CONSTANTS}")
    for name, d in m["members"].items():
        ok = (
            isinstance(d, dict)
            and sorted(d) == ["sha256", "size"]
            and isinstance(d["sha256"], str)
            and len(d["sha256"]) == 64
            and all(c in "0123456789abcdef" for c in d["sha256"])
            and type(d["size"]) is int
            and d["size"] >= 0
        )
        if not ok:
            raise PlanFormatError(f"{MANIFEST}: field \"members\": {name}: expected {{\"sha256\": hex, \"size\": int}}")
    if not all(isinstance(v, str) for v in m["captured"].values()):
        raise PlanFormatError(f"{MANIFEST}: field \"captured\": expected descriptions (strings)")
    if not all(type(v) in (int, float, str, bool) for v in m["meta"].values()):
        raise PlanFormatError(f"{MANIFEST}: field \"meta\": expected numbers, strings or booleans")
    return m


def _graph(raw: bytes, manifest: dict) -> Graph:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PlanFormatError(f"{IR}: not UTF-8: {e}") from e
    try:
        g = parse_graph(text, file=IR)
    except ParseError as e:
        # ParseError carries line, column and problem; say them in the plan file's terms
        where = f"line {e.line}:{e.column}: " if hasattr(e, "line") else ""
        raise PlanFormatError(f"{IR}: {where}{getattr(e, 'problem', e)}") from e
    try:
        verify(g)
    except VerifyError as e:
        raise PlanFormatError(f"{IR}: {e}") from e
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
    for k, v in plan.meta.items():
        if not isinstance(k, str) or type(v) not in (int, float, str, bool):
            raise PlanFormatError(f"{MANIFEST}: field \"meta\": {k!r}: expected a number, string or boolean")
        if isinstance(v, float) and not math.isfinite(v):
            raise PlanFormatError(f"{MANIFEST}: field \"meta\": {json.dumps(k)}: {v} is not JSON")
