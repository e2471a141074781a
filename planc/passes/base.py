"""The pass registry and pipeline strings."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from planc.ir.graph import Graph

PASSES: dict[str, type] = {}


@dataclass(frozen=True)
class Pass:
    name: ClassVar[str] = ""

    def run(self, graph: Graph) -> Graph:
        raise NotImplementedError


def register(cls):
    PASSES[cls.name] = cls
    return cls


class PipelineError(ValueError):
    pass


def parse_pipeline(spec: str, **options) -> list[Pass]:
    """`"verify,simplify"` -> pass instances; options go to the passes that take them."""
    out = []
    for name in [s.strip() for s in spec.split(",") if s.strip()]:
        cls = PASSES.get(name)
        if cls is None:
            raise PipelineError(f"unknown pass {name!r}; passes are {', '.join(sorted(PASSES))}")
        fields = getattr(cls, "__dataclass_fields__", {})
        out.append(cls(**{k: v for k, v in options.items() if k in fields and v is not None}))
    return out
