"""Contract tests of the ``sparse`` kernel family (:class:`~softmax_fast.kernels.contract.SparseKernels`).

``linear_softmax_ce`` and ``sgd_epoch`` with a scipy CSR ``X`` (sorted indices, data of the
working dtype, as ``functional.prepare_features`` hands it over). The implementations come
from the backend registry (``conftest.py``): every non-oracle one is compared with the float64
oracle (``reference``, which densifies ``X``); every one, the oracle included, is checked
against known values, finite differences of its own loss, invariances and the numeric policy.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import assert_close
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from softmax_fast._training.sampling import epoch_order
from softmax_fast.kernels import reference as ref

DTYPES = [np.float64, np.float32]

# Tolerances (relative, with the absolute floor of assert_close) against the float64 oracle.
# * float64: each logit is a float64 sum over the row's few non-zeros and each gradient entry a
#   sum over the rows sharing a column; measured errors are ~1e-15, so 1e-12 (linear) and 1e-10
#   (an SGD epoch: tens of chained updates) leave room for reassociation only.
# * float32: the products x_ij * w_kj and the stored gradients/weights are rounded to float32
#   (eps ~6e-8), the gradient sums n terms with cancellation: as for the dense kernels, 2e-5 of
#   the largest entry for one evaluation and 1e-4 for an epoch, whose float32 rounding of the
#   weights after every step compounds.
TOL = {
    np.float64: {"linear": 1e-12, "sgd": 1e-10},
    np.float32: {"linear": 2e-5, "sgd": 1e-4},
}

PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(params=DTYPES, ids=["float64", "float32"])
def dtype(request):
    return request.param


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def make_csr(n, d, dtype, density=0.15, seed=0, empty_rows=()):
    """A CSR matrix as the kernels receive it; the rows ``empty_rows`` have no non-zero."""
    rng = np.random.default_rng(seed)
    dense = rng.standard_normal((n, d)) * 2.0 * (rng.random((n, d)) < density)
    dense[list(empty_rows)] = 0.0
    X = sp.csr_matrix(dense.astype(dtype))
    X.sort_indices()
    assert X.dtype == dtype and X.has_sorted_indices
    return X


def make_problem(n, d, c, dtype, seed=0, density=0.15, empty_rows=()):
    rng = np.random.default_rng(seed + 1000)
    X = make_csr(n, d, dtype, density, seed, empty_rows)
    coef = (rng.standard_normal((c, d)) * 0.3).astype(dtype)
    intercept = (rng.standard_normal(c) * 0.3).astype(dtype)
    y = rng.integers(0, c, size=n).astype(np.intp)
    w = rng.random(n) * 2.0
    return X, coef, intercept, y, w


def run_linear(mod, X, x_scale, coef, intercept, y, w, alpha, n_threads=1):
    gc = np.empty_like(coef)
    gb = np.empty_like(intercept)
    loss = mod.linear_softmax_ce(X, x_scale, coef, intercept, y, w, alpha, gc, gb, n_threads)
    return loss, gc, gb


def run_sgd(mod, X, x_scale, y, w, order, coef, intercept, lr=0.2, alpha=1e-2, momentum=0.0,
            nesterov=False, batch_size=8, n_threads=1):
    coef = coef.copy()
    intercept = intercept.copy()
    vc = np.zeros_like(coef)
    vb = np.zeros_like(intercept)
    loss = mod.sgd_epoch(X, x_scale, y, w, order, coef, intercept, vc, vb, lr, alpha, momentum,
                         nesterov, batch_size, n_threads)
    return loss, coef, intercept, vc, vb


def ref_linear(X, x_scale, coef, intercept, y, w, alpha):
    return run_linear(ref, X, x_scale, coef.astype(np.float64), intercept.astype(np.float64),
                      y, w, alpha)


def ref_sgd(X, x_scale, y, w, order, coef, intercept, **kw):
    return run_sgd(ref, X, x_scale, y, w, order, coef.astype(np.float64),
                   intercept.astype(np.float64), **kw)


def assert_results_close(got, want, tol):
    assert got[0] == pytest.approx(want[0], rel=tol)
    for a, b in zip(got[1:], want[1:], strict=True):
        assert_close(a, b, tol)


# --------------------------------------------------------------------------------------
# the oracle: a CSR X is the same problem as its dense array
# --------------------------------------------------------------------------------------
class TestReference:
    def test_linear_on_csr_equals_linear_on_the_dense_array(self):
        X, coef, intercept, y, w = make_problem(40, 12, 4, np.float64, seed=1, empty_rows=(3,))
        got = run_linear(ref, X, 0.5, coef, intercept, y, w, 0.2)
        want = run_linear(ref, X.toarray(), 0.5, coef, intercept, y, w, 0.2)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)

    def test_sgd_on_csr_equals_sgd_on_the_dense_array(self):
        X, coef, intercept, y, w = make_problem(40, 12, 4, np.float64, seed=2)
        order = epoch_order(40, seed=0, epoch=0)
        got = run_sgd(ref, X, 0.5, y, w, order, coef, intercept, momentum=0.9, nesterov=True)
        want = run_sgd(ref, X.toarray(), 0.5, y, w, order, coef, intercept, momentum=0.9,
                       nesterov=True)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------
# every fast implementation against the oracle
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("x_scale", [1.0, 0.37])
def test_linear_softmax_ce_matches_reference(fast_sparse_backend, dtype, weighted, x_scale):
    X, coef, intercept, y, w = make_problem(157, 60, 7, dtype, seed=3,
                                            empty_rows=(0, 5, 6, 7, 156))
    w = w if weighted else None
    got = run_linear(fast_sparse_backend, X, x_scale, coef, intercept, y, w, 0.3)
    want = ref_linear(X, x_scale, coef, intercept, y, w, 0.3)
    assert isinstance(got[0], float)
    assert got[1].dtype == dtype and got[2].dtype == dtype and got[1].shape == (7, 60)
    assert_results_close(got, want, TOL[dtype]["linear"])


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)],
                         ids=["plain", "momentum", "nesterov"])
def test_sgd_epoch_matches_reference(fast_sparse_backend, dtype, momentum, nesterov):
    # 157 rows at batch 8: the last batch is partial (5 rows); some rows are empty
    X, coef, intercept, y, w = make_problem(157, 60, 7, dtype, seed=4, empty_rows=(2, 9, 80))
    order = epoch_order(157, seed=1, epoch=0)
    kw = dict(lr=0.2, alpha=1e-2, momentum=momentum, nesterov=nesterov, batch_size=8)
    got = run_sgd(fast_sparse_backend, X, 0.7, y, w, order, coef, intercept, **kw)
    want = ref_sgd(X, 0.7, y, w, order, coef, intercept, **kw)
    assert got[1].dtype == dtype
    assert_results_close(got, want, TOL[dtype]["sgd"])
    assert np.max(np.abs(got[1] - coef)) > 1e-2  # the epoch really moved the weights
    if momentum:
        assert np.any(got[3] != 0)


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_sgd_epoch_batch_sizes_and_partial_order(fast_sparse_backend, batch_size):
    """Any batch size (1, ragged, larger than the epoch) and an order over a subset of rows."""
    X, coef, intercept, y, _ = make_problem(60, 20, 4, np.float64, seed=5)
    order = epoch_order(60, seed=2, epoch=1)[:45]
    got = run_sgd(fast_sparse_backend, X, 1.0, y, None, order, coef, intercept,
                  batch_size=batch_size, momentum=0.5)
    want = ref_sgd(X, 1.0, y, None, order, coef, intercept, batch_size=batch_size,
                   momentum=0.5)
    assert_results_close(got, want, TOL[np.float64]["sgd"])


def test_sgd_epoch_zero_weight_batch_matches_reference(fast_sparse_backend):
    """A batch whose weights sum to zero has no data term, only the L2 step."""
    X, coef, intercept, y, _ = make_problem(24, 9, 3, np.float64, seed=6)
    order = np.arange(24, dtype=np.intp)
    w = np.ones(24)
    w[8:16] = 0.0  # the second batch of 8
    kw = dict(alpha=0.05, batch_size=8, momentum=0.5)
    got = run_sgd(fast_sparse_backend, X, 1.0, y, w, order, coef, intercept, **kw)
    want = ref_sgd(X, 1.0, y, w, order, coef, intercept, **kw)
    assert_results_close(got, want, TOL[np.float64]["sgd"])


@settings(PROPERTY, max_examples=25)
@given(n=st.integers(1, 40), d=st.integers(1, 40), c=st.integers(1, 8),
       density=st.sampled_from([0.0, 0.02, 0.2, 0.6, 1.0]), use64=st.booleans(),
       weighted=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_property_matches_reference(fast_sparse_backend, n, d, c, density, use64, weighted,
                                    seed):
    dtype = np.float64 if use64 else np.float32
    X, coef, intercept, y, w = make_problem(n, d, c, dtype, seed=seed, density=density)
    w = w + 0.1 if weighted else None
    got = run_linear(fast_sparse_backend, X, 0.5, coef, intercept, y, w, 0.05)
    want = ref_linear(X, 0.5, coef, intercept, y, w, 0.05)
    tol = TOL[dtype]["linear"]
    assert got[0] == pytest.approx(want[0], rel=tol, abs=1e-12)
    assert_close(got[1], want[1], tol)
    assert_close(got[2], want[2], tol)
    order = epoch_order(n, seed=seed % 1000, epoch=0)
    got = run_sgd(fast_sparse_backend, X, 0.5, y, w, order, coef, intercept, batch_size=4,
                  momentum=0.9, nesterov=True)
    want = ref_sgd(X, 0.5, y, w, order, coef, intercept, batch_size=4, momentum=0.9,
                   nesterov=True)
    tol = TOL[dtype]["sgd"]
    assert got[0] == pytest.approx(want[0], rel=tol, abs=1e-12)
    for a, b in zip(got[1:], want[1:], strict=True):
        assert_close(a, b, tol)


# --------------------------------------------------------------------------------------
# reproducibility across thread counts (the oracle ignores n_threads: not tested)
# --------------------------------------------------------------------------------------
def test_bitwise_across_threads(fast_sparse_backend, dtype):
    X, coef, intercept, y, w = make_problem(300, 80, 10, dtype, seed=7, empty_rows=(4, 5))
    runs = [run_linear(fast_sparse_backend, X, 0.5, coef, intercept, y, w, 0.01, n_threads=t)
            for t in (1, 2, 4)]
    order = epoch_order(300, seed=0, epoch=0)
    epochs = [run_sgd(fast_sparse_backend, X, 0.5, y, w, order, coef, intercept, momentum=0.9,
                      batch_size=16, n_threads=t) for t in (1, 2, 4)]
    for results in (runs, epochs):
        for res in results[1:]:
            assert res[0] == results[0][0]
            for got, first in zip(res[1:], results[0][1:], strict=True):
                np.testing.assert_array_equal(got, first)


# --------------------------------------------------------------------------------------
# every implementation, the oracle included: known values, finite differences, policy
# --------------------------------------------------------------------------------------
def test_rows_without_non_zeros_see_only_the_intercept(sparse_backend, dtype):
    """An all-empty X: z = intercept for every row, so the loss and gradients are known."""
    n, d, c, alpha = 9, 6, 4, 0.3
    X = sp.csr_matrix((n, d), dtype=dtype)
    rng = np.random.default_rng(8)
    coef = rng.standard_normal((c, d)).astype(dtype)
    intercept = rng.standard_normal(c).astype(dtype)
    y = np.arange(n, dtype=np.intp) % c
    loss, gc, gb = run_linear(sparse_backend, X, 1.0, coef, intercept, y, None, alpha)
    z = np.tile(intercept.astype(np.float64), (n, 1))
    coef64 = coef.astype(np.float64)
    want_loss = ref.cross_entropy(z, y) + 0.5 * alpha * np.sum(coef64 ** 2)
    tol = TOL[dtype]["linear"]
    assert loss == pytest.approx(want_loss, rel=tol)
    assert_close(gc, alpha * coef64, tol)  # no data term: only the L2 gradient
    assert_close(gb, ref.cross_entropy_grad(z, y).sum(axis=0), tol)


def test_linear_gradient_finite_differences(sparse_backend):
    X, coef, intercept, y, w = make_problem(14, 6, 4, np.float64, seed=9, density=0.4,
                                            empty_rows=(2,))
    alpha = 0.4

    def loss(c, b):
        return run_linear(sparse_backend, X, 0.8, c, b, y, w, alpha)[0]

    _, gc, gb = run_linear(sparse_backend, X, 0.8, coef, intercept, y, w, alpha)
    h = 1e-6
    for idx in np.ndindex(coef.shape):
        cp, cm = coef.copy(), coef.copy()
        cp[idx] += h
        cm[idx] -= h
        fd = (loss(cp, intercept) - loss(cm, intercept)) / (2 * h)
        assert fd == pytest.approx(gc[idx], rel=1e-6, abs=1e-9)
    for k in range(4):
        bp, bm = intercept.copy(), intercept.copy()
        bp[k] += h
        bm[k] -= h
        fd = (loss(coef, bp) - loss(coef, bm)) / (2 * h)
        assert fd == pytest.approx(gb[k], rel=1e-6, abs=1e-9)


def test_sample_weights_with_zeros_drop_rows(sparse_backend, dtype):
    X, coef, intercept, y, _ = make_problem(20, 10, 3, dtype, seed=10, density=0.3)
    w = np.tile([1.0, 0.0, 2.0, 0.5], 5)
    keep = w > 0
    got = run_linear(sparse_backend, X, 1.0, coef, intercept, y, w, 0.2)
    sub = run_linear(sparse_backend, X[keep], 1.0, coef, intercept, y[keep], w[keep], 0.2)
    assert_results_close(got, sub, TOL[dtype]["linear"])


def test_read_only_inputs(sparse_backend, dtype):
    X, coef, intercept, y, w = make_problem(30, 12, 4, dtype, seed=11)
    order = epoch_order(30, seed=0, epoch=0)
    expected = run_linear(sparse_backend, X, 0.5, coef, intercept, y, w, 0.1)
    expected_sgd = run_sgd(sparse_backend, X, 0.5, y, w, order, coef, intercept, momentum=0.9)
    Xr = X.copy()
    for a in (Xr.data, Xr.indices, Xr.indptr, coef, intercept, y, w, order):
        a.flags.writeable = False
    got = run_linear(sparse_backend, Xr, 0.5, coef, intercept, y, w, 0.1)
    got_sgd = run_sgd(sparse_backend, Xr, 0.5, y, w, order, coef, intercept, momentum=0.9)
    for a, b in zip(got + got_sgd, expected + expected_sgd, strict=True):
        np.testing.assert_array_equal(a, b)


def test_non_finite_policy(sparse_backend, dtype):
    X, coef, intercept, y, w = make_problem(20, 8, 3, dtype, seed=12, density=0.5)
    Xn = X.copy()
    Xn.data[3] = np.nan
    loss, _, _ = run_linear(sparse_backend, Xn, 1.0, coef, intercept, y, w, 0.1)
    assert not np.isfinite(loss)
    order = np.arange(20, dtype=np.intp)
    loss, *_ = run_sgd(sparse_backend, Xn, 1.0, y, None, order, coef, intercept, batch_size=4)
    assert not np.isfinite(loss)
    coef_inf = coef.copy()
    coef_inf[:, X.indices[0]] = np.inf  # a column that row 0 uses, for every class
    loss, _, _ = run_linear(sparse_backend, X, 1.0, coef_inf, intercept, y, None, 0.0)
    assert not np.isfinite(loss)
