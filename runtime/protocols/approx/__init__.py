"""Non-linear functions on secret fixed-point values: exp, log, reciprocal, sqrt (and
rsqrt for batch_norm), sigmoid, tanh, softmax, log_softmax, erf, gelu, layer_norm.

One file per family, each with its math and its bound in its docstring, registering its
protocol with ``@protocol(OP.x)`` and its bound with ``bound(OP.x, ...)`` next to it:

    engine.py      masked openings, monomials, truncation by opening (Ctx), Box/Lazy,
                   thresholds and bands (sign_bit batches)
    exp.py         exp; exp_chain (softmax, sigmoid)
    reciprocal.py  reciprocal; goldschmidt (softmax, sigmoid)
    log.py         log; log_parts (log_softmax)
    softmax.py     softmax, log_softmax
    sigmoid.py     sigmoid, tanh
    roots.py       sqrt; rsqrt (batch_norm, linear.py)
    gauss.py       erf, gelu (both forms): saturating functions, banded polynomials
    norm.py        layer_norm (rsqrt of the row variance)

``ERROR`` (below) gives every bound by op name, derived from the registrations (and
rsqrt's ``roots.RSQRT``); tests/test_approx.py measures them and checks this table and
each family's docstring against them. A bound is for the fixed-point input the protocol
receives (a float input first rounds to a multiple of 2^-f, which adds |f'(x)| 2^-(f+1)),
with f = 16: |result - f(x)| <= ABS + REL |f(x)|. Costs per element are for 2 parties
(sent by each party / sent by the dealer before the online phase); "max" is
compare.max_dim's rounds (8 for n = 10).

    op           range                  ABS     REL     rounds              bytes sent / dealer
    exp          x <= 12 (0 below -16)  2^-15   2^-13   9                   137 / 430
    reciprocal   2^-8 <= |x| < 2^16     2^-14   2^-14   12                  182 / 830
    log          2^-12 <= x < 2^16      2^-14   -       7                   209 / 1600
    sqrt         0 <= x < 2^16          2^-14   2^-16   8                   267 / 1900
    rsqrt        2^-16 <= x < 2^16      2^-14   2^-16   8                   267 / 1900
    sigmoid      |x| < 2^23             2^-14   -       10                  225 / 500
    tanh         |x| < 2^22             2^-13   -       10                  225 / 500
    softmax      |x| < 2^23             2^-14   -       max + 12 (n = 10)   small (per row)
    log_softmax  |x| < 2^23             2^-14   -       max + 12 (n = 10)   small (per row)
    erf          |x| < 2^23             2^-14   -       7                   194 / 990
    gelu         |x| < 2^23             2^-14   -       7                   237 / 1390
    layer_norm   rows with 2^-6 <= var + eps < 2^8, |weight| <= 2, |f(x)| read as |g|  2^-11  2^-8  10  3 products + rsqrt per row

With more parties each truncation costs a round; the engine folds a pending truncation
into the next opening of the value (both are one opening of d + r), so a function costs
1 or 2 rounds more than with 2 parties.
"""
from __future__ import annotations

from planc.ir import ops

from . import engine, exp, gauss, log, norm, reciprocal, roots, sigmoid, softmax  # noqa: F401  (each registers its ops)

FAMILIES = (exp, reciprocal, log, roots, sigmoid, softmax, gauss, norm)

# bounds by name: every registered one, and rsqrt's (no op of its own)
BOUNDS = {d.name: d.rule("bound") for d in ops.REGISTRY.values() if d.rule("bound")}
BOUNDS["rsqrt"] = roots.RSQRT

# |result - f(x)| <= ABS + REL |f(x)|, by op name, for the tests and benchmarks
ERROR = {name: (b.abs, b.rel) for name, b in BOUNDS.items()}
