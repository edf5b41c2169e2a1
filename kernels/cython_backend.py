"""The Cython backend: the compiled ``_softmax_ce`` extension behind the ``dense`` contract.

The extension is compiled once per instruction set (``baseline``, ``avx2``, ``avx512`` on
x86-64; see ``_isa.py``) and this module uses the best build the CPU runs, or the one
``SOFTMAX_FAST_ISA`` forces: ``ISA`` names it, ``VECTOR_LANES`` gives its float32 lanes. The
opt-in backends ``cython-baseline``, ``cython-avx2`` and ``cython-avx512`` use one build
whatever the CPU's best (:class:`CythonKernels`). The builds agree to rounding, not bitwise.

The row-wise functions are the extension's own fused ``def`` functions: Cython picks the
float32 or float64 specialisation from the arrays. The linear model has two compiled paths
and this module picks one by the problem's shape (never by the thread count, so results stay
bitwise identical for any ``n_threads``):

* register-blocked SIMD tiles (``linear_softmax_ce``, ``sgd_epoch``): fastest when the work
  per row is small — few classes (Fashion-MNIST's 10), uint8 pixels read as bytes;
* BLAS (``linear_softmax_ce_gemm``, ``sgd_epoch_gemm``): GEMM speed for large d x c, with
  our threads sharing fixed row blocks or tiles and BLAS kept on one thread per call.

The crossover rule (``_paths.py``) is shared with the Numba backend. Importing this module raises ``ImportError`` when the extension was not built or
no build runs on this CPU, which is how the backend registry learns it is unavailable.

``OPENMP`` tells whether the extension was compiled with OpenMP; without it the kernels run
on one thread whatever ``n_threads`` says (results are the same either way).
"""

import numpy as np

from . import _isa
from ._blas import single_threaded_blas
from ._paths import linear_shapes as _shapes
from ._paths import prefers_gemm

__all__ = [
    "softmax",
    "log_softmax",
    "softmax_ce",
    "linear_softmax_ce",
    "sgd_epoch",
    "prefers_gemm",
    "CythonKernels",
    "ISA",
    "EXTENSION",
    "OPENMP",
    "VECTOR_LANES",
    "openmp_thread_count",
]

class CythonKernels:
    """The ``dense`` contract on one build of the extension.

    Parameters
    ----------
    isa : str
        The build: ``"baseline"``, ``"avx2"``, ``"avx512"`` or ``"native"`` (see ``_isa.py``).
        ImportError if it does not exist here or this CPU cannot run it.
    """

    def __init__(self, isa):
        ext = _isa.load(isa)
        #: The build, and its extension module.
        self.ISA, self.EXTENSION = isa, ext
        self.OPENMP = ext.openmp_enabled()
        #: float32 lanes per vector register of the build (16 with AVX-512).
        self.VECTOR_LANES = ext.vector_lanes()
        self.softmax = ext.softmax
        self.log_softmax = ext.log_softmax
        self.softmax_ce = ext.softmax_ce
        self.openmp_thread_count = ext.openmp_thread_count

    def linear_softmax_ce(self, X, x_scale, coef, intercept, y, sample_weight, alpha,
                          grad_coef, grad_intercept, n_threads=1):
        """Contract ``linear_softmax_ce``; the path is chosen by shape (see the module doc)."""
        ext = self.EXTENSION
        shapes = _shapes(X, coef)
        if shapes is not None and prefers_gemm(X.shape[0], *shapes):
            with single_threaded_blas():
                return ext.linear_softmax_ce_gemm(X, x_scale, coef, intercept, y, sample_weight,
                                                  alpha, grad_coef, grad_intercept, n_threads)
        return ext.linear_softmax_ce(X, x_scale, coef, intercept, y, sample_weight, alpha,
                                     grad_coef, grad_intercept, n_threads)

    def sgd_epoch(self, X, x_scale, y, sample_weight, order, coef, intercept, velocity_coef,
                  velocity_intercept, lr, alpha, momentum, nesterov, batch_size, n_threads=1):
        """Contract ``sgd_epoch``; the path is chosen by the minibatch's shape."""
        ext = self.EXTENSION
        shapes = _shapes(X, coef)
        if shapes is not None and isinstance(order, np.ndarray) and order.ndim == 1:
            rows = max(1, min(int(batch_size), order.shape[0]))
            if prefers_gemm(rows, *shapes):
                with single_threaded_blas():
                    return ext.sgd_epoch_gemm(X, x_scale, y, sample_weight, order, coef,
                                              intercept, velocity_coef, velocity_intercept, lr,
                                              alpha, momentum, nesterov, batch_size, n_threads)
        return ext.sgd_epoch(X, x_scale, y, sample_weight, order, coef, intercept,
                             velocity_coef, velocity_intercept, lr, alpha, momentum, nesterov,
                             batch_size, n_threads)


_KERNELS = CythonKernels(_isa.choose())

#: The build in use ("baseline", "avx2", "avx512" or "native"), and its extension module.
ISA, EXTENSION = _KERNELS.ISA, _KERNELS.EXTENSION
#: True if ``n_threads`` is honoured (the extension was compiled with OpenMP).
OPENMP = _KERNELS.OPENMP
#: float32 lanes per vector register the kernels were compiled for (16 with AVX-512).
VECTOR_LANES = _KERNELS.VECTOR_LANES
softmax, log_softmax, softmax_ce = _KERNELS.softmax, _KERNELS.log_softmax, _KERNELS.softmax_ce
linear_softmax_ce, sgd_epoch = _KERNELS.linear_softmax_ce, _KERNELS.sgd_epoch
openmp_thread_count = _KERNELS.openmp_thread_count
