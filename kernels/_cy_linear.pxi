# The linear model with register-blocked tiles: loss/gradient and one SGD epoch
# (included by _softmax_ce.pyx).

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
    if R * d * (1 if xu8 else sizeof(floating)) > LIN_X_BYTES:
        R = LIN_X_BYTES // (d * (1 if xu8 else sizeof(floating)))
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
    cdef Py_ssize_t fallback = -1
    cdef Py_ssize_t *fallbackp = &fallback
    cdef bint alone
    cdef sf_watch_t watch
    cdef sf_watch_t *watchp = &watch
    sf_watch_init(watchp)
    barrier.count = 0
    barrier.sense = 0
    tid = nthr = sense = 0  # thread-private below; set here only to keep gcc quiet
    r0 = nr = k0 = k1 = ch = 0
    loss = 0.0
    alone = False
    G = Zb = NULL
    with parallel(num_threads=nt):
        tid = threadid()
        nthr = sf_omp_num_threads()
        sense = 0
        alone = nthr == 1
        k0 = tid * c // nthr
        k1 = (tid + 1) * c // nthr
        G = <floating *> malloc(R * c * sizeof(floating))
        for ch in range(nchunk):
            r0 = ch * R
            nr = min(R, n - r0)
            Zb = Z + (ch % 2) * R * c
            _forward(X, xu8, d, NULL, r0, nr, 0, W, k0, k1, x_scale, b, Zb, c)
            if not alone and _watched_barrier(barrierp, nthr, &sense, tid, watchp,
                                              fallbackp, ch):
                # A partner was descheduled: every forward of chunk ch is done (the barrier);
                # the others leave before touching its gradient, the master goes on alone.
                if tid != 0:
                    k0 = k1  # nothing of this thread's is left to do (no _finish_grad)
                    break
                alone = True
                k0, k1 = 0, c
            loss = _ce_rows(Zb, G, nr, c, y + r0, _offset(w, r0), 1.0 / wsum)
            if tid == 0:
                totalp[0] = totalp[0] + loss
            _backward(X, xu8, d, NULL, r0, nr, G, c, k0, k1, 0, d, gW, d, ch > 0)
            _intercept_sums(G, nr, c, k0, k1, gb, ch > 0)
        _finish_grad(gW, W, d, k0, k1, 0, d, x_scale, alpha)
        free(G)
    free(Z)
    if nt > 1 and not watch.contended:
        sf_report_parallel_ok()
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
    _check_indices(yp, n, c, "y")
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
cdef double[::1] _batch_weight_sums(const double *w, const intp_t *order, Py_ssize_t n,
                                    Py_ssize_t bs):
    """Total sample weight of each minibatch order[b bs:(b + 1) bs] (its size without w)."""
    cdef Py_ssize_t nb = (n + bs - 1) // bs, bt, i
    cdef double[::1] sums = np.empty(nb)
    cdef double acc
    with nogil:
        for bt in range(nb):
            if w == NULL:
                acc = <double> min(bs, n - bt * bs)
            else:
                acc = 0.0
                for i in range(bt * bs, min(n, bt * bs + bs)):
                    acc = acc + w[order[i]]
            sums[bt] = acc
    return sums


cdef double _ordered_sum(double[::1] values) noexcept:
    """Sum in index order (the same bits whatever computed the values)."""
    cdef double total = 0.0
    cdef Py_ssize_t i
    for i in range(values.shape[0]):
        total += values[i]
    return total


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
    cdef Py_ssize_t fallback = -1
    cdef Py_ssize_t *fallbackp = &fallback
    cdef bint alone
    cdef sf_watch_t watch
    cdef sf_watch_t *watchp = &watch
    sf_watch_init(watchp)
    barrier.count = 0
    barrier.sense = 0
    tid = nthr = sense = 0  # thread-private below; set here only to keep gcc quiet
    r0 = nr = k0 = k1 = bt = i = k = 0
    loss = 0.0
    has_data = alone = False
    G = Zb = NULL
    ybuf = NULL
    wbuf = NULL
    with parallel(num_threads=nt):
        tid = threadid()
        nthr = sf_omp_num_threads()
        sense = 0
        alone = nthr == 1
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
            if not alone and _watched_barrier(barrierp, nthr, &sense, tid, watchp,
                                              fallbackp, bt):
                # A partner was descheduled: every forward of batch bt is done and no update
                # of it has started; the others leave, the master goes on with every class.
                if tid != 0:
                    break
                alone = True
                k0, k1 = 0, c
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
    if nt > 1 and not watch.contended:
        sf_report_parallel_ok()
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
    cdef Py_ssize_t n = _dim(order, 0), bs = batch_size
    cdef bint xu8 = _is_u8(X, tn, n_data, d)
    cdef const void *xp = _in(X, cnp.NPY_UINT8 if xu8 else tn, n_data * d, "X")
    cdef const intp_t *yp = <const intp_t *> _in(y, cnp.NPY_INTP, n_data, "y")
    cdef const intp_t *op = <const intp_t *> _in(order, cnp.NPY_INTP, n, "order")
    cdef const double *w = _weights(sample_weight, n_data)
    cdef void *wp = _out(coef, tn, c * d, "coef")
    cdef void *bp = _out(intercept, tn, c, "intercept")
    cdef void *vwp = _out(velocity_coef, tn, c * d, "velocity_coef")
    cdef void *vbp = _out(velocity_intercept, tn, c, "velocity_intercept")
    cdef double total, wtotal
    _check_indices(yp, n_data, c, "y")
    _check_indices(op, n, n_data, "order")
    if n == 0:
        return 0.0
    if bs < 1:
        raise ValueError(f"batch_size must be >= 1, got {bs}")
    if bs > n:
        bs = n
    cdef double[::1] batch_wsum = _batch_weight_sums(w, op, n, bs)
    wtotal = _ordered_sum(batch_wsum)
    with nogil:
        if tn == cnp.NPY_FLOAT32:
            total = _sgd(xp, xu8, d, c, <float> x_scale, yp, w, op, n, <float *> wp,
                         <float *> bp, <float *> vwp, <float *> vbp, <float> lr, <float> alpha,
                         <float> momentum, nesterov, bs, &batch_wsum[0], n_threads)
        else:
            total = _sgd(xp, xu8, d, c, x_scale, yp, w, op, n, <double *> wp, <double *> bp,
                         <double *> vwp, <double *> vbp, lr, alpha, momentum, nesterov, bs,
                         &batch_wsum[0], n_threads)
    return total / wtotal if wtotal > 0 else 0.0
