"""Running one cell over a whole sequence on the fast path: the cell's autograd Function, on a batch sorted
longest first.

Stepping a cell with autograd (the reference path: ``cell.recur`` once per step) records ~15 small operations per
step, and its backward computes the gradient of ``weight_hh`` as T small matrix products. The fast path runs the
same equations over all T steps inside one ``torch.autograd.Function`` per cell (:mod:`rnnkit.fast.lstm`, ``gru``,
``rnn``), whose backward computes the weight gradients as large products after the loop::

    dW_hh = sum_t dgates_t^T h_{t-1}   =   dgates (G*H, T*B)  x  h_prev (T*B, H)

and whose input projection's gradient is dL/d(pre-activations) itself, so autograd turns it into dW_ih and dx,
one large product each.

Variable lengths (as torch's packed sequences do): the batch runs sorted by length, longest first, so that the
sequences still running at step t are the first n_t rows (:attr:`rnnkit.fast.lengths.Lengths.batch_sizes`); each
step computes those rows only (no work on padding, no masks), a sequence's state stops changing after its last
step, and so the final state is the one at each sequence's own end. Padding is never read, so whatever it holds
(inf, NaN) cannot reach an output or a gradient. ``tests/test_fast_paths.py`` checks every recurrence against the
reference path (outputs, final states, every gradient; float32 and gradcheck in float64).
"""

from __future__ import annotations

from torch import Tensor, nn

from rnnkit.cells import GRUCell, LSTMCell, State
from rnnkit.fast import dispatch, products
from rnnkit.fast.gru import GRURecurrence, ResetBeforeGRURecurrence
from rnnkit.fast.lengths import Lengths
from rnnkit.fast.lstm import LayerNormLSTMRecurrence, LSTMRecurrence
from rnnkit.fast.rnn import RNNRecurrence
from rnnkit.state import select_rows

__all__ = ["input_projection", "run"]


def input_projection(cell: nn.Module, x: Tensor) -> Tensor:
    """What :func:`run` takes as ``xp``: the cell's ``input_projection(x)`` with the fast path's products
    (:mod:`rnnkit.fast.products`), except for the layer-norm LSTM: W_ih x only, whose normalisation (and the
    biases) :func:`run` applies inside each step (one pass over the step's values, rather than one more pass over
    all steps forward and backward, and two fewer (T, B, 4H) tensors)."""
    if type(cell) is LSTMCell and cell.layer_norm:
        return products.linear(x, cell.weight_ih)
    if callable(getattr(type(cell), "run_sequence", None)):
        return cell.input_projection(x)
    return cell.input_projection(x, linear=products.linear)


def run(cell: nn.Module, xp: Tensor, state: State, lengths: Lengths | None) -> tuple[Tensor, State]:
    """Run ``cell`` over all steps of the hoisted input projection.

    Args:
        cell: a cell the fast path has (:func:`rnnkit.fast.dispatch.fast_path_has`).
        xp: (T, B, G*H) :func:`input_projection` of every step.
        state: the initial state, h_0 (B, H) or (h_0, c_0).
        lengths: the batch's :class:`Lengths`, or None (all T).
    Returns:
        outputs (T, B, H) (past a length: unspecified, the caller zeroes them) and the final state, each
        sequence's at its own last step.
    """
    steps, batch = xp.shape[0], xp.shape[1]
    if callable(getattr(type(cell), "run_sequence", None)):  # the cell runs whole sequences itself
        return cell.run_sequence(xp, state, None if lengths is None else lengths.valid)
    if lengths is None:
        return _run_sorted(cell, xp, state, [batch] * steps)
    if lengths.order is None:
        return _run_sorted(cell, xp, state, lengths.batch_sizes)
    outputs, final = _run_sorted(cell, xp.index_select(1, lengths.order), select_rows(state, lengths.order),
                                 lengths.batch_sizes)
    return outputs.index_select(1, lengths.inverse), select_rows(final, lengths.inverse)


def _run_sorted(cell: nn.Module, xp: Tensor, state: State, schedule: list[int]) -> tuple[Tensor, State]:
    """:func:`run` on a batch sorted longest first; ``schedule`` is n_t for every step that runs."""
    batch, gates = xp.shape[1], xp.shape[2]
    hidden = cell.hidden_size
    if type(cell) is LSTMCell:
        h0, c0 = state
        if cell.layer_norm:  # xp = W_ih x: its normalisation and the biases are part of the recurrence
            bias = cell.bias_ih + cell.bias_hh if cell.bias else None
            norms = (cell.ln_ih_weight, cell.ln_hh_weight, cell.ln_cell_weight, cell.ln_cell_bias)
            loop = dispatch.step_loop(xp, cell.weight_hh, *norms, *([] if bias is None else [bias]),
                                      macs=batch * hidden * gates)
            outputs, h_n, c_n = LayerNormLSTMRecurrence.apply(
                xp, h0, c0, cell.weight_hh, cell.ln_ih_weight, bias, cell.ln_hh_weight, cell.ln_cell_weight,
                cell.ln_cell_bias, schedule, loop
            )
        else:
            loop = dispatch.step_loop(xp, cell.weight_hh)
            outputs, h_n, c_n = LSTMRecurrence.apply(xp, h0, c0, cell.weight_hh, schedule, loop)
        return outputs, (h_n, c_n)
    if type(cell) is GRUCell:
        if cell.reset_after:
            parameters = (cell.weight_hh,) if cell.bias_hh is None else (cell.weight_hh, cell.bias_hh)
            loop = dispatch.step_loop(xp, *parameters, macs=batch * hidden * gates)
            return GRURecurrence.apply(xp, state, cell.weight_hh, cell.bias_hh, schedule, loop)
        # Cho et al. 2014: b_hh is outside the reset product, so it joins the input projection.
        xp = xp if cell.bias_hh is None else xp + cell.bias_hh
        loop = dispatch.step_loop(xp, cell.weight_hh)
        return ResetBeforeGRURecurrence.apply(xp, state, cell.weight_hh, schedule, loop)
    loop = dispatch.step_loop(xp, cell.weight_hh)
    return RNNRecurrence.apply(xp, state, cell.weight_hh, schedule, cell.nonlinearity == "relu", loop)
