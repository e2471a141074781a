"""planc: trace PyTorch into typed plans and run them over secret-shared tensors.

The front end lives here (tracing, the command line); the language is `planc.ir` and
the engine `planc.runtime`.
"""
from planc.ir.graph import Graph, Loc, Node, Region, Value
from planc.ir.types import PUBLIC, SECRET, TensorType, Vis, private
from planc.ir.verify import VerifyError, verify

from .api import PlanFunction, plan, run_reference, trace
from .errors import TraceError
from .shells import fori_loop, load, load_model, owned, public, reveal, share, spec

__version__ = "0.1.0"

__all__ = [
    "Graph", "Loc", "Node", "Region", "Value", "PUBLIC", "SECRET", "TensorType", "Vis", "private",
    "VerifyError", "verify", "PlanFunction", "plan", "run_reference", "trace", "TraceError", "fori_loop", "load",
    "load_model", "owned", "public", "reveal", "share", "spec",
]


def __getattr__(name):
    # heavier pieces load on first use
    if name in ("Plan", "PlanFormatError", "read_plan"):
        from planc.ir import plan as _p

        return {"Plan": _p.Plan, "PlanFormatError": _p.PlanFormatError, "read_plan": _p.Plan.read}[name]
    raise AttributeError(f"module 'planc' has no attribute {name!r}")
