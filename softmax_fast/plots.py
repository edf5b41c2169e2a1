"""Plots of training runs, models and grid searches (matplotlib, the optional ``plot`` extra).

Every function draws on its own :class:`matplotlib.figure.Figure` with the Agg canvas — no
pyplot, so no global state, no GUI backend and nothing left open — and writes the PNG
atomically (a temporary file renamed into place). Figures have a fixed size in inches and a
fixed dpi and are saved without ``bbox_inches="tight"``, so the image size in pixels is
exactly ``figsize * dpi``, which the tests check.

matplotlib is imported on first use; without it every function raises :class:`PlotError`
with the command that installs it.
"""

import math

import numpy as np

from softmax_fast._io import atomic_output

__all__ = [
    "FASHION_MNIST_CLASSES",
    "PlotError",
    "plot_confusion_matrix",
    "plot_history",
    "plot_iterations",
    "plot_path",
    "plot_search_heatmap",
    "plot_weights",
]

#: Class names of Fashion-MNIST labels 0..9.
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")

DPI = 100


class PlotError(RuntimeError):
    """Plotting is impossible: matplotlib is missing, or the data cannot be drawn."""


def _figure(width, height):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotError("plotting needs matplotlib: pip install 'softmax-fast[plot]'") from None
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    return path


def plot_history(history, path, *, title=None):
    """Loss and accuracy per epoch (train and validation), side by side; 1000x400 pixels.

    Parameters
    ----------
    history : list of dict
        Records with ``epoch``, ``train_loss`` and optionally ``val_loss``, ``val_accuracy``
        and ``train_accuracy`` (``SoftmaxRegression.history_``).
    path : str or os.PathLike
        The PNG file to write.
    title : str, optional

    Returns
    -------
    path
    """
    if not history:
        raise PlotError("no training history to plot (L-BFGS has no epochs)")
    fig = _figure(10, 4)
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = [r["epoch"] for r in history]

    def series(key):
        values = [r.get(key) for r in history]
        return values if all(v is not None for v in values) else None

    ax_loss.plot(epochs, series("train_loss"), marker="o", label="train_loss (with L2)")
    if series("val_loss"):
        ax_loss.plot(epochs, series("val_loss"), marker="o", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="Loss")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    has_accuracy = False
    for key, label in (("train_accuracy", "train"), ("val_accuracy", "validation")):
        if series(key):
            ax_acc.plot(epochs, series(key), marker="o", label=label)
            has_accuracy = True
    if has_accuracy:
        ax_acc.legend()
    else:
        ax_acc.text(0.5, 0.5, "no validation data", ha="center", va="center",
                    transform=ax_acc.transAxes)
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    ax_acc.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_iterations(iterations, path, *, val_loss=None, val_accuracy=None, title=None):
    """An L-BFGS run: the objective per iteration, and the final validation figures; 1000x400.

    L-BFGS has no epochs and validates only its optimum, so the validation loss is one point
    at the last iteration and the accuracy panel shows the figures as text.

    Parameters
    ----------
    iterations : list of dict
        Records with ``iteration`` and ``train_loss`` (``TrainingResult.iterations``).
    path : str or os.PathLike
    val_loss, val_accuracy : float, optional
        Validation figures of the optimum.
    title : str, optional

    Returns
    -------
    path
    """
    if not iterations:
        raise PlotError("no L-BFGS iterations to plot")
    fig = _figure(10, 4)
    ax_loss, ax_acc = fig.subplots(1, 2)
    steps = [r["iteration"] for r in iterations]
    ax_loss.plot(steps, [r["train_loss"] for r in iterations], label="train_loss (with L2)")
    if val_loss is not None:
        ax_loss.plot([steps[-1]], [val_loss], marker="o", linestyle="",
                     label="validation (optimum)")
    ax_loss.set(xlabel="L-BFGS iteration", ylabel="cross-entropy", title="Loss")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    ax_acc.set_axis_off()
    lines = [f"{len(iterations)} iterations", f"train_loss {iterations[-1]['train_loss']:.4f}"]
    if val_loss is not None:
        lines.append(f"validation loss {val_loss:.4f}")
    if val_accuracy is not None:
        lines.append(f"validation accuracy {val_accuracy:.4f}")
    ax_acc.text(0.5, 0.5, "\n".join(lines), ha="center", va="center", fontsize=12,
                transform=ax_acc.transAxes)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_path(rows, path, *, chosen, title=None):
    """Validation accuracy (and loss) over the L2 strength of a regularization path; 800x500.

    Parameters
    ----------
    rows : list of dict
        ``alpha``, ``val_accuracy`` and ``val_loss`` per strength (``TrainingResult.path``).
    path : str or os.PathLike
    chosen : float
        The chosen strength, marked.
    title : str, optional

    Returns
    -------
    path
    """
    if not rows:
        raise PlotError("no regularization path to plot")
    rows = sorted(rows, key=lambda r: r["alpha"])
    alphas = [r["alpha"] for r in rows]
    fig = _figure(8, 5)
    ax = fig.subplots()
    ax.plot(alphas, [r["val_accuracy"] for r in rows], marker="o", label="validation accuracy")
    # alpha = 0 has no place on a log axis: symlog is linear below the smallest strength.
    positive = [a for a in alphas if a > 0]
    if positive and len(positive) < len(alphas):
        ax.set_xscale("symlog", linthresh=min(positive))
    elif positive:
        ax.set_xscale("log")
    best = next(r for r in rows if r["alpha"] == chosen)
    ax.axvline(chosen, color="tab:red", linestyle="--", alpha=0.6)
    ax.plot([chosen], [best["val_accuracy"]], marker="*", markersize=14, color="tab:red",
            linestyle="", label=f"chosen alpha {chosen:.3g}")
    ax.set(xlabel="alpha (L2 strength)", ylabel="validation accuracy",
           title=title or "Regularization path")
    ax.grid(alpha=0.3)
    loss_ax = ax.twinx()
    loss_ax.plot(alphas, [r["val_loss"] for r in rows], color="tab:gray", alpha=0.5,
                 label="validation loss")
    loss_ax.set_ylabel("validation loss")
    handles = ax.get_legend_handles_labels()
    extra = loss_ax.get_legend_handles_labels()
    ax.legend(handles[0] + extra[0], handles[1] + extra[1], loc="best")
    fig.tight_layout()
    return _save(fig, path)


def image_shape(n_features):
    """The (height, width) of square images with ``n_features`` pixels, or None."""
    side = math.isqrt(n_features)
    return (side, side) if side * side == n_features and side >= 4 else None


def plot_weights(coef, path, *, class_names=None, shape=None):
    """One image per class of its weights, diverging colormap centred at 0; 1000x450 pixels.

    Parameters
    ----------
    coef : array of shape (n_classes, n_features)
        ``SoftmaxRegression.coef_``.
    path : str or os.PathLike
    class_names : sequence of str, optional
        Tile titles (default: the class index).
    shape : (int, int), optional
        Image shape; default: square (``28x28`` for 784 features).

    Returns
    -------
    path

    Raises
    ------
    PlotError
        If the features are not square images and no ``shape`` is given.
    """
    coef = np.asarray(coef, dtype=np.float64)
    shape = shape or image_shape(coef.shape[1])
    if shape is None or shape[0] * shape[1] != coef.shape[1]:
        raise PlotError(f"{coef.shape[1]} features are not square images; no weight images")
    n_classes = coef.shape[0]
    cols = min(5, n_classes)
    rows = math.ceil(n_classes / cols)
    fig = _figure(10, 0.5 + 2.0 * rows)
    # One symmetric scale for all tiles: white is 0, and tiles compare with each other.
    limit = float(np.abs(coef).max()) or 1.0
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    image = None
    for k, ax in enumerate(axes):
        ax.set_axis_off()
        if k >= n_classes:
            continue
        image = ax.imshow(coef[k].reshape(shape), cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(class_names[k] if class_names is not None else f"class {k}", fontsize=10)
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="weight")
    return _save(fig, path)


def plot_confusion_matrix(matrix, path, *, class_names=None, normalize=True):
    """The confusion matrix (rows: true class, columns: predicted); 700x600 pixels.

    Parameters
    ----------
    matrix : array of shape (n_classes, n_classes)
        Counts, as from :func:`sklearn.metrics.confusion_matrix`.
    path : str or os.PathLike
    class_names : sequence of str, optional
    normalize : bool, default=True
        Colour by the share of each true class (the cells still show counts).

    Returns
    -------
    path
    """
    matrix = np.asarray(matrix)
    n = matrix.shape[0]
    names = list(class_names) if class_names is not None else [str(k) for k in range(n)]
    fig = _figure(7, 6)
    ax = fig.subplots()
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    image = ax.imshow(shares if normalize else matrix, cmap="Blues",
                      vmin=0, vmax=1 if normalize else None)
    if n <= 20:  # numbers in the cells stay legible up to about 20 classes
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=8,
                        color="white" if shares[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix")
    fig.colorbar(image, ax=ax, label="share of true class" if normalize else "count")
    fig.tight_layout()
    return _save(fig, path)


def plot_search_heatmap(results, path, *, x, y, metric="val_accuracy"):
    """Heatmap of ``metric`` over two hyperparameters of a grid search; 800x600 pixels.

    Where several results share an (x, y) cell (other hyperparameters varied too) the best
    value is shown: higher for accuracies, lower for losses.

    Parameters
    ----------
    results : list of dict
        ``grid_search(...).results``: hyperparameters and metrics per configuration.
    path : str or os.PathLike
    x, y : str
        Hyperparameter names (e.g. ``"learning_rate_init"``, ``"alpha"``).
    metric : str, default="val_accuracy"

    Returns
    -------
    path

    Raises
    ------
    PlotError
        If no result holds ``x``, ``y`` and a finite ``metric``.
    """
    rows = [r for r in results
            if x in r and y in r and isinstance(r.get(metric), (int, float))
            and math.isfinite(r[metric])]
    if not rows:
        raise PlotError(f"no finished results with {x}, {y} and {metric} to plot")
    xs = sorted({r[x] for r in rows})
    ys = sorted({r[y] for r in rows})
    higher_is_better = "loss" not in metric
    grid = np.full((len(ys), len(xs)), np.nan)
    for r in rows:
        i, j = ys.index(r[y]), xs.index(r[x])
        old = grid[i, j]
        better = max if higher_is_better else min
        grid[i, j] = r[metric] if np.isnan(old) else better(old, r[metric])
    fig = _figure(8, 6)
    ax = fig.subplots()
    image = ax.imshow(grid, cmap="viridis" if higher_is_better else "viridis_r",
                      origin="lower", aspect="auto")
    if grid.size <= 400:
        finite = grid[np.isfinite(grid)]
        middle = (finite.min() + finite.max()) / 2
        for i in range(len(ys)):
            for j in range(len(xs)):
                if np.isfinite(grid[i, j]):
                    dark = (grid[i, j] < middle) == higher_is_better
                    ax.text(j, i, f"{grid[i, j]:.3f}", ha="center", va="center", fontsize=8,
                            color="white" if dark else "black")
    ax.set_xticks(range(len(xs)), [f"{v:g}" for v in xs], rotation=45, ha="right")
    ax.set_yticks(range(len(ys)), [f"{v:g}" for v in ys])
    filled = int(np.isfinite(grid).sum())
    note = " (best over the other hyperparameters)" if len(rows) > filled else ""
    ax.set(xlabel=x, ylabel=y, title=f"{metric}{note}")
    fig.colorbar(image, ax=ax, label=metric)
    fig.tight_layout()
    return _save(fig, path)
