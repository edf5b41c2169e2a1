"""``SoftmaxRegression``: a scikit-learn compatible multinomial logistic regression.

The model: z = input_scale * x @ coef_.T + intercept_, P(class k | x) = softmax(z)_k, trained
by minimising mean cross-entropy + (alpha / 2) * ||coef_||^2 (the intercept is not penalised),
with minibatch SGD (``solver="sgd"``, each epoch one compiled call) or full-batch L-BFGS
(``solver="lbfgs"``, the exact optimum; the same objective as scikit-learn's
``LogisticRegression`` with C = 1 / (n_samples * alpha)).
"""

import time
import warnings
from numbers import Integral

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._available_if import available_if
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.validation import check_is_fitted, validate_data

from softmax_fast._estimator_params import (
    PARAMETER_CONSTRAINTS,
    check_class_weight,
    resolve_alpha,
    resolve_dtype,
    resolve_max_iter,
    resolve_solver,
)
from softmax_fast._training.lbfgs import run_lbfgs
from softmax_fast._training.newton import run_newton
from softmax_fast._training.policy import (
    SGDConfig,
    TrainingDivergedError,
    last_epoch_share,
    still_falling,
)
from softmax_fast._training.sampling import stratified_split_indices, training_seed
from softmax_fast._training.scoring import l2_penalty, score
from softmax_fast._training.sgd import TrainState, run_sgd
from softmax_fast._validation import as_sample_weight, check_sparse_structure, encode_labels
from softmax_fast.backends import get_kernels, resolve_backend_name, resolve_n_threads
from softmax_fast.distributed import is_dask_collection
from softmax_fast.persistence import ModelFileError, load_model, save_model

__all__ = ["SoftmaxRegression", "TrainingDivergedError", "ModelFileError"]



def _sgd_possible(estimator):
    """``partial_fit`` exists unless the solver is full-batch (as in ``MLPClassifier``)."""
    return estimator.solver not in ("lbfgs", "newton-cg")


class SoftmaxRegression(ClassifierMixin, BaseEstimator):
    """Multinomial logistic (softmax) regression trained by fused, compiled kernels.

    Parameters
    ----------
    solver : {"auto", "sgd", "lbfgs", "newton-cg"}, default="auto"
        Minibatch SGD (fast, approximate) or full-batch L-BFGS (the exact optimum of the same
        objective as scikit-learn's ``LogisticRegression`` with C = 1 / (n_samples alpha));
        "newton-cg" reaches the same optimum by trust-region Newton steps with
        Hessian-vector products (fewer passes over X per digit of accuracy on some
        problems; see the README's benchmarks).
        "auto": L-BFGS when X holds at most 2**21 values (samples x features; small data would
        make too few SGD steps) and no early stopping is asked for, else SGD. ``solver_``
        tells which ran.
    alpha : float or "auto", default="auto"
        L2 penalty: the objective adds (alpha / 2) * ||W||^2 over the weights of every class
        (``multinomial_coef_``). "auto" makes the objective scikit-learn
        ``LogisticRegression()``'s default (C = 1): 1 / n, with n the total sample weight
        (the number of samples without weights), and 2 / n for two classes (scikit-learn's
        binary model penalises the log-odds row ``coef_`` = twice each class's weights); for
        ``partial_fit``, n is ``epoch_size`` (or the first chunk's weight).
    batch_size : int, default=32
        Minibatch size for SGD; the last, partial batch of an epoch is kept.
    learning_rate_init : float, default=0.1
        Initial SGD step size.
    learning_rate : {"constant", "invscaling", "adaptive", "step"}, default="step"
        Schedule: "constant", "invscaling" and "adaptive" as in ``MLPClassifier``; "step"
        multiplies the rate by ``lr_gamma`` every ``lr_step_size`` epochs. The defaults
        (0.1, halved every 2 epochs, batch 32, 10 epochs) reach >= 84 % test accuracy on
        Fashion-MNIST scaled to [0, 1]; constant-rate SGD hovers around 83-84 %.
    power_t : float, default=0.5
        Exponent of "invscaling".
    lr_step_size : int, default=2
    lr_gamma : float, default=0.5
    momentum : float, default=0.0
        Momentum in [0, 1); 0 is plain SGD as in the course reports.
    nesterovs_momentum : bool, default=False
    max_iter : int or "auto", default="auto"
        Epochs for SGD ("auto": 10), iterations for L-BFGS ("auto": 500). None means "auto".
    shuffle : bool, default=True
        Shuffle the samples every epoch (seeded by ``random_state``).
    random_state : int, RandomState or None
        Seeds shuffling, the validation split and random initialisation.
    tol : float, default=1e-4
        Improvement below which an epoch counts as no progress; for L-BFGS, the largest
        component of the objective's gradient (in the weights' own units) at which it stops.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (stratified), stop when the
        validation loss has not improved by ``tol`` for ``n_iter_no_change`` epochs, and keep the
        weights of the best epoch.
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=10
    class_weight : dict, "balanced" or None
        Multiplies each sample's weight by its class weight.
    init : {"zeros", "random"}, default="zeros"
        Start from zero weights (course reports) or small N(0, 0.01^2) values.
    input_scale : float, default=1.0
        X is multiplied by this inside the kernels. With uint8 images and 1/255 the data stays
        uint8 in memory (a quarter of the bytes of float32) and is never copied.
    warm_start : bool, default=False
        Continue from the previous ``fit``'s weights.
    verbose : bool, default=False
        Print one line per epoch.
    backend : str, default="auto"
        A backend of :mod:`softmax_fast.backends` (``backend_names()``) or "auto"; CSR input
        uses that backend's sparse kernels (or the best sparse ones if it has none).
    n_threads : int or None, default=None
        Threads for the kernels (None: all cores). The trained model does not depend on it.
    dtype : {"auto", "float32", "float64"}, default="auto"
        Working precision of the weights and kernels; sums are float64 either way. L-BFGS
        evaluates its objective in it too. "auto": float64 when X holds at most 2**21 values
        (small data: the tightest optimum costs nothing), else float32 (GEMM speed, half
        the memory traffic).

    Attributes
    ----------
    coef_ : ndarray of shape (n_classes, n_features), or (1, n_features) for 2 classes
        As scikit-learn's ``LogisticRegression``: with two classes one row, the log-odds of
        class 1 (the softmax of two classes depends only on the difference of their rows,
        which is what ``coef_`` holds), and ``decision_function`` is 1-D.
    intercept_ : ndarray of shape (n_classes,), or (1,) for 2 classes
    multinomial_coef_, multinomial_intercept_ : ndarray of shape (n_classes, n_features), (n_classes,)
        The weights of every class; for two classes the symmetric split -coef_/2, coef_/2.
    classes_ : ndarray of shape (n_classes,)
    solver_ : str
        The solver that ran ("sgd" or "lbfgs").
    alpha_ : float
        The L2 strength the model was fitted with (``alpha`` resolved).
    n_features_in_ : int
    n_iter_ : int
        Epochs run (SGD, cumulative over ``partial_fit``) or L-BFGS iterations.
    t_ : int
        Training samples seen by SGD.
    loss_curve_ : list of float
        Training objective (including the penalty) after each epoch.
    validation_scores_ : list of float or None
        Validation accuracy after each epoch when ``early_stopping``.
    validation_loss_curve_ : list of float or None
    best_loss_ : float
        Lowest monitored loss (validation loss with early stopping, else training objective).
    history_ : list of dict
        Per-epoch records: epoch, train_loss, val_loss, val_accuracy, learning_rate, seconds.
    """

    def __init__(self, *, solver="auto", alpha="auto", batch_size=32, learning_rate_init=0.1,
                 learning_rate="step", power_t=0.5, lr_step_size=2, lr_gamma=0.5,
                 momentum=0.0, nesterovs_momentum=False, max_iter="auto", shuffle=True,
                 random_state=None, tol=1e-4, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=10, class_weight=None, init="zeros", input_scale=1.0,
                 warm_start=False, verbose=False, backend="auto", n_threads=None,
                 dtype="auto"):
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.learning_rate = learning_rate
        self.power_t = power_t
        self.lr_step_size = lr_step_size
        self.lr_gamma = lr_gamma
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.class_weight = class_weight
        self.init = init
        self.input_scale = input_scale
        self.warm_start = warm_start
        self.verbose = verbose
        self.backend = backend
        self.n_threads = n_threads
        self.dtype = dtype

    _parameter_constraints: dict = dict(PARAMETER_CONSTRAINTS)

    # ------------------------------------------------------------------ validation
    def _working_dtype(self, n_values):
        """The working dtype on data of ``n_values`` values ("auto": float64 when small)."""
        return resolve_dtype(self.dtype, n_values)

    def _check_params(self):
        """Validate every parameter (scikit-learn's ``_parameter_constraints``)."""
        self._validate_params()
        resolve_backend_name(self.backend, "dense")  # unknown or unavailable: a clear error
        check_class_weight(self.class_weight)
        resolve_dtype(self.dtype, 0)

    def _validate_X(self, X, *, reset, y=None, finite=True):
        """X (and y) checked by scikit-learn's ``validate_data``, X as the kernels read it.

        Training (``reset`` or a warm start) accepts float32, float64 and uint8 as they are and
        then converts floats to the working dtype; a fitted model reads X in its own dtype.
        ``finite=False`` skips the NaN/inf scan of dense X — a full pass over the data, about
        12 ms on Fashion-MNIST in float32 — for ``fit``: the first epoch reads every value
        anyway, and a non-finite result is then traced back to X (:meth:`_train`).
        """
        fitted = hasattr(self, "coef_") and not reset and y is None
        accepted = [self.coef_.dtype, np.uint8] if fitted \
            else [np.float32, np.float64, np.uint8]
        if sp.issparse(X):
            check_sparse_structure(X)  # before scipy/scikit-learn convert it
            finite = True  # only the stored values: cheap
        kwargs = dict(reset=reset, accept_sparse="csr", dtype=accepted, order="C",
                      ensure_all_finite=finite)
        if y is None:
            return validate_data(self, X, **kwargs), None
        X, y = validate_data(self, X, y, **kwargs)
        if y is not None and np.ndim(y) != 1:
            raise ValueError(f"y should be a 1d array of class labels, got shape {np.shape(y)}")
        return X, y

    def _as_working(self, X, dtype):
        """Floating X in the working dtype (uint8 stays uint8: the kernels scale it)."""
        return X if X.dtype in (np.uint8, dtype) else X.astype(dtype)

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y, sample_weight=None, *, eval_set=None, on_epoch=None):
        """Fit the model to ``(X, y)``.

        Parameters
        ----------
        X : array-like or scipy CSR matrix of shape (n_samples, n_features)
            uint8 input is kept as is and scaled by ``input_scale`` inside the kernels.
        y : array-like of shape (n_samples,)
            Class labels of any type (ints, strings).
        sample_weight : array-like of shape (n_samples,), optional
        eval_set : tuple (X_val, y_val), optional
            Validation data evaluated after every SGD epoch (``history_``,
            ``validation_scores_``); with ``early_stopping`` it replaces the held-out fraction.
        on_epoch : callable, optional
            Called with each epoch's history record (for progress display); with L-BFGS or
            Newton-CG after every iteration, with its ``epoch`` (iteration), ``train_loss``
            and ``seconds``.

        Returns
        -------
        self
        """
        self._check_params()
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y "
                             "is None")
        if is_dask_collection(X):  # rows on a cluster: L-BFGS evaluated where they live
            from softmax_fast.distributed import fit as fit_on_cluster

            return fit_on_cluster(self, X, y, sample_weight, eval_set=eval_set)
        keep = bool(self.warm_start) and hasattr(self, "coef_")
        # warm start: X must have the fitted model's features (scikit-learn's check)
        X, y = self._validate_X(X, reset=not keep, y=y, finite=False)
        dtype = self._working_dtype(X.shape[0] * X.shape[1])
        X = self._as_working(X, dtype)
        classes, y_idx = self._encode_labels(y, reset=not keep)
        weights = self._combined_weights(y, sample_weight, X.shape[0])
        self.alpha_ = resolve_alpha(self.alpha, _weight_total(weights, X.shape[0]),
                                    len(classes))
        validation = None if eval_set is None else self._validate_eval_set(eval_set, classes)
        state = self._initial_state(X.shape[1], len(classes), dtype, keep=keep)
        state.policy.epoch_size = X.shape[0]
        self.classes_ = classes
        self.solver_ = resolve_solver(self.solver, X.shape[0], X.shape[1], self.early_stopping)
        max_iter = resolve_max_iter(self.max_iter, self.solver_)
        if self.solver_ in ("lbfgs", "newton-cg"):
            self._train(state, X, self._fit_lbfgs, state, X, y_idx, weights, max_iter,
                        on_epoch=on_epoch)
        else:
            self._train(state, X, self._fit_sgd, state, X, y_idx, weights, epochs=max_iter,
                        allow_validation=True, validation=validation, on_epoch=on_epoch)
        return self

    def _train(self, state, X, run, *args, **kwargs):
        """``run(*args, **kwargs)``, tracing a divergence back to non-finite X if that is it.

        The weights a warm start continues from are restored when training fails, so a bad
        call leaves the model as it was.
        """
        saved = (state.coef.copy(), state.intercept.copy()) \
            if getattr(self, "_state", None) is state else None
        try:
            run(*args, **kwargs)
        except TrainingDivergedError:
            if saved is not None:
                state.coef[...], state.intercept[...] = saved
            if not sp.issparse(X) and X.dtype.kind == "f" and not np.isfinite(X).all():
                raise ValueError("Input X contains NaN or infinity") from None
            raise

    @available_if(_sgd_possible)
    def partial_fit(self, X, y, classes=None, sample_weight=None, *, epoch_size=None):
        """Run one SGD epoch over ``(X, y)``, continuing from the current weights.

        Parameters
        ----------
        X, y, sample_weight : as in :meth:`fit` (one chunk of the data).
        classes : array-like, optional
            Every label that will ever appear; required on the first call, and if given
            later it must be the same.
        epoch_size : int, optional
            Samples in one pass over the whole data set (the sum of the chunks' sizes). The
            schedules count by samples seen (``t_``): "invscaling" always; "step" lowers the
            rate every ``lr_step_size`` passes of ``epoch_size`` samples — without it, calls
            alone do not tell when a pass is over and "step" keeps the initial rate.

        Returns
        -------
        self
        """
        self._check_params()
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y "
                             "is None")
        if epoch_size is not None and (isinstance(epoch_size, bool)
                                       or not isinstance(epoch_size, Integral)
                                       or epoch_size < 1):
            raise ValueError(f"epoch_size must be a positive integer, got {epoch_size!r}")
        if self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        first = not hasattr(self, "coef_")
        if first:
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit")
            self.classes_ = np.unique(np.asarray(classes))
            if len(self.classes_) < 2:
                raise ValueError("classes must hold at least 2 distinct labels")
        elif classes is not None and not np.array_equal(np.unique(np.asarray(classes)),
                                                         self.classes_):
            raise ValueError(f"classes={np.asarray(classes).tolist()} is not the same as on "
                             f"the first call to partial_fit ({self.classes_.tolist()})")
        X, y = self._validate_X(X, reset=first, y=y, finite=False)
        dtype = self.coef_.dtype if not first else self._working_dtype(X.shape[0] * X.shape[1])
        X = self._as_working(X, dtype)
        y_idx = self._encode_known(y, "y")
        weights = self._combined_weights(y, sample_weight, X.shape[0])
        if first or not hasattr(self, "alpha_"):
            self.alpha_ = resolve_alpha(self.alpha, epoch_size or _weight_total(
                weights, X.shape[0]), len(self.classes_))
        state = self._initial_state(X.shape[1], len(self.classes_), dtype, keep=not first)
        state.policy.epoch_size = epoch_size
        self.solver_ = "sgd"
        self._train(state, X, self._fit_sgd, state, X, y_idx, weights, epochs=1,
                    allow_validation=False)
        return self

    def _encode_labels(self, y, reset):
        classes, y_idx = encode_labels(y)
        if len(classes) < 2:
            raise ValueError(
                "SoftmaxRegression needs samples of at least 2 classes in the data, but the "
                f"data contains only one class: {classes[0]!r}"
            )
        if not reset and not np.array_equal(classes, self.classes_):
            raise ValueError(
                f"warm_start: y has classes {classes.tolist()} but the model was fitted with "
                f"{self.classes_.tolist()}"
            )
        return classes, y_idx.astype(np.intp)

    def _combined_weights(self, y, sample_weight, n_samples):
        weights = as_sample_weight(sample_weight, n_samples)
        if self.class_weight is not None:
            per_class = compute_sample_weight(self.class_weight, y)
            weights = per_class if weights is None else weights * per_class
            weights = np.ascontiguousarray(weights, dtype=np.float64)
        return weights

    def _seed(self):
        return training_seed(self.random_state)

    def _initial_state(self, n_features, n_classes, dtype, keep):
        config = self._sgd_config()
        if keep and getattr(self, "_state", None) is not None:
            state = self._state
            if state.coef.dtype != dtype:
                state.astype(dtype)
            state.policy.start_run(config)
            return state
        if keep:  # loaded from a file: rebuild the training state around the saved weights
            state = TrainState.zeros(n_classes, n_features, dtype, self._seed(), config)
            state.coef[...] = self.multinomial_coef_
            state.intercept[...] = self.multinomial_intercept_
            return state
        return TrainState.zeros(n_classes, n_features, dtype, self._seed(), config,
                                init=self.init)

    def _sgd_config(self):
        return SGDConfig(
            batch_size=int(self.batch_size), learning_rate_init=float(self.learning_rate_init),
            learning_rate=self.learning_rate, power_t=float(self.power_t),
            lr_step_size=int(self.lr_step_size), lr_gamma=float(self.lr_gamma),
            alpha=self.alpha_, momentum=float(self.momentum),
            nesterovs_momentum=bool(self.nesterovs_momentum), shuffle=bool(self.shuffle),
            tol=float(self.tol), n_iter_no_change=int(self.n_iter_no_change),
            early_stopping=bool(self.early_stopping),
        )

    def _fit_sgd(self, state, X, y_idx, weights, *, epochs, allow_validation, validation=None,
                 on_epoch=None):
        backend = _kernels_for(X, self.backend)
        n_threads = resolve_n_threads(self.n_threads)
        if allow_validation and self.early_stopping and validation is None:
            X, X_val, y_idx, y_val, weights = _stratified_split(
                X, y_idx, weights, self.validation_fraction, state.seed
            )
            validation = (X_val, y_val)
        start = len(state.history)
        stop = run_sgd(backend, state, X, float(self.input_scale), y_idx, weights,
                       n_threads, epochs=epochs, validation=validation, verbose=self.verbose,
                       on_epoch=on_epoch)
        self._publish(state)
        new = state.history[start:]
        self.loss_curve_ = [r["train_loss"] for r in state.history]
        if validation is not None:
            self.validation_scores_ = [r["val_accuracy"] for r in new]
            self.validation_loss_curve_ = [r["val_loss"] for r in new]
            self.best_loss_ = min(self.validation_loss_curve_)
        else:
            self.validation_scores_ = None
            self.validation_loss_curve_ = None
            self.best_loss_ = min(self.loss_curve_)
        self.stop_reason_ = stop
        if stop == "max_iter" and allow_validation and still_falling(self.loss_curve_,
                                                                      self.tol):
            warnings.warn(
                f"SGD stopped at max_iter={epochs} epochs while the training loss was still "
                f"falling ({last_epoch_share(self.loss_curve_):.0%} of its drop came in the last "
                "epoch); "
                "raise max_iter, or use solver='lbfgs' for the exact optimum",
                ConvergenceWarning, stacklevel=3)

    def _fit_lbfgs(self, state, X, y_idx, weights, max_iter, kernels=None, on_epoch=None):
        """The full-batch solvers: L-BFGS, or trust-region Newton-CG (``solver="newton-cg"``).

        ``kernels`` replaces the backend's (the cluster's blockwise objective, see
        :mod:`softmax_fast.distributed`). ``on_epoch`` is called after every iteration with
        ``{"epoch": iteration, "train_loss": objective, "seconds": since the start}``.
        """
        backend = _kernels_for(X, self.backend) if kernels is None else kernels
        run, options = run_lbfgs, {}
        if self.solver_ == "newton-cg":
            run = run_newton
        elif getattr(self, "_path_gtol", None) is not None:
            options["gtol"] = self._path_gtol  # a step of SoftmaxRegressionCV's path
        if self.solver_ != "newton-cg" and getattr(self, "_moment_cache", None) is not None:
            options["moment_cache"] = self._moment_cache  # the path's fits share X
        nit, converged = run(
            backend, state, X, float(self.input_scale), y_idx, weights, self.alpha_,
            resolve_n_threads(self.n_threads), max_iter=max_iter, tol=self.tol,
            callback=_iteration_reporter(on_epoch), **options,
        )
        self._publish(state)
        self.n_iter_ = nit
        self.loss_curve_ = [state.history[-1]["train_loss"]]
        self.best_loss_ = self.loss_curve_[-1]
        self.validation_scores_ = None
        self.validation_loss_curve_ = None
        self.stop_reason_ = "converged" if converged else "max_iter"
        if not converged:
            name = "Newton-CG" if self.solver_ == "newton-cg" else "L-BFGS"
            warnings.warn(f"{name} did not converge in {nit} iterations; raise max_iter",
                          ConvergenceWarning, stacklevel=3)

    def _publish(self, state):
        self._state = state
        if state.coef.shape[0] == 2:
            # scikit-learn's binary layout: one row, the log-odds of class 1 (the softmax of
            # two classes depends only on the difference of their rows)
            self.coef_ = (state.coef[1] - state.coef[0])[None, :]
            self.intercept_ = state.intercept[1:] - state.intercept[:1]
        else:
            self.coef_ = state.coef
            self.intercept_ = state.intercept
        self.n_iter_ = state.policy.epochs_done
        self.t_ = state.policy.samples_seen
        self.history_ = state.history

    # ------------------------------------------------------------------ prediction
    @property
    def multinomial_coef_(self):
        """Weights of every class, (n_classes, n_features); two classes: -coef_/2, coef_/2."""
        check_is_fitted(self, "coef_")
        if self.coef_.shape[0] == 1 and len(self.classes_) == 2:
            half = self.coef_ * self.coef_.dtype.type(0.5)
            return np.concatenate([-half, half])
        return self.coef_

    @property
    def multinomial_intercept_(self):
        """Intercepts of every class, (n_classes,); two classes: -intercept_/2, intercept_/2."""
        check_is_fitted(self, "coef_")
        if self.intercept_.shape[0] == 1 and len(self.classes_) == 2:
            half = self.intercept_ * self.intercept_.dtype.type(0.5)
            return np.concatenate([-half, half])
        return self.intercept_

    def _logits(self, X):
        """z = input_scale * X @ W.T + b of every class, (n_samples, n_classes)."""
        check_is_fitted(self, "coef_")
        X, _ = self._validate_X(X, reset=False)
        coef = self.multinomial_coef_
        z = np.asarray(X @ coef.T, dtype=coef.dtype) if sp.issparse(X) \
            else X.astype(coef.dtype, copy=False) @ coef.T
        if self.input_scale != 1.0:
            z *= coef.dtype.type(self.input_scale)
        z += self.multinomial_intercept_
        return z

    def decision_function(self, X):
        """Confidence scores: z = input_scale * X @ coef_.T + intercept_.

        Returns
        -------
        ndarray of shape (n_samples, n_classes), or (n_samples,) for two classes
            Two classes: the log-odds of class 1, z_1 - z_0 (positive means class 1), as
            scikit-learn's ``LogisticRegression``.
        """
        z = self._logits(X)
        if z.shape[1] == 2:
            return z[:, 1] - z[:, 0]
        return z

    def predict_proba(self, X):
        """Class probabilities softmax(z), shape (n_samples, n_classes)."""
        from softmax_fast.functional import softmax

        if is_dask_collection(X):  # a lazy Dask array, block by block
            from softmax_fast.distributed import predict_blocks

            return predict_blocks(self, X, "predict_proba")
        z = self._logits(X)
        return softmax(z, backend=self.backend, n_threads=self.n_threads, out=z)

    def predict_log_proba(self, X):
        """Log class probabilities (z - max) - log sum exp(z - max)."""
        from softmax_fast.functional import log_softmax

        z = self._logits(X)
        return log_softmax(z, backend=self.backend, n_threads=self.n_threads, out=z)

    def predict(self, X):
        """Most probable class label of each sample (ties: the first class)."""
        if is_dask_collection(X):  # a lazy Dask array, block by block
            from softmax_fast.distributed import predict_blocks

            return predict_blocks(self, X, "predict")
        best = np.argmax(self._logits(X), axis=1)
        return self.classes_[best]

    def objective(self, X, y, sample_weight=None):
        """The training objective at the current weights: mean CE + (alpha/2)||coef_||^2."""
        check_is_fitted(self, "coef_")
        X, y = self._validate_X(X, reset=False, y=y)
        y_idx = self._encode_known(y, "y")
        weights = as_sample_weight(sample_weight, X.shape[0])
        coef = self.multinomial_coef_
        loss, _ = score(coef, self.multinomial_intercept_, X, float(self.input_scale), y_idx,
                        weights)
        # alpha_ of a fitted model; weights set by hand: the parameter ("auto": 1 / len(X))
        alpha = getattr(self, "alpha_", None)
        alpha = resolve_alpha(self.alpha, X.shape[0], len(self.classes_)) if alpha is None \
            else alpha
        return loss + l2_penalty(coef, alpha)

    def _validate_eval_set(self, eval_set, classes):
        """(X_val, class indices of y_val) from ``eval_set``, checked like ``score``'s input."""
        if not isinstance(eval_set, (tuple, list)) or len(eval_set) != 2:
            raise ValueError("eval_set must be a pair (X_val, y_val)")
        X_val = self._validate_X(eval_set[0], reset=False)[0]
        y_val = np.asarray(eval_set[1])
        if y_val.ndim != 1 or y_val.shape[0] != X_val.shape[0]:
            raise ValueError(f"eval_set: y_val must be 1-D with {X_val.shape[0]} labels, got "
                             f"shape {y_val.shape}")
        return X_val, self._encode_known(y_val, "eval_set", classes)

    def _encode_known(self, y, name, classes=None):
        """Class indices of labels ``y``, all of which must be in ``classes`` (``classes_``)."""
        classes = self.classes_ if classes is None else classes
        y = np.asarray(y)
        found, y_idx = encode_labels(y)
        known = np.isin(found, classes)
        if not known.all():
            shown = ", ".join(map(repr, classes[:10].tolist())) + (", ..." if len(classes) > 10
                                                                   else "")
            raise ValueError(f"{name} contains labels not in classes [{shown}]: "
                             f"{found[~known][:5].tolist()}")
        return np.searchsorted(classes, found)[y_idx].astype(np.intp)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    # ------------------------------------------------------------------ persistence
    def save(self, path, *, metadata=None):
        """Write the fitted model to ``path`` (.npz of arrays + JSON metadata), atomically.

        The file holds no pickles, and one checksum covers every array and metadata field, so
        truncation or tampering is detected on :meth:`load` (see
        :mod:`softmax_fast.persistence`). ``metadata`` (a JSON-serialisable dict, e.g. where
        the training data came from) is stored and comes back as ``file_metadata_``.
        """
        check_is_fitted(self, "coef_")
        return save_model(self, path, metadata)

    @classmethod
    def load(cls, path):
        """Read a model written by :meth:`save`; raises :class:`ModelFileError` if it is bad."""
        return load_model(cls, path)


def _iteration_reporter(on_epoch):
    """The solvers' ``callback(iteration, loss)`` as ``on_epoch`` records (None: none)."""
    if on_epoch is None:
        return None
    tic = time.perf_counter()

    def report(iteration, loss):
        on_epoch({"epoch": iteration, "train_loss": loss,
                  "seconds": time.perf_counter() - tic})

    return report


def _weight_total(weights, n_samples):
    """Total sample weight (n without weights): the n of alpha="auto", as scikit-learn's."""
    return float(n_samples) if weights is None else float(weights.sum())


def _kernels_for(X, backend):
    """The kernel module for ``X``: the chosen backend's sparse or dense family."""
    return get_kernels(backend, "sparse" if sp.issparse(X) else "dense")


def _stratified_split(X, y_idx, weights, fraction, seed):
    """Split off a stratified, seeded validation set, with its weights."""
    train_idx, val_idx = stratified_split_indices(y_idx, fraction, seed)
    w = None if weights is None else weights[train_idx]
    return X[train_idx], X[val_idx], y_idx[train_idx], y_idx[val_idx], w
