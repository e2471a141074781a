"""Seeded pseudo-random ring elements and bits.

Every random tensor is named by (seed, stream, counter): the same name gives the same
tensor on any machine, which is how a party and the dealer agree on a party's share
without sending it, and how two parties agree on a pairwise zero-sharing mask.
"""
from __future__ import annotations

import hashlib
import secrets

import torch

_LO, _HI = -(2 ** 63), 2 ** 63 - 1


def new_seed() -> int:
    return secrets.randbits(63)


def _generator(seed: int, stream: str, counter: int) -> torch.Generator:
    h = hashlib.blake2b(f"{seed}/{stream}/{counter}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(h, "little") & (2 ** 63 - 1))


def ring(seed: int, stream: str, counter: int, shape) -> torch.Tensor:
    """Uniform elements of Z_2^64 (as int64)."""
    # randint's upper bound is exclusive, so 2^63 - 1 itself never appears: a bias of 2^-64
    return torch.randint(_LO, _HI, tuple(shape), dtype=torch.int64, generator=_generator(seed, stream, counter))


def bits(seed: int, stream: str, counter: int, shape) -> torch.Tensor:
    """Uniform bits as a bool tensor."""
    return torch.randint(0, 2, tuple(shape), dtype=torch.uint8, generator=_generator(seed, stream, counter)).bool()


def random_like(kind: str, seed: int, stream: str, counter: int, shape) -> torch.Tensor:
    return ring(seed, stream, counter, shape) if kind == "arith" else bits(seed, stream, counter, shape)
