"""Types of IR values: a dtype, a static shape and a visibility.

Visibility is part of the type (README.md):

- ``public``      known to every party;
- ``private<k>``  plaintext held by party k only;
- ``secret``      additively shared among the computing parties.

``join`` narrows like SPU: public with anything keeps the other side, two values of
the same owner stay with that owner, everything else is secret.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

DTYPES = ("f32", "f64", "i64", "i32", "bool")
FLOAT_DTYPES = ("f32", "f64")

# promotion order for binary arithmetic: the later wins, like torch's type promotion
_RANK = {"bool": 0, "i32": 1, "i64": 2, "f32": 3, "f64": 4}


def promote(a: str, b: str) -> str:
    return a if _RANK[a] >= _RANK[b] else b


# the closed range of each integer dtype: torch's own check when it makes a scalar
# (``torch.tensor(value, dtype=...)`` raises outside it, or wraps for i64)
INT_RANGE = {"i32": (-2**31, 2**31 - 1), "i64": (-2**63, 2**63 - 1)}


def scalar_problem(value: float, dtype: str) -> str | None:
    """Why `value` (an inline constant's float) cannot be a scalar of `dtype`, or None.

    Integer dtypes hold finite values in their range; bool only 0 and 1; the floating
    dtypes hold any float (beyond f32's range it rounds to an infinity, as in torch).
    """
    if dtype == "bool":
        if value not in (0, 1):
            return f"value {value!r} does not fit bool (only 0 or 1)"
    elif dtype in INT_RANGE:
        lo, hi = INT_RANGE[dtype]
        if not math.isfinite(value):
            return f"value {value!r} does not fit {dtype} (not finite)"
        if not lo <= value <= hi:
            return f"value {value!r} does not fit {dtype} (range {lo} to {hi})"
    return None


@dataclass(frozen=True, slots=True)
class Vis:
    kind: str  # "public" | "private" | "secret"
    owner: int | None = None

    def __post_init__(self):
        if self.kind not in ("public", "private", "secret"):
            raise ValueError(f"unknown visibility kind {self.kind!r}")
        if (self.kind == "private") != (self.owner is not None):
            raise ValueError("private visibility needs an owner, and only it")
        if self.owner is not None and (not isinstance(self.owner, int) or self.owner < 0):
            raise ValueError(f"owner must be a party index >= 0, not {self.owner!r}")

    @property
    def is_public(self) -> bool:
        return self.kind == "public"

    @property
    def is_secret(self) -> bool:
        return self.kind == "secret"

    @property
    def is_private(self) -> bool:
        return self.kind == "private"

    def __str__(self) -> str:
        return f"private<{self.owner}>" if self.kind == "private" else self.kind


PUBLIC = Vis("public")
SECRET = Vis("secret")


def private(owner: int) -> Vis:
    return Vis("private", owner)


def join(*vs: Vis) -> Vis:
    """Visibility of a value computed from values of visibilities ``vs``."""
    out = PUBLIC
    for v in vs:
        if v.is_public:
            continue
        if v.is_secret:
            return SECRET
        if out.is_public:
            out = v
        elif out != v:
            return SECRET
    return out


@dataclass(frozen=True, slots=True)
class TensorType:
    dtype: str
    shape: tuple[int, ...]
    vis: Vis = PUBLIC

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; expected one of {', '.join(DTYPES)}")
        if not isinstance(self.shape, tuple) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in self.shape
        ):
            raise ValueError(f"shape must be a tuple of non-negative ints, not {self.shape!r}")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    def with_vis(self, vis: Vis) -> "TensorType":
        return TensorType(self.dtype, self.shape, vis)

    def with_shape(self, shape) -> "TensorType":
        return TensorType(self.dtype, tuple(shape), self.vis)

    def with_dtype(self, dtype: str) -> "TensorType":
        return TensorType(dtype, self.shape, self.vis)

    def __str__(self) -> str:
        return f"{self.vis} {self.dtype}[{','.join(map(str, self.shape))}]"


# torch dtype names <-> IR dtype names; kept as strings so ir/ needs no torch import
TORCH_TO_IR = {
    "torch.float32": "f32",
    "torch.float64": "f64",
    "torch.int64": "i64",
    "torch.int32": "i32",
    "torch.bool": "bool",
}
IR_TO_TORCH = {v: k.split(".")[1] for k, v in TORCH_TO_IR.items()}
