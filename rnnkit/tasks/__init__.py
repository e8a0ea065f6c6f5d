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
``load(run_dir) -> TaskRunner``
    rebuilds the trained model from ``config.json`` + ``model.safetensors`` (no code executed from the run
    directory). Every runner is a :class:`rnnkit.tasks.runner.TaskRunner`: ``evaluate(source=None,
    split=None) -> dict[str, float]`` scores the run's own test source (or ``split``'s, or a file, or a
    catalog dataset's split), and the task adds its own verb: ``generate(prompt, ...)`` (lm),
    ``predict(lines) -> list[str]`` (classify, tag), ``translate(lines, beam_size=..., n_best=...)``
    (translate), ``forecast(...)`` (forecast). :func:`load_run` loads any run by the task its config names.

A run records where each split comes from (:func:`run_sources`): evaluation reads exactly those.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from rnnkit.tasks.runner import (
    SPLITS,
    TASK_NAMES,
    NoSourceError,
    TaskRunner,
    check_vocabulary_size,
    evaluate_test,
    evaluation_source,
    is_catalog_source,
    load_run,
    recorded_source,
    run_file,
    task_module,
)
from rnnkit.training import TrainingConfig

__all__ = ["TASK_NAMES", "SPLITS", "TRAINING_KEYS", "TRAINING_HELP", "TaskRunner", "NoSourceError", "task_module",
           "load_run", "read_config_file", "resolve_settings", "training_settings", "common_defaults",
           "jsonable_settings", "split_source", "run_sources", "recorded_source", "evaluation_source",
           "evaluate_test", "run_file", "check_vocabulary_size", "is_catalog_source"]

TRAINING_KEYS = tuple(f.name for f in fields(TrainingConfig))
# One line per training setting, for `rnnkit train TASK --help` (the formulas: rnnkit.training.TrainingConfig).
TRAINING_HELP: dict[str, str] = {
    "epochs": "at most this many passes over the training data (a cap: patience and --time-budget end runs)",
    "max_steps": "stop after this many optimiser steps",
    "time_budget": "stop after this many seconds of training (then evaluate once more)",
    "optimizer": "adam | adamw | sgd",
    "lr": "peak learning rate",
    "warmup_steps": "linear warm-up from 0 over this many steps",
    "decay": "after warm-up: none | step | plateau | cosine | inverse-sqrt (lr * sqrt(warmup / step))",
    "cosine_steps": "cosine decay: steps to reach min_lr (default: every epoch's steps, else max_steps)",
    "cosine_seconds": "cosine decay over seconds of training instead of steps (set it to the time budget: the "
                      "rate reaches min_lr as the budget ends, on any CPU)",
    "decay_gamma": "factor of step and plateau decay",
    "plateau_patience": "plateau decay: evaluations without improvement before the rate is cut",
    "accumulate": "batches per optimiser step (gradient accumulation: a batch N times larger)",
    "clip_grad_norm": "clip the gradient's global norm to this",
    "select_metric": "validation metric that picks the best checkpoint and drives early stopping and plateau "
                     "decay (default: the task's own)",
    "patience": "stop after this many evaluations without improvement of the selection metric (0: never)",
    "min_delta": "smallest change that counts as an improvement",
    "eval_every": "evaluate every N steps (and at each epoch's end)",
    "eval_on_stop": "evaluate once more when max_steps or the time budget stops a run between evaluations",
    "checkpoint_every": "write the resumable checkpoint every N steps (and at each epoch's end)",
    "keep_best": "keep the weights of the N best evaluations (checkpoints/best-STEP) for `rnnkit average --best`",
    "keep_last": "keep the weights of the N latest checkpoints (checkpoints/step-STEP) for `rnnkit average --last`",
    "log_samples": "validation examples with the model's outputs logged at each evaluation (metrics.jsonl, "
                   "progress output)",
}


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


def jsonable_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings as ``config.json`` holds them (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}


def split_source(settings: Mapping[str, Any], split: str) -> str:
    """The source of ``split``: ``--valid``/``--test`` if given, else the same catalog dataset's split.
    A user's own file has no implicit validation/test split: ValueError says which flag to give."""
    explicit = settings.get(split)
    if explicit:
        return str(explicit)
    data = str(settings["data"])
    if is_catalog_source(data):
        return data
    raise ValueError(f"--{split} FILE is needed when --data is a file ({data}); a catalog dataset brings its own "
                     f"{split} split")


def run_sources(settings: Mapping[str, Any]) -> dict[str, str | None]:
    """Where each split of a run comes from, as ``config.json`` records it under ``"data"``: the training
    source, the validation source (required), and the test source (``--test``, a catalog dataset's own test
    split, or None for a user's file without ``--test``). A ``--test`` that names nothing readable is refused
    now, not after training."""
    test = settings.get("test")
    if test and not (is_catalog_source(str(test)) or Path(str(test)).is_file()):
        raise ValueError(f"--test {test}: no such file, and not a catalog dataset (rnnkit data list)")
    data = str(settings["data"])
    return {"train": data, "valid": split_source(settings, "valid"),
            "test": str(test) if test else (data if is_catalog_source(data) else None)}


