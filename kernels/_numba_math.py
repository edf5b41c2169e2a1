"""Building blocks of the Numba kernels: exact scalar maths, tiles, row helpers.

Shared by :mod:`softmax_fast.kernels.numba_backend` (dense contract) and the BLAS path
(:mod:`softmax_fast.kernels._numba_gemm`). The design notes on determinism and accuracy are
in ``numba_backend``'s docstring; every option set comes from ``_numba_config``.
"""

import math

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from ._numba_config import (
    CE_FLAT_CLASSES,
    FEATURE_BLOCK,
    FORWARD_TILE_ROWS,
    GRAD_BLOCKS_PER_THREAD,
    GRAD_FEATURE_BLOCKS,
    GRAD_MIN_FEATURE_WIDTH,
    JIT,
    JIT_INLINE,
    JIT_STRICT,
    SHORT_ROW,
)
from .contract import EXP_FLUSH


# --------------------------------------------------------------------------------------
# Scalar building blocks
# --------------------------------------------------------------------------------------
def _bitcast(source, target, llvm_target, doc):
    """An intrinsic reinterpreting the bits of a ``source`` value as ``target`` (vectorisable,
    unlike frexp/ldexp)."""
    def cast(typingctx, value):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], llvm_target)

        return target(source), codegen

    cast.__doc__ = doc
    return intrinsic(cast)


_i64_as_f64 = _bitcast(types.int64, types.float64, ir.DoubleType(),
                       "Reinterpret the bits of an int64 as a float64.")
_f64_as_i64 = _bitcast(types.float64, types.int64, ir.IntType(64),
                       "Reinterpret the bits of a float64 as an int64.")
_i32_as_f32 = _bitcast(types.int32, types.float32, ir.FloatType(),
                       "Reinterpret the bits of an int32 as a float32.")


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


@intrinsic
def _cycles(typingctx):
    """The CPU's cycle counter (rdtsc / cntvct): cheap timestamps for the busy-machine watch."""
    sig = types.int64()

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(64), [])
        fn = numba.core.cgutils.get_or_insert_function(builder.module, fnty,
                                                       "llvm.readcyclecounter")
        return builder.call(fn, [])

    return sig, codegen


#: LLVM function attributes of the wide-vector hint (see _wide_vectors)
WIDE_VECTOR_ATTRIBUTES = ('"prefer-vector-width"="512"', '"min-legal-vector-width"="512"')


@intrinsic
def _wide_vectors(typingctx):
    """Let LLVM use 512-bit vectors in the function that calls this (no effect on results'
    meaning; no code is emitted).

    On AVX-512 CPUs LLVM's default tuning (``prefer-256-bit``) keeps every loop on 256-bit
    registers, and Numba sets the tuning for the whole process (``NUMBA_CPU_FEATURES``). These
    two function attributes lift it for the functions that call this (the matrix-product tiles
    and the softmax row loops) only: the vectoriser may pick zmm, and a caller they are
    inlined into keeps them (LLVM merges the least legal vector width upwards when
    inlining). A CPU without AVX-512 ignores them. llvmlite only accepts
    enum attributes through ``FunctionAttributes.add``, so the two string attributes are added
    to the set directly; they are printed into the function's definition as written.
    """
    sig = types.void()

    def codegen(context, builder, signature, args):
        try:
            for attribute in WIDE_VECTOR_ATTRIBUTES:
                set.add(builder.function.attributes, attribute)
        except TypeError:  # a future llvmlite without a set here: 256-bit code, still correct
            pass  # (tests/test_numba_config.py fails then, so we hear of it)
        return context.get_dummy_value()

    return sig, codegen


if numba.config.DISABLE_JIT:  # pure-Python fallbacks (debugging with NUMBA_DISABLE_JIT=1)

    def _i64_as_f64(i):  # noqa: F811
        return np.int64(i).view(np.float64)

    def _f64_as_i64(x):  # noqa: F811
        return np.float64(x).view(np.int64)

    def _i32_as_f32(i):  # noqa: F811
        return np.int32(i).view(np.float32)

    def _prefetch(arr, i, j):  # noqa: F811
        pass

    def _cycles():  # noqa: F811
        import time

        return time.perf_counter_ns()

    def _wide_vectors():  # noqa: F811
        pass


_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that k * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10
(_E2, _E3, _E4, _E5, _E6, _E7, _E8, _E9, _E10, _E11, _E12, _E13) = (
    1.0 / math.factorial(k) for k in range(2, 14)
)
_SQRT2 = 1.4142135623730951
# float32 exp (Cython's sf_exp_vf): ln 2 in two float32 parts (n * hi exact for |n| < 2^8)
_LOG2E_F32 = np.float32(1.44269504088896341)
_LN2_HI_F32 = np.float32(0.693145751953125)
_LN2_LO_F32 = np.float32(1.428606765330187045e-06)
(_F2, _F3, _F4, _F5, _F6, _F7, _F8) = (np.float32(1.0 / math.factorial(k)) for k in range(2, 9))
# exp of anything below these is flushed to exactly 0, never made subnormal (the kernel
# contract's EXP_FLUSH; the reasons are written down at Cython's sf_exp_vf)
_EXP_FLUSH_F32, _EXP_HI_F32 = np.float32(EXP_FLUSH["float32"]), np.float32(88.0)
_EXP_FLUSH_F64 = EXP_FLUSH["float64"]
(_LG1, _LG2, _LG3, _LG4, _LG5, _LG6, _LG7) = (  # fdlibm e_log.c
    6.666666666666735130e-01, 3.999999999940941908e-01, 2.857142874366239149e-01,
    2.222219843214978396e-01, 1.818357216161805012e-01, 1.531383769920937332e-01,
    1.479819860511658591e-01,
)


# These two carry only "contract" (see _shifted_minus below for why that protects them from
# the callers' flags): reassociation would undo the Cody-Waite range reduction.
@njit(**JIT_STRICT)
def _exp(x):
    """exp(x) in float64 for x <= 0 (shifted logits), NaN -> NaN, -inf -> 0.

    1. x = k ln2 + r with k = rint(x / ln2), |r| <= ln2 / 2 (two-part ln2, exact k ln2_hi).
    2. exp(r) by its Taylor polynomial to degree 13 (truncation < 1e-17 relative).
    3. 2^k applied as two factors 2^h 2^(k-h).
    4. x < -680 gives exactly 0: no subnormal is ever made (see ``_EXP_FLUSH_F64``).
    """
    if x < _EXP_FLUSH_F64:
        return 0.0  # NaN is not below: it goes on and poisons the polynomial
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


@njit(**JIT_STRICT)
def _exp_row_f32(z, m, e):
    """e[k] = exp(z[k] - m) for a float32 row, in float32: the scheme of Cython's sf_exp_vf
    (Cody-Waite reduction, degree-8 Taylor polynomial, 2^n in two halves), <= 2 ulp.

    A whole row per call: the loop vectorises (twice the lanes of float64) while the flags
    stay strict. ``z`` and ``e`` must not be the same array (in place, the vectoriser's
    overlap check fails and the loop runs scalar: 3x slower). Arguments below -64 give
    exactly 0 (no subnormal is ever made; -inf included); NaN passes the clamps and poisons
    the polynomial (its exponent is clamped separately, never converted as NaN).
    """
    _wide_vectors()
    mf = np.float32(m)
    for k in range(z.shape[0]):
        x = np.float32(z[k]) - mf
        flush = x < _EXP_FLUSH_F32
        x = _EXP_FLUSH_F32 if flush else x
        x = _EXP_HI_F32 if x > _EXP_HI_F32 else x
        n = np.rint(x * _LOG2E_F32)
        r = (x - n * _LN2_HI_F32) - n * _LN2_LO_F32
        p = _F8
        p = p * r + _F7
        p = p * r + _F6
        p = p * r + _F5
        p = p * r + _F4
        p = p * r + _F3
        p = p * r + _F2
        p = p * r + np.float32(1.0)
        p = p * r + np.float32(1.0)
        nc = n if n > np.float32(-160.0) else np.float32(-160.0)  # NaN -> -160
        ni = np.int32(nc)
        n1 = ni >> 1
        v = p * _i32_as_f32((n1 + 127) << 23) * _i32_as_f32((ni - n1 + 127) << 23)
        e[k] = np.float32(0.0) if flush else v


@njit(**JIT_STRICT)
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


@njit(**JIT_INLINE)
def _log_each(s, out):
    """out[i] = log(s[i]) in a loop of its own (``s`` and ``out`` distinct arrays).

    Inside a loop that also sums the loss, the log ran one row at a time, its data-dependent
    branch (mantissa above sqrt 2) mispredicted half the time; alone, the loop vectorises and
    the branch becomes a blend: softmax-CE 1,000,000 x 10 float32 on one thread 39.6 ->
    29.4 ms (AMD EPYC, one process, interleaved). ``_log`` keeps its own strict flags.
    """
    for i in range(s.shape[0]):
        out[i] = _log(s[i])


# Strict order. Numba adds the caller's fastmath flags to every float instruction that has
# none, inlined callees included, and with "reassoc" LLVM rewrites (z - m) - lse as
# z - (m + lse): the precision loss of PyTorch #11752. Instructions that already carry a flag
# ("contract", harmless here) are left alone, so these helpers keep their order.
@njit(**JIT_STRICT)
def _shifted_minus(a, m, b):
    """(a - m) - b in this order."""
    return (a - m) - b


@njit(**JIT_STRICT)
def _ce_sum(lse, zy, weights, first, n, has_weight):
    """sum_r w_r (lse_r - zy_r) over r < n in an order the source fixes: row r into partial
    sum r % 8, the eight combined pairwise, then the rows past the last multiple of 8
    (``w_r = weights[first + r]``, or 1 without weights).

    Strict flags, not a loop left to "reassoc": LLVM chose how to vectorise such a loop anew
    in every module a helper was linked into, and Numba runs the copy compiled in the
    calling kernel's module when that kernel comes from its cache, the helper's own module
    when it was just compiled. The loss of ``linear_softmax_ce`` (2,000 x 64 x 30) and of
    ``softmax_ce`` (65,536 x 10) then differed by an ulp between the process that compiled
    the kernels and every process after it (``test_first_call_cold_then_warm_cache``). Eight
    chains of adds keep the sum off the critical path of one add's latency.
    """
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    m = n - n % 8
    for r in range(0, m, 8):
        if has_weight:
            a0 += weights[first + r] * (lse[r] - zy[r])
            a1 += weights[first + r + 1] * (lse[r + 1] - zy[r + 1])
            a2 += weights[first + r + 2] * (lse[r + 2] - zy[r + 2])
            a3 += weights[first + r + 3] * (lse[r + 3] - zy[r + 3])
            a4 += weights[first + r + 4] * (lse[r + 4] - zy[r + 4])
            a5 += weights[first + r + 5] * (lse[r + 5] - zy[r + 5])
            a6 += weights[first + r + 6] * (lse[r + 6] - zy[r + 6])
            a7 += weights[first + r + 7] * (lse[r + 7] - zy[r + 7])
        else:
            a0 += lse[r] - zy[r]
            a1 += lse[r + 1] - zy[r + 1]
            a2 += lse[r + 2] - zy[r + 2]
            a3 += lse[r + 3] - zy[r + 3]
            a4 += lse[r + 4] - zy[r + 4]
            a5 += lse[r + 5] - zy[r + 5]
            a6 += lse[r + 6] - zy[r + 6]
            a7 += lse[r + 7] - zy[r + 7]
    acc = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
    for r in range(m, n):
        if has_weight:
            acc += weights[first + r] * (lse[r] - zy[r])
        else:
            acc += lse[r] - zy[r]
    return acc


# --------------------------------------------------------------------------------------
# Tiling helpers
# --------------------------------------------------------------------------------------
@njit(**JIT)
def _feature_blocks(d):
    """Edges of the fixed feature blocks: about FEATURE_BLOCK wide, multiples of 16."""
    return _split_features(d, max(1, (d + FEATURE_BLOCK // 2) // FEATURE_BLOCK))


@njit(**JIT)
def _gradient_blocks(d, threads):
    """Edges of the feature blocks of linear_softmax_ce's dW: GRAD_BLOCKS_PER_THREAD per
    thread, at most GRAD_FEATURE_BLOCKS, at least GRAD_MIN_FEATURE_WIDTH wide.

    The blocks are there for the threads to share (at c = 10 the class tiles give them no
    work to split) and cost their own overhead: the backward tile's loop over a block's
    features is shorter, its coefficients loaded once per block (784 features, 10 classes,
    one thread: 575-780 cycles a row in 8 blocks, 365-560 in 2). Their number may follow the
    thread count because no value depends on it: every element of dW is summed over the rows
    in the same order whatever block holds it.
    """
    most = min(GRAD_BLOCKS_PER_THREAD * max(threads, 1), GRAD_FEATURE_BLOCKS)
    return _split_features(d, max(1, min(most, d // GRAD_MIN_FEATURE_WIDTH)))


@njit(**JIT)
def _split_features(d, nfb):
    """Edges of ``nfb`` (at most) near-equal feature blocks whose edges are multiples of 16."""
    q = (d + 15) // 16
    nfb = min(nfb, q) if d > 0 else 1
    edges = np.empty(nfb + 1, dtype=np.intp)
    for j in range(nfb + 1):
        edges[j] = min(d, 16 * ((q * j) // nfb))
    edges[nfb] = d
    return edges


# --------------------------------------------------------------------------------------
# Matrix-product tiles (working dtype, vectorised along the features)
# --------------------------------------------------------------------------------------
@njit(**JIT)
def _five_class_tiles(n):
    """How many of ``n`` classes go to tiles of 5: the most that leave a multiple of 4 for
    the tiles of 4 (no class computed twice), or none when no count does (n = 1, 2, 3, 6, 7,
    11: the last tile of 4 is ragged, as before the tiles of 5 existed)."""
    for a in range(n // 5, -1, -1):
        if (n - 5 * a) % 4 == 0:
            return a
    return 0


@njit(**JIT)
def _forward_tile(A, rows, f0, f1, W, k0, k1, P, p0, ahead, tile_rows=FORWARD_TILE_ROWS):
    """P[p0 + r, k] = sum_{f0 <= f < f1} A[rows[r], f] W[k, f] for k in [k0, k1).

    Tiles of ``tile_rows`` rows (4 or 2: ``FORWARD_TILE_ROWS``, by the CPU's vector registers)
    x 5 classes (``_dot_4x5``, ``_dot_2x5``) and x 4 classes (``_dot_4x4``, ``_dot_2x4``), as
    many of 5 as leave whole tiles of 4 (``_five_class_tiles``: 10 classes are 5 + 5, 13 are
    5 + 4 + 4, 16 are 4 x 4). Each accumulator is a vectorised (reassociated) reduction along
    the features whose order does not depend on the class tile it is in, so the class split
    changes no bit, only speed. The row count is fixed per CPU; the two row counts agree to
    rounding, not always to the bit: LLVM's cost model vectorises each tile's loop on its own,
    and on an AVX-512 Xeon (tuned for as ``rocketlake``) ``_dot_2x4`` sums in another order
    than the other three tiles, which agree. Ragged edges recompute the last row/class
    (same value written twice). While a group of rows is computed, the rows ``ahead[r]`` (the
    next tile or batch) are prefetched over [f0, f1).
    """
    nr = rows.shape[0]
    na = ahead.shape[0]
    step = max(1, 64 // A.itemsize)  # elements per cache line
    k5 = k0 + 5 * _five_class_tiles(k1 - k0)
    r = 0
    while r < nr:
        for q in range(r, min(r + tile_rows, na)):
            rq = ahead[q]
            for f in range(f0, f1, step):
                _prefetch(A, rq, f)
        ra = r
        rb = min(r + 1, nr - 1)
        x0 = A[rows[ra], f0:f1]
        x1 = A[rows[rb], f0:f1]
        k = k0
        if tile_rows == 4:
            rc = min(r + 2, nr - 1)
            rd = min(r + 3, nr - 1)
            x2 = A[rows[rc], f0:f1]
            x3 = A[rows[rd], f0:f1]
            while k < k5:
                _dot_4x5(x0, x1, x2, x3, W, f0, f1, k, P, p0 + ra, p0 + rb, p0 + rc, p0 + rd)
                k += 5
            while k < k1:
                _dot_4x4(x0, x1, x2, x3, W, f0, f1, k, k1, P, p0 + ra, p0 + rb, p0 + rc,
                         p0 + rd)
                k += 4
        else:
            while k < k5:
                _dot_2x5(x0, x1, W, f0, f1, k, P, p0 + ra, p0 + rb)
                k += 5
            while k < k1:
                _dot_2x4(x0, x1, W, f0, f1, k, k1, P, p0 + ra, p0 + rb)
                k += 4
        r += tile_rows


@njit(**JIT_INLINE)
def _dot_4x5(x0, x1, x2, x3, W, f0, f1, k, P, pa, pb, pc, pd):
    """P[p, k + j] = <x_r, W[k + j, f0:f1]> for the 4 rows x_r (P rows pa..pd), j < 5.

    20 vector accumulators, 4 + 5 loads per step: 29 of AVX-512's 32 registers. Tiles of 4
    give more of each step to loads and computed 10 classes as 12: the forward tile with
    tiles of 4 only was 1.19-1.25x slower at 10 and 13 classes and 1.03-1.06x at 100 (one
    thread, uint8, float32 and float64 rows, compiled side by side in one process).
    """
    _wide_vectors()
    zero = W.dtype.type(0)
    w0 = W[k, f0:f1]
    w1 = W[k + 1, f0:f1]
    w2 = W[k + 2, f0:f1]
    w3 = W[k + 3, f0:f1]
    w4 = W[k + 4, f0:f1]
    a00 = a01 = a02 = a03 = a04 = zero
    a10 = a11 = a12 = a13 = a14 = zero
    a20 = a21 = a22 = a23 = a24 = zero
    a30 = a31 = a32 = a33 = a34 = zero
    for f in range(x0.shape[0]):
        u0 = x0[f]
        u1 = x1[f]
        u2 = x2[f]
        u3 = x3[f]
        v0 = w0[f]
        v1 = w1[f]
        v2 = w2[f]
        v3 = w3[f]
        v4 = w4[f]
        a00 += u0 * v0
        a01 += u0 * v1
        a02 += u0 * v2
        a03 += u0 * v3
        a04 += u0 * v4
        a10 += u1 * v0
        a11 += u1 * v1
        a12 += u1 * v2
        a13 += u1 * v3
        a14 += u1 * v4
        a20 += u2 * v0
        a21 += u2 * v1
        a22 += u2 * v2
        a23 += u2 * v3
        a24 += u2 * v4
        a30 += u3 * v0
        a31 += u3 * v1
        a32 += u3 * v2
        a33 += u3 * v3
        a34 += u3 * v4
    _store_5(P, pa, k, a00, a01, a02, a03, a04)
    _store_5(P, pb, k, a10, a11, a12, a13, a14)
    _store_5(P, pc, k, a20, a21, a22, a23, a24)
    _store_5(P, pd, k, a30, a31, a32, a33, a34)


@njit(**JIT_INLINE)
def _store_5(P, p, k, s0, s1, s2, s3, s4):
    """P[p, k:k + 5] = s0..s4."""
    P[p, k] = s0
    P[p, k + 1] = s1
    P[p, k + 2] = s2
    P[p, k + 3] = s3
    P[p, k + 4] = s4


@njit(**JIT_INLINE)
def _dot_4x4(x0, x1, x2, x3, W, f0, f1, k, k1, P, pa, pb, pc, pd):
    """P[p, k + j] = <x_r, W[k + j, f0:f1]> for the 4 rows x_r (P rows pa..pd) and the
    classes k..k + 3, clamped to k1 - 1 (a ragged tile writes its last class again).

    16 vector accumulators, 4 + 4 loads per step.
    """
    _wide_vectors()
    zero = W.dtype.type(0)
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
    for f in range(x0.shape[0]):
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
    P[pa, k] = a00
    P[pa, kb] = a01
    P[pa, kc] = a02
    P[pa, kd] = a03
    P[pb, k] = a10
    P[pb, kb] = a11
    P[pb, kc] = a12
    P[pb, kd] = a13
    P[pc, k] = a20
    P[pc, kb] = a21
    P[pc, kc] = a22
    P[pc, kd] = a23
    P[pd, k] = a30
    P[pd, kb] = a31
    P[pd, kc] = a32
    P[pd, kd] = a33


@njit(**JIT_INLINE)
def _dot_2x5(x0, x1, W, f0, f1, k, P, pa, pb):
    """``_dot_4x5`` for 2 rows: 10 accumulators and 7 loads, within 16 vector registers."""
    _wide_vectors()
    zero = W.dtype.type(0)
    w0 = W[k, f0:f1]
    w1 = W[k + 1, f0:f1]
    w2 = W[k + 2, f0:f1]
    w3 = W[k + 3, f0:f1]
    w4 = W[k + 4, f0:f1]
    a00 = a01 = a02 = a03 = a04 = zero
    a10 = a11 = a12 = a13 = a14 = zero
    for f in range(x0.shape[0]):
        u0 = x0[f]
        u1 = x1[f]
        v0 = w0[f]
        v1 = w1[f]
        v2 = w2[f]
        v3 = w3[f]
        v4 = w4[f]
        a00 += u0 * v0
        a01 += u0 * v1
        a02 += u0 * v2
        a03 += u0 * v3
        a04 += u0 * v4
        a10 += u1 * v0
        a11 += u1 * v1
        a12 += u1 * v2
        a13 += u1 * v3
        a14 += u1 * v4
    _store_5(P, pa, k, a00, a01, a02, a03, a04)
    _store_5(P, pb, k, a10, a11, a12, a13, a14)


@njit(**JIT_INLINE)
def _dot_2x4(x0, x1, W, f0, f1, k, k1, P, pa, pb):
    """``_dot_4x4`` for 2 rows (classes clamped to k1 - 1 as there)."""
    _wide_vectors()
    zero = W.dtype.type(0)
    kb = min(k + 1, k1 - 1)
    kc = min(k + 2, k1 - 1)
    kd = min(k + 3, k1 - 1)
    w0 = W[k, f0:f1]
    w1 = W[kb, f0:f1]
    w2 = W[kc, f0:f1]
    w3 = W[kd, f0:f1]
    a00 = a01 = a02 = a03 = zero
    a10 = a11 = a12 = a13 = zero
    for f in range(x0.shape[0]):
        u0 = x0[f]
        u1 = x1[f]
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
    P[pa, k] = a00
    P[pa, kb] = a01
    P[pa, kc] = a02
    P[pa, kd] = a03
    P[pb, k] = a10
    P[pb, kb] = a11
    P[pb, kc] = a12
    P[pb, kd] = a13


@njit(**JIT)
def _backward_tile(A, rows, f0, f1, G, g0, k0, k1, Out, o0):
    """Out[k, o0 + (f - f0)] += sum_r G[g0 + r, k] A[rows[r], f] for k in [k0, k1), f in [f0, f1).

    Groups of 4 rows x 4 classes: the 16 coefficients G stay in registers, 4 row loads and
    4 accumulator loads/stores feed 16 FMAs (8 rows x 2 classes spilled the coefficients and
    ran at half this speed). Rows are added in a fixed order: groups of 4, then the rest.
    """
    _wide_vectors()
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
@njit(**JIT_INLINE)
def _row_max(z):
    """max_k z_k in float64, skipping NaN (the comparison is false); -inf if all are -inf/NaN.

    Eight independent running maxima: one select chain would cost its latency per element.
    Short rows (c < SHORT_ROW) take one chain: the rows of a block overlap in the CPU anyway,
    and the eight-way version cost 10 % more of softmax-CE at 65536 x 10. The maximum is exact,
    so both give the same value (up to the sign of a zero maximum, which no caller sees:
    z - (+-0) and exp of it are the same).
    """
    _wide_vectors()
    c = z.shape[0]
    if c < SHORT_ROW:
        m = -np.inf
        for k in range(c):
            v = np.float64(z[k])
            m = v if v > m else m
        return m
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


@njit(**JIT_INLINE)
def _row_exp(z, e):
    """Return (max, sum exp(z - max)) of the row ``z`` and write exp(z - max) into ``e``.

    The max skips NaN (the comparison is false); a NaN still reaches the sum through exp.
    """
    _wide_vectors()
    c = z.shape[0]
    m = _row_max(z)
    if c > 0 and m == -np.inf:
        m = np.float64(z[0])  # all -inf (or NaN): -inf - -inf makes the sum NaN as it must
    if z.itemsize == 4 and e.itemsize == 4:  # float32 logits: float32 exp, float64 sum
        _exp_row_f32(z, m, e)
    else:
        for k in range(c):
            e[k] = _exp(np.float64(z[k]) - m)
    # A separate, load-only loop: a reduction in a loop that also stores gets a runtime alias
    # check, and its scalar fallback (taken when two buffers happen to lie close in memory)
    # sums in another order - results would depend on the heap layout.
    s = 0.0
    for k in range(c):
        s += np.float64(e[k])
    return m, s


@njit(**JIT)
def _exp_block(logits, r0, nr, shifted, ez, mx, sums):
    """exp(z - max) of rows [r0, r0 + nr) as one flat block.

    OUT ``shifted`` and ``ez`` (nr * c values of the logits' dtype): z - max, then its exp;
    ``mx`` and ``sums`` (nr, float64): each row's max and sum of exp. The rows are shifted
    one by one, then exp runs in one long vectorised loop over the block (per-row loops of
    c ~ 10 leave most of the work to scalar remainders: row by row, softmax took 2.4x
    Cython's time at 1,000,000 x 10). exp reads ``shifted`` and writes ``ez``: in place, the
    vectoriser's overlap check fails and the loop runs scalar. The max skips NaN (the
    comparison is false); a row of -inf (or NaN) takes its first value, so that -inf - -inf
    makes its sum NaN as it must.
    """
    _wide_vectors()
    c = logits.shape[1]
    for r in range(nr):
        z = logits[r0 + r]
        m = _row_max(z)
        if c > 0 and m == -np.inf:
            m = np.float64(z[0])
        mx[r] = m
        for k in range(c):
            shifted[r * c + k] = np.float64(z[k]) - m  # exact, then rounded once
    if ez.itemsize == 4:  # float32: exp in float32, 16 lanes (as the Cython kernel)
        _exp_row_f32(shifted[:nr * c], 0.0, ez[:nr * c])
    else:
        for q in range(nr * c):
            ez[q] = _exp(shifted[q])
    # a separate, load-only loop (see _row_exp)
    for r in range(nr):
        s = 0.0
        for k in range(c):
            s += np.float64(ez[r * c + k])
        sums[r] = s


@njit(**JIT_INLINE)
def _grad_row(g, e, inv_s, scale, yi):
    """One row of dL/dz: g_k = scale (e_k inv_s - [k == yi]), with p_k = e_k inv_s and
    scale = w_i / sum(w)."""
    for k in range(g.shape[0]):
        g[k] = (e[k] * inv_s) * scale
    g[yi] = (e[yi] * inv_s - 1.0) * scale


@njit(**JIT)
def _softmax_ce_rows(Z, G, q0, q1, r0, y, sample_weight, has_weight, inv_wsum):
    """Rows [q0, q1) of a chunk starting at data row r0: G = w_i / sum(w) (p - onehot).

    Returns sum_i w_i l_i over the rows, in row order. Rows of fewer than CE_FLAT_CLASSES
    classes take exp as one flat block (:func:`_softmax_ce_flat`): row by row, an exp loop of
    10 classes left most of its work to scalar remainders (the softmax phase of
    ``linear_softmax_ce`` at 256 x 784 x 10 cost 25 cycles a logit). Both give the same bits.
    """
    _wide_vectors()
    c = Z.shape[1]
    if c < CE_FLAT_CLASSES:
        return _softmax_ce_flat(Z, G, q0, q1, r0, y, sample_weight, has_weight, inv_wsum)
    nr = max(q1 - q0, 0)
    stats = np.empty((3, nr), dtype=np.float64)  # sum of exp, its log, z_y - max
    e = np.empty(c, dtype=Z.dtype)  # float32 logits: exp in float32 (see _row_exp)
    for r in range(q0, q1):
        i = r0 + r
        yi = y[i]
        mx, s = _row_exp(Z[r], e)
        stats[0, r - q0] = s
        # z_y - max before G (which may be Z itself) is written
        stats[2, r - q0] = _shifted_minus(np.float64(Z[r, yi]), mx, 0.0)
        wi = sample_weight[i] if has_weight else 1.0
        _grad_row(G[r], e, 1.0 / s, wi * inv_wsum, yi)
    return _weighted_ce_sum(stats, r0 + q0, nr, sample_weight, has_weight)


@njit(**JIT)
def _softmax_ce_flat(Z, G, q0, q1, r0, y, sample_weight, has_weight, inv_wsum):
    """:func:`_softmax_ce_rows` with exp(z - max) of all the rows as one flat block
    (``_exp_block``); the row-wise softmax-CE kernel runs its blocks of rows through it."""
    _wide_vectors()
    c = Z.shape[1]
    nr = max(q1 - q0, 0)
    stats = np.empty((4, nr), dtype=np.float64)  # sum of exp, its log, z_y - max, max
    work = np.empty((2, nr * c), dtype=Z.dtype)  # z - max, then exp (float32: in float32)
    ez = work[1]
    _exp_block(Z, q0, nr, work[0], ez, stats[3], stats[0])
    for r in range(q0, q1):
        i = r0 + r
        yi = y[i]
        # z_y - max before G (which may be Z itself) is written
        stats[2, r - q0] = _shifted_minus(np.float64(Z[r, yi]), stats[3, r - q0], 0.0)
        wi = sample_weight[i] if has_weight else 1.0
        _grad_row(G[r], ez[(r - q0) * c:(r - q0 + 1) * c], 1.0 / stats[0, r - q0],
                  wi * inv_wsum, yi)
    return _weighted_ce_sum(stats, r0 + q0, nr, sample_weight, has_weight)


@njit(**JIT_INLINE)
def _weighted_ce_sum(stats, first, nr, sample_weight, has_weight):
    """sum_r w_r l_r in row order, l_r = log s_r - (z_y - max)_r; ``stats`` rows: the sums of
    exp (read), their logs (written here: a vectorised loop of their own, see _log_each),
    z_y - max. ``first`` is the data index of row 0 (its sample weight)."""
    _log_each(stats[0], stats[1])
    return _ce_sum(stats[1], stats[2], sample_weight, first, nr, has_weight)


# --------------------------------------------------------------------------------------
# Busy machines: a team that waits on a descheduled thread falls back to one thread
# --------------------------------------------------------------------------------------
#: A parallel region this many times slower than the fastest seen, and at least
#: WATCH_MIN_CYCLES long, waited for a descheduled thread (an idle machine: < 3x).
WATCH_SLOWDOWN = 40
WATCH_MIN_CYCLES = 500_000
#: Stalls among the regions of one call that make the team fall back to one thread.
WATCH_STALLS = 2


@njit(**JIT)
def watch_region(watch, cycles):
    """Account one parallel region of ``cycles``; return True when the team should stop and
    leave the rest of the call to one thread (``watch``: int64[3] = fastest region, stalls,
    fallen back). Jitted code cannot change its own thread count and stay cacheable, so the
    kernel returns where it stopped and the Python wrapper resumes it on one thread."""
    if watch[2]:
        return True
    if watch[0] == 0 or cycles < watch[0]:
        watch[0] = cycles
    elif cycles > WATCH_SLOWDOWN * watch[0] and cycles > WATCH_MIN_CYCLES:
        watch[1] += 1
        if watch[1] >= WATCH_STALLS:
            watch[2] = 1
            return True
    return False
