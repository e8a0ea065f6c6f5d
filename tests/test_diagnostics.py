"""Tests for rnnkit.diagnostics: gradients through time, gates, state norms, attention, parameter counts.

The references are computed here independently: torch.nn's cells (RNNCell, LSTMCell, GRUCell) stepped by hand
one sequence at a time, so that every h_t is its own tensor and ``torch.autograd.grad`` gives dL/dh_t; and the
gate equations written out from torch.nn's weight layout.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import rnnkit
from rnnkit.diagnostics import (
    SATURATION_HIGH,
    SATURATION_LOW,
    attention_maps,
    by_distance,
    diagnose,
    gate_activations,
    parameter_report,
    plot_gates,
    plot_gradient_norms,
    plot_state_norms,
)
from rnnkit.models import SequenceClassifier, SequenceClassifierConfig, SequenceRegressor, SequenceRegressorConfig
from rnnkit.seq2seq import Seq2Seq, Seq2SeqConfig

TORCH_CELLS = {"lstm": nn.LSTMCell, "gru": nn.GRUCell, "rnn": nn.RNNCell}
LAYERS = {"lstm": rnnkit.LSTM, "gru": rnnkit.GRU, "rnn": rnnkit.RNN}


def _torch_cell(layer: nn.Module, kind: str, layer_index: int, direction: int) -> nn.Module:
    """A torch.nn cell holding the weights of one layer-direction of an rnnkit layer."""
    suffix = f"_l{layer_index}" + ("_reverse" if direction else "")
    weight_ih = getattr(layer, "weight_ih" + suffix)
    cell = TORCH_CELLS[kind](weight_ih.shape[1], layer.hidden_size).to(weight_ih.dtype)
    cell.load_state_dict({name: getattr(layer, name + suffix).detach() for name in
                          ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
    return cell


def _manual_unroll(layer: nn.Module, kind: str, x: torch.Tensor, lengths: list[int]):
    """Step torch.nn cells by hand, one sequence at a time over its own valid prefix.

    Returns the layer's outputs (B, T, D) (0 past each length), the final hidden states {(layer, dir): (B, H)}
    and the per-step hidden tensors {(layer, dir): {(b, t): h}} at input positions t.
    """
    batch_size, steps, _ = x.shape
    directions = 2 if layer.bidirectional else 1
    states: dict[tuple[int, int], dict[tuple[int, int], torch.Tensor]] = {}
    finals: dict[tuple[int, int], list[torch.Tensor]] = {}
    outputs = []
    for b in range(batch_size):
        n = lengths[b]
        layer_input = [x[b, t].unsqueeze(0) for t in range(n)]  # n x (1, D)
        for layer_index in range(layer.num_layers):
            per_direction = []
            for direction in range(directions):
                cell = _torch_cell(layer, kind, layer_index, direction)
                order = range(n) if direction == 0 else range(n - 1, -1, -1)
                h = torch.zeros(1, layer.hidden_size, dtype=x.dtype)
                c = torch.zeros_like(h)
                out = [None] * n
                for t in order:
                    if kind == "lstm":
                        h, c = cell(layer_input[t], (h, c))
                    else:
                        h = cell(layer_input[t], h)
                    states.setdefault((layer_index, direction), {})[(b, t)] = h
                    out[t] = h
                finals.setdefault((layer_index, direction), []).append(h)
                per_direction.append(out)
            layer_input = [torch.cat([d[t] for d in per_direction], dim=1) for t in range(n)]
        padded = torch.zeros(steps, layer_input[0].shape[1], dtype=x.dtype)
        padded = torch.cat([torch.cat(layer_input, dim=0), padded[n:]], dim=0)  # (T, D)
        outputs.append(padded)
    return torch.stack(outputs), {k: torch.cat(v) for k, v in finals.items()}, states


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_gradient_norms_match_manual_autograd(kind, bidirectional):
    torch.manual_seed(0)
    layer = LAYERS[kind](3, 4, num_layers=2, bidirectional=bidirectional, batch_first=True, dtype=torch.float64)
    x = torch.randn(3, 6, 3, dtype=torch.float64)
    lengths = [6, 2, 4]
    width = 4 * (2 if bidirectional else 1)
    out_weight = torch.randn(3, 6, width, dtype=torch.float64)
    final_weight = torch.randn(layer.num_layers * layer.num_directions, 3, 4, dtype=torch.float64)

    def loss_fn(model):
        output, hidden = model(x, lengths=torch.tensor(lengths))
        h_n = hidden[0] if kind == "lstm" else hidden
        # the direct path (every output) and the final states both carry gradient
        return (output * out_weight).sum() + (h_n * final_weight).sum()

    result = diagnose(layer, loss_fn)

    outputs, finals, states = _manual_unroll(layer, kind, x, lengths)
    h_n = torch.stack([finals[(index // layer.num_directions, index % layer.num_directions)]
                       for index in range(layer.num_layers * layer.num_directions)])
    loss = (outputs * out_weight).sum() + (h_n * final_weight).sum()
    assert result.loss == pytest.approx(loss.item(), rel=1e-9)
    assert len(result.layers) == layer.num_layers * layer.num_directions
    for trace in result.layers:
        hidden = states[(trace.layer, trace.direction)]
        keys = list(hidden)
        grads = dict(zip(keys, torch.autograd.grad(loss, [hidden[k] for k in keys], retain_graph=True),
                         strict=True))
        expected = []
        for t in range(6):
            squared = sum(float(grads[(b, t)].pow(2).sum()) for b in range(3) if t < lengths[b])
            expected.append(math.sqrt(squared))
        assert trace.steps == 6 and trace.lengths == lengths
        assert trace.grad_norm == pytest.approx(expected, rel=1e-9, abs=1e-12), trace.name
        # state norms: mean over the sequences valid at t of ||h_t||
        for t in range(6):
            norms = [float(hidden[(b, t)].detach().norm()) for b in range(3) if t < lengths[b]]
            assert trace.hidden_norm[t] == pytest.approx(sum(norms) / len(norms), rel=1e-9)


def test_gradient_excludes_nothing_and_parameters_untouched():
    """diagnose restores the fused path and leaves the parameters' .grad alone; outputs are unchanged."""
    torch.manual_seed(1)
    layer = rnnkit.LSTM(2, 3, batch_first=True)
    x = torch.randn(2, 5, 2)
    reference, _ = layer(x)
    seen = []

    def loss_fn(model):
        output, _ = model(x)
        seen.append(output)
        return output[:, -1].sum()

    result = diagnose(layer, loss_fn)
    torch.testing.assert_close(seen[0], reference)
    assert all(p.grad is None for p in layer.parameters())
    assert layer.use_fused and layer.uses_fused_kernel()
    assert "forward" not in layer.__dict__ and all("recur" not in c.__dict__ for c in layer.cells)
    # a many-to-one loss at the last step: the direct path is zero before T, but the recurrence carries
    # gradient back, so every step has a positive norm
    assert all(g > 0 for g in result.layers[0].grad_norm)
    assert by_distance(result.layers[0])[0] == result.layers[0].grad_norm[-1]


def _torch_gates(kind: str, layer: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gates of a one-layer torch.nn.LSTM/GRU over (B, T, D) inputs, from the equations; each (T, B, H)."""
    hidden = layer.hidden_size
    output, _ = layer(x)  # (B, T, H)
    previous = torch.cat([torch.zeros_like(output[:, :1]), output[:, :-1]], dim=1)  # h_{t-1}
    pre_x = x @ layer.weight_ih_l0.T + layer.bias_ih_l0  # (B, T, G*H)
    pre_h = previous @ layer.weight_hh_l0.T + layer.bias_hh_l0
    block = lambda a, k: a[..., k * hidden:(k + 1) * hidden]  # noqa: E731
    if kind == "lstm":  # torch.nn.LSTM stacks i, f, g, o
        names = {"input": 0, "forget": 1, "output": 3}
    else:  # torch.nn.GRU stacks r, z, n
        names = {"reset": 0, "update": 1}
    return {name: torch.sigmoid(block(pre_x, k) + block(pre_h, k)).transpose(0, 1).detach()
            for name, k in names.items()}


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_gate_statistics_match_equations(kind):
    torch.manual_seed(2)
    reference = {"lstm": nn.LSTM, "gru": nn.GRU}[kind](3, 6, batch_first=True, dtype=torch.float64)
    layer = LAYERS[kind](3, 6, batch_first=True, dtype=torch.float64)
    layer.load_state_dict(reference.state_dict())
    x = 3.0 * torch.randn(4, 8, 3, dtype=torch.float64)  # large inputs: some gates saturate
    result = diagnose(layer, lambda m: m(x)[0].sum())
    expected = _torch_gates(kind, reference, x)
    trace = result.layers[0]
    assert set(trace.gates) == set(expected)
    some_saturated = False
    for name, values in expected.items():  # (T, B, H)
        stats = trace.gates[name]
        saturated = ((values < SATURATION_LOW) | (values > SATURATION_HIGH)).double()
        assert stats.mean == pytest.approx(values.mean(dim=(1, 2)).tolist(), rel=1e-9)
        assert stats.saturated == pytest.approx(saturated.mean(dim=(1, 2)).tolist(), abs=1e-12)
        assert stats.closed == pytest.approx((values < SATURATION_LOW).double().mean(dim=(1, 2)).tolist())
        torch.testing.assert_close(torch.tensor(stats.unit_mean, dtype=torch.float64), values.mean(dim=1))
        assert all(0.0 <= v <= 1.0 for v in stats.mean + stats.saturated)
        some_saturated |= max(stats.saturated) > 0
    assert some_saturated


def test_gate_statistics_leave_out_padding():
    torch.manual_seed(3)
    layer = rnnkit.GRU(2, 3, batch_first=True, bidirectional=True)
    x = torch.randn(2, 4, 2)
    result = diagnose(layer, lambda m: m(x, lengths=torch.tensor([4, 1]))[0].sum())
    full = diagnose(layer, lambda m: m(x[:1])[0].sum())
    for trace, alone in zip(result.layers, full.layers, strict=True):
        # from step 1 on only the first sequence is real, and it is the whole batch of the second call
        for name in trace.gates:
            assert trace.gates[name].mean[1:] == pytest.approx(alone.gates[name].mean[1:], rel=1e-5)
        assert trace.hidden_norm[1:] == pytest.approx(alone.hidden_norm[1:], rel=1e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda: rnnkit.LSTMCell(3, 4, layer_norm=True),
        lambda: rnnkit.LSTMCell(3, 4),
        lambda: rnnkit.GRUCell(3, 4, reset_after=False),
        lambda: rnnkit.GRUCell(3, 4, reset_after=True, layer_norm=True),
        lambda: rnnkit.GRUCell(3, 4, reset_after=False, layer_norm=True),
    ],
)
def test_gate_activations_rebuild_the_cell_step(make):
    """h_t rebuilt from the recomputed gates equals the cell's own step, for the forms torch does not have."""
    torch.manual_seed(4)
    cell = make()
    x = torch.randn(5, 3)
    xp = cell.input_projection(x)
    mask = torch.bernoulli(torch.full((5, 4), 0.7))
    if isinstance(cell, rnnkit.LSTMCell):
        state = (torch.randn(5, 4), torch.randn(5, 4))
        h_t, (_, c_t) = cell.recur(xp, state, mask)
        g = gate_activations(cell, xp, state, mask, candidate=True)
        cell_state = g["forget"] * state[1] + g["input"] * g["candidate"]
        torch.testing.assert_close(cell_state, c_t)
        if not cell.layer_norm:
            torch.testing.assert_close(g["output"] * torch.tanh(cell_state), h_t)
    else:
        state = torch.randn(5, 4)
        h_t, _ = cell.recur(xp, state, mask)
        g = gate_activations(cell, xp, state, mask, candidate=True)
        torch.testing.assert_close((1 - g["update"]) * g["candidate"] + g["update"] * state, h_t)


def test_parameter_report_counts_every_parameter():
    model = SequenceClassifier(SequenceClassifierConfig(vocab_size=30, embedding_size=8, hidden_size=6,
                                                        num_layers=2, num_classes=3, bidirectional=True))
    report = parameter_report(model)
    assert report["total"] == sum(p.numel() for p in model.parameters())
    assert sum(report["by_component"].values()) == report["total"]
    assert len(report["recurrent"]) == 4
    for entry in report["recurrent"]:
        assert entry["actual"] == entry["torch_formula"]
        # the course table's formula, one bias: 4[n(d + n) + n]
        d, n = entry["input_size"], entry["hidden_size"]
        assert entry["formula"] == 4 * (n * (d + n) + n)
        assert entry["formula_text"] == f"4[{n}({d} + {n}) + {n}]"
    json.dumps(report)


def test_diagnose_a_model_is_json_and_plots(tmp_path):
    torch.manual_seed(5)
    model = SequenceRegressor(SequenceRegressorConfig(cell="lstm", input_size=2, hidden_size=5, bidirectional=False))
    x, y = torch.randn(3, 9, 2), torch.randn(3)
    result = diagnose(model, lambda m: m.loss(m(x), y))
    data = json.loads(result.to_json())
    assert data["layers"][0]["name"] == "encoder.recurrent/l0"
    assert data["attention"] is None
    assert data["parameters"]["total"] == sum(p.numel() for p in model.parameters())
    assert data["saturation_thresholds"] == [SATURATION_LOW, SATURATION_HIGH]
    trace = result.layer("encoder.recurrent/l0")
    assert len(trace.cell_norm) == 9 and all(v > 0 for v in trace.cell_norm)
    with pytest.raises(ValueError, match="no layer trace named"):
        result.layer("nope")
    for path in (
        plot_gradient_norms({"lstm": trace.grad_norm}, tmp_path / "g.png"),
        plot_gates(trace, tmp_path / "gates.png"),
        plot_state_norms(result.layers, tmp_path / "norms.png"),
    ):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rnn_has_no_gates_and_bad_inputs_raise(tmp_path):
    layer = rnnkit.RNN(2, 3, batch_first=True)
    result = diagnose(layer, lambda m: m(torch.randn(1, 4, 2))[0].sum())
    assert result.layers[0].gates == {} and result.layers[0].cell_norm is None
    with pytest.raises(ValueError, match="no gate statistics"):
        plot_gates(result.layers[0], tmp_path / "x.png")
    with pytest.raises(ValueError, match="rnnkit recurrent modules"):
        diagnose(nn.LSTM(2, 3), lambda m: m(torch.randn(4, 1, 2))[0].sum())
    with pytest.raises(ValueError, match="scalar"):
        diagnose(layer, lambda m: m(torch.randn(1, 4, 2))[0])


def _seq2seq(decoder: str) -> tuple[Seq2Seq, tuple[torch.Tensor, ...]]:
    torch.manual_seed(6)
    options = {"decoder": decoder} if decoder == "none" else {"decoder": decoder, "attention": "general"}
    model = Seq2Seq.build(Seq2SeqConfig(source_vocab_size=9, target_vocab_size=9, embedding_size=4,
                                        hidden_size=6, **options))
    src = torch.tensor([[4, 5, 6, 7], [5, 6, 0, 0]])
    src_lengths = torch.tensor([4, 2])
    tgt_in = torch.tensor([[2, 7, 6, 5, 4], [2, 6, 5, 0, 0]])
    return model, (src, src_lengths, tgt_in)


def test_attention_maps_and_a_model_without_attention():
    model, (src, src_lengths, tgt_in) = _seq2seq("luong")
    maps = attention_maps(model, src, src_lengths, tgt_in)
    assert maps.kind == "seq2seq"
    assert maps.source_lengths == [4, 2] and maps.target_lengths == [5, 3]
    assert [len(m) for m in maps.weights] == [5, 3] and [len(m[0]) for m in maps.weights] == [4, 2]
    for sentence in maps.weights:
        for row in sentence:
            assert sum(row) == pytest.approx(1.0, abs=1e-6)
    assert 0.0 <= maps.mean_entropy <= math.log(4) + 1e-6
    # the whole model diagnosed: encoder (both directions) and decoder each get traces
    targets = torch.randint(4, 9, tgt_in.shape)
    result = diagnose(model, lambda m: nn.functional.cross_entropy(m(src, src_lengths, tgt_in).transpose(1, 2),
                                                                   targets), attention=maps)
    assert [(t.name, t.steps) for t in result.layers] == [
        ("encoder.rnn/l0", 4), ("encoder.rnn/l0_reverse", 4), ("decoder.rnn/l0", 5)]
    assert result.attention is maps
    json.dumps(result.to_dict(), allow_nan=False)

    # a decoder that steps one token per call (Bahdanau) gets one trace over its 5 steps, and its gradient
    # norms are those of the same model's step loop
    model, _ = _seq2seq("bahdanau")
    result = diagnose(model, lambda m: nn.functional.cross_entropy(
        m(src, src_lengths, tgt_in).transpose(1, 2), targets))
    assert [(t.name, t.steps) for t in result.layers][-1] == ("decoder.rnn/l0", 5)
    decoder_trace = result.layers[-1]
    assert all(g > 0 for g in decoder_trace.grad_norm)

    plain, batch = _seq2seq("none")
    assert attention_maps(plain, *batch) is None


def test_attention_pooling_is_picked_up():
    torch.manual_seed(7)
    model = SequenceClassifier(SequenceClassifierConfig(vocab_size=10, embedding_size=4, hidden_size=3,
                                                        num_classes=2, pooling="attention"))
    tokens = torch.tensor([[4, 5, 6], [7, 8, 0]])
    result = diagnose(model, lambda m: m.loss(m(tokens, torch.tensor([3, 2])), torch.tensor([0, 1])))
    assert result.attention.kind == "pooling"
    assert [len(w[0]) for w in result.attention.weights] == [3, 2]
    assert all(sum(w[0]) == pytest.approx(1.0, abs=1e-6) for w in result.attention.weights)


def test_packed_input_and_recurrent_module_give_the_same_traces():
    """A PackedSequence, a padded batch with lengths, and rnnkit.Recurrent over the same cell all agree."""
    from torch.nn.utils.rnn import pack_padded_sequence

    torch.manual_seed(8)
    layer = rnnkit.LSTM(3, 4, batch_first=True, bidirectional=True)
    x = torch.randn(3, 5, 3)
    lengths = torch.tensor([2, 5, 3])
    weight = torch.randn(3, 5, 8)

    def padded_loss(model):
        output, _ = model(x, lengths=lengths)
        return (output * weight).sum()

    def packed_loss(model):
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        output, _ = model(packed)
        padded, _ = torch.nn.utils.rnn.pad_packed_sequence(output, batch_first=True, total_length=5)
        return (padded * weight).sum()

    padded = diagnose(layer, padded_loss)
    packed = diagnose(layer, packed_loss)
    recurrent = rnnkit.Recurrent([layer.cells[0], layer.cells[1]], bidirectional=True)
    generic = diagnose(recurrent, lambda m: (m(x, lengths=lengths)[0] * weight).sum())
    for a, b, c in zip(padded.layers, packed.layers, generic.layers, strict=True):
        assert a.lengths == b.lengths == c.lengths == [2, 5, 3]
        assert a.grad_norm == pytest.approx(b.grad_norm, rel=1e-5)
        assert a.grad_norm == pytest.approx(c.grad_norm, rel=1e-5)
        assert a.gates["forget"].mean == pytest.approx(c.gates["forget"].mean, rel=1e-5)
    assert generic.parameters["total"] == sum(p.numel() for p in recurrent.parameters())
    assert [r["component"] for r in generic.parameters["recurrent"]] == ["recurrent.l0", "recurrent.l0_reverse"]
