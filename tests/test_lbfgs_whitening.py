"""L-BFGS in whitened coordinates (``_training.lbfgs.FeatureWhitening``).

The whitening changes only the optimizer's coordinates: the same optimum, the stopping test
on the weights' own gradient, fewer iterations on badly conditioned features, and the same
bits for any thread count. Its second-moment estimate reads any storage block by block.
"""

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
from test_lbfgs_resolution import unit_norm_embeddings

from softmax_fast import SoftmaxRegression, SoftmaxRegressionCV
from softmax_fast._training import lbfgs
from softmax_fast._training.lbfgs import (
    FeatureWhitening,
    class_curvature_sums,
    feature_second_moment,
    run_lbfgs,
    whitening_rows,
)
from softmax_fast.backends import get_kernels

REFERENCE = get_kernels("reference", "dense")


def badly_conditioned(n=3000, d=24, c=5, seed=0, spread=100.0):
    """Class means in correlated features with a ``spread``:1 range of scales and an offset."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n).astype(np.intp)
    means = rng.standard_normal((c, d))
    mixing = rng.standard_normal((d, d)) / np.sqrt(d)
    X = (means[y] + 3 * rng.standard_normal((n, d))) @ mixing
    X = X * np.geomspace(1.0, spread, d) + 3.0
    return X, y


def _fit(X, y, alpha, *, precondition, tol=1e-9, n_threads=1, dtype=np.float64,
         kernels=REFERENCE):
    c, d = int(y.max()) + 1, X.shape[1]
    state = SimpleNamespace(coef=np.zeros((c, d), dtype), intercept=np.zeros(c, dtype),
                            history=[])
    n_iter, converged = run_lbfgs(kernels, state, X.astype(dtype), 1.0, y, None, alpha,
                                  n_threads, max_iter=5000, tol=tol, precondition=precondition)
    return state, n_iter, converged


def _objective(state, X, y, alpha):
    gW, gb = np.empty_like(state.coef), np.empty_like(state.intercept)
    loss = REFERENCE.linear_softmax_ce(X, 1.0, state.coef.astype(np.float64),
                                       state.intercept.astype(np.float64), y, None, alpha,
                                       gW, gb, 1)
    return loss, max(np.abs(gW).max(), np.abs(gb).max())


def test_the_same_optimum_in_fewer_iterations():
    X, y = badly_conditioned(spread=10.0)
    alpha = 1e-3
    tol = 1e-6  # reached before the float64 objective stops changing (ftol)
    plain, plain_iter, plain_ok = _fit(X, y, alpha, precondition=False, tol=tol)
    whitened, whitened_iter, whitened_ok = _fit(X, y, alpha, precondition=True, tol=tol)
    assert plain_ok and whitened_ok
    plain_loss, plain_grad = _objective(plain, X, y, alpha)
    whitened_loss, whitened_grad = _objective(whitened, X, y, alpha)
    # the tolerance holds in the weights' own coordinates, for both
    assert plain_grad <= tol and whitened_grad <= tol
    assert whitened_loss == pytest.approx(plain_loss, rel=1e-9)
    np.testing.assert_allclose(whitened.coef, plain.coef, rtol=1e-3, atol=1e-4)
    assert whitened_iter < 0.5 * plain_iter, (whitened_iter, plain_iter)


def test_features_on_very_different_scales_converge():
    # a 1:100 spread of feature scales: plain L-BFGS does not converge in 5,000 iterations
    X, y = badly_conditioned(spread=100.0)
    alpha = 1e-4
    whitened, whitened_iter, converged = _fit(X, y, alpha, precondition=True)
    plain, _, _ = _fit(X, y, alpha, precondition=False)
    assert converged and whitened_iter < 100
    assert _objective(whitened, X, y, alpha)[1] <= 1e-6  # stopped on ftol: float64 limit
    assert _objective(whitened, X, y, alpha)[0] < _objective(plain, X, y, alpha)[0]


def test_a_strongly_regularized_fit_is_not_held_back_by_its_intercept():
    # The penalty's share of the whitening belongs to the weights only: with it on the
    # intercept too, this fit took 11 iterations, the intercept's curvature (the data's
    # alone) seen at a small fraction of the weights'.
    X, y = unit_norm_embeddings(n=4000, d=64, c=20)
    X = X.astype(np.float64)
    alpha, tol = 0.1, 1e-8
    whitened, n_iter, converged = _fit(X, y, alpha, precondition=True, tol=tol)
    plain, _, _ = _fit(X, y, alpha, precondition=False, tol=tol)
    assert converged and n_iter <= 8, n_iter
    assert _objective(whitened, X, y, alpha)[1] <= tol
    assert _objective(whitened, X, y, alpha)[0] == pytest.approx(
        _objective(plain, X, y, alpha)[0], rel=1e-12)


@pytest.mark.parametrize("start", ["zero", "warm"])
def test_the_change_of_coordinates_round_trips_and_follows_the_chain_rule(start):
    X, y = badly_conditioned(n=400, d=6, c=3)
    alpha = 1e-2
    rng = np.random.default_rng(1)
    at = None if start == "zero" else (rng.standard_normal((3, 6)), rng.standard_normal(3))
    whitening = FeatureWhitening.for_data(X, 1.0, None, alpha, 3, start=at)
    assert whitening is not None and whitening.warm == (start == "warm")
    coef, intercept = rng.standard_normal((3, 6)), rng.standard_normal(3)
    intercept -= intercept.mean()
    theta = whitening.start(coef, intercept)
    back_coef, back_intercept = np.empty_like(coef), np.empty_like(intercept)
    whitening.weights(theta, back_coef, back_intercept)
    np.testing.assert_allclose(back_coef, coef, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(back_intercept, intercept, rtol=1e-12, atol=1e-12)
    # the intercepts' class mean, a direction the softmax does not see, is taken out
    whitening.weights(whitening.start(coef, intercept + 5.0), back_coef, back_intercept)
    np.testing.assert_allclose(back_intercept, intercept, rtol=1e-12, atol=1e-12)

    def f(v):
        W, b = np.empty_like(coef), np.empty_like(intercept)
        whitening.weights(v, W, b)
        gW, gb = np.empty_like(W), np.empty_like(b)
        loss = REFERENCE.linear_softmax_ce(X, 1.0, W, b, y, None, alpha, gW, gb, 1)
        return loss, whitening.gradient(gW, gb).copy(), (gW, gb)

    _, grad, (gW, gb) = f(theta)
    direction = rng.standard_normal(theta.shape)
    eps = 1e-6
    numeric = (f(theta + eps * direction)[0] - f(theta - eps * direction)[0]) / (2 * eps)
    assert grad @ direction == pytest.approx(numeric, rel=1e-6)
    own = whitening.own_gradient(grad)  # back to the weights' coordinates
    np.testing.assert_allclose(own[:, :-1], gW, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(own[:, -1], gb, rtol=1e-10, atol=1e-13)


def _model_matrix(whitening, n_classes, n_features):
    """T T^T of every class: the Hessian block the coordinates assume (times c)."""
    blocks = []
    for k in range(n_classes):
        columns = []
        for j in range(n_features + 1):
            unit = np.zeros((n_classes, n_features + 1))
            unit[k, j] = 1.0
            columns.append(whitening.gradient(unit[:, :-1], unit[:, -1]).reshape(
                n_classes, -1)[k])
        inverse = np.array(columns).T  # T_k^-1
        blocks.append(np.linalg.inv(inverse.T @ inverse))
    return blocks


def test_a_start_at_zero_whitens_by_the_second_moments_plus_alpha_c():
    # Fits from zero run in the coordinates of earlier releases: L L^T = M + alpha c on the
    # features' diagonal (none on the unpenalized intercept's).
    X, y = badly_conditioned(n=600, d=5, c=4)
    alpha = 1e-2
    whitening = FeatureWhitening.for_data(X, 1.0, None, alpha, 4)
    M = feature_second_moment(X, 1.0, None, len(X))
    expected = M + np.diag([alpha * 4] * 5 + [0.0])
    for block in _model_matrix(whitening, 4, 5):
        np.testing.assert_allclose(block, expected, rtol=1e-9, atol=1e-9)


def test_a_warm_start_whitens_each_class_by_its_own_curvature():
    # At a warm start the coordinates model class k's Hessian block: the rows' curvature
    # h_ik = p_ik (1 - p_ik) gives its share s_k and centre m_k, the features' covariance C
    # its shape: c (s_k [[C + m m^T, m], [m^T, 1]] + alpha on the weights).
    X, y = unit_norm_embeddings(n=3000, d=8, c=5)
    X = X.astype(np.float64)
    alpha = 1e-3
    rng = np.random.default_rng(5)
    coef, intercept = 3 * rng.standard_normal((5, 8)), rng.standard_normal(5)
    whitening = FeatureWhitening.for_data(X, 1.0, None, alpha, 5, start=(coef, intercept))
    logits = X @ coef.T + intercept
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    h = p * (1 - p)
    mean = X.mean(axis=0)
    covariance = X.T @ X / len(X) - np.outer(mean, mean)
    for k, block in enumerate(_model_matrix(whitening, 5, 8)):
        share, centre = h[:, k].mean(), h[:, k] @ X / h[:, k].sum()
        expected = np.empty((9, 9))
        expected[:8, :8] = covariance + np.outer(centre, centre)
        expected[:8, 8] = expected[8, :8] = centre
        expected[8, 8] = 1.0
        expected = 5 * (share * expected + np.diag([alpha] * 8 + [0.0]))
        np.testing.assert_allclose(block, expected, rtol=1e-4, atol=1e-7)  # float32 sums


def _warm_fit_iterations(monkeypatch, class_whitening):
    X, y = unit_norm_embeddings(n=4000, d=64, c=20)
    X = X.astype(np.float64)
    if not class_whitening:
        monkeypatch.setattr(lbfgs, "CLASS_WHITENING_MIN_TOL", np.inf)
    previous, _, _ = _fit(X, y, 1e-4, precondition=True, tol=1e-9)
    state = SimpleNamespace(coef=previous.coef.copy(), intercept=previous.intercept.copy(),
                            history=[])
    n_iter, converged = run_lbfgs(REFERENCE, state, X, 1.0, y, None, 4e-5, 1, max_iter=500,
                                  tol=1e-6)
    monkeypatch.undo()
    assert converged and _objective(state, X, y, 4e-5)[1] <= 1e-6
    return n_iter, _objective(state, X, y, 4e-5)[0], state


def test_a_warm_start_reaches_the_next_optimum_sooner_in_its_classes_coordinates(
        monkeypatch):
    # The next strength of a path, started at the last optimum: the classes' own curvature
    # and the Newton first step against the whitening of a start from zero.
    classes, loss, state = _warm_fit_iterations(monkeypatch, True)
    uniform, uniform_loss, _ = _warm_fit_iterations(monkeypatch, False)
    assert classes <= 0.75 * uniform, (classes, uniform)  # 12 against 24 when written
    assert loss == pytest.approx(uniform_loss, rel=1e-6)  # both within tol 1e-6
    # the optimum whose intercepts sum to zero over the classes, as a fit from zero's
    assert abs(state.intercept.sum()) <= 1e-12 * np.abs(state.intercept).max()


def test_a_start_within_tol_measures_no_class_curvature(monkeypatch):
    X, y = unit_norm_embeddings(n=2000, d=16, c=5)
    X = X.astype(np.float64)
    fitted, _, _ = _fit(X, y, 1e-3, precondition=True, tol=1e-9)
    calls = []
    measure = lbfgs.class_curvature_sums
    monkeypatch.setattr(lbfgs, "class_curvature_sums",
                        lambda *args: calls.append(1) or measure(*args))
    n_iter, converged = run_lbfgs(REFERENCE, fitted, X, 1.0, y, None, 1e-3, 1, max_iter=50,
                                  tol=1e-6)
    assert (n_iter, converged, calls) == (0, True, [])


@pytest.mark.parametrize("storage", ["float32", "uint8", "memmap", "csr", "weighted"])
def test_second_moments_and_class_curvature_from_any_storage(storage, tmp_path):
    rng = np.random.default_rng(2)
    n, d = 5000, 7
    X = rng.integers(0, 256, (n, d)).astype(np.uint8) if storage == "uint8" else \
        rng.standard_normal((n, d)).astype(np.float32)
    scale = 1 / 255 if storage == "uint8" else 1.0
    weights = rng.uniform(0, 2, n) if storage == "weighted" else None
    stored = X
    if storage == "memmap":
        np.save(tmp_path / "X.npy", X)
        stored = np.load(tmp_path / "X.npy", mmap_mode="r")
    elif storage == "csr":
        X = np.where(np.abs(X) > 1, X, 0).astype(np.float32)
        stored = sp.csr_matrix(X)
    rows = 3000  # fewer than n: evenly spaced rows, in several blocks
    moment = feature_second_moment(stored, scale, weights, rows)
    picked = np.unique(np.linspace(0, n - 1, rows).astype(np.intp))
    augmented = np.hstack([X[picked].astype(np.float64) * scale, np.ones((len(picked), 1))])
    w = np.ones(len(picked)) if weights is None else weights[picked]
    expected = (augmented * w[:, None]).T @ augmented / w.sum()
    np.testing.assert_allclose(moment, expected, rtol=1e-5, atol=1e-6)
    # the classes' curvature sums at a warm start, from the same rows
    coef, intercept = rng.standard_normal((4, d)), rng.standard_normal(4)
    shares, moments, total = class_curvature_sums(stored, scale, weights, coef, intercept,
                                                  picked)
    logits = augmented[:, :-1] @ coef.T + intercept
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    h = p * (1 - p) * w[:, None]
    np.testing.assert_allclose(shares, h.sum(axis=0), rtol=1e-5)
    np.testing.assert_allclose(moments, h.T @ augmented[:, :-1], rtol=1e-4, atol=1e-4)
    assert total == pytest.approx(w.sum())
    # blocks on two threads, summed in their order: the same bits
    threaded = class_curvature_sums(stored, scale, weights, coef, intercept, picked, 2)
    for ours, theirs in zip(threaded, (shares, moments, total), strict=True):
        assert np.array_equal(ours, theirs)


def test_whitening_applies_only_where_it_pays(monkeypatch):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((2000, 20))
    assert FeatureWhitening.for_data(X, 1.0, None, 1e-3, 4) is not None
    assert FeatureWhitening.for_data(X[:80], 1.0, None, 1e-3, 4) is None  # n < 4 (d + 1)
    assert FeatureWhitening.for_data(object(), 1.0, None, 1e-3, 4) is None  # not an array
    broken = X.copy()
    broken[7, 3] = np.nan  # left to the first evaluation, which names the problem
    assert FeatureWhitening.for_data(broken, 1.0, None, 1e-3, 4) is None
    # no weight, no penalty: nothing to whiten with
    assert FeatureWhitening.for_data(X, 1.0, np.zeros(2000), 0.0, 4) is None
    assert FeatureWhitening.for_data(X, 1.0, np.zeros(2000), 1e-3, 4) is None  # no rows' weight
    monkeypatch.setattr(lbfgs, "WHITENING_MAX_FEATURES", 10)
    assert FeatureWhitening.for_data(X, 1.0, None, 1e-3, 4) is None  # d too large
    monkeypatch.undo()
    # two classes, many features: estimating M would cost more than its budget
    wide = rng.standard_normal((6000, 1000)).astype(np.float32)
    assert whitening_rows(6000, 1000) == 6000
    assert FeatureWhitening.for_data(wide, 1.0, None, 1e-3, 2) is None
    assert FeatureWhitening.for_data(wide, 1.0, None, 1e-3, 100) is not None


def test_estimator_fits_whitened_with_the_same_bits_for_any_thread_count():
    X, y = badly_conditioned(n=6000, d=40, c=6)
    X = X.astype(np.float32)
    fits = [SoftmaxRegression(solver="lbfgs", alpha=1e-4, dtype="float32", tol=1e-6,
                              n_threads=t).fit(X, y) for t in (1, 2, 1)]
    for model in fits[1:]:
        assert np.array_equal(model.coef_, fits[0].coef_)
        assert np.array_equal(model.intercept_, fits[0].intercept_)


def test_a_path_estimates_the_second_moments_once_per_fold(monkeypatch):
    X, y = badly_conditioned(n=2000, d=10, c=3)
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return feature_second_moment(*args, **kwargs)

    monkeypatch.setattr(lbfgs, "feature_second_moment", counted)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        SoftmaxRegressionCV(alphas=4, cv=2, refit=False, dtype="float64").fit(X, y)
    assert len(calls) == 2


@pytest.mark.parametrize("precondition", [False, True])
def test_a_start_within_tol_runs_no_iteration_and_keeps_the_weights(precondition):
    X, y = badly_conditioned(n=1500, d=8, c=3, spread=3.0)
    alpha = 1e-2
    optimum, n_iter, _ = _fit(X, y, alpha, precondition=precondition, tol=1e-8)
    assert n_iter > 0
    coef, intercept = optimum.coef.copy(), optimum.intercept.copy()
    n_iter, converged = run_lbfgs(REFERENCE, optimum, X, 1.0, y, None, alpha, 1,
                                  max_iter=100, tol=1e-6, precondition=precondition)
    assert (n_iter, converged) == (0, True)
    assert np.array_equal(optimum.coef, coef) and np.array_equal(optimum.intercept, intercept)
    assert optimum.history[-1]["epoch"] == 0
