"""The one loss-and-accuracy evaluation of trained models.

Used by the estimator (validation curves, ``objective``), the CLI (validation and test
figures) and grid search (every checkpoint of every configuration). The loss is the mean
unregularised cross-entropy, computed stably in float64 from the model's logits; the accuracy
counts argmax hits (ties go to the first class, as ``np.argmax``).

Several models are scored one after the other on each chunk of rows, each by a product of
the same shape, so a model's figures never depend on the models scored beside it. BLAS runs
on one thread here: its idle threads keep spinning after a multi-threaded product and would
steal the cores from the next compiled epoch (measured: 16 ms epochs became 30-75 ms).
"""

import numpy as np

from softmax_fast.kernels._blas import single_threaded_blas

__all__ = ["score", "score_models", "l2_penalty"]

#: rows per chunk: uint8 data is converted a chunk at a time, never whole
_CHUNK_ROWS = 8192


def l2_penalty(coef, alpha):
    """(alpha / 2) * ||coef||^2, accumulated in float64."""
    flat = np.asarray(coef).ravel().astype(np.float64, copy=False)
    return 0.5 * float(alpha) * float(flat @ flat)


def score(coef, intercept, X, x_scale, y, sample_weight=None, *, return_predictions=False):
    """Mean cross-entropy and accuracy of one model on ``(X, y)``.

    Parameters
    ----------
    coef : ndarray of shape (n_classes, n_features)
    intercept : ndarray of shape (n_classes,)
    X : ndarray or scipy sparse matrix of shape (n_samples, n_features)
        The model sees ``x_scale * X``.
    y : ndarray of int, shape (n_samples,)
        Class indices.
    sample_weight : ndarray of shape (n_samples,), optional
    return_predictions : bool
        Also return the predicted class index of every row.

    Returns
    -------
    loss, accuracy : float
    predictions : ndarray of intp, only with ``return_predictions``
    """
    out = score_models(np.asarray(coef)[None], np.asarray(intercept)[None], X, x_scale, y,
                       sample_weight, return_predictions=return_predictions)
    loss, accuracy = float(out[0][0]), float(out[1][0])
    return (loss, accuracy, out[2][0]) if return_predictions else (loss, accuracy)


def score_models(coefs, intercepts, X, x_scale, y, sample_weight=None, *, scales=None,
                 return_predictions=False):
    """Mean cross-entropy and accuracy of K models on ``(X, y)``.

    Parameters
    ----------
    coefs : ndarray of shape (K, n_classes, n_features)
    intercepts : ndarray of shape (K, n_classes)
    scales : ndarray of shape (K,), optional
        Lazy weight-decay factors: model j's weights are ``scales[j] * coefs[j]``.
    X, x_scale, y, sample_weight, return_predictions : see :func:`score`.

    Returns
    -------
    losses, accuracies : float64 ndarrays of shape (K,)
        Entries of a model with non-finite weights are non-finite or meaningless.
    predictions : intp ndarray of shape (K, n_samples), only with ``return_predictions``
    """
    n = X.shape[0]
    if n == 0:
        raise ValueError("cannot score on an empty set")
    n_models = coefs.shape[0]
    factors = np.full(n_models, float(x_scale)) if scales is None \
        else float(x_scale) * np.asarray(scales, dtype=np.float64)
    losses = np.zeros(n_models)
    correct = np.zeros(n_models)
    predictions = np.empty((n_models, n), dtype=np.intp) if return_predictions else None
    weights = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    total_weight = float(n) if weights is None else float(weights.sum())
    with single_threaded_blas(), np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, n, _CHUNK_ROWS):
            stop = min(n, start + _CHUNK_ROWS)
            rows = X[start:stop].astype(coefs.dtype, copy=False)
            labels = y[start:stop]
            w = None if weights is None else weights[start:stop]
            for j in range(n_models):
                z = rows @ coefs[j].T
                z = np.asarray(z)
                if factors[j] != 1.0:
                    z *= coefs.dtype.type(factors[j])
                z += intercepts[j]
                loss, hits, pred = _chunk_loss_hits(z.astype(np.float64, copy=False), labels, w)
                losses[j] += loss
                correct[j] += hits
                if predictions is not None:
                    predictions[j, start:stop] = pred
    losses /= total_weight
    correct /= total_weight
    return (losses, correct, predictions) if return_predictions else (losses, correct)


def _chunk_loss_hits(z, y, w):
    """Sum of (weighted) row losses log sum exp(z - m) - (z_y - m), of hits, and the argmax."""
    m = z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z - m).sum(axis=1))
    rows = np.arange(len(y))
    per_row = log_norm - (z[rows, y] - m[:, 0])
    pred = z.argmax(axis=1)
    hit = (pred == y).astype(np.float64)
    if w is None:
        return float(per_row.sum()), float(hit.sum()), pred
    return float(per_row @ w), float(hit @ w), pred
