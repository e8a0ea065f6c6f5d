"""The dataset catalog: registry, names and parameters, sources, and fetching package data from pip's index.

The tests marked slow download every package once (module-scoped fixture, into an empty cache under tmp)
from the package index, which is the only network these machines reach.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import zipfile
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
                     "copy-memory", "digits"):
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


# ----------------------------------------------------------------------------------------------------------
# Fetching a package: no code from it ever runs, and a file that is not the recorded one is never opened
# ----------------------------------------------------------------------------------------------------------

PLANTED_SETUP = """import pathlib
pathlib.Path({marker!r}).write_text("setup.py ran")
from setuptools import setup
setup(name="plantedpkg", version="1.0")
"""
PLANTED_BACKEND = """import pathlib
pathlib.Path({marker!r}).write_text("the build backend ran")
def get_requires_for_build_wheel(config_settings=None): return []
def prepare_metadata_for_build_wheel(directory, config_settings=None): raise SystemExit(1)
def build_wheel(directory, config_settings=None, metadata_directory=None): raise SystemExit(1)
"""
PLANTED_PYPROJECT = """[build-system]
requires = []
build-backend = "backend"
backend-path = ["."]
"""


def _add(archive: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


@pytest.fixture()
def planted(tmp_path, monkeypatch):
    """A local package index (PEP 503, a file:// URL) serving one sdist, plantedpkg 1.0, whose build step
    (setup.py, or its in-tree PEP 517 backend: either one) would write a marker file; pip's configuration is
    pointed at that index and nothing else. Yields (Package with the right SHA-256, marker path, index dir)."""
    marker = tmp_path / "marker"
    files = tmp_path / "index" / "files"
    files.mkdir(parents=True)
    sdist = files / "plantedpkg-1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as archive:
        _add(archive, "plantedpkg-1.0/setup.py", PLANTED_SETUP.format(marker=str(marker)))
        _add(archive, "plantedpkg-1.0/backend.py", PLANTED_BACKEND.format(marker=str(marker)))
        _add(archive, "plantedpkg-1.0/pyproject.toml", PLANTED_PYPROJECT)
        _add(archive, "plantedpkg-1.0/PKG-INFO", "Metadata-Version: 2.1\nName: plantedpkg\nVersion: 1.0\n")
        _add(archive, "plantedpkg-1.0/data/words.txt", "alpha beta\n")
    project = tmp_path / "index" / "simple" / "plantedpkg"
    project.mkdir(parents=True)
    digest = sha256_of(sdist)
    (project / "index.html").write_text(
        f'<html><body><a href="../../files/{sdist.name}#sha256={digest}">{sdist.name}</a></body></html>')
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no pip config file: only the variables below
    monkeypatch.setenv("PIP_INDEX_URL", (tmp_path / "index" / "simple").as_uri())
    for variable in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"):
        monkeypatch.delenv(variable, raising=False)
    return Package("plantedpkg==1.0", sdist.name, digest), marker, tmp_path / "index"


@pytest.fixture()
def nothing_opens_archives(monkeypatch):
    """Fails the test if tarfile or zipfile opens anything while it is active."""
    opened = []
    monkeypatch.setattr(tarfile, "open", lambda *a, **k: opened.append(a) or pytest.fail(f"tarfile.open{a}"))
    monkeypatch.setattr(zipfile, "ZipFile", lambda *a, **k: opened.append(a) or pytest.fail(f"ZipFile{a}"))
    return opened


def test_a_planted_package_is_fetched_without_running_any_of_its_code(planted, tmp_path):
    package, marker, _ = planted
    archive = fetch_package(package, tmp_path / "cache", quiet=True)
    assert archive == tmp_path / "cache" / "packages" / package.filename and sha256_of(archive) == package.sha256
    assert packages_module.read_member(archive, "plantedpkg-1.0/data/words.txt") == b"alpha beta\n"
    assert not marker.exists(), marker.read_text()


def test_a_hash_mismatch_is_refused_before_anything_reads_the_file(planted, tmp_path, nothing_opens_archives):
    package, marker, _ = planted
    wrong = Package(package.spec, package.filename, "0" * 64)
    with pytest.raises(DataError, match="SHA-256 mismatch") as info:
        fetch_package(wrong, tmp_path / "cache", quiet=True)
    assert package.sha256 in str(info.value) and "deleted unopened" in str(info.value)
    assert list((tmp_path / "cache" / "packages").iterdir()) == []  # neither the file nor a partial one
    assert not marker.exists() and nothing_opens_archives == []


def test_a_corrupt_cached_file_is_replaced_by_a_verified_download(planted, tmp_path):
    package, marker, _ = planted
    cached = tmp_path / "cache" / "packages" / package.filename
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated")
    assert sha256_of(fetch_package(package, tmp_path / "cache", quiet=True)) == package.sha256
    assert not marker.exists()


def test_find_links_directories_come_first_and_json_indexes_are_read(planted, tmp_path, monkeypatch):
    package, marker, index = planted
    monkeypatch.setenv("PIP_FIND_LINKS", str(index / "files"))
    monkeypatch.setenv("PIP_INDEX_URL", "https://127.0.0.1:9/nothing-here")  # never asked
    assert packages_module.locate(package, packages_module.pip_locations()) == \
        (index / "files" / package.filename).resolve().as_uri()
    listing = json.dumps({"meta": {"api-version": "1.1"}, "files": [
        {"filename": package.filename, "url": f"../../files/{package.filename}", "hashes": {}},
        {"filename": "other.whl", "url": "https://files.example/other.whl#sha256=00"}]}).encode()
    page = "https://index.example/simple/plantedpkg/"
    assert packages_module.index_files(listing, "application/vnd.pypi.simple.v1+json", page) == {
        package.filename: f"https://index.example/files/{package.filename}",
        "other.whl": "https://files.example/other.whl"}
    html = b'<a href="x/a-1.tar.gz#sha256=ab">a-1.tar.gz</a><a href="/b-2.whl"></a>'
    assert packages_module.index_files(html, "text/html", page) == {
        "a-1.tar.gz": "https://index.example/simple/plantedpkg/x/a-1.tar.gz", "b-2.whl": "https://index.example/b-2.whl"}
    assert not marker.exists()


def test_pip_configuration_decides_where_to_look(monkeypatch, tmp_path):
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "https://a.example/simple https://b.example/simple")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "7")
    monkeypatch.delenv("PIP_NO_INDEX", raising=False)
    locations = packages_module.pip_locations()
    assert locations.index_urls == ("https://mirror.example/simple", "https://a.example/simple",
                                    "https://b.example/simple")
    assert locations.find_links == (str(tmp_path),) and locations.timeout == 7.0
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    assert packages_module.pip_locations().index_urls == ()
    with pytest.raises(DataError, match=r"no package location offers x-1.whl .* not there"):
        packages_module.locate(Package("x==1", "x-1.whl", "0" * 64), packages_module.pip_locations())
    monkeypatch.setattr(packages_module.sys, "executable", str(tmp_path / "no-python"))  # pip cannot be asked
    assert packages_module.pip_locations().find_links == (str(tmp_path),)  # its variables still count
    monkeypatch.delenv("PIP_INDEX_URL")
    monkeypatch.delenv("PIP_NO_INDEX")
    assert packages_module.pip_locations().index_urls[0] == "https://pypi.org/simple"


def test_a_failed_download_is_a_data_error_naming_the_url(tmp_path):
    locations = packages_module.Locations(index_urls=())
    with pytest.raises(DataError, match="downloading file:///.*/missing.whl failed"):
        packages_module.download((tmp_path / "missing.whl").as_uri(), tmp_path, "0" * 64, locations, quiet=True)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------------------
# Package datasets: fetched once into an empty cache
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def package_cache(tmp_path_factory):
    """Fetch every package dataset into an empty cache, counting the downloads; yields (cache, URLs)."""
    cache = tmp_path_factory.mktemp("rnnkit-cache")
    calls: list[str] = []
    real_download = packages_module.download

    def counting_download(url, *args, **kwargs):
        calls.append(url)
        return real_download(url, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(packages_module, "download", counting_download)
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
    assert len(calls) == len(distinct) == 7  # statsmodels serves four datasets from one download
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
    assert len(calls) == before + 1 and calls[-1].endswith("/" + info.package.filename)
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
