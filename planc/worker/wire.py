"""What crosses the API besides JSON: refusals, base64, tensors, the reveals body.

Every refusal is one JSON object, the same from every route and every worker, so an
orchestrator can show it as it is and a program can act on it:

    {"error": {"code": 403, "worker": "alice", "rule": "ops",
               "message": "...", "where": "model.py:12"}}

``rule`` says which check refused (``identity``, ``run_id``, ``body``, ``plan``,
``party``, ``policy``/``limits``, ``catalogue``, ``approval``, ``state``, ...), ``where``
the plan's source line when a node is at fault (else null).

Tensors travel as safetensors (never pickle), base64 inside JSON bodies; a reveals
body is the runtime's message form (runtime/procs.py): an 8-byte little-endian length,
a JSON header, then safetensors.
"""
from __future__ import annotations

import base64
import binascii
import json


class Refusal(Exception):
    """A request this daemon refuses: an HTTP status, the rule and a message."""

    def __init__(self, status: int, rule: str, message: str, where: str | None = None):
        self.status, self.rule, self.message, self.where = status, rule, message, where
        super().__init__(message)

    def body(self, worker: str) -> dict:
        return {"error": {"code": self.status, "worker": worker, "rule": self.rule, "message": self.message,
                          "where": self.where}}


def where_of(node) -> str | None:
    """A node's source line as ``file:line`` (None without one)."""
    loc = getattr(node, "loc", None)
    return f"{loc.file}:{loc.line}" if loc is not None else None


def b64(field: str, text) -> bytes:
    """Decode a base64 field; Refusal 400 naming the field otherwise."""
    if not isinstance(text, str):
        raise Refusal(400, "body", f"field {field!r}: expected base64 text, got {type(text).__name__}")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as e:
        raise Refusal(400, "body", f"field {field!r}: not valid base64 ({e})") from None


def tensors(field: str, text) -> dict:
    """A base64 safetensors field -> {name: tensor}; Refusal 400 naming the field otherwise."""
    from safetensors.torch import load

    raw = b64(field, text)
    try:
        return load(raw)
    except Exception as e:  # noqa: BLE001 — any failure is a malformed field
        raise Refusal(400, "body", f"field {field!r}: not a safetensors file ({type(e).__name__}: "
                                   f"{str(e)[:200]})") from None


def encode_tensors(ts: dict) -> str:
    from safetensors.torch import save

    return base64.b64encode(save({k: v.detach().contiguous().clone() for k, v in ts.items()})).decode("ascii")


def message(header: dict, ts: dict | None = None) -> bytes:
    """8-byte header length, the JSON header, then the tensors as safetensors."""
    from safetensors.torch import save

    head = json.dumps(header).encode()
    body = save({k: t.detach().contiguous().clone() for k, t in ts.items()}) if ts else b""
    return len(head).to_bytes(8, "little") + head + body


def read_message(data: bytes):
    from safetensors.torch import load

    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n].decode())
    rest = data[8 + n:]
    return header, (load(rest) if rest else {})
