"""Writers for the task file formats: the inverse of :mod:`rnnkit.data.readers`.

The catalog uses them to store each split of a dataset in the format the readers (and the ``--data``
option of the command line) accept.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from rnnkit.data.readers import LabeledText, SentencePair, SequenceArrays, TaggedSentence


def _check_field(value: str, what: str) -> str:
    if not value.strip() or "\t" in value or "\n" in value or "\r" in value:
        raise ValueError(f"{what} must be non-empty and contain no tab or newline, got {value!r}")
    return value


def write_text(path: str | Path, text: str) -> None:
    Path(path).write_text(text, encoding="utf-8", newline="\n")


def write_classification(path: str | Path, records: Iterable[LabeledText]) -> None:
    """TSV ``label<TAB>text``, one example a line."""
    lines = [f"{_check_field(r.label, 'label')}\t{_check_field(r.text, 'text')}\n" for r in records]
    Path(path).write_text("".join(lines), encoding="utf-8", newline="\n")


def write_tagging(path: str | Path, sentences: Iterable[TaggedSentence]) -> None:
    """``token<TAB>tag`` lines, a blank line after each sentence."""
    blocks = []
    for tokens, tags in sentences:
        if len(tokens) != len(tags):
            raise ValueError(f"need one tag per token, got {len(tokens)} tokens and {len(tags)} tags")
        rows = [f"{_check_field(t, 'token')}\t{_check_field(g, 'tag')}\n"
                for t, g in zip(tokens, tags, strict=True)]
        blocks.append("".join(rows) + "\n")
    Path(path).write_text("".join(blocks), encoding="utf-8", newline="\n")


def write_parallel(path: str | Path, pairs: Iterable[SentencePair]) -> None:
    """TSV ``source<TAB>target``, one pair a line."""
    lines = [f"{_check_field(p.source, 'source')}\t{_check_field(p.target, 'target')}\n" for p in pairs]
    Path(path).write_text("".join(lines), encoding="utf-8", newline="\n")


def write_series(path: str | Path, values: Sequence[float] | np.ndarray, time: Sequence[str] | None = None,
                 column: str = "value") -> None:
    """CSV with a ``time`` column (when given) and the value column; floats written exactly (``repr``)."""
    values = np.asarray(values, dtype=np.float64)
    if time is not None and len(time) != len(values):
        raise ValueError(f"time and values must have the same length, got {len(time)} and {len(values)}")
    header = f"time,{column}\n" if time is not None else f"{column}\n"
    if time is not None:
        rows = [f"{t},{float(v)!r}\n" for t, v in zip(time, values, strict=True)]
    else:
        rows = [f"{float(v)!r}\n" for v in values]
    Path(path).write_text(header + "".join(rows), encoding="utf-8", newline="\n")


def write_arrays(path: str | Path, arrays: SequenceArrays) -> None:
    """``.npz`` with ``inputs`` and ``targets`` (plain numeric arrays, loadable without pickle)."""
    with open(path, "wb") as handle:
        np.savez_compressed(handle, inputs=arrays.inputs, targets=arrays.targets)
