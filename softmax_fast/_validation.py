"""Input checks shared by the functional API and the estimator.

Every check raises ``TypeError`` (wrong kind of object or dtype) or ``ValueError`` (wrong shape
or value) with a message naming the argument and the problem. Arrays are copied only when the
kernels need a different layout or dtype; read-only inputs are never written to.
"""

import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)


def as_float_matrix(a, name, dtype=None, allow_empty=False):
    """Return ``a`` as a C-contiguous 2-D float32/float64 array (``dtype`` forces one).

    Integer and boolean input is converted to float64 unless ``dtype`` is given.
    """
    arr = np.asarray(a)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name} must be real, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_classes), got shape {arr.shape}")
    if not allow_empty and arr.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 rows); at least one sample is required")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has 0 columns")
    if dtype is None:
        dtype = arr.dtype if arr.dtype in FLOAT_DTYPES else np.float64
    return np.ascontiguousarray(arr, dtype=dtype)


def as_labels(y, n_samples, n_classes, name="y"):
    """Return integer labels as a C-contiguous ``np.intp`` array, checking range and length."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != n_samples:
        raise ValueError(f"{name} has {arr.shape[0]} labels but there are {n_samples} samples")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    if n_samples:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= n_classes:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"{name} contains label {bad}, outside [0, {n_classes}) for {n_classes} classes"
            )
    return np.ascontiguousarray(arr, dtype=np.intp)


def as_sample_weight(sample_weight, n_samples):
    """Return ``None`` or C-contiguous float64 weights: finite, >= 0, not all zero."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight)
    if w.ndim == 0:
        w = np.full(n_samples, float(w))
    if w.ndim != 1 or w.shape[0] != n_samples:
        raise ValueError(f"sample_weight must have shape ({n_samples},), got {w.shape}")
    if not np.issubdtype(w.dtype, np.number) or w.dtype == bool:
        raise TypeError(f"sample_weight must be numeric, got dtype {w.dtype}")
    w = np.ascontiguousarray(w, dtype=np.float64)
    if not np.all(np.isfinite(w)):
        raise ValueError("sample_weight contains NaN or infinity")
    if np.any(w < 0):
        raise ValueError("sample_weight must be non-negative")
    if n_samples and not np.any(w > 0):
        raise ValueError("sample_weight sums to zero; at least one sample needs a positive weight")
    return _rescaled(w)


def _rescaled(w):
    """``w`` times a power of two that keeps its sum and reciprocal well inside float64.

    Losses and gradients are weighted *means*, unchanged by a common factor, but a sum of
    subnormal weights (1e-310 each) has an infinite reciprocal and a sum near 1e308 overflows.
    Scaling by 2^k is exact, so ordinary weights are left bit for bit as they are.
    """
    if w.size == 0:
        return w
    top = float(w.max())
    if 2.0 ** -500 <= top <= 2.0 ** 500:
        return w
    exponent = np.frexp(top)[1]
    return np.ldexp(w, -int(exponent))


def check_out(out, shape, dtype, name="out"):
    """Check a caller-provided output array (right shape and dtype, C-contiguous, writeable)."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {out.shape}")
    if out.dtype != dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)}, got {out.dtype}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    return out


def diagnose_logits(logits, y=None, name="logits"):
    """Raise ``ValueError`` describing why ``logits`` give a non-finite loss.

    Called only after a kernel returned a non-finite value, so its cost is off the fast path.
    The policy, the same for every backend: NaN and +inf are refused; -inf is a masked class and
    allowed, unless it is a row's true class or the whole row is -inf.
    """
    z = np.asarray(logits)
    nan_rows = np.flatnonzero(np.isnan(z).any(axis=1))
    if nan_rows.size:
        raise ValueError(f"{name} contains NaN (first in row {nan_rows[0]})")
    posinf_rows = np.flatnonzero(np.isposinf(z).any(axis=1))
    if posinf_rows.size:
        raise ValueError(f"{name} contains +inf (first in row {posinf_rows[0]})")
    all_masked = np.flatnonzero(np.isneginf(z).all(axis=1))
    if all_masked.size:
        raise ValueError(f"{name} row {all_masked[0]} is -inf for every class")
    if y is not None:
        true_masked = np.flatnonzero(np.isneginf(z[np.arange(z.shape[0]), y]))
        if true_masked.size:
            raise ValueError(
                f"{name} row {true_masked[0]} has -inf at its true class {y[true_masked[0]]}: "
                "the loss is infinite"
            )
    raise ValueError(f"{name} give a non-finite loss (overflow); rescale the inputs")


def check_sparse_structure(X, name="X"):
    """Raise ``ValueError`` unless the index arrays of scipy sparse ``X`` are consistent.

    scipy checks them when a matrix is built, not after its arrays are edited, and its
    conversions (``tocsr``, sorting, summing duplicates) then index unchecked: a column index
    of 10**8 in a CSR matrix crashes the process. CSR/CSC/BSR: ``indptr`` has one entry per
    row (column) plus one, starts at 0, never decreases and ends at the number of stored
    values; ``indices`` lie in [0, number of columns (rows)). COO: row and column indices in
    range. Other formats keep Python-level structures and are left to scipy.
    """
    fmt = getattr(X, "format", None)
    n_rows, n_cols = X.shape
    if fmt in ("csr", "csc", "bsr"):
        blocks = (1, 1) if fmt != "bsr" else X.blocksize
        outer, inner = (n_rows, n_cols) if fmt != "csc" else (n_cols, n_rows)
        if fmt == "bsr":
            outer, inner = n_rows // blocks[0], n_cols // blocks[1]
        _check_compressed(np.asarray(X.indptr), np.asarray(X.indices), outer, inner,
                          np.asarray(X.data).shape[0], name)
    elif fmt == "coo":
        for axis, (idx, size) in enumerate(((X.row, n_rows), (X.col, n_cols))):
            idx = np.asarray(idx)
            if idx.shape[0] != np.asarray(X.data).shape[0]:
                raise ValueError(f"{name}: COO index arrays and data do not agree")
            if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= size):
                raise ValueError(f"{name}: COO {'row' if axis == 0 else 'column'} indices "
                                 f"must be in [0, {size})")


def _check_compressed(indptr, indices, outer, inner, n_data, name):
    if indptr.ndim != 1 or indptr.shape[0] != outer + 1:
        raise ValueError(f"{name}: sparse indptr must have {outer + 1} entries, got "
                         f"{indptr.shape}")
    nnz = indices.shape[0]
    if indptr[0] != 0 or indptr[-1] != nnz or n_data != nnz:
        raise ValueError(f"{name}: sparse indptr must run from 0 to the {nnz} stored values")
    if outer and np.any(np.diff(indptr) < 0):
        raise ValueError(f"{name}: sparse indptr decreases (corrupt sparse matrix)")
    if nnz and (int(indices.min()) < 0 or int(indices.max()) >= inner):
        raise ValueError(f"{name}: sparse indices must be in [0, {inner}), got "
                         f"[{int(indices.min())}, {int(indices.max())}]")


def encode_labels(y):
    """(sorted classes, class index of every label as intp): ``np.unique`` made cheap.

    Integer labels of a modest range (the usual case: 0..c-1) are counted with one
    ``bincount`` — a single pass, about 20x faster than ``np.unique``'s sort on 60,000 labels;
    anything else goes through ``np.unique``. Labels are checked as scikit-learn's
    classifiers do: integers are always valid class labels; other dtypes go through
    ``check_classification_targets`` (which refuses continuous values and NaN).
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D class labels, got shape {y.shape}")
    if y.dtype.kind in "iu" and y.size:
        lo, hi = int(y.min()), int(y.max())
        if hi - lo < 4 * y.size + 1024:
            shifted = y.astype(np.intp, copy=False) - lo if lo else y.astype(np.intp)
            present = np.flatnonzero(np.bincount(shifted, minlength=hi - lo + 1))
            lookup = np.zeros(hi - lo + 1, dtype=np.intp)
            lookup[present] = np.arange(present.size)
            return (present + lo).astype(y.dtype), lookup[shifted]
    if y.dtype.kind not in "iu":
        from sklearn.utils.multiclass import check_classification_targets

        check_classification_targets(y)
    classes, y_idx = np.unique(y, return_inverse=True)
    return classes, y_idx.astype(np.intp)
