"""Baselines: the code a user would write without softmax-fast, in NumPy or PyTorch.

The NumPy functions are what the kernels are compared against (``x base`` in report.py) in
``bench_kernels.py``, ``bench_shapes.py`` and the epoch loop of ``bench_sgd.py``. They are
deliberately straightforward vectorised NumPy in float32 (BLAS for the matrix products, every
step a separate pass over memory: unfused), not the float64 oracle of
``softmax_fast.kernels.reference``. :func:`torch_linear_softmax_ce` is the PyTorch peer of the
fused kernel (imported only when called, so PyTorch stays optional).
"""

import numpy as np

__all__ = ["numpy_softmax_ce", "numpy_linear_softmax_ce", "numpy_sgd_epoch",
           "torch_linear_softmax_ce"]


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
    """Loss and gradients of z = (x_scale X) W^T + b, unfused: X @ W.T, softmax, G.T @ X.

    ``W`` is (n_classes, n_features) as in the kernels; uint8 ``X`` is converted to float32
    (inside the call, as a user would have to). Float32 in, float32 out: the logits, the
    softmax and both products stay in float32.
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


def torch_linear_softmax_ce(X, x_scale, W, b, y, alpha, n_threads):
    """A callable running PyTorch's loss and gradient of the same model, and its label.

    ``F.linear`` + ``F.cross_entropy`` (mean) + (alpha/2)||W||^2, then ``backward()``: autograd
    computes the same two products as the fused kernel. PyTorch has no uint8 GEMM, so uint8
    ``X`` is converted to float32 once, outside the timing. Raises ImportError without torch.

    Returns
    -------
    (callable() -> float, str)
        One loss-and-gradient evaluation, and "torch <version>".
    """
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(int(n_threads))
    Xf = X.astype(np.float32) * np.float32(x_scale) if X.dtype == np.uint8 else X
    Xt = torch.from_numpy(np.ascontiguousarray(Xf, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    Wt = torch.from_numpy(np.array(W, dtype=np.float32)).requires_grad_(True)
    bt = torch.from_numpy(np.array(b, dtype=np.float32)).requires_grad_(True)

    def evaluate():
        Wt.grad = bt.grad = None  # fresh gradients, as the kernels overwrite theirs
        loss = F.cross_entropy(F.linear(Xt, Wt, bt), yt) + 0.5 * alpha * (Wt * Wt).sum()
        loss.backward()
        return float(loss.detach())

    return evaluate, f"torch {torch.__version__}"
