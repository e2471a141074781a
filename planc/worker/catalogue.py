"""A worker's catalogue: the tags a plan may `load` here, and what each one is.

An entry names one tensor in one file — a ``.safetensors`` file (the tensor named by
``key``, or the file's only tensor) or a ``.npy`` array — with the dtype and shape a plan
must declare to load it, a description and free-form metadata (source, licence). At
start-up only the files' headers are read (safetensors' JSON header, numpy's array
header through a memory map), so a worker with many large data sets starts at once and
a broken file is named before any run. Values are read when a run that loads the tag
starts, and never leave the worker through the API: ``entries()`` and ``search()`` give
metadata only.

A model entry names an ``.onnx`` file: plans call it with ``planc.load_model(tag,
owner=...)`` and this worker links it (planc/onnx/: the call replaced by the model's
body, its float initializers loads of ``<tag>/<initializer>`` that only a linked plan may
make); the listing shows the model's inputs and outputs, never its architecture. Models
can also be added while the worker runs (``add_model``: an upload from an allowed client).

dtypes are the IR's names (``f32``, ``f64``, ``i64``, ``i32``, ``bool``: ir/types.py), so
an entry compares directly with a plan's ``load`` type; a file of another dtype (f16,
u8) is listed under its own name and no plan can load it.
"""
from __future__ import annotations

import functools
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from .config import ConfigError, EntrySpec

# safetensors' and numpy's dtype names -> the IR's
_ST_DTYPES = {"F32": "f32", "F64": "f64", "I64": "i64", "I32": "i32", "BOOL": "bool", "F16": "f16", "BF16": "bf16",
              "I16": "i16", "I8": "i8", "U8": "u8"}
_NP_DTYPES = {"float32": "f32", "float64": "f64", "int64": "i64", "int32": "i32", "bool": "bool"}
_MAX_HEADER = 100 << 20


@dataclass(frozen=True)
class Entry:
    tag: str
    owner: str
    dtype: str
    shape: tuple
    description: str
    meta: dict = field(default_factory=dict)
    file: Path | None = None
    key: str | None = None

    def public(self) -> dict:
        """What the API shows: metadata, never the value nor the file's path."""
        return {"tag": self.tag, "owner": self.owner, "dtype": self.dtype, "shape": list(self.shape),
                "description": self.description, "meta": dict(self.meta)}

    def type_text(self) -> str:
        return f"{self.dtype}[{','.join(map(str, self.shape))}]"

    def load(self):
        """The tensor (read now, from the file)."""
        import torch

        if self.file.suffix == ".npy":
            import numpy as np

            arr = np.load(self.file, mmap_mode="r", allow_pickle=False)
            return torch.from_numpy(np.array(arr))
        from safetensors import safe_open

        with safe_open(str(self.file), framework="pt") as f:
            return f.get_tensor(self.key)


@dataclass(frozen=True)
class ModelEntry:
    """An ONNX model this worker holds: `model` the checked ModelProto (opset-converted,
    shape-inferred), `inputs` [(name, dtype, shape)] (None for a symbolic dimension),
    `outputs` [name], `weights` {initializer name: (dtype, shape)} of its float initializers."""

    tag: str
    owner: str
    description: str
    meta: dict
    file: Path
    model: object
    inputs: tuple
    outputs: tuple
    weights: dict

    kind = "model"

    def public(self) -> dict:
        """What the API shows: the model's inputs and outputs, never its nodes or weights."""
        return {"tag": self.tag, "owner": self.owner, "kind": "model", "dtype": "model", "shape": [],
                "inputs": [{"name": n, "dtype": d, "shape": [x if x is not None else "?" for x in sh]}
                           for n, d, sh in self.inputs],
                "outputs": list(self.outputs), "description": self.description, "meta": dict(self.meta)}

    @functools.cached_property
    def _initializers(self) -> dict:
        return {init.name: init for init in self.model.graph.initializer}

    def weight(self, name: str):
        """One float initializer as a tensor (a linked plan's load of ``<tag>/<name>``);
        found by name in one lookup (a model's many weights are loaded one by one)."""
        import torch
        from onnx import numpy_helper

        return torch.from_numpy(numpy_helper.to_array(self._initializers[name]).copy())


@dataclass(frozen=True)
class WeightEntry:
    """A model's weight as a linked plan loads it: tag ``<model tag>/<initializer>``."""

    tag: str
    owner: str
    dtype: str
    shape: tuple
    model: ModelEntry
    name: str

    kind = "weight"

    def type_text(self) -> str:
        return f"{self.dtype}[{','.join(map(str, self.shape))}]"

    def load(self):
        return self.model.weight(self.name)


def read_model_entry(tag: str, owner: str, file: Path, description: str, meta: dict, data=None) -> ModelEntry:
    """Read and check an ONNX model (from `file`, or from `data` bytes); OnnxImportError
    when planc cannot import it."""
    from onnx import numpy_helper

    from planc.onnx import OnnxImportError
    from planc.onnx.context import NP_TO_IR, ONNX_DTYPES, read_model

    m = read_model(data if data is not None else file)  # checked, converted, shape-inferred
    inits = {i.name for i in m.graph.initializer}
    ins = []
    for vi in m.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dt = ONNX_DTYPES.get(tt.elem_type)
        if dt is None:
            raise OnnxImportError(f"input {vi.name!r}: element type {tt.elem_type} is not one planc reads")
        # a symbolic dimension (a batch) is None here: a plan's call fixes it
        shape = tuple(int(d.dim_value) if d.HasField("dim_value") else None for d in tt.shape.dim)
        ins.append((vi.name, dt, shape))
    weights = {}
    for init in m.graph.initializer:
        a = numpy_helper.to_array(init)
        if a.dtype.kind == "f" and a.dtype.type in NP_TO_IR:
            weights[init.name] = (NP_TO_IR[a.dtype.type], tuple(int(d) for d in a.shape))
    return ModelEntry(tag, owner, description, dict(meta), file, m, tuple(ins), tuple(o.name for o in m.graph.output),
                      weights)


def _safetensors_header(path: Path, bad) -> dict:
    """The JSON header of a safetensors file, read without reading the tensors."""
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise bad("file is too short for a safetensors header")
            (n,) = struct.unpack("<Q", raw)
            if n > _MAX_HEADER:
                raise bad(f"safetensors header of {n:,} bytes; not a safetensors file?")
            head = json.loads(f.read(n).decode("utf-8"))
    except ConfigError:
        raise
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise bad(f"not a readable safetensors file ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(head, dict):
        raise bad("not a safetensors file (its header is not a JSON object)")
    head.pop("__metadata__", None)
    return head


def _read_entry(spec: EntrySpec, owner: str, source: str, index: int) -> Entry:
    def bad(problem):
        return ConfigError(source, f"catalogue[{index}] ({spec.tag}).file", f"{spec.file}: {problem}")

    if spec.file.suffix == ".onnx":
        from planc.onnx import OnnxImportError

        try:
            return read_model_entry(spec.tag, owner, spec.file, spec.description, spec.meta)
        except OnnxImportError as e:
            raise bad(f"not a model planc can import: {e}") from None

    if spec.file.suffix == ".npy":
        import numpy as np

        try:
            arr = np.load(spec.file, mmap_mode="r", allow_pickle=False)
        except Exception as e:  # noqa: BLE001 — any failure to read is the file's problem
            raise bad(f"not a readable .npy file ({type(e).__name__}: {str(e)[:200]})") from None
        dtype = _NP_DTYPES.get(str(arr.dtype), str(arr.dtype))
        shape = tuple(int(d) for d in arr.shape)
        del arr
        return Entry(spec.tag, owner, dtype, shape, spec.description, spec.meta, spec.file, None)
    head = _safetensors_header(spec.file, bad)
    key = spec.key
    if key is None:
        if len(head) != 1:
            names = ", ".join(sorted(head)[:10])
            raise bad(f"holds {len(head)} tensors ({names}); say which with key = \"...\"")
        (key,) = head
    if key not in head:
        names = ", ".join(sorted(head)[:10])
        raise bad(f"has no tensor {key!r}; it has {names}")
    info = head[key]
    if not isinstance(info, dict) or "dtype" not in info or "shape" not in info:
        raise bad(f"tensor {key!r} has a malformed header entry")
    dtype = _ST_DTYPES.get(info["dtype"], str(info["dtype"]).lower())
    shape = tuple(int(d) for d in info["shape"])
    return Entry(spec.tag, owner, dtype, shape, spec.description, spec.meta, spec.file, key)


class Catalogue:
    def __init__(self, entries):
        import threading

        self._entries = {e.tag: e for e in entries}
        self._lock = threading.Lock()  # uploads add models while runs read

    @classmethod
    def build(cls, specs, owner: str, source: str) -> "Catalogue":
        return cls(_read_entry(s, owner, source, i) for i, s in enumerate(specs))

    def __contains__(self, tag) -> bool:
        return tag in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, tag, *, linked: bool = False):
        """The entry of `tag`; with linked=True also a model's weight ``<model>/<init>``,
        which only a plan this worker linked may load (a submitted plan cannot name one)."""
        e = self._entries.get(tag)
        if e is not None or not linked or "/" not in tag:
            return e
        for i in range(len(tag) - 1, 0, -1):  # the longest model tag that prefixes `tag`
            if tag[i] == "/":
                m = self._entries.get(tag[:i])
                if isinstance(m, ModelEntry) and tag[i + 1:] in m.weights:
                    d, sh = m.weights[tag[i + 1:]]
                    return WeightEntry(tag, m.owner, d, sh, m, tag[i + 1:])
        return None

    def model(self, tag) -> ModelEntry | None:
        e = self._entries.get(tag)
        return e if isinstance(e, ModelEntry) else None

    def add_model(self, entry: ModelEntry):
        """A model uploaded while serving; KeyError when the tag is taken."""
        with self._lock:
            if entry.tag in self._entries:
                raise KeyError(entry.tag)
            self._entries = {**self._entries, entry.tag: entry}

    def tags(self) -> list:
        return sorted(self._entries)

    def entries(self) -> list[dict]:
        return [self._entries[t].public() for t in self.tags()]

    def search(self, query: str | None) -> list[dict]:
        """Entries whose tag, description or a meta value contains `query` (any case)."""
        if not query:
            return self.entries()
        q = query.lower()
        out = []
        for t in self.tags():
            e = self._entries[t]
            texts = [e.tag, e.description] + [str(v) for v in e.meta.values()]
            if any(q in s.lower() for s in texts):
                out.append(e.public())
        return out
