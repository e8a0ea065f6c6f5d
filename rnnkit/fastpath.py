"""The fast path of rnnkit's own cells: a whole sequence per call, with a hand-written backward.

Stepping a cell with autograd (:meth:`rnnkit.cells.LSTMCell.recur` once per step) records ~15 small
operations per step, and its backward computes the gradient of ``weight_hh`` as T small matrix products
(one per step). The recurrences here run the same equations over all T steps inside one
``torch.autograd.Function``:

* the forward writes each step's results in place into preallocated (T, B, ...) buffers (no ``torch.stack``
  at the end) and, when gradients are needed, keeps only what the backward needs: the *factors* of the
  backward that do not depend on the recurrence (sigma'(a) = sigma (1 - sigma), tanh' = 1 - tanh^2, times
  the other operand of each product), computed while the step's values are still in cache;
* the backward runs the reverse recurrence for dL/d(pre-activations) at each step: one (B, G*H) x (G*H, H)
  product per step (unavoidable: it carries the gradient to h_{t-1}) and a few elementwise products with
  the stored factors; the **weight gradients are large matrix products outside the step loop**::

      dW_hh = sum_t dgates_t^T h_{t-1}   =   dgates (G*H, T*B)  x  h_prev (T*B, H)

  (one product after the loop, or one per block of K steps where dgates is kept in a rolling block, see
  ``_RecurrentGradient``), and the gradient of the hoisted input projection ``xp`` is dgates itself, so
  autograd turns it into ``dW_ih = dxp^T x`` and ``dx = dxp W_ih``, again one large product each.
* the elementwise work of a step is one call of a C function (:mod:`rnnkit.kernels`, compiled on first use)
  on CPU in float32, else the torch operations written out below (the same formulas). The loops of the LSTM, the
  reset-before GRU and the Elman RNN, and the GRU's and the layer-norm LSTM's wherever rnnkit.linear keeps their
  products with MKL, run entirely in C, products included (the same BLAS products as torch.mm; see
  ``_whole_sequences``).

Each function computes exactly the equations of its cell in :mod:`rnnkit.cells` (the docstrings there are
the definition); ``tests/test_fast_paths.py`` checks outputs, final states and the gradients of every input
and parameter against the reference path (the cells' ``recur`` stepped with autograd), in float32 and by
``gradcheck`` in float64, with and without lengths, in both directions and over several layers.

Variable lengths (as torch's packed sequences do): :func:`run` sorts the batch by length, longest first, so
that the sequences still running at step t are the first n_t rows; each step computes those rows only (no
work on padding, no masks), a sequence's state stops changing after its last step, and so the final state is
the one at each sequence's own end. The backward runs the same shrinking batch in reverse. Padding is never
read, so whatever it holds (inf, NaN) cannot reach an output or a gradient.

Which cells (see :func:`supports`): ``RNNCell`` (tanh, ReLU), ``LSTMCell`` without projection (with or
without layer normalisation), ``GRUCell`` without layer normalisation (reset after, torch's form, or reset
before, Cho et al. 2014), and any cell class with a ``run_sequence(xp, state, valid)`` method that computes
its whole sequence itself (:mod:`rnnkit.minimal`: minGRU, minLSTM). Zoneout and recurrent dropout in training
are handled by the reference path.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit import kernels, linear
from rnnkit.cells import LAYER_NORM_EPS, GRUCell, LSTMCell, RNNCell, State

__all__ = ["supports", "input_projection", "run", "linear_recurrence"]

_layer_norm_backward = torch.ops.aten.native_layer_norm_backward

# Block sizes of the per-step storage (see _Steps and _RecurrentGradient): below glibc's 32 MB mmap threshold.
_STEP_BLOCK_BYTES = 16 << 20
_GRADIENT_BLOCK_BYTES = 4 << 20


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


def input_projection(cell: nn.Module, x: Tensor) -> Tensor:
    """What :func:`run` takes as ``xp``: ``cell.input_projection(x)``, except for the layer-norm LSTM: W_ih x only,
    whose normalisation (and the biases) :func:`run` applies inside each step (one pass over the step's values,
    rather than one more pass over all steps forward and backward, and two fewer (T, B, 4H) tensors)."""
    if type(cell) is LSTMCell and cell.layer_norm:
        return linear.linear(x, cell.weight_ih)
    return cell.input_projection(x)


def run(cell: nn.Module, xp: Tensor, state: State, lengths: Tensor | None) -> tuple[Tensor, State]:
    """Run ``cell`` over all steps of the hoisted input projection.

    Args:
        cell: a cell for which :func:`supports` is True.
        xp: (T, B, G*H) :func:`input_projection` of every step.
        state: the initial state, h_0 (B, H) or (h_0, c_0).
        lengths: (B,) int64 lengths in [1, T] (the valid prefix of each sequence), or None (all T).
    Returns:
        outputs (T, B, H) (past a length: unspecified, the caller zeroes them) and the final state, each
        sequence's at its own last step.
    """
    steps, batch = xp.shape[0], xp.shape[1]
    if callable(getattr(type(cell), "run_sequence", None)):
        valid = None if lengths is None else (torch.arange(steps, device=xp.device).unsqueeze(1) < lengths)
        return cell.run_sequence(xp, state, None if valid is None else valid.unsqueeze(-1))
    if lengths is None:
        return _run_sorted(cell, xp, state, None)
    # Longest first, so that the sequences still running at step t are rows [0, n_t).
    order = torch.argsort(lengths, descending=True, stable=True)
    running = (lengths[order].unsqueeze(0) > torch.arange(steps, device=lengths.device).unsqueeze(1)).sum(1)
    running = running.tolist()  # n_t, once per call
    if torch.equal(order, torch.arange(batch, device=order.device)):
        return _run_sorted(cell, xp, state, running)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(batch, device=order.device)
    outputs, final = _run_sorted(cell, xp.index_select(1, order), _map(lambda s: s.index_select(0, order), state),
                                 running)
    return outputs.index_select(1, inverse), _map(lambda s: s.index_select(0, inverse), final)


def _run_sorted(cell: nn.Module, xp: Tensor, state: State, running: list[int] | None) -> tuple[Tensor, State]:
    """:func:`run` on a batch sorted longest first; ``running`` is n_t for every step (None: all B)."""
    if type(cell) is LSTMCell:
        h0, c0 = state
        if cell.layer_norm:  # xp = W_ih x: its normalisation and the biases are part of the recurrence
            bias = cell.bias_ih + cell.bias_hh if cell.bias else None
            outputs, h_n, c_n = _LayerNormLSTMRecurrence.apply(
                xp, h0, c0, cell.weight_hh, cell.ln_ih_weight, bias, cell.ln_hh_weight, cell.ln_cell_weight,
                cell.ln_cell_bias, running
            )
        else:
            outputs, h_n, c_n = _LSTMRecurrence.apply(xp, h0, c0, cell.weight_hh, running)
        return outputs, (h_n, c_n)
    if type(cell) is GRUCell:
        if cell.reset_after:
            return _GRURecurrence.apply(xp, state, cell.weight_hh, cell.bias_hh, running)
        # Cho et al. 2014: b_hh is outside the reset product, so it joins the input projection.
        xp = xp if cell.bias_hh is None else xp + cell.bias_hh
        return _ResetBeforeGRURecurrence.apply(xp, state, cell.weight_hh, running)
    return _RNNRecurrence.apply(xp, state, cell.weight_hh, running, cell.nonlinearity == "relu")


def linear_recurrence(a: Tensor, v: Tensor, h0: Tensor) -> Tensor:
    """All h_t of the linear recurrence ``h_t = a_t * h_{t-1} + v_t``: a, v (T, B, H), h0 (B, H) -> (T, B, H).

    A loop of one ``addcmul`` per step in the forward and one in the backward (dL/dh_{t-1} = a_t dL/dh_t +
    dL/d out_{t-1}); dL/da = dL/dh * h_{t-1} and dL/dv = dL/dh for all steps at once. The sequential form of
    :mod:`rnnkit.minimal`'s cells.
    """
    return _LinearRecurrence.apply(a, v, h0)


# -- helpers ------------------------------------------------------------------------------------------------


def _map(fn, state: State) -> State:
    return fn(state) if isinstance(state, Tensor) else tuple(fn(s) for s in state)


def _schedule(running: list[int] | None, steps: int, batch: int) -> list[int]:
    """n_t for every step that runs at all (a batch whose longest sequence is shorter than T stops early)."""
    if running is None:
        return [batch] * steps
    return [n for n in running if n > 0]


def _finals(hs: Tensor, schedule: list[int], batch: int) -> Tensor:
    """Each sequence's last h: rows [n_{t+1}, n_t) end at step t, so their final state is hs[t + 1] there."""
    final = hs[len(schedule)].clone()
    for t in range(len(schedule) - 1):
        if schedule[t + 1] < schedule[t]:
            final[schedule[t + 1] : schedule[t]] = hs[t + 1, schedule[t + 1] : schedule[t]]
    return final


def _buffer(like: Tensor, shape, padded: bool) -> Tensor:
    """A (T, B, ...) buffer: zeros where rows may never be written (past a length), else uninitialised."""
    return like.new_zeros(shape) if padded else like.new_empty(shape)


def _flat(x: Tensor) -> Tensor:
    """(T, B, F) -> (T*B, F), for the weight gradients' one big product."""
    return x.reshape(-1, x.shape[-1])


class _Steps:
    """Rows (B, W) of T steps, indexed like a (T, B, W) tensor (``store[t, :n]``), kept in blocks of at most
    16 MB: glibc serves an allocation above 32 MB with fresh pages (an mmap) that fault on first touch at every
    call; smaller blocks are reused from the heap. Measured at B = 64, T = 100, H = 256 (the LSTM's 6H factors
    are 39 MB): ~10,000 page faults and ~25 ms of system time less per forward+backward."""

    def __init__(self, blocks: list[Tensor], size: int) -> None:
        self.blocks, self.size = blocks, size

    @classmethod
    def empty(cls, like: Tensor, steps: int, batch: int, width: int, zero: bool = False) -> _Steps:
        size = max(1, min(steps, _STEP_BLOCK_BYTES // max(1, batch * width * like.element_size())))
        make = like.new_zeros if zero else like.new_empty
        return cls([make(min(size, steps - start), batch, width) for start in range(0, steps, size)], size)

    def __getitem__(self, key):
        t, *rest = key if isinstance(key, tuple) else (key,)
        return self.blocks[t // self.size][(t % self.size, *rest)]

    def __setitem__(self, key, value) -> None:
        self[key].copy_(value)

    def spans(self):
        """(first step, block) for every block, for per-block products."""
        return [(index * self.size, block) for index, block in enumerate(self.blocks)]

    def from_step(self, t: int) -> Tensor:
        """Steps t, t + 1, ... of t's block, (K, B, W): a start pointer for the whole-sequence kernels."""
        return self.blocks[t // self.size][t % self.size :]


class _RecurrentGradient:
    """dL/d(W_hh h_{t-1}) of every step, needed only for dW_hh = sum_t d_t^T h_{t-1} (and db_hh = sum_t d_t):
    kept in a block of K steps that is multiplied out (one (G*H, K*B) x (K*B, H) product) each time it fills,
    going backwards, rather than in one (T, B, G*H) buffer. An allocation that large (26 MB at B = 64, T = 100,
    G*H = 1024) is served with fresh pages that fault on first touch at every call; the block (~4 MB) is reused.
    """

    def __init__(self, like: Tensor, hs: Tensor, width: int, weight: bool, bias: bool):
        steps, batch = hs.shape[0] - 1, hs.shape[1]
        self.size = max(1, min(steps, _GRADIENT_BLOCK_BYTES // max(1, batch * width * like.element_size())))
        self.block = like.new_zeros(self.size, batch, width)
        self.hs, self.weight, self.bias = hs, weight, bias
        self.d_weight = self.d_bias = None

    def step(self, t: int, rows: int) -> Tensor:
        """The (B, G*H) slot of step t; rows past ``rows`` are kept zero (sequences that have ended)."""
        slot = self.block[t % self.size]
        if rows < slot.shape[0]:
            slot[rows:].zero_()
        return slot

    def done(self, t: int) -> None:
        """Step t's slot is written; at a block's first step multiply the block out."""
        if t % self.size:
            return
        filled = min(self.size, self.hs.shape[0] - 1 - t)
        block = _flat(self.block[:filled])
        if self.weight:
            product = block.t() @ _flat(self.hs[t : t + filled])  # h_{s-1} of steps s = t .. t + filled - 1
            self.d_weight = product if self.d_weight is None else self.d_weight.add_(product)
        if self.bias:
            total = block.sum(0)
            self.d_bias = total if self.d_bias is None else self.d_bias.add_(total)


def _spans(steps: int, *sizes: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of steps 0 .. steps - 1 that cross no multiple of any block size in ``sizes``."""
    bounds = sorted({0, steps, *(m for size in sizes for m in range(size, steps, size))})
    return list(itertools.pairwise(bounds))


def _whole_sequences(*tensors: Tensor, macs: int = 0) -> bool:
    """Whether a recurrence runs its step loop in C (:func:`rnnkit.kernels.gru_sequence_forward` and the like),
    with the same BLAS products as the loop in Python but without its per-step slicing and calls (~20-40 us a
    step, more than the whole work of a small step). ``macs``: a step's product, for a loop whose products
    rnnkit.linear would send to oneDNN from its threshold up (the Python loop keeps those, on AMD CPUs). Where
    the products stay with MKL the C loop was as fast or faster at every size: on an Intel Xeon, paired A/B
    forward+backward, GRU (64, 100, 256) 1.07x, (64, 100, 512) 1.04x, with lengths 1.07-1.09x, layer-norm
    LSTM 1.04x."""
    onednn_steps = linear._AVAILABLE and macs >= linear.MIN_MACS
    return not onednn_steps and kernels.sequences_available(*tensors)


def _keeps(ctx) -> bool:
    """Whether the backward will run (else the forward stores nothing for it)."""
    return any(ctx.needs_input_grad)


def _tanh(x: Tensor, out: Tensor) -> Tensor:
    """``out = tanh(x)`` (out may be x). On CPU in float32/64 this is numpy's SIMD tanh: torch's CPU tanh goes
    through MKL's vector math library, which measured ~10x slower than torch's own sigmoid on the benchmark
    machine (AMD EPYC: 83 us for 64 x 256 floats against 7 us for sigmoid and 7 us for numpy's tanh), the
    largest elementwise cost of a step. Same values to within 1e-7 relative."""
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and not out.requires_grad:
        np.tanh(x.numpy(), out=out.numpy())
        return out
    return torch.tanh(x, out=out)


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


# -- Elman RNN ------------------------------------------------------------------------------------------------
#
# Every recurrence below follows one pattern. Forward: for each step t, n = n_t rows run, reading h_{t-1}
# from hs[t][:n] and writing h_t into hs[t + 1][:n]. Backward: ``d_h_run`` (B, H) holds dL/dh_t not yet
# counting the step's own output; it starts as dL/dh_n, which is right for the rows whose last step is t
# (their h_n is h_t), and each step replaces rows [0, n) by what flows back to h_{t-1}.


class _RNNRecurrence(torch.autograd.Function):
    """``h_t = phi(xp_t + W_hh h_{t-1})`` over all steps (:class:`rnnkit.RNNCell`; xp holds both biases)."""

    @staticmethod
    def forward(ctx, xp: Tensor, h0: Tensor, weight_hh: Tensor, running: list[int] | None, relu: bool):
        steps, batch, hidden = xp.shape
        schedule = _schedule(running, steps, batch)
        hs = _buffer(xp, (steps + 1, batch, hidden), running is not None)  # h_0 (given), h_1 .. h_T
        hs[0] = h0
        # in C at every size: the loop in Python has its products in torch.addmm too, never in oneDNN
        if kernels.available(xp) and _whole_sequences(weight_hh):
            kernels.rnn_sequence_forward(schedule, weight_hh, xp.contiguous(), hs, relu)
        else:
            w_t = weight_hh.t()
            for t, n in enumerate(schedule):
                h = torch.addmm(xp[t, :n], hs[t, :n], w_t, out=hs[t + 1, :n])  # (n, H) pre-activation
                if relu:
                    h.relu_()
                else:
                    _tanh(h, out=h)
        if _keeps(ctx):
            ctx.save_for_backward(hs, weight_hh)
            ctx.schedule, ctx.relu = schedule, relu
        return hs[1:], _finals(hs, schedule, batch)

    @staticmethod
    def backward(ctx, d_outputs: Tensor, d_h_n: Tensor):
        d_outputs = d_outputs.contiguous()  # (an output's gradient may be expanded, e.g. from .sum())
        hs, weight_hh = ctx.saved_tensors
        schedule = ctx.schedule
        d_pre = _buffer(d_outputs, d_outputs.shape, len(schedule) < d_outputs.shape[0] or min(schedule) < hs.shape[1])
        d_h_run = d_h_n.clone()
        if kernels.available(d_outputs, d_h_run) and _whole_sequences(weight_hh, d_h_run, hs):
            kernels.rnn_sequence_backward(schedule, weight_hh, d_outputs, hs, d_pre, d_h_run, ctx.relu)
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
        d_weight = _flat(d_pre).t() @ _flat(hs[:-1]) if ctx.needs_input_grad[2] else None  # one (H, T*B) x (T*B, H)
        return d_pre, d_h_run, d_weight, None, None


# -- LSTM -------------------------------------------------------------------------------------------------------


def _lstm_gates(a: Tensor, hidden: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """In place on pre-activations (n, 4H) in the order i, f, g, o: sigma on i, f, o and tanh on g."""
    a[:, : 2 * hidden].sigmoid_()
    g = a[:, 2 * hidden : 3 * hidden]
    _tanh(g, out=g)
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


class _LSTMRecurrence(torch.autograd.Function):
    """:class:`rnnkit.LSTMCell` (no projection, no layer norm) over all steps; xp = W_ih x + b_ih + b_hh."""

    @staticmethod
    def forward(ctx, xp: Tensor, h0: Tensor, c0: Tensor, weight_hh: Tensor, running: list[int] | None):
        steps, batch, gates = xp.shape
        hidden = gates // 4
        schedule = _schedule(running, steps, batch)
        padded = running is not None
        keep = _keeps(ctx)
        a = xp.new_empty(batch, gates)  # one step's pre-activations, then gates
        tanh_c = xp.new_empty(batch, hidden)
        hs = _buffer(xp, (steps + 1, batch, hidden), padded)  # h_0 (given), h_1 .. h_T
        factors = _Steps.empty(xp, steps, batch, 6 * hidden) if keep else None  # see _lstm_cell_factors
        hs[0] = h0
        c = c0.clone()  # c_t of every row; a row stops changing after its last step
        w_t = weight_hh.t()
        fused = kernels.available(xp)
        if fused and _whole_sequences(weight_hh, c):
            xp = xp.contiguous()
            for start, stop in _spans(len(schedule), *((factors.size,) if keep else ())):
                kernels.lstm_sequence_forward(schedule[start:stop], weight_hh, xp[start:], hs[start:], c,
                                              factors.from_step(start) if keep else None, a)
        else:
            for t, n in enumerate(schedule):
                torch.addmm(xp[t, :n], hs[t, :n], w_t, out=a[:n])
                if fused:  # the same elementwise work as below, in one C call
                    kernels.lstm_forward(a[:n], c[:n], hs[t + 1, :n], factors[t, :n] if keep else None)
                    continue
                i, f, g, o = _lstm_gates(a[:n], hidden)
                c_prev = c[:n]
                if keep:
                    _lstm_cell_factors(factors[t, :n], i, f, g, c_prev, hidden)
                c_prev.mul_(f).addcmul_(i, g)  # c_t = f * c_{t-1} + i * g
                h = torch.mul(o, _tanh(c_prev, out=tanh_c[:n]), out=hs[t + 1, :n])  # h_t = o * tanh(c_t)
                if keep:
                    _lstm_output_factors(factors[t, :n], h, o, tanh_c[:n], hidden)
        if keep:
            ctx.save_for_backward(hs, weight_hh, *factors.blocks)
            ctx.schedule, ctx.block = schedule, factors.size
        return hs[1:], _finals(hs, schedule, batch), c

    @staticmethod
    def backward(ctx, d_outputs: Tensor, d_h_n: Tensor, d_c_n: Tensor):
        d_outputs = d_outputs.contiguous()  # (an output's gradient may be expanded, e.g. from .sum())
        hs, weight_hh, *blocks = ctx.saved_tensors
        factors = _Steps(blocks, ctx.block)
        schedule = ctx.schedule
        steps, batch, hidden = d_outputs.shape
        d_gates = _buffer(d_outputs, (steps, batch, 4 * hidden), len(schedule) < steps or min(schedule) < batch)
        d_h_run = d_h_n.clone()
        d_c_run = d_c_n.clone()  # dL/dc_t likewise, not yet counting h_t's own dependence on c_t
        fused = kernels.available(d_outputs, d_h_run, d_c_run)
        if fused and _whole_sequences(weight_hh, d_h_run, d_c_run):
            for start, stop in reversed(_spans(len(schedule), factors.size)):
                kernels.lstm_sequence_backward(schedule[start:stop], weight_hh, d_outputs[start:],
                                               factors.from_step(start), d_gates[start:], d_h_run, d_c_run)
        else:
            for t in range(len(schedule) - 1, -1, -1):
                n = schedule[t]
                step_factors = factors[t, :n]
                if fused:
                    kernels.lstm_backward(d_h_run[:n], d_outputs[t, :n], d_c_run[:n], step_factors, d_gates[t, :n])
                    torch.mm(d_gates[t, :n], weight_hh, out=d_h_run[:n])
                    continue
                d_h = d_h_run[:n] + d_outputs[t, :n]
                d_c = torch.addcmul(d_c_run[:n], d_h, step_factors[:, 4 * hidden : 5 * hidden])  # dL/dc_t
                _lstm_gate_gradients(d_gates[t, :n], d_c, d_h, step_factors, hidden)
                torch.mm(d_gates[t, :n], weight_hh, out=d_h_run[:n])  # -> dL/dh_{t-1}
                torch.mul(d_c, step_factors[:, 5 * hidden :], out=d_c_run[:n])  # -> dL/dc_{t-1} = dL/dc_t f_t
        d_weight = _flat(d_gates).t() @ _flat(hs[:-1]) if ctx.needs_input_grad[3] else None  # (4H, T*B) x (T*B, H)
        return d_gates, d_h_run, d_c_run, d_weight, None


class _LayerNormLSTMRecurrence(torch.autograd.Function):
    """:class:`rnnkit.LSTMCell` with ``layer_norm=True`` (Ba et al. 2016, eq. 20-22) over all steps, from
    xp_t = W_ih x_t::

        gates = LN(xp_t; a_ih) + b_ih + b_hh + LN(W_hh h_{t-1}; a_hh)
        h_t = o_t * tanh(LN(c_t; a_c, b_c))

    ``bias`` is b_ih + b_hh (None without biases).
    """

    @staticmethod
    def forward(ctx, xp, h0, c0, weight_hh, ln_ih_weight, bias, ln_hh_weight, ln_cell_weight, ln_cell_bias, running):
        steps, batch, gates = xp.shape
        hidden = gates // 4
        schedule = _schedule(running, steps, batch)
        padded = running is not None
        keep = _keeps(ctx)
        a = xp.new_empty(batch, gates)
        tanh_shown = xp.new_empty(batch, hidden)
        hs = _buffer(xp, (steps + 1, batch, hidden), padded)
        # mean and 1/std per step and row of W_hh h, of c and of W_ih x: [mean_rec, rstd_rec, mean_c, rstd_c,
        # mean_x, rstd_x]
        step_stats = xp.new_empty(steps, batch, 6) if keep else None
        if keep:  # the normalisations' inputs and statistics, for their backward
            recurrent = []  # W_hh h_{t-1} of every step, (n_t, 4H) each
            cs = _Steps.empty(xp, steps, batch, hidden)  # c_t
            stats = step_stats.permute(2, 0, 1).unsqueeze(-1)  # (6, T, B, 1) views for the torch operations
            factors = _Steps.empty(xp, steps, batch, 6 * hidden)
        hs[0] = h0
        c = c0.clone()
        fused = kernels.available(xp)
        shift = bias if bias is not None else xp.new_zeros(gates)
        if not fused:  # LN(W_ih x) + b of all steps at once (the kernel normalises each step's rows itself)
            xp_normalised, mean_x, rstd_x = torch.native_layer_norm(xp, (gates,), ln_ih_weight, bias,
                                                                    LAYER_NORM_EPS)
            if keep:
                stats[4], stats[5] = mean_x, rstd_x
        parameters = (weight_hh, ln_ih_weight, shift, ln_hh_weight, ln_cell_weight, ln_cell_bias, c)
        whole = fused and _whole_sequences(*parameters, macs=batch * hidden * gates)
        if whole:  # the loop in C; W_hh h_{t-1} of every step kept in blocks rather than a list
            xp = xp.contiguous()
            recurrent = _Steps.empty(xp, steps, batch, gates) if keep else None
            scratch = None if keep else xp.new_empty(batch, gates)  # W_hh h_{t-1} of the current step only
            for start, stop in _spans(len(schedule), *((factors.size, cs.size, recurrent.size) if keep else ())):
                kernels.layer_norm_lstm_sequence_forward(
                    schedule[start:stop], weight_hh, xp[start:], ln_ih_weight, shift, ln_hh_weight, ln_cell_weight,
                    ln_cell_bias, LAYER_NORM_EPS, hs[start:], c, factors.from_step(start) if keep else None,
                    cs.from_step(start) if keep else None, step_stats[start:] if keep else None,
                    recurrent.from_step(start) if keep else scratch, keep)
        else:
            for t, n in enumerate(schedule):
                r = linear.product(hs[t, :n], weight_hh)  # W_hh h_{t-1}: (n, 4H)
                if keep:
                    recurrent.append(r)
                if fused:
                    kernels.layer_norm_lstm_forward(
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
                h = torch.mul(o, _tanh(shown, out=tanh_shown[:n]), out=hs[t + 1, :n])
                if keep:
                    cs[t, :n] = c_prev
                    stats[2, t, :n], stats[3, t, :n] = mean, rstd
                    _lstm_output_factors(factors[t, :n], h, o, tanh_shown[:n], hidden)
        if keep:
            stores = (recurrent, cs, factors) if whole else (cs, factors)
            ctx.save_for_backward(xp, step_stats, hs, weight_hh, ln_ih_weight, shift, ln_hh_weight, ln_cell_weight,
                                  ln_cell_bias, *([] if whole else recurrent), *(b for st in stores for b in st.blocks))
            ctx.blocks = [(len(store.blocks), store.size) for store in stores]
            ctx.schedule, ctx.has_bias = schedule, bias is not None
        return hs[1:], _finals(hs, schedule, batch), c

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
            stores.append(_Steps(blocks[:count], size))
            blocks = blocks[count:]
        if stepped:
            recurrent, cs, factors = stores
        else:
            cs, factors = stores
        steps, batch, hidden = d_outputs.shape
        gates = 4 * hidden
        needs = ctx.needs_input_grad
        padded = len(schedule) < steps or min(schedule) < batch
        # dL/d(pre-activations) of each step; the kernels replace them by dL/d xp in place
        d_gates = _buffer(d_outputs, (steps, batch, gates), padded)
        d_recurrent = _RecurrentGradient(d_outputs, hs, gates, needs[3], False)  # dL/d(W_hh h_{t-1})
        d_shown = d_outputs.new_empty(batch, hidden)  # dL/d LN(c_t)
        # The normalisations' parameter gradients, summed over steps (LN's backward sums over the rows).
        d_ln_ih, d_bias = torch.zeros_like(ln_ih_weight), torch.zeros_like(shift)
        d_ln_hh = torch.zeros_like(ln_hh_weight)
        d_ln_cell = torch.zeros_like(ln_cell_weight)
        d_ln_cell_bias = torch.zeros_like(ln_cell_bias)
        d_h_run = d_h_n.clone()
        d_c_run = d_c_n.clone()
        fused = kernels.available(d_outputs, d_h_run, d_c_run)
        whole = stepped and fused and _whole_sequences(d_h_run, d_c_run, macs=batch * hidden * gates)
        if whole:  # the loop in C (a slot of d_recurrent's block keeps zeros past n_t, see _GRURecurrence)
            for start, stop in reversed(_spans(len(schedule), factors.size, cs.size, recurrent.size,
                                               d_recurrent.size)):
                kernels.layer_norm_lstm_sequence_backward(
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
                    kernels.layer_norm_lstm_backward(
                        d_h_run[:n], d_outputs[t, :n], d_c_run[:n], step_factors, step_recurrent, xp[t, :n], cs[t, :n],
                        step_stats[t, :n], ln_ih_weight, ln_hh_weight, ln_cell_weight, d_gates[t, :n], d_rec[:n],
                        d_ln_ih, d_bias, d_ln_hh, d_ln_cell, d_ln_cell_bias)
                    d_h_run[:n] = linear.product(d_rec[:n], weight_hh.t())  # dL/dh_{t-1} = dL/d(W_hh h) W_hh
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
                d_h_run[:n] = linear.product(d_rec_n, weight_hh.t())
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
                d_ln_cell if needs[7] else None, d_ln_cell_bias if needs[8] else None, None)


# -- GRU ----------------------------------------------------------------------------------------------------------


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


class _GRURecurrence(torch.autograd.Function):
    """:class:`rnnkit.GRUCell` with ``reset_after=True`` (torch's form) over all steps; xp = W_ih x + b_ih::

        (r, z) = sigma(xp_rz + W_hrz h + b_hrz),   n = tanh(xp_n + r * (W_hn h + b_hn)),
        h_t = n + z * (h_{t-1} - n)
    """

    @staticmethod
    def forward(ctx, xp: Tensor, h0: Tensor, weight_hh: Tensor, bias_hh: Tensor | None, running: list[int] | None):
        steps, batch, gates = xp.shape
        hidden = gates // 3
        schedule = _schedule(running, steps, batch)
        padded = running is not None
        keep = _keeps(ctx)
        factors = _Steps.empty(xp, steps, batch, 5 * hidden) if keep else None  # see _gru_factors
        rz = xp.new_empty(batch, 2 * hidden)
        candidate = xp.new_empty(batch, hidden)
        hs = _buffer(xp, (steps + 1, batch, hidden), padded)
        hs[0] = h0
        fused = kernels.available(xp)
        parameters = (weight_hh,) if bias_hh is None else (weight_hh, bias_hh)
        if fused and _whole_sequences(*parameters, macs=batch * hidden * gates):
            xp, rec = xp.contiguous(), xp.new_empty(batch, gates)
            for start, stop in _spans(len(schedule), *((factors.size,) if keep else ())):
                kernels.gru_sequence_forward(schedule[start:stop], weight_hh, bias_hh, xp[start:], hs[start:],
                                             factors.from_step(start) if keep else None, rec)
        else:
            for t, rows in enumerate(schedule):
                rec = linear.product(hs[t, :rows], weight_hh, bias_hh)  # W_hh h_{t-1} + b_hh: (rows, 3H)
                if fused:
                    kernels.gru_forward(rec, xp[t, :rows], hs[t, :rows], hs[t + 1, :rows],
                                        factors[t, :rows] if keep else None)
                    continue
                gate_values = factors[t, :rows, 3 * hidden :] if keep else rz[:rows]
                torch.add(xp[t, :rows, : 2 * hidden], rec[:rows, : 2 * hidden], out=gate_values).sigmoid_()  # r, z
                r, z = gate_values[:, :hidden], gate_values[:, hidden:]
                reset_operand = rec[:rows, 2 * hidden :]  # W_hn h + b_hn
                n = torch.addcmul(xp[t, :rows, 2 * hidden :], r, reset_operand, out=candidate[:rows])
                _tanh(n, out=n)
                h = torch.lerp(n, hs[t, :rows], z, out=hs[t + 1, :rows])  # n + z * (h_{t-1} - n)
                if keep:
                    _gru_factors(factors[t, :rows], h, n, reset_operand, hidden)
        if keep:
            ctx.save_for_backward(hs, weight_hh, *factors.blocks)
            ctx.schedule, ctx.block, ctx.has_bias = schedule, factors.size, bias_hh is not None
        return hs[1:], _finals(hs, schedule, batch)

    @staticmethod
    def backward(ctx, d_outputs: Tensor, d_h_n: Tensor):
        d_outputs = d_outputs.contiguous()  # (an output's gradient may be expanded, e.g. from .sum())
        hs, weight_hh, *blocks = ctx.saved_tensors
        factors = _Steps(blocks, ctx.block)
        schedule = ctx.schedule
        steps, batch, hidden = d_outputs.shape
        padded = len(schedule) < steps or min(schedule) < batch
        d_xp = _buffer(d_outputs, (steps, batch, 3 * hidden), padded)  # dL/d(pre-activations from the input)
        needs = ctx.needs_input_grad
        d_recurrent = _RecurrentGradient(d_outputs, hs, 3 * hidden, needs[2], ctx.has_bias and needs[3])
        d_h_run = d_h_n.clone()
        fused = kernels.available(d_outputs, d_h_run)
        if fused and _whole_sequences(weight_hh, d_h_run, macs=batch * hidden * 3 * hidden):
            # A slot of d_recurrent's block keeps zeros past n_t: the steps that used it before (later ones, the
            # backward runs in reverse) had at most n_t rows.
            for start, stop in reversed(_spans(len(schedule), factors.size, d_recurrent.size)):
                kernels.gru_sequence_backward(schedule[start:stop], weight_hh, d_outputs[start:],
                                              factors.from_step(start), d_xp[start:],
                                              d_recurrent.block[start % d_recurrent.size :], d_h_run)
                d_recurrent.done(start)
        else:
            for t in range(len(schedule) - 1, -1, -1):
                rows = schedule[t]
                step_factors = factors[t, :rows]
                d_rec = d_recurrent.step(t, rows)[:rows]  # dL/d(W_hh h_{t-1} + b_hh)
                if fused:
                    kernels.gru_backward(d_h_run[:rows], d_outputs[t, :rows], step_factors, d_xp[t, :rows], d_rec,
                                         d_h_run[:rows])
                    d_h_run[:rows] += linear.product(d_rec, weight_hh.t())  # + dL/d(W_hh h_{t-1}) W_hh
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
        return d_xp, d_h_run, d_recurrent.d_weight, d_recurrent.d_bias, None


class _ResetBeforeGRURecurrence(torch.autograd.Function):
    """:class:`rnnkit.GRUCell` with ``reset_after=False`` (Cho et al. 2014) over all steps;
    xp = W_ih x + b_ih + b_hh::

        (r, z) = sigma(xp_rz + W_hrz h_{t-1}),   n = tanh(xp_n + W_hn (r * h_{t-1})),   h_t = n + z (h_{t-1} - n)
    """

    @staticmethod
    def forward(ctx, xp: Tensor, h0: Tensor, weight_hh: Tensor, running: list[int] | None):
        steps, batch, gates = xp.shape
        hidden = gates // 3
        schedule = _schedule(running, steps, batch)
        padded = running is not None
        keep = _keeps(ctx)
        w_rz_t, w_n_t = weight_hh[: 2 * hidden].t(), weight_hh[2 * hidden :].t()
        factors = _Steps.empty(xp, steps, batch, 5 * hidden) if keep else None  # see _gru_factors
        # r_t h_{t-1}, W_hn's input (zero past a length: it meets zero gradients in dW_hn's product)
        reset_states = _Steps.empty(xp, steps, batch, hidden, zero=padded) if keep else None
        hs = _buffer(xp, (steps + 1, batch, hidden), padded)
        hs[0] = h0
        fused = kernels.available(xp)
        # in C at every size: the loop in Python has its products in torch.addmm too, never in oneDNN
        if fused and _whole_sequences(weight_hh):
            xp = xp.contiguous()
            sizes = (factors.size, reset_states.size) if keep else ()
            for start, stop in _spans(len(schedule), *sizes):
                kernels.reset_before_sequence_forward(schedule[start:stop], weight_hh, xp[start:], hs[start:],
                                                      factors.from_step(start) if keep else None,
                                                      reset_states.from_step(start) if keep else None)
        else:
            rz = xp.new_empty(batch, 2 * hidden)
            reset = xp.new_empty(batch, hidden)
            candidate = xp.new_empty(batch, hidden)
            for t, rows in enumerate(schedule):
                gate_values = factors[t, :rows, 3 * hidden :] if keep else rz[:rows]
                if fused:
                    torch.addmm(xp[t, :rows, : 2 * hidden], hs[t, :rows], w_rz_t, out=gate_values)
                    reset_state = reset_states[t, :rows] if keep else reset[:rows]
                    kernels.reset_before_gates(gate_values, hs[t, :rows], reset_state)
                    torch.addmm(xp[t, :rows, 2 * hidden :], reset_state, w_n_t, out=candidate[:rows])
                    kernels.reset_before_forward(candidate[:rows], gate_values, hs[t, :rows], hs[t + 1, :rows],
                                                 factors[t, :rows] if keep else None)
                    continue
                torch.addmm(xp[t, :rows, : 2 * hidden], hs[t, :rows], w_rz_t, out=gate_values).sigmoid_()
                r, z = gate_values[:, :hidden], gate_values[:, hidden:]
                reset_state = torch.mul(r, hs[t, :rows], out=reset_states[t, :rows] if keep else reset[:rows])
                n = torch.addmm(xp[t, :rows, 2 * hidden :], reset_state, w_n_t, out=candidate[:rows])
                _tanh(n, out=n)
                h = torch.lerp(n, hs[t, :rows], z, out=hs[t + 1, :rows])
                if keep:
                    _gru_factors(factors[t, :rows], h, n, hs[t, :rows], hidden)
        if keep:
            ctx.save_for_backward(hs, weight_hh, *factors.blocks, *reset_states.blocks)
            ctx.blocks = [(len(factors.blocks), factors.size), (len(reset_states.blocks), reset_states.size)]
            ctx.schedule = schedule
        return hs[1:], _finals(hs, schedule, batch)

    @staticmethod
    def backward(ctx, d_outputs: Tensor, d_h_n: Tensor):
        d_outputs = d_outputs.contiguous()  # (an output's gradient may be expanded, e.g. from .sum())
        hs, weight_hh, *blocks = ctx.saved_tensors
        (factor_blocks, factor_size), (_, reset_size) = ctx.blocks
        factors = _Steps(blocks[:factor_blocks], factor_size)
        reset_states = _Steps(blocks[factor_blocks:], reset_size)
        schedule = ctx.schedule
        steps, batch, hidden = d_outputs.shape
        w_rz, w_n = weight_hh[: 2 * hidden], weight_hh[2 * hidden :]
        padded = len(schedule) < steps or min(schedule) < batch
        d_xp = _buffer(d_outputs, (steps, batch, 3 * hidden), padded)  # dL/d(pre-activations): (T, B, 3H)
        d_h_run = d_h_n.clone()
        fused = kernels.available(d_outputs, d_h_run)
        if fused and _whole_sequences(weight_hh, d_h_run):
            for start, stop in reversed(_spans(len(schedule), factors.size)):
                kernels.reset_before_sequence_backward(schedule[start:stop], weight_hh, d_outputs[start:],
                                                       factors.from_step(start), d_xp[start:], d_h_run)
        else:
            d_h_step = d_outputs.new_empty(batch, hidden)
            for t in range(len(schedule) - 1, -1, -1):
                rows = schedule[t]
                step_factors = factors[t, :rows]
                if fused:
                    kernels.reset_before_backward_gates(d_h_run[:rows], d_outputs[t, :rows], step_factors,
                                                        d_xp[t, :rows], d_h_step[:rows])
                    d_reset = torch.mm(d_xp[t, :rows, 2 * hidden :], w_n)
                    kernels.reset_before_backward_reset(d_reset, d_h_step[:rows], step_factors, d_xp[t, :rows],
                                                        d_h_run[:rows])
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
            torch.mm(_flat(d_xp[:, :, : 2 * hidden]).t(), _flat(hs[:-1]), out=d_weight[: 2 * hidden])
            d_weight[2 * hidden :].zero_()
            for start, block in reset_states.spans():  # (H, K*B) x (K*B, H) per block of steps
                d_block = d_xp[start : start + block.shape[0], :, 2 * hidden :]
                d_weight[2 * hidden :].addmm_(_flat(d_block).t(), _flat(block))
        return d_xp, d_h_run, d_weight, None
