"""SoftmaxRegression.fit on Dask arrays, on a real LocalCluster of worker processes.

The cluster fit must reach the in-memory L-BFGS optimum: the same objective within 1e-6
(relative) in float64 with a tight tolerance.
"""

import os

import dask.array as da
import distributed  # in the test extra: a missing one is a broken install, never a skip
import numpy as np
import pytest
from sklearn.utils.class_weight import compute_sample_weight

from softmax_fast import SoftmaxRegression
from softmax_fast import distributed as cluster_fit

TIGHT = dict(solver="lbfgs", dtype="float64", tol=1e-10, max_iter=1000)


def _data(n=3000, d=20, c=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    X = rng.standard_normal((c, d))[y] + 1.5 * rng.standard_normal((n, d))
    return X, y


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=":0")
    with distributed.Client(cluster) as client:
        yield client
    cluster.close()


def _relative_gap(model, reference, X, y, sample_weight=None):
    """(objective of ``model`` - that of ``reference``) / the latter, on the in-memory data."""
    ours = model.objective(X, y, sample_weight)
    best = reference.objective(X, y, sample_weight)
    return abs(ours - best) / best


def test_multiclass_fit_equals_in_memory_optimum(client):
    X, y = _data()
    labels = np.array(["ant", "bee", "cat", "dog"])[y]  # strings: encoded blockwise
    memory = SoftmaxRegression(**TIGHT).fit(X, labels)
    model = SoftmaxRegression(**TIGHT).fit(da.from_array(X, chunks=(500, 20)),
                                           da.from_array(labels, chunks=500))
    assert _relative_gap(model, memory, X, labels) < 1e-6
    np.testing.assert_allclose(model.coef_, memory.coef_, atol=1e-6)
    assert model.classes_.tolist() == ["ant", "bee", "cat", "dog"]
    assert model.solver_ == "lbfgs" and model.n_features_in_ == 20
    assert model.alpha_ == memory.alpha_ and model.n_iter_ > 0
    assert model.loss_curve_[-1] == pytest.approx(memory.loss_curve_[-1], rel=1e-6)


def test_binary_with_weights_and_class_weight(client, monkeypatch):
    # weights scattered to the workers instead of travelling inside the tasks
    monkeypatch.setattr(cluster_fit, "_EMBED_BYTES", 0)
    X, y = _data(n=2400, c=2, seed=1)
    sw = np.random.default_rng(2).uniform(0.2, 3.0, len(y))
    params = dict(TIGHT, class_weight={0: 1.0, 1: 2.5})
    memory = SoftmaxRegression(**params).fit(X, y, sample_weight=sw)
    model = SoftmaxRegression(**params).fit(da.from_array(X, chunks=(400, 20)),
                                            da.from_array(y, chunks=400),
                                            sample_weight=da.from_array(sw, chunks=400))
    combined = sw * compute_sample_weight(params["class_weight"], y)
    assert model.coef_.shape == (1, 20) and model.intercept_.shape == (1,)
    assert model.alpha_ == pytest.approx(memory.alpha_, rel=1e-12)
    assert _relative_gap(model, memory, X, y, combined) < 1e-6


def test_balanced_class_weight_and_numpy_weights(client):
    X, y = _data(n=2000, c=3, seed=3)
    y[:1500] = 0  # unbalanced, so "balanced" matters
    sw = np.random.default_rng(4).uniform(0.5, 2.0, len(y))
    params = dict(TIGHT, class_weight="balanced")
    memory = SoftmaxRegression(**params).fit(X, y, sample_weight=sw)
    # y and the weights as NumPy arrays: put on X's chunks
    model = SoftmaxRegression(**params).fit(da.from_array(X, chunks=(300, 20)), y,
                                            sample_weight=sw)
    combined = sw * compute_sample_weight("balanced", y)
    assert _relative_gap(model, memory, X, y, combined) < 1e-6


def test_uneven_chunks_misaligned_y_and_feature_chunks(client):
    X, y = _data(n=3000, c=5, seed=5)
    X8 = np.clip(X * 40 + 128, 0, 255).astype(np.uint8)  # uint8 stays uint8 on the workers
    params = dict(TIGHT, input_scale=1 / 255)
    memory = SoftmaxRegression(**params).fit(X8, y)
    dX = da.from_array(X8, chunks=((700, 300, 1200, 50, 750), (8, 12)))  # feature chunks too
    dy = da.from_array(y, chunks=1000)  # rows split elsewhere than X's
    model = SoftmaxRegression(**params).fit(dX, dy)
    assert _relative_gap(model, memory, X8, y) < 1e-6


def test_predict_and_predict_proba_on_dask_arrays(client):
    X, y = _data(n=1200, seed=6)
    model = SoftmaxRegression(**TIGHT).fit(X, y)
    dX = da.from_array(X, chunks=(250, 20))
    labels, proba = model.predict(dX), model.predict_proba(dX)
    assert isinstance(labels, da.Array) and isinstance(proba, da.Array)
    np.testing.assert_array_equal(labels.compute(), model.predict(X))
    np.testing.assert_allclose(proba.compute(), model.predict_proba(X), rtol=1e-12)
    assert model.score(dX, da.from_array(y, chunks=250)) == model.score(X, y)


@pytest.mark.parametrize("params", [dict(solver="sgd"), dict(solver="newton-cg"),
                                    dict(early_stopping=True)])
def test_only_lbfgs_runs_on_a_cluster(client, params):
    X, y = _data(n=200)
    with pytest.raises(ValueError, match="Incremental"):
        SoftmaxRegression(**params).fit(da.from_array(X, chunks=100),
                                        da.from_array(y, chunks=100))


def test_nan_in_a_block_is_the_in_memory_error(client):
    X, y = _data(n=1000)
    X[777, 3] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN or infinity"):
        SoftmaxRegression(**TIGHT).fit(X, y)
    with pytest.raises(ValueError, match="Input X contains NaN or infinity"):
        SoftmaxRegression(**TIGHT).fit(da.from_array(X, chunks=(250, 20)),
                                       da.from_array(y, chunks=250))


def test_input_errors(client):
    X, y = _data(n=600)
    dX = da.from_array(X, chunks=(200, 20))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        SoftmaxRegression().fit(dX, da.from_array(y[:500], chunks=100))
    with pytest.raises(ValueError, match="at least 2 classes"):
        SoftmaxRegression().fit(dX, da.zeros(600, chunks=200, dtype=int))
    with pytest.raises(ValueError, match="eval_set"):
        SoftmaxRegression().fit(dX, y, eval_set=(X, y))


def test_warm_start_continues_from_the_optimum(client):
    X, y = _data(n=1500, seed=7)
    dX, dy = da.from_array(X, chunks=(500, 20)), da.from_array(y, chunks=500)
    model = SoftmaxRegression(**TIGHT, warm_start=True).fit(dX, dy)
    first, iterations = model.objective(X, y), model.n_iter_
    model.fit(dX, dy)
    assert model.n_iter_ < iterations
    assert model.objective(X, y) == pytest.approx(first, rel=1e-9)


def test_a_warm_start_measures_the_classes_curvature_where_the_blocks_live(client,
                                                                          monkeypatch):
    # A warm start at a new strength whitens by the classes' curvature at the start; the
    # cluster sums it over the rows an in-memory fit samples, block by block.
    from softmax_fast._training import lbfgs

    monkeypatch.setattr(lbfgs, "WHITENING_ROWS", (700, 700))  # fewer rows than n: sampled
    X, y = _data(n=2500, seed=5)
    weights = np.random.default_rng(6).uniform(0.5, 2.0, len(y))
    seen = []
    original = lbfgs.FeatureWhitening.for_data.__func__

    def recorded(cls, X_, *args, **kwargs):
        whitening = original(cls, X_, *args, **kwargs)
        seen.append(whitening)
        return whitening

    params = dict(TIGHT, tol=1e-6, alpha=1e-3, warm_start=True)
    chunks = (600, 900, 1000)
    dX = da.from_array(X, chunks=(chunks, 20))
    dy, dw = da.from_array(y, chunks=(chunks,)), da.from_array(weights, chunks=(chunks,))
    memory = SoftmaxRegression(**params).fit(X, y, sample_weight=weights)
    model = SoftmaxRegression(**params).fit(dX, dy, sample_weight=dw)
    monkeypatch.setattr(lbfgs.FeatureWhitening, "for_data", classmethod(recorded))
    memory.set_params(alpha=params["alpha"] / 3).fit(X, y, sample_weight=weights)
    model.set_params(alpha=params["alpha"] / 3).fit(dX, dy, sample_weight=dw)
    in_memory, clustered = seen
    assert in_memory.warm and clustered.warm
    np.testing.assert_allclose(clustered.curvature, in_memory.curvature, rtol=1e-4)
    np.testing.assert_allclose(clustered.centre, in_memory.centre, rtol=1e-4, atol=1e-5)
    assert _relative_gap(model, memory, X, y, weights) < 1e-6


def test_partial_fit_under_dask_ml_incremental(client):
    from dask_ml.wrappers import Incremental

    X, y = _data(n=4000, seed=8)
    dX, dy = da.from_array(X, chunks=(500, 20)), da.from_array(y, chunks=500)
    search = Incremental(SoftmaxRegression(solver="sgd", random_state=0),
                         scoring="accuracy")
    search.fit(dX, dy, classes=np.unique(y))
    assert search.estimator_.n_iter_ == 8  # one SGD epoch per block
    assert search.score(dX, dy) > 0.8


def test_a_lost_worker_mid_fit_is_recomputed(client):
    # last in the module: the nanny restarts the killed worker under a new address
    X, y = _data(n=4000, seed=9)
    dX, dy = da.from_array(X, chunks=(500, 20)), da.from_array(y, chunks=500)
    victim = sorted(client.scheduler_info()["workers"])[0]
    killed = []

    def kill_one_worker(evaluation, loss):
        if evaluation == 3 and not killed:
            killed.append(len(client.has_what().get(victim, ())))  # blocks it held
            try:
                client.run(os._exit, 1, workers=[victim])
            except Exception:  # noqa: BLE001 - the worker dies before it can reply
                pass

    model = SoftmaxRegression(**TIGHT)
    cluster_fit.fit(model, dX, dy, callback=kill_one_worker)
    assert killed and killed[0] > 0  # the kill took blocks with it: they were recomputed
    memory = SoftmaxRegression(**TIGHT).fit(X, y)
    assert _relative_gap(model, memory, X, y) < 1e-6
    client.wait_for_workers(2, timeout=60)  # the nanny restarts the dead worker ...
    assert victim not in client.scheduler_info()["workers"]  # ... under a new address


def test_whitening_moments_are_summed_where_the_blocks_live(client, monkeypatch):
    # The cluster estimates the features' second moments from the rows an in-memory fit
    # samples (uneven blocks, weights), so both fits whiten alike and run the same iterates.
    from softmax_fast._training import lbfgs

    monkeypatch.setattr(lbfgs, "WHITENING_ROWS", (700, 700))  # fewer rows than n: sampled
    X, y = _data(n=2500, seed=3)
    X = X * np.geomspace(1.0, 30.0, X.shape[1]) + 2.0  # badly scaled: whitening matters
    weights = np.random.default_rng(4).uniform(0.5, 2.0, len(y))
    seen = []
    original = lbfgs.FeatureWhitening.for_data.__func__

    def recorded(cls, X_, *args, **kwargs):
        whitening = original(cls, X_, *args, **kwargs)
        seen.append((type(X_).__name__, whitening))
        return whitening

    monkeypatch.setattr(lbfgs.FeatureWhitening, "for_data", classmethod(recorded))
    params = dict(TIGHT, tol=1e-8)
    memory = SoftmaxRegression(**params).fit(X, y, sample_weight=weights)
    chunks = (600, 900, 1000)
    model = SoftmaxRegression(**params).fit(
        da.from_array(X, chunks=(chunks, 20)), da.from_array(y, chunks=(chunks,)),
        sample_weight=da.from_array(weights, chunks=(chunks,)))
    (_, in_memory), (kind, clustered) = seen
    assert kind == "ClusterProblem" and in_memory is not None and clustered is not None
    # the same M (L L^T) to float32 precision: blocks are summed in another grouping
    moments = [w.second_moment for w in (clustered, in_memory)]
    assert np.abs(moments[0] - moments[1]).max() <= 1e-5 * np.abs(moments[1]).max()
    assert abs(model.n_iter_ - memory.n_iter_) <= 2
    assert _relative_gap(model, memory, X, y, weights) < 1e-9
