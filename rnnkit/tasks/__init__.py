"""The five tasks end to end: data -> model -> :class:`rnnkit.training.Trainer` -> run directory -> use.

Each task lives in its own module (``lm``, ``classify``, ``tag``, ``translate``, ``forecast``) and provides
the same four things, which the command line and the web server call:

``DEFAULTS: dict[str, Any]``
    every setting the task accepts with its default: data sources (``data``, ``valid``, ``test``), model
    settings (``cell``, ``hidden_size``, ...) and training settings (any field of
    :class:`rnnkit.training.TrainingConfig`). A setting not in ``DEFAULTS`` is an error
    (:func:`resolve_settings`).
``HELP: dict[str, str]``
    one line per task-specific setting, for ``rnnkit train TASK --help``.
``prepare(settings, run_dir) -> (task, run_config)``
    reads the data, builds vocabularies (saved into ``run_dir`` as JSON) and the model, and returns a
    :class:`rnnkit.training.TrainTask` plus what ``config.json`` must hold to rebuild the model.
``load(run_dir) -> Runner``
    rebuilds the trained model from ``config.json`` + ``model.safetensors`` (no code executed from the run
    directory). The runner has ``evaluate(source=None, split="test") -> dict[str, float]`` and the task's
    own verb: ``generate(prompt, ...)`` (lm), ``predict(lines) -> list[str]`` (classify, tag),
    ``translate(lines, beam_size=..., n_best=...)`` (translate), ``forecast(...)`` (forecast).
"""

from __future__ import annotations

import importlib
import tomllib
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from types import ModuleType
from typing import Any

from rnnkit.checkpoint import CONFIG_FILE, CheckpointError
from rnnkit.training import TrainingConfig

TASK_NAMES = ("lm", "classify", "tag", "translate", "forecast")
SPLITS = ("train", "valid", "test")
TRAINING_KEYS = tuple(f.name for f in fields(TrainingConfig))


def task_module(name: str) -> ModuleType:
    """The module implementing task ``name``; unknown names raise ValueError listing the known ones."""
    if name not in TASK_NAMES:
        raise ValueError(f"unknown task {name!r}; expected one of {', '.join(TASK_NAMES)}")
    return importlib.import_module(f"rnnkit.tasks.{name}")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a TOML file (``.toml``) or a YAML file (``.yaml``/``.yml``, needs PyYAML): a flat table
    of ``key = value``. Errors name the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read config file {path}: {err}") from None
    if path.suffix.lower() == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{path}: not valid TOML ({err})") from None
    elif path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"{path}: reading YAML needs PyYAML (pip install pyyaml), or use TOML") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML ({err})") from None
    else:
        raise ValueError(f"config file {path} must end in .toml, .yaml or .yml")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a table of settings, got {type(data).__name__}")
    return data


def resolve_settings(task: str, given: Mapping[str, Any], source: str = "settings") -> dict[str, Any]:
    """The task's ``DEFAULTS`` updated with ``given``; an unknown key or a value of the wrong type is a
    ValueError naming it (``source`` says where it came from, e.g. the config file's name)."""
    module = task_module(task)
    defaults: dict[str, Any] = dict(module.DEFAULTS)
    settings = dict(defaults)
    for key, value in given.items():
        if key not in defaults:
            raise ValueError(f"unknown setting {key!r} in {source} for task {task}; known settings: "
                             f"{', '.join(sorted(defaults))}")
        settings[key] = _coerce(key, value, defaults[key], source)
    return settings


def _coerce(key: str, value: Any, default: Any, source: str) -> Any:
    """Check ``value`` against the type of ``default`` (ints are accepted where floats are expected)."""
    if value is None or default is None:
        return value
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is tuple and isinstance(value, list):
        return tuple(value)
    if expected is bool and not isinstance(value, bool):
        raise ValueError(f"setting {key!r} in {source} must be true or false, got {value!r}")
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ValueError(f"setting {key!r} in {source} must be a {expected.__name__}, got {value!r}")
    return value


def training_settings(settings: Mapping[str, Any]) -> TrainingConfig:
    """The :class:`TrainingConfig` part of a task's settings (validated by TrainingConfig itself)."""
    return TrainingConfig(**{k: v for k, v in settings.items() if k in TRAINING_KEYS})


# A task trains until validation stops improving: ``patience`` evaluations without a gain end it, and
# ``--time-budget`` bounds it. ``epochs`` is only a cap, high enough never to be the reason a run stops
# while validation still improves.
EPOCHS_CAP = 100
PATIENCE = 5


def common_defaults(**overrides: Any) -> dict[str, Any]:
    """Defaults every task shares: data sources and the training settings (trained until validation stops
    improving: ``patience`` evaluations, ``epochs`` a high cap), with per-task overrides."""
    base: dict[str, Any] = {"data": "", "valid": None, "test": None, "cache_dir": None}
    base.update({f.name: f.default for f in fields(TrainingConfig)
                 if not callable(f.default) and f.name not in ("betas",)})
    base["betas"] = (0.9, 0.999)
    base["progress"] = None
    base["epochs"], base["patience"] = EPOCHS_CAP, PATIENCE
    base.update(overrides)
    return base


def _is_catalog(source: Any) -> bool:
    from rnnkit.data import is_catalog_name

    return isinstance(source, str) and is_catalog_name(source) and not Path(source).is_file()


def split_source(settings: Mapping[str, Any], split: str) -> str:
    """The source of ``split``: ``--valid``/``--test`` if given, else the same catalog dataset's split.
    A user's own file has no implicit validation/test split: ValueError says which flag to give."""
    explicit = settings.get(split)
    if explicit:
        return str(explicit)
    data = str(settings["data"])
    if _is_catalog(data):
        return data
    raise ValueError(f"--{split} FILE is needed when --data is a file ({data}); a catalog dataset brings its own "
                     f"{split} split")


def run_sources(settings: Mapping[str, Any]) -> dict[str, str | None]:
    """Where each split of a run comes from, as ``config.json`` records it under ``"data"``: the training
    source, the validation source (required), and the test source (``--test``, a catalog dataset's own test
    split, or None for a user's file without ``--test``). A ``--test`` that names nothing readable is refused
    now, not after training."""
    test = settings.get("test")
    if test and not (_is_catalog(str(test)) or Path(str(test)).is_file()):
        raise ValueError(f"--test {test}: no such file, and not a catalog dataset (rnnkit data list)")
    data = str(settings["data"])
    return {"train": data, "valid": split_source(settings, "valid"),
            "test": str(test) if test else (data if _is_catalog(data) else None)}


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
    source = data[split] if split in data else (train if _is_catalog(train) else None)
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
    if _is_catalog(source):
        return source, split or "test"
    if split is not None:
        raise ValueError(f"--split {split} selects a part of a catalog dataset or of the run's own sources; the "
                         f"file {source} is scored whole: drop --split, or drop --data to score the run's "
                         f"own {split} source")
    return source, None


def evaluate_test(run_dir: str | Path) -> tuple[str, dict[str, float]] | None:
    """Score a trained run on its test source, as ``rnnkit eval RUN_DIR`` would (the run directory's weights,
    reloaded), and log the result to ``metrics.jsonl`` as ``{"event": "test", "split": "test", "source",
    "metrics"}``. Returns ``(source, metrics)``, or None when the run has no test source."""
    from rnnkit.checkpoint import read_config
    from rnnkit.training import log_event

    config = read_config(run_dir)
    runner = task_module(str(config.get("task"))).load(run_dir)
    try:
        source, _ = runner.evaluation_source(None, "test")
    except NoSourceError:
        return None
    metrics = runner.evaluate(split="test")
    log_event(run_dir, {"event": "test", "split": "test", "source": source, "metrics": metrics})
    return source, metrics


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
