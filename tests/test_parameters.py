"""Parameter counts against torch's own numel() and against the closed forms worked out by hand."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import rnnkit
from rnnkit.parameters import FORMULA_NOTE, count_parameters, formula_count, layer_direction_count
from rnnkit.recurrent import Recurrent


def torch_numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_course_table_by_hand():
    # d = 10, n = 20: n(d + n) + n = 20 * 30 + 20 = 620
    assert layer_direction_count("rnn", 10, 20) == 620
    assert layer_direction_count("gru", 10, 20) == 3 * 620 == 1860
    assert layer_direction_count("lstm", 10, 20) == 4 * 620 == 2480
    # torch's second bias vector: + G * n
    assert layer_direction_count("lstm", 10, 20, second_bias=True) == 2480 + 4 * 20
    assert layer_direction_count("rnn", 10, 20, bias=False) == 20 * 30
    # projection p = 5: 4[20(10 + 5) + 20] + 5 * 20
    assert layer_direction_count("lstm", 10, 20, proj_size=5) == 4 * (20 * 15 + 20) + 100
    assert "second bias" in FORMULA_NOTE


CONFIGS = [
    config
    for config in itertools.product(
        [("lstm", nn.LSTM), ("gru", nn.GRU), ("rnn", nn.RNN)], [1, 3], [False, True], [True, False], [0, 3]
    )
    if config[0][0] == "lstm" or config[4] == 0  # projections exist for LSTM only
]


@pytest.mark.parametrize("cell_and_class,num_layers,bidirectional,bias,proj_size", CONFIGS)
def test_formula_with_second_bias_is_torchs_count(cell_and_class, num_layers, bidirectional, bias, proj_size):
    cell, torch_class = cell_and_class
    extra = {"proj_size": proj_size} if proj_size else {}
    reference = torch_class(7, 6, num_layers=num_layers, bidirectional=bidirectional, bias=bias, **extra)
    kwargs = {"num_layers": num_layers, "bidirectional": bidirectional, "bias": bias, "proj_size": proj_size}
    assert formula_count(cell, 7, 6, second_bias=True, **kwargs) == torch_numel(reference)
    layer_directions = num_layers * (2 if bidirectional else 1)
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    second_bias = gates * 6 * layer_directions if bias else 0
    assert formula_count(cell, 7, 6, **kwargs) == torch_numel(reference) - second_bias
    counts = count_parameters(reference)
    assert counts.total == torch_numel(reference)
    assert len(counts.recurrent) == layer_directions
    for entry in counts.recurrent:
        assert entry.actual == entry.torch_formula
        assert entry.actual - entry.formula == (gates * 6 if bias else 0)


def test_rnnkit_extras_layer_norm_and_merge_sum():
    lstm = rnnkit.LSTM(7, 6, num_layers=2, layer_norm=True)
    expected = formula_count("lstm", 7, 6, num_layers=2, second_bias=True, layer_norm=True)
    assert torch_numel(lstm) == expected == formula_count("lstm", 7, 6, num_layers=2, second_bias=True) + 2 * 60
    gru = rnnkit.GRU(7, 6, num_layers=2, bidirectional=True, merge="sum", layer_norm=True)
    assert torch_numel(gru) == formula_count(
        "gru", 7, 6, num_layers=2, bidirectional=True, merge="sum", second_bias=True, layer_norm=True
    )
    counts = count_parameters(gru)
    assert counts.by_kind["layer_norm"] == 4 * 6 * 6
    assert all(entry.layer_norm and entry.actual == entry.torch_formula for entry in counts.recurrent)


class Seq2SeqLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(50, 8)
        self.encoder = rnnkit.GRU(8, 6, bidirectional=True, batch_first=True)
        self.attention = nn.Linear(12, 6, bias=False)
        self.decoder = Recurrent(rnnkit.LSTMCell(8, 6))
        self.output = nn.Linear(6, 50)


def test_components_roles_and_kinds_of_a_bigger_model():
    model = Seq2SeqLike()
    counts = count_parameters(model)
    assert counts.total == counts.trainable == torch_numel(model)
    assert counts.by_component["embedding"] == 400
    assert counts.by_component["encoder.l0"] == counts.by_component["encoder.l0_reverse"] == 3 * (6 * 14 + 6) + 18
    assert counts.by_component["attention"] == 72
    assert counts.by_component["decoder.l0"] == 4 * (6 * 14 + 6) + 24
    assert counts.by_component["output"] == 350
    assert counts.by_role == {
        "embedding": 400,
        "recurrent": 2 * 288 + 384,
        "attention": 72,
        "output": 350,
    }
    assert counts.by_kind["bias"] == 2 * 2 * 18 + 2 * 24 + 50
    assert sum(counts.by_kind.values()) == counts.total
    table = counts.table()
    assert "| encoder.l0_reverse | gru | 8 | 6 | 288 | 270 | 288 |" in table
    assert "| decoder.l0 | lstm | 8 | 6 | 384 | 360 | 384 |" in table


def test_shared_parameters_counted_once_and_frozen_not_trainable():
    model = Seq2SeqLike()
    model.output.weight = nn.Parameter(torch.randn(50, 6))
    model.embedding.weight = model.output.weight  # tied (shape permitting)
    model.embedding.weight.requires_grad_(False)
    counts = count_parameters(model)
    assert counts.total == torch_numel(model)  # parameters() also deduplicates
    assert counts.trainable == counts.total - 300


def test_single_cells_are_recurrent_components():
    counts = count_parameters(nn.ModuleDict({"cell": rnnkit.GRUCell(4, 3, reset_after=False), "t": nn.RNNCell(4, 3)}))
    assert counts.by_role == {"recurrent": 3 * (3 * 7 + 3) + 9 + (3 * 7 + 3) + 3}
    assert [entry.component for entry in counts.recurrent] == ["cell", "t"]


def test_errors():
    with pytest.raises(ValueError, match=r"cell must be one of \('rnn', 'gru', 'lstm'\), got 'transformer'"):
        formula_count("transformer", 3, 4)
    with pytest.raises(ValueError, match="proj_size is for LSTM layers only"):
        layer_direction_count("gru", 3, 4, proj_size=2)
    with pytest.raises(ValueError, match="hidden_size must be a positive integer, got 0"):
        layer_direction_count("rnn", 3, 0)
    with pytest.raises(ValueError, match="count_parameters expects a torch.nn.Module, got list"):
        count_parameters([])
