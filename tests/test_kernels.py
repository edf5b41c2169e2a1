"""Contract tests of the kernel backends (``softmax_fast.kernels``), run against every backend.

Every importable backend in BACKENDS is checked against the float64 NumPy reference
(``softmax_fast.kernels.reference``), against finite differences, on edge cases of the numeric
policy, for bitwise reproducibility across thread counts, and against each other. A backend
that does not import (e.g. the Cython extension is not built) is skipped with the reason.

Inputs are prepared as the low-level contract says: C-contiguous arrays, float32 or float64
floating inputs, ``y``/``order`` as np.intp, ``sample_weight`` float64 or None, outputs
preallocated in the working dtype.
"""

import importlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from softmax_fast.kernels import reference as ref

BACKENDS = ["reference", "cython", "numba"]
_MODULES = {
    "reference": "softmax_fast.kernels.reference",
    "cython": "softmax_fast.kernels.cython_backend",
    "numba": "softmax_fast.kernels.numba_backend",
}
DTYPES = [np.float64, np.float32]

# Tolerances (relative) against the float64 reference, per working dtype.
# * softmax/ce: float64 1e-12 (the requirement); float32: 1e-6, the reference being applied to
#   the same float32 values upcast, so only the kernel's own rounding (sums in float64, one
#   final rounding to float32 ~6e-8) is measured.
# * linear: the logits are float32 dot products of d terms (error ~ sqrt(d) eps32 |x||w|, about
#   1e-6 of |z| for d ~ 100-800) and the gradient sums n signed terms in float32 with
#   cancellation; 2e-5 of the largest gradient entry is ~300 eps32. float64 keeps 1e-10.
# * sgd: an epoch chains tens of updates, each feeding the next; float32 errors of one step
#   (~1e-6) are carried and compounded, so weights are compared at 1e-4 of their scale.
TOL = {
    np.float64: {"softmax": 1e-12, "ce": 1e-12, "linear": 1e-10, "sgd": 1e-9},
    np.float32: {"softmax": 1e-6, "ce": 1e-6, "linear": 2e-5, "sgd": 1e-4},
}


def load_backend(name):
    """Import a backend module or skip the test saying why it is unavailable."""
    try:
        return importlib.import_module(_MODULES[name])
    except ImportError as exc:
        pytest.skip(f"backend {name!r} not importable: {exc}")


@pytest.fixture(params=BACKENDS)
def backend(request):
    return load_backend(request.param)


@pytest.fixture(params=DTYPES, ids=["float64", "float32"])
def dtype(request):
    return request.param


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def make_logits(n, c, dtype, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal((n, c)) * scale).astype(dtype)
    y = rng.integers(0, c, size=n).astype(np.intp)
    return z, y


def make_linear(n, d, c, dtype, seed=0, uint8=False):
    rng = np.random.default_rng(seed)
    if uint8:
        X = rng.integers(0, 256, size=(n, d), dtype=np.uint8)
    else:
        X = rng.random((n, d)).astype(dtype)
    coef = (rng.standard_normal((c, d)) * 0.1).astype(dtype)
    intercept = (rng.standard_normal(c) * 0.1).astype(dtype)
    y = rng.integers(0, c, size=n).astype(np.intp)
    w = rng.random(n) * 2.0
    return X, coef, intercept, y, w


def assert_close(actual, desired, rtol, scale_atol=True):
    """Elementwise relative check with an absolute floor of rtol * max|desired|.

    The floor keeps the check meaningful for entries that are the difference of nearly
    equal numbers (e.g. p_y - 1 with p_y close to 1) without loosening the others.
    """
    desired = np.asarray(desired, dtype=np.float64)
    atol = rtol * float(np.max(np.abs(desired))) if scale_atol and desired.size else 0.0
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), desired, rtol=rtol,
                               atol=atol)


def run_softmax_ce(mod, z, y, w=None, n_threads=1, out=None):
    out = np.empty_like(z) if out is None else out
    loss = mod.softmax_ce(z, y, w, out, n_threads)
    return loss, out


def run_linear(mod, X, x_scale, coef, intercept, y, w, alpha, n_threads=1):
    gc = np.empty_like(coef)
    gb = np.empty_like(intercept)
    loss = mod.linear_softmax_ce(X, x_scale, coef, intercept, y, w, alpha, gc, gb, n_threads)
    return loss, gc, gb


def run_sgd(mod, X, x_scale, y, w, order, coef, intercept, lr=0.1, alpha=1e-3, momentum=0.0,
            nesterov=False, batch_size=8, n_threads=1):
    coef = coef.copy()
    intercept = intercept.copy()
    vc = np.zeros_like(coef)
    vb = np.zeros_like(intercept)
    loss = mod.sgd_epoch(X, x_scale, y, w, order, coef, intercept, vc, vb, lr, alpha, momentum,
                         nesterov, batch_size, n_threads)
    return loss, coef, intercept, vc, vb


def ref_linear(X, x_scale, coef, intercept, y, w, alpha):
    """The reference on float64 copies (X scaled in float64, as the reference does)."""
    return run_linear(ref, X, x_scale, coef.astype(np.float64), intercept.astype(np.float64),
                      y, w, alpha)


def ref_sgd(X, x_scale, y, w, order, coef, intercept, **kw):
    return run_sgd(ref, X, x_scale, y, w, order, coef.astype(np.float64),
                   intercept.astype(np.float64), **kw)


# --------------------------------------------------------------------------------------
# the reference itself
# --------------------------------------------------------------------------------------
class TestReference:
    def test_uniform_logits_give_log_c(self):
        for c in (1, 2, 10, 1000):
            z = np.full((3, c), 7.5)
            y = np.zeros(3, dtype=np.intp)
            assert ref.cross_entropy(z, y) == pytest.approx(np.log(c), rel=1e-15, abs=1e-15)
            np.testing.assert_allclose(ref.stable_softmax(z), 1.0 / c, rtol=1e-15)

    def test_known_values(self):
        z = np.array([[0.0, np.log(3.0)]])  # softmax = (1/4, 3/4)
        np.testing.assert_allclose(ref.stable_softmax(z), [[0.25, 0.75]], rtol=1e-15)
        assert ref.cross_entropy(z, np.array([0])) == pytest.approx(np.log(4.0), rel=1e-15)
        np.testing.assert_allclose(ref.cross_entropy_grad(z, np.array([0])), [[-0.75, 0.75]],
                                   rtol=1e-15)

    def test_row_shift_invariance(self):
        z, y = make_logits(20, 6, np.float64, seed=1)
        shift = np.random.default_rng(2).standard_normal((20, 1)) * 100
        np.testing.assert_allclose(ref.stable_softmax(z + shift), ref.stable_softmax(z),
                                   rtol=1e-12)
        assert ref.cross_entropy(z + shift, y) == pytest.approx(ref.cross_entropy(z, y),
                                                                rel=1e-12)

    def test_finite_differences(self):
        rng = np.random.default_rng(3)
        X = rng.standard_normal((15, 4))
        W = rng.standard_normal((4, 3))
        b = rng.standard_normal(3)
        y = rng.integers(0, 3, 15)
        w = rng.random(15)
        loss, dW, db = ref.linear_loss_grad(X, W, b, y, 0.7, w)
        h = 1e-6
        for idx in np.ndindex(W.shape):
            Wp, Wm = W.copy(), W.copy()
            Wp[idx] += h
            Wm[idx] -= h
            fd = (ref.linear_loss_grad(X, Wp, b, y, 0.7, w)[0]
                  - ref.linear_loss_grad(X, Wm, b, y, 0.7, w)[0]) / (2 * h)
            assert fd == pytest.approx(dW[idx], rel=1e-6, abs=1e-9)
        for k in range(3):
            bp, bm = b.copy(), b.copy()
            bp[k] += h
            bm[k] -= h
            fd = (ref.linear_loss_grad(X, W, bp, y, 0.7, w)[0]
                  - ref.linear_loss_grad(X, W, bm, y, 0.7, w)[0]) / (2 * h)
            assert fd == pytest.approx(db[k], rel=1e-6, abs=1e-9)


# --------------------------------------------------------------------------------------
# every backend against the reference on random inputs
# --------------------------------------------------------------------------------------
def test_softmax_matches_reference(backend, dtype):
    z, _ = make_logits(64, 13, dtype)
    out = np.empty_like(z)
    backend.softmax(z, out, 1)
    assert out.dtype == dtype
    assert_close(out, ref.stable_softmax(z.astype(np.float64)), TOL[dtype]["softmax"])
    np.testing.assert_allclose(out.sum(axis=1, dtype=np.float64), 1.0,
                               rtol=10 * TOL[dtype]["softmax"])


def test_log_softmax_matches_reference(backend, dtype):
    z, _ = make_logits(64, 13, dtype)
    out = np.empty_like(z)
    backend.log_softmax(z, out, 1)
    assert_close(out, ref.stable_log_softmax(z.astype(np.float64)), TOL[dtype]["softmax"])


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_softmax_ce_matches_reference(backend, dtype, weighted):
    z, y = make_logits(200, 17, dtype, seed=5)
    w = np.random.default_rng(6).random(200) * 3 if weighted else None
    loss, g = run_softmax_ce(backend, z, y, w)
    z64 = z.astype(np.float64)
    assert isinstance(loss, float)
    assert loss == pytest.approx(ref.cross_entropy(z64, y, w), rel=TOL[dtype]["ce"], abs=0)
    assert g.dtype == dtype
    assert_close(g, ref.cross_entropy_grad(z64, y, w), TOL[dtype]["ce"])


@pytest.mark.parametrize("uint8", [False, True], ids=["floatX", "uint8X"])
def test_linear_softmax_ce_matches_reference(backend, dtype, uint8):
    X, coef, intercept, y, w = make_linear(150, 37, 7, dtype, seed=7, uint8=uint8)
    x_scale = 1.0 / 255 if uint8 else 1.0
    loss, gc, gb = run_linear(backend, X, x_scale, coef, intercept, y, w, 0.3)
    rloss, rgc, rgb = ref_linear(X, x_scale, coef, intercept, y, w, 0.3)
    tol = TOL[dtype]["linear"]
    assert loss == pytest.approx(rloss, rel=tol)
    assert gc.dtype == dtype and gb.dtype == dtype
    assert_close(gc, rgc, tol)
    assert_close(gb, rgb, tol)


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)],
                         ids=["plain", "momentum", "nesterov"])
def test_sgd_epoch_matches_reference(backend, dtype, momentum, nesterov):
    # 61 rows at batch 8: the last batch is partial (5 rows)
    X, coef, intercept, y, w = make_linear(61, 29, 5, dtype, seed=8)
    order = ref.epoch_order(61, seed=0, epoch=0)
    kw = dict(lr=0.2, alpha=1e-2, momentum=momentum, nesterov=nesterov, batch_size=8)
    loss, c1, b1, vc1, vb1 = run_sgd(backend, X, 1.0, y, w, order, coef, intercept, **kw)
    rloss, c2, b2, vc2, vb2 = ref_sgd(X, 1.0, y, w, order, coef, intercept, **kw)
    tol = TOL[dtype]["sgd"]
    assert loss == pytest.approx(rloss, rel=tol)
    assert c1.dtype == dtype
    assert_close(c1, c2, tol)
    assert_close(b1, b2, tol)
    if momentum:
        assert_close(vc1, vc2, tol)
        assert_close(vb1, vb2, tol)
        assert np.any(vc1 != 0)
    # the epoch really moved the weights
    assert np.max(np.abs(c1 - coef)) > 1e-3


@pytest.mark.parametrize("batch_size", [1, 7, 16, 1000])
def test_sgd_epoch_batch_sizes(backend, batch_size):
    X, coef, intercept, y, w = make_linear(33, 11, 4, np.float64, seed=9)
    order = ref.epoch_order(33, seed=1, epoch=2)
    loss, c1, b1, _, _ = run_sgd(backend, X, 1.0, y, None, order, coef, intercept,
                                 batch_size=batch_size)
    rloss, c2, b2, _, _ = ref_sgd(X, 1.0, y, None, order, coef, intercept,
                                  batch_size=batch_size)
    assert loss == pytest.approx(rloss, rel=1e-10)
    assert_close(c1, c2, 1e-10)
    assert_close(b1, b2, 1e-10)


def test_sgd_epoch_zero_weight_batch(backend):
    """A batch whose weights sum to zero has no data term, only the L2 step."""
    X, coef, intercept, y, _ = make_linear(24, 9, 3, np.float64, seed=10)
    order = np.arange(24, dtype=np.intp)
    w = np.ones(24)
    w[8:16] = 0.0  # the second batch of 8
    kw = dict(alpha=0.05, batch_size=8, momentum=0.5)
    loss, c1, b1, _, _ = run_sgd(backend, X, 1.0, y, w, order, coef, intercept, **kw)
    rloss, c2, b2, _, _ = ref_sgd(X, 1.0, y, w, order, coef, intercept, **kw)
    assert loss == pytest.approx(rloss, rel=1e-10)
    assert_close(c1, c2, 1e-10)
    assert_close(b1, b2, 1e-10)


# --------------------------------------------------------------------------------------
# finite differences (float64)
# --------------------------------------------------------------------------------------
def test_softmax_ce_gradient_finite_differences(backend):
    z, y = make_logits(6, 5, np.float64, seed=11)
    w = np.random.default_rng(12).random(6)
    _, g = run_softmax_ce(backend, z, y, w)
    h = 1e-6
    for idx in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += h
        zm[idx] -= h
        fd = (run_softmax_ce(backend, zp, y, w)[0] - run_softmax_ce(backend, zm, y, w)[0]) / (2 * h)
        assert fd == pytest.approx(g[idx], rel=1e-6, abs=1e-9)


def test_linear_gradient_finite_differences(backend):
    X, coef, intercept, y, w = make_linear(12, 5, 4, np.float64, seed=13)
    X = X * 2 - 1
    alpha = 0.4
    _, gc, gb = run_linear(backend, X, 1.0, coef, intercept, y, w, alpha)

    def loss(c, b):
        return run_linear(backend, X, 1.0, c, b, y, w, alpha)[0]

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


# --------------------------------------------------------------------------------------
# known values and invariances, through each backend
# --------------------------------------------------------------------------------------
def test_uniform_logits_loss_is_log_c(backend, dtype):
    for c in (2, 10, 257):
        z = np.full((5, c), 3.25, dtype=dtype)
        y = np.arange(5, dtype=np.intp) % c
        loss, g = run_softmax_ce(backend, z, y)
        assert loss == pytest.approx(np.log(c), rel=TOL[dtype]["ce"])
        expected = np.full((5, c), 1.0 / c / 5)
        expected[np.arange(5), y] -= 1.0 / 5
        assert_close(g, expected, TOL[dtype]["ce"])


def test_row_shift_invariance(backend):
    z, y = make_logits(30, 8, np.float64, seed=14)
    shift = np.round(np.random.default_rng(15).standard_normal((30, 1)) * 50)
    l1, g1 = run_softmax_ce(backend, z, y)
    l2, g2 = run_softmax_ce(backend, z + shift, y)
    assert l2 == pytest.approx(l1, rel=1e-12)
    assert_close(g2, g1, 1e-12)


# --------------------------------------------------------------------------------------
# edge cases of the numeric policy
# --------------------------------------------------------------------------------------
def test_extreme_logits(backend, dtype):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [-1e4, -1e4, -1e4], [0.0, 0.0, 1e4]],
                 dtype=dtype)
    y = np.array([1, 0, 2, 2], dtype=np.intp)
    loss, g = run_softmax_ce(backend, z, y)
    assert np.isfinite(loss) and np.all(np.isfinite(g))
    z64 = z.astype(np.float64)
    assert loss == pytest.approx(ref.cross_entropy(z64, y), rel=TOL[dtype]["ce"])
    assert_close(g, ref.cross_entropy_grad(z64, y), TOL[dtype]["ce"])
    for fn, oracle in ((backend.softmax, ref.stable_softmax),
                       (backend.log_softmax, ref.stable_log_softmax)):
        out = np.empty_like(z)
        fn(z, out, 1)
        assert np.all(np.isfinite(out))
        assert_close(out, oracle(z64), TOL[dtype]["softmax"])


def test_rows_of_equal_huge_values(backend, dtype):
    big = np.finfo(dtype).max / 2
    c = 6
    z = np.full((3, c), big, dtype=dtype)
    z[1] = -big
    y = np.array([0, 3, 5], dtype=np.intp)
    loss, g = run_softmax_ce(backend, z, y)
    assert loss == pytest.approx(np.log(c), rel=TOL[dtype]["ce"])
    out = np.empty_like(z)
    backend.softmax(z, out, 1)
    np.testing.assert_allclose(out, 1.0 / c, rtol=TOL[dtype]["softmax"])
    backend.log_softmax(z, out, 1)
    np.testing.assert_allclose(out, -np.log(c), rtol=TOL[dtype]["softmax"])


def test_masked_classes_minus_inf(backend, dtype):
    z, y = make_logits(10, 6, dtype, seed=16)
    mask = np.zeros_like(z, dtype=bool)
    mask[:, 4] = True
    mask[::2, 1] = True
    y[:] = np.where(y == 4, 0, y)
    y[::2] = np.where(y[::2] == 1, 2, y[::2])
    zm = z.copy()
    zm[mask] = -np.inf
    loss, g = run_softmax_ce(backend, zm, y)
    assert np.isfinite(loss)
    assert np.all(g[mask] == 0.0)  # exactly zero
    assert np.all(np.isfinite(g))
    # equal to the loss over the unmasked classes only
    z64 = zm.astype(np.float64)
    assert loss == pytest.approx(ref.cross_entropy(z64, y), rel=TOL[dtype]["ce"])
    assert_close(g, ref.cross_entropy_grad(z64, y), TOL[dtype]["ce"])
    out = np.empty_like(zm)
    backend.softmax(zm, out, 1)
    assert np.all(out[mask] == 0.0)
    backend.log_softmax(zm, out, 1)
    assert np.all(out[mask] == -np.inf) and np.all(np.isfinite(out[~mask]))


def test_pytorch_11752_log_softmax_precision(backend, dtype):
    """(z - max) - logsumexp stays exact where z - (max + logsumexp) rounds (PyTorch #11752)."""
    big = 1e15 if dtype == np.float64 else 1e6  # ulp(big) = 0.125 resp. 0.0625
    z = np.array([[big, big], [big, big - 1.0]], dtype=dtype)
    out = np.empty_like(z)
    backend.log_softmax(z, out, 1)
    expected = ref.stable_log_softmax(z.astype(np.float64))
    # the naive order is off by up to ulp(big)/2, i.e. ~1e-1 relative here
    np.testing.assert_allclose(out, expected, rtol=10 * np.finfo(dtype).eps)
    assert out[0, 0] == pytest.approx(-np.log(2.0), rel=10 * float(np.finfo(dtype).eps))
    loss, _ = run_softmax_ce(backend, z, np.array([0, 1], dtype=np.intp))
    assert loss == pytest.approx(ref.cross_entropy(z.astype(np.float64), [0, 1]),
                                 rel=TOL[dtype]["ce"])


def test_single_class(backend, dtype):
    z, y = make_logits(7, 1, dtype, seed=17)
    loss, g = run_softmax_ce(backend, z, y)
    assert loss == 0.0
    assert np.all(g == 0.0)
    X, coef, intercept, y, w = make_linear(9, 4, 1, dtype, seed=18)
    loss, gc, gb = run_linear(backend, X, 1.0, coef, intercept, y, w, 0.0)
    assert loss == 0.0
    assert np.all(gc == 0.0) and np.all(gb == 0.0)


def test_empty_input_softmax(backend, dtype):
    z = np.empty((0, 5), dtype=dtype)
    out = np.empty_like(z)
    backend.softmax(z, out, 2)
    backend.log_softmax(z, out, 2)
    assert out.shape == (0, 5)


@pytest.mark.parametrize("case", ["nan", "posinf", "neginf_true_class", "all_neginf_row"])
def test_non_finite_policy_softmax_ce(backend, dtype, case):
    z, y = make_logits(8, 5, dtype, seed=19)
    if case == "nan":
        z[3, 2] = np.nan
    elif case == "posinf":
        z[3, 2] = np.inf
    elif case == "neginf_true_class":
        z[3, y[3]] = -np.inf
    else:
        z[3, :] = -np.inf
    loss, _ = run_softmax_ce(backend, z, y)
    assert not np.isfinite(loss)


def test_non_finite_policy_linear_and_sgd(backend, dtype):
    X, coef, intercept, y, w = make_linear(20, 6, 3, dtype, seed=20)
    X[5, 2] = np.nan
    loss, _, _ = run_linear(backend, X, 1.0, coef, intercept, y, w, 0.1)
    assert not np.isfinite(loss)
    coef2 = coef.copy()
    coef2[1, 1] = np.inf
    X2 = np.abs(make_linear(20, 6, 3, dtype, seed=20)[0]) + 0.5
    loss, _, _ = run_linear(backend, X2, 1.0, coef2, intercept, y, None, 0.0)
    assert not np.isfinite(loss)
    order = np.arange(20, dtype=np.intp)
    loss, *_ = run_sgd(backend, X, 1.0, y, None, order, coef, intercept, batch_size=4)
    assert not np.isfinite(loss)


def test_out_aliases_logits(backend, dtype):
    z, y = make_logits(40, 9, dtype, seed=21)
    w = np.random.default_rng(22).random(40)
    loss, g = run_softmax_ce(backend, z, y, w)
    zz = z.copy()
    loss2 = backend.softmax_ce(zz, y, w, zz, 1)
    assert loss2 == pytest.approx(loss, rel=TOL[dtype]["ce"])
    assert_close(zz, g, TOL[dtype]["ce"])
    for fn in (backend.softmax, backend.log_softmax):
        out = np.empty_like(z)
        fn(z, out, 1)
        zz = z.copy()
        fn(zz, zz, 1)
        assert_close(zz, out, TOL[dtype]["softmax"])


def _readonly(*arrays):
    for a in arrays:
        if a is not None:
            a.flags.writeable = False


def test_read_only_inputs(backend, dtype):
    z, y = make_logits(30, 4, dtype, seed=23)
    w = np.random.default_rng(24).random(30)
    expected_loss, expected_g = run_softmax_ce(backend, z.copy(), y.copy(), w.copy())
    _readonly(z, y, w)
    loss, g = run_softmax_ce(backend, z, y, w)
    assert loss == pytest.approx(expected_loss, rel=TOL[dtype]["ce"])
    assert_close(g, expected_g, TOL[dtype]["ce"])
    out = np.empty_like(z)
    backend.softmax(z, out, 1)
    backend.log_softmax(z, out, 1)

    X, coef, intercept, y, w = make_linear(30, 8, 4, dtype, seed=25, uint8=True)
    expected = run_linear(backend, X, 0.01, coef, intercept, y, w, 0.1)
    order = ref.epoch_order(30, seed=0, epoch=0)
    expected_sgd = run_sgd(backend, X, 0.01, y, w, order, coef, intercept)
    _readonly(X, coef, intercept, y, w, order)
    got = run_linear(backend, X, 0.01, coef, intercept, y, w, 0.1)
    assert got[0] == pytest.approx(expected[0], rel=TOL[dtype]["linear"])
    assert_close(got[1], expected[1], TOL[dtype]["linear"])
    got_sgd = run_sgd(backend, X, 0.01, y, w, order, coef, intercept)
    assert got_sgd[0] == pytest.approx(expected_sgd[0], rel=TOL[dtype]["sgd"])
    assert_close(got_sgd[1], expected_sgd[1], TOL[dtype]["sgd"])


def test_sample_weights_with_zeros(backend, dtype):
    """Zero weights remove rows: same as dropping them; integer weights repeat rows."""
    z, y = make_logits(12, 5, dtype, seed=26)
    w = np.array([1, 0, 2, 1, 0, 3, 1, 1, 0, 2, 1, 1], dtype=np.float64)
    loss, g = run_softmax_ce(backend, z, y, w)
    assert loss == pytest.approx(ref.cross_entropy(z.astype(np.float64), y, w),
                                 rel=TOL[dtype]["ce"])
    assert np.all(g[w == 0] == 0.0)
    rep = np.repeat(np.arange(12), w.astype(int))
    loss_rep, _ = run_softmax_ce(backend, np.ascontiguousarray(z[rep]), y[rep])
    assert loss == pytest.approx(loss_rep, rel=10 * TOL[dtype]["ce"])

    X, coef, intercept, y2, _ = make_linear(12, 6, 3, dtype, seed=27)
    got = run_linear(backend, X, 1.0, coef, intercept, y2, w, 0.2)
    keep = w > 0
    sub = run_linear(backend, np.ascontiguousarray(X[keep]), 1.0, coef, intercept, y2[keep],
                     w[keep], 0.2)
    assert got[0] == pytest.approx(sub[0], rel=TOL[dtype]["linear"])
    assert_close(got[1], sub[1], TOL[dtype]["linear"])
    assert_close(got[2], sub[2], TOL[dtype]["linear"])


def test_uint8_x_matches_scaled_float_x(backend, dtype):
    X8, coef, intercept, y, w = make_linear(70, 40, 6, dtype, seed=28, uint8=True)
    scale = 1.0 / 255
    Xf = (X8.astype(np.float64) * scale).astype(dtype)
    tol = TOL[dtype]["linear"]
    a = run_linear(backend, X8, scale, coef, intercept, y, w, 0.1)
    b = run_linear(backend, Xf, 1.0, coef, intercept, y, w, 0.1)
    assert a[0] == pytest.approx(b[0], rel=tol)
    assert_close(a[1], b[1], tol)
    assert_close(a[2], b[2], tol)
    order = ref.epoch_order(70, seed=3, epoch=0)
    a = run_sgd(backend, X8, scale, y, w, order, coef, intercept, momentum=0.9, batch_size=16)
    b = run_sgd(backend, Xf, 1.0, y, w, order, coef, intercept, momentum=0.9, batch_size=16)
    assert a[0] == pytest.approx(b[0], rel=TOL[dtype]["sgd"])
    assert_close(a[1], b[1], TOL[dtype]["sgd"])


def test_large_class_count(backend):
    """c = 32,000 with small n and d: the chunked path matches the reference."""
    X, coef, intercept, y, w = make_linear(5, 8, 32_000, np.float64, seed=29)
    got = run_linear(backend, X, 1.0, coef, intercept, y, w, 0.01)
    exp = ref_linear(X, 1.0, coef, intercept, y, w, 0.01)
    assert got[0] == pytest.approx(exp[0], rel=1e-10)
    assert_close(got[1], exp[1], 1e-10)
    assert_close(got[2], exp[2], 1e-10)
    z, y = make_logits(4, 32_000, np.float32, seed=30)
    loss, g = run_softmax_ce(backend, z, y)
    assert loss == pytest.approx(ref.cross_entropy(z.astype(np.float64), y), rel=1e-6)


# --------------------------------------------------------------------------------------
# reproducibility across thread counts
# --------------------------------------------------------------------------------------
THREADS = [1, 2, 4]


def test_softmax_ce_bitwise_across_threads(backend, dtype):
    z, y = make_logits(5000, 37, dtype, seed=31)
    w = np.random.default_rng(32).random(5000)
    results = [run_softmax_ce(backend, z, y, w, n_threads=t) for t in THREADS]
    for loss, g in results[1:]:
        assert loss == results[0][0]
        np.testing.assert_array_equal(g, results[0][1])


@pytest.mark.parametrize("uint8", [False, True], ids=["floatX", "uint8X"])
def test_linear_bitwise_across_threads(backend, dtype, uint8):
    X, coef, intercept, y, w = make_linear(700, 300, 10, dtype, seed=33, uint8=uint8)
    scale = 1.0 / 255 if uint8 else 1.0
    results = [run_linear(backend, X, scale, coef, intercept, y, w, 0.01, n_threads=t)
               for t in THREADS]
    for loss, gc, gb in results[1:]:
        assert loss == results[0][0]
        np.testing.assert_array_equal(gc, results[0][1])
        np.testing.assert_array_equal(gb, results[0][2])


@pytest.mark.parametrize("batch_size", [32, 256])
def test_sgd_bitwise_across_threads(backend, dtype, batch_size):
    X, coef, intercept, y, w = make_linear(600, 784, 10, dtype, seed=34, uint8=True)
    order = ref.epoch_order(600, seed=0, epoch=0)
    if backend is ref:
        X, order = X[:200], order[order < 200]  # the reference is slow; it ignores threads
    results = [run_sgd(backend, X, 1 / 255, y, w, order, coef, intercept, momentum=0.9,
                       batch_size=batch_size, n_threads=t) for t in THREADS]
    for res in results[1:]:
        assert res[0] == results[0][0]
        for got, first in zip(res[1:], results[0][1:], strict=True):
            np.testing.assert_array_equal(got, first)


# --------------------------------------------------------------------------------------
# the compiled backends against each other
# --------------------------------------------------------------------------------------
def test_cython_vs_numba(dtype):
    cy = load_backend("cython")
    nb = load_backend("numba")
    z, y = make_logits(300, 12, dtype, seed=35)
    w = np.random.default_rng(36).random(300)
    (l1, g1), (l2, g2) = run_softmax_ce(cy, z, y, w), run_softmax_ce(nb, z, y, w)
    assert l1 == pytest.approx(l2, rel=2 * TOL[dtype]["ce"])
    assert_close(g1, g2, 2 * TOL[dtype]["ce"])
    for uint8 in (False, True):
        X, coef, intercept, y, w = make_linear(130, 50, 7, dtype, seed=37, uint8=uint8)
        scale = 1 / 255 if uint8 else 1.0
        a = run_linear(cy, X, scale, coef, intercept, y, w, 0.1)
        b = run_linear(nb, X, scale, coef, intercept, y, w, 0.1)
        assert a[0] == pytest.approx(b[0], rel=2 * TOL[dtype]["linear"])
        assert_close(a[1], b[1], 2 * TOL[dtype]["linear"])
        assert_close(a[2], b[2], 2 * TOL[dtype]["linear"])
        order = ref.epoch_order(130, seed=4, epoch=1)
        a = run_sgd(cy, X, scale, y, w, order, coef, intercept, momentum=0.9, nesterov=True)
        b = run_sgd(nb, X, scale, y, w, order, coef, intercept, momentum=0.9, nesterov=True)
        assert a[0] == pytest.approx(b[0], rel=2 * TOL[dtype]["sgd"])
        assert_close(a[1], b[1], 2 * TOL[dtype]["sgd"])
        assert_close(a[2], b[2], 2 * TOL[dtype]["sgd"])


# --------------------------------------------------------------------------------------
# property tests over shapes and dtypes
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BACKENDS)
@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 50), c=st.integers(1, 40), use64=st.booleans(),
       weighted=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_property_softmax_ce(name, n, c, use64, weighted, seed):
    mod = load_backend(name)
    dtype = np.float64 if use64 else np.float32
    z, y = make_logits(n, c, dtype, seed=seed, scale=5.0)
    w = np.random.default_rng(seed).random(n) + 0.1 if weighted else None
    loss, g = run_softmax_ce(mod, z, y, w)
    z64 = z.astype(np.float64)
    assert loss >= 0.0
    assert loss == pytest.approx(ref.cross_entropy(z64, y, w), rel=TOL[dtype]["ce"], abs=1e-15)
    assert_close(g, ref.cross_entropy_grad(z64, y, w), TOL[dtype]["ce"])
    # each gradient row sums to zero
    np.testing.assert_allclose(g.sum(axis=1, dtype=np.float64), 0.0,
                               atol=c * TOL[dtype]["ce"])
    p = np.empty_like(z)
    mod.softmax(z, p, 1)
    lp = np.empty_like(z)
    mod.log_softmax(z, lp, 1)
    assert np.all(p >= 0) and np.all(lp <= 0)
    assert_close(np.exp(lp.astype(np.float64)), p, 10 * TOL[dtype]["softmax"])


@pytest.mark.parametrize("name", BACKENDS)
@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 50), c=st.integers(1, 40), d=st.integers(1, 40),
       use64=st.booleans(), uint8=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_property_linear(name, n, c, d, use64, uint8, seed):
    mod = load_backend(name)
    dtype = np.float64 if use64 else np.float32
    X, coef, intercept, y, w = make_linear(n, d, c, dtype, seed=seed, uint8=uint8)
    scale = 1 / 255 if uint8 else 1.0
    got = run_linear(mod, X, scale, coef, intercept, y, w, 0.05)
    exp = ref_linear(X, scale, coef, intercept, y, w, 0.05)
    tol = TOL[dtype]["linear"]
    assert got[0] == pytest.approx(exp[0], rel=tol, abs=1e-12)
    assert_close(got[1], exp[1], tol)
    assert_close(got[2], exp[2], tol)
