"""Cheap checks at the door of every compiled entry point: memory safety by construction.

The API layer validates user input with friendly messages; these checks are the second line:
whoever calls a kernel module directly (``softmax_fast.get_backend("numba").sgd_epoch``), a
compiled loop never indexes outside an array. They check exactly what the loops rely on —
dimensions that agree, dtypes, C-contiguity, writeable outputs, labels in [0, n_classes),
sample indices in [0, n_samples), CSR structure — in O(n) passes over the index arrays, never
over the data, and raise ``ValueError``/``TypeError``. Index bounds are found by one compiled
pass (the only compiled code here).
"""

import numpy as np
from numba import njit

from ._numba_config import JIT

__all__ = ["check_logits", "check_linear", "check_sgd", "check_multi", "check_csr"]

_FLOATS = (np.float32, np.float64)


def _array(a, name, ndim, dtypes=None, writeable=False):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if dtypes is not None and a.dtype not in dtypes:
        raise TypeError(f"{name} has dtype {a.dtype}, expected one of "
                        f"{', '.join(str(np.dtype(d)) for d in dtypes)}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if writeable and not a.flags.writeable:
        raise ValueError(f"{name} is read-only")
    return a


def _shape(a, name, shape):
    if a.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {a.shape}")


@njit(**JIT)
def _min_max(a):
    """(min, max) of a non-empty 1-D array in one pass (a.min() and a.max() cost 3.5 us
    together on 32 labels, most of a small call's checks)."""
    lo = hi = a[0]
    for v in a:
        lo = min(lo, v)
        hi = max(hi, v)
    return lo, hi


def _indices(a, name, n, bound):
    _array(a, name, 1, (np.intp,))
    if a.shape[0] != n:
        raise ValueError(f"{name} must have {n} entries, got {a.shape[0]}")
    if n:
        lo, hi = _min_max(a)
        if lo < 0 or hi >= bound:
            raise ValueError(f"{name} must be in [0, {bound}), got [{lo}, {hi}]")


def _weights(sample_weight, n):
    if sample_weight is not None:
        _shape(_array(sample_weight, "sample_weight", 1, (np.float64,)), "sample_weight", (n,))


def check_logits(logits, out, y=None, sample_weight=None):
    """Row-wise kernels: (n, c) float logits, ``out`` alike; labels and weights (n,)."""
    _array(logits, "logits", 2, _FLOATS)
    _array(out, "out", 2, (logits.dtype,), writeable=True)
    _shape(out, "out", logits.shape)
    n, c = logits.shape
    if y is not None:
        _indices(y, "y", n, c)
    _weights(sample_weight, n)


def _model(coef, intercept, grads=()):
    _array(coef, "coef", 2, _FLOATS)
    c, d = coef.shape
    _shape(_array(intercept, "intercept", 1, (coef.dtype,)), "intercept", (c,))
    for name, arr, shape in grads:
        _shape(_array(arr, name, len(shape), (coef.dtype,), writeable=True), name, shape)
    return c, d


def _features(X, d, dtype):
    _array(X, "X", 2, (np.uint8, dtype))
    if X.shape[1] != d:
        raise ValueError(f"X has {X.shape[1]} features, coef has {d}")
    return X.shape[0]


def check_linear(X, coef, intercept, y, sample_weight, grad_coef, grad_intercept, dense=True):
    """``linear_softmax_ce``: X (n, d) (or CSR), coef (c, d), labels, gradients."""
    c, d = _model(coef, intercept, (("grad_coef", grad_coef, coef.shape),
                                    ("grad_intercept", grad_intercept, (coef.shape[0],))))
    n = _features(X, d, coef.dtype) if dense else check_csr(X, d)
    _indices(y, "y", n, c)
    _weights(sample_weight, n)


def check_sgd(X, y, sample_weight, order, coef, intercept, velocity_coef, velocity_intercept,
              batch_size, dense=True):
    """``sgd_epoch``: as :func:`check_linear`, plus the order and the momentum buffers."""
    c, d = _model(coef, intercept, (("velocity_coef", velocity_coef, coef.shape),
                                    ("velocity_intercept", velocity_intercept, (coef.shape[0],))))
    if not coef.flags.writeable or not intercept.flags.writeable:
        raise ValueError("coef and intercept must be writeable")
    n = _features(X, d, coef.dtype) if dense else check_csr(X, d)
    _indices(y, "y", n, c)
    _weights(sample_weight, n)
    _indices(order, "order", order.shape[0] if isinstance(order, np.ndarray) else -1, n)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def check_multi(X, y, order, coefs, scales, intercepts, velocity_coefs, velocity_intercepts,
                lr, alpha, momentum, nesterov, batch_size):
    """``multi_sgd_epoch``: K stacked float32 models and their per-model settings."""
    _array(coefs, "coefs", 3, (np.float32,), writeable=True)
    k, c, d = coefs.shape
    _shape(_array(intercepts, "intercepts", 2, (np.float32,), writeable=True), "intercepts",
           (k, c))
    _shape(_array(scales, "scales", 1, (np.float64,), writeable=True), "scales", (k,))
    if velocity_coefs is not None or velocity_intercepts is not None:
        _shape(_array(velocity_coefs, "velocity_coefs", 3, (np.float32,), writeable=True),
               "velocity_coefs", (k, c, d))
        _shape(_array(velocity_intercepts, "velocity_intercepts", 2, (np.float32,),
                      writeable=True), "velocity_intercepts", (k, c))
    for name, arr in (("lr", lr), ("alpha", alpha), ("momentum", momentum),
                      ("nesterov", nesterov)):
        if np.shape(arr) != (k,):
            raise ValueError(f"{name} must have shape ({k},), got {np.shape(arr)}")
    n = _features(X, d, np.float32)
    _indices(y, "y", n, c)
    _indices(order, "order", order.shape[0] if isinstance(order, np.ndarray) else -1, n)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def check_csr(X, n_features):
    """A scipy CSR matrix with ``n_features`` columns and a valid structure; returns n_rows."""
    if not hasattr(X, "indptr") or getattr(X, "format", None) != "csr":
        raise TypeError(f"X must be a scipy CSR matrix, got {type(X).__name__}")
    n_rows, n_cols = X.shape
    if n_cols != n_features:
        raise ValueError(f"X has {n_cols} features, coef has {n_features}")
    indptr, indices = np.asarray(X.indptr), np.asarray(X.indices)
    nnz = indices.shape[0]
    if indptr.ndim != 1 or indptr.shape[0] != n_rows + 1 or np.asarray(X.data).shape[0] != nnz:
        raise ValueError("X: CSR indptr, indices and data do not agree")
    if n_rows and (indptr[0] != 0 or indptr[-1] != nnz or np.any(np.diff(indptr) < 0)):
        raise ValueError("X: CSR indptr must run from 0 to nnz without decreasing")
    if nnz and (int(indices.min()) < 0 or int(indices.max()) >= n_cols):
        raise ValueError(f"X: CSR column indices must be in [0, {n_cols})")
    return n_rows
