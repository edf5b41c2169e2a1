"""Tests specific to the Cython backend (the shared contract suite is tests/test_kernels.py).

Covered here: OpenMP reporting, read-only inputs and outputs, argument checking of the
array-taking entry points, the O(chunk) memory of linear_softmax_ce at 32,000 classes, the
class-group / feature-chunk work splits (c > 40, d not a multiple of the vector width), and the
SIMD exp/log against the float64 oracle down to the subnormal range.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import DENSE, SUBPROCESS_CWD, load_kernels

from softmax_fast.kernels import reference
from softmax_fast.kernels.contract import EXP_FLUSH

CYTHON = next(info for info in DENSE if info.module == "softmax_fast.kernels.cython_backend")


@pytest.fixture
def cy():
    """The Cython kernel module; a build that does not import fails these tests (conftest)."""
    return load_kernels(CYTHON)


def _rng(seed=0):
    return np.random.default_rng(seed)


def _linear_problem(rng, n, d, c, dtype, uint8):
    Xr = rng.integers(0, 256, (n, d)).astype(np.uint8)
    X = Xr if uint8 else (Xr / 255.0).astype(dtype)
    x_scale = 1 / 255 if uint8 else 1.0
    coef = (rng.standard_normal((c, d)) * 0.05).astype(dtype)
    intercept = rng.standard_normal(c).astype(dtype)
    y = rng.integers(0, c, n).astype(np.intp)
    return X, x_scale, coef, intercept, y


# ------------------------------------------------------------------ OpenMP
def test_openmp_flag_matches_threads_granted(cy):
    assert isinstance(cy.OPENMP, bool)
    if cy.OPENMP:
        assert cy.openmp_thread_count(1) == 1
        assert cy.openmp_thread_count(3) == 3
    else:
        assert cy.openmp_thread_count(3) == 1


def test_vector_lanes_is_a_power_of_two(cy):
    assert cy.VECTOR_LANES in (4, 8, 16)


# ------------------------------------------------------------------ read-only and checking
def _readonly(*arrays):
    out = []
    for a in arrays:
        if isinstance(a, np.ndarray):
            a = a.copy()
            a.flags.writeable = False
        out.append(a)
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rowwise_kernels_accept_readonly_inputs(cy, dtype):
    rng = _rng(1)
    z = rng.standard_normal((37, 11)).astype(dtype)
    y = rng.integers(0, 11, 37).astype(np.intp)
    w = rng.random(37)
    zr, yr, wr = _readonly(z, y, w)
    for fn in (cy.softmax, cy.log_softmax):
        a, b = np.empty_like(z), np.empty_like(z)
        fn(z, a, 2)
        fn(zr, b, 2)
        assert np.array_equal(a, b)
    a, b = np.empty_like(z), np.empty_like(z)
    assert cy.softmax_ce(z, y, w, a, 2) == cy.softmax_ce(zr, yr, wr, b, 2)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("uint8", [False, True])
def test_linear_kernels_accept_readonly_inputs(cy, uint8):
    rng = _rng(2)
    X, xs, coef, b, y = _linear_problem(rng, 50, 30, 7, np.float32, uint8)
    w = rng.random(50)
    gW1, gb1, gW2, gb2 = (np.empty_like(a) for a in (coef, b, coef, b))
    l1 = cy.linear_softmax_ce(X, xs, coef, b, y, w, 0.1, gW1, gb1, 2)
    Xr, coefr, br, yr, wr = _readonly(X, coef, b, y, w)
    l2 = cy.linear_softmax_ce(Xr, xs, coefr, br, yr, wr, 0.1, gW2, gb2, 2)
    assert l1 == l2 and np.array_equal(gW1, gW2) and np.array_equal(gb1, gb2)

    order = rng.permutation(50).astype(np.intp)
    states = []
    for args in ((X, y, w, order), tuple(_readonly(X, y, w, order))):
        W, bb = coef.copy(), b.copy()
        vW, vb = np.zeros_like(W), np.zeros_like(bb)
        loss = cy.sgd_epoch(args[0], xs, args[1], args[2], args[3], W, bb, vW, vb,
                            0.1, 1e-3, 0.9, True, 8, 2)
        states.append((loss, W, bb, vW, vb))
    for a, b_ in zip(states[0], states[1], strict=True):
        assert np.array_equal(a, b_)


def test_readonly_outputs_are_rejected(cy):
    rng = _rng(3)
    X, xs, coef, b, y = _linear_problem(rng, 10, 5, 3, np.float64, False)
    gW, gb = np.empty_like(coef), np.empty_like(b)
    (gWr,) = _readonly(gW)
    with pytest.raises(ValueError, match="read-only"):
        cy.linear_softmax_ce(X, xs, coef, b, y, None, 0.0, gWr, gb, 1)
    (coefr,) = _readonly(coef)
    with pytest.raises(ValueError, match="read-only"):
        cy.sgd_epoch(X, xs, y, None, np.arange(10), coefr, b.copy(), np.zeros_like(coef),
                     np.zeros_like(b), 0.1, 0.0, 0.0, False, 4, 1)
    z = rng.standard_normal((4, 3))
    (outr,) = _readonly(np.empty_like(z))
    with pytest.raises(ValueError):
        cy.softmax_ce(z, np.zeros(4, np.intp), None, outr, 1)


def test_linear_entry_points_check_their_arrays(cy):
    rng = _rng(4)
    X, xs, coef, b, y = _linear_problem(rng, 10, 6, 3, np.float32, False)
    gW, gb = np.empty_like(coef), np.empty_like(b)
    with pytest.raises(TypeError, match="coef"):
        cy.linear_softmax_ce(X, xs, coef.astype(np.float16), b, y, None, 0.0, gW, gb, 1)
    with pytest.raises(TypeError, match="X"):
        cy.linear_softmax_ce(X.astype(np.float64), xs, coef, b, y, None, 0.0, gW, gb, 1)
    with pytest.raises(ValueError, match="C-contiguous"):
        cy.linear_softmax_ce(np.asfortranarray(X), xs, coef, b, y, None, 0.0, gW, gb, 1)
    with pytest.raises(ValueError, match="items"):
        cy.linear_softmax_ce(X, xs, coef, b, y[:-1], None, 0.0, gW, gb, 1)
    with pytest.raises(TypeError, match="y"):
        cy.linear_softmax_ce(X, xs, coef, b, y.astype(np.int32), None, 0.0, gW, gb, 1)
    with pytest.raises(ValueError, match="features"):
        cy.linear_softmax_ce(X[:, :5].copy(), xs, coef, b, y, None, 0.0, gW, gb, 1)


# ------------------------------------------------------------------ work splits
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("uint8", [False, True])
@pytest.mark.parametrize("shape", [(61, 37, 47), (9, 3, 83), (130, 100, 13)])
def test_linear_work_splits_match_reference_and_threads(cy, dtype, uint8, shape):
    # c > 40 takes the class-group path of phase A; d = 37 / 100 leaves ragged vector tails.
    n, d, c = shape
    rng = _rng(5)
    X, xs, coef, b, y = _linear_problem(rng, n, d, c, dtype, uint8)
    w = rng.random(n)
    rW, rb = np.empty((c, d)), np.empty(c)
    lr = reference.linear_softmax_ce(X, xs, coef, b, y, w, 0.01, rW, rb)
    runs = []
    for nt in (1, 2, 4):
        gW, gb = np.empty_like(coef), np.empty_like(b)
        runs.append((cy.linear_softmax_ce(X, xs, coef, b, y, w, 0.01, gW, gb, nt), gW, gb))
    for other in runs[1:]:
        assert other[0] == runs[0][0]
        assert np.array_equal(other[1], runs[0][1]) and np.array_equal(other[2], runs[0][2])
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    loss, gW, gb = runs[0]
    np.testing.assert_allclose(loss, lr, rtol=rtol)
    np.testing.assert_allclose(gW, rW, rtol=rtol, atol=rtol * np.abs(rW).max())
    np.testing.assert_allclose(gb, rb, rtol=rtol, atol=rtol * np.abs(rb).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(97, 33, 47), (64, 100, 10)])
def test_sgd_work_splits_match_reference_and_threads(cy, dtype, shape):
    n, d, c = shape
    rng = _rng(6)
    X, xs, coef, b, y = _linear_problem(rng, n, d, c, dtype, True)
    w = rng.random(n)
    w[:10] = 0.0  # with batch_size 5 and the identity order: two batches without weight
    order = np.arange(n, dtype=np.intp)
    results = []
    for mod, nt in ((reference, 1), (cy, 1), (cy, 2), (cy, 4)):
        W, bb = coef.copy(), b.copy()
        vW, vb = np.zeros_like(W), np.zeros_like(bb)
        loss = mod.sgd_epoch(X, xs, y, w, order, W, bb, vW, vb, 0.05, 1e-2, 0.5, True, 5, nt)
        results.append((loss, W, bb, vW, vb))
    for other in results[2:]:
        for a, b_ in zip(results[1], other, strict=True):
            assert np.array_equal(a, b_)
    rtol = 1e-11 if dtype == np.float64 else 1e-4
    for a, r in zip(results[1], results[0], strict=True):
        np.testing.assert_allclose(a, r, rtol=rtol, atol=rtol * np.max(np.abs(r)))


# ------------------------------------------------------------------ O(chunk) memory
def test_linear_many_classes_uses_chunk_memory(cy):
    # Materialising the logits of 2,000 rows x 32,000 classes would take 256 MB (float32);
    # the kernel's row chunks need well under 1 MB. Peak RSS is measured in a fresh process.
    code = textwrap.dedent(
        """
        import resource
        import numpy as np
        from softmax_fast.kernels import cython_backend as cy
        n, d, c = 2000, 16, 32000
        rng = np.random.default_rng(0)
        X = rng.standard_normal((n, d)).astype(np.float32)
        coef = (rng.standard_normal((c, d)) * 0.1).astype(np.float32)
        b = np.zeros(c, np.float32)
        y = rng.integers(0, c, n).astype(np.intp)
        gW, gb = np.zeros_like(coef), np.zeros_like(b)
        cy.linear_softmax_ce(X[:8], 1.0, coef, b, y[:8], None, 0.0, gW, gb, 2)  # warm up
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        loss = cy.linear_softmax_ce(X, 1.0, coef, b, y, None, 1e-3, gW, gb, 2)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert np.isfinite(loss) and np.isfinite(gW).all()
        print((after - before) * 1024)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, OMP_NUM_THREADS="2"),
                          cwd=SUBPROCESS_CWD)
    assert proc.returncode == 0, proc.stderr
    grown = int(proc.stdout.strip().splitlines()[-1])
    assert grown < 32 * 2**20, f"peak RSS grew by {grown / 2**20:.0f} MB"


def test_linear_many_classes_matches_reference(cy):
    rng = _rng(7)
    X, xs, coef, b, y = _linear_problem(rng, 40, 16, 32000, np.float64, False)
    gW, gb = np.empty_like(coef), np.empty_like(b)
    rW, rb = np.empty_like(coef), np.empty_like(b)
    loss = cy.linear_softmax_ce(X, xs, coef, b, y, None, 0.0, gW, gb, 2)
    lr = reference.linear_softmax_ce(X, xs, coef, b, y, None, 0.0, rW, rb)
    np.testing.assert_allclose(loss, lr, rtol=1e-12)
    np.testing.assert_allclose(gW, rW, rtol=1e-10, atol=1e-12 * np.abs(rW).max())
    np.testing.assert_allclose(gb, rb, rtol=1e-10, atol=1e-12 * np.abs(rb).max())


# ------------------------------------------------------------------ SIMD exp / log
def test_simd_exp_over_the_whole_range_float64(cy):
    # z - max spans 0 .. -800: exact to 4 ulp down to -680, exactly zero below (flushed,
    # never subnormal; see test_kernels.py::test_tiny_probabilities_are_zero_never_subnormal).
    z = np.concatenate([[0.0], -np.linspace(0, 800, 4001)[1:], [-np.inf]])[None, :]
    out = np.empty_like(z)
    cy.softmax(z, out, 1)
    ref = reference.stable_softmax(z)
    kept = z >= EXP_FLUSH["float64"]
    np.testing.assert_allclose(out[kept], ref[kept], rtol=1e-15)  # exp and 1/s: 4 ulp
    assert np.all(out[~kept] == 0.0)


def test_simd_exp_over_the_whole_range_float32(cy):
    z = np.concatenate([[0.0], -np.linspace(0, 110, 2001)[1:], [-np.inf]]).astype(np.float32)
    z = z[None, :]
    out = np.empty_like(z)
    cy.softmax(z, out, 1)
    ref = reference.stable_softmax(z.astype(np.float64)).astype(np.float32)
    kept = z >= EXP_FLUSH["float32"]
    np.testing.assert_allclose(out[kept], ref[kept], rtol=3e-7)
    assert np.all(out[~kept] == 0.0)


def test_simd_log_of_row_sums(cy):
    # log_softmax of a row of k equal values is -log k: exercises log on s = k for many k.
    for k in (1, 2, 3, 7, 10, 1000, 4097, 32000):
        z = np.full((1, k), 3.25)
        out = np.empty_like(z)
        cy.log_softmax(z, out, 1)
        np.testing.assert_allclose(out, -np.log(k), rtol=2e-16, atol=0)


# ------------------------------------------------------------------ the BLAS path
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("uint8", [False, True], ids=["floatX", "uint8X"])
@pytest.mark.parametrize("n,d,c", [(300, 70, 37), (129, 600, 520), (40, 3, 1100)])
def test_gemm_linear_matches_reference_and_is_thread_invariant(cy, dtype, uint8, n, d, c):
    ext = cy.EXTENSION  # the build the cython backend uses
    from softmax_fast.kernels._blas import single_threaded_blas

    rng = _rng(3)
    X, x_scale, coef, intercept, y = _linear_problem(rng, n, d, c, dtype, uint8)
    w = rng.random(n)
    expected = [np.empty(coef.shape), np.empty(c)]
    loss_ref = reference.linear_softmax_ce(X, x_scale, coef.astype(float),
                                           intercept.astype(float), y, w, 1e-3, *expected)
    runs = []
    for threads in (1, 2, 3):
        grads = [np.empty_like(coef), np.empty_like(intercept)]
        with single_threaded_blas():
            loss = ext.linear_softmax_ce_gemm(X, x_scale, coef, intercept, y, w, 1e-3, *grads,
                                              threads)
        runs.append((loss, *grads))
    rtol = 1e-10 if dtype == np.float64 else 2e-5
    assert runs[0][0] == pytest.approx(loss_ref, rel=rtol)
    for got, want in zip(runs[0][1:], expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=rtol * np.abs(want).max())
    for other in runs[1:]:  # bitwise the same for any thread count
        assert other[0] == runs[0][0]
        for a, b in zip(other[1:], runs[0][1:], strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("momentum,nesterov,weighted,uint8", [
    (0.0, False, False, False), (0.0, False, True, True), (0.9, False, False, True),
    (0.9, True, True, False)])
def test_gemm_sgd_matches_reference_and_is_thread_invariant(cy, dtype, momentum, nesterov,
                                                            weighted, uint8):
    ext = cy.EXTENSION  # the build the cython backend uses
    from softmax_fast.kernels._blas import single_threaded_blas

    rng = _rng(4)
    n, d, c, bs = 230, 90, 300, 32
    X, x_scale, coef0, intercept0, y = _linear_problem(rng, n, d, c, dtype, uint8)
    w = rng.random(n) if weighted else None
    order = rng.permutation(n).astype(np.intp)
    if weighted:
        w[order[:bs]] = 0.0  # a minibatch of zero weight: only the L2 step
    state = [coef0.astype(float), intercept0.astype(float), np.zeros((c, d)), np.zeros(c)]
    loss_ref = reference.sgd_epoch(X, x_scale, y, w, order, *state, 0.2, 1e-2, momentum,
                                   nesterov, bs)
    runs = []
    for threads in (1, 2):
        st = [coef0.copy(), intercept0.copy(), np.zeros_like(coef0), np.zeros_like(intercept0)]
        with single_threaded_blas():
            loss = ext.sgd_epoch_gemm(X, x_scale, y, w, order, *st, 0.2, 1e-2, momentum,
                                      nesterov, bs, threads)
        runs.append((loss, *st))
    rtol = 1e-9 if dtype == np.float64 else 1e-4
    assert runs[0][0] == pytest.approx(loss_ref, rel=rtol)
    for got, want in zip(runs[0][1:3], state[:2], strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=rtol * np.abs(want).max())
    assert runs[1][0] == runs[0][0]
    for a, b in zip(runs[1][1:], runs[0][1:], strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_path_is_chosen_by_shape_alone(cy, monkeypatch):
    ext = cy.EXTENSION  # the build the cython backend uses

    assert not cy.prefers_gemm(60000, 784, 10, True)  # Fashion-MNIST: register tiles
    assert cy.prefers_gemm(4096, 2048, 1000, False)   # a linear probe: BLAS
    calls = []
    for name in ("linear_softmax_ce_gemm", "linear_softmax_ce"):
        monkeypatch.setattr(ext, name, lambda *a, _n=name: calls.append(_n) or 0.0)
    rng = _rng(5)
    for c in (10, 1000):
        X, x_scale, coef, intercept, y = _linear_problem(rng, 64, 64, c, np.float32, False)
        cy.linear_softmax_ce(X, x_scale, coef, intercept, y, None, 0.0, np.empty_like(coef),
                             np.empty_like(intercept), 2)
    assert calls == ["linear_softmax_ce", "linear_softmax_ce_gemm"]


# ------------------------------------------------------------------ busy machines
def test_a_descheduled_partner_thread_changes_nothing():
    """Two OpenMP threads squeezed onto one core: partners are descheduled for whole time
    slices, the team falls back to one thread mid-call (and the governor keeps later calls on
    one), and every result stays bitwise the one-thread result."""
    script = textwrap.dedent("""
        import os
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        import numpy as np
        from softmax_fast.kernels import cython_backend as cy
        rng = np.random.default_rng(0)
        n, d = 6000, 300
        X = rng.integers(0, 256, (n, d), dtype=np.uint8)
        order = rng.permutation(n).astype(np.intp)
        for c in (10, 300):
            y = rng.integers(0, c, n).astype(np.intp)
            results = []
            # many calls: a partner descheduled at any barrier must never hang the team
            for threads in (1,) + (2,) * 12:
                W = np.zeros((c, d), np.float32); b = np.zeros(c, np.float32)
                V, Vb = np.zeros_like(W), np.zeros_like(b)
                loss = cy.sgd_epoch(X, 1 / 255, y, None, order, W, b, V, Vb, 0.1, 1e-4, 0.5,
                                    True, 32 if c == 10 else 256, threads)
                gW, gb = np.empty_like(W), np.empty_like(b)
                lin = cy.linear_softmax_ce(X, 1 / 255, W, b, y, None, 1e-4, gW, gb, threads)
                results.append((loss, lin, W.tobytes(), b.tobytes(), gW.tobytes(), gb.tobytes()))
            assert all(r == results[0] for r in results), c
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=180, cwd=SUBPROCESS_CWD)  # a deadlock fails, not hangs
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
