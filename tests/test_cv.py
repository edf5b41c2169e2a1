"""SoftmaxRegressionCV: the warm-started regularization path against independent fits.

The path fits the strengths from strong to weak, each from a start predicted from the
previous optima; the optimum of a strictly convex objective does not depend on where
L-BFGS starts, so every
point of the path must equal a fit from zero at the same strength, and the strength chosen
must be the one independent fits would choose — in fewer iterations.
"""

import numpy as np
import pytest
from sklearn.datasets import make_classification

from softmax_fast import SoftmaxRegression, SoftmaxRegressionCV
from softmax_fast._training.lbfgs import path_tolerance
from softmax_fast._training.scoring import score
from softmax_fast.cv import predicted_start

ALPHAS = [1e-4, 1e-1, 1e-3, 1e-2]  # any order: the path sorts them strongest first
EXACT = {"tol": 1e-9, "max_iter": 5000, "dtype": "float64"}


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(600, 12, n_informative=8, n_classes=4, class_sep=0.8,
                               random_state=0)
    return X[:400], y[:400], X[400:], y[400:].astype(np.intp)  # labels 0..3 are indices


def _alone(X, y, alpha):
    return SoftmaxRegression(solver="lbfgs", alpha=float(alpha), **EXACT).fit(X, y)


def test_path_equals_independent_fits_and_chooses_the_same_alpha(data):
    X, y, X_val, y_val = data
    path = []
    cv = SoftmaxRegressionCV(alphas=ALPHAS, scoring="neg_log_loss", **EXACT).fit(
        X, y, eval_set=(X_val, y_val), on_alpha=path.append)
    np.testing.assert_array_equal(cv.alphas_, sorted(ALPHAS, reverse=True))
    assert cv.scores_.shape == (1, len(ALPHAS))
    independent = [_alone(X, y, alpha) for alpha in cv.alphas_]
    for point, model in zip(path, independent, strict=True):
        loss, accuracy = score(model.coef_, model.intercept_, X_val, 1.0, y_val)
        assert point["loss"] == pytest.approx(loss, rel=1e-6)
        assert point["accuracy"] == accuracy
    best = int(np.argmax([-score(m.coef_, m.intercept_, X_val, 1.0, y_val)[0]
                          for m in independent]))
    assert cv.alpha_ == cv.alphas_[best]
    np.testing.assert_allclose(cv.coef_, independent[best].coef_, rtol=1e-4, atol=1e-6)
    assert cv.coefs_paths_.shape == (1, len(ALPHAS), 4, X.shape[1] + 1)
    for fitted, model in zip(cv.coefs_paths_[0], independent, strict=True):
        np.testing.assert_allclose(fitted[:, :-1], model.coef_, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(fitted[:, -1], model.intercept_, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(cv.coefs_paths_[0, best, :, :-1], cv.coef_)
    # the point of the path: warm starts need fewer iterations than fits from zero
    assert cv.n_iter_.sum() < sum(m.n_iter_ for m in independent)


def test_a_path_in_its_classes_coordinates_equals_independent_fits():
    # At tol >= CLASS_WHITENING_MIN_TOL each warm start runs in coordinates fitted to its
    # classes' curvature there (the test above, at 1e-9, keeps those of a start from zero).
    from test_lbfgs_resolution import unit_norm_embeddings

    X, y = unit_norm_embeddings(n=3000, d=24, c=8, seed=2)
    X_val, y_val = X[2400:], y[2400:]
    X, y = X[:2400].astype(np.float64), y[:2400]
    params = {"tol": 1e-6, "dtype": "float64", "max_iter": 2000}
    cv = SoftmaxRegressionCV(alphas=8, **params).fit(X, y, eval_set=(X_val, y_val))
    independent = [SoftmaxRegression(solver="lbfgs", alpha=float(a), **params).fit(X, y)
                   for a in cv.alphas_]
    for j, model in enumerate(independent):
        path = SoftmaxRegression(solver="lbfgs", alpha=float(cv.alphas_[j]), **params)
        path.coef_, path.intercept_ = cv.coefs_paths_[0, j, :, :-1], cv.coefs_paths_[0, j, :, -1]
        path.classes_, path.n_features_in_ = model.classes_, model.n_features_in_
        assert path.objective(X, y) == pytest.approx(model.objective(X, y), rel=1e-6)
    accuracies = [score(m.coef_, m.intercept_, X_val, 1.0, y_val)[1] for m in independent]
    assert cv.alpha_ == cv.alphas_[int(np.argmax(accuracies))]
    assert cv.n_iter_.sum() < sum(m.n_iter_ for m in independent)


def test_folds_refit_the_chosen_alpha_on_all_the_data(data):
    X, y, _, _ = data
    cv = SoftmaxRegressionCV(alphas=ALPHAS, cv=3, **EXACT).fit(X, y)
    assert cv.scores_.shape == (3, len(ALPHAS)) and cv.n_iter_.shape == (3, len(ALPHAS))
    assert cv.coefs_paths_.shape == (3, len(ALPHAS), 4, X.shape[1] + 1)
    assert cv.alpha_ in cv.alphas_
    assert cv.best_score_ == pytest.approx(cv.scores_.mean(axis=0).max())
    alone = _alone(X, y, cv.alpha_)
    assert cv.objective(X, y) == pytest.approx(alone.objective(X, y), rel=1e-9)
    np.testing.assert_array_equal(cv.predict(X), alone.predict(X))


def test_a_loose_tolerance_still_moves_the_path_at_weak_regularization(data):
    # At tol 1e-4 the gradient a warm start begins with, (alpha - alpha_prev) coef, is below
    # tol once alpha is small: each weak strength used to stop with 0 iterations and repeat
    # the previous model. Each strength must now end far nearer its own optimum than the
    # previous strength's optimum is (training cross-entropy, scored on the training set).
    X, y, _, _ = data
    alphas = [1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6]
    path = []
    SoftmaxRegressionCV(alphas=alphas, dtype="float64", tol=1e-4).fit(
        X, y, eval_set=(X, y.astype(np.intp)), on_alpha=path.append)
    exact = [score(m.coef_, m.intercept_, X, 1.0, y.astype(np.intp))[0]
             for m in (_alone(X, y, alpha) for alpha in alphas)]
    assert all(point["n_iter"] > 0 for point in path)
    for j in range(1, len(alphas)):
        assert abs(path[j]["loss"] - exact[j]) < 0.1 * abs(exact[j - 1] - exact[j]), j


def test_the_start_is_extrapolated_in_log_alpha():
    coef = np.array([[1.0, -2.0], [0.5, 0.0]])
    line = [(coef * t, np.array([t, -t])) for t in (0.0, 1.0)]  # optimum = t coef, t = log10
    start = predicted_start([1.0, 10.0, 1000.0], line)
    np.testing.assert_allclose(start[0], 3.0 * coef)
    np.testing.assert_allclose(start[1], [3.0, -3.0])
    assert predicted_start([1.0, 10.0], line[:1]) is None  # one optimum: no line
    assert predicted_start([1.0, 0.0, 0.0], line) is None  # no log of 0
    # three optima or more: the parabola through the last three (a curve far from a line)
    curve = [(coef * t**2, np.array([t**2, 1.0])) for t in (-3.0, 0.0, 1.0, 2.0)]
    start = predicted_start([1e-3, 1.0, 10.0, 100.0, 1e4], curve)
    np.testing.assert_allclose(start[0], 16.0 * coef)
    np.testing.assert_allclose(start[1], [16.0, 1.0])


def test_a_path_step_asks_for_a_share_of_its_own_gradient():
    coef = np.array([[2.0, -4.0]])
    assert path_tolerance(-1e-3, coef, np.float64, 0.1) == pytest.approx(0.1 * 1e-3 * 4.0)
    # float32 stops where its rounding lets the line search still make progress
    assert path_tolerance(-1e-9, coef, np.float32, 0.1) == 1e-6
    assert path_tolerance(-1e-9, coef, np.float64, 0.1) == pytest.approx(4e-10)
    assert path_tolerance(-1e-13, coef, np.float64, 0.1) == 1e-12
