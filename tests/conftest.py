"""Shared test settings and the one backend fixture mechanism of the test suite.

The kernel implementations under test are read from the backend registry
(:mod:`softmax_fast.backends`), as scikit-learn's ``test_loss.py`` reads its losses from
``_LOSSES``: adding a backend with ``register_backend`` adds it to every contract test of its
kind, nothing here spells a backend name.

Fixtures (each parametrised over the registry, ids are the backend names):

``dense_backend``, ``sparse_backend``, ``multi_backend``
    the kernel module of every implementation of the kind, the float64 oracle included —
    for tests that check an implementation on its own (known values, finite differences,
    invariances, the numeric policy);
``fast_dense_backend``, ``fast_sparse_backend``, ``fast_multi_backend``
    every implementation except the oracle — for tests that compare with the oracle, across
    thread counts or with each other (the oracle is never compared with itself);
``backend``, ``fast_backend_name``
    dense backend *names* (all / all but the oracle), for tests of the public API.

A registered backend that does not import is a test FAILURE, never a silent skip: a compiled
backend that failed to build must not turn its tests into skips that nobody reads. To run the
suite on a machine where a backend cannot be built, set
``SOFTMAX_FAST_ALLOW_MISSING_BACKENDS=1``; its tests are then skipped with the import error.
The one exception is hardware: a build of the Cython kernels this CPU (or platform) cannot
run, ``cython-avx512`` on a CPU without AVX-512 say, skips its tests with the reason
(``UnsupportedISAError``); a build that should exist here and does not still fails.
"""

import os
import tempfile

import pytest

from softmax_fast import backends
from softmax_fast.kernels._isa import UnsupportedISAError

#: Set to 1 to skip (instead of fail) the tests of a registered backend that does not import.
ALLOW_MISSING_ENV_VAR = "SOFTMAX_FAST_ALLOW_MISSING_BACKENDS"

#: The implementations of each kind, in the registry's ``auto`` order (oracle included).
DENSE = backends.registered("dense")
SPARSE = backends.registered("sparse")
MULTI = backends.registered("multi")
ALL = {kind: backends.registered(kind) for kind in backends.KINDS}
#: Every implementation except the oracle, per kind.
FAST = {kind: [info for info in infos if not info.oracle] for kind, infos in ALL.items()}
FAST_DENSE, FAST_SPARSE, FAST_MULTI = FAST["dense"], FAST["sparse"], FAST["multi"]

#: Dense backend names (kept for older tests).
ALL_BACKENDS = tuple(info.name for info in DENSE)

#: Working directory for child Python processes: outside the checkout, because ``python -m`` and
#: ``python -c`` put the current directory first on sys.path, and the source tree's
#: ``softmax_fast/`` (without the compiled kernels) would shadow the installed package.
SUBPROCESS_CWD = tempfile.gettempdir()


def missing_backends_allowed():
    """True if a backend that does not import should skip its tests instead of failing them."""
    return os.environ.get(ALLOW_MISSING_ENV_VAR, "") == "1"


def _unavailable(reason):
    """Fail, or skip when the environment explicitly allows missing backends."""
    if missing_backends_allowed():
        pytest.skip(reason)
    pytest.fail(f"{reason} (set {ALLOW_MISSING_ENV_VAR}=1 to skip instead)", pytrace=False)


def load_kernels(info):
    """The kernel module of the registry record ``info``; fails the test if it does not import."""
    error = backends.import_error(info.name, info.kind)
    if isinstance(error, UnsupportedISAError):  # this CPU cannot run that build: nothing to test
        pytest.skip(f"{info.kind} backend {info.name!r}: {error}")
    if error is not None:
        _unavailable(f"{info.kind} backend {info.name!r} ({info.module}) does not import: "
                     f"{type(error).__name__}: {error}")
    return backends.get_kernels(info.name, info.kind)


def oracle_info(kind):
    """The registry record of ``kind``'s float64 oracle."""
    oracles = [info for info in ALL[kind] if info.oracle]
    assert len(oracles) == 1, f"{kind}: expected exactly one oracle, got {oracles}"
    return oracles[0]


def oracle_kernels(kind):
    """The kernel module of ``kind``'s oracle (the float64 reference)."""
    return load_kernels(oracle_info(kind))


def require_backend(name, kind="dense"):
    """Return ``name`` if backend ``name`` of ``kind`` imports; else fail (or skip, see above)."""
    infos = [info for info in backends.registered(kind) if info.name == name]
    if not infos:
        pytest.fail(f"no {kind} backend named {name!r} is registered", pytrace=False)
    load_kernels(infos[0])
    return name


def _params(infos):
    return [pytest.param(info, id=info.name) for info in infos]


# ---------------------------------------------------------------------------------------
# kernel modules
# ---------------------------------------------------------------------------------------
@pytest.fixture(params=_params(DENSE))
def dense_backend(request):
    """The kernel module of every dense implementation (oracle included)."""
    return load_kernels(request.param)


@pytest.fixture(params=_params(FAST_DENSE))
def fast_dense_backend(request):
    """The kernel module of every dense implementation but the oracle."""
    return load_kernels(request.param)


@pytest.fixture(params=_params(SPARSE))
def sparse_backend(request):
    """The kernel module of every sparse (CSR) implementation (oracle included)."""
    return load_kernels(request.param)


@pytest.fixture(params=_params(FAST_SPARSE))
def fast_sparse_backend(request):
    """The kernel module of every sparse implementation but the oracle."""
    return load_kernels(request.param)


@pytest.fixture(params=_params(MULTI))
def multi_backend(request):
    """The kernel module of every multi-model implementation (oracle included)."""
    return load_kernels(request.param)


@pytest.fixture(params=_params(FAST_MULTI))
def fast_multi_backend(request):
    """The kernel module of every multi-model implementation but the oracle."""
    return load_kernels(request.param)


# ---------------------------------------------------------------------------------------
# backend names, for the public API
# ---------------------------------------------------------------------------------------
@pytest.fixture(params=_params(DENSE))
def backend(request):
    """Each dense backend by name (oracle included); fails if it does not import."""
    load_kernels(request.param)
    return request.param.name


@pytest.fixture(params=_params(FAST_DENSE))
def fast_backend_name(request):
    """Each dense backend but the oracle, by name; fails if it does not import."""
    load_kernels(request.param)
    return request.param.name


# ---------------------------------------------------------------------------------------
# comparison helper shared by the kernel contract tests
# ---------------------------------------------------------------------------------------
def assert_close(actual, desired, rtol, scale_atol=True):
    """Elementwise relative check with an absolute floor of rtol * max|desired|.

    The floor keeps the check meaningful for entries that are the difference of nearly
    equal numbers (e.g. p_y - 1 with p_y close to 1) without loosening the others.
    """
    import numpy as np

    desired = np.asarray(desired, dtype=np.float64)
    atol = rtol * float(np.max(np.abs(desired))) if scale_atol and desired.size else 0.0
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), desired, rtol=rtol,
                               atol=atol)
