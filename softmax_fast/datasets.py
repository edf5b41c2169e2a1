"""Datasets: Fashion-MNIST (found on disk or downloaded), a bundled sample, and user data files.

Two named datasets are known to :func:`load_dataset`:

``"fashion-mnist"``
    The full Fashion-MNIST (60,000 training and 10,000 test images of 28x28 pixels, 10 classes).
    It is looked for, in this order, in the directory named by ``$SOFTMAX_FAST_DATA``, in the
    user cache directory (see :func:`cache_dir`) and in ``/usr/share/datasets/fashion-mnist``
    (Debian package ``dataset-fashion-mnist``). If it is in none of them it can be downloaded
    into the cache, verified against known SHA-256 checksums.
``"fashion-mnist-sample"``
    A stratified subset (6,000 training, 1,000 test images) shipped inside the package, so that
    examples and tests never need the network.

Images are returned as raw ``uint8`` pixel values in ``[0, 255]``, one flattened image per row;
the training code scales them to ``[0, 1]`` ``float32`` itself.

:func:`load_file` reads a user's own data (``.npz``, ``.npy``, ``.csv`` or svmlight files) and
:func:`read_idx` reads any IDX file, the format Fashion-MNIST is distributed in.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import gzip
import hashlib
import http.client
import importlib.resources
import math
import os
import shutil
import struct
import sys
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

import click
import numpy as np

from softmax_fast import __version__

if TYPE_CHECKING:
    import scipy.sparse

__all__ = [
    "DATASETS",
    "DatasetError",
    "DatasetInfo",
    "ExpectedFile",
    "FASHION_MNIST_FILES",
    "cache_dir",
    "dataset_info",
    "download_dataset",
    "find_dataset",
    "list_datasets",
    "load_dataset",
    "load_file",
    "read_idx",
    "search_paths",
    "verify_dataset",
]

FASHION_MNIST = "fashion-mnist"
FASHION_MNIST_SAMPLE = "fashion-mnist-sample"

#: Known dataset names and a one-line description of each.
DATASETS: dict[str, str] = {
    FASHION_MNIST: "Fashion-MNIST: 60,000 train / 10,000 test 28x28 grayscale images, 10 classes",
    FASHION_MNIST_SAMPLE: (
        "stratified 6,000 train / 1,000 test subset of Fashion-MNIST, shipped with the package"
    ),
}

#: Where Fashion-MNIST is downloaded from; ``$SOFTMAX_FAST_MIRROR`` overrides it. S3 website
#: endpoints serve plain HTTP only; integrity comes from the SHA-256 check of every file.
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
MIRROR_ENV_VAR = "SOFTMAX_FAST_MIRROR"
DATA_DIR_ENV_VAR = "SOFTMAX_FAST_DATA"
#: Where the Debian package ``dataset-fashion-mnist`` installs the four files.
DEBIAN_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
#: Seconds to wait for the server to connect or to send the next block of data.
DOWNLOAD_TIMEOUT = 30.0
#: Largest IDX payload :func:`read_idx` accepts by default (16 GiB): far above any real dataset
#: it is used for, and low enough that a corrupt header cannot ask for an absurd allocation.
MAX_IDX_BYTES = 2**34

_SAMPLE_PACKAGE = "softmax_fast.data"
_SAMPLE_FILENAME = "fashion-mnist-sample.npz"
_CHUNK_BYTES = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"


class DatasetError(RuntimeError):
    """A dataset is not available: not found on disk, or its download failed."""


class ExpectedFile(NamedTuple):
    """Checksum and size of one decompressed dataset file.

    Attributes
    ----------
    sha256 : str
        Hex SHA-256 digest of the decompressed file.
    size : int
        Size in bytes of the decompressed file.
    """

    sha256: str
    size: int


_TRAIN_IMAGES = "train-images-idx3-ubyte"
_TRAIN_LABELS = "train-labels-idx1-ubyte"
_TEST_IMAGES = "t10k-images-idx3-ubyte"
_TEST_LABELS = "t10k-labels-idx1-ubyte"

#: The four Fashion-MNIST files. The checksums are of the decompressed files because the
#: Debian package recompresses them, so compressed bytes differ between sources.
FASHION_MNIST_FILES: dict[str, ExpectedFile] = {
    _TRAIN_IMAGES: ExpectedFile(
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 47_040_016
    ),
    _TRAIN_LABELS: ExpectedFile(
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 60_008
    ),
    _TEST_IMAGES: ExpectedFile(
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 7_840_016
    ),
    _TEST_LABELS: ExpectedFile(
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 10_008
    ),
}

_HOW_TO_GET_FASHION_MNIST = (
    "To make it available, install the Debian package (apt install dataset-fashion-mnist), "
    f"put the four files (optionally .gz) in a directory and set {DATA_DIR_ENV_VAR} to it, "
    "or retry the download."
)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Availability of one named dataset, as reported by :func:`dataset_info`.

    Attributes
    ----------
    name : str
        The dataset name accepted by :func:`load_dataset`.
    description : str
        One line saying what the dataset is.
    available : bool
        Whether it can be loaded without downloading.
    location : pathlib.Path or None
        The directory holding the files (the ``.npz`` file for the bundled sample), or None
        when not available.
    source : str or None
        Where it was found: ``"env"`` (``$SOFTMAX_FAST_DATA``), ``"cache"``, ``"debian"`` or
        ``"bundled"``; None when not available.
    size_bytes : int or None
        Total size on disk of its files, or None when not available.
    """

    name: str
    description: str
    available: bool
    location: Path | None
    source: str | None
    size_bytes: int | None


# --------------------------------------------------------------------------------------------
# IDX files
# --------------------------------------------------------------------------------------------

_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(
    source: str | os.PathLike[str] | BinaryIO, *, max_bytes: int = MAX_IDX_BYTES
) -> np.ndarray:
    """Read an IDX file, plain or gzip-compressed, into a numpy array.

    Gzip compression is recognised by the file's first two bytes (``1f 8b``), not by its name.
    The header is validated before the payload is read: a file whose header claims more data
    than it holds, or more than `max_bytes`, is rejected without allocating that much memory.

    Parameters
    ----------
    source : str, os.PathLike or binary file object
        Path of the file, or a binary file object opened for reading that is seekable or has a
        ``peek`` method (needed to sniff the compression without consuming bytes).
    max_bytes : int, optional
        Largest payload, in bytes, the header may claim. Defaults to :data:`MAX_IDX_BYTES`.

    Returns
    -------
    numpy.ndarray
        Array with the shape given in the header and the element type given by its type code
        (uint8, int8, int16, int32, float32 or float64), in native byte order.

    Raises
    ------
    ValueError
        If the data is not a valid IDX file: bad magic number, unknown element type, a payload
        that is shorter or longer than the header says or larger than `max_bytes`, or corrupt
        gzip data. The message names the file.
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as stream:
            return _read_idx_stream(stream, os.fspath(source), max_bytes)
    return _read_idx_stream(source, getattr(source, "name", "<IDX stream>"), max_bytes)


def _read_idx_stream(stream: BinaryIO, label: str, max_bytes: int) -> np.ndarray:
    if _peek(stream, len(_GZIP_MAGIC)) != _GZIP_MAGIC:
        return _parse_idx(stream, label, max_bytes, _remaining_bytes(stream))
    try:
        with gzip.GzipFile(fileobj=stream, mode="rb") as decompressed:
            # The decompressed length is unknown until the end, so the payload is checked as
            # it is read: in bounded chunks that stop at the first missing byte.
            return _parse_idx(decompressed, label, max_bytes, available=None)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise ValueError(f"{label}: corrupt gzip data ({exc})") from exc


def _peek(stream: BinaryIO, size: int) -> bytes:
    if stream.seekable():
        position = stream.tell()
        head = stream.read(size)
        stream.seek(position)
        return head
    peek = getattr(stream, "peek", None)
    if peek is None:
        raise TypeError(
            "read_idx needs a path or a binary file object that is seekable or peekable"
        )
    return peek(size)[:size]


def _remaining_bytes(stream: BinaryIO) -> int | None:
    if not stream.seekable():
        return None
    position = stream.tell()
    end = stream.seek(0, os.SEEK_END)
    stream.seek(position)
    return end - position


def _parse_idx(stream: BinaryIO, label: str, max_bytes: int, available: int | None) -> np.ndarray:
    magic = _read_up_to(stream, 4)
    if len(magic) < 4:
        raise ValueError(f"{label}: not an IDX file: only {len(magic)} bytes long")
    if magic[:2] != b"\x00\x00":
        raise ValueError(
            f"{label}: not an IDX file: magic number {magic.hex()} does not start with two zero "
            "bytes"
        )
    type_code, ndim = magic[2], magic[3]
    dtype = _IDX_DTYPES.get(type_code)
    if dtype is None:
        known = ", ".join(f"0x{code:02X}" for code in _IDX_DTYPES)
        raise ValueError(
            f"{label}: unknown IDX element type code 0x{type_code:02X} (known: {known})"
        )
    if ndim == 0:
        raise ValueError(f"{label}: IDX header declares zero dimensions")
    dims = _read_up_to(stream, 4 * ndim)
    if len(dims) < 4 * ndim:
        raise ValueError(f"{label}: truncated IDX header: {ndim} dimensions declared")
    shape = struct.unpack(f">{ndim}I", dims)
    payload_bytes = math.prod(shape) * dtype.itemsize

    if payload_bytes > max_bytes:
        raise ValueError(
            f"{label}: IDX header claims shape {shape}, {payload_bytes} bytes of data, more than "
            f"the limit of {max_bytes} bytes; the header is corrupt"
        )
    if available is not None:
        held = available - 4 - 4 * ndim
        if held != payload_bytes:
            problem = "truncated" if held < payload_bytes else "trailing data after the payload"
            raise ValueError(
                f"{label}: {problem}: IDX header claims shape {shape}, {payload_bytes} bytes of "
                f"data, but the file holds {held}"
            )

    payload = _read_up_to(stream, payload_bytes)
    if len(payload) < payload_bytes:
        raise ValueError(
            f"{label}: truncated: IDX header claims shape {shape}, {payload_bytes} bytes of data, "
            f"but the data ends after {len(payload)}"
        )
    if stream.read(1):
        raise ValueError(f"{label}: trailing data after the {payload_bytes}-byte IDX payload")
    array = np.frombuffer(payload, dtype=dtype).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def _read_up_to(stream: BinaryIO, size: int) -> bytearray:
    """Read `size` bytes, fewer only if the stream ends first.

    The buffer grows with the data actually read, so a header lying about the size costs no
    more memory than the file really holds.
    """
    buffer = bytearray()
    while len(buffer) < size:
        chunk = stream.read(min(_CHUNK_BYTES, size - len(buffer)))
        if not chunk:
            break
        buffer += chunk
    return buffer


# --------------------------------------------------------------------------------------------
# Finding the named datasets
# --------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Return the user cache directory of softmax-fast.

    Returns
    -------
    pathlib.Path
        ``$XDG_CACHE_HOME/softmax-fast``, or ``~/.cache/softmax-fast`` when ``XDG_CACHE_HOME``
        is unset or not absolute. Downloaded datasets go to a subdirectory named after the
        dataset. The directory is not created.
    """
    xdg_cache = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG base directory spec says relative paths are invalid and must be ignored.
    base = Path(xdg_cache) if os.path.isabs(xdg_cache) else Path.home() / ".cache"
    return base / "softmax-fast"


def search_paths(*, data_home: str | os.PathLike[str] | None = None) -> list[tuple[Path, str]]:
    """List the directories searched for the full Fashion-MNIST, in order of preference.

    Parameters
    ----------
    data_home : str or os.PathLike, optional
        Replaces the user cache directory (:func:`cache_dir`) as the cache location.

    Returns
    -------
    list of (pathlib.Path, str)
        Each directory with its source label: ``"env"`` for ``$SOFTMAX_FAST_DATA`` (only when
        set), ``"cache"`` for ``<cache>/fashion-mnist``, ``"debian"`` for
        ``/usr/share/datasets/fashion-mnist``.
    """
    paths = []
    env_dir = os.environ.get(DATA_DIR_ENV_VAR)
    if env_dir:
        paths.append((Path(env_dir).expanduser(), "env"))
    paths.append((_cache_location(data_home), "cache"))
    paths.append((DEBIAN_DATA_DIR, "debian"))
    return paths


def find_dataset(
    name: str, *, data_home: str | os.PathLike[str] | None = None
) -> tuple[Path, str] | None:
    """Find a named dataset on disk.

    Parameters
    ----------
    name : str
        ``"fashion-mnist"`` or ``"fashion-mnist-sample"``.
    data_home : str or os.PathLike, optional
        Replaces the user cache directory, see :func:`search_paths`.

    Returns
    -------
    (pathlib.Path, str) or None
        The location and its source label, or None if the dataset is not on disk. For
        ``"fashion-mnist"`` the location is the first directory of :func:`search_paths` that
        holds all four files, each either plain or gzipped; for ``"fashion-mnist-sample"`` it is
        the bundled ``.npz`` file and the source is ``"bundled"``.

    Raises
    ------
    ValueError
        If `name` is not a known dataset.
    """
    _check_name(name)
    if name == FASHION_MNIST_SAMPLE:
        sample = _bundled_sample_path()
        return (sample, "bundled") if sample.is_file() else None
    for directory, source in search_paths(data_home=data_home):
        if _complete_files(directory) is not None:
            return directory, source
    return None


def dataset_info(name: str, *, data_home: str | os.PathLike[str] | None = None) -> DatasetInfo:
    """Report whether a named dataset is available, where, and how large it is.

    Parameters
    ----------
    name : str
        ``"fashion-mnist"`` or ``"fashion-mnist-sample"``.
    data_home : str or os.PathLike, optional
        Replaces the user cache directory, see :func:`search_paths`.

    Returns
    -------
    DatasetInfo

    Raises
    ------
    ValueError
        If `name` is not a known dataset.
    """
    found = find_dataset(name, data_home=data_home)
    if found is None:
        return DatasetInfo(name, DATASETS[name], False, None, None, None)
    location, source = found
    if name == FASHION_MNIST_SAMPLE:
        files = [location]
    else:
        files = list((_complete_files(location) or {}).values())
    size = sum(path.stat().st_size for path in files)
    return DatasetInfo(name, DATASETS[name], True, location, source, size)


def list_datasets(*, data_home: str | os.PathLike[str] | None = None) -> list[DatasetInfo]:
    """Report every known dataset, see :func:`dataset_info`.

    Parameters
    ----------
    data_home : str or os.PathLike, optional
        Replaces the user cache directory, see :func:`search_paths`.

    Returns
    -------
    list of DatasetInfo
        One entry per name in :data:`DATASETS`, in that order.
    """
    return [dataset_info(name, data_home=data_home) for name in DATASETS]


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")


def _cache_location(data_home: str | os.PathLike[str] | None) -> Path:
    root = Path(data_home).expanduser() if data_home is not None else cache_dir()
    return root / FASHION_MNIST


def _bundled_sample_path() -> Path:
    # The package is installed unzipped (zip_safe=False), so the resource is a real file.
    return Path(str(importlib.resources.files(_SAMPLE_PACKAGE).joinpath(_SAMPLE_FILENAME)))


def _present_files(directory: Path) -> dict[str, Path]:
    """Map each Fashion-MNIST file found in `directory`, plain or gzipped, to its path."""
    present = {}
    for filename in FASHION_MNIST_FILES:
        # Plain files first: they load faster than their gzipped twins.
        for candidate in (directory / filename, directory / f"{filename}.gz"):
            if candidate.is_file():
                present[filename] = candidate
                break
    return present


def _complete_files(directory: Path) -> dict[str, Path] | None:
    """Map every Fashion-MNIST file to its path in `directory`, or None if any is missing."""
    present = _present_files(directory)
    return present if len(present) == len(FASHION_MNIST_FILES) else None


def _not_found_message(data_home: str | os.PathLike[str] | None) -> str:
    looked = [
        f"  {directory} ({source})" for directory, source in search_paths(data_home=data_home)
    ]
    if not os.environ.get(DATA_DIR_ENV_VAR):
        looked.insert(0, f"  ${DATA_DIR_ENV_VAR} (not set)")
    files = ", ".join(FASHION_MNIST_FILES)
    return (
        f"Fashion-MNIST not found. A directory counts if it holds all of {files} "
        "(each optionally gzipped). Looked in:\n"
        + "\n".join(looked)
        + f"\n{_HOW_TO_GET_FASHION_MNIST} Or call with download=True to download it."
    )


# --------------------------------------------------------------------------------------------
# Loading the named datasets
# --------------------------------------------------------------------------------------------


def load_dataset(
    name: str,
    *,
    data_home: str | os.PathLike[str] | None = None,
    download: bool = True,
    progress: bool | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load a named dataset, downloading the full Fashion-MNIST if it is nowhere on disk.

    Parameters
    ----------
    name : str
        ``"fashion-mnist"`` (the full dataset, searched as described in :func:`search_paths`)
        or ``"fashion-mnist-sample"`` (bundled with the package; never needs the network).
    data_home : str or os.PathLike, optional
        Replaces the user cache directory (:func:`cache_dir`) for searching and downloading.
    download : bool, default True
        Download the full Fashion-MNIST into the cache if it is not found.
    progress : bool or None, default None
        Show a progress bar while downloading. None shows it when standard error is a
        terminal.

    Returns
    -------
    X_train : numpy.ndarray of uint8, shape (n_train, 784)
        Training images, one flattened 28x28 image per row, C-contiguous. Raw pixel values in
        ``[0, 255]``, not scaled: the training code scales to ``[0, 1]`` float32 itself.
    y_train : numpy.ndarray of int64, shape (n_train,)
        Training labels in ``0..9``.
    X_test : numpy.ndarray of uint8, shape (n_test, 784)
        Test images, as `X_train`.
    y_test : numpy.ndarray of int64, shape (n_test,)
        Test labels in ``0..9``.

    Raises
    ------
    ValueError
        If `name` is not a known dataset, or a dataset file is corrupt.
    DatasetError
        If the full Fashion-MNIST is not found and `download` is False, or the download fails.
    """
    _check_name(name)
    if name == FASHION_MNIST_SAMPLE:
        return _load_bundled_sample()
    found = find_dataset(name, data_home=data_home)
    if found is not None:
        directory = found[0]
    elif download:
        directory = download_dataset(name, data_home=data_home, progress=progress)
    else:
        raise DatasetError(_not_found_message(data_home))
    files = _complete_files(directory)
    if files is None:
        raise DatasetError(f"Fashion-MNIST files disappeared from {directory} while loading")
    X_train, y_train = _load_images_and_labels(files[_TRAIN_IMAGES], files[_TRAIN_LABELS])
    X_test, y_test = _load_images_and_labels(files[_TEST_IMAGES], files[_TEST_LABELS])
    return X_train, y_train, X_test, y_test


def _load_images_and_labels(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(
            f"{images_path}: expected a 3-D uint8 image array, got {images.ndim}-D {images.dtype}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(
            f"{labels_path}: expected a 1-D uint8 label array, got {labels.ndim}-D {labels.dtype}"
        )
    if len(images) != len(labels):
        raise ValueError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels"
        )
    X = np.ascontiguousarray(images.reshape(len(images), -1))
    return X, labels.astype(np.int64)


def _load_bundled_sample() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    resource = importlib.resources.files(_SAMPLE_PACKAGE).joinpath(_SAMPLE_FILENAME)
    with resource.open("rb") as stream, np.load(stream, allow_pickle=False) as archive:
        return (
            np.ascontiguousarray(archive["X_train"], dtype=np.uint8),
            archive["y_train"].astype(np.int64),
            np.ascontiguousarray(archive["X_test"], dtype=np.uint8),
            archive["y_test"].astype(np.int64),
        )


# --------------------------------------------------------------------------------------------
# Downloading
# --------------------------------------------------------------------------------------------


def download_dataset(
    name: str,
    *,
    force: bool = False,
    progress: bool | None = None,
    data_home: str | os.PathLike[str] | None = None,
) -> Path:
    """Download a named dataset into the cache, unless it is already on disk.

    Every file is downloaded gzipped from ``$SOFTMAX_FAST_MIRROR`` or
    :data:`FASHION_MNIST_URL`, and checked against the size and SHA-256 of its decompressed
    content in :data:`FASHION_MNIST_FILES`. Only files missing from the cache directory are
    fetched (all four with `force`). They go to a temporary directory in the cache and are
    moved into place only when all of them have been verified, so a download that fails or is
    interrupted (including by Ctrl-C) leaves nothing behind.

    Parameters
    ----------
    name : str
        ``"fashion-mnist"``, or ``"fashion-mnist-sample"``, which is bundled: nothing is
        downloaded and its path is returned.
    force : bool, default False
        Download into the cache even if the dataset is already found somewhere, replacing any
        cached copy.
    progress : bool or None, default None
        Show a progress bar per file. None shows it when standard error is a terminal.
    data_home : str or os.PathLike, optional
        Replaces the user cache directory (:func:`cache_dir`).

    Returns
    -------
    pathlib.Path
        The directory that holds the dataset (the ``.npz`` file for the bundled sample).

    Raises
    ------
    ValueError
        If `name` is not a known dataset.
    DatasetError
        If a download fails, is cut off, or does not match its checksum. The message says how
        else to get the data.
    """
    _check_name(name)
    if name == FASHION_MNIST_SAMPLE:
        return _bundled_sample_path()
    if not force:
        found = find_dataset(name, data_home=data_home)
        if found is not None:
            return found[0]

    target = _cache_location(data_home)
    present = {} if force else _present_files(target)
    wanted = [filename for filename in FASHION_MNIST_FILES if filename not in present]
    show_progress = _wants_progress(progress)
    target.mkdir(parents=True, exist_ok=True)
    # Staging next to the target keeps the final os.replace on one file system, hence atomic.
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target))
    try:
        for filename in wanted:
            _download_verified(filename, staging / f"{filename}.gz", show_progress)
        for filename in wanted:
            os.replace(staging / f"{filename}.gz", target / f"{filename}.gz")
            # A stale plain copy would shadow the fresh download (plain files are preferred).
            (target / filename).unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def verify_dataset(
    name: str, *, data_home: str | os.PathLike[str] | None = None
) -> tuple[Path, str]:
    """Check the files of a named dataset on disk against their known sizes and checksums.

    Parameters
    ----------
    name : str
        ``"fashion-mnist"``, the only dataset with published checksums
        (:data:`FASHION_MNIST_FILES`, of the decompressed files).
    data_home : str or os.PathLike, optional
        Replaces the user cache directory, see :func:`search_paths`.

    Returns
    -------
    (pathlib.Path, str)
        The verified directory and its source label, as from :func:`find_dataset`.

    Raises
    ------
    ValueError
        If `name` is unknown or has no published checksums.
    DatasetError
        If the dataset is not found, or a file differs from its published size or checksum.
    """
    _check_name(name)
    if name != FASHION_MNIST:
        raise ValueError(f"{name!r} has no published checksums; only {FASHION_MNIST!r} does")
    found = find_dataset(name, data_home=data_home)
    files = _complete_files(found[0]) if found is not None else None
    if files is None:
        raise DatasetError(_not_found_message(data_home))
    for filename, path in files.items():
        _check_content(path, FASHION_MNIST_FILES[filename], str(path))
    return found


def _wants_progress(progress: bool | None) -> bool:
    if progress is None:
        return sys.stderr is not None and sys.stderr.isatty()
    return progress


def _mirror_url() -> str:
    return os.environ.get(MIRROR_ENV_VAR) or FASHION_MNIST_URL


def _download_verified(filename: str, destination: Path, show_progress: bool) -> None:
    """Download ``<mirror>/<filename>.gz`` to `destination` and verify its content."""
    url = f"{_mirror_url().rstrip('/')}/{filename}.gz"
    request = urllib.request.Request(url, headers={"User-Agent": f"softmax-fast/{__version__}"})
    try:
        with (
            urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as response,
            open(destination, "wb") as out,
        ):
            length_header = response.headers.get("Content-Length", "")
            expected_length = int(length_header) if length_header.isdigit() else None
            received = 0
            label = f"Downloading {filename}.gz"
            with _progress_bar(expected_length, label, show_progress) as advance:
                while chunk := response.read(_CHUNK_BYTES):
                    out.write(chunk)
                    received += len(chunk)
                    advance(len(chunk))
    except (OSError, http.client.HTTPException) as exc:
        # OSError covers URLError, HTTPError, timeouts and local write errors.
        raise DatasetError(
            f"Could not download Fashion-MNIST from {url}: {exc}. {_HOW_TO_GET_FASHION_MNIST}"
        ) from exc
    # urllib does not complain when the server closes the connection early.
    if expected_length is not None and received != expected_length:
        raise DatasetError(
            f"Download of {url} was cut off after {received} of {expected_length} bytes. "
            f"{_HOW_TO_GET_FASHION_MNIST}"
        )
    _check_content(destination, FASHION_MNIST_FILES[filename], f"Download of {url}")


def _check_content(path: Path, expected: ExpectedFile, what: str) -> None:
    """Raise DatasetError unless the decompressed content of `path` is as `expected`.

    `what` names the data in the message, such as the URL it was downloaded from.
    """
    with open(path, "rb") as raw:
        compressed = raw.read(len(_GZIP_MAGIC)) == _GZIP_MAGIC
    digest = hashlib.sha256()
    size = 0
    try:
        with (gzip.open if compressed else open)(path, "rb") as stream:
            while chunk := stream.read(_CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DatasetError(
            f"{what} is not valid gzip data ({exc}). {_HOW_TO_GET_FASHION_MNIST}"
        ) from exc
    if size != expected.size or digest.hexdigest() != expected.sha256:
        raise DatasetError(
            f"{what} does not match the expected content: decompressed, it has {size} bytes "
            f"and SHA-256 {digest.hexdigest()}; expected {expected.size} bytes and SHA-256 "
            f"{expected.sha256}. {_HOW_TO_GET_FASHION_MNIST}"
        )


@contextlib.contextmanager
def _progress_bar(total: int | None, label: str, enabled: bool) -> Iterator[Callable[[int], None]]:
    """Yield a function that advances a progress bar by a number of bytes."""
    # click needs a length; without a Content-Length there is nothing to show progress against.
    if not enabled or total is None:
        yield lambda n_bytes: None
        return
    with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
        yield bar.update


# --------------------------------------------------------------------------------------------
# User data files
# --------------------------------------------------------------------------------------------

_SVMLIGHT_SUFFIXES = (".svm", ".svmlight", ".libsvm")
_LOAD_FILE_SUFFIXES = (".npz", ".npy", ".csv", *_SVMLIGHT_SUFFIXES)


def load_file(
    path: str | os.PathLike[str],
    *,
    labels_path: str | os.PathLike[str] | None = None,
    label_column: str | int | None = None,
) -> tuple[np.ndarray | scipy.sparse.csr_matrix, np.ndarray]:
    """Load a user's data file as features and class labels.

    The format is chosen by the file extension:

    ``.npz``
        Arrays ``X`` (2-D) and ``y`` (1-D).
    ``.npy``
        `path` holds ``X``; the labels are read from `labels_path`, by default the file next to
        it with ``.labels.npy`` in place of ``.npy`` (``foo.npy`` and ``foo.labels.npy``).
    ``.csv``
        Comma-separated, one sample per row, with an optional header row (detected by it not
        being numeric). The label column is `label_column`; by default the column named
        ``label`` if the header has one, else the first column. All other columns are features.
    ``.svm``, ``.svmlight``, ``.libsvm``
        svmlight / libsvm text format, read with :func:`sklearn.datasets.load_svmlight_file`.

    NumPy files are read with ``allow_pickle=False``: files holding pickled object arrays are
    refused, since unpickling can run arbitrary code.

    Parameters
    ----------
    path : str or os.PathLike
        The data file.
    labels_path : str or os.PathLike, optional
        Labels for a ``.npy`` features file; not allowed with other formats.
    label_column : str or int, optional
        For ``.csv``: the header name or the index (negative counts from the end) of the label
        column. Not allowed with other formats.

    Returns
    -------
    X : numpy.ndarray of shape (n_samples, n_features), or scipy.sparse.csr_matrix
        Features. ``.npz`` and ``.npy`` keep their stored numeric dtype; ``.csv`` gives float64;
        svmlight gives a float64 CSR matrix.
    y : numpy.ndarray of shape (n_samples,)
        Class labels: int64 when every label is an integer (also integer-valued floats or
        strings such as ``"3"``), otherwise the strings as read.

    Raises
    ------
    ValueError
        For an unknown extension, missing arrays or columns, pickled content, non-numeric
        features, non-integer numeric labels, or features and labels of different lengths.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _LOAD_FILE_SUFFIXES:
        raise ValueError(
            f"{path}: unknown data file extension {suffix!r}; supported: "
            f"{', '.join(_LOAD_FILE_SUFFIXES)}"
        )
    if labels_path is not None and suffix != ".npy":
        raise ValueError(f"{path}: labels_path is only used with .npy files")
    if label_column is not None and suffix != ".csv":
        raise ValueError(f"{path}: label_column is only used with .csv files")

    if suffix == ".npz":
        X, y = _load_npz(path)
    elif suffix == ".npy":
        labels = Path(labels_path) if labels_path is not None else _default_labels_path(path)
        X, y = _load_npy(path), _load_npy(labels)
    elif suffix == ".csv":
        X, y = _load_csv(path, label_column)
    else:
        # Imported here: scikit-learn takes about a second to import and only this needs it.
        from sklearn.datasets import load_svmlight_file

        X, y = load_svmlight_file(os.fspath(path))

    if isinstance(X, np.ndarray) and X.dtype.kind not in "biuf":
        raise ValueError(f"{path}: features must be numeric, got dtype {X.dtype}")
    if X.ndim != 2:
        raise ValueError(
            f"{path}: features must be 2-D (n_samples, n_features), got shape {X.shape}"
        )
    if y.ndim != 1:
        raise ValueError(f"{path}: labels must be 1-D, got shape {y.shape}")
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"{path}: {X.shape[0]} samples but {y.shape[0]} labels")
    return X, _as_class_labels(y, path)


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        missing = [key for key in ("X", "y") if key not in archive.files]
        if missing:
            raise ValueError(
                f"{path}: missing array(s) {', '.join(missing)}; the file holds "
                f"{', '.join(archive.files) or 'no arrays'} (expected X and y)"
            )
        try:
            return archive["X"], archive["y"]
        except ValueError as exc:
            # numpy raises ValueError for object arrays, which would need unpickling.
            raise ValueError(f"{path}: cannot load arrays X and y: {exc}") from exc


def _default_labels_path(path: Path) -> Path:
    labels = path.with_name(f"{path.stem}.labels.npy")
    if not labels.is_file():
        raise ValueError(
            f"{path}: no labels: expected them in {labels} (or pass labels_path explicitly)"
        )
    return labels


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        # numpy raises ValueError for object arrays, which would need unpickling.
        raise ValueError(f"{path}: cannot load array: {exc}") from exc


def _load_csv(path: Path, label_column: str | int | None) -> tuple[np.ndarray, np.ndarray]:
    with open(path, newline="") as stream:
        first_row = next(csv.reader(stream), None)
    if not first_row:
        raise ValueError(f"{path}: empty CSV file")
    header = None if all(_is_number(cell) for cell in first_row) else [c.strip() for c in first_row]
    n_columns = len(first_row)
    if n_columns < 2:
        raise ValueError(f"{path}: a CSV file needs a label column and at least one feature column")
    label_index = _label_column_index(label_column, header, n_columns, path)
    feature_columns = [index for index in range(n_columns) if index != label_index]
    read_options = {"delimiter": ",", "quotechar": '"', "skiprows": 0 if header is None else 1}
    try:
        X = np.loadtxt(path, usecols=feature_columns, dtype=np.float64, ndmin=2, **read_options)
        y = np.loadtxt(path, usecols=[label_index], dtype=str, ndmin=1, **read_options)
    except ValueError as exc:
        raise ValueError(f"{path}: cannot parse CSV: {exc}") from exc
    return X, y


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _label_column_index(
    label_column: str | int | None, header: list[str] | None, n_columns: int, path: Path
) -> int:
    if label_column is None:
        return header.index("label") if header is not None and "label" in header else 0
    if isinstance(label_column, str):
        if header is None or label_column not in header:
            columns = ", ".join(header) if header is not None else "none: the file has no header"
            raise ValueError(f"{path}: no column named {label_column!r}; columns: {columns}")
        return header.index(label_column)
    if not -n_columns <= label_column < n_columns:
        raise ValueError(
            f"{path}: label column {label_column} out of range for {n_columns} columns"
        )
    return label_column % n_columns


def _as_class_labels(y: np.ndarray, path: Path) -> np.ndarray:
    if y.dtype.kind in "biu":
        return y.astype(np.int64)
    if y.dtype.kind in "US":
        try:
            numeric = y.astype(np.float64)
        except ValueError:
            return y
    elif y.dtype.kind == "f":
        numeric = y
    else:
        raise ValueError(f"{path}: labels must be integers or strings, got dtype {y.dtype}")
    if not np.all(np.isfinite(numeric)) or not np.array_equal(numeric, np.round(numeric)):
        raise ValueError(f"{path}: labels must be class labels (integers), got non-integer values")
    return numeric.astype(np.int64)
