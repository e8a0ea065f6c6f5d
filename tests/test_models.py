"""Tests for rnnkit.models: configs, the CRF against brute force, pooling over valid steps only, the language
model's carried state / step interface / generation, the tagger, and the forecaster on a sine wave."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from rnnkit.decoding import filter_log_probs
from rnnkit.metrics import naive_forecast, rmse
from rnnkit.models import (
    CRF,
    POOLINGS,
    Forecaster,
    ForecasterConfig,
    LanguageModel,
    LanguageModelConfig,
    Pooling,
    SequenceClassifier,
    SequenceClassifierConfig,
    SequenceRegressor,
    SequenceTagger,
    SequenceTaggerConfig,
    StandardScaler,
    build_model,
    make_windows,
)

CELLS = ("lstm", "gru", "rnn")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: intra-op threads only add synchronisation (30x slower backward on a busy 2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _lm(cell: str = "lstm", **overrides) -> LanguageModel:
    torch.manual_seed(0)
    settings = {"vocab_size": 11, "embedding_size": 6, "hidden_size": 8, "num_layers": 2, "cell": cell}
    settings.update(overrides)
    return LanguageModel(LanguageModelConfig(**settings)).eval()


def _random_tokens(batch: int, length: int, vocab: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(4, vocab, (batch, length), generator=generator)


# ----------------------------------------------------------------------------------------------------------
# Configs and the factory
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "config"),
    [
        ("lm", {"vocab_size": 20, "hidden_size": 8, "embedding_size": 8, "tie_weights": True, "cell": "gru"}),
        ("classify", {"vocab_size": 20, "num_classes": 3, "hidden_size": 8, "pooling": "attention"}),
        ("classify", {"input_size": 2, "num_classes": 3, "hidden_size": 8, "cell": "rnn"}),
        ("regress", {"input_size": 2, "output_size": 1, "hidden_size": 8, "bidirectional": False}),
        ("tag", {"vocab_size": 20, "num_tags": 5, "hidden_size": 8, "crf": True, "layer_norm": True}),
        ("forecast", {"input_len": 6, "horizon": 2, "hidden_size": 8, "scaler": {"mean": 1.5, "std": 2.0}}),
    ],
)
def test_config_round_trips_through_json(task, config):
    model = build_model(task, config)
    assert model.task == task
    text = json.dumps(model.config.to_dict())
    rebuilt = build_model(task, json.loads(text))
    assert rebuilt.config == model.config
    rebuilt.load_state_dict(model.state_dict())  # same parameter names and shapes
    assert rebuilt.num_parameters() == model.num_parameters()


@pytest.mark.parametrize(
    ("task", "config", "message"),
    [
        ("translate-ish", {}, "unknown task"),
        ("lm", {"vocab_size": 10, "cell": "transformer"}, "cell must be one of"),
        ("lm", {"vocab_size": 10, "colour": "red"}, "unknown LanguageModelConfig keys"),
        ("lm", {"hidden_size": 8}, "needs the keys"),
        ("lm", {"vocab_size": 10, "cell": "rnn", "layer_norm": True}, "layer_norm"),
        ("lm", {"vocab_size": 10, "hidden_size": 8, "embedding_size": 4, "tie_weights": True}, "tie_weights"),
        ("lm", {"vocab_size": 10, "dropout": 1.5}, "dropout"),
        ("classify", {"vocab_size": 10, "num_classes": 2, "pooling": "median"}, "pooling must be one of"),
        ("classify", {"num_classes": 2}, "exactly one of vocab_size"),
        ("classify", {"vocab_size": 10, "input_size": 3, "num_classes": 2}, "exactly one of vocab_size"),
        ("forecast", {"input_len": 0, "horizon": 2}, "input_len"),
    ],
)
def test_bad_configs_raise_clear_errors(task, config, message):
    with pytest.raises(ValueError, match=message):
        build_model(task, config)


def test_constructors_take_a_dict_or_their_own_config_only():
    model = SequenceTagger({"vocab_size": 9, "num_tags": 3, "hidden_size": 4})
    assert isinstance(model.config, SequenceTaggerConfig)
    with pytest.raises(ValueError, match="SequenceRegressorConfig"):
        SequenceRegressor(SequenceClassifierConfig(input_size=2, num_classes=3))


def test_inference_helpers_run_without_dropout_and_restore_the_mode():
    torch.manual_seed(12)
    config = {"vocab_size": 9, "num_tags": 3, "hidden_size": 4, "num_layers": 2, "dropout": 0.5}
    tagger = SequenceTagger(config).train()
    tokens = _random_tokens(2, 5, 9)
    decoded = tagger.decode(tokens)
    assert tagger.training
    assert decoded == tagger.eval().decode(tokens)  # the same with dropout off: decode ran in eval mode
    classifier = build_model("classify", {"vocab_size": 9, "num_classes": 2, "dropout": 0.5}).train()
    assert torch.equal(classifier.predict(tokens), classifier.predict(tokens)) and classifier.training


def test_tied_weights_share_one_matrix():
    model = _lm(embedding_size=8, hidden_size=8, tie_weights=True)
    assert model.output.weight is model.embedding.weight
    untied = _lm(embedding_size=8, hidden_size=8)
    assert untied.num_parameters() - model.num_parameters() == 11 * 8


# ----------------------------------------------------------------------------------------------------------
# CRF against brute-force enumeration
# ----------------------------------------------------------------------------------------------------------


def _brute_force_scores(crf: CRF, emissions: torch.Tensor, length: int) -> dict[tuple[int, ...], float]:
    """s(y) of every tag sequence of one sentence, written out from the definition."""
    A, start, end = crf.transitions.tolist(), crf.start_transitions.tolist(), crf.end_transitions.tolist()
    E = emissions.tolist()
    scores = {}
    for tags in itertools.product(range(crf.num_tags), repeat=length):
        score = start[tags[0]] + end[tags[-1]] + sum(E[t][tags[t]] for t in range(length))
        score += sum(A[tags[t - 1]][tags[t]] for t in range(1, length))
        scores[tags] = score
    return scores


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crf_partition_score_and_viterbi_equal_brute_force(seed):
    torch.manual_seed(seed)
    num_tags, lengths = 3, [4, 2, 1, 3]
    crf = CRF(num_tags).double()
    with torch.no_grad():  # larger than the default init, so that paths differ clearly
        for parameter in crf.parameters():
            parameter.normal_()
    emissions = torch.randn(len(lengths), max(lengths), num_tags, dtype=torch.float64)
    valid = torch.arange(max(lengths)).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    tags = torch.randint(num_tags, (len(lengths), max(lengths)))

    log_z = crf.log_partition(emissions, valid)
    path_scores = crf.score(emissions, tags, valid)
    best_tags, best_scores = crf.viterbi(emissions, valid)
    decoded = crf.decode(emissions, valid)
    for b, n in enumerate(lengths):
        brute = _brute_force_scores(crf, emissions[b, :n], n)
        expected_log_z = torch.logsumexp(torch.tensor(list(brute.values()), dtype=torch.float64), dim=0)
        assert log_z[b].item() == pytest.approx(expected_log_z.item(), abs=1e-10)
        assert path_scores[b].item() == pytest.approx(brute[tuple(tags[b, :n].tolist())], abs=1e-10)
        best = max(brute, key=brute.get)
        assert decoded[b] == list(best)
        assert best_tags[b, :n].tolist() == list(best)
        assert best_tags[b, n:].eq(0).all()
        assert best_scores[b].item() == pytest.approx(brute[best], abs=1e-10)
    # Probabilities of all sequences sum to one: log p(y) = s(y) - log Z.
    assert torch.allclose(crf.log_likelihood(emissions, tags, valid), path_scores - log_z)


def test_crf_ignores_padding_values():
    torch.manual_seed(3)
    crf = CRF(4).double()
    emissions = torch.randn(2, 5, 4, dtype=torch.float64)
    valid = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    tags = torch.randint(4, (2, 5))
    changed_emissions, changed_tags = emissions.clone(), tags.clone()
    changed_emissions[0, 3:] = 100.0
    changed_tags[0, 3:] = 3
    nll = crf(emissions, tags, valid, "none")
    assert torch.equal(nll, crf(changed_emissions, changed_tags, valid, "none"))
    assert crf.decode(emissions, valid) == crf.decode(changed_emissions, valid)


def test_crf_negative_log_likelihood_gradcheck():
    torch.manual_seed(4)
    crf = CRF(3).double()
    emissions = torch.randn(3, 4, 3, dtype=torch.float64, requires_grad=True)
    valid = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    tags = torch.randint(3, (3, 4))
    names = ("transitions", "start_transitions", "end_transitions")
    parameters = [getattr(crf, name).detach().clone().requires_grad_(True) for name in names]

    def nll(emissions, transitions, start, end):
        values = dict(zip(names, (transitions, start, end), strict=True))
        return functional_call(crf, values, (emissions, tags, valid), {"reduction": "sum"})

    assert torch.autograd.gradcheck(nll, (emissions, *parameters))


def test_crf_rejects_bad_masks():
    crf = CRF(2)
    emissions = torch.randn(2, 3, 2)
    with pytest.raises(ValueError, match="at least one valid step"):
        crf.log_partition(emissions, torch.tensor([[1, 1, 1], [0, 0, 0]], dtype=torch.bool))
    with pytest.raises(ValueError, match="prefix"):
        crf.log_partition(emissions, torch.tensor([[1, 0, 1], [1, 1, 1]], dtype=torch.bool))
    with pytest.raises(ValueError, match="K=2"):
        crf.log_partition(torch.randn(2, 3, 5))


# ----------------------------------------------------------------------------------------------------------
# Pooling over valid steps only
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", POOLINGS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_pooling_ignores_padded_values(kind, bidirectional):
    torch.manual_seed(5)
    pooling = Pooling(kind, 6, bidirectional)
    outputs = torch.randn(3, 5, 6)
    lengths = torch.tensor([5, 2, 3])
    changed = outputs.clone()
    changed[1, 2:] = 50.0
    changed[2, 3:] = -50.0
    pooled, weights = pooling(outputs, lengths)
    pooled_changed, _ = pooling(changed, lengths)
    assert torch.allclose(pooled, pooled_changed)
    for b, n in enumerate(lengths.tolist()):  # each row pooled alone over its valid steps
        alone, _ = pooling(outputs[b : b + 1, :n], lengths[b : b + 1])
        assert torch.allclose(pooled[b], alone[0], atol=1e-6)
    if kind == "mean":
        assert torch.allclose(pooled[1], outputs[1, :2].mean(0))
    if kind == "max":
        assert torch.allclose(pooled[2], outputs[2, :3].amax(0))
    if kind == "attention":
        assert torch.allclose(weights.sum(1), torch.ones(3))
        assert weights[1, 2:].eq(0).all() and weights[2, 3:].eq(0).all()
        assert torch.allclose(pooled[1], (weights[1, :2, None] * outputs[1, :2]).sum(0))


@pytest.mark.parametrize("cell", CELLS)
def test_bidirectional_last_pooling_is_each_directions_final_state(cell):
    config = SequenceClassifierConfig(vocab_size=12, num_classes=2, embedding_size=5, hidden_size=4,
                                      num_layers=2, cell=cell, bidirectional=True, pooling="last")
    torch.manual_seed(6)
    model = SequenceClassifier(config).eval()
    tokens = _random_tokens(3, 6, 12)
    lengths = torch.tensor([6, 3, 1])
    pooled, _ = model.encoder(tokens, lengths)  # (B, 2H)
    _, hidden = model.encoder.recurrent(model.encoder.embedding(tokens), lengths=lengths)
    h_n = hidden[0] if cell == "lstm" else hidden  # (L*2, B, H)
    assert torch.allclose(pooled, torch.cat([h_n[-2], h_n[-1]], dim=1), atol=1e-6)
    # And it is what running each sequence alone, unpadded, gives: forward's last step, backward's first.
    for b, n in enumerate(lengths.tolist()):
        outputs, _ = model.encoder.recurrent(model.encoder.embedding(tokens[b : b + 1, :n]))  # (1, n, 2H)
        expected = torch.cat([outputs[0, n - 1, :4], outputs[0, 0, 4:]])
        assert torch.allclose(pooled[b], expected, atol=1e-6)


@pytest.mark.parametrize("kind", POOLINGS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_classifier_output_does_not_depend_on_padding(kind, bidirectional):
    config = SequenceClassifierConfig(vocab_size=12, num_classes=3, embedding_size=5, hidden_size=4,
                                      bidirectional=bidirectional, pooling=kind)
    torch.manual_seed(7)
    model = SequenceClassifier(config).eval()
    tokens = _random_tokens(3, 6, 12, seed=1)
    lengths = torch.tensor([6, 2, 4])
    changed = tokens.clone()
    changed[1, 2:] = 5
    changed[2, 4:] = 0
    logits = model(tokens, lengths)
    assert logits.shape == (3, 3)
    if kind == "attention":
        assert model.attention_weights.shape == (3, 6)
    assert torch.allclose(logits, model(changed, lengths), atol=1e-6)
    for b, n in enumerate(lengths.tolist()):
        assert torch.allclose(logits[b], model(tokens[b : b + 1, :n])[0], atol=1e-6)


def test_float_inputs_classifier_and_regressor():
    torch.manual_seed(8)
    config = {"input_size": 2, "num_classes": 4, "hidden_size": 5, "pooling": "mean"}
    classifier = build_model("classify", config)
    inputs = torch.randn(3, 7, 2)
    lengths = torch.tensor([7, 3, 5])
    assert classifier(inputs, lengths).shape == (3, 4)
    assert classifier.predict(inputs, lengths).shape == (3,)
    with pytest.raises(ValueError, match="input_size=2"):
        classifier(torch.randn(3, 7, 5), lengths)
    regressor = build_model("regress", {"input_size": 2, "hidden_size": 5, "bidirectional": False})
    assert isinstance(regressor, SequenceRegressor)
    outputs = regressor(inputs, lengths)
    assert outputs.shape == (3, 1)
    targets = torch.randn(3)
    expected = ((outputs[:, 0] - targets) ** 2).mean().item()
    assert regressor.loss(outputs, targets).item() == pytest.approx(expected)
    changed = inputs.clone()
    changed[1, 3:] = 9.0
    assert torch.allclose(outputs, regressor(changed, lengths), atol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# Language model
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_lm_carried_state_equals_one_pass(cell):
    model = _lm(cell)
    tokens = _random_tokens(3, 10, 11)
    logits, state = model(tokens)
    first, middle = model(tokens[:, :4])
    second, end = model(tokens[:, 4:], model.detach_state(middle))
    assert torch.allclose(logits, torch.cat([first, second], dim=1), atol=1e-6)
    assert state.keys() == end.keys() == ({"h", "c"} if cell == "lstm" else {"h"})
    for key in state:
        assert state[key].shape == (3, 2, 8)  # (B, L, H): batch first for the decoders
        assert torch.allclose(state[key], end[key], atol=1e-6)


@pytest.mark.parametrize("cell", CELLS)
def test_lm_step_reproduces_forward_log_probs(cell):
    model = _lm(cell)
    tokens = _random_tokens(2, 7, 11, seed=2)
    logits, _ = model(tokens)
    expected = logits.log_softmax(-1)
    state = model.start(2)
    for t in range(tokens.size(1)):
        log_probs, state = model.step(tokens[:, t], state)
        assert torch.allclose(log_probs, expected[:, t], atol=1e-6)


def test_lm_lengths_give_each_rows_own_final_state():
    model = _lm("lstm")
    tokens = _random_tokens(2, 6, 11, seed=3)
    lengths = torch.tensor([6, 3])
    logits, state = model(tokens, lengths=lengths)
    alone_logits, alone_state = model(tokens[1:, :3])
    assert torch.allclose(logits[1, :3], alone_logits[0], atol=1e-6)
    for key in ("h", "c"):
        assert torch.allclose(state[key][1], alone_state[key][0], atol=1e-6)
    targets = tokens.masked_fill(torch.arange(6) >= lengths.unsqueeze(1), 0)  # pad the targets
    loss = model.loss(logits, targets)
    valid = targets != 0
    expected = F.cross_entropy(logits[valid], targets[valid])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_lm_truncated_bptt_cuts_the_graph():
    model = _lm("gru").train()
    tokens = _random_tokens(2, 8, 11, seed=4)
    _, state = model(tokens[:, :4])
    detached = model.detach_state(state)
    assert all(not value.requires_grad for value in detached.values())
    logits, _ = model(tokens[:, 4:], detached)
    logits.sum().backward()  # would fail on a second backward through the first chunk only if it were kept
    assert model.embedding.weight.grad is not None


def test_generate_is_reproducible_and_continues_the_prompt():
    model = _lm("lstm")
    prompt = torch.tensor([4, 5, 6])
    first = model.generate(prompt, 12, temperature=1.0, generator=torch.Generator().manual_seed(0))
    again = model.generate(prompt, 12, temperature=1.0, generator=torch.Generator().manual_seed(0))
    other = model.generate(prompt, 12, temperature=1.0, generator=torch.Generator().manual_seed(1))
    assert first.shape == (12,) and torch.equal(first, again)
    assert not torch.equal(first, other)  # 11^12 sequences: equal by chance is negligible
    # Temperature 0 is greedy: each token is the argmax after the prompt and what was generated before it.
    greedy = model.generate(prompt, 6, temperature=0)
    sequence = torch.cat([prompt, greedy]).unsqueeze(0)
    logits, _ = model(sequence)
    assert torch.equal(logits[0, 2:-1].argmax(-1), greedy)
    batch = model.generate(torch.stack([prompt, prompt]), 5, temperature=0)
    assert batch.shape == (2, 5) and torch.equal(batch[0], greedy[:5]) and torch.equal(batch[1], greedy[:5])


@pytest.mark.parametrize("top_k", [1, 3])
def test_generate_respects_top_k(top_k):
    model = _lm("gru", vocab_size=30)
    prompt = torch.tensor([[4, 9], [7, 8]])
    generator = torch.Generator().manual_seed(5)
    generated = model.generate(prompt, 15, temperature=2.0, top_k=top_k, generator=generator)
    logits, _ = model(torch.cat([prompt, generated], dim=1))
    log_probs = logits[:, 1:-1].log_softmax(-1)  # (B, 15, V): the distribution each token was drawn from
    rank = (log_probs > log_probs.gather(2, generated.unsqueeze(2))).sum(-1)  # tokens strictly more probable
    assert (rank < top_k).all()


def test_generate_respects_top_p():
    model = _lm("lstm", vocab_size=30)
    prompt = torch.tensor([4])
    generated = model.generate(prompt, 20, top_p=0.5, generator=torch.Generator().manual_seed(6))
    logits, _ = model(torch.cat([prompt, generated]).unsqueeze(0))
    kept = filter_log_probs(logits[0, :-1].log_softmax(-1), top_p=0.5)  # (20, V), -inf outside the nucleus
    assert torch.isfinite(kept.gather(1, generated.unsqueeze(1))).all()


def test_generate_from_an_empty_prompt_starts_at_bos():
    model = _lm("gru")
    greedy = model.generate(torch.zeros(0, dtype=torch.long), 4, temperature=0)
    logits, _ = model(torch.cat([torch.tensor([model.config.bos_id]), greedy]).unsqueeze(0))
    assert torch.equal(logits[0, :-1].argmax(-1), greedy)
    assert torch.equal(model.generate([], 4, temperature=0), greedy)  # a plain list works too


def test_generate_stops_at_eos_and_keeps_training_mode():
    model = _lm("rnn").train()
    prompt = torch.tensor([4, 5])
    tokens = model.generate(prompt, 30, generator=torch.Generator().manual_seed(0))
    eos = int(tokens[0])  # make the first sampled token the end token: the row stops there
    again = model.generate(prompt, 30, generator=torch.Generator().manual_seed(0), eos_id=eos)
    assert again[0] == eos and again[1:].eq(0).all()
    assert model.training


def test_lm_rejects_bad_inputs():
    model = _lm("lstm")
    with pytest.raises(ValueError, match="token ids"):
        model(torch.randn(2, 3))
    with pytest.raises(ValueError, match="vocab_size=11"):
        model(torch.tensor([[1, 11]]))
    with pytest.raises(ValueError, match="keys"):
        model(torch.tensor([[1, 2]]), {"h": torch.zeros(1, 2, 8)})
    with pytest.raises(ValueError, match=r"\(B, L, H\)"):
        model(torch.tensor([[1, 2]]), {"h": torch.zeros(2, 1, 8), "c": torch.zeros(2, 1, 8)})


# ----------------------------------------------------------------------------------------------------------
# Tagger
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("crf", [False, True])
def test_tagger_loss_and_decode_over_valid_tokens(crf):
    torch.manual_seed(9)
    model = SequenceTagger(SequenceTaggerConfig(vocab_size=15, num_tags=4, embedding_size=6, hidden_size=5,
                                                crf=crf)).eval()
    tokens = _random_tokens(3, 5, 15, seed=5)
    lengths = torch.tensor([5, 2, 3])
    tags = torch.randint(4, (3, 5))
    emissions = model(tokens, lengths)
    assert emissions.shape == (3, 5, 4)
    loss = model.loss(emissions, tags, lengths)
    changed_tags = tags.clone()
    changed_tags[1, 2:] = (changed_tags[1, 2:] + 1) % 4
    assert loss.item() == pytest.approx(model.loss(emissions, changed_tags, lengths).item())
    valid = torch.arange(5) < lengths.unsqueeze(1)
    if crf:
        expected = -model.crf.log_likelihood(emissions, tags, valid).mean()
    else:
        expected = F.cross_entropy(emissions[valid], tags[valid])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    decoded = model.decode(tokens, lengths)
    assert [len(row) for row in decoded] == [5, 2, 3]
    if not crf:
        assert decoded[0] == emissions[0].argmax(-1).tolist()


def test_tagger_with_crf_fits_alternating_tags():
    """Training end to end through the CRF likelihood reaches the training tags (Viterbi decoding)."""
    torch.manual_seed(10)
    model = SequenceTagger(SequenceTaggerConfig(vocab_size=6, num_tags=2, embedding_size=4, hidden_size=4,
                                                crf=True, bidirectional=False))
    tokens = torch.full((8, 6), 4)
    lengths = torch.tensor([6, 5, 4, 3, 2, 1, 6, 6])
    tags = (torch.arange(6) % 2).expand(8, 6)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(60):
        optimizer.zero_grad()
        loss = model.loss(model(tokens, lengths), tags, lengths)
        loss.backward()
        optimizer.step()
    assert model.decode(tokens, lengths) == [tags[b, :n].tolist() for b, n in enumerate(lengths.tolist())]


# ----------------------------------------------------------------------------------------------------------
# Forecaster
# ----------------------------------------------------------------------------------------------------------


def test_make_windows_by_hand():
    inputs, targets = make_windows([0.0, 1.0, 2.0, 3.0, 4.0, 5.0], input_len=3, horizon=2)
    assert inputs.tolist() == [[0, 1, 2], [1, 2, 3]]
    assert targets.tolist() == [[3, 4], [4, 5]]
    inputs, targets = make_windows(np.arange(9.0), input_len=2, horizon=1, stride=3)
    assert inputs.tolist() == [[0, 1], [3, 4], [6, 7]] and targets.tolist() == [[2], [5], [8]]
    with pytest.raises(ValueError, match="shorter than input_len"):
        make_windows([1.0, 2.0], 2, 1)


def test_scaler_is_fitted_on_the_training_part_only():
    series = np.concatenate([np.linspace(0, 1, 80), np.linspace(10, 20, 20)])  # the test part is far off
    train = series[:80]
    model = Forecaster(ForecasterConfig(input_len=5, horizon=3, hidden_size=4))
    scaler = model.fit_scaler(train)
    assert scaler.mean == pytest.approx(train.mean()) and scaler.std == pytest.approx(train.std())
    assert scaler.mean != pytest.approx(series.mean())
    assert model.config.to_dict()["scaler"] == {"mean": scaler.mean, "std": scaler.std}
    # predict works in raw units: it equals the network on standardised inputs, mapped back.
    window = torch.tensor(series[-5:], dtype=torch.float32)
    expected = model(((window - scaler.mean) / scaler.std).unsqueeze(0))[0] * scaler.std + scaler.mean
    assert torch.allclose(model.predict(window), expected, atol=1e-5)
    assert model.predict(window.unsqueeze(0)).shape == (1, 3)
    assert model(torch.zeros(4, 5, 1)).shape == (4, 3)
    with pytest.raises(ValueError, match="input_len=5"):
        model(torch.zeros(4, 6))
    assert StandardScaler.fit([2.0, 2.0]).std == 1.0  # a constant series is not divided by zero


def test_forecaster_beats_the_naive_baseline_on_a_sine():
    torch.manual_seed(11)
    t = np.arange(400)
    series = np.sin(2 * np.pi * t / 16) + 0.5 * np.sin(2 * np.pi * t / 40)
    train, test = series[:300], series[300 - 12 :]  # the test windows start with history from train
    model = Forecaster(ForecasterConfig(input_len=12, horizon=4, hidden_size=16, cell="gru"))
    scaler = model.fit_scaler(train)
    inputs, targets = make_windows(scaler.transform(train), 12, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        optimizer.zero_grad()
        loss = F.mse_loss(model(inputs), targets)
        loss.backward()
        optimizer.step()
    test_inputs, test_targets = make_windows(test, 12, 4)
    forecast = model.predict(test_inputs)
    model_rmse = rmse(forecast, test_targets)
    naive_rmse = rmse(naive_forecast(test_inputs, 4), test_targets)
    print(f"sine forecast RMSE {model_rmse:.4f}, naive {naive_rmse:.4f}")
    assert model_rmse < 0.5 * naive_rmse, (model_rmse, naive_rmse)
    assert math.isfinite(model_rmse)
