"""A trained run loaded from its directory: :class:`TaskRunner`, the base of the five tasks' runners.

Loading a run is the same for every task: read ``config.json``, check it is this task's, build the model from
its ``"model"`` entry, load the files it names (vocabularies, label sets; each must stay inside the run
directory and fit the weights), load ``model.safetensors`` (nothing executes code). Evaluating is the same too:
pick what to read (the run's own source of a split, as ``config.json`` records it, or a file, or a catalog
dataset's split), read it, score it. A task's runner says only what is its own: how to build its model, which
files it loads, how it scores, and its verb (``generate``, ``predict``, ``translate``, ``forecast``).

Example::

    runner = load_run("runs/rt")                 # the task's runner, from config.json
    runner.evaluate()                            # the run's test source
    runner.evaluate(split="valid")               # its validation source
    runner.evaluate("more.tsv")                  # a file, read whole
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

from torch import nn

from rnnkit.checkpoint import CONFIG_FILE, CheckpointError, load_weights, read_config

SPLITS = ("train", "valid", "test")
TASK_NAMES = ("lm", "classify", "tag", "translate", "forecast")


def task_module(name: str) -> ModuleType:
    """The module implementing task ``name`` (``rnnkit.tasks.<name>``); unknown names raise ValueError listing
    the known ones."""
    if name not in TASK_NAMES:
        raise ValueError(f"unknown task {name!r}; expected one of {', '.join(TASK_NAMES)}")
    return importlib.import_module(f"rnnkit.tasks.{name}")


def is_catalog_source(source: Any) -> bool:
    """Whether ``source`` names a catalog dataset (and no file of that name exists)."""
    from rnnkit.data import is_catalog_name

    return isinstance(source, str) and is_catalog_name(source) and not Path(source).is_file()


class NoSourceError(ValueError):
    """A run asked to score a split it has no source for (a file run trained without ``--test``)."""


def recorded_source(run_dir: str | Path, config: Mapping[str, Any], split: str) -> str:
    """The source a run recorded for ``split`` (``config["data"][split]``).

    Runs written before the test source was recorded hold only train (and valid): a catalog dataset still
    has its own split; a file does not. :class:`NoSourceError` says how to give one.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    data = config.get("data") if isinstance(config.get("data"), Mapping) else {}
    train = data.get("train")
    source = data[split] if split in data else (train if is_catalog_source(train) else None)
    if not isinstance(source, str) or not source:
        raise NoSourceError(f"the run {run_dir} has no {split} source: it was trained on the file {train} without "
                            f"--{split} FILE; score a file with `rnnkit eval {run_dir} --data FILE`")
    return source


def evaluation_source(run_dir: str | Path, config: Mapping[str, Any], source: str | None,
                      split: str | None) -> tuple[str, str | None]:
    """What ``evaluate(source, split)`` reads: ``(source, split)``, split None for a file read whole.

    * no ``source``: the run's own source of ``split`` (default "test") as recorded in ``config.json``;
    * a catalog dataset: its ``split`` (default "test");
    * a file: the whole file. A ``split`` beside it would be ignored, so it is refused.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if source is None:
        split = split or "test"
        return recorded_source(run_dir, config, split), split
    if is_catalog_source(source):
        return source, split or "test"
    if split is not None:
        raise ValueError(f"--split {split} selects a part of a catalog dataset or of the run's own sources; the "
                         f"file {source} is scored whole: drop --split, or drop --data to score the run's "
                         f"own {split} source")
    return source, None


def run_file(run_dir: str | Path, name: Any, what: str) -> Path:
    """``RUN_DIR/name`` for a file that ``config.json`` names (a vocabulary, a label set).

    The name comes from a file that may not be trustworthy, so it must stay inside the run directory: an
    absolute path, ``..`` or a symlink that leads outside is a :class:`CheckpointError`.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG_FILE
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"{config_path}: the {what} file must be a file name, got {name!r}")
    root = run_dir.resolve()
    try:
        path = (run_dir / name).resolve()
    except (OSError, RuntimeError, ValueError) as err:  # symlink loops, NUL bytes
        raise CheckpointError(f"{config_path}: bad {what} file name {name!r} ({err})") from None
    if Path(name).is_absolute() or not path.is_relative_to(root):
        raise CheckpointError(f"{config_path}: the {what} file {name!r} is outside the run directory {run_dir}; "
                              f"a run directory must hold its own files")
    return run_dir / name


def check_vocabulary_size(path: str | Path, found: int, model_config: Mapping[str, Any], key: str,
                          what: str = "vocabulary") -> None:
    """Refuse a vocabulary (or label set) whose size is not the one the model's weights were built for.

    Such a pair loads, but encodes ids the embedding does not have or decodes ids the vocabulary lacks; the
    usual cause is a file copied from another run. :class:`CheckpointError` names the file and both sizes.
    """
    expected = model_config.get(key) if isinstance(model_config, Mapping) else None
    if expected != found:
        raise CheckpointError(f"{path}: the {what} has {found} entries but the model in {CONFIG_FILE} was built for "
                              f"{key}={expected!r}; it belongs to another run, or one of the two files was edited")


class TaskRunner:
    """A trained run of one task, loaded from ``run_dir``; subclasses say what is their task's own.

    A subclass sets ``task`` (its name) and ``model_kind`` (for messages) and defines:

    * ``build_model(model_config) -> nn.Module``: the untrained model from ``config.json``'s ``"model"``;
    * ``load_files()``: the vocabularies and label sets the run names (:meth:`load_file`), before the weights;
    * ``score(data, name, **options) -> dict[str, float]``: the metrics on what :meth:`read` returned;
    * its verb (``generate``, ``predict``, ``translate``, ``forecast``).

    Attributes: ``run_dir``, ``config`` (``config.json``), ``settings`` (the run's settings), ``model`` (in
    eval mode, with the run's weights).
    """

    task: ClassVar[str] = ""
    model_kind: ClassVar[str] = "a model"

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.config = read_config(self.run_dir)
        if self.config.get("task") != self.task:
            raise ValueError(f"{self.run_dir}: config.json is for task {self.config.get('task')!r}, not {self.task}")
        self.settings: dict[str, Any] = self.config.get("settings", {})
        try:
            self.model = self.build_model(self.config["model"])
        except (KeyError, TypeError) as err:
            raise ValueError(f"{self.run_dir / CONFIG_FILE}: the model config does not describe {self.model_kind} "
                             f"({err})") from None
        self.load_files()
        load_weights(self.run_dir, self.model)
        self.model.eval()

    # -- what a task defines ---------------------------------------------------------------------------

    def build_model(self, model_config: Any) -> nn.Module:
        raise NotImplementedError

    def load_files(self) -> None:
        """Load the vocabularies and label sets the run names (none by default)."""

    def score(self, data: Any, name: str, **options: Any) -> dict[str, float]:
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------------------

    def load_file(self, name: Any, what: str, load: Callable[[Path], Any], size_key: str | None = None) -> Any:
        """``load(RUN_DIR/name)`` for a file ``config.json`` names (it must stay inside the run directory); with
        ``size_key``, its length must be the model config's ``size_key`` (:func:`check_vocabulary_size`)."""
        path = run_file(self.run_dir, name, what)
        loaded = load(path)
        if size_key is not None:
            check_vocabulary_size(path, len(loaded), self.config["model"], size_key, what)
        return loaded

    def evaluation_source(self, source: str | None = None, split: str | None = None) -> tuple[str, str | None]:
        """What :meth:`evaluate` reads: ``(source, split)`` (see :func:`evaluation_source`)."""
        return evaluation_source(self.run_dir, self.config, source, split)

    def read(self, source: str, split: str | None) -> Any:
        """The records of ``source`` (a file, read whole when ``split`` is None, or a catalog dataset's split)."""
        from rnnkit.data import load_source

        return load_source(source, self.task, split or "test", cache_dir=self.settings.get("cache_dir"), quiet=True)

    def evaluate(self, source: str | None = None, split: str | None = None, **options: Any) -> dict[str, float]:
        """The task's metrics on ``source`` (a file, read whole, or a catalog dataset's ``split``); by default
        on the run's own ``split`` source as ``config.json`` records it (default split: test). ``options`` go
        to the task's scoring (e.g. ``beam_size`` for translation)."""
        data, split = self.evaluation_source(source, split)
        return self.score(self.read(data, split), f"{data} ({split or 'file'})", **options)


def load_run(run_dir: str | Path) -> TaskRunner:
    """The runner of the run in ``run_dir``, for the task its ``config.json`` names."""
    task = read_config(run_dir).get("task")
    if not isinstance(task, str):
        raise ValueError(f"{Path(run_dir) / CONFIG_FILE} names no task")
    return task_module(task).load(run_dir)


def evaluate_test(run_dir: str | Path) -> tuple[str, dict[str, float]] | None:
    """Score a trained run on its test source, as ``rnnkit eval RUN_DIR`` would (the run directory's weights,
    reloaded), and log the result to ``metrics.jsonl`` as ``{"event": "test", "split": "test", "source",
    "metrics"}``. Returns ``(source, metrics)``, or None when the run has no test source."""
    from rnnkit.training import log_event

    runner = load_run(run_dir)
    try:
        source, _ = runner.evaluation_source(None, "test")
    except NoSourceError:
        return None
    metrics = runner.evaluate(split="test")
    log_event(run_dir, {"event": "test", "split": "test", "source": source, "metrics": metrics})
    return source, metrics
