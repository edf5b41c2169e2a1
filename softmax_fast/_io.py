"""File helpers: atomic output files, and reading prediction inputs.

Every file softmax-fast writes (models, predictions, plots, JSON) goes through
:func:`atomic_output`, so a failure (or Ctrl-C) never leaves a half-written file under the
requested name: readers see the old file or the new one.

:func:`read_inputs` (and :func:`read_input_parts`, file by file) reads the samples of
``softmax-fast predict``: NumPy and CSV files through the same readers as training data
(:func:`softmax_fast.datasets.load_features`), svmlight files as ``train`` reads them, IDX
files through :func:`softmax_fast.datasets.read_idx`, images with Pillow (:func:`read_image`:
16-bit images scaled to 8 bits, multi-frame images refused, a pixel limit against
decompression bombs), and ``-``: standard input, a ``.npy`` stream (told by NumPy's magic
bytes) or else CSV text.
"""

import contextlib
import os
import struct
import tempfile
import threading
import zlib
from pathlib import Path

import numpy as np

from softmax_fast.datasets.files import (
    FEATURE_SUFFIXES,
    SVMLIGHT_SUFFIXES,
    csv_columns,
    load_features,
)
from softmax_fast.datasets.idx import read_idx
from softmax_fast.datasets.limits import check_size

#: Extensions read as images by :func:`read_inputs`.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
#: Extensions read as IDX (the Fashion-MNIST format), plain or gzipped.
IDX_SUFFIXES = (".idx", ".ubyte", ".idx3-ubyte", ".gz")
INPUT_SUFFIXES = (*FEATURE_SUFFIXES, *SVMLIGHT_SUFFIXES, *IDX_SUFFIXES, *IMAGE_SUFFIXES)
#: The input name that means standard input.
STDIN = "-"
#: The first bytes of every ``.npy`` file: how a stream on standard input is told from CSV.
_NPY_MAGIC = b"\x93NUMPY"

#: Environment variable replacing Pillow's ``Image.MAX_IMAGE_PIXELS`` for :func:`read_image`.
MAX_IMAGE_PIXELS_ENV_VAR = "SOFTMAX_FAST_MAX_IMAGE_PIXELS"
#: Pillow's default ``Image.MAX_IMAGE_PIXELS`` (a 1024x1024x4x3 image), used when it is unset.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
#: 16-bit pixels are divided by this to give 8-bit ones: 65535 / 257 = 255 exactly.
SIXTEEN_TO_EIGHT_BITS = 257
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
#: Pillow's pixel limit is a module global: changed (and restored) under this lock.
_PILLOW_LIMIT_LOCK = threading.Lock()
#: Temporary files of :func:`atomic_output` not yet renamed or removed: what a process ended
#: from another thread (the CLI's Ctrl-C watchdog) must remove.
PENDING_OUTPUTS = set()


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
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".tmp",
                                   dir=directory)
    except OSError as exc:
        raise _output_error(path, exc) from exc
    os.close(fd)
    tmp = Path(tmp)
    PENDING_OUTPUTS.add(str(tmp))
    try:
        try:
            yield tmp
            # mkstemp creates the file 0600; give it the permissions a plain open() would.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, path)
        except OSError as exc:
            # The user knows the file by its name, not by the hidden temporary one.
            if exc.filename in (None, str(tmp), os.fspath(tmp)):
                raise _output_error(path, exc) from exc
            raise
    finally:
        tmp.unlink(missing_ok=True)
        PENDING_OUTPUTS.discard(str(tmp))


def _output_error(path, exc):
    """``exc`` (same type) with a message naming ``path`` instead of a temporary file."""
    reason = exc.strerror or str(exc)
    error = type(exc)(f"{path}: cannot write it: {reason}")
    error.errno = exc.errno
    return error


def write_text_atomic(path, text):
    """Write ``text`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def read_inputs(paths, n_features, **options):
    """Read prediction inputs into one 2-D array of ``n_features`` columns.

    Parameters
    ----------
    paths : sequence of str
        ``.npy`` (2-D, or 3-D images flattened, or 1-D one sample), ``.npz`` (array ``X``, or
        its only array), ``.csv`` (features; see ``label_column``), svmlight (``.svm``,
        ``.svmlight``, ``.libsvm``; the labels are ignored), IDX (``.idx``, ``*-ubyte``,
        ``.gz``) or image files (PNG, JPEG...; converted to grayscale, one sample per image,
        pixel values 0-255 like Fashion-MNIST), or ``-`` for standard input (``.npy`` bytes,
        else CSV text).
    n_features : int
        Number of features the model expects.
    **options
        ``header``, ``label_column``, ``strict_label_column``, ``max_bytes`` and ``stdin``,
        as for :func:`read_input_parts`.

    Returns
    -------
    numpy.ndarray of shape (n_samples, n_features), or scipy.sparse.csr_matrix
        uint8 when every input holds uint8 pixels, else float64; CSR (float64) when an input
        is an svmlight file.

    Raises
    ------
    InputError
        If a file is missing, of an unknown type, unreadable, larger than a size limit, has
        the wrong number of features, or holds NaN or infinite values.
    """
    return stack_inputs([X for _, X in read_input_parts(paths, n_features, **options)])


def read_input_parts(paths, n_features, *, header=None, label_column=None,
                     strict_label_column=True, max_bytes=None, stdin=None):
    """Read prediction inputs file by file: ``[(path, X), ...]`` in the order given.

    Parameters
    ----------
    paths, n_features : as for :func:`read_inputs`.
    header : bool or None, optional
        Whether the first row of a ``.csv`` input is a header (None: detected when
        unambiguous, see :mod:`softmax_fast.datasets.files`).
    label_column : str or int, optional
        The label column of ``.csv`` inputs, left out of the features. Without it a column
        named ``label``, ``target``, ``class``, ``y`` or ``species`` is left out.
    strict_label_column : bool, default=True
        True: ``label_column`` must be in every CSV input (the user named it). False (the
        label column the training file had): a name is left out where the header has it and
        an index only from files with ``n_features + 1`` columns.
    max_bytes : int, optional
        Size limit of one array read from a file (:mod:`softmax_fast.datasets.limits`); for
        standard input, of what it holds.
    stdin : binary file object, optional
        What ``-`` reads (default: ``sys.stdin.buffer``). ``-`` may be given once.

    Raises
    ------
    InputError
        As :func:`read_inputs`, and for ``-`` given twice.
    """
    if sum(str(p) == STDIN for p in paths) > 1:
        raise InputError("- (standard input) can be given once")
    csv_options = (header, label_column, strict_label_column)
    parts = []
    for path in paths:
        if str(path) == STDIN:
            with _stdin_as_file(stdin, max_bytes) as tmp:
                parts.append((STDIN, _read_one(tmp, n_features, csv_options, max_bytes,
                                               name=STDIN)))
        else:
            parts.append((str(path), _read_one(Path(path), n_features, csv_options,
                                               max_bytes)))
    return parts


def stack_inputs(arrays):
    """The rows of ``arrays`` (from :func:`read_input_parts`) as one array or CSR matrix."""
    import scipy.sparse as sp

    if any(sp.issparse(a) for a in arrays):
        return sp.vstack([sp.csr_matrix(a, dtype=np.float64) for a in arrays], format="csr")
    if all(a.dtype == np.uint8 for a in arrays):
        return np.ascontiguousarray(np.concatenate(arrays))
    return np.ascontiguousarray(np.concatenate([a.astype(np.float64) for a in arrays]))


@contextlib.contextmanager
def _stdin_as_file(stream, max_bytes):
    """Standard input copied to a temporary ``.npy`` or ``.csv`` file, for the file readers.

    A copy, not a parser of its own: every check of the file readers (size, header, label
    column, NaN) applies to a stream too. The copy stops at the size limit.
    """
    import sys

    if stream is None:
        if sys.stdin is None or sys.stdin.isatty():
            # Reading a terminal would wait for typed samples: surely a forgotten pipe.
            raise InputError("-: standard input is a terminal; pipe .npy bytes or CSV text "
                             "into it (… | softmax-fast predict MODEL -)")
        stream = sys.stdin.buffer
    head = stream.read(len(_NPY_MAGIC))
    if not head:
        raise InputError("-: standard input is empty; pipe .npy bytes or CSV text into it")
    suffix = ".npy" if head == _NPY_MAGIC else ".csv"
    fd, tmp = tempfile.mkstemp(prefix="softmax-fast-stdin-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(head)
            total = len(head)
            while chunk := stream.read(1 << 20):
                total += len(chunk)
                check_size(total, "-: standard input", max_bytes)
                out.write(chunk)
        yield Path(tmp)
    except ValueError as exc:  # the size limit
        raise InputError(str(exc)) from exc
    finally:
        os.unlink(tmp)


def _read_one(path, n_features, csv_options, max_bytes, name=None):
    """The samples of one input; errors name it as ``name`` (``-``), else by its path."""
    name = str(path) if name is None else name
    if not path.is_file():
        raise InputError(f"{path}: {'not a regular file' if path.exists() else 'no such file'}")
    suffix = path.suffix.lower()
    try:
        X = _read_array(path, suffix, n_features, csv_options, max_bytes)
    except InputError:
        raise
    except ValueError as exc:
        # The readers of softmax_fast.datasets name the file in their messages.
        message = str(exc).replace(str(path), name)
        raise InputError(message if message.startswith(name)
                         else f"{name}: cannot read: {message}") from exc
    except OSError as exc:
        raise InputError(f"{name}: cannot read: {exc}") from exc
    return _as_rows(X, Path(name), n_features, suffix)


def _read_array(path, suffix, n_features, csv_options, max_bytes):
    """The array stored in ``path``, by the reader of its format."""
    if suffix == ".csv":
        header, label_column, strict = csv_options
        if label_column is not None and not strict:
            label_column = recorded_label_column(path, n_features, header, label_column)
        return load_features(path, header=header, label_column=label_column,
                             max_bytes=max_bytes)
    if suffix in FEATURE_SUFFIXES:
        return load_features(path, max_bytes=max_bytes)
    if suffix in SVMLIGHT_SUFFIXES:
        return _read_svmlight(path, n_features, max_bytes)
    if suffix in IMAGE_SUFFIXES:
        return read_image(path)
    if suffix in IDX_SUFFIXES or path.name.lower().endswith("-ubyte"):
        return read_idx(path, max_bytes=max_bytes)
    raise InputError(f"{path}: unknown input type {suffix!r}; use one of "
                     f"{', '.join(INPUT_SUFFIXES)}")


def recorded_label_column(path, n_features, header, label_column):
    """The training file's label column (``label_column``, as ``train --out`` recorded it) if
    the CSV file ``path`` has it, else None.

    A name counts where the header has it (any case); an index names no column by itself, so
    it counts only in a file with one column more than the ``n_features`` features.
    """
    names, n_columns = csv_columns(path, header=header)
    if isinstance(label_column, str):
        known = {name.casefold() for name in names or ()}
        return label_column if label_column.casefold() in known else None
    # An index names no column: only a file with one column more than the features has one.
    return label_column if n_columns == n_features + 1 else None


def _read_svmlight(path, n_features, max_bytes):
    """The features of an svmlight file as CSR, ``n_features`` wide (its labels ignored)."""
    check_size(os.path.getsize(path), f"{path}: svmlight file", max_bytes)
    from sklearn.datasets import load_svmlight_file

    try:
        X, _ = load_svmlight_file(os.fspath(path), n_features=n_features)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not an svmlight text file ({exc.reason})") from exc
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}; the model expects {n_features} features") from exc
    return X


def read_image(path):
    """Read an image file as a 2-D uint8 grayscale array with Pillow.

    Pillow only: matplotlib's ``imread`` itself reads PNG through Pillow (a hard dependency of
    matplotlib), so it is no fallback. Colour and palette images are converted to ITU-R 601
    luma; 16-bit grayscale (``I;16``, and ``I`` from a PNG) is scaled to 8 bits (value / 257,
    rounded), not clipped.

    Raises
    ------
    InputError
        If Pillow is not installed, the file is not a readable image, holds several frames (an
        animation, a multi-page TIFF), has more pixels than the limit (Pillow's
        ``Image.MAX_IMAGE_PIXELS``, or ``$SOFTMAX_FAST_MAX_IMAGE_PIXELS``; checked from the
        header, before decoding), or has 32-bit integer or floating-point pixels (no
        unambiguous 8-bit scale).
    """
    try:
        from PIL import Image
    except ImportError:
        raise InputError(f"{path}: reading images needs Pillow: pip install pillow (it also "
                         "comes with the plot extra: pip install 'softmax-fast[plot]')") from None
    limit = max_image_pixels(Image)
    try:
        # Pillow's own check is off while the header is read: the size is checked just below,
        # with a message that says how to raise the limit.
        with _pillow_pixel_check_off(Image), Image.open(path) as image:
            _check_image(image, path, limit)
            return _grayscale(image, path)
    except InputError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error,
            Image.DecompressionBombError) as exc:
        # Pillow's decoders raise all of these on corrupt files (SyntaxError: broken headers).
        raise InputError(f"{path}: cannot read the image: {exc}") from exc


def max_image_pixels(Image=None):
    """The pixel limit of :func:`read_image`: ``$SOFTMAX_FAST_MAX_IMAGE_PIXELS``, else Pillow's.

    Raises
    ------
    InputError
        If the environment variable is not a positive integer.
    """
    text = os.environ.get(MAX_IMAGE_PIXELS_ENV_VAR, "").strip()
    if text:
        if not (text.isascii() and text.isdigit()) or int(text) < 1:
            raise InputError(f"{MAX_IMAGE_PIXELS_ENV_VAR}={text!r} is not a positive number "
                             "of pixels")
        return int(text)
    return (getattr(Image, "MAX_IMAGE_PIXELS", None) if Image is not None else None) \
        or DEFAULT_MAX_IMAGE_PIXELS


@contextlib.contextmanager
def _pillow_pixel_check_off(Image):
    with _PILLOW_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _check_image(image, path, limit):
    """Refuse, from the header alone, images too large or with several frames."""
    width, height = image.size
    if width * height > limit:
        raise InputError(
            f"{path}: a {width}x{height} image has {width * height:,} pixels, more than the "
            f"limit of {limit:,} (Pillow's guard against decompression bombs); if the image is "
            f"genuine, raise it: {MAX_IMAGE_PIXELS_ENV_VAR}={width * height}")
    if getattr(image, "is_animated", False) or getattr(image, "n_frames", 1) > 1:
        raise InputError(
            f"{path}: holds {image.n_frames} frames (an animation or a multi-page image); "
            "predict takes one image per file: save the frame you mean as its own file")


def _grayscale(image, path):
    """The pixels as 8-bit grayscale: 16-bit values scaled, never clipped."""
    sixteen_bit = image.mode in _SIXTEEN_BIT_MODES or \
        (image.mode == "I" and image.format == "PNG")  # older Pillow reads 16-bit PNGs as "I"
    if sixteen_bit:
        values = np.asarray(image).astype(np.float64)
        return np.rint(values / SIXTEEN_TO_EIGHT_BITS).clip(0, 255).astype(np.uint8)
    if image.mode in ("I", "F"):
        kind = "32-bit integer" if image.mode == "I" else "floating-point"
        raise InputError(f"{path}: {kind} pixels have no unambiguous 8-bit scale; save the "
                         "image as 8-bit (or 16-bit) grayscale or colour")
    # convert("L"): ITU-R 601 luma for RGB(A), palette images expanded first.
    return np.asarray(image.convert("L"), dtype=np.uint8)


def _as_rows(X, path, n_features, suffix):
    if hasattr(X, "tocsr"):  # svmlight: n_features wide already
        return X.tocsr()
    X = np.asarray(X)
    if X.dtype.kind not in "biuf":
        raise InputError(f"{path}: features must be numeric, got dtype {X.dtype}")
    if X.ndim == 1:
        X = X.reshape(1, -1)
    elif X.ndim == 2 and suffix in IMAGE_SUFFIXES:
        if X.size != n_features:
            raise InputError(f"{path}: a {X.shape[1]}x{X.shape[0]} image has {X.size} pixels but "
                             f"the model expects {n_features} features; resize it")
        X = X.reshape(1, -1)
    elif X.ndim >= 3:
        X = X.reshape(X.shape[0], -1)
    if X.shape[1] != n_features:
        hint = "; if one column is the label, name it with --label-column" \
            if suffix == ".csv" and X.shape[1] == n_features + 1 else ""
        raise InputError(f"{path}: {X.shape[1]} features per sample but the model expects "
                         f"{n_features}; pass data shaped like the training data{hint}")
    if X.dtype.kind == "f" and not np.isfinite(X).all():
        bad = int((~np.isfinite(X)).any(axis=1).sum())
        raise InputError(f"{path}: {bad} sample(s) contain NaN or infinite values; "
                         "remove or impute them")
    if X.dtype != np.uint8 and X.dtype.kind in "biu":
        X = X.astype(np.float64)
    return X
