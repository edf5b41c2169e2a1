"""The kernels on a machine where another program keeps one core busy, on purpose.

    pytest benchmarks/bench_busy.py --benchmark-json=busy.json
    python benchmarks/report.py busy.json --group busy
    SOFTMAX_FAST_BENCH_BUSY_CPU=3 pytest benchmarks/bench_busy.py   # spin on CPU 3

Every kernel runs with ``n_threads=1`` and with ``n_threads=None`` (every CPU of the affinity
mask) twice: on the idle machine, then while a child Python spins (``while True: pass``)
pinned to one CPU (default: the last CPU of this process's affinity mask). Each
(machine state, kernel, backend) is one group whose baseline is the 1-thread row, so
report.py's ``x base`` of the all-threads row is the ratio 1-thread time / all-threads time:
on the busy machine the target is >= 0.8 (using every core must cost at most 20 % against
one thread when one of them is taken; ideally it still gains); on the idle one it is the
parallel speed-up. The ratio is also stored in ``extra_info["ratio_vs_1_thread"]`` and
printed.

Kernels: ``softmax_ce`` on 65,536 x 10 and 1,000,000 x 10 float32 logits; ``linear_softmax_ce``
at (4096, 2048, 1000) float32 (the BLAS path's tiled mode) and (16384, 1024, 100) (its
row-split mode, a linear probe's shape); one SGD epoch on Fashion-MNIST (uint8, batch 32) for each
backend ``auto`` may pick; one epoch of the grid search's multi-model kernel, 64 models
(batch 256).

The busy process is stopped by the fixture's teardown whatever happens; it also dies with
this process (``PR_SET_PDEATHSIG``) and stops by itself after ``BUSY_MAX_SECONDS``.
"""

import atexit
import os
import subprocess
import sys

import numpy as np
import pytest
from harness import STASH, fashion_mnist, linear_flops, our_backends, record, size, timed

from softmax_fast.backends import (
    get_backend,
    get_kernels,
    resolve_backend_name,
    resolve_n_threads,
)

TARGET = 0.8
BUSY_MAX_SECONDS = 3600
CE_SHAPES = size([(65536, 10), (1_000_000, 10)], [(4096, 10), (16384, 10)])
LINEAR_SHAPES = size([(4096, 2048, 1000), (16384, 1024, 100)], [(256, 64, 100), (1024, 64, 40)])
THREADS = ["1", "all"]
N_MODELS = 64


def busy_cpu():
    """``SOFTMAX_FAST_BENCH_BUSY_CPU``, else the last CPU this process may run on."""
    value = os.environ.get("SOFTMAX_FAST_BENCH_BUSY_CPU")
    return int(value) if value else max(os.sched_getaffinity(0))


# The child pins itself, asks the kernel to kill it when its parent dies, says it is ready
# and spins; it checks the clock and its parent only every 10^6 iterations, so it stays a
# pure CPU hog, and exits on its own after BUSY_MAX_SECONDS should everything else fail.
_SPIN = """
import ctypes, os, signal, sys, time
cpu, parent, limit = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
os.sched_setaffinity(0, {cpu})
try:
    ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if os.getppid() != parent:
    sys.exit(0)
print("ready", flush=True)
end = time.monotonic() + limit
while time.monotonic() < end and os.getppid() == parent:
    for _ in range(1_000_000):
        pass
"""


def start_busy(cpu):
    """Start the spinning child on ``cpu``; return it once it spins."""
    proc = subprocess.Popen([sys.executable, "-c", _SPIN, str(cpu), str(os.getpid()),
                             str(BUSY_MAX_SECONDS)], stdout=subprocess.PIPE, text=True)
    atexit.register(stop_busy, proc)  # a second line of defence; stopping twice is harmless
    if proc.stdout.readline().strip() != "ready":
        stop_busy(proc)
        raise RuntimeError(f"the busy process on CPU {cpu} did not start")
    return proc


def stop_busy(proc):
    """Kill the spinning child and reap it."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture(scope="module", params=["idle", "busy"])
def machine(request):
    """The machine state: idle, or one CPU taken by a spinning process for the whole group.

    Module scope: pytest runs every idle benchmark, then starts the busy process once, runs
    every busy benchmark and stops it.
    """
    if request.param == "idle":
        yield {"state": "idle"}
        return
    cpu = busy_cpu()
    proc = start_busy(cpu)
    try:
        yield {"state": "busy", "busy_cpu": cpu, "busy_pid": proc.pid}
    finally:
        stop_busy(proc)


def _run(benchmark, machine, kernel_name, backend, threads, func, args, count, **info):
    """Time ``func(*args, n_threads)``; the second of the two thread settings gets the ratio."""
    n_threads = 1 if threads == "1" else resolve_n_threads(None)
    state = machine["state"]
    benchmark.group = f"{state}: {kernel_name} {backend}"
    label = "n_threads=1" if threads == "1" else f"n_threads=None ({n_threads})"
    _, median = timed(benchmark, func, args=(*args, n_threads), count=count)
    key = (state, kernel_name, backend)
    STASH.setdefault(("busy",) + key, {})[threads] = median
    times = STASH[("busy",) + key]
    extra = {"impl": label, "baseline": threads == "1", "machine": state,
             "busy_cpu": machine.get("busy_cpu"), "n_threads": n_threads, **info}
    if len(times) == 2:
        ratio = times["1"] / times["all"]
        extra.update(ratio_vs_1_thread=ratio, target=TARGET if state == "busy" else None)
        if state == "busy":
            extra["meets_target"] = bool(ratio >= TARGET)
    record(benchmark, **extra)


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("backend", our_backends())
@pytest.mark.parametrize("shape", CE_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_softmax_ce(benchmark, machine, shape, backend, threads):
    n, c = shape
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((n, c), dtype=np.float32) * 3)
    y = rng.integers(0, c, n).astype(np.intp)
    out = np.empty_like(logits)
    _run(benchmark, machine, f"softmax_ce {n}x{c}", backend, threads,
         get_backend(backend).softmax_ce, (logits, y, None, out), count=20,
         bytes=2 * logits.nbytes)


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("backend", our_backends())
@pytest.mark.parametrize("shape", LINEAR_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_linear_softmax_ce(benchmark, machine, shape, backend, threads):
    n, d, c = shape
    rng = np.random.default_rng(0)
    X = rng.random((n, d), dtype=np.float32)
    W = rng.standard_normal((c, d), dtype=np.float32) * 0.01
    b = np.zeros(c, np.float32)
    y = rng.integers(0, c, n).astype(np.intp)
    args = (X, 1.0, W, b, y, None, 1e-4, np.empty_like(W), np.empty_like(b))
    _run(benchmark, machine, f"linear_softmax_ce n={n} d={d} c={c}", backend, threads,
         get_backend(backend).linear_softmax_ce, args, count=5, flops=linear_flops(n, d, c))


@pytest.mark.fashion
@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("backend", our_backends())
def test_sgd_epoch(benchmark, machine, backend, threads):
    X, y, _, _ = fashion_mnist()
    order = np.random.default_rng(0).permutation(len(y)).astype(np.intp)
    coef, intercept = np.zeros((10, X.shape[1]), np.float32), np.zeros(10, np.float32)
    args = (X, 1.0 / 255, y, None, order, coef, intercept, np.zeros_like(coef),
            np.zeros_like(intercept), 0.01, 1e-4, 0.0, False, 32)
    _run(benchmark, machine, "sgd_epoch fashion-mnist uint8 batch 32", backend, threads,
         get_backend(backend).sgd_epoch, args, count=10)


@pytest.mark.fashion
@pytest.mark.parametrize("threads", THREADS)
def test_multi_sgd_epoch(benchmark, machine, threads):
    X, y, _, _ = fashion_mnist()
    kernels = get_kernels("auto", "multi")
    k, c, d = N_MODELS, 10, X.shape[1]
    order = np.random.default_rng(0).permutation(len(y)).astype(np.intp)
    lr = np.repeat(np.geomspace(1e-3, 0.2, 8), 8)
    alpha = np.tile(np.r_[0.0, np.geomspace(1e-5, 1e-2, 7)], 8)
    zeros = np.zeros(k)
    args = (X, 1.0 / 255, y, order, np.zeros((k, c, d), np.float32), np.ones(k),
            np.zeros((k, c), np.float32), None, None, lr, alpha, zeros, zeros.astype(bool), 256)
    _run(benchmark, machine, f"multi_sgd_epoch {k} models fashion-mnist batch 256",
         resolve_backend_name("auto", "multi"), threads, kernels.multi_sgd_epoch, args, count=3)
