"""Many softmax-regression models trained on the same minibatches (Numba + BLAS sgemm).

Design
------
A hyperparameter grid holds many models that differ only in learning rate, L2 penalty,
momentum, ... but share the batch size and the shuffled sample order, so they see the same
minibatches. Models are stacked as ``coefs`` (K, n_classes, n_features) — K ordinary
``coef_`` matrices — and trained in *tasks* of up to ``MULTI_MODELS_PER_TASK`` models: a task
gathers each minibatch once (uint8 is converted here, so the data stays a quarter of the bytes
in memory) and takes every one of its models one step. Tasks are handed to threads
dynamically (a core busy with another program just takes fewer of them).

Per model and minibatch:

1. Z = Xb @ W_j^T is one sgemm of the same shape for every model;
2. softmax, loss and dL/dz in place of Z: the exponentials in one vectorisable float32 loop
   over the batch (a Cephes polynomial, not libm's scalar exp), sums and losses in float64;
3. plain SGD: W_j += Xb^T @ (coeff_j dZ) is a second sgemm with beta = 1 that applies the
   update; momentum: G = Xb^T @ dZ, then the elementwise (Nesterov) momentum update.

Independence of the grouping. Model j's numbers depend on model j alone: both products are
per-model calls of one fixed shape (a wide product over many models would round each column
according to the product's width), BLAS runs each call on the calling thread, and the update
rule is chosen by the model's own momentum. So a configuration trains bitwise alike alone, in
any group, with any ``n_threads`` and after any resume.

Weight decay without touching the weights: plain SGD does W' = (1 - lr alpha) W - lr X^T dz,
whose first term would cost a pass over the c x d weights per minibatch. Each plain model is
kept as W_j = scale_j V_j instead, so the decay is the scalar update
scale_j' = (1 - lr alpha) scale_j and step 3 adds -(lr / scale_j') X^T dz to V_j. When |scale_j|
drops below 2^-8 it is folded back into V_j (rare: every ~5.5 / (lr alpha) steps), so V never
grows more than 256x beyond W. Momentum needs the gradient itself, so momentum models keep
scale 1.

The sgemm is scipy's ``cython_blas.sgemm`` bound as an external symbol (``_numba_blas``), so a
whole epoch runs in one nogil compiled call, with no Python per minibatch, cached on disk.
"""

import numba
import numpy as np
from numba import prange

from ._blas import single_threaded_blas
from ._governor import GOVERNOR
from ._guard import check_multi
from ._numba_blas import gemm
from ._numba_config import JIT, MULTI_MODELS_PER_TASK, PJIT, read_only
from ._numba_math import _EXP_FLUSH_F32

__all__ = ["multi_sgd_epoch"]

#: |scale| below which a model's lazy weight-decay factor is folded back into its weights.
_RESCALE_BELOW = 2.0 ** -8


@numba.njit(**JIT)
def _forward(xb, nb, coef, z):
    """Z[:nb] = Xb[:nb] @ coef^T (row-major); column-major: Z^T = coef Xb^T."""
    c, d = coef.shape
    gemm(ord("T"), ord("N"), c, nb, d, 1.0, coef.ravel(), d, xb.ravel(), d, 0.0, z.ravel(), c)


@numba.njit(**JIT)
def _backward(xb, nb, dz, beta, out):
    """out (c, d) = beta out + dZ[:nb]^T @ Xb[:nb]; column-major: out^T = Xb^T dZ."""
    c, d = out.shape
    gemm(ord("N"), ord("T"), d, c, nb, 1.0, xb.ravel(), d, dz.ravel(), c, beta, out.ravel(), d)


@numba.njit(**JIT)
def _gather(X, x_scale, order, start, nb, xb):
    """Xb[:nb] = float32(X[order[start:start + nb]]) * x_scale."""
    xs = np.float32(x_scale)
    d = X.shape[1]
    for r in range(nb):
        row = order[start + r]
        for f in range(d):
            xb[r, f] = np.float32(X[row, f]) * xs


@numba.njit(**JIT)
def _exp_nonpositive(arg, out, bits):
    """out = exp(arg) in float32 for arg <= 0 (NaN gives NaN), in vectorisable loops.

    libm's exp is a scalar call and was ~20 % of an epoch; this is Cephes' expf: n =
    round(x log2 e), r = x - n ln 2 (two-part constant), e^r by a degree-6 polynomial, 2^n
    built in the exponent bits. Arguments below -64 give exactly 0, so no subnormal is ever
    made (each costs a microcode assist; the reasons are in ``_sf_simd.h``, SF_EXP_FLUSH_F32);
    e^-64 only ever adds to a sum >= 1, far below its rounding.
    """
    pow2 = bits.view(np.float32)
    for q in range(arg.shape[0]):
        x = arg[q]
        # clamp below only: a NaN (comparison false) stays NaN and makes the row's sum NaN
        flush = x < _EXP_FLUSH_F32
        x = _EXP_FLUSH_F32 if flush else x
        n = np.floor(x * np.float32(1.44269504088896341) + np.float32(0.5))
        r = x - n * np.float32(0.693359375) - n * np.float32(-2.12194440e-4)
        p = np.float32(1.9875691500e-4) * r + np.float32(1.3981999507e-3)
        p = p * r + np.float32(8.3334519073e-3)
        p = p * r + np.float32(4.1665795894e-2)
        p = p * r + np.float32(1.6666665459e-1)
        p = p * r + np.float32(5.0000001201e-1)
        out[q] = np.float32(0.0) if flush else p * (r * r) + r + np.float32(1.0)
        bits[q] = (np.int32(n) + np.int32(127)) << np.int32(23)
    for q in range(arg.shape[0]):
        out[q] *= pow2[q]


@numba.njit(**JIT)
def _softmax_rows(z, nb, y, order, start, scale, intercept, coeff, shifted, expo, bits,
                  grad_b):
    """Softmax cross-entropy of one model's logits Z[:nb]; Z becomes coeff * dz / nb.

    The logits are z_ik = scale * Z[i, k] + b_k:
    1. m_i = max_k z_ik keeps every exponent <= 0;
    2. loss_i = log sum_k exp(z_ik - m_i) - (z_iy - m_i)  (PyTorch #11752 order; sums and the
       loss in float64, exp in float32);
    3. dz_ik = (softmax_ik - [k == y_i]) / nb, the gradient of the batch-mean loss.
    grad_b receives the column sums of dz * nb (the bias gradient times nb). Returns the sum
    of the rows' losses; a NaN/inf logit makes it NaN through the true-class term.
    """
    c = z.shape[1]
    loss = 0.0
    for i in range(nb):
        label = y[order[start + i]]
        m = -np.inf
        for k in range(c):
            v = z[i, k] * scale + intercept[k]
            if v > m:
                m = v
        loss -= z[i, label] * scale + intercept[label] - m
        for k in range(c):
            shifted[i * c + k] = np.float32(z[i, k] * scale + intercept[k] - m)
    n_el = nb * c
    _exp_nonpositive(shifted[:n_el], expo[:n_el], bits[:n_el])
    grad_b[:] = 0.0
    step = coeff / nb
    for i in range(nb):
        label = y[order[start + i]]
        total = 0.0
        for k in range(c):
            total += expo[i * c + k]
        loss += np.log(total)
        inv_total = 1.0 / total
        for k in range(c):
            g = expo[i * c + k] * inv_total
            if k == label:
                g -= 1.0
            grad_b[k] += g
            z[i, k] = np.float32(g * step)
    return loss


@numba.njit(**JIT)
def _plain_step(xb, nb, y, order, start, coef, j, scales, intercepts, lr, alpha, z, shifted,
                expo, bits, grad_b):
    """One plain-SGD step of model j (lazy weight decay, update fused into the sgemm)."""
    c, d = coef.shape
    _forward(xb, nb, coef, z)
    old = scales[j]
    new = old * (1.0 - lr * alpha)
    if abs(new) < _RESCALE_BELOW:
        # fold the scale into the weights; the product above already used the old one
        for k in range(c):
            for f in range(d):
                coef[k, f] = np.float32(coef[k, f] * new)
        new = 1.0
    loss = _softmax_rows(z, nb, y, order, start, old, intercepts[j], -lr / new, shifted,
                         expo, bits, grad_b)
    scales[j] = new
    for k in range(c):
        intercepts[j, k] = np.float32(intercepts[j, k] - lr * grad_b[k] / nb)
    _backward(xb, nb, z, 1.0, coef)
    return loss


@numba.njit(**JIT)
def _momentum_step(xb, nb, y, order, start, coef, j, intercepts, velocity, velocity_b, lr,
                   alpha, mu, nesterov, z, shifted, expo, bits, grad_b, grad):
    """One step of model j with (Nesterov) momentum: explicit gradient, elementwise update.

    v <- mu v - lr g; classical W <- W + v; Nesterov (scikit-learn's form)
    W <- W + mu v - lr g, with g = X^T dz + alpha W (the bias is not penalised).
    """
    c, d = coef.shape
    _forward(xb, nb, coef, z)
    loss = _softmax_rows(z, nb, y, order, start, 1.0, intercepts[j], 1.0, shifted, expo,
                         bits, grad_b)
    _backward(xb, nb, z, 0.0, grad)
    for k in range(c):
        for f in range(d):
            g = grad[k, f] + alpha * coef[k, f]
            v = mu * velocity[k, f] - lr * g
            velocity[k, f] = np.float32(v)
            delta = mu * v - lr * g if nesterov else v
            coef[k, f] = np.float32(coef[k, f] + delta)
        g = grad_b[k] / nb
        v = mu * velocity_b[k] - lr * g
        velocity_b[k] = np.float32(v)
        delta = mu * v - lr * g if nesterov else v
        intercepts[j, k] = np.float32(intercepts[j, k] + delta)
    return loss


@numba.njit(**PJIT)
def _epoch(X, x_scale, y, order, coefs, scales, intercepts, velocity, velocity_b, lr, alpha,
           momentum, nesterov, batch_size, per_task):
    """One epoch of every model; models [t per_task, (t + 1) per_task) form task t."""
    n = order.shape[0]
    n_models, c, d = coefs.shape
    n_tasks = (n_models + per_task - 1) // per_task
    losses = np.zeros(n_models, dtype=np.float64)
    for task in prange(n_tasks):
        m0 = task * per_task
        m1 = min(n_models, m0 + per_task)
        xb = np.empty((batch_size, d), dtype=np.float32)
        z = np.empty((batch_size, c), dtype=np.float32)
        shifted = np.empty(batch_size * c, dtype=np.float32)
        expo = np.empty(batch_size * c, dtype=np.float32)
        bits = np.empty(batch_size * c, dtype=np.int32)
        grad_b = np.empty(c, dtype=np.float64)
        grad = np.empty((c, d), dtype=np.float32)
        for start in range(0, n, batch_size):
            nb = min(batch_size, n - start)
            _gather(X, x_scale, order, start, nb, xb)
            for j in range(m0, m1):
                if momentum[j] == 0.0:
                    losses[j] += _plain_step(xb, nb, y, order, start, coefs[j], j, scales,
                                             intercepts, lr[j], alpha[j], z, shifted, expo,
                                             bits, grad_b)
                else:
                    losses[j] += _momentum_step(xb, nb, y, order, start, coefs[j], j,
                                                intercepts, velocity[j], velocity_b[j], lr[j],
                                                alpha[j], momentum[j], nesterov[j], z,
                                                shifted, expo, bits, grad_b, grad)
    for j in range(n_models):
        losses[j] /= n
    return losses


# --------------------------------------------------------------------------------------
# Python wrapper (inputs validated by the caller, as for the single-model kernels)
# --------------------------------------------------------------------------------------
def multi_sgd_epoch(X, x_scale, y, order, coefs, scales, intercepts, velocity_coefs,
                    velocity_intercepts, lr, alpha, momentum, nesterov, batch_size,
                    n_threads=1):
    """One SGD epoch of K models over the minibatches of ``order``, in place.

    Parameters
    ----------
    X : ndarray (n, d), uint8 or float32, C-contiguous           # IN
        Model input is x_scale * X.
    y, order : intp ndarrays (n,) and (m,)                       # IN
        Labels (0..n_classes-1) and the epoch's sample order (consecutive slices of
        ``batch_size`` are the minibatches; the last, partial one is kept).
    coefs : float32 (K, c, d); scales : float64 (K,); intercepts : float32 (K, c)  # IN/OUT
        The models; model j's weights are ``scales[j] * coefs[j]``.
    velocity_coefs, velocity_intercepts : float32 (K, c, d), (K, c) or None        # IN/OUT
        Momentum buffers; None when every momentum is 0.
    lr, alpha, momentum : float64 (K,); nesterov : bool (K,)     # IN
    batch_size, n_threads : int

    Returns
    -------
    float64 ndarray (K,)
        Each model's mean over the epoch's samples of the loss at the weights its batch saw
        (non-finite for a model that diverged).
    """
    check_multi(X, y, order, coefs, scales, intercepts, velocity_coefs, velocity_intercepts, lr,
                alpha, momentum, nesterov, batch_size)
    n_models, n_classes, n_features = coefs.shape
    if order.shape[0] == 0:
        return np.zeros(n_models)
    batch_size = max(1, min(int(batch_size), order.shape[0]))
    momentum = np.ascontiguousarray(momentum, dtype=np.float64)
    if velocity_coefs is None:
        if np.any(momentum != 0.0):
            raise ValueError("models with momentum need velocity_coefs/velocity_intercepts")
        velocity_coefs = np.empty((n_models, 0, 0), dtype=np.float32)
        velocity_intercepts = np.empty((n_models, 0), dtype=np.float32)
    if np.any((momentum != 0.0) & (scales != 1.0)):
        raise ValueError("models with momentum keep scale == 1")
    n_threads = max(1, int(n_threads))
    per_task = max(1, min(MULTI_MODELS_PER_TASK, -(-n_models // (2 * n_threads))))
    n_tasks = -(-n_models // per_task)
    old_threads = numba.get_num_threads()
    threads = GOVERNOR.threads(max(1, min(n_threads, n_tasks, numba.config.NUMBA_NUM_THREADS)))
    numba.set_num_threads(threads)
    X, y, order, lr, alpha, momentum, nesterov = read_only(
        X, y, order, np.ascontiguousarray(lr, dtype=np.float64),
        np.ascontiguousarray(alpha, dtype=np.float64), momentum,
        np.ascontiguousarray(nesterov, dtype=np.bool_))
    args = (X, float(x_scale), y, order, coefs, scales, intercepts, velocity_coefs,
            velocity_intercepts, lr, alpha, momentum, nesterov, batch_size, per_task)
    try:
        with single_threaded_blas(), numba.parallel_chunksize(1):
            return GOVERNOR.timed(_epoch, threads, order.shape[0] * coefs.size, args,
                                  (X.dtype.num, X.shape, coefs.dtype.num, batch_size))
    finally:
        numba.set_num_threads(old_threads)
