"""The verifier: a graph is well formed, well typed and its visibilities are sound.

Errors read like a compiler's: the user's ``file:line``, the op and its result, what is
wrong, then a few printed lines of IR around the node.
"""
from __future__ import annotations

from . import ops
from .graph import Graph, Node, make_attrs
from .types import PUBLIC, TensorType, join, private, scalar_problem


class VerifyError(ValueError):
    """A graph breaks an invariant of the IR.

    The fields say where and what, so that callers never parse the message:
    node:    the node at fault, or None for a problem of the whole plan (its name, parties);
    op:      that node's op (None without a node);
    loc:     that node's source location, if any;
    operand: index of the operand at fault, when one is;
    attr:    name of the attribute at fault, when one is;
    problem: the bare description, without location or context.
    The message is ``<loc>: <op> %<result>: <problem>`` and a few printed lines of IR
    around the node.
    """

    def __init__(self, msg: str, node: Node | None = None, graph: Graph | None = None, *,
                 operand: int | None = None, attr: str | None = None):
        self.node = node
        self.problem = msg
        self.op = node.op if node is not None else None
        self.loc = node.loc if node is not None else None
        self.operand = operand
        self.attr = attr
        text = f"{node.where()}: {msg}" if node is not None else msg
        if node is not None and graph is not None:
            ctx = context(graph, node)
            if ctx:
                text += "\n" + ctx
        super().__init__(text)


def context(graph: Graph, node: Node, around: int = 2) -> str:
    """A few printed lines of IR around `node`, the node's own marked with `>`."""
    try:
        from .printer import print_lines

        lines = print_lines(graph)
    except Exception:  # the printer must never hide the real error
        return ""
    # the printer says which node starts each line: find ours by identity, else by value
    at = next((i for i, (_, n) in enumerate(lines) if n is node), None)
    if at is None:
        at = next((i for i, (_, n) in enumerate(lines) if n is not None and n == node), None)
    if at is None:
        return ""
    lo, hi = max(0, at - around), min(len(lines), at + around + 1)
    return "\n".join(("  > " if j == at else "    ") + lines[j][0].rstrip() for j in range(lo, hi))


def verify(graph: Graph) -> Graph:
    """Raise VerifyError at the first problem; return the graph unchanged otherwise."""
    _Verifier(graph).run()
    return graph


class _Verifier:
    def __init__(self, g: Graph):
        self.g = g
        self.defined: set[str] = set()

    def fail(self, node, msg, *, operand: int | None = None, attr: str | None = None):
        raise VerifyError(msg, node, self.g, operand=operand, attr=attr)

    def rule_failed(self, node, e: ops.TypeRuleError):
        # the node's own line names the op: the problem, and which operand or attribute
        self.fail(node, e.problem, operand=e.operand, attr=e.attr)

    def run(self):
        g = self.g
        if not g.name:
            raise VerifyError("plan has no name")
        for p in g.parties:
            if not p.isidentifier() or p == "all":
                raise VerifyError(f"plan @{g.name}: party name {p!r} must be an identifier other than 'all' "
                                  "(`reveal ... to all` means every party)")
        if len(set(g.parties)) != len(g.parties):
            raise VerifyError(f"plan @{g.name}: party names repeat: {', '.join(g.parties)}")
        if not g.nodes or g.nodes[-1].op != "return":
            raise VerifyError(f"plan @{g.name} does not end in a return")
        self.block(g.nodes, "return", scope=set())

    def block(self, nodes, terminator, scope: set[str]):
        scope = set(scope)
        for i, n in enumerate(nodes):
            last = i == len(nodes) - 1
            if n.op in ("return", "yield"):
                if not last or n.op != terminator:
                    self.fail(n, f"{n.op} must be the last node of a {'plan' if terminator == 'return' else 'loop body'}")
            elif last:
                self.fail(n, f"block ends without a {terminator}")
            self.node(n, scope)
            for r in n.results:
                scope.add(r.name)

    def node(self, n: Node, scope: set[str]):
        if n.op not in ops.REGISTRY:
            self.fail(n, f"unknown op {n.op!r}")
        d = ops.REGISTRY[n.op]
        for i, v in enumerate(n.operands):
            if v.name not in scope:
                self.fail(n, f"operand %{v.name} is used before it is defined or outside its scope", operand=i)
        for r in n.results:
            if r.name in self.defined:
                self.fail(n, f"value %{r.name} is defined twice")
            self.defined.add(r.name)
        try:
            full = ops.full_attrs(d, n.attr_dict)
        except ops.TypeRuleError as e:
            self.rule_failed(n, e)
        if make_attrs(full) != n.attrs:
            self.fail(n, "attributes are not canonical (defaults must be spelled out, sorted by name)")
        for t in [v.type for v in n.operands] + [v.type for v in n.results]:
            if t.vis.is_private and t.vis.owner >= len(self.g.parties):
                self.fail(n, f"{t} names party {t.vis.owner}, but the plan has {len(self.g.parties)} parties")
        if len(n.regions) != d.regions:
            self.fail(n, f"{n.op} needs {d.regions} region(s), has {len(n.regions)}")
        if d.terminator:
            if n.results:
                self.fail(n, f"{n.op} has no results")
            return
        if d.declared:
            self.declared(n, full, scope)
            return
        try:
            want = ops.infer_types(n.op, [v.type for v in n.operands], full)
        except ops.TypeRuleError as e:
            self.rule_failed(n, e)
        got = [r.type for r in n.results]
        if want != got:
            self.fail(n, f"result type is {', '.join(map(str, got))} but {n.op} of "
                         f"{', '.join(str(v.type) for v in n.operands)} gives {', '.join(map(str, want))}")
        if n.op == "reveal" and full["to"] >= len(self.g.parties):
            self.fail(n, f"reveal to party {full['to']}, but the plan has {len(self.g.parties)} parties", attr="to")

    def one_result(self, n):
        if len(n.results) != 1:
            self.fail(n, f"{n.op} has exactly one result")
        return n.results[0].type

    def declared(self, n: Node, a: dict, scope):
        nparty = len(self.g.parties)
        if n.op == "load":
            t = self.one_result(n)
            if not (0 <= a["owner"] < nparty):
                self.fail(n, f"load from party {a['owner']}, but the plan has {nparty} parties", attr="owner")
            if t.vis != private(a["owner"]):
                self.fail(n, f"load from party {a['owner']} must be private<{a['owner']}>, not {t.vis}")
            if not a["tag"]:
                self.fail(n, "load needs a non-empty tag", attr="tag")
        elif n.op in ("input", "const"):
            t = self.one_result(n)
            if t.vis != PUBLIC:
                self.fail(n, f"{n.op} must be public, not {t.vis}")
            if n.op == "const":
                if (a["name"] is None) == (a["value"] is None):
                    self.fail(n, "const needs exactly one of name= (a tensor of the plan) or value= (a scalar)")
                if a["value"] is not None and t.shape != ():
                    self.fail(n, f"an inline const is a scalar, not {t}")
                if a["value"] is not None:
                    problem = scalar_problem(a["value"], t.dtype)
                    if problem:
                        self.fail(n, f"inline const {problem}", attr="value")
            elif a["index"] < 0:
                self.fail(n, "input index must be >= 0", attr="index")
        elif n.op == "call":
            if not (0 <= a["owner"] < nparty):
                self.fail(n, f"call of a model at party {a['owner']}, but the plan has {nparty} parties", attr="owner")
            if not n.results:
                self.fail(n, "call needs at least one result")
            vis = join(private(a["owner"]), *(v.type.vis for v in n.operands))
            if vis.is_secret and any(v.type.vis.is_private for v in n.operands):
                self.fail(n, "call mixes plaintext of another party with the model: share the inputs first")
            for r in n.results:
                if r.type.vis != vis:
                    self.fail(n, f"call result {r} should be {vis}, not {r.type.vis}")
        elif n.op == "loop":
            self.loop(n, a, scope)

    def loop(self, n: Node, a: dict, scope):
        if a["trips"] < 0:
            self.fail(n, "loop trips must be >= 0", attr="trips")
        (body,) = n.regions
        carried = [r.type for r in n.results]
        if [v.type for v in n.operands] != carried:
            self.fail(n, "loop initial values must have the loop's result types")
        if len(body.params) != len(carried) + 1:
            self.fail(n, f"loop body takes (i, {len(carried)} carried values), has {len(body.params)} params")
        i = body.params[0]
        if i.type != TensorType("i64", (), PUBLIC):
            self.fail(n, f"loop counter %{i.name} must be public i64[], not {i.type}")
        if [p.type for p in body.params[1:]] != carried:
            self.fail(n, "loop body params must have the loop's result types")
        inner = set(scope)
        for p in body.params:
            if p.name in self.defined:
                self.fail(n, f"value %{p.name} is defined twice")
            self.defined.add(p.name)
            inner.add(p.name)
        self.block(body.nodes, "yield", inner)
        got = [v.type for v in body.yielded]
        if got != carried:
            self.fail(body.nodes[-1], f"loop body yields {', '.join(map(str, got))} but carries "
                                      f"{', '.join(map(str, carried))}")

