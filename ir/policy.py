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
    max_peak_bytes = "8 GiB"      # memory at any one party or the dealer (upper estimate)
    max_dealer_bytes = "8 GiB"    # correlated randomness the dealer makes and sends
    max_work = 1_000_000_000_000  # element operations at any one party, loop trips included
    truncation_security_bits = 20 # inputs are refused beyond the range in which a truncation
                                  # fails with probability above 2^-bits per element

Sources, sharing and structure (load, input, const, share, loop, yield, return) are
always allowed: they do nothing by themselves. Every violation names the op, the node,
the user's file:line and what to do instead. Checking never executes anything.

Limits. ``DEFAULT`` — the policy when none is given — and every policy that leaves a
limit out have the default limits, ``DEFAULT_LIMITS``: 100,000 nodes, 8 GiB peak memory
at any party or the dealer, 8 GiB of dealer material, 10^12 element operations per party
and a truncation failure bound of 2^-20 per element. Together they keep any one party of
a run under 8 GiB and about ten minutes of one core (10^12 estimated operations at ~2 *
10^9 a second); checking a plan costs 0.2 to 2 ms a node (its protocols run on shape-only
tensors, runtime/bounds.py) and at most about a minute (``bounds.MAX_OPS``). Write a
larger value, or ``"none"``, to lift a limit. The structural checks are here (``check``); the
resource limits need the runtime's bounds and are checked by
``planc.runtime.admission.admit``, which every run calls.

Policy files are validated: an unknown section or key, a value of the wrong type or out
of range is a ``PolicyFileError`` naming the file, the key and what was expected.
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


class PolicyFileError(PolicyError):
    """A policy file is not a valid policy: `source` the file, `key` the key at fault
    (dotted: ``limits.max_nodes``; None for the whole file), `problem` what was expected."""

    def __init__(self, source: str, key: str | None, problem: str):
        self.source, self.key, self.problem = source, key, problem
        self.violations = []
        ValueError.__init__(self, f"{source}: {key}: {problem}" if key else f"{source}: {problem}")


@dataclass(frozen=True)
class Violation:
    node: Node | None
    problem: str
    instead: str
    rule: str = "policy"  # which rule: ops, attrs, reveal, limits.<key> (a worker's refusal names it)

    def __str__(self):
        head = self.node.where() if self.node is not None else "plan"
        return f"{head}: {self.problem}; {self.instead}"


GiB = 2 ** 30

# the limits of the default policy, which a policy file's [limits] replace one by one
DEFAULT_LIMITS = {
    "max_nodes": 100_000,
    "max_loop_trips": None,
    "max_elements": None,
    "max_peak_bytes": 8 * GiB,
    "max_dealer_bytes": 8 * GiB,
    "max_work": 10 ** 12,
    "truncation_security_bits": 20,
}

# key -> (kind, least value): every limit is a whole number (bytes may carry a unit)
_LIMITS = {
    "max_nodes": ("count", 1),
    "max_loop_trips": ("count", 0),
    "max_elements": ("count", 1),
    "max_peak_bytes": ("bytes", 1),
    "max_dealer_bytes": ("bytes", 0),
    "max_work": ("count", 1),
    "truncation_security_bits": ("bits", 1),
}
_UNITS = {"b": 1, "kb": 10 ** 3, "mb": 10 ** 6, "gb": 10 ** 9, "tb": 10 ** 12,
          "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30, "tib": 2 ** 40}


@dataclass(frozen=True)
class Policy:
    name: str = "default"
    allow: frozenset | None = None  # None: every op
    deny: frozenset = frozenset()
    attrs: dict = field(default_factory=dict)  # op -> attr -> {"min":, "max":, "in": [...]}
    reveal_to: frozenset | None = None  # party names (and "all"); None: anyone
    max_nodes: int | None = DEFAULT_LIMITS["max_nodes"]
    max_loop_trips: int | None = DEFAULT_LIMITS["max_loop_trips"]
    max_elements: int | None = DEFAULT_LIMITS["max_elements"]
    # resource limits, checked by planc.runtime.admission.admit against the runtime's bounds
    max_peak_bytes: int | None = DEFAULT_LIMITS["max_peak_bytes"]
    max_dealer_bytes: int | None = DEFAULT_LIMITS["max_dealer_bytes"]
    max_work: int | None = DEFAULT_LIMITS["max_work"]
    truncation_security_bits: int = DEFAULT_LIMITS["truncation_security_bits"]

    # -------------------------------------------------------------- reading
    @classmethod
    def from_toml(cls, text: str, source: str = "<policy>") -> "Policy":
        try:
            d = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise PolicyFileError(source, None, f"not valid TOML: {e}") from None
        return cls.from_dict(d, source)

    @classmethod
    def read(cls, path) -> "Policy":
        p = Path(path)
        try:
            text = p.read_text()
        except UnicodeDecodeError:
            raise PolicyFileError(str(p), None, "not a text file (TOML is UTF-8)") from None
        return cls.from_toml(text, str(p))

    @classmethod
    def from_dict(cls, d: dict, source: str = "<policy>") -> "Policy":
        """A policy from parsed TOML; every key checked for its type and range."""

        def bad(key, msg):
            return PolicyFileError(source, key, msg)

        def table(value, key, keys=None):
            if not isinstance(value, dict):
                raise bad(key, f"expected a table ([{key}]), got {_show(value)}")
            if keys is not None:
                extra = sorted(set(value) - set(keys))
                if extra:
                    raise bad(f"{key}.{extra[0]}" if key else extra[0],
                              f"unknown key; {'a section' if not key else key} takes {', '.join(keys)}")
            return value

        sections = ("name", "ops", "attrs", "reveal", "limits")
        if not isinstance(d, dict):
            raise bad(None, "expected a TOML document")
        extra = sorted(set(d) - set(sections))
        if extra:
            raise bad(extra[0], f"unknown section(s) {', '.join(extra)}; expected {', '.join(sections)}")
        name = d.get("name", Path(source).stem if source != "<policy>" else "policy")
        if not isinstance(name, str) or not name or len(name) > 200:
            raise bad("name", f"expected the policy's name, a string of 1 to 200 characters, got {_show(name)}")
        o = table(d.get("ops", {}), "ops", ("allow", "deny"))
        for key in ("allow", "deny"):
            if key in o:
                names = o[key]
                if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
                    raise bad(f"ops.{key}", f"expected a list of op names (e.g. {key} = [\"relu\"]), "
                                            f"got {_show(names)}")
                for x in names:
                    if x not in ops.REGISTRY:
                        raise bad(f"ops.{key}", f"unknown op {x!r}")
        attrs = table(d.get("attrs", {}), "attrs")
        checked = {}
        for op_name, rules in attrs.items():
            opdef = ops.REGISTRY.get(op_name)
            if opdef is None:
                raise bad(f"attrs.{op_name}", "unknown op")
            table(rules, f"attrs.{op_name}")
            checked[op_name] = {a: _attr_rule(bad, f"attrs.{op_name}.{a}", opdef, a, rule)
                                for a, rule in rules.items()}
        rv = table(d.get("reveal", {}), "reveal", ("to",))
        reveal_to = None
        if "to" in rv:
            to = rv["to"]
            if not isinstance(to, list) or not all(isinstance(x, str) and x for x in to):
                raise bad("reveal.to", f"expected a list of party names (e.g. to = [\"bob\"]; \"all\": reveals to "
                                       f"everyone), got {_show(to)}")
            reveal_to = frozenset(to)
        lim = table(d.get("limits", {}), "limits")
        limits = dict(DEFAULT_LIMITS)
        for k, v in lim.items():
            if k not in _LIMITS:
                raise bad(f"limits.{k}", f"unknown limit; limits are {', '.join(_LIMITS)}")
            limits[k] = _limit(bad, f"limits.{k}", v, *_LIMITS[k])
        if limits["truncation_security_bits"] is None:
            raise bad("limits.truncation_security_bits", "expected a number of bits from 1 to 60, not \"none\"")
        return cls(
            name=name,
            allow=frozenset(o["allow"]) if "allow" in o else None,
            deny=frozenset(o.get("deny", [])),
            attrs=checked,
            reveal_to=reveal_to,
            **limits,
        )

    def to_dict(self) -> dict:
        """This policy as TOML-shaped plain data (lists, ints, strings; "none" for a lifted
        limit): ``Policy.from_dict(p.to_dict())`` gives it back, validated — for sending a
        policy to another process as JSON."""
        d: dict = {"name": self.name}
        ops_: dict = {}
        if self.allow is not None:
            ops_["allow"] = sorted(self.allow)
        if self.deny:
            ops_["deny"] = sorted(self.deny)
        if ops_:
            d["ops"] = ops_
        if self.attrs:
            d["attrs"] = {op: {a: dict(rule) for a, rule in rules.items()} for op, rules in self.attrs.items()}
        if self.reveal_to is not None:
            d["reveal"] = {"to": sorted(self.reveal_to)}
        d["limits"] = {k: ("none" if getattr(self, k) is None else getattr(self, k)) for k in DEFAULT_LIMITS}
        return d

    # -------------------------------------------------------------- checking
    def violations(self, g: Graph) -> list[Violation]:
        out = []
        count = 0
        for n in g.walk():
            count += 1
            out += self._node(g, n)
        if self.max_nodes is not None and count > self.max_nodes:
            out.append(Violation(None, f"{count} nodes, more than max_nodes = {self.max_nodes}",
                                 "fold repeated code into planc.fori_loop, or split the plan", "limits.max_nodes"))
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
            out.append(Violation(n, f"op {n.op} is not allowed by policy {self.name!r}", hint, "ops"))
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
                                         f"use {a} within {rng}", "attrs"))
                    break
        if n.op == "reveal" and self.reveal_to is not None:
            to = n.attr("to")
            who = "all" if to == -1 else g.parties[to]
            if who not in self.reveal_to:
                ok = ", ".join(sorted(self.reveal_to)) or "nobody"
                out.append(Violation(n, f"reveal to {who} is not allowed by policy {self.name!r} "
                                        f"(reveals may go to: {ok})",
                                     "reveal to an allowed party, or return the value unrevealed (it stays "
                                     "secret-shared at the workers)", "reveal"))
        if n.op == "loop" and self.max_loop_trips is not None and n.attr("trips") > self.max_loop_trips:
            out.append(Violation(n, f"loop of {n.attr('trips')} trips, more than max_loop_trips = "
                                    f"{self.max_loop_trips}", "run fewer iterations per plan", "limits.max_loop_trips"))
        if self.max_elements is not None:
            for r in n.results:
                if r.type.numel > self.max_elements:
                    out.append(Violation(n, f"{r} has {r.type.numel:,} elements, more than max_elements = "
                                            f"{self.max_elements:,}", "use a smaller batch", "limits.max_elements"))
                    break
        return out


def _fmt(v):
    return list(v) if isinstance(v, tuple) else v


def _show(v) -> str:
    """A TOML value as the error message names it: what it is and what it says."""
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "a table"}
    kind = next((k for t, k in kinds.items() if type(v) is t), type(v).__name__)
    text = repr(v)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({kind})"


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _limit(bad, key, v, kind, least):
    """A limit's value: a whole number >= least ("bytes": or a string with a unit,
    "8 GiB"); "none" lifts the limit."""
    if isinstance(v, str) and v.strip().lower() == "none":
        return None
    if kind == "bytes" and isinstance(v, str):
        parts = v.replace("_", "").split()
        if len(parts) == 1:  # "8GiB"
            num = parts[0].rstrip("KMGTkmgtiBb")
            parts = [num, parts[0][len(num):]] if num != parts[0] else parts
        try:
            num, unit = (float(parts[0]), parts[1].lower()) if len(parts) == 2 else (float(parts[0]), "b")
            n = num * _UNITS[unit]
        except (ValueError, KeyError, IndexError):
            raise bad(key, f"expected a size in bytes: a whole number or a string such as \"8 GiB\" or "
                           f"\"512 MB\" (units B, kB, MB, GB, TB, KiB, MiB, GiB, TiB), got {_show(v)}") from None
        if not (n == n and n < float("inf")) or n != int(n):
            raise bad(key, f"expected a whole number of bytes, got {_show(v)}")
        v = int(n)
    elif not _is_int(v):
        what = {"count": "a whole number", "bytes": "a size in bytes (a whole number, or a string such as "
                "\"8 GiB\")", "bits": "a whole number of bits from 1 to 60"}[kind]
        raise bad(key, f"expected {what} (or \"none\" for no limit), got {_show(v)}")
    if v < least:
        raise bad(key, f"expected at least {least} (or \"none\" for no limit), got {v}")
    if kind == "bits" and v > 60:
        raise bad(key, f"expected at most 60 bits (a 64-bit ring), got {v}")
    return v


def _attr_rule(bad, key, opdef, attr, rule):
    """One attribute rule {min, max, in}: values of the attribute's own kind."""
    if attr not in opdef.attrs:
        return _raise(bad(key, f"{opdef.name} has no attribute {attr!r}; it has "
                               f"{', '.join(opdef.attrs) or 'none'}"))
    if not isinstance(rule, dict) or not rule or set(rule) - {"min", "max", "in"}:
        return _raise(bad(key, f"expected a table with min, max and/or in (e.g. {attr} = {{ max = 2 }}), got "
                               f"{_show(rule)}"))
    kind = opdef.attrs[attr].kind.rstrip("?")
    elem = {"ints": "int", "floats": "float"}.get(kind, kind)
    ordered = elem in ("int", "float")

    def fits(x):
        if elem == "int":
            return _is_int(x)
        if elem == "float":
            return isinstance(x, (int, float)) and not isinstance(x, bool)
        if elem == "bool":
            return isinstance(x, bool)
        return isinstance(x, str)

    what = {"int": "an integer", "float": "a number", "bool": "a boolean", "str": "a string"}[elem]
    for b in ("min", "max"):
        if b in rule:
            if not ordered:
                return _raise(bad(f"{key}.{b}", f"{opdef.name}.{attr} is {what}; use in = [...], not {b}"))
            if not fits(rule[b]):
                return _raise(bad(f"{key}.{b}", f"expected {what} ({opdef.name}.{attr} is {kind}), got "
                                                f"{_show(rule[b])}"))
    if "in" in rule:
        if not isinstance(rule["in"], list) or not all(fits(x) for x in rule["in"]):
            return _raise(bad(f"{key}.in", f"expected a list of {what.split(' ', 1)[1]}s ({opdef.name}.{attr} is "
                                           f"{kind}), got {_show(rule['in'])}"))
    if "min" in rule and "max" in rule and rule["min"] > rule["max"]:
        return _raise(bad(key, f"min {rule['min']} is above max {rule['max']}"))
    return dict(rule)


def _raise(e):
    raise e


DEFAULT = Policy(name="default")
