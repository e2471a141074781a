"""Trace PyTorch code into planc IR.

We use ``torch.fx``'s symbolic tracer for what it does well (intercepting tensor methods,
torch functions, operators and module attribute access) but lower every fx node to IR
*as it is created*. Lowering at creation time means:

- shapes are static and concrete: ``x.shape``, ``x.size(0)``, ``len(x)`` are plain ints
  read off the IR type, so shape arithmetic in user code just works;
- every error (unsupported op, bad shapes, Python control flow on a traced value) is
  raised while the user's frame is on the stack, so it names the user's `file:line`.

Module parameters never become constants: a module marked with ``planc.owned`` (or the
root module traced with ``owner=``) turns each parameter and buffer into a ``load`` of
``<tag>/<name>`` from its owner. Any other captured tensor becomes a named public
``const``, listed in the plan so nobody ships data by accident.
"""
from __future__ import annotations

import contextvars

import torch
import torch.fx as fx

from planc.ir import ops
from planc.ir.builder import Builder
from planc.ir.graph import Value
from planc.ir.types import PUBLIC, TORCH_TO_IR, IR_TO_TORCH, TensorType

from .errors import TraceError, in_module, user_frames, user_loc

ACTIVE: contextvars.ContextVar["PlancTracer | None"] = contextvars.ContextVar("planc_tracer", default=None)


def ir_dtype(dt) -> str:
    try:
        return TORCH_TO_IR[str(dt)]
    except KeyError:
        raise TraceError(f"dtype {dt} is not supported; use float32, float64, int64, int32 or bool",
                         user_loc()) from None


def torch_dtype(dt: str):
    return getattr(torch, IR_TO_TORCH[dt])


class PlancProxy(fx.Proxy):
    """An fx proxy that knows its static IR type."""

    @property
    def value(self):
        return self.node.meta["planc"]

    def _type(self) -> TensorType:
        v = self.value
        if not isinstance(v, Value):
            raise TraceError(f"{type(v).__name__} value has no tensor type", user_loc())
        return v.type

    @property
    def shape(self):
        return torch.Size(self._type().shape)

    def size(self, dim=None):
        s = self._type().shape
        return torch.Size(s) if dim is None else s[dim]

    def dim(self):
        return self._type().rank

    @property
    def ndim(self):
        return self._type().rank

    def numel(self):
        return self._type().numel

    @property
    def dtype(self):
        return torch_dtype(self._type().dtype)

    @property
    def device(self):
        return torch.device("cpu")

    @property
    def is_cuda(self):
        return False

    def __len__(self):
        if isinstance(self.value, tuple):
            return len(self.value)
        s = self._type().shape
        if not s:
            raise TraceError("len() of a 0-d tensor", user_loc())
        return s[0]

    def __iter__(self):
        v = self.value
        if isinstance(v, tuple):
            return iter([self[i] for i in range(len(v))])
        return iter([self[i] for i in range(len(self))])

    def __repr__(self):
        v = self.value
        return f"PlancProxy({v}: {v.type})" if isinstance(v, Value) else f"PlancProxy({v!r})"


class PlancTracer(fx.Tracer):
    def __init__(self, name: str, parties=()):
        super().__init__()
        self.b = Builder(name, parties)
        self.tensors: dict[str, torch.Tensor] = {}  # get_attr target -> tensor
        self.owned: dict[int, tuple[int, str]] = {}  # id(tensor) -> (owner, load tag)
        self.names: dict[int, str] = {}  # id(tensor) -> readable name of an unowned param
        self.constants: dict[str, torch.Tensor] = {}
        self.captured: dict[str, str] = {}
        self._const_of: dict[int, Value] = {}
        self._load_of: dict[int, Value] = {}
        self._shares: dict[str, Value] = {}
        self.outputs = None
        self.held: list = []  # specs passed to marker nodes by index: fx would rebuild dataclasses
        # modules whose forward is running, innermost last: (module, path or None for a
        # module the user's code called, {id(submodule): path} of that outermost module)
        self._modules: list[tuple[torch.nn.Module, str | None, dict[int, str]]] = []

    def hold(self, obj) -> int:
        self.held.append(obj)
        return len(self.held) - 1

    # ---- fx hooks
    def proxy(self, node):
        return PlancProxy(node, self)

    def is_leaf_module(self, m, qualname):
        return False  # trace through every module: lowering works on torch functions

    def call_module(self, m, forward, args, kwargs):
        owned = m.__dict__.get("_planc_owned")
        if owned is not None:
            self.own_module(m, *owned)
        else:
            for name, t in list(m.named_parameters()) + list(m.named_buffers()):
                self.names.setdefault(id(t), f"{type(m).__name__.lower()}.{name}")
        path, paths = self._module_path(m)
        self._modules.append((m, path, paths))
        try:
            # nodes made in the forward of a submodule name it: `features.3 (Conv2d)`
            with in_module(path, type(m).__name__ if path is not None else None):
                return forward(*args, **kwargs)
        finally:
            self._modules.pop()

    def _module_path(self, m) -> tuple[str | None, dict[int, str]]:
        """Path of submodule `m` in the module the user's code called (as in its
        named_modules(), so `features.3` also prefixes its weights' load tags). A module
        the user's code calls directly, or one not registered under the running module,
        starts a new outermost module and has no path."""
        if self._modules:
            _, _, paths = self._modules[-1]
            if id(m) in paths:
                return paths[id(m)], paths
        return None, {id(sub): name for name, sub in m.named_modules() if name}

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        if isinstance(attr_val, torch.Tensor):
            return self.proxy(self.tensor_node(attr_val, attr))
        return attr_val

    def create_arg(self, a):
        if isinstance(a, torch.Tensor) and not isinstance(a, fx.Proxy):
            return self.tensor_node(a, None)
        return super().create_arg(a)

    def to_bool(self, obj):
        raise TraceError(
            "Python control flow (if/while/and/or/bool()) depends on a traced tensor, whose value "
            "is not known while tracing; use torch.where(cond, a, b) to choose between values, "
            "or planc.fori_loop for loops",
            user_loc(),
        )

    def iter(self, obj):
        raise TraceError("iterating over a traced value of unknown length", user_loc())

    def keys(self, obj):
        raise TraceError("** unpacking of a traced value", user_loc())

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        if kind == "placeholder":
            pass  # made by input_proxy, which sets the IR value itself
        elif kind == "output":
            self.outputs = fx.node.map_arg(args[0], lambda n: n.meta["planc"])
        elif kind == "get_attr":
            node.meta["planc"] = self.lower_tensor(target)
        else:
            from .lower import lower_node

            node.meta["planc"] = lower_node(self, node)
        return node

    # ---- tensors met while tracing
    def own_module(self, m: torch.nn.Module, owner: str, tag: str):
        k = self.b.party(owner)
        for name, t in list(m.named_parameters()) + list(m.named_buffers()):
            if t.dtype == torch.int64 and name.endswith("num_batches_tracked"):
                continue  # a training counter, never read in eval mode
            self.owned.setdefault(id(t), (k, f"{tag}/{name}"))

    def tensor_node(self, t: torch.Tensor, hint):
        name = f"_t{id(t)}"
        if name not in self.tensors:
            self.tensors[name] = t
            node = fx.Tracer.create_node(self, "get_attr", name, (), {})
            node.meta["planc"] = self.lower_tensor(name, hint)
            self._tensor_nodes = getattr(self, "_tensor_nodes", {})
            self._tensor_nodes[name] = node
        return self._tensor_nodes[name]

    def lower_tensor(self, target, hint=None):
        t = self.tensors.get(target)
        if t is None:
            raise TraceError(f"unknown module attribute {target!r}", user_loc())
        key = id(t)
        if key in self.owned:
            if key not in self._load_of:
                owner, tag = self.owned[key]
                ty = TensorType(ir_dtype(t.dtype), tuple(t.shape), _private(owner))
                self._load_of[key] = self.b.emit("load", (), {"tag": tag, "owner": owner}, types=[ty],
                                                 name=tag.split("/", 1)[-1], loc=user_loc(), at_top=True)
            return self._load_of[key]
        if key not in self._const_of:
            self._const_of[key] = self.capture(t, hint)
        return self._const_of[key]

    def capture(self, t: torch.Tensor, hint=None) -> Value:
        """A tensor from outside the traced code becomes a named public constant."""
        loc = user_loc()
        kind = "parameter" if id(t) in self.names else "captured tensor"
        var = self.names.get(id(t)) or _find_variable(t) or hint or "const"
        name = var
        i = 1
        while name in self.constants:
            name = f"{var}_{i}"
            i += 1
        t = t.detach()
        if t.requires_grad or not t.is_contiguous():
            t = t.contiguous()
        self.constants[name] = t.clone()
        where = f" at {loc}" if loc else ""
        self.captured[name] = f"{kind} `{var}`{where}"
        ty = TensorType(ir_dtype(t.dtype), tuple(t.shape), PUBLIC)
        return self.b.emit("const", (), {"name": name}, types=[ty], name=name, loc=loc, at_top=True)

    def input_proxy(self, spec, name):
        if not hasattr(spec, "materialize"):
            raise TraceError(f"input {name!r}: expected planc.load(...) or planc.public(...), got "
                             f"{type(spec).__name__}", user_loc())
        node = fx.Tracer.create_node(self, "placeholder", name, (), {})
        node.meta["planc"] = spec.materialize(self, name)
        return self.proxy(node)

    def as_value(self, x, what) -> Value:
        """A traced value, a tensor from outside (a listed constant) or a number."""
        if isinstance(x, PlancProxy) and isinstance(x.value, Value):
            return x.value
        if isinstance(x, torch.Tensor):
            return self.tensor_node(x, None).meta["planc"]
        if isinstance(x, (int, float, bool)):
            return self.scalar(x)
        raise TraceError(f"{what} expects a tensor, got {type(x).__name__}", user_loc())

    # ---- emitting IR
    def share_if_needed(self, operands):
        """Operands for an op whose result mixes owners: private ones get shared first."""
        vs = [v.type.vis for v in operands if isinstance(v, Value)]
        from planc.ir.types import join

        if not join(*vs).is_secret:
            return list(operands)
        out = []
        for v in operands:
            if isinstance(v, Value) and v.type.vis.is_private:
                if v.name not in self._shares:
                    self._shares[v.name] = self.b.emit("share", [v], name=f"{v.name}_s", loc=user_loc())
                v = self._shares[v.name]
            out.append(v)
        return out

    def emit(self, op: str, operands, attrs=None, name=None):
        loc = user_loc()
        if not ops.get(op).product:  # products take a party's plaintext operand directly
            operands = self.share_if_needed(operands)
        try:
            return self.b.emit(op, operands, attrs, loc=loc, name=name)
        except ops.TypeRuleError as e:
            if e.op is None:
                e.op = op
            raise TraceError(str(e), loc) from None

    def scalar(self, x, like: Value | None = None) -> Value:
        if isinstance(x, bool):
            dt = "bool"
        elif isinstance(x, int):
            dt = like.type.dtype if like is not None and like.type.dtype in ("i32", "i64") else "i64"
        elif isinstance(x, float):
            dt = like.type.dtype if like is not None and like.type.dtype == "f64" else "f32"
        else:
            raise TraceError(f"expected a tensor or a number, got {type(x).__name__}", user_loc())
        return self.b.emit("const", (), {"value": float(x)}, types=[TensorType(dt, (), PUBLIC)],
                           name="c", loc=user_loc())


def _private(owner: int):
    from planc.ir.types import private

    return private(owner)


def _find_variable(t: torch.Tensor) -> str | None:
    """The name the user gave a captured tensor: a local, closure, global or default."""
    for frame in user_frames(2):
        for scope in (frame.f_locals, frame.f_globals):
            for k, v in scope.items():
                if v is t and not k.startswith("_"):
                    return k
    return None

