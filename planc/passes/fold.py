"""fold-loops: find N identical copies of a body in straight-line code and make a loop.

A plain Python ``for`` unrolls while tracing; this pass takes it back. Copies are runs
of p nodes whose ops, attributes and result types repeat, and whose operands relate the
same way in every copy:

- internal: the operand is a result of the same copy, at the same position;
- invariant: the operand is defined before the first copy, the same value in every copy;
- carried: in copy 0 it is defined before the copies (the initial value), in copy c > 0
  it is the result at a fixed position of copy c-1 (what the body yields).

Results of a copy may be used only by its own copy or the next one, except the carried
results of the last copy, which become the loop's results. With min_copies or more
matching copies the run becomes ``loop`` whose body is copy 0 with carried operands
replaced by block parameters.
"""
from __future__ import annotations

from dataclasses import dataclass

from planc.ir.graph import Node, Region, TensorType, Value, make_attrs
from planc.ir.types import PUBLIC

from .base import Pass, register
from .rewrite import Namer, map_blocks, substitute, used_names, with_nodes


def _sig(n: Node):
    return (n.op, n.attrs, tuple(r.type for r in n.results), len(n.operands), bool(n.regions))


@dataclass
class _Match:
    start: int
    period: int
    copies: int
    slots: list  # [(init Value, source position, result index)]
    slot_of: dict  # (position, operand index) -> slot


def _match(nodes, defined, i, p, max_copies):
    """How many copies of nodes[i:i+p] follow one another, and the carried slots."""
    n = len(nodes)
    slots, slot_of = [], {}
    if any(nodes[i + j].regions for j in range(p)):
        return None

    def pos(name, copy):
        k = defined.get(name)
        base = i + copy * p
        return k - base if k is not None and base <= k < base + p else None

    # copy 1 against copy 0 decides the roles of every operand
    if i + 2 * p > n:
        return None
    for j in range(p):
        a, b = nodes[i + j], nodes[i + p + j]
        for t, (u, w) in enumerate(zip(a.operands, b.operands)):
            jw = pos(w.name, 1)
            if jw is not None:  # internal
                if pos(u.name, 0) != jw or _ridx(nodes[i + jw], u) != _ridx(nodes[i + p + jw], w):
                    return None
                continue
            jc = pos(w.name, 0)
            if jc is not None:  # carried: u must come from before the copies
                k = defined.get(u.name)
                if k is not None and k >= i:
                    return None
                r = _ridx(nodes[i + jc], w)
                key = (jc, r)
                for s, (init, sj, sr) in enumerate(slots):
                    if (sj, sr) == key:
                        if init != u:
                            return None
                        slot_of[(j, t)] = s
                        break
                else:
                    if u.type != w.type:
                        return None
                    slots.append((u, jc, r))
                    slot_of[(j, t)] = len(slots) - 1
                continue
            if u != w:  # invariant
                return None
    copies = 2
    while copies < max_copies and i + (copies + 1) * p <= n:
        c = copies
        ok = True
        for j in range(p):
            a, b = nodes[i + j], nodes[i + c * p + j]
            if _sig(a) != _sig(b):
                ok = False
                break
            prev = nodes[i + (c - 1) * p + j]
            for t, (u, w) in enumerate(zip(prev.operands, b.operands)):
                if (j, t) in slot_of:
                    _, sj, sr = slots[slot_of[(j, t)]]
                    if w != nodes[i + (c - 1) * p + sj].results[sr]:
                        ok = False
                        break
                elif pos(w.name, c) is not None:
                    jw = pos(w.name, c)
                    if pos(u.name, c - 1) != jw:
                        ok = False
                        break
                elif u != w:
                    ok = False
                    break
            if not ok:
                break
        if not ok:
            break
        copies += 1
    return _Match(i, p, copies, slots, slot_of)


def _ridx(node, v):
    for k, r in enumerate(node.results):
        if r.name == v.name:
            return k
    return -1


def users_of(nodes) -> dict:
    """value name -> indices of the nodes that read it (inside their regions too)."""
    users: dict[str, list[int]] = {}
    for idx, n in enumerate(nodes):
        names = {v.name for v in n.operands} | (used_names([n]) if n.regions else set())
        for name in names:
            users.setdefault(name, []).append(idx)
    return users


def _uses_ok(nodes, m: _Match, users: dict, later_uses: set) -> bool:
    """Results of copy c feed only copy c and c+1; after the run, only carried results of
    the last copy are read."""
    i, p, k = m.start, m.period, m.copies
    end = i + k * p
    carried_last = {nodes[i + (k - 1) * p + sj].results[sr].name for _, sj, sr in m.slots}
    for c in range(k):
        lo, hi = i + c * p, min(end, i + (c + 2) * p)
        for j in range(p):
            for r in nodes[i + c * p + j].results:
                for idx in users.get(r.name, ()):
                    if lo <= idx < hi:
                        continue
                    if idx >= end and c == k - 1 and r.name in carried_last:
                        continue
                    return False
                if c == k - 1 and r.name in later_uses and r.name not in carried_last:
                    return False
    return True


@register
@dataclass(frozen=True)
class FoldLoops(Pass):
    name = "fold-loops"
    min_copies: int = 3
    max_period: int = 64

    def run(self, graph):
        namer = Namer(graph)

        def block(nodes):
            *body, term = nodes
            changed = True
            while changed:
                changed = False
                defined = {r.name: k for k, n in enumerate(body) for r in n.results}
                later = {v.name for v in term.operands}
                users = users_of(body)
                sigs = [_sig(n) for n in body]
                best = None
                for i in range(len(body)):
                    for p in range(1, min(self.max_period, (len(body) - i) // 2) + 1):
                        if sigs[i:i + p] != sigs[i + p:i + 2 * p]:
                            continue
                        m = _match(body, defined, i, p, len(body))
                        if m is None or m.copies < self.min_copies or not m.slots:
                            continue
                        if not _uses_ok(body, m, users, later):
                            continue
                        if best is None or m.copies * m.period > best.copies * best.period:
                            best = m
                    if best is not None:
                        break
                if best is not None:
                    body, mapping = self._fold(body, best, namer)
                    (term,) = substitute([term], mapping)
                    changed = True
            return tuple(body) + (term,)

        return with_nodes(graph, map_blocks(graph.nodes, block))

    def _fold(self, body, m: _Match, namer):
        i, p, k = m.start, m.period, m.copies
        copy0 = body[i:i + p]
        params = [Value(namer("i"), TensorType("i64", (), PUBLIC))]
        params += [Value(namer("carry"), init.type) for init, _, _ in m.slots]
        new_nodes = []
        for j, n in enumerate(copy0):
            ops = list(n.operands)
            for t in range(len(ops)):
                s = m.slot_of.get((j, t))
                if s is not None:
                    ops[t] = params[1 + s]
            new_nodes.append(Node(n.op, tuple(ops), n.results, n.attrs, n.regions, n.loc))
        yields = tuple(copy0[sj].results[sr] for _, sj, sr in m.slots)
        new_nodes.append(Node("yield", yields, (), (), (), None))
        results = tuple(Value(namer("loop"), init.type) for init, _, _ in m.slots)
        loop = Node("loop", tuple(init for init, _, _ in m.slots), results, make_attrs({"trips": k}),
                    (Region(tuple(params), tuple(new_nodes)),), copy0[0].loc)
        last = body[i + (k - 1) * p:i + k * p]
        mapping = {last[sj].results[sr].name: res for (_, sj, sr), res in zip(m.slots, results)}
        after = substitute(body[i + k * p:], mapping)
        return list(body[:i]) + [loop] + list(after), mapping
