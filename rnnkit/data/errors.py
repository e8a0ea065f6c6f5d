"""The one error class for bad data, and the report a lenient read hands back.

Every malformed input (a data file, a vocabulary JSON, a corrupt download) raises :class:`DataError`,
whose message names the file, the line (when there is one) and what was wrong::

    rnnkit.data.DataError: train.tsv, line 7: expected 2 tab-separated fields (label<TAB>text), found 3

Readers called with ``on_error="skip"`` do not raise for bad rows: they skip them, warn once with a
:class:`DataWarning`, and attach a :class:`ReadReport` (``records.report``) saying which lines were skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ON_ERROR_CHOICES = ("raise", "skip")


class DataError(ValueError):
    """A data file, vocabulary or download is malformed.

    Attributes:
        path: the file at fault (``None`` when the data did not come from a file).
        line: 1-based line number of the problem, or ``None`` when it concerns the whole file.
        reason: what was wrong, without the location.
    """

    def __init__(self, path: str | Path | None, line: int | None, reason: str) -> None:
        self.path = None if path is None else str(path)
        self.line = line
        self.reason = reason
        super().__init__(format_location(self.path, line) + reason)


class DataWarning(UserWarning):
    """Issued when a lenient read (``on_error="skip"``) skipped malformed lines."""


def format_location(path: str | None, line: int | None) -> str:
    """``"file.tsv, line 3: "``, ``"file.tsv: "`` or ``""``: the prefix of every data error message."""
    if path is None:
        return "" if line is None else f"line {line}: "
    return f"{path}: " if line is None else f"{path}, line {line}: "


def check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")


@dataclass(frozen=True)
class SkippedLine:
    """One line a lenient read skipped, and why."""

    line: int
    reason: str


@dataclass
class ReadReport:
    """What a reader did with a file: how many lines it saw, how many records it kept, what it skipped.

    ``skipped`` is empty unless the file was read with ``on_error="skip"`` (in strict mode the first
    problem raises :class:`DataError` instead).
    """

    path: str | None
    lines: int = 0
    records: int = 0
    skipped: list[SkippedLine] = field(default_factory=list)

    @property
    def n_skipped(self) -> int:
        """Number of malformed lines skipped."""
        return len(self.skipped)

    @property
    def skipped_lines(self) -> list[int]:
        """Line numbers of the skipped lines, in file order."""
        return [s.line for s in self.skipped]

    def __str__(self) -> str:
        text = f"{self.path}: {self.records} records from {self.lines} lines"
        if not self.skipped:
            return text
        return text + f", skipped {self.n_skipped} malformed lines ({_line_list(self.skipped_lines)})"


def _line_list(lines: list[int], limit: int = 20) -> str:
    shown = ", ".join(str(n) for n in lines[:limit])
    return shown + (f", ... ({len(lines) - limit} more)" if len(lines) > limit else "")
