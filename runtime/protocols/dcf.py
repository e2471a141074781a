"""A distributed comparison function (DCF): function secret sharing of x -> [x < alpha] * beta.

Boyle, Chandran, Gilboa, Gupta, Ishai, Kumaresan, Wu, "Function Secret Sharing for
Mixed-Mode and Fixed-Point Secure Computation" (Eurocrypt 2021), Fig. 3 (as used by
AriaNN, Orca and SIGMA). Keys (k0, k1) for

    f_{alpha,beta}(x) = beta if x < alpha else 0,   x, alpha n-bit unsigned, beta in Z_2^64,

such that Eval(0, k0, x) + Eval(1, k1, x) = f(x) (mod 2^64) for every x, while each key
alone is pseudo-random (it hides alpha and beta).

Tree. Both parties walk the binary tree of x from its top bit, each holding a seed s_b
(128 bits, bits 0-1 zero: lambda = 126) and a control bit t_b (t_0 = 0, t_1 = 1 at the
root). Off alpha's path the two walks meet (equal seeds, equal control bits) and their
value words cancel; on it, t_0 xor t_1 = 1. The dealer's correction word of level i,

    CW_i = (s_CW, V_CW, t_CW^L, t_CW^R)    and    CW_{n+1},

is THE SAME in both keys: a key is its root seed plus the shared correction words.

Gen (alpha_i: bit i of alpha from the top, V_alpha = 0, "Lose" = the side off alpha's path):
    (s^L_b, v^L_b, t^L_b, s^R_b, v^R_b, t^R_b) = G(s_b)
    Keep, Lose = (L, R) if alpha_i = 0 else (R, L)
    s_CW = s^Lose_0 xor s^Lose_1
    V_CW = (-1)^t_1 (v^Lose_1 - v^Lose_0 - V_alpha) + (-1)^t_1 beta [Lose = L]
    V_alpha = V_alpha - v^Keep_1 + v^Keep_0 + (-1)^t_1 V_CW
    t_CW^L = t^L_0 xor t^L_1 xor alpha_i xor 1,   t_CW^R = t^R_0 xor t^R_1 xor alpha_i
    s_b = s^Keep_b xor t_b s_CW,   t_b = t^Keep_b xor t_b t_CW^Keep
    CW_{n+1} = (-1)^t_1 (s_1 - s_0 - V_alpha)                       (seeds converted)

Eval_b (x_i: bit i of x from the top):
    (s^L, v^L, t^L, s^R, v^R, t^R) = G(s), only the side x_i computed
    V += (-1)^b (v^{x_i} + t V_CW);  s = s^{x_i} xor t s_CW;  t = t^{x_i} xor t t_CW^{x_i}
    finally V += (-1)^b (s + t CW_{n+1}).

Why it works: Gen keeps the invariant that, at alpha's node of level i, (-1)^0 V_0 +
(-1)^1 ... i.e. the sum of the parties' V so far is V_alpha-corrected to 0, and that a
child off alpha's path has equal seeds and control bits in both walks (s_CW and t_CW
make them so) — its values then cancel forever. Leaving alpha's path to the LEFT
(x_i = 0 < alpha_i = 1) means x < alpha: that child's V_CW adds beta. At the leaf on
alpha's path (x = alpha: not less) CW_{n+1} cancels what is left. Checked against the
plaintext in tests/test_fss.py (edges x = alpha, alpha = 0, alpha = 2^n - 1).

PRG. Fixed-key AES-128 in Matyas-Meyer-Oseas mode, G_j(s) = AES_K(s xor j) xor s with
the public key K and tweak j in bits 0-1 (zero in every seed, so the four inputs of a
seed are distinct): j = 0/1 give the left child's seed block (its bit 0 is the control
bit, then bits 0-1 are cleared) and value block, j = 2/3 the right child's. Convert(v)
is the block's low 64 bits. Eval computes only the side x_i selects: 2 AES blocks per
level per element, one ECB call per level over all elements (runtime/prg.aes_ecb); Gen
all four sides for both seeds, 8 blocks per level per element, one call per level.

Key size, per element, n bits: root seed 16 B (each party its own) + n (16 + 8) + 8 B of
correction words (t_CW^L, t_CW^R ride in bits 0-1 of s_CW's low word, which a seed's
xor has zero). n = 40: 968 B of correction words, the same for both parties.

Layout: seeds (N, 2) int64 (low word first); correction words (3 n + 1, N) int64, level-
major so that every step reads contiguous rows: row 3i = s_CW low word | t_CW^L | t_CW^R
<< 1, 3i + 1 = s_CW high word, 3i + 2 = V_CW; row 3n = CW_{n+1}.
"""
from __future__ import annotations

import hashlib

import numpy as np

from .. import prg

__all__ = ["KEY", "cw_rows", "eval_dcf", "gen_dcf"]

KEY = hashlib.sha256(b"planc dcf fixed AES key").digest()[:16]  # public: MMO needs no secret key
_CLEAR = np.uint64(~np.uint64(3))
_ONE = np.uint64(1)


def cw_rows(nbits: int) -> int:
    """Rows of correction words for an n-bit DCF."""
    return 3 * nbits + 1


def _u64(a) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint64)


def _seeds(s) -> np.ndarray:
    """Root seeds (N, 2) as uint64 with bits 0-1 cleared (a copy)."""
    s = np.array(_u64(s), copy=True).reshape(-1, 2)
    s[:, 0] &= _CLEAR
    return s


def _sign(t: np.ndarray) -> np.ndarray:
    """(-1)^t in Z_2^64 for t in {0, 1} (uint64)."""
    return np.uint64(1) - (t << _ONE)


def gen_dcf(alpha, beta, s0, s1, nbits: int) -> np.ndarray:
    """Correction words (3 n + 1, N) int64 of the DCFs f_{alpha,beta} (N each), for the
    parties' root seeds s0, s1 (N, 2). alpha < 2^nbits (unsigned), beta any ring element."""
    alpha, beta = _u64(alpha).reshape(-1), _u64(beta).reshape(-1)
    N = alpha.shape[0]
    s = np.stack([_seeds(s0), _seeds(s1)])  # (2, N, 2)
    t = np.zeros((2, N), np.uint64)
    t[1] = 1
    V = np.zeros(N, np.uint64)
    cw = np.empty((cw_rows(nbits), N), np.uint64)
    tweak = np.arange(4, dtype=np.uint64).reshape(1, 1, 4)
    with np.errstate(over="ignore"):
        for i in range(nbits):
            a = (alpha >> np.uint64(nbits - 1 - i)) & _ONE  # (N,)
            blk = np.repeat(s[:, :, None, :], 4, axis=2)  # (2, N, 4, 2)
            blk[..., 0] ^= tweak
            out = prg.aes_ecb(KEY, blk)
            out ^= s[:, :, None, :]
            tc = out[:, :, 0::2, 0] & _ONE  # (2, N, 2): control bits of L, R
            seed = out[:, :, 0::2, :]  # (2, N, 2 sides, 2 words)
            seed[..., 0] &= _CLEAR
            v = out[:, :, 1::2, 0]  # (2, N, 2 sides)
            keep = a.astype(np.intp)  # side index kept: alpha_i
            idx = np.arange(N)
            s_keep, s_lose = seed[:, idx, keep], seed[:, idx, 1 - keep]  # (2, N, 2)
            v_keep, v_lose = v[:, idx, keep], v[:, idx, 1 - keep]  # (2, N)
            sg = _sign(t[1])
            s_cw = s_lose[0] ^ s_lose[1]
            v_cw = sg * (v_lose[1] - v_lose[0] - V) + sg * beta * a  # Lose = L exactly when alpha_i = 1
            V = V - v_keep[1] + v_keep[0] + sg * v_cw
            t_cw_l = tc[0, :, 0] ^ tc[1, :, 0] ^ a ^ _ONE
            t_cw_r = tc[0, :, 1] ^ tc[1, :, 1] ^ a
            t_cw_keep = np.where(a == 1, t_cw_r, t_cw_l)
            t_keep = tc[:, idx, keep]  # (2, N)
            s = s_keep ^ (s_cw[None] * t[:, :, None])
            t = t_keep ^ (t * t_cw_keep[None])
            cw[3 * i] = s_cw[:, 0] | t_cw_l | (t_cw_r << _ONE)
            cw[3 * i + 1] = s_cw[:, 1]
            cw[3 * i + 2] = v_cw
        cw[3 * nbits] = _sign(t[1]) * (s[1, :, 0] - s[0, :, 0] - V)
    return cw.view(np.int64)


def eval_dcf(b: int, s_root, cw, x, nbits: int) -> np.ndarray:
    """Party b's shares (N,) int64 of f_{alpha,beta}(x) for public x (N,) < 2^nbits, from
    its root seeds (N, 2) and the correction words (3 n + 1, N)."""
    x = _u64(x).reshape(-1)
    cw = _u64(cw)
    N = x.shape[0]
    s = _seeds(s_root)
    t = np.full(N, b, np.uint64)
    V = np.zeros(N, np.uint64)
    blk = np.empty((N, 2, 2), np.uint64)
    with np.errstate(over="ignore"):
        for i in range(nbits):
            xi = (x >> np.uint64(nbits - 1 - i)) & _ONE
            blk[:, 0, :] = s
            blk[:, 1, :] = s
            side = xi << _ONE  # tweak 2 x_i (seed), 2 x_i + 1 (value)
            blk[:, 0, 0] ^= side
            blk[:, 1, 0] ^= side | _ONE
            out = prg.aes_ecb(KEY, blk)
            out ^= s[:, None, :]
            row = cw[3 * i]
            tn = (out[:, 0, 0] & _ONE) ^ (t & (row >> xi) & _ONE)  # t^{x_i} xor t t_CW^{x_i}
            mask = np.uint64(0) - t  # all ones where t = 1
            s = out[:, 0, :]
            s[:, 0] &= _CLEAR
            s[:, 0] ^= row & _CLEAR & mask
            s[:, 1] ^= cw[3 * i + 1] & mask
            V += out[:, 1, 0] + t * cw[3 * i + 2]
            s = np.ascontiguousarray(s)
            t = tn
        V += s[:, 0] + t * cw[3 * nbits]
    if b:
        V = np.uint64(0) - V  # (-1)^b on every term: summed, then negated once
    return V.view(np.int64)
