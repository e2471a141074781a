"""Seeded pseudo-random ring elements and bits: AES-128 in counter mode.

Every random tensor is named by (seed, stream, counter): the same name gives the same
tensor on any machine, which is how a party and the dealer agree on a party's share
without sending it, and how two parties agree on a pairwise zero-sharing mask. The key
is BLAKE2b(seed, stream, counter) and the keystream is AES-CTR (OpenSSL, AES-NI): a
cryptographic PRG, so masks reveal nothing about the seeds — unlike Mersenne Twister,
whose state 624 outputs give away.
"""
from __future__ import annotations

import hashlib
import secrets

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

_ZEROS = bytearray(1 << 16)
_NONCE = bytes(16)


def new_seed() -> int:
    return secrets.randbits(127)


def _keystream(seed: int, stream: str, counter: int, nbytes: int) -> bytearray:
    global _ZEROS
    key = hashlib.blake2b(f"{seed}/{stream}/{counter}".encode(), digest_size=16).digest()
    if len(_ZEROS) < nbytes:
        _ZEROS = bytearray(max(nbytes, 2 * len(_ZEROS)))
    out = bytearray(nbytes + 16)
    enc = Cipher(algorithms.AES(key), modes.CTR(_NONCE)).encryptor()
    enc.update_into(memoryview(_ZEROS)[:nbytes], out)
    return out


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def ring(seed: int, stream: str, counter: int, shape) -> torch.Tensor:
    """Uniform elements of Z_2^64 (as int64)."""
    shape = tuple(shape)
    n = _numel(shape)
    if n == 0:
        return torch.zeros(shape, dtype=torch.int64)
    buf = _keystream(seed, stream, counter, 8 * n)
    return torch.frombuffer(buf, dtype=torch.int64, count=n).reshape(shape)


def bits(seed: int, stream: str, counter: int, shape) -> torch.Tensor:
    """Uniform bits as a bool tensor."""
    shape = tuple(shape)
    n = _numel(shape)
    if n == 0:
        return torch.zeros(shape, dtype=torch.bool)
    buf = _keystream(seed, stream, counter, (n + 7) // 8)
    b = np.unpackbits(np.frombuffer(buf, dtype=np.uint8, count=(n + 7) // 8), count=n).astype(bool)
    return torch.from_numpy(b).reshape(shape)


def random_like(kind: str, seed: int, stream: str, counter: int, shape) -> torch.Tensor:
    return ring(seed, stream, counter, shape) if kind == "arith" else bits(seed, stream, counter, shape)
