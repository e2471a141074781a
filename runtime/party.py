"""One party's state while it runs a plan: rank, seeds, encoding, material.

Secret values are ``Shared`` (protocols/core.py, re-exported here): this party's
additive share in Z_2^64 (int64), encoded with ``frac`` fractional bits whatever the IR
dtype (a comparison's bit b is b * 2^f). Values a party does not hold (another party's
private data) are ``ABSENT``.

Non-computing plan parties (*clients*, listed last in the plan, so their indices are
``nparties`` and up) take no part in the protocols: a value a client owns and the
computing parties use arrives as this party's share of it (``client_shares``, made by
the client: runtime/clients.py), and a value revealed to a client is kept, as this
party's share, in ``for_clients`` for the client to collect and add up.

The dealer runs the same code with ``meta=True``: secret and private values are shape-
only meta tensors, public values are real, and material requests go to the dealer's
generator instead of being regenerated from seeds.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import fixed, prg
from .protocols.core import ABSENT, Shared

__all__ = ["ABSENT", "Party", "Shared"]


@dataclass
class Party:
    rank: int
    nparties: int
    names: list
    material: object
    frac: int = fixed.DEFAULT_FRAC_BITS
    pair_seeds: dict = field(default_factory=dict)  # peer rank -> seed shared with it
    meta: bool = False
    comm: object = None
    integral_names: frozenset = frozenset()  # public values known (statically) to be small whole numbers
    lazy: bool = True  # leave truncations pending until a value needs the standard scale
    clients: tuple = ()  # plan party indices of the non-computing parties (all >= nparties)
    for_clients: dict = field(default_factory=dict)  # client index -> {value name: what it gets}
    _przs: int = 0

    def is_client(self, k) -> bool:
        return k is not None and k >= self.nparties

    def keep_for_client(self, k: int, name: str, entry: dict):
        """Hold `entry` (this party's share of a value revealed to client k, or the value
        itself when it was public or this party's own) until the client collects it."""
        if not self.meta:
            self.for_clients.setdefault(k, {})[name] = entry

    def integral(self, value) -> bool:
        """Decided from the plan alone, never from run-time values: the dealer must make
        the same choice without seeing revealed data."""
        return value.type.dtype in ("i64", "i32", "bool") or value.name in self.integral_names

    @property
    def name(self) -> str:
        return self.names[self.rank]

    @property
    def scale(self) -> int:
        return 1 << self.frac

    @property
    def leader(self) -> bool:
        """Party 0 adds public constants to its share."""
        return self.rank == 0

    def empty(self, shape, dtype=torch.int64):
        return torch.empty(tuple(shape), dtype=dtype, device="meta")

    def enc(self, x: torch.Tensor) -> torch.Tensor:
        return fixed.encode(x, self.frac)

    def dec(self, x: torch.Tensor, dtype=torch.float32, extra: int = 0) -> torch.Tensor:
        return fixed.decode(x, self.frac + extra, dtype)

    def zero_share(self, shape) -> torch.Tensor:
        """Pseudo-random zero sharing: party i adds PRG(s_ij) for j > i and subtracts
        PRG(s_ji) for j < i, so the shares sum to 0 with no message sent."""
        c = self._przs
        self._przs += 1
        if self.meta:
            return self.empty(shape)
        out = torch.zeros(tuple(shape), dtype=torch.int64)
        for j, seed in self.pair_seeds.items():
            r = prg.ring(seed, "przs", c, shape)
            out += r if self.rank < j else -r
        return out

    def share_plain(self, x, owner: int | None, shape) -> Shared:
        """Shares of a value held in the clear by `owner` (None: public, known to all).
        Costs no communication."""
        z = self.zero_share(shape)
        holder = 0 if owner is None else owner
        if self.rank == holder and not self.meta:
            z = z + self.enc(x)
        return Shared(z)

    def public_share(self, enc_value: torch.Tensor, shape=None) -> Shared:
        """A public ring value as a sharing: party 0 holds it, the others hold 0."""
        if self.meta:
            return Shared(self.empty(enc_value.shape if shape is None else shape))
        if self.leader:
            return Shared(enc_value.clone())
        return Shared(torch.zeros_like(enc_value))
