"""rnnkit.Recurrent: lengths, directions, stacking, any cell, stateful TBPTT; padding invariance (hypothesis)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit
from rnnkit.cells import GRUCell, LSTMCell, RNNCell
from rnnkit.recurrent import Recurrent
from rnnkit.state import detach_state

D, H, B, T = 3, 4, 4, 6
LENGTHS = [4, 6, 1, 3]
TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}

CELLS = {
    "rnn_tanh": lambda d, hidden, **kw: RNNCell(d, hidden, **kw),
    "rnn_relu": lambda d, hidden, **kw: RNNCell(d, hidden, nonlinearity="relu", **kw),
    "lstm": lambda d, hidden, **kw: LSTMCell(d, hidden, **kw),
    "lstm_proj": lambda d, hidden, **kw: LSTMCell(d, hidden, proj_size=hidden - 1, **kw),
    "lstm_ln": lambda d, hidden, **kw: LSTMCell(d, hidden, layer_norm=True, **kw),
    "gru": lambda d, hidden, **kw: GRUCell(d, hidden, **kw),
    "gru_reset_before": lambda d, hidden, **kw: GRUCell(d, hidden, reset_after=False, **kw),
    "gru_ln": lambda d, hidden, **kw: GRUCell(d, hidden, layer_norm=True, **kw),
}


def _flat(state):
    """All tensors of a list of cell states."""
    tensors = []
    for s in state:
        tensors.extend(s if isinstance(s, tuple) else [s])
    return tensors


def _select(state, index):
    """Keep batch rows ``index`` of every tensor of a list of cell states."""
    return [tuple(t[index] for t in s) if isinstance(s, tuple) else s[index] for s in state]


def _build(name, num_layers, bidirectional, seed=0, **kwargs):
    torch.manual_seed(seed)
    return Recurrent(
        lambda d, layer, direction: CELLS[name](d, H),
        input_size=D,
        num_layers=num_layers,
        bidirectional=bidirectional,
        **kwargs,
    )


def _copy_torch_weights(recurrent: Recurrent, reference: nn.RNNBase) -> None:
    """Cell parameters <- torch.nn parameters (weight_ih_l1_reverse -> cells[3].weight_ih)."""
    directions = 2 if reference.bidirectional else 1
    with torch.no_grad():
        for index, cell in enumerate(recurrent.cells):
            layer, direction = divmod(index, directions)
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            for name, parameter in cell.named_parameters():
                parameter.copy_(getattr(reference, name + suffix))


# ---- padding invariance (property test) -----------------------------------------------------------------


@st.composite
def padded_batches(draw):
    batch = draw(st.integers(1, 4))
    max_length = draw(st.integers(1, 6))
    lengths = draw(st.lists(st.integers(1, max_length), min_size=batch, max_size=batch))
    seed = draw(st.integers(0, 2**16))
    return lengths, max_length, seed


@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (1, True), (2, True)])
@pytest.mark.parametrize("name", list(CELLS))
@settings(max_examples=15, deadline=None)
@given(batch=padded_batches())
def test_padding_invariance(name, num_layers, bidirectional, batch):
    """A sequence's outputs and final state depend neither on its padding nor on the other sequences."""
    lengths, max_length, seed = batch
    recurrent = _build(name, num_layers, bidirectional)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max_length, D, generator=generator)
    garbage = x.clone()
    for b, length in enumerate(lengths):
        garbage[b, length:] = 1e3 * torch.randn(max_length - length, D, generator=generator)  # loud padding
    output, final = recurrent(garbage, lengths=lengths)
    for b, length in enumerate(lengths):
        alone, alone_final = recurrent(x[b : b + 1, :length])  # no padding, no neighbours
        torch.testing.assert_close(output[b : b + 1, :length], alone, **TOLERANCE)
        assert torch.all(output[b, length:] == 0), "outputs past a length are 0"
        for ours, ref in zip(_flat(_select(final, slice(b, b + 1))), _flat(alone_final), strict=True):
            torch.testing.assert_close(ours, ref, **TOLERANCE)


@pytest.mark.parametrize("layer", ["lstm", "gru", "rnn"])
@settings(max_examples=15, deadline=None)
@given(batch=padded_batches(), bidirectional=st.booleans(), fused=st.booleans())
def test_padding_invariance_of_drop_in_layers(layer, batch, bidirectional, fused):
    lengths, max_length, seed = batch
    torch.manual_seed(0)
    module = {"lstm": rnnkit.LSTM, "gru": rnnkit.GRU, "rnn": rnnkit.RNN}[layer](
        D, H, num_layers=2, bidirectional=bidirectional, batch_first=True, use_fused=fused
    )
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max_length, D, generator=generator)
    garbage = x.clone()
    for b, length in enumerate(lengths):
        garbage[b, length:] = 1e3 * torch.randn(max_length - length, D, generator=generator)
    output, hidden = module(garbage, lengths=lengths)
    hidden = hidden if isinstance(hidden, tuple) else (hidden,)
    for b, length in enumerate(lengths):
        alone, alone_hidden = module(x[b : b + 1, :length])
        alone_hidden = alone_hidden if isinstance(alone_hidden, tuple) else (alone_hidden,)
        torch.testing.assert_close(output[b : b + 1, :length], alone, **TOLERANCE)
        assert torch.all(output[b, length:] == 0)
        for ours, ref in zip(hidden, alone_hidden, strict=True):
            torch.testing.assert_close(ours[:, b : b + 1], ref, **TOLERANCE)


# ---- against torch.nn and by hand -----------------------------------------------------------------------


@pytest.mark.parametrize("batch_first", [True, False])
def test_factory_cells_match_torch_lstm_with_lengths(batch_first):
    torch.manual_seed(0)
    reference = nn.LSTM(D, H, num_layers=2, bidirectional=True, batch_first=batch_first)
    recurrent = Recurrent(
        lambda d, layer, direction: LSTMCell(d, H), input_size=D, num_layers=2, bidirectional=True,
        batch_first=batch_first,
    )
    _copy_torch_weights(recurrent, reference)
    x = torch.randn((B, T, D) if batch_first else (T, B, D))
    packed = pack_padded_sequence(x, torch.tensor(LENGTHS), batch_first=batch_first, enforce_sorted=False)
    expected, (h_n, c_n) = reference(packed)
    expected, _ = pad_packed_sequence(expected, batch_first=batch_first, total_length=T)
    output, final = recurrent(x, lengths=torch.tensor(LENGTHS))
    torch.testing.assert_close(output, expected, **TOLERANCE)
    torch.testing.assert_close(torch.stack([h for h, _ in final]), h_n, **TOLERANCE)
    torch.testing.assert_close(torch.stack([c for _, c in final]), c_n, **TOLERANCE)


class TorchGRUCell(nn.Module):
    """torch.nn.GRUCell under the rnnkit cell contract, with no input_projection: the generic path."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.cell = nn.GRUCell(input_size, hidden_size)
        self.hidden_size = hidden_size

    def forward(self, x_t, h):
        h = self.cell(x_t, h)
        return h, h


def test_any_cell_without_input_projection():
    torch.manual_seed(0)
    reference = nn.GRU(D, H, bidirectional=True, batch_first=True)
    cells = [TorchGRUCell(D, H), TorchGRUCell(D, H)]
    for cell, suffix in zip(cells, ["_l0", "_l0_reverse"], strict=True):
        names = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
        cell.cell.load_state_dict({name: getattr(reference, name + suffix) for name in names})
    recurrent = Recurrent(cells, bidirectional=True)
    x = torch.randn(B, T, D)
    packed = pack_padded_sequence(x, torch.tensor(LENGTHS), batch_first=True, enforce_sorted=False)
    expected, h_n = reference(packed)
    expected, _ = pad_packed_sequence(expected, batch_first=True, total_length=T)
    output, final = recurrent(x, lengths=LENGTHS)
    torch.testing.assert_close(output, expected, **TOLERANCE)
    torch.testing.assert_close(torch.stack(final), h_n, **TOLERANCE)


def test_backward_direction_reads_each_valid_prefix_reversed():
    torch.manual_seed(0)
    recurrent = _build("gru_reset_before", 1, True)
    backward_cell = recurrent.cells[1]
    x = torch.randn(B, T, D)
    output, final = recurrent(x, lengths=LENGTHS)
    for b, length in enumerate(LENGTHS):
        h = torch.zeros(1, H)
        for t in reversed(range(length)):
            h, _ = backward_cell(x[b : b + 1, t], h)
            torch.testing.assert_close(output[b : b + 1, t, H:], h, **TOLERANCE)
        torch.testing.assert_close(final[1][b : b + 1], h, **TOLERANCE)


def test_residual_only_between_layers_of_equal_width():
    torch.manual_seed(0)
    widths = [4, 4, 6]  # layer 1 (4 -> 4) gets a residual, layer 2 (4 -> 6) cannot

    def factory(d, layer, direction):
        return GRUCell(d, widths[layer])

    with_residual = Recurrent(factory, input_size=4, num_layers=3, residual=True)
    plain = Recurrent(factory, input_size=4, num_layers=3)
    plain.load_state_dict(with_residual.state_dict())
    x = torch.randn(B, T, 4)
    layer0, _ = Recurrent(with_residual.cells[0])(x)
    layer1, _ = Recurrent(with_residual.cells[1])(layer0)
    layer2, _ = Recurrent(with_residual.cells[2])(layer1 + layer0)
    output, _ = with_residual(x)
    torch.testing.assert_close(output, layer2, **TOLERANCE)
    assert not torch.allclose(plain(x)[0], output)


def test_merge_sum_width_feeds_next_layer():
    recurrent = _build("lstm", 2, True, merge="sum")
    assert recurrent.cells[2].input_size == H
    assert recurrent(torch.randn(B, T, D), lengths=LENGTHS)[0].shape == (B, T, H)


@pytest.mark.parametrize(
    "name,options",
    [
        ("lstm_ln", {}),
        ("lstm_proj", {}),
        ("gru_reset_before", {}),
        ("gru_ln", {"merge": "sum"}),
        ("rnn_relu", {"residual": True}),
        ("gru", {"zoneout": 0.25}),  # evaluation: the deterministic expectation
    ],
)
def test_gradcheck_float64_over_sequences(name, options):
    """Gradients through time, lengths, reversal and stacking against finite differences."""
    torch.manual_seed(0)
    recurrent = Recurrent(
        lambda d, layer, direction: CELLS[name](d, H, dtype=torch.float64), input_size=D, num_layers=2,
        bidirectional=True, **options,
    ).eval()
    x = torch.randn(3, 4, D, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([2, 4, 1])

    def run(x):
        output, final = recurrent(x, lengths=lengths)
        return (output, *_flat(final))

    assert torch.autograd.gradcheck(run, (x,))


def test_gradcheck_float64_drop_in_own_path():
    torch.manual_seed(0)
    gru = rnnkit.GRU(D, H, num_layers=2, bidirectional=True, reset_after=False, dtype=torch.float64)
    x = torch.randn(4, 3, D, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 3, H, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, h0: gru(x, h0, lengths=[3, 1, 4]), (x, h0))


# ---- state handling -------------------------------------------------------------------------------------


def test_stateful_truncated_bptt_equals_one_long_run():
    torch.manual_seed(0)
    recurrent = _build("lstm", 2, False, stateful=True)
    x = torch.randn(B, 2 * T, D, requires_grad=True)
    full, _ = Recurrent(list(recurrent.cells), num_layers=2)(x)
    first, _ = recurrent(x[:, :T])
    recurrent.detach_state()
    second, _ = recurrent(x[:, T:])
    torch.testing.assert_close(torch.cat([first, second], 1), full, **TOLERANCE)
    # The graph was cut: the second chunk's loss does not reach the first chunk's inputs.
    (grad,) = torch.autograd.grad(second.sum(), x)
    assert torch.all(grad[:, :T] == 0) and torch.any(grad[:, T:] != 0)
    recurrent.reset_state()
    again, _ = recurrent(x[:, :T])
    torch.testing.assert_close(again, first)


def test_detach_state_keeps_structure_and_values():
    h = torch.randn(2, 3, requires_grad=True) * 2
    state = [(h, h + 1), h]
    detached = detach_state(state)
    assert isinstance(detached, list) and isinstance(detached[0], tuple)
    assert all(not t.requires_grad for t in _flat(detached))
    torch.testing.assert_close(detached[0][1], h + 1)


def test_initial_state_is_used():
    recurrent = _build("gru", 1, True)
    x = torch.randn(B, T, D)
    state = [torch.randn(B, H), torch.randn(B, H)]
    output, _ = recurrent(x, state)
    cell = recurrent.cells[0]
    h = state[0]
    for t in range(T):
        h, _ = cell(x[:, t], h)
    torch.testing.assert_close(output[:, -1, :H], h, **TOLERANCE)


# ---- errors ---------------------------------------------------------------------------------------------


def test_errors():
    recurrent = _build("lstm", 2, True)
    x = torch.randn(B, T, D)
    with pytest.raises(ValueError, match=r"expects a 3-D input \(B, T, D\), got \(6, 3\)"):
        recurrent(torch.randn(T, D))
    with pytest.raises(ValueError, match="expects 3 input features, got 5"):
        recurrent(torch.randn(B, T, 5))
    with pytest.raises(ValueError, match="state must be a list of 4 cell states .* got list of length 1"):
        recurrent(x, [torch.zeros(B, H)])
    with pytest.raises(ValueError, match=r"LSTMCell state must have shapes \[\(4, 4\), \(4, 4\)\]"):
        recurrent(x, [(torch.zeros(B, H), torch.zeros(B, H))] * 3 + [(torch.zeros(B + 1, H), torch.zeros(B, H))])
    with pytest.raises(ValueError, match=r"lengths must be at most the number of time steps T=6, got 7"):
        recurrent(x, lengths=[1, 2, 3, 7])
    with pytest.raises(ValueError, match="a single cell serves one layer and one direction"):
        Recurrent(LSTMCell(D, H), num_layers=2)
    with pytest.raises(ValueError, match="expected 2 cells .* got 1"):
        Recurrent([LSTMCell(D, H)], bidirectional=True)
    with pytest.raises(ValueError, match="input_size is needed to build cells with a factory"):
        Recurrent(lambda d, layer, direction: LSTMCell(d, H))
    with pytest.raises(ValueError, match="merge must be one of"):
        Recurrent(LSTMCell(D, H), merge="mean")
    with pytest.raises(ValueError, match=r"recurrent_dropout must be a probability in \[0, 1\), got 1"):
        Recurrent(LSTMCell(D, H), recurrent_dropout=1)
    with pytest.raises(ValueError, match="recurrent_dropout needs cells with recur"):
        Recurrent(TorchGRUCell(D, H), recurrent_dropout=0.5)


def test_stateful_batch_size_change_is_reported():
    recurrent = _build("gru", 1, False, stateful=True)
    recurrent(torch.randn(B, T, D))
    with pytest.raises(ValueError, match="stored state .* is for a batch of 4 sequences, got 2; call reset_state"):
        recurrent(torch.randn(2, T, D))
    recurrent.reset_state()
    assert recurrent(torch.randn(2, T, D))[0].shape == (2, T, H)
    with pytest.raises(ValueError, match="cell must be a cell module, a list of cells or a factory, got str"):
        Recurrent("lstm")
