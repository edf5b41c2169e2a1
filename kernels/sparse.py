"""Kernels for scipy CSR input (text features and other sparse data), compiled with Numba.

Design: the ``sparse`` contract (:class:`softmax_fast.kernels.contract.SparseKernels`:
``linear_softmax_ce`` and ``sgd_epoch``), with ``X`` a CSR matrix whose ``data``,
``indices`` and ``indptr`` arrays are passed to the compiled loops. Each row touches only its
non-zeros: z_i = intercept + x_scale * sum_j x_ij coef[:, j], and the gradient scatters back
into the same columns, so the matrix is never densified. Loops are serial — sparse rows are
short and irregular — which also makes results independent of ``n_threads``.
"""

import numba
import numpy as np

from ._guard import check_linear, check_sgd
from ._numba_config import JIT, read_only

__all__ = ["linear_softmax_ce", "sgd_epoch"]


@numba.njit(**JIT)
def _row_loss_and_dz(data, indices, start, stop, x_scale, coef, intercept, label, z):
    """Fill ``z`` with softmax(z_i) - onehot(label) for one CSR row; return the row's loss."""
    n_classes = coef.shape[0]
    for k in range(n_classes):
        acc = 0.0
        for p in range(start, stop):
            acc += data[p] * coef[k, indices[p]]
        z[k] = intercept[k] + x_scale * acc
    # 1. m = max_k z_k keeps every exponent <= 0
    m = z[0]
    for k in range(1, n_classes):
        if z[k] > m:
            m = z[k]
    # 2. loss = log sum exp(z - m) - (z_y - m); z_y - m is kept before z is overwritten so a
    #    very unlikely true class gives a large finite loss, not log(0)
    true_shifted = z[label] - m
    total = 0.0
    for k in range(n_classes):
        z[k] = np.exp(z[k] - m)
        total += z[k]
    loss = np.log(total) - true_shifted
    # 3. dz = softmax - onehot
    for k in range(n_classes):
        z[k] /= total
    z[label] -= 1.0
    return loss


@numba.njit(**JIT)
def _batch_gradient(data, indices, indptr, rows, x_scale, coef, intercept, y, weights,
                    grad_coef, grad_intercept, z):
    """Accumulate the weighted-mean loss gradient of ``rows`` into the zeroed gradients."""
    total_weight = 0.0
    for r in rows:
        total_weight += weights[r]
    if total_weight == 0.0:
        return 0.0, 0.0
    loss = 0.0
    for r in rows:
        start, stop = indptr[r], indptr[r + 1]
        loss += weights[r] * _row_loss_and_dz(data, indices, start, stop, x_scale, coef,
                                              intercept, y[r], z)
        scale = weights[r] / total_weight
        for k in range(coef.shape[0]):
            g = z[k] * scale
            grad_intercept[k] += g
            gx = g * x_scale
            for p in range(start, stop):
                grad_coef[k, indices[p]] += gx * data[p]
    return loss / total_weight, total_weight


@numba.njit(**JIT)
def _linear(data, indices, indptr, x_scale, coef, intercept, y, weights, alpha, grad_coef,
            grad_intercept):
    grad_coef[:] = 0.0
    grad_intercept[:] = 0.0
    z = np.empty(coef.shape[0], dtype=np.float64)
    rows = np.arange(len(indptr) - 1)
    loss, _ = _batch_gradient(data, indices, indptr, rows, x_scale, coef, intercept, y,
                              weights, grad_coef, grad_intercept, z)
    penalty = 0.0
    for k in range(coef.shape[0]):
        for j in range(coef.shape[1]):
            penalty += coef[k, j] * coef[k, j]
            grad_coef[k, j] += alpha * coef[k, j]
    return loss + 0.5 * alpha * penalty


@numba.njit(**JIT)
def _epoch(data, indices, indptr, x_scale, y, weights, order, coef, intercept, velocity_coef,
           velocity_intercept, lr, alpha, momentum, nesterov, batch_size):
    n_classes, n_features = coef.shape
    grad_coef = np.empty((n_classes, n_features), dtype=np.float64)
    grad_intercept = np.empty(n_classes, dtype=np.float64)
    z = np.empty(n_classes, dtype=np.float64)
    total_loss, total_weight = 0.0, 0.0
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        grad_coef[:] = 0.0
        grad_intercept[:] = 0.0
        batch_loss, batch_weight = _batch_gradient(data, indices, indptr, rows, x_scale, coef,
                                                   intercept, y, weights, grad_coef,
                                                   grad_intercept, z)
        total_loss += batch_loss * batch_weight
        total_weight += batch_weight
        for k in range(n_classes):
            for j in range(n_features):
                g = grad_coef[k, j] + alpha * coef[k, j]
                if momentum == 0.0:
                    coef[k, j] -= lr * g
                else:
                    v = momentum * velocity_coef[k, j] - lr * g
                    velocity_coef[k, j] = v
                    coef[k, j] += momentum * v - lr * g if nesterov else v
            g = grad_intercept[k]
            if momentum == 0.0:
                intercept[k] -= lr * g
            else:
                v = momentum * velocity_intercept[k] - lr * g
                velocity_intercept[k] = v
                intercept[k] += momentum * v - lr * g if nesterov else v
    return total_loss / total_weight if total_weight > 0 else 0.0


def _csr_parts(X, dtype):
    if not X.has_sorted_indices:
        X = X.sorted_indices()
    return read_only(np.ascontiguousarray(X.data, dtype=dtype),
                     np.ascontiguousarray(X.indices, dtype=np.intp),
                     np.ascontiguousarray(X.indptr, dtype=np.intp))


def _weights_or_ones(sample_weight, n):
    return read_only(np.ones(n) if sample_weight is None else sample_weight)[0]


def linear_softmax_ce(X, x_scale, coef, intercept, y, sample_weight, alpha, grad_coef,
                      grad_intercept, n_threads=1):
    """Contract ``linear_softmax_ce`` for CSR ``X`` (IN X, coef, intercept; OUT grad_*)."""
    check_linear(X, coef, intercept, y, sample_weight, grad_coef, grad_intercept, dense=False)
    data, indices, indptr = _csr_parts(X, coef.dtype)
    coef, intercept, y = read_only(coef, intercept, y)
    return float(_linear(data, indices, indptr, float(x_scale), coef, intercept, y,
                         _weights_or_ones(sample_weight, X.shape[0]), float(alpha), grad_coef,
                         grad_intercept))


def sgd_epoch(X, x_scale, y, sample_weight, order, coef, intercept, velocity_coef,
              velocity_intercept, lr, alpha, momentum, nesterov, batch_size, n_threads=1):
    """Contract ``sgd_epoch`` for CSR ``X``; updates coef/intercept/velocities in place."""
    check_sgd(X, y, sample_weight, order, coef, intercept, velocity_coef, velocity_intercept,
              batch_size, dense=False)
    data, indices, indptr = _csr_parts(X, coef.dtype)
    y, order = read_only(y, order)
    return float(_epoch(data, indices, indptr, float(x_scale), y,
                        _weights_or_ones(sample_weight, X.shape[0]), order, coef, intercept,
                        velocity_coef, velocity_intercept, float(lr), float(alpha),
                        float(momentum), bool(nesterov), int(batch_size)))
