"""The fast path of the LSTM (:class:`rnnkit.LSTMCell` without projection), with and without layer norm.

The same equations as the cell's :meth:`~rnnkit.LSTMCell.gates` and ``recur`` (the docstrings there are the
definition), over all steps in one autograd Function: the forward keeps only the backward's *factors*, the parts of
each step's derivatives that do not depend on the recurrence (sigma' = sigma (1 - sigma), tanh' = 1 - tanh^2, times
the other operand of each product), computed while the step's values are in cache; the backward runs the reverse
recurrence for dL/d(pre-activations) and computes dW_hh as one matrix product after the loop, and the gradient of
the hoisted input projection is dL/d(pre-activations) itself (so dW_ih and dx are one large product each).
``loop`` is where the steps run (see :func:`rnnkit.fast.dispatch.step_loop`): in C (csrc/kernels.c:
lstm_sequence_forward and the like), in Python with one C kernel per step, or in Python with torch operations.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnkit.cells import LAYER_NORM_EPS
from rnnkit.fast import native, products, storage

__all__ = ["LSTMRecurrence", "LayerNormLSTMRecurrence"]

_layer_norm_backward = torch.ops.aten.native_layer_norm_backward


def _lstm_gates(a: Tensor, hidden: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """In place on pre-activations (n, 4H) in the order i, f, g, o: sigma on i, f, o and tanh on g."""
    a[:, : 2 * hidden].sigmoid_()
    g = a[:, 2 * hidden : 3 * hidden]
    storage.tanh_(g, out=g)
    a[:, 3 * hidden :].sigmoid_()
    return a[:, :hidden], a[:, hidden : 2 * hidden], g, a[:, 3 * hidden :]


def _lstm_cell_factors(factors: Tensor, i: Tensor, f: Tensor, g: Tensor, c_prev: Tensor, hidden: int) -> None:
    """Store [g i(1-i), c_{t-1} f(1-f), i(1-g^2)] (dc_t -> d pre-activation of i, f, g) and f into ``factors``
    (n, 6H), laid out [P_i, P_f, P_g, P_o, A, f] (P_o and A are the output's, see _lstm_output_factors)."""
    p_i, p_f, p_g = factors[:, :hidden], factors[:, hidden : 2 * hidden], factors[:, 2 * hidden : 3 * hidden]
    torch.mul(c_prev, f, out=p_f).addcmul_(p_f, f, value=-1.0)  # c_{t-1} f - c_{t-1} f^2
    ig = torch.mul(i, g, out=p_i)
    torch.addcmul(i, ig, g, value=-1.0, out=p_g)  # i - i g^2
    p_i.addcmul_(ig, i, value=-1.0)  # g i - g i^2
    factors[:, 5 * hidden :].copy_(f)


def _lstm_output_factors(factors: Tensor, h: Tensor, o: Tensor, shown_tanh: Tensor, hidden: int) -> None:
    """h = o tanh(s): store dh/d(pre o) = tanh(s) o(1-o) = h - h o and dh/ds = o(1 - tanh^2 s) = o - h tanh(s)."""
    torch.addcmul(h, h, o, value=-1.0, out=factors[:, 3 * hidden : 4 * hidden])
    torch.addcmul(o, h, shown_tanh, value=-1.0, out=factors[:, 4 * hidden : 5 * hidden])


def _lstm_gate_gradients(d_gates: Tensor, d_c: Tensor, d_h: Tensor, factors: Tensor, hidden: int) -> None:
    """dL/d(pre-activations) (n, 4H) of a step from dL/dc_t and dL/dh_t: i, f, g from dc, o from dh."""
    torch.mul(d_c.unsqueeze(1), factors[:, : 3 * hidden].unflatten(1, (3, hidden)),
              out=d_gates[:, : 3 * hidden].unflatten(1, (3, hidden)))
    torch.mul(d_h, factors[:, 3 * hidden : 4 * hidden], out=d_gates[:, 3 * hidden :])


class LSTMRecurrence(torch.autograd.Function):
    """:class:`rnnkit.LSTMCell` (no projection, no layer norm) over all steps; xp = W_ih x + b_ih + b_hh."""

    @staticmethod
    def forward(ctx, xp: Tensor, h0: Tensor, c0: Tensor, weight_hh: Tensor, schedule: list[int], loop: str):
        steps, batch, gates = xp.shape
        hidden = gates // 4
        padded = storage.padded(schedule, steps, batch)
        keep = storage.keeps(ctx)
        a = xp.new_empty(batch, gates)  # one step's pre-activations, then gates
        tanh_c = xp.new_empty(batch, hidden)
        hs = storage.buffer(xp, (steps + 1, batch, hidden), padded)  # h_0 (given), h_1 .. h_T
        factors = storage.Steps.empty(xp, steps, batch, 6 * hidden) if keep else None  # see _lstm_cell_factors
        hs[0] = h0
        # c_t of every row; a row stops changing after its last step
        c = c0.clone(memory_format=torch.contiguous_format)
        w_t = weight_hh.t()
        if loop == "native-sequence":
            xp = xp.contiguous()
            for start, stop in storage.spans(len(schedule), *((factors.size,) if keep else ())):
                native.operators().lstm_sequence(schedule[start:stop], weight_hh, xp[start:], hs[start:], c,
                                                 factors.from_step(start) if keep else None)
        else:
            for t, n in enumerate(schedule):
                torch.addmm(xp[t, :n], hs[t, :n], w_t, out=a[:n])
                if loop == "native-step":  # the same elementwise work as below, in one C call
                    native.operators().lstm_step(a[:n], c[:n], hs[t + 1, :n], factors[t, :n] if keep else None)
                    continue
                i, f, g, o = _lstm_gates(a[:n], hidden)
                c_prev = c[:n]
                if keep:
                    _lstm_cell_factors(factors[t, :n], i, f, g, c_prev, hidden)
                c_prev.mul_(f).addcmul_(i, g)  # c_t = f * c_{t-1} + i * g
                h = torch.mul(o, storage.tanh_(c_prev, out=tanh_c[:n]), out=hs[t + 1, :n])  # h_t = o * tanh(c_t)
                if keep:
                    _lstm_output_factors(factors[t, :n], h, o, tanh_c[:n], hidden)
        if keep:
            ctx.save_for_backward(hs, weight_hh, *factors.blocks)
            ctx.schedule, ctx.block, ctx.loop = schedule, factors.size, loop
        return hs[1:], storage.finals(hs, schedule, batch), c

    @staticmethod
    def backward(ctx, d_outputs: Tensor, d_h_n: Tensor, d_c_n: Tensor):
        d_outputs = d_outputs.contiguous()  # (an output's gradient may be expanded, e.g. from .sum())
        hs, weight_hh, *blocks = ctx.saved_tensors
        factors = storage.Steps(blocks, ctx.block)
        schedule = ctx.schedule
        steps, batch, hidden = d_outputs.shape
        d_gates = storage.buffer(d_outputs, (steps, batch, 4 * hidden), storage.padded(schedule, steps, batch))
        d_h_run = d_h_n.clone(memory_format=torch.contiguous_format)
        # dL/dc_t likewise, not yet counting h_t's own dependence on c_t
        d_c_run = d_c_n.clone(memory_format=torch.contiguous_format)
        if ctx.loop == "native-sequence":
            for start, stop in reversed(storage.spans(len(schedule), factors.size)):
                native.operators().lstm_sequence_backward(schedule[start:stop], weight_hh, d_outputs[start:],
                                                          factors.from_step(start), d_gates[start:], d_h_run,
                                                          d_c_run)
        else:
            for t in range(len(schedule) - 1, -1, -1):
                n = schedule[t]
                step_factors = factors[t, :n]
                if ctx.loop == "native-step":
                    native.operators().lstm_step_backward(d_h_run[:n], d_outputs[t, :n], d_c_run[:n], step_factors,
                                                          d_gates[t, :n])
                    torch.mm(d_gates[t, :n], weight_hh, out=d_h_run[:n])
                    continue
                d_h = d_h_run[:n] + d_outputs[t, :n]
                d_c = torch.addcmul(d_c_run[:n], d_h, step_factors[:, 4 * hidden : 5 * hidden])  # dL/dc_t
                _lstm_gate_gradients(d_gates[t, :n], d_c, d_h, step_factors, hidden)
                torch.mm(d_gates[t, :n], weight_hh, out=d_h_run[:n])  # -> dL/dh_{t-1}
                torch.mul(d_c, step_factors[:, 5 * hidden :], out=d_c_run[:n])  # -> dL/dc_{t-1} = dL/dc_t f_t
        d_weight = None
        if ctx.needs_input_grad[3]:
            d_weight = storage.flat(d_gates).t() @ storage.flat(hs[:-1])  # (4H, T*B) x (T*B, H)
        return d_gates, d_h_run, d_c_run, d_weight, None, None


class LayerNormLSTMRecurrence(torch.autograd.Function):
    """:class:`rnnkit.LSTMCell` with ``layer_norm=True`` (Ba et al. 2016, eq. 20-22) over all steps, from
    xp_t = W_ih x_t::

        gates = LN(xp_t; a_ih) + b_ih + b_hh + LN(W_hh h_{t-1}; a_hh)
        h_t = o_t * tanh(LN(c_t; a_c, b_c))

    ``bias`` is b_ih + b_hh (None without biases).
    """

    @staticmethod
    def forward(ctx, xp, h0, c0, weight_hh, ln_ih_weight, bias, ln_hh_weight, ln_cell_weight, ln_cell_bias,
                schedule: list[int], loop: str):
        steps, batch, gates = xp.shape
        hidden = gates // 4
        padded = storage.padded(schedule, steps, batch)
        keep = storage.keeps(ctx)
        a = xp.new_empty(batch, gates)
        tanh_shown = xp.new_empty(batch, hidden)
        hs = storage.buffer(xp, (steps + 1, batch, hidden), padded)
        # mean and 1/std per step and row of W_hh h, of c and of W_ih x: [mean_rec, rstd_rec, mean_c, rstd_c,
        # mean_x, rstd_x]
        step_stats = xp.new_empty(steps, batch, 6) if keep else None
        if keep:  # the normalisations' inputs and statistics, for their backward
            recurrent = []  # W_hh h_{t-1} of every step, (n_t, 4H) each
            cs = storage.Steps.empty(xp, steps, batch, hidden)  # c_t
            stats = step_stats.permute(2, 0, 1).unsqueeze(-1)  # (6, T, B, 1) views for the torch operations
            factors = storage.Steps.empty(xp, steps, batch, 6 * hidden)
        hs[0] = h0
        c = c0.clone(memory_format=torch.contiguous_format)
        fused = loop != "torch-ops"
        shift = bias if bias is not None else xp.new_zeros(gates)
        if not fused:  # LN(W_ih x) + b of all steps at once (the kernel normalises each step's rows itself)
            xp_normalised, mean_x, rstd_x = torch.native_layer_norm(xp, (gates,), ln_ih_weight, bias,
                                                                    LAYER_NORM_EPS)
            if keep:
                stats[4], stats[5] = mean_x, rstd_x
        whole = loop == "native-sequence"
        if whole:  # the loop in C; W_hh h_{t-1} of every step kept in blocks rather than a list
            xp = xp.contiguous()
            recurrent = storage.Steps.empty(xp, steps, batch, gates) if keep else None
            scratch = None if keep else xp.new_empty(batch, gates)  # W_hh h_{t-1} of the current step only
            sizes = (factors.size, cs.size, recurrent.size) if keep else ()
            for start, stop in storage.spans(len(schedule), *sizes):
                native.operators().layer_norm_lstm_sequence(
                    schedule[start:stop], weight_hh, xp[start:], ln_ih_weight, shift, ln_hh_weight, ln_cell_weight,
                    ln_cell_bias, LAYER_NORM_EPS, hs[start:], c, factors.from_step(start) if keep else None,
                    cs.from_step(start) if keep else None, step_stats[start:] if keep else None,
                    recurrent.from_step(start) if keep else scratch, keep)
        else:
            for t, n in enumerate(schedule):
                r = products.product(hs[t, :n], weight_hh)  # W_hh h_{t-1}: (n, 4H)
                if keep:
                    recurrent.append(r)
                if fused:
                    native.operators().layer_norm_lstm_step(
                        r, xp[t, :n], ln_ih_weight, shift, ln_hh_weight, ln_cell_weight, ln_cell_bias, LAYER_NORM_EPS,
                        c[:n], hs[t + 1, :n], factors[t, :n] if keep else None, cs[t, :n] if keep else None,
                        step_stats[t, :n] if keep else None)
                    continue
                normalised, mean, rstd = torch.native_layer_norm(r, (gates,), ln_hh_weight, None, LAYER_NORM_EPS)
                i, f, g, o = _lstm_gates(torch.add(xp_normalised[t, :n], normalised, out=a[:n]), hidden)
                c_prev = c[:n]
                if keep:
                    stats[0, t, :n], stats[1, t, :n] = mean, rstd
                    _lstm_cell_factors(factors[t, :n], i, f, g, c_prev, hidden)
                c_prev.mul_(f).addcmul_(i, g)
                shown, mean, rstd = torch.native_layer_norm(c_prev, (hidden,), ln_cell_weight, ln_cell_bias,
                                                            LAYER_NORM_EPS)
                h = torch.mul(o, storage.tanh_(shown, out=tanh_shown[:n]), out=hs[t + 1, :n])
                if keep:
                    cs[t, :n] = c_prev
                    stats[2, t, :n], stats[3, t, :n] = mean, rstd
                    _lstm_output_factors(factors[t, :n], h, o, tanh_shown[:n], hidden)
        if keep:
            stores = (recurrent, cs, factors) if whole else (cs, factors)
            ctx.save_for_backward(xp, step_stats, hs, weight_hh, ln_ih_weight, shift, ln_hh_weight, ln_cell_weight,
                                  ln_cell_bias, *([] if whole else recurrent), *(b for st in stores for b in st.blocks))
            ctx.blocks = [(len(store.blocks), store.size) for store in stores]
            ctx.schedule, ctx.has_bias, ctx.loop = schedule, bias is not None, loop
        return hs[1:], storage.finals(hs, schedule, batch), c

    @staticmethod
    def backward(ctx, d_outputs, d_h_n, d_c_n):
        d_outputs = d_outputs.contiguous()  # (an output's gradient may be expanded, e.g. from .sum())
        (xp, step_stats, hs, weight_hh, ln_ih_weight, shift, ln_hh_weight, ln_cell_weight, ln_cell_bias,
         *blocks) = ctx.saved_tensors
        schedule = ctx.schedule
        stepped = len(ctx.blocks) == 3  # W_hh h_{t-1} in blocks (the forward's loop ran in C), else a list
        if not stepped:
            recurrent, blocks = blocks[: len(schedule)], blocks[len(schedule) :]  # (n_t, 4H) each
        stores = []
        for count, size in ctx.blocks:
            stores.append(storage.Steps(blocks[:count], size))
            blocks = blocks[count:]
        if stepped:
            recurrent, cs, factors = stores
        else:
            cs, factors = stores
        steps, batch, hidden = d_outputs.shape
        gates = 4 * hidden
        needs = ctx.needs_input_grad
        padded = storage.padded(schedule, steps, batch)
        # dL/d(pre-activations) of each step; the kernels replace them by dL/d xp in place
        d_gates = storage.buffer(d_outputs, (steps, batch, gates), padded)
        d_recurrent = storage.RecurrentGradient(d_outputs, hs, gates, needs[3], False)  # dL/d(W_hh h_{t-1})
        d_shown = d_outputs.new_empty(batch, hidden)  # dL/d LN(c_t)
        # The normalisations' parameter gradients, summed over steps (LN's backward sums over the rows).
        d_ln_ih, d_bias = torch.zeros_like(ln_ih_weight), torch.zeros_like(shift)
        d_ln_hh = torch.zeros_like(ln_hh_weight)
        d_ln_cell = torch.zeros_like(ln_cell_weight)
        d_ln_cell_bias = torch.zeros_like(ln_cell_bias)
        d_h_run = d_h_n.clone(memory_format=torch.contiguous_format)
        d_c_run = d_c_n.clone(memory_format=torch.contiguous_format)
        fused = ctx.loop != "torch-ops"
        if stepped:  # the loop in C (a slot of d_recurrent's block keeps zeros past n_t, see GRURecurrence)
            for start, stop in reversed(storage.spans(len(schedule), factors.size, cs.size, recurrent.size,
                                                      d_recurrent.size)):
                native.operators().layer_norm_lstm_sequence_backward(
                    schedule[start:stop], weight_hh, d_outputs[start:], factors.from_step(start),
                    recurrent.from_step(start), xp[start:], cs.from_step(start), step_stats[start:], ln_ih_weight,
                    ln_hh_weight, ln_cell_weight, d_gates[start:], d_recurrent.block[start % d_recurrent.size :],
                    d_h_run, d_c_run, d_ln_ih, d_bias, d_ln_hh, d_ln_cell, d_ln_cell_bias)
                d_recurrent.done(start)
        else:
            for t in range(len(schedule) - 1, -1, -1):
                n = schedule[t]
                step_factors = factors[t, :n]
                d_rec = d_recurrent.step(t, n)
                step_recurrent = recurrent[t, :n] if stepped else recurrent[t]
                if fused:  # also adds the normalisation gains' and shifts' gradients
                    native.operators().layer_norm_lstm_step_backward(
                        d_h_run[:n], d_outputs[t, :n], d_c_run[:n], step_factors, step_recurrent, xp[t, :n], cs[t, :n],
                        step_stats[t, :n], ln_ih_weight, ln_hh_weight, ln_cell_weight, d_gates[t, :n], d_rec[:n],
                        d_ln_ih, d_bias, d_ln_hh, d_ln_cell, d_ln_cell_bias)
                    d_h_run[:n] = products.product(d_rec[:n], weight_hh.t())  # dL/dh_{t-1} = dL/d(W_hh h) W_hh
                    d_recurrent.done(t)
                    continue
                mean_rec, rstd_rec, mean_c, rstd_c = step_stats[t, :n, :4].t().contiguous().unsqueeze(-1)  # (n, 1) each
                d_h = d_h_run[:n] + d_outputs[t, :n]
                torch.mul(d_h, step_factors[:, 4 * hidden : 5 * hidden], out=d_shown[:n])
                d_cell, d_gain, d_shift = _layer_norm_backward(
                    d_shown[:n], cs[t, :n], (hidden,), mean_c, rstd_c, ln_cell_weight, ln_cell_bias,
                    [True, needs[7], needs[8]])
                d_c = d_c_run[:n] + d_cell
                _lstm_gate_gradients(d_gates[t, :n], d_c, d_h, step_factors, hidden)
                d_rec_n, d_rec_gain, _ = _layer_norm_backward(
                    d_gates[t, :n], step_recurrent, (gates,), mean_rec, rstd_rec, ln_hh_weight, None,
                    [True, needs[6], False])
                d_rec[:n] = d_rec_n
                d_h_run[:n] = products.product(d_rec_n, weight_hh.t())
                d_recurrent.done(t)
                torch.mul(d_c, step_factors[:, 5 * hidden :], out=d_c_run[:n])
                if needs[6]:
                    d_ln_hh += d_rec_gain
                if needs[7]:
                    d_ln_cell += d_gain
                if needs[8]:
                    d_ln_cell_bias += d_shift
        if not fused:  # LN(W_ih x)'s backward over all steps at once
            mean_x, rstd_x = step_stats[..., 4:5].contiguous(), step_stats[..., 5:6].contiguous()
            d_gates, d_ln_ih, d_bias = _layer_norm_backward(d_gates, xp, (gates,), mean_x, rstd_x, ln_ih_weight,
                                                            shift, [True, needs[4], needs[5]])
        return (d_gates, d_h_run, d_c_run, d_recurrent.d_weight, d_ln_ih if needs[4] else None,
                d_bias if needs[5] and ctx.has_bias else None, d_ln_hh if needs[6] else None,
                d_ln_cell if needs[7] else None, d_ln_cell_bias if needs[8] else None, None, None)
