"""torch.compile on models built from rnnkit layers: every layer kind compiles and matches eager mode, with and
without gradients and lengths=, and trains; torch.export of a layer.

Under torch.compile a layer runs as in eager mode, as a graph break (as dynamo treats torch.nn's RNN modules), so
the compiled model calls the fast path or torch's kernel exactly as eager mode does; with
``torch._dynamo.config.allow_rnn`` dynamo traces the cells' plain operations instead. Most tests use the
"aot_eager" backend (dynamo and AOTAutograd, the parts that see the graph breaks, without generating C++); one
compiles the issue's model with the default backend (inductor).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import rnnkit

LAYERS = {
    "lstm": lambda: rnnkit.LSTM(8, 16, batch_first=True, num_layers=2, bidirectional=True),
    "gru": lambda: rnnkit.GRU(8, 16, batch_first=True, bidirectional=True),
    "rnn": lambda: rnnkit.RNN(8, 16, batch_first=True, nonlinearity="relu"),
    "lstm_layer_norm": lambda: rnnkit.LSTM(8, 16, batch_first=True, layer_norm=True),
    "gru_reset_before": lambda: rnnkit.GRU(8, 16, batch_first=True, reset_after=False),
    "recurrent": lambda: rnnkit.Recurrent(rnnkit.LSTMCell(8, 16)),
}
LENGTHS = torch.tensor([5, 2, 4])


class Tagger(nn.Module):
    """A recurrent layer with a linear read-out before and after it: something for the compiler to compile."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 8)
        self.layer = layer
        width = 32 if getattr(layer, "bidirectional", False) else 16
        self.head = nn.Linear(width, 3)

    def forward(self, x, lengths=None):
        output, _ = self.layer(torch.tanh(self.embed(x)), lengths=lengths)
        return self.head(output)


def _model(kind: str) -> Tagger:
    torch.manual_seed(0)
    return Tagger(LAYERS[kind]())


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("kind", list(LAYERS))
def test_every_layer_kind_compiles_and_matches_eager(kind, with_lengths):
    model = _model(kind)
    compiled = torch.compile(model, backend="aot_eager")
    x = torch.randn(3, 5, 8)
    lengths = LENGTHS if with_lengths else None
    with torch.no_grad():  # the issue's failing case: the first call, without gradients
        torch.testing.assert_close(compiled(x, lengths), model(x, lengths))
    inputs = x.clone().requires_grad_()
    loss = compiled(inputs, lengths).square().sum()
    grads = torch.autograd.grad(loss, [inputs, *model.parameters()])
    expected_inputs = x.clone().requires_grad_()
    expected_grads = torch.autograd.grad(model(expected_inputs, lengths).square().sum(),
                                         [expected_inputs, *model.parameters()])
    for ours, reference in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(ours, reference)


@pytest.mark.parametrize("kind", ["lstm", "gru_reset_before"])
def test_a_compiled_model_trains_as_the_eager_one(kind):
    model = _model(kind)
    twin = copy.deepcopy(model)
    compiled = torch.compile(twin, backend="aot_eager")
    generator = torch.Generator().manual_seed(1)
    batches = [(torch.randn(3, 5, 8, generator=generator), torch.randint(0, 3, (3, 5), generator=generator))
               for _ in range(3)]
    for module, run in ((model, model), (twin, compiled)):
        optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
        for x, y in batches:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(run(x, LENGTHS).flatten(0, 1), y.flatten())
            loss.backward()
            optimizer.step()
    for trained, reference in zip(twin.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(trained, reference)


def test_with_allow_rnn_dynamo_traces_the_cells():
    """torch._dynamo.config.allow_rnn: no graph break; dynamo traces the cells' plain operations."""
    model = _model("gru")
    x = torch.randn(3, 4, 8)
    with torch._dynamo.config.patch(allow_rnn=True):
        compiled = torch.compile(model, backend="aot_eager", fullgraph=True)  # fullgraph: a break would raise
        torch.testing.assert_close(compiled(x), model(x))


@pytest.mark.slow
def test_the_issues_model_compiles_with_the_default_backend():
    """torch.compile(rnnkit.LSTM(8, 16, batch_first=True, num_layers=2, bidirectional=True)), called first
    without gradients (issue 17), then with."""
    layer = rnnkit.LSTM(8, 16, batch_first=True, num_layers=2, bidirectional=True)
    compiled = torch.compile(layer)
    x = torch.randn(3, 5, 8)
    with torch.no_grad():
        output, (h_n, c_n) = compiled(x)
    expected, (expected_h, expected_c) = layer(x)
    torch.testing.assert_close(output, expected)
    torch.testing.assert_close(h_n, expected_h)
    output, _ = compiled(x.requires_grad_(), lengths=LENGTHS)
    output.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("kind", ["lstm", "gru", "lstm_layer_norm"])
def test_torch_export_of_a_layer(kind):
    layer = LAYERS[kind]().eval()
    x = torch.randn(3, 5, 8)
    exported = torch.export.export(layer, (x,))
    output, _ = exported.module()(x)
    expected, _ = layer(x)
    torch.testing.assert_close(output, expected)
