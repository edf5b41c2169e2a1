"""Many softmax-regression models trained in one pass over the data (Numba + BLAS sgemm).

Design: a hyperparameter grid holds many models that differ only in learning rate, L2
penalty, momentum, ... but share the batch size and the shuffled sample order, so they see
the same minibatches. Their weights are stacked side by side into one matrix
``weights`` of shape (n_features, n_models * n_classes) (column ``j * n_classes + k`` is
class k of model j), and each minibatch is read once for all of them:

1. Xb = x_scale * X[batch] is gathered into a float32 buffer (uint8 is converted here, so the
   data stays a quarter of the bytes in memory);
2. Z = Xb @ weights is ONE wide sgemm (B x d times d x K*c) instead of K narrow ones;
3. softmax, loss and dL/dz of every model block of Z, overwriting Z: per row all K*c
   exponentials in one vectorisable float32 loop (a Cephes polynomial, not libm's scalar
   exp), the sums and losses in float64;
4. weights += Xb^T @ dZ is a second wide sgemm with beta = 1 that applies the update.

Weight decay without touching the weights: plain SGD does W' = (1 - lr*alpha) W - lr X^T dz,
whose first term would cost a pass over all K*c*d weights per minibatch. Each model is kept
as W_j = scale_j * V_j instead, so the decay is the scalar update scale_j' = (1 - lr alpha)
scale_j and step 4 adds -(lr / scale_j') X^T dz to V_j; dZ's columns carry the per-model
factor. When |scale_j| drops below 2^-8 it is folded back into V_j (rare: every ~5.5 /
(lr alpha) steps), so V never grows more than 256x beyond W. Momentum needs the gradient
itself, so a group with any momentum > 0 computes G = Xb^T @ dZ into a buffer and updates
weights and velocities elementwise (scale stays 1).

The sgemm is scipy's ``cython_blas.sgemm`` bound as an external symbol, so the whole epoch —
gather, both products, softmax, updates — runs in one nogil compiled call, with no Python per
minibatch, and is cached on disk. BLAS threads are the only threads; callers choose between
one group with all BLAS threads and several groups in parallel with one BLAS thread each.

Columns of different models never mix in either product, so a model whose weights become
NaN/inf cannot contaminate the others; its loss comes back non-finite and the caller drops it.
"""

import llvmlite.binding as _llvm
import numba
import numpy as np
from numba import types
from numba.extending import get_cython_function_address

__all__ = [
    "multi_sgd_epoch",
    "multi_evaluate",
    "stack_models",
    "unstack_models",
]

# The Fortran sgemm of scipy's bundled OpenBLAS, exported under a private symbol name so the
# compiled (and on-disk cached) functions can call it directly.
_llvm.add_symbol("softmax_fast_multi_sgemm",
                 get_cython_function_address("scipy.linalg.cython_blas", "sgemm"))
_sgemm = types.ExternalFunction("softmax_fast_multi_sgemm", types.void(*([types.voidptr] * 13)))

# No nnan/ninf: a diverged model must produce a NaN loss, not a silently wrong number.
_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
_JIT = {"nogil": True, "cache": True, "fastmath": _FASTMATH}

#: |scale| below which a model's lazy weight-decay factor is folded back into its weights.
_RESCALE_BELOW = 2.0 ** -8


@numba.njit(**_JIT)
def _gemm(trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Column-major C(m, n) = alpha * A(m, k) @ op(B) + beta * C; op(B) is B or B^T.

    Row-major callers pass their matrices swapped (C^T = B^T A^T), see the two uses below.
    """
    ints = np.empty(6, dtype=np.int32)
    ints[0], ints[1], ints[2], ints[3], ints[4], ints[5] = m, n, k, lda, ldb, ldc
    flts = np.empty(2, dtype=np.float32)
    flts[0], flts[1] = alpha, beta
    chars = np.empty(2, dtype=np.uint8)
    chars[0], chars[1] = ord("N"), trans_b
    _sgemm(chars[0:].ctypes, chars[1:].ctypes, ints[0:].ctypes, ints[1:].ctypes,
           ints[2:].ctypes, flts[0:].ctypes, a.ctypes, ints[3:].ctypes, b.ctypes,
           ints[4:].ctypes, flts[1:].ctypes, c.ctypes, ints[5:].ctypes)


@numba.njit(**_JIT)
def _forward(xb, nb, weights, z):
    """Z[:nb] = Xb[:nb] @ weights (row-major); column-major this is Z^T = weights^T Xb^T."""
    n_cols = weights.shape[1]
    d = weights.shape[0]
    _gemm(ord("N"), n_cols, nb, d, 1.0, weights, n_cols, xb, d, 0.0, z, n_cols)


@numba.njit(**_JIT)
def _backward(xb, nb, dz, beta, out):
    """out = beta * out + Xb[:nb]^T @ dZ[:nb] (row-major (d, K*c))."""
    n_cols = out.shape[1]
    d = out.shape[0]
    _gemm(ord("T"), n_cols, d, nb, 1.0, dz, n_cols, xb, d, beta, out, n_cols)


@numba.njit(**_JIT)
def _gather(X, x_scale, order, start, nb, xb):
    xs = np.float32(x_scale)
    d = X.shape[1]
    for r in range(nb):
        row = order[start + r]
        for f in range(d):
            xb[r, f] = np.float32(X[row, f]) * xs


@numba.njit(**_JIT)
def _exp_nonpositive(arg, out, bits):
    """out = exp(arg) in float32 for arg <= 0 (NaN/-inf: anything), in vectorisable loops.

    libm's exp is a scalar call and was ~20 % of an epoch; this is Cephes' expf: n =
    round(x log2 e), r = x - n ln 2 (two-part constant), e^r by a degree-6 polynomial, 2^n
    built in the exponent bits. x is clamped at -87 so 2^n stays a normal number; e^-87 is
    below float32's smallest normal anyway and only ever adds to a sum >= 1.
    """
    pow2 = bits.view(np.float32)
    for q in range(arg.shape[0]):
        x = arg[q]
        x = x if x > np.float32(-87.0) else np.float32(-87.0)
        n = np.floor(x * np.float32(1.44269504088896341) + np.float32(0.5))
        r = x - n * np.float32(0.693359375) - n * np.float32(-2.12194440e-4)
        p = np.float32(1.9875691500e-4) * r + np.float32(1.3981999507e-3)
        p = p * r + np.float32(8.3334519073e-3)
        p = p * r + np.float32(4.1665795894e-2)
        p = p * r + np.float32(1.6666665459e-1)
        p = p * r + np.float32(5.0000001201e-1)
        out[q] = p * (r * r) + r + np.float32(1.0)
        bits[q] = (np.int32(n) + np.int32(127)) << np.int32(23)
    for q in range(arg.shape[0]):
        out[q] *= pow2[q]


@numba.njit(**_JIT)
def _softmax_blocks(z, nb, y, order, start, scale, intercepts, n_classes, coeff, losses,
                    grad_b):
    """Softmax cross-entropy of every model block of Z[:nb]; Z is overwritten by coeff_j * dz.

    Model j's logits are z_ik = scale_j * Z[i, j c + k] + b_jk. Per row, all models at once
    (so the exponentials run over K*c contiguous values):
    1. m_j = max_k z_ijk keeps every exponent <= 0;
    2. loss_ij = log sum_k exp(z_ijk - m_j) - (z_ijy - m_j)  (PyTorch #11752 order; sums and
       the loss in float64, exp in float32);
    3. dz_ijk = (softmax_k - [k == y_i]) / nb, the gradient of the batch-mean loss;
    Z receives coeff_j * dz (the per-model step factor of the update product) and grad_b the
    unscaled column sums (the bias gradient). A NaN/inf logit makes model j's loss NaN
    through the true-class term and stays inside model j's columns.
    """
    n_models = scale.shape[0]
    n_cols = n_models * n_classes
    inv_nb = 1.0 / nb
    grad_b[:] = 0.0
    shifted = np.empty(n_cols, dtype=np.float32)
    expo = np.empty(n_cols, dtype=np.float32)
    bits = np.empty(n_cols, dtype=np.int32)
    for i in range(nb):
        label = y[order[start + i]]
        for j in range(n_models):
            base = j * n_classes
            s = scale[j]
            m = -np.inf
            for k in range(n_classes):
                v = z[i, base + k] * s + intercepts[base + k]
                if v > m:
                    m = v
            true_shifted = z[i, base + label] * s + intercepts[base + label] - m
            losses[j] -= true_shifted
            for k in range(n_classes):
                shifted[base + k] = np.float32(z[i, base + k] * s + intercepts[base + k] - m)
        _exp_nonpositive(shifted, expo, bits)
        for j in range(n_models):
            base = j * n_classes
            total = 0.0
            for k in range(n_classes):
                total += expo[base + k]
            losses[j] += np.log(total)
            inv_total = 1.0 / total
            c = coeff[j] * inv_nb
            for k in range(n_classes):
                g = expo[base + k] * inv_total
                if k == label:
                    g -= 1.0
                grad_b[base + k] += g
                z[i, base + k] = np.float32(g * c)


@numba.njit(**_JIT)
def _epoch_plain(X, x_scale, y, order, weights, scale, intercepts, lr, alpha, n_classes,
                 batch_size, xb, z):
    """One epoch of plain SGD for all models (lazy weight decay, update fused into sgemm)."""
    n = order.shape[0]
    n_models = scale.shape[0]
    d = weights.shape[0]
    losses = np.zeros(n_models, dtype=np.float64)
    grad_b = np.empty(weights.shape[1], dtype=np.float64)
    coeff = np.empty(n_models, dtype=np.float64)
    new_scale = np.empty(n_models, dtype=np.float64)
    for start in range(0, n, batch_size):
        nb = min(batch_size, n - start)
        _gather(X, x_scale, order, start, nb, xb)
        _forward(xb, nb, weights, z)
        # W' = (1 - lr alpha) W - lr g: new scale first, so Z is scaled by -lr / scale'
        for j in range(n_models):
            s = scale[j] * (1.0 - lr[j] * alpha[j])
            if abs(s) < _RESCALE_BELOW:
                # fold the scale into V_j now; the forward product above used the old one
                for f in range(d):
                    for k in range(j * n_classes, (j + 1) * n_classes):
                        weights[f, k] = np.float32(weights[f, k] * s)
                s = 1.0
            new_scale[j] = s
            coeff[j] = -lr[j] / s
        # the logits use the scale the forward product was computed with
        _softmax_blocks(z, nb, y, order, start, scale, intercepts, n_classes, coeff, losses,
                        grad_b)
        for j in range(n_models):
            scale[j] = new_scale[j]
            for k in range(j * n_classes, (j + 1) * n_classes):
                intercepts[k] = np.float32(intercepts[k] - lr[j] * grad_b[k] / nb)
        _backward(xb, nb, z, 1.0, weights)
    return losses / n


@numba.njit(**_JIT)
def _epoch_momentum(X, x_scale, y, order, weights, intercepts, velocity, velocity_b, lr,
                    alpha, momentum, nesterov, n_classes, batch_size, xb, z, grad):
    """One epoch with (Nesterov) momentum: explicit gradient, then elementwise updates.

    v <- mu v - lr g; classical W <- W + v; Nesterov (scikit-learn's form)
    W <- W + mu v - lr g, with g = X^T dz + alpha W (the bias is not penalised).
    """
    n = order.shape[0]
    n_models = lr.shape[0]
    d = weights.shape[0]
    losses = np.zeros(n_models, dtype=np.float64)
    grad_b = np.empty(weights.shape[1], dtype=np.float64)
    ones = np.ones(n_models, dtype=np.float64)
    for start in range(0, n, batch_size):
        nb = min(batch_size, n - start)
        _gather(X, x_scale, order, start, nb, xb)
        _forward(xb, nb, weights, z)
        _softmax_blocks(z, nb, y, order, start, ones, intercepts, n_classes, ones, losses,
                        grad_b)
        _backward(xb, nb, z, 0.0, grad)
        for f in range(d + 1):
            for j in range(n_models):
                mu, step, decay, nest = momentum[j], lr[j], alpha[j], nesterov[j]
                for k in range(j * n_classes, (j + 1) * n_classes):
                    if f < d:
                        g = grad[f, k] + decay * weights[f, k]
                        v = mu * velocity[f, k] - step * g
                        velocity[f, k] = np.float32(v)
                        delta = mu * v - step * g if nest else v
                        weights[f, k] = np.float32(weights[f, k] + delta)
                    else:  # the bias row: no decay, gradient = batch mean of dz
                        g = grad_b[k] / nb
                        v = mu * velocity_b[k] - step * g
                        velocity_b[k] = np.float32(v)
                        delta = mu * v - step * g if nest else v
                        intercepts[k] = np.float32(intercepts[k] + delta)
    return losses / n


@numba.njit(**_JIT)
def _evaluate(X, x_scale, y, weights, scale, intercepts, n_classes, chunk):
    """Sum of per-sample losses and of correct predictions of every model on (X, y).

    As the estimator's evaluation: z = (float32(X) @ W) * x_scale + b, argmax ties to the
    first class.
    """
    n, d = X.shape
    n_models = scale.shape[0]
    loss = np.zeros(n_models, dtype=np.float64)
    correct = np.zeros(n_models, dtype=np.float64)
    xb = np.empty((chunk, d), dtype=np.float32)
    z = np.empty((chunk, weights.shape[1]), dtype=np.float32)
    zrow = np.empty(n_classes, dtype=np.float64)
    order = np.arange(n)
    for start in range(0, n, chunk):
        nb = min(chunk, n - start)
        _gather(X, 1.0, order, start, nb, xb)
        _forward(xb, nb, weights, z)
        for i in range(nb):
            label = y[start + i]
            for j in range(n_models):
                base = j * n_classes
                s = scale[j] * x_scale
                m = -np.inf
                best = 0
                for k in range(n_classes):
                    v = z[i, base + k] * s + intercepts[base + k]
                    zrow[k] = v
                    if v > m:
                        m = v
                        best = k
                total = 0.0
                for k in range(n_classes):
                    total += np.exp(zrow[k] - m)
                loss[j] += np.log(total) - (zrow[label] - m)
                if best == label:
                    correct[j] += 1.0
    return loss, correct


# --------------------------------------------------------------------------------------
# Python wrappers (inputs validated by the caller, as for the single-model kernels)
# --------------------------------------------------------------------------------------
def stack_models(coefs, intercepts):
    """Stack K models into the multi-model layout.

    Parameters
    ----------
    coefs : ndarray of shape (K, n_classes, n_features)
    intercepts : ndarray of shape (K, n_classes)

    Returns
    -------
    weights : float32 ndarray (n_features, K * n_classes), C-contiguous
    scale : float64 ndarray (K,) of ones (the lazy weight-decay factors)
    stacked_intercepts : float32 ndarray (K * n_classes,)
    """
    coefs = np.asarray(coefs, dtype=np.float32)
    n_models, n_classes, n_features = coefs.shape
    weights = np.ascontiguousarray(coefs.transpose(2, 0, 1).reshape(n_features, -1))
    return (weights, np.ones(n_models, dtype=np.float64),
            np.ascontiguousarray(intercepts, dtype=np.float32).reshape(-1).copy())


def unstack_models(weights, scale, intercepts, n_classes):
    """Inverse of :func:`stack_models`: coef (K, n_classes, n_features), intercept (K, c).

    The lazy scale is applied, so the result is the models' true weights (float32).
    """
    n_features = weights.shape[0]
    n_models = scale.shape[0]
    coefs = weights.reshape(n_features, n_models, n_classes).transpose(1, 2, 0)
    coefs = (coefs * scale[:, None, None]).astype(np.float32)
    return np.ascontiguousarray(coefs), intercepts.reshape(n_models, n_classes).copy()


def multi_sgd_epoch(X, x_scale, y, order, weights, scale, intercepts, lr, alpha, n_classes,
                    batch_size, momentum=None, nesterov=None, velocity=None,
                    velocity_intercepts=None):
    """One SGD epoch of K models over the minibatches of ``order``, in place.

    Parameters
    ----------
    X : ndarray (n, d), uint8 or float32, C-contiguous
        Model input is x_scale * X.
    y, order : intp ndarrays (n,) and (m,)
        Labels (0..n_classes-1) and the epoch's sample order (consecutive slices of
        ``batch_size`` are the minibatches; the last, partial one is kept).
    weights, scale, intercepts : the stacked models (see :func:`stack_models`), IN/OUT
    lr, alpha : float64 ndarrays (K,)
        Per-model step size and L2 penalty (the objective adds alpha/2 ||W||^2).
    momentum : float64 ndarray (K,) or None
        With any non-zero entry, ``nesterov`` (bool (K,)), ``velocity`` (like ``weights``) and
        ``velocity_intercepts`` (like ``intercepts``) are required and ``scale`` must be ones
        (it stays ones).

    Returns
    -------
    float64 ndarray (K,)
        Each model's mean over the epoch's samples of the loss at the weights its batch saw
        (non-finite for a model that diverged).
    """
    n_cols = weights.shape[1]
    batch_size = int(batch_size)
    xb = np.empty((batch_size, X.shape[1]), dtype=np.float32)
    z = np.empty((batch_size, n_cols), dtype=np.float32)
    lr = np.ascontiguousarray(lr, dtype=np.float64)
    alpha = np.ascontiguousarray(alpha, dtype=np.float64)
    if momentum is None or not np.any(np.asarray(momentum) != 0.0):
        return _epoch_plain(X, float(x_scale), y, order, weights, scale, intercepts, lr, alpha,
                            int(n_classes), batch_size, xb, z)
    if not np.all(scale == 1.0):
        raise ValueError("momentum groups keep scale == 1")
    grad = np.empty_like(weights)
    return _epoch_momentum(X, float(x_scale), y, order, weights, intercepts, velocity,
                           velocity_intercepts, lr, alpha,
                           np.ascontiguousarray(momentum, dtype=np.float64),
                           np.ascontiguousarray(nesterov, dtype=np.bool_), int(n_classes),
                           batch_size, xb, z, grad)


def multi_evaluate(X, x_scale, y, weights, scale, intercepts, n_classes, chunk=2048):
    """Mean unregularised cross-entropy and accuracy of every stacked model on ``(X, y)``.

    Returns two float64 ndarrays (K,); entries of a diverged model are non-finite or
    meaningless and must be ignored by the caller.
    """
    if X.shape[0] == 0:
        raise ValueError("cannot evaluate on an empty set")
    chunk = max(1, min(int(chunk), X.shape[0]))
    loss, correct = _evaluate(X, float(x_scale), y, weights, scale, intercepts,
                              int(n_classes), chunk)
    return loss / X.shape[0], correct / X.shape[0]
