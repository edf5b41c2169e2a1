"""The kernel backends and how one is chosen.

``reference`` (NumPy, float64 — the oracle), ``cython`` (compiled at install, no JIT latency)
and ``numba`` (JIT with an on-disk cache). ``backend="auto"`` picks the first available in
:data:`AUTO_ORDER`; the order comes from the benchmarks in ``benchmarks/`` (see README).
"""

import importlib
import os

_MODULES = {
    "reference": "softmax_fast.kernels.reference",
    "cython": "softmax_fast.kernels.cython_backend",
    "numba": "softmax_fast.kernels.numba_backend",
}

#: Preference of ``backend="auto"``: the fastest first, as measured in benchmarks/.
AUTO_ORDER = ("cython", "numba", "reference")

BACKEND_NAMES = tuple(_MODULES) + ("auto",)

_loaded = {}
_import_errors = {}


def _load(name):
    if name in _loaded:
        return _loaded[name]
    if name in _import_errors:
        return None
    try:
        module = importlib.import_module(_MODULES[name])
    except ImportError as exc:  # e.g. the extension was not built, or numba is missing
        _import_errors[name] = exc
        return None
    _loaded[name] = module
    return module


def available_backends():
    """Names of the backends that import on this machine, in ``auto`` preference order."""
    return [name for name in AUTO_ORDER if _load(name) is not None]


def resolve_backend_name(backend="auto"):
    """Map ``backend`` (a name or ``"auto"``) to the name of an importable backend.

    Raises
    ------
    ValueError
        If the name is unknown or that backend cannot be imported here (the message says why).
    """
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")
    if backend == "auto":
        forced = os.environ.get("SOFTMAX_FAST_BACKEND")
        if forced and forced != "auto":
            return resolve_backend_name(forced)
        for name in AUTO_ORDER:
            if _load(name) is not None:
                return name
        raise RuntimeError("no backend could be imported")  # reference needs only numpy
    if backend not in _MODULES:
        raise ValueError(
            f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_NAMES)}"
        )
    if _load(backend) is None:
        raise ValueError(f"backend {backend!r} is not available: {_import_errors[backend]}")
    return backend


def get_backend(backend="auto"):
    """The backend module implementing the low-level contract of :mod:`softmax_fast.kernels`."""
    return _load(resolve_backend_name(backend))


def resolve_n_threads(n_threads=None):
    """Number of threads to use: ``None`` means all cores (``os.cpu_count()``), else >= 1."""
    if n_threads is None:
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else os.cpu_count() or 1)
    if isinstance(n_threads, bool) or not isinstance(n_threads, int):
        raise TypeError(f"n_threads must be an int or None, got {type(n_threads).__name__}")
    if n_threads < 1:
        raise ValueError(f"n_threads must be >= 1, got {n_threads}")
    return n_threads
