"""A second-order solver: trust-region Newton-CG with Hessian-vector products.

The course reports derived Newton's method for this objective; at scale the Hessian
(c d x c d) is never formed, only its products with a direction V (c x d, plus v_b (c,)):

    U = x_scale X V^T + v_b                      (n x c)
    R_i = w_i / sum(w) * p_i * (u_i - p_i . u_i)   (the softmax Jacobian applied to u_i)
    H v = (x_scale R^T X + alpha V,  sum_i R_i)

with P the probabilities at the current weights. Loss and gradient come from the fused kernel
(as for L-BFGS); the products run through BLAS (NumPy) in row chunks, in the working dtype
with float64 sums, and P is kept between the products of one outer iteration when it fits in
``cache_bytes`` (else recomputed per product: three products per Hessian-vector product
instead of two). SciPy's ``trust-ncg`` drives the outer iterations.

Threads: the chunks of a product are shared by ``n_threads`` threads of our own, each chunk's
BLAS calls on its own thread, and the chunks' partial sums are added in chunk order — the
same bits for any thread count. BLAS itself stays on one thread for the whole solve: idle
OpenBLAS threads spin for a while after each call, and a spinning thread beside the fused
kernel's own threads makes the next gradient look like a busy machine (see ``lbfgs.py``).

Whether it beats L-BFGS depends on the problem: each outer iteration costs one gradient plus
several Hessian-vector products; see ``benchmarks/bench_probe.py`` for measurements. L-BFGS
stays the default solver.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from softmax_fast.kernels._blas import single_threaded_blas

from .policy import TrainingDivergedError

__all__ = ["run_newton"]

#: Rows per chunk of the Hessian-vector products.
_CHUNK_ROWS = 4096


class _Hessian:
    """Hessian-vector products at the weights of the last gradient evaluation."""

    def __init__(self, X, x_scale, y, sample_weight, alpha, dtype, cache_bytes, pool=None):
        self.X, self.x_scale, self.alpha, self.dtype = X, float(x_scale), float(alpha), dtype
        self.pool = pool  # a ThreadPoolExecutor sharing the chunks, or None (this thread)
        n = X.shape[0]
        w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, np.float64)
        self.row_scale = (w / w.sum()).astype(dtype)
        self.cache_bytes = cache_bytes
        self.coef = self.intercept = None
        self.probs = None

    def at(self, coef, intercept):
        """Move to new weights: the cached probabilities no longer hold."""
        self.coef, self.intercept = coef.copy(), intercept.copy()
        self.probs = None

    def _chunk(self, start):
        stop = min(self.X.shape[0], start + _CHUNK_ROWS)
        return stop, self.X[start:stop].astype(self.dtype) * self.dtype.type(self.x_scale)

    def _probabilities(self, Xc):
        z = Xc @ self.coef.T + self.intercept
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        return z

    def product(self, v_coef, v_intercept):
        """(H v)_coef, (H v)_intercept in float64."""
        n, c = self.X.shape[0], self.coef.shape[0]
        cache = self.probs is None and n * c * self.dtype.itemsize <= self.cache_bytes
        if cache:
            self.probs = np.empty((n, c), dtype=self.dtype)
        out_coef = np.zeros(self.coef.shape)
        out_intercept = np.zeros(c)
        v_coef = v_coef.astype(self.dtype)
        v_intercept = v_intercept.astype(self.dtype)
        reuse = self.probs is not None and not cache

        def one_chunk(start):  # chunks write disjoint rows of the cache: no lock needed
            stop, Xc = self._chunk(start)
            if reuse:
                p = self.probs[start:stop]
            else:
                p = self._probabilities(Xc)
                if cache:
                    self.probs[start:stop] = p
            u = Xc @ v_coef.T + v_intercept
            r = p * (u - np.einsum("ik,ik->i", p, u)[:, None])
            r *= self.row_scale[start:stop, None]
            return r.T @ Xc, r.sum(axis=0, dtype=np.float64)

        starts = range(0, n, _CHUNK_ROWS)
        # map() yields in chunk order: the sums, and so the bits, do not depend on the threads
        for part_coef, part_intercept in (self.pool.map(one_chunk, starts) if self.pool
                                          else map(one_chunk, starts)):
            out_coef += part_coef
            out_intercept += part_intercept
        return out_coef + self.alpha * v_coef, out_intercept


def run_newton(kernels, state, X, x_scale, y, sample_weight, alpha, n_threads, *, max_iter,
               tol, cache_bytes=1 << 30, callback=None):
    """Minimise mean CE + (alpha/2)||coef||^2 with trust-region Newton-CG (see the module).

    Same interface and result as :func:`softmax_fast._training.lbfgs.run_lbfgs`.
    """
    from scipy.optimize import minimize

    c, d = state.coef.shape
    dtype = state.coef.dtype
    if X.dtype not in (np.uint8, dtype):
        X = X.astype(dtype)
    coef = np.empty((c, d), dtype=dtype)
    intercept = np.empty(c, dtype=dtype)
    grad_coef, grad_intercept = np.empty_like(coef), np.empty_like(intercept)
    split = c * d
    pool = ThreadPoolExecutor(n_threads) if n_threads > 1 else None
    hessian = _Hessian(X, x_scale, y, sample_weight, alpha, dtype, cache_bytes, pool)

    def objective(theta):
        coef[...] = theta[:split].reshape(c, d)
        intercept[...] = theta[split:]
        loss = kernels.linear_softmax_ce(X, x_scale, coef, intercept, y, sample_weight, alpha,
                                         grad_coef, grad_intercept, n_threads)
        last["loss"] = loss
        return loss, np.concatenate([grad_coef.ravel(), grad_intercept]).astype(np.float64)

    def hessp(theta, v):
        # the products belong to the trust region's centre, not to the last trial point
        if hessian.coef is None or not (
                np.array_equal(hessian.coef.ravel(), theta[:split].astype(dtype))
                and np.array_equal(hessian.intercept, theta[split:].astype(dtype))):
            hessian.at(theta[:split].reshape(c, d).astype(dtype), theta[split:].astype(dtype))
        hv_coef, hv_intercept = hessian.product(v[:split].reshape(c, d), v[split:])
        return np.concatenate([hv_coef.ravel(), hv_intercept])

    iteration = [0]
    last = {"loss": np.nan}

    def progress(*_):
        iteration[0] += 1
        if callback is not None:
            callback(iteration[0], float(last["loss"]))

    theta0 = np.concatenate([state.coef.ravel().astype(np.float64),
                             state.intercept.astype(np.float64)])
    try:
        with single_threaded_blas():
            result = minimize(objective, theta0, jac=True, hessp=hessp, method="trust-ncg",
                              callback=progress, options={"maxiter": max_iter, "gtol": tol})
    finally:
        if pool is not None:
            pool.shutdown()
    if not (np.all(np.isfinite(result.x)) and np.isfinite(result.fun)):
        raise TrainingDivergedError("Newton-CG met a non-finite loss or weights; check the "
                                    "input scale")
    state.coef[...] = result.x[:split].reshape(c, d)
    state.intercept[...] = result.x[split:]
    state.history.append({"epoch": int(result.nit), "train_loss": float(result.fun)})
    return int(result.nit), bool(result.success)
