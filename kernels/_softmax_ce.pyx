# cython: language_level=3
"""Placeholder kernel so the build is exercised: row-wise log-sum-exp (replaced by issue 3)."""

from libc.math cimport exp, log, INFINITY

cimport cython
from cython cimport floating


cdef inline double _row_logsumexp(const floating[::1] row) noexcept nogil:
    cdef Py_ssize_t k
    cdef double m = -INFINITY, s = 0.0
    for k in range(row.shape[0]):
        if row[k] > m:
            m = row[k]
    for k in range(row.shape[0]):
        s += exp(row[k] - m)
    return m + log(s)


def logsumexp_rows(const floating[:, ::1] logits, double[::1] out):
    """IN logits (n, c); OUT out (n,): log sum_k exp(logits[i, k]), computed stably."""
    cdef Py_ssize_t i
    with nogil:
        for i in range(logits.shape[0]):
            out[i] = _row_logsumexp(logits[i])
