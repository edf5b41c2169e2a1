"""File helpers of the CLI: atomic output files and reading prediction inputs.

Every file the CLI writes goes through :func:`atomic_output`, so a failure (or Ctrl-C) never
leaves a half-written file under the requested name: readers see the old file or the new one.
"""

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np

#: Extensions read as images by :func:`read_inputs`.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
#: Extensions read as IDX (the Fashion-MNIST format), plain or gzipped.
IDX_SUFFIXES = (".idx", ".ubyte", ".idx3-ubyte", ".gz")
INPUT_SUFFIXES = (".npy", ".npz", ".csv", *IDX_SUFFIXES, *IMAGE_SUFFIXES)


class InputError(ValueError):
    """An input file cannot be read, or does not fit the model."""


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path next to ``path``; move it onto ``path`` only on success.

    The temporary file lives in the same directory, so the final :func:`os.replace` is atomic
    on POSIX and Windows. On any exception the temporary file is removed.

    Parameters
    ----------
    path : str or os.PathLike
        The final file name. Its directory must exist.

    Yields
    ------
    pathlib.Path
        Where to write. Its suffix is that of ``path`` (matplotlib and numpy pick the format
        from it).
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"{path}: directory {directory} does not exist; create it first")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".tmp",
                               dir=directory)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp creates the file 0600; give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path, text):
    """Write ``text`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def read_inputs(paths, n_features):
    """Read prediction inputs into one 2-D array of ``n_features`` columns.

    Parameters
    ----------
    paths : sequence of str
        ``.npy`` (2-D, or 3-D images flattened, or 1-D one sample), ``.npz`` (array ``X``, or
        its only array), ``.csv`` (features only; a ``label`` header column is dropped), IDX
        (``.idx``, ``*-ubyte``, ``.gz``) or image files (PNG, JPEG...; converted to grayscale,
        one sample per image, pixel values 0-255 like Fashion-MNIST).
    n_features : int
        Number of features the model expects.

    Returns
    -------
    numpy.ndarray of shape (n_samples, n_features)
        uint8 when every input holds uint8 pixels, else float64.

    Raises
    ------
    InputError
        If a file is missing, of an unknown type, unreadable, has the wrong number of features,
        or holds NaN or infinite values.
    """
    arrays = [_read_one(Path(p), n_features) for p in paths]
    if all(a.dtype == np.uint8 for a in arrays):
        return np.ascontiguousarray(np.concatenate(arrays))
    return np.ascontiguousarray(np.concatenate([a.astype(np.float64) for a in arrays]))


def _read_one(path, n_features):
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    name = path.name.lower()
    try:
        if suffix == ".npy":
            X = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            X = _read_npz(path)
        elif suffix == ".csv":
            X = _read_csv(path)
        elif suffix in IMAGE_SUFFIXES:
            X = read_image(path)
        elif suffix in IDX_SUFFIXES or name.endswith("-ubyte"):
            from softmax_fast.datasets import read_idx

            X = read_idx(path)
        else:
            raise InputError(f"{path}: unknown input type {suffix!r}; use one of "
                             f"{', '.join(INPUT_SUFFIXES)}")
    except InputError:
        raise
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from exc
    return _as_rows(X, path, n_features)


def _read_npz(path):
    with np.load(path, allow_pickle=False) as archive:
        if "X" in archive.files:
            return archive["X"]
        if len(archive.files) == 1:
            return archive[archive.files[0]]
        raise InputError(f"{path}: holds arrays {', '.join(archive.files)}; expected one named X")


def _read_csv(path):
    with open(path) as stream:
        first = stream.readline().strip().split(",")
    header = None
    try:
        [float(cell) for cell in first]
    except ValueError:
        header = [cell.strip().strip('"') for cell in first]
    columns = None
    if header is not None and "label" in header:
        columns = [i for i, name in enumerate(header) if name != "label"]
    return np.loadtxt(path, delimiter=",", skiprows=0 if header is None else 1,
                      usecols=columns, ndmin=2, dtype=np.float64)


def read_image(path):
    """Read an image file as a 2-D uint8 grayscale array with Pillow.

    Pillow only: matplotlib's ``imread`` itself reads PNG through Pillow (a hard dependency of
    matplotlib), so it is no fallback.

    Raises
    ------
    InputError
        If Pillow is not installed.
    """
    try:
        from PIL import Image
    except ImportError:
        raise InputError(f"{path}: reading images needs Pillow: pip install pillow (it also "
                         "comes with the plot extra: pip install 'softmax-fast[plot]')") from None
    with Image.open(path) as image:
        # convert("L"): ITU-R 601 luma for RGB(A), palette images expanded first.
        return np.asarray(image.convert("L"), dtype=np.uint8)


def _as_rows(X, path, n_features):
    X = np.asarray(X)
    if X.dtype.kind not in "biuf":
        raise InputError(f"{path}: features must be numeric, got dtype {X.dtype}")
    if X.ndim == 1:
        X = X.reshape(1, -1)
    elif X.ndim == 2 and path.suffix.lower() in IMAGE_SUFFIXES:
        if X.size != n_features:
            raise InputError(f"{path}: a {X.shape[1]}x{X.shape[0]} image has {X.size} pixels but "
                             f"the model expects {n_features} features; resize it")
        X = X.reshape(1, -1)
    elif X.ndim >= 3:
        X = X.reshape(X.shape[0], -1)
    if X.shape[1] != n_features:
        raise InputError(f"{path}: {X.shape[1]} features per sample but the model expects "
                         f"{n_features}; pass data shaped like the training data")
    if X.dtype.kind == "f" and not np.isfinite(X).all():
        bad = int((~np.isfinite(X)).any(axis=1).sum())
        raise InputError(f"{path}: {bad} sample(s) contain NaN or infinite values; "
                         "remove or impute them")
    if X.dtype != np.uint8 and X.dtype.kind in "biu":
        X = X.astype(np.float64)
    return X
