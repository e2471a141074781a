"""Checking a submitted run, before anything is bound or loaded.

The orchestrator is not trusted to have checked anything: a worker reads the plan's
bytes itself (``Plan.from_bytes``, every plan-file check), finds itself in the run's
mapping of plan parties to identities, admits the plan under its *own* policy and
limits (``runtime.admission.admit``, as the party it will play), and matches every
``load`` it owns against its catalogue — all before it binds a data port or reads a
byte of data. The checks run in a fixed order and the first one that fails is the
refusal, as a ``Refusal`` carrying the HTTP status and rule (wire.py):

  run id (400 malformed, 409 taken) -> body fields (400, naming the field) -> plan
  file (400, naming member and field) -> party mapping (400) -> policy and limits
  (403, the rule and the plan's source line) -> catalogue (409, naming the tag, the
  type wanted and the type held).

The caller's identity is checked before the body is read (app.py).
"""
from __future__ import annotations

import hashlib
import collections
import json
import math
import re
import threading
from dataclasses import dataclass, field

from . import linking
from .wire import Refusal, b64, tensors, where_of

RUN_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_TIMEOUT = 7 * 24 * 3600.0
FIELDS = ("run_id", "plan", "party", "parties", "clients", "dealer", "timeout", "inputs", "client_shares")
REQUIRED = ("run_id", "plan", "party", "parties", "dealer", "timeout")


@dataclass
class Submission:
    run_id: str
    plan: object  # planc.ir.plan.Plan
    plan_hash: str
    party: str  # plan party this worker plays, or "dealer"
    rank: int
    parties: dict  # computing plan party -> identity, in the plan's order
    clients: dict  # client plan party -> identity
    dealer: str
    timeout: float
    inputs: list = field(default_factory=list)
    client_shares: dict | None = None
    frac: int = 16
    model_owner: int | None = None  # the rank whose models the plan calls (linking.py)
    linked: object = None  # at that owner: the linked plan (planc.plans.Plan)
    linked_bytes: bytes | None = None

    @property
    def graph(self):
        return self.plan.graph

    @property
    def names(self) -> list:
        """The mesh's rank names: the computing parties, then the dealer."""
        return list(self.parties) + ["dealer"]

    def identity_of(self, rank: int) -> str:
        return self.dealer if rank == len(self.parties) else list(self.parties.values())[rank]


def run_id_of(d) -> str:
    rid = d.get("run_id") if isinstance(d, dict) else None
    if rid is None:
        raise Refusal(400, "body", "field 'run_id': missing")
    if not isinstance(rid, str) or not RUN_ID.fullmatch(rid):
        raise Refusal(400, "run_id", f"field 'run_id': expected 1 to 64 of A-Z a-z 0-9 _ . -, got "
                                     f"{json.dumps(rid)[:80]}")
    return rid


def parse_body(raw: bytes) -> dict:
    try:
        d = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise Refusal(400, "body", f"the body is not JSON: {str(e)[:200]}") from None
    if not isinstance(d, dict):
        raise Refusal(400, "body", f"the body must be a JSON object, got {type(d).__name__}")
    return d


def _mapping(d, name) -> dict:
    v = d.get(name)
    if v is None and name == "clients":
        return {}
    if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(x, str) and x for k, x in v.items()):
        raise Refusal(400, "body", f"field {name!r}: expected an object {{plan party: identity}}")
    return v


def fields(d: dict) -> dict:
    """The body's fields, typed; Refusal 400 naming the first bad one."""
    extra = sorted(set(d) - set(FIELDS))
    if extra:
        raise Refusal(400, "body", f"field {extra[0]!r}: unknown; a run takes {', '.join(FIELDS)}")
    for k in REQUIRED:
        if k not in d:
            raise Refusal(400, "body", f"field {k!r}: missing")
    out = {"plan": b64("plan", d["plan"])}
    if not isinstance(d["party"], str) or not d["party"]:
        raise Refusal(400, "body", "field 'party': expected the plan party this worker plays (or \"dealer\")")
    out["party"] = d["party"]
    out["parties"] = _mapping(d, "parties")
    out["clients"] = _mapping(d, "clients")
    if not isinstance(d["dealer"], str) or not d["dealer"]:
        raise Refusal(400, "body", "field 'dealer': expected the dealer's identity")
    out["dealer"] = d["dealer"]
    t = d["timeout"]
    if type(t) not in (int, float) or not math.isfinite(t) or not 0 < t <= MAX_TIMEOUT:
        raise Refusal(400, "body", f"field 'timeout': expected seconds > 0 and at most {MAX_TIMEOUT:g}, got "
                                   f"{json.dumps(t)[:40]}")
    out["timeout"] = float(t)
    inputs = tensors("inputs", d["inputs"]) if d.get("inputs") is not None else {}
    want = [str(i) for i in range(len(inputs))]
    if sorted(inputs, key=lambda k: (len(k), k)) != want:
        raise Refusal(400, "body", f"field 'inputs': expected tensors named 0..{len(inputs) - 1} (the plan's input "
                                   f"indices), got {', '.join(sorted(inputs))[:200]}")
    out["inputs"] = [inputs[k] for k in want]
    out["client_shares"] = tensors("client_shares", d["client_shares"]) if d.get("client_shares") is not None \
        else None
    return out


_PLANS: "collections.OrderedDict[str, object]" = collections.OrderedDict()  # sha256 of the bytes -> Plan
_PLANS_SIZE = 16
_plans_lock = threading.Lock()


def read_plan(raw: bytes, digest: str | None = None):
    """The plan in `raw`, with every plan-file check. A plan file read before (the same
    bytes: the same sha256) is the same immutable Plan object, so the checks and the
    admission's bounds (cached per plan object) are not paid again for a repeated plan."""
    from planc.ir.plan import Plan, PlanFormatError

    key = digest or hashlib.sha256(raw).hexdigest()  # the caller's, when it hashed the bytes already
    with _plans_lock:
        if key in _PLANS:
            _PLANS.move_to_end(key)
            return _PLANS[key]
    try:
        plan = Plan.from_bytes(raw)
    except PlanFormatError as e:
        at = ", ".join(f"{k} {v}" for k, v in (("member", e.member), ("field", e.field)) if v)
        raise Refusal(400, "plan", f"field 'plan': {e}" + (f" ({at})" if at else "")) from None
    with _plans_lock:
        _PLANS[key] = plan
        while len(_PLANS) > _PLANS_SIZE:
            _PLANS.popitem(last=False)
    return plan


def check(d: dict, *, me: str, role: str, policy, catalogue, rid: str) -> Submission:
    """Every check after the run id (see the module docstring); the Submission."""
    from planc.ir.plan import settings
    from planc.ir.policy import DEFAULT as DEFAULT_POLICY
    from planc.ir.policy import PolicyError
    from planc.runtime.admission import admit

    f = fields(d)
    plan_hash = hashlib.sha256(f["plan"]).hexdigest()
    plan = read_plan(f["plan"], plan_hash)
    g = plan.graph
    parties, clients = f["parties"], f["clients"]
    n = len(parties)
    if list(parties) + list(clients) != list(g.parties):
        raise Refusal(400, "party", f"fields 'parties' and 'clients': the plan's parties are "
                                    f"{', '.join(g.parties)} (computing parties first, clients last); the run maps "
                                    f"{', '.join(list(parties) + list(clients)) or 'none'}")
    if n == 0:
        raise Refusal(400, "party", "field 'parties': a run needs at least one computing party")
    party = f["party"]
    if party == "dealer":
        if role != "dealer":
            raise Refusal(400, "party", f"field 'party': {me} is a worker, not the dealer")
        if f["dealer"] != me:
            raise Refusal(400, "party", f"field 'dealer': the run names {f['dealer']!r} as the dealer, but this is "
                                        f"{me!r}")
        rank = n
    else:
        if role == "dealer":
            raise Refusal(400, "party", f"field 'party': {me} is the dealer; it plays \"dealer\", not {party!r}")
        if party not in parties:
            what = "a client (clients do not compute)" if party in clients else "not a party of the plan"
            raise Refusal(400, "party", f"field 'party': {party!r} is {what}; computing parties: "
                                        f"{', '.join(parties)}")
        if parties[party] != me:
            raise Refusal(400, "party", f"field 'parties': {party!r} is mapped to {parties[party]!r}, but this "
                                        f"worker is {me!r}")
        rank = list(parties).index(party)
    frac = settings(plan.meta)["frac_bits"]
    owner = linking.model_owner(g)  # a plan calling a model: linked by its owner (linking.py)
    linked = linked_bytes = None
    if owner is not None and rank == owner:
        linked = linking.link_here(plan, rank, catalogue)
        linked_bytes = linked.to_bytes()
    try:
        if owner is None or linked is not None:
            admit(linked or g, policy, party="dealer" if rank == n else rank, constants=(linked or plan).constants,
                  inputs=f["inputs"], frac=frac, clients=tuple(clients))
        else:  # the architecture comes at start; what can be checked of the plan now is
            (policy or DEFAULT_POLICY).check(g)
    except PolicyError as e:
        raise refusal_of(e) from None
    if role != "dealer":
        _catalogue(g, rank, catalogue)
    return Submission(rid, plan, plan_hash, party, rank, parties, clients, f["dealer"],
                      f["timeout"], f["inputs"], f["client_shares"], frac, owner, linked, linked_bytes)


def refusal_of(e) -> Refusal:
    """A PolicyError (or AdmissionError) as the worker's refusal: its first violation's
    rule, the plan's line (for a linked model: the ONNX node)."""
    from planc.runtime.admission import AdmissionError

    vs = getattr(e, "violations", []) or []
    rule = vs[0].rule if vs else ("limits" if isinstance(e, AdmissionError) else "policy")
    where = next((where_of(v.node) for v in vs if v.node is not None), None)
    return Refusal(403, rule, str(e), where)


def _catalogue(g, rank: int, catalogue):
    """Every load this party owns: in the catalogue, with the very dtype and shape."""
    for node in g.loads():
        if node.attr("owner") != rank:
            continue
        tag, t = node.attr("tag"), node.result.type
        want = f"{t.dtype}[{','.join(map(str, t.shape))}]"
        e = catalogue.get(tag) if catalogue is not None else None
        if e is None:
            import difflib

            close = difflib.get_close_matches(tag, catalogue.tags() if catalogue is not None else [], n=1)
            hint = f"; closest match {close[0]!r}" if close else ""
            raise Refusal(409, "catalogue", f"{node.where()}: this worker has no data under tag {tag!r} (the plan "
                                            f"wants {want}){hint}", where_of(node))
        if e.dtype != t.dtype or tuple(e.shape) != tuple(t.shape):
            raise Refusal(409, "catalogue", f"{node.where()}: tag {tag!r}: the plan wants {want}, this worker has "
                                            f"{e.type_text()}", where_of(node))
