"""``grid_search``: validate the inputs, resume, run the groups, pick and refit the best."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from typing import Any

import numpy as np

from softmax_fast._training.sampling import (
    resolve_random_state,
    stratified_split_indices,
    training_seed,
)
from softmax_fast._training.scoring import score
from softmax_fast.backends import resolve_backend_name, resolve_n_threads

from .grid import (
    CORE_PARAMS,
    MAX_CONFIGURATIONS,
    METRIC_KEYS,
    config_key,
    expand_grid,
    full_params,
    project,
)
from .groups import make_tasks
from .results import ResultsWriter
from .runners import SearchInterrupted, run_dask, run_local

__all__ = ["grid_search", "GridSearchResult"]


@dataclasses.dataclass
class GridSearchResult:
    """What :func:`grid_search` returns (names follow scikit-learn's ``GridSearchCV``).

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
    cv_results_ : dict of str to ndarray or list
        The same rows by column, as scikit-learn's ``cv_results_`` (``pandas.DataFrame``
        reads it): ``params`` (list of dicts), ``param_<name>`` per hyperparameter, every
        metric, and ``rank_val_accuracy`` / ``rank_val_loss`` (1 is best; diverged rows
        rank last).
    best_params_ : dict or None
        Hyperparameters of the best ``"ok"`` row by ``scoring`` (ties: the first in grid
        order).
    best_index_ : int or None
    best_score_ : float or None
        Its validation accuracy (``scoring="accuracy"``) or validation loss (``"loss"``).
    best_estimator_ : SoftmaxRegression or None
        Refitted with ``best_params_`` on training + validation data (None if ``refit=False``
        or every configuration diverged).
    test_loss, test_accuracy : float or None
        Unregularised cross-entropy and accuracy of ``best_estimator_`` on the test data.
    random_state : int
        The seed actually used (drawn when ``random_state=None``); pass it again to repeat.
    backend : str
        The ``multi`` kernels that trained the groups (``"numba"``, ``"reference"``).
    seconds : float
        Wall time of the search (without the refit).
    n_groups : int
        Groups trained by this call (0 when resuming found everything done).
    n_reused : int
        Rows taken from the results file instead of trained (``resume``).
    scoring : str
    """

    results: list
    best_params_: dict | None = None
    best_index_: int | None = None
    best_score_: float | None = None
    best_estimator_: Any = None
    test_loss: float | None = None
    test_accuracy: float | None = None
    random_state: int = 0
    backend: str = "numba"
    seconds: float = 0.0
    n_groups: int = 0
    n_reused: int = 0
    scoring: str = "accuracy"

    @property
    def cv_results_(self):
        return cv_results(self.results)

    # The names before 0.2 (without scikit-learn's trailing underscore).
    @property
    def best_params(self):
        return _deprecated(self, "best_params")

    @property
    def best_index(self):
        return _deprecated(self, "best_index")

    @property
    def best_score(self):
        return _deprecated(self, "best_score")

    @property
    def best_estimator(self):
        return _deprecated(self, "best_estimator")


def _deprecated(result, name):
    import warnings

    warnings.warn(f"GridSearchResult.{name} is deprecated; use {name}_ (scikit-learn's name)",
                  DeprecationWarning, stacklevel=3)
    return getattr(result, name + "_")


def cv_results(rows):
    """Rows of a search as columns (scikit-learn's ``cv_results_`` layout)."""
    rows = [r for r in rows if r is not None]
    metrics = [k for k in METRIC_KEYS]
    params = [{k: v for k, v in r.items() if k not in METRIC_KEYS} for r in rows]
    columns = {"params": params}
    for name in dict.fromkeys(k for p in params for k in p):
        columns[f"param_{name}"] = [p.get(name) for p in params]
    for key in metrics:
        columns[key] = [r.get(key) for r in rows]
    for key, best_high in (("val_accuracy", True), ("val_loss", False)):
        values = np.array([np.nan if v is None else v for v in columns[key]], dtype=float)
        order = np.where(np.isnan(values), np.inf, -values if best_high else values)
        ranks = np.empty(len(values), dtype=int)
        ranks[np.argsort(order, kind="stable")] = np.arange(1, len(values) + 1)
        columns[f"rank_{key}"] = ranks
    return columns


def grid_search(X, y, param_grid, *, X_val=None, y_val=None, validation_fraction=0.2,
                scoring="accuracy", X_test=None, y_test=None, backend="auto", n_threads=None,
                random_state=None, results_path=None, resume=False, overwrite=False,
                dask=None, input_scale=None, progress=None, max_group_size=64, refit=True,
                max_configurations=MAX_CONFIGURATIONS, on_epoch=None):
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
    backend : str, default="auto"
        A backend name of the registry (:mod:`softmax_fast.backends`): the groups train with
        its ``multi`` kernels (``"auto"``: the fastest available; a name without multi-model
        kernels uses the auto choice) and the refit with its dense kernels.
    n_threads : int or None
        Threads in total (None: all cores). A group trains its models in parallel tasks;
        several groups may run side by side, sharing the threads.
    random_state : int, RandomState or None
        Seeds the split and, exactly as ``SoftmaxRegression(random_state=...)``, the sample
        order and random initialisation. None draws one (see ``result.random_state``).
    results_path : str or path-like, optional
        Stream results to this ``.csv`` or ``.jsonl``/``.json`` file as each group finishes.
        An existing file is refused unless ``resume`` or ``overwrite``; a second search
        writing the same file at the same time gets an error (the file is locked).
    resume : bool, default=False
        Keep the rows already in ``results_path`` (a torn last line from a crash is skipped
        and repaired by appending, never truncated) and train only the missing
        configurations. The file must be this search's results (same data, split and seed,
        checked by ``search_id``); anything else is refused untouched.
    overwrite : bool, default=False
        Replace an existing ``results_path`` (without ``resume``).
    dask : str, distributed.Client or None
        Run the groups as Dask tasks: ``"local:N"`` starts a ``LocalCluster`` of N worker
        processes, another string is a scheduler address. The data are scattered to every
        worker once; a task lost with its worker is retried.
    input_scale : float or None
        Model input is ``input_scale * X``; None: 1/255 for uint8 ``X``, else 1.0.
    progress : callable or None
        Called as ``progress(done, total)`` (configurations) after resuming and after every
        finished group, for progress bars.
    on_epoch : callable or None
        Called as ``on_epoch(group, epoch, n_models)`` after every epoch of every group that
        trains in this process (from the groups' threads; not on a Dask cluster), for
        progress bars that move while a group trains.
    max_group_size : int, default=64
        Most models trained together (each adds n_classes columns to the wide product).
    refit : bool, default=True
        Refit the best configuration on training + validation data.
    max_configurations : int, default=100,000
        Most configurations the grid may have (checked before anything is expanded).

    Returns
    -------
    GridSearchResult
    """
    tic = time.perf_counter()
    if scoring not in ("accuracy", "loss"):
        raise ValueError(f"scoring must be 'accuracy' or 'loss', got {scoring!r}")
    if isinstance(max_group_size, bool) or not isinstance(max_group_size, int) \
            or max_group_size < 1:
        raise ValueError(f"max_group_size must be a positive integer, got {max_group_size!r}")
    n_threads = resolve_n_threads(n_threads)
    kernel_name = resolve_backend_name(backend, "multi")
    configs, grid_keys = expand_grid(param_grid, max_configurations)
    seed_source = resolve_random_state(random_state)
    data = _prepare_data(X, y, X_val, y_val, X_test, y_test, validation_fraction, seed_source,
                         input_scale)
    header = list(CORE_PARAMS) + [k for k in grid_keys if k not in CORE_PARAMS] + \
        list(METRIC_KEYS)
    rows = [None] * len(configs)
    writer = None
    if results_path is not None:
        writer = ResultsWriter(results_path, header, search_id=data.search_id, resume=resume,
                               overwrite=overwrite)
        _reuse_rows(writer.existing, rows, configs, header)
    done = n_reused = sum(r is not None for r in rows)
    if progress is not None:
        progress(done, len(configs))
    tasks = make_tasks(configs, [i for i, r in enumerate(rows) if r is None], max_group_size,
                       dict(seed=training_seed(seed_source), input_scale=data.input_scale,
                            n_classes=len(data.classes), kernel=kernel_name,
                            search_id=data.search_id))

    def collect(group_rows):
        nonlocal done
        for index, row in group_rows:
            row = project(row, header)
            rows[index] = row
            if writer is not None:
                writer.write(row)
        done += len(group_rows)
        if progress is not None:
            progress(done, len(configs))

    try:
        if tasks and dask is not None:
            run_dask(dask, tasks, data.train_and_validation, collect)
        elif tasks:
            run_local(tasks, data.train_and_validation, n_threads, collect, on_epoch)
    except SearchInterrupted as exc:
        saved = (f"{done} of {len(configs)} results are saved in {results_path}; "
                 "resume=True (--resume) continues" if results_path is not None
                 else f"{done} of {len(configs)} configurations finished; pass results_path "
                 "to keep results across failures")
        raise SearchInterrupted(f"{exc}; {saved}") from exc
    finally:
        if writer is not None:
            writer.close()
    result = GridSearchResult(results=rows, random_state=seed_source, backend=kernel_name,
                              seconds=time.perf_counter() - tic, n_groups=len(tasks),
                              n_reused=n_reused, scoring=scoring)
    _pick_best(result, header)
    if refit and result.best_index_ is not None:
        _refit(result, data, seed_source, backend, n_threads)
    return result


@dataclasses.dataclass
class _Data:
    """The search's arrays: training and validation parts, test data, labels, identity."""

    X_tr: np.ndarray
    y_tr: np.ndarray
    X_va: np.ndarray
    y_va: np.ndarray
    X_te: np.ndarray | None
    y_te: np.ndarray | None
    classes: np.ndarray
    input_scale: float
    search_id: str

    @property
    def train_and_validation(self):
        return (self.X_tr, self.y_tr, self.X_va, self.y_va)


def _prepare_data(X, y, X_val, y_val, X_test, y_test, validation_fraction, seed_source,
                  input_scale):
    """Check the arrays, encode the labels, split off the validation part (all up front)."""
    from softmax_fast._training.sampling import default_input_scale

    X = _as_X(X, "X")
    y = _as_labels(y, X.shape[0], "y")
    input_scale = default_input_scale(X) if input_scale is None else float(input_scale)
    if not (np.isfinite(input_scale) and input_scale > 0):
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
    return _Data(X_tr, y_tr, X_va, y_va, X_te, y_te, classes, input_scale, search_id)


def _reuse_rows(existing, rows, configs, header):
    """Fill ``rows`` with the results already in the file (resume); duplicates count once."""
    keys = {config_key(c): i for i, c in enumerate(configs)}
    for row in existing:
        index = keys.get(config_key(full_params(row)))
        if index is not None and rows[index] is None:
            rows[index] = project(row, header)


def _as_X(X, name, like=None):
    if hasattr(X, "tocsr"):
        raise TypeError(f"{name}: grid_search needs a dense array, not a sparse matrix")
    X = np.asarray(X)
    if X.dtype == object or not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        raise TypeError(f"{name} must be a numeric array, got dtype {X.dtype}")
    if np.issubdtype(X.dtype, np.complexfloating):
        raise TypeError(f"{name} must be real, got dtype {X.dtype}")
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {X.shape}")
    dtype = np.uint8 if X.dtype == np.uint8 and (like is None or like.dtype == np.uint8) \
        else np.float32
    with np.errstate(over="ignore"):
        X = np.ascontiguousarray(X, dtype=dtype)
    if like is not None and X.shape[1] != like.shape[1]:
        raise ValueError(f"{name} has {X.shape[1]} features, X has {like.shape[1]}")
    if dtype == np.float32 and not np.isfinite(X).all():
        raise ValueError(f"{name} contains NaN or infinity (or values beyond float32)")
    return X


def _as_labels(y, n_rows, name):
    """Class labels: 1-D, one per row, no NaN (checked like scikit-learn's classifiers)."""
    from sklearn.utils.multiclass import check_classification_targets

    if y is None:
        raise ValueError(f"{name} is required")
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D class labels, got shape {y.shape}")
    if y.shape[0] != n_rows:
        raise ValueError(f"X has {n_rows} rows but {name} has {y.shape[0]} labels")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError(f"{name} contains NaN or infinity")
    check_classification_targets(y)
    return y


def _encode(classes, labels, name):
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{name} must be 1-D class labels, got shape {labels.shape}")
    unknown = np.setdiff1d(np.unique(labels), classes)
    if unknown.size:
        raise ValueError(f"{name} has labels not in y: {unknown[:5].tolist()}")
    return np.searchsorted(classes, labels).astype(np.intp)


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


def _pick_best(result, header):
    """Set ``best_index``, ``best_params`` and ``best_score`` of ``result``."""
    rows = result.results
    result.best_index_ = _best_index(rows, result.scoring)
    if result.best_index_ is None:
        return
    best = rows[result.best_index_]
    result.best_params_ = {k: best[k] for k in header if k not in METRIC_KEYS}
    result.best_score_ = best["val_accuracy" if result.scoring == "accuracy" else "val_loss"]


def _refit(result, data, random_state, backend, n_threads):
    """Refit the best configuration on training + validation data; score it on the test set."""
    from softmax_fast.estimator import SoftmaxRegression

    est = SoftmaxRegression(**full_params(result.best_params_), solver="sgd",
                            random_state=random_state,
                            input_scale=data.input_scale, backend=backend, n_threads=n_threads)
    X_all = np.concatenate([data.X_tr, data.X_va])
    y_all = data.classes[np.concatenate([data.y_tr, data.y_va])]
    result.best_estimator_ = est.fit(X_all, y_all)
    if data.X_te is not None:
        result.test_loss, result.test_accuracy = score(
            est.multinomial_coef_, est.multinomial_intercept_, data.X_te, data.input_scale,
            data.y_te)
