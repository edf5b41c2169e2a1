"""BLAS ``sgemm``/``dgemm`` callable from compiled Numba code (SciPy's bundled OpenBLAS).

The Fortran routines of ``scipy.linalg.cython_blas`` are exported to LLVM under private
symbol names, so jitted (and on-disk cached) functions call them directly, without Python
per call. :func:`gemm` takes row-major thinking out of the callers' hands only partly: it is
the column-major Fortran call, C(m, n) = alpha op(A) op(B) + beta C, on flat views whose first
element is the corner of the block; see the two uses in ``_numba_gemm`` and ``numba_multi``.

Callers run it from their own threads with BLAS kept on one thread
(:func:`softmax_fast.kernels._blas.single_threaded_blas`): our fixed tiles, not BLAS's
threads, decide the work split, so results never depend on the thread count.
"""

import llvmlite.binding as _llvm
import numba
import numpy as np
from numba import types
from numba.extending import get_cython_function_address

from ._numba_config import JIT

__all__ = ["gemm"]

_llvm.add_symbol("softmax_fast_sgemm",
                 get_cython_function_address("scipy.linalg.cython_blas", "sgemm"))
_llvm.add_symbol("softmax_fast_dgemm",
                 get_cython_function_address("scipy.linalg.cython_blas", "dgemm"))
_sgemm = types.ExternalFunction("softmax_fast_sgemm", types.void(*([types.voidptr] * 13)))
_dgemm = types.ExternalFunction("softmax_fast_dgemm", types.void(*([types.voidptr] * 13)))


@numba.njit(**JIT)
def gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Column-major C(m, n) = alpha op(A) op(B) + beta C; ``c``'s dtype picks s/dgemm.

    ``a``, ``b`` and ``c`` are 1-D views starting at the blocks' first elements;
    ``trans_*`` are ``ord("N")`` or ``ord("T")``.
    """
    ints = np.empty(6, dtype=np.int32)
    ints[0], ints[1], ints[2], ints[3], ints[4], ints[5] = m, n, k, lda, ldb, ldc
    chars = np.empty(2, dtype=np.uint8)
    chars[0], chars[1] = trans_a, trans_b
    scalars = np.empty(2, dtype=c.dtype)
    scalars[0], scalars[1] = alpha, beta
    if c.itemsize == 4:  # float32 (both branches type-check: the pointers are void)
        _sgemm(chars[0:].ctypes, chars[1:].ctypes, ints[0:].ctypes, ints[1:].ctypes,
               ints[2:].ctypes, scalars[0:].ctypes, a.ctypes, ints[3:].ctypes, b.ctypes,
               ints[4:].ctypes, scalars[1:].ctypes, c.ctypes, ints[5:].ctypes)
    else:
        _dgemm(chars[0:].ctypes, chars[1:].ctypes, ints[0:].ctypes, ints[1:].ctypes,
               ints[2:].ctypes, scalars[0:].ctypes, a.ctypes, ints[3:].ctypes, b.ctypes,
               ints[4:].ctypes, scalars[1:].ctypes, c.ctypes, ints[5:].ctypes)
