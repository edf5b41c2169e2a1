"""The parameters of ``SoftmaxRegression``: their constraints, and the defaults that depend
on the data (which solver, how many iterations).

Constraints use scikit-learn's ``_parameter_constraints`` machinery (``InvalidParameterError``
is both a ``ValueError`` and a ``TypeError``), with one addition: numbers refuse booleans.
"""

import math
from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from softmax_fast._training.policy import LEARNING_RATE_SCHEDULES

__all__ = ["PARAMETER_CONSTRAINTS", "check_class_weight", "resolve_solver", "resolve_max_iter",
           "resolve_dtype", "resolve_alpha", "AUTO_LBFGS_MAX_ELEMENTS"]

#: ``solver="auto"`` uses L-BFGS up to this many values in X (samples x features): the exact
#: optimum in about a second; beyond it minibatch SGD, whose epochs cost ~20 ms on 47 M.
AUTO_LBFGS_MAX_ELEMENTS = 1 << 21
#: What ``max_iter="auto"`` means: SGD epochs (the documented Fashion-MNIST recipe) and
#: L-BFGS iterations (ample: a converged fit stops earlier).
SGD_DEFAULT_EPOCHS = 10
LBFGS_DEFAULT_ITERATIONS = 500


class Number(Interval):
    """scikit-learn's ``Interval`` that also refuses bools (True is not a batch size)."""

    def is_satisfied_by(self, val):
        return not isinstance(val, (bool, np.bool_)) and super().is_satisfied_by(val)


PARAMETER_CONSTRAINTS = {
    "solver": [StrOptions({"auto", "sgd", "lbfgs", "newton-cg"})],
    "alpha": [Number(Real, 0, math.inf, closed="left"), StrOptions({"auto"})],
    "batch_size": [Number(Integral, 1, None, closed="left")],
    "learning_rate_init": [Number(Real, 0, math.inf, closed="neither")],
    "learning_rate": [StrOptions(set(LEARNING_RATE_SCHEDULES))],
    "power_t": [Number(Real, 0, math.inf, closed="left")],
    "lr_step_size": [Number(Integral, 1, None, closed="left")],
    "lr_gamma": [Number(Real, 0, 1, closed="right")],
    "momentum": [Number(Real, 0, 1, closed="left")],
    "nesterovs_momentum": ["boolean"],
    "max_iter": [Number(Integral, 1, None, closed="left"), StrOptions({"auto"}), None],
    "shuffle": ["boolean"],
    "random_state": ["random_state"],
    "tol": [Number(Real, 0, math.inf, closed="left")],
    "early_stopping": ["boolean"],
    "validation_fraction": [Number(Real, 0, 1, closed="neither")],
    "n_iter_no_change": [Number(Integral, 1, None, closed="left")],
    "class_weight": [dict, StrOptions({"balanced"}), None],
    "init": [StrOptions({"zeros", "random"})],
    "input_scale": [Number(Real, 0, math.inf, closed="neither")],
    "warm_start": ["boolean"],
    "verbose": ["verbose"],
    "backend": [str],
    "n_threads": [Number(Integral, 1, None, closed="left"), None],
    "dtype": [StrOptions({"auto", "float32", "float64"}), type, np.dtype],
}


def check_class_weight(class_weight):
    """A dict of class weights must hold finite, positive numbers."""
    if not isinstance(class_weight, dict):
        return
    for label, weight in class_weight.items():
        if isinstance(weight, (bool, np.bool_)) or not isinstance(weight, (Real, np.number)) \
                or not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"class_weight must map classes to finite positive numbers; "
                             f"class {label!r} has {weight!r}")


def resolve_solver(solver, n_samples, n_features, early_stopping=False):
    """The solver ``solver`` stands for on data of this shape ("auto" decides by size).

    Small data gets the exact optimum (L-BFGS): a few hundred rows make only a few dozen SGD
    steps in 10 epochs, far from the optimum scikit-learn's ``LogisticRegression`` reaches.
    Early stopping is an SGD rule, so it keeps SGD.
    """
    if solver != "auto":
        return solver
    if early_stopping:
        return "sgd"
    return "lbfgs" if n_samples * n_features <= AUTO_LBFGS_MAX_ELEMENTS else "sgd"


def resolve_max_iter(max_iter, solver):
    """Epochs (SGD) or iterations (L-BFGS, Newton-CG) that ``max_iter`` stands for."""
    if max_iter is None or max_iter == "auto":
        return SGD_DEFAULT_EPOCHS if solver == "sgd" else LBFGS_DEFAULT_ITERATIONS
    return int(max_iter)


def resolve_dtype(dtype, n_values):
    """The working dtype ``dtype`` stands for on data of ``n_values`` values (samples x
    features): "auto" is float64 for small data (as for ``solver="auto"``), else float32."""
    if isinstance(dtype, str) and dtype == "auto":
        return np.dtype(np.float64 if n_values <= AUTO_LBFGS_MAX_ELEMENTS else np.float32)
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved not in (np.float32, np.float64):
        raise ValueError(f"dtype must be 'auto', 'float32' or 'float64', got {dtype!r}")
    return resolved


def resolve_alpha(alpha, n_samples, n_classes=None):
    """The L2 strength ``alpha`` stands for: "auto" makes it scikit-learn's default.

    ``LogisticRegression()`` (C = 1) minimises mean log-loss + ||w||^2 / (2 C n), n the total
    sample weight. With c > 2 classes that is our objective at alpha = 1 / n. With two
    classes its w is the log-odds row, the difference of our two class rows, which train as
    -w/2 and w/2: our penalty (alpha / 2)(2 ||w/2||^2) = alpha ||w||^2 / 4 equals its own at
    alpha = 2 / n. On Fashion-MNIST (n = 60,000, 10 classes) "auto" is 1.7e-5.
    """
    if isinstance(alpha, str) and alpha == "auto":
        per_sample = 2.0 if n_classes == 2 else 1.0
        return per_sample / n_samples if n_samples > 0 else per_sample
    return float(alpha)
