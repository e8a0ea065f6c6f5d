"""Tests of rnnkit.tasks.tag: prepare -> Trainer -> load -> evaluate / predict, on tiny files."""

import json
import time

import pytest
from seqeval.metrics import f1_score

from rnnkit.tasks import resolve_settings, tag, training_settings
from rnnkit.training import Trainer

NER = [
    ("John lives in Paris .", "B-PER O O B-LOC O"),
    ("Mary Smith visited London .", "B-PER I-PER O B-LOC O"),
    ("Paris is big .", "B-LOC O O O"),
    ("John Smith likes Rome .", "B-PER I-PER O B-LOC O"),
    ("Mary lives in Rome .", "B-PER O O B-LOC O"),
]


def _write_tagging(path, sentences):
    blocks = []
    for words, tags in sentences:
        blocks.append("".join(f"{w}\t{t}\n" for w, t in zip(words.split(), tags.split(), strict=True)))
    path.write_text("\n".join(blocks), encoding="utf-8")


def _settings(tmp_path, sentences=NER, **overrides):
    _write_tagging(tmp_path / "train.tsv", sentences * 8)
    _write_tagging(tmp_path / "valid.tsv", sentences[:3])
    given = {"data": str(tmp_path / "train.tsv"), "valid": str(tmp_path / "valid.tsv"), "hidden_size": 16,
             "embedding_size": 16, "batch_size": 8, "epochs": 12, "lr": 2e-2, "dropout": 0.0,
             "progress": False, "patience": None}
    given.update(overrides)
    return resolve_settings("tag", given)


def _train(settings, run_dir):
    task, run_config = tag.prepare(settings, run_dir)
    Trainer(task, run_dir, training_settings(settings), run_config=run_config).train()
    return task


@pytest.mark.parametrize("crf", [False, True])
def test_bio_round_trip(tmp_path, crf):
    run = tmp_path / "run"
    _train(_settings(tmp_path, crf=crf), run)
    runner = tag.load(run)
    assert runner.predict(["John lives in Rome .", ""]) == [["B-PER", "O", "O", "B-LOC", "O"], []]
    metrics = runner.evaluate(str(tmp_path / "valid.tsv"))
    assert metrics["token_accuracy"] == 1.0 and metrics["entity_f1"] == 1.0
    assert metrics["tokens"] == 14 and metrics["sentences"] == 3


def test_entity_f1_matches_seqeval(tmp_path):
    run = tmp_path / "run"
    _train(_settings(tmp_path, max_steps=2), run)  # barely trained: mistakes are likely
    runner = tag.load(run)
    test = [("Mary visited Paris .", "B-PER O B-LOC O"), ("John Smith is in London .", "B-PER I-PER O O B-LOC O")]
    _write_tagging(tmp_path / "test.tsv", test)
    predicted = runner.predict([words for words, _ in test])
    gold = [tags.split() for _, tags in test]
    metrics = runner.evaluate(str(tmp_path / "test.tsv"))
    assert metrics["entity_f1"] == pytest.approx(f1_score(gold, predicted, zero_division=0))
    flat = [(p, g) for ps, gs in zip(predicted, gold, strict=True) for p, g in zip(ps, gs, strict=True)]
    assert metrics["token_accuracy"] == pytest.approx(sum(p == g for p, g in flat) / 10)


def test_most_frequent_tag_baseline(tmp_path):
    # "run" is a NOUN twice and a VERB once: the baseline says NOUN; unknown words get the commonest tag.
    # NOUN (4 times) is the commonest tag overall, DET (3 times) the next.
    sentences = [("the run", "DET NOUN"), ("a run", "DET NOUN"), ("they run", "PRON VERB"), ("the dog", "DET NOUN"),
                 ("big dog", "ADJ NOUN")]
    run = tmp_path / "run"
    _train(_settings(tmp_path, sentences, max_steps=2), run)
    _write_tagging(tmp_path / "test.tsv", [("they run", "PRON VERB"), ("cats sleep", "NOUN VERB")])
    metrics = tag.load(run).evaluate(str(tmp_path / "test.tsv"))
    # Baseline: they->PRON (right), run->NOUN (wrong), cats->NOUN (right, the commonest tag), sleep->NOUN (wrong)
    assert metrics["baseline_token_accuracy"] == 0.5
    assert "entity_f1" not in metrics  # POS tags are not BIO


def test_is_bio():
    assert tag.is_bio(["B-PER", "I-PER", "O"])
    assert not tag.is_bio(["NOUN", "VERB"]) and not tag.is_bio(["O"]) and not tag.is_bio(["B-", "O"])


def test_run_directory_has_no_code(tmp_path):
    run = tmp_path / "run"
    _train(_settings(tmp_path, max_steps=1), run)
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "model.safetensors", "vocab.json", "tags.json", "baseline.json"} <= names
    assert not any(name.endswith((".py", ".pkl", ".pt")) for name in names)
    assert json.loads((run / "config.json").read_text())["data"]["bio"] is True


def test_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="batch_size must be a positive"):
        tag.prepare(_settings(tmp_path, batch_size=0), tmp_path / "run")
    with pytest.raises(ValueError, match="'crf'.*true or false"):
        resolve_settings("tag", {"crf": "yes"})


def test_unseen_validation_tag(tmp_path):
    settings = _settings(tmp_path)
    _write_tagging(tmp_path / "valid.tsv", [("Acme Corp", "B-ORG I-ORG")])
    with pytest.raises(ValueError, match="never occur in training"):
        tag.prepare(settings, tmp_path / "run")


@pytest.mark.slow
def test_turkish_pos(tmp_path):
    """Acceptance: token accuracy >= 0.85, next to the most-frequent-tag-per-word baseline."""
    settings = resolve_settings("tag", {"data": "turkish-pos", "time_budget": 180.0, "progress": False})
    start = time.monotonic()
    _train(settings, tmp_path / "run")
    trained = time.monotonic() - start
    metrics = tag.load(tmp_path / "run").evaluate(split="test")
    print(f"\nturkish-pos: trained {trained:.0f} s, test {metrics}")
    assert metrics["token_accuracy"] >= 0.85
    assert metrics["token_accuracy"] > metrics["baseline_token_accuracy"]
