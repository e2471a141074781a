"""The IR's data structures: small, slotted, immutable.

A ``Graph`` is a named plan over named parties. Its body is a sequence of ``Node``s in
SSA form ending in a ``return``. A node may own ``Region``s (a loop body), whose first
values are block parameters and whose last node is a ``yield``. Regions may use values
defined above them. Every node carries the user's source location.

Equality is structural, so ``parse(print(g)) == g`` means what it says.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from .types import TensorType

# attribute values are plain, hashable, printable data: no objects, no code
AttrValue = int | float | bool | str | None | tuple


@dataclass(frozen=True, slots=True)
class Loc:
    """Where a node comes from in the user's code.

    file, line: the innermost frame of the user's code that made the node (for an op of
    a library module such as ``nn.Conv2d``, the line that called the module).
    module: the path of the submodule whose ``forward`` made the node, relative to the
    module the user's code called (``"features.3"``, as in ``named_modules()`` and in the
    load tags of its weights); None outside submodules.
    module_class: that submodule's class name (``"Conv2d"``); only with module.
    """

    file: str
    line: int
    module: str | None = None
    module_class: str | None = None

    def __post_init__(self):
        if self.module_class is not None and self.module is None:
            raise ValueError("Loc: module_class needs the module path as well")

    def __str__(self) -> str:
        """``file:line``, then ``in <module> (<class>)`` inside a submodule."""
        at = f"{self.file}:{self.line}"
        if self.module is None:
            return at
        return f"{at} in {self.module}" + (f" ({self.module_class})" if self.module_class is not None else "")


@dataclass(frozen=True, slots=True)
class Value:
    name: str
    type: TensorType

    def __str__(self) -> str:
        return f"%{self.name}"


@dataclass(frozen=True, slots=True)
class Region:
    params: tuple[Value, ...]
    nodes: tuple["Node", ...]

    @property
    def yielded(self) -> tuple[Value, ...]:
        return self.nodes[-1].operands if self.nodes else ()


@dataclass(frozen=True, slots=True)
class Node:
    op: str
    operands: tuple[Value, ...] = ()
    results: tuple[Value, ...] = ()
    attrs: tuple[tuple[str, AttrValue], ...] = ()
    regions: tuple[Region, ...] = ()
    loc: Loc | None = None

    def attr(self, name: str, default=None):
        for k, v in self.attrs:
            if k == name:
                return v
        return default

    @property
    def attr_dict(self) -> dict:
        return dict(self.attrs)

    @property
    def result(self) -> Value:
        (r,) = self.results
        return r

    def where(self) -> str:
        """`file:line: op %result` for error messages; long names are shortened (`short`),
        so that a hostile plan's megabyte name never makes a megabyte message."""
        at = f"{short(str(self.loc), 200)}: " if self.loc else ""
        res = ", ".join(short(str(r)) for r in self.results[:4]) + (", ..." if len(self.results) > 4 else "")
        return f"{at}{short(str(self.op))}" + (f" {res}" if res else "")


def make_attrs(d: dict | None) -> tuple[tuple[str, AttrValue], ...]:
    """Canonical attribute tuple: sorted by name, lists turned into tuples."""
    if not d:
        return ()
    out = []
    for k, v in sorted(d.items()):
        if isinstance(v, list):
            v = tuple(v)
        out.append((k, v))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Graph:
    name: str
    parties: tuple[str, ...]
    nodes: tuple[Node, ...] = field(default=())

    @property
    def outputs(self) -> tuple[Value, ...]:
        if self.nodes and self.nodes[-1].op == "return":
            return self.nodes[-1].operands
        return ()

    def walk(self) -> Iterator[Node]:
        """Every node, nested regions included, in program order."""
        yield from _walk(self.nodes)

    def loads(self) -> list[Node]:
        return [n for n in self.walk() if n.op == "load"]

    def consts(self) -> list[Node]:
        return [n for n in self.walk() if n.op == "const"]

    def to_networkx(self):
        from .nx import to_networkx

        return to_networkx(self)

    def __str__(self) -> str:
        from .printer import print_graph

        return print_graph(self)


def _walk(nodes) -> Iterator[Node]:
    # iterative, so that the cost per node does not grow with the depth of nesting
    # (a `yield from` chain passes every node up through each enclosing level)
    stack = [iter(nodes)]
    while stack:
        for n in stack[-1]:
            yield n
            if n.regions:
                stack.extend(iter(r.nodes) for r in reversed(n.regions))
                break
        else:
            stack.pop()


def short(text: str, limit: int = 80) -> str:
    """`text`, or its start and end around a note of how much was left out when it is longer
    than `limit` characters: what error messages quote of names, values and tokens."""
    if len(text) <= limit:
        return text
    keep = max(limit - 30, 8)
    return f"{text[: keep - keep // 4]}...({len(text):,} characters)...{text[len(text) - keep // 4:]}"
