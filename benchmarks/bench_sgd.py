"""One SGD epoch on the real Fashion-MNIST training set (60,000 x 784, 10 classes).

    pytest benchmarks/bench_sgd.py --benchmark-json=sgd.json
    python benchmarks/report.py sgd.json

One group per (X dtype, batch size) so that every ratio is read within one run: the plain
NumPy float32 loop of benchmarks/baselines.py (``numpy``), the float64 reference (batch 1024
only: it takes seconds per epoch), and each compiled backend with 1 and 2 threads
(``numba-1t``, ``numba-2t``, ...). X is either float32 scaled to [0, 1] or the raw uint8 pixels
with ``x_scale = 1/255``. Every implementation sees the same shuffled order; the weights keep
training from one round to the next, which does not change the work per epoch. No timing is
asserted; benchmarks/report.py gives the speed-ups over NumPy (``x base``).
"""


import numpy as np
import pytest
from baselines import numpy_sgd_epoch
from harness import fashion_mnist, linear_flops, our_backends, rounds, size

from softmax_fast.backends import get_backend

pytestmark = pytest.mark.fashion

COMPILED = our_backends()
BATCHES = size([32, 256, 1024], [32, 1024])
THREADS = [1, 2]
LR, ALPHA = 0.01, 1e-4


@pytest.fixture(scope="module")
def fashion():
    X8, y, _, _ = fashion_mnist()
    X32 = X8.astype(np.float32) / np.float32(255)
    order = np.random.default_rng(0).permutation(len(y)).astype(np.intp)
    return {"uint8": (X8, 1.0 / 255), "float32": (X32, 1.0)}, y, order


def _fresh_weights(dtype=np.float32):
    coef = np.zeros((10, 784), dtype=dtype)
    intercept = np.zeros(10, dtype=dtype)
    return coef, intercept, np.zeros_like(coef), np.zeros_like(intercept)


IMPLS = ["numpy", "reference"] + [f"{b}-{t}t" for b in COMPILED for t in THREADS]


@pytest.mark.parametrize("batch_size", BATCHES, ids=lambda b: f"b{b}")
@pytest.mark.parametrize("xdtype", ["float32", "uint8"])
@pytest.mark.parametrize("impl", IMPLS)
def test_sgd_epoch(benchmark, fashion, xdtype, batch_size, impl):
    data, y, order = fashion
    X, x_scale = data[xdtype]
    benchmark.group = f"sgd_epoch fashion-mnist X {xdtype} batch {batch_size}"
    benchmark.extra_info.update(impl=impl, n_samples=len(y), batch_size=batch_size,
                                flops=linear_flops(len(y), X.shape[1], 10))
    if impl == "reference":
        if batch_size != 1024:
            pytest.skip("the float64 reference is timed at batch 1024 only (seconds per epoch)")
        kernel = get_backend("reference").sgd_epoch
        coef, intercept, vc, vb = _fresh_weights(np.float64)
        args = (X, x_scale, y, None, order, coef, intercept, vc, vb, LR, ALPHA, 0.0, False,
                batch_size, 1)
        loss = benchmark.pedantic(kernel, args, rounds=rounds(2), iterations=1)
    elif impl == "numpy":
        coef, intercept, _, _ = _fresh_weights()
        args = (X, x_scale, y, order, coef, intercept, LR, ALPHA, batch_size)
        loss = benchmark.pedantic(numpy_sgd_epoch, args, rounds=rounds(5), iterations=1,
                                  warmup_rounds=1)
    else:
        name, threads = impl.rsplit("-", 1)
        n_threads = int(threads[:-1])
        kernel = get_backend(name).sgd_epoch
        coef, intercept, vc, vb = _fresh_weights()
        args = (X, x_scale, y, None, order, coef, intercept, vc, vb, LR, ALPHA, 0.0, False,
                batch_size, n_threads)
        benchmark.extra_info.update(n_threads=n_threads, ours=True)
        loss = benchmark.pedantic(kernel, args, rounds=rounds(11), iterations=1,
                                  warmup_rounds=1)
    assert np.isfinite(loss)
