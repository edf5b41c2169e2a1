"""Contract tests of the ``dense`` kernel family (:class:`~softmax_fast.kernels.contract.DenseKernels`).

The implementations come from the backend registry (fixtures in ``conftest.py``); one that
does not import fails its tests. Three groups:

* ``TestReference``: the float64 oracle (``softmax_fast.kernels.reference``) against known
  values, finite differences and the SGD update rules written out by hand;
* ``fast_dense_backend`` tests: every other implementation against the oracle, against
  itself across thread counts and against each other (the oracle is never compared with
  itself);
* ``dense_backend`` tests: every implementation, the oracle included, against known values,
  invariances (row shifts, aliasing, read-only inputs, dropped/repeated rows), finite
  differences of its own loss and the numeric policy.

Inputs are prepared as the contract says: C-contiguous arrays, float32 or float64 floating
inputs, ``y``/``order`` as np.intp, ``sample_weight`` float64 or None, outputs preallocated in
the working dtype. Weights are laid out (n_classes, n_features).
"""

import itertools
import math

import numpy as np
import pytest
from conftest import FAST_DENSE, assert_close, load_kernels
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from softmax_fast._training.sampling import epoch_order
from softmax_fast.kernels import reference as ref
from softmax_fast.kernels.contract import EXP_FLUSH

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

#: hypothesis: the fixtures only hand over a kernel module (no state to reset per example)
PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


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
    """The oracle on float64 copies (X scaled in float64, as the reference does)."""
    return run_linear(ref, X, x_scale, coef.astype(np.float64), intercept.astype(np.float64),
                      y, w, alpha)


def ref_sgd(X, x_scale, y, w, order, coef, intercept, **kw):
    return run_sgd(ref, X, x_scale, y, w, order, coef.astype(np.float64),
                   intercept.astype(np.float64), **kw)


# --------------------------------------------------------------------------------------
# the oracle itself
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
        """linear_loss_grad: W (n_classes, n_features) in, dW of the same layout out."""
        rng = np.random.default_rng(3)
        X = rng.standard_normal((15, 4))
        W = rng.standard_normal((3, 4))
        b = rng.standard_normal(3)
        y = rng.integers(0, 3, 15)
        w = rng.random(15)
        loss, dW, db = ref.linear_loss_grad(X, W, b, y, 0.7, w)
        assert dW.shape == (3, 4) and db.shape == (3,)
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

    @pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)],
                             ids=["plain", "momentum", "nesterov"])
    def test_sgd_update_rules_by_hand(self, momentum, nesterov):
        """Two one-batch epochs against the three update rules written out."""
        rng = np.random.default_rng(4)
        X = rng.standard_normal((6, 3))
        y = np.array([0, 1, 2, 1, 0, 1], dtype=np.intp)
        W0, b0 = rng.standard_normal((3, 3)), rng.standard_normal(3)
        lr, alpha, mu = 0.3, 0.1, momentum
        W, b = W0.copy(), b0.copy()
        vW, vb = np.zeros_like(W), np.zeros_like(b)
        eW, eb = W0.copy(), b0.copy()
        evW, evb = np.zeros_like(W), np.zeros_like(b)
        for _ in range(2):
            want_loss, gW, gb = ref.linear_loss_grad(X, eW, eb, y)
            gW = gW + alpha * eW
            if mu == 0.0:
                eW, eb = eW - lr * gW, eb - lr * gb
            else:
                evW, evb = mu * evW - lr * gW, mu * evb - lr * gb
                if nesterov:
                    eW, eb = eW + mu * evW - lr * gW, eb + mu * evb - lr * gb
                else:
                    eW, eb = eW + evW, eb + evb
            loss = ref.sgd_epoch_reference(X, y, W, b, np.arange(6), lr=lr, alpha=alpha,
                                           batch_size=6, momentum=mu, nesterov=nesterov,
                                           velocity_W=vW, velocity_b=vb)
            assert loss == pytest.approx(want_loss, rel=1e-14)
            np.testing.assert_allclose(W, eW, rtol=1e-14, atol=1e-15)
            np.testing.assert_allclose(b, eb, rtol=1e-14, atol=1e-15)


# --------------------------------------------------------------------------------------
# every fast implementation against the oracle on random inputs
# --------------------------------------------------------------------------------------
# 13 and 300 classes: the Numba kernel's flat blocks and its long rows (SOFTMAX_ROWWISE_CLASSES)
ROW_CLASSES = [13, 300]


@pytest.mark.parametrize("n_classes", ROW_CLASSES)
def test_softmax_matches_reference(fast_dense_backend, dtype, n_classes):
    z, _ = make_logits(64, n_classes, dtype)
    out = np.empty_like(z)
    fast_dense_backend.softmax(z, out, 1)
    assert out.dtype == dtype
    assert_close(out, ref.stable_softmax(z.astype(np.float64)), TOL[dtype]["softmax"])
    np.testing.assert_allclose(out.sum(axis=1, dtype=np.float64), 1.0,
                               rtol=10 * TOL[dtype]["softmax"])


def test_tiny_probabilities_are_zero_never_subnormal(fast_dense_backend, dtype):
    # A row whose logits fall 0 .. 800 below its max (plus -inf), as at weak regularization:
    # exp of anything below EXP_FLUSH is exactly 0 (a subnormal costs a microcode assist per
    # operation: 5x slower softmax-CE), everything above matches the reference, and neither
    # the probabilities nor the gradient hold a subnormal.
    span = 800.0 if dtype == np.float64 else 110.0
    row = np.concatenate([[0.0], -np.linspace(0.0, span, 4001)[1:], [-np.inf]]).astype(dtype)
    z = np.tile(row, (3, 1))
    y = np.array([0, 5, 9], dtype=np.intp)
    kept = row >= EXP_FLUSH[np.dtype(dtype).name]
    tiny = np.finfo(dtype).tiny
    out = np.empty_like(z)
    fast_dense_backend.softmax(z, out, 1)
    want = ref.stable_softmax(z.astype(np.float64))
    assert_close(out[:, kept], want[:, kept], TOL[dtype]["softmax"])
    assert np.all(out[:, ~kept] == 0.0)
    grad = np.empty_like(z)
    loss = fast_dense_backend.softmax_ce(z, y, None, grad, 1)
    want_loss = ref.cross_entropy(z.astype(np.float64), y)
    assert loss == pytest.approx(want_loss, rel=TOL[dtype]["ce"])
    for values in (out, grad):
        assert not np.any((values != 0) & (np.abs(values) < tiny))


@pytest.mark.parametrize("n_classes", ROW_CLASSES)
def test_log_softmax_matches_reference(fast_dense_backend, dtype, n_classes):
    z, _ = make_logits(64, n_classes, dtype)
    out = np.empty_like(z)
    fast_dense_backend.log_softmax(z, out, 1)
    assert_close(out, ref.stable_log_softmax(z.astype(np.float64)), TOL[dtype]["softmax"])


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_softmax_ce_matches_reference(fast_dense_backend, dtype, weighted):
    z, y = make_logits(200, 17, dtype, seed=5)
    w = np.random.default_rng(6).random(200) * 3 if weighted else None
    loss, g = run_softmax_ce(fast_dense_backend, z, y, w)
    z64 = z.astype(np.float64)
    assert isinstance(loss, float)
    assert loss == pytest.approx(ref.cross_entropy(z64, y, w), rel=TOL[dtype]["ce"], abs=0)
    assert g.dtype == dtype
    assert_close(g, ref.cross_entropy_grad(z64, y, w), TOL[dtype]["ce"])


@pytest.mark.parametrize("uint8", [False, True], ids=["floatX", "uint8X"])
def test_linear_softmax_ce_matches_reference(fast_dense_backend, dtype, uint8):
    X, coef, intercept, y, w = make_linear(150, 37, 7, dtype, seed=7, uint8=uint8)
    x_scale = 1.0 / 255 if uint8 else 1.0
    loss, gc, gb = run_linear(fast_dense_backend, X, x_scale, coef, intercept, y, w, 0.3)
    rloss, rgc, rgb = ref_linear(X, x_scale, coef, intercept, y, w, 0.3)
    tol = TOL[dtype]["linear"]
    assert loss == pytest.approx(rloss, rel=tol)
    assert gc.shape == (7, 37) and gc.dtype == dtype and gb.dtype == dtype
    assert_close(gc, rgc, tol)
    assert_close(gb, rgb, tol)


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)],
                         ids=["plain", "momentum", "nesterov"])
def test_sgd_epoch_matches_reference(fast_dense_backend, dtype, momentum, nesterov):
    # 61 rows at batch 8: the last batch is partial (5 rows)
    X, coef, intercept, y, w = make_linear(61, 29, 5, dtype, seed=8)
    order = epoch_order(61, seed=0, epoch=0)
    kw = dict(lr=0.2, alpha=1e-2, momentum=momentum, nesterov=nesterov, batch_size=8)
    loss, c1, b1, vc1, vb1 = run_sgd(fast_dense_backend, X, 1.0, y, w, order, coef, intercept,
                                     **kw)
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
def test_sgd_epoch_batch_sizes_match_reference(fast_dense_backend, batch_size):
    X, coef, intercept, y, w = make_linear(33, 11, 4, np.float64, seed=9)
    order = epoch_order(33, seed=1, epoch=2)
    loss, c1, b1, _, _ = run_sgd(fast_dense_backend, X, 1.0, y, None, order, coef, intercept,
                                 batch_size=batch_size)
    rloss, c2, b2, _, _ = ref_sgd(X, 1.0, y, None, order, coef, intercept,
                                  batch_size=batch_size)
    assert loss == pytest.approx(rloss, rel=1e-10)
    assert_close(c1, c2, 1e-10)
    assert_close(b1, b2, 1e-10)


def test_sgd_epoch_zero_weight_batch_matches_reference(fast_dense_backend):
    """A batch whose weights sum to zero has no data term, only the L2 step."""
    X, coef, intercept, y, _ = make_linear(24, 9, 3, np.float64, seed=10)
    order = np.arange(24, dtype=np.intp)
    w = np.ones(24)
    w[8:16] = 0.0  # the second batch of 8
    kw = dict(alpha=0.05, batch_size=8, momentum=0.5)
    loss, c1, b1, _, _ = run_sgd(fast_dense_backend, X, 1.0, y, w, order, coef, intercept, **kw)
    rloss, c2, b2, _, _ = ref_sgd(X, 1.0, y, w, order, coef, intercept, **kw)
    assert loss == pytest.approx(rloss, rel=1e-10)
    assert_close(c1, c2, 1e-10)
    assert_close(b1, b2, 1e-10)


@pytest.mark.parametrize("n_classes", [1, 2])
def test_sgd_epoch_with_one_or_two_classes_matches_reference(fast_dense_backend, n_classes):
    """The fewest classes a kernel accepts: per-row scratch sized by the classes alone would
    be too short for a batch's rows at one class (the Numba epoch once wrote past it)."""
    X, coef, intercept, y, w = make_linear(45, 13, n_classes, np.float64, seed=12)
    order = epoch_order(45, seed=2, epoch=0)
    kw = dict(alpha=1e-2, batch_size=32)
    loss, c1, b1, _, _ = run_sgd(fast_dense_backend, X, 1.0, y, w, order, coef, intercept, **kw)
    rloss, c2, b2, _, _ = ref_sgd(X, 1.0, y, w, order, coef, intercept, **kw)
    assert loss == pytest.approx(rloss, rel=1e-10, abs=1e-12)
    assert_close(c1, c2, 1e-10)
    assert_close(b1, b2, 1e-10)


def test_large_class_count_matches_reference(fast_dense_backend):
    """c = 32,000 with small n and d: the chunked path matches the reference."""
    X, coef, intercept, y, w = make_linear(5, 8, 32_000, np.float64, seed=29)
    got = run_linear(fast_dense_backend, X, 1.0, coef, intercept, y, w, 0.01)
    exp = ref_linear(X, 1.0, coef, intercept, y, w, 0.01)
    assert got[0] == pytest.approx(exp[0], rel=1e-10)
    assert_close(got[1], exp[1], 1e-10)
    assert_close(got[2], exp[2], 1e-10)
    z, y = make_logits(4, 32_000, np.float32, seed=30)
    loss, g = run_softmax_ce(fast_dense_backend, z, y)
    assert loss == pytest.approx(ref.cross_entropy(z.astype(np.float64), y), rel=1e-6)


# --------------------------------------------------------------------------------------
# finite differences of each implementation's own loss (float64)
# --------------------------------------------------------------------------------------
def test_softmax_ce_gradient_finite_differences(dense_backend):
    z, y = make_logits(6, 5, np.float64, seed=11)
    w = np.random.default_rng(12).random(6)
    _, g = run_softmax_ce(dense_backend, z, y, w)
    h = 1e-6
    for idx in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += h
        zm[idx] -= h
        fd = (run_softmax_ce(dense_backend, zp, y, w)[0]
              - run_softmax_ce(dense_backend, zm, y, w)[0]) / (2 * h)
        assert fd == pytest.approx(g[idx], rel=1e-6, abs=1e-9)


def test_linear_gradient_finite_differences(dense_backend):
    X, coef, intercept, y, w = make_linear(12, 5, 4, np.float64, seed=13)
    X = X * 2 - 1
    alpha = 0.4
    _, gc, gb = run_linear(dense_backend, X, 1.0, coef, intercept, y, w, alpha)

    def loss(c, b):
        return run_linear(dense_backend, X, 1.0, c, b, y, w, alpha)[0]

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
# known values and invariances, through each implementation
# --------------------------------------------------------------------------------------
def test_uniform_logits_loss_is_log_c(dense_backend, dtype):
    for c in (2, 10, 257):
        z = np.full((5, c), 3.25, dtype=dtype)
        y = np.arange(5, dtype=np.intp) % c
        loss, g = run_softmax_ce(dense_backend, z, y)
        assert loss == pytest.approx(np.log(c), rel=TOL[dtype]["ce"])
        expected = np.full((5, c), 1.0 / c / 5)
        expected[np.arange(5), y] -= 1.0 / 5
        assert_close(g, expected, TOL[dtype]["ce"])


def test_row_shift_invariance(dense_backend):
    z, y = make_logits(30, 8, np.float64, seed=14)
    shift = np.round(np.random.default_rng(15).standard_normal((30, 1)) * 50)
    l1, g1 = run_softmax_ce(dense_backend, z, y)
    l2, g2 = run_softmax_ce(dense_backend, z + shift, y)
    assert l2 == pytest.approx(l1, rel=1e-12)
    assert_close(g2, g1, 1e-12)


# --------------------------------------------------------------------------------------
# edge cases of the numeric policy (known values: no oracle needed)
# --------------------------------------------------------------------------------------
def test_extreme_logits(dense_backend, dtype):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [-1e4, -1e4, -1e4], [0.0, 0.0, 1e4]],
                 dtype=dtype)
    y = np.array([1, 0, 2, 2], dtype=np.intp)
    # exp(-1e4) is 0 in both dtypes, so every row is exactly one of these
    ln2, ln3 = math.log(2.0), math.log(3.0)
    want_p = [[1, 0, 0], [0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3], [0, 0, 1]]
    want_lp = [[0.0, -2e4, -1e4], [-2e4 - ln2, -ln2, -ln2], [-ln3] * 3, [-1e4, -1e4, 0.0]]
    want_loss = (2e4 + (2e4 + ln2) + ln3 + 0.0) / 4
    want_g = (np.array(want_p) - np.eye(3)[y]) / 4
    loss, g = run_softmax_ce(dense_backend, z, y)
    assert np.isfinite(loss) and np.all(np.isfinite(g))
    assert loss == pytest.approx(want_loss, rel=TOL[dtype]["ce"])
    assert_close(g, want_g, TOL[dtype]["ce"])
    out = np.empty_like(z)
    dense_backend.softmax(z, out, 1)
    assert np.all(np.isfinite(out))
    assert_close(out, want_p, TOL[dtype]["softmax"])
    dense_backend.log_softmax(z, out, 1)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, want_lp, rtol=TOL[dtype]["softmax"], atol=1e-12)


def test_rows_of_equal_huge_values(dense_backend, dtype):
    big = np.finfo(dtype).max / 2
    c = 6
    z = np.full((3, c), big, dtype=dtype)
    z[1] = -big
    y = np.array([0, 3, 5], dtype=np.intp)
    loss, g = run_softmax_ce(dense_backend, z, y)
    assert loss == pytest.approx(np.log(c), rel=TOL[dtype]["ce"])
    out = np.empty_like(z)
    dense_backend.softmax(z, out, 1)
    np.testing.assert_allclose(out, 1.0 / c, rtol=TOL[dtype]["softmax"])
    dense_backend.log_softmax(z, out, 1)
    np.testing.assert_allclose(out, -np.log(c), rtol=TOL[dtype]["softmax"])


def test_masked_classes_minus_inf(dense_backend, dtype):
    """-inf classes: probability and gradient exactly 0, loss of the remaining classes."""
    z, y = make_logits(10, 6, dtype, seed=16)
    mask = np.zeros_like(z, dtype=bool)
    mask[:, 4] = True
    mask[::2, 1] = True
    y[:] = np.where(y == 4, 0, y)
    y[::2] = np.where(y[::2] == 1, 2, y[::2])
    zm = z.copy()
    zm[mask] = -np.inf
    loss, g = run_softmax_ce(dense_backend, zm, y)
    assert np.isfinite(loss)
    assert np.all(g[mask] == 0.0)  # exactly zero
    assert np.all(np.isfinite(g))
    # the same as the loss of each row restricted to its unmasked classes (no -inf there)
    n = len(y)
    want_loss, want_g = 0.0, np.zeros((n, 6))
    for i in range(n):
        keep = np.flatnonzero(~mask[i])
        zi = z[i, keep].astype(np.float64)[None, :]
        yi = np.array([np.searchsorted(keep, y[i])])
        want_loss += ref.cross_entropy(zi, yi) / n
        want_g[i, keep] = ref.cross_entropy_grad(zi, yi)[0] / n
    assert loss == pytest.approx(want_loss, rel=TOL[dtype]["ce"])
    assert_close(g, want_g, TOL[dtype]["ce"])
    out = np.empty_like(zm)
    dense_backend.softmax(zm, out, 1)
    assert np.all(out[mask] == 0.0)
    dense_backend.log_softmax(zm, out, 1)
    assert np.all(out[mask] == -np.inf) and np.all(np.isfinite(out[~mask]))


def test_pytorch_11752_log_softmax_precision(dense_backend, dtype):
    """(z - max) - logsumexp stays exact where z - (max + logsumexp) rounds (PyTorch #11752)."""
    big = 1e15 if dtype == np.float64 else 1e6  # ulp(big) = 0.125 resp. 0.0625
    z = np.array([[big, big], [big, big - 1.0]], dtype=dtype)
    out = np.empty_like(z)
    dense_backend.log_softmax(z, out, 1)
    lse1 = math.log1p(math.exp(-1.0))
    expected = np.array([[-math.log(2.0)] * 2, [-lse1, -1.0 - lse1]])
    # the naive order is off by up to ulp(big)/2, i.e. ~1e-1 relative here
    np.testing.assert_allclose(out, expected, rtol=10 * np.finfo(dtype).eps)
    loss, _ = run_softmax_ce(dense_backend, z, np.array([0, 1], dtype=np.intp))
    assert loss == pytest.approx((math.log(2.0) + 1.0 + lse1) / 2, rel=TOL[dtype]["ce"])


def test_single_class(dense_backend, dtype):
    z, y = make_logits(7, 1, dtype, seed=17)
    loss, g = run_softmax_ce(dense_backend, z, y)
    assert loss == 0.0
    assert np.all(g == 0.0)
    X, coef, intercept, y, w = make_linear(9, 4, 1, dtype, seed=18)
    loss, gc, gb = run_linear(dense_backend, X, 1.0, coef, intercept, y, w, 0.0)
    assert loss == 0.0
    assert np.all(gc == 0.0) and np.all(gb == 0.0)


def test_empty_input_softmax(dense_backend, dtype):
    z = np.empty((0, 5), dtype=dtype)
    out = np.empty_like(z)
    dense_backend.softmax(z, out, 2)
    dense_backend.log_softmax(z, out, 2)
    assert out.shape == (0, 5)


@pytest.mark.parametrize("case", ["nan", "posinf", "neginf_true_class", "all_neginf_row"])
def test_non_finite_policy_softmax_ce(dense_backend, dtype, case):
    z, y = make_logits(8, 5, dtype, seed=19)
    if case == "nan":
        z[3, 2] = np.nan
    elif case == "posinf":
        z[3, 2] = np.inf
    elif case == "neginf_true_class":
        z[3, y[3]] = -np.inf
    else:
        z[3, :] = -np.inf
    loss, _ = run_softmax_ce(dense_backend, z, y)
    assert not np.isfinite(loss)


def test_non_finite_policy_linear_and_sgd(dense_backend, dtype):
    X, coef, intercept, y, w = make_linear(20, 6, 3, dtype, seed=20)
    X[5, 2] = np.nan
    loss, _, _ = run_linear(dense_backend, X, 1.0, coef, intercept, y, w, 0.1)
    assert not np.isfinite(loss)
    coef2 = coef.copy()
    coef2[1, 1] = np.inf
    X2 = np.abs(make_linear(20, 6, 3, dtype, seed=20)[0]) + 0.5
    loss, _, _ = run_linear(dense_backend, X2, 1.0, coef2, intercept, y, None, 0.0)
    assert not np.isfinite(loss)
    order = np.arange(20, dtype=np.intp)
    loss, *_ = run_sgd(dense_backend, X, 1.0, y, None, order, coef, intercept, batch_size=4)
    assert not np.isfinite(loss)


def test_out_aliases_logits(dense_backend, dtype):
    z, y = make_logits(40, 9, dtype, seed=21)
    w = np.random.default_rng(22).random(40)
    loss, g = run_softmax_ce(dense_backend, z, y, w)
    zz = z.copy()
    loss2 = dense_backend.softmax_ce(zz, y, w, zz, 1)
    assert loss2 == pytest.approx(loss, rel=TOL[dtype]["ce"])
    assert_close(zz, g, TOL[dtype]["ce"])
    for fn in (dense_backend.softmax, dense_backend.log_softmax):
        out = np.empty_like(z)
        fn(z, out, 1)
        zz = z.copy()
        fn(zz, zz, 1)
        assert_close(zz, out, TOL[dtype]["softmax"])


def _readonly(*arrays):
    for a in arrays:
        if a is not None:
            a.flags.writeable = False


def test_read_only_inputs(dense_backend, dtype):
    z, y = make_logits(30, 4, dtype, seed=23)
    w = np.random.default_rng(24).random(30)
    expected_loss, expected_g = run_softmax_ce(dense_backend, z.copy(), y.copy(), w.copy())
    _readonly(z, y, w)
    loss, g = run_softmax_ce(dense_backend, z, y, w)
    assert loss == pytest.approx(expected_loss, rel=TOL[dtype]["ce"])
    assert_close(g, expected_g, TOL[dtype]["ce"])
    out = np.empty_like(z)
    dense_backend.softmax(z, out, 1)
    dense_backend.log_softmax(z, out, 1)

    X, coef, intercept, y, w = make_linear(30, 8, 4, dtype, seed=25, uint8=True)
    expected = run_linear(dense_backend, X, 0.01, coef, intercept, y, w, 0.1)
    order = epoch_order(30, seed=0, epoch=0)
    expected_sgd = run_sgd(dense_backend, X, 0.01, y, w, order, coef, intercept)
    _readonly(X, coef, intercept, y, w, order)
    got = run_linear(dense_backend, X, 0.01, coef, intercept, y, w, 0.1)
    assert got[0] == pytest.approx(expected[0], rel=TOL[dtype]["linear"])
    assert_close(got[1], expected[1], TOL[dtype]["linear"])
    got_sgd = run_sgd(dense_backend, X, 0.01, y, w, order, coef, intercept)
    assert got_sgd[0] == pytest.approx(expected_sgd[0], rel=TOL[dtype]["sgd"])
    assert_close(got_sgd[1], expected_sgd[1], TOL[dtype]["sgd"])


def test_sample_weights_with_zeros(dense_backend, dtype):
    """Zero weights remove rows: same as dropping them; integer weights repeat rows."""
    z, y = make_logits(12, 5, dtype, seed=26)
    w = np.array([1, 0, 2, 1, 0, 3, 1, 1, 0, 2, 1, 1], dtype=np.float64)
    loss, g = run_softmax_ce(dense_backend, z, y, w)
    assert np.all(g[w == 0] == 0.0)
    keep = w > 0
    loss_kept, g_kept = run_softmax_ce(dense_backend, np.ascontiguousarray(z[keep]), y[keep],
                                       w[keep])
    assert loss == pytest.approx(loss_kept, rel=10 * TOL[dtype]["ce"])
    assert_close(g[keep], g_kept, 10 * TOL[dtype]["ce"])
    rep = np.repeat(np.arange(12), w.astype(int))
    loss_rep, _ = run_softmax_ce(dense_backend, np.ascontiguousarray(z[rep]), y[rep])
    assert loss == pytest.approx(loss_rep, rel=10 * TOL[dtype]["ce"])

    X, coef, intercept, y2, _ = make_linear(12, 6, 3, dtype, seed=27)
    got = run_linear(dense_backend, X, 1.0, coef, intercept, y2, w, 0.2)
    sub = run_linear(dense_backend, np.ascontiguousarray(X[keep]), 1.0, coef, intercept,
                     y2[keep], w[keep], 0.2)
    assert got[0] == pytest.approx(sub[0], rel=TOL[dtype]["linear"])
    assert_close(got[1], sub[1], TOL[dtype]["linear"])
    assert_close(got[2], sub[2], TOL[dtype]["linear"])


def test_uint8_x_matches_scaled_float_x(dense_backend, dtype):
    X8, coef, intercept, y, w = make_linear(70, 40, 6, dtype, seed=28, uint8=True)
    scale = 1.0 / 255
    Xf = (X8.astype(np.float64) * scale).astype(dtype)
    tol = TOL[dtype]["linear"]
    a = run_linear(dense_backend, X8, scale, coef, intercept, y, w, 0.1)
    b = run_linear(dense_backend, Xf, 1.0, coef, intercept, y, w, 0.1)
    assert a[0] == pytest.approx(b[0], rel=tol)
    assert_close(a[1], b[1], tol)
    assert_close(a[2], b[2], tol)
    order = epoch_order(70, seed=3, epoch=0)
    a = run_sgd(dense_backend, X8, scale, y, w, order, coef, intercept, momentum=0.9,
                batch_size=16)
    b = run_sgd(dense_backend, Xf, 1.0, y, w, order, coef, intercept, momentum=0.9,
                batch_size=16)
    assert a[0] == pytest.approx(b[0], rel=TOL[dtype]["sgd"])
    assert_close(a[1], b[1], TOL[dtype]["sgd"])


# --------------------------------------------------------------------------------------
# reproducibility across thread counts (the oracle ignores n_threads: not tested)
# --------------------------------------------------------------------------------------
THREADS = [1, 2, 4]


def test_softmax_ce_bitwise_across_threads(fast_dense_backend, dtype):
    z, y = make_logits(5000, 37, dtype, seed=31)
    w = np.random.default_rng(32).random(5000)
    results = [run_softmax_ce(fast_dense_backend, z, y, w, n_threads=t) for t in THREADS]
    for loss, g in results[1:]:
        assert loss == results[0][0]
        np.testing.assert_array_equal(g, results[0][1])


@pytest.mark.parametrize("uint8", [False, True], ids=["floatX", "uint8X"])
def test_linear_bitwise_across_threads(fast_dense_backend, dtype, uint8):
    X, coef, intercept, y, w = make_linear(700, 300, 10, dtype, seed=33, uint8=uint8)
    scale = 1.0 / 255 if uint8 else 1.0
    results = [run_linear(fast_dense_backend, X, scale, coef, intercept, y, w, 0.01,
                          n_threads=t) for t in THREADS]
    for loss, gc, gb in results[1:]:
        assert loss == results[0][0]
        np.testing.assert_array_equal(gc, results[0][1])
        np.testing.assert_array_equal(gb, results[0][2])


@pytest.mark.parametrize("batch_size", [32, 256])
def test_sgd_bitwise_across_threads(fast_dense_backend, dtype, batch_size):
    X, coef, intercept, y, w = make_linear(600, 784, 10, dtype, seed=34, uint8=True)
    order = epoch_order(600, seed=0, epoch=0)
    results = [run_sgd(fast_dense_backend, X, 1 / 255, y, w, order, coef, intercept,
                       momentum=0.9, batch_size=batch_size, n_threads=t) for t in THREADS]
    for res in results[1:]:
        assert res[0] == results[0][0]
        for got, first in zip(res[1:], results[0][1:], strict=True):
            np.testing.assert_array_equal(got, first)


# --------------------------------------------------------------------------------------
# the fast implementations against each other
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("pair", [pytest.param(p, id=f"{p[0].name}-{p[1].name}")
                                  for p in itertools.combinations(FAST_DENSE, 2)])
def test_fast_backends_agree(pair, dtype):
    one, two = (load_kernels(info) for info in pair)
    z, y = make_logits(300, 12, dtype, seed=35)
    w = np.random.default_rng(36).random(300)
    (l1, g1), (l2, g2) = run_softmax_ce(one, z, y, w), run_softmax_ce(two, z, y, w)
    assert l1 == pytest.approx(l2, rel=2 * TOL[dtype]["ce"])
    assert_close(g1, g2, 2 * TOL[dtype]["ce"])
    for uint8 in (False, True):
        X, coef, intercept, y, w = make_linear(130, 50, 7, dtype, seed=37, uint8=uint8)
        scale = 1 / 255 if uint8 else 1.0
        a = run_linear(one, X, scale, coef, intercept, y, w, 0.1)
        b = run_linear(two, X, scale, coef, intercept, y, w, 0.1)
        assert a[0] == pytest.approx(b[0], rel=2 * TOL[dtype]["linear"])
        assert_close(a[1], b[1], 2 * TOL[dtype]["linear"])
        assert_close(a[2], b[2], 2 * TOL[dtype]["linear"])
        order = epoch_order(130, seed=4, epoch=1)
        a = run_sgd(one, X, scale, y, w, order, coef, intercept, momentum=0.9, nesterov=True)
        b = run_sgd(two, X, scale, y, w, order, coef, intercept, momentum=0.9, nesterov=True)
        assert a[0] == pytest.approx(b[0], rel=2 * TOL[dtype]["sgd"])
        assert_close(a[1], b[1], 2 * TOL[dtype]["sgd"])
        assert_close(a[2], b[2], 2 * TOL[dtype]["sgd"])


# --------------------------------------------------------------------------------------
# property tests over shapes and dtypes, against the oracle
# --------------------------------------------------------------------------------------
@settings(PROPERTY, max_examples=40)
@given(n=st.integers(1, 50), c=st.integers(1, 40), use64=st.booleans(),
       weighted=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_property_softmax_ce(fast_dense_backend, n, c, use64, weighted, seed):
    mod = fast_dense_backend
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
    assert_close(p, ref.stable_softmax(z64), TOL[dtype]["softmax"])
    assert_close(np.exp(lp.astype(np.float64)), p, 10 * TOL[dtype]["softmax"])


@settings(PROPERTY, max_examples=30)
@given(n=st.integers(1, 50), c=st.integers(1, 40), d=st.integers(1, 40),
       use64=st.booleans(), uint8=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_property_linear(fast_dense_backend, n, c, d, use64, uint8, seed):
    dtype = np.float64 if use64 else np.float32
    X, coef, intercept, y, w = make_linear(n, d, c, dtype, seed=seed, uint8=uint8)
    scale = 1 / 255 if uint8 else 1.0
    got = run_linear(fast_dense_backend, X, scale, coef, intercept, y, w, 0.05)
    exp = ref_linear(X, scale, coef, intercept, y, w, 0.05)
    tol = TOL[dtype]["linear"]
    assert got[0] == pytest.approx(exp[0], rel=tol, abs=1e-12)
    assert_close(got[1], exp[1], tol)
    assert_close(got[2], exp[2], tol)


# --------------------------------------------------------------------------------------
# every shape: the BLAS path the large shapes take (kernels/_paths.py chooses it by shape)
# --------------------------------------------------------------------------------------
# All above the crossover. Row-split mode (one partial dW of c x d fits in 4 MiB): (9000, 40,
# 40) deals 18 blocks of 512 rows (the last 296) to the 8 slots; (20, 2000, 60) is one block of
# at least 128 rows (one slot used). Tiled mode (a larger dW): (120, 1100, 1000); in float64 also
# (70, 800, 700); (300, 1000, 40) has dW in 8 feature tiles of 128 (the last 104) there.
BLAS_SHAPES = [(600, 120, 64), (70, 300, 1500), (2100, 40, 40), (300, 1000, 40),
               (9000, 40, 40), (20, 2000, 60), (120, 1100, 1000), (70, 800, 700)]
#: shapes whose dW is too large for the row-split mode, by itemsize
TILED_SHAPES = {4: [(120, 1100, 1000)], 8: [(120, 1100, 1000), (70, 800, 700)]}


def test_blas_shapes_do_take_the_blas_path():
    from softmax_fast.kernels._paths import prefers_gemm

    for n, d, c in BLAS_SHAPES:
        assert prefers_gemm(n, d, c, False) and prefers_gemm(n, d, max(c, 64), True)
    assert not prefers_gemm(60000, 784, 10, True)  # Fashion-MNIST stays on the tiles


@pytest.mark.parametrize("itemsize", [4, 8])
def test_both_backends_split_the_blas_path_alike(itemsize):
    # The row-split mode's plan (slots, rows per block) is defined twice, in Cython and in
    # Numba; both must cut every shape the same way, and the test shapes must cover both modes.
    ext = load_kernels(next(i for i in FAST_DENSE if i.name == "cython")).EXTENSION
    from softmax_fast.kernels import _numba_gemm

    modes = set()
    for n, d, c in BLAS_SHAPES + [(16384, 1024, 100), (50000, 512, 100), (10, 8, 3)]:
        slots = _numba_gemm.split_slots(d, c, itemsize)
        numba_plan = (slots, _numba_gemm.split_block(n, c, slots)) if slots else (0, 0)
        assert ext.gemm_split_plan(n, d, c, itemsize) == numba_plan, (n, d, c)
        assert (slots == 0) == ((n, d, c) in TILED_SHAPES[itemsize]), (n, d, c)
        modes.add(slots == 0)
    assert modes == {True, False}


def _linear_matches_reference_on_any_threads(backend, dtype, n, d, c, uint8, seed):
    """linear_softmax_ce of ``backend`` against the float64 oracle, and bitwise on 1 and 2
    threads, for one (n, d, c) problem."""
    X, coef, intercept, y, w = make_linear(n, d, c, dtype, seed=seed, uint8=uint8)
    x_scale = 1 / 255 if uint8 else 1.0
    runs = [run_linear(backend, X, x_scale, coef, intercept, y, w, 1e-3, t) for t in (1, 2)]
    expected = run_linear(ref, X, x_scale, coef.astype(float), intercept.astype(float), y, w,
                          1e-3)
    rtol = TOL[dtype]["linear"]
    assert runs[0][0] == pytest.approx(expected[0], rel=rtol)
    assert_close(runs[0][1], expected[1], rtol)
    assert_close(runs[0][2], expected[2], rtol)
    assert runs[1][0] == runs[0][0]  # bitwise for any thread count
    for a, b in zip(runs[1][1:], runs[0][1:], strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("uint8", [False, True], ids=["floatX", "uint8X"])
@pytest.mark.parametrize("shape", BLAS_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_linear_at_blas_shapes_matches_reference(fast_dense_backend, dtype, shape, uint8):
    n, d, c = shape
    c = max(c, 64) if uint8 else c
    _linear_matches_reference_on_any_threads(fast_dense_backend, dtype, n, d, c, uint8, seed=7)


@pytest.mark.parametrize("uint8", [False, True], ids=["floatX", "uint8X"])
def test_linear_in_many_wide_chunks_matches_reference(fast_dense_backend, dtype, uint8):
    # Wide rows on the register path: chunks are capped at about 1 MiB of X (they must stay
    # in L2 for the backward pass), so 700 rows of 1,500 features take several chunks.
    _linear_matches_reference_on_any_threads(fast_dense_backend, dtype, 700, 1500, 10, uint8,
                                             seed=9)


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, True)],
                         ids=["plain", "nesterov"])
def test_sgd_at_blas_shapes_matches_reference(fast_dense_backend, dtype, momentum, nesterov):
    n, d, c, bs = 500, 90, 300, 128  # a minibatch of 128 x 90 x 300: the BLAS path
    X, coef, intercept, y, w = make_linear(n, d, c, dtype, seed=8)
    order = epoch_order(n, 3, 0)
    results = []
    for threads in (1, 2):
        state = [coef.copy(), intercept.copy(), np.zeros_like(coef), np.zeros_like(intercept)]
        loss = fast_dense_backend.sgd_epoch(X, 1.0, y, w, order, *state, 0.3, 1e-2, momentum,
                                            nesterov, bs, threads)
        results.append((loss, *state))
    state = [coef.astype(float), intercept.astype(float), np.zeros((c, d)), np.zeros(c)]
    loss = ref.sgd_epoch(X, 1.0, y, w, order, *state, 0.3, 1e-2, momentum, nesterov, bs)
    rtol = TOL[dtype]["sgd"]
    assert results[0][0] == pytest.approx(loss, rel=rtol)
    assert_close(results[0][1], state[0], rtol)
    assert_close(results[0][2], state[1], rtol)
    assert results[1][0] == results[0][0]
    for a, b in zip(results[1][1:], results[0][1:], strict=True):
        np.testing.assert_array_equal(a, b)
