"""The named datasets: what they are, where they are looked for, and what was found.

Two names are known (:data:`DATASETS`):

``"fashion-mnist"``
    The full Fashion-MNIST (60,000 training and 10,000 test images of 28x28 pixels, 10 classes).
    It is looked for, in this order, in the directory named by ``$SOFTMAX_FAST_DATA``, in the
    user cache directory (see :func:`cache_dir`) and in ``/usr/share/datasets/fashion-mnist``
    (Debian package ``dataset-fashion-mnist``); :mod:`.download` fetches it into the cache.
``"fashion-mnist-sample"``
    A stratified subset (6,000 training, 1,000 test images) shipped inside the package, so that
    examples and tests never need the network.

This module imports neither NumPy nor the network code, so the CLI can list the names and
locations quickly. Loading is :mod:`.load`, downloading and checksums :mod:`.download`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "DATASETS",
    "DATA_DIR_ENV_VAR",
    "DEBIAN_DATA_DIR",
    "DatasetError",
    "DatasetInfo",
    "ExpectedFile",
    "FASHION_MNIST",
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_SAMPLE",
    "cache_dir",
    "dataset_info",
    "find_dataset",
    "list_datasets",
    "search_paths",
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

DATA_DIR_ENV_VAR = "SOFTMAX_FAST_DATA"
#: Where the Debian package ``dataset-fashion-mnist`` installs the four files.
DEBIAN_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")

SAMPLE_PACKAGE = "softmax_fast.data"
SAMPLE_FILENAME = "fashion-mnist-sample.npz"


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


TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"

#: The four Fashion-MNIST files. The checksums are of the decompressed files because the
#: Debian package recompresses them, so compressed bytes differ between sources.
FASHION_MNIST_FILES: dict[str, ExpectedFile] = {
    TRAIN_IMAGES: ExpectedFile(
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 47_040_016
    ),
    TRAIN_LABELS: ExpectedFile(
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 60_008
    ),
    TEST_IMAGES: ExpectedFile(
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 7_840_016
    ),
    TEST_LABELS: ExpectedFile(
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 10_008
    ),
}

HOW_TO_GET_FASHION_MNIST = (
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
    paths.append((cache_location(data_home), "cache"))
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
    check_name(name)
    if name == FASHION_MNIST_SAMPLE:
        sample = bundled_sample_path()
        return (sample, "bundled") if sample.is_file() else None
    for directory, source in search_paths(data_home=data_home):
        if complete_files(directory) is not None:
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
        files = list((complete_files(location) or {}).values())
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


def check_name(name: str) -> None:
    """Raise ValueError unless `name` is a known dataset."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")


def cache_location(data_home: str | os.PathLike[str] | None) -> Path:
    """Where the full Fashion-MNIST goes in the cache (`data_home` replaces the cache)."""
    root = Path(data_home).expanduser() if data_home is not None else cache_dir()
    return root / FASHION_MNIST


def bundled_sample_path() -> Path:
    """The ``.npz`` file of the bundled sample."""
    import importlib.resources  # here: the CLI imports this module and rarely needs it

    # The package is installed unzipped (zip_safe=False), so the resource is a real file.
    return Path(str(importlib.resources.files(SAMPLE_PACKAGE).joinpath(SAMPLE_FILENAME)))


def present_files(directory: Path) -> dict[str, Path]:
    """Map each Fashion-MNIST file found in `directory`, plain or gzipped, to its path."""
    present = {}
    for filename in FASHION_MNIST_FILES:
        # Plain files first: they load faster than their gzipped twins.
        for candidate in (directory / filename, directory / f"{filename}.gz"):
            if candidate.is_file():
                present[filename] = candidate
                break
    return present


def complete_files(directory: Path) -> dict[str, Path] | None:
    """Map every Fashion-MNIST file to its path in `directory`, or None if any is missing."""
    present = present_files(directory)
    return present if len(present) == len(FASHION_MNIST_FILES) else None


def not_found_message(data_home: str | os.PathLike[str] | None) -> str:
    """The error of a Fashion-MNIST found nowhere: where it was looked for, how to get it."""
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
        + f"\n{HOW_TO_GET_FASHION_MNIST} Or call with download=True to download it."
    )
