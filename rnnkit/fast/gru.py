"""The fast path of the GRU (:class:`rnnkit.GRUCell` without layer norm): the reset gate after the product
(torch's form) and before it (Cho et al. 2014).

The same equations as the cell's :meth:`~rnnkit.GRUCell.gates` and ``recur`` (the docstrings there are the
definition) over all steps in one autograd Function, as in :mod:`rnnkit.fast.lstm`: the forward keeps the
backward's factors, the backward computes dW_hh with one matrix product (or one per block of steps). ``loop`` is
where the steps run (see :func:`rnnkit.fast.dispatch.step_loop`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnkit.fast import native, products, storage

__all__ = ["GRURecurrence", "ResetBeforeGRURecurrence"]


def _gru_factors(factors: Tensor, h: Tensor, n: Tensor, reset_operand: Tensor, hidden: int) -> None:
    """Store the GRU backward's factors into ``factors`` (rows, 5H), laid out [F_z, F_n, F_r, r, z] (r and z
    are already there: the gates' sigmoid writes them in place).

    With h_t = n + z (h_{t-1} - n): dL/d(pre z) = dh (h_{t-1} - n) z(1-z) = dh (h_t - n)(1-z) =: dh F_z,
    dL/d(pre n) = dh (1-z)(1-n^2) =: dh F_n, dL/d(pre r) = dL/d(pre n) x r(1-r) =: dL/d(pre n) F_r, where x =
    ``reset_operand`` is what the reset gate multiplies inside the candidate, W_hn h + b_hn (reset after); for
    the reset before (Cho et al. 2014) x = h_{t-1} and F_r multiplies dL/d(r h) instead.
    """
    r, z = factors[:, 3 * hidden : 4 * hidden], factors[:, 4 * hidden :]
    f_z, f_n, f_r = factors[:, :hidden], factors[:, hidden : 2 * hidden], factors[:, 2 * hidden : 3 * hidden]
    keep = torch.rsub(z, 1.0)  # 1 - z
    torch.sub(h, n, out=f_z).mul_(keep)
    torch.addcmul(keep, keep * n, n, value=-1.0, out=f_n)  # (1 - z) - (1 - z) n^2
    torch.mul(reset_operand, r, out=f_r).addcmul_(f_r, r, value=-1.0)


class GRURecurrence(torch.autograd.Function):
    """:class:`rnnkit.GRUCell` with ``reset_after=True`` (torch's form) over all steps; xp = W_ih x + b_ih::

        (r, z) = sigma(xp_rz + W_hrz h + b_hrz),   n = tanh(xp_n + r * (W_hn h + b_hn)),
        h_t = n + z * (h_{t-1} - n)
    """

    @staticmethod
    def forward(ctx, xp: Tensor, h0: Tensor, weight_hh: Tensor, bias_hh: Tensor | None, schedule: list[int],
                loop: str):
        steps, batch, gates = xp.shape
        hidden = gates // 3
        padded = storage.padded(schedule, steps, batch)
        keep = storage.keeps(ctx)
        factors = storage.Steps.empty(xp, steps, batch, 5 * hidden) if keep else None  # see _gru_factors
        rz = xp.new_empty(batch, 2 * hidden)
        candidate = xp.new_empty(batch, hidden)
        hs = storage.buffer(xp, (steps + 1, batch, hidden), padded)
        hs[0] = h0
        if loop == "native-sequence":
            xp, rec = xp.contiguous(), xp.new_empty(batch, gates)
            for start, stop in storage.spans(len(schedule), *((factors.size,) if keep else ())):
                native.operators().gru_sequence(schedule[start:stop], weight_hh, bias_hh, xp[start:], hs[start:],
                                                factors.from_step(start) if keep else None, rec)
        else:
            for t, rows in enumerate(schedule):
                rec = products.product(hs[t, :rows], weight_hh, bias_hh)  # W_hh h_{t-1} + b_hh: (rows, 3H)
                if loop == "native-step":
                    native.operators().gru_step(rec, xp[t, :rows], hs[t, :rows], hs[t + 1, :rows],
                                                factors[t, :rows] if keep else None)
                    continue
                gate_values = factors[t, :rows, 3 * hidden :] if keep else rz[:rows]
                torch.add(xp[t, :rows, : 2 * hidden], rec[:rows, : 2 * hidden], out=gate_values).sigmoid_()  # r, z
                r, z = gate_values[:, :hidden], gate_values[:, hidden:]
                reset_operand = rec[:rows, 2 * hidden :]  # W_hn h + b_hn
                n = torch.addcmul(xp[t, :rows, 2 * hidden :], r, reset_operand, out=candidate[:rows])
                storage.tanh_(n, out=n)
                h = torch.lerp(n, hs[t, :rows], z, out=hs[t + 1, :rows])  # n + z * (h_{t-1} - n)
                if keep:
                    _gru_factors(factors[t, :rows], h, n, reset_operand, hidden)
        if keep:
            ctx.save_for_backward(hs, weight_hh, *factors.blocks)
            ctx.schedule, ctx.block, ctx.has_bias, ctx.loop = schedule, factors.size, bias_hh is not None, loop
        return hs[1:], storage.finals(hs, schedule, batch)

    @staticmethod
    def backward(ctx, d_outputs: Tensor, d_h_n: Tensor):
        d_outputs = d_outputs.contiguous()  # (an output's gradient may be expanded, e.g. from .sum())
        hs, weight_hh, *blocks = ctx.saved_tensors
        factors = storage.Steps(blocks, ctx.block)
        schedule = ctx.schedule
        steps, batch, hidden = d_outputs.shape
        padded = storage.padded(schedule, steps, batch)
        d_xp = storage.buffer(d_outputs, (steps, batch, 3 * hidden), padded)  # dL/d(pre-activations from the input)
        needs = ctx.needs_input_grad
        d_recurrent = storage.RecurrentGradient(d_outputs, hs, 3 * hidden, needs[2], ctx.has_bias and needs[3])
        d_h_run = d_h_n.clone(memory_format=torch.contiguous_format)
        if ctx.loop == "native-sequence":
            # A slot of d_recurrent's block keeps zeros past n_t: the steps that used it before (later ones, the
            # backward runs in reverse) had at most n_t rows.
            for start, stop in reversed(storage.spans(len(schedule), factors.size, d_recurrent.size)):
                native.operators().gru_sequence_backward(schedule[start:stop], weight_hh, d_outputs[start:],
                                                         factors.from_step(start), d_xp[start:],
                                                         d_recurrent.block[start % d_recurrent.size :], d_h_run)
                d_recurrent.done(start)
        else:
            for t in range(len(schedule) - 1, -1, -1):
                rows = schedule[t]
                step_factors = factors[t, :rows]
                d_rec = d_recurrent.step(t, rows)[:rows]  # dL/d(W_hh h_{t-1} + b_hh)
                if ctx.loop == "native-step":
                    native.operators().gru_step_backward(d_h_run[:rows], d_outputs[t, :rows], step_factors,
                                                         d_xp[t, :rows], d_rec, d_h_run[:rows])
                    d_h_run[:rows] += products.product(d_rec, weight_hh.t())  # + dL/d(W_hh h_{t-1}) W_hh
                    d_recurrent.done(t)
                    continue
                d_h = d_h_run[:rows] + d_outputs[t, :rows]
                # [dL/d(pre z), dL/d(pre n)] = dh * [F_z, F_n]
                torch.mul(d_h.unsqueeze(1), step_factors[:, : 2 * hidden].unflatten(1, (2, hidden)),
                          out=d_xp[t, :rows, hidden:].unflatten(1, (2, hidden)))
                d_n = d_xp[t, :rows, 2 * hidden :]
                torch.mul(d_n, step_factors[:, 2 * hidden : 3 * hidden], out=d_xp[t, :rows, :hidden])  # dL/d(pre r)
                d_rec[:, : 2 * hidden] = d_xp[t, :rows, : 2 * hidden]
                torch.mul(d_n, step_factors[:, 3 * hidden : 4 * hidden], out=d_rec[:, 2 * hidden :])
                # dL/dh_{t-1} = z dh + dL/d(W_hh h_{t-1}) W_hh
                torch.mul(step_factors[:, 4 * hidden :], d_h, out=d_h_run[:rows]).addmm_(d_rec, weight_hh)
                d_recurrent.done(t)
        return d_xp, d_h_run, d_recurrent.d_weight, d_recurrent.d_bias, None, None


class ResetBeforeGRURecurrence(torch.autograd.Function):
    """:class:`rnnkit.GRUCell` with ``reset_after=False`` (Cho et al. 2014) over all steps;
    xp = W_ih x + b_ih + b_hh::

        (r, z) = sigma(xp_rz + W_hrz h_{t-1}),   n = tanh(xp_n + W_hn (r * h_{t-1})),   h_t = n + z (h_{t-1} - n)
    """

    @staticmethod
    def forward(ctx, xp: Tensor, h0: Tensor, weight_hh: Tensor, schedule: list[int], loop: str):
        steps, batch, gates = xp.shape
        hidden = gates // 3
        padded = storage.padded(schedule, steps, batch)
        keep = storage.keeps(ctx)
        w_rz_t, w_n_t = weight_hh[: 2 * hidden].t(), weight_hh[2 * hidden :].t()
        factors = storage.Steps.empty(xp, steps, batch, 5 * hidden) if keep else None  # see _gru_factors
        # r_t h_{t-1}, W_hn's input (zero past a length: it meets zero gradients in dW_hn's product)
        reset_states = storage.Steps.empty(xp, steps, batch, hidden, zero=padded) if keep else None
        hs = storage.buffer(xp, (steps + 1, batch, hidden), padded)
        hs[0] = h0
        if loop == "native-sequence":
            xp = xp.contiguous()
            sizes = (factors.size, reset_states.size) if keep else ()
            for start, stop in storage.spans(len(schedule), *sizes):
                native.operators().reset_before_sequence(schedule[start:stop], weight_hh, xp[start:], hs[start:],
                                                         factors.from_step(start) if keep else None,
                                                         reset_states.from_step(start) if keep else None)
        else:
            rz = xp.new_empty(batch, 2 * hidden)
            reset = xp.new_empty(batch, hidden)
            candidate = xp.new_empty(batch, hidden)
            for t, rows in enumerate(schedule):
                gate_values = factors[t, :rows, 3 * hidden :] if keep else rz[:rows]
                if loop == "native-step":
                    torch.addmm(xp[t, :rows, : 2 * hidden], hs[t, :rows], w_rz_t, out=gate_values)
                    reset_state = reset_states[t, :rows] if keep else reset[:rows]
                    native.operators().reset_before_gates(gate_values, hs[t, :rows], reset_state)
                    torch.addmm(xp[t, :rows, 2 * hidden :], reset_state, w_n_t, out=candidate[:rows])
                    native.operators().reset_before_step(candidate[:rows], gate_values, hs[t, :rows],
                                                         hs[t + 1, :rows], factors[t, :rows] if keep else None)
                    continue
                torch.addmm(xp[t, :rows, : 2 * hidden], hs[t, :rows], w_rz_t, out=gate_values).sigmoid_()
                r, z = gate_values[:, :hidden], gate_values[:, hidden:]
                reset_state = torch.mul(r, hs[t, :rows], out=reset_states[t, :rows] if keep else reset[:rows])
                n = torch.addmm(xp[t, :rows, 2 * hidden :], reset_state, w_n_t, out=candidate[:rows])
                storage.tanh_(n, out=n)
                h = torch.lerp(n, hs[t, :rows], z, out=hs[t + 1, :rows])
                if keep:
                    _gru_factors(factors[t, :rows], h, n, hs[t, :rows], hidden)
        if keep:
            ctx.save_for_backward(hs, weight_hh, *factors.blocks, *reset_states.blocks)
            ctx.blocks = [(len(factors.blocks), factors.size), (len(reset_states.blocks), reset_states.size)]
            ctx.schedule, ctx.loop = schedule, loop
        return hs[1:], storage.finals(hs, schedule, batch)

    @staticmethod
    def backward(ctx, d_outputs: Tensor, d_h_n: Tensor):
        d_outputs = d_outputs.contiguous()  # (an output's gradient may be expanded, e.g. from .sum())
        hs, weight_hh, *blocks = ctx.saved_tensors
        (factor_blocks, factor_size), (_, reset_size) = ctx.blocks
        factors = storage.Steps(blocks[:factor_blocks], factor_size)
        reset_states = storage.Steps(blocks[factor_blocks:], reset_size)
        schedule = ctx.schedule
        steps, batch, hidden = d_outputs.shape
        w_rz, w_n = weight_hh[: 2 * hidden], weight_hh[2 * hidden :]
        padded = storage.padded(schedule, steps, batch)
        d_xp = storage.buffer(d_outputs, (steps, batch, 3 * hidden), padded)  # dL/d(pre-activations): (T, B, 3H)
        d_h_run = d_h_n.clone(memory_format=torch.contiguous_format)
        if ctx.loop == "native-sequence":
            for start, stop in reversed(storage.spans(len(schedule), factors.size)):
                native.operators().reset_before_sequence_backward(schedule[start:stop], weight_hh, d_outputs[start:],
                                                                  factors.from_step(start), d_xp[start:], d_h_run)
        else:
            d_h_step = d_outputs.new_empty(batch, hidden)
            for t in range(len(schedule) - 1, -1, -1):
                rows = schedule[t]
                step_factors = factors[t, :rows]
                if ctx.loop == "native-step":
                    native.operators().reset_before_step_backward_gates(d_h_run[:rows], d_outputs[t, :rows],
                                                                        step_factors, d_xp[t, :rows], d_h_step[:rows])
                    d_reset = torch.mm(d_xp[t, :rows, 2 * hidden :], w_n)
                    native.operators().reset_before_step_backward_reset(d_reset, d_h_step[:rows], step_factors,
                                                                        d_xp[t, :rows], d_h_run[:rows])
                    d_h_run[:rows].addmm_(d_xp[t, :rows, : 2 * hidden], w_rz)
                    continue
                d_h = d_h_run[:rows] + d_outputs[t, :rows]
                torch.mul(d_h.unsqueeze(1), step_factors[:, : 2 * hidden].unflatten(1, (2, hidden)),
                          out=d_xp[t, :rows, hidden:].unflatten(1, (2, hidden)))
                d_reset = torch.mm(d_xp[t, :rows, 2 * hidden :], w_n)  # dL/d(r * h_{t-1})
                torch.mul(d_reset, step_factors[:, 2 * hidden : 3 * hidden], out=d_xp[t, :rows, :hidden])  # d(pre r)
                # dL/dh_{t-1} = z dh + r dL/d(r h) + dL/d(pre r, z) W_hrz
                carry = torch.mul(step_factors[:, 4 * hidden :], d_h, out=d_h_run[:rows])
                carry.addcmul_(step_factors[:, 3 * hidden : 4 * hidden], d_reset)
                carry.addmm_(d_xp[t, :rows, : 2 * hidden], w_rz)
        d_weight = None
        if ctx.needs_input_grad[2]:
            d_weight = weight_hh.new_empty(weight_hh.shape)
            # (2H, T*B) x (T*B, H) at once; the n rows block by block
            torch.mm(storage.flat(d_xp[:, :, : 2 * hidden]).t(), storage.flat(hs[:-1]), out=d_weight[: 2 * hidden])
            d_weight[2 * hidden :].zero_()
            for start, block in reset_states.spans():  # (H, K*B) x (K*B, H) per block of steps
                d_block = d_xp[start : start + block.shape[0], :, 2 * hidden :]
                d_weight[2 * hidden :].addmm_(storage.flat(d_block).t(), storage.flat(block))
        return d_xp, d_h_run, d_weight, None, None
