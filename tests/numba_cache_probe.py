"""Fixed inputs for the Numba kernels and every output they give, for
``test_numba_backend.py::test_first_call_cold_then_warm_cache``.

That test calls :func:`outputs` in a process that compiles every kernel (an empty
NUMBA_CACHE_DIR) and in one that loads them all from the cache, and compares the bits. The
inputs are ones on which Numba's losses differed by an ulp between the two kinds of process
before ``_numba_math._ce_sum``: their data, not only their shapes, matter (a sum taken in
another order gives the same bits on most inputs). ``python numba_cache_probe.py OUT.npz``
saves the outputs.
"""

import sys

import numpy as np

from softmax_fast.kernels import numba_backend as nb


def outputs():
    """Every output of softmax_ce, linear_softmax_ce and sgd_epoch on the probe's inputs."""
    out = {}
    rng = np.random.default_rng(3)
    # softmax_ce: the third of these draws (65,536 x 10 float32) differed
    for n, c in ((8190, 1000), (510, 32000), (65536, 10)):
        Z = (rng.standard_normal((n, c)) * 5).astype(np.float32)
        y = rng.integers(0, c, n).astype(np.intp)
        if c > 10:
            continue  # drawn for the seed's sequence only (large, and never differed)
        w = rng.random(n)
        for weighted in (False, True):
            G = np.empty_like(Z)
            out[f"softmax_ce_{n}x{c}_{weighted}"] = nb.softmax_ce(
                Z, y, w if weighted else None, G, 2)
            out[f"softmax_ce_{n}x{c}_{weighted}_grad"] = G
    # linear_softmax_ce (register-tile path) and an SGD epoch on float32 weights and uint8 X,
    # the Fashion-MNIST case: the loss of 2,000 x 64 x 30 differed (each dtype compiles for
    # ~20 s, so one)
    rng = np.random.default_rng(0)
    n, d, c = 2000, 64, 30
    X = rng.integers(0, 256, (n, d)).astype(np.uint8)
    W = (rng.standard_normal((c, d)) * 0.05).astype(np.float32)
    b = (rng.standard_normal(c) * 0.1).astype(np.float32)
    y = rng.integers(0, c, n).astype(np.intp)
    w = rng.random(n)
    for weighted in (False, True):
        gW, gb = np.empty_like(W), np.empty_like(b)
        out[f"linear_{weighted}"] = nb.linear_softmax_ce(X, 1 / 255, W, b, y,
                                                         w if weighted else None, 1e-3, gW,
                                                         gb, 2)
        out[f"linear_{weighted}_grad_coef"] = gW
        out[f"linear_{weighted}_grad_intercept"] = gb
    order = rng.permutation(n).astype(np.intp)
    out["sgd"] = nb.sgd_epoch(X, 1 / 255, y, None, order, W, b, np.zeros_like(W),
                              np.zeros_like(b), 0.05, 1e-4, 0.0, False, 32, 2)
    out["sgd_coef"] = W
    out["sgd_intercept"] = b
    return {k: np.asarray(v) for k, v in out.items()}


if __name__ == "__main__":
    np.savez(sys.argv[1], **outputs())
