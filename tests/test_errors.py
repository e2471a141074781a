"""Errors are data: parse, verify and run-time errors carry the op, operand, attribute and
location as fields; a rank's failure crosses a process boundary as a JSON record and is
rebuilt by its class's constructor; locations name the submodule and old ones still read."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from planc.ir.builder import Builder
from planc.ir.graph import Loc, Value
from planc.ir.parser import ParseError, parse_graph
from planc.ir.printer import fmt_loc, print_graph, print_lines
from planc.ir.types import PUBLIC, TensorType, private
from planc.ir.verify import VerifyError, context, verify
from planc.runtime.comm.base import PeerFailed, PeerTimeout
from planc.runtime.errors import DataError, ErrorRecord, PlanRuntimeError

HEAD = "plan @p(parties: alice=0, bob=1) {\n"
LOAD = '  %x = load "t" from alice : private<0> f32[1,1,4,4]\n'
POOL = "  %y = max_pool2d %x {kernel=[2,2], stride=[2,2]EXTRA} : private<0> f32[1,1,2,2]\n  return %y\n}\n"


def parse_error(text) -> ParseError:
    with pytest.raises(ParseError) as e:
        parse_graph(text, "net.plan")
    return e.value


@pytest.mark.parametrize("extra,attr,column", [(", bogus=1", "bogus", 51), (", ceil_mode=1", "ceil_mode", 51),
                                               (", ceil_mode=true, dilation=true", "dilation", 67)])
def test_parse_error_names_the_attribute(extra, attr, column):
    e = parse_error(HEAD + LOAD + POOL.replace("EXTRA", extra))
    assert (e.op, e.attr, e.line, e.column) == ("max_pool2d", attr, 3, column)


def test_parse_error_for_a_missing_attribute_points_at_the_op():
    e = parse_error(HEAD + LOAD + "  %y = max_pool2d %x {kernel=[2,2]} : private<0> f32[1,1,2,2]\n  return %y\n}\n")
    assert (e.op, e.attr, e.line, e.column) == ("max_pool2d", "stride", 3, 8)
    assert e.problem == "max_pool2d: missing attribute 'stride' (ints)"


F4 = TensorType("f32", (4,), private(0))


def _two_loops():
    """Two loops whose bodies print alike: only the node, not the text, tells them apart."""
    b = Builder("l", ["alice"])
    x = b.emit("const", (), {"value": 1.0}, types=[TensorType("f32", (), PUBLIC)], name="x", loc=Loc("u.py", 1))
    for k in range(2):
        _, c = b.begin_region([TensorType("i64", (), PUBLIC), x.type], ["i", "c"])
        body = b.end_region([c], Loc("u.py", 10 + k))
        x = b.emit("loop", [x], {"trips": 3}, types=[x.type], regions=[body], name="l", loc=Loc("u.py", 20 + k))
    return b.finish([x])


def test_verify_context_marks_the_node_not_a_line_that_looks_like_it():
    g = _two_loops()
    second_yield = g.nodes[2].regions[0].nodes[-1]
    lines = print_lines(g)
    at = [i for i, (_, n) in enumerate(lines) if n is second_yield]
    assert len(at) == 1 and lines[at[0]][0].strip() == "yield %c_1  loc(\"u.py\":11)"
    ctx = context(g, second_yield).splitlines()
    assert [s for s in ctx if s.startswith("  > ")] == ["  >       yield %c_1  loc(\"u.py\":11)"]
    assert "\n".join(line for line, _ in lines) + "\n" == print_graph(g)


def test_verify_error_fields():
    b = Builder("p", ["alice", "bob"])
    x = b.emit("load", attrs={"tag": "x", "owner": 0}, types=[F4], name="x", loc=Loc("u.py", 3, "enc.0", "Linear"))
    y = b.emit("reveal", [x], {"to": 1}, name="y", loc=Loc("u.py", 4))
    g = b.finish([y])
    bad = replace(g, nodes=(replace(g.nodes[0], attrs=(("owner", 0), ("tag", ""))),) + g.nodes[1:])
    with pytest.raises(VerifyError) as e:
        verify(bad)
    err = e.value
    assert (err.op, err.attr, err.operand, err.loc, err.problem) == (
        "load", "tag", None, Loc("u.py", 3, "enc.0", "Linear"), "load needs a non-empty tag")
    assert str(err).startswith("u.py:3 in enc.0 (Linear): load %x: load needs a non-empty tag\n")
    # the second operand of the reveal is not defined anywhere
    bad = replace(g, nodes=(g.nodes[0], replace(g.nodes[1], op="add", operands=(x, Value("nope", F4)), attrs=()),
                            g.nodes[2]))
    with pytest.raises(VerifyError) as e:
        verify(bad)
    assert (e.value.op, e.value.operand, e.value.attr) == ("add", 1, None)


# ---------------------------------------------------------------- records across processes


def _graph():
    b = Builder("p", ["alice", "bob"])
    x = b.emit("load", attrs={"tag": "x", "owner": 0}, types=[F4], name="x", loc=Loc("u.py", 3, "fc", "Linear"))
    s = b.emit("share", [x], name="s", loc=Loc("u.py", 4))
    y = b.emit("reveal", [s], {"to": 1}, name="y", loc=Loc("u.py", 5))
    return b.finish([y])


def _through_json(e, g_child, g_parent):
    wire = json.dumps(ErrorRecord.of(e, g_child).to_json())
    return ErrorRecord.from_json(json.loads(wire)).to_exception(g_parent)


@pytest.mark.parametrize("cls", [PlanRuntimeError, DataError])
def test_plan_errors_come_back_equal(cls):
    g = _graph()
    child = parse_graph(print_graph(g))  # the rank reads its own copy of the plan
    node = list(child.walk())[1]
    cause = ValueError("shapes do not fit\nsecond line")
    e = cls(node, "bob", "it broke", cause, child)
    rec = ErrorRecord.of(e, child)
    assert (rec.kind, rec.type, rec.party, rec.node, rec.loc, rec.problem, rec.cause) == (
        "data" if cls is DataError else "plan", cls.__name__, "bob", 1, ["u.py", 4, None, None], "it broke",
        "ValueError: shapes do not fit")
    back = _through_json(e, child, g)
    assert type(back) is cls and str(back) == str(e)
    assert back.node is list(g.walk())[1] and back.party == "bob" and back.problem == "it broke"
    assert isinstance(back.cause, RuntimeError) and back.__cause__ is back.cause
    assert str(back.cause) == "ValueError: shapes do not fit"


def test_node_free_and_other_errors_come_back():
    g = _graph()
    e = PlanRuntimeError(None, "alice", "the rank ended without a result")
    back = _through_json(e, g, g)
    assert type(back) is PlanRuntimeError and back.node is None and str(back) == str(e)
    for err in (PeerFailed("carol failed"), PeerTimeout("bob said nothing for 30 s")):
        back = _through_json(err, g, g)
        assert type(back) is type(err) and str(back) == str(err)
    back = _through_json(KeyError("k"), None, g)
    assert type(back) is RuntimeError and str(back) == "KeyError: 'k'"


@pytest.mark.parametrize("bad", [None, [], {"kind": "plan"}, dict(ErrorRecord.of(KeyError("k")).to_json(), kind="pickle"),
                                 dict(ErrorRecord.of(KeyError("k")).to_json(), node=-1)])
def test_malformed_records_are_refused(bad):
    with pytest.raises(RuntimeError, match="malformed error record"):
        ErrorRecord.from_json(bad)


# ---------------------------------------------------------------- locations


def test_loc_text_old_and_new():
    assert fmt_loc(Loc("a.py", 3)) == 'loc("a.py":3)'
    assert fmt_loc(Loc("a.py", 3, "features.3", "Conv2d")) == 'loc("a.py":3 in "features.3": "Conv2d")'
    assert fmt_loc(Loc("a.py", 3, "fc")) == 'loc("a.py":3 in "fc")'
    assert str(Loc("a.py", 3, "features.3", "Conv2d")) == "a.py:3 in features.3 (Conv2d)"
    assert str(Loc("a.py", 3)) == "a.py:3"
    with pytest.raises(ValueError):
        Loc("a.py", 3, None, "Conv2d")
    text = (HEAD + '  %x = load "t" from alice : private<0> f32[2]  loc("a.py":3)\n'
            '  %y = share %x : secret f32[2]  loc("a.py":4 in "enc.0": "Linear")\n'
            '  %z = reveal %y to bob : private<1> f32[2]  loc("a.py":5 in "enc")\n  return %z\n}\n')
    g = parse_graph(text)
    assert [n.loc for n in g.nodes[:3]] == [Loc("a.py", 3), Loc("a.py", 4, "enc.0", "Linear"), Loc("a.py", 5, "enc")]
    assert parse_graph(print_graph(g)) == g


def test_old_plan_files_still_read_byte_for_byte():
    from planc.ir.plan import Plan

    g = _graph()
    old = replace(g, nodes=tuple(replace(n, loc=Loc(n.loc.file, n.loc.line)) if n.loc else n for n in g.nodes))
    data = Plan(old).to_bytes()
    assert b" in " not in data  # what planc wrote before locations named modules
    assert Plan.from_bytes(data).graph == old and Plan.from_bytes(data).to_bytes() == data
    assert Plan.from_bytes(Plan(g).to_bytes()).graph == g
