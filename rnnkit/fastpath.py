"""The fast path of rnnkit's own cells: a whole sequence per call, with a hand-written backward.

Stepping a cell with autograd (:meth:`rnnkit.cells.LSTMCell.recur` once per step) records ~15 small
operations per step, and its backward computes the gradient of ``weight_hh`` as T small matrix products
(one per step). The recurrences here run the same equations over all T steps inside one
``torch.autograd.Function``:

* the forward keeps only what the backward needs (gate activations, states) in preallocated (T, B, ...)
  buffers, writing each step's results in place (no allocation, no ``torch.stack`` at the end);
* the backward runs the reverse recurrence for dL/d(pre-activations) at each step (one (B, G*H) x (G*H, H)
  product per step, unavoidable: it carries the gradient to h_{t-1}), computing the factors that do not
  depend on the recurrence (sigma'(a) = sigma(1 - sigma), tanh' = 1 - tanh^2, ...) for all steps at once
  before the loop; then **every weight gradient with one large matrix product after the loop**::

      dW_hh = sum_t dgates_t^T h_{t-1}   =   dgates (G*H, T*B)  x  h_prev (T*B, H)

  and the gradient of the hoisted input projection ``xp`` is dgates itself, so autograd turns it into
  ``dW_ih = dxp^T x`` and ``dx = dxp W_ih``, again one large product each.

Each function computes exactly the equations of its cell in :mod:`rnnkit.cells` (the docstrings there are
the definition); ``tests/test_fast_paths.py`` checks outputs, final states and the gradients of every input
and parameter against the reference path (the cells' ``recur`` stepped with autograd), in float32 and by
``gradcheck`` in float64, with and without lengths, in both directions and over several layers.

Variable lengths: ``valid`` (T, B, 1) is True while step t is inside sequence b. Past its length a sequence's
state is frozen (``h_t = h_{t-1}``, ``c_t = c_{t-1}``), exactly as :func:`rnnkit.recurrent.run_layers` does
on the reference path, so the final state is the state at each sequence's own last step; in the backward the
gradient of a frozen step passes straight through to the previous state and none reaches the gates. Masks are
applied with ``torch.where``, never multiplication, so that non-finite values computed from padding cannot
leak into gradients.

Which cells (see :func:`supports`): ``RNNCell`` (tanh, ReLU), ``LSTMCell`` without projection (with or
without layer normalisation), ``GRUCell`` without layer normalisation (reset after, torch's form, or reset
before, Cho et al. 2014), and any cell class with a ``run_sequence(xp, state, valid)`` method that computes
its whole sequence itself (:mod:`rnnkit.minimal`: minGRU, minLSTM). Zoneout and recurrent dropout in training
are handled by the reference path.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnkit.cells import LAYER_NORM_EPS, GRUCell, LSTMCell, RNNCell, State

__all__ = ["supports", "run", "linear_recurrence"]

_layer_norm_backward = torch.ops.aten.native_layer_norm_backward


def linear_recurrence(a: Tensor, v: Tensor, h0: Tensor) -> Tensor:
    """All h_t of the linear recurrence ``h_t = a_t * h_{t-1} + v_t``: a, v (T, B, H), h0 (B, H) -> (T, B, H).

    A loop of one ``addcmul`` per step in the forward and one in the backward (dL/dh_{t-1} = a_t dL/dh_t +
    dL/d out_{t-1}); dL/da = dL/dh * h_{t-1} and dL/dv = dL/dh for all steps at once. The sequential form of
    :mod:`rnnkit.minimal`'s cells.
    """
    return _LinearRecurrence.apply(a, v, h0)


def supports(cell: nn.Module) -> bool:
    """Whether :func:`run` computes this cell's recurrence (else the layer steps ``cell.recur``).

    Exactly the rnnkit cell classes (a subclass may change the equations), with their ``recur`` not replaced
    on the instance (``rnnkit.diagnostics`` does that to record every step), and not while tracing for ONNX
    or TorchScript or compiling (those see the cells' plain operations instead).
    """
    if "recur" in cell.__dict__ or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False
    if callable(getattr(type(cell), "run_sequence", None)):  # a cell that runs whole sequences itself
        return True
    if type(cell) is RNNCell:
        return True
    if type(cell) is LSTMCell:
        return cell.proj_size == 0
    if type(cell) is GRUCell:
        return not cell.layer_norm
    return False


def run(cell: nn.Module, xp: Tensor, state: State, valid: Tensor | None) -> tuple[Tensor, State]:
    """Run ``cell`` over all steps of the hoisted input projection.

    Args:
        cell: a cell for which :func:`supports` is True.
        xp: (T, B, G*H) ``cell.input_projection(x)`` of every step.
        state: the initial state, h_0 (B, H) or (h_0, c_0).
        valid: (T, B, 1) bool, True while a step is inside its sequence, or None (no padding).
    Returns:
        outputs (T, B, H) (past a length: the frozen state; the caller zeroes them) and the final state.
    """
    if callable(getattr(type(cell), "run_sequence", None)):
        return cell.run_sequence(xp, state, valid)
    if type(cell) is LSTMCell:
        h0, c0 = state
        if cell.layer_norm:
            outputs, h_n, c_n = _LayerNormLSTMRecurrence.apply(
                xp, h0, c0, cell.weight_hh, cell.ln_hh_weight, cell.ln_cell_weight, cell.ln_cell_bias, valid
            )
        else:
            outputs, h_n, c_n = _LSTMRecurrence.apply(xp, h0, c0, cell.weight_hh, valid)
        return outputs, (h_n, c_n)
    if type(cell) is GRUCell:
        if cell.reset_after:
            outputs, h_n = _GRURecurrence.apply(xp, state, cell.weight_hh, cell.bias_hh, valid)
        else:
            # Cho et al. 2014: b_hh is outside the reset product, so it joins the input projection.
            xp = xp if cell.bias_hh is None else xp + cell.bias_hh
            outputs, h_n = _ResetBeforeGRURecurrence.apply(xp, state, cell.weight_hh, valid)
        return outputs, h_n
    outputs, h_n = _RNNRecurrence.apply(xp, state, cell.weight_hh, valid, cell.nonlinearity == "relu")
    return outputs, h_n


# -- helpers ------------------------------------------------------------------------------------------------


def _freeze(new: Tensor, old: Tensor, valid_t: Tensor | None) -> None:
    """In place: keep ``old`` in the rows of sequences that have ended (past their length)."""
    if valid_t is not None:
        torch.where(valid_t, new, old, out=new)


def _carry(through_step: Tensor, skipped: Tensor, valid_t: Tensor | None) -> Tensor:
    """The gradient reaching the previous state: through the step where it ran, straight past a frozen one."""
    return through_step if valid_t is None else torch.where(valid_t, through_step, skipped)


def _zero_invalid(gradient: Tensor, valid_t: Tensor | None) -> None:
    """In place: no gradient reaches the gates of a step past a sequence's length."""
    if valid_t is not None:
        gradient.masked_fill_(valid_t.logical_not(), 0.0)


def _flat(x: Tensor) -> Tensor:
    """(T, B, F) -> (T*B, F), for the weight gradients' one big product."""
    return x.reshape(-1, x.shape[-1])


def _clean(xp: Tensor, valid: Tensor | None) -> Tensor:
    """Zero the input projection past each length: a frozen step's discarded values are then finite, whatever
    the padding held, so no NaN or inf can reach a product in the backward."""
    return xp if valid is None else torch.where(valid, xp, 0.0)


def _steps(valid: Tensor | None, steps: int) -> list:
    return [None] * steps if valid is None else list(valid.unbind(0))


# -- linear recurrence (minGRU, minLSTM) -------------------------------------------------------------------


class _LinearRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, v: Tensor, h0: Tensor):
        steps = a.shape[0]
        hs = a.new_empty(steps + 1, *h0.shape)  # h_0 (given), h_1 .. h_T
        hs[0] = h0
        for t in range(steps):
            torch.addcmul(v[t], a[t], hs[t], out=hs[t + 1])
        ctx.save_for_backward(a, hs)
        return hs[1:]

    @staticmethod
    def backward(ctx, d_outputs: Tensor):
        a, hs = ctx.saved_tensors
        steps = a.shape[0]
        d_h = torch.empty_like(d_outputs)  # dL/dh_t, all paths
        d_h[steps - 1] = d_outputs[steps - 1]
        for t in range(steps - 2, -1, -1):
            torch.addcmul(d_outputs[t], a[t + 1], d_h[t + 1], out=d_h[t])
        d_a = d_h * hs[:-1] if ctx.needs_input_grad[0] else None
        d_h0 = a[0] * d_h[0] if ctx.needs_input_grad[2] else None
        return d_a, d_h, d_h0


# -- Elman RNN ------------------------------------------------------------------------------------------------


class _RNNRecurrence(torch.autograd.Function):
    """``h_t = phi(xp_t + W_hh h_{t-1})`` over all steps (:class:`rnnkit.RNNCell`; xp holds both biases)."""

    @staticmethod
    def forward(ctx, xp: Tensor, h0: Tensor, weight_hh: Tensor, valid: Tensor | None, relu: bool):
        steps, batch, hidden = xp.shape
        per_step = _steps(valid, steps)
        xp = _clean(xp, valid)
        hs = xp.new_empty(steps + 1, batch, hidden)  # h_{-1} = h_0, h_0 .. h_{T-1}
        hs[0] = h0
        w_t = weight_hh.t()
        for t in range(steps):
            h = torch.addmm(xp[t], hs[t], w_t, out=hs[t + 1])  # (B, H) pre-activation
            if relu:
                h.relu_()
            else:
                h.tanh_()
            _freeze(h, hs[t], per_step[t])
        ctx.save_for_backward(hs, weight_hh, valid)
        ctx.relu = relu
        return hs[1:], hs[steps].clone()

    @staticmethod
    def backward(ctx, d_outputs: Tensor, d_h_n: Tensor):
        hs, weight_hh, valid = ctx.saved_tensors
        steps = hs.shape[0] - 1
        per_step = _steps(valid, steps)
        h = hs[1:]
        slope = (h > 0).to(h.dtype) if ctx.relu else 1 - h * h  # phi'(a_t) for all steps: (T, B, H)
        d_pre = torch.empty_like(h)  # dL/da_t, a_t = xp_t + W_hh h_{t-1}
        d_h = d_outputs[steps - 1] + d_h_n
        for t in range(steps - 1, -1, -1):
            if t < steps - 1:
                d_h = _carry(torch.addmm(d_outputs[t], d_pre[t + 1], weight_hh), d_outputs[t] + d_h, per_step[t + 1])
            torch.mul(d_h, slope[t], out=d_pre[t])
            _zero_invalid(d_pre[t], per_step[t])
        d_h0 = _carry(d_pre[0] @ weight_hh, d_h, per_step[0]) if ctx.needs_input_grad[1] else None
        d_weight = _flat(d_pre).t() @ _flat(hs[:-1]) if ctx.needs_input_grad[2] else None  # one (H, T*B) x (T*B, H)
        return d_pre, d_h0, d_weight, None, None


# -- LSTM -------------------------------------------------------------------------------------------------------


def _lstm_activate(a: Tensor, hidden: int) -> None:
    """In place on pre-activations (B, 4H) in the order i, f, g, o: sigma on i, f, o and tanh on g."""
    a[:, : 2 * hidden].sigmoid_()
    a[:, 2 * hidden : 3 * hidden].tanh_()
    a[:, 3 * hidden :].sigmoid_()


def _lstm_gate_factors(acts: Tensor, c_prev: Tensor, hidden: int) -> tuple[Tensor, ...]:
    """The factors of the LSTM backward that do not depend on the recurrence, for all steps at once.

    With c_t = f c_{t-1} + i g: dL/d(pre i, f, g) = dL/dc_t * (g i(1-i), c_{t-1} f(1-f), i (1-g^2)).
    Returns the gates i, f, g, o (T, B, H) each and those three factors stacked (T, B, 3, H).
    """
    i, f, g, o = acts.unflatten(2, (4, hidden)).unbind(2)
    factors = torch.stack([g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g * g)], dim=2)  # (T, B, 3, H)
    return i, f, g, o, factors


class _LSTMRecurrence(torch.autograd.Function):
    """:class:`rnnkit.LSTMCell` (no projection, no layer norm) over all steps; xp = W_ih x + b_ih + b_hh."""

    @staticmethod
    def forward(ctx, xp: Tensor, h0: Tensor, c0: Tensor, weight_hh: Tensor, valid: Tensor | None):
        steps, batch, gates = xp.shape
        hidden = gates // 4
        per_step = _steps(valid, steps)
        xp = _clean(xp, valid)
        acts = torch.empty_like(xp)  # i, f, g, o after their nonlinearities: (T, B, 4H)
        hs = xp.new_empty(steps + 1, batch, hidden)  # h_0 (given), h_1 .. h_T
        cs = xp.new_empty(steps + 1, batch, hidden)  # c likewise
        tanh_cs = xp.new_empty(steps, batch, hidden)  # tanh(c_t)
        hs[0], cs[0] = h0, c0
        w_t = weight_hh.t()
        for t in range(steps):
            a = torch.addmm(xp[t], hs[t], w_t, out=acts[t])  # (B, 4H) pre-activations
            _lstm_activate(a, hidden)
            i, f, g, o = a.unflatten(1, (4, hidden)).unbind(1)
            c = torch.mul(f, cs[t], out=cs[t + 1]).addcmul_(i, g)  # c_t = f * c_{t-1} + i * g
            h = torch.mul(o, torch.tanh(c, out=tanh_cs[t]), out=hs[t + 1])  # h_t = o * tanh(c_t)
            _freeze(c, cs[t], per_step[t])
            _freeze(h, hs[t], per_step[t])
        ctx.save_for_backward(acts, hs, cs, tanh_cs, weight_hh, valid)
        return hs[1:], hs[steps].clone(), cs[steps].clone()

    @staticmethod
    def backward(ctx, d_outputs: Tensor, d_h_n: Tensor, d_c_n: Tensor):
        acts, hs, cs, tanh_cs, weight_hh, valid = ctx.saved_tensors
        steps, batch, gates = acts.shape
        hidden = gates // 4
        per_step = _steps(valid, steps)
        i, f, g, o, cell_factors = _lstm_gate_factors(acts, cs[:-1], hidden)
        to_cell = o * (1 - tanh_cs * tanh_cs)  # dh_t/dc_t: (T, B, H)
        to_output_gate = tanh_cs * o * (1 - o)  # dh_t/d(pre o)
        d_gates = torch.empty_like(acts)  # dL/d(pre-activations): (T, B, 4H)
        d_blocks = d_gates.unflatten(2, (4, hidden))  # (T, B, 4, H)
        d_h = d_outputs[steps - 1] + d_h_n
        d_c = d_c_n
        for t in range(steps - 1, -1, -1):
            if t < steps - 1:
                through = torch.addmm(d_outputs[t], d_gates[t + 1], weight_hh)
                d_h = _carry(through, d_outputs[t] + d_h, per_step[t + 1])
                d_c = _carry(d_c * f[t + 1], d_c, per_step[t + 1])
            d_c = _carry(torch.addcmul(d_c, d_h, to_cell[t]), d_c, per_step[t])  # dL/dc_t
            torch.mul(d_c.unsqueeze(1), cell_factors[t], out=d_blocks[t, :, :3])  # i, f, g
            torch.mul(d_h, to_output_gate[t], out=d_blocks[t, :, 3])  # o
            _zero_invalid(d_gates[t], per_step[t])
        d_h0 = _carry(d_gates[0] @ weight_hh, d_h, per_step[0]) if ctx.needs_input_grad[1] else None
        d_c0 = _carry(d_c * f[0], d_c, per_step[0]) if ctx.needs_input_grad[2] else None
        d_weight = _flat(d_gates).t() @ _flat(hs[:-1]) if ctx.needs_input_grad[3] else None  # (4H, T*B) x (T*B, H)
        return d_gates, d_h0, d_c0, d_weight, None


class _LayerNormLSTMRecurrence(torch.autograd.Function):
    """:class:`rnnkit.LSTMCell` with ``layer_norm=True`` (Ba et al. 2016, eq. 20-22) over all steps::

        gates = xp_t + LN(W_hh h_{t-1}; a_hh),   xp_t = LN(W_ih x_t; a_ih) + b_ih + b_hh
        h_t = o_t * tanh(LN(c_t; a_c, b_c))
    """

    @staticmethod
    def forward(ctx, xp, h0, c0, weight_hh, ln_hh_weight, ln_cell_weight, ln_cell_bias, valid):
        steps, batch, gates = xp.shape
        hidden = gates // 4
        per_step = _steps(valid, steps)
        xp = _clean(xp, valid)
        recurrent = torch.empty_like(xp)  # W_hh h_{t-1} before normalisation: (T, B, 4H)
        acts = torch.empty_like(xp)
        hs = xp.new_empty(steps + 1, batch, hidden)
        cs = xp.new_empty(steps + 1, batch, hidden)
        tanh_cs = xp.new_empty(steps, batch, hidden)  # tanh(LN(c_t))
        stats = xp.new_empty(4, steps, batch, 1)  # mean and 1/std of the recurrent and the cell normalisation
        hs[0], cs[0] = h0, c0
        w_t = weight_hh.t()
        for t in range(steps):
            rec = torch.mm(hs[t], w_t, out=recurrent[t])
            normalised, stats[0, t], stats[1, t] = torch.native_layer_norm(rec, (gates,), ln_hh_weight, None,
                                                                           LAYER_NORM_EPS)
            a = torch.add(xp[t], normalised, out=acts[t])
            _lstm_activate(a, hidden)
            i, f, g, o = a.unflatten(1, (4, hidden)).unbind(1)
            c = torch.mul(f, cs[t], out=cs[t + 1]).addcmul_(i, g)
            shown, stats[2, t], stats[3, t] = torch.native_layer_norm(c, (hidden,), ln_cell_weight, ln_cell_bias,
                                                                      LAYER_NORM_EPS)
            h = torch.mul(o, torch.tanh(shown, out=tanh_cs[t]), out=hs[t + 1])
            _freeze(c, cs[t], per_step[t])
            _freeze(h, hs[t], per_step[t])
        ctx.save_for_backward(recurrent, acts, hs, cs, tanh_cs, stats, weight_hh, ln_hh_weight, ln_cell_weight,
                              ln_cell_bias, valid)
        return hs[1:], hs[steps].clone(), cs[steps].clone()

    @staticmethod
    def backward(ctx, d_outputs, d_h_n, d_c_n):
        (recurrent, acts, hs, cs, tanh_cs, stats, weight_hh, ln_hh_weight, ln_cell_weight, ln_cell_bias,
         valid) = ctx.saved_tensors
        steps, batch, gates = acts.shape
        hidden = gates // 4
        per_step = _steps(valid, steps)
        i, f, g, o, cell_factors = _lstm_gate_factors(acts, cs[:-1], hidden)
        to_shown = o * (1 - tanh_cs * tanh_cs)  # dh_t / d LN(c_t)
        to_output_gate = tanh_cs * o * (1 - o)
        d_gates = torch.empty_like(acts)
        d_blocks = d_gates.unflatten(2, (4, hidden))
        d_recurrent = torch.empty_like(acts)  # dL/d(W_hh h_{t-1})
        d_shown = torch.empty_like(tanh_cs)  # dL/d LN(c_t), kept for the gradients of a_c and b_c
        only_input = [True, False, False]  # the normalisations' parameter gradients come after the loop
        d_h = d_outputs[steps - 1] + d_h_n
        d_c = d_c_n
        for t in range(steps - 1, -1, -1):
            if t < steps - 1:
                through = torch.addmm(d_outputs[t], d_recurrent[t + 1], weight_hh)
                d_h = _carry(through, d_outputs[t] + d_h, per_step[t + 1])
                d_c = _carry(d_c * f[t + 1], d_c, per_step[t + 1])
            torch.mul(d_h, to_shown[t], out=d_shown[t])
            _zero_invalid(d_shown[t], per_step[t])
            d_c = d_c + _layer_norm_backward(d_shown[t], cs[t + 1], (hidden,), stats[2, t], stats[3, t],
                                                         ln_cell_weight, ln_cell_bias, only_input)[0]
            torch.mul(d_c.unsqueeze(1), cell_factors[t], out=d_blocks[t, :, :3])
            torch.mul(d_h, to_output_gate[t], out=d_blocks[t, :, 3])
            _zero_invalid(d_gates[t], per_step[t])
            d_recurrent[t] = _layer_norm_backward(d_gates[t], recurrent[t], (gates,), stats[0, t],
                                                              stats[1, t], ln_hh_weight, None, only_input)[0]
        needs = ctx.needs_input_grad
        d_h0 = _carry(d_recurrent[0] @ weight_hh, d_h, per_step[0]) if needs[1] else None
        d_c0 = _carry(d_c * f[0], d_c, per_step[0]) if needs[2] else None
        d_weight = _flat(d_recurrent).t() @ _flat(hs[:-1]) if needs[3] else None  # (4H, T*B) x (T*B, H)
        d_ln_hh = d_ln_cell = d_ln_cell_bias = None
        if needs[4]:  # d a_hh = sum over steps and batch of dL/d(gates) * the normalised W_hh h_{t-1}
            d_ln_hh = _flat(d_gates * ((recurrent - stats[0]) * stats[1])).sum(0)
        if needs[5]:
            d_ln_cell = _flat(d_shown * ((cs[1:] - stats[2]) * stats[3])).sum(0)
        if needs[6]:
            d_ln_cell_bias = _flat(d_shown).sum(0)
        return d_gates, d_h0, d_c0, d_weight, d_ln_hh, d_ln_cell, d_ln_cell_bias, None


# -- GRU ----------------------------------------------------------------------------------------------------------


class _GRURecurrence(torch.autograd.Function):
    """:class:`rnnkit.GRUCell` with ``reset_after=True`` (torch's form) over all steps; xp = W_ih x + b_ih::

        (r, z) = sigma(xp_rz + W_hrz h + b_hrz),   n = tanh(xp_n + r * (W_hn h + b_hn)),
        h_t = n + z * (h_{t-1} - n)
    """

    @staticmethod
    def forward(ctx, xp: Tensor, h0: Tensor, weight_hh: Tensor, bias_hh: Tensor | None, valid: Tensor | None):
        steps, batch, gates = xp.shape
        hidden = gates // 3
        per_step = _steps(valid, steps)
        xp = _clean(xp, valid)
        # Per step [r, z, W_hn h + b_hn]: the recurrent product, its (r, z) part then replaced by the gates.
        saved = torch.empty_like(xp)  # (T, B, 3H)
        candidates = xp.new_empty(steps, batch, hidden)  # n_t
        hs = xp.new_empty(steps + 1, batch, hidden)
        hs[0] = h0
        w_t = weight_hh.t()
        for t in range(steps):
            rec = torch.mm(hs[t], w_t, out=saved[t]) if bias_hh is None else torch.addmm(bias_hh, hs[t], w_t,
                                                                                         out=saved[t])
            rz = rec[:, : 2 * hidden]
            rz.add_(xp[t, :, : 2 * hidden]).sigmoid_()
            n = torch.addcmul(xp[t, :, 2 * hidden :], rz[:, :hidden], rec[:, 2 * hidden :], out=candidates[t]).tanh_()
            h = torch.lerp(n, hs[t], rz[:, hidden:], out=hs[t + 1])  # n + z * (h_{t-1} - n)
            _freeze(h, hs[t], per_step[t])
        ctx.save_for_backward(saved, candidates, hs, weight_hh, valid)
        ctx.has_bias = bias_hh is not None
        return hs[1:], hs[steps].clone()

    @staticmethod
    def backward(ctx, d_outputs: Tensor, d_h_n: Tensor):
        saved, n, hs, weight_hh, valid = ctx.saved_tensors
        steps, batch, gates = saved.shape
        hidden = gates // 3
        per_step = _steps(valid, steps)
        r, z, recurrent_n = saved.unflatten(2, (3, hidden)).unbind(2)  # (T, B, H) each
        h_prev = hs[:-1]
        # dL/d(pre z) = dh (h_{t-1} - n) z(1-z); dL/d(pre n) = dh (1-z)(1-n^2): stacked as (T, B, 2, H).
        zn_factors = torch.stack([(h_prev - n) * z * (1 - z), (1 - z) * (1 - n * n)], dim=2)
        reset_factor = recurrent_n * r * (1 - r)  # dL/d(pre r) = dL/d(pre n) * (W_hn h + b_hn) r(1-r)
        d_xp = torch.empty_like(saved)  # dL/d(pre-activations from the input): (T, B, 3H)
        d_recurrent = torch.empty_like(saved)  # dL/d(W_hh h_{t-1} + b_hh)
        d_h = d_outputs[steps - 1] + d_h_n
        for t in range(steps - 1, -1, -1):
            if t < steps - 1:
                through = torch.addmm(torch.addcmul(d_outputs[t], z[t + 1], d_h), d_recurrent[t + 1], weight_hh)
                d_h = _carry(through, d_outputs[t] + d_h, per_step[t + 1])
            torch.mul(d_h.unsqueeze(1), zn_factors[t], out=d_xp[t, :, hidden:].unflatten(1, (2, hidden)))
            d_n = d_xp[t, :, 2 * hidden :]
            torch.mul(d_n, reset_factor[t], out=d_xp[t, :, :hidden])
            _zero_invalid(d_xp[t], per_step[t])
            d_recurrent[t, :, : 2 * hidden] = d_xp[t, :, : 2 * hidden]
            torch.mul(d_n, r[t], out=d_recurrent[t, :, 2 * hidden :])
        needs = ctx.needs_input_grad
        d_h0 = None
        if needs[1]:
            d_h0 = _carry(torch.addmm(z[0] * d_h, d_recurrent[0], weight_hh), d_h, per_step[0])
        d_weight = _flat(d_recurrent).t() @ _flat(h_prev) if needs[2] else None  # (3H, T*B) x (T*B, H)
        d_bias = _flat(d_recurrent).sum(0) if ctx.has_bias and needs[3] else None
        return d_xp, d_h0, d_weight, d_bias, None


class _ResetBeforeGRURecurrence(torch.autograd.Function):
    """:class:`rnnkit.GRUCell` with ``reset_after=False`` (Cho et al. 2014) over all steps;
    xp = W_ih x + b_ih + b_hh::

        (r, z) = sigma(xp_rz + W_hrz h_{t-1}),   n = tanh(xp_n + W_hn (r * h_{t-1})),   h_t = n + z (h_{t-1} - n)
    """

    @staticmethod
    def forward(ctx, xp: Tensor, h0: Tensor, weight_hh: Tensor, valid: Tensor | None):
        steps, batch, gates = xp.shape
        hidden = gates // 3
        per_step = _steps(valid, steps)
        xp = _clean(xp, valid)
        w_rz_t, w_n_t = weight_hh[: 2 * hidden].t(), weight_hh[2 * hidden :].t()
        rzs = xp.new_empty(steps, batch, 2 * hidden)  # r_t, z_t
        reset_states = xp.new_empty(steps, batch, hidden)  # r_t * h_{t-1}, the input of W_hn
        candidates = xp.new_empty(steps, batch, hidden)
        hs = xp.new_empty(steps + 1, batch, hidden)
        hs[0] = h0
        for t in range(steps):
            rz = torch.addmm(xp[t, :, : 2 * hidden], hs[t], w_rz_t, out=rzs[t]).sigmoid_()
            reset = torch.mul(rz[:, :hidden], hs[t], out=reset_states[t])
            n = torch.addmm(xp[t, :, 2 * hidden :], reset, w_n_t, out=candidates[t]).tanh_()
            h = torch.lerp(n, hs[t], rz[:, hidden:], out=hs[t + 1])
            _freeze(h, hs[t], per_step[t])
        ctx.save_for_backward(rzs, reset_states, candidates, hs, weight_hh, valid)
        return hs[1:], hs[steps].clone()

    @staticmethod
    def backward(ctx, d_outputs: Tensor, d_h_n: Tensor):
        rzs, reset_states, n, hs, weight_hh, valid = ctx.saved_tensors
        steps, batch, hidden = n.shape
        per_step = _steps(valid, steps)
        w_rz, w_n = weight_hh[: 2 * hidden], weight_hh[2 * hidden :]
        r, z = rzs.unflatten(2, (2, hidden)).unbind(2)
        h_prev = hs[:-1]
        zn_factors = torch.stack([(h_prev - n) * z * (1 - z), (1 - z) * (1 - n * n)], dim=2)  # (T, B, 2, H)
        reset_factor = h_prev * r * (1 - r)  # dL/d(pre r) = dL/d(r h) * h_{t-1} r(1-r)
        d_xp = hs.new_empty(steps, batch, 3 * hidden)  # dL/d(pre-activations): (T, B, 3H)
        d_h = d_outputs[steps - 1] + d_h_n
        through = None
        for t in range(steps - 1, -1, -1):
            if t < steps - 1:
                d_h = d_outputs[t] + _carry(through, d_h, per_step[t + 1])
            torch.mul(d_h.unsqueeze(1), zn_factors[t], out=d_xp[t, :, hidden:].unflatten(1, (2, hidden)))
            d_reset = torch.mm(d_xp[t, :, 2 * hidden :], w_n)  # dL/d(r * h_{t-1})
            torch.mul(d_reset, reset_factor[t], out=d_xp[t, :, :hidden])
            _zero_invalid(d_xp[t], per_step[t])
            # dL/dh_{t-1} (if step t ran): z dh + r dL/d(r h) + dL/d(pre r, z) W_hrz
            through = torch.addmm(torch.addcmul(z[t] * d_h, r[t], d_reset), d_xp[t, :, : 2 * hidden], w_rz)
        d_h0 = _carry(through, d_h, per_step[0]) if ctx.needs_input_grad[1] else None
        d_weight = None
        if ctx.needs_input_grad[2]:
            d_weight = torch.cat([
                _flat(d_xp[:, :, : 2 * hidden]).t() @ _flat(h_prev),  # (2H, T*B) x (T*B, H)
                _flat(d_xp[:, :, 2 * hidden :]).t() @ _flat(reset_states),  # (H, T*B) x (T*B, H)
            ])
        return d_xp, d_h0, d_weight, None
