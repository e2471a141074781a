"""The verifier: each broken invariant gives a located message with IR context."""
from __future__ import annotations

from dataclasses import replace

import pytest

from planc.ir.builder import Builder
from planc.ir.graph import Loc, Node, Value
from planc.ir.types import PUBLIC, SECRET, TensorType, private
from planc.ir.verify import VerifyError, verify

F4 = TensorType("f32", (4,), private(0))


def small():
    b = Builder("p", ["alice", "bob"])
    x = b.emit("load", attrs={"tag": "x", "owner": 0}, types=[F4], name="x", loc=Loc("u.py", 3))
    s = b.emit("share", [x], name="s", loc=Loc("u.py", 4))
    r = b.emit("relu", [s], name="r", loc=Loc("u.py", 5))
    y = b.emit("reveal", [r], {"to": 1}, name="y", loc=Loc("u.py", 6))
    return b.finish([y])


def with_node(g, i, node):
    nodes = list(g.nodes)
    nodes[i] = node
    return replace(g, nodes=tuple(nodes))


def test_valid_graph_passes():
    assert verify(small()) is not None


def test_wrong_result_type_names_line_and_types():
    g = small()
    n = g.nodes[2]
    bad = with_node(g, 2, replace(n, results=(Value("r", TensorType("f32", (5,), SECRET)),)))
    with pytest.raises(VerifyError) as e:
        verify(bad)
    msg = str(e.value)
    assert msg.splitlines()[0] == ("u.py:5: relu %r: result type is secret f32[5] but relu of secret f32[4] "
                                   "gives secret f32[4]")
    assert "  >   %r = relu %s" in msg  # IR context with the node marked


def test_private_operand_of_a_secret_op_needs_share():
    g = small()
    x = g.nodes[0].result
    bad = with_node(g, 2, replace(g.nodes[2], operands=(x,), results=(Value("r", F4),)))
    bad = with_node(bad, 3, replace(bad.nodes[3], operands=(bad.nodes[2].result,)))
    verify(bad)  # relu of alice's own value stays private<0>: fine
    b = Builder("q", ["alice", "bob"])
    x = b.emit("load", attrs={"tag": "x", "owner": 0}, types=[F4], name="x")
    y = b.emit("load", attrs={"tag": "y", "owner": 1}, types=[TensorType("f32", (4,), private(1))], name="y")
    g2 = b.finish([x])
    add = Node("add", (x, y), (Value("z", TensorType("f32", (4,), SECRET)),), (), (), Loc("u.py", 9))
    g2 = replace(g2, nodes=g2.nodes[:2] + (add,) + g2.nodes[2:])
    with pytest.raises(VerifyError, match=r"^u.py:9: add %z: operand private<0> f32\[4\] mixes with secret "
                                          r"values: share it first"):
        verify(g2)


def test_use_before_definition():
    g = small()
    bad = replace(g, nodes=(g.nodes[1], g.nodes[0]) + g.nodes[2:])
    with pytest.raises(VerifyError, match=r"^u.py:4: share %s: operand %x is used before it is defined"):
        verify(bad)


def test_load_owner_and_visibility_must_agree():
    g = small()
    n = g.nodes[0]
    bad = with_node(g, 0, replace(n, results=(Value("x", TensorType("f32", (4,), private(1))),)))
    with pytest.raises(VerifyError, match=r"load from party 0 must be private<0>, not private<1>"):
        verify(bad)


def test_reveal_to_unknown_party():
    g = small()
    n = g.nodes[3]
    bad = with_node(g, 3, replace(n, attrs=(("to", 5),), results=(Value("y", TensorType("f32", (4,), private(5))),)))
    with pytest.raises(VerifyError, match=r"names party 5, but the plan has 2 parties"):
        verify(bad)


def test_missing_return_and_reserved_party_name():
    g = small()
    with pytest.raises(VerifyError, match=r"does not end in a return"):
        verify(replace(g, nodes=g.nodes[:-1]))
    with pytest.raises(VerifyError, match=r"party name 'all' must be an identifier other than 'all'"):
        verify(replace(g, parties=("alice", "all")))


def test_loop_body_must_yield_carried_types():
    b = Builder("l", ["alice"])
    x = b.emit("const", (), {"value": 1.0}, types=[TensorType("f32", (), PUBLIC)], name="x")
    i, c = b.begin_region([TensorType("i64", (), PUBLIC), x.type], ["i", "c"])
    d = b.emit("unsqueeze", [c], {"dim": 0}, name="d")
    body = b.end_region([d], Loc("u.py", 12))
    b.emit("loop", [x], {"trips": 3}, types=[x.type], regions=[body], name="l", loc=Loc("u.py", 11))
    g = b.finish([])
    with pytest.raises(VerifyError, match=r"^u.py:12: yield: loop body yields public f32\[1\] but carries public f32\[\]"):
        verify(g)


def _inline_const(dtype, value, use="squeeze"):
    """%c = const {value=...} : public <dtype>[], used by one op, at u.py:7."""
    b = Builder("k", ["alice"])
    c = b.emit("const", (), {"value": value}, types=[TensorType(dtype, (), PUBLIC)], name="c", loc=Loc("u.py", 7))
    out = b.emit(use, [c], name="d", loc=Loc("u.py", 8))
    return b.finish([out])


def test_inline_const_out_of_its_dtype_range_is_located():
    # found by hypothesis: the verifier accepted it and constant folding crashed in torch
    with pytest.raises(VerifyError) as e:
        verify(_inline_const("i32", 2147483648.0))
    msg = str(e.value)
    assert msg.splitlines()[0] == ("u.py:7: const %c: inline const value 2147483648.0 does not fit i32 "
                                   "(range -2147483648 to 2147483647)")
    assert "  >   %c = const {value=2147483648.0}" in msg
    assert e.value.node.op == "const" and e.value.node.result.name == "c"
    assert (e.value.op, e.value.attr, str(e.value.loc)) == ("const", "value", "u.py:7")


@pytest.mark.parametrize("dtype, value, why", [
    ("i32", -2147483649.0, r"range -2147483648 to 2147483647"),
    ("i32", 2147483647.5, r"range -2147483648 to 2147483647"),
    ("i64", 2.0 ** 63, r"range -9223372036854775808 to 9223372036854775807"),
    ("i64", -(2.0 ** 64), r"range -9223372036854775808 to 9223372036854775807"),
    ("i64", float("inf"), r"inf does not fit i64 \(not finite\)"),
    ("i32", float("nan"), r"nan does not fit i32 \(not finite\)"),
    ("bool", 2.0, r"2.0 does not fit bool \(only 0 or 1\)"),
    ("bool", -1.0, r"does not fit bool"),
    ("bool", 0.5, r"does not fit bool"),
])
def test_inline_const_must_fit_its_dtype(dtype, value, why):
    with pytest.raises(VerifyError, match=r"^u.py:7: const %c: inline const value .*" + why):
        verify(_inline_const(dtype, value))


@pytest.mark.parametrize("dtype, value", [
    ("i32", -2147483648.0), ("i32", 2147483647.0), ("i64", -(2.0 ** 63)), ("i64", 2.0 ** 63 - 1024),
    ("bool", 0.0), ("bool", 1.0), ("f32", float("inf")), ("f32", 1e300), ("f64", float("-inf")),
])
def test_inline_const_at_the_edge_of_its_dtype_is_valid(dtype, value):
    verify(_inline_const(dtype, value))
