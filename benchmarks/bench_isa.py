"""The dense kernels on every SIMD build of the Cython extension this CPU runs.

    pytest benchmarks/bench_isa.py --benchmark-json=isa.json
    python benchmarks/report.py isa.json --group isa

The builds are the registry's opt-in backends ``cython-baseline`` (x86-64-v2), ``cython-avx2``
and ``cython-avx512`` — those that import here, i.e. that this CPU runs. Each kernel and shape
is one group whose rows are the builds; the ``x base`` column is the speed-up over the
baseline build, and the build ``backend="cython"`` picks on this CPU
(``kernels/cython_backend.ISA``; ``SOFTMAX_FAST_ISA`` forces one) is marked ``(chosen)``.

Shapes: Fashion-MNIST's (60,000 x 784 uint8, 10 classes) for ``softmax_ce`` (its logits),
``linear_softmax_ce`` and one SGD epoch (batch 32), and one BLAS-path shape
(``linear_softmax_ce`` at n=4096, d=2048, c=1000, float32), where the build matters less: the
products run in BLAS.
"""

import numpy as np
import pytest
from harness import bench_threads, linear_flops, record, size, timed

from softmax_fast.backends import available_backends, get_kernels, registered

FASHION = size((60000, 784, 10), (2048, 784, 10))
BLAS_SHAPE = size((4096, 2048, 1000), (256, 64, 100))
ALPHA, LR = 1e-4, 0.01


def isa_builds():
    """Registry names of the Cython builds this CPU runs (opt-in backends exposing ``ISA``)."""
    importable = available_backends("dense")
    return [info.name for info in registered("dense") if info.auto_rank is None
            and info.name in importable and hasattr(get_kernels(info.name), "ISA")]


def chosen_isa():
    try:
        from softmax_fast.kernels import cython_backend
    except ImportError:
        return None
    return cython_backend.ISA


BUILDS = isa_builds()


def _label(benchmark, name, kernel, **info):
    isa = get_kernels(name).ISA
    chosen = isa == chosen_isa()
    benchmark.group = f"isa: {kernel}"
    record(benchmark, show=False, impl=f"{name}{' (chosen)' if chosen else ''}", isa=isa,
           chosen=chosen, baseline=isa == "baseline", ours=True, n_threads=bench_threads(),
           **info)


@pytest.fixture(scope="module")
def fashion_shaped():
    n, d, c = FASHION
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (n, d), dtype=np.uint8)
    y = rng.integers(0, c, n).astype(np.intp)
    return X, y


@pytest.mark.skipif(not BUILDS, reason="no ISA build of the Cython kernels imports here")
@pytest.mark.parametrize("name", BUILDS)
def test_softmax_ce(benchmark, name):
    n, _, c = FASHION
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((n, c), dtype=np.float32) * 3
    y = rng.integers(0, c, n).astype(np.intp)
    out = np.empty_like(logits)
    _label(benchmark, name, f"softmax_ce {n}x{c} float32", bytes=2 * logits.nbytes)
    loss, _ = timed(benchmark, get_kernels(name).softmax_ce,
                    args=(logits, y, None, out, bench_threads()), count=50)
    assert np.isfinite(loss)


@pytest.mark.skipif(not BUILDS, reason="no ISA build of the Cython kernels imports here")
@pytest.mark.parametrize("name", BUILDS)
def test_linear_fashion(benchmark, name, fashion_shaped):
    X, y = fashion_shaped
    n, d, c = FASHION
    W, b = np.zeros((c, d), np.float32), np.zeros(c, np.float32)
    _label(benchmark, name, f"linear_softmax_ce n={n} d={d} c={c} X uint8",
           flops=linear_flops(n, d, c))
    args = (X, 1 / 255, W, b, y, None, ALPHA, np.empty_like(W), np.empty_like(b),
            bench_threads())
    loss, _ = timed(benchmark, get_kernels(name).linear_softmax_ce, args=args, count=20)
    assert np.isfinite(loss)


@pytest.mark.skipif(not BUILDS, reason="no ISA build of the Cython kernels imports here")
@pytest.mark.parametrize("name", BUILDS)
def test_sgd_epoch_fashion(benchmark, name, fashion_shaped):
    X, y = fashion_shaped
    n, d, c = FASHION
    order = np.random.default_rng(0).permutation(n).astype(np.intp)
    W, b = np.zeros((c, d), np.float32), np.zeros(c, np.float32)
    _label(benchmark, name, f"sgd_epoch n={n} d={d} c={c} X uint8 batch 32",
           flops=linear_flops(n, d, c))
    args = (X, 1 / 255, y, None, order, W, b, np.zeros_like(W), np.zeros_like(b), LR, ALPHA,
            0.0, False, 32, bench_threads())
    loss, _ = timed(benchmark, get_kernels(name).sgd_epoch, args=args, count=10)
    assert np.isfinite(loss)


@pytest.mark.skipif(not BUILDS, reason="no ISA build of the Cython kernels imports here")
@pytest.mark.parametrize("name", BUILDS)
def test_linear_blas_shape(benchmark, name):
    n, d, c = BLAS_SHAPE
    rng = np.random.default_rng(0)
    X = rng.random((n, d), dtype=np.float32)
    W = rng.standard_normal((c, d), dtype=np.float32) * 0.01
    b = np.zeros(c, np.float32)
    y = rng.integers(0, c, n).astype(np.intp)
    _label(benchmark, name, f"linear_softmax_ce n={n} d={d} c={c} float32 (BLAS path)",
           flops=linear_flops(n, d, c))
    args = (X, 1.0, W, b, y, None, ALPHA, np.empty_like(W), np.empty_like(b), bench_threads())
    loss, _ = timed(benchmark, get_kernels(name).linear_softmax_ce, args=args, count=5)
    assert np.isfinite(loss)
