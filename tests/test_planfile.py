"""The plan file (layout: ``ir/plan.py``): round trips, same plan -> same bytes, and every malformed
or tampered file gives PlanFormatError saying what is wrong."""
from __future__ import annotations

import functools
import hashlib
import io
import json
import pickle
import re
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from planc.ir.builder import Builder
from planc.ir.graph import Loc
from planc.ir.plan import Plan, PlanFormatError
from planc.ir.printer import print_graph
from planc.ir.types import PUBLIC, TensorType, private


def _profile():
    # the project's shared profile lives in tests/conftest.py once there is one; Hypothesis
    # also has a built-in "ci" profile, so ask for it only when the conftest is there
    if (Path(__file__).parent / "conftest.py").exists():
        try:
            return settings.get_profile("ci")
        except InvalidArgument:
            pass
    return settings(max_examples=300, deadline=None)


PROFILE = _profile()


# ---------------------------------------------------------------- a small real plan


def make_graph():
    b = Builder("tiny_cnn", ["alice", "bob"])
    x = b.emit("load", attrs={"tag": "mnist/test", "owner": 1}, name="x", loc=Loc("infer.py", 12),
               types=[TensorType("f32", (2, 1, 6, 6), private(1))])
    w = b.emit("load", attrs={"tag": "cnn/conv1.weight", "owner": 0}, name="w", loc=Loc("infer.py", 13),
               types=[TensorType("f32", (4, 1, 3, 3), private(0))])
    bias = b.emit("const", attrs={"name": "bias"}, name="bias", types=[TensorType("f32", (4,), PUBLIC)])
    scale = b.emit("const", attrs={"name": "scale"}, name="scale", types=[TensorType("f32", (4, 1, 1), PUBLIC)])
    half = b.emit("const", attrs={"value": 0.5}, name="half", types=[TensorType("f32", (), PUBLIC)])
    xs = b.emit("share", [x], loc=Loc("model.py", 19))
    ws = b.emit("share", [w], loc=Loc("model.py", 19))
    h = b.emit("conv2d", [xs, ws, bias], {"stride": [1, 1], "padding": [1, 1]}, loc=Loc("model.py", 20))
    a = b.emit("relu", [h], loc=Loc("model.py", 22))
    a = b.emit("mul", [a, scale], loc=Loc("model.py", 23))
    i, s = b.begin_region([TensorType("i64", (), PUBLIC), a.type], ["i", "s"])
    s2 = b.emit("mul", [s, half], loc=Loc("model.py", 25))
    s3 = b.emit("add", [s2, a], loc=Loc("model.py", 25))
    body = b.end_region([s3], loc=Loc("model.py", 26))
    acc = b.emit("loop", [a], {"trips": 3}, name="acc", types=[a.type], regions=[body], loc=Loc("model.py", 24))
    y = b.emit("reveal", [acc], {"to": 1}, name="y", loc=Loc("infer.py", 15))
    return b.finish([y], loc=Loc("infer.py", 16))


def make_plan() -> Plan:
    constants = {
        "bias": torch.tensor([0.5, -1.0, 0.0, 2.25]),
        "scale": torch.arange(4, dtype=torch.float32).reshape(4, 1, 1) / 3,
    }
    return Plan(
        make_graph(),
        constants,
        captured={"scale": "closure variable `scale` at examples/a.py:12"},
        meta={"frac_bits": 16},
    )


@functools.lru_cache(maxsize=None)
def plan_bytes() -> bytes:
    return make_plan().to_bytes()


# ---------------------------------------------------------------- helpers to tamper


NAMES = ("manifest.json", "plan.ir", "constants.safetensors")


def members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def rezip(items, date=(1980, 1, 1, 0, 0, 0)) -> bytes:
    """A zip written by the format's rules, independently of planc.ir.plan."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in items:
            zi = zipfile.ZipInfo(name, date_time=date)
            zi.external_attr = 0o100644 << 16
            zi.create_system = 3
            zf.writestr(zi, data)
    return buf.getvalue()


def manifest_bytes(m: dict) -> bytes:
    return json.dumps(m, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def repack(change=None, **replace) -> bytes:
    """The good plan's members with some replaced, manifest hashes kept consistent."""
    ms = members(plan_bytes())
    ms.update({k.replace("_", "."): v for k, v in replace.items()})
    m = json.loads(ms["manifest.json"])
    for name in ("plan.ir", "constants.safetensors"):
        m["members"][name] = {"sha256": hashlib.sha256(ms[name]).hexdigest(), "size": len(ms[name])}
    if change:
        change(m)
    ms["manifest.json"] = manifest_bytes(m)
    return rezip([(n, ms[n]) for n in NAMES])


def rejects(data: bytes, match: str | None = None) -> str:
    with pytest.raises(PlanFormatError) as ei:
        Plan.from_bytes(data)
    if match is not None:
        assert str(ei.value) == match
    return str(ei.value)


# ---------------------------------------------------------------- round trips


def test_round_trip():
    p = make_plan()
    q = Plan.from_bytes(p.to_bytes())
    assert q == p
    assert q.graph == p.graph
    assert q.captured == p.captured and q.meta == p.meta
    assert type(q.meta["frac_bits"]) is int
    for k, t in p.constants.items():
        assert q.constants[k].dtype == t.dtype and torch.equal(q.constants[k], t)
    assert str(q) == print_graph(p.graph)


def test_layout():
    data = plan_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
    assert [i.filename for i in infos] == list(NAMES)
    for i in infos:
        assert i.date_time == (1980, 1, 1, 0, 0, 0)
        assert i.compress_type == zipfile.ZIP_STORED and i.extra == b"" and i.flag_bits == 0
    ms = members(data)
    m = json.loads(ms["manifest.json"])
    assert ms["manifest.json"] == manifest_bytes(m)  # sorted keys, compact
    assert m["format"] == "planc-plan" and m["format_version"] == 1
    assert m["name"] == "tiny_cnn" and m["parties"] == ["alice", "bob"]
    assert m["members"]["plan.ir"]["sha256"] == hashlib.sha256(ms["plan.ir"]).hexdigest()
    assert ms["plan.ir"].decode() == print_graph(make_graph())
    # the format is what the spec says, not whatever plan.py happens to do
    assert rezip([(n, ms[n]) for n in NAMES]) == data


def test_deterministic(tmp_path):
    a, b = make_plan(), make_plan()
    assert a.to_bytes() == a.to_bytes() == b.to_bytes()
    a.save(tmp_path / "one.plan")
    b.save(tmp_path / "two.plan")
    h1 = hashlib.sha256((tmp_path / "one.plan").read_bytes()).hexdigest()
    h2 = hashlib.sha256((tmp_path / "two.plan").read_bytes()).hexdigest()
    assert h1 == h2 == a.sha256()
    assert Plan.read(tmp_path / "one.plan") == a


def test_constant_order_and_layout_do_not_matter():
    p = make_plan()
    q = Plan(p.graph, dict(reversed(list(p.constants.items()))), dict(p.captured), dict(p.meta))
    wide = torch.zeros(8)
    wide[::2] = p.constants["bias"]
    q.constants["bias"] = wide[::2]  # a strided view into a larger storage
    assert not q.constants["bias"].is_contiguous()
    assert q.to_bytes() == p.to_bytes()


def test_no_constants():
    b = Builder("id", ["alice"])
    x = b.emit("load", attrs={"tag": "t", "owner": 0}, types=[TensorType("i64", (3,), private(0))])
    p = Plan(b.finish([x]))
    assert Plan.from_bytes(p.to_bytes()) == p


def test_equality_is_exact():
    p = make_plan()
    q = make_plan()
    q.constants["bias"] = q.constants["bias"].double().float()
    assert p == q
    q.constants["bias"] = q.constants["bias"].clone()
    q.constants["bias"][2] = -0.0  # equal under ==, different bytes in the file
    assert p != q
    r = make_plan()
    r.meta["frac_bits"] = 16.0  # 16 == 16.0, but not the same setting
    assert p != r


@given(st.lists(st.floats(width=32, allow_nan=True), min_size=4, max_size=4),
       st.fixed_dictionaries({}, optional={"frac_bits": st.integers(8, 30)}))
@settings(PROFILE, max_examples=min(PROFILE.max_examples, 50))
def test_round_trip_values(values, meta):
    p = make_plan()
    p.constants["bias"] = torch.tensor(values, dtype=torch.float32)
    p.meta = meta
    data = p.to_bytes()
    assert Plan.from_bytes(data) == p
    assert Plan.from_bytes(data).to_bytes() == data


# ---------------------------------------------------------------- no byte can be changed


@given(st.data())
@settings(PROFILE)
def test_any_single_byte_change_is_rejected(data):
    good = plan_bytes()
    i = data.draw(st.integers(0, len(good) - 1))
    v = data.draw(st.integers(0, 255).filter(lambda v: v != good[i]))
    rejects(good[:i] + bytes([v]) + good[i + 1:])


@given(st.data())
@settings(PROFILE)
def test_any_truncation_is_rejected(data):
    good = plan_bytes()
    rejects(good[: data.draw(st.integers(0, len(good) - 1))])


@given(st.binary(min_size=1, max_size=64))
@settings(PROFILE)
def test_appended_bytes_are_rejected(tail):
    rejects(plan_bytes() + tail)


@given(st.data())
@settings(PROFILE)
def test_any_deleted_range_is_rejected(data):
    good = plan_bytes()
    i = data.draw(st.integers(0, len(good) - 1))
    j = data.draw(st.integers(i + 1, len(good)))
    rejects(good[:i] + good[j:])


# ---------------------------------------------------------------- hand-crafted tampering


def test_not_a_zip():
    rejects(b"", "not a zip file")
    rejects(b"hello world", "not a zip file")
    assert rejects(plan_bytes()[:100]).startswith("truncated or corrupt zip")


def test_extra_pickle_member():
    ms = members(plan_bytes())
    payload = pickle.dumps({"x": 1})
    rejects(rezip([(n, ms[n]) for n in NAMES] + [("data.pkl", payload)]), 'unexpected member "data.pkl"')


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_missing_and_reordered_members():
    ms = members(plan_bytes())
    rejects(rezip([(n, ms[n]) for n in NAMES[:2]]), 'missing member "constants.safetensors"')
    rejects(rezip([(n, ms[n]) for n in NAMES] + [("plan.ir", ms["plan.ir"])]), 'duplicate member "plan.ir"')
    rejects(rezip([(n, ms[n]) for n in reversed(NAMES)]),
            "members in order constants.safetensors, plan.ir, manifest.json; "
            "expected manifest.json, plan.ir, constants.safetensors")


def test_wrong_sha256():
    bad = "0" * 64
    data = repack(lambda m: m["members"]["plan.ir"].update(sha256=bad))
    real = hashlib.sha256(members(plan_bytes())["plan.ir"]).hexdigest()
    rejects(data, f"member plan.ir: sha256 mismatch (manifest {bad}, content {real})")


def test_wrong_size():
    ms = members(plan_bytes())
    size = len(ms["constants.safetensors"])
    data = repack(lambda m: m["members"]["constants.safetensors"].update(size=size + 1))
    rejects(data, f"member constants.safetensors: size {size} but manifest says {size + 1}")


def test_manifest_missing_field():
    rejects(repack(lambda m: m.pop("parties")), 'manifest.json: missing field "parties"')


def test_manifest_bad_fields():
    rejects(repack(lambda m: m.update(parties="alice,bob")),
            'manifest.json: field "parties": expected list, got str')
    rejects(repack(lambda m: m.update(parties=["alice", 1])),
            'manifest.json: field "parties": expected a list of names')
    rejects(repack(lambda m: m.update(extra=1)), 'manifest.json: unexpected field "extra"')
    rejects(repack(lambda m: m.update(parties=["alice", "carol"])),
            "manifest.json: field \"parties\": ['alice', 'carol'] but plan.ir has ['alice', 'bob']")
    rejects(repack(lambda m: m.update(name="other")),
            'manifest.json: field "name": "other" but plan.ir is plan @tiny_cnn')
    rejects(repack(lambda m: m["captured"].update(nope="x")),
            'manifest.json: field "captured": "nope" is not a constant of the plan')
    rejects(repack(lambda m: m["meta"].update(bad=[1])),
            'manifest.json: field "meta": unknown setting "bad" (settings: frac_bits)')
    ms = members(plan_bytes())
    rejects(rezip([("manifest.json", b"[1, 2]")] + [(n, ms[n]) for n in NAMES[1:]]),
            "manifest.json: expected a JSON object, got list")
    rejects(rezip([("manifest.json", b'{"format": NaN}')] + [(n, ms[n]) for n in NAMES[1:]]),
            "manifest.json: NaN is not JSON")


def test_unknown_format_version():
    rejects(repack(lambda m: m.update(format_version=2)),
            "manifest.json: unsupported format_version 2 (this planc reads 1)")
    rejects(repack(lambda m: m.update(format="zip")),
            'manifest.json: field "format": expected "planc-plan", got "zip"')


def test_const_tensor_with_wrong_dtype():
    from safetensors.torch import save

    p = make_plan()
    tensors = dict(p.constants, scale=p.constants["scale"].double())
    rejects(repack(constants_safetensors=save(tensors)),
            'constants.safetensors: tensor "scale" is f64[4,1,1] but const %scale declares public f32[4,1,1]')
    # the writer refuses to produce such a file in the first place
    p.constants["scale"] = p.constants["scale"].double()
    with pytest.raises(PlanFormatError, match="is f64"):
        p.to_bytes()


def test_missing_and_unreferenced_tensors():
    from safetensors.torch import save

    p = make_plan()
    rejects(repack(constants_safetensors=save({"bias": p.constants["bias"]})),
            'constants.safetensors: no tensor "scale" for const %scale (public f32[4,1,1])')
    rejects(repack(constants_safetensors=save(dict(p.constants, secret_data=torch.zeros(3)))),
            'constants.safetensors: tensor "secret_data" is not named by any const')


def test_pickled_torch_file_instead_of_safetensors(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append("torch.load"))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: calls.append("pickle.loads"))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: calls.append("pickle.load"))
    buf = io.BytesIO()
    torch.save(make_plan().constants, buf)
    msg = rejects(repack(constants_safetensors=buf.getvalue()))
    assert msg.startswith("constants.safetensors: not a safetensors file: ")
    # and the pickle under any other name is not even opened
    ms = members(plan_bytes())
    rejects(rezip([(n, ms[n]) for n in NAMES[:2]] + [("constants.pt", buf.getvalue())]),
            'unexpected member "constants.pt"')
    assert calls == []


def test_plan_ir_syntax_error():
    lines = members(plan_bytes())["plan.ir"].decode().splitlines(keepends=True)
    lines[2] = "  %w = load from from ) : nonsense\n"
    msg = rejects(repack(plan_ir="".join(lines).encode()))
    assert msg.startswith("plan.ir: ")
    assert re.match(r"plan\.ir: line 3:\d+: ", msg), msg


def test_plan_ir_verify_error():
    text = members(plan_bytes())["plan.ir"].decode()
    text = text.replace("reveal %acc to bob", "reveal %nothing to bob")
    msg = rejects(repack(plan_ir=text.encode()))
    assert msg.startswith("plan.ir: ") and "%nothing" in msg, msg


def test_plan_ir_not_utf8():
    assert rejects(repack(plan_ir=b"\xff\xfe")).startswith("plan.ir: not UTF-8")


def test_unchecksummed_fields_are_rejected():
    ms = members(plan_bytes())
    items = [(n, ms[n]) for n in NAMES]
    rejects(rezip(items, date=(2024, 5, 1, 12, 0, 0)),
            "non-canonical encoding: the bytes differ from how planc writes this plan")
    # same content, JSON spelled differently
    m = json.loads(ms["manifest.json"])
    loose = json.dumps(m, indent=1, sort_keys=True).encode()
    rejects(rezip([("manifest.json", loose)] + items[1:]),
            "non-canonical encoding: the bytes differ from how planc writes this plan")


def test_compressed_member_is_rejected():
    ms = members(plan_bytes())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for n in NAMES:
            zf.writestr(zipfile.ZipInfo(n, date_time=(1980, 1, 1, 0, 0, 0)), ms[n], zipfile.ZIP_DEFLATED)
    rejects(buf.getvalue(), "member manifest.json: compressed; plan members are stored")


def test_size_limit(tmp_path):
    data = plan_bytes()
    with pytest.raises(PlanFormatError, match="larger than the limit of 100 bytes"):
        Plan.from_bytes(data, max_size=100)
    (tmp_path / "p.plan").write_bytes(data)
    with pytest.raises(PlanFormatError, match="larger than the limit"):
        Plan.read(tmp_path / "p.plan", max_size=len(data) - 1)
    assert Plan.read(tmp_path / "p.plan", max_size=len(data)) == make_plan()


def test_not_bytes():
    with pytest.raises(PlanFormatError, match="expected the bytes of a plan file, got str"):
        Plan.from_bytes("PK")


def test_writer_refuses_inconsistent_plans():
    p = make_plan()
    p.captured["nope"] = "somewhere"
    with pytest.raises(PlanFormatError, match='"nope" is not a constant'):
        p.to_bytes()
    p = make_plan()
    p.meta["x"] = float("nan")
    with pytest.raises(PlanFormatError, match='unknown setting "x"'):
        p.to_bytes()
    p = make_plan()
    p.meta["frac_bits"] = 40
    with pytest.raises(PlanFormatError, match=r'field "meta.frac_bits": 40 is outside 8..30'):
        p.to_bytes()
    p = make_plan()
    p.constants["extra"] = torch.zeros(2)
    with pytest.raises(PlanFormatError, match='"extra" is not named by any const'):
        p.to_bytes()
