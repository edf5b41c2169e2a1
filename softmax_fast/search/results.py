"""The results file: append-only CSV or JSON Lines that never loses a byte.

* Each row is one ``os.write`` of a whole line followed by ``fsync``: whatever kills the
  process leaves complete lines plus at most one torn last line.
* A file is touched only after it is recognised as *this* search's results file (its columns
  or rows carry the result keys, and every row's ``search_id`` matches); anything else — a
  data file, a config, another search's results — is refused before a byte is written.
* A torn last line is repaired by *appending* (a newline, or the rest of a torn header),
  never by truncating; readers skip lines that are not complete rows.
* An existing file is never replaced unless the caller asks (``overwrite``), and an advisory
  lock (``fcntl.flock``) gives a second search on the same file a clear error instead of
  interleaved rows.
"""

import csv
import fcntl
import io
import json
import os
import re

from .grid import CORE_PARAMS, METRIC_KEYS, SEARCHABLE_PARAMS, coerce

__all__ = ["ResultsWriter", "ResultsFileError", "read_results"]

_FLOAT_KEYS = ("val_loss", "val_accuracy", "train_loss", "seconds")
_SEARCH_ID = re.compile(r"^[0-9a-f]{16}$")


class ResultsFileError(ValueError):
    """The results file cannot be used (not ours, another search's, locked, exists)."""


def _format_of(path):
    ext = os.path.splitext(path)[1].lower()
    if ext == ".csv":
        return "csv"
    if ext in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    raise ValueError(f"results file must end in .csv or .jsonl, got {path!r}")


def read_results(path):
    """The complete, valid rows of a results file (torn or foreign lines skipped)."""
    path = os.fspath(path)
    with open(path, "rb") as fh:
        data = fh.read()
    return _parse(path, _format_of(path), data, header=None)[0]


class ResultsWriter:
    """Append rows to a results file, resuming it or starting it as asked.

    Parameters
    ----------
    path : str or path-like
        ``.csv`` or ``.jsonl`` (``.json``, ``.ndjson``).
    header : list of str
        Columns of a new file (CSV) / keys of every row.
    search_id : str
        Identity of the search (data, split, seed); a resumed file's rows must carry it.
    resume : bool
        Keep and return (``existing``) the rows already in the file.
    overwrite : bool
        Replace an existing file (without ``resume``). Without either, an existing file is
        refused.
    """

    def __init__(self, path, header, *, search_id, resume=False, overwrite=False):
        self.path = os.fspath(path)
        self.format = _format_of(self.path)
        self.header = list(header)
        self.existing = []
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise ResultsFileError(f"{self.path}: the folder {directory} does not exist")
        exists = os.path.exists(self.path)
        if exists and not (resume or overwrite):
            raise ResultsFileError(
                f"{self.path} exists: resume it (resume=True, --resume) or replace it "
                "(overwrite=True, --overwrite)")
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self._lock()
            if exists and resume:
                self._resume(search_id)
            else:
                os.ftruncate(self.fd, 0)  # a new file, or overwrite=True was asked for
                if self.format == "csv":
                    self._write_line(_csv_line(self.header))
        except BaseException:
            self.close()
            raise

    def _lock(self):
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ResultsFileError(
                f"{self.path} is being written by another search (it is locked); wait for it "
                "or use another file") from None

    def _resume(self, search_id):
        """Recognise the file, check its rows' search, repair a torn end by appending."""
        with open(self.path, "rb") as fh:
            data = fh.read()
        if not data:
            if self.format == "csv":
                self._write_line(_csv_line(self.header))
            return
        rows, repair, file_header = _parse(self.path, self.format, data, self.header)
        for row in rows:
            if row["search_id"] != search_id:
                raise ResultsFileError(
                    f"{self.path}: holds results of a different search (data, split or "
                    "random_state differ); use another file, or overwrite it")
        if file_header is not None:
            self.header = file_header
        if repair:
            self._write_line(repair)
        self.existing = rows

    def _write_line(self, line):
        data = line.encode("utf-8")
        while data:
            written = os.write(self.fd, data)
            data = data[written:]
        os.fsync(self.fd)

    def write(self, row):
        if self.format == "jsonl":
            line = json.dumps(row, allow_nan=False) + "\n"
        else:
            line = _csv_line(["" if row.get(k) is None else row.get(k) for k in self.header])
        self._write_line(line)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)  # also releases the lock
            self.fd = None


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------
def _parse(path, fmt, data, header):
    """(valid rows, text to append to repair the end or "", the file's CSV header or None)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ResultsFileError(f"{path}: not a results file (not UTF-8 text)") from None
    lines = text.split("\n")
    torn = lines.pop()  # "" when the file ends with a newline
    if fmt == "csv":
        return _parse_csv(path, lines, torn, header)
    return _parse_jsonl(path, lines, torn)


def _parse_csv(path, lines, torn, header):
    if not lines:  # no complete line: at most a torn header
        expected = _csv_line(header) if header else ""
        if header and expected.startswith(torn):
            return [], expected[len(torn):], list(header)
        raise ResultsFileError(f"{path}: not a results file of softmax-fast")
    file_header = next(csv.reader([lines[0]]))
    required = list(header) if header is not None else list(CORE_PARAMS + METRIC_KEYS)
    missing = [k for k in required if k not in file_header]
    if missing:
        raise ResultsFileError(f"{path}: not a results file of this search: its columns lack "
                               f"{missing}; write to a new file")
    rows = [row for row in (_csv_row(file_header, line) for line in lines[1:] if line)
            if row is not None]
    repair = ""
    if torn:
        row = _csv_row(file_header, torn)
        if row is not None:
            rows.append(row)
        repair = "\n"  # a complete row keeps it; a fragment becomes a skipped line
    return rows, repair, file_header


def _parse_jsonl(path, lines, torn):
    rows = [row for row in (_json_row(line) for line in lines if line.strip())
            if row is not None]
    repair = ""
    if torn:
        row = _json_row(torn)
        if row is not None:
            rows.append(row)
        repair = "\n"
    ours = rows or (not any(line.strip() for line in lines)
                    and torn.startswith('{"' + CORE_PARAMS[0]))
    if not ours:
        raise ResultsFileError(f"{path}: not a results file of softmax-fast (no line is a "
                               "result row); write to a new file")
    return rows, repair, None


def _csv_row(header, line):
    try:
        values = next(csv.reader([line]))
    except (csv.Error, StopIteration):
        return None
    if len(values) != len(header):
        return None
    return _checked_row(dict(zip(header, values, strict=True)), from_text=True)


def _json_row(line):
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    return _checked_row(row, from_text=False) if isinstance(row, dict) else None


def _checked_row(raw, from_text):
    """``raw`` as a typed result row, or None when it is not a complete, valid one."""
    if any(key not in raw for key in CORE_PARAMS + METRIC_KEYS):
        return None
    row = {}
    try:
        for key, value in raw.items():
            if value is None or (from_text and value == ""):
                row[key] = None
            elif key in SEARCHABLE_PARAMS:
                row[key] = coerce(key, value)
            elif key in _FLOAT_KEYS:
                row[key] = float(value)
            elif key == "n_iter":
                row[key] = int(value)
            else:
                row[key] = value
    except (TypeError, ValueError):
        return None
    if row["status"] not in ("ok", "diverged") or not isinstance(row["search_id"], str) \
            or not _SEARCH_ID.match(row["search_id"]) or row["n_iter"] is None:
        return None
    return row


def _csv_line(values):
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()
