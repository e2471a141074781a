"""Resource bounds of a plan, known before anything runs: rounds, bytes, memory, work, time.

The runtime's protocols are data-oblivious: which messages they send, what material they
ask for and which tensors they make depend on the plan (shapes, attributes, visibilities),
not on the values. So this module runs each party's own protocols on shape-only (meta)
tensors — secret, private *and* public values alike — with a communicator that counts
instead of sending, a dealer that counts instead of making material, and a meter (a torch
dispatch mode) that sees every tensor operation the party would perform. Nothing is
executed on real data: public values of up to ``SMALL`` elements stay real (protocols read
a few public scalars, such as a divisor), anything larger is shape-only, and every real
tensor operation the run makes is first sized on meta tensors and done for real only when
it is small (``REAL_ELEMENTS``, ``REAL_WORK``). A loop is costed by running one trip and
multiplying: a 10^12-trip loop costs as much to bound as a 1-trip loop.

How exact each figure is
------------------------
- **rounds, bytes sent and received, dealer bytes and requests: exact** — the runtime's
  own count. Two stated exceptions, each reported in ``Bounds.notes``: (a) when a loop can
  run alongside other communicating nodes of its block, the merged round count is an
  upper bound (the later trips' rounds are counted as if nothing shared them); (b) when a
  protocol's messages depend on a public value the cost run cannot know (a divisor that is
  computed from a loop index or a public input that was not given), the general path is
  costed — for a division, the one that encodes the divisor (at least as many truncations).
- **peak memory: an upper estimate** per party and for the dealer: the most bytes of
  live tensors at any moment of the shape-only run (plan values, protocol temporaries
  held across rounds, material, received messages), with the largest workspace torch takes
  inside an op on top (im2col of a convolution: batch x C_in x kh x kw x out_h x out_w
  elements; copies inside a matrix product) and packed send buffers, plus a margin of ``MARGIN`` times
  the largest single tensor for the temporaries real parties make where the shape-only
  run takes a shortcut, plus the party's own data, the plan's constants, and (last party)
  the dealer's corrections it holds, plus ``BASE_BYTES``.
  The dealer's: every correction it holds until it sends them in one packed message, the
  packed copy or its largest request, and the public values. Material of more than one
  chunk (runtime/material.py, ``chunk_bytes()``) travels in chunks of at most
  ``chunk_bytes() + the largest request``: then the last party holds two chunks (the
  one it uses, the one prefetched), the dealer two (the one it makes, the one in flight)
  and a packed copy or its largest request — whatever the plan's total. tests/test_bounds.py checks
  the figures against the live tensors of real runs and against peak RSS growth.
- **work: an estimate, meant to be high** — element operations of the tensor operations
  the run performs (inputs + outputs touched; multiply-accumulates for products and
  convolutions) times ``WORK_FACTOR``, plus ``NODE_WORK`` per element shared or revealed,
  ``STEP_WORK`` per node executed and ``SCAN_WORK`` per pending node the interpreter's
  scheduler checks after an exchange, loop trips multiplied in. Counted on real runs with
  the same meter (tests/test_bounds.py), parties do at most this on every op sample and on
  the seed CNN (the shape-only run skips the combining steps and the numpy bit tricks of
  the comparisons: real parties touch 2-6x the elements it sees).
- **time: a rough estimate** — the slowest party's work at ``ELEMENTS_PER_S``, the dealer's
  before it, plus rounds x RTT and the busiest party's bytes over the bandwidth of the
  network model; on the seed CNN and the op samples within a factor of two either way of
  the measured run on one core each.

``compute(plan)`` gives a ``Bounds``; ``planc.cost.predict`` builds the front end's
``Cost`` on it, ``runtime.admission.admit`` compares it with a policy's limits.
"""
from __future__ import annotations

import heapq
import math
import threading
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from planc.ir import ops
from planc.ir.graph import Graph, Node

from . import fixed
from . import protocols  # noqa: F401  (registers every protocol)
from .clients import for_computing
from .comm.base import nbytes
from .dtypes import TORCH_DTYPE
from .errors import DataError, PlanRuntimeError
from .interpreter import Interpreter, outer_reads
from .material import _descr
from .party import Party
from .protocols.core import ABSENT, Ex, Shared, local, merge, split

from .ranges import integral_names

SMALL = 1 << 12  # public values up to this many elements stay real in the cost run
REAL_ELEMENTS = 1 << 20  # a real tensor op of the cost run runs for real only up to this output size ...
REAL_WORK = 1 << 24  # ... and this much work; otherwise it runs on meta tensors
MAX_OPS = 1_000_000  # tensor operations one cost run may take (~35 us each; one loop trip each): beyond, refused
MAX_PYTHON_LOOP = 1 << 16  # avg_pool2d's window loop (kh * kw iterations per call) beyond which costing refuses

MARGIN = 4  # times the largest tensor: temporaries real parties make where the shape-only run takes a shortcut
BASE_BYTES = 64 << 20  # per party (and the dealer): the interpreter, torch's and numpy's own buffers
STEP_WORK = 10_000  # element operations one node execution is worth (interpreter and protocol overhead)
WORK_FACTOR = 6  # real parties touch 2-6x the elements the shape-only run counts (its shortcuts, numpy) ...
NODE_WORK = 16  # ... and share / reveal this many per element of their operand and result
DEALER_WORK_FACTOR = 3  # the dealer: 3x its estimate (measured at up to 2.8x)
SCAN_WORK = 400  # element operations one readiness check of the interpreter's scheduler is worth
ELEMENTS_PER_S = 2e9  # estimated element operations a party's thread gets through a second (measured)
NETWORKS = {"lan": (0.2, 10.0), "wan": (40.0, 0.1)}  # RTT ms, Gbit/s


class BoundsError(PlanRuntimeError):
    """The plan cannot be bounded (it would take too long even to cost it)."""


# ---------------------------------------------------------------- results


@dataclass
class NodeFigures:
    """One top-level node's share of a party's totals (loop trips included)."""

    rounds: int = 0
    bytes_sent: int = 0
    bytes_recv: int = 0
    work: int = 0
    dealer_bytes: int = 0


@dataclass
class PartyBounds:
    name: str
    rounds: int = 0  # merged, as the runtime schedules (exact; see the notes)
    bytes_sent: int = 0  # exact
    bytes_recv: int = 0  # exact
    peak_bytes: int = 0  # upper estimate
    peak_node: Node | None = None  # the node running when the peak is reached
    work: int = 0  # estimate: element operations
    work_node: Node | None = None  # the top-level node that does the most work
    live_peak_bytes: int = 0  # the part of peak_bytes that is live tensors of the shape-only run
    parts: dict = field(default_factory=dict)  # what peak_bytes is made of, for `planc show --cost`

    @property
    def compute_s(self) -> float:
        return self.work / ELEMENTS_PER_S


@dataclass
class DealerBounds:
    bytes: int = 0  # exact: corrections sent to the last party, and dealt values to each other party
    requests: int = 0  # exact
    material: dict = field(default_factory=dict)  # request descriptor -> count (exact)
    peak_bytes: int = 0  # upper estimate
    work: int = 0  # estimate
    node: Node | None = None  # the top-level node that needs the most material
    peak_node: Node | None = None
    chunks: bool = False  # the material travels in chunks (more than chunk_bytes())
    chunk_bytes: int = 0  # upper bound: correction bytes one chunk holds (all of them if one chunk)
    dealt: int = 0  # exact: dealt values (runtime/material.py) each computing party receives

    @property
    def compute_s(self) -> float:
        return self.work / ELEMENTS_PER_S


@dataclass
class Bounds:
    """What a plan needs, per party and for the dealer, from the plan alone."""

    parties: list  # every party of the plan
    party: dict  # name -> PartyBounds, for the parties computed
    dealer: DealerBounds
    per_node: list  # [(node, {party: NodeFigures})], top-level nodes in program order
    notes: list  # why a figure said to be exact is not, for this plan (empty: as documented)
    merge: bool = True
    lazy: bool = True
    extras: dict = field(default_factory=dict)  # value name -> pending truncation bits of a secret result

    @property
    def exact(self) -> bool:
        return not self.notes

    @property
    def rounds(self) -> int:
        return max((p.rounds for p in self.party.values()), default=0)

    def wall_estimate(self, net="lan") -> float:
        """Seconds, roughly: the dealer's work, then the slowest party's work, rounds x RTT
        and the busiest party's bytes over the bandwidth (see the module docstring)."""
        rtt_ms, gbits = parse_net(net)
        if not self.party:
            return 0.0
        busiest = max(p.bytes_sent + p.bytes_recv for p in self.party.values())
        compute = max(p.compute_s for p in self.party.values())
        wire = (busiest + self.dealer.bytes) * 8 / (gbits * 1e9)
        return self.dealer.compute_s + compute + self.rounds * rtt_ms / 1000 + wire


def parse_net(net):
    """"lan", "wan" or "RTT_ms,Gbit_per_s" (e.g. "10,1") -> (rtt_ms, gbit_per_s); a pair passes through."""
    if isinstance(net, (tuple, list)) and len(net) == 2:
        rtt, gb = (float(x) for x in net)
    elif isinstance(net, str) and net in NETWORKS:
        return NETWORKS[net]
    else:
        try:
            rtt, gb = (float(x) for x in net.split(","))
        except (ValueError, AttributeError):
            raise ValueError(f"network {net!r}: use lan, wan or RTT_ms,Gbit_per_s (e.g. 10,1)") from None
    if not (rtt >= 0 and gb > 0):
        raise ValueError(f"network {net!r}: the RTT must be >= 0 ms and the bandwidth > 0 Gbit/s")
    return rtt, gb


# ---------------------------------------------------------------- the meter


class _Sink:
    """Where the meter counts: a party's run, or the dealer's material making."""

    def __init__(self):
        self.live = 0
        self.live_max = 0  # the most bytes live at once (peak: with the transients of the moment)
        self.peak = 0
        self.peak_node = None
        self.live_pub = 0  # public plaintext values: the dealer holds them too, for real
        self.peak_pub = 0
        self.work = 0
        self.work_pub = 0
        self.largest = 0


class _Token:
    """Owned by every tensor that views one storage the meter saw allocated; when the last
    one dies the bytes are no longer live."""

    __slots__ = ("sink", "n", "pub", "__weakref__")

    def __init__(self, sink, n, pub):
        self.sink, self.n, self.pub = sink, n, pub

    def __del__(self):
        self.sink.live -= self.n
        if self.pub:
            self.sink.live_pub -= self.n


_SCALAR_READS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default,
                 torch.ops.aten.equal.default}
_CONV = {torch.ops.aten.convolution.default}
_MM = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
       torch.ops.aten.baddbmm.default}
_TOK = "_planc_bounds_token"


def _key(t: torch.Tensor):
    try:
        return t.untyped_storage()._cdata
    except (RuntimeError, NotImplementedError):
        return None


def _meta(t):
    if isinstance(t, torch.Tensor) and t.device.type != "meta":
        return t.to("meta")
    return t


def _numel(t) -> int:
    return t.numel() if isinstance(t, torch.Tensor) else 0


def _tensors(x) -> list:
    """The tensors of an op's arguments or results (one level of lists: cat's inputs)."""
    if isinstance(x, torch.Tensor):
        return [x]
    out = []
    if isinstance(x, dict):
        x = x.values()
    if isinstance(x, (list, tuple)) or hasattr(x, "__iter__") and not isinstance(x, (str, bytes)):
        for a in x:
            if isinstance(a, torch.Tensor):
                out.append(a)
            elif isinstance(a, (list, tuple)):
                out.extend(b for b in a if isinstance(b, torch.Tensor))
    return out


def _is_meta_device(d) -> bool:
    return d is not None and (d == "meta" or getattr(d, "type", None) == "meta")


def _to_meta(args, kwargs):
    def conv(a):
        if isinstance(a, torch.Tensor):
            return _meta(a)
        if isinstance(a, (list, tuple)) and any(isinstance(b, torch.Tensor) for b in a):
            return type(a)(_meta(b) for b in a)
        return a

    return tuple(conv(a) for a in args), {k: conv(v) for k, v in kwargs.items()}


# ops whose output can be much larger than their inputs: sized on meta before running for real
_GROW = ("pad", "repeat", "conv", "mm", "new_", "upsample", "im2col", "col2im", "kron", "tile", "embedding",
         "one_hot", "cartesian", "combinations", "indices", "arange", "range", "linspace", "logspace", "eye",
         "full", "ones", "zeros", "empty", "rand", "scalar_tensor", "expand_copy", "unfold_copy", "as_strided_copy")


def _grows(func) -> bool:
    name = func.__name__
    return any(g in name for g in _GROW)


class _Meter(TorchDispatchMode):
    """Counts live bytes, workspace and work of every tensor operation made under it, and
    keeps real tensor operations small (module docstring)."""

    def __init__(self, observe: bool = False):
        super().__init__()
        self.observe = observe  # only count (a real run under observation): no guards, no meta
        self.sink = _Sink()
        self.node = None  # the innermost node running
        self.public = False  # whether that node computes a public plaintext value
        self.ops = 0
        self.notes: list[str] = []
        self.workspace_max = 0
        self.workspace_node = None

    def note(self, text: str):
        if text not in self.notes:
            self.notes.append(text)

    def where(self) -> str:
        return self.node.where() if self.node is not None else "the plan"

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops += 1
        if self.observe:  # a real run: what is real costs memory and work, meta tensors nothing
            out = func(*args, **kwargs)
            flat = _tensors(args) + _tensors(kwargs)
            if any(t.device.type != "meta" for t in flat + _tensors(out)):
                self._account(func, args, [t for t in flat if t.device.type != "meta"],
                              [t for t in _tensors(out) if t.device.type != "meta"])
            return out
        if self.ops > MAX_OPS:
            raise BoundsError(self.node, None, f"costing the plan takes more than {MAX_OPS:,} tensor operations "
                                               "(one loop trip each): too big to bound, refused")
        flat = _tensors(args) + (_tensors(kwargs) if kwargs else [])
        nmeta = sum(1 for a in flat if a.device.type == "meta")
        if nmeta and func in _SCALAR_READS:
            # a protocol reads a public value the cost run does not know: take a guess,
            # the conservative one (False: "not all equal", "not a power of two")
            self.note(f"{self.where()}: reads a value unknown when costing; costed on the general path")
            return False if func is not torch.ops.aten._local_scalar_dense.default else 0
        if nmeta and nmeta < len(flat):
            args, kwargs = _to_meta(args, kwargs)
            out = func(*args, **kwargs)
        elif not flat and _is_meta_device(kwargs.get("device")):
            out = func(*args, **kwargs)  # a shape-only factory
        elif not nmeta and func not in _SCALAR_READS:
            out = self._real_if_small(func, args, kwargs, flat)
        else:
            out = func(*args, **kwargs)
        self._account(func, args, flat, out)
        return out

    def _real_if_small(self, func, args, kwargs, flat):
        """A real op: done for real when it is small — when its inputs are and it cannot
        grow them much (a broadcasting op's output size is known from the shapes); else
        sized on meta first."""
        if flat and sum(t.numel() for t in flat) <= SMALL and not _grows(func):
            if torch.Tag.pointwise not in func.tags:
                return func(*args, **kwargs)
            try:
                if math.prod(torch.broadcast_shapes(*(t.shape for t in flat))) <= REAL_ELEMENTS:
                    return func(*args, **kwargs)
            except RuntimeError:
                return func(*args, **kwargs)
        if flat:
            margs, mkwargs = _to_meta(args, kwargs)
        else:  # a factory: zeros, ones, eye, arange, full ...
            margs, mkwargs = args, {**kwargs, "device": torch.device("meta")}
        try:
            mout = func(*margs, **mkwargs)
        except (NotImplementedError, RuntimeError, TypeError):
            return func(*args, **kwargs)  # no meta kernel
        outs = _tensors(mout)
        size = sum(t.numel() for t in outs)
        if size <= REAL_ELEMENTS and self._work(func, margs, _tensors(margs), outs) <= REAL_WORK:
            return func(*args, **kwargs)
        return mout

    @staticmethod
    def _work(func, args, flat, outs) -> int:
        if func.is_view:
            return 0
        touched = sum(_numel(t) for t in flat) + sum(t.numel() for t in outs)
        if func in _CONV and outs:
            w = args[1]
            touched = max(touched, outs[0].numel() * (w.shape[1] if w.dim() > 1 else 1) * math.prod(w.shape[2:]))
        elif func in _MM and outs:
            k = args[-1].shape[-2] if args[-1].dim() >= 2 else 1
            touched = max(touched, outs[0].numel() * k)
        return touched

    @staticmethod
    def _workspace(func, args, outs) -> int:
        """Bytes torch allocates inside the op and frees before it returns."""
        if func in _CONV and outs:
            x, w = args[0], args[1]
            out = outs[0]
            if x.dim() < 3 or out.dim() < 3:
                return 0
            # the CPU kernels unfold the whole batch at once: batch x (C_in kh kw) x (out_h out_w)
            return x.shape[0] * x.shape[1] * math.prod(w.shape[2:]) * math.prod(out.shape[2:]) * x.element_size()
        if func in _MM:
            return sum(a.numel() * a.element_size() for a in args if isinstance(a, torch.Tensor))
        return 0

    def _account(self, func, args, flat, out):
        s = self.sink
        outs = _tensors(out)
        ins = {}
        for t in flat:
            k = _key(t)
            if k is not None:
                ins[k] = t
        new = 0
        for t in outs:
            k = _key(t)
            if k in ins:  # a view, or an op writing in place: no new storage
                tok = getattr(ins[k], _TOK, None)
                if tok is not None and getattr(t, _TOK, None) is None:
                    setattr(t, _TOK, tok)
                continue
            try:
                n = t.untyped_storage().nbytes()
            except (RuntimeError, NotImplementedError):
                n = t.numel() * t.element_size()
            if n <= 0:
                continue
            tok = _Token(s, n, self.public)
            setattr(t, _TOK, tok)
            new += n
            s.largest = max(s.largest, n)
            if self.public:
                s.live_pub += n
        s.live += new
        if s.live > s.live_max:
            s.live_max = s.live
        w = self._work(func, args, flat, outs)
        s.work += w
        if self.public:
            s.work_pub += w
            s.peak_pub = max(s.peak_pub, s.live_pub)
        ws = self._workspace(func, args, outs)
        if ws > self.workspace_max:
            self.workspace_max, self.workspace_node = ws, self.node
        self.bump(ws)

    def bump(self, transient: int = 0, node=None):
        s = self.sink
        if s.live + transient > s.peak:
            s.peak = s.live + transient
            s.peak_node = node if node is not None else self.node


# ---------------------------------------------------------------- the counting dealer


class _CountingMaterial:
    """Like the dealer's: meta placeholders out, requests counted, and the dealer's own
    memory and work while it makes them estimated (derive run on meta tensors)."""

    def __init__(self, nparties: int, meter: _Meter):
        self.n = nparties
        self.meter = meter
        self.counter = 0
        self.dealer_bytes = 0  # the last party's corrections (its dealt values among them)
        self.dealt_bytes = 0  # dealt values: every other party receives them too
        self.bool_elements = 0  # corrections that are bool tensors: unpacked at the last party, 1 byte each
        self.kinds: Counter = Counter()
        self.log: list = []  # (descriptor, count, bytes, bool elements, dealt bytes): loops read the deltas of trips
        self.dealer = _Sink()  # the dealer's own work and per-request memory
        self.request_peak = 0
        self.request_peak_node = None
        self.request_held = 0  # the most correction bytes one request makes (a chunk overshoots by less)

    def get(self, kind, random, derived, derive, share_of=None):
        self.counter += 1
        d = _descr(kind, random + derived)
        self.kinds[d] += 1
        b = sum(nbytes(p.shape, p.dtype) for p in derived)
        bools = sum(math.prod(p.shape) for p in derived if p.dtype == torch.bool)
        dealt = sum(nbytes(p.shape, p.dtype) for p in derived if p.sharing == "dealt")
        self.dealer_bytes += b
        self.dealt_bytes += dealt
        self.bool_elements += bools
        self.log.append((d, 1, b, bools, dealt))
        self.request_held = max(self.request_held, b + bools)
        self._dealer_cost(random, derived, derive, share_of)
        return {p.name: torch.empty(p.shape, dtype=p.dtype, device="meta") for p in random + derived}

    @property
    def sent_bytes(self) -> int:
        """What the dealer sends: the last party's corrections, and the dealt values again
        to every other party."""
        return self.dealer_bytes + (self.n - 1) * self.dealt_bytes

    def _dealer_cost(self, random, derived, derive, share_of):
        """The dealer draws every party's share of each random part, combines them, derives
        the rest and subtracts the other shares: estimated, derive measured on meta."""
        m = self.meter
        rand_b = sum(math.prod(p.shape) * (1 if p.dtype == torch.bool else 8) for p in random)
        der_b = sum(math.prod(p.shape) * (1 if p.dtype == torch.bool else 8) for p in derived)
        elems = sum(math.prod(p.shape) for p in random + derived)
        saved, m.sink = m.sink, self.dealer
        public, m.public = m.public, False
        ws0, notes0 = m.workspace_max, len(m.notes)
        d = self.dealer
        d.peak = before = d.live
        try:
            full = {p.name: torch.empty(p.shape, dtype=p.dtype, device="meta") for p in random}
            for name, k in (share_of or {}).items():
                full[f"{name}@{k}"] = full[name]
            derive(full)
            del full
            derived_ws = max(0, d.peak - before)
        except Exception:  # noqa: BLE001 — derives that use numpy do not take meta tensors
            d.work += 4 * elems
            derived_ws = 2 * der_b
        finally:
            m.sink, m.public, m.workspace_max = saved, public, ws0
            del m.notes[notes0:]  # what derive guesses changes no count: the dealer's own estimate
        d.work += (self.n + 1) * elems + STEP_WORK
        shared_of = sum(math.prod(p.shape) * 8 for p in random if p.name in (share_of or {}))
        # every party's share of the random parts (combined in place), the derived values,
        # derive's temporaries; the corrections are counted as held
        transient = self.n * rand_b + shared_of + derived_ws
        if transient > self.request_peak:
            self.request_peak, self.request_peak_node = transient, m.node

    def bulk(self, entries, times: int):
        """Loop trips after the first: `entries` (log slice of one trip) again `times` times."""
        for d, c, b, bools, dealt in entries:
            self.counter += c * times
            self.kinds[d] += c * times
            self.dealer_bytes += b * times
            self.dealt_bytes += dealt * times
            self.bool_elements += bools * times
            self.log.append((d, c * times, b * times, bools * times, dealt * times))


# ---------------------------------------------------------------- the cost interpreter


class _Tally:
    def __init__(self):
        self.rounds = 0  # exchanges made
        self.sent = 0
        self.recv = 0
        self.bulk_rounds = 0  # added for loop trips not run
        self.bulk_sent = 0
        self.bulk_recv = 0
        self.steps = 0  # node executions (loop trips multiplied in)


def _ex_bytes(ex: Ex):
    sent = sum(nbytes(tuple(t.shape), t.dtype) for ts in ex.sends.values() for t in ts)
    recv = sum(nbytes(tuple(s), d) for sp in ex.recvs.values() for s, d in sp)
    busy = any(ts for ts in ex.sends.values()) or any(sp for sp in ex.recvs.values())
    return busy, sent, recv


class _CostInterpreter(Interpreter):
    """The party's interpreter with every value shape-only (module docstring)."""

    def __init__(self, graph, party, *, constants, inputs, merge, meter, material, tally, from_clients=None):
        super().__init__(graph, party, constants=constants, inputs=inputs, merge=merge, from_clients=from_clients)
        self.meter, self.mat, self.tally = meter, material, tally
        self.top = {id(n) for n in graph.nodes}
        self.figures: dict[int, NodeFigures] = {}
        self.extras: dict[str, int] = {}
        self._blocks: dict[int, tuple] = {}
        self._index_blocks(graph.nodes)

    def _index_blocks(self, nodes):
        for n in nodes:
            self._blocks[id(n)] = nodes
            for r in n.regions:
                self._index_blocks(r.nodes)

    # ---- blocks: the runtime's schedule, found without its quadratic scan
    def block(self, nodes, env: dict, depth: int = 0):
        """The interpreter's block schedule, the same waves (module docstring of
        interpreter.py: every node whose operands are ready starts before the next
        exchange; merge=False: one node at a time, in program order) found with ready
        counts instead of a scan of every pending node after every exchange — a plan of
        100,000 products costs as much per node to bound as one of ten. The scan the real
        interpreter makes is counted as work (``SCAN_WORK`` per pending node and exchange)."""
        body, term = nodes[:-1], nodes[-1]
        uses: dict[str, int] = {}
        for n in nodes:
            for name in self._reads(n):
                uses[name] = uses.get(name, 0) + 1
        keep = {v.name for v in term.operands}
        missing = [0] * len(body)
        waiters: dict[str, list] = {}
        for i, n in enumerate(body):
            for name in self._reads(n):
                if name not in env:
                    missing[i] += 1
                    waiters.setdefault(name, []).append(i)
        ready = [i for i, k in enumerate(missing) if k == 0]
        heapq.heapify(ready)
        started = [False] * len(body)
        left = len(body)
        running: list = []  # [node, generator, pending Ex]
        nxt = 0  # merge=False: the next node in program order

        def finish(node, outs):
            if not isinstance(outs, (list, tuple)):
                outs = [outs]
            for r, v in zip(node.results, outs):
                env[r.name] = v
                for w in waiters.pop(r.name, ()):
                    missing[w] -= 1
                    if missing[w] == 0:
                        heapq.heappush(ready, w)
            self.nodes_run += 1
            for name in self._reads(node):
                uses[name] -= 1
                if uses[name] == 0 and name not in keep:
                    env.pop(name, None)
            for r in node.results:
                if uses.get(r.name, 0) == 0 and r.name not in keep:
                    env.pop(r.name, None)

        def launch(i):
            nonlocal left
            node = body[i]
            started[i] = True
            left -= 1
            gen = self.start(node, env)
            try:
                running.append([node, gen, next(gen)])
            except StopIteration as stop:
                finish(node, stop.value)

        while True:
            if self.merge:
                while ready:
                    i = heapq.heappop(ready)
                    if not started[i]:
                        launch(i)
            else:
                while not running and nxt < len(body) and missing[nxt] == 0:
                    nxt += 1
                    launch(nxt - 1)
            if not running:
                if left:
                    first = next(i for i in range(len(body)) if not started[i])
                    raise PlanRuntimeError(body[first], self.P.name, "operands never became ready")
                break
            self.meter.sink.work += SCAN_WORK * 2 * left  # the real interpreter's passes over pending nodes
            merged = merge([r[2] for r in running])
            if depth == 0:
                self.wave = [r[0] for r in running]
            got = yield merged[0]
            parts = split(got, merged[1])
            still = []
            for (node, gen, _), part in zip(running, parts):
                try:
                    ex = self._advance(node, gen, part)
                    still.append([node, gen, ex])
                except StopIteration as stop:
                    finish(node, stop.value)
            running = still
        outs = [env[v.name] for v in term.operands]
        if any(isinstance(o, Shared) and o.extra for o in outs):
            outs = yield from self.settle_all(outs)
        return outs

    # ---- nodes
    def start(self, node: Node, env: dict):
        try:
            args = [env[v.name] for v in node.operands]
            d = ops.get(node.op)
            if self.from_clients and node.results and node.results[0].name in self.from_clients:
                gen = local(self.client_share(node))  # a client's value: its share arrived before the run
            elif node.op == "loop":
                gen = self.loop(node, args, env)
            elif d.source:
                gen = self._under(node, True, lambda: local(self.source(node)))
            else:
                vis = node.results[0].type.vis
                if node.op == "reveal" and not isinstance(args[0], Shared):
                    gen = self._reveal_plain(node, args)
                elif d.moves or vis.is_secret:
                    if node.op == "div" and _is_meta(args[1]):
                        self.meter.note(f"{node.where()}: the divisor is unknown when costing (computed from a "
                                        "loop index or a public input not given); costed as not a power of two")
                    gen = super().start(node, env)
                elif vis.is_private and vis.owner != self.P.rank:
                    gen = local(ABSENT)
                else:
                    gen = self._under(node, True, lambda: local(self._plain(node, d, args)))
        except PlanRuntimeError:
            raise
        except Exception as e:
            raise self.error(node, e) from e
        return self._wrap(node, gen)

    def _under(self, node, public, make):
        m = self.meter
        saved = m.node, m.public
        m.node, m.public = node, public
        try:
            return make()
        finally:
            m.node, m.public = saved

    def _plain(self, node, d, args):
        """A public or own private op, shape-only unless every value involved is small."""
        if any(a is ABSENT or isinstance(a, Shared) for a in args):
            raise RuntimeError("plaintext op on a value this party does not hold in the clear")
        small = node.results[0].type.numel <= SMALL and all(
            isinstance(a, torch.Tensor) and a.device.type != "meta" and a.numel() <= SMALL for a in args)
        if not small:
            args = [_meta(a) for a in args]
        out = d.rule("reference")(node, args, node.attr_dict)
        return out

    def _reveal_plain(self, node, args):
        """A private value revealed: its owner sends it in the clear (the shape-only dealer
        does not count this; the party does)."""
        (x,) = args
        t = node.result.type
        dtype = TORCH_DTYPE[t.dtype]
        to = node.attr("to")
        owner = node.operands[0].type.vis.owner
        spec = [(t.shape, dtype)]
        dests = [j for j in range(self.P.nparties) if j != owner] if to == -1 else [to]
        P = self.P
        if P.is_client(to):
            return ABSENT  # its owner sends it to the client, outside the parties' mesh
        if P.rank == owner:
            v = torch.empty(t.shape, dtype=dtype, device="meta")
            yield Ex({d: [v] for d in dests}, {})
            return v if to == -1 else ABSENT
        if P.rank in dests:
            got = yield Ex({}, {owner: spec})
            return got[owner][0]
        yield Ex({}, {})
        return ABSENT

    def source(self, node: Node):
        t = node.result.type
        a = node.attr_dict
        dt = TORCH_DTYPE[t.dtype]
        if node.op == "const":
            if a["value"] is not None:
                return torch.tensor(a["value"], dtype=dt)
            x = self.constants.get(a["name"])
            if x is None:
                raise DataError(node, self.P.name, f"the plan has no constant {a['name']!r}", graph=self.g)
            return x if x.numel() <= SMALL else torch.empty(tuple(x.shape), dtype=x.dtype, device="meta")
        if node.op == "input":
            i = a["index"]
            if i < len(self.inputs) and isinstance(self.inputs[i], torch.Tensor) and \
                    self.inputs[i].numel() <= SMALL and tuple(self.inputs[i].shape) == t.shape:
                return self.inputs[i].to(dt)
            return torch.empty(t.shape, dtype=dt, device="meta")
        if node.op == "load":
            if a["owner"] != self.P.rank:
                return ABSENT
            return torch.empty(t.shape, dtype=dt, device="meta")
        raise DataError(node, self.P.name, f"model {a['tag']!r} must be linked into the plan before it can be "
                                           "costed", graph=self.g)

    def _wrap(self, node, gen):
        """Run `gen` as `node`: the meter knows who allocates; top-level nodes get their
        rounds, bytes, work and material, loop trips included."""
        m, mat, tally = self.meter, self.mat, self.tally
        top = id(node) in self.top
        fig = self.figures.setdefault(id(node), NodeFigures()) if top else None
        d = ops.get(node.op)
        public = (not d.moves and node.results and node.results[0].type.vis.is_public and node.op != "loop")
        tally.steps += 1
        if d.moves:
            # encoding, zero sharing, packing and decoding, which the shape-only run skips
            floor = NODE_WORK * (sum(v.type.numel for v in node.operands) + sum(r.type.numel for r in node.results))
            m.sink.work += floor
            if fig is not None:
                fig.work += floor

        def step(arg, first):
            saved = m.node, m.public
            m.node, m.public = node, bool(public)
            if fig is not None:
                w0, d0, r0, s0, v0 = m.sink.work, mat.sent_bytes, tally.bulk_rounds, tally.bulk_sent, \
                    tally.bulk_recv
            try:
                return next(gen) if first else gen.send(arg)
            finally:
                m.node, m.public = saved
                if fig is not None:
                    fig.work += m.sink.work - w0
                    fig.dealer_bytes += mat.sent_bytes - d0
                    fig.rounds += tally.bulk_rounds - r0
                    fig.bytes_sent += tally.bulk_sent - s0
                    fig.bytes_recv += tally.bulk_recv - v0

        try:
            ex = step(None, True)
            while True:
                if fig is not None:
                    busy, sent, recv = _ex_bytes(ex)
                    fig.rounds += busy
                    fig.bytes_sent += sent
                    fig.bytes_recv += recv
                got = yield ex
                ex = step(got, False)
        except StopIteration as stop:
            self._record(node, stop.value)
            return stop.value

    def _record(self, node, outs):
        if not isinstance(outs, (list, tuple)):
            outs = [outs]
        for r, v in zip(node.results, outs):
            if isinstance(v, Shared):
                self.extras[r.name] = max(self.extras.get(r.name, 0), v.extra)

    # ---- loops: one trip, multiplied
    def loop(self, node: Node, args, env):
        args = yield from self.settle_all(args)
        (body,) = node.regions
        names = sorted(self._outer_reads(node))
        outer = dict(zip(names, (yield from self.settle_all([env[n] for n in names]))))
        carried = list(args)
        trips = node.attr("trips")
        if trips == 0:
            return carried
        many = trips > 1
        inner = dict(outer)
        inner[body.params[0].name] = torch.empty((), dtype=torch.int64, device="meta") if many else \
            torch.tensor(0, dtype=torch.int64)
        for p, v in zip(body.params[1:], carried):
            # a carried public value changes from trip to trip: the costed trip does not know it
            inner[p.name] = _meta(v) if many else v
        m, mat, tally = self.meter, self.mat, self.tally
        work = rounds = sent = recv = steps = 0
        log = []
        gen = self.block(body.nodes, inner, depth=1)

        def span(arg, first):
            nonlocal work, rounds, sent, recv, steps
            w0, r0, s0, v0, k0, n0 = m.sink.work, tally.bulk_rounds, tally.bulk_sent, tally.bulk_recv, \
                len(mat.log), tally.steps
            try:
                return next(gen) if first else gen.send(arg)
            finally:
                work += m.sink.work - w0
                rounds += tally.bulk_rounds - r0
                sent += tally.bulk_sent - s0
                recv += tally.bulk_recv - v0
                steps += tally.steps - n0
                log.extend(mat.log[k0:])

        try:
            ex = span(None, True)
            while True:
                busy, s_, r_ = _ex_bytes(ex)
                rounds += busy
                sent += s_
                recv += r_
                got = yield ex
                ex = span(got, False)
        except StopIteration as stop:
            carried = stop.value
        if many:
            more = trips - 1
            m.sink.work += more * work
            tally.steps += more * steps
            tally.bulk_rounds += more * rounds
            tally.bulk_sent += more * sent
            tally.bulk_recv += more * recv
            mat.bulk(log, more)
            if self.merge and rounds and self._alongside(node):
                m.note(f"{node.where()}: other communicating nodes may run alongside this loop; merged rounds "
                       "are an upper bound")
        return carried

    def _alongside(self, node) -> bool:
        """Whether a communicating node of the loop's block neither feeds it nor uses it."""
        block = self._blocks.get(id(node), ())
        produced = {}
        for n in block:
            for r in n.results:
                produced[r.name] = n

        def reads(n):
            return {v.name for v in n.operands} | set(outer_reads(n))

        before, stack = set(), [node]
        while stack:
            for name in reads(stack.pop()):
                p = produced.get(name)
                if p is not None and id(p) not in before:
                    before.add(id(p))
                    stack.append(p)
        after, mine = set(), {r.name for r in node.results}
        for n in block:
            if reads(n) & mine:
                after.add(id(n))
                mine |= {r.name for r in n.results}
        for n in block:
            if n is node or id(n) in before or id(n) in after or ops.get(n.op).terminator:
                continue
            if n.op == "loop" or ops.get(n.op).moves or (
                    ops.get(n.op).communicates and n.results and n.results[0].type.vis.is_secret):
                return True
        return False


def _is_meta(v) -> bool:
    return isinstance(v, torch.Tensor) and v.device.type == "meta"


# ---------------------------------------------------------------- running it


@dataclass
class _Run:
    rank: int
    tally: _Tally
    sink: _Sink
    material: _CountingMaterial
    figures: dict
    extras: dict
    notes: list
    workspace_max: int
    workspace_node: Node | None = None


def run_cost(graph: Graph, constants=None, rank: int = 0, *, merge: bool = True, inputs=None, lazy: bool = True,
             frac: int = fixed.DEFAULT_FRAC_BITS, integral=None, clients=(), from_clients=None) -> _Run:
    """Party `rank`'s protocols on shape-only values, counted (module docstring).
    clients: the plan's non-computing parties (its last ones), which take no part."""
    constants = constants or {}
    _precheck(graph)
    n = len(graph.parties) - len(clients)
    meter = _Meter()
    mat = _CountingMaterial(n, meter)
    tally = _Tally()
    if integral is None:
        integral = integral_names(graph, constants)
    P = Party(rank=rank, nparties=n, names=list(graph.parties), material=mat, meta=True, frac=frac,
              integral_names=integral, lazy=lazy, clients=tuple(range(n, len(graph.parties))))
    interp = _CostInterpreter(graph, P, constants=constants, inputs=list(inputs or ()), merge=merge, meter=meter,
                              material=mat, tally=tally, from_clients=from_clients)

    def exchange(ex):
        busy, sent, recv = _ex_bytes(ex)
        if busy:
            tally.rounds += 1
            tally.sent += sent
            tally.recv += recv
            # packed send buffers and received messages, on top of what is live
            meter.bump(sent + recv, node=interp.wave[0] if interp.wave else None)
        return {s: [torch.empty(sh, dtype=dt, device="meta") for sh, dt in sp] for s, sp in ex.recvs.items()}

    with meter:
        interp.run(exchange)
    return _Run(rank, tally, meter.sink, mat, interp.figures, interp.extras, meter.notes, meter.workspace_max,
                meter.workspace_node)


def _precheck(graph: Graph):
    """Refuse, before running anything, what would make the cost run itself slow."""
    for n in graph.walk():
        if n.op == "avg_pool2d":
            kh, kw = n.attr("kernel")
            if kh * kw > MAX_PYTHON_LOOP:
                raise BoundsError(n, None, f"a {kh}x{kw} pooling window takes {kh * kw:,} steps per call; "
                                           f"at most {MAX_PYTHON_LOOP:,} can be bounded")


def _static_bytes(graph: Graph, constants, rank: int | None) -> dict:
    """Bytes a party holds for the whole run outside the interpreter: the plan's
    constants, the public inputs, its own data (8 bytes an element: f64 or i64 supplied)."""
    const_b = sum(t.numel() * t.element_size() for t in (constants or {}).values() if isinstance(t, torch.Tensor))
    inputs, data = {}, {}
    for n in graph.walk():
        t = n.results[0].type if n.results else None  # a loop may have several
        if n.op == "input":
            inputs[n.attr("index")] = t.numel * 8
        elif n.op == "load" and rank is not None and n.attr("owner") == rank:
            data[n.attr("tag")] = max(data.get(n.attr("tag"), 0), t.numel * 8)
    return {"constants": const_b, "inputs": sum(inputs.values()), "data": sum(data.values())}


def _chunked(mat):
    """(chunked?, the most correction bytes one chunk holds): material.py's chunks, which
    close once they reach chunk_bytes() after a request."""
    from .material import chunk_bytes

    held, c = mat.dealer_bytes + mat.bool_elements, chunk_bytes()
    if held < c:
        return False, held
    return True, min(held, c + mat.request_held)


def _party_bounds(name, graph, constants, run: _Run, last: bool) -> PartyBounds:
    s, t, mat = run.sink, run.tally, run.material
    static = _static_bytes(graph, constants, run.rank)
    chunked, chunk = _chunked(mat)
    if last:  # the chunk in use and the prefetched one
        corrections = 2 * chunk if chunked else chunk
    else:  # the other parties hold only the dealt values (fss keys) of those chunks
        corrections = min(mat.dealt_bytes, 2 * chunk) if chunked else mat.dealt_bytes
    # the worst moment of the shape-only run, or the largest workspace at the most live bytes
    top = max(s.peak, s.live_max + run.workspace_max)
    parts = {"live tensors": s.live_max,
             "op workspace (im2col, product copies) and messages": top - s.live_max,
             "margin for the real run's temporaries": MARGIN * s.largest,
             "own data": static["data"],
             "plan constants and public inputs": static["constants"] + static["inputs"],
             "dealer corrections held": corrections,
             "runtime base": BASE_BYTES}
    node = s.peak_node
    if top > s.peak or (run.workspace_node is not None and run.workspace_max * 2 > top):
        node = run.workspace_node
    tops = sorted(run.figures.items(), key=lambda kv: -kv[1].work)
    work_node = None
    if tops:
        work_node = next((n for n in graph.nodes if id(n) == tops[0][0]), None)
    return PartyBounds(name, t.rounds + t.bulk_rounds, t.sent + t.bulk_sent, t.recv + t.bulk_recv,
                       sum(parts.values()), node, WORK_FACTOR * s.work + STEP_WORK * t.steps, work_node, top, parts)


def _dealer_bounds(graph, constants, run: _Run) -> DealerBounds:
    """The dealer holds every correction it makes until it sends them all in one packed
    message: at worst all of them and the packed copy, or all of them and the largest
    request being made (every party's share of its random parts, the derived values).
    Chunked: the chunk it makes and the one in flight, and the packed copy (at most a
    chunk) or the largest request."""
    mat, s = run.material, run.sink
    static = _static_bytes(graph, constants, None)
    chunked, chunk = _chunked(mat)
    if chunked:
        held, packed = 2 * chunk, chunk
    else:
        held = mat.dealer_bytes + mat.bool_elements  # corrections as tensors (bools unpacked: a byte each)
        packed = mat.dealer_bytes
    peak = (BASE_BYTES + static["constants"] + static["inputs"] + s.peak_pub + held
            + max(packed, mat.request_peak))
    best = max(run.figures.items(), key=lambda kv: kv[1].dealer_bytes, default=None)
    node = None
    if best is not None and best[1].dealer_bytes:
        node = next((n for n in graph.nodes if id(n) == best[0]), None)
    work = DEALER_WORK_FACTOR * mat.dealer.work + WORK_FACTOR * s.work_pub + STEP_WORK * run.tally.steps
    return DealerBounds(mat.sent_bytes, mat.counter, dict(mat.kinds), peak, work, node, mat.request_peak_node,
                        chunked, chunk, mat.dealt_bytes)


# ---------------------------------------------------------------- the entry point, cached

_CACHE: list = []  # [(key, graph, constants, bounds)], most recent last
_CACHE_SIZE = 8
_cache_lock = threading.Lock()


def compute(plan, *, constants=None, inputs=None, parties=None, merge: bool = True, lazy: bool = True,
            frac: int | None = None, clients=()) -> Bounds:
    """Bounds of running `plan` (a Plan or Graph): every party's (or those named in
    `parties`: names or ranks; "dealer" for the dealer alone) and the dealer's. Cached
    per plan object, so a session's admission check costs the plan once."""
    graph = getattr(plan, "graph", plan)
    if constants is None:
        constants = getattr(plan, "constants", {}) or {}
    if frac is None:
        meta = getattr(plan, "meta", None)
        frac = int(meta.get("frac_bits", fixed.DEFAULT_FRAC_BITS)) if isinstance(meta, dict) else \
            fixed.DEFAULT_FRAC_BITS
    clients = tuple(clients or ())
    names = list(graph.parties)[:len(graph.parties) - len(clients)]  # the computing parties
    want = _ranks(names, parties)
    from .material import chunk_bytes

    key = (id(graph), id(constants) if constants else 0, merge, lazy, frac, _inputs_key(inputs), clients,
           chunk_bytes())
    with _cache_lock:
        for k, g, c, b in _CACHE:
            if k == key and g is graph and (c is constants or not (c or constants)) and \
                    all(names[r] in b.party for r in want):
                return b
    integral = integral_names(graph, constants)
    view, from_clients = for_computing(graph, clients)  # client values as the parties hold them: shares
    runs = {r: run_cost(view, constants, r, merge=merge, inputs=inputs, lazy=lazy, frac=frac, integral=integral,
                        clients=clients, from_clients=from_clients) for r in want}
    b = _assemble(view, constants, runs, merge, lazy, names)
    with _cache_lock:
        _CACHE[:] = [e for e in _CACHE if e[0] != key][-(_CACHE_SIZE - 1):] + [(key, graph, constants, b)]
    return b


def _inputs_key(inputs):
    if not inputs:
        return ()
    return tuple(id(x) for x in inputs)


def _ranks(names, parties) -> list[int]:
    if parties is None:
        return list(range(len(names)))
    out = []
    for p in parties:
        if p == "dealer":
            r = 0
        elif isinstance(p, int) and not isinstance(p, bool):
            r = p
        elif p in names:
            r = names.index(p)
        else:
            raise ValueError(f"party {p!r}: the plan's parties are {', '.join(names)} (and the dealer)")
        if not 0 <= r < len(names):
            raise ValueError(f"party {p!r}: the plan has {len(names)} parties")
        if r not in out:
            out.append(r)
    return out


def _assemble(graph, constants, runs: dict, merge, lazy, names) -> Bounds:
    n = len(names)
    party = {names[r]: _party_bounds(names[r], graph, constants, run, r == n - 1) for r, run in runs.items()}
    first = runs[min(runs)]
    dealer = _dealer_bounds(graph, constants, first)
    per_node = []
    for node in graph.nodes:
        if ops.get(node.op).terminator:
            continue
        figs = {names[r]: run.figures[id(node)] for r, run in runs.items() if id(node) in run.figures}
        per_node.append((node, figs))
    notes = []
    for run in runs.values():
        for t in run.notes:
            if t not in notes:
                notes.append(t)
    return Bounds(names, party, dealer, per_node, notes, merge, lazy, dict(first.extras))
