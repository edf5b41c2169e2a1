"""NumPy reference for every kernel: the oracle the fast backends are tested against.

Design: written for clarity, not speed, and computed in float64 whatever the input dtype.
The first half states the maths of the course reports as plain functions. The second half
adapts them to the low-level contracts of :mod:`softmax_fast.kernels.contract` (outputs
written into caller-allocated arrays), so the reference is also a selectable backend of every
family: ``dense``, ``sparse`` (a CSR ``X`` is densified — fine for an oracle) and ``multi``
(K models trained one after the other). Weights have the one layout of the whole project,
(n_classes, n_features): z = x W^T + b.

Conventions shared by all backends
----------------------------------
* loss of one row: l_i = log sum_k exp(z_ik - m_i) - (z_iy - m_i), with m_i = max_k z_ik.
* (weighted) mean loss: L = sum_i w_i l_i / sum_i w_i (w_i = 1 without sample weights).
* dL/dz_ik = w_i (softmax(z_i)_k - [k == y_i]) / sum_i w_i.
* linear model: L(W, b) = mean loss of z = X W^T + b, plus (alpha/2) ||W||^2 (the bias is not
  regularized); dL/dW = (dL/dz)^T X + alpha W, dL/db = column sums of dL/dz.
"""

import numpy as np

__all__ = [
    "stable_softmax",
    "stable_log_softmax",
    "cross_entropy",
    "cross_entropy_grad",
    "linear_loss_grad",
    "sgd_epoch_reference",
    # low-level backend contract
    "softmax",
    "log_softmax",
    "softmax_ce",
    "linear_softmax_ce",
    "sgd_epoch",
    "multi_sgd_epoch",
]


# --------------------------------------------------------------------------------------
# The maths, plainly
# --------------------------------------------------------------------------------------
def stable_softmax(z):
    """Row-wise softmax, exp(z - max) / sum exp(z - max), in float64.

    Subtracting the row maximum keeps every exponent <= 0, so nothing overflows; a row of
    -inf entries except at least one finite one is fine (those classes get probability 0).
    """
    z = np.asarray(z, dtype=np.float64)
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def stable_log_softmax(z):
    """Row-wise log-softmax computed as (z - max) - log sum exp(z - max).

    The order matters (PyTorch issue #11752): subtracting max and log-sum separately from z
    loses less precision than z - (max + logsum) when max is large.
    """
    z = np.asarray(z, dtype=np.float64)
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _weights(n, sample_weight):
    if sample_weight is None:
        return np.ones(n, dtype=np.float64)
    return np.asarray(sample_weight, dtype=np.float64)


def cross_entropy(z, y, sample_weight=None):
    """(Weighted) mean cross-entropy of logits ``z`` (n, c) against integer labels ``y``."""
    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y)
    w = _weights(len(y), sample_weight)
    per_row = -stable_log_softmax(z)[np.arange(len(y)), y]
    return float(np.sum(w * per_row) / np.sum(w))


def cross_entropy_grad(z, y, sample_weight=None):
    """Gradient of :func:`cross_entropy` w.r.t. the logits: w_i (softmax - onehot) / sum w."""
    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y)
    w = _weights(len(y), sample_weight)
    g = stable_softmax(z)
    g[np.arange(len(y)), y] -= 1.0
    return g * (w / np.sum(w))[:, None]


def linear_loss_grad(X, W, b, y, alpha=0.0, sample_weight=None):
    """Loss and gradients of the linear softmax model, as in the course reports.

    ``W`` has shape (n_classes, n_features). Returns ``(loss, dW, db)`` with
    loss = mean CE(X W^T + b, y) + (alpha/2)||W||^2, dW = (Y_hat - Y)^T X / n + alpha W and
    db = mean(Y_hat - Y) (weighted means with ``sample_weight``).
    """
    X = _dense(X)
    W = np.asarray(W, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    z = X @ W.T + b
    dz = cross_entropy_grad(z, y, sample_weight)
    loss = cross_entropy(z, y, sample_weight) + 0.5 * alpha * float(np.sum(W * W))
    return loss, dz.T @ X + alpha * W, dz.sum(axis=0)


def _dense(X):
    """``X`` as a float64 ndarray; a scipy sparse matrix is densified (fine for an oracle)."""
    if hasattr(X, "toarray"):
        X = X.toarray()
    return np.asarray(X, dtype=np.float64)


def sgd_epoch_reference(
    X, y, W, b, order, *, lr, alpha=0.0, batch_size=32, momentum=0.0, nesterov=False,
    velocity_W=None, velocity_b=None, sample_weight=None,
):
    """One epoch of minibatch SGD over the rows of ``X`` in ``order`` (float64, in place).

    ``W`` (n_classes, n_features) and ``b`` are updated in place. Minibatches are consecutive slices of ``order``; the last, partial batch is kept. Each
    step uses the gradient g of the batch objective at the current weights:
    plain W <- W - lr g; classical momentum v <- momentum v - lr g, W <- W + v;
    Nesterov (scikit-learn's form) v <- momentum v - lr g, W <- W + momentum v - lr g.
    Returns the mean over samples of each sample's loss at the weights its batch saw.
    """
    n = len(order)
    w_all = _weights(len(y), sample_weight)
    total_loss, total_weight = 0.0, 0.0
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        wb = w_all[idx]
        if wb.sum() > 0:
            data_loss, gW, gb = linear_loss_grad(X[idx], W, b, y[idx], 0.0, wb)
        else:  # a batch with zero total weight carries no data term
            data_loss, gW, gb = 0.0, np.zeros_like(W), np.zeros_like(b)
        total_loss += data_loss * wb.sum()
        total_weight += wb.sum()
        gW = gW + alpha * W
        if momentum == 0.0:
            W -= lr * gW
            b -= lr * gb
        else:
            velocity_W *= momentum
            velocity_W -= lr * gW
            velocity_b *= momentum
            velocity_b -= lr * gb
            if nesterov:
                W += momentum * velocity_W - lr * gW
                b += momentum * velocity_b - lr * gb
            else:
                W += velocity_W
                b += velocity_b
    return total_loss / total_weight if total_weight > 0 else 0.0


# --------------------------------------------------------------------------------------
# Low-level backend contract (see softmax_fast.kernels). Inputs are already validated.
# --------------------------------------------------------------------------------------
def softmax(logits, out, n_threads=1):  # IN logits (n, c); OUT out (n, c)
    out[...] = stable_softmax(logits)


def log_softmax(logits, out, n_threads=1):  # IN logits (n, c); OUT out (n, c)
    out[...] = stable_log_softmax(logits)


def softmax_ce(logits, y, sample_weight, out, n_threads=1):
    """IN logits (n, c), y (n,) intp, sample_weight (n,) float64 or None; OUT out (n, c).

    Returns the (weighted) mean loss; writes dL/dlogits into ``out`` (may alias logits).
    """
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        z = np.array(logits, dtype=np.float64)
        loss = cross_entropy(z, y, sample_weight)
        out[...] = cross_entropy_grad(z, y, sample_weight)
    return loss


def linear_softmax_ce(X, x_scale, coef, intercept, y, sample_weight, alpha,
                      grad_coef, grad_intercept, n_threads=1):
    """IN X (n, d) uint8|float, coef (c, d), intercept (c,); OUT grad_coef, grad_intercept.

    The model sees X * x_scale. Returns the loss including (alpha/2)||coef||^2.
    """
    Xs = _dense(X) * x_scale
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        loss, dW, db = linear_loss_grad(Xs, coef, intercept, y, alpha, sample_weight)
    grad_coef[...] = dW
    grad_intercept[...] = db
    return loss


def sgd_epoch(X, x_scale, y, sample_weight, order, coef, intercept, velocity_coef,
              velocity_intercept, lr, alpha, momentum, nesterov, batch_size, n_threads=1):
    """IN X, y, sample_weight, order; IN/OUT coef, intercept, velocity_* (c, d) / (c,).

    Runs one epoch of :func:`sgd_epoch_reference` and writes the weights back in the
    arrays' own dtype. Returns the epoch's mean data loss.
    """
    Xs = _dense(X) * x_scale
    W = coef.astype(np.float64)
    b = intercept.astype(np.float64)
    vW = velocity_coef.astype(np.float64) if velocity_coef is not None else None
    vb = velocity_intercept.astype(np.float64) if velocity_intercept is not None else None
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        loss = sgd_epoch_reference(
            Xs, y, W, b, order, lr=lr, alpha=alpha, batch_size=batch_size,
            momentum=momentum, nesterov=nesterov, velocity_W=vW, velocity_b=vb,
            sample_weight=sample_weight,
        )
    coef[...] = W
    intercept[...] = b
    if vW is not None:
        velocity_coef[...] = vW
        velocity_intercept[...] = vb
    return loss


def multi_sgd_epoch(X, x_scale, y, order, coefs, scales, intercepts, velocity_coefs,
                    velocity_intercepts, lr, alpha, momentum, nesterov, batch_size,
                    n_threads=1):
    """IN X, y, order, lr, alpha, momentum, nesterov (K,); IN/OUT coefs (K, c, d), scales (K,),
    intercepts (K, c), velocity_* (or None without momentum).

    Each model j (weights ``scales[j] * coefs[j]``) runs one epoch of
    :func:`sgd_epoch_reference` in float64, alone; its weights are written back with scale 1.
    Returns the models' mean data losses (K,).
    """
    Xs = _dense(X) * x_scale
    losses = np.empty(coefs.shape[0])
    for j in range(coefs.shape[0]):
        W = coefs[j].astype(np.float64) * scales[j]
        b = intercepts[j].astype(np.float64)
        uses_momentum = momentum[j] != 0.0
        vW = velocity_coefs[j].astype(np.float64) if uses_momentum else None
        vb = velocity_intercepts[j].astype(np.float64) if uses_momentum else None
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            losses[j] = sgd_epoch_reference(
                Xs, y, W, b, order, lr=float(lr[j]), alpha=float(alpha[j]),
                batch_size=int(batch_size), momentum=float(momentum[j]),
                nesterov=bool(nesterov[j]), velocity_W=vW, velocity_b=vb)
        coefs[j] = W
        scales[j] = 1.0
        intercepts[j] = b
        if uses_momentum:
            velocity_coefs[j] = vW
            velocity_intercepts[j] = vb
    return losses
