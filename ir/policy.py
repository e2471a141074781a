"""Policies: what a data owner allows a plan to do, written in TOML.

    name = "hospital"
    [ops]
    allow = ["conv2d", "linear", "relu", "avg_pool2d", "flatten", "reveal"]   # or: deny = [...]
    [attrs.conv2d]
    stride = { max = 2 }          # every entry of an ints attribute is checked
    groups = { in = [1] }
    [reveal]
    to = ["bob"]                  # parties that may receive reveals ("all": reveal to everyone)
    [limits]
    max_nodes = 5000              # nodes, loop bodies counted once
    max_loop_trips = 1000
    max_elements = 10_000_000     # elements of any one tensor

Sources, sharing and structure (load, input, const, share, loop, yield, return) are
always allowed: they do nothing by themselves. Every violation names the op, the node,
the user's file:line and what to do instead. Checking never executes anything.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from . import ops
from .graph import Graph, Node

# what to suggest when a policy refuses an op: the op's "hint" rule
for _d, _hint in (
    (ops.OP.max_pool2d, "use avg_pool2d (no comparisons)"),
    (ops.OP.exp, "reveal the logits and apply exp after the reveal, or ask the data owner to allow exp"),
    (ops.OP.softmax, "reveal the logits and apply softmax after the reveal (argmax is unchanged)"),
    (ops.OP.log_softmax, "reveal the logits and apply log_softmax after the reveal"),
    (ops.OP.sigmoid, "use relu, or ask the data owner to allow sigmoid"),
    (ops.OP.tanh, "use relu, or ask the data owner to allow tanh"),
    (ops.OP.argmax, "reveal the scores to the party allowed to see them and take argmax there"),
    (ops.OP.call, "trace the model's architecture into the plan instead of linking a remote model"),
):
    ops.register("hint", _d)(_hint)


class PolicyError(ValueError):
    """A plan breaks a policy; `violations` lists every problem."""

    def __init__(self, violations, policy_name="policy"):
        self.violations = list(violations)
        lines = [f"plan violates {policy_name} ({len(self.violations)} problem"
                 f"{'s' if len(self.violations) != 1 else ''}):"]
        lines += [f"  {v}" for v in self.violations]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Violation:
    node: Node | None
    problem: str
    instead: str

    def __str__(self):
        head = self.node.where() if self.node is not None else "plan"
        return f"{head}: {self.problem}; {self.instead}"


@dataclass(frozen=True)
class Policy:
    name: str = "default"
    allow: frozenset | None = None  # None: every op
    deny: frozenset = frozenset()
    attrs: dict = field(default_factory=dict)  # op -> attr -> {"min":, "max":, "in": [...]}
    reveal_to: frozenset | None = None  # party names (and "all"); None: anyone
    max_nodes: int | None = None
    max_loop_trips: int | None = None
    max_elements: int | None = None

    # -------------------------------------------------------------- reading
    @classmethod
    def from_toml(cls, text: str, source: str = "<policy>") -> "Policy":
        try:
            d = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{source}: not valid TOML: {e}") from None
        return cls.from_dict(d, source)

    @classmethod
    def read(cls, path) -> "Policy":
        p = Path(path)
        return cls.from_toml(p.read_text(), str(p))

    @classmethod
    def from_dict(cls, d: dict, source: str = "<policy>") -> "Policy":
        def bad(msg):
            return ValueError(f"{source}: {msg}")

        known = {"name", "ops", "attrs", "reveal", "limits"}
        extra = set(d) - known
        if extra:
            raise bad(f"unknown section(s) {', '.join(sorted(extra))}; expected {', '.join(sorted(known))}")
        o = d.get("ops", {})
        for key in ("allow", "deny"):
            for name in o.get(key, []):
                if name not in ops.REGISTRY:
                    raise bad(f"ops.{key}: unknown op {name!r}")
        attrs = d.get("attrs", {})
        for op_name, rules in attrs.items():
            opdef = ops.REGISTRY.get(op_name)
            if opdef is None:
                raise bad(f"attrs.{op_name}: unknown op")
            for a, rule in rules.items():
                if a not in opdef.attrs:
                    raise bad(f"attrs.{op_name}.{a}: {op_name} has no attribute {a!r}")
                if not isinstance(rule, dict) or set(rule) - {"min", "max", "in"}:
                    raise bad(f"attrs.{op_name}.{a}: expected a table with min, max and/or in")
        lim = d.get("limits", {})
        for k in lim:
            if k not in ("max_nodes", "max_loop_trips", "max_elements"):
                raise bad(f"limits.{k}: unknown limit")
        rv = d.get("reveal", {})
        return cls(
            name=d.get("name", Path(source).stem if source != "<policy>" else "policy"),
            allow=frozenset(o["allow"]) if "allow" in o else None,
            deny=frozenset(o.get("deny", [])),
            attrs=attrs,
            reveal_to=frozenset(rv["to"]) if "to" in rv else None,
            max_nodes=lim.get("max_nodes"),
            max_loop_trips=lim.get("max_loop_trips"),
            max_elements=lim.get("max_elements"),
        )

    # -------------------------------------------------------------- checking
    def violations(self, g: Graph) -> list[Violation]:
        out = []
        count = 0
        for n in g.walk():
            count += 1
            out += self._node(g, n)
        if self.max_nodes is not None and count > self.max_nodes:
            out.append(Violation(None, f"{count} nodes, more than max_nodes = {self.max_nodes}",
                                 "fold repeated code into planc.fori_loop, or split the plan"))
        return out

    def check(self, g: Graph) -> Graph:
        v = self.violations(g)
        if v:
            raise PolicyError(v, f"policy {self.name!r}")
        return g

    def _node(self, g, n: Node) -> list[Violation]:
        out = []
        d = ops.get(n.op)
        allowed = d.always_allowed or ((self.allow is None or n.op in self.allow) and n.op not in self.deny)
        if not allowed:
            hint = d.rule("hint") or f"ask the data owner to allow {n.op}, or express it with allowed ops"
            out.append(Violation(n, f"op {n.op} is not allowed by policy {self.name!r}", hint))
        for a, rule in self.attrs.get(n.op, {}).items():
            v = n.attr(a)
            values = v if isinstance(v, tuple) else (v,)
            for x in values:
                if x is None:
                    continue
                if ("min" in rule and x < rule["min"]) or ("max" in rule and x > rule["max"]) or (
                        "in" in rule and x not in rule["in"]):
                    rng = ", ".join(f"{k} {rule[k]}" for k in ("min", "max", "in") if k in rule)
                    out.append(Violation(n, f"{a}={_fmt(v)} is outside what policy {self.name!r} allows ({rng})",
                                         f"use {a} within {rng}"))
                    break
        if n.op == "reveal" and self.reveal_to is not None:
            to = n.attr("to")
            who = "all" if to == -1 else g.parties[to]
            if who not in self.reveal_to:
                ok = ", ".join(sorted(self.reveal_to)) or "nobody"
                out.append(Violation(n, f"reveal to {who} is not allowed by policy {self.name!r} "
                                        f"(reveals may go to: {ok})",
                                     "reveal to an allowed party, or return the value unrevealed (it stays "
                                     "secret-shared at the workers)"))
        if n.op == "loop" and self.max_loop_trips is not None and n.attr("trips") > self.max_loop_trips:
            out.append(Violation(n, f"loop of {n.attr('trips')} trips, more than max_loop_trips = "
                                    f"{self.max_loop_trips}", "run fewer iterations per plan"))
        if self.max_elements is not None:
            for r in n.results:
                if r.type.numel > self.max_elements:
                    out.append(Violation(n, f"{r} has {r.type.numel:,} elements, more than max_elements = "
                                            f"{self.max_elements:,}", "use a smaller batch"))
                    break
        return out


def _fmt(v):
    return list(v) if isinstance(v, tuple) else v


DEFAULT = Policy(name="default")
