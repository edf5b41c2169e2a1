"""Hostile arrays at every public entry point: only ValueError/TypeError, never a crash.

Property-based (hypothesis): random shapes (including empty and mismatched), dtypes (ints,
bools, complex, object, float16, uint8), layouts (Fortran order, strided, read-only),
non-finite values, labels out of range and corrupt CSR structures are thrown at the
functional API, the estimator, grid search and — since ``get_backend``/``get_kernels`` hand
them out publicly — every registered kernel module directly. An input may succeed (then the
output must be finite where the input was) or raise ``ValueError``/``TypeError``; anything
else — another exception, a segfault, an abort — fails the test (a crash takes pytest down,
which CI reports).
"""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import require_backend
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from softmax_fast import (
    SoftmaxRegression,
    linear_softmax_cross_entropy,
    log_softmax,
    softmax,
    softmax_cross_entropy,
)
from softmax_fast.backends import KINDS, get_kernels, registered
from softmax_fast.search import grid_search

ACCEPTED = (ValueError, TypeError)
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DTYPES = [np.float32, np.float64, np.float16, np.int64, np.int8, np.uint8, np.bool_,
          np.complex64, object]
ALL_IMPLEMENTATIONS = [(info.kind, info.name) for kind in KINDS for info in registered(kind)]


@st.composite
def arrays(draw, max_dim=6, ndim=None):
    """An array of random shape, dtype, layout and content (NaN, inf, huge values too)."""
    ndim = draw(st.sampled_from([0, 1, 2, 3]) if ndim is None else st.just(ndim))
    shape = tuple(draw(st.integers(0, max_dim)) for _ in range(ndim))
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = rng.standard_normal(shape) * draw(st.sampled_from([1.0, 1e3, 1e30]))
    if values.size and draw(st.booleans()):
        values.flat[rng.integers(0, values.size)] = draw(
            st.sampled_from([np.nan, np.inf, -np.inf, 1e300]))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arr = values.astype(dtype)
    if arr.ndim == 2 and draw(st.booleans()):
        arr = np.asfortranarray(arr)
    if arr.ndim >= 1 and arr.shape[0] > 1 and draw(st.booleans()):
        arr = arr[::2]
    if draw(st.booleans()):
        arr.setflags(write=False)
    return arr


@st.composite
def labels(draw, n_max=8, c_max=6):
    n = draw(st.integers(0, n_max))
    kind = draw(st.sampled_from(["ok", "negative", "big", "float", "2d", "nan"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    y = rng.integers(0, c_max, n)
    if kind == "negative" and n:
        y[0] = -1
    elif kind == "big" and n:
        y[0] = 10**9
    elif kind == "float":
        y = y.astype(float) + 0.5
    elif kind == "2d":
        y = np.eye(c_max)[y]
    elif kind == "nan":
        y = y.astype(float)
        if n:
            y[0] = np.nan
    return y


def _call(func, *args, **kwargs):
    """Run ``func``; pass on ValueError/TypeError, let anything else fail the test."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            return func(*args, **kwargs)
        except ACCEPTED:
            return None


# --------------------------------------------------------------------------------------
# the functional API
# --------------------------------------------------------------------------------------
@FUZZ
@given(z=arrays(ndim=2), y=labels(), w=st.one_of(st.none(), arrays(ndim=1)),
       backend=st.sampled_from([i.name for i in registered("dense")]))
def test_functional_softmax_family(z, y, w, backend):
    for func in (softmax, log_softmax):
        _call(func, z, backend=backend)
    _call(softmax_cross_entropy, z, y, sample_weight=w, backend=backend)


@FUZZ
@given(X=arrays(ndim=2), W=arrays(ndim=2), b=arrays(ndim=1), y=labels(),
       backend=st.sampled_from([i.name for i in registered("dense")]),
       x_scale=st.sampled_from([1.0, 0.0, -1.0, np.nan, 1 / 255]))
def test_functional_linear(X, W, b, y, backend, x_scale):
    _call(linear_softmax_cross_entropy, X, W, b, y, x_scale=x_scale, backend=backend)


@st.composite
def csr_matrices(draw):
    """A CSR matrix, sometimes with a corrupt structure (what a careless caller builds)."""
    n, d = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    A = sp.random(n, d, density=0.5, format="csr", random_state=rng)
    corruption = draw(st.sampled_from(["none", "index", "negative", "indptr", "short"]))
    if corruption == "index" and A.nnz:
        A.indices[0] = draw(st.sampled_from([d, 10**8]))
    elif corruption == "negative" and A.nnz:
        A.indices[0] = -1
    elif corruption == "indptr" and n > 1:
        A.indptr[1] = A.indptr[-1] + 5
    elif corruption == "short":
        A.indptr = A.indptr[:-1]
    return A


@FUZZ
@given(A=csr_matrices(), c=st.integers(1, 4), d_offset=st.integers(-1, 1))
def test_functional_linear_csr(A, c, d_offset):
    d = max(1, A.shape[1] + d_offset)
    _call(linear_softmax_cross_entropy, A, np.zeros((c, d)), np.zeros(c),
          np.arange(A.shape[0]) % c)


# --------------------------------------------------------------------------------------
# the estimator and grid search
# --------------------------------------------------------------------------------------
@FUZZ
@given(X=arrays(ndim=2, max_dim=8), y=labels(), X2=arrays(ndim=2, max_dim=8),
       backend=st.sampled_from([i.name for i in registered("dense")]), warm=st.booleans())
def test_estimator_fit_predict_refit(X, y, X2, backend, warm):
    model = SoftmaxRegression(max_iter=2, backend=backend, warm_start=warm, batch_size=3)
    if _call(model.fit, X, y) is None:
        return
    for method in ("predict", "predict_proba", "decision_function"):
        _call(getattr(model, method), X2)
    _call(model.score, X2, y)
    _call(model.objective, X2, y)
    _call(model.fit, X2, y)  # a (warm) refit on data of another shape
    _call(model.partial_fit, X2, y)


@FUZZ
@given(A=csr_matrices(), B=csr_matrices(), warm=st.booleans())
def test_estimator_csr(A, B, warm):
    y = np.arange(A.shape[0]) % 2
    model = SoftmaxRegression(max_iter=2, warm_start=warm)
    if _call(model.fit, A, y) is None:
        return
    _call(model.fit, B, np.arange(B.shape[0]) % 2)
    _call(model.predict, B)


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(X=arrays(ndim=2, max_dim=10), y=labels(n_max=10),
       grid=st.fixed_dictionaries({
           "batch_size": st.lists(st.sampled_from([1, 3, 0, -2, True, 2.5]), min_size=1,
                                  max_size=2),
           "learning_rate_init": st.lists(st.sampled_from([0.1, -1.0, np.nan, 1e30]),
                                          min_size=1, max_size=2),
           "max_iter": st.lists(st.sampled_from([1, 2, 0]), min_size=1, max_size=2)}))
def test_grid_search(X, y, grid):
    _call(grid_search, X, y, grid, random_state=0, refit=False, n_threads=1)


# --------------------------------------------------------------------------------------
# every kernel module, called directly (what get_backend/get_kernels hand out)
# --------------------------------------------------------------------------------------
@st.composite
def kernel_args(draw, kind):
    """Arguments of a contract function: mostly right, with one thing wrong at random."""
    n, d, c = draw(st.integers(1, 6)), draw(st.integers(1, 5)), draw(st.integers(1, 4))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    args = {
        "X": rng.random((n, d)).astype(dtype),
        "coef": rng.random((c, d)).astype(dtype),
        "intercept": np.zeros(c, dtype),
        "y": rng.integers(0, c, n).astype(np.intp),
        "order": rng.permutation(n).astype(np.intp),
        "w": None,
    }
    wrong = draw(st.sampled_from(["none", "y_range", "y_neg", "y_len", "order_range", "X_cols",
                                  "coef_dtype", "intercept_len", "w_len", "y_dtype",
                                  "fortran", "order_len"]))
    if wrong == "y_range":
        args["y"][0] = c + draw(st.integers(0, 10**6))
    elif wrong == "y_neg":
        args["y"][0] = -1
    elif wrong == "y_len":
        args["y"] = args["y"][:-1]
    elif wrong == "order_range":
        args["order"][0] = n + draw(st.integers(0, 10**6))
    elif wrong == "order_len":
        args["order"] = np.concatenate([args["order"], args["order"]])
    elif wrong == "X_cols":
        args["X"] = rng.random((n, d + 3)).astype(dtype)
    elif wrong == "coef_dtype":
        args["coef"] = args["coef"].astype(np.float16)
    elif wrong == "intercept_len":
        args["intercept"] = np.zeros(c + 2, dtype)
    elif wrong == "w_len":
        args["w"] = np.ones(n + 3)
    elif wrong == "y_dtype":
        args["y"] = args["y"].astype(np.int32)
    elif wrong == "fortran":
        args["coef"] = np.asfortranarray(rng.random((d, c)).astype(dtype)).T
    if kind == "sparse":
        args["X"] = sp.csr_matrix(args["X"])
    return args, wrong


def _kernel_calls(module, kind, a):
    coef, intercept = a["coef"], a["intercept"]
    grads = (np.empty_like(coef), np.empty_like(intercept))
    if kind in ("dense", "sparse"):
        yield module.linear_softmax_ce, (a["X"], 1.0, coef, intercept, a["y"], a["w"], 0.1,
                                         *grads, 2)
        yield module.sgd_epoch, (a["X"], 1.0, a["y"], a["w"], a["order"], coef.copy(),
                                 intercept.copy(), np.zeros_like(coef),
                                 np.zeros_like(intercept), 0.1, 0.0, 0.5, False, 2, 2)
    if kind == "dense":
        z = np.zeros((a["y"].shape[0] + 1, coef.shape[0]), coef.dtype)
        yield module.softmax_ce, (a["X"][:, :coef.shape[0]] if a["X"].shape[1] >= coef.shape[0]
                                  else z, a["y"], a["w"], np.empty_like(z), 2)
        yield module.softmax, (z, np.empty((1, 1), z.dtype), 2)
    if kind == "multi":
        coefs = np.ascontiguousarray(np.stack([coef, coef]), dtype=np.float32)
        k = coefs.shape[0]
        X = a["X"].astype(np.float32) if a["X"].dtype != np.float32 else a["X"]
        yield module.multi_sgd_epoch, (X, 1.0, a["y"], a["order"], coefs, np.ones(k),
                                       np.zeros((k, coefs.shape[1]), np.float32), None, None,
                                       np.full(k, 0.1), np.zeros(k), np.zeros(k),
                                       np.zeros(k, bool), 2, 2)


@pytest.mark.parametrize("kind,name", ALL_IMPLEMENTATIONS)
def test_kernel_modules_refuse_what_they_cannot_handle(kind, name):
    module = get_kernels(require_backend(name, kind), kind)

    @FUZZ
    @given(case=kernel_args(kind))
    def run(case):
        args, wrong = case
        for func, call_args in _kernel_calls(module, kind, args):
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                try:
                    func(*call_args)
                except ACCEPTED:
                    continue
                except IndexError:
                    # NumPy's own bounds check (the float64 reference): safe, not a crash
                    if name != "reference":
                        raise

    run()
