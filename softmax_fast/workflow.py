"""The train-and-test workflow of ``softmax-fast train``, and the scoring of saved models.

A command-line-free library layer: the CLI parses options, loads data and prints, and
everything between — the validation split, the epoch rules, the retrain on all the training
data and the scoring — is here, usable from Python and testable without Click::

    plan = prepare_training(X, y, X_test, y_test, dict(max_iter=5, random_state=0))
    result = run_training(plan, retrain_on_full=True)
    result.test_accuracy

The rules, one place each:

* The validation split is the stratified, seeded split of every trainer
  (:func:`softmax_fast._training.sampling.stratified_split_indices`), so ``train --seed S``
  sees the training and validation rows ``grid_search(random_state=S)`` sees.
* The input scale defaults to :func:`softmax_fast._training.sampling.default_input_scale`
  (1/255 for uint8 pixels).
* Without early stopping an SGD run is exactly ``max_iter`` epochs (no stop on a training
  plateau); L-BFGS stops at its gradient tolerance ``tol`` or after ``max_iter`` iterations.
* :func:`run_path` chooses the L2 strength on the validation part (the regularization path
  of :class:`~softmax_fast.cv.SoftmaxRegressionCV`, warm-started, strongest first).
* ``retrain_on_full`` retrains on training + validation data for the best epoch with early
  stopping, else for the epochs the first run ran.
* Every loss and accuracy comes from :func:`softmax_fast._training.scoring.score`.
"""

import contextlib
import dataclasses
import math
import numbers
import time
import warnings

import numpy as np
import scipy.sparse as sp

from softmax_fast._training.sampling import default_input_scale, stratified_split_indices
from softmax_fast._training.scoring import score

__all__ = [
    "DataMismatchError",
    "ValidationSplitError",
    "Phase",
    "TrainingPlan",
    "TrainingResult",
    "EvaluationResult",
    "prepare_training",
    "run_training",
    "run_path",
    "retrain_epochs",
    "score_model",
    "evaluate_model",
]


class DataMismatchError(ValueError):
    """Data that does not fit a model: another number of features, or unknown labels."""


class ValidationSplitError(ValueError):
    """The stratified validation split is impossible (too few samples of a class, say).

    Attributes
    ----------
    fraction : float
        The validation fraction asked for.
    reason : str
        Why scikit-learn could not split.
    """

    def __init__(self, fraction, reason):
        super().__init__(f"cannot hold out a stratified validation_fraction={fraction}: "
                         f"{reason}")
        self.fraction = fraction
        self.reason = reason


@dataclasses.dataclass
class Phase:
    """One fit of the workflow, as shown to ``on_phase``.

    Attributes
    ----------
    name : {"training", "retraining", "path"}
        The fit on the training part, the retrain on training + validation data, or the
        regularization path (:func:`run_path`).
    solver : {"sgd", "lbfgs"}
    epochs : int
        Epochs (SGD) or at most that many iterations (L-BFGS; per strength on a path).
    n_samples : int
    warnings : list of str
        Warnings of the fit (L-BFGS that did not converge), filled when it ends.
    """

    name: str
    solver: str
    epochs: int
    n_samples: int
    warnings: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class TrainingPlan:
    """The data and estimator parameters of a run (see :func:`prepare_training`)."""

    X_fit: object
    y_fit: np.ndarray
    X_val: object
    y_val: np.ndarray
    X_test: object
    y_test: np.ndarray
    params: dict

    @property
    def n_features(self):
        return int(self.X_fit.shape[1])

    @property
    def n_classes(self):
        return len(np.unique(np.concatenate([self.y_fit, self.y_val])))


@dataclasses.dataclass
class TrainingResult:
    """What :func:`run_training` found.

    ``model`` is trained on the training part and scored on the validation part; ``final``
    is the reported model (``model``, or the retrain on training + validation data), scored on
    the test data. ``test_labels`` and ``test_predictions`` are class indices (for a
    confusion matrix); ``retrained`` describes the retrain (None without one).
    ``iterations`` are the L-BFGS records of the training fit (``iteration``,
    ``train_loss``, ``seconds``; None for SGD); ``path`` the rows of a regularization path
    (``alpha``, ``val_loss``, ``val_accuracy``, ``n_iter``, ``seconds``; None without one)
    and ``alpha`` the strength it chose.
    """

    model: object
    final: object
    train_seconds: float
    validation_cost: float
    validation_accuracy: float
    test_cost: float
    test_accuracy: float
    test_labels: np.ndarray
    test_predictions: np.ndarray
    retrained: dict | None = None
    iterations: list | None = None
    path: list | None = None
    alpha: float | None = None


@dataclasses.dataclass
class EvaluationResult:
    """A saved model's figures on labelled data (see :func:`evaluate_model`)."""

    cost: float
    accuracy: float
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    confusion_matrix: np.ndarray


# ----------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------
def score_model(model, X, y, what):
    """Mean cross-entropy (unregularised), accuracy, true and predicted class indices.

    Parameters
    ----------
    model : fitted SoftmaxRegression
    X, y : the data and its labels
    what : str
        Names the data in error messages ("validation", "test data", a file name).

    Raises
    ------
    DataMismatchError
        If ``X`` has another number of features than the model, or ``y`` labels it does not
        know.
    """
    if X.shape[1] != model.n_features_in_:
        raise DataMismatchError(f"{what}: {X.shape[1]} features but the model was trained on "
                                f"{model.n_features_in_}; use data shaped like the training data")
    y_idx = _class_indices(model.classes_, y, what)
    # multinomial_*: one row per class, also for two classes (coef_ has one row there)
    cost, accuracy, predictions = score(model.multinomial_coef_,
                                        model.multinomial_intercept_, X,
                                        float(model.input_scale), y_idx,
                                        return_predictions=True)
    return cost, accuracy, y_idx, predictions


def _class_indices(classes, y, what):
    y = np.asarray(y)
    classes = np.asarray(classes)
    if classes.dtype.kind in "US" and y.dtype.kind in "iu":
        y = y.astype(str)  # string class names saved for labels read as text
    unknown = np.setdiff1d(np.unique(y), classes)
    if unknown.size:
        shown = ", ".join(map(str, unknown[:5].tolist()))
        raise DataMismatchError(
            f"{what}: labels the model has never seen: {shown} (it knows "
            f"{', '.join(map(str, classes.tolist()))}); use data with the same classes")
    return np.searchsorted(classes, y).astype(np.intp)


def evaluate_model(model, X, y, what):
    """Cost, accuracy, per-class precision/recall/F1/support and confusion matrix.

    Rows and columns of the confusion matrix are ``model.classes_`` (true, predicted).
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    cost, accuracy, y_idx, pred_idx = score_model(model, X, y, what)
    labels = list(range(len(model.classes_)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_idx, pred_idx, labels=labels, zero_division=0)
    matrix = confusion_matrix(y_idx, pred_idx, labels=labels)
    return EvaluationResult(cost, accuracy, precision, recall, f1, support, matrix)


# ----------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------
def prepare_training(X_train, y_train, X_test, y_test, params, *, validation_fraction=0.2):
    """Split off the validation part and settle the estimator parameters of a run.

    Parameters
    ----------
    X_train, y_train : training data (split into training and validation parts)
    X_test, y_test : test data
    params : dict
        :class:`~softmax_fast.estimator.SoftmaxRegression` parameters. ``random_state`` (an
        int) also seeds the split; ``backend`` is resolved to a name (``"auto"`` to the one
        that will run); ``input_scale`` defaults to the data's; ``early_stopping`` (with
        ``n_iter_no_change`` as its patience) is the one way to stop before ``max_iter``.
    validation_fraction : float

    Raises
    ------
    ValueError
        If ``validation_fraction`` is not in (0, 1) or ``random_state`` is not a seed
        (an integer in [0, 2**32 - 1], a RandomState or None).
    ValidationSplitError
        If the stratified split is impossible.
    """
    seed = params.get("random_state", 0)
    # Checked here, not left to the split: its error would blame the validation split.
    _check_seed(seed)
    if isinstance(validation_fraction, bool) or \
            not isinstance(validation_fraction, numbers.Real) or \
            math.isnan(validation_fraction) or not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be a number in (0, 1), got "
                         f"{validation_fraction!r}")
    try:
        fit_idx, val_idx = stratified_split_indices(y_train, validation_fraction, seed)
    except ValueError as exc:
        raise ValidationSplitError(validation_fraction, exc.__cause__ or exc) from exc
    return TrainingPlan(X_train[fit_idx], y_train[fit_idx], X_train[val_idx], y_train[val_idx],
                        X_test, y_test, _run_params(params, X_train))


def _check_seed(seed):
    if seed is None or isinstance(seed, np.random.RandomState):
        return
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) \
            or not 0 <= seed <= 2**32 - 1:
        raise ValueError(f"random_state must be an integer in [0, 2**32 - 1], a RandomState or "
                         f"None, got {seed!r}")


def _run_params(params, X):
    """``params`` with the backend resolved, the input scale settled and the epoch rule."""
    from softmax_fast.backends import resolve_backend_name
    from softmax_fast.estimator import SoftmaxRegression

    defaults = SoftmaxRegression().get_params()
    run = {k: v for k, v in params.items()
           if k not in ("input_scale", "early_stopping", "tol", "n_iter_no_change")}
    run["backend"] = resolve_backend_name(params.get("backend", defaults["backend"]))
    scale = params.get("input_scale")
    run["input_scale"] = default_input_scale(X) if scale is None else float(scale)
    if run.get("solver") == "lbfgs":
        # Not the fixed-epochs rule: tol=0 would keep L-BFGS from ever converging.
        run.update(max_iter=run.get("max_iter") or 100, tol=params.get("tol", defaults["tol"]))
        return run
    if not params.get("early_stopping", False):
        return _fixed_epochs(run, run.get("max_iter") or 10)
    run.update(early_stopping=True, tol=params.get("tol", defaults["tol"]),
               n_iter_no_change=params.get("n_iter_no_change", defaults["n_iter_no_change"]))
    return run


def _fixed_epochs(params, epochs):
    """``params`` that run exactly ``epochs`` epochs: no early stopping, no plateau stop."""
    return dict(params, max_iter=epochs, early_stopping=False, tol=0.0,
                n_iter_no_change=epochs + 1)


def retrain_epochs(model, early_stopping):
    """Epochs of the retrain on all training data: the best epoch with early stopping (the
    epoch of the lowest validation loss), else the epochs ``model`` ran."""
    history = getattr(model, "history_", None) or []
    if early_stopping and history:
        return int(min(history, key=lambda record: record["val_loss"])["epoch"])
    return int(model.n_iter_)


def run_training(plan, *, retrain_on_full=False, on_phase=None, on_epoch=None,
                 on_iteration=None):
    """Train on the training part, score on validation, optionally retrain, score on test.

    Parameters
    ----------
    plan : TrainingPlan
        From :func:`prepare_training`.
    retrain_on_full : bool
        Retrain on training + validation data (for :func:`retrain_epochs` epochs) and report
        that model on the test data.
    on_phase : callable, optional
        ``on_phase(phase)`` with a :class:`Phase` before each fit; it may return a context
        manager, which is entered around the fit (a progress bar, say).
    on_epoch : callable, optional
        ``on_epoch(record)`` with each SGD epoch's history record.
    on_iteration : callable, optional
        ``on_iteration(record)`` after each L-BFGS iteration of the training fit, with
        ``iteration``, ``train_loss`` (the objective) and ``seconds`` since the fit began.

    Returns
    -------
    TrainingResult

    Raises
    ------
    softmax_fast.estimator.TrainingDivergedError
        If a fit diverges.
    DataMismatchError
        If the test data has labels the training data does not.
    """
    from softmax_fast.estimator import SoftmaxRegression

    params = plan.params
    model = SoftmaxRegression(**params)
    phase = Phase("training", params["solver"], params["max_iter"], len(plan.y_fit))
    iterations = [] if params["solver"] == "lbfgs" else None
    tic = time.perf_counter()

    def iteration(number, loss):
        record = {"iteration": number, "train_loss": loss,
                  "seconds": time.perf_counter() - tic}
        iterations.append(record)
        if on_iteration is not None:
            on_iteration(record)

    _fit(model, plan.X_fit, plan.y_fit, (plan.X_val, plan.y_val), phase, on_phase, on_epoch,
         iteration)
    train_seconds = time.perf_counter() - tic
    if iterations == [] and getattr(model, "loss_curve_", None):
        # converged before a first iteration (a warm start at the optimum): the optimum
        iterations.append({"iteration": int(model.n_iter_),
                           "train_loss": float(model.loss_curve_[-1]),
                           "seconds": train_seconds})
    result = _finish(plan, model, train_seconds, retrain_on_full, on_phase, on_epoch)
    result.iterations = iterations
    return result


def run_path(plan, alphas, *, retrain_on_full=False, on_phase=None, on_alpha=None):
    """Choose the L2 strength on the validation part, then score that model on the test data.

    The regularization path of :class:`~softmax_fast.cv.SoftmaxRegressionCV` (L-BFGS,
    strongest first, each fit warm-started from the previous ones) on the training part,
    scored on the validation part (its ``eval_set``): the linear-probe protocol. ``plan.params``
    gives ``max_iter`` (per strength), ``tol``, ``input_scale``, the backend and the seed;
    its ``alpha`` is not used.

    Parameters
    ----------
    plan : TrainingPlan
        From :func:`prepare_training` (``solver="lbfgs"``).
    alphas : sequence of float
        The strengths to try (>= 0).
    retrain_on_full : bool
        Refit the chosen strength on training + validation data and report that model.
    on_phase : callable, optional
        As for :func:`run_training`; the path is a :class:`Phase` named ``"path"``.
    on_alpha : callable, optional
        ``on_alpha(row)`` after each strength, with the row of ``TrainingResult.path``.

    Returns
    -------
    TrainingResult
        ``model`` is the path's model at the chosen ``alpha`` (fitted on the training part).
    """
    from sklearn.exceptions import ConvergenceWarning

    from softmax_fast.cv import SoftmaxRegressionCV

    params = plan.params
    cv = SoftmaxRegressionCV(
        alphas=list(alphas), max_iter=params["max_iter"], tol=params["tol"],
        input_scale=params["input_scale"], backend=params["backend"],
        n_threads=params.get("n_threads"), random_state=params.get("random_state"),
        dtype=params.get("dtype", "auto"))
    phase = Phase("path", "lbfgs", params["max_iter"], len(plan.y_fit))
    rows = []
    tic = time.perf_counter()

    def record(fit):
        rows.append({"alpha": fit["alpha"], "val_loss": float(fit["loss"]),
                     "val_accuracy": float(fit["accuracy"]), "n_iter": fit["n_iter"],
                     "seconds": time.perf_counter() - tic - sum(r["seconds"] for r in rows)})
        if on_alpha is not None:
            on_alpha(rows[-1])

    display = on_phase(phase) if on_phase is not None else None
    with display if display is not None else contextlib.nullcontext(), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # each row shows its iterations
        cv.fit(plan.X_fit, plan.y_fit, eval_set=(plan.X_val, plan.y_val), on_alpha=record)
    train_seconds = time.perf_counter() - tic
    chosen = dict(params, alpha=cv.alpha_)
    model = _as_plain_model(cv, chosen)
    path_plan = dataclasses.replace(plan, params=chosen)
    result = _finish(path_plan, model, train_seconds, retrain_on_full, on_phase, None)
    result.path, result.alpha = rows, cv.alpha_
    return result


def _as_plain_model(cv, params):
    """The chosen model of a path as the :class:`SoftmaxRegression` it is (saved and loaded
    as one: a model file has no place for the path's own parameters)."""
    from softmax_fast.estimator import SoftmaxRegression

    model = SoftmaxRegression(**params)
    for name in ("coef_", "intercept_", "classes_", "n_features_in_", "loss_curve_",
                 "stop_reason_", "alpha_"):
        if hasattr(cv, name):
            setattr(model, name, getattr(cv, name))
    best = int(np.flatnonzero(cv.alphas_ == cv.alpha_)[0])
    model.n_iter_ = int(cv.n_iter_[0, best])
    return model


def _finish(plan, model, train_seconds, retrain_on_full, on_phase, on_epoch):
    """Score ``model`` on validation, retrain if asked, score the reported model on test."""
    val_cost, val_acc, _, _ = score_model(model, plan.X_val, plan.y_val, "validation")
    final, retrained = model, None
    if retrain_on_full:
        final, retrained = _retrain_on_full(plan, model, on_phase, on_epoch)
    test_cost, test_acc, y_idx, pred_idx = score_model(final, plan.X_test, plan.y_test,
                                                       "test data")
    return TrainingResult(model, final, train_seconds, val_cost, val_acc, test_cost, test_acc,
                          y_idx, pred_idx, retrained)


def _retrain_on_full(plan, model, on_phase, on_epoch):
    from softmax_fast.estimator import SoftmaxRegression

    epochs = retrain_epochs(model, plan.params.get("early_stopping", False))
    if plan.params["solver"] == "lbfgs":
        epochs = plan.params["max_iter"]  # L-BFGS runs to its optimum, not to a count
    X_full = sp.vstack([plan.X_fit, plan.X_val]).tocsr() if sp.issparse(plan.X_fit) \
        else np.concatenate([plan.X_fit, plan.X_val])
    y_full = np.concatenate([plan.y_fit, plan.y_val])
    params = plan.params if plan.params["solver"] == "lbfgs" \
        else _fixed_epochs(plan.params, epochs)
    final = SoftmaxRegression(**params)
    phase = Phase("retraining", plan.params["solver"], epochs, len(y_full))
    tic = time.perf_counter()
    _fit(final, X_full, y_full, None, phase, on_phase, on_epoch)
    return final, {"n_samples": int(X_full.shape[0]), "epochs": epochs,
                   "seconds": time.perf_counter() - tic,
                   "history": list(getattr(final, "history_", []))}


def _fit(model, X, y, eval_set, phase, on_phase, on_epoch, on_iteration=None):
    display = on_phase(phase) if on_phase is not None else None
    with display if display is not None else contextlib.nullcontext():
        if phase.solver != "lbfgs":
            model.fit(X, y, eval_set=eval_set, on_epoch=on_epoch)
            return
        from sklearn.exceptions import ConvergenceWarning

        def iteration(record):  # the estimator reports every L-BFGS iteration
            if on_iteration is not None:
                on_iteration(record["epoch"], record["train_loss"])

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(X, y, on_epoch=iteration)  # full batch: no epochs to validate
        phase.warnings.extend(str(w.message) for w in caught)
