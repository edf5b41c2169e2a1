"""The Cython backend: the compiled ``_softmax_ce`` extension behind the backend contract.

The five contract functions (see :mod:`softmax_fast.kernels`) are the extension's own fused
``def`` functions: Cython picks the float32 or float64 specialisation from the arrays, and
``X`` may be uint8 or of ``coef``'s dtype. Importing this module raises ``ImportError`` when
the extension was not built, which is how the backend registry learns it is unavailable.

``OPENMP`` tells whether the extension was compiled with OpenMP; without it the kernels run
on one thread whatever ``n_threads`` says (results are the same either way).
"""

from ._softmax_ce import (
    linear_softmax_ce,
    log_softmax,
    openmp_enabled,
    openmp_thread_count,
    sgd_epoch,
    softmax,
    softmax_ce,
    vector_lanes,
)

__all__ = [
    "softmax",
    "log_softmax",
    "softmax_ce",
    "linear_softmax_ce",
    "sgd_epoch",
    "OPENMP",
    "VECTOR_LANES",
    "openmp_thread_count",
]

#: True if ``n_threads`` is honoured (the extension was compiled with OpenMP).
OPENMP = openmp_enabled()

#: float32 lanes per vector register the kernels were compiled for (16 with AVX-512).
VECTOR_LANES = vector_lanes()
