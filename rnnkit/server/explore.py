"""The architecture explorer: parameter counts and a forward pass of a randomly initialised layer.

The sentence's characters are embedded (a random ``nn.Embedding`` over their code points modulo a small
table) and run through an ``rnnkit.LSTM`` / ``GRU`` / ``RNN``. The page shows per step the hidden-state norm
||h_t||, the hidden state itself (a heatmap) and, for every layer-direction, the gate activations, recomputed
from the layer's own cells with the seeds' equations (:func:`rnnkit.diagnostics.gate_activations`):

    LSTM  i_t, f_t, o_t = sigma(W_i x_t + U_i h_{t-1} + b)      c_t = f_t * c_{t-1} + i_t * g_t
    GRU   r_t, z_t      = sigma(W_r x_t + U_r h_{t-1} + b)      h_t = (1 - z_t) * n_t + z_t * h_{t-1}

(the RNN has no gates). :func:`rnnkit.diagnostics.diagnose` records them while each cell's own ``recur``
advances the state, so the gates shown belong to the same trajectory as the layer's output.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rnnkit.diagnostics import diagnose, parameter_report
from rnnkit.layers import GRU, LSTM, RNN
from rnnkit.parameters import FORMULA_NOTE, count_parameters, formula_count

CELLS = ("rnn", "lstm", "gru")
EMBEDDING_ROWS = 256  # characters are embedded by code point modulo this


def build_layer(cell: str, input_size: int, hidden_size: int, num_layers: int, bidirectional: bool,
                layer_norm: bool, reset_after: bool) -> nn.Module:
    """The rnnkit layer the explorer describes; a bad combination raises ValueError."""
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
    common = dict(num_layers=num_layers, bidirectional=bidirectional, batch_first=True)
    if cell == "rnn":
        if layer_norm:
            raise ValueError("layer_norm is for LSTM and GRU cells, got cell 'rnn'")
        return RNN(input_size, hidden_size, **common)
    if cell == "lstm":
        return LSTM(input_size, hidden_size, layer_norm=layer_norm, **common)
    return GRU(input_size, hidden_size, layer_norm=layer_norm, reset_after=reset_after, **common)


@torch.no_grad()
def explore(cell: str, input_size: int, hidden_size: int, num_layers: int, bidirectional: bool,
            layer_norm: bool, reset_after: bool, sentence: str, seed: int = 0) -> dict[str, Any]:
    """Counts and a forward pass over ``sentence``'s characters; see the module docstring."""
    torch.manual_seed(seed)
    layer = build_layer(cell, input_size, hidden_size, num_layers, bidirectional, layer_norm, reset_after)
    layer.eval()
    counts = count_parameters(layer)
    embedding = nn.Embedding(EMBEDDING_ROWS, input_size)
    ids = torch.tensor([[ord(ch) % EMBEDDING_ROWS for ch in sentence]])  # (1, T)
    x = embedding(ids)  # (1, T, D)
    out, _ = layer(x)  # (1, T, directions * H)
    hidden = out[0]  # (T, directions * H)
    result: dict[str, Any] = {
        "tokens": list(sentence),
        "parameters": {
            "model": counts.total,
            # the course table: one bias vector per gate block
            "formula": formula_count(cell, input_size, hidden_size, num_layers=num_layers,
                                     bidirectional=bidirectional, layer_norm=layer_norm),
            # torch's layout keeps a second bias (b_ih and b_hh): what the model actually holds
            "formula_torch": formula_count(cell, input_size, hidden_size, num_layers=num_layers,
                                           bidirectional=bidirectional, layer_norm=layer_norm, second_bias=True),
        },
        "hidden_norms": hidden.norm(dim=1).tolist(),  # ||h_t|| per step, last layer
        "hidden": hidden.tolist(),  # (T, directions * H)
        "gates": {},
    }
    result["parameters"]["layers"] = [  # per layer-direction: the formula with its numbers, and the count
        {key: r[key] for key in ("component", "input_size", "hidden_size", "formula_text", "formula",
                                 "torch_formula", "actual")} for r in parameter_report(layer)["recurrent"]]
    result["parameters"]["note"] = FORMULA_NOTE
    traces = diagnose(layer, lambda m: m(x)[0].sum(), gradients=False).layers
    result["layers"] = [{
        "name": f"layer {trace.layer}" + (" backward" if trace.direction else (" forward" if bidirectional else "")),
        "layer": trace.layer, "direction": trace.direction,
        "hidden_norm": trace.hidden_norm, "cell_norm": trace.cell_norm,
        "gates": {f"{name}_gate": stats.unit_mean for name, stats in trace.gates.items()},  # (T, H) each
    } for trace in traces]
    result["gates"] = result["layers"][0]["gates"]  # layer 0, forward
    return result
