"""Streaming one step at a time equals running the whole sequence at once, with constant memory."""

from __future__ import annotations

import json

import pytest
import torch

import rnnkit
from rnnkit.models import LanguageModel, LanguageModelConfig
from rnnkit.seq2seq import Seq2Seq, Seq2SeqConfig
from rnnkit.streaming import (
    DecoderStreamer,
    LanguageModelStreamer,
    LayerStreamer,
    sse_events,
    state_tensors,
    stream,
)

TOLERANCE = 1e-5

LAYERS = [
    ("lstm", lambda: rnnkit.LSTM(5, 7, batch_first=True)),
    ("lstm-2-layers-layer-norm", lambda: rnnkit.LSTM(5, 7, num_layers=2, layer_norm=True)),
    ("lstm-projection", lambda: rnnkit.LSTM(5, 7, num_layers=2, proj_size=3, batch_first=True)),
    ("gru-2-layers", lambda: rnnkit.GRU(5, 7, num_layers=2, batch_first=True)),
    ("gru-cho-layer-norm", lambda: rnnkit.GRU(5, 7, reset_after=False, layer_norm=True, batch_first=True)),
    ("rnn-relu-own-path", lambda: rnnkit.RNN(5, 7, num_layers=3, nonlinearity="relu", use_fused=False)),
]


@pytest.mark.parametrize("name, make", LAYERS, ids=[name for name, _ in LAYERS])
def test_layer_stream_equals_whole_sequence(name, make):
    torch.manual_seed(0)
    layer = make().eval()
    batch, steps = 3, 9
    x = torch.randn(batch, steps, 5) if layer.batch_first else torch.randn(steps, batch, 5)
    with torch.no_grad():
        expected, expected_state = layer(x)
    streamer = LayerStreamer(layer)
    frames = x.unbind(1 if layer.batch_first else 0)
    outputs = torch.stack([streamer.feed(frame) for frame in frames], dim=1 if layer.batch_first else 0)
    assert outputs.shape == expected.shape
    torch.testing.assert_close(outputs, expected, atol=TOLERANCE, rtol=0)
    for got, want in zip(state_tensors(streamer.state), state_tensors(expected_state), strict=True):
        torch.testing.assert_close(got, want, atol=TOLERANCE, rtol=0)


def test_layer_stream_single_frame_and_reset():
    torch.manual_seed(1)
    layer = rnnkit.GRU(4, 6).eval()
    x = torch.randn(5, 4)  # unbatched (T, D)
    with torch.no_grad():
        expected, _ = layer(x)
    streamer = stream(layer)
    first = torch.stack([streamer.feed(frame) for frame in x])  # (T, H)
    torch.testing.assert_close(first, expected, atol=TOLERANCE, rtol=0)
    streamer.reset()
    again = torch.stack([streamer.feed(frame) for frame in x])
    torch.testing.assert_close(again, first, atol=0, rtol=0)


def test_layer_stream_keeps_constant_memory():
    torch.manual_seed(2)
    layer = rnnkit.LSTM(3, 4, num_layers=2, layer_norm=True, batch_first=True)
    streamer = LayerStreamer(layer)
    streamer.feed(torch.randn(2, 3))
    shapes = [tuple(t.shape) for t in state_tensors(streamer.state)]
    for _ in range(1000):
        streamer.feed(torch.randn(2, 3))
    assert [tuple(t.shape) for t in state_tensors(streamer.state)] == shapes == [(2, 2, 4), (2, 2, 4)]
    assert all(not t.requires_grad for t in state_tensors(streamer.state))  # no graph kept across steps
    assert streamer.steps == 1001


def test_bidirectional_layer_is_refused():
    with pytest.raises(ValueError, match="bidirectional"):
        LayerStreamer(rnnkit.LSTM(3, 4, bidirectional=True))
    with pytest.raises(ValueError, match="one frame"):
        LayerStreamer(rnnkit.LSTM(3, 4)).feed(torch.randn(1, 2, 3))
    with pytest.raises(ValueError, match="LanguageModel"):
        stream(torch.nn.Linear(2, 2))


def _language_model(cell: str, num_layers: int = 2, layer_norm: bool = False) -> LanguageModel:
    torch.manual_seed(3)
    config = LanguageModelConfig(vocab_size=11, embedding_size=6, hidden_size=8, num_layers=num_layers,
                                 cell=cell, layer_norm=layer_norm, dropout=0.1)
    return LanguageModel(config)


@pytest.mark.parametrize("cell, layer_norm", [("lstm", False), ("lstm", True), ("gru", False), ("rnn", False)])
def test_language_model_stream_equals_whole_sequence(cell, layer_norm):
    model = _language_model(cell, layer_norm=layer_norm)
    tokens = torch.randint(0, 11, (1, 12))
    model.eval()
    with torch.no_grad():
        logits, expected_state = model(tokens)
    model.train()  # the streamer evaluates without dropout whatever the model's mode
    streamer = LanguageModelStreamer(model)
    log_probs = torch.stack([streamer.feed(int(t)) for t in tokens[0]])  # (T, V)
    assert model.training
    torch.testing.assert_close(log_probs, logits[0].log_softmax(-1), atol=TOLERANCE, rtol=0)
    for key in expected_state:
        torch.testing.assert_close(streamer.state[key], expected_state[key], atol=TOLERANCE, rtol=0)


def test_language_model_stream_constant_memory_and_batch():
    model = _language_model("lstm").eval()
    streamer = LanguageModelStreamer(model, batch_size=2)
    shapes = [tuple(t.shape) for t in state_tensors(streamer.state)]
    for step in range(1000):
        streamer.feed(torch.tensor([step % 11, (3 * step) % 11]))
    assert [tuple(t.shape) for t in state_tensors(streamer.state)] == shapes == [(2, 2, 8), (2, 2, 8)]
    with pytest.raises(ValueError, match="2 token id"):
        streamer.feed(4)


@pytest.mark.parametrize("temperature, top_k", [(0.0, None), (0.8, 4), (1.0, None)])
def test_generate_stream_equals_generate(temperature, top_k):
    model = _language_model("gru").eval()
    prompt = [4, 7, 1]
    streamer = LanguageModelStreamer(model)
    tokens = list(streamer.generate_stream(prompt, 15, temperature=temperature, top_k=top_k, seed=5))
    expected = model.generate(torch.tensor(prompt), 15, temperature=temperature, top_k=top_k,
                              generator=torch.Generator().manual_seed(5))
    assert tokens == expected.tolist()
    assert all(isinstance(t, int) for t in tokens)
    if top_k is not None:
        # the same seed gives the same stream; a generator yields lazily, one token per next()
        again = streamer.generate_stream(prompt, 15, temperature=temperature, top_k=top_k, seed=5)
        assert next(again) == tokens[0]


def test_generate_stream_rejects_bad_arguments():
    streamer = LanguageModelStreamer(_language_model("lstm"))
    with pytest.raises(ValueError, match="temperature"):
        list(streamer.generate_stream([1], 3, temperature=-1.0))
    with pytest.raises(ValueError, match="vocab_size"):
        list(streamer.generate_stream([99], 3))
    with pytest.raises(ValueError, match="n, the number"):
        list(streamer.generate_stream([1], 0))


@pytest.mark.parametrize("decoder, cell", [("luong", "lstm"), ("bahdanau", "gru"), ("none", "lstm")])
def test_decoder_stream_equals_teacher_forced_forward(decoder, cell):
    torch.manual_seed(4)
    config = Seq2SeqConfig(source_vocab_size=13, target_vocab_size=12, embedding_size=6, hidden_size=8,
                           num_layers=2, cell=cell, decoder=decoder)
    model = Seq2Seq.build(config).eval()
    src = torch.randint(4, 13, (3, 7))
    src_lengths = torch.tensor([7, 3, 5])
    tgt_in = torch.randint(4, 12, (3, 6))
    with torch.no_grad():
        expected = model(src, src_lengths, tgt_in, fast_path=False).log_softmax(-1)  # (B, T, V)
    streamer = stream(model)
    assert isinstance(streamer, DecoderStreamer)
    with pytest.raises(ValueError, match="start"):
        streamer.feed(torch.tensor([1, 2, 3]))
    streamer.start(src, src_lengths)
    shapes = [tuple(t.shape) for t in state_tensors(streamer.state)]
    log_probs = torch.stack([streamer.feed(column) for column in tgt_in.unbind(1)], dim=1)
    torch.testing.assert_close(log_probs, expected, atol=TOLERANCE, rtol=0)
    assert [tuple(t.shape) for t in state_tensors(streamer.state)] == shapes
    streamer.reset()
    torch.testing.assert_close(streamer.feed(tgt_in[:, 0]), expected[:, 0], atol=TOLERANCE, rtol=0)


def _parse_events(text: str) -> list[tuple[str, object]]:
    """A minimal reader of the text/event-stream format, written from the HTML standard's rules."""
    events = []
    for frame in text.split("\n\n"):
        if not frame:
            continue
        fields = dict(line.split(": ", 1) for line in frame.split("\n"))
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def test_sse_events_format():
    text = "".join(sse_events(iter(["a", "b\nc", 5])))
    assert text.endswith("\n\n") and text.count("\n\n") == 4
    assert _parse_events(text) == [("token", "a"), ("token", "b\nc"), ("token", 5), ("done", {"count": 3})]


def test_sse_events_reports_errors_and_checks_names():
    def failing():
        yield 1
        raise ValueError("bad prompt")

    assert _parse_events("".join(sse_events(failing()))) == [("token", 1), ("error", {"error": "bad prompt"})]
    with pytest.raises(ValueError, match="event names"):
        list(sse_events([1], event="a\nb"))


def test_sse_of_generate_stream():
    model = _language_model("lstm").eval()
    events = _parse_events("".join(sse_events(LanguageModelStreamer(model).generate_stream([1], 4, 0.0))))
    greedy = model.generate(torch.tensor([1]), 4, temperature=0.0).tolist()
    assert events == [("token", t) for t in greedy] + [("done", {"count": 4})]
