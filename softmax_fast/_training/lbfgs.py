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
        Run the optimizer in whitened coordinates (:class:`FeatureWhitening`, fitted to the
        classes' curvature at a warm start); the optimum is the same, reached in fewer
        iterations.
    moment_cache : dict or None
        Keeps the features' second moments and their eigendecomposition between fits on the
        same ``X`` (the strengths of a regularization path), so they are estimated once, and
        the classes' curvature for the next strengths (CURVATURE_REUSE_SPAN).

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
        def evaluate_weights():
            """The loss at ``coef``/``intercept``; their gradient into grad_coef/grad_intercept."""
            loss = kernels.linear_softmax_ce(X, x_scale, coef, intercept, y, sample_weight,
                                             alpha, grad_coef, grad_intercept, n_threads)
            last["grad_max"] = max(float(np.abs(grad_coef).max(initial=0.0)),
                                   float(np.abs(grad_intercept).max(initial=0.0)))
            return loss

        # The start's evaluation: a warm start may be within tol already (0 iterations, and
        # no whitening to build); otherwise it sets the first step's length below.
        coef[...], intercept[...] = state.coef, state.intercept
        loss0 = evaluate_weights()
        last["grad0"] = last["grad_max"]
        if last["grad_max"] <= stop_at:
            state.history.append({"epoch": 0, "train_loss": float(loss0)})
            return 0, True

        coordinates = None
        if precondition:
            # the classes' own curvature at the start, unless the fit must go below
            # CLASS_WHITENING_MIN_TOL (see there)
            start = (state.coef, state.intercept) if stop_at >= CLASS_WHITENING_MIN_TOL \
                else None
            coordinates = FeatureWhitening.for_data(X, x_scale, sample_weight, alpha,
                                                    n_classes, moment_cache, start=start,
                                                    n_threads=n_threads)
        if coordinates is None:
            coordinates = _Identity(n_classes, n_features)

        def evaluate(theta):
            coordinates.weights(theta, coef, intercept)
            return evaluate_weights(), coordinates.gradient(grad_coef, grad_intercept)

        # SciPy's L-BFGS-B tries a first step of length 1; the optimizer runs over
        # phi = theta / step so that this step has the length the coordinates ask for.
        theta0 = coordinates.start(state.coef, state.intercept)
        gradient0 = coordinates.gradient(grad_coef, grad_intercept).copy()
        step = coordinates.first_step_length(gradient0) or 1.0
        if not (np.isfinite(step) and step > 0):
            step = 1.0  # a non-finite start: the optimizer meets it and the fit reports it
        phi0 = theta0 / step
        first = {"phi": phi0, "value": (loss0, gradient0)}

        def objective(phi):
            if first is not None and np.array_equal(phi, first["phi"]):
                loss, gradient = first["value"]  # SciPy's first call: the start, evaluated
            else:
                loss, gradient = evaluate(phi * step)
            last["loss"], last["theta"] = loss, phi.copy()
            gradient = gradient * step
            return resolved.value(phi, loss, gradient), gradient

        iteration = [0]
        resolved = _ResolvedObjective(dtype)

        def after_iteration(intermediate_result):
            nonlocal first
            first = None
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

        # SciPy's own gradient test is off (gtol 0: only an exactly zero gradient stops it)
        result = minimize(objective, phi0, jac=True, method="L-BFGS-B",
                          callback=after_iteration,
                          options={"maxiter": max_iter, "maxcor": history, "gtol": 0.0,
                                   "ftol": 64 * np.finfo(float).eps, "maxls": 50})
        if np.all(np.isfinite(result.x)):
            coordinates.weights(result.x * step, coef, intercept)
            last["final_grad_max"] = float(np.abs(coordinates.own_gradient(
                result.jac / step)).max(initial=0.0))
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

    def first_step_length(self, gradient):
        return None  # L-BFGS-B's own first step


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
#: change of coordinates invertible when alpha is 0 (see :class:`FeatureWhitening`).
WHITENING_DAMPING = 1e-10
#: Rows a warm start's class centres are estimated from: 160 a class, at least the second
#: moments' rows and at most a quarter of X (one forward pass over them, on the fit's
#: threads: :func:`class_curvature_sums`). Probe, c = 100, the path's 16 fits at tol 1e-6:
#: in float64 prototypes 4,096 rows took 123 evaluations, 8,192 93, 16,384 79, all 50,000
#: 64; in the library (float32) 16,384 rows 73 evaluations and 5.8 s, all rows 64 and 6.3 s
#: (32,768: 68 and 6.3 s) — the centres' precision matters, and so does the pass's cost.
CURVATURE_ROWS_PER_CLASS = 160
#: Fits asked for a gradient below this keep the whitening of a start from zero: the classes'
#: own scales speed a fit's first decades but slow its last ones where the Hessian is close
#: to M (x) S (diffuse probabilities; make_classification's data, float64 paths of 16
#: strengths: about even at tol 1e-6, 1.3-1.5x the iterations at 1e-7, up to 1.8x at 1e-8),
#: and float32 fits cannot go below this tolerance anyway (``_REACHABLE_GTOL``).
CLASS_WHITENING_MIN_TOL = 1e-6
#: A path's fits reuse the classes' curvature measured at a strength within this factor of
#: theirs: a 96-strength path (steps of a factor 1.16) measured it at 95 strengths and took
#: 245 evaluations and 22.3 s on the probe; within 2x, at 20, 231 and 17.9 s (3x: 243 and
#: 18.5 s). A 16-strength path (steps of 2.5x) measures it at every strength.
CURVATURE_REUSE_SPAN = 2.0
#: A class's share of curvature is at least this fraction of the largest share: keeps a
#: class no row of the sample is near (all its probabilities 0 or 1) from a zero scale.
CURVATURE_FLOOR = 1e-6


class FeatureWhitening:
    """L-BFGS in coordinates whitened class by class: the data's curvature taken out.

    With a_k = [w_k, b_k] the weights and intercept of class k and x~ = [x, 1], the diagonal
    block of class k in the objective's Hessian is sum_i h_ik x~_i x~_i^T / n + alpha
    (weights only), h_ik = p_ik (1 - p_ik) the softmax's curvature at row i. Write s_k for
    the class's share of curvature (the mean of h_ik) and m_k for its *centre* (the h-weighted
    mean of the rows: those near its decision boundaries) and take the features' covariance
    C = U diag(lambda) U^T for the spread of the class's rows about m_k; the block is then
    s_k [[C + alpha / s_k + m_k m_k^T, m_k], [m_k^T, 1]], which factors exactly as T_k T_k^T,

        T_k = sqrt(s_k) [[I, m_k], [0, 1]] blockdiag(U diag(sqrt(lambda + alpha / s_k)), 1).

    L-BFGS runs over V_k = T_k^T a_k (up to one constant, below): the class's weights along
    the features' principal axes and its intercept as its logit at its centre, so that the
    Hessian there is about the identity. The objective and its optimum are unchanged; only
    the optimizer's coordinates are: the gradient is T_k^-1 g_k, and the stopping test stays
    on the weights' own gradient. Every T_k is scaled by sqrt(c) — the Hessian is modelled c
    times over, the scale of earlier releases' whitening — which only sets the length of
    L-BFGS's first step.

    **A fit from zero** has p_ik = 1/c: the model uses s_k = 1/c and m_k = the rows' mean,
    so that T_k T_k^T = M + alpha c (M = E[x~ x~^T], no alpha on the intercept) for every
    class: the whitening of earlier releases, fits from zero unchanged (16 on the probe
    below, tol 1e-6: 236 evaluations before and after). It needs no pass over X beyond M.
    The damping alpha c is the penalty's share of the Hessian against the data's (S, the
    softmax's c x c curvature, has eigenvalues 1/c at zero), so strong regularization keeps
    the coordinates near the original ones and directions with almost no data (constant
    pixels) are not stretched beyond what the penalty holds. Evaluations (or iterations)
    measured with float32 kernels for a fit from zero:

    - probe 50k x 512 x 100, alpha 1e-5, to a relative gap of 1e-6: 70 plain; 18 at this
      damping (1e-3); 15 at 1e-2 and 31 at 1e-1;
    - 20k rows of Fashion-MNIST, alpha 1e-4, tol 1e-7: 418 iterations plain, 302 whitened
      (larger dampings did better there, 212 at 1, but a floor tied to M's scale left
      features on a 1:100 spread of scales as badly conditioned as before: 400 iterations
      instead of 22);
    - features on a 1:100 spread of scales (tests/test_lbfgs_whitening.py), float64:
      no convergence in 5,000 iterations plain, 22 whitened.

    **A warm start** (the next strength of a regularization path, a ``warm_start`` refit) is
    no longer at uniform probabilities, and there s_k and m_k are measured at the start: one
    forward pass over :func:`curvature_rows` rows. L-BFGS's first trial step is then this
    model's Newton step (:meth:`first_step_length`) instead of a step of length 1. Probe
    50k x 512 x 100, float32, the 16 strengths 1e-1 ... 1e-7 of a path at tol 1e-6: 120
    evaluations with the whitening of a start from zero, 73 with this one (the weak
    strengths 6e-5 ... 6e-7: 9-17 evaluations each before, 6-8 now); the 96-strength path 362
    -> 231; Fashion-MNIST's 48,000 rows, 16 strengths at tol 1e-6, 2,407 -> 1,300. In float64
    prototypes: 134 evaluations, 90 with the centres and shares but L-BFGS's own first step,
    79 with the Newton step too, 64 with the centres from all 50,000 rows (4,096 rows: 123;
    see CURVATURE_ROWS_PER_CLASS); one damping for all classes instead of alpha / s_k: 86;
    the exact per-class blocks (C_k of each class's own rows): as good, and c d x d
    factorizations a strength. A fit asked for a gradient below CLASS_WHITENING_MIN_TOL keeps
    the whitening of a start from zero (see there).

    The softmax does not change when every class's intercept moves alike: the class mean of
    the intercepts is taken out in :meth:`weights` (as a fit from zero never moves it), and
    at alpha = 0 that of the weights too. A floor of WHITENING_DAMPING x M's largest entry
    on alpha / s_k keeps T_k invertible at alpha = 0 (constant features have lambda = 0).

    Each evaluation costs two (c x d) x (d x d) products on top of the kernel (4 c d^2
    flops against the kernel's 4 n c d); M one pass over WHITENING_ROWS rows and one
    eigendecomposition (kept for every fit of a path); a warm start's centres one forward
    pass over the rows above (kept for a path's next strengths within CURVATURE_REUSE_SPAN).
    """

    def __init__(self, second_moment, spectrum, curvature, centre, alpha, floor):
        eigenvalues, basis = spectrum
        #: E[x~ x~^T] the whitening was built from ((d+1) x (d+1), float64)
        self.second_moment = second_moment
        self.basis = basis
        self.centre = centre
        self.curvature = curvature
        self.alpha = alpha
        # the shares relative to the uniform 1 / c: a fit from zero runs in the coordinates
        # (and tries the first step) of a whitening by M + alpha c alone
        self.root_curvature = np.sqrt(curvature * len(curvature))[:, None]
        damping = np.maximum(alpha / curvature, floor)
        self.stretch = np.sqrt(np.maximum(eigenvalues, 0.0)[None, :] + damping[:, None])
        self.warm = False  # True when the shares and centres were measured at the start

    @classmethod
    def for_data(cls, X, x_scale, sample_weight, alpha, n_classes, cache=None, start=None,
                 n_threads=1):
        """The whitening for ``X`` (dense, a memory map, sparse, or a Dask cluster's problem,
        which estimates M where its blocks live), or None where none pays.

        None for other objects, for d above WHITENING_MAX_FEATURES, for
        n < 4 (d + 1) (its two products per evaluation would cost more than a quarter of
        the kernel's) and where estimating M and its eigendecomposition would cost more
        than WHITENING_BUDGET_EVALUATIONS evaluations. ``cache`` (a dict) keeps M and its
        eigendecomposition for the next fit on the same data. ``start`` (coef, intercept):
        the fit's start; unless its weights are all zero, the classes' shares and centres
        are measured there (see the class docstring), on ``n_threads`` threads.
        """
        import scipy.sparse

        clustered = hasattr(X, "second_moment")  # softmax_fast.distributed.ClusterProblem
        if not (clustered or isinstance(X, np.ndarray) or scipy.sparse.issparse(X)) \
                or len(X.shape) != 2:
            return None
        n, d = X.shape
        rows = whitening_rows(n, d)
        # flops: M (2 rows d^2) and its eigendecomposition (~10 d^3) against an evaluation's
        # 4 n c d
        cost = 2.0 * rows * d * d + 10.0 * float(d) ** 3
        if (d > WHITENING_MAX_FEATURES or n < 4 * (d + 1)
                or cost > WHITENING_BUDGET_EVALUATIONS * 4.0 * n * n_classes * d):
            return None
        cache = {} if cache is None else cache
        if "second_moment" not in cache:
            cache["second_moment"] = X.second_moment(x_scale, rows) if clustered else \
                feature_second_moment(X, x_scale, sample_weight, rows)
        second_moment = cache["second_moment"]
        if not np.all(np.isfinite(second_moment)):
            return None  # X is not finite: the first evaluation reports it, as without this
        floor = WHITENING_DAMPING * float(np.abs(second_moment).max(initial=0.0))
        if not (np.isfinite(alpha * n_classes) and max(alpha, floor) > 0
                and second_moment[-1, -1] > 0):
            return None  # nothing to whiten with (no weight, no penalty)
        mean = second_moment[-1, :-1] / second_moment[-1, -1]
        if "spectrum" not in cache:
            covariance = second_moment[:-1, :-1] / second_moment[-1, -1] - np.outer(mean, mean)
            try:
                cache["spectrum"] = np.linalg.eigh(covariance)
            except np.linalg.LinAlgError:
                return None
        curvature, centre, warm = None, None, False
        if start is not None and np.any(start[0]):
            kept = cache.get("class_curvature")  # (alpha, curvature, centre) of a path
            if kept is not None and kept[1].shape == (n_classes,) and alpha > 0 \
                    and max(alpha / kept[0], kept[0] / alpha) <= CURVATURE_REUSE_SPAN:
                curvature, centre = kept[1], kept[2]
            else:
                curvature, centre = class_curvature(X, x_scale, sample_weight, *start,
                                                    mean, clustered, n_threads)
                if curvature is not None:
                    cache["class_curvature"] = (alpha, curvature, centre)
            warm = curvature is not None
        if curvature is None:  # a start at zero weights: the shares at p = 1 / c
            curvature = np.full(n_classes, 1.0 / n_classes)
            centre = np.broadcast_to(mean, (n_classes, d)).copy()
        whitening = cls(second_moment, cache["spectrum"], curvature, centre, alpha, floor)
        whitening.warm = warm
        return whitening

    def first_step_length(self, gradient):
        """The length of L-BFGS's first step: this model's Newton step's, or None.

        Where the shares and centres were measured at the start, the Hessian in these
        coordinates is about I / c, so the Newton step is c times the ``gradient`` (whitened,
        flat); L-BFGS would otherwise try a step of length 1 and search back. From zero,
        None: the curvature there is not the optimum's, and L-BFGS's own first step did
        better (16 fits from zero on the probe: 244 evaluations with this step, 216 without,
        in float64 prototypes).
        """
        # T T^T models c times the Hessian (the scale of a start from zero, above), so the
        # Hessian here is I / c and its Newton step c times the gradient
        return len(self.curvature) * float(np.linalg.norm(gradient)) if self.warm else None

    def start(self, coef, intercept):
        """V_k = T_k^T a_k."""
        coef = np.asarray(coef, np.float64)
        weights = (coef @ self.basis) * self.stretch
        logit_at_centre = np.einsum("kj,kj->k", self.centre, coef) + intercept
        return (np.concatenate([weights, logit_at_centre[:, None]], axis=1)
                * self.root_curvature).ravel()

    def weights(self, theta, coef, intercept):
        """a_k = T_k^-T V_k, written into ``coef`` and ``intercept`` (their dtype)."""
        scaled = theta.reshape(coef.shape[0], -1) / self.root_curvature
        own = (scaled[:, :-1] / self.stretch) @ self.basis.T
        own_intercept = scaled[:, -1] - np.einsum("kj,kj->k", self.centre, own)
        # The softmax does not change when every class's intercept moves alike (nor, without
        # a penalty, its weights): the objective is flat along those directions, and the
        # class-by-class scales would let the iterates drift along them. Their class means
        # are taken out — the same objective and gradient, and the optimum whose intercepts
        # (and, at alpha = 0, weights) sum to zero over the classes, the one a fit from zero
        # in the features' own coordinates reaches.
        own_intercept -= own_intercept.mean()
        if self.alpha == 0:
            own -= own.mean(axis=0)
        coef[...] = own
        intercept[...] = own_intercept

    def gradient(self, grad_coef, grad_intercept):
        """G_V = T_k^-1 g_k, flat float64."""
        grad_intercept = np.asarray(grad_intercept, np.float64)
        centred = np.asarray(grad_coef, np.float64) - self.centre * grad_intercept[:, None]
        weights = (centred @ self.basis) / self.stretch
        return (np.concatenate([weights, grad_intercept[:, None]], axis=1)
                / self.root_curvature).ravel()

    def own_gradient(self, grad):
        """g_k = T_k G_V: the gradient in the weights' coordinates, (c, d+1)."""
        scaled = grad.reshape(len(self.curvature), -1) * self.root_curvature
        own = (scaled[:, :-1] * self.stretch) @ self.basis.T + self.centre * scaled[:, -1:]
        return np.concatenate([own, scaled[:, -1:]], axis=1)


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
    d = X.shape[1]
    weights = None if sample_weight is None else np.asarray(sample_weight, np.float64)
    moment = np.zeros((d + 1, d + 1))
    total = 0.0
    for start in range(0, len(index), _WHITENING_BLOCK):
        rows = index[start:start + _WHITENING_BLOCK]
        block = np.ones((len(rows), d + 1), np.float32)
        block[:, :d] = _scaled_rows(X, rows, x_scale)
        row_weights, block_total = _row_weights(weights, rows)
        weighted = block if row_weights is None else block * row_weights[:, None]
        total += block_total
        moment += weighted.T @ block
    return moment, total


def _scaled_rows(X, rows, x_scale):
    """x_scale * X[rows] as float32 (a sparse matrix's rows densified, a map's rows read)."""
    import scipy.sparse

    block = np.asarray(X[rows].toarray() if scipy.sparse.issparse(X) else X[rows], np.float32)
    return block * np.float32(x_scale) if x_scale != 1.0 else block


def _row_weights(weights, rows):
    """(float32 weights of ``rows`` or None, their float64 sum)."""
    if weights is None:
        return None, float(len(rows))
    return weights[rows].astype(np.float32), float(weights[rows].sum())


def curvature_rows(n, d, n_classes):
    """Rows a warm start's class shares and centres are estimated from (see
    CURVATURE_ROWS_PER_CLASS)."""
    per_class = min(CURVATURE_ROWS_PER_CLASS * n_classes, n // 4)
    return min(n, max(whitening_rows(n, d), per_class))


def class_curvature(X, x_scale, sample_weight, coef, intercept, mean, clustered=False,
                    n_threads=1):
    """(s, m): each class's share of softmax curvature and its centre at (coef, intercept).

    s_k = sum_i w_i h_ik / sum_i w_i and m_k = sum_i w_i h_ik x_i / sum_i w_i h_ik, h_ik =
    p_ik (1 - p_ik), over :func:`curvature_rows` evenly spaced rows (a Dask cluster sums its
    blocks' shares of the same rows where they live). A class with no curvature in the
    sample keeps the rows' ``mean`` as its centre; None when the start's probabilities are
    not finite (the first evaluation then reports it).
    """
    n, d = X.shape
    n_classes = coef.shape[0]
    rows = curvature_rows(n, d, n_classes)
    if clustered:
        shares, moments, total = X.class_curvature(coef, intercept, x_scale, rows)
    else:
        shares, moments, total = class_curvature_sums(X, x_scale, sample_weight, coef,
                                                      intercept, whitening_sample(n, rows),
                                                      n_threads)
    if not (total > 0 and np.all(np.isfinite(shares)) and np.all(np.isfinite(moments))):
        return None, None
    largest = float(shares.max(initial=0.0))
    if largest <= 0:
        return None, None
    held = shares > CURVATURE_FLOOR * largest
    centre = np.broadcast_to(mean, (n_classes, d)).copy()
    centre[held] = moments[held] / shares[held, None]
    curvature = np.maximum(shares / total, CURVATURE_FLOOR * largest / total)
    return curvature, centre


def class_curvature_sums(X, x_scale, sample_weight, coef, intercept, index, n_threads=1):
    """(sum_i w_i h_i, sum_i w_i h_i x_i^T, sum_i w_i) over the rows ``index`` of X, float64.

    h_ik = p_ik (1 - p_ik) with p_i the softmax of (coef, intercept) at x_i. Read block by
    block like :func:`second_moment_sums` (logits and products in float32, sums in float64).
    ``n_threads`` blocks at a time, each on one thread of BLAS: the optimizer's BLAS stays
    single-threaded (see :func:`run_lbfgs`), and the blocks' sums are added in their order,
    so the result does not depend on the thread count.
    """
    from concurrent.futures import ThreadPoolExecutor

    weights = None if sample_weight is None else np.asarray(sample_weight, np.float64)
    coef32 = np.asarray(coef, np.float32)
    intercept32 = np.asarray(intercept, np.float32)

    def block_sums(rows):
        block = _scaled_rows(X, rows, x_scale)
        p = block @ coef32.T + intercept32
        p -= p.max(axis=1, keepdims=True)
        np.exp(p, out=p)
        p /= p.sum(axis=1, keepdims=True)
        h = p * (1 - p)
        row_weights, total = _row_weights(weights, rows)
        if row_weights is not None:
            h *= row_weights[:, None]
        return h.sum(axis=0, dtype=np.float64), h.T @ block, total

    blocks = [index[start:start + _WHITENING_BLOCK]
              for start in range(0, len(index), _WHITENING_BLOCK)]
    if n_threads > 1 and len(blocks) > 1:
        with ThreadPoolExecutor(max_workers=min(n_threads, len(blocks))) as pool:
            parts = list(pool.map(block_sums, blocks))
    else:
        parts = [block_sums(rows) for rows in blocks]
    shares = np.zeros(coef32.shape[0])
    moments = np.zeros(coef32.shape)
    total = 0.0
    for part_shares, part_moments, part_total in parts:
        shares += part_shares
        moments += part_moments
        total += part_total
    return shares, moments, total


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
