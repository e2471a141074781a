"""verify: check the graph (types, scopes, visibility) and pass it on unchanged."""
from __future__ import annotations

from dataclasses import dataclass

from planc.ir.verify import verify

from .base import Pass, register


@register
@dataclass(frozen=True)
class Verify(Pass):
    name = "verify"

    def run(self, graph):
        return verify(graph)
