"""Datasets: Fashion-MNIST (found on disk or downloaded), a bundled sample, and user data files.

One module per job:

* :mod:`.catalog` — the named datasets (``"fashion-mnist"``, ``"fashion-mnist-sample"``), where
  they are looked for and what was found: :func:`list_datasets`, :func:`dataset_info`,
  :func:`find_dataset`, :func:`search_paths`, :func:`cache_dir`. No NumPy: the CLI reads the
  names from here at start-up.
* :mod:`.load` — :func:`load_dataset`, a named dataset as arrays.
* :mod:`.download` — :func:`download_dataset` (with a ``progress`` callback) and
  :func:`verify_dataset`, against the checksums in :data:`FASHION_MNIST_FILES`.
* :mod:`.idx` — :func:`read_idx`, the IDX format Fashion-MNIST is distributed in.
* :mod:`.files` — :func:`load_file` and :func:`load_features`, a user's own ``.npz``,
  ``.npy``, ``.csv`` or svmlight files: one reader per format for every command.
* :mod:`.npyfile` — ``.npy`` / ``.npz`` files read with their headers checked first.
* :mod:`.limits` — the size limit on one array read from a file (:class:`SizeLimitError`,
  ``$SOFTMAX_FAST_MAX_BYTES``).

The names below are re-exported from those modules; the ones that need NumPy are imported on
first use. Settings are read where they are defined: to point the search elsewhere in a test,
patch ``softmax_fast.datasets.catalog.DEBIAN_DATA_DIR`` (or ``FASHION_MNIST_FILES``,
``search_paths``), and ``softmax_fast.datasets.download.DOWNLOAD_TIMEOUT``.
"""

import importlib

from .catalog import (
    DATA_DIR_ENV_VAR,
    DATASETS,
    DEBIAN_DATA_DIR,
    FASHION_MNIST_FILES,
    DatasetError,
    DatasetInfo,
    ExpectedFile,
    cache_dir,
    dataset_info,
    find_dataset,
    list_datasets,
    search_paths,
)

#: Names imported from their module on first use (they need NumPy or the network code).
_LAZY = {
    "load_dataset": "load",
    "download_dataset": "download",
    "verify_dataset": "download",
    "DOWNLOAD_TIMEOUT": "download",
    "FASHION_MNIST_URL": "download",
    "MIRROR_ENV_VAR": "download",
    "read_idx": "idx",
    "MAX_IDX_BYTES": "idx",
    "load_file": "files",
    "load_features": "files",
    "FEATURE_SUFFIXES": "files",
    "LOAD_FILE_SUFFIXES": "files",
    "SizeLimitError": "limits",
    "MAX_BYTES_ENV_VAR": "limits",
    "DEFAULT_MAX_BYTES": "limits",
}

__all__ = [
    "DATASETS",
    "DATA_DIR_ENV_VAR",
    "DEBIAN_DATA_DIR",
    "DEFAULT_MAX_BYTES",
    "DOWNLOAD_TIMEOUT",
    "DatasetError",
    "DatasetInfo",
    "ExpectedFile",
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_URL",
    "FEATURE_SUFFIXES",
    "LOAD_FILE_SUFFIXES",
    "MAX_BYTES_ENV_VAR",
    "MAX_IDX_BYTES",
    "MIRROR_ENV_VAR",
    "SizeLimitError",
    "cache_dir",
    "dataset_info",
    "download_dataset",
    "find_dataset",
    "list_datasets",
    "load_dataset",
    "load_features",
    "load_file",
    "read_idx",
    "search_paths",
    "verify_dataset",
]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
