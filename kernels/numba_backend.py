"""Numba backend: fused softmax / cross-entropy / linear-model kernels, JIT-compiled and cached.

Design
------
* Per-row maths (max, sum of exp, log-sum-exp) is done in float64 whatever the input dtype; the
  matrix products (X coef^T and G^T X) run in the working dtype with vectorised FMAs and tiles of
  4 rows x 5 or 4 classes (forward) and 4 rows x 4 classes (backward), which keep the loads
  per FMA low enough for L1 to feed the FMA units.
* Vector width: on AVX-512 CPUs LLVM's tuning (``prefer-256-bit``, set by Numba for the whole
  process) keeps every loop on 256-bit registers. The tiles and the row loops of the softmax
  call ``_numba_math._wide_vectors()``, two LLVM function attributes that let them use
  512-bit registers (inlined into a kernel, they keep them): measured against the same code
  without the hint in one process, SGD epochs 1.04-1.24x, ``linear_softmax_ce`` at c = 10
  1.01-1.09x, softmax-CE 1.05-1.15x. Other CPUs ignore the attributes.
* ``exp``/``log`` are our own branch-free float64 versions (<= 1 ulp over the range used) so that
  LLVM vectorises the row loops; libm calls would stay scalar (about 12 ns each). They
  vectorise only in loops of their own: the row-wise kernels shift a block of rows, take
  its exp in one flat loop (``_exp_block``) and the rows' logs in another (``_log_each``).
  Inside the loop that summed the loss, the log ran one row at a time with its branch
  mispredicted (softmax-CE 1,000,000 x 10 float32: 1.78x Cython's time before, 1.24-1.39x
  after; log_softmax 2.9x faster).
* Determinism: every parallel loop runs over tiles whose shape depends only on the problem shape
  (see ``_numba_config``); a tile writes only its own outputs and every reduction over tiles
  (loss partials, logits partials over feature blocks) is summed serially in tile order. No
  prange reduction variables are used (their per-thread partials depend on the thread count),
  and no loop both stores and accumulates a scalar: LLVM guards such loops with a runtime
  alias check whose scalar fallback sums in another order, so the result would depend on
  where the heap placed the buffers (seen as rare 1-ulp differences between identical calls).
  Hence results are bitwise identical for any ``n_threads``, which also lets small problems run
  on one thread without changing the result.
* Small calls: a parallel kernel on one thread still launches each prange loop through the
  threading layer. ``linear_softmax_ce`` calls whose work is too small for a second thread
  run a serial twin (``with_serial_twin``: the same source without ``parallel``), chosen by
  the shape alone because the two compilations may reassociate a float64 sum differently.
* Threads never write one cache line: ``linear_softmax_ce`` (like ``sgd_epoch``) sums dW per
  feature block into a buffer of its own whose rows are whole lines, copied into ``grad_coef``
  at the end (written in place, the block edges of every class row were shared, and 2 threads
  ran the backward pass slower than one), over chunks of rows whose X stays in cache for the
  backward pass.
* ``sgd_epoch`` runs the whole epoch in one compiled call. The features are cut into a fixed
  number of blocks; a single parallel region per minibatch does, for each block, the backward
  pass and weight update of the previous batch and the forward pass (partial logits) of this
  batch, prefetches the next batch's rows and gathers this batch's labels and weights
  (their random reads stalled the one thread that runs between regions: its part of a
  batch of 32 x 10 took 11,000-12,400 cycles, 5,100-5,600 with them gathered, on an AMD
  EPYC). Between regions the calling thread sums the partial logits in block order and
  computes the softmax, so there is one region launch per batch (an empty region: 1.4 us on
  one thread and 2.7 us on two with the OpenMP layer on a Xeon, 1.0 and 1.65 us on an AMD
  EPYC).
* Tile shapes follow the vector registers of the CPU Numba compiles for
  (``_numba_config.VECTOR_REGISTERS``): the forward tile holds 4 rows on AVX-512 and 2 on
  CPUs with 16 registers, where 4 spilled its accumulators. The row count changes no bits.
* For large d x c the products go to BLAS (``_numba_gemm``: SciPy's sgemm/dgemm called from
  compiled code in fixed tiles, BLAS kept on one thread while our threads share the tiles);
  the path is chosen by shape (``_paths.py``, the same rule as the Cython backend). Below the
  crossover the register tiles above match OpenBLAS at batch 32 and avoid its call overhead.
"""

import time
import types

import numba
import numpy as np
from numba import njit, prange

from . import _numba_gemm
from ._blas import single_threaded_blas
from ._governor import GOVERNOR
from ._guard import check_linear, check_logits, check_sgd
from ._numba_config import (
    CHUNK_ELEMS,
    CHUNK_ROWS,
    CHUNK_X_BYTES,
    CLASS_GROUP_MIN,
    CLASS_TILE,
    JIT,
    LINEAR_MIN_WORK_PER_THREAD,
    MIN_WORK_PER_THREAD,
    PJIT,
    ROW_TILE,
    SOFTMAX_BLOCK_ELEMS,
    SOFTMAX_ROWWISE_CLASSES,
    read_only,
)
from ._numba_math import (
    _backward_tile,
    _ce_sum,
    _cycles,
    _exp,
    _exp_block,
    _feature_blocks,
    _forward_tile,
    _gradient_blocks,
    _log_each,
    _row_exp,
    _row_max,
    _shifted_minus,
    _softmax_ce_flat,
    _softmax_ce_rows,
    _split_features,
    _wide_vectors,
    watch_region,
)
from ._paths import linear_shapes, prefers_gemm

__all__ = ["softmax", "log_softmax", "softmax_ce", "linear_softmax_ce", "sgd_epoch"]

_NO_WEIGHTS = np.empty(0, dtype=np.float64)
_NO_WEIGHTS.flags.writeable = False  # an input like any other (read_only)
_MAX_THREADS = numba.config.NUMBA_NUM_THREADS


def _call(kernel, n_threads, work, *args, timed=True, min_work=MIN_WORK_PER_THREAD,
          variant=()):
    """Run ``kernel(*args)`` on min(n_threads, work // min_work) threads.

    The thread count never changes a result (fixed tiles), so small problems may use fewer
    threads than asked, and a busy machine one (:data:`GOVERNOR`, which also times the call
    unless the kernel watches itself: ``timed=False``; it compares calls of the same kernel,
    work, dtype and shape of the first argument, and ``variant``: what else sets the speed).
    A call whose work alone asks for one thread runs the kernel's serial twin when it has
    one (:func:`with_serial_twin`). The caller's numba thread count is restored afterwards.
    """
    nt = _planned_threads(n_threads, work, min_work)
    if work // min_work < 2 and kernel in SERIAL_TWINS:
        return SERIAL_TWINS[kernel](*args)
    nt = GOVERNOR.threads(nt)
    if timed:
        kind = (args[0].dtype.num, args[0].shape, variant)
        run = lambda: GOVERNOR.timed(kernel, nt, work, args, kind)  # noqa: E731
    else:
        run = lambda: kernel(*args)  # noqa: E731
    old = numba.get_num_threads()
    if nt == old:
        return run()
    numba.set_num_threads(nt)
    try:
        return run()
    finally:
        numba.set_num_threads(old)


def _planned_threads(n_threads, work, min_work):
    """The threads a call of ``work`` gets before the governor's advice: ``n_threads``, at
    most the pool, and no more than the work fills at ``min_work`` each."""
    return max(1, min(int(n_threads), _MAX_THREADS, work // min_work))


#: parallel kernel -> the same function compiled without ``parallel`` (:func:`with_serial_twin`)
SERIAL_TWINS = {}


def with_serial_twin(kernel):
    """Register a serial twin of the parallel dispatcher ``kernel``; returns ``kernel``.

    On one thread a parallel kernel still launches every prange loop through Numba's
    threading layer, and :func:`_call` sets and restores the thread count around it: on
    small calls that is most of the time (``linear_softmax_ce`` on 1 row x 784 x 10: 18.3 us
    parallel, 10.9 us serial; Cython 5.5). The twin is the same Python function compiled
    with ``JIT`` (prange runs as range over the same tiles), lazily, on its first call.

    It runs the calls whose *work* is too small for a second thread — a choice made by the
    shape alone, never by ``n_threads`` or the governor — because the two compilations may
    round differently: LLVM reassociates the float64 sums (fastmath) differently in the
    outlined parallel loop and in the serial function (a twin of the softmax-CE kernel gave
    a loss one ulp away on 33 x 13). A shape therefore always runs the same machine code,
    and the results stay the same bits for any ``n_threads``.

    Only ``linear_softmax_ce`` has one: a softmax-CE twin gained 10 % at 256 x 10 but lost
    1-4 % from 2,048 rows on (the serial compilation of its row loops is a little slower),
    where most of its one-thread calls are.

    The twin gets a name of its own because Numba's on-disk cache is indexed by the
    function's name: a second dispatcher of the same function would load the parallel
    machine code.
    """
    func = getattr(kernel, "py_func", None)
    if func is None:  # NUMBA_DISABLE_JIT=1: the kernel is the Python function itself
        return kernel
    twin = types.FunctionType(func.__code__, func.__globals__, func.__name__ + "_serial",
                              func.__defaults__, func.__closure__)
    twin.__qualname__ = func.__qualname__ + "_serial"
    twin.__module__ = func.__module__
    twin.__doc__ = func.__doc__
    SERIAL_TWINS[kernel] = njit(**JIT)(twin)
    return kernel


# --------------------------------------------------------------------------------------
# softmax / log_softmax
# --------------------------------------------------------------------------------------
@njit(**PJIT)
def _softmax_kernel(logits, out, log):
    n, c = logits.shape
    rb = max(1, SOFTMAX_BLOCK_ELEMS // max(c, 1))
    nblk = (n + rb - 1) // rb
    rowwise = c >= SOFTMAX_ROWWISE_CLASSES
    for b in prange(nblk):
        r0 = b * rb
        nr = min(n, r0 + rb) - r0
        stats = np.empty((3, nr), dtype=np.float64)  # max, sum of exp, log of the sum
        if rowwise:  # long rows: exp(z - max) one row at a time
            e = np.empty(c, dtype=logits.dtype)  # float32 logits: exp in float32
            for r in range(nr):
                stats[0, r], stats[1, r] = _row_exp(logits[r0 + r], e)
                if not log:
                    inv = 1.0 / stats[1, r]
                    o = out[r0 + r]
                    for k in range(c):
                        o[k] = e[k] * inv
        else:  # short rows: the block's exp as one flat loop
            ez = np.empty((2, nr * c), dtype=logits.dtype)  # z - max, its exp
            _exp_block(logits, r0, nr, ez[0], ez[1], stats[0], stats[1])
            if not log:
                for r in range(nr):
                    o = out[r0 + r]
                    inv = 1.0 / stats[1, r]
                    for k in range(c):
                        o[k] = ez[1, r * c + k] * inv
        if log:
            _log_each(stats[1], stats[2])  # in a loop of its own (see _log_each)
            for r in range(nr):
                z = logits[r0 + r]
                o = out[r0 + r]
                m = stats[0, r]
                lse = stats[2, r]
                # (z - max) - logsumexp, never z - (max + logsumexp) (PyTorch #11752)
                for k in range(c):
                    o[k] = _shifted_minus(np.float64(z[k]), m, lse)


def softmax(logits, out, n_threads=1):  # IN logits (n, c); OUT out (n, c), may alias logits
    """Row-wise softmax: out_ik = exp(z_ik - m_i) / sum_j exp(z_ij - m_i), m_i = max_j z_ij."""
    check_logits(logits, out)
    (logits,) = read_only(logits)
    _call(_softmax_kernel, n_threads, logits.size, logits, out, False, variant=False)


def log_softmax(logits, out, n_threads=1):  # IN logits (n, c); OUT out (n, c)
    """Row-wise log-softmax: out_ik = (z_ik - m_i) - log sum_j exp(z_ij - m_i)."""
    check_logits(logits, out)
    (logits,) = read_only(logits)
    _call(_softmax_kernel, n_threads, logits.size, logits, out, True, variant=True)


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
        # e = exp(z - m) as one flat block per block of rows; G = w / sum(w) (e / s - onehot);
        # l = log s - (z_y - m), summed in row order (see _softmax_ce_flat)
        partial[b] = _softmax_ce_flat(logits, out, r0, min(n, r0 + rb), 0, y, sample_weight,
                                      has_weight, inv_wsum)
    total = 0.0
    for b in range(nblk):
        total += partial[b]
    return total * inv_wsum


def softmax_ce(logits, y, sample_weight, out, n_threads=1):
    """(Weighted) mean cross-entropy L = sum_i w_i l_i / sum_i w_i, gradient written to ``out``.

    IN logits (n, c) float32/float64, y (n,) intp, sample_weight (n,) float64 or None;
    OUT out (n, c), may alias logits. l_i = log sum_k exp(z_ik - m_i) - (z_iy - m_i).
    """
    check_logits(logits, out, y, sample_weight)
    has_weight = sample_weight is not None
    logits, y, w = read_only(logits, y, sample_weight if has_weight else _NO_WEIGHTS)
    return float(_call(_softmax_ce_kernel, n_threads, logits.size, logits, y, w, has_weight, out))


# --------------------------------------------------------------------------------------
# linear_softmax_ce
# --------------------------------------------------------------------------------------
@with_serial_twin
@njit(**PJIT)
def _linear_kernel(X, x_scale, coef, intercept, y, sample_weight, has_weight, alpha,
                   grad_coef, grad_intercept, threads):
    n, d = X.shape
    c = coef.shape[0]
    wdt = coef.dtype
    wsum = _weight_sum(n, sample_weight, has_weight)
    inv_wsum = 1.0 / wsum
    # chunk of rows: multiple of ROW_TILE, chunk x classes <= CHUNK_ELEMS (at least one tile)
    rc = min(CHUNK_ELEMS // max(c, 1), CHUNK_ROWS, CHUNK_X_BYTES // max(d * X.itemsize, 1))
    rc = max(ROW_TILE, rc // ROW_TILE * ROW_TILE)
    rc = min(rc, max(n, 1))
    nchunk = (n + rc - 1) // rc
    nct = (c + CLASS_TILE - 1) // CLASS_TILE
    # class groups: one per thread, each the forward and backward of its classes (X read
    # twice by the same thread, from its own cache), or fixed class tiles x feature blocks
    ncg = _class_groups(c, threads)
    edges = _split_features(d, 1) if ncg > 0 else _gradient_blocks(d, threads)
    nfb = edges.shape[0] - 1
    Z = np.empty((rc, c), dtype=np.float64)  # logits of the chunk
    G = np.empty((rc, c), dtype=wdt)  # dL/dz of the chunk (unscaled by x_scale)
    ntile_max = (rc + ROW_TILE - 1) // ROW_TILE
    partial = np.zeros(ntile_max, dtype=np.float64)
    gb = np.zeros(c, dtype=np.float64)
    reg = np.zeros(c, dtype=np.float64)
    local_rows = np.arange(rc)
    # dW per feature block, rows of whole cache lines (see the module notes)
    grad_blocks = np.zeros((nfb, c, _padded_width(edges)), dtype=wdt)
    total = 0.0
    for ch in range(nchunk):
        r0 = ch * rc
        r1 = min(n, r0 + rc)
        m = r1 - r0
        Xc = X[r0:r1]
        nrt = (m + ROW_TILE - 1) // ROW_TILE
        last = ch == nchunk - 1
        # 1. z = x_scale (X coef^T) + b: tiles of ROW_TILE rows x CLASS_TILE classes, or
        #    every row of a class group (the next ROW_TILE rows prefetched ahead)
        if ncg > 0:
            for g in prange(ncg):
                k0 = g * c // ncg
                k1 = (g + 1) * c // ncg
                _forward_tile(Xc, local_rows[:m], 0, d, coef, k0, k1, Z, 0,
                              local_rows[min(m, ROW_TILE):m])
                _scale_logits(Z, 0, m, k0, k1, x_scale, intercept)
        else:
            for t in prange(nrt * nct):
                rt = t // nct
                ct = t - rt * nct
                q0 = rt * ROW_TILE
                q1 = min(m, q0 + ROW_TILE)
                k0 = ct * CLASS_TILE
                k1 = min(c, k0 + CLASS_TILE)
                _forward_tile(Xc, local_rows[q0:q1], 0, d, coef, k0, k1, Z, q0,
                              local_rows[q1:min(m, q1 + ROW_TILE)])
                _scale_logits(Z, q0, q1, k0, k1, x_scale, intercept)
        # 2. softmax and loss per row tile; G = w_i / sum(w) (p - onehot)
        for rt in prange(nrt):
            q0 = rt * ROW_TILE
            partial[rt] = _softmax_ce_rows(Z, G, q0, min(m, q0 + ROW_TILE), r0, y,
                                           sample_weight, has_weight, inv_wsum)
        for rt in range(nrt):
            total += partial[rt]
        # 3. grad_coef += G^T X per class group or per tile (class tile x feature block),
        #    rows in fixed order, and the intercept sums; a class group finishes its rows of
        #    grad_coef after the last chunk (no region of its own)
        if ncg > 0:
            for g in prange(ncg):
                k0 = g * c // ncg
                k1 = (g + 1) * c // ncg
                _backward_tile(Xc, local_rows[:m], 0, d, G, 0, k0, k1, grad_blocks[0], 0)
                _intercept_sums(G, m, k0, k1, gb)
                if last:
                    _finish_classes(k0, k1, grad_coef, grad_intercept, grad_blocks, edges, coef,
                                    gb, x_scale, alpha, reg)
        else:
            for t in prange(nct * nfb):
                ct = t // nfb
                fb = t - ct * nfb
                k0 = ct * CLASS_TILE
                k1 = min(c, k0 + CLASS_TILE)
                f0 = edges[fb]
                f1 = edges[fb + 1]
                _backward_tile(Xc, local_rows[:m], f0, f1, G, 0, k0, k1, grad_blocks[fb], 0)
                if fb == 0:
                    _intercept_sums(G, m, k0, k1, gb)
    # 4. scale, add the L2 term; its loss contribution summed per class row in order
    if ncg == 0:
        for k in prange(c):
            _finish_classes(k, k + 1, grad_coef, grad_intercept, grad_blocks, edges, coef, gb,
                            x_scale, alpha, reg)
    sq = 0.0
    for k in range(c):
        sq += reg[k]
    return total * inv_wsum + 0.5 * alpha * sq


@njit(**JIT)
def _class_groups(c, threads):
    """Class groups of ``linear_softmax_ce`` on ``threads`` threads: one per thread when the
    classes fit one class tile and give every thread at least CLASS_GROUP_MIN classes, else
    0 (row tiles forward, class tiles x feature blocks backward).

    Split by rows forward and by features backward, each thread read in the backward pass the
    rows the other one had just brought into its cache (256 x 784 x 10 float32: two threads
    gained 1.6x forward but 1.3x backward); split by classes, as the Cython kernel, each
    thread reads all of X in both passes, the second time from its own cache. The groups may
    follow the thread count: no value depends on them (each logit and each element of dW is
    the same reduction in any tile).
    """
    if c > CLASS_TILE or threads < 2 or c < CLASS_GROUP_MIN * threads:
        return 0
    return threads


@njit(**JIT)
def _scale_logits(Z, q0, q1, k0, k1, x_scale, intercept):
    """Z[q0:q1, k0:k1] = x_scale Z + intercept."""
    for r in range(q0, q1):
        zr = Z[r]
        for k in range(k0, k1):
            zr[k] = x_scale * zr[k] + np.float64(intercept[k])


@njit(**JIT)
def _intercept_sums(G, m, k0, k1, gb):
    """gb[k] += sum of G[:m, k] for k in [k0, k1), rows in order."""
    for k in range(k0, k1):
        acc = gb[k]
        for r in range(m):
            acc += G[r, k]
        gb[k] = acc


@njit(**JIT)
def _finish_classes(k0, k1, grad_coef, grad_intercept, grad_blocks, edges, coef, gb, x_scale,
                    alpha, reg):
    """Classes [k0, k1) of the gradients from their sums (``_finish_coef_row``); reg[k] =
    ||coef[k]||^2."""
    for k in range(k0, k1):
        reg[k] = _finish_coef_row(grad_coef[k], grad_blocks, k, edges, coef[k], x_scale, alpha)
        grad_intercept[k] = gb[k]


@njit(**JIT)
def _padded_width(edges):
    """The widest block of ``edges``, rounded up to 16 elements (whole cache lines)."""
    width = 0
    for fb in range(edges.shape[0] - 1):
        width = max(width, edges[fb + 1] - edges[fb])
    return (width + 15) // 16 * 16


@njit(**JIT)
def _finish_coef_row(gc, grad_blocks, k, edges, ck, x_scale, alpha):
    """gc = x_scale G^T X + alpha ck for class k, G^T X read from the feature blocks'
    buffers (grad_blocks[fb, k, :f1 - f0] for every block [f0, f1)); returns ||ck||^2 in
    float64. One pass: gathering the blocks into gc first and finishing it in a second one
    cost twice as long (12,800 against 6,400 cycles at 10 x 784, a fixed cost of every call).
    """
    _wide_vectors()
    for fb in range(edges.shape[0] - 1):
        f0 = edges[fb]
        f1 = edges[fb + 1]
        ak = grad_blocks[fb, k]
        gb = gc[f0:f1]
        cb = ck[f0:f1]
        for f in range(f1 - f0):
            gb[f] = x_scale * ak[f] + alpha * cb[f]
    acc = 0.0
    for f in range(ck.shape[0]):  # load-only reduction (see _row_exp)
        acc += np.float64(ck[f]) * np.float64(ck[f])
    return acc


def linear_softmax_ce(X, x_scale, coef, intercept, y, sample_weight, alpha,
                      grad_coef, grad_intercept, n_threads=1):
    """Loss and gradients of the linear softmax model z = (x_scale X) coef^T + intercept.

    IN X (n, d) uint8 or coef's dtype, coef (c, d), intercept (c,), y (n,) intp,
    sample_weight (n,) float64 or None; OUT grad_coef (c, d), grad_intercept (c,).
    L = sum_i w_i l_i / sum_i w_i + (alpha / 2) ||coef||^2;
    dL/dcoef = x_scale G^T X + alpha coef, dL/dintercept = sum_i G_i with
    G_ik = w_i (softmax(z_i)_k - [k == y_i]) / sum_i w_i. Extra memory is O(CHUNK_ELEMS).
    """
    check_linear(X, coef, intercept, y, sample_weight, grad_coef, grad_intercept)
    has_weight = sample_weight is not None
    X, coef, intercept, y, w = read_only(X, coef, intercept, y,
                                         sample_weight if has_weight else _NO_WEIGHTS)
    work = 2 * X.shape[0] * coef.size
    if prefers_gemm(X.shape[0], *linear_shapes(X, coef)):
        return _linear_gemm(X, float(x_scale), coef, intercept, y, w, has_weight, float(alpha),
                            grad_coef, grad_intercept, n_threads, work)
    # (the gradient's feature blocks follow the planned threads: no value depends on them)
    threads = _planned_threads(n_threads, work, LINEAR_MIN_WORK_PER_THREAD)
    return float(_call(_linear_kernel, n_threads, work, X, float(x_scale), coef, intercept, y,
                       w, has_weight, float(alpha), grad_coef, grad_intercept, threads,
                       min_work=LINEAR_MIN_WORK_PER_THREAD, variant=coef.dtype.num))


@njit(**JIT)
def _sum_squares(coef):
    """||coef||^2 in float64 on one thread (the same bits for any n_threads).

    An index loop over the flat array, which LLVM vectorises (fastmath ``reassoc``); the
    element iterator it replaced summed one value per add latency: 20.6 ms for the
    32,000 x 512 coef of the BLAS benchmark shape, 14 % of the whole call, now 3 ms.
    """
    flat = coef.ravel()
    acc = 0.0
    for i in range(flat.shape[0]):
        v = np.float64(flat[i])
        acc += v * v
    return acc


def _linear_gemm(X, x_scale, coef, intercept, y, w, has_weight, alpha, grad_coef,
                 grad_intercept, n_threads, work):
    """The BLAS path (``_numba_gemm``): chunk buffers here, BLAS on one thread per call."""
    n, d = X.shape
    c = coef.shape[0]
    if n == 0:
        grad_coef[...] = np.nan
        grad_intercept[...] = np.nan
        return float("nan")
    wsum = float(n) if not has_weight else float(np.sum(w))
    slots = _numba_gemm.split_slots(d, c, coef.itemsize)
    if slots:
        B = _numba_gemm.split_block(n, c, slots)
        bufs = [np.empty(shape, dtype=coef.dtype) for shape in
                ((slots, B, c), (slots, B, d) if X.dtype == np.uint8 else (1, 1, 1),
                 (slots, c, d), (slots, c))]
        with single_threaded_blas(), numba.parallel_chunksize(1):
            total = _call(_numba_gemm.linear_split, n_threads, work, X, x_scale, coef,
                          intercept, y, w, has_weight, wsum, alpha, grad_coef, grad_intercept,
                          B, *bufs, np.empty(slots), variant=coef.dtype.num)
        return float(total / wsum + 0.5 * alpha * _sum_squares(coef))
    rows = _numba_gemm.chunk_rows(n, c)
    Z = np.empty((rows, c), dtype=coef.dtype)
    xbuf = np.empty((rows, d) if X.dtype == np.uint8 else (1, 1), dtype=coef.dtype)
    xf = xbuf if X.dtype == np.uint8 else X
    with single_threaded_blas(), numba.parallel_chunksize(1):
        total = _call(_numba_gemm.linear_gemm, n_threads, work, X, xf, xbuf, x_scale, coef,
                      intercept, y, w, has_weight, wsum, alpha, grad_coef, grad_intercept, Z,
                      np.empty(rows), variant=coef.dtype.num)
    # The penalty without BLAS: a NumPy dot here woke OpenBLAS's threads, whose spinning
    # after the call took the cores from the next call's own threads (2.3x slower epochs).
    return float(total / wsum + 0.5 * alpha * _sum_squares(coef))


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
                batch_size, t_begin, t_end, watch, batch_loss, batch_weight):
    """Minibatches [t_begin, t_end) of one epoch; returns the next batch still to do.

    Stops early (every started batch finished) when the watch sees a descheduled thread, so
    the wrapper can resume on one thread. Per-batch losses and weights go into
    ``batch_loss``/``batch_weight``, summed in batch order by the wrapper whatever the stops.
    """
    n = order.shape[0]
    c, d = coef.shape
    wdt = coef.dtype
    bs = max(1, min(batch_size, n))
    edges = _feature_blocks(d)
    nfb = edges.shape[0] - 1
    P = np.zeros((nfb, bs, c), dtype=np.float64)  # partial logits per feature block
    # gradient of coef per feature block, rows of whole cache lines (see the module notes)
    gcoef = np.zeros((nfb, c, _padded_width(edges)), dtype=wdt)
    G = np.zeros((bs, c), dtype=wdt)  # x_scale * dL/dz of the batch being updated
    gbias = np.zeros(c, dtype=np.float64)
    gbias_w = np.zeros(c, dtype=wdt)
    softmax_work = np.empty((3, bs * c), dtype=np.float64)  # per value of a batch
    row_work = np.empty((2, bs), dtype=np.float64)  # per row of a batch
    batch_y = np.empty(bs, dtype=np.intp)  # labels and weights of the batch being computed,
    batch_w = np.ones(bs, dtype=np.float64)  # gathered in the region (see below)
    lr_w = wdt.type(lr)
    mom_w = wdt.type(momentum)
    alpha_w = wdt.type(alpha)
    stop = t_end
    # Region t: backward + update of batch t-1, forward of batch t, prefetch of batch t+1.
    t = t_begin
    while True:
        p0 = (t - 1) * bs
        p1 = min(n, p0 + bs)
        s0 = t * bs
        s1 = min(n, s0 + bs)
        start = _cycles()
        for j in prange(nfb):
            f0 = edges[j]
            f1 = edges[j + 1]
            fm = f1 - f0
            if t > t_begin:
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
            if t < stop:
                _forward_tile(X, order[s0:s1], f0, f1, coef, 0, c, P[j], 0,
                              order[s1:min(n, s1 + bs)])
                if j == nfb - 1:
                    # The softmax after the region reads each row's label and weight at a
                    # random index: gathered here, their cache misses overlap the tiles'
                    # work instead of stalling the one thread that runs between regions.
                    _gather_batch(y, sample_weight, has_weight, order[s0:s1], batch_y,
                                  batch_w)
        if watch_region(watch, _cycles() - start) and t < stop:
            stop = t + 1  # finish batch t (its softmax now, its update in region t + 1)
        if t == stop:
            break
        # softmax of batch t on the calling thread: partial logits summed in block order
        loss, wb = _batch_softmax_ce(P, G, gbias, softmax_work, row_work, s1 - s0, x_scale,
                                     intercept, batch_y, batch_w)
        batch_loss[t] = loss
        batch_weight[t] = wb
        for k in range(c):
            gbias_w[k] = gbias[k]
        _apply_update(intercept, velocity_intercept, gbias_w, lr_w, mom_w, nesterov)
        t += 1
    return stop


@njit(**JIT)
def _ordered_sums(loss, weight):
    """Sums in batch order: the same bits wherever a call stopped and resumed."""
    total_loss = 0.0
    total_weight = 0.0
    for t in range(loss.shape[0]):
        total_loss += loss[t]
        total_weight += weight[t]
    return total_loss, total_weight


@njit(**JIT)
def _gather_batch(y, sample_weight, has_weight, rows, batch_y, batch_w):
    """batch_y[r] = y[rows[r]], batch_w[r] = sample_weight[rows[r]] (left at 1 without
    weights) for the rows of one minibatch."""
    for r in range(rows.shape[0]):
        batch_y[r] = y[rows[r]]
    if has_weight:
        for r in range(rows.shape[0]):
            batch_w[r] = sample_weight[rows[r]]


@njit(**JIT)
def _batch_shifted_logits(P, work, true_shifted, nbat, x_scale, intercept, batch_y):
    """Step 1 of _batch_softmax_ce: z = b + x_scale P_0 + x_scale P_1 + ... (block order) in
    work[0], z - max in work[1], z_y - max in true_shifted[:nbat]."""
    nfb, _, c = P.shape
    z = work[0]
    shifted = work[1]
    for r in range(nbat):
        zr = z[r * c:(r + 1) * c]
        for k in range(c):
            zr[k] = intercept[k]
        for j in range(nfb):
            pj = P[j, r]
            for k in range(c):
                zr[k] += x_scale * pj[k]
        m = _row_max(zr)
        if c > 0 and m == -np.inf:
            m = zr[0]  # all -inf (or NaN): -inf - -inf makes the sum NaN as it must
        true_shifted[r] = _shifted_minus(zr[batch_y[r]], m, 0.0)
        for k in range(c):
            shifted[r * c + k] = zr[k] - m


@njit(**JIT)
def _batch_softmax_ce(P, G, gbias, work, row_work, nbat, x_scale, intercept, batch_y, batch_w):
    """Softmax-CE of a batch of ``nbat`` rows from its partial logits P (summed in block
    order), their labels ``batch_y`` and weights ``batch_w`` (ones without weights).

    Writes G = x_scale dL/dz and gbias = dL/db (dL/dz_k = w_i / sum_B(w) (p_k - [k == y]));
    returns (sum_i w_i l_i, sum_B w). A batch with zero total weight has no data term.
    ``work`` (3, bs * c) and ``row_work`` (2, bs) float64 are scratch. The batch is processed as flat arrays, like a
    block of softmax_ce: exp and log run in long vectorised loops over the whole batch. One
    row at a time (exp of 10 classes, then its log) waited on each row's chain of latencies:
    8,000-9,000 cycles a batch of 32 x 10, most of the calling thread's part of an epoch
    while the other threads wait.
    """
    nfb, _, c = P.shape
    wb = 0.0
    for r in range(nbat):
        wb += batch_w[r]
    for k in range(c):
        gbias[k] = 0.0
    if wb <= 0:
        for r in range(nbat):
            for k in range(c):
                G[r, k] = 0
        return 0.0, wb
    inv_wb = 1.0 / wb
    nq = nbat * c
    shifted = work[1, :nq]
    ez = work[2, :nq]
    sums = row_work[0]
    true_shifted = row_work[1]
    # 1. logits, z - max and z_y - max, rows in order
    _batch_shifted_logits(P, work, true_shifted, nbat, x_scale, intercept, batch_y)
    # 2. e = exp(z - max), one flat loop (from another buffer: in place it would run scalar)
    for q in range(nq):
        ez[q] = _exp(shifted[q])
    # 3. sums, G = x_scale dL/dz, gbias (rows in order)
    for r in range(nbat):
        er = ez[r * c:(r + 1) * c]
        s = 0.0
        for k in range(c):
            s += er[k]
        sums[r] = s
        yi = batch_y[r]
        scale = batch_w[r] * inv_wb
        ps = scale / s
        gr = G[r]
        for k in range(c):
            gk = er[k] * ps
            gbias[k] += gk
            gr[k] = x_scale * gk
        gbias[yi] -= scale
        gr[yi] = x_scale * (er[yi] * ps - scale)
    # 4. l_i = log s_i - (z_y - max): vectorised log (into the dead z - max), fixed-order sum
    lse = shifted[:nbat]
    _log_each(sums[:nbat], lse)
    return _ce_sum(lse, true_shifted, batch_w, 0, nbat, True), wb


def sgd_epoch(X, x_scale, y, sample_weight, order, coef, intercept, velocity_coef,
              velocity_intercept, lr, alpha, momentum, nesterov, batch_size, n_threads=1):
    """One epoch of minibatch SGD over the rows ``order`` in one compiled call (in place).

    IN X (n, d), y, sample_weight or None, order (intp); IN/OUT coef (c, d), intercept (c,),
    velocity_coef, velocity_intercept. Each batch B uses g = dL_B/dcoef + alpha coef and
    plain W -= lr g, momentum v = mu v - lr g, W += v, or Nesterov W += mu v - lr g.
    Returns sum_i w_i l_i / sum_i w_i over the epoch (each l_i at the weights its batch saw).
    """
    check_sgd(X, y, sample_weight, order, coef, intercept, velocity_coef, velocity_intercept,
              batch_size)
    has_weight = sample_weight is not None
    X, y, w, order = read_only(X, y, sample_weight if has_weight else _NO_WEIGHTS, order)
    work = 2 * min(int(batch_size), len(order)) * coef.size
    rows = max(1, min(int(batch_size), order.shape[0]))
    if order.shape[0] and prefers_gemm(rows, *linear_shapes(X, coef)):
        n_batches = -(-order.shape[0] // rows)
        return _sgd_gemm(X, float(x_scale), y, w, has_weight, order, coef, intercept,
                         velocity_coef, velocity_intercept, float(lr), float(alpha),
                         float(momentum), bool(nesterov), rows, n_threads, work * n_batches)
    n = order.shape[0]
    if n == 0:
        return 0.0
    bs = max(1, min(int(batch_size), n))
    nb = -(-n // bs)
    batch_loss, batch_weight = np.zeros(nb), np.zeros(nb)
    t, contended = 0, False
    started = time.perf_counter()
    while t < nb:  # one call, or more when a busy core makes it resume on one thread
        watch = np.zeros(3, dtype=np.int64)
        t = _call(_sgd_kernel, n_threads, work, X, float(x_scale), y, w, has_weight, order,
                  coef, intercept, velocity_coef, velocity_intercept, float(lr), float(alpha),
                  float(momentum), bool(nesterov), bs, t, nb, watch, batch_loss, batch_weight,
                  timed=False)
        if watch[2]:
            contended = True
            # the back-off outlasts several epochs like this one (see the governor)
            GOVERNOR.report(True, time.perf_counter() - started)
    if not contended:
        GOVERNOR.report(False)
    total_loss, total_weight = _ordered_sums(batch_loss, batch_weight)
    return float(total_loss / total_weight) if total_weight > 0 else 0.0


def _sgd_gemm(X, x_scale, y, w, has_weight, order, coef, intercept, velocity_coef,
              velocity_intercept, lr, alpha, momentum, nesterov, bs, n_threads, work):
    """The BLAS path for large minibatches (``_numba_gemm.sgd_gemm``)."""
    n = order.shape[0]
    c, d = coef.shape
    starts = np.arange(0, n, bs)
    weights = w[order] if has_weight else np.ones(n)
    batch_wsum = np.add.reduceat(weights, starts)
    dtype = coef.dtype
    grad = np.empty((c, d), dtype=dtype) if momentum else np.empty((1, 1), dtype=dtype)
    with single_threaded_blas(), numba.parallel_chunksize(1):
        total = _call(_numba_gemm.sgd_gemm, n_threads, work, X, x_scale, y, w, has_weight,
                      order, batch_wsum, coef, intercept, velocity_coef, velocity_intercept,
                      lr, alpha, momentum, nesterov, bs, np.empty((bs, d), dtype=dtype),
                      np.empty((bs, c), dtype=dtype), grad, np.empty(c, dtype=dtype),
                      np.empty(bs, dtype=np.intp), np.empty(bs), np.empty(bs),
                      variant=(dtype.num, bs))
    wtotal = float(batch_wsum.sum())
    return float(total / wtotal) if wtotal > 0 else 0.0
