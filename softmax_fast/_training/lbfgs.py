"""Full-batch L-BFGS on the fused loss and gradient: the exact optimum of the objective.

The optimizer (SciPy's L-BFGS-B) keeps its iterate, history and line search in float64; every
evaluation of the objective runs the fused ``linear_softmax_ce`` kernel in the model's working
dtype — float32 by default: logits and gradient products in float32 (GEMM speed at large
d x c), every sum (losses, weight sums, the penalty) in float64 — and returns the float64
gradient. ``X`` is used as it is (uint8, or the working dtype; a memory map is read chunk by
chunk, never copied), so the extra memory is the kernel's chunk plus a few c x d vectors.

A history of 50 correction pairs (``maxcor``; SciPy's default is 10) is what lets the method
reach the optimum in about half the iterations on softmax problems (scikit-learn-intelex
uses the same); it costs 100 vectors of c x d float64 — 80 MB at c = 1,000, d = 1,000.
"""

import numpy as np

from softmax_fast.kernels._blas import single_threaded_blas

from .policy import TrainingDivergedError

__all__ = ["run_lbfgs", "path_tolerance", "LBFGS_HISTORY"]

#: Correction pairs kept by L-BFGS (see the module docstring).
LBFGS_HISTORY = 50


def run_lbfgs(kernels, state, X, x_scale, y, sample_weight, alpha, n_threads, *, max_iter,
              tol, history=LBFGS_HISTORY, gtol=None, callback=None):
    """Minimise mean CE + (alpha/2)||coef||^2 over the whole data set with L-BFGS.

    Parameters
    ----------
    kernels : module
        Implements ``linear_softmax_ce`` for ``X`` (dense or sparse family).
    state : TrainState
        Its ``coef``/``intercept`` are the start (a warm start continues from them) and
        receive the result, in their own dtype (the working dtype of the evaluations).
    max_iter, tol : int, float
        Iteration cap and projected-gradient tolerance (``gtol``).
    gtol : float or None
        A stricter gradient tolerance for this fit (the smaller of the two is used): a step
        of a regularization path passes :func:`path_tolerance`.
    history : int
        L-BFGS memory (``maxcor``).
    callback : callable(iteration, loss) or None
        Called after every iteration (progress display).

    Returns
    -------
    (int, bool)
        Iterations run and whether the optimizer reported convergence.
    """
    from scipy.optimize import minimize

    n_classes, n_features = state.coef.shape
    dtype = state.coef.dtype
    coef = np.empty((n_classes, n_features), dtype=dtype)
    intercept = np.empty(n_classes, dtype=dtype)
    grad_coef = np.empty_like(coef)
    grad_intercept = np.empty_like(intercept)
    split = n_classes * n_features
    if X.dtype not in (np.uint8, dtype):
        X = X.astype(dtype)  # the kernels read uint8 or the working dtype
    grad = np.empty(split + n_classes)
    last = {"loss": np.nan}

    def objective(theta):
        coef[...] = theta[:split].reshape(n_classes, n_features)
        intercept[...] = theta[split:]
        loss = kernels.linear_softmax_ce(X, x_scale, coef, intercept, y, sample_weight, alpha,
                                         grad_coef, grad_intercept, n_threads)
        grad[:split] = grad_coef.ravel()
        grad[split:] = grad_intercept
        last["loss"] = loss
        last.setdefault("grad0", float(np.abs(grad).max()))
        return loss, grad

    progress = None
    if callback is not None:
        iteration = [0]

        def progress(_):
            iteration[0] += 1
            callback(iteration[0], float(last["loss"]))

    theta0 = np.concatenate([state.coef.ravel().astype(np.float64),
                             state.intercept.astype(np.float64)])
    # L-BFGS-B's own BLAS calls (dot products of the history) run on one thread: idle
    # OpenBLAS threads spin for a while after each call, and a spinning thread on the other
    # core made the next kernel call see a busy machine and fall back to one thread (the
    # probe's evaluations took 160 ms instead of 90).
    with single_threaded_blas():
        result = minimize(objective, theta0, jac=True, method="L-BFGS-B", callback=progress,
                          options={"maxiter": max_iter, "maxcor": history,
                                   "gtol": tol if gtol is None else min(tol, gtol),
                                   "ftol": 64 * np.finfo(float).eps, "maxls": 50})
    if not (np.all(np.isfinite(result.x)) and np.isfinite(result.fun)):
        raise TrainingDivergedError("L-BFGS met a non-finite loss or weights; check the input "
                                    "scale")
    state.coef[...] = result.x[:split].reshape(n_classes, n_features)
    state.intercept[...] = result.x[split:]
    state.history.append({"epoch": int(result.nit), "train_loss": float(result.fun)})
    converged = bool(result.success) or _at_working_precision(result, dtype,
                                                                 last.get("grad0", 0.0))
    return int(result.nit), converged


#: Below these gradient tolerances the line search stalls on rounding (float32 objectives
#: are defined to ~1e-7 relative; measured on the probe data: gtol 1e-7 ended in 19-24
#: evaluations per iteration and an abnormal stop).
_REACHABLE_GTOL = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-12}


def path_tolerance(alpha_step, coef, dtype, reduction):
    """The gradient tolerance of one warm-started step of a regularization path.

    Started from the previous strength's optimum, the fit's gradient is about
    ``alpha_step * coef`` (the penalty's change; the loss part is already optimal). At
    weak regularization that is below an absolute ``tol``, so the fit would stop with 0
    iterations and the path repeat one model for every weaker strength, while independent
    fits from zero do move. Asking for ``reduction`` times that step as well makes each
    strength reach its own optimum, whatever the start; float32 keeps a floor it can reach.

    Parameters
    ----------
    alpha_step : float
        Change of alpha from the previous strength.
    coef : ndarray (n_classes, n_features)
        The previous strength's optimum.
    dtype : dtype
        The working dtype.
    reduction : float
        Fraction of the step's gradient to reach.
    """
    step_gradient = abs(alpha_step) * float(np.abs(coef).max(initial=0.0))
    return max(reduction * step_gradient, _REACHABLE_GTOL.get(np.dtype(dtype), 0.0))


def _at_working_precision(result, dtype, grad0):
    """A line search that can no longer improve a float32 objective, near the optimum.

    In float32 the objective is only defined to ~1e-7 relative; SciPy then stops with
    "ABNORMAL_TERMINATION_IN_LNSRCH" although no better point exists at that precision. It
    counts as converged when the gradient has also shrunk a thousandfold.
    """
    message = str(getattr(result, "message", ""))
    small = float(np.abs(result.jac).max()) <= 1e-3 * grad0
    return dtype == np.float32 and "ABNORMAL" in message.upper() and small
