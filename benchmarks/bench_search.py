"""Benchmarks of the many-models-per-pass grid search on Fashion-MNIST.

Run: ``pytest benchmarks/bench_search.py`` (the sub-grid comparison and kernel throughput,
a few minutes). The course reports' full grid (4,096 configurations, train 48,000 /
validate 12,000, target <= 5 minutes and >= 84.5 % test accuracy after the refit) runs only
on request: ``SOFTMAX_FAST_FULL_GRID=1 pytest benchmarks/bench_search.py -k full_grid -s``.

Long runs are timed once (``benchmark.pedantic(rounds=1)``); the numbers that matter are
also stored in ``extra_info`` (``--benchmark-json``) and printed.
"""

import os
import time

import numpy as np
import pytest
from harness import SMOKE, fashion_mnist, record, size, timed

from softmax_fast import SoftmaxRegression
from softmax_fast._training.sampling import default_input_scale, stratified_split_indices
from softmax_fast.backends import get_kernels
from softmax_fast.search import grid_search

pytestmark = pytest.mark.fashion

LEARNING_RATES = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2]
ALPHAS = [0.0, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
FULL_GRID = {
    "batch_size": [16, 32, 64, 128, 256, 512, 1024, 2048],
    "learning_rate_init": LEARNING_RATES,
    "max_iter": [5, 10, 15, 20, 25, 30, 35, 40],
    "alpha": ALPHAS,
}
SUB_GRID = size({"batch_size": [64, 256], "learning_rate_init": LEARNING_RATES,
                 "alpha": ALPHAS, "max_iter": [5, 10]},
                {"batch_size": [64], "learning_rate_init": [0.01, 0.1], "alpha": [0.0, 1e-4],
                 "max_iter": [1, 2]})
#: Configurations the one-fit-per-configuration loop times (then extrapolated).
LOOP_SAMPLE = size(16, 2)


@pytest.fixture(scope="module")
def fashion():
    return fashion_mnist()


def _report(benchmark, **info):
    record(benchmark, **info)


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("batch_size", [16, 256, 2048])
def test_multi_epoch_throughput(benchmark, fashion, batch_size, n_threads):
    """One epoch of 64 models over 48,000 samples (the multi-model kernel grid search runs);
    GFLOP/s counts the two products of every model.
    """
    kernels = get_kernels("auto", "multi")
    rows = size(48000, 4096)
    X, y = fashion[0][:rows], fashion[1][:rows].astype(np.intp)
    k, c, d = 64, 10, X.shape[1]
    lr = np.repeat(LEARNING_RATES, 8)
    alpha = np.tile(ALPHAS, 8)
    zeros = np.zeros(k)
    state = (np.zeros((k, c, d), np.float32), np.ones(k), np.zeros((k, c), np.float32),
             None, None)
    scale = default_input_scale(X)
    order = np.random.default_rng(0).permutation(len(y)).astype(np.intp)
    args = (X, scale, y, order, *state, lr, alpha, zeros, zeros.astype(bool), batch_size,
            n_threads)
    kernels.multi_sgd_epoch(*args[:3], order[:4096], *args[4:])  # compile / warm up
    benchmark.group = f"search: multi_sgd_epoch {k} models batch {batch_size}"
    benchmark.extra_info.update(impl=f"{n_threads} thread(s)", baseline=n_threads == 1)
    _, median = timed(benchmark, kernels.multi_sgd_epoch, args=args, count=3, warmup=0)
    flops = 2 * 2 * len(y) * d * k * c
    _report(benchmark, batch_size=batch_size, n_threads=n_threads, flops=flops,
            gflops=round(flops / median / 1e9, 1))


def test_sub_grid_against_one_fit_per_configuration(benchmark, fashion):
    """256 configurations (2 batch sizes x 8 lr x 8 alpha x epochs {5, 10}).

    The one-fit-per-configuration loop (SoftmaxRegression, backend "auto", constant rate,
    each epoch count a separate fit, as a plain grid search would do) is timed on a seeded
    sample of 16 configurations and extrapolated to all 256, in the same run.
    """
    X, y, X_test, y_test = fashion
    benchmark.group = "search: sub-grid"
    benchmark.extra_info.update(impl="grid_search", ours=True)
    result, search_seconds = timed(benchmark, grid_search, args=(X, y, SUB_GRID),
                                   kwargs={"random_state": 0, "refit": False}, count=1,
                                   warmup=0)
    rows = result.results
    sample = np.random.default_rng(0).choice(len(rows), LOOP_SAMPLE, replace=False)
    X_tr, X_va, y_tr, y_va = _split(X, y)
    tic = time.perf_counter()
    for i in sample:
        params = {k: rows[i][k] for k in SUB_GRID}
        SoftmaxRegression(**params, learning_rate="constant", random_state=0,
                          input_scale=default_input_scale(X)).fit(X_tr, y_tr, eval_set=(X_va, y_va))
    loop_seconds = (time.perf_counter() - tic) / len(sample) * len(rows)
    _report(benchmark, search_seconds=round(search_seconds, 1),
            loop_seconds_extrapolated=round(loop_seconds, 1),
            ratio=round(loop_seconds / search_seconds, 1), best=result.best_params_,
            best_val_accuracy=result.best_score_)


def _split(X, y):
    """The split grid_search makes with validation_fraction=0.2 and random_state=0."""
    idx_tr, idx_va = stratified_split_indices(y, 0.2, 0)
    return X[idx_tr], X[idx_va], y[idx_tr], y[idx_va]


@pytest.mark.skipif(os.environ.get("SOFTMAX_FAST_FULL_GRID") != "1" or SMOKE,
                    reason="the full 4,096-configuration grid runs only with "
                           "SOFTMAX_FAST_FULL_GRID=1 (several minutes)")
def test_full_grid(benchmark, fashion, tmp_path):
    """The course reports' grid: 8 batch sizes x 8 lr x 8 epoch counts x 8 alpha."""
    X, y, X_test, y_test = fashion
    benchmark.group = "search: full grid"
    benchmark.extra_info.update(impl="grid_search (4,096 configurations)", ours=True)
    done = []
    result, total_seconds = timed(
        benchmark, grid_search, args=(X, y, FULL_GRID),
        kwargs={"random_state": 0, "X_test": X_test, "y_test": y_test,
                "results_path": tmp_path / "full_grid.csv",
                "progress": lambda d, t: done.append((d, t, time.perf_counter()))},
        count=1, warmup=0)
    assert len(result.results) == 4096
    _report(benchmark, search_seconds=round(result.seconds, 1),
            total_seconds_with_refit=round(total_seconds, 1),
            diverged=sum(r["status"] == "diverged" for r in result.results),
            best=result.best_params_, best_val_accuracy=result.best_score_,
            test_accuracy=result.test_accuracy, test_loss=result.test_loss,
            accuracy_target=0.845, meets_accuracy_target=result.test_accuracy >= 0.845)
