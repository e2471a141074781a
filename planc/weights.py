"""Tensors that stay with their owner: a module's weights by tag, and data files.

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
