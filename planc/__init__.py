"""planc: trace PyTorch into typed plans and run them over secret-shared tensors.

The front end lives here (tracing, the command line); the language is `planc.ir` and
the engine `planc.runtime`.
"""
from planc.ir.graph import Graph, Loc, Node, Region, Value
from planc.ir.types import PUBLIC, SECRET, TensorType, Vis, private
from planc.ir.verify import VerifyError, verify

from .compile import compile
from .api import PlanFunction, plan, run_local, run_reference, trace
from .errors import TraceError
from .shells import fori_loop, load, load_model, owned, public, reveal, scan, share, spec
from . import datasets, weights
from .weights import export_weights, load_data, save_data, weights_of
from .plans import Plan
from planc.ir.plan import PlanFormatError

from planc.ir.policy import Policy, PolicyError

read_plan = Plan.read

__version__ = "0.1.0"

__all__ = [
    "Graph", "Loc", "Node", "Region", "Value", "PUBLIC", "SECRET", "TensorType", "Vis", "private",
    "VerifyError", "verify", "PlanFunction", "plan", "run_local", "run_reference", "trace", "TraceError", "fori_loop", "load",
    "load_model", "owned", "public", "reveal", "scan", "share", "spec", "weights", "export_weights", "weights_of",
    "Plan", "PlanFormatError", "read_plan", "compile", "Policy", "PolicyError", "save_data", "load_data", "datasets",
]

