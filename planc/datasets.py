"""Public helper: the MNIST test set (idx format) for demos and tests, read without any download.

    images, labels = planc.datasets.mnist()                 # all 10,000, f32[N,1,28,28] in [0,1], i64[N]
    images, labels = planc.datasets.mnist(split="train")    # the first 8,000 (what the demo trains on)
    images, labels = planc.datasets.mnist(split="eval")     # the last 2,000 (what it is evaluated on)

The two files ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz`` are read from
`root`, else from ``$PLANC_MNIST``, else from a ``shared/data/mnist`` folder beside the
checkout or the working directory. Their md5 sums are checked before use.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import struct
from pathlib import Path

import torch

MD5 = {
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


def mnist_dir() -> Path:
    env = os.environ.get("PLANC_MNIST")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for up in [*here.parents, Path.cwd().resolve(), *Path.cwd().resolve().parents]:
        cand = up / "shared" / "data" / "mnist"
        if cand.is_dir():
            return cand
        cand = up.parent / "shared" / "data" / "mnist"
        if cand.is_dir():
            return cand
    raise FileNotFoundError("MNIST not found: pass root= or set PLANC_MNIST to the folder with t10k-*-ubyte.gz")


def _read(path: Path, magic: int, ndim: int) -> torch.Tensor:
    raw = path.read_bytes()
    digest = hashlib.md5(raw).hexdigest()
    if digest != MD5[path.name]:
        raise ValueError(f"{path}: md5 {digest} does not match the published {MD5[path.name]}")
    data = gzip.decompress(raw)
    head = struct.unpack(">" + "i" * (1 + ndim), data[: 4 * (1 + ndim)])
    if head[0] != magic:
        raise ValueError(f"{path}: magic {head[0]}, expected {magic}")
    dims = head[1:]
    body = data[4 * (1 + ndim):]
    n = 1
    for d in dims:
        n *= d
    if len(body) != n:
        raise ValueError(f"{path}: {len(body)} bytes of data for shape {dims}")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(dims)


def load_mnist(folder: str | os.PathLike | None = None):
    """(images f32[10000,1,28,28] scaled to [0,1], labels i64[10000]); see `mnist` for splits."""
    d = Path(folder) if folder else mnist_dir()
    images = _read(d / "t10k-images-idx3-ubyte.gz", 2051, 3)
    labels = _read(d / "t10k-labels-idx1-ubyte.gz", 2049, 1)
    return images.unsqueeze(1).float().div_(255.0), labels.long()


SPLITS = {"all": slice(None), "train": slice(None, 8000), "eval": slice(8000, None)}


def mnist(root: str | os.PathLike | None = None, split: str = "all"):
    """(images f32[N,1,28,28] in [0,1], labels i64[N]) of the MNIST test set: ``split="all"``
    (10,000), ``"train"`` (the first 8,000) or ``"eval"`` (the last 2,000)."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: use one of {', '.join(SPLITS)}")
    images, labels = load_mnist(root)
    return images[SPLITS[split]], labels[SPLITS[split]]
