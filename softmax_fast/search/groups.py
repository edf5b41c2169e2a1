"""Groups of configurations that train on the same minibatches, and how one group trains.

A *model* is a configuration without ``max_iter``: its configurations are checkpoints of one
run. Models that share batch size and shuffling see the same minibatches, so they form a
group and train together (:mod:`softmax_fast.kernels.contract`, the ``multi`` family); each
model follows its own :class:`~softmax_fast._training.policy.TrainingPolicy`, exactly as
``SoftmaxRegression.fit`` would, and leaves the group when it converges, diverges or reaches
its last checkpoint. A model's numbers never depend on the group it trained in.
"""

import math
import time
import types

import numpy as np

from softmax_fast._training.policy import SGDConfig, TrainingPolicy
from softmax_fast._training.sampling import epoch_order
from softmax_fast._training.scoring import score_models
from softmax_fast._training.sgd import initial_coef
from softmax_fast.backends import get_kernels

from .grid import config_key

__all__ = ["make_tasks", "run_group", "Cancelled"]


class Cancelled(Exception):
    """The search stopped (an error elsewhere or Ctrl-C) while this group was training."""


def make_tasks(configs, pending, max_group_size, settings):
    """Split the pending configurations into groups of models that share minibatches.

    Returns a list of task dicts (picklable, for Dask): ``models`` (each with ``params`` and
    ``checkpoints``: max_iter -> config indices), ``group`` (a number) and ``settings``.
    """
    models = {}
    for index in pending:
        params = configs[index]
        key = config_key({**params, "max_iter": 0})
        models.setdefault(key, {"params": {**params, "max_iter": 0}, "checkpoints": {}})
        models[key]["checkpoints"].setdefault(params["max_iter"], []).append(index)
    buckets = {}
    for model in models.values():
        p = model["params"]
        buckets.setdefault((p["batch_size"], p["shuffle"]), []).append(model)
    tasks = []
    for bucket in buckets.values():
        for start in range(0, len(bucket), max_group_size):
            tasks.append({"models": bucket[start:start + max_group_size], **settings})
    # longest first: small batches and many epochs cost the most, so they must not be last
    tasks.sort(key=lambda t: -len(t["models"]) * max(max(m["checkpoints"]) for m in t["models"])
               * (1.0 + 64.0 / t["models"][0]["params"]["batch_size"]))
    for number, task in enumerate(tasks):
        task["group"] = number
    return tasks


class _ModelGroup:
    """The stacked weights (K, c, d) of the group's still-training models."""

    def __init__(self, models, n_features, n_classes, seed):
        params = [m["params"] for m in models]
        self.coefs = np.stack([initial_coef(n_classes, n_features, np.float32, seed,
                                            p["init"]) for p in params])
        self.scales = np.ones(len(models))
        self.intercepts = np.zeros((len(models), n_classes), dtype=np.float32)
        self.momentum = np.array([p["momentum"] for p in params], dtype=np.float64)
        self.nesterov = np.array([p["nesterovs_momentum"] for p in params], dtype=np.bool_)
        self.alpha = np.array([p["alpha"] for p in params], dtype=np.float64)
        if np.any(self.momentum != 0.0):
            self.velocity = np.zeros_like(self.coefs)
            self.velocity_intercepts = np.zeros_like(self.intercepts)
        else:
            self.velocity = self.velocity_intercepts = None
        self.members = list(range(len(models)))  # model number of each stacked block

    def keep(self, members):
        """Drop every stacked model not in ``members`` (a sublist of ``self.members``)."""
        if members == self.members:
            return
        pos = [self.members.index(m) for m in members]
        for name in ("coefs", "scales", "intercepts", "momentum", "nesterov", "alpha",
                     "velocity", "velocity_intercepts"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, np.ascontiguousarray(value[pos]))
        self.members = list(members)

    def sq_norms(self):
        """||W_j||^2 per stacked model in float64 (with the lazy scale)."""
        flat = self.coefs.reshape(len(self.members), -1).astype(np.float64)
        return np.einsum("jf,jf->j", flat, flat) * self.scales ** 2

    def intercepts_finite(self):
        return np.isfinite(self.intercepts).all(axis=1)

    def epoch(self, kernels, X, x_scale, y, order, lr, batch_size, n_threads):
        return kernels.multi_sgd_epoch(
            X, x_scale, y, order, self.coefs, self.scales, self.intercepts, self.velocity,
            self.velocity_intercepts, lr, self.alpha, self.momentum, self.nesterov, batch_size,
            n_threads)

    def evaluate(self, X, x_scale, y, members):
        """Validation loss and accuracy of ``members`` (a subset of the stacked models)."""
        pos = [self.members.index(m) for m in members]
        return score_models(self.coefs[pos], self.intercepts[pos], X, x_scale, y,
                            scales=self.scales[pos])


def _finite_or_none(value):
    value = float(value)
    return value if math.isfinite(value) else None


def _end_epoch(group, states, data_loss, n):
    """Every member's policy judges the epoch; returns the members that leave the group."""
    with np.errstate(invalid="ignore", over="ignore"):
        train_losses = data_loss + 0.5 * group.alpha * group.sq_norms()
    finite_b = group.intercepts_finite()
    leaving = set()
    for j, m in enumerate(group.members):
        st = states[m]
        st.train_loss = float(train_losses[j])
        outcome = st.policy.end_epoch(n, st.train_loss, finite_weights=bool(finite_b[j]))
        if outcome.diverged:
            st.status = "diverged"
        # converged: later checkpoints see these weights, as a lone fit would
        if outcome.diverged or outcome.stop is not None or st.policy.epochs_done == st.last:
            leaving.add(m)
    return leaving


def run_group(task, X_tr, y_tr, X_va, y_va, n_threads=1, stop=None, on_epoch=None):
    """Train one group and return ``[(config index, result row), ...]``.

    Every model follows its own training policy epoch by epoch (schedule, tol /
    n_iter_no_change stopping, divergence), as ``SoftmaxRegression.fit`` does. ``stop`` (a
    ``threading.Event``) set by the caller abandons the group between epochs;
    ``on_epoch(group, epoch, n_models)`` is called after each of its epochs (progress).
    """
    models = task["models"]
    n = X_tr.shape[0]
    x_scale = task["input_scale"]
    first = models[0]["params"]
    batch_size, shuffle = first["batch_size"], first["shuffle"]
    kernels = get_kernels(task["kernel"], "multi")
    group = _ModelGroup(models, X_tr.shape[1], task["n_classes"], task["seed"])
    states = [types.SimpleNamespace(
        policy=TrainingPolicy(SGDConfig.from_params(m["params"]), epoch_size=n),
        train_loss=None,
        status="ok", seconds=0.0, last=max(m["checkpoints"]), metrics=None) for m in models]
    out = []

    def emit(member, epochs):
        """Rows of ``member``'s checkpoints in ``epochs`` from its current metrics."""
        st = states[member]
        diverged = st.status == "diverged"
        for epoch in epochs:
            for index in models[member]["checkpoints"][epoch]:
                val_loss, val_acc = (None, None) if diverged else st.metrics
                out.append((index, {
                    **models[member]["params"], "max_iter": epoch, "val_loss": val_loss,
                    "val_accuracy": val_acc,
                    "train_loss": None if diverged else _finite_or_none(st.train_loss),
                    "n_iter": st.policy.epochs_done, "seconds": st.seconds,
                    "status": st.status, "search_id": task["search_id"]}))

    epoch = 0
    while group.members:
        if stop is not None and stop.is_set():
            raise Cancelled
        epoch += 1
        t0 = time.perf_counter()
        members = group.members
        lr = np.array([states[m].policy.next_learning_rate() for m in members])
        # every member has run epoch - 1 epochs: one order for all of them
        order = epoch_order(n, task["seed"], epoch - 1, shuffle)
        data_loss = group.epoch(kernels, X_tr, x_scale, y_tr, order, lr, batch_size, n_threads)
        if on_epoch is not None:
            on_epoch(task["group"], epoch, len(members))
        leaving = _end_epoch(group, states, data_loss, n)
        # validation where a checkpoint is due, or for models leaving the group
        due = [m for m in members if states[m].status == "ok" and (
            states[m].policy.epochs_done in models[m]["checkpoints"] or m in leaving)]
        if due:
            loss, acc = group.evaluate(X_va, x_scale, y_va, due)
            for j, m in enumerate(due):
                states[m].metrics = (_finite_or_none(loss[j]), float(acc[j]))
        share = (time.perf_counter() - t0) / len(members)
        for m in members:
            st = states[m]
            st.seconds += share
            if m in leaving:
                emit(m, [e for e in models[m]["checkpoints"] if e >= st.policy.epochs_done])
            elif st.policy.epochs_done in models[m]["checkpoints"]:
                emit(m, [st.policy.epochs_done])
        if leaving:
            group.keep([m for m in members if m not in leaving])
    return out
