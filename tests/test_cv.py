"""SoftmaxRegressionCV: the warm-started regularization path against independent fits.

The path fits the strengths from strong to weak, each from the previous optimum; the
optimum of a strictly convex objective does not depend on where L-BFGS starts, so every
point of the path must equal a fit from zero at the same strength, and the strength chosen
must be the one independent fits would choose — in fewer iterations.
"""

import numpy as np
import pytest
from sklearn.datasets import make_classification

from softmax_fast import SoftmaxRegression, SoftmaxRegressionCV
from softmax_fast._training.scoring import score

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
    # the point of the path: warm starts need fewer iterations than fits from zero
    assert cv.n_iter_.sum() < sum(m.n_iter_ for m in independent)


def test_folds_refit_the_chosen_alpha_on_all_the_data(data):
    X, y, _, _ = data
    cv = SoftmaxRegressionCV(alphas=ALPHAS, cv=3, **EXACT).fit(X, y)
    assert cv.scores_.shape == (3, len(ALPHAS)) and cv.n_iter_.shape == (3, len(ALPHAS))
    assert cv.alpha_ in cv.alphas_
    assert cv.best_score_ == pytest.approx(cv.scores_.mean(axis=0).max())
    alone = _alone(X, y, cv.alpha_)
    assert cv.objective(X, y) == pytest.approx(alone.objective(X, y), rel=1e-9)
    np.testing.assert_array_equal(cv.predict(X), alone.predict(X))
