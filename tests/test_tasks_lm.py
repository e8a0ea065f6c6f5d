"""Tests of rnnkit.tasks.lm: prepare -> Trainer -> load -> evaluate / generate, on tiny files."""

import json
import math
import time

import pytest
import torch

from rnnkit.data import Vocab, token_stream
from rnnkit.tasks import lm, resolve_settings, training_settings
from rnnkit.training import Trainer

TEXT = "the cat sat on the mat.\nthe dog sat on the log.\n" * 40


def _settings(tmp_path, **overrides):
    train = tmp_path / "train.txt"
    valid = tmp_path / "valid.txt"
    train.write_text(TEXT, encoding="utf-8")
    valid.write_text(TEXT[:300], encoding="utf-8")
    given = {"data": str(train), "valid": str(valid), "hidden_size": 16, "embedding_size": 8, "batch_size": 4,
             "bptt": 10, "eval_batch_size": 2, "epochs": 2, "eval_every": None, "checkpoint_every": None,
             "progress": False, "lr": 1e-2}
    given.update(overrides)
    return resolve_settings("lm", given)


def _train(settings, run_dir):
    task, run_config = lm.prepare(settings, run_dir)
    Trainer(task, run_dir, training_settings(settings), run_config=run_config).train()
    return task


def test_char_round_trip(tmp_path):
    run = tmp_path / "run"
    settings = _settings(tmp_path)
    task = _train(settings, run)
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "lm" and config["model"]["vocab_size"] == len(Vocab.load(run / "vocab.json"))
    runner = lm.load(run)
    metrics = runner.evaluate(str(tmp_path / "valid.txt"))
    # The same loss by hand: one row, the state carried, cross-entropy over every next character.
    stream = token_stream(TEXT[:300], runner.vocab)
    batch_size = min(2, stream.numel() // 2)
    rows = stream[: stream.numel() // batch_size * batch_size].view(batch_size, -1)
    with torch.no_grad():
        logits, _ = runner.model(rows[:, :-1])
        expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), rows[:, 1:].flatten()).item()
    assert metrics["loss"] == pytest.approx(expected, rel=1e-4)
    assert metrics["bits_per_char"] == pytest.approx(expected / math.log(2), rel=1e-4)
    assert metrics["tokens"] == rows[:, 1:].numel()
    # Learned something: better than a uniform guess over the vocabulary.
    assert metrics["loss"] < math.log(len(runner.vocab))
    assert task.evaluate("valid")["loss"] == pytest.approx(metrics["loss"], rel=1e-4)


def test_generate_reproducible(tmp_path):
    run = tmp_path / "run"
    _train(_settings(tmp_path, max_steps=5), run)
    runner = lm.load(run)
    a = runner.generate("the ", length=30, temperature=0.8, seed=3)
    b = runner.generate("the ", length=30, temperature=0.8, seed=3)
    # 30 sampled tokens; special tokens an untrained model may sample are not shown.
    assert a == b and a.startswith("the ") and len(a) <= 34
    greedy = runner.generate("the ", length=10, temperature=0.0)
    assert greedy == runner.generate("the ", length=10, temperature=0.0)
    assert len(runner.generate("", length=5, top_k=3, seed=0)) <= 5


def test_word_level_perplexity(tmp_path):
    run = tmp_path / "run"
    _train(_settings(tmp_path, level="word", bptt=5, max_steps=10), run)
    runner = lm.load(run)
    metrics = runner.evaluate(str(tmp_path / "valid.txt"))
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]), rel=1e-6)
    assert "bits_per_char" not in metrics
    words = runner.generate("the cat", length=4, seed=0).split()
    assert words[:2] == ["the", "cat"] and len(words) <= 6


@pytest.mark.parametrize("level", ["char", "word"])
def test_generate_stream_adds_up_to_generate(tmp_path, level):
    """The streamed pieces (one per token, specials as "") rebuild generate's text, prompt or not."""
    run = tmp_path / "run"
    _train(_settings(tmp_path, level=level, bptt=5, max_steps=5), run)
    runner = lm.load(run)
    for prompt, seed in (("the cat", 1), ("", 2)):
        pieces = list(runner.generate_stream(prompt, length=25, temperature=1.0, seed=seed))
        assert len(pieces) == 25
        assert prompt + "".join(p["text"] for p in pieces) == runner.generate(prompt, length=25, temperature=1.0,
                                                                              seed=seed)
        assert all(p["token"] == runner.vocab.id_to_token(p["id"]) for p in pieces)


def test_truncated_bptt_carries_state(tmp_path):
    task, _ = lm.prepare(_settings(tmp_path), tmp_path / "run")
    batches = iter(task.train_batches(0, None))
    first = next(batches)
    loss, n_items, carry = task.loss(first, None)
    assert n_items == first[1].numel() and carry["h"].shape == (4, 1, 16)
    # The second chunk continues each row: its inputs start where the first chunk's targets ended.
    second = next(batches)
    assert torch.equal(second[0][:, 0], first[1][:, -1])


@pytest.mark.parametrize("bad, message", [({"level": "byte"}, "unknown level .byte.; expected one of"),
                                          ({"bptt": 0}, "bptt must be a positive")])
def test_bad_settings(tmp_path, bad, message):
    with pytest.raises(ValueError, match=message):
        lm.prepare(_settings(tmp_path, **bad), tmp_path / "run")


def test_unknown_setting_and_wrong_type():
    with pytest.raises(ValueError, match="unknown setting 'hidden'"):
        resolve_settings("lm", {"hidden": 3})
    with pytest.raises(ValueError, match="'bptt'.*must be a int"):
        resolve_settings("lm", {"bptt": "long"})


def test_load_refuses_other_task(tmp_path):
    run = tmp_path / "run"
    _train(_settings(tmp_path, max_steps=2), run)
    config = json.loads((run / "config.json").read_text())
    config["task"] = "tag"
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="not lm"):
        lm.load(run)


@pytest.mark.slow
def test_shakespeare_char_lstm(tmp_path):
    """Acceptance: validation cross-entropy <= 2.05 nats/char (a 3-gram model) within 5 minutes."""
    settings = resolve_settings("lm", {"data": "shakespeare", "time_budget": 300.0, "progress": False})
    start = time.monotonic()
    _train(settings, tmp_path / "run")
    trained = time.monotonic() - start
    runner = lm.load(tmp_path / "run")
    metrics = runner.evaluate(split="valid")
    sample = runner.generate("ROMEO:", length=300, temperature=0.8, seed=0)
    print(f"\nshakespeare char LSTM: trained {trained:.0f} s, valid {metrics}\n{sample}")
    assert metrics["loss"] <= 2.05
