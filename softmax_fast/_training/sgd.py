"""SGD epochs of one model on already-validated arrays.

Every epoch runs in one compiled call of the kernels' ``sgd_epoch`` — there is no Python per
minibatch — so the Python work per epoch is asking the :class:`~.policy.TrainingPolicy` for
the learning rate, one validation pass and the policy's verdict on the epoch.
"""

import dataclasses
import time

import numpy as np

from .policy import TrainingDivergedError, TrainingPolicy
from .sampling import epoch_order
from .scoring import l2_penalty, score

__all__ = ["TrainState", "run_sgd"]


@dataclasses.dataclass
class TrainState:
    """Weights, momentum buffers, the policy and the history of one model.

    Persists across ``fit``/``partial_fit`` calls (``warm_start``).
    """

    coef: np.ndarray
    intercept: np.ndarray
    velocity_coef: np.ndarray
    velocity_intercept: np.ndarray
    seed: int
    policy: TrainingPolicy
    history: list = dataclasses.field(default_factory=list)

    @classmethod
    def zeros(cls, n_classes, n_features, dtype, seed, config, init="zeros"):
        """A fresh model: zero weights, or N(0, 0.01^2) ones with ``init="random"``."""
        return cls(
            coef=initial_coef(n_classes, n_features, dtype, seed, init),
            intercept=np.zeros(n_classes, dtype=dtype),
            velocity_coef=np.zeros((n_classes, n_features), dtype=dtype),
            velocity_intercept=np.zeros(n_classes, dtype=dtype),
            seed=seed,
            policy=TrainingPolicy(config),
        )

    def astype(self, dtype):
        """Convert the weights and buffers to ``dtype`` in place (a warm start in another dtype)."""
        for name in ("coef", "intercept", "velocity_coef", "velocity_intercept"):
            setattr(self, name, getattr(self, name).astype(dtype))


def initial_coef(n_classes, n_features, dtype, seed, init="zeros"):
    """Initial weights of one model: zeros, or small random values seeded by ``seed``.

    Random ones break the symmetry some users want to see in weight images. Grid search draws
    every configuration's start from here, so a configuration starts alike wherever it trains.
    """
    if init == "zeros":
        return np.zeros((n_classes, n_features), dtype=dtype)
    rng = np.random.default_rng([seed, 2**31 - 1])
    return (0.01 * rng.standard_normal((n_classes, n_features))).astype(dtype)


def run_sgd(kernels, state, X, x_scale, y, sample_weight, n_threads, *, epochs,
            validation=None, verbose=False, on_epoch=None):
    """Run up to ``epochs`` SGD epochs on ``state`` in place; return the stop reason.

    Parameters
    ----------
    kernels : module
        Implements the ``dense`` or ``sparse`` contract (``sgd_epoch``).
    state : TrainState
        Its policy holds the hyperparameters (``state.policy.config``).
    validation : tuple (X_val, y_val) or None
        Held-out data for early stopping and the validation curves.
    on_epoch : callable(dict) or None
        Called after each epoch with its history record (progress bars, logging).

    Returns
    -------
    str
        "max_iter", "converged" (no improvement of at least tol for n_iter_no_change epochs)
        or "early_stopping" (the same on validation loss; the best weights are restored).

    Raises
    ------
    TrainingDivergedError
        The loss or the intercept became non-finite.
    """
    policy = state.policy
    cfg = policy.config
    n_samples = X.shape[0]
    best_weights = None
    for _ in range(epochs):
        lr = policy.next_learning_rate()
        tic = time.perf_counter()
        order = epoch_order(n_samples, state.seed, policy.epochs_done, cfg.shuffle)
        data_loss = kernels.sgd_epoch(
            X, x_scale, y, sample_weight, order, state.coef, state.intercept,
            state.velocity_coef, state.velocity_intercept, lr, cfg.alpha,
            float(cfg.momentum), bool(cfg.nesterovs_momentum), int(cfg.batch_size), n_threads,
        )
        seconds = time.perf_counter() - tic
        train_loss = data_loss + l2_penalty(state.coef, cfg.alpha)
        record = {"epoch": policy.epochs_done + 1, "train_loss": train_loss,
                  "learning_rate": lr, "seconds": seconds}
        val_loss = None
        if validation is not None and np.isfinite(train_loss):
            val_loss, val_acc = score(state.coef, state.intercept, validation[0], x_scale,
                                      validation[1])
            record.update(val_loss=val_loss, val_accuracy=val_acc)
        outcome = policy.end_epoch(n_samples, train_loss, val_loss,
                                   bool(np.isfinite(state.intercept).all()))
        if outcome.diverged:
            raise TrainingDivergedError(policy.divergence_message(
                train_loss, input_magnitude=_input_magnitude(X, x_scale)))
        state.history.append(record)
        if verbose:
            print(_format_record(record), flush=True)
        if on_epoch is not None:
            on_epoch(record)
        if outcome.improved and policy.monitors_validation:
            best_weights = (state.coef.copy(), state.intercept.copy())
        if outcome.stop is not None:
            _restore(state, best_weights)
            return outcome.stop
    _restore(state, best_weights)
    return "max_iter"


def _input_magnitude(X, x_scale):
    """Largest |x_scale * x| (computed only after a divergence, off the fast path)."""
    values = X.data if hasattr(X, "tocsr") else X
    if values.size == 0:
        return 0.0
    with np.errstate(over="ignore"):
        return float(np.max(np.abs(values.astype(np.float64, copy=False)))) * float(x_scale)


def _restore(state, best_weights):
    if best_weights is not None:
        state.coef[...], state.intercept[...] = best_weights


def _format_record(record):
    parts = [f"epoch {record['epoch']:3d}", f"loss {record['train_loss']:.5f}"]
    if "val_loss" in record:
        parts += [f"val_loss {record['val_loss']:.5f}", f"val_acc {record['val_accuracy']:.4f}"]
    parts.append(f"{record['seconds'] * 1e3:.1f} ms")
    return "  ".join(parts)
