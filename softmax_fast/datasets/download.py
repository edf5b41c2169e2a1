"""Downloading the full Fashion-MNIST into the cache, and checking files against checksums.

Nothing here draws on the terminal: a caller that wants a progress bar passes a ``progress``
callback (the CLI builds a click progress bar from it, see ``softmax_fast/cli/common.py``).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path

from softmax_fast import __version__

from . import catalog
from .catalog import (
    FASHION_MNIST,
    FASHION_MNIST_SAMPLE,
    HOW_TO_GET_FASHION_MNIST,
    DatasetError,
    ExpectedFile,
    bundled_sample_path,
    cache_location,
    check_name,
    complete_files,
    find_dataset,
    not_found_message,
    present_files,
)
from .idx import CHUNK_BYTES, is_gzipped

__all__ = [
    "DOWNLOAD_TIMEOUT",
    "FASHION_MNIST_URL",
    "MIRROR_ENV_VAR",
    "ProgressCallback",
    "download_dataset",
    "verify_dataset",
]

#: Where Fashion-MNIST is downloaded from; ``$SOFTMAX_FAST_MIRROR`` overrides it. S3 website
#: endpoints serve plain HTTP only; integrity comes from the SHA-256 check of every file.
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
MIRROR_ENV_VAR = "SOFTMAX_FAST_MIRROR"
#: Seconds to wait for the server to connect or to send the next block of data.
DOWNLOAD_TIMEOUT = 30.0

#: ``progress(done_bytes, total_bytes, filename)``: called when the download of ``filename``
#: (the name of the ``.gz`` file) starts, with ``done_bytes`` 0, and after every block it
#: receives. ``total_bytes`` is None when the server does not say how long the file is.
ProgressCallback = Callable[[int, "int | None", str], None]


def download_dataset(
    name: str,
    *,
    force: bool = False,
    progress: ProgressCallback | None = None,
    data_home: str | os.PathLike[str] | None = None,
) -> Path:
    """Download a named dataset into the cache, unless it is already on disk.

    Every file is downloaded gzipped from ``$SOFTMAX_FAST_MIRROR`` or
    :data:`FASHION_MNIST_URL`, and checked against the size and SHA-256 of its decompressed
    content in :data:`~.catalog.FASHION_MNIST_FILES`. Only files missing from the cache
    directory are fetched (all four with `force`). They go to a temporary directory in the
    cache and are moved into place only when all of them have been verified, so a download
    that fails or is interrupted (including by Ctrl-C) leaves nothing behind.

    Parameters
    ----------
    name : str
        ``"fashion-mnist"``, or ``"fashion-mnist-sample"``, which is bundled: nothing is
        downloaded and its path is returned.
    force : bool, default False
        Download into the cache even if the dataset is already found somewhere, replacing any
        cached copy.
    progress : callable, optional
        ``progress(done_bytes, total_bytes, filename)``, see :data:`ProgressCallback`. None:
        no progress reports.
    data_home : str or os.PathLike, optional
        Replaces the user cache directory (:func:`~.catalog.cache_dir`).

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
    check_name(name)
    if name == FASHION_MNIST_SAMPLE:
        return bundled_sample_path()
    if not force:
        found = find_dataset(name, data_home=data_home)
        if found is not None:
            return found[0]

    target = cache_location(data_home)
    present = {} if force else present_files(target)
    wanted = [filename for filename in catalog.FASHION_MNIST_FILES if filename not in present]
    target.mkdir(parents=True, exist_ok=True)
    # Staging next to the target keeps the final os.replace on one file system, hence atomic.
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target))
    try:
        for filename in wanted:
            _download_verified(filename, staging / f"{filename}.gz", progress)
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
        (:data:`~.catalog.FASHION_MNIST_FILES`, of the decompressed files).
    data_home : str or os.PathLike, optional
        Replaces the user cache directory, see :func:`~.catalog.search_paths`.

    Returns
    -------
    (pathlib.Path, str)
        The verified directory and its source label, as from :func:`~.catalog.find_dataset`.

    Raises
    ------
    ValueError
        If `name` is unknown or has no published checksums.
    DatasetError
        If the dataset is not found, or a file differs from its published size or checksum.
    """
    check_name(name)
    if name != FASHION_MNIST:
        raise ValueError(f"{name!r} has no published checksums; only {FASHION_MNIST!r} does")
    found = find_dataset(name, data_home=data_home)
    files = complete_files(found[0]) if found is not None else None
    if files is None:
        raise DatasetError(not_found_message(data_home))
    for filename, path in files.items():
        _check_content(path, catalog.FASHION_MNIST_FILES[filename], str(path))
    return found


def _mirror_url() -> str:
    return os.environ.get(MIRROR_ENV_VAR) or FASHION_MNIST_URL


def _download_verified(filename: str, destination: Path,
                       progress: ProgressCallback | None) -> None:
    """Download ``<mirror>/<filename>.gz`` to `destination` and verify its content."""
    url = f"{_mirror_url().rstrip('/')}/{filename}.gz"
    request = urllib.request.Request(url, headers={"User-Agent": f"softmax-fast/{__version__}"})
    report = progress or (lambda done, total, name: None)
    try:
        with (
            urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as response,
            open(destination, "wb") as out,
        ):
            length_header = response.headers.get("Content-Length", "")
            expected_length = int(length_header) if length_header.isdigit() else None
            received = 0
            report(received, expected_length, f"{filename}.gz")
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                received += len(chunk)
                report(received, expected_length, f"{filename}.gz")
    except (OSError, http.client.HTTPException) as exc:
        # OSError covers URLError, HTTPError, timeouts and local write errors.
        raise DatasetError(
            f"Could not download Fashion-MNIST from {url}: {exc}. {HOW_TO_GET_FASHION_MNIST}"
        ) from exc
    # urllib does not complain when the server closes the connection early.
    if expected_length is not None and received != expected_length:
        raise DatasetError(
            f"Download of {url} was cut off after {received} of {expected_length} bytes. "
            f"{HOW_TO_GET_FASHION_MNIST}"
        )
    _check_content(destination, catalog.FASHION_MNIST_FILES[filename], f"Download of {url}")


def _check_content(path: Path, expected: ExpectedFile, what: str) -> None:
    """Raise DatasetError unless the decompressed content of `path` is as `expected`.

    `what` names the data in the message, such as the URL it was downloaded from.
    """
    digest = hashlib.sha256()
    size = 0
    try:
        with (gzip.open if is_gzipped(path) else open)(path, "rb") as stream:
            while chunk := stream.read(CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DatasetError(
            f"{what} is not valid gzip data ({exc}). {HOW_TO_GET_FASHION_MNIST}"
        ) from exc
    if size != expected.size or digest.hexdigest() != expected.sha256:
        raise DatasetError(
            f"{what} does not match the expected content: decompressed, it has {size} bytes "
            f"and SHA-256 {digest.hexdigest()}; expected {expected.size} bytes and SHA-256 "
            f"{expected.sha256}. {HOW_TO_GET_FASHION_MNIST}"
        )
