"""IDX files: the format Fashion-MNIST (and MNIST) is distributed in, plain or gzipped.

:func:`read_idx` validates the header before it reads the payload, so a corrupt or hostile
file cannot make it allocate more memory than the file holds, nor more than the size limit
of :mod:`.limits` (4 GiB by default; ``$SOFTMAX_FAST_MAX_BYTES`` or ``max_bytes`` raise it).
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from typing import BinaryIO

import numpy as np

from .limits import DEFAULT_MAX_BYTES, check_size

__all__ = ["MAX_IDX_BYTES", "read_idx", "is_gzipped"]

#: Largest IDX payload :func:`read_idx` accepts by default (4 GiB, the limit of :mod:`.limits`):
#: far above Fashion-MNIST (47 MB), and low enough that a corrupt header cannot ask for an
#: absurd allocation. ``$SOFTMAX_FAST_MAX_BYTES`` or the ``max_bytes`` argument change it.
MAX_IDX_BYTES = DEFAULT_MAX_BYTES

#: Bytes read at a time, from files and from the network.
CHUNK_BYTES = 1 << 20
#: The first two bytes of every gzip file.
GZIP_MAGIC = b"\x1f\x8b"

_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(
    source: str | os.PathLike[str] | BinaryIO, *, max_bytes: int | None = None
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
        Largest payload, in bytes, the header may claim. Defaults to ``$SOFTMAX_FAST_MAX_BYTES``
        if set, else :data:`MAX_IDX_BYTES` (see :mod:`softmax_fast.datasets.limits`).

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
        gzip data. The message names the file; the one of a payload above the limit
        (:class:`~.limits.SizeLimitError`) also says how to raise the limit.
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as stream:
            return _read_idx_stream(stream, os.fspath(source), max_bytes)
    return _read_idx_stream(source, getattr(source, "name", "<IDX stream>"), max_bytes)


def _read_idx_stream(stream: BinaryIO, label: str, max_bytes: int | None) -> np.ndarray:
    if _peek(stream, len(GZIP_MAGIC)) != GZIP_MAGIC:
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


def _parse_idx(
    stream: BinaryIO, label: str, max_bytes: int | None, available: int | None
) -> np.ndarray:
    dtype, shape = _parse_header(stream, label)
    payload_bytes = math.prod(shape) * dtype.itemsize

    # Before a byte of the payload is read: a lying header costs nothing.
    check_size(payload_bytes, f"{label}: IDX header claims shape {shape}", max_bytes)
    if available is not None:
        held = available - 4 - 4 * len(shape)
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


def _parse_header(stream: BinaryIO, label: str) -> tuple[np.dtype, tuple[int, ...]]:
    """The element type and shape of the header: magic number, then one uint32 per dimension."""
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
    return dtype, struct.unpack(f">{ndim}I", dims)


def _read_up_to(stream: BinaryIO, size: int) -> bytearray:
    """Read `size` bytes, fewer only if the stream ends first.

    The buffer grows with the data actually read, so a header lying about the size costs no
    more memory than the file really holds.
    """
    buffer = bytearray()
    while len(buffer) < size:
        chunk = stream.read(min(CHUNK_BYTES, size - len(buffer)))
        if not chunk:
            break
        buffer += chunk
    return buffer


def is_gzipped(path: str | os.PathLike[str]) -> bool:
    """Whether the file at `path` starts with the gzip magic bytes (its name does not matter)."""
    with open(path, "rb") as raw:
        return raw.read(len(GZIP_MAGIC)) == GZIP_MAGIC
