"""The architecture explorer: parameter counts and a forward pass of a randomly initialised layer.

The sentence's characters are embedded (a random ``nn.Embedding`` over their code points modulo a small
table) and run through an ``rnnkit.LSTM`` / ``GRU`` / ``RNN``. The page shows per step the hidden-state norm
||h_t||, the hidden state itself (a heatmap) and, for the first layer's forward direction, the gate
activations, recomputed from the layer's own cell with the seeds' equations:

    LSTM  i_t, f_t, o_t = sigma(W_i x_t + U_i h_{t-1} + b)      c_t = f_t * c_{t-1} + i_t * g_t
    GRU   r_t, z_t      = sigma(W_r x_t + U_r h_{t-1} + b)      h_t = (1 - z_t) * n_t + z_t * h_{t-1}

(the RNN has no gates). Each step is advanced with the cell's own ``recur``, so the gates shown belong to the
same trajectory as the layer's output.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rnnkit.cells import GRUCell, LSTMCell, _layer_norm
from rnnkit.layers import GRU, LSTM, RNN
from rnnkit.parameters import count_parameters, formula_count

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


def _first_cell(layer: nn.Module) -> nn.Module | None:
    """Layer 0's forward cell, bound to the layer's parameters (``layer.cells``), if it has gates."""
    cell = layer.cells[0]
    return cell if isinstance(cell, (LSTMCell, GRUCell)) else None


def gate_activations(cell: nn.Module, xp: torch.Tensor) -> dict[str, list[list[float]]]:
    """Gates per step of one cell over its input projections ``xp`` (T, G*H), batch of one.

    Returns {gate name: (T, H) nested list}; the state is advanced with ``cell.recur`` itself.
    """
    hidden = cell.hidden_size
    state = cell.initial_state(1, dtype=xp.dtype)
    names = ("input_gate", "forget_gate", "output_gate") if isinstance(cell, LSTMCell) else ("reset_gate",
                                                                                            "update_gate")
    rows: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    for t in range(xp.shape[0]):
        xp_t = xp[t : t + 1]  # (1, G*H)
        h_prev = state[0] if isinstance(cell, LSTMCell) else state
        if isinstance(cell, LSTMCell):
            recurrent = F.linear(h_prev, cell.weight_hh)  # (1, 4H)
            if cell.layer_norm:
                recurrent = _layer_norm(recurrent, cell.ln_hh_weight)
            gates = torch.sigmoid(xp_t + recurrent)  # (1, 4H); block order i, f, g, o as torch
            values = (gates[:, :hidden], gates[:, hidden : 2 * hidden], gates[:, 3 * hidden :])
        else:
            if cell.reset_after:
                recurrent = F.linear(h_prev, cell.weight_hh)  # (1, 3H)
                if cell.layer_norm:
                    recurrent = cell._normalise(recurrent, cell.ln_hh_weight)
                if cell.bias_hh is not None:
                    recurrent = recurrent + cell.bias_hh
                recurrent = recurrent[:, : 2 * hidden]
            else:
                both = slice(0, 2 * hidden)
                recurrent = cell._recurrent(h_prev, both, both)  # (1, 2H)
            values = torch.sigmoid(xp_t[:, : 2 * hidden] + recurrent).chunk(2, dim=1)  # r_t, z_t
        for name, value in zip(names, values, strict=True):
            rows[name].append(value[0])
        _, state = cell.recur(xp_t, state)
    return {name: torch.stack(steps).tolist() for name, steps in rows.items()}  # (T, H) each


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
    first = _first_cell(layer)
    if first is not None:
        result["gates"] = gate_activations(first, first.input_projection(x[0]))
    return result
