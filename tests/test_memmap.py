"""Data larger than RAM: ``fit`` on a NumPy memory map reads it in place, never copies it.

The kernels read X chunk by chunk (L-BFGS) or minibatch by minibatch (SGD) straight from the
map, so the extra memory is the kernels' chunk plus a few c x d vectors — measured here with
``tracemalloc`` (NumPy reports its allocations to it), against the size of X.
"""

import tracemalloc
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from softmax_fast import SoftmaxRegression


@pytest.fixture(scope="module")
def mapped(tmp_path_factory):
    rng = np.random.default_rng(0)
    n, d, c = 30000, 256, 12
    means = rng.standard_normal((c, d)).astype(np.float32)
    y = rng.integers(0, c, n)
    X = means[y] + 2 * rng.standard_normal((n, d), dtype=np.float32)
    path = tmp_path_factory.mktemp("memmap") / "X.npy"
    np.save(path, X)
    return np.load(path, mmap_mode="r"), y, X


@pytest.mark.parametrize("solver,max_iter", [("lbfgs", 15), ("sgd", 2)])
def test_fit_on_a_memory_map_never_copies_it(mapped, solver, max_iter):
    X_map, y, X = mapped
    params = dict(solver=solver, max_iter=max_iter, random_state=0, dtype="float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        tracemalloc.start()
        try:
            model = SoftmaxRegression(**params).fit(X_map, y)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        in_memory = SoftmaxRegression(**params).fit(X, y)
    c, d = model.coef_.shape
    # L-BFGS keeps 2 x 50 history vectors of (c + 1) d float64 values; beyond that, only the
    # kernels' chunk: far below the 30 MB of X
    bound = 100 * (c + 1) * d * 8 + 4 * 2**20
    assert peak < bound < X_map.nbytes / 2, (peak, bound)
    np.testing.assert_array_equal(model.coef_, in_memory.coef_)  # the same bytes read
    assert model.score(X_map, y) == in_memory.score(X, y)
