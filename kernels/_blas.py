"""Keeping BLAS on one thread while our own threads call it.

Kernels that call BLAS (scipy's ``cython_blas`` sgemm/dgemm) from several threads of their
own partition the work themselves, in fixed blocks, so that every element is computed by the
same call whatever the thread count. BLAS must then run each call on the calling thread: its
own threads would oversubscribe the cores and could change the partition inside a call.
"""

import contextlib
import functools


@functools.lru_cache(maxsize=1)
def _controller():
    import scipy.linalg.cython_blas  # noqa: F401  (load SciPy's BLAS before looking for it)
    from threadpoolctl import ThreadpoolController  # a dependency of scikit-learn

    return ThreadpoolController()


@contextlib.contextmanager
def single_threaded_blas():
    """Limit every loaded BLAS (NumPy's and SciPy's OpenBLAS) to one thread inside the block."""
    with _controller().limit(limits=1, user_api="blas"):
        yield
