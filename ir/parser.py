"""Read the text format (its layout: ``printer.py``) back into a ``Graph``.

The grammar is ``grammar.lark`` next to this file, parsed with LALR. The tree is turned
into nodes exactly as ``Builder`` would make them: attributes completed with their
defaults, operands carrying the type of their definition, result types as written.
Names, scopes and attributes are checked here because only here do we still know where
they were written; types and visibilities are the verifier's job (``parse_and_verify``).

Every error is a ``ParseError`` whose message starts ``file:line:col: ``; its fields
(file, line, column, problem, and op / attr where they apply) say the same as data.
"""
from __future__ import annotations

import functools
import json
from importlib import resources

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from . import ops
from .graph import Graph, Loc, Node, Region, Value, make_attrs
from .types import TensorType, Vis


class ParseError(ValueError):
    """Text that is not a plan. file, line, column: where (1-based); problem: what, without
    the location; op, attr: the op and the attribute at fault, when the problem is one."""

    def __init__(self, file: str, line: int, column: int, problem: str, *, op: str | None = None,
                 attr: str | None = None):
        self.file, self.line, self.column, self.problem = file, line, column, problem
        self.op, self.attr = op, attr
        super().__init__(f"{file}:{line}:{column}: {problem}")


@functools.lru_cache(maxsize=None)
def _lark() -> Lark:
    text = resources.files(__package__).joinpath("grammar.lark").read_text(encoding="utf-8")
    return Lark(text, parser="lalr", maybe_placeholders=True)


def parse_graph(text: str, file: str = "<text>") -> Graph:
    """Parse one plan; raises ParseError. Does not verify (see parse_and_verify)."""
    try:
        tree = _lark().parse(text)
    except UnexpectedInput as e:
        raise _syntax_error(e, text, file) from None
    return _Reader(file).graph(tree)


def parse_and_verify(text: str, file: str = "<text>") -> Graph:
    from .verify import verify

    return verify(parse_graph(text, file))


# ---------------------------------------------------------------- syntax errors

# how the regex terminals of the grammar read in a message
_TERMINALS = {
    "GRAPH_NAME": "@name", "VALUE": "%value", "NAME": "a name", "OP_NAME": "an op name",
    "INT": "an integer", "SIGNED_INT": "an integer", "FLOAT": "a float", "STRING": "a string",
}


def _describe(names) -> str:
    lark = _lark()
    out = set()
    for n in names:
        if n in _TERMINALS:
            out.add(_TERMINALS[n])
            continue
        try:
            pat = lark.get_terminal(n).pattern
        except KeyError:
            out.add(n.lower())
            continue
        out.add(f"'{pat.value}'" if pat.type == "str" else n.lower())
    return ", ".join(sorted(out))


def _syntax_error(e: UnexpectedInput, text: str, file: str) -> ParseError:
    line, col = getattr(e, "line", -1), getattr(e, "column", -1)
    if isinstance(e, UnexpectedToken) and e.token.type != "$END":
        what = f"unexpected {e.token.value!r}"
        expected = e.expected
    elif isinstance(e, UnexpectedCharacters):
        what = f"unexpected character {text[e.pos_in_stream]!r}"
        expected = e.allowed or ()
    else:  # end of input: point just past the last character
        what = "unexpected end of input"
        expected = getattr(e, "expected", ())
        line = text.count("\n") + 1
        col = len(text) - (text.rfind("\n") + 1) + 1
    if line is None or line < 1:
        line, col = 1, 1
    msg = what + (f"; expected {_describe(expected)}" if expected else "")
    return ParseError(file, line, col, msg)


# ---------------------------------------------------------------- tree -> graph


def _culprit(d: ops.OpDef, given: dict) -> str | None:
    """The attribute that ops.full_attrs refuses, found from the declaration, not from the
    message: the first unknown one as written, else the first ill-kinded or missing one in
    declaration order (the order full_attrs checks them in). Used when the TypeRuleError
    does not say (its optional `attr` field)."""
    for k in given:
        if k not in d.attrs:
            return k
    for k, spec in d.attrs.items():
        if k in given:
            v = tuple(given[k]) if isinstance(given[k], list) else given[k]
            if not ops.check_attr(spec.kind, v):
                return k
        elif spec.required:
            return k
    return None


def _items(t):
    """Children of an optional list rule; lark puts a None where it was left out."""
    return () if t is None else [c for c in t.children if c is not None]


class _Reader:
    def __init__(self, file: str):
        self.file = file
        self.parties: dict[str, int] = {}
        self.defined: dict[str, Token] = {}  # every value name of the graph, where first defined

    def fail(self, tok, msg, **fields) -> ParseError:
        return ParseError(self.file, getattr(tok, "line", 1) or 1, getattr(tok, "column", 1) or 1, msg, **fields)

    def graph(self, tree: Tree) -> Graph:
        name, *rest = tree.children
        nodes = []
        for c in rest:
            if isinstance(c, Tree) and c.data == "party":
                pname, idx = c.children
                if pname in self.parties:
                    raise self.fail(pname, f"party {pname} is listed twice")
                if int(idx) != len(self.parties):
                    raise self.fail(idx, f"party {pname} should have index {len(self.parties)}, not {idx}")
                self.parties[str(pname)] = int(idx)
            elif c is not None:
                nodes.append(c)
        body = self.block(nodes, {})
        return Graph(str(name)[1:], tuple(self.parties), tuple(body))

    def block(self, trees, scope: dict[str, Value]) -> list[Node]:
        out = []
        for t in trees:
            n = getattr(self, "node_" + t.data)(t, scope)
            for r in n.results:
                scope[r.name] = r
            out.append(n)
        return out

    # ---- pieces
    def party(self, tok) -> int:
        if tok.type == "ALL":
            return -1
        try:
            return self.parties[str(tok)]
        except KeyError:
            known = ", ".join(self.parties) or "none"
            raise self.fail(tok, f"unknown party {tok}; the plan's parties are {known}") from None

    def string(self, tok) -> str:
        try:
            return json.loads(tok)
        except json.JSONDecodeError as e:
            raise self.fail(tok, f"bad string {tok}: {e.msg}") from None

    def operands(self, t, scope) -> tuple[Value, ...]:
        out = []
        for tok in _items(t):
            v = scope.get(tok[1:])
            if v is None:
                raise self.fail(tok, f"undefined value {tok}")
            out.append(v)
        return tuple(out)

    def results(self, t, types_tree, at) -> tuple[Value, ...]:
        toks = _items(t)
        types = self.types(types_tree)
        if len(toks) != len(types):
            raise self.fail(toks[0] if toks else at,
                            f"{len(toks)} result(s) but {len(types)} type(s)")
        for tok in toks:
            first = self.defined.get(tok[1:])
            if first is not None:
                raise self.fail(tok, f"value {tok} is already defined at line {first.line}")
            self.defined[tok[1:]] = tok
        return tuple(Value(tok[1:], ty) for tok, ty in zip(toks, types))

    def types(self, t) -> list[TensorType]:
        return [self.type(c) for c in _items(t)]

    def type(self, t) -> TensorType:
        vis, dtype, *dims = t.children
        kind, *owner = vis.children
        try:
            v = Vis(str(kind), int(owner[0]) if owner else None)
            return TensorType(str(dtype), tuple(int(d) for d in dims if d is not None), v)
        except ValueError as e:
            raise self.fail(dtype, f"bad type: {e}") from None

    def loc(self, t) -> Loc | None:
        if not t.children:
            return None
        f, line, module = t.children
        if module is None:
            return Loc(self.string(f), int(line))
        path, cls = module.children
        return Loc(self.string(f), int(line), self.string(path), None if cls is None else self.string(cls))

    def attrs(self, t) -> dict:
        """name -> (value, token of the name)."""
        out = {}
        for a in _items(t):
            k, v = a.children
            if k in out:
                raise self.fail(k, f"attribute {k} is given twice")
            out[str(k)] = (self.value(v), k)
        return out

    def value(self, t):
        kind = t.data
        if kind == "int":
            return int(t.children[0])
        if kind == "float":
            return float(t.children[0])
        if kind == "string":
            return self.string(t.children[0])
        if kind == "list":
            return tuple(self.value(c) for c in t.children if c is not None)
        return {"true": True, "false": False, "none": None}[kind]

    def full_attrs(self, op_tok, given: dict) -> tuple:
        """Attributes as Builder stores them; errors point at the attribute at fault."""
        d = ops.REGISTRY[str(op_tok)]
        values = {k: v for k, (v, _) in given.items()}
        try:
            full = ops.full_attrs(d, values)
        except ops.TypeRuleError as e:
            attr = e.attr or _culprit(d, values)
            # an attribute that was written: point at it; a missing one: at the op
            at = given[attr][1] if attr in given else op_tok
            raise self.fail(at, str(e), op=d.name, attr=attr) from None
        return make_attrs(full)

    def check_op(self, tok):
        if str(tok) not in ops.REGISTRY:
            raise self.fail(tok, f"unknown op {tok}")

    # ---- node forms, one per grammar rule
    def node_plain(self, t, scope) -> Node:
        res, op, args, attrs, types, loc = t.children
        self.check_op(op)
        operands = self.operands(args, scope)
        a = self.full_attrs(op, self.attrs(attrs))
        return Node(str(op), operands, self.results(res, types, op), a, (), self.loc(loc))

    def node_load(self, t, scope) -> Node:
        res, tag, party, types, loc = t.children
        a = make_attrs({"tag": self.string(tag), "owner": self.party(party)})
        return Node("load", (), self.results(res, types, tag), a, (), self.loc(loc))

    def node_reveal(self, t, scope) -> Node:
        res, x, target, types, loc = t.children
        operands = self.operands(Tree("operands", [x]), scope)
        a = make_attrs({"to": self.party(target.children[0])})
        return Node("reveal", operands, self.results(res, types, x), a, (), self.loc(loc))

    def node_call(self, t, scope) -> Node:
        res, tag, party, args, types, loc = t.children
        operands = self.operands(args, scope)
        a = make_attrs({"tag": self.string(tag), "owner": self.party(party)})
        return Node("call", operands, self.results(res, types, tag), a, (), self.loc(loc))

    def node_loop(self, t, scope) -> Node:
        res, trips, args, attrs, params, *body, types, loc = t.children
        operands = self.operands(args, scope)
        given = self.attrs(attrs)
        if "trips" in given:
            raise self.fail(given["trips"][1], "loop trips are written after 'loop', not as an attribute")
        given["trips"] = (int(trips), trips)
        a = self.full_attrs(Token("LOOP", "loop", line=trips.line, column=trips.column), given)
        results = self.results(res, types, trips)
        inner = dict(scope)  # the body sees values above the loop, never its results
        ps = []
        for p in _items(params):
            tok, ty = p.children
            (pv,) = self.results(Tree("results", [tok]), Tree("types", [ty]), tok)
            inner[pv.name] = pv
            ps.append(pv)
        nodes = self.block([c for c in body if c is not None], inner)
        return Node("loop", operands, results, a, (Region(tuple(ps), tuple(nodes)),), self.loc(loc))

    def node_terminator(self, t, scope) -> Node:
        op, args, loc = t.children
        return Node(str(op), self.operands(args, scope), (), (), (), self.loc(loc))
