"""Tests of rnnkit.tasks.classify: prepare -> Trainer -> load -> evaluate / predict, on tiny files."""

import json
import time

import pytest
from sklearn.metrics import f1_score

from rnnkit.tasks import classify, resolve_settings, training_settings
from rnnkit.training import Trainer

POSITIVE = ["good fun film", "a great and good movie", "great fun", "good acting , great story", "fun fun fun"]
NEGATIVE = ["bad dull film", "a boring and bad movie", "dull", "bad acting , awful story", "awful awful"]


def _write(path, pairs):
    path.write_text("".join(f"{label}\t{text}\n" for label, text in pairs), encoding="utf-8")


def _settings(tmp_path, **overrides):
    pairs = [("pos", t) for t in POSITIVE] * 6 + [("neg", t) for t in NEGATIVE] * 4
    _write(tmp_path / "train.tsv", pairs)
    _write(tmp_path / "valid.tsv", [("pos", "great good film"), ("neg", "bad dull movie"), ("pos", "fun")])
    given = {"data": str(tmp_path / "train.tsv"), "valid": str(tmp_path / "valid.tsv"), "hidden_size": 8,
             "embedding_size": 8, "batch_size": 8, "epochs": 15, "lr": 2e-2, "dropout": 0.0, "min_freq": 1,
             "progress": False, "patience": None}
    given.update(overrides)
    return resolve_settings("classify", given)


def _train(settings, run_dir):
    task, run_config = classify.prepare(settings, run_dir)
    Trainer(task, run_dir, training_settings(settings), run_config=run_config).train()
    return task


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
def test_round_trip(tmp_path, pooling):
    run = tmp_path / "run"
    _train(_settings(tmp_path, pooling=pooling), run)
    runner = classify.load(run)
    assert runner.predict(["good great fun", "awful boring bad"]) == ["pos", "neg"]
    assert runner.predict([]) == []
    metrics = runner.evaluate(str(tmp_path / "valid.tsv"))
    assert metrics["accuracy"] == 1.0 and metrics["examples"] == 3
    # The majority label of training ("pos", 30 of 50) is right on 2 of the 3 validation texts.
    assert metrics["majority_accuracy"] == pytest.approx(2 / 3)


def test_metrics_against_scikit_learn(tmp_path):
    run = tmp_path / "run"
    _train(_settings(tmp_path, max_steps=3), run)  # barely trained: mistakes are likely
    runner = classify.load(run)
    lines = POSITIVE + NEGATIVE
    gold = ["pos"] * 5 + ["neg"] * 5
    _write(tmp_path / "test.tsv", list(zip(gold, lines, strict=True)))
    predicted = runner.predict(lines)
    metrics = runner.evaluate(str(tmp_path / "test.tsv"))
    assert metrics["accuracy"] == pytest.approx(sum(p == g for p, g in zip(predicted, gold, strict=True)) / 10)
    expected = f1_score(gold, predicted, average="macro", labels=["neg", "pos"], zero_division=0)
    assert metrics["macro_f1"] == pytest.approx(expected)
    assert metrics["majority_accuracy"] == 0.5


def test_run_directory(tmp_path):
    run = tmp_path / "run"
    _train(_settings(tmp_path, max_steps=2), run)
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "classify" and config["model"]["num_classes"] == 2
    assert json.loads((run / "labels.json").read_text())
    assert (run / "vocab.json").is_file() and (run / "model.safetensors").is_file()


def test_unknown_word_and_empty_text(tmp_path):
    run = tmp_path / "run"
    _train(_settings(tmp_path, max_steps=2, max_length=3), run)
    runner = classify.load(run)
    assert len(runner.predict(["", "zzz qqq", "good " * 50])) == 3


@pytest.mark.parametrize("bad, message", [({"pooling": "sum"}, "unknown pooling .sum.; expected one of"),
                                          ({"level": "bpe"}, "unknown level .bpe.; expected one of"),
                                          ({"batch_size": 0}, "batch_size must be a positive")])
def test_bad_settings(tmp_path, bad, message):
    with pytest.raises(ValueError, match=message):
        classify.prepare(_settings(tmp_path, **bad), tmp_path / "run")


def test_unseen_validation_label(tmp_path):
    settings = _settings(tmp_path)
    _write(tmp_path / "valid.tsv", [("meh", "so so film")])
    with pytest.raises(ValueError, match="never occur in training"):
        classify.prepare(settings, tmp_path / "run")


@pytest.mark.slow
def test_rotten_tomatoes(tmp_path):
    """Acceptance: test accuracy >= 0.70, next to the majority class (0.58)."""
    settings = resolve_settings("classify", {"data": "rotten-tomatoes", "time_budget": 180.0, "progress": False})
    start = time.monotonic()
    _train(settings, tmp_path / "run")
    trained = time.monotonic() - start
    metrics = classify.load(tmp_path / "run").evaluate(split="test")
    print(f"\nrotten-tomatoes: trained {trained:.0f} s, test {metrics}")
    assert metrics["accuracy"] >= 0.70
    assert metrics["accuracy"] > metrics["majority_accuracy"]
