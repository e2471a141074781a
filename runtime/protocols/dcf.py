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

Why it works (induction over the levels): after level i, if x's top i bits equal
alpha's, the walks stand on the same node with t_0 xor t_1 = 1, and V_0 - V_1 (the
(-1)^b signs) equals V_alpha plus beta * [x < alpha so far] (0 on alpha's path). If x
left alpha's path at level i, s_CW and t_CW^Lose make the two walks' seeds and control
bits equal at that child (s^Lose_0 xor s^Lose_1 = s_CW is added by exactly the party
with t = 1), so from there on both compute the same terms and cancel; V_CW is chosen so
that, at that child, the sum of the parties' V is exactly beta when the child is the
left one (x_i = 0 < alpha_i = 1: x < alpha) and 0 when it is the right one (x > alpha).
The Keep child's control bits stay different (t_CW^Keep is chosen so), V_alpha tracks
what the Keep child adds, so at the leaf x = alpha (not less) CW_{n+1} cancels it to 0.
Checked against the plaintext in tests/test_fss.py (edges x = alpha, alpha = 0,
alpha = 2^n - 1, n = 1 .. 40).

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

Two output words (beta a pair (beta_0, beta_1): the same tree gives [x < alpha] beta_0
and [x < alpha] beta_1): the value block's high half converts to the second word, and
the leaf's second word is the seed's high word, so the second output costs no AES, only
one more V_CW a level and one more CW_{n+1}: n (16 + 16) + 16 B, 1296 B for n = 40.

Layout: seeds (N, 2) int64 (low word first), worked on word-major (one contiguous array
per word: numpy runs elementwise ops over (N, 2) rows several times slower, so blocks are
transposed only for the AES call); correction words ((2 + k) n + k, N) int64 (k output
words), level-major so that every step reads contiguous rows: row (2 + k) i = s_CW low
word | t_CW^L | t_CW^R << 1, then s_CW's high word, then V_CW of each output word; the
last k rows CW_{n+1}.
"""
from __future__ import annotations

import hashlib

import numpy as np

from .. import prg

__all__ = ["KEY", "cw_rows", "eval_dcf", "gen_dcf"]

KEY = hashlib.sha256(b"planc dcf fixed AES key").digest()[:16]  # public: MMO needs no secret key
_CLEAR = np.uint64(~np.uint64(3))
_ONE = np.uint64(1)


def cw_rows(nbits: int, k: int = 1) -> int:
    """Rows of correction words for an n-bit DCF with k output words (k = 1 or 2)."""
    return (2 + k) * nbits + k


def _u64(a) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint64)


def _seeds(s):
    """Root seeds (N, 2) as two uint64 words (low, high), bits 0-1 of the low one cleared
    (copies: word-major, so that every step runs over contiguous arrays)."""
    s = _u64(s).reshape(-1, 2)
    lo = s[:, 0] & _CLEAR
    return lo, np.ascontiguousarray(s[:, 1])


def _sign(t: np.ndarray) -> np.ndarray:
    """(-1)^t in Z_2^64 for t in {0, 1} (uint64)."""
    return np.uint64(1) - (t << _ONE)


def _mmo(words: np.ndarray) -> np.ndarray:
    """AES_K of the blocks given word-major (..., 2 k, N): word 2j / 2j + 1 = the low /
    high half of block j of each element; the result in the same layout (before the xor
    with the seed). Blocks are made contiguous for the ECB call and back (numpy copies a
    transpose far faster than it runs elementwise ops over 2-word rows)."""
    lead = words.shape[:-2]
    k2, N = words.shape[-2:]
    blocks = np.ascontiguousarray(np.swapaxes(words, -1, -2))  # (..., N, 2 k)
    out = prg.aes_ecb(KEY, blocks)
    return np.ascontiguousarray(np.swapaxes(out.reshape(lead + (N, k2)), -1, -2))


def gen_dcf(alpha, beta, s0, s1, nbits: int) -> np.ndarray:
    """Correction words (cw_rows(n, k), N) int64 of the DCFs f_{alpha,beta} (N each), for
    the parties' root seeds s0, s1 (N, 2). alpha < 2^nbits (unsigned); beta (N,) ring
    elements, or (k, N) for k = 2 output words at once (the same tree: the value block's
    two halves convert to two words, so the second costs no AES, only 8 B a level)."""
    alpha = _u64(alpha).reshape(-1)
    N = alpha.shape[0]
    beta = _u64(beta).reshape(-1, N)
    k = beta.shape[0]
    if k not in (1, 2):
        raise ValueError(f"a DCF gives 1 or 2 output words, not {k}")
    (l0, h0), (l1, h1) = _seeds(s0), _seeds(s1)
    lo, hi = np.stack([l0, l1]), np.stack([h0, h1])  # (2 parties, N)
    t = np.zeros((2, N), np.uint64)
    t[1] = 1
    V = np.zeros((k, N), np.uint64)
    rows = 2 + k
    cw = np.empty((cw_rows(nbits, k), N), np.uint64)
    inp = np.empty((2, 8, N), np.uint64)  # blocks j = 0..3 (L seed, L value, R seed, R value)
    vw = ((2, 6), (3, 7))[:k]  # the value words (left, right) of each output word
    with np.errstate(over="ignore"):
        for i in range(nbits):
            a = (alpha >> np.uint64(nbits - 1 - i)) & _ONE  # (N,)
            am = np.uint64(0) - a  # all ones where alpha_i = 1: Keep = R
            for j in range(4):
                np.bitwise_xor(lo, np.uint64(j), out=inp[:, 2 * j])
                inp[:, 2 * j + 1] = hi
            out = _mmo(inp)
            for w in (0, 1, 4, 5) + sum(vw, ()):  # MMO: xor the seed back (values: the words used)
                out[:, w] ^= hi if w in (1, 5, 3, 7) else lo
            tl, tr = out[:, 0] & _ONE, out[:, 4] & _ONE  # (2, N) control bits
            out[:, 0] &= _CLEAR
            out[:, 4] &= _CLEAR
            # Keep / Lose by masks, no gathers: keep = L xor ((L xor R) & am)
            keep, lose = {}, {}
            for name, (wl, wr) in {"lo": (0, 4), "hi": (1, 5), **{f"v{j}": vw[j] for j in range(k)}}.items():
                d = out[:, wl] ^ out[:, wr]
                keep[name] = out[:, wl] ^ (d & am)
                lose[name] = keep[name] ^ d
            sg = _sign(t[1])
            cw_lo = lose["lo"][0] ^ lose["lo"][1]
            cw_hi = lose["hi"][0] ^ lose["hi"][1]
            cw[rows * i] = cw_lo | (tl[0] ^ tl[1] ^ a ^ _ONE) | ((tr[0] ^ tr[1] ^ a) << _ONE)
            cw[rows * i + 1] = cw_hi
            for j in range(k):
                v = f"v{j}"
                # Lose = L exactly when alpha_i = 1: leaving alpha's path to the left adds beta
                v_cw = sg * (lose[v][1] - lose[v][0] - V[j]) + sg * beta[j] * a
                V[j] = V[j] - keep[v][1] + keep[v][0] + sg * v_cw
                cw[rows * i + 2 + j] = v_cw
            t_cw_l = tl[0] ^ tl[1] ^ a ^ _ONE
            t_cw_r = tr[0] ^ tr[1] ^ a
            t_cw_keep = t_cw_l ^ ((t_cw_l ^ t_cw_r) & a)
            t_keep = tl ^ ((tl ^ tr) & a)  # (2, N)
            tm = np.uint64(0) - t  # all ones where t_b = 1
            lo = keep["lo"] ^ (cw_lo & tm)
            hi = keep["hi"] ^ (cw_hi & tm)
            t = t_keep ^ (t & t_cw_keep)
        for j, (w0, w1) in enumerate(((lo[0], lo[1]), (hi[0], hi[1]))[:k]):  # the leaf's seed words, converted
            cw[rows * nbits + j] = _sign(t[1]) * (w1 - w0 - V[j])
    return cw.view(np.int64)


def eval_dcf(b: int, s_root, cw, x, nbits: int) -> np.ndarray:
    """Party b's shares of f_{alpha,beta}(x) for public x (N,) < 2^nbits, from its root
    seeds (N, 2) and the correction words (cw_rows(n, k), N): (N,) int64 for k = 1,
    (2, N) for k = 2 (the number of words is read off the correction words' rows)."""
    x = _u64(x).reshape(-1)
    cw = _u64(cw)
    N = x.shape[0]
    k = next(k for k in (1, 2) if cw.shape[0] == cw_rows(nbits, k))
    rows = 2 + k
    lo, hi = _seeds(s_root)
    t = np.full(N, b, np.uint64)
    V = np.zeros((k, N), np.uint64)
    inp = np.empty((4, N), np.uint64)  # the side x_i selects: its seed block and value block
    tmp = np.empty(N, np.uint64)
    with np.errstate(over="ignore"):
        for i in range(nbits):
            xi = (x >> np.uint64(nbits - 1 - i)) & _ONE
            np.left_shift(xi, _ONE, out=inp[0])  # tweak 2 x_i (seed), 2 x_i + 1 (value)
            inp[0] ^= lo
            np.bitwise_xor(inp[0], _ONE, out=inp[2])
            inp[1] = hi
            inp[3] = hi
            out = _mmo(inp)
            out[0] ^= lo
            out[1] ^= hi
            out[2] ^= lo
            if k == 2:
                out[3] ^= hi
            row = cw[rows * i]
            np.right_shift(row, xi, out=tmp)  # t_CW^{x_i} in bit 0
            tmp &= t
            tmp &= _ONE
            tn = out[0] & _ONE
            tn ^= tmp  # t^{x_i} xor t t_CW^{x_i}
            tm = np.uint64(0) - t  # all ones where t = 1
            np.bitwise_and(row, tm, out=tmp)
            tmp ^= out[0]
            tmp &= _CLEAR
            lo, tmp = tmp, lo  # s^{x_i} xor t s_CW (low word; the control bits cleared)
            hi = out[1] ^ (cw[rows * i + 1] & tm)
            for j in range(k):
                V[j] += out[2 + j]
                V[j] += t * cw[rows * i + 2 + j]
            t = tn
        V[0] += lo + t * cw[rows * nbits]
        if k == 2:
            V[1] += hi + t * cw[rows * nbits + 1]
    if b:
        V = np.uint64(0) - V  # (-1)^b on every term: summed, then negated once
    return (V[0] if k == 1 else V).view(np.int64)
