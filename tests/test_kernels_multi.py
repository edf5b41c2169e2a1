"""Contract tests of the ``multi`` kernel family (:class:`~softmax_fast.kernels.contract.MultiModelKernels`).

``multi_sgd_epoch`` trains K models on the same minibatches (grid search). The implementations
come from the backend registry (``conftest.py``). Every non-oracle one is compared model by
model with the float64 oracle (``reference``: each model trained alone by
``sgd_epoch_reference``) on a group that mixes plain, momentum and Nesterov models, a lazily
scaled model and one whose weight decay folds its lazy scale within the epoch; and it must be
*independent of the grouping*: a model's numbers are bitwise the same alone, inside any group
(including diverging and chaotic neighbours) and for any ``n_threads``.

Model j's weights are ``scales[j] * coefs[j]``: every comparison is on these effective weights.
"""

import dataclasses

import numpy as np
import pytest
from conftest import assert_close

from softmax_fast._training.sampling import epoch_order
from softmax_fast.kernels import reference as ref  # the multi family's oracle (test_registry)

# Tolerance (relative to the largest entry, see assert_close) against the float64 oracle.
# The multi-model kernels work in float32 (the weights, X's batch, the logits and exp), with
# sums and the loss in float64. One step rounds the weights to float32 (eps ~6e-8) and the
# logits carry ~sqrt(d) eps32; over an epoch of tens of chained steps that compounds to the
# ~1e-6 measured here, so 1e-4 (as for the float32 dense SGD epoch) leaves margin only for
# rounding, not for a wrong update rule or scale (errors of those are O(lr) ~ 1e-2).
TOL = 1e-4

N, D, C = 203, 37, 5  # 203 rows at batch 8: the last minibatch is partial (3 rows)


@dataclasses.dataclass(frozen=True)
class Config:
    """One model's hyperparameters and its initial state (drawn from ``seed``)."""

    lr: float
    alpha: float = 0.0
    momentum: float = 0.0
    nesterov: bool = False
    scale: float = 1.0  # initial lazy scale (plain models only)
    seed: int = 0


CONFIGS = {
    "plain": Config(0.1, 1e-3, seed=1),
    # alpha = 0 keeps a lazy scale of 0.5 through the epoch: weights are 0.5 * coefs
    "plain_scaled": Config(0.05, 0.0, scale=0.5, seed=2),
    # lr * alpha = 0.3: the lazy decay factor 0.7^k drops below 2^-8 after 16 of the 26 steps,
    # so an implementation with a lazy scale must fold it into the weights within the epoch
    "plain_fold": Config(0.5, 0.6, seed=3),
    "momentum": Config(0.1, 1e-2, momentum=0.9, seed=4),
    "nesterov": Config(0.2, 1e-3, momentum=0.9, nesterov=True, seed=5),
    # a huge but finite step with heavy Nesterov momentum: any difference of rounding between
    # two runs grows into a visible one, which makes bitwise comparisons sharp
    "chaotic": Config(60.0, 0.0, momentum=0.99, nesterov=True, seed=6),
    "chaotic_plain": Config(40.0, 0.04, seed=7),
    # float32 weights overflow on the first step: the model's loss is NaN
    "diverging": Config(1e39, 0.0, seed=8),
    "diverging_momentum": Config(1e39, 0.0, momentum=0.9, seed=9),
}
MIXED = ["plain", "plain_scaled", "plain_fold", "momentum", "nesterov"]


@dataclasses.dataclass
class Models:
    """The stacked state and hyperparameters of K models, as the contract passes them."""

    coefs: np.ndarray
    scales: np.ndarray
    intercepts: np.ndarray
    velocity_coefs: np.ndarray | None
    velocity_intercepts: np.ndarray | None
    lr: np.ndarray
    alpha: np.ndarray
    momentum: np.ndarray
    nesterov: np.ndarray

    def copy(self):
        """A copy of the state; the (read-only) hyperparameter arrays are shared."""
        state = ("coefs", "scales", "intercepts", "velocity_coefs", "velocity_intercepts")
        return dataclasses.replace(self, **{k: None if getattr(self, k) is None
                                            else getattr(self, k).copy() for k in state})

    def state(self):
        """Everything an epoch writes, for bitwise comparisons."""
        return [self.coefs, self.scales, self.intercepts, self.velocity_coefs,
                self.velocity_intercepts]

    def weights(self):
        """The effective weights scales[j] * coefs[j], in float64."""
        return self.scales[:, None, None] * self.coefs.astype(np.float64)

    def take(self, j):
        return Models(**{k: None if v is None else v[j:j + 1].copy()
                         for k, v in dataclasses.asdict(self).items()})


def make_models(names, velocities=True, initial_velocity=True):
    """Stack the models ``names`` (a name may repeat); each starts from its own seeded state."""
    cfgs = [CONFIGS[name] for name in names]
    coefs, intercepts, vcs, vbs = [], [], [], []
    for cfg in cfgs:
        rng = np.random.default_rng(cfg.seed)
        coefs.append(rng.standard_normal((C, D)) * 0.05)
        intercepts.append(rng.standard_normal(C) * 0.1)
        has_v = cfg.momentum != 0.0 and initial_velocity  # a resumed momentum model
        vcs.append(rng.standard_normal((C, D)) * 0.01 * has_v)
        vbs.append(rng.standard_normal(C) * 0.01 * has_v)
    f32 = np.float32
    return Models(
        coefs=np.array(coefs, dtype=f32),
        scales=np.array([cfg.scale for cfg in cfgs], dtype=np.float64),
        intercepts=np.array(intercepts, dtype=f32),
        velocity_coefs=np.array(vcs, dtype=f32) if velocities else None,
        velocity_intercepts=np.array(vbs, dtype=f32) if velocities else None,
        lr=np.array([cfg.lr for cfg in cfgs], dtype=np.float64),
        alpha=np.array([cfg.alpha for cfg in cfgs], dtype=np.float64),
        momentum=np.array([cfg.momentum for cfg in cfgs], dtype=np.float64),
        nesterov=np.array([cfg.nesterov for cfg in cfgs], dtype=bool),
    )


def make_data(kind="uint8", seed=0):
    rng = np.random.default_rng(seed)
    X8 = rng.integers(0, 256, (N, D), dtype=np.uint8)
    y = rng.integers(0, C, N).astype(np.intp)
    if kind == "uint8":
        return X8, 1 / 255, y
    return (X8 / 100.0).astype(np.float32), 0.4, y  # float X with an x_scale of its own


def run_epoch(mod, X, x_scale, y, order, models, batch_size=8, n_threads=1):
    """One epoch on a copy of ``models``; returns (losses, the trained copy)."""
    m = models.copy()
    losses = mod.multi_sgd_epoch(X, x_scale, y, order, m.coefs, m.scales, m.intercepts,
                                 m.velocity_coefs, m.velocity_intercepts, m.lr, m.alpha,
                                 m.momentum, m.nesterov, batch_size, n_threads)
    losses = np.asarray(losses)
    assert losses.shape == (len(m.lr),) and losses.dtype == np.float64
    return losses, m


def assert_models_close(got, want, losses, want_losses, tol=TOL):
    for j in range(len(want_losses)):
        assert losses[j] == pytest.approx(want_losses[j], rel=tol), f"loss of model {j}"
        assert_close(got.weights()[j], want.weights()[j], tol)
        assert_close(got.intercepts[j], want.intercepts[j], tol)
        if want.momentum[j] != 0.0:
            assert_close(got.velocity_coefs[j], want.velocity_coefs[j], tol)
            assert_close(got.velocity_intercepts[j], want.velocity_intercepts[j], tol)


def assert_bitwise_equal(got, want, got_loss, want_loss):
    """Every array an epoch writes, and the loss, bit for bit (NaN where NaN)."""
    np.testing.assert_array_equal(got_loss, want_loss)
    for name, a, b in zip(["coefs", "scales", "intercepts", "velocity_coefs",
                           "velocity_intercepts"], got.state(), want.state(), strict=True):
        if a is None or b is None:  # a model without momentum may be run without velocities
            continue
        np.testing.assert_array_equal(a, b, err_msg=name)


# --------------------------------------------------------------------------------------
# the oracle: each model trained alone, lazy scales applied to the weights
# --------------------------------------------------------------------------------------
class TestReference:
    def test_each_model_is_sgd_epoch_reference_alone(self):
        X, x_scale, y = make_data()
        order = epoch_order(N, seed=0, epoch=0)
        models = make_models(MIXED)
        losses, got = run_epoch(ref, X, x_scale, y, order, models)
        Xs = X.astype(np.float64) * x_scale
        for j, cfg in enumerate(CONFIGS[name] for name in MIXED):
            W = models.weights()[j].copy()
            b = models.intercepts[j].astype(np.float64)
            vW = models.velocity_coefs[j].astype(np.float64)
            vb = models.velocity_intercepts[j].astype(np.float64)
            loss = ref.sgd_epoch_reference(Xs, y, W, b, order, lr=cfg.lr, alpha=cfg.alpha,
                                           batch_size=8, momentum=cfg.momentum,
                                           nesterov=cfg.nesterov, velocity_W=vW,
                                           velocity_b=vb)
            assert losses[j] == loss
            np.testing.assert_array_equal(got.weights()[j], W.astype(np.float32))
            np.testing.assert_array_equal(got.intercepts[j], b.astype(np.float32))


# --------------------------------------------------------------------------------------
# every fast implementation against the oracle
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("x_kind,batch_size,n_rows", [
    ("uint8", 8, N), ("float32", 8, N),
    # batch 1 over the first 48 rows of the order (an order over a subset of X's rows): 203
    # single-row Nesterov steps compound float32 rounding past TOL (the dense float32 kernels
    # drift as far on that trajectory)
    ("uint8", 1, 48),
    ("uint8", 1000, N),  # one batch larger than the epoch
])
def test_multi_sgd_epoch_matches_reference(fast_multi_backend, x_kind, batch_size, n_rows):
    """Plain, lazily scaled, folding, momentum and Nesterov models in one group, two epochs."""
    X, x_scale, y = make_data(x_kind)
    fold = CONFIGS["plain_fold"]
    steps = -(-n_rows // min(batch_size, n_rows))
    if steps > 1:  # the decay factor would underflow 2^-8 within the epoch: a fold is needed
        assert (1 - fold.lr * fold.alpha) ** steps < 2.0 ** -8
    fast, oracle = make_models(MIXED), make_models(MIXED)
    for epoch in range(2):  # the second epoch starts from the state the first one wrote
        order = epoch_order(N, seed=3, epoch=epoch)[:n_rows]
        losses, fast = run_epoch(fast_multi_backend, X, x_scale, y, order, fast, batch_size)
        want_losses, oracle = run_epoch(ref, X, x_scale, y, order, oracle, batch_size)
        assert np.all(np.isfinite(losses))
        assert_models_close(fast, oracle, losses, want_losses)
    assert np.max(np.abs(fast.weights() - make_models(MIXED).weights())) > 1e-2  # trained


def test_models_without_momentum_need_no_velocities(fast_multi_backend):
    X, x_scale, y = make_data()
    order = epoch_order(N, seed=0, epoch=0)
    plain = ["plain", "plain_scaled", "plain_fold"]
    losses, got = run_epoch(fast_multi_backend, X, x_scale, y, order,
                            make_models(plain, velocities=False))
    want_losses, want = run_epoch(ref, X, x_scale, y, order, make_models(plain))
    assert_models_close(got, want, losses, want_losses)


# --------------------------------------------------------------------------------------
# independence of the grouping (the oracle trains each model alone anyway: not tested)
# --------------------------------------------------------------------------------------
CROWD = ["diverging", "plain", "chaotic", "momentum", "plain_fold", "diverging_momentum",
         "nesterov", "chaotic_plain", "plain_scaled", "plain", "chaotic", "momentum",
         "nesterov"]


@pytest.mark.parametrize("x_kind", ["uint8", "float32"])
def test_a_model_alone_equals_the_same_model_in_any_group(fast_multi_backend, x_kind):
    """Bitwise: alone on one thread == inside a crowd of 13 on 1 or 2 threads == alone on 2.

    The crowd holds diverging models (their weights overflow to inf/NaN on the first step)
    and chaotic ones; its size and the thread counts change how an implementation may split
    the models into tasks, which must never change a model's numbers.
    """
    X, x_scale, y = make_data(x_kind, seed=1)
    order = epoch_order(N, seed=1, epoch=0)
    crowd = make_models(CROWD)
    grouped = {t: run_epoch(fast_multi_backend, X, x_scale, y, order, crowd, n_threads=t)
               for t in (1, 2)}
    # the whole group: the same bits for any thread count
    assert_bitwise_equal(grouped[2][1], grouped[1][1], grouped[2][0], grouped[1][0])
    losses, trained = grouped[2]
    diverging = np.array(["diverging" in name for name in CROWD])
    assert not np.any(np.isfinite(losses[diverging]))
    assert np.all(np.isfinite(losses[~diverging])), "a diverging model contaminated others"
    for j, name in enumerate(CROWD):
        for t in (1, 2):
            has_momentum = CONFIGS[name].momentum != 0.0
            # a plain model alone is run without velocity buffers
            alone = make_models([name], velocities=has_momentum)
            alone_loss, alone_trained = run_epoch(fast_multi_backend, X, x_scale, y, order,
                                                  alone, n_threads=t)
            assert_bitwise_equal(trained.take(j), alone_trained, losses[j:j + 1], alone_loss)


def test_a_model_in_a_different_position_and_group(fast_multi_backend):
    """The same models in two different groups (other neighbours, other order): same bits."""
    X, x_scale, y = make_data()
    order = epoch_order(N, seed=2, epoch=0)
    first = ["chaotic", "plain_fold", "nesterov", "diverging", "plain"]
    second = ["momentum", "plain", "diverging_momentum", "nesterov", "plain_fold",
              "chaotic_plain", "chaotic"]
    la, a = run_epoch(fast_multi_backend, X, x_scale, y, order, make_models(first),
                      n_threads=2)
    lb, b = run_epoch(fast_multi_backend, X, x_scale, y, order, make_models(second),
                      n_threads=2)
    for i, name in enumerate(first):
        if name in second:
            j = second.index(name)
            assert_bitwise_equal(a.take(i), b.take(j), la[i:i + 1], lb[j:j + 1])


# --------------------------------------------------------------------------------------
# every implementation, the oracle included
# --------------------------------------------------------------------------------------
def test_nan_in_x_gives_non_finite_losses(multi_backend):
    X, _, y = make_data("float32")
    X = X.copy()
    X[7, 3] = np.nan
    order = epoch_order(N, seed=0, epoch=0)
    losses, _ = run_epoch(multi_backend, X, 1.0, y, order, make_models(MIXED))
    assert not np.any(np.isfinite(losses))


def test_empty_order_leaves_the_models_unchanged(multi_backend):
    X, x_scale, y = make_data()
    models = make_models(MIXED)
    losses, got = run_epoch(multi_backend, X, x_scale, y, np.empty(0, dtype=np.intp), models)
    np.testing.assert_array_equal(losses, 0.0)
    np.testing.assert_allclose(got.weights(), models.weights(), rtol=1e-7)
    np.testing.assert_array_equal(got.intercepts, models.intercepts)


def test_read_only_inputs(multi_backend):
    X, x_scale, y = make_data()
    order = epoch_order(N, seed=0, epoch=0)
    models = make_models(MIXED)
    want_losses, want = run_epoch(multi_backend, X, x_scale, y, order, models)
    X, y, order = X.copy(), y.copy(), order.copy()
    ro = models.copy()
    for a in (X, y, order, ro.lr, ro.alpha, ro.momentum, ro.nesterov):
        a.flags.writeable = False
    losses, got = run_epoch(multi_backend, X, x_scale, y, order, ro)
    assert_bitwise_equal(got, want, losses, want_losses)
