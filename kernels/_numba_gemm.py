"""The Numba backend's BLAS path: the linear model at GEMM speed for large d x c.

The same design as the Cython one (``_cy_gemm.pxi``): rows in chunks of R (R x c <=
GEMM_CHUNK_ELEMS), logits = x_scale X_chunk W^T + b by BLAS in fixed tiles
(GEMM_ROW_TILE x GEMM_CLASS_TILE), the fused softmax-CE sweep in place (float64 sums), then
dW (+)= x_scale G^T X_chunk in fixed tiles (GEMM_CLASS_TILE x feature_tile(d, c)). Tiles are
spread over the threads by ``prange`` with a chunk size of one (dynamic: a core busy with
another program takes fewer), each tile one BLAS call on the calling thread, so results are
bitwise identical for any ``n_threads``. SGD with large minibatches takes each batch through
the same phases and fuses the plain update into the gradient product (beta = 1 - lr alpha).

Row-split mode (as Cython's; the usual one for linear_softmax_ce): when one partial gradient
(c x d) fits in GEMM_SPLIT_BYTES, blocks of B rows are dealt to GEMM_SPLIT_SLOTS fixed slots
(block j to slot j % S); one task per slot takes each of its blocks start to finish (logits,
softmax-CE, partial dW += G^T X_block, each product one full-width BLAS call) and the slots'
partials are summed in slot order at the end. One parallel region per call instead of three
per chunk; S and B depend on the shape only.
"""

from numba import njit, prange

from ._numba_blas import gemm
from ._numba_config import (
    GEMM_CHUNK_ELEMS,
    GEMM_CLASS_TILE,
    GEMM_FEATURE_TILE,
    GEMM_MAX_ROWS,
    GEMM_MIN_FEATURE_TILE,
    GEMM_MIN_GRAD_TILES,
    GEMM_ROW_TILE,
    GEMM_SPLIT_BLOCK,
    GEMM_SPLIT_BYTES,
    GEMM_SPLIT_MIN_BLOCK,
    GEMM_SPLIT_SLOTS,
    JIT,
    PJIT,
    SOFTMAX_BLOCK_ELEMS,
)
from ._numba_math import _softmax_ce_rows

__all__ = ["chunk_rows", "linear_gemm", "linear_split", "sgd_gemm", "split_block", "split_slots"]


@njit(**JIT)
def chunk_rows(n, c):
    """Rows per chunk: R x c <= GEMM_CHUNK_ELEMS, a multiple of 16, at most GEMM_MAX_ROWS."""
    r = (GEMM_CHUNK_ELEMS // max(c, 1)) // 16 * 16
    r = min(max(r, 16), GEMM_MAX_ROWS)
    return min(r, max(n, 1))


@njit(**JIT)
def feature_tile(d, c):
    """Features per gradient tile: GEMM_FEATURE_TILE, narrowed (a multiple of 16, at least
    GEMM_MIN_FEATURE_TILE) until dW has GEMM_MIN_GRAD_TILES tiles; (d, c) only, as Cython's
    ``gemm_feature_tile``, so the tiles (and the bits) never depend on the thread count."""
    ntk = (c + GEMM_CLASS_TILE - 1) // GEMM_CLASS_TILE
    want = (GEMM_MIN_GRAD_TILES + ntk - 1) // ntk
    tile = ((d + want - 1) // want + 15) // 16 * 16
    return min(max(tile, GEMM_MIN_FEATURE_TILE), GEMM_FEATURE_TILE)


@njit(**JIT)
def split_slots(d, c, itemsize):
    """Slots of the row-split mode, or 0 when a partial gradient is too large for it."""
    return GEMM_SPLIT_SLOTS if c * d * itemsize <= GEMM_SPLIT_BYTES else 0


@njit(**JIT)
def split_block(n, c, slots):
    """Rows of one block of the row-split mode: enough blocks for every slot, within
    [GEMM_SPLIT_MIN_BLOCK, GEMM_SPLIT_BLOCK], and the slots' logits (slots x B x c) within
    GEMM_CHUNK_ELEMS (that cap wins)."""
    rows = ((n + slots - 1) // slots + 15) // 16 * 16
    cap = (GEMM_CHUNK_ELEMS // (slots * max(c, 1))) // 16 * 16
    return max(min(max(rows, GEMM_SPLIT_MIN_BLOCK), GEMM_SPLIT_BLOCK, cap), 16)


@njit(**PJIT)
def _split_slots_pass(X, x_scale, coef, intercept, y, w, has_w, inv_wsum, B, Zs, xbufs,
                      parts, bparts, slot_loss):
    """Every slot s in parallel: blocks s, s + S, ... start to finish into parts[s]."""
    n, d = X.shape
    slots = parts.shape[0]
    nblk = (n + B - 1) // B
    cf = coef.ravel()
    for s in prange(min(slots, nblk)):
        Z = Zs[s]
        zf, pf, bp = Z.ravel(), parts[s].ravel(), bparts[s]
        loss = 0.0
        for j in range(s, nblk, slots):
            i0 = j * B
            nr = min(B, n - i0)
            if X.itemsize == 1:  # uint8 rows as floats (both branches compile: see gemm)
                xb = xbufs[s]
                for i in range(nr):
                    for f in range(d):
                        xb[i, f] = X[i0 + i, f]
                loss += _block(xb.ravel(), i0, nr, x_scale, cf, intercept, y, w, has_w,
                               inv_wsum, Z, zf, pf, bp, j == s)
            else:
                loss += _block(X.ravel()[i0 * d:], i0, nr, x_scale, cf, intercept, y, w, has_w,
                               inv_wsum, Z, zf, pf, bp, j == s)
        slot_loss[s] = loss


@njit(**JIT)
def _block(xs, i0, nr, x_scale, cf, intercept, y, w, has_w, inv_wsum, Z, zf, pf, bp, first):
    """One block of the row-split mode (rows xs, data rows i0...): logits, softmax-CE in
    place, partial dW (+)= G^T xs and partial db (+)= sum G; returns sum_i w_i l_i."""
    c = Z.shape[1]
    d = pf.shape[0] // c
    # column-major: Z^T (c x nr) = coef (c x d) xs^T (d x nr)
    gemm(ord("T"), ord("N"), c, nr, d, x_scale, cf, d, xs, d, 0.0, zf, c)
    for i in range(nr):
        for k in range(c):
            Z[i, k] += intercept[k]
    loss = _softmax_ce_rows(Z, Z, 0, nr, i0, y, w, has_w, inv_wsum)
    # column-major: part^T (d x c) (+)= xs^T (d x nr) Z (nr x c)
    gemm(ord("N"), ord("T"), d, c, nr, x_scale, xs, d, zf, c, 0.0 if first else 1.0, pf, d)
    _column_sums(Z, nr, 0, c, bp, not first)
    return loss


@njit(**PJIT)
def _split_reduce(parts, bparts, used, coef, alpha, grad_coef, grad_intercept):
    """grad = ((parts[0] + parts[1]) + ...) + alpha coef: the slot order, rows in parallel."""
    c, d = coef.shape
    for k in prange(c):
        acc = parts[0, k]
        for s in range(1, used):
            other = parts[s, k]
            for f in range(d):
                acc[f] += other[f]
        for f in range(d):
            grad_coef[k, f] = acc[f] + alpha * coef[k, f]
    for k in range(c):
        total = bparts[0, k]
        for s in range(1, used):
            total += bparts[s, k]
        grad_intercept[k] = total


@njit(**JIT)
def linear_split(X, x_scale, coef, intercept, y, w, has_w, wsum, alpha, grad_coef,
                 grad_intercept, B, Zs, xbufs, parts, bparts, slot_loss):
    """linear_gemm in row-split mode: sum_i w_i l_i, gradients into grad_*."""
    _split_slots_pass(X, x_scale, coef, intercept, y, w, has_w, 1.0 / wsum, B, Zs, xbufs,
                      parts, bparts, slot_loss)
    used = min(parts.shape[0], (X.shape[0] + B - 1) // B)
    _split_reduce(parts, bparts, used, coef, alpha, grad_coef, grad_intercept)
    total = 0.0
    for s in range(used):
        total += slot_loss[s]
    return total


@njit(**PJIT)
def _to_float(X, rows, r0, nr, out):
    """out[i] = X[rows[r0 + i]] (rows None: X[r0 + i]) as floats: a batch made contiguous."""
    d = X.shape[1]
    for i in prange(nr):
        row = r0 + i if rows is None else rows[r0 + i]
        for f in range(d):
            out[i, f] = X[row, f]


@njit(**PJIT)
def _logits_phase(xs, x0, nr, coef, intercept, x_scale, Z):
    """Z[:nr] = x_scale xs[rows] coef^T + intercept; xs flat, the chunk starting at x0."""
    c, d = coef.shape
    zf, cf = Z.ravel(), coef.ravel()
    ntc = (c + GEMM_CLASS_TILE - 1) // GEMM_CLASS_TILE
    ntr = (nr + GEMM_ROW_TILE - 1) // GEMM_ROW_TILE
    for t in prange(ntr * ntc):
        i0 = (t // ntc) * GEMM_ROW_TILE
        i1 = min(nr, i0 + GEMM_ROW_TILE)
        k0 = (t % ntc) * GEMM_CLASS_TILE
        k1 = min(c, k0 + GEMM_CLASS_TILE)
        # column-major: Z^T (k x i) = coef (k x d) xs^T (d x i)
        gemm(ord("T"), ord("N"), k1 - k0, i1 - i0, d, x_scale, cf[k0 * d:], d,
             xs[x0 + i0 * d:], d, 0.0, zf[i0 * c + k0:], c)
        for i in range(i0, i1):
            for k in range(k0, k1):
                Z[i, k] += intercept[k]


@njit(**PJIT)
def _softmax_phase(Z, nr, y, w, has_w, inv_wsum, block_loss):
    """Softmax-CE of Z[:nr] in place (G = w_i/sum(w) (p - onehot)); sum w_i l_i in order.

    ``y``/``w`` are the chunk's labels and weights, row i of Z is row i of them.
    """
    c = Z.shape[1]
    R = max(1, SOFTMAX_BLOCK_ELEMS // max(c, 1))
    nblk = (nr + R - 1) // R
    for blk in prange(nblk):
        q0 = blk * R
        block_loss[blk] = _softmax_ce_rows(Z, Z, q0, min(nr, q0 + R), 0, y, w, has_w,
                                           inv_wsum)
    total = 0.0
    for blk in range(nblk):
        total += block_loss[blk]
    return total


@njit(**JIT)
def _column_sums(Z, nr, k0, k1, out, accumulate):
    """out[k] (+)= sum_i Z[i, k] for k in [k0, k1): rows in order, read row by row."""
    if not accumulate:
        for k in range(k0, k1):
            out[k] = 0
    for i in range(nr):
        for k in range(k0, k1):
            out[k] += Z[i, k]


@njit(**PJIT)
def _gradient_phase(xs, x0, nr, Z, out, scale, beta):
    """out (c x d) = beta out + scale Z[:nr]^T xs_chunk, in fixed tiles."""
    c, d = out.shape
    zf, of = Z.ravel(), out.ravel()
    ntk = (c + GEMM_CLASS_TILE - 1) // GEMM_CLASS_TILE
    ft = feature_tile(d, c)
    ntf = (d + ft - 1) // ft
    for t in prange(ntk * ntf):
        k0 = (t // ntf) * GEMM_CLASS_TILE
        k1 = min(c, k0 + GEMM_CLASS_TILE)
        f0 = (t % ntf) * ft
        f1 = min(d, f0 + ft)
        # column-major: out^T (f x k) = xs^T (f x i) Z (i x k)
        gemm(ord("N"), ord("T"), f1 - f0, k1 - k0, nr, scale, xs[x0 + f0:], d, zf[k0:], c,
             beta, of[k0 * d + f0:], d)


@njit(**JIT)
def linear_gemm(X, xf, xbuf, x_scale, coef, intercept, y, w, has_w, wsum, alpha, grad_coef,
                grad_intercept, Z, block_loss):
    """Sum_i w_i l_i; gradients of the mean loss + (alpha/2)||coef||^2 into grad_*.

    The products read ``xf``. Float X (of coef's dtype) is read in place: the caller passes
    it as ``xf`` and a 1 x 1 ``xbuf``. uint8 X is converted chunk by chunk into ``xbuf`` (R x
    d floats), passed as ``xf`` too. (One argument for both would be X itself for float X,
    read-only, and the conversion's writes into it would not compile.)
    """
    n, d = X.shape
    c = coef.shape[0]
    R = chunk_rows(n, c)
    xs = xf.ravel()
    total = 0.0
    for ch in range((n + R - 1) // R):
        r0 = ch * R
        nr = min(R, n - r0)
        x0 = r0 * d
        if X.itemsize == 1:
            _to_float(X, None, r0, nr, xbuf)
            x0 = 0
        _logits_phase(xs, x0, nr, coef, intercept, x_scale, Z)
        total += _softmax_phase(Z, nr, y[r0:r0 + nr], w[r0:r0 + nr] if has_w else w, has_w,
                                1.0 / wsum, block_loss)
        _gradient_phase(xs, x0, nr, Z, grad_coef, x_scale, 1.0 if ch > 0 else 0.0)
        _column_sums(Z, nr, 0, c, grad_intercept, ch > 0)
    _add_decay(grad_coef, coef, alpha)
    return total


@njit(**PJIT)
def _add_decay(grad_coef, coef, alpha):
    if alpha != 0.0:
        for k in prange(coef.shape[0]):
            for f in range(coef.shape[1]):
                grad_coef[k, f] += alpha * coef[k, f]


@njit(**PJIT)
def _momentum_tiles(coef, velocity, grad, has_data, lr, alpha, momentum, nesterov):
    """v = mu v - lr (g + alpha W); W += v (Nesterov: mu v - lr g), by class rows."""
    c, d = coef.shape
    for k in prange(c):
        for f in range(d):
            g = grad[k, f] + alpha * coef[k, f] if has_data else alpha * coef[k, f]
            v = momentum * velocity[k, f] - lr * g
            velocity[k, f] = v
            coef[k, f] += momentum * v - lr * g if nesterov else v


@njit(**JIT)
def _bias_step(intercept, velocity_b, gsum, has_data, lr, momentum, nesterov):
    for k in range(intercept.shape[0]):
        g = gsum[k] if has_data else 0.0
        if momentum == 0.0:
            intercept[k] -= lr * g
        else:
            v = momentum * velocity_b[k] - lr * g
            velocity_b[k] = v
            intercept[k] += momentum * v - lr * g if nesterov else v


@njit(**JIT)
def sgd_gemm(X, x_scale, y, w, has_w, order, batch_wsum, coef, intercept, velocity_coef,
             velocity_intercept, lr, alpha, momentum, nesterov, batch_size, xb, Z, grad,
             gsum, yb, wb, block_loss):
    """All minibatches of one epoch with the products in BLAS tiles; sum_i w_i l_i."""
    n = order.shape[0]
    total = 0.0
    for bt in range((n + batch_size - 1) // batch_size):
        r0 = bt * batch_size
        nr = min(batch_size, n - r0)
        has_data = batch_wsum[bt] > 0
        if has_data:
            _to_float(X, order, r0, nr, xb)
            for i in range(nr):
                yb[i] = y[order[r0 + i]]
                wb[i] = w[order[r0 + i]] if has_w else 1.0
            _logits_phase(xb.ravel(), 0, nr, coef, intercept, x_scale, Z)
            total += _softmax_phase(Z, nr, yb, wb, has_w, 1.0 / batch_wsum[bt], block_loss)
            _column_sums(Z, nr, 0, coef.shape[0], gsum, False)
        if momentum == 0.0:
            if has_data:  # W <- (1 - lr alpha) W - lr x_scale G^T X_b: one product per tile
                _gradient_phase(xb.ravel(), 0, nr, Z, coef, -lr * x_scale, 1.0 - lr * alpha)
            else:
                _decay(coef, 1.0 - lr * alpha)
        else:
            if has_data:
                _gradient_phase(xb.ravel(), 0, nr, Z, grad, x_scale, 0.0)
            _momentum_tiles(coef, velocity_coef, grad, has_data, lr, alpha, momentum,
                            nesterov)
        _bias_step(intercept, velocity_intercept, gsum, has_data, lr, momentum, nesterov)
    return total


@njit(**PJIT)
def _decay(coef, factor):
    for k in prange(coef.shape[0]):
        for f in range(coef.shape[1]):
            coef[k, f] *= factor
