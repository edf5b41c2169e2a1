"""Numba backend: fused softmax / cross-entropy / linear-model kernels, JIT-compiled and cached.

Design
------
* Per-row maths (max, sum of exp, log-sum-exp) is done in float64 whatever the input dtype; the
  matrix products (X coef^T and G^T X) run in the working dtype with vectorised FMAs and tiles of
  2 rows x 4 classes (forward) or 8 rows x 2 classes (backward), which keep the loads per FMA
  low enough for L1 to feed the FMA units.
* ``exp``/``log`` are our own branch-free float64 versions (<= 1 ulp over the range used) so that
  LLVM vectorises the row loops; libm calls would stay scalar (about 12 ns each).
* Determinism: every parallel loop runs over tiles whose shape depends only on the problem shape
  (see ``_numba_config``); a tile writes only its own outputs and every reduction over tiles
  (loss partials, logits partials over feature blocks) is summed serially in tile order. No
  prange reduction variables are used (their per-thread partials depend on the thread count),
  and no loop both stores and accumulates a scalar: LLVM guards such loops with a runtime
  alias check whose scalar fallback sums in another order, so the result would depend on
  where the heap placed the buffers (seen as rare 1-ulp differences between identical calls).
  Hence results are bitwise identical for any ``n_threads``, which also lets small problems run
  on one thread without changing the result.
* ``sgd_epoch`` runs the whole epoch in one compiled call. The features are cut into a fixed
  number of blocks; a single parallel region per minibatch does, for each block, the backward
  pass and weight update of the previous batch and the forward pass (partial logits) of this
  batch, and prefetches the next batch's rows. Between regions the calling thread sums the
  partial logits in block order and computes the softmax, so there is one region launch
  (about 1 us with the OpenMP layer) per batch.
* BLAS (numba's np.dot) is not used: at batch 32 the tiles match OpenBLAS for the forward pass,
  and calling OpenBLAS from prange threads oversubscribes the cores at batch >= 256 (OpenBLAS
  starts its own threads), which was 10x slower when measured.
"""

import math

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from ._numba_config import (
    CHUNK_ELEMS,
    CLASS_TILE,
    FEATURE_BLOCK,
    JIT,
    MIN_WORK_PER_THREAD,
    PJIT,
    ROW_TILE,
    SOFTMAX_BLOCK_ELEMS,
)

__all__ = ["softmax", "log_softmax", "softmax_ce", "linear_softmax_ce", "sgd_epoch"]

_NO_WEIGHTS = np.empty(0, dtype=np.float64)
_MAX_THREADS = numba.config.NUMBA_NUM_THREADS


# --------------------------------------------------------------------------------------
# Scalar building blocks
# --------------------------------------------------------------------------------------
@intrinsic
def _i64_as_f64(typingctx, i):
    """Reinterpret the bits of an int64 as a float64 (vectorisable, unlike frexp/ldexp)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


@intrinsic
def _f64_as_i64(typingctx, x):
    """Reinterpret the bits of a float64 as an int64."""
    sig = types.int64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return sig, codegen


@intrinsic
def _prefetch(typingctx, arr, i, j):
    """Hint the CPU to load the cache line holding ``arr[i, j]`` (no effect on results)."""
    sig = types.void(arr, i, j)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = numba.core.cgutils.get_item_pointer(
            context, builder, aryty, ary, [args[1], args[2]], wraparound=False
        )
        i32 = ir.IntType(32)
        i8p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = numba.core.cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # read, locality 2 (prefetcht1: L2 and outward; t0 evicted the tile's working set)
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(2), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


if numba.config.DISABLE_JIT:  # pure-Python fallbacks (debugging with NUMBA_DISABLE_JIT=1)

    def _i64_as_f64(i):  # noqa: F811
        return np.int64(i).view(np.float64)

    def _f64_as_i64(x):  # noqa: F811
        return np.float64(x).view(np.int64)

    def _prefetch(arr, i, j):  # noqa: F811
        pass


_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that k * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10
(_E2, _E3, _E4, _E5, _E6, _E7, _E8, _E9, _E10, _E11, _E12, _E13) = (
    1.0 / math.factorial(k) for k in range(2, 14)
)
_SQRT2 = 1.4142135623730951
(_LG1, _LG2, _LG3, _LG4, _LG5, _LG6, _LG7) = (  # fdlibm e_log.c
    6.666666666666735130e-01, 3.999999999940941908e-01, 2.857142874366239149e-01,
    2.222219843214978396e-01, 1.818357216161805012e-01, 1.531383769920937332e-01,
    1.479819860511658591e-01,
)


# These two carry only "contract" (see _shifted_minus below for why that protects them from
# the callers' flags): reassociation would undo the Cody-Waite range reduction.
@njit(fastmath={"contract"}, error_model="numpy", cache=True, inline="never")
def _exp(x):
    """exp(x) in float64 for x <= 0 (shifted logits), NaN -> NaN, -inf -> 0.

    1. x = k ln2 + r with k = rint(x / ln2), |r| <= ln2 / 2 (two-part ln2, exact k ln2_hi).
    2. exp(r) by its Taylor polynomial to degree 13 (truncation < 1e-17 relative).
    3. 2^k applied as two factors 2^h 2^(k-h) so results in the subnormal range round once.
    """
    x = -746.0 if x < -746.0 else x  # below -745.14 the result rounds to 0; NaN passes
    kf = np.rint(x * _LOG2E)
    r = (x - kf * _LN2_HI) - kf * _LN2_LO
    p = _E13
    p = p * r + _E12
    p = p * r + _E11
    p = p * r + _E10
    p = p * r + _E9
    p = p * r + _E8
    p = p * r + _E7
    p = p * r + _E6
    p = p * r + _E5
    p = p * r + _E4
    p = p * r + _E3
    p = p * r + _E2
    p = p * r + 1.0
    p = p * r + 1.0
    # clamp what is converted to an integer (NaN -> -1100, harmless: p is NaN then)
    kc = kf if kf > -1100.0 else -1100.0
    kc = kc if kc < 1100.0 else 1100.0
    k = np.int64(kc)
    h = k >> 1
    return p * _i64_as_f64((h + 1023) << 52) * _i64_as_f64((k - h + 1023) << 52)


@njit(fastmath={"contract"}, error_model="numpy", cache=True, inline="never")
def _log(s):
    """log(s) in float64 for normal s > 0 (sums of exp, s >= 1); NaN and +inf pass through.

    fdlibm's scheme, written without branches on the data:
    1. s = 2^e m with m in [sqrt(1/2), sqrt(2)) read from the bits; f = m - 1 (exact).
    2. log(1 + f) = f - (f^2/2 - t (f^2/2 + R(t^2))), t = f / (2 + f), R a degree-7
       minimax polynomial in t^2 (|error| < 2^-58.45), plus e ln2 in two parts.
    """
    bits = _f64_as_i64(s)
    e = ((bits >> 52) & 0x7FF) - 1023
    m = _i64_as_f64((bits & 0xFFFFFFFFFFFFF) | 0x3FF0000000000000)
    big = m > _SQRT2
    m = m * 0.5 if big else m
    ef = np.float64(e + 1 if big else e)
    f = m - 1.0
    hfsq = 0.5 * f * f
    t = f / (2.0 + f)
    z = t * t
    r = _LG7
    r = r * z + _LG6
    r = r * z + _LG5
    r = r * z + _LG4
    r = r * z + _LG3
    r = r * z + _LG2
    r = r * z + _LG1
    r = r * z
    res = ef * _LN2_HI - ((hfsq - (t * (hfsq + r) + ef * _LN2_LO)) - f)
    return res if s < np.inf else s  # NaN (comparison false) and +inf pass through


# Strict order. Numba adds the caller's fastmath flags to every float instruction that has
# none, inlined callees included, and with "reassoc" LLVM rewrites (z - m) - lse as
# z - (m + lse): the precision loss of PyTorch #11752. Instructions that already carry a flag
# ("contract", harmless here) are left alone, so these helpers keep their order.
@njit(fastmath={"contract"}, error_model="numpy", cache=True, inline="never")
def _shifted_minus(a, m, b):
    """(a - m) - b in this order."""
    return (a - m) - b


@njit(fastmath={"contract"}, error_model="numpy", cache=True, inline="never")
def _ce_term(lse, zy, m):
    """lse - (zy - m) in this order: the loss of one row."""
    return lse - (zy - m)


# --------------------------------------------------------------------------------------
# Tiling helpers
# --------------------------------------------------------------------------------------
@njit(**JIT)
def _feature_blocks(d):
    """Edges of the fixed feature blocks: about FEATURE_BLOCK wide, multiples of 16."""
    nfb = max(1, (d + FEATURE_BLOCK // 2) // FEATURE_BLOCK)
    q = (d + 15) // 16
    nfb = min(nfb, q) if d > 0 else 1
    edges = np.empty(nfb + 1, dtype=np.intp)
    for j in range(nfb + 1):
        edges[j] = min(d, 16 * ((q * j) // nfb))
    edges[nfb] = d
    return edges


def _call(kernel, n_threads, work, *args):
    """Run ``kernel(*args)`` on min(n_threads, work // MIN_WORK_PER_THREAD) threads.

    The thread count never changes a result (fixed tiles), so small problems may use fewer
    threads than asked. The caller's numba thread count is restored afterwards.
    """
    nt = max(1, min(int(n_threads), _MAX_THREADS, work // MIN_WORK_PER_THREAD))
    old = numba.get_num_threads()
    if nt == old:
        return kernel(*args)
    numba.set_num_threads(nt)
    try:
        return kernel(*args)
    finally:
        numba.set_num_threads(old)


# --------------------------------------------------------------------------------------
# Matrix-product tiles (working dtype, vectorised along the features)
# --------------------------------------------------------------------------------------
@njit(**JIT)
def _forward_tile(A, rows, f0, f1, W, k0, k1, P, p0, ahead):
    """P[p0 + r, k] = sum_{f0 <= f < f1} A[rows[r], f] W[k, f] for k in [k0, k1).

    Tiles of 4 rows x 4 classes: 8 vector loads feed 16 FMAs; each accumulator is a
    vectorised (reassociated) reduction along the features, fixed by the tile shape. Ragged
    edges recompute the last row/class (same value written twice). While a group of rows is
    computed, the rows ``ahead[r]`` (the next tile or batch) are prefetched over [f0, f1).
    """
    nr = rows.shape[0]
    na = ahead.shape[0]
    m = f1 - f0
    step = max(1, 64 // A.itemsize)  # elements per cache line
    zero = W.dtype.type(0)
    r = 0
    while r < nr:
        for q in range(r, min(r + 4, na)):
            rq = ahead[q]
            for f in range(f0, f1, step):
                _prefetch(A, rq, f)
        ra = r
        rb = min(r + 1, nr - 1)
        rc = min(r + 2, nr - 1)
        rd = min(r + 3, nr - 1)
        x0 = A[rows[ra], f0:f1]
        x1 = A[rows[rb], f0:f1]
        x2 = A[rows[rc], f0:f1]
        x3 = A[rows[rd], f0:f1]
        k = k0
        while k < k1:
            kb = min(k + 1, k1 - 1)
            kc = min(k + 2, k1 - 1)
            kd = min(k + 3, k1 - 1)
            w0 = W[k, f0:f1]
            w1 = W[kb, f0:f1]
            w2 = W[kc, f0:f1]
            w3 = W[kd, f0:f1]
            a00 = a01 = a02 = a03 = zero
            a10 = a11 = a12 = a13 = zero
            a20 = a21 = a22 = a23 = zero
            a30 = a31 = a32 = a33 = zero
            for f in range(m):
                u0 = x0[f]
                u1 = x1[f]
                u2 = x2[f]
                u3 = x3[f]
                v0 = w0[f]
                v1 = w1[f]
                v2 = w2[f]
                v3 = w3[f]
                a00 += u0 * v0
                a01 += u0 * v1
                a02 += u0 * v2
                a03 += u0 * v3
                a10 += u1 * v0
                a11 += u1 * v1
                a12 += u1 * v2
                a13 += u1 * v3
                a20 += u2 * v0
                a21 += u2 * v1
                a22 += u2 * v2
                a23 += u2 * v3
                a30 += u3 * v0
                a31 += u3 * v1
                a32 += u3 * v2
                a33 += u3 * v3
            P[p0 + ra, k] = a00
            P[p0 + ra, kb] = a01
            P[p0 + ra, kc] = a02
            P[p0 + ra, kd] = a03
            P[p0 + rb, k] = a10
            P[p0 + rb, kb] = a11
            P[p0 + rb, kc] = a12
            P[p0 + rb, kd] = a13
            P[p0 + rc, k] = a20
            P[p0 + rc, kb] = a21
            P[p0 + rc, kc] = a22
            P[p0 + rc, kd] = a23
            P[p0 + rd, k] = a30
            P[p0 + rd, kb] = a31
            P[p0 + rd, kc] = a32
            P[p0 + rd, kd] = a33
            k += 4
        r += 4


@njit(**JIT)
def _backward_tile(A, rows, f0, f1, G, g0, k0, k1, Out, o0):
    """Out[k, o0 + (f - f0)] += sum_r G[g0 + r, k] A[rows[r], f] for k in [k0, k1), f in [f0, f1).

    Groups of 4 rows x 4 classes: the 16 coefficients G stay in registers, 4 row loads and
    4 accumulator loads/stores feed 16 FMAs (8 rows x 2 classes spilled the coefficients and
    ran at half this speed). Rows are added in a fixed order: groups of 4, then the rest.
    """
    nr = rows.shape[0]
    m = f1 - f0
    r = 0
    while r + 4 <= nr:
        x0 = A[rows[r], f0:f1]
        x1 = A[rows[r + 1], f0:f1]
        x2 = A[rows[r + 2], f0:f1]
        x3 = A[rows[r + 3], f0:f1]
        gr = g0 + r
        k = k0
        while k + 4 <= k1:
            oa = Out[k, o0:o0 + m]
            ob = Out[k + 1, o0:o0 + m]
            oc = Out[k + 2, o0:o0 + m]
            od = Out[k + 3, o0:o0 + m]
            a0, a1, a2, a3 = G[gr, k], G[gr + 1, k], G[gr + 2, k], G[gr + 3, k]
            b0, b1, b2, b3 = G[gr, k + 1], G[gr + 1, k + 1], G[gr + 2, k + 1], G[gr + 3, k + 1]
            c0, c1, c2, c3 = G[gr, k + 2], G[gr + 1, k + 2], G[gr + 2, k + 2], G[gr + 3, k + 2]
            d0, d1, d2, d3 = G[gr, k + 3], G[gr + 1, k + 3], G[gr + 2, k + 3], G[gr + 3, k + 3]
            for f in range(m):
                v0 = x0[f]
                v1 = x1[f]
                v2 = x2[f]
                v3 = x3[f]
                oa[f] += (a0 * v0 + a1 * v1) + (a2 * v2 + a3 * v3)
                ob[f] += (b0 * v0 + b1 * v1) + (b2 * v2 + b3 * v3)
                oc[f] += (c0 * v0 + c1 * v1) + (c2 * v2 + c3 * v3)
                od[f] += (d0 * v0 + d1 * v1) + (d2 * v2 + d3 * v3)
            k += 4
        while k + 2 <= k1:
            oa = Out[k, o0:o0 + m]
            ob = Out[k + 1, o0:o0 + m]
            a0, a1, a2, a3 = G[gr, k], G[gr + 1, k], G[gr + 2, k], G[gr + 3, k]
            b0, b1, b2, b3 = G[gr, k + 1], G[gr + 1, k + 1], G[gr + 2, k + 1], G[gr + 3, k + 1]
            for f in range(m):
                v0 = x0[f]
                v1 = x1[f]
                v2 = x2[f]
                v3 = x3[f]
                oa[f] += (a0 * v0 + a1 * v1) + (a2 * v2 + a3 * v3)
                ob[f] += (b0 * v0 + b1 * v1) + (b2 * v2 + b3 * v3)
            k += 2
        if k < k1:
            oa = Out[k, o0:o0 + m]
            a0, a1, a2, a3 = G[gr, k], G[gr + 1, k], G[gr + 2, k], G[gr + 3, k]
            for f in range(m):
                oa[f] += (a0 * x0[f] + a1 * x1[f]) + (a2 * x2[f] + a3 * x3[f])
        r += 4
    while r < nr:
        x0 = A[rows[r], f0:f1]
        for k in range(k0, k1):
            oa = Out[k, o0:o0 + m]
            a0 = G[g0 + r, k]
            for f in range(m):
                oa[f] += a0 * x0[f]
        r += 1


# --------------------------------------------------------------------------------------
# One row of softmax statistics (float64)
# --------------------------------------------------------------------------------------
@njit(**JIT)
def _row_max(z):
    """max_k z_k in float64, skipping NaN (the comparison is false); -inf if all are -inf/NaN.

    Eight independent running maxima: one select chain would cost its latency per element.
    """
    c = z.shape[0]
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = -np.inf
    k = 0
    while k + 8 <= c:
        v0 = np.float64(z[k])
        v1 = np.float64(z[k + 1])
        v2 = np.float64(z[k + 2])
        v3 = np.float64(z[k + 3])
        v4 = np.float64(z[k + 4])
        v5 = np.float64(z[k + 5])
        v6 = np.float64(z[k + 6])
        v7 = np.float64(z[k + 7])
        m0 = v0 if v0 > m0 else m0
        m1 = v1 if v1 > m1 else m1
        m2 = v2 if v2 > m2 else m2
        m3 = v3 if v3 > m3 else m3
        m4 = v4 if v4 > m4 else m4
        m5 = v5 if v5 > m5 else m5
        m6 = v6 if v6 > m6 else m6
        m7 = v7 if v7 > m7 else m7
        k += 8
    while k < c:
        v0 = np.float64(z[k])
        m0 = v0 if v0 > m0 else m0
        k += 1
    m0 = m1 if m1 > m0 else m0
    m2 = m3 if m3 > m2 else m2
    m4 = m5 if m5 > m4 else m4
    m6 = m7 if m7 > m6 else m6
    m0 = m2 if m2 > m0 else m0
    m4 = m6 if m6 > m4 else m4
    return m4 if m4 > m0 else m0


@njit(**JIT)
def _row_exp(z, e):
    """Return (max, sum exp(z - max)) of the row ``z`` and write exp(z - max) into ``e``.

    The max skips NaN (the comparison is false); a NaN still reaches the sum through exp.
    """
    c = z.shape[0]
    m = _row_max(z)
    if c > 0 and m == -np.inf:
        m = np.float64(z[0])  # all -inf (or NaN): -inf - -inf makes the sum NaN as it must
    for k in range(c):
        e[k] = _exp(np.float64(z[k]) - m)
    # A separate, load-only loop: a reduction in a loop that also stores gets a runtime alias
    # check, and its scalar fallback (taken when two buffers happen to lie close in memory)
    # sums in another order - results would depend on the heap layout.
    s = 0.0
    for k in range(c):
        s += e[k]
    return m, s


# --------------------------------------------------------------------------------------
# softmax / log_softmax
# --------------------------------------------------------------------------------------
@njit(**PJIT)
def _softmax_kernel(logits, out, log):
    n, c = logits.shape
    rb = max(1, SOFTMAX_BLOCK_ELEMS // max(c, 1))
    nblk = (n + rb - 1) // rb
    for b in prange(nblk):
        r0 = b * rb
        r1 = min(n, r0 + rb)
        e = np.empty(c, dtype=np.float64)
        for i in range(r0, r1):
            z = logits[i]
            o = out[i]
            m, s = _row_exp(z, e)
            if log:
                lse = _log(s)
                # (z - max) - logsumexp, never z - (max + logsumexp) (PyTorch #11752)
                for k in range(c):
                    o[k] = _shifted_minus(np.float64(z[k]), m, lse)
            else:
                inv = 1.0 / s
                for k in range(c):
                    o[k] = e[k] * inv


def softmax(logits, out, n_threads=1):  # IN logits (n, c); OUT out (n, c), may alias logits
    """Row-wise softmax: out_ik = exp(z_ik - m_i) / sum_j exp(z_ij - m_i), m_i = max_j z_ij."""
    _call(_softmax_kernel, n_threads, logits.size, logits, out, False)


def log_softmax(logits, out, n_threads=1):  # IN logits (n, c); OUT out (n, c)
    """Row-wise log-softmax: out_ik = (z_ik - m_i) - log sum_j exp(z_ij - m_i)."""
    _call(_softmax_kernel, n_threads, logits.size, logits, out, True)


# --------------------------------------------------------------------------------------
# softmax_ce
# --------------------------------------------------------------------------------------
@njit(**JIT)
def _weight_sum(n, sample_weight, has_weight):
    if not has_weight:
        return np.float64(n)
    s = 0.0
    for i in range(n):
        s += sample_weight[i]
    return s


@njit(**PJIT)
def _softmax_ce_kernel(logits, y, sample_weight, has_weight, out):
    n, c = logits.shape
    rb = max(1, SOFTMAX_BLOCK_ELEMS // max(c, 1))
    nblk = (n + rb - 1) // rb
    wsum = _weight_sum(n, sample_weight, has_weight)
    inv_wsum = 1.0 / wsum
    partial = np.zeros(nblk, dtype=np.float64)
    for b in prange(nblk):
        r0 = b * rb
        r1 = min(n, r0 + rb)
        nr = r1 - r0
        # The block is processed as flat arrays so that exp runs in one long vectorised loop
        # (per-row loops of c ~ 10 leave most of the work to scalar remainders).
        ez = np.empty(nr * c, dtype=np.float64)
        mx = np.empty(nr, dtype=np.float64)
        sums = np.empty(nr, dtype=np.float64)
        shifted_true = np.empty(nr, dtype=np.float64)
        # 1. m_i = max_k z_ik (NaN skipped by the comparison; it reaches the sum through exp)
        for r in range(nr):
            z = logits[r0 + r]
            m = _row_max(z)
            if c > 0 and m == -np.inf:
                m = np.float64(z[0])  # all -inf (or NaN): -inf - -inf makes the sum NaN
            mx[r] = m
            # 2. z_y - m before ``out`` (which may alias ``logits``) is written
            shifted_true[r] = _shifted_minus(np.float64(z[y[r0 + r]]), m, 0.0)
            for k in range(c):
                ez[r * c + k] = np.float64(z[k]) - m
        # 3. e_ik = exp(z_ik - m_i), one flat loop
        for q in range(nr * c):
            ez[q] = _exp(ez[q])
        # 4. dL/dz_ik = w_i / sum(w) (p_ik - [k == y_i]), p_ik = e_ik / s_i
        for r in range(nr):
            s = 0.0
            for k in range(c):
                s += ez[r * c + k]
            sums[r] = s
            wi = sample_weight[r0 + r] if has_weight else 1.0
            scale = wi * inv_wsum
            inv_s = 1.0 / s
            o = out[r0 + r]
            for k in range(c):
                o[k] = (ez[r * c + k] * inv_s) * scale
            yi = y[r0 + r]
            o[yi] = (ez[r * c + yi] * inv_s - 1.0) * scale
        # 5. l_i = log s_i - (z_y - m): vectorised log over the block, fixed-order sum
        acc = 0.0
        for r in range(nr):
            li = _ce_term(_log(sums[r]), shifted_true[r], 0.0)
            wi = sample_weight[r0 + r] if has_weight else 1.0
            acc += wi * li
        partial[b] = acc
    total = 0.0
    for b in range(nblk):
        total += partial[b]
    return total * inv_wsum


def softmax_ce(logits, y, sample_weight, out, n_threads=1):
    """(Weighted) mean cross-entropy L = sum_i w_i l_i / sum_i w_i, gradient written to ``out``.

    IN logits (n, c) float32/float64, y (n,) intp, sample_weight (n,) float64 or None;
    OUT out (n, c), may alias logits. l_i = log sum_k exp(z_ik - m_i) - (z_iy - m_i).
    """
    has_weight = sample_weight is not None
    w = sample_weight if has_weight else _NO_WEIGHTS
    return float(_call(_softmax_ce_kernel, n_threads, logits.size, logits, y, w, has_weight, out))


# --------------------------------------------------------------------------------------
# linear_softmax_ce
# --------------------------------------------------------------------------------------
@njit(**PJIT)
def _linear_kernel(X, x_scale, coef, intercept, y, sample_weight, has_weight, alpha,
                   grad_coef, grad_intercept):
    n, d = X.shape
    c = coef.shape[0]
    wdt = coef.dtype
    wsum = _weight_sum(n, sample_weight, has_weight)
    inv_wsum = 1.0 / wsum
    # chunk of rows: multiple of ROW_TILE, chunk x classes <= CHUNK_ELEMS (at least one tile)
    rc = max(ROW_TILE, (CHUNK_ELEMS // max(c, 1)) // ROW_TILE * ROW_TILE)
    rc = min(rc, max(n, 1))
    nchunk = (n + rc - 1) // rc
    edges = _feature_blocks(d)
    nfb = edges.shape[0] - 1
    nct = (c + CLASS_TILE - 1) // CLASS_TILE
    Z = np.empty((rc, c), dtype=np.float64)  # logits of the chunk
    G = np.empty((rc, c), dtype=wdt)  # dL/dz of the chunk (unscaled by x_scale)
    ntile_max = (rc + ROW_TILE - 1) // ROW_TILE
    partial = np.zeros(ntile_max, dtype=np.float64)
    gb = np.zeros(c, dtype=np.float64)
    local_rows = np.arange(rc)
    for j in prange(c):
        gc = grad_coef[j]
        for f in range(d):
            gc[f] = 0
    total = 0.0
    for ch in range(nchunk):
        r0 = ch * rc
        r1 = min(n, r0 + rc)
        m = r1 - r0
        Xc = X[r0:r1]
        nrt = (m + ROW_TILE - 1) // ROW_TILE
        # 1. z = x_scale (X coef^T) + b, tiles of ROW_TILE rows x CLASS_TILE classes
        for t in prange(nrt * nct):
            rt = t // nct
            ct = t - rt * nct
            q0 = rt * ROW_TILE
            q1 = min(m, q0 + ROW_TILE)
            k0 = ct * CLASS_TILE
            k1 = min(c, k0 + CLASS_TILE)
            _forward_tile(Xc, local_rows[q0:q1], 0, d, coef, k0, k1, Z, q0,
                          local_rows[q1:min(m, q1 + ROW_TILE)])
            for r in range(q0, q1):
                zr = Z[r]
                for k in range(k0, k1):
                    zr[k] = x_scale * zr[k] + np.float64(intercept[k])
        # 2. softmax and loss per row tile; G = w_i / sum(w) (p - onehot)
        for rt in prange(nrt):
            q0 = rt * ROW_TILE
            q1 = min(m, q0 + ROW_TILE)
            e = np.empty(c, dtype=np.float64)
            acc = 0.0
            for r in range(q0, q1):
                i = r0 + r
                yi = y[i]
                mx, s = _row_exp(Z[r], e)
                wi = sample_weight[i] if has_weight else 1.0
                li = _ce_term(_log(s), Z[r, yi], mx)
                acc += wi * li
                scale = wi * inv_wsum
                inv_s = 1.0 / s
                gr = G[r]
                for k in range(c):
                    gr[k] = (e[k] * inv_s) * scale
                gr[yi] = (e[yi] * inv_s - 1.0) * scale
            partial[rt] = acc
        for rt in range(nrt):
            total += partial[rt]
        # 3. grad_coef += G^T X over tiles (class tile x feature block), rows in fixed order;
        #    the tiles of feature block 0 also sum the intercept gradient.
        for t in prange(nct * nfb):
            ct = t // nfb
            fb = t - ct * nfb
            k0 = ct * CLASS_TILE
            k1 = min(c, k0 + CLASS_TILE)
            f0 = edges[fb]
            f1 = edges[fb + 1]
            _backward_tile(Xc, local_rows[:m], f0, f1, G, 0, k0, k1, grad_coef, f0)
            if fb == 0:
                for k in range(k0, k1):
                    acc = gb[k]
                    for r in range(m):
                        acc += G[r, k]
                    gb[k] = acc
    # 4. scale, add the L2 term; its loss contribution summed per class row in order
    reg = np.zeros(c, dtype=np.float64)
    for k in prange(c):
        gc = grad_coef[k]
        ck = coef[k]
        acc = 0.0
        for f in range(d):
            gc[f] = x_scale * gc[f] + alpha * ck[f]
        for f in range(d):  # load-only reduction (see _row_exp)
            acc += np.float64(ck[f]) * np.float64(ck[f])
        reg[k] = acc
        grad_intercept[k] = gb[k]
    sq = 0.0
    for k in range(c):
        sq += reg[k]
    return total * inv_wsum + 0.5 * alpha * sq


def linear_softmax_ce(X, x_scale, coef, intercept, y, sample_weight, alpha,
                      grad_coef, grad_intercept, n_threads=1):
    """Loss and gradients of the linear softmax model z = (x_scale X) coef^T + intercept.

    IN X (n, d) uint8 or coef's dtype, coef (c, d), intercept (c,), y (n,) intp,
    sample_weight (n,) float64 or None; OUT grad_coef (c, d), grad_intercept (c,).
    L = sum_i w_i l_i / sum_i w_i + (alpha / 2) ||coef||^2;
    dL/dcoef = x_scale G^T X + alpha coef, dL/dintercept = sum_i G_i with
    G_ik = w_i (softmax(z_i)_k - [k == y_i]) / sum_i w_i. Extra memory is O(CHUNK_ELEMS).
    """
    has_weight = sample_weight is not None
    w = sample_weight if has_weight else _NO_WEIGHTS
    work = 2 * X.shape[0] * coef.size
    return float(_call(_linear_kernel, n_threads, work, X, float(x_scale), coef, intercept, y,
                       w, has_weight, float(alpha), grad_coef, grad_intercept))


# --------------------------------------------------------------------------------------
# sgd_epoch
# --------------------------------------------------------------------------------------
@njit(**JIT)
def _apply_update(w, v, g, lr, momentum, nesterov):
    """Update one weight row in place from its gradient row ``g`` (the three SGD rules)."""
    m = w.shape[0]
    if momentum == 0.0:
        for f in range(m):
            w[f] -= lr * g[f]
    elif nesterov:
        for f in range(m):
            vf = momentum * v[f] - lr * g[f]
            v[f] = vf
            w[f] += momentum * vf - lr * g[f]
    else:
        for f in range(m):
            vf = momentum * v[f] - lr * g[f]
            v[f] = vf
            w[f] += vf


@njit(**PJIT)
def _sgd_kernel(X, x_scale, y, sample_weight, has_weight, order, coef, intercept,
                velocity_coef, velocity_intercept, lr, alpha, momentum, nesterov,
                batch_size):
    n = order.shape[0]
    c, d = coef.shape
    wdt = coef.dtype
    bs = max(1, min(batch_size, n))
    nb = (n + bs - 1) // bs
    edges = _feature_blocks(d)
    nfb = edges.shape[0] - 1
    fbmax = 0
    for j in range(nfb):
        fbmax = max(fbmax, edges[j + 1] - edges[j])
    P = np.zeros((nfb, bs, c), dtype=np.float64)  # partial logits per feature block
    gcoef = np.zeros((nfb, c, fbmax), dtype=wdt)  # gradient of coef, per feature block
    G = np.zeros((bs, c), dtype=wdt)  # x_scale * dL/dz of the batch being updated
    gbias = np.zeros(c, dtype=np.float64)
    gbias_w = np.zeros(c, dtype=wdt)
    z = np.empty(c, dtype=np.float64)
    e = np.empty(c, dtype=np.float64)
    lr_w = wdt.type(lr)
    mom_w = wdt.type(momentum)
    alpha_w = wdt.type(alpha)
    total_loss = 0.0
    total_weight = 0.0
    # Region t: backward + update of batch t-1, forward of batch t, prefetch of batch t+1.
    for t in range(nb + 1):
        p0 = (t - 1) * bs
        p1 = min(n, p0 + bs)
        s0 = t * bs
        s1 = min(n, s0 + bs)
        for j in prange(nfb):
            f0 = edges[j]
            f1 = edges[j + 1]
            fm = f1 - f0
            if t > 0:
                # g = x_scale G^T X + alpha W, accumulated onto alpha W
                Oj = gcoef[j]
                for k in range(c):
                    ok = Oj[k, :fm]
                    wk = coef[k, f0:f1]
                    for f in range(fm):
                        ok[f] = alpha_w * wk[f]
                _backward_tile(X, order[p0:p1], f0, f1, G, 0, 0, c, Oj, 0)
                for k in range(c):
                    _apply_update(coef[k, f0:f1], velocity_coef[k, f0:f1], Oj[k, :fm], lr_w,
                                  mom_w, nesterov)
            if t < nb:
                _forward_tile(X, order[s0:s1], f0, f1, coef, 0, c, P[j], 0,
                              order[s1:min(n, s1 + bs)])
        if t == nb:
            break
        # softmax of batch t on the calling thread: partial logits summed in block order
        nbat = s1 - s0
        wb = 0.0
        for r in range(nbat):
            wb += sample_weight[order[s0 + r]] if has_weight else 1.0
        for k in range(c):
            gbias[k] = 0.0
        if wb > 0:  # a batch with zero total weight has no data term
            inv_wb = 1.0 / wb
            for r in range(nbat):
                i = order[s0 + r]
                yi = y[i]
                for k in range(c):
                    z[k] = intercept[k]
                for j in range(nfb):
                    pj = P[j, r]
                    for k in range(c):
                        z[k] += x_scale * pj[k]
                mx, s = _row_exp(z, e)
                wi = sample_weight[i] if has_weight else 1.0
                total_loss += wi * _ce_term(_log(s), z[yi], mx)
                # dL/dz_k = w_i / sum_B(w) (p_k - [k == y]); G keeps it times x_scale
                scale = wi * inv_wb
                ps = scale / s
                gr = G[r]
                for k in range(c):
                    gk = e[k] * ps
                    gbias[k] += gk
                    gr[k] = x_scale * gk
                gbias[yi] -= scale
                gr[yi] = x_scale * (e[yi] * ps - scale)
        else:
            for r in range(nbat):
                for k in range(c):
                    G[r, k] = 0
        total_weight += wb
        for k in range(c):
            gbias_w[k] = gbias[k]
        _apply_update(intercept, velocity_intercept, gbias_w, lr_w, mom_w, nesterov)
    return total_loss / total_weight if total_weight > 0 else 0.0


def sgd_epoch(X, x_scale, y, sample_weight, order, coef, intercept, velocity_coef,
              velocity_intercept, lr, alpha, momentum, nesterov, batch_size, n_threads=1):
    """One epoch of minibatch SGD over the rows ``order`` in one compiled call (in place).

    IN X (n, d), y, sample_weight or None, order (intp); IN/OUT coef (c, d), intercept (c,),
    velocity_coef, velocity_intercept. Each batch B uses g = dL_B/dcoef + alpha coef and
    plain W -= lr g, momentum v = mu v - lr g, W += v, or Nesterov W += mu v - lr g.
    Returns sum_i w_i l_i / sum_i w_i over the epoch (each l_i at the weights its batch saw).
    """
    has_weight = sample_weight is not None
    w = sample_weight if has_weight else _NO_WEIGHTS
    work = 2 * min(int(batch_size), len(order)) * coef.size
    return float(_call(_sgd_kernel, n_threads, work, X, float(x_scale), y, w, has_weight, order,
                       coef, intercept, velocity_coef, velocity_intercept, float(lr),
                       float(alpha), float(momentum), bool(nesterov), int(batch_size)))
