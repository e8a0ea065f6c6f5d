"""Fuzzing every reader of rnnkit.data with hypothesis: random bytes, broken rows, huge lines, empty files and
mixed encodings. A reader may answer only in two ways: the records the file holds (no row lost or invented,
in either ``on_error`` mode), or a :class:`DataError` naming the file (and the line, when there is one).
Anything else -- another exception, a hang, a wrong row count -- fails.

Three kinds of input per reader:

* *structured*: files assembled line by line from valid rows, broken rows (wrong field count, empty fields,
  bad IDs, non-numbers), blank lines, comments, foreign encodings (Latin-1, UTF-16, cp1252), invalid UTF-8,
  a BOM, mixed LF/CRLF line ends, no final newline and, now and then, a line of 100,000+ characters. The
  expected records and the lines at fault are known, from the construction or from a small reference model
  of the documented format, and must match exactly;
* *random bytes*: anything at all;
* *mutations*: a valid file with bytes flipped, inserted, deleted or cut off.

Each heavy test runs ``FUZZ_EXAMPLES`` (10,000) generated inputs and asserts that it did; they are marked
slow. The ``*_quick`` variants run a few hundred of the same inputs in the fast suite. Hypothesis is
derandomized, so CI sees the same inputs on every run.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rnnkit.data import (
    DataError,
    LabeledText,
    LabelSet,
    SentencePair,
    TaggedSentence,
    Vocab,
    load_tokenizer,
    read_arrays,
    read_classification,
    read_parallel,
    read_series,
    read_tagging,
    read_text,
)

FUZZ_EXAMPLES = 10_000
QUICK_EXAMPLES = 200
BOM = b"\xef\xbb\xbf"


def fuzz_settings(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, database=None, derandomize=True, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example, HealthCheck.filter_too_much])


def run_fuzz(check: Callable[[bytes, object], None], strategy: st.SearchStrategy, examples: int) -> int:
    """Run ``check`` on ``examples`` generated inputs; returns how many it ran (asserted by the callers)."""
    count = 0

    @fuzz_settings(examples)
    @given(strategy)
    def property_holds(example):
        nonlocal count
        count += 1
        check(*example)

    property_holds()
    return count


# ----------------------------------------------------------------------------------------------------------
# The line model every text reader documents: split on LF, drop one CR before it, a BOM first, UTF-8
# ----------------------------------------------------------------------------------------------------------


def physical_lines(data: bytes) -> list[str | None]:
    """The decoded lines of a file (None: not valid UTF-8), as the readers' docstring defines them."""
    if data.startswith(BOM):
        data = data[len(BOM):]
    raw_lines = data.split(b"\n")
    if raw_lines[-1] == b"":
        raw_lines.pop()
    lines: list[str | None] = []
    for raw in raw_lines:
        raw = raw[:-1] if raw.endswith(b"\r") else raw
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(None)
    return lines


def assemble(draw, contents: list[bytes]) -> bytes:
    """Join line contents with random LF / CRLF ends, maybe a BOM, maybe no final newline (one draw: hypothesis
    spends far more time per draw than the readers spend per file)."""
    bits = draw(st.integers(0, 2 ** (len(contents) + 2) - 1))
    ends = [b"\r\n" if bits >> (i + 2) & 1 else b"\n" for i in range(len(contents))]
    if contents and bits & 1:
        ends[-1] = b""
    data = b"".join(c + e for c, e in zip(contents, ends, strict=True))
    return (BOM if bits & 2 else b"") + data


# Field text: the characters that trouble parsers (controls, NUL, Unicode spaces and line separators, a BOM,
# combining marks, right-to-left, astral), never the separators of the formats (tab, LF, CR).
TROUBLE = ("abcXYZ019 ,;:'\"#_-.|\\/=" "\x00\x01\x0b\x0c\x1c\x1e\x7f\x85\xa0\u1680\u2028\u2029\u3000\ufeff"
           "\u200b\u0301\u05d0\u0627\u00e9\u00df\u4e2d\U0001f600\ufffd")
FIELD_CHARS = st.sampled_from(TROUBLE) | st.characters(blacklist_characters="\t\n\r", blacklist_categories=("Cs",))
field = st.text(FIELD_CHARS, min_size=1, max_size=10).filter(lambda t: t.strip())
blankish = st.sampled_from(["", " ", "  \t ", "\t", "\u3000"])
# A value that is unmistakably long (over the 131,072 characters of csv's default field limit), built by
# repetition so that it costs hypothesis nothing to draw; rare, so that the other inputs stay cheap.
_long = st.builds(lambda unit, n: unit * n, st.sampled_from(["x", "long text ", "\u00e9\u00e8"]),
                  st.integers(140_000, 170_000))
huge = st.integers(0, 24).flatmap(lambda k: _long if k == 0 else st.just("short"))


def foreign(text: str):
    """``text`` in an encoding other than UTF-8 (or raw junk): whatever the bytes decode to is what counts."""
    return st.sampled_from(["latin-1", "cp1252", "utf-16", "utf-16-le", "utf-32"]).map(
        lambda enc: text.encode(enc, errors="replace"))


invalid_utf8 = st.sampled_from([b"\xff", b"\xc3(", b"\xe2\x82", b"\xed\xa0\x80", b"\xc0\xaf", b"\x80abc"])


def mutate(data: bytes):
    """A copy of ``data`` with a few random edits: flips, inserts, deletes, a cut."""

    @st.composite
    def mutated(draw):
        buffer = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            kind = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
            at = draw(st.integers(0, len(buffer))) if buffer else 0
            if kind == "flip" and at < len(buffer):
                buffer[at] = draw(st.integers(0, 255))
            elif kind == "insert":
                buffer[at:at] = draw(st.sampled_from([b"\t", b"\n", b"\r", b"\r\n", b'"', b",", b"\x00", b"\xff",
                                                      BOM, b"#", b"_", b"-", b"."]))
            elif kind == "delete" and at < len(buffer):
                del buffer[at:at + draw(st.integers(1, 8))]
            elif kind == "cut":
                del buffer[at:]
        return bytes(buffer)

    return mutated()


random_bytes = st.one_of(st.just(b""), st.binary(max_size=400),
                         st.lists(st.sampled_from([b"\t", b"\n", b"\r\n", b",", b'"', b"#", b"1", b"_", b"a b", b"x",
                                                   b"-", b".", b"\xff", BOM, b"\x00", b"  "]),
                                  max_size=40).map(b"".join))


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def read_quietly(reader, path, **options):
    """Call a reader with the DataWarning of lenient mode silenced (its report is checked instead)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return reader(path, **options)


def check_error(err: DataError, path: Path, data: bytes) -> None:
    """A DataError names the file, and a line that exists."""
    assert str(err).startswith(f"{path}"), str(err)
    if err.line is not None:
        assert 1 <= err.line <= max(1, len(physical_lines(data))), (err.line, str(err))


def check_report(report, data: bytes, n_records: int, on_error: str) -> None:
    """The report counts what the file holds: every line, every record, and names real, distinct lines."""
    n_lines = len(physical_lines(data))
    assert report.lines == n_lines and report.records == n_records >= 1
    lines = report.skipped_lines
    assert lines == sorted(set(lines)) and all(1 <= n <= n_lines for n in lines)
    if on_error == "raise":
        assert lines == []


def expect(reader, path: Path, data: bytes, options: dict, records, broken: list[int], on_error: str) -> None:
    """Strict mode: the first broken line is the error, else the records. Lenient: the records, and the broken
    lines in the report. No records at all is an error in both modes."""
    try:
        result = read_quietly(reader, path, on_error=on_error, **options)
    except DataError as err:
        check_error(err, path, data)
        if on_error == "raise" and broken:
            assert err.line == broken[0], (err.line, broken, str(err))
        else:
            assert not records, f"{len(records)} valid records, but: {err}"
        return
    assert not (on_error == "raise" and broken), f"line {broken[0]} is broken but was accepted"
    assert list(result) == records
    assert result.report.skipped_lines == (broken if on_error == "skip" else [])
    check_report(result.report, data, len(result), on_error)


# ----------------------------------------------------------------------------------------------------------
# TSV readers: classification (label<TAB>text) and parallel (source<TAB>target)
# ----------------------------------------------------------------------------------------------------------


def tsv_reference(data: bytes, record) -> tuple[list, list[int]]:
    """The records and the broken lines of a two-column TSV file, by the format's definition."""
    records, broken = [], []
    for number, text in enumerate(physical_lines(data), start=1):
        if text is None:
            broken.append(number)
        elif not text.strip():
            continue
        elif len(fields := text.split("\t")) != 2 or not all(f.strip() for f in fields):
            broken.append(number)
        else:
            records.append(record(fields[0].strip(), fields[1].strip()))
    return records, broken


tsv_line = st.one_of(
    st.tuples(field, field).map(lambda f: f"{f[0]}\t{f[1]}".encode()),  # valid
    st.tuples(field, field).map(lambda f: f"  {f[0]} \t {f[1]}  ".encode()),  # valid, padded
    st.tuples(field, huge).map(lambda f: f"{f[0]}\t{f[1]}".encode()),  # valid, huge
    field.map(str.encode),  # one field
    st.lists(field, min_size=3, max_size=5).map(lambda f: "\t".join(f).encode()),  # too many fields
    st.tuples(blankish, field).map(lambda f: f"{f[0]}\t{f[1]}".encode()),  # empty first field
    st.tuples(field, blankish).map(lambda f: f"{f[0]}\t{f[1]}".encode()),  # empty second field
    blankish.map(str.encode),  # blank line
    st.tuples(field, field).flatmap(lambda f: foreign(f"{f[0]}\t{f[1]}")),  # another encoding
    st.tuples(field, invalid_utf8, field).map(lambda f: f[0].encode() + b"\t" + f[1] + f[2].encode()),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"), max_size=12).map(str.encode),
)


@st.composite
def tsv_files(draw):
    return assemble(draw, draw(st.lists(tsv_line, max_size=8)))


def tsv_inputs(valid_example: bytes):
    return st.tuples(st.one_of(tsv_files(), tsv_files(), random_bytes, mutate(valid_example)),
                     st.sampled_from(["raise", "skip"]))


def check_classification_tsv(tmp_path):
    path = tmp_path / "data.tsv"

    def check(data, on_error):
        write(path, data)
        records, broken = tsv_reference(data, lambda label, text: LabeledText(text, label))
        expect(read_classification, path, data, {}, records, broken, on_error)

    return check


def check_parallel(tmp_path):
    path = tmp_path / "pairs.tsv"

    def check(data, on_error):
        write(path, data)
        records, broken = tsv_reference(data, SentencePair)
        expect(read_parallel, path, data, {}, records, broken, on_error)

    return check


TSV_EXAMPLE = b"pos\tgood film\nneg\tbad film\r\npos\tfine\n"


# ----------------------------------------------------------------------------------------------------------
# CSV classification (text and label columns, quoting, multi-line cells)
# ----------------------------------------------------------------------------------------------------------

CSV_CHARS = st.sampled_from(TROUBLE + "\n") | st.characters(blacklist_characters="\r", blacklist_categories=("Cs",))
csv_cell = st.text(CSV_CHARS, min_size=1, max_size=8).filter(lambda t: t.strip())


@st.composite
def csv_files(draw):
    """A CSV file written by Python's csv module from known cells; returns (bytes, records, broken lines)."""
    columns = draw(st.permutations(["text", "label", *draw(st.sampled_from([[], ["id"], ["id", "note"]]))]))
    text_at, label_at = columns.index("text"), columns.index("label")
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
    end = draw(st.sampled_from(["\n", "\r\n"]))

    def render(cells: list[str]) -> str:
        out = io.StringIO()
        csv.writer(out, quoting=quoting, lineterminator=end).writerow(cells)
        return out.getvalue()

    chunks = [(BOM if draw(st.booleans()) else b"") + render(columns).encode()]
    line, records, broken = 2, [], []
    for _ in range(draw(st.integers(0, 7))):
        kind = draw(st.sampled_from(["valid", "valid", "valid", "huge", "count", "empty", "blank", "invalid"]))
        if kind == "blank":
            chunks.append(end.encode())
            line += 1
            continue
        cells = [draw(csv_cell) for _ in columns]
        if kind == "huge":
            cells[text_at] = draw(huge)
        if kind == "empty":
            cells[draw(st.sampled_from([text_at, label_at]))] = draw(st.sampled_from(["", " ", "\t"]))
        if kind == "count":
            cells = cells[:-1] if draw(st.booleans()) and len(cells) > 1 else [*cells, draw(csv_cell)]
        rendered = render(cells).encode()
        if kind == "invalid":
            at = draw(st.integers(0, len(rendered) - len(end)))
            spoilt = rendered[:at] + draw(invalid_utf8) + rendered[at:]
            # Only a one-line record: in a multi-line one the bad line would cut the record in two.
            if b"\n" in rendered[:-1] or _decodes(spoilt):
                kind = "valid"
            else:
                rendered = spoilt
        if kind in ("valid", "huge"):
            records.append(LabeledText(cells[text_at].strip(), cells[label_at].strip()))
        else:
            broken.append(line)
        chunks.append(rendered)
        line += rendered.count(b"\n")
    data = b"".join(chunks)
    if draw(st.booleans()) and data.endswith(end.encode()):
        data = data[: -len(end)]  # no final newline
    return data, records, broken


def _decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def check_classification_csv(tmp_path):
    path = tmp_path / "data.csv"

    def check(example, on_error):
        if isinstance(example, bytes):  # random bytes or a mutation: only the invariants
            write(path, example)
            try:
                result = read_quietly(read_classification, path, on_error=on_error)
            except DataError as err:
                check_error(err, path, example)
                return
            check_report(result.report, example, len(result), on_error)
            return
        data, records, broken = example
        write(path, data)
        expect(read_classification, path, data, {}, records, broken, on_error)

    return check


CSV_EXAMPLE = b'id,text,label\n1,"Good, really good",pos\n2,"two\nlines",neg\r\n3,plain,neg'
csv_inputs = st.tuples(st.one_of(csv_files(), csv_files(), csv_files(), random_bytes, mutate(CSV_EXAMPLE)),
                       st.sampled_from(["raise", "skip"]))


# ----------------------------------------------------------------------------------------------------------
# Tagging: token<TAB>tag lines and CoNLL-U, sentences separated by blank lines
# ----------------------------------------------------------------------------------------------------------


def tagging_reference(data: bytes, fmt: str) -> tuple[list[TaggedSentence], list[int]]:
    """Sentences and broken lines; a sentence with a broken line is dropped whole (documented)."""
    sentences, broken = [], []
    tokens: list[str] = []
    tags: list[str] = []
    bad = False
    for number, text in [*enumerate(physical_lines(data), start=1), (None, "")]:
        if text is not None and not text.strip():
            if tokens and not bad:
                sentences.append(TaggedSentence(tokens, tags))
            tokens, tags, bad = [], [], False
            continue
        if text is None:
            broken.append(number)
            bad = True
            continue
        fields = text.split("\t")
        if fmt == "conllu":
            if text.startswith("#") or "-" in fields[0] or "." in fields[0]:
                continue
            ok = (len(fields) == 10 and fields[0].isdigit() and fields[1].strip() and fields[3].strip()
                  and fields[3] != "_")
            token_tag = (fields[1], fields[3]) if ok else None
        else:
            ok = len(fields) == 2 and all(f.strip() for f in fields)
            token_tag = (fields[0].strip(), fields[1].strip()) if ok else None
        if token_tag is None:
            broken.append(number)
            bad = True
        else:
            tokens.append(token_tag[0])
            tags.append(token_tag[1])
    return sentences, broken


def conllu_word(index: int, form: str, upos: str) -> str:
    return f"{index}\t{form}\t{form.lower()}\t{upos}\t_\t_\t0\tdep\t_\t_"


tag = st.sampled_from(["NOUN", "VERB", "B-PER", "I-PER", "O", "PUNCT"])
token_tag_line = st.one_of(
    st.tuples(field, tag).map(lambda f: f"{f[0]}\t{f[1]}".encode()),
    st.tuples(field, tag).map(lambda f: f"{f[0]}\t{f[1]}".encode()),
    st.tuples(huge, tag).map(lambda f: f"{f[0]}\t{f[1]}".encode()),
    field.map(str.encode),
    st.tuples(field, tag, field).map(lambda f: "\t".join(f).encode()),
    st.tuples(field, blankish).map(lambda f: f"{f[0]}\t{f[1]}".encode()),
    st.just(b""), st.just(b""), st.just(b"  "),
    st.tuples(field, tag).flatmap(lambda f: foreign(f"{f[0]}\t{f[1]}")),
    st.tuples(field, invalid_utf8).map(lambda f: f[0].encode() + b"\t" + f[1]),
)
conllu_line = st.one_of(
    st.tuples(st.integers(1, 30), field, tag).map(lambda f: conllu_word(*f).encode()),
    st.tuples(st.integers(1, 30), field, tag).map(lambda f: conllu_word(*f).encode()),
    st.tuples(st.integers(1, 30), huge, tag).map(lambda f: conllu_word(*f).encode()),
    st.sampled_from([b"# sent_id = 1", b"# text = ok", b"1-2\tdel\t_\t_\t_\t_\t_\t_\t_\t_", b"2.1\tgone" + b"\t_" * 8]),
    st.just(b""), st.just(b""),
    st.tuples(st.integers(1, 30), field, tag).map(lambda f: "\t".join(conllu_word(*f).split("\t")[:4]).encode()),
    st.tuples(st.sampled_from(["x", "", "a1", "\u00b2"]), field, tag).map(
        lambda f: conllu_word(1, f[1], f[2]).replace("1", f[0], 1).encode()),
    st.tuples(st.integers(1, 30), blankish, tag).map(lambda f: conllu_word(*f).encode()),
    st.tuples(st.integers(1, 30), field, st.sampled_from(["_", "", " "])).map(lambda f: conllu_word(*f).encode()),
    st.tuples(st.integers(1, 30), field, tag).flatmap(lambda f: foreign(conllu_word(*f))),
    st.tuples(st.integers(1, 30), field, invalid_utf8).map(lambda f: conllu_word(f[0], f[1], "X").encode() + f[2]),
)


@st.composite
def tagging_files(draw, line_strategy):
    return assemble(draw, draw(st.lists(line_strategy, max_size=10)))


TAG_EXAMPLE = b"John\tB-PER\nSmith\tI-PER\nruns\tO\n\n\nParis\tB-LOC\r\n"
CONLLU_EXAMPLE = (b"# sent_id = 1\n1-2\tgitmedim\t_\t_\t_\t_\t_\t_\t_\t_\n1\tgit\tgit\tVERB\t_\t_\t0\troot\t_\t_\n"
                  b"2\tmedim\t_\tAUX\t_\t_\t1\taux\t_\t_\n2.1\tgone\t_\t_\t_\t_\t_\t_\t_\t_\n\n"
                  b"1\tEvet\tevet\tINTJ\t_\t_\t0\troot\t_\t_\n")
tagging_inputs = st.tuples(
    st.one_of(
        st.tuples(st.just("tsv"), st.one_of(tagging_files(token_tag_line), tagging_files(token_tag_line),
                                            mutate(TAG_EXAMPLE))),
        st.tuples(st.just("conllu"), st.one_of(tagging_files(conllu_line), tagging_files(conllu_line),
                                               mutate(CONLLU_EXAMPLE))),
        st.tuples(st.just("auto"), random_bytes),
    ),
    st.sampled_from(["raise", "skip"]))


def check_tagging(tmp_path):
    path = tmp_path / "tags.txt"

    def check(example, on_error):
        fmt, data = example
        write(path, data)
        if fmt == "auto":  # random bytes, format sniffed: only the invariants
            try:
                result = read_quietly(read_tagging, path, on_error=on_error)
            except DataError as err:
                check_error(err, path, data)
                return
            check_report(result.report, data, len(result), on_error)
            assert all(len(s.tokens) == len(s.tags) >= 1 for s in result)
            return
        sentences, broken = tagging_reference(data, fmt)
        expect(read_tagging, path, data, {"format": fmt}, sentences, broken, on_error)

    return check


# ----------------------------------------------------------------------------------------------------------
# Plain text (lm)
# ----------------------------------------------------------------------------------------------------------

text_line = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=20).map(str.encode),
    huge.map(str.encode),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=10).flatmap(foreign),
    invalid_utf8,
    st.just(b""),
)


@st.composite
def text_files(draw):
    return assemble(draw, draw(st.lists(text_line, max_size=10)))


def check_text(tmp_path):
    path = tmp_path / "corpus.txt"

    def check(data, on_error):
        write(path, data)
        lines = physical_lines(data)
        broken = [n for n, text in enumerate(lines, start=1) if text is None]
        body = "\n".join(text for text in lines if text is not None) + ("\n" if data.endswith(b"\n") else "")
        try:
            text = read_quietly(read_text, path, on_error=on_error)
        except DataError as err:
            check_error(err, path, data)
            if on_error == "raise" and broken:
                assert err.line == broken[0]
            else:
                assert not body.strip(), str(err)
            return
        assert not (on_error == "raise" and broken)
        assert text == body  # CRLF became LF, the BOM is gone, nothing else changed
        assert text.report.skipped_lines == (broken if on_error == "skip" else [])

    return check


text_inputs = st.tuples(st.one_of(text_files(), text_files(), random_bytes, mutate(b"To be,\r\nor not.\n")),
                        st.sampled_from(["raise", "skip"]))


# ----------------------------------------------------------------------------------------------------------
# Series (forecast): one numeric CSV column
# ----------------------------------------------------------------------------------------------------------

number = st.one_of(st.floats(allow_nan=False, allow_infinity=False, width=64).map(repr),
                   st.integers(-10**6, 10**6).map(str))
not_a_number = st.one_of(st.text("bcdxyz", min_size=1, max_size=5),
                         st.sampled_from(["inf", "-inf", "nan", "NaN", "Infinity", "1e999", "--1", "1,5"]))


@st.composite
def series_files(draw):
    """A CSV file with a time column, a value column (and maybe another); (bytes, values, broken, missing)."""
    columns = draw(st.permutations(["t", "v", *draw(st.sampled_from([[], ["note"]]))]))
    at = columns.index("v")
    missing = draw(st.sampled_from(["error", "interpolate"]))
    end = draw(st.sampled_from(["\n", "\r\n"]))
    lines, values, broken = [",".join(columns)], [], []
    for _ in range(draw(st.integers(0, 8))):
        cells = ["2024", "x", "1.5"][: len(columns)]
        kind = draw(st.sampled_from(["valid", "valid", "valid", "empty", "bad", "count", "blank", "huge"]))
        if kind == "blank":
            lines.append("")
            continue
        cells[at] = draw(number) if kind in ("valid", "huge") else draw(not_a_number) if kind == "bad" else ""
        if kind == "huge":
            cells[columns.index("t")] = draw(huge)
        if kind == "empty" and draw(st.booleans()):
            cells[at] = " "
        if kind == "count":
            cells.append("extra")
        lines.append(",".join(cells))
        if kind in ("valid", "huge"):
            values.append(float(cells[at]))
        elif kind == "empty" and missing == "interpolate":
            values.append(math.nan)
        else:
            broken.append(len(lines))
    data = (end.join(lines) + (end if draw(st.booleans()) else "")).encode()
    return data, values, broken, missing


def check_series(tmp_path):
    path = tmp_path / "series.csv"

    def check(example, on_error):
        if isinstance(example, bytes):
            write(path, example)
            try:
                series = read_quietly(read_series, path, on_error=on_error)
            except DataError as err:
                check_error(err, path, example)
                return
            check_report(series.report, example, len(series), on_error)
            assert np.isfinite(series.values).all()
            return
        data, values, broken, missing = example
        write(path, data)
        expected = np.asarray(values, dtype=np.float64)
        known = ~np.isnan(expected)
        has_values = bool(known.any())
        try:
            series = read_quietly(read_series, path, column="v", missing=missing, on_error=on_error)
        except DataError as err:
            check_error(err, path, data)
            if on_error == "raise" and broken:
                assert err.line == broken[0], (err.line, broken, str(err))
            else:
                assert not has_values, str(err)
            return
        assert not (on_error == "raise" and broken) and has_values
        if not known.all():
            positions = np.arange(len(expected))
            expected = np.interp(positions, positions[known], expected[known])
        np.testing.assert_array_equal(series.values, expected)
        assert series.time is None or len(series.time) == len(series)
        assert series.report.skipped_lines == (broken if on_error == "skip" else [])

    return check


series_inputs = st.tuples(
    st.one_of(series_files(), series_files(), series_files(), random_bytes,
              mutate(b"year,volume\r\n1871,1120\r\n1872,1160.5\r\n1873,963")),
    st.sampled_from(["raise", "skip"]))


# ----------------------------------------------------------------------------------------------------------
# Arrays (.npz) and vocabularies (JSON)
# ----------------------------------------------------------------------------------------------------------

array_dtypes = st.one_of(hnp.integer_dtypes(), hnp.floating_dtypes(), hnp.boolean_dtypes(),
                         hnp.unicode_string_dtypes(max_len=3), hnp.byte_string_dtypes(max_len=3),
                         hnp.complex_number_dtypes(), hnp.datetime64_dtypes())
arrays = hnp.arrays(array_dtypes, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))


def npz_bytes(members: dict, compressed: bool) -> bytes:
    out = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(out, **members)
    return out.getvalue()


@st.composite
def npz_files(draw):
    """An .npz file from random arrays under random names (maybe 'inputs'/'targets'), maybe mutated."""
    names = draw(st.sampled_from([["inputs", "targets"], ["inputs", "targets"], ["inputs"], ["x", "targets"],
                                  ["inputs", "targets", "extra"]]))
    members = {name: draw(arrays) for name in names}
    if draw(st.integers(0, 5)) == 0:
        members["inputs"] = np.array([object(), 1], dtype=object)  # needs pickle: must be refused
    data = npz_bytes(members, draw(st.booleans()))
    if draw(st.booleans()):
        return draw(mutate(data)), None
    return data, members


def usable(array: np.ndarray) -> bool:
    return array.ndim >= 1 and (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_)


def check_arrays(tmp_path):
    path = tmp_path / "arrays.npz"

    def check(data, members):
        write(path, data)
        loadable = (members is not None and {"inputs", "targets"} <= set(members)
                    and all(usable(members[k]) for k in ("inputs", "targets"))
                    and len(members["inputs"]) == len(members["targets"]) >= 1)
        try:
            arrays = read_arrays(path)
        except DataError as err:
            assert str(err).startswith(str(path)) and err.line is None
            assert not loadable, f"a valid file was refused: {err}"
            return
        assert len(arrays.inputs) == len(arrays.targets) >= 1
        assert usable(arrays.inputs) and usable(arrays.targets)
        if members is not None:  # an intact file: exactly what was saved
            assert loadable
            np.testing.assert_array_equal(arrays.inputs, members["inputs"])
            np.testing.assert_array_equal(arrays.targets, members["targets"])

    return check


VALID_NPZ = npz_bytes({"inputs": np.arange(24, dtype=np.float32).reshape(2, 3, 4), "targets": np.array([0, 1])},
                      False)
arrays_inputs = st.one_of(npz_files(), npz_files(), st.tuples(random_bytes, st.none()),
                          st.tuples(mutate(VALID_NPZ), st.just("mutated")))


def check_arrays_mutation(tmp_path):
    """Mutations of one known file: an answer that is not an error must be the file's true content."""
    base = check_arrays(tmp_path)
    path = tmp_path / "arrays.npz"

    def check(data, members):
        if members != "mutated":
            return base(data, members)
        write(path, data)
        try:
            arrays = read_arrays(path)
        except DataError as err:
            assert str(err).startswith(str(path))
            return
        np.testing.assert_array_equal(arrays.inputs, np.arange(24, dtype=np.float32).reshape(2, 3, 4))
        np.testing.assert_array_equal(arrays.targets, np.array([0, 1]))

    return check


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12)
VOCAB_JSON = Vocab(["the", "cat", "sat"], "word").to_json()
LABELS_JSON = LabelSet(["neg", "pos"]).to_json()


@st.composite
def vocabulary_documents(draw):
    """A vocabulary, label set or BPE document with random values in its fields, or JSON/bytes at random."""
    kind = draw(st.sampled_from(["vocab", "labels", "bpe", "json", "bytes", "mutated", "deep"]))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "bytes":
        return draw(random_bytes)
    if kind == "mutated":
        return draw(mutate(draw(st.sampled_from([VOCAB_JSON, LABELS_JSON])).encode()))
    if kind == "deep":
        return (draw(st.sampled_from(["[", '{"a":'])) * draw(st.integers(900, 200_000))).encode()
    base = {"vocab": json.loads(VOCAB_JSON), "labels": json.loads(LABELS_JSON),
            "bpe": {"format": "rnnkit.bpe", "version": 1, "tokenizer": {}}}[kind]
    for key in draw(st.lists(st.sampled_from(sorted(base)), max_size=3)):
        base[key] = draw(json_values)
    if kind == "vocab" and draw(st.booleans()):
        base["tokens"] = draw(st.lists(st.text(max_size=3), max_size=6))
    return json.dumps(base).encode()


def check_vocabularies(tmp_path):
    path = tmp_path / "vocab.json"

    def check(data, loader_name):
        write(path, data)
        loader = {"vocab": Vocab.load, "labels": LabelSet.load, "tokenizer": load_tokenizer}[loader_name]
        try:
            loaded = loader(path)
        except DataError as err:
            assert str(err).startswith(str(path)) and len(str(err)) < 2000
            return
        # What loads is a consistent object: it saves and reloads to itself.
        assert type(loaded).from_json(loaded.to_json()) == loaded

    return check


vocabulary_inputs = st.tuples(vocabulary_documents(), st.sampled_from(["vocab", "labels", "tokenizer"]))


# ----------------------------------------------------------------------------------------------------------
# The tests: 10,000 inputs per reader (slow), a few hundred each in the fast suite
# ----------------------------------------------------------------------------------------------------------

READERS = {
    "read_text": (check_text, text_inputs),
    "read_classification_tsv": (check_classification_tsv, tsv_inputs(TSV_EXAMPLE)),
    "read_classification_csv": (check_classification_csv, csv_inputs),
    "read_parallel": (check_parallel, tsv_inputs(b"5 mars 2024\t2024-03-05\r\nMarch 5, 2024\t2024-03-05")),
    "read_tagging": (check_tagging, tagging_inputs),
    "read_series": (check_series, series_inputs),
    "read_arrays": (check_arrays_mutation, arrays_inputs),
    "vocabulary_json": (check_vocabularies, vocabulary_inputs),
}


@pytest.fixture()
def scratch(tmp_path):
    """A directory in memory (tmpfs) when there is one: thousands of small files are written here, and an
    open() on a disk-backed /tmp costs a millisecond each."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    directory = Path(tempfile.mkdtemp(prefix="rnnkit-fuzz-", dir=shm))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("reader", list(READERS))
def test_fuzz_reader(scratch, reader, capsys):
    make_check, strategy = READERS[reader]
    count = run_fuzz(make_check(scratch), strategy, FUZZ_EXAMPLES)
    assert count >= FUZZ_EXAMPLES
    with capsys.disabled():
        print(f"\n[fuzz] {reader}: {count} inputs, only records or DataError")


@pytest.mark.parametrize("reader", list(READERS))
def test_fuzz_reader_quick(scratch, reader):
    make_check, strategy = READERS[reader]
    assert run_fuzz(make_check(scratch), strategy, QUICK_EXAMPLES) >= QUICK_EXAMPLES
