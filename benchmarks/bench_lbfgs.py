"""Full-batch L-BFGS against scikit-learn's LogisticRegression on the same objective.

Objective: mean cross-entropy + (alpha/2)||W||^2, which is scikit-learn's with
C = 1 / (n_samples * alpha). Both solve to a tight tolerance; the benchmark records the time and
``extra_info`` holds the objective each reached (same to ~1e-6 relative).

    pytest benchmarks/bench_lbfgs.py --benchmark-only
"""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from softmax_fast import SoftmaxRegression
from softmax_fast.backends import available_backends
from softmax_fast.datasets import load_dataset

ALPHA = 1e-4
N_ROWS = 20_000  # a subset keeps scikit-learn's run under a minute on 2 cores


@pytest.fixture(scope="module")
def data():
    try:
        X, y, _, _ = load_dataset("fashion-mnist", download=False)
    except Exception:
        X, y, _, _ = load_dataset("fashion-mnist-sample")
    return X[:N_ROWS], y[:N_ROWS]


def _objective(coef, intercept, X, y):
    model = SoftmaxRegression(alpha=ALPHA, dtype="float64", input_scale=1 / 255)
    model.coef_, model.intercept_ = coef, intercept
    model.classes_, model.n_features_in_ = np.arange(coef.shape[0]), X.shape[1]
    return model.objective(X, y)


@pytest.mark.benchmark(group="lbfgs-vs-sklearn")
@pytest.mark.parametrize("solver", ["sklearn"] + [f"softmax-fast-{b}" for b in available_backends()
                                                  if b != "reference"])
def test_lbfgs(benchmark, data, solver):
    X, y = data
    if solver == "sklearn":
        Xf = X / 255.0

        def fit():
            return LogisticRegression(C=1.0 / (len(y) * ALPHA), tol=1e-8, max_iter=2000).fit(Xf, y)
    else:
        backend = solver.rsplit("-", 1)[1]

        def fit():
            return SoftmaxRegression(solver="lbfgs", alpha=ALPHA, tol=1e-6, max_iter=2000,
                                     input_scale=1 / 255, backend=backend).fit(X, y)

    model = benchmark.pedantic(fit, rounds=2, iterations=1)
    benchmark.extra_info["objective"] = _objective(model.coef_, model.intercept_, X, y)
    benchmark.extra_info["n_iter"] = int(np.max(model.n_iter_))
