# cython: language_level=3
"""Fused softmax / cross-entropy / linear-model kernels: Cython + OpenMP.

Design
------
* Row-wise kernels (softmax, log_softmax, softmax_ce) work on blocks of R consecutive rows,
  R = clamp(2048 // c, 1, 256) (a function of the class count only). A block is processed in
  flat passes: per-row max and shift, one vectorised exp over the R * c contiguous values,
  per-row sums in float64, one vectorised log over the R sums, per-row scaling. For c <= 16,
  softmax_ce transposes 16 rows at a time so that the rows sit in the vector lanes.
* Reductions run over fixed-size blocks: each block's loss is summed in row order and the
  block sums are added in block order after the parallel loop (blocks are handed out
  dynamically, which is safe for exactly that reason). Nothing depends on which thread ran
  a block, so results are bitwise identical for any ``n_threads``.
* The linear model (linear_softmax_ce, sgd_epoch) uses the register-blocked tiles of
  _sf_linear_impl.h inside one persistent OpenMP region. Thread t owns the classes
  [t c / T, (t + 1) c / T): it computes their logits for a chunk of rows (a minibatch in
  sgd_epoch), then, after the one barrier of the chunk, every thread runs the cheap
  softmax-CE of all rows into a private G = w_i (softmax(z_i) - onehot(y_i)) / sum(w) and
  sums G^T X for its own classes; sgd_epoch then updates its own rows of coef, intercept
  and velocities, which therefore never move between cores. Logits are double-buffered, so
  one barrier per chunk suffices. Every output element is computed by the same operations
  in the same order whatever T is (see _sf_linear_impl.h).
* linear_softmax_ce walks the rows in chunks of at most 1024 rows and 65536 logits, so its
  extra memory is O(chunk x threads) even for 32,000 classes.
* Float32 data keep float32 logits, exp and gradient; sums of exp, the losses and the
  weight sums are float64.
"""

import numpy as np

cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.stdint cimport uint8_t
from libc.stdlib cimport free, malloc

cnp.import_array()

ctypedef Py_ssize_t intp_t
ctypedef Py_ssize_t ssize

cdef extern from "_sf_simd.h" nogil:
    const int SF_NF
    const int SF_ND
    int sf_openmp_enabled()
    int sf_omp_num_threads()
    int sf_omp_thread_num()
    ctypedef struct sf_barrier_t:
        int count
        int sense
    void sf_barrier_wait(sf_barrier_t *b, int nthreads, int *local_sense)
    float sf_max_f32(const float *a, Py_ssize_t n)
    double sf_max_f64(const double *a, Py_ssize_t n)
    void sf_exp_f32(float *a, Py_ssize_t n)
    void sf_exp_f64(double *a, Py_ssize_t n)
    void sf_log_f64(double *a, Py_ssize_t n)
    void sf_shift_f32(const float *a, float m, float *out, Py_ssize_t n)
    void sf_shift_f64(const double *a, double m, double *out, Py_ssize_t n)
    void sf_scale_f32(const float *a, double s, float *out, Py_ssize_t n)
    void sf_scale_f64(const double *a, double s, double *out, Py_ssize_t n)
    double sf_sum_f32(const float *a, Py_ssize_t n)
    double sf_sum_f64(const double *a, Py_ssize_t n)
    double sf_sumsq_f32(const float *a, Py_ssize_t n)
    double sf_sumsq_f64(const double *a, Py_ssize_t n)
    void sf_forward_f32_u8(
        const uint8_t *X, ssize d, const intp_t *idx, ssize r0, ssize nr, ssize n_ahead,
        const float *W, ssize k0, ssize k1, float x_scale, const float *b, float *Z, ssize ldz)
    void sf_forward_f32_f32(
        const float *X, ssize d, const intp_t *idx, ssize r0, ssize nr, ssize n_ahead,
        const float *W, ssize k0, ssize k1, float x_scale, const float *b, float *Z, ssize ldz)
    void sf_forward_f64_u8(
        const uint8_t *X, ssize d, const intp_t *idx, ssize r0, ssize nr, ssize n_ahead,
        const double *W, ssize k0, ssize k1, double x_scale, const double *b, double *Z, ssize ldz)
    void sf_forward_f64_f64(
        const double *X, ssize d, const intp_t *idx, ssize r0, ssize nr, ssize n_ahead,
        const double *W, ssize k0, ssize k1, double x_scale, const double *b, double *Z, ssize ldz)
    void sf_backward_f32_u8(
        const uint8_t *X, ssize d, const intp_t *idx, ssize r0, ssize nr, const float *G,
        ssize ldg, ssize k0, ssize k1, ssize j0, ssize j1, float *out, ssize ldo, int accumulate)
    void sf_backward_f32_f32(
        const float *X, ssize d, const intp_t *idx, ssize r0, ssize nr, const float *G, ssize ldg,
        ssize k0, ssize k1, ssize j0, ssize j1, float *out, ssize ldo, int accumulate)
    void sf_backward_f64_u8(
        const uint8_t *X, ssize d, const intp_t *idx, ssize r0, ssize nr, const double *G,
        ssize ldg, ssize k0, ssize k1, ssize j0, ssize j1, double *out, ssize ldo, int accumulate)
    void sf_backward_f64_f64(
        const double *X, ssize d, const intp_t *idx, ssize r0, ssize nr, const double *G,
        ssize ldg, ssize k0, ssize k1, ssize j0, ssize j1, double *out, ssize ldo, int accumulate)


cdef enum:
    ROWS_MAX = 256            # rows per block of the row-wise kernels (stack arrays)
    SMALL_C = 16              # up to this many classes, softmax-CE puts rows in vector lanes
    BLOCK_ELEMS = 2048        # logits per block of the row-wise kernels
    ROWWISE_GRAIN = 16384     # logits per thread below which extra threads do not pay
    LIN_ROWS = 1024           # rows per chunk of linear_softmax_ce
    LIN_ELEMS = 65536         # logits per chunk of linear_softmax_ce (the O(chunk) memory)
    LIN_GRAIN = 1 << 16       # multiply-adds per thread below which one thread is used


def openmp_enabled():
    """True if the extension was built with OpenMP, i.e. ``n_threads`` is honoured."""
    return bool(sf_openmp_enabled())


def openmp_thread_count(int n_threads):
    """Threads an OpenMP region asked for ``n_threads`` really gets (1 without OpenMP)."""
    cdef int got[1]
    cdef int *gotp = got
    got[0] = 1
    with nogil, parallel(num_threads=n_threads):
        if sf_omp_thread_num() == 0:
            gotp[0] = sf_omp_num_threads()
    return got[0]


def vector_lanes():
    """Float32 lanes of the vector registers the kernels were compiled for (4, 8 or 16)."""
    return SF_NF


# ------------------------------------------------------------------ dtype dispatch helpers
cdef inline floating _max(const floating *a, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return sf_max_f32(a, n)
    else:
        return sf_max_f64(a, n)


cdef inline void _exp(floating *a, Py_ssize_t n) noexcept nogil:
    if floating is float:
        sf_exp_f32(a, n)
    else:
        sf_exp_f64(a, n)


cdef inline void _shift(const floating *a, floating m, floating *out,
                        Py_ssize_t n) noexcept nogil:
    if floating is float:
        sf_shift_f32(a, m, out, n)
    else:
        sf_shift_f64(a, m, out, n)


cdef inline void _scale(const floating *a, double s, floating *out, Py_ssize_t n) noexcept nogil:
    if floating is float:
        sf_scale_f32(a, s, out, n)
    else:
        sf_scale_f64(a, s, out, n)


cdef inline double _sum(const floating *a, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return sf_sum_f32(a, n)
    else:
        return sf_sum_f64(a, n)


cdef inline double _sumsq(const floating *a, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return sf_sumsq_f32(a, n)
    else:
        return sf_sumsq_f64(a, n)


cdef inline void _forward(const void *X, bint xu8, ssize d, const intp_t *idx, ssize r0, ssize nr,
                          ssize n_ahead, const floating *W, ssize k0, ssize k1,
                          floating x_scale, const floating *b, floating *Z,
                          ssize ldz) noexcept nogil:
    if floating is float:
        if xu8:
            sf_forward_f32_u8(<const uint8_t *> X, d, idx, r0, nr, n_ahead, W, k0, k1,
                              x_scale, b, Z, ldz)
        else:
            sf_forward_f32_f32(<const float *> X, d, idx, r0, nr, n_ahead, W, k0, k1,
                               x_scale, b, Z, ldz)
    else:
        if xu8:
            sf_forward_f64_u8(<const uint8_t *> X, d, idx, r0, nr, n_ahead, W, k0, k1,
                              x_scale, b, Z, ldz)
        else:
            sf_forward_f64_f64(<const double *> X, d, idx, r0, nr, n_ahead, W, k0, k1,
                               x_scale, b, Z, ldz)


cdef inline void _backward(const void *X, bint xu8, ssize d, const intp_t *idx, ssize r0,
                           ssize nr, const floating *G, ssize ldg, ssize k0, ssize k1,
                           ssize j0, ssize j1, floating *out, ssize ldo,
                           int accumulate) noexcept nogil:
    if floating is float:
        if xu8:
            sf_backward_f32_u8(<const uint8_t *> X, d, idx, r0, nr, G, ldg, k0, k1, j0, j1,
                               out, ldo, accumulate)
        else:
            sf_backward_f32_f32(<const float *> X, d, idx, r0, nr, G, ldg, k0, k1, j0, j1,
                                out, ldo, accumulate)
    else:
        if xu8:
            sf_backward_f64_u8(<const uint8_t *> X, d, idx, r0, nr, G, ldg, k0, k1, j0, j1,
                               out, ldo, accumulate)
        else:
            sf_backward_f64_f64(<const double *> X, d, idx, r0, nr, G, ldg, k0, k1, j0, j1,
                                out, ldo, accumulate)


cdef inline const double *_offset(const double *w, Py_ssize_t r0) noexcept nogil:
    """w + r0, or NULL for no sample weights."""
    if w == NULL:
        return NULL
    return w + r0


cdef inline int _n_workers(int n_threads, Py_ssize_t work, Py_ssize_t grain) noexcept nogil:
    """Threads worth waking for ``work`` units (results never depend on this choice)."""
    cdef Py_ssize_t useful = work // grain
    if useful < 1:
        useful = 1
    return <int> (n_threads if n_threads < useful else useful)


cdef inline Py_ssize_t _rows_per_block(Py_ssize_t c) noexcept nogil:
    cdef Py_ssize_t r = BLOCK_ELEMS // c if c > 0 else ROWS_MAX
    if r < 1:
        return 1
    return r if r < ROWS_MAX else ROWS_MAX


cdef const double *_weights_ptr(object sample_weight, Py_ssize_t n) except? NULL:
    """Pointer to the float64 sample weights (kept alive by the caller), or NULL."""
    cdef const double[::1] sw
    if sample_weight is None or n == 0:
        return NULL
    sw = sample_weight
    return &sw[0]


# The linear-model entry points are called once per minibatch by L-BFGS-free solvers, so
# they take plain arrays and check them with the NumPy C API (~0.1 us per argument) instead
# of acquiring typed memoryviews (~0.4 us each, plus fused-type dispatch).
cdef int _float_typenum(object a, str name) except -1:
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{name} must be a numpy array")
    cdef int tn = cnp.PyArray_TYPE(<cnp.ndarray> a)
    if tn != cnp.NPY_FLOAT32 and tn != cnp.NPY_FLOAT64:
        raise TypeError(f"{name} must be float32 or float64, got {a.dtype}")
    return tn


cdef Py_ssize_t _dim(object a, int axis) except -1:
    if not cnp.PyArray_Check(a) or cnp.PyArray_NDIM(<cnp.ndarray> a) <= axis:
        raise ValueError(f"expected an array with at least {axis + 1} dimension(s)")
    return cnp.PyArray_DIM(<cnp.ndarray> a, axis)


cdef bint _is_u8(object X, int tn, Py_ssize_t n, Py_ssize_t d) except -1:
    if not cnp.PyArray_Check(X) or cnp.PyArray_NDIM(<cnp.ndarray> X) != 2:
        raise ValueError("X must be a 2-D numpy array")
    if cnp.PyArray_DIM(<cnp.ndarray> X, 1) != d:
        raise ValueError(f"X has {X.shape[1]} features, coef has {d}")
    return cnp.PyArray_TYPE(<cnp.ndarray> X) == cnp.NPY_UINT8


cdef const void *_in(object a, int tn, Py_ssize_t size, str name) except NULL:
    """Data pointer of a C-contiguous array of type ``tn`` and ``size`` items (read-only ok)."""
    cdef cnp.ndarray arr
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{name} must be a numpy array")
    arr = <cnp.ndarray> a
    if cnp.PyArray_TYPE(arr) != tn:
        raise TypeError(f"{name} has dtype {arr.dtype}, expected {cnp.PyArray_DescrFromType(tn)}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr) or cnp.PyArray_SIZE(arr) != size:
        raise ValueError(f"{name} must be C-contiguous with {size} items")
    return <const void *> (cnp.PyArray_BYTES(arr) if size > 0 else <char *> &_EMPTY)


cdef void *_out(object a, int tn, Py_ssize_t size, str name) except NULL:
    """Like _in, for an output array (must be writeable)."""
    cdef const void *p = _in(a, tn, size, name)
    if not cnp.PyArray_ISWRITEABLE(<cnp.ndarray> a):
        raise ValueError(f"{name} is read-only")
    return <void *> p


cdef const double *_weights(object sample_weight, Py_ssize_t n) except? NULL:
    if sample_weight is None:
        return NULL
    return <const double *> _in(sample_weight, cnp.NPY_FLOAT64, n, "sample_weight")


cdef double _EMPTY = 0.0


# ------------------------------------------------------------------ per-block row maths
cdef double _ce_block(
    const floating *z,      # IN  (r, c) logits of r consecutive rows
    floating *g,            # OUT (r, c) dL/dz; may be z itself
    Py_ssize_t r,
    Py_ssize_t c,
    const intp_t *y,        # IN  (r,) labels
    const double *w,        # IN  (r,) sample weights, NULL for ones
    double inv_wsum,        # IN  1 / sum of all sample weights of the loss
) noexcept nogil:
    """Softmax cross-entropy of r <= ROWS_MAX rows; returns sum_i w_i l_i.

    Per row, with m = max_k z_k and s = sum_k exp(z_k - m):
    l = log s - (z_y - m) and dL/dz_k = w / sum(w) * (exp(z_k - m) / s - [k == y]).
    """
    cdef double m[ROWS_MAX]
    cdef double zy[ROWS_MAX]
    cdef double s[ROWS_MAX]
    cdef double ls[ROWS_MAX]
    cdef double total = 0.0, wi, coef, ey
    cdef floating mx
    cdef Py_ssize_t i, yi
    for i in range(r):
        mx = _max(z + i * c, c)
        m[i] = mx
        zy[i] = z[i * c + y[i]]             # read before g (maybe z) is overwritten
        _shift(z + i * c, mx, g + i * c, c)  # 1. g = z - m <= 0 (NaN stays NaN)
    _exp(g, r * c)                           # 2. e = exp(z - m): one flat vector pass
    for i in range(r):
        s[i] = _sum(g + i * c, c)            # 3. s = sum_k e_k >= 1, in float64
        ls[i] = s[i]
    sf_log_f64(ls, r)                        # 4. log s for all rows at once
    for i in range(r):
        yi = y[i]
        wi = 1.0 if w == NULL else w[i]
        # 5. l = log s - (z_y - m): never z_y - (m + log s) (PyTorch #11752)
        total += wi * (ls[i] - (zy[i] - m[i]))
        # 6. dL/dz = coef * (e / s - onehot); the true class in float64 to keep p_y - 1
        coef = wi * inv_wsum
        ey = g[i * c + yi]
        _scale(g + i * c, coef / s[i], g + i * c, c)
        g[i * c + yi] = <floating> ((ey / s[i] - 1.0) * coef)
    return total


cdef double _ce_small(
    const floating *z,      # IN  (r, c) logits, c <= SMALL_C
    floating *g,            # OUT (r, c) dL/dz; may be z itself
    Py_ssize_t r,
    Py_ssize_t c,
    const intp_t *y,        # IN  (r,) labels
    const double *w,        # IN  (r,) sample weights, NULL for ones
    double inv_wsum,        # IN  1 / sum of all sample weights of the loss
) noexcept nogil:
    """_ce_block for few classes: SMALL_C rows at a time, transposed to (class, row).

    Row-wise loops over c = 10 values are scalar and latency-bound; with the rows in the
    vector lanes every step (max, shift, exp, float64 sums, log, scaling) is a vertical vector
    operation. Same maths and the same per-row operation order as _ce_block.
    """
    cdef floating zt[SMALL_C * SMALL_C]
    cdef floating m[SMALL_C]
    cdef double s[SMALL_C]
    cdef double ls[SMALL_C]
    cdef double zy[SMALL_C]
    cdef double total = 0.0, wi, coef, ey
    cdef Py_ssize_t grp, i0, nr, i, k, yi
    for grp in range((r + SMALL_C - 1) // SMALL_C):
        i0 = grp * SMALL_C
        nr = min(SMALL_C, r - i0)
        for k in range(c):                   # transpose in; idle lanes hold zeros
            for i in range(nr):
                zt[k * SMALL_C + i] = z[(i0 + i) * c + k]
            for i in range(nr, SMALL_C):
                zt[k * SMALL_C + i] = 0
        for i in range(SMALL_C):
            m[i] = zt[i]
        for k in range(1, c):
            for i in range(SMALL_C):
                m[i] = zt[k * SMALL_C + i] if zt[k * SMALL_C + i] > m[i] else m[i]
        for i in range(nr):
            zy[i] = zt[y[i0 + i] * SMALL_C + i]
        for k in range(c):                   # 1. z - m
            for i in range(SMALL_C):
                zt[k * SMALL_C + i] = zt[k * SMALL_C + i] - m[i]
        _exp(zt, c * SMALL_C)                # 2. e = exp(z - m)
        for i in range(SMALL_C):
            s[i] = 0.0
        for k in range(c):                   # 3. s = sum_k e_k in float64
            for i in range(SMALL_C):
                s[i] += zt[k * SMALL_C + i]
        for i in range(SMALL_C):
            ls[i] = s[i]
        sf_log_f64(ls, SMALL_C)              # 4. log s
        for i in range(nr):
            yi = y[i0 + i]
            wi = 1.0 if w == NULL else w[i0 + i]
            total += wi * (ls[i] - (zy[i] - m[i]))  # 5. l = log s - (z_y - m)
            coef = wi * inv_wsum                    # 6. dL/dz = coef (e / s - onehot)
            ey = zt[yi * SMALL_C + i]
            for k in range(c):
                g[(i0 + i) * c + k] = zt[k * SMALL_C + i] * <floating> (coef / s[i])
            g[(i0 + i) * c + yi] = <floating> ((ey / s[i] - 1.0) * coef)
    return total


cdef void _softmax_block(const floating *z, floating *out, Py_ssize_t r,
                         Py_ssize_t c) noexcept nogil:
    """out = exp(z - m) / s for r consecutive rows (out may be z)."""
    cdef Py_ssize_t i
    for i in range(r):
        _shift(z + i * c, _max(z + i * c, c), out + i * c, c)
    _exp(out, r * c)
    for i in range(r):
        _scale(out + i * c, 1.0 / _sum(out + i * c, c), out + i * c, c)


cdef void _log_softmax_block(const floating *z, floating *out, floating *work, Py_ssize_t r,
                             Py_ssize_t c) noexcept nogil:
    """out = (z - m) - log s for r consecutive rows; ``work`` holds r * c values."""
    cdef double ls[ROWS_MAX]
    cdef Py_ssize_t i, k
    for i in range(r):
        _shift(z + i * c, _max(z + i * c, c), out + i * c, c)
    for k in range(r * c):
        work[k] = out[k]
    _exp(work, r * c)
    for i in range(r):
        ls[i] = _sum(work + i * c, c)
    sf_log_f64(ls, r)
    for i in range(r):
        _shift(out + i * c, <floating> ls[i], out + i * c, c)


# ------------------------------------------------------------------ row-wise entry points
def softmax(const floating[:, ::1] logits, floating[:, ::1] out, int n_threads=1):
    """Row-wise softmax exp(z - max) / sum exp(z - max).

    IN logits (n, c); OUT out (n, c), may be ``logits`` itself.
    """
    cdef Py_ssize_t n = logits.shape[0], c = logits.shape[1]
    cdef Py_ssize_t R = _rows_per_block(c), nblk = (n + R - 1) // R, blk, r0
    cdef int nt = _n_workers(n_threads, n * c, ROWWISE_GRAIN)
    cdef Py_ssize_t chunk = max(1, ROWWISE_GRAIN // (R * c))  # blocks per dynamic grab
    if n == 0 or c == 0:
        return
    cdef const floating *zp = &logits[0, 0]
    cdef floating *op = &out[0, 0]
    with nogil:
        for blk in prange(nblk, num_threads=nt, schedule="dynamic", chunksize=chunk):
            r0 = blk * R
            _softmax_block(zp + r0 * c, op + r0 * c, min(R, n - r0), c)


def log_softmax(const floating[:, ::1] logits, floating[:, ::1] out, int n_threads=1):
    """Row-wise log-softmax (z - max) - log sum exp(z - max).

    IN logits (n, c); OUT out (n, c), may be ``logits`` itself.
    """
    cdef Py_ssize_t n = logits.shape[0], c = logits.shape[1]
    cdef Py_ssize_t R = _rows_per_block(c), nblk = (n + R - 1) // R, blk, r0
    cdef int nt = _n_workers(n_threads, n * c, ROWWISE_GRAIN)
    cdef Py_ssize_t chunk = max(1, ROWWISE_GRAIN // (R * c))  # blocks per dynamic grab
    cdef floating *work = NULL
    if n == 0 or c == 0:
        return
    cdef const floating *zp = &logits[0, 0]
    cdef floating *op = &out[0, 0]
    with nogil, parallel(num_threads=nt):
        work = <floating *> malloc(R * c * sizeof(floating))
        for blk in prange(nblk, schedule="dynamic", chunksize=chunk):
            r0 = blk * R
            _log_softmax_block(zp + r0 * c, op + r0 * c, work, min(R, n - r0), c)
        free(work)


def softmax_ce(const floating[:, ::1] logits, const intp_t[::1] y, sample_weight,
               floating[:, ::1] out, int n_threads=1):
    """(Weighted) mean softmax cross-entropy and its gradient, in one pass.

    IN logits (n, c), y (n,) intp, sample_weight (n,) float64 or None;
    OUT out (n, c) = dL/dlogits = w_i (softmax(z_i) - onehot(y_i)) / sum(w), may be ``logits``.

    Returns L = sum_i w_i l_i / sum_i w_i with l_i = log sum_k exp(z_ik - m_i) - (z_iy - m_i).
    """
    cdef Py_ssize_t n = logits.shape[0], c = logits.shape[1]
    cdef Py_ssize_t R = _rows_per_block(c), nblk = (n + R - 1) // R, blk, r0
    cdef int nt = _n_workers(n_threads, n * c, ROWWISE_GRAIN)
    cdef Py_ssize_t chunk = max(1, ROWWISE_GRAIN // (R * c))  # blocks per dynamic grab
    cdef const double *w = _weights_ptr(sample_weight, n)
    cdef double wsum, total = 0.0
    if n == 0:
        return float("nan")
    wsum = <double> n if w == NULL else sf_sum_f64(w, n)
    cdef double[::1] block_loss = np.empty(nblk)
    cdef const floating *zp = &logits[0, 0]
    cdef floating *op = &out[0, 0]
    cdef const intp_t *yp = &y[0]
    with nogil:
        for blk in prange(nblk, num_threads=nt, schedule="dynamic", chunksize=chunk):
            r0 = blk * R
            if c <= SMALL_C:
                block_loss[blk] = _ce_small(zp + r0 * c, op + r0 * c, min(R, n - r0), c,
                                            yp + r0, _offset(w, r0), 1.0 / wsum)
            else:
                block_loss[blk] = _ce_block(zp + r0 * c, op + r0 * c, min(R, n - r0), c,
                                            yp + r0, _offset(w, r0), 1.0 / wsum)
        for blk in range(nblk):  # fixed order: the same bits for any thread count
            total += block_loss[blk]
    return total / wsum


# ------------------------------------------------------------------ linear model
cdef void _intercept_sums(const floating *G, Py_ssize_t nr, Py_ssize_t c, Py_ssize_t k0,
                          Py_ssize_t k1, floating *out, bint accumulate) noexcept nogil:
    """out[k] (+)= sum_i G[i, k] for k in [k0, k1), rows in order."""
    cdef Py_ssize_t i, k
    cdef floating acc
    for k in range(k0, k1):
        acc = 0
        for i in range(nr):
            acc += G[i * c + k]
        out[k] = out[k] + acc if accumulate else acc


cdef void _finish_grad(floating *gW, const floating *W, Py_ssize_t d, Py_ssize_t k0,
                       Py_ssize_t k1, Py_ssize_t j0, Py_ssize_t j1, floating x_scale,
                       floating alpha) noexcept nogil:
    """grad[k, j] = x_scale * (G^T X)[k, j] + alpha * W[k, j] on one work item."""
    cdef Py_ssize_t k, j
    for k in range(k0, k1):
        for j in range(j0, j1):
            gW[k * d + j] = x_scale * gW[k * d + j] + alpha * W[k * d + j]


cdef double _ce_rows(const floating *z, floating *g, Py_ssize_t n, Py_ssize_t c,
                     const intp_t *y, const double *w, double inv_wsum) noexcept nogil:
    """Softmax-CE of n rows in the row blocks of softmax_ce; returns sum_i w_i l_i."""
    cdef Py_ssize_t R = _rows_per_block(c), blk, r0, nr
    cdef double total = 0.0
    for blk in range((n + R - 1) // R):
        r0 = blk * R
        nr = min(R, n - r0)
        if c <= SMALL_C:
            total += _ce_small(z + r0 * c, g + r0 * c, nr, c, y + r0,
                               _offset(w, r0), inv_wsum)
        else:
            total += _ce_block(z + r0 * c, g + r0 * c, nr, c, y + r0,
                               _offset(w, r0), inv_wsum)
    return total


cdef double _linear(
    const void *X, bint xu8, Py_ssize_t n, Py_ssize_t d, Py_ssize_t c, floating x_scale,
    const floating *W, const floating *b, const intp_t *y, const double *w, double wsum,
    floating alpha, floating *gW, floating *gb, int n_threads,
) noexcept nogil:
    """Sum_i w_i l_i of z = x_scale X W^T + b; writes gW = x_scale G^T X + alpha W, gb.

    Thread t owns the classes [t c / T, (t + 1) c / T): it computes their logits for a chunk of
    rows, and after the one barrier of the chunk every thread runs the (cheap) softmax-CE of
    all rows of the chunk into its private G and sums G^T X for its own classes. The logits
    are double-buffered, so a thread may start the next chunk while others read this one.
    """
    cdef Py_ssize_t R = LIN_ELEMS // c
    if R > LIN_ROWS:
        R = LIN_ROWS
    if R < 1:
        R = 1
    cdef Py_ssize_t nchunk = (n + R - 1) // R, ch, r0, nr, k0, k1
    cdef int nt = _n_workers(n_threads, n * c * d, LIN_GRAIN), tid, nthr
    if nt > c:
        nt = <int> c
    cdef floating *Z = <floating *> malloc(2 * R * c * sizeof(floating))
    cdef floating *G
    cdef floating *Zb
    cdef double total = 0.0, loss
    cdef double *totalp = &total
    cdef sf_barrier_t barrier
    cdef sf_barrier_t *barrierp = &barrier
    cdef int sense
    barrier.count = 0
    barrier.sense = 0
    tid = nthr = sense = 0  # thread-private below; set here only to keep gcc quiet
    r0 = nr = k0 = k1 = ch = 0
    loss = 0.0
    G = Zb = NULL
    with parallel(num_threads=nt):
        tid = threadid()
        nthr = sf_omp_num_threads()
        sense = 0
        k0 = tid * c // nthr
        k1 = (tid + 1) * c // nthr
        G = <floating *> malloc(R * c * sizeof(floating))
        for ch in range(nchunk):
            r0 = ch * R
            nr = min(R, n - r0)
            Zb = Z + (ch % 2) * R * c
            _forward(X, xu8, d, NULL, r0, nr, 0, W, k0, k1, x_scale, b, Zb, c)
            sf_barrier_wait(barrierp, nthr, &sense)
            loss = _ce_rows(Zb, G, nr, c, y + r0, _offset(w, r0), 1.0 / wsum)
            if tid == 0:
                totalp[0] = totalp[0] + loss
            _backward(X, xu8, d, NULL, r0, nr, G, c, k0, k1, 0, d, gW, d, ch > 0)
            _intercept_sums(G, nr, c, k0, k1, gb, ch > 0)
        _finish_grad(gW, W, d, k0, k1, 0, d, x_scale, alpha)
        free(G)
    free(Z)
    return total


def linear_softmax_ce(X, double x_scale, coef, intercept, y, sample_weight, double alpha,
                      grad_coef, grad_intercept, int n_threads=1):
    """Loss and gradients of the linear softmax model z = (x_scale X) coef^T + intercept.

    IN X (n, d) uint8 or coef's dtype, coef (c, d), intercept (c,), y (n,) intp,
    sample_weight (n,) float64 or None; OUT grad_coef (c, d), grad_intercept (c,).
    All C-contiguous; inputs may be read-only.

    Returns L = sum_i w_i l_i / sum_i w_i + (alpha / 2) ||coef||^2, with
    grad_coef = x_scale G^T X + alpha coef and grad_intercept = sum_i G_i, where
    G = dL/dz = w_i (softmax(z_i) - onehot(y_i)) / sum(w).
    """
    cdef int tn = _float_typenum(coef, "coef")
    cdef Py_ssize_t n = _dim(X, 0), d = _dim(coef, 1), c = _dim(coef, 0)
    cdef bint xu8 = _is_u8(X, tn, n, d)
    cdef const void *xp = _in(X, cnp.NPY_UINT8 if xu8 else tn, n * d, "X")
    cdef const void *wp = _in(coef, tn, c * d, "coef")
    cdef const void *bp = _in(intercept, tn, c, "intercept")
    cdef const intp_t *yp = <const intp_t *> _in(y, cnp.NPY_INTP, n, "y")
    cdef const double *w = _weights(sample_weight, n)
    cdef void *gwp = _out(grad_coef, tn, c * d, "grad_coef")
    cdef void *gbp = _out(grad_intercept, tn, c, "grad_intercept")
    cdef double wsum, total, penalty = 0.0
    if n == 0:
        grad_coef[...] = float("nan")
        grad_intercept[...] = float("nan")
        return float("nan")
    with nogil:
        wsum = <double> n if w == NULL else sf_sum_f64(w, n)
        if tn == cnp.NPY_FLOAT32:
            total = _linear(xp, xu8, n, d, c, <float> x_scale, <const float *> wp,
                            <const float *> bp, yp, w, wsum, <float> alpha, <float *> gwp,
                            <float *> gbp, n_threads)
            if alpha != 0.0:
                penalty = 0.5 * alpha * sf_sumsq_f32(<const float *> wp, c * d)
        else:
            total = _linear(xp, xu8, n, d, c, x_scale, <const double *> wp,
                            <const double *> bp, yp, w, wsum, alpha, <double *> gwp,
                            <double *> gbp, n_threads)
            if alpha != 0.0:
                penalty = 0.5 * alpha * sf_sumsq_f64(<const double *> wp, c * d)
    return total / wsum + penalty


# ------------------------------------------------------------------ one SGD epoch
cdef void _update(floating *W, floating *V, const floating *g, Py_ssize_t n, bint has_data,
                  floating x_scale, floating lr, floating alpha, floating momentum,
                  bint nesterov) noexcept nogil:
    """One SGD step on n weights with gradient x_scale g + alpha W (g unused without data).

    plain: W -= lr grad; momentum: V = momentum V - lr grad, W += V;
    Nesterov: V = momentum V - lr grad, W += momentum V - lr grad.
    """
    cdef Py_ssize_t j
    cdef floating gr
    if momentum == 0:
        if has_data:
            for j in range(n):
                W[j] = W[j] - lr * (x_scale * g[j] + alpha * W[j])
        else:
            for j in range(n):
                W[j] = W[j] - lr * (alpha * W[j])
    elif nesterov:
        for j in range(n):
            gr = x_scale * g[j] + alpha * W[j] if has_data else alpha * W[j]
            V[j] = momentum * V[j] - lr * gr
            W[j] = W[j] + (momentum * V[j] - lr * gr)
    else:
        for j in range(n):
            gr = x_scale * g[j] + alpha * W[j] if has_data else alpha * W[j]
            V[j] = momentum * V[j] - lr * gr
            W[j] = W[j] + V[j]


cdef double _sgd(
    const void *X, bint xu8, Py_ssize_t d, Py_ssize_t c, floating x_scale,
    const intp_t *y, const double *w, const intp_t *order, Py_ssize_t n,
    floating *W, floating *b, floating *VW, floating *Vb, floating lr, floating alpha,
    floating momentum, bint nesterov, Py_ssize_t bs, const double *batch_wsum,
    int n_threads,
) noexcept nogil:
    """All minibatches of one epoch; returns sum_i w_i l_i (each at its batch's weights).

    As in _linear, thread t owns classes [t c / T, (t + 1) c / T): their rows of coef,
    intercept and velocities never leave that thread (no cache-line traffic on the weights),
    and a batch needs one barrier, between the logits and the softmax.
    """
    cdef Py_ssize_t nb = (n + bs - 1) // bs, bt, r0, nr, i, k, k0, k1
    cdef int nt = _n_workers(n_threads, bs * c * d, LIN_GRAIN // 4), tid, nthr
    if nt > c:
        nt = <int> c
    cdef floating *Z = <floating *> malloc(2 * bs * c * sizeof(floating))
    cdef floating *gbuf = <floating *> malloc((c * d + c) * sizeof(floating))
    cdef floating *gbias = gbuf + c * d
    cdef floating *G
    cdef floating *Zb
    cdef intp_t *ybuf
    cdef double *wbuf
    cdef double total = 0.0, loss
    cdef double *totalp = &total
    cdef bint has_data
    cdef sf_barrier_t barrier
    cdef sf_barrier_t *barrierp = &barrier
    cdef int sense
    barrier.count = 0
    barrier.sense = 0
    tid = nthr = sense = 0  # thread-private below; set here only to keep gcc quiet
    r0 = nr = k0 = k1 = bt = i = k = 0
    loss = 0.0
    has_data = False
    G = Zb = NULL
    ybuf = NULL
    wbuf = NULL
    with parallel(num_threads=nt):
        tid = threadid()
        nthr = sf_omp_num_threads()
        sense = 0
        k0 = tid * c // nthr
        k1 = (tid + 1) * c // nthr
        G = <floating *> malloc(bs * c * sizeof(floating))
        ybuf = <intp_t *> malloc(bs * sizeof(intp_t))
        wbuf = <double *> malloc(bs * sizeof(double))
        for bt in range(nb):
            r0 = bt * bs
            nr = min(bs, n - r0)
            has_data = batch_wsum[bt] > 0
            Zb = Z + (bt % 2) * bs * c
            if has_data:
                _forward(X, xu8, d, order, r0, nr, n - r0 - nr, W, k0, k1, x_scale, b, Zb, c)
            sf_barrier_wait(barrierp, nthr, &sense)
            if has_data:
                for i in range(nr):
                    ybuf[i] = y[order[r0 + i]]
                    wbuf[i] = 1.0 if w == NULL else w[order[r0 + i]]
                loss = _ce_rows(Zb, G, nr, c, ybuf, _offset(wbuf if w != NULL else NULL, 0),
                                1.0 / batch_wsum[bt])
                if tid == 0:
                    totalp[0] = totalp[0] + loss
                _backward(X, xu8, d, order, r0, nr, G, c, k0, k1, 0, d, gbuf, d, 0)
                _intercept_sums(G, nr, c, k0, k1, gbias, False)
            for k in range(k0, k1):
                _update(W + k * d, VW + k * d, gbuf + k * d, d, has_data, x_scale, lr, alpha,
                        momentum, nesterov)
            _update(b + k0, Vb + k0, gbias + k0, k1 - k0, has_data, 1, lr, 0, momentum,
                    nesterov)
        free(G)
        free(ybuf)
        free(wbuf)
    free(Z)
    free(gbuf)
    return total


def sgd_epoch(X, double x_scale, y, sample_weight, order, coef, intercept, velocity_coef,
              velocity_intercept, double lr, double alpha, double momentum, bint nesterov,
              Py_ssize_t batch_size, int n_threads=1):
    """One epoch of minibatch SGD on the linear softmax model, in place.

    IN X (n, d) uint8 or coef's dtype, y (n,) intp, sample_weight (n,) float64 or None,
    order (m,) intp; IN/OUT coef (c, d), intercept (c,), velocity_coef, velocity_intercept.

    Batches are order[s:s + batch_size]; each takes one step along the gradient g of its
    weighted mean loss plus (alpha / 2) ||coef||^2 (a batch of zero weight keeps only the
    penalty): plain coef -= lr g; momentum v = momentum v - lr g, coef += v; Nesterov
    v = momentum v - lr g, coef += momentum v - lr g. Returns sum_i w_i l_i / sum_i w_i over
    the epoch, each l_i at the weights its batch saw.
    """
    cdef int tn = _float_typenum(coef, "coef")
    cdef Py_ssize_t n_data = _dim(X, 0), d = _dim(coef, 1), c = _dim(coef, 0)
    cdef Py_ssize_t n = _dim(order, 0), nb, bt, i, bs = batch_size
    cdef bint xu8 = _is_u8(X, tn, n_data, d)
    cdef const void *xp = _in(X, cnp.NPY_UINT8 if xu8 else tn, n_data * d, "X")
    cdef const intp_t *yp = <const intp_t *> _in(y, cnp.NPY_INTP, n_data, "y")
    cdef const intp_t *op = <const intp_t *> _in(order, cnp.NPY_INTP, n, "order")
    cdef const double *w = _weights(sample_weight, n_data)
    cdef void *wp = _out(coef, tn, c * d, "coef")
    cdef void *bp = _out(intercept, tn, c, "intercept")
    cdef void *vwp = _out(velocity_coef, tn, c * d, "velocity_coef")
    cdef void *vbp = _out(velocity_intercept, tn, c, "velocity_intercept")
    cdef double total, wtotal = 0.0, acc
    if n == 0:
        return 0.0
    if bs < 1:
        raise ValueError(f"batch_size must be >= 1, got {bs}")
    if bs > n:
        bs = n
    nb = (n + bs - 1) // bs
    cdef double[::1] batch_wsum = np.empty(nb)
    with nogil:
        for bt in range(nb):
            if w == NULL:
                acc = <double> min(bs, n - bt * bs)
            else:
                acc = 0.0
                for i in range(bt * bs, min(n, bt * bs + bs)):
                    acc = acc + w[op[i]]
            batch_wsum[bt] = acc
            wtotal += acc
        if tn == cnp.NPY_FLOAT32:
            total = _sgd(xp, xu8, d, c, <float> x_scale, yp, w, op, n, <float *> wp,
                         <float *> bp, <float *> vwp, <float *> vbp, <float> lr, <float> alpha,
                         <float> momentum, nesterov, bs, &batch_wsum[0], n_threads)
        else:
            total = _sgd(xp, xu8, d, c, x_scale, yp, w, op, n, <double *> wp, <double *> bp,
                         <double *> vwp, <double *> vbp, lr, alpha, momentum, nesterov, bs,
                         &batch_wsum[0], n_threads)
    return total / wtotal if wtotal > 0 else 0.0
