"""Every plot renders to a real PNG of the documented pixel size, written atomically."""

import sys

import numpy as np
import pytest

from softmax_fast import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

HISTORY = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.1 / e,
            "val_accuracy": 0.7 + e / 100, "learning_rate": 0.1, "seconds": 0.01}
           for e in range(1, 6)]
RESULTS = [{"learning_rate_init": lr, "alpha": a, "max_iter": m,
            "val_accuracy": 0.5 + lr + a * 100 + m / 100, "val_loss": 1 - lr,
            "status": "ok"}
           for lr in (0.01, 0.1, 0.3) for a in (0.0, 1e-4) for m in (1, 2)]


def read_png(path):
    """(height, width) of a PNG, read back with both Pillow and matplotlib."""
    import matplotlib.image as mpimg
    from PIL import Image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
    pixels = mpimg.imread(path)
    assert pixels.shape[:2] == (height, width)
    # A blank canvas would be one colour: the plot must have drawn something.
    assert np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0).shape[0] > 10
    return height, width


def test_history(tmp_path):
    assert read_png(plots.plot_history(HISTORY, tmp_path / "h.png", title="t")) == (400, 1000)


def test_history_without_validation(tmp_path):
    history = [{k: v for k, v in r.items() if not k.startswith("val")} for r in HISTORY]
    assert read_png(plots.plot_history(history, tmp_path / "h.png")) == (400, 1000)
    with pytest.raises(plots.PlotError, match="no training history"):
        plots.plot_history([], tmp_path / "none.png")


def test_weights_fashion_names(tmp_path):
    coef = np.random.default_rng(0).normal(size=(10, 784))
    path = plots.plot_weights(coef, tmp_path / "w.png", class_names=plots.FASHION_MNIST_CLASSES)
    assert read_png(path) == (450, 1000)


def test_weights_need_square_images(tmp_path):
    assert plots.image_shape(784) == (28, 28) and plots.image_shape(785) is None
    with pytest.raises(plots.PlotError, match="not square"):
        plots.plot_weights(np.zeros((3, 5)), tmp_path / "w.png")
    assert not (tmp_path / "w.png").exists()


def test_confusion_matrix(tmp_path):
    matrix = np.random.default_rng(1).integers(0, 50, size=(10, 10))
    path = plots.plot_confusion_matrix(matrix, tmp_path / "c.png",
                                       class_names=plots.FASHION_MNIST_CLASSES)
    assert read_png(path) == (600, 700)


def test_search_heatmap(tmp_path):
    path = plots.plot_search_heatmap(RESULTS, tmp_path / "s.png", x="learning_rate_init",
                                     y="alpha")
    assert read_png(path) == (600, 800)
    with pytest.raises(plots.PlotError, match="no finished results"):
        plots.plot_search_heatmap([{"alpha": 0, "val_accuracy": None}], tmp_path / "e.png",
                                  x="learning_rate_init", y="alpha")


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def broken_savefig(self, fname, **kwargs):
        with open(fname, "wb") as fh:
            fh.write(PNG_SIGNATURE)  # a partial file...
        raise OSError("disk full")  # ...then the failure

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        plots.plot_history(HISTORY, tmp_path / "h.png")
    assert list(tmp_path.iterdir()) == []


def test_missing_matplotlib_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(plots.PlotError, match=r"pip install 'softmax-fast\[plot\]'"):
        plots.plot_history(HISTORY, tmp_path / "h.png")


def test_cli_reports_missing_matplotlib(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from softmax_fast.cli import cli

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    result = CliRunner().invoke(cli, ["train", "-e", "1", "--plot", str(tmp_path / "p")])
    assert result.exit_code == 1
    assert result.stderr.strip() == ("softmax-fast: error: plotting needs matplotlib: "
                                     "pip install 'softmax-fast[plot]'")
