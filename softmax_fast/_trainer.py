"""Training loops on already-validated arrays: minibatch SGD epochs and full-batch L-BFGS.

The estimator (:mod:`softmax_fast.estimator`) turns user input into the arrays the kernels
take; this module only drives them. Every epoch runs in one compiled call of the backend's
``sgd_epoch`` — there is no Python per minibatch — so the Python work per epoch is choosing
the learning rate, one validation pass and the stopping rules.
"""

import functools
import math
import time
from dataclasses import dataclass, field

import numpy as np

from softmax_fast.kernels.reference import epoch_order


class TrainingDivergedError(FloatingPointError):
    """The training loss became non-finite (typically a learning rate that is too large)."""


@dataclass
class SGDConfig:
    """Hyperparameters of one SGD run (names follow scikit-learn's MLPClassifier)."""

    batch_size: int = 32
    learning_rate_init: float = 0.1
    learning_rate: str = "step"  # constant | invscaling | adaptive | step
    power_t: float = 0.5
    lr_step_size: int = 2
    lr_gamma: float = 0.5
    alpha: float = 1e-5
    momentum: float = 0.0
    nesterovs_momentum: bool = False
    max_iter: int = 10
    shuffle: bool = True
    tol: float = 1e-4
    n_iter_no_change: int = 10
    early_stopping: bool = False


@dataclass
class TrainState:
    """Weights and bookkeeping that persist across ``fit``/``partial_fit`` calls."""

    coef: np.ndarray
    intercept: np.ndarray
    velocity_coef: np.ndarray
    velocity_intercept: np.ndarray
    seed: int
    epochs_done: int = 0
    samples_seen: int = 0
    learning_rate: float = 0.0
    history: list = field(default_factory=list)

    @classmethod
    def zeros(cls, n_classes, n_features, dtype, seed, init="zeros"):
        if init == "zeros":
            coef = np.zeros((n_classes, n_features), dtype=dtype)
        else:  # small random values break the symmetry some users want to see in weight images
            rng = np.random.default_rng([seed, 2**31 - 1])
            coef = (0.01 * rng.standard_normal((n_classes, n_features))).astype(dtype)
        return cls(
            coef=coef,
            intercept=np.zeros(n_classes, dtype=dtype),
            velocity_coef=np.zeros((n_classes, n_features), dtype=dtype),
            velocity_intercept=np.zeros(n_classes, dtype=dtype),
            seed=seed,
        )


def l2_penalty(coef, alpha):
    """(alpha / 2) * ||coef||^2, accumulated in float64."""
    flat = coef.ravel().astype(np.float64, copy=False)
    return 0.5 * alpha * float(flat @ flat)


@functools.lru_cache(maxsize=1)
def _blas_controller():
    from threadpoolctl import ThreadpoolController  # a dependency of scikit-learn

    return ThreadpoolController()


def evaluate(coef, intercept, X, x_scale, y, sample_weight=None, chunk=8192):
    """Mean (unregularised) cross-entropy and accuracy of the model on ``(X, y)``.

    Works through ``X`` in row chunks so a uint8 matrix is never converted whole. BLAS runs on
    one thread here: its idle threads keep spinning after a multi-threaded matmul and would
    steal the cores from the next compiled epoch (measured: 16 ms epochs became 30-75 ms).
    """
    with _blas_controller().limit(limits=1, user_api="blas"):
        return _evaluate(coef, intercept, X, x_scale, y, sample_weight, chunk)


def _evaluate(coef, intercept, X, x_scale, y, sample_weight, chunk):
    n = X.shape[0]
    total_loss, correct, total_weight = 0.0, 0.0, 0.0
    coef_t = coef.T
    for start in range(0, n, chunk):
        Xc = X[start:start + chunk]
        z = Xc.astype(coef.dtype, copy=False) @ coef_t
        if x_scale != 1.0:
            z *= x_scale
        z += intercept
        z = z.astype(np.float64, copy=False)
        m = z.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(z - m).sum(axis=1)) + m[:, 0]
        yc = y[start:start + chunk]
        per_row = log_norm - z[np.arange(len(yc)), yc]
        hit = z.argmax(axis=1) == yc
        w = np.ones(len(yc)) if sample_weight is None else sample_weight[start:start + chunk]
        total_loss += float(per_row @ w)
        correct += float(hit @ w)
        total_weight += float(w.sum())
    return total_loss / total_weight, correct / total_weight


def _scheduled_learning_rate(cfg, state):
    """Learning rate for the coming epoch of the time-based schedules.

    "invscaling" is MLPClassifier's lr_init / (samples seen + 1)^power_t; "step" multiplies
    lr_init by lr_gamma every lr_step_size epochs. "constant" and "adaptive" keep the current
    rate (adaptive divides it by 5 on a plateau, in :func:`run_sgd`).
    """
    if cfg.learning_rate == "invscaling":
        return cfg.learning_rate_init / (state.samples_seen + 1) ** cfg.power_t
    if cfg.learning_rate == "step":
        return cfg.learning_rate_init * cfg.lr_gamma ** (state.epochs_done // cfg.lr_step_size)
    return state.learning_rate


def run_sgd(backend, state, cfg, X, x_scale, y, sample_weight, n_threads, *, epochs,
            validation=None, verbose=False, on_epoch=None):
    """Run up to ``epochs`` SGD epochs on ``state`` in place; return the stop reason.

    Parameters
    ----------
    validation : tuple (X_val, y_val) or None
        Held-out data for early stopping and the validation curves.
    on_epoch : callable(dict) or None
        Called after each epoch with its history record (progress bars, logging).

    Returns
    -------
    str
        "max_iter", "converged" (no improvement of at least tol for n_iter_no_change epochs)
        or "early_stopping" (the same on validation loss; the best weights are restored).
    """
    n_samples = X.shape[0]
    best_loss, best_weights, stall = math.inf, None, 0
    state.learning_rate = state.learning_rate or cfg.learning_rate_init
    momentum = float(cfg.momentum)
    for _ in range(epochs):
        state.learning_rate = _scheduled_learning_rate(cfg, state)
        tic = time.perf_counter()
        order = epoch_order(n_samples, state.seed, state.epochs_done, cfg.shuffle)
        data_loss = backend.sgd_epoch(
            X, x_scale, y, sample_weight, order, state.coef, state.intercept,
            state.velocity_coef, state.velocity_intercept, state.learning_rate, cfg.alpha,
            momentum, bool(cfg.nesterovs_momentum), int(cfg.batch_size), n_threads,
        )
        seconds = time.perf_counter() - tic
        state.epochs_done += 1
        state.samples_seen += n_samples
        train_loss = data_loss + l2_penalty(state.coef, cfg.alpha)
        if not (math.isfinite(train_loss) and np.isfinite(state.intercept).all()):
            raise TrainingDivergedError(
                f"training diverged in epoch {state.epochs_done}: the loss became "
                f"{train_loss} with learning rate {state.learning_rate:g}; "
                "try a smaller learning_rate_init (e.g. 10x smaller)"
            )
        record = {"epoch": state.epochs_done, "train_loss": train_loss,
                  "learning_rate": state.learning_rate, "seconds": seconds}
        if validation is not None:
            val_loss, val_acc = evaluate(state.coef, state.intercept, validation[0], x_scale,
                                         validation[1])
            record.update(val_loss=val_loss, val_accuracy=val_acc)
        state.history.append(record)
        if verbose:
            print(_format_record(record), flush=True)
        if on_epoch is not None:
            on_epoch(record)

        monitored = record["val_loss"] if cfg.early_stopping else train_loss
        stall = 0 if monitored < best_loss - cfg.tol else stall + 1
        if monitored < best_loss:
            best_loss = monitored
            if cfg.early_stopping:
                best_weights = (state.coef.copy(), state.intercept.copy())
        if stall >= cfg.n_iter_no_change:
            if cfg.learning_rate == "adaptive" and state.learning_rate / 5.0 > 1e-6:
                state.learning_rate /= 5.0  # a plateau: continue with a smaller step
                stall = 0
                continue
            if best_weights is not None:
                state.coef[...], state.intercept[...] = best_weights
            return "early_stopping" if cfg.early_stopping else "converged"
    if best_weights is not None:
        state.coef[...], state.intercept[...] = best_weights
    return "max_iter"


def _format_record(record):
    parts = [f"epoch {record['epoch']:3d}", f"loss {record['train_loss']:.5f}"]
    if "val_loss" in record:
        parts += [f"val_loss {record['val_loss']:.5f}", f"val_acc {record['val_accuracy']:.4f}"]
    parts.append(f"{record['seconds'] * 1e3:.1f} ms")
    return "  ".join(parts)


def run_lbfgs(backend, state, X, x_scale, y, sample_weight, alpha, n_threads, *, max_iter,
              tol):
    """Minimise mean CE + (alpha/2)||coef||^2 over the whole data set with L-BFGS (float64).

    Each objective evaluation is one fused ``linear_softmax_ce`` call. Returns the number of
    iterations and whether scipy reported convergence.
    """
    from scipy.optimize import minimize

    n_classes, n_features = state.coef.shape
    coef = np.ascontiguousarray(state.coef, dtype=np.float64)
    intercept = np.ascontiguousarray(state.intercept, dtype=np.float64)
    grad_coef = np.empty_like(coef)
    grad_intercept = np.empty_like(intercept)
    split = n_classes * n_features
    if X.dtype not in (np.uint8, np.float64):
        X = X.astype(np.float64)

    def objective(theta):
        coef[...] = theta[:split].reshape(n_classes, n_features)
        intercept[...] = theta[split:]
        loss = backend.linear_softmax_ce(X, x_scale, coef, intercept, y, sample_weight, alpha,
                                         grad_coef, grad_intercept, n_threads)
        return loss, np.concatenate([grad_coef.ravel(), grad_intercept])

    theta0 = np.concatenate([coef.ravel(), intercept])
    result = minimize(objective, theta0, jac=True, method="L-BFGS-B",
                      options={"maxiter": max_iter, "gtol": tol, "ftol": 64 * np.finfo(float).eps})
    if not np.all(np.isfinite(result.x)):
        raise TrainingDivergedError("L-BFGS produced non-finite weights; check the input scale")
    state.coef[...] = result.x[:split].reshape(n_classes, n_features)
    state.intercept[...] = result.x[split:]
    state.history.append({"epoch": int(result.nit), "train_loss": float(result.fun)})
    return int(result.nit), bool(result.success)
