"""Fitting on a Dask cluster: L-BFGS whose every evaluation runs where the data lives.

``SoftmaxRegression.fit`` hands Dask arrays to :func:`fit`. The rows stay on the workers:
each block is validated, label-encoded and weighted once, on the worker that computed it, and
kept there (one future per block). Every L-BFGS evaluation then

1. sends the weights (c x d + c values, in the working dtype) to the workers — inside the
   tasks when small, else scattered to every worker once,
2. runs the fused ``linear_softmax_ce`` kernel on each block where it lives, returning the
   block's *sums* — sum_i w_i l_i, sum_i w_i, x_scale G^T X and the column sums of G — as one
   float64 vector,
3. adds those vectors pairwise-ish in a tree of tasks on the workers (fan-in 4), and
4. brings the one total back: loss = sum / total weight + (alpha/2)||W||^2, gradient =
   sum / total weight + alpha W — the in-memory objective exactly, up to summation order.

SciPy's optimizer runs on the client (:func:`~softmax_fast._training.lbfgs.run_lbfgs`, the
same driver as in memory), so the iterates are those of an in-memory fit up to rounding. Its
whitening (``FeatureWhitening``) estimates the features' second moments once per fit from
the same rows an in-memory fit samples, each block summing its share where it lives.

The kernel returns a block's weighted *mean* (its contract); with ``alpha=0`` and multiplied
back by the block's weight sum it gives the block's sum. The kernel's own weight sum and the
one here are float64 sums of the same numbers (possibly in another order), so the recovered
sum is within a few float64 ulps (~1e-16 relative) — far below the float32 working precision
and the optimizer's tolerance.

Tasks are pure functions of their inputs, so a lost worker costs a recomputation: Dask reruns
the lost blocks from their lineage and reschedules the evaluation. If the cluster stops
making progress (no worker for :data:`NO_WORKER_TIMEOUT` seconds, the scheduler gone, a
task that killed its worker three times), :class:`ClusterFitError` says so instead of hanging.

Only ``import numpy``/``scipy`` at import: Dask is imported when a fit uses it.
"""

import contextlib

import numpy as np

from softmax_fast._validation import encode_labels

__all__ = ["fit", "predict_blocks", "is_dask_collection", "ClusterFitError",
           "NO_WORKER_TIMEOUT"]

#: Seconds a fit waits with no worker at all before giving up.
NO_WORKER_TIMEOUT = 60
#: Seconds between checks of the cluster while an evaluation runs.
_POLL_SECONDS = 5
#: Block results added per reduction task (a tree of depth log_4(blocks)).
_FAN_IN = 4
#: Up to this many bytes of weights over all the blocks' tasks travel inside the tasks.
_EMBED_BYTES = 1 << 20


class ClusterFitError(RuntimeError):
    """The Dask cluster failed during a fit (workers or scheduler lost for good)."""


def is_dask_collection(obj):
    """Whether ``obj`` is a Dask collection — without importing Dask when it is not."""
    return type(obj).__module__.startswith("dask.")


# ---------------------------------------------------------------------------------------
# The fit
# ---------------------------------------------------------------------------------------
def fit(estimator, X, y, sample_weight=None, *, eval_set=None, callback=None):
    """Fit ``estimator`` (a ``SoftmaxRegression``) by L-BFGS on Dask arrays, in place.

    Parameters
    ----------
    estimator : SoftmaxRegression
        Its parameters already validated (``fit`` calls this after ``_check_params``).
    X : dask array of shape (n_samples, n_features)
        Chunked by rows; chunks along the features are merged (each block needs whole rows).
        A Dask DataFrame is converted with ``to_dask_array(lengths=True)``.
    y : dask array, or array-like, of shape (n_samples,)
        Rechunked to X's row chunks when they differ.
    sample_weight : dask array, array-like or None
    eval_set : None
        Not supported on a cluster (it is an SGD feature).
    callback : callable(evaluation, loss) or None
        Called on the client after every evaluation of the objective (progress display).

    Returns
    -------
    estimator
    """
    _check_supported(estimator, eval_set)
    client = _client()
    X, y, sample_weight = _aligned(X, y, sample_weight)
    n_samples, n_features = X.shape
    keep = bool(estimator.warm_start) and hasattr(estimator, "coef_")
    _check_features(estimator, n_features, keep)
    dtype = estimator._working_dtype(n_samples * n_features)
    problem = ClusterProblem.persist(client, X, y, sample_weight, dtype, estimator, callback)
    try:
        _fit_problem(estimator, problem, keep)
    finally:
        problem.close()
    return estimator


def _fit_problem(estimator, problem, keep):
    """L-BFGS on the persisted blocks, setting the fitted attributes as an in-memory fit."""
    from softmax_fast._estimator_params import resolve_alpha, resolve_max_iter

    classes = problem.classes
    if keep and not np.array_equal(classes, estimator.classes_):
        raise ValueError(f"warm_start: y has classes {classes.tolist()} but the model was "
                         f"fitted with {estimator.classes_.tolist()}")
    estimator.alpha_ = resolve_alpha(estimator.alpha, problem.total_weight, len(classes))
    state = estimator._initial_state(problem.n_features, len(classes), problem.dtype,
                                     keep=keep)
    saved = (state.coef.copy(), state.intercept.copy()) if keep else None
    estimator.classes_ = classes
    estimator.n_features_in_ = problem.n_features
    if not keep and hasattr(estimator, "feature_names_in_"):
        del estimator.feature_names_in_  # a Dask array has no column names
    estimator.solver_ = "lbfgs"
    try:
        estimator._fit_lbfgs(state, problem, None, None,
                             resolve_max_iter(estimator.max_iter, "lbfgs"), kernels=problem)
    except BaseException:
        if saved is not None:  # a failed warm start leaves the model as it was
            state.coef[...], state.intercept[...] = saved
        raise


def _check_supported(estimator, eval_set):
    """Only L-BFGS runs on a cluster; say what to use instead of SGD."""
    if estimator.solver not in ("auto", "lbfgs") or estimator.early_stopping:
        what = f"solver={estimator.solver!r}" if estimator.solver not in ("auto", "lbfgs") \
            else "early_stopping=True"
        raise ValueError(
            f"fit on Dask arrays runs full-batch L-BFGS (solver='lbfgs' or 'auto'), not "
            f"{what}. For SGD on a cluster stream the blocks through partial_fit with "
            "dask-ml: Incremental(SoftmaxRegression(solver='sgd')).fit(X, y, classes=...)")
    if eval_set is not None:
        raise ValueError("eval_set is not supported when fitting on Dask arrays (it is an SGD "
                         "feature)")


def _client():
    """The distributed Client the arrays are computed with (the default one)."""
    try:
        from distributed import default_client
    except ImportError as exc:
        raise ImportError("fit on Dask arrays needs Dask's distributed scheduler: "
                          "pip install 'softmax-fast[dask]'") from exc
    try:
        return default_client()
    except ValueError:
        raise ValueError(
            "fit on Dask arrays needs a distributed Client: create one first, e.g. "
            "Client('tcp://scheduler:8786') or Client(LocalCluster())") from None


def _check_features(estimator, n_features, keep):
    """A warm start needs the fitted model's features (scikit-learn's message)."""
    if keep and n_features != estimator.n_features_in_:
        raise ValueError(f"X has {n_features} features, but {type(estimator).__name__} is "
                         f"expecting {estimator.n_features_in_} features as input.")


# ---------------------------------------------------------------------------------------
# Aligning the inputs
# ---------------------------------------------------------------------------------------
def _aligned(X, y, sample_weight):
    """X chunked by rows only; y and the weights on X's row chunks (Dask arrays)."""
    import dask.array as da

    X = _as_dask_array(X, "X")
    if X.ndim != 2:
        raise ValueError(f"Expected a 2D array for X, got shape {X.shape}")
    if X.numblocks[1] > 1:
        X = X.rechunk({1: -1})  # the kernel needs whole rows: one block across the features
    y = _as_dask_array(y, "y", like=X)
    if y.ndim != 1:
        raise ValueError(f"y should be a 1d array of class labels, got shape {y.shape}")
    if y.shape[0] != X.shape[0]:
        raise ValueError("Found input variables with inconsistent numbers of samples: "
                         f"[{X.shape[0]}, {y.shape[0]}]")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"Found array with shape {X.shape}; at least one sample and one "
                         "feature are required")
    if y.chunks[0] != X.chunks[0]:
        y = y.rechunk({0: X.chunks[0]})
    if sample_weight is not None:
        if np.ndim(sample_weight) == 0 and not is_dask_collection(sample_weight):
            sample_weight = da.full(X.shape[0], float(sample_weight), chunks=X.chunks[0])
        sample_weight = _as_dask_array(sample_weight, "sample_weight", like=X)
        if sample_weight.shape != (X.shape[0],):
            raise ValueError(f"sample_weight must have shape ({X.shape[0]},), got "
                             f"{sample_weight.shape}")
        if sample_weight.chunks[0] != X.chunks[0]:
            sample_weight = sample_weight.rechunk({0: X.chunks[0]})
    return X, y, sample_weight


def _as_dask_array(a, name, like=None):
    """``a`` as a Dask array with known chunk sizes (NumPy input: on ``like``'s row chunks)."""
    import dask.array as da

    if is_dask_collection(a) and hasattr(a, "to_dask_array"):  # DataFrame or Series
        a = a.to_dask_array(lengths=True)
    if not is_dask_collection(a):
        a = np.asarray(a)
        chunks = like.chunks[0] if like is not None and a.ndim == 1 \
            and a.shape[0] == like.shape[0] else "auto"
        return da.from_array(a, chunks=chunks)
    if not isinstance(a, da.Array):
        raise TypeError(f"{name} must be a Dask array or DataFrame, got {type(a).__name__}")
    if any(np.isnan(c) for dim in a.chunks for c in dim):
        a = a.compute_chunk_sizes()  # e.g. after boolean masking: one pass to count rows
    return a


# ---------------------------------------------------------------------------------------
# The persisted problem and its objective
# ---------------------------------------------------------------------------------------
class ClusterProblem:
    """The blocks of one fit, held on the workers, and the objective L-BFGS evaluates.

    Quacks as both the ``X`` (``dtype``) and the kernel module (``linear_softmax_ce``) of
    :func:`~softmax_fast._training.lbfgs.run_lbfgs`, so the in-memory driver runs unchanged.
    """

    def __init__(self, client, blocks, threads, classes, n_features, total_weight, dtype,
                 backend, x_scale, callback, block_rows):
        self.client = client
        self.blocks = blocks
        #: rows per block, in order: the blocks' place among X's rows
        self.block_rows = list(block_rows)
        self.threads = threads
        self.classes = classes
        self.n_features = n_features
        self.total_weight = total_weight
        self.dtype = np.dtype(dtype)
        self.backend = backend
        self.x_scale = float(x_scale)
        self.callback = callback
        self.evaluations = 0

    @classmethod
    def persist(cls, client, X, y, sample_weight, dtype, estimator, callback=None):
        """Validate, encode and weight every block on its worker, once; keep it there."""
        from softmax_fast._estimator_params import check_class_weight
        from softmax_fast.backends import resolve_backend_name

        check_class_weight(estimator.class_weight)
        raw = _compute_blocks(client, X, y, sample_weight, dtype)
        classes = _classes(client, raw, estimator)
        encoded = client.map(_encode_block, raw, classes=classes, pure=False)
        del raw  # the encoded blocks share the arrays; lineage stays with the scheduler
        stats = _result(client, client.submit(_sum_stats, client.map(
            _block_stats, encoded, n_classes=len(classes), pure=False), pure=False))
        class_weights = _class_weights(estimator.class_weight, classes, stats["counts"])
        scale, total = _weight_total(stats, class_weights)
        blocks = client.map(_final_block, encoded, class_weights=class_weights, scale=scale,
                            pure=False)
        del encoded
        _wait(client, blocks)  # a block's error now, not inside the optimizer
        threads = _threads_per_block(client, blocks, estimator.n_threads)
        return cls(client, blocks, threads, classes, X.shape[1], total, dtype,
                   resolve_backend_name(estimator.backend, "dense"), estimator.input_scale,
                   callback, X.chunks[0])

    @property
    def shape(self):
        """(n_samples, n_features) of the data the blocks hold."""
        return (int(sum(self.block_rows)), self.n_features)

    def second_moment(self, x_scale, rows):
        """E[x~ x~^T] over ``rows`` evenly spaced rows, each block summing its own share.

        The rows are those an in-memory fit samples (the same global indices), so the
        whitening, and with it the iterates, match the in-memory fit's up to rounding.
        """
        parts = self.client.map(_block_second_moment, self.blocks, self._shares(rows),
                                x_scale=x_scale, pure=False)
        sums = _result(self.client, _tree_sum(self.client, parts))
        d1 = self.n_features + 1
        moment, total = sums[:-1].reshape(d1, d1), sums[-1]
        return moment / total if total > 0 else moment

    def class_curvature(self, coef, intercept, x_scale, rows):
        """The classes' curvature sums at (coef, intercept) over the rows an in-memory fit
        samples (:func:`~softmax_fast._training.lbfgs.class_curvature_sums`), each block
        summing its own share where it lives."""
        parts = self.client.map(_block_class_curvature, self.blocks, self._shares(rows),
                                theta=self._broadcast(coef, intercept), shape=coef.shape,
                                x_scale=x_scale, pure=False)
        sums = _result(self.client, _tree_sum(self.client, parts))
        c, d = coef.shape
        return sums[:c], sums[c:c + c * d].reshape(c, d), float(sums[-1])

    def _shares(self, rows):
        """Each block's share of ``rows`` evenly spaced rows of X, as indices into the block."""
        from softmax_fast._training.lbfgs import whitening_sample

        picked = whitening_sample(self.shape[0], rows)
        starts = np.cumsum([0, *self.block_rows[:-1]])
        return [picked[(picked >= start) & (picked < start + size)] - start
                for start, size in zip(starts, self.block_rows, strict=True)]

    def linear_softmax_ce(self, X, x_scale, coef, intercept, y, sample_weight, alpha,
                          grad_coef, grad_intercept, n_threads):
        """The kernel's contract, over the whole cluster (``X`` is this problem)."""
        from softmax_fast._training.scoring import l2_penalty

        c, d = coef.shape
        parts = self.client.map(_block_sums, self.blocks, self.threads,
                                theta=self._broadcast(coef, intercept), shape=(c, d),
                                backend=self.backend, x_scale=self.x_scale, pure=False)
        sums = _result(self.client, _tree_sum(self.client, parts))
        total = self.total_weight
        grad_coef[...] = sums[2:2 + c * d].reshape(c, d) / total + alpha * coef
        grad_intercept[...] = sums[2 + c * d:] / total
        loss = sums[0] / total + l2_penalty(coef, alpha)
        self.evaluations += 1
        if self.callback is not None:
            self.callback(self.evaluations, loss)
        return loss

    def _broadcast(self, coef, intercept):
        """The weights as the tasks receive them: in each task if small, else scattered.

        Embedding skips a round trip to the workers (~a third of an evaluation's latency on
        small problems); beyond :data:`_EMBED_BYTES` in all the tasks together one scatter
        to every worker sends less.
        """
        theta = np.concatenate([coef.ravel(), intercept])
        if theta.nbytes * len(self.blocks) <= _EMBED_BYTES:
            return theta
        return self.client.scatter(theta, broadcast=True, hash=False)

    def close(self):
        """Release the blocks on the workers."""
        for future in self.blocks:
            future.release()
        self.blocks = []


def _compute_blocks(client, X, y, sample_weight, dtype):
    """One future per row block: (X_b in the working dtype, raw labels, checked weights)."""
    from dask import delayed

    xs = X.to_delayed().ravel().tolist()
    ys = y.to_delayed().ravel().tolist()
    ws = [None] * len(xs) if sample_weight is None \
        else sample_weight.to_delayed().ravel().tolist()
    parts = [delayed(_raw_block, pure=True)(xb, yb, wb, dtype)
             for xb, yb, wb in zip(xs, ys, ws, strict=True)]
    return client.compute(parts)


def _classes(client, raw, estimator):
    """The sorted labels of the whole y (each block's own, merged on the client)."""
    found = _result(client, client.map(_block_labels, raw, pure=False))
    classes = np.unique(np.concatenate(found))
    if len(classes) < 2:
        raise ValueError(f"{type(estimator).__name__} needs samples of at least 2 classes in "
                         f"the data, but the data contains only one class: {classes[0]!r}")
    return classes


def _class_weights(class_weight, classes, counts):
    """Per-class factors of ``class_weight`` (None without), as scikit-learn computes them."""
    if class_weight is None:
        return None
    if isinstance(class_weight, str):  # "balanced": n / (n_classes * count), sklearn's rule
        return counts.sum() / (len(classes) * counts.astype(np.float64))
    from sklearn.utils.class_weight import compute_class_weight

    return np.asarray(compute_class_weight(class_weight, classes=classes, y=classes),
                      dtype=np.float64)


def _weight_total(stats, class_weights):
    """(power-of-two weight scale, total weight) — the n of alpha="auto" and the mean."""
    scale = 1.0
    top = stats["max_weight"]
    if stats["weighted"] and top > 0 and not 2.0 ** -500 <= top <= 2.0 ** 500:
        scale = float(np.ldexp(1.0, -int(np.frexp(top)[1])))  # as in-memory: exact rescale
    per_class = stats["weight_sums"] * scale if stats["weighted"] else stats["counts"] * 1.0
    total = float(per_class @ class_weights) if class_weights is not None \
        else float(per_class.sum())
    if not total > 0:
        raise ValueError("sample_weight sums to zero; at least one sample needs a positive "
                         "weight")
    return scale, total


def _threads_per_block(client, blocks, n_threads):
    """Kernel threads of each block's task: its worker's threads shared among its blocks.

    ``n_threads`` set by the user wins. A worker runs as many tasks at once as it has
    threads, so with at least that many blocks each task runs on one thread.
    """
    if n_threads is not None:
        return [int(n_threads)] * len(blocks)
    where = client.who_has(blocks)
    nthreads = client.nthreads()
    owner = [(where.get(f.key) or [None])[0] for f in blocks]
    held = {w: owner.count(w) for w in set(owner)}
    return [max(1, nthreads.get(w, 1) // held[w]) for w in owner]


def _tree_sum(client, parts):
    """One future holding the sum of ``parts``, added in a tree on the workers."""
    while len(parts) > 1:
        groups = [parts[i:i + _FAN_IN] for i in range(0, len(parts), _FAN_IN)]
        parts = [client.submit(_add, *group, pure=False) if len(group) > 1 else group[0]
                 for group in groups]
    return parts[0]


def _result(client, futures):
    """The results of ``futures`` (small ones only: they come to the client)."""
    single = not isinstance(futures, list)
    pending = [futures] if single else futures
    _wait(client, pending)
    with _cluster_failures():
        results = client.gather(pending)
    return results[0] if single else results


def _wait(client, futures):
    """Wait for ``futures`` where they are, checking the cluster; raise a task's error.

    Errors raised by the tasks themselves (NaN in X, bad labels) come through unchanged;
    cluster failures become :class:`ClusterFitError`.
    """
    from distributed import wait

    since = None
    with _cluster_failures():
        while True:
            try:
                wait(futures, timeout=_POLL_SECONDS)
                break
            except TimeoutError:
                since = _check_workers(client, since)
        for future in futures:
            if future.status == "error":
                future.result()  # raises the task's exception here, on the client


@contextlib.contextmanager
def _cluster_failures():
    """Turn distributed's failure exceptions into one :class:`ClusterFitError`."""
    try:
        yield
    except (ImportError, KeyboardInterrupt, MemoryError, ClusterFitError):
        raise
    except Exception as exc:  # noqa: BLE001 - distributed's many failure types
        from softmax_fast.search.runners import _is_cluster_failure

        if not _is_cluster_failure(exc):
            raise
        raise ClusterFitError(f"the Dask cluster failed during the fit "
                              f"({type(exc).__name__}: {exc})") from exc


def _check_workers(client, since):
    """Return when the cluster first had no workers (None while it has some); give up late."""
    import time

    try:
        n_workers = len(client.scheduler_info().get("workers", {}))
    except Exception as exc:  # noqa: BLE001 - the scheduler is gone
        raise ClusterFitError(f"lost the Dask scheduler ({type(exc).__name__}: {exc})") \
            from exc
    if n_workers:
        return None
    now = time.monotonic()
    if since is not None and now - since > NO_WORKER_TIMEOUT:
        raise ClusterFitError(f"every Dask worker has been gone for {NO_WORKER_TIMEOUT} s")
    return since if since is not None else now


# ---------------------------------------------------------------------------------------
# Tasks (run on the workers; pure functions of their inputs, so Dask may rerun them)
# ---------------------------------------------------------------------------------------
def _raw_block(X_b, y_b, w_b, dtype):
    """One block checked as ``fit`` checks X: numeric, finite, uint8 or the working dtype."""
    X_b = np.asarray(X_b)
    if X_b.dtype.kind not in "fiub":
        raise ValueError(f"X must hold numbers, got dtype {X_b.dtype}")
    if X_b.dtype not in (np.uint8, dtype):
        X_b = X_b.astype(dtype)
    X_b = np.ascontiguousarray(X_b)
    # one pass per block, once per fit (the in-memory fit traces NaN back after a divergence)
    if X_b.dtype.kind == "f" and not np.isfinite(X_b).all():
        raise ValueError("Input X contains NaN or infinity")
    y_b = np.asarray(y_b)
    if w_b is not None:
        w_b = np.ascontiguousarray(w_b, dtype=np.float64)
        if not np.all(np.isfinite(w_b)):
            raise ValueError("sample_weight contains NaN or infinity")
        if np.any(w_b < 0):
            raise ValueError("sample_weight must be non-negative")
    return X_b, y_b, w_b


def _block_labels(raw):
    """The distinct labels of one block (checked as class labels)."""
    y_b = raw[1]
    return encode_labels(y_b)[0] if y_b.size else y_b[:0]


def _encode_block(raw, classes):
    """The block with its labels as class indices into ``classes``."""
    X_b, y_b, w_b = raw
    y_idx = np.ascontiguousarray(np.searchsorted(classes, y_b), dtype=np.intp)
    return X_b, y_idx, w_b


def _block_stats(block, n_classes):
    """Per-class counts and weight sums of one block, and its largest weight."""
    _, y_idx, w_b = block
    weighted = w_b is not None
    return {
        "counts": np.bincount(y_idx, minlength=n_classes),
        "weight_sums": np.bincount(y_idx, weights=w_b, minlength=n_classes) if weighted
        else np.zeros(n_classes),
        "max_weight": float(w_b.max()) if weighted and w_b.size else 0.0,
        "weighted": weighted,
    }


def _sum_stats(stats):
    """The statistics of all blocks together."""
    return {"counts": sum(s["counts"] for s in stats),
            "weight_sums": sum(s["weight_sums"] for s in stats),
            "max_weight": max(s["max_weight"] for s in stats),
            "weighted": any(s["weighted"] for s in stats)}


def _final_block(block, class_weights, scale):
    """(X_b, y_idx, weights or None, weight sum): what every evaluation reads."""
    X_b, y_idx, w_b = block
    if w_b is not None and scale != 1.0:
        w_b = w_b * scale
    if class_weights is not None:
        per_class = class_weights[y_idx]
        w_b = per_class if w_b is None else w_b * per_class
    total = float(y_idx.shape[0]) if w_b is None else float(w_b.sum())
    return X_b, y_idx, w_b, total


def _block_sums(block, n_threads, *, theta, shape, backend, x_scale):
    """[sum w_i l_i, sum w_i, x_scale G^T X (c*d), column sums of G (c)] of one block.

    The kernel gives the weighted mean without penalty (alpha=0); times the block's weight
    sum that is the sum (see the module docstring for the rounding).
    """
    from softmax_fast.backends import get_kernels

    X_b, y_idx, w_b, total = block
    c, d = shape
    out = np.zeros(2 + c * d + c)
    out[1] = total
    if not total > 0:  # empty, or all weights zero: contributes nothing
        return out
    coef, intercept = theta[:c * d].reshape(c, d), theta[c * d:]
    grad_coef, grad_intercept = np.empty_like(coef), np.empty_like(intercept)
    mean = get_kernels(backend, "dense").linear_softmax_ce(
        X_b, x_scale, coef, intercept, y_idx, w_b, 0.0, grad_coef, grad_intercept, n_threads)
    out[0] = mean * total
    out[2:2 + c * d] = grad_coef.ravel()
    out[2 + c * d:] = grad_intercept
    out[2:] *= total
    return out


def _block_second_moment(block, index, *, x_scale):
    """[sum w x~ x~^T over the block's rows ``index`` (flat), their weight sum]."""
    from softmax_fast._training.lbfgs import second_moment_sums

    X_b, _, w_b, _ = block
    moment, total = second_moment_sums(X_b, x_scale, w_b, index)
    return np.append(moment.ravel(), total)


def _block_class_curvature(block, index, *, theta, shape, x_scale):
    """[the class curvature sums over the block's rows ``index`` (flat), their weight sum]."""
    from softmax_fast._training.lbfgs import class_curvature_sums

    X_b, _, w_b, _ = block
    c, d = shape
    shares, moments, total = class_curvature_sums(X_b, x_scale, w_b,
                                                  theta[:c * d].reshape(c, d), theta[c * d:],
                                                  index)
    return np.concatenate([shares, moments.ravel(), [total]])


def _add(*parts):
    """The sum of block results (a node of the reduction tree)."""
    total = parts[0].copy()
    for part in parts[1:]:
        total += part
    return total


# ---------------------------------------------------------------------------------------
# Prediction
# ---------------------------------------------------------------------------------------
def predict_blocks(estimator, X, method):
    """``estimator.<method>`` mapped over the row blocks of Dask ``X`` (a lazy Dask array).

    ``predict`` gives one label per row; ``predict_proba`` one row of c probabilities.
    """
    X = _as_dask_array(X, "X")
    if X.ndim != 2:
        raise ValueError(f"Expected a 2D array for X, got shape {X.shape}")
    if X.numblocks[1] > 1:
        X = X.rechunk({1: -1})
    if method == "predict":
        return X.map_blocks(_apply, estimator, method, drop_axis=1,
                            dtype=estimator.classes_.dtype,
                            meta=np.empty(0, dtype=estimator.classes_.dtype))
    n_classes = len(estimator.classes_)
    dtype = estimator.coef_.dtype
    return X.map_blocks(_apply, estimator, method, chunks=(X.chunks[0], (n_classes,)),
                        dtype=dtype, meta=np.empty((0, 0), dtype=dtype))


def _apply(X_b, estimator, method):
    """One block's predictions (a task)."""
    return getattr(estimator, method)(X_b)
