"""Which path of the linear model a problem's shape calls for — one rule for every backend.

Register-blocked tiles win when the work per row is small (few classes; uint8 pixels read as
bytes); BLAS tiles win once the products are real matrix products. The rule looks at the
shape only, never at the thread count, so results stay bitwise identical for any
``n_threads``. The constants come from ``benchmarks/bench_shapes.py`` (crossover sweep) on
the machines named in the README.
"""

import numpy as np

__all__ = ["prefers_gemm", "linear_shapes", "GEMM_MIN_CLASSES", "GEMM_MIN_CLASSES_UINT8",
           "GEMM_MIN_WORK"]

#: Fewest classes for which BLAS tiles beat the register-blocked ones (float / uint8 X).
GEMM_MIN_CLASSES = 32
GEMM_MIN_CLASSES_UINT8 = 64
#: Fewest multiply-adds (rows x d x c) of one call (a minibatch for SGD) worth the BLAS path.
GEMM_MIN_WORK = 1 << 21


def prefers_gemm(rows, n_features, n_classes, x_is_uint8):
    """Whether the BLAS path is the faster one for ``rows`` x ``n_features`` -> ``n_classes``."""
    min_classes = GEMM_MIN_CLASSES_UINT8 if x_is_uint8 else GEMM_MIN_CLASSES
    return n_classes >= min_classes and rows * n_features * n_classes >= GEMM_MIN_WORK


def linear_shapes(X, coef):
    """(d, c, X is uint8) of well-formed dense arrays, else None (the kernel reports it)."""
    if not (isinstance(X, np.ndarray) and isinstance(coef, np.ndarray)) or coef.ndim != 2 \
            or X.ndim != 2:
        return None
    return coef.shape[1], coef.shape[0], X.dtype == np.uint8
