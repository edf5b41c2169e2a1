# The linear model on BLAS: for large d x c, logits and weight gradient are matrix products
# (included by _softmax_ce.pyx).
#
# Design
# ------
# * Rows are processed in chunks of R rows (R depends on c only, R x c <= GEMM_CHUNK_ELEMS):
#   Z = x_scale X_chunk W^T + b by sgemm/dgemm, the fused softmax-CE sweep of
#   _cy_rowwise.pxi in place on Z (one pass, float64 loss sums), then
#   dW (+)= x_scale Z^T X_chunk by a second product. Extra memory is the chunk's logits (and,
#   for uint8 X, the chunk's rows as floats), never n x c.
# * Determinism: every product is cut into tiles whose shape depends only on (n, d, c) —
#   GEMM_ROW_TILE rows x GEMM_CLASS_TILE classes for the logits, GEMM_CLASS_TILE classes x
#   gemm_feature_tile(d, c) features for the gradient — and each tile is one BLAS call on the
#   calling thread (the Python wrapper keeps BLAS single-threaded). A tile's numbers are the
#   same whichever thread runs it, gradient tiles accumulate over chunks in chunk order and
#   losses are summed in block order, so results are bitwise identical for any n_threads.
# * Tiles are handed out dynamically (OpenMP schedule(dynamic)): a thread on a core that is
#   busy with another program simply takes fewer tiles; no thread waits on another except
#   at the end of each of the three phases of a chunk.
# * Row-split mode (the usual one; linear_softmax_ce only): when one partial gradient (c x d)
#   fits in GEMM_SPLIT_BYTES, the rows are cut into blocks of B and the blocks dealt to S fixed
#   slots (block j to slot j % S). One task per slot runs its blocks one after the other, each
#   block start to finish while its rows are in cache: logits by one BLAS call, softmax-CE in
#   place, then the slot's partial dW (+)= G^T X_block by one BLAS call with the whole of dW as
#   its output. The S partials are summed in slot order at the end. Against the tiled mode
#   this has one parallel region instead of three per chunk, and BLAS calls of full width
#   (m = d, n = c) instead of 64-512-feature tiles: 16384 x 1024 x 100 float32 59 -> 45 ms,
#   40000 x 768 x 1000 581 -> 495 ms (bench_shapes). S and B depend on (n, d, c, dtype) only,
#   so the bits are still the same for any n_threads.
# * SGD (large minibatches): the same three phases per minibatch; the plain update is fused
#   into the gradient product: W <- (1 - lr alpha) W - lr x_scale G^T X_b is one call with
#   beta = 1 - lr alpha per tile. Momentum computes the gradient tile, then updates it.

from scipy.linalg.cython_blas cimport dgemm, sgemm

cdef enum:
    GEMM_CHUNK_ELEMS = 1 << 22    # logits per chunk (R x c): the O(chunk) memory
    GEMM_MAX_ROWS = 2048          # rows per chunk at most
    GEMM_ROW_TILE = 512           # rows of one logits tile
    GEMM_CLASS_TILE = 512         # classes of one logits / gradient tile
    GEMM_FEATURE_TILE = 512       # features of one gradient tile at most
    GEMM_MIN_FEATURE_TILE = 64    # ... and at least
    # gradient tiles per product at least (when d allows): with one 100 x 512 tile, a
    # probe's dW ran on one thread
    GEMM_MIN_GRAD_TILES = 8
    GEMM_SPLIT_SLOTS = 8          # row-split mode: slots (partial gradients)
    GEMM_SPLIT_BLOCK = 512        # ... rows of one block at most
    # ... and at least (when n and c allow): blocks of 32 rows (n = 256 over 8 slots) made
    # the mode slower than the tiled one, 128 made it faster (256 x 2048 x 64: 1.09 -> 0.76 ms)
    GEMM_SPLIT_MIN_BLOCK = 128
    # ... bytes of one partial gradient at most: every block reads and writes the whole of
    # it, which must stay in cache (c x d = 1000 x 768 float32, 3 MB: 581 -> 495 ms; 2048 x
    # 1000, 8 MB: no gain; 10000 x 768, 31 MB: 174 -> 268 ms)
    GEMM_SPLIT_BYTES = 1 << 22


cdef inline void _gemm(char ta, char tb, int m, int n, int k, floating alpha,
                       const floating *a, int lda, const floating *b, int ldb, floating beta,
                       floating *c, int ldc) noexcept nogil:
    """Column-major C(m, n) = alpha op(A) op(B) + beta C (Fortran BLAS)."""
    if floating is float:
        sgemm(&ta, &tb, &m, &n, &k, &alpha, <float *> a, &lda, <float *> b, &ldb, &beta, c,
              &ldc)
    else:
        dgemm(&ta, &tb, &m, &n, &k, &alpha, <double *> a, &lda, <double *> b, &ldb, &beta, c,
              &ldc)


cdef Py_ssize_t gemm_chunk_rows(Py_ssize_t n, Py_ssize_t c) noexcept nogil:
    """Rows per chunk: R x c <= GEMM_CHUNK_ELEMS, a multiple of 16, at most GEMM_MAX_ROWS."""
    cdef Py_ssize_t r = (GEMM_CHUNK_ELEMS // c) // 16 * 16 if c > 0 else GEMM_MAX_ROWS
    if r < 16:
        r = 16
    if r > GEMM_MAX_ROWS:
        r = GEMM_MAX_ROWS
    return r if r < n else n


cdef Py_ssize_t gemm_feature_tile(Py_ssize_t d, Py_ssize_t c) noexcept nogil:
    """Features per gradient tile: GEMM_FEATURE_TILE, narrowed (a multiple of 16, at least
    GEMM_MIN_FEATURE_TILE) until dW has GEMM_MIN_GRAD_TILES tiles for the threads to share.

    Depends on (d, c) only, never on the thread count: the tiles, and so the bits, are the
    same for any n_threads.
    """
    cdef Py_ssize_t ntk = (c + GEMM_CLASS_TILE - 1) // GEMM_CLASS_TILE
    cdef Py_ssize_t want = (GEMM_MIN_GRAD_TILES + ntk - 1) // ntk
    cdef Py_ssize_t tile = ((d + want - 1) // want + 15) // 16 * 16
    if tile < GEMM_MIN_FEATURE_TILE:
        tile = GEMM_MIN_FEATURE_TILE
    if tile > GEMM_FEATURE_TILE:
        tile = GEMM_FEATURE_TILE
    return tile


cdef Py_ssize_t gemm_split_slots(Py_ssize_t d, Py_ssize_t c, Py_ssize_t itemsize) noexcept nogil:
    """Slots of the row-split mode, or 0 when a partial gradient is too large for it (the
    tiled mode then)."""
    return GEMM_SPLIT_SLOTS if c * d * itemsize <= GEMM_SPLIT_BYTES else 0


cdef Py_ssize_t gemm_split_block(Py_ssize_t n, Py_ssize_t c, Py_ssize_t slots) noexcept nogil:
    """Rows of one block of the row-split mode: enough blocks for every slot, within
    [GEMM_SPLIT_MIN_BLOCK, GEMM_SPLIT_BLOCK], and the slots' logits (slots x B x c) within
    GEMM_CHUNK_ELEMS (that cap wins)."""
    cdef Py_ssize_t rows = ((n + slots - 1) // slots + 15) // 16 * 16
    cdef Py_ssize_t cap = (GEMM_CHUNK_ELEMS // (slots * c)) // 16 * 16 if c > 0 else rows
    if rows < GEMM_SPLIT_MIN_BLOCK:
        rows = GEMM_SPLIT_MIN_BLOCK
    if rows > GEMM_SPLIT_BLOCK:
        rows = GEMM_SPLIT_BLOCK
    if rows > cap:
        rows = cap
    return rows if rows > 16 else 16


def gemm_split_plan(Py_ssize_t n, Py_ssize_t d, Py_ssize_t c, Py_ssize_t itemsize):
    """(slots, rows per block) of the row-split mode for this shape; (0, 0): the tiled mode.

    For the tests: the Numba backend must make the same choice (``_numba_gemm``).
    """
    cdef Py_ssize_t slots = gemm_split_slots(d, c, itemsize)
    if slots == 0:
        return (0, 0)
    return (slots, gemm_split_block(n, c, slots))


cdef void _logits_tile(const floating *xs, Py_ssize_t ldx, Py_ssize_t i0, Py_ssize_t i1,
                       Py_ssize_t d, Py_ssize_t c, const floating *W, const floating *b,
                       Py_ssize_t k0, Py_ssize_t k1, floating x_scale,
                       floating *Z) noexcept nogil:
    """Z[i, k] = x_scale sum_f xs[i, f] W[k, f] + b[k] for rows [i0, i1), classes [k0, k1).

    Column-major this is Z^T (k x i) = W (k x d) xs^T (d x i): op(A) = W^T stored, op(B) = B.
    """
    cdef Py_ssize_t i, k
    _gemm(c'T', c'N', <int> (k1 - k0), <int> (i1 - i0), <int> d, x_scale, W + k0 * d,
          <int> d, xs + i0 * ldx, <int> ldx, 0, Z + i0 * c + k0, <int> c)
    for i in range(i0, i1):
        for k in range(k0, k1):
            Z[i * c + k] += b[k]


cdef void _gradient_tile(const floating *xs, Py_ssize_t ldx, Py_ssize_t nr, Py_ssize_t d,
                         Py_ssize_t c, const floating *G, Py_ssize_t k0, Py_ssize_t k1,
                         Py_ssize_t f0, Py_ssize_t f1, floating scale, floating beta,
                         floating *out) noexcept nogil:
    """out[k, f] = beta out[k, f] + scale sum_i G[i, k] xs[i, f] on one tile (out is c x d).

    Column-major: out^T (f x k) = xs^T (f x i) G (i x k): op(A) = A, op(B) = B^T stored.
    """
    _gemm(c'N', c'T', <int> (f1 - f0), <int> (k1 - k0), <int> nr, scale, xs + f0, <int> ldx,
          G + k0, <int> c, beta, out + k0 * d + f0, <int> d)


cdef void _rows_to_float(const uint8_t *X, Py_ssize_t d, const intp_t *idx, Py_ssize_t r0,
                         Py_ssize_t nr, floating *out, int nt) noexcept nogil:
    """out[i] = X[idx[r0 + i]] (or X[r0 + i] without idx) as floats, rows in parallel."""
    cdef Py_ssize_t i, f, row
    for i in prange(nr, num_threads=nt, schedule="static"):
        row = idx[r0 + i] if idx != NULL else r0 + i
        for f in range(d):
            out[i * d + f] = X[row * d + f]


cdef void _gather_rows(const floating *X, Py_ssize_t d, const intp_t *idx, Py_ssize_t r0,
                       Py_ssize_t nr, floating *out, int nt) noexcept nogil:
    """out[i] = X[idx[r0 + i]]: a minibatch's rows made contiguous for BLAS."""
    cdef Py_ssize_t i, f, row
    for i in prange(nr, num_threads=nt, schedule="static"):
        row = idx[r0 + i]
        for f in range(d):
            out[i * d + f] = X[row * d + f]


cdef void _column_sums(const floating *G, Py_ssize_t nr, Py_ssize_t c, Py_ssize_t k0,
                       Py_ssize_t k1, floating *out, bint accumulate) noexcept nogil:
    """out[k] (+)= sum_i G[i, k] for k in [k0, k1): rows in order, read row by row.

    Each column is summed in row order (as _intercept_sums does), but the loop walks the rows
    of G contiguously, which matters when c is large (a column walk strides c values).
    """
    cdef Py_ssize_t i, k
    if not accumulate:
        for k in range(k0, k1):
            out[k] = 0
    for i in range(nr):
        for k in range(k0, k1):
            out[k] += G[i * c + k]


cdef double _softmax_phase(floating *Z, Py_ssize_t nr, Py_ssize_t c, const intp_t *y,
                           const double *w, double inv_wsum, double *block_loss,
                           int nt) noexcept nogil:
    """Softmax-CE of nr rows of Z in place (row blocks in parallel); sum_i w_i l_i in order."""
    cdef Py_ssize_t R = _rows_per_block(c), nblk = (nr + R - 1) // R, blk, i0
    cdef double total = 0.0
    cdef int64_t finish[MAX_TEAM]
    cdef int64_t start = sf_now_ns()
    finish[0] = 0
    nt = sf_governed_threads(nt)  # every phase asks again: a busy core turns up mid-call
    for blk in prange(nblk, num_threads=nt, schedule="dynamic"):
        i0 = blk * R
        if c <= SMALL_C:
            block_loss[blk] = _ce_small(Z + i0 * c, Z + i0 * c, min(R, nr - i0), c, y + i0,
                                        _offset(w, i0), inv_wsum)
        else:
            block_loss[blk] = _ce_block(Z + i0 * c, Z + i0 * c, min(R, nr - i0), c, y + i0,
                                        _offset(w, i0), inv_wsum)
        _mark_done(finish)
    _judge_team(start, finish, nt)
    for blk in range(nblk):
        total += block_loss[blk]
    return total


cdef void _logits_phase(const floating *xs, Py_ssize_t ldx, Py_ssize_t nr, Py_ssize_t d,
                        Py_ssize_t c, const floating *W, const floating *b, floating x_scale,
                        floating *Z, int nt) noexcept nogil:
    cdef Py_ssize_t ntc = (c + GEMM_CLASS_TILE - 1) // GEMM_CLASS_TILE
    cdef Py_ssize_t ntr = (nr + GEMM_ROW_TILE - 1) // GEMM_ROW_TILE, t, i0, k0
    cdef int64_t finish[MAX_TEAM]
    cdef int64_t start = sf_now_ns()
    finish[0] = 0
    nt = sf_governed_threads(nt)
    for t in prange(ntr * ntc, num_threads=nt, schedule="dynamic"):
        i0 = (t // ntc) * GEMM_ROW_TILE
        k0 = (t % ntc) * GEMM_CLASS_TILE
        _logits_tile(xs, ldx, i0, min(nr, i0 + GEMM_ROW_TILE), d, c, W, b, k0,
                     min(c, k0 + GEMM_CLASS_TILE), x_scale, Z)
        _mark_done(finish)
    _judge_team(start, finish, nt)


cdef double _split_slot(
    const void *X, bint xu8, Py_ssize_t n, Py_ssize_t d, Py_ssize_t c, floating x_scale,
    const floating *W, const floating *b, const intp_t *y, const double *w, double inv_wsum,
    Py_ssize_t slots, Py_ssize_t B, Py_ssize_t s, floating *Z, floating *xbuf, floating *P,
    floating *bP,
) noexcept nogil:
    """Row-split mode, one slot: blocks s, s + slots, ... in order, each block's logits,
    softmax-CE and G^T X_block into the slot's partials P (c x d) and bP (c); returns the
    slot's sum_i w_i l_i (blocks in order)."""
    cdef Py_ssize_t nblk = (n + B - 1) // B, q, j, i0, nr, i
    cdef double loss = 0.0
    cdef const floating *xs
    cdef const uint8_t *xu
    for q in range((nblk - s + slots - 1) // slots):
        j = s + q * slots
        i0 = j * B
        nr = min(B, n - i0)
        if xu8:
            xu = <const uint8_t *> X + i0 * d
            for i in range(nr * d):
                xbuf[i] = xu[i]
            xs = xbuf
        else:
            xs = <const floating *> X + i0 * d
        _logits_tile(xs, d, 0, nr, d, c, W, b, 0, c, x_scale, Z)
        loss += _ce_rows(Z, Z, nr, c, y + i0, _offset(w, i0), inv_wsum)
        _gradient_tile(xs, d, nr, d, c, Z, 0, c, 0, d, x_scale, 0 if j == s else 1, P)
        _column_sums(Z, nr, c, 0, c, bP, j != s)
    return loss


cdef double _linear_split(
    const void *X, bint xu8, Py_ssize_t n, Py_ssize_t d, Py_ssize_t c, floating x_scale,
    const floating *W, const floating *b, const intp_t *y, const double *w, double wsum,
    floating alpha, floating *gW, floating *gb, Py_ssize_t slots, Py_ssize_t B, floating *Zs,
    floating *xbufs, floating *P, floating *bP, double *slot_loss, int nt,
) noexcept nogil:
    """The row-split mode of _linear_gemm (see the design notes): slots in parallel, then
    gW = sum_s P_s + alpha W and gb = sum_s bP_s, summed in slot order."""
    cdef Py_ssize_t used = min(slots, (n + B - 1) // B), s, k, f
    cdef Py_ssize_t cd = c * d
    cdef double total = 0.0
    cdef int64_t finish[MAX_TEAM]
    cdef int64_t start = sf_now_ns()
    finish[0] = 0
    nt = sf_governed_threads(nt)
    for s in prange(used, num_threads=nt, schedule="dynamic", chunksize=1):
        slot_loss[s] = _split_slot(X, xu8, n, d, c, x_scale, W, b, y, w, 1.0 / wsum, slots, B,
                                   s, Zs + s * B * c, xbufs + (s * B * d if xu8 else 0),
                                   P + s * cd, bP + s * c)
        _mark_done(finish)
    _judge_team(start, finish, nt)
    for k in prange(c, num_threads=sf_governed_threads(nt), schedule="static"):
        # per element ((P_0 + P_1) + P_2) ...: the slot order, row by row (vectorised)
        for s in range(1, used):
            for f in range(d):
                P[k * d + f] = P[k * d + f] + P[s * cd + k * d + f]
        for f in range(d):
            gW[k * d + f] = P[k * d + f] + alpha * W[k * d + f]
    for k in range(c):
        gb[k] = bP[k]
        for s in range(1, used):
            gb[k] = gb[k] + bP[s * c + k]
    for s in range(used):
        total += slot_loss[s]
    return total


cdef double _linear_gemm(
    const void *X, bint xu8, Py_ssize_t n, Py_ssize_t d, Py_ssize_t c, floating x_scale,
    const floating *W, const floating *b, const intp_t *y, const double *w, double wsum,
    floating alpha, floating *gW, floating *gb, floating *Z, floating *Xf,
    double *block_loss, int nt,
) noexcept nogil:
    """Sum_i w_i l_i of z = x_scale X W^T + b; gW = x_scale G^T X + alpha W, gb = sum G.

    Z holds one chunk's logits (R x c), Xf one chunk's rows as floats (uint8 X only).
    """
    cdef Py_ssize_t R = gemm_chunk_rows(n, c), ch, r0, nr, t, k0, f0, k, f
    cdef Py_ssize_t ntk = (c + GEMM_CLASS_TILE - 1) // GEMM_CLASS_TILE
    cdef Py_ssize_t ft = gemm_feature_tile(d, c)
    cdef Py_ssize_t ntf = (d + ft - 1) // ft
    cdef double total = 0.0
    cdef const floating *xs
    for ch in range((n + R - 1) // R):
        r0 = ch * R
        nr = min(R, n - r0)
        if xu8:
            _rows_to_float(<const uint8_t *> X, d, NULL, r0, nr, Xf, nt)
            xs = Xf
        else:
            xs = <const floating *> X + r0 * d
        _logits_phase(xs, d, nr, d, c, W, b, x_scale, Z, nt)
        total += _softmax_phase(Z, nr, c, y + r0, _offset(w, r0), 1.0 / wsum, block_loss, nt)
        for t in prange(ntk * ntf, num_threads=sf_governed_threads(nt), schedule="dynamic"):
            k0 = (t // ntf) * GEMM_CLASS_TILE
            f0 = (t % ntf) * ft
            _gradient_tile(xs, d, nr, d, c, Z, k0, min(c, k0 + GEMM_CLASS_TILE), f0,
                           min(d, f0 + ft), x_scale, 0 if ch == 0 else 1, gW)
            if f0 == 0:
                _column_sums(Z, nr, c, k0, min(c, k0 + GEMM_CLASS_TILE), gb, ch > 0)
    if alpha != 0:
        for k in prange(c, num_threads=nt, schedule="static"):
            for f in range(d):
                gW[k * d + f] = gW[k * d + f] + alpha * W[k * d + f]
    return total


def linear_softmax_ce_gemm(X, double x_scale, coef, intercept, y, sample_weight,
                           double alpha, grad_coef, grad_intercept, int n_threads=1):
    """As :func:`linear_softmax_ce`, with the products done by BLAS in fixed row blocks
    (row-split mode) or tiles (tiled mode), chosen by shape.

    The caller keeps BLAS single-threaded (``softmax_fast.kernels._blas``): our own threads
    share the blocks or tiles out.
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
    cdef bint f32 = tn == cnp.NPY_FLOAT32
    with nogil:
        wsum = <double> n if w == NULL else sf_sum_f64(w, n)
        if alpha != 0.0:
            penalty = 0.5 * alpha * (sf_sumsq_f32(<const float *> wp, c * d) if f32
                                     else sf_sumsq_f64(<const double *> wp, c * d))
    dtype = np.float32 if f32 else np.float64
    cdef int nt = _n_workers(n_threads, n * c * d, LIN_GRAIN)
    cdef Py_ssize_t slots = gemm_split_slots(d, c, 4 if f32 else 8)
    if slots:
        total = _split_total(xp, xu8, n, d, c, x_scale, wp, bp, yp, w, wsum, alpha, gwp, gbp,
                             slots, f32, dtype, nt)
    else:
        total = _tiled_total(xp, xu8, n, d, c, x_scale, wp, bp, yp, w, wsum, alpha, gwp, gbp,
                             f32, dtype, nt)
    return total / wsum + penalty


cdef double _tiled_total(
    const void *xp, bint xu8, Py_ssize_t n, Py_ssize_t d, Py_ssize_t c, double x_scale,
    const void *wp, const void *bp, const intp_t *yp, const double *w, double wsum,
    double alpha, void *gwp, void *gbp, bint f32, object dtype, int nt,
) except? -1:
    """linear_softmax_ce_gemm in tiled mode: the chunk's buffers, then _linear_gemm;
    returns sum_i w_i l_i."""
    cdef Py_ssize_t R = gemm_chunk_rows(n, c)
    Z = np.empty(R * c, dtype=dtype)
    Xf = np.empty(R * d if xu8 else 1, dtype=dtype)
    cdef double[::1] block_loss = np.empty(R)
    cdef double total
    cdef float[::1] zf, xff
    cdef double[::1] zd, xfd
    if f32:
        zf, xff = Z, Xf
        with nogil:
            total = _linear_gemm(xp, xu8, n, d, c, <float> x_scale, <const float *> wp,
                                 <const float *> bp, yp, w, wsum, <float> alpha, <float *> gwp,
                                 <float *> gbp, &zf[0], &xff[0], &block_loss[0], nt)
    else:
        zd, xfd = Z, Xf
        with nogil:
            total = _linear_gemm(xp, xu8, n, d, c, x_scale, <const double *> wp,
                                 <const double *> bp, yp, w, wsum, alpha, <double *> gwp,
                                 <double *> gbp, &zd[0], &xfd[0], &block_loss[0], nt)
    return total


cdef double _split_total(
    const void *xp, bint xu8, Py_ssize_t n, Py_ssize_t d, Py_ssize_t c, double x_scale,
    const void *wp, const void *bp, const intp_t *yp, const double *w, double wsum,
    double alpha, void *gwp, void *gbp, Py_ssize_t slots, bint f32, object dtype, int nt,
) except? -1:
    """linear_softmax_ce_gemm in row-split mode: the slots' buffers, then _linear_split;
    returns sum_i w_i l_i."""
    cdef Py_ssize_t B = gemm_split_block(n, c, slots)
    bufs = [np.empty(size, dtype=dtype) for size in
            (slots * B * c, slots * B * d if xu8 else 1, slots * c * d, slots * c)]
    cdef double[::1] slot_loss = np.empty(slots)
    cdef double total
    cdef float[::1] f0, f1, f2, f3
    cdef double[::1] d0, d1, d2, d3
    if f32:
        f0, f1, f2, f3 = bufs
        with nogil:
            total = _linear_split(xp, xu8, n, d, c, <float> x_scale, <const float *> wp,
                                  <const float *> bp, yp, w, wsum, <float> alpha,
                                  <float *> gwp, <float *> gbp, slots, B, &f0[0], &f1[0],
                                  &f2[0], &f3[0], &slot_loss[0], nt)
    else:
        d0, d1, d2, d3 = bufs
        with nogil:
            total = _linear_split(xp, xu8, n, d, c, x_scale, <const double *> wp,
                                  <const double *> bp, yp, w, wsum, alpha, <double *> gwp,
                                  <double *> gbp, slots, B, &d0[0], &d1[0], &d2[0], &d3[0],
                                  &slot_loss[0], nt)
    return total


# ------------------------------------------------------------------ SGD with large minibatches
cdef void _update_tile(floating *W, floating *V, const floating *g, Py_ssize_t d,
                       Py_ssize_t k0, Py_ssize_t k1, Py_ssize_t f0, Py_ssize_t f1,
                       bint has_data, floating lr, floating alpha, floating momentum,
                       bint nesterov) noexcept nogil:
    """Momentum step on one tile: g is the tile of x_scale G^T X (unused without data)."""
    cdef Py_ssize_t k, f, q
    cdef floating gr
    for k in range(k0, k1):
        for f in range(f0, f1):
            q = k * d + f
            gr = g[q] + alpha * W[q] if has_data else alpha * W[q]
            V[q] = momentum * V[q] - lr * gr
            W[q] = W[q] + (momentum * V[q] - lr * gr if nesterov else V[q])


cdef void _decay_tile(floating *W, Py_ssize_t d, Py_ssize_t k0, Py_ssize_t k1, Py_ssize_t f0,
                      Py_ssize_t f1, floating factor) noexcept nogil:
    """W *= factor on one tile (a minibatch of zero weight keeps only the L2 step)."""
    cdef Py_ssize_t k, f
    for k in range(k0, k1):
        for f in range(f0, f1):
            W[k * d + f] = W[k * d + f] * factor


cdef void _bias_step(floating *b, floating *Vb, const floating *G, Py_ssize_t nr,
                     Py_ssize_t c, Py_ssize_t k0, Py_ssize_t k1, bint has_data, floating lr,
                     floating momentum, bint nesterov, floating *gsum) noexcept nogil:
    """b[k0:k1] takes its step along the column sums of G (the bias is not penalised)."""
    cdef Py_ssize_t k
    cdef floating gr
    if has_data:
        _column_sums(G, nr, c, k0, k1, gsum, False)
    for k in range(k0, k1):
        gr = gsum[k] if has_data else 0
        if momentum == 0:
            b[k] = b[k] - lr * gr
        else:
            Vb[k] = momentum * Vb[k] - lr * gr
            b[k] = b[k] + (momentum * Vb[k] - lr * gr if nesterov else Vb[k])


cdef void _batch_rows(const void *X, bint xu8, Py_ssize_t d, const intp_t *y, const double *w,
                      const intp_t *order, Py_ssize_t r0, Py_ssize_t nr, floating *Xb,
                      intp_t *yb, double *wb, int nt) noexcept nogil:
    """The minibatch order[r0:r0 + nr] made contiguous: rows as floats, labels, weights."""
    cdef Py_ssize_t i
    if xu8:
        _rows_to_float(<const uint8_t *> X, d, order, r0, nr, Xb, nt)
    else:
        _gather_rows(<const floating *> X, d, order, r0, nr, Xb, nt)
    for i in range(nr):
        yb[i] = y[order[r0 + i]]
        wb[i] = 1.0 if w == NULL else w[order[r0 + i]]


cdef double _sgd_gemm(
    const void *X, bint xu8, Py_ssize_t d, Py_ssize_t c, floating x_scale,
    const intp_t *y, const double *w, const intp_t *order, Py_ssize_t n,
    floating *W, floating *b, floating *VW, floating *Vb, floating lr, floating alpha,
    floating momentum, bint nesterov, Py_ssize_t bs, const double *batch_wsum,
    floating *Z, floating *Xb, floating *gbuf, floating *gsum, intp_t *yb, double *wb,
    double *block_loss, int nt,
) noexcept nogil:
    """All minibatches of one epoch with the products in BLAS tiles; returns sum_i w_i l_i."""
    cdef Py_ssize_t nb = (n + bs - 1) // bs, bt, r0, nr, t, k0, k1, f0, f1
    cdef Py_ssize_t ntk = (c + GEMM_CLASS_TILE - 1) // GEMM_CLASS_TILE
    cdef Py_ssize_t ft = gemm_feature_tile(d, c)
    cdef Py_ssize_t ntf = (d + ft - 1) // ft
    cdef double total = 0.0
    cdef bint has_data
    for bt in range(nb):
        r0 = bt * bs
        nr = min(bs, n - r0)
        has_data = batch_wsum[bt] > 0
        if has_data:
            _batch_rows(X, xu8, d, y, w, order, r0, nr, Xb, yb, wb, nt)
            _logits_phase(Xb, d, nr, d, c, W, b, x_scale, Z, nt)
            total += _softmax_phase(Z, nr, c, yb, wb if w != NULL else NULL,
                                    1.0 / batch_wsum[bt], block_loss, nt)
        for t in prange(ntk * ntf, num_threads=sf_governed_threads(nt), schedule="dynamic"):
            k0 = (t // ntf) * GEMM_CLASS_TILE
            k1 = min(c, k0 + GEMM_CLASS_TILE)
            f0 = (t % ntf) * ft
            f1 = min(d, f0 + ft)
            if momentum == 0 and has_data:
                # W <- (1 - lr alpha) W - lr x_scale G^T X_b, one product per tile
                _gradient_tile(Xb, d, nr, d, c, Z, k0, k1, f0, f1, -lr * x_scale,
                               1 - lr * alpha, W)
            elif momentum == 0:
                _decay_tile(W, d, k0, k1, f0, f1, 1 - lr * alpha)
            else:
                if has_data:
                    _gradient_tile(Xb, d, nr, d, c, Z, k0, k1, f0, f1, x_scale, 0, gbuf)
                _update_tile(W, VW, gbuf, d, k0, k1, f0, f1, has_data, lr, alpha, momentum,
                             nesterov)
            if f0 == 0:
                _bias_step(b, Vb, Z, nr, c, k0, k1, has_data, lr, momentum, nesterov, gsum)
    return total


def sgd_epoch_gemm(X, double x_scale, y, sample_weight, order, coef, intercept, velocity_coef,
                   velocity_intercept, double lr, double alpha, double momentum, bint nesterov,
                   Py_ssize_t batch_size, int n_threads=1):
    """As :func:`sgd_epoch`, with each minibatch's products done by BLAS in fixed tiles.

    The caller keeps BLAS single-threaded (``softmax_fast.kernels._blas``).
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
    bs = min(bs, n)
    cdef double[::1] batch_wsum = _batch_weight_sums(w, op, n, bs)
    wtotal = _ordered_sum(batch_wsum)
    dtype = np.float32 if tn == cnp.NPY_FLOAT32 else np.float64
    bufs = [np.empty(size, dtype=dtype) for size in (bs * c, bs * d, c * d if momentum else 1, c)]
    cdef intp_t[::1] yb = np.empty(bs, dtype=np.intp)
    cdef double[::1] wb = np.empty(bs)
    cdef double[::1] block_loss = np.empty(bs)
    cdef int nt = _n_workers(n_threads, bs * c * d, LIN_GRAIN)
    cdef float[::1] f0, f1, f2, f3
    cdef double[::1] d0, d1, d2, d3
    if tn == cnp.NPY_FLOAT32:
        f0, f1, f2, f3 = bufs
        with nogil:
            total = _sgd_gemm(xp, xu8, d, c, <float> x_scale, yp, w, op, n, <float *> wp,
                              <float *> bp, <float *> vwp, <float *> vbp, <float> lr,
                              <float> alpha, <float> momentum, nesterov, bs, &batch_wsum[0],
                              &f0[0], &f1[0], &f2[0], &f3[0], &yb[0], &wb[0], &block_loss[0],
                              nt)
    else:
        d0, d1, d2, d3 = bufs
        with nogil:
            total = _sgd_gemm(xp, xu8, d, c, x_scale, yp, w, op, n, <double *> wp,
                              <double *> bp, <double *> vwp, <double *> vbp, lr, alpha,
                              momentum, nesterov, bs, &batch_wsum[0], &d0[0], &d1[0], &d2[0],
                              &d3[0], &yb[0], &wb[0], &block_loss[0], nt)
    return total / wtotal if wtotal > 0 else 0.0
