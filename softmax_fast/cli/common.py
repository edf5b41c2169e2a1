"""What every command shares: output checks, progress bars, data loading, JSON output.

Errors, exit statuses, held warnings and Ctrl-C are :mod:`.guard`'s (re-exported here:
:class:`CLIError`, :func:`run_guarded`, :func:`debugging`, :func:`record_saved`).

Nothing heavy is imported here at import time: numpy, scikit-learn and the estimator are
imported inside the helpers, which run only when a command does.
"""

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

import click

from softmax_fast.cli.guard import CLIError, debugging, record_saved, run_guarded
from softmax_fast.cli.options import DATASET_NAMES

__all__ = ["CONTEXT", "CLIError", "debugging", "record_saved", "run_guarded"]

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# ----------------------------------------------------------------------------------------
# Progress bars (stderr, only on a terminal and without --quiet)
# ----------------------------------------------------------------------------------------
def show_progress(quiet):
    """Whether to draw progress (bars, notes) on stderr: a terminal, and no --quiet/--json.

    Never on a pipe or a file: there, stderr holds only the one line of an error (or the
    warnings after a success), which scripts rely on.
    """
    return not quiet and sys.stderr.isatty()


def plural(count, word, words=None):
    """``"1 configuration"``, ``"2 configurations"``."""
    return f"{count:,} {word if count == 1 else (words or word + 's')}"


@contextlib.contextmanager
def progress_bar(length, label, enabled, show_pos=True):
    """Yield an ``advance(n)`` function driving a click progress bar on stderr, or a no-op."""
    if not enabled:
        yield lambda n=1: None
        return
    with click.progressbar(length=length, label=label, file=sys.stderr, show_eta=True,
                           show_pos=show_pos, show_percent=not show_pos) as bar:
        yield bar.update


# ----------------------------------------------------------------------------------------
# Notes on stderr before slow first steps (a terminal only: see show_progress)
# ----------------------------------------------------------------------------------------
#: The compiled function of each numba kernel module whose first call compiles the rest.
NUMBA_ENTRY_POINTS = {
    ("dense", "sgd"): ("softmax_fast.kernels.numba_backend", "_sgd_kernel"),
    ("dense", "lbfgs"): ("softmax_fast.kernels.numba_backend", "_linear_kernel"),
    ("sparse", "sgd"): ("softmax_fast.kernels.sparse", "_epoch"),
    ("sparse", "lbfgs"): ("softmax_fast.kernels.sparse", "_linear"),
    ("multi", "sgd"): ("softmax_fast.kernels.numba_multi", "_epoch"),
    ("dense", "softmax"): ("softmax_fast.kernels.numba_backend", "_softmax_kernel"),
}


def note_numba_compile(kind, backend, task, quiet):
    """Say once, on a terminal, that the numba kernels are about to compile (about 10 s).

    ``backend`` is the resolved name of the ``kind`` kernels about to run ``task`` ("sgd",
    "lbfgs", "softmax"); nothing is said for another backend, or when numba's on-disk cache
    already holds the kernel.
    """
    state = click.get_current_context().find_root().ensure_object(dict)
    if backend != "numba" or not show_progress(quiet) or state.get("numba_noted"):
        return
    entry = NUMBA_ENTRY_POINTS.get((kind, task))
    if entry is not None and numba_cache_is_cold(*entry):
        state["numba_noted"] = True
        click.echo("compiling the numba kernels (once, ~10 s)…", err=True)


def numba_cache_is_cold(module_name, function_name):
    """Whether numba's on-disk cache has no compiled code of ``module_name.function_name``.

    Reads the function's index file (``*.nbi``, in ``__pycache__`` next to the module or
    under ``NUMBA_CACHE_DIR``), which numba itself checks against the source's size and
    time: a missing, stale or empty index means that the first call compiles. Numba keeps
    no public interface for this; on any surprise the answer is False (say nothing).
    """
    import importlib

    try:
        dispatcher = getattr(importlib.import_module(module_name), function_name)
        return not dispatcher._cache._cache_file._load_index()
    except Exception:  # noqa: BLE001 - a private numba API: silence is the safe failure
        return False


def check_plotting(option="--plot"):
    """A one-line error (exit 1) before any work when ``option`` cannot be honoured because
    matplotlib is missing. ``find_spec`` finds it without importing it (about 0.3 s)."""
    import importlib.util

    try:
        found = importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise CLIError(f"{option} needs matplotlib: pip install 'softmax-fast[plot]' (or leave "
                       f"out {option})")


class DownloadBars:
    """The ``progress`` callback of :mod:`softmax_fast.datasets` downloads: a bar per file.

    Use as a context manager; it closes the last bar on exit.
    """

    def __init__(self):
        self._stack = contextlib.ExitStack()
        self._name = None
        self._bar = None
        self._done = 0

    def __call__(self, done, total, filename):
        if total is None:  # click needs a length: nothing to show progress against
            return
        if filename != self._name:
            self._stack.close()
            self._bar = self._stack.enter_context(click.progressbar(
                length=total, label=f"Downloading {filename}", file=sys.stderr))
            self._name, self._done = filename, 0
        self._bar.update(done - self._done)
        self._done = done

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._stack.close()


def download_progress(enabled):
    """A context manager yielding the download ``progress`` callback (None when disabled)."""
    return DownloadBars() if enabled else contextlib.nullcontext(None)


# ----------------------------------------------------------------------------------------
# Output paths: checked before any data is loaded, so a long run never fails at its end
# ----------------------------------------------------------------------------------------
def check_out_dir(path, option, inputs=()):
    """Fail before a long run, not after it, when ``path`` cannot be written.

    A usage error (exit status 2) naming the user's path when its folder does not exist or
    is not writable (a probe file is created and removed there), when ``path`` is a folder,
    exists and is not a regular file (``/dev/stdout``: replacing it would be wrong) or is
    read-only, or is one of ``inputs`` (``(path, option)`` pairs: writing it would destroy
    an input).
    """
    if path is None:
        return
    target = Path(path)
    directory = target.parent
    if not directory.is_dir():
        raise click.BadParameter(f"directory {str(directory)!r} does not exist",
                                 param_hint=option)
    if target.is_dir():
        raise click.BadParameter(f"{str(path)!r} is a directory; give a file name",
                                 param_hint=option)
    if target.exists() or target.is_symlink():
        _check_existing_output(target, option, inputs)
    _probe_writable(directory, path, option)


def _check_existing_output(target, option, inputs):
    if not target.is_file():
        raise click.BadParameter(f"{str(target)!r} exists and is not a regular file; give "
                                 "another file name", param_hint=option)
    for other, other_option in inputs:
        if other is not None and same_file(target, other):
            raise click.BadParameter(f"{str(target)!r} is also {other_option}: writing it "
                                     "would destroy that input; choose another file",
                                     param_hint=option)
    if not os.access(target, os.W_OK):
        raise click.BadParameter(f"{str(target)!r} is read-only", param_hint=option)


def _probe_writable(directory, path, option):
    """Create and remove a file in ``directory``: the one sure test that it is writable."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".softmax-fast-probe-", dir=directory)
    except OSError as exc:
        raise click.BadParameter(f"cannot write {str(path)!r}: the folder {str(directory)!r} "
                                 f"is not writable ({exc.strerror or exc})",
                                 param_hint=option) from None
    os.close(fd)
    os.unlink(probe)


def same_file(a, b):
    """Whether paths ``a`` and ``b`` name one file (existing or not)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def check_distinct(outputs):
    """Refuse two outputs (``(path, option)`` pairs) naming one file: one would overwrite the
    other."""
    given = [(path, option) for path, option in outputs if path is not None]
    for i, (path, option) in enumerate(given):
        for other, other_option in given[i + 1:]:
            if same_file(path, other):
                raise click.UsageError(f"{option} and {other_option} name the same file "
                                       f"{str(path)!r}; give each its own")


def prepare_plot_dir(plot_dir, option="--plot"):
    """The plot folder as a Path, checked writable now; it is created only when written to
    (:func:`make_plot_dir`), so a failed run leaves no empty folder behind."""
    if plot_dir is None:
        return None
    path = Path(plot_dir)
    if path.exists() and not path.is_dir():
        raise click.BadParameter(f"{plot_dir!r} exists and is not a directory",
                                 param_hint=option)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise click.BadParameter(f"cannot create {plot_dir!r}: {str(existing)!r} is not a "
                                 "directory", param_hint=option)
    _probe_writable(existing, plot_dir, option)
    return path


def make_plot_dir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


# ----------------------------------------------------------------------------------------
# Data and models
# ----------------------------------------------------------------------------------------
def is_dataset_name(dataset):
    return dataset in DATASET_NAMES


def validate_dataset_arg(dataset):
    """A name must be known; anything else must look like a file (exit 2 otherwise)."""
    if is_dataset_name(dataset) or Path(dataset).suffix or os.sep in dataset:
        return
    raise click.BadParameter(
        f"unknown dataset {dataset!r}: use {' or '.join(DATASET_NAMES)}, or a data file "
        "(.npz, .npy, .csv, .svm)", param_hint="--dataset")


def check_finite(X, what):
    import numpy as np
    import scipy.sparse as sp

    values = X.data if sp.issparse(X) else X
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        if sp.issparse(X):
            detail = f"{int((~np.isfinite(values)).sum())} stored values"
        else:
            detail = f"{int((~np.isfinite(X)).any(axis=1).sum())} sample(s)"
        raise CLIError(f"{what}: {detail} contain NaN or infinite values; remove or impute them")


def check_input_file(path, what, hint):
    """A one-line error (exit 1) unless ``path`` is a regular file."""
    if Path(path).is_file():
        return
    problem = "not a regular file" if Path(path).exists() else "no such file"
    raise CLIError(f"{path}: {problem}; {what} takes {hint}")


def is_csv(path):
    return path is not None and Path(path).suffix.lower() == ".csv"


def csv_options(path, header, label_column=None):
    """``load_file`` keywords of ``path``: the CSV options for a .csv file, none for others."""
    return {"header": header, "label_column": label_column} if is_csv(path) else {}


def check_label_column_args(label_column, *paths):
    """``--label-column`` is about CSV files: a usage error when no data file is one."""
    if label_column is not None and not any(is_csv(path) for path in paths):
        raise click.BadParameter("applies to CSV data files only (the other formats keep "
                                 "their labels apart)", param_hint="--label-column")


def load_data_file(path, what="--dataset", header=None, label_column=None):
    """(X, y) of a data file, checked for NaN and infinity."""
    from softmax_fast.datasets import load_file

    names = ", ".join(DATASET_NAMES)
    check_input_file(path, what, f"a dataset name ({names}) or a data file")
    X, y = load_file(path, **csv_options(path, header, label_column))
    check_finite(X, path)
    return X, y


def load_named(name, quiet):
    """(X_train, y_train, X_test, y_test) of a named dataset; a download shows its progress."""
    from softmax_fast.datasets import load_dataset

    with download_progress(show_progress(quiet)) as progress_callback:
        return load_dataset(name, progress=progress_callback)


def check_train_test_args(dataset, test_file):
    """The usage errors of ``--dataset`` and ``--test``, found before anything is loaded."""
    validate_dataset_arg(dataset)
    if is_dataset_name(dataset) and test_file is not None:
        raise click.UsageError(f"--test is for data files; {dataset} has its own test split")


def load_train_test(dataset, test_file, test_fraction, seed, quiet, header=None,
                    label_column=None):
    """(X_train, y_train, X_test, y_test, description) for a name or a file."""
    check_train_test_args(dataset, test_file)
    if is_dataset_name(dataset):
        X, y, X_test, y_test = load_named(dataset, quiet)
        return X, y, X_test, y_test, f"{dataset} (its test split)"
    X, y = load_data_file(dataset, header=header, label_column=label_column)
    if test_file is not None:
        X_test, y_test = load_data_file(test_file, "--test", header, label_column)
        if X_test.shape[1] != X.shape[1]:
            raise CLIError(f"{test_file}: {X_test.shape[1]} features but {dataset} has "
                           f"{X.shape[1]}; the test file must have the same columns")
        return X, y, X_test, y_test, f"{dataset} (test: {test_file})"
    from softmax_fast._training.sampling import stratified_split_indices

    try:
        train_idx, test_idx = stratified_split_indices(y, test_fraction, seed)
    except ValueError as exc:
        raise CLIError(f"{dataset}: cannot hold out a stratified --test-fraction "
                       f"{test_fraction}: {exc.__cause__ or exc}; pass --test FILE") from exc
    return (X[train_idx], y[train_idx], X[test_idx], y[test_idx],
            f"{dataset} (stratified {test_fraction:g} held out for test)")


def load_model(model_path, n_threads=None):
    """The saved model at ``model_path``; any problem with the file is one line (exit 1).

    Its members are checked against the size limit first, so a zip bomb posing as a model
    fails before the model reader inflates it.
    """
    from softmax_fast.datasets.npyfile import check_npz
    from softmax_fast.estimator import SoftmaxRegression

    if not Path(model_path).is_file():
        problem = "not a regular file" if Path(model_path).exists() else "no such model file"
        raise CLIError(f"{model_path}: {problem}; create one with softmax-fast train --out "
                       "MODEL.npz")
    try:
        check_npz(model_path)
        model = SoftmaxRegression.load(model_path)
    except ValueError as exc:  # ModelFileError (a ValueError) names the file and the problem
        raise CLIError(str(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - a hostile file must not end in a traceback
        if debugging():
            raise
        raise CLIError(f"{model_path}: not a readable softmax-fast model file "
                       f"({type(exc).__name__}: {exc})") from exc
    model.n_threads = n_threads
    return model


def class_names(dataset, classes, given=None, model=None):
    """The names shown for ``classes``: one list for every command (``--names``).

    ``given`` (``--names``), else the names saved in ``model`` (``train --names``), else
    Fashion-MNIST's for its labels 0..9 when ``dataset`` (or the model's recorded dataset)
    is one of its names, else the labels themselves.
    """
    from softmax_fast.plots import FASHION_MNIST_CLASSES

    labels = [str(c) for c in classes]
    if given is not None:
        if len(given) != len(labels):
            raise click.BadParameter(f"{len(given)} names for {len(labels)} classes "
                                     f"({', '.join(labels[:10])}{', ...' if len(labels) > 10 else ''}"
                                     "); give one name per class, in the order of the labels",
                                     param_hint="--names")
        return list(given)
    recorded = model_metadata(model)
    saved = recorded.get("class_names")
    if isinstance(saved, list) and len(saved) == len(labels) and \
            all(isinstance(name, str) for name in saved):
        return saved
    dataset = dataset if dataset is not None else recorded.get("dataset")
    if dataset in DATASET_NAMES and labels == [str(k) for k in range(10)]:
        return list(FASHION_MNIST_CLASSES)
    return labels


# ----------------------------------------------------------------------------------------
# What a model file records about its training data (train --out)
# ----------------------------------------------------------------------------------------
def training_metadata(dataset, test_file, test_fraction, seed, header, label_column,
                      names=None):
    """The ``metadata`` of a model saved by ``train``: enough for ``evaluate`` to find its
    test data again and for ``predict`` to read CSV files as the training data was read.

    A file is recorded by its absolute path (the model may be evaluated from another
    folder); the label column of a CSV file as ``load_file`` resolved it (its name, or its
    index without a header), so that a default rule never guesses differently later.
    """
    from softmax_fast.datasets.files import csv_label_column

    named = is_dataset_name(dataset)
    meta = {"dataset": dataset if named else os.path.abspath(dataset),
            "test_source": None if test_file is None else os.path.abspath(test_file),
            "test_fraction": None if named or test_file is not None else test_fraction,
            "seed": seed, "header": None, "label_column": None, "test_label_column": None}
    if is_csv(dataset) or is_csv(test_file):
        meta["header"] = header
    # Per file: a test file may lay its columns out otherwise (no header, say).
    for key, path in (("label_column", dataset), ("test_label_column", test_file)):
        if is_csv(path):
            meta[key] = csv_label_column(path, header=header, label_column=label_column)
    if names is not None:
        meta["class_names"] = list(names)
    return meta


def model_metadata(model):
    """What ``train --out`` recorded in ``model`` ({} for a model saved without it)."""
    meta = getattr(model, "file_metadata_", None)
    return meta if isinstance(meta, dict) else {}


def recorded_csv_options(model, header, label_column):
    """(header, label_column, strict): the options given, else the training file's."""
    meta = model_metadata(model)
    if header is None and meta.get("header") in (True, False):
        header = meta["header"]
    if label_column is not None:
        return header, label_column, True
    recorded = meta.get("label_column")
    valid = isinstance(recorded, (str, int)) and not isinstance(recorded, bool)
    return header, (recorded if valid else None), False


# ----------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------
def with_files(report, *paths):
    """``report`` with ``"files"``: every output path written (``--json``), in order."""
    report["files"] = [str(path) for group in paths for path in
                       (group if isinstance(group, (list, tuple)) else [group])
                       if path is not None]
    return report


def write_json(obj, path=None):
    """``obj`` as indented JSON on stdout, or written atomically to ``path``."""
    text = json.dumps(obj, indent=2, default=_json_default) + "\n"
    if path is None:
        click.echo(text, nl=False)
        return
    from softmax_fast._io import write_text_atomic

    write_text_atomic(path, text)
    record_saved(path)


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def fmt(value, spec):
    """``format(value, spec)``, or a right-aligned "-" for None."""
    return format(value, spec) if value is not None else "-".rjust(int(spec.split(".")[0]))
