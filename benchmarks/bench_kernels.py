"""Kernel micro-benchmarks: each group compares the float64 reference, plain NumPy float32
(benchmarks/baselines.py, the baseline of report.py's ``x base``), our backends, and
(softmax-CE groups) a ``np.copyto`` of the same bytes for the bandwidth comparison.

    pytest benchmarks/bench_kernels.py --benchmark-json=kernels.json
    python benchmarks/report.py kernels.json

report.py adds the speed-ups over NumPy, the GB/s and the % of the copy of the same bytes
(``% copy``, often cache-resident) and of the 256 MiB copy of ``machine: copy bandwidth``
(``% mem``, imported from harness.py). Backends use the benchmarks' thread count (all CPUs).

The groups ``numba vs cython, interleaved: ...`` time the Numba call of each shape with the
Cython call run just before every round (harness.paired): the two see the machine in the
same state, which the rows of the groups above (one implementation's rounds, then the next
one's) do not on a virtual machine whose speed drifts. ``extra_info["numba_over_cython"]``
is the median of the rounds' ratios, the figure "Numba within 1.5x of Cython" is judged by.
"""

import statistics

import numpy as np
import pytest
from baselines import numpy_linear_softmax_ce, numpy_softmax_ce
from harness import (
    bench_threads,
    linear_flops,
    our_backends,
    paired,
    record,
    size,
    test_copy_bandwidth,  # noqa: F401  (collected here: this run's memory bandwidth)
)

from softmax_fast.backends import get_backend

N_THREADS = bench_threads()
COMPILED = our_backends()
#: (n, c, logit scale): scale 3 is a trained model's spread; scale 60 puts about half of the
#: logits more than 87 below their row's max, as at weak regularization, where an exp that
#: is not flushed makes subnormal numbers (see kernels/README.md, "No subnormal numbers")
CE_SHAPES = size([(65536, 10, 3), (8192, 1000, 3), (512, 32000, 3), (65536, 10, 60)],
                 [(4096, 10, 3), (64, 1000, 3), (4096, 10, 60)])
BATCHES = size([32, 256, 1024], [32])
N_FEATURES, N_CLASSES = 784, 10


def _rng():
    return np.random.default_rng(0)


# ------------------------------------------------------------------ softmax cross-entropy
@pytest.fixture(scope="module", params=CE_SHAPES,
                ids=lambda s: f"{s[0]}x{s[1]}" + ("" if s[2] == 3 else f"-wide{s[2]}"))
def ce_data(request):
    n, c, scale = request.param
    rng = _rng()
    logits = (rng.standard_normal((n, c)) * scale).astype(np.float32)
    y = rng.integers(0, c, n).astype(np.intp)
    return logits, y, "" if scale == 3 else f", logits x{scale}"


@pytest.mark.parametrize("impl", ["reference", "numpy", "copy", *COMPILED])
def test_softmax_ce(benchmark, ce_data, impl):
    logits, y, spread = ce_data
    n, c = logits.shape
    out = np.empty_like(logits)
    benchmark.group = f"softmax_ce {n}x{c} float32{spread}"
    benchmark.extra_info.update(impl=impl, bytes=2 * logits.nbytes, n_threads=N_THREADS,
                                role="copy" if impl == "copy" else None,
                                ours=impl in COMPILED)
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
    benchmark.extra_info.update(impl=impl, n_threads=N_THREADS, ours=impl in COMPILED,
                                flops=linear_flops(n, N_FEATURES, N_CLASSES))
    if impl == "numpy":
        loss = benchmark(numpy_linear_softmax_ce, X, x_scale, W, b, y, 1e-4)[0]
    else:
        kernel = get_backend(impl).linear_softmax_ce
        gW, gb = np.empty_like(W), np.empty_like(b)
        args = (X, x_scale, W, b, y, None, 1e-4, gW, gb, N_THREADS)
        kernel(*args)  # warm-up
        loss = benchmark(kernel, *args)
    assert np.isfinite(loss)


# ------------------------------------------------------------------ Numba against Cython
BOTH = {"numba", "cython"} <= set(COMPILED)
PAIRED_ROUNDS = 200


def _numba_against_cython(benchmark, kernel_args, group):
    """Numba's call of ``kernel_args`` (name, args) timed with Cython's before each round."""
    name, args = kernel_args
    numba_kernel = getattr(get_backend("numba"), name)
    cython_kernel = getattr(get_backend("cython"), name)
    numba_kernel(*args), cython_kernel(*args)  # warm-up
    benchmark.group = f"numba vs cython, interleaved: {group}"
    benchmark.extra_info.update(impl="numba (cython before each round)", ours=True,
                                n_threads=N_THREADS)
    _, _, numba_seconds, cython_seconds = paired(
        benchmark, lambda: numba_kernel(*args), lambda: cython_kernel(*args),
        count=PAIRED_ROUNDS)
    ratios = [a / b for a, b in zip(numba_seconds, cython_seconds, strict=True)]
    record(benchmark, numba_us=1e6 * statistics.median(numba_seconds),
           cython_us=1e6 * statistics.median(cython_seconds),
           numba_over_cython=statistics.median(ratios), pairs=len(ratios))


@pytest.mark.skipif(not BOTH, reason="needs the numba and the cython backend")
def test_softmax_ce_numba_against_cython(benchmark, ce_data):
    logits, y, spread = ce_data
    n, c = logits.shape
    out = np.empty_like(logits)
    _numba_against_cython(benchmark, ("softmax_ce", (logits, y, None, out, N_THREADS)),
                          f"softmax_ce {n}x{c} float32{spread}")


@pytest.mark.skipif(not BOTH, reason="needs the numba and the cython backend")
@pytest.mark.parametrize("xdtype", ["float32", "uint8"])
def test_linear_softmax_ce_numba_against_cython(benchmark, linear_data, xdtype):
    X8, W, b, y = linear_data
    X, x_scale = (X8, 1 / 255) if xdtype == "uint8" else (
        (X8 / np.float32(255)).astype(np.float32), 1.0)
    gW, gb = np.empty_like(W), np.empty_like(b)
    args = (X, x_scale, W, b, y, None, 1e-4, gW, gb, N_THREADS)
    _numba_against_cython(benchmark, ("linear_softmax_ce", args),
                          f"linear_softmax_ce batch {X.shape[0]} X {xdtype}")
