"""The busy-machine governor of the Numba kernels (kernels/_governor.py) on its own."""

import time

import numpy as np
import pytest
from conftest import require_backend

from softmax_fast.kernels._governor import Governor


def test_a_reported_contention_runs_one_thread_for_a_growing_while(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    gov = Governor()
    assert gov.threads(4) == 4
    gov.report(True)
    assert gov.threads(4) == 1 and gov.threads(1) == 1
    clock[0] += Governor.BACKOFF_MIN + 0.01
    assert gov.threads(4) == 4  # the threads are tried again after the back-off ...
    gov.report(True)
    clock[0] += Governor.BACKOFF_MIN + 0.01
    assert gov.threads(4) == 1  # ... which doubled, the machine still being busy
    clock[0] += Governor.BACKOFF_MIN + 0.01
    assert gov.threads(4) == 4
    gov.report(False)  # a clean parallel call resets it
    gov.report(True)
    clock[0] += Governor.BACKOFF_MIN + 0.01
    assert gov.threads(4) == 4


def test_a_call_far_slower_than_its_fastest_reports_contention():
    gov = Governor()

    def kernel(seconds):
        time.sleep(seconds)
        return seconds

    assert gov.timed(kernel, 2, 1000, (0.003,)) == 0.003  # the baseline
    gov.timed(kernel, 2, 1000, (0.004,))  # within the slack: nothing
    assert gov.threads(2) == 2
    gov.timed(kernel, 2, 1000, (0.05,))  # 16x slower per unit of work
    assert gov.threads(2) == 1
    gov._serial_until = 0.0
    assert gov.timed(kernel, 1, 1000, (0.001,)) == 0.001  # one thread: never judged itself
    assert gov.threads(2) == 2


def test_a_parallel_call_slower_than_one_thread_reports_contention():
    """Where two threads gain little (a 2-thread call 0.74x of one thread's time on an idle
    machine), a busy core makes the 2-thread call slower than one thread while staying
    within the 2x of its own fastest: the one-thread call of that kernel and size decides."""
    gov = Governor()

    def kernel(seconds):
        time.sleep(seconds)
        return seconds

    gov.timed(kernel, 2, 1000, (0.030,))  # idle, two threads
    gov.timed(kernel, 1, 1000, (0.040,))  # one thread (a caller's n_threads=1)
    gov.timed(kernel, 2, 1000, (0.035,))  # slower than its best, still faster than one thread
    assert gov.threads(2) == 2
    gov.timed(kernel, 2, 2000, (0.055,))  # another size: judged against its own only
    assert gov.threads(2) == 2
    gov.timed(kernel, 2, 1000, (0.055,))  # < 2x its own fastest, but one thread was faster
    assert gov.threads(2) == 1


def test_a_one_thread_reference_alone_judges_the_first_parallel_call():
    gov = Governor()
    gov.timed(time.sleep, 1, 1000, (0.003,))
    gov.timed(time.sleep, 2, 1000, (0.030,))  # no 2-thread call before: one thread decides
    assert gov.threads(2) == 1


def test_a_call_is_judged_against_its_own_size_only():
    """A size that is slower per unit of work than another is not contention."""
    gov = Governor()

    def kernel(seconds):
        time.sleep(seconds)
        return seconds

    gov.timed(kernel, 2, 1_000_000, (0.003,))  # an efficient size: 3 ns a unit
    gov.timed(kernel, 2, 100_000, (0.005,))  # another size, 50 ns a unit: its own baseline
    gov.timed(kernel, 2, 100_000, (0.006,))  # within the slack of its own size
    assert gov.threads(2) == 2
    gov.timed(kernel, 2, 100_000, (0.05,))  # 10x its own fastest
    assert gov.threads(2) == 1


def test_a_call_is_judged_against_its_own_kind_only():
    """Same kernel and size, another dtype (the kind): a float64 call on two threads slower
    than the float32 call on one thread is not contention."""
    gov = Governor()
    gov.timed(time.sleep, 1, 1000, (0.002,), kind="float32")  # one thread, the fast dtype
    gov.timed(time.sleep, 2, 1000, (0.006,), kind="float64")  # two threads, the slow dtype
    assert gov.threads(2) == 2
    gov.timed(time.sleep, 1, 1000, (0.003,), kind="float64")
    gov.timed(time.sleep, 2, 1000, (0.006,), kind="float64")  # slower than its own one thread
    assert gov.threads(2) == 1


def test_numba_calls_are_keyed_by_dtype_shape_and_variant(monkeypatch):
    """The Numba wrappers tell the governor what sets a call's speed besides its size."""
    require_backend("numba")
    from softmax_fast.kernels import numba_backend

    gov = Governor()
    monkeypatch.setattr(numba_backend, "GOVERNOR", gov)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 20_000)
    for dtype in (np.float32, np.float64):
        z = rng.standard_normal((20_000, 10)).astype(dtype)
        numba_backend.softmax_ce(z, y, None, np.empty_like(z), n_threads=2)
        numba_backend.softmax(z, np.empty_like(z), n_threads=2)
        numba_backend.log_softmax(z, np.empty_like(z), n_threads=2)
    z = rng.standard_normal((10_000, 20)).astype(np.float32)  # the same size, another shape
    numba_backend.softmax_ce(z, y[:10_000], None, np.empty_like(z), n_threads=2)
    kinds = {(name, kind) for name, _, work, kind in gov._fastest}
    assert len(kinds) == 7, sorted(kinds)


def test_a_call_in_time_ends_the_doubling_of_the_back_off(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    gov = Governor()
    gov.timed(lambda: None, 2, 1000, ())  # the baseline
    for _ in range(3):  # three false alarms in a row: the back-off doubles
        gov.report(True)
        clock[0] += 10.0
    assert gov._backoff == 8 * Governor.BACKOFF_MIN
    gov.timed(lambda: None, 2, 1000, ())  # a parallel call in time
    assert gov._backoff == Governor.BACKOFF_MIN
    gov.report(True)
    clock[0] += Governor.BACKOFF_MIN + 0.01
    assert gov.threads(2) == 2  # the next alarm costs one short back-off only


def test_the_sizes_remembered_are_bounded(monkeypatch):
    monkeypatch.setattr(Governor, "MAX_KINDS", 8)
    gov = Governor()
    for work in range(1, 30):
        gov.timed(lambda: None, 2, work, ())
        assert len(gov._fastest) <= 8


@pytest.mark.parametrize("work", [0, -1])
def test_calls_without_work_are_not_judged(work):
    gov = Governor()
    gov.timed(lambda: None, 2, work, ())
    gov.timed(time.sleep, 2, work, (0.01,))
    assert gov.threads(2) == 2


def test_a_slow_call_backs_off_for_several_of_its_own_length(monkeypatch):
    """A back-off shorter than the call that caused it would retry the threads on the next
    call: it lasts at least BACKOFF_CALLS times the slow call."""
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    gov = Governor()
    gov.report(True, 0.5)
    clock[0] += Governor.BACKOFF_CALLS * 0.5 - 0.01
    assert gov.threads(2) == 1
    clock[0] += 0.02
    assert gov.threads(2) == 2
