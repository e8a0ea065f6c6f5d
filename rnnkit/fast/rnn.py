"""The fast path of the Elman RNN (:class:`rnnkit.RNNCell`) and of the linear recurrence of minGRU and minLSTM.

Both follow the pattern of :mod:`rnnkit.fast.storage`: the forward writes every step's h into one (T + 1, B, H)
buffer, the backward runs the reverse recurrence for dL/d(pre-activation) and computes dW_hh as one matrix
product after the loop.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnkit.fast import native, storage

__all__ = ["RNNRecurrence", "linear_recurrence"]


class RNNRecurrence(torch.autograd.Function):
    """``h_t = phi(xp_t + W_hh h_{t-1})`` over all steps (:class:`rnnkit.RNNCell`; xp holds both biases), phi = tanh
    or ReLU. ``schedule``: n_t of every step (see :mod:`rnnkit.fast.storage`); ``loop``: "native-sequence" (the
    loop in C) or another of :data:`rnnkit.fast.dispatch.LOOPS` (the loop in Python; it has no per-step C kernel,
    the step being one product and one activation)."""

    @staticmethod
    def forward(ctx, xp: Tensor, h0: Tensor, weight_hh: Tensor, schedule: list[int], relu: bool, loop: str):
        steps, batch, hidden = xp.shape
        hs = storage.buffer(xp, (steps + 1, batch, hidden), storage.padded(schedule, steps, batch))  # h_0, h_1 .. h_T
        hs[0] = h0
        if loop == "native-sequence":
            native.operators().rnn_sequence(schedule, weight_hh, xp.contiguous(), hs, relu)
        else:
            w_t = weight_hh.t()
            for t, n in enumerate(schedule):
                h = torch.addmm(xp[t, :n], hs[t, :n], w_t, out=hs[t + 1, :n])  # (n, H) pre-activation
                if relu:
                    h.relu_()
                else:
                    storage.tanh_(h, out=h)
        if storage.keeps(ctx):
            ctx.save_for_backward(hs, weight_hh)
            ctx.schedule, ctx.relu, ctx.loop = schedule, relu, loop
        return hs[1:], storage.finals(hs, schedule, batch)

    @staticmethod
    def backward(ctx, d_outputs: Tensor, d_h_n: Tensor):
        d_outputs = d_outputs.contiguous()  # (an output's gradient may be expanded, e.g. from .sum())
        hs, weight_hh = ctx.saved_tensors
        schedule = ctx.schedule
        steps, batch = d_outputs.shape[0], d_outputs.shape[1]
        d_pre = storage.buffer(d_outputs, d_outputs.shape, storage.padded(schedule, steps, batch))
        d_h_run = d_h_n.clone(memory_format=torch.contiguous_format)
        if ctx.loop == "native-sequence":
            native.operators().rnn_sequence_backward(schedule, weight_hh, d_outputs, hs, d_pre, d_h_run, ctx.relu)
        else:
            for t in range(len(schedule) - 1, -1, -1):
                n = schedule[t]
                d_h = d_h_run[:n] + d_outputs[t, :n]
                h = hs[t + 1, :n]
                if ctx.relu:
                    torch.mul(d_h, h > 0, out=d_pre[t, :n])
                else:  # tanh' = 1 - h^2
                    torch.addcmul(d_h, d_h * h, h, value=-1.0, out=d_pre[t, :n])
                torch.mm(d_pre[t, :n], weight_hh, out=d_h_run[:n])
        d_weight = None
        if ctx.needs_input_grad[2]:
            d_weight = storage.flat(d_pre).t() @ storage.flat(hs[:-1])  # one (H, T*B) x (T*B, H)
        return d_pre, d_h_run, d_weight, None, None, None


def linear_recurrence(a: Tensor, v: Tensor, h0: Tensor) -> Tensor:
    """All h_t of the linear recurrence ``h_t = a_t * h_{t-1} + v_t``: a, v (T, B, H), h0 (B, H) -> (T, B, H).

    A loop of one ``addcmul`` per step in the forward and one in the backward (dL/dh_{t-1} = a_t dL/dh_t +
    dL/d out_{t-1}); dL/da = dL/dh * h_{t-1} and dL/dv = dL/dh for all steps at once. The sequential form of
    :mod:`rnnkit.minimal`'s cells.
    """
    return _LinearRecurrence.apply(a, v, h0)


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
        d_outputs = d_outputs.contiguous()  # (an output's gradient may be expanded, e.g. from .sum())
        a, hs = ctx.saved_tensors
        steps = a.shape[0]
        d_h = torch.empty_like(d_outputs)  # dL/dh_t, all paths
        d_h[steps - 1] = d_outputs[steps - 1]
        for t in range(steps - 2, -1, -1):
            torch.addcmul(d_outputs[t], a[t + 1], d_h[t + 1], out=d_h[t])
        d_a = d_h * hs[:-1] if ctx.needs_input_grad[0] else None
        d_h0 = a[0] * d_h[0] if ctx.needs_input_grad[2] else None
        return d_a, d_h, d_h0
