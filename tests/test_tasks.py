"""rnnkit.tasks: loading a run directory refuses vocabularies that do not fit the weights, and files that
config.json names outside the run directory; vocabularies are saved atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rnnkit import checkpoint as ckpt
from rnnkit.checkpoint import CheckpointError, save_checkpoint
from rnnkit.data import DataError, LabelSet, Vocab
from rnnkit.tasks import resolve_settings, run_file, task_module

# The vocabulary-like files of each task: (config.json key path, model config key).
VOCABULARIES = {
    "lm": [(("vocab",), "vocab_size")],
    "classify": [(("vocab",), "vocab_size"), (("labels",), "num_classes")],
    "tag": [(("vocab",), "vocab_size"), (("tags",), "num_tags")],
    "translate": [(("vocab", "source"), "source_vocab_size"), (("vocab", "target"), "target_vocab_size")],
}


def data_files(root: Path) -> dict[str, str]:
    text = root / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 20, encoding="utf-8")
    labelled = root / "labels.tsv"
    labelled.write_text("pos\tgood fine\nneg\tbad poor\n" * 10, encoding="utf-8")
    tagged = root / "tags.tsv"
    tagged.write_text("the\tDET\ndog\tNOUN\nruns\tVERB\n\na\tDET\ncat\tNOUN\n\n" * 5, encoding="utf-8")
    pairs = root / "pairs.tsv"
    pairs.write_text("ab\tba\nabc\tcba\nbca\tacb\n" * 5, encoding="utf-8")
    return {"lm": str(text), "classify": str(labelled), "tag": str(tagged), "translate": str(pairs)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """An untrained run directory per task: prepare() + the initial weights as the "best" checkpoint."""
    root = tmp_path_factory.mktemp("tasks")
    sources = data_files(root)
    runs = {}
    for task, source in sources.items():
        settings = resolve_settings(task, {"data": source, "valid": source, "hidden_size": 8})
        run_dir = root / task
        model_task, run_config = task_module(task).prepare(settings, run_dir)
        save_checkpoint(run_dir, model_task.model, run_config, name="best")
        runs[task] = run_dir
    return runs


def copy_run(run_dir: Path, to: Path) -> Path:
    to.mkdir()
    for path in run_dir.iterdir():
        if path.is_file():
            (to / path.name).write_bytes(path.read_bytes())
    return to


def config_value(config: dict, keys: tuple[str, ...]):
    for key in keys:
        config = config[key]
    return config


def other_size(path: Path) -> None:
    """Replace a vocabulary or label set by a valid one of another size (as if copied from another run)."""
    document = json.loads(path.read_text(encoding="utf-8"))
    if "labels" in document:
        LabelSet([*document["labels"], "EXTRA"]).save(path)
    elif document.get("format") == "rnnkit.vocab":
        Vocab([*document["tokens"], "zzzextra"] if document["level"] == "word" else [*document["tokens"], "\u00e9"],
              document["level"]).save(path)
    else:
        raise AssertionError(f"unexpected file {path}")


@pytest.mark.parametrize("task, keys, size_key", [(t, k, s) for t, files in VOCABULARIES.items() for k, s in files])
def test_a_vocabulary_of_another_size_is_refused_naming_the_file_and_both_sizes(runs, tmp_path, task, keys,
                                                                                size_key):
    module = task_module(task)
    module.load(runs[task])  # the untouched run loads
    run_dir = copy_run(runs[task], tmp_path / "run")
    config = ckpt.read_config(run_dir)
    path = run_dir / config_value(config, keys)
    other_size(path)
    expected = config["model"][size_key]
    with pytest.raises(CheckpointError, match=f"built for {size_key}={expected}") as caught:
        module.load(run_dir)
    assert str(path) in str(caught.value) and f"has {expected + 1} entries" in str(caught.value)


@pytest.mark.parametrize("task", list(VOCABULARIES))
def test_a_truncated_vocabulary_is_a_data_error_naming_the_file(runs, tmp_path, task):
    run_dir = copy_run(runs[task], tmp_path / "run")
    keys, _ = VOCABULARIES[task][0]
    path = run_dir / config_value(ckpt.read_config(run_dir), keys)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(DataError, match="invalid JSON") as caught:
        task_module(task).load(run_dir)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("name", ["../outside.json", "/etc/passwd", "link.json", "", 7])
def test_config_cannot_name_files_outside_the_run_directory(runs, tmp_path, name):
    run_dir = copy_run(runs["lm"], tmp_path / "run")
    outside = tmp_path / "outside.json"
    outside.write_text((run_dir / "vocab.json").read_text(encoding="utf-8"), encoding="utf-8")
    os.symlink(outside, run_dir / "link.json")  # a symlink that leads out of the run directory
    document = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    document["vocab"] = name
    (run_dir / "config.json").write_text(json.dumps(document), encoding="utf-8")
    expected = "must be a file name" if name in ("", 7) else "outside the run directory"
    with pytest.raises(CheckpointError, match=expected) as caught:
        task_module("lm").load(run_dir)
    assert str(run_dir / "config.json") in str(caught.value)


def test_run_file_accepts_subdirectories_and_inner_symlinks(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "v.json").write_text("{}")
    os.symlink(tmp_path / "sub" / "v.json", tmp_path / "inner.json")
    assert run_file(tmp_path, "sub/v.json", "vocabulary") == tmp_path / "sub" / "v.json"
    assert run_file(tmp_path, "inner.json", "vocabulary") == tmp_path / "inner.json"
    with pytest.raises(CheckpointError, match="outside"):
        run_file(tmp_path, "sub/../../x.json", "vocabulary")


def test_vocabulary_saves_are_atomic(tmp_path, monkeypatch):
    """A save that dies half-way (disk full, kill) leaves the previous vocabulary, not half of a new one."""
    path = tmp_path / "vocab.json"
    old = Vocab(["a", "b"], "word")
    old.save(path)
    labels = LabelSet(["x", "y"])
    labels.save(tmp_path / "labels.json")

    def half_then_fail(target, data):
        with open(target, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError("No space left on device")

    monkeypatch.setattr(ckpt, "_write_file", half_then_fail)
    with pytest.raises(OSError, match="No space"):
        Vocab(["a", "b", "c"], "word").save(path)
    with pytest.raises(OSError, match="No space"):
        LabelSet(["x", "y", "z"]).save(tmp_path / "labels.json")
    assert Vocab.load(path) == old and LabelSet.load(tmp_path / "labels.json") == labels
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.json", "vocab.json"]  # no temporary files left


class RisingThenFlat:
    """A regression whose validation score rises for ``rise`` evaluations, then stays flat."""

    primary_metric, higher_is_better = "score", True

    def __init__(self, rise: int, metric: str | None) -> None:
        import torch

        self.metric = metric or self.primary_metric  # the task's selection metric, rising too
        torch.manual_seed(0)
        self.model = torch.nn.Linear(2, 1)
        self.x, self.rise, self.evaluations = torch.randn(8, 2), rise, 0

    def train_batches(self, epoch, rng):
        return [[0, 1, 2, 3], [4, 5, 6, 7]]

    def loss(self, batch, carry):
        return self.model(self.x[batch]).pow(2).mean(), len(batch), None

    def evaluate(self, split):
        self.evaluations += 1
        return {self.metric: float(min(self.evaluations, self.rise)), "loss": 0.0}


@pytest.mark.parametrize("task", ["lm", "classify", "tag", "translate", "forecast"])
def test_default_settings_train_until_validation_stops_improving(tmp_path, task):
    """Issue 18: with its default settings a task trains while validation improves (here for 40 evaluations,
    one an epoch) and stops by patience, not after a fixed number of epochs; --time-budget bounds it."""
    from rnnkit.tasks import training_settings
    from rnnkit.training import Trainer

    settings = training_settings(resolve_settings(task, {"progress": False}))
    scripted = RisingThenFlat(rise=40, metric=settings.select_metric)
    result = Trainer(scripted, tmp_path, settings).train()
    assert result.stop_reason == "early_stopping"
    assert result.best_metric == 40.0 and scripted.evaluations == 40 + settings.patience
