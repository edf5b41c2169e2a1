"""A user's own data files: the one reader of each format.

:func:`load_file` reads features and class labels (``train``, ``evaluate``, ``search``);
:func:`load_features` reads the features alone (``predict``, through
:func:`softmax_fast._io.read_inputs`). Both go through the same reader of each format, so a file
means the same to every command:

``.npz``
    Arrays ``X`` (features) and ``y`` (labels). Features alone: ``X``, or the only array.
``.npy``
    The features; the labels are in a ``.labels.npy`` file next to it.
``.csv``
    Comma-separated UTF-8 text (a byte-order mark is skipped), one sample per row, with an
    optional header row. ``#`` is an ordinary character, not a comment. See **CSV label
    column** below.
``.svm``, ``.svmlight``, ``.libsvm``
    svmlight / libsvm text (labels and features only).

**CSV header.** ``header=True`` or ``False`` says whether the first row is a header. The
default (None) decides only when the file leaves no doubt, looking at the first row and the
next :data:`SNIFF_ROWS` rows:

* every field of the first row is a number: no header;
* a field of the first row is text where the rows below it hold numbers: a header;
* every text field of the first row recurs in its column below (a class name such as
  ``cat`` in a label column): no header;
* anything else (``label,1,2`` above ``cat,0.5,0.7``: column names or a class?) is an error
  asking for ``header=True`` or ``header=False`` (``--header`` / ``--no-header``).

**CSV label column.** ``label_column`` (``--label-column``) names it (a header name, any
case) or gives its index (negative counts from the end). Without it the rule is the safe one:

* the column whose header name is one of :data:`LABEL_NAMES` (``label``, ``target``,
  ``class``, ``y``, ``species``; any case), if exactly one is;
* else the first column, but only if it looks like class labels (integers or text) while
  every other column holds numbers (in the first :data:`SNIFF_ROWS` rows);
* anything else is an error asking for ``label_column``: a ``species`` column last, say,
  must never become a feature while a pixel column becomes the label.

:func:`load_features` leaves out the column ``label_column`` names, else the one column named
one of :data:`LABEL_NAMES`; without either every column is a feature.

**Class labels.** Integers (any integer dtype, integer-valued floats, or text such as ``"3"``)
become int64; labels that do not fit int64 are refused, not wrapped. Text labels are class
names (surrounding spaces stripped) unless every one of them is a number. NaN, infinite,
empty and non-integer numeric labels (``0.5``) are refused: a non-integer number is far more
often a feature column taken for the label column than a class name.

**Safety.** NumPy files are read with ``allow_pickle=False`` (files holding pickled object
arrays are refused, since unpickling can run arbitrary code), and their headers are checked
before anything is allocated (:mod:`.npyfile`). No array larger than the size limit of
:mod:`.limits` is read (4 GiB, ``$SOFTMAX_FAST_MAX_BYTES``); for a text file the limit applies
to the file's size. Every error is a ValueError naming the file.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .limits import check_size
from .npyfile import load_npy, load_npz, npz_names

if TYPE_CHECKING:
    import scipy.sparse

__all__ = ["FEATURE_SUFFIXES", "LABEL_NAMES", "LOAD_FILE_SUFFIXES", "SNIFF_ROWS",
           "csv_columns", "csv_label_column", "load_features", "load_file"]

SVMLIGHT_SUFFIXES = (".svm", ".svmlight", ".libsvm")
#: Extensions :func:`load_file` reads.
LOAD_FILE_SUFFIXES = (".npz", ".npy", ".csv", *SVMLIGHT_SUFFIXES)
#: Extensions :func:`load_features` reads.
FEATURE_SUFFIXES = (".npy", ".npz", ".csv")

#: CSV header names (compared without case) that mark the label column.
LABEL_NAMES = ("label", "target", "class", "y", "species")
#: Rows after the first that the CSV header detection looks at.
SNIFF_ROWS = 200
#: A BOM-tolerant UTF-8: Excel and Notepad start CSV files with a byte-order mark.
CSV_ENCODING = "utf-8-sig"

_INT64 = np.iinfo(np.int64)


def load_file(
    path: str | os.PathLike[str],
    *,
    labels_path: str | os.PathLike[str] | None = None,
    label_column: str | int | None = None,
    header: bool | None = None,
    max_bytes: int | None = None,
) -> tuple[np.ndarray | scipy.sparse.csr_matrix, np.ndarray]:
    """Load a user's data file as features and class labels.

    The format is chosen by the file extension:

    ``.npz``
        Arrays ``X`` (2-D) and ``y`` (1-D).
    ``.npy``
        `path` holds ``X``; the labels are read from `labels_path`, by default the file next to
        it with ``.labels.npy`` in place of ``.npy`` (``foo.npy`` and ``foo.labels.npy``).
    ``.csv``
        Comma-separated, one sample per row, with an optional header row (see `header`). The
        label column is `label_column`; by default the one column named one of
        :data:`LABEL_NAMES`, else the first column if it looks like labels while the others
        hold numbers, else an error (see the module docstring). All other columns are
        features.
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
        For ``.csv``: the header name (exact, else without case) or the index (negative counts
        from the end) of the label column. Not allowed with other formats.
    header : bool or None, optional
        For ``.csv``: whether the first row is a header. None (default) detects it when the
        file leaves no doubt and raises ValueError otherwise (see the module docstring). Not
        allowed with other formats.
    max_bytes : int, optional
        Size limit of one array (a text file: of the file), see
        :mod:`softmax_fast.datasets.limits`.

    Returns
    -------
    X : numpy.ndarray of shape (n_samples, n_features), or scipy.sparse.csr_matrix
        Features. ``.npz`` and ``.npy`` keep their stored numeric dtype; ``.csv`` gives float64;
        svmlight gives a float64 CSR matrix.
    y : numpy.ndarray of shape (n_samples,)
        Class labels: int64 when every label is an integer (also integer-valued floats or
        strings such as ``"3"``), otherwise the strings as read (spaces stripped).

    Raises
    ------
    ValueError
        For an unknown extension, missing arrays or columns, pickled content, non-numeric
        features, labels that are not class labels (NaN, empty, non-integer numbers, integers
        beyond int64), an undecidable CSV header or label column, an array above the size
        limit, a corrupt file, or features and labels of different lengths.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in LOAD_FILE_SUFFIXES:
        raise ValueError(
            f"{path}: unknown data file extension {suffix!r}; supported: "
            f"{', '.join(LOAD_FILE_SUFFIXES)}"
        )
    if labels_path is not None and suffix != ".npy":
        raise ValueError(f"{path}: labels_path is only used with .npy files")
    if label_column is not None and suffix != ".csv":
        raise ValueError(f"{path}: label_column is only used with .csv files")
    _check_header_arg(header, path, suffix)

    X, y = _read_labelled(path, labels_path, label_column, header, max_bytes)
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
    if X.shape[0] == 0:
        raise ValueError(f"{path}: no samples")
    return X, _as_class_labels(y, path)


def load_features(
    path: str | os.PathLike[str], *, header: bool | None = None,
    label_column: str | int | None = None, max_bytes: int | None = None
) -> np.ndarray:
    """Load the features of a ``.npy``, ``.npz`` or ``.csv`` file, without labels.

    The array as stored (``.npy``, ``.npz``: any shape and dtype; the caller checks them) or
    a float64 matrix (``.csv``: `label_column` left out, by default the one column named
    one of :data:`LABEL_NAMES` if there is one; `header` as for :func:`load_file`). See the
    module docstring.

    Raises
    ------
    ValueError
        For another extension, a ``.npz`` without an array ``X`` (and more than one array),
        pickled content, an array above the size limit, a corrupt file, an undecidable CSV
        header or an unparsable CSV file. The message names the file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FEATURE_SUFFIXES:
        raise ValueError(f"{path}: unknown features file extension {suffix!r}; supported: "
                         f"{', '.join(FEATURE_SUFFIXES)}")
    _check_header_arg(header, path, suffix)
    if label_column is not None and suffix != ".csv":
        raise ValueError(f"{path}: label_column is only used with .csv files")
    if suffix == ".npy":
        return load_npy(path, max_bytes=max_bytes)
    if suffix == ".npz":
        return _load_npz(path, labels=False, max_bytes=max_bytes)[0]
    return _load_csv(path, label_column, header, labels=False, max_bytes=max_bytes)[0]


def csv_columns(
    path: str | os.PathLike[str], *, header: bool | None = None
) -> tuple[list[str] | None, int]:
    """The header names (None without a header) and the number of columns of a CSV file.

    Reads the first :data:`SNIFF_ROWS` rows only; `header` as for :func:`load_file`.
    """
    path = Path(path)
    first, rows, _ = _sniff_csv(path)
    has_header = _first_row_is_header(first, rows, header, path)
    return ([cell.strip() for cell in first] if has_header else None), len(first)


def csv_label_column(
    path: str | os.PathLike[str], *, header: bool | None = None,
    label_column: str | int | None = None
) -> str | int:
    """The label column :func:`load_file` takes in a CSV file: its header name, or its index
    when the file has no header (what to record to read files of the same layout again).

    Raises
    ------
    ValueError
        As :func:`load_file` does when the header or the label column cannot be told.
    """
    path = Path(path)
    first, rows, _ = _sniff_csv(path)
    has_header = _first_row_is_header(first, rows, header, path)
    names = [cell.strip() for cell in first] if has_header else None
    index = _label_column_index(label_column, names, len(first),
                                rows if has_header else [first, *rows], path)
    return names[index] if names is not None else index


def _check_header_arg(header: object, path: Path, suffix: str) -> None:
    if header is not None and suffix != ".csv":
        raise ValueError(f"{path}: header is only used with .csv files")
    if header not in (None, True, False):
        raise ValueError(f"header must be True, False or None, got {header!r}")


def _load_npz(
    path: Path, *, labels: bool = True, max_bytes: int | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Arrays ``X`` and ``y`` (``labels=False``: ``X`` or the only array, and None)."""
    names = _npz_names(path, npz_names(path), labels)
    arrays = load_npz(path, names, max_bytes=max_bytes)
    return arrays[0], (arrays[1] if labels else None)


def _npz_names(path: Path, files: list[str], labels: bool) -> list[str]:
    if not labels:
        if "X" in files or len(files) == 1:
            return ["X" if "X" in files else files[0]]
        raise ValueError(f"{path}: holds arrays {', '.join(files) or 'none'}; expected one "
                         "named X")
    missing = [key for key in ("X", "y") if key not in files]
    if missing:
        raise ValueError(
            f"{path}: missing array(s) {', '.join(missing)}; the file holds "
            f"{', '.join(files) or 'no arrays'} (expected X and y)"
        )
    return ["X", "y"]


def _read_labelled(
    path: Path, labels_path: str | os.PathLike[str] | None, label_column: str | int | None,
    header: bool | None, max_bytes: int | None,
) -> tuple[np.ndarray | scipy.sparse.csr_matrix, np.ndarray]:
    """Features and labels as the reader of `path`'s format returns them, unchecked."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _load_npz(path, max_bytes=max_bytes)
    if suffix == ".npy":
        labels = Path(labels_path) if labels_path is not None else _default_labels_path(path)
        return load_npy(path, max_bytes=max_bytes), load_npy(labels, max_bytes=max_bytes)
    if suffix == ".csv":
        return _load_csv(path, label_column, header, max_bytes=max_bytes)
    return _load_svmlight(path, max_bytes)


def _load_svmlight(path: Path, max_bytes: int | None):
    check_size(os.path.getsize(path), f"{path}: svmlight file", max_bytes)
    # Imported here: scikit-learn takes about a second to import and only this needs it.
    from sklearn.datasets import load_svmlight_file

    try:
        X, y = load_svmlight_file(os.fspath(path))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not an svmlight text file ({exc.reason})") from exc
    # A feature index is a column of every class's weights: a typo such as 1e12 must not
    # become a terabyte model.
    check_size(X.shape[1] * 8, f"{path}: feature index {X.shape[1]} means a weight row of",
               max_bytes)
    return X, y


def _default_labels_path(path: Path) -> Path:
    labels = path.with_name(f"{path.stem}.labels.npy")
    if not labels.is_file():
        raise ValueError(
            f"{path}: no labels: expected them in {labels} (or pass labels_path explicitly)"
        )
    return labels


# ----------------------------------------------------------------------------------------
# CSV
# ----------------------------------------------------------------------------------------
def _load_csv(
    path: Path, label_column: str | int | None, header: bool | None, *, labels: bool = True,
    max_bytes: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Features and labels of a CSV file (``labels=False``: features, and None)."""
    check_size(os.path.getsize(path), f"{path}: CSV file", max_bytes)
    first, rows, header_lines = _sniff_csv(path)
    has_header = _first_row_is_header(first, rows, header, path)
    names = [cell.strip() for cell in first] if has_header else None
    n_columns = len(first)
    if has_header and not rows:
        raise ValueError(f"{path}: no samples: the file holds only a header row")
    if labels:
        if n_columns < 2:
            raise ValueError(
                f"{path}: a CSV file needs a label column and at least one feature column"
            )
        label_index = _label_column_index(label_column, names, n_columns,
                                          rows if has_header else [first, *rows], path)
    elif label_column is not None:
        label_index = _label_column_index(label_column, names, n_columns, (), path)
    else:
        named = _named_label_columns(names)
        label_index = named[0] if len(named) == 1 else None
    feature_columns = [index for index in range(n_columns) if index != label_index]
    skiprows = header_lines if has_header else 0
    X = _read_columns(path, feature_columns, np.float64, skiprows)
    y = _read_columns(path, [label_index], str, skiprows).reshape(-1) if labels else None
    return X, y


def _sniff_csv(path: Path) -> tuple[list[str], list[list[str]], int]:
    """The first row, up to :data:`SNIFF_ROWS` rows after it, and the lines the first takes."""
    try:
        with open(path, newline="", encoding=CSV_ENCODING) as stream:
            reader = csv.reader(stream)
            first = next((row for row in reader if row), None)
            lines = reader.line_num
            rows = []
            for row in reader:
                if row:
                    rows.append(row)
                    if len(rows) == SNIFF_ROWS:
                        break
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, exc) from exc
    except csv.Error as exc:
        raise ValueError(f"{path}: cannot parse CSV: {exc}") from exc
    if not first:
        raise ValueError(f"{path}: empty CSV file")
    return first, rows, lines


def _not_utf8(path: Path, exc: UnicodeDecodeError) -> ValueError:
    byte = exc.object[exc.start:exc.start + 1].hex()
    return ValueError(f"{path}: not UTF-8 text (cannot decode byte 0x{byte}: {exc.reason}); "
                      "save the file as UTF-8")


def _first_row_is_header(
    first: list[str], rows: list[list[str]], header: bool | None, path: Path
) -> bool:
    """Whether the first row is a header: `header` if given, else only when unambiguous."""
    if header is not None:
        return bool(header)
    text = [index for index, cell in enumerate(first) if not _is_number(cell)]
    if not text:
        return False
    if not rows:
        return True  # a single row of text: a header without samples, refused by the caller
    below = {index: [row[index] for row in rows if index < len(row)] for index in text}
    if any(column and all(_is_number(cell) for cell in column) for column in below.values()):
        return True  # text above numbers: a column name
    if all(first[index].strip() in {cell.strip() for cell in below[index]} for index in text):
        return False  # each text field is also a value further down, such as a class name
    shown = ", ".join(repr(first[index]) for index in text[:3])
    raise ValueError(
        f"{path}: cannot tell whether the first row is a header: its text ({shown}) sits in "
        "columns of text and is not repeated below it; say which: --header or --no-header "
        "(header=True or header=False)"
    )


def _read_columns(path: Path, columns: list[int], dtype: type, skiprows: int) -> np.ndarray:
    # comments=None: '#' is data in CSV (a class "#1" must not be cut to ""), as the csv module
    # that found the header sees it.
    try:
        return np.loadtxt(path, delimiter=",", quotechar='"', comments=None, usecols=columns,
                          dtype=dtype, ndmin=2, skiprows=skiprows, encoding=CSV_ENCODING)
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, exc) from exc
    except ValueError as exc:
        raise ValueError(f"{path}: cannot parse CSV: {exc}") from exc


def _named_column(name: str, header: list[str] | None, path: Path) -> int:
    """Index of the column called `name`: the exact name, else the one equal without case."""
    if header is not None and name in header:
        return header.index(name)
    folded = [i for i, cell in enumerate(header or ()) if cell.casefold() == name.casefold()]
    if len(folded) == 1:
        return folded[0]
    columns = ", ".join(header) if header is not None else "none: the file has no header"
    raise ValueError(f"{path}: no column named {name!r}; columns: {columns}")


def _named_label_columns(header: list[str] | None) -> list[int]:
    """Indices of the columns whose name is one of :data:`LABEL_NAMES` (any case)."""
    return [i for i, cell in enumerate(header or ()) if cell.casefold() in LABEL_NAMES]


def _default_label_column(header: list[str] | None, rows: list[list[str]], path: Path) -> int:
    """The label column when none is given: see **CSV label column** in the module docstring.

    The first column is only taken when the data leave no doubt, since a wrong guess does not
    fail: it trains on a feature as the label and on the label as a feature.
    """
    named = _named_label_columns(header)
    if len(named) == 1:
        return named[0]
    if named:
        shown = ", ".join(repr(header[i]) for i in named)
        raise ValueError(f"{path}: several columns may hold the class labels ({shown}); say "
                         "which with --label-column NAME (label_column=...)")
    problem = _first_column_problem(rows)
    if problem is None:
        return 0
    lead = (f"no column is named {'/'.join(LABEL_NAMES)} and" if header is not None
            else "the file has no header and")
    raise ValueError(f"{path}: cannot tell which column holds the class labels: {lead} "
                     f"{problem}; say which with --label-column NAME|INDEX (label_column=...)")


def _first_column_problem(rows: list[list[str]]) -> str | None:
    """Why the first column of `rows` is not clearly the labels (None: it is).

    Labels are integers or text; the features, every other column, are numbers.
    """
    problems = []
    text = next(((column, sample, cell) for sample, row in enumerate(rows)
                 for column, cell in enumerate(row[1:], 1) if not _is_number(cell)), None)
    if text is not None:
        column, sample, cell = text
        problems.append(f"column {column} holds text ({cell.strip()!r}, sample {sample})")
    for sample, row in enumerate(rows):
        cell = row[0].strip() if row else ""
        value = float(cell) if _is_number(cell) else 0.0
        if not math.isfinite(value):
            problems.append(f"its first column holds NaN or infinite values (sample {sample})")
            break
        if value != round(value):
            problems.append(f"its first column holds non-integer values such as {cell} "
                            f"(sample {sample})")
            break
    return " and ".join(problems) or None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _label_column_index(
    label_column: str | int | None, header: list[str] | None, n_columns: int,
    rows: list[list[str]], path: Path
) -> int:
    """Index of the label column: `label_column`, else the default rule on `rows` (samples)."""
    if label_column is None:
        return _default_label_column(header, rows, path)
    if isinstance(label_column, str):
        return _named_column(label_column, header, path)
    if not -n_columns <= label_column < n_columns:
        raise ValueError(
            f"{path}: label column {label_column} out of range for {n_columns} columns"
        )
    return label_column % n_columns


# ----------------------------------------------------------------------------------------
# Class labels
# ----------------------------------------------------------------------------------------
def _as_class_labels(y: np.ndarray, path: Path) -> np.ndarray:
    """``y`` as int64 class labels or class names; anything that is not a class is refused."""
    kind = y.dtype.kind
    if kind == "b":
        return y.astype(np.int64)
    if kind in "iu":
        if y.size and kind == "u" and y.max() > _INT64.max:
            index = int(np.argmax(y > _INT64.max))
            raise _too_large(path, y[index], index)
        return y.astype(np.int64)
    if kind == "f":
        return _numeric_labels(y, path)
    if kind in "US":
        return _text_labels(y, path)
    raise ValueError(f"{path}: labels must be integers or strings, got dtype {y.dtype}")


def _numeric_labels(y: np.ndarray, path: Path) -> np.ndarray:
    """``y`` (floats) as int64; NaN, infinite, non-integer and too large values refused."""
    bad = ~np.isfinite(y)
    if bad.any():
        index = int(np.argmax(bad))
        raise ValueError(f"{path}: {int(bad.sum())} label(s) are NaN or infinite (the first: "
                         f"sample {index}); give every sample its class or remove it")
    fractional = y != np.round(y)
    if fractional.any():
        index = int(np.argmax(fractional))
        raise ValueError(f"{path}: labels must be class labels (integers or names), got "
                         f"non-integer values such as {y[index]:g} (sample {index}); is the "
                         "label column the right one?")
    outside = (y >= 2.0**63) | (y < -(2.0**63))
    if outside.any():
        index = int(np.argmax(outside))
        raise _too_large(path, f"{y[index]:g}", index)
    return y.astype(np.int64)


def _text_labels(y: np.ndarray, path: Path) -> np.ndarray:
    values, inverse = np.unique(np.char.strip(y.astype(str)), return_inverse=True)
    inverse = inverse.reshape(-1)
    if values.size and values[0] == "":  # sorted: an empty label comes first
        raise ValueError(f"{path}: sample {int(np.argmax(inverse == 0))} has an empty label; "
                         "give every sample its class or remove it")
    numbers = _parse_all(values)
    if numbers is None:
        return values[inverse]  # class names
    is_float = np.array([isinstance(n, float) for n in numbers])
    if is_float.any():
        # "3.0" is class 3; "0.5" and "nan" are refused as numeric labels are
        _numeric_labels(np.where(is_float, [float(n) for n in numbers], 0.0)[inverse], path)
    integers = [int(n) for n in numbers]  # exact: int("9223372036854775807") loses nothing
    for index, number in enumerate(integers):
        if not _INT64.min <= number <= _INT64.max:
            raise _too_large(path, values[index], int(np.argmax(inverse == index)))
    return np.array(integers, dtype=np.int64)[inverse]


def _parse_all(values: np.ndarray) -> list | None:
    """Each text as an int (exactly) or else a float; None if one of them is no number."""
    numbers = []
    for text in values.tolist():
        try:
            numbers.append(int(text))
        except ValueError:
            try:
                numbers.append(float(text))
            except ValueError:
                return None
    return numbers


def _too_large(path: Path, value: object, index: int) -> ValueError:
    return ValueError(f"{path}: label {value} (sample {index}) does not fit a 64-bit integer "
                      f"({_INT64.min} to {_INT64.max}); class labels must be integers in that "
                      "range or names")
