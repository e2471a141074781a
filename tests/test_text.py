"""The text format: print and parse are inverses, errors say file:line:col."""
from __future__ import annotations

import functools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import graphs

from planc.ir.builder import Builder
from planc.ir.graph import Graph, Loc
from planc.ir.nx import to_networkx
from planc.ir.parser import ParseError, parse_and_verify, parse_graph
from planc.ir.printer import print_graph
from planc.ir.types import PUBLIC, TensorType, private
from planc.ir.verify import VerifyError, verify


# the round trip is the format's main guarantee: twice the profile's examples (200 under "ci")
@settings(max_examples=2 * settings.default.max_examples)
@given(graphs())
def test_print_parse_round_trip(g):
    verify(g)
    text = print_graph(g)
    back = parse_graph(text)
    assert back == g
    assert print_graph(back) == text
    # layout and comments do not matter (strings never hold a raw newline)
    assert parse_graph(text.replace("\n", " ")) == g
    assert parse_graph(text.replace("\n", "  # note: %x = relu {\n")) == g
    nx = to_networkx(g)
    nodes = list(g.walk())
    assert nx.number_of_nodes() == len(nodes)
    assert nx.number_of_edges() == sum(len(n.operands) for n in nodes)


# ---------------------------------------------------------------- golden errors

HEAD = "plan @p(parties: alice=0, bob=1) {\n"
LOAD = '  %x = load "t" from alice : private<0> f32[1,1,4,4]\n'


def error(text: str) -> str:
    with pytest.raises(ParseError) as e:
        parse_graph(text, "net.plan")
    return str(e.value)


def test_error_syntax():
    text = HEAD + LOAD + "  %y = relu %x :: private<0> f32[1,1,4,4]\n  return %y\n}\n"
    assert error(text) == "net.plan:3:17: unexpected ':'; expected 'private', 'public', 'secret'"


def test_error_bad_character():
    assert error(HEAD + '  %x = load "t" from alice ; private<0> f32[2]\n}\n') == (
        "net.plan:2:28: unexpected character ';'; expected ':'")


def test_error_end_of_input():
    assert error(HEAD + "  return\n").startswith("net.plan:3:1: unexpected end of input; expected ")


def test_error_unknown_op():
    text = HEAD + LOAD + "  %y = frobnicate %x : private<0> f32[1,1,4,4]\n  return %y\n}\n"
    assert error(text) == "net.plan:3:8: unknown op frobnicate"


def test_error_undefined_value():
    text = HEAD + LOAD + "  %y = relu %z : private<0> f32[1,1,4,4]\n  return %y\n}\n"
    assert error(text) == "net.plan:3:13: undefined value %z"


def test_error_value_of_loop_body_is_not_visible_after_it():
    text = HEAD + (
        "  loop 2 {\n"
        "    ^(%i: public i64[]):\n"
        "      %c = const {value=1.0} : public f32[]\n"
        "      yield\n"
        "  } :\n"
        "  return %c\n}\n")
    assert error(text) == "net.plan:7:10: undefined value %c"


def test_error_unknown_party():
    assert error(HEAD + '  %x = load "t" from carol : private<0> f32[2]\n  return %x\n}\n') == (
        "net.plan:2:22: unknown party carol; the plan's parties are alice, bob")
    assert error(HEAD + LOAD + "  %y = reveal %x to dave : private<1> f32[1,1,4,4]\n  return %y\n}\n") == (
        "net.plan:3:21: unknown party dave; the plan's parties are alice, bob")


def test_error_bad_attribute():
    pool = "  %y = max_pool2d %x {kernel=[2,2], stride=[2,2]EXTRA} : private<0> f32[1,1,2,2]\n  return %y\n}\n"
    assert error(HEAD + LOAD + pool.replace("EXTRA", ", bogus=1")) == (
        "net.plan:3:51: max_pool2d has no attribute 'bogus'; it has kernel, stride, padding, ceil_mode, dilation")
    assert error(HEAD + LOAD + pool.replace("EXTRA", ", ceil_mode=1")) == (
        "net.plan:3:51: max_pool2d: attribute ceil_mode=1 is not of kind bool")
    assert error(HEAD + LOAD + pool.replace("EXTRA", ", stride=[1,1]")) == "net.plan:3:51: attribute stride is given twice"
    missing = "  %y = max_pool2d %x {kernel=[2,2]} : private<0> f32[1,1,2,2]\n  return %y\n}\n"
    assert error(HEAD + LOAD + missing) == "net.plan:3:8: max_pool2d: missing attribute 'stride' (ints)"


def test_error_redefined_value():
    text = HEAD + LOAD + "  %x = relu %x : private<0> f32[1,1,4,4]\n  return %x\n}\n"
    assert error(text) == "net.plan:3:3: value %x is already defined at line 2"


def test_error_bad_type():
    assert error(HEAD + '  %x = load "t" from alice : private<0> f16[2]\n  return %x\n}\n') == (
        "net.plan:2:41: bad type: unknown dtype 'f16'; expected one of f32, f64, i64, i32, bool")
    assert error(HEAD + '  %x, %y = load "t" from alice : private<0> f32[2]\n  return %x\n}\n') == (
        "net.plan:2:3: 2 result(s) but 1 type(s)")


def test_error_bad_string_and_header():
    assert error(HEAD + '  %x = load "a\\q" from alice : private<0> f32[2]\n  return %x\n}\n') == (
        'net.plan:2:13: bad string "a\\q": Invalid \\escape')
    assert error("plan @p(parties: alice=1) {\n  return\n}\n") == "net.plan:1:24: party alice should have index 0, not 1"


def test_default_file_name():
    with pytest.raises(ParseError, match=r"^<text>:1:1: "):
        parse_graph("graph @p")


# ---------------------------------------------------------------- what parses to what


def test_reveal_to_all_and_party_names_that_are_keywords():
    g = parse_graph(
        "plan @p(parties: loop=0, from=1) {\n"
        '  %x = load "t" from loop : private<0> f32[2]   # comments anywhere\n'
        "  %y = reveal %x to from : private<1> f32[2]\n"
        "  %z = reveal %x to all : public f32[2]\n"
        "  return %y, %z\n}\n")
    verify(g)
    assert g.parties == ("loop", "from")
    assert [n.attr("to") for n in g.nodes if n.op == "reveal"] == [1, -1]


def test_attribute_values():
    g = parse_graph(
        "plan @p(parties: a=0) {\n"
        '  %x = load "t" from a : private<0> f32[2,3]\n'
        "  %s = sum %x {dim=none, keepdim=false} : private<0> f32[]\n"
        "  %t = sum %x {dim=[]} : private<0> f32[2,3]\n"
        "  %p = pad %x {pads=[1, 1], value=-1.5e+300} : private<0> f32[2,5]\n"
        "  %q = pad %x {pads=[], value=3} : private<0> f32[2,3]\n"
        "  %n = const {value=nan} : public f32[]\n"
        "  %m = const {value=-inf} : public f32[]\n"
        '  %k = const {name="w\\u00e9\\"\\\\"} : public f32[4]\n'
        "  return\n}\n")
    verify(g)
    a = {n.results[0].name: n.attr_dict for n in g.nodes if n.results}
    assert a["s"] == {"dim": None, "keepdim": False}
    assert a["t"]["dim"] == ()
    assert a["p"] == {"pads": (1, 1), "value": -1.5e300}
    assert a["q"]["value"] == 3.0 and isinstance(a["q"]["value"], float)  # as Builder stores it
    assert math.isnan(a["n"]["value"]) and a["m"]["value"] == -math.inf
    assert a["k"]["name"] == 'wé"\\'


def test_operands_carry_their_definitions_type():
    g = parse_graph(
        "plan @p(parties: a=0, b=1) {\n"
        '  %x = load "t" from b : private<1> f32[2]  loc("x.py":-1)\n'
        "  %y = share %x : secret f32[2]\n"
        "  %l = loop 3 %y {\n"
        "    ^(%i: public i64[], %c: secret f32[2]):\n"
        "      %d = add %c, %y : secret f32[2]\n"
        "      yield %d\n"
        '  } : secret f32[2] loc("x.py":4)\n'
        "  return %l\n}\n")
    verify(g)
    x, y, loop, ret = g.nodes
    assert y.operands[0] is x.results[0]
    assert loop.attr("trips") == 3 and loop.loc == Loc("x.py", 4) and x.loc == Loc("x.py", -1)
    add = loop.regions[0].nodes[0]
    assert add.operands == (loop.regions[0].params[1], y.results[0])
    assert ret.operands == loop.results


def test_parse_and_verify():
    good = "plan @p(parties: a=0) {\n  %x = input {index=0} : public f32[2]\n  return %x\n}\n"
    assert parse_and_verify(good) == parse_graph(good)
    with pytest.raises(VerifyError, match="must be public"):
        parse_and_verify(good.replace("public f32", "secret f32"))


# ---------------------------------------------------------------- networkx


def test_networkx_counts_and_nesting():
    b = Builder("nx", ["alice"])
    x = b.emit("input", [], {"index": 0}, types=[TensorType("f32", (2,), PUBLIC)], name="x")
    i, c = b.begin_region([TensorType("i64", (), PUBLIC), x.type], ["i", "c"])
    s = b.emit("add", [c, x], name="s")
    body = b.end_region([s])
    out = b.emit("loop", [x], {"trips": 2}, types=[x.type], regions=[body], name="out")
    g = b.finish([out, out])
    nx = to_networkx(g)
    assert set(nx.nodes) == {"x", "s", "yield#3", "out", "return#4"}
    # x -> loop (init), loop -> s (param %c), x -> s, s -> yield, loop -> return twice
    assert nx.number_of_edges() == 6
    assert nx.number_of_edges("out", "return#4") == 2
    assert sorted(d["label"] for _, _, d in nx.in_edges("s", data=True)) == ["c", "x"]
    assert nx.nodes["s"]["parent"] == "out" and "parent" not in nx.nodes["out"]
    assert nx.nodes["out"]["op"] == "loop" and nx.nodes["out"]["types"] == "public f32[2]"
    assert g.to_networkx().number_of_nodes() == 5


# ---------------------------------------------------------------- a big plan


def resnet18() -> Graph:
    """A ResNet-18-shaped plan: alice's weights, bob's image, all computed on shares."""
    b = Builder("resnet18", ["alice", "bob"])
    loc = lambda n: Loc("resnet.py", n)  # noqa: E731

    def weight(shape, tag):
        w = b.emit("load", [], {"tag": tag, "owner": 0}, types=[TensorType("f32", shape, private(0))], loc=loc(1))
        return b.emit("share", [w], loc=loc(2))

    def conv_bn(x, cin, cout, k, stride, pad, tag):
        y = b.emit("conv2d", [x, weight((cout, cin, k, k), tag + ".w")],
                   {"stride": [stride, stride], "padding": [pad, pad]}, loc=loc(10))
        stats = [weight((cout,), f"{tag}.bn{j}") for j in range(4)]
        return b.emit("batch_norm", [y, *stats], loc=loc(11))

    x = b.emit("load", [], {"tag": "img", "owner": 1}, types=[TensorType("f32", (1, 3, 32, 32), private(1))])
    h = b.emit("share", [x])
    h = b.emit("relu", [conv_bn(h, 3, 64, 3, 1, 1, "stem")])
    h = b.emit("max_pool2d", [h], {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1]})
    cin = 64
    for stage, cout in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage and not block else 1
            tag = f"layer{stage}.{block}"
            y = b.emit("relu", [conv_bn(h, cin, cout, 3, stride, 1, tag + ".a")])
            y = conv_bn(y, cout, cout, 3, 1, 1, tag + ".b")
            skip = conv_bn(h, cin, cout, 1, stride, 0, tag + ".down") if stride != 1 or cin != cout else h
            h = b.emit("relu", [b.emit("add", [y, skip])])
            cin = cout
    h = b.emit("flatten", [b.emit("adaptive_avg_pool2d", [h], {"output": [1, 1]})], {"start": 1, "end": 3})
    logits = b.emit("linear", [h, weight((10, 512), "fc.w"), weight((10,), "fc.b")])
    return b.finish([b.emit("reveal", [logits], {"to": 1})])


def test_resnet18_sized_plan_parses():
    g = verify(resnet18())
    assert len(g.nodes) >= 150
    assert parse_and_verify(print_graph(g), "resnet.plan") == g


# ---------------------------------------------------------------- the reader and grammar.lark

# grammar.lark is the specification and parser.py reads it by hand: lark, given the grammar,
# must accept what the reader accepts and reject what the reader finds ill-formed. (The
# reader refuses more: names and scopes, integers beyond int64, nesting beyond the bounds.)

@functools.lru_cache(maxsize=None)
def _lark():
    from importlib import resources

    from lark import Lark

    return Lark(resources.files("planc.ir").joinpath("grammar.lark").read_text(encoding="utf-8"), parser="lalr")


def _lark_accepts(text: str) -> bool:
    from lark.exceptions import LarkError

    try:
        _lark().parse(text)
        return True
    except LarkError:
        return False


def _agree(text: str):
    ok_lark = _lark_accepts(text)
    try:
        parse_graph(text)
        assert ok_lark, f"the reader accepts what grammar.lark does not:\n{text}"
    except ParseError as e:
        if e.problem.startswith("unexpected"):
            assert not ok_lark, f"grammar.lark accepts what the reader calls a syntax error ({e}):\n{text}"


_POOL = ["%x", "loop", "{", "}", "[", "]", "(", ")", ":", ",", "=", "^", "<", ">", "0", "-1", "1.5", "1e5", "-inf",
         "nan", "inf", "public", "secret", "private", "f32", '"t"', "return", "yield", "all", "loc", "in", "from",
         "to", "load", "reveal", "call", "relu", "true", "none", "#", "@p", ";", "\u0663", "-", ".", "%", '"']


@settings(max_examples=2 * settings.default.max_examples)
@given(graphs(max_steps=4), st.data())
def test_reader_and_grammar_accept_the_same_texts(g, data):
    from planc.ir.parser import _TOKEN

    text = print_graph(g)
    _agree(text)
    toks = [t for t in _TOKEN.findall(text) if t]
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(toks) - 1))
        kind = data.draw(st.sampled_from(["delete", "duplicate", "swap", "replace", "insert"]))
        if kind == "delete":
            del toks[i]
        elif kind == "duplicate":
            toks.insert(i, toks[i])
        elif kind == "swap" and i + 1 < len(toks):
            toks[i], toks[i + 1] = toks[i + 1], toks[i]
        elif kind == "replace":
            toks[i] = data.draw(st.sampled_from(_POOL))
        else:
            toks.insert(i, data.draw(st.sampled_from(_POOL)))
    sep = data.draw(st.sampled_from([" ", "\n", "  # c\n"]))
    _agree(sep.join(toks) + ("\n" if sep.endswith("\n") else ""))
