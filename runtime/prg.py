"""Seeded pseudo-random ring elements and bits: AES-128 in counter mode.

Every random tensor is named by (seed, stream, counter): the same name gives the same
tensor on any machine, which is how a party and the dealer agree on a party's share
without sending it, and how two parties agree on a pairwise zero-sharing mask. The key
is BLAKE2b(seed, stream, counter) and the keystream is AES-CTR (OpenSSL, AES-NI): a
cryptographic PRG, so masks reveal nothing about the seeds — unlike Mersenne Twister,
whose state 624 outputs give away.

The keystream comes from the system's libcrypto through ctypes where it loads (a ctypes
call releases the GIL, so the parties and the dealer, threads of one process in local
runs, generate material at the same time), else from the `cryptography` package (which
holds the GIL). Both are OpenSSL's AES-128-CTR: the same bits, checked at import.

``aes_ecb(key, blocks)``: AES-128-ECB (no padding) over whole 16-byte blocks, for the
fixed-key PRG of the distributed comparison function (protocols/dcf.py: Matyas-Meyer-
Oseas, one call per tree level over all elements). libcrypto's EVP through ctypes, else
the `cryptography` package; checked equal at import like the CTR stream.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import secrets

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

_ZEROS = np.zeros(1 << 16, dtype=np.uint8)
_NONCE = bytes(16)
_CHUNK = 1 << 30  # EVP lengths are C ints


def new_seed() -> int:
    return secrets.randbits(127)


def _zeros(nbytes: int) -> np.ndarray:
    global _ZEROS
    zeros = _ZEROS  # one read: parties run in threads, and another may grow it meanwhile
    if len(zeros) < nbytes:
        zeros = _ZEROS = np.zeros(max(nbytes, 2 * len(zeros)), dtype=np.uint8)
    return zeros


def _aes_cryptography(key: bytes, out: np.ndarray, nbytes: int):
    enc = Cipher(algorithms.AES(key), modes.CTR(_NONCE)).encryptor()
    enc.update_into(memoryview(_zeros(nbytes))[:nbytes], out)


def _load_libcrypto():
    """AES-128-CTR from libcrypto via ctypes, or None."""
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("crypto") or "libcrypto.so.3")
        lib.EVP_CIPHER_CTX_new.restype = ctypes.c_void_p
        lib.EVP_CIPHER_CTX_free.argtypes = [ctypes.c_void_p]
        lib.EVP_aes_128_ctr.restype = ctypes.c_void_p
        lib.EVP_EncryptInit_ex.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p,
                                           ctypes.c_char_p]
        lib.EVP_EncryptUpdate.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int),
                                          ctypes.c_void_p, ctypes.c_int]
        cipher = lib.EVP_aes_128_ctr()
    except (OSError, AttributeError):
        return None

    def aes(key: bytes, out: np.ndarray, nbytes: int):
        zeros = _zeros(min(nbytes, _CHUNK))
        ctx = lib.EVP_CIPHER_CTX_new()
        if not ctx:
            raise MemoryError("EVP_CIPHER_CTX_new failed")
        try:
            if lib.EVP_EncryptInit_ex(ctx, cipher, None, key, _NONCE) != 1:
                raise RuntimeError("EVP_EncryptInit_ex failed")
            done, got = 0, ctypes.c_int(0)
            while done < nbytes:
                k = min(nbytes - done, _CHUNK)
                if lib.EVP_EncryptUpdate(ctx, out.ctypes.data + done, ctypes.byref(got), zeros.ctypes.data, k) != 1:
                    raise RuntimeError("EVP_EncryptUpdate failed")
                done += k
        finally:
            lib.EVP_CIPHER_CTX_free(ctx)

    # the same bits as the cryptography package, or not used at all
    try:
        for n in (1, 17, 1000):
            a, b = np.empty(n + 16, np.uint8), np.empty(n + 16, np.uint8)
            aes(bytes(range(16)), a, n)
            _aes_cryptography(bytes(range(16)), b, n)
            if not np.array_equal(a[:n], b[:n]):
                return None
    except (RuntimeError, MemoryError, OSError):
        return None
    return aes


_AES = _load_libcrypto() or _aes_cryptography


def _ecb_cryptography(key: bytes, data: np.ndarray, out: np.ndarray):
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    out[:] = np.frombuffer(enc.update(data.tobytes()), np.uint8)  # update_into wants a block of slack


def _load_ecb():
    """AES-128-ECB, padding off, from libcrypto via ctypes, or None."""
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("crypto") or "libcrypto.so.3")
        lib.EVP_CIPHER_CTX_new.restype = ctypes.c_void_p
        lib.EVP_CIPHER_CTX_free.argtypes = [ctypes.c_void_p]
        lib.EVP_CIPHER_CTX_set_padding.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.EVP_aes_128_ecb.restype = ctypes.c_void_p
        lib.EVP_EncryptInit_ex.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p,
                                           ctypes.c_char_p]
        lib.EVP_EncryptUpdate.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int),
                                          ctypes.c_void_p, ctypes.c_int]
        cipher = lib.EVP_aes_128_ecb()
    except (OSError, AttributeError):
        return None

    def ecb(key: bytes, data: np.ndarray, out: np.ndarray):
        ctx = lib.EVP_CIPHER_CTX_new()
        if not ctx:
            raise MemoryError("EVP_CIPHER_CTX_new failed")
        try:
            if lib.EVP_EncryptInit_ex(ctx, cipher, None, key, None) != 1:
                raise RuntimeError("EVP_EncryptInit_ex failed")
            lib.EVP_CIPHER_CTX_set_padding(ctx, 0)
            done, got, nbytes = 0, ctypes.c_int(0), data.nbytes
            while done < nbytes:
                k = min(nbytes - done, _CHUNK)  # _CHUNK is a multiple of 16
                if lib.EVP_EncryptUpdate(ctx, out.ctypes.data + done, ctypes.byref(got), data.ctypes.data + done,
                                         k) != 1 or got.value != k:
                    raise RuntimeError("EVP_EncryptUpdate failed")
                done += k
        finally:
            lib.EVP_CIPHER_CTX_free(ctx)

    try:
        rng = np.random.default_rng(0)
        for n in (1, 3, 100):
            d = rng.integers(0, 256, 16 * n, dtype=np.uint8)
            a, b = np.empty_like(d), np.empty_like(d)
            ecb(bytes(range(16)), d, a)
            _ecb_cryptography(bytes(range(16)), d, b)
            if not np.array_equal(a, b):
                return None
    except (RuntimeError, MemoryError, OSError):
        return None
    return ecb


_ECB = _load_ecb() or _ecb_cryptography


def aes_ecb(key: bytes, blocks: np.ndarray) -> np.ndarray:
    """AES-128-ECB of `blocks` (any C-contiguous array whose byte size is a multiple of
    16) under `key`; returns a new array of the same dtype and shape."""
    data = np.ascontiguousarray(blocks)
    if data.nbytes % 16:
        raise ValueError(f"aes_ecb: {data.nbytes} bytes is not a whole number of 16-byte blocks")
    out = np.empty_like(data)
    if data.nbytes:
        _ECB(key, data.reshape(-1).view(np.uint8), out.reshape(-1).view(np.uint8))
    return out


def _keystream(seed: int, stream: str, counter: int, nbytes: int) -> np.ndarray:
    """nbytes of AES-CTR keystream (uint8, 16 bytes of slack at the end), written straight
    into an uninitialised buffer."""
    key = hashlib.blake2b(f"{seed}/{stream}/{counter}".encode(), digest_size=16).digest()
    out = np.empty(nbytes + 16, dtype=np.uint8)
    _AES(key, out, nbytes)
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
    return torch.from_numpy(buf[:8 * n].view(np.int64)).reshape(shape)


def bits(seed: int, stream: str, counter: int, shape) -> torch.Tensor:
    """Uniform bits as a bool tensor."""
    shape = tuple(shape)
    n = _numel(shape)
    if n == 0:
        return torch.zeros(shape, dtype=torch.bool)
    buf = _keystream(seed, stream, counter, (n + 7) // 8)
    b = np.unpackbits(buf[:(n + 7) // 8], count=n).view(bool)
    return torch.from_numpy(b).reshape(shape)


def random_like(kind: str, seed: int, stream: str, counter: int, shape) -> torch.Tensor:
    """kind "arith" or "xor64": uniform int64 (ring elements, or 64 packed bits each);
    "xor": bools."""
    return bits(seed, stream, counter, shape) if kind == "xor" else ring(seed, stream, counter, shape)
