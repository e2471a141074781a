"""Fuzzing real plans: their bytes, their zip structure, their manifest fields and the tokens
of their IR (with the digests recomputed, so that a mutation reaches the parser and the
verifier), and graphs mutated in memory. Whatever comes out: a Plan, or one of the named
errors (PlanFormatError, ParseError, VerifyError) with a short message that is not a
last-resort wrapper around some other exception, in bounded time.

Deterministic: the profile of tests/conftest.py ("ci": derandomize)."""
from __future__ import annotations

import io
import json
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import hostile
import pytest
import safetensors.torch  # noqa: F401 — imported once here, so that no timing below pays for torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import graphs
from test_planfile import plan_bytes

from planc.ir.graph import Graph, Loc, Node, Region, Value
from planc.ir.parser import _TOKEN, ParseError, parse_and_verify, parse_graph
from planc.ir.plan import Plan, PlanFormatError
from planc.ir.printer import print_graph
from planc.ir.types import PUBLIC, SECRET, TensorType, Vis, private
from planc.ir.verify import MAX_MESSAGE, VerifyError, verify

GOLDEN = Path(__file__).parent / "golden"
MESSAGE_LIMIT = MAX_MESSAGE + 5 * 170 + 400
TIME_LIMIT = 1.0  # CPU seconds for one small plan, whatever was done to it
# the last-resort wrappers: seeing one means some other exception got that far
WRAPPERS = ("unreadable plan", "unreadable text", "malformed graph", "type rule fails")


def _real_plans() -> list[bytes]:
    out = [plan_bytes()]  # with named constants, captured descriptions and settings
    for f in sorted(GOLDEN.glob("*.ir")) + sorted((GOLDEN / "passes").glob("*.ir")):
        g = parse_graph(f.read_text())
        out.append(hostile.pack(f.read_text(), name=g.name, parties=g.parties))
    return out


REAL = _real_plans()
FUZZ = settings(settings.default, max_examples=max(settings.default.max_examples, 150),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])


def check(f, arg, errors=(PlanFormatError,), ok=(Plan,)):
    t = time.process_time()
    try:
        out = f(arg)
    except errors as e:
        msg = str(e)
        assert len(msg) <= MESSAGE_LIMIT, len(msg)
        assert not msg.startswith(WRAPPERS) and "malformed graph" not in msg and "type rule fails" not in msg, msg
        out = e
    took = time.process_time() - t
    assert took < TIME_LIMIT, took
    if not isinstance(out, errors):
        assert isinstance(out, ok), type(out)
    return out


def test_real_plans_read():
    for data in REAL:
        assert isinstance(Plan.from_bytes(data), Plan)


# ---------------------------------------------------------------- bytes


@given(st.sampled_from(range(len(REAL))), st.lists(st.tuples(st.sampled_from(["set", "insert", "delete", "cut"]),
                                                           st.floats(0, 1), st.binary(min_size=1, max_size=8)),
                                                 min_size=1, max_size=4))
@FUZZ
def test_mutated_bytes(k, edits):
    data = bytearray(REAL[k])
    for kind, where, b in edits:
        i = int(where * (len(data) - 1))
        if kind == "set":
            data[i:i + len(b)] = b
        elif kind == "insert":
            data[i:i] = b
        elif kind == "delete":
            del data[i:i + len(b)]
        else:
            del data[i:]
    check(Plan.from_bytes, bytes(data))


# ---------------------------------------------------------------- zip structure

_NAMES = ("manifest.json", "plan.ir", "constants.safetensors")


@st.composite
def zip_layouts(draw):
    ms = hostile.members(REAL[draw(st.sampled_from(range(len(REAL))))])
    order = draw(st.lists(st.sampled_from(_NAMES + ("data.pkl", "plan.IR", "../plan.ir", "")), min_size=0,
                          max_size=5))
    if draw(st.booleans()):
        order = list(_NAMES)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in order:
            zi = zipfile.ZipInfo(name or "x", date_time=draw(st.sampled_from([(1980, 1, 1, 0, 0, 0),
                                                                              (2024, 5, 1, 12, 0, 0)])))
            zi.external_attr = draw(st.sampled_from([0o100644 << 16, 0o100755 << 16, 0]))
            zi.create_system = draw(st.sampled_from([3, 0]))
            zi.compress_type = draw(st.sampled_from([zipfile.ZIP_STORED] * 3 + [zipfile.ZIP_DEFLATED]))
            if draw(st.booleans()) and draw(st.booleans()):
                zi.comment = b"hi"
            if draw(st.booleans()) and draw(st.booleans()):
                zi.extra = b"\xfe\xca\x00\x00"
            zf.writestr(zi, ms.get(name, b"payload"))
        if draw(st.booleans()) and draw(st.booleans()):
            zf.comment = b"archive comment"
    data = buf.getvalue()
    if draw(st.booleans()):  # and a field of a header, anywhere
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1:]
    return data


@given(zip_layouts())
@FUZZ
def test_mutated_zip_structure(data):
    check(Plan.from_bytes, data)


# ---------------------------------------------------------------- manifest fields

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(-10**30, 10**30).map(lambda v: v * 10**20)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
    | st.sampled_from(["alice", "bob", "0.1.0", "planc-plan", "plan.ir", "\ud800", "a" * 5000, "x" * 64]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)
_keys = st.sampled_from(["format", "format_version", "planc_version", "name", "parties", "members", "captured",
                         "meta", "extra"])
_subkeys = st.sampled_from(["frac_bits", "plan.ir", "constants.safetensors", "sha256", "size", "scale", "bias", "x"])


@st.composite
def manifest_edits(draw):
    k = draw(st.sampled_from(range(len(REAL))))
    edits = draw(st.lists(st.tuples(st.sampled_from(["set", "delete", "set_sub", "delete_sub", "deep"]), _keys,
                                    _subkeys, _json), min_size=1, max_size=3))

    def change(m):
        for kind, key, sub, value in edits:
            if kind == "set":
                m[key] = value
            elif kind == "delete":
                m.pop(key, None)
            elif isinstance(m.get(key), dict):
                if kind == "set_sub":
                    m[key][sub] = value
                elif kind == "delete_sub":
                    m[key].pop(sub, None)
                else:  # one level deeper: a member's sha256 or size
                    for d in m[key].values():
                        if isinstance(d, dict):
                            d[sub] = value

    def dump(m):
        return json.dumps(m, sort_keys=True, separators=(",", ":")).encode()

    ms = hostile.members(REAL[k])
    m = json.loads(ms["manifest.json"])
    change(m)
    raw = dump(m) if draw(st.booleans()) else hostile.manifest_bytes(m)
    return hostile.rezip([("manifest.json", raw), ("plan.ir", ms["plan.ir"]),
                          ("constants.safetensors", ms["constants.safetensors"])])


@given(manifest_edits())
@FUZZ
def test_mutated_manifest_fields(data):
    check(Plan.from_bytes, data)


@given(st.sampled_from(range(len(REAL))), st.sampled_from([8, 16, 30, 7, 31, 40, -1, 0, 2**70, "16", 16.0, True,
                                                           None, [16], {"v": 16}]))
@FUZZ
def test_mutated_settings(k, v):
    data = hostile.repack(REAL[k], change=lambda m: m["meta"].update(frac_bits=v))
    out = check(Plan.from_bytes, data)
    assert isinstance(out, Plan) == (type(v) is int and 8 <= v <= 30)
    if isinstance(out, PlanFormatError):
        assert (out.member, out.field) == ("manifest.json", "meta.frac_bits")


# ---------------------------------------------------------------- IR tokens

_POOL = ["%x", "%nothing", "%i", "loop", "{", "}", "[", "]", "(", ")", ":", ",", "=", "^", "<", ">", "9" * 30,
         "9" * 5000, "-1", "0", "1", "2147483648", "4294967297", "1e999", "nan", "-inf", "inf", "public", "secret",
         "private", "private<9>", "private<0> f32[4]", "public i64[]", "f32", "f16", '"t"', '"\\q"', '"\\ud800"',
         "return", "yield", "all", "loc", 'loc("a.py":1)', "#", "@p", "load", "reveal", "call", "from", "to", "in",
         "const", "relu", "mul", "add", "reshape", "expand", "slice", "cat", "index", "{dim=0}", "{trips=1}",
         "[" * 40, "]" * 40, "x" * 3000, "\u0663", ";", "\x00", "true", "none"]


_OPS = ["relu", "neg", "share", "add", "mul", "matmul", "reshape", "expand", "slice", "index", "cat", "stack",
        "transpose", "permute", "sum", "mean", "max", "argmax", "pad", "squeeze", "unsqueeze", "conv2d",
        "avg_pool2d", "flatten", "const", "input", "where", "gt", "div", "softmax", "yield", "return"]
_INTS = ["0", "1", "2", "3", "-1", "7", "64", "65", "2147483647", "2147483648", "4294967296", "9223372036854775807",
         "9223372036854775808", "-9223372036854775809", "1" + "0" * 30]
_TYPES = ["public f32[]", "public i64[]", "secret f32[3]", "private<0> f32[3]", "private<1> f32[3]",
          "private<2> f32[3]", "public f32[2147483649]", "public f32[65536,65537]", "public bool[1,1,1,1,1,1,1,1,1]",
          "secret f64[0]", "public i32[3]", "private<9> f32[3]"]


def _like(draw, toks, t):
    """A token of the same kind as `t`: the edit keeps the syntax, so it reaches the checks."""
    if t[0] == "%":
        return draw(st.sampled_from([u for u in toks if u[0] == "%"] + ["%ghost"]))
    if t[-1] == "]" and " " in t:
        return draw(st.sampled_from(_TYPES))
    if t.lstrip("-").isdigit():
        return draw(st.sampled_from(_INTS))
    if t[0].isalpha() and t not in ("plan", "parties", "loc", "from", "to", "in"):
        return draw(st.sampled_from(_OPS))
    return t


@st.composite
def token_edits(draw, like_only: bool = False):
    """A real plan's IR with 1 to 4 tokens deleted, duplicated, swapped, replaced or
    inserted, or (like_only) each replaced by one of its kind, which keeps the syntax and
    so reaches the reader's and the verifier's checks."""
    k = draw(st.sampled_from(range(len(REAL))))
    ms = hostile.members(REAL[k])
    toks = [t for t in _TOKEN.findall(ms["plan.ir"].decode()) if t]
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(toks) - 1))
        kind = "like" if like_only else draw(st.sampled_from(["delete", "duplicate", "swap", "replace", "insert",
                                                              "copy", "like"]))
        if kind == "like":
            toks[i] = _like(draw, toks, toks[i])
            continue
        if kind == "delete":
            del toks[i]
        elif kind == "duplicate":
            toks.insert(i, toks[i])
        elif kind == "swap" and i + 1 < len(toks):
            toks[i], toks[i + 1] = toks[i + 1], toks[i]
        elif kind == "replace":
            toks[i] = draw(st.sampled_from(_POOL))
        elif kind == "insert":
            toks.insert(i, draw(st.sampled_from(_POOL)))
        else:  # a token of the plan itself, elsewhere
            toks[i] = toks[draw(st.integers(0, len(toks) - 1))]
    text = " ".join(toks)
    try:  # when the mutation still reads, lay it out as the printer does: it then reaches the
        # plan checks (constants, settings, canonical bytes) too
        text = print_graph(parse_and_verify(text))
    except (ParseError, VerifyError):
        pass
    return hostile.repack(REAL[k], ir=text.encode("utf-8", "surrogatepass"))


@given(token_edits())
@FUZZ
def test_mutated_ir_tokens(data):
    check(Plan.from_bytes, data)


@given(token_edits(like_only=True))
@FUZZ
def test_mutated_ir_tokens_of_their_kind(data):
    check(Plan.from_bytes, data)


_chars = st.sampled_from(list("%@\"{}[]()<>:,=^#-.0123456789 \n\tabcdefilnoprstuvxy_\\") + ["loop", "public ",
                                                                                          "f32", "private<0>"])


@given(st.lists(_chars, max_size=80).map("".join))
@FUZZ
def test_random_text_is_parse_error_or_graph(text):
    out = check(parse_graph, text, errors=(ParseError,), ok=(Graph,))
    if isinstance(out, Graph):
        check(verify, out, errors=(VerifyError,), ok=(Graph,))


# ---------------------------------------------------------------- graphs in memory

_values = st.sampled_from([
    None, 0, -1, 1, 2**31, 2**63, 10**5000, -10**5000, 1.5, float("nan"), float("inf"), "", "x" * 5000, "%", True,
    (), (1,), ((1,),), (1,) * 2000, [1], {}, object(), b"bytes",
    Value("ghost", TensorType("f32", (4,), SECRET)), TensorType("f32", (2**40,), PUBLIC),
    TensorType("f32", (1,) * 50, PUBLIC), TensorType("f32", (4,), Vis("private", 10**30)),
    Loc("u.py", 10**5000), Loc("u.py", -1), Node("yield"), Region((), ()),
])
_fields = st.sampled_from(["op", "operands", "results", "attrs", "regions", "loc"])


def _mutate(nodes, path, field, value, as_item):
    """`nodes` with node path[0] (or, deeper, a node of its body) changed."""
    i = path[0] % len(nodes)
    n = nodes[i]
    if len(path) > 1 and n.regions and n.regions[0].nodes:
        body = n.regions[0]
        n = replace(n, regions=(replace(body, nodes=_mutate(body.nodes, path[1:], field, value, as_item)),))
    else:
        old = getattr(n, field)
        if as_item and isinstance(old, tuple) and old:
            value = old[:-1] + (value,) if field != "attrs" else old[:-1] + ((old[-1][0], value),)
        n = replace(n, **{field: value})
    return nodes[:i] + (n,) + nodes[i + 1:]


@given(graphs(max_steps=5), st.lists(st.integers(0, 50), min_size=1, max_size=3), _fields, _values, st.booleans())
@FUZZ
def test_mutated_graphs_verify_or_raise_verify_error(g, path, field, value, as_item):
    bad = replace(g, nodes=_mutate(g.nodes, path, field, value, as_item))
    out = check(verify, bad, errors=(VerifyError,), ok=(Graph,))
    if isinstance(out, Graph):  # what verifies prints and reads back
        assert parse_graph(print_graph(out)) == out


@pytest.mark.parametrize("name", ["name", "parties", "nodes"])
@given(value=_values)
@FUZZ
def test_mutated_graph_fields(name, value):
    g = parse_graph(hostile.one_node("", "%x"))
    check(verify, replace(g, **{name: value}), errors=(VerifyError,), ok=(Graph,))


def test_a_private_value_of_a_party_out_of_range():
    g = parse_graph(hostile.one_node("", "%x"))
    bad = replace(g, nodes=(replace(g.nodes[0], results=(Value("x", TensorType("f32", (4,), private(7))),)),
                            replace(g.nodes[1], operands=(Value("x", TensorType("f32", (4,), private(7))),))))
    with pytest.raises(VerifyError, match="names party 7, but the plan has 2 parties"):
        verify(bad)
