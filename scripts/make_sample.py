"""Make the Fashion-MNIST sample bundled with softmax-fast.

Draws a stratified subset of the full Fashion-MNIST (by default 6,000 training and 1,000 test
images, the same number from every class) and writes it to
``softmax_fast/data/fashion-mnist-sample.npz`` with arrays ``X_train``, ``y_train``, ``X_test``,
``y_test`` (all uint8) and ``metadata``, lines of text describing where the data came from.

The full dataset is taken from wherever :func:`softmax_fast.datasets.load_dataset` finds it
(``$SOFTMAX_FAST_DATA``, the user cache, the Debian package ``dataset-fashion-mnist``) and is
downloaded only if it is nowhere on disk. The selection is deterministic for a given seed.

Usage::

    python scripts/make_sample.py [--output PATH] [--n-train 6000] [--n-test 1000] [--seed 0]
"""

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from softmax_fast.datasets import FASHION_MNIST_FILES, load_dataset, verify_dataset

DEFAULT_OUTPUT = (
    Path(__file__).resolve().parent.parent / "softmax_fast" / "data" / "fashion-mnist-sample.npz"
)

# The MIT license asks for its notice in all copies of the data, so the sample carries it.
MIT_NOTICE = (
    "Copyright (c) 2017 Zalando SE. Permission is hereby granted, free of charge, to any person "
    'obtaining a copy of this software and associated documentation files (the "Software"), '
    "to deal in the Software without restriction, including without limitation the rights to "
    "use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies of the "
    "Software, and to permit persons to whom the Software is furnished to do so, subject to the "
    "following conditions: The above copyright notice and this permission notice shall be "
    "included in all copies or substantial portions of the Software. THE SOFTWARE IS PROVIDED "
    '"AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO '
    "THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN "
    "NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER "
    "LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN "
    "CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE."
)


def stratified_subset(X, y, size, seed):
    """Return `size` rows of `X` and `y` with the class proportions of `y`.

    Parameters
    ----------
    X : numpy.ndarray of shape (n_samples, n_features)
        Samples.
    y : numpy.ndarray of shape (n_samples,)
        Class labels.
    size : int
        Number of rows to keep.
    seed : int
        Seed of the random selection.

    Returns
    -------
    X_subset : numpy.ndarray of shape (size, n_features)
    y_subset : numpy.ndarray of shape (size,)
    """
    X_subset, _, y_subset, _ = train_test_split(
        X, y, train_size=size, stratify=y, random_state=seed
    )
    return X_subset, y_subset


def provenance(n_train, n_test, seed, source):
    """Describe how the sample was made, one ``key: value`` line per fact.

    Parameters
    ----------
    n_train, n_test : int
        Sizes of the training and test subsets.
    seed : int
        Seed of the selection.
    source : str
        Where the full dataset was read from.

    Returns
    -------
    numpy.ndarray of str
    """
    checksums = [
        f"source sha256 {name} (verified): {expected.sha256}"
        for name, expected in FASHION_MNIST_FILES.items()
    ]
    return np.array(
        [
            "dataset: Fashion-MNIST sample for softmax-fast",
            "origin: Fashion-MNIST by Zalando Research, "
            "https://github.com/zalandoresearch/fashion-mnist",
            "citation: Han Xiao, Kashif Rasul, Roland Vollgraf. Fashion-MNIST: a Novel Image "
            "Dataset for Benchmarking Machine Learning Algorithms. arXiv:1708.07747, 2017",
            f"license: MIT. {MIT_NOTICE}",
            "selection: stratified by class with sklearn.model_selection.train_test_split, "
            f"random_state={seed}; {n_train} of the 60,000 training images, {n_test} of the "
            "10,000 test images",
            "pixels: raw uint8 in [0, 255], each 28x28 image flattened row by row to 784 values",
            "labels: uint8 in 0..9 (0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat, "
            "5 Sandal, 6 Shirt, 7 Sneaker, 8 Bag, 9 Ankle boot)",
            f"made by: scripts/make_sample.py from {source}",
            *checksums,
        ]
    )


def report_download(done, total, filename):
    """Download progress on stderr (the ``progress`` callback of ``load_dataset``)."""
    if sys.stderr.isatty():
        shown = f"{done / total:4.0%}" if total else f"{done:,} bytes"
        print(f"\rDownloading {filename}: {shown}", end="\n" if done == total else "",
              file=sys.stderr, flush=True)


def main(argv=None):
    """Parse the command line, draw the sample and write it.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments; defaults to ``sys.argv[1:]``.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the .npz to write")
    parser.add_argument("--n-train", type=int, default=6000, help="training images to keep")
    parser.add_argument("--n-test", type=int, default=1000, help="test images to keep")
    parser.add_argument("--seed", type=int, default=0, help="seed of the selection")
    args = parser.parse_args(argv)

    # The metadata records the published checksums, so make sure the source really has them.
    X_train, y_train, X_test, y_test = load_dataset("fashion-mnist", progress=report_download)
    location, source_label = verify_dataset("fashion-mnist")
    X_train, y_train = stratified_subset(X_train, y_train, args.n_train, args.seed)
    X_test, y_test = stratified_subset(X_test, y_test, args.n_test, args.seed)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.output,
        X_train=X_train.astype(np.uint8),
        y_train=y_train.astype(np.uint8),
        X_test=X_test.astype(np.uint8),
        y_test=y_test.astype(np.uint8),
        metadata=provenance(args.n_train, args.n_test, args.seed, f"{location} ({source_label})"),
    )
    print(f"wrote {args.output} ({args.output.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
