"""Loading the named datasets into arrays (see :mod:`.catalog` for the names).

Images are returned as raw ``uint8`` pixel values in ``[0, 255]``, one flattened image per row;
the training code scales them to ``[0, 1]`` itself (see
:func:`softmax_fast._training.sampling.default_input_scale`).
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

import numpy as np

from .catalog import (
    FASHION_MNIST_SAMPLE,
    SAMPLE_FILENAME,
    SAMPLE_PACKAGE,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    DatasetError,
    check_name,
    complete_files,
    find_dataset,
    not_found_message,
)
from .download import ProgressCallback, download_dataset
from .idx import read_idx

__all__ = ["load_dataset"]


def load_dataset(
    name: str,
    *,
    data_home: str | os.PathLike[str] | None = None,
    download: bool = True,
    progress: ProgressCallback | None = None,
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
    progress : callable, optional
        Told how a download advances, see :func:`~.download.download_dataset`.

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
    check_name(name)
    if name == FASHION_MNIST_SAMPLE:
        return _load_bundled_sample()
    found = find_dataset(name, data_home=data_home)
    if found is not None:
        directory = found[0]
    elif download:
        directory = download_dataset(name, data_home=data_home, progress=progress)
    else:
        raise DatasetError(not_found_message(data_home))
    files = complete_files(directory)
    if files is None:
        raise DatasetError(f"Fashion-MNIST files disappeared from {directory} while loading")
    X_train, y_train = _load_images_and_labels(files[TRAIN_IMAGES], files[TRAIN_LABELS])
    X_test, y_test = _load_images_and_labels(files[TEST_IMAGES], files[TEST_LABELS])
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
    resource = importlib.resources.files(SAMPLE_PACKAGE).joinpath(SAMPLE_FILENAME)
    with resource.open("rb") as stream, np.load(stream, allow_pickle=False) as archive:
        return (
            np.ascontiguousarray(archive["X_train"], dtype=np.uint8),
            archive["y_train"].astype(np.int64),
            np.ascontiguousarray(archive["X_test"], dtype=np.uint8),
            archive["y_test"].astype(np.int64),
        )
