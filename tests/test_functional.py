"""The public functions: validation, memory layouts, dtype handling and the error policy.

Numerics of each backend against the reference are in test_kernels*.py; here every backend is
driven through the public wrappers, which must behave identically whichever backend runs. The
``backend`` fixture (conftest.py) gives every dense backend name, ``fast_backend_name`` every
one but the oracle (used where a result is compared with the reference).
"""

import numpy as np
import pytest
import scipy.sparse as sp

import softmax_fast
from softmax_fast import backends
from softmax_fast.kernels import reference as ref

TOL = {np.float32: 2e-6, np.float64: 1e-12}


def _logits(n=37, c=11, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return (3 * rng.standard_normal((n, c))).astype(dtype), rng.integers(0, c, n)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_cross_entropy_matches_reference(fast_backend_name, dtype):
    z, y = _logits(dtype=dtype)
    loss, grad = softmax_fast.softmax_cross_entropy(z, y, backend=fast_backend_name)
    assert grad.dtype == dtype
    want_loss = ref.cross_entropy(z.astype(np.float64), y)
    want_grad = ref.cross_entropy_grad(z.astype(np.float64), y)
    assert loss == pytest.approx(want_loss, rel=TOL[dtype])
    np.testing.assert_allclose(grad, want_grad, rtol=0, atol=TOL[dtype] * 1e-1)


@pytest.mark.parametrize("layout", ["fortran", "strided", "readonly", "int-labels-u8"])
def test_layouts_are_accepted_and_never_silently_wrong(backend, layout):
    z, y = _logits(n=20, c=6)
    want = softmax_fast.softmax_cross_entropy(z, y, backend="reference")
    if layout == "fortran":
        z = np.asfortranarray(z)
    elif layout == "strided":
        big = np.zeros((40, 12))
        big[::2, ::2] = z
        z = big[::2, ::2]
    elif layout == "readonly":
        z = z.copy()
        z.flags.writeable = False
    else:
        y = y.astype(np.uint8)
    loss, grad = softmax_fast.softmax_cross_entropy(z, y, backend=backend)
    assert loss == pytest.approx(want[0], rel=1e-12)
    np.testing.assert_allclose(grad, want[1], atol=1e-14)


def test_in_place_gradient_overwrites_logits(backend):
    z, y = _logits()
    want_loss = ref.cross_entropy(z, y)
    want_grad = ref.cross_entropy_grad(z, y)
    loss, grad = softmax_fast.softmax_cross_entropy(z, y, backend=backend, out=z)
    assert grad is z
    assert loss == pytest.approx(want_loss, rel=1e-12)
    np.testing.assert_allclose(z, want_grad, atol=1e-14)


def test_sample_weight_is_a_weighted_mean(fast_backend_name):
    z, y = _logits()
    w = np.random.default_rng(1).uniform(0, 2, len(y))
    loss, grad = softmax_fast.softmax_cross_entropy(z, y, sample_weight=w,
                                                    backend=fast_backend_name)
    assert loss == pytest.approx(ref.cross_entropy(z, y, w), rel=1e-12)
    np.testing.assert_allclose(grad, ref.cross_entropy_grad(z, y, w), atol=1e-14)


@pytest.mark.parametrize(
    ("z", "y", "message"),
    [
        ([[0.0, np.nan]], [0], "NaN"),
        ([[0.0, np.inf]], [0], r"\+inf"),
        ([[-np.inf, -np.inf]], [0], "every class"),
        ([[-np.inf, 1.0]], [0], "true class"),
        ([[0.0, 1.0]], [2], "outside"),
        ([[0.0, 1.0]], [-1], "outside"),
        ([[0.0, 1.0]], [0, 1], "labels but there are"),
        (np.zeros((0, 3)), np.zeros(0, int), "empty"),
        ([0.0, 1.0], [0], "2-D"),
    ],
)
def test_bad_input_raises_value_error_naming_the_problem(backend, z, y, message):
    with pytest.raises(ValueError, match=message):
        softmax_fast.softmax_cross_entropy(np.asarray(z, dtype=float), y, backend=backend)


def test_bad_types_raise_type_error():
    with pytest.raises(TypeError, match="integer class indices"):
        softmax_fast.softmax_cross_entropy(np.zeros((2, 3)), [0.0, 1.0])
    with pytest.raises(TypeError, match="numeric"):
        softmax_fast.softmax_cross_entropy(np.array([["a", "b"]]), [0])
    with pytest.raises(TypeError, match="dtype"):
        softmax_fast.softmax_cross_entropy(np.zeros((2, 3)), [0, 1],
                                           out=np.zeros((2, 3), np.float32))


def test_masked_classes_get_zero_probability_and_gradient(backend):
    z = np.array([[1.0, -np.inf, 2.0], [-np.inf, 0.5, -np.inf]])
    y = np.array([0, 1])
    loss, grad = softmax_fast.softmax_cross_entropy(z, y, backend=backend)
    assert np.isfinite(loss)
    assert grad[0, 1] == 0.0 and grad[1, 0] == 0.0 and grad[1, 2] == 0.0
    p = softmax_fast.softmax(z, backend=backend)
    assert p[0, 1] == 0.0 and p[1, 1] == 1.0
    lp = softmax_fast.log_softmax(z, backend=backend)
    assert np.isneginf(lp[0, 1]) and lp[1, 1] == 0.0


def test_softmax_and_log_softmax_share_the_core(backend):
    z, _ = _logits(dtype=np.float32)
    p = softmax_fast.softmax(z, backend=backend)
    lp = softmax_fast.log_softmax(z, backend=backend)
    np.testing.assert_allclose(p, ref.stable_softmax(z), rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(lp, ref.stable_log_softmax(z), rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(np.exp(lp.astype(np.float64)), p, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("x_dtype", [np.float32, np.uint8])
def test_linear_softmax_cross_entropy_matches_reference(fast_backend_name, x_dtype):
    rng = np.random.default_rng(3)
    n, d, c = 33, 50, 7
    X = rng.integers(0, 256, (n, d)).astype(x_dtype)
    scale = 1 / 255 if x_dtype == np.uint8 else 0.01
    W = (0.1 * rng.standard_normal((c, d))).astype(np.float32)  # (n_classes, n_features)
    b = rng.standard_normal(c).astype(np.float32)
    y = rng.integers(0, c, n)
    loss, dW, db = softmax_fast.linear_softmax_cross_entropy(
        X, W, b, y, alpha=0.01, x_scale=scale, backend=fast_backend_name)
    want = ref.linear_loss_grad(X.astype(np.float64) * scale, W, b, y, 0.01)
    assert dW.shape == (c, d) and dW.dtype == np.float32 and db.shape == (c,)
    assert loss == pytest.approx(want[0], rel=1e-5)
    np.testing.assert_allclose(dW, want[1], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(db, want[2], rtol=1e-4, atol=1e-6)


def test_linear_validation_errors():
    W, b = np.zeros((3, 4)), np.zeros(3)  # 3 classes, 4 features
    with pytest.raises(ValueError, match="features, expected 4"):
        softmax_fast.linear_softmax_cross_entropy(np.zeros((2, 5)), W, b, [0, 1])
    with pytest.raises(ValueError, match=r"b must have shape \(3,\)"):
        softmax_fast.linear_softmax_cross_entropy(np.zeros((2, 4)), W, np.zeros(2), [0, 1])
    with pytest.raises(ValueError, match="alpha"):
        softmax_fast.linear_softmax_cross_entropy(np.zeros((2, 4)), W, b, [0, 1], alpha=-1)
    with pytest.raises(ValueError, match="X contains NaN"):
        softmax_fast.linear_softmax_cross_entropy(np.full((2, 4), np.nan), W, b, [0, 1])


def _csr_problem(dtype=np.float64, seed=4):
    rng = np.random.default_rng(seed)
    n, d, c = 40, 30, 5
    dense = rng.standard_normal((n, d)) * (rng.random((n, d)) < 0.2)
    dense[[0, 7]] = 0.0  # rows without non-zeros
    W = (0.2 * rng.standard_normal((c, d))).astype(dtype)
    b = rng.standard_normal(c).astype(dtype)
    return sp.csr_matrix(dense), W, b, rng.integers(0, c, n)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_with_csr_input_matches_reference(fast_backend_name, dtype):
    X, W, b, y = _csr_problem(dtype)
    w = np.random.default_rng(5).uniform(0.5, 2, X.shape[0])
    loss, dW, db = softmax_fast.linear_softmax_cross_entropy(
        X, W, b, y, alpha=0.1, sample_weight=w, x_scale=0.5, backend=fast_backend_name)
    want = ref.linear_loss_grad(X.toarray() * 0.5, W, b, y, 0.1, w)
    tol = TOL[dtype] * 10
    assert dW.shape == W.shape and dW.dtype == dtype and db.dtype == dtype
    assert loss == pytest.approx(want[0], rel=tol)
    np.testing.assert_allclose(dW, want[1], rtol=tol, atol=tol * np.abs(want[1]).max())
    np.testing.assert_allclose(db, want[2], rtol=tol, atol=tol * np.abs(want[2]).max())


def test_csr_input_with_a_dense_only_backend_uses_the_sparse_kernels(backend):
    """A CSR X never reaches a dense kernel: every name gives the sparse family's result."""
    X, W, b, y = _csr_problem()
    name = backend if ("sparse", backend) in {(i.kind, i.name)
                                               for i in backends.registered("sparse")} \
        else "auto"
    got = softmax_fast.linear_softmax_cross_entropy(X, W, b, y, backend=backend)
    want = softmax_fast.linear_softmax_cross_entropy(X, W, b, y, backend=name)
    assert got[0] == want[0]
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[2], want[2])


def test_corrupt_csr_input_is_rejected():
    X, W, b, y = _csr_problem()
    bad = X.copy()
    bad.indices = bad.indices.copy()
    bad.indices[0] = W.shape[1] + 3  # a column outside the matrix
    with pytest.raises(ValueError, match=r"indices.*\[0, 30\)"):  # names the valid range
        softmax_fast.linear_softmax_cross_entropy(bad, W, b, y)
    with pytest.raises(ValueError, match="features, expected"):
        softmax_fast.linear_softmax_cross_entropy(X[:, :10], W, b, y)
