"""Full-batch L-BFGS on the fused loss and gradient: the exact optimum of the objective.

The optimizer (SciPy's L-BFGS-B) keeps its iterate, history and line search in float64; every
evaluation of the objective runs the fused ``linear_softmax_ce`` kernel in the model's working
dtype — float32 by default: logits and gradient products in float32 (GEMM speed at large
d x c), every sum (losses, weight sums, the penalty) in float64 — and returns the float64
gradient. ``X`` is used as it is (uint8, or the working dtype; a memory map is read chunk by
chunk, never copied), so the extra memory is the kernel's chunk plus a few c x d vectors.

A history of 50 correction pairs (``maxcor``; SciPy's default is 10) is what lets the method
reach the optimum in about half the iterations on softmax problems (scikit-learn-intelex
uses the same); it costs 100 vectors of c x d float64 — 800 MB at c = 1,000, d = 1,000.

Near the optimum a float32 loss stops resolving the decrease of a step; the optimizer is then
given a value that does (:class:`_ResolvedObjective`), so its line searches do not stall.
"""

import numpy as np

from softmax_fast.kernels._blas import single_threaded_blas

from .policy import TrainingDivergedError

__all__ = ["run_lbfgs", "path_tolerance", "FeatureWhitening", "LBFGS_HISTORY"]

#: Correction pairs kept by L-BFGS (see the module docstring).
LBFGS_HISTORY = 50


def run_lbfgs(kernels, state, X, x_scale, y, sample_weight, alpha, n_threads, *, max_iter,
              tol, history=LBFGS_HISTORY, gtol=None, callback=None, precondition=True,
              moment_cache=None):
    """Minimise mean CE + (alpha/2)||coef||^2 over the whole data set with L-BFGS.

    Parameters
    ----------
    kernels : module
        Implements ``linear_softmax_ce`` for ``X`` (dense or sparse family).
    state : TrainState
        Its ``coef``/``intercept`` are the start (a warm start continues from them) and
        receive the result, in their own dtype (the working dtype of the evaluations).
    max_iter, tol : int, float
        Iteration cap and gradient tolerance: the fit stops once every component of the
        objective's gradient (in the weights' own coordinates) is at most ``tol``.
    gtol : float or None
        A stricter gradient tolerance for this fit (the smaller of the two is used): a step
        of a regularization path passes :func:`path_tolerance`.
    history : int
        L-BFGS memory (``maxcor``).
    callback : callable(iteration, loss) or None
        Called after every iteration (progress display).
    precondition : bool
        Run the optimizer in whitened coordinates (:class:`FeatureWhitening`) when ``X`` is a
        dense array; the optimum is the same, reached in fewer iterations.
    moment_cache : dict or None
        Keeps the features' second moments between fits on the same ``X`` (the strengths of
        a regularization path), so they are estimated once.

    Returns
    -------
    (int, bool)
        Iterations run and whether the fit converged.
    """
    from scipy.optimize import minimize

    n_classes, n_features = state.coef.shape
    dtype = state.coef.dtype
    coef = np.empty((n_classes, n_features), dtype=dtype)
    intercept = np.empty(n_classes, dtype=dtype)
    grad_coef = np.empty_like(coef)
    grad_intercept = np.empty_like(intercept)
    if X.dtype not in (np.uint8, dtype):
        X = X.astype(dtype)  # the kernels read uint8 or the working dtype
    stop_at = tol if gtol is None else min(tol, gtol)
    last = {"loss": np.nan, "theta": None, "grad_max": np.inf}

    # L-BFGS-B's own BLAS calls (dot products of the history, the change of coordinates) run
    # on one thread: idle OpenBLAS threads spin for a while after each call, and a spinning
    # thread on the other core made the next kernel call see a busy machine and fall back to
    # one thread (the probe's evaluations took 160 ms instead of 90). One thread also keeps
    # the whitening's products, and so the whole fit, identical for any ``n_threads``.
    with single_threaded_blas():
        coordinates = None
        if precondition:
            coordinates = FeatureWhitening.for_data(X, x_scale, sample_weight, alpha,
                                                    n_classes, moment_cache)
        if coordinates is None:
            coordinates = _Identity(n_classes, n_features)

        def objective(theta):
            coordinates.weights(theta, coef, intercept)
            loss = kernels.linear_softmax_ce(X, x_scale, coef, intercept, y, sample_weight,
                                             alpha, grad_coef, grad_intercept, n_threads)
            last["loss"], last["theta"] = loss, theta.copy()
            last["grad_max"] = max(float(np.abs(grad_coef).max(initial=0.0)),
                                   float(np.abs(grad_intercept).max(initial=0.0)))
            if "grad0" not in last:
                last["grad0"] = last["grad_max"]
                if last["grad_max"] <= stop_at:
                    raise _StartIsOptimal  # a warm start already within tol: 0 iterations
            gradient = coordinates.gradient(grad_coef, grad_intercept)
            return resolved.value(theta, loss, gradient), gradient

        iteration = [0]
        resolved = _ResolvedObjective(dtype)

        def after_iteration(intermediate_result):
            iteration[0] += 1
            resolved.accept(intermediate_result.x)
            if callback is not None:
                callback(iteration[0], float(last["loss"]))
            # the gradient test in the weights' own coordinates (SciPy's would see the
            # whitened gradient): the last evaluation is the accepted point
            at_iterate = last["theta"] is not None and np.array_equal(last["theta"],
                                                                      intermediate_result.x)
            if at_iterate and last["grad_max"] <= stop_at:
                last["converged"] = True
                raise StopIteration

        theta0 = coordinates.start(state.coef, state.intercept)
        try:
            # SciPy's own gradient test is off (gtol 0: only an exactly zero gradient stops it)
            result = minimize(objective, theta0, jac=True, method="L-BFGS-B",
                              callback=after_iteration,
                              options={"maxiter": max_iter, "maxcor": history, "gtol": 0.0,
                                       "ftol": 64 * np.finfo(float).eps, "maxls": 50})
        except _StartIsOptimal:
            state.history.append({"epoch": 0, "train_loss": float(last["loss"])})
            return 0, True
        if np.all(np.isfinite(result.x)):
            coordinates.weights(result.x, coef, intercept)
            last["final_grad_max"] = float(np.abs(coordinates.own_gradient(result.jac)).max(
                initial=0.0))
    if not (np.all(np.isfinite(result.x)) and np.isfinite(result.fun)
            and np.all(np.isfinite(coef)) and np.all(np.isfinite(intercept))):
        raise TrainingDivergedError("L-BFGS met a non-finite loss or weights; check the input "
                                    "scale")
    state.coef[...] = coef
    state.intercept[...] = intercept
    state.history.append({"epoch": iteration[0],
                          "train_loss": resolved.loss_at(result.x, float(result.fun))})
    converged = (last.get("converged", False) or bool(result.success)
                 or _at_working_precision(result, dtype, last))
    return iteration[0], converged


class _ResolvedObjective:
    """The objective's value below its rounding: the gradient integrated along the step.

    A float32 evaluation defines the loss to a few units of float32 rounding, relative.
    Near the optimum the decrease a step brings is far smaller, and the line search's
    sufficient-decrease test then compares rounding errors: it shrinks and grows the step
    for tens of evaluations (probe 20k x 512 x 100, tol 1e-6: 206 of a path's 336
    evaluations were spent in four such line searches). Where a trial's loss is within
    ``RESOLUTION`` of the accepted iterate's, the value given to the optimizer is the
    iterate's plus the trapezoid rule on the two gradients along the step,
    ``(g_k + g) . (theta - theta_k) / 2`` — the gradients are still accurate there, and for
    steps this small the rule's error (third order in the step) is far below rounding —
    so the line search sees the decrease it is looking for (Hager and Zhang's "approximate
    Wolfe" conditions rest on the same observation). Float64 evaluations are used as they are.
    """

    #: Relative band of float32 losses treated as equal (a few float32 roundings).
    RESOLUTION = 1e-6

    def __init__(self, dtype):
        self.active = np.dtype(dtype) == np.float32
        self.base = None  # (theta, value given, true loss, gradient) of the accepted iterate
        self.trial = None  # the same of the last evaluation

    def value(self, theta, loss, gradient):
        """The value to give the optimizer for ``theta`` (its true ``loss`` and ``gradient``)."""
        if not self.active:
            return loss
        if self.base is None:
            self.base = (theta.copy(), loss, loss, gradient.copy())
            return loss
        theta0, value0, loss0, gradient0 = self.base
        if abs(loss - loss0) <= self.RESOLUTION * abs(loss0):  # False for a NaN: kept
            value = value0 + 0.5 * float((gradient0 + gradient) @ (theta - theta0))
        else:
            value = loss
        self.trial = (theta.copy(), value, loss, gradient.copy())
        return value

    def loss_at(self, theta, value):
        """The true loss at the accepted ``theta`` whose given value was ``value``."""
        if self.base is not None and np.array_equal(self.base[0], theta):
            return float(self.base[2])
        return value

    def accept(self, theta):
        """The optimizer moved to ``theta``: L-BFGS-B accepts the point it evaluated last."""
        if self.active and self.trial is not None:
            # otherwise (not seen on SciPy 1.17) the next evaluation starts a new base
            same = np.array_equal(self.trial[0], theta)
            self.base, self.trial = (self.trial if same else None), None


class _StartIsOptimal(Exception):
    """The first evaluation found the start within tol (raised out of SciPy's loop)."""


class _Identity:
    """The weights' own coordinates: theta = [coef.ravel(), intercept] in float64."""

    def __init__(self, n_classes, n_features):
        self.split = n_classes * n_features
        self.grad = np.empty(self.split + n_classes)

    def start(self, coef, intercept):
        return np.concatenate([coef.ravel().astype(np.float64),
                               intercept.astype(np.float64)])

    def weights(self, theta, coef, intercept):
        coef[...] = theta[:self.split].reshape(coef.shape)
        intercept[...] = theta[self.split:]

    def gradient(self, grad_coef, grad_intercept):
        self.grad[:self.split] = grad_coef.ravel()
        self.grad[self.split:] = grad_intercept
        return self.grad

    def own_gradient(self, grad):
        return grad


#: Rows (evenly spaced through X) from which the whitening estimates the features' second
#: moments: 32 per feature, at least 4,096 and at most 16,384 (8 per feature estimated the
#: probe's M too roughly: 79 evaluations against 22).
WHITENING_ROWS_PER_FEATURE = 32
WHITENING_ROWS = (4096, 16384)
#: Largest d whitened: its three (d+1)^2 float64 matrices take 400 MB at d = 4,096.
WHITENING_MAX_FEATURES = 4096
#: The estimate may cost at most this many evaluations of the objective (2 m d^2 flops
#: against 4 n c d each); beyond that (few classes, many features) the fit runs unwhitened.
WHITENING_BUDGET_EVALUATIONS = 40
#: Rows read at a time while estimating them (a memory map is read block by block).
_WHITENING_BLOCK = 1024
#: The damping's floor, relative to the second-moment matrix's largest entry: keeps the
#: Cholesky factor well defined when alpha is 0 (see :class:`FeatureWhitening`).
WHITENING_DAMPING = 1e-10


class FeatureWhitening:
    """L-BFGS in whitened coordinates: the features' scale and correlation taken out.

    With A = [coef | intercept] (c x (d+1)) and x~ = [x, 1], the data part of the
    objective's Hessian is close to S (x) M, M = E[x~ x~^T] the features' second-moment
    matrix and S the softmax's c x c curvature; the penalty adds alpha I. Embeddings and
    pixels make M badly conditioned (an uncentred mean, a power-law spectrum), and L-BFGS
    then needs many iterations to learn it. Writing A = V L^-1 with L L^T = M + delta I
    (Cholesky) and optimising over V turns the feature side of the Hessian into about
    the identity. The objective and its optimum are unchanged; only the optimizer's
    coordinates are: the gradient is G_V = G_A L^-T, and the stopping test stays on G_A.

    delta = alpha x c on the features' diagonal: the penalty's share of the Hessian against
    the data's (S has eigenvalues 1/c at the start), so strong regularization keeps the
    coordinates near the original ones, and directions with almost no data (constant
    pixels) are not stretched beyond what the penalty holds. The intercept is not
    penalized, so its diagonal gets no delta: with it, a strongly regularized fit from zero
    saw its intercept's curvature at a tenth of the weights' and spent its iterations there
    (probe below, alpha 0.1, tol 1e-6: 12 iterations with delta on the intercept, 4
    without; 16 fits from 1e-1 to 1e-7: 252 evaluations -> 236, the weak strengths
    unchanged; 20k rows of Fashion-MNIST unchanged). A floor of WHITENING_DAMPING x M's
    largest entry on every diagonal entry keeps the factor defined at alpha = 0.
    Evaluations (or iterations) measured with float32 kernels:

    - probe 50k x 512 x 100, alpha 1e-5, to a relative gap of 1e-6: 70 plain; 18 at this
      delta (1e-3); 15 at 1e-2 and 31 at 1e-1;
    - 20k rows of Fashion-MNIST, alpha 1e-4, tol 1e-7: 418 iterations plain, 302 whitened
      (larger deltas did better there, 212 at delta 1, but a floor tied to M's scale left
      features on a 1:100 spread of scales as badly conditioned as before: 400 iterations
      instead of 22);
    - features on a 1:100 spread of scales (tests/test_lbfgs_whitening.py), float64:
      no convergence in 5,000 iterations plain, 22 whitened.

    Each evaluation costs two (c x (d+1)) x ((d+1) x (d+1)) products on top of the kernel
    (4 c d^2 flops against the kernel's 4 n c d), and M one pass over WHITENING_ROWS rows.
    """

    def __init__(self, cholesky):
        from scipy.linalg import solve_triangular

        self.cholesky = cholesky
        self.inverse = solve_triangular(cholesky, np.eye(len(cholesky)), lower=True)

    @classmethod
    def for_data(cls, X, x_scale, sample_weight, alpha, n_classes, cache=None):
        """The whitening for ``X`` (dense, a memory map, sparse, or a Dask cluster's problem,
        which estimates M where its blocks live), or None where none pays.

        None for other objects, for d above WHITENING_MAX_FEATURES, for
        n < 4 (d + 1) (its two products per evaluation would cost more than a quarter of
        the kernel's) and where estimating M would cost more than
        WHITENING_BUDGET_EVALUATIONS evaluations. ``cache`` (a dict) keeps M for the next
        fit on the same data.
        """
        import scipy.sparse

        clustered = hasattr(X, "second_moment")  # softmax_fast.distributed.ClusterProblem
        if not (clustered or isinstance(X, np.ndarray) or scipy.sparse.issparse(X)) \
                or len(X.shape) != 2:
            return None
        n, d = X.shape
        rows = whitening_rows(n, d)
        if (d > WHITENING_MAX_FEATURES or n < 4 * (d + 1)
                or rows * d > 2 * WHITENING_BUDGET_EVALUATIONS * n * n_classes):
            return None
        if cache is not None and "second_moment" in cache:
            second_moment = cache["second_moment"]
        else:
            second_moment = X.second_moment(x_scale, rows) if clustered else \
                feature_second_moment(X, x_scale, sample_weight, rows)
            if cache is not None:
                cache["second_moment"] = second_moment
        if not np.all(np.isfinite(second_moment)):
            return None  # X is not finite: the first evaluation reports it, as without this
        largest = float(np.abs(second_moment).max(initial=0.0))
        floor = WHITENING_DAMPING * largest
        damping = np.full(d + 1, max(alpha * n_classes, floor))
        damping[-1] = floor  # the intercept carries no penalty: its curvature is data's alone
        if not (np.all(np.isfinite(damping)) and damping.max() > 0):
            return None
        try:
            cholesky = np.linalg.cholesky(second_moment + np.diag(damping))
        except np.linalg.LinAlgError:
            return None
        return cls(cholesky)

    def start(self, coef, intercept):
        """V = A L."""
        augmented = np.concatenate([coef, intercept[:, None]], axis=1).astype(np.float64)
        return (augmented @ self.cholesky).ravel()

    def weights(self, theta, coef, intercept):
        """A = V L^-1, written into ``coef`` and ``intercept`` (their dtype)."""
        augmented = theta.reshape(coef.shape[0], -1) @ self.inverse
        coef[...] = augmented[:, :-1]
        intercept[...] = augmented[:, -1]

    def gradient(self, grad_coef, grad_intercept):
        """G_V = G_A L^-T, flat float64."""
        augmented = np.concatenate([grad_coef, grad_intercept[:, None]],
                                   axis=1).astype(np.float64)
        return (augmented @ self.inverse.T).ravel()

    def own_gradient(self, grad):
        """G_A = G_V L^T: the gradient in the weights' coordinates, (c, d+1)."""
        return grad.reshape(-1, len(self.cholesky)) @ self.cholesky.T


def whitening_rows(n, d):
    """Rows sampled to estimate M: 32 a feature, within WHITENING_ROWS, at most n."""
    low, high = WHITENING_ROWS
    return min(n, max(low, min(high, WHITENING_ROWS_PER_FEATURE * (d + 1))))


def whitening_sample(n, rows):
    """The evenly spaced row indices the second moments are estimated from."""
    return np.unique(np.linspace(0, n - 1, rows).astype(np.intp))


def feature_second_moment(X, x_scale, sample_weight, rows):
    """E[x~ x~^T] of x~ = [x_scale * x, 1] over ``rows`` evenly spaced rows of X (float64).

    Evenly spaced rather than the first ones: files are often sorted by class. Sample weights
    weight the mean. See :func:`second_moment_sums` for how the rows are read.
    """
    moment, total = second_moment_sums(X, x_scale, sample_weight,
                                       whitening_sample(X.shape[0], rows))
    return moment / total if total > 0 else moment


def second_moment_sums(X, x_scale, sample_weight, index):
    """(sum_i w_i x~_i x~_i^T, sum_i w_i) over the rows ``index`` of X (float64).

    Rows are read in blocks, so a memory map is never copied whole (a sparse matrix's rows
    are densified a block at a time). Each block's product runs in float32 (GEMM speed; a
    preconditioner needs no more) and is summed in float64. A Dask worker runs this on its
    own block of rows (:mod:`softmax_fast.distributed`).
    """
    import scipy.sparse

    d = X.shape[1]
    weights = None if sample_weight is None else np.asarray(sample_weight, np.float64)
    moment = np.zeros((d + 1, d + 1))
    total = 0.0
    for start in range(0, len(index), _WHITENING_BLOCK):
        rows = index[start:start + _WHITENING_BLOCK]
        block = np.ones((len(rows), d + 1), np.float32)
        block[:, :d] = X[rows].toarray() if scipy.sparse.issparse(X) else X[rows]
        block[:, :d] *= np.float32(x_scale)
        weighted = block
        if weights is None:
            total += len(rows)
        else:
            weighted = block * weights[rows].astype(np.float32)[:, None]
            total += float(weights[rows].sum())
        moment += weighted.T @ block
    return moment, total


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


def _at_working_precision(result, dtype, last):
    """A line search that can no longer improve a float32 objective, near the optimum.

    In float32 the objective is only defined to ~1e-7 relative; SciPy then stops with
    "ABNORMAL_TERMINATION_IN_LNSRCH" although no better point exists at that precision. It
    counts as converged when the gradient has also shrunk a thousandfold.
    """
    message = str(getattr(result, "message", ""))
    small = last["final_grad_max"] <= 1e-3 * last.get("grad0", 0.0)
    return dtype == np.float32 and "ABNORMAL" in message.upper() and small
