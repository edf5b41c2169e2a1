"""pytest hooks of the benchmarks (collection is configured in ``benchmarks/pytest.ini``).

* Benchmarks marked ``long`` are skipped unless ``SOFTMAX_FAST_BENCH_LONG=1``.
* The run's header and the JSON's ``machine_info`` (pytest-benchmark's public hook) say which
  Cython build, thread count and mode produced the numbers, so that report.py and
  ``--benchmark-compare`` readers can tell runs apart.
"""

import pytest
from harness import LONG, SMOKE, bench_threads, our_backends


def _cython_isa():
    try:
        from softmax_fast.kernels import cython_backend
    except ImportError:
        return None
    return cython_backend.ISA


def _run_info():
    return {"smoke": SMOKE, "long": LONG, "n_threads": bench_threads(),
            "backends": our_backends(), "cython_isa": _cython_isa()}


def pytest_report_header(config):
    info = _run_info()
    mode = "SMOKE (sizes are tiny, timings mean nothing)" if SMOKE else "full"
    return (f"softmax-fast benchmarks: {mode}; long ones {'on' if LONG else 'skipped'}; "
            f"{info['n_threads']} thread(s); backends {', '.join(info['backends'])}; "
            f"cython build {info['cython_isa']}")


def pytest_collection_modifyitems(config, items):
    if LONG:
        return
    skip = pytest.mark.skip(reason="long benchmark: set SOFTMAX_FAST_BENCH_LONG=1 to run it")
    for item in items:
        if item.get_closest_marker("long") is not None:
            item.add_marker(skip)


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["softmax_fast"] = _run_info()
