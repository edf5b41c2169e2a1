"""The busy-machine governor of the Numba kernels: never slower with threads than with one.

When another program keeps a core busy, a partner thread is descheduled for whole time slices
(milliseconds) and every parallel region waits for it. The Cython kernels watch their own
barriers (``_sf_simd.h``); the Numba ones are watched from here, at two levels:

* within a call, kernels with many regions (an SGD epoch: one per minibatch) time each region
  (``_numba_math.watch_region``) and finish on one thread after repeated stalls;
* across calls, every call through ``numba_backend._call`` is timed: one on several threads
  that ran far slower than the fastest call of the same kernel, size, kind (dtypes, shape)
  and thread count, or slower than the fastest such call on one thread, or a kernel that fell
  back mid-call, makes the next calls run on one thread for a back-off period (0.05 s,
  doubled while the machine stays busy, up to 8 s), after which the threads are tried again.
  The one-thread comparison matters where two threads gain little even on an idle machine
  (softmax-CE at 1,000,000 x 10 on a 2-core AMD EPYC: 29.5 ms on two, 40.5 ms on one): a
  busy core made the 2-thread call 61.6 ms, about 2x its own fastest - the first rule's
  threshold, which it crossed only now and then - and 0.64x of one thread's speed.

Results never depend on the thread count (fixed tiles and orders), so the governor changes
speed only. An idle machine rarely triggers it (a hiccup of the host that doubles one call),
and a false alarm costs one back-off period on one thread.
"""

import threading
import time

__all__ = ["GOVERNOR", "Governor"]


class Governor:
    """Thread-count advice for one process (shared by all Numba kernels; thread-safe enough:
    it is a hint, and a race only costs one call's speed)."""

    #: A call this many times slower than the fastest of the same kernel and size (and at
    #: least MIN_SECONDS long) waited for a descheduled thread. With one of two cores taken,
    #: a 2-thread call runs about as long as one thread would, twice its idle time
    #: (softmax-CE 1,000,000 x 10: 43 ms against 17 idle and 32 on one thread), so 2 is
    #: where one thread starts to pay; a false alarm costs one back-off on one thread.
    #: The size is part of the key: per unit of work, shapes differ by more than this
    #: (softmax-CE ran 0.6 ns an element at 8192 x 1000 and 1.6 at 1,000,000 x 10), and
    #: judged against another shape's rate, ordinary hiccups of a virtual machine sent
    #: every Numba kernel to one thread for seconds. So is the call's ``kind`` (dtypes,
    #: shape, variant): keyed by size alone, a float64 softmax-CE on two threads was judged
    #: against float32's one-thread time of the same size, found "slower than one thread"
    #: and sent to one thread on an idle machine (65,536 x 10 and 100,000 x 100: two threads
    #: no faster than one).
    SLOWDOWN = 2.0
    MIN_SECONDS = 0.002
    BACKOFF_MIN, BACKOFF_MAX = 0.05, 8.0
    #: a back-off lasts at least this many times the slow call that caused it: each later
    #: trial of the threads then costs at most about 1/8 more than one thread would. Long
    #: calls (the BLAS path at 4096 x 2048 x 1000, 0.4-0.5 s) outlasted the first back-offs,
    #: so every other call retried the threads on the busy core (0.80x of one thread's speed).
    BACKOFF_CALLS = 8
    #: sizes remembered at most (then forgotten all at once: a fit uses a few)
    MAX_KINDS = 4096

    def __init__(self):
        self._serial_until = 0.0
        self._backoff = self.BACKOFF_MIN
        self._fastest = {}  # (kernel name, threads, work, kind) -> seconds
        self._lock = threading.Lock()

    def threads(self, n_threads):
        """``n_threads``, or 1 while the machine is judged busy."""
        if n_threads > 1 and time.monotonic() < self._serial_until:
            return 1
        return n_threads

    def report(self, contended, seconds=0.0):
        """A kernel says whether it had to fall back to one thread during its call (of
        ``seconds``, when known: the back-off lasts at least ``BACKOFF_CALLS`` times that)."""
        with self._lock:
            if contended:
                self._serial_until = time.monotonic() + max(self._backoff,
                                                             self.BACKOFF_CALLS * seconds)
                self._backoff = min(2 * self._backoff, self.BACKOFF_MAX)
            elif time.monotonic() >= self._serial_until:
                self._backoff = self.BACKOFF_MIN

    def timed(self, kernel, threads, work, args, kind=()):
        """Run ``kernel(*args)`` and time it; judge the speed of calls on several threads.

        Calls are compared with calls of the same kernel, ``work`` and ``kind`` (hashable:
        whatever else sets the speed, such as dtypes, the shape and the variant). A call on
        one thread is only recorded: it is the reference the calls on several threads must
        beat (a one-thread call comes from the caller's ``n_threads=1`` or from a back-off).
        """
        if work <= 0:
            return kernel(*args)
        tic = time.perf_counter()
        result = kernel(*args)
        seconds = time.perf_counter() - tic
        name = getattr(kernel, "__name__", repr(kernel))
        key = (name, threads, work, kind)
        with self._lock:
            fastest = self._fastest.get(key)
            if fastest is None and len(self._fastest) >= self.MAX_KINDS:
                self._fastest.clear()
            self._fastest[key] = seconds if fastest is None else min(fastest, seconds)
            alone = self._fastest.get((name, 1, work, kind)) if threads > 1 else None
        if threads > 1 and (fastest is not None or alone is not None):
            slow = fastest is not None and seconds > self.SLOWDOWN * fastest
            beaten = alone is not None and seconds > alone
            # a call in time also ends the doubling of the back-off: without it, rare false
            # alarms on an idle machine added up to back-offs of seconds
            self.report(seconds > self.MIN_SECONDS and (slow or beaten), seconds)
        return result


#: The process's governor.
GOVERNOR = Governor()
