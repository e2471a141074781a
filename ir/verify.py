"""The verifier: a graph is well formed, well typed, its visibilities are sound and it stays
within the bounds below, so that a plan written by a stranger is refused before anything
runs.

Errors read like a compiler's: the user's ``file:line``, the op and its result, what is
wrong, then a few printed lines of IR around the node. A message never pastes a hostile
plan's megabytes: names are shortened, the problem is cut at ``MAX_MESSAGE`` characters
and each quoted line at ``CONTEXT_WIDTH``.

``verify`` takes any object and raises nothing but ``VerifyError``; it runs in time linear
in the graph (one pass; the scope of a loop body is the enclosing scope plus the body's
own names, which are removed again when the body ends, so nothing is copied per loop).

Bounds (module constants; the parser refuses the same nesting and integers, with a
location; ``ir.policy`` can set tighter ones per data owner):

=================  ===========  ==========================================================
``MAX_DEPTH``      64           loops nested inside loops
``MAX_TRIPS``      2**31        trips of one loop, and times a loop body runs (its trips
                                times the trips of every loop around it)
``MAX_RANK``       8            dimensions of a tensor
``MAX_DIM``        2**31        size of one dimension
``MAX_ELEMENTS``   2**32        elements of one tensor
``MAX_PARTIES``    256          parties of a plan
``MAX_ATTR_ITEMS`` 1024         entries of one list in an attribute
``MAX_LIST_DEPTH`` 4            lists nested in an attribute value
``INT64``          -2**63 ..    every integer of an attribute, and a location's line
                   2**63 - 1
=================  ===========  ==========================================================
"""
from __future__ import annotations

from itertools import islice

from . import ops
from .graph import Graph, Loc, Node, Region, Value, make_attrs, short
from .types import INT_RANGE, PUBLIC, TensorType, Vis, join, private, scalar_problem

MAX_DEPTH = 64
MAX_TRIPS = 2**31
MAX_RANK = 8
MAX_DIM = 2**31
MAX_ELEMENTS = 2**32
MAX_PARTIES = 256
MAX_ATTR_ITEMS = 1024
MAX_LIST_DEPTH = 4
INT64 = INT_RANGE["i64"]
MAX_MESSAGE = 2000  # characters of a problem
CONTEXT_WIDTH = 160  # characters of each quoted line of IR


_COUNTER = TensorType("i64", (), PUBLIC)  # a loop counter's type


def clip(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text` cut to `limit` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[: limit - 60]} ...({len(text) - limit + 60:,} more characters)"


def num(x: int) -> str:
    """An integer for a message: in full unless it has more than 30 digits."""
    if -10**30 < x < 10**30:
        return str(x)
    return f"{'-' if x < 0 else ''}<an integer of {x.bit_length()} bits>"


def _safe_str(x) -> str:
    try:
        return str(x)
    except Exception:  # noqa: BLE001 — a message must never raise
        return f"<{type(x).__name__}>"


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
                 operand: int | None = None, attr: str | None = None, scan: int | None = None):
        msg = clip(_safe_str(msg))
        self.node = node
        self.problem = msg
        self.op = getattr(node, "op", None) if node is not None else None
        self.loc = getattr(node, "loc", None) if node is not None else None
        self.operand = operand
        self.attr = attr
        if node is not None:
            try:
                where = node.where()
            except Exception:  # noqa: BLE001 — a malformed node still gets its error
                where = f"<{type(node).__name__}>"
            text = f"{where}: {msg}"
        else:
            text = msg
        if node is not None and graph is not None:
            ctx = context(graph, node, scan=scan)
            if ctx:
                text += "\n" + ctx
        super().__init__(text)


def context(graph: Graph, node: Node, around: int = 2, scan: int | None = None) -> str:
    """A few printed lines of IR around `node`, the node's own marked with `>`.

    Lines are printed one at a time and printing stops `around` lines after the node, or
    after `scan` lines (None: no limit) when the node is not met; each line is cut at
    CONTEXT_WIDTH characters."""
    from .printer import iter_lines

    def find(same):
        before: list[str] = []
        try:
            it = iter_lines(graph)
            for line, n in islice(it, scan):
                if n is not None and same(n):
                    after = [ln for ln, _ in islice(it, around)]
                    return before[len(before) - around:] if around else [], line, after
                before.append(line)
                if len(before) > around:
                    del before[0]
        except Exception:  # noqa: BLE001 — the printer must never hide the real error
            return None
        return None

    # the printer says which node starts each line: find ours by identity, else by value
    found = find(lambda n: n is node)
    if found is None:
        def equal(n):
            try:
                return n == node
            except Exception:  # noqa: BLE001
                return False
        found = find(equal)
    if found is None:
        return ""
    before, line, after = found
    out = ["    " + clip(b.rstrip(), CONTEXT_WIDTH) for b in before]
    out.append("  > " + clip(line.rstrip(), CONTEXT_WIDTH))
    out += ["    " + clip(a.rstrip(), CONTEXT_WIDTH) for a in after]
    return "\n".join(out)


def verify(graph: Graph) -> Graph:
    """Raise VerifyError at the first problem; return the graph unchanged otherwise.

    Any object may be given; every problem, however malformed the object, is a VerifyError."""
    if not isinstance(graph, Graph):
        raise VerifyError(f"expected a Graph, got {type(graph).__name__}")
    try:
        _Verifier(graph).run()
    except VerifyError:
        raise
    except Exception as e:  # noqa: BLE001 — last resort: a malformed object is still a bad graph
        raise VerifyError(f"malformed graph: {type(e).__name__}: {short(_safe_str(e), 200)}") from e
    return graph


def type_problem(t: TensorType) -> str | None:
    """Why type `t` is beyond the bounds (rank, each dimension, elements), or None."""
    s = t.shape
    if len(s) > MAX_RANK:
        return f"rank {len(s):,} is more than the limit of {MAX_RANK} (MAX_RANK)"
    n = 1
    for d in s:
        if d > MAX_DIM:
            return f"dimension {num(d)} is more than the limit of {MAX_DIM:,} (MAX_DIM)"
        n *= d
    if n > MAX_ELEMENTS:
        return f"{n:,} elements, more than the limit of {MAX_ELEMENTS:,} per tensor (MAX_ELEMENTS)"
    return None


def attr_problem(v) -> str | None:
    """Why `v` is not an attribute value within the bounds, or None: plain data only
    (int, float, bool, str, None and tuples of them), integers within int64, lists at
    most MAX_ATTR_ITEMS long and MAX_LIST_DEPTH deep. Iterative: any nesting is safe."""
    stack = [(v, 0)]
    while stack:
        x, depth = stack.pop()
        if x is None or isinstance(x, (bool, float, str)):
            continue
        if isinstance(x, int):
            if not INT64[0] <= x <= INT64[1]:
                return f"integer {num(x)} is outside int64"
            continue
        if isinstance(x, tuple):
            if depth >= MAX_LIST_DEPTH:
                return f"lists nested deeper than {MAX_LIST_DEPTH} (MAX_LIST_DEPTH)"
            if len(x) > MAX_ATTR_ITEMS:
                return f"a list of {len(x):,} entries, more than the limit of {MAX_ATTR_ITEMS} (MAX_ATTR_ITEMS)"
            stack.extend((y, depth + 1) for y in x)
            continue
        return f"a {type(x).__name__} is not an attribute value (int, float, bool, str, none or a tuple of them)"
    return None


def _values_ok(vs) -> bool:
    return isinstance(vs, (tuple, list)) and all(
        type(v) is Value and isinstance(v.name, str) and type(v.type) is TensorType and type(v.type.vis) is Vis
        and isinstance(v.type.shape, tuple) for v in vs)


def _loc_problem(loc) -> str | None:
    if loc is None:
        return None
    if type(loc) is not Loc:
        return f"location is a {type(loc).__name__}, not a Loc"
    if not isinstance(loc.file, str) or not all(x is None or isinstance(x, str) for x in (loc.module, loc.module_class)):
        return "location file, module and class must be strings"
    if not isinstance(loc.line, int) or isinstance(loc.line, bool) or not INT64[0] <= loc.line <= INT64[1]:
        return f"location line {num(loc.line) if isinstance(loc.line, int) else type(loc.line).__name__} is not an int64"
    return None


class _Verifier:
    def __init__(self, g: Graph):
        self.g = g
        self.nparty = 0
        self.defined: set[str] = set()  # every value name of the graph
        self.scope: dict[str, Value] = {}  # the values visible where we are
        self.seen = 0  # nodes looked at so far: where an error's context is found
        self.attr_cache: dict = {}  # (op, attrs) -> (full attrs, canonical?)
        self.types_ok: dict = {}  # id -> a result type within the bounds
        self.typed: dict = {}  # (op, attrs, ids of operand and result types) whose types were checked

    def fail(self, node, msg, *, operand: int | None = None, attr: str | None = None):
        # the node is among the first `seen` nodes printed: a few lines each at most
        raise VerifyError(msg, node, self.g, operand=operand, attr=attr, scan=3 * self.seen + 16)

    def rule_failed(self, node, e: ops.TypeRuleError):
        # the node's own line names the op: the problem, and which operand or attribute
        self.fail(node, e.problem, operand=e.operand, attr=e.attr)

    def run(self):
        g = self.g
        if not isinstance(g.name, str) or not g.name:
            raise VerifyError("plan has no name")
        name = short(g.name)
        if not isinstance(g.parties, (tuple, list)):
            raise VerifyError(f"plan @{name}: parties must be a tuple of names, not a {type(g.parties).__name__}")
        if len(g.parties) > MAX_PARTIES:
            raise VerifyError(f"plan @{name}: {len(g.parties):,} parties, more than the limit of {MAX_PARTIES} "
                              "(MAX_PARTIES)")
        for p in g.parties:
            if not isinstance(p, str) or not p.isidentifier() or p == "all":
                raise VerifyError(f"plan @{name}: party name {short(repr(p))} must be an identifier other than 'all' "
                                  "(`reveal ... to all` means every party)")
        if len(set(g.parties)) != len(g.parties):
            raise VerifyError(f"plan @{name}: party names repeat: {short(', '.join(g.parties), 200)}")
        self.nparty = len(g.parties)
        nodes = g.nodes
        if not isinstance(nodes, (tuple, list)):
            raise VerifyError(f"plan @{name}: nodes must be a tuple, not a {type(nodes).__name__}")
        if not nodes or type(nodes[-1]) is not Node or nodes[-1].op != "return":
            raise VerifyError(f"plan @{name} does not end in a return")
        self.block(nodes, "return", 0, 1)

    def block(self, nodes, terminator, depth: int, runs: int) -> list[str]:
        """Check a block; returns the names it added to the scope (its caller removes them)."""
        added = []
        last = len(nodes) - 1
        scope = self.scope
        for i, n in enumerate(nodes):
            if type(n) is not Node:
                raise VerifyError(f"a block holds a {type(n).__name__}, not a Node")
            op = n.op
            if type(op) is not str:
                raise VerifyError(f"a node's op is a {type(op).__name__}, not a name")
            loc = n.loc
            if loc is not None and not (type(loc) is Loc and type(loc.file) is str and type(loc.line) is int
                                        and INT64[0] <= loc.line <= INT64[1] and loc.module is None):
                problem = _loc_problem(loc)
                if problem:
                    raise VerifyError(f"{short(op)}: {problem}")
            self.seen += 1
            if op == "return" or op == "yield":
                if i != last or op != terminator:
                    self.fail(n, f"{op} must be the last node of a {'plan' if terminator == 'return' else 'loop body'}")
            elif i == last:
                self.fail(n, f"block ends without a {terminator}")
            self.node(n, op, depth, runs)
            for r in n.results:
                scope[r.name] = r
                added.append(r.name)
        return added

    def node(self, n: Node, op: str, depth: int, runs: int):
        d = ops.REGISTRY.get(op)
        if d is None:
            self.fail(n, f"unknown op {short(repr(op))}")
        operands, results, attrs, regions = n.operands, n.results, n.attrs, n.regions
        if not isinstance(operands, (tuple, list)) or not isinstance(results, (tuple, list)):
            self.fail(n, "operands and results must be tuples of Values")
        scope = self.scope
        for i, v in enumerate(operands):
            if type(v) is not Value:
                self.fail(n, f"operand {i} is a {type(v).__name__}, not a Value", operand=i)
            defn = scope.get(v.name) if type(v.name) is str else None
            if defn is None:
                self.fail(n, f"operand %{short(_safe_str(v.name))} is used before it is defined or outside its "
                             "scope", operand=i)
            if defn is not v and defn != v:
                self.fail(n, f"operand %{short(v.name)} is {short(_safe_str(v.type), 200)} here but {defn.type} "
                             "where it is defined", operand=i)
        types_ok = self.types_ok
        for r in results:
            if type(r) is not Value or type(r.name) is not str:
                self.fail(n, f"a result is a {type(r).__name__}, not a Value with a name")
            if r.name in self.defined:
                self.fail(n, f"value %{short(r.name)} is defined twice")
            self.defined.add(r.name)
            if id(r.type) not in types_ok:
                self.check_type(n, r.type)
        if type(attrs) is not tuple:
            self.fail(n, "attributes must be a tuple of (name, value) pairs")
        for a in attrs:
            if type(a) is not tuple or len(a) != 2 or type(a[0]) is not str:
                self.fail(n, "attributes must be a tuple of (name, value) pairs")
            problem = attr_problem(a[1])
            if problem:
                self.fail(n, f"attribute {short(a[0])}: {problem}", attr=a[0])
        key = (op, attrs)
        hit = self.attr_cache.get(key)
        if hit is None:
            try:
                full = ops.full_attrs(d, dict(attrs))
            except ops.TypeRuleError as e:
                self.rule_failed(n, e)
            hit = self.attr_cache[key] = (full, make_attrs(full) == attrs)
        full, canonical = hit
        if not canonical:
            self.fail(n, "attributes are not canonical (defaults must be spelled out, sorted by name)")
        if not isinstance(regions, (tuple, list)) or regions and not all(
                type(r) is Region and _values_ok(r.params) and isinstance(r.nodes, (tuple, list)) for r in regions):
            self.fail(n, "regions must be a tuple of Regions")
        if len(regions) != d.regions:
            self.fail(n, f"{op} needs {d.regions} region(s), has {len(regions)}")
        if d.terminator:
            if results:
                self.fail(n, f"{op} has no results")
            return
        if d.declared:
            self.declared(n, full, depth, runs)
            return
        # the same op on the same types (the very objects: a reader shares them) gives the
        # same answer: ask the type rule once
        key = (op, attrs, tuple([id(v.type) for v in operands]), tuple([id(r.type) for r in results]))
        if key not in self.typed:
            types = [v.type for v in operands]
            try:
                want = ops.infer_types(op, types, full)
            except ops.TypeRuleError as e:
                self.rule_failed(n, e)
            except Exception as e:  # noqa: BLE001 — a type rule's surprise is still this node's error
                self.fail(n, f"{op}'s type rule fails on these operands and attributes "
                             f"({type(e).__name__}: {short(_safe_str(e), 200)})")
            got = [r.type for r in results]
            if want != got:
                self.fail(n, f"result type is {', '.join(map(str, got))} but {op} of "
                             f"{', '.join(map(str, types))} gives {', '.join(map(_safe_str, want))}")
            self.typed[key] = types  # keeps the types alive: their ids stay theirs
        if op == "reveal" and full["to"] >= self.nparty:
            self.fail(n, f"reveal to party {num(full['to'])}, but the plan has {self.nparty} parties", attr="to")

    def check_type(self, n: Node, t: TensorType):
        if type(t) is not TensorType or type(t.vis) is not Vis or type(t.shape) is not tuple:
            self.fail(n, f"a result's type is a {type(t).__name__}, not a TensorType")
        problem = type_problem(t)
        if problem:
            self.fail(n, f"type: {problem}")
        if t.vis.is_private and t.vis.owner >= self.nparty:
            what = t if t.vis.owner < 10**30 else f"private<{num(t.vis.owner)}>"
            self.fail(n, f"{what} names party {num(t.vis.owner)}, but the plan has {self.nparty} parties")
        self.types_ok[id(t)] = t  # keeps the type alive: its id stays its own

    def one_result(self, n):
        if len(n.results) != 1:
            self.fail(n, f"{n.op} has exactly one result")
        return n.results[0].type

    def declared(self, n: Node, a: dict, depth: int, runs: int):
        nparty = self.nparty
        if n.op == "load":
            t = self.one_result(n)
            if not (0 <= a["owner"] < nparty):
                self.fail(n, f"load from party {num(a['owner'])}, but the plan has {nparty} parties", attr="owner")
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
                self.fail(n, f"call of a model at party {num(a['owner'])}, but the plan has {nparty} parties",
                          attr="owner")
            if not n.results:
                self.fail(n, "call needs at least one result")
            vis = join(private(a["owner"]), *(v.type.vis for v in n.operands))
            if vis.is_secret and any(v.type.vis.is_private for v in n.operands):
                self.fail(n, "call mixes plaintext of another party with the model: share the inputs first")
            for r in n.results:
                if r.type.vis != vis:
                    self.fail(n, f"call result {short(str(r))} should be {vis}, not {r.type.vis}")
        elif n.op == "loop":
            self.loop(n, a, depth, runs)

    def loop(self, n: Node, a: dict, depth: int, runs: int):
        trips = a["trips"]
        if trips < 0:
            self.fail(n, "loop trips must be >= 0", attr="trips")
        if trips > MAX_TRIPS:
            self.fail(n, f"loop of {trips:,} trips, more than the limit of {MAX_TRIPS:,} (MAX_TRIPS)", attr="trips")
        if runs * trips > MAX_TRIPS:
            self.fail(n, f"loop body would run {runs * trips:,} times (its trips times those of the loops around "
                         f"it), more than the limit of {MAX_TRIPS:,} (MAX_TRIPS)", attr="trips")
        if depth >= MAX_DEPTH:
            self.fail(n, f"loops nested deeper than {MAX_DEPTH} (MAX_DEPTH)")
        (body,) = n.regions
        carried = [r.type for r in n.results]
        if [v.type for v in n.operands] != carried:
            self.fail(n, "loop initial values must have the loop's result types")
        if len(body.params) != len(carried) + 1:
            self.fail(n, f"loop body takes (i, {len(carried)} carried values), has {len(body.params)} params")
        i = body.params[0]
        if i.type is not _COUNTER and i.type != _COUNTER:
            self.fail(n, f"loop counter %{short(i.name)} must be public i64[], not {i.type}")
        if [p.type for p in body.params[1:]] != carried:
            self.fail(n, "loop body params must have the loop's result types")
        names = []
        for p in body.params:
            if p.name in self.defined:
                self.fail(n, f"value %{short(p.name)} is defined twice")
            self.defined.add(p.name)
            self.scope[p.name] = p
            names.append(p.name)
        names += self.block(body.nodes, "yield", depth + 1, runs * trips)
        for name in names:  # what the body defined is not visible after it
            del self.scope[name]
        got = [v.type for v in body.yielded]
        if got != carried:
            self.fail(body.nodes[-1], f"loop body yields {', '.join(map(str, got))} but carries "
                                      f"{', '.join(map(str, carried))}")
