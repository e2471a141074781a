"""A worker's catalogue: the tags a plan may `load` here, and what each one is.

An entry names one tensor in one file — a ``.safetensors`` file (the tensor named by
``key``, or the file's only tensor) or a ``.npy`` array — with the dtype and shape a plan
must declare to load it, a description and free-form metadata (source, licence). At
start-up only the files' headers are read (safetensors' JSON header, numpy's array
header through a memory map), so a worker with many large data sets starts at once and
a broken file is named before any run. Values are read when a run that loads the tag
starts, and never leave the worker through the API: ``entries()`` and ``search()`` give
metadata only.

dtypes are the IR's names (``f32``, ``f64``, ``i64``, ``i32``, ``bool``: ir/types.py), so
an entry compares directly with a plan's ``load`` type; a file of another dtype (f16,
u8) is listed under its own name and no plan can load it.
"""
from __future__ import annotations

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
        self._entries = {e.tag: e for e in entries}

    @classmethod
    def build(cls, specs, owner: str, source: str) -> "Catalogue":
        return cls(_read_entry(s, owner, source, i) for i, s in enumerate(specs))

    def __contains__(self, tag) -> bool:
        return tag in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, tag) -> Entry | None:
        return self._entries.get(tag)

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
