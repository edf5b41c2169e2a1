"""softmax-fast: fast, correct softmax (multinomial logistic) regression on the CPU.

Public API (imported lazily, so ``softmax-fast --help`` stays quick):

* :class:`SoftmaxRegression` — a scikit-learn compatible estimator.
* :class:`SoftmaxRegressionCV` — the L2 strength chosen on a warm-started regularization path.
* :func:`softmax_cross_entropy`, :func:`linear_softmax_cross_entropy`, :func:`softmax`,
  :func:`log_softmax` — the fused kernels behind a validating wrapper.
* :func:`load_dataset` — Fashion-MNIST (full or the bundled sample).
* :func:`available_backends`, :func:`get_backend` — the kernel backends.
* :func:`grid_search` — many configurations per pass over the data.
"""

import importlib
import importlib.util
import os
import sys

__version__ = "0.1.0"


def _kernels_from_a_checkout():
    """Running from a source checkout (``python -m softmax_fast`` in the repository): the
    kernels sit beside the package in ``kernels/`` (setup.py installs them as
    ``softmax_fast.kernels``); make them importable under that name the same way. An
    installed package has its own ``softmax_fast/kernels`` and is left alone."""
    here = os.path.dirname(os.path.abspath(__file__))
    beside = os.path.join(os.path.dirname(here), "kernels")
    if "softmax_fast.kernels" in sys.modules or os.path.isdir(os.path.join(here, "kernels")) \
            or not os.path.isfile(os.path.join(beside, "__init__.py")):
        return
    spec = importlib.util.spec_from_file_location(
        "softmax_fast.kernels", os.path.join(beside, "__init__.py"),
        submodule_search_locations=[beside])
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["softmax_fast.kernels"] = module
    spec.loader.exec_module(module)


if importlib.util.find_spec("softmax_fast.kernels") is None:
    _kernels_from_a_checkout()

_LAZY = {
    "SoftmaxRegression": "softmax_fast.estimator",
    "SoftmaxRegressionCV": "softmax_fast.cv",
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
