"""IR dtypes as torch dtypes, and whether a tensor a party supplies fits the type the
plan declares for it (dtype and shape), with a message that says why not."""
from __future__ import annotations

import torch

from planc.ir.types import FLOAT_DTYPES, TORCH_TO_IR, TensorType

TORCH_DTYPE = {
    "f32": torch.float32,
    "f64": torch.float64,
    "i64": torch.int64,
    "i32": torch.int32,
    "bool": torch.bool,
}




def dtype_name(dt: torch.dtype) -> str:
    return TORCH_TO_IR.get(str(dt), str(dt).removeprefix("torch."))


def _fits(got: torch.dtype, want: str) -> bool:
    """Can data of dtype `got` stand for `want` without losing what it means?"""
    if got.is_complex:
        return False
    is_int = not got.is_floating_point and got != torch.bool
    if want in FLOAT_DTYPES:
        return got.is_floating_point or is_int  # images often arrive as integers
    if want == "bool":
        return got == torch.bool
    return is_int  # a float would be silently truncated to an integer


def describe_tensor(t) -> str:
    if not isinstance(t, torch.Tensor):
        return f"a {type(t).__name__}, not a torch.Tensor"
    return f"{dtype_name(t.dtype)}[{','.join(map(str, t.shape))}]"


def fit_problem(t, want: TensorType) -> str | None:
    if not isinstance(t, torch.Tensor) or tuple(t.shape) != want.shape or not _fits(t.dtype, want.dtype):
        return f"expected {want.dtype}[{','.join(map(str, want.shape))}], got {describe_tensor(t)}"
    return None


