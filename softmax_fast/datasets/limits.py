"""The size limit on one array read from a user's file, and its error.

A file's header says how large its array is (IDX dimensions, a ``.npy`` shape, a zip member's
uncompressed size), and a corrupt or hostile header can claim terabytes from a file of a few
bytes; a zip bomb really holds them. Every reader checks the claimed size against one limit
*before* it allocates or decompresses anything, so such a file fails at once with a clear
error instead of a MemoryError, an out-of-memory kill or minutes of decompression.

The limit is :data:`DEFAULT_MAX_BYTES` (4 GiB: Fashion-MNIST's largest array is 47 MB), or the
environment variable ``SOFTMAX_FAST_MAX_BYTES`` (a number of bytes, or with a K, M, G or T
suffix: ``SOFTMAX_FAST_MAX_BYTES=16G``), or the ``max_bytes`` argument of a reader.
"""

from __future__ import annotations

import os
import re

__all__ = ["DEFAULT_MAX_BYTES", "MAX_BYTES_ENV_VAR", "SizeLimitError", "check_size",
           "format_bytes", "max_bytes"]

#: Environment variable that replaces :data:`DEFAULT_MAX_BYTES`.
MAX_BYTES_ENV_VAR = "SOFTMAX_FAST_MAX_BYTES"
#: Largest array (in bytes) a reader accepts by default.
DEFAULT_MAX_BYTES = 4 * 2**30

_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


class SizeLimitError(ValueError):
    """A file claims (or holds) an array larger than the size limit."""


def max_bytes(limit: int | None = None) -> int:
    """The limit in force: `limit` if given, else ``$SOFTMAX_FAST_MAX_BYTES``, else the default.

    Raises
    ------
    ValueError
        If the environment variable is not a size.
    """
    if limit is not None:
        return int(limit)
    text = os.environ.get(MAX_BYTES_ENV_VAR, "").strip()
    if not text:
        return DEFAULT_MAX_BYTES
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"{MAX_BYTES_ENV_VAR}={text!r} is not a size; give bytes or a number "
                         f"with K, M, G or T, e.g. {MAX_BYTES_ENV_VAR}=16G")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def format_bytes(n: int) -> str:
    """``n`` bytes for people: ``"4.0 GiB"``, ``"999 bytes"``."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def check_size(nbytes: int, what: str, limit: int | None = None) -> None:
    """Raise :class:`SizeLimitError` if `nbytes` is more than the limit.

    Parameters
    ----------
    nbytes : int
        Size the file claims or holds.
    what : str
        Names the file and the array, e.g. ``"data.npz: array X of shape (10, 10**9)"``.
    limit : int, optional
        Overrides the limit (see :func:`max_bytes`).
    """
    limit = max_bytes(limit)
    if nbytes <= limit:
        return
    suggestion = -(-nbytes // 2**30) + 1  # whole GiB above the size, so the hint is enough
    raise SizeLimitError(
        f"{what}: {nbytes} bytes ({format_bytes(nbytes)}), more than the limit of {limit} bytes "
        f"({format_bytes(limit)}) on one array read from a file; if the file is genuine, raise "
        f"the limit: {MAX_BYTES_ENV_VAR}={suggestion}G")
