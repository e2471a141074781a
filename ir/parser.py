"""Read the text format (its layout: ``printer.py``) back into a ``Graph``.

The language is ``grammar.lark`` next to this file: that grammar is the specification
(tests check this reader against it with lark), and this module reads it by hand, in one
pass over a list of tokens, in time and memory linear in the text: no parse tree, the
scope of a loop body is the enclosing scope plus the body's own names (removed again when
the body ends), and the only recursion is into loop bodies and attribute lists, whose
nesting is bounded (``MAX_DEPTH``, ``MAX_LIST_DEPTH`` in ``verify.py``). Integers are read
only when they fit int64 and attribute lists only up to ``MAX_ATTR_ITEMS`` entries.

The nodes are made exactly as ``Builder`` would make them: attributes completed with their
defaults, operands carrying the type of their definition, result types as written.
Names, scopes and attributes are checked here because only here do we still know where
they were written; types, visibilities and bounds are the verifier's job
(``parse_and_verify``).

Every error is a ``ParseError`` whose message starts ``file:line:col: ``; its fields
(file, line, column, problem, and op / attr where they apply) say the same as data. The
first problem in the text is the one reported. ``parse_graph`` raises nothing else, on
any input.
"""
from __future__ import annotations

import gc
import json
import re

from . import ops
from .graph import Graph, Loc, Node, Region, Value, make_attrs, short
from .types import TensorType, Vis
from .verify import INT64, MAX_ATTR_ITEMS, MAX_DEPTH, MAX_LIST_DEPTH, clip


class ParseError(ValueError):
    """Text that is not a plan. file, line, column: where (1-based); problem: what, without
    the location; op, attr: the op and the attribute at fault, when the problem is one."""

    def __init__(self, file: str, line: int, column: int, problem: str, *, op: str | None = None,
                 attr: str | None = None):
        problem = clip(problem)
        self.file, self.line, self.column, self.problem = file, line, column, problem
        self.op, self.attr = op, attr
        super().__init__(f"{short(str(file), 200)}:{line}:{column}: {problem}")


def parse_graph(text: str, file: str = "<text>") -> Graph:
    """Parse one plan; raises ParseError (only). Does not verify (see parse_and_verify)."""
    if not isinstance(text, str):
        raise ParseError(file, 1, 1, f"expected the text of a plan, got {type(text).__name__}")
    # reading makes no reference cycles, only many objects: the cyclic collector would
    # walk all of them again and again (a third of the time on a large plan) to free none
    collect = gc.isenabled()
    gc.disable()
    r = None
    try:
        r = _Reader(text, file)
        return r.graph()
    except ParseError:
        raise
    except Exception as e:  # noqa: BLE001 — last resort: whatever the text provoked is a bad text
        try:
            line, col = r.position(r.i)
        except Exception:  # noqa: BLE001
            line, col = 1, 1
        raise ParseError(file, line, col, f"unreadable text ({type(e).__name__})") from e
    finally:
        if collect:
            gc.enable()


def parse_and_verify(text: str, file: str = "<text>") -> Graph:
    from .verify import verify

    return verify(parse_graph(text, file))


# ---------------------------------------------------------------- tokens

# The terminals of grammar.lark, each token found by its first character: `%value`,
# `@name`, a JSON string, a number, a word (names and keywords alike; what a word means
# depends on where it stands, as with lark's contextual lexer), or one character:
# punctuation, or a character that starts no token at all. Whitespace and comments
# before a token are skipped; a catch-all makes every character part of some match, so
# findall's matches are the tokens, in order, and the optional group gives '' only at
# the end of the text.
_WS = r"[ \t\f\r\n]*(?:#[^\n]*[ \t\f\r\n]*)*"
# Two compound tokens stand for the printer's spelling of a type and of a plain location,
# `private<1> f32[2,3]` and `loc("a.py":12)`: the same tokens as when spaced apart, read
# in one step. Those words followed by those characters are a type or a location in every
# valid text, so reading them as one changes no meaning.
_TYPE_TOKEN = r"(?:public|secret|private<[0-9]+>) [A-Za-z_][A-Za-z0-9_]*\[(?:[0-9]+(?:,[0-9]+)*)?\]"
_STRING = r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"'  # grammar.lark's STRING, unrolled: no alternation per character
_LOC_TOKEN = r"loc\(" + _STRING + r":-?[0-9]+\)"
_TOKEN = re.compile(
    _WS + "(" + _TYPE_TOKEN + "|" + _LOC_TOKEN + r"|%[A-Za-z0-9_.$]+|@[A-Za-z0-9_.$\-]+|" + _STRING
    + r"|-?(?:[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?)|-inf"
    r"|[A-Za-z_][A-Za-z0-9_]*"
    r"|(?s:.))?")
_INT = re.compile(r"-?[0-9]+")
_UINT = re.compile(r"[0-9]+")
_PLAIN_STRING = re.compile(r'"[^\\\x00-\x1f]*"')  # needs no JSON decoding
_WORD_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_PUNCT = frozenset("(){}[]<>,:=^")
_EOF = "\x00<end of input>"  # sentinel after the last token; no real token is longer than one char and starts with NUL
_WORD_VALUES = {"true": True, "false": False, "none": None, "inf": float("inf"), "nan": float("nan")}
_NODE_START = ("%value", "'call'", "'loop'", "'return'", "'yield'", "'}'")
_VIS = ("'private'", "'public'", "'secret'")


def _is_value(t: str) -> bool:
    return t[0] == "%" and len(t) > 1


def _is_word(t: str) -> bool:
    return t[0] in _WORD_START


def _is_string(t: str) -> bool:
    return t[0] == '"' and len(t) > 1


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


class _Reader:
    """One pass over the tokens; `i` is the index of the next one. Tokens are plain
    strings; where one stands in the text is worked out again only for an error."""

    def __init__(self, text: str, file: str):
        self.text, self.file = text, file
        toks = _TOKEN.findall(text)
        while toks and toks[-1] == "":
            toks.pop()
        toks.append(_EOF)
        self.toks = toks
        self.i = 0
        self.parties: dict[str, int] = {}
        self.defined: dict[str, int] = {}  # every value name of the graph -> token of its first definition
        self.scope: dict[str, Value] = {}  # the values visible where we are
        self.types: dict = {}  # (vis, dtype, dims) -> TensorType: a plan repeats a few types many times
        self.locs: dict = {}
        self.strings: dict[str, str] = {}
        self.attr_cache: dict = {}  # (op or trips, attribute tokens) -> attributes as Builder stores them

    # ---- positions and errors
    def position(self, k: int, offset: int = 0) -> tuple[int, int]:
        """(line, column) of token k, or of its character `offset`; past the last token:
        just past the text's end."""
        text = self.text
        if k >= len(self.toks) - 1:
            off = len(text)
        else:
            off = 0
            for j, m in enumerate(_TOKEN.finditer(text)):
                if j == k:
                    off = m.start(1) + offset
                    break
        return text.count("\n", 0, off) + 1, off - (text.rfind("\n", 0, off) + 1) + 1

    def fail(self, k: int, msg: str, *, offset: int = 0, **fields) -> ParseError:
        line, col = self.position(k, offset)
        return ParseError(self.file, line, col, msg, **fields)

    def unexpected(self, k: int, expected=()) -> ParseError:
        t = self.toks[k]
        if t is _EOF:
            what = "unexpected end of input"
        elif len(t) == 1 and t not in _PUNCT and not t.isdigit() and t not in _WORD_START:
            what = f"unexpected character {t!r}"
        else:
            what = f"unexpected {short(t)!r}"
        return self.fail(k, what + (f"; expected {', '.join(sorted(set(expected)))}" if expected else ""))

    def span(self, i: int, closing: str) -> tuple:
        """The tokens from i to the first `closing` after it (all of them if there is none:
        the caller's reading then fails), for a cache key."""
        try:
            j = self.toks.index(closing, i)
        except ValueError:
            j = len(self.toks) - 1
        return tuple(self.toks[i:j + 1])

    def expect(self, lit: str):
        if self.toks[self.i] != lit:
            raise self.unexpected(self.i, (f"'{lit}'",))
        self.i += 1

    # ---- pieces
    def word(self, what="a name") -> int:
        k = self.i
        if not _is_word(self.toks[k]):
            raise self.unexpected(k, (what,))
        self.i += 1
        return k

    def integer(self, signed: bool = False) -> tuple[int, int]:
        """(value, token index) of an integer token that fits int64."""
        k = self.i
        t = self.toks[k]
        if not (_INT if signed else _UINT).fullmatch(t):
            raise self.unexpected(k, ("an integer",))
        self.i += 1
        return self.int_value(t, k), k

    def int_value(self, t: str, k: int, offset: int = 0) -> int:
        """The integer spelt `t` (at `offset` in token k), which must fit int64."""
        if len(t) > 20:
            raise self.fail(k, f"integer {short(t, 40)} ({len(t.lstrip('-')):,} digits) is outside int64",
                            offset=offset)
        v = int(t)
        if not INT64[0] <= v <= INT64[1]:
            raise self.fail(k, f"integer {t} is outside int64", offset=offset)
        return v

    def string(self, k: int) -> str:
        return self.decode(self.toks[k], k)

    def decode(self, t: str, k: int, offset: int = 0) -> str:
        """The JSON string `t` (at `offset` in token k) decoded."""
        s = self.strings.get(t)
        if s is None:
            if _PLAIN_STRING.fullmatch(t):
                s = t[1:-1]
            else:
                try:
                    s = json.loads(t)
                except json.JSONDecodeError as e:
                    raise self.fail(k, f"bad string {short(t)}: {e.msg}", offset=offset) from None
            self.strings[t] = s
        return s

    def take_string(self) -> int:
        k = self.i
        if not _is_string(self.toks[k]):
            raise self.unexpected(k, ("a string",))
        self.i += 1
        return k

    def party(self, k: int, all_ok: bool = False) -> int:
        """The index of the party named by token k; `all` (-1) only where all_ok (a reveal)."""
        t = self.toks[k]
        if t == "all" and all_ok:
            return -1
        p = self.parties.get(t)
        if p is None:
            known = ", ".join(self.parties) or "none"
            raise self.fail(k, f"unknown party {short(t)}; the plan's parties are {short(known, 200)}")
        return p

    def value_list(self) -> list[int]:
        """`%a, %b, ...` (possibly none): token indices."""
        toks, i = self.toks, self.i
        out = []
        if _is_value(toks[i]):
            out.append(i)
            i += 1
            while toks[i] == ",":
                i += 1
                if not _is_value(toks[i]):
                    self.i = i
                    raise self.unexpected(i, ("%value",))
                out.append(i)
                i += 1
        self.i = i
        return out

    def operands(self, ks) -> tuple[Value, ...]:
        scope, toks = self.scope, self.toks
        out = []
        for k in ks:
            v = scope.get(toks[k][1:])
            if v is None:
                raise self.fail(k, f"undefined value {short(toks[k])}")
            out.append(v)
        return tuple(out)

    def define(self, ks, types, at: int) -> tuple[Value, ...]:
        """Values named by tokens `ks` with `types`; each name new to the whole graph."""
        if len(ks) != len(types):
            raise self.fail(ks[0] if ks else at, f"{len(ks)} result(s) but {len(types)} type(s)")
        toks, defined = self.toks, self.defined
        out = []
        for k, ty in zip(ks, types):
            name = toks[k][1:]
            first = defined.get(name)
            if first is not None:
                raise self.fail(k, f"value {short(toks[k])} is already defined at line {self.position(first)[0]}")
            defined[name] = k
            out.append(Value(name, ty))
        return tuple(out)

    def type(self) -> TensorType:
        """`vis dtype[d, ...]`, as one compound token or spaced apart."""
        toks, i = self.toks, self.i
        t = toks[i]
        ty = self.types.get(t)
        if ty is not None:  # the printer's spelling, seen before
            self.i = i + 1
            return ty
        if t[-1] == "]" and " " in t:  # the printer's spelling, new
            self.i = i + 1
            vis, rest = t.split(" ", 1)
            dtype, dims = rest[:-1].split("[")
            owner = None
            if vis[0] == "p" and vis != "public":  # private<k>
                owner = self.int_value(vis[8:-1], i, 8)
                vis = "private"
            off = t.index("[") + 1
            shape = []
            for d in dims.split(",") if dims else ():
                shape.append(int(d) if len(d) < 19 else self.int_value(d, i, off))
                off += len(d) + 1
            ty = self.types[t] = self.make_type(vis, owner, dtype, tuple(shape), i, t.index(" ") + 1)
            return ty
        if t == "private":
            if toks[i + 1] != "<":
                self.i = i + 1
                raise self.unexpected(i + 1, ("'<'",))
            self.i = i + 2
            owner, _ = self.integer()
            self.expect(">")
            i = self.i
        elif t == "public" or t == "secret":
            owner = None
            i += 1
        else:
            raise self.unexpected(i, _VIS)
        dt = i
        if not _is_word(toks[i]):
            self.i = i
            raise self.unexpected(i, ("a name",))
        if toks[i + 1] != "[":
            self.i = i + 1
            raise self.unexpected(i + 1, ("'['",))
        i += 2
        dims = []
        if toks[i] != "]":
            while True:
                d = toks[i]
                if not _UINT.fullmatch(d):
                    self.i = i
                    raise self.unexpected(i, ("an integer",))
                dims.append(self.int_value(d, i))
                i += 1
                if toks[i] == ",":
                    i += 1
                    continue
                if toks[i] != "]":
                    self.i = i
                    raise self.unexpected(i, ("','", "']'"))
                break
        self.i = i + 1
        key = (t, owner, toks[dt], tuple(dims))
        ty = self.types.get(key)
        if ty is None:
            ty = self.types[key] = self.make_type(t, owner, toks[dt], key[3], dt, 0)
        return ty

    def make_type(self, vis: str, owner, dtype: str, shape: tuple, k: int, off: int) -> TensorType:
        try:
            return TensorType(dtype, shape, Vis(vis, owner))
        except ValueError as e:
            raise self.fail(k, f"bad type: {e}", offset=off) from None

    def type_list(self) -> list[TensorType]:
        out = [self.type()]
        while self.toks[self.i] == ",":
            self.i += 1
            out.append(self.type())
        return out

    def loc(self) -> Loc | None:
        """`loc("file":line)` or `loc("file":line in "module": "Class")`, or nothing."""
        toks, i = self.toks, self.i
        t = toks[i]
        if t[0] != "l" or t[:4] != "loc(" and t != "loc":
            return None
        if t != "loc":  # the printer's spelling of a plain location: one compound token
            self.i = i + 1
            loc = self.locs.get(t)
            if loc is None:
                colon = t.rindex(":")
                line = self.int_value(t[colon + 1:-1], i, colon + 1)
                loc = self.locs[t] = Loc(self.decode(t[4:colon], i, 4), line)
            return loc
        self.i += 1
        self.expect("(")
        f = self.take_string()
        self.expect(":")
        line, _ = self.integer(signed=True)
        module = cls = None
        if toks[self.i] == "in":
            self.i += 1
            module = self.take_string()
            if toks[self.i] == ":":
                self.i += 1
                cls = self.take_string()
        self.expect(")")
        return Loc(self.string(f), line, None if module is None else self.string(module),
                   None if cls is None else self.string(cls))

    def attrs(self) -> dict:
        """`{name=value, ...}` -> name -> (value, token of the name)."""
        self.expect("{")
        out = {}
        toks = self.toks
        if toks[self.i] != "}":
            while True:
                k = self.word()
                name = toks[k]
                self.expect("=")
                v = self.value(0)
                if name in out:
                    raise self.fail(k, f"attribute {short(name)} is given twice")
                out[name] = (v, k)
                if toks[self.i] == ",":
                    self.i += 1
                    continue
                if toks[self.i] != "}":
                    raise self.unexpected(self.i, ("','", "'}'"))
                break
        self.i += 1
        return out

    def value(self, depth: int):
        k = self.i
        t = self.toks[k]
        self.i += 1
        c = t[0]
        if c == "[":
            if depth >= MAX_LIST_DEPTH:
                raise self.fail(k, f"lists nested deeper than {MAX_LIST_DEPTH} (MAX_LIST_DEPTH)")
            out = []
            if self.toks[self.i] != "]":
                while True:
                    out.append(self.value(depth + 1))
                    if len(out) > MAX_ATTR_ITEMS:
                        raise self.fail(k, f"a list of more than {MAX_ATTR_ITEMS} entries (MAX_ATTR_ITEMS)")
                    if self.toks[self.i] == ",":
                        self.i += 1
                        continue
                    if self.toks[self.i] != "]":
                        raise self.unexpected(self.i, ("','", "']'"))
                    break
            self.i += 1
            return tuple(out)
        if c == '"' and len(t) > 1:
            return self.string(k)
        if "0" <= c <= "9" or (c in "-." and len(t) > 1):
            if _INT.fullmatch(t):
                return self.int_value(t, k)
            return float(t)  # -inf, or a float literal: grammar.lark's FLOAT
        if t in _WORD_VALUES:
            return _WORD_VALUES[t]
        self.i = k
        raise self.unexpected(k, ("'['", "'false'", "'none'", "'true'", "a float", "an integer", "a string"))

    def full_attrs(self, op_k: int, op: str, given: dict) -> tuple:
        """Attributes as Builder stores them; errors point at the attribute at fault."""
        d = ops.REGISTRY[op]
        values = {k: v for k, (v, _) in given.items()}
        try:
            full = ops.full_attrs(d, values)
        except ops.TypeRuleError as e:
            attr = e.attr or _culprit(d, values)
            # an attribute that was written: point at it; a missing one: at the op
            at = given[attr][1] if attr in given else op_k
            raise self.fail(at, str(e), op=d.name, attr=attr) from None
        return make_attrs(full)

    # ---- the plan
    def graph(self) -> Graph:
        toks = self.toks
        self.expect("plan")
        name = self.i
        if toks[name][0] != "@" or len(toks[name]) < 2:
            raise self.unexpected(name, ("@name",))
        self.i += 1
        self.expect("(")
        self.expect("parties")
        self.expect(":")
        if toks[self.i] != ")":
            while True:
                pk = self.word()
                self.expect("=")
                idx, ik = self.integer()
                pname = toks[pk]
                if pname in self.parties:
                    raise self.fail(pk, f"party {short(pname)} is listed twice")
                if idx != len(self.parties):
                    raise self.fail(ik, f"party {short(pname)} should have index {len(self.parties)}, not {idx}")
                self.parties[pname] = idx
                if toks[self.i] != ",":
                    break
                self.i += 1
        self.expect(")")
        self.expect("{")
        body = self.block(0)
        self.expect("}")
        if toks[self.i] is not _EOF:
            raise self.unexpected(self.i, ("end of input",))
        return Graph(toks[name][1:], tuple(self.parties), tuple(body))

    def block(self, depth: int) -> list[Node]:
        """Nodes up to the closing '}' (not consumed). Their results stay in scope: the
        caller of a loop body removes them."""
        out = []
        toks, scope = self.toks, self.scope
        while True:
            t = toks[self.i]
            if t == "}":
                return out
            if _is_value(t):
                n = self.node_with_results(depth)
            elif t == "return" or t == "yield":
                n = self.node_terminator()
            elif t == "call":
                n = self.node_call([], self.i)
            elif t == "loop":
                n = self.node_loop([], self.i, depth)
            else:
                raise self.unexpected(self.i, _NODE_START)
            for r in n.results:
                scope[r.name] = r
            out.append(n)

    def node_with_results(self, depth: int) -> Node:
        toks = self.toks
        i = self.i
        if toks[i + 1] == "=":  # one result, the common case
            res = [i]
            self.i = k = i + 2
        else:
            res = self.value_list()
            self.expect("=")
            k = self.i
        w = toks[k]
        if w == "load":
            return self.node_load(res, k)
        if w == "reveal":
            return self.node_reveal(res, k)
        if w == "call":
            return self.node_call(res, k)
        if w == "loop":
            return self.node_loop(res, k, depth)
        if not _is_word(w):
            raise self.unexpected(k, ("'call'", "'load'", "'loop'", "'reveal'", "an op name"))
        return self.node_plain(res, k)

    # ---- node forms, one per grammar rule; each is checked in the order: op, operands,
    # attributes, results, location
    def node_plain(self, res, op_k) -> Node:
        """`%a = op %x, %y {k=v} : type  loc(...)`

        The most frequent form: the printer's spelling is read inline (one operand list,
        a type and a location seen before), anything else by the general helpers."""
        toks = self.toks
        i = op_k + 1
        t = toks[i]
        if t[0] == "%" and len(t) > 1:
            args = [i]
            i += 1
            while toks[i] == ",":
                i += 1
                t = toks[i]
                if t[0] != "%" or len(t) < 2:
                    raise self.unexpected(i, ("%value",))
                args.append(i)
                i += 1
        else:
            args = ()
        if toks[i] == "{":
            # the same attributes spelt the same way read the same: the op's full
            # attributes for these tokens, when seen before, else read them
            akey = (toks[op_k], self.span(i, "}"))
            a = self.attr_cache.get(akey)
            if a is None:
                self.i = i
                given = self.attrs()
                i = self.i
            else:
                i += len(akey[1])
                given = None
        else:
            akey = (toks[op_k], None)
            a = self.attr_cache.get(akey)
            given = None
        if toks[i] != ":":
            raise self.unexpected(i, ("':'", "'{'", "','") if args else ("':'", "'{'", "%value"))
        i += 1
        ty = self.types.get(toks[i])
        if ty is not None and toks[i + 1] != ",":
            types = (ty,)
            i += 1
        else:
            self.i = i
            types = self.type_list()
            i = self.i
        t = toks[i]
        loc = self.locs.get(t) if t[:4] == "loc(" else None
        if loc is None:
            self.i = i
            loc = self.loc()
        else:
            self.i = i + 1
        op = toks[op_k]
        d = ops.REGISTRY.get(op)
        if d is None:
            raise self.fail(op_k, f"unknown op {short(op)}")
        scope = self.scope
        operands = []
        for k in args:
            v = scope.get(toks[k][1:])
            if v is None:
                raise self.fail(k, f"undefined value {short(toks[k])}")
            operands.append(v)
        if a is None:
            a = self.attr_cache[akey] = self.full_attrs(op_k, op, given or {}) if given or d.attrs else ()
        if len(res) == 1 and len(types) == 1:
            r = res[0]
            name = toks[r][1:]
            if name in self.defined:
                raise self.fail(r, f"value {short(toks[r])} is already defined at line "
                                   f"{self.position(self.defined[name])[0]}")
            self.defined[name] = r
            results = (Value(name, types[0]),)
        else:
            results = self.define(res, types, op_k)
        return Node(op, tuple(operands), results, a, (), loc)

    def node_load(self, res, k) -> Node:
        """`%a = load "tag" from party : type  loc(...)`"""
        self.i += 1
        tag = self.take_string()
        self.expect("from")
        pk = self.word()
        self.expect(":")
        types = self.type_list()
        loc = self.loc()
        a = make_attrs({"tag": self.string(tag), "owner": self.party(pk)})
        return Node("load", (), self.define(res, types, tag), a, (), loc)

    def node_reveal(self, res, k) -> Node:
        """`%a = reveal %x to party|all : type  loc(...)`"""
        self.i += 1
        x = self.i
        if not _is_value(self.toks[x]):
            raise self.unexpected(x, ("%value",))
        self.i += 1
        self.expect("to")
        pk = self.word()
        self.expect(":")
        types = self.type_list()
        loc = self.loc()
        operands = self.operands([x])
        a = make_attrs({"to": self.party(pk, all_ok=True)})
        return Node("reveal", operands, self.define(res, types, x), a, (), loc)

    def node_call(self, res, k) -> Node:
        """`[%a =] call "tag" from party (%x, ...) [: types]  loc(...)`"""
        self.i += 1
        tag = self.take_string()
        self.expect("from")
        pk = self.word()
        self.expect("(")
        args = self.value_list()
        self.expect(")")
        types = []
        if self.toks[self.i] == ":":
            self.i += 1
            types = self.type_list()
        loc = self.loc()
        operands = self.operands(args)
        a = make_attrs({"tag": self.string(tag), "owner": self.party(pk)})
        return Node("call", operands, self.define(res, types, tag), a, (), loc)

    def node_loop(self, res, k, depth: int) -> Node:
        """`[%a =] loop TRIPS %x, ... [{attrs}] { ^(%i: type, %c: type): nodes } : [types]  loc(...)`

        The body is printed once; `^(...)` names the counter and the carried values. The
        body sees the values above the loop, never the loop's results."""
        if depth >= MAX_DEPTH:
            raise self.fail(k, f"loops nested deeper than {MAX_DEPTH} (MAX_DEPTH)")
        toks = self.toks
        self.i += 1
        trips, tk = self.integer()
        args = self.value_list()
        # `{` opens the attributes unless `^` follows: then it opens the body
        if toks[self.i] == "{" and toks[self.i + 1] != "^":
            akey = (toks[tk], self.span(self.i, "}"))
            given = self.attrs()
        else:
            akey, given = (toks[tk], None), {}
        i = self.i
        if toks[i] != "{" or toks[i + 1] != "^" or toks[i + 2] != "(":
            self.expect("{")
            self.expect("^")
            self.expect("(")
        self.i = i + 3
        operands = self.operands(args)
        a = self.attr_cache.get(akey)
        if a is None:
            if "trips" in given:
                raise self.fail(given["trips"][1], "loop trips are written after 'loop', not as an attribute")
            given["trips"] = (trips, tk)
            a = self.attr_cache[akey] = self.full_attrs(tk, "loop", given)
        # the results' names are taken before the body (which may not reuse them); their
        # types come after it
        defined = self.defined
        for r in res:
            name = toks[r][1:]
            if name in defined:
                raise self.fail(r, f"value {short(toks[r])} is already defined at line "
                                   f"{self.position(defined[name])[0]}")
            defined[name] = r
        params: list[Value] = []
        scope = self.scope
        if toks[self.i] != ")":
            while True:
                pk = self.i
                t = toks[pk]
                if t[0] != "%" or len(t) < 2:
                    raise self.unexpected(pk, ("%value",))
                if toks[pk + 1] != ":":
                    raise self.unexpected(pk + 1, ("':'",))
                self.i = pk + 2
                ty = self.type()
                name = t[1:]
                if name in defined:
                    raise self.fail(pk, f"value {short(t)} is already defined at line "
                                        f"{self.position(defined[name])[0]}")
                defined[name] = pk
                p = Value(name, ty)
                params.append(p)
                if toks[self.i] != ",":
                    break
                self.i += 1
        if toks[self.i] != ")" or toks[self.i + 1] != ":":
            self.expect(")")
            self.expect(":")
        self.i += 2
        for p in params:
            scope[p.name] = p
        nodes = self.block(depth + 1)
        if toks[self.i] != "}" or toks[self.i + 1] != ":":
            self.expect("}")
            self.expect(":")
        self.i += 2
        for p in params:  # what the body defined is not visible after it
            del scope[p.name]
        for n in nodes:
            for r in n.results:
                del scope[r.name]
        t = toks[self.i]
        types = self.type_list() if t in ("public", "secret", "private") or (" " in t and t[-1] == "]") else []
        loc = self.loc()
        if len(res) != len(types):
            raise self.fail(res[0] if res else tk, f"{len(res)} result(s) but {len(types)} type(s)")
        results = tuple(Value(toks[r][1:], ty) for r, ty in zip(res, types))
        return Node("loop", operands, results, a, (Region(tuple(params), tuple(nodes)),), loc)

    def node_terminator(self) -> Node:
        """`return %x, ...  loc(...)` or `yield %x, ...  loc(...)`"""
        op = self.toks[self.i]
        self.i += 1
        args = self.value_list()
        loc = self.loc()
        return Node(op, self.operands(args), (), (), (), loc)
