"""The reverse pass over a list of IR nodes: which values depend on the differentiated
ones (`forward_active`), the outer values a region reads (`free_values`), copying nodes
under a renaming (`clone`, for recomputing a loop body), and `backprop`, which runs each
node's vjp rule in reverse order, summing the cotangents of values used more than once."""
from __future__ import annotations

from planc.ir import ops
from planc.ir.graph import Node, Value

from ..errors import TraceError
from .emit import Emitter, is_float


def free_values(node: Node) -> list[Value]:
    """Values defined outside `node`'s regions that its regions read, in order of first use."""
    defined: set[str] = set()
    out: dict[str, Value] = {}

    def walk(nodes):
        for n in nodes:
            for v in n.operands:
                if v.name not in defined and v.name not in out:
                    out[v.name] = v
            for r in n.regions:
                defined.update(p.name for p in r.params)
                walk(r.nodes)
            defined.update(v.name for v in n.results)

    for r in node.regions:
        defined.update(p.name for p in r.params)
        walk(r.nodes)
    return list(out.values())


def reads(node: Node) -> list[Value]:
    return list(node.operands) + (free_values(node) if node.regions else [])


def forward_active(nodes, seeds: set[str]) -> set[str]:
    """Names of the floating-point values among `nodes`' results that depend on `seeds`."""
    act = set(seeds)
    for n in nodes:
        d = ops.get(n.op)
        if d.nondiff or d.terminator or not d.differentiable:
            continue
        if any(v.name in act for v in reads(n)):
            act.update(r.name for r in n.results if is_float(r))
    return act


def clone(b, nodes, env: dict[str, Value]) -> None:
    """Emit copies of `nodes` (no terminator) with operands renamed by `env`, which
    gains each copied result (and each copied region's parameters)."""
    for n in nodes:
        d = ops.get(n.op)
        regions = []
        for r in n.regions:
            params = b.begin_region([p.type for p in r.params], [p.name.split("_")[0] for p in r.params])
            env.update({p.name: q for p, q in zip(r.params, params)})
            clone(b, r.nodes[:-1], env)
            regions.append(b.end_region([env.get(v.name, v) for v in r.yielded], r.nodes[-1].loc))
        out = b.emit(n.op, [env.get(v.name, v) for v in n.operands], n.attr_dict, loc=n.loc,
                     types=[r.type for r in n.results] if d.declared else None, regions=regions,
                     name=n.results[0].name.split("_")[0] if n.results else None)
        out = out if isinstance(out, tuple) else (out,)
        env.update({r.name: o for r, o in zip(n.results, out)})


def backprop(e: Emitter, nodes, seeds: dict[str, Value]) -> dict[str, Value]:
    """Cotangents of every active value read by `nodes`, given those of `seeds` (by name)."""
    cts = dict(seeds)
    for n in reversed(nodes):
        d = ops.get(n.op)
        if d.terminator or not d.differentiable:
            continue
        outs = [cts.get(r.name) for r in n.results]
        if all(c is None for c in outs):
            continue
        targets = reads(n)
        if not any(e.needs(v) for v in targets):
            continue
        rule = d.rule("vjp")
        if rule is None:  # the completeness check makes this unreachable for registered ops
            raise TraceError(f"{n.op} has no gradient rule (planc/autodiff/)", n.loc)
        grads = rule(e.at(n), n, outs)
        for v, g in zip(targets, grads):
            if g is None or not e.needs(v):
                continue
            if g.type.shape != v.type.shape:
                raise AssertionError(f"vjp of {n.op} gives {g.type} for {v.type}")
            cts[v.name] = e.at(n).add(cts.get(v.name), g)
    return cts
