"""Tests for rnnkit.experiments: the registry, the shared harness, each experiment's pieces on tiny sizes, and
(marked slow) every experiment in its quick setting, as `rnnkit experiment NAME --quick` runs it in CI."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import replace

import pytest
import torch
from torch import nn

from rnnkit.data import load
from rnnkit.data.generated import adding_problem, copy_memory, copy_memory_baseline
from rnnkit.experiments import adding, lstm_vs_gru, registry, vanishing_gradients
from rnnkit.experiments import copy_memory as copy_experiment
from rnnkit.experiments.harness import fit, mean_squared_error, memory_classifier, memory_regressor, set_forget_bias
from rnnkit.parameters import formula_count

ISSUE_NAMES = ["vanishing-gradients", "adding", "copy-memory", "attention-length", "sequential-digits",
               "lstm-vs-gru", "sentiment-baselines"]


def _read_results(out) -> dict:
    data = json.loads((out / "results.json").read_text(encoding="utf-8"))
    html = (out / "report.html").read_text(encoding="utf-8")
    for image in out.glob("*.png"):
        assert image.name in html  # every plot is shown in the report
    return data


def test_registry_names_and_errors():
    assert list(registry.EXPERIMENTS) == ISSUE_NAMES
    assert set(registry.DESCRIPTIONS) == set(ISSUE_NAMES)
    for name in ISSUE_NAMES:
        assert callable(registry.get(name))
    with pytest.raises(ValueError, match="unknown experiment 'nope'; known: vanishing-gradients"):
        registry.get("nope")


def test_fit_trains_and_logs():
    """A linear regression y = 2x - 1 through fit: the test error falls, evaluations and epochs are where
    they should be, and the recorded gradient norm is the unclipped one."""
    torch.manual_seed(0)
    x = torch.randn(64, 1)
    y = 2 * x - 1

    class Linear(nn.Linear):
        def loss(self, outputs, targets):
            return nn.functional.mse_loss(outputs, targets)

    model = Linear(1, 1)
    before = model.loss(model(x), y).item()
    log = fit(model, lambda index: ((x[index],), y[index]), 64, steps=40, batch_size=16, lr=0.1, clip_norm=0.5,
              evaluate=lambda m: float(m.loss(m(x), y)), eval_every=10)
    assert log.eval_steps == [10, 20, 30, 40]
    assert log.eval_values[-1] < 0.1 * before
    assert len(log.epoch_seconds) == 10 and len(log.step_losses) == 40
    assert max(log.step_grad_norms) > 0.5  # recorded before clipping
    assert log.first_step_below(log.eval_values[-1] + 1e-12) <= 40
    with pytest.raises(ValueError, match="batch_size"):
        fit(model, lambda index: None, 8, steps=1, batch_size=16, lr=0.1)
    with pytest.raises(ValueError, match="optimizer"):
        fit(model, lambda index: ((x[index],), y[index]), 64, steps=1, batch_size=16, lr=0.1, optimizer="lbfgs")


def test_set_forget_bias_sets_the_forget_block_only():
    model = memory_regressor("lstm", 2, 3, forget_bias=None)
    layer = model.encoder.recurrent
    before_ih, before_hh = layer.bias_ih_l0.detach().clone(), layer.bias_hh_l0.detach().clone()
    set_forget_bias(model, 1.0)
    forget = slice(3, 6)  # gates i, f, g, o of 3 units each
    assert torch.equal(layer.bias_ih_l0[forget], torch.ones(3))
    assert torch.equal(layer.bias_hh_l0[forget], torch.zeros(3))
    keep = torch.tensor([i not in range(3, 6) for i in range(12)])
    assert torch.equal(layer.bias_ih_l0[keep], before_ih[keep]) and torch.equal(layer.bias_hh_l0[keep],
                                                                                before_hh[keep])


def test_adding_baseline_is_the_variance_of_the_target():
    """Predicting E[y] = 1 scores Var[y] = 1/6: checked on generated data through the evaluation helper."""
    data = adding_problem("test", 20_000, 10)

    class Constant(nn.Module):
        def forward(self, inputs):
            return torch.ones(inputs.shape[0], 1)

    mse = mean_squared_error(Constant(), torch.from_numpy(data.inputs), torch.from_numpy(data.targets))
    assert mse == pytest.approx(adding.BASELINE_MSE, rel=0.03)


def test_copy_memory_baseline_is_what_a_memoryless_model_scores():
    """Blanks for T + 10 steps with certainty, then uniform over the 8 symbols: exactly 10 ln 8 / (T + 20)."""
    T = 7
    data = copy_memory("test", 50, T)

    class Memoryless(nn.Module):
        def forward(self, inputs):
            logits = torch.full((*inputs.shape, 10), -1e4)  # (N, T + 20, 10)
            logits[:, : T + 10, 0] = 0.0  # certain blank
            logits[:, T + 10:, 1:9] = 0.0  # uniform over symbols 1..8
            return logits

    figures = copy_experiment.evaluate_copy(Memoryless(), torch.from_numpy(data.inputs),
                                            torch.from_numpy(data.targets))
    assert figures["cross_entropy"] == pytest.approx(10 * math.log(8) / (T + 20), rel=1e-6)
    assert figures["cross_entropy"] == pytest.approx(copy_memory_baseline(T), rel=1e-6)


def test_equal_budget_hidden_size():
    budget = lstm_vs_gru.model_parameters("lstm", 64)
    # the LSTM layer (torch's two biases: the course's 4[n(d + n) + n] + 4n) and the read-out 64 -> 10
    assert budget == formula_count("lstm", 1, 64, second_bias=True) + 64 * 10 + 10
    n = lstm_vs_gru.equal_budget_hidden(budget, "gru")
    gap = abs(lstm_vs_gru.model_parameters("gru", n) - budget)
    for other in (n - 1, n + 1):
        assert abs(lstm_vs_gru.model_parameters("gru", other) - budget) >= gap
    assert 70 <= n <= 76  # about sqrt(4/3) x 64 = 73.9
    with pytest.raises(ValueError, match="budget"):
        lstm_vs_gru.equal_budget_hidden(0, "gru")


def test_orthogonal_recurrence_and_gradient_profile():
    torch.manual_seed(0)
    model = memory_regressor("rnn", 2, 8)
    vanishing_gradients._orthogonal_recurrence(model, 2.0, seed=0)
    singular = torch.linalg.svdvals(model.encoder.recurrent.weight_hh_l0.detach().double())
    torch.testing.assert_close(singular, torch.full((8,), 2.0, dtype=torch.float64), rtol=1e-5, atol=1e-5)
    data = adding_problem("test", 4, 12)
    profile = vanishing_gradients.gradient_profile(model, torch.from_numpy(data.inputs),
                                                   torch.from_numpy(data.targets))
    norms = profile["grad_norm"]
    assert len(norms) == 12
    assert profile["far_near_ratio"] == pytest.approx(norms[0] / norms[-1])
    assert profile["per_step_factor"] == pytest.approx((norms[0] / norms[-1]) ** (1 / 11))


def test_tiny_adding_run_writes_report(tmp_path):
    config = adding.AddingConfig(T=6, hidden_size=4, steps=4, batch_size=8, train_size=32, test_size=16,
                                 eval_every=2)
    figures = adding.run_config(config, tmp_path)
    data = _read_results(tmp_path)
    assert data["figures"] == figures
    assert set(figures) >= {"lstm", "gru", "rnn", "claim", "baseline_mse"}
    assert figures["lstm"]["curve"]["step"] == [2, 4]
    assert data["config"]["T"] == 6


def test_tiny_vanishing_run(tmp_path):
    config = vanishing_gradients.VanishingConfig(T=8, hidden_size=4, probe_size=8, train_steps=2, batch_size=4,
                                                 train_size=16, explode_steps=3)
    figures = vanishing_gradients.run_config(config, tmp_path)
    _read_results(tmp_path)
    assert set(figures["models"]) == set(vanishing_gradients.MODELS)
    for entry in figures["models"].values():
        assert len(entry["init_grad_norm"]) == 8 and len(entry["trained_grad_norm"]) == 8
    assert set(figures["exploding"]["runs"]) == {"no clipping", "clipped at 1.0"}
    clipped = figures["exploding"]["runs"]["clipped at 1.0"]
    assert len(clipped["grad_norm_per_step"]) == 3


def test_tiny_copy_memory_run(tmp_path):
    config = copy_experiment.CopyMemoryConfig(lengths=(3,), hidden_size=4, embedding_size=4, steps=3,
                                              batch_size=8, train_size=16, test_size=8, eval_every=1)
    figures = copy_experiment.run_config(config, tmp_path)
    _read_results(tmp_path)
    run = figures["runs"]["lstm_T3"]
    assert run["baseline"] == pytest.approx(10 * math.log(8) / 23)
    assert run["ratio_to_baseline"] == pytest.approx(run["final_cross_entropy"] / run["baseline"])
    # the claim's flag is computed from the lengths that were run, and names them
    assert figures["claim"] == {"lstm_below_half_baseline": run["below_half_baseline"], "checked_T": [3]}
    too_long = copy_experiment.run_config(replace(config, lengths=(60,), steps=1), tmp_path / "long")
    assert too_long["claim"] == {"lstm_below_half_baseline": None, "checked_T": []}  # T > 50 claims nothing
    assert [T for T in copy_experiment.FULL.lengths if T <= copy_experiment.FULL.claim_max_T] == [10, 20, 50]


def test_tiny_digits_and_lstm_vs_gru_runs(tmp_path):
    from rnnkit.experiments import sequential_digits

    digits = sequential_digits.DigitsConfig(hidden_size=4, steps_per_image=8, epochs=1, batch_size=256)
    figures = sequential_digits.run_config(digits, tmp_path / "digits")
    _read_results(tmp_path / "digits")
    assert set(figures["models"]) == {"rnn", "lstm", "gru"}
    assert all(0.0 <= f["test_accuracy"] <= 1.0 for f in figures["models"].values())

    config = lstm_vs_gru.LstmGruConfig(lstm_hidden_size=6, digits=sequential_digits.DigitsConfig(
        cells=("lstm", "gru"), steps_per_image=8, epochs=1, batch_size=256))
    figures = lstm_vs_gru.run_config(config, tmp_path / "lstm-vs-gru")
    _read_results(tmp_path / "lstm-vs-gru")
    lstm, same_budget, same_n = figures["models"].values()
    assert lstm["parameters"] == figures["budget"]
    assert same_n["hidden_size"] == 6 and same_budget["hidden_size"] == figures["gru_equal_budget_hidden"]
    assert figures["ratios"]["gru_same_n_parameters_over_lstm"] == pytest.approx(
        same_n["parameters"] / lstm["parameters"])


def test_tiny_attention_length_run(tmp_path):
    from rnnkit.experiments import attention_length
    from rnnkit.experiments.reversal import ReversalConfig

    config = attention_length.AttentionLengthConfig(ReversalConfig(
        symbols=5, min_length=3, max_length=5, embedding_size=4, hidden_size=8, steps=2, batch_size=8,
        eval_sentences=2, buckets=((3, 4), (5, 5))))
    figures = attention_length.run_config(config, tmp_path)
    _read_results(tmp_path)
    assert set(figures["attention"]["bucket_accuracy"]) == {"3-4", "5-5"}
    assert set(figures["no attention"]["length_accuracy"]) == {"3", "4", "5"}
    assert (tmp_path / "attention.png").exists()


def test_tiny_sentiment_run(tmp_path):
    from rnnkit.experiments import sentiment_baselines

    assert sentiment_baselines.tokenize("It isn't GOOD, really.") == ["it", "isn't", "good", ",", "really", "."]
    config = sentiment_baselines.SentimentConfig(models=("LSTM",), embedding_size=8, hidden_size=8, epochs=1,
                                                 train_limit=300, regularisation=(1.0,))
    figures = sentiment_baselines.run_config(config, tmp_path)
    _read_results(tmp_path)
    assert set(figures["models"]) == {"majority", "bag of words + logistic regression", "LSTM"}
    assert figures["sizes"]["train"] == 300
    for entry in figures["models"].values():
        assert 0.0 <= entry["test_accuracy"] <= 1.0


# ----------------------------------------------------------------------------------------------------------
# Slow: the quick settings of two experiments and their claims
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_adding_gated_cells_beat_the_tanh_rnn_and_the_mean(tmp_path):
    """Quick adding (T = 100, 400 steps): a gated cell is far below the 1/6 baseline, the tanh RNN is not."""
    figures = registry.run("adding", quick=True, out=tmp_path, seed=0)
    print({c: figures[c]["final_test_mse"] for c in ("lstm", "gru", "rnn")})
    best_gated = min(figures["lstm"]["final_test_mse"], figures["gru"]["final_test_mse"])
    assert best_gated < 0.05 < adding.BASELINE_MSE
    assert figures["rnn"]["final_test_mse"] > 0.12
    assert best_gated < 0.25 * figures["rnn"]["final_test_mse"]


@pytest.mark.slow
def test_vanishing_gradients_quick(tmp_path):
    """At initialisation the tanh RNN's gradient over 99 steps shrinks far more than the LSTM's (forget bias 1);
    with a large recurrent weight it explodes, and clipping keeps SGD finite."""
    figures = registry.run("vanishing-gradients", quick=True, out=tmp_path, seed=0)
    models = figures["models"]
    print({name: f"{m['init_far_near_ratio']:.3g}" for name, m in models.items()})
    assert models["rnn"]["init_far_near_ratio"] < 1e-6 * models["lstm"]["init_far_near_ratio"]
    exploding = figures["exploding"]
    assert exploding["init_far_near_ratio"] > 1e3
    unclipped, clipped = exploding["runs"]["no clipping"], exploding["runs"]["clipped at 1.0"]
    assert unclipped["non_finite_losses"] > 0 or unclipped["final_test_mse"] is None
    assert clipped["non_finite_losses"] == 0 and clipped["final_test_mse"] is not None


# Slow: the quick settings of the other five experiments, as CI runs them (`rnnkit experiment NAME --quick`)
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_copy_memory_quick_lstm_below_half_the_memoryless_baseline(tmp_path):
    figures = registry.run("copy-memory", quick=True, out=tmp_path, seed=0)
    _read_results(tmp_path)
    run = figures["runs"]["lstm_T10"]
    print({"T": 10, "baseline": run["baseline"], "lstm": run["final_cross_entropy"]})
    assert run["baseline"] == pytest.approx(10 * math.log(8) / 30)
    assert run["final_cross_entropy"] < 0.5 * run["baseline"]
    # the quick setting checks T = 10 only: the claim for T <= 50 is the full setting's (scripts/experiments.sh)
    assert figures["claim"] == {"lstm_below_half_baseline": True, "checked_T": [10]}


@pytest.mark.slow
def test_attention_length_quick_attention_holds_on_long_sources(tmp_path):
    figures = registry.run("attention-length", quick=True, out=tmp_path, seed=0)
    _read_results(tmp_path)
    attention, plain = figures["attention"]["bucket_accuracy"], figures["no attention"]["bucket_accuracy"]
    print({"attention": attention, "no attention": plain})
    assert attention["11-20"] >= 0.8 and attention["11-20"] >= 0.85 * attention["5-10"]
    assert plain["11-20"] <= 0.6 * plain["5-10"]
    assert attention["11-20"] > 2 * plain["11-20"]


@pytest.mark.slow
def test_sequential_digits_quick_every_cell_learns(tmp_path):
    figures = registry.run("sequential-digits", quick=True, out=tmp_path, seed=0)
    _read_results(tmp_path)
    models = figures["models"]
    print({cell: models[cell]["test_accuracy"] for cell in models})
    assert set(models) == {"rnn", "lstm", "gru"} and figures["steps_per_image"] == 64
    for cell in models:
        assert models[cell]["test_accuracy"] >= 0.5  # 10 classes: chance is 0.1
        assert models[cell]["parameters"] == sum(
            p.numel() for p in memory_classifier(cell, 1, 64, 10, forget_bias=None).parameters())


@pytest.mark.slow
def test_lstm_vs_gru_quick_measures_time_and_parameters(tmp_path):
    figures = registry.run("lstm-vs-gru", quick=True, out=tmp_path, seed=0)
    _read_results(tmp_path)
    models = figures["models"]
    lstm, same_n, same_budget = (models[k] for k in ("LSTM, n = 64", "GRU, n = 64 (same n)",
                                                     "GRU, n = 74 (same budget)"))
    print(figures["ratios"])
    assert figures["ratios"]["gru_same_n_parameters_over_lstm"] == pytest.approx(
        same_n["parameters"] / lstm["parameters"])
    assert 0.7 < figures["ratios"]["gru_same_n_parameters_over_lstm"] < 0.8  # 3 gates' weights against 4
    assert abs(same_budget["parameters"] - lstm["parameters"]) / lstm["parameters"] < 0.01
    for model in models.values():
        assert model["test_accuracy"] >= 0.5 and model["seconds_per_epoch"] > 0


@pytest.mark.slow
def test_sentiment_baselines_quick_table(tmp_path):
    figures = registry.run("sentiment-baselines", quick=True, out=tmp_path, seed=0)
    _read_results(tmp_path)
    models = figures["models"]
    print({name: round(m["test_accuracy"], 3) for name, m in models.items()})
    assert set(models) == {"majority", "bag of words + logistic regression", "tanh RNN", "LSTM",
                           "bidirectional LSTM"}
    # the trivial baseline, from the data: always answer the most frequent training label
    train, test = (load("rotten-tomatoes", split, quiet=True) for split in ("train", "test"))
    most_frequent = Counter(r.label for r in train).most_common(1)[0][0]
    majority = sum(r.label == most_frequent for r in test) / len(test)
    assert models["majority"]["test_accuracy"] == pytest.approx(majority)
    assert models["bag of words + logistic regression"]["test_accuracy"] >= 0.72
    for name in ("tanh RNN", "LSTM", "bidirectional LSTM"):
        assert models[name]["train_seconds"] > 0 and models[name]["test_accuracy"] > majority, name
