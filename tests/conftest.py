"""Shared test settings.

In CI (``CI`` set) every backend must be importable: a compiled backend that failed to build
would otherwise only show up as skipped tests, which cannot fail.
"""

import os
import tempfile

import pytest

from softmax_fast import backends

ALL_BACKENDS = ("reference", "cython", "numba")

#: Working directory for child Python processes: outside the checkout, because ``python -m`` and
#: ``python -c`` put the current directory first on sys.path, and the source tree's
#: ``softmax_fast/`` (without the compiled kernels) would shadow the installed package.
SUBPROCESS_CWD = tempfile.gettempdir()


def require_backend(name):
    """Skip (locally) or fail (in CI) when backend ``name`` is not importable."""
    if name in backends.available_backends():
        return name
    reason = f"backend {name!r} is not importable: {backends._import_errors.get(name)}"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(params=ALL_BACKENDS)
def backend(request):
    """Each importable backend by name."""
    return require_backend(request.param)
