"""ONNX export: onnxruntime gives the torch model's outputs (max abs difference <= 1e-4) on batches with
variable lengths, and with batch sizes and lengths other than the export example's (dynamic axes)."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime
import pytest
import torch

import rnnkit
from rnnkit.export import OnnxRecurrent, default_parts, export_onnx
from rnnkit.models import (
    LanguageModel,
    LanguageModelConfig,
    SequenceClassifier,
    SequenceClassifierConfig,
    SequenceTagger,
    SequenceTaggerConfig,
)
from rnnkit.seq2seq import Seq2Seq, Seq2SeqConfig

TOLERANCE = 1e-4


def _session(path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(session, feeds: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Run with the feeds the graph takes (the exporter drops inputs a graph does not read)."""
    wanted = {i.name for i in session.get_inputs()}
    outputs = session.run(None, {name: value.numpy() for name, value in feeds.items() if name in wanted})
    return {o.name: value for o, value in zip(session.get_outputs(), outputs, strict=True)}


def _max_diff(onnx_value: np.ndarray, torch_value: torch.Tensor) -> float:
    assert onnx_value.shape == tuple(torch_value.shape)
    return float(np.abs(onnx_value - torch_value.detach().numpy()).max())


def _batch(vocab_size: int, lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab_size, (len(lengths), max(lengths)), generator=generator)  # (B, T)
    return tokens, torch.tensor(lengths)


# Batches unlike the export example (B=3, T=5), padded in varied places.
BATCHES = [[9, 3, 1, 6], [2], [4, 7, 7, 1, 3, 2]]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_classifier_parity(tmp_path, cell, pooling):
    torch.manual_seed(0)
    config = SequenceClassifierConfig(vocab_size=20, num_classes=3, hidden_size=6, embedding_size=5, cell=cell,
                                      num_layers=2, bidirectional=True, pooling=pooling, dropout=0.2)
    model = SequenceClassifier(config).eval()
    session = _session(export_onnx(model, tmp_path / "classifier.onnx"))
    assert [i.name for i in session.get_inputs()] == ["tokens", "lengths"]
    for lengths in BATCHES:
        tokens, lengths = _batch(20, lengths)
        with torch.no_grad():
            expected = model(tokens, lengths)
        got = _run(session, {"tokens": tokens, "lengths": lengths})["logits"]
        assert _max_diff(got, expected) <= TOLERANCE


def test_classifier_with_float_inputs(tmp_path):
    torch.manual_seed(1)
    config = SequenceClassifierConfig(input_size=2, num_classes=2, hidden_size=5, cell="lstm", pooling="max")
    model = SequenceClassifier(config).eval()
    session = _session(export_onnx(model, tmp_path / "c.onnx", part="classifier"))
    inputs, lengths = torch.randn(4, 11, 2), torch.tensor([11, 4, 1, 8])
    with torch.no_grad():
        expected = model(inputs, lengths)
    assert _max_diff(_run(session, {"inputs": inputs, "lengths": lengths})["logits"], expected) <= TOLERANCE


@pytest.mark.parametrize("crf", [True, False])
def test_tagger_parity_and_viterbi_on_exported_emissions(tmp_path, crf):
    torch.manual_seed(2)
    config = SequenceTaggerConfig(vocab_size=20, num_tags=4, hidden_size=6, embedding_size=5, cell="lstm",
                                  num_layers=2, bidirectional=True, crf=crf)
    model = SequenceTagger(config).eval()
    session = _session(export_onnx(model, tmp_path / "tagger.onnx"))
    for lengths in BATCHES:
        tokens, lengths = _batch(20, lengths, seed=1)
        with torch.no_grad():
            expected = model(tokens, lengths)
        emissions = _run(session, {"tokens": tokens, "lengths": lengths})["emissions"]
        assert _max_diff(emissions, expected) <= TOLERANCE
        if crf:  # Viterbi stays in Python, on the exported emissions
            valid = torch.arange(tokens.shape[1]) < lengths.unsqueeze(1)  # (B, T)
            assert model.crf.decode(torch.from_numpy(emissions), valid) == model.decode(tokens, lengths)


@pytest.mark.parametrize("cell, layer_norm", [("lstm", False), ("gru", False), ("rnn", False), ("lstm", True),
                                              ("gru", True)])
def test_language_model_step_parity_over_steps(tmp_path, cell, layer_norm):
    torch.manual_seed(3)
    config = LanguageModelConfig(vocab_size=17, hidden_size=6, embedding_size=6, cell=cell, num_layers=2,
                                 tie_weights=True, layer_norm=layer_norm)  # layer norm: traced own path
    model = LanguageModel(config).eval()
    session = _session(export_onnx(model, tmp_path / "lm.onnx"))
    keys = ("h", "c") if cell == "lstm" else ("h",)
    state = model.start(5)
    onnx_state = {f"state.{key}": state[key] for key in keys}
    generator = torch.Generator().manual_seed(0)
    for _ in range(6):  # carry the ONNX state from step to step, as a runtime would
        tokens = torch.randint(0, 17, (5,), generator=generator)
        with torch.no_grad():
            expected, state = model.step(tokens, state)
        outputs = _run(session, {"tokens": tokens, **onnx_state})
        assert _max_diff(outputs["log_probs"], expected) <= TOLERANCE
        onnx_state = {f"state.{key}": torch.from_numpy(outputs[f"state_out.{key}"]) for key in keys}
    for key in keys:
        assert _max_diff(onnx_state[f"state.{key}"].numpy(), state[key]) <= TOLERANCE


@pytest.mark.parametrize(
    "decoder, cell, attention, input_feeding",
    [("luong", "lstm", None, True), ("bahdanau", "gru", None, False), ("none", "lstm", None, False),
     ("luong", "gru", "dot", False), ("bahdanau", "lstm", "copy+coverage", False)],
)
def test_seq2seq_encoder_and_decoder_step_parity(tmp_path, decoder, cell, attention, input_feeding):
    torch.manual_seed(4)
    extra = {}
    if attention == "copy+coverage":  # their state entries (coverage, source ids) have S along dim 1 too
        attention, extra = "additive", {"coverage": True, "copy_attention": True, "embedding_size": 6}
    config = Seq2SeqConfig(**{"source_vocab_size": 15, "target_vocab_size": 15 if extra else 12,
                              "embedding_size": 5, "hidden_size": 6, "num_layers": 2, "cell": cell,
                              "decoder": decoder, "attention": attention, "input_feeding": input_feeding, **extra})
    model = Seq2Seq.build(config).eval()
    assert default_parts(model) == ("encoder", "decoder-step")
    with pytest.raises(ValueError, match="choose one"):
        export_onnx(model, tmp_path / "x.onnx")
    encoder = _session(export_onnx(model, tmp_path / "encoder.onnx", part="encoder"))
    step = _session(export_onnx(model, tmp_path / "decoder-step.onnx", part="decoder-step"))
    src, src_lengths = _batch(15, [8, 2, 5, 1], seed=2)
    with torch.no_grad():
        state = model.start(src, src_lengths)
    encoded = _run(encoder, {"src": src, "src_lengths": src_lengths})
    assert sorted(encoded) == sorted(f"state.{key}" for key in state)
    for name, value in encoded.items():
        assert _max_diff(value.astype(np.float32), state[name[6:]].float()) <= TOLERANCE
    # Greedy decoding in onnxruntime picks the same tokens as in torch, step after step.
    onnx_state = {name: torch.from_numpy(value) for name, value in encoded.items()}
    tokens = onnx_tokens = torch.full((4,), model.bos_id)
    for _ in range(5):
        with torch.no_grad():
            expected, state = model.step(tokens, state)
        outputs = _run(step, {"prev_tokens": onnx_tokens, **onnx_state})
        assert _max_diff(outputs["log_probs"], expected) <= TOLERANCE
        tokens, onnx_tokens = expected.argmax(-1), torch.from_numpy(outputs["log_probs"].argmax(-1))
        assert torch.equal(tokens, onnx_tokens)
        onnx_state = {"state." + name[10:]: torch.from_numpy(value)
                      for name, value in outputs.items() if name.startswith("state_out.")}


LAYERS = [
    lambda: rnnkit.GRU(3, 4, num_layers=2, reset_after=False, bidirectional=True, batch_first=True),
    lambda: rnnkit.RNN(3, 4, nonlinearity="relu", bias=False, bidirectional=True, batch_first=True),
    lambda: rnnkit.LSTM(3, 4, num_layers=3, batch_first=True, use_fused=False),
]


class _LayerWithState(torch.nn.Module):
    def __init__(self, layer) -> None:
        super().__init__()
        self.layer = OnnxRecurrent(layer)

    def forward(self, x, lengths, h0):
        hx = (h0, h0.flip(0)) if self.layer.layer.mode == "LSTM" else h0
        output, hidden = self.layer(x, hx, lengths=lengths)
        return (output, *hidden) if isinstance(hidden, tuple) else (output, hidden)


@pytest.mark.parametrize("make", LAYERS, ids=["gru-cho-bidirectional", "rnn-relu-no-bias", "lstm-3-layers"])
def test_layer_parity_with_initial_state(tmp_path, make):
    torch.manual_seed(5)
    layer = make().eval()
    states = layer.num_layers * layer.num_directions
    x, lengths, h0 = torch.randn(3, 5, 3), torch.tensor([5, 2, 4]), torch.randn(states, 3, 4)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_LayerWithState(layer), (x, lengths, h0), str(tmp_path / "layer.onnx"), dynamo=False,
                          input_names=["x", "lengths", "h0"],
                          dynamic_axes={"x": {0: "B", 1: "T"}, "lengths": {0: "B"}, "h0": {1: "B"}})
    session = _session(tmp_path / "layer.onnx")
    x, lengths, h0 = torch.randn(4, 7, 3), torch.tensor([1, 7, 3, 6]), torch.randn(states, 4, 4)
    with torch.no_grad():
        expected = _LayerWithState(layer)(x, lengths, h0)
        reference, _ = layer(x, (h0, h0.flip(0)) if layer.mode == "LSTM" else h0, lengths=lengths)
    got = session.run(None, {"x": x.numpy(), "lengths": lengths.numpy(), "h0": h0.numpy()})
    torch.testing.assert_close(expected[0], reference)  # the wrapper computes what the layer computes
    for onnx_value, torch_value in zip(got, expected, strict=True):
        assert _max_diff(onnx_value, torch_value) <= TOLERANCE


def test_unsupported_models_and_parts_are_refused(tmp_path):
    config = SequenceTaggerConfig(vocab_size=9, num_tags=3, hidden_size=4, embedding_size=4, layer_norm=True)
    with pytest.raises(ValueError, match="layer_norm=True"):
        export_onnx(SequenceTagger(config), tmp_path / "tagger.onnx")
    with pytest.raises(ValueError, match="proj_size=2"):
        OnnxRecurrent(rnnkit.LSTM(3, 4, proj_size=2))
    model = LanguageModel(LanguageModelConfig(vocab_size=9, hidden_size=4, embedding_size=4))
    with pytest.raises(ValueError, match="needs a SequenceTagger"):
        export_onnx(model, tmp_path / "t.onnx", part="tagger")
    with pytest.raises(ValueError, match="part must be one of"):
        export_onnx(model, tmp_path / "t.onnx", part="decoder")
    with pytest.raises(ValueError, match="config.json"):
        export_onnx(tmp_path / "no-run", tmp_path / "t.onnx")


def test_export_run_directory(tmp_path):
    """``rnnkit export RUN_DIR --format onnx``: every part of a trained run's model, with parity."""
    from rnnkit.export import export_run, load_run_model
    from rnnkit.tasks import resolve_settings, training_settings, translate
    from rnnkit.training import Trainer

    settings = resolve_settings("translate", {"max_steps": 2, "hidden_size": 8, "embedding_size": 4,
                                              "max_train_examples": 64, "eval_examples": 8, "batch_size": 8,
                                              "progress": False})
    task, run_config = translate.prepare(settings, tmp_path / "run")
    Trainer(task, tmp_path / "run", training_settings(settings), run_config=run_config).train()
    paths = export_run(tmp_path / "run")
    assert [path.name for path in paths] == ["encoder.onnx", "decoder-step.onnx"]
    assert all(path.parent == tmp_path / "run" / "onnx" for path in paths)
    model = load_run_model(tmp_path / "run").eval()
    src, src_lengths = _batch(model.encoder.embedding.num_embeddings, [6, 3])
    with torch.no_grad():
        state = model.start(src, src_lengths)
        expected, _ = model.step(torch.full((2,), model.bos_id), state)
    encoded = _run(_session(paths[0]), {"src": src, "src_lengths": src_lengths})
    feeds = {name: torch.from_numpy(value) for name, value in encoded.items()}
    outputs = _run(_session(paths[1]), {"prev_tokens": torch.full((2,), model.bos_id), **feeds})
    assert _max_diff(outputs["log_probs"], expected) <= TOLERANCE


def test_layer_parity_when_products_would_go_to_onednn(tmp_path, monkeypatch):
    """With every product large enough for oneDNN (rnnkit.linear), the export still sees F.linear."""
    from rnnkit import linear

    monkeypatch.setattr(linear, "_AVAILABLE", linear._SUPPORTED)  # whatever this CPU would choose
    monkeypatch.setattr(linear, "MIN_MACS", 0)
    test_layer_parity_with_initial_state(tmp_path, LAYERS[2])
    test_classifier_parity(tmp_path, "gru", "mean")
