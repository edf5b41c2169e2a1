"""Full-batch L-BFGS against scikit-learn's LogisticRegression on the same objective.

Objective: mean cross-entropy + (alpha/2)||W||^2, which is scikit-learn's with
C = 1 / (n_samples * alpha). Both solve to a tight tolerance; the benchmark records the time and
``extra_info`` holds the objective each reached (same to ~1e-6 relative). Both run on the
benchmarks' thread count. For time to the *same* objective at probe scale, against PyTorch and
scikit-learn-intelex too, see bench_probe.py.

    pytest benchmarks/bench_lbfgs.py --benchmark-json=lbfgs.json
"""

import numpy as np
import pytest
from harness import bench_threads, our_backends, rounds, size
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from softmax_fast import SoftmaxRegression
from softmax_fast.datasets import load_dataset

#: Our backends that ``auto`` may pick, the oracle aside (not the opt-in builds cython-<isa>).
OURS = our_backends()

ALPHA = 1e-4
N_ROWS = size(20_000, 1_000)  # a subset keeps scikit-learn's run under a minute on 2 cores
MAX_ITER = size(2000, 50)


@pytest.fixture(scope="module")
def data():
    try:
        X, y, _, _ = load_dataset("fashion-mnist", download=False)
    except Exception:  # the bundled sample: fewer rows, the same shape of problem
        X, y, _, _ = load_dataset("fashion-mnist-sample")
    return X[:N_ROWS], y[:N_ROWS]


def _objective(coef, intercept, X, y):
    model = SoftmaxRegression(alpha=ALPHA, dtype="float64", input_scale=1 / 255)
    model.coef_, model.intercept_ = coef, intercept
    model.classes_, model.n_features_in_ = np.arange(coef.shape[0]), X.shape[1]
    return model.objective(X, y)


@pytest.mark.benchmark(group="lbfgs-vs-sklearn")
@pytest.mark.parametrize("solver", ["sklearn"] + [f"softmax-fast-{b}" for b in OURS])
def test_lbfgs(benchmark, data, solver):
    X, y = data
    if solver == "sklearn":
        Xf = X / 255.0

        def fit():
            with threadpool_limits(limits=bench_threads()):
                return LogisticRegression(C=1.0 / (len(y) * ALPHA), tol=1e-8,
                                          max_iter=MAX_ITER).fit(Xf, y)
        benchmark.extra_info["peer"] = True
    else:
        backend = solver.rsplit("-", 1)[1]

        def fit():
            return SoftmaxRegression(solver="lbfgs", alpha=ALPHA, tol=1e-6, max_iter=MAX_ITER,
                                     input_scale=1 / 255, backend=backend,
                                     n_threads=bench_threads()).fit(X, y)
        benchmark.extra_info["ours"] = True

    benchmark.extra_info["impl"] = solver
    model = benchmark.pedantic(fit, rounds=rounds(2), iterations=1)
    benchmark.extra_info["objective"] = _objective(model.coef_, model.intercept_, X, y)
    benchmark.extra_info["n_iter"] = int(np.max(model.n_iter_))
