"""What planc.Cluster returns and raises, and the encodings between it and the workers:
`ClusterError`, catalogue `Entry`s, `ClusterResult`; plan and model bytes out, public
outputs and a client's reveals in, and the root failure of a failed run (cluster.py)."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import torch

from planc.ir.plan import Plan as IRPlan

from .worker.wire import read_message


class ClusterError(RuntimeError):
    """A worker refused, failed or could not be reached: `worker`, `rule`, `where`."""

    def __init__(self, worker: str | None, message: str, *, rule: str | None = None, where: str | None = None,
                 code: int | None = None):
        self.worker, self.rule, self.where, self.code, self.problem = worker, rule, where, code, message
        head = f"worker {worker}" if worker else "cluster"
        if rule:
            head += f" refused ({rule})" if code and 400 <= code < 500 else f" ({rule})"
        super().__init__(f"{head}: {message}" + (f" [at {where}]" if where and where not in message else ""))


@dataclass(frozen=True)
class Entry:
    """One catalogue entry of one worker (never its values)."""

    worker: str
    tag: str
    dtype: str
    shape: tuple
    description: str = ""
    meta: dict = field(default_factory=dict, compare=False)
    kind: str = "tensor"  # or "model": an ONNX model the worker links (its inputs and outputs, never its nodes)
    inputs: tuple = ()  # a model's inputs: ({"name", "dtype", "shape"}, ...)
    outputs: tuple = ()

    def shell(self):
        """``planc.load`` of this entry, with its shape and dtype: for tracing."""
        from .shells import load

        if self.kind == "model":
            raise ClusterError(self.worker, f"{self.tag!r} is a model: call it with planc.load_model({self.tag!r}, "
                                            f"owner={self.worker!r}, output=..., input=...) (its inputs: "
                                            f"{', '.join(str(i) for i in self.inputs)})")
        return load(self.tag, owner=self.worker, shape=self.shape, dtype=self.dtype)


@dataclass
class ClusterResult:
    """A run on the cluster: the client's outputs (None where it may not see one), every
    party's counters and timings, and what each worker kept."""

    run_id: str
    plan_hash: str
    outputs: list
    stats: dict
    parties: dict  # plan party -> worker (and "dealer")
    kept: dict  # worker -> its run's outputs as it reports them (public / own / held / none)
    wall_s: float
    accept_s: float

    def summary(self, file=None, *, echo: bool = True) -> str:
        from planc.runtime.report import render, stats_table, wall_line

        text = render(stats_table(self.stats), wall_line(self.wall_s),
                      f"run {self.run_id} · plan {self.plan_hash[:16]} · all accepted in "
                      f"{self.accept_s * 1000:.0f} ms\n")
        if echo:
            print(text, end="", file=file if file is not None else sys.stdout)
        return text

    def __repr__(self) -> str:
        return (f"<ClusterResult run {self.run_id} plan {self.plan_hash[:12]}; parties "
                f"{', '.join(f'{p}@{w}' for p, w in self.parties.items())}; wall {self.wall_s * 1000:.0f} ms>")


def run_error(who, failed, final) -> ClusterError:
    """The run's root failure: a party's own error rather than a peer's echo of it."""
    def echo(d):  # a peer's failure seen from here, or a run cancelled after one: not the root
        err = d.get("error") or {}
        return err.get("type") in ("PeerFailed", "PeerTimeout", "Cancelled") or d["state"] == "cancelled"
    failed.sort(key=lambda pd: echo(pd[1]))
    p, d = failed[0]
    err = d.get("error") or {}
    return ClusterError(who[p], err.get("message") or f"run ended {d['state']}", rule=err.get("rule") or d["state"],
                        where=err.get("where"))


def public_output(o: dict) -> torch.Tensor:
    """A public output as a run reports it: nested lists, its dtype and shape."""
    from planc.runtime.dtypes import TORCH_DTYPE

    return torch.tensor(o["value"], dtype=TORCH_DTYPE[o["dtype"]]).reshape(o["shape"])


def client_reveals(raw: bytes) -> dict:
    """A worker's reveals body -> {value name: entry} as ClientRun.finish takes it."""
    header, ts = read_message(raw)
    out = {}
    for name, h in header.items():
        if h.get("kind") == "plain":
            out[name] = {"plain": ts[name], "dtype": h.get("dtype")}
        else:
            out[name] = {"share": ts[name], "extra": int(h.get("extra", 0)), "dtype": h.get("dtype")}
    return out


def onnx_bytes(model, sample, opset) -> bytes:
    """An ONNX file's bytes from a path, bytes, or a torch module exported with `sample`."""
    import io
    import os
    import warnings

    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    if isinstance(model, (str, os.PathLike)):
        return Path(model).read_bytes()
    if not isinstance(model, torch.nn.Module):
        raise ClusterError(None, f"upload_model: expected an .onnx path, its bytes or a torch module, got "
                                 f"{type(model).__name__}")
    if sample is None:
        raise ClusterError(None, "upload_model: a torch module needs sample= (an example input) to be exported")
    samples = sample if isinstance(sample, tuple) else (sample,)
    names = [f"input{i}" for i in range(len(samples))]
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes about its own internals
        torch.onnx.export(model.eval(), samples, buf, dynamo=False, opset_version=opset, input_names=names,
                          output_names=["output"], dynamic_axes={**{n: {0: "batch"} for n in names},
                                                                 "output": {0: "batch"}})
    return buf.getvalue()


def plan_bytes(plan) -> tuple[bytes, IRPlan]:
    if isinstance(plan, (bytes, bytearray)):
        raw = bytes(plan)
    elif isinstance(plan, (str, Path)):
        raw = Path(plan).read_bytes()
    elif isinstance(plan, IRPlan):
        raw = plan.to_bytes()
    else:
        raise ClusterError(None, f"run expects a Plan, plan-file bytes or a path, got {type(plan).__name__}")
    return raw, IRPlan.from_bytes(raw)


def https_url(u: str) -> str:
    if not isinstance(u, str) or not u:
        raise ClusterError(None, f"expected a URL such as https://127.0.0.1:4000, got {u!r}")
    if u.startswith("http://"):
        raise ClusterError(None, f"{u}: daemons speak HTTPS only")
    return u if u.startswith("https://") else f"https://{u}"


def url_host(url: str) -> str:
    return httpx.URL(url).host


def progress_printer(p):
    if callable(p):
        return p
    if p:
        return lambda msg: print(msg, file=sys.stderr, flush=True)
    return lambda msg: None
