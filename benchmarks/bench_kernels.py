"""Kernel micro-benchmarks: each group compares the float64 reference, plain NumPy float32
(benchmarks/baselines.py), the Cython and Numba backends, and (softmax-CE groups) a
``np.copyto`` of the same bytes for the bandwidth comparison.

    pytest benchmarks/bench_kernels.py --benchmark-only --benchmark-json=kernels.json
    python benchmarks/report.py kernels.json

The table (medians, speed-ups over the reference and NumPy, % of copy bandwidth) is also
printed at the end of the pytest run. Backends use all cores (``n_threads`` = CPU count).
"""

import numpy as np
import pytest
from baselines import numpy_linear_softmax_ce, numpy_softmax_ce

from softmax_fast.backends import available_backends, get_backend, resolve_n_threads

N_THREADS = resolve_n_threads(None)
COMPILED = [b for b in ("cython", "numba") if b in available_backends()]
CE_SHAPES = [(65536, 10), (8192, 1000), (512, 32000)]
BATCHES = [32, 256, 1024]
N_FEATURES, N_CLASSES = 784, 10
LARGE_COPY_BYTES = 256 * 2**20


def _rng():
    return np.random.default_rng(0)


# ------------------------------------------------------------------ softmax cross-entropy
@pytest.fixture(scope="module", params=CE_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def ce_data(request):
    n, c = request.param
    rng = _rng()
    logits = (rng.standard_normal((n, c)) * 3).astype(np.float32)
    y = rng.integers(0, c, n).astype(np.intp)
    return logits, y


@pytest.mark.parametrize("impl", ["reference", "numpy", "copy", *COMPILED])
def test_softmax_ce(benchmark, ce_data, impl):
    logits, y = ce_data
    n, c = logits.shape
    out = np.empty_like(logits)
    benchmark.group = f"softmax_ce {n}x{c} float32"
    benchmark.extra_info.update(impl=impl, bytes=2 * logits.nbytes, n_threads=N_THREADS)
    if impl == "copy":
        benchmark(np.copyto, out, logits)
        return
    if impl == "numpy":
        loss = benchmark(numpy_softmax_ce, logits, y)[0]
    else:
        kernel = get_backend(impl).softmax_ce
        kernel(logits, y, None, out, N_THREADS)  # warm-up (JIT cache load, page faults)
        loss = benchmark(kernel, logits, y, None, out, N_THREADS)
    assert np.isfinite(loss)


def test_large_copy(benchmark):
    """np.copyto of 256 MiB: the machine's memory copy bandwidth (bytes read + written)."""
    src = np.ones(LARGE_COPY_BYTES // 4, np.float32)
    dst = np.empty_like(src)
    benchmark.group = "bandwidth"
    benchmark.extra_info.update(impl="copy-large", bytes=2 * src.nbytes)
    benchmark.pedantic(np.copyto, (dst, src), rounds=10, warmup_rounds=1)


# ------------------------------------------------------------------ linear softmax-CE
@pytest.fixture(scope="module", params=BATCHES, ids=lambda b: f"b{b}")
def linear_data(request):
    n = request.param
    rng = _rng()
    X8 = rng.integers(0, 256, (n, N_FEATURES)).astype(np.uint8)
    W = (rng.standard_normal((N_CLASSES, N_FEATURES)) * 0.01).astype(np.float32)
    b = np.zeros(N_CLASSES, np.float32)
    y = rng.integers(0, N_CLASSES, n).astype(np.intp)
    return X8, W, b, y


@pytest.mark.parametrize("xdtype", ["float32", "uint8"])
@pytest.mark.parametrize("impl", ["reference", "numpy", *COMPILED])
def test_linear_softmax_ce(benchmark, linear_data, xdtype, impl):
    X8, W, b, y = linear_data
    if xdtype == "uint8":
        X, x_scale = X8, 1 / 255
    else:
        X, x_scale = (X8 / np.float32(255)).astype(np.float32), 1.0
    n = X.shape[0]
    benchmark.group = f"linear_softmax_ce batch {n} X {xdtype} (d={N_FEATURES}, c={N_CLASSES})"
    benchmark.extra_info.update(impl=impl, n_threads=N_THREADS)
    if impl == "numpy":
        loss = benchmark(numpy_linear_softmax_ce, X, x_scale, W, b, y, 1e-4)[0]
    else:
        kernel = get_backend(impl).linear_softmax_ce
        gW, gb = np.empty_like(W), np.empty_like(b)
        args = (X, x_scale, W, b, y, None, 1e-4, gW, gb, N_THREADS)
        kernel(*args)  # warm-up
        loss = benchmark(kernel, *args)
    assert np.isfinite(loss)
