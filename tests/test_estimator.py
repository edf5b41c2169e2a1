"""SoftmaxRegression: training behaviour, scikit-learn compatibility, errors and persistence."""

import json
import os
import warnings
import zipfile

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from softmax_fast import SoftmaxRegression
from softmax_fast._training.sampling import epoch_order
from softmax_fast.estimator import ModelFileError, TrainingDivergedError
from softmax_fast.kernels import reference as ref


@pytest.fixture(scope="module")
def blobs():
    X, y = make_classification(n_samples=600, n_features=12, n_informative=8, n_classes=4,
                               n_clusters_per_class=1, class_sep=2.0, random_state=0)
    return X.astype(np.float32), y


def _fit(X, y, **params):
    params.setdefault("random_state", 0)
    params.setdefault("max_iter", 5)
    params.setdefault("solver", "sgd")  # these tests are about SGD; "auto" would pick L-BFGS
    return SoftmaxRegression(**params).fit(X, y)


def test_learns_a_separable_problem(backend, blobs):
    X, y = blobs
    model = _fit(X, y, backend=backend, max_iter=20)
    assert model.score(X, y) > 0.9
    assert model.coef_.shape == (4, 12) and model.intercept_.shape == (4,)
    assert model.n_iter_ == 20 and len(model.loss_curve_) == 20
    assert model.loss_curve_[-1] < model.loss_curve_[0]
    proba = model.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.exp(model.predict_log_proba(X)), proba, rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(model.predict(X), model.classes_[proba.argmax(axis=1)])


def test_one_epoch_equals_the_reference_sgd_step_by_step(backend, blobs):
    """fit(max_iter=1) runs exactly the reference's epoch with the same order (float64)."""
    X, y = blobs
    X = X.astype(np.float64)
    model = SoftmaxRegression(solver="sgd", max_iter=1, random_state=0, backend=backend,
                              dtype="float64",
                              batch_size=7, momentum=0.5, alpha=1e-3).fit(X, y)
    W, b = np.zeros((4, 12)), np.zeros(4)
    order = epoch_order(len(y), model._state.seed, 0)
    ref.sgd_epoch_reference(X, y, W, b, order, lr=0.1, alpha=1e-3, batch_size=7,
                            momentum=0.5, velocity_W=np.zeros_like(W), velocity_b=np.zeros(4))
    np.testing.assert_allclose(model.coef_, W, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(model.intercept_, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_bitwise_identical_for_any_thread_count_and_rerun(backend, blobs, momentum, nesterov):
    X, y = blobs
    runs = [_fit(X, y, backend=backend, n_threads=t, momentum=momentum,
                 nesterovs_momentum=nesterov, batch_size=64).coef_ for t in (1, 2, 4, 2)]
    for coef in runs[1:]:
        assert np.array_equal(coef, runs[0])


def test_compiled_backends_agree(blobs):
    from conftest import FAST_DENSE, require_backend

    compiled = [require_backend(info.name) for info in FAST_DENSE if info.auto_rank is not None]
    assert len(compiled) >= 2  # a missing one failed above (unless explicitly allowed)
    X, y = blobs
    a, b = (_fit(X, y, backend=name, dtype="float64").coef_ for name in compiled)
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_uint8_with_input_scale_equals_scaled_floats():
    rng = np.random.default_rng(0)
    X8 = rng.integers(0, 256, (300, 20), dtype=np.uint8)
    y = (X8[:, 0] > 128).astype(int) + (X8[:, 1] > 128)
    a = _fit(X8, y, input_scale=1 / 255, dtype="float64")
    b = _fit(X8.astype(np.float64) / 255, y, dtype="float64")
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(a.predict(X8), b.predict(X8.astype(np.float64) / 255))


def test_string_labels_and_sample_weight(blobs):
    X, y = blobs
    names = np.array(["ankle boot", "bag", "coat", "dress"])[y]
    model = _fit(X, names)
    assert list(model.classes_) == ["ankle boot", "bag", "coat", "dress"]
    assert set(model.predict(X)) <= set(model.classes_)
    # Zero weights: the exact optimum equals the one of the data without those rows.
    w = np.zeros(len(y))
    w[::2] = 1.0
    params = {"solver": "lbfgs", "alpha": 1e-2, "tol": 1e-10, "max_iter": 1000,
              "dtype": "float64"}
    weighted = SoftmaxRegression(**params).fit(X, y, sample_weight=w)
    dropped = SoftmaxRegression(**params).fit(X[::2], y[::2])
    np.testing.assert_allclose(weighted.coef_, dropped.coef_, rtol=1e-5, atol=1e-6)
    balanced = _fit(X, y, class_weight="balanced")
    assert balanced.score(X, y) > 0.8


def test_early_stopping_restores_the_best_epoch(blobs):
    X, y = blobs
    model = _fit(X, y, early_stopping=True, max_iter=60, n_iter_no_change=3, tol=1e-3,
                 learning_rate="constant", learning_rate_init=0.5)
    assert model.stop_reason_ in ("early_stopping", "max_iter")
    curve = model.validation_loss_curve_
    assert len(curve) == model.n_iter_ == len(model.validation_scores_)
    assert model.best_loss_ == min(curve)
    # the restored weights give the best validation loss, not the last one
    best_epoch = int(np.argmin(curve))
    assert best_epoch < len(curve) - 1 or model.stop_reason_ == "max_iter"


def test_eval_set_records_validation_without_early_stopping(blobs):
    X, y = blobs
    seen = []
    model = SoftmaxRegression(solver="sgd", max_iter=3, random_state=0).fit(
        X[:400], y[:400], eval_set=(X[400:], y[400:]), on_epoch=seen.append)
    assert [r["epoch"] for r in seen] == [1, 2, 3]
    assert len(model.validation_scores_) == 3 and all(0 <= s <= 1 for s in model.validation_scores_)


def test_divergence_names_the_epoch_and_suggests_a_smaller_rate(blobs):
    X, y = blobs
    model = SoftmaxRegression(solver="sgd", learning_rate_init=1e30, learning_rate="constant",
                              max_iter=5,
                              random_state=0)
    with pytest.raises(TrainingDivergedError, match=r"epoch 1.*smaller learning_rate_init"):
        model.fit(X * 1e10, y)
    assert not hasattr(model, "coef_")


@pytest.mark.parametrize("schedule", ["constant", "invscaling", "adaptive", "step"])
def test_learning_rate_schedules(blobs, schedule):
    X, y = blobs
    stalls = schedule == "adaptive"  # tol=10: no epoch counts as progress, so the rate drops
    model = _fit(X, y, learning_rate=schedule, max_iter=6, tol=10.0 if stalls else 0.0,
                 n_iter_no_change=1 if stalls else 10)
    rates = [r["learning_rate"] for r in model.history_]
    if schedule == "constant":
        assert len(set(rates)) == 1
    elif schedule == "invscaling":
        assert all(a > b for a, b in zip(rates, rates[1:], strict=False))
    elif schedule == "adaptive":
        assert rates[2] == pytest.approx(rates[1] / 5) and rates[-1] < rates[2]
    else:
        assert rates[:4] == [0.1, 0.1, 0.05, 0.05]


def test_warm_start_and_partial_fit(blobs):
    X, y = blobs
    model = _fit(X, y, max_iter=2, warm_start=True)
    first = model.coef_.copy()
    model.fit(X, y)
    assert model.n_iter_ == 4 and not np.array_equal(model.coef_, first)
    online = SoftmaxRegression(solver="sgd", random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        online.partial_fit(X, y)
    online.partial_fit(X[:300], y[:300], classes=np.arange(4))
    online.partial_fit(X[300:], y[300:])
    assert online.n_iter_ == 2 and online.t_ == 600
    with pytest.raises(ValueError, match="not in classes"):
        online.partial_fit(X[:5], np.full(5, 9))


def test_lbfgs_reaches_scikit_learns_objective(blobs):
    X, y = blobs
    X = X.astype(np.float64)
    alpha = 1e-2
    ours = SoftmaxRegression(solver="lbfgs", alpha=alpha, tol=1e-10, max_iter=2000,
                             dtype="float64").fit(X, y)
    sk = LogisticRegression(C=1.0 / (len(y) * alpha), tol=1e-12, max_iter=5000).fit(X, y)
    ours_obj = ours.objective(X, y)
    sk_copy = SoftmaxRegression(alpha=alpha, dtype="float64")
    sk_copy.coef_, sk_copy.intercept_ = sk.coef_, sk.intercept_
    sk_copy.classes_, sk_copy.n_features_in_ = sk.classes_, X.shape[1]
    assert ours_obj == pytest.approx(sk_copy.objective(X, y), rel=1e-6)


def test_sparse_csr_matches_dense(blobs):
    X, y = blobs
    X = np.where(np.abs(X) > 1.0, X, 0.0).astype(np.float64)
    for solver in ("sgd", "lbfgs"):
        iters = 5 if solver == "sgd" else 300
        dense = _fit(X, y, solver=solver, dtype="float64", max_iter=iters, alpha=1e-3)
        sparse = _fit(sp.csr_matrix(X), y, solver=solver, dtype="float64", max_iter=iters,
                      alpha=1e-3)
        np.testing.assert_allclose(sparse.coef_, dense.coef_, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(sparse.predict_proba(sp.csr_matrix(X)),
                                   dense.predict_proba(X), rtol=1e-8, atol=1e-12)


def test_scikit_learn_tools_work(blobs):
    X, y = blobs
    model = SoftmaxRegression(max_iter=3, random_state=0)
    assert clone(model).get_params() == model.get_params()
    scores = cross_val_score(make_pipeline(StandardScaler(), model), X, y, cv=3)
    assert scores.mean() > 0.8
    search = GridSearchCV(model, {"alpha": [1e-5, 1e-2], "batch_size": [16, 64]}, cv=2)
    search.fit(X, y)
    assert search.best_score_ > 0.8


@pytest.mark.parametrize(
    ("X", "y", "exc", "message"),
    [
        (np.full((4, 2), np.nan), [0, 1, 0, 1], ValueError, "NaN"),
        (np.ones((4, 2)), [1, 1, 1, 1], ValueError, "only one class"),
        (np.ones((4, 2)), [0, 1, 0], ValueError, "inconsistent numbers of samples"),
        (np.ones((0, 2)), [], ValueError, "0 sample"),
        (np.ones((4, 2)), [0.5, 1.5, 0.5, 1.5], ValueError, "continuous"),
    ],
)
def test_bad_training_input(X, y, exc, message):
    with pytest.raises(exc, match=message):
        SoftmaxRegression().fit(X, y)


def test_bad_parameters_and_prediction_input(blobs):
    X, y = blobs
    for params, message in [({"solver": "adam"}, "solver"), ({"batch_size": 0}, "batch_size"),
                            ({"momentum": 1.0}, "momentum"), ({"alpha": -1}, "alpha"),
                            ({"dtype": "int8"}, "dtype"), ({"learning_rate": "x"}, "learning")]:
        with pytest.raises(ValueError, match=message):
            SoftmaxRegression(**params).fit(X, y)
    with pytest.raises(NotFittedError):
        SoftmaxRegression().predict(X)
    model = _fit(X, y)
    with pytest.raises(ValueError, match="features"):
        model.predict(X[:, :5])


def test_save_and_load_round_trip(tmp_path, blobs):
    X, y = blobs
    names = np.array(["a", "b", "c", "d"])[y]
    model = _fit(X, names, input_scale=0.5, alpha=1e-3)
    path = tmp_path / "model.npz"
    assert model.save(path) == str(path)
    loaded = SoftmaxRegression.load(path)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert loaded.get_params() == model.get_params()
    assert loaded.n_iter_ == model.n_iter_
    assert sorted(tmp_path.iterdir()) == [path]  # written atomically, no temporary leftovers
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # permissions of a plain open()
    # a loaded model can keep training
    loaded.set_params(warm_start=True).fit(X, names)


def test_load_rejects_bad_files(tmp_path, blobs):
    X, y = blobs
    path = _fit(X, y).save(tmp_path / "m.npz")
    raw = path_bytes = open(path, "rb").read()
    (tmp_path / "trunc.npz").write_bytes(path_bytes[: len(raw) // 2])
    with pytest.raises(ModelFileError, match="not a readable"):
        SoftmaxRegression.load(tmp_path / "trunc.npz")

    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    tampered = dict(arrays, coef=arrays["coef"] + 1)
    np.savez(tmp_path / "tampered.npz", **tampered)
    with pytest.raises(ModelFileError, match="checksum"):
        SoftmaxRegression.load(tmp_path / "tampered.npz")

    meta = json.loads(str(arrays["meta"]))
    meta["format_version"] = 99
    np.savez(tmp_path / "future.npz", **dict(arrays, meta=np.array(json.dumps(meta))))
    with pytest.raises(ModelFileError, match="version 99"):
        SoftmaxRegression.load(tmp_path / "future.npz")

    np.savez(tmp_path / "pickle.npz", coef=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(ModelFileError):
        SoftmaxRegression.load(tmp_path / "pickle.npz")
    with zipfile.ZipFile(tmp_path / "empty.npz", "w"):
        pass
    with pytest.raises(ModelFileError):
        SoftmaxRegression.load(tmp_path / "empty.npz")


def test_max_iter_warning_only_when_verbose(blobs):
    X, y = blobs
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        _fit(X, y, max_iter=1)


@pytest.mark.parametrize("solver", ["sgd", "lbfgs"])
def test_non_finite_X_is_a_clear_error_and_keeps_a_warm_model(blobs, solver):
    """fit skips scikit-learn's separate NaN scan; the first pass over X catches NaN instead."""
    X, y = blobs
    X = X.astype(np.float32)
    model = _fit(X, y, max_iter=2, solver=solver, warm_start=True)
    before = model.coef_.copy(), model.intercept_.copy()
    for bad in (np.nan, np.inf):
        Xb = X.copy()
        Xb[7, 3] = bad
        with pytest.raises(ValueError, match="NaN or infinity"):
            model.fit(Xb, y)
        np.testing.assert_array_equal(model.coef_, before[0])
        np.testing.assert_array_equal(model.intercept_, before[1])
        with pytest.raises(ValueError, match="NaN|infinity"):
            SoftmaxRegression(solver=solver).fit(Xb, y)
        if solver == "sgd":
            with pytest.raises(ValueError, match="NaN or infinity"):
                model.partial_fit(Xb, y)
            np.testing.assert_array_equal(model.coef_, before[0])


def test_lbfgs_runs_its_own_blas_calls_on_one_thread():
    # L-BFGS-B's history products go through BLAS between kernel calls; with BLAS threads
    # those threads spin on the other core afterwards, and the next kernel call saw a busy
    # machine and fell back to one thread (probe evaluations at 160 ms instead of 90). So the
    # optimizer runs under a one-thread BLAS limit; its callback sees that limit.
    from types import SimpleNamespace

    from threadpoolctl import threadpool_info

    from softmax_fast._training.lbfgs import run_lbfgs
    from softmax_fast.backends import get_kernels

    X, y = make_classification(200, 8, n_informative=5, n_classes=3, random_state=0)
    seen = []

    def callback(iteration, loss):
        seen.append({info["filepath"]: info["num_threads"] for info in threadpool_info()
                     if info["user_api"] == "blas"})

    state = SimpleNamespace(coef=np.zeros((3, 8)), intercept=np.zeros(3), history=[])
    n_iter, _ = run_lbfgs(get_kernels("reference", "dense"), state, X, 1.0,
                          y.astype(np.intp), None, 1e-3, 1, max_iter=5, tol=0.0,
                          callback=callback)
    assert n_iter >= 1 and seen
    assert all(threads == 1 for pools in seen for threads in pools.values()), seen


def test_newton_shares_its_products_among_threads_with_the_same_bits():
    # The Hessian-vector products run chunk by chunk on a pool of n_threads threads of our
    # own, each BLAS call on one thread (BLAS's own threads spin between calls and slow the
    # fused gradient); the chunks' partials are added in chunk order, so 1 and 2 threads
    # agree bitwise, and the work does reach several threads.
    import threading
    from types import SimpleNamespace

    from threadpoolctl import threadpool_info

    from softmax_fast._training import newton
    from softmax_fast.backends import get_kernels

    X, y = make_classification(3 * newton._CHUNK_ROWS + 100, 12, n_informative=6,
                               n_classes=4, random_state=1)
    X = X.astype(np.float32)
    workers, blas_threads = set(), []
    probabilities = newton._Hessian._probabilities

    def watched(self, Xc):
        workers.add(threading.get_ident())
        blas_threads.extend(info["num_threads"] for info in threadpool_info()
                            if info["user_api"] == "blas")
        return probabilities(self, Xc)

    results = []
    for n_threads in (1, 2):
        state = SimpleNamespace(coef=np.zeros((4, 12), np.float32),
                                intercept=np.zeros(4, np.float32), history=[])
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(newton._Hessian, "_probabilities", watched)
            workers.clear()
            newton.run_newton(get_kernels("reference", "dense"), state, X, 1.0,
                              y.astype(np.intp), None, 1e-3, n_threads, max_iter=4, tol=0.0)
        results.append((state.coef.copy(), state.intercept.copy(), len(workers)))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    assert results[0][2] == 1 and results[1][2] == 2
    assert blas_threads and set(blas_threads) == {1}
