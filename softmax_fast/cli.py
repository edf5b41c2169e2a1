"""The ``softmax-fast`` command line (Click).

Commands: ``train``, ``evaluate``, ``predict``, ``search``, ``bench`` and ``datasets``
(``list``, ``download``). Each command imports numpy, scikit-learn, the kernels and the
estimator only when it runs, so ``softmax-fast --help`` does not pay for them (about a second).

Errors are one line on stderr and a non-zero exit status: 2 for usage errors (a bad option
value or combination, an unknown dataset name), 1 for everything else (a missing or bad file,
NaN in the data, a model that does not fit the data, a diverged training). ``--debug`` shows
the traceback instead. Output files (models, predictions, plots, JSON) are written to a
temporary file and renamed into place, so a failure never leaves a partial file behind.

Progress bars (epochs, grid-search configurations, downloads) use :func:`click.progressbar`
on stderr and are shown only when stderr is a terminal and ``--quiet`` is not given.

Shell completion (bash; zsh and fish likewise)::

    eval "$(_SOFTMAX_FAST_COMPLETE=bash_source softmax-fast)"
"""

import contextlib
import json
import math
import os
import sys
from pathlib import Path

import click

from softmax_fast import __version__
from softmax_fast._options import (
    POSITIVE_INT,
    GridValues,
    alpha_option,
    backend_option,
    batch_size_option,
    dataset_option,
    epochs_option,
    json_flag_option,
    lr_option,
    momentum_option,
    quiet_option,
    schedule_option,
    seed_option,
    solver_option,
    test_file_option,
    test_fraction_option,
    threads_option,
    val_fraction_option,
)

#: The named datasets (kept here, not imported from datasets.py, which imports numpy).
DATASET_NAMES = ("fashion-mnist", "fashion-mnist-sample")
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

MAIN_EXAMPLES = """
\b
Examples:
  softmax-fast train                         # bundled Fashion-MNIST sample, ~1 s
  softmax-fast train -d fashion-mnist --out model.npz --plot plots/
  softmax-fast evaluate model.npz -d fashion-mnist
  softmax-fast predict model.npz shoe.png --proba
  softmax-fast search --lr 1e-3:1e-0:4log --alpha 0,1e-4 --epochs 5,10
  softmax-fast bench --quick
  softmax-fast datasets

\b
Shell completion (bash; use zsh_source or fish_source for those shells):
  eval "$(_SOFTMAX_FAST_COMPLETE=bash_source softmax-fast)"
"""

TRAIN_EXAMPLES = """
\b
Examples:
  softmax-fast train                          # bundled Fashion-MNIST sample
  softmax-fast train -d fashion-mnist -e 5    # full data set (Debian package or download)
  softmax-fast train --lr 0.1 --batch-size 64 --alpha 1e-4 --seed 1
  softmax-fast train --solver lbfgs --alpha 1e-4 --epochs 200
  softmax-fast train -d mydata.csv --test mytest.csv --out model.npz --plot plots/
  softmax-fast train --early-stopping --epochs 50 --retrain-on-full --json > run.json
"""

EVALUATE_EXAMPLES = """
\b
Examples:
  softmax-fast evaluate model.npz                      # test split of the bundled sample
  softmax-fast evaluate model.npz -d fashion-mnist --plot plots/
  softmax-fast evaluate model.npz -d holdout.npz --json
"""

PREDICT_EXAMPLES = """
\b
Examples:
  softmax-fast predict model.npz shoe.png              # one 28x28 grayscale image
  softmax-fast predict model.npz a.png b.png --proba
  softmax-fast predict model.npz images.npy --out labels.csv
  softmax-fast predict model.npz t10k-images-idx3-ubyte.gz --out labels.npy
"""

SEARCH_EXAMPLES = """
\b
Examples:
  softmax-fast search --lr 1e-3,1e-2,1e-1 --alpha 0,1e-5,1e-4
  softmax-fast search --lr 1e-3:1e-0:8log --epochs 5:40:8 --results grid.csv
  softmax-fast search --lr 1e-3:1e-0:8log --epochs 5:40:8 --results grid.csv --resume
  softmax-fast search -d fashion-mnist --batch-size 16,32,64 --dask local:2 --plot heat.png
\b
Ranges: A:B:N is N evenly spaced values from A to B; A:B:Nlog spaces them on a log scale.
"""

BENCH_EXAMPLES = """
\b
Examples:
  softmax-fast bench --quick                 # a few seconds
  softmax-fast bench --json bench.json       # 60,000 samples, also saved as JSON
  softmax-fast bench --backend cython --threads 1
"""

DATASETS_EXAMPLES = """
\b
Examples:
  softmax-fast datasets                      # same as: softmax-fast datasets list
  softmax-fast datasets list --json
  softmax-fast datasets download fashion-mnist
"""


class CLIError(click.ClickException):
    """An error shown as one line on stderr with exit status 1."""

    def show(self, file=None):
        click.echo(f"softmax-fast: error: {self.format_message()}", err=True)


@click.group(context_settings=CONTEXT, epilog=MAIN_EXAMPLES)
@click.version_option(__version__, prog_name="softmax-fast")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx, debug):
    """Fast softmax (multinomial logistic) regression on the CPU."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _run_guarded(ctx, func, *args, **kwargs):
    """Call ``func``; turn expected errors into one-line CLI errors unless --debug."""
    try:
        return func(*args, **kwargs)
    except (click.ClickException, click.Abort):
        raise
    except BrokenPipeError:
        # `softmax-fast ... | head`: the reader left. Silence the flush at exit, like cat does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        ctx.exit(1)
    except (ValueError, TypeError, OSError, FloatingPointError, RuntimeError,
            ImportError) as exc:
        if ctx.find_root().obj.get("debug"):
            raise
        message = str(exc) or type(exc).__name__
        if isinstance(exc, FileNotFoundError) and exc.filename:
            message = f"{exc.filename}: no such file or directory"
        raise CLIError(message.splitlines()[0] if message.strip() else message) from exc


# ----------------------------------------------------------------------------------------
# Shared helpers (they import numpy & co. lazily: called only inside commands)
# ----------------------------------------------------------------------------------------
def _show_progress(quiet):
    return not quiet and sys.stderr.isatty()


@contextlib.contextmanager
def _progress(length, label, enabled):
    """Yield an ``advance(n)`` function driving a click progress bar on stderr, or a no-op."""
    if not enabled:
        yield lambda n=1: None
        return
    with click.progressbar(length=length, label=label, file=sys.stderr,
                           show_eta=True, show_pos=True) as bar:
        yield bar.update


def _check_out_dir(path, option):
    """Fail before a long run, not after it, when ``path``'s directory does not exist."""
    if path is None:
        return
    directory = Path(path).parent
    if not directory.is_dir():
        raise click.BadParameter(f"directory {str(directory)!r} does not exist",
                                 param_hint=option)


def _prepare_plot_dir(plot_dir):
    if plot_dir is None:
        return None
    path = Path(plot_dir)
    if path.exists() and not path.is_dir():
        raise click.BadParameter(f"{plot_dir!r} exists and is not a directory",
                                 param_hint="--plot")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _is_dataset_name(dataset):
    return dataset in DATASET_NAMES


def _check_finite(X, what):
    import numpy as np
    import scipy.sparse as sp

    values = X.data if sp.issparse(X) else X
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        if sp.issparse(X):
            detail = f"{int((~np.isfinite(values)).sum())} stored values"
        else:
            detail = f"{int((~np.isfinite(X)).any(axis=1).sum())} sample(s)"
        raise CLIError(f"{what}: {detail} contain NaN or infinite values; remove or impute them")


def _load_file(path, what="--dataset"):
    from softmax_fast.datasets import load_file

    if not Path(path).is_file():
        names = ", ".join(DATASET_NAMES)
        raise CLIError(f"{path}: no such file; {what} takes a dataset name ({names}) "
                       "or a data file")
    X, y = load_file(path)
    _check_finite(X, path)
    return X, y


def _validate_dataset_arg(dataset):
    """A name must be known; anything else must look like a file (exit 2 otherwise)."""
    if _is_dataset_name(dataset) or Path(dataset).suffix or os.sep in dataset:
        return
    raise click.BadParameter(
        f"unknown dataset {dataset!r}: use {' or '.join(DATASET_NAMES)}, or a data file "
        "(.npz, .npy, .csv, .svm)", param_hint="--dataset")


def _load_named(name, quiet):
    from softmax_fast.datasets import load_dataset

    return load_dataset(name, progress=_show_progress(quiet))


def _load_train_test(dataset, test_file, test_fraction, seed, quiet):
    """(X_train, y_train, X_test, y_test, description) for a name or a file."""
    _validate_dataset_arg(dataset)
    if _is_dataset_name(dataset):
        if test_file is not None:
            raise click.UsageError(f"--test is for data files; {dataset} has its own test split")
        X, y, X_test, y_test = _load_named(dataset, quiet)
        return X, y, X_test, y_test, f"{dataset} (its test split)"
    X, y = _load_file(dataset)
    if test_file is not None:
        X_test, y_test = _load_file(test_file, "--test")
        if X_test.shape[1] != X.shape[1]:
            raise CLIError(f"{test_file}: {X_test.shape[1]} features but {dataset} has "
                           f"{X.shape[1]}; the test file must have the same columns")
        return X, y, X_test, y_test, f"{dataset} (test: {test_file})"
    from sklearn.model_selection import train_test_split

    try:
        X, X_test, y, y_test = train_test_split(X, y, test_size=test_fraction, stratify=y,
                                                random_state=seed)
    except ValueError as exc:
        raise CLIError(f"{dataset}: cannot hold out a stratified --test-fraction "
                       f"{test_fraction}: {exc}; pass --test FILE") from exc
    return X, y, X_test, y_test, f"{dataset} (stratified {test_fraction:g} held out for test)"


def _input_scale(X):
    import numpy as np

    return 1.0 / 255.0 if X.dtype == np.uint8 else 1.0


def _class_names(dataset, classes):
    """Fashion-MNIST names for its labels 0..9, else the labels themselves."""
    from softmax_fast.plots import FASHION_MNIST_CLASSES

    labels = [str(c) for c in classes]
    if dataset in DATASET_NAMES and labels == [str(k) for k in range(10)]:
        return list(FASHION_MNIST_CLASSES)
    return labels


def _score(model, X, y, what):
    """Unregularised mean cross-entropy, accuracy and predictions of ``model`` on ``(X, y)``."""
    import numpy as np

    if X.shape[1] != model.n_features_in_:
        raise CLIError(f"{what}: {X.shape[1]} features but the model was trained on "
                       f"{model.n_features_in_}; use data shaped like the training data")
    y = np.asarray(y)
    classes = np.asarray(model.classes_)
    if classes.dtype.kind in "US" and y.dtype.kind in "iu":
        y = y.astype(str)  # string class names saved for labels read as text
    unknown = np.setdiff1d(np.unique(y), classes)
    if unknown.size:
        shown = ", ".join(map(str, unknown[:5].tolist()))
        raise CLIError(f"{what}: labels the model has never seen: {shown} (it knows "
                       f"{', '.join(map(str, classes.tolist()))}); use data with the same classes")
    log_proba = model.predict_log_proba(X)
    y_idx = np.searchsorted(classes, y)
    cost = float(-log_proba[np.arange(len(y_idx)), y_idx].astype(np.float64).mean())
    pred_idx = log_proba.argmax(axis=1)
    return cost, float(np.mean(pred_idx == y_idx)), y_idx, pred_idx


def _write_json(obj, path=None):
    text = json.dumps(obj, indent=2, default=_json_default) + "\n"
    if path is None:
        click.echo(text, nl=False)
        return
    from softmax_fast._io import write_text_atomic

    write_text_atomic(path, text)


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _fmt(value, spec):
    return format(value, spec) if value is not None else "-".rjust(int(spec.split(".")[0]))


# ----------------------------------------------------------------------------------------
# train
# ----------------------------------------------------------------------------------------
@cli.command(epilog=TRAIN_EXAMPLES, context_settings=CONTEXT)
@dataset_option
@test_file_option
@test_fraction_option
@batch_size_option
@lr_option
@epochs_option
@alpha_option
@momentum_option
@schedule_option
@solver_option
@click.option("--early-stopping", is_flag=True,
              help="Stop when the validation loss has not improved for --patience epochs and "
                   "keep the best epoch's weights.")
@click.option("--patience", type=POSITIVE_INT, default=5, show_default=True,
              help="Epochs without validation improvement before --early-stopping stops.")
@val_fraction_option
@seed_option
@backend_option
@threads_option
@click.option("--retrain-on-full", is_flag=True,
              help="After training, retrain on training + validation data for the same number "
                   "of epochs (the best epoch with --early-stopping) and report that model.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
              metavar="MODEL.npz", help="Save the model (written atomically).")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False), default=None,
              metavar="DIR", help="Write curves.png, weights.png (image data) and "
                                  "confusion.png into DIR (needs matplotlib).")
@json_flag_option
@quiet_option
@click.pass_context
def train(ctx, **options):
    """Train softmax regression and report validation and test results.

    The training data is split (stratified) into train and validation parts; each epoch
    prints the training objective and validation loss/accuracy, and the end prints the test
    cost (unregularised cross-entropy) and accuracy. A data file has no test split: a
    stratified --test-fraction of it is held out, or give a separate --test FILE. Pixel data
    (uint8) is scaled to [0, 1] inside the kernels (input_scale = 1/255).
    """
    if options["solver"] == "lbfgs" and options["early_stopping"]:
        raise click.UsageError("--early-stopping needs --solver sgd (L-BFGS has no epochs)")
    _check_out_dir(options["out_path"], "--out")
    options["plot_dir"] = _prepare_plot_dir(options["plot_dir"])
    _run_guarded(ctx, _train, **options)


def _train(dataset, test_file, test_fraction, batch_size, learning_rate, epochs, alpha,
           momentum, schedule, solver, early_stopping, patience, val_fraction, seed, backend,
           n_threads, retrain_on_full, out_path, plot_dir, as_json, quiet):
    import time

    import numpy as np
    import scipy.sparse as sp
    from sklearn.model_selection import train_test_split

    from softmax_fast.backends import resolve_backend_name
    from softmax_fast.estimator import SoftmaxRegression

    tic_total = time.perf_counter()
    X_train, y_train, X_test, y_test, test_source = _load_train_test(
        dataset, test_file, test_fraction, seed, quiet or as_json)
    try:
        X_fit, X_val, y_fit, y_val = train_test_split(
            X_train, y_train, test_size=val_fraction, stratify=y_train, random_state=seed)
    except ValueError as exc:
        raise CLIError(f"cannot hold out a stratified --val-fraction {val_fraction}: {exc}") \
            from exc
    name = resolve_backend_name(backend)
    scale = _input_scale(X_train)
    talk = not (quiet or as_json)

    def echo(text=""):
        if talk:
            click.echo(text)

    echo(f"dataset {dataset}: {X_fit.shape[0]} train, {X_val.shape[0]} validation, "
         f"{X_test.shape[0]} test, {X_train.shape[1]} features, "
         f"{len(np.unique(y_train))} classes; backend {name}, solver {solver}")

    params = dict(
        solver=solver, batch_size=batch_size, learning_rate_init=learning_rate,
        learning_rate=schedule, max_iter=epochs, alpha=alpha, momentum=momentum,
        random_state=seed, backend=name, n_threads=n_threads, input_scale=scale,
        early_stopping=early_stopping,
        # Without early stopping run exactly --epochs epochs: no stop on a training plateau.
        tol=1e-4 if early_stopping else 0.0,
        n_iter_no_change=patience if early_stopping else epochs + 1,
    )

    def fit(model, X, y, eval_set, label):
        if solver == "lbfgs":
            echo(f"{label}: L-BFGS, at most {epochs} iterations")
            import warnings

            from sklearn.exceptions import ConvergenceWarning
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                model.fit(X, y)
            if caught and talk:
                click.echo(f"warning: {caught[-1].message}", err=True)
            return
        header = f"{'epoch':>5}  {'objective':>9}  {'val_loss':>9}  {'val_acc':>7}  " \
                 f"{'lr':>8}  {'time':>8}"
        echo(f"{label}:")
        echo(header)
        with _progress(epochs, "epochs", _show_progress(quiet or as_json)) as advance:
            def show(record):
                if talk:
                    # \r + erase line: the row replaces the progress bar drawn on a terminal.
                    prefix = "\r\x1b[K" if _show_progress(quiet) else ""
                    click.echo(f"{prefix}{record['epoch']:5d}  {record['train_loss']:9.5f}  "
                               f"{_fmt(record.get('val_loss'), '9.5f')}  "
                               f"{_fmt(record.get('val_accuracy'), '7.4f')}  "
                               f"{record['learning_rate']:8.4g}  "
                               f"{record['seconds'] * 1e3:6.1f}ms")
                advance(1)
            model.fit(X, y, eval_set=eval_set, on_epoch=show)

    from softmax_fast._trainer import TrainingDivergedError

    model = SoftmaxRegression(**params)
    tic = time.perf_counter()
    try:
        fit(model, X_fit, y_fit, (X_val, y_val), "training")
    except TrainingDivergedError as exc:
        if click.get_current_context().find_root().obj.get("debug"):
            raise
        # The estimator speaks of learning_rate_init; here the knob is called --lr.
        raise CLIError(str(exc).replace("learning_rate_init", "--lr")) from exc
    train_seconds = time.perf_counter() - tic
    val_cost, val_acc, _, _ = _score(model, X_val, y_val, "validation")
    result = {
        "dataset": dataset, "test_source": test_source, "backend": name,
        "n_train": int(X_fit.shape[0]), "n_validation": int(X_val.shape[0]),
        "n_test": int(X_test.shape[0]), "n_features": int(X_train.shape[1]),
        "params": {k: v for k, v in params.items()}, "epochs_run": int(model.n_iter_),
        "stop_reason": getattr(model, "stop_reason_", None),
        "history": list(getattr(model, "history_", [])),
        "train_seconds": train_seconds,
        "validation_cost": val_cost, "validation_accuracy": val_acc,
    }
    final = model
    if retrain_on_full:
        history = result["history"]
        if early_stopping and history:
            best = min(history, key=lambda r: r["val_loss"])
            full_epochs = int(best["epoch"])
        else:
            full_epochs = int(model.n_iter_)
        X_full = sp.vstack([X_fit, X_val]).tocsr() if sp.issparse(X_fit) \
            else np.concatenate([X_fit, X_val])
        y_full = np.concatenate([y_fit, y_val])
        full_params = dict(params, max_iter=full_epochs, early_stopping=False, tol=0.0,
                           n_iter_no_change=full_epochs + 1)
        final = SoftmaxRegression(**full_params)
        tic = time.perf_counter()
        fit(final, X_full, y_full, None,
            f"retraining on train+validation ({X_full.shape[0]} samples, {full_epochs} epochs)")
        result["retrained"] = {"n_samples": int(X_full.shape[0]), "epochs": full_epochs,
                               "seconds": time.perf_counter() - tic,
                               "history": list(getattr(final, "history_", []))}
    test_cost, test_acc, y_idx, pred_idx = _score(final, X_test, y_test, "test data")
    result.update(test_cost=test_cost, test_accuracy=test_acc)
    echo(f"trained {model.n_iter_} {'epochs' if solver == 'sgd' else 'iterations'} in "
         f"{train_seconds:.2f}s ({getattr(model, 'stop_reason_', '')}); validation cost "
         f"{val_cost:.4f}, accuracy {val_acc:.4f}")
    if not as_json:
        click.echo(f"test cost {test_cost:.4f}  test accuracy {test_acc:.4f}")

    if out_path is not None:
        final.save(out_path)
        result["model"] = str(out_path)
        echo(f"model saved to {out_path}")
    if plot_dir is not None:
        result["plots"] = _train_plots(final, model, y_idx, pred_idx, dataset, plot_dir)
        echo(f"plots written: {', '.join(result['plots'])}")
    result["seconds"] = time.perf_counter() - tic_total
    if as_json:
        _write_json(result)


def _train_plots(final, model, y_idx, pred_idx, dataset, plot_dir):
    from sklearn.metrics import confusion_matrix

    from softmax_fast import plots

    names = _class_names(dataset, final.classes_)
    written = []
    history = getattr(model, "history_", [])
    if history and "val_loss" in history[0]:
        written.append(str(plots.plot_history(history, plot_dir / "curves.png",
                                              title=f"softmax-fast on {dataset}")))
    if plots.image_shape(final.coef_.shape[1]) is not None:
        written.append(str(plots.plot_weights(final.coef_, plot_dir / "weights.png",
                                              class_names=names)))
    matrix = confusion_matrix(y_idx, pred_idx, labels=range(len(final.classes_)))
    written.append(str(plots.plot_confusion_matrix(matrix, plot_dir / "confusion.png",
                                                   class_names=names)))
    return written


# ----------------------------------------------------------------------------------------
# evaluate
# ----------------------------------------------------------------------------------------
@cli.command(epilog=EVALUATE_EXAMPLES, context_settings=CONTEXT)
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.option("--dataset", "-d", default="fashion-mnist-sample", show_default=True,
              metavar="NAME|FILE",
              help="A dataset name (its test split is used) or a data file (all of it).")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False), default=None,
              metavar="DIR", help="Write confusion.png and weights.png (image data) into DIR.")
@json_flag_option
@threads_option
@click.pass_context
def evaluate(ctx, model_path, dataset, plot_dir, as_json, n_threads):
    """Cost, accuracy, per-class precision/recall and confusion matrix of a saved model."""
    _validate_dataset_arg(dataset)
    plot_dir = _prepare_plot_dir(plot_dir)
    _run_guarded(ctx, _evaluate, model_path, dataset, plot_dir, as_json, n_threads)


def _load_model(model_path, n_threads=None):
    from softmax_fast.estimator import SoftmaxRegression

    if not Path(model_path).is_file():
        raise CLIError(f"{model_path}: no such model file; create one with "
                       "softmax-fast train --out MODEL.npz")
    model = SoftmaxRegression.load(model_path)
    model.n_threads = n_threads
    return model


def _evaluate(model_path, dataset, plot_dir, as_json, n_threads):
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    model = _load_model(model_path, n_threads)
    if _is_dataset_name(dataset):
        _, _, X, y = _load_named(dataset, as_json)
        what = f"{dataset} test split"
    else:
        X, y = _load_file(dataset)
        what = dataset
    cost, accuracy, y_idx, pred_idx = _score(model, X, y, what)
    n_classes = len(model.classes_)
    labels = list(range(n_classes))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_idx, pred_idx, labels=labels, zero_division=0)
    matrix = confusion_matrix(y_idx, pred_idx, labels=labels)
    names = _class_names(dataset, model.classes_)
    result = {
        "model": str(model_path), "data": what, "n_samples": int(X.shape[0]),
        "cost": cost, "accuracy": accuracy,
        "classes": [str(c) for c in model.classes_], "class_names": names,
        "per_class": [{"class": str(c), "name": n, "precision": float(p), "recall": float(r),
                       "f1": float(f), "support": int(s)}
                      for c, n, p, r, f, s in zip(model.classes_, names, precision, recall, f1,
                                                  support, strict=True)],
        "confusion_matrix": matrix.tolist(),
    }
    if plot_dir is not None:
        from softmax_fast import plots

        written = [str(plots.plot_confusion_matrix(matrix, plot_dir / "confusion.png",
                                                   class_names=names))]
        if plots.image_shape(model.coef_.shape[1]) is not None:
            written.append(str(plots.plot_weights(model.coef_, plot_dir / "weights.png",
                                                  class_names=names)))
        result["plots"] = written
    if as_json:
        _write_json(result)
        return
    click.echo(f"{what}: {X.shape[0]} samples")
    click.echo(f"cost {cost:.4f}  accuracy {accuracy:.4f}")
    click.echo("")
    width = max(12, max(len(n) for n in names))
    click.echo(f"{'class':<{width}} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}")
    for row in result["per_class"]:
        click.echo(f"{row['name']:<{width}} {row['precision']:9.4f} {row['recall']:7.4f} "
                   f"{row['f1']:7.4f} {row['support']:8d}")
    click.echo("")
    click.echo("confusion matrix (rows: true, columns: predicted):")
    cell = max(5, len(str(int(matrix.max()))) + 1)
    short = [n[:cell - 1] for n in names]
    click.echo(" " * width + "".join(f"{s:>{cell}}" for s in short))
    for name, row in zip(names, matrix, strict=True):
        click.echo(f"{name:<{width}}" + "".join(f"{int(v):>{cell}}" for v in row))
    if plot_dir is not None:
        click.echo(f"plots written: {', '.join(result['plots'])}")


# ----------------------------------------------------------------------------------------
# predict
# ----------------------------------------------------------------------------------------
@cli.command(epilog=PREDICT_EXAMPLES, context_settings=CONTEXT)
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.argument("inputs", metavar="INPUT...", nargs=-1, required=True,
                type=click.Path(dir_okay=False))
@click.option("--proba", is_flag=True, help="Output class probabilities instead of labels.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
              metavar="FILE", help="Write to FILE (.npy, .csv or .txt; atomically) instead of "
                                   "stdout.")
@threads_option
@click.pass_context
def predict(ctx, model_path, inputs, proba, out_path, n_threads):
    """Predict labels (or probabilities) for the samples in INPUT files.

    INPUT: .npy / .npz (array X) / .csv (feature columns; a 'label' column is ignored) / IDX
    files (Fashion-MNIST format, plain or .gz) / images (PNG, JPEG...; each is converted to
    grayscale and is one sample, so a Fashion-MNIST model takes 28x28 images with a dark
    background). Reading images needs Pillow or matplotlib.
    """
    if out_path is not None and Path(out_path).suffix.lower() not in (".npy", ".csv", ".txt"):
        raise click.BadParameter("the output file must end in .npy, .csv or .txt",
                                 param_hint="--out")
    _check_out_dir(out_path, "--out")
    _run_guarded(ctx, _predict, model_path, inputs, proba, out_path, n_threads)


def _predict(model_path, inputs, proba, out_path, n_threads):
    import numpy as np

    from softmax_fast._io import atomic_output, read_inputs

    model = _load_model(model_path, n_threads)
    X = read_inputs(inputs, model.n_features_in_)
    classes = np.asarray(model.classes_)
    values = model.predict_proba(X) if proba else model.predict(X)
    if out_path is not None and out_path.lower().endswith(".npy"):
        with atomic_output(out_path) as tmp:
            np.save(tmp, values)
        return
    if proba:
        lines = [",".join(str(c) for c in classes)]
        lines += [",".join(f"{p:.6g}" for p in row) for row in values]
    else:
        lines = [str(v) for v in values]
    text = "\n".join(lines) + "\n"
    if out_path is None:
        click.echo(text, nl=False)
    else:
        from softmax_fast._io import write_text_atomic

        write_text_atomic(out_path, text)


# ----------------------------------------------------------------------------------------
# search
# ----------------------------------------------------------------------------------------
#: CLI option -> estimator hyperparameter name in grid_search results.
SEARCH_PARAMS = {"batch_size": "batch_size", "lr": "learning_rate_init", "epochs": "max_iter",
                 "alpha": "alpha", "momentum": "momentum"}
SHORT_NAMES = {"batch_size": "batch", "learning_rate_init": "lr", "max_iter": "epochs",
               "alpha": "alpha", "momentum": "momentum"}


@cli.command(epilog=SEARCH_EXAMPLES, context_settings=CONTEXT)
@dataset_option
@test_file_option
@test_fraction_option
@click.option("--batch-size", "-b", "batch_size", type=GridValues(int, minimum=1), default="32",
              show_default=True, help="Batch sizes.")
@click.option("--lr", "lr", type=GridValues(float, minimum=0, min_open=True),
              default="0.01,0.1", show_default=True, help="Learning rates (constant).")
@click.option("--epochs", "-e", "epochs", type=GridValues(int, minimum=1), default="10",
              show_default=True, help="Epoch counts (checkpoints of one run: cheap).")
@click.option("--alpha", "alpha", type=GridValues(float, minimum=0), default="1e-5",
              show_default=True, help="L2 penalties.")
@click.option("--momentum", "momentum", type=GridValues(float, minimum=0, maximum=1,
                                                        max_open=True),
              default="0", show_default=True, help="Momenta.")
@click.option("--scoring", type=click.Choice(["accuracy", "loss"]), default="accuracy",
              show_default=True, help="Pick the best by validation accuracy or loss.")
@val_fraction_option
@click.option("--results", "results_path", type=click.Path(dir_okay=False), default=None,
              metavar="FILE", help="Stream every result to FILE (.csv or .jsonl) as it finishes.")
@click.option("--resume", is_flag=True,
              help="Keep the results already in --results FILE and run only the missing ones.")
@click.option("--dask", "dask_address", default=None, metavar="ADDRESS|local:N",
              help="Run on a Dask cluster: a scheduler address or local:N worker processes.")
@seed_option
@backend_option
@threads_option
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
              metavar="MODEL.npz", help="Save the best model (refit on train+validation).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              metavar="FILE.png", help="Heatmap of validation accuracy over two hyperparameters.")
@click.option("--plot-axes", default=None, metavar="X,Y",
              help="Hyperparameters of the heatmap (batch-size, lr, epochs, alpha, momentum) "
                   "[default: the two with the most values].")
@click.option("--top", type=click.IntRange(min=0), default=10, show_default=True,
              help="Configurations shown in the ranking (0: all).")
@json_flag_option
@quiet_option
@click.pass_context
def search(ctx, **options):
    """Grid search over hyperparameters, many models trained per pass over the data.

    Every combination of the given values is trained on the training part and scored on a
    stratified validation part; the best is refit on training + validation data and its
    test cost and accuracy are reported. Each option takes a comma list or a range.
    """
    if options["resume"] and options["results_path"] is None:
        raise click.UsageError("--resume needs --results FILE (the results to resume from)")
    if options["results_path"] is not None and \
            Path(options["results_path"]).suffix.lower() not in (".csv", ".jsonl", ".json"):
        raise click.BadParameter("the results file must end in .csv, .jsonl or .json",
                                 param_hint="--results")
    for option in ("out_path", "plot_path", "results_path"):
        _check_out_dir(options[option], "--" + option.split("_")[0])
    if options["plot_path"] is not None and \
            not options["plot_path"].lower().endswith(".png"):
        raise click.BadParameter("the heatmap file must end in .png", param_hint="--plot")
    options["plot_axes"] = _heatmap_axes(options)
    _run_guarded(ctx, _search, **options)


def _heatmap_axes(options):
    """The two grid hyperparameters of the heatmap (estimator names), or None without --plot."""
    aliases = {"batch-size": "batch_size", "batch_size": "batch_size", "lr": "lr",
               "epochs": "epochs", "alpha": "alpha", "momentum": "momentum"}
    if options["plot_axes"] is not None:
        parts = [p.strip() for p in options["plot_axes"].split(",")]
        if len(parts) != 2 or any(p not in aliases for p in parts) or parts[0] == parts[1]:
            raise click.BadParameter("give two different names out of batch-size, lr, epochs, "
                                     "alpha, momentum, e.g. lr,alpha", param_hint="--plot-axes")
        return [SEARCH_PARAMS[aliases[p]] for p in parts]
    if options["plot_path"] is None:
        return None
    varied = sorted((name for name in SEARCH_PARAMS if len(options[name]) > 1),
                    key=lambda name: -len(options[name]))
    if len(varied) < 2:
        raise click.UsageError("--plot needs two hyperparameters with several values each "
                               "(e.g. --lr 0.01,0.1 --alpha 0,1e-4)")
    return [SEARCH_PARAMS[name] for name in varied[:2]]


def _search(dataset, test_file, test_fraction, batch_size, lr, epochs, alpha, momentum, scoring,
            val_fraction, results_path, resume, dask_address, seed, backend, n_threads,
            out_path, plot_path, plot_axes, top, as_json, quiet):
    try:
        from softmax_fast.search import grid_search
    except ImportError as exc:
        raise CLIError(f"grid search is not available: {exc}") from exc

    X, y, X_test, y_test, test_source = _load_train_test(dataset, test_file, test_fraction,
                                                         seed, quiet or as_json)
    grid = {SEARCH_PARAMS[k]: v for k, v in
            dict(batch_size=batch_size, lr=lr, epochs=epochs, alpha=alpha,
                 momentum=momentum).items()}
    n_configs = math.prod(len(v) for v in grid.values())
    talk = not (quiet or as_json)
    if talk:
        sizes = " x ".join(f"{len(v)} {SHORT_NAMES[k]}" for k, v in grid.items() if len(v) > 1)
        click.echo(f"dataset {dataset}: {X.shape[0]} samples for train+validation, "
                   f"{X_test.shape[0]} test; {n_configs} configuration{'s' * (n_configs != 1)}"
                   + (f" ({sizes})" if sizes else ""))
    with _progress(n_configs, "configurations", _show_progress(quiet or as_json)) as advance:
        last = [0]

        def progress(done, total):
            advance(done - last[0])
            last[0] = done

        result = grid_search(
            X, y, grid, validation_fraction=val_fraction, scoring=scoring, X_test=X_test,
            y_test=y_test, backend=backend, n_threads=n_threads, random_state=seed,
            results_path=results_path, resume=resume, dask=dask_address,
            input_scale=_input_scale(X), progress=progress)
    rows = result.results
    summary = {
        "dataset": dataset, "test_source": test_source, "n_configurations": len(rows),
        "grid": grid, "scoring": scoring, "backend": result.backend, "seconds": result.seconds,
        "best_params": result.best_params, "best_score": result.best_score,
        "test_cost": result.test_loss, "test_accuracy": result.test_accuracy,
        "results_file": results_path, "results": rows,
    }
    if result.best_params is None:
        raise CLIError("every configuration diverged; try smaller --lr values")
    if out_path is not None and result.best_estimator is not None:
        result.best_estimator.save(out_path)
        summary["model"] = str(out_path)
    if plot_path is not None:
        from softmax_fast.plots import plot_search_heatmap

        plot_search_heatmap(rows, plot_path, x=plot_axes[0], y=plot_axes[1],
                            metric="val_accuracy")
        summary["plot"] = str(plot_path)
    if as_json:
        _write_json(summary)
        return
    if talk:
        _print_ranking(rows, grid, scoring, top)
        diverged = sum(r.get("status") != "ok" for r in rows)
        click.echo(f"{len(rows)} configurations in {result.seconds:.2f}s "
                   f"({result.backend})" + (f", {diverged} diverged" if diverged else ""))
    best = ", ".join(f"{SHORT_NAMES.get(k, k)}={v:g}" if isinstance(v, float)
                     else f"{SHORT_NAMES.get(k, k)}={v}" for k, v in result.best_params.items())
    best_row = rows[result.best_index]
    click.echo(f"best: {best}  (val loss {best_row['val_loss']:.4f}, "
               f"val accuracy {best_row['val_accuracy']:.4f})")
    if result.test_loss is not None:
        click.echo(f"test cost {result.test_loss:.4f}  test accuracy "
                   f"{result.test_accuracy:.4f}  (best refit on train+validation)")
    for label, path in (("results", results_path), ("model", out_path), ("heatmap", plot_path)):
        if path is not None and talk:
            click.echo(f"{label} written to {path}")


def _print_ranking(rows, grid, scoring, top):
    keys = list(grid)
    ok = [r for r in rows if r.get("status") == "ok"]
    if scoring == "accuracy":
        ok.sort(key=lambda r: (-r["val_accuracy"], r["val_loss"]))
    else:
        ok.sort(key=lambda r: (r["val_loss"], -r["val_accuracy"]))
    shown = ok if top == 0 else ok[:top]
    widths = {k: max(len(SHORT_NAMES[k]), 8) for k in keys}
    click.echo("  ".join(f"{SHORT_NAMES[k]:>{widths[k]}}" for k in keys)
               + f"  {'val_loss':>9}  {'val_acc':>7}  {'seconds':>7}")
    for r in shown:
        click.echo("  ".join(f"{r[k]:>{widths[k]}g}" for k in keys)
                   + f"  {r['val_loss']:9.5f}  {r['val_accuracy']:7.4f}  {r['seconds']:7.3f}")
    if len(ok) > len(shown):
        click.echo(f"... {len(ok) - len(shown)} more (--top 0 shows all)")


# ----------------------------------------------------------------------------------------
# bench
# ----------------------------------------------------------------------------------------
@cli.command(epilog=BENCH_EXAMPLES, context_settings=CONTEXT)
@click.option("--quick", is_flag=True,
              help="1,000 samples and few repeats: seconds instead of minutes.")
@click.option("--backend", "backends", type=click.Choice(("cython", "numba", "reference")),
              multiple=True, help="Our backends to time (repeatable) [default: all available].")
@threads_option
@click.option("--repeats", type=POSITIVE_INT, default=None,
              help="Timed runs per measurement [default: 3 quick, 5 full].")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              metavar="FILE", help="Also save the full report as JSON (atomically).")
@quiet_option
@click.pass_context
def bench(ctx, quick, backends, n_threads, repeats, json_path, quiet):
    """Time our backends against NumPy, PyTorch and scikit-learn on this machine.

    Three tasks: the fused linear+softmax+cross-entropy kernel, one SGD epoch (batch 32) and
    L-BFGS iterations, each the median of several runs after a warm-up run, next to the
    machine's floor (measured GEMM rate and copy bandwidth). PyTorch and scikit-learn are
    included when installed.
    """
    _check_out_dir(json_path, "--json")
    _run_guarded(ctx, _bench, quick, backends, n_threads, repeats, json_path, quiet)


def _bench(quick, backends, n_threads, repeats, json_path, quiet):
    from softmax_fast.bench import format_report, run_benchmark

    show = _show_progress(quiet)

    def progress(label):
        if show:
            click.echo(f"\r\x1b[Ktiming {label}", nl=False, err=True)

    report = run_benchmark(quick=quick, backends=backends or None, n_threads=n_threads,
                           repeats=repeats, progress=progress)
    if show:
        click.echo("\r\x1b[K", nl=False, err=True)
    click.echo(format_report(report))
    if json_path is not None:
        _write_json(report, json_path)
        click.echo(f"report saved to {json_path}")


# ----------------------------------------------------------------------------------------
# datasets
# ----------------------------------------------------------------------------------------
@cli.group(invoke_without_command=True, epilog=DATASETS_EXAMPLES, context_settings=CONTEXT)
@click.pass_context
def datasets(ctx):
    """List the datasets (where each was found, its size) or download one.

    Without a subcommand: the same as ``list``.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(datasets_list, as_json=False)


@datasets.command("list", epilog=DATASETS_EXAMPLES, context_settings=CONTEXT)
@json_flag_option
@click.pass_context
def datasets_list(ctx, as_json):
    """What is available, where it was found (env var, cache, Debian package, bundled)."""
    _run_guarded(ctx, _datasets_list, as_json)


_SOURCES = {"env": "$SOFTMAX_FAST_DATA", "cache": "user cache", "debian": "Debian package",
            "bundled": "bundled with softmax-fast"}


def _datasets_list(as_json):
    from softmax_fast.datasets import DATA_DIR_ENV_VAR, cache_dir, list_datasets

    infos = list_datasets()
    if as_json:
        _write_json({"datasets": [{"name": i.name, "description": i.description,
                                   "available": i.available,
                                   "location": str(i.location) if i.location else None,
                                   "source": i.source, "size_bytes": i.size_bytes}
                                  for i in infos],
                     "cache_dir": str(cache_dir())})
        return
    for info in infos:
        click.echo(f"{info.name}: {info.description}")
        if info.available:
            click.echo(f"  available: {info.location} ({_SOURCES.get(info.source, info.source)}"
                       f", {info.size_bytes / 1e6:.1f} MB)")
        else:
            click.echo(f"  not found; get it with: softmax-fast datasets download {info.name}"
                       f" (or apt install dataset-fashion-mnist, or set {DATA_DIR_ENV_VAR})")
    click.echo(f"cache directory: {cache_dir()}")


@datasets.command("download", epilog=DATASETS_EXAMPLES, context_settings=CONTEXT)
@click.argument("name", metavar="NAME", type=click.Choice(DATASET_NAMES))
@click.option("--force", is_flag=True, help="Download even if it is already on disk.")
@quiet_option
@click.pass_context
def datasets_download(ctx, name, force, quiet):
    """Download NAME into the user cache (checksums verified; atomic)."""
    _run_guarded(ctx, _datasets_download, name, force, quiet)


def _datasets_download(name, force, quiet):
    from softmax_fast.datasets import dataset_info, download_dataset

    before = dataset_info(name)
    path = download_dataset(name, force=force, progress=_show_progress(quiet))
    if before.available and not force:
        click.echo(f"{name} is already available in {path} "
                   f"({_SOURCES.get(before.source, before.source)}); --force downloads it again")
    else:
        click.echo(f"{name} is in {path}")


def main(argv=None, prog_name="softmax-fast"):
    """Console-script entry point."""
    return cli.main(args=argv, prog_name=prog_name)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
