"""Secret-shared protocols, one file per family; importing this registers them all.

    core.py      the share type (Shared, ABSENT), exchanges (Ex), registration
                 (protocol, bound), merge/split/par/local
    common.py    openings, free sharing, the one truncation, pending-scale helpers
    sharing.py   share, reveal
    linear.py    add/sub/neg, sum/mean, div, pooling, batch_norm, pad/cat/stack
    beaver.py    products: mul, matmul, linear, conv2d (their bilinear maps on the ops)
    signbit.py   sign_bit, zero_bit, relu_ring (dealer-assisted bit extraction)
    compare.py   relu, comparisons, where, max/argmax, max_pool2d
    gather.py    gather (embedding): local by a public index, one-hot products otherwise
    approx/      exp, reciprocal, log, sqrt, sigmoid, tanh, softmax, log_softmax,
                 erf, gelu, layer_norm
"""
from . import approx, beaver, compare, gather, linear, sharing  # noqa: F401
from .approx import exp, gauss, log, norm, reciprocal, roots, sigmoid, softmax  # noqa: F401
