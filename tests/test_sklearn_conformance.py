"""A scikit-learn citizen: check_estimator, binary problems, partial_fit schedules, defaults.

``check_estimator`` must pass with no failure and no expected-failure list, for the default
estimator and for the regularization-path estimator.
"""

import warnings

import numpy as np
import pytest
from sklearn import datasets
from sklearn.calibration import CalibratedClassifierCV
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score, train_test_split
from sklearn.utils.estimator_checks import parametrize_with_checks

from softmax_fast import SoftmaxRegression, SoftmaxRegressionCV


@parametrize_with_checks([SoftmaxRegression(), SoftmaxRegression(solver="lbfgs"),
                          SoftmaxRegression(solver="newton-cg"),
                          SoftmaxRegressionCV(alphas=4, cv=3)])
def test_check_estimator(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


@pytest.fixture(scope="module")
def binary():
    X, y = datasets.make_classification(n_samples=300, n_features=8, random_state=0)
    return X, np.where(y == 1, "yes", "no")


@pytest.mark.parametrize("solver", ["lbfgs", "sgd"])
def test_binary_problems_behave_as_logistic_regression(binary, solver):
    X, y = binary
    model = SoftmaxRegression(solver=solver, random_state=0).fit(X, y)
    assert model.coef_.shape == (1, 8) and model.intercept_.shape == (1,)
    scores = model.decision_function(X)
    assert scores.shape == (300,)
    # the scores are the log-odds of the second class
    np.testing.assert_array_equal(model.predict(X), model.classes_[(scores > 0).astype(int)])
    expected = 1.0 / (1.0 + np.exp(-scores))
    np.testing.assert_allclose(model.predict_proba(X)[:, 1], expected, rtol=1e-6, atol=1e-9)
    assert model.multinomial_coef_.shape == (2, 8)
    np.testing.assert_allclose(model.multinomial_coef_[1] - model.multinomial_coef_[0],
                               model.coef_[0], rtol=1e-6)


def test_binary_lbfgs_matches_scikit_learns_multinomial_optimum(binary):
    X, y = binary
    ours = SoftmaxRegression(solver="lbfgs", tol=1e-10, max_iter=5000).fit(X, y)
    sk = LogisticRegression(tol=1e-10, max_iter=5000).fit(X, y)
    # alpha="auto" makes the objective LogisticRegression()'s (C = 1): the same optimum
    np.testing.assert_allclose(ours.coef_, sk.coef_, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours.intercept_, sk.intercept_, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours.predict_proba(X), sk.predict_proba(X), atol=1e-6)


def test_roc_auc_and_calibration_work(binary):
    X, y = binary
    auc = cross_val_score(SoftmaxRegression(), X, y, cv=3, scoring="roc_auc")
    assert np.all(np.isfinite(auc)) and auc.mean() > 0.9
    calibrated = CalibratedClassifierCV(SoftmaxRegression(), cv=3).fit(X, y)
    assert calibrated.predict_proba(X).shape == (300, 2)


def test_partial_fit_schedules_by_samples_seen():
    """Six chunks of one pass: one epoch for the step schedule, not six."""
    X, y = datasets.make_classification(n_samples=6000, n_features=20, n_informative=10,
                                        n_classes=3, random_state=0)
    model = SoftmaxRegression(solver="sgd", random_state=0)
    rates = []
    for _pass in range(3):
        for chunk in range(6):
            rows = slice(chunk * 1000, (chunk + 1) * 1000)
            model.partial_fit(X[rows], y[rows], classes=[0, 1, 2], epoch_size=6000)
            rates.append(model.history_[-1]["learning_rate"])
    # lr 0.1 during passes 1 and 2, halved for pass 3 (step every 2 passes)
    assert rates[:12] == [0.1] * 12 and rates[12:] == [0.05] * 6
    assert model.t_ == 18000
    unknown = SoftmaxRegression(solver="sgd", random_state=0)
    for _chunk in range(6):
        unknown.partial_fit(X[:1000], y[:1000], classes=[0, 1, 2])
    assert {r["learning_rate"] for r in unknown.history_} == {0.1}  # no pass size: no steps


def test_partial_fit_is_unavailable_for_lbfgs():
    assert not hasattr(SoftmaxRegression(solver="lbfgs"), "partial_fit")
    assert hasattr(SoftmaxRegression(), "partial_fit")


@pytest.mark.parametrize("name", ["load_iris", "load_digits", "load_wine",
                                  "load_breast_cancer"])
def test_defaults_match_logistic_regression_on_small_data(name):
    """solver="auto" gives small data the exact optimum of LogisticRegression()'s objective."""
    X, y = getattr(datasets, name)(return_X_y=True)
    ours, theirs = [], []
    for seed in range(10):
        X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, stratify=y,
                                                  random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            theirs.append(LogisticRegression().fit(X_tr, y_tr).score(X_te, y_te))
            model = SoftmaxRegression(random_state=0).fit(X_tr, y_tr)
        assert model.solver_ == "lbfgs"
        ours.append(model.score(X_te, y_te))
    assert np.mean(ours) >= np.mean(theirs) - 0.01


def test_sgd_warns_when_stopped_while_still_learning():
    X, y = datasets.load_digits(return_X_y=True)
    with pytest.warns(ConvergenceWarning, match="still falling"):
        SoftmaxRegression(solver="sgd", max_iter=2, learning_rate="constant",
                          learning_rate_init=0.001, random_state=0).fit(X / 16.0, y)


def test_get_params_shows_what_auto_means_after_fit():
    X, y = datasets.load_iris(return_X_y=True)
    model = SoftmaxRegression()
    assert model.get_params()["max_iter"] == "auto" and model.get_params()["alpha"] == "auto"
    model.fit(X, y)
    assert model.solver_ == "lbfgs" and model.alpha_ == pytest.approx(1 / 150)


def test_newton_cg_reaches_the_lbfgs_optimum():
    X, y = datasets.load_digits(return_X_y=True)
    X = X / 16.0
    newton = SoftmaxRegression(solver="newton-cg", tol=1e-8, dtype="float64").fit(X, y)
    lbfgs = SoftmaxRegression(solver="lbfgs", tol=1e-10, max_iter=5000,
                              dtype="float64").fit(X, y)
    assert newton.solver_ == "newton-cg" and newton.n_iter_ < lbfgs.n_iter_
    assert newton.objective(X, y) == pytest.approx(lbfgs.objective(X, y), rel=1e-8)
    assert not hasattr(newton, "partial_fit")
