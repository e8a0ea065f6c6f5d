"""Tests for the translation task's peer-feature settings (rnnkit.tasks.translate): they reach the model config,
the loss and the decoding, and become command-line flags."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from rnnkit.checkpoint import save_checkpoint
from rnnkit.tasks import resolve_settings
from rnnkit.tasks import translate as task

FEATURES = ("encoder_layers", "encoder_size", "encoder_output_dropout", "label_smoothing", "coverage", "copy_attention",
            "tie_weights", "share_embeddings", "coverage_penalty", "no_repeat_ngram", "max_len_a", "max_len_b")


@pytest.fixture
def pairs(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("ab\tba\nabc\tcba\nbca\tacb\nxy\tZ\n" * 5, encoding="utf-8")  # x, y source only; Z target only
    return str(path)


def _prepare(pairs, run_dir, **settings):
    resolved = resolve_settings("translate", {"data": pairs, "valid": pairs, "hidden_size": 8, **settings})
    return task.prepare(resolved, run_dir)


def test_every_feature_is_a_documented_setting():
    for key in FEATURES:
        assert key in task.DEFAULTS and task.HELP.get(key), key


def test_model_features_reach_the_config_and_copy_builds_one_vocabulary(pairs, tmp_path):
    translate_task, config = _prepare(pairs, tmp_path / "plain")
    assert len(translate_task.source_vocab) == len(translate_task.target_vocab) + 1  # {a b c x y}, {a b c Z}
    shared_task, shared_config = _prepare(
        pairs, tmp_path / "shared", attention="additive", coverage=True, copy_attention=True, tie_weights=True,
        share_embeddings=True, embedding_size=8, label_smoothing=0.1,
    )
    model = shared_task.model
    assert shared_task.source_vocab.to_json() == shared_task.target_vocab.to_json()
    assert len(shared_task.source_vocab) == len(translate_task.source_vocab) + 1  # {a b c x y Z}
    run_dir = tmp_path / "shared"
    assert (run_dir / "source_vocab.json").read_text() == (run_dir / "target_vocab.json").read_text()
    for key in ("coverage", "copy_attention", "tie_weights", "share_embeddings"):
        assert shared_config["model"][key] is True and config["model"][key] is False
    assert model.decoder.pointer is not None and model.decoder.attention.coverage
    assert model.decoder.output_layer.weight is model.encoder.embedding.weight
    assert model.label_smoothing == 0.1
    # training uses the smoothed loss, evaluation the plain negative log-likelihood
    batch = task.make_batch(shared_task.train, range(8))
    smoothed, _ = shared_task.batch_loss(batch)
    plain, _ = shared_task.batch_loss(batch, label_smoothing=0.0)
    with torch.no_grad():
        logits = model(batch["src"], batch["src_lengths"], batch["tgt_in"])
    assert torch.allclose(smoothed, model.loss(logits, batch["tgt_out"]))
    assert torch.allclose(plain, model.loss(logits, batch["tgt_out"], label_smoothing=0.0))
    assert not torch.allclose(smoothed, plain)


def test_encoder_shape_settings_reach_the_model(pairs, tmp_path):
    shaped, config = _prepare(pairs, tmp_path / "shaped", encoder_layers=2, encoder_size=12, decoder="bahdanau",
                              attention="additive", encoder_output_dropout=0.25)
    assert (config["model"]["encoder_layers"], config["model"]["encoder_size"]) == (2, 12)
    assert config["model"]["encoder_output_dropout"] == shaped.model.encoder.output_dropout.p == 0.25
    assert shaped.model.encoder.rnn.num_layers == 2 and shaped.model.encoder.output_size == 12
    assert shaped.model.decoder.hidden_size == 8 and shaped.model.decoder.rnn.num_layers == 1
    plain, config = _prepare(pairs, tmp_path / "plain")  # 0: as --num-layers and --hidden-size
    assert (config["model"]["encoder_layers"], config["model"]["encoder_size"]) == (None, None)
    assert plain.model.encoder.output_size == 8 and plain.model.encoder.rnn.num_layers == 1


def test_decoding_settings_reach_translation(pairs, tmp_path):
    translate_task, config = _prepare(pairs, tmp_path / "run", no_repeat_ngram=1, max_len_a=0.0, max_len_b=3,
                                      coverage_penalty=0.5, beam_size=3)  # fmt: skip
    save_checkpoint(tmp_path / "run", translate_task.model, config, name="best")
    runner = task.TranslateRunner(tmp_path / "run")
    assert task.decode_options(runner.settings) == {"coverage_penalty": 0.5, "no_repeat_ngram_size": 1,
                                                    "max_len_a": 0.0, "max_len_b": 3}  # fmt: skip
    assert "coverage_penalty" not in task.decode_options(runner.settings, "greedy")  # beam search only
    for beam in (1, 3):
        for options in runner.translate(["abc", "bca", "xyxy"], beam_size=beam):
            tokens = options[0]["tokens"]
            assert len(tokens) <= 3 and len(set(tokens)) == len(tokens)  # the limit, and no token twice
    # a run made before these settings existed decodes with their defaults
    assert task.decode_options({}) == {"coverage_penalty": 0.0, "no_repeat_ngram_size": 0, "max_len_a": 2.0,
                                       "max_len_b": 10}  # fmt: skip


def test_any_reference_scores_only_the_splits_that_list_them(pairs, tmp_path, monkeypatch):
    """A catalog dataset lists further references for its valid and test words only: scoring its train split
    reports no wer_any (it would only repeat wer)."""
    translate_task, config = _prepare(pairs, tmp_path / "run", target_level="word")
    save_checkpoint(tmp_path / "run", translate_task.model, config, name="best")
    runner = task.TranslateRunner(tmp_path / "run")
    records = runner.read(pairs, None)
    monkeypatch.setattr(runner, "evaluation_source", lambda source, split: ("cmudict", split or "test"))
    monkeypatch.setattr(runner, "read", lambda source, split: records)
    monkeypatch.setattr(task, "further_references", lambda source, **_: {"abc": ("x",)})
    assert {"wer_any", "per_any"} <= set(runner.evaluate(split="test")) and "wer_any" in runner.evaluate(split="valid")
    assert not {"wer_any", "per_any"} & set(runner.evaluate(split="train"))


@pytest.mark.parametrize(("key", "value"), [("no_repeat_ngram", -1), ("coverage_penalty", -0.5),
                                            ("max_len_a", -1.0), ("max_len_b", -2), ("max_len_a", math.nan)])
def test_bad_decoding_settings_are_refused_when_the_run_is_prepared(pairs, tmp_path, key, value):
    with pytest.raises(ValueError, match=key):
        _prepare(pairs, tmp_path / "run", **{key: value})


def test_runs_decode_as_an_ensemble_from_the_command_line(pairs, tmp_path, capsys):
    from rnnkit.cli import main
    from rnnkit.decoding import Ensemble

    runs = []
    for seed in (0, 1):
        translate_task, config = _prepare(pairs, tmp_path / f"run{seed}", seed=seed, test=pairs)
        save_checkpoint(tmp_path / f"run{seed}", translate_task.model, config, name="best")
        runs.append(str(tmp_path / f"run{seed}"))
    joined = task.load_ensemble(runs)
    assert isinstance(joined.model, Ensemble) and len(joined.model.members) == 2
    members = [task.TranslateRunner(run).model for run in runs]
    lines = ["abc", "bca", "xy"]
    with torch.no_grad():
        expected = task.decode_texts(Ensemble(members), joined.encode(lines), beam_size=3)
    assert [o[0]["text"] for o in joined.translate(lines, beam_size=3)] == [
        task.hypothesis_text(joined.target_vocab, h[0]) for h in expected]
    assert main(["eval", runs[0], "--ensemble", runs[1]]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["examples"] == 20 and scored["exact_match"] == joined.evaluate()["exact_match"]

    other = tmp_path / "other.tsv"
    other.write_text("ab\tba\nqq\tQ\n" * 5, encoding="utf-8")
    translate_task, config = _prepare(str(other), tmp_path / "other")
    save_checkpoint(tmp_path / "other", translate_task.model, config, name="best")
    with pytest.raises(ValueError, match="share their source vocabulary"):
        task.load_ensemble([runs[0], tmp_path / "other"])
    assert main(["eval", runs[0], "--ensemble", str(tmp_path / "other")]) != 0
    assert "share their source vocabulary" in capsys.readouterr().err


def test_an_ensemble_refuses_to_score_what_another_member_was_trained_on(pairs, tmp_path, capsys):
    """A run's test words are held out from its own training, not necessarily from another run's: an ensemble
    with a run trained on train + test would score words it learned. The runs' training data is compared, so
    a member trained on the same words under another name passes."""
    from rnnkit.cli import main

    held_out = tmp_path / "test.tsv"
    held_out.write_text("cab\tbac\nyx\tZ\n", encoding="utf-8")  # words of the same letters, none in pairs
    seen_all = tmp_path / "train_and_test.tsv"
    seen_all.write_text(open(pairs, encoding="utf-8").read() + held_out.read_text(encoding="utf-8"), encoding="utf-8")
    renamed = tmp_path / "renamed.tsv"
    renamed.write_text(open(pairs, encoding="utf-8").read(), encoding="utf-8")
    for name, data in (("clean", pairs), ("leaky", str(seen_all)), ("renamed", str(renamed))):
        translate_task, config = _prepare(data, tmp_path / name, test=str(held_out))
        save_checkpoint(tmp_path / name, translate_task.model, config, name="best")
    clean, leaky, renamed_run = (str(tmp_path / name) for name in ("clean", "leaky", "renamed"))

    refusal = r"leaky was trained on 2 of the 2 sources of .*test.tsv \(test\), .*clean on 0"
    with pytest.raises(ValueError, match=refusal):
        task.load_ensemble([clean, leaky]).evaluate()
    with pytest.raises(ValueError, match="trained on 2 of the 2 sources"):  # a file given whole: the same rule
        task.load_ensemble([clean, leaky]).evaluate(str(held_out))
    assert main(["eval", clean, "--ensemble", leaky]) != 0
    assert "leaky was trained on 2 of the 2 sources" in capsys.readouterr().err
    assert task.load_ensemble([clean, renamed_run]).evaluate()["examples"] == 2  # the same words, another file
    assert task.load_ensemble([leaky, clean]).evaluate(pairs)["examples"] == 20  # no member saw more than the first
    assert task.TranslateRunner(leaky).evaluate()["examples"] == 2  # one run scores whatever it is asked to

    shutil.rmtree(tmp_path / "renamed" / "data")  # a run without its training data cannot be checked
    with pytest.raises(ValueError, match=r"renamed/data/train: cannot read the run's training data"):
        task.load_ensemble([clean, renamed_run]).evaluate()
