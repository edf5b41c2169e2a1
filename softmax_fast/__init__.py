"""softmax-fast: fast, correct softmax (multinomial logistic) regression on the CPU.

Public API (imported lazily, so ``softmax-fast --help`` stays quick):

* :class:`SoftmaxRegression` — a scikit-learn compatible estimator.
* :func:`softmax_cross_entropy`, :func:`linear_softmax_cross_entropy`, :func:`softmax`,
  :func:`log_softmax` — the fused kernels behind a validating wrapper.
* :func:`load_dataset` — Fashion-MNIST (full or the bundled sample).
* :func:`available_backends`, :func:`get_backend` — the kernel backends.
* :func:`grid_search` — many configurations per pass over the data.
"""

import importlib

__version__ = "0.1.0"

_LAZY = {
    "SoftmaxRegression": "softmax_fast.estimator",
    "softmax_cross_entropy": "softmax_fast.functional",
    "linear_softmax_cross_entropy": "softmax_fast.functional",
    "softmax": "softmax_fast.functional",
    "log_softmax": "softmax_fast.functional",
    "load_dataset": "softmax_fast.datasets",
    "available_backends": "softmax_fast.backends",
    "get_backend": "softmax_fast.backends",
    "grid_search": "softmax_fast.search",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'softmax_fast' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
