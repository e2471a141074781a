"""planc: trace PyTorch into typed plans and run them over secret-shared tensors.

The front end lives here (tracing, the command line); the language is `planc.ir` and
the engine `planc.runtime`.

Every name below is imported on first use (PEP 562): `import planc.runtime.session` or
`import planc.ir.graph` runs this file first, and must not pull in the tracer, the
compiler's passes or torch.fx with it (layers point one way: planc -> planc.runtime ->
planc.ir; tests/test_layering.py checks it).
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> (module, attribute path in it; None for the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "Graph": ("planc.ir.graph", "Graph"),
    "Loc": ("planc.ir.graph", "Loc"),
    "Node": ("planc.ir.graph", "Node"),
    "Region": ("planc.ir.graph", "Region"),
    "Value": ("planc.ir.graph", "Value"),
    "PUBLIC": ("planc.ir.types", "PUBLIC"),
    "SECRET": ("planc.ir.types", "SECRET"),
    "TensorType": ("planc.ir.types", "TensorType"),
    "Vis": ("planc.ir.types", "Vis"),
    "private": ("planc.ir.types", "private"),
    "VerifyError": ("planc.ir.verify", "VerifyError"),
    "verify": ("planc.ir.verify", "verify"),
    "PlanFunction": ("planc.api", "PlanFunction"),
    "plan": ("planc.api", "plan"),
    "run_local": ("planc.api", "run_local"),
    "run_reference": ("planc.api", "run_reference"),
    "trace": ("planc.api", "trace"),
    "TraceError": ("planc.errors", "TraceError"),
    "fori_loop": ("planc.shells", "fori_loop"),
    "grad": ("planc.autodiff.api", "grad"),
    "value_and_grad": ("planc.autodiff.api", "value_and_grad"),
    "load": ("planc.shells", "load"),
    "load_model": ("planc.shells", "load_model"),
    "owned": ("planc.shells", "owned"),
    "public": ("planc.shells", "public"),
    "reveal": ("planc.shells", "reveal"),
    "scan": ("planc.shells", "scan"),
    "share": ("planc.shells", "share"),
    "spec": ("planc.shells", "spec"),
    "weights": ("planc.weights", None),
    "export_weights": ("planc.weights", "export_weights"),
    "weights_of": ("planc.weights", "weights_of"),
    "Plan": ("planc.plans", "Plan"),
    "PlanFormatError": ("planc.ir.plan", "PlanFormatError"),
    "read_plan": ("planc.plans", "Plan.read"),
    "compile": ("planc.compile", "compile"),
    "Policy": ("planc.ir.policy", "Policy"),
    "PolicyError": ("planc.ir.policy", "PolicyError"),
    "save_data": ("planc.weights", "save_data"),
    "load_data": ("planc.weights", "load_data"),
    "datasets": ("planc.datasets", None),
    "optim": ("planc.optim", None),
    "from_onnx": ("planc.onnx.api", "from_onnx"),
    "Cluster": ("planc.cluster", "Cluster"),
    "ClusterError": ("planc.cluster", "ClusterError"),
    "Client": ("planc.serving", "Client"),
    "ServingError": ("planc.serving", "ServingError"),
}

__all__ = list(_LAZY)

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ below does this
    from planc.ir.graph import Graph, Loc, Node, Region, Value
    from planc.ir.types import PUBLIC, SECRET, TensorType, Vis, private
    from planc.ir.verify import VerifyError, verify
    from planc.api import PlanFunction, plan, run_local, run_reference, trace
    from planc.errors import TraceError
    from planc.autodiff.api import grad, value_and_grad
    from planc.shells import fori_loop, load, load_model, owned, public, reveal, scan, share, spec
    from planc.weights import export_weights, load_data, save_data, weights_of
    from planc.plans import Plan
    from planc.ir.plan import PlanFormatError
    from planc.compile import compile
    from planc.ir.policy import Policy, PolicyError
    from planc.cluster import Cluster, ClusterError
    from planc.serving import Client, ServingError
    from planc.onnx.api import from_onnx
    from . import weights, datasets, optim
    read_plan = Plan.read


def __getattr__(name: str):
    if name not in _LAZY:
        # a submodule (planc.tracer, planc.ir, ...): `import planc` used to bind many of them
        if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
            return importlib.import_module(f"{__name__}.{name}")
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        value = getattr(value, part)
    globals()[name] = value  # from now on a plain attribute
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """The type of this package's module object, for one reason: `planc.compile` is both a
    function (`planc.compile(plan)`) and a submodule (planc/compile.py). Importing the
    submodule makes the import system bind it on the package, ``setattr(planc, "compile",
    <module>)``; with eager imports the function was bound after that, now it may happen
    at any time, so the binding is turned into the function here."""

    def __setattr__(self, name, value):
        module, attr = _LAZY.get(name, (None, None))
        if isinstance(value, types.ModuleType) and value.__name__ == module == f"{__name__}.{name}" and attr:
            value = getattr(value, attr)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
