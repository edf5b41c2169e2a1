"""Fused softmax / cross-entropy functions: validate, allocate, call a backend kernel.

The maths (row i, classes k, m_i = max_k z_ik):

    softmax(z)_ik      = exp(z_ik - m_i) / sum_k exp(z_ik - m_i)
    log_softmax(z)_ik  = (z_ik - m_i) - log sum_k exp(z_ik - m_i)
    loss               = sum_i w_i l_i / sum_i w_i,   l_i = -log_softmax(z)_{i, y_i}
    dloss/dz_ik        = w_i (softmax(z)_ik - [k == y_i]) / sum_i w_i

Numeric policy (identical in every backend): NaN or +inf logits, a -inf logit at a row's true
class, or a row that is -inf everywhere raise ``ValueError``; other -inf entries are masked
classes (probability 0, gradient exactly 0).
"""

import math

import numpy as np
import scipy.sparse as sp

from softmax_fast._validation import (
    as_float_matrix,
    as_labels,
    as_sample_weight,
    check_out,
    check_sparse_structure,
    diagnose_logits,
)
from softmax_fast.backends import get_backend, get_kernels, resolve_n_threads

__all__ = ["softmax", "log_softmax", "softmax_cross_entropy", "linear_softmax_cross_entropy"]


def _prepare_out(out, logits):
    if out is None:
        return np.empty_like(logits)
    return check_out(out, logits.shape, logits.dtype)


def _row_map(kernel_name, logits, out, backend, n_threads):
    z = as_float_matrix(logits, "logits")
    out = _prepare_out(out, z)
    getattr(get_backend(backend), kernel_name)(z, out, resolve_n_threads(n_threads))
    if not np.all(np.isfinite(out) | (np.isneginf(out) if kernel_name == "log_softmax" else False)):
        diagnose_logits(z)
    return out


def softmax(logits, *, backend="auto", n_threads=None, out=None):
    """Row-wise softmax of ``logits`` (n_samples, n_classes), computed stably.

    Parameters
    ----------
    logits : array-like of shape (n_samples, n_classes)
        float32 stays float32; other dtypes are computed in float64.
    backend : str
        "auto" or a backend name of :mod:`softmax_fast.backends`.
    n_threads : int, optional
        Threads to use (default: all cores). The result does not depend on it.
    out : ndarray, optional
        Output array of the same shape and dtype; may be ``logits`` itself.

    Returns
    -------
    ndarray of shape (n_samples, n_classes)
        exp(z - max) / sum exp(z - max) per row.
    """
    return _row_map("softmax", logits, out, backend, n_threads)


def log_softmax(logits, *, backend="auto", n_threads=None, out=None):
    """Row-wise log-softmax, (z - max) - log sum exp(z - max); see :func:`softmax`."""
    return _row_map("log_softmax", logits, out, backend, n_threads)


def softmax_cross_entropy(logits, y, *, sample_weight=None, backend="auto", n_threads=None,
                          out=None):
    """Mean cross-entropy of ``logits`` against ``y`` and its gradient, in one sweep per row.

    Parameters
    ----------
    logits : array-like of shape (n_samples, n_classes)
        Unnormalised scores. float32 stays float32 (sums are accumulated in float64).
    y : array-like of int, shape (n_samples,)
        True class index of each row, in [0, n_classes). Any integer dtype.
    sample_weight : array-like of shape (n_samples,), optional
        Non-negative weights; the loss is then the weighted mean sum(w l) / sum(w).
    backend : str
        "auto" or a backend name of :mod:`softmax_fast.backends`.
    n_threads : int, optional
        Threads to use (default: all cores). Results are bitwise identical for any value.
    out : ndarray, optional
        Where to write the gradient; may be ``logits`` itself for in-place use (then, on a
        ``ValueError``, its content is undefined).

    Returns
    -------
    loss : float
    dlogits : ndarray of shape (n_samples, n_classes)
        d loss / d logits = w_i (softmax - onehot) / sum(w).

    Raises
    ------
    ValueError
        Empty input, mismatched shapes, labels out of range, NaN/+inf logits, or a -inf logit at
        the true class.
    """
    z = as_float_matrix(logits, "logits")
    n, c = z.shape
    labels = as_labels(y, n, c)
    weights = as_sample_weight(sample_weight, n)
    grad = _prepare_out(out, z)
    # Diagnose from the input unless it is about to be overwritten in place.
    keep = z if not np.shares_memory(grad, z) else None
    loss = get_backend(backend).softmax_ce(z, labels, weights, grad, resolve_n_threads(n_threads))
    if not math.isfinite(loss):
        if keep is None:
            raise ValueError(
                "logits contain NaN, +inf, a row of all -inf or -inf at a true class "
                "(the in-place output is now undefined)"
            )
        diagnose_logits(keep, labels)
    return float(loss), grad


def linear_softmax_cross_entropy(X, W, b, y, *, alpha=0.0, sample_weight=None, x_scale=1.0,
                                 backend="auto", n_threads=None):
    """Loss and gradients of the linear softmax model for one batch, without Python between steps.

    z = x_scale * X @ W.T + b;  loss = mean CE(z, y) + (alpha / 2) * ||W||^2 (bias not
    regularised); dW = x_scale * (softmax(z) - Y)^T X / n + alpha * W;  db = mean(softmax(z) - Y).

    Parameters
    ----------
    X : array-like or scipy CSR matrix of shape (n_samples, n_features)
        Features. uint8 data stays uint8 and is scaled by ``x_scale`` inside the kernel (image
        pixels with ``x_scale=1/255`` are read at a quarter of the bytes of float32).
    W : array-like of shape (n_classes, n_features)
        Weights, laid out as ``SoftmaxRegression.coef_`` and PyTorch's ``nn.Linear.weight``;
        their dtype (float32 or float64) is the working dtype. A C-contiguous array of that
        dtype is used as is (no copy).
    b : array-like of shape (n_classes,)
    y : array-like of int, shape (n_samples,)
    alpha : float
        L2 penalty strength.
    sample_weight : array-like of shape (n_samples,), optional
    x_scale : float
        Multiplies X before use.
    backend, n_threads : see :func:`softmax_cross_entropy`.

    Returns
    -------
    loss : float
    dW : ndarray of shape (n_classes, n_features)
    db : ndarray of shape (n_classes,)
    """
    coef = as_float_matrix(W, "W")
    c, d = coef.shape
    dtype = coef.dtype
    intercept = np.asarray(b)
    if intercept.shape != (c,):
        raise ValueError(f"b must have shape ({c},) to match W's {c} classes, got {intercept.shape}")
    intercept = np.ascontiguousarray(intercept, dtype=dtype)
    X = prepare_features(X, d, dtype)
    n = X.shape[0]
    labels = as_labels(y, n, c)
    weights = as_sample_weight(sample_weight, n)
    alpha, x_scale = check_alpha(alpha), check_x_scale(x_scale)
    grad_coef = np.empty_like(coef)
    grad_intercept = np.empty_like(intercept)
    kind = "sparse" if sp.issparse(X) else "dense"
    loss = get_kernels(backend, kind).linear_softmax_ce(
        X, x_scale, coef, intercept, labels, weights, alpha, grad_coef, grad_intercept,
        resolve_n_threads(n_threads),
    )
    if not math.isfinite(loss):
        values = X.data if sp.issparse(X) else X
        for arr, name in ((values, "X"), (coef, "W"), (intercept, "b")):
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} contains NaN or infinity")
        raise ValueError("the loss overflowed; scale the features down (x_scale) or W")
    return float(loss), grad_coef, grad_intercept


def prepare_features(X, n_features, dtype, name="X"):
    """Return ``X`` as the kernels read it: uint8 kept, else ``dtype``; C-contiguous.

    A scipy sparse matrix becomes a CSR matrix of ``dtype`` with sorted indices whose
    structure is checked (the sparse kernels index without bounds checks).
    """
    if sp.issparse(X):
        return _prepare_csr(X, n_features, dtype, name)
    arr = np.asarray(X)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 samples)")
    if arr.shape[1] != n_features:
        raise ValueError(f"{name} has {arr.shape[1]} features, expected {n_features}")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name} must be real, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=dtype)


def _prepare_csr(X, n_features, dtype, name):
    check_sparse_structure(X, name)  # before scipy converts it: corrupt indices crash it
    X = X.tocsr()
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D sparse matrix, got shape {X.shape}")
    if X.shape[1] != n_features:
        raise ValueError(f"{name} has {X.shape[1]} features, expected {n_features}")
    if np.issubdtype(X.dtype, np.complexfloating):
        raise TypeError(f"{name} must be real, got dtype {X.dtype}")
    X = X.astype(dtype, copy=False)
    if not X.has_sorted_indices:
        X = X.sorted_indices()
    return X


def check_alpha(alpha):
    """``alpha`` as a finite, non-negative float."""
    alpha = float(alpha)
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
    return alpha


def check_x_scale(x_scale):
    """``x_scale`` as a finite, positive float."""
    x_scale = float(x_scale)
    if not math.isfinite(x_scale) or x_scale <= 0:
        raise ValueError(f"x_scale must be a finite number > 0, got {x_scale}")
    return x_scale
