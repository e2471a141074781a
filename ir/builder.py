"""Build graphs node by node, with result types inferred from the op registry."""
from __future__ import annotations

import re

from . import ops
from .graph import Graph, Loc, Node, Region, Value, make_attrs
from .types import TensorType

_NAME_OK = re.compile(r"[^A-Za-z0-9_]")


class Builder:
    """Appends nodes to the innermost open block; names every value uniquely."""

    def __init__(self, name: str, parties=()):
        self.name = name
        self.parties = list(parties)
        self._blocks: list[list[Node]] = [[]]
        self._params: list[tuple[Value, ...]] = []
        self._used: set[str] = set()
        self._next: dict[str, int] = {}  # base -> the suffix to try first

    # ---- names
    def fresh(self, hint: str = "v") -> str:
        base = _NAME_OK.sub("_", hint or "v").strip("_") or "v"
        if base[0].isdigit():
            base = "v" + base
        name = base
        if name in self._used:
            # base_1, base_2, ...: the first free one; those below the last one taken for
            # this base are all used still, so the search goes on from there (a search from
            # 1 made naming n values alike quadratic)
            i = self._next.get(base, 1)
            name = f"{base}_{i}"
            while name in self._used:
                i += 1
                name = f"{base}_{i}"
            self._next[base] = i + 1
        self._used.add(name)
        return name

    def party(self, name: str) -> int:
        """Index of party `name`, adding it in order of first appearance."""
        if name not in self.parties:
            self.parties.append(name)
        return self.parties.index(name)

    # ---- nodes
    def emit(self, op: str, operands=(), attrs=None, *, loc: Loc | None = None, name: str | None = None,
             types: list[TensorType] | None = None, regions=(), at_top: bool = False):
        """Append `op`; returns its Value (or a tuple for several results)."""
        d = ops.get(op)
        full = ops.full_attrs(d, attrs or {})
        operands = tuple(operands)
        if d.terminator:
            types = []
        elif d.declared:
            if types is None:
                raise ops.TypeRuleError(f"{op} needs its result types declared")
        else:
            types = ops.infer_types(op, [v.type for v in operands], full)
        results = tuple(Value(self.fresh(name or op), t) for t in types)
        node = Node(op, operands, results, make_attrs(full), tuple(regions), loc)
        # operand-free sources may go to the plan's top block, so that a load first met
        # inside a loop body is still visible after the loop
        self._blocks[0 if at_top and not operands else -1].append(node)
        if len(results) == 1:
            return results[0]
        return results

    # ---- regions
    def begin_region(self, param_types, hints=None) -> tuple[Value, ...]:
        hints = hints or ["p"] * len(param_types)
        params = tuple(Value(self.fresh(h), t) for h, t in zip(hints, param_types))
        self._blocks.append([])
        self._params.append(params)
        return params

    def end_region(self, yielded, loc: Loc | None = None) -> Region:
        self.emit("yield", yielded, loc=loc)
        nodes = self._blocks.pop()
        return Region(self._params.pop(), tuple(nodes))

    def abandon_region(self):
        self._blocks.pop()
        self._params.pop()

    def finish(self, outputs, loc: Loc | None = None) -> Graph:
        assert len(self._blocks) == 1, "unclosed region"
        self.emit("return", outputs, loc=loc)
        return Graph(self.name, tuple(self.parties), tuple(self._blocks[0]))
