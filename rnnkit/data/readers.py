"""Readers for the file formats of each task (DESIGN.md section 4).

==========  ======================================================  ==================================
task        file format                                             reader -> records
==========  ======================================================  ==================================
lm          plain UTF-8 text                                        :func:`read_text` -> :class:`Text`
classify    TSV ``label<TAB>text``, or CSV with ``text`` and        :func:`read_classification`
            ``label`` columns                                       -> ``Records[LabeledText]``
tag         CoNLL-U (the UPOS column), or ``token<TAB>tag`` lines   :func:`read_tagging`
            with a blank line between sentences                     -> ``Records[TaggedSentence]``
translate   TSV ``source<TAB>target``                               :func:`read_parallel`
                                                                    -> ``Records[SentencePair]``
forecast    CSV with a numeric column chosen by name                :func:`read_series` -> :class:`Series`
memory      ``.npz`` with ``inputs`` and ``targets``                :func:`read_arrays`
==========  ======================================================  ==================================

All readers accept UTF-8 with or without a byte-order mark, LF or CRLF line ends, and a missing final
newline. A malformed file raises :class:`~rnnkit.data.errors.DataError` naming the file, the line and the
problem; nothing is dropped silently. With ``on_error="skip"`` malformed lines are skipped instead, a
:class:`~rnnkit.data.errors.DataWarning` is issued, and ``records.report`` lists them.
"""

from __future__ import annotations

import codecs
import csv
import math
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar

import numpy as np

from rnnkit.data.errors import DataError, DataWarning, ReadReport, SkippedLine, check_on_error

TASKS = ("lm", "classify", "tag", "translate", "forecast", "memory")

R = TypeVar("R")


# ----------------------------------------------------------------------------------------------------------
# Record types
# ----------------------------------------------------------------------------------------------------------


class LabeledText(NamedTuple):
    """One classification example."""

    text: str
    label: str


class TaggedSentence(NamedTuple):
    """One tagging example: ``tokens[i]`` carries ``tags[i]``."""

    tokens: list[str]
    tags: list[str]


class SentencePair(NamedTuple):
    """One translation example."""

    source: str
    target: str


class Records(list, Generic[R]):
    """A list of records together with the :class:`ReadReport` of the file they came from."""

    def __init__(self, items: Sequence[R] = (), report: ReadReport | None = None) -> None:
        super().__init__(items)
        self.report = report if report is not None else ReadReport(None, records=len(self))


class Text(str):
    """The text of a language-model corpus (a ``str``), with the :class:`ReadReport` of its file."""

    report: ReadReport

    def __new__(cls, value: str, report: ReadReport | None = None) -> Text:
        text = super().__new__(cls, value)
        text.report = report if report is not None else ReadReport(None, records=1)
        return text


@dataclass
class Series:
    """A univariate time series for forecasting.

    Attributes:
        name: the column the values came from.
        values: (N,) float64, in file order (oldest first).
        time: the N time labels (e.g. the first CSV column), or ``None``.
        report: what the reader did.
    """

    name: str
    values: np.ndarray
    time: list[str] | None = None
    report: ReadReport | None = None

    def __len__(self) -> int:
        return len(self.values)


@dataclass
class SequenceArrays:
    """Fixed-length sequences for the memory tasks (adding, copy memory, sequential digits / MNIST).

    Attributes:
        inputs: (N, T, D) float32 for real-valued inputs, or (N, T) int64 for symbol inputs.
        targets: (N,) class ids or regression targets, or (N, T) int64 per-step symbols.
    """

    inputs: np.ndarray
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.inputs)


# ----------------------------------------------------------------------------------------------------------
# Decoded lines with locations: the common ground of every text reader
# ----------------------------------------------------------------------------------------------------------


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

def _tab_fields(reader: LineReader, number: int, text: str, names: tuple[str, ...]) -> list[str] | None:
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


class _CsvRow(NamedTuple):
    line: int
    cells: list[str]


# Python's csv module refuses fields over 131,072 characters by default ("field larger than field limit"):
# a long review or document is data, not a malformed file. The whole file is in memory already, so the
# limit protects nothing here; it is process-wide, so it is only ever raised, never lowered.
if csv.field_size_limit() < sys.maxsize:
    csv.field_size_limit(sys.maxsize)


def _csv_rows(reader: LineReader) -> Iterator[_CsvRow]:
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
            yield _CsvRow(start, cells)


def _field_count_problem(header: list[str], cells: list[str]) -> str:
    return f"expected {len(header)} comma-separated fields (as in the header), found {len(cells)}"


def _csv_header(reader: LineReader, rows: Iterator[_CsvRow]) -> list[str]:
    try:
        first = next(rows)
    except StopIteration:
        raise DataError(reader.path, None, "no CSV header found (the file has only blank lines)") from None
    return [cell.strip() for cell in first.cells]


def _column_index(reader: LineReader, header: list[str], name: str) -> int:
    lowered = [h.lower() for h in header]
    if name in header:
        return header.index(name)
    if name.lower() in lowered:
        return lowered.index(name.lower())
    raise DataError(reader.path, 1, f"missing column {name!r}; the header has: {', '.join(header)}")


# ----------------------------------------------------------------------------------------------------------
# The readers
# ----------------------------------------------------------------------------------------------------------


def read_text(path: str | Path, on_error: str = "raise") -> Text:
    """Read a plain UTF-8 text corpus for language modelling; CRLF line ends become ``\\n``.

    Args:
        path: the text file.
        on_error: ``"raise"`` (default) or ``"skip"``: drop lines that are not valid UTF-8 and report them.

    Returns:
        The text (a ``str``), with ``.report``.
    """
    reader = LineReader(path, on_error)
    lines = [text for _, text in reader]
    body = "\n".join(lines)
    if reader.data.endswith(b"\n"):
        body += "\n"
    return reader.finish(Text(body, reader.report), 0 if not body.strip() else 1, what="text")


def read_classification(
    path: str | Path, format: str = "auto", on_error: str = "raise"
) -> Records[LabeledText]:
    """Read labelled texts: TSV ``label<TAB>text`` lines, or a CSV file with ``text`` and ``label`` columns.

    Args:
        path: the data file.
        format: ``"tsv"``, ``"csv"`` or ``"auto"`` (CSV when the name ends in ``.csv``, TSV otherwise).
        on_error: ``"raise"`` or ``"skip"``.

    Returns:
        ``Records[LabeledText]`` in file order, with ``.report``. Blank lines are ignored; a TSV file has
        no header line, a CSV file has one.
    """
    fmt = _choose_format(path, format, {"tsv", "csv"}, default="csv" if _suffix(path) == ".csv" else "tsv")
    reader = LineReader(path, on_error)
    records: list[LabeledText] = []
    if fmt == "tsv":
        for number, text in reader:
            if not text.strip():
                continue
            fields = _tab_fields(reader, number, text, ("label", "text"))
            if fields is not None:
                records.append(LabeledText(text=fields[1], label=fields[0]))
    else:
        rows = _csv_rows(reader)
        header = _csv_header(reader, rows)
        text_col = _column_index(reader, header, "text")
        label_col = _column_index(reader, header, "label")
        for row in rows:
            if len(row.cells) != len(header):
                reader.problem(row.line, _field_count_problem(header, row.cells))
                continue
            text, label = row.cells[text_col].strip(), row.cells[label_col].strip()
            if not label or not text:
                reader.problem(row.line, f"empty {'label' if not label else 'text'} field")
                continue
            records.append(LabeledText(text=text, label=label))
    return reader.finish(Records(records, reader.report), len(records))


def read_tagging(path: str | Path, format: str = "auto", on_error: str = "raise") -> Records[TaggedSentence]:
    """Read tagged sentences: CoNLL-U (the UPOS column) or ``token<TAB>tag`` lines.

    In CoNLL-U, comment lines (``#``), multiword-token ranges (``1-2``) and empty nodes (``1.1``) are
    skipped, as they carry no UPOS tag of a surface token. In both formats a blank line ends a sentence.

    Args:
        path: the data file.
        format: ``"conllu"``, ``"tsv"`` or ``"auto"`` (CoNLL-U when the name ends in ``.conllu`` or the first
            token line has 10 tab-separated fields, else ``token<TAB>tag``).
        on_error: ``"raise"`` or ``"skip"``. In lenient mode a malformed line drops its whole sentence (a
            sentence with a token missing would misalign the tags); the report names the malformed lines.

    Returns:
        ``Records[TaggedSentence]``, with ``.report``.
    """
    reader = LineReader(path, on_error)
    fmt = _choose_format(path, format, {"conllu", "tsv"}, default=_sniff_tagging(path, reader.data))
    sentences: list[TaggedSentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    broken = False  # the current sentence had a malformed line (lenient mode)

    def end_sentence() -> None:
        nonlocal tokens, tags, broken
        if tokens and not broken:
            sentences.append(TaggedSentence(tokens, tags))
        tokens, tags, broken = [], [], False

    skipped = 0  # lines skipped so far; LineReader skips invalid UTF-8 before we see it: that breaks a sentence too
    for number, text in reader:
        if len(reader.report.skipped) > skipped:  # a line was skipped since the previous one we saw
            skipped, broken = len(reader.report.skipped), True
        if not text.strip():
            end_sentence()
            continue
        if fmt == "conllu":
            if text.startswith("#") or _is_range_or_empty_node(text):
                continue
            token_tag = _conllu_token(reader, number, text)
        else:
            token_tag = _tab_fields(reader, number, text, ("token", "tag"))
        if token_tag is None:
            broken = True
            continue
        tokens.append(token_tag[0])
        tags.append(token_tag[1])
    broken = broken or len(reader.report.skipped) > skipped  # the last line was skipped
    end_sentence()
    return reader.finish(Records(sentences, reader.report), len(sentences), what="sentences")


def _is_range_or_empty_node(text: str) -> bool:
    """CoNLL-U multiword-token ranges (ID ``1-2``) and empty nodes (ID ``1.1``): no surface-token UPOS."""
    word_id = text.split("\t", 1)[0]
    return "-" in word_id or "." in word_id


def _conllu_token(reader: LineReader, number: int, text: str) -> list[str] | None:
    """``[form, upos]`` of a CoNLL-U word line, or ``None`` after reporting what is wrong with it."""
    fields = text.split("\t")
    if len(fields) != 10:
        reader.problem(number, f"expected 10 tab-separated fields (CoNLL-U), found {len(fields)}")
        return None
    word_id, form, upos = fields[0], fields[1], fields[3]
    if not word_id.isdigit():
        reader.problem(number, f"bad CoNLL-U ID {word_id!r} (expected an integer, a range 1-2 or a "
                               "decimal 1.1)")
        return None
    if not form.strip():
        reader.problem(number, "empty FORM field (column 2)")
        return None
    if not upos.strip() or upos == "_":
        reader.problem(number, f"missing UPOS tag (column 4 is {upos!r})")
        return None
    return [form, upos]


def _sniff_tagging(path: str | Path, data: bytes) -> str:
    if _suffix(path) == ".conllu":
        return "conllu"
    if data.startswith(codecs.BOM_UTF8):  # as LineReader does: "# sent_id" after a BOM is still a comment
        data = data[len(codecs.BOM_UTF8):]
    for raw in data.split(b"\n", 200)[:200]:
        line = raw.strip(b"\r")
        if line.strip() and not line.startswith(b"#"):
            return "conllu" if line.count(b"\t") == 9 else "tsv"
    return "tsv"


def _sentence_pairs(reader: LineReader) -> Iterator[SentencePair]:
    for number, text in reader:
        if not text.strip():
            continue
        fields = _tab_fields(reader, number, text, ("source", "target"))
        if fields is not None:
            yield SentencePair(source=fields[0], target=fields[1])


def read_parallel(path: str | Path, on_error: str = "raise") -> Records[SentencePair]:
    """Read sentence pairs for translation: TSV ``source<TAB>target``; blank lines are ignored."""
    reader = LineReader(path, on_error)
    pairs = list(_sentence_pairs(reader))
    return reader.finish(Records(pairs, reader.report), len(pairs), what="sentence pairs")


def stream_parallel(path: str | Path, on_error: str = "raise") -> Iterator[SentencePair]:
    """:func:`read_parallel` one pair at a time, the file read line by line: for corpora too large to hold.

    The checks and errors are :func:`read_parallel`'s; a file without any pair raises when the stream ends.
    """
    reader = LineStream(path, on_error)
    count = 0
    for pair in _sentence_pairs(reader):
        count += 1
        yield pair
    reader.finish(None, count, what="sentence pairs")


MISSING_CHOICES = ("error", "interpolate")


def read_series(
    path: str | Path,
    column: str | None = None,
    time_column: str | None = None,
    missing: str = "error",
    on_error: str = "raise",
) -> Series:
    """Read one numeric column of a CSV file as a time series.

    Args:
        path: the CSV file (with a header row).
        column: the value column (``--column``); may be omitted only when the file has a single column.
        time_column: a column of time labels; default: the first column when it is not the value column.
        missing: what an empty cell means: ``"error"`` (default) or ``"interpolate"`` (linear interpolation
            between the neighbouring values; a missing head or tail takes the nearest value).
        on_error: ``"raise"`` or ``"skip"`` (skips rows with a non-numeric value or a wrong field count).

    Returns:
        :class:`Series`, with ``.report``.
    """
    if missing not in MISSING_CHOICES:
        raise ValueError(f"missing must be one of {MISSING_CHOICES}, got {missing!r}")
    reader = LineReader(path, on_error)
    rows = _csv_rows(reader)
    header = _csv_header(reader, rows)
    if column is None:
        if len(header) != 1:
            raise DataError(
                reader.path, 1, f"the file has {len(header)} columns; choose the value column by name "
                f"(--column), one of: {', '.join(header)}",
            )
        column = header[0]
    value_col = _column_index(reader, header, column)
    if time_column is not None:
        time_col: int | None = _column_index(reader, header, time_column)
    else:
        time_col = 0 if value_col != 0 else None
    values: list[float] = []
    times: list[str] = []
    for row in rows:
        if len(row.cells) != len(header):
            reader.problem(row.line, _field_count_problem(header, row.cells))
            continue
        cell = row.cells[value_col].strip()
        if not cell:
            if missing == "error":
                reader.problem(row.line, f"empty value in column {header[value_col]!r} "
                                         "(use missing='interpolate' to fill gaps)")
                continue
            value = math.nan
        else:
            try:
                value = float(cell)
            except ValueError:
                value = math.inf  # reported just below
            if not math.isfinite(value):
                reader.problem(row.line, f"non-numeric value {cell!r} in column {header[value_col]!r}")
                continue
        values.append(value)
        if time_col is not None:
            times.append(row.cells[time_col].strip())
    array = np.asarray(values, dtype=np.float64)  # (N,)
    if len(array) and np.isnan(array).all():
        raise DataError(reader.path, None, f"column {header[value_col]!r} has no values")
    if np.isnan(array).any():
        array = interpolate_missing(array)
    series = Series(name=header[value_col], values=array, time=times if time_col is not None else None,
                    report=reader.report)
    return reader.finish(series, len(array), what="values")


def interpolate_missing(values: np.ndarray) -> np.ndarray:
    """Fill NaNs by linear interpolation in the index; leading/trailing NaNs take the nearest value."""
    known = ~np.isnan(values)
    positions = np.arange(len(values))
    return np.interp(positions, positions[known], values[known])


def read_arrays(path: str | Path) -> SequenceArrays:
    """Read a ``.npz`` file holding ``inputs`` and ``targets`` (no pickles: object arrays are refused).

    Both must be numeric (or boolean) arrays with the same first dimension N >= 1 (the examples).
    """
    read_bytes(path)  # uniform "file not found" errors
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as err:  # numpy and zipfile raise many types for a damaged file
        raise DataError(path, None, f"not a readable .npz array file ({_short_reason(err)})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DataError(path, None, "holds a single .npy array; expected a .npz archive with arrays 'inputs' and "
                                    "'targets' (numpy.savez)")
    try:
        with loaded as archive:
            if "inputs" not in archive or "targets" not in archive:
                found = sorted(archive.files)
                raise DataError(path, None, f"expected arrays 'inputs' and 'targets', found {found}")
            inputs, targets = archive["inputs"], archive["targets"]
    except DataError:
        raise
    except Exception as err:  # a damaged member: BadZipFile, zlib.error, EOFError, ValueError...
        raise DataError(path, None, f"not a readable .npz array file ({_short_reason(err)})") from None
    for name, array in (("inputs", inputs), ("targets", targets)):
        if array.ndim == 0:
            raise DataError(path, None, f"'{name}' must be an array with one entry per example, found a scalar")
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise DataError(path, None, f"'{name}' must be numeric, found dtype {array.dtype}")
    if len(inputs) != len(targets):
        raise DataError(path, None, f"{len(inputs)} inputs but {len(targets)} targets")
    if len(inputs) == 0:
        raise DataError(path, None, "no examples (the arrays are empty)")
    return SequenceArrays(inputs=inputs, targets=targets)


def _short_reason(err: BaseException, limit: int = 200) -> str:
    text = f"{type(err).__name__}: {err}" if not isinstance(err, OSError | ValueError) else str(err)
    return text if len(text) <= limit else text[:limit] + "..."


READERS = {
    "lm": read_text,
    "classify": read_classification,
    "tag": read_tagging,
    "translate": read_parallel,
    "forecast": read_series,
    "memory": read_arrays,
}


def read(path: str | Path, task: str, **options: Any) -> Any:
    """Read ``path`` with the reader of ``task`` (one of :data:`TASKS`), passing ``options`` on."""
    if task not in READERS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    return READERS[task](path, **options)


def _suffix(path: str | Path) -> str:
    return Path(path).suffix.lower()


def _choose_format(path: str | Path, format: str, allowed: set[str], default: str) -> str:
    if format == "auto":
        return default
    if format not in allowed:
        raise ValueError(f"format must be 'auto' or one of {sorted(allowed)}, got {format!r}")
    return format
