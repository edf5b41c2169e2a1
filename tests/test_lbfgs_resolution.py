"""L-BFGS's line searches below float32 rounding (``_training.lbfgs._ResolvedObjective``).

Near the optimum a float32 loss no longer resolves the decrease a step brings; the line
search then compared rounding errors for tens of evaluations. The resolved value (the
accepted iterate's value plus the gradients integrated along the step) removes those stalls
and keeps the optimum: these tests show the stall on the plain loss (so they can fail), its
absence with the resolved value, and the value's own rules.
"""

from types import SimpleNamespace

import numpy as np
import pytest

from softmax_fast._training import lbfgs
from softmax_fast._training.lbfgs import _ResolvedObjective, run_lbfgs
from softmax_fast.backends import available_backends, get_kernels

REFERENCE = get_kernels("reference", "dense")
#: Every compiled dense backend (float32 evaluations); the reference computes in float64.
FLOAT32_BACKENDS = [name for name in available_backends() if name != "reference"]


def unit_norm_embeddings(n=2000, d=32, c=10, seed=0):
    """Class means plus anisotropic noise, rows scaled to unit norm (a small linear probe)."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((c, d))
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    y = rng.integers(0, c, n).astype(np.intp)
    noise = rng.standard_normal((n, d)) * (1.0 + np.arange(d)) ** -0.25
    X = means[y] + 5.0 * noise / np.sqrt(d)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), y


def _fit(kernels, X, y, alpha, dtype, tol):
    """(state, iterations, converged, evaluations per iteration) of one L-BFGS fit."""
    c, d = int(y.max()) + 1, X.shape[1]
    state = SimpleNamespace(coef=np.zeros((c, d), dtype), intercept=np.zeros(c, dtype),
                            history=[])
    counts = [0]

    class Counted:
        def linear_softmax_ce(self, *args):
            counts[-1] += 1
            return kernels.linear_softmax_ce(*args)

    n_iter, converged = run_lbfgs(Counted(), state, X.astype(dtype), 1.0, y, None, alpha, 1,
                                  max_iter=500, tol=tol,
                                  callback=lambda *_: counts.append(0))
    return state, n_iter, converged, counts


def _objective(state, X, y, alpha):
    """The float64 objective at ``state``'s weights."""
    gW, gb = np.empty(state.coef.shape), np.empty(state.intercept.shape)
    return REFERENCE.linear_softmax_ce(X.astype(np.float64), 1.0,
                                       state.coef.astype(np.float64),
                                       state.intercept.astype(np.float64), y, None, alpha,
                                       gW, gb, 1)


@pytest.mark.parametrize("backend", FLOAT32_BACKENDS)
def test_float32_line_searches_no_longer_stall_and_keep_the_optimum(backend, monkeypatch):
    kernels = get_kernels(backend, "dense")
    X, y = unit_norm_embeddings()
    tol = 1e-6  # the float32 floor of a path's steps (lbfgs._REACHABLE_GTOL)
    resolved_evaluations = []
    for alpha in (1e-3, 1e-4, 1e-5, 1e-6):
        optimum = _objective(_fit(REFERENCE, X, y, alpha, np.float64, 1e-10)[0], X, y, alpha)
        state, n_iter, converged, per_iteration = _fit(kernels, X, y, alpha, np.float32, tol)
        assert converged and n_iter > 5
        assert max(per_iteration) <= 3, (alpha, per_iteration)
        assert _objective(state, X, y, alpha) - optimum <= 1e-6 * optimum
        # the recorded loss is the kernel's own at the result, not the value the optimizer saw
        gW, gb = np.empty_like(state.coef), np.empty_like(state.intercept)
        assert state.history[-1]["train_loss"] == kernels.linear_softmax_ce(
            X, 1.0, state.coef, state.intercept, y, None, alpha, gW, gb, 1)
        resolved_evaluations += per_iteration

    # the same fits on the plain float32 loss: the stalls these data show (measured: line
    # searches of 19-43 evaluations at three of the four strengths with Cython's kernels,
    # 24-27 at two with Numba's)
    monkeypatch.setattr(_ResolvedObjective, "RESOLUTION", -1.0)
    plain_evaluations = []
    for alpha in (1e-3, 1e-4, 1e-5, 1e-6):
        plain_evaluations += _fit(kernels, X, y, alpha, np.float32, tol)[3]
    assert max(plain_evaluations) >= 10
    assert sum(plain_evaluations) > 1.5 * sum(resolved_evaluations)


def _quadratic(theta, dtype):
    """0.5 |theta|^2 + 1 rounded to ``dtype``, and its exact gradient."""
    return float(dtype(0.5 * theta @ theta + 1.0)), theta.copy()


def test_the_resolved_value_integrates_the_gradients_within_the_band():
    resolved = _ResolvedObjective(np.float32)
    base = np.full(4, 1e-3)
    assert resolved.value(base, *_quadratic(base, np.float32)) == _quadratic(base,
                                                                             np.float32)[0]
    step = base * (1 - 1e-3)  # a decrease of ~4e-9: below float32's resolution of 1.0
    loss, gradient = _quadratic(step, np.float32)
    assert loss == _quadratic(base, np.float32)[0]  # the plain loss sees no change
    exact = 0.5 * (step @ step - base @ base)
    value = resolved.value(step, loss, gradient)
    assert value - _quadratic(base, np.float32)[0] == pytest.approx(exact, rel=1e-9)
    far = np.full(4, 0.5)  # beyond the band: the plain loss
    assert resolved.value(far, *_quadratic(far, np.float32)) == _quadratic(far, np.float32)[0]
    for bad in (np.nan, np.inf):  # a non-finite loss reaches the optimizer (and its checks)
        value = resolved.value(step, bad, gradient)
        assert value == bad or (np.isnan(bad) and np.isnan(value))


def test_accepting_a_point_moves_the_base_only_to_the_last_evaluation():
    resolved = _ResolvedObjective(np.float32)
    points = [np.full(3, v) for v in (1e-3, 0.999e-3, 0.998e-3)]
    values = [resolved.value(p, *_quadratic(p, np.float32)) for p in points[:2]]
    resolved.accept(points[1])
    assert resolved.base[1] == values[1]
    # the next value is measured from the accepted point, continuing its value
    value = resolved.value(points[2], *_quadratic(points[2], np.float32))
    assert value - values[1] == pytest.approx(0.5 * (points[2] @ points[2]
                                                     - points[1] @ points[1]), rel=1e-9)
    resolved.accept(points[0])  # not the last evaluation: no base, the next one starts anew
    assert resolved.base is None
    assert resolved.value(points[0], 2.5, points[0]) == 2.5


def test_float64_evaluations_are_given_as_they_are():
    resolved = _ResolvedObjective(np.float64)
    for value in (1.0, 1.0 - 1e-12, 0.5):
        theta = np.full(2, value)
        assert resolved.value(theta, value, theta) == value
    assert lbfgs._ResolvedObjective.RESOLUTION > 0
