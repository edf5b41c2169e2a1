"""Hyperparameter grid search that trains many models per pass over the data.

Why it is fast: configurations that share a batch size and the shuffle seed see exactly the
same minibatches, so they are trained together as one *group* — their weights side by side
in one matrix, each minibatch read once, the logits of all models one wide matrix product
(:mod:`softmax_fast.kernels.numba_multi`). Epoch counts (``max_iter``) are *checkpoints* of
one run: a model is trained once to its largest ``max_iter`` and evaluated on the validation
set after each smaller one on the way.

Every configuration's result equals training it alone with
``SoftmaxRegression(**params, learning_rate="constant", random_state=...)`` on the training
part of the split (up to float32 rounding): the same initial weights, sample order per epoch
(:func:`softmax_fast.kernels.reference.epoch_order` with the estimator's seed), learning-rate
schedule, stopping rule (``tol`` / ``n_iter_no_change``) and divergence check. The grid search
defaults to ``learning_rate="constant"`` (the estimator's default is ``"step"``); put
``learning_rate`` (and ``lr_step_size``, ``lr_gamma``, ``power_t``) in the grid to search
schedules.

Groups run in parallel threads (each compiled group releases the GIL and uses one BLAS
thread) or as Dask tasks, and results stream to a CSV or JSON Lines file as each group
finishes, one fsync'ed line per configuration, so an interrupted search resumes where it
stopped.
"""

from __future__ import annotations

import concurrent.futures
import csv
import hashlib
import io
import json
import math
import os
import threading
import time
import types
from dataclasses import dataclass
from typing import Any

import numpy as np

from softmax_fast._trainer import SGDConfig, TrainState, _scheduled_learning_rate, evaluate
from softmax_fast.backends import available_backends, get_backend, resolve_n_threads
from softmax_fast.estimator import SoftmaxRegression, stratified_split_indices, training_seed
from softmax_fast.kernels.reference import epoch_order

__all__ = ["grid_search", "GridSearchResult", "SEARCHABLE_PARAMS", "METRIC_KEYS"]

#: Hyperparameters a grid may contain, with the value used when the grid omits them (the
#: estimator's defaults, except ``learning_rate``: a search compares constant rates).
SEARCHABLE_PARAMS: dict[str, Any] = {
    "batch_size": 32,
    "learning_rate_init": 0.1,
    "max_iter": 10,
    "alpha": 1e-5,
    "momentum": 0.0,
    "nesterovs_momentum": False,
    "learning_rate": "constant",
    "power_t": 0.5,
    "lr_step_size": 2,
    "lr_gamma": 0.5,
    "tol": 1e-4,
    "n_iter_no_change": 10,
    "shuffle": True,
    "init": "zeros",
}

#: Hyperparameters every result row carries (plus any other key of the grid).
CORE_PARAMS = ("batch_size", "learning_rate_init", "max_iter", "alpha", "momentum")

#: Keys every result row carries after its hyperparameters.
METRIC_KEYS = ("val_loss", "val_accuracy", "train_loss", "n_iter", "seconds", "status",
               "search_id")

_BACKENDS = ("auto", "numba", "cython", "reference")


@dataclass
class GridSearchResult:
    """What :func:`grid_search` returns.

    Attributes
    ----------
    results : list of dict
        One row per configuration, in grid order: its hyperparameters under the estimator's
        names (:data:`CORE_PARAMS` plus every key of the grid), then ``val_loss`` and
        ``val_accuracy`` (unregularised, on the validation set, after ``max_iter`` epochs),
        ``train_loss`` (the last epoch's mean training loss plus the L2 penalty, as in
        ``loss_curve_``), ``n_iter`` (epochs actually run: fewer than ``max_iter`` when the
        ``tol`` rule stopped it, the failing epoch when it diverged), ``seconds`` (the group's
        training and evaluation time up to this checkpoint divided among the models trained
        together), ``status`` (``"ok"`` or ``"diverged"``; the metrics of diverged rows are
        None) and ``search_id`` (a digest of the data, split and seed).
    best_params : dict
        Hyperparameters of the best ``"ok"`` row by ``scoring`` (ties: the first in grid
        order).
    best_index : int
    best_score : float
        Its validation accuracy (``scoring="accuracy"``) or validation loss (``"loss"``).
    best_estimator : SoftmaxRegression or None
        Refitted with ``best_params`` on training + validation data (None if ``refit=False``
        or every configuration diverged).
    test_loss, test_accuracy : float or None
        Unregularised cross-entropy and accuracy of ``best_estimator`` on the test data.
    random_state : int
        The seed actually used (drawn when ``random_state=None``); pass it again to repeat.
    backend : str
        What trained the groups: ``"numba"`` or the name of the per-minibatch driver's
        kernels (``"cython"``, ``"reference"``).
    seconds : float
        Wall time of the search (without the refit).
    n_groups : int
        Groups trained by this call (0 when resuming found everything done).
    scoring : str
    """

    results: list
    best_params: dict | None
    best_index: int | None
    best_score: float | None
    best_estimator: Any = None
    test_loss: float | None = None
    test_accuracy: float | None = None
    random_state: int = 0
    backend: str = "numba"
    seconds: float = 0.0
    n_groups: int = 0
    scoring: str = "accuracy"


# --------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------
def grid_search(X, y, param_grid, *, X_val=None, y_val=None, validation_fraction=0.2,
                scoring="accuracy", X_test=None, y_test=None, backend="auto", n_threads=None,
                random_state=None, results_path=None, resume=False, dask=None,
                input_scale=None, progress=None, max_group_size=64, refit=True):
    """Train and validate every configuration of ``param_grid``, many models per data pass.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        uint8 (kept as is, scaled by ``input_scale`` inside the kernels) or floating (used as
        float32).
    y : array-like of shape (n_samples,)
        Class labels.
    param_grid : dict or list of dict
        Lists of values per hyperparameter, as scikit-learn's ``ParameterGrid`` (a list of
        dicts is the union of their grids). Keys: :data:`SEARCHABLE_PARAMS`; ``max_iter``
        values are checkpoints of one run, not separate runs.
    X_val, y_val : array-like, optional
        Explicit validation set; otherwise a stratified ``validation_fraction`` of ``X`` is
        held out (``train_test_split`` seeded by ``random_state``).
    validation_fraction : float, default=0.2
    scoring : {"accuracy", "loss"}, default="accuracy"
        Pick the best by highest validation accuracy or lowest validation loss.
    X_test, y_test : array-like, optional
        Test data for ``best_estimator`` (``test_loss``, ``test_accuracy``).
    backend : {"auto", "numba", "cython", "reference"}, default="auto"
        ``"auto"``/``"numba"``: the compiled multi-model epoch (Numba loop calling BLAS
        sgemm). ``"cython"``/``"reference"``: a Python loop per minibatch doing the wide
        products with NumPy and softmax/gradients with that backend's kernels (slower; the
        ``"reference"`` one is the test oracle). The refit uses the same backend name
        (``"numba"`` -> the estimator's numba backend).
    n_threads : int or None
        Threads in total (None: all cores). Several groups run in parallel threads with one
        BLAS thread each; a single group uses all threads inside BLAS.
    random_state : int, RandomState or None
        Seeds the split and, exactly as ``SoftmaxRegression(random_state=...)``, the sample
        order and random initialisation. None draws one (see ``result.random_state``).
    results_path : str or path-like, optional
        Stream results to this ``.csv`` or ``.jsonl``/``.json`` file as each group finishes
        (an existing file is overwritten unless ``resume``).
    resume : bool, default=False
        Keep the rows already in ``results_path`` (a torn last line from a crash is
        dropped) and train only the missing configurations. The file must come from the same
        data, split and seed (checked by ``search_id``).
    dask : str, distributed.Client or None
        Run the groups as Dask tasks: ``"local:N"`` starts a ``LocalCluster`` of N worker
        processes, another string is a scheduler address. The data are scattered to every
        worker once; a task lost with its worker is retried.
    input_scale : float or None
        Model input is ``input_scale * X``; None: 1/255 for uint8 ``X``, else 1.0.
    progress : callable or None
        Called as ``progress(done, total)`` (configurations) after resuming and after every
        finished group, for progress bars.
    max_group_size : int, default=64
        Most models trained together (each adds n_classes columns to the wide product).
    refit : bool, default=True
        Refit the best configuration on training + validation data.

    Returns
    -------
    GridSearchResult
    """
    tic = time.perf_counter()
    if scoring not in ("accuracy", "loss"):
        raise ValueError(f"scoring must be 'accuracy' or 'loss', got {scoring!r}")
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if isinstance(max_group_size, bool) or not isinstance(max_group_size, int) \
            or max_group_size < 1:
        raise ValueError(f"max_group_size must be a positive integer, got {max_group_size!r}")
    n_threads = resolve_n_threads(n_threads)
    kernel_name = _resolve_search_backend(backend)
    configs, grid_keys = _expand_grid(param_grid)
    seed_source = _resolve_random_state(random_state)

    X, y = _as_X(X, "X"), np.asarray(y)
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]} labels")
    if input_scale is None:
        input_scale = 1.0 / 255.0 if X.dtype == np.uint8 else 1.0
    input_scale = float(input_scale)
    if not (math.isfinite(input_scale) and input_scale > 0):
        raise ValueError(f"input_scale must be a positive finite number, got {input_scale!r}")
    classes, y_idx = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError("y must contain at least 2 classes")
    y_idx = y_idx.astype(np.intp)
    if X_val is None:
        X_tr, X_va, y_tr, y_va = _split(X, y_idx, validation_fraction, seed_source)
    else:
        if y_val is None:
            raise ValueError("X_val needs y_val")
        X_tr, y_tr = X, y_idx
        X_va = _as_X(X_val, "X_val", like=X)
        y_va = _encode(classes, y_val, "y_val")
        if X_va.shape[0] != y_va.shape[0]:
            raise ValueError("X_val and y_val have different numbers of rows")
    if X_va.shape[0] == 0:
        raise ValueError("the validation set is empty")
    X_te = y_te = None
    if X_test is not None:  # checked before a long search, not after
        if y_test is None:
            raise ValueError("X_test needs y_test")
        X_te = _as_X(X_test, "X_test", like=X)
        y_te = _encode(classes, y_test, "y_test")
        if X_te.shape[0] != y_te.shape[0] or X_te.shape[0] == 0:
            raise ValueError("X_test and y_test must have the same, non-zero number of rows")

    search_id = _search_id(X_tr, y_tr, X_va, y_va, classes, seed_source, input_scale)
    seed = training_seed(seed_source)
    header = list(CORE_PARAMS) + [k for k in grid_keys if k not in CORE_PARAMS] + \
        list(METRIC_KEYS)
    rows = [None] * len(configs)
    keys = {_config_key(c): i for i, c in enumerate(configs)}
    writer = None
    if results_path is not None:
        writer = _ResultsWriter(results_path, header, resume=resume)
        for row in writer.existing:
            if row.get("search_id") != search_id:
                raise ValueError(
                    f"{results_path}: holds results of a different search (data, split or "
                    "random_state differ); use another file or resume=False"
                )
            index = keys.get(_config_key(_full_params(row)))
            if index is not None and rows[index] is None:
                rows[index] = _project(row, header)
    done = sum(r is not None for r in rows)
    if progress is not None:
        progress(done, len(configs))

    tasks = _make_tasks(configs, [i for i, r in enumerate(rows) if r is None], max_group_size,
                        dict(seed=seed, input_scale=input_scale, n_classes=len(classes),
                             kernel=kernel_name, search_id=search_id))

    def collect(group_rows):
        nonlocal done
        for index, row in group_rows:
            row = _project(row, header)
            rows[index] = row
            if writer is not None:
                writer.write(row)
        done += len(group_rows)
        if progress is not None:
            progress(done, len(configs))

    try:
        if tasks and dask is not None:
            _run_dask(dask, tasks, (X_tr, y_tr, X_va, y_va), collect)
        elif tasks:
            _run_local(tasks, (X_tr, y_tr, X_va, y_va), n_threads, collect)
    finally:
        if writer is not None:
            writer.close()
    seconds = time.perf_counter() - tic

    best_index = _best_index(rows, scoring)
    result = GridSearchResult(results=rows, best_params=None, best_index=best_index,
                              best_score=None, random_state=seed_source, backend=kernel_name,
                              seconds=seconds, n_groups=len(tasks), scoring=scoring)
    if best_index is None:
        return result
    best = rows[best_index]
    result.best_params = {k: best[k] for k in header if k not in METRIC_KEYS}
    result.best_score = best["val_accuracy" if scoring == "accuracy" else "val_loss"]
    if refit:
        result.best_estimator = _refit(result.best_params, X_tr, y_tr, X_va, y_va, classes,
                                       input_scale, seed_source, backend, n_threads)
        if X_te is not None:
            est = result.best_estimator
            result.test_loss, result.test_accuracy = evaluate(
                est.coef_, est.intercept_, X_te, input_scale, y_te)
    return result


# --------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------
def _resolve_search_backend(backend):
    if backend in ("auto", "numba"):
        try:
            from softmax_fast.kernels import numba_multi  # noqa: F401
        except ImportError as exc:
            if backend == "numba":
                raise ValueError(f"backend 'numba' is not available: {exc}") from exc
            return "reference"
        return "numba"
    get_backend(backend)  # raises a clear error when that backend cannot be imported
    return backend


def _as_X(X, name, like=None):
    if hasattr(X, "tocsr"):
        raise TypeError(f"{name}: grid_search needs a dense array, not a sparse matrix")
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {X.shape}")
    dtype = np.uint8 if X.dtype == np.uint8 and (like is None or like.dtype == np.uint8) \
        else np.float32
    X = np.ascontiguousarray(X, dtype=dtype)
    if like is not None and X.shape[1] != like.shape[1]:
        raise ValueError(f"{name} has {X.shape[1]} features, X has {like.shape[1]}")
    if dtype == np.float32 and not np.isfinite(X).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return X


def _encode(classes, labels, name):
    labels = np.asarray(labels)
    unknown = np.setdiff1d(np.unique(labels), classes)
    if unknown.size:
        raise ValueError(f"{name} has labels not in y: {unknown[:5].tolist()}")
    return np.searchsorted(classes, labels).astype(np.intp)


def _resolve_random_state(random_state):
    """An int seed that stands for ``random_state`` everywhere (split, order, init)."""
    if random_state is None:
        return int(np.random.SeedSequence().entropy % (2**31 - 1))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        return int(random_state)
    raise TypeError(f"random_state must be an int, RandomState or None, got {random_state!r}")


def _split(X, y_idx, fraction, random_state):
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {fraction!r}")
    tr, va = stratified_split_indices(y_idx, fraction, random_state)
    return X[tr], X[va], y_idx[tr], y_idx[va]


def _search_id(X_tr, y_tr, X_va, y_va, classes, random_state, input_scale):
    digest = hashlib.sha256()
    for arr in (X_tr, y_tr, X_va, y_va):
        digest.update(f"{arr.dtype.str}{arr.shape}".encode())
        digest.update(np.ascontiguousarray(arr).data)
    digest.update(repr((classes.tolist(), random_state, input_scale)).encode())
    return digest.hexdigest()[:16]


def _coerce(name, value):
    """A grid value as the type of its default (CSV round trips give strings)."""
    default = SEARCHABLE_PARAMS[name]
    if isinstance(default, bool):
        if isinstance(value, str):
            if value not in ("True", "False", "true", "false", "1", "0"):
                raise ValueError(f"{name}: expected a bool, got {value!r}")
            return value in ("True", "true", "1")
        return bool(value)
    if isinstance(default, int):
        if isinstance(value, str):
            value = float(value)
        if float(value) != int(value):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        return int(value)
    if isinstance(default, float):
        return float(value)
    return str(value)


def _expand_grid(param_grid):
    from sklearn.model_selection import ParameterGrid

    grids = [param_grid] if isinstance(param_grid, dict) else list(param_grid)
    grid_keys = []
    for grid in grids:
        if not isinstance(grid, dict):
            raise TypeError("param_grid must be a dict or a list of dicts")
        for key in grid:
            if key not in SEARCHABLE_PARAMS:
                raise ValueError(f"unknown grid parameter {key!r}; searchable: "
                                 f"{', '.join(SEARCHABLE_PARAMS)}")
            if key not in grid_keys:
                grid_keys.append(key)
    configs = []
    for params in ParameterGrid(grids):
        full = _full_params(params)
        # the estimator's own checks give the same messages as a direct fit would
        SoftmaxRegression(**full)._check_params()
        configs.append(full)
    if not configs:
        raise ValueError("param_grid is empty")
    return configs, grid_keys


def _full_params(row):
    return {k: _coerce(k, row[k]) if k in row and row[k] is not None else v
            for k, v in SEARCHABLE_PARAMS.items()}


def _config_key(full):
    return json.dumps([full[k] for k in SEARCHABLE_PARAMS])


def _project(row, header):
    return {k: row.get(k) for k in header}


def _best_index(rows, scoring):
    best, best_value = None, None
    for i, row in enumerate(rows):
        metric = None if row is None or row["status"] != "ok" else \
            row["val_accuracy" if scoring == "accuracy" else "val_loss"]
        if metric is None:  # diverged, or a validation loss that overflowed
            continue
        value = metric if scoring == "accuracy" else -metric
        if best_value is None or value > best_value:
            best, best_value = i, value
    return best


def _refit(params, X_tr, y_tr, X_va, y_va, classes, input_scale, random_state, backend,
           n_threads):
    if backend == "numba" and "numba" not in available_backends():
        backend = "auto"  # the search's own numba kernel does not need the numba backend
    est = SoftmaxRegression(**_full_params(params), random_state=random_state,
                            input_scale=input_scale, backend=backend, n_threads=n_threads)
    X_all = np.concatenate([X_tr, X_va])
    y_all = classes[np.concatenate([y_tr, y_va])]
    return est.fit(X_all, y_all)


# --------------------------------------------------------------------------------------
# Groups: which models train together
# --------------------------------------------------------------------------------------
def _make_tasks(configs, pending, max_group_size, settings):
    """Split the pending configurations into groups of models that share minibatches.

    A *model* is a configuration without ``max_iter``; its configurations are checkpoints.
    Models sharing batch size and shuffling see the same minibatches; momentum models go to
    separate groups because they need the slower explicit-gradient kernel.
    """
    models = {}
    for index in pending:
        params = configs[index]
        key = _config_key({**params, "max_iter": 0})
        models.setdefault(key, {"params": {**params, "max_iter": 0}, "checkpoints": {}})
        models[key]["checkpoints"].setdefault(params["max_iter"], []).append(index)
    buckets = {}
    for model in models.values():
        p = model["params"]
        buckets.setdefault((p["batch_size"], p["shuffle"], p["momentum"] > 0), []).append(model)
    tasks = []
    for bucket in buckets.values():
        for start in range(0, len(bucket), max_group_size):
            tasks.append({"models": bucket[start:start + max_group_size], **settings})
    # longest first: small batches and many epochs cost the most, so they must not be last
    tasks.sort(key=lambda t: -len(t["models"]) * max(max(m["checkpoints"]) for m in t["models"])
               * (1.0 + 64.0 / t["models"][0]["params"]["batch_size"]))
    for number, task in enumerate(tasks):
        task["group"] = number
    return tasks


# --------------------------------------------------------------------------------------
# Training one group (runs in a thread, a Dask worker or the caller)
# --------------------------------------------------------------------------------------
class _Group:
    """The stacked weights of the group's still-training models, compacted as they finish."""

    def __init__(self, models, n_features, n_classes, seed, kernel):
        self.n_classes = n_classes
        self.kernel = kernel
        coefs = np.empty((len(models), n_classes, n_features), dtype=np.float32)
        for j, model in enumerate(models):
            coefs[j] = TrainState.zeros(n_classes, n_features, np.float32, seed,
                                        init=model["params"]["init"]).coef
        intercepts = np.zeros((len(models), n_classes), dtype=np.float32)
        self.weights, self.scale, self.intercepts = _stack(coefs, intercepts)
        self.momentum = np.array([m["params"]["momentum"] for m in models], dtype=np.float64)
        self.nesterov = np.array([m["params"]["nesterovs_momentum"] for m in models])
        self.alpha = np.array([m["params"]["alpha"] for m in models], dtype=np.float64)
        self.uses_momentum = bool(np.any(self.momentum > 0))
        self.velocity = np.zeros_like(self.weights) if self.uses_momentum else None
        self.velocity_intercepts = np.zeros_like(self.intercepts) \
            if self.uses_momentum else None
        self.members = list(range(len(models)))  # model number of each stacked block

    def keep(self, members):
        """Drop every stacked model not in ``members`` (a sublist of ``self.members``)."""
        if members == self.members:
            return
        pos = [self.members.index(m) for m in members]
        c = self.n_classes
        d = self.weights.shape[0]

        def take(arr):
            blocks = arr.reshape(*arr.shape[:-1], len(self.members), c)[..., pos, :]
            return np.ascontiguousarray(blocks.reshape(*arr.shape[:-1], len(pos) * c))

        self.weights = take(self.weights).reshape(d, -1)
        self.intercepts = take(self.intercepts)
        self.scale = np.ascontiguousarray(self.scale[pos])
        if self.uses_momentum:
            self.velocity = take(self.velocity).reshape(d, -1)
            self.velocity_intercepts = take(self.velocity_intercepts)
        self.members = list(members)

    def columns(self, member):
        j = self.members.index(member)
        return slice(j * self.n_classes, (j + 1) * self.n_classes), j

    def sq_norms(self):
        """||W_j||^2 per stacked model in float64 (with the lazy scale)."""
        w = self.weights.astype(np.float64).reshape(self.weights.shape[0], -1, self.n_classes)
        return np.einsum("fjk,fjk->j", w, w) * self.scale ** 2

    def intercepts_finite(self):
        return np.isfinite(self.intercepts.reshape(-1, self.n_classes)).all(axis=1)

    def epoch(self, X, x_scale, y, order, lr, batch_size, driver, n_threads):
        alpha = self.alpha[self.members]
        if self.kernel == "numba":
            from softmax_fast.kernels.numba_multi import multi_sgd_epoch

            if not self.uses_momentum:
                return multi_sgd_epoch(X, x_scale, y, order, self.weights, self.scale,
                                       self.intercepts, lr, alpha, self.n_classes, batch_size)
            return multi_sgd_epoch(X, x_scale, y, order, self.weights, self.scale,
                                   self.intercepts, lr, alpha, self.n_classes, batch_size,
                                   self.momentum[self.members], self.nesterov[self.members],
                                   self.velocity, self.velocity_intercepts)
        return _driver_epoch(driver, n_threads, X, x_scale, y, order, self, lr, alpha,
                             batch_size)

    def evaluate(self, X, x_scale, y, members):
        """Validation loss and accuracy of ``members`` (subset of the stacked models)."""
        pos = [self.members.index(m) for m in members]
        if self.kernel == "numba":
            from softmax_fast.kernels.numba_multi import multi_evaluate

            cols = np.concatenate([np.arange(p * self.n_classes, (p + 1) * self.n_classes)
                                   for p in pos])
            weights = self.weights if len(pos) == len(self.members) \
                else np.ascontiguousarray(self.weights[:, cols])
            loss, acc = multi_evaluate(X, x_scale, y, weights, self.scale[pos],
                                       self.intercepts[cols], self.n_classes)
            return loss, acc
        out = [evaluate(*self.model(m), X, x_scale, y) for m in members]
        return np.array([o[0] for o in out]), np.array([o[1] for o in out])

    def model(self, member):
        cols, j = self.columns(member)
        coef = (self.weights[:, cols].T * self.scale[j]).astype(np.float32)
        return np.ascontiguousarray(coef), self.intercepts[cols].copy()


def _stack(coefs, intercepts):
    """Stacked layout for the driver (same as numba_multi.stack_models, without numba)."""
    n_models, n_classes, n_features = coefs.shape
    weights = np.ascontiguousarray(coefs.transpose(2, 0, 1).reshape(n_features, -1))
    return (weights, np.ones(n_models), np.ascontiguousarray(intercepts.reshape(-1)))


def _driver_epoch(kernels, n_threads, X, x_scale, y, order, group, lr, alpha, batch_size):
    """One multi-model epoch with a Python loop per minibatch (``cython``/``reference``).

    The wide products are NumPy matmuls; softmax and gradient of all models' logits, viewed
    as (rows * models, n_classes), are one call each of the backend's ``log_softmax`` and
    ``softmax_ce``; updates are broadcast over the (features, models, classes) view.
    """
    c = group.n_classes
    k = len(group.members)
    d = group.weights.shape[0]
    losses = np.zeros(k)
    W = group.weights.reshape(d, k, c)
    b = group.intercepts.reshape(k, c)
    lr3 = lr[None, :, None]
    alpha3 = alpha[None, :, None]
    if group.uses_momentum:
        mu = group.momentum[group.members]
        nest = group.nesterov[group.members]
        vW = group.velocity.reshape(d, k, c)
        vb = group.velocity_intercepts.reshape(k, c)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        nb = len(idx)
        xb = X[idx].astype(np.float32) * np.float32(x_scale)
        z = xb @ group.weights
        z = (z.reshape(nb, k, c) + b).reshape(nb * k, c)
        labels = np.repeat(y[idx], k)
        log_p = np.empty_like(z)
        kernels.log_softmax(z, log_p, n_threads)
        losses -= log_p[np.arange(nb * k), labels].reshape(nb, k).astype(np.float64).sum(0)
        grad = np.empty_like(z)
        kernels.softmax_ce(z, labels, None, grad, n_threads)
        dz = grad.reshape(nb, k * c) * np.float32(k)  # softmax_ce divides by nb * k rows
        gW = (xb.T @ dz).reshape(d, k, c) + alpha3 * W
        gb = dz.reshape(nb, k, c).sum(0)
        if not group.uses_momentum:
            W -= (lr3 * gW).astype(np.float32)
            b -= (lr[:, None] * gb).astype(np.float32)
            continue
        vW *= mu[None, :, None].astype(np.float32)
        vW -= (lr3 * gW).astype(np.float32)
        vb *= mu[:, None].astype(np.float32)
        vb -= (lr[:, None] * gb).astype(np.float32)
        stepW = np.where(nest[None, :, None], mu[None, :, None] * vW - lr3 * gW, vW)
        stepb = np.where(nest[:, None], mu[:, None] * vb - lr[:, None] * gb, vb)
        W += stepW.astype(np.float32)
        b += stepb.astype(np.float32)
    return losses / len(order)


def _finite_or_none(value):
    value = float(value)
    return value if math.isfinite(value) else None


class _Cancelled(Exception):
    """The search stopped (an error elsewhere or Ctrl-C) while this group was training."""


def _run_group(task, X_tr, y_tr, X_va, y_va, blas_threads=None, stop=None):
    """Train one group and return ``[(config index, result row), ...]``.

    Replays, per model, what ``SoftmaxRegression.fit`` does epoch by epoch (learning-rate
    schedule, tol / n_iter_no_change stopping, the divergence check), on stacked weights.
    ``stop`` (a ``threading.Event``) set by the caller abandons the group between epochs.
    """
    if blas_threads is not None:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=blas_threads, user_api="blas"):
            return _run_group(task, X_tr, y_tr, X_va, y_va, stop=stop)
    models = task["models"]
    n, d = X_tr.shape
    x_scale = task["input_scale"]
    seed = task["seed"]
    first = models[0]["params"]
    batch_size, shuffle = first["batch_size"], first["shuffle"]
    driver = None if task["kernel"] == "numba" else get_backend(task["kernel"])
    group = _Group(models, d, task["n_classes"], seed, task["kernel"])
    states, cfgs = [], []
    for model in models:
        p = model["params"]
        cfg = SGDConfig(**{k: p[k] for k in SGDConfig.__dataclass_fields__ if k in p})
        cfgs.append(cfg)
        states.append(types.SimpleNamespace(
            epochs_done=0, samples_seen=0, learning_rate=cfg.learning_rate_init,
            best=math.inf, stall=0, train_loss=None, status="ok", seconds=0.0,
            last=max(model["checkpoints"]), metrics=None))
    out = []

    def emit(member, epochs):
        """Rows of ``member``'s checkpoints in ``epochs`` from its current metrics."""
        st = states[member]
        for epoch in epochs:
            for index in models[member]["checkpoints"][epoch]:
                params = {**models[member]["params"], "max_iter": epoch}
                diverged = st.status == "diverged"
                val_loss, val_acc = (None, None) if diverged else st.metrics
                out.append((index, {
                    **params, "val_loss": val_loss, "val_accuracy": val_acc,
                    "train_loss": None if diverged else _finite_or_none(st.train_loss),
                    "n_iter": st.epochs_done, "seconds": st.seconds, "status": st.status,
                    "search_id": task["search_id"]}))

    epoch = 0
    while group.members:
        if stop is not None and stop.is_set():
            raise _Cancelled
        epoch += 1
        t0 = time.perf_counter()
        members = group.members
        lr = np.empty(len(members))
        for j, m in enumerate(members):
            states[m].learning_rate = _scheduled_learning_rate(cfgs[m], states[m])
            lr[j] = states[m].learning_rate
        # every member has run epoch - 1 epochs: one order for all of them
        order = epoch_order(n, seed, epoch - 1, shuffle)
        data_loss = group.epoch(X_tr, x_scale, y_tr, order, lr, batch_size, driver, 1)
        penalty = 0.5 * group.alpha[members] * group.sq_norms()
        finite_b = group.intercepts_finite()
        finished, frozen = [], []
        for j, m in enumerate(members):
            st, cfg = states[m], cfgs[m]
            st.epochs_done += 1
            st.samples_seen += n
            with np.errstate(invalid="ignore", over="ignore"):
                st.train_loss = float(data_loss[j] + penalty[j])
            if not (math.isfinite(st.train_loss) and finite_b[j]):
                st.status = "diverged"
                finished.append(m)
                continue
            st.stall = 0 if st.train_loss < st.best - cfg.tol else st.stall + 1
            st.best = min(st.best, st.train_loss)
            if st.stall >= cfg.n_iter_no_change:
                if cfg.learning_rate == "adaptive" and st.learning_rate / 5.0 > 1e-6:
                    st.learning_rate /= 5.0
                    st.stall = 0
                else:  # converged: later checkpoints see these weights, as a lone fit would
                    frozen.append(m)
            if st.epochs_done == st.last:
                frozen.append(m)
        # validation where a checkpoint is due, or for models leaving the group
        due = [m for m in members if states[m].status == "ok" and (
            states[m].epochs_done in models[m]["checkpoints"] or m in frozen)]
        if due:
            loss, acc = group.evaluate(X_va, x_scale, y_va, due)
            for j, m in enumerate(due):
                states[m].metrics = (_finite_or_none(loss[j]), float(acc[j]))
        share = (time.perf_counter() - t0) / len(members)
        for m in members:
            states[m].seconds += share
        for m in members:
            st = states[m]
            if st.status == "diverged" or m in frozen:
                emit(m, [e for e in models[m]["checkpoints"] if e >= st.epochs_done])
            elif st.epochs_done in models[m]["checkpoints"]:
                emit(m, [st.epochs_done])
        leaving = set(finished) | set(frozen)
        if leaving:
            group.keep([m for m in members if m not in leaving])
    return out


# --------------------------------------------------------------------------------------
# Running the groups: threads in this process, or Dask tasks
# --------------------------------------------------------------------------------------
def _run_local(tasks, data, n_threads, collect):
    """Run groups in ``min(n_threads, len(tasks))`` threads, splitting the BLAS threads.

    The compiled epoch releases the GIL, so groups on separate threads scale with cores
    without the fork-and-copy of processes; small per-minibatch products scale better that
    way than through BLAS's own threads.
    """
    from threadpoolctl import threadpool_limits

    workers = min(n_threads, len(tasks))
    with threadpool_limits(limits=max(1, n_threads // workers), user_api="blas"):
        if workers == 1:
            for task in tasks:
                collect(_run_group(task, *data))
            return
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers,
                                                     thread_name_prefix="softmax-fast-search")
        stop = threading.Event()
        try:
            futures = [pool.submit(_run_group, task, *data, stop=stop) for task in tasks]
            for future in concurrent.futures.as_completed(futures):
                collect(future.result())
        finally:
            # on an error or Ctrl-C queued groups never start and running ones quit after
            # their current epoch, so the interpreter is not kept alive by orphan threads
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)


def _dask_client(dask):
    """(client, things to close) for ``dask``: "local:N", an address or a Client."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise ImportError(
            "grid_search(dask=...) needs Dask's distributed scheduler: "
            "pip install 'softmax-fast[dask]'"
        ) from exc
    if isinstance(dask, str) and dask.startswith("local:"):
        try:
            n_workers = int(dask.split(":", 1)[1])
        except ValueError:
            n_workers = 0
        if n_workers < 1:
            raise ValueError(f"dask='local:N' needs a positive worker count, got {dask!r}")
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0")
        client = Client(cluster)
        return client, [client, cluster]
    if isinstance(dask, str):
        client = Client(dask)
        return client, [client]
    if hasattr(dask, "submit") and hasattr(dask, "scatter"):
        return dask, []
    raise TypeError(f"dask must be 'local:N', a scheduler address or a Client, got {dask!r}")


def _run_dask(dask, tasks, data, collect, retries=3):
    """Run every group as a Dask task on data scattered once to all workers.

    A task whose worker dies is rescheduled by the scheduler; ``retries`` also re-runs tasks
    that raised (e.g. a worker's memory error), so a lost worker never loses a group.
    """
    client, owned = _dask_client(dask)  # first: it explains a missing distributed
    from distributed import as_completed

    futures, pending = [], set()
    try:
        scattered = client.scatter(list(data), broadcast=True)
        token = hashlib.sha256(os.urandom(8)).hexdigest()[:8]
        futures = [client.submit(_run_group, task, *scattered, blas_threads=1,
                                 retries=retries, pure=False,
                                 key=f"softmax-fast-group-{task['group']}-{token}")
                   for task in tasks]
        pending = set(futures)
        for future in as_completed(futures):
            rows = future.result()
            pending.discard(future)
            future.release()  # collected: a later lost worker need not recompute it
            collect(rows)
    finally:
        for future in pending:
            future.cancel()
        for thing in owned:
            thing.close()


# --------------------------------------------------------------------------------------
# The results file
# --------------------------------------------------------------------------------------
_FLOAT_KEYS = ("val_loss", "val_accuracy", "train_loss", "seconds")


class _ResultsWriter:
    """Append-only CSV / JSON Lines results, crash-safe line by line.

    Each row is one ``os.write`` of a whole line followed by ``fsync``, so whatever kills the
    process leaves complete lines plus at most one torn last line, which resuming drops.
    """

    def __init__(self, path, header, *, resume):
        self.path = os.fspath(path)
        ext = os.path.splitext(self.path)[1].lower()
        if ext == ".csv":
            self.format = "csv"
        elif ext in (".jsonl", ".json", ".ndjson"):
            self.format = "jsonl"
        else:
            raise ValueError(f"results file must end in .csv or .jsonl, got {self.path!r}")
        self.header = list(header)
        self.existing = []
        fresh = True
        if resume and os.path.exists(self.path):
            fresh = not self._read_existing()
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND |
                          (os.O_TRUNC if fresh else 0), 0o644)
        if fresh and self.format == "csv":
            self._write_line(self._csv_line(self.header))

    def _read_existing(self):
        """Load complete rows, cut a torn last line; False if nothing usable is there."""
        with open(self.path, "rb") as fh:
            data = fh.read()
        complete = data[:data.rfind(b"\n") + 1]
        if len(complete) != len(data):
            os.truncate(self.path, len(complete))  # a crash mid-line: drop the fragment
        text = complete.decode("utf-8")
        if not text.strip():
            return False
        if self.format == "jsonl":
            for number, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    self.existing.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{self.path}:{number}: not a JSON line ({exc})") from exc
            return True
        reader = csv.DictReader(io.StringIO(text))
        file_header = reader.fieldnames or []
        missing = [k for k in self.header if k not in file_header]
        if missing:
            raise ValueError(f"{self.path}: its columns lack {missing}; the grid changed, "
                             "write to a new file")
        self.header = list(file_header)
        for raw in reader:
            self.existing.append(_parse_csv_row(raw))
        return True

    @staticmethod
    def _csv_line(values):
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(values)
        return buf.getvalue()

    def _write_line(self, line):
        data = line.encode("utf-8")
        while data:
            written = os.write(self.fd, data)
            data = data[written:]
        os.fsync(self.fd)

    def write(self, row):
        if self.format == "jsonl":
            line = json.dumps(row, allow_nan=False) + "\n"
        else:
            line = self._csv_line(["" if row.get(k) is None else row.get(k)
                                   for k in self.header])
        self._write_line(line)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _parse_csv_row(raw):
    row = {}
    for key, value in raw.items():
        if key in SEARCHABLE_PARAMS:
            row[key] = _coerce(key, value) if value != "" else None
        elif key in _FLOAT_KEYS:
            row[key] = float(value) if value != "" else None
        elif key == "n_iter":
            row[key] = int(value) if value != "" else None
        else:
            row[key] = value
    return row
