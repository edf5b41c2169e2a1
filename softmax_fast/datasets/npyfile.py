"""NumPy ``.npy`` and ``.npz`` files, read without trusting them.

:func:`numpy.load` trusts a file's header: a ``.npy`` header claiming a shape of 10**11
elements makes it allocate 745 GiB before it notices the data is missing (a MemoryError, or
worse, an out-of-memory kill), and an ``.npz`` member of zeros compresses a thousandfold (a
zip bomb). Here every array's header is read first and its size checked against the size
limit (:mod:`.limits`) and against what the file can hold; only then is the array read.
Nothing is ever unpickled (``allow_pickle=False``), and every failure is a ValueError naming
the file: corrupt archives, truncated files and malformed headers included.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.lib import format as npy_format

from .limits import check_size

__all__ = ["NPY_MAGIC", "check_npz", "load_npy", "load_npz", "npz_names"]

#: The first bytes of every ``.npy`` file.
NPY_MAGIC = b"\x93NUMPY"
#: The first bytes of a zip archive with members (``.npz``), and of an empty one.
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


def load_npy(path: str | os.PathLike[str], *, max_bytes: int | None = None) -> np.ndarray:
    """The array of a ``.npy`` file, its header checked before the data is read.

    Raises
    ------
    ValueError
        If the file is not a ``.npy`` file, holds Python objects, is truncated, or its array
        is larger than the size limit (:class:`~.limits.SizeLimitError`).
    """
    path = Path(path)
    try:
        with open(path, "rb") as stream:
            if stream.read(len(NPY_MAGIC)) != NPY_MAGIC:
                raise ValueError(f"{path}: not a NumPy .npy file (it does not start with the "
                                 ".npy signature)")
            stream.seek(0)
            _checked_header(stream, f"{path}: cannot load array", os.fstat(stream.fileno()).st_size,
                            max_bytes)
            stream.seek(0)
            return _read_array(stream, path, "array")
    except EOFError as exc:
        raise ValueError(f"{path}: truncated .npy file ({exc})") from exc


def npz_names(path: str | os.PathLike[str]) -> list[str]:
    """The array names of an ``.npz`` file (member names without ``.npy``), as numpy lists them.

    Raises
    ------
    ValueError
        If the file is not a zip archive.
    """
    with _open_zip(Path(path)) as archive:
        return [_array_name(info.filename) for info in archive.infolist()]


def load_npz(path: str | os.PathLike[str], names: list[str], *,
             max_bytes: int | None = None) -> list[np.ndarray]:
    """The arrays ``names`` of an ``.npz`` file, each member's sizes checked before it is read.

    A member's declared uncompressed size and its ``.npy`` header's shape are both checked
    against the size limit, and the shape against the declared size, so neither a lying
    header nor a zip bomb is decompressed or allocated.

    Raises
    ------
    ValueError
        If the file is not a valid ``.npz`` archive, a member is missing, corrupt, not an
        ``.npy`` array, holds Python objects, or is larger than the size limit.
    """
    path = Path(path)
    arrays = []
    with _open_zip(path) as archive:
        members = {_array_name(info.filename): info for info in archive.infolist()}
        for name in names:
            info = members.get(name)
            if info is None:
                raise ValueError(f"{path}: no array {name!r}")
            arrays.append(_read_member(archive, info, path, name, max_bytes))
    return arrays


def check_npz(path: str | os.PathLike[str], *, max_bytes: int | None = None) -> None:
    """Check every member of an ``.npz`` file against the size limit without reading its data.

    For files that another reader loads whole (a saved model): a zip bomb or a lying header
    fails here, before that reader decompresses or allocates anything.

    Raises
    ------
    ValueError
        As :func:`load_npz`.
    """
    path = Path(path)
    with _open_zip(path) as archive:
        for info in archive.infolist():
            name = _array_name(info.filename)
            check_size(info.file_size, f"{path}: member {info.filename} declares", max_bytes)
            with _guard(path, name), archive.open(info) as stream:
                _checked_header(stream, f"{path}: cannot load array {name}", info.file_size,
                                max_bytes)


# ----------------------------------------------------------------------------------------
def _array_name(member: str) -> str:
    return member[:-4] if member.endswith(".npy") else member


def _open_zip(path: Path) -> zipfile.ZipFile:
    with open(path, "rb") as stream:
        magic = stream.read(4)
    if magic not in ZIP_MAGICS:
        raise ValueError(f"{path}: not a NumPy .npz file (not a zip archive)")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
        raise ValueError(f"{path}: corrupt .npz archive ({exc})") from exc


class _guard:
    """Turn whatever a corrupt member raises into a ValueError naming the file and array."""

    def __init__(self, path: Path, name: str):
        self.what = f"{path}: array {name}"

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, traceback):
        if exc is None or isinstance(exc, ValueError):
            return False
        if isinstance(exc, (zipfile.BadZipFile, EOFError, OSError, RuntimeError,
                            NotImplementedError)):
            # bad CRC, truncated data, encrypted or unsupported compression
            raise ValueError(f"{self.what}: corrupt .npz member ({exc})") from exc
        return False


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, name: str,
                 max_bytes: int | None) -> np.ndarray:
    # The declared size first: zipfile never inflates more than it, so it bounds the work.
    check_size(info.file_size, f"{path}: array {name} declares", max_bytes)
    with _guard(path, name):
        with archive.open(info) as stream:
            _checked_header(stream, f"{path}: cannot load array {name}", info.file_size,
                            max_bytes)
        with archive.open(info) as stream:
            return _read_array(stream, path, f"array {name}")


def _checked_header(stream: BinaryIO, what: str, available: int,
                    max_bytes: int | None = None) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of the ``.npy`` header at the start of `stream`, checked.

    `available` is the size of the whole ``.npy`` data (header included).
    """
    shape, dtype = _read_header(stream, what)
    if dtype.hasobject:
        raise ValueError(f"{what}: holds Python objects, which would need unpickling; "
                         "softmax-fast never unpickles (allow_pickle=False)")
    nbytes = math.prod(shape) * dtype.itemsize
    check_size(nbytes, f"{what}: .npy header claims shape {shape} of {dtype}", max_bytes)
    held = available - stream.tell()
    if nbytes > held:
        raise ValueError(f"{what}: truncated: the .npy header claims shape {shape} of {dtype}, "
                         f"{nbytes} bytes, but the file holds {held}")
    return shape, dtype


def _read_header(stream: BinaryIO, what: str) -> tuple[tuple[int, ...], np.dtype]:
    try:
        version = npy_format.read_magic(stream)
        readers = {(1, 0): npy_format.read_array_header_1_0,
                   (2, 0): npy_format.read_array_header_2_0}
        reader = readers.get(version)
        if reader is None:  # version 3.0 (UTF-8 field names): the same header, no public reader
            shape, _, dtype = npy_format._read_array_header(stream, version)
        else:
            shape, _, dtype = reader(stream)
    except (zipfile.BadZipFile, OSError):
        raise  # the archive, not the header, is broken: the caller says so
    except Exception as exc:  # noqa: BLE001 - a hostile header raises anything numpy's parser can
        raise ValueError(f"{what}: not a valid .npy header ({type(exc).__name__}: {exc})") \
            from exc
    if any(not isinstance(n, int) or n < 0 for n in shape):
        raise ValueError(f"{what}: invalid shape {shape} in the .npy header")
    return tuple(shape), np.dtype(dtype)


def _read_array(stream: BinaryIO, path: Path, what: str) -> np.ndarray:
    try:
        return npy_format.read_array(stream, allow_pickle=False)
    except EOFError as exc:
        raise ValueError(f"{path}: cannot load {what}: truncated ({exc})") from exc
    except ValueError as exc:
        raise ValueError(f"{path}: cannot load {what}: {exc}") from exc
