"""Fixed-point encoding into the ring Z_2^64 (torch.int64, whose arithmetic wraps).

A real x is encoded as round(x * 2^f); f = 16 fractional bits by default, set per plan.
Encoding refuses values whose magnitude reaches 2^(62 - f): past that even a sum of two
could wrap silently. Products are exact only while |x * y| < 2^(63 - 2f) (32768 for
f = 16) because the raw product carries 2f fractional bits before truncation.

Decoding is exact: int64 -> float64 -> divide by 2^f. (CrypTen splits into integer and
fractional parts with floor division and returns some negative values exactly 1.0 too
low; we never split.)
"""
from __future__ import annotations

import torch

DEFAULT_FRAC_BITS = 16


class EncodingError(ValueError):
    pass


def limit(frac_bits: int = DEFAULT_FRAC_BITS) -> float:
    return float(2 ** (62 - frac_bits))


def encode(x: torch.Tensor, frac_bits: int = DEFAULT_FRAC_BITS) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.device.type == "meta":
        return torch.empty(x.shape, dtype=torch.int64, device="meta")
    if x.dtype == torch.bool:
        x = x.to(torch.int64)
    if not x.is_floating_point():
        big = x.abs().max().item() if x.numel() else 0
        if big >= 2 ** (62 - frac_bits):
            raise EncodingError(f"integer {big} is outside the fixed-point range |x| < 2^{62 - frac_bits}")
        return x.to(torch.int64) << frac_bits
    xd = x.to(torch.float64)
    if x.numel():
        bad = ~torch.isfinite(xd) | (xd.abs() >= limit(frac_bits))
        if bad.any():
            v = xd[bad][0].item()
            raise EncodingError(f"value {v:g} is outside the fixed-point range |x| < 2^{62 - frac_bits} "
                                f"({limit(frac_bits):.3g}) for {frac_bits} fractional bits")
    return torch.round(xd * (1 << frac_bits)).to(torch.int64)


def decode(x: torch.Tensor, frac_bits: int = DEFAULT_FRAC_BITS, dtype=torch.float32) -> torch.Tensor:
    if x.device.type == "meta":
        return torch.empty(x.shape, dtype=dtype, device="meta")
    out = x.to(torch.float64) / float(1 << frac_bits)
    if dtype.is_floating_point:
        return out.to(dtype)
    if dtype == torch.bool:
        return out.round() != 0
    return out.round().to(dtype)
