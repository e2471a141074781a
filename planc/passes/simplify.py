"""simplify: constfold, identities, cse and dce until nothing changes."""
from __future__ import annotations

from dataclasses import dataclass

from .base import Pass, register
from .constfold import ConstFold
from .cse import CSE
from .dce import DCE
from .identities import Identities


@register
@dataclass(frozen=True)
class Simplify(Pass):
    name = "simplify"
    rounds: int = 8

    def run(self, graph):
        for _ in range(self.rounds):
            new = graph
            for p in (ConstFold(), Identities(), CSE(), DCE()):
                new = p.run(new)
            if new == graph:
                break
            graph = new
        return graph
