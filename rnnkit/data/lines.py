"""Decoded lines with locations: the common ground of every text reader in :mod:`rnnkit.data.readers`.

A :class:`LineReader` decodes a whole file (UTF-8, with or without a byte-order mark, LF or CRLF) into numbered
lines and records the problems of the malformed ones: with ``on_error="raise"`` the first raises
:class:`~rnnkit.data.errors.DataError` naming the file and the line, with ``"skip"`` they are listed in its
report. :class:`LineStream` does the same one line at a time for files too large to hold. The helpers split
tab-separated and CSV lines the same way for every reader.

Example::

    reader = LineReader("train.tsv", on_error="skip")
    for number, text in reader:
        fields = tab_fields(reader, number, text, ("source", "target"))   # None: skipped, and reported
"""

from __future__ import annotations

import codecs
import csv
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from rnnkit.data.errors import DataError, DataWarning, ReadReport, SkippedLine, check_on_error

__all__ = ["read_bytes", "LineReader", "LineStream", "tab_fields", "CsvRow", "csv_rows", "csv_header",
           "column_index", "field_count_problem"]


def read_bytes(path: str | Path) -> bytes:
    """The bytes of ``path``; a missing file or a directory raises :class:`DataError`."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(path, None, "file not found") from None
    except IsADirectoryError:
        raise DataError(path, None, "is a directory, expected a file") from None


class LineReader:
    """Iterates over the decoded lines of one file as ``(line_number, text)`` and applies ``on_error``.

    The BOM and the line end (``\\n`` or ``\\r\\n``) are removed. A line that is not valid UTF-8 is a
    problem reported with its byte offset in the file. Every reader funnels its complaints through
    :meth:`problem`, which raises in strict mode and records a :class:`SkippedLine` in lenient mode.
    """

    def __init__(self, path: str | Path, on_error: str = "raise") -> None:
        check_on_error(on_error)
        self.path = str(path)
        self.on_error = on_error
        self.report = ReadReport(self.path)
        self.data = read_bytes(path)
        if not self.data:
            raise DataError(self.path, None, "the file is empty (0 bytes)")

    def problem(self, line: int, reason: str) -> None:
        """Raise :class:`DataError` (strict) or remember that ``line`` was skipped (lenient)."""
        if self.on_error == "raise":
            raise DataError(self.path, line, reason)
        self.report.skipped.append(SkippedLine(line, reason))

    def _raw_lines(self) -> Iterator[tuple[int, int, bytes]]:
        """``(line number, byte offset of the line, its bytes without the BOM and the newline)``."""
        data = self.data
        offset = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
        raw_lines = data[offset:].split(b"\n")
        if raw_lines[-1] == b"":  # the file ends with a newline: no line after it
            raw_lines.pop()
        for number, raw in enumerate(raw_lines, start=1):
            yield number, offset, raw
            offset += len(raw) + 1

    def __iter__(self) -> Iterator[tuple[int, str]]:
        for number, start, raw in self._raw_lines():
            self.report.lines = number
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                bad = raw[err.start]
                self.problem(number, f"invalid UTF-8 at byte offset {start + err.start} (byte 0x{bad:02x})")
                continue
            yield number, text

    def finish(self, records: Any, count: int, what: str = "records") -> Any:
        """Check that something was read, fill in the report, warn about skipped lines, return ``records``."""
        self.report.records = count
        self.report.skipped.sort(key=lambda skipped: skipped.line)  # a record is reported after its inner lines
        if count == 0:
            if self.report.skipped:
                first = self.report.skipped[0]
                raise DataError(
                    self.path, None,
                    f"no valid {what}: all {self.report.n_skipped} non-blank lines were malformed "
                    f"(first, line {first.line}: {first.reason})",
                )
            raise DataError(self.path, None, f"no {what} found (the file has only blank lines or comments)")
        if self.report.skipped:
            warnings.warn(str(self.report), DataWarning, stacklevel=3)
        return records



class LineStream(LineReader):
    """A :class:`LineReader` that reads the file one line at a time rather than whole, for files too large to
    hold in memory (a million sentence pairs); the same lines, numbers, errors and report."""

    def __init__(self, path: str | Path, on_error: str = "raise") -> None:
        check_on_error(on_error)
        self.path = str(path)
        self.on_error = on_error
        self.report = ReadReport(self.path)
        try:
            size = Path(path).stat().st_size
        except FileNotFoundError:
            raise DataError(path, None, "file not found") from None
        if Path(path).is_dir():
            raise DataError(path, None, "is a directory, expected a file")
        if size == 0:
            raise DataError(self.path, None, "the file is empty (0 bytes)")

    def _raw_lines(self) -> Iterator[tuple[int, int, bytes]]:
        offset = 0
        with open(self.path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                start = offset
                offset += len(raw)
                if number == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8):]
                    start += len(codecs.BOM_UTF8)
                yield number, start, raw[:-1] if raw.endswith(b"\n") else raw

def tab_fields(reader: LineReader, number: int, text: str, names: tuple[str, ...]) -> list[str] | None:
    """Split a TSV line into exactly ``len(names)`` non-empty fields, or report the problem (-> None)."""
    fields = text.split("\t")
    layout = "<TAB>".join(names)
    if len(fields) != len(names):
        reader.problem(number, f"expected {len(names)} tab-separated fields ({layout}), found {len(fields)}")
        return None
    fields = [f.strip() for f in fields]
    for name, value in zip(names, fields, strict=True):
        if not value:
            reader.problem(number, f"empty {name} field (expected {layout})")
            return None
    return fields


class CsvRow(NamedTuple):
    line: int
    cells: list[str]


# Python's csv module refuses fields over 131,072 characters by default ("field larger than field limit"):
# a long review or document is data, not a malformed file. The whole file is in memory already, so the
# limit protects nothing here; it is process-wide, so it is only ever raised, never lowered.
if csv.field_size_limit() < sys.maxsize:
    csv.field_size_limit(sys.maxsize)


def csv_rows(reader: LineReader) -> Iterator[CsvRow]:
    """Parse CSV records (quoted fields may span lines), each with the line it starts on; skip blank lines.

    A record that spans a line LineReader skipped (invalid UTF-8 inside a quoted field) lost part of a field:
    it is dropped whole and reported, like any malformed record."""
    state = {"start": None, "current": 0, "skipped": 0}

    def feed() -> Iterator[str]:
        for number, text in reader:
            if state["start"] is None:
                state["start"] = number
                state["skipped"] = len(reader.report.skipped)  # skips from here on fall inside this record
            state["current"] = number
            yield text + "\n"  # csv keeps newlines inside quoted fields only if they are present

    rows = csv.reader(feed(), strict=True)
    while True:
        try:
            cells = next(rows)
        except StopIteration:
            return
        except csv.Error as err:
            start = state["start"] if state["start"] is not None else state["current"]
            state["start"] = None
            reader.problem(start, f"malformed CSV: {err}")
            continue
        start = state["start"]
        state["start"] = None
        if len(reader.report.skipped) > state["skipped"]:
            reader.problem(start, "the record starting here spans a line that is not valid UTF-8; dropped whole")
            continue
        if cells:
            yield CsvRow(start, cells)


def field_count_problem(header: list[str], cells: list[str]) -> str:
    return f"expected {len(header)} comma-separated fields (as in the header), found {len(cells)}"


def csv_header(reader: LineReader, rows: Iterator[CsvRow]) -> list[str]:
    try:
        first = next(rows)
    except StopIteration:
        raise DataError(reader.path, None, "no CSV header found (the file has only blank lines)") from None
    return [cell.strip() for cell in first.cells]


def column_index(reader: LineReader, header: list[str], name: str) -> int:
    lowered = [h.lower() for h in header]
    if name in header:
        return header.index(name)
    if name.lower() in lowered:
        return lowered.index(name.lower())
    raise DataError(reader.path, 1, f"missing column {name!r}; the header has: {', '.join(header)}")
