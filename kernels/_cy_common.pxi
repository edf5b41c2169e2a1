# Shared declarations and helpers of the Cython kernels (included by _softmax_ce.pyx).

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
    ctypedef struct sf_watch_t:
        int contended
    int64_t sf_now_ns()
    int sf_governed_threads(int nthreads)
    void sf_report_contention()
    void sf_report_parallel_ok()
    void sf_report_unbalanced()
    void sf_watch_init(sf_watch_t *w)
    void sf_watch_before(sf_watch_t *w)
    int sf_watch_after(sf_watch_t *w)
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
    # bytes of X per chunk: the backward pass re-reads the chunk, which must still be in L2
    # (1-2 MiB per core on current x86; 3.2 MB float32 chunks at d=784 ran 2.5x slower)
    LIN_X_BYTES = 1 << 20
    LIN_GRAIN = 1 << 16       # multiply-adds per thread below which one thread is used
    MAX_TEAM = 256            # threads of one team at most (per-thread bookkeeping arrays)
    TEAM_IDLE_NS = 300000     # master idle this long (and 30 % of a loop): a busy machine


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
    """Threads worth waking for ``work`` units (results never depend on this choice).

    One thread while the busy-machine governor says a core is taken (see _sf_simd.h).
    """
    cdef Py_ssize_t useful = work // grain
    if useful < 1:
        useful = 1
    if useful > MAX_TEAM:
        useful = MAX_TEAM
    return sf_governed_threads(<int> (n_threads if n_threads < useful else useful))


cdef inline void _mark_done(int64_t *finish) noexcept nogil:
    """In a dynamically scheduled loop: when this thread last finished a block."""
    finish[sf_omp_thread_num()] = sf_now_ns()


cdef inline void _judge_team(int64_t start, const int64_t *finish, int nt) noexcept nogil:
    """After such a loop: report a busy machine when the master sat waiting for a partner.

    With dynamic scheduling an idle machine leaves the master idle for at most one block; a
    partner descheduled while it holds a block leaves it idle for a time slice.
    """
    cdef int64_t end, idle
    if nt <= 1:
        return
    end = sf_now_ns()
    idle = end - (finish[0] if finish[0] > start else start)
    if idle > TEAM_IDLE_NS and idle * 10 > (end - start) * 3:
        sf_report_unbalanced()
    else:
        sf_report_parallel_ok()


cdef inline bint _watched_barrier(sf_barrier_t *barrier, int nthr, int *sense, int tid,
                                  sf_watch_t *watch, Py_ssize_t *fallback_at,
                                  Py_ssize_t step) noexcept nogil:
    """The phase barrier of ``step`` in a persistent region, watching for a busy core.

    The master decides *before* a barrier (from the waits it saw so far) that the team falls
    back to one thread after it, by writing that barrier's step into ``fallback_at`` (once).
    Every thread compares with its own step after the barrier: a partner descheduled right
    after an earlier barrier may read the flag late, but then sees a later step and goes on
    to that barrier first, so all threads leave at the same one. Returns True when the team
    must fall back now.
    """
    if tid == 0 and watch.contended and fallback_at[0] < 0:
        fallback_at[0] = step
    if tid == 0:
        sf_watch_before(watch)
    sf_barrier_wait(barrier, nthr, sense)
    if tid == 0:
        sf_watch_after(watch)
    return fallback_at[0] == step


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
    if sw.shape[0] != n:
        raise ValueError(f"sample_weight must have {n} entries, got {sw.shape[0]}")
    return &sw[0]


# Memory safety at the door: the loops below index with labels and sample numbers unchecked,
# so every entry point checks them first (one pass over the index array, no data read).
cdef int _check_indices(const intp_t *a, Py_ssize_t n, Py_ssize_t bound,
                        str name) except -1:
    """Raise ValueError unless every a[i] is in [0, bound)."""
    cdef Py_ssize_t i, bad = -1
    with nogil:
        for i in range(n):
            if a[i] < 0 or a[i] >= bound:
                bad = i
                break
    if bad >= 0:
        raise ValueError(f"{name}[{bad}] = {a[bad]} is outside [0, {bound})")
    return 0


cdef int _check_same_shape(Py_ssize_t n, Py_ssize_t c, Py_ssize_t n_out,
                           Py_ssize_t c_out) except -1:
    if n_out != n or c_out != c:
        raise ValueError(f"out must have shape ({n}, {c}), got ({n_out}, {c_out})")
    return 0


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
