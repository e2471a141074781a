"""Tensors that stay with their owner: a module's weights by tag, and data files
(`save_data` / `load_data`).

A traced module's parameters become loads of ``<tag>/<name>``; ``export_weights`` writes
exactly those tensors to a safetensors file for the owner to keep and serve.
Reading is safetensors or ``.npy`` with pickles refused: data files never run code.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file


def weights_of(module: torch.nn.Module, tag: str) -> dict[str, torch.Tensor]:
    """{f"{tag}/{name}": tensor} for every parameter and buffer, as tracing names them."""
    out = {}
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if name.endswith("num_batches_tracked"):
            continue
        out[f"{tag}/{name}"] = t.detach().contiguous().clone()
    return out


def export_weights(module: torch.nn.Module, tag: str, path) -> dict[str, torch.Tensor]:
    w = weights_of(module, tag)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(w, str(path))
    return w


def read_tensors(path) -> dict[str, torch.Tensor]:
    """All tensors of a .safetensors file by name, or a .npy file under its stem."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    if p.suffix == ".safetensors":
        try:
            return load_file(str(p))
        except Exception as e:
            raise ValueError(f"{p}: not a readable safetensors file ({e})") from None
    if p.suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except ValueError as e:
            raise ValueError(f"{p}: not a plain .npy array ({e})") from None
        return {p.stem: torch.from_numpy(np.ascontiguousarray(arr))}
    raise ValueError(f"{p}: unknown data file type; use .safetensors or .npy")


def save_data(path, tensors: dict[str, torch.Tensor]) -> Path:
    """Write a party's tensors by tag — ``{"mnist/test": images, ...}`` — to a safetensors
    file: what ``planc run --data PARTY=FILE`` and ``planc.run_local(plan, {PARTY: FILE})``
    read. Returns the path."""
    p = Path(path)
    if p.suffix != ".safetensors":
        raise ValueError(f"{p}: a data file is .safetensors (that is what planc run --data reads)")
    if not isinstance(tensors, dict) or not tensors:
        raise ValueError("save_data expects a non-empty dict {tag: tensor}")
    out = {}
    for tag, t in tensors.items():
        if not isinstance(tag, str) or not tag:
            raise ValueError(f"save_data: tags are non-empty strings, got {tag!r}")
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"save_data: {tag!r} is a {type(t).__name__}, not a torch.Tensor")
        out[tag] = t.detach().cpu().contiguous().clone()  # safetensors refuses views that share storage
    p.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(p))
    return p


def load_data(path) -> dict[str, torch.Tensor]:
    """A data file's tensors by tag (``.safetensors``, or ``.npy`` under its stem)."""
    return read_tensors(path)
