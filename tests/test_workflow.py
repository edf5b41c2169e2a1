"""softmax_fast.workflow: the train-and-test workflow behind ``softmax-fast train``, no Click."""

import contextlib

import numpy as np
import pytest

from softmax_fast import workflow
from softmax_fast._training.sampling import stratified_split_indices
from softmax_fast._training.scoring import score
from softmax_fast.backends import resolve_backend_name
from softmax_fast.estimator import SoftmaxRegression


@pytest.fixture(scope="module")
def data():
    """A 3-class, 5-feature problem: (X, y, X_test, y_test)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 5))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    return X[:300], y[:300], X[300:], y[300:]


BASE = dict(solver="sgd", max_iter=3, random_state=0, backend="reference", n_threads=1)


def test_prepare_splits_like_every_trainer_and_settles_the_params(data):
    X, y, X_test, y_test = data
    plan = workflow.prepare_training(X, y, X_test, y_test, BASE, validation_fraction=0.25)
    fit_idx, val_idx = stratified_split_indices(y, 0.25, 0)
    np.testing.assert_array_equal(plan.X_fit, X[fit_idx])
    np.testing.assert_array_equal(plan.y_val, y[val_idx])
    # Without early stopping: exactly max_iter epochs. Float data: input scale 1.
    assert plan.params["early_stopping"] is False and plan.params["tol"] == 0.0
    assert plan.params["n_iter_no_change"] == 4 and plan.params["input_scale"] == 1.0
    assert plan.params["backend"] == "reference"
    assert plan.n_features == 5 and plan.n_classes == 3


def test_prepare_resolves_auto_and_scales_pixels(data):
    X, y, X_test, y_test = data
    pixels = (np.abs(X) * 50).astype(np.uint8)
    plan = workflow.prepare_training(pixels, y, pixels, y, dict(BASE, backend="auto",
                                                                early_stopping=True,
                                                                n_iter_no_change=2))
    assert plan.params["backend"] == resolve_backend_name("auto")
    assert plan.params["input_scale"] == pytest.approx(1 / 255)
    assert plan.params["early_stopping"] is True and plan.params["n_iter_no_change"] == 2
    assert plan.params["tol"] == SoftmaxRegression().tol


def test_prepare_reports_an_impossible_split():
    X, y = np.zeros((4, 2)), np.array([0, 0, 0, 1])
    with pytest.raises(workflow.ValidationSplitError) as caught:
        workflow.prepare_training(X, y, X, y, BASE, validation_fraction=0.5)
    assert caught.value.fraction == 0.5 and "least populated class" in str(caught.value.reason)


def test_run_reports_phases_epochs_and_scores(data):
    X, y, X_test, y_test = data
    plan = workflow.prepare_training(X, y, X_test, y_test, BASE)
    phases, records = [], []

    def on_phase(phase):
        phases.append((phase.name, phase.epochs, phase.n_samples))
        return contextlib.nullcontext()

    result = workflow.run_training(plan, retrain_on_full=True, on_phase=on_phase,
                                   on_epoch=records.append)
    assert phases == [("training", 3, len(plan.y_fit)), ("retraining", 3, len(y))]
    assert [r["epoch"] for r in records] == [1, 2, 3, 1, 2, 3]
    assert result.retrained["n_samples"] == len(y) and result.retrained["epochs"] == 3
    final = result.final
    assert final is not result.model and final.n_iter_ == 3
    # The one scoring function gives the reported figures.
    y_idx = np.searchsorted(final.classes_, y_test)
    assert (result.test_cost, result.test_accuracy) == pytest.approx(
        score(final.coef_, final.intercept_, X_test, final.input_scale, y_idx))
    np.testing.assert_array_equal(result.test_labels, y_idx)
    assert result.test_predictions.shape == y_test.shape


def test_retrain_epochs_is_the_best_epoch_with_early_stopping():
    model = SoftmaxRegression()
    model.n_iter_ = 4
    model.history_ = [{"epoch": e, "val_loss": loss} for e, loss in
                      zip([1, 2, 3, 4], [0.9, 0.5, 0.7, 0.6], strict=True)]
    assert workflow.retrain_epochs(model, early_stopping=True) == 2
    assert workflow.retrain_epochs(model, early_stopping=False) == 4


def test_lbfgs_warnings_are_collected_not_printed(data, recwarn):
    X, y, X_test, y_test = data
    plan = workflow.prepare_training(X, y, X_test, y_test, dict(BASE, solver="lbfgs",
                                                                max_iter=1))
    phases = []
    workflow.run_training(plan, on_phase=phases.append)
    assert "did not converge" in phases[0].warnings[-1]
    assert not [w for w in recwarn if "did not converge" in str(w.message)]


def test_score_model_checks_features_and_labels(data):
    X, y, X_test, y_test = data
    model = SoftmaxRegression(max_iter=1, backend="reference").fit(X, y)
    with pytest.raises(workflow.DataMismatchError, match="test: 4 features but the model was "
                                                         "trained on 5"):
        workflow.score_model(model, X_test[:, :4], y_test, "test")
    with pytest.raises(workflow.DataMismatchError, match="never seen: 7.*knows 0, 1, 2"):
        workflow.score_model(model, X_test, np.full(len(y_test), 7), "test")
    figures = workflow.evaluate_model(model, X_test, y_test, "test")
    assert figures.confusion_matrix.sum() == len(y_test)
    assert figures.accuracy == pytest.approx(model.score(X_test, y_test))


@pytest.mark.parametrize("params, fraction, message", [
    (dict(BASE, random_state=-1), 0.2, "random_state must be an integer in"),
    (dict(BASE, random_state=2**32), 0.2, "random_state must be an integer in"),
    (dict(BASE, random_state=1.5), 0.2, "random_state must be an integer in"),
    (BASE, float("nan"), "validation_fraction must be a number in"),
    (BASE, 1.0, "validation_fraction must be a number in"),
    (BASE, True, "validation_fraction must be a number in"),
])
def test_prepare_refuses_bad_seeds_and_fractions_as_themselves(data, params, fraction, message):
    # Not a ValidationSplitError: the split is not what is wrong.
    X, y, X_test, y_test = data
    with pytest.raises(ValueError, match=message) as caught:
        workflow.prepare_training(X, y, X_test, y_test, params, validation_fraction=fraction)
    assert not isinstance(caught.value, workflow.ValidationSplitError)
