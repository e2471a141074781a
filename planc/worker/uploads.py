"""Models sent to a worker as ONNX (``cluster.upload_model``): ``POST /v1/models``.

A client may upload only when the worker's configuration names it in ``uploads`` (the
owner's choice, as a policy is); the model must be one planc imports (every node mapped,
planc/onnx/), under a tag the catalogue does not have yet. It is written to the worker's
``models_dir`` (default ``outputs_dir/models``) as ``<tag>-<sha256 prefix>.onnx``, readable by the
worker only, and joins the catalogue as a model entry: plans then call it with
``planc.load_model(tag, owner=<this worker>, ...)`` and this worker links it. The upload
is logged with who sent it and the file's sha256.

Body: ``{"tag": str, "onnx": base64 of the model file, "description": str (optional)}``.
"""
from __future__ import annotations

import hashlib
import os

from .config import TAG
from .wire import Refusal, b64


def upload(daemon, who: str, body) -> dict:
    from planc.onnx import OnnxImportError

    from .catalogue import read_model_entry

    cfg = daemon.cfg
    if daemon.catalogue is None:
        raise Refusal(400, "role", f"{cfg.name} is the dealer: it holds no models")
    if who not in cfg.uploads:
        raise Refusal(403, "uploads", f"identity {who!r} may not upload models to {cfg.name} (its configuration "
                                      f"allows: {', '.join(cfg.uploads) or 'nobody'})")
    if not isinstance(body, dict) or set(body) - {"tag", "onnx", "description"}:
        raise Refusal(400, "body", "expected {tag, onnx (base64), description}")
    tag, desc = body.get("tag"), body.get("description", "")
    if not isinstance(tag, str) or not TAG.fullmatch(tag) or "/" in tag:
        raise Refusal(400, "body", f"field 'tag': expected a model name without '/', got {tag!r}")
    if not isinstance(desc, str) or len(desc) > 4096:
        raise Refusal(400, "body", "field 'description': expected a string of at most 4096 characters")
    data = b64("onnx", body.get("onnx"))
    if tag in daemon.catalogue:
        raise Refusal(409, "catalogue", f"{cfg.name} has an entry {tag!r} already")
    digest = hashlib.sha256(data).hexdigest()
    where = cfg.models_dir or (cfg.outputs_dir / "models")
    path = where / f"{tag}-{digest[:12]}.onnx"  # the name its nodes' locations show
    try:
        entry = read_model_entry(tag, cfg.name, path, desc, {"uploaded_by": who, "sha256": digest}, data=data)
    except OnnxImportError as e:
        raise Refusal(400, "model", f"field 'onnx': not a model planc can import: {e}") from None
    where.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    try:
        daemon.catalogue.add_model(entry)
    except KeyError:
        raise Refusal(409, "catalogue", f"{cfg.name} has an entry {tag!r} already") from None
    daemon.log.event("model_uploaded", client=who, tag=tag, sha256=digest, bytes=len(data))
    return {"worker": cfg.name, **entry.public()}
