"""A service request, checked: its fields, and each batch size's plan as a served model's.

Every serving worker and the dealer check a service's plans under their *own* policy,
exactly as a run submission is (submit.check), then as a served model's: the owner's
loads are exactly the shares held here, one query load of (B, *input_shape) owned by the
``client`` party, one output revealed to it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .wire import Refusal, b64


@dataclass(frozen=True)
class ServedPlan:
    """One batch size's plan, checked: its graph, the value name of each weight (-> tag)
    and of the query input."""

    plan: object
    sha256: str
    weights: dict
    query: str

    @property
    def graph(self):
        return self.plan.graph

    @property
    def constants(self):
        return self.plan.constants

    @property
    def frac(self) -> int:
        from planc.ir.plan import settings

        return settings(self.plan.meta)["frac_bits"]


def parse_spec(body: dict) -> dict:
    """A service request's fields, typed (Refusal 400 naming the first bad one)."""
    import re

    fields = ("service_id", "handle", "model", "owner", "workers", "dealer", "plans", "input_shape", "max_requests",
              "window_ms", "timeout")
    extra = sorted(set(body) - set(fields))
    if extra:
        raise Refusal(400, "body", f"field {extra[0]!r}: unknown; a service takes {', '.join(fields)}")
    sid = body.get("service_id")
    if not isinstance(sid, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", sid):
        raise Refusal(400, "service_id", "field 'service_id': 1 to 64 of A-Z a-z 0-9 _ . -")
    for k in ("handle", "model", "owner", "dealer"):
        if not isinstance(body.get(k), str) or not body[k]:
            raise Refusal(400, "body", f"field {k!r}: expected a string")
    ws = body.get("workers")
    if not isinstance(ws, list) or len(ws) < 2 or not all(isinstance(w, str) for w in ws):
        raise Refusal(400, "body", "field 'workers': expected the serving workers' names, in rank order")
    shape = body.get("input_shape")
    if not isinstance(shape, list) or not shape or not all(type(s) is int and s > 0 for s in shape):
        raise Refusal(400, "body", "field 'input_shape': expected one query's shape, e.g. [1, 28, 28]")
    plans = body.get("plans")
    if not isinstance(plans, dict) or not plans:
        raise Refusal(400, "body", "field 'plans': expected {batch size: base64 plan file}")
    try:
        raw = {int(k): b64(f"plans.{k}", v) for k, v in plans.items()}
    except ValueError:
        raise Refusal(400, "body", "field 'plans': keys are batch sizes") from None
    mr, win, t = body.get("max_requests"), body.get("window_ms", 5), body.get("timeout", 60)
    if mr is not None and (type(mr) is not int or mr < 1):
        raise Refusal(400, "body", "field 'max_requests': a whole number >= 1, or null")
    if type(win) not in (int, float) or not 0 <= win <= 1000:
        raise Refusal(400, "body", "field 'window_ms': milliseconds from 0 to 1000")
    if type(t) not in (int, float) or not 1 <= t <= 3600:
        raise Refusal(400, "body", "field 'timeout': seconds from 1 to 3600")
    return {"service_id": sid, "handle": body["handle"], "model": body["model"], "owner": body["owner"],
            "workers": ws, "dealer": body["dealer"], "plans": raw, "sizes": sorted(raw), "input_shape": shape,
            "max_requests": mr, "window_ms": float(win), "timeout": float(t)}


def check_plan(raw: bytes, b: int, spec: dict, me: str, rank: int, d, st) -> ServedPlan:
    """A batch size's plan: every check a run submission meets (submit.check: plan file,
    party mapping, this daemon's policy and limits), then its shape as a served model's:
    the owner's loads are exactly shares held here, one query load of (b, *input_shape)
    owned by the ``client`` party, one output revealed to it."""
    from . import submit

    workers, owner = spec["workers"], spec["owner"]
    sub = {"run_id": f"{spec['service_id']}.b{b}", "plan": _b64text(raw), "timeout": spec["timeout"],
           "party": "dealer" if rank == len(workers) else workers[rank], "parties": {w: w for w in workers},
           "clients": {owner: owner, "client": "client"}, "dealer": spec["dealer"]}
    s = submit.check(sub, me=me, role=d.cfg.role, policy=d.policy, catalogue=d.catalogue, rid=sub["run_id"])
    g = s.plan.graph
    k_owner, k_client = len(workers), len(workers) + 1
    weights, query = {}, None
    for node in g.loads():
        tag, t, own = node.attr("tag"), node.result.type, node.attr("owner")
        if own == k_owner:
            if st is not None and (tag not in st.shares or list(st.shares[tag].shape) != list(t.shape)):
                have = list(st.shares[tag].shape) if tag in st.shares else "no share"
                raise Refusal(409, "shares", f"plan for batch {b}: {node.where()}: weight {tag!r} of shape "
                                             f"{list(t.shape)}; {me} holds {have}")
            weights[node.result.name] = tag
        elif own == k_client and query is None:
            want = [b, *spec["input_shape"]]
            if list(t.shape) != want or t.dtype != "f32":
                raise Refusal(400, "plan", f"plan for batch {b}: the query is {t.dtype}{list(t.shape)}, expected "
                                           f"f32{want}")
            query = node.result.name
        else:
            raise Refusal(400, "plan", f"plan for batch {b}: {node.where()}: a served plan loads only the owner's "
                                       f"weights and one query")
    outs = g.outputs
    if query is None or len(outs) != 1 or not (outs[0].type.vis.is_private and outs[0].type.vis.owner == k_client):
        raise Refusal(400, "plan", f"plan for batch {b}: expected one query load and one output revealed to "
                                   f"'client'")
    return ServedPlan(s.plan, hashlib.sha256(raw).hexdigest(), weights, query)


def _b64text(raw: bytes) -> str:
    import base64

    return base64.b64encode(raw).decode("ascii")
