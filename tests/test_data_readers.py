"""Readers of rnnkit.data.readers on well-formed and malformed files written by the tests."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

from rnnkit.data import (
    DataError,
    DataWarning,
    LabeledText,
    SentencePair,
    SequenceArrays,
    TaggedSentence,
    read,
    read_arrays,
    read_classification,
    read_parallel,
    read_series,
    read_tagging,
    read_text,
    write_arrays,
    write_classification,
    write_parallel,
    write_series,
    write_tagging,
)


def write(tmp_path, name: str, content: str | bytes):
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def assert_located(err: DataError, path, line: int | None, *fragments: str) -> None:
    """The message names the file, the line (if any) and what was wrong."""
    message = str(err)
    assert str(path) in message
    if line is not None:
        assert f"line {line}:" in message
        assert err.line == line
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


# ----------------------------------------------------------------------------------------------------------
# Common ground: empty files, line ends, BOM, encoding
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reader", [read_text, read_classification, read_tagging, read_parallel, read_series])
def test_empty_file_is_a_clear_error(tmp_path, reader):
    path = write(tmp_path, "empty.txt", b"")
    with pytest.raises(DataError) as info:
        reader(path)
    assert_located(info.value, path, None, "empty")


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_parallel(tmp_path / "nope.tsv")


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


def test_crlf_bom_and_no_final_newline_read_like_plain_lf(tmp_path):
    plain = write(tmp_path, "plain.tsv", "pos\tgood film\nneg\tbad film\n")
    windows = write(tmp_path, "windows.tsv", b"\xef\xbb\xbfpos\tgood film\r\nneg\tbad film")
    expected = [LabeledText("good film", "pos"), LabeledText("bad film", "neg")]
    assert read_classification(plain) == expected
    assert read_classification(windows) == expected  # BOM stripped, CRLF handled, last line without newline


def test_text_crlf_becomes_lf_and_bom_is_dropped(tmp_path):
    path = write(tmp_path, "corpus.txt", b"\xef\xbb\xbfTo be,\r\nor not.\r\n")
    text = read_text(path)
    assert text == "To be,\nor not.\n"
    assert text.report.lines == 2
    assert read_text(write(tmp_path, "no_newline.txt", "abc\ndef")) == "abc\ndef"


def test_invalid_utf8_names_line_and_byte_offset(tmp_path):
    content = b"pos\tfine\nneg\tbad \xff byte\n"
    path = write(tmp_path, "latin.tsv", content)
    with pytest.raises(DataError) as info:
        read_classification(path)
    offset = content.index(b"\xff")
    assert_located(info.value, path, 2, "invalid UTF-8", f"byte offset {offset}", "0xff")


def test_invalid_utf8_offset_counts_the_bom(tmp_path):
    content = b"\xef\xbb\xbfabc\n\xc3(x\n"
    path = write(tmp_path, "bom.txt", content)
    with pytest.raises(DataError) as info:
        read_text(path)
    offset = content.index(b"\xc3")  # 3 BOM bytes + "abc\n"
    assert offset == 7
    assert_located(info.value, path, 2, f"byte offset {offset}")


def test_whitespace_only_text_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no text"):
        read_text(write(tmp_path, "blank.txt", "\n  \n\n"))


# ----------------------------------------------------------------------------------------------------------
# Classification
# ----------------------------------------------------------------------------------------------------------


def test_tsv_wrong_column_count_and_empty_fields(tmp_path):
    path = write(tmp_path, "cls.tsv", "pos\tgood\nneg\tbad\textra\n")
    with pytest.raises(DataError) as info:
        read_classification(path)
    assert_located(info.value, path, 2, "expected 2 tab-separated fields", "found 3")

    path = write(tmp_path, "one.tsv", "pos\tgood\njust text without a label\n")
    with pytest.raises(DataError) as info:
        read_classification(path)
    assert_located(info.value, path, 2, "found 1")

    path = write(tmp_path, "empty_label.tsv", "pos\tgood\n\n \tbad\n")
    with pytest.raises(DataError) as info:
        read_classification(path)
    assert_located(info.value, path, 3, "empty label")


def test_lenient_mode_counts_and_names_skipped_lines(tmp_path):
    content = b"pos\tgood\nbroken line\nneg\tbad\n\xff\tx\nneg\t\npos\tfine\n"
    path = write(tmp_path, "messy.tsv", content)
    with pytest.warns(DataWarning, match=re.escape("skipped 3 malformed lines (2, 4, 5)")):
        records = read_classification(path, on_error="skip")
    assert records == [LabeledText("good", "pos"), LabeledText("bad", "neg"), LabeledText("fine", "pos")]
    report = records.report
    assert report.n_skipped == 3
    assert report.skipped_lines == [2, 4, 5]
    assert "found 1" in report.skipped[0].reason
    assert "invalid UTF-8" in report.skipped[1].reason
    assert "empty text" in report.skipped[2].reason
    assert report.records == 3 and report.lines == 6


def test_strict_mode_has_no_warning_and_an_empty_report(tmp_path):
    path = write(tmp_path, "ok.tsv", "pos\tgood\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        records = read_classification(path)
    assert records.report.n_skipped == 0 and records.report.records == 1


def test_lenient_mode_with_nothing_valid_still_raises(tmp_path):
    path = write(tmp_path, "bad.tsv", "a\nb\n")
    with pytest.raises(DataError, match="no valid records"):
        read_classification(path, on_error="skip")


def test_unknown_on_error_value_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="on_error"):
        read_classification(write(tmp_path, "x.tsv", "a\tb\n"), on_error="ignore")


def test_csv_with_text_and_label_columns(tmp_path):
    content = 'id,text,label\n1,"Good, really good",pos\n2,"two\nlines",neg\r\n3,plain,neg'
    path = write(tmp_path, "reviews.csv", content)
    records = read_classification(path)
    assert records == [
        LabeledText("Good, really good", "pos"),
        LabeledText("two\nlines", "neg"),
        LabeledText("plain", "neg"),
    ]


def test_csv_missing_column_lists_the_header(tmp_path):
    path = write(tmp_path, "bad.csv", "category,text\nfresh,nice\n")
    with pytest.raises(DataError) as info:
        read_classification(path)
    assert_located(info.value, path, 1, "missing column 'label'", "category, text")


def test_csv_errors_name_the_line_a_record_starts_on(tmp_path):
    path = write(tmp_path, "bad.csv", 'text,label\n"multi\nline",pos\nonly one field\n')
    with pytest.raises(DataError) as info:
        read_classification(path)
    assert_located(info.value, path, 4, "expected 2 comma-separated fields", "found 1")

    path = write(tmp_path, "empty.csv", "text,label\nfine,pos\n,neg\n")
    with pytest.raises(DataError) as info:
        read_classification(path)
    assert_located(info.value, path, 3, "empty text")


# ----------------------------------------------------------------------------------------------------------
# Tagging
# ----------------------------------------------------------------------------------------------------------

CONLLU = (
    "# sent_id = 1\n"
    "# text = Dün gitmedim.\n"
    "1-2\tgitmedim\t_\t_\t_\t_\t_\t_\t_\t_\n"
    "1\tgit\tgit\tVERB\t_\t_\t0\troot\t_\t_\n"
    "2\tmedim\t_\tAUX\t_\t_\t1\taux\t_\t_\n"
    "2.1\tgone\t_\t_\t_\t_\t_\t_\t_\t_\n"
    "3\t.\t.\tPUNCT\t_\t_\t1\tpunct\t_\t_\n"
    "\n"
    "1\tEvet\tevet\tINTJ\t_\t_\t0\troot\t_\t_\n"
)


def test_conllu_skips_comments_ranges_and_empty_nodes(tmp_path):
    path = write(tmp_path, "tiny.conllu", CONLLU)
    sentences = read_tagging(path)
    assert sentences == [
        TaggedSentence(["git", "medim", "."], ["VERB", "AUX", "PUNCT"]),
        TaggedSentence(["Evet"], ["INTJ"]),
    ]
    sniffed = read_tagging(write(tmp_path, "tiny.txt", CONLLU))  # recognised without the .conllu suffix
    assert sniffed == sentences


def test_conllu_malformed_lines(tmp_path):
    bad_count = CONLLU.replace("3\t.\t.\tPUNCT\t_\t_\t1\tpunct\t_\t_", "3\t.\t.\tPUNCT")
    path = write(tmp_path, "a.conllu", bad_count)
    with pytest.raises(DataError) as info:
        read_tagging(path)
    assert_located(info.value, path, 7, "expected 10 tab-separated fields (CoNLL-U), found 4")

    no_upos = CONLLU.replace("1\tEvet\tevet\tINTJ", "1\tEvet\tevet\t_")
    path = write(tmp_path, "b.conllu", no_upos)
    with pytest.raises(DataError) as info:
        read_tagging(path)
    assert_located(info.value, path, 9, "missing UPOS")

    bad_id = CONLLU.replace("1\tEvet", "x\tEvet")
    path = write(tmp_path, "c.conllu", bad_id)
    with pytest.raises(DataError) as info:
        read_tagging(path)
    assert_located(info.value, path, 9, "bad CoNLL-U ID 'x'")


def test_token_tag_lines_with_blank_line_between_sentences(tmp_path):
    path = write(tmp_path, "ner.tsv", "John\tB-PER\nSmith\tI-PER\nruns\tO\n\n\nParis\tB-LOC\r\n")
    assert read_tagging(path) == [
        TaggedSentence(["John", "Smith", "runs"], ["B-PER", "I-PER", "O"]),
        TaggedSentence(["Paris"], ["B-LOC"]),
    ]


def test_token_tag_errors_and_lenient_drop_whole_sentence(tmp_path):
    content = "a\tX\nb\tY\tZ\n\nc\tX\nd\t\n\ne\tY\n"
    path = write(tmp_path, "tags.tsv", content)
    with pytest.raises(DataError) as info:
        read_tagging(path)
    assert_located(info.value, path, 2, "expected 2 tab-separated fields (token<TAB>tag), found 3")
    with pytest.warns(DataWarning):
        kept = read_tagging(path, on_error="skip")
    assert kept == [TaggedSentence(["e"], ["Y"])]  # sentences with a bad line are dropped whole
    assert kept.report.skipped_lines == [2, 5]
    assert "empty tag" in kept.report.skipped[1].reason


# ----------------------------------------------------------------------------------------------------------
# Parallel
# ----------------------------------------------------------------------------------------------------------


def test_parallel_reads_pairs_and_rejects_bad_lines(tmp_path):
    path = write(tmp_path, "pairs.tsv", "5 mars 2024\t2024-03-05\r\nMarch 5, 2024\t2024-03-05")
    assert read_parallel(path) == [SentencePair("5 mars 2024", "2024-03-05"),
                                   SentencePair("March 5, 2024", "2024-03-05")]
    path = write(tmp_path, "bad.tsv", "a\tb\nc\td\te\n")
    with pytest.raises(DataError) as info:
        read_parallel(path)
    assert_located(info.value, path, 2, "source<TAB>target", "found 3")
    path = write(tmp_path, "empty_target.tsv", "a\tb\nc\t  \n")
    with pytest.raises(DataError) as info:
        read_parallel(path)
    assert_located(info.value, path, 2, "empty target")


# ----------------------------------------------------------------------------------------------------------
# Series
# ----------------------------------------------------------------------------------------------------------


def test_series_reads_the_named_column(tmp_path):
    path = write(tmp_path, "s.csv", "year,volume,other\r\n1871,1120,x\r\n1872,1160.5,y\r\n1873,963,z")
    series = read_series(path, column="volume")
    np.testing.assert_array_equal(series.values, [1120.0, 1160.5, 963.0])
    assert series.time == ["1871", "1872", "1873"] and series.name == "volume"


def test_series_errors(tmp_path):
    path = write(tmp_path, "s.csv", "year,volume\n1871,1120\n1872,abc\n")
    with pytest.raises(DataError) as info:
        read_series(path, column="volume")
    assert_located(info.value, path, 3, "non-numeric value 'abc'", "'volume'")

    with pytest.raises(DataError) as info:
        read_series(path, column="flow")
    assert_located(info.value, path, 1, "missing column 'flow'", "year, volume")

    with pytest.raises(DataError, match="choose the value column"):
        read_series(path)

    gap = write(tmp_path, "gap.csv", "t,v\n1,1.0\n2,\n3,3.0\n")
    with pytest.raises(DataError) as info:
        read_series(gap, column="v")
    assert_located(info.value, gap, 3, "empty value")

    short = write(tmp_path, "short.csv", "t,v\n1,1.0\n2\n")
    with pytest.raises(DataError) as info:
        read_series(short, column="v")
    assert_located(info.value, short, 3, "expected 2 comma-separated fields")

    infinite = write(tmp_path, "inf.csv", "v\n1\ninf\n")
    with pytest.raises(DataError, match="non-numeric"):
        read_series(infinite)


def test_series_interpolates_gaps_when_asked(tmp_path):
    path = write(tmp_path, "gap.csv", "t,v\n1,\n2,2.0\n3,\n4,\n5,8.0\n6,\n")
    series = read_series(path, column="v", missing="interpolate")
    np.testing.assert_allclose(series.values, [2.0, 2.0, 4.0, 6.0, 8.0, 8.0])


def test_series_lenient_skips_bad_rows(tmp_path):
    path = write(tmp_path, "s.csv", "v\n1\nx\n3\n")
    with pytest.warns(DataWarning):
        series = read_series(path, on_error="skip")
    np.testing.assert_array_equal(series.values, [1.0, 3.0])
    assert series.report.skipped_lines == [3]


# ----------------------------------------------------------------------------------------------------------
# Writers round-trip, arrays, dispatch
# ----------------------------------------------------------------------------------------------------------


def test_writers_round_trip_through_readers(tmp_path):
    labeled = [LabeledText("ça va", "pos"), LabeledText("non", "neg")]
    write_classification(tmp_path / "c.tsv", labeled)
    assert read_classification(tmp_path / "c.tsv") == labeled
    tagged = [TaggedSentence(["a", "b"], ["X", "Y"]), TaggedSentence(["c"], ["Z"])]
    write_tagging(tmp_path / "t.tsv", tagged)
    assert read_tagging(tmp_path / "t.tsv") == tagged
    pairs = [SentencePair("x y", "y x")]
    write_parallel(tmp_path / "p.tsv", pairs)
    assert read_parallel(tmp_path / "p.tsv") == pairs
    values = np.array([0.1, 2.5e-8, 3.0])
    write_series(tmp_path / "s.csv", values, ["a", "b", "c"])
    np.testing.assert_array_equal(read_series(tmp_path / "s.csv", column="value").values, values)
    with pytest.raises(ValueError, match="tab or newline"):
        write_parallel(tmp_path / "bad.tsv", [SentencePair("a\tb", "c")])


def test_arrays_round_trip_and_errors(tmp_path):
    arrays = SequenceArrays(np.arange(12, dtype=np.float32).reshape(2, 3, 2), np.array([0, 1]))
    write_arrays(tmp_path / "a.npz", arrays)
    back = read_arrays(tmp_path / "a.npz")
    np.testing.assert_array_equal(back.inputs, arrays.inputs)
    np.testing.assert_array_equal(back.targets, arrays.targets)
    junk = write(tmp_path, "junk.npz", b"not a zip")
    with pytest.raises(DataError, match="junk.npz"):
        read_arrays(junk)
    np.savez(tmp_path / "other.npz", x=np.zeros(2))
    with pytest.raises(DataError, match="'inputs' and 'targets'"):
        read_arrays(tmp_path / "other.npz")


def test_read_dispatches_by_task(tmp_path):
    path = write(tmp_path, "p.tsv", "a\tb\n")
    assert read(path, "translate") == [SentencePair("a", "b")]
    assert read(path, "classify") == [LabeledText("b", "a")]
    with pytest.raises(ValueError, match="unknown task 'speak'"):
        read(path, "speak")


# ----------------------------------------------------------------------------------------------------------
# Regressions found by fuzzing (tests/test_data_readers_fuzz.py)
# ----------------------------------------------------------------------------------------------------------


def test_conllu_with_a_bom_is_still_recognised_as_conllu(tmp_path):
    path = write(tmp_path, "bom.txt", b"\xef\xbb\xbf" + CONLLU.encode("utf-8"))
    assert read_tagging(path) == read_tagging(write(tmp_path, "plain.txt", CONLLU))


def test_a_csv_field_longer_than_pythons_default_limit_is_data(tmp_path):
    long_text = "word " * 40_000  # 200,000 characters: over csv's default field_size_limit (131,072)
    path = write(tmp_path, "long.csv", f'text,label\n"{long_text}",pos\nshort,neg\n')
    assert read_classification(path) == [LabeledText(long_text.strip(), "pos"), LabeledText("short", "neg")]
    series = write(tmp_path, "long_series.csv", "v,note\n1," + "x" * 200_000 + "\n2,y\n")
    np.testing.assert_array_equal(read_series(series, column="v").values, [1.0, 2.0])


@pytest.mark.parametrize("content, expected", [
    ("npy", "holds a single .npy array"),
    (b"PK\x03\x04" + b"\x00" * 100, "not a readable .npz"),
    (b"\x93NUMPY\x01\x00" + b"\xff" * 50, "not a readable .npz"),
    ("scalar", "'inputs' must be an array with one entry per example"),
    ("strings", "'targets' must be numeric, found dtype <U"),
    ("empty", "no examples"),
    ("truncated", "not a readable .npz"),
])
def test_damaged_or_foreign_npz_files_are_data_errors(tmp_path, content, expected):
    path = tmp_path / "arrays.npz"
    if content == "npy":
        with open(path, "wb") as f:
            np.save(f, np.zeros(3))
    elif content == "scalar":
        np.savez(path, inputs=np.array(3.0), targets=np.array(2.0))
    elif content == "strings":
        np.savez(path, inputs=np.zeros((1, 2)), targets=np.array(["a"]))
    elif content == "empty":
        np.savez(path, inputs=np.zeros((0, 2)), targets=np.zeros(0))
    elif content == "truncated":
        write_arrays(path, SequenceArrays(np.arange(600, dtype=np.float32).reshape(3, 100, 2), np.arange(3)))
        path.write_bytes(path.read_bytes()[:-120])
    else:
        path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(expected)) as info:
        read_arrays(path)
    assert_located(info.value, path, None)


def test_lenient_tagging_drops_a_sentence_with_an_undecodable_line_whole(tmp_path):
    """An invalid UTF-8 line is a malformed line like any other: its sentence goes, not just its token."""
    content = b"a\tX\nb\xff\tY\nc\tZ\n\nd\tX\n\ne\tY\nf\xfe\tZ\n"
    path = write(tmp_path, "tags.tsv", content)
    with pytest.warns(DataWarning):
        kept = read_tagging(path, on_error="skip")
    assert kept == [TaggedSentence(["d"], ["X"])]
    assert kept.report.skipped_lines == [2, 8]


def test_lenient_csv_drops_a_quoted_record_that_spans_an_undecodable_line(tmp_path):
    """Skipping the bad line alone would keep the record with part of its text missing."""
    path = write(tmp_path, "cut.csv", b'text,label\n"first part\nbad \xff line\nlast part",pos\nok,neg\n')
    with pytest.warns(DataWarning):
        records = read_classification(path, on_error="skip")
    assert records == [LabeledText("ok", "neg")]
    assert records.report.skipped_lines == [2, 3]  # in file order: the record, then the line inside it
    assert "spans a line that is not valid UTF-8" in records.report.skipped[0].reason
