"""Admission: one check, before anything runs, that a plan fits a policy — structure and resources.

``admit(plan, policy=None, party=...)`` is what every way of running a plan calls first
(``run_local``, ``session.run_party`` / ``run_dealer`` and through them the process
runner, and the workers): it checks the policy's structural rules (ops, attributes,
reveals, node and trip counts: ``Policy.check``), then computes the plan's resource
bounds from the plan alone (``runtime.bounds``: shape-only, loops multiplied, nothing
executed on data) and compares them with the policy's limits — peak memory at each
party and at the dealer, element operations per party, dealer material — and derives
the range each input must stay in for the plan's fixed-point arithmetic to be trusted
(``runtime.ranges``). With no policy the default applies (``planc.ir.policy.DEFAULT``:
8 GiB peak, 8 GiB dealer material, 10^12 operations, 2^-20 truncation failure).

A plan over a limit is refused with an ``AdmissionError`` (a ``PolicyError``) that names
the figure, the limit and the node that sets it:

    model.py:12: conv2d %conv2d: needs 10.1 GiB of memory at alice (upper estimate; 10.0
    GiB of it op workspace (im2col, product copies) and messages); policy 'default'
    allows 8 GiB; use a smaller batch or smaller tensors, or ask for a larger max_peak_bytes

The result, an ``Admission``, carries the bounds and the input limits; the session
hands the limits to the interpreter, which checks every load and public input against
them (``Interpreter.source``).
"""
from __future__ import annotations

from dataclasses import dataclass

from planc.ir.graph import Graph
from planc.ir.policy import DEFAULT, Policy, PolicyError, Violation

from . import bounds as _bounds
from . import fixed
from . import ranges


class AdmissionError(PolicyError):
    """A plan is refused before it runs: it breaks the policy's rules or needs more than
    its limits allow. `violations` lists every problem; `bounds` the figures, when known."""

    def __init__(self, violations, policy_name="policy", bounds=None):
        super().__init__(violations, policy_name)
        self.bounds = bounds


@dataclass
class Admission:
    """A plan admitted under `policy`: its bounds and the limits of its inputs."""

    policy: Policy
    bounds: _bounds.Bounds
    input_limits: dict  # value name of a load / input -> ranges.Limit


def size(n: int) -> str:
    """Bytes for the messages: ``8 GiB``, ``11.8 GiB``, ``512 MiB``, ``1,024 B``."""
    for unit, k in (("TiB", 2 ** 40), ("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= k:
            v = n / k
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{n:,} B"


def admit(plan, policy: Policy | None = None, *, party=None, constants=None, inputs=None, merge: bool = True,
          lazy: bool = True, frac: int | None = None, clients=()) -> Admission:
    """Refuse `plan` (a Plan or Graph) before it runs if it breaks `policy` (default: the
    default policy) or needs more than its limits; return its bounds and input limits.

    party: the party that asks (a name or rank; "dealer"): only its own figures are
    checked, and only its own run is costed. None: every party and the dealer.
    clients: the plan's non-computing parties (runtime/clients.py), which are not costed."""
    pol = policy if policy is not None else DEFAULT
    graph: Graph = getattr(plan, "graph", plan)
    if constants is None:
        constants = getattr(plan, "constants", {}) or {}
    if frac is None:
        meta = getattr(plan, "meta", None)
        frac = int(meta.get("frac_bits", fixed.DEFAULT_FRAC_BITS)) if isinstance(meta, dict) else \
            fixed.DEFAULT_FRAC_BITS
    label = f"policy {pol.name!r}"
    pol.check(graph)  # structure first: it is cheap and bounds the cost run
    clients = tuple(clients or ())
    names = list(graph.parties)[:len(graph.parties) - len(clients)]
    if party is None:
        want = None
    elif party == "dealer":
        want = ["dealer"]
    else:
        want = [party]
    try:
        b = _bounds.compute(graph, constants=constants, inputs=inputs, parties=want, merge=merge, lazy=lazy,
                            frac=frac, clients=clients)
    except _bounds.BoundsError as e:
        raise AdmissionError([Violation(e.node, e.problem, "make the plan smaller", "limits")], label) from None
    out = []
    dealer_too = party is None or party == "dealer"
    checked = list(b.party) if party is None else ([] if party == "dealer" else [_name(names, party)])
    for name in checked:
        pb = b.party[name]
        if pol.max_peak_bytes is not None and pb.peak_bytes > pol.max_peak_bytes:
            what, most = max(pb.parts.items(), key=lambda kv: kv[1]) if pb.parts else ("", 0)
            out.append(Violation(pb.peak_node, f"needs {size(pb.peak_bytes)} of memory at {name} (upper estimate; "
                                               f"{size(most)} of it {what}); {label} allows "
                                               f"{size(pol.max_peak_bytes)}",
                                 "use a smaller batch or smaller tensors, or ask for a larger max_peak_bytes",
                                 "limits.max_peak_bytes"))
        if pol.max_work is not None and pb.work > pol.max_work:
            out.append(Violation(pb.work_node, f"needs {pb.work:.3g} element operations at {name} (estimate, loop "
                                               f"trips included); {label} allows {pol.max_work:.3g}",
                                 "run fewer loop trips or smaller tensors, or ask for a larger max_work",
                                 "limits.max_work"))
    last = names[-1] if names else None
    if dealer_too or (party is not None and _name(names, party) == last):
        d = b.dealer
        if pol.max_dealer_bytes is not None and d.bytes > pol.max_dealer_bytes:
            out.append(Violation(d.node, f"needs {size(d.bytes)} of dealer material (exact, sent to {last}); "
                                         f"{label} allows {size(pol.max_dealer_bytes)}",
                                 "use fewer secret products and comparisons per run, or ask for a larger "
                                 "max_dealer_bytes", "limits.max_dealer_bytes"))
    if dealer_too and pol.max_peak_bytes is not None and b.dealer.peak_bytes > pol.max_peak_bytes:
        out.append(Violation(b.dealer.peak_node or b.dealer.node, f"needs {size(b.dealer.peak_bytes)} of memory "
                                                                  f"at the dealer (upper estimate); {label} allows "
                                                                  f"{size(pol.max_peak_bytes)}",
                             "use fewer secret products and comparisons per run, or ask for a larger "
                             "max_peak_bytes", "limits.max_peak_bytes"))
    if out:
        raise AdmissionError(out, label, b)
    limits = ranges.input_limits(graph, constants, b.extras, frac=frac, bits=pol.truncation_security_bits, lazy=lazy)
    return Admission(pol, b, limits)


def _name(names, party):
    if isinstance(party, int) and not isinstance(party, bool):
        return names[party] if 0 <= party < len(names) else None
    return party
