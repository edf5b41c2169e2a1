"""Plain NumPy float32 baselines: the code a user would write without softmax-fast.

These are what the kernels are compared against in ``bench_kernels.py`` (and the epoch loop
in ``bench_sgd.py``). They are deliberately straightforward vectorised NumPy in float32
(BLAS for the matrix products), not the float64 oracle of ``softmax_fast.kernels.reference``.
"""

import numpy as np

__all__ = ["numpy_softmax_ce", "numpy_linear_softmax_ce", "numpy_sgd_epoch"]


def numpy_softmax_ce(logits, y):
    """Mean cross-entropy and its gradient dL/dz, stable softmax, in the logits' dtype."""
    n = logits.shape[0]
    rows = np.arange(n)
    m = logits.max(axis=1, keepdims=True)
    shifted = logits - m
    e = np.exp(shifted)
    s = e.sum(axis=1, keepdims=True)
    loss = float(np.mean(np.log(s[:, 0]) - shifted[rows, y]))
    g = e / s
    g[rows, y] -= 1
    g /= n
    return loss, g


def numpy_linear_softmax_ce(X, x_scale, W, b, y, alpha=0.0):
    """Loss and gradients of z = (x_scale X) W^T + b: Xb @ W.T, softmax, Xb.T @ G.

    ``W`` is (n_classes, n_features) as in the kernels; uint8 ``X`` is converted to float32.
    """
    Xb = X.astype(np.float32) * np.float32(x_scale) if X.dtype == np.uint8 else X
    z = Xb @ W.T + b
    loss, g = numpy_softmax_ce(z, y)
    loss += 0.5 * alpha * float(np.sum(W * W))
    return loss, g.T @ Xb + alpha * W, g.sum(axis=0)


def numpy_sgd_epoch(X, x_scale, y, order, W, b, lr, alpha=0.0, batch_size=32):
    """One epoch of plain minibatch SGD (no momentum) with :func:`numpy_linear_softmax_ce`."""
    total = 0.0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        loss, gW, gb = numpy_linear_softmax_ce(X[idx], x_scale, W, b, y[idx], alpha)
        W -= lr * gW
        b -= lr * gb
        total += (loss - 0.5 * alpha * float(np.sum(W * W))) * len(idx)
    return total / len(order)
