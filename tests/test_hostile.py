"""Plans written by strangers: reading is linear, the bounds hold, settings are checked, and
parse_graph / verify / Plan.from_bytes raise only their own errors, promptly, with short
messages, whatever they are given. The hostile plans are generated (tests/hostile.py);
the fuzzing of real plans is tests/test_fuzz_plans.py."""
from __future__ import annotations

import math
import os
import time
from dataclasses import replace

import hostile
import pytest
import safetensors.torch  # noqa: F401 — imported once here, so that no timing below pays for torch

from planc.ir import plan as planfile
from planc.ir.builder import Builder
from planc.ir.graph import Graph, Loc, Node, Region, Value
from planc.ir.parser import ParseError, parse_and_verify, parse_graph
from planc.ir.plan import SETTINGS, Plan, PlanFormatError, check_settings, settings
from planc.ir.printer import print_graph
from planc.ir.types import PUBLIC, SECRET, TensorType, Vis, private
from planc.ir.verify import (MAX_ATTR_ITEMS, MAX_DEPTH, MAX_DIM, MAX_ELEMENTS, MAX_LIST_DEPTH, MAX_MESSAGE,
                             MAX_PARTIES, MAX_RANK, MAX_TRIPS, VerifyError, verify)

# what a message may cost: the problem (MAX_MESSAGE), a location and five lines of context
MESSAGE_LIMIT = MAX_MESSAGE + 5 * 170 + 400


def cpu(f, *args):
    """(result or exception, CPU seconds): CPU time, so that a busy machine does not fail a
    bound that is about the code."""
    t = time.process_time()
    try:
        out = f(*args)
    except Exception as e:  # noqa: BLE001
        out = e
    return out, time.process_time() - t


def refused(f, arg, error, limit_s=1.0):
    """f(arg) raises `error` (nothing else) within limit_s of CPU, with a short message."""
    out, took = cpu(f, arg)
    assert isinstance(out, error), f"{type(out).__name__}: {str(out)[:300]}"
    assert took < limit_s, took
    assert len(str(out)) <= MESSAGE_LIMIT, len(str(out))
    return out


# ---------------------------------------------------------------- linear time


def test_generated_plans_are_laid_out_as_printed():
    for text in (hostile.loops_text(3, consts=2), hostile.straight_text(3)):
        assert hostile.canonical(text) == text


def test_50000_loops_read_in_linear_time():
    # every loop carries the one before: the scope of each body holds all earlier loops,
    # which the old reader and verifier copied once per loop (50,000^2 / 2 entries)
    text = hostile.loops_text(50_000)
    assert len(text) > 5_000_000
    t = time.process_time()
    g = parse_graph(text, "loops.plan")
    verify(g)
    took = time.process_time() - t
    assert len(g.nodes) == 50_002
    assert took < 2.0, f"parse + verify took {took:.2f} s of CPU"


def test_reading_time_grows_linearly():
    def read(n):
        text = hostile.loops_text(n, consts=n)
        best = math.inf
        for _ in range(3):
            t = time.process_time()
            verify(parse_graph(text))
            best = min(best, time.process_time() - t)
        return best

    small, big = read(1_000), read(8_000)
    assert big < 8 * small * 2.5, (small, big)  # 8x the plan: far less than 64x the time


def test_plan_file_of_many_loops_reads_promptly(tmp_path):
    data = hostile.pack(hostile.loops_text(8000, consts=8000))
    (tmp_path / "p.plan").write_bytes(data)
    p, took = cpu(Plan.read, tmp_path / "p.plan")
    assert isinstance(p, Plan) and len(p.graph.nodes) == 16_002
    assert took < 2.0, took


# ---------------------------------------------------------------- the corpus


@pytest.mark.parametrize("name", list(hostile.CORPUS))
def test_hostile_corpus_is_refused_promptly(name):
    data = hostile.CORPUS[name]()
    out, took = cpu(Plan.from_bytes, data)
    if "(a valid plan)" in name:
        assert isinstance(out, Plan), f"{type(out).__name__}: {str(out)[:300]}"
    else:
        assert isinstance(out, PlanFormatError), f"{type(out).__name__}: {str(out)[:300]}"
        assert len(str(out)) <= MESSAGE_LIMIT, len(str(out))
    assert took < 1.0, f"{took:.2f} s"


def test_corpus_messages_name_the_limit():
    msgs = {}
    for name in ("loops nested 200 deep", "loop of 2^62 trips", "nested loops of 2^20 x 2^20 trips",
                 "tensor of 2^40 elements", "dimension of 2^40", "tensor of rank 100,000",
                 "5,000-digit integer (dimension)", "frac_bits = 40", 'frac_bits = "abc"'):
        with pytest.raises(PlanFormatError) as e:
            Plan.from_bytes(hostile.CORPUS[name]())
        msgs[name] = str(e.value)
    assert msgs["loops nested 200 deep"] == "plan.ir: line 66:1: loops nested deeper than 64 (MAX_DEPTH)"
    assert "loop of 4,611,686,018,427,387,904 trips, more than the limit of 2,147,483,648 (MAX_TRIPS)" in \
        msgs["loop of 2^62 trips"]
    assert "loop body would run 1,099,511,627,776 times" in msgs["nested loops of 2^20 x 2^20 trips"]
    assert msgs["tensor of 2^40 elements"].startswith(
        "plan.ir: load %x: type: 1,099,511,627,776 elements, more than the limit of 4,294,967,296 per tensor")
    assert "dimension 1099511627776 is more than the limit of 2,147,483,648 (MAX_DIM)" in msgs["dimension of 2^40"]
    assert "rank 100,000 is more than the limit of 8 (MAX_RANK)" in msgs["tensor of rank 100,000"]
    assert msgs["5,000-digit integer (dimension)"].startswith("plan.ir: line 2:45: integer 9999")
    assert "(5,000 digits) is outside int64" in msgs["5,000-digit integer (dimension)"]
    assert msgs["frac_bits = 40"].startswith('manifest.json: field "meta.frac_bits": 40 is outside 8..30')
    assert msgs['frac_bits = "abc"'] == 'manifest.json: field "meta.frac_bits": expected int, got "abc"'


# ---------------------------------------------------------------- no other exception, ever


def _deep_text(depth):
    return hostile.nested_text(depth)


@pytest.mark.parametrize("depth,ok", [(MAX_DEPTH, True), (MAX_DEPTH + 1, False), (200, False), (20_000, False)])
def test_region_nesting_is_bounded_in_the_text(depth, ok):
    text = _deep_text(depth)
    if ok:
        g = parse_and_verify(text)
        assert print_graph(parse_graph(print_graph(g))) == print_graph(g)
        return
    e = refused(parse_graph, text, ParseError)
    assert e.problem == f"loops nested deeper than {MAX_DEPTH} (MAX_DEPTH)" and e.line == MAX_DEPTH + 2


def _nested_graph(depth) -> Graph:
    """Loops nested `depth` deep, built in code (no parser to stop it)."""
    i64 = TensorType("i64", (), PUBLIC)
    inner: tuple = (Node("yield"),)
    for d in reversed(range(depth)):
        loop = Node("loop", (), (), (("trips", 1),), (Region((Value(f"i{d}", i64),), inner),))
        inner = (loop, Node("yield"))
    return Graph("deep", ("alice",), inner[:-1] + (Node("return"),))


@pytest.mark.parametrize("depth,ok", [(MAX_DEPTH, True), (MAX_DEPTH + 1, False), (200, False), (5_000, False)])
def test_region_nesting_is_bounded_in_a_graph(depth, ok):
    g = _nested_graph(depth)
    if ok:
        verify(g)
        return
    e = refused(verify, g, VerifyError)
    assert e.problem == f"loops nested deeper than {MAX_DEPTH} (MAX_DEPTH)" and e.op == "loop"


DIGITS = "9" * 5000


@pytest.mark.parametrize("where,text", [
    ("trips", hostile.HEAD + f"  loop {DIGITS} {{ ^(%i: public i64[]):\n    yield\n  }} :\n  return\n}}\n"),
    ("party index", f"plan @p(parties: alice={DIGITS}) {{\n  return\n}}\n"),
    ("owner", hostile.one_node("", "%x").replace("private<0>", f"private<{DIGITS}>")),
    ("owner (spaced)", hostile.one_node("", "%x").replace("private<0> f32[4]", f"private < {DIGITS} > f32 [ 4 ]")),
    ("dim", hostile.one_node("", "%x").replace("f32[4]", f"f32[{DIGITS}]")),
    ("dim (spaced)", hostile.one_node("", "%x").replace("f32[4]", f"f32 [ 1, {DIGITS} ]")),
    ("attribute", hostile.one_node(f"  %y = unsqueeze %x {{dim=-{DIGITS}}} : private<0> f32[4,1]")),
    ("attribute list", hostile.one_node(f"  %y = reshape %x {{shape=[1, {DIGITS}]}} : private<0> f32[4]")),
    ("loc line", hostile.one_node("", "%x").replace("f32[4]\n", f'f32[4]  loc("a.py":-{DIGITS})\n', 1)),
    ("loc line (spaced)", hostile.one_node("", "%x").replace("f32[4]\n", f'f32[4]  loc ( "a.py" : {DIGITS} in "m")\n',
                                                            1)),
], ids=lambda x: x if len(x) < 30 else "text")
def test_huge_integers_are_parse_errors(where, text):
    e = refused(parse_graph, text, ParseError)
    assert "outside int64" in e.problem, e.problem


def test_int64_is_the_range_of_integers():
    for v, ok in ((2**63 - 1, True), (2**63, False), (-2**63, True), (-2**63 - 1, False)):
        text = hostile.one_node(f"  %y = unsqueeze %x {{dim={v}}} : private<0> f32[4,1]")
        try:
            parse_graph(text)
            assert ok
        except ParseError as e:
            assert not ok and f"integer {v} is outside int64" in e.problem


def test_unicode_digits_are_not_digits():
    # Python's int() reads them; the format is ASCII (grammar.lark: INT is [0-9]+)
    refused(parse_graph, hostile.one_node("", "%x").replace("f32[4]", "f32[\u0663]"), ParseError)
    refused(parse_graph, hostile.one_node("", "%x").replace("f32[4]", "f32 [ \u0663 ]"), ParseError)


MB = "x" * (1 << 20)


@pytest.mark.parametrize("text", [
    hostile.one_node("", "%x").replace("%x =", f"%{MB} ="),  # fine: returns %x, which is undefined
    hostile.one_node(f"  %y = relu %{MB} : private<0> f32[4]"),
    hostile.one_node(f"  %y = {MB} %x : private<0> f32[4]"),
    hostile.one_node(f"  %y = relu %x {{{MB}=1}} : private<0> f32[4]"),
    hostile.one_node(f"  %y = reveal %x to {MB} : private<1> f32[4]"),
    hostile.one_node("", "%x").replace("f32[4]", f"{MB}[4]"),
    hostile.one_node("", "%x").replace('"t"', f'"{MB}\\q"'),
    hostile.one_node("", "%x").replace('"t"', f'"{MB}'),
    f"plan @{MB}(parties: {MB}=1) {{\n  return\n}}\n",
    hostile.one_node("  %x = relu %x : private<0> f32[4]").replace("%x", f"%{MB}"),
    hostile.one_node(f"  %y = relu %x : private<0> f32[4]  loc({MB})"),
], ids=range(11))
def test_huge_names_give_short_messages(text):
    refused(parse_graph, text, ParseError)


@pytest.mark.parametrize("depth", [MAX_LIST_DEPTH + 1, 1000, 200_000])
def test_nested_attribute_lists(depth):
    text = hostile.one_node("  %y = reshape %x {shape=" + "[" * depth + "]" * depth + "} : private<0> f32[4]")
    e = refused(parse_graph, text, ParseError)
    assert e.problem == f"lists nested deeper than {MAX_LIST_DEPTH} (MAX_LIST_DEPTH)"
    # lists as deep as the limit are read (and refused by the op: shape takes ints)
    ok = hostile.one_node("  %y = reshape %x {shape=" + "[" * MAX_LIST_DEPTH + "]" * MAX_LIST_DEPTH + "} : private<0> f32[4]")
    assert "not of kind ints" in refused(parse_graph, ok, ParseError).problem


def test_long_attribute_lists():
    shape = ", ".join(["1"] * (MAX_ATTR_ITEMS + 1))
    e = refused(parse_graph, hostile.one_node(f"  %y = reshape %x {{shape=[{shape}]}} : private<0> f32[4]"), ParseError)
    assert e.problem == f"a list of more than {MAX_ATTR_ITEMS} entries (MAX_ATTR_ITEMS)"
    dims = ["1"] * (MAX_ATTR_ITEMS - 1) + ["4"]
    text = hostile.one_node(f"  %y = reshape %x {{shape=[{', '.join(dims)}]}} : private<0> f32[{','.join(dims)}]")
    e = refused(verify, parse_graph(text), VerifyError)  # the list is read; its result type is refused
    assert e.problem == f"type: rank {MAX_ATTR_ITEMS:,} is more than the limit of {MAX_RANK} (MAX_RANK)"


FLOATS = ["nan", "inf", "-inf", "1e999", "-1e999", "1e-999"]


@pytest.mark.parametrize("v", FLOATS)
def test_nan_and_inf_in_every_float_field(v):
    # const value, pad value, batch_norm eps: what each holds is data; nothing but the
    # named errors may come out, and a float that fits is read back exactly
    for line in (f"  %y = const {{value={v}}} : public f32[]",
                 f"  %y = const {{value={v}}} : public i64[]",
                 f"  %y = pad %x {{pads=[1, 1], value={v}}} : private<0> f32[6]",
                 f"  %y = batch_norm %x, %m, %m, %m, %m {{eps={v}}} : private<0> f32[2,3]"):
        text = (hostile.HEAD + '  %x = load "t" from alice : private<0> f32[2,3]\n'
                '  %m = load "m" from alice : private<0> f32[3]\n' + line + "\n  return %y\n}\n")
        if "pad" in line:
            text = text.replace("f32[2,3]\n", "f32[4]\n", 1)
        try:
            g = parse_and_verify(text)
        except (ParseError, VerifyError) as e:
            assert len(str(e)) <= MESSAGE_LIMIT
            continue
        back = parse_graph(print_graph(g))
        assert print_graph(back) == print_graph(g)


# ---------------------------------------------------------------- graphs built in code


def _small():
    b = Builder("p", ["alice", "bob"])
    x = b.emit("load", attrs={"tag": "x", "owner": 0}, types=[TensorType("f32", (4,), private(0))], name="x",
               loc=Loc("u.py", 3))
    r = b.emit("relu", [b.emit("share", [x], name="s")], name="r", loc=Loc("u.py", 5))
    return b.finish([b.emit("reveal", [r], {"to": 1}, name="y")])


def _with(g, i, **change):
    nodes = list(g.nodes)
    nodes[i] = replace(nodes[i], **change)
    return replace(g, nodes=tuple(nodes))


HUGE = 10 ** 5000


def _hostile_graphs():
    g = _small()
    x, s, r, y, ret = g.nodes
    big = TensorType("f32", (HUGE,), private(0))
    yield "not a graph", "text"
    yield "nodes not a tuple", replace(g, nodes=5)
    yield "a node that is no Node", replace(g, nodes=(1,) + g.nodes)
    yield "op not a string", _with(g, 2, op=["relu"])
    yield "operand not a Value", _with(g, 2, operands=("s",))
    yield "operand of another type", _with(g, 2, operands=(Value("s", TensorType("f32", (5,), SECRET)),))
    yield "result not a Value", _with(g, 0, results=(None,))
    yield "huge dimension", _with(g, 0, results=(Value("x", big),))
    yield "huge owner", _with(g, 0, results=(Value("x", TensorType("f32", (4,), Vis("private", HUGE))),))
    yield "huge rank", _with(g, 0, results=(Value("x", TensorType("f32", (1,) * 100_000, private(0))),))
    yield "huge loc line", _with(g, 0, loc=Loc("u.py", HUGE))
    yield "loc line not an int", _with(g, 0, loc=Loc("u.py", "3"))
    yield "loc not a Loc", _with(g, 0, loc="u.py:3")
    yield "huge attribute", _with(g, 3, attrs=(("to", HUGE),))
    yield "float attribute 1e400", _with(g, 3, attrs=(("to", 10 ** 400),))
    yield "list attribute", _with(g, 3, attrs=(("to", [1]),))
    yield "dict attribute", _with(g, 3, attrs=(("to", {}),))
    deep = ()
    for _ in range(100_000):
        deep = (deep,)
    yield "deeply nested tuple attribute", _with(g, 3, attrs=(("to", deep),))
    yield "long tuple attribute", _with(g, 3, attrs=(("to", (1,) * 10 ** 6),))
    yield "attrs not pairs", _with(g, 3, attrs=((1, 2, 3),))
    yield "regions not Regions", _with(g, 2, regions=(5,))
    yield "parties not names", replace(g, parties=(1, 2))
    yield "too many parties", replace(g, parties=tuple(f"p{i}" for i in range(MAX_PARTIES + 1)))
    yield "huge value name", _with(g, 2, operands=(Value("q" * 10 ** 6, s.result.type),))
    yield "no name", replace(g, name=None)
    n = Node("slice", (Value("c", TensorType("f32", (), PUBLIC)),), (Value("d", TensorType("f32", (), PUBLIC)),),
             (("dim", 0), ("end", 1), ("start", 0), ("step", 1)))
    c = Node("const", (), (Value("c", TensorType("f32", (), PUBLIC)),), (("name", None), ("value", 1.0)))
    yield "type rule that indexes a rank-0 shape", Graph("p", ("alice",), (c, n, Node("return")))
    shared = (Node("yield"),)
    loop = Node("loop", (), (), (("trips", 1),), (Region((Value("i", TensorType("i64", (), PUBLIC)),), shared),))
    for _ in range(60):  # the same loop twice in each body: 2^60 nodes if walked naively
        body = Region((Value("i", TensorType("i64", (), PUBLIC)),), (loop, loop, Node("yield")))
        loop = Node("loop", (), (), (("trips", 1),), (body,))
    yield "shared subgraphs", Graph("p", ("alice",), (loop, Node("return")))


@pytest.mark.parametrize("name,g", list(_hostile_graphs()), ids=[n for n, _ in _hostile_graphs()])
def test_verify_raises_only_verify_error(name, g):
    refused(verify, g, VerifyError)


def test_verify_messages_name_op_value_location_and_limit():
    g = _small()
    bad = _with(g, 0, results=(Value("x", TensorType("f32", (2**20, 2**20), private(0))),))
    e = refused(verify, bad, VerifyError)
    assert (e.op, str(e.loc)) == ("load", "u.py:3")
    assert str(e).splitlines()[0] == ("u.py:3: load %x: type: 1,099,511,627,776 elements, more than the limit of "
                                      "4,294,967,296 per tensor (MAX_ELEMENTS)")
    long = _with(g, 0, results=(Value("x" * 10 ** 6, TensorType("f32", (2**40,), private(0))),))
    msg = str(refused(verify, long, VerifyError))
    assert "xxxx...(1,000,001 characters)...xxx" in msg.splitlines()[0] and "MAX_DIM" in msg


def test_bounds_at_their_edges():
    def load(shape):
        b = Builder("p", ["alice"])
        return b.finish([b.emit("load", attrs={"tag": "t", "owner": 0}, types=[TensorType("f32", shape, private(0))])])

    verify(load((1,) * MAX_RANK))
    with pytest.raises(VerifyError, match="MAX_RANK"):
        verify(load((1,) * (MAX_RANK + 1)))
    verify(load((MAX_DIM,)))
    with pytest.raises(VerifyError, match="MAX_DIM"):
        verify(load((MAX_DIM + 1,)))
    verify(load((2**16, 2**16)))
    with pytest.raises(VerifyError, match="MAX_ELEMENTS"):
        verify(load((2**16, 2**16 + 1)))
    assert MAX_ELEMENTS == 2**32 and MAX_TRIPS == 2**31

    def loop(trips, inner=None):
        i64 = TensorType("i64", (), PUBLIC)
        body = (Node("yield"),) if inner is None else (loop(inner), Node("yield"))
        return Node("loop", (), (), (("trips", trips),), (Region((Value(f"i{id(body)}", i64),), body),))

    verify(Graph("p", ("a",), (loop(MAX_TRIPS), Node("return"))))
    with pytest.raises(VerifyError, match=r"loop of 2,147,483,649 trips"):
        verify(Graph("p", ("a",), (loop(MAX_TRIPS + 1), Node("return"))))
    verify(Graph("p", ("a",), (loop(2**16, 2**15), Node("return"))))
    with pytest.raises(VerifyError, match=r"loop body would run 4,294,967,296 times"):
        verify(Graph("p", ("a",), (loop(2**16, 2**16), Node("return"))))
    verify(Graph("p", ("a",), (loop(0, MAX_TRIPS), Node("return"))))  # a body that never runs


# ---------------------------------------------------------------- plan files: size, members


def test_a_huge_file_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "big.plan"
    with open(path, "wb") as f:
        f.truncate(3 << 30)  # sparse: 3 GiB that cost no disk
    e = refused(Plan.read, path, PlanFormatError, limit_s=0.1)
    assert str(e) == f"plan file is larger than the limit of {planfile.MAX_SIZE} bytes (3,221,225,472 bytes)"


def test_a_pipe_is_read_up_to_the_limit(tmp_path):
    data = hostile.pack(hostile.one_node("", "%x"))
    fifo = tmp_path / "p.fifo"
    os.mkfifo(fifo)
    import threading

    def write():
        with open(fifo, "wb") as f:
            f.write(data + b"\0" * 100)

    t = threading.Thread(target=write)
    t.start()
    with pytest.raises(PlanFormatError, match="larger than the limit of"):
        Plan.read(fifo, max_size=len(data) + 10)
    t.join(5)


def test_members_are_refused_by_their_declared_size(monkeypatch):
    data = hostile.pack(hostile.canonical(hostile.one_node("", "%x")))
    ir = len(hostile.members(data)["plan.ir"])
    monkeypatch.setattr(planfile, "MAX_IR_SIZE", ir - 1)
    e = refused(Plan.from_bytes, data, PlanFormatError)
    assert str(e) == f"member plan.ir: {ir:,} bytes, more than the limit of {ir - 1:,}"
    assert e.member == "plan.ir"
    monkeypatch.setattr(planfile, "MAX_IR_SIZE", ir)
    Plan.from_bytes(data)
    monkeypatch.setattr(planfile, "MAX_MANIFEST_SIZE", 10)
    assert refused(Plan.from_bytes, data, PlanFormatError).member == "manifest.json"


def test_members_are_checked_against_the_manifest_limits():
    data = hostile.pack(hostile.one_node("", "%x"))
    bad = hostile.repack(data, change=lambda m: m["members"]["plan.ir"].update(size=planfile.MAX_IR_SIZE + 1))
    e = refused(Plan.from_bytes, bad, PlanFormatError)
    assert e.field == "members" and "at most 67,108,864 bytes" in str(e)


def test_bytes_are_not_copied_before_the_size_check():
    big = memoryview(bytearray(1 << 20))
    with pytest.raises(PlanFormatError, match="larger than the limit of 1000 bytes"):
        Plan.from_bytes(big, max_size=1000)


# ---------------------------------------------------------------- settings


def _plan(meta=None):
    b = Builder("p", ["alice", "bob"])
    x = b.emit("load", attrs={"tag": "t", "owner": 0}, types=[TensorType("f32", (4,), private(0))])
    return Plan(b.finish([x]), meta=dict(meta or {}))


@pytest.mark.parametrize("v,why", [
    (40, "40 is outside 8..30"), (7, "7 is outside 8..30"), (31, "31 is outside 8..30"), (-1, "outside"),
    ("abc", 'expected int, got "abc"'), (True, "expected int, got true"), (16.0, "expected int, got 16.0"),
    (None, "expected int, got null"), ([16], "expected int, got list"),
])
def test_frac_bits_must_be_an_int_in_range(v, why):
    data = hostile.repack(_plan().to_bytes(), change=lambda m: m["meta"].update(frac_bits=v))
    e = refused(Plan.from_bytes, data, PlanFormatError)
    assert (e.member, e.field) == ("manifest.json", "meta.frac_bits")
    assert str(e).startswith('manifest.json: field "meta.frac_bits": ') and why in str(e)
    with pytest.raises(PlanFormatError, match="meta.frac_bits"):  # nor can such a plan be written
        _plan({"frac_bits": v}).to_bytes()
    with pytest.raises(PlanFormatError, match="meta.frac_bits"):
        check_settings({"frac_bits": v})


@pytest.mark.parametrize("v", [8, 16, 30])
def test_frac_bits_in_range_round_trips(v):
    p = _plan({"frac_bits": v})
    q = Plan.from_bytes(p.to_bytes())
    assert q.meta == {"frac_bits": v} and settings(q.meta) == {"frac_bits": v}


def test_frac_bits_fits_the_ring():
    s = SETTINGS["frac_bits"]
    # a product carries 2 * frac_bits fractional bits before its truncation: the sign and at
    # least 3 integer bits must remain in the 64-bit ring
    assert 2 * s.hi + 3 + 1 <= planfile.RING_BITS and s.lo == 8
    from planc.runtime import fixed

    assert s.default == fixed.DEFAULT_FRAC_BITS  # what a plan that sets nothing runs with
    assert settings({}) == {"frac_bits": fixed.DEFAULT_FRAC_BITS}


def test_unknown_settings_are_refused():
    data = hostile.repack(_plan().to_bytes(), change=lambda m: m["meta"].update(ring="Z_2^32"))
    e = refused(Plan.from_bytes, data, PlanFormatError)
    assert str(e) == 'manifest.json: field "meta": unknown setting "ring" (settings: frac_bits)'
    assert e.field == "meta"


@pytest.mark.parametrize("field,value,why", [
    ("planc_version", "1.0; rm -rf /", "expected a version"),
    ("planc_version", "x" * 100, "expected a version"),
    ("planc_version", 1, "expected str"),
    ("name", "", "expected the plan's name"),
    ("parties", [], "expected 1 to 256 names"),
    ("parties", ["alice", "not a name"], "identifiers"),
    ("parties", [f"p{i}" for i in range(MAX_PARTIES + 1)], "expected 1 to 256 names"),
    ("captured", {"c": "x" * 2000}, "at most 1024 characters"),
    ("captured", {"c": 5}, "expected descriptions"),
    ("meta", [], "expected dict"),
    ("members", {"plan.ir": {"sha256": "0" * 64, "size": -1}, "constants.safetensors": {"sha256": "0" * 64,
                                                                                        "size": 0}}, "members"),
])
def test_every_manifest_field_has_a_type_and_a_range(field, value, why):
    data = hostile.repack(_plan().to_bytes(), change=lambda m: m.update({field: value}))
    e = refused(Plan.from_bytes, data, PlanFormatError)
    assert e.member == "manifest.json" and e.field == field and why in str(e), str(e)


def test_manifest_numbers_and_strings_json_cannot_write_back():
    good = _plan().to_bytes()
    ms = hostile.members(good)
    for raw, why in ((ms["manifest.json"].replace(b'"format_version":1', b'"format_version":1' + b"0" * 5000),
                      "integer of 5,001 digits"),
                     (ms["manifest.json"].replace(b'"format_version":1', b'"format_version":1' + b"0" * 500),
                      "unsupported format_version"),
                     (ms["manifest.json"].replace(b'"format_version":1', b'"format_version":1e999'), "not finite"),
                     (ms["manifest.json"].replace(b'"name":"p"', b'"name":"\\ud800"'), "field \"name\"")):
        data = hostile.rezip([("manifest.json", raw), ("plan.ir", ms["plan.ir"]),
                              ("constants.safetensors", ms["constants.safetensors"])])
        assert why in str(refused(Plan.from_bytes, data, PlanFormatError))


def test_planc_show_summary_lists_the_settings():
    from planc.summary import summarize

    rows = summarize(_plan({"frac_bits": 20}))["settings"]
    assert [r[:3] for r in rows] == [("frac_bits", "20", "set by the plan")]
    assert "fractional bits" in rows[0][3] and "8..30" in rows[0][3]
    rows = summarize(_plan())["settings"]
    assert [r[:3] for r in rows] == [("frac_bits", "16", "default")]
    rows = summarize(_plan({"frac_bits": 40}))["settings"]  # a Plan made in memory, never read
    assert rows[0][1].startswith("40 (invalid: 40 is outside 8..30")


def test_summary_of_many_constants_is_linear():
    import torch

    from planc.summary import summarize

    b = Builder("p", ["alice"])
    consts = [b.emit("const", attrs={"name": f"c{i}"}, types=[TensorType("f32", (1,), PUBLIC)]) for i in range(20_000)]
    p = Plan(b.finish(consts[:1]), {f"c{i}": torch.zeros(1) for i in range(20_000)})
    s, took = cpu(summarize, p)
    assert len(s["constants"]) == 20_000 and s["constants"][0][1] == "public f32[1]"
    assert took < 2.0, took
