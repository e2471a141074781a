"""policy: refuse a plan that breaks the policy, listing every violation."""
from __future__ import annotations

from dataclasses import dataclass

from planc.ir.policy import DEFAULT, Policy

from .base import Pass, register


@register
@dataclass(frozen=True)
class CheckPolicy(Pass):
    name = "policy"
    policy: Policy = DEFAULT

    def run(self, graph):
        return self.policy.check(graph)
