"""Accuracy on the full Fashion-MNIST from Debian's ``dataset-fashion-mnist`` (CI installs it).

These train on the real 60,000 images, so they are marked ``slow`` and ``fashion``. They are
skipped only when the Debian files are absent, which in CI (``CI`` set) is a failure instead.
"""

import os

import numpy as np
import pytest
from conftest import FAST_DENSE, require_backend

from softmax_fast import SoftmaxRegression
from softmax_fast._training.sampling import epoch_order
from softmax_fast.datasets import load_dataset
from softmax_fast.kernels import reference as ref

FAST_DENSE_NAMES = [info.name for info in FAST_DENSE]

pytestmark = [pytest.mark.slow, pytest.mark.fashion]


@pytest.fixture(scope="module")
def fashion():
    try:
        return load_dataset("fashion-mnist", download=False)
    except Exception as exc:  # not installed: the Debian package provides it
        if os.environ.get("CI"):
            pytest.fail(f"full Fashion-MNIST missing in CI: {exc}")
        pytest.skip(f"full Fashion-MNIST not installed (apt-get install dataset-fashion-mnist): "
                    f"{exc}")


def test_reference_sgd_reaches_83_percent_in_5_epochs(fashion):
    """The NumPy reference trainer, as the course reports wrote it, on pixels scaled to [0, 1]."""
    X_train, y_train, X_test, y_test = fashion
    X = X_train / 255.0
    W, b = np.zeros((10, 784)), np.zeros(10)
    for epoch in range(5):
        ref.sgd_epoch_reference(X, y_train, W, b, epoch_order(len(y_train), 0, epoch),
                                lr=0.05, alpha=1e-5, batch_size=32)
    accuracy = np.mean(np.argmax(X_test / 255.0 @ W.T + b, axis=1) == y_test)
    assert accuracy >= 0.83


@pytest.mark.parametrize("backend_name", FAST_DENSE_NAMES)
def test_default_hyperparameters_reach_84_percent_in_10_epochs(fashion, backend_name):
    """The documented defaults with uint8 pixels kept in memory and input_scale=1/255."""
    X_train, y_train, X_test, y_test = fashion
    model = SoftmaxRegression(input_scale=1 / 255, random_state=0,
                              backend=require_backend(backend_name))
    assert model.get_params()["max_iter"] == "auto"  # 10 epochs for SGD
    model.fit(X_train, y_train)
    assert model.solver_ == "sgd" and model.n_iter_ == 10  # "auto": SGD for 47 M values
    assert model.score(X_test, y_test) >= 0.84
