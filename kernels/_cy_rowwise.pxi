# Row-wise kernels: softmax, log-softmax, softmax cross-entropy (included by _softmax_ce.pyx).

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
    _check_same_shape(n, c, out.shape[0], out.shape[1])
    if n == 0 or c == 0:
        return
    cdef const floating *zp = &logits[0, 0]
    cdef floating *op = &out[0, 0]
    cdef int64_t finish[MAX_TEAM]
    cdef int64_t start
    finish[0] = 0
    with nogil:
        start = sf_now_ns()
        for blk in prange(nblk, num_threads=nt, schedule="dynamic", chunksize=chunk):
            r0 = blk * R
            _softmax_block(zp + r0 * c, op + r0 * c, min(R, n - r0), c)
            _mark_done(finish)
        _judge_team(start, finish, nt)


def log_softmax(const floating[:, ::1] logits, floating[:, ::1] out, int n_threads=1):
    """Row-wise log-softmax (z - max) - log sum exp(z - max).

    IN logits (n, c); OUT out (n, c), may be ``logits`` itself.
    """
    cdef Py_ssize_t n = logits.shape[0], c = logits.shape[1]
    cdef Py_ssize_t R = _rows_per_block(c), nblk = (n + R - 1) // R, blk, r0
    cdef int nt = _n_workers(n_threads, n * c, ROWWISE_GRAIN)
    cdef Py_ssize_t chunk = max(1, ROWWISE_GRAIN // (R * c))  # blocks per dynamic grab
    cdef floating *work = NULL
    _check_same_shape(n, c, out.shape[0], out.shape[1])
    if n == 0 or c == 0:
        return
    cdef const floating *zp = &logits[0, 0]
    cdef floating *op = &out[0, 0]
    cdef int64_t finish[MAX_TEAM]
    cdef int64_t start
    finish[0] = 0
    with nogil:
        start = sf_now_ns()
        with parallel(num_threads=nt):
            work = <floating *> malloc(R * c * sizeof(floating))
            for blk in prange(nblk, schedule="dynamic", chunksize=chunk):
                r0 = blk * R
                _log_softmax_block(zp + r0 * c, op + r0 * c, work, min(R, n - r0), c)
                _mark_done(finish)
            free(work)
        _judge_team(start, finish, nt)


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
    _check_same_shape(n, c, out.shape[0], out.shape[1])
    if y.shape[0] != n:
        raise ValueError(f"y must have {n} entries, got {y.shape[0]}")
    if n == 0:
        return float("nan")
    _check_indices(&y[0], n, c, "y")
    wsum = <double> n if w == NULL else sf_sum_f64(w, n)
    cdef double[::1] block_loss = np.empty(nblk)
    cdef const floating *zp = &logits[0, 0]
    cdef floating *op = &out[0, 0]
    cdef const intp_t *yp = &y[0]
    cdef int64_t finish[MAX_TEAM]
    cdef int64_t start
    finish[0] = 0
    with nogil:
        start = sf_now_ns()
        for blk in prange(nblk, num_threads=nt, schedule="dynamic", chunksize=chunk):
            r0 = blk * R
            if c <= SMALL_C:
                block_loss[blk] = _ce_small(zp + r0 * c, op + r0 * c, min(R, n - r0), c,
                                            yp + r0, _offset(w, r0), 1.0 / wsum)
            else:
                block_loss[blk] = _ce_block(zp + r0 * c, op + r0 * c, min(R, n - r0), c,
                                            yp + r0, _offset(w, r0), 1.0 / wsum)
            _mark_done(finish)
        _judge_team(start, finish, nt)
        for blk in range(nblk):  # fixed order: the same bits for any thread count
            total += block_loss[blk]
    return total / wsum
