"""Hostile plans, generated: what a stranger could send a worker, each made to cost the
reader as much as the old code allowed (quadratic scopes, deep nests, huge numbers,
shapes and names, tampered settings), and the means to pack any IR text and manifest
into a plan file whose checksums hold, so that the attack reaches the parser and the
verifier instead of stopping at a sha256 mismatch.

``CORPUS`` maps a name to a function giving the bytes of one such file; tests/test_hostile.py
checks that each is refused promptly with a PlanFormatError. ``python tests/hostile.py``
prints, for every attack, what reading it gives now and how long it takes.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile

HEAD = "plan @p(parties: alice=0, bob=1) {\n"


# ---------------------------------------------------------------- packing


def empty_constants() -> bytes:
    from safetensors.torch import save

    return save({})


def manifest(ir: bytes, consts: bytes, name="p", parties=("alice", "bob"), **changes) -> dict:
    m = {
        "format": "planc-plan",
        "format_version": 1,
        "planc_version": "0.1.0",
        "name": name,
        "parties": list(parties),
        "members": {"plan.ir": _digest(ir), "constants.safetensors": _digest(consts)},
        "captured": {},
        "meta": {},
    }
    m.update(changes)
    return m


def _digest(data: bytes) -> dict:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def manifest_bytes(m: dict) -> bytes:
    text = json.dumps(m, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate: only an escape can say it
        return json.dumps(m, sort_keys=True, separators=(",", ":")).encode()


def rezip(items) -> bytes:
    """A zip written by the format's rules (stored, fixed dates and attributes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", allowZip64=True) as zf:
        for name, data in items:
            zi = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            zi.external_attr = 0o100644 << 16
            zi.create_system = 3
            zf.writestr(zi, data)
    return buf.getvalue()


def pack(ir_text: str | bytes, consts: bytes | None = None, *, manifest_raw: bytes | None = None, **changes) -> bytes:
    """A plan file holding `ir_text` with digests that match, whatever the text says."""
    ir = ir_text.encode("utf-8", "surrogatepass") if isinstance(ir_text, str) else ir_text
    consts = empty_constants() if consts is None else consts
    raw = manifest_raw if manifest_raw is not None else manifest_bytes(manifest(ir, consts, **changes))
    return rezip([("manifest.json", raw), ("plan.ir", ir), ("constants.safetensors", consts)])


def members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def repack(data: bytes, *, ir: bytes | None = None, change=None) -> bytes:
    """A real plan's members with the IR replaced and/or the manifest changed, digests
    recomputed: the mutation reaches the parser, the verifier or the settings check."""
    ms = members(data)
    if ir is not None:
        ms["plan.ir"] = ir
    m = json.loads(ms["manifest.json"])
    for name in ("plan.ir", "constants.safetensors"):
        m["members"][name] = _digest(ms[name])
    if change is not None:
        change(m)
    ms["manifest.json"] = manifest_bytes(m)
    return rezip([(n, ms[n]) for n in ("manifest.json", "plan.ir", "constants.safetensors")])


# ---------------------------------------------------------------- IR texts


def straight_graph(n: int):
    """%x, then n relus, each on the one before: a long straight-line plan."""
    from planc.ir.builder import Builder
    from planc.ir.graph import Loc
    from planc.ir.types import TensorType, private

    b = Builder("p", ["alice", "bob"])
    x = b.emit("load", attrs={"tag": "t", "owner": 0}, types=[TensorType("f32", (4,), private(0))], name="x")
    for i in range(n):
        x = b.emit("relu", [x], name="v", loc=Loc("model.py", i))
    return b.finish([x])


def straight_text(n: int) -> str:
    """The text of a plan like straight_graph(n) (values %v0, %v1, ...), laid out as printed."""
    out = [HEAD, '  %x = load "t" from alice'.ljust(44) + " : private<0> f32[4]\n"]
    prev = "x"
    for i in range(n):
        out.append(f"  %v{i} = relu %{prev}".ljust(44) + f' : private<0> f32[4]  loc("model.py":{i})\n')
        prev = f"v{i}"
    out.append(f"  return %{prev}\n}}\n")
    return "".join(out)


def loops_text(n: int, consts: int = 0) -> str:
    """`consts` constants, then n one-trip loops, each carrying the result of the one
    before: the scope every loop body sees grows with the plan, which cost the old reader
    a copy of it per loop (quadratic)."""
    # laid out as the printer lays it out: a plan file must be (tests check canonical() of it)
    out = [HEAD, "  %c = const {value=1.0}".ljust(44) + " : public f32[]\n"]
    out += [f"  %k{i} = const {{value=1.0}}".ljust(44) + " : public f32[]\n" for i in range(consts)]
    prev = "c"
    for i in range(n):
        out.append(f"  %l{i} = loop 1 %{prev} {{\n    ^(%i{i}: public i64[], %a{i}: public f32[]):\n"
                   f"      yield %a{i}\n  }} : public f32[]\n")
        prev = f"l{i}"
    out.append(f"  return %{prev}\n}}\n")
    return "".join(out)


def nested_text(depth: int) -> str:
    """Loops nested `depth` deep, each body empty but for the next loop."""
    out = [HEAD]
    out += [f"loop 1 {{ ^(%i{d}: public i64[]):\n" for d in range(depth)]
    out += ["yield\n} :\n"] * depth
    out.append("return\n}\n")
    return "".join(out)


def one_node(line: str, ret: str = "%y") -> str:
    """A plan of one load of alice's and `line`."""
    return HEAD + '  %x = load "t" from alice : private<0> f32[4]\n' + line + f"\n  return {ret}\n}}\n"


# ---------------------------------------------------------------- the corpus


def canonical(text: str) -> str:
    """`text` as the printer lays it out (a plan file must be in that layout)."""
    from planc.ir.parser import parse_graph
    from planc.ir.printer import print_graph

    return print_graph(parse_graph(text))


def _loops(error: bool = False) -> bytes:
    text = loops_text(8000, consts=8000)
    return pack(text.replace("return %l7999", "return %nothing") if error else text)


def _straight() -> bytes:
    # text of a straight-line plan, but for a duplicate name at its very end: read in full
    return pack(straight_text(20000).replace("return %v19999", "return %nothing"))


CORPUS = {
    "quadratic scopes: 8,000 loops over 8,000 constants (a valid plan)": _loops,
    "quadratic scopes, error at the end": lambda: _loops(error=True),
    "long straight-line plan, error at its end": _straight,
    "loops nested 200 deep": lambda: pack(nested_text(200)),
    "loops nested 100,000 deep": lambda: pack(nested_text(100_000)),
    "5,000-digit integer (loop trips)": lambda: pack(HEAD + "  loop " + "9" * 5000 + " { ^(%i: public i64[]):\n"
                                                     "    yield\n  } :\n  return\n}\n"),
    "5,000-digit integer (dimension)": lambda: pack(one_node("", "%x").replace("f32[4]", "f32[" + "9" * 5000 + "]")),
    "5,000-digit integer (attribute)": lambda: pack(one_node("  %y = unsqueeze %x {dim=" + "9" * 5000
                                                            + "} : private<0> f32[4,1]")),
    "5,000-digit integer (location line)": lambda: pack(one_node("", "%x").replace(
        "f32[4]\n", 'f32[4]  loc("a.py":' + "9" * 5000 + ")\n", 1)),
    "loop of 2^62 trips": lambda: pack(HEAD + f"  loop {2**62} {{ ^(%i: public i64[]):\n    yield\n  }} :\n"
                                             "  return\n}\n"),
    "nested loops of 2^20 x 2^20 trips": lambda: pack(
        HEAD + f"  loop {2**20} {{ ^(%i: public i64[]):\n    loop {2**20} {{ ^(%j: public i64[]):\n"
               "      yield\n    } :\n    yield\n  } :\n  return\n}\n"),
    "tensor of 2^40 elements": lambda: pack(one_node("", "%x").replace("f32[4]", "f32[1048576,1048576]")),
    "dimension of 2^40": lambda: pack(one_node("", "%x").replace("f32[4]", f"f32[{2**40}]")),
    "tensor of rank 100,000": lambda: pack(one_node("", "%x").replace("f32[4]", "f32[" + ",".join(["1"] * 100_000)
                                                                      + "]")),
    "reshape to a shape of 100,000 entries": lambda: pack(one_node(
        "  %y = reshape %x {shape=[" + ", ".join(["1"] * 100_000) + "]} : private<0> f32[4]")),
    "attribute lists nested 100,000 deep": lambda: pack(one_node(
        "  %y = reshape %x {shape=" + "[" * 100_000 + "]" * 100_000 + "} : private<0> f32[4]")),
    "1 MB value name (a valid plan)": lambda: pack(canonical(
        one_node("", "%" + "x" * (1 << 20)).replace("%x =", "%" + "x" * (1 << 20) + " ="))),
    "1 MB undefined name": lambda: pack(one_node("  %y = relu %" + "z" * (1 << 20) + " : private<0> f32[4]")),
    "1 MB op name": lambda: pack(one_node("  %y = " + "f" * (1 << 20) + " %x : private<0> f32[4]")),
    "1 MB string": lambda: pack(one_node("", "%x").replace('"t"', '"' + "t" * (1 << 20) + "\\q\"")),
    "NaN eps, -inf pad value (a valid plan)": lambda: pack(canonical(
        HEAD + '  %x = load "t" from alice : private<0> f32[2,3]\n  %m = load "m" from alice : private<0> f32[3]\n'
        "  %y = pad %x {pads=[1, 1], value=-inf} : private<0> f32[2,5]\n"
        "  %z = batch_norm %x, %m, %m, %m, %m {eps=nan} : private<0> f32[2,3]\n  return %y, %z\n}\n")),
    "frac_bits = 40": lambda: pack(one_node("", "%x"), meta={"frac_bits": 40}),
    'frac_bits = "abc"': lambda: pack(one_node("", "%x"), meta={"frac_bits": "abc"}),
    "frac_bits = true": lambda: pack(one_node("", "%x"), meta={"frac_bits": True}),
    "unknown setting": lambda: pack(one_node("", "%x"), meta={"truncation": "none"}),
    "5,000-digit integer in the manifest": lambda: pack(one_node("", "%x"), manifest_raw=b'{"format":"planc-plan",'
                                                        b'"format_version":1' + b"0" * 5000 + b"}"),
    "1e999 in the manifest": lambda: pack(one_node("", "%x"), manifest_raw=b'{"format":"planc-plan","x":1e999}'),
    "manifest nested 100,000 deep": lambda: pack(one_node("", "%x"), manifest_raw=b"[" * 100_000 + b"]" * 100_000),
    "lone surrogate in a party name": lambda: pack(one_node("", "%x"), parties=["alice", "b\ud800"]),
    "1,000 parties": lambda: pack("plan @p(parties: " + ", ".join(f"p{i}={i}" for i in range(1000))
                                  + ") {\n  return\n}\n", parties=[f"p{i}" for i in range(1000)]),
    "manifest declares a 1 GB member": lambda: _declared_size(1 << 30),
}


def _declared_size(size: int) -> bytes:
    data = pack(one_node("", "%x"))
    ms = members(data)
    m = json.loads(ms["manifest.json"])
    m["members"]["constants.safetensors"]["size"] = size
    return rezip([("manifest.json", manifest_bytes(m)), ("plan.ir", ms["plan.ir"]),
                  ("constants.safetensors", ms["constants.safetensors"])])


if __name__ == "__main__":  # the table: attack -> outcome now, and time
    import sys
    import time
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from planc.ir.plan import Plan, PlanFormatError

    for name, make in CORPUS.items():
        data = make()
        t = time.perf_counter()
        try:
            Plan.from_bytes(data)
            outcome = "read (accepted)"
        except PlanFormatError as e:
            outcome = "PlanFormatError: " + str(e).splitlines()[0][:110]
        except Exception as e:  # noqa: BLE001
            outcome = f"LEAK {type(e).__name__}: {str(e)[:100]}"
        print(f"{name:45s} {len(data) / 1e6:6.2f} MB {time.perf_counter() - t:7.3f} s  {outcome}")
