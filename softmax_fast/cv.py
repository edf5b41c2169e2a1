"""``SoftmaxRegressionCV``: the L2 strength chosen along a warm-started regularization path.

The linear-probe protocol of representation learning (CLIP, DINO, MAE …) fits scikit-learn's
exact L-BFGS optimum for many regularization strengths and keeps the one that scores best on
a validation split. Here the strengths run from strong to weak and each fit starts from the
previous optimum — strongly regularised problems converge in a few iterations and each next
optimum is close to the last — so a path of 16 strengths costs a few single fits, not 16.

Follows scikit-learn's ``LogisticRegressionCV``: ``alphas`` plays the role of ``Cs``
(alpha = 1 / (C n_samples)), ``cv`` folds (stratified) or, with
``fit(X, y, eval_set=(X_val, y_val))``, one given validation set; ``scores_``, ``alpha_``,
``alphas_`` and, with ``refit``, the model at ``alpha_`` fitted on all of ``X``.
"""

import math
import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from softmax_fast._training.lbfgs import path_tolerance
from softmax_fast._training.scoring import score
from softmax_fast.estimator import SoftmaxRegression

__all__ = ["SoftmaxRegressionCV", "default_alphas"]

#: A warm-started step of the path shrinks its start's gradient at least this much (besides
#: reaching ``tol``); see :func:`softmax_fast._training.lbfgs.path_tolerance`.
PATH_MIN_REDUCTION = 0.1

#: The strongest and weakest default strength (alpha = 1 / (C n)).
ALPHA_RANGE = (1e-1, 1e-7)


def default_alphas(count):
    """``count`` strengths log-spaced from strong (1e-1) to weak (1e-7)."""
    return np.logspace(math.log10(ALPHA_RANGE[0]), math.log10(ALPHA_RANGE[1]), int(count))


#: Optima the next start is extrapolated from (a polynomial in log alpha through them).
PATH_EXTRAPOLATION_POINTS = 3


def predicted_start(alphas, optima):
    """The start for ``alphas[-1]``: the optima at the strengths before it, extrapolated.

    The optimum moves smoothly with log(alpha); a polynomial through the last optima (in
    log alpha) predicts the next one far better than the last optimum alone. Probe 50k x
    512 x 100, 16 strengths, tol 1e-4: 303 L-BFGS iterations from the last optimum, 178-198
    from a straight line through two. A parabola through three, against the line: 142 -> 128
    evaluations of the objective at tol 1e-6, 107 -> 102 at tol 1e-4 (141 -> 133 on 20k
    rows). None when there are fewer than two optima or a strength is 0 (no logarithm).

    Parameters
    ----------
    alphas : sequence of float
        The strengths of ``optima`` followed by the new one.
    optima : list of (coef, intercept)
        The optima at ``alphas[:-1]`` (the last PATH_EXTRAPOLATION_POINTS are used).
    """
    optima = optima[-PATH_EXTRAPOLATION_POINTS:]
    alphas = alphas[-len(optima) - 1:]
    if len(optima) < 2 or min(alphas) <= 0:
        return None
    *known, t = (math.log(a) for a in alphas)
    # Lagrange's form: the weight of each known optimum at t
    weights = [math.prod((t - tj) / (ti - tj) for j, tj in enumerate(known) if j != i)
               for i, ti in enumerate(known)]
    coef = sum(w * coef for w, (coef, _) in zip(weights, optima, strict=True))
    intercept = sum(w * intercept for w, (_, intercept) in zip(weights, optima, strict=True))
    return coef, intercept


class SoftmaxRegressionCV(SoftmaxRegression):
    """Softmax regression whose L2 strength is chosen on a warm-started regularization path.

    Parameters
    ----------
    alphas : int or array-like of float, default=16
        Strengths to try; an int gives that many log-spaced between 1e-1 and 1e-7. They are
        tried from the strongest to the weakest, each fit warm-started from the last three
        optima (a parabola in log alpha) and run until it reaches its own optimum.
    cv : int or cross-validation splitter, default=5
        Stratified folds (an int) or any scikit-learn splitter; ignored when ``fit`` gets an
        ``eval_set``.
    scoring : {"accuracy", "neg_log_loss"}, default="accuracy"
        What the validation folds rank the strengths by (higher is better).
    refit : bool, default=True
        Fit the chosen strength on all of ``X`` (warm-started from the folds' mean optimum);
        with an ``eval_set`` the path's own model at ``alpha_`` (fitted on ``X``) is kept.
    max_iter, tol : L-BFGS iterations per strength (None: 500) and gradient tolerance.
    class_weight, input_scale, backend, n_threads, dtype, random_state, verbose
        As in :class:`SoftmaxRegression`.

    Attributes
    ----------
    alpha_ : float
        The chosen strength.
    alphas_ : ndarray of shape (n_alphas,)
        The strengths tried, strongest first.
    scores_ : ndarray of shape (n_folds, n_alphas)
        Validation score of every strength on every fold (one row with an ``eval_set``).
    best_score_ : float
        Mean validation score at ``alpha_``.
    n_iter_ : ndarray of shape (n_folds, n_alphas)
        L-BFGS iterations of every fit of the path.
    coefs_paths_ : ndarray of shape (n_folds, n_alphas, n_rows, n_features + 1)
        Every fit of the path: its ``coef_`` with its ``intercept_`` as the last column, as
        scikit-learn's ``LogisticRegressionCV.coefs_paths_`` (one array, not a dict by
        class; ``n_rows`` is ``coef_``'s, 1 for two classes with the default objective).
    coef_, intercept_, classes_, n_features_in_ : as in :class:`SoftmaxRegression`.
    """

    _parameter_constraints: dict = {
        "alphas": [Interval(Integral, 1, None, closed="left"), "array-like"],
        "cv": [Interval(Integral, 2, None, closed="left"), "cv_object"],
        "scoring": [StrOptions({"accuracy", "neg_log_loss"})],
        "refit": ["boolean"],
        "max_iter": [Interval(Integral, 1, None, closed="left"), None],
        "tol": [Interval(Real, 0, math.inf, closed="left")],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "input_scale": [Interval(Real, 0, math.inf, closed="neither")],
        "backend": [str],
        "n_threads": [Interval(Integral, 1, None, closed="left"), None],
        "dtype": [StrOptions({"auto", "float32", "float64"}), type, np.dtype],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(self, *, alphas=16, cv=5, scoring="accuracy", refit=True, max_iter=None,
                 tol=1e-4, class_weight=None, input_scale=1.0, backend="auto", n_threads=None,
                 dtype="auto", random_state=None, verbose=False):
        self.alphas = alphas
        self.cv = cv
        self.scoring = scoring
        self.refit = refit
        self.max_iter = max_iter
        self.tol = tol
        self.class_weight = class_weight
        self.input_scale = input_scale
        self.backend = backend
        self.n_threads = n_threads
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose

    # The estimator the path fits: L-BFGS, warm-started from one strength to the next.
    def _path_estimator(self, alpha):
        return SoftmaxRegression(
            solver="lbfgs", alpha=float(alpha), max_iter=self.max_iter, tol=self.tol,
            class_weight=self.class_weight, input_scale=self.input_scale, warm_start=True,
            backend=self.backend, n_threads=self.n_threads, dtype=self.dtype,
            random_state=self.random_state)

    def _alphas(self):
        if isinstance(self.alphas, Integral) and not isinstance(self.alphas, bool):
            return default_alphas(self.alphas)
        alphas = np.asarray(self.alphas, dtype=np.float64).ravel()
        if alphas.size == 0 or not np.all(np.isfinite(alphas)) or np.any(alphas < 0):
            raise ValueError("alphas must be finite numbers >= 0 (at least one)")
        return np.sort(np.unique(alphas))[::-1]  # strongest first

    def fit(self, X, y, sample_weight=None, *, eval_set=None, on_alpha=None):
        """Run the path on every fold (or on ``eval_set``), choose ``alpha_``, refit.

        Parameters
        ----------
        X, y, sample_weight : as in :meth:`SoftmaxRegression.fit`.
        eval_set : tuple (X_val, y_val), optional
            Validation data to score the path on instead of folds (the probe protocol).
        on_alpha : callable(dict), optional
            Called after each fit of the path with ``fold``, ``alpha``, ``score``, ``loss``,
            ``accuracy`` and ``n_iter`` (progress display).

        Returns
        -------
        self
        """
        self._validate_params()
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y "
                             "is None")
        alphas = self._alphas()
        X, y = self._validate_X(X, reset=True, y=y, finite=False)
        self._encode_labels(y, reset=True)  # at least 2 classes: clear errors before the path
        splits = self._splits(X, y, sample_weight, eval_set)
        scores = np.empty((len(splits), len(alphas)))
        n_iter = np.zeros((len(splits), len(alphas)), dtype=int)
        fold_models = []
        for fold, (X_tr, y_tr, w_tr, X_va, y_va) in enumerate(splits):
            models = self._run_path(alphas, X_tr, y_tr, w_tr, X_va, y_va, fold, scores,
                                    n_iter, on_alpha)
            fold_models.append(models)
        mean = scores.mean(axis=0)
        best = int(np.argmax(mean))  # ties: the first, i.e. the strongest regularization
        self.alphas_, self.scores_, self.n_iter_ = alphas, scores, n_iter
        self.coefs_paths_ = np.array(
            [[np.concatenate([m.coef_, m.intercept_[:, None]], axis=1) for m in models]
             for models in fold_models])
        self.alpha_, self.best_score_ = float(alphas[best]), float(mean[best])
        if eval_set is not None or not self.refit:
            final = fold_models[0][best]
        else:
            final = self._refit(X, y, sample_weight, alphas[best],
                                [models[best] for models in fold_models])
        for name in ("coef_", "intercept_", "classes_", "n_features_in_", "loss_curve_",
                     "stop_reason_"):
            if hasattr(final, name):
                setattr(self, name, getattr(final, name))
        if hasattr(final, "feature_names_in_"):
            self.feature_names_in_ = final.feature_names_in_
        return self

    def _splits(self, X, y, sample_weight, eval_set):
        """[(X_train, y_train, w_train, X_val, y_val), ...] of the folds or the eval_set."""
        from softmax_fast._validation import as_sample_weight

        w = as_sample_weight(sample_weight, X.shape[0])
        if eval_set is not None:
            if not isinstance(eval_set, (tuple, list)) or len(eval_set) != 2:
                raise ValueError("eval_set must be a pair (X_val, y_val)")
            X_va = self._validate_X(eval_set[0], reset=False)[0]
            y_va = np.asarray(eval_set[1])
            if y_va.ndim != 1 or y_va.shape[0] != X_va.shape[0]:
                raise ValueError(f"eval_set: y_val must be 1-D with {X_va.shape[0]} labels")
            return [(X, y, w, X_va, y_va)]
        from sklearn.model_selection import check_cv

        cv = check_cv(self.cv, y, classifier=True)
        return [(X[tr], y[tr], None if w is None else w[tr], X[va], y[va])
                for tr, va in cv.split(X, y)]

    def _run_path(self, alphas, X_tr, y_tr, w_tr, X_va, y_va, fold, scores, n_iter, on_alpha):
        """Fit every strength (strongest first, warm-started); score it; return the models."""
        from sklearn.base import clone

        model = self._path_estimator(alphas[0])
        model._moment_cache = {}  # every strength fits X_tr: its second moments once
        models = []
        optima = []  # the last strengths' optima: the next start is predicted from them
        for j, alpha in enumerate(alphas):
            model.set_params(alpha=float(alpha))
            if j > 0:
                state = model._state
                # from near the previous optimum, each strength must still reach its own
                model._path_gtol = path_tolerance(alpha - alphas[j - 1], state.coef,
                                                  state.coef.dtype, PATH_MIN_REDUCTION)
                start = predicted_start(alphas[:j + 1], optima)
                if start is not None:
                    state.coef[...], state.intercept[...] = start
            with warnings.catch_warnings():
                if not self.verbose:
                    warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(X_tr, y_tr, sample_weight=w_tr)
            y_idx = model._encode_known(y_va, "the validation labels")
            loss, accuracy = score(model.multinomial_coef_, model.multinomial_intercept_, X_va,
                                   float(self.input_scale), y_idx)
            scores[fold, j] = accuracy if self.scoring == "accuracy" else -loss
            n_iter[fold, j] = model.n_iter_
            optima = [*optima, (model._state.coef.copy(), model._state.intercept.copy())][
                -PATH_EXTRAPOLATION_POINTS:]
            snapshot = clone(model)
            for name, value in vars(model).items():
                if name.endswith("_") and not name.startswith("_"):
                    setattr(snapshot, name, np.copy(value) if isinstance(value, np.ndarray)
                            else value)
            models.append(snapshot)
            if on_alpha is not None:
                on_alpha({"fold": fold, "alpha": float(alpha), "score": scores[fold, j],
                          "loss": loss, "accuracy": accuracy, "n_iter": int(model.n_iter_)})
        return models

    def _refit(self, X, y, sample_weight, alpha, fold_optima):
        """The chosen strength on all of X, from the folds' mean optimum (scikit-learn's)."""
        model = self._path_estimator(alpha)
        start = fold_optima[0]
        model.coef_ = np.mean([m.coef_ for m in fold_optima], axis=0).astype(start.coef_.dtype)
        model.intercept_ = np.mean([m.intercept_ for m in fold_optima], axis=0).astype(
            start.intercept_.dtype)
        model.classes_, model.n_features_in_ = start.classes_, start.n_features_in_
        model.n_iter_ = 0
        if not np.array_equal(np.unique(y), start.classes_):
            model = self._path_estimator(alpha)  # a fold missed a class: start afresh
        return model.fit(X, y, sample_weight=sample_weight)

    def objective(self, X, y, sample_weight=None):
        """Mean cross-entropy + (alpha_/2)||coef_||^2 at the fitted weights."""
        check_is_fitted(self, "coef_")
        model = self._path_estimator(self.alpha_)
        for name in ("coef_", "intercept_", "classes_", "n_features_in_"):
            setattr(model, name, getattr(self, name))
        return model.objective(X, y, sample_weight)
