"""The fused linear softmax-CE at the shapes of real workloads, and the register/BLAS crossover.

    pytest benchmarks/bench_shapes.py --benchmark-json=shapes.json
    python benchmarks/report.py shapes.json
    SOFTMAX_FAST_BENCH_LONG=1 pytest benchmarks/bench_shapes.py -k crossover \\
        --benchmark-json=crossover.json
    python benchmarks/report.py crossover.json --crossover

``shapes: ...`` groups — ``linear_softmax_ce`` (loss and both gradients, float32, no sample
weights) at (n, d, c) = (4096, 2048, 1000) (a large probe's batch), (1024, 768, 10000) and
(256, 512, 32000) (many classes: vocabulary-like heads), (60000, 784, 10) (Fashion-MNIST) and
(16384, 1024, 100), for every backend ``auto`` may pick, against plain NumPy float32 (unfused,
baselines.py: the ``x base`` column) and PyTorch (``F.linear`` + ``cross_entropy`` + autograd on
the same threads; a peer) when installed. ``extra_info["flops"]`` = 4 n d c, so report.py gives
GFLOP/s and the % of the sgemm rate measured in the same run (``machine: sgemm``, imported
from harness.py).

``crossover ...`` groups (``long``: about 450 benchmarks) — both compiled paths of the linear
model called directly: the register-blocked tiles and the BLAS tiles (Cython:
``EXTENSION.linear_softmax_ce`` / ``linear_softmax_ce_gemm``; Numba: the backend's internal
``_linear_kernel`` / ``_linear_gemm``), over c in {10, 16, 24, 32, 48, 64, 100} x d in
{64, 256, 784, 2048} x n in {256, 4096} (the rule also has a minimum of work per call), X
float32 and uint8. The row of the path ``kernels/_paths.py::prefers_gemm`` picks today is
marked ``(chosen)``; ``report.py --crossover`` prints the BLAS / register speed-up as c x d
tables, from which ``GEMM_MIN_CLASSES``, ``GEMM_MIN_CLASSES_UINT8`` and ``GEMM_MIN_WORK`` are
read.
"""

import numpy as np
import pytest
from baselines import numpy_linear_softmax_ce, torch_linear_softmax_ce
from harness import (
    SMOKE,
    bench_threads,
    linear_flops,
    our_backends,
    record,
    size,
    test_sgemm,  # noqa: F401  (collected here: the sgemm rate of this run)
    timed,
)

from softmax_fast.backends import get_backend
from softmax_fast.kernels._blas import single_threaded_blas
from softmax_fast.kernels._paths import prefers_gemm

ALPHA = 1e-4
SHAPES = size([(4096, 2048, 1000), (1024, 768, 10000), (256, 512, 32000), (60000, 784, 10),
               (16384, 1024, 100)],
              [(256, 64, 100), (64, 32, 1000), (512, 32, 10)])
SWEEP_CLASSES = size((10, 16, 24, 32, 48, 64, 100), (10, 64))
SWEEP_FEATURES = size((64, 256, 784, 2048), (64,))
SWEEP_ROWS = size((256, 4096), (256,))
#: Seconds of timed calls per crossover benchmark (the calls are ms or less: many rounds).
SWEEP_BUDGET = 0.25


def _problem(n, d, c, xdtype="float32", seed=0):
    """(X, x_scale, W, b, y, grad buffers) of one shape; uint8 X is scaled by 1/255."""
    rng = np.random.default_rng(seed)
    if xdtype == "uint8":
        X, x_scale = rng.integers(0, 256, (n, d), dtype=np.uint8), 1.0 / 255
    else:
        X, x_scale = rng.random((n, d), dtype=np.float32), 1.0
    W = (rng.standard_normal((c, d), dtype=np.float32) * 0.01)
    b = np.zeros(c, np.float32)
    y = rng.integers(0, c, n).astype(np.intp)
    return X, x_scale, W, b, y, np.empty_like(W), np.empty_like(b)


# ------------------------------------------------------------------------ workload shapes
@pytest.fixture(scope="module", params=SHAPES, ids=lambda s: "n{}-d{}-c{}".format(*s))
def shape_problem(request):
    return request.param, _problem(*request.param)


@pytest.mark.parametrize("impl", ["numpy", *our_backends(), "torch"])
def test_linear_shapes(benchmark, shape_problem, impl):
    (n, d, c), (X, x_scale, W, b, y, gW, gb) = shape_problem
    threads = bench_threads()
    benchmark.group = f"shapes: linear_softmax_ce n={n} d={d} c={c} float32"
    info = {"impl": impl, "flops": linear_flops(n, d, c), "n_threads": threads}
    if impl == "numpy":
        from threadpoolctl import threadpool_limits

        info["baseline"] = True
        with threadpool_limits(limits=threads, user_api="blas"):
            loss, _ = timed(benchmark, lambda: numpy_linear_softmax_ce(X, x_scale, W, b, y,
                                                                       ALPHA)[0])
    elif impl == "torch":
        try:
            run, label = torch_linear_softmax_ce(X, x_scale, W, b, y, ALPHA, threads)
        except ImportError as exc:
            pytest.skip(f"PyTorch not installed: {exc}")
        info.update(impl=label, peer=True)
        loss, _ = timed(benchmark, run)
    else:
        kernel = get_backend(impl).linear_softmax_ce
        info.update(ours=True, path="blas" if prefers_gemm(n, d, c, False) else "register")
        loss, _ = timed(benchmark, kernel, args=(X, x_scale, W, b, y, None, ALPHA, gW, gb,
                                                 threads))
    record(benchmark, show=False, **info)
    assert np.isfinite(loss)


# ------------------------------------------------------------------------ crossover sweep
def _cython_paths():
    from softmax_fast.kernels import cython_backend

    ext = cython_backend.EXTENSION

    def blas(*args):
        with single_threaded_blas():  # as the backend calls it: our threads share the tiles
            return ext.linear_softmax_ce_gemm(*args)

    return ext.linear_softmax_ce, blas


def _numba_paths():
    """The Numba backend's two internal paths, with the arguments its public function makes.

    Skips when the internals moved (they are private: this sweep is for choosing constants).
    """
    from softmax_fast.kernels._numba_config import read_only

    nb = get_backend("numba")
    names = ("_call", "_linear_kernel", "_linear_gemm", "_NO_WEIGHTS")
    if not all(hasattr(nb, name) for name in names):
        pytest.skip(f"numba_backend no longer has {names}: update the crossover sweep")

    def register(X, x_scale, coef, intercept, y, w, alpha, gc, gi, n_threads):
        # inputs read-only, as the public entry point passes them (one compilation)
        X, coef, intercept, y = read_only(X, coef, intercept, y)
        work = 2 * X.shape[0] * coef.size
        return float(nb._call(nb._linear_kernel, n_threads, work, X, float(x_scale), coef,
                              intercept, y, nb._NO_WEIGHTS, False, float(alpha), gc, gi,
                              n_threads))

    def blas(X, x_scale, coef, intercept, y, w, alpha, gc, gi, n_threads):
        X, coef, intercept, y = read_only(X, coef, intercept, y)
        work = 2 * X.shape[0] * coef.size
        return nb._linear_gemm(X, float(x_scale), coef, intercept, y, nb._NO_WEIGHTS, False,
                               float(alpha), gc, gi, n_threads, work)

    return register, blas


PATHS = {"cython": _cython_paths, "numba": _numba_paths}


@pytest.mark.long
@pytest.mark.parametrize("path", ["register", "blas"])
@pytest.mark.parametrize("backend", [b for b in our_backends() if b in PATHS])
@pytest.mark.parametrize("xdtype", ["float32", "uint8"])
@pytest.mark.parametrize("rows", SWEEP_ROWS, ids=lambda n: f"n{n}")
@pytest.mark.parametrize("d", SWEEP_FEATURES, ids=lambda d: f"d{d}")
@pytest.mark.parametrize("c", SWEEP_CLASSES, ids=lambda c: f"c{c}")
def test_crossover(benchmark, c, d, rows, xdtype, backend, path):
    X, x_scale, W, b, y, gW, gb = _problem(rows, d, c, xdtype)
    register, blas = PATHS[backend]()
    kernel = blas if path == "blas" else register
    args = (X, x_scale, W, b, y, None, ALPHA, gW, gb, bench_threads())
    kernel(*args)  # warm-up (JIT, page faults) and a first time for the round count
    chosen = prefers_gemm(rows, d, c, xdtype == "uint8") == (path == "blas")
    benchmark.group = f"crossover {backend} X {xdtype} n={rows} d={d} c={c}"
    record(benchmark, show=False, impl=f"{path}{' (chosen)' if chosen else ''}",
           baseline=path == "register", flops=linear_flops(rows, d, c), sweep=True,
           backend=backend, path=path, chosen=chosen, xdtype=xdtype, n=rows, d=d, c=c)
    loss, _ = timed(benchmark, kernel, args=args, count=_rounds_within(kernel, args))
    assert np.isfinite(loss)


def _rounds_within(kernel, args):
    """Rounds that fit in SWEEP_BUDGET seconds (3 to 200), from one timed call."""
    import time

    if SMOKE:
        return 1
    tic = time.perf_counter()
    kernel(*args)
    return int(min(200, max(3, SWEEP_BUDGET / max(time.perf_counter() - tic, 1e-6))))
