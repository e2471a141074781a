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




def _ecb_cryptography(key: bytes, data: np.ndarray, out: np.ndarray):
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    out[:] = np.frombuffer(enc.update(data.tobytes()), np.uint8)  # update_into wants a block of slack


def _libcrypto():
    """The system's libcrypto through ctypes, its EVP calls declared, or None."""
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("crypto") or "libcrypto.so.3")
        lib.EVP_CIPHER_CTX_new.restype = ctypes.c_void_p
        lib.EVP_CIPHER_CTX_free.argtypes = [ctypes.c_void_p]
        lib.EVP_CIPHER_CTX_set_padding.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.EVP_aes_128_ctr.restype = ctypes.c_void_p
        lib.EVP_aes_128_ecb.restype = ctypes.c_void_p
        lib.EVP_EncryptInit_ex.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p,
                                           ctypes.c_char_p]
        lib.EVP_EncryptUpdate.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int),
                                          ctypes.c_void_p, ctypes.c_int]
    except (OSError, AttributeError):
        return None
    return lib


def _evp(lib, cipher, key: bytes, iv, out: np.ndarray, src: np.ndarray, nbytes: int, moving: bool):
    """Encrypt nbytes into `out` with one EVP context, padding off, in C-int-sized calls;
    `src` advances with `out` (moving: ECB's blocks) or is read from its start every call
    (CTR's keystream: zeros of one call's length)."""
    ctx = lib.EVP_CIPHER_CTX_new()
    if not ctx:
        raise MemoryError("EVP_CIPHER_CTX_new failed")
    try:
        if lib.EVP_EncryptInit_ex(ctx, cipher, None, key, iv) != 1:
            raise RuntimeError("EVP_EncryptInit_ex failed")
        lib.EVP_CIPHER_CTX_set_padding(ctx, 0)
        done, got = 0, ctypes.c_int(0)
        while done < nbytes:
            k = min(nbytes - done, _CHUNK)  # _CHUNK is a multiple of 16
            if lib.EVP_EncryptUpdate(ctx, out.ctypes.data + done, ctypes.byref(got),
                                     src.ctypes.data + (done if moving else 0), k) != 1 or got.value != k:
                raise RuntimeError("EVP_EncryptUpdate failed")
            done += k
    finally:
        lib.EVP_CIPHER_CTX_free(ctx)


def _agrees(fn, reference, cases) -> bool:
    """libcrypto's result equals the cryptography package's on `cases` (else it is not used)."""
    try:
        return all(np.array_equal(fn(*c), reference(*c)) for c in cases)
    except (RuntimeError, MemoryError, OSError):
        return False


def _load_ctr(lib):
    """AES-128-CTR from libcrypto, or None."""
    if lib is None:
        return None
    cipher = lib.EVP_aes_128_ctr()

    def aes(key: bytes, out: np.ndarray, nbytes: int):
        _evp(lib, cipher, key, _NONCE, out, _zeros(min(nbytes, _CHUNK)), nbytes, moving=False)

    def run(f, n):
        out = np.empty(n + 16, np.uint8)
        f(bytes(range(16)), out, n)
        return out[:n]

    ok = _agrees(lambda n: run(aes, n), lambda n: run(_aes_cryptography, n), [(1,), (17,), (1000,)])
    return aes if ok else None


def _load_ecb(lib):
    """AES-128-ECB (padding off) from libcrypto, or None."""
    if lib is None:
        return None
    cipher = lib.EVP_aes_128_ecb()

    def ecb(key: bytes, data: np.ndarray, out: np.ndarray):
        _evp(lib, cipher, key, None, out, data, data.nbytes, moving=True)

    def run(f, d):
        out = np.empty_like(d)
        f(bytes(range(16)), d, out)
        return out

    rng = np.random.default_rng(0)
    cases = [(rng.integers(0, 256, 16 * n, dtype=np.uint8),) for n in (1, 3, 100)]
    return ecb if _agrees(lambda d: run(ecb, d), lambda d: run(_ecb_cryptography, d), cases) else None


_LIB = _libcrypto()
_AES = _load_ctr(_LIB) or _aes_cryptography


_ECB = _load_ecb(_LIB) or _ecb_cryptography


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
