"""What the benchmark files share: run modes, threads, the backends to time, data, recording.

Run modes (environment variables; see ``benchmarks/README.md``):

``SOFTMAX_FAST_BENCH_SMOKE=1``
    Tiny sizes and one round everywhere: checks that every benchmark runs, in seconds. The
    timings mean nothing. Combine with ``--benchmark-disable`` to run each target once.
``SOFTMAX_FAST_BENCH_LONG=1``
    Also run the benchmarks marked ``long`` (minutes to hours each; skipped otherwise).
``SOFTMAX_FAST_BENCH_THREADS=N``
    Threads for every implementation (default: every CPU of the affinity mask).
``SOFTMAX_FAST_BENCH_BACKENDS=cython,numba``
    Our backends to time (default: those ``backend="auto"`` may pick, the float64 oracle
    aside — not the opt-in ISA builds ``cython-<isa>``).

This module is named so that ``python_files = bench_*.py`` does not collect it; its
``test_sgemm`` and ``test_copy_bandwidth`` are imported by the files that report GFLOP/s or
bandwidth, so the machine's rates are measured in the same run as the kernels.
"""

import functools
import os
import statistics
import time

import numpy as np
import pytest

from softmax_fast.backends import available_backends, registered, resolve_n_threads

__all__ = ["SMOKE", "LONG", "size", "rounds", "bench_threads", "our_backends", "timed",
           "record", "linear_flops", "fashion_mnist", "test_sgemm", "test_copy_bandwidth",
           "sgemm_rate", "STASH"]

SMOKE = os.environ.get("SOFTMAX_FAST_BENCH_SMOKE", "") not in ("", "0")
LONG = os.environ.get("SOFTMAX_FAST_BENCH_LONG", "") not in ("", "0")

#: Results one test leaves for a later one of the same run (ratios, projections).
STASH = {}


def size(full, smoke):
    """``full``, or ``smoke`` in smoke mode."""
    return smoke if SMOKE else full


def rounds(count):
    """Timed rounds: ``count``, or 1 in smoke mode."""
    return 1 if SMOKE else count


@functools.lru_cache(maxsize=1)
def bench_threads():
    """Threads every implementation gets (``SOFTMAX_FAST_BENCH_THREADS``, else all CPUs)."""
    value = os.environ.get("SOFTMAX_FAST_BENCH_THREADS")
    return resolve_n_threads(int(value) if value else None)


def our_backends(kind="dense", include_oracle=False):
    """Our backends to time: ``SOFTMAX_FAST_BENCH_BACKENDS``, else the auto-rankable ones.

    The opt-in ISA builds (``auto_rank=None``) are timed by ``bench_isa.py`` only; the float64
    oracle is left out unless asked for, as the NumPy float32 baseline is the yardstick.
    """
    importable = available_backends(kind)
    forced = os.environ.get("SOFTMAX_FAST_BENCH_BACKENDS")
    if forced:
        return [name for name in forced.split(",") if name in importable]
    return [info.name for info in registered(kind) if info.auto_rank is not None
            and (include_oracle or not info.oracle) and info.name in importable]


def timed(benchmark, target, *, args=(), kwargs=None, setup=None, count=5, warmup=1):
    """``benchmark.pedantic`` of ``target``; returns (last result, median seconds).

    The median comes from pytest-benchmark's stats, or from our own clock when the fixture is
    disabled (``--benchmark-disable`` runs the target once) so that derived figures — ratios,
    projections — are still computed and printed in smoke runs. ``setup`` returns
    ``(args, kwargs)`` afresh for every round (pytest-benchmark's contract).
    """
    times = []

    def call(*a, **k):
        tic = time.perf_counter()
        out = target(*a, **k)
        times.append(time.perf_counter() - tic)
        return out

    if setup is not None:
        result = benchmark.pedantic(call, setup=setup, rounds=rounds(count),
                                    warmup_rounds=0 if SMOKE else warmup)
    else:
        result = benchmark.pedantic(call, args=args, kwargs=kwargs or {}, rounds=rounds(count),
                                    warmup_rounds=0 if SMOKE else warmup)
    if benchmark.stats is not None:
        return result, benchmark.stats.stats.median
    return result, statistics.median(times)


def paired(benchmark, target, partner, *, count):
    """Time ``target`` in pytest-benchmark's rounds with ``partner()`` run just before each
    round (in its ``setup``, outside that timing, on our clock).

    The two alternate call by call, so they see the machine in the same state: on a virtual
    machine whose speed drifts by 2x within minutes, two rows timed one after the other
    compare two machines. Returns (last result of ``target``, its median seconds, the
    seconds of ``target`` and of ``partner``, round by round).
    """
    partner_seconds, target_seconds = [], []

    def setup():
        tic = time.perf_counter()
        partner()
        partner_seconds.append(time.perf_counter() - tic)
        return (), {}

    def call():
        tic = time.perf_counter()
        out = target()
        target_seconds.append(time.perf_counter() - tic)
        return out

    result, median = timed(benchmark, call, setup=setup, count=count)
    return result, median, target_seconds, partner_seconds


def record(benchmark, *, show=True, **info):
    """Add ``info`` to the benchmark's ``extra_info`` (``--benchmark-json``) and print it."""
    benchmark.extra_info.update(info)
    if show:
        print("\n  " + "  ".join(f"{k}={_short(v)}" for k, v in info.items()))


def _short(value):
    return f"{value:.4g}" if isinstance(value, float) else value


def linear_flops(n, d, c):
    """FLOPs of the linear softmax-CE loss and gradient: X W^T and G^T X, 2 n d c each."""
    return 4 * n * d * c


@functools.lru_cache(maxsize=1)
def fashion_mnist():
    """(X uint8 (60000, 784), y intp, X_test, y_test) of the full Fashion-MNIST, or skip.

    Smoke mode keeps the first 4,096 training and 1,024 test rows.
    """
    from softmax_fast.datasets import load_dataset

    try:
        X, y, X_test, y_test = load_dataset("fashion-mnist", download=False)
    except Exception as exc:  # the dataset's absence is the only expected failure
        pytest.skip(f"full Fashion-MNIST not found (Debian package dataset-fashion-mnist): {exc}")
    rows, test_rows = size((len(y), len(y_test)), (4096, 1024))
    return (np.ascontiguousarray(X[:rows], dtype=np.uint8), np.asarray(y[:rows], np.intp),
            np.ascontiguousarray(X_test[:test_rows], dtype=np.uint8),
            np.asarray(y_test[:test_rows], np.intp))


# ---------------------------------------------------------------------- machine rates
SGEMM_SIZE = size(2048, 128)
COPY_BYTES = size(256 << 20, 1 << 20)


def _sgemm_problem():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((SGEMM_SIZE, SGEMM_SIZE), dtype=np.float32)
    b = rng.standard_normal((SGEMM_SIZE, SGEMM_SIZE), dtype=np.float32)
    return a, b, np.empty_like(a)


@pytest.mark.benchmark(group="machine: sgemm")
def test_sgemm(benchmark):
    """NumPy float32 matmul of a square problem on the benchmarks' threads, best of 10.

    report.py divides every GFLOP/s by this rate (the ``min`` time: a capability, so the best
    round counts; on a shared machine a slow round measures the neighbours).
    """
    from threadpoolctl import threadpool_limits

    a, b, out = _sgemm_problem()
    benchmark.extra_info.update(impl="numpy sgemm", role="sgemm", flops=2 * SGEMM_SIZE**3,
                                n_threads=bench_threads(), size=SGEMM_SIZE)
    with threadpool_limits(limits=bench_threads(), user_api="blas"):
        benchmark.pedantic(np.matmul, args=(a, b), kwargs={"out": out}, rounds=rounds(10),
                           warmup_rounds=1)


@pytest.mark.benchmark(group="machine: copy bandwidth")
def test_copy_bandwidth(benchmark):
    """np.copyto of 256 MiB (beyond the caches): the memory bandwidth, bytes read + written."""
    src = np.ones(COPY_BYTES // 4, np.float32)
    dst = np.empty_like(src)
    benchmark.extra_info.update(impl="copy 256 MiB", role="copy-bandwidth", bytes=2 * src.nbytes)
    benchmark.pedantic(np.copyto, args=(dst, src), rounds=rounds(10), warmup_rounds=1)


@functools.lru_cache(maxsize=1)
def sgemm_rate():
    """FLOP/s of :func:`test_sgemm`'s problem, best of 5, for figures printed during the run.

    report.py uses the ``test_sgemm`` row of the JSON instead; this is for ``extra_info`` and
    the printed lines of tests that want a "% of sgemm" without a post-processing step.
    """
    from threadpoolctl import threadpool_limits

    a, b, out = _sgemm_problem()
    best = float("inf")
    with threadpool_limits(limits=bench_threads(), user_api="blas"):
        np.matmul(a, b, out=out)
        for _ in range(rounds(5)):
            tic = time.perf_counter()
            np.matmul(a, b, out=out)
            best = min(best, time.perf_counter() - tic)
    return 2.0 * SGEMM_SIZE**3 / best
