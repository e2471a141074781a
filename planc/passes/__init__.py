"""Compiler passes: each a small frozen dataclass with a `name` and `run(graph) -> graph`.

A pipeline is named by a string of comma-separated pass names (``DEFAULT_PIPELINE``
below is the one `planc.compile` and `planc compile` run unless told otherwise);
``PASSES`` maps each name to its class. Passes never mutate: IR values are immutable
and every pass returns a new graph (or the same one when nothing changed).
"""
from __future__ import annotations

from .base import Pass, PASSES, parse_pipeline, register  # noqa: F401
from . import comparisons, cse, dce, fold, identities, constfold, licm, policy_pass, simplify, unroll, verify_pass, visibility  # noqa: F401,E402

# fold before visibility: the first trip of an unrolled loop often differs only in
# visibility (a private initial value), and folding wants identical copies
DEFAULT_PIPELINE = "verify,policy,fold-loops,visibility,licm,simplify,verify"
