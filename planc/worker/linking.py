"""Models linked at the workers: a plan's `load_model` call replaced by the model's body
where the model is, and sent to the other parties over the run's own mesh.

A plan may call a model the orchestrator never saw (``planc.load_model("cnn",
owner="alice", ...)``: a `call` node typed by its declaration). At submission the
owner's worker finds the model in its catalogue (an ``.onnx`` entry), converts it
(planc/onnx/), checks its inputs and outputs against the call's declared types, links
it — the call replaced by the body, the weights loads of ``<tag>/<initializer>`` that
stay `private<owner>` — and admits the *linked* plan under its own policy: a model
whose architecture breaks it is refused there, naming the ONNX node. The other parties
and the dealer check what they can of the submitted plan (its structure against their
policies) and wait for the architecture.

At start, once the mesh is up, the owner sends the linked plan file to every other rank
(the orchestrator never receives it). Each checks, before anything else runs:

- it is a plan file (every plan-file check), of the same parties and outputs;
- it is a linking of the plan it accepted: every node of that plan but the calls is
  there as it was, and what was added is the model's body only — no reveal, no input,
  no load but the owner's weights under the model's tags;
- then the run admits it under the party's own policy and limits (runtime/admission.py),
  which names the ONNX node that breaks a rule.

Semi-honest parties, as everywhere in planc: the checks keep an owner's model from
asking for more than the plan did; they do not make a malicious owner's arithmetic honest.
"""
from __future__ import annotations

import collections
import hashlib
import threading

from .wire import Refusal, where_of

MAX_LINKED = 64 << 20  # bytes of a linked plan file a party accepts from the owner


def calls(graph) -> list:
    return [n for n in graph.walk() if n.op == "call"]


def model_owner(graph) -> int | None:
    """The one party whose models a plan calls (None: no call); a Refusal for several."""
    owners = sorted({n.attr("owner") for n in calls(graph)})
    if len(owners) > 1:
        names = ", ".join(graph.parties[k] for k in owners)
        raise Refusal(400, "model", f"the plan calls models of {names}: a plan may link the models of one party only")
    for n in calls(graph):
        if n not in graph.nodes:
            raise Refusal(400, "model", f"{n.where()}: a model called inside a loop cannot be linked",
                          where_of(n))
    return owners[0] if owners else None


_LINKED: "collections.OrderedDict" = collections.OrderedDict()  # (plan object, models) -> linked plan
_LINKED_SIZE = 16
_linked_lock = threading.Lock()


def link_here(plan, rank: int, catalogue):
    """The owner's side at submission: the linked plan (planc.plans.Plan), or a Refusal
    naming the call, the model and what does not fit. The same plan (submit.py reads a
    repeated plan file once) with the same models gives the same linked plan object, so
    its admission is not paid again."""
    key = (id(plan), tuple((n.attr("tag"), id(catalogue.model(n.attr("tag")) if catalogue else None))
                           for n in calls(plan.graph)))
    with _linked_lock:
        hit = _LINKED.get(key)
        if hit is not None and hit[0] is plan:
            _LINKED.move_to_end(key)
            return hit[1]
    linked = _link(plan, rank, catalogue)
    with _linked_lock:
        _LINKED[key] = (plan, linked)
        while len(_LINKED) > _LINKED_SIZE:
            _LINKED.popitem(last=False)
    return linked


def _link(plan, rank: int, catalogue):
    from planc.onnx import OnnxImportError, OnnxModel, link
    from planc.plans import Plan

    models = {}
    for n in calls(plan.graph):
        tag = n.attr("tag")
        m = catalogue.model(tag) if catalogue is not None else None
        if m is None:
            raise Refusal(409, "catalogue", f"{n.where()}: this worker has no model under tag {tag!r}", where_of(n))
        if len(m.inputs) != len(n.operands):
            raise Refusal(409, "model", f"{n.where()}: model {tag!r} takes {len(m.inputs)} inputs "
                                        f"({', '.join(x[0] for x in m.inputs)}), the plan gives {len(n.operands)}",
                          where_of(n))
        shapes = {name: tuple(v.type.shape) for (name, _, _), v in zip(m.inputs, n.operands)}
        try:
            models[tag] = OnnxModel.read(m.model, input_shapes=shapes, name=m.file.name)
        except OnnxImportError as e:
            raise Refusal(409, "model", f"{n.where()}: model {tag!r} for these inputs: {e}", where_of(n)) from None
    try:
        linked = link(Plan(plan.graph, dict(plan.constants), {}, dict(plan.meta)), models)
    except OnnxImportError as e:
        raise Refusal(409, "model", f"model does not fit the plan: {e}") from None
    return linked


def _key(n) -> tuple:
    return (n.op, n.attrs, n.loc, tuple(r.type for r in n.results))


def check_linked(submitted, linked, owner: int):
    """That `linked` (a Plan) is the submitted graph with its calls linked, and the body
    added only (see the module docstring); a Refusal otherwise."""
    g, h = submitted, linked.graph
    if tuple(h.parties) != tuple(g.parties):
        raise Refusal(403, "link", f"the linked plan's parties {', '.join(h.parties)} are not the plan's")
    if [v.type for v in h.outputs] != [v.type for v in g.outputs]:
        raise Refusal(403, "link", "the linked plan's outputs are not those of the accepted plan")
    tags = {n.attr("tag") for n in calls(g)}
    want = collections.Counter(_key(n) for n in g.walk() if n.op != "call")
    have = collections.Counter(_key(n) for n in h.walk())
    missing = want - have
    if missing:
        op = next(iter(missing))[0]
        raise Refusal(403, "link", f"the linked plan lacks or changed a {op} node of the accepted plan")
    for key in have - want:
        op, attrs, loc = key[0], dict(key[1]), key[2]
        where = f"{loc.file}:{loc.line}" if loc is not None else "?"
        if op in ("reveal", "input", "call"):
            raise Refusal(403, "link", f"{where}: the model's body has a {op} node; a model computes, it does not "
                                       f"reveal or take inputs")
        if op == "load" and (attrs.get("owner") != owner or not any(str(attrs.get("tag", "")).startswith(t + "/")
                                                                    for t in tags)):
            raise Refusal(403, "link", f"{where}: the model's body loads {attrs.get('tag')!r}, which is not one of "
                                       f"its own weights")


def exchange(sub, comm, linked_bytes: bytes | None, read_plan):
    """At start, over the mesh: the owner sends the linked plan, every other rank takes
    it, reads it with `read_plan` (submit.py's: every plan-file check) and checks it.
    Returns (linked IR Plan, its sha256)."""
    owner = sub.model_owner
    if sub.rank == owner:
        for r in range(len(comm.names)):
            if r != owner:
                comm.send_bytes(r, linked_bytes)
        raw = linked_bytes
        plan = sub.linked
    else:
        raw = comm.recv_bytes(owner, max_bytes=MAX_LINKED)
        digest = hashlib.sha256(raw).hexdigest()
        try:
            plan = read_plan(raw, digest)
        except Refusal as e:
            raise Refusal(403, "link", f"the linked plan from {sub.graph.parties[owner]}: {e.message}") from None
        check_linked(sub.graph, plan, owner)
        return plan, digest
    return plan, hashlib.sha256(raw).hexdigest()
