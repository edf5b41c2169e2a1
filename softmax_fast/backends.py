"""The kernel backends: one registry of records, and how one is chosen.

Every kernel module registers itself here with a :class:`BackendInfo` record: its name, the
module that implements it, its *kind* (the kernel family and its contract, see
:mod:`softmax_fast.kernels.contract`) and its place in the ``auto`` order. Everything that
lists or picks backends — the estimator, the functional API, grid search, the CLI's options,
``softmax-fast bench``, the benchmarks and the tests — reads this registry; nothing else
spells backend names. Adding a backend is one :func:`register_backend` call below (see
``kernels/README.md``).

This module imports neither NumPy nor a kernel: modules are imported on first use, so the CLI
can offer the names as choices without paying for the kernels.

Kinds: ``dense`` (dense ``X``), ``sparse`` (scipy CSR ``X``) and ``multi`` (K models per
minibatch, grid search). A user picks a backend by name; a name with no implementation of the
needed kind (``backend="cython"`` with CSR input, say) falls back to that kind's ``auto``
choice.
"""

from __future__ import annotations

import dataclasses
import importlib
import operator
import os

__all__ = [
    "BackendInfo",
    "KINDS",
    "register_backend",
    "registered",
    "backend_names",
    "available_backends",
    "resolve_backend_name",
    "get_backend",
    "get_kernels",
    "import_error",
    "resolve_n_threads",
]

#: The kernel families (see :mod:`softmax_fast.kernels.contract`).
KINDS = ("dense", "sparse", "multi")

#: Environment variable that overrides ``backend="auto"`` (a backend name).
BACKEND_ENV_VAR = "SOFTMAX_FAST_BACKEND"


@dataclasses.dataclass(frozen=True)
class BackendInfo:
    """One implementation of one kernel family.

    Attributes
    ----------
    name : str
        What users pass as ``backend=`` (several kinds may share a name).
    kind : {"dense", "sparse", "multi"}
        The family, i.e. the contract the module implements.
    module : str
        Import path of the module holding the contract's functions.
    auto_rank : int or None
        Place in the ``auto`` order of its kind (lower first; the order comes from the
        benchmarks in ``benchmarks/``); None: used only when asked for by name.
    oracle : bool
        The float64 reference every other implementation of the kind is tested against.
    description : str
        One line for ``--help``, the README and ``softmax-fast bench``.
    """

    name: str
    kind: str
    module: str
    auto_rank: int | None = None
    oracle: bool = False
    description: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")


_REGISTRY: dict[tuple[str, str], BackendInfo] = {}
_loaded: dict[tuple[str, str], object] = {}
_import_errors: dict[tuple[str, str], BaseException] = {}


def register_backend(info: BackendInfo) -> BackendInfo:
    """Add (or replace) the implementation ``(info.kind, info.name)``."""
    key = (info.kind, info.name)
    _REGISTRY[key] = info
    _loaded.pop(key, None)
    _import_errors.pop(key, None)
    return info


# ---------------------------------------------------------------------------------------
# The backends shipped with softmax-fast
# ---------------------------------------------------------------------------------------
register_backend(BackendInfo(
    "cython", "dense", "softmax_fast.kernels.cython_backend", auto_rank=0,
    description="compiled at install (C, OpenMP), SIMD loops of the best build this CPU runs",
))
# One build of the Cython kernels whatever the CPU runs best (``cython`` takes the best at
# import): opt-in, so that the contract tests cover every build this machine can run.
register_backend(BackendInfo(
    "cython-baseline", "dense", "softmax_fast.kernels.cython_baseline",
    description="cython's x86-64-v2 build (SSE4.2; the only one off x86-64), forced",
))
register_backend(BackendInfo(
    "cython-avx2", "dense", "softmax_fast.kernels.cython_avx2",
    description="cython's x86-64-v3 build (AVX2 + FMA), forced",
))
register_backend(BackendInfo(
    "cython-avx512", "dense", "softmax_fast.kernels.cython_avx512",
    description="cython's x86-64-v4 build (AVX-512), forced",
))
register_backend(BackendInfo(
    "numba", "dense", "softmax_fast.kernels.numba_backend", auto_rank=1,
    description="JIT-compiled with an on-disk cache",
))
register_backend(BackendInfo(
    "reference", "dense", "softmax_fast.kernels.reference", auto_rank=2, oracle=True,
    description="NumPy, float64: the oracle of the tests and the baseline of the benchmarks",
))
register_backend(BackendInfo(
    "numba", "sparse", "softmax_fast.kernels.sparse", auto_rank=0,
    description="CSR rows touched by their non-zeros only (Numba)",
))
register_backend(BackendInfo(
    "reference", "sparse", "softmax_fast.kernels.reference", oracle=True,
    description="NumPy, float64, densified: the oracle",
))
register_backend(BackendInfo(
    "numba", "multi", "softmax_fast.kernels.numba_multi", auto_rank=0,
    description="K models per minibatch, BLAS sgemm per model (Numba)",
))
register_backend(BackendInfo(
    "reference", "multi", "softmax_fast.kernels.reference", oracle=True,
    description="NumPy, float64, one model after the other: the oracle",
))


# ---------------------------------------------------------------------------------------
# Queries
# ---------------------------------------------------------------------------------------
def _check_kind(kind):
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def registered(kind: str = "dense") -> list[BackendInfo]:
    """The records of ``kind``: auto-ranked ones in ``auto`` order, then the others by name."""
    _check_kind(kind)
    infos = [info for (k, _), info in _REGISTRY.items() if k == kind]
    return sorted(infos, key=lambda i: (i.auto_rank is None, i.auto_rank or 0, i.name))


def backend_names(kind: str | None = None) -> tuple[str, ...]:
    """Registered names (of ``kind``, or of any kind), in ``auto`` order; without ``auto``."""
    kinds = KINDS if kind is None else (kind,)
    names = [info.name for k in kinds for info in registered(k)]
    return tuple(dict.fromkeys(names))


def _load(kind, name):
    key = (kind, name)
    if key in _loaded:
        return _loaded[key]
    if key in _import_errors:
        return None
    try:
        module = importlib.import_module(_REGISTRY[key].module)
    except ImportError as exc:  # e.g. the extension was not built, or numba is missing
        _import_errors[key] = exc
        return None
    _loaded[key] = module
    return module


def import_error(name: str, kind: str = "dense") -> BaseException | None:
    """Why backend ``name`` of ``kind`` does not import (None if it does or is unknown)."""
    if (kind, name) in _REGISTRY:
        _load(kind, name)
    return _import_errors.get((kind, name))


def available_backends(kind: str = "dense") -> list[str]:
    """Names of the backends of ``kind`` that import here, in ``auto`` order."""
    return [info.name for info in registered(kind) if _load(kind, info.name) is not None]


def _auto(kind):
    forced = os.environ.get(BACKEND_ENV_VAR)
    if forced and forced != "auto" and (kind, forced) in _REGISTRY:
        return resolve_backend_name(forced, kind)
    for info in registered(kind):
        if info.auto_rank is not None and _load(kind, info.name) is not None:
            return info.name
    for info in registered(kind):  # nothing auto-ranked imports: any that does
        if _load(kind, info.name) is not None:
            return info.name
    raise RuntimeError(f"no {kind} backend could be imported: "
                       + "; ".join(f"{k[1]}: {e}" for k, e in _import_errors.items()
                                   if k[0] == kind))


def resolve_backend_name(backend: str = "auto", kind: str = "dense") -> str:
    """Map ``backend`` (a name or ``"auto"``) to an importable backend of ``kind``.

    A registered name that has no implementation of ``kind`` resolves to ``kind``'s auto
    choice (for example ``"cython"`` for CSR input uses the sparse family's best backend).

    Raises
    ------
    TypeError
        If ``backend`` is not a string.
    ValueError
        If the name is unknown, or that backend of ``kind`` cannot be imported here (the
        message says why).
    """
    _check_kind(kind)
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")
    if backend == "auto":
        return _auto(kind)
    if backend not in backend_names():
        raise ValueError(f"unknown backend {backend!r}; choose one of "
                         f"{', '.join(('auto',) + backend_names())}")
    if (kind, backend) not in _REGISTRY:
        return _auto(kind)
    if _load(kind, backend) is None:
        raise ValueError(f"backend {backend!r} is not available: "
                         f"{_import_errors[(kind, backend)]}")
    return backend


def get_kernels(backend: str = "auto", kind: str = "dense"):
    """The module implementing ``kind``'s contract for ``backend`` (a name or ``"auto"``)."""
    return _load(kind, resolve_backend_name(backend, kind))


def get_backend(backend: str = "auto"):
    """The dense kernel module of ``backend``; see :func:`get_kernels` for other kinds."""
    return get_kernels(backend, "dense")


def resolve_n_threads(n_threads: int | None = None) -> int:
    """Number of threads to use: ``None`` means every core this process may run on, else >= 1."""
    if n_threads is None:
        if hasattr(os, "sched_getaffinity"):
            return max(1, len(os.sched_getaffinity(0)))
        return max(1, os.cpu_count() or 1)
    try:
        if isinstance(n_threads, bool):
            raise TypeError
        n_threads = operator.index(n_threads)  # int or numpy integer; not float, not bool
    except TypeError:
        raise TypeError(
            f"n_threads must be an int or None, got {type(n_threads).__name__}") from None
    if n_threads < 1:
        raise ValueError(f"n_threads must be >= 1, got {n_threads}")
    return n_threads
